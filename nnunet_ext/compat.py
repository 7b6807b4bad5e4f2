"""The one module that touches nnU-Net internals (nnunetv2 2.8.1 is pinned: these are the names we rely on).

``tests/test_compat.py`` checks every name used here, so an nnunetv2 upgrade fails there first.
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .neighbours import NeighbourSlicesView, stack_neighbours
from .plans import CPU_PRECISIONS, neighbour_slices, trained_cpu_precision

NNUNET_VERSION = "2.8.1"


def nnunet_version() -> str:
    from importlib.metadata import version

    return version("nnunetv2")


def augmentation_processes() -> int:
    """The augmentation worker processes nnU-Net's training will start (``get_allowed_n_proc_DA``: the
    ``nnUNet_n_proc_DA`` environment variable where set, capped at the core count; 0: augmentation in the training
    process)."""
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    return int(get_allowed_n_proc_DA())


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


def drop_transforms(transforms, class_names: Sequence[str]) -> int:
    """Remove the transforms of the named batchgeneratorsv2 classes (or the ``RandomTransform`` wrapping one) from the
    composed training transforms ``nnUNetTrainer.get_training_transforms`` returns; returns how many. A name that
    none of them has raises (nnU-Net renamed or removed it: the option would silently do nothing)."""
    listed = transforms.transforms
    names = [type(_unwrapped(t)).__name__ for t in listed]
    dropped = set(class_names)
    unknown = sorted(dropped - set(names))
    if unknown:
        raise ValueError(f"nnU-Net's training transforms hold no {', '.join(unknown)} (they hold {', '.join(names)})")
    listed[:] = [t for t, name in zip(listed, names, strict=True) if name not in dropped]
    return len(names) - len(listed)


def _unwrapped(transform):
    """The transform a batchgeneratorsv2 ``RandomTransform`` applies with its probability, or ``transform`` itself."""
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    return transform.transform if isinstance(transform, RandomTransform) else transform


def insert_after_spatial(transforms, transform) -> int:
    """Put ``transform`` right after the ``SpatialTransform`` of the composed training transforms
    ``nnUNetTrainer.get_training_transforms`` returns (before the intensity transforms, and before nnU-Net turns the
    padding value -1 of the segmentation into background); returns its index."""
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    listed = transforms.transforms
    index = next(n for n, t in enumerate(listed) if isinstance(t, SpatialTransform)) + 1
    listed.insert(index, transform)
    return index


def augmentation_patch_size(patch_size, rotation, scaling) -> list[int]:
    """The larger patch nnU-Net samples before rotating/scaling so that the final patch has no empty corners."""
    from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size

    return list(get_patch_size(patch_size, rotation, rotation, rotation, scaling))


def _architecture(configuration_manager) -> dict:
    """A configuration's ``architecture`` entry as nnU-Net resolved it (``inherits_from`` followed)."""
    return {"network_class_name": configuration_manager.network_arch_class_name,
            "arch_kwargs": configuration_manager.network_arch_init_kwargs,
            "_kw_requires_import": configuration_manager.network_arch_init_kwargs_req_import}


def set_features_per_stage(entries: Sequence[dict], configuration_manager, widths: Sequence[int]) -> None:
    """Write a network's widths per stage (``features_per_stage`` of the ``architecture`` entry's ``arch_kwargs``)
    into plans configuration dicts (``entries``, e.g. the plans' own entry and ``configuration_manager``'s resolved
    one, which builds the network); an entry that inherits its network gets a copy of the resolved ``architecture``.
    Raises ValueError unless there is one positive width per stage of the planned network."""
    widths = [int(w) for w in widths]
    current = configuration_manager.network_arch_init_kwargs.get("features_per_stage")
    if current is None or len(current) != len(widths) or min(widths) < 1:
        raise ValueError(f"network_features {tuple(widths)} must give a positive width for each of the network's "
                         f"stages ({current})")
    for entry in entries:
        if "architecture" not in entry:  # a configuration that inherits its network from another
            entry["architecture"] = copy.deepcopy(configuration_manager.configuration["architecture"])
        entry["architecture"]["arch_kwargs"]["features_per_stage"] = widths


def trained_network_features(model_folder: Path, configuration: str) -> tuple[int, ...] | None:
    """The widths per stage a model folder's plans.json records for ``configuration`` (inheritance resolved as for
    :func:`load_predictor`, which builds the network from them) where a fold there holds a checkpoint (nnU-Net
    writes plans.json when a fold starts training); None otherwise."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_file = model_folder / "plans.json"
    if not plans_file.is_file() or not any(model_folder.glob("fold_*/checkpoint_*.pth")):
        return None
    plans_manager = PlansManager(json.loads(plans_file.read_text()))
    if configuration not in plans_manager.available_configurations:
        return None
    widths = plans_manager.get_configuration(configuration).network_arch_init_kwargs.get("features_per_stage")
    return tuple(int(w) for w in widths) if widths else None


def image_channels(configuration) -> int:
    """Image channels of a configuration (a ``ConfigurationManager`` or its dict): nnU-Net plans one normalisation
    scheme per channel."""
    return len(getattr(configuration, "configuration", configuration)["normalization_schemes"])


def _network_input_channels(plans_manager, configuration, dataset_json: dict) -> int:
    """Input channels of a trained stage's network: nnU-Net's count, widened by the neighbour slices its plans
    record (:func:`stacked_input_channels`)."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    return stacked_input_channels(determine_num_input_channels(plans_manager, configuration, dataset_json),
                                  configuration)


def stacked_input_channels(num_input_channels: int, configuration) -> int:
    """A network's input channels given nnU-Net's count (``determine_num_input_channels``: image channels, plus one
    per foreground label for a cascade stage) when the configuration (a ``ConfigurationManager`` or its dict)
    records ``k`` neighbour slices: each image channel then comes ``2k + 1`` times."""
    entry = getattr(configuration, "configuration", configuration)
    return num_input_channels + 2 * neighbour_slices(entry) * image_channels(entry)


class NeighbourSlicesDataset:
    """An nnU-Net dataset (``nnUNetBaseDataset``) whose ``load_case`` returns each case's image as a
    :class:`~nnunet_ext.neighbours.NeighbourSlicesView` with ``k`` neighbour slices each side (nnU-Net's 2D data
    loader crops it like the array it wraps; its validation reads it whole with ``data[:]``); everything else is the
    wrapped dataset's."""

    def __init__(self, dataset, k: int) -> None:
        self.dataset, self.k = dataset, int(k)

    def __getattr__(self, name: str):
        if name in ("dataset", "k") or name.startswith("__"):  # unpickling: not set yet
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def load_case(self, identifier: str):
        data, seg, seg_previous, properties = self.dataset.load_case(identifier)
        return NeighbourSlicesView(data, self.k), seg, seg_previous, properties


class NeighbourSlicesDatasetClass:
    """Stands in for a trainer's ``dataset_class`` (an ``nnUNetBaseDataset`` subclass): called as nnU-Net calls the
    class (training, per-epoch and final validation), it returns a :class:`NeighbourSlicesDataset`; the class's
    static methods (``get_identifiers``, ``unpack_dataset``) are the wrapped class's."""

    def __init__(self, dataset_class, k: int) -> None:
        self.dataset_class, self.k = dataset_class, int(k)

    def __getattr__(self, name: str):
        if name in ("dataset_class", "k") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset_class, name)

    def __call__(self, *args, **kwargs) -> NeighbourSlicesDataset:
        return NeighbourSlicesDataset(self.dataset_class(*args, **kwargs), self.k)


def annotated_classes(preprocessed_folder: str | Path, identifier: str) -> list[int]:
    """The foreground classes a preprocessed case annotates: those with any location in the ``class_locations`` of
    its properties (``<identifier>.pkl``, which nnU-Net's preprocessing writes for foreground sampling)."""
    from batchgenerators.utilities.file_and_folder_operations import load_pickle

    locations = load_pickle(str(Path(preprocessed_folder) / f"{identifier}.pkl"))["class_locations"]
    return sorted(int(k) for k, where in locations.items() if isinstance(k, int) and len(where))


def draw_training_cases_from(dataset, identifiers: Sequence[str]) -> None:
    """Make nnU-Net's training data loader draw its cases uniformly from ``identifiers`` (repeats weight a case):
    ``nnUNetDataLoader`` draws from the ``identifiers`` of the dataset it is built on."""
    unknown = sorted(set(identifiers) - set(dataset.identifiers))
    if unknown:
        raise ValueError(f"cases not in the training dataset: {unknown}")
    dataset.identifiers = list(identifiers)


def synchronize_intensity_channels(transforms) -> int:
    """Make nnU-Net's intensity transforms that act on every channel (noise, brightness, contrast, gamma) draw
    one set of random parameters for all image channels (``synchronize_channels``), so neighbour-slice channels get
    the same multiplier, contrast factor and gamma as the slice they surround (each still applied around its own
    channel's mean and range); returns how many were changed. With several modalities they are synchronised across
    modalities too. Those applied to a random subset of channels (blur and simulated low resolution,
    ``p_per_channel`` 0.5) stay per channel: batchgeneratorsv2 fails on a synchronised one that picks no channel."""
    changed = 0
    for transform in getattr(transforms, "transforms", []):
        inner = _unwrapped(transform)
        if getattr(inner, "synchronize_channels", True) is False and getattr(inner, "p_per_channel", 1) == 1:
            inner.synchronize_channels = True
            changed += 1
    return changed


PRECISIONS = ("auto", *CPU_PRECISIONS)
"""Compute precisions of :func:`load_predictor` on the CPU (``auto``: the one the model was trained in, where the
CPU has it natively)."""

CPU_LAYOUTS = ("auto", "contiguous", "channels-last")
"""Tensor layouts of :func:`load_predictor` on the CPU (``auto``: channels-last where a network computes in bfloat16
on an x86 CPU with AMX or AVX512-BF16, contiguous otherwise)."""


def load_predictor(model_folder: str | Path, folds: Sequence[int | str] | None = None,
                   checkpoint: str = "checkpoint_final.pth", device: str = "cpu", mirroring: bool = True,
                   tile_step_size: float = 0.5, precision: str = "auto", cpu_layout: str = "auto"):
    """An ``nnUNetPredictor`` holding one trained model folder (every fold's weights, ``folds`` None: each fold with
    ``checkpoint``). A checkpoint of the project's trainers (``nnUNetTrainerSpine*``, whose networks come from the
    plans alone) is loaded through ``manual_initialization``, skipping nnU-Net's trainer lookup (which imports every
    trainer module: seconds per command); any other trainer goes through ``initialize_from_trained_model_folder``.

    ``precision="bfloat16"`` runs the project's networks in bfloat16 autocast on a CPU with native bfloat16
    (:mod:`nnunet_ext.networks.precision`; raises ValueError on a CPU without it); ``"auto"`` (the default) does so
    for a model trained in bfloat16 on the CPU (the model folder's plans.json records it,
    :func:`~nnunet_ext.plans.trained_cpu_precision`) where the CPU has it natively, float32 otherwise. On CUDA
    nnU-Net's predictor uses its own float16 autocast either way. The predictor's ``cpu_precision`` attribute says
    which precision its network computes in on the CPU.

    ``cpu_layout``: the project's networks on the CPU (not on CUDA, not nnU-Net's own networks, whose layout this
    leaves as it is) run on ``channels-last`` tensors or as given
    (``contiguous``); ``auto`` picks channels-last for a bfloat16 network on an x86 CPU with AMX or
    AVX512-BF16, where it is faster (:func:`~nnunet_ext.networks.precision.cpu_channels_last_preferred`;
    :func:`~nnunet_ext.networks.precision.set_cpu_channels_last`). The predictor's ``cpu_layout`` attribute says
    which one its network runs in."""
    import json

    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_ext.networks.precision import cpu_channels_last_preferred, set_cpu_autocast, set_cpu_channels_last

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    if cpu_layout not in CPU_LAYOUTS:
        raise ValueError(f"cpu_layout {cpu_layout!r}: one of {', '.join(CPU_LAYOUTS)}")
    folder = Path(model_folder)
    torch_device = torch.device(device)
    predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=torch_device.type == "cuda", device=torch_device,
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    folds = list(folds) if folds else nnUNetPredictor.auto_detect_available_folds(str(folder), checkpoint)
    if not folds:
        raise FileNotFoundError(f"{folder}: no fold_*/{checkpoint}")
    checkpoints = [torch.load(folder / f"fold_{f}" / checkpoint, map_location="cpu", weights_only=False)
                   for f in folds]
    first = checkpoints[0]
    predictor.cpu_precision = "float32"
    predictor.cpu_layout = "contiguous"
    if not str(first["trainer_name"]).startswith("nnUNetTrainerSpine"):
        predictor.initialize_from_trained_model_folder(str(folder), tuple(folds), checkpoint)
        return predictor
    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans_manager = PlansManager(json.loads((folder / "plans.json").read_text()))
    configuration = plans_manager.get_configuration(first["init_args"]["configuration"])
    label_manager = plans_manager.get_label_manager(dataset_json)
    heads = label_manager.num_segmentation_heads
    network = network_from_architecture(_architecture(configuration),
                                        _network_input_channels(plans_manager, configuration, dataset_json), heads,
                                        deep_supervision=False)
    parameters = [c["network_weights"] for c in checkpoints]
    network.load_state_dict(parameters[0])
    predictor.manual_initialization(network, plans_manager, configuration, parameters, dataset_json,
                                    first["trainer_name"], first.get("inference_allowed_mirroring_axes"))
    if precision == "auto":
        if (torch_device.type == "cpu" and trained_cpu_precision(configuration.configuration) == "bfloat16"
                and set_cpu_autocast(predictor.network, torch.bfloat16)):
            predictor.cpu_precision = "bfloat16"
    elif precision == "bfloat16" and torch_device.type == "cpu":
        if not set_cpu_autocast(predictor.network, torch.bfloat16):
            raise ValueError("bfloat16 needs a CPU with native bfloat16 (AVX512-BF16 or AMX); this one has none: use "
                             "float32")
        predictor.cpu_precision = "bfloat16"
    channels_last = cpu_layout == "channels-last" or (
        cpu_layout == "auto" and predictor.cpu_precision == "bfloat16" and cpu_channels_last_preferred())
    if torch_device.type == "cpu" and channels_last and set_cpu_channels_last(predictor.network, True):
        predictor.cpu_layout = "channels-last"
    return predictor


def preprocess_case(predictor, image_czyx, spacing_zyx: Sequence[float], previous_stage_zyx=None):
    """nnU-Net's preprocessing of one case in this process (no worker pool): ``image_czyx`` (channels, then the
    axes of ``SimpleITK.GetArrayFromImage``) and its spacing in that order, as nnU-Net's ``SimpleITKIO`` reads
    them; for a cascade stage the previous stage's segmentation (same grid) goes in one-hot after the image
    channels, as nnU-Net's data iterators do; a stage trained with neighbour slices gets them as image channels
    (:func:`~nnunet_ext.neighbours.stack_neighbours`). Returns ``(data tensor, properties)``.

    The image goes through ``run_case_npy`` alone and the previous stage's segmentation through the same transpose,
    crop and segmentation resampling afterwards: nnU-Net passes it to ``run_case_npy`` as the case's segmentation,
    which also samples foreground locations for training (seconds on a 381 x 381 x 77 volume) and marks the
    background outside the nonzero region -1; the one-hot of the foreground labels is the same either way."""
    import numpy as np
    import torch
    from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice
    from nnunetv2.utilities.label_handling.label_handling import convert_labelmap_to_one_hot

    configuration = predictor.configuration_manager
    transpose = predictor.plans_manager.transpose_forward
    preprocessor = configuration.preprocessor_class(verbose=False)
    properties = {"spacing": [float(s) for s in spacing_zyx]}
    data, _, properties = preprocessor.run_case_npy(np.asarray(image_czyx), None, properties,
                                                    predictor.plans_manager, configuration, predictor.dataset_json)
    if previous_stage_zyx is not None:
        segmentation = np.asarray(previous_stage_zyx, dtype=np.float32)[None]
        segmentation = segmentation.transpose([0, *[a + 1 for a in transpose]])
        segmentation = segmentation[(slice(None), *bounding_box_to_slice(properties["bbox_used_for_cropping"]))]
        original = [properties["spacing"][a] for a in transpose]
        target = list(configuration.spacing)
        if len(target) < len(original):  # a 2D configuration keeps the spacing between slices
            target = [original[0], *target]
        segmentation = configuration.resampling_fn_seg(segmentation, data.shape[1:], original, target)
        data = np.vstack((data, convert_labelmap_to_one_hot(segmentation[0], predictor.label_manager.foreground_labels,
                                                            data.dtype)))
    data = stack_neighbours(data, image_channels(configuration), neighbour_slices(configuration.configuration))
    return torch.from_numpy(data).to(dtype=torch.float32, memory_format=torch.contiguous_format), properties


def predict_full_window(predictor, data):
    """nnU-Net's sliding-window logits of ``data`` (as :func:`preprocess_case` returns it), averaged over the
    predictor's folds, with torch's thread count left as it is (nnU-Net's own loop caps it at
    ``nnUNet_def_n_proc``)."""
    return _average_over_folds(
        predictor, lambda: predictor.predict_sliding_window_return_logits(data).to("cpu", dtype=data.dtype))


def _fold_loaders(predictor) -> list:
    """One callable per fold of the predictor that loads that fold's weights into its network (nnU-Net keeps every
    fold's state dict in ``list_of_parameters`` and one network)."""
    return [lambda parameters=parameters: predictor.network.load_state_dict(parameters)
            for parameters in predictor.list_of_parameters]


def _average_over_folds(predictor, predict):
    """``predict()`` with each of the predictor's fold weights loaded into its network, averaged (as nnU-Net's
    ``predict_logits_from_preprocessed_data`` ensembles folds)."""
    total = None
    loaders = _fold_loaders(predictor)
    for load in loaders:
        load()
        logits = predict()
        total = logits if total is None else total + logits
    return total / len(loaders)


def _linear_resample(predictor, logits, properties: dict):
    """``logits`` resampled to the case's cropped original shape with torch's (tri)linear interpolation, when the
    configuration resamples probabilities with nnU-Net's default (``resample_data_or_seg_to_shape``, order 1, no
    separate z): the same half-voxel mapping and edge clamping as the scikit-image resize nnU-Net calls (equal to
    about 1e-5), 5-10x faster on 2 cores. None otherwise (nnU-Net then resamples)."""
    import torch
    from nnunetv2.preprocessing.resampling.default_resampling import (
        ANISO_THRESHOLD,
        determine_do_sep_z_and_axis,
        resample_data_or_seg_to_shape,
    )

    configuration = predictor.configuration_manager
    function = configuration.resampling_fn_probabilities  # functools.partial of the function with the plans' kwargs
    kwargs = dict(function.keywords)
    target = [int(n) for n in properties["shape_after_cropping_and_before_resampling"]]
    if (function.func is not resample_data_or_seg_to_shape or kwargs.get("order") != 1
            or kwargs.get("is_seg") or len(configuration.spacing) != 3 or list(logits.shape[1:]) == target):
        return None
    original = [properties["spacing"][i] for i in predictor.plans_manager.transpose_forward]
    separate_z, _ = determine_do_sep_z_and_axis(kwargs.get("force_separate_z"), configuration.spacing, original,
                                                kwargs.get("separate_z_anisotropy_threshold", ANISO_THRESHOLD))
    if separate_z:
        return None
    logits = torch.as_tensor(logits, dtype=torch.float32)
    return torch.nn.functional.interpolate(logits[None], size=target, mode="trilinear", align_corners=False)[0]


def logits_to_segmentation(predictor, logits, properties):
    """A case's segmentation (array order of its image) from preprocessed-space logits: nnU-Net's resampling back
    (:func:`_linear_resample` where it applies, which leaves nnU-Net's own resampling nothing to do), argmax and
    paste into the uncropped grid."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    resampled = _linear_resample(predictor, logits, properties)
    return convert_predicted_logits_to_segmentation_with_correct_shape(
        logits if resampled is None else resampled, predictor.plans_manager, predictor.configuration_manager,
        predictor.label_manager, properties)


@dataclass(frozen=True)
class StageGeometry:
    """What a loaded stage's preprocessed array looks like (axes after nnU-Net's ``transpose_forward``)."""

    image_channels: int
    """Channels that are image (neighbour slices included); a cascade stage's one-hot previous-stage channels
    follow."""
    num_classes: int
    patch_size: tuple[int, ...]
    spacing_mm: tuple[float, ...]
    """Voxel size along each preprocessed axis (a 2D stage keeps the image's spacing along the slice axis)."""
    source_axes: tuple[int, ...]
    """For each preprocessed axis, the axis of the image's array it comes from (nnU-Net's ``transpose_forward``)."""


def stage_geometry(predictor, properties: dict) -> StageGeometry:
    """:class:`StageGeometry` of a predictor for a case preprocessed with ``properties`` (:func:`preprocess_case`)."""
    configuration = predictor.configuration_manager
    transposed = [properties["spacing"][i] for i in predictor.plans_manager.transpose_forward]
    spacing = list(configuration.spacing)
    if len(spacing) < len(transposed):
        spacing = [transposed[0], *spacing]
    channels = stacked_input_channels(image_channels(configuration), configuration)  # neighbour slices included
    return StageGeometry(channels, predictor.label_manager.num_segmentation_heads,
                         tuple(int(p) for p in configuration.patch_size), tuple(float(s) for s in spacing),
                         tuple(int(a) for a in predictor.plans_manager.transpose_forward))


def slab_tiles(predictor, data, batch: int, layout: str = "grid"):
    """A :class:`.slicewise.TileAccumulator` for a 2D stage on ``data`` (channels, slices, in-plane axes): nnU-Net's
    tile grid (``layout="box"``: laid over each box, :func:`.slicewise.box_corners`) and Gaussian weighting,
    ``batch`` slices per network call, the predictor's folds averaged (each loaded in turn, as nnU-Net's
    ``predict_logits_from_preprocessed_data`` ensembles them) and its test-time mirroring axes applied."""
    from .slicewise import TileAccumulator

    patch = list(predictor.configuration_manager.patch_size)
    if len(patch) != 2:
        raise ValueError(f"a slab needs a 2D configuration, not patch {patch}")

    def steps_for(size: Sequence[int]) -> list[list[int]]:  # the whole slice's grid, or (layout "box") a box's
        return sliding_window_steps(size, patch, predictor.tile_step_size)

    mirror_axes = predictor.allowed_mirroring_axes if predictor.use_mirroring else None
    return TileAccumulator(predictor.network, data, patch, predictor.label_manager.num_segmentation_heads,
                           steps_for, gaussian_importance(patch, "cpu"), predictor.device, mirror_axes, batch,
                           _fold_loaders(predictor), layout)


def predict_slab(predictor, data, batch: int, box: tuple[slice, slice] | None = None, layout: str = "grid"):
    """Logits of a 2D stage on ``data`` (channels, slices, in-plane axes) (:func:`slab_tiles`); with ``box``
    (in-plane slices) only the tiles overlapping it (``layout="grid"``) or the grid laid over it (``"box"``)."""
    tiles = slab_tiles(predictor, data, batch, layout)
    tiles.run(box=box)
    return tiles.logits()


def sliding_window_steps(image_size: Sequence[int], tile_size: Sequence[int], tile_step_size: float) -> list[list[int]]:
    """nnU-Net's tile start positions per axis (``compute_steps_for_sliding_window``)."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    return compute_steps_for_sliding_window(tuple(image_size), tuple(tile_size), tile_step_size)


def gaussian_importance(tile_size: Sequence[int], device):
    """nnU-Net's Gaussian tile weighting (what its predictor uses: sigma 1/8 of the tile, peak 10, float16)."""
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    return compute_gaussian(tuple(tile_size), sigma_scale=1.0 / 8, value_scaling_factor=10, device=device)


def write_initialised_model(folder: str | Path, plans: dict, dataset_json: dict, configuration: str,
                            trainer_name: str, mirror_axes: Sequence[int] | None, fold: int = 0) -> Path:
    """A model folder nnU-Net's predictor loads (``plans.json``, ``dataset.json``,
    ``fold_F/checkpoint_final.pth`` in nnU-Net's checkpoint format) holding the network of ``configuration`` with
    freshly initialised weights: what a benchmark of prediction cost needs, which does not depend on the weights."""
    import json

    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(folder)
    (folder / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=1))
    manager = PlansManager(plans)
    stage = manager.get_configuration(configuration)
    heads = manager.get_label_manager(dataset_json).num_segmentation_heads
    network = network_from_architecture(_architecture(stage), _network_input_channels(manager, stage, dataset_json),
                                        heads, deep_supervision=False)
    checkpoint = {"network_weights": network.state_dict(), "trainer_name": trainer_name,
                  "init_args": {"plans": plans, "configuration": configuration, "fold": fold,
                                "dataset_json": dataset_json},
                  "inference_allowed_mirroring_axes": tuple(mirror_axes) if mirror_axes else None}
    target = folder / f"fold_{fold}" / "checkpoint_final.pth"
    torch.save(checkpoint, target)
    return target


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


def trainer_from_args(dataset: str, configuration: str, fold: int, trainer_name: str, plans: str, device) -> Any:
    """The trainer ``nnUNetv2_train DATASET CONFIGURATION FOLD -tr TRAINER -p PLANS`` builds (not yet initialised)."""
    from nnunetv2.run.run_training import get_trainer_from_args

    return get_trainer_from_args(dataset, configuration, fold, trainer_name, plans, device=device)


def training_batches(trainer) -> tuple[Any, Any]:
    """An initialised trainer's training augmenter (``next()`` gives a batch) and the data loader behind it, built as
    nnU-Net's training builds them (in this process when ``nnUNet_n_proc_DA=0``)."""
    augmenter, _ = trainer.get_dataloaders()
    return augmenter, augmenter.data_loader


def instrument_batch_pipeline(loader, wrap) -> None:
    """Replace each transform of a data loader's pipeline and its case loading by ``wrap(name, callable)`` (the name:
    the transform's class, or the class a ``RandomTransform`` wraps; ``load_case`` for loading), e.g. to time them."""
    transforms = loader.transforms.transforms
    for n, transform in enumerate(transforms):
        transforms[n] = wrap(type(getattr(transform, "transform", transform)).__name__, transform)
    loader._data.load_case = wrap("load_case", loader._data.load_case)


def is_cascade_stage(trainer) -> bool:
    """Whether a trainer's configuration reads a previous stage's segmentations."""
    return bool(trainer.is_cascaded)


def trained_module(trainer) -> Any:
    """The network module whose state dict a trainer's checkpoints hold (``save_checkpoint``'s ``mod``): the
    trainer's network without its DDP and ``torch.compile`` wrappers."""
    from torch._dynamo import OptimizedModule

    module = trainer.network.module if trainer.is_ddp else trainer.network
    return module._orig_mod if isinstance(module, OptimizedModule) else module


def use_previous_stage_folder(trainer, folder: str | Path) -> None:
    """Point a cascade stage's trainer at another folder of previous-stage segmentations (before and after
    ``initialize()``, which may set it again)."""
    trainer.folder_with_segs_from_previous_stage = str(folder)


def reference_as_previous_stage(trainer, out: str | Path) -> Path:
    """Each of a trainer's preprocessed training cases' reference (its first channel) saved in ``out`` as a previous
    stage's prediction of it, so that a cascade stage can be built and timed without training stage 1; nnU-Net's
    blosc2 dataset reads and writes the files (the layout of its ``predicted_next_stage`` folders)."""
    import numpy as np
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    preprocessed = Path(trainer.preprocessed_dataset_folder_base) / trainer.configuration_manager.data_identifier
    dataset = nnUNetDatasetBlosc2(str(preprocessed))
    for identifier in dataset.identifiers:
        segmentation = dataset.load_case(identifier)[1]
        nnUNetDatasetBlosc2.save_seg(np.ascontiguousarray(segmentation[0]), str(Path(out) / identifier))
    return Path(out)


GRADIENT_CLIP_NORM = 12.0
"""The norm nnU-Net's ``train_step`` clips gradients to."""


def timed_train_step(trainer, batch: dict, clock: Callable[[], float]) -> dict[str, float]:
    """One step of nnU-Net's ``train_step`` on the CPU (no gradient scaler) on a batch already on the trainer's
    device, its phases timed apart with ``clock()`` (seconds): forward, loss, backward, optimiser (gradient clipping
    and the step)."""
    import torch

    trainer.optimizer.zero_grad(set_to_none=True)
    t0 = clock()
    output = trainer.network(batch["data"])
    t1 = clock()
    loss = trainer.loss(output, batch["target"])
    t2 = clock()
    loss.backward()
    t3 = clock()
    torch.nn.utils.clip_grad_norm_(trainer.network.parameters(), GRADIENT_CLIP_NORM)
    trainer.optimizer.step()
    t4 = clock()
    return {"forward": t1 - t0, "loss": t2 - t1, "backward": t3 - t2, "optimiser": t4 - t3}


@contextlib.contextmanager
def progress_plot_skipped(trainer) -> Iterator[None]:
    """Within: ``nnUNetTrainer.on_epoch_end`` draws no ``progress.png`` (its logger's ``plot_progress_png`` is a
    no-op on this trainer's logger, restored afterwards)."""
    logger = trainer.logger
    logger.plot_progress_png = lambda output_folder: None
    try:
        yield
    finally:
        del logger.plot_progress_png
