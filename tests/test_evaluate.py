"""spine-evaluate: hand-computed overlap figures, surface distances, measurement agreement and bad inputs."""

from __future__ import annotations

import json
import math
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dataset_conversion.phantom import GridSpec, fov_for, make_phantom, typical_spine
from measure.evaluation.cli import main
from measure.evaluation.surface import hd95_assd, surface_voxels

SPACING_ZYX = (3.0, 1.0, 0.5)
DATASET_JSON = {"labels": {"background": 0, "T11": 1, "T12": 2, "L1": 3, "L2": 4, "L3": 5, "L4": 6, "L5": 7, "S1": 8,
                           "S2": 9, "ignore": 10}, "file_ending": ".nii.gz"}


def hand_case() -> tuple[np.ndarray, np.ndarray]:
    """Reference and prediction (z, y, x) whose counts are worked out by hand in the tests below."""
    ref = np.zeros((2, 4, 6), np.uint8)
    ref[:, 0:2, 0:4] = 3  # L1: 16 voxels
    ref[:, 2:4, 0:4] = 4  # L2: 16 voxels
    ref[:, :, 5] = 10  # ignore: 8 voxels, left out
    pred = np.zeros_like(ref)
    pred[:, 0:2, 1:6] = 3  # L1: 16 voxels outside the ignore column, 12 of them on the reference L1
    pred[:, 2:4, 0:2] = 4  # L2: 8 voxels, all on the reference L2
    pred[0, 1, 0] = 4  # L2 on a reference L1 voxel: FN of L1, FP of L2, TP of the binary evaluation
    pred[0, 3, 4] = 5  # L3 where the reference has background: L3 is predicted but absent from the reference
    return ref, pred


def write(path: Path, array: np.ndarray, spacing_zyx=SPACING_ZYX, origin=(0.0, 0.0, 0.0),
          direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    image.SetOrigin(origin)
    image.SetDirection([float(d) for d in direction])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def nnunet_layout(tmp_path: Path, cases: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> tuple[Path, Path]:
    """``raw/labelsTr`` with ``raw/dataset.json`` (ignore label 10) and a prediction folder (project scheme)."""
    raw, pred = tmp_path / "raw", tmp_path / "pred"
    (raw / "labelsTr").mkdir(parents=True)
    pred.mkdir()
    (raw / "dataset.json").write_text(json.dumps(DATASET_JSON))
    for case_id, (reference, prediction) in cases.items():
        write(raw / "labelsTr" / f"{case_id}.nii.gz", reference)
        if prediction is not None:
            write(pred / f"{case_id}.nii.gz", prediction)
    return pred, raw / "labelsTr"


def run(pred: Path, ref: Path, out: Path, *extra: str) -> tuple[int, dict]:
    code = main(["--pred", str(pred), "--ref", str(ref), "-o", str(out), "--no-progress", *extra])
    return code, json.loads((out / "report.json").read_text())


def test_every_number_matches_the_hand_computation(tmp_path):
    ref, pred = hand_case()
    perfect = np.where(ref == 10, 0, ref).astype(np.uint8)
    pred_dir, ref_dir = nnunet_layout(tmp_path, {"a": (ref, pred), "b": (ref, perfect)})
    code, report = run(pred_dir, ref_dir, tmp_path / "report", "--no-measure")
    assert code == 0
    # case a: L1 TP 12 FP 4 FN 4; L2 TP 8 FP 1 FN 8; L3 TP 0 FP 1 FN 0; binary TP 21 FP 5 FN 11
    # case b (perfect): L1 TP 16, L2 TP 16; binary TP 32
    expected = {"dice_micro_multiclass": 2 * 52 / (2 * 52 + 6 + 12), "jaccard_micro_multiclass": 52 / (52 + 6 + 12),
                "dice_micro_binary": 2 * 53 / (2 * 53 + 5 + 11), "jaccard_micro_binary": 53 / (53 + 5 + 11)}
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-6), key
        assert 0.0 <= report[key] <= 1.0
    case_a = report["per_case"]["a"]
    assert case_a["dice_multiclass"] == pytest.approx(40 / 58, abs=1e-6)
    assert case_a["jaccard_multiclass"] == pytest.approx(20 / 38, abs=1e-6)
    assert case_a["dice_binary"] == pytest.approx(42 / 58, abs=1e-6)
    assert case_a["jaccard_binary"] == pytest.approx(21 / 37, abs=1e-6)
    assert case_a["dice_mean_per_class"] == pytest.approx((0.75 + 16 / 25 + 0.0) / 3, abs=1e-6)
    assert report["per_case"]["b"]["dice_multiclass"] == pytest.approx(1.0)
    l1, l2, l3 = (report["per_class"][c] for c in ("L1", "L2", "L3"))
    assert l1["dice_mean"] == pytest.approx((0.75 + 1.0) / 2, abs=1e-6)
    assert l1["dice_sd"] == pytest.approx(math.sqrt(2 * 0.125**2), abs=1e-6)  # sample SD of 0.75 and 1.0
    assert l1["dice_micro"] == pytest.approx(2 * 28 / (2 * 28 + 4 + 4), abs=1e-6)
    assert l2["dice_mean"] == pytest.approx((16 / 25 + 1.0) / 2, abs=1e-6)
    assert l2["jaccard_micro"] == pytest.approx(24 / (24 + 1 + 8), abs=1e-6)
    # L3: predicted but absent from the reference in a -> 0; absent from both in b -> undefined, left out (nnU-Net)
    assert l3["dice_mean"] == 0.0 and l3["cases_with_class"] == 1 and l3["dice_sd"] is None
    assert report["per_class"]["T11"]["dice_mean"] is None
    assert report["dice_mean_per_class"] == pytest.approx(((0.75 + 1) / 2 + (0.64 + 1) / 2 + 0.0) / 3, abs=1e-6)
    classes = pd.read_csv(tmp_path / "report" / "classes_per_case.csv")
    row = classes[(classes.case_id == "a") & (classes["class"] == "L1")].iloc[0]
    assert (row.tp, row.fp, row.fn, row.voxels_ref, row.voxels_pred) == (12, 4, 4, 16, 16)
    cases = pd.read_csv(tmp_path / "report" / "cases.csv")
    assert list(cases.case_id) == ["a", "b"] and set(cases.status) == {"ok"}
    assert (tmp_path / "report" / "report.md").read_text().count("| L1 |") == 1


def test_surface_distances_by_hand():
    a = np.zeros((1, 1, 3), bool)
    b = np.zeros_like(a)
    a[0, 0, 0] = a[0, 0, 2] = True
    b[0, 0, 0] = True
    # a -> b: 0 and 2 x 0.5 mm = 1.0; b -> a: 0. HD95 = max(95th percentile of (0, 1.0), 0) = 0.95
    hd95, assd = hd95_assd(a, b, (3.0, 1.0, 0.5))
    assert hd95 == pytest.approx(0.95, abs=1e-6) and assd == pytest.approx((0.5 + 0.0) / 2, abs=1e-6)
    one, other = np.zeros((3, 4, 5), bool), np.zeros((3, 4, 5), bool)
    one[0, 0, 0], other[2, 3, 4] = True, True
    distance = math.sqrt((2 * 3.0) ** 2 + (3 * 1.0) ** 2 + (4 * 0.5) ** 2)
    assert hd95_assd(one, other, (3.0, 1.0, 0.5)) == pytest.approx((distance, distance), abs=1e-6)
    assert all(math.isnan(v) for v in hd95_assd(one, np.zeros_like(one), (1, 1, 1)))


def _brute_force(a: np.ndarray, b: np.ndarray, spacing) -> tuple[float, float]:
    def surface(mask):
        points = []
        for index in zip(*np.nonzero(mask), strict=True):
            for axis, step in product(range(3), (-1, 1)):
                n = list(index)
                n[axis] += step
                if not 0 <= n[axis] < mask.shape[axis] or not mask[tuple(n)]:
                    points.append(index)
                    break
        return np.array(points, float) * np.array(spacing)

    sa, sb = surface(a), surface(b)
    pairwise = np.linalg.norm(sa[:, None, :] - sb[None, :, :], axis=2)
    d_ab, d_ba = pairwise.min(axis=1), pairwise.min(axis=0)
    return max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)), (d_ab.mean() + d_ba.mean()) / 2


def test_surface_distances_match_brute_force_on_random_blobs():
    rng = np.random.default_rng(3)
    for spacing in ((1.0, 1.0, 1.0), (4.0, 0.7, 0.5)):
        for _ in range(4):
            a = rng.random((6, 9, 8)) < 0.35
            b = np.roll(a, 2, axis=2) | (rng.random(a.shape) < 0.1)
            assert hd95_assd(a, b, spacing) == pytest.approx(_brute_force(a, b, spacing), abs=1e-6)
    cube = np.zeros((5, 5, 5), bool)
    cube[1:4, 1:4, 1:4] = True
    assert surface_voxels(cube).sum() == 26  # a 3x3x3 cube minus its centre


PHANTOM_SPACING_ZYX = (0.8, 0.8, 3.0)  # 3 mm sagittal slices along x (patient left-right of the LPS grid)


def phantom_mask() -> np.ndarray:
    """A T12-L5 phantom with the typical (level-specific) heights and rotations, project label values."""
    spine = typical_spine(["T12", "L1", "L2", "L3", "L4", "L5"])
    grid = GridSpec(fov_for(spine, lateral_mm=30.0), tuple(reversed(PHANTOM_SPACING_ZYX)), "LPS")
    return make_phantom("spine", spine, grid, with_image=False).mask


def _write_phantom_pair(tmp_path: Path, reference: np.ndarray, prediction: np.ndarray) -> tuple[Path, Path]:
    pred, ref = tmp_path / "pred", tmp_path / "raw" / "labelsTr"
    (tmp_path / "raw").mkdir(exist_ok=True)
    (tmp_path / "raw" / "dataset.json").write_text(json.dumps(DATASET_JSON))
    write(ref / "spine.nii.gz", reference, PHANTOM_SPACING_ZYX)
    write(pred / "spine.nii.gz", prediction, PHANTOM_SPACING_ZYX)
    return pred, ref


def test_perfect_prediction_gives_dice_one_and_zero_measurement_error(tmp_path):
    mask = phantom_mask()
    pred, ref = _write_phantom_pair(tmp_path, mask, mask.copy())
    code, report = run(pred, ref, tmp_path / "out")
    assert code == 0
    assert report["dice_micro_multiclass"] == 1.0 and report["dice_micro_binary"] == 1.0
    assert report["per_class"]["L3"]["hd95_mean_mm"] == 0.0
    agreement = report["measurement_agreement"]
    assert agreement["available"] and agreement["vertebrae"] == {"both": 6}
    for quantity, stats in agreement["quantities"].items():
        assert stats["n"] >= 5, quantity
        assert stats["mae"] == 0.0 and stats["bias"] == 0.0 and stats["max_abs"] == 0.0, quantity
    assert agreement["genant"]["agreement"] == 1.0
    assert (tmp_path / "out" / "bland_altman.png").stat().st_size > 10_000


def test_empty_prediction_gives_dice_zero_and_missing_measurements(tmp_path):
    mask = phantom_mask()
    pred, ref = _write_phantom_pair(tmp_path, mask, np.zeros_like(mask))
    code, report = run(pred, ref, tmp_path / "out")
    assert code == 0  # an empty prediction is a result, not a failure
    assert report["dice_micro_multiclass"] == 0.0 and report["dice_micro_binary"] == 0.0
    assert report["per_class"]["L2"]["dice_mean"] == 0.0 and report["per_class"]["L2"]["hd95_mean_mm"] is None
    for stats in report["measurement_agreement"]["quantities"].values():
        assert stats["n"] == 0 and stats["mae"] is None and stats["bias"] is None
        assert stats["reference_values_without_prediction"] >= 5
    pairs = pd.read_csv(tmp_path / "out" / "measurement_pairs.csv")
    assert set(pairs["match"]) == {"missing_in_prediction"} and pairs["height_anterior_mm_pred"].isna().all()
    assert pairs["height_anterior_mm_ref"].notna().all()


def test_swapped_levels_show_in_per_class_dice_and_measurement_table(tmp_path):
    mask = phantom_mask()
    swapped = mask.copy()
    swapped[mask == 4], swapped[mask == 5] = 5, 4  # L2 <-> L3
    pred, ref = _write_phantom_pair(tmp_path, mask, swapped)
    code, report = run(pred, ref, tmp_path / "out")
    assert code == 0
    per_class = report["per_class"]
    assert per_class["L2"]["dice_mean"] == 0.0 and per_class["L3"]["dice_mean"] == 0.0
    assert per_class["L1"]["dice_mean"] == 1.0 and per_class["L4"]["dice_mean"] == 1.0
    assert report["dice_micro_binary"] == 1.0 and report["dice_micro_multiclass"] < 0.7
    pairs = pd.read_csv(tmp_path / "out" / "measurement_pairs.csv").set_index("level")
    # typical L2 / L3: anterior height 25.5 / 26.5 mm, rotation 4 / 0 degrees; L1's distance now runs to L3's body
    assert pairs.loc["L2", "height_anterior_mm_diff"] == pytest.approx(1.0, abs=0.5)
    assert pairs.loc["L3", "rotation_deg_diff"] == pytest.approx(4.0, abs=1.5)
    assert pairs.loc["L1", "distance_anterior_mm_diff"] > 20
    assert pairs.loc["L4", "height_anterior_mm_diff"] == 0.0


def test_missing_extra_mismatched_and_unmapped_cases_are_reported(tmp_path):
    ref, pred = hand_case()
    bad_values = pred.copy()
    bad_values[0, 0, 0] = 42
    pred_dir, ref_dir = nnunet_layout(tmp_path, {"good": (ref, pred), "nopred": (ref, None),
                                                 "shifted": (ref, None), "badlabel": (ref, bad_values)})
    write(pred_dir / "shifted.nii.gz", pred, origin=(5.0, 0.0, 0.0))
    write(pred_dir / "orphan.nii.gz", pred)
    (pred_dir / "truncated.nii.gz").write_bytes((pred_dir / "good.nii.gz").read_bytes()[:40])
    write(ref_dir / "truncated.nii.gz", ref)
    code, report = run(pred_dir, ref_dir, tmp_path / "out", "--no-measure")
    assert code == 1
    problems = report["problems"]
    assert problems["missing_predictions"] == ["nopred"] and problems["extra_predictions"] == ["orphan"]
    failed = problems["failed_cases"]
    assert set(failed) == {"shifted", "badlabel", "truncated"}
    assert "origin (5, 0, 0) vs (0, 0, 0)" in failed["shifted"] and "shifted.nii.gz" in failed["shifted"]
    assert "[42]" in failed["badlabel"] and "badlabel.nii.gz" in failed["badlabel"]
    assert "truncated.nii.gz" in failed["truncated"]
    # the good case is evaluated and the missing one scored as empty: pooled counts of both
    assert report["cases_evaluated"] == 2
    assert report["per_case"]["nopred"]["status"] == "missing_prediction"
    assert report["per_case"]["nopred"]["dice_binary"] == 0.0
    assert report["dice_micro_binary"] == pytest.approx(2 * 21 / (2 * 21 + 5 + 11 + 32), abs=1e-6)
    code, skipped = run(pred_dir, ref_dir, tmp_path / "skip", "--no-measure", "--missing", "skip")
    assert skipped["per_case"]["nopred"]["status"] == "skipped" and skipped["cases_evaluated"] == 1
    assert skipped["dice_micro_binary"] == pytest.approx(42 / 58, abs=1e-6)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "orphan" in md and "nopred" in md and "shifted" in md


def test_prediction_in_another_axis_order_is_reoriented_exactly(tmp_path):
    ref, pred = hand_case()
    pred_dir, ref_dir = nnunet_layout(tmp_path, {"a": (ref, None)})
    # the same grid stored with the x axis flipped: origin moves to the last x voxel, direction x -> -x
    flipped = pred[:, :, ::-1].copy()
    write(pred_dir / "a.nii.gz", flipped, origin=((6 - 1) * 0.5, 0.0, 0.0), direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))
    code, report = run(pred_dir, ref_dir, tmp_path / "out", "--no-measure")
    assert code == 0 and "reoriented" in report["per_case"]["a"]["message"]
    assert report["dice_micro_multiclass"] == pytest.approx(40 / 58, abs=1e-6)


def test_label_maps_matched_by_name_and_binary_prediction(tmp_path):
    ref, pred = hand_case()
    pred_dir, ref_dir = nnunet_layout(tmp_path, {"a": (ref, None)})
    # the prediction uses its own values: L1 = 1, L2 = 2, L3 = 3 (and no S2 in its map)
    own = np.select([pred == 3, pred == 4, pred == 5], [1, 2, 3], 0).astype(np.uint8)
    write(pred_dir / "a.nii.gz", own)
    (pred_dir / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "L1": 1, "L2": 2, "L3": 3}}))
    code, report = run(pred_dir, ref_dir, tmp_path / "out", "--no-measure")
    assert code == 0 and report["dice_micro_multiclass"] == pytest.approx(40 / 58, abs=1e-6)
    notes = " ".join(report["problems"]["label_map_notes"])
    assert "only in the reference label map" in notes and "different values" in notes
    # a binary model's prediction (M_SC): only the binary evaluation
    binary = tmp_path / "binary"
    write(binary / "a.nii.gz", (pred > 0).astype(np.uint8))
    (binary / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "vertebra": 1}}))
    code, report = run(binary, ref_dir, tmp_path / "out_binary")
    assert code == 0 and report["dice_micro_multiclass"] is None
    assert report["dice_micro_binary"] == pytest.approx(42 / 58, abs=1e-6)
    assert not report["measurement_agreement"]["available"]


def test_selection_by_split_and_usage_errors(tmp_path, capsys):
    ref, pred = hand_case()
    pred_dir, ref_dir = nnunet_layout(tmp_path, {"a": (ref, pred), "b": (ref, pred.copy())})
    split = tmp_path / "splits_final.json"
    split.write_text(json.dumps([{"train": ["b"], "val": ["a"]}, {"train": ["a"], "val": ["b"]}]))
    code, report = run(pred_dir, ref_dir, tmp_path / "out", "--no-measure", "--split", str(split), "--fold", "1")
    assert code == 0 and list(report["per_case"]) == ["b"] and report["problems"]["not_selected"] == ["a"]
    assert main(["--pred", str(pred_dir), "--ref", str(ref_dir), "-o", str(tmp_path / "out")]) == 2  # exists
    assert main(["--pred", str(tmp_path / "nope"), "--ref", str(ref_dir), "-o", str(tmp_path / "x")]) == 2
    assert main(["--pred", str(pred_dir), "--ref", str(ref_dir), "-o", str(tmp_path / "y"), "--split",
                 str(split)]) == 2
    assert main(["--pred", str(pred_dir), "--ref", str(ref_dir), "-o", str(tmp_path / "z"), "--labels",
                 str(tmp_path / "missing.json")]) == 2
    assert main(["--pred", str(pred_dir), "--ref", str(tmp_path), "-o", str(tmp_path / "w")]) == 2  # no masks
    err = capsys.readouterr().err
    assert "not a folder" in err and "missing.json" in err and "no reference masks found" in err


def test_no_matching_case_is_a_failure_that_shows_how_the_ids_differ(tmp_path, capsys):
    """Predictions named after another dataset (LumbarBinary_0001 vs Lumbar_0001) match no reference: the report
    says so, with one id of each side, and the exit status is 1 (seen in the real-data benchmark)."""
    ref, pred = hand_case()
    pred_dir, ref_dir = nnunet_layout(tmp_path, {"Lumbar_0001": (ref, None)})
    write(pred_dir / "LumbarBinary_0001.nii.gz", pred)
    code, report = run(pred_dir, ref_dir, tmp_path / "out", "--no-measure", "--missing", "skip")
    assert code == 1 and report["cases_evaluated"] == 0 and report["dice_micro_multiclass"] is None
    err = capsys.readouterr().err
    assert "no case was evaluated" in err
    assert "prediction 'LumbarBinary_0001' vs reference 'Lumbar_0001'" not in err  # not_selected is empty here
    split = tmp_path / "splits_final.json"
    split.write_text(json.dumps([{"train": [], "val": ["LumbarBinary_0001"]}]))
    code, report = run(pred_dir, ref_dir, tmp_path / "split", "--no-measure", "--split", str(split), "--fold", "0")
    assert code == 1 and report["cases_evaluated"] == 0
    assert "prediction 'LumbarBinary_0001' vs reference 'Lumbar_0001'" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_per_class_dice_equals_nnunet_own_evaluation(tmp_path):
    """nnU-Net's evaluation (ignore label, absent classes) gives the same per-class mean Dice and counts."""
    evaluate_predictions = pytest.importorskip("nnunetv2.evaluation.evaluate_predictions")
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    ref, pred = hand_case()
    other_pred = np.where(ref == 10, 0, ref).astype(np.uint8)
    other_pred[1, 2:4, 0:4] = 6  # L2 half predicted as L4, a class absent from the reference
    pred_dir, ref_dir = nnunet_layout(tmp_path, {"a": (ref, pred), "b": (ref, other_pred)})
    theirs = evaluate_predictions.compute_metrics_on_folder(
        str(ref_dir), str(pred_dir), str(tmp_path / "summary.json"), SimpleITKIO(), ".nii.gz", list(range(1, 10)),
        ignore_label=10, num_processes=1)
    _, ours = run(pred_dir, ref_dir, tmp_path / "out", "--no-measure")
    name = {v: k for k, v in DATASET_JSON["labels"].items()}
    for label, values in theirs["mean"].items():
        mine = ours["per_class"][name[int(label)]]
        if np.isnan(values["Dice"]):
            assert mine["dice_mean"] is None
        else:
            assert mine["dice_mean"] == pytest.approx(values["Dice"], abs=1e-6), name[int(label)]
    classes = pd.read_csv(tmp_path / "out" / "classes_per_case.csv")
    for case in theirs["metric_per_case"]:
        case_id = Path(case["prediction_file"]).name.removesuffix(".nii.gz")
        for label, values in case["metrics"].items():
            row = classes[(classes.case_id == case_id) & (classes["class"] == name[int(label)])].iloc[0]
            assert (row.tp, row.fp, row.fn) == (values["TP"], values["FP"], values["FN"])


def test_parallel_workers_give_the_same_report(tmp_path):
    ref, pred = hand_case()
    pred_dir, ref_dir = nnunet_layout(tmp_path, {"a": (ref, pred), "b": (ref, pred[:, ::-1].copy())})
    _, serial = run(pred_dir, ref_dir, tmp_path / "serial", "--no-measure")
    _, parallel = run(pred_dir, ref_dir, tmp_path / "parallel", "--no-measure", "--jobs", "2")
    for key in ("dice_micro_multiclass", "dice_micro_binary", "per_class", "per_case"):
        assert serial[key] == parallel[key], key
