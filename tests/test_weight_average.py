"""The moving average of a network's weights during training (nnunet_ext/training/weight_average.py): analytic values
over a known sequence of weights, the network ends training holding the average, --c resumes it from the file beside
checkpoint_latest.pth, nothing changes without a decay, bad decays are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

from nnunet_ext.training.weight_average import (  # noqa: E402
    AVERAGE_FILE,
    WeightAverage,
    check_decay,
    start_average,
    step_decay,
    update_average,
)


def _expected(decay: float, start: float, steps: list[float], warm_up: bool = False) -> float:
    """The average after the steps' weights w_1..w_n: d * average + (1 - d) * w_k each, d the decay or (with
    ``warm_up``) min(decay, (1 + t) / (10 + t)) at step t = 0, 1, ..."""
    average = start
    for t, value in enumerate(steps):
        d = min(decay, (1 + t) / (10 + t)) if warm_up else decay
        average = d * average + (1 - d) * value
    return average


def test_step_decay_warms_up():
    assert step_decay(0.997, 0) == pytest.approx(0.1)
    assert step_decay(0.997, 8) == pytest.approx(0.5)
    assert step_decay(0.997, 10 ** 6) == 0.997
    assert step_decay(0.5, 100) == 0.5


def test_update_average_analytic():
    state = {"w": torch.zeros(3), "b": torch.tensor([1.0]), "count": torch.tensor(0)}
    average = start_average(state)
    for step in range(1, 6):
        state = {"w": torch.full((3,), float(step)), "b": torch.tensor([1.0 - step]), "count": torch.tensor(step)}
        update_average(average, state, 0.9)
    assert torch.allclose(average["w"], torch.full((3,), _expected(0.9, 0.0, [1, 2, 3, 4, 5])), atol=1e-6)
    assert torch.allclose(average["b"], torch.tensor([_expected(0.9, 1.0, [0, -1, -2, -3, -4])]), atol=1e-6)
    assert int(average["count"]) == 5  # integer entries follow the network
    assert average["w"].dtype == torch.float32


def test_start_average_is_a_float32_copy():
    weights = torch.ones(2, dtype=torch.bfloat16)
    average = start_average({"w": weights})
    weights.add_(1)
    assert average["w"].dtype == torch.float32 and torch.equal(average["w"], torch.ones(2))


def test_update_average_refuses_other_networks():
    average = start_average({"w": torch.zeros(2)})
    with pytest.raises(KeyError, match="differ"):
        update_average(average, {"v": torch.zeros(2)}, 0.5)
    with pytest.raises(ValueError, match="w: averaged shape"):
        update_average(average, {"w": torch.zeros(3)}, 0.5)


@pytest.mark.parametrize("decay", [0, 1, -0.1, 1.5])
def test_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match="Fake.weight_average_decay must lie between 0 and 1"):
        check_decay(decay, "Fake")


class _Base:
    """What WeightAverage reads of an nnUNetTrainer: a network, a train step that sets its weight to the step's
    number, checkpoints written as nnU-Net names them, the end of training saving checkpoint_final.pth."""

    def __init__(self, folder: Path, current_epoch: int = 0) -> None:
        self.output_folder, self.current_epoch, self.local_rank, self.is_ddp = str(folder), current_epoch, 0, False
        self.network = torch.nn.Linear(1, 1, bias=False)
        self.steps, self.log = 0, []

    def on_train_start(self) -> None:
        pass

    def train_step(self, batch) -> dict:
        self.steps += 1
        with torch.no_grad():
            self.network.weight.fill_(float(batch))
        return {"loss": 0.0}

    def save_checkpoint(self, filename: str) -> None:
        torch.save({"network_weights": self.network.state_dict()}, filename)

    def on_train_end(self) -> None:
        self.save_checkpoint(str(Path(self.output_folder) / "checkpoint_final.pth"))

    def print_to_log_file(self, *args) -> None:
        self.log.append(" ".join(str(a) for a in args))


class _Trainer(WeightAverage, _Base):
    weight_average_decay = 0.8


def _final_weight(folder: Path) -> float:
    return float(torch.load(folder / "checkpoint_final.pth", weights_only=True)["network_weights"]["weight"])


def test_training_ends_with_the_average(tmp_path):
    (tmp_path / AVERAGE_FILE).write_bytes(b"another run's")  # removed at a fresh start
    trainer = _Trainer(tmp_path)
    with torch.no_grad():
        trainer.network.weight.fill_(10.0)  # the initial weights the average starts from
    trainer.on_train_start()
    assert not (tmp_path / AVERAGE_FILE).exists()
    for value in (1.0, 2.0, 3.0):
        trainer.train_step(value)
    trainer.save_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    assert torch.load(tmp_path / AVERAGE_FILE, weights_only=True)["steps"] == 3
    assert float(trainer.network.weight.detach()) == 3.0  # training itself sees its own weights
    trainer.on_train_end()
    assert _final_weight(tmp_path) == pytest.approx(_expected(0.8, 10.0, [1, 2, 3], warm_up=True))
    assert float(trainer.network.weight.detach()) == pytest.approx(_expected(0.8, 10.0, [1, 2, 3], warm_up=True))
    assert not (tmp_path / AVERAGE_FILE).exists()  # gone with checkpoint_latest.pth
    assert any("started from the initial weights" in line for line in trainer.log)


def test_continued_training_resumes_the_average(tmp_path):
    first = _Trainer(tmp_path)
    with torch.no_grad():
        first.network.weight.fill_(10.0)
    first.on_train_start()
    for value in (1.0, 2.0):
        first.train_step(value)
    first.save_checkpoint(str(tmp_path / "checkpoint_latest.pth"))  # then the run is killed
    resumed = _Trainer(tmp_path, current_epoch=1)
    with torch.no_grad():
        resumed.network.weight.fill_(2.0)  # nnU-Net's load_checkpoint: the trained weights of checkpoint_latest
    resumed.on_train_start()
    resumed.train_step(3.0)
    resumed.on_train_end()
    assert _final_weight(tmp_path) == pytest.approx(_expected(0.8, 10.0, [1, 2, 3], warm_up=True))
    assert any(f"read from {AVERAGE_FILE}" in line for line in resumed.log)


def test_an_average_saved_with_another_checkpoint_is_not_resumed(tmp_path):
    """A side file from the checkpoint of another epoch (a run killed between the two saves, or after
    checkpoint_final.pth was written) or from another run is not paired with the resumed weights."""
    first = _Trainer(tmp_path)
    first.on_train_start()
    first.train_step(1.0)
    first.save_checkpoint(str(tmp_path / "checkpoint_latest.pth"))  # tagged epoch 1
    resumed = _Trainer(tmp_path, current_epoch=2)
    with torch.no_grad():
        resumed.network.weight.fill_(2.0)
    resumed.on_train_start()
    assert not (tmp_path / AVERAGE_FILE).exists()  # the stale file is gone
    resumed.train_step(3.0)
    resumed.on_train_end()
    assert _final_weight(tmp_path) == pytest.approx(_expected(0.8, 2.0, [3], warm_up=True))
    assert any("started from the resumed weights" in line for line in resumed.log)


def test_continued_training_without_the_file_restarts_from_the_resumed_weights(tmp_path):
    resumed = _Trainer(tmp_path, current_epoch=1)
    with torch.no_grad():
        resumed.network.weight.fill_(2.0)
    resumed.on_train_start()
    resumed.train_step(3.0)
    resumed.on_train_end()
    assert _final_weight(tmp_path) == pytest.approx(_expected(0.8, 2.0, [3], warm_up=True))
    assert any("started from the resumed weights" in line for line in resumed.log)


def test_without_a_decay_nothing_changes(tmp_path):
    class Plain(WeightAverage, _Base):
        pass

    trainer = Plain(tmp_path)
    trainer.on_train_start()
    for value in (1.0, 2.0):
        trainer.train_step(value)
    trainer.save_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    trainer.on_train_end()
    assert _final_weight(tmp_path) == 2.0 and not (tmp_path / AVERAGE_FILE).exists() and trainer.log == []


def test_bad_decay_stops_training_start(tmp_path):
    class Bad(WeightAverage, _Base):
        weight_average_decay = 1.0

    with pytest.raises(ValueError, match="Bad.weight_average_decay"):
        Bad(tmp_path).on_train_start()
