"""bfloat16 compute on CPU for the cascade's networks.

nnU-Net runs its networks under mixed precision on CUDA only; on a CPU with native bfloat16 (AVX512-BF16, AMX) the
same convolutions cost about two thirds of float32 (docs/benchmarks.md, "Sixth session"). A network that derives from
:class:`CpuAutocast` runs its forward pass under ``torch.autocast("cpu", torch.bfloat16)`` when its
:attr:`~CpuAutocast.cpu_autocast_dtype` is set and its input is on the CPU, and returns float32 outputs, so losses,
softmax and nnU-Net's export see what they always see. The attribute is a plain attribute, not a parameter or buffer:
checkpoints are the same with or without it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn


def cpu_bfloat16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's check); emulated bfloat16 would be slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class CpuAutocast:
    """Mixin for :class:`torch.nn.Module` networks: optional bfloat16 autocast of the forward pass on the CPU."""

    cpu_autocast_dtype: torch.dtype | None = None
    """None: float32 throughout (the default); ``torch.bfloat16``: autocast on CPU inputs."""

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


def set_cpu_autocast(network: nn.Module, dtype: torch.dtype | None) -> bool:
    """Switch bfloat16 autocast on (``dtype=torch.bfloat16``) or off (None) for one of the cascade's networks.

    ``network`` may be wrapped (``torch.compile``'s ``_orig_mod``, DDP's ``module``). Returns False, changing nothing,
    when the network does not support it (nnU-Net's own networks) or the CPU has no native bfloat16.
    """
    inner = network
    for wrapper in ("_orig_mod", "module"):
        inner = getattr(inner, wrapper, inner)
    if not isinstance(inner, CpuAutocast):
        return False
    if dtype is not None and not cpu_bfloat16_supported():
        return False
    inner.cpu_autocast_dtype = dtype
    return True
