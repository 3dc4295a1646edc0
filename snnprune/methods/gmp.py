"""Gradual magnitude pruning (Zhu & Gupta 2017), the plain hard-mask baseline."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from snnprune.methods.base import (
    KeywordError,
    Pruner,
    check_steps,
    check_target_sparsity,
    parse_granularity,
    register_method,
)
from snnprune.methods.schedules import cubic_sparsity
from snnprune.threshold.nm import check_nm_layer, from_groups, to_groups
from snnprune.threshold.parametrization import MagnitudeMask

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
    whole weights). The ramp's current level is :attr:`current_sparsity`; :attr:`threshold` is, per layer,
    the largest magnitude pruned at the last mask update (0 while nothing is pruned).

    Args:
        target_sparsity: final sparsity :math:`s_f` in [0, 1) (required).
        end_step: last step of the ramp (default ``total_steps``); Zhu & Gupta end the ramp before the end
            of training and fine-tune with the mask fixed (``--prune-end-epoch`` on the command line).
        initial_sparsity: :math:`s_i` in [0, ``target_sparsity``].
        frequency: steps between mask updates, Zhu & Gupta's :math:`\\Delta t` (default: their 100 steps,
            capped at a tenth of the ramp so a short run still prunes in about ten increments).
        granularity: ``"weight"`` (the default: per-layer magnitude) or ``"N:M"`` such as ``"2:4"``: every
            group of M consecutive input weights (:mod:`snnprune.threshold.nm`) keeps its
            :math:`M - \\lfloor s_t M \\rfloor` largest, so exactly N of M survive from the end of the ramp;
            ``target_sparsity`` is then :math:`1 - N/M` (its default there).
        total_steps: optimizer steps of the whole run (required).
        start_step: first step of the ramp.

    Raises:
        ValueError: ``target_sparsity`` outside [0, 1), ``initial_sparsity`` above it, ``frequency < 1``,
            ``end_step`` outside (``start_step``, ``total_steps``], a granularity other than weight or N:M,
            an N:M granularity with another ``target_sparsity``.
    """

    name_keywords: ClassVar[dict[str, str]] = {"target_sparsity": "P"}
    option_names: ClassVar[dict[str, str]] = {"end_step": "prune_end_epoch"}
    epoch_keywords: ClassVar[frozenset[str]] = frozenset({"end_step"})

    @classmethod
    def unset_defaults(cls, config: Mapping[str, Any], given: Collection[str]) -> set[str]:
        """``target_sparsity`` with an N:M granularity (it is 1 - N/M there)."""
        return {"target_sparsity"} if config.get("granularity") not in (None, "weight") else set()

    def __init__(
        self,
        *,
        target_sparsity: float | None = None,
        end_step: int | None = None,
        initial_sparsity: float = 0.0,
        frequency: int | None = None,
        granularity: str = "weight",
        total_steps: int | None = None,
        start_step: int = 0,
    ) -> None:
        super().__init__(total_steps=total_steps, start_step=start_step)
        self.nm = parse_granularity(granularity, ("weight",))
        if self.nm is not None:
            implied = 1.0 - self.nm[0] / self.nm[1]
            if target_sparsity is not None and abs(target_sparsity - implied) > 1e-9:
                raise KeywordError(
                    "target_sparsity",
                    f"target_sparsity does not apply to granularity {granularity!r} (it prunes {implied:g} of "
                    f"the weights), got {target_sparsity}; drop target_sparsity",
                )
            target_sparsity = implied
        target_sparsity = check_target_sparsity(target_sparsity, "gmp")
        if not 0.0 <= initial_sparsity <= target_sparsity:
            raise KeywordError(
                "initial_sparsity",
                f"initial_sparsity must be in [0, target_sparsity={target_sparsity}], got {initial_sparsity}; "
                "pass a smaller one",
            )
        if frequency is not None and check_steps(frequency, "frequency", "gmp") < 1:
            raise KeywordError("frequency", f"frequency must be >= 1 step, got {frequency}; pass e.g. 100")
        end = self.total_steps if end_step is None else check_steps(end_step, "end_step", "gmp")
        if not self.start_step < end <= self.total_steps:
            raise KeywordError(
                "end_step",
                f"end_step must be in (start_step={self.start_step}, total_steps={self.total_steps}], got {end}; end the "
                "ramp inside the run",
            )
        self.granularity = granularity
        self.target_sparsity = float(target_sparsity)
        self.initial_sparsity = float(initial_sparsity)
        self.end_step = end
        ramp = end - self.start_step
        self.frequency = int(frequency) if frequency is not None else max(1, min(100, ramp // 10))
        self.current_sparsity = 0.0
        self._thresholds: dict[str, Tensor] = {}
        self._cache: dict[str, float] | None = None

    def make_parametrization(self, name: str, module: nn.Module) -> nn.Module:
        """A :class:`~snnprune.threshold.MagnitudeMask` of the weight's shape (all ones).

        Raises:
            ValueError: N:M granularity on a layer whose input dimension is not a multiple of M.
        """
        if self.nm is not None:
            check_nm_layer(module, self.nm[1], name)
        return MagnitudeMask(module.weight.shape)

    @torch.no_grad()
    def _update(self) -> None:
        n = self.step_count
        if n < self.start_step or n > self.end_step:
            return
        if (n - self.start_step) % self.frequency and n != self.end_step:
            return
        s = cubic_sparsity(self.progress(self.end_step), self.target_sparsity, self.initial_sparsity)
        self.current_sparsity = s
        for name, module in self.layers.items():
            plist = module.parametrizations.weight
            mask = plist[0].mask
            if self.nm is not None:
                self._update_nm(name, plist.original, mask, s)
                continue
            n_weights = mask.numel()
            n_keep = n_weights - math.floor(s * n_weights + 1e-6)  # ceil((1 - s) n), float-safe: never 0
            if n_keep >= n_weights:
                continue
            mag = (plist.original.detach().abs() * mask).flatten()
            keep = torch.topk(mag, n_keep, sorted=False).indices
            new = torch.zeros_like(mask.flatten())
            new[keep] = True
            mask.copy_(new.view_as(mask))
            self._thresholds[name] = mag.masked_fill(new, 0).max()
            self._cache = None

    def _update_nm(self, name: str, theta: Tensor, mask: Tensor, s: float) -> None:
        """Keep the ``M - floor(s M)`` largest :math:`|\\theta \\odot M|` of every N:M group of one layer."""
        m = self.nm[1]
        n_keep = m - math.floor(s * m + 1e-6)
        if n_keep >= m:
            return
        mag = to_groups(theta.detach().abs() * mask, m)
        keep = torch.topk(mag, n_keep, dim=1, sorted=False).indices
        new = torch.zeros_like(mag, dtype=torch.bool).scatter_(1, keep, True)
        mask.copy_(from_groups(new, mask.shape))
        self._thresholds[name] = mag.masked_fill(new, 0).max()
        self._cache = None

    def _model_state_mismatch(self) -> str | None:
        if self.current_sparsity > 0:
            return None
        for name, module in self.layers.items():
            if not bool(module.parametrizations.weight[0].mask.all()):
                return f"layer {name!r} has pruned weights in the model, none in the pruner at step {self.step_count}"
        return None

    @property
    def threshold(self) -> dict[str, float]:
        """Per layer, the largest :math:`|\\theta|` pruned at the last mask update (one host sync)."""
        if self._cache is None:
            names = [n for n in self.layers if n in self._thresholds]
            values = torch.stack([self._thresholds[n].float() for n in names]).tolist() if names else []
            found = dict(zip(names, values, strict=True))
            self._cache = {n: found.get(n, 0.0) for n in self.layers}
        return dict(self._cache)

    def _extra_state(self) -> dict[str, Any]:
        return {"current_sparsity": self.current_sparsity, "thresholds": self.threshold}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        current, thresholds = float(state["current_sparsity"]), state["thresholds"]
        self.current_sparsity = current
        self._thresholds = {  # on the weights' device, like the ones the mask updates compute
            n: torch.tensor(float(t), device=self.layers[n].parametrizations.weight.original.device)
            for n, t in thresholds.items()
            if t > 0 and n in self.layers
        }
        self._cache = None
