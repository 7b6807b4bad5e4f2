"""Where a multiclass prediction's outline errors lie: along left-right, and levels spilled into unannotated anatomy.

Two counts over the cases of a prediction folder against nnU-Net-style references (with an ignore label for the
unannotated region, as ``spine-convert --ignore-beyond`` writes them), in ``spine-evaluate``'s terms:

* **binary errors by left-right zone**: each false-negative and false-positive voxel of "any vertebra" (ignored voxels
  left out) by its distance, in mm along left-right, from the nearer lateral end of the reference's vertebrae
  (outside that extent: "outside"); with each zone's Dice. The references of ``../shared/data/lumbar_mri`` were
  re-gridded from 2-4 mm sagittal slices (``benchmarks/reference_resolution.py``), so the lateral zones carry the
  staircase of those steps.
* **levels in the unannotated region**: voxels of the ignore label predicted as a level the same case annotates
  elsewhere (what ``spine-evaluate`` counts as a multiclass false positive and leaves out of the binary figures), by
  their distance in mm to the nearest annotated vertebra voxel: at 1-2 mm an outline that runs over the edge, further
  out a level grown into the next body. The same count for the levels the case does not annotate (allowed there:
  S1 below an L1-L5 annotation) shows a model that calls the disc next to an annotated body a vertebra.

Usage (from the project root; a ``benchmarks/real_data.py`` work folder)::

    .venv/bin/python benchmarks/error_locations.py --pred WORK/predictions/cascade_multiclass/cv \\
        --ref WORK/raw/Dataset701_LumbarRecipe/labelsTr --mapping WORK/raw/Dataset701_LumbarRecipe/case_mapping.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ZONES_MM = (4.0, 8.0, 12.0)
"""Upper ends (mm, exclusive) of the lateral zones; beyond the last: the middle."""
SPILL_BINS_MM = (1.0, 2.0, 3.0, 5.0)
"""Upper ends (mm, inclusive) of the distance bins of levels predicted in the unannotated region."""


def left_right_axis(direction: tuple[float, ...]) -> int:
    """The numpy axis (of ``SimpleITK.GetArrayFromImage``'s k, j, i order) that runs most nearly left-right, from an
    image's 3x3 direction matrix (row-major, as SimpleITK gives it)."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    return 2 - int(np.argmax(np.abs(matrix[0])))


def _bin_names(upper_ends_mm: tuple[float, ...], beyond: str) -> list[str]:
    """``"0-a mm"``, ``"a-b mm"``, ... for the bins ending at ``upper_ends_mm``, then ``beyond`` + the last end."""
    edges = (0.0, *upper_ends_mm)
    return [f"{a:g}-{b:g} mm" for a, b in zip(edges, edges[1:], strict=False)] + [f"{beyond} {edges[-1]:g} mm"]


def zone_names() -> list[str]:
    return ["outside", *_bin_names(ZONES_MM, ">=")]


def lateral_zone_counts(prediction: np.ndarray, reference: np.ndarray, ignore: int | None, axis: int,
                        spacing_mm: float) -> dict[str, dict[str, int]]:
    """Binary TP, FN and FP voxels per lateral zone (:func:`zone_names`) of one case: the distance (mm) of each
    slice along ``axis`` from the nearer end of the reference's vertebrae along it; ``ignore`` voxels left out."""
    valid = reference != ignore if ignore is not None else np.ones(reference.shape, dtype=bool)
    ref = (reference > 0) & valid
    pred = (prediction > 0) & valid
    names = zone_names()
    counts = {name: {"tp": 0, "fn": 0, "fp": 0} for name in names}
    other = tuple(a for a in range(reference.ndim) if a != axis)
    present = np.flatnonzero(ref.any(axis=other))
    if present.size == 0:
        counts["outside"]["fp"] = int(pred.sum())
        return counts
    index = np.arange(reference.shape[axis])
    distance = np.minimum(index - present[0], present[-1] - index) * spacing_mm
    zone = np.where(distance < 0, 0, 1 + np.searchsorted(np.asarray(ZONES_MM), distance, side="right"))
    per_slice = {"tp": (ref & pred).sum(axis=other), "fn": (ref & ~pred).sum(axis=other),
                 "fp": (pred & ~ref).sum(axis=other)}
    for kind, values in per_slice.items():
        for z, name in enumerate(names):
            counts[name][kind] += int(values[zone == z].sum())
    return counts


def unannotated_spill(prediction: np.ndarray, reference: np.ndarray, ignore: int, spacing_kji: tuple[float, ...]
                      ) -> dict[str, dict[str, int]]:
    """Voxels of the ignore label predicted as a level, by distance (mm) to the nearest annotated vertebra voxel
    (bins :data:`SPILL_BINS_MM`, then beyond): ``"annotated_levels"``, the levels the case's reference annotates
    elsewhere; ``"other_levels"``, any other level (which the region may hold)."""
    levels = [v for v in np.unique(reference) if v not in (0, ignore)]
    unannotated = reference == ignore
    annotated_named = np.isin(prediction, levels)
    spilled = {"annotated_levels": unannotated & annotated_named,
               "other_levels": unannotated & (prediction > 0) & (prediction != ignore) & ~annotated_named}
    names = _bin_names(SPILL_BINS_MM, ">")
    counts = {key: dict.fromkeys(names, 0) for key in spilled}
    if not any(mask.any() for mask in spilled.values()):
        return counts
    annotated = (reference > 0) & ~unannotated
    distance = ndimage.distance_transform_edt(~annotated, sampling=spacing_kji)  # once for both counts
    for key, mask in spilled.items():
        bins = np.searchsorted(np.asarray(SPILL_BINS_MM), distance[mask], side="left")
        for b, name in enumerate(names):
            counts[key][name] = int((bins == b).sum())
    return counts


def measure_case(prediction_path: Path, reference_path: Path, ignore: int | None) -> dict:
    """Both counts of one case, read as ``spine-evaluate`` reads it (:func:`measure.evaluation.cases.read_pair`: a
    prediction in another axis order of the same grid reoriented); raises ValueError (``MaskReadError``) where a mask
    cannot be read or is not a label mask, or where the two grids differ."""
    from measure.evaluation.cases import read_pair

    prediction, reference, spacing_kji, direction, _ = read_pair(prediction_path, reference_path)
    axis = left_right_axis(direction)
    row = {"zones": lateral_zone_counts(prediction, reference, ignore, axis, spacing_kji[axis])}
    if ignore is not None:
        spill = unannotated_spill(prediction, reference, ignore, spacing_kji)
        row["unannotated_spill"], row["unannotated_other_levels"] = spill["annotated_levels"], spill["other_levels"]
    return row


def _sources(mapping: Path | None) -> dict[str, str]:
    """Case id -> dataset (the export's folder above the case folder), from ``spine-convert``'s case_mapping.csv."""
    if mapping is None:
        return {}
    import pandas as pd

    table = pd.read_csv(mapping)
    return {case: Path(image).parent.parent.name for case, image in zip(table["nnunet_case_id"], table["image_path"],
                                                                          strict=True)}


def summarise(rows: dict[str, dict], sources: dict[str, str]) -> dict:
    """Zone counts and Dice pooled over all cases and per source; spill counts pooled."""
    from measure.evaluation.overlap import Counts

    groups: dict[str, list[str]] = {"all": list(rows)}
    for case in rows:
        groups.setdefault(sources.get(case, "unknown"), []).append(case)
    summary = {}
    for group, cases in groups.items():
        zones = {}
        for name in zone_names():
            pooled = {k: sum(rows[c]["zones"][name][k] for c in cases) for k in ("tp", "fn", "fp")}
            zones[name] = {**pooled, "dice": Counts(**pooled).dice}
        summary[group] = {"cases": len(cases), "zones": zones}
    for key in ("unannotated_spill", "unannotated_other_levels"):
        counts = [rows[c][key] for c in rows if key in rows[c]]
        if counts:
            summary[key] = {k: sum(s[k] for s in counts) for k in counts[0]}
    return summary


def _print(summary: dict) -> None:
    for group, value in summary.items():
        if group in ("unannotated_spill", "unannotated_other_levels"):
            which = "levels the case annotates elsewhere" if group == "unannotated_spill" else "other levels"
            print(f"{which} predicted in the unannotated region ({sum(value.values())} voxels), by distance to the "
                  "annotated vertebrae: " + ", ".join(f"{k} {v}" for k, v in value.items()))
            continue
        cells = [f"{name}: Dice {z['dice']:.3f} FN {z['fn']} FP {z['fp']}" for name, z in value["zones"].items()
                 if z["tp"] + z["fn"] + z["fp"]]
        print(f"{group} ({value['cases']} cases) | " + " | ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pred", type=Path, required=True, help="folder of predicted masks (<case>.nii.gz)")
    parser.add_argument("--ref", type=Path, required=True, help="folder of reference masks (nnU-Net labelsTr)")
    parser.add_argument("--labels", type=Path, default=None,
                        help="the references' dataset.json (default: one in --ref or its parent folder, nnU-Net's "
                             "raw layout); its ignore label marks the unannotated region")
    parser.add_argument("--mapping", type=Path, default=None,
                        help="spine-convert's case_mapping.csv: counts per source dataset as well")
    parser.add_argument("--json", type=Path, default=None, help="write the per-case counts and the summary here")
    args = parser.parse_args(argv)

    from measure.evaluation.labels import default_class_map

    ignore = default_class_map(args.ref, args.labels, None).ignore
    rows, problems = {}, []
    for prediction in sorted(args.pred.glob("*.nii.gz")):
        case = prediction.name[: -len(".nii.gz")]
        reference = args.ref / prediction.name
        if not reference.is_file():
            problems.append(f"{prediction}: no reference {reference}")
            continue
        try:
            rows[case] = measure_case(prediction, reference, ignore)
        except ValueError as error:
            problems.append(str(error))
    for problem in problems:
        print(f"error_locations: skipped: {problem}", file=sys.stderr)
    if not rows:
        print(f"error_locations: no case of {args.pred} has a reference in {args.ref}", file=sys.stderr)
        return 1
    summary = summarise(rows, _sources(args.mapping))
    _print(summary)
    if args.json:
        args.json.write_text(json.dumps({"cases": rows, "summary": summary, "problems": problems}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
