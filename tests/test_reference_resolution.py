"""benchmarks/reference_resolution.py: slice steps and the smooth version of a staircase mask, on synthetic masks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_resolution.py"
spec = importlib.util.spec_from_file_location("bench_reference_resolution", SCRIPT)
reference_resolution = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = reference_resolution
spec.loader.exec_module(reference_resolution)


def _ellipsoid(shape=(40, 60, 60), radii=(14.0, 20.0, 16.0)) -> np.ndarray:
    grid = np.indices(shape, dtype=float)
    centre = [(n - 1) / 2 for n in shape]
    return (sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1).astype(np.uint8)


def _staircase(mask: np.ndarray, step: int) -> np.ndarray:
    """Every run of ``step`` slices along axis 0 takes its middle slice (drawn on thick slices, re-gridded)."""
    out = mask.copy()
    for start in range(0, mask.shape[0], step):
        out[start:start + step] = mask[min(start + step // 2, mask.shape[0] - 1)]
    return out


def test_steps_found_despite_jitter():
    blocky = _staircase(_ellipsoid(), 4)
    blocky[21, 5, 5] = 1  # a stray voxel inside one step is jitter, not a new step
    steps = reference_resolution.slice_steps(blocky)
    lengths = [stop - start for start, stop in steps]
    assert steps[0][0] == 0 and steps[-1][1] == blocky.shape[0]
    assert np.median(lengths) == 4


def test_smooth_version_of_a_staircase_scores_below_one_and_a_fine_mask_scores_one():
    fine = _ellipsoid()
    counts = reference_resolution.dice_counts(reference_resolution.smooth_across_slices(fine, (1.0, 1.0, 1.0)), fine)
    assert 2 * counts["binary_tp"] / counts["sum"] > 0.99  # nearly 1-slice steps: interpolation changes little
    blocky = _staircase(fine, 4)
    smooth = reference_resolution.smooth_across_slices(blocky, (1.0, 1.0, 1.0))
    dice = 2 * reference_resolution.dice_counts(smooth, blocky)["binary_tp"] / (np.count_nonzero(smooth)
                                                                                + np.count_nonzero(blocky))
    assert 0.85 < dice < 0.99
    # the smooth version is closer to the true shape than the staircase is
    truth = lambda m: 2 * np.count_nonzero(m & fine) / (np.count_nonzero(m) + np.count_nonzero(fine))  # noqa: E731
    assert truth(smooth > 0) > truth(blocky > 0)


def test_two_labels_keep_their_values(tmp_path):
    labels = np.zeros((12, 30, 30), np.uint8)
    labels[2:10, 3:12, 5:25] = 1
    labels[2:10, 15:26, 5:25] = 2
    smooth = reference_resolution.smooth_across_slices(_staircase(labels, 3), (1.0, 1.0, 1.0))
    assert set(np.unique(smooth)) == {0, 1, 2}
    counts = reference_resolution.dice_counts(smooth, labels)
    assert counts["multiclass_tp"] == counts["binary_tp"]


def test_main_reads_an_export_and_reports(tmp_path, capsys):
    case = tmp_path / "setA" / "case1"
    case.mkdir(parents=True)
    image = sitk.GetImageFromArray(_staircase(_ellipsoid(), 3).transpose(2, 1, 0).copy())  # array z, y, x: x = LR
    sitk.WriteImage(image, str(case / "mask.nii.gz"))
    assert reference_resolution.main(["--data", str(tmp_path), "--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    assert "| setA | 1 | 3.0 |" in out
    assert reference_resolution.main(["--data", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize("step", [2, 3])
def test_step_length_in_mm_uses_spacing(tmp_path, step):
    case = tmp_path / "s" / "c"
    case.mkdir(parents=True)
    image = sitk.GetImageFromArray(_staircase(_ellipsoid(), step).transpose(2, 1, 0).copy())
    image.SetSpacing((0.5, 1.0, 1.0))
    sitk.WriteImage(image, str(case / "mask.nii.gz"))
    assert reference_resolution.measure_case(case / "mask.nii.gz")["step_mm"] == pytest.approx(0.5 * step)
