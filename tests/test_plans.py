"""The cascade plans (pure function), the left-right axis of training images, trainer registration."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest
import SimpleITK as sitk

from nnunet_ext.plans import (
    COARSE_CONFIGURATION,
    FINE_CONFIGURATION,
    PRESETS,
    spine_plans,
    training_orientation,
    transpose_left_right_first,
)
from tests.convert_helpers import export_phantom

LABELS = {"background": 0, "T11": 1, "T12": 2, "L1": 3, "L2": 4, "L3": 5, "L4": 6, "L5": 7, "S1": 8, "S2": 9,
          "ignore": 10}


def nnunet_like_plans() -> dict:
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    fullres = {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
               "batch_size": 2, "patch_size": [192, 160, 64], "median_image_size_in_voxels": [300, 200, 40],
               "spacing": [1.0, 1.0, 4.0], "normalization_schemes": ["ZScoreNormalization"],
               "use_mask_for_norm": [False], "resampling_fn_data": "resample_data_or_seg_to_shape",
               "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resampling,
               "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
               "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
               "resampling_fn_probabilities_kwargs": {**resampling, "order": 1}, "architecture": {},
               "batch_dice": False}
    return {"dataset_name": "Dataset900_X", "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
            "transpose_backward": [0, 1, 2], "image_reader_writer": "SimpleITKIO",
            "configurations": {"3d_fullres": fullres, "2d": {}}, "experiment_planner_used": "ExperimentPlanner",
            "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {}}


# arrays in SimpleITK order (k, j, i); a sagittal series stored LR along i: array axis 2 is left-right
FINGERPRINT = {"spacings": [[1.0, 0.8, 4.0], [1.0, 0.8, 4.0], [1.1, 0.8, 4.5]],
               "shapes_after_crop": [[320, 300, 15], [330, 290, 16], [310, 310, 14]]}


def test_transpose_puts_left_right_first():
    assert transpose_left_right_first(2) == ([2, 0, 1], [1, 2, 0])
    assert transpose_left_right_first(0) == ([0, 1, 2], [0, 1, 2])
    assert transpose_left_right_first(1) == ([1, 0, 2], [1, 0, 2])


def test_cascade_configurations():
    plans = spine_plans(nnunet_like_plans(), FINGERPRINT, {"labels": LABELS}, lr_axis=2, orientation="LPS")
    assert plans["plans_name"] == "nnUNetPlans_spine" and plans["transpose_forward"] == [2, 0, 1]
    assert set(plans["configurations"]) == {COARSE_CONFIGURATION, FINE_CONFIGURATION}
    coarse, fine = plans["configurations"][COARSE_CONFIGURATION], plans["configurations"][FINE_CONFIGURATION]
    assert coarse["next_stage"] == FINE_CONFIGURATION and fine["previous_stage"] == COARSE_CONFIGURATION
    assert plans["original_median_spacing_after_transp"] == [4.0, 1.0, 0.8]  # left-right (thick) first
    assert fine["spacing"] == [1.0, 0.8] and len(fine["patch_size"]) == 2  # sagittal slices at full resolution
    assert coarse["spacing"] == [4.0, 1.6, 1.6]  # 2x the finest in-plane spacing; never finer than the data
    assert all(p % 8 == 0 for p in coarse["patch_size"]) and all(p % 16 == 0 for p in fine["patch_size"])
    assert coarse["architecture"]["network_class_name"].endswith("CoarseDeepLabGCN3D")
    assert fine["architecture"]["network_class_name"].endswith("ResidualUNet2D")
    kwargs = coarse["architecture"]["arch_kwargs"]
    assert kwargs["class_names"][0] == "background" and "ignore" not in kwargs["class_names"]
    assert kwargs["auxiliary_output"] is True
    assert kwargs["strides"][1][0] == 1  # the 15-slice left-right axis is not halved at first
    assert plans["spine_cascade"]["left_right_axis_after_transpose"] == 0
    assert plans["spine_cascade"]["training_orientation"] == "LPS"
    json.dumps(plans)  # plain JSON


def test_cpu_preset_covers_the_largest_volume():
    shapes = [[20, 100, 60], [20, 100, 60], [20, 160, 90]]  # array order; the largest must fit whole at 4 mm
    fingerprint = {**FINGERPRINT, "shapes_after_crop": shapes, "spacings": [[1.0, 1.0, 1.0]] * 3}
    plans = spine_plans(nnunet_like_plans(), fingerprint, {"labels": LABELS}, 2, PRESETS["cpu"])
    coarse = plans["configurations"]["3d_lowres"]
    low = PRESETS["cpu"].lowres_factor
    assert coarse["spacing"] == [low] * 3
    covered = [shapes[2][a] / low for a in plans["transpose_forward"]]
    assert all(p >= c for p, c in zip(coarse["patch_size"], covered, strict=True)), (coarse["patch_size"], covered)


def test_small_preset_fits_the_voxel_budget():
    plans = spine_plans(nnunet_like_plans(), FINGERPRINT, {"labels": LABELS}, 2, PRESETS["small"])
    patch = plans["configurations"][COARSE_CONFIGURATION]["patch_size"]
    assert patch[0] * patch[1] * patch[2] <= PRESETS["small"].coarse_max_voxels
    assert max(plans["configurations"][FINE_CONFIGURATION]["patch_size"]) <= PRESETS["small"].fine_max_size


@pytest.mark.parametrize("orientation, lr_array_axis", [("LPS", 2), ("PIL", 0), ("ASL", 0), ("SLP", 1)])
def test_left_right_axis_from_the_images(tmp_path, orientation, lr_array_axis):
    images = tmp_path / "Dataset900_X" / "imagesTr"
    images.mkdir(parents=True)
    for n in range(2):
        phantom = export_phantom(f"c{n}", levels=("L1", "L2"), orientation=orientation)
        sitk.WriteImage(phantom.intensity_image(), str(images / f"c{n}_0000.nii.gz"))
    assert training_orientation(tmp_path / "Dataset900_X") == (lr_array_axis, orientation)
    other = export_phantom("odd", levels=("L1", "L2"), orientation="SAL" if lr_array_axis != 0 else "LPS")
    sitk.WriteImage(other.intensity_image(), str(images / "odd_0000.nii.gz"))
    with pytest.raises(ValueError, match="store left-right along different axes"):
        training_orientation(tmp_path / "Dataset900_X")


def test_trainers_are_registered_for_the_stock_cli():
    """A fresh interpreter of the environment has nnUNet_extTrainer pointing at the shim (bootstrap's .pth)."""
    from nnunet_ext.registration import shim_folder

    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    printed = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('nnUNet_extTrainer'))"],
                             env=env, capture_output=True, text=True).stdout.strip()
    assert str(shim_folder()) in printed.split(os.pathsep)
    env["nnUNet_extTrainer"] = "/somewhere/else"
    printed = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('nnUNet_extTrainer'))"],
                             env=env, capture_output=True, text=True).stdout.strip()
    assert printed.split(os.pathsep) == ["/somewhere/else", str(shim_folder())]


def test_trainer_lookup_and_signature():
    pytest.importorskip("nnunetv2")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    for name in ("nnUNetTrainerSpineCoarse", "nnUNetTrainerSpineFine", "nnUNetTrainerSpineFineBinary",
                 "nnUNetTrainerSpineCoarseSmoke"):
        trainer = recursive_find_trainer_class_by_name(name)
        assert trainer.__name__ == name and "__" not in name and issubclass(trainer, nnUNetTrainer)
        ours, theirs = inspect.signature(trainer.__init__), inspect.signature(nnUNetTrainer.__init__)
        assert list(ours.parameters) == list(theirs.parameters)
        assert [p.default for p in ours.parameters.values()] == [p.default for p in theirs.parameters.values()]
    fine = recursive_find_trainer_class_by_name("nnUNetTrainerSpineFineShort")
    assert fine.previous_stage_trainer == "nnUNetTrainerSpineCoarseShort"
    binary_fine = recursive_find_trainer_class_by_name("nnUNetTrainerSpineFineBinaryShort")
    assert binary_fine.previous_stage_trainer == "nnUNetTrainerSpineCoarseBinaryShort"
    assert binary_fine.expected_num_classes == 2 and binary_fine.epochs == fine.epochs
    # the CPU recipe (preset cpu): found by the stock lookup, paired, and a variant by class attributes only
    for stage in ("Coarse", "Fine", "CoarseBinary", "FineBinary"):
        trainer = recursive_find_trainer_class_by_name(f"nnUNetTrainerSpine{stage}Cpu")
        assert trainer.__name__ == f"nnUNetTrainerSpine{stage}Cpu"
        own = {k for k, v in vars(trainer).items() if callable(v) and not k.startswith("__")}
        assert not own, f"{trainer.__name__} overrides methods {own}: variants set class attributes only"
    assert recursive_find_trainer_class_by_name("nnUNetTrainerSpineFineCpu").previous_stage_trainer == \
        "nnUNetTrainerSpineCoarseCpu"
    assert recursive_find_trainer_class_by_name("nnUNetTrainerSpineFineBinaryCpu").previous_stage_trainer == \
        "nnUNetTrainerSpineCoarseBinaryCpu"
    from nnunet_ext.training.trainers import nnUNetTrainerSpineFine

    class nnUNetTrainerSpineFineMine(nnUNetTrainerSpineFine):  # noqa: N801 - a user's variant, named once
        epochs = 3

    class nnUNetTrainerSpineFineOther(nnUNetTrainerSpineFineMine):  # noqa: N801
        previous_stage_trainer = "nnUNetTrainerSpineCoarseCpu"  # set explicitly: kept

    assert nnUNetTrainerSpineFineMine.previous_stage_trainer == "nnUNetTrainerSpineCoarseMine"
    assert nnUNetTrainerSpineFineOther.previous_stage_trainer == "nnUNetTrainerSpineCoarseCpu"


def test_time_budget_trainer_is_nnunets_trainer_with_a_fitted_schedule():
    pytest.importorskip("nnunetv2")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_ext.training.time_budget import TimeBudget, fitted_epochs

    trainer = recursive_find_trainer_class_by_name("nnUNetTrainerTimeBudget")
    assert trainer.__bases__ == (TimeBudget, nnUNetTrainer)  # nnU-Net's own trainer: loss, optimiser, augmentation
    overridden = {k for cls in trainer.__mro__[:trainer.__mro__.index(nnUNetTrainer)] for k, v in vars(cls).items()
                  if callable(v) and hasattr(nnUNetTrainer, k) and not k.startswith("__")}
    # the schedule's hooks only (the per-epoch ones time the epochs for TimeBudget's "iterations" mode)
    assert overridden == {"on_train_start", "on_train_epoch_start", "on_train_epoch_end", "on_epoch_end"}
    assert trainer.budget_fits == "epochs"
    assert list(inspect.signature(trainer.__init__).parameters) == list(
        inspect.signature(nnUNetTrainer.__init__).parameters)
    # 3000 s budget, 200 s gone, 1 s per iteration, epochs of 50 + 10 * 0.4: 2800 / 54 = 51.85 -> 51 epochs
    assert fitted_epochs(3000, 200, 1.0, 50, 10) == 51
    assert fitted_epochs(100, 200, 1.0, 50, 10) == 1  # over budget already: still one epoch
    assert fitted_epochs(3000, 0, 60.0, 50, 10) == 1  # nnU-Net's 2d default on 2 cores: one epoch fits


def test_fine_cpu_skips_only_the_validation_after_its_own_training(monkeypatch):
    pytest.importorskip("nnunetv2")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext.training.variants import nnUNetTrainerSpineCoarseCpu, nnUNetTrainerSpineFineCpu

    assert nnUNetTrainerSpineFineCpu.validate_after_training is False
    assert nnUNetTrainerSpineCoarseCpu.validate_after_training is True  # stage 2 trains on its predicted_next_stage
    calls = []

    class Probe(nnUNetTrainerSpineFineCpu):
        def __init__(self):  # no plans needed: only the validation switch is exercised
            pass

        def print_to_log_file(self, *args, **kwargs):
            calls.append("skipped")

    monkeypatch.setattr(nnUNetTrainer, "perform_actual_validation", lambda self, save_probabilities=False:
                        calls.append("validated"))
    probe = Probe()
    probe.perform_actual_validation()  # nnUNetv2_train --val: nothing trained in this process -> validates
    probe._trained_in_this_process = True
    probe.perform_actual_validation()  # right after its training: skipped
    assert calls == ["validated", "skipped"]


@pytest.mark.parametrize("native_bfloat16", [False, True])
def test_the_recipe_trains_a_narrower_stage_two_where_it_trains_in_float32(monkeypatch, tmp_path, native_bfloat16):
    """Without native bfloat16 the recipe's stage 2 costs 1.6-2.7x per iteration: it trains the 8-96 network there
    (its own widths, recorded in the model folder like ``network_features``), the preset's where bfloat16 runs, on
    CUDA and where a variant switches bfloat16 off only on a CPU without it; stage 1 keeps the plans' widths."""
    pytest.importorskip("nnunetv2")
    import torch

    from nnunet_ext.training import trainers, variants

    monkeypatch.setattr(trainers, "cpu_bfloat16_supported", lambda: native_bfloat16)

    def widths(cls, device="cpu", model_folder=None):
        trainer = object.__new__(cls)  # the choice reads only class attributes, the device and the model folder
        trainer.device, trainer.configuration_name = torch.device(device), "2d_cascade"
        trainer.output_folder_base = None if model_folder is None else str(model_folder)
        return trainer.chosen_network_features()

    fine, narrow = variants.nnUNetTrainerSpineFineCpu, (8, 16, 32, 64, 96)
    assert widths(fine) == (None if native_bfloat16 else narrow)
    assert widths(fine, "cuda") is None
    assert widths(variants.nnUNetTrainerSpineCoarseCpu) is None
    assert widths(variants.nnUNetTrainerSpineFineBinaryCpu) == widths(fine)

    class Float32Always(fine):
        cpu_bfloat16 = False

    class Wide(fine):
        network_features = (16, 32, 64, 96, 128)

    assert widths(Float32Always) == narrow
    assert widths(Wide) == ((16, 32, 64, 96, 128) if native_bfloat16 else narrow)
    # a model folder with a trained fold keeps its widths (another fold, --c, --val on the other kind of CPU)
    model = tmp_path / "model"
    (model / "fold_0").mkdir(parents=True)
    other = (16, 32, 64, 96, 128) if not native_bfloat16 else narrow
    plans = {"configurations": {"2d_cascade": {"architecture": {"arch_kwargs": {"features_per_stage": list(other)}}}}}
    (model / "plans.json").write_text(json.dumps(plans))
    assert widths(fine, model_folder=model) == widths(fine)  # no checkpoint yet: this machine's choice
    (model / "fold_0" / "checkpoint_latest.pth").write_bytes(b"")
    assert widths(fine, model_folder=model) == other and widths(fine, "cuda", model) == other
    assert widths(Wide, model_folder=model) == other
    plans["configurations"] = {"2d": plans["configurations"]["2d_cascade"], "2d_cascade": {"inherits_from": "2d"}}
    (model / "plans.json").write_text(json.dumps(plans))
    assert widths(fine, model_folder=model) == other  # inherited widths, as spine-predict resolves them
