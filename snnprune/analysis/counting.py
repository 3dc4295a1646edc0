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

Accumulators live on the model's device; nothing is copied to the host before :meth:`Collector.finish`,
including the index of the first batch whose input holds NaN or infinite values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from snnprune.analysis.spikes import is_neuron
from snnprune.output_masks import has_output_mask, output_keep
from snnprune.products import PRODUCT_TYPES, SpikeMatmul, SpikeMul
from snnprune.threshold.parametrization import PRUNABLE_TYPES

__all__ = ["ACTIVATION_TYPES", "SYNAPTIC_TYPES", "Collector", "layer_kind"]

#: Module types whose weights are synapses (subclasses included, e.g. ``spikingjelly.activation_based.layer``):
#: the layers the thresholding core prunes.
SYNAPTIC_TYPES: tuple[type[nn.Module], ...] = PRUNABLE_TYPES

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)


#: Activation modules whose zero outputs count in ``activation_sparsity`` besides the spiking neurons
#: (NeuroBench 2.3.0's ``SUPPORTED_ACTIVATIONS``).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.Sigmoid)


def layer_kind(module: nn.Module) -> str | None:
    """Row kind of a module: ``conv``, ``linear``, ``neuron``, ``activation``, ``norm``, ``product`` (a product
    of two activations, :mod:`snnprune.products`), ``other`` or ``None`` (no row)."""
    if isinstance(module, PRODUCT_TYPES):
        return "product"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, SYNAPTIC_TYPES):
        return "conv"
    if is_neuron(module):
        return "neuron"
    if isinstance(module, ACTIVATION_TYPES):
        return "activation"
    if isinstance(module, _NORM_TYPES):
        return "norm"
    return "other"


_CHUNK = 1 << 22

# Layout of a synaptic row's device accumulator (float64): sums, then the running maximum.
_ACC = (
    "sops",  # sum x . F over spike/count calls (non-zero fan-out)
    "real_positions",  # output positions of real-valued calls
    "in_events",  # sum x over spike/count calls
    "in_elems",  # input elements of spike/count calls
    "real_calls",
    "dense_sops",  # sum x . F_dense over spike/count calls (all-ones fan-out: zeros counted)
    "binary_dense_sops",  # the same over calls whose input is exactly binary (SpikingJelly SynOps)
    "nonbinary_positions",  # output positions of calls whose input is not binary (SpikingJelly MACs)
    "syops_acs",  # dense ops x mean input of binary calls (syops ACs)
    "nonzero_input_macs",  # ANN: sum 1[x != 0] . F (MACs with a non-zero input activation)
    "real_in_elems",  # input elements of real-valued calls
    "nb_acs",  # NeuroBench: sum 1[x != 0] . F over calls whose every input is in {-1, 0, 1}
    "nb_macs",  # NeuroBench: the same over the other calls
    "nb_dense",  # NeuroBench: sum F_dense over every input element (padding skipped)
    "max_in",
)
_NZ_MACS = _ACC.index("nonzero_input_macs")
_NB = _ACC.index("nb_acs")

# Layout of a product row's device accumulator (float64; rules in docs/analyze.md).
_PROD = ("sops", "ands", "macs", "sj_sops", "sj_macs")
_MAX_IN = _ACC.index("max_in")


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
    acc: Tensor | None = None  # see _ACC
    in_numel: int = 0  # input elements over all calls
    out_numel: int = 0  # output elements over all calls
    in_step: int = 0  # input elements of one sample at one step (last call)
    out_step: int = 0  # output elements of one sample at one step (last call)
    order: int = -1  # rank of the first call in forward order
    batch_calls: int = 0  # calls during the first batch
    norm_macs: int = 0  # SpikingJelly's BN MACs (norm rows)
    # products of two activations (see _PROD)
    prod: Tensor | None = None
    # neurons
    spikes: Tensor | None = None
    nonzero_out: Tensor | None = None  # non-zero outputs (ActivationSparsity)
    elems: int = 0
    neurons: int = 0
    mem_updates: Tensor | None = None  # NeuroBench's MembraneUpdates (see Collector ``membrane``)
    v_prev: Any = None  # V[t-1] before the current call
    batch_steps: int = 0  # steps run in the current batch
    own_v_seq: bool = False  # store_v_seq switched on by the collector for this call


class Collector:
    """Attach counting hooks to a model, accumulate on the device, and read everything back at once.

    Args:
        model: the network (parametrized or not).
        spiking: count spike/integer inputs as SOPs; ``False`` counts every synaptic call as MACs.
        device: device of the accumulators (the model's device).
        neurobench: also accumulate NeuroBench's SynapticOperations (``nb_acs``, ``nb_macs``, ``nb_dense``;
            one more pass over each synaptic input, so only when asked).
        membrane: also accumulate NeuroBench's MembraneUpdates per neuron layer (``mem_updates``): in each
            batch every neuron counts at its first step, and at every later step t where its post-reset
            membrane potential V[t] differs from V[t-1] (one more comparison per neuron step, so only when
            asked).
    """

    def __init__(
        self,
        model: nn.Module,
        spiking: bool,
        device: torch.device,
        neurobench: bool = False,
        membrane: bool = False,
    ) -> None:
        self.model = model
        self.spiking = spiking
        self.neurobench = neurobench
        self.membrane = membrane
        self.device = device
        self.rows: list[_Row] = []
        self.handles: list[Any] = []
        self.samples = 0
        self.batches = 0
        self.inferred_time_steps: int | None = None
        #: ``(multi_step, output shape)`` of the first neuron call of the current batch (None before it)
        self.batch_neuron_shape: tuple[bool, tuple[int, ...]] | None = None
        #: index of the first batch whose input holds NaN or inf (set by :meth:`finish`; None: every input finite)
        self.nonfinite_batch: int | None = None
        self._nonfinite = torch.full((), -1.0, dtype=torch.float64, device=device)
        self._input_shape: tuple[int, ...] = ()
        self._synaptic_seen = False
        self._first_neuron: _Row | None = None
        self._first_neuron_calls = 0
        self._order = 0
        self._build()

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        skip: set[int] = set()
        for m in self.model.modules():
            if isinstance(m, parametrize.ParametrizationList):
                skip.update(id(s) for s in m.modules())
            if has_output_mask(m):  # a neuron's output mask: not a layer (its logits are not deployed)
                skip.update(id(s) for s in m.output_mask.modules())
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
                row.acc = torch.zeros(len(_ACC), dtype=torch.float64, device=w.device)
            if kind == "neuron":
                row.spikes = zero.clone()
                if self.membrane:
                    row.mem_updates = zero.clone()
            if kind in ("neuron", "activation"):
                row.nonzero_out = zero.clone()
            if kind == "product":
                row.prod = torch.zeros(len(_PROD), dtype=torch.float64, device=self.device)
            self.rows.append(row)

    def attach(self) -> None:
        """Register the forward hooks (removed by :meth:`detach`)."""
        for row in self.rows:
            if row.kind in ("conv", "linear"):
                self.handles.append(row.module.register_forward_pre_hook(self._input_size_hook(row)))
                self.handles.append(row.module.register_forward_hook(self._synaptic_hook(row)))
            elif row.kind == "neuron":
                if row.mem_updates is not None:
                    self.handles.append(row.module.register_forward_pre_hook(self._membrane_pre_hook(row)))
                    self.handles.append(row.module.register_forward_hook(self._membrane_hook(row)))
                self.handles.append(row.module.register_forward_hook(self._neuron_hook(row)))
            elif row.kind == "activation":
                self.handles.append(row.module.register_forward_hook(self._activation_hook(row)))
            elif row.kind == "product":
                self.handles.append(row.module.register_forward_hook(self._product_hook(row)))
            elif row.kind == "norm" and isinstance(row.module, nn.modules.batchnorm._BatchNorm):
                self.handles.append(row.module.register_forward_hook(self._norm_hook(row)))

    def detach(self) -> None:
        """Remove every hook this collector registered."""
        while self.handles:
            self.handles.pop().remove()

    # ------------------------------------------------------------------ hooks
    def begin_batch(self, x: Tensor) -> None:
        """Note the input of the next batch: its shape, and on the device whether it holds NaN or inf."""
        self._input_shape = tuple(x.shape)
        self._synaptic_seen = False
        for row in self.rows:
            row.batch_steps = 0
        if x.is_floating_point() or x.is_complex():
            bad = ~torch.isfinite(x).all()
            self._nonfinite = torch.where(bad & (self._nonfinite < 0), float(self.batches), self._nonfinite)

    def _input_size_hook(self, row: _Row):
        """Pre-hook: the first synaptic layer of a batch must receive the channels (features) it expects."""
        module = row.module
        if row.kind == "linear":
            expected, what, unit, feat_dims = module.in_features, "in_features", "features", 0
        else:
            expected, what, unit = module.in_channels, "in_channels", "channels"
            feat_dims = len(module.kernel_size)

        def hook(mod: nn.Module, args: tuple) -> None:
            if self._synaptic_seen:
                return
            self._synaptic_seen = True
            if not args or not isinstance(args[0], Tensor):
                return
            x = args[0]
            axis = x.dim() - 1 - feat_dims
            if axis >= 0 and x.shape[axis] == expected:
                return
            seen = "" if tuple(x.shape) == self._input_shape else f" (it receives {tuple(x.shape)})"
            got = f"{x.shape[axis]} {unit}" if axis >= 0 else f"a {x.dim()}-d tensor"
            raise ValueError(
                f"analyze: data: input of shape {self._input_shape} reaches the model's first synaptic layer "
                f"{row.name!r} ({type(mod).__name__}) with {got}{seen}, but it expects {what}={expected}; "
                f"give data with {expected} {unit if expected > 1 else unit[:-1]}, or a model built for this data"
            )

        return hook

    def _fanout(
        self, row: _Row, in_shape: tuple[int, ...], device: torch.device, dense: bool = False
    ) -> Tensor:
        key = (in_shape, device, dense)
        f = row.fanout.get(key)
        if f is not None:
            return f
        mask = row.mask.to(device)
        if dense:
            mask = torch.ones_like(mask)
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
        neurobench = self.neurobench

        def hook(mod: nn.Module, args: tuple, output: Any) -> None:
            if not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
                return
            x = args[0]
            positions = output.numel() // out_features
            row.calls += 1
            row.dense_macs += positions * row.weight_numel
            row.in_numel += x.numel()
            row.out_numel += output.numel()
            row.in_step = math.prod(x.shape[x.dim() - feat_dims :])
            row.out_step = math.prod(output.shape[output.dim() - feat_dims :])
            if row.order < 0:
                row.order = self._order
                self._order += 1
            if self.batches == 0:
                row.batch_calls += 1
            x = x.detach().reshape(-1, *x.shape[x.dim() - feat_dims :])
            if not x.is_floating_point():
                x = x.float()
            f = self._fanout(row, tuple(x.shape[1:]), x.device)
            nz_ops = None
            if neurobench or not spiking:
                # the MACs whose input is non-zero (zero-skipping) exactly: sum 1[x != 0] . F
                nz = (x != 0).sum(0, dtype=torch.float32).to(torch.float64)
                nz_ops = (nz * f).sum()
            if not spiking:
                # ANN: every call counts MACs
                row.host_positions += positions
                row.acc[_NZ_MACS] += nz_ops
                if neurobench:
                    lo, hi = torch.aminmax(x)
                    self._neurobench(row, x, nz_ops, (lo >= -1) & (hi <= 1) & ~torch.frac(x).any())
                return
            fd = self._fanout(row, tuple(x.shape[1:]), x.device, dense=True)
            lo, hi = torch.aminmax(x)
            frac = torch.frac(x).any()
            if neurobench:
                self._neurobench(row, x, nz_ops, (lo >= -1) & (hi <= 1) & ~frac)
            is_count = (lo >= 0) & ~frac
            is_binary = is_count & (hi <= 1)
            xs = x.sum(0, dtype=torch.float32).to(torch.float64)  # [C, *spatial]: small next to x
            sops = (xs * f).sum()
            dense_sops = (xs * fd).sum()
            events = xs.sum()
            zero = torch.zeros((), dtype=torch.float64, device=x.device)
            real = (~is_count).to(torch.float64)
            cnt = is_count.to(torch.float64)
            binary = is_binary.to(torch.float64)
            update = torch.stack(
                (
                    sops * cnt,
                    real * positions,
                    events * cnt,
                    cnt * x.numel(),
                    real,
                    dense_sops * cnt,
                    dense_sops * binary,
                    (1.0 - binary) * positions,
                    events * binary * (positions * row.weight_numel / max(x.numel(), 1)),
                    zero,
                    real * x.numel(),
                    zero,  # nb_acs, nb_macs, nb_dense: see _neurobench
                    zero,
                    zero,
                    hi.to(torch.float64) * cnt,
                )
            )
            acc = row.acc
            acc[:_MAX_IN] += update[:_MAX_IN]
            torch.maximum(acc[_MAX_IN:], update[_MAX_IN:], out=acc[_MAX_IN:])

        return hook

    def _neurobench(self, row: _Row, x: Tensor, nz_ops: Tensor, ternary: Tensor) -> None:
        """NeuroBench 2.3.0's SynapticOperations of one call (``x``: ``[rows, *features]``).

        The call counts ``sum 1[x != 0] . F`` (binarized input and weights, bias dropped) as ACs when every
        input value is in {-1, 0, 1}, else as MACs; Dense adds ``sum F_dense`` for every input row (all-ones
        input and weights; zero padding still contributes nothing).
        """
        fd = self._fanout(row, tuple(x.shape[1:]), x.device, dense=True)
        t = ternary.to(torch.float64)
        row.acc[_NB : _NB + 3] += torch.stack((nz_ops * t, nz_ops * (1.0 - t), fd.sum() * x.shape[0]))

    def _norm_hook(self, row: _Row):
        def hook(mod: nn.Module, args: tuple, output: Any) -> None:
            if args and isinstance(args[0], Tensor):
                row.calls += 1
                # SpikingJelly's MACCounter rule for aten.native_batch_norm: x * gamma + beta per element,
                # plus the two running-statistics updates per channel in training mode
                if getattr(mod, "affine", False):
                    row.norm_macs += args[0].numel()
                if mod.training and getattr(mod, "track_running_stats", False) and args[0].dim() > 1:
                    row.norm_macs += 2 * args[0].shape[1]

        return hook

    def _product_hook(self, row: _Row):
        """A product of two activations (rules in docs/analyze.md), on the device, no host sync."""
        spiking = self.spiking

        def hook(mod: nn.Module, args: tuple, output: Any) -> None:
            ins = [a.detach() for a in args if isinstance(a, Tensor)]
            if not ins or not isinstance(output, Tensor):
                return
            row.calls += 1
            f64 = torch.float64
            counts, binary = [], []  # per input: all values non-negative integers; all in {0, 1}
            for t in ins:
                if t.numel() == 0:
                    counts.append(torch.ones((), dtype=torch.bool, device=t.device))
                    binary.append(counts[-1])
                    continue
                t = t if t.is_floating_point() else t.float()
                lo, hi = torch.aminmax(t)  # one pass each for the range and the fractions, no host sync
                counts.append((lo >= 0) & ~torch.frac(t).any())
                binary.append(counts[-1] & (hi <= 1))
            integer = torch.stack(counts).all() & spiking
            both_binary = torch.stack(binary).all() & spiking
            zero = torch.zeros((), dtype=f64, device=output.device)
            scale_macs = output.numel() if getattr(mod, "scale", None) is not None else 0
            if isinstance(mod, SpikeMatmul):
                a, b = ins
                terms = output.numel() * a.shape[-1]
                value = (a.sum(-2, dtype=f64) * b.sum(-1, dtype=f64)).sum()  # sum of a @ b, exact
                ands = torch.where(both_binary, float(terms), zero)
                nnz_a, nnz_b = (torch.count_nonzero(t).to(f64) for t in (a, b))
                a_bin, b_bin = binary[0] & spiking, binary[1] & spiking
                sj_sops = torch.where(
                    a_bin & b_bin, value,
                    torch.where(a_bin, nnz_a * b.shape[-1], torch.where(b_bin, nnz_b * a.shape[-2], zero)),
                )  # fmt: skip
                sj_macs = torch.where(a_bin | b_bin, zero, float(terms))
            elif isinstance(mod, SpikeMul):
                terms, value = output.numel(), zero
                ands = torch.where(both_binary, float(terms), zero)
                sj_sops = sj_macs = zero
            else:  # TokenSum: one accumulate per unit of input value, or one add per element
                (x,) = ins
                terms, value = x.numel(), x.sum(dtype=f64)
                ands, sj_sops, sj_macs = zero, zero, zero
            adds = isinstance(mod, SpikeMatmul) or not isinstance(mod, SpikeMul)  # Mul: no accumulate
            sops = torch.where(integer, value, zero) if adds else zero
            plain = ~integer if adds else ~both_binary  # counted as MACs: real values (Mul: not a pure AND)
            macs = torch.where(plain, float(terms), zero) + scale_macs
            row.prod += torch.stack([sops, ands, macs, sj_sops, sj_macs]).to(row.prod)

        return hook

    def _neuron_hook(self, row: _Row):
        def hook(mod: nn.Module, args: tuple, output: Any) -> None:
            s = output[0] if isinstance(output, tuple | list) else output
            if not isinstance(s, Tensor) or s.dim() == 0:
                return
            row.spikes += _exact_sum(s.detach())
            row.nonzero_out += torch.count_nonzero(s.detach()).to(torch.float64)
            row.elems += s.numel()
            multi = getattr(mod, "step_mode", "s") == "m" and s.dim() >= 2
            lead = 2 if multi else 1
            row.neurons = math.prod(s.shape[lead:])
            if self._first_neuron is None:
                self._first_neuron = row
            if self.batch_neuron_shape is None:
                self.batch_neuron_shape = (multi, tuple(s.shape))
            if row is self._first_neuron and self.batches == 0:
                if multi:
                    self.inferred_time_steps = int(s.shape[0])
                else:
                    self._first_neuron_calls += 1
                    self.inferred_time_steps = self._first_neuron_calls

        return hook

    def _membrane_pre_hook(self, row: _Row):
        def hook(mod: nn.Module, args: tuple) -> None:
            v = getattr(mod, "v", None)
            row.v_prev = v.detach().clone() if isinstance(v, Tensor) else v
            row.own_v_seq = getattr(mod, "step_mode", "s") == "m" and not getattr(mod, "store_v_seq", True)
            if row.own_v_seq:
                mod.store_v_seq = True

        return hook

    def _membrane_hook(self, row: _Row):
        def hook(mod: nn.Module, args: tuple, output: Any) -> None:
            if getattr(mod, "step_mode", "s") == "m":
                seq = mod.v_seq
                if row.own_v_seq:
                    mod.store_v_seq = False  # the setter also drops v_seq
            else:
                seq = mod.v.unsqueeze(0) if isinstance(mod.v, Tensor) else None
            if not isinstance(seq, Tensor) or seq.dim() < 2:
                return
            seq = seq.detach()
            n = torch.count_nonzero(seq[1:] - seq[:-1]).to(torch.float64)
            if row.batch_steps == 0:
                n = n + seq[0].numel()
            else:
                n = n + torch.count_nonzero(seq[0] - row.v_prev).to(torch.float64)
            row.mem_updates += n
            row.batch_steps += seq.shape[0]
            row.v_prev = None

        return hook

    def _activation_hook(self, row: _Row):
        def hook(mod: nn.Module, args: tuple, output: Any) -> None:
            if isinstance(output, Tensor):
                row.calls += 1
                row.nonzero_out += torch.count_nonzero(output.detach()).to(torch.float64)
                row.elems += output.numel()

        return hook

    def end_batch(self, samples: int) -> None:
        """Account for one finished batch of ``samples`` samples."""
        self.samples += samples
        self.batches += 1
        self.batch_neuron_shape = None

    # ------------------------------------------------------------------ read back
    def finish(self) -> list[dict[str, Any]]:
        """Copy every accumulator to the host in one transfer and return raw (un-normalised) rows."""
        tensors: list[Tensor] = [self._nonfinite.reshape(1).to(self.device)]
        for row in self.rows:
            tensors.append(row.nonzero.reshape(1).to(self.device))
            if row.acc is not None:
                tensors.append(row.acc.to(self.device))
                tensors.append(row.weight_nonzero.reshape(1).to(self.device))
            if row.spikes is not None:
                tensors.append(row.spikes.reshape(1).to(self.device))
                keep = output_keep(row.module)
                masked = torch.zeros(1) if keep is None else (keep == 0).sum(dtype=torch.float64).reshape(1)
                tensors.append(masked.to(self.device, torch.float64))
            if row.mem_updates is not None:
                tensors.append(row.mem_updates.reshape(1).to(self.device))
            if row.nonzero_out is not None:
                tensors.append(row.nonzero_out.reshape(1).to(self.device))
            if row.prod is not None:
                tensors.append(row.prod.to(self.device))
        flat = torch.cat(tensors).cpu().tolist()
        self.nonfinite_batch = round(flat[0]) if flat[0] >= 0 else None
        out: list[dict[str, Any]] = []
        i = 1
        for row in self.rows:
            raw: dict[str, Any] = {
                "name": row.name,
                "kind": row.kind,
                "params": row.params,
                "nonzero_params": round(flat[i]),
            }
            i += 1
            if row.acc is not None:
                vals = dict(zip(_ACC, flat[i : i + len(_ACC)], strict=True))
                weight_nonzero = round(flat[i + len(_ACC)])
                i += len(_ACC) + 1
                raw.update(
                    calls=row.calls,
                    weight_numel=row.weight_numel,
                    weight_nonzero=weight_nonzero,
                    sops=vals["sops"],
                    macs=(vals["real_positions"] + row.host_positions) * weight_nonzero,
                    dense_macs=row.dense_macs,
                    dense_macs_real=(vals["real_positions"] + row.host_positions) * row.weight_numel,
                    in_events=vals["in_events"],
                    in_elems=vals["in_elems"],
                    real_calls=round(vals["real_calls"]),
                    max_in=vals["max_in"],
                    dense_sops=vals["dense_sops"],
                    binary_dense_sops=vals["binary_dense_sops"],
                    nonbinary_macs=(vals["nonbinary_positions"] + row.host_positions) * row.weight_numel,
                    syops_acs=vals["syops_acs"],
                    nonzero_input_macs=vals["nonzero_input_macs"],
                    real_in_elems=vals["real_in_elems"] + (row.in_numel if row.host_positions else 0),
                    nb_acs=vals["nb_acs"],
                    nb_macs=vals["nb_macs"],
                    nb_dense=vals["nb_dense"],
                    in_numel=row.in_numel,
                    out_numel=row.out_numel,
                    in_step_elems=row.in_step,
                    out_step_elems=row.out_step,
                    order=row.order,
                    batch_calls=row.batch_calls,
                )
            if row.kind == "norm" and row.calls:
                raw.update(norm_macs=row.norm_macs, calls=row.calls)
            if row.spikes is not None:
                raw.update(spikes=flat[i], elems=row.elems, neurons=row.neurons, masked=round(flat[i + 1]))
                i += 2
            if row.mem_updates is not None:
                raw.update(mem_updates=flat[i])
                i += 1
            if row.nonzero_out is not None:
                raw.update(nonzero_out=flat[i], elems=row.elems, calls=row.calls)
                i += 1
            if row.prod is not None:
                raw.update(
                    calls=row.calls,
                    **{f"product_{k}": v for k, v in zip(_PROD, flat[i : i + len(_PROD)], strict=True)},
                )
                i += len(_PROD)
            out.append(raw)
        return out
