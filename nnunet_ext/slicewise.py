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


class TileAccumulator:
    """nnU-Net's in-plane tile grid over the slices of ``data`` ``(C, S, H, W)``, run piece by piece: each call of
    :meth:`run` predicts only the (tile, slice) pairs that no earlier call ran, for every fold (``fold_loaders``:
    one callable per fold that loads its weights into ``network``; one no-op for a single network), and adds their
    Gaussian-weighted logits; :meth:`logits` blends what a box needs. A box that grows therefore costs only the tiles
    and slices it adds, and the blended logits inside it are still the full grid's. ``steps`` are nnU-Net's tile
    start positions per axis of the image padded to at least ``patch_size`` (centred, as nnU-Net pads)."""

    def __init__(self, network: torch.nn.Module, data: torch.Tensor, patch_size: Sequence[int], num_classes: int,
                 steps: Sequence[Sequence[int]], gaussian: torch.Tensor, device: torch.device | str = "cpu",
                 mirror_axes: Sequence[int] | None = None, batch: int = DEFAULT_SLICE_BATCH,
                 fold_loaders: Sequence = (lambda: None,)) -> None:
        _, slices, self.height, self.width = data.shape
        pad_h, pad_w = max(0, patch_size[0] - self.height), max(0, patch_size[1] - self.width)
        self.top, self.left = pad_h // 2, pad_w // 2  # nnU-Net's pad_nd_image centres the image
        padded = (torch.nn.functional.pad(data, (self.left, pad_w - self.left, self.top, pad_h - self.top))
                  if pad_h or pad_w else data)
        self.padded, self.patch, self.steps, self.batch = padded, list(patch_size), steps, batch
        self.network, self.device, self.mirror_axes = network.to(device).eval(), device, mirror_axes
        self.weight = gaussian.to("cpu", torch.float32)
        self.fold_loaders = list(fold_loaders)
        self.sums = torch.zeros((num_classes, slices, *padded.shape[2:]), dtype=torch.float32)
        self.done: dict[tuple[int, int], torch.Tensor] = {}  # tile corner -> slices already run

    def _corners(self, box: tuple[slice, slice] | None) -> list[tuple[int, int]]:
        padded_box = None if box is None else (slice(box[0].start + self.top, box[0].stop + self.top),
                                               slice(box[1].start + self.left, box[1].stop + self.left))
        return tile_corners(self.steps, self.patch, padded_box)

    @torch.inference_mode()
    def run(self, slices: slice = slice(None), box: tuple[slice, slice] | None = None) -> None:
        """Predict the tiles overlapping ``box`` (in-plane slices of the unpadded image; None: all) on ``slices``,
        those not run before."""
        wanted = torch.zeros(self.sums.shape[1], dtype=torch.bool)
        wanted[slices] = True
        todo = []
        for corner in self._corners(box):
            done = self.done.setdefault(corner, torch.zeros_like(wanted))
            missing = torch.nonzero(wanted & ~done).flatten()
            if len(missing):
                todo.append((corner, missing))
                done[missing] = True
        autocast = torch.autocast("cuda") if torch.device(self.device).type == "cuda" else contextlib.nullcontext()
        for load in self.fold_loaders if todo else ():
            load()
            with autocast:  # as nnU-Net: mixed precision on CUDA only
                for corner, missing in todo:
                    self._add_tile(corner, missing)

    def _add_tile(self, corner: tuple[int, int], slices: torch.Tensor) -> None:
        """Add one in-plane tile position's weighted logits on ``slices``, ``batch`` slices per network call."""
        window = (slice(corner[0], corner[0] + self.patch[0]), slice(corner[1], corner[1] + self.patch[1]))
        for start in range(0, len(slices), self.batch):
            chunk = slices[start:start + self.batch]
            tiles = self.padded[:, chunk, window[0], window[1]].permute(1, 0, 2, 3).contiguous().to(self.device)
            out = _mirrored(self.network, tiles, self.mirror_axes).float().to("cpu")
            self.sums[:, chunk, window[0], window[1]] += out.permute(1, 0, 2, 3) * self.weight

    def logits(self, slices: slice = slice(None), box: tuple[slice, slice] | None = None) -> torch.Tensor:
        """Logits ``(num_classes, slices, H, W)`` (float32, CPU) blended from the tiles overlapping ``box`` (run them
        first with :meth:`run`): inside the box the full grid's, outside it undefined (zero weight: set to 0)."""
        weights = torch.zeros(self.padded.shape[2:], dtype=torch.float32)
        for corner in self._corners(box):
            weights[corner[0]:corner[0] + self.patch[0], corner[1]:corner[1] + self.patch[1]] += self.weight
        weights *= len(self.fold_loaders)  # the sums add every fold: their mean
        blended = self.sums[:, slices] / torch.where(weights > 0, weights, torch.ones_like(weights))
        return blended[:, :, self.top:self.top + self.height, self.left:self.left + self.width]


def predict_slices(network: torch.nn.Module, data: torch.Tensor, patch_size: Sequence[int], num_classes: int,
                   steps: Sequence[Sequence[int]], gaussian: torch.Tensor, device: torch.device | str = "cpu",
                   mirror_axes: Sequence[int] | None = None, batch: int = DEFAULT_SLICE_BATCH,
                   box: tuple[slice, slice] | None = None) -> torch.Tensor:
    """Logits ``(num_classes, S, H, W)`` (float32, CPU) of ``data`` ``(C, S, H, W)``: the ``S`` slices predicted in
    batches of ``batch`` on nnU-Net's in-plane tile grid (:class:`TileAccumulator`), each tile weighted by
    ``gaussian`` (the patch's importance map). With ``box`` (in-plane slices of the unpadded image) only the tiles
    overlapping it are run: inside the box the logits are the full grid's, outside it they are undefined (set to
    0)."""
    tiles = TileAccumulator(network, data, patch_size, num_classes, steps, gaussian, device, mirror_axes, batch)
    tiles.run(box=box)
    return tiles.logits(box=box)
