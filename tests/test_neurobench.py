"""NeuroBench 2.3.0's metrics: ``analyze(..., convention="neurobench")`` against NeuroBench's own code."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import Probe, prune_half
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import snnprune
from models.ann_resnet import ANNResNet
from models.sew_resnet import BasicBlock, SEWResNet

neurobench = pytest.importorskip("neurobench")
from neurobench.benchmarks import Benchmark  # noqa: E402
from neurobench.metrics.static import ConnectionSparsity, Footprint  # noqa: E402
from neurobench.metrics.workload import ActivationSparsity, SynapticOperations  # noqa: E402
from neurobench.models import TorchModel  # noqa: E402

X = torch.rand(8, 1, 12, 12)
Y = torch.randint(0, 5, (8,))


class _Reference(TorchModel):
    """NeuroBench's own TorchModel, with the neuron state reset per batch as ``analyze`` does."""

    def __call__(self, batch):
        functional.reset_net(self.net)
        with torch.no_grad():
            return self.net(batch)


def _neurobench(model: nn.Module, x: torch.Tensor = X, y: torch.Tensor = Y, batch_size: int = 4) -> dict:
    ref = _Reference(model)
    ref.add_activation_module(BaseNode)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    metrics = [[Footprint, ConnectionSparsity], [SynapticOperations, ActivationSparsity]]
    bench = Benchmark(ref, loader, [], [], metrics)
    out = bench.run(quiet=True)
    bench.workload_metric_manager.cleanup_hooks(ref)
    return out


def _unstructured(model: nn.Module, fraction: float = 0.5) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight[torch.rand(m.weight.shape, generator=gen) < fraction] = 0
            if isinstance(m, nn.BatchNorm2d):
                m.bias.fill_(2.5)  # active neurons (LIF too): the counts then depend on the spikes
    return model.eval()


def _sew(neuron: str = "if") -> nn.Module:
    torch.manual_seed(0)
    model = SEWResNet(
        BasicBlock, (1, 1, 1, 1), num_classes=5, in_channels=1, T=2, stem="small", width=8, neuron=neuron
    )
    return _unstructured(model)


def _compacted() -> nn.Module:
    torch.manual_seed(0)
    model = SEWResNet(BasicBlock, (1, 1, 1, 1), num_classes=5, in_channels=1, T=2, stem="small", width=8)
    prune_half(model, X)
    return snnprune.compact(model.eval(), X).eval()


def _ann() -> nn.Module:
    torch.manual_seed(0)
    return _unstructured(
        ANNResNet(BasicBlock, (1, 1, 1, 1), num_classes=5, in_channels=1, stem="small", width=8)
    )


MODELS = {
    "sew_if_add": lambda: _sew("if"),
    "sew_lif": lambda: _sew("lif"),
    "compacted": _compacted,
    "ann": _ann,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_neurobench_convention_equals_neurobench(name):
    model = MODELS[name]()
    report = snnprune.analyze(
        model, DataLoader(TensorDataset(X, Y), batch_size=4), convention="neurobench", progress=False
    )
    ref = _neurobench(model)
    ops, t = ref["SynapticOperations"], report.totals
    assert t["macs"] == pytest.approx(ops["Effective_MACs"], rel=1e-6)
    assert t["sops"] == pytest.approx(ops["Effective_ACs"], rel=1e-6)
    assert t["dense_macs"] == pytest.approx(ops["Dense"], rel=1e-6)
    assert t["footprint_bytes"] == ref["Footprint"]
    assert round(t["sparsity"], 4) == ref["ConnectionSparsity"]
    assert 0.3 < t["sparsity"] < 0.7 or name == "compacted"
    if name == "ann":
        assert ops["Effective_ACs"] == 0 and t["activation_sparsity"] is None
    else:
        # spikes and counts both present, so the per-call rule is exercised
        assert ops["Effective_ACs"] > 0 and ops["Effective_MACs"] > 0
        assert t["activation_sparsity"] == pytest.approx(ref["ActivationSparsity"], rel=1e-9)
        assert 0.0 < t["activation_sparsity"] < 1.0
        assert t["activation_sparsity"] == pytest.approx(1.0 - t["firing_rate"], rel=1e-9)


@pytest.mark.parametrize(
    "batches",
    [
        # the binary test is per call: a {-1, 0, 1} batch counts ACs, a real-valued batch MACs, in one run
        [torch.tensor([[-1.0, 0.0, 1.0, 1.0], [0.0, 0.0, -1.0, 0.0]]), torch.rand(2, 4)],
        # integers above 1 (a SEW ADD output) make the call MACs, each non-zero input counted once
        [torch.tensor([[2.0, 0.0, 1.0, 3.0], [0.0, 1.0, 0.0, 0.0]])],
    ],
    ids=["ternary_then_real", "counts"],
)
def test_neurobench_per_call_rule_on_a_linear_layer(batches):
    torch.manual_seed(0)
    model = Probe(nn.Linear(4, 3))
    with torch.no_grad():
        model.syn.weight[0, 1] = 0.0
        model.syn.weight[2, 3] = -0.5  # negative weights count like positive ones
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # integer inputs above 1 warn (raw pixels?): wanted here
        report = snnprune.analyze(model, [(x, torch.zeros(2)) for x in batches], convention="neurobench")
    x = torch.cat(batches)
    ref = _neurobench(model, x, torch.zeros(len(x)), batch_size=2)["SynapticOperations"]
    # independent count: every non-zero input times the non-zero weights it feeds, per batch
    w = (model.syn.weight != 0).float()
    expected = [((b != 0).float() @ w.t()).sum().item() for b in batches]
    ternary = [bool(((b == 0) | (b.abs() == 1)).all()) for b in batches]
    acs = sum(e for e, t in zip(expected, ternary, strict=True) if t) / len(x)
    macs = sum(e for e, t in zip(expected, ternary, strict=True) if not t) / len(x)
    assert report.totals["sops"] == pytest.approx(acs) == pytest.approx(ref["Effective_ACs"])
    assert report.totals["macs"] == pytest.approx(macs) == pytest.approx(ref["Effective_MACs"])
    assert report.totals["dense_macs"] == pytest.approx(12.0) == pytest.approx(ref["Dense"])


def test_neurobench_dense_skips_zero_padding_and_default_counts_are_unchanged():
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    model = Probe(conv).eval()
    x = (torch.rand(2, 1, 4, 4) > 0.5).float()
    nb = snnprune.analyze(model, x, convention="neurobench").totals
    ours = snnprune.analyze(model, x).totals
    # every 4x4 input pixel reaches the output through its in-bounds taps: 4 corners x 4 + 8 edges x 6 +
    # 4 inner x 9 = 100 per output channel; "ours" counts 16 positions x 18 weights = 288 (padding included)
    assert nb["dense_macs"] == pytest.approx(200.0)
    assert ours["dense_macs"] == pytest.approx(288.0)
    assert ours["sops"] == pytest.approx(nb["sops"])  # binary input, no zero weight: both exact
