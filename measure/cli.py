"""spine-measure: vertebral body heights, rotation and distances from sagittal masks, as one tidy CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .runtime import add_version_option, interruptible

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spine-measure",
        description="Measure anterior/middle/posterior vertebral body heights, rotation, volume and the "
        "anterior/posterior distances between adjacent vertebrae (mm) in sagittal label masks, one CSV row per "
        "(case, vertebra); each motion segment's disc-space heights, angle and slip (Meyerding grade), one row per "
        "(case, segment); each case's lumbar lordosis and sacral slope, one row per case. The exact definitions are "
        "in docs/measurements.md.",
        epilog="Exit status: 0 every vertebra of every case measured (warnings allowed), 1 some case or vertebra "
        "failed (see the status and message columns), 2 usage error.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="mask file(s) (.nii, .nii.gz, .nrrd, .mha) or "
                        "folder(s) of masks")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.csv", help="CSV to write, one row per (case, "
                        "vertebra) (a JSON sidecar with the method parameters is written beside it)")
    parser.add_argument("--segments", metavar="FILE.csv", help="motion-segment table, one row per (case, adjacent "
                        "pair): disc-space heights, segment angle, slip, Meyerding grade (default: "
                        "<OUT stem>_segments.csv beside --output)")
    parser.add_argument("--spine", metavar="FILE.csv", help="spine table, one row per case: lumbar lordosis "
                        "L1-S1 and L1-L5, sacral slope (default: <OUT stem>_spine.csv beside --output)")
    parser.add_argument("--labels", metavar="FILE|NAME", help="label map: nnU-Net dataset.json or JSON {value: level}, "
                        "or a bundled map by name ('verse': VerSe/SPINEPS numbering, endplates merged into their "
                        "vertebra, discs as background; 'totalspineseg': TotalSpineSeg's 41-45 L1-L5, 50 sacrum); "
                        "default: project scheme 1 T11, 2 T12, 3 L1 ... 7 L5, 8 S1, 9 S2")
    parser.add_argument("--labels-per-case", metavar="NAME", help="read each case's label map from a JSON of this "
                        "name beside its mask (e.g. levels.json of an in-house export)")
    parser.add_argument("--subregions", metavar="OLD:NEW|NAME", help="whole-vertebra masks (SPINEPS seg-vert, with "
                        "posterior elements) measured on their bodies only: each mask's subregion mask is its file "
                        "name with OLD replaced by NEW (SPINEPS: 'seg-vert:seg-spine') or the file NAME beside it; a "
                        "body is the instance's voxels in the corpus subregion (49) plus its endplates (200+X)")
    parser.add_argument("--bodies-from-shape", action="store_true", help="whole-vertebra masks without a subregion "
                        "mask (TotalSpineSeg, TotalSegmentator): each vertebra's body is cut out by shape, anterior to "
                        "its posterior wall and ending where the pedicles leave it (docs/measurements.md); the sacrum "
                        "is left out with a note")
    parser.add_argument("--ignore-unmapped", action="store_true", help="skip label values missing from the label map "
                        "instead of reporting them as failed rows")
    parser.add_argument("--qc-dir", metavar="DIR", help="write one QC picture per case (CASE.png) here")
    parser.add_argument("--images", metavar="PATH", help="intensity images for the QC background: a folder holding "
                        "CASE_0000.nii.gz or CASE.nii.gz, or one file (default: image.* beside a mask named mask.*)")
    parser.add_argument("--recursive", action="store_true", help="search input folders recursively")
    parser.add_argument("--pattern", metavar="GLOB", help="file name pattern inside input folders (e.g. 'mask.nii.gz')")
    parser.add_argument("--case-id", choices=("auto", "name", "parent"), default="auto",
                        help="case id from the file name, or from its folder ('auto': the folder for generic names "
                        "such as mask.nii.gz or when several files share a name, as in one-folder-per-case exports)")
    parser.add_argument("--slice", dest="slice_selection", choices=("largest", "centroid"), default="largest",
                        help="sagittal slice measured per vertebra (default: the largest section)")
    parser.add_argument("--inset", type=float, default=0.10, help="inset of the anterior/posterior height lines, as "
                        "a fraction of the body depth (default 0.10)")
    parser.add_argument("--max-obliquity", type=float, default=25.0, metavar="DEG", help="largest angle between the "
                        "slice axis and patient left-right that is measured as it is (default 25)")
    parser.add_argument("--fov-margin", type=float, default=3.0, metavar="MM", help="a body this close to an in-plane "
                        "image border is flagged qc_touches_fov_border and not Genant-graded, as it may continue "
                        "outside the image (default 3; 0: only bodies on the border itself)")
    parser.add_argument("--resample-oblique", action="store_true", help="resample more oblique volumes onto a "
                        "patient-aligned grid instead of refusing them")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--append", action="store_true", help="add to an existing CSV (re-measured cases replace "
                        "their earlier rows)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return add_version_option(parser)


@interruptible("spine-measure")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .batch import (
        MeasureOptions,
        OutputExistsError,
        TablePaths,
        case_ids,
        find_mask_files,
        measure_and_report,
    )
    from .levels import LabelMapError, load_label_map, project_label_map
    from .outputs import OutputError, check_measure_outputs
    from .vertebra import MethodParameters

    if args.jobs < 1 or not 0 < args.inset < 0.5 or not 0 <= args.fov_margin <= 50:
        print("spine-measure: --jobs must be >= 1, --inset between 0 and 0.5 and --fov-margin between 0 and 50 mm",
              file=sys.stderr)
        return EXIT_USAGE
    if args.labels and args.labels_per_case:
        print("spine-measure: use either --labels or --labels-per-case", file=sys.stderr)
        return EXIT_USAGE
    if args.append and args.overwrite:
        print("spine-measure: use either --append or --overwrite", file=sys.stderr)
        return EXIT_USAGE
    if args.subregions and args.bodies_from_shape:
        print("spine-measure: use either --subregions (a subregion mask names the bodies) or --bodies-from-shape",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        label_map = load_label_map(args.labels) if args.labels else project_label_map()
    except LabelMapError as exc:
        print(f"spine-measure: {exc}", file=sys.stderr)
        return EXIT_USAGE
    paths = find_mask_files(args.inputs, args.pattern, args.recursive)
    if args.subregions:
        from .subregions import without_subregion_masks

        paths = without_subregion_masks(paths, args.subregions)
    if not paths:
        print(f"spine-measure: no mask files found in {', '.join(args.inputs)}", file=sys.stderr)
        return EXIT_USAGE
    outputs = TablePaths(Path(args.output), args.segments and Path(args.segments), args.spine and Path(args.spine))
    try:
        check_measure_outputs(args.output, args.qc_dir, paths, append=args.append, overwrite=args.overwrite,
                              tables=[path for path, _ in outputs.resolved()[1:]])
    except OutputError as exc:
        print(f"spine-measure: {exc}", file=sys.stderr)
        return EXIT_USAGE
    params = MethodParameters(inset_fraction=args.inset, slice_selection=args.slice_selection,
                              max_obliquity_deg=args.max_obliquity, resample_oblique=args.resample_oblique,
                              fov_margin_mm=args.fov_margin)
    options = MeasureOptions(params=params, label_map=label_map, ignore_unmapped=args.ignore_unmapped,
                             labels_per_case=args.labels_per_case, subregions=args.subregions,
                             bodies_from_shape=args.bodies_from_shape, qc_dir=args.qc_dir, images=args.images)
    try:
        some_failed = measure_and_report(paths, case_ids(paths, args.case_id), outputs, options, jobs=args.jobs,
                                         progress=not args.no_progress, append=args.append, overwrite=args.overwrite)
    except (OutputExistsError, ValueError) as exc:
        print(f"spine-measure: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_SOME_FAILED if some_failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
