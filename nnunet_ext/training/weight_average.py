"""An exponential moving average of a network's weights during training: a mixin placed before ``nnUNetTrainer``.

With :attr:`WeightAverage.weight_average_decay` set (``d`` in (0, 1)), every training step is followed by
``average = d * average + (1 - d) * weights`` over the network's floating-point state (parameters and buffers; the
average starts from the weights training starts with), and when training ends the average becomes the network's
weights: ``checkpoint_final.pth`` (what ``spine-predict`` and ``nnUNetv2_predict`` load) and nnU-Net's final
validation hold it. ``1 / (1 - d)`` is about the number of last steps it averages over (0.997: the last 330 or so).
The per-epoch validation (pseudo Dice, ``checkpoint_best.pth``) still sees the weights as trained.

``checkpoint_latest.pth`` keeps the trained weights (``--c`` resumes training from them); the average at that point is
saved beside it in :data:`AVERAGE_FILE` and read back on ``--c`` (without it the average restarts from the resumed
weights, which the log says). Without a decay nothing changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from nnunet_ext.compat import trained_module

AVERAGE_FILE = "weight_average_latest.pth"
"""The average's state beside ``checkpoint_latest.pth`` (removed when training ends)."""


def start_average(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached float32 copy of a state dict's floating-point tensors (the others are copied as they are)."""
    return {name: (value.detach().float().clone() if value.is_floating_point() else value.detach().clone())
            for name, value in state.items()}


@torch.no_grad()
def update_average(average: dict[str, torch.Tensor], state: Mapping[str, torch.Tensor], decay: float) -> None:
    """In place: each floating-point entry of ``average`` becomes ``decay * average + (1 - decay) * state``; other
    entries (integer counters) take the state's value. Raises on a missing or misshapen entry."""
    if set(average) != set(state):
        missing = sorted(set(average) ^ set(state))
        raise KeyError(f"the averaged weights and the network's differ in {missing[:5]}")
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


class WeightAverage:
    """Mixin for nnU-Net trainers (before ``nnUNetTrainer`` in the bases): an exponential moving average of the
    network's weights, which training ends with."""

    weight_average_decay: float | None = None
    """The average's decay per training step (None: no average, the weights as trained)."""

    def on_train_start(self) -> None:
        super().on_train_start()
        self._average = None
        if self.weight_average_decay is None:
            return
        self._average_decay = check_decay(self.weight_average_decay, type(self).__name__)
        saved = Path(self.output_folder) / AVERAGE_FILE
        state = trained_module(self).state_dict()
        if self.current_epoch > 0 and saved.is_file():  # --c
            self._average = start_average(torch.load(saved, map_location="cpu", weights_only=True))
            update_average(self._average, state, 1.0)  # checks names and shapes, keeps the saved values
            self.print_to_log_file(f"weight average (decay {self._average_decay}) read from {saved.name}")
        else:
            self._average = start_average(state)
            self.print_to_log_file(f"weight average (decay {self._average_decay}) started from the "
                                   f"{'resumed' if self.current_epoch > 0 else 'initial'} weights")

    def train_step(self, batch: dict) -> dict:
        outputs = super().train_step(batch)
        if getattr(self, "_average", None) is not None:
            update_average(self._average, trained_module(self).state_dict(), self._average_decay)
        return outputs

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        if (getattr(self, "_average", None) is not None and self.local_rank == 0
                and Path(filename).name == "checkpoint_latest.pth"):
            torch.save(self._average, Path(filename).with_name(AVERAGE_FILE))

    def on_train_end(self) -> None:
        if getattr(self, "_average", None) is not None:
            module = trained_module(self)
            current = module.state_dict()
            module.load_state_dict({name: value.to(current[name].dtype) for name, value in self._average.items()})
            self.print_to_log_file(f"weight average (decay {self._average_decay}): the network now holds it for "
                                   "checkpoint_final.pth and the final validation")
            self._average = None
        super().on_train_end()
        saved = Path(self.output_folder) / AVERAGE_FILE
        if self.local_rank == 0 and saved.is_file():
            saved.unlink()
