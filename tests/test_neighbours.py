"""Neighbouring sagittal slices as channels of stage 2 (nnunet_ext.neighbours, the plans record, the compat
wrappers): the layout on arrays whose voxels hold their own slice index, so every expected value is known."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from nnunet_ext.neighbours import NeighbourSlicesView, neighbour_indices, stack_neighbours
from nnunet_ext.plans import NEIGHBOUR_SLICES_KEY, neighbour_slices, record_neighbour_slices


def _indexed(channels: int = 2, slices: int = 6, height: int = 5, width: int = 4) -> np.ndarray:
    """Voxel value = 100 * channel + slice index."""
    values = 100 * np.arange(channels)[:, None] + np.arange(slices)[None, :]
    return np.broadcast_to(values[:, :, None, None], (channels, slices, height, width)).astype(np.float32).copy()


def test_neighbour_indices_repeat_the_end_slices():
    assert neighbour_indices(0, 3, 3, 1).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]
    assert neighbour_indices(2, 3, 6, 2)[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert neighbour_indices(0, 2, 2, 0).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match=">= 0"):
        neighbour_indices(0, 2, 2, -1)


@pytest.mark.parametrize("k", [1, 2])
def test_stack_neighbours_layout(k):
    """Slice-offset major: block j holds slice s + j - k of every image channel; the one-hot channels after the
    image channels are kept as they are."""
    image = _indexed(channels=2)
    one_hot = np.random.default_rng(0).random((3, *image.shape[1:])).astype(np.float32)
    stacked = stack_neighbours(np.concatenate([image, one_hot]), 2, k)
    assert stacked.shape == ((2 * k + 1) * 2 + 3, *image.shape[1:])
    slices = image.shape[1]
    for s in range(slices):
        for j in range(2 * k + 1):
            source = min(max(s + j - k, 0), slices - 1)
            for c in range(2):
                assert np.all(stacked[2 * j + c, s] == 100 * c + source)
    np.testing.assert_array_equal(stacked[(2 * k + 1) * 2:], one_hot)
    assert stack_neighbours(image, 2, 0) is image
    with pytest.raises(ValueError, match="image channels"):
        stack_neighbours(image, 3, 1)


@pytest.mark.parametrize("k", [1, 2])
def test_view_reads_what_the_stack_holds(k):
    """Every crop of the lazy view (first and last slices included) equals the same crop of the whole stack, and
    nnU-Net's crop_and_pad_nd crops it as it crops an array, padding included."""
    image = _indexed(channels=1, slices=7, height=9, width=8)
    view = NeighbourSlicesView(image, k)
    whole = stack_neighbours(image, 1, k)
    assert view.shape == whole.shape and view.ndim == 4
    for s in range(7):
        index = (slice(None), slice(s, s + 1), slice(2, 7), slice(0, 8))
        np.testing.assert_array_equal(view[index], whole[index])
    np.testing.assert_array_equal(view[(slice(1, 3), slice(5, 7))], whole[1:3, 5:7])
    np.testing.assert_array_equal(view[:], whole)
    acvl = pytest.importorskip("acvl_utils.cropping_and_padding.bounding_boxes")
    for bbox in ([[6, 7], [-3, 6], [4, 12]], [[0, 1], [0, 9], [0, 8]]):
        np.testing.assert_array_equal(acvl.crop_and_pad_nd(view, bbox, 0), acvl.crop_and_pad_nd(whole, bbox, 0))
    with pytest.raises(IndexError, match="outside axis 2"):
        view[(slice(None), slice(0, 1), slice(-8, -2))]  # a box outside the image: refused, not mis-shaped
    with pytest.raises(IndexError, match="outside axis 3"):
        view[(slice(None), slice(0, 1), slice(0, 9), slice(9, 12))]
    with pytest.raises(TypeError):
        view[0]
    with pytest.raises(TypeError):
        view[(slice(None), slice(0, 6, 2))]


def test_plans_record_round_trip():
    configuration = {"patch_size": [8, 8]}
    assert neighbour_slices(configuration) == 0
    record_neighbour_slices(configuration, 2)
    assert configuration[NEIGHBOUR_SLICES_KEY] == 2 and neighbour_slices(configuration) == 2
    record_neighbour_slices(configuration, 0)
    assert NEIGHBOUR_SLICES_KEY not in configuration
    with pytest.raises(ValueError):
        record_neighbour_slices(configuration, -1)
    with pytest.raises(ValueError):
        neighbour_slices({NEIGHBOUR_SLICES_KEY: -2})


def test_input_channels_of_a_stage_with_neighbours():
    """nnU-Net counts image channels plus one per foreground label (or region) for a cascade stage; neighbours
    multiply only the image channels, one per normalisation scheme of the plans."""
    from nnunet_ext.compat import stacked_input_channels

    cascade = {"previous_stage": "3d_lowres", "normalization_schemes": ["ZScoreNormalization"],
               NEIGHBOUR_SLICES_KEY: 2}
    assert stacked_input_channels(1 + 8, cascade) == 5 + 8
    two_modalities = {"normalization_schemes": ["ZScoreNormalization", "ZScoreNormalization"], NEIGHBOUR_SLICES_KEY: 1}
    assert stacked_input_channels(2, two_modalities) == 6
    assert stacked_input_channels(9, {"previous_stage": "3d_lowres", "normalization_schemes": ["CT"]}) == 9


class _Cases:
    """Stands for an nnU-Net dataset class: constructed from a folder and identifiers, static get_identifiers."""

    def __init__(self, folder: str, identifiers: list[str], folder_with_segs_from_previous_stage=None) -> None:
        self.identifiers = identifiers

    @staticmethod
    def get_identifiers(folder: str) -> list[str]:
        return ["a", "b"]

    def __len__(self) -> int:
        return len(self.identifiers)

    def load_case(self, identifier):
        return _indexed(1, 4, 3, 3), np.zeros((1, 4, 3, 3)), None, {"id": identifier}


def test_training_dataset_wrapper():
    """Standing in for the trainer's dataset class, the wrapper gives nnU-Net's data loader and validation the view
    and delegates everything else (the class's static methods too); both pickle (the data-augmentation workers may
    get them that way)."""
    from nnunet_ext.compat import NeighbourSlicesDatasetClass

    dataset_class = pickle.loads(pickle.dumps(NeighbourSlicesDatasetClass(_Cases, 1)))
    assert dataset_class.get_identifiers("folder") == ["a", "b"]
    wrapped = pickle.loads(pickle.dumps(dataset_class("folder", ["a"], folder_with_segs_from_previous_stage=None)))
    data, seg, previous, properties = wrapped.load_case("a")
    assert isinstance(data, NeighbourSlicesView) and data.shape == (3, 4, 3, 3)
    np.testing.assert_array_equal(data[:], stack_neighbours(_indexed(1, 4, 3, 3), 1, 1))  # what validation reads
    assert properties == {"id": "a"} and previous is None and seg.shape == (1, 4, 3, 3)
    assert wrapped.identifiers == ["a"] and len(wrapped) == 1


def test_intensity_transforms_synchronised_for_neighbours():
    """With neighbour slices every intensity transform of nnU-Net's training pipeline draws one set of parameters
    for all image channels (the neighbours keep the contrast of their slice), except those that pick a random
    subset of channels."""
    pytest.importorskip("nnunetv2")
    from batchgeneratorsv2.transforms.utils.random import RandomTransform
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext.compat import synchronize_intensity_channels

    transforms = nnUNetTrainer.get_training_transforms((64, 64), (-0.1, 0.1), None, (), False,
                                                       foreground_labels=[1, 2])
    changed = synchronize_intensity_channels(transforms)
    inner = [t.transform if isinstance(t, RandomTransform) else t for t in transforms.transforms]
    every_channel = [t for t in inner if hasattr(t, "synchronize_channels") and t.p_per_channel == 1]
    assert changed == 4 and len(every_channel) == 5 and all(t.synchronize_channels for t in every_channel)
    some_channels = [t for t in inner if hasattr(t, "synchronize_channels") and t.p_per_channel < 1]
    assert some_channels and not any(t.synchronize_channels for t in some_channels)
