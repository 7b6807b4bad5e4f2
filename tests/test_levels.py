"""Level scheme and label maps from JSON."""

from __future__ import annotations

import json
from pathlib import Path

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
