"""measure.regions: boxes, voxels and largest 3D components of every label, against a per-label brute force."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from measure.io import foreground_box
from measure.regions import label_regions


def brute_force(array: np.ndarray) -> dict[int, tuple[tuple[slice, ...], np.ndarray, list[int]]]:
    """Per label: box from np.nonzero, largest face-connected component from SimpleITK, component sizes."""
    out = {}
    for value in np.unique(array):
        if value == 0:
            continue
        voxels = array == value
        box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(voxels))
        components = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(
            voxels[box].astype(np.uint8)), False))
        counts = np.bincount(components.ravel())[1:]
        out[int(value)] = (box, components == 1 + int(np.argmax(counts)), sorted(counts.tolist(), reverse=True))
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_regions_match_brute_force(dtype) -> None:
    rng = np.random.default_rng(3)
    for trial in range(15):
        array = np.zeros((9, 21, 40), dtype=dtype)
        values = [1, 2, 3] if trial % 3 else [5, 70, 300 if dtype != np.uint8 else 200]  # > 64: the np.unique path
        for n, value in enumerate(values):
            z0 = 2 + 12 * n
            array[2:7, 3:15, z0:z0 + 10] = value  # touching bodies of different values stay separate components
            island = rng.integers([0, 0, 0], [9, 21, 40])
            array[tuple(island)] = value  # a stray voxel somewhere (may touch the body, or another body)
        array[rng.random(array.shape) < 0.01] = values[0]
        expected = brute_force(array)
        regions = label_regions(array)
        assert sorted(regions) == sorted(expected)
        for value, (box, body, sizes) in expected.items():
            region = regions[value]
            assert region.box == box
            np.testing.assert_array_equal(region.mask, array[box] == value)
            assert list(region.component_sizes) == sizes
            assert region.voxel_count == int((array == value).sum())
            assert region.body.sum() == sizes[0]
            if len(sizes) == 1 or sizes[0] > sizes[1]:  # the largest component is unique
                np.testing.assert_array_equal(region.body, body)
            centroid = np.argwhere(array == value).mean(axis=0)
            np.testing.assert_allclose(region.centroid_index(), centroid, atol=1e-9)


def test_regions_of_empty_and_bool_like_arrays() -> None:
    assert label_regions(np.zeros((4, 5, 6), np.uint8)) == {}
    array = np.zeros((4, 5, 6), np.uint8)
    array[1, 2, 3] = 1
    region = label_regions(array)[1]
    assert region.box == (slice(1, 2), slice(2, 3), slice(3, 4)) and region.component_sizes == (1,)


def test_foreground_box_of_views_and_bool() -> None:
    array = np.zeros((10, 12, 14), np.uint16)
    array[3:5, 2:9, 7:8] = 400
    transposed = array.transpose(2, 0, 1)[::-1]  # a non-contiguous, flipped view
    expected = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(transposed))
    assert foreground_box(transposed) == expected
    assert foreground_box(transposed > 0) == expected
