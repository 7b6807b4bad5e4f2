"""Dice per label on hand-made masks with known overlaps."""

import numpy as np
import pytest

from measure.agreement import dice_per_label, foreground_dice


def test_dice_values():
    reference = np.zeros((4, 10), dtype=np.uint8)
    reference[:, :4] = 1  # 16 voxels
    reference[:, 6:] = 2  # 16 voxels
    predicted = np.zeros_like(reference)
    predicted[:, 1:5] = 1  # 12 of 16 overlap, 16 predicted
    predicted[:, 6:] = 3  # label 2 missed entirely, label 3 predicted where 2 is
    scores = dice_per_label(predicted, reference, [1, 2, 3, 4])
    assert scores[1] == pytest.approx(2 * 12 / 32)
    assert scores[2] == 0.0 and scores[3] == 0.0 and np.isnan(scores[4])
    assert foreground_dice(predicted, reference) == pytest.approx(2 * 28 / 64)
    with pytest.raises(ValueError, match="shape"):
        dice_per_label(predicted[:, :5], reference, [1])
