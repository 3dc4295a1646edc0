"""NIR export (snnprune.export_nir) and its re-import in SpikingJelly, snnTorch and Norse (verify_nir)."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("nir")
pytest.importorskip("nirtorch")

import nir
from spikingjelly.activation_based import functional, layer, neuron

import models
import snnprune
from snnprune.interop import NIRExportError, model_nonzeros, nir_nonzeros
from tests.helpers import expect_exit, load_script, prune_half, tiny_lats_run

pytestmark = pytest.mark.usefixtures("nir_time_limit")  # a graph that never finishes fails instead


def _sew(T: int = 2, seed: int = 0, bias: tuple[float, float] = (0.0, 0.5), **kw) -> nn.Module:
    """A width-4 SEW ResNet-18 whose neurons fire in every stage (BN gains raised), half of the weights
    of every conv set to exact zeros by magnitude."""
    torch.manual_seed(seed)
    kw.setdefault("stem", "small")
    m = models.create_model("sew_resnet18", num_classes=10, in_channels=1, T=T, width=4, **kw)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(1.0, 3.0)
                mod.bias.uniform_(*bias)
            if isinstance(mod, nn.Conv2d):
                w = mod.weight
                w[w.abs() < w.abs().median()] = 0.0
    return m.eval()


def _data(n: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2, torch.randint(0, 10, (n,), generator=g)


HELPED = ("spikingjelly+snnprune", "snntorch+snnprune", "norse+snnprune")


def _rows(model: nn.Module, graph_or_path, data) -> dict[str, dict]:
    """Every row but Sinabs', spyx's and Rockpool's (each runs in its own environment, as
    scripts/nir_importers.py does)."""
    frameworks = tuple(f for f in snnprune.interop.FRAMEWORKS if f not in ("sinabs", "spyx", "rockpool"))
    rows = snnprune.verify_nir(graph_or_path, model, data, frameworks=frameworks)
    assert [r["framework"] for r in rows] == ["source model", *frameworks]
    return {r["framework"]: r for r in rows[1:]}


def _spike_total(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Spikes per neuron layer of the source model (so a 0-mismatch result is not a silent network)."""
    out: dict[str, float] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: out.__setitem__(n, float(o.sum())))
        for n, m in model.named_modules()
        if isinstance(m, neuron.BaseNode)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    functional.reset_net(model)
    return out


def _top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        pred = model(x).argmax(1)
    functional.reset_net(model)
    return 100.0 * float((pred == y).float().mean())


def test_import_snnprune_imports_no_nir():
    code = "import sys, snnprune; snnprune.sparsity; print(any(m in sys.modules for m in ('nir', 'nirtorch', 'snntorch', 'norse')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_if_add_default_model_round_trip(tmp_path):
    """The default run's kind of model (IF, ADD, small stem, our IF class): SpikingJelly's public importer
    and Norse's converters on nirtorch's executor give the same spikes and top-1; Norse's public importer
    runs the residual graph in the wrong order and snnTorch's refuses IF (r != 1): rows with reasons."""
    m = _sew(neuron_backend="auto")  # snnprune.neuron.IFNode: SpikingJelly's exporter fails on it
    assert isinstance(m.sn1, snnprune.neuron.IFNode)
    x, y = _data()
    fired = _spike_total(m, x)
    assert fired["layer4.1.sn2"] > 0 and fired["sn1"] > 0
    path = tmp_path / "sew.nir"
    graph = snnprune.export_nir(m, x[:2], path)
    assert path.exists()
    assert nir_nonzeros(nir.read(str(path))) == model_nonzeros(m) == nir_nonzeros(graph)
    assert model_nonzeros(m) < sum(
        mod.weight.numel() for mod in m.modules() if isinstance(mod, nn.Conv2d | nn.Linear)
    )
    assert graph.metadata["T"] == 2 and graph.metadata["dt"] == 1e-4
    assert "mean" in graph.metadata["output_rule"]
    rows = _rows(m, path, (x, y))
    for fw in ("spikingjelly", "spikingjelly+snnprune", "norse+snnprune"):
        assert rows[fw]["loaded"] and rows[fw]["reason"] is None, rows[fw]
        assert rows[fw]["spike_mismatches"] == 0
        assert rows[fw]["max_abs_diff"] < 1e-5
        assert rows[fw]["top1"] == _top1(m, x, y)
    assert rows["spikingjelly"]["added"] == [] and "nirtorch executor" in rows["norse+snnprune"]["added"]
    assert not rows["snntorch"]["loaded"] and "r != 1" in rows["snntorch"]["reason"]
    assert rows["norse"]["spike_mismatches"] is None and rows["norse"]["reason"].startswith("run:")


@pytest.mark.parametrize(
    "kw",
    [
        {"neuron": "lif"},
        {"neuron": "plif"},
        {"neuron": "lif", "cnf": "AND"},
        {"neuron": "lif", "cnf": "IAND"},
    ],
)
def test_lif_and_connect_functions_round_trip_in_all_three(kw):
    m = _sew(T=4, bias=(1.0, 2.0) if kw.get("cnf") == "AND" else (0.0, 0.5), **kw)
    x, y = _data()
    fired = _spike_total(m, x)
    # the neurons after the first blocks see their connect function's output: it is not all zeros
    assert fired["layer1.1.sn1"] > 0 and fired["layer2.0.sn1"] > 0 and fired["layer2.0.downsample_sn"] > 0, (
        fired
    )
    graph = snnprune.export_nir(m, x[:2])
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert "LIF" in kinds and "IF" not in kinds
    if kw.get("cnf") in ("AND", "IAND"):
        assert "Threshold" in kinds  # AND = H(a + b - 1.5), IAND = H(b - a - 0.5)
    rows = _rows(m, graph, (x, y))
    exact = HELPED if "cnf" in kw else ("spikingjelly", "snntorch", *HELPED)
    for fw in exact:
        r = rows[fw]
        assert r["loaded"] and r["reason"] is None, r
        assert r["spike_mismatches"] == 0, fw
        assert r["max_abs_diff"] < 1e-5, fw
    # no converter for Threshold (AND, IAND), else the residual graph run depth-first by nirtorch.load
    assert rows["norse"]["spike_mismatches"] is None and rows["norse"]["reason"].startswith(("load:", "run:"))
    if "cnf" in kw:
        assert "Threshold" in rows["spikingjelly+snnprune"]["added"]  # the importer lacks it
        assert not rows["spikingjelly"]["loaded"] and "node_map" in rows["spikingjelly"]["reason"]


def test_plif_exports_its_learned_tau():
    m = _sew(neuron="plif")
    with torch.no_grad():
        m.sn1.w.fill_(0.3)
    graph = snnprune.export_nir(m, _data()[0][:1])
    tau = 1.0 / torch.sigmoid(torch.tensor(0.3, dtype=torch.float64)).item()
    assert graph.nodes["sn1"].tau.flat[0] == pytest.approx(tau * 1e-4, rel=1e-6)


def test_compacted_filter_pruned_round_trip():
    torch.manual_seed(0)
    m = models.create_model(
        "sew_resnet18", num_classes=10, in_channels=1, T=2, stem="small", width=8, neuron="lif"
    )
    x, y = _data(4)
    prune_half(m, x)
    m.eval()
    small = snnprune.compact(m, x[:2])
    graph = snnprune.export_nir(small, x[:2])
    assert graph.nodes["conv1"].weight.shape[0] == 4  # half of the 8 stem channels
    assert nir_nonzeros(graph) == model_nonzeros(small)
    rows = _rows(small, graph, (x, y))
    for fw in ("spikingjelly", "snntorch", *HELPED):
        r = rows[fw]
        assert r["loaded"] and r["spike_mismatches"] == 0, (fw, r)
        assert r["max_abs_diff"] < 1e-5
    portable = snnprune.export_nir(small, x[:2], portable=True)
    assert nir_nonzeros(portable) == model_nonzeros(small)
    (r,) = snnprune.verify_nir(portable, small, (x, y), frameworks=("spikingjelly",))[1:]
    assert r["added"] == [] and r["spike_mismatches"] == 0 and r["max_abs_diff"] < 1e-5, r


def test_imagenet_stem_max_pool_is_sum_pool_and_threshold():
    m = _sew(stem="imagenet")
    x, y = _data()
    graph = snnprune.export_nir(m, x[:2])
    assert isinstance(graph.nodes["maxpool"], nir.SumPool2d)
    assert isinstance(graph.nodes["maxpool_or"], nir.Threshold)
    rows = _rows(m, graph, (x, y))
    for fw in ("spikingjelly+snnprune", "norse+snnprune"):
        assert rows[fw]["spike_mismatches"] == 0 and rows[fw]["max_abs_diff"] < 1e-5, rows[fw]


def test_bn_folded_in_float64_and_head_without_flatten():
    """Hand check on a two-layer net: conv + BN + IF -> adaptive avg-pool -> flatten -> fc."""
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = 0.0
        bn.running_mean.copy_(torch.tensor([0.1, -0.2]))
        bn.running_var.copy_(torch.tensor([0.5, 2.0]))
        bn.weight.copy_(torch.tensor([1.5, 0.7]))
        bn.bias.copy_(torch.tensor([0.3, -0.1]))
    net = nn.Sequential(
        conv, bn, neuron.IFNode(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)
    ).eval()
    graph = snnprune.export_nir(net, torch.rand(1, 1, 6, 6), T=3)
    c = graph.nodes["0"]
    scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
    expect_w = (conv.weight.double() * scale.view(-1, 1, 1, 1)).float()
    expect_b = (bn.bias.double() - bn.running_mean.double() * scale).float()
    assert torch.equal(torch.from_numpy(c.weight), expect_w)
    assert torch.equal(torch.from_numpy(c.bias), expect_b)
    assert c.weight[0, 0, 0, 0] == 0.0
    assert "1" not in graph.nodes  # BN has no node of its own
    assert isinstance(graph.nodes["3"], nir.AvgPool2d) and list(graph.nodes["3"].kernel_size) == [4, 4]
    assert isinstance(graph.nodes["5"], nir.Conv2d) and graph.nodes["5"].weight.shape == (3, 2, 1, 1)
    assert not any(isinstance(n, nir.Flatten) for n in graph.nodes.values())
    assert ("0", "2") in graph.edges and ("2", "3") in graph.edges and ("3", "5") in graph.edges


def test_add_becomes_two_edges():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.sa, self.conv, self.sb = neuron.IFNode(), nn.Conv2d(2, 2, 1), neuron.IFNode()

        def forward(self, x):
            a = self.sa(x)
            return self.sb(self.conv(a)) + a

    graph = snnprune.export_nir(Res(), torch.rand(1, 2, 3, 3), T=1)
    assert ("sb", "output") in graph.edges and ("sa", "output") in graph.edges


def test_add_of_one_source_to_itself_is_refused():
    """``a + a`` would be one NIR edge (edges cannot carry a weight of 2): refused, naming the add."""

    class Double(nn.Module):
        def __init__(self):
            super().__init__()
            self.sa, self.conv, self.sb = neuron.IFNode(), nn.Conv2d(2, 2, 1), neuron.IFNode()

        def forward(self, x):
            a = self.sa(x)
            return self.sb(self.conv(a + a))

    with pytest.raises(NIRExportError, match=r"add 'add': both terms share the source \['sa'\]"):
        snnprune.export_nir(Double(), torch.rand(1, 2, 3, 3), T=1)


@pytest.mark.parametrize(
    ("node", "match"),
    [
        (neuron.IFNode(v_reset=None), "soft reset"),
        (neuron.IFNode(v_reset=-0.5), "v_reset=-0.5"),
        (neuron.CUBALIFNode(), "CUBALIFNode"),
    ],
)
def test_neurons_nir_cannot_express_raise_naming_the_layer(node, match):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), node)
    with pytest.raises(NIRExportError, match=match) as info:
        snnprune.export_nir(net, torch.rand(1, 1, 5, 5), T=2)
    assert "'1'" in str(info.value)


def test_custom_operation_raises_naming_it():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.sn = neuron.IFNode()

        def forward(self, x):
            return torch.sigmoid(self.sn(x))

    with pytest.raises(NIRExportError, match="sigmoid"):
        snnprune.export_nir(Odd(), torch.rand(1, 3), T=1)


def test_sew_forward_without_protocol_fails_clearly_and_multistep_bn_is_folded():
    """The encode branch (x.dim() == 4) cannot be traced: without nir_step the export says so."""
    m = _sew()
    m.__class__ = type("NoStep", (models.sew_resnet.SEWResNet,), {"nir_step": None})
    with pytest.raises(Exception, match=r"dim|symbolically traced|nir_step"):
        snnprune.export_nir(m, _data()[0][:1])
    net = nn.Sequential(layer.Conv2d(1, 2, 3), layer.BatchNorm2d(2), neuron.IFNode()).eval()
    functional.set_step_mode(net, "m")
    graph = snnprune.export_nir(net, torch.rand(1, 1, 5, 5), T=2)
    assert [type(n).__name__ for n in graph.nodes.values()] == ["Input", "Conv2d", "IF", "Output"]


def test_bad_inputs():
    m = _sew()
    x = _data()[0][:1]
    with pytest.raises(ValueError, match="dt"):
        snnprune.export_nir(m, x, dt=0)
    with pytest.raises(ValueError, match="T must be"):
        snnprune.export_nir(nn.Sequential(nn.Conv2d(1, 1, 1), neuron.IFNode()), x)
    snnprune.sparsify(m, "lats", final_threshold=0.1, total_steps=1)
    with pytest.raises(ValueError, match="finalize"):
        snnprune.export_nir(m, x)
    with pytest.raises(ValueError, match="frameworks"):
        snnprune.verify_nir(nir.NIRGraph(nodes={}, edges=[]), m, x, frameworks=("lava",))


@pytest.mark.parametrize(
    ("argv", "option"),
    [(["{run}", "--images", "0"], "--images"), (["{run}", "--dt", "-1"], "--dt"), (["{run}/missing"], "RUN")],
)
def test_export_script_bad_options_exit_2(tmp_path, capsys, argv, option):
    code, err = expect_exit(load_script("export_nir"), [a.format(run=tmp_path) for a in argv], capsys)
    assert code == 2 and err.startswith(f"error: {option}")


def test_threshold_ties_follow_spikingjelly_rule():
    """v = θ exactly: SpikingJelly (and the source model) spike, Norse spikes on v > θ; verify_nir moves
    the threshold one float32 step down for Norse and snnTorch, which makes the two rules agree."""

    class Tie(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.sn = nn.Linear(2, 2, bias=False), neuron.IFNode()
            with torch.no_grad():
                self.fc.weight.copy_(torch.tensor([[0.5, 0.5], [0.25, 0.25]]))

        def forward(self, x):
            return self.sn(self.fc(x))

    m = Tie().eval()
    x = torch.ones(1, 2)  # v = 1.0 exactly for neuron 0 at step 1; 0.5 and 1.0 for neuron 1
    graph = snnprune.export_nir(m, x, T=4)
    fws = ("spikingjelly", "norse", "norse+snnprune")
    rows = {r["framework"]: r for r in snnprune.verify_nir(graph, m, x, frameworks=fws)}
    assert rows["spikingjelly"]["spike_mismatches"] == 0 and rows["norse+snnprune"]["spike_mismatches"] == 0
    assert rows["norse"]["spike_mismatches"] > 0  # Norse's public importer spikes on v > θ
    assert any("step down" in a for a in rows["norse+snnprune"]["added"])
    plain = {r["framework"]: r for r in snnprune.verify_nir(graph, m, x, frameworks=("norse",))}
    assert plain["source model"]["spike_mismatches"] == 0


def _root_record(path: str, msg: str) -> logging.LogRecord:
    return logging.LogRecord("root", logging.WARNING, path, 1, msg, None, None)


def test_verify_rows_progress_and_no_framework_warning(tmp_path, monkeypatch, capsys, caplog):
    """The frameworks' deprecation warnings stay inside verify_nir (a warning would be an error here); the
    bars show with progress=True only; the table explains the source-model row."""
    from snnprune.interop import nir_verify

    def warning_loader(graph, dt):
        warnings.warn(
            "`torch.jit.script` is deprecated. Please switch to `torch.compile`", FutureWarning, stacklevel=1
        )
        warnings.warn_explicit("old API", DeprecationWarning, "nirtorch/graph.py", 1, module="nirtorch.graph")
        logging.getLogger().handle(
            _root_record("/site-packages/nirtorch/graph_executor.py", "Multiple inputs")
        )
        return nir_verify._load_spikingjelly(graph, dt)

    monkeypatch.setitem(nir_verify._LOADERS, "spikingjelly", warning_loader)
    m, (x, y) = _sew(), _data(n=2)
    path = tmp_path / "sew.nir"
    snnprune.export_nir(m, x, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for progress in (False, True):
            rows = snnprune.verify_nir(path, m, [(x, y)], frameworks=("spikingjelly",), progress=progress)
            assert rows[1]["loaded"] and rows[1]["reason"] is None and rows[1]["spike_mismatches"] == 0
            assert ("frameworks" in capsys.readouterr().err) is progress
    table = snnprune.interop.format_rows(rows)
    assert "source model" in table and "BN folding" in table and "threshold tie" in table
    # nirtorch's notes on the root logger stay inside verify_nir; the filter is gone afterwards
    assert not [r for r in caplog.records if r.getMessage() == "Multiple inputs"]
    logging.getLogger().handle(_root_record("/site-packages/nirtorch/graph_executor.py", "after"))
    assert [r.getMessage() for r in caplog.records] == ["after"]


@pytest.mark.slow
def test_export_script_end_to_end_on_a_tiny_run(sew, tmp_path, capsys):
    summary = tiny_lats_run(sew, tmp_path)
    capsys.readouterr()
    rows = load_script("export_nir").main([summary["run_dir"], "--images", "20", "--batch-size", "10"])
    out = capsys.readouterr().out
    assert (tmp_path / "r" / "model.nir").is_file()
    by = {r["framework"]: r for r in rows}
    assert list(by) == ["source model", *snnprune.interop.FRAMEWORKS]
    assert by["spikingjelly"]["spike_mismatches"] == 0 and by["norse+snnprune"]["spike_mismatches"] == 0
    (line,) = [x for x in out.splitlines() if x.startswith("non-zero weights")]
    file_nz, model_nz = line.removeprefix("non-zero weights: file ").split(", model ")
    assert file_nz == model_nz
    assert "spikingjelly" in out and "r != 1 not supported" in out
    progress = ", ".join(["source model", *snnprune.interop.FRAMEWORKS])
    assert f"verifying on 20 images: {progress}" in out  # a log's progress line
    assert "before vs after BN folding" in out


def _plain(hidden: bool = False) -> nn.Module:
    """A plain Conv-BN-IF-Flatten-Linear net (optionally with an IF-Linear hidden layer after the flatten)
    whose first layer fires (BN gains raised) and half of whose conv weights are zeros."""
    torch.manual_seed(0)
    head = [nn.Linear(4 * 8 * 8, 16), neuron.IFNode(), nn.Linear(16, 10)] if hidden else [nn.Linear(256, 10)]
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), neuron.IFNode(), nn.Flatten(), *head
    )
    with torch.no_grad():
        net[1].weight.uniform_(1.0, 3.0)
        net[1].running_mean.uniform_(-0.2, 0.2)
        w = net[0].weight
        w[w.abs() < w.abs().median()] = 0.0
        if hidden:
            net[4].weight.mul_(4.0)
    return net.eval()


@pytest.mark.parametrize("hidden", [False, True])
def test_plain_conv_net_flatten_linear_is_batch_safe(hidden):
    """flatten + Linear becomes a Conv2d whose kernel is the whole map: Norse used to apply the exported
    Flatten to the batch dimension (`mat1 and mat2 shapes cannot be multiplied`)."""
    net = _plain(hidden)
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(3, 1, 8, 8, generator=g) * 2, torch.randint(0, 10, (3,), generator=g)
    fired = _spike_total(net, x)
    assert all(v > 0 for v in fired.values()), fired
    graph = snnprune.export_nir(net, x[:2], T=3)
    assert not any(isinstance(n, nir.Flatten) for n in graph.nodes.values())
    fc = graph.nodes["4"]
    assert isinstance(fc, nir.Conv2d) and fc.weight.shape == (16 if hidden else 10, 4, 8, 8)
    # the kernel is the Linear's weight, row-major over (C, H, W) like torch.flatten
    assert torch.equal(torch.from_numpy(fc.weight).flatten(1), net[4].weight.detach())
    assert nir_nonzeros(graph) == model_nonzeros(net)
    fws = ("spikingjelly", "norse", "norse+snnprune")
    rows = {r["framework"]: r for r in snnprune.verify_nir(graph, net, (x, y), frameworks=fws)}
    for fw in fws:  # a plain chain: Norse's public importer runs it too
        assert rows[fw]["loaded"] and rows[fw]["reason"] is None, rows[fw]
        assert rows[fw]["spike_mismatches"] == 0 and rows[fw]["max_abs_diff"] < 1e-5, rows[fw]
        assert rows[fw]["top1"] == rows["source model"]["top1"]


@pytest.mark.parametrize("case", ["plain", "sew_if", "sew_lif"])
def test_portable_export_runs_in_public_importers(tmp_path, case):
    """portable=True: time in steps (r = 1, tau in steps), average pooling as SumPool2d with 1/k² in the
    next weights, no v_reset in the file; SpikingJelly's public importer (and Norse's, on a chain) gives
    the source spikes with no converter of ours, and the file keeps the model's non-zeros."""
    import h5py

    if case == "plain":
        m, fws = _plain(hidden=True), ("spikingjelly", "norse")
        g = torch.Generator().manual_seed(3)
        x, y = torch.rand(3, 1, 8, 8, generator=g) * 2, torch.randint(0, 10, (3,), generator=g)
    else:
        m, fws = _sew(neuron_backend="auto") if case == "sew_if" else _sew(neuron="lif"), ("spikingjelly",)
        x, y = _data()
    path = tmp_path / "p.nir"
    graph = snnprune.export_nir(m, x[:2], path, T=2, portable=True)
    assert graph.metadata["dt"] == 1.0 and "steps" in graph.metadata["time"]
    assert nir_nonzeros(nir.read(str(path))) == model_nonzeros(m) == nir_nonzeros(graph)
    with h5py.File(path) as f:
        assert not any("v_reset" in node for node in f["node"]["nodes"].values())
    neurons = [n for n in graph.nodes.values() if isinstance(n, (nir.IF, nir.LIF))]
    assert neurons and all(np.all(n.r == 1.0) for n in neurons)
    if case == "sew_lif":
        assert np.all(graph.nodes["sn1"].tau == m.sn1.tau)  # steps, not seconds
    if case != "plain":
        assert not any(isinstance(n, nir.AvgPool2d) for n in graph.nodes.values())
        pool, fc = graph.nodes["avgpool"], graph.nodes["fc"]
        assert isinstance(pool, nir.SumPool2d) and list(pool.kernel_size) == [4, 4]
        k2 = 16.0  # the 4x4 map of the last stage: the fc weights carry the 1/16 of the mean
        assert torch.equal(torch.from_numpy(fc.weight).flatten(1), (m.fc.weight.double() / k2).float())
    rows = {r["framework"]: r for r in snnprune.verify_nir(path, m, (x, y), frameworks=fws)}
    for fw in fws:
        r = rows[fw]
        assert r["loaded"] and r["reason"] is None and r["added"] == [], r
        assert r["spike_mismatches"] == 0 and r["max_abs_diff"] < 1e-5, r
        assert r["top1"] == rows["source model"]["top1"]


class _Residual(nn.Module):
    """conv-BN-IF, then a conv-BN-IF branch summed with its skip, average pool, Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0, self.bn0, self.sn0 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), neuron.IFNode()
        self.conv1, self.bn1, self.sn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), neuron.IFNode()
        self.pool, self.fc = nn.AvgPool2d(2), nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        a = self.sn0(self.bn0(self.conv0(x)))
        return self.fc(torch.flatten(self.pool(self.sn1(self.bn1(self.conv1(a))) + a), 1))


def test_portable_residual_runs_in_norse_unless_two_branches_meet():
    """Norse's public importer runs nodes in nirtorch.load's depth-first order: a residual block whose skip
    edge follows its branch runs in order (0 mismatches, portable: its SumPool2d); a SEW downsample block,
    two branches each with nodes meeting in one sum, does not, and the row says where."""
    from snnprune.interop.nir_verify import depth_first_misorder

    torch.manual_seed(0)
    net = _Residual()
    with torch.no_grad():
        for bn in (net.bn0, net.bn1):
            bn.weight.uniform_(1.0, 3.0)
            bn.bias.uniform_(0.0, 0.5)
    net.eval()
    x, y = torch.rand(5, 1, 8, 8) * 2, torch.randint(0, 10, (5,))
    assert all(v > 0 for v in _spike_total(net, x).values())
    graph = snnprune.export_nir(net, x[:2], T=3, portable=True)
    assert depth_first_misorder(graph) is None
    (row,) = snnprune.verify_nir(graph, net, (x, y), frameworks=("norse",))[1:]
    assert row["reason"] is None and row["spike_mismatches"] == 0 and row["max_abs_diff"] < 1e-5, row
    sew, (x, y) = _sew(neuron_backend="auto"), _data()
    graph = snnprune.export_nir(sew, x[:2], T=2, portable=True)
    where = "depth-first order runs 'layer2_1_conv1' before its input 'layer2_0_downsample_sn'"
    assert where in depth_first_misorder(graph)
    (row,) = snnprune.verify_nir(graph, sew, (x, y), frameworks=("norse",))[1:]
    assert row["spike_mismatches"] is None and where in row["reason"], row


@pytest.mark.parametrize(
    ("edges", "where"),
    [
        ([("input", "a"), ("a", "b"), ("b", "c"), ("a", "c"), ("c", "output")], None),  # skip after branch
        ([("input", "a"), ("a", "c"), ("a", "b"), ("b", "c"), ("c", "output")], "'c' before its input 'b'"),
        (  # two branches with a node each: wrong in either order
            [("input", "a"), ("a", "b"), ("b", "c"), ("a", "d"), ("d", "c"), ("c", "output")],
            "'c' before its input 'd'",
        ),
    ],
)
def test_depth_first_misorder_follows_nirtorch_load(edges, where):
    """nirtorch.load runs nodes in depth-first preorder, out-edges in the graph's order (hand-traced)."""
    from types import SimpleNamespace

    from snnprune.interop.nir_verify import depth_first_misorder

    got = depth_first_misorder(SimpleNamespace(edges=edges))
    assert got is None if where is None else where in got


def test_portable_refuses_an_average_pool_it_cannot_fold():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), neuron.IFNode(), nn.AvgPool2d(2), neuron.IFNode())
    snnprune.export_nir(net, torch.rand(1, 1, 6, 6), T=2)  # AvgPool2d: fine without portable
    with pytest.raises(NIRExportError, match=r"layer '3'.*portable=False"):
        snnprune.export_nir(net, torch.rand(1, 1, 6, 6), T=2, portable=True)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--images", "0"], "--images"),
        (["--sinabs-python", "/no/such/python"], "--sinabs-python"),
        (["--spyx-python", "/no/such/python"], "--spyx-python"),
        (["--rockpool-python", "/no/such/python"], "--rockpool-python"),
    ],
)
def test_importers_script_bad_options_exit_2(capsys, argv, option):
    code, err = expect_exit(load_script("nir_importers"), argv, capsys)
    assert code == 2 and err.startswith(f"error: {option}")


def test_importers_script_table_cells():
    """One line per graph and export, one column per importer: mismatches and top-1, or the reason."""
    rows = [
        {
            "graph": "g",
            "export": "portable",
            "framework": "source model",
            "spike_mismatches": 0,
            "top1": 90.0,
        },
        {"graph": "g", "export": "portable", "framework": "norse", "spike_mismatches": 1234, "top1": 89.5},
        {
            "graph": "g",
            "export": "portable",
            "framework": "sinabs",
            "spike_mismatches": None,
            "top1": None,
            "reason": "load: ValueError: v_leak must be 0",
        },
    ]
    lines = load_script("nir_importers").table(rows).splitlines()
    assert lines[0] == "| graph | export | source top-1 | norse | sinabs |"
    assert lines[2] == "| g | portable | 90.0 % | 1,234 (89.5 %) | load: `v_leak must be 0` |"


@pytest.mark.parametrize(
    ("framework", "needs"), [("sinabs", "nir<=1.0.4"), ("spyx", "JAX"), ("rockpool", "rockpool")]
)
def test_outside_rows_without_their_package_name_its_environment(framework, needs):
    import importlib.util

    if importlib.util.find_spec(framework) is not None:
        pytest.skip(f"{framework} is installed here")
    net = nn.Sequential(nn.Linear(2, 2), neuron.IFNode()).eval()
    x = torch.ones(1, 2)
    rows = snnprune.verify_nir(snnprune.export_nir(net, x, T=2), net, x, frameworks=(framework,))
    assert not rows[1]["loaded"] and needs in rows[1]["reason"] and "nir_importers" in rows[1]["reason"]


def test_spyx_dropped_lists_the_nodes_off_its_chain():
    """spyx 1.0.0 follows one chain from input (the first edge out of each node) and skips node types it
    has no layer for: a SEW ResNet-18 loses its three downsample branches (conv + neuron each), and the
    default export also its AvgPool2d; a plain chain loses nothing."""
    from snnprune.interop.nir_verify import spyx_dropped

    m, x = _sew(neuron_backend="auto"), _data()[0]
    branches = [f"layer{i}_0_downsample_{n}" for i in (2, 3, 4) for n in ("0", "sn")]
    assert sorted(spyx_dropped(snnprune.export_nir(m, x[:2], T=2, portable=True))) == branches
    assert sorted(spyx_dropped(snnprune.export_nir(m, x[:2], T=2))) == sorted([*branches, "avgpool"])
    assert spyx_dropped(snnprune.export_nir(_plain(), torch.rand(2, 1, 8, 8), T=2)) == []


def test_spyx_row_counts_its_one_step_delay_and_refuses_a_dropped_branch():
    """Where spyx is installed (scripts/nir_importers.py --spyx-python): its IF spikes on the potential
    before the step's input, so the first layer's spikes at step t + 1 are the source's at step t; a SEW
    graph is a row whose reason names the nodes spyx left out."""
    pytest.importorskip("spyx")
    from snnprune.interop import nir_verify

    net = _plain()
    x, y = torch.rand(3, 1, 8, 8) * 2, torch.randint(0, 10, (3,))
    graph = snnprune.export_nir(net, x[:2], T=3, portable=True)
    _, ref = nir_verify._reference(nir_verify.fold_batchnorm(net, x[:1]), x, ["2"], 3)
    imported, _ = nir_verify._public_spyx(graph, 1.0)
    _, got = nir_verify._imported(imported, x, 3, ["2"])
    assert ref["2"][0].sum() > 0 and got["2"][0].sum() == 0 and torch.equal(got["2"][1], ref["2"][0])
    (row,) = snnprune.verify_nir(graph, net, (x, y), frameworks=("spyx",))[1:]
    assert row["loaded"] and row["spike_mismatches"] > 0
    m, (x, y) = _sew(neuron="lif"), _data()
    (row,) = snnprune.verify_nir(snnprune.export_nir(m, x[:2], T=2), m, (x, y), frameworks=("spyx",))[1:]
    assert "without 7 of the graph's nodes (AvgPool2d, Conv2d, LIF" in row["reason"], row


def test_rockpool_row_reads_no_lif_graph():
    """Where Rockpool 3.1.0 is installed: its LIF converter reads ``node.tau_mem``, a field of ``CubaLIF``
    that ``LIF`` lacks, so even a LIF MLP (Affine + LIF, Xylo's dense path) does not load."""
    pytest.importorskip("rockpool")
    net = nn.Sequential(nn.Linear(16, 32), neuron.LIFNode(), nn.Linear(32, 8), neuron.LIFNode()).eval()
    x = torch.rand(2, 16)
    for portable in (False, True):
        graph = snnprune.export_nir(net, x, T=2, portable=portable)
        (row,) = snnprune.verify_nir(graph, net, x, frameworks=("rockpool",))[1:]
        assert not row["loaded"] and "no attribute 'tau_mem'" in row["reason"], row


def test_portable_folds_the_input_gain_of_a_lif_without_decay_input():
    """A LIF without decay_input integrates v + x - v/tau (NIR r = tau); Norse and Sinabs ignore r, so
    portable writes r = 1 and tau (= 2, exact) times the weights and bias of the conv that feeds it."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        neuron.LIFNode(tau=2.0, decay_input=False),
        nn.Flatten(),
        nn.Linear(256, 10),
    )
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(0.5, 1.0)
    net.eval()
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(8, 1, 8, 8, generator=g) * 2, torch.randint(0, 10, (8,), generator=g)
    assert _spike_total(net, x)["2"] > 0
    default, portable = (snnprune.export_nir(net, x[:2], T=4, portable=p) for p in (False, True))
    assert np.all(default.nodes["2"].r == 2.0) and np.all(portable.nodes["2"].r == 1.0)
    assert np.array_equal(portable.nodes["0"].weight, 2 * default.nodes["0"].weight)
    assert np.array_equal(portable.nodes["0"].bias, 2 * default.nodes["0"].bias)
    rows = {
        r["framework"]: r
        for r in snnprune.verify_nir(portable, net, (x, y), frameworks=("spikingjelly", "norse"))
    }
    for fw in ("spikingjelly", "norse"):
        assert rows[fw]["loaded"] and rows[fw]["spike_mismatches"] == 0, rows[fw]

    class Skip(nn.Module):  # two inputs: no single layer to carry the gain
        def __init__(self):
            super().__init__()
            self.sa, self.conv = neuron.IFNode(), nn.Conv2d(2, 2, 1)
            self.sb = neuron.LIFNode(decay_input=False)

        def forward(self, x):
            a = self.sa(x)
            return self.sb(self.conv(a) + a)

    with pytest.raises(NIRExportError, match=r"layer 'sb'.*decay_input=True or portable=False"):
        snnprune.export_nir(Skip(), torch.rand(1, 2, 3, 3), T=1, portable=True)
