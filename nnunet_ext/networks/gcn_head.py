"""The graph-convolution label-relation head (after SpineParseNet, Pang et al. 2021).

Voxel features are projected onto one node per class by a learned soft assignment (per-voxel class probabilities),
graph convolutions (``torch_geometric.nn.GCNConv``) reason over the nodes along the anatomical adjacency of the
levels, and the node features are projected back to the voxels with the same assignment and added to the CNN
features. The assignment's class scores are returned for an auxiliary loss (SpineParseNet weights it 0.3).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .blocks import activation, conv, norm
from .graph import edge_index as class_edge_index


class LabelRelationHead(nn.Module):
    """Soft-assign voxels to class nodes, ``gcn_layers`` graph convolutions, project back, fuse (residual).

    ``forward(features)`` returns ``(fused_features, class_scores)``; both have the spatial size of ``features``,
    ``class_scores`` has one channel per class (logits).
    """

    def __init__(self, dim: int, channels: int, class_names: Sequence[str], hidden: int = 64,
                 gcn_layers: int = 2) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        if gcn_layers < 1:
            raise ValueError("the label-relation head needs at least one graph convolution")
        self.num_classes = len(class_names)
        self.register_buffer("edge_index", class_edge_index(class_names), persistent=False)
        self.assign = conv(dim, channels, self.num_classes, kernel=1, bias=True)
        self.reduce = conv(dim, channels, hidden, kernel=1, bias=True)
        self.graph_convs = nn.ModuleList(GCNConv(hidden, hidden, add_self_loops=False, normalize=True)
                                         for _ in range(gcn_layers))
        self.graph_act = nn.ReLU()
        self.expand = nn.Sequential(conv(dim, hidden, channels, kernel=1), norm(dim, channels))
        self.act = activation()

    def set_edges(self, edge_index: torch.Tensor) -> None:
        """Replace the class graph (for experiments and tests)."""
        self.edge_index = edge_index.to(self.edge_index.device)

    def _batched_edges(self, batch: int) -> torch.Tensor:
        offsets = torch.arange(batch, device=self.edge_index.device).repeat_interleave(self.edge_index.shape[1])
        return self.edge_index.repeat(1, batch) + offsets * self.num_classes

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, spatial = features.shape[0], features.shape[2:]
        scores = self.assign(features)
        reduced = self.reduce(features)
        with torch.autocast(device_type=features.device.type, enabled=False):
            assignment = torch.softmax(scores.float().flatten(2), dim=1)  # (B, K, N): class probabilities per voxel
            voxels = reduced.float().flatten(2)  # (B, H, N)
            mass = assignment.sum(dim=2, keepdim=True).clamp_min(1e-6)
            nodes = torch.bmm(assignment, voxels.transpose(1, 2)) / mass  # (B, K, H): mean feature per class
            x = nodes.reshape(batch * self.num_classes, -1)
            edges = self._batched_edges(batch)
            for graph_conv in self.graph_convs:
                x = self.graph_act(graph_conv(x, edges))
            nodes = x.reshape(batch, self.num_classes, -1)
            back = torch.bmm(nodes.transpose(1, 2), assignment)  # (B, H, N)
        back = back.reshape(batch, -1, *spatial).to(features.dtype)
        return self.act(features + self.expand(back)), scores
