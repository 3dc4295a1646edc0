"""shi2024 (Shi et al., ICLR 2024): the authors' temperature schedule and SOP penalty replayed in float64,
the soft/hard masks, the bad-configuration table and a CLI run."""

from __future__ import annotations

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
    penalty, init_temp, final_temp, start, total = 2e-2, 5.0, 1000.0, 2, 9
    pruner = snnprune.sparsify(
        net, "shi2024", penalty=penalty, init_temp=init_temp, final_temp=final_temp, mask_init=0.02,
        total_steps=total, start_step=start,
    )  # fmt: skip
    net.double()
    layers = list(pruner.layers.values())
    coeff = [64.0, 9.0, 1.0]  # hand count of H_in * W_in / stride^2 (1 for the linear layer)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    pruner.bind(opt)
    ref = _AuthorsTemperature(init_temp, final_temp, start, total)
    g = torch.Generator().manual_seed(1)
    temps = []
    for _ in range(total):
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
        assert reg.dtype == torch.float64
        torch.testing.assert_close(reg, want, rtol=4 * torch.finfo(torch.float64).eps, atol=0)
        (out.sum() + reg).backward()
        opt.step()
        opt.zero_grad()
        pruner.step()
        ref.step()
        functional.reset_net(net)
    assert temps[0] == init_temp and temps[start] == init_temp and temps[start + 1] > init_temp
    assert pruner.temperature == pytest.approx(final_temp, rel=1e-12)
    # training moved the logits apart: the hard (eval) mask is 1[m > 0], and finalize keeps it
    net.eval()
    masks = [m.parametrizations.weight[0].logit.detach() > 0 for m in layers]
    thetas = [m.parametrizations.weight.original.detach().clone() for m in layers]
    assert 0 < sum(int(k.sum()) for k in masks) < sum(k.numel() for k in masks)
    snnprune.finalize(net)
    for module, keep, theta in zip(layers, masks, thetas, strict=True):
        assert torch.equal(module.weight, torch.where(keep, theta, torch.zeros_like(theta)))
        assert not module._forward_pre_hooks  # the coefficient hook went with the parametrization


def test_regularization_before_a_forward_names_the_layer():
    pruner = snnprune.sparsify(_snn(), "shi2024", total_steps=3)
    with pytest.raises(RuntimeError, match=r"layer '0' has not run yet"):
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
        ({"total_steps": None}, ValueError, r"method 'shi2024' needs total_steps"),
    ],
)
def test_bad_configuration(kwargs, error, match):
    net = _snn()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(error, match=match):
        snnprune.sparsify(net, "shi2024", **{"total_steps": 3, **kwargs})
    assert not any(isinstance(m, nn.Module) and hasattr(m, "parametrizations") for m in net.modules())
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
