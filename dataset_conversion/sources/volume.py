"""Read one image or mask volume: a file (NIfTI, NRRD, MHA/MHD) or a DICOM series folder; write DICOM series.

Every failure raises :class:`VolumeReadError` naming the path and the problem.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from measure.io import MaskReadError, check_geometry, read_image


class VolumeReadError(ValueError):
    """A volume cannot be read; the message names the path and the problem."""


def dicom_series_ids(folder: Path) -> list[str]:
    """Series instance UIDs of the DICOM files directly inside ``folder`` (empty when there are none)."""
    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> sitk.Image:
    """Read the one DICOM series of a folder (or the series ``series_uid``) as a 3D volume."""
    folder = Path(folder)
    uids = dicom_series_ids(folder)
    if not uids:
        raise VolumeReadError(f"{folder}: folder holds no DICOM series (and no image file)")
    if series_uid is None:
        if len(uids) > 1:
            raise VolumeReadError(f"{folder}: folder holds {len(uids)} DICOM series ({', '.join(uids)}); "
                                  "keep one series per folder")
        series_uid = uids[0]
    elif series_uid not in uids:
        raise VolumeReadError(f"{folder}: no DICOM series {series_uid} (found {', '.join(uids)})")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid)
    if len(files) < 2:
        raise VolumeReadError(f"{folder}: DICOM series {series_uid} has {len(files)} slice; a 3D series is needed")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeReadError(f"{folder}: cannot read DICOM series {series_uid}: {' '.join(str(exc).split())[:300]}"
                              ) from exc
    return image


def read_volume(path: str | Path) -> sitk.Image:
    """Read a 3D scalar volume from a file or a DICOM series folder; raises :class:`VolumeReadError`."""
    path = Path(path)
    try:
        image = read_dicom_series(path) if path.is_dir() else read_image(path)
        check_geometry(image, path)
    except MaskReadError as exc:
        raise VolumeReadError(str(exc)) from exc
    return image


def write_dicom_series(image: sitk.Image, folder: str | Path, series_description: str = "sagittal T2") -> list[Path]:
    """Write a 3D scalar image as a DICOM MR series (one file per slice along the image's third axis).

    The patient geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceThickness) is that of the
    image, so reading the folder back gives the same grid (positions to the precision DICOM stores, about 1e-6 mm).
    Intensities are stored as 16-bit integers (rounded; floats are refused unless integral).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    array = sitk.GetArrayFromImage(image)
    if not np.array_equal(array, np.round(array)):
        raise ValueError("write_dicom_series stores integers; round or rescale the image first")
    signed = array.min() < 0
    pixel = sitk.sitkInt16 if signed else sitk.sitkUInt16
    cast = sitk.Cast(image, pixel)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    orientation = "\\".join(f"{v:.10g}" for v in np.concatenate([direction[:, 0], direction[:, 1]]))
    spacing = image.GetSpacing()
    stamp = time.strftime("%Y%m%d"), time.strftime("%H%M%S")

    def new_uid() -> str:
        return f"2.25.{uuid.uuid4().int}"  # a UUID-derived DICOM UID (PS3.5 B.2)

    study_uid, series_uid = new_uid(), new_uid()
    common = {
        "0008|0060": "MR",
        "0008|0020": stamp[0], "0008|0030": stamp[1],
        "0008|103e": series_description,
        "0010|0010": "PHANTOM^SPINE", "0010|0020": "PHANTOM",
        "0020|000d": study_uid, "0020|000e": series_uid,
        "0020|0037": orientation,
        "0018|0050": f"{spacing[2]:.10g}",
        "0028|0030": f"{spacing[1]:.10g}\\{spacing[0]:.10g}",  # row spacing, column spacing
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    written = []
    for k in range(image.GetSize()[2]):
        slice_image = cast[:, :, k]
        for tag, value in common.items():
            slice_image.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_image.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in position))
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0008|0018", new_uid())
        target = folder / f"slice_{k + 1:04d}.dcm"
        writer.SetFileName(str(target))
        writer.Execute(slice_image)
        written.append(target)
    return written
