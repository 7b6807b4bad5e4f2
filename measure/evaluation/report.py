"""Aggregate the per-case and per-class tables into the report (JSON-compatible dict) and write report.json,
report.md and the CSV tables."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..outputs import atomic_write_text
from ..runtime import tool_version
from .overlap import Counts

POOLED = ("ok", "missing_prediction")  # statuses whose counts enter the micro averages

DEFINITIONS = {
    "dice_micro": "2 TP / (2 TP + FP + FN), TP, FP, FN pooled over all vertebra classes and cases (the paper's "
                  "micro average); multiclass: a voxel of class a predicted as class b is a FN of a and a FP of b",
    "jaccard_micro": "TP / (TP + FP + FN), pooled likewise",
    "binary": "every vertebra class as one foreground (for a multiclass prediction: the paper's M_MCBM)",
    "ignore": "unannotated reference voxels (the reference's ignore label, and with --ignore-beyond its background "
              "beyond the annotated levels): a level predicted there that the case's reference annotates elsewhere "
              "is a false positive of that level (it is predicted beyond where the reference has it); any other "
              "predicted foreground there is left out, as nnU-Net leaves out all of it; the binary evaluation leaves "
              "out every predicted voxel there",
    "ignore_beyond": "--ignore-beyond: the reference background past a plane through the centroid of the first or "
                     "last annotated vertebra, perpendicular to the spine there, counts as unannotated; auto: the "
                     "ends that lack the scheme's first (T11) or last (S2) level, for a reference label map without "
                     "an ignore label that names levels, otherwise none; cases.csv ignore_beyond gives the sides used",
    "ignored_reference_voxels": "voxels of a case's unannotated region (ignore label plus background beyond)",
    "left_out_predicted_voxels": "predicted foreground voxels in the unannotated region that are not counted (of the "
                                 "per-level evaluation when both label maps name levels, else of the binary one)",
    "level_identity": "for each reference vertebra, the predicted level with most voxels on it (a tie goes to the "
                      "level nearest in level order, then the more cranial): right (its own level), off_by_one (one "
                      "level away; shift_levels -1: predicted more cranial, +1: more caudal; T13/L6 count as a step "
                      "only when a label map names them), wrong (further away), missed (no predicted foreground on "
                      "it); levels_all_right: every reference vertebra of the case right",
    "absent_class": "Dice is undefined (NaN, left out of means) for a class in neither mask of a case; a class "
                    "predicted but not in the reference scores 0 (nnU-Net)",
    "dice_mean": "mean and sample SD over cases of the per-case Dice of a class (SpineParseNet's per-structure "
                 "figures); dice_mean_per_class is their mean over classes",
    "hd95_mm": "larger of the two directed 95th percentiles of surface distances (mm, voxel centres, 6-connected "
               "surface)",
    "assd_mm": "mean of the two directed mean surface distances (mm)",
    "limits_of_agreement": "bias +- 1.96 sample SD of prediction - reference",
}


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _counts(table: pd.DataFrame, prefix: str) -> Counts:
    return Counts(int(table[f"tp{prefix}"].sum()), int(table[f"fp{prefix}"].sum()), int(table[f"fn{prefix}"].sum()))


def _mean_sd(values: pd.Series) -> tuple[float | None, float | None]:
    values = values.dropna().to_numpy(dtype=float)
    mean = float(values.mean()) if len(values) else None
    return mean, float(np.std(values, ddof=1)) if len(values) > 1 else None


def overlap_summary(cases: pd.DataFrame, classes: pd.DataFrame, multiclass: bool) -> dict:
    """The overlap figures of the report from the per-case and per-(case, class) tables."""
    pooled = cases[cases["status"].isin(POOLED)]
    pooled_classes = classes[classes["case_id"].isin(set(pooled["case_id"]))]
    binary = _counts(pooled, "_binary") if len(pooled) else Counts(0, 0, 0)
    summary: dict = {
        "cases_evaluated": int(len(pooled)),
        "dice_micro_binary": _number(binary.dice), "jaccard_micro_binary": _number(binary.jaccard),
        "dice_micro_multiclass": None, "jaccard_micro_multiclass": None,
        "counts_binary": {"tp": binary.tp, "fp": binary.fp, "fn": binary.fn},
    }
    mean, sd = _mean_sd(pooled["dice_binary"])
    summary["dice_binary_per_case"] = {"mean": mean, "sd": sd}
    summary["hd95_binary_mm_per_case"] = dict(zip(("mean", "sd"), _mean_sd(pooled["hd95_binary_mm"]), strict=True))
    summary["assd_binary_mm_per_case"] = dict(zip(("mean", "sd"), _mean_sd(pooled["assd_binary_mm"]), strict=True))
    per_class: dict[str, dict] = {}
    if multiclass:
        total = _counts(pooled, "_multiclass") if len(pooled) else Counts(0, 0, 0)
        summary.update(dice_micro_multiclass=_number(total.dice), jaccard_micro_multiclass=_number(total.jaccard),
                       counts_multiclass={"tp": total.tp, "fp": total.fp, "fn": total.fn})
        mean, sd = _mean_sd(pooled["dice_multiclass"])
        summary["dice_multiclass_per_case"] = {"mean": mean, "sd": sd}
        for name, rows in pooled_classes.groupby("class", sort=False):
            counts = Counts(int(rows["tp"].sum()), int(rows["fp"].sum()), int(rows["fn"].sum()))
            dice_mean, dice_sd = _mean_sd(rows["dice"])
            per_class[str(name)] = {
                "dice_micro": _number(counts.dice), "jaccard_micro": _number(counts.jaccard),
                "dice_mean": dice_mean, "dice_sd": dice_sd, "cases_with_class": int(rows["dice"].notna().sum()),
                "cases_in_reference": int((rows["voxels_ref"] > 0).sum()),
                "hd95_mean_mm": _mean_sd(rows["hd95_mm"])[0], "assd_mean_mm": _mean_sd(rows["assd_mm"])[0],
                "tp": counts.tp, "fp": counts.fp, "fn": counts.fn,
            }
        means = [v["dice_mean"] for v in per_class.values() if v["dice_mean"] is not None]
        summary["dice_mean_per_class"] = float(np.mean(means)) if means else None
    summary["per_class"] = per_class
    summary["per_case"] = {
        row["case_id"]: {k: (_number(v) if isinstance(v, (float, int, np.number)) and not isinstance(v, bool)
                             else v) for k, v in row.items() if k != "case_id"}
        for row in cases.to_dict("records")}
    return summary


def provenance(prediction: Path, reference: Path, maps: dict, selection: dict) -> dict:
    return {"tool": "spine-evaluate", "tool_version": tool_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "prediction_folder": str(prediction), "reference_folder": str(reference), "label_maps": maps,
            "selection": selection, "definitions": DEFINITIONS}


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown(report: dict) -> str:
    """A human-readable summary of the report."""
    lines = ["# spine-evaluate report", "",
             f"Prediction: `{report['provenance']['prediction_folder']}`  ",
             f"Reference: `{report['provenance']['reference_folder']}`  ",
             f"Cases evaluated: {report['cases_evaluated']}; tool version {report['provenance']['tool_version']}; "
             f"{report['provenance']['created']}", "",
             "## Overlap (micro-averaged over all vertebra classes and cases, as the paper's Table 1)", "",
             "| evaluation | Dice | Jaccard |", "|---|---:|---:|",
             f"| multiclass | {_fmt(report['dice_micro_multiclass'])} | "
             f"{_fmt(report['jaccard_micro_multiclass'])} |",
             f"| binary (any vertebra) | {_fmt(report['dice_micro_binary'])} | "
             f"{_fmt(report['jaccard_micro_binary'])} |",
             ""]
    if report["per_class"]:
        lines += ["## Per class", "", "| class | Dice micro | Dice mean +- SD (cases) | HD95 mean (mm) | "
                  "ASSD mean (mm) | cases with class |", "|---|---:|---:|---:|---:|---:|"]
        for name, v in report["per_class"].items():
            lines.append(f"| {name} | {_fmt(v['dice_micro'])} | {_fmt(v['dice_mean'])} +- {_fmt(v['dice_sd'])} | "
                         f"{_fmt(v['hd95_mean_mm'], 2)} | {_fmt(v['assd_mean_mm'], 2)} | {v['cases_with_class']} |")
        lines += ["", f"Mean of the per-class mean Dice: {_fmt(report.get('dice_mean_per_class'))}", ""]
    agreement = report["measurement_agreement"]
    lines += ["## Measurement agreement (prediction - reference)", ""]
    if agreement.get("available"):
        lines += ["| quantity | n | MAE | bias | 95% limits of agreement | max abs | reference values without "
                  "prediction |", "|---|---:|---:|---:|---|---:|---:|"]
        for quantity, v in agreement["quantities"].items():
            lines.append(f"| {quantity} | {v['n']} | {_fmt(v['mae'], 2)} | {_fmt(v['bias'], 2)} | "
                         f"{_fmt(v['loa_low'], 2)} to {_fmt(v['loa_high'], 2)} | {_fmt(v['max_abs'], 2)} | "
                         f"{v['reference_values_without_prediction']} |")
        genant = agreement["genant"]
        lines += ["", f"Genant grade agrees for {_fmt(genant['agreement'], 3)} of {genant['n']} vertebrae graded in "
                  f"both; Bland-Altman plot: `bland_altman.png`; pairs: `measurement_pairs.csv`.", ""]
    else:
        lines += [f"Not available: {agreement.get('reason')}", ""]
    lines += _identity_lines(report["level_identity"]) + _partial_lines(report["partial_annotation"])
    problems = report["problems"]
    lines += ["## Problems and notes", ""]
    entries = [f"- missing prediction ({report['missing_policy']}): {c}" for c in problems["missing_predictions"]]
    entries += [f"- failed: {c}: {m}" for c, m in problems["failed_cases"].items()]
    entries += [f"- prediction without reference (not evaluated): {c}" for c in problems["extra_predictions"]]
    entries += [f"- selected case with no reference file: {c}" for c in problems["selected_without_reference"]]
    entries += [f"- {n}" for n in problems["label_map_notes"]]
    if problems["not_selected"]:
        entries.append(f"- {len(problems['not_selected'])} reference case(s) outside the selection, not evaluated")
    lines += entries or ["None."]
    lines += ["", "## Per case", "", "| case | status | Dice multiclass | Dice binary | HD95 binary (mm) | "
              "levels right | message |", "|---|---|---:|---:|---:|---:|---|"]
    for case_id, v in report["per_case"].items():
        levels = "n/a" if v["levels_n"] is None else f"{v['levels_right']:.0f}/{v['levels_n']:.0f}"
        lines.append(f"| {case_id} | {v['status']} | {_fmt(v['dice_multiclass'])} | {_fmt(v['dice_binary'])} | "
                     f"{_fmt(v['hd95_binary_mm'], 2)} | {levels} | {v['message'] or ''} |")
    lines += ["", "Definitions: see `definitions` in report.json."]
    return "\n".join(lines) + "\n"


def _identity_lines(identity: dict) -> list[str]:
    """The report.md section on level identity."""
    lines = ["## Level identity (the predicted level covering most of each reference vertebra)", ""]
    if not identity["available"]:
        return lines + [f"Not available: {identity['reason']}", ""]
    share = {"right": identity["share_right"], "off_by_one": identity["share_off_by_one"]}
    lines += ["| outcome | vertebrae | share |", "|---|---:|---:|"]
    for outcome in ("right", "off_by_one", "wrong", "missed"):
        detail = (f" ({identity['off_by_one_cranial']} cranial, {identity['off_by_one_caudal']} caudal)"
                  if outcome == "off_by_one" else "")
        fraction = share.get(outcome)
        if fraction is None and identity["vertebrae"]:
            fraction = identity[outcome] / identity["vertebrae"]
        lines.append(f"| {outcome.replace('_', ' ')}{detail} | {identity[outcome]} | {_fmt(fraction, 3)} |")
    return lines + ["", f"Cases with every vertebra at its right level: {identity['cases_all_right']} of "
                    f"{identity['cases']} ({_fmt(identity['share_cases_all_right'], 3)}); per vertebra: "
                    "`level_identity.csv`.", ""]


def _partial_lines(partial: dict) -> list[str]:
    """The report.md section on partially annotated references."""
    return ["## Partial annotation", "",
            f"Unannotated reference voxels (ignore label; --ignore-beyond {partial['ignore_beyond']}): "
            f"{partial['ignored_reference_voxels']} in {partial['cases_with_unannotated_voxels']} case(s); predicted "
            f"foreground left out there: {partial['left_out_predicted_voxels']} voxels. Rule: {partial['reason']}.",
            ""]


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")
