"""Training augmentation of the field of view: the cranial end of a scan cut off at a random height.

Lumbar protocols end at different heights above the spine (T9 in one site's scans, L1 in another's); the sacrum is in
almost every one. A network that sees the whole field of view in one patch (stage 1) can learn "the top body in view
is T11" from one site and carry it to another, where it names every level one too high (measured on real scans:
docs/benchmarks.md, "Fifth session"). Cutting the cranial end off some patches at random heights takes that cue away
and leaves the one that holds everywhere: the levels counted from the sacrum.

The cranial direction is read from the labels themselves (level values grow cranio-caudally, as every label map of
this project orders them), so the transform needs no orientation; the part cut off looks like nnU-Net's padding
(image 0, segmentation -1, which nnU-Net's later transforms turn into background).
"""

from __future__ import annotations

from typing import Sequence

import torch

from nnunet_ext.neighbours import mirrored_channel_order

PADDING_SEG = -1
"""nnU-Net's segmentation value outside the image after its spatial transform (``padding_value_seg``)."""


def cranial_axis(segmentation: torch.Tensor, level_values: Sequence[int]) -> tuple[int, int] | None:
    """(spatial axis, +1 or -1: the direction towards cranial) of a segmentation ``(1, *spatial)`` whose values
    ``level_values`` (at least two of them present) are levels in cranio-caudal order; None with fewer than two."""
    seg = segmentation[0]
    present = [v for v in level_values if bool((seg == v).any())]
    if len(present) < 2:
        return None
    first, last = (torch.nonzero(seg == v).float().mean(0) for v in (present[0], present[-1]))
    towards_cranial = first - last  # from the most caudal level present to the most cranial
    axis = int(torch.argmax(towards_cranial.abs()))
    return axis, 1 if towards_cranial[axis] > 0 else -1


def cut_cranial_end(image: torch.Tensor, segmentation: torch.Tensor, axis: int, direction: int,
                    fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` ``(C, *spatial)`` and ``segmentation`` ``(1, *spatial)`` with the cranial ``fraction`` of the
    scanned extent along spatial ``axis`` (``direction``: +1 when cranial is towards higher indices) turned into
    padding; the extent is where the segmentation is not :data:`PADDING_SEG`."""
    inside = (segmentation[0] != PADDING_SEG).any(dim=tuple(a for a in range(segmentation.ndim - 1) if a != axis))
    indices = torch.nonzero(inside).flatten()
    if len(indices) == 0 or fraction <= 0:
        return image, segmentation
    low, high = int(indices[0]), int(indices[-1]) + 1
    cut = int(round(fraction * (high - low)))
    region = [slice(None)] * (segmentation.ndim - 1)
    region[axis] = slice(high - cut, high) if direction > 0 else slice(low, low + cut)
    image, segmentation = image.clone(), segmentation.clone()
    image[(slice(None), *region)] = 0
    segmentation[(slice(None), *region)] = PADDING_SEG
    return image, segmentation


class CranialFieldOfViewCrop:
    """A batchgeneratorsv2-style transform (``transform(**data_dict) -> data_dict``): with ``probability``, the
    cranial end of the patch's scanned extent, a uniform random share up to ``max_fraction``, becomes padding."""

    def __init__(self, level_values: Sequence[int], probability: float, max_fraction: float) -> None:
        self.level_values = list(level_values)
        self.probability, self.max_fraction = probability, max_fraction

    def __call__(self, **data_dict) -> dict:
        if float(torch.rand(())) >= self.probability:
            return data_dict
        found = cranial_axis(data_dict["segmentation"], self.level_values)
        if found is None:
            return data_dict
        fraction = float(torch.rand(())) * self.max_fraction
        data_dict["image"], data_dict["segmentation"] = cut_cranial_end(
            data_dict["image"], data_dict["segmentation"], *found, fraction)
        return data_dict

    def __repr__(self) -> str:
        return (f"CranialFieldOfViewCrop(probability={self.probability}, max_fraction={self.max_fraction}, "
                f"levels={self.level_values})")


class ContrastInversion:
    """A batchgeneratorsv2-style transform: with ``probability``, the patch's image channels negated together.

    Lumbar MRI comes in contrasts that order the same tissues differently (T1: marrow bright, discs dark; T2 and
    fat-suppressed water or STIR images: discs bright, marrow darker). nnU-Net's z-scored images make negation the
    inversion of a patch's contrast around its mean; a network trained on both polarities cannot take one contrast's
    brightness order as the cue for a level or an outline (TotalSpineSeg augments MRI contrasts the same way). Only the
    ``image`` entry is changed; a cascade's previous-stage channels are added to it later by nnU-Net's transforms."""

    def __init__(self, probability: float) -> None:
        self.probability = probability

    def __call__(self, **data_dict) -> dict:
        if float(torch.rand(())) < self.probability:
            data_dict["image"] = -data_dict["image"]
        return data_dict

    def __repr__(self) -> str:
        return f"ContrastInversion(probability={self.probability})"


def reversed_neighbour_order(image: torch.Tensor, k: int) -> torch.Tensor:
    """``image`` ``((2k + 1) * C, *plane)`` in :func:`nnunet_ext.neighbours.stack_neighbours`' layout (slice-offset
    major: the ``C`` channels of slice ``s - k`` first) with the offsets in reverse order: the same sagittal slice
    with its left and right neighbours swapped, which is what mirroring the volume left-right does to a 2.5D
    input (a sagittal slice has no left-right axis of its own)."""
    return image[mirrored_channel_order(image.shape[0], k)]


class NeighbourSlicesMirror:
    """A batchgeneratorsv2-style transform: with ``probability``, the patch's ``k`` neighbour slices each side swap
    sides (:func:`reversed_neighbour_order`): the left-right mirroring nnU-Net applies to 3D patches, for a 2.5D stage
    whose patches are sagittal slices. The segmentation, of the centre slice, is unchanged; applied before nnU-Net
    appends a cascade's previous-stage channels to the image."""

    def __init__(self, k: int, probability: float) -> None:
        if int(k) < 1:
            raise ValueError(f"NeighbourSlicesMirror needs at least one neighbour slice each side, not k={k}")
        self.k, self.probability = int(k), probability

    def __call__(self, **data_dict) -> dict:
        if float(torch.rand(())) < self.probability:
            data_dict["image"] = reversed_neighbour_order(data_dict["image"], self.k)
        return data_dict

    def __repr__(self) -> str:
        return f"NeighbourSlicesMirror(k={self.k}, probability={self.probability})"
