"""ST-3 and ST-3σ (Vanderschueren & De Vleeschouwer 2023): quantile soft threshold with a cubic ratio."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from snnprune.methods.base import Pruner, register_method
from snnprune.methods.schedules import cubic_sparsity
from snnprune.threshold.parametrization import register_soft_threshold

__all__ = ["ST3Pruner", "ST3SigmaPruner", "global_quantile"]


def global_quantile(values: Tensor, q: float) -> Tensor:
    """Quantile of a 1-D tensor with linear interpolation (``torch.quantile`` semantics, no size limit).

    Uses two ``kthvalue`` calls, stays on device (no host sync).
    """
    n = values.numel()
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    v_lo = torch.kthvalue(values, lo + 1).values
    if hi == lo or pos == lo:
        return v_lo
    v_hi = torch.kthvalue(values, hi + 1).values
    return v_lo + (pos - lo) * (v_hi - v_lo)


def _check_target(target_sparsity: float | None, method: str) -> float:
    if target_sparsity is None or not 0.0 <= target_sparsity < 1.0:
        raise ValueError(
            f"{method} needs target_sparsity in [0, 1) (fraction of zeros), got {target_sparsity}"
        )
    return float(target_sparsity)


@register_method("st3")
class ST3Pruner(Pruner):
    """ST-3: global magnitude-quantile soft threshold, dense straight-through gradient, channel rescale.

    At step :math:`i` of the window the pruning ratio is :math:`r(i) = p_{\\max}[1 - (1 - i/N)^3]`
    (``target_sparsity`` = :math:`p_{\\max}`; :math:`N` = ``end_step - start_step``); the threshold
    :math:`t` is the :math:`r`-quantile of :math:`|\\theta|` over all pruned layers (one global value),
    recomputed every step (also after the window, at :math:`r = p_{\\max}`, so the final sparsity is the
    target up to ties). The effective weight is
    :math:`w = c \\odot \\operatorname{sign}(\\theta)\\max(|\\theta| - t, 0)`,
    :math:`c_o = 1.01/(r_o + 0.01)` per output channel (see :class:`~snnprune.threshold.SoftThreshold`),
    with :math:`\\partial L/\\partial\\theta = \\partial L/\\partial w` (``grad="dense"``).

    Keyword arguments: ``target_sparsity`` (required), ``total_steps`` (required), ``start_step=0``,
    ``end_step=None`` (= ``total_steps``), ``rescale=True``.
    """

    normalize: bool = False

    def __init__(
        self,
        layers: dict[str, nn.Module],
        *,
        target_sparsity: float | None = None,
        end_step: int | None = None,
        rescale: bool = True,
        **kwargs: Any,
    ) -> None:
        self.target_sparsity = _check_target(target_sparsity, type(self).method)
        self.rescale = rescale
        self._end_step = end_step
        self._global = None
        super().__init__(layers, **kwargs)
        self.end_step = self.total_steps if end_step is None else int(end_step)
        if not self.start_step < self.end_step <= self.total_steps:
            raise ValueError(f"end_step must be in (start_step, total_steps], got {self.end_step}")
        # sigma_l = 1 / sqrt(sum of the tensor's dimension sizes) for ST-3sigma, 1 for ST-3
        self.sigmas = {
            n: (1.0 / math.sqrt(sum(m.parametrizations.weight.original.shape)) if self.normalize else 1.0)
            for n, m in self.layers.items()
        }

    def _attach(self) -> None:
        for module in self.layers.values():
            register_soft_threshold(module, "weight", threshold=0.0, grad="dense", rescale=self.rescale)

    def ratio(self) -> float:
        """Current pruning ratio :math:`r` (0 before the window)."""
        if self.step_count <= self.start_step:
            return 0.0
        return cubic_sparsity(self.progress(self.end_step), self.target_sparsity)

    @torch.no_grad()
    def _update(self) -> None:
        r = self.ratio()
        if r <= 0.0:
            self._global = None
            for module in self.layers.values():
                module.parametrizations.weight[0].threshold.zero_()
            return
        mags = torch.cat([self._magnitude(n, m).flatten().float() for n, m in self.layers.items()])
        t = global_quantile(mags, r)
        self._global = t
        for n, module in self.layers.items():
            buf = module.parametrizations.weight[0].threshold
            buf.copy_(t * self.sigmas[n])

    def _magnitude(self, name: str, module: nn.Module) -> Tensor:
        """:math:`|\\theta| / \\sigma_l` (the division skipped where :math:`\\sigma_l = 1`, i.e. plain ST-3)."""
        mag = module.parametrizations.weight.original.detach().abs()
        return mag if self.sigmas[name] == 1.0 else mag / self.sigmas[name]

    @property
    def threshold(self) -> float:
        """The global threshold :math:`t` (one host sync)."""
        return 0.0 if self._global is None else float(self._global)

    def _extra_state(self) -> dict[str, Any]:
        return {"global_threshold": None if self._global is None else float(self._global)}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        t = state["global_threshold"]
        self._global = None if t is None else torch.tensor(t)
        t = 0.0 if t is None else t
        for n, module in self.layers.items():
            module.parametrizations.weight[0].threshold.fill_(t * self.sigmas[n])


@register_method("st3sigma")
class ST3SigmaPruner(ST3Pruner):
    """ST-3σ: as :class:`ST3Pruner` but the quantile is over :math:`|\\theta|/\\sigma_l` and :math:`t_l = t\\sigma_l`.

    :math:`\\sigma_l = 1/\\sqrt{\\sum_i \\mathrm{shape}_i}` (for a conv :math:`C_{out}+C_{in}+2k`), which
    makes the per-layer sparsity more uniform. :attr:`threshold` is the per-layer dict :math:`t_l`.
    Keyword arguments as ST-3.
    """

    normalize = True

    @property
    def threshold(self) -> dict[str, float]:
        """Per-layer thresholds :math:`t_l = t\\sigma_l`."""
        t = 0.0 if self._global is None else float(self._global)
        return {n: t * s for n, s in self.sigmas.items()}
