"""Global scheduled soft threshold on raw :math:`\\theta`: LATS, S-LATS, PGH (Chen et al. 2023), STDS (2022).

All four register :class:`~snnprune.threshold.SoftThreshold` (default ``grad="ste"``, the authors'
``stmod``) on every selected layer with one global scalar threshold ``d`` that starts at 0 and reaches
``final_threshold`` :math:`D` after the last step of the window ``[start_step, total_steps]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from snnprune.methods.base import Pruner, register_method
from snnprune.methods.lr_total import lr_total as compute_lr_total
from snnprune.methods.schedules import (
    lats_low_freq,
    pgh_fraction,
    slats_fraction,
    stds_linear_fraction,
    stds_sine_fraction,
)
from snnprune.threshold.functional import _check_nonnegative
from snnprune.threshold.parametrization import register_soft_threshold

__all__ = ["LATSPruner", "PGHPruner", "SLATSPruner", "STDSPruner", "ScheduledThresholdPruner"]


class ScheduledThresholdPruner(Pruner):
    """Base for one global soft threshold ``d`` on raw :math:`\\theta` set by a schedule.

    Args:
        final_threshold: :math:`D \\ge 0`, the threshold after the last step.
        grad: backward variant of :func:`snnprune.soft_threshold` (default ``"ste"``).
        granularity: ``"weight"`` (element-wise :math:`S_d`) or ``"filter"`` (group soft-threshold of
            output channels, coupled across SEW/residual connections; :mod:`snnprune.structured`).
        filter_scale: filter granularity: ``"size"`` (a group goes when its RMS <= D) or ``"layer"``
            (when its RMS <= D times its layer's RMS).
        root: the model (set by :func:`~snnprune.methods.sparsify`; filter groups couple its layers).
        **kwargs: :class:`Pruner` arguments (``total_steps``, ``start_step``, ``optimizer``, ...).
    """

    def __init__(
        self,
        layers: dict[str, nn.Module],
        *,
        final_threshold: float | None = None,
        grad: str = "ste",
        granularity: str = "weight",
        filter_scale: str = "size",
        root: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if granularity not in ("weight", "filter"):
            raise ValueError(f"granularity must be 'weight' or 'filter', got {granularity!r}")
        self.granularity, self.filter_scale, self._root = granularity, filter_scale, root
        self.final_threshold = (
            None if final_threshold is None else _check_nonnegative(final_threshold, "final_threshold")
        )
        self.grad = grad
        self._threshold = 0.0
        super().__init__(layers, **kwargs)

    def _attach(self) -> None:
        if self.granularity == "filter":
            from snnprune.structured.filter import attach_filter_threshold

            attach_filter_threshold(self._root, self.layers, grad=self.grad, scale_by=self.filter_scale)
            return
        for module in self.layers.values():
            register_soft_threshold(module, "weight", threshold=0.0, grad=self.grad)

    def _require_final(self) -> float:
        if self.final_threshold is None:
            raise ValueError(f"method {self.method!r} needs final_threshold (D >= 0)")
        return self.final_threshold

    def fraction(self, x: float) -> float:
        """Fraction of :math:`D` at window progress ``x``."""
        raise NotImplementedError

    def _update(self) -> None:
        self._set_threshold(self._require_final() * self.fraction(self.progress()))

    def _set_threshold(self, value: float) -> None:
        if math.isnan(value) or value < 0:
            raise ValueError(
                f"{self.method}: computed threshold {value} is negative/NaN; check the schedule inputs"
            )
        self._threshold = float(value)
        for module in self.layers.values():
            module.parametrizations.weight[0].threshold.fill_(self._threshold)

    @property
    def threshold(self) -> float:
        """The current global threshold ``d``."""
        return self._threshold

    def _extra_state(self) -> dict[str, Any]:
        return {"threshold": self._threshold}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._set_threshold(state["threshold"])


@register_method("slats")
class SLATSPruner(ScheduledThresholdPruner):
    """S-LATS: :math:`d(n) = D\\,f_S(x)`, :math:`f_S(x) = x + \\sin(\\pi x)/\\pi`, :math:`x = (n - n_0)/N`.

    Keyword arguments: ``final_threshold`` (required), ``total_steps`` (required), ``start_step=0``,
    ``grad="ste"``.
    """

    def __init__(
        self,
        layers: dict[str, nn.Module],
        *,
        final_threshold: float | None = None,
        grad: str = "ste",
        **kwargs: Any,
    ) -> None:
        super().__init__(layers, final_threshold=final_threshold, grad=grad, **kwargs)
        self._require_final()

    def fraction(self, x: float) -> float:
        return slats_fraction(x)


@register_method("pgh")
class PGHPruner(ScheduledThresholdPruner):
    """PGH / continuation: :math:`d(n) = D\\,g(x;\\beta)` (see :func:`~snnprune.methods.schedules.pgh_fraction`).

    The implied L1 coefficient decays as :math:`\\lambda_0\\beta^x`; :math:`\\beta < 1` prunes early,
    :math:`\\beta = 1` is S-LATS. Keyword arguments: ``final_threshold``, ``total_steps``, ``beta``
    (required, > 0), ``start_step=0``, ``grad="ste"``.
    """

    def __init__(
        self,
        layers: dict[str, nn.Module],
        *,
        final_threshold: float | None = None,
        beta: float | None = None,
        grad: str = "ste",
        **kwargs: Any,
    ) -> None:
        if beta is None or not beta > 0:
            raise ValueError(f"pgh needs beta > 0 (e.g. beta=0.1; beta=1 is S-LATS), got {beta}")
        self.beta = float(beta)
        super().__init__(layers, final_threshold=final_threshold, grad=grad, **kwargs)
        self._require_final()

    def fraction(self, x: float) -> float:
        return pgh_fraction(x, self.beta)


@register_method("stds")
class STDSPruner(ScheduledThresholdPruner):
    """STDS: :math:`d = D(1-\\cos\\pi x)/2` (``shape="sine"``, default) or :math:`d = Dx` (``"linear"``).

    The authors schedule over the whole run (``start_step=0``). Keyword arguments: ``final_threshold``,
    ``total_steps``, ``shape="sine"``, ``start_step=0``, ``grad="ste"``.
    """

    def __init__(
        self,
        layers: dict[str, nn.Module],
        *,
        final_threshold: float | None = None,
        shape: str = "sine",
        grad: str = "ste",
        **kwargs: Any,
    ) -> None:
        if shape not in ("sine", "linear"):
            raise ValueError(f"stds shape must be 'sine' or 'linear', got {shape!r}")
        self.shape = shape
        super().__init__(layers, final_threshold=final_threshold, grad=grad, **kwargs)
        self._require_final()

    def fraction(self, x: float) -> float:
        return stds_sine_fraction(x) if self.shape == "sine" else stds_linear_fraction(x)


@register_method("lats")
class LATSPruner(ScheduledThresholdPruner):
    """LATS: the threshold grows with the learning rate actually used, :math:`d_k = \\lambda\\sum_{j\\le k}\\eta_j`.

    .. math::
        \\lambda = D / \\textstyle\\sum_{j \\in \\text{window}} \\eta_j \\quad(\\text{or } \\lambda =
        \\texttt{l1\\_coeff})

    :math:`\\eta_j` is read from ``optimizer.param_groups[0]["lr"]`` in :meth:`step` (called after
    ``optimizer.step()`` and before the scheduler steps, so it is the lr step ``j`` used). With
    ``final_threshold`` and neither ``lr_total`` nor ``l1_coeff``, :meth:`bind` computes ``lr_total`` with
    :func:`snnprune.lr_total` (dry run of copies of optimizer and scheduler).

    ``schedule="closed_form"`` instead reproduces the authors' "low-freq" closed form
    (:func:`~snnprune.methods.schedules.lats_low_freq`, per-epoch cosine, no warm-up); it needs
    ``steps_per_epoch`` and a window of whole epochs, and no optimizer.

    Keyword arguments: ``final_threshold``, ``total_steps`` (required), ``lr_total=None``,
    ``l1_coeff=None``, ``schedule="lr"``, ``start_step=0``, ``grad="ste"``, ``optimizer=None``,
    ``lr_scheduler=None``, ``steps_per_epoch=None``.
    """

    def __init__(
        self,
        layers: dict[str, nn.Module],
        *,
        final_threshold: float | None = None,
        lr_total: float | None = None,
        l1_coeff: float | None = None,
        schedule: str = "lr",
        grad: str = "ste",
        **kwargs: Any,
    ) -> None:
        if schedule not in ("lr", "closed_form"):
            raise ValueError(f"lats schedule must be 'lr' or 'closed_form', got {schedule!r}")
        if final_threshold is None and l1_coeff is None:
            raise ValueError("lats needs final_threshold (D) or l1_coeff (lambda)")
        if schedule == "closed_form" and final_threshold is None:
            raise ValueError("lats schedule='closed_form' needs final_threshold (D)")
        if lr_total is not None and not (math.isfinite(lr_total) and lr_total > 0):
            raise ValueError(f"lr_total must be > 0, got {lr_total}")
        self.schedule = schedule
        self.lr_total = None if lr_total is None else float(lr_total)
        self.l1_coeff = None if l1_coeff is None else _check_nonnegative(l1_coeff, "l1_coeff")
        self.lr_sum = 0.0
        super().__init__(layers, final_threshold=final_threshold, grad=grad, **kwargs)
        if schedule == "closed_form" and self.steps_per_epoch is not None:
            self._closed_form_epochs()

    def bind(
        self,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: object | None = None,
        steps_per_epoch: int | None = None,
    ) -> LATSPruner:
        """Attach the optimizer; computes ``lr_total`` by a dry run when it is needed and unknown."""
        super().bind(optimizer, lr_scheduler, steps_per_epoch)
        if self.schedule == "closed_form":
            if self.steps_per_epoch is not None:
                self._closed_form_epochs()
        elif self.l1_coeff is None and self.lr_total is None:
            self.lr_total = compute_lr_total(
                optimizer, lr_scheduler, self.total_steps, self.steps_per_epoch, self.start_step
            )
            if not self.lr_total > 0:
                raise ValueError("the learning rates of the pruning window sum to 0; LATS cannot reach D")
        return self

    def _closed_form_epochs(self) -> int:
        window = self.total_steps - self.start_step
        if self.steps_per_epoch is None or window % self.steps_per_epoch:
            raise ValueError(
                "lats schedule='closed_form' needs steps_per_epoch and a pruning window "
                f"(total_steps - start_step = {window}) of whole epochs; got steps_per_epoch={self.steps_per_epoch}"
            )
        return window // self.steps_per_epoch

    @property
    def lam(self) -> float | None:
        """:math:`\\lambda` (None until ``lr_total`` is known)."""
        if self.l1_coeff is not None:
            return self.l1_coeff
        if self.lr_total is not None:
            return self.final_threshold / self.lr_total
        return None

    def _update(self) -> None:
        if self.schedule == "closed_form":
            n = max(self.step_count - self.start_step, 0)
            value = lats_low_freq(n, self.steps_per_epoch, self._closed_form_epochs())
            self._set_threshold(self.final_threshold * value)
            return
        if self.optimizer is None or self.lam is None:
            raise RuntimeError(
                "lats needs the optimizer to read the learning rate: call pruner.bind(optimizer, lr_scheduler, "
                "steps_per_epoch) after creating them (or pass optimizer= / lr_total= to sparsify)"
            )
        lr = float(self.optimizer.param_groups[0]["lr"])
        if not math.isfinite(lr):
            raise ValueError(
                f"lats: the optimizer's learning rate is {lr} at step {self.step_count}; fix the lr"
            )
        # commit lr_sum only once the threshold is accepted, so a rejected step leaves no trace
        lr_sum = self.lr_sum + lr if self.step_count > self.start_step else self.lr_sum
        self._set_threshold(self.lam * lr_sum)
        self.lr_sum = lr_sum

    def _extra_state(self) -> dict[str, Any]:
        return {
            "threshold": self._threshold,
            "lr_sum": self.lr_sum,
            "lr_total": self.lr_total,
            "l1_coeff": self.l1_coeff,
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.lr_sum = float(state["lr_sum"])
        self.lr_total = state["lr_total"]
        self.l1_coeff = state["l1_coeff"]
        self._set_threshold(state["threshold"])
