"""Add the paper's cascade to nnU-Net plans: a ``3d_lowres`` stage with the coarse 3D network and a ``2d_cascade``
stage on full-resolution sagittal slices with the fine 2D network.

:func:`spine_plans` is pure (plans dicts in, plans dict out); :func:`write_spine_plans` reads nnU-Net's plans and
fingerprint for a dataset, finds the left-right array axis from the raw images' direction matrices, and writes
``nnUNetPlans_spine.json`` (a plans file of our own) next to them. Then the stock ``nnUNetv2_preprocess`` runs on it.

The plans put the left-right axis first (``transpose_forward``), so nnU-Net's 2D configuration slices sagittally
(the paper's fine stage) whatever the file's axis order, and mirroring is allowed along left-right only.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from .networks.factory import (
    COARSE_CLASS,
    FINE_CLASS,
    architecture_entry,
    class_names_from_labels,
    coarse_arch_kwargs,
    fine_arch_kwargs,
)

SPINE_PLANS_NAME = "nnUNetPlans_spine"
COARSE_CONFIGURATION = "3d_lowres"
FINE_CONFIGURATION = "2d_cascade"


@dataclass(frozen=True)
class CascadeMetadata:
    """What ``spine-nnunet plan`` records in the plans under ``spine_cascade`` for training and prediction: written
    and read here only."""

    KEY: ClassVar[str] = "spine_cascade"
    left_right_axis_after_transpose: int
    """The patient left-right axis among the network's spatial axes (the only axis mirrored)."""
    training_orientation: str | None
    """Orientation code the training images were brought to (prediction reorients new images to it)."""
    size: dict[str, Any]
    """The preset's sizes (:class:`CascadeSize` as a dict)."""
    source_plans: str | None
    """nnU-Net's plans these were derived from."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_plans(cls, plans: Mapping[str, Any]) -> CascadeMetadata | None:
        """The record of a plans dict, None for plans that spine-nnunet did not write."""
        entry = plans.get(cls.KEY)
        if not entry:
            return None
        return cls(int(entry.get("left_right_axis_after_transpose", 0)), entry.get("training_orientation"),
                   dict(entry.get("size") or {}), entry.get("source_plans"))


NEIGHBOUR_SLICES_KEY = "spine_neighbour_slices"
"""Key of a configuration in a trained model folder's ``plans.json``: neighbour slices each side that stage 2 sees
as extra image channels (:mod:`nnunet_ext.neighbours`); written by the trainer, absent (0) for a plain 2D stage."""


def neighbour_slices(configuration: Mapping[str, Any]) -> int:
    """Neighbour slices each side a configuration's network takes (0 when the plans do not record any)."""
    k = int(configuration.get(NEIGHBOUR_SLICES_KEY, 0))
    if k < 0:
        raise ValueError(f"{NEIGHBOUR_SLICES_KEY} must be >= 0, not {k}")
    return k


def record_neighbour_slices(configuration: dict[str, Any], k: int) -> None:
    """Record ``k`` neighbour slices each side in a configuration dict (removes the entry for 0)."""
    if k < 0:
        raise ValueError(f"neighbour slices must be >= 0, not {k}")
    if k:
        configuration[NEIGHBOUR_SLICES_KEY] = int(k)
    else:
        configuration.pop(NEIGHBOUR_SLICES_KEY, None)


CPU_PRECISION_KEY = "spine_cpu_precision"
"""Key of a configuration in a trained model folder's ``plans.json``: ``bfloat16`` when the network was trained in
bfloat16 autocast on the CPU (trainer attribute ``cpu_bfloat16``); absent for float32 (and for CUDA training)."""
CPU_PRECISIONS = ("float32", "bfloat16")


def trained_cpu_precision(configuration: Mapping[str, Any]) -> str:
    """The precision a configuration's network was trained in on the CPU (``float32`` when the plans record none)."""
    precision = str(configuration.get(CPU_PRECISION_KEY, "float32"))
    if precision not in CPU_PRECISIONS:
        raise ValueError(f"{CPU_PRECISION_KEY} must be one of {', '.join(CPU_PRECISIONS)}, not {precision!r}")
    return precision


def record_cpu_precision(configuration: dict[str, Any], precision: str) -> None:
    """Record the precision a configuration's network is trained in on the CPU (removes the entry for float32)."""
    if precision not in CPU_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(CPU_PRECISIONS)}, not {precision!r}")
    if precision == "float32":
        configuration.pop(CPU_PRECISION_KEY, None)
    else:
        configuration[CPU_PRECISION_KEY] = precision


@dataclass(frozen=True)
class CascadeSize:
    """Network widths, patch budgets and batch sizes of the two stages (``default`` for GPUs, ``small`` for CPU)."""

    coarse_features: tuple[int, ...] = (32, 64, 128, 256)
    coarse_blocks: tuple[int, ...] = (1, 2, 2, 2)
    aspp_channels: int = 128
    gcn_hidden: int = 64
    fine_features: tuple[int, ...] = (32, 64, 128, 256, 512)
    lowres_factor: float = 2.0
    """Coarse-stage spacing: this many times the finest full-resolution spacing (never finer than the data)."""
    coarse_max_voxels: int = 160 * 160 * 64
    fine_max_size: int = 512
    coarse_batch: int = 2
    fine_batch: int = 12
    coarse_cover_percentile: float = 50.0
    """The coarse patch covers this percentile of the training volumes' shapes (50: the median, as nnU-Net; 100:
    the largest volume whole, so that every case is seen with its full context)."""


PRESETS = {
    "default": CascadeSize(),
    # CPU-sized: the coarse stage sees the whole volume at 4x the in-plane spacing and the fine stage whole sagittal
    # slices (up to 320 px, batch 2): level identity, the end levels above all, needs the context
    "small": CascadeSize(coarse_features=(8, 16, 32, 48), coarse_blocks=(1, 1, 1, 1), aspp_channels=32,
                         gcn_hidden=16, fine_features=(8, 16, 32, 64, 96), lowres_factor=4.0,
                         coarse_max_voxels=24 * 96 * 64, fine_max_size=320, coarse_batch=2, fine_batch=2),
    # the CPU recipe for real scans (docs/benchmarks.md, "CPU recipe"): stage 1 sees every training volume whole at
    # 6 mm (a 381 mm sagittal field of view included: counting the levels needs the sacrum and the thoracic end in
    # one view; 4 mm costs 2-3x per iteration on 2 cores); stage 2 16-128 wide (twice "small"'s 8-96, affordable in
    # bfloat16: binary Dice 0.872 -> 0.886, heights closer; docs/benchmarks.md, "Tenth session"), batch 4
    "cpu": CascadeSize(coarse_features=(8, 16, 32, 48), coarse_blocks=(1, 1, 1, 1), aspp_channels=32,
                       gcn_hidden=16, fine_features=(16, 32, 64, 96, 128), lowres_factor=6.0,
                       coarse_max_voxels=16 * 64 * 64, fine_max_size=256, coarse_batch=2, fine_batch=4,
                       coarse_cover_percentile=100.0),
}


def transpose_left_right_first(lr_axis: int) -> tuple[list[int], list[int]]:
    """``transpose_forward`` with the left-right array axis first (others in order) and its inverse."""
    forward = [lr_axis] + [a for a in range(3) if a != lr_axis]
    return forward, [int(i) for i in np.argsort(forward)]


def _patch(shape: Sequence[float], multiple: int, max_size: int | None = None, max_voxels: int | None = None,
           shrink_axes: Sequence[int] = ()) -> list[int]:
    """The median shape rounded up to ``multiple``, each axis at most ``max_size``, shrunk on ``shrink_axes``
    (largest first) until at most ``max_voxels``."""
    patch = [int(math.ceil(s / multiple) * multiple) for s in shape]
    if max_size:
        patch = [min(p, max_size) for p in patch]
    while max_voxels and int(np.prod(patch)) > max_voxels:
        axis = max(shrink_axes or range(len(patch)), key=lambda a: patch[a])
        if patch[axis] <= multiple:
            break
        patch[axis] -= multiple
    return patch


def _configuration(template: dict, data_identifier: str, patch: list[int], median: list[float],
                   spacing: list[float], batch: int, architecture: dict, batch_dice: bool) -> dict:
    config = {key: copy.deepcopy(template[key]) for key in (
        "preprocessor_name", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data",
        "resampling_fn_seg", "resampling_fn_data_kwargs", "resampling_fn_seg_kwargs", "resampling_fn_probabilities",
        "resampling_fn_probabilities_kwargs")}
    config.update({"data_identifier": data_identifier, "batch_size": batch, "patch_size": patch,
                   "median_image_size_in_voxels": median, "spacing": spacing, "architecture": architecture,
                   "batch_dice": batch_dice})
    return config


def spine_plans(plans: dict, fingerprint: dict, dataset_json: dict, lr_axis: int, size: CascadeSize = CascadeSize(),
                plans_name: str = SPINE_PLANS_NAME, orientation: str | None = None) -> dict:
    """nnU-Net plans with exactly the two cascade configurations.

    Args:
        plans: nnU-Net's own plans (``nnUNetPlans.json``: reader, normalisation and resampling are taken from its
            ``3d_fullres`` configuration).
        fingerprint: ``dataset_fingerprint.json`` (spacings and shapes in array order).
        dataset_json: the dataset's ``dataset.json`` (its labels define the class graph).
        lr_axis: the array axis (SimpleITK order) closest to the patient's left-right axis.
        orientation: the training images' orientation code (recorded for inference).
    """
    forward, backward = transpose_left_right_first(lr_axis)
    spacing = np.median(np.array(fingerprint["spacings"], dtype=float), axis=0)[forward]
    shapes = np.array(fingerprint["shapes_after_crop"], dtype=float)
    shape = np.median(shapes, axis=0)[forward]
    in_plane = spacing[1:]
    low = np.maximum(spacing, size.lowres_factor * in_plane.min())  # never finer than the data
    low_shape = shape * spacing / low
    covered = np.percentile(shapes, size.coarse_cover_percentile, axis=0)[forward] * spacing / low
    class_names = class_names_from_labels(dataset_json["labels"])
    template = plans["configurations"]["3d_fullres"]
    coarse_patch = _patch(covered, 8, max_voxels=size.coarse_max_voxels, shrink_axes=(1, 2))
    coarse_kwargs = coarse_arch_kwargs(coarse_patch, low.tolist(), class_names, features_per_stage=size.coarse_features,
                                       blocks_per_stage=size.coarse_blocks, aspp_channels=size.aspp_channels,
                                       gcn_hidden=size.gcn_hidden)
    coarse_kwargs["auxiliary_output"] = True
    fine_patch = _patch(shape[1:], 16, max_size=size.fine_max_size)
    fine_kwargs = fine_arch_kwargs(fine_patch, in_plane.tolist(), features_per_stage=size.fine_features)
    result = {key: copy.deepcopy(value) for key, value in plans.items() if key != "configurations"}
    result.update({
        "plans_name": plans_name,
        "original_median_spacing_after_transp": spacing.tolist(),
        "original_median_shape_after_transp": [int(round(s)) for s in shape],
        "transpose_forward": forward,
        "transpose_backward": backward,
        CascadeMetadata.KEY: CascadeMetadata(0, orientation, asdict(size), plans.get("plans_name")).to_json(),
        "configurations": {
            COARSE_CONFIGURATION: {
                **_configuration(template, f"{plans_name}_{COARSE_CONFIGURATION}", coarse_patch,
                                 low_shape.round(1).tolist(), low.tolist(), size.coarse_batch,
                                 architecture_entry(COARSE_CLASS, coarse_kwargs), batch_dice=False),
                "next_stage": FINE_CONFIGURATION,
            },
            FINE_CONFIGURATION: {
                **_configuration(template, f"{plans_name}_{FINE_CONFIGURATION}", fine_patch,
                                 shape[1:].round(1).tolist(), in_plane.tolist(), size.fine_batch,
                                 architecture_entry(FINE_CLASS, fine_kwargs), batch_dice=True),
                "previous_stage": COARSE_CONFIGURATION,
            },
        },
    })
    return result


def training_orientation(raw_dataset: Path) -> tuple[int, str]:
    """The left-right array axis and the orientation code shared by the training images of a raw dataset.

    Raises ``ValueError`` when the images do not share one axis layout (convert them to one orientation first).
    """
    import SimpleITK as sitk

    from measure.io import canonical_axis_map

    images = sorted((raw_dataset / "imagesTr").glob("*_0000.*"))
    if not images:
        raise ValueError(f"{raw_dataset}: no training images in imagesTr")
    layouts: dict[tuple[int, str], list[str]] = {}
    for path in images:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        direction = np.array(reader.GetDirection()).reshape(3, 3)
        axes, _, _ = canonical_axis_map(direction)
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(reader.GetDirection())
        layouts.setdefault((2 - axes[0], code), []).append(path.name)
    if len({axis for axis, _ in layouts}) > 1:
        detail = "; ".join(f"left-right array axis {axis} ({code}): {len(names)} image(s), e.g. {names[0]}"
                           for (axis, code), names in layouts.items())
        raise ValueError(f"{raw_dataset}: training images store left-right along different axes ({detail}); "
                         "reorient them to one orientation before training")
    (axis, code), _ = max(layouts.items(), key=lambda item: len(item[1]))
    return axis, code


def write_spine_plans(dataset: str, preprocessed: Path, raw: Path, size: CascadeSize = CascadeSize(),
                      source_plans: str = "nnUNetPlans", plans_name: str = SPINE_PLANS_NAME) -> Path:
    """Read nnU-Net's plans of ``dataset`` (a ``DatasetNNN_Name`` folder name) and write ``plans_name.json``."""
    folder = preprocessed / dataset
    plans_path = folder / f"{source_plans}.json"
    if not plans_path.is_file():
        raise FileNotFoundError(f"{plans_path} not found: run nnUNetv2_plan_and_preprocess -d ID --no_pp "
                                "(or nnUNetv2_plan_experiment) first")
    plans = json.loads(plans_path.read_text())
    fingerprint = json.loads((folder / "dataset_fingerprint.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    lr_axis, orientation = training_orientation(raw / dataset)
    result = spine_plans(plans, fingerprint, dataset_json, lr_axis, size, plans_name, orientation)
    target = folder / f"{plans_name}.json"
    target.write_text(json.dumps(result, indent=1) + "\n")
    return target
