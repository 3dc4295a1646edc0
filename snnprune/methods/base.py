"""Pruner base class, method registry, layer selection and :func:`sparsify`."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from snnprune.threshold.parametrization import is_prunable

__all__ = ["METHODS", "Pruner", "method_kwargs", "register_method", "select_layers", "sparsify"]

METHODS: tuple[str, ...] = ("dense", "lats", "slats", "pgh", "stds", "str", "ltp", "st3", "st3sigma", "gmp")
_REGISTRY: dict[str, type[Pruner]] = {}


def register_method(name: str) -> Callable[[type[Pruner]], type[Pruner]]:
    """Class decorator registering a :class:`Pruner` subclass under ``name`` (one of :data:`METHODS`)."""

    def decorator(cls: type[Pruner]) -> type[Pruner]:
        if name not in METHODS:
            raise ValueError(f"method {name!r} is not in METHODS {METHODS}")
        cls.method = name
        _REGISTRY[name] = cls
        return cls

    return decorator


class Pruner:
    """Base pruner: owns the pruned layers and a step counter; subclasses set thresholds/masks.

    Usage (the order the training engine follows)::

        pruner = snnprune.sparsify(model, "slats", final_threshold=0.05, total_steps=epochs * len(loader))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
        pruner.bind(optimizer, scheduler, steps_per_epoch=len(loader))
        for x, y in loader:
            loss = criterion(model(x), y) + pruner.regularization()
            loss.backward(); optimizer.step(); optimizer.zero_grad()
            pruner.step()  # after optimizer.step(), before the lr scheduler steps

    The threshold for step ``k + 1`` is installed by the ``k``-th :meth:`step` (the first forward uses
    the initial threshold, 0 for scheduled methods); after the last step it is the final one.
    Steps skipped by ``GradScaler`` (inf/NaN gradients) still count: call :meth:`step` every iteration
    (as the LATS/STDS code does), so ``total_steps`` stays the number of iterations.

    Args:
        layers: qualified name -> prunable module (from :func:`select_layers`).
        total_steps: optimizer steps of the whole run (required by scheduled methods).
        start_step: first step of the pruning window (threshold 0 / nothing pruned before it).
        optimizer, lr_scheduler, steps_per_epoch: forwarded to :meth:`bind` when ``optimizer`` is given.

    Attributes:
        method: the method name. layers: qualified name -> module. step_count: steps done.
    """

    method: ClassVar[str] = ""
    requires_total_steps: ClassVar[bool] = True

    def __init__(
        self,
        layers: dict[str, nn.Module],
        *,
        total_steps: int | None = None,
        start_step: int = 0,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: object | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        if self.requires_total_steps and total_steps is None:
            raise ValueError(
                f"method {self.method!r} needs total_steps (optimizer steps of the whole run, "
                "e.g. epochs * len(train_loader))"
            )
        if total_steps is not None and total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        if start_step < 0 or (total_steps is not None and start_step >= total_steps):
            raise ValueError(f"start_step must be in [0, total_steps={total_steps}), got {start_step}")
        self.layers = dict(layers)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.start_step = int(start_step)
        self.step_count = 0
        self.steps_per_epoch = steps_per_epoch
        self.optimizer: torch.optim.Optimizer | None = None
        self.lr_scheduler: object | None = None
        self._attach()
        if optimizer is not None:
            self.bind(optimizer, lr_scheduler, steps_per_epoch)

    # ----------------------------------------------------------------- to override
    def _attach(self) -> None:
        """Register the parametrizations on ``self.layers``."""

    def _update(self) -> None:
        """Install the threshold/mask for the next forward, after ``step_count`` was incremented."""

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # ----------------------------------------------------------------- public API
    def bind(
        self,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: object | None = None,
        steps_per_epoch: int | None = None,
    ) -> Pruner:
        """Attach the optimizer (and scheduler) created after :func:`sparsify`.

        Args:
            optimizer: the optimizer that trains the model.
            lr_scheduler: its lr scheduler (used by LATS to compute ``lr_total``).
            steps_per_epoch: optimizer steps per scheduler step when the scheduler is stepped per epoch
                (None: per step).

        Returns:
            ``self``.
        """
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        if steps_per_epoch is not None:
            self.steps_per_epoch = int(steps_per_epoch)
        return self

    def step(self) -> None:
        """Advance one optimizer step and install the next threshold (call after ``optimizer.step()``).

        Raises:
            RuntimeError: called more than ``total_steps`` times.
        """
        if self.total_steps is not None and self.step_count >= self.total_steps:
            raise RuntimeError(
                f"{self.method}: step() called past total_steps={self.total_steps}; "
                "pass the real number of optimizer steps of the run as total_steps"
            )
        self.step_count += 1
        try:
            self._update()
        except Exception:
            self.step_count -= 1
            raise

    def progress(self, end_step: int | None = None) -> float:
        """Window progress :math:`x = (n - \\mathrm{start})/(\\mathrm{end} - \\mathrm{start})` clamped to [0, 1]."""
        end = self.total_steps if end_step is None else end_step
        if end is None:
            return 0.0
        return min(max((self.step_count - self.start_step) / (end - self.start_step), 0.0), 1.0)

    @property
    def threshold(self) -> float | dict[str, float]:
        """Current threshold: a float (global) or a dict name -> float (per-layer)."""
        return 0.0

    def regularization(self) -> Tensor:
        """Extra loss term (0 except for LTP's soft L0)."""
        first = next(iter(self.layers.values()))
        return torch.zeros((), device=next(first.parameters()).device)

    def state_dict(self) -> dict[str, Any]:
        """Schedule state (plain Python values); model tensors (thresholds, masks) are in the model's."""
        return {"method": self.method, "step_count": self.step_count, **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` and re-install the thresholds/masks it implies.

        Raises:
            ValueError: the state belongs to another method.
        """
        if state.get("method") != self.method:
            raise ValueError(
                f"pruner state is for method {state.get('method')!r}, this pruner is {self.method!r}; "
                "sparsify with the same method before loading"
            )
        self.step_count = int(state["step_count"])
        self._load_extra_state(state)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(method={self.method!r}, layers={len(self.layers)}, "
            f"step={self.step_count}/{self.total_steps})"
        )


def _check_patterns(patterns: Iterable[str] | None, names: list[str], kind: str) -> list[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = list(patterns)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ValueError(
                f"{kind} pattern {pattern!r} matches no prunable layer; prunable layers are: {names}"
            )
    return patterns


def select_layers(
    model: nn.Module, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
) -> dict[str, nn.Module]:
    """Prunable layers (Conv1d/2d/3d, Linear) by qualified name, filtered by fnmatch globs.

    Args:
        model: the model.
        include: keep only layers matching any of these globs (None: all).
        exclude: then drop layers matching any of these globs.

    Returns:
        Ordered dict name -> module.

    Raises:
        ValueError: no prunable layer, a pattern matching no prunable layer, or an empty selection.
    """
    prunable = {n: m for n, m in model.named_modules() if is_prunable(m)}
    if not prunable:
        raise ValueError(
            f"{type(model).__name__} has no prunable layer (nn.Conv1d/2d/3d or nn.Linear); "
            "snnprune prunes the weights of those layers only"
        )
    names = list(prunable)
    inc = _check_patterns(include, names, "include")
    exc = _check_patterns(exclude, names, "exclude")
    selected = {
        n: m
        for n, m in prunable.items()
        if (not inc or any(fnmatch.fnmatchcase(n, p) for p in inc))
        and not any(fnmatch.fnmatchcase(n, p) for p in exc)
    }
    if not selected:
        raise ValueError(f"include={inc} / exclude={exc} leave no layer to prune; loosen the patterns")
    return selected


def sparsify(
    model: nn.Module,
    method: str,
    *,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    **method_kwargs: Any,
) -> Pruner:
    """Prepare ``model`` for pruning with ``method`` and return its :class:`Pruner`.

    Registers the method's parametrization on the ``weight`` of every selected Conv1d/2d/3d/Linear
    layer (BatchNorm and biases are never pruned); after this, ``layer.weight`` is the effective sparse
    weight and the optimizer must be built from ``model.parameters()`` (it trains
    ``parametrizations.weight.original`` and, for STR/LTP, the thresholds).

    Args:
        model: the model (SNN or ANN), not yet wrapped in DDP.
        method: one of :data:`METHODS`.
        include: fnmatch globs on qualified module names to prune (default: every prunable layer).
        exclude: globs to keep dense.
        **method_kwargs: the method's keyword arguments (see each pruner class); keys whose value is
            None are ignored (treated as "not set").

    Returns:
        The pruner.

    Raises:
        ValueError: unknown method, unknown keyword for that method, bad patterns, no prunable layer.
    """
    if method not in _REGISTRY:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {METHODS}")
    cls = _REGISTRY[method]
    kwargs = {k: v for k, v in method_kwargs.items() if v is not None}
    accepted = _accepted_kwargs(cls)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"method {method!r} does not accept {unknown}; accepted keyword arguments: {sorted(accepted)}"
        )
    layers = select_layers(model, include, exclude)
    if "root" in accepted:  # filter granularity couples channels across the model
        kwargs["root"] = model
    return cls(layers, **kwargs)


def method_kwargs(method: str) -> frozenset[str]:
    """Keyword arguments :func:`sparsify` accepts for ``method`` (read from the pruner's signatures).

    Raises:
        ValueError: unknown method.
    """
    if method not in _REGISTRY:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    return frozenset(_accepted_kwargs(_REGISTRY[method]))


def _accepted_kwargs(cls: type[Pruner]) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            sig = inspect.signature(vars(klass)["__init__"])
            names |= {p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return names
