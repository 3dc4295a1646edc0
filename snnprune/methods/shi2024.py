"""Energy-aware unstructured weight pruning: Shi, Ding, Hao, Yu, ICLR 2024 (``shi2024``)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from snnprune.methods.base import Pruner, check_finite_nonnegative, register_method
from snnprune.threshold.parametrization import register_removal_hook

__all__ = ["EnergyMask", "Shi2024Pruner", "shi2024_temperature"]


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
            return
        x = args[0]
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


class _Unhook:
    """Removal hook of one layer: takes the layer's :meth:`EnergyMask.record_input` pre-hook off."""

    def __init__(self, module: nn.Module, mask: EnergyMask) -> None:
        self.module, self.mask = module, mask

    def __call__(self, leave_parametrized: bool) -> None:
        self.mask.detach_hook(self.module)


@register_method("shi2024")
class Shi2024Pruner(Pruner):
    """Energy-aware weight pruning (Shi, Ding, Hao, Yu, ICLR 2024): learned masks under an SOP penalty.

    Every weight gets a mask logit :math:`m` (:class:`EnergyMask`), trained by the run's optimizer;
    :math:`w = \\theta\\,\\sigma(\\beta m)` in training and :math:`\\theta\\,1[m > 0]` in eval mode and
    after :func:`snnprune.finalize`. :meth:`regularization` is the energy (SOP) penalty of the authors'
    ``PenaltyTerm``, to add to the loss:

    .. math::
        R = \\lambda \\sum_l \\lambda_w^l \\sum_k \\sigma(\\beta\\,m_{lk}),\\qquad
        \\lambda_w^l = \\frac{H_{\\mathrm{in}} W_{\\mathrm{in}}}{s^2}\\ (\\text{conv}),\\ 1\\ (\\text{linear})

    :math:`\\lambda_w^l` is the number of times one weight is used per sample and time step (measured from
    the layer's input on the last forward), so :math:`R` is :math:`\\lambda` times the soft count of the
    synaptic operations of a network whose neurons all fire. The temperature follows the authors'
    ``TemperatureScheduler`` (:func:`shi2024_temperature`): :math:`\\beta_0` before ``start_step``, then
    exponential to :math:`\\beta_1` at ``total_steps``, the value for step :math:`k` installed after the
    :math:`k`-th optimizer step.

    Where this differs from the authors' code (``xyshi2000/Unstructured-Pruning``; ``snnprune/docs/methods.md``
    section 16):

    * no neuron masks: the authors' ``neuron_mask`` (a logit per neuron, the spikes multiplied by
      :math:`\\sigma(\\beta m_n)`, penalised with the neuron's fan-out :math:`\\lambda_n^l = \\sum
      C_{\\mathrm{out}} k^2 / s^2` of the layers it feeds) is not implemented;
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
        total_steps: optimizer steps of the whole run (the end of the temperature schedule).
        start_step: step where the temperature starts to grow.

    Raises:
        ValueError: negative or non-finite ``penalty``, ``init_temp <= 0``, ``final_temp < init_temp``,
            non-finite ``mask_init``.
    """

    def __init__(
        self,
        *,
        penalty: float = 1e-7,
        init_temp: float = 5.0,
        final_temp: float = 1000.0,
        mask_init: float = 0.0,
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
        mask_init = float(mask_init)
        if not math.isfinite(mask_init):
            raise ValueError(f"mask_init must be a finite number, got {mask_init}; pass e.g. 0")
        self.init_temp, self.final_temp, self.mask_init = init_temp, final_temp, mask_init

    def make_parametrization(self, name: str, module: nn.Module) -> nn.Module:
        """An :class:`EnergyMask` of the weight's shape, its logits at ``mask_init``."""
        return EnergyMask(module.weight.shape, self.mask_init)

    def _on_prepare(self) -> None:
        for module in self._attached:
            mask = module.parametrizations.weight[0]
            module.register_forward_pre_hook(mask.record_input)
            register_removal_hook(module, _Unhook(module, mask))
        self._install()

    @property
    def temperature(self) -> float:
        """:math:`\\beta` for the next forward."""
        return shi2024_temperature(
            self.step_count, self.init_temp, self.final_temp, self.start_step, self.total_steps
        )

    def _install(self) -> None:
        value = self.temperature
        for module in self._attached:
            module.parametrizations.weight[0].temperature.fill_(value)

    def _update(self) -> None:
        self._install()

    def _model_state_mismatch(self) -> str | None:
        want = self.temperature
        for module in self._attached:
            buf = module.parametrizations.weight[0].temperature
            if not bool(buf == torch.tensor(want, dtype=buf.dtype, device=buf.device)):
                return f"temperature {float(buf):.6g} in the model, {want:.6g} in the pruner at step {self.step_count}"
        return None

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self._install()

    def regularization(self) -> Tensor:
        """:math:`\\lambda \\sum_l \\lambda_w^l \\sum_k \\sigma(\\beta m_{lk})` (needs one forward first).

        Raises:
            RuntimeError: no forward has run since :meth:`prepare` (the coefficients are measured there).
        """
        total: Tensor | None = None
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
