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
"""

from __future__ import annotations

import torch
from torch import nn


def union_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_label: int | None = None,
                    smooth: float = 1e-5) -> torch.Tensor:
    """Minus the soft Dice, over the whole batch, of ``1 - softmax(logits)[background]`` against ``target > 0``.

    ``logits``: (batch, classes, *spatial) network scores, class 0 background; ``target``: (batch, 1, *spatial)
    class indices (nnU-Net's layout, float or integer). Voxels labelled ``ignore_label`` count neither way. Minus
    the Dice, as nnU-Net's Dice losses, so that -1 is a perfect outline; ``smooth`` as nnU-Net's soft Dice."""
    labels = target[:, 0]
    foreground_probability = 1.0 - torch.softmax(logits.float(), dim=1)[:, 0]
    annotated = torch.ones_like(labels, dtype=torch.bool) if ignore_label is None else labels != ignore_label
    reference = ((labels > 0) & annotated).float()
    predicted = foreground_probability * annotated.float()
    intersection = (predicted * reference).sum()
    return -(2.0 * intersection + smooth) / (predicted.sum() + reference.sum() + smooth).clamp_min(1e-8)


class UnionDiceLoss(nn.Module):
    """``base(net_output, target) + weight * union_dice_loss(net_output, target, ignore_label)``."""

    def __init__(self, base: nn.Module, weight: float, ignore_label: int | None = None) -> None:
        super().__init__()
        self.base, self.weight = base, float(weight)
        self.ignore_label = None if ignore_label is None else int(ignore_label)

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.base(net_output, target) + self.weight * union_dice_loss(net_output, target, self.ignore_label)


__all__ = ["UnionDiceLoss", "union_dice_loss"]
