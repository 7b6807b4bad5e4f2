"""Vertebral bodies cut out of whole-vertebra masks that come without a body subregion (TotalSpineSeg,
TotalSegmentator, SPINEPS without ``seg-spine``), from the shape alone.

In the mid-sagittal sections of a whole vertebra the spinal canal separates the body from the posterior arch
(lamina, spinous process): the body is the most anterior part there, and its posterior wall is a line in the
anterior-superior plane (the body may be tilted). Lateral sections join the body to the pedicles at that wall, so
every section keeps what lies anterior to the wall line; the largest face-connected part is the body. The posterior
wall is slightly concave in axial view, so a sliver of the postero-lateral body behind the midline wall is lost; its
effect on the measurements (made on the central sections) is shown in docs/measurements.md.

All functions work on canonical arrays (axes left, anterior, superior; :class:`measure.io.SagittalVolume`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import cc3d
import cv2
import numpy as np

from .geometry import robust_slope
from .io import SagittalVolume
from .levels import LabelMap, is_sacral_level
from .regions import label_regions


@dataclass(frozen=True)
class IsolationParameters:
    """How the posterior wall is found (lengths in mm)."""

    midline_half_width_mm: float = 3.0
    """Sections whose centre lies within this of the vertebra's left-right centroid find the wall (at least the
    nearest section is used)."""
    central_fraction: float = 0.6
    """Share of the body's superior-inferior extent, centred, whose rows define the wall (the endplate rows are
    rounded)."""
    min_part_fraction: float = 0.3
    """A midline part smaller than this share of the section's largest part is not a body candidate."""
    body_height_fraction: float = 0.75
    """Behind the body a section's superior-inferior extent falls: lumbar pedicles are about half the body's height
    (Panjabi et al., Spine 1992); where it falls below this share of the body's midline height the body ends."""


def _midline_sections(voxels: np.ndarray, spacing_lr: float, half_width_mm: float) -> list[int]:
    counts = voxels.sum(axis=(1, 2))
    centre = float((np.arange(len(counts)) * counts).sum() / counts.sum())
    near = [i for i in range(len(counts)) if counts[i] and abs(i - centre) * spacing_lr <= half_width_mm]
    return near or [int(round(centre))]


def _body_part(section: np.ndarray, min_part_fraction: float) -> np.ndarray | None:
    """The most anterior sizeable 8-connected part of one sagittal section (anterior, superior), None when the
    section does not separate into a body and an arch."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(section.astype(np.uint8), connectivity=8)
    if count < 3:  # background + one part: no canal between body and arch
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    candidates = [k + 1 for k in range(count - 1) if areas[k] >= min_part_fraction * areas.max()]
    if len(candidates) < 2:
        return None
    # cv2 centroids are (x, y) = (column, row): rows are the anterior axis here
    body = max(candidates, key=lambda k: centroids[k][1])
    return labels == body


def posterior_wall(voxels: np.ndarray, spacing: Sequence[float],
                   params: IsolationParameters = IsolationParameters()) -> tuple[float, float] | None:
    """The posterior wall of the body of one whole vertebra (canonical boolean array) as ``anterior_mm = a + b *
    superior_mm`` in the array's own mm coordinates (voxel centres at ``index * spacing``); None when no midline
    section separates into a body and an arch."""
    if not voxels.any():
        return None
    return _wall_line(voxels, spacing, params, _midline_sections(voxels, float(spacing[0]),
                                                                 params.midline_half_width_mm))


def _wall_line(voxels: np.ndarray, spacing: Sequence[float], params: IsolationParameters,
               midline: Sequence[int]) -> tuple[float, float] | None:
    """:func:`posterior_wall` from the given midline sections."""
    points_si, points_ap = [], []
    for i in midline:
        body = _body_part(voxels[i], params.min_part_fraction)
        if body is None:
            continue
        rows = np.nonzero(body.any(axis=0))[0]  # superior indices holding body voxels
        keep = int(round(len(rows) * (1 - params.central_fraction) / 2))
        for k in rows[keep:len(rows) - keep] if len(rows) > 2 * keep else rows:
            points_si.append(k * spacing[2])
            points_ap.append(np.nonzero(body[:, k])[0].min() * spacing[1])  # posterior-most: smallest anterior index
    if len(points_si) < 3:
        return None
    si, ap = np.asarray(points_si), np.asarray(points_ap)
    slope = robust_slope(si, ap, tolerance=float(spacing[1]))
    return float(np.percentile(ap - slope * si, 5)), slope  # through the posterior-most points


def _wall_offsets(section: np.ndarray, u_index: np.ndarray, spacing_si: float, min_extent_mm: float,
                  bins: int) -> int | None:
    """The posterior wall of one section in wall-parallel bins (``u_index``: the bin of every (anterior, superior)
    position, larger is more anterior): the posterior end of the run of bins, from the most anterior one that holds
    ``min_extent_mm`` of superior-inferior extent, that keep at least that much. None: no bin holds that much (a
    section lateral to the body, through a transverse process)."""
    extent = np.bincount(u_index[section], minlength=bins) * spacing_si
    tall = extent >= min_extent_mm
    if not tall.any():
        return None
    front = int(np.nonzero(tall)[0].max())
    short = np.nonzero(~tall[:front + 1])[0]
    return int(short.max()) + 1 if len(short) else 0


def isolate_body(voxels: np.ndarray, spacing: Sequence[float],
                 params: IsolationParameters = IsolationParameters()) -> np.ndarray | None:
    """The body of one whole vertebra (canonical boolean array), section by section, in bins parallel to the midline
    posterior wall (:func:`posterior_wall`): every section keeps what lies anterior to that wall, and behind it the
    bins that stay tall (the postero-lateral body, whose wall is concave in axial view), up to where the
    superior-inferior extent falls below ``body_height_fraction`` of the body's midline height (a pedicle). Largest
    face-connected part; None when the wall cannot be found."""
    if not voxels.any():
        return None
    mid = _midline_sections(voxels, float(spacing[0]), params.midline_half_width_mm)
    wall = _wall_line(voxels, spacing, params, mid)
    if wall is None:
        return None
    intercept, slope = wall
    ap = np.arange(voxels.shape[1])[:, None] * spacing[1]
    si = np.arange(voxels.shape[2])[None, :] * spacing[2]
    u = ap - slope * si - intercept  # mm anterior of the midline wall line
    u_index = np.floor((u - u.min()) / spacing[1]).astype(np.int64)
    bins = int(u_index.max()) + 1
    body_u = u >= 0
    heights = [np.bincount(u_index[voxels[i] & body_u], minlength=bins) * spacing[2] for i in mid]
    height = float(np.median(np.concatenate([h[h > 0] for h in heights]))) if any(h.any() for h in heights) else 0.0
    if height <= 0:
        return None
    at_wall = int(u_index[body_u].min())  # the bin of the midline wall: what lies anterior to it is body everywhere
    cut = np.zeros_like(voxels)
    for i in range(voxels.shape[0]):
        first = _wall_offsets(voxels[i], u_index, float(spacing[2]), params.body_height_fraction * height, bins)
        cut[i] = voxels[i] & (u_index >= min(at_wall, first if first is not None else at_wall))
    if not cut.any():
        return None
    parts, count = cc3d.connected_components(cut, connectivity=6, return_N=True)
    if count > 1:
        sizes = np.bincount(parts.ravel())[1:]
        cut = parts == 1 + int(np.argmax(sizes))
    return cut


def isolate_bodies(array: np.ndarray, spacing: Sequence[float], values: Sequence[int] | None = None,
                   params: IsolationParameters = IsolationParameters()) -> tuple[np.ndarray, list[str]]:
    """Every whole vertebra of a canonical label array cut down to its body (:func:`isolate_body`); ``values`` the
    vertebra labels to cut (None: every non-zero value). A vertebra whose wall cannot be found is left out, with a
    note naming it. Returns the body array (same dtype) and the notes."""
    bodies = np.zeros_like(array)
    notes = []
    regions = label_regions(array)
    for value in values if values is not None else sorted(regions):
        if value not in regions:
            continue
        box = regions[value].box
        body = isolate_body(regions[value].mask, spacing, params)
        if body is None:
            notes.append(f"label {value}: no midline section separates a body from a posterior arch (a body-only "
                         "mask, a sacrum, or a vertebra cut by the field of view): left out")
            continue
        bodies[box][body] = value
    return bodies, notes


def volume_bodies(volume: SagittalVolume, label_map: LabelMap,
                  params: IsolationParameters = IsolationParameters()) -> SagittalVolume:
    """A canonical volume of whole vertebrae cut down to its bodies (:func:`isolate_bodies`). Sacral levels are left
    out (the sacrum's fused segments have no single body to cut out), each with a note, like unmapped values."""
    values = [int(v) for v in np.unique(volume.array) if v]
    sacral = [v for v in values if (label_map.level(v) or "") and is_sacral_level(label_map.level(v))]
    vertebrae = [v for v in values if v not in sacral and label_map.level(v) is not None]
    bodies, notes = isolate_bodies(volume.array, volume.spacing, vertebrae, params)
    for value in values:  # values the map does not name stay, for the measurement's own unmapped-value rule
        if value not in vertebrae and value not in sacral:
            bodies[volume.array == value] = value
    notes = [f"{label_map.level(v)} (value {v}): sacrum, its body not isolated from a whole-vertebra mask; not "
             "measured" for v in sacral] + notes
    return replace(volume, array=bodies, notes=[*volume.notes, *notes])
