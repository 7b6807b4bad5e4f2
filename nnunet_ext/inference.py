"""Cascade prediction: stage 1 (``3d_lowres``) then stage 2 (``2d_cascade``) through nnU-Net's predictor, with the
conversion's geometry handling around it.

Each input scan is reoriented (exactly: a permutation/flip of its axes) to the orientation the models were trained on,
cropped like the training data (``spine_convert.crop_ap_fraction`` in the model's ``dataset.json``), predicted, and
the mask is pasted back and reoriented to the input's own grid, so it overlays the scan voxel for voxel. A scan that
cannot be read or predicted is reported and the others go on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from dataset_conversion.crop import CropBox, ap_crop_box, apply_crop, paste_back
from dataset_conversion.sources.volume import VolumeReadError, is_volume_file, read_volume, strip_volume_suffix

from .plans import COARSE_CONFIGURATION, FINE_CONFIGURATION, SPINE_PLANS_NAME

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
    processes: int = 1
    mirroring: bool = True
    tile_step_size: float = 0.5
    part_id: int = 0
    num_parts: int = 1
    keep_intermediate: Path | None = None
    """Keep the cropped inputs and both stages' raw outputs in this folder (for inspection)."""


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


def find_inputs(inputs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """(case id, path) for image files and DICOM series folders; nnU-Net-style ``CASE_0000`` names lose the suffix."""
    from dataset_conversion.sources.volume import dicom_series_ids

    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir() and not dicom_series_ids(item):
            found.extend(sorted(p for p in item.iterdir() if (is_volume_file(p) or (p.is_dir() and dicom_series_ids(p)))
                                and not p.name.startswith(".")))
        else:
            found.append(item)
    names = [strip_volume_suffix(p.name) for p in found]
    if names and all(n.endswith("_0000") for n in names):
        names = [n[:-5] for n in names]
    return list(zip(names, found, strict=True))


def _training_orientation(model: CascadeModel) -> str | None:
    plans = json.loads((model.folder(COARSE_CONFIGURATION) / "plans.json").read_text())
    return plans.get("spine_cascade", {}).get("training_orientation")


def _crop_fraction(model: CascadeModel) -> float | None:
    dataset = json.loads((model.folder(COARSE_CONFIGURATION) / "dataset.json").read_text())
    return (dataset.get("spine_convert") or {}).get("crop_ap_fraction")


def prepare(case_id: str, path: Path, target: Path, orientation: str | None, crop_fraction: float | None
            ) -> PreparedCase:
    """Read, reorient to the training orientation, crop, write ``target`` (nnU-Net's ``CASE_0000.nii.gz``)."""
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
    sitk.WriteImage(work, str(target), True)
    return case


def restore(case: PreparedCase, prediction: Path, output: Path) -> None:
    """Paste back and reorient a prediction onto the input's grid; check the grids agree; write ``output``."""
    assert case.original is not None
    mask = sitk.ReadImage(str(prediction))
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
    output.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(mask, str(output), True)
    case.output = output


def predict_cascade(inputs: Sequence[str | Path], output_dir: str | Path, model: CascadeModel,
                    run: RunOptions = RunOptions()) -> list[PreparedCase]:
    """Segment every input scan with the two-stage cascade; masks go to ``output_dir/CASE.nii.gz``."""
    from .compat import predict_folder

    for stage in (COARSE_CONFIGURATION, FINE_CONFIGURATION):
        if not model.folder(stage).is_dir():
            raise FileNotFoundError(f"{model.folder(stage)}: no trained {stage} model (train it with nnUNetv2_train, "
                                    "or pass the trainer and plans names you used)")
    cases = find_inputs(inputs)[run.part_id::run.num_parts]  # nnU-Net's parts convention
    if not cases:
        raise FileNotFoundError(f"no input images found in {', '.join(map(str, inputs))}")
    output_dir = Path(output_dir)
    work = Path(tempfile.mkdtemp(prefix="spine_predict_"))
    try:
        folders = {name: work / name for name in ("input", COARSE_CONFIGURATION, FINE_CONFIGURATION)}
        for folder in folders.values():
            folder.mkdir()
        orientation, crop_fraction = _training_orientation(model), _crop_fraction(model)
        prepared = [prepare(c, p, folders["input"] / f"{c}_0000{NNUNET_FILE_ENDING}", orientation, crop_fraction)
                    for c, p in cases]
        if any(c.status == "ok" for c in prepared):
            common = dict(device=run.device, mirroring=run.mirroring, tile_step_size=run.tile_step_size,
                          processes_preprocessing=run.processes, processes_export=run.processes,
                          checkpoint=model.checkpoint)
            predict_folder(model.folder(COARSE_CONFIGURATION), folders["input"], folders[COARSE_CONFIGURATION],
                           model.coarse_folds, **common)
            predict_folder(model.folder(FINE_CONFIGURATION), folders["input"], folders[FINE_CONFIGURATION],
                           model.fine_folds, previous_stage_folder=folders[COARSE_CONFIGURATION], **common)
        for case in prepared:
            if case.status != "ok":
                continue
            prediction = folders[FINE_CONFIGURATION] / f"{case.case_id}{NNUNET_FILE_ENDING}"
            try:
                if not prediction.is_file():
                    raise RuntimeError(f"{case.source}: nnU-Net wrote no prediction")
                restore(case, prediction, output_dir / f"{case.case_id}{NNUNET_FILE_ENDING}")
            except (RuntimeError, ValueError) as exc:
                case.status, case.message = "error", str(exc)
        if run.keep_intermediate:
            shutil.copytree(work, run.keep_intermediate, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    labels = json.loads((model.folder(FINE_CONFIGURATION) / "dataset.json").read_text())["labels"]
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": NNUNET_FILE_ENDING},
                                                        indent=1) + "\n")
    return prepared
