"""The Dice of "any vertebra" and its cross-entropy near the edge, added to the level-wise loss
(nnunet_ext.training.union_loss): analytic values."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from nnunet_ext.training.union_loss import UnionDiceLoss, union_dice_loss  # noqa: E402

IGNORE = 3  # classes 0 (background), 1, 2; label 3 = unannotated


def _confident(labels: torch.Tensor, classes: int = 3, score: float = 30.0) -> torch.Tensor:
    """Logits (1, classes, *spatial) that give each voxel its label with probability ~1."""
    logits = torch.full((1, classes, *labels.shape), -score)
    for c in range(classes):
        logits[0, c][labels == c] = score
    return logits


def test_a_wrong_level_costs_nothing_a_missed_voxel_does():
    """Voxels called the wrong level still lie inside the outline; a vertebra voxel called background does not."""
    target = torch.tensor([[1, 1, 2, 2], [0, 0, 0, 0]])
    swapped = torch.tensor([[2, 2, 1, 1], [0, 0, 0, 0]])
    assert union_dice_loss(_confident(swapped), target[None, None].float()).item() == pytest.approx(-1.0)
    one_missed = torch.tensor([[1, 1, 2, 0], [0, 0, 0, 0]])  # 3 of 4 found: Dice 2 * 3 / (3 + 4)
    assert union_dice_loss(_confident(one_missed), target[None, None].float()).item() == pytest.approx(-6 / 7)


def test_unannotated_voxels_count_neither_way():
    target = torch.tensor([[1, 1, IGNORE, IGNORE], [0, 0, IGNORE, 0]])
    called_vertebra = torch.tensor([[1, 1, 2, 2], [0, 0, 1, 0]])
    called_background = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    for prediction in (called_vertebra, called_background):
        value = union_dice_loss(_confident(prediction), target[None, None].float(), ignore_label=IGNORE)
        assert value.item() == pytest.approx(-1.0)
    # without an ignore label the unannotated value is one more foreground class, and the miss counts
    value = union_dice_loss(_confident(called_background), target[None, None].float())
    assert value.item() == pytest.approx(-2 * 2 / (2 + 5), abs=1e-5)


def test_soft_probabilities_over_the_batch():
    """Uniform scores: P(vertebra) = 2/3 everywhere; Dice = 2 * (2/3 * F) / (2/3 * N + F) over the whole batch."""
    target = torch.zeros(2, 1, 2, 3)
    target[0, 0, 0, :2] = 1
    target[1, 0, 1, 0] = 2  # F = 3 vertebra voxels of N = 12
    value = union_dice_loss(torch.zeros(2, 3, 2, 3), target)
    assert value.item() == pytest.approx(-(2 * 2 / 3 * 3) / (2 / 3 * 12 + 3), abs=1e-5)


def test_gradient_raises_every_level_against_background_on_a_missed_vertebra():
    target = torch.tensor([[[[1, 0]]]]).float()
    logits = torch.zeros(1, 3, 1, 2, requires_grad=True)
    union_dice_loss(logits, target).backward()
    gradient = logits.grad[0, :, 0, 0]
    assert gradient[0] > 0 and gradient[1] < 0 and gradient[2] < 0  # descent lowers background, raises both levels
    assert gradient[1] == pytest.approx(gradient[2].item())  # and prefers no level: that is the level-wise loss's job


def test_loss_adds_the_weighted_term_to_the_base_loss():
    class Constant(torch.nn.Module):
        def forward(self, net_output, target):
            return torch.tensor(0.25)

    target = torch.tensor([[[[1, 0]]]]).float()
    logits = _confident(torch.tensor([[0, 0]]))  # the vertebra voxel missed: Dice 0
    assert UnionDiceLoss(Constant(), 0.5, IGNORE)(logits, target).item() == pytest.approx(0.25, abs=1e-5)
    logits = _confident(torch.tensor([[1, 0]]))
    assert UnionDiceLoss(Constant(), 0.5, IGNORE)(logits, target).item() == pytest.approx(0.25 - 0.5, abs=1e-5)


def test_integer_targets_give_the_float_targets_value():
    """nnU-Net hands targets as float tensors, a DataLoader of labels as integers: the same value either way."""
    target = torch.tensor([[1, 2, 0, IGNORE], [0, 0, 2, 0]])[None, None]
    logits = _confident(torch.tensor([[1, 0, 0, 2], [0, 1, 2, 0]]))  # 2 of 3 found, 1 false positive, 1 ignored
    expected = -2 * 2 / (3 + 3)
    for dtype in (torch.long, torch.uint8, torch.float32):
        value = union_dice_loss(logits, target.to(dtype), ignore_label=IGNORE)
        assert value.item() == pytest.approx(expected, abs=1e-5)


def test_wrapper_passes_gradients_to_both_terms():
    class Squares(torch.nn.Module):
        def forward(self, net_output, target):
            return (net_output ** 2).sum()

    target = torch.tensor([[[[1, 0]]]]).float()
    logits = torch.zeros(1, 3, 1, 2, requires_grad=True)
    UnionDiceLoss(Squares(), 1.0)(logits, target).backward()
    alone = torch.zeros(1, 3, 1, 2, requires_grad=True)
    union_dice_loss(alone, target).backward()
    # the base term's gradient (2 * logits) is zero at zero logits: what is left is the union term's
    assert torch.allclose(logits.grad, alone.grad)
    logits.grad = None
    UnionDiceLoss(Squares(), 0.0)(logits + 1.0, target).backward()
    assert torch.allclose(logits.grad, torch.full_like(logits, 2.0))  # weight 0: the base term's alone


def test_boundary_band_is_the_edge_width_voxels_each_side():
    from nnunet_ext.training.union_loss import boundary_band

    mask = torch.zeros(1, 9, 9, dtype=torch.bool)
    mask[0, 2:7, 2:7] = True  # a 5 x 5 square
    band = boundary_band(mask, 1)[0]
    ring = torch.zeros(9, 9, dtype=torch.bool)
    ring[1:8, 1:8] = True
    ring[3:6, 3:6] = False  # one voxel outside and one inside the edge (chessboard distance)
    assert torch.equal(band, ring)
    assert boundary_band(mask, 2)[0].sum().item() == 81 - 1  # all but the centre
    # a mask that fills the patch has no edge inside it; 3D masks as 2D
    assert not boundary_band(torch.ones(1, 4, 4, dtype=torch.bool), 1).any()
    cube = torch.zeros(1, 5, 5, 5, dtype=torch.bool)
    cube[0, 1:4, 1:4, 1:4] = True
    assert boundary_band(cube, 1).sum().item() == 125 - 1  # every voxel but the 3-voxel cube's centre
    with pytest.raises(ValueError, match="2D or 3D"):
        boundary_band(torch.ones(1, 4), 1)


def test_boundary_loss_analytic_values():
    from nnunet_ext.training.union_loss import union_boundary_loss

    target = torch.zeros(1, 1, 1, 8)
    target[0, 0, 0, 2:6] = 2  # 4 vertebra voxels, edges between 1|2 and 5|6
    # confident and right (a wrong level is still inside the outline): ~0
    right = _confident(torch.tensor([[0, 0, 1, 1, 2, 2, 0, 0]]))
    assert union_boundary_loss(right, target, width=1).item() == pytest.approx(0.0, abs=1e-6)
    # uniform scores over 3 classes: P(vertebra) 2/3 on the band's 2 inside and 2 outside voxels (width 1)
    value = union_boundary_loss(torch.zeros(1, 3, 1, 8), target, width=1).item()
    assert value == pytest.approx(-(2 * torch.log(torch.tensor(2 / 3)) + 2 * torch.log(torch.tensor(1 / 3))).item()
                                  / 4, abs=1e-5)
    # a voxel far from the edge (index 0 at width 1) costs nothing however wrong
    far_wrong = _confident(torch.tensor([[1, 0, 1, 1, 2, 2, 0, 0]]))
    assert union_boundary_loss(far_wrong, target, width=1).item() == pytest.approx(0.0, abs=1e-6)
    # a vertebra voxel called background: free 2 voxels from the edge at width 1, its cross-entropy at width 2
    edge_missed = torch.full((1, 3, 1, 8), -5.0)
    edge_missed[0, 0, 0, [0, 1, 3, 6, 7]] = 5.0  # background outside and at vertebra voxel 3
    edge_missed[0, 1, 0, [2, 4, 5]] = 5.0
    assert union_boundary_loss(edge_missed, target, width=1).item() == pytest.approx(0.0, abs=1e-3)  # band 1, 2, 5, 6
    missed = math.log(math.exp(10.0) / 2 + 1)  # -log P(vertebra) = -log(2 e^-5 / (e^5 + 2 e^-5))
    assert union_boundary_loss(edge_missed, target, width=2).item() == pytest.approx(missed / 8, abs=1e-3)


def test_boundary_loss_leaves_unannotated_voxels_out_and_is_zero_without_an_edge():
    from nnunet_ext.training.union_loss import UnionBoundaryLoss, union_boundary_loss

    target = torch.tensor([[0, 0, 1, 1, IGNORE, IGNORE, 0, 0]])[None, None].float()
    base = _confident(torch.tensor([[0, 0, 1, 1, 0, 0, 0, 0]]))
    called_vertebra = _confident(torch.tensor([[0, 0, 1, 1, 2, 2, 0, 0]]))
    for logits in (base, called_vertebra):  # the unannotated voxels count neither way
        assert union_boundary_loss(logits, target, IGNORE, width=1).item() == pytest.approx(0.0, abs=1e-6)
    assert union_boundary_loss(torch.zeros(1, 3, 1, 8), torch.zeros(1, 1, 1, 8)).item() == 0.0
    logits = torch.zeros(1, 3, 1, 8, requires_grad=True)
    UnionBoundaryLoss(_Zero(), 1.0, IGNORE, 1)(logits, target).backward()
    touched = logits.grad.abs().sum(1)[0, 0] > 0
    # the band (1-4) less the ignored voxels and those within one voxel of them (3): one side of the edge unknown
    assert touched.tolist() == [False, True, True, False, False, False, False, False]


class _Zero(torch.nn.Module):
    def forward(self, net_output, target):
        return net_output.sum() * 0.0


def test_boundary_loss_with_partial_labels_holds_the_edge_to_the_unannotated_region():
    from nnunet_ext.training.union_loss import UnionBoundaryLoss, union_boundary_loss

    # class 1 annotated at 2-3, the unannotated region at 4-5: band (width 1) 1-4, voxel 4 ignored, voxel 3 next to it
    target = torch.tensor([[0, 0, 1, 1, IGNORE, IGNORE, 0, 0]])[None, None].float()
    background_there = _confident(torch.tensor([[0, 0, 1, 1, 0, 0, 0, 0]]))
    unannotated_level_there = _confident(torch.tensor([[0, 0, 1, 1, 2, 2, 0, 0]]))
    annotated_level_there = _confident(torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0]]))
    for logits in (background_there, unannotated_level_there):  # both allowed beyond the annotated chain
        assert union_boundary_loss(logits, target, IGNORE, 1, partial_labels=True).item() == pytest.approx(
            0.0, abs=1e-6)
    # class 1 grown into the region its case annotates elsewhere: -log P(background or class 2) on 1 voxel of 4,
    # -log(2 e^-30 / (e^30 + 2 e^-30)) = 60 - log 2
    grown = union_boundary_loss(annotated_level_there, target, IGNORE, 1, partial_labels=True).item()
    assert grown == pytest.approx((60.0 - math.log(2)) / 4, rel=1e-4)
    assert union_boundary_loss(annotated_level_there, target, IGNORE, 1).item() == pytest.approx(0.0, abs=1e-6)
    # next to the region a vertebra voxel counts by its own level: called class 2 (which the region may hold), voxel
    # 3 costs -log P(class 1) = 60 + log(1 + e^-60) ~ 60 (as "any vertebra" it would cost nothing)
    renamed = _confident(torch.tensor([[0, 0, 1, 2, 2, 2, 0, 0]]))
    assert union_boundary_loss(renamed, target, IGNORE, 1, partial_labels=True).item() == pytest.approx(
        60.0 / 4, rel=1e-4)
    # uniform scores: P(background) 1/3 at 1, P(vertebra) 2/3 at 2, P(class 1) 1/3 at 3, P(background or 2) 2/3 at 4
    uniform = union_boundary_loss(torch.zeros(1, 3, 1, 8), target, IGNORE, 1, partial_labels=True).item()
    assert uniform == pytest.approx(-(2 * math.log(1 / 3) + 2 * math.log(2 / 3)) / 4, abs=1e-5)
    logits = torch.zeros(1, 3, 1, 8, requires_grad=True)
    UnionBoundaryLoss(_Zero(), 1.0, IGNORE, 1, partial_labels=True)(logits, target).backward()
    touched = logits.grad.abs().sum(1)[0, 0] > 0
    assert touched.tolist() == [False, True, True, True, True, False, False, False]  # the whole band, both sides
    # without an unannotated voxel the option changes nothing
    plain = torch.tensor([[0, 0, 1, 1, 0, 0, 0, 0]])[None, None].float()
    assert union_boundary_loss(torch.zeros(1, 3, 1, 8), plain, IGNORE, 1, partial_labels=True).item() == \
        pytest.approx(union_boundary_loss(torch.zeros(1, 3, 1, 8), plain, IGNORE, 1).item())
