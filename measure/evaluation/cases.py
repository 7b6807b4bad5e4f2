"""One case: find the pairs of predicted and reference files, read them onto one grid, and compute the overlap
counts and surface distances per class, the level identity of every reference vertebra and what the partially
annotated reference left out. Never raises for a bad case: its record carries the reason."""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..batch import case_ids, find_mask_files
from ..io import MaskReadError, check_geometry, label_array, read_image
from .labels import ClassMap, ClassPairing
from .levels_identity import VertebraIdentity, case_columns, identify_levels
from .overlap import Counts, UnmappedLabelError, binary_counts, class_counts, class_indices, confusion_matrix
from .partial import (
    IDENTITY_DIRECTION,
    CountedVoxels,
    counted_voxels,
    levels_in_reference,
    resolve_side,
    unannotated_region,
)
from .surface import hd95_assd

GEOMETRY_TOLERANCE = 1e-3  # mm for spacing and origin (x10), unitless for the direction cosines


@dataclass(frozen=True)
class CasePair:
    case_id: str
    predicted: Path | None  # None: no prediction for this reference case
    reference: Path


@dataclass(frozen=True)
class CaseInventory:
    """What the two folders hold: the pairs to evaluate and every file that cannot be evaluated, with why."""

    pairs: tuple[CasePair, ...]
    extra_predictions: tuple[str, ...]  # predictions with no reference file
    not_selected: tuple[str, ...]  # reference cases outside the selection (--split/--cases)
    selected_without_reference: tuple[str, ...]  # selected ids with no reference file


def _by_case(folder: Path, pattern: str | None, recursive: bool) -> dict[str, Path]:
    paths = find_mask_files([folder], pattern, recursive)
    return dict(zip(case_ids(paths, "auto"), paths, strict=True))


def inventory(predicted: Path, reference: Path, selection: Sequence[str] | None = None,
              pattern: str | None = None, recursive: bool = False) -> CaseInventory:
    """Match prediction and reference files by case id (file name without extension, or the folder for generic
    names such as ``mask.nii.gz``); ``selection`` restricts the evaluated reference cases."""
    pred, ref = _by_case(predicted, None, False), _by_case(reference, pattern, recursive)
    chosen = sorted(ref) if selection is None else [c for c in dict.fromkeys(selection) if c in ref]
    pairs = tuple(CasePair(c, pred.get(c), ref[c]) for c in chosen)
    extra = tuple(sorted(c for c in pred if c not in ref))
    not_selected = tuple(sorted(set(ref) - set(chosen)))
    unknown = tuple(c for c in dict.fromkeys(selection or ()) if c not in ref)
    return CaseInventory(pairs, extra, not_selected, unknown)


def _grid_difference(a: sitk.Image, b: sitk.Image) -> str | None:
    checks = (("size", a.GetSize(), b.GetSize(), 0.0), ("spacing", a.GetSpacing(), b.GetSpacing(), GEOMETRY_TOLERANCE),
              ("origin", a.GetOrigin(), b.GetOrigin(), GEOMETRY_TOLERANCE * 10),
              ("direction", a.GetDirection(), b.GetDirection(), GEOMETRY_TOLERANCE))
    for name, x, y, tolerance in checks:
        if len(x) != len(y) or not np.allclose(x, y, atol=tolerance, rtol=0):
            return f"{name} ({', '.join(f'{v:.4g}' for v in x)}) vs ({', '.join(f'{v:.4g}' for v in y)})"
    return None


def read_pair(predicted: Path, reference: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...],
                                                         tuple[float, ...], list[str]]:
    """Both label arrays on the reference grid (array order z, y, x), the spacing in that order (mm), the reference's
    direction cosines (ITK order, 9 values) and notes.

    A prediction stored with another axis order or flips of the same grid is reoriented exactly; any other
    difference raises :class:`MaskReadError` naming it.
    """
    ref_image, pred_image = read_image(reference), read_image(predicted)
    check_geometry(ref_image, reference)
    check_geometry(pred_image, predicted)
    notes = []
    difference = _grid_difference(pred_image, ref_image)
    if difference:
        orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(ref_image.GetDirection())
        reoriented = sitk.DICOMOrient(pred_image, orientation)
        if _grid_difference(reoriented, ref_image) is not None:
            raise MaskReadError(f"{predicted}: grid differs from the reference {reference}: {difference}")
        pred_image = reoriented
        notes.append("prediction stored in another axis order/orientation of the same grid: reoriented exactly")
    spacing = tuple(float(s) for s in reversed(ref_image.GetSpacing()))
    direction = tuple(float(d) for d in ref_image.GetDirection())
    return label_array(pred_image, predicted), label_array(ref_image, reference), spacing, direction, notes


@dataclass
class CaseResult:
    """One case's evaluation: a per-case row and one row per class (tidy tables)."""

    case: dict
    classes: list[dict] = field(default_factory=list)
    levels: list[dict] = field(default_factory=list)  # level identity: one row per reference vertebra


def _class_row(case_id: str, name: str, pred_value: int | None, ref_value: int | None, counts: Counts,
               surface: tuple[float, float]) -> dict:
    return {"case_id": case_id, "class": name, "value_pred": pred_value, "value_ref": ref_value,
            "voxels_ref": counts.tp + counts.fn, "voxels_pred": counts.tp + counts.fp, "tp": counts.tp,
            "fp": counts.fp, "fn": counts.fn, "dice": counts.dice, "jaccard": counts.jaccard,
            "hd95_mm": surface[0], "assd_mm": surface[1]}


CLASS_COLUMNS = tuple(_class_row("", "", None, None, Counts(0, 0, 0), (math.nan, math.nan)))
"""Columns of the per-(case, class) table (also when no case was evaluated)."""


def case_row(case_id: str, status: str, message: str, multiclass: Counts | None, binary: Counts | None,
             class_dice: Sequence[float] = (), binary_surface: tuple[float, float] = (math.nan, math.nan),
             files: tuple[str, str] = ("", ""), identities: Sequence[VertebraIdentity] | None = None,
             counted: CountedVoxels | None = None, ignore_beyond: str = "") -> dict:
    nan = math.nan
    present = [d for d in class_dice if not math.isnan(d)]
    return {
        "case_id": case_id, "status": status, "message": message,
        "dice_multiclass": multiclass.dice if multiclass else nan,
        "jaccard_multiclass": multiclass.jaccard if multiclass else nan,
        "dice_binary": binary.dice if binary else nan, "jaccard_binary": binary.jaccard if binary else nan,
        "dice_mean_per_class": float(np.mean(present)) if present else nan,
        "hd95_binary_mm": binary_surface[0], "assd_binary_mm": binary_surface[1],
        "tp_multiclass": multiclass.tp if multiclass else nan, "fp_multiclass": multiclass.fp if multiclass else nan,
        "fn_multiclass": multiclass.fn if multiclass else nan,
        "tp_binary": binary.tp if binary else nan, "fp_binary": binary.fp if binary else nan,
        "fn_binary": binary.fn if binary else nan,
        **case_columns(identities),
        "ignore_beyond": ignore_beyond,
        "ignored_reference_voxels": counted.ignored_reference_voxels if counted else nan,
        "left_out_predicted_voxels": counted.left_out_predicted_voxels if counted else nan,
        "prediction_file": files[0], "reference_file": files[1],
    }


def _lookup_tables(pred_map: ClassMap, ref_map: ClassMap, pairing: ClassPairing) -> tuple[dict, dict, int]:
    """Label value -> class index of each side and the number of classes (one for the binary evaluation)."""
    if pairing.multiclass:
        pred_lut = {v: i + 1 for i, v in enumerate(pairing.predicted_values) if v is not None}
        ref_lut = {v: i + 1 for i, v in enumerate(pairing.reference_values) if v is not None}
        return pred_lut, ref_lut, len(pairing.names)
    return dict.fromkeys(pred_map.classes, 1), dict.fromkeys(ref_map.classes, 1), 1


def _kept(index: np.ndarray, where: np.ndarray | None) -> np.ndarray:
    """Class indices with the voxels outside ``where`` set to background (None: all kept)."""
    return index if where is None else np.where(where, index, 0).astype(np.uint8)


def evaluate_arrays(case_id: str, predicted: np.ndarray, reference: np.ndarray, spacing: Sequence[float],
                    pred_map: ClassMap, ref_map: ClassMap, pairing: ClassPairing, surface: bool = True,
                    status: str = "ok", message: str = "", files: tuple[str, str] = ("", ""), *,
                    direction: Sequence[float] = IDENTITY_DIRECTION, ignore_beyond: str = "none") -> CaseResult:
    """Overlap (and surface distances), level identity and the partial-annotation counts of one case whose arrays
    share a grid (spacing in array order, mm; direction cosines of the grid in ITK order). ``ignore_beyond``: the
    ``--ignore-beyond`` option (measure.evaluation.partial). Raises :class:`UnmappedLabelError` for label values a
    map does not name."""
    allowed_ref = (0,) if ref_map.ignore is None else (0, ref_map.ignore)
    allowed_pred = (0,) if pred_map.ignore is None else (0, pred_map.ignore)
    pred_lut, ref_lut, n_classes = _lookup_tables(pred_map, ref_map, pairing)
    pred_index = class_indices(predicted, pred_lut, allowed_pred, f"prediction of {case_id} ({files[0]})")
    ref_index = class_indices(reference, ref_lut, allowed_ref, f"reference of {case_id} ({files[1]})")
    side = resolve_side(ignore_beyond, ref_map, levels_in_reference(reference, ref_map))
    counted = counted_voxels(pred_index, ref_index, unannotated_region(reference, ref_map, side, spacing, direction),
                             pairing.multiclass, n_classes)
    pred_binary = _kept(pred_index, counted.binary)
    matrix = confusion_matrix(pred_binary, ref_index, n_classes, counted.binary)
    binary = binary_counts(matrix)
    result = CaseResult({})
    multiclass, identities = None, None
    if pairing.multiclass:
        pred_levels = pred_binary
        if counted.levels is not counted.binary:  # a level annotated elsewhere counts in the unannotated region
            pred_levels = _kept(pred_index, counted.levels)
            matrix = confusion_matrix(pred_levels, ref_index, n_classes, counted.levels)
        per_class = class_counts(matrix)
        multiclass = Counts(sum(c.tp for c in per_class), sum(c.fp for c in per_class), sum(c.fn for c in per_class))
        for k, (name, counts) in enumerate(zip(pairing.names, per_class, strict=True), start=1):
            distances = (math.nan, math.nan)
            if surface and counts.tp + counts.fp and counts.tp + counts.fn:
                distances = hd95_assd(pred_levels == k, ref_index == k, spacing)
            result.classes.append(_class_row(case_id, name, pairing.predicted_values[k - 1],
                                             pairing.reference_values[k - 1], counts, distances))
        identities = identify_levels(matrix, pairing.names)
        result.levels = [identity.row(case_id) for identity in identities]
    binary_surface = hd95_assd(pred_binary > 0, ref_index > 0, spacing) if surface else (math.nan, math.nan)
    result.case = case_row(case_id, status, message, multiclass, binary, [r["dice"] for r in result.classes],
                           binary_surface, files, identities, counted, side)
    return result


def evaluate_pair(pair: CasePair, pred_map: ClassMap, ref_map: ClassMap, pairing: ClassPairing,
                  surface: bool = True, ignore_beyond: str = "none") -> CaseResult:
    """Read and evaluate one case; a missing prediction is evaluated as an empty mask (status
    ``missing_prediction``); an unreadable file or a grid mismatch gives an ``error`` row."""
    files = (str(pair.predicted or ""), str(pair.reference))
    try:
        if pair.predicted is None:
            reference_image = read_image(pair.reference)
            check_geometry(reference_image, pair.reference)
            reference = label_array(reference_image, pair.reference)
            spacing = tuple(float(s) for s in reversed(reference_image.GetSpacing()))
            return evaluate_arrays(pair.case_id, np.zeros_like(reference), reference, spacing, pred_map, ref_map,
                                   pairing, surface, "missing_prediction",
                                   "no prediction file for this case: scored as an empty prediction", files,
                                   direction=reference_image.GetDirection(), ignore_beyond=ignore_beyond)
        predicted, reference, spacing, direction, notes = read_pair(pair.predicted, pair.reference)
        return evaluate_arrays(pair.case_id, predicted, reference, spacing, pred_map, ref_map, pairing, surface,
                               "ok", "; ".join(notes), files, direction=direction, ignore_beyond=ignore_beyond)
    except (MaskReadError, UnmappedLabelError) as exc:
        return CaseResult(case_row(pair.case_id, "error", str(exc), None, None, files=files))
    except Exception as exc:  # noqa: BLE001 - one bad case must never stop the evaluation
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return CaseResult(case_row(pair.case_id, "error", f"{pair.case_id}: unexpected error ({detail}); please "
                                   "report it", None, None, files=files))
