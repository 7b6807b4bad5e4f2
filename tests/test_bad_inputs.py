"""Bad and awkward inputs: every file that cannot be measured gives one ``error`` row naming the file and the problem,
awkward but measurable masks are measured with the right flags and reasons, and one bad file never stops a batch."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dataset_conversion.phantom import GridSpec, Phantom, fov_for, make_phantom, typical_spine
from measure.batch import MeasureOptions, measure_file, measure_files
from measure.cli import main
from measure.io import MaskReadError, read_mask, strip_suffix
from measure.table import to_frame
from measure.vertebra import MethodParameters

LEVELS = ["L1", "L2", "L3"]  # project labels 3, 4, 5
SPACING = (3.0, 1.0, 1.0)  # left-right, anterior-posterior, superior-inferior (mm)
LATERAL_MM = 48.0  # wider than the 40 mm bodies, so the good phantom does not touch the lateral FOV border
HEIGHTS = ["height_anterior_mm", "height_middle_mm", "height_posterior_mm"]
DISTANCES = ["distance_anterior_mm", "distance_posterior_mm"]
TOLERANCE_MM = 0.6


def make(levels: list[str] = LEVELS, **grid_changes: float) -> Phantom:
    spine = typical_spine(levels)
    grid = GridSpec(fov_for(spine, lateral_mm=LATERAL_MM), SPACING, "LPS", **grid_changes)
    return make_phantom("c", spine, grid, with_image=False)


@pytest.fixture(scope="module")
def ph() -> Phantom:
    return make()


@pytest.fixture
def good(tmp_path: Path, ph: Phantom) -> Path:
    path = tmp_path / "good.nii.gz"
    sitk.WriteImage(ph.mask_image(), str(path))
    return path


def write_array(path: Path, array: np.ndarray, reference: sitk.Image) -> Path:
    """Write a (k, j, i) array with the reference's spacing, origin and direction (its size may differ)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(reference.GetSpacing())
    image.SetOrigin(reference.GetOrigin())
    image.SetDirection(reference.GetDirection())
    sitk.WriteImage(image, str(path))
    return path


def write_mha(path: Path, array: np.ndarray, spacing: str) -> Path:
    """A MetaImage written by hand, so that the header may hold spacings SimpleITK refuses to set."""
    header = (f"ObjectType = Image\nNDims = 3\nDimSize = {' '.join(map(str, array.shape[::-1]))}\n"
              f"ElementSpacing = {spacing}\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    return path


def measure(path: Path, options: MeasureOptions | None = None) -> pd.DataFrame:
    return to_frame(measure_file(path, strip_suffix(path), options or MeasureOptions()))


def by_level(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["level"] != ""].set_index("level")


def assert_close_to_truth(frame: pd.DataFrame, ph: Phantom, tolerance: float = TOLERANCE_MM) -> None:
    measured = by_level(frame)
    truth = ph.truth.set_index("level")
    assert list(measured.index) == list(truth.index)
    error = (measured[HEIGHTS] - truth[HEIGHTS]).abs()
    assert (error < tolerance).all().all(), error


def assert_good_measured(frame: pd.DataFrame, case_id: str = "good") -> None:
    rows = frame[frame["case_id"] == case_id]
    assert list(rows["level"]) == LEVELS
    assert (rows["status"] == "ok").all(), rows["message"].tolist()
    assert rows[HEIGHTS].notna().all().all()


def run_cli(tmp_path: Path, inputs: list[Path], *extra: str) -> tuple[int, Path]:
    out = tmp_path / "out" / "table.csv"
    code = main([*map(str, inputs), "-o", str(out), "--no-progress", *extra])
    return code, out


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"case_id": str, "level": str}, keep_default_na=False, na_values=[""])


def check_batch(tmp_path: Path, good: Path, bad: Path, bad_statuses: set[str], exit_code: int = 1,
                *extra: str) -> pd.DataFrame:
    """The good file is measured beside the bad one (API and CLI); the CLI's exit code and CSV are as expected."""
    bad_id = strip_suffix(bad)
    frame = measure_files([good, bad], ["good", bad_id], MeasureOptions(), jobs=1, progress=False)
    assert_good_measured(frame)
    assert set(frame.loc[frame["case_id"] == bad_id, "status"]) == bad_statuses
    code, out = run_cli(tmp_path, [good, bad], *extra)
    assert code == exit_code
    written = read_csv(out)
    assert set(written["case_id"]) == {"good", bad_id}
    assert_good_measured(written)
    assert out.with_suffix(".json").exists()
    return written


# -- files that cannot be measured at all: one error row -----------------------------------------------------------
def _missing(tmp_path: Path, ph: Phantom) -> Path:
    return tmp_path / "missing.nii.gz"


def _random_bytes(tmp_path: Path, ph: Phantom) -> Path:
    path = tmp_path / "random.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _truncated_copy(tmp_path: Path, ph: Phantom, name: str) -> Path:
    """The phantom mask written as ``name``, then cut to half its bytes."""
    full = tmp_path / "complete" / name
    full.parent.mkdir()
    sitk.WriteImage(ph.mask_image(), str(full))
    data = full.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_gz(tmp_path: Path, ph: Phantom) -> Path:
    return _truncated_copy(tmp_path, ph, "truncated.nii.gz")


def _truncated_nii(tmp_path: Path, ph: Phantom) -> Path:
    return _truncated_copy(tmp_path, ph, "truncated_raw.nii")


def _image_2d(tmp_path: Path, ph: Phantom) -> Path:
    path = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(ph.mask[:, :, ph.mask.shape[2] // 2])), str(path))
    return path


def _image_4d(tmp_path: Path, ph: Phantom) -> Path:
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([ph.mask_image(), ph.mask_image()]), str(path))
    return path


def _probabilities(tmp_path: Path, ph: Phantom) -> Path:
    probability = np.where(ph.mask > 0, 0.9, 0.05).astype(np.float32)
    return write_array(tmp_path / "softmax.nii.gz", probability, ph.mask_image())


def _empty(tmp_path: Path, ph: Phantom) -> Path:
    return write_array(tmp_path / "empty.nii.gz", np.zeros_like(ph.mask), ph.mask_image())


def _zero_spacing(tmp_path: Path, ph: Phantom) -> Path:
    return write_mha(tmp_path / "zero_spacing.mha", np.full((8, 8, 8), 3, np.uint8), "0 1 1")


def _strongly_tilted(tmp_path: Path, ph: Phantom) -> Path:
    path = tmp_path / "tilted.nii.gz"
    sitk.WriteImage(make(tilt_deg=60).mask_image(), str(path))
    return path


FILE_ERRORS: list[tuple[Callable[[Path, Phantom], Path], list[str]]] = [
    (_missing, ["file not found"]),
    (_random_bytes, ["cannot read the file", "not an image"]),
    (_truncated_gz, ["truncated"]),
    (_truncated_nii, ["file is truncated"]),
    (_image_2d, ["expected a 3D volume", "2D image"]),
    (_image_4d, ["expected a 3D volume", "4D image"]),
    (_probabilities, ["non-integer", "probabilities"]),
    (_empty, ["empty"]),
    (_zero_spacing, ["spacing must be positive"]),
    (_strongly_tilted, ["left-right", "--resample-oblique"]),
]


@pytest.mark.parametrize(("build", "reasons"), FILE_ERRORS, ids=[b.__name__.strip("_") for b, _ in FILE_ERRORS])
def test_unmeasurable_file_gives_one_error_row(tmp_path: Path, ph: Phantom, good: Path,
                                               build: Callable[[Path, Phantom], Path], reasons: list[str]) -> None:
    bad = build(tmp_path, ph)
    rows = measure(bad)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["status"] == "error"
    assert row["case_id"] == strip_suffix(bad)
    assert row["level"] == "" and pd.isna(row["label"])
    assert row["source_file"] == str(bad)
    assert str(bad) in row["message"]
    for reason in reasons:
        assert reason.lower() in row["message"].lower(), row["message"]
    assert row[HEIGHTS + DISTANCES].isna().all()
    if build is not _empty:  # an empty mask is read fine; measure_file finds no vertebra in it
        with pytest.raises(MaskReadError, match=re.escape(reasons[0])):
            read_mask(bad)

    written = check_batch(tmp_path, good, bad, {"error"})
    bad_row = written[written["case_id"] == strip_suffix(bad)]
    assert len(bad_row) == 1 and str(bad) in bad_row["message"].iloc[0]


def test_zero_spacing_is_refused_by_simpleitk_itself(tmp_path: Path) -> None:
    """SimpleITK will not read a zero spacing; read_image turns its error into 'spacing must be positive'."""
    path = write_mha(tmp_path / "zero.mha", np.full((8, 8, 8), 3, np.uint8), "0 1 1")
    with pytest.raises(RuntimeError, match="(?i)zero-valued spacing"):
        sitk.ReadImage(str(path))


def test_negative_spacing_is_read_as_a_flipped_axis(tmp_path: Path, ph: Phantom, good: Path) -> None:
    """SimpleITK silently turns a negative spacing into a positive one with that axis's direction reversed, so the
    file is a valid (left-right mirrored) volume; the phantom is symmetric left-right and is measured exactly."""
    path = write_mha(tmp_path / "negative_spacing.mha", ph.mask, "-3 1 1")
    image = sitk.ReadImage(str(path))
    assert image.GetSpacing() == (3.0, 1.0, 1.0)
    assert np.allclose(np.array(image.GetDirection()).reshape(3, 3), np.diag([-1.0, 1.0, 1.0]))
    rows = measure(path)
    assert (rows["status"] == "ok").all(), rows["message"].tolist()
    assert_close_to_truth(rows, ph)
    check_batch(tmp_path, good, path, {"ok"}, 0)


# -- awkward but measurable masks ----------------------------------------------------------------------------------
def test_float_mask_with_integral_labels_is_measured(tmp_path: Path, ph: Phantom, good: Path) -> None:
    path = write_array(tmp_path / "float_labels.nii.gz", ph.mask.astype(np.float32), ph.mask_image())
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkFloat32
    rows = measure(path)
    reference = measure(good)
    assert list(rows["level"]) == LEVELS
    assert (rows["status"] == "ok").all()
    assert list(rows["label"]) == [3, 4, 5]
    assert np.allclose(rows[HEIGHTS].to_numpy(float), reference[HEIGHTS].to_numpy(float))
    assert_close_to_truth(rows, ph)
    check_batch(tmp_path, good, path, {"ok"}, 0)


def test_unmapped_label_gives_a_failed_row(tmp_path: Path, ph: Phantom, good: Path) -> None:
    array = ph.mask.copy()
    array[2:6, 2:6, 6:9] = 42
    path = write_array(tmp_path / "unmapped.nii.gz", array, ph.mask_image())
    rows = measure(path)
    assert list(rows["label"]) == [3, 4, 5, 42]
    mapped = rows[rows["label"] != 42]
    assert list(mapped["level"]) == LEVELS and (mapped["status"] == "ok").all()
    assert_close_to_truth(rows, ph)
    stray = rows[rows["label"] == 42].iloc[0]
    assert stray["status"] == "failed" and stray["level"] == ""
    assert "label 42 is not in the label map" in stray["message"]
    assert pd.isna(stray[HEIGHTS]).all()

    written = check_batch(tmp_path, good, path, {"ok", "failed"})
    assert 42 in set(written["label"])

    ignored = measure(path, MeasureOptions(ignore_unmapped=True))
    assert list(ignored["label"]) == [3, 4, 5] and (ignored["status"] == "ok").all()
    code, out = run_cli(tmp_path, [good, path], "--ignore-unmapped", "--overwrite")
    assert code == 0
    written = read_csv(out)
    assert 42 not in set(written["label"]) and (written["status"] == "ok").all() and len(written) == 6


def test_vertebra_in_several_large_pieces(tmp_path: Path, ph: Phantom, good: Path) -> None:
    array = ph.mask.copy()
    l3_voxels = int((array == 5).sum())
    piece = (slice(60, 80), slice(70, 92), slice(3, 13))  # far from every body, 44% of L3's size
    assert not array[piece].any()
    array[piece] = 5
    path = write_array(tmp_path / "pieces.nii.gz", array, ph.mask_image())
    rows = by_level(measure(path))
    assert rows.loc["L3", "qc_several_components"]
    assert rows.loc["L3", "status"] == "warning"
    assert f"label in 2 large parts ({l3_voxels}+4400 voxels): measured on the largest" in rows.loc["L3", "message"]
    assert rows.loc["L3", "voxel_count"] == l3_voxels + 4400
    assert_close_to_truth(rows.reset_index(), ph)
    assert not rows.loc[["L1", "L2"], "qc_several_components"].any()
    assert (rows.loc[["L1", "L2"], "status"] == "ok").all()
    check_batch(tmp_path, good, path, {"ok", "warning"}, 0)


def test_tiny_stray_islands_are_ignored_and_noted(tmp_path: Path, ph: Phantom, good: Path) -> None:
    array = ph.mask.copy()
    array[118:120, 2:4, 7] = 4  # 4 voxels of L2 near the top, away from the FOV border
    array[5, 90, 8] = 3  # 1 voxel of L1 near the bottom
    path = write_array(tmp_path / "islands.nii.gz", array, ph.mask_image())
    rows = by_level(measure(path))
    reference = by_level(measure(good))
    assert (rows["status"] == "ok").all()
    for level in ("L1", "L2"):
        assert "1 stray island(s) ignored" in rows.loc[level, "message"]
    assert "stray island" not in rows.loc["L3", "message"]
    assert not rows["qc_several_components"].any() and not rows["qc_touches_fov_border"].any()
    assert np.allclose(rows[HEIGHTS].to_numpy(float), reference[HEIGHTS].to_numpy(float))
    check_batch(tmp_path, good, path, {"ok"}, 0)


def test_stray_island_on_the_fov_border_does_not_flag_the_body(tmp_path: Path, ph: Phantom) -> None:
    array = ph.mask.copy()
    array[0, 0, 0] = 3
    path = write_array(tmp_path / "border_island.nii.gz", array, ph.mask_image())
    l1 = by_level(measure(path)).loc["L1"]
    assert "1 stray island(s) ignored" in l1["message"]
    assert not l1["qc_touches_fov_border"]
    assert l1["status"] == "ok"


def test_vertebra_cut_by_the_superior_fov_border(tmp_path: Path, ph: Phantom, good: Path) -> None:
    l1_rows = np.nonzero((ph.mask == 3).any(axis=(1, 2)))[0]  # array axis 0 is k: inferior -> superior
    cut = int(l1_rows.mean())
    path = write_array(tmp_path / "cut.nii.gz", ph.mask[:cut], ph.mask_image())
    rows = by_level(measure(path))
    assert list(rows.index) == LEVELS
    l1 = rows.loc["L1"]
    assert l1["qc_touches_fov_border"]
    assert l1[HEIGHTS].isna().all()
    assert "body cut by the field of view at the superior image border" in l1["message"]
    assert "not measurable" in l1["message"]
    assert l1["status"] == "failed"  # all three heights NaN
    assert pd.isna(l1[DISTANCES]).all()
    assert (rows.loc[["L2", "L3"], "status"] == "ok").all()
    assert not rows.loc[["L2", "L3"], "qc_touches_fov_border"].any()
    numeric = rows[HEIGHTS + DISTANCES + ["depth_mm", "ratio_anterior_posterior", "ratio_middle_posterior"]]
    assert not (numeric.to_numpy(float) == 0).any()

    written = check_batch(tmp_path, good, path, {"ok", "failed"})
    with open(next((tmp_path / "out").glob("*.csv")), newline="") as stream:
        cut_l1 = [r for r in csv.DictReader(stream) if r["case_id"] == "cut" and r["level"] == "L1"]
    assert len(cut_l1) == 1
    for column in HEIGHTS + DISTANCES + ["ratio_anterior_posterior", "height_reduction_wedge"]:
        assert cut_l1[0][column] == "", (column, cut_l1[0][column])  # NaN is an empty cell, never 0
    assert written.loc[(written["case_id"] == "cut") & (written["level"] == "L1"), HEIGHTS].isna().all().all()


@pytest.mark.parametrize("gap_mm, near", [(1, True), (3, True), (4, False), (8, False)])
def test_whole_body_near_the_superior_fov_border_is_measured_but_not_graded(
        tmp_path: Path, ph: Phantom, gap_mm: int, near: bool) -> None:
    """A complete L1 whose top lies ``gap_mm`` below the image's superior border (1 mm voxels along it): within the
    3-mm margin it keeps its heights but gets no Genant grade, beyond it nothing changes."""
    top = int(np.nonzero((ph.mask == 3).any(axis=(1, 2)))[0].max())  # axis 0 runs inferior -> superior
    path = write_array(tmp_path / "near.nii.gz", ph.mask[: top + 1 + gap_mm], ph.mask_image())
    frame = measure(path)
    rows = by_level(frame)
    l1 = rows.loc["L1"]
    assert bool(l1["qc_touches_fov_border"]) is near
    assert_close_to_truth(frame, ph)  # the body is whole: its heights are right either way
    if near:
        assert pd.isna(l1["genant_grade"]) and l1["deformity_type"] == ""
        assert "not graded at the border of the field of view" in l1["message"]
        assert l1["status"] == "warning"
    else:
        assert l1["genant_grade"] == 0 and l1["status"] == "ok"
    assert (rows.loc[["L2", "L3"], "status"] == "ok").all() and (rows.loc[["L2", "L3"], "genant_grade"] == 0).all()


def test_fragment_of_a_body_gets_no_grade(tmp_path: Path, ph: Phantom) -> None:
    """A label that holds only a 5-mm slab of L1 (a network's fragment): heights outside the plausible range, so no
    Genant grade (a grade 0 or 3 of a fragment would be read as a finding)."""
    array = ph.mask.copy()
    rows_l1 = np.nonzero((array == 3).any(axis=(1, 2)))[0]
    middle = int(rows_l1.mean())
    keep = np.zeros_like(array, dtype=bool)
    keep[middle - 2: middle + 3] = True
    array[(array == 3) & ~keep] = 0
    rows = by_level(measure(write_array(tmp_path / "fragment.nii.gz", array, ph.mask_image())))
    l1 = rows.loc["L1"]
    assert "implausible height" in l1["message"] and l1["status"] == "warning"
    assert pd.isna(l1["genant_grade"]) and "not graded: a height outside the plausible range" in l1["message"]
    assert (rows.loc[["L2", "L3"], "genant_grade"] == 0).all()
    assert pd.isna(rows.loc["L2", "height_reduction_crush"])  # the fragment is no neighbour to compare L2's height with


def test_bodies_on_the_lateral_slab_edge_keep_their_grade(tmp_path: Path) -> None:
    """A slab narrower than the 40-mm bodies: every body touches the lateral border (flagged), but its measured
    sagittal section is whole, so it is graded."""
    spine = typical_spine(LEVELS)
    narrow = make_phantom("c", spine, GridSpec(fov_for(spine, lateral_mm=30.0), SPACING, "LPS"), with_image=False)
    path = tmp_path / "narrow.nii.gz"
    sitk.WriteImage(narrow.mask_image(), str(path))
    rows = by_level(measure(path))
    assert rows["qc_touches_fov_border"].all()
    assert (rows["genant_grade"] == 0).all()


def test_fov_margin_zero_grades_a_body_near_the_border(tmp_path: Path, ph: Phantom) -> None:
    top = int(np.nonzero((ph.mask == 3).any(axis=(1, 2)))[0].max())
    path = write_array(tmp_path / "near.nii.gz", ph.mask[: top + 2], ph.mask_image())
    l1 = by_level(measure(path, MeasureOptions(params=MethodParameters(fov_margin_mm=0.0)))).loc["L1"]
    assert not l1["qc_touches_fov_border"] and l1["genant_grade"] == 0
    assert main([str(path), "-o", str(tmp_path / "m.csv"), "--fov-margin", "-1", "--no-progress"]) == 2


def test_body_segmented_short_of_the_fov_border_gets_no_false_grade(tmp_path: Path, ph: Phantom) -> None:
    """The failure seen on a real scan: a body cut by the image top whose mask stops two voxels short of the border
    (its upper part missed), so the part in view is measured as a whole, smaller body. Its heights are what the mask
    says; a Genant grade of that part would be a false fracture grade."""
    rows_l1 = np.nonzero((ph.mask == 3).any(axis=(1, 2)))[0]
    cut = int(rows_l1.min() + 0.6 * (rows_l1.max() - rows_l1.min()))
    array = ph.mask[:cut].copy()
    array[-2:] = 0
    rows = by_level(measure(write_array(tmp_path / "short.nii.gz", array, ph.mask_image())))
    l1 = rows.loc["L1"]
    assert l1["qc_touches_fov_border"] and pd.isna(l1["genant_grade"])
    assert l1[HEIGHTS].notna().all() and (l1[HEIGHTS] < ph.truth.set_index("level").loc["L1", HEIGHTS]).all()
    assert "not graded at the border of the field of view" in l1["message"]


def test_single_vertebra_is_measured_without_distances(tmp_path: Path, good: Path) -> None:
    single = make(["L3"])
    path = tmp_path / "single.nii.gz"
    sitk.WriteImage(single.mask_image(), str(path))
    rows = measure(path)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["level"] == "L3" and row["status"] == "ok"
    assert row[DISTANCES].isna().all() and row["distance_to_level"] == ""
    assert "no caudal neighbour in the mask: distances not defined" in row["message"]
    assert not row["qc_missing_neighbour"]
    assert_close_to_truth(rows, single)
    check_batch(tmp_path, good, path, {"ok"}, 0)


# -- oblique grids -------------------------------------------------------------------------------------------------
def test_grid_rotated_in_plane_is_measured_exactly(tmp_path: Path, good: Path) -> None:
    """oblique_deg rotates the grid about left-right: the slice axis stays left-right, so the rotation is purely
    in-plane, is taken into account through the direction matrix, and needs no note."""
    oblique = make(oblique_deg=15)
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(oblique.mask_image(), str(path))
    assert read_mask(path).obliquity_deg == pytest.approx(0.0, abs=1e-6)
    rows = measure(path)
    assert (rows["status"] == "ok").all(), rows["message"].tolist()
    assert_close_to_truth(rows, oblique)
    assert not rows["message"].str.contains("off left-right").any()
    truth = oblique.truth.set_index("level")
    rotation_error = (by_level(rows)["rotation_deg"] - truth["rotation_deg"]).abs()
    assert (rotation_error < 1.5).all(), rotation_error
    check_batch(tmp_path, good, path, {"ok"}, 0)


def test_mildly_oblique_slice_axis_is_measured_with_a_note(tmp_path: Path, good: Path) -> None:
    tilted = make(tilt_deg=15)
    path = tmp_path / "mild_tilt.nii.gz"
    sitk.WriteImage(tilted.mask_image(), str(path))
    rows = measure(path)
    assert (rows["status"] == "ok").all(), rows["message"].tolist()
    assert_close_to_truth(rows, tilted)
    assert rows["message"].str.contains("slice axis is 15.0 degrees off left-right").all()
    check_batch(tmp_path, good, path, {"ok"}, 0)


def test_strongly_tilted_grid_is_measured_after_resampling(tmp_path: Path, good: Path) -> None:
    tilted = make(tilt_deg=60)
    path = tmp_path / "tilted.nii.gz"
    sitk.WriteImage(tilted.mask_image(), str(path))
    assert measure(path)["status"].tolist() == ["error"]
    rows = measure(path, MeasureOptions(params=MethodParameters(resample_oblique=True)))
    assert list(rows["level"]) == LEVELS
    assert (rows["status"] == "ok").all(), rows["message"].tolist()
    assert rows["message"].str.contains("resampled from an oblique grid (30.0 degrees)", regex=False).all()
    assert_close_to_truth(rows, tilted, tolerance=1.0)  # nearest-neighbour resampling costs up to ~0.8 mm
    code, out = run_cli(tmp_path, [good, path], "--resample-oblique")
    assert code == 0
    written = read_csv(out)
    assert (written["status"] == "ok").all() and len(written) == 6


# -- usage errors --------------------------------------------------------------------------------------------------
def test_cli_refuses_to_replace_an_existing_output(tmp_path: Path, good: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "table.csv"
    out.write_text("keep me\n")
    assert main([str(good), "-o", str(out), "--no-progress"]) == 2
    assert out.read_text() == "keep me\n"
    assert "--append" in capsys.readouterr().err
    assert main([str(good), "-o", str(out), "--no-progress", "--overwrite"]) == 0
    assert read_csv(out)["status"].tolist() == ["ok"] * 3


@pytest.mark.parametrize(("content", "reason"), [
    ("{not json", "cannot read label map"),
    ('{"1": "X9"}', "unknown level name"),
    ("[1, 2]", "must be a JSON object"),
    (None, "cannot read label map"),
], ids=["invalid-json", "unknown-level", "not-an-object", "missing-file"])
def test_cli_bad_label_map_is_a_usage_error(tmp_path: Path, good: Path, capsys: pytest.CaptureFixture,
                                            content: str | None, reason: str) -> None:
    labels = tmp_path / "labels.json"
    if content is not None:
        labels.write_text(content)
    out = tmp_path / "table.csv"
    assert main([str(good), "-o", str(out), "--labels", str(labels), "--no-progress"]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert str(labels) in err and reason in err


def test_cli_no_mask_files_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a mask")
    out = tmp_path / "table.csv"
    assert main([str(folder), "-o", str(out), "--no-progress"]) == 2
    assert not out.exists()
    assert "no mask files found" in capsys.readouterr().err


def test_error_rows_never_hold_zero_for_missing_values(tmp_path: Path, good: Path) -> None:
    frame = measure_files([tmp_path / "absent.nii.gz", good], ["absent", "good"], MeasureOptions(), progress=False)
    error = frame[frame["case_id"] == "absent"]
    numeric = [c for c in frame.columns if c.endswith("_mm") or c.startswith(("ratio_", "height_reduction_"))]
    assert error[numeric].isna().all().all()
