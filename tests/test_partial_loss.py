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
