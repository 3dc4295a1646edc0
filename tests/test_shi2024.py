"""shi2024 (Shi et al., ICLR 2024): the authors' temperature schedule and SOP penalty replayed in float64,
the soft/hard masks, the bad-configuration table and a CLI run."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

import snnprune
from tests.helpers import load_script


class _AuthorsTemperature:
    """The authors' ``TemperatureScheduler`` (sparsity/temp_scheduler.py), written out independently."""

    def __init__(self, init_temp: float, final_temp: float, t0: int, tmax: int) -> None:
        self.init_temp, self.final_temp, self.t0, self.tmax = init_temp, final_temp, t0, tmax
        self.current_step = 0
        self.factor = math.log(final_temp / init_temp)

    def temp(self) -> float:
        if self.current_step < self.t0:
            return self.init_temp
        if self.current_step > self.tmax:
            return self.final_temp
        return self.init_temp * math.exp(self.factor * (self.current_step - self.t0) / (self.tmax - self.t0))

    def step(self) -> None:
        self.current_step += 1


def _snn() -> nn.Sequential:
    """Multi-step SNN: an unpadded 3x3 conv on 8x8 (authors' lambda_w = 64, output positions 36), a stride-2
    conv on 6x6 (lambda_w = 36 / 4 = 9, output positions 4) and a linear layer (lambda_w = 1)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Conv2d(2, 3, 3, step_mode="m"),
        neuron.IFNode(step_mode="m"),
        layer.Conv2d(3, 4, 3, stride=2, step_mode="m"),
        neuron.IFNode(step_mode="m"),
        layer.Flatten(start_dim=1, step_mode="m"),
        layer.Linear(4 * 2 * 2, 5, step_mode="m"),
    )
    return net.double()


def test_schedule_and_penalty_equal_the_authors_formulas_in_float64():
    net = _snn()
    penalty, init_temp, final_temp, start, total = 1e-5, 5.0, 1000.0, 2, 9
    pruner = snnprune.sparsify(
        net, "shi2024", penalty=penalty, init_temp=init_temp, final_temp=final_temp, mask_init=0.0,
        neuron_mask_init=0.01, total_steps=total, start_step=start,
    )  # fmt: skip
    net.double()
    layers = list(pruner.layers.values())
    coeff = [64.0, 9.0, 1.0]  # hand count of H_in * W_in / stride^2 (1 for the linear layer)
    # the authors' calc_c: lambda_n = C_out * k * k / stride^2 of the layer each neuron feeds (Linear: C_out)
    neuron_coeff = {"1": 4 * 3 * 3 / 2**2, "3": 5.0}
    seen: dict[str, list] = {"1": [], "3": []}  # each neuron's own spikes (before its mask)
    for name in seen:
        net.get_submodule(name).register_forward_hook(lambda m, i, o, n=name: seen[n].append(o), prepend=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    pruner.bind(opt)
    ref = _AuthorsTemperature(init_temp, final_temp, start, total)
    g = torch.Generator().manual_seed(1)
    temps = []
    sign = torch.randint(0, 2, (2, 3, 5), generator=g).double() * 2 - 1  # a loss that keeps some, drops some
    masked: dict[int, torch.Tensor] = {}  # each neuron's masked output, as the next layer receives it
    hooks = [net[i + 1].register_forward_pre_hook(lambda m, a, i=i: masked.update({i: a[0]})) for i in (1, 3)]
    for step in range(total):
        x = torch.rand(2, 3, 2, 8, 8, generator=g, dtype=torch.float64) * 4
        out = net(x)
        reg = pruner.regularization()
        temp = ref.temp()
        temps.append(temp)
        want = 0.0
        for module, c in zip(layers, coeff, strict=True):
            m = module.parametrizations.weight[0].logit.detach()
            theta = module.parametrizations.weight.original.detach()
            assert torch.equal(module.weight, torch.sigmoid(temp * m) * theta)  # authors' Mask.forward
            want = want + (penalty * c) * torch.sigmoid(m * temp).sum()  # authors' PenaltyTerm
        for (name, c), i in zip(neuron_coeff.items(), (1, 3), strict=True):
            m = net.get_submodule(name).output_mask.logit.detach()
            assert m.shape == seen[name][-1].shape[2:]  # one logit per neuron [C, H, W], as node.v
            if step == 0:
                assert torch.all(m == 0.01)
            # authors' neuron_mask: the spikes times sigmoid(temp * m), shared over T and the batch
            assert torch.equal(masked[i], torch.sigmoid(temp * m) * seen[name][-1])
            want = want + (penalty * c) * torch.sigmoid(m * temp).sum()
        assert reg.dtype == torch.float64
        torch.testing.assert_close(reg, want, rtol=4 * torch.finfo(torch.float64).eps, atol=0)
        ((out * sign).sum() + reg).backward()
        opt.step()
        opt.zero_grad()
        pruner.step()
        ref.step()
        functional.reset_net(net)
    for h in hooks:
        h.remove()
    assert pruner.neuron_fanout() == neuron_coeff
    assert temps[0] == init_temp and temps[start] == init_temp and temps[start + 1] > init_temp
    assert pruner.temperature == pytest.approx(final_temp, rel=1e-12)
    # training moved the logits apart: the hard (eval) mask is 1[m > 0], and finalize keeps it
    net.eval()
    masks = [m.parametrizations.weight[0].logit.detach() > 0 for m in layers]
    thetas = [m.parametrizations.weight.original.detach().clone() for m in layers]
    keeps = {n: net.get_submodule(n).output_mask.logit.detach() > 0 for n in neuron_coeff}
    assert 0 < sum(int(k.sum()) for k in masks) < sum(k.numel() for k in masks)
    assert 0 < sum(int(k.sum()) for k in keeps.values()) < sum(k.numel() for k in keeps.values())
    x = torch.rand(2, 3, 2, 8, 8, generator=g, dtype=torch.float64) * 4
    with torch.no_grad():
        masked_out = net(x)
    functional.reset_net(net)
    snnprune.finalize(net)
    for module, keep, theta in zip(layers, masks, thetas, strict=True):
        assert torch.equal(module.weight, torch.where(keep, theta, torch.zeros_like(theta)))
        assert not module._forward_pre_hooks  # the coefficient hook went with the parametrization
    for name, keep in keeps.items():
        assert torch.equal(net.get_submodule(name).output_mask.keep_mask, keep)
    assert not any(p.numel() and "output_mask" in k for k, p in net.named_parameters())
    with torch.no_grad():
        assert torch.equal(net(x), masked_out)  # the finalized model is the masked model


class _Residual(nn.Module):
    """a = IF(conv0(x)); b = IF(conv1(a)); conv2(maxpool(a + b)), then a linear head on IF(conv2): a feeds
    conv1 and, through the addition and the pool, conv2 (the authors' prev_layers of a SEW block)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0, self.sn0 = nn.Conv2d(1, 2, 3, padding=1), neuron.IFNode()
        self.conv1, self.sn1 = nn.Conv2d(2, 2, 3, padding=1), neuron.IFNode()
        self.conv2, self.sn2 = nn.Conv2d(2, 5, 3, stride=2, padding=1), neuron.IFNode()
        self.fc = nn.Linear(5 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.sn0(self.conv0(x))
        b = self.sn1(self.conv1(a))
        c = self.sn2(self.conv2(nn.functional.max_pool2d(a + b, 2)))
        return self.fc(c.flatten(1))


def test_neuron_fanout_follows_additions_and_stops_at_synaptic_layers():
    net = _Residual()
    pruner = snnprune.sparsify(net, "shi2024", total_steps=2)
    net(torch.rand(2, 1, 8, 8))
    # hand count of C_out * k * k / stride^2 over the layers each neuron feeds (Linear: out_features)
    conv1, conv2, fc = 2 * 3 * 3 / 1, 5 * 3 * 3 / 2**2, 3.0
    assert pruner.neuron_fanout() == {"sn0": conv1 + conv2, "sn1": conv2, "sn2": fc}
    assert [n.output_mask.logit.shape for n in pruner.neurons.values()] == [(2, 8, 8), (2, 8, 8), (5, 2, 2)]


def test_a_restored_run_continues_bit_identically():
    """Model, pruner and optimizer states saved after 2 steps and loaded into a fresh model (whose neuron
    logits are not created yet): the third step gives the same parameters as the uninterrupted run."""

    def build():
        net = _snn()
        pruner = snnprune.sparsify(net, "shi2024", penalty=1e-3, total_steps=4)
        net.double()
        return net, pruner, torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)

    def step(net, pruner, opt, i):
        x = torch.rand(2, 3, 2, 8, 8, generator=torch.Generator().manual_seed(i), dtype=torch.float64) * 4
        (net(x).square().mean() + pruner.regularization()).backward()
        opt.step()
        opt.zero_grad()
        pruner.step()
        functional.reset_net(net)

    net, pruner, opt = build()
    pruner.bind(opt)
    for i in range(2):
        step(net, pruner, opt, i)
    saved = copy.deepcopy((net.state_dict(), pruner.state_dict(), opt.state_dict()))
    step(net, pruner, opt, 2)
    fresh, fresh_pruner, fresh_opt = build()
    assert all(n.output_mask.logit.numel() == 0 for n in fresh_pruner.neurons.values())
    fresh.load_state_dict(saved[0])
    fresh_pruner.load_state_dict(saved[1])
    fresh_opt.load_state_dict(saved[2])
    fresh_pruner.bind(fresh_opt)
    step(fresh, fresh_pruner, fresh_opt, 2)
    after, want = fresh.state_dict(), net.state_dict()
    assert after.keys() == want.keys() and all(torch.equal(after[k], v) for k, v in want.items())


def test_remove_restores_the_model():
    net = _snn()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pruner = snnprune.sparsify(net, "shi2024", total_steps=3)
    net(torch.rand(2, 3, 2, 8, 8, dtype=torch.float64))
    functional.reset_net(net)
    assert pruner.remove() is net
    assert list(net.state_dict()) == list(before)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_neuron_masks_off_masks_weights_only():
    net = _snn()
    pruner = snnprune.sparsify(net, "shi2024", neuron_masks=False, total_steps=3)
    assert pruner.neurons == {} and not any("output_mask" in k for k in net.state_dict())


@pytest.mark.parametrize(
    ("neuron_masks", "train", "match"),
    [
        (False, True, r"layer '0' has not run yet"),
        (True, True, r"no neuron has run a training forward yet"),
        (True, False, r"no neuron has run a training forward yet"),  # an eval forward measures no fan-out
    ],
)
def test_regularization_before_a_training_forward_says_so(neuron_masks, train, match):
    net = _snn()
    pruner = snnprune.sparsify(net, "shi2024", neuron_masks=neuron_masks, total_steps=3)
    if not train:
        with torch.no_grad():
            net.eval()(torch.rand(2, 3, 2, 8, 8, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=match):
        pruner.regularization()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"penalty": -1.0}, ValueError, r"penalty must be a finite number >= 0, got -1.0"),
        ({"penalty": float("nan")}, ValueError, r"penalty must be a finite number >= 0, got nan"),
        ({"penalty": "big"}, TypeError, r"penalty must be a number, got 'big'"),
        ({"init_temp": 0.0}, ValueError, r"0 < init_temp <= final_temp, got init_temp=0.0"),
        ({"init_temp": 10.0, "final_temp": 5.0}, ValueError, r"got init_temp=10.0, final_temp=5.0"),
        ({"mask_init": float("inf")}, ValueError, r"mask_init must be a finite number, got inf"),
        (
            {"neuron_mask_init": float("nan")},
            ValueError,
            r"neuron_mask_init must be a finite number, got nan",
        ),
        ({"neuron_masks": 1}, TypeError, r"neuron_masks must be True or False, got 1"),
        ({"total_steps": None}, ValueError, r"method 'shi2024' needs total_steps"),
    ],
)
def test_bad_configuration(kwargs, error, match):
    net = _snn()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(error, match=match):
        snnprune.sparsify(net, "shi2024", **{"total_steps": 3, **kwargs})
    assert not any(isinstance(m, nn.Module) and hasattr(m, "parametrizations") for m in net.modules())
    assert not any(hasattr(m, "output_mask") for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_cli_trains_and_the_summary_counts_the_hard_masks(tmp_path, capsys):
    sew = load_script("train_sew")
    argv = ["--method", "shi2024", "--width", "4", "--epochs", "1", "--batch-size", "16"]
    argv += ["--limit-train-batches", "3", "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet"]
    argv += ["--T", "2", "--output-dir", str(tmp_path), "--run-name", "r"]
    summary = sew.main(argv)
    capsys.readouterr()
    run = snnprune.load_run(summary["run_dir"])
    assert run.pruner.method == "shi2024" and run.pruner.step_count == 3
    logits = [m.parametrizations.weight[0].logit for m in run.pruner.layers.values()]
    pruned = sum(int((m <= 0).sum()) for m in logits)  # hard mask 1[m > 0], counted from the logits
    weights = sum(m.weight.numel() for m in run.model.modules() if snnprune.threshold.is_prunable(m))
    saved = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert saved["sparsity"] == pytest.approx(pruned / weights, abs=1e-6)
    # every neuron is masked: the neuron sparsity is the share of neuron logits <= 0
    neurons = [n.output_mask.logit for n in run.pruner.neurons.values()]
    assert len(neurons) == sum(snnprune.analysis.spikes.is_neuron(m) for m in run.model.modules())
    off = sum(int((m <= 0).sum()) for m in neurons) / sum(m.numel() for m in neurons)
    assert saved["neuron_sparsity"] == pytest.approx(off, abs=1e-12)
    deployed = snnprune.finalize(copy.deepcopy(run.model))  # plain weights, the neuron masks fixed 0/1
    assert saved["params"] == sum(p.numel() for p in deployed.parameters())  # mask logits are not counted
