"""Reader of the "in-house export" layout: one folder per case holding an image, a mask and optionally the level
names of the mask values.

```
ROOT/[any/sub/folders/]CASE/image.nii.gz   (or .nii, .nrrd, .mha, .mhd, or a DICOM series folder named image*)
ROOT/[any/sub/folders/]CASE/mask.nii.gz    (or seg*, label*; same formats)
ROOT/[any/sub/folders/]CASE/levels.json    {"labels": {"1": "T11", ...}, optional "case_id", "same_subject_as",
                                             "subject_id", "qc": {"status": "ok|flag|bad", "findings": [...]}}
```

A folder is a case when it holds a mask candidate; folders above it are walked (hidden folders skipped), folders
inside it are not. The case id is the folder name (or ``case_id`` in ``levels.json``). Discovery never raises on a
bad case: problems are recorded on the :class:`CaseEntry` and reported by the converter.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from measure.io import is_image_file, strip_suffix

from ..relabel import RelabelError, parse_label_table
from .volume import dicom_series_ids

DEFAULT_IMAGE_PATTERNS = ("image*", "img*")
DEFAULT_MASK_PATTERNS = ("mask*", "seg*", "label*")
DEFAULT_LEVELS_FILE = "levels.json"


@dataclass
class CaseEntry:
    """One discovered case of an export (paths, level names, subject), before any voxel is read."""

    case_id: str
    folder: Path
    root: Path
    image_path: Path | None = None
    mask_path: Path | None = None
    labels: dict[int, str] | None = None
    """Mask value -> level name given by the case itself (``levels.json``); None: use the export's label map."""
    labels_source: str = ""
    subject_id: str | None = None
    same_subject_as: list[str] = field(default_factory=list)
    qc_status: str | None = None
    """The export's own quality verdict (``qc.status`` in ``levels.json``: ok, flag, bad...), if any."""
    qc_note: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        """The root's name and the case folder relative to it (``lumbar_mri/chu2015_t2/chu_img05``)."""
        try:
            relative = self.folder.relative_to(self.root).as_posix()
        except ValueError:
            relative = self.folder.name
        return f"{self.root.name}/{relative}" if relative != "." else self.root.name


def _matches(name: str, patterns: Sequence[str]) -> bool:
    stem = strip_suffix(name, keep_other_suffixes=True).lower()
    return any(fnmatch.fnmatch(stem, p.lower()) or fnmatch.fnmatch(name.lower(), p.lower()) for p in patterns)


def _candidates(folder: Path, patterns: Sequence[str]) -> list[Path]:
    """Volume files and DICOM series folders in ``folder`` whose name matches one of ``patterns``."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not _matches(entry.name, patterns):
            continue
        if is_image_file(entry) or (entry.is_dir() and dicom_series_ids(entry)):
            found.append(entry)
    return found


def _read_levels(path: Path, entry: CaseEntry) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        entry.problems.append(f"{path}: cannot read level names: {exc}")
        return
    if not isinstance(data, dict):
        entry.problems.append(f"{path}: level file must hold a JSON object")
        return
    table = data.get("labels")
    if table is not None:
        try:  # the converter's one label-table reader: the same rules as an export-wide --labels map
            entry.labels, entry.labels_source = parse_label_table(table, str(path)), str(path)
        except RelabelError as exc:
            entry.problems.append(str(exc))
    if "case_id" in data:
        entry.case_id = str(data["case_id"])
    if data.get("subject_id") is not None:
        entry.subject_id = str(data["subject_id"])
    qc = data.get("qc")
    if isinstance(qc, dict):
        entry.qc_status = str(qc["status"]).lower() if qc.get("status") is not None else None
        findings = qc.get("findings") or []
        entry.qc_note = str(findings[0]) if isinstance(findings, list) and findings else ""
    elif isinstance(qc, str):
        entry.qc_status = qc.lower()
    same = data.get("same_subject_as") or []
    entry.same_subject_as = [str(s) for s in (same if isinstance(same, list) else [same])]


def missing_message(folder: Path, kind: str, patterns: Sequence[str]) -> str:
    """Why a case folder has no image or no mask."""
    return (f"{folder}: no {kind} found (looked for {', '.join(patterns)} as a NIfTI, NRRD, MHA file or a DICOM "
            "series folder)")


def is_case_folder(folder: Path, mask_patterns: Sequence[str] = DEFAULT_MASK_PATTERNS,
                   levels_file: str | None = DEFAULT_LEVELS_FILE) -> bool:
    """Whether ``folder`` is one case of an export: it holds a level file or a mask candidate."""
    return bool((levels_file and (folder / levels_file).is_file()) or _candidates(folder, mask_patterns))


def read_case_folder(folder: Path, root: Path, image_patterns: Sequence[str] = DEFAULT_IMAGE_PATTERNS,
                     mask_patterns: Sequence[str] = DEFAULT_MASK_PATTERNS,
                     levels_file: str | None = DEFAULT_LEVELS_FILE) -> CaseEntry:
    """The :class:`CaseEntry` of one case folder (problems recorded, never raised; a missing mask leaves
    ``mask_path`` None without a problem)."""
    entry = CaseEntry(case_id=folder.name, folder=folder, root=root)
    masks = _candidates(folder, mask_patterns)
    images = [p for p in _candidates(folder, image_patterns) if p not in masks]
    for kind, found in (("image", images), ("mask", masks)):
        if len(found) == 1:
            setattr(entry, f"{kind}_path", found[0])
        elif not found:
            if kind == "image":  # a missing mask is for the converter to judge (skip, or imagesTs)
                entry.problems.append(missing_message(folder, kind, image_patterns))
        else:
            entry.problems.append(f"{folder}: several {kind} candidates ({', '.join(p.name for p in found)}); "
                                  f"choose one with --{kind}-name")
    if levels_file and (folder / levels_file).is_file():
        _read_levels(folder / levels_file, entry)
    return entry


def discover_cases(root: str | Path, image_patterns: Sequence[str] = DEFAULT_IMAGE_PATTERNS,
                   mask_patterns: Sequence[str] = DEFAULT_MASK_PATTERNS,
                   levels_file: str | None = DEFAULT_LEVELS_FILE) -> list[CaseEntry]:
    """All case folders under ``root`` in sorted path order (a folder holding a mask or an image candidate)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: export root not found or not a folder")
    cases: list[CaseEntry] = []

    def walk(folder: Path) -> None:
        if _candidates(folder, mask_patterns) or _candidates(folder, image_patterns):
            cases.append(read_case_folder(folder, root, image_patterns, mask_patterns, levels_file))
            return
        for child in sorted(folder.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                walk(child)

    walk(root)
    return cases
