"""spine-phantom: write synthetic sagittal lumbar cases (image, mask, levels.json) and their truth table."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk

from measure.levels import parse_level_range
from measure.runtime import add_version_option

from .phantom import DEFORMITIES, GridSpec, Phantom, deform, fov_for, make_phantom, random_spine, typical_spine


def write_case(phantom: Phantom, out_dir: str | Path, compress: bool = True) -> Path:
    """Write ``OUT/<case>/image.nii.gz``, ``mask.nii.gz`` and ``levels.json`` (the in-house export layout)."""
    folder = Path(out_dir) / phantom.case_id
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(phantom.mask_image(), str(folder / "mask.nii.gz"), compress)
    if phantom.image is not None:
        sitk.WriteImage(phantom.intensity_image(), str(folder / "image.nii.gz"), compress)
    levels = {str(value): level for level, value in sorted(phantom.label_values.items(), key=lambda kv: kv[1])
              if level in set(phantom.truth["level"])}
    meta = {"case_id": phantom.case_id, "labels": levels, "level_source": "synthetic phantom (spine-phantom)",
            "grid": {"spacing_mm": phantom.grid.spacing(), "orientation": phantom.grid.orientation,
                     "oblique_deg": phantom.grid.oblique_deg, "tilt_deg": phantom.grid.tilt_deg}}
    (folder / "levels.json").write_text(json.dumps(meta, indent=1) + "\n")
    return folder


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
    rng = np.random.default_rng(args.seed)
    truths = []
    out = Path(args.output)
    for n in range(args.cases):
        case_id = f"{args.case_prefix}_{n:03d}"
        spine = typical_spine(levels) if args.typical else random_spine(rng, levels, args.deformity_probability)
        if deformities or slips:
            vertebrae = list(spine.vertebrae)
            for i, v in enumerate(vertebrae):
                for level, kind, amount in deformities:
                    if v.level == level:
                        v = deform(v, kind, amount)
                for level, amount in slips:
                    if v.level == level:
                        v = replace(v, slip_mm=amount)
                vertebrae[i] = v
            spine = type(spine)(tuple(vertebrae), spine.disc_heights_mm, spine.centre_mm)
        grid = GridSpec(fov_for(spine, lateral_mm=args.lateral_fov), tuple(args.spacing), args.orientation,
                        args.oblique)
        phantom = make_phantom(case_id, spine, grid, with_image=not args.no_image, seed=args.seed * 1000 + n)
        write_case(phantom, out)
        truths.append(phantom.truth)
    truth = pd.concat(truths, ignore_index=True)
    truth.to_csv(out / "truth.csv", index=False, float_format="%.4f")
    print(f"spine-phantom: {args.cases} case(s) in {out} (truth: {out / 'truth.csv'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
