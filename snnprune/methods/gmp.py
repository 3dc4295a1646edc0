"""Gradual magnitude pruning (Zhu & Gupta 2017), the plain hard-mask baseline."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from snnprune.methods.base import Pruner, register_method
from snnprune.methods.schedules import cubic_sparsity
from snnprune.threshold.parametrization import MagnitudeMask, register_parametrization

__all__ = ["GMPPruner"]


@register_method("gmp")
class GMPPruner(Pruner):
    """GMP: per-layer magnitude mask following the cubic sparsity ramp.

    .. math::
        s_t = s_f + (s_i - s_f)\\left(1 - \\frac{t - t_0}{N}\\right)^3

    The mask :math:`M_l` (bool buffer, in ``state_dict``) is recomputed every ``frequency`` steps of the
    window and at its last step: each layer keeps its :math:`\\lceil (1 - s_t) n_l \\rceil` largest
    :math:`|\\theta \\odot M_l|` (magnitudes of the current effective weight, so a pruned weight stays
    pruned, as sparsity only grows). Pruned weights get zero gradient. After ``end_step`` the mask is
    fixed, so the final per-layer and overall sparsity equal ``target_sparsity`` (up to rounding to
    whole weights).

    Keyword arguments: ``target_sparsity`` (required), ``total_steps`` (required), ``start_step=0``,
    ``end_step=None`` (= ``total_steps``), ``initial_sparsity=0.0``, ``frequency=None`` (Zhu & Gupta's
    :math:`\\Delta t`; by default their 100 steps, capped at a tenth of the ramp
    ``end_step - start_step`` so that a short run still prunes in about ten increments instead of one or
    two large jumps). Zhu & Gupta end the ramp before the end of training and fine-tune with the mask
    fixed: pass ``end_step`` (``--prune-end-epoch`` on the command line) to do so.
    """

    def __init__(
        self,
        layers: dict[str, nn.Module],
        *,
        target_sparsity: float | None = None,
        end_step: int | None = None,
        initial_sparsity: float = 0.0,
        frequency: int | None = None,
        **kwargs: Any,
    ) -> None:
        if target_sparsity is None or not 0.0 <= target_sparsity < 1.0:
            raise ValueError(
                f"gmp needs target_sparsity in [0, 1) (fraction of zeros), got {target_sparsity}"
            )
        if not 0.0 <= initial_sparsity <= target_sparsity:
            raise ValueError(f"initial_sparsity must be in [0, target_sparsity], got {initial_sparsity}")
        if frequency is not None and frequency < 1:
            raise ValueError(f"frequency must be >= 1 step, got {frequency}")
        self.target_sparsity = float(target_sparsity)
        self.initial_sparsity = float(initial_sparsity)
        self.current_sparsity = 0.0
        super().__init__(layers, **kwargs)
        self.end_step = self.total_steps if end_step is None else int(end_step)
        if not self.start_step < self.end_step <= self.total_steps:
            raise ValueError(f"end_step must be in (start_step, total_steps], got {self.end_step}")
        ramp = self.end_step - self.start_step
        self.frequency = int(frequency) if frequency is not None else max(1, min(100, ramp // 10))

    def _attach(self) -> None:
        for module in self.layers.values():
            register_parametrization(module, "weight", MagnitudeMask(module.weight.shape))

    @torch.no_grad()
    def _update(self) -> None:
        n = self.step_count
        if n < self.start_step or n > self.end_step:
            return
        if (n - self.start_step) % self.frequency and n != self.end_step:
            return
        s = cubic_sparsity(self.progress(self.end_step), self.target_sparsity, self.initial_sparsity)
        self.current_sparsity = s
        for module in self.layers.values():
            plist = module.parametrizations.weight
            mask = plist[0].mask
            n_weights = mask.numel()
            n_keep = n_weights - math.floor(s * n_weights + 1e-6)  # ceil((1 - s) n), float-safe: never 0
            if n_keep >= n_weights:
                continue
            mag = (plist.original.detach().abs() * mask).flatten()
            keep = torch.topk(mag, n_keep, sorted=False).indices
            new = torch.zeros_like(mask.flatten())
            new[keep] = True
            mask.copy_(new.view_as(mask))

    @property
    def threshold(self) -> float:
        """The current target sparsity :math:`s_t` of the ramp (GMP has no threshold in :math:`\\theta` units)."""
        return self.current_sparsity

    def _extra_state(self) -> dict[str, Any]:
        return {"current_sparsity": self.current_sparsity}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.current_sparsity = float(state["current_sparsity"])
