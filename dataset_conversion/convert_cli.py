"""spine-convert: in-house exports (one folder per case: image, mask, level names) -> an nnU-Net v2 raw dataset."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

from measure.levels import bundled_label_maps
from measure.runtime import EXIT_INTERRUPTED, add_version_option, interruptible, nnunet_folder

from .convert import (
    ConversionError,
    ConversionReport,
    ConvertOptions,
    DiscoveryOptions,
    SplitOptions,
    convert_export,
)
from .relabel import UNKNOWN_LEVEL_POLICIES, RelabelError, load_export_label_map
from .sources.inhouse import DEFAULT_IMAGE_PATTERNS, DEFAULT_LEVELS_FILE, DEFAULT_MASK_PATTERNS
from .unannotated import SIDES
from .writer import DatasetExistsError

PAPER_VAL_FRACTION = 22 / 142  # the paper's 120 training / 22 validation scans


def _add_label_options(parser: argparse.ArgumentParser) -> None:
    """How mask values become the project's levels."""
    labels = parser.add_argument_group("labels")
    labels.add_argument("--label-map", help="JSON mask value -> level name for the whole export, used for cases "
                        f"without their own level file; or a built-in map: {', '.join(sorted(bundled_label_maps()))}")
    labels.add_argument("--levels-file", default=DEFAULT_LEVELS_FILE,
                        help="per-case level file name (default levels.json; 'none' to use --label-map for all)")
    labels.add_argument("--unknown-levels", choices=UNKNOWN_LEVEL_POLICIES, default="ignore",
                        help="levels outside T11-S2 (T10, L6, T13...): nnU-Net's ignore label (default), "
                             "background, or error (skip such cases)")
    labels.add_argument("--ignore-beyond", choices=SIDES, default="auto",
                        help="anatomy in the image but not annotated (S1 under an annotation ending at L5, T12 above "
                             "one starting at L1) gets nnU-Net's ignore label beyond a plane through the end body's "
                             "centroid, perpendicular to the spine: 'auto' (default) on each end whose level is not "
                             "the scheme's end (T11 cranially, S2 caudally); caudal/cranial/both/none to force it")
    labels.add_argument("--binary", action="store_true", help="one foreground class for all vertebrae (model M_SC)")
    labels.add_argument("--channel-name", default="T2", help="name of the image channel in dataset.json")


def _add_discovery_options(parser: argparse.ArgumentParser) -> None:
    """Which files and case folders are converted, and into which subset."""
    found = parser.add_argument_group("finding files")
    found.add_argument("--image-name", action="append", metavar="PATTERN",
                       help=f"image file/folder name pattern (repeatable; default {' '.join(DEFAULT_IMAGE_PATTERNS)})")
    found.add_argument("--mask-name", action="append", metavar="PATTERN",
                       help=f"mask file/folder name pattern (repeatable; default {' '.join(DEFAULT_MASK_PATTERNS)})")
    found.add_argument("--unlabelled", choices=("skip", "test"), default="skip",
                       help="case folders with an image but no mask: skip (default) or put into imagesTs")
    found.add_argument("--test-cases", help="comma-separated case ids (or a file with one per line) to put into "
                       "imagesTs/labelsTs instead of training")
    found.add_argument("--skip-qc", action="append", metavar="STATUS",
                       help="skip cases whose levels.json QC status is STATUS (repeatable; default: bad; "
                            "'none' keeps every case)")
    found.add_argument("--keep-case-ids", action="store_true",
                       help="name nnU-Net files by the original case ids (default: NAME_0001, ... with the original "
                            "ids in case_mapping.csv, which keeps patient identifiers out of file names)")


def _add_geometry_and_split_options(parser: argparse.ArgumentParser) -> None:
    """Cropping, grid tolerance and the cross-validation split."""
    geometry = parser.add_argument_group("geometry")
    geometry.add_argument("--crop-ap", type=float, metavar="FRACTION",
                          help="remove this fraction of the anterior-posterior extent on each side (the paper: 0.25)")
    geometry.add_argument("--geometry-tolerance", type=float, default=1e-3,
                          help="largest image/mask difference in spacing and origin (mm) and direction (default 1e-3)")
    splits = parser.add_argument_group("splits (patient level: cases of one subject stay together)")
    choice = splits.add_mutually_exclusive_group()
    choice.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5, as nnU-Net)")
    choice.add_argument("--val-fraction", type=float,
                        help=f"one train/validation split; the paper's 120/22 is {PAPER_VAL_FRACTION:.3f}")
    choice.add_argument("--val-cases", help="comma-separated case ids (or a file) forming the validation set")
    splits.add_argument("--groups", help="CSV with columns case_id,subject_id naming cases of the same subject")
    splits.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Overwriting, strictness, workers, progress, verification."""
    run = parser.add_argument_group("running")
    run.add_argument("--overwrite", action="store_true", help="replace an existing dataset of the same name")
    run.add_argument("--strict", action="store_true", help="stop at the first case that cannot be converted")
    run.add_argument("-j", "--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--verify", action="store_true",
                     help="run nnU-Net's dataset integrity check on the result (the checks installed under "
                          "the spine_mri_toolkit.dataset_checks entry points; nnunet_ext provides nnU-Net's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spine-convert",
        description="Convert in-house exports (one folder per case holding an image, a vertebra mask and levels.json) "
                    "into an nnU-Net v2 raw dataset RAW_DIR/DatasetNNN_NAME with the project's labels "
                    "(1 T11, 2 T12, 3 L1 ... 7 L5, 8 S1, 9 S2), a patient-level splits_final.json and a case "
                    "mapping. Cases that cannot be converted are skipped with their reason.",
        epilog="Example: spine-convert export_siteA export_siteB --out $nnUNet_raw --id 501 --name LumbarT2 "
               "--crop-ap 0.25 --val-fraction 0.155 --jobs 2   (see docs/conversion.md)",
    )
    parser.add_argument("roots", nargs="+", help="export root folder(s); case folders are found at any depth")
    parser.add_argument("--out", default=nnunet_folder("nnUNet_raw"),
                        help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--id", type=int, required=True, help="dataset id, 1-999")
    parser.add_argument("--name", required=True, help="dataset name (letters, digits, _ and -)")
    for add in (_add_label_options, _add_discovery_options, _add_geometry_and_split_options, _add_run_options):
        add(parser)
    return add_version_option(parser)


def _id_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [t.strip() for t in text.split(",") if t.strip()]


def _read_groups(path: str) -> dict[str, str]:
    import csv

    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        if not reader.fieldnames or not {"case_id", "subject_id"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs columns case_id and subject_id")
        return {row["case_id"]: row["subject_id"] for row in reader}


def print_summary(report: ConversionReport, stream=None) -> None:
    """The summary table: what was converted where, what was skipped and why."""
    stream = stream or sys.stdout
    converted, skipped = report.converted, report.skipped
    print(f"\n{report.dataset}: {len(converted)} case(s) converted "
          f"({sum(r.subset == 'train' for r in converted)} training, {sum(r.subset == 'test' for r in converted)} "
          f"test), {len(skipped)} skipped; {len(report.splits)} split(s) in splits_final.json", file=stream)
    width = max([len(r.original_case_id) for r in report.results] + [7])
    print(f"  {'case':<{width}}  {'nnU-Net id':<16} {'status':<9} {'split':<10} levels / reason", file=stream)
    for r in report.results:
        detail = " ".join(r.levels) if r.status == "converted" else r.reason
        if r.ignored_levels and r.status == "converted":
            detail += f"  (ignore label: {' '.join(r.ignored_levels)})"
        if r.warnings:
            detail += "  [warning: " + "; ".join(r.warnings) + "]"
        split = r.split if r.subset == "train" else r.subset
        print(f"  {r.original_case_id:<{width}}  {r.nnunet_case_id:<16} {r.status:<9} {split:<10} {detail}",
              file=stream)
    for warning in report.warnings:
        print(f"warning: {warning}", file=stream)


@interruptible("spine-convert")
def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 all cases converted, 1 some skipped (dataset written), 2 usage error or nothing written."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.out:
        parser.error("--out is required (or set nnUNet_raw)")
    if args.crop_ap is not None and not 0.0 <= args.crop_ap < 0.5:
        parser.error("--crop-ap must be between 0 and 0.5")
    try:
        label_map, label_map_source = (load_export_label_map(args.label_map) if args.label_map else (None, ""))
        options = ConvertOptions(binary=args.binary, unknown_levels=args.unknown_levels, crop_ap=args.crop_ap or None,
                                 ignore_beyond=args.ignore_beyond,
                                 label_map=label_map, label_map_source=label_map_source,
                                 geometry_tolerance=args.geometry_tolerance)
        val_cases = _id_list(args.val_cases)
        split = SplitOptions(folds=args.folds, val_fraction=args.val_fraction,
                             val_cases=tuple(val_cases) if val_cases is not None else None, seed=args.seed,
                             subjects=_read_groups(args.groups) if args.groups else None)
    except (RelabelError, ValueError, OSError) as exc:
        print(f"spine-convert: error: {exc}", file=sys.stderr)
        return 2
    try:
        discovery = DiscoveryOptions(
            image_patterns=tuple(args.image_name or DEFAULT_IMAGE_PATTERNS),
            mask_patterns=tuple(args.mask_name or DEFAULT_MASK_PATTERNS),
            levels_file=None if args.levels_file.lower() == "none" else args.levels_file,
            skip_qc=() if args.skip_qc and "none" in args.skip_qc else tuple(args.skip_qc or ("bad",)),
            test_cases=tuple(_id_list(args.test_cases) or ()), unlabelled=args.unlabelled,
            keep_case_ids=args.keep_case_ids,
        )
        report = convert_export(
            args.roots, args.out, args.id, args.name, options, split, discovery, channel_name=args.channel_name,
            overwrite=args.overwrite, strict=args.strict, jobs=args.jobs, progress=not args.no_progress,
            command=shlex.join(["spine-convert", *(argv if argv is not None else sys.argv[1:])]),
        )
    except (ConversionError, DatasetExistsError, FileNotFoundError, ValueError) as exc:
        print(f"spine-convert: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # SIGTERM too (see interruptible): the dataset is written whole or not at all
        print("spine-convert: interrupted; nothing was written (every worker stopped)", file=sys.stderr)
        return EXIT_INTERRUPTED
    print_summary(report)
    if args.verify:
        from .checks import run_dataset_checks

        try:
            run_dataset_checks(report.dataset, num_processes=max(1, args.jobs))
        except Exception as exc:  # noqa: BLE001 - nnU-Net raises assertions and RuntimeErrors
            print(f"spine-convert: the integrity check failed on {report.dataset}: {exc}", file=sys.stderr)
            return 2
    return 1 if report.skipped else 0
