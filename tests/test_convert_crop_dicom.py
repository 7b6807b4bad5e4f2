"""The anterior-posterior crop and its paste-back (voxel-exact, physically in place), DICOM series input, the VerSe
label map and nnU-Net's own integrity check on a converted dataset."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dataset_conversion.convert_cli import main
from dataset_conversion.crop import CropBox, ap_axis, ap_crop_box, apply_crop, paste_back
from dataset_conversion.phantom import GridSpec, fov_for, make_phantom, typical_spine
from dataset_conversion.sources.volume import read_volume, write_dicom_series
from tests.conftest import SHARED_DATA
from tests.convert_helpers import export_phantom, level_voxels, nnunet_integrity_check, read_array, write_export

ORIENTATIONS = ("LPS", "PIL", "ASL", "SAR", "RIA", "ILP")


def _convert(roots, out, *extra, dataset_id=13, name="Crop"):
    roots = roots if isinstance(roots, (list, tuple)) else [roots]
    return main([str(r) for r in roots] + ["--out", str(out), "--id", str(dataset_id), "--name", name,
                                             "--no-progress", *extra])


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_crop_axis_follows_the_direction_matrix(orientation):
    image = export_phantom("c", levels=("L1", "L2"), orientation=orientation).mask_image()
    assert ap_axis(image) == [c in "AP" for c in orientation].index(True)
    box = ap_crop_box(image, 0.25)
    n = image.GetSize()[box.axis]
    assert box.start == round(0.25 * n) and box.stop == n - round(0.25 * n)


def test_crop_axis_on_an_oblique_grid():
    spine = typical_spine(["L1", "L2"])
    grid = GridSpec(fov_for(spine, lateral_mm=20), (3.0, 1.0, 1.0), "ASL", oblique_deg=20.0)
    image = make_phantom("c", spine, grid, with_image=False).mask_image()
    assert ap_axis(image) == 0  # 'A' is the first letter; 20 degrees of obliquity do not change the closest axis


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.4])
def test_crop_and_paste_back_round_trip_is_voxel_exact(orientation, fraction):
    mask = export_phantom("c", levels=("L1", "L2", "L3"), orientation=orientation).mask_image()
    box = ap_crop_box(mask, fraction)
    cropped = apply_crop(mask, box)
    # physical geometry kept: the cropped voxel (0, 0, 0) sits where the original voxel at the box start sits
    first = [0, 0, 0]
    first[box.axis] = box.start
    np.testing.assert_allclose(cropped.GetOrigin(), mask.TransformIndexToPhysicalPoint(first), atol=1e-9)
    assert cropped.GetDirection() == mask.GetDirection() and cropped.GetSpacing() == mask.GetSpacing()
    restored = paste_back(cropped, CropBox.from_json(json.loads(json.dumps(box.to_json()))))
    original = sitk.GetArrayFromImage(mask)
    kept = np.zeros_like(original, dtype=bool)
    kept[box.index_slices()] = True
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restored), np.where(kept, original, 0))
    assert restored.GetSize() == mask.GetSize() and restored.GetOrigin() == mask.GetOrigin()
    assert restored.GetDirection() == mask.GetDirection() and restored.GetSpacing() == mask.GetSpacing()


def test_crop_refuses_a_mismatched_grid():
    mask = export_phantom("c", levels=("L1", "L2")).mask_image()
    box = ap_crop_box(mask, 0.25)
    with pytest.raises(ValueError, match="size"):
        apply_crop(mask[:, :-1, :], box)
    with pytest.raises(ValueError, match="crop box gives"):
        paste_back(mask, box)
    with pytest.raises(ValueError, match="between|\\[0, 0.5\\)"):
        ap_crop_box(mask, 0.5)


def test_convert_with_crop_records_boxes_and_pastes_back(tmp_path):
    root = tmp_path / "export"
    folders = write_export(root, [export_phantom(f"c{n}", orientation=o, seed=n)
                                  for n, o in enumerate(("LPS", "PIL", "ASL"))])
    assert _convert(root, tmp_path / "raw", "--crop-ap", "0.1", "--ignore-beyond", "none") == 0
    dataset = tmp_path / "raw" / "Dataset013_Crop"
    info = json.loads((dataset / "spine_convert.json").read_text())
    assert json.loads((dataset / "dataset.json").read_text())["spine_convert"]["crop_ap_fraction"] == 0.1
    table = pd.read_csv(dataset / "case_mapping.csv", dtype=str, keep_default_na=False)
    for row in table.itertuples():
        box = CropBox.from_json(info["crop_boxes"][row.nnunet_case_id])
        label = sitk.ReadImage(str(dataset / "labelsTr" / f"{row.nnunet_case_id}.nii.gz"))
        image = sitk.ReadImage(str(dataset / "imagesTr" / f"{row.nnunet_case_id}_0000.nii.gz"))
        assert label.GetSize()[box.axis] == box.stop - box.start and image.GetOrigin() == label.GetOrigin()
        full = sitk.GetArrayFromImage(paste_back(label, box))
        voxels = level_voxels(folders[row.original_case_id])
        kept = np.zeros(full.shape, dtype=bool)
        kept[box.index_slices()] = True
        for level, where in voxels.items():
            expected = {"T10": 10, "T11": 1, "T12": 2, "L1": 3, "L2": 4, "L3": 5, "L4": 6, "L5": 7}[level]
            assert np.all(full[where & kept] == expected)
        assert np.array_equal(full > 0, np.any(list(voxels.values()), axis=0) & kept)
        original_image = sitk.ReadImage(str(folders[row.original_case_id] / "image.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(paste_back(image, box)),
                                      np.where(kept, sitk.GetArrayFromImage(original_image), 0))


@pytest.mark.parametrize("orientation", ["LPS", "PIL"])  # PIL is left-handed: DICOM stores it the other way round
def test_dicom_series_image_converts(tmp_path, orientation):
    root = tmp_path / "export"
    phantom = export_phantom("dicom_case", levels=("L1", "L2", "L3"), orientation=orientation)
    folder = write_export(root, [phantom])["dicom_case"]
    image = sitk.ReadImage(str(folder / "image.nii.gz"))
    (folder / "image.nii.gz").unlink()
    write_dicom_series(image, folder / "image")
    back = read_volume(folder / "image")
    assert back.GetSize() == image.GetSize()
    assert _convert(root, tmp_path / "raw", "--ignore-beyond", "none") == 0
    dataset = tmp_path / "raw" / "Dataset013_Crop"
    table = pd.read_csv(dataset / "case_mapping.csv", dtype=str, keep_default_na=False)
    assert table["image_path"].iloc[0].endswith("image")
    assert ("re-indexed" in table["warnings"].iloc[0]) == (orientation == "PIL")
    written_image = sitk.ReadImage(str(dataset / "imagesTr" / "Crop_0001_0000.nii.gz"))
    written_label = sitk.ReadImage(str(dataset / "labelsTr" / "Crop_0001.nii.gz"))
    np.testing.assert_allclose(written_label.GetOrigin(), written_image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(written_label.GetDirection(), written_image.GetDirection(), atol=1e-9)
    # compare physically: resample the written label onto the original mask grid (identical voxel centres)
    on_original = sitk.Resample(written_label, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    expected = sitk.GetArrayFromImage(phantom.mask_image())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(on_original), np.where(expected > 0, expected + 2, 0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.Resample(written_image, image, sitk.Transform(),
                                                                       sitk.sitkNearestNeighbor, 0)),
                                  sitk.GetArrayFromImage(image))


def test_a_folder_with_two_dicom_series_is_refused(tmp_path):
    image = export_phantom("c", levels=("L1", "L2")).intensity_image()
    write_dicom_series(image, tmp_path / "series")
    second = tmp_path / "other"
    write_dicom_series(image, second)
    for n, path in enumerate(sorted(second.iterdir())):
        path.rename(tmp_path / "series" / f"other_{n:03d}.dcm")
    from dataset_conversion.sources.volume import VolumeReadError

    with pytest.raises(VolumeReadError, match="holds 2 DICOM series"):
        read_volume(tmp_path / "series")
    with pytest.raises(VolumeReadError, match="no DICOM series"):
        read_volume(second)


VERSE = SHARED_DATA / "extra" / "verse_labels_tptbox"


@pytest.mark.real_data
def test_verse_label_map_on_tptbox_samples(tmp_path):
    if not VERSE.is_dir():
        pytest.skip(f"VerSe samples not available at {VERSE}")
    root = tmp_path / "export"
    for subject, image_name in (("ct", "sub-ct_label-22_ct.nii.gz"), ("mri", "sub-mri_label-6_T2w.nii.gz")):
        (root / subject).mkdir(parents=True)
        os.symlink(VERSE / image_name, root / subject / "image.nii.gz")
        os.symlink(VERSE / image_name.replace("_ct", "_msk").replace("_T2w", "_msk").replace(
            "_label", "_seg-vert_label"), root / subject / "mask.nii.gz")
    assert _convert(root, tmp_path / "raw", "--label-map", "verse", "--folds", "2", "--ignore-beyond", "none") == 1
    dataset = tmp_path / "raw" / "Dataset013_Crop"
    table = pd.read_csv(dataset / "case_mapping.csv", dtype=str, keep_default_na=False).set_index("original_case_id")
    assert table.loc["ct", "levels"] == "L2 L3 L4"
    source = read_array(VERSE / "sub-ct_seg-vert_label-22_msk.nii.gz")
    label = read_array(dataset / "labelsTr" / f"{table.loc['ct', 'nnunet_case_id']}.nii.gz")
    for verse_value, ours in ((21, 4), (22, 5), (23, 6)):  # VerSe L2, L3, L4 -> project L2, L3, L4
        assert np.all(label[source == verse_value] == ours)
    assert np.array_equal(label > 0, source > 0)
    # the cervical MRI crop: C5-C7 are outside T11-S2 (ignore), discs 105/106 are background: nothing to train on
    assert table.loc["mri", "status"] == "skipped"
    assert "no vertebra of T11-S2" in table.loc["mri", "reason"] and "C5" in table.loc["mri", "reason"]


@pytest.mark.slow
def test_nnunet_integrity_check_passes(tmp_path):
    """nnU-Net's own nnUNetv2_plan_and_preprocess --verify_dataset_integrity on a converted phantom export."""
    pytest.importorskip("nnunetv2")
    root = tmp_path / "export"
    write_export(root, [export_phantom(f"c{n}", orientation=o, seed=n) for n, o in enumerate(("LPS", "PIL", "ASL"))])
    raw = tmp_path / "raw"
    assert _convert(root, raw, "--crop-ap", "0.1", "--folds", "3") == 0
    nnunet_integrity_check(raw, tmp_path, 13)
    copied = tmp_path / "preprocessed" / "Dataset013_Crop" / "splits_final.json"  # nnU-Net took our patient-level split
    assert json.loads(copied.read_text()) == json.loads((raw / "Dataset013_Crop" / "splits_final.json").read_text())
