"""A wall-time budget for an nnU-Net trainer's schedule: as many epochs as fit, never more than configured.

:class:`TimeBudget` is a mixin placed before ``nnUNetTrainer`` in a trainer's bases. With a budget set
(:attr:`TimeBudget.time_budget_s`, or the environment variable named by :attr:`TimeBudget.budget_variable`), the
number of epochs is fitted once, when training starts: a few training iterations are timed (they are real training
steps, at the initial learning rate), what is left of the budget is divided by the estimated epoch time, and the
schedule ends at ``min(configured epochs, what fits)``, with the polynomial learning-rate decay ending at the last
epoch. The result is kept in ``time_budget.json`` beside the checkpoints, so that ``--c`` resumes with the same
schedule (a fresh start, or another budget, fits again). The budget counts seconds of training from the start of
``on_train_start`` (data loaders, the timed iterations and every epoch); nnU-Net's final validation is not included.
Without a budget nothing changes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from time import perf_counter

from measure.outputs import atomic_write_text
from nnunet_ext.compat import stretch_poly_schedule

SCHEDULE_FILE = "time_budget.json"


def fitted_epochs(budget_s: float, elapsed_s: float, train_iteration_s: float, train_iterations: int,
                  val_iterations: int, val_cost: float = 0.4, epoch_overhead_s: float = 0.0) -> int:
    """Epochs that fit in what is left of ``budget_s`` (s) after ``elapsed_s`` (s), at ``train_iteration_s`` (s) per
    training iteration, a validation iteration costing ``val_cost`` of a training one (forward only) and
    ``epoch_overhead_s`` (s) per epoch for nnU-Net's logging, progress plot and checkpoints; at least 1."""
    epoch_s = train_iteration_s * (train_iterations + val_cost * val_iterations) + epoch_overhead_s
    return max(1, math.floor((budget_s - elapsed_s) / epoch_s))


class TimeBudget:
    """Mixin for nnU-Net trainers (before ``nnUNetTrainer`` in the bases): the schedule fitted to a wall-time budget."""

    time_budget_s: float | None = None
    """Seconds of training (s); None: the configured epochs, no budget."""
    budget_variable: str | None = None
    """An environment variable that, where set, overrides :attr:`time_budget_s` (s)."""
    calibration_iterations: int = 4
    """Training iterations timed to fit the schedule (the first one, which warms the loaders up, is not counted)."""
    epoch_overhead_s: float = 1.0
    """Seconds (s) per epoch besides the iterations: nnU-Net's logging, progress plot and checkpoint saving."""

    def budget_s(self) -> float | None:
        """The budget in seconds (s) this training runs under, or None."""
        if self.budget_variable and os.environ.get(self.budget_variable):
            return float(os.environ[self.budget_variable])
        return None if self.time_budget_s is None else float(self.time_budget_s)

    def on_train_start(self) -> None:
        started = perf_counter()
        super().on_train_start()
        budget = self.budget_s()
        if budget is None:
            return
        record = Path(self.output_folder) / SCHEDULE_FILE
        fitted = json.loads(record.read_text()) if record.is_file() else {}
        if self.current_epoch > 0 and fitted.get("budget_s") == budget:  # --c: keep the fitted schedule
            self.num_epochs = int(fitted["epochs"])
        else:  # a fresh start (or another budget) fits again
            self.num_epochs = self._fit_schedule(record, budget, started)
        stretch_poly_schedule(self.lr_scheduler, self.num_epochs)

    def _fit_schedule(self, record: Path, budget: float, started: float) -> int:
        configured = self.num_epochs
        self.network.train()
        times = []
        for _ in range(self.calibration_iterations):
            tick = perf_counter()
            self.train_step(next(self.dataloader_train))
            times.append(perf_counter() - tick)
        per_iteration = sum(times[1:]) / max(1, len(times) - 1)
        fits = fitted_epochs(budget, perf_counter() - started, per_iteration, self.num_iterations_per_epoch,
                             self.num_val_iterations_per_epoch, epoch_overhead_s=self.epoch_overhead_s)
        epochs = min(configured, fits)
        atomic_write_text(record, json.dumps({
            "budget_s": budget, "seconds_per_iteration": per_iteration, "epochs": epochs,
            "configured_epochs": configured, "epochs_that_fit": fits,
            "iterations_per_epoch": self.num_iterations_per_epoch,
            "calibration_iterations": self.calibration_iterations}, indent=1) + "\n")
        self.print_to_log_file(f"time budget {budget:.0f} s: {per_iteration:.2f} s per iteration, {fits} epochs of "
                               f"{self.num_iterations_per_epoch} iterations fit, {epochs} run "
                               f"(configured: {configured})")
        return epochs
