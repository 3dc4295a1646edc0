"""snnprune.interop.check_target: the chip rules a model breaks, one line per layer, checked offline."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("nir")

from spikingjelly.activation_based import neuron

from snnprune.interop import check_target

pytestmark = pytest.mark.usefixtures("nir_time_limit")  # a graph that never finishes fails instead


def _grid(m: nn.Module) -> nn.Module:
    """Weights on the 8-bit grid of their layer (largest |w| -> 127), so no non-zero rounds to 0."""
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                w = mod.weight
                w.copy_(w.sign() * torch.round(w.abs() / w.abs().max() * 127).clamp(min=1) / 127)
    return m.eval()


def _mlp(n_in: int = 16, hidden: int = 32, out: int = 8, *, bias: bool = False, last=neuron.LIFNode):
    return _grid(
        nn.Sequential(
            nn.Linear(n_in, hidden, bias=bias), neuron.LIFNode(), nn.Linear(hidden, out, bias=bias), last()
        )
    )


def test_speck_memory_is_counted_as_sinabs_does_and_channels_free_it():
    """Hand count (Sinabs' DynapcnnLayer.memory_summary): 64 -> 128 channels, 3x3 on 8x8:
    kernel 64 * 2^(ceil log2 9 + log2 128) = 64 * 2^11 = 131,072 words > 64 Ki, the largest core;
    neurons 128 * 2^(3 + 3) = 8,192. With 32 output channels: 64 * 2^(4 + 5) = 32,768, fits."""
    big = _grid(nn.Sequential(nn.Conv2d(64, 128, 3, padding=1), neuron.IFNode()))
    (line,) = check_target(big, torch.rand(1, 64, 8, 8), "speck")
    assert line.startswith("layer '0': needs 131,072 kernel words and 8,192 neurons for 128 channels")
    with torch.no_grad():  # zeros do not help: the kernel memory counts every entry
        big[0].weight[64:] = 0.0
    assert check_target(big, torch.rand(1, 64, 8, 8), "speck") == [line]
    small = _grid(nn.Sequential(nn.Conv2d(64, 32, 3, padding=1), neuron.IFNode()))
    assert check_target(small, torch.rand(1, 64, 8, 8), "speck") == []


def _conv_chain(n: int) -> nn.Module:
    return _grid(
        nn.Sequential(*[m for _ in range(n) for m in (nn.Conv2d(2, 2, 3, padding=1), neuron.IFNode())])
    )


@pytest.mark.parametrize(
    ("net", "shape", "expect"),
    [
        (nn.Sequential(nn.Conv2d(1, 2, 3), neuron.LIFNode()), (1, 1, 6, 6), "layer '1': LIF neuron"),
        (
            nn.Sequential(nn.Conv2d(1, 2, 3), neuron.IFNode(), nn.MaxPool2d(2)),
            (1, 1, 6, 6),
            "layer '2_or': Threshold",
        ),
        (_conv_chain(10), (1, 2, 4, 4), "network: 10 synaptic layers; DYNAP-CNN has 9 cores"),
        (
            nn.Sequential(
                nn.Conv2d(1, 2, 3), neuron.IFNode(), nn.AvgPool2d(3, 2), nn.Conv2d(2, 2, 1), neuron.IFNode()
            ),
            (1, 1, 9, 9),
            "layer '2': pooling [3, 3] stride [2, 2]",
        ),
    ],
)
def test_speck_rules_one_line_naming_the_layer(net, shape, expect):
    lines = check_target(_grid(net), torch.rand(*shape), "speck")
    assert [x for x in lines if x.startswith(expect)], lines


def test_speck_counts_weights_lost_at_8_bits():
    net = nn.Sequential(nn.Conv2d(1, 1, 2, bias=False), neuron.IFNode()).eval()
    with torch.no_grad():  # 1.0 -> 127; 0.003 * 127 = 0.38 -> 0 (lost); 0.5 -> 64; 0.0 stays 0
        net[0].weight.copy_(torch.tensor([[[[1.0, 0.003], [0.5, 0.0]]]]))
    (line,) = check_target(net, torch.rand(1, 1, 4, 4), "speck")
    assert line.startswith("layer '0': 1 non-zero weights round to 0 at 8 bits")


def test_xylo_lif_mlp_that_fits_has_no_lines():
    """The LIF MLP example: 16 inputs, 32 hidden and 8 output LIF neurons, no biases, 8-bit weights."""
    assert check_target(_mlp(), torch.rand(2, 16), "xylo") == []


@pytest.mark.parametrize(
    ("net", "shape", "expect"),
    [
        (_mlp(last=neuron.IFNode), (2, 16), "layer '3': IF neuron"),
        (_mlp(bias=True), (2, 16), "layer '0': non-zero bias"),
        (_mlp(n_in=784), (2, 784), "layer '0': 784 input channels; Xylo takes at most 16"),
        (_mlp(out=10), (2, 16), "output: 10 output neurons; Xylo has 8"),
        (_mlp(hidden=1001), (2, 16), "network: 1,001 hidden neurons; Xylo has 1,000"),
        (nn.Sequential(nn.Linear(16, 8, bias=False), neuron.LIFNode()), (2, 16), "network: 1 neuron layer"),
        (
            nn.Sequential(nn.Linear(16, 8, bias=False), neuron.LIFNode(), nn.Linear(8, 4, bias=False)),
            (2, 16),
            "layer '2': feeds the output",
        ),
        (
            nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), neuron.LIFNode()),
            (1, 1, 4, 4),
            "layer '0': convolution",
        ),
    ],
)
def test_xylo_rules_one_line_naming_the_layer(net, shape, expect):
    lines = check_target(_grid(net), torch.rand(*shape), "xylo")
    assert [x for x in lines if x.startswith(expect)], lines


def test_unknown_target_is_refused():
    with pytest.raises(ValueError, match="target: unknown 'loihi'"):
        check_target(_mlp(), torch.rand(2, 16), "loihi")
