"""nnU-Net's own trainer with a schedule fitted to a wall-time budget, for comparisons at equal training time.

:class:`nnUNetTrainerTimeBudget` is ``nnUNetTrainer`` (its loss, optimiser, augmentation, network from the plans) with
nothing changed but the schedule: epochs of 50 training and 10 validation iterations (nnU-Net: 250 and 50, the same
1:5 ratio), and as many epochs as fit the budget, with the polynomial learning-rate decay ending at the last one.
The number of epochs is fitted once, when training starts: a few training iterations are timed (they are real
training steps, at the initial learning rate), the rest of the budget is divided by the estimated epoch time, and the
result is kept in ``time_budget.json`` beside the checkpoints so that ``--c`` resumes with the same schedule (a
fresh start, or another budget, fits again). The
budget (seconds of training, nnU-Net's final validation not included) is :attr:`time_budget_s` or the environment
variable ``SPINE_TIME_BUDGET_S``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from time import perf_counter

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from measure.outputs import atomic_write_text
from nnunet_ext.compat import stretch_poly_schedule
from nnunet_ext.training.trainers import _NNUNET_DEFAULT_DEVICE

BUDGET_VARIABLE = "SPINE_TIME_BUDGET_S"
SCHEDULE_FILE = "time_budget.json"


def fitted_epochs(budget_s: float, elapsed_s: float, train_iteration_s: float, train_iterations: int,
                  val_iterations: int, val_cost: float = 0.4) -> int:
    """Epochs that fit in what is left of ``budget_s`` (s) after ``elapsed_s`` (s), at ``train_iteration_s`` (s) per
    training iteration, a validation iteration costing ``val_cost`` of a training one (forward only); at least 1."""
    epoch_s = train_iteration_s * (train_iterations + val_cost * val_iterations)
    return max(1, math.floor((budget_s - elapsed_s) / epoch_s))


class nnUNetTrainerTimeBudget(nnUNetTrainer):  # noqa: N801 - nnU-Net's naming convention
    iterations_per_epoch: int = 50
    val_iterations_per_epoch: int = 10
    time_budget_s: float = 2852.0
    """Default: the CPU recipe's training wall time per fold on 2 cores (docs/benchmarks.md)."""
    calibration_iterations: int = 4
    """Training iterations timed to fit the schedule (the first one, which warms the loaders up, is not counted)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _NNUNET_DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = self.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.val_iterations_per_epoch
        self.budget_s = float(os.environ.get(BUDGET_VARIABLE, self.time_budget_s))
        self._clock_start = perf_counter()

    def on_train_start(self) -> None:
        super().on_train_start()
        record = Path(self.output_folder) / SCHEDULE_FILE
        fitted = json.loads(record.read_text()) if record.is_file() else {}
        if self.current_epoch > 0 and fitted.get("budget_s") == self.budget_s:  # --c: keep the fitted schedule
            self.num_epochs = int(fitted["epochs"])
        else:  # a fresh start (or another budget) fits again
            self.num_epochs = self._fit_schedule(record)
        stretch_poly_schedule(self.lr_scheduler, self.num_epochs)

    def _fit_schedule(self, record: Path) -> int:
        self.network.train()
        times = []
        for _ in range(self.calibration_iterations):
            tick = perf_counter()
            self.train_step(next(self.dataloader_train))
            times.append(perf_counter() - tick)
        per_iteration = sum(times[1:]) / max(1, len(times) - 1)
        epochs = fitted_epochs(self.budget_s, perf_counter() - self._clock_start, per_iteration,
                               self.num_iterations_per_epoch, self.num_val_iterations_per_epoch)
        atomic_write_text(record, json.dumps({"budget_s": self.budget_s, "seconds_per_iteration": per_iteration,
                                      "epochs": epochs, "iterations_per_epoch": self.num_iterations_per_epoch,
                                              "calibration_iterations": self.calibration_iterations}, indent=1)
                          + "\n")
        self.print_to_log_file(f"time budget {self.budget_s:.0f} s: {per_iteration:.2f} s per iteration, "
                               f"{epochs} epochs of {self.num_iterations_per_epoch} iterations")
        return epochs
