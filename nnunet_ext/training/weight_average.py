"""An exponential moving average of a network's weights during training: a mixin placed before ``nnUNetTrainer``.

With :attr:`WeightAverage.weight_average_decay` set (``d`` in (0, 1)), every training step ``t`` (0, 1, ...) of the
epochs' loop is followed by ``average = d_t * average + (1 - d_t) * weights`` over the network's floating-point state
(parameters and buffers, in float32), with the usual warm-up ``d_t = min(d, (1 + t) / (10 + t))`` (:func:`step_decay`)
so that the weights training starts with fade out within a few dozen steps even in a short schedule; when training
ends the average becomes the network's weights: ``checkpoint_final.pth`` (what ``spine-predict`` and
``nnUNetv2_predict`` load) and nnU-Net's final validation hold it (``--val_best`` validates ``checkpoint_best.pth``,
which, like the per-epoch pseudo Dice, sees the weights as trained). ``1 / (1 - d)`` is about the number of last
steps it averages over (0.997: the last 330 or so).

``checkpoint_latest.pth`` keeps the trained weights (``--c`` resumes training from them); the average at that point is
saved beside it in :data:`AVERAGE_FILE`, tagged with the checkpoint's epoch, and read back on ``--c`` only where the
epochs agree (otherwise, or without the file, the average restarts from the resumed weights, which the log says).
Without a decay nothing changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from measure.outputs import atomic_write
from nnunet_ext.compat import trained_module

AVERAGE_FILE = "weight_average_latest.pth"
"""The average's state beside ``checkpoint_latest.pth`` (removed when training ends)."""


def step_decay(decay: float, step: int) -> float:
    """The decay applied after training step ``step`` (0-based): ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1.0 + step) / (10.0 + step))


def start_average(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached float32 copy of a state dict's floating-point tensors (the others are copied as they are), on the
    tensors' devices."""
    return {name: (value.detach().float().clone() if value.is_floating_point() else value.detach().clone())
            for name, value in state.items()}


@torch.no_grad()
def update_average(average: dict[str, torch.Tensor], state: Mapping[str, torch.Tensor], decay: float) -> None:
    """In place: each floating-point entry of ``average`` becomes ``decay * average + (1 - decay) * state``; other
    entries (integer counters) take the state's value. Raises on a missing or misshapen entry."""
    if average.keys() != state.keys():
        differing = sorted(set(average) ^ set(state))
        raise KeyError(f"the averaged weights and the network's differ in {differing[:5]}")
    for name, value in state.items():
        target = average[name]
        if target.shape != value.shape:
            raise ValueError(f"{name}: averaged shape {tuple(target.shape)}, network {tuple(value.shape)}")
        if target.is_floating_point():
            target.lerp_(value.detach().to(target.dtype), 1.0 - decay)
        else:
            target.copy_(value)


def check_decay(decay: float, owner: str) -> float:
    """``decay`` as a float in (0, 1), or a ValueError naming ``owner``'s attribute."""
    value = float(decay)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{owner}.weight_average_decay must lie between 0 and 1 (exclusive), not {decay!r}")
    return value


def resumed_average(saved: Path, epoch: int, state: Mapping[str, torch.Tensor]) -> tuple[dict, int] | None:
    """The average and its step count from ``saved`` if it was written with the checkpoint of ``epoch`` (the epoch a
    run continued with ``--c`` starts at), on the devices of ``state`` (the resumed network's, whose names and shapes
    it must have); None where the file is missing or belongs to another checkpoint."""
    try:
        record = torch.load(saved, map_location="cpu", weights_only=True)
    except FileNotFoundError:  # none, or (DDP) rank 0 removed another checkpoint's meanwhile
        return None
    if record.get("epoch") != epoch:
        return None
    average = {name: value.to(state[name].device) if name in state else value
               for name, value in start_average(record["average"]).items()}
    update_average(average, state, 1.0)  # checks names and shapes, keeps the saved values
    return average, int(record["steps"])


class WeightAverage:
    """Mixin for nnU-Net trainers (before ``nnUNetTrainer`` in the bases): an exponential moving average of the
    network's weights, which training ends with."""

    weight_average_decay: float | None = None
    """The average's decay per training step (None: no average, the weights as trained)."""
    _average: dict[str, torch.Tensor] | None = None  # while training with a decay

    def on_train_start(self) -> None:
        self._average = None
        decay = None if self.weight_average_decay is None else check_decay(self.weight_average_decay,
                                                                           type(self).__name__)
        super().on_train_start()
        if decay is None:
            return
        self._average_decay = decay
        saved = Path(self.output_folder) / AVERAGE_FILE
        state = trained_module(self).state_dict()
        resumed = resumed_average(saved, self.current_epoch, state) if self.current_epoch > 0 else None
        if resumed is not None:  # --c
            self._average, self._average_steps = resumed
            self.print_to_log_file(f"weight average (decay {decay}) read from {saved.name}")
            return
        self._average, self._average_steps = start_average(state), 0
        if self.local_rank == 0:
            saved.unlink(missing_ok=True)  # another run's, or another checkpoint's
        self.print_to_log_file(f"weight average (decay {decay}) started from the "
                               f"{'resumed' if self.current_epoch > 0 else 'initial'} weights")

    def train_step(self, batch: dict) -> dict:
        outputs = super().train_step(batch)
        if self._average is not None:
            update_average(self._average, trained_module(self).state_dict(),
                           step_decay(self._average_decay, self._average_steps))
            self._average_steps += 1
        return outputs

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        if (self._average is None or self.local_rank != 0
                or getattr(self, "disable_checkpointing", False) or Path(filename).name != "checkpoint_latest.pth"):
            return
        record = {"epoch": self.current_epoch + 1, "steps": self._average_steps,  # nnU-Net's epoch in the checkpoint
                  "average": {name: value.cpu() for name, value in self._average.items()}}
        atomic_write(Path(filename).with_name(AVERAGE_FILE), lambda path: torch.save(record, path))

    def on_train_end(self) -> None:
        if self._average is not None:
            module = trained_module(self)
            current = module.state_dict()
            module.load_state_dict({name: value.to(current[name].dtype) for name, value in self._average.items()})
            self.print_to_log_file(f"weight average (decay {self._average_decay}, {self._average_steps} steps): the "
                                   "network now holds it for checkpoint_final.pth and the final validation")
            self._average = None
        super().on_train_end()
        if self.local_rank == 0:
            (Path(self.output_folder) / AVERAGE_FILE).unlink(missing_ok=True)
