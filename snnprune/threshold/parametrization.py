"""Parametrizations that turn a layer's raw weight :math:`\\theta` into its sparse effective weight.

All are registered with :mod:`torch.nn.utils.parametrize` on ``weight``: the optimizer trains
``<layer>.parametrizations.weight.original`` (:math:`\\theta`), ``<layer>.weight`` is the effective
weight, and thresholds/masks live in the parametrization module, hence in ``state_dict``. A
load-state-dict pre-hook lets a dense checkpoint (key ``<layer>.weight``) load into a parametrized model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from snnprune.output_masks import fix_output_masks
from snnprune.threshold.functional import check_grad, soft_threshold

__all__ = [
    "LTP_GRADIENTS",
    "PRUNABLE_TYPES",
    "LearnedThresholdMask",
    "MagnitudeMask",
    "SoftThreshold",
    "finalize",
    "is_prunable",
    "register_parametrization",
    "register_removal_hook",
    "register_soft_threshold",
    "remove_soft_threshold",
    "sparsity",
]

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: backward variants of :class:`LearnedThresholdMask`: the LTP paper's eq. 14, or exact autograd
LTP_GRADIENTS: tuple[str, ...] = ("paper", "full")
_HOOKS_ATTR = "_snnprune_compat_hooks"
_REMOVAL_ATTR = "_snnprune_removal_hooks"
_ORDER_ATTR = "_snnprune_parameter_order"  # the layer's parameter names before the first registration


def is_prunable(module: nn.Module) -> bool:
    """True for ``nn.Conv1d/2d/3d`` and ``nn.Linear`` (and subclasses, e.g. SpikingJelly's layers).

    Uses :func:`torch.nn.utils.parametrize.type_before_parametrizations`, so a parametrized layer is
    still recognized.
    """
    return issubclass(parametrize.type_before_parametrizations(module), PRUNABLE_TYPES)


class SoftThreshold(nn.Module):
    """Soft-threshold parametrization :math:`w = S_d(\\theta)` (optionally ST-3-rescaled).

    .. math::
        w = c \\odot \\operatorname{sign}(\\theta)\\max(|\\theta| - d, 0)

    with :math:`c = 1` unless ``rescale`` (ST-3: :math:`c_o = 1.01/(r_o + 0.01)` per output channel).

    Args:
        threshold: initial :math:`d \\ge 0` (float or broadcastable tensor), or the logit :math:`s` when
            ``logit=True`` (any real value; :math:`d = \\sigma(s)`, STR).
        grad: ``"exact"``, ``"ste"`` or ``"dense"`` (see :func:`snnprune.soft_threshold`).
        learnable: hold the threshold (or logit) as an ``nn.Parameter`` instead of a buffer.
        logit: the stored value is :math:`s` and :math:`d = \\operatorname{sigmoid}(s)` (STR).
        rescale: apply the ST-3 per-output-channel rescale.

    Raises:
        ValueError: negative threshold (when ``logit=False``) or unknown ``grad``.
    """

    def __init__(
        self,
        threshold: float | Tensor = 0.0,
        grad: str = "ste",
        learnable: bool = False,
        logit: bool = False,
        rescale: bool = False,
    ) -> None:
        super().__init__()
        check_grad(grad)
        value = torch.as_tensor(threshold, dtype=torch.get_default_dtype()).detach().clone()
        if not logit and bool(torch.isnan(value).any() or (value < 0).any()):
            raise ValueError(f"threshold must be >= 0, got {threshold}; pass a non-negative threshold")
        self.grad = grad
        self.learnable = learnable
        self.logit = logit
        self.rescale = rescale
        attr = "threshold_logit" if logit else "threshold"
        if learnable:
            self.register_parameter(attr, nn.Parameter(value))
        else:
            self.register_buffer(attr, value)
        # (buffer version, value as a Python float): lets forward pass the threshold as a scalar to one
        # fused kernel without a host sync; any other write to the buffer bumps its version and forward
        # falls back to the tensor (always correct).
        self._scalar: tuple[int, float] | None = None

    @torch.no_grad()
    def set_threshold(self, value: float) -> None:
        """Fill the (buffer) threshold with :math:`d \\ge 0`, what the scheduled pruners call every step.

        A one-element buffer is also remembered as a Python float, so :meth:`forward` passes it to a single
        fused kernel without a host sync (a per-channel buffer is filled and used as a tensor).

        Raises:
            ValueError: a learnable or logit threshold (the optimizer owns it).
        """
        if self.learnable or self.logit:
            raise ValueError(
                "set_threshold() sets a buffer threshold; a learnable one is trained by the optimizer"
            )
        self.threshold.fill_(value)
        if self.threshold.numel() == 1:
            # the float rounded to the buffer's dtype on the host (no device tensor, no sync)
            self._scalar = (
                self.threshold._version,
                float(torch.tensor(value, dtype=self.threshold.dtype, device="cpu")),
            )

    def _threshold_arg(self) -> Tensor | float:
        """The scalar as a Python float while the buffer still holds what :meth:`set_threshold` wrote.

        Under ``torch.compile`` always the tensor: a Python float would be baked into the graph and guarded
        on, so every threshold update would recompile (seen on an H200: LATS hit dynamo's recompile limit).
        """
        if torch.compiler.is_compiling():
            return self.effective_threshold()
        scalar = self._scalar
        if scalar is not None and not self.learnable and scalar[0] == self.threshold._version:
            return scalar[1]
        return self.effective_threshold()

    def effective_threshold(self) -> Tensor:
        """The threshold :math:`d` actually applied (``sigmoid(s)`` for the logit form)."""
        if self.logit:
            return torch.sigmoid(self.threshold_logit)
        return self.threshold

    def forward(self, theta: Tensor) -> Tensor:
        """Return the effective weight for raw weight ``theta``."""
        return soft_threshold(theta, self._threshold_arg(), self.grad, rescale=self.rescale)

    def extra_repr(self) -> str:
        stored = self.threshold_logit if self.logit else self.threshold
        value = f"{stored.item():.6g}" if stored.numel() == 1 else f"shape={tuple(stored.shape)}"
        name = "threshold_logit" if self.logit else "threshold"
        return f"{name}={value}, grad={self.grad!r}, learnable={self.learnable}, rescale={self.rescale}"


class _LTPSoftMask(torch.autograd.Function):
    """:math:`w = \\theta m` and :math:`L_0 = \\sum_k m_k`, :math:`m = \\sigma((\\theta^2 - \\tau)/T)`, in one node.

    Backward of :math:`w`: LTP's eq. 14, :math:`\\partial w/\\partial\\theta = m` (the paper drops
    :math:`(2\\theta^2/T)m(1-m)`) and :math:`\\partial w/\\partial\\tau = -(\\theta/T)m(1-m)` exactly. Backward
    of the soft-L0 output (when the loss uses it): exact, :math:`\\partial L_0/\\partial\\theta =
    (2\\theta/T)m(1-m)` and :math:`\\partial L_0/\\partial\\tau = -(1/T)\\sum m(1-m)`. One node for both
    lets the backward form :math:`m(1-m)` once and write :math:`\\partial L/\\partial\\theta` in two passes
    (autograd would otherwise add two full-size gradients). ``T`` is a detached tensor.
    """

    @staticmethod
    def forward(ctx, theta: Tensor, tau: Tensor, temperature: Tensor) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)  # an unused L0 output gives None, not a zero to multiply
        with torch.no_grad():
            m = torch.mul(theta, theta).sub_(tau).div_(temperature).sigmoid_()
            out = theta * m
            l0 = m.sum()
        ctx.save_for_backward(theta, m, temperature)
        return out, l0

    @staticmethod
    def backward(
        ctx, grad: Tensor | None, grad_l0: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, None]:
        theta, m, temperature = ctx.saved_tensors
        need_theta, need_tau = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        slope = torch.addcmul(m, m, m, value=-1) if (need_tau or grad_l0 is not None) else None  # m(1-m)
        grad_theta = grad_tau = None
        if need_theta:
            grad_theta = grad * m if grad is not None else torch.zeros_like(theta)
            if grad_l0 is not None:
                factor = 2 * grad_l0 / temperature
                if theta.device.type == "cpu":  # a Python number: one fused pass (free to read there)
                    grad_theta.addcmul_(slope, theta, value=float(factor.detach()))
                else:
                    grad_theta.addcmul_(slope * factor, theta)
        if need_tau:
            grad_tau = torch.zeros((), dtype=theta.dtype, device=theta.device)
            if grad is not None:
                grad_tau = grad_tau - torch.dot(torch.mul(grad, theta).reshape(-1), slope.reshape(-1))
            if grad_l0 is not None:
                grad_tau = grad_tau - grad_l0 * slope.sum()
            grad_tau = (grad_tau / temperature).reshape(()).to(theta.dtype)
        return grad_theta, grad_tau, None


class LearnedThresholdMask(nn.Module):
    """LTP soft/hard mask on the squared weight with a learned per-layer threshold :math:`\\tau`.

    .. math::
        w = \\theta\\,\\sigma\\!\\left(\\frac{\\theta^2 - \\tau}{T}\\right) \\ (\\text{train}),\\qquad
        w = \\theta\\,1[\\theta^2 > \\tau] \\ (\\text{eval}),\\qquad
        T = t_{\\mathrm{rel}}\\cdot\\operatorname{Var}(\\theta)

    The temperature is relative to the spread of the layer's current weights (recomputed each forward,
    detached), so one ``temperature`` fits every layer and survives weight-scale drift under BN.

    Args:
        tau: initial :math:`\\tau` (units of :math:`\\theta^2`; 0 = nothing pruned at eval).
        temperature: :math:`t_{\\mathrm{rel}} > 0`.
        gradient: ``"paper"``: :math:`\\partial w/\\partial\\theta = \\sigma(\\cdot)` (LTP eq. 14);
            ``"full"``: exact autograd, which adds :math:`(2\\theta^2/T)\\sigma(1-\\sigma)`.

    Raises:
        ValueError: ``temperature <= 0`` or unknown ``gradient``.
    """

    def __init__(self, tau: float = 0.0, temperature: float = 1e-2, gradient: str = "paper") -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if gradient not in LTP_GRADIENTS:
            raise ValueError(f"gradient must be one of {LTP_GRADIENTS}, got {gradient!r}")
        self.temperature = float(temperature)
        self.gradient = gradient
        self.tau = nn.Parameter(torch.tensor(float(tau)))
        # (theta, its version, soft-L0 output) of the last training forward: the L0 term reuses it
        self._last: tuple[Tensor, int, Tensor] | None = None

    def _temperature(self, theta: Tensor) -> Tensor:
        return (self.temperature * theta.detach().var(unbiased=False)).clamp_min(1e-30)

    def soft_mask(self, theta: Tensor) -> Tensor:
        """:math:`\\sigma((\\theta^2-\\tau)/T)` (differentiable in :math:`\\theta` and :math:`\\tau`; the L0 term)."""
        return torch.sigmoid((theta.pow(2) - self.tau) / self._temperature(theta))

    def l0(self, theta: Tensor) -> Tensor:
        """The soft L0 term :math:`\\sum_k \\sigma((\\theta_k^2-\\tau)/T)` (differentiable in both).

        Returns the L0 output of the last training forward while ``theta`` has not changed since (the
        same mask, no second sigmoid pass, one backward node for both terms), otherwise computes it.
        """
        last = self._last
        if last is not None and last[0] is theta and last[1] == theta._version:
            return last[2]
        return self.soft_mask(theta).sum()

    def forward(self, theta: Tensor) -> Tensor:
        """Soft mask in training mode, hard mask in eval mode."""
        if not self.training:
            return theta * (theta.pow(2) > self.tau)
        if self.gradient == "full":
            self._last = None
            return theta * self.soft_mask(theta)
        out, l0 = _LTPSoftMask.apply(theta, self.tau, self._temperature(theta))
        self._last = (theta, theta._version, l0)
        return out

    def __getstate__(self) -> dict[str, Any]:
        """The module's state without the cache of the last training forward: its L0 output is a graph
        node, which ``copy.deepcopy`` cannot copy (the next forward makes a new one)."""
        return {**super().__getstate__(), "_last": None}

    def extra_repr(self) -> str:
        return f"tau={self.tau.item():.6g}, temperature={self.temperature} (x Var(theta)), gradient={self.gradient!r}"


class MagnitudeMask(nn.Module):
    """Hard binary mask :math:`w = \\theta \\odot M` (GMP); ``mask`` is a bool buffer set by the pruner.

    Args:
        shape: shape of the weight.
    """

    def __init__(self, shape: torch.Size | tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(shape, dtype=torch.bool))

    def forward(self, theta: Tensor) -> Tensor:
        """Return ``theta * mask`` (pruned entries get zero gradient)."""
        return theta * self.mask

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mask.shape)}"


def _dense_checkpoint_compat_hook(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
    name: str = "weight",
) -> None:
    """Map a dense ``<prefix>weight`` to ``<prefix>parametrizations.weight.original``.

    The parametrization's own tensors (threshold, mask, ...) missing from the checkpoint keep their
    current values.
    """
    if not parametrize.is_parametrized(module, name):
        return
    dense_key = prefix + name
    base = f"{prefix}parametrizations.{name}."
    if dense_key not in state_dict or base + "original" in state_dict:
        return
    state_dict[base + "original"] = state_dict.pop(dense_key)
    for i, p in enumerate(module.parametrizations[name]):
        for key, value in p.state_dict().items():
            state_dict.setdefault(f"{base}{i}.{key}", value.detach().clone())


def register_parametrization(module: nn.Module, name: str, parametrization: nn.Module) -> nn.Module:
    """Register ``parametrization`` on ``module.<name>`` plus the dense-checkpoint compat hook.

    The parametrization's buffers and parameters (threshold, mask, learned threshold) are moved to the
    tensor's device first, so a model already on a GPU can be pruned (``model.cuda()`` then ``sparsify``).

    Args:
        module: layer holding the tensor.
        name: tensor name (``"weight"``).
        parametrization: module mapping :math:`\\theta` to the effective tensor.

    Returns:
        ``module``.

    Raises:
        ValueError: ``module`` has no tensor ``name``, or it is already parametrized.
    """
    if not isinstance(getattr(module, name, None), Tensor):
        raise ValueError(f"{type(module).__name__} has no tensor {name!r} to prune; pass an existing name")
    if parametrize.is_parametrized(module, name):
        raise ValueError(
            f"{parametrize.type_before_parametrizations(module).__name__}.{name} is already parametrized; "
            "call snnprune.finalize(model) or remove_soft_threshold(module) first"
        )
    parametrization.to(getattr(module, name).device)
    module.__dict__.setdefault(_ORDER_ATTR, [n for n, _ in module.named_parameters(recurse=False)])
    parametrize.register_parametrization(module, name, parametrization)
    hooks = module.__dict__.setdefault(_HOOKS_ATTR, {})
    if name not in hooks:
        hook = functools.partial(_dense_checkpoint_compat_hook, name=name)
        hooks[name] = module._register_load_state_dict_pre_hook(hook, with_module=True)
    return module


def register_soft_threshold(
    module: nn.Module,
    name: str = "weight",
    threshold: float | Tensor = 0.0,
    grad: str = "ste",
    learnable: bool = False,
    logit: bool = False,
    rescale: bool = False,
) -> nn.Module:
    """Reparametrize ``module.<name>`` as :math:`S_d(\\theta)` with a :class:`SoftThreshold`.

    Args:
        module: e.g. ``nn.Conv2d``, ``nn.Linear``, ``spikingjelly.activation_based.layer.Conv2d``.
        name: tensor to reparametrize.
        threshold: initial threshold (or logit, see :class:`SoftThreshold`).
        grad: ``"exact"``, ``"ste"`` (default, LATS/STDS) or ``"dense"`` (ST-3).
        learnable: threshold as an ``nn.Parameter`` (STR).
        logit: store :math:`s` with :math:`d = \\sigma(s)`.
        rescale: ST-3 per-output-channel rescale.

    Returns:
        ``module`` (now ``module.<name>`` is the sparse effective weight).

    Example::

        >>> conv = register_soft_threshold(nn.Conv2d(3, 8, 3), threshold=0.05)
        >>> conv.parametrizations.weight[0].threshold.fill_(0.1)  # move the threshold in place
    """
    return register_parametrization(
        module, name, SoftThreshold(threshold, grad=grad, learnable=learnable, logit=logit, rescale=rescale)
    )


def register_removal_hook(module: nn.Module, hook: Callable[[bool], None], name: str = "weight") -> None:
    """Tie ``hook`` to the parametrization of ``module.<name>``: called when that parametrization is removed.

    For what a pruner attaches around a parametrized tensor outside the layer (the BN hooks of filter
    granularity): it is then removed by whatever removes the parametrization, :func:`finalize` (with
    ``leave_parametrized=True``: keep the effect) and a failing :meth:`snnprune.Pruner.prepare` (``False``:
    restore the model as it was). Each hook is called once, after the layer is plain again. The hook is
    kept in the layer's ``__dict__``, so ``copy.deepcopy`` of the model copies it with the model: make it a
    bound method of an object holding the modules it acts on (a closure would act on the original).

    Args:
        module: a layer whose ``<name>`` is parametrized.
        hook: called as ``hook(leave_parametrized)``.
        name: the parametrized tensor.

    Raises:
        ValueError: ``module.<name>`` is not parametrized.
    """
    if not parametrize.is_parametrized(module, name):
        raise ValueError(
            f"{type(module).__name__}.{name} is not parametrized; register the parametrization first"
        )
    module.__dict__.setdefault(_REMOVAL_ATTR, {}).setdefault(name, []).append(hook)


def _own_class(module: nn.Module) -> None:
    """Give ``module`` a private copy of its ``Parametrized*`` class before removing a parametrization.

    ``copy.deepcopy`` of a parametrized module shares the dynamically created class, and
    ``remove_parametrizations`` deletes the property from that class, which would break the other copy
    (e.g. finalizing a deep copy for export while training goes on with the original).
    """
    cls = type(module)
    body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, body)


def remove_soft_threshold(
    module: nn.Module, name: str = "weight", leave_parametrized: bool = True
) -> nn.Module:
    """Remove the parametrization of ``module.<name>``, the compat hook, and what is tied to it.

    What was tied to it with :func:`register_removal_hook` is removed last (its hooks are called with
    ``leave_parametrized``).

    Args:
        module: a parametrized layer.
        name: tensor name.
        leave_parametrized: keep the current effective (sparse) values (default) instead of :math:`\\theta`.

    Returns:
        ``module``, a plain layer again.

    Raises:
        ValueError: ``module.<name>`` is not parametrized.
    """
    if not parametrize.is_parametrized(module, name):
        raise ValueError(f"{type(module).__name__}.{name} is not parametrized; nothing to remove")
    for p in module.parametrizations[name]:
        p.eval()
    _own_class(module)
    parametrize.remove_parametrizations(module, name, leave_parametrized=leave_parametrized)
    if not parametrize.is_parametrized(module):  # the parameters in their order before the registration
        order = module.__dict__.pop(_ORDER_ATTR, [])
        params = module._parameters  # no public API reorders them; parametrize appended `name` at the end
        ranked = sorted(params, key=lambda k: order.index(k) if k in order else len(order))
        for key in ranked:
            params[key] = params.pop(key)
    hooks = module.__dict__.get(_HOOKS_ATTR, {})
    handle = hooks.pop(name, None)
    if handle is not None:
        handle.remove()
    if not hooks:
        module.__dict__.pop(_HOOKS_ATTR, None)
    removal = module.__dict__.get(_REMOVAL_ATTR, {})
    for hook in removal.pop(name, []):
        hook(leave_parametrized)
    if not removal:
        module.__dict__.pop(_REMOVAL_ATTR, None)
    return module


@torch.no_grad()
def sparsity(model: nn.Module) -> dict[str, Any]:
    """Fraction of exact zeros of the effective weights, in one pass with one host sync.

    The denominator is every Conv1d/2d/3d and Linear weight of ``model`` (:func:`is_prunable`), pruned or
    kept dense (``exclude=``), parametrized or finalized: the same layers before and after
    :func:`finalize` and in a plain model loaded from the finalized ``state_dict``, so the number does not
    depend on the model's state (it is :func:`snnprune.analyze`'s ``sparsity``, the zeros among all
    synaptic weights).

    Args:
        model: the (possibly parametrized, possibly DDP-wrapped) model.

    Returns:
        ``{"overall": zeros / weights, "layers": {qualified_name: fraction}}`` (``overall`` 0.0 and
        empty ``layers`` when the model has no prunable layer).
    """
    layers = [(n, m) for n, m in model.named_modules() if is_prunable(m)]
    if not layers:
        return {"overall": 0.0, "layers": {}}
    weights = [m.weight for _, m in layers]
    device = weights[0].device
    zeros = torch.stack([(w == 0).sum().to(device) for w in weights]).tolist()
    numels = [w.numel() for w in weights]
    return {
        "overall": sum(zeros) / max(sum(numels), 1),
        "layers": {name: z / n for (name, _), z, n in zip(layers, zeros, numels, strict=True)},
    }


def finalize(model: nn.Module) -> nn.Module:
    """Remove every parametrization, leaving plain layers whose weights are exactly sparse.

    Learned masks (LTP) are evaluated in their hard (eval) form. :func:`sparsity` is unchanged, the
    model still runs, and its ``state_dict`` has plain ``<layer>.weight`` keys. A neuron's output mask
    (:mod:`snnprune.output_masks`) becomes a fixed 0/1 mask of its hard form (``<neuron>.output_mask.keep_mask``).

    Args:
        model: a model prepared with :func:`snnprune.sparsify` / :func:`register_soft_threshold`.

    Returns:
        ``model`` (modified in place).
    """
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                remove_soft_threshold(module, name, leave_parametrized=True)
    fix_output_masks(model)
    return model
