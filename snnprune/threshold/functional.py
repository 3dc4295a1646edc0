"""Soft-threshold operator :math:`S_d(\\theta)` and its three backward variants.

.. math::
    S_d(\\theta) = \\operatorname{sign}(\\theta)\\,\\max(|\\theta| - d, 0)

with :math:`\\operatorname{sign}(0) = 0` (PyTorch semantics). See ``snnprune/docs/methods.md`` section 2 for the
three gradient variants (exact autograd, straight-through ``stmod``, ST-3 dense straight-through).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["GRAD_MODES", "channel_rescale", "check_grad", "soft_threshold"]

GRAD_MODES: tuple[str, ...] = ("exact", "ste", "dense")


def _shrink(theta: Tensor, threshold: Tensor | float) -> Tensor:
    """:math:`S_d(\\theta)` in one fused pass, no autograd graph of its own.

    ``softshrink`` for a Python-float threshold (one kernel), :math:`\\theta - \\mathrm{clamp}(\\theta, -d, d)`
    for a tensor one (broadcasts, no host sync). Both are bit-identical to
    :math:`\\operatorname{sign}(\\theta)\\max(|\\theta| - d, 0)` (the surviving entries are
    :math:`\\theta \\mp d`, computed by the same single rounding).
    """
    if isinstance(threshold, Tensor):
        return theta - theta.clamp(-threshold, threshold)
    return torch.nn.functional.softshrink(theta, threshold)


class _ReLUStraightThrough(torch.autograd.Function):
    """``relu`` forward, identity backward (the ``ReLUmod`` of the LATS/STDS code)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


class _SoftThresholdSTE(torch.autograd.Function):
    """The LATS/STDS ``softThresholdmod``: forward :math:`S_d(\\theta)`, backward
    :math:`\\partial w/\\partial\\theta = \\operatorname{sign}(\\theta)^2` (the ReLU is straight-through; the
    only zero is at :math:`\\theta = 0` itself). One forward pass, one backward pass."""

    @staticmethod
    def forward(ctx, theta: Tensor, threshold: Tensor | float) -> Tensor:
        with torch.no_grad():
            out = _shrink(theta, threshold)
        ctx.save_for_backward(theta)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (theta,) = ctx.saved_tensors
        # On the CPU one read of theta (no host-sync cost there) shows whether any entry is exactly 0; a
        # trained theta almost never has one, and then sign(theta)^2 = 1 everywhere: grad passes as it is,
        # without the mask and the copy (a third of a reparametrized step's extra memory traffic).
        if theta.device.type == "cpu" and int(torch.count_nonzero(theta)) == theta.numel():
            return grad, None
        return grad.masked_fill(theta == 0, 0), None


class _SoftThresholdLearned(torch.autograd.Function):
    """Exact gradient with a trained tensor threshold (STR): one forward pass, no autograd graph of clamp.

    With :math:`w = S_d(\\theta)`: :math:`\\partial w/\\partial\\theta = 1[w \\ne 0]` (equal to
    :math:`1[|\\theta| > d]`: a survivor :math:`\\theta \\mp d` is never exactly 0) and
    :math:`\\partial w/\\partial d = -\\operatorname{sign}(w)`, summed to the threshold's shape.

    A one-element threshold on the CPU is read as a Python float (free there), so the forward is one fused
    ``softshrink``; the backward forms :math:`\\operatorname{sign}(w)` once and reads it for both
    gradients (a dot product for a one-element threshold).
    """

    @staticmethod
    def forward(ctx, theta: Tensor, threshold: Tensor) -> Tensor:
        with torch.no_grad():
            scalar = theta.device.type == "cpu" and threshold.numel() == 1
            out = _shrink(theta, float(threshold.detach()) if scalar else threshold)
        ctx.save_for_backward(out)
        ctx.threshold_shape = threshold.shape
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        (out,) = ctx.saved_tensors
        sign = out.sign()
        grad_theta = torch.where(sign != 0, grad, 0.0) if ctx.needs_input_grad[0] else None
        grad_threshold = None
        if ctx.needs_input_grad[1]:
            if ctx.threshold_shape.numel() == 1:
                dot = torch.dot(grad.reshape(-1), sign.reshape(-1))
                grad_threshold = dot.neg().reshape(ctx.threshold_shape)
            else:
                grad_threshold = (grad * sign).neg_().sum_to_size(ctx.threshold_shape)
        return grad_theta, grad_threshold


def channel_rescale(theta: Tensor, shrunk: Tensor, threshold: Tensor | float) -> Tensor:
    """ST-3 per-output-channel rescale :math:`c_o = 1.01/(r_o + 0.01)` (no grad), shaped to broadcast.

    :math:`r_o = (\\operatorname{mean}(|\\theta|\\,M) + 10^{-6}) / (\\operatorname{mean}(|\\theta|) + 10^{-6})`
    over all dims but the first, with :math:`M = 1[|\\theta| > t]`. Read from ``shrunk`` =
    :math:`S_t(\\theta)` (row sums of flat copies, the fast CPU reductions): a kept weight has
    :math:`|\\theta| = |S_t(\\theta)| + t`, so :math:`\\sum|\\theta|M = \\lVert S_t(\\theta)\\rVert_1 +
    t\\,\\#\\{S_t(\\theta) \\ne 0\\}` (equal up to rounding).
    """
    with torch.no_grad():
        c, n = theta.shape[0], theta[0].numel()
        kept_abs = shrunk.abs().reshape(c, n)  # flat rows: row sums are several times faster than dims
        count = kept_abs.sign().sum(1)  # exact in float: a row has far fewer than 2^24 weights
        kept = (kept_abs.sum(1) + count * threshold) / n
        total = theta.abs().reshape(c, n).sum(1) / n
        ratio = (kept + 1e-6) / (total + 1e-6)
        return (1.01 / (ratio + 0.01)).reshape((-1,) + (1,) * (theta.dim() - 1))


class _DenseStraightThrough(torch.autograd.Function):
    """ST-3 form: ``w = c * S_d(theta)`` forward (``c`` = :func:`channel_rescale` or 1), ``dL/dtheta =
    dL/dw`` for every entry."""

    @staticmethod
    def forward(ctx, theta: Tensor, threshold: Tensor | float, rescale: bool) -> Tensor:
        with torch.no_grad():
            out = _shrink(theta, threshold)
            if rescale:
                out.mul_(channel_rescale(theta, out, threshold))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad, None, None


def check_grad(grad: str) -> None:
    """Check that ``grad`` names a backward variant of :func:`soft_threshold` (one of :data:`GRAD_MODES`).

    Args:
        grad: the name to check.

    Raises:
        ValueError: ``grad`` is not in :data:`GRAD_MODES` (the message lists them).
    """
    if grad not in GRAD_MODES:
        raise ValueError(f"unknown grad mode {grad!r}; use one of {GRAD_MODES}")


def soft_threshold(
    theta: Tensor, threshold: Tensor | float, grad: str = "exact", *, rescale: bool = False
) -> Tensor:
    """Soft-threshold ``theta``: :math:`S_d(\\theta) = \\operatorname{sign}(\\theta)\\max(|\\theta|-d, 0)`.

    Entries with :math:`|\\theta| \\le d` become exactly zero; survivors shrink toward 0 by ``d``.

    Args:
        theta: raw weight tensor :math:`\\theta`.
        threshold: :math:`d \\ge 0`; a Python float, a 0-d tensor, or a tensor that broadcasts against
            ``theta`` (e.g. ``[C_out, 1, 1, 1]`` for one threshold per output channel). Tensor thresholds
            are not checked for sign here (that would cost a host sync); the registration functions check.
        grad: backward variant.

            * ``"exact"``: plain autograd, :math:`\\partial w/\\partial\\theta = 1[|\\theta| > d]`
              (STR); the threshold receives :math:`-\\operatorname{sign}(\\theta)1[|\\theta|>d]`.
            * ``"ste"``: the ReLU is straight-through, so
              :math:`\\partial w/\\partial\\theta = \\operatorname{sign}(\\theta)^2` (1 everywhere except
              exactly at :math:`\\theta = 0`): pruned weights keep receiving :math:`\\partial L/\\partial w`
              and can regrow (LATS/STDS ``stmod``).
            * ``"dense"``: ST-3 dense straight-through, :math:`w` is computed without grad and
              :math:`\\partial L/\\partial\\theta = \\partial L/\\partial w` for every entry (zeros included);
              the threshold gets no gradient.

        rescale: multiply by the ST-3 per-output-channel rescale :func:`channel_rescale` (no gradient flows
            through the rescale factor).

    Returns:
        The effective weight :math:`w`, same shape as ``theta``.

    Raises:
        ValueError: unknown ``grad`` or negative/NaN float ``threshold``.

    Example::

        >>> soft_threshold(torch.tensor([-2.0, 0.5, 3.0]), 1.0)
        tensor([-1.,  0.,  2.])
    """
    check_grad(grad)
    if isinstance(threshold, (int, float)):
        threshold = _check_nonnegative(threshold)
    if grad == "dense":
        return _DenseStraightThrough.apply(theta, threshold, rescale)
    if grad == "exact":
        if isinstance(threshold, Tensor) and threshold.requires_grad:
            out = _SoftThresholdLearned.apply(theta, threshold)
        else:  # autograd of softshrink / theta - clamp(theta, -d, d): 1[|theta| > d]
            out = _shrink(theta, threshold)
    elif isinstance(threshold, Tensor) and threshold.requires_grad:
        # a trained threshold under the straight-through ReLU: d receives -sign(theta) dL/dw everywhere
        out = torch.sign(theta) * _ReLUStraightThrough.apply(theta.abs() - threshold)
    else:
        out = _SoftThresholdSTE.apply(theta, threshold)
    if rescale:
        out = out * channel_rescale(theta, out.detach(), threshold)
    return out


def _check_nonnegative(value: float, what: str = "threshold") -> float:
    """``float(value)``, or a ValueError naming ``what`` when it is negative or NaN."""
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}; pass a non-negative value")
    return value
