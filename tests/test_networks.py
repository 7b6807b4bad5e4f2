"""The cascade's networks on CPU: shapes for odd and anisotropic patches, gradients into every parameter (GCN
included), the class graph, the graph really used, deep supervision on/off with one state dict, determinism, a tiny
forward+backward in seconds, and construction through nnU-Net's own plans machinery."""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from nnunet_ext.networks import precision  # noqa: E402
from nnunet_ext.networks.blocks import InstanceNorm2d, InstanceNorm3d, is_channels_last  # noqa: E402
from nnunet_ext.networks.coarse3d import CoarseDeepLabGCN3D  # noqa: E402
from nnunet_ext.networks.factory import (  # noqa: E402
    COARSE_CLASS,
    FINE_CLASS,
    anisotropic_strides,
    architecture_entry,
    class_names_from_labels,
    coarse_arch_kwargs,
    deep_supervision_scales,
    fine_arch_kwargs,
)
from nnunet_ext.networks.fine2d import ResidualUNet2D  # noqa: E402
from nnunet_ext.networks.graph import class_edges, edge_index  # noqa: E402
from nnunet_ext.networks.precision import (  # noqa: E402
    cpu_bfloat16_supported,
    cpu_channels_last_preferred,
    set_cpu_autocast,
    set_cpu_channels_last,
)

PROJECT_LABELS = {"background": 0, "T11": 1, "T12": 2, "L1": 3, "L2": 4, "L3": 5, "L4": 6, "L5": 7, "S1": 8,
                  "S2": 9, "ignore": 10}
NAMES = class_names_from_labels(PROJECT_LABELS)
TINY_COARSE = {"features_per_stage": (8, 12, 16, 24), "blocks_per_stage": (1, 1, 1, 1), "aspp_channels": 16,
               "gcn_hidden": 8}
TINY_FINE = {"features_per_stage": (8, 12, 16, 24, 32)}


def tiny_coarse(patch, spacing=(1.0, 1.0, 1.0), deep_supervision=False, names=NAMES, seed=0):
    torch.manual_seed(seed)
    kwargs = coarse_arch_kwargs(patch, spacing, names, **{k: v for k, v in TINY_COARSE.items()})
    return CoarseDeepLabGCN3D(1, len(names), deep_supervision=deep_supervision, **kwargs)


def tiny_fine(patch, deep_supervision=False, seed=0):
    torch.manual_seed(seed)
    return ResidualUNet2D(1 + len(NAMES) - 1, len(NAMES), deep_supervision=deep_supervision,
                          **fine_arch_kwargs(patch, (1.0, 1.0), **TINY_FINE))


# ----------------------------------------------------------------------------------------------------------------
# the class graph


def test_graph_of_the_full_label_set():
    assert NAMES == ["background", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1", "S2"]  # ignore is no node
    assert class_edges(NAMES) == [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9)]
    edges = {tuple(e) for e in edge_index(NAMES).t().tolist()}
    expected = {(i, j) for i, j in class_edges(NAMES)} | {(j, i) for i, j in class_edges(NAMES)}
    assert edges == expected | {(k, k) for k in range(10)}  # background: its self-loop only


def test_graph_of_a_partial_and_a_binary_label_set():
    partial = class_names_from_labels({"background": 0, "L1": 1, "L2": 2, "L3": 3, "L4": 4, "L5": 5})
    assert class_edges(partial) == [(1, 2), (2, 3), (3, 4), (4, 5)]
    gap = ["background", "T12", "L2", "L3"]  # L1 missing: T12 and L2 are not neighbours
    assert class_edges(gap) == [(2, 3)]
    assert class_edges(["background", "L5", "L6", "S1"]) == [(1, 2), (1, 3), (2, 3)]  # L6 is optional
    binary = class_names_from_labels({"background": 0, "vertebra": 1, "ignore": 2})
    assert class_edges(binary) == []
    assert edge_index(binary).t().tolist() == [[0, 0], [1, 1]]


def test_changing_the_adjacency_changes_the_output():
    net = tiny_coarse((8, 24, 24)).eval()
    x = torch.randn(1, 1, 8, 24, 24)
    with torch.no_grad():
        first = net(x)
        again = net(x)
        head = net.relation_head
        head.set_edges(edge_index(["background", "a", "b", "c", "d", "e", "f", "g", "h", "i"]))  # self-loops only
        isolated = net(x)
    assert torch.equal(first, again)
    assert not torch.allclose(first, isolated, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# shapes, gradients, deep supervision, determinism


@pytest.mark.parametrize("patch, spacing", [((13, 37, 29), (1.0, 1.0, 1.0)),  # odd, not powers of two
                                            ((7, 45, 33), (4.5, 0.9, 0.9)),  # thick slices: few along axis 0
                                            ((16, 32, 48), (2.0, 1.0, 1.0))])
def test_coarse_output_shapes(patch, spacing):
    net = tiny_coarse(patch, spacing, deep_supervision=True)
    strides = net.strides
    x = torch.randn(2, 1, *patch)
    outputs, scores = net.forward_with_aux(x)
    scales = deep_supervision_scales(strides)
    assert len(outputs) == len(scales) == 3
    for output, scale in zip(outputs, scales, strict=True):
        expected = [int(-(-n // round(1 / s))) for n, s in zip(patch, scale, strict=True)]
        assert list(output.shape) == [2, 10, *expected]
    assert scores.shape == (2, 10, *patch)
    assert min(anisotropic_strides(patch, spacing, 3)[1]) >= 1
    net.decoder.deep_supervision = False
    assert net(x).shape == (2, 10, *patch)


def test_thick_slice_axis_is_not_strided_below_four_voxels():
    strides = anisotropic_strides((7, 45, 33), (4.5, 0.9, 0.9), 3)
    assert [s[0] for s in strides] == [1, 1, 1, 1]
    strides = anisotropic_strides((20, 128, 128), (4.0, 1.0, 1.0), 3)
    assert [s[0] for s in strides] == [1, 1, 2, 2]  # waits until in-plane spacing is within 2x, keeps >= 4 voxels


@pytest.mark.parametrize("patch", [(37, 29), (64, 48), (61, 100)])
def test_fine_output_shapes(patch):
    net = tiny_fine(patch, deep_supervision=True)
    x = torch.randn(2, 10, *patch)
    outputs = net(x)
    assert len(outputs) == 4 and outputs[0].shape == (2, 10, *patch)
    assert [o.shape[2] for o in outputs] == sorted([o.shape[2] for o in outputs], reverse=True)
    net.decoder.deep_supervision = False
    assert net(x).shape == (2, 10, *patch)


def test_gradients_reach_every_parameter():
    coarse = tiny_coarse((9, 27, 21), deep_supervision=True)
    outputs, scores = coarse.forward_with_aux(torch.randn(2, 1, 9, 27, 21))
    (sum(o.square().mean() for o in outputs) + 0.3 * scores.square().mean()).backward()
    missing = [name for name, p in coarse.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert any("graph_convs" in name for name, _ in coarse.named_parameters())
    fine = tiny_fine((33, 27), deep_supervision=True)
    sum(o.square().mean() for o in fine(torch.randn(2, 10, 33, 27))).backward()
    assert [name for name, p in fine.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


@pytest.mark.parametrize("build, shape", [(lambda ds: tiny_coarse((8, 24, 24), deep_supervision=ds), (1, 1, 8, 24, 24)),
                                          (lambda ds: tiny_fine((40, 32), deep_supervision=ds), (1, 10, 40, 32))])
def test_state_dict_with_deep_supervision_loads_without(build, shape):
    with_ds, without_ds = build(True), build(False)
    state = with_ds.state_dict()
    assert list(state) == list(without_ds.state_dict())
    without_ds.load_state_dict(state, strict=True)
    x = torch.randn(*shape)
    with_ds.eval(), without_ds.eval()
    with torch.no_grad():
        assert torch.allclose(with_ds(x)[0], without_ds(x), atol=1e-6)


def test_deterministic_under_a_fixed_seed():
    x = torch.randn(1, 1, 8, 24, 24)
    first = tiny_coarse((8, 24, 24), seed=3)
    second = tiny_coarse((8, 24, 24), seed=3)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.equal(first(x), second(x))
    finally:
        torch.use_deterministic_algorithms(False)


def test_tiny_forward_backward_takes_seconds_on_cpu():
    coarse, fine = tiny_coarse((16, 48, 48), deep_supervision=True), tiny_fine((96, 80), deep_supervision=True)
    start = time.perf_counter()
    outputs, scores = coarse.forward_with_aux(torch.randn(2, 1, 16, 48, 48))
    (sum(o.mean() for o in outputs) + scores.mean()).backward()
    sum(o.mean() for o in fine(torch.randn(4, 10, 96, 80))).backward()
    assert time.perf_counter() - start < 20.0


def test_mixed_precision_on_cpu():
    coarse = tiny_coarse((8, 24, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = coarse(torch.randn(1, 1, 8, 24, 24))
    assert output.shape == (1, 10, 8, 24, 24) and torch.isfinite(output.float()).all()


@pytest.mark.parametrize("machine, onednn, avx512_bf16, amx, expected", [
    ("x86_64", True, False, False, False),  # AVX512 without BF16 or AMX: oneDNN emulates bfloat16, slower than float32
    ("x86_64", True, True, False, True),  # AMD Zen 4
    ("x86_64", True, False, True, True),  # Intel with AMX
    ("AMD64", True, True, False, True),
    ("x86_64", False, True, True, False),  # a torch whose oneDNN has no bfloat16
    ("aarch64", True, False, False, True),  # oneDNN's check is the CPU's own bfloat16 instructions there
    ("aarch64", False, False, False, False)])
def test_cpu_bfloat16_supported_needs_native_instructions(monkeypatch, machine, onednn, avx512_bf16, amx, expected):
    monkeypatch.setattr(precision.platform, "machine", lambda: machine)
    monkeypatch.setattr(precision, "_onednn_bfloat16_supported", lambda: onednn)
    monkeypatch.setattr(precision, "cpu_capability", lambda name: avx512_bf16 and name == "avx512_bf16")
    monkeypatch.setattr(precision, "cpu_amx_supported", lambda: amx)
    assert precision.cpu_bfloat16_supported() is expected
    network = tiny_fine((64, 48))
    assert set_cpu_autocast(network, torch.bfloat16) is expected


@pytest.mark.skipif(not cpu_bfloat16_supported(), reason="this CPU has no native bfloat16")
@pytest.mark.parametrize("build, shape", [
    (lambda: tiny_coarse((16, 48, 48), deep_supervision=True), (2, 1, 16, 48, 48)),
    (lambda: tiny_fine((64, 48), deep_supervision=True), (2, 10, 64, 48))])
def test_cpu_bfloat16_autocast_switch(build, shape):
    """set_cpu_autocast: float32 outputs close to float32 compute (same argmax almost everywhere), float32 gradients,
    the same state dict keys, and switched off again the float32 outputs exactly."""
    net = build()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    keys = list(net.state_dict())
    with torch.no_grad():
        reference = net(x)
    assert set_cpu_autocast(net, torch.bfloat16)
    outputs = net(x)
    assert all(o.dtype == torch.float32 for o in outputs)
    for output, expected in zip(outputs, reference, strict=True):
        assert (output.detach() - expected).abs().max() <= 0.05 * expected.abs().max()
        assert (output.argmax(1) == expected.argmax(1)).float().mean() >= 0.95
    sum(o.float().mean() for o in outputs).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters() if p.requires_grad)
    assert list(net.state_dict()) == keys
    assert set_cpu_autocast(net, None)
    with torch.no_grad():
        assert all(torch.equal(o, e) for o, e in zip(net(x), reference, strict=True))


def test_cpu_autocast_only_for_the_cascade_networks():
    assert not set_cpu_autocast(torch.nn.Conv2d(1, 1, 3), torch.bfloat16)
    wrapped = torch.nn.Module()
    wrapped._orig_mod = tiny_fine((32, 32))  # what torch.compile leaves
    assert set_cpu_autocast(wrapped, None) and wrapped._orig_mod.cpu_autocast_dtype is None


@pytest.mark.parametrize("order", [("module", "_orig_mod"), ("_orig_mod", "module")])
def test_cpu_switches_reach_a_network_inside_ddp_and_compile(order):
    # ("module", "_orig_mod"): nnU-Net's order, DistributedDataParallel (.module) around a compiled network
    net = tiny_fine((32, 32))
    inner = torch.nn.Module()
    setattr(inner, order[1], net)
    outer = torch.nn.Module()
    setattr(outer, order[0], inner)
    assert set_cpu_channels_last(outer, True) and net.cpu_channels_last
    assert set_cpu_channels_last(outer, False) and not net.cpu_channels_last
    net.cpu_autocast_dtype = torch.float16  # a stand-in value, so that None below is a change
    assert set_cpu_autocast(outer, None) and net.cpu_autocast_dtype is None


@pytest.mark.parametrize("norm_class, shape", [(InstanceNorm2d, (3, 5, 9, 7)), (InstanceNorm2d, (1, 4, 6, 6)),
                                               (InstanceNorm3d, (2, 5, 4, 9, 7)), (InstanceNorm3d, (1, 3, 2, 5, 4))])
def test_instance_norm_keeps_a_channels_last_input_channels_last(norm_class, shape):
    """Each sample's own statistics (as torch's instance_norm on the contiguous input, to 1e-5), the channels-last
    layout kept, gradients equal; contiguous inputs and the state dict as torch's own module."""
    torch.manual_seed(0)
    norm = norm_class(shape[1], eps=1e-5, affine=True)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    base = (torch.nn.InstanceNorm2d if len(shape) == 4 else torch.nn.InstanceNorm3d)(shape[1], affine=True)
    base.load_state_dict(norm.state_dict())
    x = (torch.randn(*shape) * torch.arange(1, shape[0] + 1).view(-1, *[1] * (len(shape) - 1)) + 3.0)
    layout = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    x_last = x.contiguous(memory_format=layout).requires_grad_()
    x_plain = x.clone().requires_grad_()
    out_last, expected = norm(x_last), base(x_plain)
    assert out_last.is_contiguous(memory_format=layout) and not out_last.is_contiguous()
    torch.testing.assert_close(out_last, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm(x), expected, atol=0, rtol=0)  # contiguous: torch's own path
    weights = torch.randn(*shape)
    (out_last * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x_last.grad, x_plain.grad, atol=1e-4, rtol=1e-4)
    assert list(norm.state_dict()) == list(base.state_dict())
    norm.eval(), base.eval()  # instance statistics in eval mode too
    with torch.no_grad():
        torch.testing.assert_close(norm(x_last), base(x), atol=1e-5, rtol=1e-5)
    tracking = norm_class(shape[1], affine=True, track_running_stats=True)  # running statistics: torch's own path
    with torch.no_grad():
        assert not is_channels_last(tracking(x.contiguous(memory_format=layout)))


@pytest.mark.parametrize("build, shape", [
    (lambda: tiny_coarse((16, 48, 48), deep_supervision=True), (2, 1, 16, 48, 48)),
    (lambda: tiny_fine((64, 48), deep_supervision=True), (3, 10, 64, 48))])
def test_cpu_channels_last_switch(build, shape):
    """set_cpu_channels_last: the same outputs in float32 (to 1e-4 of their range), the same state dict; switched
    off again the outputs of the contiguous layout exactly; only the cascade's networks take it."""
    net = build().eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    keys = list(net.state_dict())
    norms = [m for m in net.encoder.modules() if isinstance(m, torch.nn.modules.instancenorm._InstanceNorm)]
    assert norms and all(isinstance(m, (InstanceNorm2d, InstanceNorm3d)) for m in norms)
    layouts = []  # (input, output) channels-last, per norm call
    hooks = [m.register_forward_hook(lambda m, i, o: layouts.append((is_channels_last(i[0]), is_channels_last(o))))
             for m in norms]
    with torch.no_grad():
        reference = net(x)
        assert not any(any(pair) for pair in layouts)
        layouts.clear()
        assert set_cpu_channels_last(net, True)
        outputs = net(x)
    # the encoder's norms got channels-last inputs (but for the two after the convolutions of a one-channel input,
    # whose outputs follow that input, which is both layouts at once) and kept the layout
    assert len(layouts) == len(norms) and sum(i for i, _ in layouts) == len(norms) - (2 if shape[1] == 1 else 0)
    assert all(o for i, o in layouts if i)
    for hook in hooks:
        hook.remove()
    for output, expected in zip(outputs, reference, strict=True):
        torch.testing.assert_close(output, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-4)
    assert outputs[0].is_contiguous(memory_format=torch.channels_last_3d if len(shape) == 5 else torch.channels_last)
    assert list(net.state_dict()) == keys
    assert set_cpu_channels_last(net, False)
    with torch.no_grad():
        assert all(torch.equal(o, e) for o, e in zip(net(x), reference, strict=True))
    assert not set_cpu_channels_last(torch.nn.Conv2d(1, 1, 3), True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_mixed_precision():
    coarse = tiny_coarse((16, 48, 48), deep_supervision=True).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        outputs, scores = coarse.forward_with_aux(torch.randn(2, 1, 16, 48, 48, device="cuda"))
    (sum(o.float().mean() for o in outputs) + scores.float().mean()).backward()


# ----------------------------------------------------------------------------------------------------------------
# built by nnU-Net from plans


def _plans(configuration: str, architecture: dict, patch, spacing) -> dict:
    return {"dataset_name": "Dataset999_Test", "plans_name": "nnUNetPlans", "configurations": {configuration: {
        "data_identifier": f"nnUNetPlans_{configuration}", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2, "patch_size": list(patch), "median_image_size_in_voxels": list(patch),
        "spacing": list(spacing), "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {}, "resampling_fn_seg_kwargs": {},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape", "resampling_fn_probabilities_kwargs": {},
        "architecture": architecture, "batch_dice": False}}}


@pytest.mark.parametrize("configuration, class_name", [("3d_lowres", COARSE_CLASS), ("2d", FINE_CLASS)])
def test_nnunet_builds_the_networks_from_plans(configuration, class_name):
    pytest.importorskip("nnunetv2")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    if class_name == COARSE_CLASS:
        patch, spacing = (12, 40, 36), (3.0, 1.5, 1.5)
        kwargs = coarse_arch_kwargs(patch, spacing, NAMES, **TINY_COARSE)
        inputs = 1
    else:
        patch, spacing = (40, 36), (1.0, 1.0)
        kwargs = fine_arch_kwargs(patch, spacing, **TINY_FINE)
        inputs = 1 + 9  # image + one-hot of the coarse stage without background
    plans = PlansManager(_plans(configuration, architecture_entry(class_name, kwargs), patch, spacing))
    manager = plans.get_configuration(configuration)
    assert manager.network_arch_class_name == class_name
    net = nnUNetTrainer.build_network_architecture(plans, manager, inputs, 10, True)
    assert type(net).__module__ + "." + type(net).__name__ == class_name
    outputs = net(torch.randn(1, inputs, *patch))
    assert isinstance(outputs, list) and outputs[0].shape == (1, 10, *patch)
    scales = deep_supervision_scales(manager.pool_op_kernel_sizes)  # what nnU-Net's trainer derives from the plans
    assert len(scales) == len(outputs)
    for output, scale in zip(outputs, scales, strict=True):
        assert list(output.shape[2:]) == [int(-(-n // round(1 / s))) for n, s in zip(patch, scale, strict=True)]
    net.decoder.deep_supervision = False  # what nnUNetTrainer.set_deep_supervision_enabled does
    assert net(torch.randn(1, inputs, *patch)).shape == (1, 10, *patch)


def _tiny_fine_model(folder, trained_in: str = "float32") -> None:
    """A model folder holding an initialised tiny stage-2 network (fold 0), its plans recording ``trained_in``."""
    from nnunet_ext.compat import write_initialised_model
    from nnunet_ext.plans import record_cpu_precision

    patch, spacing = (40, 36), (1.0, 1.0)
    plans = _plans("2d", architecture_entry(FINE_CLASS, fine_arch_kwargs(patch, spacing, **TINY_FINE)), patch, spacing)
    record_cpu_precision(plans["configurations"]["2d"], trained_in)
    dataset_json = {"labels": PROJECT_LABELS, "channel_names": {"0": "MRI"}, "numTraining": 1,
                    "file_ending": ".nii.gz"}
    write_initialised_model(folder, plans, dataset_json, "2d", "nnUNetTrainerSpineFine", None)


def test_predictor_loads_the_network_in_the_precision_asked(tmp_path):
    """compat.load_predictor(precision=...): float32 by default, bfloat16 autocast where the CPU has it natively
    (elsewhere a clear error), an unknown precision refused."""
    pytest.importorskip("nnunetv2")
    from nnunet_ext.compat import load_predictor

    _tiny_fine_model(tmp_path)
    predictor = load_predictor(tmp_path, [0])  # auto: trained in float32 (no record in plans.json)
    assert predictor.network.cpu_autocast_dtype is None and predictor.cpu_precision == "float32"
    with pytest.raises(ValueError, match="precision 'float16'"):
        load_predictor(tmp_path, [0], precision="float16")
    if cpu_bfloat16_supported():
        predictor = load_predictor(tmp_path, [0], precision="bfloat16")
        assert predictor.network.cpu_autocast_dtype == torch.bfloat16 and predictor.cpu_precision == "bfloat16"
    else:
        with pytest.raises(ValueError, match="native bfloat16"):
            load_predictor(tmp_path, [0], precision="bfloat16")


@pytest.mark.parametrize("widths, expected", [
    ((8, 16, 32, 64, 96), ["encoder.1.0.shortcut.0"]),  # the float32 recipe's and "small"'s stage 2
    ((6, 12, 24, 48, 72), ["encoder.1.0.shortcut.0", "encoder.2.0.shortcut.0"]),  # the smoke tests' (6 and 12)
    ((16, 32, 64, 96, 128), []),  # the recipe's bfloat16 stage 2
    ((32, 64, 128, 256, 512), [])])  # the default preset's
def test_channels_last_training_hazards_are_strided_1x1_convolutions_from_2_to_15_channels(widths, expected):
    """oneDNN's weight gradient of a strided 1x1 convolution with 2-15 input channels is unsafe on channels-last
    tensors (it crashed a training step here): found by name in the stage-2 network, through a compile-like wrapper,
    and in a lone convolution of each kind."""
    net = ResidualUNet2D(14, len(NAMES), features_per_stage=widths)
    assert precision.channels_last_training_hazards(net) == expected

    wrapped = torch.nn.Module()
    wrapped._orig_mod = net  # what torch.compile leaves
    assert precision.channels_last_training_hazards(wrapped) == expected
    nn = torch.nn
    for conv, unsafe in ((nn.Conv2d(8, 16, 1, stride=2), True), (nn.Conv3d(15, 16, 1, stride=(1, 2, 2)), True),
                         (nn.Conv2d(16, 32, 1, stride=2), False), (nn.Conv2d(1, 8, 1, stride=2), False),
                         (nn.Conv2d(8, 16, 1), False), (nn.Conv2d(8, 16, 3, stride=2), False),
                         (nn.Conv2d(32, 32, 1, stride=2, groups=4), True)):
        assert (precision.channels_last_training_hazards(conv) == [""]) is unsafe, conv


def test_channels_last_is_preferred_on_x86_cpus_with_amx_or_avx512_bf16(monkeypatch):
    """The instruction sets read from torch's capability map (a key missing, or holding a number or a name, is not
    there; a torch without the map has none), and channels-last preferred with AMX or AVX512-BF16 only."""
    real = torch.cpu.get_capabilities()
    if real["architecture"] == "x86_64":  # the pinned torch names the instruction sets so on x86
        for name in ("avx512_bf16", "amx_bf16"):
            assert isinstance(real[name], bool), name
    capabilities = {"avx512_bf16": True, "avx512_f": False, "sve_max_length": 256, "architecture": "x86_64"}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert precision.cpu_capability("avx512_bf16")
    for name in ("avx512_f", "amx_bf16", "sve_max_length", "architecture"):
        assert not precision.cpu_capability(name), name
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert not precision.cpu_capability("avx512_bf16")
    for amx, flags, expected in ((False, (), False), (False, ("avx512_bf16",), True), (True, (), True),
                                 (False, ("avx512_f", "avx512_vnni"), False)):
        monkeypatch.setattr(precision, "cpu_amx_supported", lambda amx=amx: amx)
        monkeypatch.setattr(precision, "cpu_capability", lambda name, flags=flags: name in flags)
        assert precision.cpu_channels_last_preferred() is expected, (amx, flags)


def test_amx_read_from_the_capability_map_without_torchs_private_check(monkeypatch):
    """A torch without its private AMX check: AMX as the capability map says."""
    monkeypatch.delattr(torch._C._cpu, "_init_amx")
    for amx in (True, False):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda amx=amx: {"amx_bf16": amx})
        assert precision.cpu_amx_supported() is amx


def test_predictor_runs_the_network_in_the_layout_asked(tmp_path):
    """compat.load_predictor(cpu_layout=...): channels-last where asked, contiguous where asked; auto is
    channels-last only for a bfloat16 network on an x86 CPU with AMX or AVX512-BF16; an unknown layout refused."""
    pytest.importorskip("nnunetv2")
    from nnunet_ext.compat import load_predictor

    _tiny_fine_model(tmp_path)
    for layout, expected in (("channels-last", True), ("contiguous", False), ("auto", False)):  # float32: auto off
        predictor = load_predictor(tmp_path, [0], cpu_layout=layout)
        assert predictor.network.cpu_channels_last is expected
        assert predictor.cpu_layout == ("channels-last" if expected else "contiguous")
        # the weights too, and still after nnU-Net loads a fold's parameters into the network (as for each fold)
        predictor.network.load_state_dict(predictor.list_of_parameters[0])
        convs = [m for m in predictor.network.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
                 and m.kernel_size != (1, 1)]  # other weights are both layouts at once
        assert convs and all(is_channels_last(c.weight) is expected for c in convs)
    if cpu_bfloat16_supported():
        predictor = load_predictor(tmp_path, [0], precision="bfloat16")
        assert predictor.network.cpu_channels_last is cpu_channels_last_preferred()
    with pytest.raises(ValueError, match="cpu_layout 'nhwc'"):
        load_predictor(tmp_path, [0], cpu_layout="nhwc")


def test_predictor_defaults_to_the_precision_a_model_was_trained_in(tmp_path):
    """precision="auto" (the default): bfloat16 for a model folder whose plans.json records bfloat16 training on the
    CPU, where the CPU has it natively (float32 elsewhere, without an error); float32 asked for is float32."""
    pytest.importorskip("nnunetv2")
    from nnunet_ext.compat import load_predictor

    _tiny_fine_model(tmp_path, trained_in="bfloat16")
    expected = "bfloat16" if cpu_bfloat16_supported() else "float32"
    predictor = load_predictor(tmp_path, [0])
    assert predictor.cpu_precision == expected
    assert predictor.network.cpu_autocast_dtype == (torch.bfloat16 if expected == "bfloat16" else None)
    predictor = load_predictor(tmp_path, [0], precision="float32")
    assert predictor.cpu_precision == "float32" and predictor.network.cpu_autocast_dtype is None


def test_plans_record_the_cpu_precision():
    from nnunet_ext.plans import CPU_PRECISION_KEY, record_cpu_precision, trained_cpu_precision

    configuration = {"patch_size": [8, 8]}
    assert trained_cpu_precision(configuration) == "float32"
    record_cpu_precision(configuration, "bfloat16")
    assert configuration[CPU_PRECISION_KEY] == "bfloat16" and trained_cpu_precision(configuration) == "bfloat16"
    record_cpu_precision(configuration, "float32")
    assert CPU_PRECISION_KEY not in configuration
    with pytest.raises(ValueError, match="float16"):
        record_cpu_precision(configuration, "float16")
    with pytest.raises(ValueError, match="float16"):
        trained_cpu_precision({CPU_PRECISION_KEY: "float16"})


def test_spine_predict_offers_the_precisions_prediction_accepts():
    """spine-predict's --precision choices are spelled in its parser (its --help imports no torch); they must be the
    ones compat.load_predictor accepts, which derive from what a trainer records."""
    pytest.importorskip("nnunetv2")
    from nnunet_ext.compat import PRECISIONS
    from nnunet_ext.predict_cli import build_parser

    action = next(a for a in build_parser()._actions if "--precision" in a.option_strings)
    assert tuple(action.choices) == PRECISIONS and action.default == "auto"
