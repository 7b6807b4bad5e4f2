"""Which training case each patch comes from: levels that few cases annotate are drawn more often.

nnU-Net draws a training case uniformly for every patch. In partially annotated lumbar data most cases annotate
L1-L5 only (T12 and S1 unannotated, left out of the loss), so the levels that name the ends of the spine, the sacrum
above all, come from a few cases: S1 from 2-3 of 24 training cases per fold of the shared real data. Here a share of
the draws is spread equally over the annotated levels, each level's part equally over the cases that annotate it
(class-balanced sampling of cases); the rest stays uniform over cases.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping


def level_balanced_case_weights(classes_per_case: Mapping[str, Iterable[int]], share: float) -> dict[str, float]:
    """Probability (sums to 1) of drawing each case of ``classes_per_case`` (case -> the foreground classes it
    annotates): ``1 - share`` uniform over the cases, ``share`` equally over the classes annotated in any case and
    each class's part equally over the cases that annotate it. ``share`` 0 is nnU-Net's uniform draw; cases that
    annotate nothing get only the uniform part."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be within [0, 1], not {share}")
    if not classes_per_case:
        raise ValueError("no training cases to draw from")
    classes = {case: set(map(int, values)) for case, values in classes_per_case.items()}
    cases_with = Counter(value for values in classes.values() for value in values)
    uniform = 1.0 / len(classes)
    if not cases_with:
        return dict.fromkeys(classes, uniform)
    balanced = {case: sum(1.0 / (len(cases_with) * cases_with[v]) for v in values) for case, values in classes.items()}
    return {case: (1.0 - share) * uniform + share * balanced[case] for case in classes}


def replicated_cases(weights: Mapping[str, float], copies_of_least: int = 4) -> list[str]:
    """The cases of ``weights``, each repeated in proportion to its weight (the least weighted ``copies_of_least``
    times, the others rounded), in sorted order: a uniform draw from this list is the weighted draw, within the
    rounding (at most ``0.5 / copies_of_least`` of the least weight, relative)."""
    if copies_of_least < 1:
        raise ValueError(f"copies_of_least must be at least 1, not {copies_of_least}")
    positive = [w for w in weights.values() if w > 0]
    if not positive:
        raise ValueError("no case has a positive weight")
    least = min(positive)
    return [case for case in sorted(weights) for _ in range(round(copies_of_least * weights[case] / least))]


def class_shares(cases: Iterable[str], classes_per_case: Mapping[str, Iterable[int]]) -> dict[int, float]:
    """Share of draws from the list ``cases`` (uniform, repeats allowed) that come from a case annotating each
    class."""
    cases = list(cases)
    counts = Counter(value for case in cases for value in set(map(int, classes_per_case[case])))
    return {value: counts[value] / len(cases) for value in sorted(counts)}
