"""Every label of a canonical mask in a few passes: bounding box, voxels, and its largest 3D component.

One face-connected (6-neighbour) component labelling of the whole (cropped) mask serves all labels: cc3d labels
each value's components separately in one pass, so a vertebra touching its neighbour stays its own component.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np

from .io import foreground_box

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class LabelRegion:
    """One label value of a canonical mask (axes: left, anterior, superior)."""

    value: int
    box: Box
    """Bounding box in the array's indices."""
    mask: np.ndarray
    """Boolean voxels of the label inside ``box`` (every component)."""
    body: np.ndarray
    """Boolean voxels of the largest face-connected component inside ``box``."""
    component_sizes: tuple[int, ...]
    """Voxel counts of all face-connected components, largest first."""

    @property
    def voxel_count(self) -> int:
        return sum(self.component_sizes)

    def centroid_index(self) -> np.ndarray:
        """Mean array index (3,) of all the label's voxels (stray islands included)."""
        total = float(self.voxel_count)
        centre = []
        for axis in range(3):
            profile = self.mask.sum(axis=tuple(a for a in range(3) if a != axis))
            centre.append(self.box[axis].start + float(np.dot(np.arange(profile.size), profile)) / total)
        return np.array(centre)


_LOOP_LIMIT = 64
"""Up to this many label values, each value's voxels are found by comparison (cheap, and needed for the boxes
anyway); a mask with larger values is scanned once with :func:`numpy.unique`."""


def _value_profiles(array: np.ndarray):
    """Yield ``(value, voxels, profile)`` for every non-zero value: its boolean voxels and whether each plane of
    the contiguous last axis holds any of them."""
    top = int(array.max()) if array.size else 0
    values = range(1, top + 1) if top <= _LOOP_LIMIT else (int(v) for v in np.unique(array) if v != 0)
    columns = array.shape[-1]
    for value in values:
        voxels = array == value
        profile = voxels.reshape(-1, columns).max(axis=0)  # one pass, vectorised along the contiguous axis
        if profile.any():
            yield value, voxels, profile


def _box_of(voxels: np.ndarray, profile: np.ndarray) -> Box:
    """Bounding box of a non-empty boolean array, given its profile along axis 2: :func:`foreground_box` of the
    narrow band of planes the profile marks."""
    planes = np.flatnonzero(profile)
    band = slice(int(planes[0]), int(planes[-1]) + 1)
    box_0, box_1, _ = foreground_box(voxels[:, :, band])
    return box_0, box_1, band


def label_regions(array: np.ndarray) -> dict[int, LabelRegion]:
    """Bounding box, voxels and largest 6-connected component of every non-zero value of a 3D label array."""
    array = np.ascontiguousarray(array)
    found = list(_value_profiles(array))
    if not found:
        return {}
    components = cc3d.connected_components(array, connectivity=6)
    regions = {}
    for value, voxels, profile in found:
        box = _box_of(voxels, profile)
        mask = np.ascontiguousarray(voxels[box])  # a copy: the region does not keep the whole-array mask alive
        box_components = components[box]
        ids = box_components[mask]
        low, high = int(ids.min()), int(ids.max())
        if low == high:
            body, sizes = mask, (int(ids.size),)
        else:
            counts = np.bincount(ids - low)
            largest = low + int(np.argmax(counts))
            body = box_components == largest
            sizes = tuple(sorted((int(c) for c in counts if c), reverse=True))
        regions[value] = LabelRegion(value=value, box=box, mask=mask, body=body, component_sizes=sizes)
    return regions
