"""A Dice term on "any vertebra" for level-labelled (multiclass) training.

nnU-Net's multiclass loss averages one soft Dice per level: each level's own outline counts as much as any other's,
and nothing in it rewards a voxel for staying inside the outline of the vertebral bodies taken together (a voxel
called the wrong level costs even more than one called background: it is missed by one level and wrongly added to
another). The measurements and the binary figures, though, depend on that outline, which the single-class model
M_SC optimises directly. :func:`union_dice_loss` is its Dice: the soft Dice of the probability of "any vertebra"
(one minus the background probability) against the union of the levels, over the batch's annotated voxels (the
unannotated region, nnU-Net's ignore label, may hold vertebrae or not and is left out).

The Dice is reduced over the local batch only: under DDP, where nnU-Net's batch Dice gathers its sums across
processes, each process's term sees its own share of the batch.

:func:`union_boundary_loss` weights the outline itself: the cross-entropy of "any vertebra" on the voxels within a
few voxels of the union's edge (inside and outside), where the binary errors of a trained model lie (docs/benchmarks.md,
"Eighth" and "Twenty-third session": 1-3 voxels deep). nnU-Net's cross-entropy averages over every voxel of the
patch, most of them far from any edge.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_ext.training.partial_loss import allowed_log_probability


def _annotated_union(target: torch.Tensor, ignore_label: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (batch, *spatial) masks of a (batch, 1, *spatial) target: the voxels not labelled ``ignore_label``
    (all of them without one) and, among those, the vertebra voxels (any label above 0)."""
    labels = target[:, 0]
    annotated = torch.ones_like(labels, dtype=torch.bool) if ignore_label is None else labels != ignore_label
    return annotated, (labels > 0) & annotated


def union_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_label: int | None = None,
                    smooth: float = 1e-5) -> torch.Tensor:
    """Minus the soft Dice, over the whole batch, of ``1 - softmax(logits)[background]`` against ``target > 0``.

    ``logits``: (batch, classes, *spatial) network scores, class 0 background; ``target``: (batch, 1, *spatial)
    class indices (nnU-Net's layout, float or integer). Voxels labelled ``ignore_label`` count neither way. Minus
    the Dice, as nnU-Net's Dice losses, so that -1 is a perfect outline; ``smooth`` as nnU-Net's soft Dice."""
    foreground_probability = 1.0 - torch.softmax(logits.float(), dim=1)[:, 0]
    annotated, union = _annotated_union(target, ignore_label)
    reference = union.float()
    predicted = foreground_probability * annotated.float()
    intersection = (predicted * reference).sum()
    return -(2.0 * intersection + smooth) / (predicted.sum() + reference.sum() + smooth).clamp_min(1e-8)


def boundary_band(reference: torch.Tensor, width: int) -> torch.Tensor:
    """Voxels within ``width`` voxels (chessboard distance, along every spatial axis) of the edge of a boolean mask
    (batch, *spatial): the mask dilated minus the mask eroded, each by ``width``; a voxel on the patch's border counts
    its outside as unknown (neither grown nor shrunk from there)."""
    spatial = reference.dim() - 1
    pool = {2: nn.functional.max_pool2d, 3: nn.functional.max_pool3d}.get(spatial)
    if pool is None:
        raise ValueError(f"boundary_band: 2D or 3D masks, got {spatial} spatial axes")
    x = reference.float()[:, None]
    kernel = 2 * width + 1
    grown = pool(x, kernel, stride=1, padding=width)
    shrunk = -pool(-x, kernel, stride=1, padding=width)
    return (grown > shrunk)[:, 0]


def union_boundary_loss(logits: torch.Tensor, target: torch.Tensor, ignore_label: int | None = None,
                        width: int = 2, partial_labels: bool = False) -> torch.Tensor:
    """The mean binary cross-entropy of "any vertebra" (``1 - softmax(logits)[background]``) against ``target > 0``
    over :func:`boundary_band`'s voxels of the union (``width`` voxels each side of its edge). 0 where a batch holds
    no edge. Layouts as :func:`union_dice_loss`.

    Where the union's edge meets the unannotated region (voxels labelled ``ignore_label``: an L1 under an
    unannotated T12), the outside of the edge is unknown as "any vertebra" and the inside alone would push the
    outline out into the disc and the next body unopposed (it did: the twenty-fifth session). With ``partial_labels``
    False, ignored voxels and band voxels within ``width`` of them count neither way. With ``partial_labels`` True,
    the whole band counts and the edge there is that of each level against what the region may be: its ignored
    voxels count by what they are known not to be (``-log`` of the probability of background or a level the sample
    does not annotate, :func:`.partial_loss.allowed_log_probability`), and the vertebra voxels within ``width`` of
    the region by their own level (``-log`` of its probability), not as "any vertebra", which a level the region
    may hold would also satisfy (the twenty-sixth session: with "any vertebra" there, the outline grew into the
    region under the unannotated levels' names)."""
    annotated, reference = _annotated_union(target, ignore_label)
    unannotated = ~annotated
    near_unannotated = boundary_band(unannotated, width) if bool(unannotated.any()) else None
    partial = partial_labels and near_unannotated is not None
    band = boundary_band(reference, width)
    if near_unannotated is not None and not partial:  # near the unannotated region: one side of the edge unknown
        band &= annotated & ~near_unannotated
    if not band.any():
        return logits.sum() * 0.0
    log_probabilities = torch.log_softmax(logits.float(), dim=1)
    log_background = log_probabilities[:, 0]
    log_foreground = torch.logsumexp(log_probabilities[:, 1:], dim=1)
    picked = torch.where(reference, log_foreground, log_background)
    if partial:
        labels = target[:, 0].long()
        allowed = allowed_log_probability(log_probabilities, labels, unannotated)
        own = log_probabilities.gather(1, labels.clamp(0, logits.shape[1] - 1)[:, None])[:, 0]
        picked = torch.where(reference & near_unannotated, own, picked)
        picked = torch.where(unannotated, allowed, picked)
    return -picked[band].mean()


class UnionDiceLoss(nn.Module):
    """``base(net_output, target) + weight * union_dice_loss(net_output, target, ignore_label)``."""

    def __init__(self, base: nn.Module, weight: float, ignore_label: int | None = None) -> None:
        super().__init__()
        self.base, self.weight = base, float(weight)
        self.ignore_label = None if ignore_label is None else int(ignore_label)

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.base(net_output, target) + self.weight * union_dice_loss(net_output, target, self.ignore_label)


class UnionBoundaryLoss(nn.Module):
    """``base(net_output, target) + weight * union_boundary_loss(net_output, target, ignore_label, width,
    partial_labels)``."""

    def __init__(self, base: nn.Module, weight: float, ignore_label: int | None = None, width: int = 2,
                 partial_labels: bool = False) -> None:
        super().__init__()
        self.base, self.weight, self.width, self.partial_labels = base, float(weight), int(width), bool(partial_labels)
        self.ignore_label = None if ignore_label is None else int(ignore_label)

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.base(net_output, target) + self.weight * union_boundary_loss(
            net_output, target, self.ignore_label, self.width, self.partial_labels)


__all__ = ["UnionBoundaryLoss", "UnionDiceLoss", "boundary_band", "union_boundary_loss", "union_dice_loss"]
