"""Real-data benchmark: the cascade (multiclass M_MC; with ``--models binary`` the binary M_SC instead; with
``--models all`` both and nnU-Net's default at equal training time) on a patient-level cross-validation of
../shared/data/lumbar_mri, optionally tested on a second export, evaluated with spine-evaluate, as a Table-1-style
comparison with level identity.

Every step runs the stock commands (spine-convert, nnUNetv2_*, spine-nnunet, spine-predict, spine-evaluate) in
subprocesses, logs them to WORK/commands.log, records its wall time in WORK/timings.json and is skipped when its
output already exists, so a run can be resumed or continued on another machine (the evaluations are redone each
time: they are cheap and follow spine-evaluate's current report).

What it runs:
* ``convert``: spine-convert with ``--ignore-beyond auto`` (anatomy present but not annotated gets the ignore label)
  into dataset ID (always: its images, references and split serve every model) and ID + 1 ``--binary`` for M_SC;
  ``--test-data DIR`` with the same options into ID + 5.
* ``plan``: nnU-Net's planner, ``spine-nnunet plan --preset P``, nnUNetv2_preprocess (and nnU-Net's default plans).
* ``train``: both stages of the cascade on every fold (stage 1 of all folds first: stage 2 trains on stage 1's
  out-of-fold predictions); nnU-Net's default on ``--fold`` only, given the cascade's training wall time per fold
  (``nnUNetTrainerTimeBudget``, environment variable ``SPINE_TIME_BUDGET_S``) where the profile says so.
* ``predict``: each fold's validation cases with that fold's models (no test-time mirroring), gathered into
  WORK/predictions/MODEL/cv/; the test export with every fold (nnU-Net's ensemble) into WORK/predictions/MODEL/test/.
* ``evaluate``: spine-evaluate of every cross-validation case (reports/MODEL_cv), of the test cases (MODEL_test) and,
  with ``--models all``, of ``--fold``'s validation cases for every model (MODEL_foldK, nnunet_CONFIG_foldK).
* ``table``: WORK/table.md; the last line printed is ``SUMMARY cv: ... | test: ... | wall N s`` (M_MC's figures,
  M_SC's with ``--models binary``; wall: the sum of every step's recorded wall time).

Profiles:
* ``cpu`` (reduced, for a 2-core machine): 2 folds (3 folds, each stage's budget per fold cut to two thirds to stay
  inside 75 minutes, lost in both trainings: cross-validation multiclass / binary 0.832-0.839 / 0.894, 251 of 271
  levels, against 0.879 / 0.902, 267, for two folds at the same iterations per second; docs/benchmarks.md,
  "Thirty-fifth" and "Forty-eighth session"); the cascade with the ``cpu`` preset and the ``Cpu`` /
  ``BinaryCpu`` trainers (M_SC's schedule is shorter, 800 + 1400 iterations against at most 3200 + 4200: its 45-minute
  budget); nnU-Net's default plans (its own planner, nothing overwritten) in its ``2d``
  configuration, trained with ``nnUNetTrainerTimeBudget`` (nnU-Net's trainer, only the schedule fitted) for the
  cascade's training wall time per fold: the comparison at equal wall time. ``2d`` rather than ``3d_fullres``
  because on 2 cores predicting the 24 validation cases with 3d_fullres alone takes about an hour (docs/benchmarks.md).
* ``gpu``: 5 folds; the cascade with the default preset and the full trainers; nnU-Net's default plans and
  ``--default-trainer`` (``nnUNetTrainer``, i.e. 1000 epochs, unless a shorter stock variant is named).

Examples::

    python benchmarks/real_data.py --data ../shared/data/lumbar_mri --work /tmp/real --profile cpu
    python benchmarks/real_data.py --data ../shared/data/lumbar_mri --work /tmp/real --profile cpu \
        --models cascade --test-data OTHER_EXPORT

GPU (a machine that accepts only a small upload: ``--cases 24`` converts the first 24 case folders only; a short
lease: stock ``nnUNetTrainer_100epochs`` and the ``Short`` variants)::

    python benchmarks/real_data.py --data DATA --work WORK --profile gpu --device cuda
    python benchmarks/real_data.py --data DATA --work WORK --profile gpu --device cuda --cases 24 \
        --variant Short --binary-variant BinaryShort --default-trainer nnUNetTrainer_100epochs
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

PAPER = {  # Table 1 of the paper (validation set, micro-averaged, percent)
    "M_SC (binary model)": (97.4, 94.4),
    "M_MC (multiclass model)": (96.6, 93.4),
    "M_MCBM (multiclass model, evaluated binary)": (97.3, 94.6),
}
STEPS = ("convert", "plan", "train", "predict", "evaluate", "table")
MODELS = ("cascade", "binary", "all")
TRAINED = {"cascade": ("cascade_multiclass",), "binary": ("cascade_binary",),
           "all": ("cascade_multiclass", "cascade_binary")}
"""The cascades (their report prefixes, in table order) each ``--models`` choice trains; the first is the one the
summary line describes."""
CASCADE_LABELS = {"cascade_multiclass": ("M_MC", "ours M_MC (cascade)"),
                  "cascade_binary": ("M_SC", "ours M_SC (binary cascade)")}  # short, and in the tables
SPINE_PLANS = "nnUNetPlans_spine"
CONVERT_OPTIONS = ("--ignore-beyond", "auto", "--no-progress")  # the same for the training and the test export
TEST_ID_OFFSET = 5
BUDGET_VARIABLE = "SPINE_TIME_BUDGET_S"  # read by nnunet_ext.training.baselines.nnUNetTrainerTimeBudget


@dataclass(frozen=True)
class Profile:
    folds: int
    preset: str
    variant: str  # cascade trainer variant: nnUNetTrainerSpine{Coarse,Fine}{variant}
    binary_variant: str
    default_plans: str
    default_trainer: str
    default_configuration: str
    equal_time: bool  # give nnU-Net's default the cascade's training wall time per fold
    dataset_id: int
    name: str


PROFILES = {
    "cpu": Profile(2, "cpu", "Cpu", "BinaryCpu", "nnUNetPlans", "nnUNetTrainerTimeBudget", "2d", True, 601,
                   "LumbarCPU"),
    "gpu": Profile(5, "default", "", "Binary", "nnUNetPlans", "nnUNetTrainer", "3d_fullres", False, 611,
                   "LumbarGPU"),
}


@dataclass(frozen=True)
class Dataset:
    id: int
    name: str

    def folder(self, root: Path) -> Path:
        return root / f"Dataset{self.id:03d}_{self.name}"


@dataclass(frozen=True)
class Cascade:
    key: str  # folder name under predictions/ and prefix of the reports (its labels: CASCADE_LABELS)
    dataset: Dataset
    variant: str

    @property
    def coarse_trainer(self) -> str:
        return f"nnUNetTrainerSpineCoarse{self.variant}"

    @property
    def fine_trainer(self) -> str:
        return f"nnUNetTrainerSpineFine{self.variant}"


class Runner:
    """Runs stock commands with the benchmark's nnU-Net folders; logs them and times the steps."""

    def __init__(self, work: Path, device: str):
        self.work, self.device = work, device
        self.log = work / "commands.log"
        self.timings_path = work / "timings.json"
        self.timings = json.loads(self.timings_path.read_text()) if self.timings_path.exists() else {}
        self.env = {**os.environ, "nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "pp"),
                    "nnUNet_results": str(work / "res"), "nnUNet_compile": "f"}
        self.stage2_env: dict[str, str] = {}
        if device == "cpu":  # 2 cores: one augmentation worker; nnU-Net's predictor caps torch's threads at
            # nnUNet_def_n_proc, so 1 would predict on one core
            self.env.update(nnUNet_n_proc_DA="1", nnUNet_def_n_proc=str(min(2, os.cpu_count() or 1)))
            if (os.cpu_count() or 1) <= 2:  # stage 2's augmentation in the training process: its 2D batches cost
                # 0.07 s there, and a worker beside the network's two threads slows every step ("Twelfth session")
                self.stage2_env = {"nnUNet_n_proc_DA": "0"}

    def run(self, command: Sequence[str], ok_codes: tuple[int, ...] = (0,), env: dict | None = None) -> None:
        executable = Path(sys.executable).parent / command[0]
        line = shlex.join([str(c) for c in command])
        print(f"$ {line}", flush=True)
        with self.log.open("a") as stream:
            stream.write(f"\n$ {line}\n")
            stream.flush()
            done = subprocess.run([str(executable), *map(str, command[1:])], env={**self.env, **(env or {})},
                                  stdout=stream,
                                  stderr=subprocess.STDOUT)
        if done.returncode not in ok_codes:
            raise RuntimeError(f"{line} failed with exit status {done.returncode}; see {self.log}")

    def timed(self, key: str, commands: Sequence[Sequence[str]], ok_codes: tuple[int, ...] = (0,),
              env: dict | None = None) -> None:
        start = time.time()
        for command in commands:
            self.run(command, ok_codes, env)
        self.timings[key] = {"wall_s": round(time.time() - start, 1), "device": self.device,
                             "commands": [shlex.join(map(str, c)) for c in commands], **({"env": env} if env else {})}
        self.timings_path.write_text(json.dumps(self.timings, indent=1) + "\n")


@dataclass(frozen=True)
class Benchmark:
    """What the steps share: the options, the folders, the datasets and the models."""

    profile: Profile
    models: str
    fold: int  # nnU-Net's default model is trained on this fold only
    default_trainer: str
    export: Path
    test_export: Path | None
    runner: Runner
    keep_intermediate: bool = False  # spine-predict keeps both stages' outputs beside each prediction folder

    @property
    def work(self) -> Path:
        return self.runner.work

    @property
    def device_option(self) -> list[str]:
        return ["-device", self.runner.device]

    @property
    def raw(self) -> Path:
        return self.work / "raw"

    @property
    def pp(self) -> Path:
        return self.work / "pp"

    @property
    def res(self) -> Path:
        return self.work / "res"

    @property
    def predictions(self) -> Path:
        return self.work / "predictions"

    @property
    def reports(self) -> Path:
        return self.work / "reports"

    @property
    def folds(self) -> range:
        return range(self.profile.folds)

    @property
    def multi(self) -> Dataset:
        return Dataset(self.profile.dataset_id, self.profile.name)

    @property
    def binary(self) -> Dataset:
        return Dataset(self.profile.dataset_id + 1, self.profile.name + "Binary")

    @property
    def test(self) -> Dataset:
        return Dataset(self.profile.dataset_id + TEST_ID_OFFSET, self.profile.name + "Test")

    @property
    def with_default(self) -> bool:
        """``--models all``: nnU-Net's default too (trained on ``--fold``, given M_MC's training time)."""
        return self.models == "all"

    @property
    def with_binary(self) -> bool:
        """``--models binary`` or ``all``: the binary cascade M_SC on its own ``--binary`` dataset."""
        return "cascade_binary" in TRAINED[self.models]

    @property
    def default_key(self) -> str:
        """Folder name under predictions/ and prefix of the reports of nnU-Net's default."""
        return f"nnunet_{self.profile.default_configuration}"

    @property
    def cascades(self) -> tuple[Cascade, ...]:
        multi = Cascade("cascade_multiclass", self.multi, self.profile.variant)
        binary = Cascade("cascade_binary", self.binary, self.profile.binary_variant)
        return tuple(c for c in (multi, binary) if c.key in TRAINED[self.models])

    @property
    def splits_file(self) -> Path:
        return self.multi.folder(self.raw) / "splits_final.json"

    def validation_cases(self, fold: int) -> list[str]:
        return list(json.loads(self.splits_file.read_text())[fold]["val"])

    def table_setup(self) -> TableSetup:
        p = self.profile
        variants = " and ...".join(c.variant for c in self.cascades)
        note = (f"Cascade: preset {p.preset}, trainers nnUNetTrainerSpine{{Coarse,Fine}}{variants}"
                + (f"; nnU-Net default: {p.default_configuration}, {self.default_trainer}, "
                   f"plans {p.default_plans}, fold {self.fold} only" if self.with_default else "") + ".")
        return TableSetup(self.models, self.fold, p.folds, self.test_export is not None, note,
                          p.default_configuration)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="in-house export (../shared/data/lumbar_mri)")
    parser.add_argument("--work", type=Path, required=True, help="working folder (nnU-Net folders, predictions)")
    parser.add_argument("--test-data", type=Path, default=None, help="a second export in the same layout: "
                        "converted alike, predicted with every fold's cascade and evaluated as a test set")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--models", choices=MODELS, default="all", help="cascade: the multiclass cascade M_MC only; "
                        "binary: the binary cascade M_SC only; all (default): M_MC, M_SC and nnU-Net's default")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--cases", type=int, default=None, help="use only the first N case folders of the export")
    parser.add_argument("--fold", type=int, default=0, help="the fold nnU-Net's default is trained on "
                        "(--models all; it is compared with the cascade on this fold's validation cases)")
    parser.add_argument("--default-trainer", default=None, help="nnU-Net's default's trainer (stock class, e.g. "
                        "nnUNetTrainer_100epochs for a short GPU lease)")
    parser.add_argument("--variant", default=None, help="cascade trainer variant (e.g. Short; default: the profile's)")
    parser.add_argument("--binary-variant", default=None, help="binary cascade variant (e.g. BinaryShort)")
    parser.add_argument("--dataset-id", type=int, default=None, help="nnU-Net dataset id of the multiclass dataset "
                        "(default: the profile's; the binary one is ID + 1, the test export ID + 5)")
    parser.add_argument("--dataset-name", default=None, help="dataset name (default: the profile's)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--keep-intermediate", action="store_true", help="the cascade's predictions keep both stages' "
                        "outputs (before the level tidying) in FOLDER_intermediate beside each prediction FOLDER")
    return parser


def benchmark_from_args(args: argparse.Namespace) -> Benchmark:
    profile = PROFILES[args.profile]
    profile = replace(profile, variant=profile.variant if args.variant is None else args.variant,
                      binary_variant=args.binary_variant or profile.binary_variant,
                      dataset_id=args.dataset_id or profile.dataset_id, name=args.dataset_name or profile.name)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    return Benchmark(profile=profile, models=args.models, fold=args.fold,
                     default_trainer=args.default_trainer or profile.default_trainer,
                     export=subset_export(args.data.resolve(), work, args.cases),
                     test_export=args.test_data.resolve() if args.test_data else None, runner=Runner(work, args.device),
                     keep_intermediate=args.keep_intermediate)


def case_folders(export: Path) -> list[Path]:
    """The case folders of an export (those holding a levels.json, at any depth), sorted by path; the export's
    subfolders when none has one."""
    found = sorted({p.parent for p in export.rglob("levels.json")})
    return found or sorted(p for p in export.iterdir() if p.is_dir())


def subset_export(data: Path, work: Path, cases: int | None) -> Path:
    """The export itself, or a folder of links to its first ``cases`` case folders (sorted by path)."""
    if not cases:
        return data
    subset = work / f"export_first{cases}"
    subset.mkdir(parents=True, exist_ok=True)
    for folder in case_folders(data)[:cases]:
        link = subset / folder.name
        if not link.exists():
            link.symlink_to(folder.resolve())
    return subset


def split_by_number(raw: Path, dataset: Dataset) -> list[dict[str, list[str]]]:
    """A dataset's splits with the case ids' dataset-name prefix removed (``LumbarCPU_0001`` -> ``0001``)."""
    splits = json.loads((dataset.folder(raw) / "splits_final.json").read_text())
    return [{part: sorted(c.removeprefix(f"{dataset.name}_") for c in ids) for part, ids in fold.items()}
            for fold in splits]


# --- convert -------------------------------------------------------------------------------------------------------

def convert_command(export: Path, raw: Path, dataset: Dataset, folds: int, *extra: str) -> list:
    """spine-convert with the benchmark's options; ``--folds`` also works for a test export of any size (one
    subject: no split; fewer subjects than folds: one fold per subject)."""
    return ["spine-convert", export, "--out", raw, "--id", dataset.id, "--name", dataset.name, "--folds", folds,
            *CONVERT_OPTIONS, *extra]


def convert_dataset(bench: Benchmark, export: Path, dataset: Dataset, *extra: str) -> None:
    if not (dataset.folder(bench.raw) / "dataset.json").exists():
        bench.runner.timed(f"convert_{dataset.id}", [convert_command(export, bench.raw, dataset, bench.profile.folds,
                                                                     *extra)], ok_codes=(0, 1))


def convert(bench: Benchmark) -> None:
    convert_dataset(bench, bench.export, bench.multi)  # always: its images, references and split serve every model
    if bench.with_binary:
        convert_dataset(bench, bench.export, bench.binary, "--binary")
        if split_by_number(bench.raw, bench.multi) != split_by_number(bench.raw, bench.binary):
            raise SystemExit("the binary and multiclass datasets got different splits; cannot compare them")
    if bench.test_export:
        convert_dataset(bench, bench.test_export, bench.test)


# --- plan ----------------------------------------------------------------------------------------------------------

def preprocessing_processes() -> str:
    """One nnU-Net preprocessing process per core, at most 4: each case's resampling runs on one core."""
    return str(max(1, min(4, os.cpu_count() or 1)))


def plan_cascade(bench: Benchmark, dataset: Dataset) -> None:
    if (dataset.folder(bench.pp) / f"{SPINE_PLANS}.json").exists():
        return
    processes = preprocessing_processes()
    bench.runner.timed(f"plan_cascade_{dataset.id}", [
        ["nnUNetv2_plan_and_preprocess", "-d", dataset.id, "--no_pp", "-npfp", processes],
        ["spine-nnunet", "plan", "-d", dataset.id, "--preset", bench.profile.preset],
        ["nnUNetv2_preprocess", "-d", dataset.id, "-plans_name", SPINE_PLANS, "-c", "3d_lowres", "2d_cascade",
         "-np", processes, processes]])


def plan_default(bench: Benchmark) -> None:
    """nnU-Net's default plans (written by plan_cascade's nnUNetv2_plan_and_preprocess --no_pp) preprocessed."""
    profile, dataset = bench.profile, bench.multi
    configuration = profile.default_configuration
    if (dataset.folder(bench.pp) / f"{profile.default_plans}_{configuration}").exists():
        return
    bench.runner.timed(f"plan_default_{dataset.id}", [["nnUNetv2_preprocess", "-d", dataset.id, "-plans_name",
                                                       profile.default_plans, "-c", configuration, "-np",
                                                       preprocessing_processes()]])


def plan(bench: Benchmark) -> None:
    for cascade in bench.cascades:
        plan_cascade(bench, cascade.dataset)
    if bench.with_default:
        plan_default(bench)


# --- train ---------------------------------------------------------------------------------------------------------

def train_model(bench: Benchmark, key: str, dataset: Dataset, configuration: str, fold: int, plans: str,
                trainer: str, env: dict | None = None) -> None:
    folder = dataset.folder(bench.res) / f"{trainer}__{plans}__{configuration}" / f"fold_{fold}"
    if not (folder / "checkpoint_final.pth").exists():
        bench.runner.timed(key, [["nnUNetv2_train", dataset.id, configuration, fold, "-p", plans, "-tr", trainer,
                                  *bench.device_option]], env=env)


def training_seconds_per_fold(timings: dict, cascade_key: str, folds: Sequence[int]) -> float | None:
    """The cascade's recorded training wall time (both stages) averaged over the folds, or None when a stage of a
    fold has no recorded time (trained elsewhere or by hand)."""
    keys = [f"train_{cascade_key}_{stage}_fold{fold}" for fold in folds for stage in ("stage1", "stage2")]
    if not all(key in timings for key in keys):
        return None
    return sum(timings[key]["wall_s"] for key in keys) / len(folds)


def train(bench: Benchmark) -> None:
    for cascade in bench.cascades:  # stage 2 trains on stage 1's out-of-fold predictions: stage 1 of all folds first
        for stage, configuration, trainer in (("stage1", "3d_lowres", cascade.coarse_trainer),
                                              ("stage2", "2d_cascade", cascade.fine_trainer)):
            for fold in bench.folds:
                train_model(bench, f"train_{cascade.key}_{stage}_fold{fold}", cascade.dataset, configuration, fold,
                            SPINE_PLANS, trainer, bench.runner.stage2_env if stage == "stage2" else None)
    if bench.with_default:
        budget = training_seconds_per_fold(bench.runner.timings, bench.cascades[0].key, bench.folds)
        env = {BUDGET_VARIABLE: f"{budget:.0f}"} if bench.profile.equal_time and budget is not None else None
        train_model(bench, f"train_{bench.default_key}_fold{bench.fold}", bench.multi,
                    bench.profile.default_configuration, bench.fold, bench.profile.default_plans,
                    bench.default_trainer, env)


# --- predict -------------------------------------------------------------------------------------------------------

def validation_images(bench: Benchmark, fold: int) -> Path:
    """A folder of links to one fold's validation images (the multiclass dataset's; every model is evaluated
    against its references, so the predictions carry its case ids)."""
    images = bench.work / "validation_images" / f"fold_{fold}"
    images.mkdir(parents=True, exist_ok=True)
    for case in bench.validation_cases(fold):
        link = images / f"{case}_0000.nii.gz"
        if not link.exists():
            link.symlink_to(bench.multi.folder(bench.raw) / "imagesTr" / f"{case}_0000.nii.gz")
    return images


def predicted(folder: Path, cases: Sequence[str]) -> bool:
    return all((folder / f"{case}.nii.gz").exists() for case in cases)


def cascade_predict_command(bench: Benchmark, cascade: Cascade, images: Path, output: Path,
                            folds: Sequence[int]) -> list:
    """spine-predict with the trainers by name (``--variant`` takes only the bundled variants; a user's own, trained
    here through nnU-Net's lookup, is predicted alike)."""
    keep = ["--keep-intermediate", output.with_name(f"{output.name}_intermediate")] if bench.keep_intermediate else []
    return ["spine-predict", "-i", images, "-o", output, "-d", cascade.dataset.id, "--coarse-trainer",
            cascade.coarse_trainer, "--fine-trainer", cascade.fine_trainer, "-f", *folds, "--disable-tta",
            *bench.device_option, *keep]


def gather(sources: Sequence[Path], target: Path) -> None:
    """Links in ``target`` to every prediction (and the first dataset.json) of ``sources``."""
    target.mkdir(parents=True, exist_ok=True)
    files = [f for source in sources for f in sorted(source.glob("*.nii.gz"))]
    files += [f for f in (source / "dataset.json" for source in sources) if f.exists()][:1]
    for file in files:
        link = target / file.name
        if not link.is_symlink() and not link.exists():
            link.symlink_to(os.path.relpath(file, target))


def predict_cascade_cv(bench: Benchmark, cascade: Cascade) -> None:
    folders = []
    for fold in bench.folds:
        output = bench.predictions / cascade.key / f"fold_{fold}"
        if not predicted(output, bench.validation_cases(fold)):
            bench.runner.timed(f"predict_{cascade.key}_fold{fold}", [
                cascade_predict_command(bench, cascade, validation_images(bench, fold), output, [fold])])
        folders.append(output)
    gather(folders, bench.predictions / cascade.key / "cv")


def predict_cascade_test(bench: Benchmark, cascade: Cascade) -> None:
    images = bench.test.folder(bench.raw) / "imagesTr"
    output = bench.predictions / cascade.key / "test"
    cases = [p.name.removesuffix("_0000.nii.gz") for p in images.glob("*_0000.nii.gz")]
    if not cases:
        raise SystemExit(f"no test images in {images}; run the convert step with --test-data first")
    if not predicted(output, cases):
        bench.runner.timed(f"predict_{cascade.key}_test", [
            cascade_predict_command(bench, cascade, images, output, list(bench.folds))])


def predict_default(bench: Benchmark) -> None:
    output = bench.predictions / bench.default_key / f"fold_{bench.fold}"
    if not predicted(output, bench.validation_cases(bench.fold)):
        bench.runner.timed(f"predict_{bench.default_key}_fold{bench.fold}", [[
            "nnUNetv2_predict", "-i", validation_images(bench, bench.fold), "-o", output, "-d", bench.multi.id, "-c",
            bench.profile.default_configuration, "-p", bench.profile.default_plans, "-tr", bench.default_trainer,
            "-f", bench.fold,
            "--disable_tta", "-npp", "1", "-nps", "1", *bench.device_option]])


def predict(bench: Benchmark) -> None:
    for cascade in bench.cascades:
        predict_cascade_cv(bench, cascade)
        if bench.test_export:
            predict_cascade_test(bench, cascade)
    if bench.with_default:
        predict_default(bench)


# --- evaluate ------------------------------------------------------------------------------------------------------

def evaluate_run(bench: Benchmark, name: str, predictions: Path, model: Dataset, references: Dataset,
                 selection: Sequence) -> None:
    """spine-evaluate of one folder of predictions into reports/NAME; the predictions with the label map of the
    dataset their model was trained on, the references with their own."""
    report = bench.reports / name
    bench.runner.timed(f"evaluate_{name}", [[
        "spine-evaluate", "--pred", predictions, "--ref", references.folder(bench.raw) / "labelsTr",
        "--pred-labels", model.folder(bench.raw) / "dataset.json",
        "--ref-labels", references.folder(bench.raw) / "dataset.json", *selection,
        "-o", report, "--overwrite", "--no-progress"]], ok_codes=(0, 1))
    if json.loads((report / "report.json").read_text())["cases_evaluated"] == 0:
        raise SystemExit(f"spine-evaluate evaluated no case of {predictions}; see {bench.runner.log}")


def evaluate(bench: Benchmark) -> None:
    cv_cases = sorted(c for fold in bench.folds for c in bench.validation_cases(fold))
    fold_selection = ["--split", bench.splits_file, "--fold", bench.fold]
    for cascade in bench.cascades:
        folder = bench.predictions / cascade.key
        evaluate_run(bench, f"{cascade.key}_cv", folder / "cv", cascade.dataset, bench.multi, ["--cases", *cv_cases])
        if bench.with_default:
            evaluate_run(bench, f"{cascade.key}_fold{bench.fold}", folder / "cv", cascade.dataset, bench.multi,
                         fold_selection)
        if bench.test_export:
            evaluate_run(bench, f"{cascade.key}_test", folder / "test", cascade.dataset, bench.test, [])
    if bench.with_default:
        evaluate_run(bench, f"{bench.default_key}_fold{bench.fold}",
                     bench.predictions / bench.default_key / f"fold_{bench.fold}", bench.multi, bench.multi,
                     fold_selection)


# --- table and summary ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TableSetup:
    models: str  # "cascade", "binary" or "all"
    fold: int  # nnU-Net's default model's fold
    folds: int
    test: bool
    note: str = ""  # the models' description, printed under the tables
    default_configuration: str = "3d_fullres"  # nnU-Net's default's configuration


def load_report(reports: Path, name: str) -> dict:
    """reports/NAME/report.json, or {} when there is none (its figures read as n/a)."""
    path = reports / name / "report.json"
    return json.loads(path.read_text()) if path.exists() else {}


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def level_identity(report: dict) -> dict:
    """The report's level identity, {} when spine-evaluate did not compute it (older versions, binary models)."""
    identity = report.get("level_identity") or {}
    return identity if identity.get("available") else {}


def cases_all_right(report: dict) -> str:
    identity = level_identity(report)
    if identity.get("cases_all_right") is None:
        return "n/a"
    return f"{identity['cases_all_right']} of {identity.get('cases', report.get('cases_evaluated', '?'))}"


def partial_note(report: dict, label: str) -> list[str]:
    """A line on the references' unannotated anatomy (spine-evaluate's partial_annotation), when the report has it."""
    partial = report.get("partial_annotation") or {}
    if partial.get("ignored_reference_voxels") is None:
        return []
    return [f"{label}: {partial.get('cases_with_unannotated_voxels', 'n/a')} of {report.get('cases_evaluated', '?')} "
            f"references have unannotated anatomy (ignore label, or background beyond the annotated levels: "
            f"{partial['ignored_reference_voxels']} voxels); {partial.get('left_out_predicted_voxels', 'n/a')} "
            "predicted voxels there were left out."]


def cascade_keys(models: str) -> list[tuple[str, str]]:
    """(model, report prefix) of the cascades ``--models`` trains, in table order."""
    return [(CASCADE_LABELS[key][1], key) for key in TRAINED[models]]


def summary_model(models: str) -> tuple[str, str]:
    """(label, report prefix) of the model the summary line and the partial-annotation notes describe."""
    key = TRAINED[models][0]
    return CASCADE_LABELS[key][0], key


def evaluations(setup: TableSetup) -> list[tuple[str, str, str]]:
    """(model, evaluated on, report name) of every evaluation the setup makes, in table order."""
    keys = cascade_keys(setup.models)
    rows = [(model, f"cross-validation, {setup.folds} folds", f"{key}_cv") for model, key in keys]
    if setup.test:
        rows += [(model, "test export, all folds", f"{key}_test") for model, key in keys]
    if setup.models == "all":
        fold = f"fold {setup.fold} validation"
        rows += [(model, fold, f"{key}_fold{setup.fold}") for model, key in keys]
        configuration = setup.default_configuration
        rows.append((f"nnU-Net {configuration}", fold, f"nnunet_{configuration}_fold{setup.fold}"))
    return rows


def table_one(reports: Path, setup: TableSetup) -> list[str]:
    """The paper's Table 1 (micro Dice / Jaccard, percent): cross-validation and test next to the paper."""
    parts = ["cv"] + (["test"] if setup.test else [])
    rows = [("M_SC (binary model)", "cascade_binary", "binary"),
            ("M_MC (multiclass model)", "cascade_multiclass", "multiclass"),
            ("M_MCBM (multiclass model, evaluated binary)", "cascade_multiclass", "binary")]
    trained = {key for _, key in cascade_keys(setup.models)}
    rows = [row for row in rows if row[1] in trained]
    header = "| model | " + " | ".join(f"{p} Dice | {p} Jaccard" for p in parts) + " | paper Dice | paper Jaccard |"
    lines = [header, "|---|" + "---:|" * (2 * len(parts) + 2)]
    for name, key, view in rows:
        cells = []
        for part in parts:
            report = load_report(reports, f"{key}_{part}")
            cells += [pct(report.get(f"dice_micro_{view}")), pct(report.get(f"jaccard_micro_{view}"))]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {PAPER[name][0]} | {PAPER[name][1]} |")
    return lines


def figures_table(reports: Path, setup: TableSetup) -> list[str]:
    """Micro Dice (multiclass, binary) and level identity of every evaluation."""
    lines = ["| model | evaluated on | cases | Dice multiclass | Dice binary | levels right | levels off by one | "
             "cases with all levels right |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for model, where, name in evaluations(setup):
        report = load_report(reports, name)
        identity = level_identity(report)
        lines.append(f"| {model} | {where} | {report.get('cases_evaluated', 'n/a')} | "
                     f"{pct(report.get('dice_micro_multiclass'))} | {pct(report.get('dice_micro_binary'))} | "
                     f"{pct(identity.get('share_right'))} | {pct(identity.get('share_off_by_one'))} | "
                     f"{cases_all_right(report)} |")
    return lines


def per_class_table(reports: Path, setup: TableSetup) -> list[str]:
    """Per-class Dice (mean over cases) of the multiclass evaluations."""
    rows = [(f"{model}, {where}", load_report(reports, name)) for model, where, name in evaluations(setup)
            if "binary" not in name]
    classes = next((list(r["per_class"]) for _, r in rows if r.get("per_class")), [])
    if not classes:
        return []
    lines = ["| per-class Dice (mean over cases) | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for label, report in rows:
        per_class = report.get("per_class") or {}
        values = [(per_class.get(c) or {}).get("dice_mean") for c in classes]
        lines.append(f"| {label} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in values) + " |")
    return lines


def comparison_table(reports: Path, setup: TableSetup, timings: dict) -> str:
    """Markdown: Table 1 (micro Dice / Jaccard, percent) next to the paper, every evaluation's figures with level
    identity, per-class Dice and the steps' wall times."""
    lines = table_one(reports, setup)
    lines += ["", "Percent; levels right: share of reference vertebrae whose predicted level is right (off by one: "
              "labelled one level up or down); cases with all levels right of the cases evaluated.", ""]
    lines += figures_table(reports, setup)
    label, key = summary_model(setup.models)
    notes = [n for part in ("cv", "test") for n in partial_note(load_report(reports, f"{key}_{part}"),
                                                                 f"{label}, {part}")]
    lines += [""] + notes if notes else []
    per_class = per_class_table(reports, setup)
    lines += [""] + per_class if per_class else []
    lines += ["", setup.note] if setup.note else []
    lines += ["", "| wall time | s |", "|---|---:|"]
    lines += [f"| {key} | {value['wall_s']:.0f} |" for key, value in timings.items()]
    return "\n".join(lines) + "\n"


def summary_figures(report: dict) -> str:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return (f"dice_multiclass={number(report.get('dice_micro_multiclass'))} "
            f"dice_binary={number(report.get('dice_micro_binary'))} "
            f"level_identity={number(level_identity(report).get('share_right'))}")


def summary_line(reports: Path, setup: TableSetup, timings: dict) -> str:
    """``SUMMARY cv: ... | test: ... | wall N s``: M_MC's figures (M_SC's with ``--models binary``); wall: every
    recorded step's wall time summed."""
    key = summary_model(setup.models)[1]
    parts = [f"cv: {summary_figures(load_report(reports, f'{key}_cv'))}"]
    if setup.test:
        parts.append(f"test: {summary_figures(load_report(reports, f'{key}_test'))}")
    wall = sum(value.get("wall_s", 0.0) for value in timings.values())
    return "SUMMARY " + " | ".join(parts) + f" | wall {wall:.0f} s"


def table(bench: Benchmark) -> None:
    text = comparison_table(bench.reports, bench.table_setup(), bench.runner.timings)
    (bench.work / "table.md").write_text(text)
    print(text)


STEP_FUNCTIONS = {"convert": convert, "plan": plan, "train": train, "predict": predict, "evaluate": evaluate,
                  "table": table}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.fold < PROFILES[args.profile].folds:
        parser.error(f"--fold must be between 0 and {PROFILES[args.profile].folds - 1} for this profile")
    if args.test_data is not None and not args.test_data.is_dir():
        parser.error(f"--test-data {args.test_data}: not a folder")
    bench = benchmark_from_args(args)
    for step in STEPS:
        if step in args.steps:
            STEP_FUNCTIONS[step](bench)
    print(summary_line(bench.reports, bench.table_setup(), bench.runner.timings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
