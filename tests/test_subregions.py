"""Whole-vertebra masks with a subregion mask (SPINEPS seg-vert + seg-spine) are measured on their bodies only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dataset_conversion.phantom_cli import main as phantom_main
from measure.cli import main as measure_main
from measure.io import MaskReadError
from measure.subregions import subregion_path, vertebral_bodies, without_subregion_masks
from tests.conftest import SHARED_DATA

PANOPTICA = SHARED_DATA / "extra" / "spineps_panoptica"


def test_a_body_is_the_instance_in_the_corpus_plus_its_endplates() -> None:
    instances = np.array([[20, 20, 20, 220, 120, 26, 0]])
    subregions = np.array([[49, 41, 42, 62, 100, 26, 0]])
    bodies, notes = vertebral_bodies(instances, subregions)
    assert bodies.tolist() == [[20, 0, 0, 20, 0, 0, 0]]  # arch, spinous process, disc, sacrum out
    assert notes == ["instance 26: no voxel in the body subregion 49 (e.g. the sacrum): not measured"]


def test_the_subregion_mask_is_found_by_a_name_rule_and_not_measured_itself(tmp_path: Path) -> None:
    vert, spine = tmp_path / "sub-1_seg-vert_msk.nii.gz", tmp_path / "sub-1_seg-spine_msk.nii.gz"
    assert subregion_path(vert, "seg-vert:seg-spine") == spine
    assert subregion_path(vert, "parts.nii.gz") == tmp_path / "parts.nii.gz"
    with pytest.raises(MaskReadError, match="does not contain 'seg-x'"):
        subregion_path(vert, "seg-x:seg-y")
    assert without_subregion_masks([vert, spine], "seg-vert:seg-spine") == [vert]


@pytest.fixture(scope="module")
def spineps_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spineps")
    assert phantom_main([str(out), "--cases", "2", "--levels", "T12-S1", "--spineps", "--no-image", "--slip",
                         "L4:7", "--spacing", "3", "0.7", "0.7", "--orientation", "ASL"]) == 0
    return out


def test_spineps_phantoms_measure_exactly_as_the_body_masks(spineps_phantoms: Path, tmp_path: Path) -> None:
    spineps, bodies = tmp_path / "spineps.csv", tmp_path / "bodies.csv"
    assert measure_main([str(spineps_phantoms), "--recursive", "--pattern", "seg-vert.nii.gz", "--subregions",
                         "seg-vert:seg-spine", "--labels", "verse", "-o", str(spineps), "--no-progress"]) == 0
    assert measure_main([str(spineps_phantoms), "--recursive", "--pattern", "mask.nii.gz", "-o", str(bodies),
                         "--no-progress"]) == 0
    a, b = pd.read_csv(spineps), pd.read_csv(bodies)
    assert set(b["level"]) - set(a["level"]) == {"S1"}  # the sacrum has no body subregion, as in SPINEPS
    merged = a.merge(b, on=["case_id", "level"], suffixes=("", "_bodies"))
    columns = ["height_anterior_mm", "height_middle_mm", "height_posterior_mm", "depth_mm", "volume_ml"]
    assert len(merged) == 12
    np.testing.assert_allclose(merged[columns].to_numpy(), merged[[f"{c}_bodies" for c in columns]].to_numpy())
    assert a["message"].str.contains("instance 26: no voxel in the body subregion").all()
    whole = tmp_path / "whole.csv"  # the same masks without their subregions: whole vertebrae, refused
    assert measure_main([str(spineps_phantoms), "--recursive", "--pattern", "seg-vert.nii.gz", "--labels", "verse",
                         "-o", str(whole), "--no-progress"]) == 1
    refused = pd.read_csv(whole).query("level != 'S1'")
    assert (refused["status"] == "failed").all() and refused["height_anterior_mm"].isna().all()
    deep = refused["message"].str.contains("more than a vertebral body") & refused["message"].str.contains(
        "--subregions")
    assert deep.sum() >= 6  # the others reach the posterior image border with their spinous process


def test_a_missing_or_misaligned_subregion_mask_is_named(spineps_phantoms: Path, tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    vert = sitk.ReadImage(str(spineps_phantoms / "phantom_000" / "seg-vert.nii.gz"))
    sitk.WriteImage(vert, str(case / "seg-vert.nii.gz"))
    out = tmp_path / "m.csv"
    assert measure_main([str(case / "seg-vert.nii.gz"), "--subregions", "seg-vert:seg-spine", "--labels", "verse",
                         "-o", str(out), "--no-progress"]) == 1
    assert "seg-spine.nii.gz: file not found" in pd.read_csv(out)["message"].iloc[0]
    shifted = sitk.ReadImage(str(spineps_phantoms / "phantom_000" / "seg-spine.nii.gz"))
    shifted.SetOrigin([o + 1.0 for o in shifted.GetOrigin()])
    sitk.WriteImage(shifted, str(case / "seg-spine.nii.gz"))
    assert measure_main([str(case / "seg-vert.nii.gz"), "--subregions", "seg-vert:seg-spine", "--labels", "verse",
                         "-o", str(out), "--overwrite", "--no-progress"]) == 1
    assert "grid (size, spacing, origin, direction) differs" in pd.read_csv(out)["message"].iloc[0]


@pytest.mark.skipif(not PANOPTICA.is_dir(), reason=f"SPINEPS example not available at {PANOPTICA}")
def test_the_real_spineps_example_gives_plausible_lumbar_bodies_without_posterior_elements(tmp_path: Path) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"2": "T11", "3": "T12", "4": "L1", "5": "L2", "6": "L3", "7": "L4", "8": "L5",
                                  "26": "S1"}))
    out = tmp_path / "m.csv"
    assert measure_main([str(PANOPTICA), "--subregions", "matched_instance:semantic", "--labels", str(labels), "-o",
                         str(out), "--no-progress"]) == 0
    table = pd.read_csv(out)
    assert sorted(table["case_id"].unique()) == ["matched_instance_pred", "matched_instance_ref"]
    lumbar = table[table["level"].str.startswith("L")]
    heights = lumbar[["height_anterior_mm", "height_middle_mm", "height_posterior_mm"]].to_numpy()
    assert len(lumbar) == 10 and ((heights >= 15) & (heights <= 40)).all()
    assert lumbar["depth_mm"].between(25, 45).all()  # a body's depth, not body plus arch (about 70 mm)
    ref = lumbar[lumbar["case_id"] == "matched_instance_ref"].set_index("level")
    pred = lumbar[lumbar["case_id"] == "matched_instance_pred"].set_index("level")
    assert (ref["height_posterior_mm"] - pred["height_posterior_mm"]).abs().max() <= 2.0  # two segmentations agree
    instances = sitk.GetArrayFromImage(sitk.ReadImage(str(PANOPTICA / "matched_instance_ref.nii.gz")))
    subregions = sitk.GetArrayFromImage(sitk.ReadImage(str(PANOPTICA / "semantic_ref.nii.gz")))
    spacing = np.prod(sitk.ReadImage(str(PANOPTICA / "semantic_ref.nii.gz")).GetSpacing())
    for level, value in (("L1", 4), ("L5", 8)):  # the measured part lies in the corpus plus endplates, nothing else
        body = ((instances == value) & (subregions == 49)) | (instances == value + 200)
        body_ml, whole_ml = body.sum() * spacing / 1000, (instances == value).sum() * spacing / 1000
        assert 0.9 * body_ml <= ref.loc[level, "volume_ml"] <= body_ml < 0.9 * whole_ml
