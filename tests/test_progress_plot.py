"""nnU-Net's progress plot every N epochs and after the last (nnunet_ext/training/progress_plot.py): the rest of
the epoch's end unchanged, the logger's own drawing back afterwards."""

from __future__ import annotations

import pytest

from nnunet_ext.training.progress_plot import ProgressPlots, plots_progress


def test_plots_every_nth_epoch_and_the_last():
    assert [e for e in range(25) if plots_progress(e, 25, 10)] == [9, 19, 24]
    assert all(plots_progress(e, 25, 1) for e in range(25))
    assert all(plots_progress(e, 3, 0) for e in range(3))


class _Logger:
    def __init__(self) -> None:
        self.drawn: list[str] = []

    def plot_progress_png(self, output_folder: str) -> None:
        self.drawn.append(output_folder)


class _Trainer:
    """nnU-Net's ``on_epoch_end`` in the shape ProgressPlots relies on (tests/test_compat.py checks the real one)."""

    def __init__(self, epochs: int) -> None:
        self.num_epochs, self.current_epoch, self.output_folder = epochs, 0, "out"
        self.logger, self.checkpoints = _Logger(), 0

    def on_epoch_end(self) -> None:
        self.checkpoints += 1
        self.logger.plot_progress_png(self.output_folder)
        self.current_epoch += 1


def test_the_epochs_end_skips_only_the_drawing():
    pytest.importorskip("nnunetv2")  # the mute lives in nnunet_ext.compat

    class Trainer(ProgressPlots, _Trainer):
        progress_plot_every = 10

    trainer = Trainer(25)
    drawn_at = []
    for _ in range(25):
        before = len(trainer.logger.drawn)
        trainer.on_epoch_end()
        if len(trainer.logger.drawn) > before:
            drawn_at.append(trainer.current_epoch - 1)
        assert "plot_progress_png" not in vars(trainer.logger)  # the logger's own method is back
    assert drawn_at == [9, 19, 24] and trainer.checkpoints == 25 and trainer.current_epoch == 25


def test_by_default_every_epoch_is_drawn_as_nnunet_does():
    class Trainer(ProgressPlots, _Trainer):
        pass

    trainer = Trainer(3)
    for _ in range(3):
        trainer.on_epoch_end()
    assert len(trainer.logger.drawn) == 3


def test_the_recipe_and_the_demo_draw_every_tenth_epoch():
    pytest.importorskip("nnunetv2")
    from nnunet_ext.training import variants

    for name in ("CoarseCpu", "FineCpu", "CoarseBinaryCpu", "FineBinaryCpu", "CoarseDemo", "FineDemo"):
        trainer = getattr(variants, f"nnUNetTrainerSpine{name}")
        assert issubclass(trainer, ProgressPlots) and trainer.progress_plot_every == 10, name
