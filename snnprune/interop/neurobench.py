"""Run NeuroBench 2.3.0's own ``Benchmark`` on a SpikingJelly or snnprune model, in one call.

NeuroBench run plainly on a SpikingJelly model gives wrong numbers without an error: it hooks only ReLU and
Sigmoid (ActivationSparsity 0.0), carries the neurons' state across batches, keeps autograd graphs, counts
with the dense ``original`` weights of a parametrized layer, divides by ``data[0].size(0)`` (T for a
time-first input) and by the length of the whole dataset (wrong when fewer batches are run).
:func:`benchmark` wraps the model so that none of this happens and returns NeuroBench's result dict.
Needs the optional extra ``neurobench`` (``pip install snnprune[neurobench]``).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["DEFAULT_METRICS", "benchmark"]

#: NeuroBench metric class names run by default: ``(static, workload)``.
DEFAULT_METRICS: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("Footprint", "ConnectionSparsity"),
    ("ClassificationAccuracy", "ActivationSparsity", "SynapticOperations"),
)


def _neurobench() -> Any:
    try:
        import neurobench.benchmarks
        import neurobench.metrics.static
        import neurobench.metrics.workload
        import neurobench.models
    except ImportError as e:  # pragma: no cover - the extra is installed in the tested environment
        raise ImportError(
            "snnprune.interop.neurobench needs NeuroBench: pip install 'snnprune[neurobench]' (neurobench==2.3.0)"
        ) from e
    return neurobench


def _metric_classes(metrics: Sequence[Any] | None) -> list[list[type]]:
    """``[[static classes], [workload classes]]`` from names or classes, in one flat list or two lists."""
    nb = _neurobench()
    from neurobench.metrics.abstract import StaticMetric, WorkloadMetric

    if metrics is None:
        metrics = [*DEFAULT_METRICS[0], *DEFAULT_METRICS[1]]
    if metrics and all(isinstance(m, list | tuple) for m in metrics):
        metrics = [m for group in metrics for m in group]
    static: list[type] = []
    workload: list[type] = []
    for m in metrics:
        cls = m
        if isinstance(m, str):
            cls = getattr(nb.metrics.static, m, None) or getattr(nb.metrics.workload, m, None)
            if cls is None:
                raise ValueError(
                    f"benchmark: metrics: unknown NeuroBench metric {m!r}; use a class name of "
                    "neurobench.metrics.static or neurobench.metrics.workload, e.g. 'SynapticOperations'"
                )
        if isinstance(cls, type) and issubclass(cls, StaticMetric):
            static.append(cls)
        elif isinstance(cls, type) and issubclass(cls, WorkloadMetric):
            workload.append(cls)
        else:
            raise ValueError(
                f"benchmark: metrics: {m!r} is not a NeuroBench StaticMetric or WorkloadMetric class; pass "
                "classes or names from neurobench.metrics.static / neurobench.metrics.workload"
            )
    return [static, workload]


class _Batches:
    """The batches NeuroBench iterates, with ``dataset`` as long as the samples they hold."""

    def __init__(self, batches: list[tuple[Tensor, Tensor]]) -> None:
        self.batches = batches
        self.dataset = range(sum(int(x.shape[0]) for x, _ in batches))

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _prepare_batches(
    data: Any, time_axis: int | None, max_batches: int | None
) -> list[tuple[Tensor, Tensor]]:
    """``(input [N, ...], target)`` pairs: a time-first ``[T, N, ...]`` input (``time_axis=0``) is transposed."""
    if isinstance(data, Tensor) or (
        isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[1], Tensor)
    ):
        data = [data]
    out: list[tuple[Tensor, Tensor]] = []
    for i, batch in enumerate(data):
        if max_batches is not None and i >= max_batches:
            break
        if not (isinstance(batch, tuple | list) and len(batch) >= 2 and isinstance(batch[0], Tensor)):
            raise ValueError(
                f"benchmark: data: batch {i} is a {type(batch).__name__}, not an (input, target) pair; NeuroBench "
                "needs targets: pass a DataLoader of (input, target) pairs"
            )
        x, y = batch[0], batch[1]
        if time_axis == 0:
            if x.dim() < 2:
                raise ValueError(
                    f"benchmark: time_axis: 0 needs [T, N, ...] inputs, batch {i} has shape {tuple(x.shape)}; "
                    "pass time_axis=None for [N, ...] inputs"
                )
            x = x.transpose(0, 1)
        if isinstance(y, Tensor) and y.dim() >= 1 and y.shape[0] != x.shape[0]:
            raise ValueError(
                f"benchmark: data: batch {i} has {x.shape[0]} samples (input {tuple(batch[0].shape)}, time_axis="
                f"{time_axis}) but {y.shape[0]} targets; pass the time_axis of the input's layout"
            )
        out.append((x, y))
    if not out:
        raise ValueError("benchmark: data: no batches; pass a non-empty DataLoader of (input, target) pairs")
    return out


def _wrapped(model: nn.Module, time_axis: int | None) -> Any:
    """NeuroBench's ``TorchModel`` around a plain eval copy of ``model`` that resets neurons per batch."""
    nb = _neurobench()
    from spikingjelly.activation_based.functional import reset_net
    from spikingjelly.activation_based.neuron import BaseNode

    from snnprune.threshold import finalize

    net = copy.deepcopy(model)
    if any(parametrize.is_parametrized(m) for m in net.modules()):
        finalize(net)  # NeuroBench binarizes `weight.data`, which a parametrization recomputes
    net.eval()

    class SpikingJellyModel(nb.models.TorchModel):
        def __call__(self, batch: Tensor) -> Any:
            reset_net(self.net)
            if time_axis == 0:
                batch = batch.transpose(0, 1)  # back to the model's [T, N, ...]
            with torch.no_grad():
                return self.net(batch)

    wrapped = SpikingJellyModel(net)
    wrapped.add_activation_module(BaseNode)
    return wrapped


def benchmark(
    model: nn.Module,
    data: Iterable[Any],
    metrics: Sequence[Any] | None = None,
    *,
    time_axis: int | None = None,
    max_batches: int | None = None,
    postprocessors: list[Callable[[Any], Any]] | None = None,
) -> dict[str, Any]:
    """NeuroBench's ``Benchmark(...).run()`` on ``model``, set up for SpikingJelly models.

    The model is copied (``model`` is not modified), its parametrizations baked into plain weights
    (:func:`snnprune.finalize`), put in eval mode and run under ``torch.no_grad()`` with its neuron state
    reset before every batch; every SpikingJelly neuron (``BaseNode``) is registered as an activation
    module. The batches (at most ``max_batches``) are read into memory first, so that the dataset length
    NeuroBench divides by is the number of samples run; inputs read ``[T, N, ...]`` by the model
    (``time_axis=0``) are handed to NeuroBench as ``[N, T, ...]`` (it counts ``data[0].size(0)`` samples)
    and transposed back before the model sees them.

    Args:
        model: a SpikingJelly / snnprune model (or an ANN), parametrized or not.
        data: an iterable of ``(input, target)`` batches (a DataLoader), or one such pair.
        metrics: NeuroBench metric classes or class names, flat or as ``[static, workload]``; default
            :data:`DEFAULT_METRICS`.
        time_axis: the time axis of the model's input: 0 for ``[T, N, ...]``; None (default) or 1 for inputs
            whose first axis is the batch.
        max_batches: run at most this many batches.
        postprocessors: NeuroBench postprocessors of the model output; default ``argmax`` over the last
            axis (class predictions, as ClassificationAccuracy needs).

    Returns:
        NeuroBench's result dict (e.g. ``{"Footprint": ..., "SynapticOperations": {"Effective_MACs": ...}}``).

    Raises:
        RuntimeError: a NeuroBench workload metric failed (NeuroBench itself would report 0.0).
        ValueError: an unknown metric, a batch that is not an ``(input, target)`` pair, targets that do not
            match the samples of the input's layout, a bad ``time_axis`` or ``max_batches``, no batches.
    """
    if time_axis is not None and (isinstance(time_axis, bool) or time_axis not in (0, 1)):
        raise ValueError(
            f"benchmark: time_axis: must be 0 ([T, N, ...] inputs), 1 ([N, T, ...]) or None, got {time_axis!r}"
        )
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise ValueError(f"benchmark: max_batches: must be a positive int or None, got {max_batches!r}")
    metric_list = _metric_classes(metrics)
    loader = _Batches(_prepare_batches(data, time_axis, max_batches))
    wrapped = _wrapped(model, time_axis)
    if postprocessors is None:
        postprocessors = [lambda preds: preds.argmax(-1)]
    bench = _neurobench().benchmarks.Benchmark(wrapped, loader, [], postprocessors, metric_list)
    log = io.StringIO()
    try:
        # NeuroBench prints a failing workload metric and reports it as 0.0: read its log to raise instead
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(io.StringIO()):
            results = bench.run(quiet=False)
    finally:
        bench.workload_metric_manager.cleanup_hooks(wrapped)
    failed = [
        line for line in log.getvalue().splitlines() if line.startswith("Error running workload metric")
    ]
    if failed:
        raise RuntimeError(
            f"benchmark: NeuroBench: {failed[0]}; check that the postprocessed output matches what the metric "
            "expects (e.g. class indices of the targets' shape for ClassificationAccuracy)"
        )
    return results
