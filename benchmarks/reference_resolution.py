"""How finely the reference masks resolve the left-right extent of each body, and what that costs any segmentation.

The real references of ``../shared/data/lumbar_mri`` were drawn on the scanners' sagittal slices (2-4 mm thick) and
re-gridded to 1 mm by nearest neighbour, so along left-right a mask changes only every few slices: each body's
lateral faces sit on a staircase whose steps a network, seeing a smoothly interpolated image, cannot place. This
script finds the step length of each mask (runs of nearly identical sagittal slices) and scores a smooth version of
the reference against the reference itself: every body's per-slice signed distance interpolated linearly between
the steps' centre slices (shape-based interpolation). That Dice is what a segmentation that is right everywhere but
smooth across slices would get: a ceiling set by the references, not by the model.

Usage (from the project root)::

    .venv/bin/python benchmarks/reference_resolution.py --data ../shared/data/lumbar_mri --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

STEP_MIN_CHANGED_VOXELS = 30
STEP_MIN_CHANGED_SHARE = 0.01
"""A sagittal slice starts a new step when more voxels change label from the previous slice than
:data:`STEP_MIN_CHANGED_VOXELS` and than this share of the two slices' labelled voxels (re-gridding leaves a few
voxels of in-plane jitter, about 0.2-0.5 %, between the slices of one step)."""


def slice_steps(labels: np.ndarray) -> list[tuple[int, int]]:
    """Runs ``(start, stop)`` of nearly identical slices along axis 0 of a label array."""
    starts = [0]
    for i in range(1, labels.shape[0]):
        changed = np.count_nonzero(labels[i] != labels[i - 1])
        union = np.count_nonzero((labels[i] > 0) | (labels[i - 1] > 0))
        if changed > max(STEP_MIN_CHANGED_VOXELS, STEP_MIN_CHANGED_SHARE * union):
            starts.append(i)
    return list(zip(starts, starts[1:] + [labels.shape[0]], strict=True))


def _signed_distance(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray | None:
    """In-plane signed distance (mm, negative inside) of a 2D mask; None for an empty slice."""
    if not mask.any():
        return None
    if mask.all():
        return np.full(mask.shape, -float(max(mask.shape) * max(spacing)))
    return (ndimage.distance_transform_edt(~mask, sampling=spacing)
            - ndimage.distance_transform_edt(mask, sampling=spacing))


def _between(a: np.ndarray | None, b: np.ndarray | None, t: float) -> np.ndarray | None:
    """Linear interpolation of two slices' signed distances; an empty slice counts as the other one's deepest
    inside distance outside everywhere, so a body ends where its deepest point does, halfway to the empty step (its
    outline tapers towards that end: a dome, not a wall)."""
    if a is None and b is None:
        return None
    a = np.full(b.shape, -float(b.min())) if a is None else a
    b = np.full(a.shape, -float(a.min())) if b is None else b
    return (1 - t) * a + t * b


def smooth_across_slices(labels: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Each label's shape interpolated linearly (signed distance, :func:`_between`) between the centre slices of the
    steps along axis 0; outside the first and last centre the nearest step is kept. Overlaps go to the label whose
    distance is most negative."""
    steps = slice_steps(labels)
    centres = np.array([(start + stop - 1) / 2 for start, stop in steps])
    depth = np.full(labels.shape, np.inf)
    smooth = np.zeros_like(labels)
    for value in (int(v) for v in np.unique(labels) if v):
        fields = [_signed_distance(labels[(start + stop - 1) // 2] == value, spacing[1:]) for start, stop in steps]
        for i in range(labels.shape[0]):
            j = int(np.searchsorted(centres, i))
            if j == 0 or j == len(centres):
                distance = fields[min(j, len(centres) - 1)]
            else:
                distance = _between(fields[j - 1], fields[j], (i - centres[j - 1]) / (centres[j] - centres[j - 1]))
            if distance is None:
                continue
            inside = (distance < 0) & (distance < depth[i])
            smooth[i][inside] = value
            depth[i][inside] = distance[inside]
    return smooth


def dice_counts(prediction: np.ndarray, reference: np.ndarray) -> dict[str, int]:
    """Overlap counts for micro-averaged Dice (``measure.evaluation.overlap``, as spine-evaluate counts them; label
    values used as class indices): true positives multiclass (same label) and binary (any label), and the
    foreground voxels of both masks together."""
    from measure.evaluation.overlap import binary_counts, class_counts, confusion_matrix, micro

    matrix = confusion_matrix(prediction, reference, int(max(prediction.max(), reference.max())))
    binary = binary_counts(matrix)
    return {"multiclass_tp": micro(class_counts(matrix)).tp, "binary_tp": binary.tp,
            "sum": 2 * binary.tp + binary.fp + binary.fn}


def measure_case(mask_path: Path) -> dict:
    """One case: step lengths (mm) along left-right and the smooth version's overlap counts."""
    from measure.io import read_mask

    volume = read_mask(mask_path)
    labels = np.asarray(volume.array)
    spacing = tuple(float(s) for s in volume.spacing)
    steps = slice_steps(labels)
    counts = dice_counts(smooth_across_slices(labels, spacing), labels)
    return {"case": mask_path.parent.name, "set": mask_path.parent.parent.name,
            "step_mm": float(np.median([(stop - start) * spacing[0] for start, stop in steps])), **counts}


def summarise(rows: list[dict]) -> list[dict]:
    """Per set and over all cases: median step (mm) and micro Dice of the smooth versions."""
    out = []
    for name in sorted({row["set"] for row in rows}) + ["all"]:
        group = [row for row in rows if name in ("all", row["set"])]
        total = sum(row["sum"] for row in group)
        out.append({"set": name, "cases": len(group), "step_mm": float(np.median([r["step_mm"] for r in group])),
                    "dice_multiclass": 2 * sum(r["multiclass_tp"] for r in group) / total,
                    "dice_binary": 2 * sum(r["binary_tp"] for r in group) / total})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/lumbar_mri"),
                        help="export: one folder per case (in set folders) with mask.nii.gz")
    parser.add_argument("--json", type=Path, help="write per-case rows and the summary here")
    args = parser.parse_args(argv)
    masks = sorted(args.data.glob("*/*/mask.nii.gz"))
    if not masks:
        print(f"{args.data}: no <set>/<case>/mask.nii.gz found", file=sys.stderr)
        return 2
    rows = [measure_case(path) for path in masks]
    summary = summarise(rows)
    print("| set | cases | step along left-right (median, mm) | Dice multiclass | Dice binary |")
    print("|---|---:|---:|---:|---:|")
    for row in summary:
        print(f"| {row['set']} | {row['cases']} | {row['step_mm']:.1f} | {row['dice_multiclass']:.4f} | "
              f"{row['dice_binary']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps({"cases": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
