"""Level names of an export -> the project's nnU-Net label values (label semantics as data).

Target scheme (``measure/data/project_labels.json``): 0 background, 1 T11, 2 T12, 3 L1, ..., 7 L5, 8 S1, 9 S2; with
``binary`` every vertebra is 1 (the paper's single-class model). Mask values whose level lies outside T11-S2 (T10,
L6, T13, ...) go, by policy, to nnU-Net's ignore label (the value after the highest class: 10, or 2 when binary; the
loss skips those voxels), to background, or make the case fail. Export label maps may also name values
``background`` (e.g. intervertebral discs) or ``ignore``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from measure.levels import (
    SPECIAL_NAMES,
    LabelMapError,
    is_known_level,
    label_map_path,
    label_table_from_file,
    level_rank,
    levels_named_twice,
    parse_label_entries,
    project_label_map,
)

UNKNOWN_LEVEL_POLICIES = ("ignore", "background", "error")
SPECIAL_TARGETS = SPECIAL_NAMES
BINARY_CLASS_NAME = "vertebra"


class RelabelError(ValueError):
    """A mask cannot be mapped onto the project scheme; the message names the source and the problem."""


@dataclass(frozen=True)
class TargetScheme:
    """The label values written into ``labelsTr`` and ``dataset.json``."""

    binary: bool = False

    @property
    def classes(self) -> dict[str, int]:
        """Class name -> value, background first (without the ignore label)."""
        if self.binary:
            return {"background": 0, BINARY_CLASS_NAME: 1}
        return {"background": 0, **{level: value for value, level in project_label_map().levels.items()}}

    @property
    def ignore_value(self) -> int:
        """nnU-Net's ignore label must be the highest value: one above the last class."""
        return max(self.classes.values()) + 1

    def dataset_labels(self, with_ignore: bool) -> dict[str, int]:
        labels = dict(self.classes)
        if with_ignore:
            labels["ignore"] = self.ignore_value
        return labels

    def value_of_level(self, level: str) -> int | None:
        """Target value of a level name (None when the level is outside T11-S2)."""
        value = self.classes.get(level) if not self.binary else (1 if level in _scheme_levels() else None)
        return None if value == 0 else value


def _scheme_levels() -> frozenset[str]:
    return frozenset(project_label_map().levels.values())


def parse_label_table(table: Mapping, source: str, one_value_per_level: bool = True) -> dict[int, str]:
    """Mask value -> level name (or ``background``/``ignore``) from ``{"1": "T11"}`` or nnU-Net's ``{"T11": 1}``:
    :func:`measure.levels.parse_label_entries` (the one reader of label tables) plus the converter's rules: every
    name a vertebral level or background/ignore.

    ``one_value_per_level``: refuse a level named by several values (an instance mask's ``levels.json``: two bodies
    would become one class); export-wide maps may merge values into one level (VerSe's endplates 200+X into X)."""
    try:
        values = parse_label_entries(table, source)
    except LabelMapError as exc:
        raise RelabelError(str(exc)) from exc
    for value, name in values.items():
        if name not in SPECIAL_TARGETS and not is_known_level(name):
            raise RelabelError(f"{source}: {name!r} (mask value {value}) is not a vertebral level name "
                               "(C1-C7, T1-T13, L1-L6, S1-S5, Co) nor 'background' or 'ignore'")
    named = {v: n for v, n in values.items() if n not in SPECIAL_TARGETS}
    twice = levels_named_twice(named) if one_value_per_level else []
    if twice:
        given = ", ".join(f"{n} by values {sorted(v for v, m in values.items() if m == n)}" for n in twice)
        raise RelabelError(f"{source}: level(s) named by several mask values ({given}); one level is one vertebra")
    return values


def load_export_label_map(spec: str | Path) -> tuple[dict[int, str], str]:
    """Read an export-wide label map: a JSON file or the name of a bundled map (e.g. ``verse``), found as
    ``spine-measure --labels`` finds it (:func:`measure.levels.label_map_path`)."""
    try:
        path, _ = label_map_path(spec)
        table = label_table_from_file(path)
    except LabelMapError as exc:
        raise RelabelError(str(exc)) from exc
    return parse_label_table(table, str(path), one_value_per_level=False), str(path)


@dataclass
class RelabelResult:
    """The relabelled mask and what happened to each source value."""

    labels: np.ndarray
    levels_present: list[str]
    """Levels of the target scheme with voxels, cranial to caudal."""
    ignored_levels: list[str]
    """Source level names that went to the ignore label."""
    background_levels: list[str]
    """Source level names (or values named background) that became background."""


def relabel(mask: np.ndarray, names: Mapping[int, str], scheme: TargetScheme, unknown_levels: str = "ignore",
            source: str = "mask") -> RelabelResult:
    """Map a mask's values through ``names`` (value -> level/background/ignore) onto ``scheme``.

    Raises :class:`RelabelError` when the mask holds a value without a name, or a level outside T11-S2 under
    ``unknown_levels="error"``. Returns a ``uint8`` array in the mask's own shape.
    """
    if unknown_levels not in UNKNOWN_LEVEL_POLICIES:
        raise ValueError(f"unknown_levels must be one of {UNKNOWN_LEVEL_POLICIES}, got {unknown_levels!r}")
    counts = np.bincount(mask.ravel().astype(np.int64, copy=False)) if mask.size else np.zeros(1, dtype=np.int64)
    present = [int(v) for v in np.nonzero(counts)[0] if v != 0]
    unnamed = [v for v in present if v not in names]
    if unnamed:
        raise RelabelError(f"{source}: mask value(s) {unnamed} have no level name in the label map; name them "
                           "(a level, 'background' or 'ignore') in levels.json or --label-map")
    lookup = np.zeros(len(counts), dtype=np.uint8)
    ignored, background, outside = [], [], []
    for value in present:
        name = names[value]
        if name == "background":
            background.append(f"value {value}")
            continue
        if name == "ignore":
            lookup[value] = scheme.ignore_value
            ignored.append(f"value {value}")
            continue
        target = scheme.value_of_level(name)
        if target is not None:
            lookup[value] = target
        elif unknown_levels == "error":
            outside.append(name)
        elif unknown_levels == "ignore":
            lookup[value] = scheme.ignore_value
            ignored.append(name)
        else:
            background.append(name)
    if outside:
        raise RelabelError(f"{source}: level(s) {sorted(set(outside))} are outside T11-S2 (--unknown-levels error; "
                           "use 'ignore' or 'background' to convert such cases)")
    labels = lookup[mask]
    kept = sorted({names[v] for v in present if lookup[v] not in (0, scheme.ignore_value)}, key=level_rank)
    return RelabelResult(labels=labels, levels_present=kept, ignored_levels=sorted(set(ignored)),
                         background_levels=sorted(set(background)))
