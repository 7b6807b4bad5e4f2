"""spine-convert on the real export in ../shared/data/lumbar_mri (skipped when absent): every level on its value,
T10 on the ignore label, same-subject pairs in one fold, a report of what was skipped and why, nnU-Net's own
integrity check."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dataset_conversion.convert_cli import main
from tests.convert_helpers import level_voxels, nnunet_integrity_check, read_array

pytestmark = pytest.mark.real_data

SAME_SUBJECT = [("zukic_AKa3", "zukic_AKa4"), ("zukic_DzZ_T1", "zukic_DzZ_T2")]


@pytest.fixture(scope="module")
def real_dataset(real_mri, tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    status = main([str(real_mri), "--out", str(raw), "--id", "501", "--name", "LumbarReal", "--jobs", "2",
                   "--no-progress"])
    return raw, raw / "Dataset501_LumbarReal", status


def test_every_case_is_converted_or_explained(real_dataset, real_mri):
    _, dataset, status = real_dataset
    table = pd.read_csv(dataset / "case_mapping.csv", dtype=str, keep_default_na=False)
    assert len(table) == len(list(real_mri.glob("*/*/mask.nii.gz"))) == 53
    skipped = table[table["status"] != "converted"]
    assert list(skipped["original_case_id"]) == ["myoseg_36"]  # the one annotation the export marks bad
    assert "QC 'bad'" in skipped["reason"].iloc[0] and "L4" in skipped["reason"].iloc[0]
    assert status == 1  # a case was skipped
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["numTraining"] == 52 and info["labels"]["ignore"] == 10


def test_levels_land_on_their_values(real_dataset, real_mri):
    _, dataset, _ = real_dataset
    table = pd.read_csv(dataset / "case_mapping.csv", dtype=str, keep_default_na=False)
    checked = {"T11": 0, "L1": 0, "L5": 0, "T10": 0}
    for row in table[table["status"] == "converted"].itertuples():
        source = level_voxels(real_mri / row.source.split("/", 1)[1])
        label = read_array(dataset / "labelsTr" / f"{row.nnunet_case_id}.nii.gz")
        for level, value in (("T11", 1), ("T12", 2), ("L1", 3), ("L2", 4), ("L3", 5), ("L4", 6), ("L5", 7),
                             ("S1", 8), ("T10", 10)):
            if level in source:
                assert np.all(label[source[level]] == value), (row.original_case_id, level)
                checked[level] = checked.get(level, 0) + 1
        # the vertebrae exactly as annotated; the ignore label also on the unannotated anatomy beyond them
        # (--ignore-beyond auto: S1 of chu2015, T12 and S1 of MyoSegmenTUM), never on an annotated voxel
        annotated = np.any([v for level, v in source.items() if level != "T10"], axis=0)
        assert np.array_equal((label > 0) & (label != 10), annotated)
        if "S2" not in source:
            assert (label == 10).any(), row.original_case_id
    assert checked["L1"] == 52 and checked["L5"] == 52 and checked["T11"] >= 14 and checked["T10"] == 4


def test_same_subject_pairs_share_every_fold(real_dataset):
    _, dataset, _ = real_dataset
    table = pd.read_csv(dataset / "case_mapping.csv", dtype=str, keep_default_na=False).set_index("original_case_id")
    splits = json.loads((dataset / "splits_final.json").read_text())
    assert len(splits) == 5
    for first, second in SAME_SUBJECT:
        a, b = table.loc[first, "nnunet_case_id"], table.loc[second, "nnunet_case_id"]
        for fold in splits:
            assert (a in fold["val"]) == (b in fold["val"])
    assert sorted(sum((f["val"] for f in splits), [])) == sorted(table[table["status"] == "converted"]
                                                                  ["nnunet_case_id"])


@pytest.mark.slow
def test_nnunet_integrity_check_on_the_real_dataset(real_dataset, tmp_path):
    pytest.importorskip("nnunetv2")
    raw, _, _ = real_dataset
    nnunet_integrity_check(raw, tmp_path, 501, processes=2, timeout=900)


def test_left_right_axis_of_the_real_data(real_dataset):
    """The development set stores sagittal slices along the last array axis (its README: arr[:, :, x]); the cascade
    plans must put that axis first and mirror only along it."""
    from nnunet_ext.plans import training_orientation, transpose_left_right_first

    _, dataset, _ = real_dataset
    axis, orientation = training_orientation(dataset)
    assert (axis, orientation) == (2, "LPS")
    assert transpose_left_right_first(axis)[0] == [2, 0, 1]
