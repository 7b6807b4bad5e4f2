"""The nnU-Net v2 raw dataset layout, written into a hidden temporary folder and moved into place only when
complete: an interrupted conversion leaves no half-written ``DatasetNNN_Name``.

```
RAW/DatasetNNN_Name/imagesTr/<id>_0000.nii.gz   labelsTr/<id>.nii.gz   [imagesTs/, labelsTs/]
RAW/DatasetNNN_Name/dataset.json  splits_final.json  case_mapping.csv  spine_convert.json
```
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import SimpleITK as sitk

from measure.outputs import check_writable_folder

FILE_ENDING = ".nii.gz"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_PARTIAL = ".partial-"


class DatasetExistsError(FileExistsError):
    """The target dataset (or another dataset with the same id) already exists."""


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset{id:03d}_{name}``, refusing ids and names nnU-Net cannot use."""
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset id must be 1-999 (nnU-Net uses three digits), got {dataset_id}")
    if not _NAME.match(name):
        raise ValueError(f"dataset name {name!r}: use letters, digits, '_' and '-' only (no spaces or dots)")
    return f"Dataset{int(dataset_id):03d}_{name}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DatasetWriter:
    """Write one raw dataset atomically. Use as a context manager; call :meth:`commit` at the end.

    On an exception (including KeyboardInterrupt) the temporary folder is removed and nothing is left behind.
    Temporary folders of earlier runs that were killed (their process is gone) are removed on start.
    """

    def __init__(self, raw_dir: str | Path, dataset_id: int, name: str, overwrite: bool = False) -> None:
        self.raw_dir = Path(raw_dir)
        self.folder_name = dataset_folder_name(dataset_id, name)
        self.final = self.raw_dir / self.folder_name
        self.overwrite = overwrite
        self.temporary: Path | None = None
        check_writable_folder(self.raw_dir, "output folder (--out)")  # before any case is converted
        prefix = f"Dataset{int(dataset_id):03d}_"
        others = sorted(p.name for p in self.raw_dir.glob(prefix + "*") if p.is_dir() and p.name != self.folder_name)
        if others:
            raise DatasetExistsError(f"{self.raw_dir}: dataset id {int(dataset_id):03d} is already used by "
                                     f"{', '.join(others)}; nnU-Net needs unique ids (choose another --id)")
        if self.final.exists() and not overwrite:
            raise DatasetExistsError(f"{self.final} exists; use --overwrite to replace it")

    def __enter__(self) -> DatasetWriter:
        self.raw_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.raw_dir.glob(f".{self.folder_name}{_PARTIAL}*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        self.temporary = self.raw_dir / f".{self.folder_name}{_PARTIAL}{os.getpid()}"
        if self.temporary.exists():
            shutil.rmtree(self.temporary)
        for sub in ("imagesTr", "labelsTr"):
            (self.temporary / sub).mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.temporary is not None and self.temporary.exists():
            shutil.rmtree(self.temporary, ignore_errors=True)

    def image_path(self, case_id: str, test: bool = False, channel: int = 0) -> Path:
        assert self.temporary is not None, "use DatasetWriter as a context manager"
        return self.temporary / ("imagesTs" if test else "imagesTr") / f"{case_id}_{channel:04d}{FILE_ENDING}"

    def label_path(self, case_id: str, test: bool = False) -> Path:
        assert self.temporary is not None, "use DatasetWriter as a context manager"
        return self.temporary / ("labelsTs" if test else "labelsTr") / f"{case_id}{FILE_ENDING}"

    def write_json(self, name: str, data: object) -> None:
        assert self.temporary is not None
        (self.temporary / name).write_text(json.dumps(data, indent=1) + "\n")

    def write_text(self, name: str, text: str) -> None:
        assert self.temporary is not None
        (self.temporary / name).write_text(text)

    def commit(self) -> Path:
        """Move the complete dataset into place (replacing an existing one only with ``overwrite``)."""
        assert self.temporary is not None
        for sub in ("imagesTs", "labelsTs"):
            folder = self.temporary / sub
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        old = None
        if self.final.exists():
            if not self.overwrite:
                raise DatasetExistsError(f"{self.final} appeared during the conversion; nothing was replaced")
            old = self.raw_dir / f".{self.folder_name}.replaced-{os.getpid()}"
            os.replace(self.final, old)
        os.replace(self.temporary, self.final)
        self.temporary = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final


def write_volume(image: sitk.Image, path: Path) -> None:
    """Write a compressed NIfTI (the folder must exist)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
