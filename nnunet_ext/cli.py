"""spine-nnunet: the project's nnU-Net side (for now: the built-in demo)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spine-nnunet", description="nnU-Net v2 plugin for vertebral bodies in "
                                     "sagittal lumbar MRI.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the built-in example end to end (no downloads)")
    demo.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    demo.add_argument("--cases", type=int, default=3)
    demo.add_argument("--seed", type=int, default=7)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.out, args.cases, args.seed)
    return 2


if __name__ == "__main__":
    sys.exit(main())
