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

What the region is known to hold: the level next to each end of the annotated chain (S1 below an annotated L5, T12
above an annotated L1) lies right beyond it, across one disc, whenever the field of view reaches that far.
:func:`adjacent_level_presence_penalty` asks that level to be found there (a multiple-instance term: ``-log`` of the
mean probability of the adjacent level over the most likely voxels of a band beyond the annotated end). Without it,
a level the references of most cases leave unannotated (S1 in chu2015_t2 and MyoSegmenTUM) is learnt from the few
cases that annotate it, and only on their contrast. For 3D patches only: a 2D slice need not hold the adjacent body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


def allowed_log_probability(log_probabilities: torch.Tensor, labels: torch.Tensor,
                            unannotated: torch.Tensor) -> torch.Tensor:
    """Per voxel, ``log`` of the probability that it is background or a class its sample does not annotate.

    ``log_probabilities``: (batch, classes, *spatial) log-softmax; ``labels``: (batch, *spatial) integer class
    indices; ``unannotated``: boolean (batch, *spatial), the voxels whose label is nnU-Net's ignore label. The classes
    "annotated in the sample" are those of ``labels`` outside ``unannotated`` (background never counts). Returns
    (batch, *spatial); meaningful where ``unannotated`` holds."""
    batch, classes = log_probabilities.shape[:2]
    annotated = torch.where(unannotated, 0, labels).clamp(0, classes - 1).reshape(batch, -1)
    present = torch.zeros(batch, classes, dtype=torch.bool, device=log_probabilities.device)
    present.scatter_(1, annotated, True)
    present[:, 0] = False
    forbidden = present.reshape(batch, classes, *([1] * (log_probabilities.dim() - 2)))
    return torch.logsumexp(log_probabilities.masked_fill(forbidden, float("-inf")), dim=1)  # background allowed


def annotated_levels_penalty(logits: torch.Tensor, target: torch.Tensor, ignore_label: int) -> torch.Tensor:
    """Mean over the unannotated voxels (``target == ignore_label``) of ``-log`` of the probability that the voxel is
    background or a class that its sample does not annotate (:func:`allowed_log_probability`).

    ``logits``: (batch, classes, *spatial) network scores; ``target``: (batch, 1, *spatial) class indices with the
    ignore label (nnU-Net's layout, float or integer). A scalar that is 0 (and keeps the graph) when no voxel is
    unannotated."""
    labels = target[:, 0].long()
    unannotated = labels == ignore_label
    if not bool(unannotated.any()):
        return logits.sum() * 0.0
    log_allowed = allowed_log_probability(torch.log_softmax(logits.float(), dim=1), labels, unannotated)
    return -log_allowed[unannotated].mean()


@dataclass(frozen=True)
class PresenceBand:
    """Where an adjacent unannotated level is looked for: the band from the annotated end body's outer extent to
    ``depth_mm`` beyond it (along the line from the neighbouring annotated body's centroid to the end body's),
    within ``radius_mm`` of that line; its ``top_mm3`` most likely voxels (at least one) carry the term. The term
    applies only where unannotated voxels reach beyond the band (the field of view covers it)."""

    depth_mm: float = 30.0  # a disc (about 10 mm) and the first third of the next body
    radius_mm: float = 40.0  # half a lumbar body's width and some tilt
    top_mm3: float = 1000.0  # about 4 % of a lumbar body


def _adjacent_levels(present: list[int], ordered_classes: Sequence[int]) -> list[tuple[int, int, int]]:
    """(end class, its annotated neighbour, the unannotated class beyond it) for both ends of a sample's chain."""
    ranks = sorted(ordered_classes.index(c) for c in present if c in ordered_classes)
    if len(ranks) < 2:
        return []
    ends = [(ranks[-1], ranks[-2], ranks[-1] + 1), (ranks[0], ranks[1], ranks[0] - 1)]
    return [(ordered_classes[e], ordered_classes[n], ordered_classes[a]) for e, n, a in ends
            if 0 <= a < len(ordered_classes) and ordered_classes[a] not in present]


def _positions(flat_indices: torch.Tensor, shape: Sequence[int], spacing: Sequence[float]) -> torch.Tensor:
    """Positions (mm), (n, dim), of flat voxel indices of an array of ``shape``."""
    coordinates = torch.stack(torch.unravel_index(flat_indices, tuple(shape)), -1)
    return coordinates.float() * torch.tensor([float(s) for s in spacing], device=flat_indices.device)


def _band_log_probability(logits: torch.Tensor, adjacent: int, labels: torch.Tensor, unannotated: torch.Tensor,
                          spacing: Sequence[float], end: int, neighbour: int, band: PresenceBand
                          ) -> torch.Tensor | None:
    """``log`` of the mean probability of class ``adjacent`` (``logits``: one sample, (classes, *spatial)) over the
    band's most likely voxels, or None where the field of view does not cover the band."""
    flat = labels.reshape(-1)
    end_positions = _positions(torch.nonzero(flat == end)[:, 0], labels.shape, spacing)
    centre = end_positions.mean(0)
    axis = centre - _positions(torch.nonzero(flat == neighbour)[:, 0], labels.shape, spacing).mean(0)
    if float(axis.norm()) == 0.0:
        return None
    axis = axis / axis.norm()
    outer = ((end_positions - centre) @ axis).max()
    candidates = torch.nonzero(unannotated.reshape(-1))[:, 0]
    offsets = _positions(candidates, labels.shape, spacing) - centre
    along = offsets @ axis
    near = (offsets - along[:, None] * axis).norm(dim=-1) <= band.radius_mm
    if not bool((near & (along >= outer + band.depth_mm)).any()):
        return None
    in_band = candidates[near & (along > outer) & (along <= outer + band.depth_mm)]
    if in_band.numel() == 0:
        return None
    scores = logits.reshape(logits.shape[0], -1)[:, in_band].float()  # (classes, band voxels): softmax only here
    values = scores[adjacent] - torch.logsumexp(scores, dim=0)
    top = max(1, min(values.numel(), round(band.top_mm3 / math.prod(float(s) for s in spacing))))
    return torch.logsumexp(values.topk(top).values, 0) - math.log(top)


def adjacent_level_presence_penalty(logits: torch.Tensor, target: torch.Tensor, ignore_label: int,
                                    ordered_classes: Sequence[int], spacing: Sequence[float],
                                    band: PresenceBand = PresenceBand(),
                                    asked: Sequence[int] | None = None) -> torch.Tensor:
    """Mean over the (sample, chain end) pairs that qualify of ``-log`` of the mean probability of the adjacent
    unannotated level over the most likely voxels of its band (:class:`PresenceBand`); 0 (keeping the graph) where
    none qualifies.

    ``logits``: (batch, classes, *spatial) of a 3D patch; ``target``: (batch, 1, *spatial) with the ignore label;
    ``ordered_classes``: the level classes cranial first (consecutive levels of the scheme); ``spacing``: mm per
    voxel of the patch's axes (of this output's resolution); ``asked``: the classes whose presence may be asked (None:
    all). A pair qualifies when the sample annotates at least two levels, the class beyond its end is one it does not
    annotate (and is asked), and its unannotated voxels reach beyond the band."""
    labels_all = target[:, 0].long()
    terms = []
    for b in range(labels_all.shape[0]):
        labels = labels_all[b]
        unannotated = labels == ignore_label
        if not bool(unannotated.any()):
            continue
        counts = torch.bincount(labels.reshape(-1).clamp(min=0), minlength=logits.shape[1])
        present = [c for c in range(1, logits.shape[1]) if c != ignore_label and int(counts[c]) > 0]
        for end, neighbour, adjacent in _adjacent_levels(present, list(ordered_classes)):
            if asked is not None and adjacent not in asked:
                continue
            value = _band_log_probability(logits[b], adjacent, labels, unannotated, spacing, end, neighbour, band)
            if value is not None:
                terms.append(-value)
    return torch.stack(terms).mean() if terms else logits.sum() * 0.0


class UnannotatedLevelsLoss(nn.Module):
    """``base(net_output, target) + weight * annotated_levels_penalty(net_output, target, ignore_label)``: nnU-Net's
    loss (which ignores the unannotated region) plus what that region is known not to be."""

    def __init__(self, base: nn.Module, ignore_label: int, weight: float = 1.0, presence_weight: float = 0.0,
                 ordered_classes: Sequence[int] = (), patch_size: Sequence[int] = (),
                 spacing: Sequence[float] = (), asked_classes: Sequence[int] | None = None) -> None:
        """``presence_weight`` > 0 adds :func:`adjacent_level_presence_penalty` (3D patches only) to the outputs of
        the full resolution, ``patch_size`` at ``spacing`` (the coarser deep-supervision outputs get nnU-Net's loss
        and the partial-label term only; the presence term costs about 0.02 s per output of 2 x 16 x 64 x 64 voxels
        on one CPU core)."""
        super().__init__()
        self.base, self.ignore_label, self.weight = base, int(ignore_label), float(weight)
        self.presence_weight, self.ordered_classes = float(presence_weight), tuple(ordered_classes)
        self.patch_size, self.spacing = tuple(patch_size), tuple(spacing)
        self.asked_classes = None if asked_classes is None else tuple(asked_classes)
        if self.presence_weight and not (len(self.patch_size) == len(self.spacing) == 3 and self.ordered_classes):
            raise ValueError("the presence term needs a 3D patch size, its spacing and the ordered level classes")

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.base(net_output, target)
        loss = loss + self.weight * annotated_levels_penalty(net_output, target, self.ignore_label)
        if self.presence_weight and tuple(target.shape[2:]) == self.patch_size:
            loss = loss + self.presence_weight * adjacent_level_presence_penalty(
                net_output, target, self.ignore_label, self.ordered_classes, self.spacing,
                asked=self.asked_classes)
        return loss


__all__ = ["PresenceBand", "UnannotatedLevelsLoss", "adjacent_level_presence_penalty", "allowed_log_probability",
           "annotated_levels_penalty"]
