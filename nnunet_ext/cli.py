"""spine-nnunet: the project's nnU-Net side: add the cascade to a dataset's plans, register the trainers, run the
built-in demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from measure.runtime import add_version_option, dataset_folder_name, nnunet_folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spine-nnunet", description="nnU-Net v2 plugin for vertebral bodies in "
                                     "sagittal lumbar MRI.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the built-in example end to end on CPU (no downloads)")
    demo.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    demo.add_argument("--cases", type=int, default=3, help="unseen phantoms to segment and measure")
    demo.add_argument("--seed", type=int, default=7,
                      help="seed of the phantoms and of the trainings: a demo repeats on one machine (default 7)")
    demo.add_argument("--variant", default="Demo", choices=("Demo", "Short", "Smoke"),
                      help="trainer schedule: Demo (375 + 750 iterations, default), Short (500 + 1000), Smoke (CI)")
    demo.add_argument("--training-cases", type=int, default=8, help="training phantoms (default 8)")
    demo.add_argument("--measure-only", action="store_true",
                      help="skip training: measure the phantoms' true masks only (seconds)")
    plan = commands.add_parser(
        "plan", help="add the 3d_lowres -> 2d_cascade cascade to a dataset's nnU-Net plans (after nnU-Net's planning)",
        description="Reads $nnUNet_preprocessed/DatasetNNN_Name/nnUNetPlans.json (run nnUNetv2_plan_and_preprocess "
                    "-d ID --no_pp first) and writes nnUNetPlans_spine.json beside it; then run nnUNetv2_preprocess "
                    "-d ID -plans_name nnUNetPlans_spine -c 3d_lowres 2d_cascade.")
    plan.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetNNN_Name")
    plan.add_argument("--preset", choices=("default", "small", "cpu"), default="default",
                      help="network and patch sizes: default (GPU), cpu (the CPU recipe for real scans) or small "
                      "(CPU demos and tests)")
    plan.add_argument("--source-plans", default="nnUNetPlans", help="nnU-Net's plans identifier to start from")
    plan.add_argument("--plans-name", default=None, help="identifier of the written plans (default nnUNetPlans_spine)")
    commands.add_parser("register", help="make the stock nnUNetv2_* commands find the trainers (writes a .pth file)")
    return add_version_option(parser)


def _env_path(name: str) -> Path:
    value = nnunet_folder(name)
    if not value:
        raise RuntimeError(f"set {name} (nnU-Net's folders: nnUNet_raw, nnUNet_preprocessed, nnUNet_results)")
    return Path(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.out, args.cases, args.seed, train=not args.measure_only, variant=args.variant,
                        training_cases=args.training_cases)
    if args.command == "register":
        from .registration import register

        print(f"wrote {register()}: nnUNetv2_* commands now find the spine trainers")
        return 0
    if args.command == "plan":
        from .plans import PRESETS, SPINE_PLANS_NAME, write_spine_plans

        try:
            preprocessed, raw = _env_path("nnUNet_preprocessed"), _env_path("nnUNet_raw")
            name = dataset_folder_name(args.dataset, preprocessed)
            target = write_spine_plans(name, preprocessed, raw, PRESETS[args.preset], args.source_plans,
                                       args.plans_name or SPINE_PLANS_NAME)
        except (RuntimeError, FileNotFoundError, ValueError) as exc:
            print(f"spine-nnunet plan: error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {target}\nnext: nnUNetv2_preprocess -d {args.dataset} -plans_name {target.stem} "
              "-c 3d_lowres 2d_cascade")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
