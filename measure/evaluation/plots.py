"""Bland-Altman plot of the measurement agreement (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..outputs import atomic_write
from .measurements import QUANTITIES


def bland_altman_png(pairs: pd.DataFrame, statistics: dict[str, dict], path: Path, title: str = "") -> Path:
    """One panel per quantity: mean of reference and prediction against their difference, with the bias and the
    95% limits of agreement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(15, 8.5), constrained_layout=True)
    for axis, (quantity, unit) in zip(axes.ravel(), QUANTITIES.items(), strict=True):
        rows = pairs.dropna(subset=[f"{quantity}_diff"])
        stats = statistics[quantity]
        label = quantity.removesuffix("_mm").removesuffix("_deg").replace("_", " ")
        axis.set_title(f"{label}: n={stats['n']}" + (f", MAE {stats['mae']:.2f} {unit}" if stats["n"] else ""))
        axis.set_xlabel(f"mean of reference and prediction ({unit})")
        axis.set_ylabel(f"prediction - reference ({unit})")
        axis.axhline(0.0, color="0.75", linewidth=0.8)
        if not len(rows):
            axis.text(0.5, 0.5, "no matched values", ha="center", va="center", transform=axis.transAxes)
            continue
        mean = (rows[f"{quantity}_ref"] + rows[f"{quantity}_pred"]) / 2
        axis.scatter(mean, rows[f"{quantity}_diff"], s=14, alpha=0.7, color="tab:blue", edgecolors="none")
        if stats["bias"] is not None:
            axis.axhline(stats["bias"], color="tab:red", label=f"bias {stats['bias']:+.2f}")
        if stats["loa_low"] is not None:
            for value, name in ((stats["loa_low"], "-1.96 SD"), (stats["loa_high"], "+1.96 SD")):
                axis.axhline(value, color="tab:red", linestyle="--", label=f"{name} {value:+.2f}")
        extremes = [float(np.nanmax(np.abs(rows[f"{quantity}_diff"])))]
        extremes += [abs(stats[k]) for k in ("loa_low", "loa_high") if stats[k] is not None]
        limit = max(extremes) * 1.15 or 1.0
        axis.set_ylim(-limit, limit)
        axis.legend(loc="upper right", fontsize=8)
    figure.suptitle(title or "Bland-Altman: measurements from predicted vs reference masks")
    atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=100))
    plt.close(figure)
    return path
