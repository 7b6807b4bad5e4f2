"""``SPINE_SEED``: parsing, what seeding repeats, what keeps a run from repeating (nnunet_ext/training/seeding.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nnunet_ext.training.seeding import (
    seed_everything,
    stream_seed,
    training_seed,
    unrepeatable_because,
)


@pytest.mark.parametrize("environ, expected", [({}, None), ({"SPINE_SEED": ""}, None), ({"SPINE_SEED": " 12 "}, 12),
                                               ({"SPINE_SEED": "0"}, 0), ({"SPINE_SEED": "4294967295"}, 2**32 - 1)])
def test_seed_read_from_the_environment(environ, expected):
    assert training_seed(environ) == expected


@pytest.mark.parametrize("value", ["seven", "1.5", "-1", "4294967296"])
def test_bad_seed_named_in_the_message(value):
    with pytest.raises(ValueError, match=f"SPINE_SEED={value!r}"):
        training_seed({"SPINE_SEED": value})


def test_streams_of_ranks_and_continued_runs_differ():
    assert stream_seed(7) == 7  # what the user asked for, where nothing else runs
    seeds = {stream_seed(7, rank, epoch) for rank in range(3) for epoch in (0, 5, 6)}
    assert len(seeds) == 9 and all(0 <= s < 2**32 for s in seeds)
    assert stream_seed(7, 1, 5) == stream_seed(7, 1, 5)


@pytest.fixture
def restored_generators():
    torch = pytest.importorskip("torch")
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield torch
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


def test_seeding_repeats_every_generator(restored_generators):
    torch = restored_generators

    def draws() -> tuple:
        return random.random(), float(np.random.rand()), torch.rand(3).tolist()

    seed_everything(3)
    first = draws()
    seed_everything(3)
    assert draws() == first
    seed_everything(4)
    assert all(a != b for a, b in zip(draws(), first, strict=True))


def test_what_keeps_a_run_from_repeating():
    assert unrepeatable_because("cpu", None, 0) == []
    reasons = unrepeatable_because("cuda", 1000.0, 2)
    assert len(reasons) == 3
    assert "nnUNet_n_proc_DA" in reasons[0] and "cuda" in reasons[1] and "1000 s" in reasons[2]
