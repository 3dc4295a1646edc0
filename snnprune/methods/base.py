"""Pruner base class, the open method registry, layer selection and :func:`sparsify`.

The design follows ``torch.ao.pruning``: a pruner is built in two steps, ``Pruner(**config)`` validates the
configuration (no model needed) and :meth:`Pruner.prepare` attaches one parametrization per selected layer
(all or nothing). The scheduler surface follows ``torch.optim.lr_scheduler``: :meth:`Pruner.step` once per
optimizer step, :meth:`Pruner.get_last_threshold`, :meth:`Pruner.state_dict` / :meth:`Pruner.load_state_dict`.
The registry is open like timm's ``register_model``: :func:`list_methods` and :func:`get_method` read it.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import math
import numbers
import typing
import warnings
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from snnprune.threshold.functional import check_grad
from snnprune.threshold.nm import parse_nm
from snnprune.threshold.parametrization import is_prunable, register_parametrization, remove_soft_threshold

__all__ = [
    "KeywordError",
    "MethodKeyword",
    "Pruner",
    "check_choice",
    "check_finite_nonnegative",
    "check_grad_keyword",
    "check_steps",
    "check_target_sparsity",
    "closest",
    "get_method",
    "list_methods",
    "method_keywords",
    "method_kwargs",
    "parse_granularity",
    "register_method",
    "select_layers",
    "sparsify",
    "unregister_method",
]

_REGISTRY: dict[str, type[Pruner]] = {}


class KeywordError(ValueError):
    """A method's refusal of the value of one constructor keyword, named by ``keyword`` (data, not text:
    the training scripts blame that keyword's flag). The message reads ``<keyword> <problem>; <fix>`` or
    names the keyword elsewhere."""

    def __init__(self, keyword: str, message: str) -> None:
        super().__init__(message)
        self.keyword = keyword


def list_methods() -> tuple[str, ...]:
    """The registered method names, in registration order.

    A new tuple on every call, so a method registered with :func:`register_method` is in the next one.
    """
    return tuple(_REGISTRY)


def get_method(name: str) -> type[Pruner]:
    """The :class:`Pruner` subclass registered under ``name``.

    Raises:
        ValueError: no method of that name (the message lists the registered ones).
    """
    if name not in _REGISTRY:
        near = closest(name, list_methods())
        fix = (
            f"did you mean {near!r}? (choose one of {list_methods()})"
            if near
            else f"choose one of {list_methods()}"
        )
        raise ValueError(f"unknown pruning method {name!r}; {fix}")
    return _REGISTRY[name]


def closest(name: object, names: Sequence[str]) -> str | None:
    """The entry of ``names`` nearest to ``name``, compared case-insensitively (``"LATS"`` and ``"lts"`` give
    ``"lats"``), or None when none is close: the "did you mean" of the refusals of a name."""
    folded = {str(n).lower(): n for n in names}
    near = difflib.get_close_matches(str(name).lower(), list(folded), n=1, cutoff=0.6)
    return folded[near[0]] if near else None


def register_method(name: str) -> Callable[[type[Pruner]], type[Pruner]]:
    """Class decorator registering a :class:`Pruner` subclass under ``name``.

    The name becomes usable everywhere a method name is: :func:`sparsify`, :func:`list_methods`, and the
    training scripts' ``--method`` option.

    Args:
        name: a new, non-empty method name without whitespace (e.g. ``"my_lats"``).

    Returns:
        The decorator; it sets ``cls.method = name`` and returns the class unchanged otherwise.

    Raises:
        ValueError: an empty name, a name with whitespace, or a name already registered by another class.
        TypeError: the decorated object is not a :class:`Pruner` subclass.

    Example::

        >>> @register_method("linear_d")
        ... class LinearThreshold(ScheduledThresholdPruner):
        ...     def fraction(self, x):
        ...         return x
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"method name must be a non-empty string without whitespace, got {name!r}")

    def decorator(cls: type[Pruner]) -> type[Pruner]:
        if not (isinstance(cls, type) and issubclass(cls, Pruner)):
            raise TypeError(f"register_method({name!r}) decorates Pruner subclasses, got {cls!r}")
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"method {name!r} is already registered by {old.__module__}.{old.__qualname__}; "
                "register the new class under another name"
            )
        cls.method = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def unregister_method(name: str) -> type[Pruner]:
    """Remove the method registered under ``name`` (the inverse of :func:`register_method`).

    Args:
        name: a registered method name.

    Returns:
        The class that was registered under ``name``.

    Raises:
        ValueError: no method of that name (the message lists the registered ones).
    """
    cls = get_method(name)
    del _REGISTRY[name]
    return cls


def check_steps(value: Any, what: str, method: str) -> int:
    """``value`` as an int: a step count a method takes (a float such as 2.5 is never truncated).

    Args:
        value: the step count to check.
        what: its name, for the message (e.g. ``"total_steps"``).
        method: the method's name, for the message.

    Returns:
        ``int(value)``.

    Raises:
        TypeError: ``value`` is not an integer (a bool, a float, a string...).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{method}: {what} must be an integer number of optimizer steps, got {value!r} "
            f"({type(value).__name__}); pass an int, e.g. epochs * len(train_loader)"
        )
    return int(value)


def _optimizer_hook(pruner: Pruner) -> Callable[..., None]:
    """An optimizer step post-hook that tells ``pruner`` an optimizer step happened.

    A closure over a weak reference (not a bound method): ``copy.deepcopy(optimizer)`` (as in
    :func:`snnprune.lr_total`) then copies neither the pruner nor the model it holds.
    """
    ref = weakref.ref(pruner)

    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        target = ref()
        if target is not None:
            target._optimizer_stepped()

    return hook


class Pruner:
    """Base pruner: validates a configuration, attaches parametrizations, and installs thresholds/masks.

    Built in two steps (as ``torch.ao.pruning.BaseSparsifier``): the constructor only validates and stores
    the configuration; :meth:`prepare` attaches the parametrizations to a model, all of them or none.
    :func:`sparsify` does both; :meth:`scale_steps` between the two counts a configuration given in epochs
    in optimizer steps. Usage (the order the training engine follows)::

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

    To write a method, subclass and register it (see :func:`register_method`): call
    ``super().__init__(**kwargs)`` first, store every keyword argument under its own name (that is what
    :meth:`state_dict` saves as the configuration), return each layer's parametrization from
    :meth:`make_parametrization` and install thresholds in :meth:`_update`.

    Args:
        total_steps: optimizer steps of the whole run (required by scheduled methods).
        start_step: first step of the pruning window (threshold 0 / nothing pruned before it).

    Raises:
        ValueError: missing ``total_steps`` (where required), or a step count out of range.
        TypeError: a non-integer step count.

    Attributes:
        method: the registered name. layers: qualified name -> module (after :meth:`prepare`).
        step_count: steps done.
    """

    method: ClassVar[str] = ""
    requires_total_steps: ClassVar[bool] = True
    #: keyword arguments that are state rather than configuration (not compared by load_state_dict)
    state_kwargs: ClassVar[frozenset[str]] = frozenset()

    def __new__(cls, *args: Any, **kwargs: Any) -> Pruner:
        pruner = super().__new__(cls)
        pruner._given = dict(kwargs)  # the configuration as given, which scale_steps rescales
        return pruner

    def __init__(self, *, total_steps: int | None = None, start_step: int = 0) -> None:
        name = self.method or type(self).__name__
        if total_steps is None:
            if self.requires_total_steps:
                raise ValueError(
                    f"method {name!r} needs total_steps (optimizer steps of the whole run, "
                    "e.g. epochs * len(train_loader))"
                )
        else:
            total_steps = check_steps(total_steps, "total_steps", name)
            if total_steps <= 0:
                raise ValueError(
                    f"total_steps must be > 0, got {total_steps}; pass the optimizer steps of the run"
                )
        start_step = check_steps(start_step, "start_step", name)
        if start_step < 0 or (total_steps is not None and start_step >= total_steps):
            raise KeywordError(
                "start_step",
                f"start_step must be in [0, total_steps={total_steps}), got {start_step}; start inside the run",
            )
        self.total_steps: int | None = total_steps
        self.start_step = start_step
        self.model: nn.Module | None = None  # set by prepare()
        self.step_count = 0
        self.layers: dict[str, nn.Module] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.lr_scheduler: Any = None
        self.steps_per_epoch: int | None = None
        self._attached: list[nn.Module] = []
        self._prepared = False
        self._verify_model = True
        self._hook_handle: Any = None
        self._opt_stepped = False
        self._sched_epoch: Any = None
        self._order_warned = False

    # ----------------------------------------------------------------- plan hooks
    # What a training engine asks a method before and while it trains; ``config`` is the keyword arguments
    # the method would be constructed with (None and unset keywords left out), not yet checked.

    #: keyword -> the name of its training option where the two differ (``{"schedule": "lats_schedule"}``
    #: makes the flag ``--lats-schedule``)
    option_names: ClassVar[dict[str, str]] = {}
    #: keywords counted in optimizer steps besides ``total_steps`` and ``start_step``, which the training
    #: options count in epochs (:meth:`scale_steps` converts them)
    epoch_keywords: ClassVar[frozenset[str]] = frozenset()

    #: keyword -> the letter its value follows in a run's default folder name (``{"final_threshold": "D"}``
    #: names a run ``..._D0.1``); see :meth:`run_name_part`
    name_keywords: ClassVar[dict[str, str]] = {}

    @classmethod
    def run_name_part(cls, config: Mapping[str, Any]) -> str:
        """What a run's default folder name shows of ``config``: ``_<letter><value>`` for each set keyword of
        :attr:`name_keywords`, then ``_filter`` (``_filter_rel`` with ``filter_scale="layer"``) or
        ``_<N>of<M>`` for those granularities."""
        part = "".join(
            f"_{c}{config[k]:g}" for k, c in cls.name_keywords.items() if config.get(k) is not None
        )
        granularity = config.get("granularity")
        if granularity == "filter":
            return part + "_filter" + ("_rel" if config.get("filter_scale") == "layer" else "")
        try:
            nm = parse_nm(granularity)
        except ValueError:
            nm = None
        return part + (f"_{nm[0]}of{nm[1]}" if nm else "")

    @classmethod
    def unset_defaults(cls, config: Mapping[str, Any], given: Collection[str]) -> set[str]:
        """Keywords of ``config`` whose value a caller's defaults supplied but that this configuration does
        without (``given``: the keywords the user set); the caller drops them before constructing. None
        by default."""
        return set()

    @classmethod
    def check_plan(cls, config: Mapping[str, Any], plan: Mapping[str, Any]) -> None:
        """Check ``config`` against the training ``plan`` before anything is built: the engine's plan options
        by name (``epochs``, ``lr_scheduler`` (``"cosine"``, ``"step"``, ``"constant"``), ``lr``, ...).
        Nothing by default.

        Raises:
            KeywordError: naming a keyword of ``config`` or a key of ``plan``.
        """

    @property
    def removes_channels(self) -> bool:
        """True when the method zeroes whole output channels (a training engine then re-estimates the
        BatchNorm statistics before each evaluation and exports the compacted model). False by default."""
        return False

    # ----------------------------------------------------------------- to override
    def make_parametrization(self, name: str, module: nn.Module) -> nn.Module | None:
        """The parametrization registered on ``module.weight`` (None: leave the layer as it is).

        Args:
            name: the layer's qualified name.
            module: the layer (Conv1d/2d/3d or Linear).

        Returns:
            An ``nn.Module`` mapping the raw weight :math:`\\theta` to the effective weight, or None.
        """
        return None

    def _on_prepare(self) -> None:
        """Called once the parametrizations are attached (``self.layers`` is set)."""

    def _update(self) -> None:
        """Install the threshold/mask for the next forward, after ``step_count`` was incremented."""

    def _model_state_mismatch(self) -> str | None:
        """Describe how the model's pruning buffers disagree with this pruner's state (None: they agree)."""
        return None

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def before_epoch(self) -> None:
        """Called by a training loop before each epoch's first step (nothing by default; a method with
        rounds starts one here)."""

    def schedule_epochs(self, epochs: int) -> int:
        """The epochs a training loop plans its lr schedule over (the run's ``epochs``; a method with
        rounds restarts the schedule every round and returns a round's length)."""
        return epochs

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # ----------------------------------------------------------------- construction
    def scale_steps(self, steps_per_epoch: int) -> Pruner:
        """Count the steps of a pruner configured in epochs (``total_steps`` the run's epochs, one step per
        epoch) in optimizer steps, once the epoch length is known: configure first, attach later.

        ``total_steps``, ``start_step`` and the method's :attr:`epoch_keywords` as given to the constructor
        are multiplied by ``steps_per_epoch`` and the constructor checks the configuration again; the other
        keywords stay as given. Call it before :meth:`prepare`.

        Args:
            steps_per_epoch: optimizer steps per epoch (e.g. ``len(train_loader)``).

        Returns:
            ``self``.

        Raises:
            RuntimeError: this pruner was already prepared.
            TypeError: a non-integer ``steps_per_epoch``.
            ValueError: ``steps_per_epoch <= 0``, or the constructor refuses the scaled configuration.

        Example::

            >>> pruner = snnprune.get_method("gmp")(target_sparsity=0.9, end_step=8, total_steps=10)  # epochs
            >>> pruner.scale_steps(len(train_loader)).prepare(model)  # end_step = 8 epochs of steps
        """
        if self._prepared:
            raise RuntimeError(f"{self.method}: scale_steps() comes before prepare(); create a new pruner")
        steps_per_epoch = check_steps(steps_per_epoch, "steps_per_epoch", self.method)
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}; pass len(train_loader)")
        scaled = {"total_steps", "start_step", *self.epoch_keywords}
        config = {
            k: v * steps_per_epoch if k in scaled and v is not None else v for k, v in self._given.items()
        }
        self.__init__(**config)  # type: ignore[misc]
        self._given = config
        return self

    def prepare(
        self, model: nn.Module, *, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
    ) -> Pruner:
        """Attach this method's parametrization to every selected layer of ``model``.

        All or nothing: if any layer cannot be parametrized, the ones attached so far are removed and
        the model is left exactly as it was.

        Args:
            model: the model (SNN or ANN), not yet wrapped in DDP.
            include: fnmatch globs on qualified module names to prune (default: every prunable layer).
            exclude: globs to keep dense.

        Returns:
            ``self``.

        Raises:
            TypeError: ``model`` is not an ``nn.Module``.
            RuntimeError: this pruner was already prepared.
            ValueError: bad patterns, no prunable layer, a layer already parametrized, a selected layer
                without values (a lazy module not yet run, a meta-device model), or two selected layers
                sharing one weight Parameter.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.method}: expected an nn.Module to prune, got {type(model).__name__}")
        if self._prepared:
            raise RuntimeError(
                f"{self.method}: this pruner is already prepared on a model; create a new one per model"
            )
        layers = select_layers(model, include, exclude)
        for name, module in layers.items():
            _check_materialized(name, module)
        self.model = model  # the root, for parametrizations that couple layers (filter granularity)
        attached: list[nn.Module] = []
        owners: dict[int, str] = {}  # id of each parametrized weight Parameter -> its layer
        try:
            for name, module in layers.items():
                weight = module.weight  # the Parameter itself until this layer is parametrized
                with torch.device(weight.device):  # its tensors where the weight is, whatever the default
                    parametrization = self.make_parametrization(name, module)
                if parametrization is not None:
                    if id(weight) in owners:
                        raise ValueError(
                            f"{self.method}: layers {owners[id(weight)]!r} and {name!r} share one weight "
                            "Parameter, which each layer's parametrization would prune on its own; give "
                            f"each layer its own weight ({name}.weight = "
                            f"nn.Parameter({owners[id(weight)]}.weight.detach().clone())) before sparsify"
                        )
                    register_parametrization(module, "weight", parametrization)
                    attached.append(module)
                    owners[id(weight)] = name
            self.layers = layers
            self._attached = attached
            self._on_prepare()
        except BaseException:
            for module in reversed(attached):
                remove_soft_threshold(module, "weight", leave_parametrized=False)
            self.layers, self._attached = {}, []
            raise
        self._prepared = True
        return self

    # ----------------------------------------------------------------- public API
    def bind(
        self,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any = None,
        steps_per_epoch: int | None = None,
    ) -> Pruner:
        """Attach the optimizer (and scheduler) created after :func:`sparsify`.

        Args:
            optimizer: the optimizer that trains the model.
            lr_scheduler: its lr scheduler (LATS sums its learning rates; every method checks that it
                steps after :meth:`step`).
            steps_per_epoch: how the scheduler is stepped: once every ``steps_per_epoch`` optimizer steps
                (per-epoch stepping), or None for every optimizer step.

        Returns:
            ``self``.

        Raises:
            TypeError: ``optimizer`` is not a ``torch.optim.Optimizer``, or a non-integer
                ``steps_per_epoch``.
            ValueError: ``steps_per_epoch <= 0``.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"{self.method}: bind() needs a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if steps_per_epoch is not None:
            steps_per_epoch = check_steps(steps_per_epoch, "steps_per_epoch", self.method)
            if steps_per_epoch <= 0:
                raise ValueError(
                    f"steps_per_epoch must be > 0 or None, got {steps_per_epoch}; pass len(train_loader) or None"
                )
        if self._hook_handle is not None:
            self._hook_handle.remove()
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.steps_per_epoch = steps_per_epoch
        self._hook_handle = optimizer.register_step_post_hook(_optimizer_hook(self))
        self._opt_stepped = False
        return self

    def _optimizer_stepped(self) -> None:
        self._opt_stepped = True
        self._sched_epoch = getattr(self.lr_scheduler, "last_epoch", None)

    def _check_order(self) -> None:
        """Warn once when the lr scheduler stepped between ``optimizer.step()`` and this ``step()``."""
        if not self._opt_stepped:
            return  # no optimizer step since the last step() (e.g. GradScaler skipped it)
        self._opt_stepped = False
        sched = self.lr_scheduler
        if self._order_warned or sched is None:
            return
        if getattr(sched, "last_epoch", None) != self._sched_epoch:
            self._order_warned = True
            warnings.warn(
                "Detected call of `lr_scheduler.step()` before `pruner.step()`. Call pruner.step() right "
                "after optimizer.step() and before the lr scheduler steps; otherwise the pruner reads the "
                "learning rate of the next step (LATS sums the wrong learning rates).",
                UserWarning,
                stacklevel=3,
            )

    def _check_usable(self) -> None:
        if not self._prepared:
            raise RuntimeError(f"{self.method}: call pruner.prepare(model) (or use snnprune.sparsify) first")
        for module in self._attached:
            if not parametrize.is_parametrized(module, "weight"):
                raise RuntimeError(
                    f"{self.method}: the model was finalized (its parametrizations were removed), so "
                    "step() has nothing left to prune; call snnprune.finalize(model) only after the last step"
                )

    def step(self) -> None:
        """Advance one optimizer step and install the next threshold (call after ``optimizer.step()``).

        Raises:
            RuntimeError: not prepared, called after :func:`snnprune.finalize`, called more than
                ``total_steps`` times, or the model holds a later pruning state than this pruner (loaded
                with ``model.load_state_dict`` without :meth:`load_state_dict`).
        """
        self._check_usable()
        if self.total_steps is not None and self.step_count >= self.total_steps:
            raise RuntimeError(
                f"{self.method}: step() called past total_steps={self.total_steps}; "
                "pass the real number of optimizer steps of the run as total_steps"
            )
        if self._verify_model:
            problem = self._model_state_mismatch()
            if problem is not None:
                raise RuntimeError(
                    f"{self.method}: the model's pruning state does not match this pruner ({problem}): the "
                    "model was loaded from a checkpoint without the pruner's state, and stepping would "
                    "restart the schedule. Restore it with pruner.load_state_dict(checkpoint['pruner']) "
                    "(the dict pruner.state_dict() returned when the checkpoint was saved)"
                )
            self._verify_model = False
        self._check_order()
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
        """The threshold in force: a float (one global threshold) or a dict layer -> float (per layer)."""
        return 0.0

    def get_last_threshold(self) -> dict[str, float]:
        """Layer -> threshold in force (as ``LRScheduler.get_last_lr()``); a global one repeated per layer."""
        value = self.threshold
        if isinstance(value, dict):
            return dict(value)
        return dict.fromkeys(self.layers, float(value))

    def threshold_snapshot(self) -> Tensor | None:
        """The thresholds in force as a tensor on the model's device, read without a host sync.

        For methods that keep their thresholds there (STR, LTP, ST-3); None where
        :meth:`get_last_threshold` is free (Python floats). :meth:`thresholds_from_snapshot` turns the
        snapshot's values into that dict later, so a training loop can log every step with one host sync
        per epoch (stack the snapshots, one ``tolist()``).

        Returns:
            A 1-D tensor, or None.
        """
        return None

    def thresholds_from_snapshot(self, values: list[float]) -> dict[str, float]:
        """:meth:`get_last_threshold` as it was when :meth:`threshold_snapshot` gave ``values``.

        Args:
            values: ``threshold_snapshot().tolist()``.

        Returns:
            Layer -> threshold.
        """
        return dict(zip(self.layers, values, strict=True))

    def regularization(self) -> Tensor:
        """Extra loss term (0 except for LTP's soft L0)."""
        first = next(iter(self.layers.values()))
        return torch.zeros((), device=next(first.parameters()).device)

    def config(self) -> dict[str, Any]:
        """The configuration: every constructor keyword argument (except :attr:`state_kwargs`) by name."""
        return {
            k: getattr(self, k)
            for k in sorted(_accepted_kwargs(type(self)) - self.state_kwargs)
            if hasattr(self, k)
        }

    def state_dict(self) -> dict[str, Any]:
        """Method, configuration and schedule state (plain Python values).

        Model tensors (thresholds, masks) are in the model's ``state_dict``; save both.
        """
        return {
            "method": self.method,
            "config": self.config(),
            "step_count": self.step_count,
            **self._extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` and re-install the thresholds/masks it implies.

        Args:
            state: a dict from :meth:`state_dict` of a pruner with the same method and configuration.

        Raises:
            TypeError: ``state`` is not a mapping.
            ValueError: missing keys, another method, or a configuration value that differs (both values
                are named).
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"pruner state must be the dict from Pruner.state_dict(), got {type(state).__name__}"
            )
        if "method" in state and state["method"] != self.method:
            raise ValueError(
                f"pruner state is for method {state['method']!r}, this pruner is {self.method!r}; "
                "sparsify with the same method before loading"
            )
        missing = [k for k in ("method", "config", "step_count") if k not in state]
        if missing:
            raise ValueError(
                f"pruner state is missing {missing}; pass the dict Pruner.state_dict() returned "
                "(e.g. checkpoint['pruner'])"
            )
        saved, mine = dict(state["config"]), self.config()
        for key in sorted(set(saved) | set(mine)):
            if key not in saved or key not in mine or saved[key] != mine[key]:
                a = saved.get(key, "<not set>")
                b = mine.get(key, "<not set>")
                raise ValueError(
                    f"pruner state was saved with {key}={a!r}, but this pruner has {key}={b!r}; "
                    "sparsify with the same settings as the run that saved it"
                )
        step_count = check_steps(state["step_count"], "step_count", self.method)
        if step_count < 0 or (self.total_steps is not None and step_count > self.total_steps):
            raise ValueError(
                f"pruner state has step_count={step_count} outside [0, total_steps={self.total_steps}]"
            )
        try:
            self._load_extra_state(dict(state))
        except KeyError as exc:
            raise ValueError(
                f"pruner state for {self.method!r} is missing key {exc}; pass the dict Pruner.state_dict() "
                "returned (e.g. checkpoint['pruner'])"
            ) from None
        self.step_count = step_count
        self._verify_model = True

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}(method={self.method!r}, layers={len(self.layers)}, step={self.step_count}, {options})"


def _check_materialized(name: str, module: nn.Module) -> None:
    """Raise unless ``module.weight`` holds values (not a lazy or meta-device parameter)."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise ValueError(
            f"layer {name!r} ({type(module).__name__}) has an uninitialized weight; run one forward pass "
            "(or give its input size) before sparsify"
        )
    if isinstance(weight, Tensor) and weight.is_meta:
        raise ValueError(
            f"layer {name!r} ({type(module).__name__}) has its weight on the meta device; materialize the model "
            "first (model.to_empty(device=...) and load its weights)"
        )


def _check_patterns(patterns: Iterable[str] | None, names: list[str], kind: str) -> list[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = list(patterns)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise KeywordError(
                kind, f"{kind} pattern {pattern!r} matches no prunable layer; prunable layers are: {names}"
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
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: no prunable layer, a pattern matching no prunable layer, or an empty selection.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module to prune, got {type(model).__name__}")
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
    optimizer: torch.optim.Optimizer | None = None,
    lr_scheduler: Any = None,
    steps_per_epoch: int | None = None,
    **method_kwargs: Any,
) -> Pruner:
    """Prepare ``model`` for pruning with ``method`` and return its :class:`Pruner`.

    Registers the method's parametrization on the ``weight`` of every selected Conv1d/2d/3d/Linear
    layer (BatchNorm and biases are never pruned); after this, ``layer.weight`` is the effective sparse
    weight and the optimizer must be built from ``model.parameters()`` (it trains
    ``parametrizations.weight.original`` and, for STR/LTP, the thresholds). The configuration is checked
    before anything is attached, and a failure leaves the model as it was.

    Args:
        model: the model (SNN or ANN), not yet wrapped in DDP.
        method: one of :func:`list_methods`.
        include: fnmatch globs on qualified module names to prune (default: every prunable layer).
        exclude: globs to keep dense.
        optimizer: if given, :meth:`Pruner.bind` is called with it (and ``lr_scheduler``,
            ``steps_per_epoch``).
        lr_scheduler: see :meth:`Pruner.bind`.
        steps_per_epoch: see :meth:`Pruner.bind`.
        **method_kwargs: the method's keyword arguments (see each pruner class); a keyword the method
            takes with the value None is ignored (treated as "not set"), one it does not take is an error
            whatever its value.

    Returns:
        The pruner.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or a keyword argument the method does not accept.
        ValueError: unknown method, bad option values, bad patterns, no prunable layer, a selected layer
            without values (lazy or meta-device), or two selected layers sharing one weight Parameter.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"sparsify() expects an nn.Module as model, got {type(model).__name__}")
    cls = get_method(method)
    accepted = _accepted_kwargs(cls)
    unknown = sorted(set(method_kwargs) - accepted)  # whatever the value, None included
    if unknown:
        raise TypeError(
            f"sparsify() got unexpected keyword argument(s) {', '.join(map(repr, unknown))} for method "
            f"{method!r}; accepted: {', '.join(sorted(accepted))}"
        )
    kwargs = {k: v for k, v in method_kwargs.items() if v is not None}
    pruner = cls(**kwargs).prepare(model, include=include, exclude=exclude)
    if optimizer is not None:
        pruner.bind(optimizer, lr_scheduler, steps_per_epoch)
    return pruner


def method_kwargs(method: str | type[Pruner]) -> frozenset[str]:
    """Keyword arguments a pruner's constructor accepts (what :func:`sparsify` takes for it).

    Read from the signatures: the class's ``__init__``, plus its parent's only while each ``__init__``
    forwards ``**kwargs`` (a subclass with an explicit signature closes the chain).

    Args:
        method: a registered method name, or a :class:`Pruner` subclass (registered or not).

    Raises:
        ValueError: unknown method name.
        TypeError: ``method`` is neither a string nor a :class:`Pruner` subclass.
    """
    if isinstance(method, str):
        return frozenset(_accepted_kwargs(get_method(method)))
    if isinstance(method, type) and issubclass(method, Pruner):
        return frozenset(_accepted_kwargs(method))
    raise TypeError(
        f"method must be a method name or a Pruner subclass, got {method!r}; pass e.g. 'lats' or LATSPruner"
    )


class MethodKeyword(NamedTuple):
    """One constructor keyword of a method: its ``type`` (``bool``, ``int``, ``float`` or ``str``: the
    annotation's, else the default's; ``str`` when neither says), ``default`` (None when it has none),
    ``help`` (its ``Args:`` docstring entry, "" when it has none) and ``choices`` (the values of a
    ``typing.Literal`` annotation, None without one)."""

    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None


def method_keywords(method: str | type[Pruner]) -> dict[str, MethodKeyword]:
    """The keywords :func:`method_kwargs` gives for ``method``, each with its type, default and docstring
    line (the subclass's own first); what the training scripts turn into flags.

    Raises:
        ValueError, TypeError: as :func:`method_kwargs`.
    """
    accepted = method_kwargs(method)
    cls = get_method(method) if isinstance(method, str) else method
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # the subclass's Args: entries last, so they win
        docs.update(_docstring_args(klass.__doc__ or ""))
    out: dict[str, MethodKeyword] = {}
    for init in (vars(k)["__init__"] for k in cls.__mro__ if "__init__" in vars(k)):
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # an annotation that does not evaluate here: the default's type
            hints = {}
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.name not in accepted or p.name in out:
                continue
            hint = hints.get(p.name)
            kinds = [
                t for t in (*typing.get_args(hint), hint, type(p.default)) if t in (bool, int, float, str)
            ]
            default = None if p.default is inspect.Parameter.empty else p.default
            literal = [h for h in (hint, *typing.get_args(hint)) if typing.get_origin(h) is typing.Literal]
            choices = typing.get_args(literal[0]) if literal else None
            kind = type(choices[0]) if choices else kinds[0] if kinds else str
            out[p.name] = MethodKeyword(kind, default, docs.get(p.name, ""), choices)
    return out


def check_choice(method: type[Pruner], keyword: str, value: Any) -> Any:
    """``value`` of ``keyword``, checked against the ``typing.Literal`` choices of ``method``'s signature
    (None passes where the default is None); the choices are written once, in the signature.

    Raises:
        KeywordError: ``value`` is not one of the choices.
    """
    k = method_keywords(method)[keyword]
    if k.choices is None or value in k.choices or (value is None and k.default is None):
        return value
    listed = ", ".join(map(repr, k.choices))
    raise KeywordError(keyword, f"{keyword} must be one of {listed}, got {value!r}; pass one of them")


def _docstring_args(doc: str) -> dict[str, str]:
    """The ``Args:`` entries of a Google-style docstring: name -> text (continuation lines joined)."""
    lines = inspect.cleandoc(doc).splitlines()
    found: dict[str, str] = {}
    name = None
    for line in lines[lines.index("Args:") + 1 :] if "Args:" in lines else []:
        if not line.startswith("    "):  # a blank line or the next section
            break
        key, sep, text = line.strip().partition(": ")
        if not line.startswith("     ") and sep and key.isidentifier():
            name, found[key] = key, text
        elif name is not None:
            found[name] += " " + line.strip()
    return found


def _accepted_kwargs(cls: type[Pruner]) -> set[str]:
    """Keyword names ``cls(...)`` accepts: its ``__init__``'s, plus its parent's only while each
    ``__init__`` forwards ``**kwargs`` (a subclass with an explicit signature closes the chain)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]  # after self
        names |= {
            p.name
            for p in params
            if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        }
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return names


def check_finite_nonnegative(value: Any, what: str) -> float:
    """``value`` as a float: a threshold or coefficient a method takes, finite and >= 0.

    Args:
        value: the number to check.
        what: its name, for the message (e.g. ``"final_threshold"``).

    Returns:
        ``float(value)``.

    Raises:
        TypeError: ``value`` is not a real number (a bool, a list, a string...).
        KeywordError: ``value`` is negative, NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{what} must be a number, got {value!r} ({type(value).__name__}); pass one float, e.g. {what}=0.05"
        )
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise KeywordError(
            what,
            f"{what} must be a finite number >= 0, got {value}; pass a non-negative finite value",
        )
    return value


def parse_granularity(granularity: Any, plain: Sequence[str]) -> tuple[int, int] | None:
    """``(N, M)`` of an ``"N:M"`` granularity (:func:`~snnprune.threshold.nm.parse_nm`), None for one of
    the ``plain`` names (``"weight"``, ``"filter"``).

    Raises:
        KeywordError: (keyword ``granularity``) neither one of ``plain`` nor ``N:M`` with 0 < N < M.
    """
    try:
        nm = None if granularity in plain else parse_nm(granularity)
    except ValueError as exc:
        raise KeywordError("granularity", str(exc)) from None
    if granularity not in plain and nm is None:
        raise KeywordError(
            "granularity",
            f"granularity must be {', '.join(plain)} or N:M such as 2:4, got {granularity!r}; pass one of them",
        )
    return nm


def check_target_sparsity(target_sparsity: float | None, method: str) -> float:
    """``target_sparsity`` (the fraction of zeros a method reaches) as a float in [0, 1).

    Raises:
        KeywordError: (keyword ``target_sparsity``) missing or outside [0, 1).
    """
    if target_sparsity is None:
        raise KeywordError(
            "target_sparsity", f"{method} needs target_sparsity (the fraction of zeros, in [0, 1))"
        )
    if not 0.0 <= target_sparsity < 1.0:
        raise KeywordError(
            "target_sparsity",
            f"target_sparsity must be in [0, 1), got {target_sparsity} (the fraction of zeros); pass e.g. 0.9",
        )
    return float(target_sparsity)


def check_grad_keyword(grad: str) -> str:
    """``grad``, a backward variant of :func:`snnprune.soft_threshold`
    (:func:`~snnprune.threshold.functional.check_grad`).

    Raises:
        KeywordError: (keyword ``grad``) not one of the variants.
    """
    try:
        check_grad(grad)
    except ValueError as exc:
        raise KeywordError("grad", str(exc)) from None
    return grad
