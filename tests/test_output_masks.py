"""Output masks on neurons (snnprune.output_masks): analyze counts what a masked neuron sends (nothing),
its neuron-sparsity column, finalize and the NIR export keep the mask."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

import snnprune
from snnprune.output_masks import (
    FixedOutputMask,
    attach_fixed_masks,
    attach_output_mask,
    output_keep,
    remove_output_mask,
)


def _chain() -> nn.Sequential:
    """4 binary inputs -> Linear(4, 3) of 0.5s -> IF (every neuron gets 2 > 1: all fire) -> Linear(3, 2) of ones
    with one zero weight (out 0 <- neuron 0)."""
    net = nn.Sequential(layer.Linear(4, 3, bias=False), neuron.IFNode(), layer.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(0.5)
        net[2].weight.fill_(1.0)
        net[2].weight[0, 0] = 0.0
    return net


@pytest.mark.parametrize(
    ("keep", "sops_2", "spikes", "neuron_sparsity"),
    [
        # hand counts: layer 2's fan-out per input neuron is (1, 2, 2); the masked neuron sends nothing
        (None, 1 + 2 + 2, 3, 0.0),
        ((1.0, 0.0, 1.0), 1 + 2, 2, 1 / 3),
        ((0.0, 1.0, 1.0), 2 + 2, 2, 1 / 3),
        ((0.0, 0.0, 1.0), 2, 1, 2 / 3),
    ],
)
def test_analyze_counts_a_masked_neuron_as_silent(keep, sops_2, spikes, neuron_sparsity):
    net = _chain()
    if keep is not None:
        attach_output_mask(net[1], FixedOutputMask(torch.tensor(keep) > 0))
    report = snnprune.analyze(net, torch.ones(1, 4))
    rows = {r["name"]: r for r in report.layers}
    assert rows["0"]["sops"] == 4 * 3  # 4 input spikes, each to 3 synapses
    assert rows["2"]["sops"] == sops_2
    assert rows["1"]["spikes"] == spikes and rows["1"]["neuron_sparsity"] == pytest.approx(neuron_sparsity)
    assert report.totals["sops"] == 12 + sops_2
    assert report.totals["neuron_sparsity"] == pytest.approx(neuron_sparsity)
    assert report.totals["params"] == 4 * 3 + 3 * 2  # the mask is no layer and holds no parameter
    assert f"neuron sparsity {100 * neuron_sparsity:.1f}%" in report.summary()


def test_neuron_sparsity_weights_layers_by_their_neurons():
    """Two neuron layers of 3 and 2 neurons with 1 and 2 masked: (1 + 2) / (3 + 2), not the mean of 1/3 and 1."""
    net = nn.Sequential(
        layer.Linear(4, 3), neuron.IFNode(), layer.Linear(3, 2), neuron.IFNode(), layer.Linear(2, 1)
    )
    attach_output_mask(net[1], FixedOutputMask(torch.tensor([True, False, True])))
    attach_output_mask(net[3], FixedOutputMask(torch.tensor([False, False])))
    report = snnprune.analyze(net, torch.ones(2, 4))
    assert report.totals["neuron_sparsity"] == pytest.approx(3 / 5)
    remove_output_mask(net[3])
    assert snnprune.analyze(net, torch.ones(2, 4)).totals["neuron_sparsity"] == pytest.approx(1 / 5)


def test_remove_output_mask_restores_the_neuron():
    net = _chain()
    attach_output_mask(net[1], FixedOutputMask(torch.tensor([True, False, True])))
    with pytest.raises(ValueError, match="already has an output mask"):
        attach_output_mask(net[1], FixedOutputMask(torch.tensor([True, True, True])))
    remove_output_mask(net[1])
    assert (
        output_keep(net[1]) is None
        and not net[1]._forward_hooks
        and "output_mask" not in dict(net[1].named_children())
    )
    with pytest.raises(ValueError, match="has no output mask"):
        remove_output_mask(net[1])


def _trained_shi(steps: int = 4) -> tuple[nn.Sequential, torch.Tensor]:
    """A conv SNN trained a few shi2024 steps, with some neurons masked and some kept."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), neuron.IFNode(), nn.Flatten(),
        nn.Linear(4 * 8 * 8, 16), neuron.IFNode(), nn.Linear(16, 10),
    )  # fmt: skip
    with torch.no_grad():
        net[1].weight.uniform_(1.0, 3.0)
    pruner = snnprune.sparsify(
        net, "shi2024", penalty=0.0, mask_init=1.0, neuron_mask_init=0.0, total_steps=steps
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 8, 8, generator=g) * 2
    sign = torch.randint(0, 2, (4, 10), generator=g).float() * 2 - 1
    for _ in range(steps):
        ((net(x) * sign).sum() + pruner.regularization()).backward()
        assert pruner.neuron_fanout() == {"2": 16.0, "5": 10.0}  # out_features of the Linear each one feeds
        opt.step()
        opt.zero_grad()
        pruner.step()
        functional.reset_net(net)
    net.eval()
    keeps = [output_keep(net[i]) for i in (2, 5)]
    assert all(0 < int(k.sum()) < k.numel() for k in keeps), keeps
    return net, x


def test_finalize_outputs_equal_the_masked_model():
    net, x = _trained_shi()
    with torch.no_grad():
        masked = net(x)
        functional.reset_net(net)
        keeps = [output_keep(net[i]).clone() for i in (2, 5)]
        snnprune.finalize(net)
        assert all(isinstance(net[i].output_mask, FixedOutputMask) for i in (2, 5))
        assert all(torch.equal(output_keep(net[i]), k) for i, k in zip((2, 5), keeps, strict=True))
        assert torch.equal(net(x), masked)
        functional.reset_net(net)
        net[2].output_mask.keep_mask.fill_(True)  # the mask is what makes the difference
        assert not torch.equal(net(x), masked)


def test_a_finalized_state_dict_loads_strictly_into_a_fresh_model_with_its_masks():
    net, x = _trained_shi()
    snnprune.finalize(net)
    with torch.no_grad():
        masked = net(x)
        functional.reset_net(net)
    state = net.state_dict()
    fresh = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), neuron.IFNode(), nn.Flatten(),
        nn.Linear(4 * 8 * 8, 16), neuron.IFNode(), nn.Linear(16, 10),
    ).eval()  # fmt: skip
    with pytest.raises(RuntimeError, match=r"output_mask\.keep_mask"):
        fresh.load_state_dict(state)  # a plain load would drop the masks
    attach_fixed_masks(fresh, state).load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh(x), masked)
    with pytest.raises(KeyError, match="no module 'nope'"):
        attach_fixed_masks(nn.Sequential(), {"nope.output_mask.keep_mask": torch.ones(2, dtype=torch.bool)})


def test_nir_export_keeps_the_mask_as_a_scale_node():
    pytest.importorskip("nir")
    import nir

    net, x = _trained_shi()
    snnprune.finalize(net)
    graph = snnprune.export_nir(net, x[:2], T=3)
    for i in (2, 5):
        scale = graph.nodes[f"{i}_output_mask"]
        assert isinstance(scale, nir.Scale)
        assert torch.equal(torch.from_numpy(scale.scale).flatten(), output_keep(net[i]).flatten())
        assert (str(i), f"{i}_output_mask") in graph.edges
    y = torch.randint(0, 10, (4,))
    fws = ("spikingjelly", "spikingjelly+snnprune", "norse+snnprune")
    rows = {r["framework"]: r for r in snnprune.verify_nir(graph, net, (x, y), frameworks=fws)}
    for fw in fws[1:]:  # SpikingJelly's and Norse's converters, with a Scale converter added
        assert rows[fw]["loaded"] and rows[fw]["spike_mismatches"] == 0, rows[fw]
        assert rows[fw]["max_abs_diff"] < 1e-5 and "Scale" in rows[fw]["added"], rows[fw]
    # SpikingJelly 2.0.0's public importer has no Scale node (and takes one threshold per layer)
    assert not rows["spikingjelly"]["loaded"] and "Scale" in rows["spikingjelly"]["reason"]
