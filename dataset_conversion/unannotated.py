"""Anatomy that is in the image but not annotated (S1 below an L5-only annotation, T12 above L1...).

By default such voxels are background in ``labelsTr``, which teaches the network "this vertebra is background" and
contradicts exports that do annotate it. :func:`ignore_beyond_annotation` turns everything cranial and/or caudal of
the annotated vertebrae into nnU-Net's ignore label instead, so the loss skips it.
"""

from __future__ import annotations

import numpy as np

from measure.io import canonical_axis_map

SIDES = ("none", "caudal", "cranial", "both")
SUPERIOR_CANONICAL_AXIS = 2


def ignore_beyond_annotation(labels_kji: np.ndarray, direction: np.ndarray, side: str,
                             ignore_value: int) -> tuple[np.ndarray, int]:
    """Set background voxels beyond the annotated vertebrae to ``ignore_value``.

    ``labels_kji``: label array in SimpleITK order (k, j, i); ``direction``: the image's 3x3 direction matrix.
    ``caudal`` marks every background voxel in the image slabs below the lowest slab holding a vertebra label,
    ``cranial`` those above the highest, ``both`` both. Slabs are perpendicular to the file axis closest to the
    patient's superior-inferior axis. Returns the new array and the number of voxels changed.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if side == "none":
        return labels_kji, 0
    axes, flipped, _ = canonical_axis_map(np.asarray(direction, dtype=float).reshape(3, 3))
    array_axis = 2 - axes[SUPERIOR_CANONICAL_AXIS]  # numpy axis of the file axis closest to superior
    vertebra = (labels_kji > 0) & (labels_kji != ignore_value)
    other = tuple(a for a in range(3) if a != array_axis)
    present = np.nonzero(vertebra.any(axis=other))[0]
    if present.size == 0:
        return labels_kji, 0
    n = labels_kji.shape[array_axis]
    low_index, high_index = int(present[0]), int(present[-1])
    beyond = np.zeros(n, dtype=bool)
    # index order runs inferior -> superior unless the axis is flipped
    caudal = slice(0, low_index) if not flipped[SUPERIOR_CANONICAL_AXIS] else slice(high_index + 1, n)
    cranial = slice(high_index + 1, n) if not flipped[SUPERIOR_CANONICAL_AXIS] else slice(0, low_index)
    if side in ("caudal", "both"):
        beyond[caudal] = True
    if side in ("cranial", "both"):
        beyond[cranial] = True
    shape = [1, 1, 1]
    shape[array_axis] = n
    change = beyond.reshape(shape) & (labels_kji == 0)
    result = labels_kji.copy()
    result[change] = ignore_value
    return result, int(np.count_nonzero(change))
