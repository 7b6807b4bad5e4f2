"""spine-evaluate: overlap (micro Dice/Jaccard as the paper's Table 1, per class and case, HD95/ASSD) and
measurement agreement (MAE, bias, limits of agreement, Genant) of predicted against reference masks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..runtime import add_version_option, interruptible
from .partial import IGNORE_BEYOND

if TYPE_CHECKING:
    from .run import EvaluationOptions

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spine-evaluate",
        description="Compare a folder of predicted masks with a folder of reference masks, matched by case id "
        "(file name without extension). Writes REPORT_DIR/report.json, report.md, cases.csv, classes_per_case.csv "
        "and, for level-labelled masks, level_identity.csv, the measurement tables, measurement_pairs.csv and "
        "bland_altman.png.",
        epilog="Exit status: 0 every selected case evaluated; 1 some case missing a prediction or failing (see the "
        "report); 2 usage error.")
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR", help="predicted masks")
    parser.add_argument("--ref", required=True, type=Path, metavar="DIR", help="reference masks (e.g. nnU-Net's "
                        "labelsTr, or an export with one folder per case and --ref-pattern mask.nii.gz)")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="REPORT_DIR")
    parser.add_argument("--labels", metavar="FILE", help="label map of both sides: nnU-Net dataset.json or JSON "
                        "{value: name} (default: a dataset.json in or above each folder, else the project scheme)")
    parser.add_argument("--pred-labels", metavar="FILE", help="label map of the predictions only")
    parser.add_argument("--ref-labels", metavar="FILE", help="label map of the references only")
    parser.add_argument("--split", metavar="splits_final.json", help="evaluate the validation cases of --fold")
    parser.add_argument("--fold", type=int, help="fold of --split")
    parser.add_argument("--cases", nargs="+", metavar="ID", help="evaluate only these reference cases")
    parser.add_argument("--missing", choices=("empty", "skip"), default="empty", help="a reference case without "
                        "prediction: scored as an empty prediction (default) or left out; listed either way")
    parser.add_argument("--ignore-beyond", choices=IGNORE_BEYOND, default="auto", help="for references without "
                        "an ignore label: treat the reference background beyond the first/last annotated vertebra "
                        "on this side as unannotated, like the ignore label (a level the case's reference annotates "
                        "still counts as a false positive there, other predicted foreground is left out); auto "
                        "(default): the ends lacking T11 or S2, for a level-named reference map without an ignore "
                        "label, else none")
    parser.add_argument("--ref-pattern", metavar="GLOB", help="reference file name pattern (e.g. mask.nii.gz)")
    parser.add_argument("--recursive", action="store_true", help="search the reference folder recursively")
    parser.add_argument("--no-surface", action="store_true", help="skip HD95/ASSD (faster)")
    parser.add_argument("--no-measure", action="store_true", help="skip the measurement agreement")
    parser.add_argument("--qc", action="store_true", help="write spine-measure QC pictures of both sides")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report in REPORT_DIR")
    parser.add_argument("--no-progress", action="store_true")
    return add_version_option(parser)


@interruptible("spine-evaluate")
def _argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments before any work (folders, options that go together, the report folder)."""
    from ..outputs import OutputError, check_writable_folder, refuse_outputs_over_inputs

    for name, folder in (("--pred", args.pred), ("--ref", args.ref)):
        if not folder.is_dir():
            return f"{name} {folder}: not a folder"
    if args.jobs < 1:
        return "--jobs must be >= 1"
    if args.split and args.cases:
        return "use either --split/--fold or --cases"
    if (args.fold is None) != (args.split is None):
        return "--split and --fold go together"
    if (args.output / "report.json").exists() and not args.overwrite:
        return f"{args.output / 'report.json'} exists: use --overwrite or another REPORT_DIR"
    try:  # the report folder is writable and is neither the predictions nor the references
        refuse_outputs_over_inputs([args.output], [args.pred, args.ref])
        check_writable_folder(args.output, "report folder")
    except OutputError as exc:
        return str(exc)
    return None


def _evaluation_options(args: argparse.Namespace) -> EvaluationOptions | str:
    """The :class:`~.run.EvaluationOptions` of the arguments, or the usage message saying why there are none."""
    from ..batch import find_mask_files
    from ..levels import LabelMapError
    from .labels import default_class_map
    from .run import EvaluationOptions, read_selection

    try:
        pred_map = default_class_map(args.pred, args.pred_labels, args.labels)
        ref_map = default_class_map(args.ref, args.ref_labels, args.labels)
        selection, selection_source = read_selection(args.split, args.fold, args.cases)
    except (LabelMapError, ValueError, OSError, KeyError) as exc:
        return str(exc)
    if args.ignore_beyond not in ("auto", "none") and not ref_map.is_levels:
        return (f"--ignore-beyond {args.ignore_beyond} needs a reference label map that names levels (the reference "
                f"map {ref_map.source} has one class, so its vertebrae cannot be told apart)")
    if not find_mask_files([args.ref], args.ref_pattern, args.recursive):
        return (f"no reference masks found in {args.ref} (one folder per case? use --ref-pattern mask.nii.gz "
                "--recursive)")
    return EvaluationOptions(pred_map=pred_map, ref_map=ref_map, selection=selection,
                             selection_source=selection_source, missing=args.missing, surface=not args.no_surface,
                             measure=not args.no_measure, qc=args.qc, jobs=args.jobs, progress=not args.no_progress,
                             ref_pattern=args.ref_pattern, ref_recursive=args.recursive,
                             ignore_beyond=args.ignore_beyond)


def _print_summary(report: dict, args: argparse.Namespace) -> None:
    """The overlap, level identity and every problem of the run, on standard error."""
    problems = report["problems"]

    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    print(f"spine-evaluate: {report['cases_evaluated']} case(s); Dice/Jaccard micro multiclass "
          f"{show(report['dice_micro_multiclass'])}/{show(report['jaccard_micro_multiclass'])}, binary "
          f"{show(report['dice_micro_binary'])}/{show(report['jaccard_micro_binary'])} -> {args.output}/report.md",
          file=sys.stderr)
    print(f"  {_identity_line(report['level_identity'])}", file=sys.stderr)
    left_out = report["partial_annotation"]["left_out_predicted_voxels"]
    if left_out:
        print(f"  partial annotation: {left_out} predicted voxel(s) in unannotated reference regions left out (see "
              "report.md)", file=sys.stderr)
    for case_id in problems["missing_predictions"]:
        print(f"  missing prediction ({args.missing}): {case_id}", file=sys.stderr)
    for case_id, message in problems["failed_cases"].items():
        print(f"  failed: {case_id}: {message}", file=sys.stderr)
    for case_id in problems["extra_predictions"]:
        print(f"  prediction without reference, not evaluated: {case_id}", file=sys.stderr)
    for case_id in problems["selected_without_reference"]:
        print(f"  selected case has no reference file: {case_id}", file=sys.stderr)
    for note in problems["label_map_notes"]:
        print(f"  note: {note}", file=sys.stderr)
    print_outcome(report, problems, args.missing)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .run import evaluate_folders

    problem = _argument_problem(args)
    options = _evaluation_options(args) if problem is None else problem
    if isinstance(options, str):
        print(f"spine-evaluate: {options}", file=sys.stderr)
        return EXIT_USAGE
    report = evaluate_folders(args.pred.resolve(), args.ref.resolve(), args.output, options)
    _print_summary(report, args)
    problems = report["problems"]
    bad = problems["missing_predictions"] or problems["failed_cases"] or problems["selected_without_reference"]
    return EXIT_SOME_FAILED if bad or report["cases_evaluated"] == 0 else EXIT_OK


def print_outcome(report: dict, problems: dict, missing: str) -> None:
    """One closing line when nothing useful was measured: why (no name matched, or every case failed)."""
    failed, absent = problems["failed_cases"], problems["missing_predictions"]
    # cases with a prediction that were evaluated (--missing empty pools the absent ones as empty predictions)
    matched = report["cases_evaluated"] - (len(absent) if missing == "empty" else 0)
    if failed and matched <= 0 and not absent:
        print(f"spine-evaluate: every case failed ({len(failed)}; see the 'failed' lines above): nothing was "
              "measured", file=sys.stderr)
    elif absent and matched <= 0 and not failed:
        scored = " and every reference was scored as an empty prediction (--missing empty)" if missing == "empty" \
            else ""
        print(f"spine-evaluate: no prediction file matches any reference by name{scored}. Cases are matched by file "
              "name without extension" + _id_example(problems), file=sys.stderr)
    elif report["cases_evaluated"] == 0:
        print("spine-evaluate: no case was evaluated: no selected reference case has a prediction. Cases are matched "
              "by file name without extension" + _id_example(problems), file=sys.stderr)


def _identity_line(identity: dict) -> str:
    """One line on level identity for the terminal."""
    if not identity["available"]:
        return f"level identity: not available ({identity['reason']})"
    return (f"level identity: {identity['right']}/{identity['vertebrae']} vertebrae right, {identity['off_by_one']} "
            f"off by one, {identity['wrong']} wrong, {identity['missed']} missed; {identity['cases_all_right']}/"
            f"{identity['cases']} case(s) with every level right")


def _id_example(problems: dict) -> str:
    """`` (e.g. prediction 'a' vs reference 'b')`` from the unmatched ids, to show how the names differ."""
    predicted = problems["extra_predictions"][:1]
    referenced = (problems["missing_predictions"] or problems["not_selected"])[:1]  # ids among the references
    return f" (e.g. prediction '{predicted[0]}' vs reference '{referenced[0]}')" if predicted and referenced else ""


if __name__ == "__main__":
    sys.exit(main())
