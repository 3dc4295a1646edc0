"""Re-import a NIR graph in SpikingJelly, snnTorch, Norse, Sinabs, spyx and Rockpool; compare with the source model.

Two kinds of rows. A row named after a framework (``"norse"``) runs that framework's *public* importer
unmodified, as a user deploying the file would: what it reports is what that user gets. A row named
``"<framework>+snnprune"`` runs the framework's own node converters with snnprune's help, listed in its
``added``: converters for the nodes the importer lacks (``Threshold`` and ``Scale`` for AND/IAND and
max-pool, ``SumPool2d`` with padding), thresholds one float32 step down where the framework spikes on
v > θ, and nirtorch's graph executor (``nirtorch.nir_to_torch``, which sums the incoming edges of a node and
executes in topological order) where the public importer uses the deprecated depth-first ``nirtorch.load``,
which runs residual graphs in the wrong order (Norse, Sinabs).
"""

from __future__ import annotations

import contextlib
import copy
import graphlib
import importlib
import io
import logging
import warnings
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import nir
import nirtorch
import numpy as np
import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.base import MemoryModule
from torch import Tensor, nn
from tqdm.auto import tqdm

from .nir_export import check_dt_T, fold_batchnorm

__all__ = ["FRAMEWORKS", "PUBLIC", "format_rows", "verify_nir"]

PUBLIC: tuple[str, ...] = ("spikingjelly", "snntorch", "norse", "sinabs", "spyx", "rockpool")
"""The frameworks whose public importer runs unmodified (one row each)."""
FRAMEWORKS: tuple[str, ...] = (*PUBLIC, "spikingjelly+snnprune", "snntorch+snnprune", "norse+snnprune")
"""Every row :func:`verify_nir` can produce: the public importers, then those helped by snnprune."""


class _Threshold(nn.Module):
    """NIR ``Threshold``: H(x − θ) (θ is 0.5 or 1.5 in exported graphs: no ties on integer inputs)."""

    def __init__(self, node: nir.Threshold) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.as_tensor(np.asarray(node.threshold), dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return (x > self.threshold).to(x.dtype)


class _Scale(nn.Module):
    """NIR ``Scale``: x · s."""

    def __init__(self, node: nir.Scale) -> None:
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.asarray(node.scale), dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _sum_pool(node: nir.SumPool2d) -> nn.Module:
    """NIR ``SumPool2d`` with zero padding (nirtorch's and Norse's converters drop the padding)."""
    k, s, p = (tuple(int(v) for v in np.atleast_1d(a)) for a in (node.kernel_size, node.stride, node.padding))
    return nn.AvgPool2d(k, s, p, count_include_pad=True, divisor_override=1)


_ADDED = {nir.Threshold: _Threshold, nir.Scale: _Scale, nir.SumPool2d: _sum_pool}


def _needs(graph: nir.NIRGraph) -> list[str]:
    """Node types of the graph that need a converter from here."""
    return sorted({type(n).__name__ for n in graph.nodes.values() if type(n) in _ADDED})


def _threshold_down(graph: nir.NIRGraph) -> nir.NIRGraph:
    """The graph with every IF/LIF ``v_threshold`` one float32 step lower: for float32 potentials
    ``v > nextafter(θ, −∞)`` is exactly ``v ≥ θ``, SpikingJelly's rule (which the source model follows)."""
    nodes = dict(graph.nodes)
    for name, node in graph.nodes.items():
        if isinstance(node, (nir.IF, nir.LIF)):
            node = copy.copy(node)
            th = np.asarray(node.v_threshold, dtype=np.float32)
            node.v_threshold = np.nextafter(th, np.float32(-np.inf))
            nodes[name] = node
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(graph.metadata))


@contextlib.contextmanager
def _frameworks_root_log_dropped():
    """Drop the importers' own notes to the root logger (nirtorch's graph executor logs on the root logger)
    while a row runs; the filter is removed afterwards, other records pass."""

    def keep(record: logging.LogRecord) -> bool:
        return "nirtorch" not in record.pathname

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


_STEP_DOWN = "v_threshold one float32 step down (spikes on v > θ)"
#: The note :func:`format_rows` gives the ``"source model"`` row: what its mismatches are.
SOURCE_NOTE = (
    "the model before vs after BN folding: a potential at a threshold tie can flip in float32 rounding"
)


def depth_first_misorder(graph: nir.NIRGraph) -> str | None:
    """Where the deprecated ``nirtorch.load`` (behind Norse's, Sinabs' and Rockpool's ``from_nir``) runs a
    node before one of its inputs, else None. It runs the nodes in depth-first preorder from ``input``, each
    node's out-edges in the graph's order, and a node runs when first reached: a chain and a residual block
    whose skip edge comes after its branch run in order; two branches that each hold a node and meet in
    one sum (a SEW ResNet's downsample block) do not."""
    out: dict[str, list[str]] = {}
    for a, b in graph.edges:
        out.setdefault(a, []).append(b)
    order: list[str] = []

    def visit(node: str) -> None:
        order.append(node)
        for child in out.get(node, []):
            if child not in order:
                visit(child)

    visit("input")
    rank = {n: i for i, n in enumerate(order)}
    for a, b in graph.edges:
        if a in rank and b in rank and rank[a] > rank[b]:
            return f"nirtorch.load's depth-first order runs {b!r} before its input {a!r}"
    return None


def _public_spikingjelly(graph: nir.NIRGraph, dt: float) -> tuple[nn.Module, list[str]]:
    from spikingjelly.activation_based.nir_exchange import from_nir

    return from_nir.import_from_nir(graph, dt=dt), []


def _public_snntorch(graph: nir.NIRGraph, dt: float) -> tuple[nn.Module, list[str]]:
    from snntorch import import_nir

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a warning per LIF layer
        return import_nir.import_from_nir(graph), []


def _public_norse(graph: nir.NIRGraph, dt: float) -> tuple[nn.Module, list[str]]:
    from norse.torch import from_nir

    return from_nir(graph, ignore_warnings=True, dt=dt), []


def _public_sinabs(graph: nir.NIRGraph, dt: float) -> tuple[nn.Module, list[str]]:
    try:
        import sinabs
    except ImportError as e:
        raise ImportError(
            "sinabs is not installed here (sinabs 3.1.3 pins nir<=1.0.4); run it in its own environment, "
            "as scripts/nir_importers.py does"
        ) from e
    # one time step per call: the squeeze layers keep their state between calls
    return sinabs.from_nir(graph, batch_size=None, num_timesteps=1), []


#: The node types spyx 1.0.0's ``from_nir`` builds a layer for (``spyx/nir.py``); it skips any other node.
_SPYX_READS = (nir.Affine, nir.Linear, nir.Conv2d, nir.SumPool2d, nir.IF, nir.LIF, nir.CubaLIF, nir.Flatten)


def _spyx_chain(graph: nir.NIRGraph) -> list[str]:
    """The nodes spyx 1.0.0's ``from_nir`` walks: from ``input``, the first edge out of each node."""
    chain, node = [], "input"
    while True:
        node = next((b for a, b in graph.edges if a == node), None)
        if node is None or node == "output" or node in chain:
            return chain
        chain.append(node)


def spyx_dropped(graph: nir.NIRGraph) -> list[str]:
    """The nodes spyx 1.0.0's ``from_nir`` leaves out of the network it builds, without a word: it follows
    one chain from ``input`` (:func:`_spyx_chain`), so a node off that chain (a residual branch) is not
    read, and a node on it of a type it has no layer for (``AvgPool2d``, ``Threshold``, ``Scale``) is
    skipped."""
    chain = _spyx_chain(graph)
    return [
        n
        for n, v in graph.nodes.items()
        if not isinstance(v, (nir.Input, nir.Output)) and (n not in chain or not isinstance(v, _SPYX_READS))
    ]


def _channels(a: np.ndarray, last: bool) -> np.ndarray:
    """``[B, C, H, W]`` ↔ ``[B, H, W, C]`` (spyx runs channels-last); other ranks unchanged."""
    if a.ndim != 4:
        return a
    return a.transpose(0, 2, 3, 1) if last else a.transpose(0, 3, 1, 2)


class _SpyxSteps(nn.Module):
    """The network spyx's ``from_nir`` built, one time step per call: its ``Sequential`` layer by layer, as
    its own ``__call__`` runs them, with channels-first torch tensors in and out. Each neuron layer's
    spikes pass through a child module named after its NIR node, so that hooks record them."""

    def __init__(self, model: Any, neurons: list[str]) -> None:
        super().__init__()
        self.spyx, self.neurons = model, neurons
        for n in neurons:
            self.add_module(n, nn.Identity())

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, list]:
        import jax.numpy as jnp

        h = jnp.asarray(_channels(x.numpy(), last=True))
        state = self.spyx.initial_state(x.shape[0]) if state is None else state
        new, k = [], 0
        for layer, s in zip(self.spyx.layers, state, strict=True):
            if s is None:
                h = layer(h)
            else:
                h, s = layer(h, s)
                self.get_submodule(self.neurons[k])(torch.from_numpy(_channels(np.array(h), last=False)))
                k += 1
            new.append(s)
        return torch.from_numpy(_channels(np.array(h), last=False)), new


def _public_spyx(graph: nir.NIRGraph, dt: float) -> tuple[nn.Module, list[str]]:
    try:
        import jax.numpy as jnp
        from spyx import nir as spyx_nir
    except ImportError as e:
        raise ImportError(
            "spyx is not installed here (spyx 1.0.0 runs on JAX); run it in its own environment, as "
            "scripts/nir_importers.py --spyx-python does"
        ) from e
    shape = tuple(int(v) for v in np.asarray(graph.nodes["input"].input_type["input"]))
    shape = (*shape[1:], shape[0]) if len(shape) == 3 else shape
    model, _ = spyx_nir.from_nir(graph, jnp.zeros((1, 1, *shape)), dt=dt)
    dropped = spyx_dropped(graph)
    if dropped:
        kinds = sorted({type(graph.nodes[n]).__name__ for n in dropped})
        raise RuntimeError(
            f"spyx builds a network without {len(dropped)} of the graph's nodes ({', '.join(kinds)}: "
            f"{', '.join(dropped[:4])}{', ...' if len(dropped) > 4 else ''}), without an error: it reads "
            "one chain from input"
        )
    neurons = [n for n in _spyx_chain(graph) if isinstance(graph.nodes[n], (nir.IF, nir.LIF, nir.CubaLIF))]
    return _SpyxSteps(model, neurons), []


def _public_rockpool(graph: nir.NIRGraph, dt: float) -> tuple[nn.Module, list[str]]:
    try:
        from rockpool.nn.modules.torch.nir import from_nir
    except ImportError as e:
        raise ImportError(
            "rockpool is not installed here; run it in its own environment, as "
            "scripts/nir_importers.py --rockpool-python does"
        ) from e
    return from_nir(graph), []


def _load_spikingjelly(graph: nir.NIRGraph, dt: float) -> tuple[nn.Module, list[str]]:
    from spikingjelly.activation_based.nir_exchange import from_nir

    added = _needs(graph)
    # the importer's own node map (SpikingJelly exposes no public hook to extend it)
    node_map = {**from_nir._NodeMapper(dt=dt).map_dict, **_ADDED}
    return nirtorch.nir_to_torch(graph, node_map), added


def _load_snntorch(graph: nir.NIRGraph, dt: float) -> tuple[nn.Module, list[str]]:
    from snntorch import import_nir

    graph, added = _threshold_down(graph), [_STEP_DOWN, *_needs(graph)]
    with contextlib.redirect_stdout(io.StringIO()):  # its converter prints a warning per LIF layer
        convert = partial(import_nir._nir_to_snntorch_module, init_hidden=True)  # the importer's converter
        classes = (
            nir.Affine,
            nir.Linear,
            nir.Conv2d,
            nir.Flatten,
            nir.AvgPool2d,
            nir.IF,
            nir.LIF,
            nir.CubaLIF,
        )
        return nirtorch.nir_to_torch(graph, {**{c: convert for c in classes}, **_ADDED}), added


def _load_norse(graph: nir.NIRGraph, dt: float) -> tuple[nn.Module, list[str]]:
    import_nir = importlib.import_module("norse.torch.utils.import_nir")
    convert = partial(import_nir._import_norse_module, ignore_warnings=True, dt=dt)  # Norse's converter
    classes = (nir.Affine, nir.Conv2d, nir.Flatten, nir.Linear, nir.IF, nir.LIF, nir.CubaLIF)
    graph, added = _threshold_down(graph), ["nirtorch executor", _STEP_DOWN, *_needs(graph)]
    return nirtorch.nir_to_torch(graph, {**{c: convert for c in classes}, **_ADDED}), added


_DEPTH_FIRST = ("norse", "sinabs", "rockpool")  # public importers built on nirtorch.load

_LOADERS = {
    "spikingjelly": _public_spikingjelly,
    "snntorch": _public_snntorch,
    "norse": _public_norse,
    "sinabs": _public_sinabs,
    "spyx": _public_spyx,
    "rockpool": _public_rockpool,
    "spikingjelly+snnprune": _load_spikingjelly,
    "snntorch+snnprune": _load_snntorch,
    "norse+snnprune": _load_norse,
}


def _batches(data: Any, max_batches: int | None) -> Iterable[tuple[Tensor, Tensor | None]]:
    if isinstance(data, Tensor):
        data = [(data, None)]
    elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        data = [data]
    for i, batch in enumerate(data):
        if max_batches is not None and i >= max_batches:
            return
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        yield x, y


def _read(path: Path) -> nir.NIRGraph:
    """``nir.read`` of a file, one :class:`ValueError` line when it is missing, truncated or damaged."""
    if not path.is_file():
        raise ValueError(f"graph_or_path: {str(path)!r} is not a file; pass the .nir file export_nir wrote")
    from snnprune import files

    try:
        files.verify_digest(path)  # the digest export_nir wrote beside it, when there is one
        return nir.read(str(path))
    except files.CorruptFileError as exc:
        raise ValueError(f"graph_or_path: {exc}") from None
    except Exception as exc:  # h5py/nir raise many kinds on a damaged HDF5 file
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise ValueError(
            f"graph_or_path: {str(path)!r} is not a readable NIR file ({type(exc).__name__}: {first[:120]}); "
            "export it again"
        ) from None


def _check_describes(graph: nir.NIRGraph, model: nn.Module, names: list[str]) -> None:
    """The graph has a node for every neuron of ``model`` and, for every Conv2d/Linear, a node with as many
    weights; else one :class:`ValueError` line (the graph of another model)."""
    nodes = getattr(graph, "nodes", None)
    if not isinstance(nodes, dict):
        raise ValueError("graph_or_path: not a NIR graph with nodes; pass the graph export_nir returned")
    fix = "pass the graph exported from this model"
    for n in names:
        if n.replace(".", "_") not in nodes:
            raise ValueError(f"graph_or_path: the graph has no node for the model's neuron {n!r}; {fix}")
    for n, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            node = nodes.get(n.replace(".", "_"))
            weight = getattr(node, "weight", None)
            if weight is None or np.size(weight) != m.weight.numel():
                raise ValueError(
                    f"graph_or_path: the graph's node for the model's layer {n!r} does not hold its "
                    f"{tuple(m.weight.shape)} weights; {fix}"
                )


def _check_wired(graph: nir.NIRGraph) -> None:
    """Every edge joins two nodes of the graph, every node but the input has an input edge, every node but
    the output feeds another, the graph has one output, and no edges form a cycle (export_nir writes a
    feed-forward graph: recurrence stays inside the neurons; the order from :mod:`graphlib`); else one
    :class:`ValueError` line naming the edge or node. nirtorch's executor looped forever on such graphs
    (made by dropping or swapping edges), so they are refused before the importers. ``nir.NIRGraph`` gives
    a node that feeds nothing an output node of its own (a residual sum that lost its branch or its
    shortcut): an output after the first in edge order is such a node's, and nirtorch's executor writes an
    output only as the last node of its queue, so two outputs wait for each other forever. An edge dropped
    where the graph stays wired (one of three inputs of a sum) is not caught here: the rows count the
    spikes it changes."""
    nodes, fix = graph.nodes, "pass the graph export_nir wrote for this model"
    inputs: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in graph.edges:
        if a not in nodes or b not in nodes:
            raise ValueError(f"graph_or_path: the edge {(a, b)} names a node the graph lacks; {fix}")
        inputs[b].append(a)
    outputs = list(dict.fromkeys(b for _, b in graph.edges if isinstance(nodes[b], nir.Output)))
    for a, b in graph.edges:
        if b in outputs[1:]:
            raise ValueError(
                f"graph_or_path: node {a!r} feeds no other node, only a second output {b!r}; {fix}"
            )
    fed = {a for a, _ in graph.edges}
    for n, node in nodes.items():
        if not inputs[n] and not isinstance(node, nir.Input):
            raise ValueError(f"graph_or_path: node {n!r} has no input edge; {fix}")
    for n, node in nodes.items():
        if n not in fed and not isinstance(node, nir.Output):
            raise ValueError(f"graph_or_path: node {n!r} feeds no other node; {fix}")
    try:
        tuple(graphlib.TopologicalSorter(inputs).static_order())
    except graphlib.CycleError as exc:
        first = next(b for _, b in graph.edges if b in exc.args[1])  # the cycle's first node in edge order
        raise ValueError(f"graph_or_path: node {first!r} is on a cycle of edges; {fix}") from None


def _neuron_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, MemoryModule) and n]


def _reference(model: nn.Module, x: Tensor, names: list[str], T: int) -> tuple[Tensor, dict[str, Tensor]]:
    """The source model's output and every neuron's spikes ``[T, N, ...]`` on one batch.

    A model with ``nir_step`` runs its own ``forward`` (all T steps, e.g. a SEW ResNet); any other model
    is a per-step network, run T times in single-step mode with its outputs averaged."""
    stepwise = getattr(type(model), "nir_step", None) is None
    if stepwise:
        model = copy.deepcopy(model)
        functional.set_step_mode(model, "s")
    spikes: dict[str, list[Tensor]] = {n: [] for n in names}
    modules = dict(model.named_modules())
    hooks = [
        modules[n].register_forward_hook(
            lambda m, i, o, n=n: spikes[n].append(o.detach().clone()), prepend=True
        )  # the neuron's own spikes, before an output mask (the graph's Scale node after it)
        for n in names
    ]
    try:
        functional.reset_net(model)
        with torch.no_grad():
            out = torch.stack([model(x) for _ in range(T)]).mean(0) if stepwise else model(x)
    finally:
        for h in hooks:
            h.remove()
        functional.reset_net(model)
    return out, {n: torch.stack(v) if stepwise else v[0] for n, v in spikes.items() if v}


def _imported(net: nn.Module, x: Tensor, T: int, names: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """Run the imported graph T steps on the same input; per-step outputs averaged, spikes stacked."""
    steps: dict[str, list[Tensor]] = {n: [] for n in names}
    modules = dict(net.named_modules())
    hooks = []
    for n in names:
        key = n.replace(".", "_")
        if key in modules:
            hooks.append(
                modules[key].register_forward_hook(
                    lambda m, i, o, n=n: steps[n].append(
                        (o[0] if isinstance(o, tuple) else o).detach().clone()
                    )
                )
            )
    for m in net.modules():  # snnTorch neurons with init_hidden keep their state inside
        if hasattr(m, "reset_hidden") and callable(m.reset_hidden):
            m.reset_hidden()
    for m in net.modules():  # Sinabs layers keep their state inside
        if hasattr(m, "reset_states") and callable(m.reset_states):
            m.reset_states()
    state, outs = None, []
    try:
        with torch.no_grad():
            for _ in range(T):
                out = net(x, state)
                out, state = out if isinstance(out, tuple) else (out, None)
                outs.append(out.flatten(1))
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(outs).mean(0), {n: torch.stack(v) for n, v in steps.items() if v}


def verify_nir(
    graph_or_path: nir.NIRGraph | str | Path,
    model: nn.Module,
    data: Any,
    *,
    frameworks: tuple[str, ...] = FRAMEWORKS,
    max_batches: int | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Re-import a NIR graph in other frameworks and compare spikes and outputs with ``model``.

    Args:
        graph_or_path: the graph from :func:`snnprune.export_nir`, or the file it wrote (checked against its
            ``.sha256`` when there is one; its metadata's ``T`` and ``dt`` must be in range).
        model: the model the graph was exported from (its forward gives the reference output: for a SEW
            ResNet the logits of the mean over T; every neuron's spikes are recorded by hooks).
        data: a DataLoader (or any iterable) of ``(x, y)`` batches, one ``(x, y)`` pair, or a tensor
            ``x`` (no top-1 then); ``x`` is one time step's input, fed at every step.
        frameworks: which rows of :data:`FRAMEWORKS` to run: a public importer unmodified
            (``"spikingjelly"``, ``"snntorch"``, ``"norse"``, ``"sinabs"``) or one helped by snnprune
            (``"norse+snnprune"``, ...; see the module docstring).
        max_batches: stop after this many batches (None: all).
        progress: tqdm bars (on stderr) over the frameworks and over the batches of each row.

    Spikes and outputs are compared with the network the graph describes: ``model`` with its BatchNorms
    folded as the exporter folds them (:func:`snnprune.interop.fold_batchnorm`), run in the model's own
    step mode. The first row, ``"source model"``, compares ``model`` itself with that network: folding
    changes the float32 rounding of the BN output, and a potential that sits exactly at the threshold can
    land on the other side (:func:`format_rows` says so; the framework rows compare with the folded network).
    The frameworks' deprecation warnings (Norse's ``torch.jit.script``, nirtorch's) are silenced here.

    Returns:
        One dict for the source model, then one per framework: ``framework``, ``loaded`` (bool), ``spike_mismatches`` (int, over every
        neuron of the model and every step; None if it did not run), ``max_abs_diff`` (float, outputs),
        ``top1`` (percent, None without labels), ``added`` (what snnprune changed for a ``+snnprune``
        row: converters with their node types, thresholds, executor; empty for a public row) and ``reason`` (why it could not load or run, else None). A framework that fails is a row
        with its reason, never an exception.

    Raises:
        ValueError: an unknown framework name; a missing, damaged or unreadable file; ``T``/``dt`` out of
            range; a graph that does not describe ``model``, or a miswired one (an edge to no node, a node
            without an input edge or that feeds nothing, a second output node, a cycle); one line each, before any work.
    """
    unknown = [f for f in frameworks if f not in _LOADERS]
    if unknown:
        raise ValueError(f"frameworks: unknown {unknown}; choose from {list(FRAMEWORKS)}")
    graph = _read(Path(graph_or_path)) if isinstance(graph_or_path, (str, Path)) else graph_or_path
    metadata = graph.metadata if isinstance(getattr(graph, "metadata", None), dict) else {}
    T, dt = metadata.get("T", 1), metadata.get("dt", 1e-4)
    check_dt_T(dt, T, "graph_or_path: its metadata")
    T, dt = int(T), float(dt)
    batches = list(_batches(data, max_batches))
    if not batches:
        raise ValueError("data: no batches; pass a DataLoader, an (x, y) pair or a tensor x")
    model = model.eval()
    names = _neuron_names(model)
    _check_describes(graph, model, names)
    _check_wired(graph)
    reference = fold_batchnorm(model, batches[0][0][:1])

    def compare(run, name: str) -> dict[str, Any]:
        mism, diff, correct, seen = 0, 0.0, 0, 0
        for x, y in tqdm(batches, desc=name, disable=not progress, leave=False):
            ref_out, ref_spk = _reference(reference, x, names, T)
            out, spk = run(x)
            if out.numel() != ref_out.numel():
                raise RuntimeError(
                    f"its output is {list(out.shape[1:])} per sample, the graph's {list(ref_out.shape[1:])}: "
                    "it ran another network than the graph's"
                )
            diff = max(diff, float((out - ref_out.reshape(out.shape)).abs().max()))
            for n, s in ref_spk.items():
                if n not in spk:
                    raise RuntimeError(f"neuron {n!r} has no module in the imported graph")
                mism += int((spk[n].reshape(s.shape) != s).sum())
            if y is not None:
                correct += int((out.argmax(1) == y).sum())
                seen += len(y)
        return {
            "spike_mismatches": mism,
            "max_abs_diff": diff,
            "top1": 100.0 * correct / seen if seen else None,
        }

    # first row: the source model itself against the graph's network (BN folded in float64, run in
    # float32): float rounding of the fold, which a spike at the threshold can turn into a flip
    rows = [{"framework": "source model", "loaded": True, "added": [], "reason": None}]
    rows[0].update(compare(lambda x: _reference(model, x, names, T), "source model"))
    for fw in tqdm(frameworks, desc="frameworks", disable=not progress):
        row: dict[str, Any] = {
            "framework": fw,
            "loaded": False,
            "spike_mismatches": None,
            "max_abs_diff": None,
        }
        row.update(top1=None, added=[], reason=None)
        with warnings.catch_warnings(), _frameworks_root_log_dropped():
            warnings.filterwarnings("ignore", r".*torch\.jit\.script.* is deprecated", FutureWarning)
            warnings.filterwarnings(
                "ignore", category=DeprecationWarning, module=r"(nirtorch|norse|snntorch)\b"
            )
            try:
                net, row["added"] = _LOADERS[fw](graph, dt)
                net = net.eval()
                row["loaded"] = True
            except Exception as e:
                row["reason"] = f"load: {type(e).__name__}: {e}".strip()[:300]
                rows.append(row)
                continue
            try:
                row.update(compare(lambda x, net=net: _imported(net, x.float(), T, names), fw))
            except Exception as e:
                row["reason"] = f"run: {type(e).__name__}: {e}".strip()[:240]
                misorder = depth_first_misorder(graph) if fw in _DEPTH_FIRST else None
                row["reason"] += f" ({misorder})" if misorder else ""
        rows.append(row)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`verify_nir` as a plain text table; the notes column says why a framework did not
    load or run, what was added for it, and what the ``"source model"`` row compares.

    Args:
        rows: the list :func:`verify_nir` returned.
    """
    head = f"{'framework':<21} {'loaded':<6} {'spike mismatches':>16} {'max |Δ out|':>11} {'top-1':>6}  notes"
    lines = [head, "-" * len(head)]
    for r in rows:
        mism = "-" if r["spike_mismatches"] is None else str(r["spike_mismatches"])
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"
        top1 = "-" if r["top1"] is None else f"{r['top1']:.1f}"
        notes = r["reason"] or (("added: " + ", ".join(r["added"])) if r["added"] else "")
        if r["framework"] == "source model" and not r["reason"]:
            notes = SOURCE_NOTE
        lines.append(f"{r['framework']:<21} {r['loaded']!s:<6} {mism:>16} {diff:>11} {top1:>6}  {notes}")
    return "\n".join(lines)
