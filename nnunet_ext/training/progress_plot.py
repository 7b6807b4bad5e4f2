"""Fewer drawings of nnU-Net's ``progress.png``: a mixin placed before ``nnUNetTrainer`` in a trainer's bases.

nnU-Net redraws the progress plot (losses, pseudo Dice, learning rate, epoch times) after every epoch. On 2 CPU cores
one drawing costs 1.2-1.6 s (matplotlib, three panels; measured on 42 epochs of log), a tenth of a short stage-1 epoch
of the CPU recipe, time that a wall-time budget (:mod:`.time_budget`) then takes from training. With
:attr:`ProgressPlots.progress_plot_every` > 1 the plot is drawn every that many epochs and after the last one; the
log, the checkpoints and everything else of the epoch's end stay as nnU-Net does them.
"""

from __future__ import annotations

from nnunet_ext.compat import progress_plot_skipped


def plots_progress(epoch: int, epochs: int, every: int) -> bool:
    """Whether the end of ``epoch`` (0-based, of ``epochs``) draws the progress plot when it is drawn ``every``
    epochs: each ``every``-th epoch and the last."""
    return every <= 1 or (epoch + 1) % every == 0 or epoch + 1 >= epochs


class ProgressPlots:
    progress_plot_every: int = 1
    """Draw ``progress.png`` every this many epochs and after the last (1: every epoch, as nnU-Net)."""

    def on_epoch_end(self) -> None:
        if plots_progress(self.current_epoch, self.num_epochs, self.progress_plot_every):
            super().on_epoch_end()
            return
        with progress_plot_skipped(self):
            super().on_epoch_end()
