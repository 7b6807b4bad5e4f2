"""The truth of a phantom's motion segments and lumbar curve, from its analytic geometry (:mod:`.phantom`), by the
definitions of docs/measurements.md: what a correct ``spine-measure`` writes to its segments and spine tables.

The bodies are placed in the sagittal plane (``a`` anterior, ``s`` superior, mm). Their endplate points on the height
lines are exact (:meth:`~.phantom.PlacedVertebra.anchors`); between them an endplate is straight (a dip and the corner
rounding stay inside the lines), so the endplate line through them, extended by the inset to the walls, ends in the
corners a measurement finds.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from measure.levels import is_sacral_level
from measure.segments import meyerding_grade


def _endplate(placed, end: str) -> tuple[np.ndarray, np.ndarray]:
    """(posterior corner, anterior corner) of one endplate of a placed phantom body, in (a, s) mm."""
    anchors = placed.anchors()
    posterior, anterior = anchors[("posterior", end)], anchors[("anterior", end)]
    reach = placed.line_positions()["anterior"]  # the height lines lie +-reach from the centre along the body's axis
    extend = (0.5 * placed.spec.depth_mm - reach) / (2 * reach)  # as a share of the posterior-anterior point distance
    return posterior - extend * (anterior - posterior), anterior + extend * (anterior - posterior)


def _angle_deg(line: tuple[np.ndarray, np.ndarray]) -> float:
    """Angle of an endplate to the anterior axis, positive when its anterior end is cranial."""
    vector = line[1] - line[0]
    return math.degrees(math.atan2(vector[1], vector[0]))


def _segment_row(case_id: str, upper, lower) -> dict:
    above, below = _endplate(upper, "inferior"), _endplate(lower, "superior")
    upper_anchors, lower_anchors = upper.anchors(), lower.anchors()
    heights = {position: float(np.linalg.norm(upper_anchors[(position, "inferior")]
                                              - lower_anchors[(position, "superior")]))
               for position in ("anterior", "middle", "posterior")}
    mean = float(np.mean(list(heights.values())))
    direction = (below[1] - below[0]) / np.linalg.norm(below[1] - below[0])
    slip = float((above[0] - below[0]) @ direction)
    percent = 100.0 * slip / float(np.linalg.norm(below[1] - below[0]))
    return {"case_id": case_id, "upper_level": upper.spec.level, "lower_level": lower.spec.level,
            **{f"disc_height_{p}_mm": h for p, h in heights.items()}, "disc_height_mean_mm": mean,
            "disc_height_index": mean / upper.spec.depth_mm,
            "segment_angle_deg": _angle_deg(above) - _angle_deg(below), "slip_mm": slip, "slip_percent": percent,
            "meyerding_grade": meyerding_grade(percent)}


def segment_truth_table(case_id: str, placed: Sequence) -> pd.DataFrame:
    """One row per motion segment (adjacent bodies, S1-S2 excluded), columns as spine-measure's segments table."""
    rows = [_segment_row(case_id, upper, lower) for upper, lower in zip(placed[:-1], placed[1:], strict=False)
            if not (is_sacral_level(upper.spec.level) and is_sacral_level(lower.spec.level))]
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["meyerding_grade"] = frame["meyerding_grade"].astype("Int64")
    return frame


def spine_truth_table(case_id: str, placed: Sequence) -> pd.DataFrame:
    """One row: lordosis L1-S1 and L1-L5 and sacral slope (NaN where the levels are absent), as spine-measure's spine
    table."""
    by_level = {p.spec.level: p for p in placed}

    def angle(level: str, end: str) -> float:
        return _angle_deg(_endplate(by_level[level], end)) if level in by_level else math.nan

    l1, s1, l5 = angle("L1", "superior"), angle("S1", "superior"), angle("L5", "inferior")
    return pd.DataFrame([{"case_id": case_id, "lordosis_l1_s1_deg": l1 - s1, "lordosis_l1_l5_deg": l1 - l5,
                          "sacral_slope_deg": -s1}])
