"""Stage 2: a 2D residual U-Net on full-resolution sagittal slices.

Its input is the image slice plus one channel per foreground class of the coarse segmentation (nnU-Net's cascade
convention: the one-hot of the previous stage without background, concatenated by nnU-Net's data loader), so
``input_channels = image channels + foreground classes``. Logits out; with deep supervision a list of logits,
highest resolution first (one per decoder level, as nnU-Net's ``_get_deep_supervision_scales`` expects from the
``strides``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .blocks import as_tuple, conv, initialize, resize_to, stage
from .precision import CpuAutocast, as_float32


class UNetDecoder(nn.Module):
    """Upsample (linear, to the skip's exact size), concatenate the skip, residual blocks, a 1x1 head per level.

    Every level has its head whether deep supervision is on or off, so the state dict is the same either way;
    nnU-Net switches ``deep_supervision`` on this object.
    """

    def __init__(self, dim: int, features_per_stage: Sequence[int], num_classes: int, blocks_per_level: int = 1,
                 deep_supervision: bool = False) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        n = len(features_per_stage)
        self.reduce = nn.ModuleList(conv(dim, features_per_stage[level + 1], features_per_stage[level], kernel=1)
                                    for level in range(n - 1))
        self.blocks = nn.ModuleList(stage(dim, 2 * features_per_stage[level], features_per_stage[level],
                                          blocks_per_level) for level in range(n - 1))
        self.heads = nn.ModuleList(conv(dim, features_per_stage[level], num_classes, kernel=1, bias=True)
                                   for level in range(n - 1))

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        outputs = []
        for level in range(len(skips) - 2, -1, -1):
            x = resize_to(self.reduce[level](x), skips[level])
            x = self.blocks[level](torch.cat([x, skips[level]], dim=1))
            if self.deep_supervision or level == 0:
                outputs.append(self.heads[level](x))
        return outputs[::-1] if self.deep_supervision else outputs[-1]


class ResidualUNet2D(CpuAutocast, nn.Module):
    """2D residual U-Net (ResNet blocks in the encoder, one residual block per decoder level).

    Args:
        input_channels: image channels plus one channel per foreground class of the coarse stage.
        num_classes: output classes (background included, ignore label excluded).
        features_per_stage: widths per resolution level (default five levels, 32-512).
        strides: per stage, the first one usually 1 (default: 1 then 2 per level).
        blocks_per_stage: residual blocks per encoder stage.
        deep_supervision: return one output per decoder level (highest resolution first).
    """

    def __init__(self, input_channels: int, num_classes: int,
                 features_per_stage: Sequence[int] = (32, 64, 128, 256, 512),
                 strides: Sequence[int | Sequence[int]] | None = None,
                 blocks_per_stage: Sequence[int] | None = None, decoder_blocks: int = 1,
                 deep_supervision: bool = False) -> None:
        super().__init__()
        n = len(features_per_stage)
        if n < 2:
            raise ValueError("a U-Net needs at least two resolution levels")
        strides = strides if strides is not None else [1] + [2] * (n - 1)
        blocks_per_stage = blocks_per_stage if blocks_per_stage is not None else [1] + [2] * (n - 1)
        if len(strides) != n or len(blocks_per_stage) != n:
            raise ValueError("strides and blocks_per_stage need one entry per stage")
        self.strides = [as_tuple(s, 2) for s in strides]
        widths = [input_channels, *features_per_stage]
        self.encoder = nn.ModuleList(stage(2, widths[i], widths[i + 1], blocks_per_stage[i], self.strides[i])
                                     for i in range(n))
        self.decoder = UNetDecoder(2, features_per_stage, num_classes, decoder_blocks, deep_supervision)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        x = self.to_cpu_layout(x)
        with self.cpu_autocast(x):
            for encoder_stage in self.encoder:
                x = encoder_stage(x)
                skips.append(x)
            output = self.decoder(skips)
        return as_float32(output)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        initialize(module)
