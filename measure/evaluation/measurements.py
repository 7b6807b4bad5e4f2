"""Measurement agreement: the spine-measure tables of the predicted and of the reference masks matched by case and
level; per quantity the mean absolute error, bias and 95% limits of agreement (Bland-Altman), and Genant agreement."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

QUANTITIES: dict[str, str] = {  # column -> unit
    "height_anterior_mm": "mm", "height_middle_mm": "mm", "height_posterior_mm": "mm", "rotation_deg": "deg",
    "distance_anterior_mm": "mm", "distance_posterior_mm": "mm",
}
DISTANCES = ("distance_anterior_mm", "distance_posterior_mm")
MEASURED = ("ok", "warning")


def _vertebrae(table: pd.DataFrame) -> pd.DataFrame:
    """Rows that stand for one vertebra (a level), without file-level error rows."""
    rows = table[table["level"].notna() & (table["level"].astype(str) != "")]
    return rows.drop_duplicates(["case_id", "level"])


def match_vertebrae(predicted: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """One row per (case, level) found in either table: both values, their difference (prediction - reference) and
    why a difference is missing. Distances are compared only when both go to the same caudal neighbour."""
    keep = ["case_id", "level", "status", "message", "distance_to_level", "genant_grade", "deformity_type",
            *QUANTITIES]
    ref = _vertebrae(reference)[keep].rename(columns=lambda c: c if c in ("case_id", "level") else f"{c}_ref")
    pred = _vertebrae(predicted)[keep].rename(columns=lambda c: c if c in ("case_id", "level") else f"{c}_pred")
    pairs = ref.merge(pred, on=["case_id", "level"], how="outer", indicator=True)
    pairs["match"] = pairs.pop("_merge").map({"both": "both", "left_only": "missing_in_prediction",
                                              "right_only": "extra_in_prediction"}).astype(str)
    notes: list[list[str]] = [[] for _ in range(len(pairs))]
    same_neighbour = pairs["distance_to_level_ref"].astype(str) == pairs["distance_to_level_pred"].astype(str)
    for quantity in QUANTITIES:
        difference = pairs[f"{quantity}_pred"] - pairs[f"{quantity}_ref"]
        if quantity in DISTANCES:
            difference = difference.where(same_neighbour)
        pairs[f"{quantity}_diff"] = difference
    for n, row in enumerate(pairs.itertuples(index=False)):
        if row.match == "missing_in_prediction":
            notes[n].append("level not in the prediction's measurements")
        elif row.match == "extra_in_prediction":
            notes[n].append("level not in the reference's measurements")
        elif not same_neighbour.iloc[n]:
            notes[n].append(f"distances go to {row.distance_to_level_ref} in the reference and to "
                            f"{row.distance_to_level_pred} in the prediction: not compared")
    grades_ref, grades_pred = pairs["genant_grade_ref"], pairs["genant_grade_pred"]
    both_graded = grades_ref.notna() & grades_pred.notna()
    pairs["genant_agrees"] = (grades_ref == grades_pred).where(both_graded)
    pairs["note"] = ["; ".join(n) for n in notes]
    order = ["case_id", "level", "match", "note", "status_ref", "status_pred"]
    for quantity in QUANTITIES:
        order += [f"{quantity}_ref", f"{quantity}_pred", f"{quantity}_diff"]
    order += ["distance_to_level_ref", "distance_to_level_pred", "genant_grade_ref", "genant_grade_pred",
              "genant_agrees", "deformity_type_ref", "deformity_type_pred", "message_ref", "message_pred"]
    return pairs[order].sort_values(["case_id", "level"], key=_level_sort_key).reset_index(drop=True)


def _level_sort_key(column: pd.Series) -> pd.Series:
    if column.name != "level":
        return column
    from ..levels import is_known_level, level_rank

    return column.map(lambda v: level_rank(v) if is_known_level(str(v)) else 999)


def _number(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def agreement_statistics(pairs: pd.DataFrame) -> dict[str, dict]:
    """Per quantity: n (pairs with both values), mean absolute error, bias (mean of prediction - reference), sample
    SD of the differences, 95% limits of agreement (bias +- 1.96 SD), largest absolute difference, and how many
    reference values have no predicted counterpart. None where not computable (never 0)."""
    statistics = {}
    for quantity, unit in QUANTITIES.items():
        difference = pairs[f"{quantity}_diff"].dropna().to_numpy(dtype=float)
        reference_known = pairs[f"{quantity}_ref"].notna()
        unmatched = int((reference_known & pairs[f"{quantity}_diff"].isna()).sum())
        n = len(difference)
        sd = float(np.std(difference, ddof=1)) if n > 1 else math.nan
        bias = float(difference.mean()) if n else math.nan
        statistics[quantity] = {
            "unit": unit, "n": n, "reference_values_without_prediction": unmatched,
            "mae": _number(float(np.abs(difference).mean()) if n else math.nan), "bias": _number(bias),
            "sd": _number(sd), "loa_low": _number(bias - 1.96 * sd), "loa_high": _number(bias + 1.96 * sd),
            "max_abs": _number(float(np.abs(difference).max()) if n else math.nan),
        }
    return statistics


def genant_statistics(pairs: pd.DataFrame) -> dict:
    """Share of vertebrae graded in both whose Genant grade agrees, and the (reference, prediction) grade counts."""
    graded = pairs[pairs["genant_agrees"].notna()]
    counts = graded.groupby(["genant_grade_ref", "genant_grade_pred"]).size()
    return {
        "n": len(graded), "agreement": _number(float(graded["genant_agrees"].astype(bool).mean()) if len(graded)
                                               else math.nan),
        "grade_pairs_ref_pred": {f"{int(r)}->{int(p)}": int(c) for (r, p), c in counts.items()},
    }
