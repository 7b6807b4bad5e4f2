"""In-house exports -> one nnU-Net v2 raw dataset: per-case conversion and the batch around it.

:func:`convert_case` turns one discovered case into nnU-Net files (or a skip with its reason, never an exception);
:func:`convert_export` discovers cases under several roots, converts them (in parallel with ``jobs``), makes the
patient-level splits and writes the dataset atomically through :class:`~dataset_conversion.writer.DatasetWriter`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from measure.io import MaskReadError, label_array
from measure.levels import is_known_level, level_rank
from measure.runtime import nnunet_folder, parallel_map, tool_version

from .crop import ap_crop_box, apply_crop
from .metadata import ConversionMetadata
from .relabel import RelabelError, TargetScheme, relabel
from .sources.inhouse import (
    DEFAULT_IMAGE_PATTERNS,
    DEFAULT_LEVELS_FILE,
    DEFAULT_MASK_PATTERNS,
    CaseEntry,
    discover_cases,
    missing_message,
)
from .sources.volume import VolumeReadError, read_volume
from .splits import explicit_split, k_fold_splits, splits_json, subject_groups, train_val_split
from .unannotated import auto_sides, ignore_beyond_annotation
from .writer import FILE_ENDING, DatasetWriter, write_volume

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PAPER_REFERENCE = ("Schneider, Biesner et al., Segmentation and Analysis of Lumbar Spine MRI Scans for Vertebral Body "
                   "Measurements")


class ConversionError(RuntimeError):
    """The conversion as a whole cannot go on (nothing convertible, or --strict and a case failed)."""


@dataclass(frozen=True)
class ConvertOptions:
    """How each case is converted."""

    binary: bool = False
    unknown_levels: str = "ignore"
    """Levels outside T11-S2: ``ignore`` (nnU-Net's ignore label), ``background`` or ``error`` (skip the case)."""
    crop_ap: float | None = None
    """Fraction of the anterior-posterior extent removed on each side (the paper: 0.25); None: no crop."""
    label_map: dict[int, str] | None = None
    """Export-wide mask value -> level name, for cases without their own level file."""
    label_map_source: str = ""
    ignore_beyond: str = "auto"
    """Background beyond the annotated vertebrae (``caudal``, ``cranial``, ``both``) -> ignore label; ``none``."""
    geometry_tolerance: float = 1e-3
    """Largest difference (mm for spacing and origin, cosine for direction) between image and mask grids."""


@dataclass(frozen=True)
class SplitOptions:
    """Patient-level split: ``val_cases`` (explicit), else ``val_fraction`` (one split), else ``folds``."""

    folds: int = 5
    val_fraction: float | None = None
    val_cases: tuple[str, ...] | None = None
    seed: int = 0
    subjects: dict[str, str] | None = None
    """Original case id -> subject id (``--groups``), in addition to the links in the level files."""


@dataclass(frozen=True)
class DiscoveryOptions:
    """Which files make a case and which cases take part."""

    image_patterns: tuple[str, ...] = DEFAULT_IMAGE_PATTERNS
    mask_patterns: tuple[str, ...] = DEFAULT_MASK_PATTERNS
    levels_file: str | None = DEFAULT_LEVELS_FILE
    """Per-case level file name; None: the export-wide label map for every case."""
    skip_qc: tuple[str, ...] = ("bad",)
    """Skip cases whose level file gives one of these QC statuses."""
    test_cases: tuple[str, ...] = ()
    """Original case ids written to imagesTs/labelsTs instead of training."""
    unlabelled: str = "skip"
    """Case folders with an image but no mask: ``skip`` or ``test`` (imagesTs)."""
    keep_case_ids: bool = False
    """Name nnU-Net files by the original ids instead of ``NAME_0001``..."""


@dataclass
class CaseResult:
    """What happened to one case: one row of ``case_mapping.csv``."""

    original_case_id: str
    nnunet_case_id: str
    source: str
    image_path: str
    mask_path: str
    status: str = "skipped"
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    subset: str = "train"
    levels: list[str] = field(default_factory=list)
    ignored_levels: list[str] = field(default_factory=list)
    background_levels: list[str] = field(default_factory=list)
    size: tuple[int, ...] = ()
    spacing_mm: tuple[float, ...] = ()
    crop: dict | None = None
    subject_group: str = ""
    split: str = ""


MAPPING_COLUMNS = ("nnunet_case_id", "original_case_id", "source", "status", "reason", "warnings", "subset", "split",
                   "subject_group", "levels", "ignored_levels", "background_levels", "size", "spacing_mm",
                   "crop_axis", "crop_start", "crop_stop", "image_path", "mask_path")


def is_safe_case_id(case_id: str) -> bool:
    """Letters, digits, ``.``, ``_`` and ``-``, not starting with a dot or dash, no ``..`` (no path tricks)."""
    return bool(_SAFE_ID.match(case_id)) and ".." not in case_id


def _mm(values: np.ndarray, decimals: int) -> tuple[float, ...]:
    return tuple(round(float(v), decimals) for v in values)


def lattice_alignment(image: sitk.Image, mask: sitk.Image, tolerance: float) -> str:
    """How the mask's voxel grid relates to the image's: ``same``, ``permuted`` (the same voxel centres in another
    axis order or flip) or a description of the mismatch."""
    size_i, size_m = np.array(image.GetSize()), np.array(mask.GetSize())
    spacing_i, spacing_m = np.array(image.GetSpacing()), np.array(mask.GetSpacing())
    dir_i = np.array(image.GetDirection()).reshape(3, 3)
    dir_m = np.array(mask.GetDirection()).reshape(3, 3)
    origin_i, origin_m = np.array(image.GetOrigin()), np.array(mask.GetOrigin())
    if (np.array_equal(size_i, size_m) and np.allclose(spacing_i, spacing_m, atol=tolerance)
            and np.allclose(origin_i, origin_m, atol=tolerance) and np.allclose(dir_i, dir_m, atol=tolerance)):
        return "same"
    # image index -> mask continuous index: a signed permutation plus an integer shift when the lattices coincide
    to_mask = np.linalg.inv(dir_m * spacing_m)
    a = to_mask @ (dir_i * spacing_i)
    shift = to_mask @ (origin_i - origin_m)
    rounded = np.round(a)
    is_permutation = (np.allclose(a, rounded, atol=tolerance) and np.all(np.abs(rounded).sum(axis=0) == 1)
                      and np.all(np.abs(rounded).sum(axis=1) == 1))
    if is_permutation:
        corners = np.array([[i, j, k] for i in (0, size_i[0] - 1) for j in (0, size_i[1] - 1)
                            for k in (0, size_i[2] - 1)], dtype=float)
        mapped = corners @ rounded.T + shift
        if (np.allclose(shift, np.round(shift), atol=tolerance * 10) and mapped.min() > -0.5
                and np.all(mapped.max(axis=0) < size_m - 0.5) and np.prod(size_i) == np.prod(size_m)):
            return "permuted"
    parts = []
    if not np.array_equal(size_i, size_m):
        parts.append(f"size {tuple(int(v) for v in size_m)} vs image {tuple(int(v) for v in size_i)}")
    if not np.allclose(spacing_i, spacing_m, atol=tolerance):
        parts.append(f"spacing {_mm(spacing_m, 4)} vs image {_mm(spacing_i, 4)} mm")
    if not np.allclose(origin_i, origin_m, atol=tolerance):
        parts.append(f"origin {_mm(origin_m, 3)} vs image {_mm(origin_i, 3)} mm")
    if not np.allclose(dir_i, dir_m, atol=tolerance):
        parts.append(f"direction {np.round(dir_m, 3).ravel().tolist()} vs image {np.round(dir_i, 3).ravel().tolist()}")
    return "; ".join(parts) or "grids differ"


def convert_case(entry: CaseEntry, nnunet_id: str, image_out: Path, label_out: Path | None,
                 options: ConvertOptions) -> CaseResult:
    """Convert one case into ``image_out`` (and ``label_out``); never raises: problems give a skipped result."""
    result = CaseResult(original_case_id=entry.case_id, nnunet_case_id=nnunet_id, source=entry.source,
                        image_path=str(entry.image_path.resolve()) if entry.image_path else "",
                        mask_path=str(entry.mask_path.resolve()) if entry.mask_path else "")
    try:
        _convert(entry, image_out, label_out, options, result)
        result.status = "converted"
    except (VolumeReadError, MaskReadError, RelabelError, ValueError) as exc:
        result.reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad case must never stop the others
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        result.reason = f"{entry.folder}: unexpected error ({detail}); please report it"
    if result.status != "converted":
        for path in (image_out, label_out):
            if path is not None:
                path.unlink(missing_ok=True)
    return result


def _annotated_above(names: dict[int, str], levels_present: Sequence[str]) -> bool:
    """Whether the annotation names a vertebra cranial of its highest scheme level (T10 above T11, mapped to the
    ignore label): then the cranial end is annotated and nothing there is unannotated anatomy."""
    if not levels_present:
        return False
    top = level_rank(levels_present[0])
    return any(is_known_level(n) and level_rank(n) < top for n in names.values())


def _voxels_outside(labels: np.ndarray, kept: tuple[slice, slice, slice]) -> dict[int, int]:
    """Label value -> number of its voxels outside the kept box."""
    total = np.bincount(labels.ravel())
    inside = np.bincount(labels[kept].ravel(), minlength=len(total))
    return {int(v): int(n) for v, n in enumerate(total - inside) if v and n}


def _read_mask_on(image: sitk.Image, entry: CaseEntry, options: ConvertOptions, result: CaseResult) -> np.ndarray:
    """The case's mask values on the image grid (a mask stored in another axis order is re-indexed, with a warning);
    raises ValueError for another grid or an empty mask."""
    assert entry.mask_path is not None and entry.image_path is not None
    mask = read_volume(entry.mask_path)
    relation = lattice_alignment(image, mask, options.geometry_tolerance)
    if relation == "permuted":
        mask = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
        result.warnings.append("mask stored in another axis order than the image: re-indexed onto the image grid "
                               "(same voxels, no interpolation)")
    elif relation != "same":
        raise ValueError(f"{entry.mask_path}: mask grid does not match the image {entry.image_path.name}: {relation}")
    values = label_array(mask, entry.mask_path)
    if not values.any():
        raise ValueError(f"{entry.mask_path}: mask is empty (no labelled voxel)")
    return values


def _target_labels(image: sitk.Image, values: np.ndarray, entry: CaseEntry, options: ConvertOptions,
                   result: CaseResult) -> sitk.Image:
    """The mask values relabelled to the target scheme (levels outside it as the options say, the unannotated region
    as the ignore label with ``--ignore-beyond``), as an image on the image's grid; the levels go into ``result``."""
    names = entry.labels if entry.labels is not None else options.label_map
    if names is None:
        raise ValueError(f"{entry.folder}: no level names for the mask values (no {DEFAULT_LEVELS_FILE} in the "
                         "case folder and no --label-map)")
    source = entry.labels_source or options.label_map_source
    mapped = relabel(values, names, TargetScheme(options.binary), options.unknown_levels, source=source)
    result.levels, result.ignored_levels = mapped.levels_present, mapped.ignored_levels
    result.background_levels = mapped.background_levels
    if not mapped.levels_present:
        raise ValueError(f"{entry.mask_path}: no vertebra of T11-S2 in the mask (levels "
                         f"{sorted(set(names[v] for v in np.unique(values) if v))}); nothing to train on")
    labels = mapped.labels
    side = options.ignore_beyond
    if side == "auto":
        side = auto_sides(mapped.levels_present, annotated_above=_annotated_above(names, mapped.levels_present))
    if side != "none":
        ignore_value = TargetScheme(options.binary).ignore_value
        bodies = np.where((labels > 0) & (labels != ignore_value), values, 0)
        labels, changed = ignore_beyond_annotation(labels, bodies, image.GetSpacing(), image.GetDirection(), side,
                                                   ignore_value)
        if changed:
            result.ignored_levels.append(f"unannotated-{side}")
    labels_image = sitk.GetImageFromArray(labels)
    labels_image.CopyInformation(image)
    return labels_image


def _crop(image: sitk.Image, labels_image: sitk.Image | None, options: ConvertOptions,
          result: CaseResult) -> tuple[sitk.Image, sitk.Image | None]:
    """The anterior-posterior crop of ``--crop-ap`` (its box into ``result``; a warning when it cuts labels)."""
    box = ap_crop_box(image, options.crop_ap)
    result.crop = box.to_json()
    image = apply_crop(image, box)
    if labels_image is not None:
        lost = _voxels_outside(sitk.GetArrayViewFromImage(labels_image), box.index_slices())
        if lost:
            names = {v: k for k, v in TargetScheme(options.binary).dataset_labels(with_ignore=True).items()}
            detail = ", ".join(f"{names.get(v, v)} {n}" for v, n in lost.items())
            result.warnings.append(f"the anterior-posterior crop removes labelled voxels ({detail})")
        labels_image = apply_crop(labels_image, box)
    return image, labels_image


def _convert(entry: CaseEntry, image_out: Path, label_out: Path | None, options: ConvertOptions,
             result: CaseResult) -> None:
    if entry.problems:
        raise ValueError("; ".join(entry.problems))
    if not is_safe_case_id(entry.case_id):
        raise ValueError(f"{entry.folder}: unsafe case id {entry.case_id!r} (use letters, digits, '.', '_', '-'; "
                         "no path separators or '..')")
    assert entry.image_path is not None
    image = read_volume(entry.image_path)
    result.size = tuple(int(v) for v in image.GetSize())
    result.spacing_mm = tuple(round(float(v), 6) for v in image.GetSpacing())
    labels_image = None
    if label_out is not None:
        labels_image = _target_labels(image, _read_mask_on(image, entry, options, result), entry, options, result)
    if options.crop_ap:
        image, labels_image = _crop(image, labels_image, options, result)
    write_volume(image, image_out)
    if labels_image is not None and label_out is not None:
        write_volume(labels_image, label_out)


# ------------------------------------------------------------------------------------------------------------------
# The batch


@dataclass
class ConversionReport:
    """Everything a conversion did: the dataset folder, one result per discovered case, the splits."""

    dataset: Path | None
    results: list[CaseResult]
    splits: list[dict[str, list[str]]]
    warnings: list[str] = field(default_factory=list)

    @property
    def converted(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "converted"]

    @property
    def skipped(self) -> list[CaseResult]:
        return [r for r in self.results if r.status != "converted"]


def _mark_duplicates(entries: Sequence[CaseEntry]) -> None:
    first: dict[str, CaseEntry] = {}
    for entry in entries:
        if entry.case_id in first:
            entry.problems.append(f"{entry.folder}: duplicate case id {entry.case_id!r} (also "
                                  f"{first[entry.case_id].folder}); rename one of them")
        else:
            first[entry.case_id] = entry


def _nnunet_ids(entries: Sequence[CaseEntry], name: str, keep_case_ids: bool) -> list[str]:
    if keep_case_ids:
        return [e.case_id for e in entries]
    return [f"{name}_{n:04d}" for n in range(1, len(entries) + 1)]


def _crashed(task: tuple, exc: BaseException) -> CaseResult:
    entry, nnunet_id = task[0], task[1]
    return CaseResult(entry.case_id, nnunet_id, entry.source, str(entry.image_path or ""), str(entry.mask_path or ""),
                      reason=f"{entry.folder}: worker failed ({exc})")


def _make_splits(train: list[CaseResult], entries: dict[str, CaseEntry], split: SplitOptions,
                 ) -> tuple[list[tuple[list[str], list[str]]], dict[str, str]]:
    ids = [r.original_case_id for r in train]
    known = set(ids)
    groups = subject_groups(ids, {c: entries[c].same_subject_as for c in ids},
                            {**{c: entries[c].subject_id for c in ids if entries[c].subject_id},
                             **{c: s for c, s in (split.subjects or {}).items() if c in known}})
    if split.val_cases is not None:
        to_original = {r.nnunet_case_id: r.original_case_id for r in train}
        requested = [to_original.get(c, c) for c in split.val_cases]
        unknown = sorted(set(requested) - known)
        if unknown:
            raise ConversionError(f"validation cases not among the converted training cases: {unknown[:10]}")
        folds = [explicit_split(ids, groups, requested)]
    elif len(set(groups.values())) < 2:
        folds = []  # one subject: nothing to split (train with nnU-Net's fold "all")
    elif split.val_fraction is not None:
        folds = [train_val_split(ids, groups, split.val_fraction, split.seed)]
    else:
        folds = k_fold_splits(ids, groups, min(split.folds, len(set(groups.values()))), split.seed)
    return folds, groups


def _mapping_csv(results: Sequence[CaseResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MAPPING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        row = asdict(r)
        crop = r.crop or {}
        row.update({
            "warnings": " | ".join(r.warnings), "levels": " ".join(r.levels),
            "ignored_levels": " ".join(r.ignored_levels), "background_levels": " ".join(r.background_levels),
            "size": "x".join(map(str, r.size)), "spacing_mm": "x".join(f"{v:g}" for v in r.spacing_mm),
            "crop_axis": crop.get("axis", ""), "crop_start": crop.get("start", ""), "crop_stop": crop.get("stop", ""),
        })
        writer.writerow({k: row.get(k, "") for k in MAPPING_COLUMNS})
    return buffer.getvalue()


def _discover_all(roots: Sequence[str | Path], discovery: DiscoveryOptions) -> list[CaseEntry]:
    """Every case folder under ``roots``, duplicates and QC-excluded cases marked with their problem; raises
    :class:`ConversionError` when there is none or ``--test-cases`` names a case not found."""
    image_patterns, mask_patterns = discovery.image_patterns, discovery.mask_patterns
    entries: list[CaseEntry] = []
    for root in roots:
        entries.extend(discover_cases(root, image_patterns, mask_patterns, discovery.levels_file))
    if not entries:
        raise ConversionError(f"no case folders found under {', '.join(map(str, roots))} (a case folder holds an "
                              f"image ({', '.join(image_patterns)}) and a mask ({', '.join(mask_patterns)}))")
    _mark_duplicates(entries)
    skip_statuses = {s.lower() for s in discovery.skip_qc}
    for entry in entries:
        if entry.qc_status in skip_statuses:
            note = f": {entry.qc_note[:200]}" if entry.qc_note else ""
            entry.problems.append(f"{entry.folder}: the export marks this case QC '{entry.qc_status}'{note} "
                                  "(excluded; --skip-qc none keeps it)")
    unknown_tests = sorted(set(discovery.test_cases) - {e.case_id for e in entries})
    if unknown_tests:
        raise ConversionError(f"--test-cases names cases that were not found: {unknown_tests[:10]}")
    return entries


def _case_tasks(entries: Sequence[CaseEntry], ids: Sequence[str], writer: DatasetWriter, discovery: DiscoveryOptions,
                options: ConvertOptions) -> tuple[list[tuple], dict[str, str]]:
    """One :func:`convert_case` task per entry (its output paths in the train or test subset) and each case's
    subset; a case without a mask goes to the test subset (``unlabelled='test'``) or is marked to be skipped."""
    test_set = set(discovery.test_cases)
    tasks, subset_of = [], {}
    for entry, nnunet_id in zip(entries, ids, strict=True):
        is_test = entry.case_id in test_set
        if entry.mask_path is None:
            if discovery.unlabelled == "test":
                is_test = True
            else:
                entry.problems.append(missing_message(entry.folder, "mask", discovery.mask_patterns))
        subset_of[nnunet_id] = "test" if is_test else "train"
        has_label = entry.mask_path is not None
        tasks.append((entry, nnunet_id, writer.image_path(nnunet_id, test=is_test),
                      writer.label_path(nnunet_id, test=is_test) if has_label else None, options))
    return tasks, subset_of


def _assign_splits(train: Sequence[CaseResult], entries: Sequence[CaseEntry],
                   split: SplitOptions) -> list[dict[str, list[str]]]:
    """The cross-validation folds of the converted training cases (subjects kept together): each result's subject
    group and split column set, nnU-Net's ``splits_final.json`` content returned."""
    folds, groups = _make_splits(train, {e.case_id: e for e in entries}, split)
    to_nnunet = {r.original_case_id: r.nnunet_case_id for r in train}
    for r in train:
        r.subject_group = groups[r.original_case_id]
        if not folds:
            r.split = "all"
        elif len(folds) == 1:
            r.split = "val" if r.original_case_id in set(folds[0][1]) else "train"
        else:
            r.split = f"val fold {next(f for f, (_, val) in enumerate(folds) if r.original_case_id in val)}"
    return splits_json([([to_nnunet[c] for c in tr], [to_nnunet[c] for c in va]) for tr, va in folds])


def _dataset_json(name: str, channel_name: str, options: ConvertOptions, train: Sequence[CaseResult]) -> dict:
    """nnU-Net's dataset.json, with the conversion settings that prediction reads back under ``spine_convert``."""
    scheme = TargetScheme(options.binary)
    return {
        "name": name,
        "description": "Vertebral bodies in sagittal lumbar spine MRI (spine-convert)",
        "reference": PAPER_REFERENCE,
        "channel_names": {"0": channel_name},
        "labels": scheme.dataset_labels(with_ignore=any(r.ignored_levels for r in train)),
        "numTraining": len(train),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
        ConversionMetadata.KEY: ConversionMetadata(tool_version(), options.crop_ap, options.binary,
                                                   options.unknown_levels).to_json(),
    }


def _provenance(command: str, roots: Sequence[str | Path], options: ConvertOptions, discovery: DiscoveryOptions,
                split: SplitOptions, results: Sequence[CaseResult]) -> dict:
    """``spine_convert.json``: the command, its options and what became of every case."""
    return {
        "command": command,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool_version": tool_version(),
        "roots": [str(Path(r).resolve()) for r in roots],
        "options": {**asdict(options), "label_map": None},
        "discovery": asdict(discovery),
        "label_map_source": options.label_map_source,
        "split": {**asdict(split), "subjects": None},
        "crop_boxes": {r.nnunet_case_id: r.crop for r in results if r.crop},
        "converted": len([r for r in results if r.status == "converted"]),
        "skipped": {r.original_case_id: r.reason for r in results if r.status != "converted"},
    }


def convert_export(roots: Sequence[str | Path], raw_dir: str | Path, dataset_id: int, name: str,
                   options: ConvertOptions = ConvertOptions(), split: SplitOptions = SplitOptions(),
                   discovery: DiscoveryOptions = DiscoveryOptions(), channel_name: str = "T2",
                   overwrite: bool = False, strict: bool = False, jobs: int = 1, progress: bool = True,
                   command: str = "") -> ConversionReport:
    """Convert the in-house exports under ``roots`` into ``raw_dir/DatasetNNN_name``.

    Cases whose level file gives a QC status in ``discovery.skip_qc`` (default: ``bad``) are skipped. Each case
    that cannot be converted is skipped with its reason (``strict`` stops at the first instead, writing nothing).
    Raises :class:`ConversionError` when no training case converts, and
    :class:`~dataset_conversion.writer.DatasetExistsError` when the dataset exists and ``overwrite`` is not set.
    """
    if discovery.unlabelled not in ("skip", "test"):
        raise ValueError(f"unlabelled must be 'skip' or 'test', got {discovery.unlabelled!r}")
    writer = DatasetWriter(raw_dir, dataset_id, name, overwrite)  # refuses an existing dataset before any work
    entries = _discover_all(roots, discovery)
    ids = _nnunet_ids(entries, name, discovery.keep_case_ids)
    results: list[CaseResult] = []

    def on_result(_: int, result: CaseResult) -> None:
        results.append(result)
        if strict and result.status != "converted":
            raise ConversionError(f"--strict: case {result.original_case_id} failed: {result.reason}")

    with writer:
        tasks, subset_of = _case_tasks(entries, ids, writer, discovery, options)
        parallel_map(convert_case, tasks, jobs, progress, on_crash=_crashed, on_result=on_result)
        order = {nnunet_id: n for n, nnunet_id in enumerate(ids)}
        results.sort(key=lambda r: order[r.nnunet_case_id])
        for result in results:
            result.subset = subset_of[result.nnunet_case_id]
        train = [r for r in results if r.status == "converted" and r.subset == "train"]
        if not train:
            raise ConversionError("no training case could be converted:\n" + "\n".join(
                f"  {r.original_case_id}: {r.reason}" for r in results if r.status != "converted"))
        splits = _assign_splits(train, entries, split)
        writer.write_json("dataset.json", _dataset_json(name, channel_name, options, train))
        notes = []
        if splits:
            writer.write_json("splits_final.json", splits)
        else:
            notes.append("all training cases come from one subject: no splits_final.json was written; train with "
                         "nnU-Net's fold 'all'")
        writer.write_text("case_mapping.csv", _mapping_csv(results))
        writer.write_json("spine_convert.json", _provenance(command, roots, options, discovery, split, results))
        dataset = writer.commit()
    warnings = notes + _preprocessed_split_warning(dataset.name, splits)
    return ConversionReport(dataset=dataset, results=results, splits=splits, warnings=warnings)


def _preprocessed_split_warning(folder_name: str, splits: list[dict[str, list[str]]]) -> list[str]:
    preprocessed = nnunet_folder("nnUNet_preprocessed")
    if not preprocessed:
        return []
    existing = Path(preprocessed) / folder_name / "splits_final.json"
    if existing.is_file():
        try:
            if json.loads(existing.read_text()) != splits:
                return [f"{existing} holds other splits; nnU-Net keeps that file and refuses a different one when "
                        "planning: delete it to use the new splits"]
        except (OSError, json.JSONDecodeError):
            return [f"{existing} cannot be read; delete it"]
    return []
