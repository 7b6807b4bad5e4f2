"""Stage 1: a 3D DeepLabV3-style network with a graph-convolution label-relation head, for down-scaled volumes.

Residual encoder: a full-resolution stem stage, three strided stages (output stride 8 in-plane; the thick-slice axis
is strided only while it stays large enough, see :func:`nnunet_ext.networks.factory.anisotropic_strides`), then
dilated residual stages at output stride 8 instead of further downsampling. ASPP with atrous rates that fit the small
feature map, the label-relation head on the ASPP features, and a decoder that goes back to input resolution through
the encoder's skip connections (DeepLabV3+-style), with a 1x1 head per decoder level for deep supervision.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .blocks import activation, as_tuple, conv, initialize, norm, resize_to, stage
from .fine2d import UNetDecoder
from .gcn_head import LabelRelationHead
from .precision import CpuAutocast, as_float32


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, one 3x3 branch per rate (per-axis tuples), image pooling."""

    def __init__(self, dim: int, in_channels: int, out_channels: int, rates: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([nn.Sequential(conv(dim, in_channels, out_channels, 1), norm(dim, out_channels),
                                                     activation())])
        for rate in rates:
            self.branches.append(nn.Sequential(conv(dim, in_channels, out_channels, 3, dilation=rate),
                                               norm(dim, out_channels), activation()))
        # image pooling: one vector per image, so no instance norm here (it would see a single value)
        self.pooling = nn.Sequential(nn.AdaptiveAvgPool3d(1) if dim == 3 else nn.AdaptiveAvgPool2d(1),
                                     conv(dim, in_channels, out_channels, 1, bias=True), activation())
        self.project = nn.Sequential(conv(dim, out_channels * (len(self.branches) + 1), out_channels, 1),
                                     norm(dim, out_channels), activation())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pooling(x).expand(-1, -1, *x.shape[2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class CoarseDeepLabGCN3D(CpuAutocast, nn.Module):
    """3D DeepLabV3-style segmentation network with a GCN label-relation head. Returns logits (no softmax).

    Args:
        input_channels, num_classes: as nnU-Net passes them (num_classes without the ignore label).
        class_names: one name per output class (``background``, ``T11``, ...), defining the class graph.
        features_per_stage: widths of the stem and the three strided stages (the dilated stages use the last).
        strides: per-axis strides of those four stages (the first normally 1).
        blocks_per_stage: residual blocks per strided stage.
        dilations: per-axis dilation of each dilated stage (default (1, 2, 2) and (1, 4, 4): none across slices).
        aspp_rates: per-axis atrous rates of the ASPP branches; keep them below the feature-map size.
        aspp_channels, gcn_hidden, gcn_layers: widths of the ASPP and of the graph nodes; graph convolutions.
        deep_supervision: return logits at the stem, first and second stage resolutions (highest first).
        auxiliary_output: with deep supervision on, append the relation head's class scores (input resolution) as
            a last output, so nnU-Net's loss wrapper can give them the auxiliary weight.
    """

    def __init__(self, input_channels: int, num_classes: int, class_names: Sequence[str] | None = None,
                 features_per_stage: Sequence[int] = (32, 64, 128, 256),
                 strides: Sequence[int | Sequence[int]] = (1, 2, 2, 2),
                 blocks_per_stage: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int | Sequence[int]] = ((1, 2, 2), (1, 4, 4)),
                 aspp_rates: Sequence[int | Sequence[int]] = ((1, 2, 2), (1, 4, 4), (2, 6, 6)),
                 aspp_channels: int = 128, gcn_hidden: int = 64, gcn_layers: int = 2,
                 deep_supervision: bool = False, auxiliary_output: bool = False) -> None:
        super().__init__()
        if len(features_per_stage) != 4 or len(strides) != 4 or len(blocks_per_stage) != 4:
            raise ValueError("the coarse network has a stem and three strided stages: give four widths, strides and "
                             "block counts")
        class_names = list(class_names) if class_names is not None else [f"class_{k}" for k in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} output classes")
        self.class_names = class_names
        self.auxiliary_output = auxiliary_output
        self.strides = [as_tuple(s, 3) for s in strides]
        widths = [input_channels, *features_per_stage]
        self.encoder = nn.ModuleList(stage(3, widths[i], widths[i + 1], blocks_per_stage[i], self.strides[i])
                                     for i in range(4))
        deepest = features_per_stage[-1]
        self.dilated = nn.Sequential(*(stage(3, deepest, deepest, 1, 1, as_tuple(d, 3)) for d in dilations))
        self.aspp = ASPP(3, deepest, aspp_channels, [as_tuple(r, 3) for r in aspp_rates])
        self.relation_head = LabelRelationHead(3, aspp_channels, class_names, gcn_hidden, gcn_layers)
        # decoder over the stem, stage 1 and stage 2 skips; the ASPP output takes the place of the deepest skip
        self.decoder = UNetDecoder(3, [*features_per_stage[:3], aspp_channels], num_classes, 1, deep_supervision)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
        """Logits (a list with deep supervision) and the relation head's class scores at input resolution."""
        skips = []
        features = x
        for encoder_stage in self.encoder:
            features = encoder_stage(features)
            skips.append(features)
        fused, class_scores = self.relation_head(self.aspp(self.dilated(features)))
        output = self.decoder([*skips[:3], fused])
        return output, resize_to(class_scores, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.to_cpu_layout(x)
        with self.cpu_autocast(x):
            output, class_scores = self.forward_with_aux(x)
        if self.auxiliary_output and self.decoder.deep_supervision:
            return as_float32([*output, class_scores])
        return as_float32(output)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        initialize(module)
