"""Segmentation agreement between a predicted and a reference label mask (same grid): Dice per label."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def dice_per_label(predicted: np.ndarray, reference: np.ndarray, labels: Iterable[int]) -> dict[int, float]:
    """Dice of each label value; NaN where the label is in neither mask. Raises on different shapes."""
    if predicted.shape != reference.shape:
        raise ValueError(f"masks differ in shape: {predicted.shape} vs {reference.shape}")
    scores = {}
    for label in labels:
        p, r = predicted == label, reference == label
        total = int(p.sum()) + int(r.sum())
        scores[int(label)] = 2.0 * int(np.logical_and(p, r).sum()) / total if total else float("nan")
    return scores


def foreground_dice(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Dice of "any vertebra" (all non-zero labels together)."""
    return dice_per_label((predicted > 0).astype(np.uint8), (reference > 0).astype(np.uint8), [1])[1]
