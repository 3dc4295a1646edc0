"""Tests of the model registry and models (tiny resolution, CPU)."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

import models

torch.set_num_threads(2)

TINY: dict[str, dict] = {
    "sew_resnet18": dict(stem="small", width=8, T=2),
    "sew_resnet34": dict(stem="small", width=8, T=2),
    "sew_resnet50": dict(stem="small", width=8, T=2),
    "ann_resnet18": dict(stem="small", width=8),
    "ann_resnet34": dict(stem="small", width=8),
    "ann_resnet50_twin": dict(stem="small", width=8),
    "resnet50": dict(stem="small"),
    "mobilenet_v1": dict(stem="small", width_mult=0.25),
}
# the spiking transformers and their twins at depth 1, width 16 (T=2 for the spiking ones)
TINY.update(
    {n: dict(depth=1, embed_dim=16, num_heads=2, pooling="0011", **({"T": 2} if "T" in models.model_kwargs(n) else {}))
     for n in models.list_models("*spikformer_*") + models.list_models("*sdt_*")}
)  # fmt: skip


def _convs(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_registry_lists_contract_names():
    assert models.list_models() == sorted(TINY)
    assert models.list_models("sew_*") == ["sew_resnet18", "sew_resnet34", "sew_resnet50"]


@pytest.mark.parametrize("name", models.list_models())
def test_forward_backward_tiny(name):
    torch.manual_seed(0)
    net = models.create_model(name, num_classes=5, in_channels=1, **TINY[name])
    x = torch.rand(2, 1, 28, 28)
    y = net(x)
    assert y.shape == (2, 5)
    assert torch.isfinite(y).all()
    assert net.is_spiking == ("T" in models.model_kwargs(name))
    y.square().sum().backward()
    # a spiking attention whose neurons stay silent at initialisation passes no gradient behind them
    gated = net.is_spiking and hasattr(net, "attention")
    for n, m in _convs(net).items():
        assert m.weight.grad is not None, n
        assert gated or m.weight.grad.abs().sum() > 0, f"no gradient reaches {n}"
    if net.is_spiking:
        assert net.T == 2
        functional.reset_net(net)


def _count_calls(module: nn.Module) -> list[tuple[int, ...]]:
    calls: list[tuple[int, ...]] = []
    module.register_forward_hook(lambda m, inp, out: calls.append(tuple(inp[0].shape)))
    return calls


def test_encoding_conv_runs_once_on_static_images():
    net = models.create_model("sew_resnet18", num_classes=3, in_channels=1, stem="small", width=8, T=3)
    enc, nxt = _count_calls(net.conv1), _count_calls(net.layer1[0].conv1)
    net(torch.rand(2, 1, 28, 28))
    assert enc == [(2, 1, 28, 28)]  # once, on the N images
    assert nxt == [(3, 2, 8, 28, 28)]  # repeated over T=3 afterwards (multi-step)


def test_event_frames_run_encoding_per_step_and_match_static_when_constant():
    torch.manual_seed(0)
    net = models.create_model("sew_resnet18", num_classes=3, in_channels=2, stem="small", width=8, T=4).eval()
    enc = _count_calls(net.conv1)
    frames = torch.rand(2, 4, 2, 28, 28)  # [N, T, C, H, W]
    net(frames)
    assert enc == [(8, 2, 28, 28)]  # all T*N frames (SpikingJelly multi-step convention)
    functional.reset_net(net)
    # a constant frame sequence equals the static image repeated (eval-mode BN)
    img = frames[:, 0]
    functional.reset_net(net)
    y_static = net(img)
    functional.reset_net(net)
    y_frames = net(img.unsqueeze(1).repeat(1, 4, 1, 1, 1))
    torch.testing.assert_close(y_static, y_frames)


def test_bad_input_rank():
    net = models.create_model("sew_resnet18", num_classes=3, in_channels=1, stem="small", width=8, T=2)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        net(torch.rand(1, 28, 28))


def test_ann_twin_has_same_layers_as_sew():
    for sew, ann in (("sew_resnet18", "ann_resnet18"), ("sew_resnet50", "ann_resnet50_twin")):
        s = models.create_model(sew, num_classes=7, in_channels=1, stem="imagenet", width=8)
        a = models.create_model(ann, num_classes=7, in_channels=1, stem="imagenet", width=8)
        sc, ac = _convs(s), _convs(a)
        assert list(sc) == list(ac)
        assert {n: m.weight.shape for n, m in sc.items()} == {n: m.weight.shape for n, m in ac.items()}
        assert isinstance(s.layer1[0].sn1, neuron.IFNode) and isinstance(a.layer1[0].sn1, nn.ReLU)
        assert isinstance(s.layer2[0].conv1, layer.Conv2d) and s.layer2[0].conv1.step_mode == "m"
        x = torch.rand(2, 1, 32, 32)  # imagenet stem (7x7/2 + max-pool) runs at tiny size too
        assert s(x).shape == a(x).shape == (2, 7)


def test_ann_block_is_relu_of_residual_add():
    a = models.create_model("ann_resnet18", num_classes=2, in_channels=1, stem="small", width=8).eval()
    blk, x = a.layer1[0], torch.randn(2, 8, 6, 6)
    ref = torch.relu(blk.bn2(blk.conv2(torch.relu(blk.bn1(blk.conv1(x))))) + x)
    torch.testing.assert_close(blk(x), ref)


@pytest.mark.parametrize("cnf", ["ADD", "AND", "IAND"])
def test_connect_functions(cnf):
    torch.manual_seed(0)
    net = models.create_model(
        "sew_resnet18", num_classes=3, in_channels=1, stem="small", width=8, T=2, cnf=cnf
    )
    blk = net.layer1[0]
    x = (torch.rand(2, 2, 8, 6, 6) > 0.5).float()  # [T, N, C, H, W] spikes
    out = blk.sn2(blk.bn2(blk.conv2(blk.sn1(blk.bn1(blk.conv1(x))))))
    functional.reset_net(net)
    expected = {"ADD": x + out, "AND": x * out, "IAND": x * (1 - out)}[cnf]
    torch.testing.assert_close(blk(x), expected)
    functional.reset_net(net)
    y = net(torch.rand(2, 1, 28, 28))
    assert y.shape == (2, 3)
    y.sum().backward()


@pytest.mark.parametrize(("kind", "cls"), [("lif", neuron.LIFNode), ("plif", neuron.ParametricLIFNode)])
def test_lif_plif_and_sigmoid(kind, cls):
    net = models.create_model(
        "sew_resnet18",
        num_classes=3,
        in_channels=1,
        stem="small",
        width=8,
        T=2,
        neuron=kind,
        surrogate="sigmoid",
    )
    assert type(net.sn1) is cls and net.sn1.step_mode == "m" and net.sn1.detach_reset
    y = net(torch.rand(2, 1, 28, 28))
    y.sum().backward()
    if kind == "plif":
        assert net.layer1[0].sn1.w.grad is not None


def test_state_matters_and_reset_is_deterministic():
    torch.manual_seed(0)
    net = models.create_model("sew_resnet18", num_classes=3, in_channels=1, stem="small", width=8, T=2).eval()
    x = torch.rand(2, 1, 28, 28) * 4
    y1 = net(x)
    y_stale = net(x)  # membrane state carried over
    functional.reset_net(net)
    y2 = net(x)
    torch.testing.assert_close(y1, y2)
    assert not torch.equal(y1, y_stale)


def test_sew_resnet18_prunable_conv_weight_count():
    net = models.create_model("sew_resnet18")  # imagenet stem, 1000 classes, width 64
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.weight.numel() for m in convs) == 11_166_912  # snnprune/docs/methods.md 4.3
    assert sum(p.numel() for p in net.parameters()) == 11_689_512
    assert isinstance(net.fc, nn.Linear) and net.fc.bias is not None


def test_other_param_counts():
    assert sum(p.numel() for p in models.create_model("mobilenet_v1").parameters()) == 4_231_976
    assert (
        sum(p.numel() for p in models.create_model("mobilenet_v1", fc_bias=False).parameters()) == 4_230_976
    )
    assert sum(p.numel() for p in models.create_model("resnet50").parameters()) == 25_557_032
    assert models.create_model("resnet50", fc_bias=False).fc.bias is None


def test_init_kaiming_fan_out_and_bn():
    torch.manual_seed(0)
    net = models.create_model("sew_resnet18", width=64)
    w = net.layer3[0].conv2.weight  # 256 x 256 x 3 x 3, fan_out = 2304
    assert abs(w.std().item() - (2 / (256 * 9)) ** 0.5) < 2e-3
    assert torch.equal(net.bn1.weight, torch.ones(64)) and torch.equal(net.bn1.bias, torch.zeros(64))


def test_unknown_name_and_kwarg():
    with pytest.raises(
        ValueError, match=r"unknown model 'SEW_resnet19'; did you mean 'sew_resnet18'\? available"
    ):
        models.create_model("SEW_resnet19")
    with pytest.raises(TypeError, match=r"'ann_resnet18'.*'T'"):
        models.create_model("ann_resnet18", T=4)
    with pytest.raises(ValueError, match="unknown cnf 'OR'"):
        models.create_model("sew_resnet18", cnf="OR")
    with pytest.raises(ValueError, match="unknown neuron 'izh'"):
        models.create_model("sew_resnet18", neuron="izh")
    with pytest.raises(ValueError, match="T \\(time steps\\)"):
        models.create_model("sew_resnet18", T=0)
    # None means "use the default" (CLI pass-through)
    assert models.create_model("sew_resnet18", T=None, width=8).T == 4


def test_neuron_backend_errors_or_uses_snnprune_neuron():
    with pytest.raises(ValueError, match="neuron_backend"):
        models.create_model("sew_resnet18", width=8, neuron_backend="triton")
    try:
        import snnprune.neuron as sn  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match=r"snnprune\.neuron"):
            models.create_model("sew_resnet18", width=8, neuron_backend="auto")
    else:
        net = models.create_model(
            "sew_resnet18", width=8, neuron_backend="auto", stem="small", in_channels=1, T=2
        )
        assert type(net.sn1).__module__.startswith("snnprune.neuron")
        assert net(torch.rand(2, 1, 28, 28)).shape == (2, 1000)
