"""Voxel overlap of a predicted and a reference label array on one grid: a confusion matrix of class indices, and
Dice / Jaccard from true positive, false positive and false negative counts (nnU-Net's conventions)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np


class UnmappedLabelError(ValueError):
    """A mask holds label values that its label map does not name."""


@dataclass(frozen=True)
class Counts:
    """Voxel counts of one class (or of all vertebrae together): true positives, false positives, false negatives."""

    tp: int
    fp: int
    fn: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def dice(self) -> float:
        """2 TP / (2 TP + FP + FN); NaN when the class is in neither mask (nnU-Net excludes it from means)."""
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else math.nan

    @property
    def jaccard(self) -> float:
        """TP / (TP + FP + FN); NaN when the class is in neither mask."""
        total = self.tp + self.fp + self.fn
        return self.tp / total if total else math.nan


def class_indices(array: np.ndarray, value_to_index: Mapping[int, int], allowed: tuple[int, ...] = (0,),
                  what: str = "mask") -> np.ndarray:
    """Replace label values by class indices (0 for background and the ``allowed`` extra values such as the ignore
    label); raises :class:`UnmappedLabelError` naming any other value."""
    counts = np.bincount(array.ravel()) if array.size else np.zeros(1, dtype=np.int64)
    present = np.flatnonzero(counts)
    unknown = sorted(int(v) for v in present if int(v) not in value_to_index and int(v) not in allowed)
    if unknown:
        raise UnmappedLabelError(f"{what} holds label value(s) {unknown} that its label map does not name")
    lut = np.zeros(len(counts), dtype=np.uint8)
    for value, index in value_to_index.items():
        if value < len(lut):
            lut[value] = index
    return lut[array]


def confusion_matrix(predicted_index: np.ndarray, reference_index: np.ndarray, n_classes: int,
                     valid: np.ndarray | None = None) -> np.ndarray:
    """``C[p, r]``: voxels with predicted class index p and reference class index r (0 = background), counted
    where ``valid`` is true (nnU-Net: where the reference is not the ignore label). Shape (n+1, n+1)."""
    if predicted_index.shape != reference_index.shape:
        raise ValueError(f"arrays differ in shape: {predicted_index.shape} vs {reference_index.shape}")
    size = n_classes + 1
    joint = predicted_index.astype(np.int64) * size + reference_index
    if valid is not None:
        joint = joint[valid]
    return np.bincount(joint.ravel(), minlength=size * size).reshape(size, size)


def class_counts(matrix: np.ndarray) -> list[Counts]:
    """Counts of each class index 1..n from a confusion matrix (a voxel of class a predicted as class b is a false
    negative of a and a false positive of b)."""
    counts = []
    for k in range(1, matrix.shape[0]):
        tp = int(matrix[k, k])
        counts.append(Counts(tp, int(matrix[k, :].sum()) - tp, int(matrix[:, k].sum()) - tp))
    return counts


def binary_counts(matrix: np.ndarray) -> Counts:
    """Counts of "any vertebra" (every class index >= 1 as one foreground)."""
    return Counts(int(matrix[1:, 1:].sum()), int(matrix[1:, 0].sum()), int(matrix[0, 1:].sum()))


def micro(counts: list[Counts]) -> Counts:
    """Counts pooled over classes and cases (the paper's micro average)."""
    total = Counts(0, 0, 0)
    for c in counts:
        total = total + c
    return total
