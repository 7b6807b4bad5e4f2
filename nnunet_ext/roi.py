"""Where stage 2 needs to look: the box of stage 1's vertebrae, with a margin, in stage 2's preprocessed array.

Stage 1 finds the vertebrae at low resolution; its mask can fall short of a body's true extent by about one coarse
voxel. Across the spine (sagittal slices, front-back) the margin is therefore the larger of :data:`MIN_MARGIN_MM` and
:data:`COARSE_VOXELS` coarse voxels. Along the spine it is one whole level, :data:`LEVEL_MARGIN_MM`: stage 1 can miss
the last vertebra at either end of the field of view (a T11 half in view, a sacrum it was never taught), and stage 2,
which sees that vertebra at full resolution, often still finds it (measured on real scans: docs/benchmarks.md,
"Inference speed"); a lumbar level (body and disc) is 35-40 mm high, a lower thoracic one less.

Stage 2 can still reach beyond that (a sacrum, oblique to the slices, that stage 1 found only in part): where its
mask covers at least :data:`TOUCH_MM2` of a side of the box that is not the array's edge (a body cut by the box, not
a speck of noise), :func:`grow_box` moves that side out by the axis's margin and stage 2 runs again, up to
:data:`MAX_GROWTH` times.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MIN_MARGIN_MM = 10.0
COARSE_VOXELS = 2.0
LEVEL_MARGIN_MM = 40.0
MAX_GROWTH = 3
TOUCH_MM2 = 50.0


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


def _pad_voxels(margin: float | Sequence[float], spacing_mm: Sequence[float]) -> list[int]:
    margins = [float(margin)] * len(spacing_mm) if np.isscalar(margin) else [float(m) for m in margin]
    return [int(np.ceil(m / float(s))) for m, s in zip(margins, spacing_mm, strict=True)]


def foreground_box(foreground: np.ndarray, spacing_mm: Sequence[float], margin: float | Sequence[float]
                   ) -> tuple[slice, ...] | None:
    """Slices of ``foreground`` (boolean, any dimension; voxel sizes ``spacing_mm``) covering its True voxels plus
    ``margin`` mm (one value, or one per axis) on each side, clipped to the array. None when ``foreground`` has no
    True voxel."""
    if not foreground.any():
        return None
    pads = _pad_voxels(margin, spacing_mm)
    box = []
    for axis, pad in enumerate(pads):
        others = tuple(a for a in range(foreground.ndim) if a != axis)
        present = np.flatnonzero(foreground.any(axis=others))
        length = foreground.shape[axis]
        box.append(slice(max(0, int(present[0]) - pad), min(length, int(present[-1]) + 1 + pad)))
    return tuple(box)


def grow_box(box: Sequence[slice], inside: np.ndarray, shape: Sequence[int], spacing_mm: Sequence[float],
             margin: float | Sequence[float], touch_mm2: float = TOUCH_MM2) -> tuple[slice, ...]:
    """``box`` (slices of an array of ``shape``, voxel sizes ``spacing_mm``) with each side moved out by ``margin`` mm
    (one value, or one per axis) where ``inside`` (boolean, the box's content) covers at least ``touch_mm2`` of that
    side's outermost layer, clipped to the array; the same box when no side is touched."""
    grown = []
    for axis, (side, pad) in enumerate(zip(box, _pad_voxels(margin, spacing_mm), strict=True)):
        layers = np.moveaxis(inside, axis, 0)
        touch = touch_mm2 / float(np.prod([s for a, s in enumerate(spacing_mm) if a != axis]))  # in voxels
        start = max(0, side.start - pad) if layers[0].sum() >= touch else side.start
        stop = min(int(shape[axis]), side.stop + pad) if layers[-1].sum() >= touch else side.stop
        grown.append(slice(start, stop))
    return tuple(grown)
