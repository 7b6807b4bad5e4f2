"""A wall-time budget for an nnU-Net trainer's schedule: no more training than configured, no longer than the budget.

:class:`TimeBudget` is a mixin placed before ``nnUNetTrainer`` in a trainer's bases. With a budget set
(:attr:`TimeBudget.time_budget_s`, or the environment variable named by :attr:`TimeBudget.budget_variable`; seconds
of training from the start of ``on_train_start``, nnU-Net's final validation not included), it shortens either

* ``"iterations"`` (:attr:`TimeBudget.budget_fits`): each epoch's training iterations, refitted after every epoch from
  the epochs so far (their seconds per training iteration and the rest of an epoch: validation, logging, checkpoints)
  so that the epochs left share what is left of the budget; never more than configured per epoch. The number of
  epochs and the learning-rate schedule stay as configured, and where the configured iterations fit nothing changes.
* ``"epochs"``: the number of epochs, fitted once when training starts from a few timed training iterations (real
  training steps, at the initial learning rate), with the polynomial learning-rate decay ending at the last epoch;
  never more than configured (for schedules with nnU-Net's 1000 epochs, where fewer iterations per epoch would leave
  mostly validation).

What was fitted is kept in ``time_budget.json`` beside the checkpoints, so that ``--c`` resumes with the same schedule
and the time already spent (a fresh start, or another budget, fits again). Without a budget nothing changes.
"""

from __future__ import annotations

import json
import math
import os
import statistics
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


def iterations_for_next_epoch(budget_s: float, elapsed_s: float, epochs_left: int, iteration_s: float,
                              epoch_rest_s: float, most: int) -> int:
    """Training iterations for the next epoch so that ``epochs_left`` epochs share what is left of ``budget_s`` (s)
    after ``elapsed_s`` (s), at ``iteration_s`` (s) per training iteration and ``epoch_rest_s`` (s) per epoch besides
    them; between 1 and ``most``."""
    share = (budget_s - elapsed_s) / max(1, epochs_left) - epoch_rest_s
    return int(min(most, max(1, math.floor(share / iteration_s))))


class TimeBudget:
    """Mixin for nnU-Net trainers (before ``nnUNetTrainer`` in the bases): the schedule fitted to a wall-time budget."""

    time_budget_s: float | None = None
    """Seconds of training (s); None: the configured schedule, no budget."""
    budget_variable: str | None = None
    """An environment variable that, where set, overrides :attr:`time_budget_s` (s)."""
    budget_fits: str = "epochs"
    """What the budget shortens: ``"iterations"`` (per epoch, refitted every epoch) or ``"epochs"`` (fitted once)."""
    calibration_iterations: int = 6
    """``"epochs"``: training iterations timed to fit the schedule (the median of all but the first, which warms the
    loaders up)."""
    epoch_overhead_s: float = 1.0
    """``"epochs"``: seconds (s) per epoch besides the iterations: nnU-Net's logging, progress plot, checkpoints."""

    def budget_s(self) -> float | None:
        """The budget in seconds (s) this training runs under, or None: the environment variable's where set, else
        :meth:`configured_budget_s`."""
        if self.budget_variable and os.environ.get(self.budget_variable):
            return float(os.environ[self.budget_variable])
        return self.configured_budget_s()

    def configured_budget_s(self) -> float | None:
        """The class's budget in seconds (s), or None (a trainer may choose it by what it runs on)."""
        return None if self.time_budget_s is None else float(self.time_budget_s)

    def on_train_start(self) -> None:
        self._budget_started = perf_counter()
        self._budget = None
        super().on_train_start()
        budget = self.budget_s()
        if budget is None:
            return
        if self.budget_fits not in ("epochs", "iterations"):
            raise ValueError(f"{type(self).__name__}.budget_fits must be 'epochs' or 'iterations', "
                             f"not {self.budget_fits!r}")
        record = Path(self.output_folder) / SCHEDULE_FILE
        fitted = json.loads(record.read_text()) if record.is_file() else {}
        resumed = (self.current_epoch > 0 and fitted.get("budget_s") == budget
                   and fitted.get("fits", "epochs") == self.budget_fits)
        if self.budget_fits == "iterations":
            self._budget = {"budget_s": budget, "fits": "iterations", "elapsed_s": 0.0, "training_s": 0.0,
                            "rest_s": 0.0, "most_iterations": self.num_iterations_per_epoch, "iterations": []}
            if resumed:  # --c: the time already spent counts
                self._budget.update({k: fitted[k] for k in ("elapsed_s", "training_s", "rest_s", "iterations")})
                self._budget_started -= fitted["elapsed_s"]
            self._budget_record = record
            return
        if resumed:  # --c: keep the fitted schedule
            self.num_epochs = int(fitted["epochs"])
        else:  # a fresh start (or another budget) fits again
            self.num_epochs = self._fit_schedule(record, budget, self._budget_started)
        stretch_poly_schedule(self.lr_scheduler, self.num_epochs)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._epoch_started = perf_counter()

    def on_train_epoch_end(self, train_outputs) -> None:
        self._epoch_trained = perf_counter()
        super().on_train_epoch_end(train_outputs)

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        if getattr(self, "_budget", None) is None:
            return
        fitted, now = self._budget, perf_counter()
        fitted["iterations"].append(self.num_iterations_per_epoch)
        fitted["training_s"] += self._epoch_trained - self._epoch_started
        fitted["rest_s"] += now - self._epoch_trained
        fitted["elapsed_s"] = now - self._budget_started
        epochs_done = len(fitted["iterations"])
        if self.current_epoch < self.num_epochs:
            self.num_iterations_per_epoch = iterations_for_next_epoch(
                fitted["budget_s"], fitted["elapsed_s"], self.num_epochs - self.current_epoch,
                fitted["training_s"] / sum(fitted["iterations"]), fitted["rest_s"] / epochs_done,
                fitted["most_iterations"])
        else:
            self.print_to_log_file(f"time budget {fitted['budget_s']:.0f} s: {sum(fitted['iterations'])} training "
                                   f"iterations in {epochs_done} epochs here (configured: "
                                   f"{fitted['most_iterations'] * epochs_done}), {fitted['elapsed_s']:.0f} s")
        atomic_write_text(self._budget_record, json.dumps(fitted, indent=1) + "\n")

    def _fit_schedule(self, record: Path, budget: float, started: float) -> int:
        configured = self.num_epochs
        self.network.train()
        times = []
        for _ in range(self.calibration_iterations):
            tick = perf_counter()
            self.train_step(next(self.dataloader_train))
            times.append(perf_counter() - tick)
        per_iteration = statistics.median(times[1:] or times)
        fits = fitted_epochs(budget, perf_counter() - started, per_iteration, self.num_iterations_per_epoch,
                             self.num_val_iterations_per_epoch, epoch_overhead_s=self.epoch_overhead_s)
        epochs = min(configured, fits)
        atomic_write_text(record, json.dumps({
            "budget_s": budget, "fits": "epochs", "seconds_per_iteration": per_iteration, "epochs": epochs,
            "configured_epochs": configured, "epochs_that_fit": fits,
            "iterations_per_epoch": self.num_iterations_per_epoch,
            "calibration_iterations": self.calibration_iterations}, indent=1) + "\n")
        self.print_to_log_file(f"time budget {budget:.0f} s: {per_iteration:.2f} s per iteration, {fits} epochs of "
                               f"{self.num_iterations_per_epoch} iterations fit, {epochs} run "
                               f"(configured: {configured})")
        return epochs
