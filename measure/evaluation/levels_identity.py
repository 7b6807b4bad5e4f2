"""Level identity: for every reference vertebra, the predicted level that covers most of it, and whether that is its
own level, a neighbour (one level cranial or caudal) or another level. Read off the confusion matrix that the overlap
already counts, so it costs no extra pass over the voxels."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..levels import is_optional_level, level_order, level_rank
from .labels import ClassMap

OUTCOMES = ("right", "off_by_one", "wrong", "missed")
IDENTITY_COLUMNS = ("case_id", "level", "voxels_reference", "predicted_level", "overlap_voxels", "outcome",
                    "shift_levels")
"""Columns of level_identity.csv (one row per case and reference vertebra)."""


@dataclass(frozen=True)
class VertebraIdentity:
    """One reference vertebra and the predicted level covering most of it."""

    level: str
    voxels_reference: int
    predicted_level: str | None  # None: no predicted foreground voxel on it (missed)
    overlap_voxels: int  # voxels of the reference vertebra carrying predicted_level
    outcome: str  # one of OUTCOMES
    shift_levels: int | None  # predicted minus reference position in level steps; < 0: predicted more cranial

    def row(self, case_id: str) -> dict:
        return {"case_id": case_id, **asdict(self)}


def level_sequence(names: Iterable[str]) -> tuple[str, ...]:
    """The known levels in cranio-caudal order used to count steps: the transitional variants (T13, L6) only when
    ``names`` holds them, so T12 -> L1 is one step unless the label maps name T13."""
    named = set(names)
    return tuple(lv for lv in level_order() if not is_optional_level(lv) or lv in named)


def level_steps(reference: str, predicted: str, sequence: Sequence[str]) -> int:
    """Position of ``predicted`` minus that of ``reference`` in ``sequence`` (level steps; negative: cranial)."""
    return sequence.index(predicted) - sequence.index(reference)


def outcome_of(steps: int | None) -> str:
    """``right`` (0 steps), ``off_by_one`` (+-1), ``wrong`` (any other), ``missed`` (None: nothing predicted)."""
    if steps is None:
        return "missed"
    return {0: "right", -1: "off_by_one", 1: "off_by_one"}.get(steps, "wrong")


def best_prediction(overlaps: Mapping[str, int], reference: str, sequence: Sequence[str]) -> str | None:
    """The predicted level with most voxels on the reference vertebra (``overlaps``: level -> voxels); a tie goes to
    the level nearest to ``reference`` in level steps, then to the more cranial one. None when all counts are 0."""
    candidates = [(-n, abs(level_steps(reference, lv, sequence)), level_rank(lv), lv)
                  for lv, n in overlaps.items() if n > 0]
    return min(candidates)[3] if candidates else None


def identify_levels(matrix: np.ndarray, names: Sequence[str]) -> list[VertebraIdentity]:
    """Level identity of every reference vertebra of one case.

    ``matrix``: the confusion matrix ``C[p, r]`` (voxels) of predicted class index p and reference class index r,
    0 = background and index i = ``names[i - 1]`` on both sides (measure.evaluation.overlap.confusion_matrix). A
    reference class with no voxel is not in the case and gets no row.
    """
    sequence = level_sequence(names)
    identities = []
    for r, level in enumerate(names, start=1):
        voxels = int(matrix[:, r].sum())
        if voxels == 0:
            continue
        overlaps = {name: int(matrix[p, r]) for p, name in enumerate(names, start=1)}
        predicted = best_prediction(overlaps, level, sequence)
        steps = None if predicted is None else level_steps(level, predicted, sequence)
        identities.append(VertebraIdentity(level, voxels, predicted, overlaps[predicted] if predicted else 0,
                                           outcome_of(steps), steps))
    return identities


def case_columns(identities: Sequence[VertebraIdentity] | None) -> dict:
    """The per-case columns: reference vertebrae (``levels_n``), right, off by one, and whether all are right (None
    with no reference vertebra; every value None when level identity is not available)."""
    if identities is None:
        return {"levels_n": None, "levels_right": None, "levels_off_by_one": None, "levels_all_right": None}
    right = sum(i.outcome == "right" for i in identities)
    return {"levels_n": len(identities), "levels_right": right,
            "levels_off_by_one": sum(i.outcome == "off_by_one" for i in identities),
            "levels_all_right": (right == len(identities)) if identities else None}


def unavailable_reason(predicted: ClassMap, reference: ClassMap) -> str | None:
    """Why level identity cannot be computed (a label map names no levels), or None when it can."""
    for side, mapped in (("prediction", predicted), ("reference", reference)):
        if not mapped.is_levels:
            return (f"the {side} label map has one class ({', '.join(mapped.classes.values())}) and names no "
                    "vertebral levels (binary), so predicted and reference levels cannot be compared")
    return None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def identity_summary(table: pd.DataFrame, reason: str | None) -> dict:
    """The report's ``level_identity`` section from the per-(case, vertebra) table of the pooled cases."""
    if reason is not None:
        return {"available": False, "reason": reason}
    counts = table["outcome"].value_counts()
    n = {outcome: int(counts.get(outcome, 0)) for outcome in OUTCOMES}
    vertebrae = int(len(table))
    all_right = table.groupby("case_id", sort=False)["outcome"].agg(lambda s: bool((s == "right").all()))
    off = table[table["outcome"] == "off_by_one"]["shift_levels"]
    return {"available": True, "vertebrae": vertebrae, **n,
            "share_right": _share(n["right"], vertebrae), "share_off_by_one": _share(n["off_by_one"], vertebrae),
            "off_by_one_cranial": int((off < 0).sum()), "off_by_one_caudal": int((off > 0).sum()),
            "cases": int(len(all_right)), "cases_all_right": int(all_right.sum()),
            "share_cases_all_right": _share(int(all_right.sum()), int(len(all_right))),
            "file": "level_identity.csv"}


__all__ = ["IDENTITY_COLUMNS", "OUTCOMES", "VertebraIdentity", "best_prediction", "case_columns", "identify_levels",
           "identity_summary", "level_sequence", "level_steps", "outcome_of", "unavailable_reason"]
