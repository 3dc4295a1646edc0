"""NeuroBench 2.3.0's metrics: ``analyze(..., convention="neurobench")`` against NeuroBench's own code."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from helpers import Probe, expect_exit, load_script, prune_half, tiny_lats_run
from spikingjelly.activation_based import functional, neuron
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn
from torch.nn.utils import parametrize
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
    # ActivationSparsity over the spiking neurons, or the ReLUs of the ANN
    assert t["activation_sparsity"] == pytest.approx(ref["ActivationSparsity"], rel=1e-9)
    assert 0.0 < t["activation_sparsity"] < 1.0
    if name == "ann":
        assert ops["Effective_ACs"] == 0 and t["firing_rate"] is None
    else:
        # spikes and counts both present, so the per-call rule is exercised
        assert ops["Effective_ACs"] > 0 and ops["Effective_MACs"] > 0
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


# --------------------------------------------------------------------------- the one-call adapter
from snnprune.interop.neurobench import benchmark  # noqa: E402


def _loader(x: torch.Tensor = X, y: torch.Tensor = Y, batch_size: int = 4) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def _top1(model: nn.Module, loader, max_batches: int | None = None) -> float:
    hits = seen = 0
    with torch.no_grad():
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            functional.reset_net(model)
            hits += int((model(x).argmax(-1) == y).sum())
            seen += len(y)
    functional.reset_net(model)
    return hits / seen


def test_benchmark_equals_analyze_and_our_top1():
    model = _sew()
    out = benchmark(model, _loader())
    report = snnprune.analyze(model, _loader(), convention="neurobench", progress=False)
    t, ops = report.totals, out["SynapticOperations"]
    assert ops["Effective_ACs"] == pytest.approx(t["sops"], rel=1e-6)
    assert ops["Effective_MACs"] == pytest.approx(t["macs"], rel=1e-6)
    assert ops["Dense"] == pytest.approx(t["dense_macs"], rel=1e-6)
    assert out["Footprint"] == t["footprint_bytes"]
    assert out["ConnectionSparsity"] == round(t["sparsity"], 4)
    assert out["ClassificationAccuracy"] == pytest.approx(_top1(model, _loader()))
    # the neurons are registered as activation modules (NeuroBench alone hooks ReLU/Sigmoid only: 0.0)
    assert out["ActivationSparsity"] == pytest.approx(t["activation_sparsity"], rel=1e-9)
    assert 0.0 < out["ActivationSparsity"] < 1.0


class _Carry(nn.Module):
    """0.6 per step into an IF neuron: no spike from a reset state, a spike when the previous batch's 0.6
    is still there."""

    grad_enabled: list[bool] = []  # noqa: RUF012  (class-level, so the adapter's deep copy records here)

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.6, 0.0], [0.0, 0.2]]))
        self.sn = neuron.IFNode()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _Carry.grad_enabled.append(torch.is_grad_enabled())
        return self.sn(self.fc(x))


def test_benchmark_resets_neuron_state_per_batch_and_runs_without_grad():
    x = torch.ones(4, 2)
    _Carry.grad_enabled.clear()
    out = benchmark(
        _Carry(), _loader(x, torch.zeros(4, dtype=torch.long), batch_size=2), ["ActivationSparsity"]
    )
    assert out["ActivationSparsity"] == 1.0  # carried state would make the second batch spike: 0.75
    assert _Carry.grad_enabled == [False, False]


def test_benchmark_bakes_parametrizations():
    torch.manual_seed(0)
    model = SEWResNet(
        BasicBlock, (1, 1, 1, 1), num_classes=5, in_channels=1, T=2, stem="small", width=8
    ).eval()
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            snnprune.register_soft_threshold(m, threshold=0.1)
    out = benchmark(model, _loader(), ["SynapticOperations", "ConnectionSparsity"])
    report = snnprune.analyze(model, _loader(), convention="neurobench", progress=False)
    assert out["SynapticOperations"]["Effective_MACs"] == pytest.approx(report.totals["macs"], rel=1e-6)
    assert out["SynapticOperations"]["Effective_ACs"] == pytest.approx(report.totals["sops"], rel=1e-6)
    assert out["ConnectionSparsity"] == round(report.totals["sparsity"], 4) > 0.1
    # NeuroBench on the parametrized model itself: binarizing `weight.data` of a recomputed tensor is lost
    plain = _neurobench(model)
    assert plain["SynapticOperations"]["Effective_MACs"] != pytest.approx(report.totals["macs"], rel=0.01)
    assert all(parametrize.is_parametrized(m) for m in model.modules() if isinstance(m, nn.Conv2d))


class _TimeFirst(nn.Module):
    """Reads [T, N, 4] (SpikingJelly's multi-step layout), returns [N, 3] logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)
        self.sn = neuron.IFNode(step_mode="m", v_threshold=0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sn(self.fc(x)).mean(0)


def test_benchmark_time_first_layout_counts_per_sample():
    x = torch.rand(3, 8, 4)  # T=3, N=8
    batches = [(x[:, :4], Y[:4]), (x[:, 4:], Y[4:])]
    out = benchmark(_TimeFirst(), batches, ["SynapticOperations", "ActivationSparsity"], time_axis=0)
    report = snnprune.analyze(_TimeFirst(), batches, time_axis=0, convention="neurobench", progress=False)
    assert report.totals["samples"] == 8
    assert out["SynapticOperations"]["Effective_MACs"] == pytest.approx(report.totals["macs"], rel=1e-6)
    assert out["ActivationSparsity"] == pytest.approx(report.totals["activation_sparsity"], rel=1e-9)
    assert out["SynapticOperations"]["Effective_MACs"] == pytest.approx(3 * 4 * 3)  # every input non-zero


def test_benchmark_divides_by_the_samples_run():
    model = _sew()
    out = benchmark(
        model, _loader(batch_size=2), ["ClassificationAccuracy", "ActivationSparsity"], max_batches=2
    )
    report = snnprune.analyze(model, _loader(batch_size=2), max_batches=2, progress=False)
    assert out["ClassificationAccuracy"] == pytest.approx(_top1(model, _loader(batch_size=2), max_batches=2))
    assert out["ActivationSparsity"] == pytest.approx(report.totals["activation_sparsity"], rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metrics": ["Latency"]}, "metrics: unknown NeuroBench metric 'Latency'"),
        ({"metrics": [nn.Linear]}, "metrics: .* is not a NeuroBench StaticMetric or WorkloadMetric class"),
        ({"time_axis": 2}, "time_axis: must be 0"),
        ({"max_batches": 0}, "max_batches: must be a positive int"),
        ({"data": [X[:4]]}, "data: batch 0 is a Tensor, not an \\(input, target\\) pair"),
        ({"data": [(X[:4], Y[:3])]}, "data: batch 0 has 4 samples .* but 3 targets"),
        ({"data": []}, "data: no batches"),
        ({"data": [(X[:4], Y[:4])], "time_axis": 0}, "data: batch 0 has 1 samples"),
    ],
    ids=[
        "unknown_name",
        "not_a_metric",
        "time_axis",
        "max_batches",
        "no_target",
        "target_length",
        "empty",
        "layout",
    ],
)
def test_benchmark_rejects_bad_arguments(kwargs, match):
    data = kwargs.pop("data", _loader())
    with pytest.raises(ValueError, match=match):
        benchmark(Probe(nn.Linear(4, 3)), data, **kwargs)


def test_benchmark_raises_where_neurobench_reports_a_failed_metric_as_zero():
    with pytest.raises(
        RuntimeError, match="NeuroBench: Error running workload metric 'ClassificationAccuracy'"
    ):
        benchmark(_sew(), _loader(), ["ClassificationAccuracy"], postprocessors=[])


# --------------------------------------------------------------------------- scripts/neurobench_report.py
@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["{run}", "--batches", "0"], "--batches"),
        (["{run}", "--batch-size", "0"], "--batch-size"),
        (["{run}/missing"], "load_run"),
    ],
)
def test_report_script_bad_options_exit_2(tmp_path, capsys, argv, option):
    code, err = expect_exit(load_script("neurobench_report"), [a.format(run=tmp_path) for a in argv], capsys)
    assert code == 2 and err.startswith(f"error: {option}") and "\n" not in err.strip()


@pytest.mark.slow
def test_report_script_side_by_side_on_a_tiny_run(sew, tmp_path, capsys):
    summary = tiny_lats_run(sew, tmp_path)
    capsys.readouterr()
    table = load_script("neurobench_report").main(
        [summary["run_dir"], "--batches", "2", "--batch-size", "10"]
    )
    out = capsys.readouterr().out
    assert [m for m, _, _ in table][:3] == ["Footprint (bytes)", "ConnectionSparsity", "ActivationSparsity"]
    for metric, ours, theirs in table:
        assert ours == pytest.approx(theirs, rel=1e-6), metric
    assert "20 test samples in 2 batches" in out and "parametrizations attached" in out
    # as a user runs it: a fresh interpreter, where only the script can declare the run's model builder
    script = Path(__file__).resolve().parent.parent / "scripts" / "neurobench_report.py"
    argv = [sys.executable, str(script), summary["run_dir"], "--batches", "1", "--batch-size", "10"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ConnectionSparsity" in done.stdout, done.stderr


def test_footprint_counts_what_the_module_holds():
    import copy

    from snnprune.analysis import footprint_bytes

    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2, bias=False))
    # hand count, 4-byte floats: 4*3 + 3 + 2*3 params, BN 3 + 3 params and 3 + 3 buffers + int64 counter
    assert footprint_bytes(model) == 4 * (12 + 3 + 6 + 6 + 6) + 8
    for layer in (model[0], model[2]):
        snnprune.register_soft_threshold(layer, threshold=0.1)
    # attached: the `original` weights replace the weights, plus one float32 threshold per layer
    assert footprint_bytes(model) == 4 * (12 + 3 + 6 + 6 + 6) + 8 + 2 * 4
    assert footprint_bytes(snnprune.finalize(copy.deepcopy(model))) == 4 * (12 + 3 + 6 + 6 + 6) + 8


def _snntorch_membrane(nodes: list[str], x: torch.Tensor, linears: list[nn.Linear]) -> dict:
    """NeuroBench's MembraneUpdates and NeuronOperations on snnTorch ``Leaky`` neurons with ``linears``."""
    snn = pytest.importorskip("snntorch")
    from neurobench.metrics.workload import MembraneUpdates, NeuronOperations
    from neurobench.models import SNNTorchModel

    layers: list[nn.Module] = []
    for i, (kind, lin) in enumerate(zip(nodes, linears, strict=True)):
        layers.append(lin)
        beta = 1.0 if kind == "if" else 0.5
        last = i == len(nodes) - 1
        layers.append(
            snn.Leaky(beta=beta, reset_mechanism="zero", reset_delay=False, init_hidden=True, output=last)
        )
    ref = SNNTorchModel(nn.Sequential(*layers))
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=3)
    bench = Benchmark(ref, loader, [], [], [[], [MembraneUpdates, NeuronOperations]])
    with torch.no_grad():
        out = bench.run(quiet=True)
    bench.workload_metric_manager.cleanup_hooks(ref)
    return out


@pytest.mark.parametrize("ours", [False, True])
def test_membrane_updates_and_neuron_ops_equal_neurobench_on_snntorch(ours):
    """IF, LIF and PLIF (decay_input=False, tau=2, hard reset to 0) are snnTorch Leaky (beta 1, 0.5, 0.5;
    reset to zero, no reset delay) step for step; NeuroBench's own metrics on that model equal ours."""
    from spikingjelly.activation_based import layer

    nodes = snnprune.neuron if ours else neuron
    torch.manual_seed(0)
    x = (torch.rand(7, 6, 5) < 0.3).float()  # [N, T, F], NeuroBench's layout; 7 samples in batches of 3, 3, 1
    lins = [nn.Linear(5, 8), nn.Linear(8, 6), nn.Linear(6, 4)]
    with torch.no_grad():
        for lin in lins:
            lin.weight.mul_(3.0)
            lin.bias.zero_()  # a neuron without input keeps its potential (IF) or its zero (LIF, PLIF)
    kinds = ["if", "lif", "plif"]
    ref_lins = [nn.Linear(i.in_features, i.out_features) for i in lins]
    for a, b in zip(ref_lins, lins, strict=True):
        a.load_state_dict(b.state_dict())
    ref = _snntorch_membrane(kinds, x, ref_lins)
    sj: list[nn.Module] = []
    for kind, lin in zip(kinds, lins, strict=True):
        sl = layer.Linear(lin.in_features, lin.out_features, step_mode="m")
        sl.load_state_dict(lin.state_dict())
        sj.append(sl)
        if kind == "if":
            sj.append(nodes.IFNode(v_reset=0.0, step_mode="m"))
        elif kind == "lif":
            sj.append(nodes.LIFNode(tau=2.0, decay_input=False, v_reset=0.0, step_mode="m"))
        else:
            sj.append(nodes.ParametricLIFNode(init_tau=2.0, decay_input=False, v_reset=0.0, step_mode="m"))
    model = nn.Sequential(*sj)
    xs = x.transpose(0, 1)
    batches = [(xs[:, i : i + 3], torch.zeros(xs[:, i : i + 3].shape[1])) for i in range(0, 7, 3)]
    report = snnprune.analyze(model, batches, time_axis=0, convention="neurobench", progress=False)
    assert report.totals["membrane_updates"] > 0
    assert report.totals["membrane_updates"] == pytest.approx(ref["MembraneUpdates"], rel=1e-12)
    assert report.totals["neuron_ops"] == pytest.approx(
        ref["NeuronOperations"]["Effective Neuron Ops"], rel=1e-12
    )
    assert report.totals["neuron_dense_ops"] == pytest.approx(
        ref["NeuronOperations"]["Neuron Dense Ops"], rel=1e-12
    )
    assert report.totals["membrane_updates"] < 0.9 * 6 * (8 + 6 + 4)  # many neurons keep their potential
