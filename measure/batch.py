"""Many mask files -> one CSV: discovery, case ids, parallel workers, progress, atomic writing, appending."""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import traceback
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from .bodies import volume_bodies
from .io import MASK_SUFFIXES, MaskReadError, is_image_file, mask_volume, read_image_like, read_mask, strip_suffix
from .levels import LabelMap, LabelMapError, load_label_map, merged_level_values, project_label_map
from .outputs import atomic_write_text, folder_lock
from .qc import render_qc, write_qc
from .runtime import parallel_map, tool_version
from .segment_table import (
    SEGMENT_COLUMNS,
    SPINE_COLUMNS,
    error_spine_row,
    segment_rows,
    spine_row,
    to_segment_frame,
    to_spine_frame,
)
from .segments import measure_segments, spine_summary
from .spine import measure_spine
from .subregions import read_bodies
from .table import COLUMNS, error_row, rows_for_case, to_frame
from .vertebra import MethodParameters


def _walk_files(folder: Path, pattern: str) -> list[Path]:
    """Files below ``folder`` whose name matches ``pattern``, following symbolic links to folders (a folder of links
    is a common way to select or pseudonymise cases) but never the same real folder twice (no loops). The paths keep
    the links: a case id taken from a folder name is the link's, never its target's."""
    found: list[Path] = []
    visited: set[str] = set()
    for root, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:
            folders[:] = []
            continue
        visited.add(real)
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        found.extend(Path(root) / name for name in files if fnmatch.fnmatch(name, pattern))
    return found


def find_mask_files(inputs: Sequence[str | Path], pattern: str | None = None, recursive: bool = False) -> list[Path]:
    """Expand files and folders into a sorted list of mask files (missing paths are kept, to be reported);
    ``recursive`` follows symbolically linked folders."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            candidates = _walk_files(item, pattern or "*") if recursive else item.glob(pattern or "*")
            found.extend(sorted(p for p in candidates if is_image_file(p)))
        else:
            found.append(item)
    unique: list[Path] = []
    seen = set()
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


GENERIC_MASK_NAMES = frozenset({"mask", "seg", "segmentation", "label", "labels"})


def _folder_name(path: Path) -> str:
    """Name of the folder the path is given in (``..`` resolved, symbolic links kept: a linked case folder's own
    name, never its target's)."""
    return Path(os.path.abspath(path)).parent.name


def case_ids(paths: Sequence[Path], mode: str = "auto") -> list[str]:
    """Case id per file: the file name without extension; with ``auto``, generic names (``mask``, ``seg``,
    ``segmentation``, ``label(s)``) and names shared by several files (one folder per case) use the parent folder's
    name instead (``parent`` forces that, ``name`` never does)."""
    stems = [strip_suffix(p) for p in paths]
    if mode == "name":
        return stems
    if mode == "parent":
        return [_folder_name(p) for p in paths]
    if mode != "auto":
        raise ValueError(f"unknown case id mode {mode!r} (auto, name, parent)")
    ids = [_folder_name(p) if stems.count(s) > 1 or s.lower() in GENERIC_MASK_NAMES else s
           for p, s in zip(paths, stems, strict=True)]
    return [f"{i}_{n}" if ids.count(i) > 1 else i for n, i in enumerate(ids)]


@dataclass(frozen=True)
class MeasureOptions:
    """Everything a worker needs to measure one file."""

    params: MethodParameters = field(default_factory=MethodParameters)
    label_map: LabelMap = field(default_factory=project_label_map)
    ignore_unmapped: bool = False
    labels_per_case: str | None = None  # name of a label-map JSON beside each mask (e.g. levels.json)
    qc_dir: str | None = None
    images: str | None = None  # a folder of images, an image file, or None (look for image.* beside mask.*)
    subregions: str | None = None
    """Whole-vertebra masks with a subregion mask (SPINEPS): how to find it (:func:`.subregions.subregion_path`);
    only the vertebral bodies are measured."""
    bodies_from_shape: bool = False
    """Whole-vertebra masks without a subregion mask (TotalSpineSeg, TotalSegmentator): the bodies are cut out by
    shape (:mod:`.bodies`)."""


def find_image_for(mask_path: Path, case_id: str, images: str | None) -> Path | None:
    """Intensity image for a QC background: ``images`` folder (``CASE_0000.ext`` or ``CASE.ext``) or file, or an
    ``image.*`` beside a mask named ``mask.*`` (the in-house export layout)."""
    if images:
        folder = Path(images)
        if folder.is_file():
            return folder
        for suffix in MASK_SUFFIXES:
            for name in (f"{case_id}_0000{suffix}", f"{case_id}{suffix}"):
                if (folder / name).exists():
                    return folder / name
        return None
    if strip_suffix(mask_path).lower() == "mask":
        for suffix in MASK_SUFFIXES:
            candidate = mask_path.with_name(f"image{suffix}")
            if candidate.exists():
                return candidate
    return None


@dataclass
class CaseTables:
    """The rows one case (or cohort) gives each of the three tables (:mod:`.table`, :mod:`.segment_table`)."""

    vertebrae: list = field(default_factory=list)
    segments: list = field(default_factory=list)
    spine: list = field(default_factory=list)

    @classmethod
    def error(cls, case_id: str, source: str, message: str) -> CaseTables:
        """A file that could not be measured: an ``error`` row in the vertebra and spine tables, none in segments."""
        return cls([error_row(case_id, source, message)], [], [error_spine_row(case_id, source, message)])


def _read_case(path: Path, options: MeasureOptions):
    """The canonical volume of one mask and the label map it is read with."""
    label_map = options.label_map
    if options.labels_per_case:
        label_map = load_label_map(path.parent / options.labels_per_case)
    if options.subregions:
        image, notes = read_bodies(path, options.subregions)
        volume = mask_volume(image, str(path), options.params.max_obliquity_deg, options.params.resample_oblique)
        volume.notes.extend(notes)
    else:
        volume = read_mask(path, options.params.max_obliquity_deg, options.params.resample_oblique)
    merged, label_map = merged_level_values(volume.array, label_map)
    if merged is not volume.array:  # a bundled map's endplates/parts merged into their vertebra
        volume = replace(volume, array=merged)
    if options.bodies_from_shape:
        volume = volume_bodies(volume, label_map)
    return volume, label_map


def _qc_picture(path: Path, case_id: str, volume, measurements, rows: list[dict], options: MeasureOptions,
                segments=(), summary=None) -> None:
    image = None
    image_path = find_image_for(path, case_id, options.images)
    if image_path is not None:
        try:
            image = read_image_like(image_path, volume)
        except MaskReadError as exc:
            for row in rows:
                row["message"] = "; ".join(filter(None, [row["message"], f"QC background skipped: {exc}"]))
    write_qc(Path(options.qc_dir) / f"{case_id}.png",
             render_qc(case_id, volume, measurements, image, segments=segments, summary=summary))


def measure_case(path: str | Path, case_id: str, options: MeasureOptions) -> CaseTables:
    """Measure one mask file into the rows of the three tables; never raises (a failure is an ``error`` row naming
    the problem)."""
    path = Path(path)
    try:
        volume, label_map = _read_case(path, options)
        measurements = measure_spine(volume, label_map, options.params, options.ignore_unmapped)
        if not measurements:
            why = "; ".join(volume.notes)
            return CaseTables.error(case_id, str(path), f"{path}: mask is empty (no vertebra label)"
                                    + (f": {why}" if why else ""))
        rows = rows_for_case(case_id, volume, measurements)
        segments = measure_segments(volume, measurements, options.params)
        summary = spine_summary(volume, measurements, options.params)
        if options.qc_dir:
            _qc_picture(path, case_id, volume, measurements, rows, options, segments, summary)
        return CaseTables(rows, segment_rows(case_id, volume, segments), [spine_row(case_id, volume, summary)])
    except (MaskReadError, LabelMapError) as exc:
        return CaseTables.error(case_id, str(path), str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad case must never stop a cohort
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return CaseTables.error(case_id, str(path), f"{path}: unexpected error ({detail}); please report it")


def measure_file(path: str | Path, case_id: str, options: MeasureOptions) -> list[dict]:
    """The vertebra-table rows of :func:`measure_case`."""
    return measure_case(path, case_id, options).vertebrae


@dataclass
class Tables:
    """The three tables of a cohort (DataFrames with the fixed columns)."""

    vertebrae: pd.DataFrame
    segments: pd.DataFrame
    spine: pd.DataFrame


def measure_cohort(paths: Sequence[Path], ids: Sequence[str], options: MeasureOptions, jobs: int = 1,
                   progress: bool = True) -> Tables:
    """Measure many files (in parallel with ``jobs`` > 1) into the three tables, in input order."""

    def crashed(task: tuple, exc: BaseException) -> CaseTables:
        path, case_id, _ = task
        return CaseTables.error(case_id, str(path), f"{path}: worker failed ({exc})")

    tasks = [(path, case_id, options) for path, case_id in zip(paths, ids, strict=True)]
    results = parallel_map(measure_case, tasks, jobs, progress, on_crash=crashed)
    return Tables(to_frame([row for case in results for row in case.vertebrae]),
                  to_segment_frame([row for case in results for row in case.segments]),
                  to_spine_frame([row for case in results for row in case.spine]))


def measure_files(
    paths: Sequence[Path], ids: Sequence[str], options: MeasureOptions, jobs: int = 1, progress: bool = True
) -> pd.DataFrame:
    """The vertebra table of :func:`measure_cohort`."""
    return measure_cohort(paths, ids, options, jobs, progress).vertebrae


def sidecar_path(csv_path: Path) -> Path:
    return csv_path.with_suffix(".json") if csv_path.suffix.lower() == ".csv" else Path(f"{csv_path}.json")


@dataclass(frozen=True)
class TableKind:
    """What the writer needs to know of one of the three tables."""

    name: str
    columns: dict
    to_frame: Callable[[list], pd.DataFrame]
    text_columns: tuple[str, ...]  # read back as text when appending


VERTEBRA_TABLE = TableKind("vertebrae", COLUMNS, to_frame, ("case_id", "level"))
SEGMENT_TABLE = TableKind("segments", SEGMENT_COLUMNS, to_segment_frame, ("case_id", "upper_level", "lower_level"))
SPINE_TABLE = TableKind("spine", SPINE_COLUMNS, to_spine_frame, ("case_id",))


def companion_path(csv_path: str | Path, table: str) -> Path:
    """Default path of the segments or spine table beside the vertebra CSV: ``<stem>_<table>.csv``."""
    csv_path = Path(csv_path)
    stem = csv_path.stem if csv_path.suffix.lower() == ".csv" else csv_path.name
    return csv_path.with_name(f"{stem}_{table}.csv")


def method_record(options: MeasureOptions, kind: TableKind = VERTEBRA_TABLE) -> dict:
    """The method parameters and label map, as JSON-compatible data (as written to the sidecar)."""
    return json.loads(json.dumps({
        "tool": "spine-measure",
        "tool_version": tool_version(),
        "method": asdict(options.params),
        "label_map": ({"per_case": options.labels_per_case} if options.labels_per_case else
                      {"source": options.label_map.source, "labels": options.label_map.to_json_dict()}),
        "definition": "docs/measurements.md",
        **({} if kind is VERTEBRA_TABLE else {"table": kind.name}),
        "columns": kind.columns,
    }))


class OutputExistsError(FileExistsError):
    pass


@dataclass(frozen=True)
class TablePaths:
    """Where the three tables go (None: :func:`companion_path` of the vertebra CSV)."""

    vertebrae: Path
    segments: Path | None = None
    spine: Path | None = None

    def resolved(self) -> list[tuple[Path, TableKind]]:
        return [(Path(self.vertebrae), VERTEBRA_TABLE),
                (Path(self.segments or companion_path(self.vertebrae, "segments")), SEGMENT_TABLE),
                (Path(self.spine or companion_path(self.vertebrae, "spine")), SPINE_TABLE)]


def measure_to_tables(paths: Sequence[Path], ids: Sequence[str], outputs: TablePaths, options: MeasureOptions,
                      jobs: int = 1, progress: bool = True, append: bool = False, overwrite: bool = False) -> Tables:
    """Measure ``paths`` (case ids ``ids``) and write the three CSVs with their sidecars (:func:`write_table`):
    what ``spine-measure`` does once its arguments are checked. Returns this run's rows."""
    tables = measure_cohort(paths, ids, options, jobs=jobs, progress=progress)
    inputs = [str(p) for p in paths]
    for (csv_path, kind), frame in zip(outputs.resolved(), (tables.vertebrae, tables.segments, tables.spine),
                                       strict=True):
        write_table(frame, csv_path, options, inputs, append=append, overwrite=overwrite, kind=kind)
    return tables


def measure_and_report(paths: Sequence[Path], ids: Sequence[str], outputs: str | Path | TablePaths,
                       options: MeasureOptions, jobs: int = 1, progress: bool = True, append: bool = False,
                       overwrite: bool = False) -> bool:
    """:func:`measure_to_tables`, then its summary on stderr (cases, rows, where they went, one line per error or
    failed row). Returns whether any vertebra row failed; :class:`OutputExistsError` and ``ValueError`` (a CSV that
    cannot be appended to) pass to the caller."""
    outputs = outputs if isinstance(outputs, TablePaths) else TablePaths(Path(outputs))
    tables = measure_to_tables(paths, ids, outputs, options, jobs=jobs, progress=progress, append=append,
                               overwrite=overwrite)
    frame = tables.vertebrae
    bad = frame[frame["status"].isin(["error", "failed"])]
    written = [path for path, _ in outputs.resolved()]
    print(f"spine-measure: {frame['case_id'].nunique()} case(s), {len(frame)} vertebra row(s) -> {written[0]}; "
          f"{len(tables.segments)} segment row(s) -> {written[1]}; spine -> {written[2]}"
          + (f"; QC pictures in {options.qc_dir}" if options.qc_dir else ""), file=sys.stderr)
    for _, row in bad.iterrows():
        print(f"  {row['status']}: {row['case_id']} {row['level'] or ''} {row['message']}", file=sys.stderr)
    return bool(len(bad))


def write_table(frame: pd.DataFrame, csv_path: str | Path, options: MeasureOptions, inputs: Iterable[str],
                append: bool = False, overwrite: bool = False, kind: TableKind = VERTEBRA_TABLE) -> pd.DataFrame:
    """Write one of the tables (``kind``) atomically with its JSON sidecar; with ``append``, merge into an existing
    CSV, replacing rows of re-measured cases. Returns the table written."""
    csv_path = Path(csv_path)
    with folder_lock(csv_path.parent):  # concurrent --append runs take turns: no run loses another's rows
        return _write_table_locked(frame, csv_path, options, list(inputs), append, overwrite, kind)


def _write_table_locked(frame: pd.DataFrame, csv_path: Path, options: MeasureOptions, inputs: list[str],
                        append: bool, overwrite: bool, kind: TableKind) -> pd.DataFrame:
    record = method_record(options, kind)
    if csv_path.exists() and not (append or overwrite):
        raise OutputExistsError(f"{csv_path} exists: use --append to add cases or --overwrite to replace it")
    if append and csv_path.exists():
        previous_sidecar = sidecar_path(csv_path)
        if previous_sidecar.exists():
            earlier = json.loads(previous_sidecar.read_text())
            if earlier.get("method") != record["method"] or earlier.get("label_map") != record["label_map"]:
                raise ValueError(f"{csv_path} was measured with other method parameters or another label map "
                                 f"(see {previous_sidecar}); write a new file or use --overwrite")
        existing = pd.read_csv(csv_path, dtype=dict.fromkeys(kind.text_columns, str))
        missing = [c for c in kind.columns if c not in existing.columns]
        if missing:
            raise ValueError(f"{csv_path} lacks columns {missing[:5]}: not a spine-measure {kind.name} table")
        existing = existing[~existing["case_id"].isin(set(frame["case_id"]))]
        frame = kind.to_frame(pd.concat([existing[list(kind.columns)], frame], ignore_index=True).to_dict("records"))
    record["written_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["inputs"] = inputs
    record["cases"] = int(frame["case_id"].nunique())
    atomic_write_text(csv_path, frame.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(sidecar_path(csv_path), json.dumps(record, indent=1) + "\n")
    return frame
