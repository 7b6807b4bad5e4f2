"""Analytic accuracy: rasterised phantoms of known geometry measured against their exact truth."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from dataset_conversion.phantom import SpineSpec, VertebraSpec, deform, typical_spine
from tests.conftest import measure_phantom, phantom_on_grid

LENGTHS = ["height_anterior_mm", "height_middle_mm", "height_posterior_mm", "distance_anterior_mm",
           "distance_posterior_mm"]
ROTATIONS = [-30, -20, -10, 0, 5, 15, 30]
IN_PLANE = [0.3, 0.45, 0.6, 0.8, 1.0]
THICKNESS = [1.0, 4.5]


def rectangle_stack(rotation: float, offset: tuple[float, float]) -> SpineSpec:
    """Three rectangles (no wedge, no rounding) with a small lordotic twist and known gaps."""
    vertebrae = tuple(
        VertebraSpec(level, 25.0 + n, 25.0 + n, None, 34.0 + n, width_mm=24.0, rotation_deg=rotation + 3 * (n - 1),
                     corner_radius_mm=0.0)
        for n, level in enumerate(["L2", "L3", "L4"])
    )
    return SpineSpec(vertebrae, (8.0, 10.0), (0.0, *offset))


def errors_against_truth(measured: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    m, t = measured.set_index("level"), truth.set_index("level")
    return (m.loc[t.index, LENGTHS + ["rotation_deg"]] - t[LENGTHS + ["rotation_deg"]]).astype(float)


@pytest.fixture(scope="module")
def sweep() -> pd.DataFrame:
    """Errors for every rotation x in-plane spacing x slice thickness (sub-voxel offsets vary per case)."""
    rng = np.random.default_rng(3)
    frames = []
    for spacing in IN_PLANE:
        for thickness in THICKNESS:
            for rotation in ROTATIONS:
                spine = rectangle_stack(rotation, tuple(rng.uniform(-2, 2, 2)))
                phantom = phantom_on_grid(spine, (thickness, spacing, spacing))
                measured = measure_phantom(phantom)
                assert (measured["status"] == "ok").all(), measured["message"].tolist()
                err = errors_against_truth(measured, phantom.truth)
                err["spacing"], err["thickness"], err["rotation"] = spacing, thickness, rotation
                frames.append(err.reset_index())
    return pd.concat(frames, ignore_index=True)


def test_lengths_within_half_mm_up_to_0_6mm_spacing(sweep: pd.DataFrame) -> None:
    fine = sweep[sweep["spacing"] <= 0.6]
    worst = np.nanmax(np.abs(fine[LENGTHS].to_numpy()))
    assert worst <= 0.5, f"worst error {worst:.3f} mm"


def test_lengths_within_one_pixel_above_0_6mm(sweep: pd.DataFrame) -> None:
    coarse = sweep[sweep["spacing"] > 0.6]
    ratio = np.abs(coarse[LENGTHS].to_numpy()) / coarse["spacing"].to_numpy()[:, None]
    assert np.nanmax(ratio) <= 1.0, f"worst error {np.nanmax(ratio):.2f} pixel"


def test_mean_absolute_error(sweep: pd.DataFrame) -> None:
    values = np.abs(sweep[LENGTHS].to_numpy())
    assert np.isfinite(values).sum() == len(sweep) * len(LENGTHS) - 2 * len(sweep) // 3  # last level: no distance
    assert np.nanmean(values) <= 0.3, f"MAE {np.nanmean(values):.3f} mm"
    for spacing, group in sweep.groupby("spacing"):
        assert np.nanmean(np.abs(group[LENGTHS].to_numpy())) <= 0.3, f"MAE at {spacing} mm"


def test_rotation_within_one_degree(sweep: pd.DataFrame) -> None:
    assert sweep["rotation_deg"].abs().max() <= 1.0


@pytest.mark.parametrize("spacing", [(2.0, 0.5, 0.8), (4.5, 0.9, 0.4), (1.2, 0.7, 0.7)])
def test_anisotropic_in_plane_spacing(spacing: tuple[float, float, float]) -> None:
    phantom = phantom_on_grid(typical_spine(["T12", "L1", "L2", "L3", "L4", "L5", "S1"]), spacing, lateral_mm=50)
    err = errors_against_truth(measure_phantom(phantom), phantom.truth)
    assert np.nanmax(np.abs(err[LENGTHS].to_numpy())) <= max(spacing[1:])
    assert err["rotation_deg"].abs().max() <= 1.0


@pytest.mark.parametrize("oblique", [-15.0, 10.0])
def test_oblique_sagittal_grid_measures_in_patient_frame(oblique: float) -> None:
    """A grid rotated about left-right: heights and the rotation (to the patient's axis) are unchanged."""
    phantom = phantom_on_grid(typical_spine(["L1", "L2", "L3", "L4"]), (3.0, 0.6, 0.6), oblique_deg=oblique)
    measured = measure_phantom(phantom)
    err = errors_against_truth(measured, phantom.truth)
    assert np.nanmax(np.abs(err[LENGTHS].to_numpy())) <= 0.6
    assert err["rotation_deg"].abs().max() <= 1.0


def test_anchor_points_are_physical_coordinates() -> None:
    phantom = phantom_on_grid(typical_spine(["L3", "L4"]), (1.0, 0.5, 0.5), orientation="PIR")
    measured = measure_phantom(phantom).set_index("level")
    truth = phantom.truth.set_index("level")
    for position in ("anterior", "middle", "posterior"):
        for end in ("superior", "inferior"):
            for axis in "yz":  # x is the left-right position of the measured slice
                column = f"anchor_{position}_{end}_{axis}_mm"
                assert np.allclose(measured.loc[truth.index, column], truth[column], atol=0.5), column
    assert measured["anchor_middle_superior_x_mm"].abs().max() <= 0.5 + 1e-9


def test_rounded_corners_and_lordosis_realistic_spine() -> None:
    spine = typical_spine(["T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1", "S2"])
    phantom = phantom_on_grid(spine, (3.5, 0.5, 0.5), lateral_mm=50)
    err = errors_against_truth(measure_phantom(phantom), phantom.truth)
    assert np.nanmax(np.abs(err[LENGTHS].to_numpy())) <= 0.5
    assert err["rotation_deg"].abs().max() <= 1.0


@pytest.mark.parametrize(
    ("kind", "reduction", "grade"),
    [("wedge", 0.30, 2), ("wedge", 0.225, 1), ("biconcave", 0.30, 2), ("crush", 0.45, 3), ("wedge", 0.5, 3)],
)
def test_deformities_get_their_genant_grade_and_type(kind: str, reduction: float, grade: int) -> None:
    base = typical_spine(["L1", "L2", "L3", "L4"])
    vertebrae = list(base.vertebrae)
    vertebrae[2] = deform(vertebrae[2], kind, reduction)
    phantom = phantom_on_grid(SpineSpec(tuple(vertebrae), base.disc_heights_mm), (3.0, 0.5, 0.5), lateral_mm=50)
    measured = measure_phantom(phantom).set_index("level")
    assert measured.loc["L3", "genant_grade"] == grade
    assert measured.loc["L3", "deformity_type"] == kind
    for healthy in ("L1", "L2", "L4"):
        assert measured.loc[healthy, "genant_grade"] == 0
        assert measured.loc[healthy, "deformity_type"] == "none"
    truth = phantom.truth.set_index("level")
    assert truth.loc["L3", "genant_grade"] == grade


@pytest.mark.parametrize("rotation", [-12.0, 0.0, 12.0])
def test_wedged_biconcave_body_with_rounded_corners(rotation: float) -> None:
    """Rounded corners (radius close to the 10% inset), a wedge and a biconcave dip together."""
    body = VertebraSpec("L3", 21.0, 27.0, 21.5, 36.0, rotation_deg=rotation, corner_radius_mm=3.0)
    phantom = phantom_on_grid(SpineSpec((body,), ()), (2.0, 0.5, 0.5))
    err = errors_against_truth(measure_phantom(phantom), phantom.truth)
    assert np.abs(err[LENGTHS[:3]].to_numpy()).max() <= 0.5
    assert abs(err["rotation_deg"].iloc[0]) <= 1.0


def test_spondylolisthesis_shifts_the_distances_as_the_truth_says() -> None:
    base = typical_spine(["L3", "L4", "L5", "S1"])
    vertebrae = list(base.vertebrae)
    vertebrae[2] = replace(vertebrae[2], slip_mm=7.0)  # L5 slips 7 mm anteriorly over S1
    slipped = phantom_on_grid(SpineSpec(tuple(vertebrae), base.disc_heights_mm), (3.0, 0.5, 0.5), lateral_mm=50)
    straight = phantom_on_grid(base, (3.0, 0.5, 0.5), lateral_mm=50)
    err = errors_against_truth(measure_phantom(slipped), slipped.truth)
    assert np.nanmax(np.abs(err[LENGTHS].to_numpy())) <= 0.5
    l5_slipped = slipped.truth.set_index("level").loc["L5"]
    l5_straight = straight.truth.set_index("level").loc["L5"]
    assert l5_slipped["distance_anterior_mm"] > l5_straight["distance_anterior_mm"] + 2  # the slip opens the gap


def test_stray_island_with_a_neighbour_label_does_not_flip_the_frame():
    """A few voxels labelled S2 lying cranial of S1 (a typical prediction error) must not turn the spine-axis prior
    of S1 upside down (it did: rotation off by 180 degrees and a 34 mm distance error in the demo)."""
    spine = typical_spine(["L4", "L5", "S1"])
    phantom = phantom_on_grid(spine, (3.0, 0.8, 0.8))
    clean = measure_phantom(phantom).set_index("level")
    mask = phantom.mask
    k, j, i = np.argwhere(mask == 6).max(axis=0)  # top of L4 (value 6) in the (k: superior, j, i) array
    mask[k - 2:k, 2:4, i - 1:i + 1] = 9  # "S2" far above S1, at the anterior edge
    noisy = measure_phantom(phantom).set_index("level")
    for level in ("L4", "L5", "S1"):
        assert abs(noisy.loc[level, "rotation_deg"] - clean.loc[level, "rotation_deg"]) < 1.0, level
    assert abs(noisy.loc["L5", "distance_anterior_mm"] - clean.loc["L5", "distance_anterior_mm"]) < 0.5


def test_speck_with_the_next_level_does_not_tilt_the_frame():
    """One voxel labelled S2 below S1, far to the side S1 does not lean to (a prediction error; in a demo run S1 was
    measured rotated by 90 degrees, heights 5 mm long and a 30 mm 'slip'): the direction to it lies within
    MAX_SPINE_TILT_DEG of superior yet tilts S1's spine axis by about 60 degrees; without the rule S1's rotation is
    off by 89 degrees here. Neighbours under a tenth of a vertebra's voxels set no axis (measure/spine.py,
    MIN_NEIGHBOUR_SHARE)."""
    spine = typical_spine(["L4", "L5", "S1"])
    phantom = phantom_on_grid(spine, (3.0, 0.8, 0.8), lateral_mm=40)
    clean = measure_phantom(phantom).set_index("level")
    mask = phantom.mask  # (superior, anterior, lateral) indices
    s1 = np.argwhere(mask == 8)  # value 8: S1 in the project's label map
    speck = (max(int(s1[:, 0].min()) - 12, 0), 0, int(np.median(s1[:, 2])))
    assert mask[speck] == 0
    mask[speck] = 9  # "S2", 10 mm below S1's lowest voxel, at the edge of the field of view S1 does not lean to
    noisy = measure_phantom(phantom).set_index("level")
    for level in ("L4", "L5", "S1"):
        assert abs(noisy.loc[level, "rotation_deg"] - clean.loc[level, "rotation_deg"]) < 1.0, level
        assert abs(noisy.loc[level, "height_middle_mm"] - clean.loc[level, "height_middle_mm"]) < 0.5, level
