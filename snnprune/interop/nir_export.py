"""Lower a finalized or compacted spiking network to a NIR graph (``nir`` 1.0.8).

The lowering runs on a copy of the model, in single-step mode, and emits one NIR node per synaptic layer
or neuron population, with the edges between them:

* ``Conv2d`` / ``Linear`` (torch or SpikingJelly) become ``nir.Conv2d`` / ``nir.Affine`` (``nir.Linear``
  without bias); a BatchNorm that follows a convolution is folded into it in float64, so a zero weight
  stays an exact zero and the file holds as many non-zeros as the model.
* Neurons are mapped by ``isinstance`` on SpikingJelly's classes (so :mod:`snnprune.neuron` too): IF to
  ``nir.IF`` (``r = 1/dt``), LIF to ``nir.LIF`` (``tau = τ·dt``, ``r = 1`` with ``decay_input``, else τ),
  PLIF to ``nir.LIF`` with its learned τ = 1/sigmoid(w).
* ``a + b`` becomes two incoming edges (NIR sums the inputs of a node); AND of two spike tensors becomes a
  ``nir.Threshold`` at 1.5 fed by both (H(a + b − 1.5)); IAND ``b·(1 − a)`` becomes ``nir.Scale(−1)`` on
  ``a`` and a ``nir.Threshold`` at 0.5 fed by ``b`` and ``−a`` (H(b − a − 0.5)); on binary spikes both are
  exact.
* A neuron's output mask (:mod:`snnprune.output_masks`) becomes a ``nir.Scale`` node of its 0/1 mask after
  the neuron's node.
* A max-pool over spikes becomes a ``nir.SumPool2d`` and a ``nir.Threshold`` at 0.5 (the OR of binary
  spikes; zero padding equals max-pool's −∞ padding on non-negative inputs).
* An adaptive average pool to ``h × w`` becomes ``nir.AvgPool2d``; a flatten of ``[C, H, W]`` followed by
  a ``Linear`` becomes a ``nir.Conv2d`` whose kernel covers the ``H × W`` map (no ``Flatten`` node, which
  importers apply to the batch), and the layers after it carry ``[K, 1, 1]`` (a ``Linear`` there is a
  1×1 ``nir.Conv2d``).

**Model protocol.** A model whose ``forward`` is not a per-step function of its input (the SEW ResNets
encode a static image once and repeat it over T, with a branch on the input's rank) implements
``nir_step(x)``: one time step, from the input of that step to the output of that step, with the same
modules. The exporter traces ``nir_step`` when it exists, else ``forward``. ``T`` comes from the ``T``
keyword or the model's ``T`` attribute. The output rule of the exported graph is the mean over T of the
per-step outputs (which equals a head that averages before a linear classifier).

What NIR cannot express (soft reset, a non-zero ``v_reset``, a product of two activations such as spiking
attention, any other operation or custom module) raises one :class:`NIRExportError` naming the layer and
the alternative.
"""

from __future__ import annotations

import copy
import math
import operator
import os
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch
from spikingjelly.activation_based import base, functional
from spikingjelly.activation_based import neuron as sj_neuron
from torch import Tensor, fx, nn

from snnprune.output_masks import output_keep

__all__ = ["MAX_T", "NIRExportError", "check_dt_T", "export_nir", "model_nonzeros", "nir_nonzeros"]

#: The most time steps a graph may declare (a file's ``T`` beyond it is refused before any work).
MAX_T = 10_000


def check_dt_T(dt: Any, T: Any, where: str) -> None:
    """``dt`` a finite number of seconds > 0 and ``T`` an integer in 1..:data:`MAX_T`; else one
    :class:`ValueError` line naming ``where`` (an argument, or a file's metadata)."""
    if (
        isinstance(dt, bool)
        or not isinstance(dt, (int, float, np.floating))
        or not math.isfinite(dt)
        or dt <= 0
    ):
        raise ValueError(f"{where}: dt must be a finite positive number of seconds, got {dt!r}; e.g. 1e-4")
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or not 1 <= T <= MAX_T:
        raise ValueError(
            f"{where}: T must be an integer from 1 to {MAX_T:,} (pass T= or give the model a T attribute), "
            f"got {T!r}"
        )


_PASS = (nn.Identity, nn.Dropout)
_LEAVES = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm2d,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AvgPool2d,
    nn.Flatten,
    *_PASS,
)


class NIRExportError(ValueError):
    """The model holds something NIR cannot express; the message names the layer and the alternative."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (*_LEAVES, base.MemoryModule))


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy()


def _pair(v: Any) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v))


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution, computed in float64."""
    if bn.running_mean is None:
        raise NIRExportError(
            "BatchNorm without running statistics (track_running_stats=False) cannot be folded; "
            "export a model whose BatchNorm tracks running statistics"
        )
    w = conv.weight.detach().double()
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    shift = bn.bias.detach().double() + (bias - bn.running_mean.double()) * scale
    return w * scale.view(-1, *([1] * (w.dim() - 1))), shift


def _neuron_node(name: str, m: nn.Module, shape: tuple[int, ...], dt: float) -> nir.NIRNode:
    if not isinstance(m, (sj_neuron.IFNode, sj_neuron.LIFNode, sj_neuron.ParametricLIFNode)):
        raise NIRExportError(
            f"layer {name!r}: neuron {type(m).__name__} has no NIR node; "
            "use an IF, LIF or ParametricLIF neuron (SpikingJelly or snnprune.neuron)"
        )
    if m.v_reset is None:
        raise NIRExportError(
            f"layer {name!r}: soft reset (v_reset=None) is not expressible in NIR; "
            "train with a hard reset (v_reset=0.0)"
        )
    if float(m.v_reset) != 0.0:
        raise NIRExportError(
            f"layer {name!r}: v_reset={m.v_reset} is not run by every NIR importer (Norse ignores it); "
            "use v_reset=0.0 (shift v_threshold instead)"
        )
    # the spec's shapes (nir's type inference refuses a shared value of shape [1] on a [C, H, W] layer)
    full = lambda v: np.full(shape, float(v), dtype=np.float32)  # noqa: E731
    if isinstance(m, sj_neuron.IFNode):
        # no v_reset: nir 1.0.8 fills in 0, the only value exported; nir 1.0.4 has no such field
        return nir.IF(r=full(1.0 / dt), v_threshold=full(m.v_threshold))
    if isinstance(m, sj_neuron.ParametricLIFNode):
        tau = 1.0 / float(m.w.detach().double().sigmoid())
    else:
        tau = float(m.tau)
    return nir.LIF(
        tau=full(tau * dt),
        r=full(1.0 if m.decay_input else tau),
        v_leak=full(0.0),
        v_threshold=full(m.v_threshold),
    )


def _shapes(gm: fx.GraphModule, x: Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    class _Record(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if isinstance(out, Tensor):
                shapes[n.name] = tuple(out.shape)
            return out

    with torch.no_grad():
        _Record(gm).run(x)
    return shapes


class _Lowering:
    """Walks the traced graph once and builds the NIR nodes and edges."""

    def __init__(
        self, gm: fx.GraphModule, shapes: dict[str, tuple[int, ...]], dt: float, portable: bool = False
    ) -> None:
        self.gm, self.shapes, self.dt, self.portable = gm, shapes, dt, portable
        self.gain: dict[str, float] = {}  # portable: SumPool2d nodes whose 1/k² the next weights carry
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.spiking: set[str] = set()  # NIR nodes whose output is a binary spike
        self.src: dict[fx.Node, Any] = {}  # fx node -> list of NIR sources, or a marker tuple
        self.folded: list[tuple[str, str]] = []  # (conv, BatchNorm) qualified names
        self.mapped: set[str] = set()  # NIR nodes whose [K] output is carried as [K, 1, 1] (see flatten)

    def add(
        self, name: str, node: nir.NIRNode, sources: list[str], *, spikes: bool = False, mapped: bool = False
    ) -> list[str]:
        name = name.replace(".", "_")
        self.nodes[name] = node
        self.edges.extend((s, name) for s in sources)
        if spikes:
            self.spiking.add(name)
        if mapped:
            self.mapped.add(name)
        return [name]

    def sources(self, arg: Any, where: str, *, scaled: bool = False) -> list[str]:
        """The NIR nodes feeding ``arg``; ``scaled``: the caller folds their pool gain into its weights."""
        s = self.src.get(arg)
        if not isinstance(s, list):
            raise NIRExportError(
                f"{where}: its input {getattr(arg, 'name', arg)!r} is not a tensor NIR can carry "
                "(a constant, or 1 - spikes outside an IAND); compute it inside a supported layer"
            )
        if not scaled and any(x in self.gain for x in s):
            raise NIRExportError(
                f"{where}: portable export writes average pooling as SumPool2d and folds its 1/k² into the "
                "next Conv2d or Linear, and this layer is not one; export with portable=False"
            )
        return s

    def scale(self, sources: list[str], where: str) -> float:
        """The pool gain the weights fed by ``sources`` take (1.0 without a portable average pool)."""
        gains = {self.gain.get(x, 1.0) for x in sources}
        if len(gains) > 1:
            raise NIRExportError(
                f"{where}: its inputs come from average pools of different sizes and other layers; "
                "export with portable=False"
            )
        return gains.pop()

    def spike(self, arg: Any, where: str) -> str:
        s = self.sources(arg, where)
        if len(s) != 1 or s[0] not in self.spiking:
            raise NIRExportError(
                f"{where}: needs binary spikes (one neuron's output) as input, got {s}; "
                "place a spiking neuron before it"
            )
        return s[0]

    def shape(self, n: fx.Node, sources: list[str] | None = None) -> tuple[int, ...]:
        """``n``'s shape without the batch; ``[K, 1, 1]`` where the sources carry a lowered flatten."""
        shape = self.shapes[n.name][1:]
        return (*shape, 1, 1) if sources and all(x in self.mapped for x in sources) else shape

    def run(self) -> nir.NIRGraph:
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if "input" in self.nodes:
                    raise NIRExportError("the exported step function must take exactly one input tensor")
                self.src[n] = self.add("input", nir.Input(input_type=np.array(self.shape(n))), [])
            elif n.op == "output":
                arg = n.args[0]
                src = self.sources(arg, "output")  # the type NIR infers (a 1x1 head is [K, 1, 1])
                out_type = self.nodes[src[0]].output_type.get("output", np.array(self.shape(arg)))
                self.add("output", nir.Output(output_type=np.array(out_type)), src)
            elif n.op == "call_module":
                self.src[n] = self.module(n, self.gm.get_submodule(n.target))
            elif n.op == "call_function":
                self.src[n] = self.function(n)
            else:
                raise NIRExportError(
                    f"operation {n.op} {n.target!r} has no NIR node; express it with torch / "
                    "SpikingJelly layers, or give the model a nir_step(x) method without it"
                )
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges)

    def module(self, n: fx.Node, m: nn.Module) -> Any:
        where = f"layer {n.target!r}"
        arg = n.args[0]
        if isinstance(m, _PASS):
            return self.src[arg]
        if isinstance(m, base.MemoryModule):
            src = self.sources(arg, where)
            node = _neuron_node(n.target, m, self.shape(n, src), self.dt)
            if self.portable and isinstance(node, nir.LIF) and np.any(node.r != 1.0):
                self.fold_gain(node, src, arg, where)
            mapped = all(x in self.mapped for x in src)
            out = self.add(n.target, node, src, spikes=True, mapped=mapped)
            keep = output_keep(m)
            if keep is None:
                return out
            # an output mask (snnprune.output_masks): a Scale node of 0/1 after the neuron, still spikes
            scale = _np(keep).reshape(self.shape(n, src))
            return self.add(
                f"{n.target}.output_mask", nir.Scale(scale=scale), out, spikes=True, mapped=mapped
            )
        if isinstance(m, nn.BatchNorm2d):
            conv = self.src.get(arg)
            if not (isinstance(conv, tuple) and conv[0] == "conv" and len(arg.users) == 1):
                raise NIRExportError(
                    f"{where}: NIR has no BatchNorm node and this one does not directly follow a "
                    "convolution used only by it; fold it into the preceding layer before export"
                )
            _, conv_node, conv_mod = conv
            self.folded.append((str(conv_node.target), str(n.target)))
            w, b = _fold_bn(conv_mod, m)
            return self.conv(conv_node, conv_mod, w, b)
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise NIRExportError(
                    f"{where}: grouped, string-padded or non-zero-padded convolutions are not run by NIR "
                    "importers; use groups=1 and numeric zero padding"
                )
            self.sources(arg, where, scaled=True)
            bn_next = len(n.users) == 1 and isinstance(self._user_module(n), nn.BatchNorm2d)
            if bn_next:
                return ("conv", n, m)  # emitted by the BatchNorm that follows
            b = m.bias.detach().double() if m.bias is not None else None
            return self.conv(n, m, m.weight.detach().double(), b)
        if isinstance(m, nn.Linear):
            s = self.src.get(arg)
            if isinstance(s, tuple) and s[0] == "flat":  # flatten of [C, H, W]: a conv covering the map
                _, src, (c, h, w) = s
                return self.map_conv(n, m, m.weight.detach().reshape(m.out_features, c, h, w), src, (h, w))
            src = self.sources(arg, where, scaled=True)
            if len(self.shape(arg)) != 1:
                raise NIRExportError(f"{where}: Linear on a {len(self.shape(arg))}-d input; flatten it first")
            if all(x in self.mapped for x in src):  # after a lowered flatten the data stays [K, 1, 1]
                return self.map_conv(n, m, m.weight.detach()[:, :, None, None], src, (1, 1))
            weight = _np(m.weight.detach().double() * self.scale(src, where))
            if m.bias is None:
                return self.add(n.target, nir.Linear(weight=weight), src)
            return self.add(n.target, nir.Affine(weight=weight, bias=_np(m.bias)), src)
        if isinstance(m, nn.MaxPool2d):
            return self.maxpool(n, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            (h_in, w_in), (h, w) = self.shape(arg)[-2:], self.shape(n)[-2:]
            if h_in % h or w_in % w:
                raise NIRExportError(
                    f"{where}: adaptive pooling from {h_in}x{w_in} to {h}x{w} has uneven windows; "
                    "choose an input size divisible by the output size"
                )
            k = (h_in // h, w_in // w)
            return self.avgpool(n, k, k, 0, self.sources(arg, where))
        if isinstance(m, nn.AvgPool2d):
            if (
                m.ceil_mode
                or m.divisor_override is not None
                or (np.any(m.padding) and not m.count_include_pad)
            ):
                raise NIRExportError(
                    f"{where}: this AvgPool2d configuration has no NIR node; use ceil_mode=False, no divisor_override"
                )
            return self.avgpool(
                n, m.kernel_size, m.stride or m.kernel_size, m.padding, self.sources(arg, where)
            )
        if isinstance(m, nn.Flatten):
            return self.flatten(n, arg, m.start_dim, m.end_dim)
        raise NIRExportError(
            f"{where}: {type(m).__name__} has no NIR lowering; replace it with a supported layer"
        )

    def _user_module(self, n: fx.Node) -> nn.Module | None:
        (u,) = n.users
        return self.gm.get_submodule(u.target) if u.op == "call_module" else None

    def avgpool(self, n: fx.Node, kernel: Any, stride: Any, padding: Any, src: list[str]) -> list[str]:
        """``AvgPool2d``; portable: ``SumPool2d``, its 1/k² folded into the next weights (see ``scale``)."""
        k, st, p = _pair(kernel), _pair(stride), _pair(padding)
        if not self.portable:
            return self.add(n.target, nir.AvgPool2d(kernel_size=k, stride=st, padding=p), src)
        out = self.add(n.target, nir.SumPool2d(kernel_size=k, stride=st, padding=p), src)
        self.gain[out[0]] = 1.0 / float(np.prod(k))
        return out

    def conv(self, n: fx.Node, m: nn.Conv2d, w: Tensor, b: Tensor | None) -> list[str]:
        b = torch.zeros(w.shape[0], dtype=torch.float64) if b is None else b
        where = f"layer {n.target!r}"
        src = self.sources(n.args[0], where, scaled=True)
        w = w * self.scale(src, where)  # float64: a power-of-two window keeps the weights exact
        node = nir.Conv2d(
            input_shape=tuple(self.shapes[n.args[0].name][-2:]),
            weight=_np(w),
            stride=_pair(m.stride),
            padding=_pair(m.padding),
            dilation=_pair(m.dilation),
            groups=1,
            bias=_np(b),
        )
        return self.add(n.target, node, src)

    def fold_gain(self, node: nir.LIF, src: list[str], arg: fx.Node, where: str) -> None:
        """Portable: a LIF's input gain r (τ without ``decay_input``) moves into the weights and bias of
        the one synaptic layer feeding it (Sinabs and Norse ignore r), and r becomes 1."""
        syn = self.nodes.get(src[0]) if len(src) == 1 else None
        if not (isinstance(syn, (nir.Conv2d, nir.Affine, nir.Linear)) and len(arg.users) == 1):
            raise NIRExportError(
                f"{where}: a LIF without decay_input has input gain r = tau, which portable export folds into "
                "the one Conv2d or Linear feeding it, and this neuron has other inputs; use decay_input=True "
                "or portable=False"
            )
        gain = float(np.asarray(node.r).flat[0])  # one tau per layer (SpikingJelly's LIF)
        syn.weight = (syn.weight.astype(np.float64) * gain).astype(np.float32)
        if getattr(syn, "bias", None) is not None:
            syn.bias = (syn.bias.astype(np.float64) * gain).astype(np.float32)
        node.r = np.ones_like(node.r)

    def map_conv(
        self, n: fx.Node, m: nn.Linear, weight: Tensor, src: list[str], map_hw: tuple[int, int]
    ) -> list[str]:
        """``m`` as a ``Conv2d`` whose kernel covers the whole ``map_hw`` input: output ``[K, 1, 1]``."""
        b = m.bias.detach() if m.bias is not None else torch.zeros(m.out_features)
        weight = weight.double() * self.scale(src, f"layer {n.target!r}")
        node = nir.Conv2d(
            input_shape=map_hw, weight=_np(weight), stride=1, padding=0, dilation=1, groups=1, bias=_np(b)
        )
        return self.add(n.target, node, src, mapped=True)

    def maxpool(
        self, n: fx.Node, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool
    ) -> list[str]:
        where = f"max-pool {n.target if n.op == 'call_module' else n.name!r}"
        if ceil_mode or np.any(_pair(dilation) != 1):
            raise NIRExportError(
                f"{where}: ceil_mode or dilation has no NIR node; use ceil_mode=False, dilation=1"
            )
        src = self.spike(n.args[0], where)
        name = str(n.target if n.op == "call_module" else n.name)
        pool = nir.SumPool2d(
            kernel_size=_pair(kernel), stride=_pair(stride or kernel), padding=_pair(padding)
        )
        self.add(name, pool, [src])
        thr = nir.Threshold(threshold=np.full(self.shape(n), 0.5, dtype=np.float32))
        return self.add(name + "_or", thr, [name.replace(".", "_")], spikes=True)

    def flatten(self, n: fx.Node, arg: fx.Node, start: int, end: int) -> Any:
        where = f"flatten {n.name!r}"
        if start != 1 or end != -1:
            raise NIRExportError(
                f"{where}: only flatten(x, 1) (all but the batch) is lowered; use start_dim=1"
            )
        shape = self.shape(arg)
        if len(shape) == 3 and all(
            u.op == "call_module" and isinstance(self.gm.get_submodule(u.target), nn.Linear) for u in n.users
        ):  # flatten + Linear: one Conv2d whose kernel is the whole map, batch-safe in every importer
            return ("flat", self.sources(arg, where, scaled=True), shape)
        src = self.sources(arg, where)
        node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
        return self.add(n.name, node, src)

    def function(self, n: fx.Node) -> Any:
        f, args = n.target, n.args
        if f in (operator.add, torch.add) and len(args) == 2 and all(isinstance(a, fx.Node) for a in args):
            a, b = (self.sources(x, f"add {n.name!r}") for x in args)
            if set(a) & set(b):
                raise NIRExportError(
                    f"add {n.name!r}: both terms share the source {sorted(set(a) & set(b))}; NIR edges cannot count a source twice"
                )
            return a + b
        if f is operator.sub and args[0] == 1.0 and isinstance(args[1], fx.Node):
            return ("not", self.spike(args[1], f"1 - x {n.name!r}"))
        if f in (operator.mul, torch.mul) and len(args) == 2 and all(isinstance(a, fx.Node) for a in args):
            marks = [self.src.get(a) for a in args]
            shape = np.full(self.shape(n), 0.5, dtype=np.float32)
            nots = [isinstance(s, tuple) and s[0] == "not" for s in marks]
            if nots == [False, False]:  # AND = H(a + b - 1.5)
                a, b = (self.spike(x, f"AND {n.name!r}") for x in args)
                return self.add(n.name + "_and", nir.Threshold(threshold=shape + 1.0), [a, b], spikes=True)
            if sum(nots) == 1:  # IAND: b * (1 - a) = H(b - a - 0.5)
                b = self.spike(args[nots.index(False)], f"IAND {n.name!r}")
                a = marks[nots.index(True)][1]
                neg = self.add(
                    n.name + "_neg", nir.Scale(scale=np.full(self.shape(n), -1.0, dtype=np.float32)), [a]
                )
                return self.add(n.name + "_iand", nir.Threshold(threshold=shape), [b, *neg], spikes=True)
        if f in (torch.flatten,):
            return self.flatten(
                n,
                args[0],
                args[1] if len(args) > 1 else n.kwargs.get("start_dim", 0),
                n.kwargs.get("end_dim", -1),
            )
        if f is torch.nn.functional.max_pool2d:
            kw = dict(
                zip(("kernel_size", "stride", "padding", "dilation", "ceil_mode"), args[1:], strict=False),
                **n.kwargs,
            )
            return self.maxpool(
                n,
                kw["kernel_size"],
                kw.get("stride"),
                kw.get("padding", 0),
                kw.get("dilation", 1),
                kw.get("ceil_mode", False),
            )
        raise NIRExportError(
            f"operation {getattr(f, '__name__', f)!r} ({n.name}) has no NIR node; NIR sums incoming edges "
            "(+), and AND/IAND of spikes and max-pool of spikes are lowered; express the rest as layers"
        )


def _check_plain(model: nn.Module, what: str) -> None:
    if any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError(
            f"model is still parametrized; call snnprune.finalize(model) (or compact it) before {what}"
        )


def _refuse_products(model: nn.Module) -> None:
    """A product of two activations (attention, :mod:`snnprune.products`) has no NIR node: refuse it by name."""
    from snnprune.products import PRODUCT_TYPES

    for name, m in model.named_modules():
        if isinstance(m, PRODUCT_TYPES):
            raise NIRExportError(
                f"{name}: {type(m).__name__} multiplies two activations (attention), which NIR cannot express "
                "(its nodes sum weighted inputs, none multiplies two); export a model without attention"
            )


def _lower(
    model: nn.Module, example_input: Tensor, dt: float, portable: bool = False
) -> tuple[nir.NIRGraph, list[tuple[str, str]]]:
    """Trace a single-step copy (``nir_step`` if the class has it) and lower it; also the folded pairs."""
    _refuse_products(model)
    net = copy.deepcopy(model).cpu().float().eval()
    functional.set_step_mode(net, "s")
    functional.reset_net(net)
    step = getattr(type(net), "nir_step", None)
    if step is not None:  # trace nir_step as the forward of this private copy
        net.__class__ = type(type(net).__name__, (type(net),), {"forward": step})
    tracer = _Tracer()
    graph = tracer.trace(net)
    gm = fx.GraphModule(tracer.root, graph)
    shapes = _shapes(gm, example_input.detach().cpu().float())
    lowering = _Lowering(gm, shapes, dt, portable)
    return lowering.run(), lowering.folded


def fold_batchnorm(model: nn.Module, example_input: Tensor) -> nn.Module:
    """A copy of ``model`` with every BatchNorm that :func:`export_nir` folds folded the same way.

    The folded convolutions hold the float32 weights and biases the NIR file holds, and each BatchNorm
    becomes ``nn.Identity``: this is the network the graph describes, in the model's own step mode, the
    reference :func:`snnprune.verify_nir` compares spikes with.

    Args:
        model: the finalized or compacted network (not changed).
        example_input: one time step's input ``[N, ...]``.
    """
    _check_plain(model, "fold_batchnorm")
    _, pairs = _lower(model, example_input, 1e-4)
    net = copy.deepcopy(model).eval()
    for conv_name, bn_name in pairs:
        conv, bn = net.get_submodule(conv_name), net.get_submodule(bn_name)
        w, b = _fold_bn(conv, bn)
        with torch.no_grad():
            conv.weight.copy_(w.to(conv.weight.dtype))
            conv.bias = nn.Parameter(b.to(conv.weight.dtype).to(conv.weight.device))
        parent, _, leaf = bn_name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, leaf, nn.Identity())
    return net


def export_nir(
    model: nn.Module,
    example_input: Tensor,
    path: str | Path | None = None,
    *,
    dt: float = 1e-4,
    T: int | None = None,
    portable: bool = False,
) -> nir.NIRGraph:
    """Export a finalized or compacted spiking network as a NIR graph (and write it to ``path``).

    Args:
        model: the network, without parametrizations (``snnprune.finalize`` or ``snnprune.compact`` it
            first); it is copied, never changed. Its ``nir_step(x)`` is traced when it has one (see the
            module docstring), else its ``forward``.
        example_input: one time step's input ``[N, ...]`` (for a static-image SEW ResNet: the image).
        path: HDF5 file to write (with its SHA-256 in ``<path>.sha256``), or None; its folder must exist.
        dt: simulation time step in seconds (sets IF's ``r = 1/dt`` and LIF's ``tau = τ·dt``).
        T: time steps, recorded in the metadata; default the model's ``T`` attribute.
        portable: emit only what outside importers run unmodified (see ``snnprune/docs/nir.md``): time in
            steps (``dt = 1``: IF ``r = 1``, LIF ``tau`` in steps, ``r = 1``, the input gain of a LIF
            without ``decay_input`` folded into the layer feeding it; the ``dt`` argument is not used),
            average pooling as ``SumPool2d`` with its
            1/k² folded into the next ``Conv2d`` / ``Linear`` (in float64), and a file without
            ``v_reset`` (always 0 here), which ``nir`` 1.0.4 (Sinabs' pin) can read. It targets the public
            importers of SpikingJelly and Norse (where ``nirtorch.load``'s depth-first order runs the graph
            in order: not a SEW downsample block); Sinabs reads it with its own neuron models.

    Returns:
        The ``nir.NIRGraph``; its metadata holds ``T``, ``dt``, ``input_encoding`` and ``output_rule``.

    Raises:
        NIRExportError: a layer NIR cannot express (the message names it and the alternative).
        ValueError: ``dt`` not finite and > 0, ``T`` outside 1..:data:`MAX_T`, an ``example_input`` the model
            cannot take, a ``path`` that cannot be written, non-finite weights, or a model that is still
            parametrized (one line each, before any work).
    """
    T = getattr(model, "T", None) if T is None else T
    check_dt_T(dt, T, "export_nir")
    if not isinstance(example_input, Tensor) or example_input.dim() < 2:
        raise ValueError("example_input must be one time step's input tensor [N, ...]; pass e.g. images[:2]")
    if path is not None:
        _check_destination(Path(path))
    _check_plain(model, "export_nir")
    for name, t in model.state_dict().items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"export_nir: the model's {name!r} holds non-finite values (NaN or inf); export a model whose "
                "weights are all finite"
            )
    dt = 1.0 if portable else float(dt)
    try:
        out, _ = _lower(model, example_input, dt, portable)
    except RuntimeError as exc:  # the shape pass: an input the model cannot take
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ValueError(
            f"example_input: the model cannot run on a {list(example_input.shape)} input ({first}); pass one "
            "time step's input [N, C, H, W] with the model's channels"
        ) from None
    out.metadata = {
        "T": int(T),
        "dt": dt,
        "time": (
            "discrete: one step per dt = 1, LIF tau in steps, IF r = 1"
            if portable
            else "Euler steps of dt seconds: IF r = 1/dt, LIF tau = steps * dt"
        ),
        "input_encoding": "the same input at every one of the T steps",
        "output_rule": "mean over the T steps of the output node",
        "producer": "snnprune.export_nir",
    }
    if path is not None:
        from snnprune import files

        nir.write(str(path), out)
        if portable:
            _drop_v_reset(path)
        files.write_digest(path)  # after the last change to the bytes, so verify_nir refuses a damaged copy
    return out


def _check_destination(path: Path) -> None:
    """``path`` can be written: not a folder, in an existing folder we may write to."""
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"path: {str(path)!r} is a folder; pass a .nir file name")
    if not folder.is_dir():
        raise ValueError(f"path: the folder {str(folder)!r} does not exist; create it or write elsewhere")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"path: {str(path)!r} cannot be written (permission denied); write elsewhere")


def _drop_v_reset(path: str | Path) -> None:
    """Remove the (all-zero) ``v_reset`` of every neuron from a written file: ``nir`` 1.0.4's ``IF`` and
    ``LIF`` have no such field and refuse the file, nir 1.0.8 fills in zeros."""
    import h5py  # nir's own dependency

    with h5py.File(path, "r+") as f:
        for node in f["node"]["nodes"].values():
            if "v_reset" in node:
                del node["v_reset"]


def nir_nonzeros(graph: nir.NIRGraph) -> int:
    """Non-zero weights in the synaptic nodes (``Conv2d``, ``Affine``, ``Linear``) of a NIR graph.

    Args:
        graph: the graph (as returned by :func:`export_nir` or ``nir.read``).
    """
    return sum(
        int(np.count_nonzero(node.weight))
        for node in graph.nodes.values()
        if isinstance(node, (nir.Conv2d, nir.Affine, nir.Linear))
    )


def model_nonzeros(model: nn.Module) -> int:
    """Non-zero weights of the model's Conv2d and Linear layers (what :func:`nir_nonzeros` should equal).

    Args:
        model: the network.
    """
    return sum(
        int(torch.count_nonzero(m.weight)) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    )
