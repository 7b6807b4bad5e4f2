"""Anatomy in the image that the annotation leaves out (S1 under an L1-L5 annotation, T12 above it).

A partial annotation says nothing about the vertebrae beyond its first and last annotated body. Training must not
learn them as background and an evaluation must not score predictions of them, so both mark the same region:
everything beyond a plane through the centroid of the end vertebra, perpendicular to the spine's local axis there
(the line from the centroid of its annotated neighbour to its own). The plane sits in the middle of the end body, not
at its far endplate, because the next, unannotated body is tilted against it (the lumbosacral angle reaches
20-30 degrees, so S1's posterior-superior corner can lie level with L5's inferior endplate): half a body height of
margin keeps the whole next body inside the region. The region is also limited to the far side of the horizontal
(axial) plane through that centroid: the steep S1-S2 axis would otherwise tilt the plane round behind L4 and L5 and
take their posterior elements out of training. Background voxels on the near side stay background.

Pure functions on arrays plus the image geometry (spacing and direction in ITK order, array in SimpleITK's (k, j, i)
order); the converter (``spine-convert --ignore-beyond``) and ``spine-evaluate --ignore-beyond`` call them.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

SIDES = ("none", "caudal", "cranial", "both", "auto")
SUPERIOR_LPS = np.array([0.0, 0.0, 1.0])  # ITK physical frame: +z is superior
SCHEME_ENDS = ("T11", "S2")  # the project's most cranial and most caudal level


def auto_sides(levels_present: Iterable[str], annotated_above: bool = False,
               scheme_ends: tuple[str, str] = SCHEME_ENDS) -> str:
    """Which ends of an annotation are partial, from the level names it holds.

    Caudal is partial unless the most caudal level of the scheme (S2) is annotated; cranial unless T11 is annotated
    or a level above the scheme (T10, annotated but mapped to the ignore label) is (``annotated_above``).
    """
    levels = set(levels_present)
    caudal = scheme_ends[1] not in levels
    cranial = scheme_ends[0] not in levels and not annotated_above
    return {(True, True): "both", (True, False): "caudal", (False, True): "cranial"}.get((caudal, cranial), "none")


def _voxel_to_mm(spacing_xyz: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """3x3 matrix taking an (i, j, k) index offset to a physical offset in mm (ITK frame)."""
    return np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing_xyz, dtype=float)


def body_centroids(bodies_kji: np.ndarray, spacing_xyz: Sequence[float], direction: Sequence[float],
                   exclude: Iterable[int] = ()) -> dict[int, np.ndarray]:
    """Physical centroid (mm, relative to the origin) of every non-zero value of ``bodies_kji`` not in ``exclude``."""
    skip = {0, *exclude}
    matrix = _voxel_to_mm(spacing_xyz, direction)
    flat = bodies_kji.ravel()
    counts = np.bincount(flat.astype(np.int64, copy=False))
    values = [int(v) for v in np.nonzero(counts)[0] if int(v) not in skip]
    if not values:
        return {}
    index = np.indices(bodies_kji.shape, sparse=True)  # k, j, i
    centroids = {}
    for axis_kji, grid in enumerate(index):
        sums = np.bincount(flat.astype(np.int64, copy=False),
                           weights=np.broadcast_to(grid, bodies_kji.shape).ravel().astype(float))
        for v in values:
            centroids.setdefault(v, np.zeros(3))[2 - axis_kji] = sums[v] / counts[v]
    return {v: matrix @ c for v, c in centroids.items()}


def _projection(shape_kji: tuple[int, ...], matrix: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Signed position (mm) of every voxel centre along ``axis``, relative to the origin, as a broadcast sum."""
    weights = matrix.T @ axis  # mm along ``axis`` per index step of i, j, k
    k = np.arange(shape_kji[0])[:, None, None] * weights[2]
    j = np.arange(shape_kji[1])[None, :, None] * weights[1]
    i = np.arange(shape_kji[2])[None, None, :] * weights[0]
    return k + j + i


def beyond_annotation(bodies_kji: np.ndarray, spacing_xyz: Sequence[float], direction: Sequence[float], side: str,
                      exclude: Iterable[int] = ()) -> np.ndarray:
    """Boolean mask of the voxels beyond the annotated vertebrae on ``side`` (caudal, cranial, both or none).

    ``bodies_kji`` holds one value per annotated vertebral body (an instance or level mask; values in ``exclude``,
    such as an ignore label, are not bodies). A voxel is beyond on the caudal side when it lies past the plane through
    the most caudal body's centroid, perpendicular to the line from the centroid of the next body up (with a single
    body: the image's inferior direction) and also below the horizontal (axial) plane through that centroid, so that
    a steep end such as S1 does not reach round behind the last annotated bodies; likewise cranially. Only the
    geometry decides; callers keep labelled voxels.
    """
    if side not in SIDES or side == "auto":
        raise ValueError(f"side must be one of {SIDES[:-1]} (resolve 'auto' with auto_sides first), got {side!r}")
    region = np.zeros(bodies_kji.shape, dtype=bool)
    if side == "none":
        return region
    centroids = body_centroids(bodies_kji, spacing_xyz, direction, exclude)
    if not centroids:
        return region
    ordered = sorted(centroids.values(), key=lambda c: float(c @ SUPERIOR_LPS), reverse=True)  # cranial first
    matrix = _voxel_to_mm(spacing_xyz, direction)
    ends = []
    if side in ("caudal", "both"):
        ends.append((ordered[-1], ordered[-2] if len(ordered) > 1 else None, -SUPERIOR_LPS))
    if side in ("cranial", "both"):
        ends.append((ordered[0], ordered[1] if len(ordered) > 1 else None, SUPERIOR_LPS))
    for end, neighbour, fallback in ends:
        axis = fallback if neighbour is None else end - neighbour
        norm = float(np.linalg.norm(axis))
        axis = fallback if norm < 1e-6 else axis / norm
        beyond = _projection(bodies_kji.shape, matrix, axis) > float(end @ axis)
        beyond &= _projection(bodies_kji.shape, matrix, fallback) > float(end @ fallback)
        region |= beyond
    return region
