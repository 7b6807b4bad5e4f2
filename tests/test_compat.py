"""Fails first when nnunetv2 changes the internals that nnunet_ext.compat relies on."""

from __future__ import annotations

import inspect

import pytest

from nnunet_ext import compat


def test_pinned_nnunet_version():
    pytest.importorskip("nnunetv2")
    assert compat.nnunet_version() == compat.NNUNET_VERSION


def test_verify_dataset_integrity_signature():
    pytest.importorskip("nnunetv2")
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    assert list(inspect.signature(verify_dataset_integrity).parameters) == ["folder", "num_processes"]


@pytest.mark.parametrize("value, expected", [("0", 0), ("00", 0), ("1", 1)])
def test_augmentation_processes_as_nnunet_reads_them(monkeypatch, value, expected):
    pytest.importorskip("nnunetv2")
    monkeypatch.setenv("nnUNet_n_proc_DA", value)
    assert compat.augmentation_processes() == expected


def test_augmentation_processes_without_the_variable_are_workers(monkeypatch):
    pytest.importorskip("nnunetv2")
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    assert compat.augmentation_processes() > 0  # nnU-Net's table or default, never in the training process


def test_planner_copies_raw_splits_file():
    """spine-convert writes splits_final.json into the raw dataset; nnU-Net 2.8.1's planner copies it over."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.experiment_planning.experiment_planners import default_experiment_planner as planner

    assert "splits_final.json" in inspect.getsource(planner.ExperimentPlanner.__init__)
    assert callable(planner._maybe_copy_splits_file)


def test_network_hooks_we_rely_on():
    """build_network_architecture's 2.8.1 signature, the deep-supervision switch on ``decoder``, the plans loader,
    and deep-supervision scales derived from ``arch_kwargs['strides']``."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    assert isinstance(inspect.getattr_static(nnUNetTrainer, "build_network_architecture"), staticmethod)
    assert list(inspect.signature(nnUNetTrainer.build_network_architecture).parameters) == [
        "plans_manager", "configuration_manager", "num_input_channels", "num_output_channels",
        "enable_deep_supervision"]
    assert "mod.decoder.deep_supervision = enabled" in inspect.getsource(nnUNetTrainer.set_deep_supervision_enabled)
    assert list(inspect.signature(get_network_from_plans).parameters) == [
        "arch_class_name", "arch_kwargs", "arch_kwargs_req_import", "input_channels", "output_channels",
        "allow_init", "deep_supervision"]
    source = inspect.getsource(nnUNetTrainer._get_deep_supervision_scales)
    assert "np.cumprod" in source and "pool_op_kernel_sizes" in source and "[:-1]" in source
    assert "'strides'" in inspect.getsource(ConfigurationManager.pool_op_kernel_sizes.fget)
    assert list(inspect.signature(nnUNetTrainer.__init__).parameters) == [
        "self", "plans", "configuration", "fold", "dataset_json", "device"]
    # cpu_bfloat16: initialize() builds self.network once (was_initialized), and train_step autocasts on CUDA only
    source = inspect.getsource(nnUNetTrainer.initialize)
    assert "if not self.was_initialized" in source and "self.network = self.build_network_architecture(" in source
    assert "autocast(self.device.type, enabled=True) if self.device.type == 'cuda'" in inspect.getsource(
        nnUNetTrainer.train_step)


def test_schedule_and_validation_hooks_we_rely_on():
    """TimeBudget sets ``num_epochs`` in ``on_train_start`` (run_training reads it only afterwards) or each epoch's
    ``num_iterations_per_epoch`` after the one before, and
    stretches the poly schedule through ``max_steps``; ``validate_after_training`` overrides
    ``perform_actual_validation``, which run_training.py calls after training and alone for ``--val``."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.run import run_training
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    loop = inspect.getsource(nnUNetTrainer.run_training)
    assert 0 <= loop.find("self.on_train_start()") < loop.find("self.num_epochs") < loop.find("self.on_train_end()")
    # TimeBudget's "iterations": the loop reads each epoch's iteration count anew; on_epoch_end counts the epoch last
    epoch_loop = loop[loop.find("self.num_epochs"):]
    assert epoch_loop.find("self.on_train_epoch_start()") < epoch_loop.find(
        "range(self.num_iterations_per_epoch)") < epoch_loop.find("self.on_train_epoch_end(") < epoch_loop.find(
        "self.on_epoch_end()")
    assert inspect.getsource(nnUNetTrainer.on_epoch_end).rstrip().endswith("self.current_epoch += 1")
    # ProgressPlots: the epoch's end draws the plot through the trainer's logger, which progress_plot_skipped mutes
    assert "self.logger.plot_progress_png(self.output_folder)" in inspect.getsource(nnUNetTrainer.on_epoch_end)
    assert "self.dataloader_train" in inspect.getsource(nnUNetTrainer.on_train_start)
    assert "self.max_steps" in inspect.getsource(PolyLRScheduler.step)
    assert list(inspect.signature(nnUNetTrainer.perform_actual_validation).parameters) == [
        "self", "save_probabilities"]
    source = inspect.getsource(run_training.run_training)
    assert "run_training()" in source and "perform_actual_validation" in source


def test_model_folder_files_the_recorded_widths_rely_on():
    """trained_network_features reads the widths from the model folder's plans.json, which nnU-Net writes (the trainer's
    plans, with the widths it recorded) when a fold starts training, and looks for a fold's checkpoint_*.pth."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    assert "save_json(self.plans_manager.plans, join(self.output_folder_base, 'plans.json')" in inspect.getsource(
        nnUNetTrainer.on_train_start)
    assert "join(self.output_folder, 'checkpoint_latest.pth')" in inspect.getsource(nnUNetTrainer.on_epoch_end)
    assert 'join(self.output_folder, "checkpoint_final.pth")' in inspect.getsource(nnUNetTrainer.on_train_end)


def test_stretch_poly_schedule():
    pytest.importorskip("nnunetv2")
    import torch

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = compat.poly_lr_scheduler(optimizer, 0.01, 1000)
    compat.stretch_poly_schedule(scheduler, 10)
    scheduler.step(5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5 ** 0.9)


def test_loss_hooks_we_rely_on():
    """_build_loss returns DC_and_CE_loss (ignore label passed on) wrapped in DeepSupervisionWrapper, whose ``loss``
    and ``weight_factors`` compat.unwrap_deep_supervision reads."""
    pytest.importorskip("nnunetv2")
    import torch
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    source = inspect.getsource(nnUNetTrainer._build_loss)
    assert "ignore_label=self.label_manager.ignore_label" in source and "DeepSupervisionWrapper(loss" in source
    base = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False}, {}, ignore_label=3)
    inner, weights = compat.unwrap_deep_supervision(DeepSupervisionWrapper(base, [0.75, 0.25]))
    assert inner is base and weights == [0.75, 0.25]
    assert compat.unwrap_deep_supervision(base) == (base, None)
    logits = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    target = torch.full((1, 1, 4, 4), 3.0)  # ignored voxels: nnU-Net's loss must not see them
    target[..., 0] = 1.0
    changed = logits.clone()
    changed[..., 1:] = torch.randn(1, 3, 4, 3, generator=torch.Generator().manual_seed(1)) * 10
    assert torch.isfinite(base(logits, target)) and base(changed, target).item() == pytest.approx(
        base(logits, target).item(), abs=1e-6)


def test_training_transforms_hold_one_spatial_transform_with_scaling():
    """nnUNetTrainer.get_training_transforms composes one batchgeneratorsv2 SpatialTransform whose ``scaling``
    compat.set_spatial_scaling narrows (the paper's 0.95-1.05); the cascade trainers' transforms carry that range."""
    pytest.importorskip("nnunetv2")
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext.training.trainers import nnUNetTrainerSpine

    arguments = ((64, 64), (-0.1, 0.1), None, (), False)
    transforms = nnUNetTrainer.get_training_transforms(*arguments)
    assert compat.set_spatial_scaling(transforms, (0.9, 1.1)) == 1
    spatial = [t for t in transforms.transforms if isinstance(t, SpatialTransform)]
    assert spatial[0].scaling == (0.9, 1.1)
    ours = nnUNetTrainerSpine.get_training_transforms(*arguments)
    assert [t.scaling for t in ours.transforms if isinstance(t, SpatialTransform)] == [
        nnUNetTrainerSpine.scaling_range]


def test_blur_and_low_resolution_transforms_can_be_left_out():
    """nnU-Net's training transforms hold a GaussianBlurTransform and a SimulateLowResolutionTransform (each in a
    RandomTransform); compat.drop_transforms removes exactly those, refuses a name nnU-Net does not have, and a
    trainer's ``dropped_transforms`` leaves them out of its transforms."""
    pytest.importorskip("nnunetv2")
    from batchgeneratorsv2.transforms.utils.random import RandomTransform
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext.training.trainers import nnUNetTrainerSpine

    def names(composed) -> list[str]:
        return [type(t.transform if isinstance(t, RandomTransform) else t).__name__ for t in composed.transforms]

    sharp = ("GaussianBlurTransform", "SimulateLowResolutionTransform")
    arguments = ((64, 64), (-0.1, 0.1), None, (), False)
    transforms = nnUNetTrainer.get_training_transforms(*arguments)
    before = names(transforms)
    assert all(name in before for name in sharp)
    assert compat.drop_transforms(transforms, sharp) == 2
    assert names(transforms) == [name for name in before if name not in sharp]
    with pytest.raises(ValueError, match="hold no GaussianBlurTransform"):
        compat.drop_transforms(transforms, sharp)

    class Sharp(nnUNetTrainerSpine):
        dropped_transforms = sharp

    assert not set(sharp) & set(names(Sharp.get_training_transforms(*arguments)))
    assert set(sharp) <= set(names(nnUNetTrainerSpine.get_training_transforms(*arguments)))


def test_prediction_internals_we_rely_on():
    """The in-process prediction (compat.load_predictor, preprocess_case, predict_full_window, logits_to_segmentation,
    predict_slab, write_initialised_model) uses these nnU-Net 2.8.1 names and signatures."""
    pytest.importorskip("nnunetv2")
    from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.preprocessing.resampling.default_resampling import (
        ANISO_THRESHOLD,
        determine_do_sep_z_and_axis,
        resample_data_or_seg_to_shape,
    )
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    assert list(inspect.signature(nnUNetPredictor.manual_initialization).parameters) == [
        "self", "network", "plans_manager", "configuration_manager", "parameters", "dataset_json", "trainer_name",
        "inference_allowed_mirroring_axes"]
    source = inspect.getsource(nnUNetPredictor.initialize_from_trained_model_folder)
    for key in ("'network_weights'", "'trainer_name'", "'init_args'", "'inference_allowed_mirroring_axes'"):
        assert key in source  # the checkpoint keys write_initialised_model writes
    assert callable(nnUNetPredictor.auto_detect_available_folds)
    assert list(inspect.signature(nnUNetPredictor.predict_sliding_window_return_logits).parameters) == [
        "self", "input_image"]
    assert list(inspect.signature(DefaultPreprocessor.run_case_npy).parameters) == [
        "self", "data", "seg", "properties", "plans_manager", "configuration_manager", "dataset_json"]
    run_case = inspect.getsource(DefaultPreprocessor.run_case_npy)
    assert "crop_to_nonzero" in run_case and "'bbox_used_for_cropping'" in run_case
    assert "'shape_after_cropping_and_before_resampling'" in run_case
    assert list(inspect.signature(convert_predicted_logits_to_segmentation_with_correct_shape).parameters)[:5] == [
        "predicted_logits", "plans_manager", "configuration_manager", "label_manager", "properties_dict"]
    assert "np.any(shape != new_shape)" in inspect.getsource(
        __import__("nnunetv2.preprocessing.resampling.default_resampling", fromlist=["x"]).resample_data_or_seg)
    assert list(inspect.signature(resample_data_or_seg_to_shape).parameters)[:6] == [
        "data", "new_shape", "current_spacing", "new_spacing", "is_seg", "order"]
    assert callable(determine_do_sep_z_and_axis) and ANISO_THRESHOLD == 3
    assert "partial(fn" in inspect.getsource(ConfigurationManager.resampling_fn_probabilities.fget)
    assert list(inspect.signature(compute_gaussian).parameters)[:3] == ["tile_size", "sigma_scale",
                                                                       "value_scaling_factor"]
    assert list(inspect.signature(compute_steps_for_sliding_window).parameters) == [
        "image_size", "tile_size", "tile_step_size"]
    assert callable(bounding_box_to_slice)
    slicers = inspect.getsource(nnUNetPredictor._internal_get_sliding_window_slicers)
    assert "for d in range(image_size[0])" in slicers  # a 2D configuration: slices along the first axis, one by one


def test_set_features_per_stage_writes_where_nnunet_builds_the_network_from():
    """The widths land in ``arch_kwargs['features_per_stage']`` of every entry given (an entry without its own
    ``architecture``, one that inherits it, gets a copy), which ConfigurationManager hands to the network builder;
    another number of stages, or a width below 1, is refused."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    architecture = {"network_class_name": "nnunet_ext.networks.fine2d.ResidualUNet2D",
                    "arch_kwargs": {"features_per_stage": [8, 16, 32], "strides": [1, 2, 2]},
                    "_kw_requires_import": []}
    manager = ConfigurationManager({"architecture": architecture, "patch_size": [64, 64]})
    inheriting = {"inherits_from": "2d"}
    compat.set_features_per_stage([inheriting, manager.configuration], manager, (16, 32, 48))
    assert manager.network_arch_init_kwargs["features_per_stage"] == [16, 32, 48]
    assert inheriting["architecture"]["arch_kwargs"] == {"features_per_stage": [16, 32, 48], "strides": [1, 2, 2]}
    assert inheriting["architecture"]["arch_kwargs"] is not manager.network_arch_init_kwargs
    for widths in ((16, 32), (0, 16, 32)):
        with pytest.raises(ValueError, match="must give a positive width for each of the network's stages"):
            compat.set_features_per_stage([manager.configuration], manager, widths)
    assert manager.network_arch_init_kwargs["features_per_stage"] == [16, 32, 48]


def test_training_batch_pipeline_names():
    """What benchmarks/bench_training_step.py reaches through compat: get_trainer_from_args, the augmenter's
    data_loader, the loader's transforms (a ComposeTransforms list whose RandomTransforms hold .transform) and its
    dataset's load_case."""
    pytest.importorskip("nnunetv2")
    from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.random import RandomTransform
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset

    parameters = list(inspect.signature(get_trainer_from_args).parameters)
    assert parameters[:5] == ["dataset_name_or_id", "configuration", "fold", "trainer_name", "plans_identifier"]
    assert "device" in parameters
    assert "self.data_loader = data_loader" in inspect.getsource(SingleThreadedAugmenter.__init__)
    assert "self.transforms = transforms" in inspect.getsource(nnUNetDataLoader.__init__)
    assert "self.transforms = transforms" in inspect.getsource(ComposeTransforms.__init__)
    assert "self.transform = transform" in inspect.getsource(RandomTransform.__init__)
    assert "self._data.load_case(" in inspect.getsource(nnUNetDataLoader.generate_train_batch)
    assert hasattr(nnUNetBaseDataset, "load_case")


def test_training_case_draw_hooks(tmp_path):
    """rare_level_sampling: get_dataloaders builds the training loader on get_tr_and_val_datasets()'s first dataset,
    the loader draws uniformly (infinite, no probabilities) from that dataset's ``identifiers``, and preprocessing
    records the classes a case annotates in its properties' ``class_locations``, read from ``<case>.pkl``."""
    pytest.importorskip("nnunetv2")
    from batchgenerators.dataloading.data_loader import DataLoader
    from batchgenerators.utilities.file_and_folder_operations import write_pickle
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    loaders = inspect.getsource(nnUNetTrainer.get_dataloaders)
    assert "dataset_tr, dataset_val = self.get_tr_and_val_datasets()" in loaders
    assert "nnUNetDataLoader(dataset_tr, self.batch_size" in loaders and "sampling_probabilities=None" in loaders
    assert "self.indices = data.identifiers" in inspect.getsource(nnUNetDataLoader.__init__)
    assert "np.random.choice(self.indices, self.batch_size, replace=True" in inspect.getsource(DataLoader.get_indices)
    assert "properties['class_locations'] = self._sample_foreground_locations(" in inspect.getsource(
        DefaultPreprocessor.run_case_npy)
    assert "load_pickle(join(self.source_folder, identifier + '.pkl'))" in inspect.getsource(
        nnUNetDatasetBlosc2.load_case)

    # the layout preprocessing writes: a location array per foreground class (empty where not annotated), plus a
    # tuple key for all foreground together
    write_pickle({"class_locations": {1: [], 2: [[0, 1, 2, 3]], 8: [[0, 4, 5, 6]], (-1, 0, 1, 2, 8): [[0, 1, 2, 3]]}},
                 str(tmp_path / "case_0001.pkl"))
    assert compat.annotated_classes(tmp_path, "case_0001") == [2, 8]

    class Dataset:
        identifiers = ["a", "b"]

    dataset = Dataset()
    compat.draw_training_cases_from(dataset, ["a", "b", "b"])
    assert dataset.identifiers == ["a", "b", "b"]
    with pytest.raises(ValueError, match="not in the training dataset"):
        compat.draw_training_cases_from(dataset, ["c"])


def test_train_step_phases_and_previous_stage_layout(tmp_path):
    """compat.timed_train_step repeats nnU-Net's CPU train_step (gradient clipping at 12); a reference saved by
    compat.reference_as_previous_stage is what nnU-Net's blosc2 dataset loads as the previous stage's segmentation."""
    pytest.importorskip("nnunetv2")
    import pickle
    from types import SimpleNamespace

    import numpy as np
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext import compat

    source = inspect.getsource(nnUNetTrainer.train_step)
    assert f"clip_grad_norm_(self.network.parameters(), {compat.GRADIENT_CLIP_NORM:g})" in source
    assert "self.network(data)" in source and "self.loss(output, target)" in source

    preprocessed, previous = tmp_path / "pp", tmp_path / "previous"
    preprocessed.mkdir(), previous.mkdir()
    rng = np.random.default_rng(0)
    seg = rng.integers(0, 4, (1, 3, 8, 8)).astype(np.int16)
    nnUNetDatasetBlosc2.save_case(rng.random((1, 3, 8, 8), dtype=np.float32), seg, {}, str(preprocessed / "case_0"),
                                  (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))
    (preprocessed / "case_0.pkl").write_bytes(pickle.dumps({}))
    trainer = SimpleNamespace(preprocessed_dataset_folder_base=str(tmp_path),
                              configuration_manager=SimpleNamespace(data_identifier="pp"), is_cascaded=True)
    for name in ("preprocessed_dataset_folder_base", "is_cascaded", "folder_with_segs_from_previous_stage"):
        assert f"self.{name} =" in inspect.getsource(nnUNetTrainer.__init__)
    assert compat.is_cascade_stage(trainer)
    assert compat.reference_as_previous_stage(trainer, previous) == previous
    loaded = nnUNetDatasetBlosc2(str(preprocessed), folder_with_segs_from_previous_stage=str(previous))
    np.testing.assert_array_equal(loaded.load_case("case_0")[2][:], seg[0])


def test_checkpoint_hooks_the_weight_average_relies_on():
    """WeightAverage (nnunet_ext/training/weight_average.py): nnU-Net's checkpoints hold the state dict of the network
    without its DDP and torch.compile wrappers (compat.trained_module unwraps the same way), the end of training saves
    checkpoint_final.pth before it removes checkpoint_latest.pth, and every training iteration is one train_step."""
    pytest.importorskip("nnunetv2")
    from types import SimpleNamespace

    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    save = inspect.getsource(nnUNetTrainer.save_checkpoint)
    assert "mod = self.network.module" in save and "mod = mod._orig_mod" in save
    assert "'network_weights': mod.state_dict()" in save
    end = inspect.getsource(nnUNetTrainer.on_train_end)
    assert 0 <= end.find('"checkpoint_final.pth"') < end.find('os.remove(join(self.output_folder, "checkpoint_latest')
    assert "self.train_step(next(self.dataloader_train))" in inspect.getsource(nnUNetTrainer.run_training)
    network = torch.nn.Linear(1, 1)
    assert compat.trained_module(SimpleNamespace(is_ddp=False, network=network)) is network
    assert compat.trained_module(SimpleNamespace(is_ddp=False, network=torch.compile(network))) is network
    assert compat.trained_module(SimpleNamespace(is_ddp=True, network=SimpleNamespace(module=network))) is network
