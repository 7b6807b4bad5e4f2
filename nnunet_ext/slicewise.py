"""Stage 2's sliding window over sagittal slices, several slices per network call.

nnU-Net's predictor runs a 2D configuration one tile of one slice at a time. Here every in-plane tile position
(nnU-Net's positions, :func:`~nnunet_ext.compat.sliding_window_steps`) is run on a batch of slices at once, with
nnU-Net's Gaussian tile weighting and zero padding of images smaller than the patch, so the logits are nnU-Net's up to
floating-point rounding (nnU-Net accumulates in float16, this in float32). Slices are predicted independently, so a
subset of slices gets the same logits as in the whole volume.

With a box, two layouts: ``"grid"`` (the default) runs the tiles of nnU-Net's grid that overlap the box, so that
inside the box the logits are the full grid's exactly; ``"box"`` lays nnU-Net's grid over the box itself, on each axis
widened to at least the patch (centred on the box, inside the image): a box narrower than the patch gets one tile
centred on it instead of every grid tile that touches it (3 of 224 px on a 351-px axis), a box as long as the axis
keeps the grid. Each tile still sees a whole patch of the image, but a network with instance norms answers each
window somewhat differently, and on real scans the outlines moved (per-case Dice 0.93-1.0 against the grid layout's,
which inside the box is the full window's; docs/benchmarks.md, "Thirty-second session").
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Callable, Sequence

import torch

DEFAULT_SLICE_BATCH = 4
TILE_LAYOUTS = ("box", "grid")
StepsFor = Callable[[Sequence[int]], Sequence[Sequence[int]]]
"""nnU-Net's tile start positions per axis for an image of a given size (in-plane)."""


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


def box_region(box: slice, length: int, patch: int) -> slice:
    """``box`` (one axis of a padded image ``length`` long) widened to at least ``patch``: centred on the box and
    moved inside ``[0, length)`` (``length >= patch``, as the image is padded to the patch)."""
    if box.stop - box.start >= patch:
        return box
    start = min(max(0, box.start - (patch - (box.stop - box.start)) // 2), length - patch)
    return slice(start, start + patch)


def box_corners(box: tuple[slice, slice], shape: Sequence[int], patch_size: Sequence[int],
                steps_for: StepsFor) -> list[tuple[int, int]]:
    """In-plane tile corners of nnU-Net's grid laid over ``box`` (padded coordinates in an image of ``shape``), each
    axis widened to at least the patch (:func:`box_region`); ``steps_for``: nnU-Net's start positions for an image of
    the given size (:func:`~nnunet_ext.compat.sliding_window_steps` at the predictor's step)."""
    regions = [box_region(side, length, patch) for side, length, patch in zip(box, shape, patch_size, strict=True)]
    steps = steps_for([region.stop - region.start for region in regions])
    return list(itertools.product(*([region.start + s for s in axis] for region, axis in zip(regions, steps,
                                                                                               strict=True))))


class TileAccumulator:
    """nnU-Net's in-plane tile grid over the slices of ``data`` ``(C, S, H, W)``, run piece by piece: each call of
    :meth:`run` predicts only the (tile, slice) pairs that no earlier call ran, for every fold (``fold_loaders``:
    one callable per fold that loads its weights into ``network``; one no-op for a single network), and adds their
    Gaussian-weighted logits and weights; :meth:`logits` blends them. ``steps_for`` gives nnU-Net's tile start
    positions per axis for an image of a given size (:func:`~nnunet_ext.compat.sliding_window_steps` at the
    predictor's step); the grid is its positions for the image padded to at least ``patch_size`` (centred, as
    nnU-Net pads). With ``layout="grid"`` a box runs the grid's tiles that overlap it: a box that grows costs only
    the tiles and slices it adds, and the blended logits inside it are the full grid's. With ``layout="box"`` the
    grid is laid over the box (:func:`box_corners`); a grown box runs its own tiles, blended with those run before."""

    def __init__(self, network: torch.nn.Module, data: torch.Tensor, patch_size: Sequence[int], num_classes: int,
                 steps_for: StepsFor, gaussian: torch.Tensor, device: torch.device | str = "cpu",
                 mirror_axes: Sequence[int] | None = None, batch: int = DEFAULT_SLICE_BATCH,
                 fold_loaders: Sequence = (lambda: None,), layout: str = "grid") -> None:
        if layout not in TILE_LAYOUTS:
            raise ValueError(f"tile layout {layout!r}: one of {TILE_LAYOUTS}")
        _, slices, self.height, self.width = data.shape
        pad_h, pad_w = max(0, patch_size[0] - self.height), max(0, patch_size[1] - self.width)
        self.top, self.left = pad_h // 2, pad_w // 2  # nnU-Net's pad_nd_image centres the image
        padded = (torch.nn.functional.pad(data, (self.left, pad_w - self.left, self.top, pad_h - self.top))
                  if pad_h or pad_w else data)
        self.padded, self.patch, self.batch = padded, list(patch_size), batch
        self.steps = steps_for(padded.shape[2:])  # the whole slice's grid
        self.network, self.device, self.mirror_axes = network.to(device).eval(), device, mirror_axes
        self.weight = gaussian.to("cpu", torch.float32)
        self.fold_loaders = list(fold_loaders)
        self.sums = torch.zeros((num_classes, slices, *padded.shape[2:]), dtype=torch.float32)
        self.weights = torch.zeros((slices, *padded.shape[2:]), dtype=torch.float32)  # Gaussians added per slice
        self.layout, self.steps_for = layout, steps_for
        self.done: dict[tuple[int, int], torch.Tensor] = {}  # tile corner -> slices already run

    def _corners(self, box: tuple[slice, slice] | None) -> list[tuple[int, int]]:
        padded_box = None if box is None else (slice(box[0].start + self.top, box[0].stop + self.top),
                                               slice(box[1].start + self.left, box[1].stop + self.left))
        if padded_box is not None and self.layout == "box":
            return box_corners(padded_box, self.padded.shape[2:], self.patch, self.steps_for)
        return tile_corners(self.steps, self.patch, padded_box)

    @torch.inference_mode()
    def run(self, slices: slice = slice(None), box: tuple[slice, slice] | None = None) -> None:
        """Predict ``box``'s tiles (in-plane slices of the unpadded image; None: the whole grid) on ``slices``, those
        not run before: the grid's tiles that overlap it, or with ``layout="box"`` the grid laid over it."""
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
            self.weights[chunk, window[0], window[1]] += self.weight

    def logits(self, slices: slice = slice(None)) -> torch.Tensor:
        """Logits ``(num_classes, slices, H, W)`` (float32, CPU) blended from every tile run on these slices so far
        (:meth:`run`), the folds' mean: inside a box run with ``layout="grid"`` the full grid's; where no tile ran,
        0."""
        weights = self.weights[slices]
        blended = self.sums[:, slices] / torch.where(weights > 0, weights, torch.ones_like(weights))
        return blended[:, :, self.top:self.top + self.height, self.left:self.left + self.width]


def predict_slices(network: torch.nn.Module, data: torch.Tensor, patch_size: Sequence[int], num_classes: int,
                   steps_for: StepsFor, gaussian: torch.Tensor, device: torch.device | str = "cpu",
                   mirror_axes: Sequence[int] | None = None, batch: int = DEFAULT_SLICE_BATCH,
                   box: tuple[slice, slice] | None = None, layout: str = "grid") -> torch.Tensor:
    """Logits ``(num_classes, S, H, W)`` (float32, CPU) of ``data`` ``(C, S, H, W)``: the ``S`` slices predicted in
    batches of ``batch`` on nnU-Net's in-plane tile grid (``steps_for``: as :class:`TileAccumulator`'s), each tile
    weighted by ``gaussian`` (the patch's importance map). With ``box`` (in-plane slices of the unpadded image) only
    the box's tiles are run (``layout``: as :class:`TileAccumulator`'s): with ``layout="grid"`` inside the box the
    logits are the full grid's; where no tile ran they are undefined (set to 0)."""
    tiles = TileAccumulator(network, data, patch_size, num_classes, steps_for, gaussian, device, mirror_axes, batch,
                            layout=layout)
    tiles.run(box=box)
    return tiles.logits()
