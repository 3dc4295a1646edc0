"""Hook-based counters of synaptic operations, MACs, spikes and parameters.

Counting rules (per forward call of a synaptic layer with effective weight :math:`W`, mask
:math:`M = 1[W \\neq 0]` and input :math:`x`):

* **fan-out map.** :math:`F = \\partial / \\partial x \\sum \\mathrm{conv}(x, M)`, i.e. for every input
  position the number of non-zero synapses that leave it inside the output (padding, stride, dilation
  and groups included; for a linear layer :math:`F_j = \\sum_i M_{ij}`). Because the convolution is linear
  in :math:`x`,

  .. math::

      \\mathrm{SOP} = \\sum_{\\text{out}} \\mathrm{conv}(x, M) = \\sum_{\\text{in}} x \\cdot F

  which is exact and costs one reduction over the batch plus a product with the cached :math:`F`.
* **spike or count input** (every element a non-negative integer, checked on the device for every call):
  the call adds :math:`\\sum x \\cdot F` SOPs; an input value of 2 (a SEW ``ADD`` output) counts as two
  accumulates.
* **real-valued input** (anything else, e.g. the pixels reaching the encoding conv or time-averaged rates
  reaching the classifier): the call adds ``output positions x nnz(W)`` effective MACs (output positions
  = output elements / output channels, summed over the batch and time steps).
* **ANN** (the model contains no spiking neuron): every call counts effective MACs, whatever the values.
* ``dense_macs`` is always ``output positions x numel(W)`` (the dense ANN-equivalent count, padding
  included as in every FLOP counter).

Accumulators live on the model's device; nothing is copied to the host before :meth:`Collector.finish`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from snnprune.threshold.parametrization import PRUNABLE_TYPES

__all__ = ["SYNAPTIC_TYPES", "Collector", "is_neuron", "is_spiking_model", "layer_kind"]

#: Module types whose weights are synapses (subclasses included, e.g. ``spikingjelly.activation_based.layer``):
#: the layers the thresholding core prunes.
SYNAPTIC_TYPES: tuple[type[nn.Module], ...] = PRUNABLE_TYPES

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)


def _base_node_type() -> type | None:
    try:
        from spikingjelly.activation_based.neuron import BaseNode
    except ImportError:  # pragma: no cover - spikingjelly is a hard dependency
        return None
    return BaseNode


def is_neuron(module: nn.Module) -> bool:
    """Whether ``module`` is a spiking neuron (an instance of SpikingJelly's ``BaseNode``)."""
    base = _base_node_type()
    return base is not None and isinstance(module, base)


def is_spiking_model(model: nn.Module) -> bool:
    """A model is spiking when it contains at least one spiking neuron."""
    return any(is_neuron(m) for m in model.modules())


def layer_kind(module: nn.Module) -> str | None:
    """Row kind of a module: ``conv``, ``linear``, ``neuron``, ``norm``, ``other`` or ``None`` (no row)."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, SYNAPTIC_TYPES):
        return "conv"
    if is_neuron(module):
        return "neuron"
    if isinstance(module, _NORM_TYPES):
        return "norm"
    return "other"


_CHUNK = 1 << 22


def _exact_sum(t: Tensor) -> Tensor:
    """Sum as a float64 0-d tensor without casting the whole tensor to float64.

    Chunks of :math:`2^{22}` elements are summed in float32 (exact for integer values while a chunk's sum
    stays below :math:`2^{24}`, i.e. mean value < 4) and the chunk sums in float64.
    """
    flat = t.reshape(-1)
    n = flat.numel()
    if n <= _CHUNK:
        return flat.sum(dtype=torch.float32).to(torch.float64)
    m = n // _CHUNK * _CHUNK
    head = flat[:m].view(-1, _CHUNK).sum(1, dtype=torch.float32).sum(dtype=torch.float64)
    return head + flat[m:].sum(dtype=torch.float32).to(torch.float64)


def _own_tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    """Deployable parameters owned by ``module``: direct parameters plus parametrized tensors (effective)."""
    out = [(n, p) for n, p in module.named_parameters(recurse=False)]
    if parametrize.is_parametrized(module):
        out += [(n, getattr(module, n)) for n in module.parametrizations]
    return out


@dataclass
class _Row:
    """Accumulators of one module."""

    name: str
    module: nn.Module
    kind: str
    params: int = 0
    nonzero: Tensor | None = None  # device scalar
    weight_numel: int = 0
    weight_nonzero: Tensor | None = None
    # synaptic layers
    mask: Tensor | None = None
    fanout: dict[tuple, Tensor] = field(default_factory=dict)
    calls: int = 0
    dense_macs: int = 0
    host_positions: int = 0  # output positions of calls counted as MACs without a device check (ANN)
    acc: Tensor | None = None  # [sops, real positions, in_events, in_elems, real_calls, max_in]
    # neurons
    spikes: Tensor | None = None
    elems: int = 0
    neurons: int = 0


class Collector:
    """Attach counting hooks to a model, accumulate on the device, and read everything back at once.

    Args:
        model: the network (parametrized or not).
        spiking: count spike/integer inputs as SOPs; ``False`` counts every synaptic call as MACs.
        device: device of the accumulators (the model's device).
    """

    def __init__(self, model: nn.Module, spiking: bool, device: torch.device) -> None:
        self.model = model
        self.spiking = spiking
        self.device = device
        self.rows: list[_Row] = []
        self.handles: list[Any] = []
        self.samples = 0
        self.batches = 0
        self.inferred_time_steps: int | None = None
        self._first_neuron: _Row | None = None
        self._first_neuron_calls = 0
        self._build()

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        skip: set[int] = set()
        for m in self.model.modules():
            if isinstance(m, parametrize.ParametrizationList):
                skip.update(id(s) for s in m.modules())
        for name, m in self.model.named_modules():
            if id(m) in skip:
                continue
            kind = layer_kind(m)
            tensors = _own_tensors(m)
            if kind in ("other", "norm") and not tensors:
                continue
            row = _Row(name=name or type(m).__name__, module=m, kind=kind)
            zero = torch.zeros((), dtype=torch.float64, device=self.device)
            row.nonzero = zero.clone()
            for _, t in tensors:
                row.params += t.numel()
                row.nonzero = row.nonzero + torch.count_nonzero(t.detach()).to(row.nonzero)
            if kind in ("conv", "linear"):
                w = m.weight.detach()
                row.mask = (w != 0).to(torch.float32)
                row.weight_numel = w.numel()
                row.weight_nonzero = row.mask.sum(dtype=torch.float64)
                row.acc = torch.zeros(6, dtype=torch.float64, device=w.device)
            if kind == "neuron":
                row.spikes = zero.clone()
            self.rows.append(row)

    def attach(self) -> None:
        """Register the forward hooks (removed by :meth:`detach`)."""
        for row in self.rows:
            if row.kind in ("conv", "linear"):
                self.handles.append(row.module.register_forward_hook(self._synaptic_hook(row)))
            elif row.kind == "neuron":
                self.handles.append(row.module.register_forward_hook(self._neuron_hook(row)))

    def detach(self) -> None:
        """Remove every hook this collector registered."""
        while self.handles:
            self.handles.pop().remove()

    # ------------------------------------------------------------------ hooks
    def _fanout(self, row: _Row, in_shape: tuple[int, ...], device: torch.device) -> Tensor:
        key = (in_shape, device)
        f = row.fanout.get(key)
        if f is not None:
            return f
        mask = row.mask.to(device)
        if row.kind == "linear":
            f = mask.sum(0).to(torch.float64)
        else:
            # F = d/dx sum(conv(x, M)): exact for every padding mode, stride, dilation and groups.
            with torch.inference_mode(False), torch.enable_grad():
                mask = mask.clone()  # a plain tensor even when analyze runs under inference_mode
                z = torch.zeros((1, *in_shape), dtype=torch.float32, device=device, requires_grad=True)
                y = row.module._conv_forward(z, mask, None)
                (f,) = torch.autograd.grad(y.sum(), z)
            f = f[0].to(torch.float64)
        row.fanout[key] = f
        return f

    def _synaptic_hook(self, row: _Row):
        module = row.module
        if row.kind == "linear":
            feat_dims = 1
            out_features = module.out_features
        else:
            feat_dims = 1 + len(module.kernel_size)
            out_features = module.out_channels
        spiking = self.spiking

        def hook(mod: nn.Module, args: tuple, output: Any) -> None:
            if not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
                return
            x = args[0]
            positions = output.numel() // out_features
            row.calls += 1
            row.dense_macs += positions * row.weight_numel
            if not spiking:
                row.host_positions += positions
                return
            x = x.detach().reshape(-1, *x.shape[x.dim() - feat_dims :])
            if not x.is_floating_point():
                x = x.float()
            f = self._fanout(row, tuple(x.shape[1:]), x.device)
            lo, hi = torch.aminmax(x)
            is_count = (lo >= 0) & ~torch.frac(x).any()
            xs = x.sum(0, dtype=torch.float32).to(torch.float64)  # [C, *spatial]: small next to x
            sops = (xs * f).sum()
            events = xs.sum()
            real = (~is_count).to(torch.float64)
            cnt = is_count.to(torch.float64)
            update = torch.stack(
                (
                    sops * cnt,
                    real * positions,
                    events * cnt,
                    cnt * x.numel(),
                    real,
                    hi.to(torch.float64) * cnt,
                )
            )
            acc = row.acc
            acc[:5] += update[:5]
            torch.maximum(acc[5:], update[5:], out=acc[5:])

        return hook

    def _neuron_hook(self, row: _Row):
        def hook(mod: nn.Module, args: tuple, output: Any) -> None:
            s = output[0] if isinstance(output, tuple | list) else output
            if not isinstance(s, Tensor) or s.dim() == 0:
                return
            row.spikes += _exact_sum(s.detach())
            row.elems += s.numel()
            multi = getattr(mod, "step_mode", "s") == "m" and s.dim() >= 2
            lead = 2 if multi else 1
            row.neurons = math.prod(s.shape[lead:])
            if self._first_neuron is None:
                self._first_neuron = row
            if row is self._first_neuron and self.batches == 0:
                if multi:
                    self.inferred_time_steps = int(s.shape[0])
                else:
                    self._first_neuron_calls += 1
                    self.inferred_time_steps = self._first_neuron_calls

        return hook

    def end_batch(self, samples: int) -> None:
        """Account for one finished batch of ``samples`` samples."""
        self.samples += samples
        self.batches += 1

    # ------------------------------------------------------------------ read back
    def finish(self) -> list[dict[str, Any]]:
        """Copy every accumulator to the host in one transfer and return raw (un-normalised) rows."""
        tensors: list[Tensor] = []
        for row in self.rows:
            tensors.append(row.nonzero.reshape(1).to(self.device))
            if row.acc is not None:
                tensors.append(row.acc.to(self.device))
                tensors.append(row.weight_nonzero.reshape(1).to(self.device))
            if row.spikes is not None:
                tensors.append(row.spikes.reshape(1).to(self.device))
        flat = torch.cat(tensors).cpu().tolist() if tensors else []
        out: list[dict[str, Any]] = []
        i = 0
        for row in self.rows:
            raw: dict[str, Any] = {
                "name": row.name,
                "kind": row.kind,
                "params": row.params,
                "nonzero_params": round(flat[i]),
            }
            i += 1
            if row.acc is not None:
                sops, real_positions, events, elems, real_calls, max_in = flat[i : i + 6]
                weight_nonzero = round(flat[i + 6])
                i += 7
                raw.update(
                    calls=row.calls,
                    weight_numel=row.weight_numel,
                    weight_nonzero=weight_nonzero,
                    sops=sops,
                    macs=(real_positions + row.host_positions) * weight_nonzero,
                    dense_macs=row.dense_macs,
                    in_events=events,
                    in_elems=elems,
                    real_calls=round(real_calls),
                    max_in=max_in,
                )
            if row.spikes is not None:
                raw.update(spikes=flat[i], elems=row.elems, neurons=row.neurons)
                i += 1
            out.append(raw)
        return out
