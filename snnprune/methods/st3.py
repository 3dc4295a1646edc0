"""ST-3 and ST-3σ (Vanderschueren & De Vleeschouwer 2023): quantile soft threshold with a cubic ratio."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from snnprune.methods.base import KeywordError, Pruner, check_steps, check_target_sparsity, register_method
from snnprune.methods.schedules import cubic_sparsity
from snnprune.threshold.parametrization import SoftThreshold

__all__ = ["ST3Pruner", "ST3SigmaPruner", "global_quantile"]


#: below this many values the full selection is as cheap as the bracketed search
_BRACKET_MIN = 1 << 18


def global_quantile(values: Tensor | Sequence[Tensor], q: float, hint: float | None = None) -> Tensor:
    """Quantile of the values of one or several tensors, linear interpolation (``torch.quantile`` semantics).

    Up to 2^18 values: one ``kthvalue`` over the concatenated values for the lower order statistic; the
    next one is the smallest value above it (or the same value when it is repeated), found by two cheap
    passes. Stays on device (no host sync).

    For more than 2^18 values, on any device: the two order statistics are found exactly inside a bracket,
    ``hint`` ±0.2 % when a hint (a value near the answer, e.g. the previous step's threshold) is given and
    holds them, else the quantiles of an evenly strided sample of 2^16 values ±4 standard deviations of a
    sample rank (Floyd & Rivest). Two counting passes give the ranks before and up to the bracket, and
    only the values inside it are searched; a bracket that misses (about 1 in 10^4 for the sample) falls back
    to the ``kthvalue`` path. The two counts are read in one host transfer (plus the one a masked selection
    takes on a GPU); a hint is a host value, so callers on a GPU pass none. Same order statistics, hence the same value, for a fraction of the cost of a
    full selection over millions of weights, which ST-3 does every step.

    Args:
        values: a tensor (any shape) or a sequence of tensors (their values together, no copy into one).
        q: level in [0, 1].
        hint: optional positive guess of the result.

    Returns:
        A 0-d tensor.
    """
    parts = [values.reshape(-1)] if isinstance(values, Tensor) else [v.reshape(-1) for v in values]
    n = sum(p.numel() for p in parts)
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    if hi == lo or pos == lo:
        hi = lo
    stats = _order_stats_bracketed(parts, lo, hi, hint) if n > _BRACKET_MIN else None
    if stats is None:  # the full selection: small inputs, or a bracket that missed
        stats = _order_pair(parts[0] if len(parts) == 1 else torch.cat(parts), lo, hi)
    v_lo, v_hi = stats
    return v_lo if hi == lo else v_lo + (pos - lo) * (v_hi - v_lo)


def _order_pair(values: Tensor, lo: int, hi: int) -> tuple[Tensor, Tensor]:
    """The ``lo``-th and ``hi``-th smallest of 1-D ``values`` (0-based, ``hi`` = ``lo`` or ``lo + 1``).

    One ``kthvalue``; the next order statistic is ``v_lo`` again when it is repeated, else the smallest
    value above it (two cheap passes, no host sync).
    """
    v_lo = torch.kthvalue(values, lo + 1).values
    if hi == lo:
        return v_lo, v_lo
    repeated = (values <= v_lo).sum() >= hi + 1
    above = values.masked_fill(values <= v_lo, float("inf")).min()
    return v_lo, torch.where(repeated, v_lo, above)


def _bracket_stats(
    parts: list[Tensor], lo: int, hi: int, a: Tensor, b: Tensor
) -> tuple[Tensor, Tensor] | None:
    """The ``lo``-th and ``hi``-th smallest values (0-based) of ``parts`` if both lie in ``[a, b]``, else None.

    Two counting passes give the ranks before and up to the bracket (read together, one host transfer);
    only the values inside it are searched.
    """
    counts = torch.stack(
        [sum(torch.count_nonzero(p < a) for p in parts), sum(torch.count_nonzero(p <= b) for p in parts)]
    )
    below, upto = counts.tolist()
    if below > lo or upto < hi + 1:
        return None
    inside = torch.cat([p[(p >= a) & (p <= b)] for p in parts])
    return _order_pair(inside, lo - below, hi - below)


def _order_stats_bracketed(
    parts: list[Tensor], lo: int, hi: int, hint: float | None
) -> tuple[Tensor, Tensor] | None:
    """Exact order statistics ``lo`` and ``hi`` of ``parts`` by a bracketed search; None if it misses.

    First a narrow bracket around ``hint`` (±0.2 %), then one from an evenly strided sample of 2^16 values
    (Floyd & Rivest's selection: the sample's quantiles ±4 standard deviations of a sample rank).
    """
    dtype, device = parts[0].dtype, parts[0].device
    if hint is not None and math.isfinite(hint) and hint > 0:
        a, b = (
            torch.tensor(hint * 0.998, dtype=dtype, device=device),
            torch.tensor(hint * 1.002, dtype=dtype, device=device),
        )
        stats = _bracket_stats(parts, lo, hi, a, b)
        if stats is not None:
            return stats
    n = sum(p.numel() for p in parts)
    stride = max(1, n // 65536)
    sample = torch.cat([p[::stride] for p in parts]).sort().values
    m = sample.numel()
    level = lo / max(n - 1, 1)
    spread = 4.0 * math.sqrt(m * level * (1 - level)) + 2  # 4 standard deviations of a sample rank
    ia = math.floor(level * (m - 1) - spread)
    ib = math.ceil(hi / max(n - 1, 1) * (m - 1) + spread)
    a = sample[ia] if ia > 0 else torch.tensor(float("-inf"), dtype=dtype, device=device)
    b = sample[ib] if ib < m - 1 else torch.tensor(float("inf"), dtype=dtype, device=device)
    return _bracket_stats(parts, lo, hi, a, b)


class ST3Threshold(SoftThreshold):
    """ST-3's parametrization: :class:`~snnprune.threshold.SoftThreshold` (``grad="dense"``) that can be
    switched to a fixed mask for the fine-tuning phase.

    Before :meth:`fix`: :math:`w = c \\odot S_t(\\theta)`, dense straight-through gradient. After:
    :math:`w = \\theta \\odot M` with :math:`M` fixed, so pruned weights get no gradient and stay zero.

    Args:
        rescale: apply the per-output-channel rescale :math:`c`.
        shape: the weight's shape (for the ``mask`` buffer).
    """

    def __init__(self, rescale: bool, shape: torch.Size | tuple[int, ...]) -> None:
        super().__init__(0.0, grad="dense", rescale=rescale)
        self.register_buffer("mask", torch.ones(shape, dtype=torch.bool))
        self.register_buffer("fixed", torch.tensor(False))
        self._fixed = False

    @torch.no_grad()
    def fix(self, theta: Tensor) -> None:
        """Bake :math:`c \\odot S_t(\\theta)` into ``theta`` (in place) and fix :math:`M = 1[\\theta \\ne 0]`."""
        theta.copy_(super().forward(theta))
        self.mask.copy_(theta != 0)
        self.fixed.fill_(True)
        self._fixed = True

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._fixed = bool(self.fixed)

    def forward(self, theta: Tensor) -> Tensor:
        """Soft threshold (dense straight-through) before :meth:`fix`, ``theta * mask`` after."""
        if self._fixed:
            return theta * self.mask
        return super().forward(theta)


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

    Fine-tuning phase (the authors' ``fix_from`` / ``n_ft_epochs``): with ``finetune_steps > 0``, after step
    ``total_steps - finetune_steps`` the weights become :math:`\\theta \\leftarrow c \\odot S_t(\\theta)` and
    the mask :math:`M = 1[\\theta \\ne 0]` is fixed: :math:`w = \\theta \\odot M`, pruned weights get no
    gradient and the mask no longer changes. The authors fine-tune 10 epochs (``n_ft_epochs = 10``).

    Args:
        target_sparsity: :math:`p_{\\max}` in [0, 1) (required).
        end_step: last step of the cubic ramp (default: ``total_steps - finetune_steps``).
        rescale: apply the per-output-channel rescale :math:`c`.
        finetune_steps: steps at the end of the run trained with the mask fixed (0: none).
        total_steps: optimizer steps of the whole run, fine-tuning included (required).
        start_step: first step of the ramp.

    Raises:
        ValueError: ``target_sparsity`` outside [0, 1), ``finetune_steps`` outside
            [0, ``total_steps - start_step``), ``end_step`` outside (``start_step``,
            ``total_steps - finetune_steps``].
    """

    name_keywords: ClassVar[dict[str, str]] = {"target_sparsity": "P"}
    option_names: ClassVar[dict[str, str]] = {
        "end_step": "prune_end_epoch",
        "finetune_steps": "st3_finetune_epochs",
    }
    epoch_keywords: ClassVar[frozenset[str]] = frozenset({"end_step", "finetune_steps"})
    normalize: bool = False

    def __init__(
        self,
        *,
        target_sparsity: float | None = None,
        end_step: int | None = None,
        rescale: bool = True,
        finetune_steps: int = 0,
        total_steps: int | None = None,
        start_step: int = 0,
    ) -> None:
        super().__init__(total_steps=total_steps, start_step=start_step)
        self.target_sparsity = check_target_sparsity(target_sparsity, type(self).method)
        finetune_steps = check_steps(finetune_steps, "finetune_steps", type(self).method)
        if not 0 <= finetune_steps < self.total_steps - self.start_step:
            raise KeywordError(
                "finetune_steps",
                f"finetune_steps must be in [0, total_steps - start_step = {self.total_steps - self.start_step}), "
                f"got {finetune_steps}",
            )
        fix_step = self.total_steps - finetune_steps
        end = fix_step if end_step is None else check_steps(end_step, "end_step", type(self).method)
        if not self.start_step < end <= fix_step:
            raise KeywordError(
                "end_step",
                f"end_step must be in (start_step, total_steps - finetune_steps = {fix_step}], got {end}",
            )
        self.end_step = end
        self.rescale = bool(rescale)
        self.finetune_steps = finetune_steps
        self.fix_step = fix_step
        self.sigmas: dict[str, float] = {}
        self._global: Tensor | None = None

    def make_parametrization(self, name: str, module: nn.Module) -> nn.Module:
        """An :class:`ST3Threshold` (threshold 0, dense straight-through, optional rescale)."""
        if self.finetune_steps:
            return ST3Threshold(self.rescale, module.weight.shape)
        return SoftThreshold(0.0, grad="dense", rescale=self.rescale)

    def _on_prepare(self) -> None:
        # sigma_l = 1 / sqrt(sum of the tensor's dimension sizes) for ST-3sigma, 1 for ST-3
        self.sigmas = {
            n: (1.0 / math.sqrt(sum(m.parametrizations.weight.original.shape)) if self.normalize else 1.0)
            for n, m in self.layers.items()
        }

    def ratio(self) -> float:
        """Current pruning ratio :math:`r` (0 before the window)."""
        if self.step_count <= self.start_step:
            return 0.0
        return cubic_sparsity(self.progress(self.end_step), self.target_sparsity)

    @property
    def current_sparsity(self) -> float:
        """The ramp's current target :math:`r` (the sparsity the quantile threshold produces)."""
        return self.ratio()

    @property
    def fixed(self) -> bool:
        """True once the fine-tuning phase has fixed the mask."""
        return bool(self.finetune_steps) and self.step_count >= self.fix_step

    @torch.no_grad()
    def _update(self) -> None:
        if self.finetune_steps and self.step_count > self.fix_step:
            return  # mask fixed: nothing moves any more
        r = self.ratio()
        if r <= 0.0:
            self._global = None
            for module in self.layers.values():
                module.parametrizations.weight[0].threshold.zero_()
            return
        mags = [self._magnitude(n, m).float() for n, m in self.layers.items()]
        cpu = mags[0].device.type == "cpu"
        # the previous threshold as the hint of the bracketed search (CPU only: reading it syncs a GPU)
        hint = float(self._global) if cpu and self._global is not None else None
        t = global_quantile(mags, r, hint=hint)
        self._global = t
        t_cpu = float(t) if t.device.type == "cpu" else None  # a float: the forward runs one softshrink
        for n, module in self.layers.items():
            p = module.parametrizations.weight[0]
            if t_cpu is not None:
                p.set_threshold(t_cpu * self.sigmas[n])
            else:
                p.threshold.copy_(t * self.sigmas[n])
        if self.finetune_steps and self.step_count == self.fix_step:
            for module in self.layers.values():
                plist = module.parametrizations.weight
                plist[0].fix(plist.original)

    def _magnitude(self, name: str, module: nn.Module) -> Tensor:
        """:math:`|\\theta| / \\sigma_l` (the division skipped where :math:`\\sigma_l = 1`, i.e. plain ST-3)."""
        mag = module.parametrizations.weight.original.detach().abs()
        return mag if self.sigmas[name] == 1.0 else mag / self.sigmas[name]

    def _model_state_mismatch(self) -> str | None:
        for name, module in self.layers.items():
            p = module.parametrizations.weight[0]
            model_fixed = bool(getattr(p, "_fixed", False))
            if model_fixed != self.fixed:
                return f"layer {name!r} has fixed={model_fixed} in the model, {self.fixed} in the pruner"
            if self._global is None and bool((p.threshold != 0).any()):
                return f"layer {name!r} has threshold {float(p.threshold):.6g} in the model, 0 in the pruner"
        return None

    @property
    def threshold(self) -> float:
        """The global threshold :math:`t` (one host sync)."""
        return 0.0 if self._global is None else float(self._global)

    def threshold_snapshot(self) -> Tensor | None:
        return None if self._global is None else self._global.detach().reshape(1)

    def thresholds_from_snapshot(self, values: list[float]) -> dict[str, float]:
        return {n: values[0] * s for n, s in self.sigmas.items()}  # sigma = 1 for ST-3: t itself

    def _extra_state(self) -> dict[str, Any]:
        return {"global_threshold": None if self._global is None else float(self._global)}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        t = state["global_threshold"]
        device = next(iter(self.layers.values())).parametrizations.weight.original.device
        self._global = None if t is None else torch.tensor(t, device=device)  # where _update puts it
        t = 0.0 if t is None else t
        for n, module in self.layers.items():
            module.parametrizations.weight[0].threshold.fill_(t * self.sigmas[n])


@register_method("st3sigma")
class ST3SigmaPruner(ST3Pruner):
    """ST-3σ: as :class:`ST3Pruner` but the quantile is over :math:`|\\theta|/\\sigma_l` and :math:`t_l = t\\sigma_l`.

    :math:`\\sigma_l = 1/\\sqrt{\\sum_i \\mathrm{shape}_i}` (for a conv :math:`C_{out}+C_{in}+2k`), which
    makes the per-layer sparsity more uniform. :attr:`threshold` is the per-layer dict :math:`t_l`.

    Args:
        target_sparsity: :math:`p_{\\max}` in [0, 1) (required).
        end_step: last step of the cubic ramp (default: ``total_steps - finetune_steps``).
        rescale: apply the per-output-channel rescale :math:`c`.
        finetune_steps: steps at the end of the run trained with the mask fixed (0: none).
        total_steps: optimizer steps of the whole run, fine-tuning included (required).
        start_step: first step of the ramp.
    """

    normalize = True

    @property
    def threshold(self) -> dict[str, float]:
        """Per-layer thresholds :math:`t_l = t\\sigma_l`."""
        t = 0.0 if self._global is None else float(self._global)
        return {n: t * s for n, s in self.sigmas.items()}
