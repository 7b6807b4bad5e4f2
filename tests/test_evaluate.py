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
    pred[:, 0:2, 1:6] = 3  # L1: 16 voxels outside the ignore column, 12 of them on the reference L1, and 4 in it
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
    # case a: L1 TP 12 FP 8 FN 4 (4 FP on background, 4 in the ignore column: L1 is annotated elsewhere in the case,
    # so predicting it there is wrong); L2 TP 8 FP 1 FN 8; L3 TP 0 FP 1 FN 0; binary TP 21 FP 5 FN 11 (the binary
    # evaluation leaves the ignore column out); case b (perfect): L1 TP 16, L2 TP 16; binary TP 32
    expected = {"dice_micro_multiclass": 2 * 52 / (2 * 52 + 10 + 12), "jaccard_micro_multiclass": 52 / (52 + 10 + 12),
                "dice_micro_binary": 2 * 53 / (2 * 53 + 5 + 11), "jaccard_micro_binary": 53 / (53 + 5 + 11)}
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-6), key
        assert 0.0 <= report[key] <= 1.0
    case_a = report["per_case"]["a"]
    assert case_a["dice_multiclass"] == pytest.approx(40 / 62, abs=1e-6)
    assert case_a["jaccard_multiclass"] == pytest.approx(20 / 42, abs=1e-6)
    assert case_a["dice_binary"] == pytest.approx(42 / 58, abs=1e-6)
    assert case_a["jaccard_binary"] == pytest.approx(21 / 37, abs=1e-6)
    assert case_a["dice_mean_per_class"] == pytest.approx((2 / 3 + 16 / 25 + 0.0) / 3, abs=1e-6)
    assert (case_a["ignored_reference_voxels"], case_a["left_out_predicted_voxels"]) == (8, 0)
    assert report["per_case"]["b"]["dice_multiclass"] == pytest.approx(1.0)
    l1, l2, l3 = (report["per_class"][c] for c in ("L1", "L2", "L3"))
    assert l1["dice_mean"] == pytest.approx((2 / 3 + 1.0) / 2, abs=1e-6)
    assert l1["dice_sd"] == pytest.approx(math.sqrt(2 * (1 / 6) ** 2), abs=1e-6)  # sample SD of 2/3 and 1.0
    assert l1["dice_micro"] == pytest.approx(2 * 28 / (2 * 28 + 8 + 4), abs=1e-6)
    assert l2["dice_mean"] == pytest.approx((16 / 25 + 1.0) / 2, abs=1e-6)
    assert l2["jaccard_micro"] == pytest.approx(24 / (24 + 1 + 8), abs=1e-6)
    # L3: predicted but absent from the reference in a -> 0; absent from both in b -> undefined, left out (nnU-Net)
    assert l3["dice_mean"] == 0.0 and l3["cases_with_class"] == 1 and l3["dice_sd"] is None
    assert report["per_class"]["T11"]["dice_mean"] is None
    assert report["dice_mean_per_class"] == pytest.approx(((2 / 3 + 1) / 2 + (0.64 + 1) / 2 + 0.0) / 3, abs=1e-6)
    classes = pd.read_csv(tmp_path / "report" / "classes_per_case.csv")
    row = classes[(classes.case_id == "a") & (classes["class"] == "L1")].iloc[0]
    assert (row.tp, row.fp, row.fn, row.voxels_ref, row.voxels_pred) == (12, 8, 4, 16, 20)
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
    assert report["dice_micro_multiclass"] == pytest.approx(40 / 62, abs=1e-6)  # L1 in the ignore column: FP


def test_label_maps_matched_by_name_and_binary_prediction(tmp_path):
    ref, pred = hand_case()
    pred_dir, ref_dir = nnunet_layout(tmp_path, {"a": (ref, None)})
    # the prediction uses its own values: L1 = 1, L2 = 2, L3 = 3 (and no S2 in its map)
    own = np.select([pred == 3, pred == 4, pred == 5], [1, 2, 3], 0).astype(np.uint8)
    write(pred_dir / "a.nii.gz", own)
    (pred_dir / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "L1": 1, "L2": 2, "L3": 3}}))
    code, report = run(pred_dir, ref_dir, tmp_path / "out", "--no-measure")
    assert code == 0  # the L1 in the ignore column is a FP (L1 is annotated elsewhere in the case)
    assert report["dice_micro_multiclass"] == pytest.approx(40 / 62, abs=1e-6)
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
    assert "no prediction file matches any reference by name" in err
    assert "prediction 'LumbarBinary_0001' vs reference 'Lumbar_0001'" in err
    code, report = run(pred_dir, ref_dir, tmp_path / "empty", "--no-measure")  # --missing empty: scored as 0
    assert code == 1 and report["cases_evaluated"] == 1
    assert "and every reference was scored as an empty prediction (--missing empty)" in capsys.readouterr().err
    split = tmp_path / "splits_final.json"
    split.write_text(json.dumps([{"train": [], "val": ["LumbarBinary_0001"]}]))
    code, report = run(pred_dir, ref_dir, tmp_path / "split", "--no-measure", "--split", str(split), "--fold", "0")
    assert code == 1 and report["cases_evaluated"] == 0
    assert "prediction 'LumbarBinary_0001' vs reference 'Lumbar_0001'" in capsys.readouterr().err


def test_every_prediction_failing_is_said_so(tmp_path, capsys):
    ref, _ = hand_case()
    pred_dir, ref_dir = nnunet_layout(tmp_path, {"Lumbar_0001": (ref, None)})
    (pred_dir / "Lumbar_0001.nii.gz").write_bytes(b"not an image")
    code, report = run(pred_dir, ref_dir, tmp_path / "out", "--no-measure")
    assert code == 1 and report["cases_evaluated"] == 0
    err = capsys.readouterr().err
    assert "every case failed (1; see the 'failed' lines above)" in err and "failed: Lumbar_0001:" in err


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_per_class_dice_equals_nnunet_own_evaluation(tmp_path):
    """nnU-Net's evaluation (ignore label, absent classes) gives the same per-class counts and mean Dice, except
    where the partial-annotation rule departs from it on purpose: nnU-Net leaves out every prediction on the ignore
    label, here a level that the case's reference annotates elsewhere stays a false positive there (case a: the 4 L1
    voxels in the ignore column)."""
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
    extra_fp = {("a", "L1"): 4}
    classes = pd.read_csv(tmp_path / "out" / "classes_per_case.csv")
    dice: dict[str, list[float]] = {}
    for case in theirs["metric_per_case"]:
        case_id = Path(case["prediction_file"]).name.removesuffix(".nii.gz")
        for label, values in case["metrics"].items():
            level = name[int(label)]
            row = classes[(classes.case_id == case_id) & (classes["class"] == level)].iloc[0]
            tp, fp, fn = values["TP"], values["FP"] + extra_fp.get((case_id, level), 0), values["FN"]
            assert (row.tp, row.fp, row.fn) == (tp, fp, fn), (case_id, level)
            dice.setdefault(level, []).append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
    nnunet_l1 = next(v["Dice"] for k, v in theirs["mean"].items() if name[int(k)] == "L1")
    assert nnunet_l1 == pytest.approx((0.75 + 1.0) / 2)  # nnU-Net: Dice of L1 in case a 24 / 32, here 24 / 36
    for label, values in theirs["mean"].items():
        level = name[int(label)]
        mine = ours["per_class"][level]["dice_mean"]
        if np.isnan(values["Dice"]):
            assert mine is None
        else:
            assert mine == pytest.approx(np.nanmean(dice[level]), abs=1e-6), level
            if level != "L1":
                assert mine == pytest.approx(values["Dice"], abs=1e-6), level


def test_parallel_workers_give_the_same_report(tmp_path):
    ref, pred = hand_case()
    pred_dir, ref_dir = nnunet_layout(tmp_path, {"a": (ref, pred), "b": (ref, pred[:, ::-1].copy())})
    _, serial = run(pred_dir, ref_dir, tmp_path / "serial", "--no-measure")
    _, parallel = run(pred_dir, ref_dir, tmp_path / "parallel", "--no-measure", "--jobs", "2")
    for key in ("dice_micro_multiclass", "dice_micro_binary", "per_class", "per_case"):
        assert serial[key] == parallel[key], key


LEVEL_VALUES = {k: v for k, v in DATASET_JSON["labels"].items() if k not in ("background", "ignore")}
STACK_SPACING_ZYX = (2.0, 1.0, 1.0)
FLIPPED_Z = (1, 0, 0, 0, 1, 0, 0, 0, -1)  # array index k runs caudally (inferior)


def stacked_spine(levels: list[str], slots: int, flip: bool = False) -> np.ndarray:
    """Vertebrae as blocks of 6 slices x 4 x 4 voxels (96 voxels) in slots of 8 slices along k, ``levels[0]`` in the
    most cranial slot: the highest k (+z is superior with the identity direction), the lowest k when ``flip``."""
    mask = np.zeros((8 * slots, 8, 8), np.uint8)
    for n, level in enumerate(levels):
        if level:
            start = 8 * n if flip else 8 * (slots - 1 - n)
            mask[start:start + 6, 2:6, 2:6] = LEVEL_VALUES[level]
    return mask


def relabel(mask: np.ndarray, mapping: dict[str, str]) -> np.ndarray:
    """``mask`` with the levels renamed by ``mapping`` (all at once, so swaps work)."""
    result = mask.copy()
    for old, new in mapping.items():
        result[mask == LEVEL_VALUES[old]] = LEVEL_VALUES[new]
    return result


SIX = ["T12", "L1", "L2", "L3", "L4", "L5"]


def identity_of(tmp_path: Path, cases: dict[str, tuple[np.ndarray, np.ndarray | None]], *extra: str
                ) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Evaluate stacked spines (nnU-Net layout, project values): the report, level_identity.csv and cases.csv."""
    raw, pred = tmp_path / "raw", tmp_path / "pred"
    (raw / "labelsTr").mkdir(parents=True)
    pred.mkdir()
    (raw / "dataset.json").write_text(json.dumps(DATASET_JSON))
    for case_id, (reference, prediction) in cases.items():
        write(raw / "labelsTr" / f"{case_id}.nii.gz", reference, STACK_SPACING_ZYX)
        if prediction is not None:
            write(pred / f"{case_id}.nii.gz", prediction, STACK_SPACING_ZYX)
    _, report = run(pred, raw / "labelsTr", tmp_path / "out", "--no-measure", *extra)
    levels = pd.read_csv(tmp_path / "out" / "level_identity.csv", keep_default_na=False, na_values=[""])
    return report, levels.set_index(["case_id", "level"]), pd.read_csv(tmp_path / "out" / "cases.csv").set_index(
        "case_id")


def test_level_identity_of_a_perfect_prediction_is_all_right(tmp_path, capsys):
    mask = stacked_spine(SIX, 6)
    report, levels, cases = identity_of(tmp_path, {"a": (mask, mask.copy())})
    identity = report["level_identity"]
    assert identity["available"] and identity["vertebrae"] == 6 and identity["right"] == 6
    assert (identity["share_right"], identity["off_by_one"], identity["wrong"], identity["missed"]) == (1.0, 0, 0, 0)
    assert (identity["cases"], identity["cases_all_right"], identity["share_cases_all_right"]) == (1, 1, 1.0)
    assert set(levels["outcome"]) == {"right"} and (levels["shift_levels"] == 0).all()
    assert (levels["voxels_reference"] == 96).all() and (levels["overlap_voxels"] == 96).all()
    assert list(levels.loc["a"]["predicted_level"]) == SIX
    row = cases.loc["a"]
    assert (row.levels_n, row.levels_right, row.levels_off_by_one, bool(row.levels_all_right)) == (6, 6, 0, True)
    assert "level identity: 6/6 vertebrae right" in capsys.readouterr().err
    assert "## Level identity" in (tmp_path / "out" / "report.md").read_text()


def test_level_identity_of_predictions_shifted_by_one_level(tmp_path):
    mask = stacked_spine(SIX, 6)
    down = np.where(mask > 0, mask + 1, 0).astype(np.uint8)  # every label one level caudal: T12 -> L1 ... L5 -> S1
    up = np.where(mask > 0, mask - 1, 0).astype(np.uint8)  # one level cranial: T12 -> T11 ... L5 -> L4
    report, levels, cases = identity_of(tmp_path, {"down": (mask, down), "up": (mask, up)})
    identity = report["level_identity"]
    assert (identity["vertebrae"], identity["right"], identity["off_by_one"]) == (12, 0, 12)
    assert (identity["off_by_one_caudal"], identity["off_by_one_cranial"]) == (6, 6)
    assert (identity["share_off_by_one"], identity["cases"], identity["cases_all_right"]) == (1.0, 2, 0)
    assert identity["share_cases_all_right"] == 0.0
    assert set(levels["outcome"]) == {"off_by_one"}
    assert set(levels.loc["down"]["shift_levels"]) == {1} and set(levels.loc["up"]["shift_levels"]) == {-1}
    assert levels.loc[("down", "L5"), "predicted_level"] == "S1"
    assert levels.loc[("up", "T12"), "predicted_level"] == "T11"
    assert (cases["levels_right"] == 0).all() and (cases["levels_off_by_one"] == 6).all()
    assert not cases["levels_all_right"].any()


def test_level_identity_of_swapped_levels(tmp_path):
    mask = stacked_spine(SIX, 6)
    far = relabel(mask, {"L1": "L4", "L4": "L1"})  # not adjacent: wrong
    near = relabel(mask, {"L2": "L3", "L3": "L2"})  # adjacent: off by one
    report, levels, cases = identity_of(tmp_path, {"far": (mask, far), "near": (mask, near)})
    assert levels.loc[("far", "L1"), "outcome"] == "wrong" and levels.loc[("far", "L1"), "shift_levels"] == 3
    assert levels.loc[("far", "L4"), "outcome"] == "wrong" and levels.loc[("far", "L4"), "predicted_level"] == "L1"
    assert levels.loc[("far", "L4"), "shift_levels"] == -3
    assert (levels.loc[("near", "L2"), "outcome"], levels.loc[("near", "L2"), "shift_levels"]) == ("off_by_one", 1)
    assert (levels.loc[("near", "L3"), "outcome"], levels.loc[("near", "L3"), "shift_levels"]) == ("off_by_one", -1)
    for case_id, swapped in (("far", {"L1", "L4"}), ("near", {"L2", "L3"})):
        others = levels.loc[case_id].drop(index=list(swapped))
        assert set(others["outcome"]) == {"right"} and len(others) == 4
    identity = report["level_identity"]
    assert (identity["right"], identity["off_by_one"], identity["wrong"], identity["missed"]) == (8, 2, 2, 0)
    assert identity["cases_all_right"] == 0
    assert (cases.loc["near", "levels_right"], cases.loc["near", "levels_off_by_one"]) == (4, 2)
    assert (cases.loc["far", "levels_right"], cases.loc["far", "levels_off_by_one"]) == (4, 0)


def test_level_identity_of_a_missed_vertebra_and_a_missing_prediction(tmp_path):
    mask = stacked_spine(SIX, 6)
    without_l5 = np.where(mask == LEVEL_VALUES["L5"], 0, mask).astype(np.uint8)
    report, levels, cases = identity_of(tmp_path, {"a": (mask, without_l5), "nopred": (mask, None)})
    l5 = levels.loc[("a", "L5")]
    assert l5["outcome"] == "missed" and pd.isna(l5["predicted_level"]) and pd.isna(l5["shift_levels"])
    assert (l5["overlap_voxels"], l5["voxels_reference"]) == (0, 96)
    assert set(levels.loc["nopred"]["outcome"]) == {"missed"}  # scored as an empty prediction
    identity = report["level_identity"]
    assert (identity["right"], identity["missed"], identity["cases"], identity["cases_all_right"]) == (5, 7, 2, 0)
    assert identity["share_right"] == pytest.approx(5 / 12)
    assert cases.loc["a", "levels_right"] == 5 and not cases.loc["a", "levels_all_right"]


def test_level_identity_ties_go_to_the_nearest_then_the_cranial_level():
    from measure.evaluation.levels_identity import identify_levels, level_sequence, level_steps

    names = ("L1", "L2", "L3", "L4")
    matrix = np.zeros((5, 5), np.int64)  # C[predicted, reference]; index i = names[i - 1]
    matrix[1, 2] = matrix[4, 2] = 5  # reference L2: 5 voxels predicted L1, 5 predicted L4 -> L1 (nearer)
    matrix[2, 3] = matrix[4, 3] = 5  # reference L3: L2 and L4 equally near -> L2 (the cranial one)
    matrix[0, 4] = 7  # reference L4: only background -> missed
    found = {i.level: i for i in identify_levels(matrix, names)}
    assert set(found) == {"L2", "L3", "L4"}  # L1 has no reference voxel: no row
    assert (found["L2"].predicted_level, found["L2"].outcome, found["L2"].shift_levels) == ("L1", "off_by_one", -1)
    assert (found["L3"].predicted_level, found["L3"].overlap_voxels, found["L3"].voxels_reference) == ("L2", 5, 10)
    assert (found["L4"].outcome, found["L4"].predicted_level, found["L4"].voxels_reference) == ("missed", None, 7)
    # transitional variants count as a step only when a label map names them
    assert level_steps("T12", "L1", level_sequence(names)) == 1
    assert level_steps("T12", "L1", level_sequence(("T12", "T13", "L1"))) == 2


def test_partial_annotation_with_the_ignore_label(tmp_path):
    """Reference L1-L3 with the ignore label below (k < 16): an L4 predicted there is left out, the part of the
    predicted L3 reaching into it (k 14-15, 2 x 16 voxels) is a false positive of L3 (annotated in this case)."""
    reference = stacked_spine(["L1", "L2", "L3"], 5)
    reference[:16] = DATASET_JSON["labels"]["ignore"]
    prediction = stacked_spine(["L1", "L2", "L3", "L4"], 5)
    prediction[14:16, 2:6, 2:6] = LEVEL_VALUES["L3"]
    report, levels, cases = identity_of(tmp_path, {"a": (reference, prediction)})
    classes = pd.read_csv(tmp_path / "out" / "classes_per_case.csv").set_index("class")
    assert (classes.loc["L3", "tp"], classes.loc["L3", "fp"], classes.loc["L3", "fn"]) == (96, 32, 0)
    assert (classes.loc["L4", "fp"], classes.loc["L4", "voxels_pred"]) == (0, 0)
    row = cases.loc["a"]
    assert (row.ignored_reference_voxels, row.left_out_predicted_voxels) == (16 * 64, 96)
    assert (row.fp_multiclass, row.fp_binary, row.ignore_beyond) == (32, 0, "none")  # binary: all left out there
    partial = report["partial_annotation"]
    assert (partial["ignored_reference_voxels"], partial["left_out_predicted_voxels"]) == (1024, 96)
    assert partial["cases_with_unannotated_voxels"] == 1 and "false positive" in partial["reason"]
    assert set(levels["outcome"]) == {"right"}
    assert "## Partial annotation" in (tmp_path / "out" / "report.md").read_text()


def test_ignore_beyond_on_a_reference_without_ignore_label(tmp_path, capsys):
    """Reference L1-L3 without ignore label, stored with k running caudally: auto makes the background past the
    planes through the centroids of L1 and L3 unannotated (both ends lack T11 and S2), so an L4 predicted below L3 is
    left out; with --ignore-beyond none it is a false positive. The L3 reaching 2 slices below its reference stays a
    false positive either way."""
    reference = stacked_spine(["L1", "L2", "L3"], 5, flip=True)
    prediction = stacked_spine(["L1", "L2", "L3", "L4"], 5, flip=True)
    prediction[22:24, 2:6, 2:6] = LEVEL_VALUES["L3"]  # reference L3: k 16-21
    raw, pred = tmp_path / "raw", tmp_path / "pred"
    (raw / "labelsTr").mkdir(parents=True)
    labels = {"labels": {k: v for k, v in DATASET_JSON["labels"].items() if k != "ignore"}}
    (raw / "dataset.json").write_text(json.dumps(labels))
    write(raw / "labelsTr" / "a.nii.gz", reference, STACK_SPACING_ZYX, direction=FLIPPED_Z)
    write(pred / "a.nii.gz", prediction, STACK_SPACING_ZYX, direction=FLIPPED_Z)

    def evaluate(option: str) -> tuple[dict, pd.Series, pd.DataFrame]:
        out = tmp_path / option
        code, report = run(pred, raw / "labelsTr", out, "--no-measure", "--ignore-beyond", option)
        assert code == 0
        classes = pd.read_csv(out / "classes_per_case.csv").set_index("class")
        return report, pd.read_csv(out / "cases.csv").iloc[0], classes

    report, case, classes = evaluate("auto")
    # planes through the centroids at k 2.5 (L1) and 18.5 (L3): background at k 0-2 and k 19-39 is unannotated
    assert case.ignore_beyond == "both"
    assert case.ignored_reference_voxels == 3 * 48 + 3 * 48 + 2 * 64 + 16 * 64
    assert (classes.loc["L4", "fp"], case.left_out_predicted_voxels) == (0, 96)
    assert (classes.loc["L3", "tp"], classes.loc["L3", "fp"]) == (96, 32)
    assert report["partial_annotation"]["ignore_beyond"] == "auto"
    assert "predicted voxel(s) in unannotated reference regions left out" in capsys.readouterr().err
    report, case, classes = evaluate("none")
    assert (classes.loc["L4", "fp"], case.left_out_predicted_voxels, case.ignored_reference_voxels) == (96, 0, 0)
    assert case.fp_binary == 96 + 32
    # the direction is read: the caudal side is where k grows here, the cranial side holds no prediction
    assert evaluate("caudal")[2].loc["L4", "fp"] == 0 and evaluate("cranial")[2].loc["L4", "fp"] == 96


def test_binary_label_map_has_no_level_identity(tmp_path, capsys):
    mask = stacked_spine(SIX, 6)
    raw, pred = tmp_path / "raw", tmp_path / "pred"
    (raw / "labelsTr").mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps(DATASET_JSON))
    write(raw / "labelsTr" / "a.nii.gz", mask, STACK_SPACING_ZYX)
    write(pred / "a.nii.gz", (mask > 0).astype(np.uint8), STACK_SPACING_ZYX)
    (pred / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "vertebra": 1}}))
    code, report = run(pred, raw / "labelsTr", tmp_path / "out", "--no-measure")
    assert code == 0 and report["dice_micro_binary"] == 1.0
    identity = report["level_identity"]
    assert identity["available"] is False and "names no vertebral levels" in identity["reason"]
    assert "prediction label map" in identity["reason"] and "level_identity.csv" not in report["files"]
    assert not (tmp_path / "out" / "level_identity.csv").exists()
    cases = pd.read_csv(tmp_path / "out" / "cases.csv")
    assert cases[["levels_n", "levels_right", "levels_all_right"]].isna().all().all()
    assert "level identity: not available" in capsys.readouterr().err
    assert "Not available: the prediction label map" in (tmp_path / "out" / "report.md").read_text()
    # a binary reference: an explicit --ignore-beyond side cannot find the annotated bodies
    assert main(["--pred", str(pred), "--ref", str(pred), "-o", str(tmp_path / "x"), "--ignore-beyond",
                 "caudal"]) == 2
    assert "needs a reference label map that names levels" in capsys.readouterr().err
