"""Vertebral bodies out of whole-vertebra masks that come with a subregion mask (SPINEPS: ``seg-vert`` instances,
``seg-spine`` subregions), so that the body measurements never see the posterior elements.

SPINEPS labels each vertebra as one instance X (body and posterior elements), its endplates as X + 200 and the disc
below it as X + 100; its subregion mask names the parts, 49 being the vertebral body ("corpus"), 41-48 the posterior
elements, 62 the endplates, 100 the discs, 26 the sacrum. The body of instance X is its voxels inside the corpus
subregion plus its endplates. An instance without corpus voxels (the sacrum, whose subregion is 26) has no body to
measure and is left out with a note.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from .io import MaskReadError, read_image

CORPUS_VALUES = (49,)
"""SPINEPS subregion value(s) of the vertebral body."""
ENDPLATE_OFFSET = 200
"""SPINEPS instance value of vertebra X's endplates: X + 200."""
MAX_VERTEBRA_VALUE = 99
"""Instance values above this are discs (100 + X) or endplates (200 + X), not vertebrae."""


def vertebral_bodies(instances: np.ndarray, subregions: np.ndarray, corpus_values: Sequence[int] = CORPUS_VALUES,
                     endplate_offset: int = ENDPLATE_OFFSET) -> tuple[np.ndarray, list[str]]:
    """The instance mask (any array order) kept only where it is a vertebral body: instance X's voxels in the corpus
    subregion and its endplates (X + ``endplate_offset``, relabelled X); everything else 0. Also one note per
    vertebra instance left out for having no corpus voxels."""
    if instances.shape != subregions.shape:
        raise ValueError(f"instance mask {instances.shape} and subregion mask {subregions.shape} differ in shape")
    corpus = np.isin(subregions, corpus_values)
    bodies = np.zeros(instances.shape, dtype=np.uint16)
    notes = []
    for value in (int(v) for v in np.unique(instances) if 0 < v <= MAX_VERTEBRA_VALUE):
        body = (instances == value) & corpus
        if not body.any():
            notes.append(f"instance {value}: no voxel in the body subregion {'/'.join(map(str, corpus_values))} "
                         "(e.g. the sacrum): not measured")
            continue
        bodies[body | (instances == value + endplate_offset)] = value
    return bodies, notes


def subregion_path(mask_path: str | Path, rule: str) -> Path:
    """The subregion mask of ``mask_path``: ``OLD:NEW`` replaces OLD by NEW in its file name (SPINEPS:
    ``seg-vert:seg-spine``); a rule without ``:`` is a file name in the mask's folder."""
    mask_path = Path(mask_path)
    if ":" not in rule:
        return mask_path.parent / rule
    old, new = rule.split(":", 1)
    if not old or old not in mask_path.name:
        raise MaskReadError(f"{mask_path}: its name does not contain {old!r}, so the subregion rule {rule!r} names no "
                            "subregion mask for it")
    return mask_path.with_name(mask_path.name.replace(old, new, 1))


def without_subregion_masks(paths: Sequence[Path], rule: str) -> list[Path]:
    """``paths`` without the files that are another path's subregion mask (a folder of SPINEPS outputs holds both)."""
    partners = set()
    for path in paths:
        try:
            partners.add(Path(subregion_path(path, rule)).resolve())
        except MaskReadError:
            continue
    return [path for path in paths if Path(path).resolve() not in partners]


def read_bodies(mask_path: str | Path, rule: str) -> tuple[sitk.Image, list[str]]:
    """The body-only label image of a whole-vertebra mask and its subregion mask (found by ``rule``,
    :func:`subregion_path`), on the mask's grid; raises :class:`~measure.io.MaskReadError` naming the file when the
    subregion mask is missing or on another grid."""
    instances = read_image(mask_path)
    path = subregion_path(mask_path, rule)
    subregions = read_image(path)
    same = (instances.GetSize() == subregions.GetSize()
            and np.allclose(instances.GetSpacing(), subregions.GetSpacing(), atol=1e-4)
            and np.allclose(instances.GetOrigin(), subregions.GetOrigin(), atol=1e-3)
            and np.allclose(instances.GetDirection(), subregions.GetDirection(), atol=1e-4))
    if not same:
        raise MaskReadError(f"{path}: the subregion mask's grid (size, spacing, origin, direction) differs from "
                            f"{mask_path}'s")
    bodies, notes = vertebral_bodies(sitk.GetArrayViewFromImage(instances), sitk.GetArrayViewFromImage(subregions))
    image = sitk.GetImageFromArray(bodies)
    image.CopyInformation(instances)
    return image, notes
