"""Cascade prediction: stage 1 (``3d_lowres``) then stage 2 (``2d_cascade``) with nnU-Net's preprocessing and
networks, in this process (:mod:`.segment`), with the conversion's geometry handling around it.

Each input scan is reoriented (exactly: a permutation/flip of its axes) to the orientation the models were trained on,
cropped like the training data (``spine_convert.crop_ap_fraction`` in the model's ``dataset.json``), predicted, and
the mask is pasted back and reoriented to the input's own grid, so it overlays the scan voxel for voxel. A scan that
cannot be read or predicted is reported and the others go on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk

from dataset_conversion.crop import CropBox, ap_crop_box, apply_crop, paste_back
from dataset_conversion.metadata import ConversionMetadata
from dataset_conversion.sources.inhouse import discover_cases, is_case_folder, read_case_folder
from dataset_conversion.sources.volume import (
    VolumeReadError,
    dicom_series_ids,
    read_volume,
)
from measure.io import is_image_file, strip_suffix
from measure.outputs import (
    OutputError,
    atomic_write,
    atomic_write_text,
    check_unique_case_ids,
    check_writable_folder,
    refuse_outputs_over_inputs,
)

from .plans import COARSE_CONFIGURATION, FINE_CONFIGURATION, SPINE_PLANS_NAME, CascadeMetadata
from .postprocess import tidy_levels

NNUNET_FILE_ENDING = ".nii.gz"


@dataclass(frozen=True)
class CascadeModel:
    """Which trained models make the cascade."""

    dataset_name: str
    results: Path
    plans: str = SPINE_PLANS_NAME
    coarse_trainer: str = "nnUNetTrainerSpineCoarse"
    fine_trainer: str = "nnUNetTrainerSpineFine"
    coarse_folds: tuple[int | str, ...] | None = None
    """None: every fold with a final checkpoint (an ensemble), as nnU-Net does."""
    fine_folds: tuple[int | str, ...] | None = None
    checkpoint: str = "checkpoint_final.pth"

    def folder(self, stage: str) -> Path:
        from .compat import model_folder

        trainer = self.coarse_trainer if stage == COARSE_CONFIGURATION else self.fine_trainer
        return model_folder(self.results, self.dataset_name, trainer, self.plans, stage)


@dataclass(frozen=True)
class RunOptions:
    device: str = "cpu"
    mirroring: bool = True
    tile_step_size: float = 0.5
    part_id: int = 0
    num_parts: int = 1
    keep_intermediate: Path | None = None
    """Keep the cropped inputs and both stages' raw outputs in this folder (for inspection)."""
    level_order: bool = True
    """Remove parts whose level is out of cranio-caudal order, or give them the level of the body they are the
    smaller piece of (:mod:`.postprocess`; ``--keep-out-of-order``)."""
    count_levels: bool = True
    """Count the levels up from the sacrum when the chain names a level twice or skips one above S1 (from stage 1's
    level of its caudal body, else by the voxels' votes, when it names one twice and has no sacrum), and give each
    body one level (:mod:`.postprocess`; ``--keep-predicted-levels`` switches it off)."""
    full_window: bool = False
    """Stage 2 over every slice with nnU-Net's sliding window instead of only around stage 1's vertebrae (slower,
    the reference the fast path is checked against)."""
    slice_batch: int = 4
    """Sagittal slices per stage-2 network call (fast path)."""
    tile_layout: str = "grid"
    """Stage 2's tiles: the whole slice's grid tiles that overlap stage 1's box (``"grid"``: the full window's logits
    inside the box) or nnU-Net's grid laid over the box (``"box"``: fewer tiles on large slices, other masks)."""
    precision: str = "auto"
    """Network compute on the CPU: ``auto`` (each stage in the precision it was trained in, where the CPU has it),
    ``float32`` or ``bfloat16`` (:func:`~nnunet_ext.compat.load_predictor`)."""
    cpu_layout: str = "auto"
    """Tensor layout on the CPU: ``auto`` (channels-last for bfloat16 on an x86 CPU with AMX or AVX512-BF16),
    ``contiguous`` or ``channels-last`` (:func:`~nnunet_ext.compat.load_predictor`)."""


@dataclass
class PreparedCase:
    case_id: str
    source: Path
    original: sitk.Image | None = None
    orientation: str = ""
    crop: CropBox | None = None
    status: str = "ok"
    message: str = ""
    output: Path | None = None
    notes: list[str] = field(default_factory=list)
    image: sitk.Image | None = None
    """The scan reoriented and cropped as the models were trained (what the cascade segments)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per phase: ``read_s``, ``stage1_s``, ``stage2_s``, ``write_s``, and ``total_s``."""


def _export_case_image(folder: Path) -> tuple[str, Path] | None:
    """(case id, image) of a case folder in the export layout (an image beside a mask and/or ``levels.json``, as
    spine-convert reads it), else None: such a folder is one case, named by the folder (or its ``levels.json``), and
    its mask is never an input."""
    if not is_case_folder(folder):
        return None
    entry = read_case_folder(folder, folder.parent)
    return entry.case_id, entry.image_path or folder  # no single image: reading the folder fails with its name


def _folder_inputs(folder: Path) -> list[tuple[str, Path]]:
    """The inputs a folder stands for: itself as one case folder of an export, the image files and DICOM series
    folders directly inside it, or, when it holds neither, the case folders of an export below it (folders with an
    image, mask or levels file, found as spine-convert finds them; never other folders such as ``labelsTr``)."""
    case = _export_case_image(folder)
    if case is not None:
        return [case]
    children = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    direct = [p for p in children if is_image_file(p) or (p.is_dir() and dicom_series_ids(p))]
    if direct:
        return [(strip_suffix(p.name, keep_other_suffixes=True), p) for p in direct]
    return [(entry.case_id, entry.image_path or entry.folder) for entry in discover_cases(folder)]


def find_inputs(inputs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """(case id, path) for image files, DICOM series folders, folders of them, and exports in spine-convert's layout
    (one folder per case with image, mask and levels.json: the image only, named by its folder). nnU-Net-style
    ``CASE_0000`` names lose the suffix. Raises :class:`~measure.outputs.OutputError` naming both inputs when two
    would get the same case id."""
    found: list[tuple[str, Path]] = []
    for item in map(Path, inputs):
        if item.is_dir() and not dicom_series_ids(item):
            found.extend(_folder_inputs(item))
        else:
            case = _export_case_image(item.parent) if item.is_file() else None
            exported = case is not None and case[1] == item  # caseA/image.nii.gz of an export: the case is caseA
            found.append((case[0] if exported else strip_suffix(item.name, keep_other_suffixes=True), item))
    if found and all(name.endswith("_0000") for name, _ in found):
        found = [(name[:-5], path) for name, path in found]
    for name, path in found:  # the id becomes a file name in the output folder: no path in it
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise OutputError(f"{path}: case id {name!r} cannot name an output file (empty, hidden, or a path); "
                              "rename the case")
    check_unique_case_ids(found)
    return found


def _training_orientation(model: CascadeModel) -> str | None:
    plans = json.loads((model.folder(COARSE_CONFIGURATION) / "plans.json").read_text())
    metadata = CascadeMetadata.from_plans(plans)
    return metadata.training_orientation if metadata else None


def _crop_fraction(model: CascadeModel) -> float | None:
    dataset = json.loads((model.folder(COARSE_CONFIGURATION) / "dataset.json").read_text())
    metadata = ConversionMetadata.from_dataset_json(dataset)
    return metadata.crop_ap_fraction if metadata else None


def prepare(case_id: str, path: Path, orientation: str | None, crop_fraction: float | None) -> PreparedCase:
    """Read, reorient to the training orientation and crop (``case.image``); a scan that cannot be read gets status
    ``error`` and its message."""
    case = PreparedCase(case_id, path)
    try:
        image = read_volume(path)
    except VolumeReadError as exc:
        case.status, case.message = "error", str(exc)
        return case
    case.original = image
    case.orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    work = sitk.DICOMOrient(image, orientation) if orientation and orientation != case.orientation else image
    if work is not image:
        case.notes.append(f"reoriented {case.orientation} -> {orientation} for the model")
    if crop_fraction:
        case.crop = ap_crop_box(work, crop_fraction)
        work = apply_crop(work, case.crop)
    case.image = work
    return case


def on_input_grid(case: PreparedCase, mask: sitk.Image) -> sitk.Image:
    """A prediction on ``case.image``'s grid pasted back and reoriented onto the input's grid (uint8); raises
    RuntimeError where the grids then disagree."""
    assert case.original is not None
    if case.crop is not None:
        mask = paste_back(mask, case.crop)
    if sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(mask.GetDirection()) != case.orientation:
        mask = sitk.DICOMOrient(mask, case.orientation)
    original = case.original
    same = (mask.GetSize() == original.GetSize()
            and np.allclose(mask.GetSpacing(), original.GetSpacing(), atol=1e-4)
            and np.allclose(mask.GetOrigin(), original.GetOrigin(), atol=1e-3)
            and np.allclose(mask.GetDirection(), original.GetDirection(), atol=1e-4))
    if not same:
        raise RuntimeError(f"{case.source}: the prediction's grid does not match the input after paste-back")
    mask = sitk.Cast(mask, sitk.sitkUInt8)
    mask.CopyInformation(original)
    return mask


def restore(case: PreparedCase, mask: sitk.Image, output: Path, level_of_value: dict[int, str] | None = None,
            run: RunOptions | None = None, stage1: sitk.Image | None = None) -> None:
    """Paste back and reorient a prediction (on ``case.image``'s grid) onto the input's grid (:func:`on_input_grid`);
    with ``level_of_value`` (mask value -> level name), tidy the levels as ``run`` says (:mod:`.postprocess`; with
    ``stage1``, stage 1's mask on the same grid as ``mask``, a chain is also counted from stage 1's level of its caudal
    body); write ``output``."""
    mask = on_input_grid(case, mask)
    original = case.original
    run = run or RunOptions()
    if level_of_value and (run.level_order or run.count_levels):
        stage1_kji = (sitk.GetArrayFromImage(on_input_grid(case, stage1))
                      if stage1 is not None and run.count_levels else None)
        cleaned, notes = tidy_levels(sitk.GetArrayViewFromImage(mask), level_of_value, original.GetSpacing(),
                                     original.GetDirection(), run.level_order, run.count_levels, stage1_kji)
        if notes:
            ordered = sitk.GetImageFromArray(cleaned)
            ordered.CopyInformation(original)
            mask = ordered
            case.notes.extend(notes)
    atomic_write(output, lambda temporary: sitk.WriteImage(mask, str(temporary), True))
    case.output = output


def check_output_location(output_dir: Path, inputs: Sequence[str | Path], cases: Sequence[tuple[str, Path]]) -> None:
    """Before any work: the output folder is writable, is not an input folder, and no mask it will hold
    (``CASE.nii.gz``, ``dataset.json``) is an input file; raises :class:`~measure.outputs.OutputError`."""
    targets = [output_dir / f"{case_id}{NNUNET_FILE_ENDING}" for case_id, _ in cases] + [output_dir / "dataset.json"]
    refuse_outputs_over_inputs([output_dir, *targets], [*map(Path, inputs), *(path for _, path in cases)])
    check_writable_folder(output_dir)


def _keep_intermediate(folder: Path, case: PreparedCase, coarse: sitk.Image, fine: sitk.Image) -> None:
    """The cropped input and both stages' outputs, in nnU-Net's file names (``input/CASE_0000.nii.gz``,
    ``3d_lowres/CASE.nii.gz``, ``2d_cascade/CASE.nii.gz``)."""
    for name, image, suffix in (("input", case.image, "_0000"), (COARSE_CONFIGURATION, coarse, ""),
                                (FINE_CONFIGURATION, fine, "")):
        (folder / name).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(folder / name / f"{case.case_id}{suffix}{NNUNET_FILE_ENDING}"), True)


def _segment_case(case: PreparedCase, predictors, output: Path, level_of_value: dict[int, str],
                  run: RunOptions) -> None:
    """Both stages on one prepared case, the mask restored onto the input's grid and written; times in
    ``case.seconds``."""
    from .segment import segment_image

    coarse, fine, seconds = segment_image(predictors, case.image)
    case.seconds.update(seconds)
    start = time.perf_counter()
    restore(case, fine, output, level_of_value, run, stage1=coarse)
    if run.keep_intermediate:
        _keep_intermediate(run.keep_intermediate, case, coarse, fine)
    case.seconds["write_s"] = time.perf_counter() - start


def predict_cascade(inputs: Sequence[str | Path], output_dir: str | Path, model: CascadeModel,
                    run: RunOptions = RunOptions(),
                    on_case: Callable[[PreparedCase], None] | None = None,
                    on_loaded: Callable[[dict[str, str]], None] | None = None) -> list[PreparedCase]:
    """Segment every input scan with the two-stage cascade, one case at a time in this process (models loaded
    once); masks go to ``output_dir/CASE.nii.gz``; ``on_loaded`` is called once the models are loaded, with each
    stage's compute precision on the CPU (``{"stage 1": "float32", "stage 2": "bfloat16 (channels-last)"}``, with
    the layout where it is channels-last; empty on CUDA), and
    ``on_case`` as each case ends."""
    from .segment import load_cascade

    for stage in (COARSE_CONFIGURATION, FINE_CONFIGURATION):
        if not model.folder(stage).is_dir():
            raise FileNotFoundError(f"{model.folder(stage)}: no trained {stage} model (train it with nnUNetv2_train, "
                                    "or pass the trainer and plans names you used)")
    all_cases = find_inputs(inputs)
    cases = all_cases[run.part_id::run.num_parts]  # nnU-Net's parts convention
    if not cases:
        raise FileNotFoundError(f"no input images found in {', '.join(map(str, inputs))}")
    output_dir = Path(output_dir)
    check_output_location(output_dir, inputs, all_cases)
    orientation, crop_fraction = _training_orientation(model), _crop_fraction(model)
    labels = json.loads((model.folder(FINE_CONFIGURATION) / "dataset.json").read_text())["labels"]
    level_of_value = {int(v): name for name, v in labels.items() if isinstance(v, int)}
    predictors = load_cascade(model.folder(COARSE_CONFIGURATION), model.folder(FINE_CONFIGURATION),
                              model.coarse_folds, model.fine_folds, model.checkpoint, run.device, run.mirroring,
                              run.tile_step_size, run.full_window, run.slice_batch, run.precision, run.cpu_layout,
                              run.tile_layout)
    if on_loaded is not None:
        on_loaded({} if run.device != "cpu" else {
            name: predictor.cpu_precision + (" (channels-last)" if predictor.cpu_layout == "channels-last" else "")
            for name, predictor in (("stage 1", predictors.coarse), ("stage 2", predictors.fine))})
    done = []
    for case_id, path in cases:
        start = time.perf_counter()
        case = prepare(case_id, path, orientation, crop_fraction)
        case.seconds["read_s"] = time.perf_counter() - start
        if case.status == "ok":
            try:
                _segment_case(case, predictors, output_dir / f"{case.case_id}{NNUNET_FILE_ENDING}", level_of_value,
                              run)
            except (RuntimeError, ValueError) as exc:
                message = str(exc)
                case.status = "error"
                case.message = message if str(case.source) in message else f"{case.source}: {message}"
        case.image = None  # one case's arrays in memory at a time
        case.seconds["total_s"] = time.perf_counter() - start
        done.append(case)
        if on_case is not None:
            on_case(case)
    atomic_write_text(output_dir / "dataset.json", json.dumps({"labels": labels, "file_ending": NNUNET_FILE_ENDING},
                                                              indent=1) + "\n")
    return done
