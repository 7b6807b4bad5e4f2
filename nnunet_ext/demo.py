"""The built-in example, end to end with the stock nnU-Net commands, on CPU, with no downloads:

phantoms -> spine-convert -> nnUNetv2_plan_and_preprocess + spine-nnunet plan + nnUNetv2_preprocess -> nnUNetv2_train
(stage 1, both folds; stage 2) -> spine-predict on unseen phantoms -> spine-measure -> CSV, QC pictures, Dice and
measurement error against the phantoms' known truth. ``--measure-only`` skips the training and measures the
phantoms' true masks (seconds).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nnunet_ext.training.seeding import SEED_VARIABLE

QUANTITIES = ("height_anterior_mm", "height_middle_mm", "height_posterior_mm", "rotation_deg",
              "distance_anterior_mm", "distance_posterior_mm")
DEMO_DATASET_ID, DEMO_DATASET = "990", "Dataset990_SpineDemo"
PHANTOM_ARGS = ["--levels", "T12-S1", "--spacing", "4", "1.2", "1.2"]
# the phantoms draw only the bodies their masks annotate: nothing beyond T12 or S1 is unannotated anatomy, so the
# conversion and the evaluation treat their background as background (with 'auto' the field above T12 and below S1
# was left unsupervised, stage 2 filled it with "T11" or "S2" for two of four seeds, and the evaluation left that out;
# docs/benchmarks.md, "Forty-fifth session")
COMPLETE_ANNOTATION = ["--ignore-beyond", "none"]


def compare_with_truth(measured: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Mean and maximum absolute error per quantity over vertebrae present in both tables."""
    merged = measured.merge(truth, on=["case_id", "level"], suffixes=("", "_truth"))
    rows = []
    for q in QUANTITIES:
        error = (merged[q] - merged[f"{q}_truth"]).abs().dropna()
        rows.append({"quantity": q, "n": len(error), "mean_abs_error": error.mean(), "max_abs_error": error.max()})
    return pd.DataFrame(rows)


def _step(number: int, total: int, text: str) -> None:
    print(f"[{number}/{total}] {text}", flush=True)


def _run(command: list[str], env: dict, log: Path) -> None:
    """Run one stock command (its output goes to the log); raise with the log's tail on failure."""
    executable = str(Path(sys.executable).parent / command[0])
    with log.open("a") as stream:
        stream.write(f"\n$ {shlex.join(command)}\n")
        stream.flush()
        done = subprocess.run([executable, *command[1:]], env=env, stdout=stream, stderr=subprocess.STDOUT)
    if done.returncode not in (0, 1) or (done.returncode == 1 and not command[0].startswith("spine-")):
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{shlex.join(command)} failed ({done.returncode}); end of {log}:\n{tail}")


@dataclass(frozen=True)
class _DemoPaths:
    out: Path

    @property
    def export(self) -> Path:
        return self.out / "export"

    @property
    def unseen(self) -> Path:
        return self.out / "unseen"

    @property
    def images(self) -> Path:
        return self.out / "unseen_images"

    @property
    def predictions(self) -> Path:
        return self.out / "predictions"

    @property
    def csv(self) -> Path:
        return self.out / "measurements.csv"

    @property
    def qc(self) -> Path:
        return self.out / "qc"

    @property
    def evaluation(self) -> Path:
        return self.out / "evaluation"

    @property
    def log(self) -> Path:
        return self.out / "demo_commands.log"

    def env(self) -> dict[str, str]:
        """nnU-Net's folders inside the demo folder, one worker each, no compilation."""
        return {**os.environ, "nnUNet_raw": str(self.out / "nnUNet_raw"),
                "nnUNet_preprocessed": str(self.out / "nnUNet_preprocessed"),
                "nnUNet_results": str(self.out / "nnUNet_results"), "nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1",
                "nnUNet_compile": "f"}


def _training_env(env: dict[str, str], seed: int) -> dict[str, str]:
    """The trainings seeded with ``seed`` and their augmentation in the training process, so that a demo repeats on
    one machine (:mod:`nnunet_ext.training.seeding`); only for ``nnUNetv2_train``, as nnU-Net's planner sets torch's
    threads to ``nnUNet_n_proc_DA`` and fails on 0."""
    return {**env, "nnUNet_n_proc_DA": "0", SEED_VARIABLE: str(seed)}


_TOTAL_STEPS = 7


def _prepare_dataset(paths: _DemoPaths, env: dict[str, str], cases: int, seed: int, training_cases: int) -> None:
    """Steps 1-3: training and unseen phantoms, the nnU-Net dataset, nnU-Net's planning with the cascade's plans."""
    log = paths.log
    _step(1, _TOTAL_STEPS, f"{training_cases} training phantoms -> {paths.export}; {cases} unseen phantoms -> "
                           f"{paths.unseen}")
    _run(["spine-phantom", str(paths.export), "-n", str(training_cases), "--seed", str(seed), *PHANTOM_ARGS], env, log)
    _run(["spine-phantom", str(paths.unseen), "-n", str(cases), "--seed", str(seed + 1000), "--orientation", "PIL",
          "--deformity", "L2:wedge:0.3", *PHANTOM_ARGS], env, log)
    paths.images.mkdir(exist_ok=True)
    for case in sorted(paths.unseen.glob("phantom_*")):
        target = paths.images / f"{case.name}.nii.gz"
        target.unlink(missing_ok=True)
        target.symlink_to(case / "image.nii.gz")
    _step(2, _TOTAL_STEPS, f"spine-convert -> {env['nnUNet_raw']}/{DEMO_DATASET}")
    _run(["spine-convert", str(paths.export), "--out", env["nnUNet_raw"], "--id", DEMO_DATASET_ID, "--name",
          "SpineDemo", "--folds", "2", "--overwrite", "--no-progress", *COMPLETE_ANNOTATION], env, log)
    _step(3, _TOTAL_STEPS, "nnUNetv2_plan_and_preprocess (planning only), spine-nnunet plan, nnUNetv2_preprocess")
    _run(["nnUNetv2_plan_and_preprocess", "-d", DEMO_DATASET_ID, "--no_pp", "-npfp", "1"], env, log)
    _run(["spine-nnunet", "plan", "-d", DEMO_DATASET_ID, "--preset", "small"], env, log)
    _run(["nnUNetv2_preprocess", "-d", DEMO_DATASET_ID, "-plans_name", "nnUNetPlans_spine", "-c", "3d_lowres",
          "2d_cascade", "-np", "1", "1"], env, log)


def _train_and_predict(paths: _DemoPaths, env: dict[str, str], variant: str, start: float, seed: int) -> None:
    """Steps 4-6: both stages trained through nnUNetv2_train (seeded), the unseen phantoms predicted and measured."""
    log = paths.log
    train_env = _training_env(env, seed)
    for fold in ("0", "1"):
        _step(4, _TOTAL_STEPS, f"nnUNetv2_train stage 1 (3d_lowres, coarse 3D DeepLabV3 + GCN) fold {fold} on CPU "
                               f"({time.time() - start:.0f} s so far)")
        _run(["nnUNetv2_train", DEMO_DATASET_ID, "3d_lowres", fold, "-p", "nnUNetPlans_spine", "-tr",
              f"nnUNetTrainerSpineCoarse{variant}", "-device", "cpu"], train_env, log)
    _step(5, _TOTAL_STEPS, f"nnUNetv2_train stage 2 (2d_cascade, fine 2D residual U-Net) on CPU "
                           f"({time.time() - start:.0f} s so far)")
    _run(["nnUNetv2_train", DEMO_DATASET_ID, "2d_cascade", "0", "-p", "nnUNetPlans_spine", "-tr",
          f"nnUNetTrainerSpineFine{variant}", "-device", "cpu"], train_env, log)
    _step(6, _TOTAL_STEPS, f"spine-predict (both stages) on the unseen phantoms + spine-measure -> {paths.csv}")
    _run(["spine-predict", "-i", str(paths.images), "-o", str(paths.predictions), "-d", DEMO_DATASET_ID, "--variant",
          variant, "--measure", str(paths.csv), "--qc-dir", str(paths.qc), "--disable-tta"], env, log)


def _print_results(paths: _DemoPaths, env: dict[str, str], start: float) -> None:
    """Dice against the unseen phantoms, the measurement errors against their geometry, where everything is."""
    report = json.loads((paths.evaluation / "report.json").read_text())
    print(f"Dice (cascade vs truth, {report['cases_evaluated']} unseen phantoms, micro-averaged): multiclass "
          f"{report['dice_micro_multiclass']:.3f}, any vertebra {report['dice_micro_binary']:.3f}; mean per level "
          f"{report['dice_mean_per_class']:.3f}")
    measured, truth = pd.read_csv(paths.csv), pd.read_csv(paths.unseen / "truth.csv")
    errors = compare_with_truth(measured, truth)
    print("Measurements from the predicted masks vs the known geometry (mm, degrees):")
    print(errors.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\nDone in {time.time() - start:.0f} s. Results:\n  masks        {paths.predictions}\n  CSV          "
          f"{paths.csv}\n  QC pictures  {paths.qc}\n  evaluation   {paths.evaluation / 'report.md'}\n  models       "
          f"{env['nnUNet_results']}\n  commands     {paths.log} (every command run, with its output)")


def run_demo(out_dir: str | Path, cases: int = 3, seed: int = 7, train: bool = True, variant: str = "Demo",
             training_cases: int = 8) -> int:
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not train:
        return _measure_only(out, cases, seed)
    start = time.time()
    paths = _DemoPaths(out)
    paths.log.write_text("")
    env = paths.env()
    try:
        _prepare_dataset(paths, env, cases, seed, training_cases)
        _train_and_predict(paths, env, variant, start, seed)
        _step(7, _TOTAL_STEPS, f"spine-evaluate: the predicted masks against the unseen phantoms' masks -> "
                               f"{paths.evaluation}")
        _run(["spine-evaluate", "--pred", str(paths.predictions), "--ref", str(paths.unseen), "--ref-pattern",
              "mask.nii.gz", "--recursive", "-o", str(paths.evaluation), "--overwrite", "--no-progress",
              *COMPLETE_ANNOTATION], env, paths.log)
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    _print_results(paths, env, start)
    return 0


def _measure_only(out: Path, cases: int, seed: int) -> int:
    from dataset_conversion.phantom_cohort import CohortSpec, write_cohort
    from measure.batch import MeasureOptions, case_ids, find_mask_files, measure_and_report
    from measure.levels import parse_level_range
    from measure.outputs import check_measure_outputs

    phantoms, csv, qc = out / "phantoms", out / "measurements.csv", out / "qc"
    print(f"[1/2] {cases} synthetic sagittal lumbar spines (T11-S2, one L2 wedge fracture) -> {phantoms}")
    write_cohort(phantoms, CohortSpec(cases=cases, seed=seed, levels=tuple(parse_level_range("T11-S2")),
                                      deformities=(("L2", "wedge", 0.3),), deformity_probability=0.1))
    print(f"spine-phantom: {cases} case(s) in {phantoms} (truth: {phantoms / 'truth.csv'})", file=sys.stderr)
    print(f"[2/2] spine-measure -> {csv} and QC pictures in {qc}")
    masks = find_mask_files([phantoms], "mask.nii.gz", recursive=True)
    check_measure_outputs(csv, qc, masks, append=False, overwrite=True)
    some_failed = measure_and_report(masks, case_ids(masks), csv, MeasureOptions(qc_dir=str(qc)), progress=False,
                                     overwrite=True)
    rc = 1 if some_failed else 0
    measured = pd.read_csv(csv)
    truth = pd.read_csv(phantoms / "truth.csv")
    errors = compare_with_truth(measured, truth)
    print("\nAgreement with the phantoms' known geometry (mm, degrees):")
    print(errors.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    graded = measured.dropna(subset=["genant_grade"])
    fractures = graded[graded["genant_grade"] > 0]
    found = [f"{r.case_id} {r.level} grade {int(r.genant_grade)} {r.deformity_type}" for r in fractures.itertuples()]
    print(f"\nGenant grade >= 1 found: {', '.join(found) or 'none'}")
    print(f"\nResults:\n  CSV          {csv}\n  method/JSON  {csv.with_suffix('.json')}"
          f"\n  QC pictures  {qc}\n  phantoms     {phantoms} (truth: truth.csv)")
    worst = float(np.nanmax(errors.loc[errors.quantity != "rotation_deg", "max_abs_error"]))
    if worst > 1.0:
        print(f"demo: measurement error {worst:.2f} mm exceeds 1 mm: something is wrong", file=sys.stderr)
        return 1
    return rc
