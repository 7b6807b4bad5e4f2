"""The cranial field-of-view cut (stage 1's augmentation): the cranial end found from the level labels in any
orientation, the right share turned into nnU-Net's padding, and the transform in the cascade trainer's pipeline; the
contrast inversion: image channels negated together, a cascade's previous-stage channels never; the left-right
mirroring of a 2.5D input: what the neighbour-slice stacking of a mirrored volume gives."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from nnunet_ext.training.augmentation import (  # noqa: E402 - after the importorskip
    PADDING_SEG,
    ContrastInversion,
    CranialFieldOfViewCrop,
    NeighbourSlicesMirror,
    cranial_axis,
    cut_cranial_end,
    reversed_neighbour_order,
)


def chain(axis: int, cranial_high: bool, length: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, 10, 40, 12)-like volume whose ``axis`` holds four levels (values 1 cranial ... 4 caudal), 8 voxels
    each with 2-voxel gaps, starting 4 voxels in; rows 0-1 and the last 2 along ``axis`` are padding."""
    shape = [10, 12, 14]
    shape[axis] = length
    seg = torch.zeros(1, *shape, dtype=torch.int16)
    image = torch.rand(1, *shape) + 1
    for n, value in enumerate((4, 3, 2, 1)):  # caudal first along increasing index
        index = [slice(None)] * 3
        index[axis] = slice(4 + 9 * n, 12 + 9 * n)
        seg[(0, *index)] = value
    pad = [slice(None)] * 3
    for ends in (slice(0, 2), slice(length - 2, length)):
        pad[axis] = ends
        seg[(0, *pad)] = PADDING_SEG
        image[(0, *pad)] = 0
    if not cranial_high:
        seg, image = seg.flip(axis + 1), image.flip(axis + 1)
    return image, seg


def transforms_of_kind(trainer, kind: type, patch: tuple[int, ...], **kwargs) -> int:
    """How many ``kind`` transforms ``trainer``'s training pipeline for ``patch`` holds (no rotation, no mirroring;
    ``kwargs``: foreground_labels, ignore_label, is_cascaded as nnU-Net passes them)."""
    return sum(isinstance(t, kind) for t in trainer.get_training_transforms(patch, (0.0, 0.0), None, (), False,
                                                                            **kwargs).transforms)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("cranial_high", [True, False])
def test_the_cranial_end_is_found_from_the_levels_and_cut(axis, cranial_high):
    image, seg = chain(axis, cranial_high)
    original = image.clone()
    assert cranial_axis(seg, [1, 2, 3, 4]) == (axis, 1 if cranial_high else -1)
    cut_image, cut_seg = cut_cranial_end(image, seg, axis, 1 if cranial_high else -1, 0.25)  # 36 scanned -> 9 cut
    along = cut_seg[0].movedim(axis, 0)
    padded = (along == PADDING_SEG).flatten(1).all(1)
    expected = torch.zeros(40, dtype=torch.bool)
    expected[:2] = expected[-2:] = True
    expected[29:38] = True  # the cranial 9 of the 36 scanned rows (2..37)
    if not cranial_high:
        expected = expected.flip(0)
    assert torch.equal(padded, expected)
    assert (cut_image[0].movedim(axis, 0)[padded] == 0).all()
    assert (cut_seg == 4).sum() == (seg == 4).sum()  # the caudal end (the sacrum's side) is untouched
    assert (seg == 1).sum() > 0 and (cut_seg == 1).sum() < (seg == 1).sum()  # the input is not changed
    assert torch.equal(image, original)


def test_fewer_than_two_levels_leave_the_patch_alone():
    image, seg = chain(1, True)
    seg[seg > 1] = 0
    transform = CranialFieldOfViewCrop([1, 2, 3, 4], probability=1.0, max_fraction=0.5)
    out = transform(image=image.clone(), segmentation=seg.clone())
    assert torch.equal(out["segmentation"], seg) and torch.equal(out["image"], image)


def test_the_cascade_trainer_cuts_patches_and_nnunet_turns_the_cut_into_background():
    pytest.importorskip("nnunetv2")
    from nnunet_ext.training.trainers import nnUNetTrainerSpine

    class Cutting(nnUNetTrainerSpine):
        cranial_crop_probability, cranial_crop_max_fraction = 1.0, 0.6

    arguments = ((10, 40, 14), (0.0, 0.0), None, (), False)
    ours = Cutting.get_training_transforms(*arguments, foreground_labels=[1, 2, 3, 4, 5], ignore_label=5)
    crops = [t for t in ours.transforms if isinstance(t, CranialFieldOfViewCrop)]
    assert len(crops) == 1 and crops[0].level_values == [1, 2, 3, 4]
    plain = nnUNetTrainerSpine.get_training_transforms(*arguments, foreground_labels=[1, 2, 3, 4])
    assert not any(isinstance(t, CranialFieldOfViewCrop) for t in plain.transforms)
    binary = Cutting.get_training_transforms(*arguments, foreground_labels=[1])
    assert not any(isinstance(t, CranialFieldOfViewCrop) for t in binary.transforms)
    torch.manual_seed(3)
    image, seg = chain(1, True)
    kept = []
    for _ in range(8):
        out = ours(image=image.clone(), segmentation=seg.clone())
        assert out["segmentation"].min() >= 0  # the cut is background after nnU-Net's own transforms
        kept.append(int((out["segmentation"] == 1).sum()))
    assert min(kept) < int((seg == 1).sum())  # some patches lost the cranial level


def test_the_cut_is_a_class_attribute_for_stage_1_variants_of_level_datasets() -> None:
    """Off in the CPU recipe (tried, not adopted: docs/benchmarks.md, "Fifth session"); a stage-1 variant that sets
    ``cranial_crop_probability`` gets it, a binary dataset never (no levels to count)."""
    pytest.importorskip("nnunetv2")
    from nnunet_ext.training.variants import nnUNetTrainerSpineCoarseBinaryCpu, nnUNetTrainerSpineCoarseCpu

    class Cut(nnUNetTrainerSpineCoarseCpu):
        cranial_crop_probability = 0.5

    class CutBinary(nnUNetTrainerSpineCoarseBinaryCpu):
        cranial_crop_probability = 0.5

    def crops(trainer, labels) -> int:
        return transforms_of_kind(trainer, CranialFieldOfViewCrop, (10, 40, 14), foreground_labels=labels)

    assert crops(nnUNetTrainerSpineCoarseCpu, list(range(1, 10))) == 0
    assert crops(Cut, list(range(1, 10))) == 1
    assert crops(CutBinary, [1]) == 0


def test_contrast_inversion_negates_every_image_channel_and_nothing_else():
    image, seg = torch.rand(3, 6, 7) + 1, torch.ones(1, 6, 7)
    out = ContrastInversion(1.0)(image=image.clone(), segmentation=seg.clone())
    assert torch.equal(out["image"], -image) and torch.equal(out["segmentation"], seg)
    kept = ContrastInversion(0.0)(image=image.clone(), segmentation=seg.clone())
    assert torch.equal(kept["image"], image)
    torch.manual_seed(0)
    flips = sum(bool(ContrastInversion(0.3)(image=image)["image"][0, 0, 0] < 0) for _ in range(400))
    assert 80 <= flips <= 160  # 120 expected


@pytest.mark.parametrize("probability", [0.0, 1.0])
def test_a_cascade_stage_inverts_its_image_but_not_the_previous_stage_channels(probability):
    """In a stage-2 pipeline (``is_cascaded``) the previous stage's segmentation becomes one-hot image channels after
    the inversion: those stay 0/1 while the image's sign follows the attribute (off by default)."""
    pytest.importorskip("nnunetv2")
    from nnunet_ext.training.trainers import nnUNetTrainerSpine

    class Inverting(nnUNetTrainerSpine):
        contrast_inversion_probability = probability

    transforms = Inverting.get_training_transforms((32, 32), (0.0, 0.0), None, (), False, is_cascaded=True,
                                                   foreground_labels=[1, 2])
    assert sum(isinstance(t, ContrastInversion) for t in transforms.transforms) == (probability > 0)
    torch.manual_seed(1)
    seg = torch.zeros(2, 32, 32, dtype=torch.int16)
    seg[:, 8:20, 10:22] = 1
    seg[:, 20:26, 10:22] = 2
    out = transforms(image=torch.rand(1, 32, 32) + 2, segmentation=seg)
    assert out["image"].shape[0] == 3  # the image and one channel per foreground class of the previous stage
    assert set(out["image"][1:].unique().tolist()) <= {0.0, 1.0}
    assert (out["image"][0].mean() < 0) == (probability == 1.0)


def test_the_recipe_inverts_in_stage_1_only() -> None:
    """The CPU recipe's stage 1 inverts contrasts (docs/benchmarks.md, "Sixteenth session"); its stage 2 and the binary
    M_SC's stage 1, not measured with it, do not."""
    pytest.importorskip("nnunetv2")
    from nnunet_ext.training.variants import (
        nnUNetTrainerSpineCoarseBinaryCpu,
        nnUNetTrainerSpineCoarseCpu,
        nnUNetTrainerSpineFineCpu,
    )

    def inversions(trainer, patch) -> int:
        return transforms_of_kind(trainer, ContrastInversion, patch, foreground_labels=list(range(1, 10)),
                                  ignore_label=10)

    assert inversions(nnUNetTrainerSpineCoarseCpu, (16, 64, 64)) == 1
    assert inversions(nnUNetTrainerSpineCoarseBinaryCpu, (16, 64, 64)) == 0
    assert inversions(nnUNetTrainerSpineFineCpu, (64, 64)) == 0


@pytest.mark.parametrize("channels", [1, 2])
def test_reversed_neighbours_are_the_stack_of_the_mirrored_volume(channels) -> None:
    """Stacking the neighbours of a volume mirrored left-right (slice axis) gives, at the mirrored slice, the
    reversed stack of the original slice: the transform is left-right mirroring for a 2.5D input."""
    from nnunet_ext.neighbours import stack_neighbours

    volume = torch.rand(channels, 9, 5, 6).numpy()
    stacked = torch.from_numpy(stack_neighbours(volume, channels, 2))
    mirrored = torch.from_numpy(stack_neighbours(volume[:, ::-1].copy(), channels, 2))
    for s in range(9):
        assert torch.equal(reversed_neighbour_order(stacked[:, s], 2), mirrored[:, 8 - s])
    assert not torch.equal(reversed_neighbour_order(stacked[:, 4], 2), stacked[:, 4])  # it does change the input
    with pytest.raises(ValueError):
        reversed_neighbour_order(torch.zeros(4, 3, 3), 2)  # 4 channels are not 5 offsets
    with pytest.raises(ValueError):
        NeighbourSlicesMirror(0, 0.5)  # no neighbours to mirror


def test_neighbour_mirror_in_a_stage_2_pipeline_leaves_the_previous_stage_channels() -> None:
    """In the cascade's 2.5D stage 2 with the attribute set, the neighbour slices swap sides in about the share of
    patches asked for; the centre slice, the previous stage's one-hot channels and the segmentation never change.
    Off by default, and then not in the pipeline."""
    pytest.importorskip("nnunetv2")
    from nnunet_ext.training.trainers import nnUNetTrainerSpine

    class Mirroring(nnUNetTrainerSpine):
        neighbour_slices, neighbour_mirror_probability = 2, 0.5

    class Plain(nnUNetTrainerSpine):
        neighbour_slices = 2

    class Flat(nnUNetTrainerSpine):  # a 2D stage without neighbour slices has nothing to mirror
        neighbour_mirror_probability = 0.5

    def pipeline(trainer):
        return trainer.get_training_transforms((32, 32), (0.0, 0.0), None, (), False, is_cascaded=True,
                                               foreground_labels=[1, 2])

    assert sum(isinstance(t, NeighbourSlicesMirror) for t in pipeline(Plain).transforms) == 0
    with pytest.raises(ValueError, match="needs neighbour_slices"):
        pipeline(Flat)
    transforms = pipeline(Mirroring)
    assert sum(isinstance(t, NeighbourSlicesMirror) for t in transforms.transforms) == 1
    names = [type(t).__name__ for t in transforms.transforms]
    # after the spatial transform, before the previous stage's segmentation joins the image as one-hot channels
    assert names.index("SpatialTransform") < names.index("NeighbourSlicesMirror") < names.index(
        "MoveSegAsOneHotToDataTransform")
    mirror = next(t for t in transforms.transforms if isinstance(t, NeighbourSlicesMirror))
    seg = torch.zeros(2, 32, 32, dtype=torch.int16)
    seg[0, 8:20, 10:22], seg[1, 8:20, 10:22] = 1, 2
    image = torch.arange(5, dtype=torch.float32)[:, None, None].expand(5, 32, 32).clone()
    torch.manual_seed(0)
    swapped = 0
    for _ in range(200):
        out = mirror(image=image.clone(), segmentation=seg.clone())
        assert torch.equal(out["segmentation"], seg) and torch.equal(out["image"][2], image[2])
        swapped += bool(out["image"][0, 0, 0] == 4)
    assert 70 <= swapped <= 130  # 100 expected
    torch.manual_seed(2)
    out = transforms(image=torch.rand(5, 32, 32) + 2, segmentation=seg)
    assert out["image"].shape[0] == 7  # five slices and one channel per foreground class of the previous stage
    assert set(out["image"][5:].unique().tolist()) <= {0.0, 1.0}


def test_the_recipe_does_not_mirror_the_neighbour_slices() -> None:
    """The neighbour mirror, tried twice on the recipe's stage 2, moved nothing beyond what two trainings differ by
    (docs/benchmarks.md, "Twenty-ninth session"): the recipe's stages train without it."""
    pytest.importorskip("nnunetv2")
    from nnunet_ext.training.variants import nnUNetTrainerSpineFineBinaryCpu, nnUNetTrainerSpineFineCpu

    def mirrors(trainer) -> int:
        return transforms_of_kind(trainer, NeighbourSlicesMirror, (64, 64), foreground_labels=list(range(1, 10)),
                                  ignore_label=10)

    assert mirrors(nnUNetTrainerSpineFineCpu) == 0
    assert mirrors(nnUNetTrainerSpineFineBinaryCpu) == 0
