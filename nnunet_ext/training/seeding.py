"""A seed for the cascade's trainings, which nnU-Net itself does not take.

``SPINE_SEED=<int>`` in the environment of ``nnUNetv2_train`` seeds Python's, NumPy's and torch's generators before
the ``nnUNetTrainerSpine*`` trainers build their network, so the initial weights, the cases drawn and the
augmentation repeat. A whole run repeats to the bit only on the CPU, on a machine with the same number of cores
(nnU-Net gives torch one thread per core), with ``nnUNet_n_proc_DA=0`` (nnU-Net's augmentation workers otherwise
re-seed NumPy from the operating system) and without a wall-time budget (which fits the iterations to the clock);
:func:`unrepeatable_because` names what stands in the way. Each DDP rank gets a stream of its own (nnU-Net's ranks
draw their cases independently). A run continued with ``--c`` from epoch k is seeded from (seed, rank, k): it
repeats another continuation from the same checkpoint, not the uninterrupted run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping

import numpy as np

SEED_VARIABLE = "SPINE_SEED"
AUGMENTATION_WORKERS_VARIABLE = "nnUNet_n_proc_DA"


def training_seed(environ: Mapping[str, str] | None = None) -> int | None:
    """The seed that ``SPINE_SEED`` gives (None where it is unset or empty).

    Raises:
        ValueError: the value is not a whole number in 0 .. 2**32 - 1 (NumPy's range), naming the variable.
    """
    value = (os.environ if environ is None else environ).get(SEED_VARIABLE, "").strip()
    if not value:
        return None
    try:
        seed = int(value)
    except ValueError:
        raise ValueError(f"{SEED_VARIABLE}={value!r}: expected a whole number (0 .. 4294967295)") from None
    if not 0 <= seed < 2**32:
        raise ValueError(f"{SEED_VARIABLE}={value!r}: expected a whole number in 0 .. 4294967295")
    return seed


def stream_seed(seed: int, rank: int = 0, epoch: int = 0) -> int:
    """The seed of one process's random stream: ``seed`` itself for rank 0 from the start, otherwise one derived
    from (seed, rank, epoch) (NumPy's ``SeedSequence``), so that DDP ranks and continued runs draw streams of their
    own."""
    if rank == 0 and epoch == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's (CPU and every CUDA device)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def unrepeatable_because(device_type: str, time_budget_s: float | None, augmentation_processes: int) -> list[str]:
    """What keeps a seeded training on ``device_type`` ('cpu', 'cuda', ...) with the wall-time budget
    ``time_budget_s`` (s; None: none) and ``augmentation_processes`` worker processes (nnU-Net's count, 0: in the
    training process) from repeating to the bit; empty where nothing does."""
    reasons = []
    if augmentation_processes:
        reasons.append(f"{AUGMENTATION_WORKERS_VARIABLE} is not 0 (the augmentation workers re-seed NumPy from the "
                       "operating system)")
    if device_type != "cpu":
        reasons.append(f"the device is {device_type} (nnU-Net trains with cudnn.benchmark and kernels that are not "
                       "deterministic)")
    if time_budget_s is not None:
        reasons.append(f"a wall-time budget of {time_budget_s:g} s fits the iterations to the clock")
    return reasons
