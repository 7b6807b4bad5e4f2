"""The real masks in ../shared/data/lumbar_mri (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from measure.batch import MeasureOptions, case_ids, find_mask_files, measure_files

pytestmark = pytest.mark.real_data
HEIGHTS = ["height_anterior_mm", "height_middle_mm", "height_posterior_mm"]
DISTANCES = ["distance_anterior_mm", "distance_posterior_mm"]
# Bodies that leave the field of view (manifest: "L1 touches the superior image edge ... height not measurable").
CUT_BY_FOV = {("myoseg_15", "L1"), ("myoseg_18", "L1")}


@pytest.fixture(scope="module")
def table(real_mri: Path) -> pd.DataFrame:
    paths = find_mask_files([real_mri], "mask.nii.gz", recursive=True)
    frame = measure_files(paths, case_ids(paths), MeasureOptions(labels_per_case="levels.json"), jobs=2,
                          progress=False)
    meta = {p.parent.name: json.loads((p.parent / "levels.json").read_text()) for p in paths}
    frame["set"] = frame["case_id"].map(lambda c: meta[c]["set"])
    frame["qc"] = frame["case_id"].map(lambda c: meta[c]["qc"]["status"])
    return frame


def test_every_case_measured(table: pd.DataFrame) -> None:
    assert table["case_id"].nunique() == 53
    assert not (table["status"] == "error").any()
    failed = table[table["status"] == "failed"]
    assert set(zip(failed["case_id"], failed["level"], strict=True)) == CUT_BY_FOV
    assert failed["message"].str.contains("body cut by the field of view at the superior image border").all()


def test_healthy_vertebrae_plausible(table: pd.DataFrame) -> None:
    healthy = table[table["set"].isin(["chu2015_t2", "myosegmentum"]) & (table["qc"] == "ok")]
    heights_ok = healthy[HEIGHTS].apply(lambda c: c.between(15, 36)).all(axis=1)
    rotation_ok = healthy["rotation_deg"].abs() < 45
    distances_ok = healthy[DISTANCES].apply(lambda c: c.isna() | c.between(2, 22)).all(axis=1)
    has_distance_when_neighbour = healthy.loc[healthy["distance_to_level"].fillna("") != "", DISTANCES].notna().all(
        axis=1)
    good = heights_ok & rotation_ok & distances_ok
    assert len(healthy) == 228
    assert good.mean() >= 0.99, healthy.loc[~good, ["case_id", "level", *HEIGHTS, "rotation_deg", *DISTANCES]]
    assert has_distance_when_neighbour.all()
    assert (healthy["genant_grade"].dropna() <= 1).all()  # no moderate or severe fracture in healthy volunteers


def test_known_warts_are_flagged(table: pd.DataFrame) -> None:
    rows = table.set_index(["case_id", "level"])
    assert rows.loc[("myoseg_31", "L3"), "qc_several_components"]
    assert rows.loc[("myoseg_15", "L1"), "qc_touches_fov_border"]
    assert pd.isna(rows.loc[("myoseg_15", "L1"), "height_anterior_mm"])  # cut by the superior FOV edge
    assert "field of view" in rows.loc[("myoseg_15", "L1"), "message"]
    assert rows.loc[("zukic_AKa3", "S1"), "qc_touches_fov_border"]  # laterally cut at the slab edge
