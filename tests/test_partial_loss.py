"""The partial-label term on unannotated regions (nnunet_ext.training.partial_loss): analytic values on tiny tensors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from nnunet_ext.training.partial_loss import UnannotatedLevelsLoss, annotated_levels_penalty  # noqa: E402

IGNORE = 3  # classes 0 (background), 1, 2; label 3 = unannotated


def test_uniform_scores_give_minus_log_of_the_allowed_share():
    """Sample annotates class 1: an unannotated voxel may be background or class 2, 2 of 3 equal probabilities."""
    logits = torch.zeros(1, 3, 4)
    target = torch.tensor([[[1, 1, IGNORE, IGNORE]]])
    assert annotated_levels_penalty(logits, target, IGNORE).item() == pytest.approx(-math.log(2 / 3), abs=1e-6)


def test_known_probabilities():
    """p(class 1) = 0.7 at the unannotated voxel: penalty -log(0.3); the annotated voxel does not count."""
    probabilities = torch.tensor([0.2, 0.7, 0.1])
    logits = torch.stack([probabilities.log(), torch.tensor([0.1, 0.8, 0.1]).log()], dim=-1)[None]  # (1, 3, 2)
    target = torch.tensor([[[IGNORE, 1]]])
    assert annotated_levels_penalty(logits, target, IGNORE).item() == pytest.approx(-math.log(0.3), abs=1e-5)


def test_zero_without_unannotated_voxels_and_still_differentiable():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    target = torch.tensor([[[0, 1, 2, 1, 0]], [[0, 0, 0, 0, 0]]])
    penalty = annotated_levels_penalty(logits, target, IGNORE)
    assert penalty.item() == 0.0
    penalty.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_no_annotated_class_means_nothing_is_forbidden():
    """A sample that annotates nothing (only background and unannotated voxels) allows every class: penalty 0."""
    logits = torch.randn(1, 3, 6)
    target = torch.tensor([[[0, 0, IGNORE, IGNORE, IGNORE, 0]]])
    assert annotated_levels_penalty(logits, target, IGNORE).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_lowers_the_annotated_class_and_does_not_prefer_background():
    """At an unannotated voxel the annotated level's score goes down; background and the unannotated level 2 are
    pushed up alike (the term never teaches "unannotated = background")."""
    logits = torch.zeros(1, 3, 2, requires_grad=True)
    target = torch.tensor([[[1, IGNORE]]])
    annotated_levels_penalty(logits, target, IGNORE).backward()
    grad = logits.grad[0, :, 1]
    assert grad[1] > 0  # gradient descent lowers class 1
    assert grad[0] < 0 and grad[2] < 0 and grad[0].item() == pytest.approx(grad[2].item())
    assert torch.all(logits.grad[0, :, 0] == 0)  # annotated voxels: only the base loss speaks


def test_each_sample_forbids_its_own_levels():
    """Sample 0 annotates class 1, sample 1 class 2: at equal scores each unannotated voxel loses -log(2/3), and
    making class 2 certain in sample 0 costs nothing while it costs a lot in sample 1."""
    target = torch.tensor([[[1, IGNORE]], [[2, IGNORE]]])
    logits = torch.zeros(2, 3, 2)
    assert annotated_levels_penalty(logits, target, IGNORE).item() == pytest.approx(-math.log(2 / 3), abs=1e-6)
    logits[:, 2, 1] = 20.0  # both unannotated voxels say "class 2"
    penalty_0 = annotated_levels_penalty(logits[:1], target[:1], IGNORE).item()
    penalty_1 = annotated_levels_penalty(logits[1:], target[1:], IGNORE).item()
    assert penalty_0 == pytest.approx(0.0, abs=1e-6) and penalty_1 == pytest.approx(20.0 - math.log(2), abs=1e-3)


def test_float_targets_and_3d_shapes_as_nnunet_passes_them():
    logits = torch.zeros(2, 3, 2, 3, 4)
    target = torch.full((2, 1, 2, 3, 4), float(IGNORE))
    target[:, :, 0] = 1.0
    assert annotated_levels_penalty(logits, target, IGNORE).item() == pytest.approx(-math.log(2 / 3), abs=1e-6)


def test_loss_adds_the_weighted_term_to_the_base_loss():
    class Constant(torch.nn.Module):
        def forward(self, net_output, target):
            return torch.tensor(1.5)

    logits = torch.zeros(1, 3, 4)
    target = torch.tensor([[[1, 1, IGNORE, IGNORE]]])
    loss = UnannotatedLevelsLoss(Constant(), IGNORE, weight=2.0)
    assert loss(logits, target).item() == pytest.approx(1.5 - 2.0 * math.log(2 / 3), abs=1e-6)


def test_only_background_allowed_with_confident_scores_stays_finite():
    """A sample annotating every foreground class allows only background: large opposing scores give a large but
    finite penalty (-log softmax of background: 100 + log 2) and finite gradients."""
    logits = torch.zeros(1, 3, 3)
    logits[0, :, 0] = torch.tensor([-50.0, 50.0, 50.0])  # the unannotated voxel is sure it is class 1 or 2
    logits.requires_grad_(True)
    target = torch.tensor([[[IGNORE, 1, 2]]])
    penalty = annotated_levels_penalty(logits, target, IGNORE)
    penalty.backward()
    assert torch.isfinite(penalty) and penalty.item() == pytest.approx(100.0 + math.log(2), abs=1e-3)
    assert torch.isfinite(logits.grad).all()


# --- the presence term: the unannotated level next to an annotated end is looked for beyond it -------------------

PIGNORE = 5  # classes 0 background, 1 L4, 2 L5, 3 S1, 4 S2; label 5 = unannotated
ORDER = (1, 2, 3, 4)


def _chain(length: int = 40, fov_end: int | None = None, axis: int = 0) -> torch.Tensor:
    """A (1, 1, length, 6, 6) target (at 2 mm, 80 mm along the chain): L4 at 2-5, L5 at 7-10, then unannotated up to
    ``fov_end`` (padding as background beyond), along ``axis`` (0: caudal = increasing index)."""
    labels = torch.zeros(length, 6, 6, dtype=torch.long)
    labels[2:6, 1:5, 1:5] = 1
    labels[7:11, 1:5, 1:5] = 2
    labels[11:fov_end or length] = PIGNORE
    labels = labels.movedim(0, axis)
    return labels[None, None]


def test_presence_term_is_minus_log_of_the_adjacent_level_probability():
    """Uniform scores over 5 classes: the band's top voxels have p(S1) = 1/5, the term is log 5."""
    from nnunet_ext.training.partial_loss import adjacent_level_presence_penalty

    target = _chain()
    logits = torch.zeros(1, 5, *target.shape[2:])
    value = adjacent_level_presence_penalty(logits, target, PIGNORE, ORDER, (2.0, 2.0, 2.0))
    assert value.item() == pytest.approx(math.log(5), abs=1e-5)


def test_presence_term_is_small_where_the_adjacent_level_is_found_in_the_band_and_only_there():
    from nnunet_ext.training.partial_loss import PresenceBand, adjacent_level_presence_penalty

    target = _chain()
    band = PresenceBand(depth_mm=10.0, radius_mm=40.0, top_mm3=8.0)  # 5 slices beyond L5's end (index 10), 1 voxel
    logits = torch.zeros(1, 5, *target.shape[2:])
    logits[0, 3, 13, 3, 3] = 20.0  # S1 certain at one voxel 3 slices (6 mm) below L5
    assert adjacent_level_presence_penalty(logits, target, PIGNORE, ORDER, (2.0,) * 3, band).item() < 1e-6
    logits = torch.zeros(1, 5, *target.shape[2:])
    logits[0, 3, 20, 3, 3] = 20.0  # 20 mm below L5: outside the band, which stays uniform
    assert adjacent_level_presence_penalty(logits, target, PIGNORE, ORDER, (2.0,) * 3, band).item() == \
        pytest.approx(math.log(5), abs=1e-5)


def test_presence_term_needs_the_field_of_view_beyond_the_band_and_an_unannotated_adjacent_level():
    from nnunet_ext.training.partial_loss import PresenceBand, adjacent_level_presence_penalty

    band = PresenceBand(depth_mm=10.0)
    short = _chain(fov_end=14)
    logits = torch.zeros(1, 5, *short.shape[2:], requires_grad=True)  # the image ends 3 slices (6 mm) below L5
    value = adjacent_level_presence_penalty(logits, short, PIGNORE, ORDER, (2.0,) * 3, band)
    assert value.item() == 0.0
    value.backward()
    assert torch.count_nonzero(logits.grad) == 0
    annotated = _chain()
    annotated[0, 0, 12:16, 1:5, 1:5] = 3  # S1 annotated: the adjacent level is S2, and the FOV must reach beyond S1
    value = adjacent_level_presence_penalty(torch.zeros(1, 5, *annotated.shape[2:]), annotated, PIGNORE, ORDER,
                                            (2.0,) * 3, band)
    assert value.item() == pytest.approx(math.log(5), abs=1e-5)
    only_l5 = _chain()
    only_l5[only_l5 == 1] = 0  # one annotated level gives no direction
    assert adjacent_level_presence_penalty(torch.zeros(1, 5, *only_l5.shape[2:]), only_l5, PIGNORE, ORDER, (2.0,) * 3,
                                           band).item() == 0.0


def test_presence_term_reads_the_direction_from_the_annotation_and_respects_spacing():
    """The chain along the last axis, reversed (caudal = decreasing index): the band is found all the same; with
    a 4 mm spacing along it the same 10 mm band holds fewer slices."""
    from nnunet_ext.training.partial_loss import PresenceBand, adjacent_level_presence_penalty

    target = _chain(length=24, axis=2).flip(-1)  # L5 at indices 13-16 of 24, unannotated 0-12
    band = PresenceBand(depth_mm=10.0, radius_mm=40.0, top_mm3=8.0)
    logits = torch.zeros(1, 5, *target.shape[2:])
    logits[0, 3, 3, 3, 10] = 20.0  # 6 mm below L5 at 2 mm spacing
    assert adjacent_level_presence_penalty(logits, target, PIGNORE, ORDER, (2.0,) * 3, band).item() < 1e-6
    logits = torch.zeros(1, 5, *target.shape[2:])
    logits[0, 3, 3, 3, 9] = 20.0  # 16 mm below L5 at 4 mm spacing: outside
    spacing = (2.0, 2.0, 4.0)
    assert adjacent_level_presence_penalty(logits, target, PIGNORE, ORDER, spacing, band).item() > 1.0


def test_presence_term_in_the_loss_applies_to_full_resolution_outputs_only():
    """Deep supervision: a half-resolution output of the same patch gets nnU-Net's loss and the partial term only."""
    base = torch.nn.Module()
    base.forward = lambda output, target: output.sum() * 0.0
    loss = UnannotatedLevelsLoss(base, PIGNORE, weight=0.0, presence_weight=1.0, ordered_classes=ORDER,
                                 patch_size=(40, 6, 6), spacing=(2.0, 2.0, 2.0))
    target = _chain()
    assert loss(torch.zeros(1, 5, 40, 6, 6), target).item() == pytest.approx(math.log(5), abs=1e-5)
    half = target[:, :, ::2, ::2, ::2]
    assert loss(torch.zeros(1, 5, 20, 3, 3), half).item() == 0.0
    with pytest.raises(ValueError, match="3D patch"):
        UnannotatedLevelsLoss(base, PIGNORE, presence_weight=1.0, ordered_classes=ORDER, patch_size=(24, 6),
                              spacing=(2.0, 2.0))


def test_presence_term_asks_only_for_the_listed_levels():
    """Both ends qualify (L4 above is the chain's cranial end, L3 would be asked for): only S1 asked -> one term."""
    from nnunet_ext.training.partial_loss import adjacent_level_presence_penalty

    order = (1, 2, 3, 4, 5)  # 1 L3, 2 L4, 3 L5, 4 S1, 5 S2; ignore 6
    labels = torch.full((60, 6, 6), 6, dtype=torch.long)
    labels[20:24, 1:5, 1:5] = 2
    labels[25:29, 1:5, 1:5] = 3
    labels[24] = 0
    labels[29] = 0
    logits = torch.zeros(1, 6, 60, 6, 6)
    logits[0, 4, 32, 3, 3] = 20.0  # S1 found below L5; L3 above L4 not
    target = labels[None, None]
    both = adjacent_level_presence_penalty(logits, target, 6, order, (2.0,) * 3)
    only_s1 = adjacent_level_presence_penalty(logits, target, 6, order, (2.0,) * 3, asked=(4,))
    assert only_s1.item() < both.item()
    assert adjacent_level_presence_penalty(logits, target, 6, order, (2.0,) * 3, asked=(1,)).item() > 1.0
