"""Height ratios and the Genant semi-quantitative fracture grade (pure functions of heights in mm)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Genant et al. 1993: grade 0 below 20% height reduction, 1 for 20-25%, 2 for 25-40%, 3 above 40%.
GENANT_THRESHOLDS = (0.20, 0.25, 0.40)


@dataclass(frozen=True)
class GenantResult:
    """Height reductions (fractions, NaN when not computable), grade (None when not computable) and type."""

    reduction_wedge: float
    reduction_biconcave: float
    reduction_crush: float
    grade: int | None
    deformity_type: str | None  # "none", "wedge", "biconcave", "crush"; None when not computable
    reason: str | None = None


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN if either is NaN or the denominator is not positive."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator <= 0:
        return math.nan
    return numerator / denominator


def grade_from_reduction(reduction: float) -> int | None:
    """Genant grade of a height reduction fraction: [0, 0.20) -> 0, [0.20, 0.25) -> 1, [0.25, 0.40] -> 2, else 3."""
    if not math.isfinite(reduction):
        return None
    mild, moderate, severe = GENANT_THRESHOLDS
    if reduction < mild:
        return 0
    if reduction < moderate:
        return 1
    if reduction <= severe:
        return 2
    return 3


def _reduction(height: float, reference: float) -> float:
    r = ratio(height, reference)
    return math.nan if math.isnan(r) else max(0.0, 1.0 - r)


def genant(
    height_anterior_mm: float,
    height_middle_mm: float,
    height_posterior_mm: float,
    neighbour_posterior_heights_mm: Sequence[float] = (),
) -> GenantResult:
    """Genant grade and deformity type of one vertebra.

    * wedge: anterior vs posterior height, ``1 - Ha / Hp``;
    * biconcave: middle vs posterior height, ``1 - Hm / Hp``;
    * crush: posterior height vs the mean posterior height of the two adjacent (non-sacral) vertebrae,
      ``1 - Hp / mean(Hp_neighbours)``; NaN unless both neighbours are measured (one neighbour alone is biased:
      L5's posterior height is normally lower than L4's).

    The grade is that of the largest reduction, the type the kind that has it (``"none"`` for grade 0).
    """
    wedge = _reduction(height_anterior_mm, height_posterior_mm)
    biconcave = _reduction(height_middle_mm, height_posterior_mm)
    neighbours = [h for h in neighbour_posterior_heights_mm if math.isfinite(h) and h > 0]
    crush = _reduction(height_posterior_mm, sum(neighbours) / 2) if len(neighbours) == 2 else math.nan
    reductions = {"wedge": wedge, "biconcave": biconcave, "crush": crush}
    known = {k: v for k, v in reductions.items() if math.isfinite(v)}
    if not known:
        return GenantResult(wedge, biconcave, crush, None, None, "no height ratio computable")
    kind, worst = max(known.items(), key=lambda kv: kv[1])
    grade = grade_from_reduction(worst)
    reason = None
    if math.isnan(crush) and grade == 0:
        reason = "crush not assessed (needs both neighbours measured)"
    return GenantResult(wedge, biconcave, crush, grade, kind if grade else "none", reason)
