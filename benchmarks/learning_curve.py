"""Learning curves of nnU-Net trainings: validation pseudo-Dice against cumulative training minutes, with the end
points spine-evaluate measured.

Reads nnU-Net's own logging from each training folder's ``checkpoint_final.pth`` (else ``checkpoint_latest.pth``):
``mean_fg_dice`` (the pseudo-Dice of the epoch's validation iterations), ``ema_fg_dice`` (its moving average) and
the epoch start and end timestamps. The time axis is training time: the sum of the epochs' durations (end - start),
so the first epoch starts at 0 and a continued training's pause does not count. Several trainings of one model (stage
1 then stage 2 of a cascade, or several folds) are chained by giving the same NAME again: each starts where the
previous one ended. ``--point NAME=report.json`` marks a spine-evaluate report (micro Dice multiclass and the share of
vertebrae with the right level) at NAME's total training minutes in a second panel.

Example (a run of benchmarks/real_data.py in WORK; the fold folders of nnU-Net's results)::

    R=WORK/res/Dataset601_LumbarCPU
    python benchmarks/learning_curve.py \
        --run cascade=$R/nnUNetTrainerSpineCoarseCpu__nnUNetPlans_spine__3d_lowres/fold_0 \
        --run cascade=$R/nnUNetTrainerSpineFineCpu__nnUNetPlans_spine__2d_cascade/fold_0 \
        --run nnU-Net=$R/nnUNetTrainer_5epochs__nnUNetPlans_cpu4mm__3d_fullres/fold_0 \
        --point cascade=WORK/reports/cascade_multiclass_fold0/report.json \
        --point nnU-Net=WORK/reports/nnunet_3d_fullres_fold0/report.json -o docs/learning_curve.png
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth")


@dataclass(frozen=True)
class Curve:
    """One training's validation pseudo-Dice per epoch, at the minute each epoch ended."""

    source: Path
    minutes: np.ndarray
    dice: np.ndarray
    ema: np.ndarray

    @property
    def end_minutes(self) -> float:
        return float(self.minutes[-1]) if len(self.minutes) else 0.0


@dataclass(frozen=True)
class Point:
    """A spine-evaluate report's end figures."""

    source: Path
    dice_multiclass: float | None
    level_identity: float | None


def checkpoint_file(folder: Path) -> Path:
    for name in CHECKPOINTS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: neither {' nor '.join(CHECKPOINTS)}")


def read_logging(folder: Path) -> dict:
    """nnU-Net's logging dict saved in a training folder's checkpoint."""
    import torch

    return torch.load(checkpoint_file(folder), map_location="cpu", weights_only=False)["logging"]


def curve_from_logging(logging: dict, source: Path, start_minutes: float = 0.0) -> Curve:
    """The curve of one training starting at ``start_minutes``; epochs with a missing entry (a checkpoint written
    within an epoch) are left out."""
    keys = ("epoch_start_timestamps", "epoch_end_timestamps", "mean_fg_dice", "ema_fg_dice")
    epochs = min(len(logging.get(key) or []) for key in keys)
    start, end, dice, ema = (np.asarray(logging[key][:epochs], dtype=float) for key in keys)
    minutes = start_minutes + np.cumsum(end - start) / 60.0
    return Curve(source, minutes, dice, ema)


def chain_runs(runs: Sequence[tuple[str, Path]], read=read_logging) -> dict[str, list[Curve]]:
    """Curves per name, in the order given; a name's later runs start where its earlier ones ended."""
    curves: dict[str, list[Curve]] = {}
    for name, folder in runs:
        chained = curves.setdefault(name, [])
        start = chained[-1].end_minutes if chained else 0.0
        chained.append(curve_from_logging(read(folder), folder, start))
    return curves


def read_point(report: Path) -> Point:
    data = json.loads(report.read_text())
    identity = data.get("level_identity") or {}
    return Point(report, data.get("dice_micro_multiclass"),
                 identity.get("share_right") if identity.get("available") else None)


def plot(curves: dict[str, list[Curve]], points: Sequence[tuple[str, Point]], output: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if points else 1
    figure, axes = plt.subplots(1, panels, figsize=(7 + 4 * (panels - 1), 4.5), squeeze=False,
                                gridspec_kw={"width_ratios": [7, 4][:panels]})
    colours = {name: f"C{i}" for i, name in enumerate(curves)}
    ax = axes[0, 0]
    for name, chained in curves.items():
        for i, curve in enumerate(chained):
            ax.plot(curve.minutes, curve.dice, color=colours[name], lw=0.8, alpha=0.45)
            ax.plot(curve.minutes, curve.ema, color=colours[name], lw=2, label=name if i == 0 else None,
                    marker="o" if len(curve.minutes) < 4 else None)  # a training of 1-3 epochs: show its points
            if i:
                ax.axvline(chained[i - 1].end_minutes, color=colours[name], lw=0.6, ls=":")  # the next run starts
    ax.set(xlabel="training time (min)", ylabel="validation pseudo-Dice (nnU-Net)", ylim=(0, 1),
           title=title or "pseudo-Dice per epoch (thin) and its moving average (thick)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if points:
        plot_points(axes[0, 1], curves, points, colours)
        axes[0, 1].set_xlim(ax.get_xlim())  # the same time axis as the curves
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120)
    plt.close(figure)


def plot_points(ax, curves: dict[str, list[Curve]], points: Sequence[tuple[str, Point]], colours: dict) -> None:
    """Each report at its model's total training minutes: micro Dice (circle), level identity (square)."""
    for name, point in points:
        minutes = curves[name][-1].end_minutes
        for value, marker in ((point.dice_multiclass, "o"), (point.level_identity, "s")):
            if value is not None:
                ax.plot(minutes, value, marker, color=colours[name], ms=8)
        ax.annotate(point.source.parent.name, (minutes, point.dice_multiclass or point.level_identity or 0),
                    textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.plot([], [], "o", color="grey", label="micro Dice multiclass")
    ax.plot([], [], "s", color="grey", label="levels right (share)")
    ax.set(xlabel="total training time (min)", ylabel="spine-evaluate", ylim=(0, 1), title="end points")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def name_and_path(text: str) -> tuple[str, Path]:
    name, separator, path = text.partition("=")
    if not separator or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=name_and_path, action="append", required=True, metavar="NAME=FOLD_DIR",
                        help="an nnU-Net training folder (.../TRAINER__PLANS__CONFIG/fold_K); repeat NAME to chain")
    parser.add_argument("--point", type=name_and_path, action="append", default=[], metavar="NAME=report.json",
                        help="a spine-evaluate report of NAME's model, marked at NAME's total training minutes")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the figure (PNG)")
    parser.add_argument("--title", default="", help="title of the curve panel")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = sorted({name for name, _ in args.point} - {name for name, _ in args.run})
    if unknown:
        parser.error(f"--point names without a --run: {', '.join(unknown)}")
    try:
        curves = chain_runs(args.run)
        points = [(name, read_point(path)) for name, path in args.point]
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as exc:
        print(f"learning_curve: error: {exc}", file=sys.stderr)
        return 2
    for name, chained in curves.items():
        for curve in chained:
            last = f"{curve.ema[-1]:.3f}" if len(curve.ema) else "n/a"
            print(f"{name}: {curve.source}: {len(curve.minutes)} epochs, ends at {curve.end_minutes:.1f} min, "
                  f"EMA pseudo-Dice {last}")
    plot(curves, points, args.output, args.title)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
