"""Which label value means which class in the predicted and in the reference masks; classes are matched by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..levels import LabelMap, LabelMapError, is_known_level, level_rank, project_label_map, read_label_table


@dataclass(frozen=True)
class ClassMap:
    """Label value -> class name of one side (prediction or reference), and its ignore value (nnU-Net)."""

    classes: dict[int, str]
    ignore: int | None
    source: str

    @property
    def is_levels(self) -> bool:
        """Every class is a vertebral level (a multiclass map); otherwise a binary map with one class."""
        return all(is_known_level(name) for name in self.classes.values())

    def level_map(self) -> LabelMap:
        """The measurement package's label map (levels only)."""
        return LabelMap(dict(self.classes), self.source)


def read_class_map(path: str | Path) -> ClassMap:
    """A class map from a label-map JSON (nnU-Net ``dataset.json``, ``{value: name}``, export ``levels.json``).

    Either every class is a level name (T11, L1, ...) or there is exactly one class of any name (a binary map such as
    ``{"vertebra": 1}``); raises :class:`LabelMapError` otherwise.
    """
    classes, ignore = read_label_table(path)
    mapped = ClassMap(dict(sorted(classes.items())), ignore, str(path))
    if not mapped.is_levels and len(classes) != 1:
        others = sorted(n for n in classes.values() if not is_known_level(n))
        raise LabelMapError(f"{path}: classes {others} are no vertebral levels; a label map holds level names "
                            "(T11, L1, ...) or exactly one class (binary)")
    if ignore is not None and ignore in classes:
        raise LabelMapError(f"{path}: the ignore value {ignore} is also a class")
    return mapped


def project_class_map() -> ClassMap:
    scheme = project_label_map()
    return ClassMap(dict(scheme.levels), None, scheme.source)


def default_class_map(folder: Path, explicit: str | Path | None, shared: str | Path | None) -> ClassMap:
    """The class map of one side: its own option, else ``--labels``, else a ``dataset.json`` in the folder or its
    parent (nnU-Net's prediction and raw-dataset layouts), else the project scheme."""
    for candidate in (explicit, shared):
        if candidate:
            return read_class_map(candidate)
    for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
        if candidate.is_file():
            return read_class_map(candidate)
    return project_class_map()


@dataclass(frozen=True)
class ClassPairing:
    """The classes evaluated: names in cranio-caudal order with their value in each side (None: absent there)."""

    names: tuple[str, ...]
    predicted_values: tuple[int | None, ...]
    reference_values: tuple[int | None, ...]
    multiclass: bool  # both sides name levels; otherwise only the binary evaluation is meaningful
    notes: tuple[str, ...]


def pair_classes(predicted: ClassMap, reference: ClassMap) -> ClassPairing:
    """Match the two maps' classes by name and explain every difference."""
    notes: list[str] = []
    multiclass = predicted.is_levels and reference.is_levels
    if not multiclass:
        side, single = ("prediction", predicted) if not predicted.is_levels else ("reference", reference)
        notes.append(f"the {side} label map has one class ({', '.join(single.classes.values())}), so only the "
                     "binary (any vertebra) evaluation is made")
        return ClassPairing((), (), (), False, tuple(notes))
    by_name_p = {n: v for v, n in predicted.classes.items()}
    by_name_r = {n: v for v, n in reference.classes.items()}
    names = tuple(sorted(set(by_name_p) | set(by_name_r), key=level_rank))
    only_p = [n for n in names if n not in by_name_r]
    only_r = [n for n in names if n not in by_name_p]
    if only_r:
        notes.append(f"class(es) {only_r} only in the reference label map ({reference.source}): their reference "
                     "voxels count as false negatives")
    if only_p:
        notes.append(f"class(es) {only_p} only in the prediction label map ({predicted.source}): their predicted "
                     "voxels count as false positives")
    differing = [n for n in names if n in by_name_p and n in by_name_r and by_name_p[n] != by_name_r[n]]
    if differing:
        notes.append(f"class(es) {differing} have different values in the two label maps; matched by name")
    return ClassPairing(names, tuple(by_name_p.get(n) for n in names), tuple(by_name_r.get(n) for n in names), True,
                        tuple(notes))


__all__ = ["ClassMap", "ClassPairing", "LabelMapError", "default_class_map", "pair_classes", "project_class_map",
           "read_class_map"]
