"""Tests of snnprune.analysis: exact SOP/MAC counting, report round trips, model state preservation."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import Probe
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn
from torch.nn.utils import parametrize

from snnprune.analysis import Comparison, EnergyModel, Report, analyze, compare

ROOT = Path(__file__).resolve().parents[1]
HAS_MODELS = (ROOT / "models" / "__init__.py").exists()


# --------------------------------------------------------------------------- helpers
class _Mask(nn.Module):
    """Minimal parametrization: weight * fixed binary mask (the effective weight is exactly sparse)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def _sops(report: Report, name: str) -> float:
    return report[name]["sops"] * report.totals["samples"]


def _set_weight(module: nn.Module, w: torch.Tensor) -> None:
    with torch.no_grad():
        module.weight.copy_(w)


# --------------------------------------------------------------------------- energy
def test_energy_presets_and_resolution():
    assert (EnergyModel().e_mac_pj, EnergyModel().e_ac_pj) == (4.6, 0.9)
    assert (EnergyModel.fp16().e_mac_pj, EnergyModel.fp16().e_ac_pj) == (1.5, 0.4)
    assert (EnergyModel.int8().e_mac_pj, EnergyModel.int8().e_ac_pj) == (0.23, 0.03)
    assert EnergyModel.resolve("INT8") == EnergyModel.int8()
    assert EnergyModel.resolve(None) == EnergyModel.fp32()
    assert EnergyModel.fp16().energy_pj(sops=1000, macs=10) == pytest.approx(415.0)
    with pytest.raises(ValueError, match="unknown energy preset"):
        EnergyModel.preset("fp8")
    with pytest.raises(ValueError, match="non-negative"):
        EnergyModel(e_mac_pj=-1.0)


# --------------------------------------------------------------------------- hand-computed counts
def test_conv_sops_hand_computed_padding_stride():
    # 3x3 kernel, padding 1, stride 2 on a 3x3 map: outputs are centred on the four corners.
    # A spike at the centre (1,1) reaches every output through the four corner weights; a spike at
    # (0,0) reaches only output (0,0) through the centre weight. Pruning W[0,0] and W[2,2] leaves
    # 2 synapses for the first spike and 1 for the second: 3 SOPs (dense: 4 + 1 = 5).
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
    w = torch.ones(1, 1, 3, 3)
    w[0, 0, 0, 0] = 0.0
    w[0, 0, 2, 2] = 0.0
    _set_weight(conv, w)
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    x[0, 0, 0, 0] = 1.0
    r = analyze(Probe(conv), x, progress=False)
    assert _sops(r, "syn") == 3
    assert r["syn"]["input"] == "spikes"
    assert r["syn"]["macs"] == 0
    assert r["syn"]["dense_macs"] == 4 * 9  # 4 output positions x 9 weights
    assert r["syn"]["sparsity"] == pytest.approx(2 / 9)
    _set_weight(conv, torch.ones(1, 1, 3, 3))
    assert _sops(analyze(Probe(conv), x, progress=False), "syn") == 5


@pytest.mark.filterwarnings("ignore:analyze. the first layer")  # spike counts fed on purpose
def test_linear_sops_hand_computed_and_integer_counts():
    lin = nn.Linear(4, 3, bias=False)
    # non-zero synapses per input column: [3, 1, 0, 2]
    w = torch.tensor([[1.0, 0.0, 0.0, 2.0], [1.0, 3.0, 0.0, 0.0], [1.0, 0.0, 0.0, -1.0]])
    _set_weight(lin, w)
    x = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 2.0, 1.0, 1.0]])  # 3+1+0 = 4 ; 2*1+0+2 = 4
    r = analyze(Probe(lin), x, progress=False)
    assert r["syn"]["sops"] == 4.0  # per sample
    assert r["syn"]["input"] == "counts"  # a 2 (SEW ADD) is an integer count
    assert r["syn"]["firing_rate"] == pytest.approx(7 / 8)  # mean input value
    # a value of 2 counts twice
    r2 = analyze(Probe(lin), torch.tensor([[2.0, 0.0, 0.0, 0.0]]), progress=False)
    assert r2["syn"]["sops"] == 6.0
    assert r2["syn"]["energy_pj"] == pytest.approx(6 * 0.9)


@pytest.mark.parametrize("tty", [False, True])
def test_progress_bar_only_on_a_terminal(monkeypatch, capsys, tty):
    """A redirected stderr (a log file) gets no bar; a terminal gets it."""
    monkeypatch.setattr("sys.stderr.isatty", lambda: tty)
    loader = [torch.ones(2, 4)] * 3
    r = analyze(Probe(nn.Linear(4, 3)), loader, progress=True)
    assert r.totals["samples"] == 6
    assert ("analyze" in capsys.readouterr().err) is tty


def test_depthwise_and_grouped_conv_sops():
    dw = nn.Conv2d(2, 2, 1, groups=2, bias=False)
    _set_weight(dw, torch.tensor([0.0, 1.5]).view(2, 1, 1, 1))  # channel 0 pruned
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0].view(-1)[:3] = 1.0  # 3 spikes on the pruned channel
    x[0, 1].view(-1)[:2] = 1.0  # 2 spikes on the live channel
    assert _sops(analyze(Probe(dw), x, progress=False), "syn") == 2

    g = nn.Conv2d(4, 4, 1, groups=2, bias=False)  # each input channel feeds 2 output channels
    w = torch.ones(4, 2, 1, 1)
    w[0, 0] = 0.0  # input channel 0 -> output 0 pruned: channel 0 keeps 1 synapse
    _set_weight(g, w)
    x = torch.zeros(1, 4, 1, 1)
    x[0, 0] = 1.0
    x[0, 3] = 1.0
    assert _sops(analyze(Probe(g), x, progress=False), "syn") == 1 + 2


@pytest.mark.filterwarnings("ignore:analyze. the first layer")  # spike counts fed on purpose
@pytest.mark.parametrize(
    "kwargs,dim",
    [
        ({"kernel_size": 3, "padding": 1}, 2),
        ({"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2}, 2),
        ({"kernel_size": (3, 2), "stride": (2, 1), "padding": (0, 1), "groups": 2}, 2),
        ({"kernel_size": 3, "padding": "same"}, 2),
        ({"kernel_size": 3, "padding": 1, "padding_mode": "circular"}, 2),
        ({"kernel_size": 3, "padding": 1, "padding_mode": "reflect", "groups": 4}, 2),
        ({"kernel_size": 5, "stride": 3, "padding": 2}, 1),
        ({"kernel_size": 2, "stride": 2, "padding": 1}, 3),
    ],
)
def test_fanout_identity_matches_direct_masked_conv(kwargs, dim):
    torch.manual_seed(0)
    conv_cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]
    conv = conv_cls(4, 8, bias=False, **kwargs)
    with torch.no_grad():
        conv.weight.mul_((torch.rand_like(conv.weight) > 0.6).float())
    shape = {1: (3, 4, 11), 2: (3, 4, 7, 6), 3: (2, 4, 5, 4, 3)}[dim]
    x = torch.randint(0, 4, shape).float()  # spike counts 0..3
    mask = (conv.weight != 0).float()
    expected = conv._conv_forward(x, mask, None).sum().item()
    r = analyze(Probe(conv), x, progress=False)
    assert _sops(r, "syn") == pytest.approx(expected, rel=1e-12)


def test_real_valued_input_counts_effective_macs():
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[:2] = 0.0  # half the output channels pruned
    x = torch.rand(5, 2, 6, 6) + 0.1
    r = analyze(Probe(conv), x, progress=False)
    row = r["syn"]
    assert row["input"] == "real" and row["sops"] == 0 and row["firing_rate"] is None
    assert row["dense_macs"] == 36 * 4 * 2 * 9
    assert row["macs"] == 36 * 2 * 2 * 9  # output positions x nnz(W)
    assert row["energy_pj"] == pytest.approx(row["macs"] * 4.6)


def test_dense_macs_add_up_over_calls_and_batches():
    """A layer called twice per forward, over two batches (3 + 2 samples): every call adds
    output positions x numel(W), and the total is divided by the 5 samples."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)

        def forward(self, x):
            return self.conv(torch.relu(self.conv(x)))

    net = Twice()
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(3, 1, 4, 4, generator=g), torch.rand(2, 1, 4, 4, generator=g)]
    r = analyze(net, batches, progress=False)
    assert r["conv"]["dense_macs"] == 2 * 16 * 9  # two calls x 16 output positions x 9 weights, per sample


def test_ann_counts_macs_even_for_integer_inputs():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():
        net[0].weight[0] = 0.0
    x = torch.randint(0, 3, (4, 1, 4, 4)).float()
    r = analyze(net, x, progress=False)
    assert r.meta["spiking"] is False
    assert r.totals["sops"] == 0 and r.totals["firing_rate"] is None
    assert r["0"]["macs"] == 4 * 9 and r["0"]["dense_macs"] == 8 * 9
    assert r["3"]["macs"] == r["3"]["dense_macs"] == 24
    assert r["0"]["input"] == "ann"


# --------------------------------------------------------------------------- pruning and parametrize
def test_pruning_half_of_the_weights_halves_sops_parametrized():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
    x = (torch.rand(4, 3, 9, 9) < 0.3).float()
    dense = _sops(analyze(Probe(conv), x, progress=False), "syn")
    mask = torch.ones_like(conv.weight)
    mask[::2] = 0.0  # every other output channel: each input position loses exactly half its fan-out
    parametrize.register_parametrization(conv, "weight", _Mask(mask))
    r = analyze(Probe(conv), x, progress=False)
    assert _sops(r, "syn") == dense / 2
    assert r["syn"]["sparsity"] == 0.5
    assert r["syn"]["params"] == 8 * 3 * 9 + 8  # effective weight + bias, not the mask buffer
    assert r["syn"]["nonzero_params"] == 4 * 3 * 9 + 8
    assert "syn.parametrizations.weight" not in [row["name"] for row in r.layers]
    assert parametrize.is_parametrized(conv, "weight")


# --------------------------------------------------------------------------- SEW conventions
class _TinySEW(nn.Module):
    """Encoding conv+BN run once on the static image, output repeated T times (the models/ convention)."""

    def __init__(self, T: int = 3, repeat_first: bool = False, expose_t: bool = True) -> None:
        super().__init__()
        self.steps = T
        if expose_t:
            self.T = T
        self.repeat_first = repeat_first
        self.conv1 = layer.Conv2d(1, 4, 3, padding=1, bias=False, step_mode="m" if repeat_first else "s")
        self.sn1 = neuron.IFNode(step_mode="m", v_threshold=0.5)
        self.conv2 = layer.Conv2d(4, 4, 3, padding=1, bias=False, step_mode="m")
        self.sn2 = neuron.IFNode(step_mode="m", v_threshold=0.5)
        self.fc = layer.Linear(4, 2, step_mode="s")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.repeat_first:
            y = self.conv1(x.unsqueeze(0).repeat(self.steps, 1, 1, 1, 1))
        else:
            y = self.conv1(x).unsqueeze(0).repeat(self.steps, 1, 1, 1, 1)
        s = self.sn1(y)
        s = s + self.sn2(self.conv2(s))  # SEW ADD: values 0, 1, 2
        return self.fc(s.mean((0, 3, 4)))


def test_encoding_layer_counted_once_and_sew_add_counts():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 5, 5)
    once = analyze(_TinySEW(T=3), x, progress=False)
    zoo = analyze(_TinySEW(T=3, repeat_first=True), x, progress=False)
    per_sample_macs = 25 * 4 * 9  # 5x5 positions x 36 weights
    assert once["conv1"]["macs"] == per_sample_macs
    assert zoo["conv1"]["macs"] == 3 * per_sample_macs  # repeated before conv1: counted T times
    assert once.totals["time_steps"] == 3 and once.meta["time_steps_source"] == "model.T"
    assert once["fc"]["input"] == "real"
    assert once["conv2"]["input"] in ("spikes", "counts")
    assert once.totals["sops_per_step"] == pytest.approx(once.totals["sops"] / 3)
    # time_steps inferred from the multi-step neurons when the model has no T attribute
    r = analyze(_TinySEW(T=2, expose_t=False), x, progress=False)
    assert r.totals["time_steps"] == 2 and r.meta["time_steps_source"] == "inferred from the neurons"


def test_firing_rate_is_spikes_per_neuron_per_step():
    # IF with threshold 1 and hard reset fires at every step where the input is 1.5, never for 0.
    net = nn.Sequential(neuron.IFNode(step_mode="m"))
    x = torch.zeros(4, 2, 10)  # [T, N, neurons]
    x[:, :, :3] = 1.5
    r = analyze(net, (x, torch.zeros(2, dtype=torch.long)), progress=False)
    assert r["0"]["firing_rate"] == pytest.approx(0.3)
    assert r["0"]["neurons"] == 10
    assert r["0"]["spikes"] == pytest.approx(3 * 4)  # per sample, summed over T
    assert r.totals["firing_rate"] == pytest.approx(0.3)
    assert r.totals["samples"] == 2 and r.totals["time_steps"] == 4


def test_single_step_neurons_infer_time_steps_from_calls():
    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.sn = neuron.IFNode()

        def forward(self, x):
            return sum(self.sn(self.fc(x)) for _ in range(5))

    r = analyze(Loop(), torch.rand(2, 3), progress=False)
    assert r.totals["time_steps"] == 5
    assert r["fc"]["macs"] == 5 * 9  # 5 calls per sample, real-valued input


# --------------------------------------------------------------------------- SpikingJelly op_counter
def _spiking_stack() -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(
        layer.Conv2d(2, 6, 3, padding=1, stride=2, bias=False),
        neuron.IFNode(v_threshold=0.2),
        layer.Conv2d(6, 6, 3, padding=1, groups=3, bias=False),
        neuron.IFNode(v_threshold=0.2),
        layer.Flatten(),
        layer.Linear(6 * 16, 5),
    )
    functional.set_step_mode(net, "m")
    return net


def test_dense_binary_model_agrees_with_spikingjelly_synop_counter():
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

    net = _spiking_stack()
    x = (torch.rand(3, 4, 2, 8, 8) < 0.4).float()  # [T, N, C, H, W] binary spikes
    y = torch.zeros(4, dtype=torch.long)
    counter = SynOpCounter()
    with torch.no_grad(), DispatchCounterMode([counter]):
        net(x)
    functional.reset_net(net)
    r = analyze(net, (x, y), progress=False)
    assert all(row["input"] == "spikes" for row in r.layers if row["kind"] in ("conv", "linear"))
    assert r.totals["sops"] * 4 == pytest.approx(counter.get_total(), rel=1e-12)
    assert counter.get_total() > 0

    # with half the weights pruned SpikingJelly's count does not move, ours follows the mask
    with torch.no_grad():
        net[2].weight[::2] = 0.0
    counter = SynOpCounter()
    with torch.no_grad(), DispatchCounterMode([counter]):
        net(x)
    functional.reset_net(net)
    sj_conv2 = counter.get_counts()["Sequential.2"]
    pruned = analyze(net, (x, y), progress=False)
    assert pruned["2"]["sops"] * 4 == pytest.approx(sum(sj_conv2.values()) / 2, rel=1e-12)


# --------------------------------------------------------------------------- report
def test_report_totals_are_row_sums_and_round_trips(tmp_path):
    net = _spiking_stack()
    x = (torch.rand(2, 3, 2, 8, 8) < 0.4).float()
    data = [(x, torch.zeros(3, dtype=torch.long)) for _ in range(2)]
    r = analyze(net, data, energy="fp16", progress=False)
    d = r.to_dict()
    assert set(d) >= {"layers", "totals"}
    for key in ("params", "nonzero_params", "sops", "macs", "dense_macs", "energy_pj"):
        assert d["totals"][key] == pytest.approx(sum(row[key] or 0 for row in d["layers"]))
    assert d["totals"]["params"] == sum(p.numel() for p in net.parameters())
    for row in d["layers"]:
        for key in ("name", "kind", "params", "nonzero_params", "sparsity", "firing_rate", "sops", "macs"):
            assert key in row
        if row["kind"] in ("conv", "linear"):
            assert row["energy_pj"] == pytest.approx(row["sops"] * 0.4 + row["macs"] * 1.5)
    assert d["meta"]["energy_model"]["name"] == "fp16"
    assert r.totals["samples"] == 6

    back = Report.from_json(r.to_json(tmp_path / "r.json"))
    assert back.to_dict() == json.loads(json.dumps(d))
    rows = list(csv.DictReader(open(r.to_csv(tmp_path / "r.csv"))))
    assert [row["name"] for row in rows] == [*(row["name"] for row in d["layers"]), "total"]
    assert float(rows[-1]["sops"]) == pytest.approx(d["totals"]["sops"])

    assert "SOPs" in r.summary() and "fp16" in r.summary()
    text = str(r)
    assert "total" in text and "fp16" in text and "layer" in text.splitlines()[0]
    fig = r.plot()
    assert type(fig).__name__ == "Figure" and len(fig.axes) == 3
    with pytest.raises(FileNotFoundError, match="to_json"):
        Report.from_json(tmp_path / "missing.json")


def test_compare_ann_vs_snn():
    snn = _spiking_stack()
    x = (torch.rand(2, 3, 2, 8, 8) < 0.4).float()
    rs = analyze(snn, (x, torch.zeros(3, dtype=torch.long)), progress=False)
    ann = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, stride=2), nn.ReLU())
    ra = analyze(ann, torch.rand(3, 2, 8, 8), progress=False)
    c = compare(ann=ra, snn=rs.to_dict())
    assert isinstance(c, Comparison)
    assert c.energy_ratio == pytest.approx(ra.totals["energy_pj"] / rs.totals["energy_pj"])
    assert [row["name"] for row in c.layers] == ["0"]
    assert c.layers[0]["ann_macs"] == ra["0"]["macs"]
    assert "energy ratio" in str(c) and c.to_dict()["metrics"]["sops"]["snn"] == rs.totals["sops"]


# --------------------------------------------------------------------------- model state
def _state(net: nn.Module):
    return (
        [(n, m.training) for n, m in net.named_modules()],
        [
            (n, tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._forward_hooks_with_kwargs))
            for n, m in net.named_modules()
        ],
    )


def test_model_state_unchanged_after_analyze_and_on_error():
    net = _spiking_stack()
    net.train()
    net[2].eval()
    handle = net[0].register_forward_hook(lambda *a: None)
    x = (torch.rand(2, 3, 2, 8, 8) < 0.4).float()
    with torch.no_grad():
        net(x)  # leave a non-reset membrane potential behind
    v_before = net[1].v
    assert isinstance(v_before, torch.Tensor)
    before = _state(net)
    analyze(net, [x, x], progress=False)
    assert _state(net) == before
    assert net[1].v is v_before

    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, s):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("boom")
            return s

    boom_net = nn.Sequential(*net, Boom())
    boom_net.train()
    boom_net[2].eval()
    before = _state(boom_net)
    with pytest.raises(RuntimeError, match="boom"):
        analyze(boom_net, [x, x, x], progress=False)
    assert _state(boom_net) == before
    assert boom_net[1].v is v_before
    handle.remove()


def test_data_forms_and_errors():
    net = _spiking_stack()
    x = (torch.rand(2, 3, 2, 8, 8) < 0.4).float()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x.transpose(0, 1), torch.zeros(3, dtype=torch.long)), batch_size=1
    )

    class TimeFirst(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, b):
            return self.inner(b.transpose(0, 1))

    r = analyze(TimeFirst(net), loader, max_batches=2, progress=False)
    assert r.meta["batches"] == 2 and r.totals["samples"] == 2
    with pytest.raises(ValueError, match="iterable of batches"):
        analyze(net, {"x": x})
    with pytest.raises(ValueError, match="each batch must be a tensor"):
        analyze(net, [{"x": x}], progress=False)
    with pytest.raises(ValueError, match="no batches"):
        analyze(net, [], progress=False)
    with pytest.raises(ValueError, match="time_steps"):
        analyze(net, x, time_steps=0)


def test_inference_mode_and_repeat_calls_agree():
    net = _spiking_stack()
    x = (torch.rand(2, 3, 2, 8, 8) < 0.4).float()
    ref = analyze(net, [x], progress=False).to_dict()
    with torch.inference_mode():
        again = analyze(net, [x], progress=False).to_dict()
    assert again["totals"] == ref["totals"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    """Same counts on the GPU. In float64: in float32 cuDNN's TF32 convolutions (PyTorch's default) and
    another summation order flip spikes at the threshold (1365.7 vs 1364 SOPs seen on an H200)."""
    net = _spiking_stack().double()
    x = (torch.rand(2, 3, 2, 8, 8) < 0.4).double()
    y = torch.zeros(3, dtype=torch.long)
    cpu = analyze(net, (x, y), progress=False)
    gpu = analyze(net.cuda(), (x, y), progress=False)  # input moved to the model's device
    assert gpu.meta["device"].startswith("cuda")
    for key in ("sops", "macs", "dense_macs", "nonzero_params", "firing_rate"):
        assert gpu.totals[key] == pytest.approx(cpu.totals[key], rel=1e-6)


# --------------------------------------------------------------------------- models registry
@pytest.mark.skipif(not HAS_MODELS, reason="models/ package not present")
def test_sew_resnet18_and_ann_twin_from_registry():
    import models

    torch.manual_seed(0)
    snn = models.create_model("sew_resnet18", stem="small", width=8, T=2, num_classes=10, in_channels=1)
    ann = models.create_model("ann_resnet18", stem="small", width=8, num_classes=10, in_channels=1)
    x = torch.rand(4, 1, 16, 16)
    snn.train()  # BN batch statistics make the random net fire
    rs = analyze(snn, x, time_steps=2, progress=False)
    ra = analyze(ann, x, progress=False)
    assert snn.training
    conv1 = next(row for row in rs.layers if row["kind"] == "conv")
    assert conv1["input"] == "real" and conv1["sops"] == 0
    assert conv1["macs"] == conv1["dense_macs"]  # encoder runs once per sample, dense
    assert rs.totals["sops"] > 0 and rs.totals["firing_rate"] is not None
    assert ra.totals["sops"] == 0 and ra.totals["macs"] > 0
    c = compare(ann=ra, snn=rs)
    assert c.energy_ratio is not None and math.isfinite(c.energy_ratio)
    assert rs.totals["params"] == sum(p.numel() for p in snn.parameters())


@pytest.mark.skipif(importlib.util.find_spec("snnprune.threshold") is None, reason="core not present")
def test_soft_threshold_parametrized_layer_reads_effective_weight():
    from snnprune import register_soft_threshold

    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(-1, 1, conv.weight.numel()).view_as(conv.weight))
    register_soft_threshold(conv, threshold=0.5)
    w = conv.weight.detach()
    x = (torch.rand(2, 2, 5, 5) < 0.5).float()
    expected = F.conv2d(x, (w != 0).float(), padding=1).sum().item()
    r = analyze(Probe(conv), x, progress=False)
    assert _sops(r, "syn") == expected
    assert r["syn"]["sparsity"] == pytest.approx((w == 0).float().mean().item())


def test_analyze_reads_the_device_a_fixed_number_of_times(monkeypatch):
    """The counting forward accumulates on the device: the host reads (``item``, ``tolist``, ``bool``,
    ``float``, ``int`` of a tensor) do not grow with the number of layers."""

    def reads(depth: int) -> int:
        blocks = []
        for _ in range(depth):
            blocks += [nn.Linear(8, 8), neuron.IFNode(step_mode="m")]
        model = nn.Sequential(*blocks)
        x = torch.rand(4, 2, 8)  # [T, N, features]
        count = [0]
        patched = {}
        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
            original = getattr(torch.Tensor, name)

            def wrapper(self, *args, _original=original, **kwargs):
                count[0] += 1
                return _original(self, *args, **kwargs)

            patched[name] = wrapper
        with monkeypatch.context() as m:
            for name, wrapper in patched.items():
                m.setattr(torch.Tensor, name, wrapper)
            analyze(model, x, time_steps=4, progress=False)
        functional.reset_net(model)
        return count[0]

    few, many = reads(2), reads(6)
    assert few == many, (few, many)
    assert few >= 1  # the one read at the end is seen: the patch counts


# --------------------------------------------------------------------------- samples and time steps
class _SeqSEW(_TinySEW):
    """``_TinySEW`` that also takes a 5-d sequence: time-first ``[T, N, C, H, W]``, or ``[N, T, C, H, W]``
    with ``batch_first`` (as the ``models`` SEW ResNets read 5-d inputs); conv1 then runs on every frame."""

    def __init__(self, T: int = 3, batch_first: bool = False) -> None:
        super().__init__(T=T)
        self.batch_first = batch_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return super().forward(x)
        if self.batch_first:
            x = x.transpose(0, 1)
        y = self.conv1(x.flatten(0, 1))
        s = self.sn1(y.view(*x.shape[:2], *y.shape[1:]))
        s = s + self.sn2(self.conv2(s))
        return self.fc(s.mean((0, 3, 4)))


def _dyadic_seq_sew(batch_first: bool = False) -> _SeqSEW:
    """Weights +-1/4 or +-1/2 (none zero): every conv sum is exact, so a frame gives the same spikes whether
    conv1 runs on N images or on the T*N frames of their repeated sequence."""
    torch.manual_seed(0)
    net = _SeqSEW(T=3, batch_first=batch_first)
    for conv in (net.conv1, net.conv2):
        shape = conv.weight.shape
        _set_weight(conv, torch.randint(1, 3, shape) * (2 * torch.randint(0, 2, shape) - 1) / 4)
    return net


def test_static_image_and_its_repeated_sequence_count_the_same_samples():
    torch.manual_seed(1)
    x = torch.randint(0, 8, (6, 1, 5, 5)).float() / 8 + 1 / 16  # real-valued pixels, exact in float32
    seq = x.unsqueeze(0).repeat(3, 1, 1, 1, 1)  # [T=3, N=6, C, H, W]
    net = _dyadic_seq_sew()
    static = analyze(net, x, progress=False)
    by_rule = analyze(net, seq, progress=False)
    by_axis = analyze(net, seq, time_axis=0, progress=False)
    batch_first = analyze(_dyadic_seq_sew(batch_first=True), seq.transpose(0, 1), time_axis=1, progress=False)
    per_image = 25 * 4 * 9  # conv1: 5x5 output positions x 36 weights, once per image
    assert static["conv1"]["macs"] == per_image
    assert static["sn1"]["spikes"] > 0 and static["conv2"]["sops"] > 0
    for r in (by_rule, by_axis, batch_first):
        assert r.totals["samples"] == 6 and r.totals["time_steps"] == 3
        assert r["conv1"]["macs"] == 3 * per_image  # the sequence runs conv1 on each of the 3 frames
        for name, key in (("sn1", "spikes"), ("conv2", "sops"), ("sn2", "spikes"), ("fc", "macs")):
            assert r[name][key] == static[name][key], (name, key)
    assert by_axis.meta["time_steps_source"] == "time_axis"
    assert static.meta["time_steps_source"] == by_rule.meta["time_steps_source"] == "model.T"


def test_time_axis_gives_the_samples_of_a_merged_time_batch():
    class Merged(nn.Module):  # the neurons see T*N merged: only time_axis tells the samples
        def __init__(self) -> None:
            super().__init__()
            self.sn = neuron.IFNode()

        def forward(self, x):
            return self.sn(x.flatten(0, 1))

    x = torch.full((3, 5, 6), 1.5)  # [T=3, N=5, 6]: IF fires every element (threshold 1)
    r = analyze(Merged(), x, time_axis=0, progress=False)
    assert r.totals["samples"] == 5 and r.totals["time_steps"] == 3
    assert r["sn"]["spikes"] == 3 * 6  # 6 neurons x 3 frames per sample


# --------------------------------------------------------------------------- bad inputs
class _Times(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def _nan_at(x: torch.Tensor, value: float = float("nan")) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[3] = value
    return x


_SEQ = torch.rand(3, 6, 1, 5, 5)  # a time-first [T=3, N=6, ...] sequence
BAD_INPUTS = [
    pytest.param(
        lambda: (_spiking_stack(), _nan_at((torch.rand(2, 3, 2, 8, 8) < 0.4).float()), {}),
        r"^analyze: data: the input holds NaN or infinite values; replace them \(e\.g\. torch\.nan_to_num\)",
        id="nan-tensor",
    ),
    pytest.param(
        lambda: (
            nn.Sequential(nn.Linear(4, 2)),
            [
                torch.rand(2, 4),
                torch.rand(2, 4),
                _nan_at(torch.rand(2, 4), math.inf),
                _nan_at(torch.rand(2, 4)),
            ],
            {},
        ),
        r"^analyze: data: batch 2 holds NaN or infinite values; replace them",
        id="inf-in-loader-batch-2",
    ),
    pytest.param(
        lambda: (
            _spiking_stack(),
            (_nan_at(torch.rand(2, 3, 2, 8, 8)), torch.zeros(3, dtype=torch.long)),
            {},
        ),
        r"^analyze: data: the input holds NaN or infinite values",
        id="nan-in-input-target-pair",
    ),
    pytest.param(
        lambda: (
            nn.Sequential(layer.Linear(4, 4), neuron.IFNode(), _Times(math.inf), layer.Linear(4, 2)),
            torch.ones(2, 4),
            {},
        ),
        r"^analyze: model: the counts of layer '3' are NaN or infinite although every input is finite: .* "
        r"check the model's weights and forward",
        id="model-makes-inf",
    ),
    pytest.param(
        lambda: (Probe(nn.Conv2d(1, 2, 3)), torch.rand(2, 3, 5, 5), {}),
        r"^analyze: data: input of shape \(2, 3, 5, 5\) reaches the model's first synaptic layer 'syn' "
        r"\(Conv2d\) with 3 channels, but it expects in_channels=1; give data with 1 channel,",
        id="conv-channels",
    ),
    pytest.param(
        lambda: (_spiking_stack(), torch.rand(2, 3, 3, 8, 8), {}),
        r"^analyze: data: input of shape \(2, 3, 3, 8, 8\) reaches the model's first synaptic layer '0' "
        r"\(Conv2d\) with 3 channels, but it expects in_channels=2; give data with 2 channels,",
        id="multi-step-conv-channels",
    ),
    pytest.param(
        lambda: (Probe(nn.Linear(4, 2)), torch.rand(2, 5), {}),
        r"^analyze: data: input of shape \(2, 5\) reaches the model's first synaptic layer 'syn' \(Linear\) "
        r"with 5 features, but it expects in_features=4; give data with 4 features,",
        id="linear-features",
    ),
    pytest.param(
        lambda: (_spiking_stack(), torch.rand(2, 3, 2, 8, 8), {"time_axis": 2}),
        r"^analyze: time_axis: must be 0 \(\[T, N, \.\.\.\] inputs\), 1 \(\[N, T, \.\.\.\] inputs\) or None",
        id="time-axis-2",
    ),
    pytest.param(
        lambda: (_spiking_stack(), torch.rand(2, 3, 2, 8, 8), {"time_axis": True}),
        r"^analyze: time_axis: must be 0",
        id="time-axis-bool",
    ),
    pytest.param(
        lambda: (Probe(nn.Linear(4, 2)), torch.rand(4), {"time_axis": 0}),
        r"^analyze: data: time_axis=0 needs inputs with a time and a batch axis, got shape \(4,\); "
        r"pass time_axis=None",
        id="time-axis-on-1d-input",
    ),
    pytest.param(
        lambda: (
            _spiking_stack(),
            [(torch.rand(2, 3, 2, 8, 8), torch.zeros(3, dtype=torch.long))],
            {"time_axis": 1},
        ),
        r"^analyze: data: batch 0: len\(target\) = 3 but time_axis=1 makes axis 0 of the input of shape "
        r"\(2, 3, 2, 8, 8\) the batch \(2 samples\)",
        id="time-axis-against-target",
    ),
    pytest.param(
        lambda: (_dyadic_seq_sew(batch_first=True), _SEQ, {}),
        r"^analyze: data: model\.T = 3 but the first spiking neuron runs 6 time steps on the input of shape "
        r"\(3, 6, 1, 5, 5\) .* is x\.transpose\(0, 1\)\), or pass time_steps=6",
        id="time-first-sequence-to-batch-first-model",
    ),
    pytest.param(
        lambda: (_dyadic_seq_sew(batch_first=True), _SEQ, {"time_axis": 0}),
        r"^analyze: data: time_axis=0 gives T = 3 but the first spiking neuron runs 6 time steps .* "
        r"with the time_axis of that layout$",
        id="time-axis-the-model-does-not-read",
    ),
    pytest.param(
        lambda: (_spiking_stack(), torch.rand(3, 4, 2, 8, 8), {"time_steps": 2}),
        r"^analyze: data: time_steps=2 but the first spiking neuron runs 3 time steps",
        id="time-steps-against-the-neurons",
    ),
]


@pytest.mark.parametrize("make, match", BAD_INPUTS)
def test_analyze_bad_input(make, match):
    model, data, kwargs = make()
    with pytest.raises(ValueError, match=match) as err:
        analyze(model, data, progress=False, **kwargs)
    assert "\n" not in str(err.value)


def _hand_membrane_updates(x: list[list[list[float]]], kind: str, v_reset: float | None) -> int:
    """NeuroBench's MembraneUpdates from the neuron equations, by hand: x is [T][N][neurons]; V[-1] = 0;
    charge H = V + X (IF) or V + (X - (V - V_reset)) / 2 (LIF, tau 2; V_reset 0 under soft reset); fire
    S = H >= 1; reset V = V_reset (hard, S=1) or H - 1 (soft, S=1), else H. Every neuron counts at step 0,
    and at each later step where V[t] != V[t-1]."""
    t_steps, n, m = len(x), len(x[0]), len(x[0][0])
    count = 0
    for b in range(n):
        for j in range(m):
            v = 0.0
            for t in range(t_steps):
                base = 0.0 if v_reset is None else v_reset
                h = v + x[t][b][j] if kind == "if" else v + (x[t][b][j] - (v - base)) / 2
                new = (base if v_reset is not None else h - 1.0) if h >= 1.0 else h
                count += 1 if t == 0 or new != v else 0
                v = new
    return count


class _StepLoop(nn.Module):
    """Runs a single-step node over the time steps of a ``[T, N, ...]`` input."""

    def __init__(self, node: nn.Module) -> None:
        super().__init__()
        self.node = node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.node(xt) for xt in x])


@pytest.mark.parametrize("ours", [False, True])
@pytest.mark.parametrize("step_mode", ["s", "m"])
@pytest.mark.parametrize("kind,v_reset", [("if", 0.0), ("if", None), ("lif", 0.0), ("lif", None)])
def test_membrane_updates_and_neuron_ops_hand_count(ours, step_mode, kind, v_reset):
    import snnprune.neuron as our_neuron

    nodes = our_neuron if ours else neuron
    x = [
        [[0.5, 0.0, 1.5], [0.0, 0.25, 0.0]],
        [[0.0, 0.0, -0.5], [0.0, 0.0, 0.0]],
        [[0.75, 0.0, 0.25], [1.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.25], [0.0, 0.0, 0.0]],
    ]
    expected = _hand_membrane_updates(x, kind, v_reset)
    node = (
        nodes.IFNode(v_reset=v_reset, step_mode=step_mode)
        if kind == "if"
        else nodes.LIFNode(tau=2.0, v_reset=v_reset, step_mode=step_mode)
    )
    model = nn.Sequential(node) if step_mode == "m" else _StepLoop(node)
    data = (torch.tensor(x), torch.zeros(2))
    for convention in ("neurobench", "ours"):
        membrane = None if convention == "neurobench" else True
        r = analyze(model, data, time_axis=0, convention=convention, membrane=membrane, progress=False)
        assert r.totals["membrane_updates"] == expected / 2  # per sample
        assert r.totals["neuron_ops"] == 4 * expected / 2
        assert r.totals["neuron_dense_ops"] == 4 * 4 * 3  # T * neurons * 4
        assert r[r.layers[-1]["name"]]["membrane_updates"] == expected / 2
        assert f"membrane updates {expected / 2:g}" in str(r)
    assert analyze(model, data, time_axis=0, progress=False).totals["membrane_updates"] is None
    assert not node.store_v_seq and node.v_seq is None
