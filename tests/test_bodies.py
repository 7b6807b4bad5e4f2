"""Vertebral bodies cut out of whole-vertebra masks by shape (``spine-measure --bodies-from-shape``): exact on a
synthetic vertebra, tilted or not; SPINEPS-style phantoms (pedicles, lamina, spinous process) measure as their body
masks; the real SPINEPS example's isolated bodies against its corpus subregion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dataset_conversion.phantom_cli import main as phantom_main
from measure.bodies import isolate_bodies, posterior_wall, volume_bodies
from measure.cli import main as measure_main
from measure.io import mask_volume
from measure.levels import load_label_map
from measure.subregions import vertebral_bodies
from tests.conftest import SHARED_DATA

PANOPTICA = SHARED_DATA / "extra" / "spineps_panoptica"


def _vertebra(tilt: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A whole vertebra on a 1 mm canonical grid (left, anterior, superior): a 40 x 30 x 26 mm body, two pedicles
    (8 mm wide, 12 mm high, 15 mm long) either side of a 22 mm canal, a lamina and a spinous process; ``tilt``
    shears it (anterior shift per mm superior). Returns (whole, body)."""
    shape = (60, 110, 60)
    lr, ap, si = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    lr, si = lr - 30, si - 30
    ap = ap - 70 - tilt * si  # the body's posterior wall at ap = 0 in the sheared frame
    body = (np.abs(lr) <= 20) & (ap >= 0) & (ap < 30) & (np.abs(si) <= 13)
    pedicles = (np.abs(lr) >= 11) & (np.abs(lr) <= 19) & (ap < 0) & (ap >= -15) & (np.abs(si) <= 6)
    lamina = (np.abs(lr) <= 19) & (ap < -15) & (ap >= -27) & (np.abs(si) <= 8)
    spinous = (np.abs(lr) <= 3) & (ap < -27) & (ap >= -45) & (np.abs(si) <= 5)
    return body | pedicles | lamina | spinous, body


@pytest.mark.parametrize("tilt", [0.0, 0.3, -0.3])
def test_the_body_of_a_synthetic_vertebra_is_cut_out_exactly(tilt: float) -> None:
    whole, body = _vertebra(tilt)
    intercept, slope = posterior_wall(whole, (1.0, 1.0, 1.0))
    assert slope == pytest.approx(tilt, abs=0.05)
    labels = np.where(whole, 7, 0).astype(np.uint8)
    bodies, notes = isolate_bodies(labels, (1.0, 1.0, 1.0))
    assert notes == []
    found = bodies == 7
    dice = 2 * (found & body).sum() / (found.sum() + body.sum())
    assert dice >= 0.99 and not (found & ~body & (np.abs(np.arange(60) - 30) <= 10)[:, None, None]).any()


def test_a_body_only_mask_is_left_out_with_a_note() -> None:
    _, body = _vertebra()
    bodies, notes = isolate_bodies(np.where(body, 3, 0).astype(np.uint8), (1.0, 1.0, 1.0))
    assert not bodies.any() and notes[0].startswith("label 3: no midline section separates a body")


@pytest.fixture(scope="module")
def whole_vertebra_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    for orientation, spacing in (("ASL", ("3", "0.7", "0.7")), ("LPS", ("1", "1", "1")), ("RIP", ("0.8", "2", "0.9"))):
        assert phantom_main([str(out / orientation), "--cases", "1", "--levels", "T12-S1", "--spineps", "--no-image",
                             "--slip", "L4:7", "--spacing", *spacing, "--orientation", orientation]) == 0
    return out


def test_whole_vertebra_phantoms_measure_as_their_body_masks(whole_vertebra_phantoms: Path, tmp_path: Path) -> None:
    """The posterior elements cut off by shape: heights and depth as measured on the phantom's body
    masks (within 0.05 mm), disc heights, angles and slip within 0.1 mm / 0.1 deg (the measured section can move
    with the postero-lateral voxels), the same Meyerding grades, volume within 2 %; the sacrum left out with a
    note."""
    shape, bodies = tmp_path / "shape.csv", tmp_path / "bodies.csv"
    assert measure_main([str(whole_vertebra_phantoms), "--recursive", "--pattern", "seg-vert.nii.gz",
                         "--bodies-from-shape", "--labels", "verse", "-o", str(shape), "--no-progress"]) == 0
    assert measure_main([str(whole_vertebra_phantoms), "--recursive", "--pattern", "mask.nii.gz", "-o", str(bodies),
                         "--no-progress"]) == 0
    a, b = pd.read_csv(shape), pd.read_csv(bodies)  # the same case ids: one phantom per orientation folder
    merged = a.merge(b, on=["case_id", "level"], suffixes=("", "_bodies"))
    assert len(merged) == 3 * 6 and set(b["level"]) - set(a["level"]) == {"S1"}
    columns = ["height_anterior_mm", "height_middle_mm", "height_posterior_mm", "depth_mm"]
    np.testing.assert_allclose(merged[columns].to_numpy(), merged[[f"{c}_bodies" for c in columns]].to_numpy(),
                               atol=0.05)
    np.testing.assert_allclose(merged["volume_ml"], merged["volume_ml_bodies"], rtol=0.02)
    assert a["message"].str.contains("S1 \\(value 26\\): sacrum").all()
    segments = pd.read_csv(tmp_path / "shape_segments.csv").merge(
        pd.read_csv(tmp_path / "bodies_segments.csv"), on=["case_id", "upper_level", "lower_level"],
        suffixes=("", "_bodies"))
    quantities = ["disc_height_anterior_mm", "disc_height_middle_mm", "disc_height_posterior_mm",
                  "segment_angle_deg", "slip_mm"]
    assert len(segments) == 3 * 5
    np.testing.assert_allclose(segments[quantities].to_numpy(dtype=float),
                               segments[[f"{q}_bodies" for q in quantities]].to_numpy(dtype=float), atol=0.1)
    assert (segments["meyerding_grade"] == segments["meyerding_grade_bodies"]).all()


def test_bodies_from_shape_and_subregions_are_exclusive(whole_vertebra_phantoms: Path, tmp_path: Path) -> None:
    assert measure_main([str(whole_vertebra_phantoms), "--recursive", "--bodies-from-shape", "--subregions",
                         "seg-vert:seg-spine", "-o", str(tmp_path / "m.csv"), "--no-progress"]) == 2


def _canonical_full(volume) -> np.ndarray:
    """A canonical volume's (cropped) array placed in its whole canonical shape."""
    full = np.zeros(volume.shape, volume.array.dtype)
    full[tuple(slice(o, o + n) for o, n in zip(volume.offset, volume.array.shape, strict=True))] = volume.array
    return full


@pytest.mark.skipif(not PANOPTICA.is_dir(), reason=f"SPINEPS example not available at {PANOPTICA}")
def test_the_real_spineps_example_isolated_by_shape_matches_its_corpus(tmp_path: Path) -> None:
    """The example's whole vertebrae (endplates merged, no subregion mask): the isolated bodies reach Dice >= 0.90
    against corpus + endplates, and their heights agree with the corpus-based ones within 1 mm."""
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"2": "T11", "3": "T12", "4": "L1", "5": "L2", "6": "L3", "7": "L4", "8": "L5",
                                  "26": "S1"}))
    whole_dir = tmp_path / "whole"
    whole_dir.mkdir()
    for kind in ("ref", "pred"):
        image = sitk.ReadImage(str(PANOPTICA / f"matched_instance_{kind}.nii.gz"))
        instances = sitk.GetArrayFromImage(image)
        whole = sitk.GetImageFromArray(
            np.where(instances >= 200, instances - 200, np.where(instances >= 100, 0, instances)).astype(np.uint8))
        whole.CopyInformation(image)
        sitk.WriteImage(whole, str(whole_dir / f"matched_instance_{kind}.nii.gz"))
        subregions = sitk.GetArrayFromImage(sitk.ReadImage(str(PANOPTICA / f"semantic_{kind}.nii.gz")))
        truth = sitk.GetImageFromArray(vertebral_bodies(instances, subregions)[0])
        truth.CopyInformation(image)
        isolated = _canonical_full(volume_bodies(mask_volume(whole, "whole", 25.0, False), load_label_map(labels)))
        expected = _canonical_full(mask_volume(truth, "truth", 25.0, False))
        for value in range(2, 9):
            a, b = isolated == value, expected == value
            assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.90, (kind, value)
    corpus, shape = tmp_path / "corpus.csv", tmp_path / "shape.csv"
    assert measure_main([str(PANOPTICA), "--subregions", "matched_instance:semantic", "--labels", str(labels), "-o",
                         str(corpus), "--no-progress"]) == 0
    assert measure_main([str(whole_dir), "--bodies-from-shape", "--labels", str(labels), "-o", str(shape),
                         "--no-progress"]) == 0
    merged = pd.read_csv(corpus).merge(pd.read_csv(shape), on=["case_id", "level"], suffixes=("", "_shape"))
    assert len(merged) == 14
    for column in ("height_anterior_mm", "height_middle_mm", "height_posterior_mm"):
        assert merged[column].isna().equals(merged[f"{column}_shape"].isna())  # T11 cut by the field of view in both
        assert (merged[column] - merged[f"{column}_shape"]).abs().max() <= 1.0


def test_the_bundled_totalspineseg_map_names_its_lumbar_values() -> None:
    labels = load_label_map("totalspineseg")
    assert [labels.level(v) for v in (31, 32, 41, 42, 43, 44, 45, 50)] == ["T11", "T12", "L1", "L2", "L3", "L4",
                                                                          "L5", "S1"]
    assert {1, 2, 95, 100} <= labels.background_values  # cord, canal, discs
