"""Learned per-layer thresholds: STR (Kusupati et al. 2020) and LTP (Azarian et al. 2020)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from snnprune.methods.base import KeywordError, Pruner, check_grad_keyword, register_method
from snnprune.threshold.parametrization import LTP_GRADIENTS, LearnedThresholdMask, SoftThreshold

__all__ = ["LTPPruner", "STRPruner"]


def _stacked(values: list[Tensor]) -> Tensor:
    """Per-layer 0-d thresholds as one detached 1-D tensor (on their device, no host sync)."""
    return torch.stack([v.detach().reshape(()) for v in values])


@register_method("str")
class STRPruner(Pruner):
    """STR: :math:`w = \\operatorname{sign}(\\theta)\\,\\mathrm{ReLU}(|\\theta| - \\sigma(s_l))`, one trainable logit per layer.

    Exact autograd (pruned weights get no loss gradient). :math:`s_l` is an ``nn.Parameter`` in the
    model (``<layer>.parametrizations.weight.0.threshold_logit``), so it is trained and weight-decayed
    by the optimizer: in STR the weight decay on :math:`s` is what slowly raises the threshold, and the
    final sparsity is set by the pair (weight decay, ``s_init``). The model holds the whole state, so a
    model checkpoint alone resumes STR.

    Args:
        s_init: initial logit :math:`s`. STR's ResNet-50 config uses -3200 (threshold exactly 0 and
            :math:`d\\sigma/ds = 0` in float32, so only a long run with weight decay moves it); a short run
            needs a value whose sigmoid has a gradient, e.g. -5 (``snnprune/docs/methods.md`` section 6).
        grad: backward variant (default ``"exact"``, as STR).
        total_steps: optimizer steps of the whole run (optional).
        start_step: unused (STR has no schedule), validated like the other methods'.

    Raises:
        ValueError: non-finite ``s_init`` or unknown ``grad``.
    """

    requires_total_steps = False

    def __init__(
        self,
        *,
        s_init: float = -3200.0,
        grad: str = "exact",
        total_steps: int | None = None,
        start_step: int = 0,
    ) -> None:
        super().__init__(total_steps=total_steps, start_step=start_step)
        s_init = float(s_init)
        if s_init != s_init or s_init in (float("inf"), float("-inf")):
            raise KeywordError("s_init", f"s_init must be a finite number, got {s_init}; pass e.g. -5")
        check_grad_keyword(grad)
        self.s_init = s_init
        self.grad = grad

    def make_parametrization(self, name: str, module: nn.Module) -> nn.Module:
        """A :class:`~snnprune.threshold.SoftThreshold` with a learnable logit :math:`s_l` = ``s_init``."""
        return SoftThreshold(self.s_init, grad=self.grad, learnable=True, logit=True)

    @property
    def threshold(self) -> dict[str, float]:
        """Per-layer :math:`\\sigma(s_l)` (one host sync)."""
        return dict(zip(self.layers, self.threshold_snapshot().tolist(), strict=True))

    def threshold_snapshot(self) -> Tensor:
        return _stacked([m.parametrizations.weight[0].effective_threshold() for m in self.layers.values()])


@register_method("ltp")
class LTPPruner(Pruner):
    """LTP: learned per-layer threshold :math:`\\tau_l` on :math:`\\theta^2` with a soft sigmoid mask.

    .. math::
        w = \\theta\\,m,\\ m = \\sigma((\\theta^2-\\tau_l)/T_l)\\ \\text{(train)},\\quad
        w = \\theta\\,1[\\theta^2>\\tau_l]\\ \\text{(eval)},\\quad T_l = t\\cdot\\operatorname{Var}(\\theta_l)

    The backward follows the paper's eq. 14 by default: :math:`\\partial w/\\partial\\theta \\approx m`
    (the exact derivative adds :math:`(2\\theta^2/T)m(1-m)`, which the paper drops so that pruning does not
    stop early); ``gradient="full"`` keeps it. :math:`\\tau_l` always gets the exact gradient.
    :meth:`regularization` returns the soft-L0 term, divided by the number of pruned weights:

    .. math::
        R = \\lambda_{L0}\\,\\frac{1}{\\sum_l n_l}\\sum_l\\sum_k \\sigma((\\theta_{lk}^2-\\tau_l)/T_l)

    so the paper's :math:`\\lambda` equals ``l0_coeff / sum_l n_l`` (multiply a paper's :math:`\\lambda` by
    the number of pruned weights to get ``l0_coeff``). Add it to the loss. :func:`snnprune.sparsity` counts
    exact zeros, i.e. the hard mask: call ``model.eval()`` first. The model holds the whole state
    (:math:`\\tau_l`), so a model checkpoint alone resumes LTP.

    Args:
        l0_coeff: :math:`\\lambda_{L0} \\ge 0`, the weight of the normalized soft-L0 term.
        temperature: :math:`t > 0`, the temperature relative to each layer's weight variance (recomputed
            every forward, detached).
        tau_init: initial :math:`\\tau_l` (units of :math:`\\theta^2`; 0 = nothing pruned at eval).
        gradient: ``"paper"`` (eq. 14) or ``"full"`` (exact autograd through the sigmoid).
        total_steps: optimizer steps of the whole run (optional).
        start_step: unused (LTP has no schedule), validated like the other methods'.

    Raises:
        ValueError: negative ``l0_coeff``, non-positive ``temperature``, negative ``tau_init``, unknown
            ``gradient``.
    """

    requires_total_steps = False

    option_names: ClassVar[dict[str, str]] = {"temperature": "ltp_temperature"}

    def __init__(
        self,
        *,
        l0_coeff: float = 1.0,
        temperature: float = 1e-2,
        tau_init: float = 0.0,
        gradient: str = "paper",
        total_steps: int | None = None,
        start_step: int = 0,
    ) -> None:
        super().__init__(total_steps=total_steps, start_step=start_step)
        if not l0_coeff >= 0:
            raise KeywordError(
                "l0_coeff", f"l0_coeff must be >= 0, got {l0_coeff}; pass a non-negative weight"
            )
        if not temperature > 0:
            raise KeywordError(
                "temperature", f"temperature must be > 0, got {temperature}; pass a positive value"
            )
        if not tau_init >= 0:
            raise KeywordError(
                "tau_init",
                f"tau_init must be >= 0 (a threshold on theta^2), got {tau_init}; pass a non-negative value",
            )
        if gradient not in LTP_GRADIENTS:
            raise KeywordError(
                "gradient", f"ltp gradient must be one of {LTP_GRADIENTS}, got {gradient!r}; pass one of them"
            )
        self.l0_coeff = float(l0_coeff)
        self.temperature = float(temperature)
        self.tau_init = float(tau_init)
        self.gradient = gradient

    def make_parametrization(self, name: str, module: nn.Module) -> nn.Module:
        """A :class:`~snnprune.threshold.LearnedThresholdMask` with :math:`\\tau` = ``tau_init``."""
        return LearnedThresholdMask(self.tau_init, self.temperature, gradient=self.gradient)

    def regularization(self) -> Tensor:
        """:math:`\\lambda_{L0}` times the mean soft mask over all pruned weights (differentiable)."""
        total: Any = None
        count = 0
        for module in self.layers.values():
            plist = module.parametrizations.weight
            term = plist[0].l0(plist.original)
            total = term if total is None else total + term
            count += plist.original.numel()
        return self.l0_coeff * total / count

    @property
    def threshold(self) -> dict[str, float]:
        """Per-layer :math:`\\tau_l` (in units of :math:`\\theta^2`; one host sync)."""
        return dict(zip(self.layers, self.threshold_snapshot().tolist(), strict=True))

    def threshold_snapshot(self) -> Tensor:
        return _stacked([m.parametrizations.weight[0].tau for m in self.layers.values()])
