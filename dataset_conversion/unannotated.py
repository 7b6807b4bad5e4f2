"""Anatomy that is in the image but not annotated (S1 below an L5-only annotation, T12 above an L1...).

Kept as background it teaches the network "this vertebra is background" and contradicts exports that do annotate it.
:func:`ignore_beyond_annotation` gives every background voxel beyond the annotated vertebrae nnU-Net's ignore label
instead, so the loss skips it; the region is :func:`measure.unannotated.beyond_annotation` (a plane through the end
body's centroid, perpendicular to the spine there), the same one ``spine-evaluate`` leaves out.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from measure.unannotated import SIDES, auto_sides, beyond_annotation

__all__ = ["SIDES", "auto_sides", "ignore_beyond_annotation"]


def ignore_beyond_annotation(labels_kji: np.ndarray, bodies_kji: np.ndarray, spacing_xyz: Sequence[float],
                             direction: Sequence[float], side: str, ignore_value: int) -> tuple[np.ndarray, int]:
    """Set the background voxels of ``labels_kji`` beyond the bodies of ``bodies_kji`` on ``side`` to
    ``ignore_value``.

    ``bodies_kji``: one value per annotated vertebral body of the scheme (0 elsewhere), e.g. the export's instance
    mask restricted to the voxels that map to a level (so a binary target still tells its bodies apart). Returns the
    new array (a copy when anything changed) and the number of voxels changed.
    """
    region = beyond_annotation(bodies_kji, spacing_xyz, direction, side)
    change = region & (labels_kji == 0)
    changed = int(np.count_nonzero(change))
    if not changed:
        return labels_kji, 0
    result = labels_kji.copy()
    result[change] = ignore_value
    return result, changed
