"""End to end through exactly the commands a user types (subprocesses): spine-phantom, spine-convert,
nnUNetv2_plan_and_preprocess, spine-nnunet plan, nnUNetv2_preprocess, nnUNetv2_train for both stages (every fold
stage 2 needs), nnUNetv2_train --c after a killed run, a seeded training repeated, spine-predict with --measure, and
spine-predict on a real scan from another site. Short 'Smoke' schedules on a tiny phantom dataset: minutes on a
2-core CPU."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from tests.conftest import SHARED_DATA

pytest.importorskip("nnunetv2")
pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
DATASET, NAME = "903", "Dataset903_E2E"
STAGE1 = "nnUNetTrainerSpineCoarseSmoke__nnUNetPlans_spine__3d_lowres"
STAGE2 = "nnUNetTrainerSpineFineSmoke__nnUNetPlans_spine__2d_cascade"
UNLABELLED = SHARED_DATA / "extra" / "unlabelled_t2_lumbar" / "t2_lumbar.nii.gz"


class Pipeline:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
                    "nnUNet_results": str(root / "results"), "nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1",
                    "nnUNet_compile": "f", "OMP_NUM_THREADS": "2"}
        self.env.pop("nnUNet_extTrainer", None)  # the .pth written by the README install must be enough
        self.env.pop("SPINE_SEED", None)  # a seed the user exported must not change these trainings
        self.log: list[str] = []

    def run(self, *command: str, timeout: int = 600, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        executable = command[0] if "/" in command[0] else str(BIN / command[0])
        done = subprocess.run([executable, *command[1:]], cwd=self.root, env=self.env if env is None else env,
                              capture_output=True, encoding="utf-8", errors="replace", timeout=timeout)
        self.log.append(f"$ {' '.join(command)}  -> {done.returncode}")
        if check:
            assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        return done

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    p = Pipeline(tmp_path_factory.mktemp("e2e"))
    p.run("spine-phantom", "export", "-n", "6", "--levels", "L1-L5", "--spacing", "4", "1.2", "1.2", "--seed", "3")
    p.run("spine-phantom", "unseen", "-n", "2", "--levels", "L1-L5", "--spacing", "4", "1.2", "1.2", "--seed", "11",
          "--orientation", "PIL")
    images = p.path("unseen_images")
    images.mkdir()
    for case in sorted(p.path("unseen").glob("phantom_*")):
        (images / f"{case.name}.nii.gz").symlink_to(case / "image.nii.gz")
    p.run("spine-convert", "export", "--out", str(p.path("raw")), "--id", DATASET, "--name", "E2E", "--folds", "2",
          "--no-progress")
    p.run("nnUNetv2_plan_and_preprocess", "-d", DATASET, "--no_pp", "-npfp", "1", "--verify_dataset_integrity")
    p.run("spine-nnunet", "plan", "-d", DATASET, "--preset", "small")
    p.run("nnUNetv2_preprocess", "-d", DATASET, "-plans_name", "nnUNetPlans_spine", "-c", "3d_lowres", "2d_cascade",
          "-np", "1", "1")
    for fold in ("0", "1"):  # stage 2 needs stage 1's prediction of every training case: all folds
        p.run("nnUNetv2_train", DATASET, "3d_lowres", fold, "-p", "nnUNetPlans_spine", "-tr",
              "nnUNetTrainerSpineCoarseSmoke", "-device", "cpu")
    p.run("nnUNetv2_train", DATASET, "2d_cascade", "0", "-p", "nnUNetPlans_spine", "-tr",
          "nnUNetTrainerSpineFineSmoke", "-device", "cpu")
    p.predict = p.run("spine-predict", "-i", str(images), "-o", str(p.path("predictions")), "-d", DATASET,
                      "--variant", "Smoke", "--measure", str(p.path("measurements.csv")), "--qc-dir",
                      str(p.path("qc")), "--disable-tta", check=False)
    return p


def test_files_appear_where_nnunet_puts_them(pipeline):
    results = pipeline.path("results", NAME)
    for fold in ("fold_0", "fold_1"):
        assert (results / STAGE1 / fold / "checkpoint_final.pth").is_file()
        assert any((results / STAGE1 / fold / "validation").glob("*.nii.gz"))
    assert (results / STAGE2 / "fold_0" / "checkpoint_final.pth").is_file()
    preprocessed = pipeline.path("preprocessed", NAME)
    assert (preprocessed / "nnUNetPlans_spine.json").is_file()
    for identifier in ("nnUNetPlans_spine_3d_lowres", "nnUNetPlans_spine_2d_cascade"):
        assert len(list((preprocessed / identifier).glob("*.pkl"))) == 6
    assert json.loads((preprocessed / "splits_final.json").read_text()) == json.loads(
        pipeline.path("raw", NAME, "splits_final.json").read_text())  # our patient-level split was used


def test_stage_two_received_stage_one_segmentations(pipeline):
    import torch

    results = pipeline.path("results", NAME)
    next_stage = results / STAGE1 / "predicted_next_stage" / "2d_cascade"
    assert len(list(next_stage.glob("*"))) == 6  # every training case, predicted by the fold that held it out
    debug = json.loads((results / STAGE2 / "fold_0" / "debug.json").read_text())
    assert debug["folder_with_segs_from_previous_stage"] == str(next_stage)
    assert debug["is_cascaded"] in (True, "True")
    checkpoint = torch.load(results / STAGE2 / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                            weights_only=False)
    first_conv = checkpoint["network_weights"]["encoder.0.0.conv1.weight"]
    assert first_conv.shape[1] == 1 + 9  # the image plus one channel per foreground class (T11-S2) of stage 1


def test_predictions_overlay_the_input_and_are_measured(pipeline):
    assert pipeline.predict.returncode in (0, 1), pipeline.predict.stderr[-3000:]
    for image_path in sorted(pipeline.path("unseen_images").glob("*.nii.gz")):
        mask = sitk.ReadImage(str(pipeline.path("predictions", image_path.name)))
        image = sitk.ReadImage(str(image_path))
        assert mask.GetSize() == image.GetSize() and mask.GetOrigin() == image.GetOrigin()
        assert mask.GetSpacing() == image.GetSpacing() and mask.GetDirection() == image.GetDirection()
        assert set(np.unique(sitk.GetArrayViewFromImage(mask))) <= set(range(10))  # the project labels
    table = pd.read_csv(pipeline.path("measurements.csv"))
    assert set(table["case_id"]) <= {"phantom_000", "phantom_001"} and len(table) > 0
    assert "reoriented PIL -> LPS" in pipeline.predict.stdout


def test_fast_path_matches_the_full_sliding_window(pipeline):
    """The default fast path (stage 2 only in the box of stage 1's vertebrae, batched slices, in-process
    preprocessing) against --full-window (nnU-Net's own sliding window on every slice): per-case Dice >= 0.995 and
    the same levels present; each case's line gives its time. Both without the post-processing, whose decisions on
    connected parts (the order rule, counting from the sacrum) turn a one-voxel difference of a smoke model's
    fragmented masks into a whole part (measured: Dice 0.9998 without, 0.924 with, on one run)."""
    out = {}
    for name, extra in (("fast", ()), ("full", ("--full-window",))):
        out[name] = pipeline.path(f"window_{name}")
        done = pipeline.run("spine-predict", "-i", str(pipeline.path("unseen_images")), "-o", str(out[name]), "-d",
                            DATASET, "--variant", "Smoke", "--disable-tta", *POST_PROCESSING_OFF, *extra)
        assert re.search(r"phantom_000: ok: .*\[[\d.]+ s: read [\d.]+, stage1 [\d.]+, stage2 [\d.]+, write [\d.]+\]",
                         done.stdout), done.stdout
    _assert_same_masks(pipeline, out["fast"], out["full"])
    boxed = pipeline.path("window_box")  # the grid laid over the box: it runs, and every level stays
    pipeline.run("spine-predict", "-i", str(pipeline.path("unseen_images")), "-o", str(boxed), "-d", DATASET,
                 "--variant", "Smoke", "--disable-tta", "--box-tiles", *POST_PROCESSING_OFF)
    for image_path in sorted(pipeline.path("unseen_images").glob("*.nii.gz")):
        labels = [set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / image_path.name)))))
                  for folder in (boxed, out["full"])]
        assert labels[0] == labels[1], image_path.name


POST_PROCESSING_OFF = ("--keep-out-of-order", "--keep-predicted-levels")


def _assert_same_masks(pipeline: Pipeline, fast_folder: Path, full_folder: Path) -> None:
    """Each unseen phantom's masks in the two folders: the same levels present, multiclass Dice >= 0.995."""
    for image_path in sorted(pipeline.path("unseen_images").glob("*.nii.gz")):
        fast = sitk.GetArrayFromImage(sitk.ReadImage(str(fast_folder / image_path.name)))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(full_folder / image_path.name)))
        assert set(np.unique(fast)) == set(np.unique(reference)), image_path.name
        overlap = ((fast == reference) & (fast > 0)).sum()
        total = (fast > 0).sum() + (reference > 0).sum()
        assert total == 0 or 2 * overlap / total >= 0.995, (image_path.name, 2 * overlap / total)


NEIGHBOURS_TRAINER = '''from nnunet_ext.training.variants import nnUNetTrainerSpineFineSmoke


class nnUNetTrainerSpineFineSmokeNeighbours(nnUNetTrainerSpineFineSmoke):
    neighbour_slices = 1
    network_features = (6, 12, 24, 48, 72)  # not the plans' widths (8-96 in the small preset)
    cpu_bfloat16 = True  # recorded where this CPU has it natively: spine-predict's default precision then
    previous_stage_trainer = "nnUNetTrainerSpineCoarseSmoke"
'''


def test_stage_two_with_neighbour_slices(pipeline, tmp_path, monkeypatch):
    """A stage-2 variant with ``neighbour_slices`` and its own ``network_features`` (a user's trainer module, found
    through nnUNet_extTrainer) trains through nnUNetv2_train with 3 image channels (nnU-Net's validation after
    training fed them too) and those widths, records both (and bfloat16 training, where the CPU has it) in its model
    folder's plans.json, and spine-predict builds that network, feeds it the slices and computes in the precision
    it was trained in: the fast path and the full sliding window give the same masks."""
    import torch

    from nnunet_ext.networks.precision import cpu_bfloat16_supported, cpu_channels_last_preferred

    (tmp_path / "user_trainers.py").write_text(NEIGHBOURS_TRAINER)
    env = pipeline.env
    pipeline.env = {**env, "nnUNet_extTrainer": str(tmp_path)}
    try:
        pipeline.run("nnUNetv2_train", DATASET, "2d_cascade", "0", "-p", "nnUNetPlans_spine", "-tr",
                     "nnUNetTrainerSpineFineSmokeNeighbours", "-device", "cpu")
        outputs, printed = {}, {}
        for name, extra in (("fast", ()), ("full", ("--full-window",))):
            outputs[name] = pipeline.path(f"neighbours_{name}")
            printed[name] = pipeline.run(
                "spine-predict", "-i", str(pipeline.path("unseen_images")), "-o", str(outputs[name]), "-d", DATASET,
                "--coarse-trainer", "nnUNetTrainerSpineCoarseSmoke", "--fine-trainer",
                "nnUNetTrainerSpineFineSmokeNeighbours", "-f", "0", "--disable-tta", *POST_PROCESSING_OFF, *extra)
    finally:
        pipeline.env = env
    model = pipeline.path("results", NAME, "nnUNetTrainerSpineFineSmokeNeighbours__nnUNetPlans_spine__2d_cascade")
    plans = json.loads((model / "plans.json").read_text())
    assert plans["configurations"]["2d_cascade"]["spine_neighbour_slices"] == 1
    bfloat16 = cpu_bfloat16_supported()
    assert plans["configurations"]["2d_cascade"].get("spine_cpu_precision") == ("bfloat16" if bfloat16 else None)
    precision = "compute precision on the CPU: stage 1 float32, stage 2 " + (
        ("bfloat16 (channels-last)" if cpu_channels_last_preferred() else "bfloat16") if bfloat16 else "float32")
    assert all(precision in done.stdout for done in printed.values()), printed["fast"].stdout
    assert plans["configurations"]["2d_cascade"]["architecture"]["arch_kwargs"]["features_per_stage"] == [
        6, 12, 24, 48, 72]
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["network_weights"]["encoder.0.0.conv1.weight"].shape[:2] == (6, 3 + 9)  # slices s-1, s, s+1
    assert (model / "fold_0" / "validation" / "summary.json").is_file()  # nnU-Net's final validation got them too
    _assert_same_masks(pipeline, outputs["fast"], outputs["full"])
    # a trainer without neighbours given plans that record some (a model folder's) drops the record: its network
    # is not widened for data it does not stack
    from nnunet_ext.compat import stacked_input_channels
    from nnunet_ext.training.trainers import nnUNetTrainerSpineFine

    for variable in ("nnUNet_results", "nnUNet_preprocessed"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    plans["continue_training"] = False
    dataset_json = json.loads((model / "dataset.json").read_text())
    trainer = nnUNetTrainerSpineFine(plans, "2d_cascade", 0, dataset_json, torch.device("cpu"))
    assert "spine_neighbour_slices" not in plans["configurations"]["2d_cascade"]
    assert stacked_input_channels(10, trainer.configuration_manager) == 10
    # nor is a float32 trainer's model recorded as trained in bfloat16 when its plans say so (a model folder's)
    monkeypatch.setenv("nnUNet_preprocessed", pipeline.env["nnUNet_preprocessed"])  # initialize() reads the dataset
    monkeypatch.setenv("nnUNet_compile", "f")
    plans["continue_training"] = False  # nnU-Net's trainer takes it out of the plans it is given
    plans["configurations"]["2d_cascade"]["spine_cpu_precision"] = "bfloat16"
    trainer = nnUNetTrainerSpineFine(plans, "2d_cascade", 0, dataset_json, torch.device("cpu"))
    trainer.initialize()
    assert "spine_cpu_precision" not in plans["configurations"]["2d_cascade"]
    assert trainer.network.cpu_autocast_dtype is None
    assert not trainer.network.cpu_channels_last

    class ChannelsLast(nnUNetTrainerSpineFine):  # channels-last where it trains in bfloat16 (AMX or AVX512-BF16)
        cpu_bfloat16 = True
        cpu_channels_last = True
        network_features = (16, 24, 32, 48, 64)  # every strided 1x1 shortcut from 16 channels or more

    class ChannelsLastNarrow(ChannelsLast):  # the plans' 6-72: the shortcut from 6 channels at stride 2 keeps it off
        network_features = None

    for trainer_class, expected in ((ChannelsLast, bfloat16 and cpu_channels_last_preferred()),
                                    (ChannelsLastNarrow, False)):
        own_plans = {**json.loads(json.dumps(plans)), "continue_training": False}  # a trainer writes its widths in
        trainer = trainer_class(own_plans, "2d_cascade", 0, dataset_json, torch.device("cpu"))
        trainer.initialize()
        assert trainer.network.cpu_channels_last is expected, trainer_class.__name__
        assert trainer.network.cpu_autocast_dtype == (torch.bfloat16 if bfloat16 else None)

    class WrongStages(nnUNetTrainerSpineFine):  # widths for another number of stages than the plans' network
        network_features = (8, 16, 32)

    plans["continue_training"] = False  # nnU-Net's trainer takes it out of the plans it is given
    with pytest.raises(RuntimeError, match=r"network_features \(8, 16, 32\) must give a positive width for each"):
        WrongStages(plans, "2d_cascade", 0, dataset_json, torch.device("cpu"))


def test_continue_a_killed_training_run(pipeline):
    command = [str(BIN / "nnUNetv2_train"), DATASET, "3d_lowres", "all", "-p", "nnUNetPlans_spine", "-tr",
               "nnUNetTrainerSpineCoarseSmoke", "-device", "cpu"]
    # its own process group, so that the kill takes nnU-Net's data-augmentation workers too (as a crash of the
    # machine would); killing only the main process left them running, orphaned, for the rest of the test session
    env = {**pipeline.env, "SPINE_SEED": "5"}  # seeded, with an augmentation worker: said not to repeat
    process = subprocess.Popen(command, cwd=pipeline.root, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    latest = pipeline.path("results", NAME, STAGE1, "fold_all", "checkpoint_latest.pth")
    deadline = time.time() + 300
    while time.time() < deadline and not latest.exists() and process.poll() is None:
        time.sleep(0.05)
    assert latest.exists(), "no checkpoint was written before the run ended"
    time.sleep(0.5)  # let the file be complete
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    import torch

    killed_at = torch.load(latest, map_location="cpu", weights_only=False)["current_epoch"]
    final = latest.with_name("checkpoint_final.pth")
    assert not final.exists() and killed_at == 1
    pipeline.run(*command, "--c", env=env)
    assert torch.load(final, map_location="cpu", weights_only=False)["current_epoch"] == 2
    log = sorted(latest.parent.glob("training_log_*.txt"))[-1].read_text()
    assert "Epoch 1" in log and "Epoch 0\n" not in log  # resumed, not restarted
    assert "SPINE_SEED=5: Python's, NumPy's and torch's generators seeded; the run will not repeat exactly: " \
           "nnUNet_n_proc_DA is not 0" in log


def _train_fold_1_moved_out(pipeline, trainer: str, env: dict[str, str], out: Path) -> str:
    """``nnUNetv2_train`` of stage 2's fold 1 with ``trainer``, its fold folder then moved to ``out``, out of the model
    folder (spine-predict takes every fold_* there as a fold), whether or not training succeeded; its stdout."""
    fold = pipeline.path("results", NAME, f"{trainer}__nnUNetPlans_spine__2d_cascade", "fold_1")
    try:
        return pipeline.run("nnUNetv2_train", DATASET, "2d_cascade", "1", "-p", "nnUNetPlans_spine", "-tr", trainer,
                            "-device", "cpu", env=env).stdout
    finally:
        if fold.exists():
            shutil.move(fold, out)


def _weights(fold: Path, checkpoint: str = "checkpoint_final.pth") -> dict:
    import torch

    return torch.load(fold / checkpoint, map_location="cpu", weights_only=False)["network_weights"]


def test_seeded_training_repeats(pipeline):
    """SPINE_SEED with the augmentation in the training process: stage 2 trained twice gives the same weights."""
    import torch

    env = {**pipeline.env, "SPINE_SEED": "5", "nnUNet_n_proc_DA": "0"}
    weights = []
    for run in range(2):
        out = pipeline.path(f"seeded_run{run}")
        stdout = _train_fold_1_moved_out(pipeline, "nnUNetTrainerSpineFineSmoke", env, out)
        assert "SPINE_SEED=5: Python's, NumPy's and torch's generators seeded\n" in stdout  # no warning
        weights.append(_weights(out))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


AVERAGE_TRAINER = """from nnunet_ext.training.variants import nnUNetTrainerSpineFineSmoke


class nnUNetTrainerSpineFineSmokeAverage(nnUNetTrainerSpineFineSmoke):
    weight_average_decay = {decay}
    previous_stage_trainer = "nnUNetTrainerSpineCoarseSmoke"
"""


def test_weight_average_through_nnunet_train(pipeline, tmp_path):
    """weight_average_decay in a user's trainer module, through nnUNetv2_train, seeded with the augmentation in the
    training process (so that the runs repeat): the averaging leaves training as it was (a decay of 1e-6 ends with
    the seeded plain run's weights, checkpoint_best.pth holds the weights as trained), a decay of 0.5 ends with other
    weights (the average), the average's file beside checkpoint_latest.pth is gone when training ends, and the log
    says what was averaged over how many steps (2 epochs of 5)."""
    import torch

    env = {**pipeline.env, "SPINE_SEED": "9", "nnUNet_n_proc_DA": "0", "nnUNet_extTrainer": str(tmp_path)}
    weights, best = {}, {}
    for decay in (None, 1e-6, 0.5):
        trainer = "nnUNetTrainerSpineFineSmoke"
        if decay is not None:
            trainer = "nnUNetTrainerSpineFineSmokeAverage"
            (tmp_path / "user_trainers.py").write_text(AVERAGE_TRAINER.format(decay=decay))
        out = tmp_path / f"run_{decay}"
        stdout = _train_fold_1_moved_out(pipeline, trainer, env, out)
        weights[decay], best[decay] = _weights(out), _weights(out, "checkpoint_best.pth")
        assert not list(out.glob("weight_average*")) and not (out / "checkpoint_latest.pth").exists()
        said = f"weight average (decay {decay}, 10 steps): the network now holds it" in stdout
        assert said == (decay is not None)
    plain, near_zero, half = weights[None], weights[1e-6], weights[0.5]
    assert plain.keys() == near_zero.keys() == half.keys()
    floats = [name for name in plain if plain[name].is_floating_point()]
    assert all(torch.allclose(near_zero[name], plain[name], rtol=1e-5, atol=1e-6) for name in floats)
    assert max(float((half[name] - plain[name]).abs().max()) for name in floats) > 1e-4
    # checkpoint_best.pth holds the weights as trained, the same in the three seeded runs
    assert all(torch.equal(best[0.5][name], best[None][name]) for name in floats)


@pytest.mark.real_data
def test_predict_a_real_scan_from_another_site(pipeline):
    if not UNLABELLED.is_file():
        pytest.skip(f"{UNLABELLED} not available")
    out = pipeline.path("real_prediction")
    done = pipeline.run("spine-predict", "-i", str(UNLABELLED), "-o", str(out), "-d", DATASET, "--variant", "Smoke",
                        "--disable-tta")
    mask = sitk.ReadImage(str(out / "t2_lumbar.nii.gz"))
    image = sitk.ReadImage(str(UNLABELLED))
    assert mask.GetSize() == image.GetSize() and np.allclose(mask.GetOrigin(), image.GetOrigin())
    assert np.allclose(mask.GetDirection(), image.GetDirection()) and np.allclose(mask.GetSpacing(),
                                                                                  image.GetSpacing())
    assert "t2_lumbar: ok" in done.stdout


def test_predict_one_part_of_a_cohort(pipeline):
    """nnU-Net's parts convention: part 1 of 2 gets the second of the two sorted cases."""
    out = pipeline.path("part_1")
    pipeline.run("spine-predict", "-i", str(pipeline.path("unseen_images")), "-o", str(out), "-d", DATASET,
                 "--variant", "Smoke", "--disable-tta", "--num-parts", "2", "--part-id", "1")
    assert sorted(p.name for p in out.glob("phantom_*.nii.gz")) == ["phantom_001.nii.gz"]


def test_binary_trainer_refuses_a_multiclass_dataset(pipeline):
    import torch

    from nnunet_ext.training.variants import nnUNetTrainerSpineCoarseBinary

    plans = json.loads(pipeline.path("preprocessed", NAME, "nnUNetPlans_spine.json").read_text())
    plans["continue_training"] = False  # what nnUNetv2_train adds before building the trainer
    dataset_json = json.loads(pipeline.path("preprocessed", NAME, "dataset.json").read_text())
    with pytest.raises(RuntimeError, match="expects 2 output classes, the dataset has 10"):
        nnUNetTrainerSpineCoarseBinary(plans, "3d_lowres", 0, dataset_json, torch.device("cpu"))


@pytest.mark.parametrize("ignore, binary, expected", [(True, False, True), (False, False, False), (True, True, False)])
def test_partial_label_term_only_for_levels_with_an_ignore_label(pipeline, tmp_path, monkeypatch, ignore, binary,
                                                                 expected):
    """The stage trainers add the unannotated-levels term (nnunet_ext.training.partial_loss) to nnU-Net's loss for a
    level-labelled dataset with an ignore label; never for a binary one (its class may well be unannotated there).
    The deep-supervision weights stay nnU-Net's, plus the GCN head's auxiliary weight for stage 1."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext.training.partial_loss import UnannotatedLevelsLoss
    from nnunet_ext.training.trainers import nnUNetTrainerSpineCoarse, nnUNetTrainerSpineFine

    for variable in ("nnUNet_results", "nnUNet_preprocessed"):  # trainers make their folders under these
        monkeypatch.setenv(variable, str(tmp_path / variable))
    dataset_json = json.loads(pipeline.path("preprocessed", NAME, "dataset.json").read_text())
    dataset_json["labels"].pop("ignore", None)  # spine-convert's --ignore-beyond auto gave the phantoms one
    if binary:
        dataset_json["labels"] = {"background": 0, "vertebra": 1}
    if ignore:
        dataset_json["labels"]["ignore"] = max(dataset_json["labels"].values()) + 1
    stages = ((nnUNetTrainerSpineCoarse, "3d_lowres"), (nnUNetTrainerSpineFine, "2d_cascade"))
    for trainer_class, configuration in stages:
        plans = json.loads(pipeline.path("preprocessed", NAME, "nnUNetPlans_spine.json").read_text())
        plans["continue_training"] = False
        trainer = trainer_class(plans, configuration, 0, dataset_json, torch.device("cpu"))
        loss = trainer._build_loss()
        assert isinstance(loss.loss, UnannotatedLevelsLoss) is expected
        assert type(getattr(loss.loss, "base", loss.loss)).__name__ == "DC_and_CE_loss"
        if trainer._has_auxiliary_output:  # the GCN head's output keeps its weight after the rewrapping
            assert loss.weight_factors[-1] == trainer.aux_loss_weight
        else:
            assert list(loss.weight_factors) == list(nnUNetTrainer._build_loss(trainer).weight_factors)


def test_union_dice_term_wired_for_level_labels_only(pipeline, tmp_path, monkeypatch):
    """union_dice_weight: a multiclass stage adds the Dice of "any vertebra" around the partial-label term, with the
    dataset's ignore label, inside nnU-Net's deep supervision (every output gets it); without an ignore label it
    wraps nnU-Net's loss alone; a binary dataset, whose one class already is that, does not get it; a region-based
    one is refused (its outputs are sigmoids, not a softmax with a background)."""
    import torch

    from nnunet_ext.training.partial_loss import UnannotatedLevelsLoss
    from nnunet_ext.training.trainers import nnUNetTrainerSpineFine
    from nnunet_ext.training.union_loss import UnionDiceLoss

    for variable in ("nnUNet_results", "nnUNet_preprocessed"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    dataset_json = json.loads(pipeline.path("preprocessed", NAME, "dataset.json").read_text())
    levels = dataset_json["labels"]
    assert "ignore" in levels

    class Fine(nnUNetTrainerSpineFine):
        union_dice_weight = 0.5

    def trainer(labels, **extra):
        plans = json.loads(pipeline.path("preprocessed", NAME, "nnUNetPlans_spine.json").read_text())
        plans["continue_training"] = False
        return Fine(plans, "2d_cascade", 0, {**dataset_json, "labels": labels, **extra}, torch.device("cpu"))

    loss = trainer(levels)._build_loss().loss
    assert isinstance(loss, UnionDiceLoss) and loss.weight == 0.5 and loss.ignore_label == levels["ignore"]
    assert isinstance(loss.base, UnannotatedLevelsLoss)  # wraps the partial-label term, does not replace it
    without_ignore = {name: value for name, value in levels.items() if name != "ignore"}
    loss = trainer(without_ignore)._build_loss().loss
    assert isinstance(loss, UnionDiceLoss) and loss.ignore_label is None
    assert not isinstance(loss.base, UnannotatedLevelsLoss)
    assert not isinstance(trainer({"background": 0, "vertebra": 1})._build_loss().loss, UnionDiceLoss)
    regions = {"background": 0, "lumbar": [1, 2], "L2": 2}
    with pytest.raises(RuntimeError, match="region-based"):
        trainer(regions, regions_class_order=[1, 2])._build_loss()


def test_boundary_term_wired_outside_the_union_dice(pipeline, tmp_path, monkeypatch):
    """union_boundary_weight: the cross-entropy of "any vertebra" near its edge wraps the other terms (the union's Dice
    included), with the dataset's ignore label and the class's width; a binary dataset does not get it."""
    import torch

    from nnunet_ext.training.trainers import nnUNetTrainerSpineFine
    from nnunet_ext.training.union_loss import UnionBoundaryLoss, UnionDiceLoss

    for variable in ("nnUNet_results", "nnUNet_preprocessed"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    dataset_json = json.loads(pipeline.path("preprocessed", NAME, "dataset.json").read_text())

    class Fine(nnUNetTrainerSpineFine):
        union_dice_weight = 1.0
        union_boundary_weight, union_boundary_width = 0.5, 3

    def trainer(labels, cls=Fine, **extra):
        plans = json.loads(pipeline.path("preprocessed", NAME, "nnUNetPlans_spine.json").read_text())
        plans["continue_training"] = False
        return cls(plans, "2d_cascade", 0, {**dataset_json, "labels": labels, **extra}, torch.device("cpu"))

    levels = dataset_json["labels"]
    loss = trainer(levels)._build_loss().loss
    assert isinstance(loss, UnionBoundaryLoss) and (loss.weight, loss.width) == (0.5, 3)
    assert loss.ignore_label == levels["ignore"] and isinstance(loss.base, UnionDiceLoss)
    assert not loss.partial_labels

    class FinePartial(Fine):
        union_boundary_partial_labels = True

    assert trainer(levels, FinePartial)._build_loss().loss.partial_labels
    assert not isinstance(trainer({"background": 0, "vertebra": 1})._build_loss().loss, UnionBoundaryLoss)

    class Regions(Fine):
        union_dice_weight = 0.0  # the boundary term's own refusal

    regions = {"background": 0, "lumbar": [1, 2], "L2": 2}
    with pytest.raises(RuntimeError, match="union_boundary_weight needs label-based training"):
        trainer(regions, Regions, regions_class_order=[1, 2])._build_loss()


def test_presence_term_wired_for_3d_stages_and_refused_for_2d(pipeline, tmp_path, monkeypatch):
    """adjacent_level_weight: stage 1 passes the weight, the level classes in anatomical order, its patch size and
    spacing to the loss; a 2D stage with it is refused (a sagittal slice need not hold the adjacent body)."""
    import torch

    from measure.levels import level_rank
    from nnunet_ext.training.partial_loss import UnannotatedLevelsLoss
    from nnunet_ext.training.trainers import nnUNetTrainerSpineCoarse, nnUNetTrainerSpineFine

    for variable in ("nnUNet_results", "nnUNet_preprocessed"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    dataset_json = json.loads(pipeline.path("preprocessed", NAME, "dataset.json").read_text())
    assert "ignore" in dataset_json["labels"]  # spine-convert's --ignore-beyond auto
    plans = json.loads(pipeline.path("preprocessed", NAME, "nnUNetPlans_spine.json").read_text())
    plans["continue_training"] = False

    class Coarse(nnUNetTrainerSpineCoarse):
        adjacent_level_weight = 0.5

    class Fine(nnUNetTrainerSpineFine):
        adjacent_level_weight = 0.5

    loss = Coarse(dict(plans), "3d_lowres", 0, dataset_json, torch.device("cpu"))._build_loss().loss
    assert isinstance(loss, UnannotatedLevelsLoss) and loss.presence_weight == 0.5
    levels = {v: k for k, v in dataset_json["labels"].items() if k not in ("background", "ignore")}
    assert [levels[c] for c in loss.ordered_classes] == sorted(levels.values(), key=level_rank)
    assert list(loss.patch_size) == plans["configurations"]["3d_lowres"]["patch_size"]
    assert list(loss.spacing) == plans["configurations"]["3d_lowres"]["spacing"]
    assert loss.asked_classes == ((dataset_json["labels"]["S1"],) if "S1" in dataset_json["labels"] else ())
    with pytest.raises(RuntimeError, match="3D configuration"):
        Fine(dict(plans), "2d_cascade", 0, dataset_json, torch.device("cpu"))._build_loss()
    # the CPU recipe's stage 1 asks for S1 below an annotated L5 (its stage 2 and binary stage 1 ask for nothing)
    from nnunet_ext.training.variants import (
        nnUNetTrainerSpineCoarseBinaryCpu,
        nnUNetTrainerSpineCoarseCpu,
        nnUNetTrainerSpineFineCpu,
    )

    recipe = nnUNetTrainerSpineCoarseCpu(dict(plans), "3d_lowres", 0, dataset_json, torch.device("cpu"))
    loss = recipe._build_loss().loss
    assert isinstance(loss, UnannotatedLevelsLoss) and loss.presence_weight == 1.0
    assert loss.asked_classes == ((dataset_json["labels"]["S1"],) if "S1" in dataset_json["labels"] else ())
    assert nnUNetTrainerSpineCoarseBinaryCpu.adjacent_level_weight == 0
    assert nnUNetTrainerSpineFineCpu.adjacent_level_weight == 0  # a 2D stage refuses the term


def test_spine_predict_torture(pipeline):
    """Unreadable and malformed images in one folder beside the good ones: each gets an error line naming the file
    and the reason, the exit status is 1, and the good cases' masks are byte-identical to the clean run's."""
    import shutil

    from tests.test_bad_inputs import FILE_ERRORS, make
    from tests.test_torture import _pixdim_zero

    mixed, scratch = pipeline.path("torture_images"), pipeline.path("torture_scratch")
    mixed.mkdir()
    good = sorted(pipeline.path("unseen_images").glob("*.nii.gz"))
    for image in good:
        shutil.copy(image.resolve(), mixed / image.name)
    phantom, reasons = make(), {}
    for build, fragments in FILE_ERRORS:
        folder = scratch / build.__name__
        folder.mkdir(parents=True)
        path = build(folder, phantom)
        if path.exists() and build.__name__ not in ("_probabilities", "_empty", "_strongly_tilted"):  # valid images
            shutil.move(str(path), mixed / path.name)
            reasons[path.name.split(".")[0]] = (mixed / path.name, fragments[0])
    pixdim = _pixdim_zero(mixed, mixed / good[0].name)
    reasons["pixdim_zero"] = (pixdim, "not positive")
    out = pipeline.path("torture_predictions")
    done = pipeline.run("spine-predict", "-i", str(mixed), "-o", str(out), "-d", DATASET, "--variant", "Smoke",
                        "--disable-tta", check=False)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    lines = {line.split(":")[0]: line for line in done.stdout.splitlines() if ": error: " in line}
    for case, (path, fragment) in reasons.items():
        assert case in lines, (case, done.stdout[-3000:])
        assert str(path) in lines[case] and fragment in lines[case], lines[case]
        assert not (out / f"{case}.nii.gz").exists()
    for image in good:  # the clean run: the pipeline fixture's spine-predict of the same images, same options
        assert (out / image.name).read_bytes() == pipeline.path("predictions", image.name).read_bytes(), image.name
