"""The whole evaluation of two folders: inventory, per-case overlap (in parallel), measurement agreement, report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..batch import MeasureOptions, measure_files, write_table
from ..outputs import atomic_write_text
from ..runtime import parallel_map
from .cases import CLASS_COLUMNS, CaseInventory, CasePair, CaseResult, case_row, evaluate_pair, inventory
from .labels import ClassMap, pair_classes
from .levels_identity import IDENTITY_COLUMNS, identity_summary, unavailable_reason
from .measurements import agreement_statistics, genant_statistics, match_vertebrae
from .partial import partial_summary
from .plots import bland_altman_png
from .report import POOLED, markdown, overlap_summary, provenance, write_json

MISSING_POLICIES = ("empty", "skip")
COUNT_COLUMNS = ("levels_n", "levels_right", "levels_off_by_one", "ignored_reference_voxels",
                 "left_out_predicted_voxels")  # whole numbers in cases.csv (empty where not computed)


@dataclass(frozen=True)
class EvaluationOptions:
    pred_map: ClassMap
    ref_map: ClassMap
    selection: tuple[str, ...] | None = None
    selection_source: str = "all reference cases"
    missing: str = "empty"  # a missing prediction: scored as an empty mask, or left out (listed either way)
    surface: bool = True
    measure: bool = True
    qc: bool = False
    jobs: int = 1
    progress: bool = True
    ref_pattern: str | None = None
    ref_recursive: bool = False
    ignore_beyond: str = "auto"  # unannotated region beyond the reference's levels (measure.evaluation.partial)
    extra: dict = field(default_factory=dict)


def _evaluate_all(pairs: Sequence[CasePair], options: EvaluationOptions) -> list[CaseResult]:
    pairing = pair_classes(options.pred_map, options.ref_map)
    results: list[CaseResult | None] = [None] * len(pairs)
    todo = []
    for n, pair in enumerate(pairs):
        if pair.predicted is None and options.missing == "skip":
            results[n] = CaseResult(case_row(pair.case_id, "skipped", "no prediction file for this case: left out "
                                             "(--missing skip)", None, None, files=("", str(pair.reference))))
        else:
            todo.append(n)
    args = (options.pred_map, options.ref_map, pairing, options.surface, options.ignore_beyond)

    def crashed(task: tuple, exc: BaseException) -> CaseResult:
        pair = task[0]
        return CaseResult(case_row(pair.case_id, "error", f"worker failed ({exc})", None, None,
                                   files=(str(pair.predicted or ""), str(pair.reference))))

    evaluated = parallel_map(evaluate_pair, [(pairs[n], *args) for n in todo], options.jobs, options.progress,
                             on_crash=crashed)
    for n, result in zip(todo, evaluated, strict=True):
        results[n] = result
    return [r for r in results if r is not None]


def _measurement_agreement(pairs: Sequence[CasePair], cases: pd.DataFrame, options: EvaluationOptions,
                           out: Path) -> dict:
    if not options.measure:
        return {"available": False, "reason": "switched off (--no-measure)"}
    if not (options.pred_map.is_levels and options.ref_map.is_levels):
        return {"available": False, "reason": "a binary label map names no levels, so vertebrae cannot be measured "
                "per level"}
    evaluated = set(cases.loc[cases["status"].isin(["ok", "missing_prediction"]), "case_id"])
    chosen = [p for p in pairs if p.case_id in evaluated]
    tables = {}
    for side, label_map, items in (
        ("ref", options.ref_map, [(p.reference, p.case_id) for p in chosen]),
        ("pred", options.pred_map, [(p.predicted, p.case_id) for p in chosen if p.predicted is not None]),
    ):
        measure_options = MeasureOptions(label_map=label_map.level_map(), ignore_unmapped=True,
                                         qc_dir=str(out / f"qc_{side}") if options.qc else None)
        paths, ids = [i[0] for i in items], [i[1] for i in items]
        frame = measure_files(paths, ids, measure_options, jobs=options.jobs, progress=options.progress)
        tables[side] = write_table(frame, out / f"measurements_{side}.csv", measure_options, map(str, paths),
                                   overwrite=True)
    matched = match_vertebrae(tables["pred"], tables["ref"])
    atomic_write_text(out / "measurement_pairs.csv", matched.to_csv(index=False, float_format="%.4f"))
    statistics = agreement_statistics(matched)
    bland_altman_png(matched, statistics, out / "bland_altman.png")
    return {"available": True, "quantities": statistics, "genant": genant_statistics(matched),
            "vertebrae": {k: int(v) for k, v in matched["match"].value_counts().items()},
            "files": ["measurements_pred.csv", "measurements_ref.csv", "measurement_pairs.csv", "bland_altman.png"]}


def _level_identity(results: Sequence[CaseResult], cases: pd.DataFrame, options: EvaluationOptions,
                    out: Path) -> dict:
    """Write level_identity.csv (one row per case and reference vertebra) and return the report's summary of the
    pooled cases; only a reason when a label map names no levels."""
    reason = unavailable_reason(options.pred_map, options.ref_map)
    table = pd.DataFrame([row for r in results for row in r.levels], columns=list(IDENTITY_COLUMNS))
    table = table.astype({"voxels_reference": "int64", "overlap_voxels": "int64", "shift_levels": "Int64"})
    if reason is None:
        atomic_write_text(out / "level_identity.csv", table.to_csv(index=False))
    pooled = set(cases.loc[cases["status"].isin(POOLED), "case_id"])
    return identity_summary(table[table["case_id"].isin(pooled)], reason)


def evaluate_folders(prediction: Path, reference: Path, out: Path, options: EvaluationOptions) -> dict:
    """Evaluate, write every output into ``out`` and return the report."""
    found: CaseInventory = inventory(prediction, reference, options.selection, options.ref_pattern,
                                     options.ref_recursive)
    pairing = pair_classes(options.pred_map, options.ref_map)
    results = _evaluate_all(found.pairs, options)
    cases = pd.DataFrame([r.case for r in results], columns=list(case_row("", "", "", None, None)))
    classes = pd.DataFrame([row for r in results for row in r.classes], columns=list(CLASS_COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "cases.csv", cases.astype({c: "Int64" for c in COUNT_COLUMNS}).to_csv(index=False,
                                                                                       float_format="%.6f"))
    atomic_write_text(out / "classes_per_case.csv", classes.to_csv(index=False, float_format="%.6f"))
    report = overlap_summary(cases, classes, pairing.multiclass)
    report["missing_policy"] = options.missing
    report["level_identity"] = _level_identity(results, cases, options, out)
    pooled = cases[cases["status"].isin(POOLED)]
    report["partial_annotation"] = partial_summary(pooled["ignored_reference_voxels"],
                                                   pooled["left_out_predicted_voxels"], options.ignore_beyond)
    report["measurement_agreement"] = _measurement_agreement(found.pairs, cases, options, out)
    failed = cases[cases["status"] == "error"]
    report["problems"] = {
        "missing_predictions": [p.case_id for p in found.pairs if p.predicted is None],
        "failed_cases": dict(zip(failed["case_id"], failed["message"], strict=True)),
        "extra_predictions": list(found.extra_predictions),
        "selected_without_reference": list(found.selected_without_reference),
        "not_selected": list(found.not_selected),
        "label_map_notes": list(pairing.notes),
    }
    maps = {side: {"source": m.source, "classes": {str(k): v for k, v in m.classes.items()}, "ignore": m.ignore}
            for side, m in (("prediction", options.pred_map), ("reference", options.ref_map))}
    report["provenance"] = provenance(prediction, reference, maps, {"source": options.selection_source,
                                                                     "cases": list(options.selection or [])})
    report["provenance"].update(options.extra)
    report["files"] = ["report.json", "report.md", "cases.csv", "classes_per_case.csv"]
    if report["level_identity"]["available"]:
        report["files"].append("level_identity.csv")
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", markdown(report))
    return report


def read_selection(split_file: str | None, fold: int | None, cases: Sequence[str] | None) -> tuple[tuple[str, ...]
                                                                                                   | None, str]:
    """The evaluated case ids: the validation cases of one fold of an nnU-Net ``splits_final.json``, or a list."""
    if split_file:
        splits = json.loads(Path(split_file).read_text())
        if fold is None or not 0 <= fold < len(splits):
            raise ValueError(f"{split_file}: --fold must be one of 0..{len(splits) - 1}")
        return tuple(splits[fold]["val"]), f"validation cases of fold {fold} in {split_file}"
    if cases:
        return tuple(cases), "--cases"
    return None, "all reference cases"
