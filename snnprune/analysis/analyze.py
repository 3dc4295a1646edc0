"""``analyze(model, data)``: spikes, sparsity, synaptic operations and energy of a network."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .counting import Collector
from .energy import EnergyModel
from .report import CONVENTIONS, Report, build_report
from .spikes import is_spiking

__all__ = ["analyze", "footprint_bytes"]


def footprint_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers, ``numel x element_size`` each (NeuroBench's Footprint).

    Counts what the module holds: with soft-threshold parametrizations attached that is the stored
    ``original`` weights plus the parametrizations' own parameters and buffers (thresholds...), not the
    effective weights; finalize (or compact) the model for the deployed footprint.
    """
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return params + sum(b.numel() * b.element_size() for b in model.buffers())


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _split_batch(batch: Any) -> tuple[Tensor, int | None]:
    """Return ``(input, number of samples)`` of one batch (a tensor or an ``(input, target, ...)`` pair).

    The number of samples is ``len(target)`` when a target tensor is given, else ``None``: it is then
    taken from the batch dimension the neurons see (see :func:`_bare_samples`).
    """
    target = None
    if isinstance(batch, Tensor):
        x = batch
    elif isinstance(batch, tuple | list) and batch and isinstance(batch[0], Tensor):
        x = batch[0]
        target = batch[1] if len(batch) > 1 else None
    else:
        raise ValueError(
            f"each batch must be a tensor or an (input, target) pair with a tensor input, got "
            f"{type(batch).__name__}; wrap dict-style loaders, e.g. ((b['image'], b['label']) for b in loader)"
        )
    if x.dim() == 0:
        raise ValueError("an input batch must have a batch dimension, got a 0-d tensor")
    if x.numel() == 0 or (isinstance(target, Tensor) and target.dim() >= 1 and target.shape[0] == 0):
        raise ValueError(
            f"analyze: data: a batch has no samples (input shape {tuple(x.shape)}); "
            "drop empty batches (e.g. DataLoader(..., drop_last=True) on a too small dataset)"
        )
    if isinstance(target, Tensor) and target.dim() >= 1:
        return x, int(target.shape[0])
    return x, None


def _bare_samples(x: Tensor, neuron_shape: tuple[bool, tuple[int, ...]] | None) -> int:
    """Samples of a batch given without target, from the batch dimension the first neuron saw.

    Args:
        x: the input tensor.
        neuron_shape: ``(multi_step, output shape)`` of the first spiking neuron in this batch, or None.

    Returns:
        ``x.shape[0]`` when the neurons see it as the batch (static ``[N, ...]`` input, or an ANN); ``N``
        of a time-first ``[T, N, ...]`` input that the neurons see as ``[T, N, ...]`` (multi-step) or step
        by step as ``[N, ...]`` (single-step).

    Raises:
        ValueError: when the input's shape does not match what the neurons see.
    """
    if neuron_shape is None:
        return int(x.shape[0])
    multi, shape = neuron_shape
    n = shape[1] if multi and len(shape) >= 2 else shape[0]
    if n == x.shape[0]:
        return int(x.shape[0])
    if x.dim() >= 2 and n == x.shape[1] and (not multi or shape[0] == x.shape[0]):
        return int(n)  # time-first [T, N, ...] input
    raise ValueError(
        f"analyze: data: cannot tell the number of samples of an input of shape {tuple(x.shape)}: the "
        f"first spiking neuron sees {'[T, N, ...]' if multi else '[N, ...]'} = {tuple(shape)}; "
        "pass (input, target) pairs so that len(target) gives it, or time_axis= (0 for [T, N, ...] inputs, "
        "1 for [N, T, ...])"
    )


def _axis_samples(x: Tensor, samples: int | None, time_axis: int, where: str) -> int:
    """Samples of a batch whose input has its time steps on ``time_axis`` (0 or 1): the other leading axis.

    Raises:
        ValueError: the input has fewer than two dimensions, or ``len(target)`` is not that axis' length.
    """
    if x.dim() < 2:
        raise ValueError(
            f"analyze: data: {where}time_axis={time_axis} needs inputs with a time and a batch axis, got shape "
            f"{tuple(x.shape)}; pass time_axis=None for [N, ...] inputs"
        )
    n = int(x.shape[1 - time_axis])
    if samples is not None and samples != n:
        raise ValueError(
            f"analyze: data: {where}len(target) = {samples} but time_axis={time_axis} makes axis {1 - time_axis} "
            f"of the input of shape {tuple(x.shape)} the batch ({n} samples); pass the time_axis of this layout"
        )
    return n


def _time_steps(
    time_steps: int | None, time_axis: int | None, x: Tensor, model: nn.Module, collector: Collector
) -> tuple[int, str]:
    """``(T, source)`` by the rule of :func:`analyze`, read after the first batch."""
    if time_steps is not None:
        return time_steps, "argument"
    if time_axis is not None:
        return int(x.shape[time_axis]), "time_axis"
    t = getattr(model, "T", None)
    if isinstance(t, int) and not isinstance(t, bool) and t >= 1:
        return t, "model.T"
    if collector.inferred_time_steps is not None:
        return collector.inferred_time_steps, "inferred from the neurons"
    return 1, "default"


def _check_time_steps(
    t: int,
    source: str,
    time_axis: int | None,
    x: Tensor,
    neuron_shape: tuple[bool, tuple[int, ...]] | None,
    where: str,
) -> None:
    """A multi-step first spiking neuron must run the batch's time steps (its leading dimension): the input's
    ``time_axis`` length when given, else ``t``."""
    if neuron_shape is None:
        return
    multi, shape = neuron_shape
    steps = int(x.shape[time_axis]) if time_axis is not None else t
    if not multi or len(shape) < 2 or shape[0] == steps:
        return
    layout = (
        "give the input in the layout the model reads (a time-first [T, N, ...] sequence for a model that reads "
        "[N, T, ...], like the SEW ResNets, is x.transpose(0, 1))"
    )
    if time_axis is not None:
        given = f"time_axis={time_axis} gives T = {steps}"
        fix = f"{layout} with the time_axis of that layout"
    else:
        given = {"argument": f"time_steps={t}", "model.T": f"model.T = {t}"}.get(
            source, f"the first batch has T = {t}"
        )
        fix = f"{layout}, or pass time_steps={shape[0]} if the model runs {shape[0]} steps on it"
    raise ValueError(
        f"analyze: data: {where}{given} but the first spiking neuron runs {shape[0]} time steps on the input of "
        f"shape {tuple(x.shape)} (it sees [T, N, ...] = {tuple(shape)}); {fix}"
    )


def _check_finite_counts(raw: list[dict[str, Any]]) -> None:
    """Raise when a layer's counts are NaN or inf although the input was finite (the model made them)."""
    bad = [r for r in raw if any(isinstance(v, float) and not math.isfinite(v) for v in r.values())]
    if bad:
        raise ValueError(
            f"analyze: model: the counts of layer {bad[0]['name']!r} are NaN or infinite although every input is "
            "finite: a layer before it produces NaN or inf; check the model's weights and forward for NaN/inf"
        )


def _is_single_pair(data: Any) -> bool:
    """Whether ``data`` is one ``(input, target)`` batch rather than a list of two input batches.

    Two tensors are one pair when the second is a 1-D integer tensor (class labels), or when their shapes
    differ and the second has the input's batch length (``N`` of ``[N, ...]`` or of a time-first
    ``[T, N, ...]``): float targets, one-hot or soft labels. Two tensors of the same shape are two batches.
    """
    if not (
        isinstance(data, tuple | list)
        and len(data) == 2
        and isinstance(data[0], Tensor)
        and isinstance(data[1], Tensor)
        and data[0].dim() >= 2
        and data[1].dim() >= 1
    ):
        return False
    x, y = data
    if not y.is_floating_point() and y.dim() == 1:
        return True
    if y.shape == x.shape:
        return False
    return y.shape[0] == x.shape[0] or (x.dim() >= 3 and y.shape[0] == x.shape[1])


class _ModelState:
    """Training flags and neuron memories of every module, restored exactly after analysis."""

    def __init__(self, model: nn.Module) -> None:
        self.flags = [(m, m.training) for m in model.modules()]
        self.memories: list[tuple[nn.Module, dict[str, Any], dict[str, Any]]] = []
        for m in model.modules():
            mem = m.__dict__.get("_memories")
            if isinstance(mem, dict):
                extra = {k: m.__dict__[k] for k in ("v_seq",) if k in m.__dict__}
                self.memories.append((m, dict(mem), extra))

    def restore(self) -> None:
        for m, flag in self.flags:
            m.training = flag
        for m, mem, extra in self.memories:
            m._memories.clear()
            m._memories.update(mem)
            m.__dict__.update(extra)


def analyze(
    model: nn.Module,
    data: Tensor | Iterable[Any],
    *,
    time_steps: int | None = None,
    time_axis: int | None = None,
    energy: EnergyModel | str | None = None,
    max_batches: int | None = None,
    progress: bool = True,
    convention: str = "ours",
    membrane: bool | None = None,
) -> Report:
    """Count spikes, synaptic operations (SOPs), MACs, sparsity and energy of ``model`` on ``data``.

    The model runs in eval mode under ``torch.no_grad()`` (and ``parametrize.cached()``, so soft-threshold
    parametrizations are evaluated once); forward hooks on every synaptic layer (``Conv1d/2d/3d``,
    ``Linear`` and their subclasses, e.g. ``spikingjelly.activation_based.layer.Conv2d``) and on every
    spiking neuron (any ``spikingjelly.activation_based.neuron.BaseNode``) accumulate on the model's
    device; the host reads them once at the end. Afterwards the model is exactly as it was found: every
    module's training flag, its hook dictionaries and the neuron memories (``v``...) are restored, also
    when the model raises.

    Counting rules (all counts are **per sample, summed over time steps**; ``*_per_step`` = per sample / T):

    * A synaptic layer fed with spikes counts SOPs exactly:
      :math:`\\mathrm{SOP} = \\sum_{\\text{out}} \\mathrm{conv}(x, 1[W \\neq 0])` (or the matmul), so pruned
      synapses, padding, stride, dilation and groups are accounted for. Inputs whose every element is a
      non-negative integer count each unit of value as one accumulate (SEW ``ADD`` outputs: 2 counts
      twice). Real-valued inputs (the encoding layer, anything after an average) count
      ``output positions x nnz(W)`` MACs (multiplications by non-zero weights).
    * The decision spike/real is taken per forward call, on the device.
    * A product of two activations (a module of :mod:`snnprune.products`: attention's ``Q K^T``, ``K ⊙ V``,
      the token sum, the mask) is a row of kind ``product``: accumulates where both binary operands are 1
      (integer values by value), ``ands`` for binary pairings, MACs for real values and for the attention
      scale (table in docs/analyze.md).
    * In a model without spiking neurons (ANN; or ``model.is_spiking is False``) every layer counts MACs; ``dense_macs`` (all weights,
      padding included) is reported for every synaptic layer in both cases.
    * Counts are summed over all forward calls and divided by the number of samples. A layer that runs once
      per sample (the encoding conv of the ``models`` SEW ResNets, whose output is repeated T times) is
      counted once; a model that repeats the input before the first conv (SpikingJelly's zoo) has it
      counted T times.
    * ``firing_rate``: for neurons, spikes per neuron per time step (mean output); for synaptic layers, the
      input event rate = mean input value over the spike/count calls (fraction of ones for binary
      spikes; mean count for SEW integer inputs), ``None`` for real-valued inputs.
      ``totals["firing_rate"]`` is the neuron-count-weighted mean over all spiking neurons.
    * ``energy_pj = energy_compute_pj + energy_memory_pj`` on every row and in the totals, with the chosen
      :class:`EnergyModel`: compute ``sops * E_AC + macs * E_MAC``; memory (weights and their sparse-format
      index, membrane potentials, spikes/activations; zero for the compute-only presets, the default).
    * ``convention`` picks the counting rules of ``sops``/``macs`` (memory terms always use the exact
      counts): ``"ours"`` (above); ``"spikingjelly"``, SpikingJelly 2.0.0's ``SynOpCounter`` +
      ``MACCounter``: SOPs only for exactly binary inputs, with the dense fan-out (zero weights counted),
      every non-binary input (SEW counts, real values) as dense MACs, BatchNorm's affine MACs on the norm
      rows; ``"syops"`` (syops-counter): dense ops x mean input rate for binary inputs, dense MACs for any
      other input, the encoding layer counted T times; ``"neurobench"``, NeuroBench 2.3.0's
      SynapticOperations: per call, ``sum 1[x != 0] . 1[W != 0]`` over the output (bias dropped, zero padding
      and zero inputs skipped) is ``sops`` (Effective_ACs) when every input value is in {-1, 0, 1}, else
      ``macs`` (Effective_MACs); ``dense_macs`` is its Dense (all-ones input and weights, padding
      skipped). Rule by rule: ``snnprune/docs/energy.md`` and ``docs/analyze.md``.
    * In every convention: ``totals["footprint_bytes"]`` (bytes of the model's parameters and buffers, as
      found: see :func:`footprint_bytes`), ``activation_sparsity`` on neuron rows and in the totals (zero
      outputs / outputs of the spiking neurons: NeuroBench's ActivationSparsity), and ``totals["sparsity"]``
      (zeros among the Linear/Conv weights: NeuroBench's ConnectionSparsity, which rounds it to 4 digits).

    Samples and time steps (one rule, also in ``docs/analyze.md``):

    * ``T`` is ``time_steps`` if given; else ``input.shape[time_axis]`` (first batch) if ``time_axis`` is
      given; else ``model.T`` (an int attribute); else what the first spiking neuron of the first batch
      sees (its leading dimension in multi-step mode, its calls per batch in single-step mode); else 1.
    * The samples of a batch are ``len(target)`` if the batch carries a target tensor; else
      ``input.shape[1 - time_axis]`` if ``time_axis`` is given; else the batch dimension the first spiking
      neuron sees (``N`` of its ``[T, N, ...]`` in multi-step mode) when it equals ``input.shape[0]``, or
      ``input.shape[1]`` (a time-first ``[T, N, ...]`` input); else ``input.shape[0]`` (no spiking neuron).
    * Check: on every batch a multi-step first spiking neuron must run (as its leading dimension)
      ``input.shape[time_axis]`` steps if ``time_axis`` is given, else ``T``. This rejects a time-first
      ``[T, N, ...]`` sequence given to a model that reads ``[N, T, ...]`` (the ``models`` SEW ResNets do,
      for 5-d inputs): that model mixes samples and time steps, so no sample count is right; give it
      ``x.transpose(0, 1)``. The mix-up cannot be seen when ``T == N``.

    Args:
        model: an SNN (multi-step or single-step SpikingJelly neurons) or an ANN, parametrized or not.
        data: one input batch (a tensor, or an ``(input, target)`` pair: any two tensors of different
            shapes whose second has the input's batch length, so one-hot and float targets work) or an
            iterable of batches, each a tensor or an ``(input, target, ...)`` tuple (a ``DataLoader``).
            Statistics are streamed. Samples per batch: see the rule above.
        time_steps: T used for the per-time-step values; default by the rule above.
        time_axis: the axis of every input batch that holds the time steps: 0 for ``[T, N, ...]``, 1 for
            ``[N, T, ...]``; the other of the two is the batch axis. ``None`` (default): the rule above.
        energy: an :class:`EnergyModel` or a preset name (``"fp32"`` default, ``"fp16"``, ``"int8"``...).
        max_batches: stop after this many batches.
        progress: show a tqdm progress bar for iterables (on stderr, when it is a terminal).
        convention: ``"ours"`` (default), ``"spikingjelly"``, ``"syops"`` or ``"neurobench"``.
        membrane: add NeuroBench's MembraneUpdates and NeuronOperations (``membrane_updates``,
            ``neuron_ops``, ``neuron_dense_ops`` per neuron row and in ``totals``; docs/analyze.md). ``None``
            (default): only under ``convention="neurobench"``; ``True``/``False``: under any convention.

    Returns:
        A :class:`Report` (``print`` it, ``to_dict()``, ``to_json(path)``, ``to_csv(path)``, ``plot()``).

    Raises:
        ValueError: a bad argument, an empty batch, no batches, a bare input whose number of samples
            cannot be told from what the neurons see (pass ``(input, target)`` pairs or ``time_axis``), a
            multi-step first neuron that does not run ``T`` steps, an input with NaN or inf (named by batch
            index; read once at the end of the run), an input whose channels (features) are not what the
            first synaptic layer expects, or counts made NaN/inf by the model itself.

    Warns:
        UserWarning: the first synaptic layer of an SNN receives integers above 1 (raw 0-255 pixels would
            be counted as spike counts).

    Example:
        >>> report = analyze(model, test_loader, max_batches=10)  # doctest: +SKIP
        >>> print(report)  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if time_steps is not None and (not isinstance(time_steps, int) or time_steps < 1):
        raise ValueError(f"time_steps must be a positive int or None, got {time_steps!r}")
    if time_axis is not None and (isinstance(time_axis, bool) or time_axis not in (0, 1)):
        raise ValueError(
            f"analyze: time_axis: must be 0 ([T, N, ...] inputs), 1 ([N, T, ...] inputs) or None (the rule in "
            f"docs/analyze.md), got {time_axis!r}"
        )
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches must be a positive int or None, got {max_batches!r}")
    if convention not in CONVENTIONS:
        raise ValueError(
            f"analyze: convention: unknown convention {convention!r}; choose one of {list(CONVENTIONS)} "
            "(see snnprune/docs/energy.md)"
        )
    energy_model = EnergyModel.resolve(energy)

    single = isinstance(data, Tensor) or _is_single_pair(data)
    if single:
        batches: Iterable[Any] = [data]
        total = 1
        show = False
    elif isinstance(data, Mapping) or isinstance(data, str | bytes) or not isinstance(data, Iterable):
        raise ValueError(
            f"data must be a tensor batch or an iterable of batches (e.g. a DataLoader), got "
            f"{type(data).__name__}"
        )
    else:
        batches = data
        try:
            total = len(data)  # type: ignore[arg-type]
        except TypeError:
            total = None
        if total is not None and max_batches is not None:
            total = min(total, max_batches)
        show = progress and sys.stderr.isatty()  # a bar on a terminal; never written into a redirected log

    device = _model_device(model)
    spiking = is_spiking(model)  # the rule the training engine uses too
    state = _ModelState(model)
    collector: Collector | None = None
    try:
        model.eval()
        with torch.no_grad(), parametrize.cached():
            collector = Collector(
                model,
                spiking=spiking,
                device=device,
                neurobench=convention == "neurobench",
                membrane=convention == "neurobench" if membrane is None else bool(membrane),
            )
            collector.attach()
            iterator = iter(batches)
            if show:
                from tqdm.auto import tqdm

                iterator = iter(tqdm(iterator, total=total, desc="analyze", leave=False))
            reset_net = None
            if spiking:
                from spikingjelly.activation_based.functional import reset_net
            t, source = 1, "default"
            for batch in iterator:
                where = "" if single else f"batch {collector.batches}: "
                x, samples = _split_batch(batch)
                if time_axis is not None:
                    samples = _axis_samples(x, samples, time_axis, where)
                x = x.to(device, non_blocking=True)
                collector.begin_batch(x)
                if reset_net is not None:
                    reset_net(model)
                model(x)
                if samples is None:
                    samples = _bare_samples(x, collector.batch_neuron_shape)
                if collector.batches == 0:
                    t, source = _time_steps(time_steps, time_axis, x, model, collector)
                _check_time_steps(t, source, time_axis, x, collector.batch_neuron_shape, where)
                collector.end_batch(samples)
                if max_batches is not None and collector.batches >= max_batches:
                    break
            if collector.batches == 0:
                raise ValueError("data yielded no batches; pass a non-empty tensor or DataLoader")
            raw = collector.finish()
    finally:
        if collector is not None:
            collector.detach()
        state.restore()

    if collector.nonfinite_batch is not None:
        where = "the input" if single else f"batch {collector.nonfinite_batch}"
        raise ValueError(
            f"analyze: data: {where} holds NaN or infinite values; replace them (e.g. torch.nan_to_num) or drop "
            "those samples before analyzing"
        )
    _check_finite_counts(raw)
    meta = {
        "spiking": spiking,
        "samples": collector.samples,
        "batches": collector.batches,
        "time_steps": t,
        "time_steps_source": source,
        "device": str(device),
        "energy_model": energy_model.to_dict(),
        "footprint_bytes": footprint_bytes(model),
    }
    report = build_report(raw, meta, energy_model, convention)
    _warn_unnormalised_input(report)
    return report


def _warn_unnormalised_input(report: Report) -> None:
    """Warn when the first synaptic layer of an SNN is fed integers above 1 (likely raw 0-255 pixels)."""
    if not report.meta.get("spiking"):
        return
    syn = sorted(
        (r for r in report.layers if r["kind"] in ("conv", "linear") and r.get("calls")),
        key=lambda r: r.get("access", {}).get("order", 0),
    )
    if not syn or syn[0].get("input") != "counts":
        return
    warnings.warn(
        f"analyze: the first layer {syn[0]['name']!r} receives integers above 1 (mean {syn[0]['firing_rate']:.3g}), "
        "counted as spike counts (one accumulate per unit); if these are un-normalised pixels (0-255), "
        "normalise the input (e.g. x / 255) so that it counts as real-valued MACs",
        UserWarning,
        stacklevel=3,
    )
