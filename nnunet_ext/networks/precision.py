"""bfloat16 compute on CPU for the cascade's networks.

nnU-Net runs its networks under mixed precision on CUDA only; on a CPU with native bfloat16 (AVX512-BF16, AMX) the
same convolutions cost about two thirds of float32 (docs/benchmarks.md, "Sixth session"). A network that derives from
:class:`CpuAutocast` runs its forward pass under ``torch.autocast("cpu", torch.bfloat16)`` when its
:attr:`~CpuAutocast.cpu_autocast_dtype` is set and its input is on the CPU, and returns float32 outputs, so losses,
softmax and nnU-Net's export see what they always see. The attribute is a plain attribute, not a parameter or buffer:
checkpoints are the same with or without it.

On an x86 CPU with AMX or AVX512-BF16 (:func:`cpu_channels_last_preferred`), :attr:`~CpuAutocast.cpu_channels_last`
also runs the network on channels-last tensors (:func:`set_cpu_channels_last`), the layout oneDNN's bfloat16
convolutions work in there.
"""

from __future__ import annotations

import platform
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from .blocks import channels_last_format

_X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


def cpu_bfloat16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively; emulated bfloat16 is slower than float32.

    oneDNN's check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) comes first, but on x86 it accepts any CPU with
    AVX512 (BW, VL, DQ), where oneDNN emulates bfloat16 on float32 units: on a 2-core Intel Xeon VM with AVX512 but
    neither AVX512-BF16 nor AMX a training step of the recipe's 16-128 stage 2 took 1.34 s in bfloat16 against
    0.60 s in float32 and 0.28 s for its 8-96 float32 width (docs/benchmarks.md, "Fifty-second session"). So on
    x86 the CPU must also have AVX512-BF16 or AMX; elsewhere (aarch64) oneDNN's check is the CPU's own bfloat16
    instructions and is kept as it is."""
    if not _onednn_bfloat16_supported():
        return False
    if platform.machine().lower() in _X86_MACHINES:
        return x86_bfloat16_instructions()
    return True


def _onednn_bfloat16_supported() -> bool:
    """oneDNN's own check (native or emulated bfloat16); False for a torch without it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class CpuAutocast:
    """Mixin for :class:`torch.nn.Module` networks: optional bfloat16 autocast of the forward pass on the CPU."""

    cpu_autocast_dtype: torch.dtype | None = None
    """None: float32 throughout (the default); ``torch.bfloat16``: autocast on CPU inputs."""

    cpu_channels_last: bool = False
    """Run on CPU inputs in the channels-last layout (:func:`set_cpu_channels_last`); False: as given."""

    def to_cpu_layout(self, x: torch.Tensor) -> torch.Tensor:
        """The input ``x`` in the layout the forward pass runs in (a copy in channels-last where that is set)."""
        if not self.cpu_channels_last or x.device.type != "cpu" or x.ndim not in (4, 5):
            return x
        return x.contiguous(memory_format=channels_last_format(x.ndim))

    def cpu_autocast(self, x: torch.Tensor) -> AbstractContextManager:
        """The context to run the forward pass of input ``x`` in."""
        if self.cpu_autocast_dtype is None or x.device.type != "cpu":
            return nullcontext()
        return torch.autocast("cpu", dtype=self.cpu_autocast_dtype)


def as_float32(outputs: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """Float32 outputs (a tensor or a deep-supervision list); float32 tensors are returned as they are."""
    if isinstance(outputs, (list, tuple)):
        return [output.float() for output in outputs]
    return outputs.float()


def cpu_amx_supported() -> bool:
    """Whether this CPU has AMX tiles (Intel Xeon since Sapphire Rapids), whose bfloat16 convolutions oneDNN runs
    several times faster on channels-last tensors than on the contiguous layout."""
    try:
        # torch's private check, kept over the public map's amx_bf16: it also asks Linux for leave to use the tiles,
        # as oneDNN does
        return bool(torch._C._cpu._init_amx())
    except (AttributeError, RuntimeError):  # a torch without it: the CPU's instruction sets as torch reads them
        return cpu_capability("amx_bf16")


def cpu_capability(name: str) -> bool:
    """Whether this CPU has the instruction set ``name`` (a key of ``torch.cpu.get_capabilities()``, e.g.
    ``"avx512_bf16"``); False for a name the mapping lacks (another architecture's) or whose value is not ``True`` (a
    size, a count, a name), or a torch without the mapping."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:
        return False
    return get_capabilities().get(name) is True


def cpu_channels_last_preferred() -> bool:
    """Whether bfloat16 networks are expected to run faster on channels-last tensors on this CPU: an x86 CPU with AMX
    or AVX512-BF16 (oneDNN's bfloat16 convolutions work in that layout there).

    Measured (docs/benchmarks.md) on two: a 2-core Intel Xeon with AMX, 1.4-1.9x per tile ("Thirty-first session"); a
    2-core AMD EPYC (Zen 4, AVX512-BF16, no AMX), 1.17-1.19x per tile of the default preset's stage 2 and 1.12-1.25x
    per training step of the recipe's two networks ("Thirty-seventh session")."""
    return x86_bfloat16_instructions()


CHANNELS_LAST_SAFE_INPUT_CHANNELS = 16
"""oneDNN's input-channel block on AVX512 (8 on AVX2): a strided 1x1 convolution with fewer input channels (per
group, more than one) is what :func:`channels_last_training_hazards` looks for."""


def channels_last_training_hazards(network: nn.Module) -> list[str]:
    """Names of the convolutions whose weight gradient oneDNN gets wrong on channels-last tensors: a 1x1 (1x1x1)
    kernel with a stride above 1 and 2-15 input channels per group.

    oneDNN's 1x1 backward-weights kernel then writes past its strided-input workspace (uxlfoundation/oneDNN issue
    6035, open: depending on the machine a segmentation fault, a hang or silently wrong weight gradients). Measured
    with torch 2.15.0 (oneDNN 3.13.3) on a 2-core Intel Xeon with AVX512-BF16 and no AMX (docs/benchmarks.md,
    "Fifty-third session"): a training step of the 8-96 stage 2 (the shortcut from 8 channels to 16 at stride 2)
    crashes on channels-last tensors in float32 and in bfloat16, a lone such convolution at 4, 8 and 14 input
    channels too (not at 1, 16, 20, 24 or 32). The forward pass, which prediction runs, is not affected. Empty for
    networks without such a convolution (the recipe's 16-128 stage 2, the default preset's 32-512)."""
    hazards = []
    for name, module in _inner(network).named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Conv3d)):
            continue
        per_group = module.in_channels // module.groups
        if (all(k == 1 for k in module.kernel_size) and any(s > 1 for s in module.stride)
                and 1 < per_group < CHANNELS_LAST_SAFE_INPUT_CHANNELS):
            hazards.append(name)
    return hazards


def x86_bfloat16_instructions() -> bool:
    """Whether this CPU has x86's own bfloat16 instructions: AMX (:func:`cpu_amx_supported`) or AVX512-BF16; False
    on other architectures, whose instruction sets torch's capability map names otherwise."""
    return cpu_amx_supported() or cpu_capability("avx512_bf16")


def _inner(network: nn.Module) -> nn.Module:
    """``network`` without ``torch.compile``'s ``_orig_mod`` and DDP's ``module`` wrappers, in whichever order they
    were put on (nnU-Net wraps a compiled network in DDP); a cascade network is never unwrapped further."""
    while not isinstance(network, CpuAutocast):
        inner = getattr(network, "_orig_mod", None)
        if inner is None:
            inner = getattr(network, "module", None)
        if not isinstance(inner, nn.Module):
            return network
        network = inner
    return network


def set_cpu_channels_last(network: nn.Module, on: bool) -> bool:
    """Run one of the cascade's networks in the channels-last layout on the CPU (``on``) or as given.

    Measured on a 2-core Xeon with AMX, bfloat16 inference (docs/benchmarks.md, "Thirty-first session"): 1.4x (the
    CPU recipe's stage 2) to 1.9x (the default preset's networks) faster per tile, since the convolutions skip
    oneDNN's layout conversions and the norms (:class:`~nnunet_ext.networks.blocks.InstanceNorm2d`) keep the layout;
    in training the recipe's stage 2 fits about 20 % more iterations in its budget, its 3D stage 1 is slower
    (``cpu_channels_last`` of the trainers). Returns False, changing nothing, for networks that do not support it.
    """
    inner = _inner(network)
    if not isinstance(inner, CpuAutocast):
        return False
    inner.cpu_channels_last = bool(on)
    with torch.no_grad():  # the weights too: a one-channel input is contiguous and channels-last at once
        for module in inner.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                layout = channels_last_format(module.weight.ndim) if on else torch.contiguous_format
                module.weight.data = module.weight.data.contiguous(memory_format=layout)
    return True


def set_cpu_autocast(network: nn.Module, dtype: torch.dtype | None) -> bool:
    """Switch bfloat16 autocast on (``dtype=torch.bfloat16``) or off (None) for one of the cascade's networks.

    ``network`` may be wrapped (``torch.compile``'s ``_orig_mod``, DDP's ``module``). Returns False, changing nothing,
    when the network does not support it (nnU-Net's own networks) or the CPU has no native bfloat16.
    """
    inner = _inner(network)
    if not isinstance(inner, CpuAutocast):
        return False
    if dtype is not None and not cpu_bfloat16_supported():
        return False
    inner.cpu_autocast_dtype = dtype
    return True
