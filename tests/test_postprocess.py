"""Parts out of cranio-caudal order are removed from predicted masks (or given the level of the body they are the
smaller piece of); chains naming a level twice, or skipping one
above S1, are counted again up from the sacrum (or, without a sacrum, from stage 1's level of the caudal body, or by
their voxels' votes); each body gets one level; ordered masks are left as they are."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")

from nnunet_ext.postprocess import (  # noqa: E402
    _chain,
    _gap_along_centres_mm,
    _split_at_thin_bridges,
    _split_at_waists,
    count_levels_by_votes,
    count_levels_from_sacrum,
    count_levels_from_stage1,
    one_level_per_body,
    remove_out_of_order_parts,
    tidy_levels,
)

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


CHAIN = {1: "T11", 2: "T12", 3: "L1", 4: "L2", 5: "L3", 6: "L4", 7: "L5", 8: "S1"}
IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)
SPACING = (1.0, 1.0, 2.0)  # k (superior) 2 mm: bodies 20 mm tall, 10 mm discs, 30 mm apart


def body_values(labels: np.ndarray, flip: bool = False) -> list[int]:
    """The value of each body of a :func:`stack` (caudal first), 0 where it was set to background."""
    caudal_first = labels[::-1] if flip else labels
    return [int(caudal_first[10 + 15 * n, 5, 5]) for n in range((labels.shape[0] - 5) // 15)]


def test_a_level_named_twice_is_counted_again_up_from_the_sacrum():
    labels = stack([8, 7, 7, 6, 5, 4, 3, 2])  # S1, then L4 taken for a second L5: every level above shifted
    counted, notes = count_levels_from_sacrum(labels, CHAIN, SPACING)
    assert body_values(counted) == [8, 7, 6, 5, 4, 3, 2, 1]
    assert notes == ["levels counted up from S1: the bodies predicted T12 L1 L2 L3 L4 L5 L5 S1 (cranial first) "
                     "are T11 T12 L1 L2 L3 L4 L5 S1"]


def test_a_body_counted_beyond_the_label_map_becomes_background_and_is_reported():
    labels = stack([8, 7, 7, 6, 5, 4, 3, 2, 1])  # nine bodies: the top one is T10, which the mask cannot hold
    counted, notes = count_levels_from_sacrum(labels, CHAIN, SPACING)
    assert body_values(counted) == [8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert notes[0].endswith("are T10 T11 T12 L1 L2 L3 L4 L5 S1; T10 not in the label map, set to background")


def test_a_chain_without_a_repeated_level_or_without_a_sacral_end_is_left_alone():
    for order in ([8, 7, 6, 5, 4], [7, 6, 5, 4, 3], [7, 6, 6, 5, 4]):  # consistent; consistent; no sacrum
        labels = stack(order)
        counted, notes = count_levels_from_sacrum(labels, CHAIN, SPACING)
        assert notes == [] and counted is labels, order


@pytest.mark.parametrize("order, expected, predicted", [
    ([8, 6, 5, 4, 3], [8, 7, 6, 5, 4], "L1 L2 L3 L4 S1"),  # "L4" directly above S1: the chain one level too high
    ([8, 7, 6, 4, 3], [8, 7, 6, 5, 4], "L1 L2 L4 L5 S1"),  # L3 skipped in the middle: the bodies above it too high
])
def test_a_level_skipped_above_s1_is_counted_again_up_from_the_sacrum(order, expected, predicted):
    counted, notes = count_levels_from_sacrum(stack(order), CHAIN, SPACING)
    assert body_values(counted) == expected
    assert notes == [f"levels counted up from S1: the bodies predicted {predicted} (cranial first) are "
                     "L2 L3 L4 L5 S1"]


def test_a_skip_across_a_missed_body_or_above_s2_is_left_alone():
    """A gap of two body pitches means a body is missing from the chain (its neighbours' names may be right, and
    counting up would name every body above the gap one level too low); a chain ending in S2 has no S1 to count
    from (only a repeated level is counted from S2)."""
    for order in ([8, 6, 0, 5, 4], [8, 0, 6, 5], [8, 0, 6]):  # an unsegmented body in the chain: the names are right
        labels = stack(order)
        counted, notes = count_levels_from_sacrum(labels, CHAIN, SPACING)
        assert notes == [] and counted is labels, order
    transitional = {**CHAIN, 9: "L6"}
    labels = stack([8, 9, 6, 5, 4])  # S1, L6, L4, L3, L2: a transitional vertebra named, not counted over
    counted, notes = count_levels_from_sacrum(labels, transitional, SPACING)
    assert notes == [] and counted is labels
    with_s2 = {**CHAIN, 9: "S2"}
    labels = stack([9, 7, 6, 5])  # S2, L5, L4, L3: S1 not predicted
    counted, notes = count_levels_from_sacrum(labels, with_s2, SPACING)
    assert notes == [] and counted is labels


def fused(order: list[int], gap_slices: int = 1) -> np.ndarray:
    """:func:`stack` with the disc between its two caudal bodies narrowed to ``gap_slices`` slices (2 mm each; the
    other discs 5 slices, 10 mm): with one, the sacrum's S1 and S2, fused."""
    labels = stack(order)
    labels[15:20 - gap_slices] = labels[10:11]  # the lowest body grown up towards the next
    return labels


def test_a_sacrum_in_two_pieces_is_the_sacrum_not_a_repeated_level():
    """Two bodies both "S1" at the caudal end with no disc between them are the sacrum in pieces (S1 and S2; the
    demo's phantom_001 once, whose S1-S2 gap is 2.5 mm): the lumbar chain above, named once each, stays; a repeat
    above such a sacrum is counted from its most cranial piece."""
    labels = fused([8, 8, 7, 6, 5, 4, 3, 2])
    counted, notes = count_levels_from_sacrum(labels, CHAIN, SPACING)
    assert notes == [] and counted is labels
    labels = fused([8, 8, 7, 7, 6, 5, 4, 3])  # and L4 taken for a second L5 above it
    counted, notes = count_levels_from_sacrum(labels, CHAIN, SPACING)
    assert body_values(counted) == [8, 8, 7, 6, 5, 4, 3, 2]
    assert notes == ["levels counted up from S1: the bodies predicted L1 L2 L3 L4 L5 L5 S1 S1 (cranial first) "
                     "are T12 L1 L2 L3 L4 L5 S1 S1"]


def test_two_bodies_named_s1_a_disc_apart_are_l5_and_s1():
    """A chain counted one level caudal of the truth (more thoracic levels in view than in the training scans) names
    L5 "S1" above the real S1: two body-sized "S1" bodies with a disc about as thick as the ones above between them
    (at least SACRAL_DISC_FRACTION, 0.75, of their median) are two vertebrae, and the chain is counted up from the
    lower one. A small "S1" piece below, a thin gap (2 or 6 mm against 10), two "S2", or a chain too short to tell
    the discs by (fewer than MIN_GAPS_COMPARED gaps above) is not."""
    labels = stack([8, 8, 7, 6, 5, 4, 3, 2])  # S1 S1 L5 L4 L3 L2 L1 T12, caudal first; 10-mm discs throughout
    counted, notes = count_levels_from_sacrum(labels, CHAIN, SPACING)
    assert body_values(counted) == [8, 7, 6, 5, 4, 3, 2, 1]
    assert notes == ["levels counted up from S1: the bodies predicted T12 L1 L2 L3 L4 L5 S1 S1 (cranial first) "
                     "are T11 T12 L1 L2 L3 L4 L5 S1"]
    small = labels.copy()
    small[5:15, 2:10, 2:10] = 0
    small[5:15, 2:10, 5] = 8  # the lower "S1" a sliver, 1 of 8 columns (12.5 % of a body: under MIN_BODY_FRACTION)
    counted, notes = count_levels_from_sacrum(small, CHAIN, SPACING)
    assert notes == [] and counted is small
    for gap_slices in (1, 3):  # 2 and 6 mm: under 0.75 x 10 mm
        thin = fused([8, 8, 7, 6, 5, 4, 3, 2], gap_slices)
        assert count_levels_from_sacrum(thin, CHAIN, SPACING)[1] == [], gap_slices
    with_s2 = {**CHAIN, 9: "S2"}
    two_s2 = stack([9, 9, 7, 6, 5, 4, 3, 2])
    counted, notes = count_levels_from_sacrum(two_s2, with_s2, SPACING)
    assert notes == [] and counted is two_s2
    short = stack([8, 8, 7, 6])  # two gaps above the upper "S1": too few to know a disc by
    counted, notes = count_levels_from_sacrum(short, CHAIN, SPACING)
    assert notes == [] and counted is short
    assert count_levels_from_sacrum(stack([8, 8, 7, 6, 5]), CHAIN, SPACING)[1] != []  # three gaps: counted


def test_the_gap_between_two_bodies_is_measured_along_the_line_joining_their_centres():
    labels = stack([8, 7])  # bodies 10 slices tall, 5 slices apart along k
    upper, lower = labels == 7, labels == 8
    assert _gap_along_centres_mm(upper, lower, np.array([2.0, 1.0, 1.0])) == pytest.approx(10.0, abs=0.6)
    assert _gap_along_centres_mm(upper, lower, np.array([1.0, 1.0, 1.0])) == pytest.approx(5.0, abs=0.3)
    touching = lower.copy()
    touching[15:20, 2:10, 2:10] = True  # the lower body grown up to the upper one
    assert _gap_along_centres_mm(upper, touching, np.array([2.0, 1.0, 1.0])) == 0.0
    hollow = upper.copy()
    hollow[:, 4:8, 4:8] = False  # a ring round the line: the line from its centre never enters it
    assert np.isnan(_gap_along_centres_mm(hollow, lower, np.array([2.0, 1.0, 1.0])))


def test_counting_follows_the_direction_not_the_array_axis():
    labels = stack([8, 7, 7, 6, 5], flip=True)  # stored cranial first along k, the direction says k is inferior
    flipped = (1, 0, 0, 0, 1, 0, 0, 0, -1)
    counted, notes = count_levels_from_sacrum(labels, CHAIN, SPACING, flipped)
    assert body_values(counted, flip=True) == [8, 7, 6, 5, 4] and notes
    # read with the identity direction the same array has "S1" on top: no sacral caudal end, nothing changes
    assert count_levels_from_sacrum(labels, CHAIN, SPACING)[1] == []


def test_two_bodies_grown_together_count_as_two_one_body_with_two_names_as_one():
    labels = stack([8, 7, 7, 6, 5])
    labels[15:20, 2:10, 2:10] = 8  # the disc filled: S1 and L5 grown together, 26 mm between the two names' centres
    counted, _ = count_levels_from_sacrum(labels, CHAIN, SPACING)
    assert body_values(counted) == [8, 7, 6, 5, 4]
    mixed = stack([8, 7, 7, 6, 5])
    mixed[50:55, 2:10, 2:10] = 5  # the lower half of the "L4" body called L3: 10 mm apart, still one body
    counted, notes = count_levels_from_sacrum(mixed, CHAIN, SPACING)
    assert body_values(counted) == [8, 7, 6, 5, 4] and (counted[50:55, 2:10, 2:10] == 5).all() and notes


def test_two_bodies_joined_by_a_thin_bridge_are_two_bodies_whatever_their_labels():
    """Stage 2 can join two bodies across the disc by a bridge a voxel or two thick and give both one name (a
    zukic2014 scan, twenty-eighth session): one tall "L4" made the chain look consistent. Taken apart at the bridge,
    the chain names L4 twice and is counted up from S1 (a thicker bridge: at the waist, below); a body with a thin
    waist stays one body."""
    labels = stack([8, 7, 6, 6, 5, 4, 3])  # caudal first: S1, L5, L4, L4 (really L3), L3, L2, L1
    labels[45:50, 5, 5:7] = 6  # a 1 x 2-voxel bridge through the disc between the two "L4" bodies
    counted, notes = tidy_levels(labels, CHAIN, SPACING, IDENTITY)
    assert body_values(counted) == [8, 7, 6, 5, 4, 3, 2] and notes
    assert set(np.unique(counted[45:50, 5, 5:7])) <= {5, 6}  # the bridge goes with the body it is nearer
    thick = stack([8, 7, 6, 6, 5, 4, 3])
    thick[45:50, 4:7, 4:7] = 6  # 3 x 3 voxels: a core survives the erosion, the two stay one part...
    assert len(_split_at_thin_bridges(thick[35:65] > 0, (35, 0, 0), SPACING, IDENTITY)) == 1
    assert body_values(tidy_levels(thick, CHAIN, SPACING, IDENTITY)[0]) == [8, 7, 6, 5, 4, 3, 2]  # ...cut at the waist
    two = stack([8, 7, 6, 6, 5, 4, 3])
    two[45:50, 5:7, 5:7] = 6  # a 2 x 2-voxel bridge: the erosion leaves nothing of it either
    assert body_values(tidy_levels(two, CHAIN, SPACING, IDENTITY)[0]) == [8, 7, 6, 5, 4, 3, 2]
    waist = stack([8, 7, 6, 5, 4])
    waist[39:41, 2:10, 2:10] = 0
    waist[39:41, 5, 5] = 6  # the L4 body pinched to one voxel in its middle: two halves 12 mm apart, one body
    counted, notes = tidy_levels(waist, CHAIN, SPACING, IDENTITY)
    assert notes == [] and np.array_equal(counted, waist)
    waist[41:45][waist[41:45] == 6] = 5  # its upper half named L3: still one body, no second L3 in the chain
    counted, notes = tidy_levels(waist, CHAIN, SPACING, IDENTITY)
    assert body_values(counted) == [8, 7, 6, 5, 4] and not any("counted" in note for note in notes)


MERGED = (1.0, 1.0, 4.4)  # the same stacks 2.2 times as tall: bodies 66 mm apart, each two vertebrae grown together


@pytest.mark.parametrize("order", [
    [8, 7, 4, 1],  # "T11 L2 L5 S1" (the demo's phantom_001 once): read as skipped levels, T12 and L1 became L3/L4
    [8, 7, 7, 5, 3],  # "L1 L3 L5 L5 S1": read as a repeat, every body would be renamed
])
def test_a_chain_of_bodies_each_holding_two_vertebrae_is_not_counted(order):
    """Bodies 66 mm apart (over LEVEL_PITCH_MAX_MM) hold two vertebrae each: counting one level per body would name
    them wrong, so their names stay; the same names on bodies 30 mm apart are counted up from S1."""
    labels = stack(order)
    counted, notes = count_levels_from_sacrum(labels, CHAIN, MERGED)
    assert notes == [] and counted is labels
    counted, notes = count_levels_from_sacrum(labels, CHAIN, SPACING)
    assert body_values(counted) == [8, 7, 6, 5, 4][:len(order)] and notes
    large_adult = (1.0, 1.0, 3.3)  # 49.5 mm apart: the largest adult lumbar pitch with room to spare, still counted
    assert count_levels_from_sacrum(labels, CHAIN, large_adult)[1] == notes


def test_votes_leave_a_chain_of_bodies_each_holding_two_vertebrae_alone():
    labels = stack([7, 7, 6, 5, 4])
    labels[5:15, 2:10:3, 2:10] = 8  # 3 of the bottom body's 8 rows called S1 (its centre stays: one body)
    assert count_levels_by_votes(labels, CHAIN, SPACING)[1] != []
    counted, notes = count_levels_by_votes(labels, CHAIN, MERGED)
    assert notes == [] and counted is labels


def test_islands_are_not_bodies_and_keep_their_label():
    labels = stack([8, 7, 7, 6, 5])
    labels[0:2, 0:2, 0:2] = 3  # an 8-voxel speck
    counted, _ = count_levels_from_sacrum(labels, CHAIN, SPACING)
    assert body_values(counted) == [8, 7, 6, 5, 4] and (counted[0:2, 0:2, 0:2] == 3).all()


def test_a_part_out_of_order_that_is_the_smaller_piece_of_another_levels_body_takes_that_level():
    """A short training's stage 2 named the lower part of L5 "S2" (above S1: out of order). That part and L5's main
    part are one body (centres 10 mm apart, within SPLIT_MM), and L5's is the larger piece: it becomes L5 instead
    of background. A piece as large as the one it touches is a body of its own and is removed."""
    levels = {**CHAIN, 9: "S2"}
    labels = stack([8, 7, 6, 5, 4])
    labels[20:24, 2:10, 2:10] = 9  # the lower 4 of L5's 10 slices
    cleaned, notes = remove_out_of_order_parts(labels, levels, SPACING)
    assert (cleaned[20:30, 2:10, 2:10] == 7).all() and not (cleaned == 9).any()
    assert np.array_equal(cleaned[labels != 9], labels[labels != 9])
    assert notes == ["S2: 1 part(s) of 256 voxels out of cranio-caudal order given the level of the body they belong "
                     "to (L5)"]
    tidied, _ = tidy_levels(labels, levels, SPACING, IDENTITY)
    assert body_values(tidied) == [8, 7, 6, 5, 4] and (tidied == 7).sum() == 640
    labels[20:25, 2:10, 2:10] = 9  # half of it: as large as L5's part
    cleaned, notes = remove_out_of_order_parts(labels, levels, SPACING)
    assert (cleaned[20:25] == 0).all() and notes[0].startswith("S2: 1 part(s) of 320 voxels removed")


def test_a_part_out_of_order_takes_the_level_of_its_own_body_not_of_the_body_it_touches_most():
    """The lower 3 slices of L5 named "S2" touch S1 (grown up to L5, wrapping the part's sides) more than L5's upper
    part, but S1's centre lies 18 mm away, another body: the part becomes L5."""
    levels = {**CHAIN, 9: "S2"}
    labels = stack([8, 7, 6, 5, 4])
    labels[15:20, 2:10, 2:10] = 8
    labels[20:23, 2:10, 2:10] = 9
    labels[20:23, 1, 2:10] = labels[20:23, 10, 2:10] = 8
    cleaned, notes = remove_out_of_order_parts(labels, levels, SPACING)
    assert (cleaned[20:23, 2:10, 2:10] == 7).all() and notes[0].endswith("(L5)")


def test_a_part_out_of_order_grown_onto_another_body_across_the_disc_is_removed():
    """A strip named "T12" hanging from L5's bottom 32 mm down (the sacrum, say) touches L5 but its centre lies 26 mm
    below L5's: another body, so it goes, and L5 stays as it was."""
    labels = stack([0, 7, 6, 5, 4])
    labels[4:20, 2:10, 5] = 2
    cleaned, notes = remove_out_of_order_parts(labels, CHAIN, SPACING)
    assert not (cleaned == 2).any() and (cleaned == 7).sum() == (labels == 7).sum()
    assert notes == ["T12: 1 part(s) of 128 voxels removed (out of cranio-caudal order with the other levels)"]


def test_tidy_levels_removes_out_of_order_parts_then_counts():
    labels = stack([3, 8, 7, 7, 6, 5])  # an "L1" below S1 (removed first), then L5 named twice
    tidied, notes = tidy_levels(labels, CHAIN, SPACING, IDENTITY)
    assert body_values(tidied) == [0, 8, 7, 6, 5, 4] and len(notes) == 2
    assert tidy_levels(labels, CHAIN, SPACING, IDENTITY, False, False) == (labels, [])


def test_a_speck_of_a_level_orders_nothing():
    """A level found only in a speck has no body to order the others by. S1, then L4 taken for a second L5 (larger
    than the real L5, so it is L5's main part), and an 8-voxel "S2" between the two: the lower L5 is a whole body,
    not out of order (taking it out lost the body and shifted every level above it by one on a real scan); the speck
    is, and goes, and the chain is counted again from S1."""
    labels = stack([8, 7, 7, 6, 5, 4, 3, 2])
    labels[35:45, 1:11, 1:11] = 7  # the upper "L5" (L4 really) 100 voxels a slice, the real L5 64
    labels[32:34, 5:7, 5:7] = 9  # the speck, 16 mm above the real L5's centre: "S2" above an L5
    chain = {**CHAIN, 9: "S2"}
    cleaned, notes = remove_out_of_order_parts(labels, chain, SPACING)
    assert np.array_equal(cleaned[labels != 9], labels[labels != 9]) and not (cleaned == 9).any()
    assert notes == ["S2: 1 part(s) of 8 voxels removed (out of cranio-caudal order with the other levels)"]
    tidied, notes = tidy_levels(labels, chain, SPACING, IDENTITY)
    assert body_values(tidied) == [8, 7, 6, 5, 4, 3, 2, 1] and notes[1].startswith("levels counted up from S1")
    sized = labels.copy()
    sized[32:34, 2:10, 2:10] = 9  # the same "S2" body-sized (128 voxels, over 5 % of the largest part): it orders
    assert (remove_out_of_order_parts(sized, chain, SPACING)[0][20:30] == 0).all()


def test_a_sacrum_predicted_in_fragments_is_one_body_and_anchors_the_count():
    """A sacrum no training case annotated often comes out in small pieces side by side: each is too small to be a
    body (under MIN_BODY_FRACTION of the largest), together they are one, and a chain skipping L5 above it is counted
    again from it. Caudal of the chain a sacral part counts from SACRAL_MIN_FRACTION of the largest body on: one
    sliver of an eighth of a body anchors the count too, a speck of a fortieth does not, nor do two specks apart."""
    labels = stack([0, 6, 5, 4, 3])  # L4, L3, L2, L1 above an empty slot...
    labels[5:15, 2:10, 2] = 8  # ...where two slivers of "S1", 80 voxels each (a body: 640), lie side by side
    labels[5:15, 2:10, 9] = 8
    counted, notes = count_levels_from_sacrum(labels, CHAIN, SPACING)
    assert body_values(counted)[1:] == [7, 6, 5, 4] and (counted[5:15, 2:10, 2] == 8).all()
    assert notes == ["levels counted up from S1: the bodies predicted L1 L2 L3 L4 S1 (cranial first) are "
                     "L2 L3 L4 L5 S1"]
    one = labels.copy()
    one[5:15, 2:10, 9] = 0  # one sliver alone (12.5 % of a body): the sacrum found in part still anchors
    counted, notes = count_levels_from_sacrum(one, CHAIN, SPACING)
    assert body_values(counted)[1:] == [7, 6, 5, 4] and len(notes) == 1
    speck = labels.copy()
    speck[5:15, 2:10, 9] = 0
    speck[8:15, 2:10, 2] = 0  # 24 voxels left (3.75 %, under SACRAL_MIN_FRACTION): a speck, no sacral end
    counted, notes = count_levels_from_sacrum(speck, CHAIN, SPACING)
    assert notes == [] and counted is speck
    pair = speck.copy()
    pair[5:8, 2:10, 9] = 8  # a second speck beside it: together 7.5 % of a body, a sacrum found in part
    assert count_levels_from_sacrum(pair, CHAIN, SPACING)[1] != []
    apart = np.pad(speck, ((0, 0), (0, 0), (0, 60)))
    apart[5:8, 2:10, 60] = 8  # the second speck 58 mm off to the side (beyond BODY_WIDTH_MM): not the same body
    counted, notes = count_levels_from_sacrum(apart, CHAIN, SPACING)
    assert notes == [] and counted is apart


def test_a_small_sacral_part_counts_only_caudal_of_the_chain():
    """The lower threshold is for the sacrum at the chain's caudal end only: the same small "S1" part beside the
    middle of the chain (a false positive) is no body of the chain; below it, it is the chain's last body."""
    beside = np.pad(stack([0, 6, 5, 4, 3]), ((0, 0), (0, 0), (0, 6)))
    beside[35:45, 2:10, 14] = 8  # 80 voxels of "S1" at the height of L3, 4 mm to its side
    assert [body.level for body in _chain(beside, CHAIN, SPACING, IDENTITY)[1]] == ["L1", "L2", "L3", "L4"]
    below = np.pad(stack([0, 6, 5, 4, 3]), ((0, 0), (0, 0), (0, 6)))
    below[5:15, 2:10, 14] = 8  # the same part below L4
    assert [body.level for body in _chain(below, CHAIN, SPACING, IDENTITY)[1]] == ["L1", "L2", "L3", "L4", "S1"]


def test_a_repeat_without_a_sacrum_is_named_by_the_votes_of_its_voxels():
    """L2 L3 L4 L5 "L5" with no sacral body: the bottom body, 60 % "L5" and 40 % "S1" (the sacrum no training case
    annotates), is S1 by the run of consecutive levels most voxels voted for."""
    labels = stack([7, 7, 6, 5, 4])
    labels[5:9, 2:10, 2:10] = 8  # the lower 4 of the bottom body's 10 slices called S1
    counted, notes = count_levels_by_votes(labels, CHAIN, SPACING)
    assert body_values(counted) == [8, 7, 6, 5, 4] and (counted[5:15][labels[5:15] > 0] == 8).all()
    assert notes == ["levels named by the votes of their voxels: the bodies predicted L2 L3 L4 L5 L5 (cranial first) "
                     "are L2 L3 L4 L5 S1"]


def test_votes_rename_no_body_without_evidence_for_its_new_level():
    """Without voxels of the new level in a body (at least VOTE_SHARE) its name stays: a pure repeat (the sacrum not
    segmented: which of the two is L5 cannot be told), a chain whose top body is T10 called T11 (the most cranial
    class; moving all the others down would make seven right names wrong), a repeat in the middle."""
    for order in ([7, 7, 6, 5, 4], [7, 6, 5, 4, 3, 2, 1, 1], [7, 6, 5, 5, 4, 3]):
        labels = stack(order)
        counted, notes = count_levels_by_votes(labels, CHAIN, SPACING)
        assert notes == [] and counted is labels, order
    labels = stack([7, 7, 6, 5, 4])
    labels[5:7, 2:10, 2:10] = 8  # 20 % of the bottom body called S1: below VOTE_SHARE
    assert count_levels_by_votes(labels, CHAIN, SPACING)[1] == []


def test_votes_leave_consistent_gapped_transitional_and_sacral_chains_alone():
    transitional = {**CHAIN, 9: "L6"}
    for order, level_map in (([7, 6, 5, 4, 3], CHAIN),  # named once each
                             ([7, 7, 6, 0, 5, 4], CHAIN),  # a missed body: the run of consecutive levels breaks
                             ([9, 9, 7, 6, 5], transitional),  # L6 named: a variant, not counted over
                             ([8, 7, 7, 6, 5], CHAIN),  # a sacral end: count_levels_from_sacrum's case
                             ([7, 7, 6], CHAIN)):  # too few bodies to tell a missed one
        labels = stack(order)
        if order == [7, 7, 6, 0, 5, 4] or order == [7, 7, 6]:
            labels[5:9, 2:10, 2:10] = 8  # evidence for S1 in the bottom body: still left alone
        counted, notes = count_levels_by_votes(labels, level_map, SPACING)
        assert notes == [] and counted is labels, order


def test_every_voxel_of_a_body_gets_the_level_of_most_of_them():
    labels = stack([8, 7, 6, 5, 4])
    labels[20:23, 2:10, 2:10] = 6  # the lower 3 of L5's 10 slices called L4
    labels[50:52, 2:10, 2:10] = 4  # the lower 2 of L3's slices called L2
    labels[0:2, 0:2, 0:2] = 3  # an island of "L1" far away: not a body, left alone
    uniform, notes = one_level_per_body(labels, CHAIN, SPACING)
    assert body_values(uniform) == [8, 7, 6, 5, 4]
    assert (uniform[20:30, 2:10, 2:10] == 7).all() and (uniform[50:60, 2:10, 2:10] == 5).all()
    assert (uniform[0:2, 0:2, 0:2] == 3).all()
    assert notes == ["one level per body: 320 voxel(s) given their body's level"]
    grown = stack([8, 7, 6, 5, 4])
    grown[15:20, 2:10, 2:10] = 8  # S1 and L5 grown together across the disc: two bodies, both keep their levels
    result, notes = one_level_per_body(grown, CHAIN, SPACING)
    assert result is grown and notes == []
    result, notes = one_level_per_body(stack([8, 7, 6, 5, 4]), CHAIN, SPACING)
    assert notes == []


def test_a_small_piece_of_another_level_far_from_the_body_centre_keeps_its_level():
    """A sliver of sacrum grown onto the bottom of L5 (under a quarter of the part, so the part is not split) lies
    more than SPLIT_MM from the body's centre: it keeps its S1 label, the landmark counting needs."""
    labels = stack([0, 7, 6, 5, 4])
    labels[4:20, 2:10, 5] = 8  # a 1-voxel-wide S1 strip, 128 voxels, from L5's bottom down 32 mm
    result, notes = one_level_per_body(labels, CHAIN, SPACING)
    assert result is labels and notes == []


def test_tidy_levels_switches():
    labels = stack([8, 7, 6, 5, 4])
    labels[20:23, 2:10, 2:10] = 6  # the lower part of L5 called L4
    tidied, notes = tidy_levels(labels, CHAIN, SPACING, IDENTITY)
    assert (tidied[20:30, 2:10, 2:10] == 7).all()
    assert notes == ["one level per body: 192 voxel(s) given their body's level"]
    assert tidy_levels(labels, CHAIN, SPACING, IDENTITY, True, False) == (labels, [])
    labels = stack([7, 7, 6, 5, 4])
    labels[5:9, 2:10, 2:10] = 8
    tidied, notes = tidy_levels(labels, CHAIN, SPACING, IDENTITY)
    assert body_values(tidied) == [8, 7, 6, 5, 4] and notes[0].startswith("levels named by the votes")


def test_tidy_levels_finds_the_bodies_again_only_after_a_relabelling(monkeypatch):
    """The bodies are found once for the three level steps when none relabels, once more after a relabelling (by the
    sacrum count or by the votes: the chain changed), and the result is the steps' own, one after the other."""
    import nnunet_ext.postprocess as postprocess

    calls = []
    original = postprocess._chain

    def counted_chain(*args):
        calls.append(1)
        return original(*args)

    def step_by_step(labels: np.ndarray) -> np.ndarray:
        counted, notes = count_levels_from_sacrum(labels, CHAIN, SPACING)
        if not notes:
            counted = count_levels_by_votes(labels, CHAIN, SPACING)[0]
        return one_level_per_body(counted, CHAIN, SPACING)[0]

    uniform = stack([8, 7, 6, 5, 4])
    uniform[20:23, 2:10, 2:10] = 6  # only one level per body changes voxels
    voted = stack([7, 7, 6, 5, 4])
    voted[5:9, 2:10, 2:10] = 8  # renamed by the votes
    counted = stack([8, 7, 7, 6, 5])  # a repeat above S1: counted up from the sacrum
    counted[35:38, 2:10, 2:10] = 5  # and a part of a body called another level
    for labels, searches in ((uniform, 1), (voted, 2), (counted, 2)):
        expected = step_by_step(labels)
        monkeypatch.setattr(postprocess, "_chain", counted_chain)
        calls.clear()
        tidied, _ = tidy_levels(labels, CHAIN, SPACING, IDENTITY, order=False)
        monkeypatch.setattr(postprocess, "_chain", original)
        assert len(calls) == searches and np.array_equal(tidied, expected)
        assert not np.array_equal(tidied, labels)


def stage1_naming_caudal_body(labels: np.ndarray, value: int, slices: slice = slice(5, 15)) -> np.ndarray:
    """A stage-1 mask that agrees with ``labels`` (a :func:`stack`) but names the caudal body's ``slices`` ``value``."""
    stage1 = labels.copy()
    stage1[slices][labels[slices] > 0] = value
    return stage1


def test_a_repeat_without_a_sacrum_is_counted_up_from_stage_1s_level_of_the_caudal_body():
    """L1 L2 L2 L3 L4 L5 (cranial first), no sacrum: stage 1 calls the lowest body L5, so the bodies above it are L4,
    L3, L2, L1, T12; T11 L1 L2 L2 L3 L4 L5 whose lowest body stage 1 calls S1 (stage 2 missed the sacrum and named
    every body below the repeat one level too high) is T12 L1 L2 L3 L4 L5 S1."""
    labels = stack([7, 6, 5, 4, 4, 3])
    counted, notes = count_levels_from_stage1(labels, CHAIN, SPACING, stage1_kji=stage1_naming_caudal_body(labels, 7))
    assert body_values(counted) == [7, 6, 5, 4, 3, 2]
    assert notes == ["levels counted up from stage 1's L5 at the caudal end: the bodies predicted L1 L2 L2 L3 L4 L5 "
                     "(cranial first) are T12 L1 L2 L3 L4 L5"]
    labels = stack([7, 6, 5, 4, 4, 3, 1])
    counted, notes = count_levels_from_stage1(labels, CHAIN, SPACING, stage1_kji=stage1_naming_caudal_body(labels, 8))
    assert body_values(counted) == [8, 7, 6, 5, 4, 3, 2]
    assert notes[0].endswith("are T12 L1 L2 L3 L4 L5 S1")


def test_counting_from_stage_1_beyond_the_label_map_sets_background_and_follows_the_direction():
    labels = stack([7, 6, 5, 5, 4, 3, 2, 1])  # eight bodies above what stage 1 calls L5: the top one is T10
    counted, notes = count_levels_from_stage1(labels, CHAIN, SPACING, stage1_kji=stage1_naming_caudal_body(labels, 7))
    assert body_values(counted) == [7, 6, 5, 4, 3, 2, 1, 0]
    assert notes[0].endswith("are T10 T11 T12 L1 L2 L3 L4 L5; T10 not in the label map, set to background")
    flipped = (1, 0, 0, 0, 1, 0, 0, 0, -1)  # stored the other way round: the caudal body is at the array's end
    labels = stack([7, 6, 5, 4, 4, 3], flip=True)
    stage1 = stage1_naming_caudal_body(labels, 7, slice(labels.shape[0] - 15, labels.shape[0] - 5))
    counted, _ = count_levels_from_stage1(labels, CHAIN, SPACING, flipped, stage1_kji=stage1)
    assert body_values(counted, flip=True) == [7, 6, 5, 4, 3, 2]


def test_stage_1_is_not_counted_from_without_a_clear_level_or_for_chains_it_does_not_concern():
    labels = stack([7, 6, 5, 4, 4, 3])
    half = stage1_naming_caudal_body(stage1_naming_caudal_body(labels, 7), 8, slice(5, 10))  # half L5, half S1
    sparse = stage1_naming_caudal_body(labels, 0)
    sparse[5:7][labels[5:7] > 0] = 7  # stage 1 gave a level to a fifth of the body: under STAGE1_COVER
    for stage1 in (stage1_naming_caudal_body(labels, 0), half, sparse, stage1_naming_caudal_body(labels, 10)):
        counted, notes = count_levels_from_stage1(labels, {**CHAIN, 10: "ignore"}, SPACING, stage1_kji=stage1)
        assert notes == [] and counted is labels
    with_s2 = {**CHAIN, 9: "S2"}  # stage 1 names the caudal body S2: no anchor below S1
    assert count_levels_from_stage1(labels, with_s2, SPACING, stage1_kji=stage1_naming_caudal_body(labels, 9))[1] == []
    with_l6 = {**CHAIN, 9: "L6"}  # a transitional variant is no anchor
    assert count_levels_from_stage1(labels, with_l6, SPACING, stage1_kji=stage1_naming_caudal_body(labels, 9))[1] == []
    far = stage1_naming_caudal_body(labels, 5)  # stage 1 calls stage 2's "L5" L3: two levels off, not trusted
    assert count_levels_from_stage1(labels, CHAIN, SPACING, stage1_kji=far)[1] == []
    assert count_levels_from_stage1(labels, CHAIN, SPACING, stage1_kji=stage1_naming_caudal_body(labels, 6))[1]
    for order in ([7, 6, 5, 4, 3], [8, 7, 7, 6, 5], [7, 6, 0, 5, 4, 4], [7, 7, 6]):  # named once each; a sacral
        labels = stack(order)  # end (count_levels_from_sacrum's); a missed body; too few bodies to tell one
        counted, notes = count_levels_from_stage1(labels, CHAIN, SPACING,
                                                  stage1_kji=stage1_naming_caudal_body(labels, 6))
        assert notes == [] and counted is labels, order
    with pytest.raises(ValueError, match="not on one grid"):
        count_levels_from_stage1(labels, CHAIN, SPACING, stage1_kji=labels[1:])


def test_tidy_levels_counts_from_stage_1_before_the_votes_and_after_the_sacrum():
    labels = stack([7, 7, 6, 5, 4])
    labels[5:9, 2:10, 2:10] = 8  # a quarter and more of the bottom body voted S1...
    assert body_values(tidy_levels(labels, CHAIN, SPACING, IDENTITY)[0]) == [8, 7, 6, 5, 4]
    tidied, notes = tidy_levels(labels, CHAIN, SPACING, IDENTITY, stage1_kji=stage1_naming_caudal_body(labels, 7))
    assert body_values(tidied) == [7, 6, 5, 4, 3] and notes[0].startswith("levels counted up from stage 1's L5")
    # ...which stage 1 calls L5: the chain is counted from it
    labels = stack([8, 7, 7, 6, 5])  # a sacral end: counted from the sacrum, stage 1 not asked
    tidied, notes = tidy_levels(labels, CHAIN, SPACING, IDENTITY, stage1_kji=stage1_naming_caudal_body(labels, 4))
    assert body_values(tidied) == [8, 7, 6, 5, 4] and notes[0].startswith("levels counted up from S1")
    assert tidy_levels(labels, CHAIN, SPACING, IDENTITY, True, False, stage1_naming_caudal_body(labels, 4)) == (
        labels, [])


def test_two_bodies_joined_across_the_disc_by_a_thick_bridge_are_cut_at_the_waist():
    """A zukic2014 scan (thirty-ninth session): stage 2 called the disc between L3 and L4 vertebra in its middle
    slices, and one "L4" 73 mm tall (cross-section about 80 voxels at the disc against 1000 in the bodies) made the
    chain T11 ... L3 L4 L5 S1 look consistent. Cut at its narrowest section, it names L4 twice and is counted up from
    S1. Wider bridges, halves under WAIST_LOBE_MM, and either axis orientation as the direction says."""
    labels = stack([8, 7, 6, 6, 5, 4, 3])  # caudal first: S1, L5, L4, L4 (really L3), L3, L2, L1
    labels[45:50, 4:8, 4:8] = 6  # a 4 x 4-voxel bridge: a quarter of the bodies' 8 x 8 cross-section
    counted, notes = tidy_levels(labels, CHAIN, SPACING, IDENTITY)
    assert body_values(counted) == [8, 7, 6, 5, 4, 3, 2] and notes[0].startswith("levels counted up from S1")
    pieces = _split_at_waists(labels[35:65] == 6, SPACING, IDENTITY)
    assert [int(piece.sum()) for piece in pieces] == [640 + 16 * 3, 640 + 16 * 2]  # cut in the bridge's middle
    wide = stack([8, 7, 6, 6, 5, 4, 3])
    wide[45:50, 3:8, 3:8] = 6  # 5 x 5 voxels: 39 % of the cross-section, not a waist
    assert body_values(tidy_levels(wide, CHAIN, SPACING, IDENTITY)[0]) == [8, 7, 6, 6, 5, 4, 3]
    clear = np.zeros((70, 12, 12), bool)  # two 30-mm bodies (1-mm slices) joined by a 2 x 4-voxel bridge: cut
    clear[0:30, 2:10, 2:10] = clear[40:70, 2:10, 2:10] = True
    clear[30:40, 4:6, 2:6] = True
    assert [int(p.sum()) for p in _split_at_waists(clear, (1.0, 1.0, 1.0), IDENTITY)] == [1920 + 48, 1920 + 32]
    short = stack([8, 7, 6, 6, 5, 4, 3])
    short[45:50, 4:8, 4:8] = 6
    flat = (1.0, 1.0, 1.5)  # bodies 15 mm tall: each side under WAIST_LOBE_MM, one part
    assert len(_split_at_waists(short[35:65] == 6, flat, IDENTITY)) == 1
    along_j = np.ascontiguousarray(np.moveaxis(labels[35:65] == 6, 0, 1))  # superior along array axis j
    direction_j = (1, 0, 0, 0, 0, 1, 0, 1, 0)  # image axis y runs superior: array axis j
    spacing_j = (1.0, 2.0, 1.0)
    assert [int(p.sum()) for p in _split_at_waists(along_j, spacing_j, direction_j)] == [688, 672]
    three = np.zeros((70, 12, 12), bool)  # three bodies joined by two thick bridges: cut twice
    for start in (0, 25, 50):
        three[start:start + 20, 2:10, 2:10] = True
        three[start + 20:start + 25, 4:8, 4:8] = start < 50
    assert len(_split_at_waists(three, (1.0, 1.0, 1.0), IDENTITY)) == 3
    assert len(_split_at_waists(np.zeros((5, 5, 5), bool), SPACING, IDENTITY)) == 1


def test_restore_hands_stage_1_back_on_the_inputs_grid_to_the_level_tidying(tmp_path, monkeypatch):
    """spine-predict's last step (:func:`nnunet_ext.inference.restore`): stage 1's mask, on the reoriented and
    cropped grid the models saw, is pasted back and reoriented exactly like stage 2's before the tidying sees it; with
    the level counting switched off it is not handed on."""
    import SimpleITK as sitk

    import nnunet_ext.inference as inference

    size = (20, 24, 16)
    original = sitk.Image(size, sitk.sitkFloat32)
    original.SetSpacing((1.0, 0.8, 2.0))
    original.SetDirection((0, 0, 1, 1, 0, 0, 0, -1, 0))  # an oblique-free but unusual orientation
    original.SetOrigin((4.0, -3.0, 7.0))
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(original, str(path))
    case = inference.prepare("scan", path, "RAS", 0.25)  # reoriented to RAS and cropped front-back, as trained
    assert case.status == "ok" and case.crop is not None and case.notes
    wanted = np.zeros(size[::-1], np.uint8)  # stage 1's mask as it should come back on the input's grid
    wanted[4:12, 5:19, 6:14] = 3
    wanted[6:9, 9:12, 8:10] = 7
    on_model_grid = sitk.GetImageFromArray(wanted)
    on_model_grid.CopyInformation(original)
    on_model_grid = sitk.DICOMOrient(on_model_grid, "RAS")
    kept = inference.apply_crop(on_model_grid, case.crop)
    wanted_after_crop = sitk.GetArrayFromImage(inference.on_input_grid(case, kept))
    assert wanted_after_crop.any() and np.array_equal(wanted_after_crop[wanted_after_crop > 0],
                                                      wanted[wanted_after_crop > 0])
    seen = {}

    def capture(labels, level_of_value, spacing, direction, order, count, stage1_kji=None):
        seen["stage1"], seen["shape"] = stage1_kji, labels.shape
        return labels, []

    monkeypatch.setattr(inference, "tidy_levels", capture)
    fine = sitk.Image(kept.GetSize(), sitk.sitkUInt8)
    fine.CopyInformation(kept)
    levels = {3: "L1", 7: "L5"}
    inference.restore(case, fine, tmp_path / "out.nii.gz", levels, inference.RunOptions(), stage1=kept)
    assert seen["shape"] == wanted.shape and np.array_equal(seen["stage1"], wanted_after_crop)
    inference.restore(case, fine, tmp_path / "out2.nii.gz", levels, inference.RunOptions(count_levels=False),
                      stage1=kept)
    assert seen["stage1"] is None
    written = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    assert written.GetSize() == size and np.allclose(written.GetDirection(), original.GetDirection())
