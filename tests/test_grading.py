"""Genant grade thresholds and ratios (pure functions)."""

from __future__ import annotations

import math

import pytest

from measure.grading import genant, grade_from_reduction, ratio


@pytest.mark.parametrize(("reduction", "grade"), [(0.0, 0), (0.199, 0), (0.20, 1), (0.249, 1), (0.25, 2), (0.40, 2),
                                                  (0.401, 3), (0.9, 3), (math.nan, None)])
def test_grade_thresholds(reduction: float, grade: int | None) -> None:
    assert grade_from_reduction(reduction) == grade


def test_types_and_reductions() -> None:
    wedge = genant(14.0, 20.0, 20.0, [20.0, 20.0])
    assert (wedge.grade, wedge.deformity_type) == (2, "wedge")
    assert wedge.reduction_wedge == pytest.approx(0.3)
    biconcave = genant(20.0, 11.0, 20.0, [20.0])
    assert (biconcave.grade, biconcave.deformity_type) == (3, "biconcave")
    crush = genant(15.0, 15.0, 15.0, [20.0, 20.0])
    assert (crush.grade, crush.deformity_type) == (2, "crush")
    assert crush.reduction_crush == pytest.approx(0.25)
    healthy = genant(25.0, 25.0, 26.0, [])
    assert (healthy.grade, healthy.deformity_type) == (0, "none")
    assert math.isnan(healthy.reduction_crush) and "crush not assessed" in healthy.reason


def test_not_computable_is_none_not_zero() -> None:
    result = genant(math.nan, math.nan, math.nan, [20.0])
    assert result.grade is None and result.deformity_type is None
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(math.nan, 2.0))
