"""spine-phantom: write synthetic sagittal lumbar cases (image, mask, levels.json) and their truth table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from measure.levels import parse_level_range
from measure.runtime import add_version_option

from .phantom import DEFORMITIES, GridSpec
from .phantom_cohort import CohortSpec, write_case, write_cohort

__all__ = ["build_parser", "main", "write_case"]  # write_case: also importable from here, as before


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spine-phantom",
        description="Synthetic sagittal lumbar spines with exactly known geometry: one folder per case with "
        "image.nii.gz, mask.nii.gz and levels.json, and OUT/truth.csv with what a correct spine-measure reports.",
    )
    parser.add_argument("output", metavar="OUT_DIR")
    parser.add_argument("-n", "--cases", type=int, default=3, help="number of cases (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", default="T12-S1", help="level run, e.g. T11-S2 or L1-L5 (default T12-S1)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(3.0, 0.8, 0.8), metavar=("LR", "AP", "SI"),
                        help="voxel spacing in mm along left-right (slice thickness), anterior-posterior, "
                        "superior-inferior (default 3 0.8 0.8)")
    parser.add_argument("--orientation", default="LPS", help="direction of the file axes i, j, k, e.g. LPS, ASL, "
                        "PIR (default LPS)")
    parser.add_argument("--oblique", type=float, default=0.0, metavar="DEG", help="rotate the grid about left-right")
    parser.add_argument("--lateral-fov", type=float, default=60.0, metavar="MM", help="left-right field of view")
    parser.add_argument("--typical", action="store_true", help="typical healthy sizes, no random variation")
    parser.add_argument("--deformity", action="append", default=[], metavar="LEVEL:KIND:REDUCTION",
                        help=f"deform a level, KIND one of {', '.join(DEFORMITIES)}, e.g. L2:wedge:0.3 (repeatable)")
    parser.add_argument("--slip", action="append", default=[], metavar="LEVEL:MM",
                        help="spondylolisthesis: LEVEL slips MM anteriorly over the level below, e.g. L5:6")
    parser.add_argument("--deformity-probability", type=float, default=0.15,
                        help="chance of a random deformity per vertebra (random spines)")
    parser.add_argument("--no-image", action="store_true", help="masks only")
    parser.add_argument("--spineps", action="store_true", help="also write SPINEPS-style masks beside mask.nii.gz: "
                        "seg-vert.nii.gz (whole vertebrae with posterior elements, VerSe numbering) and "
                        "seg-spine.nii.gz (subregions: 49 body, 41 arch, 42 spinous process, 26 sacrum); measure them "
                        "with spine-measure --subregions seg-vert:seg-spine --labels verse --pattern seg-vert.nii.gz")
    parser.add_argument("--case-prefix", default="phantom")
    return add_version_option(parser)


def _parse_deformity(text: str) -> tuple[str, str, float]:
    try:
        level, kind, amount = text.split(":")
        return level, kind, float(amount)
    except ValueError as exc:
        raise ValueError(f"--deformity {text!r}: expected LEVEL:KIND:REDUCTION, e.g. L2:wedge:0.3") from exc


def _parse_slip(text: str) -> tuple[str, float]:
    try:
        level, amount = text.split(":")
        return level, float(amount)
    except ValueError as exc:
        raise ValueError(f"--slip {text!r}: expected LEVEL:MM, e.g. L5:6") from exc


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        levels = parse_level_range(args.levels)
        deformities = [_parse_deformity(d) for d in args.deformity]
        slips = [_parse_slip(text) for text in args.slip]
        GridSpec(orientation=args.orientation).file_axes()
    except ValueError as exc:
        print(f"spine-phantom: {exc}", file=sys.stderr)
        return 2
    spec = CohortSpec(cases=args.cases, seed=args.seed, levels=tuple(levels), spacing=tuple(args.spacing),
                      orientation=args.orientation, oblique_deg=args.oblique, lateral_fov_mm=args.lateral_fov,
                      typical=args.typical, deformities=tuple(deformities), slips=tuple(slips),
                      deformity_probability=args.deformity_probability, with_image=not args.no_image,
                      case_prefix=args.case_prefix, spineps=args.spineps)
    out = Path(args.output)
    write_cohort(out, spec)
    print(f"spine-phantom: {args.cases} case(s) in {out} (truth: {out / 'truth.csv'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
