"""The built-in example: synthetic spines -> measurement CSV + QC pictures, checked against the known truth.

Later stages of the project extend this to phantoms -> spine-convert -> nnU-Net training -> spine-predict -> measure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

QUANTITIES = ("height_anterior_mm", "height_middle_mm", "height_posterior_mm", "rotation_deg",
              "distance_anterior_mm", "distance_posterior_mm")


def compare_with_truth(measured: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Mean and maximum absolute error per quantity over vertebrae present in both tables."""
    merged = measured.merge(truth, on=["case_id", "level"], suffixes=("", "_truth"))
    rows = []
    for q in QUANTITIES:
        error = (merged[q] - merged[f"{q}_truth"]).abs().dropna()
        rows.append({"quantity": q, "n": len(error), "mean_abs_error": error.mean(), "max_abs_error": error.max()})
    return pd.DataFrame(rows)


def run_demo(out_dir: str | Path, cases: int = 3, seed: int = 7, train: bool = True) -> int:
    from dataset_conversion.phantom_cli import main as phantom_main
    from measure.cli import main as measure_main

    out = Path(out_dir)
    phantoms, csv, qc = out / "phantoms", out / "measurements.csv", out / "qc"
    print(f"[1/2] {cases} synthetic sagittal lumbar spines (T11-S2, one L2 wedge fracture) -> {phantoms}")
    rc = phantom_main([str(phantoms), "--cases", str(cases), "--seed", str(seed), "--levels", "T11-S2",
                       "--deformity", "L2:wedge:0.3", "--deformity-probability", "0.1"])
    if rc:
        return rc
    print(f"[2/2] spine-measure -> {csv} and QC pictures in {qc}")
    rc = measure_main([str(phantoms), "--recursive", "--pattern", "mask.nii.gz", "-o", str(csv), "--qc-dir",
                       str(qc), "--overwrite", "--no-progress"])
    measured = pd.read_csv(csv)
    truth = pd.read_csv(phantoms / "truth.csv")
    errors = compare_with_truth(measured, truth)
    print("\nAgreement with the phantoms' known geometry (mm, degrees):")
    print(errors.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    graded = measured.dropna(subset=["genant_grade"])
    fractures = graded[graded["genant_grade"] > 0]
    found = [f"{r.case_id} {r.level} grade {int(r.genant_grade)} {r.deformity_type}" for r in fractures.itertuples()]
    print(f"\nGenant grade >= 1 found: {', '.join(found) or 'none'}")
    print(f"\nResults:\n  CSV          {csv.resolve()}\n  method/JSON  {csv.with_suffix('.json').resolve()}"
          f"\n  QC pictures  {qc.resolve()}\n  phantoms     {phantoms.resolve()} (truth: truth.csv)")
    worst = float(np.nanmax(errors.loc[errors.quantity != "rotation_deg", "max_abs_error"]))
    if worst > 1.0:
        print(f"demo: measurement error {worst:.2f} mm exceeds 1 mm: something is wrong", file=sys.stderr)
        return 1
    return rc
