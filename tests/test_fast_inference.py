"""The fast inference path (issue: 3x faster than nnU-Net's 3d_fullres): stage 2 predicted only in the box of stage
1's vertebrae, on nnU-Net's tile grid, several slices per network call. Analytic checks on small fixed networks:
inside the box the logits are the full grid's, a vertebra at the edge of stage 1's box is not cut, slices and batch
size do not change anything."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nnunet_ext.roi import (  # noqa: E402 - after the importorskip
    LEVEL_MARGIN_MM,
    axis_margins_mm,
    foreground_box,
    grow_box,
    margin_mm,
    superior_array_axis,
)
from nnunet_ext.slicewise import TileAccumulator, predict_slices, tile_corners  # noqa: E402


def test_foreground_box_adds_the_margin_in_mm_per_axis_and_clips():
    mask = np.zeros((20, 40, 30), bool)
    mask[5:8, 10:20, 25:27] = True
    box = foreground_box(mask, (2.0, 1.0, 0.5), (4.0, 3.0, 1.0))
    assert box == (slice(3, 10), slice(7, 23), slice(23, 29))
    assert foreground_box(mask, (1.0, 1.0, 1.0), 100.0) == (slice(0, 20), slice(0, 40), slice(0, 30))
    assert foreground_box(np.zeros((3, 3), bool), (1, 1), 1.0) is None


def test_margins_one_level_along_the_spine_and_two_coarse_voxels_across():
    assert margin_mm((6.0, 6.0, 6.0)) == 12.0 and margin_mm((2.0, 2.0, 2.0)) == 10.0
    assert axis_margins_mm((6.0, 6.0, 6.0), 3, superior_axis=1) == [12.0, LEVEL_MARGIN_MM, 12.0]
    assert axis_margins_mm((6.0, 6.0, 6.0), 3, superior_axis=None) == [LEVEL_MARGIN_MM] * 3


@pytest.mark.parametrize(("direction", "axis"), [
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), 0),  # LPS axial stack: array axis 0 (k) is superior
    ((0, 0, 1, 1, 0, 0, 0, -1, 0), 1),  # sagittal slices, image axis 1 runs inferior: array axis j
    ((0, 0.1, 0.995, 1, 0, 0, 0, 0.995, -0.1), 1),  # slightly oblique
])
def test_superior_array_axis_from_the_direction_cosines(direction, axis):
    assert superior_array_axis(direction) == axis


def test_tile_corners_keep_exactly_the_tiles_overlapping_the_box():
    steps = [[0, 50, 100], [0, 80]]
    every = tile_corners(steps, (64, 64))
    assert len(every) == 6
    kept = tile_corners(steps, (64, 64), (slice(70, 105), slice(10, 20)))
    assert kept == [(50, 0), (100, 0)]  # rows 50-113, 100-163 reach 70-104; column tile 0 only


def _random_network(channels: int, classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(channels, 6, 5, padding=2), torch.nn.ReLU(),
                               torch.nn.Conv2d(6, 6, 5, padding=4, dilation=2), torch.nn.ReLU(),
                               torch.nn.Conv2d(6, classes, 3, padding=1)).eval()


def _gaussian(patch):
    from nnunet_ext.compat import gaussian_importance

    return gaussian_importance(patch, "cpu")


def _steps_for(patch, step=0.5):
    """nnU-Net's tile positions for an image of a given size, as compat hands them to the tile accumulator (the
    size passed straight to nnU-Net: padding to the patch is the accumulator's job)."""
    from nnunet_ext.compat import sliding_window_steps

    return lambda size: sliding_window_steps(size, patch, step)


def test_subset_of_slices_batch_size_and_box_do_not_change_the_logits_inside_the_box():
    pytest.importorskip("nnunetv2")
    data = torch.rand(2, 7, 90, 70)
    network, patch = _random_network(2, 3), (48, 48)
    steps, gaussian = _steps_for(patch), _gaussian(patch)
    full = predict_slices(network, data, patch, 3, steps, gaussian, batch=1)
    batched = predict_slices(network, data, patch, 3, steps, gaussian, batch=4)
    torch.testing.assert_close(batched, full, atol=1e-5, rtol=1e-5)
    some = predict_slices(network, data[:, 2:5], patch, 3, steps, gaussian, batch=2)
    torch.testing.assert_close(some, full[:, 2:5], atol=1e-5, rtol=1e-5)
    box = (slice(30, 50), slice(5, 25))
    boxed = predict_slices(network, data, patch, 3, steps, gaussian, batch=3, box=box)
    torch.testing.assert_close(boxed[:, :, box[0], box[1]], full[:, :, box[0], box[1]], atol=1e-5, rtol=1e-5)
    assert not torch.equal(boxed, full)  # some tiles were skipped: outside the box differs


class _Counting(torch.nn.Module):
    """Counts the tile-slices a network is run on."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.seen = network, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return self.network(x)


def test_a_grown_box_runs_only_what_it_adds_and_blends_like_a_fresh_run():
    pytest.importorskip("nnunetv2")
    data = torch.rand(2, 7, 90, 70)
    network, patch = _Counting(_random_network(2, 3)), (48, 48)
    steps, gaussian = _steps_for(patch), _gaussian(patch)
    small, large = (slice(40, 50), slice(10, 20)), (slice(30, 70), slice(5, 25))
    tiles = TileAccumulator(network, data, patch, 3, steps, gaussian, batch=2)
    tiles.run(slice(2, 5), small)
    tiles.run(slice(1, 6), large)
    assert network.seen == 5 * len(tile_corners(steps(data.shape[2:]), patch, large))  # every (tile, slice) pair once
    fresh = predict_slices(network, data[:, 1:6], patch, 3, steps, gaussian, box=large)
    grown = tiles.logits(slice(1, 6))
    torch.testing.assert_close(grown[:, :, large[0], large[1]], fresh[:, :, large[0], large[1]], atol=1e-5, rtol=1e-5)


def test_box_layout_lays_the_grid_over_the_box_widened_to_the_patch():
    from nnunet_ext.slicewise import box_corners, box_region

    assert box_region(slice(100, 140), 351, 224) == slice(8, 232)  # centred on the box
    assert box_region(slice(10, 40), 351, 224) == slice(0, 224)  # moved inside the image
    assert box_region(slice(300, 340), 351, 224) == slice(127, 351)
    assert box_region(slice(20, 300), 351, 224) == slice(20, 300)  # longer than the patch: the box itself

    pytest.importorskip("nnunetv2")
    # a box 280 long and 40 wide on a 351 x 351 slice: 2 x 1 tiles, not the grid's 3 x 3 that touch it
    corners = box_corners((slice(20, 300), slice(100, 140)), (351, 351), (224, 224), _steps_for((224, 224)))
    assert corners == [(20, 8), (76, 8)]
    grid = _steps_for((224, 224))((351, 351))  # the whole slice's grid (351 px: no padding)
    assert len(tile_corners(grid, (224, 224), (slice(20, 300), slice(100, 140)))) == 9


def test_box_layout_runs_one_tile_across_a_narrow_box_and_the_grid_along_a_long_one():
    """In ``layout="box"`` a box narrower than the patch is predicted from one tile centred on it (the network's
    output on that window, exactly), with fewer network calls than the grid's tiles that overlap it."""
    pytest.importorskip("nnunetv2")
    data = torch.rand(2, 3, 60, 130)
    patch = (48, 48)
    network = _Counting(_random_network(2, 3))
    steps, gaussian = _steps_for(patch), _gaussian(patch)
    box = (slice(0, 60), slice(70, 90))  # the whole first axis (60 > 48: two grid tiles), 20 of 130 across
    boxed = predict_slices(network, data, patch, 3, steps, gaussian, box=box, layout="box")
    assert network.seen == 3 * 2  # 2 tiles along the first axis, 1 across, on 3 slices
    grid = _Counting(network.network)
    predict_slices(grid, data, patch, 3, steps, gaussian, box=box)
    assert grid.seen == 3 * 2 * 3  # the grid's 5 positions across (0, 20, 41, 62, 82), 3 of them touch the box
    window = data[:, :, :, 56:104].permute(1, 0, 2, 3)  # the box's centre 80, the patch 48 wide around it
    top, bottom = (network.network(window[:, :, a:a + 48]).permute(1, 0, 2, 3).detach() for a in (0, 12))
    torch.testing.assert_close(boxed[:, :, :12, 70:90], top[:, :, :12, 14:34], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(boxed[:, :, 48:, 70:90], bottom[:, :, 36:, 14:34], atol=1e-5, rtol=1e-5)
    upper, lower = gaussian[12:48, 14:34].float(), gaussian[0:36, 14:34].float()  # where both tiles cover the box
    blend = (top[:, :, 12:48, 14:34] * upper + bottom[:, :, 0:36, 14:34] * lower) / (upper + lower)
    torch.testing.assert_close(boxed[:, :, 12:48, 70:90], blend, atol=1e-5, rtol=1e-5)
    assert torch.all(boxed[:, :, :, :56] == 0)  # no tile ran there
    with pytest.raises(ValueError, match="tile layout"):
        TileAccumulator(network, data, patch, 3, steps, gaussian, layout="boxes")


def test_folds_are_averaged():
    pytest.importorskip("nnunetv2")
    data = torch.rand(2, 3, 60, 60)
    first, second = _random_network(2, 3), _random_network(2, 3)
    torch.nn.init.normal_(second[0].weight)
    patch = (48, 48)
    steps, gaussian = _steps_for(patch), _gaussian(patch)
    weights = [first.state_dict(), {k: v.clone() for k, v in second.state_dict().items()}]
    network = _random_network(2, 3)
    tiles = TileAccumulator(network, data, patch, 3, steps, gaussian,
                            fold_loaders=[lambda w=w: network.load_state_dict(w) for w in weights])
    tiles.run()
    mean = (predict_slices(first, data, patch, 3, steps, gaussian) + predict_slices(second, data, patch, 3, steps,
                                                                                     gaussian)) / 2
    torch.testing.assert_close(tiles.logits(), mean, atol=1e-5, rtol=1e-5)


def test_images_smaller_than_the_patch_are_padded_as_nnunet_pads_them():
    pytest.importorskip("nnunetv2")
    data = torch.rand(1, 3, 20, 41)  # 20 < half the patch: unpadded, nnU-Net would give no tile position at all
    network, patch = _random_network(1, 2), (48, 48)
    logits = predict_slices(network, data, patch, 2, _steps_for(patch), _gaussian(patch))
    padded = torch.nn.functional.pad(data, (3, 4, 14, 14))  # centred, the odd voxel after, as pad_nd_image
    direct = network(padded.permute(1, 0, 2, 3)).permute(1, 0, 2, 3)[:, :, 14:34, 3:44]
    torch.testing.assert_close(logits, direct.detach(), atol=1e-5, rtol=1e-5)


class _GrowVertebra(torch.nn.Module):
    """A stand-in stage 2: class 1 wherever stage 1's one-hot channel (input channel 1) lies within ``radius``
    (superior-inferior, front-back) voxels in plane, i.e. it extends a vertebra stage 1 found only partly."""

    def __init__(self, radius: tuple[int, int]) -> None:
        super().__init__()
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = tuple(2 * r + 1 for r in self.radius)
        near = torch.nn.functional.max_pool2d(x[:, 1:2], kernel, stride=1, padding=self.radius)
        return torch.cat([1 - near, near], dim=1) * 10


def _fake_fine_predictor(network: torch.nn.Module) -> SimpleNamespace:
    return SimpleNamespace(
        configuration_manager=SimpleNamespace(patch_size=[64, 64], spacing=[1.0, 1.0],
                                              configuration={"normalization_schemes": ["ZScoreNormalization"]}),
        plans_manager=SimpleNamespace(transpose_forward=[2, 0, 1]),  # array (k, j, i) -> (i, k, j): slices along i
        dataset_json={"channel_names": {"0": "MRI"}}, label_manager=SimpleNamespace(num_segmentation_heads=2),
        tile_step_size=0.5, allowed_mirroring_axes=None, use_mirroring=False, device=torch.device("cpu"),
        list_of_parameters=[network.state_dict()], network=network)


def _stage2_case(network: torch.nn.Module, previous: torch.Tensor):
    """Predictors around a stand-in stage 2 ``network`` (stage 1 at 6 mm) and its input: random intensities and
    stage 1's mask ``previous``, 1 mm voxels."""
    from nnunet_ext.segment import CascadePredictors

    data = torch.cat([torch.rand(1, *previous.shape), previous[None]])
    fine = _fake_fine_predictor(network)
    coarse = SimpleNamespace(configuration_manager=SimpleNamespace(spacing=[6.0, 6.0, 6.0], patch_size=[8, 8, 8],
                                                                   configuration=fine.configuration_manager.configuration),
                             plans_manager=fine.plans_manager, dataset_json=fine.dataset_json,
                             label_manager=fine.label_manager)
    return CascadePredictors(coarse=coarse, fine=fine), data


def _fast_and_full(network: torch.nn.Module, previous: torch.Tensor, layout: str = "box"
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 2's labels (:func:`_stage2_case`) by the fast path with the tile ``layout``, by the full grid, and by
    the network run on each whole slice (no tiles: what a tile that sees everything would say)."""
    from nnunet_ext.compat import predict_slab
    from nnunet_ext.segment import _stage2_logits

    predictors, data = _stage2_case(network, previous)
    predictors.tile_layout = layout
    fast = _stage2_logits(predictors, data, {"spacing": [1.0, 1.0, 1.0]}, superior_axis_zyx=0).argmax(0)
    whole = network(data.permute(1, 0, 2, 3)).argmax(1)
    return fast, predict_slab(predictors.fine, data, 4).argmax(0), whole


def test_a_vertebra_at_the_edge_of_stage_1s_box_is_not_cut():
    """Stage 1 found only the middle of the most cranial vertebra; stage 2 grows it by up to the margin. The fast
    path's mask is the network's on whole slices (the grid laid over the box; on nnU-Net's grid, the full grid's,
    whose tiles that do not reach the vertebra cut its top): the box's margin along the spine covers what stage 2
    adds."""
    pytest.importorskip("nnunetv2")

    # stage 2 extends the vertebra by almost the margins: along the spine by most of a level, across by 10 mm
    network = _GrowVertebra((int(LEVEL_MARGIN_MM) - 5, 10))
    shape = (20, 220, 90)  # preprocessed (slices, superior-inferior, front-back)
    previous = torch.zeros(shape)
    previous[6:14, 70:78, 30:50] = 1  # the top vertebra, only partly found
    previous[6:14, 100:130, 30:50] = 1
    fast, full, whole = _fast_and_full(network, previous)
    assert int(whole[:, :70].sum()) > 0 and int(whole[:, :, :30].sum()) > 0  # stage 2 grew it beyond stage 1's box
    assert torch.equal(fast, whole)  # nothing cut at the box's edge
    assert torch.equal(_fast_and_full(network, previous, "grid")[0], full)


def _nnunet_2d_predictor(network: torch.nn.Module, patch: list[int], classes: int):
    """A real nnUNetPredictor around ``network`` (manual_initialization, minimal 2D plans)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = {"dataset_name": "Dataset999_Test", "plans_name": "test", "image_reader_writer": "SimpleITKIO",
             "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "transpose_forward": [0, 1, 2],
             "transpose_backward": [0, 1, 2],
             "configurations": {"2d": {"patch_size": patch, "spacing": [1.0, 1.0], "data_identifier": "x",
                                       "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                                       "architecture": {"network_class_name": "x", "arch_kwargs": {},
                                                        "_kw_requires_import": []}}}}
    dataset_json = {"channel_names": {"0": "MRI", "1": "prev"}, "labels": {"background": 0, **{
        f"c{i}": i for i in range(1, classes)}}, "file_ending": ".nii.gz"}
    manager = PlansManager(plans)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(network, manager, manager.get_configuration("2d"), [network.state_dict()],
                                    dataset_json, "test", None)
    return predictor


def test_fast_slices_match_nnunets_own_sliding_window():
    """nnU-Net's predict_sliding_window_return_logits (one tile of one slice per call, float16 accumulation)
    against predict_slab (batched slices) on the same predictor: same argmax, logits within float16 rounding; and a
    box keeps them inside it."""
    pytest.importorskip("nnunetv2")
    from nnunet_ext.compat import predict_slab

    network = _random_network(2, 3)
    predictor = _nnunet_2d_predictor(network, [48, 48], 3)
    data = torch.rand(2, 5, 100, 61)
    theirs = predictor.predict_sliding_window_return_logits(data).float()
    ours = predict_slab(predictor, data, batch=3)
    torch.testing.assert_close(ours, theirs, atol=0.05, rtol=0.01)
    assert (ours.argmax(0) != theirs.argmax(0)).float().mean() < 1e-3
    box = (slice(20, 40), slice(10, 30))
    boxed = predict_slab(predictor, data[:, 1:4], batch=2, box=box)
    torch.testing.assert_close(boxed[:, :, box[0], box[1]], ours[:, 1:4, box[0], box[1]], atol=1e-5, rtol=1e-5)


def test_stage_2_reaching_beyond_the_box_grows_it_until_nothing_is_cut():
    """Stage 2 extends a vertebra by more than the margins (a sacrum stage 1 found only in part): the box grows
    where stage 2's mask touches it, and the fast path's mask equals the full grid's."""
    pytest.importorskip("nnunetv2")

    network = _GrowVertebra((10, 20))  # front-back by 20 voxels, beyond the 12 mm margin across
    shape = (20, 260, 120)
    previous = torch.zeros(shape)
    previous[6:14, 120:128, 50:60] = 1
    for layout in ("box", "grid"):
        fast, full, whole = _fast_and_full(network, previous, layout)
        assert int(full[:, :, :50 - 12].sum()) > 0 and int(full[:, :, 60 + 12:].sum()) > 0  # beyond the first box
        assert torch.equal(fast, full) and torch.equal(fast, whole)


def test_stage_2_records_the_boxes_it_grew_and_runs_given_boxes_instead():
    """The boxes a stage 2 ran are recorded in order; given to another stage 2 (the benchmark's untrained default
    preset on a trained recipe's boxes) they run exactly those tile-slices and give that network's logits there."""
    pytest.importorskip("nnunetv2")
    from nnunet_ext.compat import predict_slab
    from nnunet_ext.segment import _stage2_logits

    shape = (20, 260, 120)
    previous = torch.zeros(shape)
    previous[6:14, 120:128, 50:60] = 1
    grower = _Counting(_GrowVertebra((10, 20)))  # reaches beyond the first box: it grows
    predictors, data = _stage2_case(grower, previous)
    predictors.tile_layout = "grid"  # the last box's logits are then the full grid's
    boxes: list = []
    grown = _stage2_logits(predictors, data, {"spacing": [1.0, 1.0, 1.0]}, 0, boxes)
    assert len(boxes) >= 2 and boxes[0][2] == slice(50 - 12, 60 + 12)  # the first box: stage 1's, 12 mm across
    assert all(b[2].start <= a[2].start and b[2].stop >= a[2].stop for a, b in zip(boxes, boxes[1:], strict=False))

    other = _Counting(_random_network(2, 2))  # labels at random: on its own it would grow differently
    other_predictors, _ = _stage2_case(other, previous)
    other_predictors.tile_layout = "grid"
    given = _stage2_logits(other_predictors, data, {"spacing": [1.0, 1.0, 1.0]}, 0, list(boxes))
    assert other.seen == grower.seen  # the same tile-slices, each once
    last = boxes[-1]
    expected = predict_slab(other_predictors.fine, data[:, last[0]], 4, box=last[1:])  # the full grid's, there
    torch.testing.assert_close(given[(slice(None), *last)], expected[:, :, last[1], last[2]], atol=1e-5, rtol=1e-5)
    assert not torch.equal(given.argmax(0), grown.argmax(0))  # the other network's logits, not the grower's
    with pytest.raises(ValueError, match="not a growth of a box"):
        _stage2_logits(other_predictors, data, {"spacing": [1.0, 1.0, 1.0]}, 0, [(slice(0, 21), *boxes[0][1:])])


def test_grow_box_moves_only_the_sides_a_body_touches_out_by_their_margin_and_clips():
    box = (slice(2, 8), slice(10, 20))
    inside = np.zeros((6, 10), bool)
    inside[0, 4:7] = True  # 3 voxels of 2 mm on the first axis's lower side
    inside[2:5, 9] = True  # 3 voxels of 1 mm on the second axis's upper side
    assert grow_box(box, inside, (9, 40), (1.0, 2.0), (5.0, 6.0), touch_mm2=3.0) == (slice(0, 8), slice(10, 23))
    assert grow_box(box, inside, (9, 40), (1.0, 2.0), (5.0, 6.0), touch_mm2=4.0) == (slice(0, 8), box[1])  # a speck
    inside[:] = False
    inside[2:4, 3:5] = True
    assert grow_box(box, inside, (9, 40), (1.0, 2.0), 5.0, touch_mm2=0.5) == box
