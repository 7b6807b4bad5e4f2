"""The wall-time budget of a trainer's schedule (nnunet_ext/training/time_budget.py): epochs fitted to the budget
(the learning-rate decay ending at the last one) or each epoch's iterations refitted to it, never more than
configured, kept for --c; the recipe's trainers carry budgets whose sum keeps the whole training inside its target."""

from __future__ import annotations

import json
import time

import pytest

from nnunet_ext.training.time_budget import SCHEDULE_FILE, TimeBudget, fitted_epochs, iterations_for_next_epoch


class _Network:
    def train(self) -> None:
        pass


class _FakeTrainer:
    """What TimeBudget reads of an nnUNetTrainer after its own ``on_train_start``: 20 ms per training step."""

    def __init__(self, output_folder, epochs: int = 40, current_epoch: int = 0):
        torch = pytest.importorskip("torch")
        pytest.importorskip("nnunetv2")
        from nnunet_ext.compat import poly_lr_scheduler

        self.output_folder = str(output_folder)
        self.num_epochs, self.current_epoch = epochs, current_epoch
        self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 10, 5
        self.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
        self.lr_scheduler = poly_lr_scheduler(self.optimizer, 0.01, epochs)
        self.network, self.dataloader_train, self.steps, self.log = _Network(), iter(range(10 ** 6)), 0, []

    def on_train_start(self) -> None:
        pass

    def on_train_epoch_start(self) -> None:
        pass

    def on_train_epoch_end(self, outputs) -> None:
        pass

    def on_epoch_end(self) -> None:
        time.sleep(0.005)  # validation, logging
        self.current_epoch += 1

    def train_step(self, batch) -> None:
        self.steps += 1
        time.sleep(0.02)

    def run_training(self) -> None:
        """nnU-Net's loop, without validation: the epoch count read once, the iterations every epoch."""
        self.on_train_start()
        for _ in range(self.current_epoch, self.num_epochs):
            self.on_train_epoch_start()
            for _ in range(self.num_iterations_per_epoch):
                self.train_step(next(self.dataloader_train))
            self.on_train_epoch_end([])
            self.on_epoch_end()

    def print_to_log_file(self, *args) -> None:
        self.log.append(" ".join(map(str, args)))


def _trainer(budget, output_folder, fits="epochs", **kwargs):
    class Budgeted(TimeBudget, _FakeTrainer):
        time_budget_s, budget_fits = budget, fits
        epoch_overhead_s = 0.0
        calibration_iterations = 3

    return Budgeted(output_folder, **kwargs)


def test_fitted_epochs_counts_validation_and_overhead():
    # 3000 s budget, 200 s gone, 1 s per iteration, epochs of 50 + 10 * 0.4 = 54 s (+ 2 s overhead: 56 s)
    assert fitted_epochs(3000, 200, 1.0, 50, 10) == 51
    assert fitted_epochs(3000, 200, 1.0, 50, 10, epoch_overhead_s=2.0) == 50
    assert fitted_epochs(100, 200, 1.0, 50, 10) == 1  # over budget already: still one epoch


def test_no_budget_changes_nothing(tmp_path):
    trainer = _trainer(None, tmp_path)
    trainer.on_train_start()
    assert trainer.num_epochs == 40 and trainer.steps == 0 and not (tmp_path / SCHEDULE_FILE).exists()


def test_a_short_budget_fits_fewer_epochs_and_ends_the_decay_there(tmp_path):
    # about 0.2 s of iterations and validation per epoch (10 + 5 * 0.4 steps of 20 ms): about 5 epochs in 1 s
    trainer = _trainer(1.0, tmp_path)
    trainer.on_train_start()
    record = json.loads((tmp_path / SCHEDULE_FILE).read_text())
    assert trainer.steps == 3  # the timed calibration steps are real training steps
    assert 2 <= trainer.num_epochs <= 5 and record["epochs"] == trainer.num_epochs and record["fits"] == "epochs"
    assert record["configured_epochs"] == 40 and record["seconds_per_iteration"] == pytest.approx(0.02, rel=0.5)
    assert trainer.lr_scheduler.max_steps == trainer.num_epochs
    trainer.lr_scheduler.step(trainer.num_epochs - 1)
    assert 0 < trainer.optimizer.param_groups[0]["lr"] < 0.01 * (1 / trainer.num_epochs) ** 0.9 * 1.01
    assert "epochs of 10 iterations fit" in trainer.log[0]


def test_a_long_budget_never_runs_more_than_configured(tmp_path):
    trainer = _trainer(3600.0, tmp_path)
    trainer.on_train_start()
    assert trainer.num_epochs == 40
    assert json.loads((tmp_path / SCHEDULE_FILE).read_text())["epochs_that_fit"] > 40


def test_resume_keeps_the_fitted_schedule_and_another_budget_fits_again(tmp_path):
    first = _trainer(1.0, tmp_path)
    first.on_train_start()
    (tmp_path / SCHEDULE_FILE).write_text(json.dumps({**json.loads((tmp_path / SCHEDULE_FILE).read_text()),
                                                      "epochs": 7}))
    resumed = _trainer(1.0, tmp_path, current_epoch=3)
    resumed.on_train_start()
    assert resumed.num_epochs == 7 and resumed.steps == 0 and resumed.lr_scheduler.max_steps == 7
    other = _trainer(3600.0, tmp_path, current_epoch=3)
    other.on_train_start()
    assert other.num_epochs == 40 and other.steps == 3


def test_iterations_for_next_epoch():
    # 100 s left for 4 epochs: 25 s each, 5 s of them validation: 20 s of 0.5 s iterations
    assert iterations_for_next_epoch(300, 200, 4, 0.5, 5.0, 50) == 40
    assert iterations_for_next_epoch(300, 200, 4, 0.5, 5.0, 30) == 30  # never more than configured
    assert iterations_for_next_epoch(300, 400, 4, 0.5, 5.0, 50) == 1  # over budget: one iteration per epoch


def test_iterations_fitted_every_epoch_keep_the_budget_and_the_epochs(tmp_path):
    # configured: 10 epochs of 10 iterations of 20 ms (+ 5 ms per epoch) = 2.05 s; budget 1.2 s
    trainer = _trainer(1.2, tmp_path, fits="iterations", epochs=10)
    started = time.perf_counter()
    trainer.run_training()
    took = time.perf_counter() - started
    record = json.loads((tmp_path / SCHEDULE_FILE).read_text())
    assert trainer.current_epoch == 10 and trainer.lr_scheduler.max_steps == 10  # epochs and schedule as configured
    assert record["iterations"][0] == 10 and max(record["iterations"]) == 10 and sum(record["iterations"]) < 70
    assert trainer.steps == sum(record["iterations"])
    assert 0.9 < took < 1.5 and record["elapsed_s"] == pytest.approx(took, abs=0.05)
    assert "training iterations in 10 epochs" in trainer.log[-1]


def test_iterations_unchanged_where_they_fit_and_resume_counts_the_time_spent(tmp_path):
    roomy = _trainer(60.0, tmp_path / "roomy", fits="iterations", epochs=5)
    roomy.run_training()
    assert roomy.steps == 50
    trainer = _trainer(1.2, tmp_path, fits="iterations", epochs=10)
    trainer.run_training()
    record = json.loads((tmp_path / SCHEDULE_FILE).read_text())
    spent = {**record, "elapsed_s": 1.2, "iterations": record["iterations"][:5]}
    (tmp_path / SCHEDULE_FILE).write_text(json.dumps(spent))
    resumed = _trainer(1.2, tmp_path, fits="iterations", epochs=10, current_epoch=5)
    resumed.run_training()  # the budget is spent: the 5 epochs left run their first epoch as configured, then 1 each
    assert json.loads((tmp_path / SCHEDULE_FILE).read_text())["iterations"][5:] == [10, 1, 1, 1, 1]


def test_the_environment_variable_overrides_the_class_budget(tmp_path, monkeypatch):
    class FromEnvironment(TimeBudget, _FakeTrainer):
        time_budget_s, budget_variable, epoch_overhead_s = None, "SPINE_TEST_BUDGET_S", 0.0

    assert FromEnvironment(tmp_path).budget_s() is None
    monkeypatch.setenv("SPINE_TEST_BUDGET_S", "1")
    trainer = FromEnvironment(tmp_path)
    trainer.on_train_start()
    assert trainer.budget_s() == 1.0 and trainer.num_epochs < 40


def test_recipe_budgets_keep_the_training_targets():
    """The recipe's trainers are budgeted (cross-validation of 2 folds): the loops' budgets plus each fold's measured
    start and final-validation cost (stage 1 about 200 s, stage 2 about 45 s on a slow VM) stay inside 75 min
    (multiclass M_MC) and 45 min (binary M_SC)."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext.training import variants

    for coarse, fine, target_min in ((variants.nnUNetTrainerSpineCoarseCpu, variants.nnUNetTrainerSpineFineCpu, 75),
                                     (variants.nnUNetTrainerSpineCoarseBinaryCpu,
                                      variants.nnUNetTrainerSpineFineBinaryCpu, 45)):
        for trainer in (coarse, fine):
            assert trainer.__mro__.index(TimeBudget) < trainer.__mro__.index(nnUNetTrainer)
            assert trainer.time_budget_s is not None and trainer.budget_fits == "iterations"
        for budget in (lambda trainer: trainer.time_budget_s,
                       lambda trainer: trainer.time_budget_bfloat16_s or trainer.time_budget_s):
            assert 2 * (budget(coarse) + 200) + 2 * (budget(fine) + 45) <= target_min * 60 - 100
    assert variants.nnUNetTrainerSpineFineDemo.time_budget_s is None  # the demo and phantom variants: epochs only


@pytest.mark.parametrize("bfloat16", [False, True])
def test_the_recipe_trains_longer_where_it_trains_in_bfloat16(monkeypatch, bfloat16):
    """A float32-only CPU trains and predicts at 1.6-2.7x the cost: the recipe's budgets are chosen by the precision
    (stage 2's smaller there, so that the whole pipeline keeps its wall time; stage 1's larger, as it names the
    levels); the binary recipe has one budget; the environment variable still wins."""
    pytest.importorskip("nnunetv2")
    from types import SimpleNamespace

    from nnunet_ext.plans import record_cpu_precision
    from nnunet_ext.training import variants

    def budget(cls):
        trainer = object.__new__(cls)  # the budget reads only class attributes and what initialize() recorded
        configuration: dict = {}
        record_cpu_precision(configuration, "bfloat16" if bfloat16 else "float32")
        trainer.configuration_manager = SimpleNamespace(configuration=configuration)
        return trainer.budget_s()

    coarse, fine = variants.nnUNetTrainerSpineCoarseCpu, variants.nnUNetTrainerSpineFineCpu
    expected = (coarse.time_budget_bfloat16_s, fine.time_budget_bfloat16_s) if bfloat16 else (
        coarse.time_budget_s, fine.time_budget_s)
    assert (budget(coarse), budget(fine)) == expected
    assert fine.time_budget_bfloat16_s > fine.time_budget_s
    # stage 1's float32 budget (840 s) is the larger since the twenty-first session: in bfloat16 650 s hold its whole
    # schedule (1600 x 0.36 s + 40 x 1.3 s), in float32 840 s hold 92-93 % of it (docs/benchmarks.md)
    assert coarse.time_budget_s > coarse.time_budget_bfloat16_s
    binary = variants.nnUNetTrainerSpineFineBinaryCpu
    assert budget(binary) == binary.time_budget_s
    monkeypatch.setattr(fine, "budget_variable", "SPINE_TEST_BUDGET_S", raising=False)
    monkeypatch.setenv("SPINE_TEST_BUDGET_S", "77")
    assert budget(fine) == 77.0
