"""spine-convert on phantom exports: label mapping, policies, binary mode, file layout, splits, test cases."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dataset_conversion.convert_cli import main
from tests.convert_helpers import edit_levels, export_phantom, level_voxels, read_array, write_export

SCHEME = {"T11": 1, "T12": 2, "L1": 3, "L2": 4, "L3": 5, "L4": 6, "L5": 7, "S1": 8, "S2": 9}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    folders = write_export(root, [
        export_phantom("case_a"),
        export_phantom("case_b", levels=("L1", "L2", "L3", "L4", "L5", "S1"), orientation="PIL", seed=1),
        export_phantom("case_c", levels=("T12", "L1", "L2", "L3"), orientation="ASL", seed=2),
        export_phantom("case_d", levels=("L2", "L3", "L4", "L5", "S1", "S2"), seed=3),
    ])
    return root, folders


def convert(root, out, *extra, name="Spine", dataset_id=11):
    return main([str(r) for r in (root if isinstance(root, (list, tuple)) else [root])]
                + ["--out", str(out), "--id", str(dataset_id), "--name", name, "--no-progress", *extra])


def mapping(dataset) -> pd.DataFrame:
    return pd.read_csv(dataset / "case_mapping.csv", dtype=str, keep_default_na=False)


def test_every_level_lands_on_its_value_and_t10_on_ignore(export, tmp_path, capsys):
    root, folders = export
    assert convert(root, tmp_path) == 0
    dataset = tmp_path / "Dataset011_Spine"
    table = mapping(dataset)
    assert list(table["status"]) == ["converted"] * 4
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, **SCHEME, "ignore": 10}
    assert info["numTraining"] == 4 and info["file_ending"] == ".nii.gz" and info["channel_names"] == {"0": "T2"}
    for row in table.itertuples():
        source = level_voxels(folders[row.original_case_id])
        label = read_array(dataset / "labelsTr" / f"{row.nnunet_case_id}.nii.gz")
        image = read_array(dataset / "imagesTr" / f"{row.nnunet_case_id}_0000.nii.gz")
        original = read_array(folders[row.original_case_id] / "image.nii.gz")
        np.testing.assert_array_equal(image, original)
        assert label.dtype == np.uint8
        for level, voxels in source.items():
            expected = SCHEME.get(level, 10)
            assert voxels.any()
            assert np.all(label[voxels] == expected), (row.original_case_id, level)
        # vertebrae of the scheme exactly where the export has them; the ignore label on T10 and on the anatomy
        # beyond the annotated levels (--ignore-beyond auto), never on a labelled voxel
        scheme = np.any([v for level, v in source.items() if level in SCHEME], axis=0)
        assert np.array_equal((label > 0) & (label != 10), scheme)
    ignored = table.set_index("original_case_id")["ignored_levels"].str.split()
    assert ignored["case_a"] == ["T10", "unannotated-caudal"]  # T10-L5: T10 annotated above, S1 below not
    assert ignored["case_c"] == ["unannotated-both"] and ignored["case_d"] == ["unannotated-cranial"]
    assert "4 case(s) converted" in capsys.readouterr().out


def test_ignore_beyond_none_keeps_the_export_as_it_is(export, tmp_path):
    root, folders = export
    assert convert(root, tmp_path, "--ignore-beyond", "none") == 0
    dataset = tmp_path / "Dataset011_Spine"
    for row in mapping(dataset).itertuples():
        source = level_voxels(folders[row.original_case_id])
        label = read_array(dataset / "labelsTr" / f"{row.nnunet_case_id}.nii.gz")
        assert np.array_equal(label > 0, np.any(list(source.values()), axis=0))


def test_unknown_levels_background_and_error(export, tmp_path):
    root, folders = export
    assert convert(root, tmp_path / "bg", "--unknown-levels", "background", "--ignore-beyond", "none") == 0
    dataset = tmp_path / "bg" / "Dataset011_Spine"
    assert "ignore" not in json.loads((dataset / "dataset.json").read_text())["labels"]
    label = read_array(dataset / "labelsTr" / "Spine_0001.nii.gz")
    assert np.all(label[level_voxels(folders["case_a"])["T10"]] == 0)

    assert convert(root, tmp_path / "err", "--unknown-levels", "error") == 1
    table = mapping(tmp_path / "err" / "Dataset011_Spine").set_index("original_case_id")
    assert table.loc["case_a", "status"] == "skipped"
    assert "['T10'] are outside T11-S2" in table.loc["case_a", "reason"]
    assert (table.drop("case_a")["status"] == "converted").all()


def test_binary_mode(export, tmp_path):
    root, folders = export
    assert convert(root, tmp_path, "--binary") == 0
    dataset = tmp_path / "Dataset011_Spine"
    assert json.loads((dataset / "dataset.json").read_text())["labels"] == {"background": 0, "vertebra": 1,
                                                                           "ignore": 2}
    label = read_array(dataset / "labelsTr" / "Spine_0001.nii.gz")
    voxels = level_voxels(folders["case_a"])
    assert np.all(label[voxels["T10"]] == 2)
    assert all(np.all(label[v] == 1) for level, v in voxels.items() if level != "T10")
    assert set(np.unique(label)) == {0, 1, 2}


def test_export_wide_label_map_and_keep_ids(export, tmp_path):
    root, folders = export
    label_map = tmp_path / "map.json"
    # one map for the whole export, ignoring the per-case files: values 1..6 = L1..S1 (right only for case_b)
    label_map.write_text(json.dumps({"labels": {str(n): lvl for n, lvl in
                                                enumerate(["L1", "L2", "L3", "L4", "L5", "S1"], 1)}}))
    assert convert(root, tmp_path, "--label-map", str(label_map), "--levels-file", "none", "--keep-case-ids") == 1
    dataset = tmp_path / "Dataset011_Spine"
    table = mapping(dataset).set_index("original_case_id")
    assert table.loc["case_b", "nnunet_case_id"] == "case_b"
    assert "mask value(s) [7, 8] have no level name" in table.loc["case_a", "reason"]
    label = read_array(dataset / "labelsTr" / "case_b.nii.gz")
    assert np.all(label[level_voxels(folders["case_b"])["S1"]] == 8)


def test_splits_keep_subjects_together(export, tmp_path):
    root, folders = export
    edit_levels(folders["case_a"], same_subject_as=["case_c"])
    try:
        for extra in (["--folds", "2"], ["--val-fraction", "0.25", "--seed", "3"], ["--val-fraction", "0.5"]):
            out = tmp_path / "_".join(extra)
            assert convert(root, out, *extra) == 0
            dataset = out / "Dataset011_Spine"
            table = mapping(dataset).set_index("original_case_id")
            a, c = table.loc["case_a", "nnunet_case_id"], table.loc["case_c", "nnunet_case_id"]
            splits = json.loads((dataset / "splits_final.json").read_text())
            for fold in splits:
                assert (a in fold["val"]) == (c in fold["val"]) and (a in fold["train"]) == (c in fold["train"])
                assert sorted(fold["train"] + fold["val"]) == sorted(table["nnunet_case_id"])
                assert fold["val"] and fold["train"]
            assert table.loc["case_a", "subject_group"] == table.loc["case_c", "subject_group"]
        assert convert(root, tmp_path / "explicit", "--val-cases", "case_a") == 2  # separates a subject
        assert convert(root, tmp_path / "explicit2", "--val-cases", "case_a,case_c") == 0
        splits = json.loads((tmp_path / "explicit2" / "Dataset011_Spine" / "splits_final.json").read_text())
        assert splits == [{"train": ["Spine_0002", "Spine_0004"], "val": ["Spine_0001", "Spine_0003"]}]
    finally:
        edit_levels(folders["case_a"], same_subject_as=[])


def test_groups_file_and_seeded_split_is_reproducible(export, tmp_path):
    root, _ = export
    groups = tmp_path / "groups.csv"
    groups.write_text("case_id,subject_id\ncase_b,P1\ncase_d,P1\n")
    results = []
    for run in ("one", "two"):
        assert convert(root, tmp_path / run, "--groups", str(groups), "--val-fraction", "0.5", "--seed", "5") == 0
        results.append((tmp_path / run / "Dataset011_Spine" / "splits_final.json").read_text())
    assert results[0] == results[1]
    split = json.loads(results[0])[0]
    assert ("Spine_0002" in split["val"]) == ("Spine_0004" in split["val"])


def test_test_cases_and_unlabelled_go_to_images_ts(export, tmp_path):
    root, folders = export
    assert convert(root, tmp_path / "ts", "--test-cases", "case_d") == 0
    dataset = tmp_path / "ts" / "Dataset011_Spine"
    assert (dataset / "imagesTs" / "Spine_0004_0000.nii.gz").is_file()
    assert (dataset / "labelsTs" / "Spine_0004.nii.gz").is_file()
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 3
    assert all("Spine_0004" not in f["train"] + f["val"]
               for f in json.loads((dataset / "splits_final.json").read_text()))

    unlabelled = tmp_path / "unlabelled"
    write_export(unlabelled, [export_phantom("with_mask"), export_phantom("no_mask", seed=4)])
    (unlabelled / "no_mask" / "mask.nii.gz").unlink()
    assert convert(unlabelled, tmp_path / "skip") == 1
    reason = mapping(tmp_path / "skip" / "Dataset011_Spine").set_index("original_case_id").loc["no_mask", "reason"]
    assert "no mask found" in reason
    assert convert(unlabelled, tmp_path / "one", "--unlabelled", "test") == 0  # one subject: no split to make
    assert not (tmp_path / "one" / "Dataset011_Spine" / "splits_final.json").exists()
    write_export(unlabelled, [export_phantom("with_mask_2", seed=5)])
    assert convert(unlabelled, tmp_path / "test", "--unlabelled", "test", "--folds", "2") == 0
    dataset = tmp_path / "test" / "Dataset011_Spine"
    assert (dataset / "imagesTs" / "Spine_0001_0000.nii.gz").is_file()  # no_mask sorts first
    assert not (dataset / "labelsTs").exists()


def test_several_roots_merge_into_one_dataset(export, tmp_path):
    root, _ = export
    other = tmp_path / "site_b"
    write_export(other, [export_phantom("case_e", seed=6)])
    assert convert([root, other], tmp_path / "out") == 0
    table = mapping(tmp_path / "out" / "Dataset011_Spine")
    assert list(table["original_case_id"]) == ["case_a", "case_b", "case_c", "case_d", "case_e"]
    assert table["source"].iloc[-1] == "site_b/case_e"


@pytest.mark.parametrize("orientation", ["LPS", "PIL", "ASL", "RAI"])
@pytest.mark.parametrize("side", ["caudal", "cranial", "both"])
def test_ignore_beyond_annotation(tmp_path, orientation, side):
    """The ignored region: background beyond the plane through the end body's centroid, perpendicular to the line
    from its neighbour's centroid, and past the axial plane through that centroid; the same in every orientation."""
    from dataset_conversion.unannotated import ignore_beyond_annotation
    from measure.unannotated import body_centroids

    phantom = export_phantom("c", levels=("L1", "L2", "L3"), orientation=orientation)
    image = phantom.mask_image()
    labels = sitk.GetArrayFromImage(image).astype(np.uint8)
    result, changed = ignore_beyond_annotation(labels, labels, image.GetSpacing(), image.GetDirection(), side, 10)
    assert np.array_equal(result[labels > 0], labels[labels > 0]) and changed > 0
    assert changed == int(np.count_nonzero(result == 10))
    # physical position (mm, relative to the origin) of every voxel centre, brute force
    matrix = np.array(image.GetDirection()).reshape(3, 3) * image.GetSpacing()
    index = np.indices(labels.shape)[::-1].reshape(3, -1).T  # (i, j, k) per voxel
    physical = (index @ matrix.T).reshape(*labels.shape, 3)
    centroids = body_centroids(labels, image.GetSpacing(), image.GetDirection())
    for value, c in centroids.items():  # the centroid helper agrees with a brute-force mean
        np.testing.assert_allclose(c, physical[labels == value].mean(axis=0), atol=1e-6)
    by_height = sorted(centroids.values(), key=lambda c: c[2])  # caudal first (+z superior)
    expected = np.zeros(labels.shape, dtype=bool)
    for end, neighbour, down, wanted in ((by_height[0], by_height[1], -1.0, ("caudal", "both")),
                                         (by_height[-1], by_height[-2], 1.0, ("cranial", "both"))):
        if side in wanted:
            axis = (end - neighbour) / np.linalg.norm(end - neighbour)
            expected |= (((physical - end) @ axis) > 0) & ((physical[..., 2] - end[2]) * down > 0)
    np.testing.assert_array_equal(result == 10, expected & (labels == 0))


def test_auto_sides_from_the_levels():
    from measure.unannotated import auto_sides

    assert auto_sides(["L1", "L2", "L3", "L4", "L5"]) == "both"  # myosegmentum: T12 and S1 unannotated
    assert auto_sides(["T11", "T12", "L1", "L5"]) == "caudal"  # chu2015: S1 unannotated
    assert auto_sides(["T12", "L1", "S1"]) == "both"
    assert auto_sides(["T12", "L1", "S1"], annotated_above=True) == "caudal"  # T10 annotated (ignore label) above
    assert auto_sides(["T11", "S2"]) == "none"


def test_ignore_beyond_option_writes_ignore_label(export, tmp_path):
    root, _ = export
    assert convert(root, tmp_path, "--ignore-beyond", "caudal", "--unknown-levels", "background") == 0
    dataset = tmp_path / "Dataset011_Spine"
    assert json.loads((dataset / "dataset.json").read_text())["labels"]["ignore"] == 10
    assert "unannotated-caudal" in mapping(dataset)["ignored_levels"].iloc[0]


@pytest.mark.parametrize("image_name, mask_name", [("image.nrrd", "mask.mha"), ("img.mha", "seg.nrrd"),
                                                   ("image.nii", "label.nii.gz")])
def test_nrrd_mha_and_plain_nifti_files(tmp_path, image_name, mask_name):
    phantom = export_phantom("c", levels=("L1", "L2", "L3"), orientation="PIL")
    folder = tmp_path / "export" / "c"
    folder.mkdir(parents=True)
    sitk.WriteImage(phantom.intensity_image(), str(folder / image_name))
    sitk.WriteImage(phantom.mask_image(), str(folder / mask_name))
    (folder / "levels.json").write_text(json.dumps({"labels": {"1": "L1", "2": "L2", "3": "L3"}}))
    assert convert(tmp_path / "export", tmp_path / "raw", "--ignore-beyond", "none") == 0
    label = read_array(tmp_path / "raw" / "Dataset011_Spine" / "labelsTr" / "Spine_0001.nii.gz")
    mask = sitk.GetArrayFromImage(phantom.mask_image())
    np.testing.assert_array_equal(label, np.where(mask > 0, mask + 2, 0))


def test_verify_runs_nnunet_check_through_the_entry_point(export, tmp_path, capsys):
    """--verify runs the dataset checks installed under the entry-point group (nnU-Net's, registered by
    nnunet_ext): spine-convert exits 0 on a good dataset; the check raises once a label's spacing no longer matches
    its image's."""
    pytest.importorskip("nnunetv2")
    import SimpleITK as sitk

    from dataset_conversion.checks import run_dataset_checks

    root, _ = export
    assert convert(root, tmp_path / "good", "--verify") == 0
    dataset = next((tmp_path / "good").glob("Dataset*"))
    label = next((dataset / "labelsTr").glob("*.nii.gz"))
    broken = sitk.ReadImage(str(label))
    broken.SetSpacing([s * 2 for s in broken.GetSpacing()])
    sitk.WriteImage(broken, str(label))
    with pytest.raises(Exception):  # noqa: B017 - nnU-Net raises assertions and RuntimeErrors
        run_dataset_checks(dataset)
