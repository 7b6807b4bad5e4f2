"""Parts out of cranio-caudal order are removed from predicted masks; ordered masks are left as they are."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")

from nnunet_ext.postprocess import remove_out_of_order_parts  # noqa: E402

LEVELS = {1: "T12", 2: "L1", 3: "L2", 4: "L3", 5: "L4", 6: "L5"}


def stack(order: list[int], flip: bool = False) -> np.ndarray:
    """Bodies 10 slices tall with 5-slice gaps along array axis 0 (k), the first cranial (identity direction:
    k grows towards superior, so the list is given caudal first unless ``flip``)."""
    labels = np.zeros((len(order) * 15 + 5, 12, 12), np.uint8)
    for n, value in enumerate(order):
        labels[5 + 15 * n: 15 + 15 * n, 2:10, 2:10] = value
    return labels[::-1].copy() if flip else labels


def test_an_ordered_spine_is_unchanged():
    labels = stack([6, 5, 4, 3, 2, 1])  # L5 lowest (k small = inferior), T12 highest
    cleaned, notes = remove_out_of_order_parts(labels, LEVELS, (1.0, 1.0, 2.0))
    assert notes == [] and cleaned is labels


def test_a_t12_below_l5_is_removed_and_reported():
    labels = stack([1, 6, 5, 4, 3, 2])  # a "T12" (the sacrum, say) caudal of L5, no real T12
    cleaned, notes = remove_out_of_order_parts(labels, LEVELS, (1.0, 1.0, 2.0))
    assert not (cleaned == 1).any()
    assert np.array_equal(cleaned[labels != 1], labels[labels != 1])  # nothing else touched
    assert notes == ["T12: 1 part(s) of 640 voxels removed (out of cranio-caudal order with the other levels)"]


def test_the_order_comes_from_the_direction_not_the_array_axis():
    labels = stack([1, 6, 5, 4, 3, 2], flip=True)  # stored the other way round along k...
    flipped = (1, 0, 0, 0, 1, 0, 0, 0, -1)  # ...and the direction says k grows towards inferior: same anatomy
    cleaned, _ = remove_out_of_order_parts(labels, LEVELS, (1.0, 1.0, 2.0), flipped)
    assert not (cleaned == 1).any() and (cleaned == 6).sum() == (labels == 6).sum()
    ordered = stack([6, 5, 4, 3, 2, 1], flip=True)
    assert remove_out_of_order_parts(ordered, LEVELS, (1.0, 1.0, 2.0), flipped)[1] == []
    # read with the identity direction instead, the flipped stack is T12 at the bottom: all but one level disagree
    assert remove_out_of_order_parts(ordered, LEVELS, (1.0, 1.0, 2.0))[1] != []


def test_a_small_stray_part_of_a_level_far_from_its_body_goes_the_main_part_stays():
    labels = stack([6, 5, 4, 3, 2, 1])
    labels[0:2, 0:2, 0:2] = 3  # a speck of "L2" at the very bottom, below L5
    cleaned, notes = remove_out_of_order_parts(labels, LEVELS, (1.0, 1.0, 2.0))
    assert cleaned[0:2, 0:2, 0:2].max() == 0 and (cleaned == 3).sum() == 640
    assert notes[0].startswith("L2: 1 part(s) of 8 voxels removed")


def test_values_without_level_names_are_left_alone():
    labels = stack([1, 6])
    cleaned, notes = remove_out_of_order_parts(labels, {1: "vertebra", 6: "vertebra"}, (1.0, 1.0, 1.0))
    assert notes == [] and cleaned is labels
