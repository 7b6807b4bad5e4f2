"""Stage 2's sliding window over sagittal slices, several slices per network call.

nnU-Net's predictor runs a 2D configuration one tile of one slice at a time. Here every in-plane tile position
(nnU-Net's positions, :func:`~nnunet_ext.compat.sliding_window_steps`) is run on a batch of slices at once, with
nnU-Net's Gaussian tile weighting and zero padding of images smaller than the patch, so the logits are nnU-Net's up to
floating-point rounding (nnU-Net accumulates in float16, this in float32). Slices are predicted independently, so a
subset of slices gets the same logits as in the whole volume; with a box, the tiles that do not overlap it are
skipped, and inside the box the logits are still the full grid's (a network's output depends on the tile it sees,
so the grid is kept rather than re-laid around the box).
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Sequence

import torch

DEFAULT_SLICE_BATCH = 4


def _mirrored(network: torch.nn.Module, x: torch.Tensor, mirror_axes: Sequence[int] | None) -> torch.Tensor:
    """The network's output averaged over the test-time flips of ``mirror_axes`` (spatial axes of the patch, as
    nnU-Net's ``inference_allowed_mirroring_axes``)."""
    prediction = network(x)
    if not mirror_axes:
        return prediction
    axes = [a + 2 for a in mirror_axes]
    combinations = [c for n in range(len(axes)) for c in itertools.combinations(axes, n + 1)]
    for flip in combinations:
        prediction = prediction + torch.flip(network(torch.flip(x, flip)), flip)
    return prediction / (len(combinations) + 1)


def tile_corners(steps: Sequence[Sequence[int]], patch_size: Sequence[int],
                 box: tuple[slice, slice] | None = None) -> list[tuple[int, int]]:
    """In-plane tile corners of nnU-Net's grid (``steps``: start positions per axis of the padded image): all of
    them, or those whose tile overlaps ``box`` (in padded coordinates). Every tile that covers a voxel of the box is
    kept, so inside the box the blended logits are the full grid's."""
    corners = list(itertools.product(*steps))
    if box is None:
        return corners
    return [(y, x) for y, x in corners if y < box[0].stop and y + patch_size[0] > box[0].start
            and x < box[1].stop and x + patch_size[1] > box[1].start]


@torch.inference_mode()
def predict_slices(network: torch.nn.Module, data: torch.Tensor, patch_size: Sequence[int], num_classes: int,
                   steps: Sequence[Sequence[int]], gaussian: torch.Tensor, device: torch.device | str = "cpu",
                   mirror_axes: Sequence[int] | None = None, batch: int = DEFAULT_SLICE_BATCH,
                   box: tuple[slice, slice] | None = None) -> torch.Tensor:
    """Logits ``(num_classes, S, H, W)`` (float32, CPU) of ``data`` ``(C, S, H, W)``: the ``S`` slices predicted in
    batches of ``batch`` on nnU-Net's in-plane tile grid (``steps``: start positions per axis of the image padded
    to at least ``patch_size``, centred, as nnU-Net pads), each tile weighted by ``gaussian`` (the patch's
    importance map). With ``box`` (in-plane slices of the unpadded image) only the tiles overlapping it are run:
    inside the box the logits are the full grid's, outside it they are undefined (zero weight: set to 0)."""
    _, slices, height, width = data.shape
    pad_h, pad_w = max(0, patch_size[0] - height), max(0, patch_size[1] - width)
    top, left = pad_h // 2, pad_w // 2  # nnU-Net's pad_nd_image centres the image in the padded array
    padded = torch.nn.functional.pad(data, (left, pad_w - left, top, pad_h - top)) if pad_h or pad_w else data
    padded_box = None if box is None else (slice(box[0].start + top, box[0].stop + top),
                                           slice(box[1].start + left, box[1].stop + left))
    logits = torch.zeros((num_classes, slices, *padded.shape[2:]), dtype=torch.float32)
    weights = torch.zeros(padded.shape[2:], dtype=torch.float32)
    weight = gaussian.to("cpu", torch.float32)
    network = network.to(device).eval()
    autocast = torch.autocast("cuda") if torch.device(device).type == "cuda" else contextlib.nullcontext()
    with autocast:  # as nnU-Net: mixed precision on CUDA only
        for corner in tile_corners(steps, patch_size, padded_box):
            _predict_window(network, padded, logits, weights, weight, corner, patch_size, device, mirror_axes, batch)
    logits /= torch.where(weights > 0, weights, torch.ones_like(weights))
    return logits[:, :, top:top + height, left:left + width]


def _predict_window(network, padded, logits, weights, weight, corner, patch_size, device, mirror_axes, batch) -> None:
    """Add one in-plane tile position's weighted logits, every slice, ``batch`` slices per network call."""
    y, x = corner
    window = (slice(y, y + patch_size[0]), slice(x, x + patch_size[1]))
    weights[window] += weight
    slices = padded.shape[1]
    for start in range(0, slices, batch):
        stop = min(start + batch, slices)
        tiles = padded[:, start:stop, window[0], window[1]].permute(1, 0, 2, 3).contiguous().to(device)
        out = _mirrored(network, tiles, mirror_axes).float().to("cpu")
        logits[:, start:stop, window[0], window[1]] += out.permute(1, 0, 2, 3) * weight
