"""Partially annotated references: anatomy that is in the image but not annotated (S1 below an L1-L5 annotation).

The unannotated region of a case is where the reference carries nnU-Net's ignore label and, with ``--ignore-beyond``,
the reference background beyond the annotated levels (:func:`measure.unannotated.beyond_annotation`). There, a level
that the reference of the case annotates elsewhere is still a false positive of that level (it is predicted beyond
where the reference has it); any other predicted foreground is left out. The binary evaluation leaves out every
predicted voxel there. Arrays are in SimpleITK's (k, j, i) order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..levels import level_rank
from ..unannotated import SCHEME_ENDS, auto_sides, beyond_annotation
from .labels import ClassMap

IGNORE_BEYOND = ("auto", "none", "caudal", "cranial", "both")
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
REASON = ("reference voxels with the ignore label, or background beyond the annotated levels (--ignore-beyond), are "
          "anatomy left unannotated: a level predicted there that the case's reference annotates elsewhere counts as "
          "a false positive, any other predicted foreground there is left out (in the binary evaluation all of it)")


def levels_in_reference(reference: np.ndarray, ref_map: ClassMap) -> list[str]:
    """Names of the reference classes that occur in ``reference``, cranial first (empty for a binary map)."""
    if not ref_map.is_levels:
        return []
    counts = np.bincount(reference.ravel()) if reference.size else np.zeros(1, dtype=np.int64)
    present = [name for value, name in ref_map.classes.items() if value < len(counts) and counts[value]]
    return sorted(present, key=level_rank)


def resolve_side(option: str, ref_map: ClassMap, levels_present: Sequence[str]) -> str:
    """The side(s) beyond the annotation that are unannotated in one case (none, caudal, cranial or both).

    ``auto``: from the levels the case's reference holds (:func:`measure.unannotated.auto_sides`; a level above the
    scheme's first, such as T10, marks the cranial end as annotated), but ``none`` for a reference label map with an
    ignore label (the dataset marks its unannotated anatomy itself). Other options are taken as given. Always
    ``none`` for a reference without level names (binary: its bodies cannot be told apart) or without vertebrae.
    """
    if not ref_map.is_levels or not levels_present:
        return "none"
    if option != "auto":
        return option
    if ref_map.ignore is not None:
        return "none"
    above = any(level_rank(lv) < level_rank(SCHEME_ENDS[0]) for lv in levels_present)
    return auto_sides(levels_present, annotated_above=above)


def unannotated_region(reference: np.ndarray, ref_map: ClassMap, side: str, spacing_zyx: Sequence[float],
                       direction: Sequence[float] = IDENTITY_DIRECTION) -> np.ndarray | None:
    """Boolean mask of the unannotated voxels: the reference's ignore label, plus its background beyond the annotated
    vertebrae on ``side`` (spacing in array order, mm; direction cosines in ITK order). None when there is none."""
    region = reference == ref_map.ignore if ref_map.ignore is not None else None
    if side != "none":
        bodies = np.where(np.isin(reference, list(ref_map.classes)), reference, 0)
        beyond = beyond_annotation(bodies, tuple(reversed(spacing_zyx)), direction, side) & (reference == 0)
        region = beyond if region is None else region | beyond
    return region if region is not None and region.any() else None


@dataclass(frozen=True)
class CountedVoxels:
    """Where the binary and the per-level evaluation count voxels (None: everywhere) and what was left out."""

    binary: np.ndarray | None
    levels: np.ndarray | None
    ignored_reference_voxels: int  # voxels of the unannotated region
    left_out_predicted_voxels: int  # predicted foreground there not counted (per-level evaluation when it is made)


def counted_voxels(predicted_index: np.ndarray, reference_index: np.ndarray, unannotated: np.ndarray | None,
                   per_level: bool, n_classes: int) -> CountedVoxels:
    """Apply the partial-annotation rule to class-index arrays (0 = background; the reference is 0 throughout the
    unannotated region). ``per_level``: the classes are levels, so a level annotated elsewhere in the case counts."""
    if unannotated is None:
        return CountedVoxels(None, None, 0, 0)
    annotated = ~unannotated
    predicted_there = unannotated & (predicted_index > 0)
    if not per_level:
        return CountedVoxels(annotated, annotated, int(unannotated.sum()), int(predicted_there.sum()))
    present = np.bincount(reference_index.ravel(), minlength=n_classes + 1) > 0
    present[0] = False
    still_false_positive = unannotated & present[predicted_index]
    left_out = int(predicted_there.sum()) - int(still_false_positive.sum())
    return CountedVoxels(annotated, annotated | still_false_positive, int(unannotated.sum()), left_out)


def partial_summary(ignored: Iterable[float], left_out: Iterable[float], option: str) -> dict:
    """The report's ``partial_annotation`` section from the per-case counts of the pooled cases (voxels)."""
    ignored, left_out = [v for v in ignored if v == v], [v for v in left_out if v == v]  # drop NaN (failed cases)
    return {"ignore_beyond": option, "ignored_reference_voxels": int(sum(ignored)),
            "left_out_predicted_voxels": int(sum(left_out)),
            "cases_with_unannotated_voxels": int(sum(v > 0 for v in ignored)), "reason": REASON}


__all__ = ["IDENTITY_DIRECTION", "IGNORE_BEYOND", "REASON", "CountedVoxels", "counted_voxels", "levels_in_reference",
           "partial_summary", "resolve_side", "unannotated_region"]
