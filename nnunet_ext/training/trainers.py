"""Trainer classes of the cascade, found by the stock ``nnUNetv2_train`` through ``nnUNet_extTrainer``.

* :class:`nnUNetTrainerSpineCoarse`: stage 1, ``3d_lowres`` with the coarse 3D network and its GCN head (auxiliary
  loss on the head's class scores, weight 0.3 as in SpineParseNet).
* :class:`nnUNetTrainerSpineFine`: stage 2, ``2d_cascade`` (``previous_stage`` ``3d_lowres``) with the fine 2D
  network; it reads stage 1's ``predicted_next_stage`` output from the folder of :attr:`previous_stage_trainer`.

Both use the paper's spatial augmentation: rotation up to 5 degrees, scaling up to 5 %, mirroring only left-right
(never up-down or front-back), translation through nnU-Net's random patch placement; intensity augmentation as nnU-Net.
Variants (:mod:`.variants`) override class attributes only.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from measure.levels import is_known_level, level_rank
from measure.runtime import nnunet_folder
from nnunet_ext.compat import (
    NeighbourSlicesDatasetClass,
    annotated_classes,
    augmentation_patch_size,
    augmentation_processes,
    deep_supervision_loss,
    draw_training_cases_from,
    drop_transforms,
    insert_after_spatial,
    poly_lr_scheduler,
    previous_stage_folder,
    set_features_per_stage,
    set_spatial_scaling,
    stacked_input_channels,
    synchronize_intensity_channels,
    trained_network_features,
    unwrap_deep_supervision,
)
from nnunet_ext.networks.precision import (
    CHANNELS_LAST_SAFE_INPUT_CHANNELS,
    channels_last_training_hazards,
    cpu_bfloat16_supported,
    cpu_channels_last_preferred,
    set_cpu_autocast,
    set_cpu_channels_last,
)
from nnunet_ext.plans import (
    CascadeMetadata,
    record_cpu_precision,
    record_neighbour_slices,
    trained_cpu_precision,
)
from nnunet_ext.training.augmentation import ContrastInversion, CranialFieldOfViewCrop, NeighbourSlicesMirror
from nnunet_ext.training.partial_loss import UnannotatedLevelsLoss
from nnunet_ext.training.progress_plot import ProgressPlots
from nnunet_ext.training.sampling import class_shares, level_balanced_case_weights, replicated_cases
from nnunet_ext.training.seeding import (
    SEED_VARIABLE,
    seed_everything,
    stream_seed,
    training_seed,
    unrepeatable_because,
)
from nnunet_ext.training.time_budget import TimeBudget
from nnunet_ext.training.union_loss import UnionBoundaryLoss, UnionDiceLoss
from nnunet_ext.training.weight_average import WeightAverage

_NNUNET_DEFAULT_DEVICE = torch.device("cuda")  # nnUNetTrainer.__init__'s default


class nnUNetTrainerSpine(WeightAverage, ProgressPlots, TimeBudget, nnUNetTrainer):  # noqa: N801 - nnU-Net's naming convention
    """Common base: the paper's augmentation, schedule and stage wiring as class attributes (a wall-time budget for
    the schedule, :attr:`~nnunet_ext.training.time_budget.TimeBudget.time_budget_s`, none by default; the progress
    plot every :attr:`~nnunet_ext.training.progress_plot.ProgressPlots.progress_plot_every` epochs, every one by
    default; an exponential moving average of the weights to end training with,
    :attr:`~nnunet_ext.training.weight_average.WeightAverage.weight_average_decay`, none by default)."""

    rotation_max_deg: float = 5.0
    scaling_range: tuple[float, float] = (0.95, 1.05)
    aux_loss_weight: float = 0.3
    cranial_crop_probability: float = 0.0
    """Share of training patches whose cranial end is cut off (:mod:`.augmentation`; 0: never)."""
    cranial_crop_max_fraction: float = 0.35
    """The most of the scanned extent along the spine a cut removes (a uniform random share up to this)."""
    dropped_transforms: tuple[str, ...] = ()
    """nnU-Net's training transforms left out, by batchgeneratorsv2 class name (``("GaussianBlurTransform",
    "SimulateLowResolutionTransform")``: training images as sharp as the ones predicted; docs/training.md)."""
    contrast_inversion_probability: float = 0.0
    """Share of training patches whose image is negated (:class:`.augmentation.ContrastInversion`; 0: never), before
    nnU-Net's intensity augmentation."""
    unannotated_level_weight: float = 1.0
    """Weight of the partial-label term on the unannotated region (:mod:`.partial_loss`; 0 turns it off)."""
    adjacent_level_weight: float = 0.0
    """3D stages: weight of the term that asks the unannotated level next to each end of a case's annotated chain to
    be found beyond it, where the field of view reaches (:func:`.partial_loss.adjacent_level_presence_penalty`)."""
    adjacent_levels: tuple[str, ...] | None = ("S1",)
    """The levels that term asks for (None: any level next to an annotated end). S1 only by default: the sacrum is
    the landmark levels are counted from; asking for T12 above an annotated L1 taught stage 1 to name the most cranial
    body in view "T12" (docs/benchmarks.md, "Eighth session")."""
    union_dice_weight: float = 0.0
    """Data with more than one class (label-based, not regions): weight of a soft Dice of "any vertebra" added to
    nnU-Net's per-class loss (:mod:`.union_loss`; 0 turns it off; a single class skips it, its Dice is already the
    union's)."""
    union_boundary_weight: float = 0.0
    """Data with more than one class (label-based): weight of the cross-entropy of "any vertebra" on the voxels near
    the union's edge (:func:`.union_loss.union_boundary_loss`; 0 turns it off)."""
    union_boundary_width: int = 2
    """How far from the union's edge (voxels, each side) that term looks."""
    union_boundary_partial_labels: bool = False
    """That term where the union's edge meets the unannotated region (ignore label): False leaves the band out there
    (the outside of the edge is not known as "any vertebra"); True keeps it, as the edge of each level against what
    the region may be: the ignored side counted by what it is known not to be (a level the case annotates elsewhere),
    the vertebra side by its own level (:func:`.union_loss.union_boundary_loss`)."""
    epochs: int | None = None
    """None keeps nnU-Net's 1000 epochs; likewise for the next two (250 and 50)."""
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None
    checkpoint_every: int | None = None
    """Save ``checkpoint_latest.pth`` every this many epochs (nnU-Net: 50)."""
    optimizer_kind: str = "sgd"
    """``sgd``: nnU-Net's SGD (momentum 0.99, Nesterov); ``adam``: AdamW, which short schedules need (with SGD the
    phantom runs stay at all-background for the first few hundred iterations; see docs/training.md)."""
    learning_rate: float | None = None
    """None keeps nnU-Net's 1e-2 (SGD); the Adam variants use 3e-3."""
    foreground_oversampling: float | None = None
    """Share of each batch's patches centred on a vertebra (None keeps nnU-Net's 0.33)."""
    rare_level_sampling: float = 0.0
    """Share of the training cases' draws spread equally over the annotated levels, each level's part over the cases
    that annotate it (:mod:`.sampling`); the rest is nnU-Net's uniform draw (0: nnU-Net's draw only). Levels that
    few cases annotate (S1, T11, T12 in partially annotated data) then come more often."""
    previous_stage_trainer: str | None = None
    """Trainer class whose ``predicted_next_stage`` feeds this stage (None: this class, as nnU-Net does)."""
    expected_num_classes: int | None = None
    """Refuse datasets with another number of output classes (the binary variants expect 2)."""
    validate_after_training: bool = True
    """False: ``nnUNetv2_train`` ends when training ends, without nnU-Net's final validation (a stage whose validation
    output nothing downstream reads, when ``spine-predict`` + ``spine-evaluate`` are run anyway); ``nnUNetv2_train
    ... --val`` still makes it afterwards. Stage 1 must validate: its ``predicted_next_stage`` output trains stage 2."""
    cpu_bfloat16: bool = False
    """True: on a CPU with native bfloat16 the networks compute in bfloat16 (autocast in their forward pass; weights,
    optimiser, loss and exported probabilities stay float32), as nnU-Net's mixed precision does on CUDA only. Ignored
    on CUDA, on CPUs without native bfloat16 and for networks other than the cascade's."""
    cpu_channels_last: bool = False
    """True: where the network trains in bfloat16 (:attr:`cpu_bfloat16`) on an x86 CPU with AMX or AVX512-BF16
    (:func:`~nnunet_ext.networks.precision.cpu_channels_last_preferred`), it trains on channels-last tensors
    (:func:`~nnunet_ext.networks.precision.set_cpu_channels_last`). Measured on a 2-core Xeon with AMX
    (docs/benchmarks.md, "Thirty-first session"): the recipe's stage 2 fits 17 % more iterations in its time budget
    (63 against 54 per epoch), its stage 1 is slower so (3D, 8-48 channels); on a 2-core AMD EPYC (Zen 4, no AMX) the
    stage-2 training step is 1.12-1.21x faster ("Thirty-seventh session"). Ignored elsewhere, and for a network with
    a strided 1x1 convolution from 2-15 channels, whose weight gradient oneDNN gets wrong in that layout
    (:func:`~nnunet_ext.networks.precision.channels_last_training_hazards`: the 8-96 and 6-72 widths); checkpoints are
    the same. On in the recipe's multiclass stage 2
    (:class:`~nnunet_ext.training.variants.nnUNetTrainerSpineFineCpu`)."""
    neighbour_slices: int = 0
    """2D stages: this many neighbouring sagittal slices each side come with each slice as extra image channels
    (:mod:`nnunet_ext.neighbours`; recorded in the model folder's plans.json, which ``spine-predict`` reads; nnU-Net's
    validation gets them too; ``nnUNetv2_predict`` does not stack them and fails on such a model)."""
    neighbour_mirror_probability: float = 0.0
    """2D stages with :attr:`neighbour_slices`: share of training patches whose neighbour slices swap sides
    (:class:`.augmentation.NeighbourSlicesMirror`: the left-right mirroring of a 2.5D input; 0: never; refused without
    neighbour slices)."""
    time_budget_bfloat16_s: float | None = None
    """Where the network trains in bfloat16 on the CPU (:attr:`cpu_bfloat16` on a CPU that has it natively), this
    budget (s) instead of :attr:`~nnunet_ext.training.time_budget.TimeBudget.time_budget_s`; None: the same budget
    everywhere. A float32-only CPU trains and predicts at 1.6-2.7x the cost, so a recipe sized for the whole pipeline's
    wall time needs a smaller budget there than where bfloat16 runs."""
    budget_fits: str = "iterations"
    """With a :attr:`~nnunet_ext.training.time_budget.TimeBudget.time_budget_s`: each epoch's iterations are fitted to
    it, the epochs and the learning-rate schedule stay."""
    network_features: tuple[int, ...] | None = None
    """The network's widths per stage (None keeps the plans'); one per stage of the plans' network, recorded in the
    model folder's plans.json, which prediction builds the network from (:attr:`network_features_float32` may take
    its place)."""
    network_features_float32: tuple[int, ...] | None = None
    """Where the network trains in float32 on the CPU (:attr:`cpu_bfloat16` off, or a CPU without native bfloat16),
    these widths instead of :attr:`network_features` (None: the same widths everywhere). A network sized for bfloat16
    costs 1.6-2.7x per iteration in float32, so a recipe inside a wall-time budget may do better there with a
    narrower one and more iterations. Once a fold of the model folder holds a checkpoint, every fold, a resumed run
    (``--c``) and a validation (``--val``) keep the widths that folder's plans.json records, whatever this machine
    would choose, so the folds and checkpoints of one model always agree."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _NNUNET_DEFAULT_DEVICE):
        classes = len([name for name in dataset_json["labels"] if name.lower() != "ignore"])
        if self.expected_num_classes is not None and classes != self.expected_num_classes:
            raise RuntimeError(f"{type(self).__name__} expects {self.expected_num_classes} output classes, the dataset "
                               f"has {classes}: use the matching trainer (binary datasets: spine-convert --binary)")
        super().__init__(plans, configuration, fold, dataset_json, device)
        for attribute, value in (("num_epochs", self.epochs), ("num_iterations_per_epoch", self.iterations_per_epoch),
                                 ("num_val_iterations_per_epoch", self.val_iterations_per_epoch),
                                 ("save_every", self.checkpoint_every), ("initial_lr", self.learning_rate),
                                 ("oversample_foreground_percent", self.foreground_oversampling)):
            if value is not None:
                setattr(self, attribute, value)
        self._record_neighbour_slices(configuration)
        self._record_network_features(configuration)
        if self.is_cascaded and self.previous_stage_trainer:
            self.folder_with_segs_from_previous_stage = previous_stage_folder(
                nnunet_folder("nnUNet_results"), self.plans_manager.dataset_name, self.previous_stage_trainer,
                self.plans_manager.plans_name, self.configuration_manager.previous_stage_name, configuration)

    def _record_neighbour_slices(self, configuration: str) -> None:
        """Write :attr:`neighbour_slices` into the plans (the model folder's plans.json, which prediction reads, and
        this configuration's entry, which builds the network): always for a 2D stage, so plans that carry another
        count (a model folder's) cannot widen a network the data is not stacked for."""
        k = self.neighbour_slices
        if len(self.configuration_manager.patch_size) != 2:
            if k:
                raise RuntimeError(f"{type(self).__name__}: neighbour_slices needs a 2D configuration, not "
                                   f"{configuration!r}")
            return
        if k and any(self.configuration_manager.use_mask_for_norm):
            raise RuntimeError(f"{type(self).__name__}: neighbour_slices with use_mask_for_norm is not supported "
                               "(nnU-Net's masking addresses image channels by index)")
        for entry in self._configuration_entries(configuration):
            record_neighbour_slices(entry, k)

    def _record_network_features(self, configuration: str) -> None:
        """Write the widths of :meth:`chosen_network_features` into the plans (the model folder's plans.json and
        this configuration's entry, as for the neighbour slices)."""
        features = self.chosen_network_features()
        if features is None:
            return
        try:
            set_features_per_stage(self._configuration_entries(configuration), self.configuration_manager, features)
        except ValueError as error:
            raise RuntimeError(f"{type(self).__name__} ({configuration!r}): {error}") from error

    def chosen_network_features(self) -> tuple[int, ...] | None:
        """:attr:`network_features_float32` where that is set and the network (the cascade's) will train in float32
        on the CPU, else :attr:`network_features` (None: the plans' widths); with :attr:`network_features_float32`
        set, the widths the model folder was trained with where a fold there holds a checkpoint."""
        if self.network_features_float32 is None:
            return self.network_features
        trained = None if self.output_folder_base is None else trained_network_features(
            Path(self.output_folder_base), self.configuration_name)
        if trained is not None:
            return trained
        if self.device.type == "cpu" and not (self.cpu_bfloat16 and cpu_bfloat16_supported()):
            return tuple(self.network_features_float32)
        return self.network_features

    def _record_cpu_precision(self) -> None:
        """Switch on :attr:`cpu_bfloat16` where it applies and record the precision the network trains in on the CPU
        (the model folder's plans.json: ``spine-predict``'s default precision for this model); always, so plans that
        carry another record cannot pass it on."""
        used = False
        if self.cpu_bfloat16 and self.device.type == "cpu":
            used = set_cpu_autocast(self.network, torch.bfloat16)
            self.print_to_log_file(f"bfloat16 autocast on the CPU: {'on' if used else 'not available, float32'}")
            if used and self.cpu_channels_last and cpu_channels_last_preferred():
                hazards = channels_last_training_hazards(self.network)
                if hazards:  # oneDNN's weight gradient of such a convolution crashes or is wrong on channels-last
                    self.print_to_log_file(
                        "channels-last tensors off: oneDNN's weight gradient of a strided 1x1 convolution with fewer "
                        f"than {CHANNELS_LAST_SAFE_INPUT_CHANNELS} input channels is unsafe in that layout "
                        f"(uxlfoundation/oneDNN issue 6035): {', '.join(hazards)}")
                else:
                    set_cpu_channels_last(self.network, True)
                    self.print_to_log_file("channels-last tensors on the CPU (AMX or AVX512-BF16)")
        for entry in self._configuration_entries(self.configuration_name):
            record_cpu_precision(entry, "bfloat16" if used else "float32")

    def configured_budget_s(self) -> float | None:
        """:attr:`time_budget_bfloat16_s` where that is set and the network trains in bfloat16 on the CPU (as
        :meth:`initialize` recorded it in the plans), else the class's
        :attr:`~nnunet_ext.training.time_budget.TimeBudget.time_budget_s`."""
        if (self.time_budget_bfloat16_s is not None
                and trained_cpu_precision(self.configuration_manager.configuration) == "bfloat16"):
            return float(self.time_budget_bfloat16_s)
        return super().configured_budget_s()

    def _configuration_entries(self, configuration: str) -> tuple[dict, dict]:
        """This configuration's dict in the plans (saved as the model folder's plans.json) and the resolved one of
        the configuration manager (which builds the network)."""
        return self.plans_manager.plans["configurations"][configuration], self.configuration_manager.configuration

    def initialize(self) -> None:
        was_initialized = self.was_initialized
        seed = None if was_initialized else training_seed()
        if seed is not None:  # before the network's weights are drawn
            seed_everything(stream_seed(seed, self.local_rank))
        super().initialize()
        if not was_initialized:
            self._record_cpu_precision()
            # from nnU-Net's count to the network's (build_network_architecture widened it)
            self.num_input_channels = stacked_input_channels(self.num_input_channels, self.configuration_manager)
            if self.neighbour_slices:  # training, per-epoch and final validation read the cases through it
                self.dataset_class = NeighbourSlicesDatasetClass(self.dataset_class, self.neighbour_slices)
        if seed is not None:  # the budget as the recorded precision chooses it
            reasons = unrepeatable_because(self.device.type, self.budget_s(), augmentation_processes())
            self.print_to_log_file(f"{SEED_VARIABLE}={seed}: Python's, NumPy's and torch's generators seeded" + (
                f"; the run will not repeat exactly: {'; '.join(reasons)}" if reasons else ""))

    def on_train_start(self) -> None:
        seed = training_seed()
        if seed is not None and self.current_epoch > 0:  # --c: a stream of this epoch's own, not epoch 0's again
            seed_everything(stream_seed(seed, self.local_rank, self.current_epoch))
        super().on_train_start()

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        if self.rare_level_sampling:
            classes = {case: annotated_classes(self.preprocessed_dataset_folder, case)
                       for case in dataset_tr.identifiers}
            drawn = replicated_cases(level_balanced_case_weights(classes, self.rare_level_sampling))
            draw_training_cases_from(dataset_tr, drawn)
            shares = ", ".join(f"{value}: {share:.2f}" for value, share in class_shares(drawn, classes).items())
            self.print_to_log_file(f"rare_level_sampling {self.rare_level_sampling}: {len(classes)} training cases "
                                   f"drawn from a list of {len(drawn)}; share of draws annotating each class: {shares}")
        return dataset_tr, dataset_val

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        """nnU-Net's network from the plans; ``num_input_channels`` is nnU-Net's count
        (``determine_num_input_channels``), widened here by the neighbour slices the plans record
        (:attr:`neighbour_slices`)."""
        channels = stacked_input_channels(num_input_channels, configuration_manager)
        return nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, channels,
                                                        num_output_channels, enable_deep_supervision)

    def on_train_end(self) -> None:
        super().on_train_end()
        self._trained_in_this_process = True

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        if not self.validate_after_training and getattr(self, "_trained_in_this_process", False):
            self.print_to_log_file(f"{type(self).__name__}: final validation skipped (validate_after_training is "
                                   "False); nnUNetv2_train with --val makes it")
            return
        super().perform_actual_validation(save_probabilities)

    def configure_optimizers(self):
        if self.optimizer_kind == "sgd":
            return super().configure_optimizers()
        if self.optimizer_kind != "adam":
            raise ValueError(f"{type(self).__name__}.optimizer_kind must be 'sgd' or 'adam', "
                             f"not {self.optimizer_kind!r}")
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, poly_lr_scheduler(optimizer, self.initial_lr, self.num_epochs)

    @property
    def _has_auxiliary_output(self) -> bool:
        return bool(self.configuration_manager.network_arch_init_kwargs.get("auxiliary_output"))

    def _left_right_mirror_axes(self) -> tuple[int, ...]:
        """Mirroring axes in the network's spatial axes: left-right only, where it is an axis of the patch."""
        cascade = CascadeMetadata.from_plans(self.plans_manager.plans)
        lr_axis = cascade.left_right_axis_after_transpose if cascade else None
        dim = len(self.configuration_manager.patch_size)
        if lr_axis is None or dim == 2:  # 2D patches are sagittal slices: left-right is not in the plane
            return ()
        return (int(lr_axis),)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):  # noqa: N802 - nnU-Net's name
        patch_size = list(self.configuration_manager.patch_size)
        limit = math.radians(self.rotation_max_deg)
        rotation = (-limit, limit)
        mirror_axes = self._left_right_mirror_axes()
        initial = augmentation_patch_size(patch_size, rotation, self.scaling_range)
        self.print_to_log_file(f"spine augmentation: rotation +-{self.rotation_max_deg} deg, scaling "
                               f"{self.scaling_range}, mirror axes {mirror_axes}")
        # nnU-Net's predictor expects None, not an empty tuple, for "no test-time mirroring"
        self.inference_allowed_mirroring_axes = mirror_axes or None
        return rotation, False, initial, mirror_axes

    @classmethod
    def get_training_transforms(cls, *args, **kwargs):
        """nnU-Net's training transforms with the scaling range narrowed to :attr:`scaling_range`, without
        :attr:`dropped_transforms`, the cranial field-of-view cut of :attr:`cranial_crop_probability` after the
        spatial transform (level datasets only), and the contrast inversion of
        :attr:`contrast_inversion_probability` (before nnU-Net's intensity transforms) and, for a 2.5D stage, the
        left-right mirroring of :attr:`neighbour_mirror_probability` (after the spatial transform)."""
        transforms = super().get_training_transforms(*args, **kwargs)
        set_spatial_scaling(transforms, cls.scaling_range)
        if cls.dropped_transforms:
            drop_transforms(transforms, cls.dropped_transforms)
        if cls.contrast_inversion_probability > 0:
            insert_after_spatial(transforms, ContrastInversion(cls.contrast_inversion_probability))
        if cls.neighbour_mirror_probability > 0 and not cls.neighbour_slices:
            raise ValueError(f"{cls.__name__}: neighbour_mirror_probability needs neighbour_slices (a 2.5D stage); "
                             "set it to 0 for a stage without neighbour slices")
        if cls.neighbour_slices:
            synchronize_intensity_channels(transforms)
            if cls.neighbour_mirror_probability > 0:
                insert_after_spatial(transforms, NeighbourSlicesMirror(cls.neighbour_slices,
                                                                       cls.neighbour_mirror_probability))
        levels = [v for v in kwargs.get("foreground_labels") or () if v != kwargs.get("ignore_label")]
        if cls.cranial_crop_probability > 0 and len(levels) > 1 and not kwargs.get("regions"):
            insert_after_spatial(transforms, CranialFieldOfViewCrop(sorted(levels), cls.cranial_crop_probability,
                                                                    cls.cranial_crop_max_fraction))
        return transforms

    def _get_deep_supervision_scales(self):
        scales = super()._get_deep_supervision_scales()
        if scales is not None and self._has_auxiliary_output:
            scales = [*scales, [1.0] * len(self.configuration_manager.patch_size)]
        return scales

    def _build_loss(self):
        """nnU-Net's loss, plus (level-labelled data with an ignore label) what the unannotated region is known not to
        be (:mod:`.partial_loss`), plus (more than one class, :attr:`union_dice_weight`) the Dice of "any vertebra"
        and (:attr:`union_boundary_weight`) its cross-entropy near the edge, plus the auxiliary head's output in the
        deep-supervision weights."""
        inner, weights = unwrap_deep_supervision(super()._build_loss())
        if self._levels_with_ignore_label and (self.unannotated_level_weight or self.adjacent_level_weight):
            inner = UnannotatedLevelsLoss(inner, self.label_manager.ignore_label, self.unannotated_level_weight,
                                          **self._presence_arguments())
        if self._union_term_on("union_dice_weight"):
            inner = UnionDiceLoss(inner, self.union_dice_weight, self.label_manager.ignore_label)
        if self._union_term_on("union_boundary_weight"):
            inner = UnionBoundaryLoss(inner, self.union_boundary_weight, self.label_manager.ignore_label,
                                      self.union_boundary_width, self.union_boundary_partial_labels)
        if weights is None:
            return inner
        if self._has_auxiliary_output:
            outputs = len(self._get_deep_supervision_scales()) - 1  # decoder outputs, the auxiliary one last
            decoder = np.array([1 / (2 ** i) for i in range(outputs)])
            decoder[-1] = 1e-6 if self.is_ddp else 0.0  # as nnU-Net: the lowest resolution is not supervised
            weights = [*(decoder / decoder.sum()).tolist(), self.aux_loss_weight]
        return deep_supervision_loss(inner, weights)

    def _union_term_on(self, weight_name: str) -> bool:
        """Whether the term of "any vertebra" weighted by the class attribute ``weight_name`` applies: a non-zero
        weight and more than one class (a single class's loss already is the union's). Refused for region-based data
        (sigmoid outputs, no background probability)."""
        if not getattr(self, weight_name) or len(self._class_names) <= 1:
            return False
        if self.label_manager.has_regions:
            raise RuntimeError(f"{type(self).__name__}: {weight_name} needs label-based training (softmax); this "
                               f"dataset is region-based: use a variant with {weight_name} = 0")
        return True

    def _presence_arguments(self) -> dict:
        """The presence term's arguments for :class:`.partial_loss.UnannotatedLevelsLoss` (none when it is off)."""
        if not self.adjacent_level_weight:
            return {}
        patch = list(self.configuration_manager.patch_size)
        if len(patch) != 3:
            raise RuntimeError(f"{type(self).__name__}: adjacent_level_weight needs a 3D configuration")
        labels = self.dataset_json["labels"]
        levels = sorted(self._class_names, key=level_rank)
        asked = None if self.adjacent_levels is None else [labels[n] for n in self.adjacent_levels if n in labels]
        return {"presence_weight": self.adjacent_level_weight, "ordered_classes": [labels[n] for n in levels],
                "patch_size": patch, "spacing": list(self.configuration_manager.spacing), "asked_classes": asked}

    @property
    def _class_names(self) -> list[str]:
        """The dataset's class names (dataset.json ``labels`` without background and ignore)."""
        return [name for name in self.dataset_json["labels"] if name.lower() not in ("background", "ignore")]

    @property
    def _levels_with_ignore_label(self) -> bool:
        """The dataset has an ignore label and its classes are vertebral levels (names of the level scheme, no
        regions): each level a case annotates is annotated completely."""
        labels = self.dataset_json["labels"]
        names = self._class_names
        return ("ignore" in labels and bool(names) and all(isinstance(labels[n], int) for n in names)
                and all(is_known_level(n) for n in names))


class nnUNetTrainerSpineCoarse(nnUNetTrainerSpine):  # noqa: N801
    """Stage 1 (``3d_lowres``): the coarse 3D DeepLabV3 network with the GCN label-relation head."""


class nnUNetTrainerSpineFine(nnUNetTrainerSpine):  # noqa: N801
    """Stage 2 (``2d_cascade``): the fine 2D residual U-Net on sagittal slices plus stage 1's segmentation.

    The stage-1 trainer of a stage-2 class is its name with ``Fine`` read as ``Coarse`` (``...FineCpu`` reads the
    predictions of ``...CoarseCpu``), so a pair of variants is named once; a subclass may still set
    :attr:`previous_stage_trainer` itself."""

    previous_stage_trainer = "nnUNetTrainerSpineCoarse"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "previous_stage_trainer" not in cls.__dict__:
            cls.previous_stage_trainer = cls.__name__.replace("Fine", "Coarse", 1)
