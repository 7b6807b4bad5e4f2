"""Vertebral level names and label maps (label value -> level name), read from JSON data files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Mapping

import numpy as np


class LabelMapError(ValueError):
    """A label map file cannot be used (unreadable, unknown level names, duplicate values)."""


@lru_cache(maxsize=1)
def _level_data() -> dict:
    return json.loads(resources.files("measure").joinpath("data/levels.json").read_text())


def level_order() -> tuple[str, ...]:
    """All known level names in cranio-caudal order (C1 ... Co)."""
    return tuple(_level_data()["order"])


def level_rank(level: str) -> int:
    """Cranio-caudal rank of a level name (C1 = 0); raises KeyError for an unknown name."""
    return level_order().index(level)


def is_known_level(level: str) -> bool:
    return level in _level_data()["order"]


def is_optional_level(level: str) -> bool:
    """Transitional variants (T13, L6) that are usually absent."""
    return level in _level_data()["optional"]


def is_sacral_level(level: str) -> bool:
    return level in _level_data()["sacral"]


def parse_level_range(text: str) -> list[str]:
    """``"T12-S1"`` -> ``["T12", "L1", ..., "S1"]`` skipping optional variants; ``"L3"`` -> ``["L3"]``."""
    first, _, last = text.partition("-")
    last = last or first
    for name in (first, last):
        if not is_known_level(name):
            raise ValueError(f"unknown level {name!r} in level range {text!r}")
    i, j = level_rank(first), level_rank(last)
    if j < i:
        raise ValueError(f"level range {text!r} must run cranio-caudally")
    return [lv for lv in level_order()[i : j + 1] if not is_optional_level(lv) or lv in (first, last)]


@dataclass(frozen=True)
class CaudalNeighbour:
    """The next caudal vertebra of a level among the levels present in a mask."""

    level: str | None
    missing: tuple[str, ...]  # non-optional levels between the two that are absent from the mask


def caudal_neighbour(level: str, present: set[str]) -> CaudalNeighbour:
    """Next present level below ``level``; ``missing`` lists expected levels skipped on the way.

    Optional variants (T13, L6) that are absent are skipped silently. When no level below is present,
    ``level`` is None.
    """
    order = level_order()
    missing: list[str] = []
    for candidate in order[level_rank(level) + 1 :]:
        if candidate in present:
            return CaudalNeighbour(candidate, tuple(missing))
        if not is_optional_level(candidate):
            missing.append(candidate)
    return CaudalNeighbour(None, ())


@dataclass(frozen=True)
class LabelMap:
    """Mapping from mask label values to level names, with where it came from.

    A bundled export-wide map may name one level by several values (VerSe: 20 the body of L1, 220 its endplate) and
    name values that are background (VerSe: 100+X the disc below X); :func:`merged_level_values` makes one value per
    level of a mask before it is measured."""

    levels: Mapping[int, str]
    source: str
    background_values: frozenset[int] = frozenset()

    def level(self, value: int) -> str | None:
        return self.levels.get(int(value))

    def to_json_dict(self) -> dict[str, str]:
        return {str(k): v for k, v in sorted(self.levels.items())}


@lru_cache(maxsize=1)
def _project_labels() -> tuple[tuple[int, str], ...]:
    data = json.loads(resources.files("measure").joinpath("data/project_labels.json").read_text())
    return tuple((int(k), v) for k, v in data["labels"].items())


def project_label_map() -> LabelMap:
    """The project scheme: 1 T11, 2 T12, 3 L1, ..., 7 L5, 8 S1, 9 S2 (0 background)."""
    return _validated(dict(_project_labels()), "project scheme (T11=1 ... S2=9)")


def bundled_label_maps() -> dict[str, Path]:
    """Label maps shipped with the package (``measure/data/label_maps``), by name (e.g. ``verse``)."""
    folder = resources.files("measure").joinpath("data/label_maps")
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".json")}


def load_label_map(spec: str | Path) -> LabelMap:
    """Read a label map from a JSON file, or a bundled one by name (:func:`bundled_label_maps`, e.g. ``verse``).

    Accepted forms: an nnU-Net ``dataset.json`` (``"labels": {"L1": 3, ...}``; ``background`` and ``ignore`` are
    skipped; region-based labels are refused), a ``{"1": "T11", ...}`` mapping, or the export form
    ``{"labels": {"1": "T11", ...}}`` (the ``levels.json`` of an in-house export). A file must name each level by
    one value (two values of one level would be two bodies measured as one); a bundled map may merge values into
    one level (VerSe's endplates), as its description says. Values named ``background`` (discs) are background.
    """
    path, bundled = label_map_path(spec)
    levels, _, background = _label_entries(path)
    source = f"{spec} (bundled map {path.name})" if bundled else str(spec)
    return _validated(levels, source, merges_allowed=bundled, background_values=background)


def label_map_path(spec: str | Path) -> tuple[Path, bool]:
    """Where a label map given on a command line is: the file ``spec`` if there is one, else the bundled map of that
    name (:func:`bundled_label_maps`); and whether it is bundled. Raises :class:`LabelMapError` listing the bundled
    names when it is neither."""
    if Path(spec).is_file():
        return Path(spec), False
    bundled = bundled_label_maps()
    if str(spec) not in bundled:
        names = ", ".join(sorted(bundled))
        problem = "a folder, not a file" if Path(spec).is_dir() else "no such file"
        raise LabelMapError(f"{spec}: cannot read label map: {problem} (a JSON file, or a bundled map: {names})")
    return bundled[str(spec)], True


def label_table_from_file(path: str | Path) -> object:
    """The label table of a label-map JSON file: its ``labels`` entry, or the whole object (the ``{"1": "T11"}``
    form). Raises :class:`LabelMapError` for an unreadable file or one that is not a JSON object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LabelMapError(f"{path}: cannot read label map: {exc}") from exc
    if not isinstance(data, dict):
        raise LabelMapError(f"{path}: a label map must be a JSON object")
    return data.get("labels", data)


def merged_level_values(array: np.ndarray, label_map: LabelMap) -> tuple[np.ndarray, LabelMap]:
    """One value per level: the values a map merges into one level become its smallest value, its background values
    become 0, other values stay. Returns ``array`` itself and ``label_map`` when there is nothing to change."""
    by_level: dict[str, list[int]] = {}
    for value, level in label_map.levels.items():
        by_level.setdefault(level, []).append(value)
    target = {value: min(values) for values in by_level.values() for value in values if value != min(values)}
    target.update(dict.fromkeys(label_map.background_values, 0))
    levels = {min(values): level for level, values in by_level.items()}
    merged_map = LabelMap(dict(sorted(levels.items())), label_map.source)
    if not target or array.size == 0:
        return array, (label_map if not target else merged_map)
    values, inverse = np.unique(array, return_inverse=True)  # sorts once; no lookup table as long as the top value
    if not np.isin(values, list(target)).any():
        return array, merged_map
    mapped = np.array([target.get(int(v), int(v)) for v in values], dtype=array.dtype)
    return mapped[inverse].reshape(array.shape), merged_map


def read_label_table(path: str | Path) -> tuple[dict[int, str], int | None]:
    """Label value -> class name from a label-map JSON (any form :func:`load_label_map` takes), and the ignore
    value (nnU-Net's ``"ignore"`` label) or None. Names are not checked against the level names."""
    levels, ignore, _ = _label_entries(path)
    return levels, ignore


SPECIAL_NAMES = ("background", "ignore")  # label-table names that are not classes


def _label_entries(path: str | Path) -> tuple[dict[int, str], int | None, frozenset[int]]:
    """:func:`read_label_table` plus the non-zero values named ``background``."""
    entries = parse_label_entries(label_table_from_file(path), str(path))
    ignore = [value for value, name in entries.items() if name == "ignore"]
    if len(ignore) > 1:
        raise LabelMapError(f"{path}: several values are named 'ignore' ({sorted(ignore)}); nnU-Net has one")
    levels = {value: name for value, name in entries.items() if name not in SPECIAL_NAMES}
    background = frozenset(value for value, name in entries.items() if name == "background")
    return levels, (ignore[0] if ignore else None), background


def parse_label_entries(table: object, source: str) -> dict[int, str]:
    """The one reader of label tables (measurement, evaluation and converter): mask value -> name from the export
    form ``{"1": "T11"}`` or nnU-Net's ``{"T11": 1}``; names as given, except ``background`` and ``ignore`` (any case),
    which are returned lower-case. Value 0 named background is dropped (it is background anyway).

    Raises :class:`LabelMapError` naming ``source`` for: no labels, a region (list of values), an entry that is
    neither form, a value that is not an integer, a value that is not positive, a value named twice. Names are not
    checked against the level names (callers decide: the measurement wants levels, the evaluation any classes)."""
    if not isinstance(table, Mapping) or not table:
        raise LabelMapError(f"{source}: no labels found (expected {{\"1\": \"T11\", ...}})")
    entries: dict[int, str] = {}
    for key, item in table.items():
        if isinstance(item, (list, tuple)):
            raise LabelMapError(f"{source}: region-based label {key!r} ({item}) cannot name a single vertebra")
        if isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise LabelMapError(f"{source}: cannot interpret label entry {key!r}: {item!r}")
        name, number = (str(key), item) if isinstance(item, (int, float)) else (item, key)
        try:
            value = int(number)
        except (TypeError, ValueError) as exc:
            raise LabelMapError(f"{source}: label value {number!r} of {name!r} is not an integer") from exc
        if name.lower() in SPECIAL_NAMES:
            name = name.lower()
        if value == 0 and name == "background":
            continue
        if value <= 0:
            raise LabelMapError(f"{source}: mask value {value} ({name}) must be positive (0 is background)")
        if value in entries:
            raise LabelMapError(f"{source}: mask value {value} is named twice ({entries[value]}, {name})")
        entries[value] = name
    return entries


def levels_named_twice(levels: Mapping[int, str]) -> list[str]:
    """Level names given to more than one label value (sorted)."""
    names = list(levels.values())
    return sorted({n for n in names if names.count(n) > 1})


def _validated(levels: dict[int, str], source: str, merges_allowed: bool = False,
               background_values: frozenset[int] = frozenset()) -> LabelMap:
    unknown = sorted({name for name in levels.values() if not is_known_level(name)})
    if unknown:
        raise LabelMapError(f"{source}: unknown level name(s) {unknown}; known: {', '.join(level_order())}")
    if any(v <= 0 for v in levels):
        raise LabelMapError(f"{source}: label values must be positive (0 is background)")
    duplicates = [] if merges_allowed else levels_named_twice(levels)
    if duplicates:
        raise LabelMapError(f"{source}: level(s) {duplicates} mapped from several label values")
    return LabelMap(dict(sorted(levels.items())), source, background_values)
