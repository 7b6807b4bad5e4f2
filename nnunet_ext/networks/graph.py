"""The class graph of the label-relation head: one node per output class, edges between anatomically adjacent
vertebral levels (T11-T12-L1-...-L5-S1-S2), every node with a self-loop, background (and any non-level class, such
as the binary ``vertebra``) connected to nothing else. Built from the class names, i.e. from the dataset's labels."""

from __future__ import annotations

from typing import Sequence

import torch

from measure.levels import is_known_level, is_optional_level, level_order


def adjacent_levels(first: str, second: str) -> bool:
    """True when no non-optional level lies between two levels (T12-L1 yes; T12-L2 no; L5-S1 yes; L5-L6 yes)."""
    order = level_order()
    a, b = sorted((order.index(first), order.index(second)))
    return b > a and not any(not is_optional_level(level) for level in order[a + 1:b])


def class_edges(class_names: Sequence[str]) -> list[tuple[int, int]]:
    """Undirected edges (i < j) between output classes ``i`` and ``j`` whose names are adjacent levels."""
    edges = []
    for i, first in enumerate(class_names):
        for j in range(i + 1, len(class_names)):
            second = class_names[j]
            if is_known_level(first) and is_known_level(second) and adjacent_levels(first, second):
                edges.append((i, j))
    return edges


def edge_index(class_names: Sequence[str]) -> torch.Tensor:
    """``torch_geometric`` edge index (2, E): both directions of each adjacency plus one self-loop per class."""
    pairs = class_edges(class_names)
    both = [(i, j) for i, j in pairs] + [(j, i) for i, j in pairs] + [(k, k) for k in range(len(class_names))]
    return torch.tensor(sorted(both), dtype=torch.long).t().contiguous()
