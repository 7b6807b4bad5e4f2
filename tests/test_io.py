"""Reading and reorientation helpers."""

from __future__ import annotations

import numpy as np

from measure.io import foreground_box


def test_foreground_box_matches_nonzero_extent() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        array = np.zeros((17, 23, 29), dtype=np.uint8)
        lo = rng.integers(0, [10, 15, 20])
        hi = lo + rng.integers(1, [7, 8, 9])
        array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = rng.integers(0, 3, size=tuple(hi - lo))
        array[lo[0], lo[1], lo[2]] = array[hi[0] - 1, hi[1] - 1, hi[2] - 1] = 1
        expected = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(array))
        assert foreground_box(array) == expected
    assert foreground_box(np.zeros((3, 3, 3), np.uint8)) is None
