"""Motion segments (disc-space heights, segment angle, slip, Meyerding grade), the lumbar curve (lordosis, sacral
slope) and body volume, measured on phantoms of known geometry against their analytic truth."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from dataset_conversion.phantom import SpineSpec, random_spine, typical_spine
from measure.segments import MEYERDING_MIN_SLIP_PERCENT, meyerding_grade
from tests.conftest import measure_phantom_tables, phantom_on_grid

HEIGHTS = ["disc_height_anterior_mm", "disc_height_middle_mm", "disc_height_posterior_mm", "disc_height_mean_mm"]
KEYS = ["case_id", "upper_level", "lower_level"]
CURVE = ["lordosis_l1_s1_deg", "lordosis_l1_l5_deg", "sacral_slope_deg"]
GRIDS = [  # (spacing LR, AP, SI), orientation, oblique, tilt: isotropic, anisotropic, reoriented, oblique, tilted
    ((1.0, 1.0, 1.0), "LPS", 0.0, 0.0),
    ((3.0, 0.8, 0.8), "LPS", 0.0, 0.0),
    ((3.3, 0.6, 0.9), "ASL", 0.0, 0.0),
    ((2.5, 0.7, 0.7), "PIR", 12.0, 0.0),
    ((3.0, 0.75, 0.75), "LPS", 0.0, 8.0),
]


@pytest.fixture(scope="module")
def sweep() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Measured next to true rows for random spines T12-S1 (some deformed, some slipped) on every grid."""
    rng = np.random.default_rng(11)
    segments, curves, bodies = [], [], []
    for n, (spacing, orientation, oblique, tilt) in enumerate(GRIDS * 2):
        spine = random_spine(rng, ["T12", "L1", "L2", "L3", "L4", "L5", "S1"], slip_probability=0.4)
        phantom = replace(phantom_on_grid(spine, spacing, orientation, lateral_mm=60, oblique_deg=oblique,
                                          tilt_deg=tilt), case_id=f"p{n}")
        vertebrae, measured, curve = measure_phantom_tables(phantom)
        assert (measured["status"] == "ok").all(), measured["message"].tolist()
        truth = phantom.segment_truth.assign(case_id="case")
        segments.append(measured.assign(case_id="case").merge(truth, on=KEYS, suffixes=("", "_truth")))
        curves.append(curve.assign(case_id="case").merge(phantom.spine_truth, on="case_id", suffixes=("", "_truth")))
        bodies.append(vertebrae.merge(phantom.truth, on="level", suffixes=("", "_truth")))
    return pd.concat(segments), pd.concat(curves), pd.concat(bodies)


def _errors(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: (frame[c] - frame[f"{c}_truth"]).abs() for c in columns})


def test_disc_heights_within_0_3_mm_mean_absolute_error(sweep) -> None:
    errors = _errors(sweep[0], HEIGHTS)
    assert len(errors) == 60 and (errors.mean() <= 0.3).all(), errors.mean()
    assert (errors.max() <= 1.0).all(), errors.max()


def test_segment_angle_and_curve_within_half_a_degree(sweep) -> None:
    angle = _errors(sweep[0], ["segment_angle_deg"])["segment_angle_deg"]
    assert angle.mean() <= 0.5 and angle.max() <= 2.0, angle.describe()  # two endplates, pixels up to 1 mm
    curve = _errors(sweep[1], CURVE)
    assert (curve.mean() <= 0.5).all() and (curve.max() <= 1.0).all(), curve.describe()


def test_slip_within_0_3_mm_and_the_exact_meyerding_grade(sweep) -> None:
    segments = sweep[0]
    errors = _errors(segments, ["slip_mm", "slip_percent"])
    assert errors["slip_mm"].mean() <= 0.3 and errors["slip_mm"].max() <= 0.8, errors.describe()
    # exact wherever the true slip is not within the slip tolerance (0.3 mm, 1 % of an endplate) of a grade boundary
    boundaries = np.array([-100, -75, -50, -25, -MEYERDING_MIN_SLIP_PERCENT, MEYERDING_MIN_SLIP_PERCENT, 25, 50, 75,
                           100])
    clear = np.abs(segments["slip_percent_truth"].to_numpy()[:, None] - boundaries).min(axis=1) > 1.0
    assert clear.sum() >= len(segments) - 5 and (segments["meyerding_grade_truth"][clear] >= 1).sum() >= 3
    assert (segments["meyerding_grade"] == segments["meyerding_grade_truth"])[clear].all()
    assert (segments["slip_mm_truth"] > 2.5).sum() >= 3  # the sweep holds real slips, not only healthy spines


def test_volume_within_two_percent(sweep) -> None:
    bodies = sweep[2]
    relative = ((bodies["volume_ml"] - bodies["volume_ml_truth"]) / bodies["volume_ml_truth"]).abs()
    assert relative.max() <= 0.02, relative.describe()


def test_slips_give_their_grade_and_direction() -> None:
    """Anterolisthesis of L4 over L5 (grade 2), retrolisthesis of L2 over L3 (negative, graded by size)."""
    base = typical_spine(["L1", "L2", "L3", "L4", "L5", "S1"])
    vertebrae = list(base.vertebrae)
    vertebrae[3] = replace(vertebrae[3], slip_mm=12.0)
    vertebrae[1] = replace(vertebrae[1], slip_mm=-4.0)
    phantom = phantom_on_grid(SpineSpec(tuple(vertebrae), base.disc_heights_mm), (3.0, 0.6, 0.6), lateral_mm=50)
    _, measured, _ = measure_phantom_tables(phantom)
    rows = measured.set_index("upper_level")
    truth = phantom.segment_truth.set_index("upper_level")
    assert rows.loc["L4", "slip_mm"] == pytest.approx(truth.loc["L4", "slip_mm"], abs=0.3)
    assert 25 < rows.loc["L4", "slip_percent"] <= 50 and rows.loc["L4", "meyerding_grade"] == 2
    assert rows.loc["L2", "slip_mm"] == pytest.approx(truth.loc["L2", "slip_mm"], abs=0.3)
    assert rows.loc["L2", "slip_mm"] < -3
    assert rows.loc["L2", "meyerding_grade"] == 1 == truth.loc["L2", "meyerding_grade"]
    assert rows.loc["L1", "meyerding_grade"] == 0  # no slip


def test_lordotic_signs_on_a_typical_spine() -> None:
    phantom = phantom_on_grid(typical_spine(["L1", "L2", "L3", "L4", "L5", "S1"]), (3.0, 0.7, 0.7), lateral_mm=50)
    _, segments, curve = measure_phantom_tables(phantom)
    assert (segments["segment_angle_deg"] > 0).all()  # every typical lumbar disc is higher anteriorly
    row = curve.iloc[0]
    assert 20 < row["lordosis_l1_s1_deg"] < 80 and row["lordosis_l1_l5_deg"] < row["lordosis_l1_s1_deg"]
    assert row["sacral_slope_deg"] == pytest.approx(28.0, abs=0.5)  # S1 rotated -28 deg, parallel endplates


def test_missing_levels_give_nan_with_reasons_and_no_segment_across_a_gap() -> None:
    spine = typical_spine(["L1", "L2", "L3", "L4", "L5"])
    vertebrae = tuple(v for v in spine.vertebrae if v.level != "L3")
    phantom = phantom_on_grid(SpineSpec(vertebrae, (8.0, 19.0, 10.0)), (3.0, 0.8, 0.8), lateral_mm=50)
    _, segments, curve = measure_phantom_tables(phantom)
    assert list(zip(segments["upper_level"], segments["lower_level"], strict=True)) == [("L1", "L2"), ("L4", "L5")]
    row = curve.iloc[0]
    assert math.isnan(row["lordosis_l1_s1_deg"]) and math.isnan(row["sacral_slope_deg"])
    assert math.isfinite(row["lordosis_l1_l5_deg"]) and row["status"] == "warning"
    assert "S1 superior endplate not in the mask" in row["message"]


@pytest.mark.parametrize(("percent", "grade"), [(math.nan, None), (7.9, 0), (-7.9, 0), (8.0, 1), (25.0, 1),
                                                 (25.1, 2), (-60.0, 3), (100.0, 4), (100.5, 5)])
def test_meyerding_grade_boundaries(percent: float, grade: int | None) -> None:
    assert meyerding_grade(percent) == grade
