"""Building blocks shared by the 2D and 3D networks: residual blocks, norms, initialisation, resizing."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.01  # LeakyReLU as in nnU-Net


def as_tuple(value: int | Sequence[int], dim: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),) * dim


def conv(dim: int, in_channels: int, out_channels: int, kernel: int = 3, stride: int | Sequence[int] = 1,
         dilation: int | Sequence[int] = 1, bias: bool = False) -> nn.Module:
    """A 'same' convolution (output size ``ceil(input / stride)`` for any input size)."""
    dilation_t = as_tuple(dilation, dim)
    padding = tuple(d * (kernel // 2) for d in dilation_t)
    op = nn.Conv2d if dim == 2 else nn.Conv3d
    return op(in_channels, out_channels, kernel, as_tuple(stride, dim), padding, dilation_t, bias=bias)


def channels_last_format(ndim: int) -> torch.memory_format:
    """The channels-last memory format of a 4D (2D images) or 5D (volumes) tensor."""
    if ndim not in (4, 5):
        raise ValueError(f"channels-last needs a 4D or 5D tensor, not {ndim}D")
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out channels-last and not also plain contiguous (a batch of images or volumes)."""
    return x.ndim in (4, 5) and not x.is_contiguous() and x.is_contiguous(memory_format=channels_last_format(x.ndim))


class _ChannelsLastInstanceNorm:
    """Instance norm that keeps a channels-last input channels-last.

    PyTorch's ``instance_norm`` makes its input contiguous (a full copy into the other layout) and returns it so; on
    a channels-last input it computes each sample's norm as a batch norm of that one sample, which the CPU kernels
    run in that layout. Same statistics, same parameters, same state dict; any other input goes the usual way.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_channels_last(x) or self.track_running_stats:
            return super().forward(x)
        # split, not indexing: its backward is one concatenation, where indexing's adds a zero-filled copy per sample
        parts = [F.batch_norm(sample, None, None, self.weight, self.bias, True, 0.0, self.eps)
                 for sample in x.split(1)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class InstanceNorm2d(_ChannelsLastInstanceNorm, nn.InstanceNorm2d):
    """:class:`torch.nn.InstanceNorm2d` that keeps a channels-last input channels-last."""


class InstanceNorm3d(_ChannelsLastInstanceNorm, nn.InstanceNorm3d):
    """:class:`torch.nn.InstanceNorm3d` that keeps a channels-last input channels-last."""


def norm(dim: int, channels: int) -> nn.Module:
    return (InstanceNorm2d if dim == 2 else InstanceNorm3d)(channels, eps=1e-5, affine=True)


def activation() -> nn.Module:
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)


class ResidualBlock(nn.Module):
    """conv-norm-act-conv-norm plus a (projected) shortcut, then act: the basic block of a ResNet."""

    def __init__(self, dim: int, in_channels: int, out_channels: int, stride: int | Sequence[int] = 1,
                 dilation: int | Sequence[int] = 1) -> None:
        super().__init__()
        self.conv1 = conv(dim, in_channels, out_channels, 3, stride, dilation)
        self.norm1 = norm(dim, out_channels)
        self.act1 = activation()
        self.conv2 = conv(dim, out_channels, out_channels, 3, 1, dilation)
        self.norm2 = norm(dim, out_channels)
        needs_projection = in_channels != out_channels or any(s != 1 for s in as_tuple(stride, dim))
        self.shortcut = (nn.Sequential(conv(dim, in_channels, out_channels, 1, stride), norm(dim, out_channels))
                         if needs_projection else nn.Identity())
        self.act2 = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.act2(y + self.shortcut(x))


def stage(dim: int, in_channels: int, out_channels: int, blocks: int, stride: int | Sequence[int] = 1,
          dilation: int | Sequence[int] = 1) -> nn.Sequential:
    """``blocks`` residual blocks; the first one changes width and resolution."""
    layers = [ResidualBlock(dim, in_channels, out_channels, stride, dilation)]
    layers += [ResidualBlock(dim, out_channels, out_channels, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def resize_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``x`` to the spatial size of ``reference`` (any sizes, odd ones included)."""
    if x.shape[2:] == reference.shape[2:]:
        return x
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=reference.shape[2:], mode=mode, align_corners=False)


def initialize(module: nn.Module) -> None:
    """He initialisation for convolutions (as nnU-Net's ``InitWeights_He(1e-2)``), zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=NEGATIVE_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
