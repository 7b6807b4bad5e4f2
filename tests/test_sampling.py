"""Drawing training cases balanced over annotated levels (nnunet_ext.training.sampling): known answers."""

from __future__ import annotations

import math

import pytest

from nnunet_ext.training.sampling import class_shares, level_balanced_case_weights, replicated_cases

# four cases annotate L1-L5 (3-7); one of them and one more annotate S1 (8) too; a fifth annotates nothing
CASES = {"a": [3, 4, 5, 6, 7], "b": [3, 4, 5, 6, 7], "c": [3, 4, 5, 6, 7, 8], "d": [3, 4, 5, 6, 7, 8], "e": []}


def test_share_zero_is_the_uniform_draw():
    assert level_balanced_case_weights(CASES, 0.0) == dict.fromkeys(CASES, 0.2)


def test_fully_balanced_weights_by_hand():
    # six classes; L1-L5 in 4 cases each: 1 / (6 * 4) per class and case; S1 in 2 cases: 1 / (6 * 2)
    weights = level_balanced_case_weights(CASES, 1.0)
    assert weights["a"] == pytest.approx(5 / 24)
    assert weights["c"] == pytest.approx(5 / 24 + 1 / 12)
    assert weights["e"] == 0.0
    assert math.fsum(weights.values()) == pytest.approx(1.0)
    # every class is drawn from a case annotating it with the same share of its own draws: S1 half the time
    assert weights["c"] + weights["d"] == pytest.approx(2 * (5 / 24 + 1 / 12))


def test_half_balanced_blends_the_two():
    weights = level_balanced_case_weights(CASES, 0.5)
    assert weights["c"] == pytest.approx(0.5 * 0.2 + 0.5 * (5 / 24 + 1 / 12))
    assert weights["e"] == pytest.approx(0.1)
    assert math.fsum(weights.values()) == pytest.approx(1.0)


def test_no_annotated_class_anywhere_is_uniform():
    assert level_balanced_case_weights({"x": [], "y": []}, 0.7) == {"x": 0.5, "y": 0.5}


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_share_outside_zero_one_is_refused(share):
    with pytest.raises(ValueError, match="share"):
        level_balanced_case_weights(CASES, share)


def test_replicated_cases_follow_the_weights():
    weights = {"a": 0.1, "b": 0.2, "c": 0.45, "d": 0.25}
    drawn = replicated_cases(weights, copies_of_least=4)
    assert drawn.count("a") == 4 and drawn.count("b") == 8 and drawn.count("c") == 18 and drawn.count("d") == 10
    assert drawn == sorted(drawn)


def test_replicated_cases_leave_out_zero_weights_and_refuse_none():
    assert "e" not in replicated_cases(level_balanced_case_weights(CASES, 1.0))
    with pytest.raises(ValueError, match="positive"):
        replicated_cases({"a": 0.0})


def test_class_shares_of_a_drawn_list():
    drawn = replicated_cases(level_balanced_case_weights(CASES, 0.5))
    shares = class_shares(drawn, CASES)
    assert shares[3] == pytest.approx(0.9, abs=0.02)  # all but "e", which keeps its uniform part (0.1)
    assert shares[8] > class_shares(CASES, CASES)[8] == pytest.approx(0.4)
