"""Check a network against a SynSense chip's constraints offline (no samna, no device).

:func:`check_target` lowers the model with ``export_nir(..., portable=True)`` and reads the chip's rules off
the NIR graph, the one description of what would be deployed. Each broken rule is one line naming the
layer, what it breaks and what to change. The rules and numbers are those of the chips' own toolchains:

* ``"speck"`` (Speck / DYNAP-CNN, Sinabs 3.1.3 ``backend/dynapcnn``): every synaptic layer is a
  convolution feeding IF neurons (a ``Linear`` is a convolution whose kernel covers the map) on one of 9
  cores; a layer needs kernel memory c·2^(⌈log2(kh·kw)⌉ + ⌈log2 f⌉) and neuron memory
  f·2^(⌈log2 h_out⌉ + ⌈log2 w_out⌉) (``DynapcnnLayer.memory_summary``), and the cores hold
  16/16/16/32/32/64/64/16/16 Ki kernel words, 64/64/64/32/32/16/16/16/16 Ki neurons and 1,024 biases
  (``chips/dynapcnn.py``); weights are 8-bit integers (``discretize.py``); reset to
  zero and subtract are both supported; pooling is a square sum pool with stride = kernel. Kernel memory
  counts every kernel entry, zero or not: unstructured pruning saves none of it, removing channels does.
* ``"xylo"`` (Xylo Audio 2, Rockpool 3.1.0 ``devices/xylo/syns61201/xylo_mapper.py``): dense weights
  between LIF neurons only, at most 16 input channels, 1,000 hidden and 8 output neurons, outputs are
  neurons, at least two neuron layers, no bias (not transferred), 8-bit weights.
"""

from __future__ import annotations

import math

import nir
import numpy as np
from torch import Tensor, nn

from .nir_export import export_nir

__all__ = ["TARGETS", "check_target"]

TARGETS: tuple[str, ...] = ("speck", "xylo")

_SPECK_KERNEL = [16, 16, 16, 32, 32, 64, 64, 16, 16]  # Ki words per core
_SPECK_NEURON = [64, 64, 64, 32, 32, 16, 16, 16, 16]  # Ki neurons per core
_SPECK_BIAS = 1024
_XYLO_IN, _XYLO_HIDDEN, _XYLO_OUT = 16, 1000, 8


def _synapses(graph: nir.NIRGraph) -> dict[str, nir.NIRNode]:
    return {k: v for k, v in graph.nodes.items() if isinstance(v, (nir.Conv2d, nir.Affine, nir.Linear))}


def _lost_at_8_bits(name: str, w: np.ndarray) -> list[str]:
    """Non-zero weights that round to 0 when the layer's largest |w| maps to 127 (8-bit signed)."""
    top = float(np.abs(w).max()) if w.size else 0.0
    if top == 0.0:
        return []
    lost = int(np.count_nonzero((w != 0) & (np.round(w * (127.0 / top)) == 0)))
    if not lost:
        return []
    return [
        f"layer {name!r}: {lost:,} non-zero weights round to 0 at 8 bits (largest |w| -> 127); "
        "prune them, or train with a smaller weight range"
    ]


def _matching(fits: list[list[int]]) -> bool:
    """Whether every layer gets its own core among those it fits (augmenting paths)."""
    owner: dict[int, int] = {}

    def place(i: int, seen: set[int]) -> bool:
        for c in fits[i]:
            if c not in seen:
                seen.add(c)
                if c not in owner or place(owner[c], seen):
                    owner[c] = i
                    return True
        return False

    return all(place(i, set()) for i in range(len(fits)))


def _speck(graph: nir.NIRGraph) -> list[str]:
    lines: list[str] = []
    for name, node in graph.nodes.items():
        if isinstance(node, nir.LIF):
            lines.append(f"layer {name!r}: LIF neuron; DYNAP-CNN cores run IF neurons only: train with IF")
        elif isinstance(node, (nir.Threshold, nir.Scale, nir.Flatten, nir.AvgPool2d)):
            lines.append(
                f"layer {name!r}: {type(node).__name__} (max-pool, AND/IAND or flatten) has no DYNAP-CNN "
                "counterpart; use ADD, sum or average pooling, and flatten only before a Linear"
            )
        elif isinstance(node, nir.SumPool2d):
            k, s = np.atleast_1d(node.kernel_size), np.atleast_1d(node.stride)
            if len(set(k.tolist())) != 1 or not np.array_equal(k, s) or np.any(node.padding):
                lines.append(
                    f"layer {name!r}: pooling {k.tolist()} stride {s.tolist()}; DYNAP-CNN pools with square "
                    "windows, stride = kernel, no padding"
                )
    fits = []
    for name, node in _synapses(graph).items():
        w = np.asarray(node.weight)
        if w.ndim == 2:  # a dense layer on a flat input: a 1x1 convolution
            w = w[:, :, None, None]
        f, c, kh, kw = w.shape
        conv = isinstance(node, nir.Conv2d)
        h_out, w_out = (int(v) for v in np.atleast_1d(node.output_type["output"])[-2:]) if conv else (1, 1)
        kernel = c * 2 ** (math.ceil(math.log2(kh * kw)) + math.ceil(math.log2(f)))
        neurons = f * 2 ** (math.ceil(math.log2(h_out)) + math.ceil(math.log2(w_out)))
        cores = [
            i
            for i in range(len(_SPECK_KERNEL))
            if kernel <= _SPECK_KERNEL[i] * 1024 and neurons <= _SPECK_NEURON[i] * 1024 and f <= _SPECK_BIAS
        ]
        if not cores:
            lines.append(
                f"layer {name!r}: needs {kernel:,} kernel words and {neurons:,} neurons for {f} channels; the "
                f"largest core holds {max(_SPECK_KERNEL) * 1024:,} and {max(_SPECK_NEURON) * 1024:,} (zeros "
                "count too): remove channels (filter pruning) or shrink the feature map"
            )
        fits.append(cores)
        lines += _lost_at_8_bits(name, w)
    if len(fits) > len(_SPECK_KERNEL):
        lines.append(f"network: {len(fits)} synaptic layers; DYNAP-CNN has {len(_SPECK_KERNEL)} cores")
    elif all(fits) and not _matching(fits):
        lines.append("network: the layers fit the cores one by one but not all at once; shrink the largest")
    return lines


def _xylo(graph: nir.NIRGraph) -> list[str]:
    lines: list[str] = []
    neurons = {k: v for k, v in graph.nodes.items() if isinstance(v, (nir.IF, nir.LIF))}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.IF):
            lines.append(f"layer {name!r}: IF neuron; Xylo's neurons are LIF: train with LIF")
        elif not isinstance(node, (nir.LIF, nir.Affine, nir.Linear, nir.Conv2d, nir.Input, nir.Output)):
            lines.append(
                f"layer {name!r}: {type(node).__name__}; Xylo runs dense layers between LIF neurons only"
            )
    for name, node in _synapses(graph).items():
        w = np.asarray(node.weight)
        if w.ndim == 4 and not (
            np.array_equal(np.atleast_1d(node.input_shape), w.shape[2:]) and not np.any(node.padding)
        ):
            lines.append(f"layer {name!r}: convolution; Xylo runs dense (Linear) layers only")
        if getattr(node, "bias", None) is not None and np.any(node.bias):
            lines.append(f"layer {name!r}: non-zero bias; Xylo does not transfer biases: use bias=False")
        lines += _lost_at_8_bits(name, w)
    first = [d for s, d in graph.edges if s == "input"]
    for name in first:
        node = graph.nodes[name]
        if name in _synapses(graph):
            n_in = int(np.prod(np.asarray(node.weight).shape[1:]))
            if n_in > _XYLO_IN:
                lines.append(
                    f"layer {name!r}: {n_in:,} input channels; Xylo takes at most {_XYLO_IN}: "
                    "reduce the input (e.g. fewer features or a pooled encoding)"
                )
    outs = [s for s, d in graph.edges if d == "output"]
    out_neurons = sum(int(np.prod(neurons[s].output_type["output"])) for s in outs if s in neurons)
    for s in outs:
        if s not in neurons:
            lines.append(f"layer {s!r}: feeds the output; Xylo's outputs are neurons: end with a LIF layer")
    if out_neurons > _XYLO_OUT:
        lines.append(f"output: {out_neurons} output neurons; Xylo has {_XYLO_OUT}")
    hidden = sum(int(np.prod(v.output_type["output"])) for k, v in neurons.items() if k not in outs)
    if hidden > _XYLO_HIDDEN:
        lines.append(
            f"network: {hidden:,} hidden neurons; Xylo has {_XYLO_HIDDEN:,}: prune neurons or shrink layers"
        )
    if len(neurons) < 2:
        lines.append(f"network: {len(neurons)} neuron layer(s); Xylo needs at least two (hidden and output)")
    return lines


def check_target(model: nn.Module, example_input: Tensor, target: str) -> list[str]:
    """The constraints of ``target`` that the (pruned, finalized or compacted) model breaks.

    Args:
        model: the network, as :func:`snnprune.export_nir` takes it (not changed).
        example_input: one time step's input ``[N, ...]``.
        target: ``"speck"`` or ``"xylo"`` (see the module docstring for the rules and their sources).

    Returns:
        One line per broken rule, ``layer 'name': what; what to change``; empty when the model fits.

    Raises:
        ValueError: an unknown target.
        NIRExportError: a layer NIR cannot express (as :func:`snnprune.export_nir`).
    """
    if target not in TARGETS:
        raise ValueError(f"target: unknown {target!r}; choose from {list(TARGETS)}")
    graph = export_nir(model, example_input, T=1, portable=True)
    return _speck(graph) if target == "speck" else _xylo(graph)
