"""Energy-aware unstructured weight pruning: Shi, Ding, Hao, Yu, ICLR 2024 (``shi2024``)."""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from snnprune.analysis.spikes import is_neuron
from snnprune.methods.base import Pruner, check_finite_nonnegative, register_method
from snnprune.output_masks import attach_output_mask, remove_output_mask
from snnprune.threshold.parametrization import register_removal_hook, remove_soft_threshold

__all__ = ["EnergyMask", "NeuronMask", "Shi2024Pruner", "shi2024_temperature"]

#: autograd nodes recorded while the neurons' fan-out is measured: mask -> the ``grad_fn`` of its layer's
#: inputs (:class:`EnergyMask`) or of its masked outputs (:class:`NeuronMask`). Outside the modules, so
#: ``copy.deepcopy`` of a model never meets them; emptied once the fan-out is known.
_PROBE: weakref.WeakKeyDictionary[nn.Module, list[Any]] = weakref.WeakKeyDictionary()

#: autograd nodes of the synaptic operations: the walk from a layer's input back to the neurons feeding
#: it stops there (a neuron behind another synaptic layer does not feed this one)
_SYNAPTIC_NODES = ("ConvolutionBackward", "AddmmBackward", "MmBackward", "BmmBackward", "LinearBackward")


def _record(mask: nn.Module, t: Any) -> None:
    if getattr(mask, "probing", False) and isinstance(t, Tensor) and t.grad_fn is not None:
        _PROBE.setdefault(mask, []).append(t.grad_fn)


def shi2024_temperature(step: int, init_temp: float, final_temp: float, start: int, end: int) -> float:
    """The authors' temperature after ``step`` optimizer steps (``TemperatureScheduler._temp``).

    .. math::
        \\beta(k) = \\beta_0 \\exp\\!\\Big(\\ln\\frac{\\beta_1}{\\beta_0}\\,\\frac{k - k_0}{k_1 - k_0}\\Big)
        \\text{ for } k_0 \\le k \\le k_1,\\quad \\beta_0 \\text{ before},\\ \\beta_1 \\text{ after}
    """
    if step < start:
        return init_temp
    if step > end:
        return final_temp
    return init_temp * math.exp(math.log(final_temp / init_temp) * (step - start) / (end - start))


class EnergyMask(nn.Module):
    """A learned mask logit per weight: :math:`w = \\theta\\,\\sigma(\\beta m)` (train), :math:`\\theta\\,1[m>0]` (eval).

    ``logit`` (:math:`m`, the weight's shape) is an ``nn.Parameter`` trained with the weights;
    ``temperature`` (:math:`\\beta`) is a buffer the pruner sets every step. ``energy`` is the layer's
    energy coefficient :math:`\\lambda_w`, measured from the layer's input on each forward by
    :meth:`record_input` (a forward pre-hook the pruner attaches): input positions / stride positions,
    the number of times one weight is used per sample and time step (1 for a linear layer).

    Args:
        shape: the weight's shape.
        init: initial logit (the authors' ``--mask-init-factor`` mean, 0 by default).
    """

    def __init__(self, shape: torch.Size | tuple[int, ...], init: float = 0.0) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.full(tuple(shape), float(init)))
        self.register_buffer("temperature", torch.tensor(1.0))
        self.energy: float | None = None
        self.probing = False

    def soft_mask(self) -> Tensor:
        """:math:`\\sigma(\\beta m)` (differentiable in :math:`m`)."""
        return torch.sigmoid(self.logit * self.temperature)

    def forward(self, theta: Tensor) -> Tensor:
        """Soft mask in training mode, hard mask in eval mode."""
        if not self.training:
            return torch.where(self.logit > 0, theta, torch.zeros((), dtype=theta.dtype, device=theta.device))
        return self.soft_mask().to(theta.dtype) * theta

    def record_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook: set :attr:`energy` from the layer's input (authors' ``calc_c``)."""
        if isinstance(module, nn.Linear):
            self.energy = 1.0
            _record(self, args[0])
            return
        x = args[0]
        _record(self, x)
        spatial = len(module.stride)
        self.energy = math.prod(x.shape[-spatial:]) / math.prod(module.stride)

    def detach_hook(self, module: nn.Module) -> None:
        """Remove :meth:`record_input` from ``module``'s forward pre-hooks."""
        for key, hook in list(module._forward_pre_hooks.items()):
            if (
                getattr(hook, "__self__", None) is self
                and getattr(hook, "__func__", None) is EnergyMask.record_input
            ):
                del module._forward_pre_hooks[key]

    def extra_repr(self) -> str:
        return f"shape={tuple(self.logit.shape)}, temperature={float(self.temperature):.6g}"


class NeuronMask(nn.Module):
    """A learned mask logit per neuron on a spiking neuron's output (the authors' ``neuron_mask``).

    Output :math:`s\\,\\sigma(\\beta m)` in training, :math:`s\\,1[m > 0]` in eval mode; ``logit``
    (:math:`m`) has the shape of one sample's neurons at one step (the authors' ``[C, H, W]``, shared over
    time steps and samples), taken from the neuron's first output (the logits are created then, at
    ``init``; before it ``logit`` is empty, so build the optimizer after :func:`snnprune.sparsify` as usual:
    the Parameter is the same object). ``energy`` is the neuron's fan-out :math:`\\lambda_n` the pruner
    measures. Called by the output-mask hook of :mod:`snnprune.output_masks`.

    Args:
        init: initial logit (the authors' ``--mask-init-factor`` neuron mean, 0 by default).
    """

    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        self.init = float(init)
        self.logit = nn.Parameter(torch.empty(0))
        self.register_buffer("temperature", torch.tensor(1.0))
        self.energy: float | None = None
        self.probing = False

    def soft_mask(self) -> Tensor:
        """:math:`\\sigma(\\beta m)` (differentiable in :math:`m`)."""
        return torch.sigmoid(self.logit * self.temperature)

    def forward(self, output: Tensor, lead: int) -> Tensor:
        """Soft mask in training mode, hard mask in eval mode (``lead``: the time/batch dimensions)."""
        if self.logit.numel() == 0:
            with torch.no_grad():  # same Parameter object, so an optimizer built before holds it
                self.logit.data = torch.full(
                    output.shape[lead:], self.init, dtype=self.logit.dtype, device=self.logit.device
                )
        if not self.training:
            return torch.where(
                self.logit > 0, output, torch.zeros((), dtype=output.dtype, device=output.device)
            )
        out = self.soft_mask().to(output.dtype) * output
        _record(self, out)
        return out

    def keep(self) -> Tensor | None:
        """:math:`1[m > 0]` as 0/1 floats (None before the first forward)."""
        return None if self.logit.numel() == 0 else (self.logit.detach() > 0).to(torch.float32)

    def release(self) -> None:
        """Drop what the fan-out measurement recorded."""
        self.probing = False
        _PROBE.pop(self, None)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "logit")
        if isinstance(saved, Tensor) and self.logit.numel() == 0 and saved.numel() > 0:
            self.logit.data = torch.empty(saved.shape, dtype=self.logit.dtype, device=self.logit.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.logit.shape)}, temperature={float(self.temperature):.6g}"


class _Unhook:
    """Removal hook of one layer: takes the layer's :meth:`EnergyMask.record_input` pre-hook off."""

    def __init__(self, module: nn.Module, mask: EnergyMask) -> None:
        self.module, self.mask = module, mask

    def __call__(self, leave_parametrized: bool) -> None:
        self.mask.detach_hook(self.module)


@register_method("shi2024")
class Shi2024Pruner(Pruner):
    """Energy-aware weight and neuron pruning (Shi, Ding, Hao, Yu, ICLR 2024): learned masks under an SOP penalty.

    Every weight gets a mask logit :math:`m` (:class:`EnergyMask`), trained by the run's optimizer;
    :math:`w = \\theta\\,\\sigma(\\beta m)` in training and :math:`\\theta\\,1[m > 0]` in eval mode and
    after :func:`snnprune.finalize`. With ``neuron_masks`` every spiking neuron of the model gets a logit per
    neuron on its output (:class:`NeuronMask`, an output mask of :mod:`snnprune.output_masks`): spikes times
    :math:`\\sigma(\\beta m_n)` in training, times :math:`1[m_n > 0]` in eval mode; :func:`snnprune.finalize`
    fixes it as a 0/1 mask. :meth:`regularization` is the energy (SOP) penalty of the authors'
    ``PenaltyTerm``, to add to the loss:

    .. math::
        R = \\lambda \\sum_l \\Big(\\lambda_n^l \\sum_j \\sigma(\\beta\\,m_{lj})
            + \\lambda_w^l \\sum_k \\sigma(\\beta\\,m_{lk})\\Big),\\qquad
        \\lambda_w^l = \\frac{H_{\\mathrm{in}} W_{\\mathrm{in}}}{s^2}\\ (\\text{conv}),\\ 1\\ (\\text{linear})

    :math:`\\lambda_w^l` is the number of times one weight is used per sample and time step (measured from
    the layer's input on the last forward); :math:`\\lambda_n^l = \\sum C_{\\mathrm{out}} k_h k_w / s^2`
    (:math:`C_{\\mathrm{out}}/g` for ``g`` groups; ``out_features`` for a linear layer) over the selected
    layers the neuron feeds (through pooling, flattening and additions, not through another synaptic layer),
    the synapses one of its spikes drives. The layers fed are found once, on the first :meth:`regularization`
    call, from the autograd graph of that training forward. So :math:`R` is :math:`\\lambda` times the soft
    count of the synaptic operations of a network whose neurons all fire. The temperature follows the
    authors' ``TemperatureScheduler`` (:func:`shi2024_temperature`, the same for weights and neurons):
    :math:`\\beta_0` before ``start_step``, then exponential to :math:`\\beta_1` at ``total_steps``, the value
    for step :math:`k` installed after the :math:`k`-th optimizer step.

    Where this differs from the authors' code (``xyshi2000/Unstructured-Pruning``; ``snnprune/docs/methods.md``
    section 16):

    * neuron masks on every spiking neuron (the authors leave the first and the fully connected layers'
      neurons unmasked in their CIFAR-10 net); a neuron's fan-out counts the selected layers only (the
      authors count every layer of theirs, and none of the SEW ResNets' classifier);
    * the masks are trained by the run's optimizer (its learning rate and weight decay); the authors use a
      separate optimizer for them (``--prune-optimizer``, ``--prune-lr``, no weight decay);
    * one phase: the authors search (masks trained) then fine-tune with the hard masks frozen
      (``--epoch-finetune``); here the whole run is the search, and :func:`snnprune.finalize` gives the
      hard masks (fine-tune the finalized model with ``--method dense`` for the second phase);
    * every prunable layer is masked (the authors' CIFAR-10 net masks the weights of every layer too);
    * the temperature is a buffer in the model, the penalty uses the run's dtype.

    Args:
        penalty: :math:`\\lambda \\ge 0`, the weight of the SOP penalty (the authors' ``--penalty-lmbda``,
            1e-11 with their Adam masks at lr 1e-4; masks trained by SGD need a larger value).
        init_temp: :math:`\\beta_0 > 0`, the temperature at the start (authors: 5).
        final_temp: :math:`\\beta_1 \\ge \\beta_0`, the temperature at ``total_steps`` (authors: 1000).
        mask_init: the initial logit :math:`m` of every weight (authors: 0).
        neuron_masks: mask the outputs of every spiking neuron too (authors: yes; ``--not-prune-neuron``).
        neuron_mask_init: the initial logit of every neuron (authors: 0).
        total_steps: optimizer steps of the whole run (the end of the temperature schedule).
        start_step: step where the temperature starts to grow.

    Raises:
        ValueError: negative or non-finite ``penalty``, ``init_temp <= 0``, ``final_temp < init_temp``,
            non-finite ``mask_init`` or ``neuron_mask_init``.
        TypeError: ``neuron_masks`` not a bool.
    """

    def __init__(
        self,
        *,
        penalty: float = 1e-7,
        init_temp: float = 5.0,
        final_temp: float = 1000.0,
        mask_init: float = 0.0,
        neuron_masks: bool = True,
        neuron_mask_init: float = 0.0,
        total_steps: int | None = None,
        start_step: int = 0,
    ) -> None:
        super().__init__(total_steps=total_steps, start_step=start_step)
        self.penalty = check_finite_nonnegative(penalty, "penalty")
        init_temp = check_finite_nonnegative(init_temp, "init_temp")
        final_temp = check_finite_nonnegative(final_temp, "final_temp")
        if init_temp <= 0 or final_temp < init_temp:
            raise ValueError(
                f"shi2024 needs 0 < init_temp <= final_temp, got init_temp={init_temp}, "
                f"final_temp={final_temp}; pass e.g. init_temp=5, final_temp=1000"
            )
        for key, value in (("mask_init", mask_init), ("neuron_mask_init", neuron_mask_init)):
            if not math.isfinite(float(value)):
                raise ValueError(f"{key} must be a finite number, got {float(value)}; pass e.g. 0")
        if not isinstance(neuron_masks, bool):
            raise TypeError(f"neuron_masks must be True or False, got {neuron_masks!r}")
        self.init_temp, self.final_temp, self.mask_init = init_temp, final_temp, float(mask_init)
        self.neuron_masks, self.neuron_mask_init = neuron_masks, float(neuron_mask_init)
        #: qualified name -> spiking neuron whose output this pruner masks (after :meth:`prepare`)
        self.neurons: dict[str, nn.Module] = {}
        self._fanout: dict[str, float] | None = None

    def make_parametrization(self, name: str, module: nn.Module) -> nn.Module:
        """An :class:`EnergyMask` of the weight's shape, its logits at ``mask_init``."""
        return EnergyMask(module.weight.shape, self.mask_init)

    def _masks(self) -> list[nn.Module]:
        weights = [m.parametrizations.weight[0] for m in self._attached]
        return weights + [n.output_mask for n in self.neurons.values()]

    def _on_prepare(self) -> None:
        for module in self._attached:
            mask = module.parametrizations.weight[0]
            module.register_forward_pre_hook(mask.record_input)
            register_removal_hook(module, _Unhook(module, mask))
        if self.neuron_masks:
            try:
                for name, module in self.model.named_modules():
                    if is_neuron(module):
                        attach_output_mask(module, NeuronMask(self.neuron_mask_init))
                        self.neurons[name] = module
            except BaseException:
                self._remove_neuron_masks()
                raise
            for mask in self._masks():
                mask.probing = True
        self._install()

    def _remove_neuron_masks(self) -> None:
        for module in self.neurons.values():
            mask = module._modules.get("output_mask")
            if isinstance(mask, NeuronMask):
                mask.release()
                remove_output_mask(module)
        self.neurons = {}

    def remove(self) -> nn.Module:
        """Take everything this pruner attached off the model: the weights back to :math:`\\theta`, the neuron
        masks and hooks gone; the model is as it was before :meth:`prepare`.

        Returns:
            The model.
        """
        for module in self._attached:
            if parametrize.is_parametrized(module, "weight"):
                remove_soft_threshold(module, "weight", leave_parametrized=False)
        self._remove_neuron_masks()
        return self.model

    @property
    def temperature(self) -> float:
        """:math:`\\beta` for the next forward."""
        return shi2024_temperature(
            self.step_count, self.init_temp, self.final_temp, self.start_step, self.total_steps
        )

    def _install(self) -> None:
        value = self.temperature
        for mask in self._masks():
            mask.temperature.fill_(value)

    def _update(self) -> None:
        self._install()

    def _model_state_mismatch(self) -> str | None:
        want = self.temperature
        for mask in self._masks():
            buf = mask.temperature
            if not bool(buf == torch.tensor(want, dtype=buf.dtype, device=buf.device)):
                return f"temperature {float(buf):.6g} in the model, {want:.6g} in the pruner at step {self.step_count}"
        return None

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self._install()

    def neuron_fanout(self) -> dict[str, float]:
        """Neuron -> :math:`\\lambda_n` (measured on the first call after a training forward, then kept).

        Raises:
            RuntimeError: no training forward (grad enabled, train mode) has run since :meth:`prepare`.
        """
        if self._fanout is not None:
            return dict(self._fanout)
        owner = {id(fn): name for name, n in self.neurons.items() for fn in _PROBE.get(n.output_mask, [])}
        if self.neurons and not owner:
            raise RuntimeError(
                "shi2024: no neuron has run a training forward yet, so the neurons' fan-out is unknown; call "
                "regularization() after the forward pass of a training batch (train mode, grad enabled)"
            )
        fan = dict.fromkeys(self.neurons, 0.0)
        for module in self._attached:
            if isinstance(module, nn.Linear):
                c = float(module.out_features)
            else:
                c = (
                    module.out_channels
                    // module.groups
                    * math.prod(module.kernel_size)
                    / math.prod(module.stride)
                )
            fed: set[str] = set()
            seen: set[int] = set()
            stack = list(_PROBE.get(module.parametrizations.weight[0], []))
            while stack:
                node = stack.pop()
                if node is None or id(node) in seen:
                    continue
                seen.add(id(node))
                if id(node) in owner:
                    fed.add(owner[id(node)])
                elif not type(node).__name__.startswith(_SYNAPTIC_NODES):
                    stack.extend(f for f, _ in node.next_functions)
            for name in fed:
                fan[name] += c
        for mask in self._masks():
            mask.probing = False
            _PROBE.pop(mask, None)
        for name, module in self.neurons.items():
            module.output_mask.energy = fan[name]
        self._fanout = fan
        return dict(fan)

    def regularization(self) -> Tensor:
        """:math:`\\lambda \\sum_l (\\lambda_n^l \\sum_j \\sigma(\\beta m_{lj}) + \\lambda_w^l \\sum_k \\sigma(\\beta m_{lk}))`
        (needs one training forward first).

        Raises:
            RuntimeError: no forward has run since :meth:`prepare` (the coefficients are measured there).
        """
        total: Tensor | None = None
        if self.neurons:
            fan = self.neuron_fanout()
            for name, module in self.neurons.items():
                mask = module.output_mask
                term = (self.penalty * fan[name]) * mask.soft_mask().sum()
                total = term if total is None else total + term
        for name, module in self.layers.items():
            mask = module.parametrizations.weight[0]
            if mask.energy is None:
                raise RuntimeError(
                    f"shi2024: layer {name!r} has not run yet, so its energy coefficient is unknown; "
                    "call regularization() after the forward pass of the batch"
                )
            term = (self.penalty * mask.energy) * mask.soft_mask().sum()
            total = term if total is None else total + term
        return total  # type: ignore[return-value]  (prepare selects at least one layer)
