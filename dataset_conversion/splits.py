"""Patient-level train/validation splits written as nnU-Net's ``splits_final.json``.

Cases of one subject (``same_subject_as`` in ``levels.json``, a shared ``subject_id``, or ``--groups``) always land
on the same side. nnU-Net 2.8.1 copies ``RAW/DatasetNNN_Name/splits_final.json`` into the preprocessed folder when
planning, and training then uses it instead of its own random 5-fold split.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np


def subject_groups(case_ids: Sequence[str], same_subject: Mapping[str, Iterable[str]] | None = None,
                   subject_of: Mapping[str, str] | None = None) -> dict[str, str]:
    """Group id per case (union of same-subject links and shared subject ids); the group id is its first case."""
    parent = {c: c for c in case_ids}

    def find(c: str) -> str:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    def union(a: str, b: str) -> None:
        if a in parent and b in parent:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)

    for case, others in (same_subject or {}).items():
        for other in others:
            union(case, other)
    by_subject: dict[str, str] = {}
    for case, subject in (subject_of or {}).items():
        if case in parent and subject:
            union(case, by_subject.setdefault(subject, case))
    return {c: find(c) for c in case_ids}


def _groups_in_order(case_ids: Sequence[str], groups: Mapping[str, str]) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    for case in case_ids:
        members.setdefault(groups.get(case, case), []).append(case)
    return members


def train_val_split(case_ids: Sequence[str], groups: Mapping[str, str], val_fraction: float,
                    seed: int = 0) -> tuple[list[str], list[str]]:
    """One split with about ``val_fraction`` of the cases in validation, whole subjects only (seeded)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    members = _groups_in_order(case_ids, groups)
    if len(members) < 2:
        raise ValueError("a train/validation split needs at least two subjects")
    order = list(members)
    np.random.default_rng(seed).shuffle(order)
    target = max(1, int(round(val_fraction * len(case_ids))))
    val: list[str] = []
    for group in order:
        if len(val) + len(members[group]) <= target:
            val.extend(members[group])
    if not val:  # every subject has more cases than the target: take the smallest one
        val.extend(min(members.values(), key=len))
    chosen = set(val)
    return [c for c in case_ids if c not in chosen], [c for c in case_ids if c in chosen]


def k_fold_splits(case_ids: Sequence[str], groups: Mapping[str, str], folds: int,
                  seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """``folds`` cross-validation splits over subjects (each subject in exactly one validation fold; fold sizes
    balanced greedily, largest subjects first, ties in seeded random order)."""
    members = _groups_in_order(case_ids, groups)
    if folds < 2 or folds > len(members):
        raise ValueError(f"{folds} folds need between 2 and {len(members)} (the number of subjects)")
    order = list(members)
    np.random.default_rng(seed).shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: ties keep the shuffled order
    fold_cases: list[list[str]] = [[] for _ in range(folds)]
    for group in order:
        smallest = min(range(folds), key=lambda f: len(fold_cases[f]))
        fold_cases[smallest].extend(members[group])
    result = []
    for f in range(folds):
        chosen = set(fold_cases[f])
        result.append(([c for c in case_ids if c not in chosen], [c for c in case_ids if c in chosen]))
    return result


def explicit_split(case_ids: Sequence[str], groups: Mapping[str, str],
                   val_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """The split given by a list of validation cases; raises when it separates the cases of one subject."""
    chosen = set(val_ids)
    members = _groups_in_order(case_ids, groups)
    for cases in members.values():
        inside = [c for c in cases if c in chosen]
        if inside and len(inside) != len(cases):
            outside = [c for c in cases if c not in chosen]
            raise ValueError(f"the validation list separates cases of one subject: {inside} in validation, "
                             f"{outside} in training; list all or none of them")
    return [c for c in case_ids if c not in chosen], [c for c in case_ids if c in chosen]


def splits_json(splits: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json`` content: one ``{"train": [...], "val": [...]}`` per fold."""
    return [{"train": sorted(train), "val": sorted(val)} for train, val in splits]
