"""Learned per-layer thresholds: STR (Kusupati et al. 2020) and LTP (Azarian et al. 2020)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from snnprune.methods.base import Pruner, register_method
from snnprune.threshold.parametrization import (
    LearnedThresholdMask,
    register_parametrization,
    register_soft_threshold,
)

__all__ = ["LTPPruner", "STRPruner"]


def _per_layer(values: list[Tensor], names: list[str]) -> dict[str, float]:
    return dict(zip(names, torch.stack([v.detach().reshape(()) for v in values]).tolist(), strict=True))


@register_method("str")
class STRPruner(Pruner):
    """STR: :math:`w = \\operatorname{sign}(\\theta)\\,\\mathrm{ReLU}(|\\theta| - \\sigma(s_l))`, one trainable logit per layer.

    Exact autograd (pruned weights get no loss gradient). :math:`s_l` is an ``nn.Parameter`` in the
    model (``<layer>.parametrizations.weight.0.threshold_logit``), so it is trained and weight-decayed
    by the optimizer: in STR the weight decay on :math:`s` is what slowly raises the threshold. Final
    sparsity is controlled by (weight decay, ``s_init``).

    Keyword arguments: ``s_init=-3200.0`` (the STR ResNet-50 config, threshold :math:`\\approx 0` at
    start; use e.g. -5 for short runs), ``grad="exact"``, ``total_steps=None``, ``start_step=0``.
    """

    requires_total_steps = False

    def __init__(
        self, layers: dict[str, nn.Module], *, s_init: float = -3200.0, grad: str = "exact", **kwargs: Any
    ) -> None:
        self.s_init = float(s_init)
        self.grad = grad
        super().__init__(layers, **kwargs)

    def _attach(self) -> None:
        for module in self.layers.values():
            register_soft_threshold(
                module, "weight", threshold=self.s_init, grad=self.grad, learnable=True, logit=True
            )

    @property
    def threshold(self) -> dict[str, float]:
        """Per-layer :math:`\\sigma(s_l)` (one host sync)."""
        values = [m.parametrizations.weight[0].effective_threshold() for m in self.layers.values()]
        return _per_layer(values, list(self.layers))


@register_method("ltp")
class LTPPruner(Pruner):
    """LTP: learned per-layer threshold :math:`\\tau_l` on :math:`\\theta^2` with a soft sigmoid mask.

    .. math::
        w = \\theta\\,\\sigma((\\theta^2-\\tau_l)/T_l)\\ \\text{(train)},\\quad
        w = \\theta\\,1[\\theta^2>\\tau_l]\\ \\text{(eval)},\\quad T_l = t\\cdot\\operatorname{mean}(\\theta_l^2)

    :meth:`regularization` returns the soft-L0 term, normalized by the number of pruned weights
    (so it is the soft density in [0, 1] and ``l0_coeff`` does not depend on model size):

    .. math::
        R = \\lambda_{L0}\\,\\frac{1}{\\sum_l n_l}\\sum_l\\sum_k \\sigma((\\theta_{lk}^2-\\tau_l)/T_l)

    Add it to the loss. The temperature is constant relative to each layer's current mean squared weight
    (no annealing). :func:`snnprune.sparsity` counts exact zeros, i.e. the hard mask: call
    ``model.eval()`` first (in training mode the soft mask has no exact zeros).

    Keyword arguments: ``l0_coeff=1.0``, ``temperature=1e-2``, ``tau_init=0.0``, ``total_steps=None``,
    ``start_step=0``.
    """

    requires_total_steps = False

    def __init__(
        self,
        layers: dict[str, nn.Module],
        *,
        l0_coeff: float = 1.0,
        temperature: float = 1e-2,
        tau_init: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if l0_coeff < 0:
            raise ValueError(f"l0_coeff must be >= 0, got {l0_coeff}")
        self.l0_coeff = float(l0_coeff)
        self.temperature = float(temperature)
        self.tau_init = float(tau_init)
        super().__init__(layers, **kwargs)

    def _attach(self) -> None:
        for module in self.layers.values():
            register_parametrization(module, "weight", LearnedThresholdMask(self.tau_init, self.temperature))

    def regularization(self) -> Tensor:
        """:math:`\\lambda_{L0}` times the mean soft mask over all pruned weights (differentiable)."""
        total = None
        count = 0
        for module in self.layers.values():
            plist = module.parametrizations.weight
            term = plist[0].soft_mask(plist.original).sum()
            total = term if total is None else total + term
            count += plist.original.numel()
        return self.l0_coeff * total / count

    @property
    def threshold(self) -> dict[str, float]:
        """Per-layer :math:`\\tau_l` (in units of :math:`\\theta^2`)."""
        return _per_layer([m.parametrizations.weight[0].tau for m in self.layers.values()], list(self.layers))
