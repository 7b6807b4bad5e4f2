"""Level scheme and label maps from JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from measure.levels import LabelMapError, caudal_neighbour, load_label_map, parse_level_range, project_label_map


def test_project_scheme() -> None:
    levels = project_label_map().levels
    assert levels == {1: "T11", 2: "T12", 3: "L1", 4: "L2", 5: "L3", 6: "L4", 7: "L5", 8: "S1", 9: "S2"}


def test_nnunet_dataset_json(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "L1": 1, "L2": 2, "ignore": 3}, "channel_names": {}}))
    assert load_label_map(path).levels == {1: "L1", 2: "L2"}


@pytest.mark.parametrize("content", [{"1": "T11", "3": "L1"}, {"labels": {"1": "T11", "3": "L1"}, "qc": {}}])
def test_value_to_level_forms(tmp_path: Path, content: dict) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps(content))
    assert load_label_map(path).levels == {1: "T11", 3: "L1"}


@pytest.mark.parametrize(("content", "fragment"), [
    ({"1": "X7"}, "unknown level"), ({"1": "L1", "2": "L1"}, "several label values"),
    ({"labels": {"L1": [1, 2]}}, "region-based"), ("not json", "cannot read"),
])
def test_bad_label_maps(tmp_path: Path, content: object, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(LabelMapError, match=fragment):
        load_label_map(path)


def test_neighbours_skip_optional_variants_only() -> None:
    assert caudal_neighbour("L5", {"L4", "L5", "S1"}).level == "S1"
    assert caudal_neighbour("L5", {"L5", "L6", "S1"}).level == "L6"
    gap = caudal_neighbour("L2", {"L2", "L4"})
    assert gap.level == "L4" and gap.missing == ("L3",)
    assert caudal_neighbour("S2", {"S1", "S2"}).level is None
    assert parse_level_range("T12-S1") == ["T12", "L1", "L2", "L3", "L4", "L5", "S1"]


VERSE_BODY = {"T11": 18, "T12": 19, "L1": 20, "L2": 21, "L3": 22, "L4": 23, "L5": 24, "S1": 26}


def _verse_phantom_masks(tmp_path: Path) -> tuple[Path, Path]:
    """One phantom written twice: in the project scheme, and in VerSe numbering with the top slice of every body as
    its endplate (200+X) and a block of disc (100+X) in the background."""
    import SimpleITK as sitk

    from dataset_conversion.phantom import typical_spine
    from tests.conftest import phantom_on_grid

    phantom = phantom_on_grid(typical_spine(["T12", "L1", "L2", "L3", "L4", "L5"]), (1.0, 1.0, 1.0))
    project = phantom.mask_image()
    array = sitk.GetArrayFromImage(project)  # (k, j, i); k increases superior (LPS grid)
    verse = np.zeros_like(array, dtype=np.uint16)
    for value, level in project_label_map().levels.items():
        body = array == value
        if not body.any():
            continue
        verse[body] = VERSE_BODY[level]
        top = np.nonzero(body.any(axis=(1, 2)))[0].max()
        verse[top][body[top]] = 200 + VERSE_BODY[level]  # endplate: part of the vertebra
    below_l3 = np.nonzero((array == 5).any(axis=(1, 2)))[0].min() - 1
    disc = (array[below_l3] == 0) & (np.arange(array.shape[2]) < 3)[None, :]
    verse[below_l3][disc] = 100 + VERSE_BODY["L3"]  # disc below L3: background for the measurement
    out = []
    for name, data in (("project.nii.gz", array), ("verse.nii.gz", verse)):
        image = sitk.GetImageFromArray(data)
        image.CopyInformation(project)
        sitk.WriteImage(image, str(tmp_path / name))
        out.append(tmp_path / name)
    return out[0], out[1]


def test_bundled_verse_map_merges_endplates_and_drops_discs(tmp_path: Path) -> None:
    """spine-measure --labels verse: the same heights as the project-scheme mask of the same phantom (the endplate
    voxels belong to their vertebra), no row for the disc value, the VerSe body values in the label column."""
    from measure.batch import MeasureOptions, measure_file

    verse_map = load_label_map("verse")
    assert verse_map.level(20) == "L1" and verse_map.level(220) == "L1" and 120 in verse_map.background_values
    project_mask, verse_mask = _verse_phantom_masks(tmp_path)
    expected = measure_file(project_mask, "case", MeasureOptions())
    measured = measure_file(verse_mask, "case", MeasureOptions(label_map=verse_map))
    assert [r["level"] for r in measured] == [r["level"] for r in expected] == ["T12", "L1", "L2", "L3", "L4", "L5"]
    assert [r["label"] for r in measured] == [VERSE_BODY[r["level"]] for r in expected]
    for got, want in zip(measured, expected, strict=True):
        assert got["status"] == want["status"]
        for column in ("height_anterior_mm", "height_middle_mm", "height_posterior_mm", "distance_anterior_mm"):
            assert got[column] == pytest.approx(want[column], abs=1e-9, nan_ok=True), (got["level"], column)


def test_a_file_names_each_level_once_and_a_missing_map_lists_the_bundled_ones(tmp_path: Path) -> None:
    """Only a bundled map may merge values; a missing map names the bundled ones; background values count for
    files as well."""
    path = tmp_path / "verse_copy.json"
    path.write_text(json.dumps({"20": "L1", "220": "L1"}))
    with pytest.raises(LabelMapError, match="several label values"):
        load_label_map(path)
    with pytest.raises(LabelMapError, match="bundled maps?: totalspineseg, verse"):
        load_label_map(tmp_path / "nosuch")
    path.write_text(json.dumps({"20": "L1", "120": "background"}))  # a file's disc value is background too
    assert load_label_map(path).background_values == {120}


@pytest.mark.parametrize(("table", "fragment"), [
    ({}, "no labels found"), ({"L1": [1, 2]}, "region-based"), ({"1": True}, "cannot interpret"),
    ({"L1": 1, "L2": 1}, "named twice"), ({"x": "L1"}, "not an integer"), ({"-1": "L1"}, "must be positive"),
])
def test_one_label_table_reader_for_measurement_and_converter(tmp_path: Path, table: dict, fragment: str) -> None:
    """spine-measure's --labels and spine-convert's levels.json / --label-map refuse the same tables with the same
    message (measure.levels.parse_label_entries)."""
    from dataset_conversion.relabel import RelabelError, parse_label_table

    path = tmp_path / "map.json"
    path.write_text(json.dumps({"labels": table}))
    with pytest.raises(LabelMapError, match=fragment) as measured:
        load_label_map(path)
    with pytest.raises(RelabelError, match=fragment) as converted:
        parse_label_table(table, str(path))
    assert str(measured.value) == str(converted.value)


def test_both_forms_and_the_special_names_read_alike() -> None:
    from measure.levels import parse_label_entries

    export = parse_label_entries({"1": "L1", "2": "L2", "100": "Background", "9": "IGNORE"}, "export")
    nnunet = parse_label_entries({"background": 0, "L1": 1, "L2": 2, "background_disc": 100, "ignore": 9}, "nnunet")
    assert export == {1: "L1", 2: "L2", 100: "background", 9: "ignore"}
    assert nnunet == {1: "L1", 2: "L2", 100: "background_disc", 9: "ignore"}
