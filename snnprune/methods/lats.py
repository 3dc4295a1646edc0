"""Global scheduled soft threshold on raw :math:`\\theta`: LATS, S-LATS, PGH (Chen et al. 2023), STDS (2022).

All four register :class:`~snnprune.threshold.SoftThreshold` (default ``grad="ste"``, the authors'
``stmod``) on every selected layer with one global scalar threshold ``d`` that starts at 0 and reaches
``final_threshold`` :math:`D` after the last step of the window ``[start_step, total_steps]``
(``snnprune/docs/methods.md`` sections 2 and 3).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from snnprune.methods.base import (
    KeywordError,
    Pruner,
    check_choice,
    check_finite_nonnegative,
    check_grad_keyword,
    check_steps,
    parse_granularity,
    register_method,
)
from snnprune.methods.lr_total import MAX_DRY_RUN_STEPS
from snnprune.methods.lr_total import lr_total as compute_lr_total
from snnprune.methods.schedules import (
    lats_low_freq,
    pgh_fraction,
    slats_fraction,
    stds_linear_fraction,
    stds_sine_fraction,
)
from snnprune.threshold.nm import NMSoftThreshold, check_nm_layer
from snnprune.threshold.parametrization import SoftThreshold

__all__ = ["LATSPruner", "PGHPruner", "SLATSPruner", "STDSPruner", "ScheduledThresholdPruner"]


class ScheduledThresholdPruner(Pruner):
    """Base for one global soft threshold ``d`` on raw :math:`\\theta` set by a schedule.

    A subclass defines :meth:`fraction` (the fraction of :math:`D` at window progress :math:`x`); the
    per-layer parametrization is created in :meth:`make_parametrization` (override it to change the
    operator, e.g. its granularity).

    Args:
        final_threshold: :math:`D \\ge 0`, the threshold after the last step (finite).
        grad: backward variant of :func:`snnprune.soft_threshold` (``"ste"``, ``"exact"`` or ``"dense"``).
        total_steps: optimizer steps of the whole run.
        start_step: first step of the pruning window.
        granularity: ``"weight"`` (element-wise :math:`S_d`), ``"filter"`` (group soft-threshold of
            output channels, coupled across SEW/residual connections; :mod:`snnprune.structured`) or
            ``"N:M"`` such as ``"2:4"`` (every group of M consecutive input weights gets the threshold
            :math:`d\\,\\tau_g` relative to its own cut, so exactly N of M survive at the end of the
            window; :mod:`snnprune.threshold.nm`). With N:M, ``d`` is that fraction: ``final_threshold``
            is 1 (its default there) and ``l1_coeff`` is refused.
        filter_scale: filter granularity only: ``"size"`` (a group goes when its RMS <= D; the default)
            or ``"layer"`` (when its RMS <= D times its layer's RMS).

    Raises:
        ValueError: missing or negative/infinite ``final_threshold``, unknown ``grad``, bad step counts,
            a granularity other than weight, filter or N:M, an N:M granularity with ``final_threshold != 1``.
    """

    #: subclasses whose schedule can do without D (LATS with ``l1_coeff``) set this to False
    requires_final_threshold: ClassVar[bool] = True
    name_keywords: ClassVar[dict[str, str]] = {"final_threshold": "D"}

    @classmethod
    def unset_defaults(cls, config: Mapping[str, Any], given: Collection[str]) -> set[str]:
        """``final_threshold`` with an N:M granularity (each group's cut ends the schedule)."""
        nm = config.get("granularity") not in (None, "weight", "filter")
        return {"final_threshold"} if nm else set()

    @property
    def removes_channels(self) -> bool:
        return self.granularity == "filter"

    def __init__(
        self,
        *,
        final_threshold: float | None = None,
        grad: str = "ste",
        granularity: str = "weight",
        filter_scale: Literal["size", "layer"] | None = None,
        total_steps: int | None = None,
        start_step: int = 0,
    ) -> None:
        super().__init__(total_steps=total_steps, start_step=start_step)
        self.nm = parse_granularity(granularity, ("weight", "filter"))
        if self.nm is not None:
            if final_threshold not in (None, 1, 1.0):
                raise KeywordError(
                    "final_threshold",
                    f"final_threshold does not apply to granularity {granularity!r} (the threshold is a fraction "
                    f"of each group's N:M cut, ending at 1), got {final_threshold}; drop final_threshold",
                )
            final_threshold = 1.0
        if final_threshold is None:
            if self.requires_final_threshold:
                raise KeywordError(
                    "final_threshold",
                    f"method {self.method!r} needs final_threshold (D >= 0); pass e.g. final_threshold=0.1",
                )
        else:
            final_threshold = check_finite_nonnegative(final_threshold, "final_threshold")
        check_grad_keyword(grad)
        check_choice(ScheduledThresholdPruner, "filter_scale", filter_scale)
        if filter_scale is not None and granularity != "filter":
            raise KeywordError(
                "filter_scale",
                f"filter_scale={filter_scale!r} applies to granularity='filter' only (this pruner prunes "
                "single weights); pass granularity='filter' or drop filter_scale",
            )
        self.granularity = granularity
        self.filter_scale = (filter_scale or "size") if granularity == "filter" else None
        self.final_threshold = final_threshold
        self.grad = grad
        self._threshold = 0.0

    def make_parametrization(self, name: str, module: nn.Module) -> nn.Module:
        """A soft threshold with threshold 0 and this pruner's ``grad``.

        :class:`~snnprune.threshold.SoftThreshold` for ``granularity="weight"``; for ``"filter"`` a
        :class:`~snnprune.threshold.group.GroupSoftThreshold` over output channels, coupled across the
        model's SEW/residual connections once every layer is attached (:meth:`_on_prepare`); for N:M an
        :class:`~snnprune.threshold.nm.NMSoftThreshold`.

        Raises:
            ValueError: filter granularity on a grouped conv; N:M on a layer whose input dimension is not
                a multiple of M.
        """
        if self.granularity == "filter":
            from snnprune.threshold.group import GroupSoftThreshold, check_groupable

            check_groupable(module)
            return GroupSoftThreshold(0.0, grad=self.grad, scale_by=self.filter_scale)
        if self.nm is not None:
            check_nm_layer(module, self.nm[1], name)
            return NMSoftThreshold(*self.nm, grad=self.grad)
        return SoftThreshold(0.0, grad=self.grad)

    def _on_prepare(self) -> None:
        if self.granularity == "filter":
            from snnprune.structured.filter import couple_filter_groups

            couple_filter_groups(self.model, self.layers)

    def fraction(self, x: float) -> float:
        """Fraction of :math:`D` at window progress ``x`` in [0, 1] (0 at 0, 1 at 1)."""
        raise NotImplementedError(f"{type(self).__name__} must define fraction(x)")

    def _update(self) -> None:
        self._set_threshold(self.final_threshold * self.fraction(self.progress()))

    def _set_threshold(self, value: float) -> None:
        if math.isnan(value) or value < 0:
            raise ValueError(
                f"{self.method}: computed threshold {value} is negative/NaN; check the schedule inputs"
            )
        if self.nm is not None and self.total_steps is not None and self.step_count >= self.total_steps:
            value = 1.0  # N:M: the exact cut at the end of the window, whatever rounding the schedule left
        self._threshold = float(value)
        for module in self._attached:
            module.parametrizations.weight[0].set_threshold(self._threshold)

    def _model_state_mismatch(self) -> str | None:
        for module in self._attached:
            buf = module.parametrizations.weight[0].threshold
            want = torch.tensor(self._threshold, dtype=buf.dtype, device=buf.device)
            if not bool((buf == want).all()):
                return (
                    f"threshold {float(buf.max()):.6g} in the model, {self._threshold:.6g} in the pruner "
                    f"at step {self.step_count}"
                )
        return None

    @property
    def threshold(self) -> float:
        """The current global threshold ``d``."""
        return self._threshold

    def _extra_state(self) -> dict[str, Any]:
        return {"threshold": self._threshold}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._set_threshold(float(state["threshold"]))


@register_method("lats")
class LATSPruner(ScheduledThresholdPruner):
    """LATS: the threshold grows with the learning rate actually used, :math:`d_k = \\lambda\\sum_{j\\le k}\\eta_j`.

    .. math::
        \\lambda = D / \\textstyle\\sum_{j \\in \\text{window}} \\eta_j \\quad(\\text{or } \\lambda =
        \\texttt{l1\\_coeff})

    :math:`\\eta_j` is read from ``optimizer.param_groups[0]["lr"]`` in :meth:`step` (called after
    ``optimizer.step()`` and before the scheduler steps, so it is the lr step ``j`` used). With
    ``final_threshold`` and neither ``lr_total`` nor ``l1_coeff``, :meth:`bind` computes ``lr_total`` with
    :func:`snnprune.lr_total` (dry run of copies of optimizer and scheduler). If the learning rates
    actually summed differ from that plan at the end of the window (the scheduler stepped differently
    from what :meth:`bind` was told), a warning names the likely cause.

    ``schedule="closed_form"`` instead reproduces the authors' "low-freq" closed form
    (:func:`~snnprune.methods.schedules.lats_low_freq`, per-epoch cosine, no warm-up); it does not read the
    learning rate, needs ``epoch_length`` and a window of whole epochs, and no optimizer.

    Args:
        final_threshold: :math:`D`, the threshold after the last step (required unless ``l1_coeff``).
        lr_total: :math:`\\sum\\eta` over the window, if known (default: computed by :meth:`bind`).
        l1_coeff: :math:`\\lambda` directly (then :math:`D` is an outcome).
        schedule: ``"lr"`` (the learning rates actually used) or ``"closed_form"`` (the authors' formula).
        epoch_length: optimizer steps per epoch, :math:`B` of the closed form (required by
            ``schedule="closed_form"``; independent of how the lr scheduler is stepped).
        grad: backward variant (default ``"ste"``).
        granularity: ``"weight"``, ``"filter"`` (whole output channels) or ``"N:M"`` such as ``"2:4"`` (N of
            every M input weights; see :class:`ScheduledThresholdPruner`).
        filter_scale: ``"size"`` or ``"layer"`` (filter granularity only).
        total_steps: optimizer steps of the whole run (required).
        start_step: first step of the pruning window.

    Raises:
        ValueError: neither or both of ``final_threshold`` and ``l1_coeff``, a closed form without ``epoch_length`` or
            whole epochs, non-positive/infinite ``lr_total``.
    """

    requires_final_threshold = False
    state_kwargs = frozenset({"lr_total"})
    option_names: ClassVar[dict[str, str]] = {"schedule": "lats_schedule"}
    epoch_keywords: ClassVar[frozenset[str]] = frozenset({"epoch_length"})

    @classmethod
    def unset_defaults(cls, config: Mapping[str, Any], given: Collection[str]) -> set[str]:
        """Also ``final_threshold`` when ``l1_coeff`` is given (then D is an outcome)."""
        return super().unset_defaults(config, given) | ({"final_threshold"} if "l1_coeff" in given else set())

    @classmethod
    def check_plan(cls, config: Mapping[str, Any], plan: Mapping[str, Any]) -> None:
        """The lr schedule sums the learning rates of at most :data:`MAX_DRY_RUN_STEPS` epochs before
        training; the closed form needs a cosine ``lr_scheduler``."""
        schedule = config.get("schedule", "lr")
        if schedule == "lr" and plan["epochs"] > MAX_DRY_RUN_STEPS:
            raise KeywordError(
                "epochs",
                f"LATS sums the learning rates of all {plan['epochs']:,} epochs before training, more than the "
                f"{MAX_DRY_RUN_STEPS:,} it plans in seconds; plan fewer epochs",
            )
        if schedule == "closed_form" and plan["lr_scheduler"] != "cosine":
            raise KeywordError(
                "schedule",
                f"schedule closed_form is the authors' threshold for a cosine lr, not for the lr scheduler "
                f"{plan['lr_scheduler']}; use schedule lr (the threshold follows the actual lr)",
            )

    def __init__(
        self,
        *,
        final_threshold: float | None = None,
        lr_total: float | None = None,
        l1_coeff: float | None = None,
        schedule: Literal["lr", "closed_form"] = "lr",
        epoch_length: int | None = None,
        **base: Any,
    ) -> None:
        # grad, granularity, filter_scale, total_steps, start_step: ScheduledThresholdPruner's options
        super().__init__(final_threshold=final_threshold, **base)
        if self.nm is not None and l1_coeff is not None:
            raise KeywordError(
                "l1_coeff",
                f"l1_coeff does not apply to an N:M granularity (the schedule must end at each group's N:M "
                f"cut), got {l1_coeff}; drop l1_coeff",
            )
        final_threshold = self.final_threshold
        check_choice(LATSPruner, "schedule", schedule)
        if final_threshold is None and l1_coeff is None:
            raise KeywordError(
                "final_threshold",
                "lats needs final_threshold (D) or l1_coeff (lambda); pass e.g. final_threshold=0.1",
            )
        if final_threshold is not None and l1_coeff is not None:
            raise KeywordError(
                "final_threshold",
                "lats takes final_threshold (D) or l1_coeff (lambda, then D is an outcome), not both; drop one",
            )
        if lr_total is not None and not (math.isfinite(lr_total) and lr_total > 0):
            raise ValueError(
                f"lr_total must be a finite number > 0, got {lr_total}; pass the lr sum or leave it to bind()"
            )
        if epoch_length is not None:
            epoch_length = check_steps(epoch_length, "epoch_length", "lats")
            if epoch_length <= 0:
                raise ValueError(f"epoch_length must be > 0, got {epoch_length}; pass len(train_loader)")
        self.schedule = schedule
        self.epoch_length = epoch_length if schedule == "closed_form" else None  # the closed form's B only
        self.lr_total = None if lr_total is None else float(lr_total)
        self.l1_coeff = None if l1_coeff is None else check_finite_nonnegative(l1_coeff, "l1_coeff")
        self.lr_sum = 0.0
        self._window_epochs = 0
        if schedule == "closed_form":
            if final_threshold is None:
                raise KeywordError(
                    "schedule",
                    "lats schedule='closed_form' needs final_threshold (D); pass e.g. final_threshold=0.1",
                )
            window = self.total_steps - self.start_step
            if epoch_length is None or window % epoch_length:
                raise KeywordError(
                    "schedule",
                    "lats schedule='closed_form' needs epoch_length (optimizer steps per epoch) and a pruning "
                    f"window (total_steps - start_step = {window}) of whole epochs; got epoch_length={epoch_length}",
                )
            self._window_epochs = window // epoch_length

    def bind(
        self,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any = None,
        steps_per_epoch: int | None = None,
    ) -> LATSPruner:
        """Attach the optimizer; computes ``lr_total`` by a dry run when it is needed and unknown.

        Args:
            optimizer: the optimizer.
            lr_scheduler: its scheduler (None: constant lr).
            steps_per_epoch: the scheduler steps once every ``steps_per_epoch`` optimizer steps (None:
                every step); used for the dry run.

        Returns:
            ``self``.

        Raises:
            ValueError: the learning rates of the window sum to 0.
        """
        super().bind(optimizer, lr_scheduler, steps_per_epoch)
        if self.schedule == "lr" and self.l1_coeff is None and self.lr_total is None:
            self.lr_total = compute_lr_total(
                optimizer, lr_scheduler, self.total_steps, self.steps_per_epoch, self.start_step
            )
            if not (self.lr_total > 0 and math.isfinite(self.final_threshold / self.lr_total)):
                raise ValueError(
                    f"the learning rates of the pruning window sum to {self.lr_total:g}, too little for LATS "
                    f"to reach D = {self.final_threshold:g} (lambda = D / sum overflows); raise the lr"
                )
        return self

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
            value = lats_low_freq(n, self.epoch_length, self._window_epochs)
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
        if self.step_count == self.total_steps and self.l1_coeff is None:
            self._check_lr_plan()

    def _check_lr_plan(self) -> None:
        """Warn when the summed learning rates missed the planned ``lr_total`` by more than 1e-6 relative."""
        if abs(self.lr_sum - self.lr_total) <= 1e-6 * self.lr_total:
            return
        if self.steps_per_epoch is not None:
            cause = (
                f"bind() was told the lr scheduler steps once every steps_per_epoch={self.steps_per_epoch} "
                "optimizer steps; if it steps every iteration, bind with steps_per_epoch=None"
            )
        else:
            cause = (
                "bind() was told the lr scheduler steps after every optimizer step (steps_per_epoch=None); "
                "if it steps once per epoch, bind with steps_per_epoch=<optimizer steps per epoch>"
            )
        warnings.warn(
            f"lats: the learning rates summed over the pruning window ({self.lr_sum:.6g}) differ from the "
            f"planned lr_total ({self.lr_total:.6g}), so the final threshold is {self._threshold:.6g} instead "
            f"of final_threshold={self.final_threshold:g}. Likely cause: {cause} (or the learning rate was "
            "changed outside the scheduler).",
            UserWarning,
            stacklevel=3,
        )

    def _extra_state(self) -> dict[str, Any]:
        return {"threshold": self._threshold, "lr_sum": self.lr_sum, "lr_total": self.lr_total}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        lr_sum, lr_total = float(state["lr_sum"]), state["lr_total"]
        self._set_threshold(float(state["threshold"]))
        self.lr_sum, self.lr_total = lr_sum, lr_total


@register_method("slats")
class SLATSPruner(ScheduledThresholdPruner):
    """S-LATS: :math:`d(n) = D\\,f_S(x)`, :math:`f_S(x) = x + \\sin(\\pi x)/\\pi`, :math:`x = (n - n_0)/N`.

    Args:
        final_threshold: :math:`D` (required).
        grad: backward variant (default ``"ste"``).
        granularity: ``"weight"`` or ``"filter"`` (whole output channels; see
            :class:`ScheduledThresholdPruner`).
        filter_scale: ``"size"`` or ``"layer"`` (filter granularity only).
        total_steps: optimizer steps of the whole run (required).
        start_step: first step of the pruning window.
    """

    def fraction(self, x: float) -> float:
        return slats_fraction(x)


@register_method("pgh")
class PGHPruner(ScheduledThresholdPruner):
    """PGH / continuation: :math:`d(n) = D\\,g(x;\\beta)` (see :func:`~snnprune.methods.schedules.pgh_fraction`).

    The implied L1 coefficient decays as :math:`\\lambda_0\\beta^x`; :math:`\\beta < 1` prunes early,
    :math:`\\beta = 1` is S-LATS.

    Args:
        final_threshold: :math:`D` (required).
        beta: decay :math:`\\beta > 0` (required; the authors' default 0 is undefined).
        grad: backward variant (default ``"ste"``).
        granularity: ``"weight"`` or ``"filter"`` (whole output channels; see
            :class:`ScheduledThresholdPruner`).
        filter_scale: ``"size"`` or ``"layer"`` (filter granularity only).
        total_steps: optimizer steps of the whole run (required).
        start_step: first step of the pruning window.

    Raises:
        ValueError: ``beta`` missing or not > 0.
    """

    name_keywords: ClassVar[dict[str, str]] = {"final_threshold": "D", "beta": "b"}

    def __init__(
        self,
        *,
        final_threshold: float | None = None,
        beta: float | None = None,
        **base: Any,
    ) -> None:
        # grad, granularity, filter_scale, total_steps, start_step: ScheduledThresholdPruner's options
        super().__init__(final_threshold=final_threshold, **base)
        if beta is None:
            raise KeywordError("beta", "pgh needs beta > 0 (e.g. beta=0.1; beta=1 is S-LATS)")
        if not (math.isfinite(beta) and beta > 0):
            raise KeywordError(
                "beta", f"beta must be a finite number > 0, got {float(beta)}; pass e.g. 0.1 (1 is S-LATS)"
            )
        self.beta = float(beta)

    def fraction(self, x: float) -> float:
        return pgh_fraction(x, self.beta)


@register_method("stds")
class STDSPruner(ScheduledThresholdPruner):
    """STDS: :math:`d = D(1-\\cos\\pi x)/2` (``shape="sine"``, default) or :math:`d = Dx` (``"linear"``).

    The authors schedule over the whole run (``start_step=0``).

    Args:
        final_threshold: :math:`D` (required).
        shape: ``"sine"`` or ``"linear"``.
        grad: backward variant (default ``"ste"``).
        granularity: ``"weight"`` or ``"filter"`` (whole output channels; see
            :class:`ScheduledThresholdPruner`).
        filter_scale: ``"size"`` or ``"layer"`` (filter granularity only).
        total_steps: optimizer steps of the whole run (required).
        start_step: first step of the pruning window.

    Raises:
        ValueError: unknown ``shape``.
    """

    option_names: ClassVar[dict[str, str]] = {"shape": "stds_shape"}

    def __init__(
        self,
        *,
        final_threshold: float | None = None,
        shape: Literal["sine", "linear"] = "sine",
        **base: Any,
    ) -> None:
        # grad, granularity, filter_scale, total_steps, start_step: ScheduledThresholdPruner's options
        super().__init__(final_threshold=final_threshold, **base)
        self.shape = check_choice(STDSPruner, "shape", shape)

    def fraction(self, x: float) -> float:
        return stds_sine_fraction(x) if self.shape == "sine" else stds_linear_fraction(x)
