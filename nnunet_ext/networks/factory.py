"""The plans adapter: nnU-Net ``architecture`` entries (class name + ``arch_kwargs``) for the two networks, computed
from a configuration's patch size, spacing and labels, and the network built from them.

nnU-Net 2.8.1 builds any network from ``network_class_name`` (a dotted path) and ``arch_kwargs`` through
``get_network_from_plans``; both networks take nnU-Net's constructor keywords (``input_channels``, ``num_classes``,
``deep_supervision``), so the stock ``build_network_architecture`` can build them once the plans name them.
Everything here is plain data (JSON-compatible) so it can be written into ``nnUNetPlans.json``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

COARSE_CLASS = "nnunet_ext.networks.coarse3d.CoarseDeepLabGCN3D"
FINE_CLASS = "nnunet_ext.networks.fine2d.ResidualUNet2D"
MIN_FEATURE_SIZE = 4  # never stride an axis below this many voxels


def class_names_from_labels(labels: Mapping[str, int | Sequence[int]]) -> list[str]:
    """Output class names in value order from ``dataset.json`` labels (the ignore label is not an output)."""
    plain = {name: value for name, value in labels.items() if name.lower() != "ignore"}
    if any(not isinstance(v, int) for v in plain.values()):
        raise ValueError("region-based labels are not supported by the label-relation head")
    ordered = sorted(plain.items(), key=lambda item: item[1])
    if [v for _, v in ordered] != list(range(len(ordered))):
        raise ValueError(f"labels must be consecutive from 0: {dict(ordered)}")
    return [name for name, _ in ordered]


def anisotropic_strides(patch_size: Sequence[int], spacing: Sequence[float], downsamplings: int,
                        min_size: int = MIN_FEATURE_SIZE) -> list[list[int]]:
    """Strides of ``downsamplings`` stages (plus a leading stride-1 stage): each step halves an axis only while it
    keeps at least ``min_size`` voxels and its spacing is at most twice the finest current spacing (so a thick-slice
    axis waits until the in-plane axes have caught up, as nnU-Net's planner does)."""
    size = np.array(patch_size, dtype=float)
    current = np.array(spacing, dtype=float)
    strides = [[1] * len(patch_size)]
    for _ in range(downsamplings):
        step = [2 if (size[a] / 2 >= min_size and current[a] <= 2 * current.min()) else 1 for a in range(len(size))]
        strides.append(step)
        size = np.ceil(size / np.array(step))
        current = current * np.array(step)
    return strides


def feature_size(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[int]:
    size = np.array(patch_size, dtype=int)
    for step in strides:
        size = -(-size // np.array(step))  # ceil division: the 'same' convolutions round up
    return size.tolist()


def fitted_rates(size: Sequence[int], rates: Sequence[int]) -> list[list[int]]:
    """Per-axis atrous rates: each rate capped at half the feature-map size along the axis (a larger rate only
    samples padding); duplicate branches are dropped."""
    fitted: list[list[int]] = []
    for rate in rates:
        per_axis = [int(max(1, min(rate, n // 2))) for n in size]
        if per_axis not in fitted:
            fitted.append(per_axis)
    return fitted


def coarse_arch_kwargs(patch_size: Sequence[int], spacing: Sequence[float], class_names: Sequence[str],
                       features_per_stage: Sequence[int] = (32, 64, 128, 256),
                       blocks_per_stage: Sequence[int] = (1, 2, 2, 2), dilation_rates: Sequence[int] = (2, 4),
                       aspp_rates: Sequence[int] = (2, 4, 6), aspp_channels: int = 128, gcn_hidden: int = 64,
                       gcn_layers: int = 2) -> dict:
    """``arch_kwargs`` of :class:`~nnunet_ext.networks.coarse3d.CoarseDeepLabGCN3D` for a 3D patch."""
    strides = anisotropic_strides(patch_size, spacing, 3)
    size = feature_size(patch_size, strides)
    dilations = fitted_rates(size, dilation_rates)
    while len(dilations) < len(dilation_rates):  # tiny maps: keep the number of dilated stages
        dilations.append(dilations[-1])
    return {
        "class_names": list(class_names),
        "features_per_stage": list(features_per_stage),
        "strides": strides,
        "blocks_per_stage": list(blocks_per_stage),
        "dilations": dilations,
        "aspp_rates": fitted_rates(size, aspp_rates),
        "aspp_channels": aspp_channels,
        "gcn_hidden": gcn_hidden,
        "gcn_layers": gcn_layers,
    }


def fine_arch_kwargs(patch_size: Sequence[int], spacing: Sequence[float],
                     features_per_stage: Sequence[int] = (32, 64, 128, 256, 512),
                     blocks_per_stage: Sequence[int] | None = None) -> dict:
    """``arch_kwargs`` of :class:`~nnunet_ext.networks.fine2d.ResidualUNet2D` for a 2D patch."""
    n = len(features_per_stage)
    return {
        "features_per_stage": list(features_per_stage),
        "strides": anisotropic_strides(patch_size, spacing, n - 1),
        "blocks_per_stage": list(blocks_per_stage) if blocks_per_stage else [1] + [2] * (n - 1),
        "decoder_blocks": 1,
    }


def architecture_entry(class_name: str, arch_kwargs: dict) -> dict:
    """The ``architecture`` entry of an nnU-Net 2.8.1 plans configuration."""
    return {"network_class_name": class_name, "arch_kwargs": arch_kwargs, "_kw_requires_import": []}


def deep_supervision_scales(strides: Sequence[Sequence[int]]) -> list[list[float]]:
    """Output scales with deep supervision, highest resolution first: what nnU-Net 2.8.1 derives from ``strides``
    (``1 / cumprod(strides)[:-1]``), which matches both networks' decoder outputs."""
    cumulative = np.cumprod(np.array(strides, dtype=float), axis=0)
    return (1.0 / cumulative[:-1]).tolist()


def build_network(architecture: Mapping, input_channels: int, num_classes: int, deep_supervision: bool = False):
    """Build either network from a plans ``architecture`` entry through nnU-Net's own loader."""
    from nnunet_ext.compat import network_from_architecture

    return network_from_architecture(architecture, input_channels, num_classes, deep_supervision)
