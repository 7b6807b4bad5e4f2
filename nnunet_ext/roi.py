"""Where stage 2 needs to look: the box of stage 1's vertebrae, with a margin, in stage 2's preprocessed array.

Stage 1 finds the vertebrae at low resolution; its mask can fall short of a body's true extent by about one coarse
voxel. Across the spine (sagittal slices, front-back) the margin is therefore the larger of :data:`MIN_MARGIN_MM` and
:data:`COARSE_VOXELS` coarse voxels. Along the spine it is one whole level, :data:`LEVEL_MARGIN_MM`: stage 1 can miss
the last vertebra at either end of the field of view (a T11 half in view, a sacrum it was never taught), and stage 2,
which sees that vertebra at full resolution, often still finds it (measured on real scans: docs/benchmarks.md,
"Inference speed"); a lumbar level (body and disc) is 35-40 mm high, a lower thoracic one less.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MIN_MARGIN_MM = 10.0
COARSE_VOXELS = 2.0
LEVEL_MARGIN_MM = 40.0


def margin_mm(coarse_spacing_mm: Sequence[float]) -> float:
    """The margin around stage 1's foreground (mm) for a stage 1 at ``coarse_spacing_mm``."""
    return max(MIN_MARGIN_MM, COARSE_VOXELS * float(max(coarse_spacing_mm)))


def axis_margins_mm(coarse_spacing_mm: Sequence[float], ndim: int, superior_axis: int | None) -> list[float]:
    """Margin (mm) per array axis: :func:`margin_mm` across the spine, :data:`LEVEL_MARGIN_MM` along
    ``superior_axis`` (the array axis closest to the patient's superior-inferior direction; None: unknown, every
    axis gets the level margin)."""
    across = margin_mm(coarse_spacing_mm)
    return [LEVEL_MARGIN_MM if superior_axis is None or axis == superior_axis else across for axis in range(ndim)]


def superior_array_axis(direction: Sequence[float]) -> int:
    """The axis of ``SimpleITK.GetArrayFromImage``'s array (k, j, i) that runs closest to the patient's
    superior-inferior direction, for an image with ``direction`` (ITK's row-major 3x3 cosines)."""
    cosines = np.asarray(direction, float).reshape(3, 3)
    image_axis = int(np.argmax(np.abs(cosines[2])))  # column i: image axis i in LPS; row 2: the S component
    return 2 - image_axis


def foreground_box(foreground: np.ndarray, spacing_mm: Sequence[float], margin: float | Sequence[float]
                   ) -> tuple[slice, ...] | None:
    """Slices of ``foreground`` (boolean, any dimension; voxel sizes ``spacing_mm``) covering its True voxels plus
    ``margin`` mm (one value, or one per axis) on each side, clipped to the array. None when ``foreground`` has no
    True voxel."""
    if not foreground.any():
        return None
    margins = [float(margin)] * foreground.ndim if np.isscalar(margin) else [float(m) for m in margin]
    box = []
    for axis in range(foreground.ndim):
        others = tuple(a for a in range(foreground.ndim) if a != axis)
        present = np.flatnonzero(foreground.any(axis=others))
        pad = int(np.ceil(margins[axis] / float(spacing_mm[axis])))
        length = foreground.shape[axis]
        box.append(slice(max(0, int(present[0]) - pad), min(length, int(present[-1]) + 1 + pad)))
    return tuple(box)
