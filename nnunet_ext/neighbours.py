"""Neighbouring sagittal slices as extra input channels of stage 2 (a "2.5D" fine stage).

Stage 2 segments one sagittal slice at a time. In the lateral slices of a vertebral body the section shrinks and
fades into partial volume, and one slice alone does not show whether the body goes on beside it. With
``k`` neighbour slices each side, the network sees slices ``s - k .. s + k`` of the image as channels (slice-offset
major: all image channels of ``s - k`` first, those of ``s + k`` last), slices beyond the volume's ends repeating the
end slice. The same layout serves training (:class:`NeighbourSlicesView`, which reads only the slices a training
patch needs) and prediction (:func:`stack_neighbours` on the whole preprocessed volume).

Arrays are ``(channels, slices, height, width)``: nnU-Net's preprocessed layout of a 2D configuration, slices along
the first spatial axis (left-right in the cascade's plans, so the slices are sagittal).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def neighbour_indices(start: int, stop: int, num_slices: int, k: int) -> np.ndarray:
    """``(2k + 1, stop - start)`` slice indices: row ``j`` holds slice ``s + j - k`` for each ``s`` in
    ``start..stop-1``, clamped to ``0..num_slices-1`` (the end slice repeats beyond the volume)."""
    if k < 0:
        raise ValueError(f"neighbour slices must be >= 0, not {k}")
    offsets = np.arange(-k, k + 1)[:, None]
    return np.clip(np.arange(start, stop)[None, :] + offsets, 0, num_slices - 1)


def mirrored_channel_order(num_channels: int, k: int) -> list[int]:
    """Channel order that turns a stacked input of ``num_channels`` = ``(2k + 1) * C`` channels (this module's
    slice-offset-major layout) into the stack of the volume mirrored along the slice axis: the offsets reversed, the
    ``C`` channels within each offset kept in order."""
    offsets = 2 * k + 1
    if k < 1 or num_channels % offsets:
        raise ValueError(f"{num_channels} channels are not {offsets} neighbour offsets of equal size")
    per_offset = num_channels // offsets
    return [offset * per_offset + c for offset in reversed(range(offsets)) for c in range(per_offset)]


def _stacked(block: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``block`` ``(C, S', H, W)`` gathered at ``indices`` ``(2k + 1, n)`` (indices into ``S'``) into
    ``((2k + 1) * C, n, H, W)``, slice-offset major."""
    gathered = block[:, indices]  # (C, 2k + 1, n, H, W)
    channels, offsets, n = gathered.shape[:3]
    return gathered.transpose(1, 0, 2, 3, 4).reshape(offsets * channels, n, *gathered.shape[3:])


def stack_neighbours(data: np.ndarray, image_channels: int, k: int) -> np.ndarray:
    """``data`` ``(C, S, H, W)`` whose first ``image_channels`` channels are image (any others, such as stage 1's
    one-hot segmentation, follow) with the image channels replaced by their ``k`` neighbours each side:
    ``((2k + 1) * image_channels + rest, S, H, W)``. ``k = 0`` returns ``data`` itself."""
    if k == 0:
        return data
    if not 0 < image_channels <= data.shape[0]:
        raise ValueError(f"{image_channels} image channels in an array of {data.shape[0]}")
    image = np.asarray(data[:image_channels])
    stacked = _stacked(image, neighbour_indices(0, image.shape[1], image.shape[1], k))
    return np.concatenate([stacked, np.asarray(data[image_channels:], dtype=stacked.dtype)], axis=0)


class NeighbourSlicesView:
    """Read-only view of an image array ``(C, S, H, W)`` (a numpy array, memory map or blosc2 array) as
    ``((2k + 1) * C, S, H, W)`` in :func:`stack_neighbours`' layout, reading only the slices an index asks for (and
    their neighbours). Indexing takes a tuple of unit-step slices, as nnU-Net's ``crop_and_pad_nd`` uses, and
    returns a numpy array."""

    def __init__(self, image: Any, k: int) -> None:
        if len(image.shape) != 4:
            raise ValueError(f"expected (channels, slices, height, width), got shape {tuple(image.shape)}")
        self.image, self.k = image, int(k)
        channels, *spatial = image.shape
        self.shape = ((2 * self.k + 1) * channels, *spatial)
        self.ndim = 4
        self.dtype = image.dtype

    def __getitem__(self, index: Any) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        if len(index) > 4 or not all(isinstance(i, slice) for i in index):
            raise TypeError(f"NeighbourSlicesView takes a tuple of slices, not {index!r}")
        channels, slices, *plane = (*index, *[slice(None)] * (4 - len(index)))
        for axis, (part, size) in enumerate(zip((slices, *plane), self.shape[1:], strict=True), start=1):
            # crop_and_pad_nd never asks for a box outside the image (its early return does not know this class)
            if any(bound is not None and not 0 <= bound <= size for bound in (part.start, part.stop)):
                raise IndexError(f"NeighbourSlicesView: {part} outside axis {axis} of size {size}")
        num_slices = self.shape[1]
        start, stop, step = slices.indices(num_slices)
        if step != 1:
            raise TypeError("NeighbourSlicesView takes unit-step slices")
        stop = max(stop, start)
        low, high = max(0, start - self.k), min(num_slices, max(stop, start + 1) + self.k)
        block = np.asarray(self.image[(slice(None), slice(low, high), *plane)])
        stacked = _stacked(block, neighbour_indices(start, stop, num_slices, self.k) - low)
        return stacked[channels]
