"""SPINEPS-style masks of a phantom: whole vertebrae (body and posterior elements) as instances in the VerSe
numbering (``seg-vert``) and a subregion mask (``seg-spine``: 49 vertebral body, 41 arch (pedicles and lamina around
the spinal canal), 42 spinous process, 26 sacrum), on the phantom's grid. What ``spine-measure --subregions
seg-vert:seg-spine --labels verse`` (and, from ``seg-vert`` alone, ``--bodies-from-shape``) must turn back into the
phantom's bodies (the sacrum, without a body subregion as in SPINEPS, is left out)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from measure.levels import is_sacral_level, load_label_map

from .phantom import Phantom, PlacedVertebra, _paint, _polygon_box, _polygon_inside, place_spine

BODY, ARCH, SPINOUS, SACRUM = 49, 41, 42, 26
PEDICLE_LENGTH_MM, LAMINA_LENGTH_MM, SPINOUS_LENGTH_MM = 15.0, 13.0, 17.0
"""Along anterior-posterior: the pedicles span the spinal canal (lumbar canal depth 15-18 mm), the lamina with the
articular processes closes it behind, the spinous process follows."""


@lru_cache(maxsize=1)
def verse_values() -> dict[str, int]:
    """Level name -> VerSe / SPINEPS instance value (the bundled ``verse`` label map, first value per level)."""
    values: dict[str, int] = {}
    for value, level in sorted(load_label_map("verse").levels.items()):
        values.setdefault(level, int(value))
    return values


def _posterior_parts(p: PlacedVertebra) -> list[tuple[np.ndarray, float, float, int]]:
    """(sagittal polygon, outer and inner half width mm, subregion value) of the parts behind a body, shaped as a
    lumbar vertebra's: two pedicles (half the body's height, on either side of the canal, which is about half the
    body's width), the lamina behind the canal, the spinous process in the midline."""
    back, height, width = -0.5 * p.spec.depth_mm, p.spec.linear_middle_mm, p.spec.width_mm
    lamina = back - PEDICLE_LENGTH_MM
    pedicles = np.array([p.to_plane(back + 0.5, 0.25 * height), p.to_plane(lamina, 0.25 * height),
                         p.to_plane(lamina, -0.25 * height), p.to_plane(back + 0.5, -0.25 * height)])
    arch = np.array([p.to_plane(lamina + 0.5, 0.3 * height), p.to_plane(lamina - LAMINA_LENGTH_MM, 0.3 * height),
                     p.to_plane(lamina - LAMINA_LENGTH_MM, -0.3 * height), p.to_plane(lamina + 0.5, -0.3 * height)])
    root = lamina - LAMINA_LENGTH_MM
    tip = root - SPINOUS_LENGTH_MM
    spinous = np.array([p.to_plane(root + 0.5, 0.2 * height), p.to_plane(tip, 0.1 * height),
                        p.to_plane(tip, -0.25 * height), p.to_plane(root + 0.5, -0.2 * height)])
    return [(pedicles, 0.42 * width, 0.25 * width, ARCH), (arch, 0.42 * width, 0.0, ARCH),
            (spinous, 3.0, 0.0, SPINOUS)]


def spineps_masks(phantom: Phantom) -> tuple[np.ndarray, np.ndarray]:
    """(instances, subregions), SimpleITK array order, uint16: each lumbar/thoracic vertebra's body and posterior
    elements under its VerSe value, the sacral bodies under 26 (sacrum) in both masks."""
    values = verse_values()
    placed = place_spine(phantom.spine, phantom.label_values)
    instances = np.zeros(phantom.mask.shape, np.uint16)
    subregions = np.zeros(phantom.mask.shape, np.uint16)
    for p in placed:
        sacral = is_sacral_level(p.spec.level)
        instance = SACRUM if sacral else values[p.spec.level]
        if not sacral:
            for polygon, half_width, inner, part in _posterior_parts(p):
                box, inside = _polygon_box(polygon, half_width), _polygon_inside(polygon, half_width, inner)
                _paint(phantom.grid, instances, box, inside, instance)
                _paint(phantom.grid, subregions, box, inside, part)
        body = phantom.mask == p.label
        instances[body] = instance
        subregions[body] = SACRUM if sacral else BODY
    return instances, subregions
