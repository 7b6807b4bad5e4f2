"""spine-predict: segment scans with the trained cascade (stage 1 then stage 2), masks in the input geometry,
optionally measured right away."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from measure.runtime import add_version_option, dataset_folder_name, interruptible, nnunet_folder

VARIANTS = ("", "Binary", "Cpu", "BinaryCpu", "Short", "BinaryShort", "Smoke", "Demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spine-predict",
        description="Segment sagittal lumbar scans with the trained 3d_lowres -> 2d_cascade cascade through "
                    "nnU-Net's predictor. Inputs: image files (NIfTI, NRRD, MHA) or DICOM series folders, or "
                    "folders of them. Masks are written as OUTPUT/CASE.nii.gz in each input's own geometry.",
    )
    parser.add_argument("-i", "--input", nargs="+", required=True, help="image files, DICOM folders or folders")
    parser.add_argument("-o", "--output", required=True, help="output folder for the masks")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetNNN_Name the models belong to")
    parser.add_argument("-p", "--plans", default="nnUNetPlans_spine",
                        help="plans identifier (default nnUNetPlans_spine)")
    parser.add_argument("--variant", choices=VARIANTS, default="",
                        help="trainer variant used for both stages (e.g. Short -> nnUNetTrainerSpineCoarseShort and "
                             "nnUNetTrainerSpineFineShort)")
    parser.add_argument("--coarse-trainer", help="stage-1 trainer class (overrides --variant)")
    parser.add_argument("--fine-trainer", help="stage-2 trainer class (overrides --variant)")
    parser.add_argument("-f", "--folds", nargs="+", help="folds of both stages (default: every trained fold)")
    parser.add_argument("--coarse-folds", nargs="+", help="folds of stage 1 only")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth")
    parser.add_argument("--device", default=None, choices=("cpu", "cuda"),
                        help="default: cuda when available, else cpu")
    parser.add_argument("--processes", type=int, default=None,
                        help="accepted for nnU-Net-style command lines and ignored: each case is preprocessed in this "
                             "process (worker pools cost more than they save for one case at a time)")
    speed = parser.add_argument_group(
        "speed against accuracy", "the defaults are the fast path; each option says what it trades")
    speed.add_argument("--disable-tta", action="store_true",
                       help="no test-time mirroring (faster; mirroring is left-right only and affects stage 1, "
                            "docs/benchmarks.md has the cost and the Dice either way)")
    speed.add_argument("--full-window", action="store_true",
                       help="stage 2 on every sagittal slice with nnU-Net's sliding window, not only around stage 1's "
                            "vertebrae (several times slower; a vertebra stage 1 missed entirely can still be found)")
    speed.add_argument("--box-tiles", action="store_true",
                       help="stage 2's tiles laid over stage 1's box instead of taken from nnU-Net's grid over the "
                            "whole slice: up to 3x fewer tiles on slices much larger than the patch (3 x 1 instead "
                            "of 3 x 3 on 351-381-px slices), but the outlines change with the tiles (masks within "
                            "per-case Dice 0.93-1.0 of the default's, which are the full window's inside the box; "
                            "cross-validation Dice the same, docs/benchmarks.md)")
    speed.add_argument("--step-size", type=float, default=0.5,
                       help="sliding-window step as a fraction of the patch (default 0.5; smaller: more overlapping "
                            "tiles, slower; 1.0, tiles that touch: on the CPU recipe's model about a third faster, "
                            "binary Dice 0.012 lower and heights 0.3-0.6 mm further off, docs/benchmarks.md)")
    speed.add_argument("--slice-batch", type=int, default=4,
                       help="sagittal slices per stage-2 network call (default 4, the fastest on 2 CPU cores; more "
                            "may suit a GPU; the masks do not change)")
    speed.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                       help="network compute on the CPU: auto (default) runs each stage in the precision it was "
                            "trained in (bfloat16 for a trainer with cpu_bfloat16, where the CPU has it natively: "
                            "AVX512-BF16 or AMX), float32 otherwise; bfloat16 for a float32-trained model is about "
                            "1.6x faster, masks within Dice 0.976-1.0 of float32's (docs/benchmarks.md); on CUDA "
                            "nnU-Net's float16 autocast is used either way")
    speed.add_argument("--cpu-layout", choices=("auto", "contiguous", "channels-last"), default="auto",
                       help="tensor layout of the networks on the CPU: auto (default) is channels-last for a "
                            "bfloat16 network on an x86 CPU with AMX or AVX512-BF16 (1.4-1.9x faster per tile with "
                            "AMX, up to 1.2x on AMD Zen 4; bfloat16 rounds differently in the two layouts: the "
                            "recipe's masks within Dice 0.997 (AMX, 48 real cases) and 0.9966 (Zen 4, 24) of each "
                            "other, docs/benchmarks.md), contiguous otherwise")
    parser.add_argument("--num-parts", type=int, default=1,
                        help="split the cohort over this many machines (nnU-Net's parts)")
    parser.add_argument("--part-id", type=int, default=0, help="which part this machine runs (0-based)")
    parser.add_argument("--measure", metavar="CSV", help="measure the masks into this CSV (spine-measure)")
    parser.add_argument("--qc-dir", help="with --measure: QC pictures here")
    parser.add_argument("--keep-intermediate", help="keep the cropped inputs and both stages' outputs here")
    parser.add_argument("--keep-out-of-order", action="store_true",
                        help="keep parts whose level contradicts the cranio-caudal order (by default they are removed, "
                             "e.g. a 'T12' below L5, or given the level of the body they are the smaller piece of, "
                             "e.g. the lower part of L5 called 'S2'; each is reported)")
    parser.add_argument("--keep-predicted-levels", action="store_true",
                        help="keep the network's level names even when two bodies above the sacrum get the same "
                             "one, or the chain above S1 skips one (by default such a chain is counted again up from "
                             "the sacrum when its caudal end is predicted sacral; a skip only when at least three "
                             "evenly spaced bodies, none L6 or T13, lie above S1; a chain naming a level twice "
                             "without a sacrum is counted up from stage 1's level of its caudal body where stage 1 "
                             "names most of that body one level, else gets the consecutive levels its voxels voted "
                             "for most, where a quarter of each renamed body voted for its new level), and the "
                             "network's level for every voxel (by default a body's voxels near its centre get the "
                             "level of most of them); each relabelling is reported")
    _add_nnunet_spellings(parser)
    return add_version_option(parser)


NNUNET_SPELLINGS = {"-chk": "checkpoint", "-device": "device", "-npp": "processes", "-step_size": "step_size",
                    "-num_parts": "num_parts", "-part_id": "part_id"}
"""nnUNetv2_predict's single-dash spellings of options spine-predict names with two dashes: accepted so that an
nnU-Net command line works as it is, and left out of --help (one documented spelling per option)."""


def _add_nnunet_spellings(parser: argparse.ArgumentParser) -> None:
    actions = {action.dest: action for action in parser._actions}
    for flag, dest in NNUNET_SPELLINGS.items():
        action = actions[dest]
        parser.add_argument(flag, dest=dest, type=action.type, choices=action.choices, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)


def _folds(values: Sequence[str] | None) -> tuple[int | str, ...] | None:
    if not values:
        return None
    return tuple(v if v == "all" else int(v) for v in values)


@interruptible("spine-predict")
def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 all cases segmented (and measured), 1 some case failed, 2 usage error or missing models."""
    args = build_parser().parse_args(argv)
    if args.slice_batch < 1:
        print("spine-predict: error: --slice-batch must be at least 1", file=sys.stderr)
        return 2
    if args.box_tiles and args.full_window:
        print("spine-predict: error: --box-tiles lays stage 2's tiles over stage 1's box, --full-window runs every "
              "slice without a box: choose one", file=sys.stderr)
        return 2
    if not 0 <= args.part_id < args.num_parts:
        print("spine-predict: error: --part-id must be between 0 and --num-parts - 1", file=sys.stderr)
        return 2
    results, preprocessed = nnunet_folder("nnUNet_results"), nnunet_folder("nnUNet_preprocessed")
    if not results:
        print("spine-predict: error: set nnUNet_results (where nnUNetv2_train wrote the models)", file=sys.stderr)
        return 2
    import torch

    from measure.outputs import OutputError, check_measure_outputs

    from .inference import CascadeModel, RunOptions, predict_cascade

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dataset = dataset_folder_name(args.dataset, *[Path(f) for f in (results, preprocessed) if f])
    except (FileNotFoundError, ValueError) as exc:
        print(f"spine-predict: error: {exc}", file=sys.stderr)
        return 2
    model = CascadeModel(
        dataset, Path(results), args.plans,
        args.coarse_trainer or f"nnUNetTrainerSpineCoarse{args.variant}",
        args.fine_trainer or f"nnUNetTrainerSpineFine{args.variant}",
        _folds(args.coarse_folds or args.folds), _folds(args.folds), args.checkpoint)
    run = RunOptions(device=device, mirroring=not args.disable_tta, tile_step_size=args.step_size,
                     part_id=args.part_id, num_parts=args.num_parts,
                     keep_intermediate=Path(args.keep_intermediate) if args.keep_intermediate else None,
                     level_order=not args.keep_out_of_order,
                     count_levels=not args.keep_predicted_levels, full_window=args.full_window,
                     slice_batch=args.slice_batch, precision=args.precision, cpu_layout=args.cpu_layout,
                     tile_layout="box" if args.box_tiles else "grid")
    try:
        if args.measure:  # before any work, as spine-measure does
            check_measure_outputs(args.measure, args.qc_dir, args.input, append=args.num_parts > 1, overwrite=True)
        cases = predict_cascade(args.input, args.output, model, run, on_case=_print_case, on_loaded=_print_precision)
    except (FileNotFoundError, OutputError, ValueError) as exc:
        print(f"spine-predict: error: {exc}", file=sys.stderr)
        return 2
    failed = [c for c in cases if c.status != "ok"]
    status = 1 if failed else 0
    if args.measure and len(failed) < len(cases):
        status = max(status, _measure_predictions(args))
    return status


def _print_precision(precisions: dict[str, str]) -> None:
    """One line once the models are loaded: each stage's compute precision on the CPU, with "(channels-last)" where
    its network runs on channels-last tensors (``--cpu-layout``)."""
    if precisions:
        print("compute precision on the CPU: " + ", ".join(f"{s} {p}" for s, p in precisions.items()), flush=True)


def _print_case(case) -> None:
    """One line per case as it ends: status, mask or message, notes, and its time (phases in brackets)."""
    detail = case.message if case.status != "ok" else f"{case.output}" + (
        f" ({'; '.join(case.notes)})" if case.notes else "")
    phases = ", ".join(f"{name[:-2]} {value:.1f}" for name, value in case.seconds.items() if name != "total_s")
    print(f"{case.case_id}: {case.status}: {detail} [{case.seconds.get('total_s', 0.0):.1f} s: {phases}]",
          flush=True)


def _measure_predictions(args: argparse.Namespace) -> int:
    """Measure every mask in the output folder into ``--measure`` (appending for --num-parts runs that share the
    CSV) with the model's label map, through the measurement library; returns spine-measure's exit status."""
    from measure.batch import MeasureOptions, OutputExistsError, case_ids, find_mask_files, measure_and_report
    from measure.levels import LabelMapError, load_label_map

    output = Path(args.output)
    paths = find_mask_files([output], "*.nii.gz")
    image_folder = next((Path(i) for i in args.input if Path(i).is_dir()), None)
    append = args.num_parts > 1  # --num-parts runs share the CSV
    try:
        options = MeasureOptions(label_map=load_label_map(output / "dataset.json"), qc_dir=args.qc_dir,
                                 images=str(image_folder) if args.qc_dir and image_folder else None)
        some_failed = measure_and_report(paths, case_ids(paths), args.measure, options, progress=False,
                                         append=append, overwrite=not append)
    except (LabelMapError, OutputExistsError, ValueError) as exc:
        print(f"spine-measure: {exc}", file=sys.stderr)
        return 2
    return 1 if some_failed else 0


if __name__ == "__main__":
    sys.exit(main())
