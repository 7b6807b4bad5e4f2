"""benchmarks/real_data.py and benchmarks/learning_curve.py without training: argument parsing, the commands each
step runs (on a simulated runner), the tables and summary line on fake reports, the learning-curve reader."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


real_data = load_script("real_data")
learning_curve = load_script("learning_curve")


# --- fake reports --------------------------------------------------------------------------------------------------

def identity(share_right: float, off_by_one: float, all_right: int) -> dict:
    return {"available": True, "share_right": share_right, "share_off_by_one": off_by_one,
            "cases_all_right": all_right, "share_cases_all_right": all_right / 10, "vertebrae": 50}


def write_report(reports: Path, name: str, dice_mc: float | None, dice_bin: float, level: dict | None = None,
                 cases: int = 10) -> None:
    report = {"cases_evaluated": cases, "dice_micro_multiclass": dice_mc, "jaccard_micro_multiclass":
              None if dice_mc is None else dice_mc / (2 - dice_mc), "dice_micro_binary": dice_bin,
              "jaccard_micro_binary": dice_bin / (2 - dice_bin),
              "per_class": {} if dice_mc is None else {"L1": {"dice_mean": 0.5}, "L2": {"dice_mean": None}}}
    if level is not None:
        report["level_identity"] = level
        report["partial_annotation"] = {"ignore_beyond": "auto", "ignored_reference_voxels": 1234,
                                        "left_out_predicted_voxels": 56, "cases_with_unannotated_voxels": 7}
    (reports / name).mkdir(parents=True)
    (reports / name / "report.json").write_text(json.dumps(report))


def test_table_and_summary_with_level_identity(tmp_path):
    write_report(tmp_path, "cascade_multiclass_cv", 0.8, 0.9, identity(0.75, 0.2, 3))
    write_report(tmp_path, "cascade_multiclass_test", 0.7, 0.85, identity(0.5, 0.4, 1), cases=4)
    setup = real_data.TableSetup("cascade", 0, 2, test=True, note="Cascade: preset cpu.")
    timings = {"convert_601": {"wall_s": 10.4}, "train_x": {"wall_s": 1000.2}}
    text = real_data.comparison_table(tmp_path, setup, timings)
    assert "| model | cv Dice | cv Jaccard | test Dice | test Jaccard | paper Dice | paper Jaccard |" in text
    assert "| M_MC (multiclass model) | 80.0 | 66.7 | 70.0 | 53.8 | 96.6 | 93.4 |" in text
    assert "| M_MCBM (multiclass model, evaluated binary) | 90.0 | 81.8 | 85.0 | 73.9 | 97.3 | 94.6 |" in text
    assert "M_SC" not in text
    assert "| ours M_MC (cascade) | cross-validation, 2 folds | 10 | 80.0 | 90.0 | 75.0 | 20.0 | 3 of 10 |" in text
    assert "| ours M_MC (cascade) | test export, all folds | 4 | 70.0 | 85.0 | 50.0 | 40.0 | 1 of 4 |" in text
    assert "| per-class Dice (mean over cases) | L1 | L2 |" in text
    assert "| ours M_MC (cascade), cross-validation, 2 folds | 0.500 | n/a |" in text
    assert "| train_x | 1000 |" in text
    assert ("M_MC, cv: 7 of 10 references have unannotated anatomy (ignore label, or background beyond the annotated "
            "levels: 1234 voxels); 56 predicted voxels there were left out.") in text
    assert real_data.summary_line(tmp_path, setup, timings) == (
        "SUMMARY cv: dice_multiclass=0.800 dice_binary=0.900 level_identity=0.750 | "
        "test: dice_multiclass=0.700 dice_binary=0.850 level_identity=0.500 | wall 1011 s")


def test_table_and_summary_without_level_identity(tmp_path):
    write_report(tmp_path, "cascade_multiclass_cv", 0.8, 0.9)  # a report from before level identity existed
    write_report(tmp_path, "cascade_binary_cv", None, 0.95, {"available": False})
    write_report(tmp_path, "cascade_multiclass_fold1", 0.6, 0.8, None, cases=5)
    write_report(tmp_path, "nnunet_3d_fullres_fold1", 0.2, 0.7, identity(0.1, 0.5, 0), cases=5)
    setup = real_data.TableSetup("all", 1, 2, test=False)
    text = real_data.comparison_table(tmp_path, setup, {})
    assert "| M_SC (binary model) | 95.0 | 90.5 | 97.4 | 94.4 |" in text
    assert "test Dice" not in text
    assert "| ours M_MC (cascade) | cross-validation, 2 folds | 10 | 80.0 | 90.0 | n/a | n/a | n/a |" in text
    assert "| ours M_SC (binary cascade) | cross-validation, 2 folds | 10 | n/a | 95.0 | n/a | n/a | n/a |" in text
    assert "| ours M_MC (cascade) | fold 1 validation | 5 | 60.0 | 80.0 | n/a | n/a | n/a |" in text
    assert "| ours M_SC (binary cascade) | fold 1 validation | n/a | n/a | n/a | n/a | n/a | n/a |" in text
    assert "| nnU-Net 3d_fullres | fold 1 validation | 5 | 20.0 | 70.0 | 10.0 | 50.0 | 0 of 5 |" in text
    assert "unannotated anatomy" not in text
    assert real_data.summary_line(tmp_path, setup, {}) == (
        "SUMMARY cv: dice_multiclass=0.800 dice_binary=0.900 level_identity=n/a | wall 0 s")


def test_summary_without_any_report(tmp_path):
    setup = real_data.TableSetup("cascade", 0, 2, test=True)
    assert real_data.summary_line(tmp_path, setup, {}) == (
        "SUMMARY cv: dice_multiclass=n/a dice_binary=n/a level_identity=n/a | "
        "test: dice_multiclass=n/a dice_binary=n/a level_identity=n/a | wall 0 s")


# --- arguments -----------------------------------------------------------------------------------------------------

def test_arguments():
    parser = real_data.build_parser()
    args = parser.parse_args(["--data", "d", "--work", "w"])
    assert (args.models, args.test_data, args.profile, args.fold) == ("all", None, "cpu", 0)
    args = parser.parse_args(["--data", "d", "--work", "w", "--models", "cascade", "--test-data", "t"])
    assert (args.models, args.test_data) == ("cascade", Path("t"))
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "d", "--work", "w", "--models", "multiclass"])


def test_main_rejects_a_fold_beyond_the_profile_and_a_missing_test_folder(tmp_path):
    with pytest.raises(SystemExit) as raised:
        real_data.main(["--data", str(tmp_path), "--work", str(tmp_path / "w"), "--fold", "2"])
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:
        real_data.main(["--data", str(tmp_path), "--work", str(tmp_path / "w"), "--test-data", str(tmp_path / "no")])
    assert raised.value.code == 2


def test_cpu_profile():
    profile = real_data.PROFILES["cpu"]
    assert (profile.folds, profile.preset, profile.variant, profile.binary_variant) == (2, "cpu", "Cpu", "BinaryCpu")
    assert (profile.default_plans, profile.default_configuration, profile.default_trainer, profile.equal_time) == (
        "nnUNetPlans", "2d", "nnUNetTrainerTimeBudget", True)


def test_training_seconds_per_fold():
    timings = {f"train_cascade_multiclass_stage{s}_fold{f}": {"wall_s": 100.0 * s + f} for s in (1, 2) for f in (0, 1)}
    assert real_data.training_seconds_per_fold(timings, "cascade_multiclass", range(2)) == pytest.approx(301.0)
    del timings["train_cascade_multiclass_stage2_fold1"]
    assert real_data.training_seconds_per_fold(timings, "cascade_multiclass", range(2)) is None


def test_subset_export_takes_case_folders_at_any_depth(tmp_path):
    for case in ("setA/c1", "setA/c2", "setB/c3"):
        (tmp_path / "data" / case).mkdir(parents=True)
        (tmp_path / "data" / case / "levels.json").write_text("{}")
    subset = real_data.subset_export(tmp_path / "data", tmp_path / "work", 2)
    assert sorted(p.name for p in subset.iterdir()) == ["c1", "c2"]


# --- the steps' commands, on a simulated runner ----------------------------------------------------------------------

class SimulatedRunner(real_data.Runner):
    """Records the commands and writes what each would write (datasets, checkpoints, masks, reports)."""

    def __init__(self, work: Path, device: str):
        super().__init__(work, device)
        self.commands: list[list[str]] = []
        self.envs: list[dict] = []

    def run(self, command, ok_codes=(0,), env=None):
        command = [str(c) for c in command]
        self.commands.append(command)
        self.envs.append(env or {})
        option = {k: v for k, v in zip(command, command[1:], strict=False)}
        if command[0] == "spine-convert":
            self.convert(Path(option["--out"]), int(option["--id"]), option["--name"])
        elif command[:2] == ["spine-nnunet", "plan"]:
            self.preprocessed(command[3]).joinpath("nnUNetPlans_spine.json").write_text("{}")
        elif command[0] == "nnUNetv2_preprocess" and option["-plans_name"] != "nnUNetPlans_spine":
            self.preprocessed(command[2]).joinpath(f"{option['-plans_name']}_{option['-c']}").mkdir()
        elif command[0] == "nnUNetv2_train":
            dataset = next((self.work / "raw").glob(f"Dataset{int(command[1]):03d}_*")).name
            trainer = f"{option['-tr']}__{option['-p']}__{command[2]}"
            folder = self.work / "res" / dataset / trainer / f"fold_{command[3]}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "checkpoint_final.pth").write_text("")
        elif command[0] in ("spine-predict", "nnUNetv2_predict"):
            output = Path(option["-o"])
            output.mkdir(parents=True, exist_ok=True)
            for image in Path(option["-i"]).glob("*_0000.nii.gz"):
                (output / image.name.replace("_0000", "")).write_text("")
        elif command[0] == "spine-evaluate":
            output = Path(option["-o"])
            output.mkdir(parents=True, exist_ok=True)
            (output / "report.json").write_text(json.dumps({"cases_evaluated": 1}))

    def preprocessed(self, dataset_id: str) -> Path:
        name = next((self.work / "raw").glob(f"Dataset{int(dataset_id):03d}_*")).name
        (self.work / "pp" / name).mkdir(parents=True, exist_ok=True)
        return self.work / "pp" / name

    @staticmethod
    def convert(raw: Path, dataset_id: int, name: str) -> None:
        folder = raw / f"Dataset{dataset_id:03d}_{name}"
        (folder / "imagesTr").mkdir(parents=True)
        cases = [f"{name}_{i:04d}" for i in range(1, 5)]
        for case in cases:
            (folder / "imagesTr" / f"{case}_0000.nii.gz").write_text("")
        (folder / "dataset.json").write_text("{}")
        splits = [{"train": cases[2:], "val": cases[:2]}, {"train": cases[:2], "val": cases[2:]}]
        (folder / "splits_final.json").write_text(json.dumps(splits))


def simulated_benchmark(tmp_path: Path, *argv: str):
    (tmp_path / "data").mkdir(exist_ok=True)
    args = real_data.build_parser().parse_args(["--data", str(tmp_path / "data"), "--work", str(tmp_path / "w"),
                                                *argv])
    bench = real_data.benchmark_from_args(args)
    return replace(bench, runner=SimulatedRunner(bench.work, "cpu"))


def run_steps(bench) -> list[str]:
    for step in real_data.STEPS:
        real_data.STEP_FUNCTIONS[step](bench)
    return [" ".join(c) for c in bench.runner.commands]


def test_cascade_with_test_data_runs_every_fold_and_the_test_ensemble(tmp_path):
    (tmp_path / "test").mkdir()
    bench = simulated_benchmark(tmp_path, "--models", "cascade", "--test-data", str(tmp_path / "test"))
    commands = run_steps(bench)
    tools = [c.split()[0] for c in commands]
    assert tools.count("spine-convert") == 2 and "nnUNetv2_predict" not in tools
    assert all("--ignore-beyond auto" in c for c in commands if c.startswith("spine-convert"))
    assert any(" --id 606 --name LumbarCPUTest " in c for c in commands)
    assert any(c.startswith("spine-nnunet plan -d 601 --preset cpu") for c in commands)
    trainings = [c.split("nnUNetv2_train ")[1].split(" -p")[0] for c in commands if c.startswith("nnUNetv2_train")]
    assert trainings == ["601 3d_lowres 0", "601 3d_lowres 1", "601 2d_cascade 0", "601 2d_cascade 1"]
    assert all("-tr nnUNetTrainerSpineCoarseCpu" in c for c in commands if " 3d_lowres " in c and "train" in c)
    predictions = [c for c in commands if c.startswith("spine-predict")]
    assert len(predictions) == 3
    assert all("--coarse-trainer nnUNetTrainerSpineCoarseCpu --fine-trainer nnUNetTrainerSpineFineCpu " in c
               and "--disable-tta" in c and "-device cpu" in c for c in predictions)
    assert "-f 0 1 --disable-tta" in predictions[2] and "Dataset606_LumbarCPUTest/imagesTr" in predictions[2]
    assert not any("--keep-intermediate" in c for c in predictions)
    cv = bench.predictions / "cascade_multiclass" / "cv"
    assert sorted(p.name for p in cv.iterdir()) == [f"LumbarCPU_{i:04d}.nii.gz" for i in range(1, 5)]
    evaluations = [c for c in commands if c.startswith("spine-evaluate")]
    assert len(evaluations) == 2 and "--fold" not in evaluations[0]
    assert "--cases LumbarCPU_0001 LumbarCPU_0002 LumbarCPU_0003 LumbarCPU_0004" in evaluations[0]
    assert "Dataset606_LumbarCPUTest/labelsTr" in evaluations[1]
    assert "--pred-labels " + str(bench.raw / "Dataset601_LumbarCPU" / "dataset.json") in evaluations[1]
    assert (bench.work / "table.md").exists()

    bench.runner.commands.clear()  # resumed: only the evaluations run again
    assert {c.split()[0] for c in run_steps(bench)} == {"spine-evaluate"}


def test_keep_intermediate_keeps_each_prediction_folders_stages_beside_it(tmp_path):
    (tmp_path / "test").mkdir()
    bench = simulated_benchmark(tmp_path, "--models", "cascade", "--test-data", str(tmp_path / "test"),
                                "--keep-intermediate")
    predictions = [c for c in run_steps(bench) if c.startswith("spine-predict")]
    kept = [c.split("--keep-intermediate ")[1].split()[0] for c in predictions]
    outputs = [c.split(" -o ")[1].split()[0] for c in predictions]
    assert kept == [f"{output}_intermediate" for output in outputs] and len(set(kept)) == 3


def test_all_models_add_the_binary_cascade_and_nnunet_default_on_one_fold(tmp_path):
    bench = simulated_benchmark(tmp_path, "--fold", "1")
    commands = run_steps(bench)
    assert any("--binary" in c for c in commands if c.startswith("spine-convert"))
    default = [i for i, c in enumerate(commands)
               if c.startswith("nnUNetv2_train 601 2d 1 -p nnUNetPlans -tr nnUNetTrainerTimeBudget")]
    assert len(default) == 1  # after the cascade's trainings, with their wall time per fold as its budget
    assert set(bench.runner.envs[default[0]]) == {"SPINE_TIME_BUDGET_S"}
    assert all(not c.startswith("nnUNetv2_train") for c in commands[default[0] + 1:])
    predictions = [c for c in commands if c.startswith("spine-predict")]
    assert any("--fine-trainer nnUNetTrainerSpineFineBinaryCpu " in c for c in predictions)
    assert any(c.startswith("nnUNetv2_predict") and "-f 1 --disable_tta" in c for c in commands)
    reports = sorted(p.name for p in bench.reports.iterdir())
    assert reports == ["cascade_binary_cv", "cascade_binary_fold1", "cascade_multiclass_cv",
                       "cascade_multiclass_fold1", "nnunet_2d_fold1"]
    fold_evaluations = [c for c in commands if c.startswith("spine-evaluate") and "--fold 1" in c]
    assert len(fold_evaluations) == 3

    bench.runner.commands.clear()  # resumed: only the evaluations run again
    assert {c.split()[0] for c in run_steps(bench)} == {"spine-evaluate"}


def test_binary_models_train_and_test_the_binary_cascade_alone(tmp_path):
    (tmp_path / "test").mkdir()
    bench = simulated_benchmark(tmp_path, "--models", "binary", "--test-data", str(tmp_path / "test"))
    commands = run_steps(bench)
    converted = [c for c in commands if c.startswith("spine-convert")]
    assert len(converted) == 3 and sum("--binary" in c for c in converted) == 1  # references and split: multiclass
    trainings = [c.split("nnUNetv2_train ")[1].split(" -device")[0] for c in commands if c.startswith("nnUNetv2_train")]
    assert trainings == [f"602 {configuration} {fold} -p nnUNetPlans_spine -tr nnUNetTrainerSpine{stage}BinaryCpu"
                         for configuration, stage in (("3d_lowres", "Coarse"), ("2d_cascade", "Fine"))
                         for fold in (0, 1)]
    assert [c.split()[3] for c in commands if c.startswith("spine-nnunet plan")] == ["602"]
    predictions = [c for c in commands if c.startswith("spine-predict")]
    assert len(predictions) == 3 and all(" -d 602 " in c for c in predictions)
    assert "nnUNetv2_predict" not in {c.split()[0] for c in commands}
    assert sorted(p.name for p in bench.reports.iterdir()) == ["cascade_binary_cv", "cascade_binary_test"]
    evaluations = [c for c in commands if c.startswith("spine-evaluate")]
    assert all("Dataset602_LumbarCPUBinary/dataset.json" in c.split("--pred-labels ")[1].split()[0]
               for c in evaluations)
    assert "Dataset601_LumbarCPU/labelsTr" in evaluations[0]
    setup = bench.table_setup()
    assert "BinaryCpu" in setup.note and "...Cpu" not in setup.note
    table = (bench.work / "table.md").read_text()
    assert "M_SC (binary model)" in table and "M_MC" not in table
    write_report(tmp_path / "reports", "cascade_binary_cv", None, 0.91)
    write_report(tmp_path / "reports", "cascade_multiclass_cv", 0.8, 0.85)
    assert real_data.summary_line(tmp_path / "reports", setup, {}).startswith(
        "SUMMARY cv: dice_multiclass=n/a dice_binary=0.910 level_identity=n/a | test:")


# --- learning curves -------------------------------------------------------------------------------------------------

def fake_logging(epochs: int, seconds: float, dice: float) -> dict:
    starts = [1000.0 + i * (seconds + 5) for i in range(epochs)]  # 5 s between epochs: not training time
    return {"mean_fg_dice": [dice] * epochs, "ema_fg_dice": [dice / 2] * epochs, "train_losses": [0.0] * epochs,
            "val_losses": [0.0] * epochs, "lrs": [0.01] * epochs, "dice_per_class_or_region": [[dice]] * epochs,
            "epoch_start_timestamps": starts, "epoch_end_timestamps": [s + seconds for s in starts]}


def save_checkpoint(folder: Path, logging: dict, name: str = "checkpoint_final.pth") -> Path:
    torch = pytest.importorskip("torch")
    folder.mkdir(parents=True)
    torch.save({"network_weights": {}, "logging": logging}, folder / name)
    return folder


def test_learning_curve_reads_and_chains_checkpoints(tmp_path):
    stage1 = save_checkpoint(tmp_path / "stage1", fake_logging(3, 60.0, 0.4))
    stage2 = save_checkpoint(tmp_path / "stage2", fake_logging(2, 120.0, 0.8), "checkpoint_latest.pth")
    other = save_checkpoint(tmp_path / "other", fake_logging(4, 30.0, 0.2))
    assert learning_curve.read_logging(stage2)["mean_fg_dice"] == [0.8, 0.8]
    curves = learning_curve.chain_runs([("cascade", stage1), ("nnU-Net", other), ("cascade", stage2)])
    assert [list(c.minutes) for c in curves["cascade"]] == [[1.0, 2.0, 3.0], [5.0, 7.0]]
    assert list(curves["nnU-Net"][0].minutes) == [0.5, 1.0, 1.5, 2.0]
    assert list(curves["cascade"][1].ema) == [0.4, 0.4]


def test_learning_curve_drops_an_unfinished_epoch_and_reads_points(tmp_path):
    logging = fake_logging(3, 60.0, 0.4)
    logging["epoch_start_timestamps"].append(5000.0)
    curve = learning_curve.curve_from_logging(logging, tmp_path)
    assert len(curve.minutes) == 3
    write_report(tmp_path, "with", 0.8, 0.9, identity(0.75, 0.2, 3))
    write_report(tmp_path, "without", 0.6, 0.9)
    with_identity = learning_curve.read_point(tmp_path / "with" / "report.json")
    without = learning_curve.read_point(tmp_path / "without" / "report.json")
    assert (with_identity.dice_multiclass, with_identity.level_identity) == (0.8, 0.75)
    assert (without.dice_multiclass, without.level_identity) == (0.6, None)


def test_learning_curve_cli_writes_the_figure(tmp_path):
    run = save_checkpoint(tmp_path / "fold_0", fake_logging(3, 60.0, 0.4))
    write_report(tmp_path, "cascade_cv", 0.8, 0.9, identity(0.75, 0.2, 3))
    output = tmp_path / "curve.png"
    assert learning_curve.main(["--run", f"cascade={run}", "--run", f"cascade={run}", "--point",
                                f"cascade={tmp_path / 'cascade_cv' / 'report.json'}", "-o", str(output)]) == 0
    assert output.stat().st_size > 1000
    with pytest.raises(SystemExit):
        learning_curve.main(["--run", f"a={run}", "--point", f"b={tmp_path}/x.json", "-o", str(output)])
    with pytest.raises(SystemExit):
        learning_curve.main(["--run", "no-equals-sign", "-o", str(output)])


def test_cpu_model_reads_the_model_name_and_falls_back(tmp_path, monkeypatch):
    bench_measure = load_script("bench_measure")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: Acme\nmodel name\t: Acme Core 9000 @ 3 GHz\nflags\t: fpu\n")
    real_path = bench_measure.Path
    monkeypatch.setattr(bench_measure, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    assert bench_measure.cpu_model() == "Acme Core 9000 @ 3 GHz"
    cpuinfo.write_text("processor\t: 0\nflags\t: fpu\n")  # no model name line (some ARM kernels)
    monkeypatch.setattr(bench_measure.platform, "processor", lambda: "")
    assert bench_measure.cpu_model("CPU") == "CPU"
    cpuinfo.unlink()  # no /proc (macOS, Windows)
    monkeypatch.setattr(bench_measure.platform, "processor", lambda: "arm")
    assert bench_measure.cpu_model() == "arm"
