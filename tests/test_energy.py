"""Tests of the energy models (compute + memory), the counting conventions, the fair ANN baselines, the
break-even firing rate, and analyze's input handling (bare time-first tensors, pairs, empty batches)."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace

import pytest
import torch
from helpers import Probe
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from snnprune.analysis import (
    EnergyModel,
    Report,
    analyze,
    ann_baselines,
    break_even,
    compare,
    energy_at_rate,
    quantized_activation_bits,
)
from snnprune.analysis.energy import HOROWITZ_SRAM_64BIT_PJ, add_pj, mult_pj
from snnprune.analysis.report import price_row

# 1 pJ per bit whatever the memory size: hand counts in bits are hand counts in pJ.
FLAT = {"sram_pj": ((0.0, 64.0),), "sram_word_bits": 64}


def _linear_probe() -> nn.Module:
    lin = nn.Linear(4, 3, bias=False)
    with torch.no_grad():  # non-zero synapses per input column: [3, 1, 0, 2]; dense fan-out 3
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 2.0], [1.0, 3.0, 0.0, 0.0], [1.0, 0.0, 0.0, -1.0]]))
    return Probe(lin)


_X = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])  # SOPs 3+1 and 1+0+2: 3.5 per sample


# --------------------------------------------------------------------------- presets and compatibility
def test_default_stays_compute_only_and_presets_round_trip(tmp_path):
    m = EnergyModel()
    assert (m.e_mac_pj, m.e_ac_pj, m.has_memory) == (4.6, 0.9, False)
    r = analyze(_linear_probe(), _X, progress=False)
    row = r["syn"]
    assert row["energy_pj"] == row["energy_compute_pj"] == pytest.approx(3.5 * 0.9)
    assert row["energy_memory_pj"] == 0.0
    assert r["sn"]["energy_pj"] is None  # neurons cost nothing in the compute-only convention
    assert r.totals["energy_pj"] == r.totals["energy_compute_pj"] and r.totals["energy_memory_pj"] == 0.0
    for name in ("lemaire", "yan-neuromorphic", "yan_accelerator"):
        p = EnergyModel.preset(name)
        assert p.has_memory and p.source
        back = EnergyModel.from_dict(json.loads(json.dumps(p.to_dict())))
        assert back == p
    lem = EnergyModel.lemaire()
    assert (lem.e_ac_pj, lem.e_mac_pj) == (0.1, 3.2)
    # Lemaire's SRAM: 10 / 20 / 100 pJ per 32-bit access at 8 KB / 32 KB / 1 MB, linear from 0
    assert lem.bit_pj(8 * 8192) * 32 == pytest.approx(10.0)
    assert lem.bit_pj(8 * 20480) * 32 == pytest.approx(15.0)
    assert lem.bit_pj(8 * 4096) * 32 == pytest.approx(5.0)
    assert lem.bit_pj(8 * (1 << 30)) * 32 == pytest.approx(100.0)
    acc = EnergyModel.yan_accelerator()
    assert acc.bit_pj(8 * 32768) * 64 == pytest.approx(20.0) and HOROWITZ_SRAM_64BIT_PJ[1] == (32768, 20.0)
    assert acc.e_ac_pj == pytest.approx(add_pj(16)) == pytest.approx(0.06)
    assert mult_pj(8, 8) == pytest.approx(0.2) and mult_pj(32, 32) == pytest.approx(3.2)
    assert [quantized_activation_bits(t) for t in (1, 2, 3, 4, 7, 8)] == [1, 2, 2, 3, 3, 4]
    # a report written before memory energy existed still loads and prices compute
    old = r.to_dict()
    for row in old["layers"]:
        row.pop("access", None)
    old["meta"]["energy_model"] = {"e_mac_pj": 4.6, "e_ac_pj": 0.9, "name": "fp32", "source": "x"}
    rep = Report.from_dict(old)
    assert rep.with_energy("int8").totals["energy_pj"] == pytest.approx(3.5 * 0.03)
    with pytest.raises(ValueError, match="no access counts"):
        rep.with_energy("lemaire")
    with pytest.raises(ValueError, match="weight_format must be one of"):
        EnergyModel(weight_format="coo")
    with pytest.raises(ValueError, match="strictly increasing"):
        EnergyModel(sram_pj=((10.0, 1.0), (5.0, 2.0)))
    with pytest.raises(ValueError, match="unknown energy preset"):
        EnergyModel.preset("yan")


# --------------------------------------------------------------------------- memory against hand counts
@pytest.mark.parametrize(
    "fmt,weights,index,potential_sop",
    [
        # csr: 3.5 non-zero weights read (8 bit), 4-bit index each; potential read+write per accumulate
        ("csr", 3.5 * 8, 3.5 * 4, 2 * 3.5 * 16),
        # bitmask: 3.5 weights, one mask bit per synapse of the dense fan-out (2.5 events x 3)
        ("bitmask", 3.5 * 8, 7.5 * 1, 2 * 3.5 * 16),
        # dense: the whole fan-out (zeros too) is read and updates its target potential
        ("dense", 7.5 * 8, 0.0, 2 * 7.5 * 16),
    ],
)
def test_memory_terms_match_hand_counts(fmt, weights, index, potential_sop):
    model = EnergyModel(
        e_mac_pj=2.0,
        e_ac_pj=0.5,
        name="hand",
        weight_bits=8,
        potential_bits=16,
        event_bits=10,
        weight_format=fmt,
        index_bits=4,
        potential_per_sop=True,
        spike_format="aer",
        **FLAT,
    )
    r = analyze(_linear_probe(), _X, energy=model, progress=False)
    syn, sn = r["syn"], r["sn"]
    assert syn["sops"] == 3.5
    assert syn["energy_compute_pj"] == pytest.approx(3.5 * 0.5)
    assert syn["energy_weights_pj"] == pytest.approx(weights)
    assert syn["energy_index_pj"] == pytest.approx(index)
    assert syn["energy_potential_pj"] == pytest.approx(potential_sop)
    assert syn["energy_activations_pj"] == pytest.approx(2.5 * 10)  # 2.5 input events of 10 bits
    # W x = [1, 4, 1] and [2, 3, -1]: 5 spikes of the IF neurons (threshold 1), 2.5 per sample
    assert sn["spikes"] == 2.5
    assert sn["energy_potential_pj"] == pytest.approx(2 * 3 * 16)  # 3 neurons x 1 step, read + write
    assert sn["energy_activations_pj"] == pytest.approx(2.5 * 10)  # one address event per spike
    assert sn["energy_compute_pj"] == 0.0
    expected_memory = weights + index + potential_sop + 25 + 96 + 25
    assert r.totals["energy_memory_pj"] == pytest.approx(expected_memory)
    assert r.totals["energy_pj"] == pytest.approx(expected_memory + 1.75)
    # spike maps: one bit per input element read, one bit per neuron per step written
    maps = analyze(_linear_probe(), _X, energy=replace(model, spike_format="map"), progress=False)
    assert maps["syn"]["energy_activations_pj"] == pytest.approx(4.0)
    assert maps["sn"]["energy_activations_pj"] == pytest.approx(3.0)
    # the report can be re-priced without running the model again
    assert r.with_energy(replace(model, spike_format="map")).totals == pytest.approx(maps.totals)


def test_ann_memory_and_zero_skipping_hand_counts():
    net = nn.Sequential(nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].weight[0, 0] = 0.0  # 11 non-zero weights
    x = torch.tensor([[0.5, 0.0, 0.0, 2.0]])  # 2 non-zero inputs: columns 0 (2 synapses) and 3 (3)
    model = EnergyModel(
        e_mac_pj=1.0, weight_bits=8, activation_bits=4, weight_format="csr", index_bits=4, **FLAT
    )
    r = analyze(net, x, energy=model, progress=False)
    row = r["0"]
    assert row["macs"] == 11 and row["input_density"] == pytest.approx(5 / 11)
    assert row["energy_weights_pj"] == pytest.approx(11 * 8)
    assert row["energy_index_pj"] == pytest.approx(11 * 4)
    assert row["energy_activations_pj"] == pytest.approx(4 * 4 + 3 * 4)  # read 4 inputs, write 3 outputs
    z = analyze(net, x, energy=replace(model, zero_skipping=True), progress=False)["0"]
    assert z["energy_compute_pj"] == pytest.approx(5.0)  # only the MACs of non-zero inputs
    assert z["energy_weights_pj"] == pytest.approx(5 * 8)


def test_sparse_weights_cut_weight_reads_by_density_plus_index_overhead():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 8, 3, padding=1, stride=2, bias=False)
    x = (torch.rand(4, 3, 9, 9) < 0.3).float()
    base = dict(weight_bits=8, index_bits=4, potential_per_sop=False, **FLAT)
    dense = analyze(Probe(conv), x, energy=EnergyModel(weight_format="dense", **base), progress=False)["syn"]
    with torch.no_grad():
        conv.weight[::2] = 0.0  # density 1/2, every input loses exactly half its fan-out
    for fmt, factor in (("csr", 0.5 * (1 + 4 / 8)), ("bitmask", 0.5 + 1 / 8), ("dense", 1.0)):
        sparse = analyze(Probe(conv), x, energy=EnergyModel(weight_format=fmt, **base), progress=False)["syn"]
        read = sparse["energy_weights_pj"] + sparse["energy_index_pj"]
        assert read == pytest.approx(factor * dense["energy_weights_pj"]), fmt
    # with Horowitz's size-dependent SRAM the smaller (pruned, compressed) memory is also cheaper per bit
    yan = EnergyModel.yan_neuromorphic()
    assert yan.weight_memory_bits(10_000, 1_000) < yan.weight_memory_bits(10_000, 10_000)
    big, small = 8 * 64 * 1024, 8 * 16 * 1024
    assert yan.bit_pj(small) < yan.bit_pj(big)


def test_lemaire_preset_memory_equals_spikingjelly_lemaire_profiler():
    from spikingjelly.activation_based.op_counter import LemaireEnergyConfig, LemaireEnergyProfiler

    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Linear(20, 12, bias=False),
        neuron.IFNode(v_threshold=0.5),
        layer.Linear(12, 6, bias=False),
        neuron.IFNode(v_threshold=0.5),
    )
    functional.set_step_mode(net, "m")
    x = (torch.rand(3, 1, 20) < 0.4).float()  # T=3, one sample (SpikingJelly sizes buffers per batch)
    prof = LemaireEnergyProfiler(config=LemaireEnergyConfig(strict=True))
    prof.bind_model(net)
    with torch.no_grad(), prof:
        net(x)
    functional.reset_net(net)
    ref = prof.get_report()
    r = analyze(net, (x, torch.zeros(1, dtype=torch.long)), energy="lemaire", progress=False)
    t = r.totals
    assert ref.counts["synop"] == pytest.approx(t["sops"])
    assert ref.breakdown_pj["params_pj"] == pytest.approx(t["energy_weights_pj"] + t["energy_index_pj"])
    assert ref.breakdown_pj["potential_pj"] == pytest.approx(t["energy_potential_pj"])
    assert ref.breakdown_pj["inout_pj"] == pytest.approx(t["energy_activations_pj"])
    assert ref.breakdown_pj["memory_pj"] == pytest.approx(t["energy_memory_pj"])
    assert t["energy_memory_pj"] > 0


# --------------------------------------------------------------------------- conventions
class _SEW(nn.Module):
    """Real-valued encoder + BN, a SEW ADD (integer counts into conv3), a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = layer.Conv2d(2, 8, 3, padding=1, bias=False)
        self.bn1 = layer.BatchNorm2d(8)
        self.sn1 = neuron.IFNode(v_threshold=0.3)
        self.conv2 = layer.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = layer.BatchNorm2d(8)
        self.sn2 = neuron.IFNode(v_threshold=0.3)
        self.conv3 = layer.Conv2d(8, 8, 3, stride=2, padding=1, bias=False)
        self.sn3 = neuron.IFNode(v_threshold=0.3)
        self.fc = layer.Linear(8 * 4 * 4, 5)
        functional.set_step_mode(self, "m")
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.fill_(0.5)
                m.running_mean.fill_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.sn1(self.bn1(self.conv1(x)))
        b = a + self.sn2(self.bn2(self.conv2(a)))
        return self.fc(self.sn3(self.conv3(b)).flatten(2))


def test_spikingjelly_convention_equals_its_op_counter_on_a_dense_net():
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, MACCounter, SynOpCounter

    torch.manual_seed(0)
    net = _SEW().eval()
    x = torch.rand(3, 4, 2, 8, 8)  # [T, N, C, H, W], real-valued pixels
    syn, mac = SynOpCounter(), MACCounter()
    with torch.no_grad(), DispatchCounterMode([syn, mac]):
        net(x)
    functional.reset_net(net)
    r = analyze(net, (x, torch.zeros(4, dtype=torch.long)), convention="spikingjelly", progress=False)
    assert r.meta["convention"] == "spikingjelly"
    assert r["conv3"]["input"] == "counts" and r["conv3"]["sops"] == 0  # SEW ADD output -> dense MACs
    assert syn.get_total() > 0 and mac.get_total() > 0
    assert r.totals["sops"] * 4 == pytest.approx(syn.get_total(), rel=1e-12)
    assert r.totals["macs"] * 4 == pytest.approx(mac.get_total(), rel=1e-12)
    counts = mac.get_counts()
    for name in ("conv1", "bn1", "conv3"):
        assert r[name]["macs"] * 4 == pytest.approx(sum(counts[f"_SEW.{name}"].values()), rel=1e-12)
    ours = analyze(net, (x, torch.zeros(4, dtype=torch.long)), progress=False)
    assert ours["conv3"]["sops"] > 0 and ours["conv3"]["macs"] == 0 and ours["bn1"]["macs"] is None


def test_syops_convention_rules():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[:2] = 0.0  # zero weights are counted anyway
    x = (torch.rand(5, 2, 6, 6) < 0.3).float()
    r = analyze(Probe(conv), x, convention="syops", progress=False)["syn"]
    dense_macs = 36 * 4 * 2 * 9
    assert r["sops"] == pytest.approx(dense_macs * x.mean().item())  # dense ops x mean input rate
    counts = x * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = analyze(Probe(conv), counts, convention="syops", progress=False)["syn"]
    assert c["sops"] == 0 and c["macs"] == dense_macs  # integer (non-binary) input: all dense MACs

    class Tiny(nn.Module):  # encoder runs once per sample, its output repeated T times
        def __init__(self) -> None:
            super().__init__()
            self.T = 3
            self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
            self.sn = neuron.IFNode(step_mode="m")

        def forward(self, x):
            return self.sn(self.conv1(x).unsqueeze(0).repeat(self.T, 1, 1, 1, 1))

    ours = analyze(Tiny(), torch.rand(2, 1, 5, 5), progress=False)["conv1"]["macs"]
    syops = analyze(Tiny(), torch.rand(2, 1, 5, 5), convention="syops", progress=False)["conv1"]["macs"]
    assert ours == 25 * 36 and syops == 3 * ours
    with pytest.raises(ValueError, match="analyze: convention: unknown convention 'sj'"):
        analyze(Tiny(), torch.rand(2, 1, 5, 5), convention="sj")


# --------------------------------------------------------------------------- baselines and break-even
def _pair(rate: float, seed: int = 0):
    torch.manual_seed(seed)
    lin = nn.Linear(32, 16, bias=False)
    snn = Probe(lin)
    snn.sn = neuron.IFNode(v_threshold=0.1)  # fires: the overall rate is measured

    class Twin(nn.Module):  # the ANN twin: same layer name, ReLU instead of the spiking neuron
        def __init__(self) -> None:
            super().__init__()
            self.syn = lin

        def forward(self, x):
            return torch.relu(self.syn(x))

    ann = Twin()
    x = (torch.rand(64, 32) < rate).float()
    return snn, ann, x


@pytest.mark.parametrize("report_pair", [compare, ann_baselines, break_even])
def test_report_pairs_are_keyword_only(report_pair):
    snn, ann, x = _pair(0.25)
    rs = analyze(snn, x, time_steps=4, progress=False)
    ra = analyze(ann, torch.relu(torch.randn(64, 32)), progress=False)
    with pytest.raises(TypeError, match="positional argument"):
        report_pair(ra, rs)
    with pytest.raises(TypeError, match="positional argument"):
        report_pair(rs, ann=ra)
    report_pair(ann=ra, snn=rs)


def test_price_row_hand_values():
    model = EnergyModel(e_mac_pj=4.0, e_ac_pj=0.5)
    row = {"kind": "conv", "sops": 100.0, "macs": 10.0}
    price_row(row, model, True, 4)
    assert row["energy_pj"] == row["energy_compute_pj"] == 100 * 0.5 + 10 * 4.0  # 90 pJ
    assert row["energy_pj_per_step"] == 90.0 / 4 and row["energy_memory_pj"] == 0.0
    for other in ({"kind": "other"}, {"kind": "neuron"}, {"kind": "norm", "macs": None}):
        price_row(other, model, True, 4)  # no energy applies: compute-only model, no MACs
        assert other["energy_pj"] is None and other["energy_compute_pj"] is None


@pytest.mark.parametrize("preset", ["yan-accelerator", "yan-neuromorphic", "lemaire"])
def test_break_even_rate_equalises_snn_and_quantized_ann(preset):
    snn, ann, x = _pair(0.25)
    rs = analyze(snn, x, time_steps=4, energy=preset, progress=False)
    ra = analyze(ann, torch.relu(torch.randn(64, 32)), progress=False)
    be = break_even(ann=ra, snn=rs, energy=preset, weight_bits=8)
    o = be["overall"]
    assert o["measured_rate"] == rs.totals["firing_rate"]
    assert o["snn_energy_pj"] == pytest.approx(rs.totals["energy_pj"])
    base = compare(ann=ra, snn=rs, energy=preset).baselines
    assert o["qann_energy_pj"] == pytest.approx(base["ann_quantized"]["energy_pj"])
    assert base["activation_bits"] == 3  # ceil(log2(4 + 1))
    assert o["measured_rate"] > 0 and 0 < o["break_even_rate"] < math.inf
    assert energy_at_rate(rs, o["break_even_rate"], preset) == pytest.approx(o["qann_energy_pj"])
    assert energy_at_rate(rs, o["measured_rate"], preset) == pytest.approx(rs.totals["energy_pj"])
    assert o["wins"] == (o["measured_rate"] < o["break_even_rate"])
    layer_row = be["layers"][0]
    assert layer_row["name"] == "syn"
    r_star = layer_row["break_even_rate"]
    assert r_star is not None and r_star > 0
    # the linear model of the SNN energy is exact for a linear layer: run it at another input rate
    snn2, _, x2 = _pair(0.5, seed=0)
    r2 = analyze(snn2, x2, time_steps=4, energy=preset, progress=False)
    assert r2["syn"]["energy_pj"] == pytest.approx(
        layer_row["snn_energy_zero_pj"]
        + (layer_row["snn_energy_pj"] - layer_row["snn_energy_zero_pj"])
        * r2["syn"]["firing_rate"]
        / layer_row["measured_rate"]
    )
    # at the break-even rate the layer costs what the quantized ANN layer costs
    e_star = (
        layer_row["snn_energy_zero_pj"]
        + (layer_row["snn_energy_pj"] - layer_row["snn_energy_zero_pj"]) * r_star / layer_row["measured_rate"]
    )
    assert e_star == pytest.approx(layer_row["qann_energy_pj"])
    assert layer_row["wins"] == (layer_row["measured_rate"] < r_star)


def test_compare_prints_winner_and_factor():
    snn, ann, x = _pair(0.1)
    rs = analyze(snn, x, time_steps=2, progress=False)
    ra = analyze(ann, torch.relu(torch.randn(64, 32)), progress=False)
    c = compare(ann=ra, snn=rs, energy="yan-accelerator", weight_bits=4)
    b = c.baselines
    assert b["weight_bits"] == 4 and b["activation_bits"] == 2
    q = b["ann_quantized"]
    expected = "SNN" if b["snn"]["energy_pj"] < q["energy_pj"] else "ANN"
    factor = max(b["snn"]["energy_pj"], q["energy_pj"]) / min(b["snn"]["energy_pj"], q["energy_pj"])
    assert q["verdict"] == f"{expected} wins by {factor:.2f}x"
    text = str(c)
    assert q["verdict"] in text and "ANN twin, FP32" in text and "break-even firing rate" in text
    for key in ("snn", "ann_fp32", "ann_quantized"):
        e = b[key]
        assert e["energy_pj"] == pytest.approx(e["energy_compute_pj"] + e["energy_memory_pj"])
    # the quantized ANN's compute: MACs of non-zero inputs x (2x4-bit multiply + 16-bit add)
    ann_q = ra.with_energy(
        replace(EnergyModel.yan_accelerator(), e_mac_pj=mult_pj(2, 4) + add_pj(16), zero_skipping=True)
    )
    assert q["energy_compute_pj"] == pytest.approx(ann_q.totals["energy_compute_pj"])
    assert q["energy_compute_pj"] == pytest.approx(
        ra["syn"]["access"]["nonzero_input_macs"] * (mult_pj(2, 4) + add_pj(16))
    )
    assert c.to_dict()["break_even"]["overall"]["measured_rate"] == rs.totals["firing_rate"]
    assert compare(ann=ra, snn=rs).baselines is None  # plain comparison unchanged


# --------------------------------------------------------------------------- analyze inputs
def _multi_step_net() -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(layer.Flatten(), layer.Linear(2 * 4 * 4, 6), neuron.IFNode(v_threshold=0.2))
    functional.set_step_mode(net, "m")
    return net


def test_bare_time_first_tensor_counts_n_samples():
    net = _multi_step_net()
    x = (torch.rand(3, 5, 2, 4, 4) < 0.4).float()  # [T=3, N=5, ...]
    bare = analyze(net, x, progress=False)
    labelled = analyze(net, (x, torch.zeros(5, dtype=torch.long)), progress=False)
    assert bare.totals["samples"] == 5
    assert bare.totals["sops"] == pytest.approx(labelled.totals["sops"])
    assert analyze(net, [x, x], progress=False).totals["samples"] == 10  # two bare batches

    class Looped(nn.Module):  # single-step neurons, the model loops over the time-first input
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 4)
            self.sn = neuron.IFNode()

        def forward(self, x):
            return sum(self.sn(self.fc(x[t])) for t in range(x.shape[0]))

    assert analyze(Looped(), torch.rand(3, 7, 6), progress=False).totals["samples"] == 7

    class Merged(nn.Module):  # the neurons see T*N merged: the input shape says nothing reliable
        def __init__(self) -> None:
            super().__init__()
            self.sn = neuron.IFNode()

        def forward(self, x):
            return self.sn(x.flatten(0, 1))

    with pytest.raises(
        ValueError, match=r"cannot tell the number of samples .* pass \(input, target\) pairs"
    ):
        analyze(Merged(), torch.rand(3, 5, 6), progress=False)


@pytest.mark.parametrize(
    "target",
    [
        torch.zeros(5, 10),  # one-hot / soft labels
        torch.rand(5),  # float regression targets
        torch.zeros(5, dtype=torch.long),  # class labels (as before)
    ],
)
def test_input_target_pair_with_any_target(target):
    net = _multi_step_net()
    x = (torch.rand(3, 5, 2, 4, 4) < 0.4).float()
    r = analyze(net, (x, target), progress=False)
    assert r.meta["batches"] == 1 and r.totals["samples"] == 5
    static = analyze(nn.Sequential(nn.Linear(6, 3)), (torch.rand(5, 6), target), progress=False)
    assert static.meta["batches"] == 1 and static.totals["samples"] == 5


def test_zero_sample_batch_is_a_clear_error():
    net = _multi_step_net()
    with pytest.raises(
        ValueError, match=r"^analyze: data: a batch has no samples \(input shape \(0, 2, 4, 4\)\)"
    ):
        analyze(net, torch.zeros(0, 2, 4, 4), progress=False)
    empty = (torch.zeros(3, 0, 2, 4, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="a batch has no samples"):
        analyze(net, [empty], progress=False)


def test_integer_pixels_at_the_first_layer_warn():
    conv = nn.Conv2d(1, 2, 3, bias=False)
    pixels = torch.randint(0, 256, (2, 1, 6, 6)).float()
    with pytest.warns(
        UserWarning, match=r"first layer 'syn' receives integers above 1 .* normalise the input"
    ):
        analyze(Probe(conv), pixels, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        analyze(Probe(conv), pixels / 255, progress=False)  # normalised: real-valued MACs, no warning
        analyze(Probe(conv), (pixels > 128).float(), progress=False)  # binary spikes: no warning


def test_energy_figure_pruned_twin_scales_by_layer_density():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_energy_figure import pruned_twin

    snn, ann, x = _pair(0.2)
    ra = analyze(ann, torch.relu(torch.randn(64, 32)), energy="yan-accelerator", progress=False)
    with torch.no_grad():
        snn.syn.weight[::4] = 0.0  # a quarter of the output rows pruned: density 3/4
    rs = analyze(snn, x, time_steps=2, progress=False)
    twin = pruned_twin(ra, rs)
    assert twin["syn"]["macs"] == pytest.approx(0.75 * ra["syn"]["macs"])
    assert twin["syn"]["access"]["nonzero_input_macs"] == pytest.approx(
        0.75 * ra["syn"]["access"]["nonzero_input_macs"]
    )
    assert twin["syn"]["weight_nonzero"] == 384
    assert twin.totals["energy_pj"] < ra.totals["energy_pj"]
    assert twin.with_energy("yan-accelerator").totals["energy_pj"] == pytest.approx(twin.totals["energy_pj"])
