"""Both cascade stages on one image in memory: stage 1 on the whole volume, stage 2 only where stage 1 found vertebrae.

Models are loaded once (:func:`load_cascade`) and reused for every image. Each image goes through nnU-Net's own
preprocessing, in this process (no worker pools, no files between the stages); stage 1's segmentation is handed to
stage 2 as an array, exactly as nnU-Net's cascade would read it back from disk. Stage 2 then predicts the box of
stage 1's foreground (:mod:`.roi`: its sagittal slices and in-plane extent, plus a margin), several slices per network
call (:mod:`.slicewise`): the tiles of nnU-Net's grid over the whole slice that overlap the box (``tile_layout=
"grid"``, the default: inside the box the logits are what nnU-Net's full sliding window gives) or nnU-Net's grid laid
over the box (``"box"``: one tile across a box narrower than the patch; faster, other masks); everything outside the
box is background.
``full_window=True`` runs nnU-Net's own sliding window over every slice instead (what the fast path is checked
against: docs/benchmarks.md, "Inference speed").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from .roi import MAX_GROWTH, axis_margins_mm, foreground_box, grow_box, superior_array_axis
from .slicewise import DEFAULT_SLICE_BATCH, TILE_LAYOUTS

BACKGROUND_LOGIT = 10.0
"""Stage 2's background logit outside the box (other classes 0): argmax and any resampling keep it background."""


@dataclass
class CascadePredictors:
    """The two stages' loaded models (nnU-Net predictors; :func:`~nnunet_ext.compat.load_predictor`)."""

    coarse: Any
    fine: Any
    full_window: bool = False
    """Stage 2 over every slice with nnU-Net's sliding window (slow; the reference for the fast path)."""
    slice_batch: int = DEFAULT_SLICE_BATCH
    margin_mm: float | None = None
    """Margin around stage 1's foreground on every side; None: :func:`~nnunet_ext.roi.axis_margins_mm`."""
    tile_layout: str = "grid"
    """Stage 2's tiles in the box: the whole slice's grid tiles that overlap it (``"grid"``: the full window's logits
    there) or nnU-Net's grid laid over the box (``"box"``: fewer tiles, other masks; :mod:`.slicewise`)."""


def load_cascade(coarse_folder, fine_folder, coarse_folds=None, fine_folds=None,
                 checkpoint: str = "checkpoint_final.pth", device: str = "cpu", mirroring: bool = True,
                 tile_step_size: float = 0.5, full_window: bool = False,
                 slice_batch: int = DEFAULT_SLICE_BATCH, precision: str = "auto",
                 cpu_layout: str = "auto", tile_layout: str = "grid") -> CascadePredictors:
    """Load both stages' trained models once (``precision``, ``cpu_layout``:
    :func:`~nnunet_ext.compat.load_predictor`; ``tile_layout``: :attr:`CascadePredictors.tile_layout`)."""
    if tile_layout not in TILE_LAYOUTS:
        raise ValueError(f"tile layout {tile_layout!r}: one of {TILE_LAYOUTS}")
    from .compat import load_predictor

    common = dict(checkpoint=checkpoint, device=device, mirroring=mirroring, tile_step_size=tile_step_size,
                  precision=precision, cpu_layout=cpu_layout)
    return CascadePredictors(load_predictor(coarse_folder, coarse_folds, **common),
                             load_predictor(fine_folder, fine_folds, **common), full_window, slice_batch,
                             tile_layout=tile_layout)


def _stage2_logits(predictors: CascadePredictors, data, properties: dict, superior_axis_zyx: int,
                   boxes: list | None = None):
    """Stage 2's logits over the whole preprocessed array: the box of stage 1's foreground predicted (grown where
    stage 2's mask touches its sides, :func:`~nnunet_ext.roi.grow_box`), background elsewhere (or nnU-Net's full
    sliding window when asked, or when stage 1 found nothing).

    ``boxes``: None, or an empty list that receives the boxes run, in order (each grown box after the first; the
    last one is the result's); a list holding boxes runs exactly those instead of stage 1's box and its growth
    (``benchmarks/bench_predict.py`` runs an untrained network on the boxes a trained one ran).
    """
    import torch

    from .compat import predict_full_window, slab_tiles, stage_geometry

    fine = predictors.fine
    geometry = stage_geometry(fine, properties)
    previous = data[geometry.image_channels:]
    given, record = (list(boxes), None) if boxes else (None, boxes)
    if given and (len(given) > MAX_GROWTH + 1 or any(
            side.stop > length for box in given for side, length in zip(box, data.shape[1:], strict=True))):
        raise ValueError(f"stage 2's boxes {given} are not a growth of a box in its array {tuple(data.shape[1:])}")
    margin = predictors.margin_mm
    if margin is None:
        superior = geometry.source_axes.index(superior_axis_zyx)
        margin = axis_margins_mm(stage_geometry(predictors.coarse, properties).spacing_mm, 3, superior)
    if given:
        box = given[0]
    else:
        box = None if predictors.full_window else foreground_box(previous.any(0).numpy(), geometry.spacing_mm, margin)
    if box is None:
        return predict_full_window(fine, data)
    tiles = slab_tiles(fine, data, predictors.slice_batch, predictors.tile_layout)
    for attempt in range(MAX_GROWTH + 1):
        # the box's slices and its tiles; a grown box runs only the (tile, slice) pairs not run before
        tiles.run(box[0], box[1:])
        slab = tiles.logits(box[0])
        if record is not None:
            record.append(box)
        inside = slab[(slice(None), slice(None), *box[1:])].argmax(0).numpy() > 0
        grown = grow_box(box, inside, data.shape[1:], geometry.spacing_mm, margin)
        if given:  # the next box given instead (the rule still computed, for its cost)
            grown = given[attempt + 1] if attempt + 1 < len(given) else box
        if grown == box or attempt == MAX_GROWTH:
            break
        box = grown
    logits = torch.zeros((geometry.num_classes, *data.shape[1:]), dtype=torch.float32)
    logits[0] = BACKGROUND_LOGIT
    logits[(slice(None), *box)] = slab[(slice(None), slice(None), *box[1:])]
    return logits


def run_stage1(predictors: CascadePredictors, array_czyx: np.ndarray, spacing_zyx) -> np.ndarray:
    """Stage 1's segmentation (the image's array order, uint8) of an image array (channels first, as
    ``SimpleITK.GetArrayFromImage`` orders the rest) with its spacing in that order."""
    from .compat import logits_to_segmentation, predict_full_window, preprocess_case

    data, properties = preprocess_case(predictors.coarse, array_czyx, spacing_zyx)
    return logits_to_segmentation(predictors.coarse, predict_full_window(predictors.coarse, data), properties)


def run_stage2(predictors: CascadePredictors, array_czyx: np.ndarray, spacing_zyx, coarse: np.ndarray,
               direction, boxes: list | None = None) -> np.ndarray:
    """Stage 2's segmentation given stage 1's (``coarse``, same grid); ``direction``: the image's direction cosines
    (to know which axis runs along the spine); ``boxes``: as :func:`_stage2_logits`'s (in stage 2's preprocessed
    array)."""
    from .compat import logits_to_segmentation, preprocess_case

    data, properties = preprocess_case(predictors.fine, array_czyx, spacing_zyx, previous_stage_zyx=coarse)
    logits = _stage2_logits(predictors, data, properties, superior_array_axis(direction), boxes)
    return logits_to_segmentation(predictors.fine, logits, properties)


def segment_image(predictors: CascadePredictors, image: sitk.Image) -> tuple[sitk.Image, sitk.Image, dict]:
    """Stage 1's and stage 2's segmentations of ``image`` (uint8, on its grid) and the seconds each phase took
    (``stage1_s``, ``stage2_s``: preprocessing, prediction and resampling back included)."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)[None]
    spacing = image.GetSpacing()[::-1]
    start = time.perf_counter()
    coarse = run_stage1(predictors, array, spacing)
    middle = time.perf_counter()
    fine = run_stage2(predictors, array, spacing, coarse, image.GetDirection())
    seconds = {"stage1_s": middle - start, "stage2_s": time.perf_counter() - middle}
    masks = []
    for segmentation in (coarse, fine):
        mask = sitk.GetImageFromArray(np.asarray(segmentation, dtype=np.uint8))
        mask.CopyInformation(image)
        masks.append(mask)
    return masks[0], masks[1], seconds
