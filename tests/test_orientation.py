"""All 48 axis orders and flips of one volume give the same measurements in all three tables (written to and read
from files)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dataset_conversion.phantom import typical_spine
from measure.batch import MeasureOptions, measure_case
from measure.segment_table import to_segment_frame, to_spine_frame
from measure.table import ANCHOR_COLUMNS, to_frame
from tests.conftest import phantom_on_grid

VALUES = ["height_anterior_mm", "height_middle_mm", "height_posterior_mm", "rotation_deg", "depth_mm",
          "distance_anterior_mm", "distance_posterior_mm", "volume_ml", *ANCHOR_COLUMNS]
SEGMENT_VALUES = ["disc_height_anterior_mm", "disc_height_middle_mm", "disc_height_posterior_mm",
                  "disc_height_index", "segment_angle_deg", "slip_mm", "slip_percent", "meyerding_grade"]
SPINE_VALUES = ["lordosis_l1_s1_deg", "lordosis_l1_l5_deg", "sacral_slope_deg"]
SUFFIXES = [".nii.gz", ".nrrd", ".mha"]


@pytest.fixture(scope="module")
def reference_image() -> sitk.Image:
    spine = typical_spine(["L1", "L2", "L3", "L4", "L5", "S1"])
    return phantom_on_grid(spine, (2.5, 0.7, 0.9), lateral_mm=50).mask_image()


def test_all_48_orientations_agree(reference_image: sitk.Image, tmp_path: Path) -> None:
    results, segments, curves = [], [], []
    for n, (order, flips) in enumerate(itertools.product(itertools.permutations(range(3)),
                                                         itertools.product([False, True], repeat=3))):
        image = sitk.Flip(sitk.PermuteAxes(reference_image, list(order)), list(flips), False)
        path = tmp_path / f"o{n:02d}{SUFFIXES[n % 3]}"
        sitk.WriteImage(image, str(path))
        tables = measure_case(path, f"o{n:02d}", MeasureOptions())
        frame = to_frame(tables.vertebrae)
        assert (frame["status"] == "ok").all(), frame["message"].tolist()
        results.append(frame.set_index("level")[VALUES].astype(float))
        segments.append(to_segment_frame(tables.segments).set_index("upper_level")[SEGMENT_VALUES].astype(float))
        curves.append(to_spine_frame(tables.spine)[SPINE_VALUES].astype(float))
    assert len(results) == 48 and len(segments[0]) == 5
    for tables, columns, tolerance in ((results, VALUES, 0.05), (segments, SEGMENT_VALUES, 0.05),
                                       (curves, SPINE_VALUES, 0.05)):
        stacked = np.stack([r.to_numpy() for r in tables])
        stacked = np.nan_to_num(stacked, nan=-1.0)  # NaN (no caudal neighbour) must be NaN in every orientation
        spread = stacked.max(axis=0) - stacked.min(axis=0)
        assert spread.max() <= tolerance, pd.DataFrame(spread, index=tables[0].index, columns=columns).max()
