"""Real-data benchmark: the cascade (multiclass M_MC and binary M_SC) and nnU-Net's default 3d_fullres on one
patient-level split of ../shared/data/lumbar_mri, evaluated with spine-evaluate, as a Table-1-style comparison.

Every step runs the stock commands (spine-convert, nnUNetv2_*, spine-nnunet, spine-predict, spine-evaluate) in
subprocesses, logs them to WORK/commands.log, records its wall time in WORK/timings.json and is skipped when its
output already exists, so a run can be resumed or continued on another machine.

Profiles:
* ``cpu`` (reduced, for a 2-core machine): 2 folds; the cascade with the ``small`` preset and the ``Short`` /
  ``BinaryShort`` trainers (500 + 1000 iterations); nnU-Net's default planner and trainer for 3d_fullres, but planned at
  4 mm (``nnUNetv2_plan_experiment -overwrite_target_spacing 4 4 4``, the spacing of our stage 1) and trained with
  nnU-Net's ``nnUNetTrainer_5epochs`` (1250 iterations).
* ``gpu``: 5 folds; the cascade with the default preset and the full trainers; nnU-Net's default plans and
  ``--default-trainer`` (``nnUNetTrainer``, i.e. 1000 epochs, unless a shorter stock variant is named).

Example (the CPU run recorded in docs/benchmarks.md)::

    python benchmarks/real_data.py --data ../shared/data/lumbar_mri --work /tmp/real --profile cpu

GPU (a machine that accepts only a small upload: ``--cases 24`` converts the first 24 cases only; a short lease:
stock ``nnUNetTrainer_100epochs`` and the ``Short`` variants)::

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


@dataclass(frozen=True)
class Profile:
    folds: int
    preset: str
    variant: str  # cascade trainer variant: nnUNetTrainerSpine{Coarse,Fine}{variant}
    binary_variant: str
    default_plans: str
    default_trainer: str
    default_spacing_mm: float | None  # None: nnU-Net's own target spacing
    dataset_id: int
    name: str


PROFILES = {
    "cpu": Profile(2, "small", "Short", "BinaryShort", "nnUNetPlans_cpu4mm", "nnUNetTrainer_5epochs", 4.0, 601,
                   "LumbarCPU"),
    "gpu": Profile(5, "default", "", "Binary", "nnUNetPlans", "nnUNetTrainer", None, 611, "LumbarGPU"),
}


class Runner:
    """Runs stock commands with the benchmark's nnU-Net folders; logs them and times the steps."""

    def __init__(self, work: Path, device: str):
        self.work, self.device = work, device
        self.log = work / "commands.log"
        self.timings_path = work / "timings.json"
        self.timings = json.loads(self.timings_path.read_text()) if self.timings_path.exists() else {}
        self.env = {**os.environ, "nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "pp"),
                    "nnUNet_results": str(work / "res"), "nnUNet_compile": "f"}
        if device == "cpu":
            self.env.update(nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1")

    def run(self, command: Sequence[str], ok_codes: tuple[int, ...] = (0,)) -> None:
        executable = Path(sys.executable).parent / command[0]
        line = shlex.join([str(c) for c in command])
        print(f"$ {line}", flush=True)
        with self.log.open("a") as stream:
            stream.write(f"\n$ {line}\n")
            stream.flush()
            done = subprocess.run([str(executable), *map(str, command[1:])], env=self.env, stdout=stream,
                                  stderr=subprocess.STDOUT)
        if done.returncode not in ok_codes:
            raise RuntimeError(f"{line} failed with exit status {done.returncode}; see {self.log}")

    def timed(self, key: str, commands: Sequence[Sequence[str]], ok_codes: tuple[int, ...] = (0,)) -> None:
        start = time.time()
        for command in commands:
            self.run(command, ok_codes)
        self.timings[key] = {"wall_s": round(time.time() - start, 1), "device": self.device,
                             "commands": [shlex.join(map(str, c)) for c in commands]}
        self.timings_path.write_text(json.dumps(self.timings, indent=1) + "\n")


def dataset_folder(root: Path, dataset_id: int, name: str) -> Path:
    return root / f"Dataset{dataset_id:03d}_{name}"


def subset_export(data: Path, work: Path, cases: int | None) -> Path:
    """The export itself, or a folder of links to its first ``cases`` case folders (sorted by name)."""
    if not cases:
        return data
    folders = sorted(p for p in data.iterdir() if p.is_dir())[:cases]
    subset = work / f"export_first{cases}"
    subset.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        link = subset / folder.name
        if not link.exists():
            link.symlink_to(folder.resolve())
    return subset


def split_by_number(raw: Path, dataset_id: int, name: str) -> list[dict[str, list[str]]]:
    """A dataset's splits with the case ids' dataset-name prefix removed (``LumbarCPU_0001`` -> ``0001``)."""
    splits = json.loads((dataset_folder(raw, dataset_id, name) / "splits_final.json").read_text())
    return [{part: sorted(c.removeprefix(f"{name}_") for c in ids) for part, ids in fold.items()} for fold in splits]


def validation_cases(splits_file: Path, fold: int) -> list[str]:
    return list(json.loads(splits_file.read_text())[fold]["val"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="in-house export (../shared/data/lumbar_mri)")
    parser.add_argument("--work", type=Path, required=True, help="working folder (nnU-Net folders, predictions)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--cases", type=int, default=None, help="use only the first N cases of the export")
    parser.add_argument("--fold", type=int, default=0, help="fold whose validation cases are evaluated")
    parser.add_argument("--default-trainer", default=None, help="nnU-Net trainer for 3d_fullres (stock class, e.g. "
                        "nnUNetTrainer_100epochs for a short GPU lease)")
    parser.add_argument("--variant", default=None, help="cascade trainer variant (e.g. Short; default: the profile's)")
    parser.add_argument("--binary-variant", default=None, help="binary cascade variant (e.g. BinaryShort)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    profile = replace(profile, variant=profile.variant if args.variant is None else args.variant,
                      binary_variant=args.binary_variant or profile.binary_variant)
    default_trainer = args.default_trainer or profile.default_trainer
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(work, args.device)
    raw, pp, res = work / "raw", work / "pp", work / "res"
    multi = (profile.dataset_id, profile.name)
    binary = (profile.dataset_id + 1, profile.name + "Binary")
    export = subset_export(args.data.resolve(), work, args.cases)
    device = ["-device", args.device]

    if "convert" in args.steps:
        for (did, name), extra in ((multi, []), (binary, ["--binary"])):
            if not (dataset_folder(raw, did, name) / "dataset.json").exists():
                runner.timed(f"convert_{did}", [["spine-convert", export, "--out", raw, "--id", did, "--name", name,
                                                  "--folds", profile.folds, "--no-progress", *extra]], ok_codes=(0, 1))
        if split_by_number(raw, *multi) != split_by_number(raw, *binary):
            raise SystemExit("the binary and multiclass datasets got different splits; cannot compare them")

    if "plan" in args.steps:
        for did, _ in (multi, binary):
            folder = dataset_folder(pp, did, (multi if did == multi[0] else binary)[1])
            if not (folder / "nnUNetPlans_spine.json").exists():
                runner.timed(f"plan_cascade_{did}", [
                    ["nnUNetv2_plan_and_preprocess", "-d", did, "--no_pp", "-npfp", "1"],
                    ["spine-nnunet", "plan", "-d", did, "--preset", profile.preset],
                    ["nnUNetv2_preprocess", "-d", did, "-plans_name", "nnUNetPlans_spine", "-c", "3d_lowres",
                     "2d_cascade", "-np", "1", "1"]])
        folder = dataset_folder(pp, *multi)
        if not (folder / f"{profile.default_plans}_3d_fullres").exists():
            commands = []
            if profile.default_spacing_mm:
                s = profile.default_spacing_mm
                commands.append(["nnUNetv2_plan_experiment", "-d", multi[0], "-overwrite_target_spacing", s, s, s,
                                 "-overwrite_plans_name", profile.default_plans])
            commands.append(["nnUNetv2_preprocess", "-d", multi[0], "-plans_name", profile.default_plans, "-c",
                             "3d_fullres", "-np", "1"])
            runner.timed(f"plan_default_{multi[0]}", commands)

    def trained(did: int, name: str, trainer: str, plans: str, config: str, fold: int) -> bool:
        return (dataset_folder(res, did, name) / f"{trainer}__{plans}__{config}" / f"fold_{fold}" /
                "checkpoint_final.pth").exists()

    cascades = {"cascade_multiclass": (multi, profile.variant), "cascade_binary": (binary, profile.binary_variant)}
    if "train" in args.steps:
        for key, ((did, name), variant) in cascades.items():
            coarse, fine = f"nnUNetTrainerSpineCoarse{variant}", f"nnUNetTrainerSpineFine{variant}"
            for fold in range(profile.folds):  # stage 2 trains on stage 1's out-of-fold predictions: all folds
                if not trained(did, name, coarse, "nnUNetPlans_spine", "3d_lowres", fold):
                    runner.timed(f"train_{key}_stage1_fold{fold}", [["nnUNetv2_train", did, "3d_lowres", fold, "-p",
                                                                     "nnUNetPlans_spine", "-tr", coarse, *device]])
            if not trained(did, name, fine, "nnUNetPlans_spine", "2d_cascade", args.fold):
                runner.timed(f"train_{key}_stage2_fold{args.fold}", [["nnUNetv2_train", did, "2d_cascade", args.fold,
                                                                      "-p", "nnUNetPlans_spine", "-tr", fine, *device]])
        if not trained(*multi, default_trainer, profile.default_plans, "3d_fullres", args.fold):
            runner.timed(f"train_nnunet_3d_fullres_fold{args.fold}", [[
                "nnUNetv2_train", multi[0], "3d_fullres", args.fold, "-p", profile.default_plans, "-tr",
                default_trainer, *device]])

    splits = dataset_folder(raw, *multi) / "splits_final.json"
    predictions = work / "predictions"
    if "predict" in args.steps:
        images = work / f"validation_images_fold{args.fold}"
        images.mkdir(exist_ok=True)
        for case in validation_cases(splits, args.fold):
            link = images / f"{case}_0000.nii.gz"
            if not link.exists():
                link.symlink_to(dataset_folder(raw, *multi) / "imagesTr" / f"{case}_0000.nii.gz")
        for key, ((did, _), variant) in cascades.items():
            if not (predictions / key).exists():
                runner.timed(f"predict_{key}", [["spine-predict", "-i", images, "-o", predictions / key, "-d", did,
                                                 "--variant", variant, "-f", args.fold, *device]])
        if not (predictions / "nnunet_3d_fullres").exists():
            runner.timed("predict_nnunet_3d_fullres", [[
                "nnUNetv2_predict", "-i", images, "-o", predictions / "nnunet_3d_fullres", "-d", multi[0], "-c",
                "3d_fullres", "-p", profile.default_plans, "-tr", default_trainer, "-f", args.fold, "-npp", "1",
                "-nps", "1", *device]])

    reports = work / "reports"
    if "evaluate" in args.steps:
        # every model against the same references: the multiclass dataset's labelsTr (its case ids are those of the
        # validation images); the binary model's predictions carry its own one-class map, so only the binary
        # evaluation is made for it
        references = dataset_folder(raw, *multi)
        for key, (did, name) in (("cascade_multiclass", multi), ("cascade_binary", binary),
                                 ("nnunet_3d_fullres", multi)):
            runner.timed(f"evaluate_{key}", [[
                "spine-evaluate", "--pred", predictions / key, "--ref", references / "labelsTr",
                "--pred-labels", dataset_folder(raw, did, name) / "dataset.json",
                "--ref-labels", references / "dataset.json", "--split", splits, "--fold", args.fold,
                "-o", reports / key, "--overwrite", "--no-progress"]], ok_codes=(0, 1))
            evaluated = json.loads((reports / key / "report.json").read_text())["cases_evaluated"]
            if evaluated == 0:
                raise SystemExit(f"spine-evaluate evaluated no case of {predictions / key}; see {runner.log}")

    if "table" in args.steps:
        text = comparison_table(reports, profile, default_trainer, runner.timings)
        (work / "table.md").write_text(text)
        print(text)
    return 0


def comparison_table(reports: Path, profile: Profile, default_trainer: str, timings: dict) -> str:
    """Table-1-style Markdown: micro Dice / Jaccard (percent) of ours, nnU-Net's default and the paper."""
    def load(key: str) -> dict:
        return json.loads((reports / key / "report.json").read_text())

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}"

    multi, binary, default = load("cascade_multiclass"), load("cascade_binary"), load("nnunet_3d_fullres")
    rows = [
        ("M_SC (binary model)", binary["dice_micro_binary"], binary["jaccard_micro_binary"], None, None),
        ("M_MC (multiclass model)", multi["dice_micro_multiclass"], multi["jaccard_micro_multiclass"],
         default["dice_micro_multiclass"], default["jaccard_micro_multiclass"]),
        ("M_MCBM (multiclass model, evaluated binary)", multi["dice_micro_binary"], multi["jaccard_micro_binary"],
         default["dice_micro_binary"], default["jaccard_micro_binary"]),
    ]
    lines = ["| model | ours Dice | ours Jaccard | nnU-Net 3d_fullres Dice | nnU-Net Jaccard | paper Dice | "
             "paper Jaccard |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, d, j, nd, nj in rows:
        pd_, pj = PAPER[name]
        lines.append(f"| {name} | {pct(d)} | {pct(j)} | {pct(nd)} | {pct(nj)} | {pd_} | {pj} |")
    lines += ["", f"Validation cases: {multi['cases_evaluated']} (fold of a {profile.folds}-fold patient-level "
              f"split). Cascade: preset {profile.preset}, trainers nnUNetTrainerSpine{{Coarse,Fine}}{profile.variant} "
              f"and ...{profile.binary_variant}; nnU-Net default: {default_trainer}, plans {profile.default_plans}.",
              "", "| per-class Dice (mean over cases) | " + " | ".join(multi["per_class"]) + " |",
              "|---|" + "---:|" * len(multi["per_class"])]
    for key, report in (("ours M_MC", multi), ("nnU-Net 3d_fullres", default)):
        values = [report["per_class"][c]["dice_mean"] for c in multi["per_class"]]
        lines.append(f"| {key} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in values) + " |")
    lines += ["", "| wall time | s |", "|---|---:|"]
    lines += [f"| {key} | {value['wall_s']:.0f} |" for key, value in timings.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
