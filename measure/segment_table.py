"""Motion segments and whole spines -> two more tidy tables beside the vertebra table: one row per (case, segment)
and one per case, units in the column names, the vertebra table's provenance columns."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from .io import SagittalVolume
from .runtime import tool_version
from .segments import MEYERDING_MIN_SLIP_PERCENT, SegmentMeasurement, SpineSummary
from .table import COLUMNS as VERTEBRA_COLUMNS
from .table import PROVENANCE_COLUMNS, provenance, with_volume_warnings

_PROVENANCE = {name: VERTEBRA_COLUMNS[name] for name in PROVENANCE_COLUMNS}

SEGMENT_COLUMNS: dict[str, str] = {
    "case_id": "case identifier (as in the vertebra table)",
    "upper_level": "the cranial body of the segment",
    "lower_level": "the caudal body of the segment",
    "status": "ok | warning (see message) | failed (segment not measurable) | error (file not measurable)",
    "message": "reasons for NaN values and warnings, '; '-separated",
    "disc_height_anterior_mm": "upper body's anterior inferior endplate point to the lower body's anterior superior "
                               "one (the anterior height lines; sagittal plane)",
    "disc_height_middle_mm": "between the midpoints of the two endplates (Hurxthal's centre height)",
    "disc_height_posterior_mm": "as anterior, on the posterior height lines",
    "disc_height_mean_mm": "mean of the three disc-space heights (Dabbs)",
    "disc_height_index": "disc_height_mean_mm / the upper body's depth_mm",
    "segment_angle_deg": "angle between the upper body's inferior and the lower body's superior endplate, positive "
                         "when the disc space is higher anteriorly (lordotic)",
    "slip_mm": "upper body's posterior-inferior corner relative to the lower body's posterior-superior corner, along "
               "the lower superior endplate; positive anterior (anterolisthesis), negative posterior "
               "(retrolisthesis)",
    "slip_percent": "slip_mm as % of the lower superior endplate's length (Taillard)",
    "meyerding_grade": f"0 below {MEYERDING_MIN_SLIP_PERCENT:g} % slip either way, 1-4 the quarters of "
                       "|slip_percent| up to 100 %, 5 beyond",
    **_PROVENANCE,
}

SPINE_COLUMNS: dict[str, str] = {
    "case_id": "case identifier (as in the vertebra table)",
    "status": "ok | warning (some angle not computable, see message) | failed (none) | error (file not measurable)",
    "message": "reasons for NaN values, '; '-separated",
    "lordosis_l1_s1_deg": "Cobb angle between L1's and S1's superior endplates, positive for the normal lordotic "
                          "curve",
    "lordosis_l1_l5_deg": "Cobb angle between L1's superior and L5's inferior endplate, positive lordotic",
    "sacral_slope_deg": "S1's superior endplate against the patient's anterior axis, positive when its anterior end "
                        "is caudal",
    **_PROVENANCE,
}


def segment_rows(case_id: str, volume: SagittalVolume, segments: Sequence[SegmentMeasurement]) -> list[dict]:
    rows = []
    for s in segments:
        status, message = with_volume_warnings(volume, s.status, s.messages)
        rows.append({
            "case_id": case_id, "upper_level": s.upper_level, "lower_level": s.lower_level, "status": status,
            "message": message, **{f"disc_height_{p}_mm": h for p, h in s.disc_heights_mm.items()},
            "disc_height_mean_mm": s.disc_height_mean_mm, "disc_height_index": s.disc_height_index,
            "segment_angle_deg": s.segment_angle_deg, "slip_mm": s.slip_mm, "slip_percent": s.slip_percent,
            "meyerding_grade": pd.NA if s.meyerding_grade is None else s.meyerding_grade, **provenance(volume)})
    return rows


def spine_row(case_id: str, volume: SagittalVolume, summary: SpineSummary) -> dict:
    status, message = with_volume_warnings(volume, summary.status, summary.messages)
    return {"case_id": case_id, "status": status, "message": message,
            "lordosis_l1_s1_deg": summary.lordosis_l1_s1_deg, "lordosis_l1_l5_deg": summary.lordosis_l1_l5_deg,
            "sacral_slope_deg": summary.sacral_slope_deg, **provenance(volume)}


def error_spine_row(case_id: str, source: str, message: str) -> dict:
    """The spine-table row of a file that could not be measured at all (its vertebra row says the same)."""
    row = dict.fromkeys(SPINE_COLUMNS, math.nan)
    row.update(case_id=case_id, status="error", message=message, source_file=source, tool_version=tool_version())
    return row


def to_segment_frame(rows: Sequence[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(SEGMENT_COLUMNS))
    frame["meyerding_grade"] = frame["meyerding_grade"].astype("Int64")
    return frame


def to_spine_frame(rows: Sequence[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(SPINE_COLUMNS))
