"""benchmarks/error_locations.py: lateral zones and levels spilled into the unannotated region, with known answers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "error_locations.py"
spec = importlib.util.spec_from_file_location("bench_error_locations", SCRIPT)
error_locations = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = error_locations
spec.loader.exec_module(error_locations)

IGNORE = 10


def test_left_right_axis_follows_the_direction():
    assert error_locations.left_right_axis((1, 0, 0, 0, 1, 0, 0, 0, 1)) == 2  # i runs left-right: numpy's last axis
    # i runs anterior-posterior, k left-right (a sagittal stack stored slice by slice): numpy's first axis
    assert error_locations.left_right_axis((0, 0, 1, 1, 0, 0, 0, 1, 0)) == 0


def test_lateral_zones_place_each_error_by_its_distance_from_the_nearer_end():
    reference = np.zeros((30, 4, 4), dtype=np.uint8)
    reference[2:28, 1:3, 1:3] = 3  # 26 slices of 4 voxels, ends at 2 and 27
    prediction = reference.copy()
    prediction[2] = 0  # 4 missed at the lateral end (0 mm)
    prediction[15, 0, 0] = 4  # 1 false positive in the middle (13 mm from either end)
    prediction[0, 1, 1] = 1  # 1 false positive outside the extent
    prediction[9, 1:3, 1:3] = IGNORE  # no effect: predicted values other than 0 are "any vertebra"
    reference[20, 1, 1] = IGNORE  # an ignored voxel counts neither way (7 mm from the end at 27)
    counts = error_locations.lateral_zone_counts(prediction, reference, IGNORE, axis=0, spacing_mm=1.0)
    assert counts["outside"] == {"tp": 0, "fn": 0, "fp": 1}
    assert counts["0-4 mm"] == {"tp": 4 * 7, "fn": 4, "fp": 0}  # slices 3-5 and 24-27 right, slice 2 missed
    assert counts[">= 12 mm"] == {"tp": 4 * 2, "fn": 0, "fp": 1}  # slices 14 and 15 (13 mm from 2 and 12 from 27)
    assert counts["4-8 mm"]["tp"] == 4 * 8 - 1  # slices 6-9 and 20-23, one ignored voxel left out
    # spacing 2 mm: slice 2 is 0 mm, slice 4 is 4 mm away
    wide = error_locations.lateral_zone_counts(prediction, reference, IGNORE, axis=0, spacing_mm=2.0)
    assert wide["0-4 mm"]["tp"] == 4 * 3  # slices 3, 26, 27 (slice 2 missed)
    assert wide[">= 12 mm"]["fp"] == 1


def test_unannotated_spill_counts_annotated_levels_only_by_distance():
    reference = np.zeros((1, 1, 12), dtype=np.uint8)
    reference[0, 0, 2:5] = 7  # L5 annotated at 2-4
    reference[0, 0, 5:] = IGNORE  # the unannotated region beyond it
    prediction = np.zeros_like(reference)
    prediction[0, 0, 2:7] = 7  # L5 run 2 voxels over its edge: 1 mm and 2 mm away
    prediction[0, 0, 9:11] = 8  # S1, which this case does not annotate: allowed there, not counted
    prediction[0, 0, 11] = 7  # L5 far out: 7 mm
    spill = error_locations.unannotated_spill(prediction, reference, IGNORE, (1.0, 1.0, 1.0))
    assert spill["annotated_levels"] == {"0-1 mm": 1, "1-2 mm": 1, "2-3 mm": 0, "3-5 mm": 0, "> 5 mm": 1}
    assert spill["other_levels"] == {
        "0-1 mm": 0, "1-2 mm": 0, "2-3 mm": 0, "3-5 mm": 1, "> 5 mm": 1}  # S1 at 5 mm (bins end inclusive) and 6 mm
    # 0.5 mm voxels along that axis: 0.5, 1.0 and 3.5 mm
    assert error_locations.unannotated_spill(prediction, reference, IGNORE, (1.0, 1.0, 0.5))["annotated_levels"] == {
        "0-1 mm": 2, "1-2 mm": 0, "2-3 mm": 0, "3-5 mm": 1, "> 5 mm": 0}


def test_main_reads_the_ignore_label_and_skips_a_case_without_reference(tmp_path, capsys):
    sitk = pytest.importorskip("SimpleITK")
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "dataset.json").write_text('{"labels": {"background": 0, "L4": 6, "L5": 7, "ignore": 10}}')
    reference = np.zeros((6, 8, 8), dtype=np.uint8)
    reference[1:5, 2:5, 2:5] = 7
    reference[:, 6:, :] = IGNORE
    prediction = reference.copy()
    prediction[prediction == IGNORE] = 0
    prediction[1:5, 5:7, 2:5] = 7  # one row of L5 in annotated background, one in the unannotated region
    for folder, array in (("ref", reference), ("pred", prediction)):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / folder / "c1.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(prediction), str(tmp_path / "pred" / "orphan.nii.gz"))
    moved = sitk.GetImageFromArray(prediction)
    moved.SetOrigin((0.0, 0.0, 5.0))
    sitk.WriteImage(moved, str(tmp_path / "pred" / "c2.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(reference), str(tmp_path / "ref" / "c2.nii.gz"))
    assert error_locations.main(["--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                                 "--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr()
    assert "orphan.nii.gz: no reference" in out.err
    assert "c2.nii.gz: grid differs from the reference" in out.err  # skipped, the rest measured
    assert "0-1 mm 0, 1-2 mm 12" in out.out  # the second row: 2 voxels from the body
    import json

    summary = json.loads((tmp_path / "out.json").read_text())["summary"]["all"]["zones"]
    assert sum(z["fp"] for z in summary.values()) == 12 and sum(z["fn"] for z in summary.values()) == 0
