"""The one module that touches nnU-Net internals (nnunetv2 2.8.1 is pinned: these are the names we rely on).

``tests/test_compat.py`` checks every name used here, so an nnunetv2 upgrade fails there first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

NNUNET_VERSION = "2.8.1"


def nnunet_version() -> str:
    from importlib.metadata import version

    return version("nnunetv2")


def verify_raw_dataset(folder: str | Path, num_processes: int = 1) -> None:
    """Run nnU-Net's own ``verify_dataset_integrity`` on a raw dataset folder (what
    ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` runs); raises on any problem."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(folder), num_processes=num_processes)


def network_from_architecture(architecture, input_channels: int, num_classes: int, deep_supervision: bool):
    """Build a network from a plans ``architecture`` entry with nnU-Net's ``get_network_from_plans`` (the loader
    ``nnUNetTrainer.build_network_architecture`` uses: class by dotted path, ``arch_kwargs`` as keywords, weights
    initialised through the network's ``initialize``)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    return get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                  architecture.get("_kw_requires_import", []), input_channels, num_classes,
                                  allow_init=True, deep_supervision=deep_supervision)


def previous_stage_folder(results: str | Path, dataset_name: str, trainer_name: str, plans_name: str,
                          previous_configuration: str, configuration: str) -> str:
    """Where nnU-Net 2.8.1 writes a stage's ``predicted_next_stage`` segmentations for ``configuration`` (the layout
    ``nnUNetTrainer.__init__`` builds, with the previous stage's trainer name instead of the current one)."""
    from os.path import join

    return join(str(results), dataset_name, f"{trainer_name}__{plans_name}__{previous_configuration}",
                "predicted_next_stage", configuration)


def deep_supervision_loss(loss, weights):
    """nnU-Net's wrapper applying ``loss`` to each output with its weight (zero weights are skipped)."""
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    return DeepSupervisionWrapper(loss, weights)


def unwrap_deep_supervision(loss):
    """``(inner loss, weights)`` of a loss nnU-Net wrapped in its ``DeepSupervisionWrapper`` (``weight_factors``,
    ``loss``), or ``(loss, None)`` for an unwrapped one."""
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    if isinstance(loss, DeepSupervisionWrapper):
        return loss.loss, list(loss.weight_factors)
    return loss, None


def set_spatial_scaling(transforms, scaling: tuple[float, float]) -> int:
    """Narrow the scaling range of the ``SpatialTransform`` (batchgeneratorsv2, attribute ``scaling``) in the composed
    training transforms ``nnUNetTrainer.get_training_transforms`` returns; returns how many were changed (1)."""
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    changed = 0
    for transform in getattr(transforms, "transforms", []):
        if isinstance(transform, SpatialTransform):
            transform.scaling = scaling
            changed += 1
    return changed


def augmentation_patch_size(patch_size, rotation, scaling) -> list[int]:
    """The larger patch nnU-Net samples before rotating/scaling so that the final patch has no empty corners."""
    from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size

    return list(get_patch_size(patch_size, rotation, rotation, rotation, scaling))


def predict_folder(model_folder: str | Path, input_folder: str | Path, output_folder: str | Path,
                   folds: Sequence[int | str] | None = None, checkpoint: str = "checkpoint_final.pth",
                   device: str = "cpu", previous_stage_folder: str | Path | None = None, mirroring: bool = True,
                   tile_step_size: float = 0.5, processes_preprocessing: int = 1, processes_export: int = 1,
                   show_progress: bool = False) -> None:
    """Predict every ``CASE_0000.nii.gz`` of ``input_folder`` with one trained nnU-Net model folder through
    ``nnUNetPredictor`` (``previous_stage_folder``: the previous stage's segmentations for a cascade stage)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch_device = torch.device(device)
    predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=torch_device.type == "cuda", device=torch_device,
                                verbose=False, verbose_preprocessing=False, allow_tqdm=show_progress)
    predictor.initialize_from_trained_model_folder(str(model_folder), tuple(folds) if folds else None, checkpoint)
    predictor.predict_from_files(str(input_folder), str(output_folder), save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=processes_preprocessing,
                                 num_processes_segmentation_export=processes_export,
                                 folder_with_segs_from_prev_stage=(str(previous_stage_folder)
                                                                   if previous_stage_folder else None))


def model_folder(results: str | Path, dataset_name: str, trainer: str, plans: str, configuration: str) -> Path:
    """nnU-Net's results folder of one trained configuration."""
    return Path(results) / dataset_name / f"{trainer}__{plans}__{configuration}"


def poly_lr_scheduler(optimizer, initial_lr: float, epochs: int):
    """nnU-Net's polynomial learning-rate decay (what ``nnUNetTrainer.configure_optimizers`` pairs with SGD)."""
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    return PolyLRScheduler(optimizer, initial_lr, epochs)


def stretch_poly_schedule(scheduler, epochs: int) -> None:
    """Make an nnU-Net ``PolyLRScheduler`` decay to zero at ``epochs`` instead of the length it was built with
    (its ``max_steps``; ``step(epoch)`` recomputes the rate from it every epoch)."""
    scheduler.max_steps = epochs

