"""nnU-Net's own trainer with a schedule fitted to a wall-time budget, for comparisons at equal training time.

:class:`nnUNetTrainerTimeBudget` is ``nnUNetTrainer`` (its loss, optimiser, augmentation, network from the plans) with
nothing changed but the schedule: epochs of 50 training and 10 validation iterations (nnU-Net: 250 and 50, the same
1:5 ratio), and as many epochs as fit the budget (:class:`~nnunet_ext.training.time_budget.TimeBudget`), with the
polynomial learning-rate decay ending at the last one. The budget (seconds of training, nnU-Net's final validation
not included) is :attr:`time_budget_s` or the environment variable ``SPINE_TIME_BUDGET_S``.
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ext.training.time_budget import TimeBudget
from nnunet_ext.training.trainers import _NNUNET_DEFAULT_DEVICE

BUDGET_VARIABLE = "SPINE_TIME_BUDGET_S"


class nnUNetTrainerTimeBudget(TimeBudget, nnUNetTrainer):  # noqa: N801 - nnU-Net's naming convention
    iterations_per_epoch: int = 50
    val_iterations_per_epoch: int = 10
    time_budget_s: float = 2852.0
    """Default: the CPU recipe's training wall time per fold on 2 cores (docs/benchmarks.md)."""
    budget_variable = BUDGET_VARIABLE

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _NNUNET_DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = self.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.val_iterations_per_epoch
