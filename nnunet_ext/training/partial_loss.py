"""Training on partial level annotations: what the unannotated region of a case can and cannot be.

A reference that annotates L1-L5 leaves T12 and S1 unannotated; ``spine-convert --ignore-beyond`` marks that region
with nnU-Net's ignore label, so nnU-Net's loss says nothing there. Nothing then stops the network from growing L5 into
the unannotated sacrum or L1 into T12 (the prediction of such a case costs no loss), and it does: on the real
MyoSegmenTUM cases about a third of the multiclass false positives were L5 voxels on S1 and L1 voxels on T12.

But the region is not unknown: a level the same case annotates elsewhere is annotated completely, so an unannotated
voxel is background or one of the levels the case does not annotate. :func:`annotated_levels_penalty` is the
cross-entropy of that set ("partial-label" or marginal likelihood), ``-log P(background or a level not annotated in
the sample)``, averaged over the unannotated voxels of the batch (each sample with its own annotated levels).
Background and the levels the sample does not annotate form one allowed set, so the term does not teach
"unannotated vertebra = background" for a level of the scheme that the sample lacks; only where a sample annotates
every level of the scheme (then an unannotated voxel can only be background, e.g. a T10 outside T11-S2) does it
amount to cross-entropy towards background. Consequence for datasets: the ignore label means "none of the levels
this case annotates", not "unsure", so it must not be used for doubtful voxels of an annotated body.

Only for level-labelled (multiclass) data: a binary reference's one class is "any vertebra", which the unannotated
region may well hold.
"""

from __future__ import annotations

import torch
from torch import nn


def annotated_levels_penalty(logits: torch.Tensor, target: torch.Tensor, ignore_label: int) -> torch.Tensor:
    """Mean over the unannotated voxels (``target == ignore_label``) of ``-log`` of the probability that the voxel is
    background or a class that its sample does not annotate.

    ``logits``: (batch, classes, *spatial) network scores; ``target``: (batch, 1, *spatial) class indices with the
    ignore label (nnU-Net's layout, float or integer). The classes "annotated in the sample" are those present in the
    sample's target outside the unannotated region (background never counts). A scalar that is 0 (and keeps the
    graph) when no voxel is unannotated."""
    labels = target[:, 0].long()
    unannotated = labels == ignore_label
    if not bool(unannotated.any()):
        return logits.sum() * 0.0
    batch, classes = logits.shape[:2]
    annotated = torch.where(unannotated, 0, labels).clamp_(0, classes - 1).reshape(batch, -1)
    present = torch.zeros(batch, classes, dtype=torch.bool, device=logits.device)
    present.scatter_(1, annotated, True)
    present[:, 0] = False
    log_p = torch.log_softmax(logits.float(), dim=1)
    forbidden = present.reshape(batch, classes, *([1] * (logits.dim() - 2)))
    log_allowed = torch.logsumexp(log_p.masked_fill(forbidden, float("-inf")), dim=1)  # background always allowed
    return -log_allowed[unannotated].mean()


class UnannotatedLevelsLoss(nn.Module):
    """``base(net_output, target) + weight * annotated_levels_penalty(net_output, target, ignore_label)``: nnU-Net's
    loss (which ignores the unannotated region) plus what that region is known not to be."""

    def __init__(self, base: nn.Module, ignore_label: int, weight: float = 1.0) -> None:
        super().__init__()
        self.base, self.ignore_label, self.weight = base, int(ignore_label), float(weight)

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.base(net_output, target)
        return loss + self.weight * annotated_levels_penalty(net_output, target, self.ignore_label)


__all__ = ["UnannotatedLevelsLoss", "annotated_levels_penalty"]
