"""N:M granularity: at most N non-zero weights in every group of M consecutive input weights.

A *group* is M consecutive entries along the input dimension of the weight, the layout sparse tensor cores
read (``torch.sparse.to_sparse_semi_structured`` for 2:4): ``theta[o, i*M:(i+1)*M]`` of a Linear, and
for a convolution ``theta[o, i*M:(i+1)*M, kh, kw]`` at every kernel position (input channels, as NVIDIA's
ASP groups convolution weights). ``C_in`` (``weight.shape[1]``) must be a multiple of M.

The N:M soft threshold of a group is the soft threshold with a threshold of its own,

.. math::
    w_g = S_{f\\,\\tau_g}(\\theta_g),\\qquad \\tau_g = \\text{the } (M-N)\\text{-th smallest } |\\theta_g|,

where :math:`f \\in [0, 1]` is the scheduled fraction the pruner installs (``threshold``) and
:math:`\\tau_g` is recomputed from the current :math:`\\theta` at every forward (detached: no gradient
flows through the choice of the cut). At :math:`f = 1` the M-N smallest magnitudes of every group are at
most :math:`\\tau_g`, so they are exactly zero and at most N weights survive (exactly N unless magnitudes
tie at :math:`\\tau_g`); the survivors shrink by :math:`\\tau_g`. Before that, :math:`f < 1` prunes, in every
group, the weights below a growing fraction of its cut, so the structure forms gradually along the method's
schedule. The backward is that of :func:`snnprune.soft_threshold` (``grad``).
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from snnprune.threshold.functional import check_grad, soft_threshold

__all__ = [
    "NMSoftThreshold",
    "check_nm_layer",
    "from_groups",
    "nm_cut",
    "nm_violations",
    "parse_nm",
    "to_groups",
]

_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_nm(text: str) -> tuple[int, int] | None:
    """``(N, M)`` for a text ``"N:M"`` with ``0 < N < M`` (e.g. ``"2:4"``), None for a text of another form.

    Raises:
        ValueError: an ``N:M`` text with ``N < 1`` or ``N >= M`` (nothing or everything pruned).
    """
    match = _NM.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ValueError(
            f"granularity {text!r} must have 0 < N < M (N of every M weights survive); pass e.g. '2:4'"
        )
    return n, m


def check_nm_layer(module: nn.Module, m: int, name: str = "") -> None:
    """Raise unless ``module.weight`` has an input dimension (``shape[1]``) that is a multiple of ``m``.

    Raises:
        ValueError: a 1-D weight or ``shape[1] % m != 0`` (the message names the layer and the fix).
    """
    shape = tuple(module.weight.shape)
    label = name or type(module).__name__
    if len(shape) < 2 or shape[1] % m:
        raise ValueError(
            f"layer {label!r} has weight shape {shape}: N:M groups of {m} need an input dimension "
            f"(shape[1]) that is a multiple of {m}; exclude it (exclude=[{label!r}]) or pick another M"
        )


def to_groups(theta: Tensor, m: int) -> Tensor:
    """``theta`` as ``[num_groups, m]``: M consecutive input entries per row (see the module docstring)."""
    return theta.movedim(1, -1).reshape(-1, m)


def from_groups(groups: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of :func:`to_groups` for a weight of ``shape``."""
    moved = (shape[0], *shape[2:], shape[1])
    return groups.reshape(moved).movedim(-1, 1)


def nm_cut(theta: Tensor, n: int, m: int) -> Tensor:
    """:math:`\\tau_g`, the (M-N)-th smallest magnitude of every group, shape ``[num_groups, 1]`` (detached)."""
    return to_groups(theta.detach(), m).abs().kthvalue(m - n, dim=1, keepdim=True).values


def nm_violations(weight: Tensor, n: int, m: int) -> int:
    """Number of groups of ``weight`` with more than N non-zero entries (0: the N:M structure holds)."""
    return int((to_groups(weight.detach(), m).ne(0).sum(1) > n).sum())


class NMSoftThreshold(nn.Module):
    """Parametrization :math:`w_g = S_{f\\tau_g}(\\theta_g)` over the N:M groups (see the module docstring).

    Args:
        n: weights kept per group, ``0 < n < m``.
        m: group size along the input dimension.
        threshold: initial fraction :math:`f \\ge 0` of every group's cut (a buffer; the scheduled pruners
            set it with :meth:`set_threshold`; values above 1 act as 1).
        grad: backward variant of :func:`snnprune.soft_threshold`.

    Raises:
        ValueError: ``not 0 < n < m``, negative threshold or unknown ``grad``.
    """

    def __init__(self, n: int, m: int, threshold: float = 0.0, grad: str = "ste") -> None:
        super().__init__()
        check_grad(grad)
        if not 0 < n < m:
            raise ValueError(f"N:M needs 0 < N < M, got {n}:{m}; pass e.g. n=2, m=4")
        if not threshold >= 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}; pass a non-negative threshold")
        self.n, self.m, self.grad = int(n), int(m), grad
        self.register_buffer("threshold", torch.tensor(float(threshold), dtype=torch.get_default_dtype()))

    @torch.no_grad()
    def set_threshold(self, value: float) -> None:
        """Fill the threshold buffer with the fraction :math:`f \\ge 0` of every group's cut."""
        self.threshold.fill_(value)

    def forward(self, theta: Tensor) -> Tensor:
        """Return the effective weight for raw weight ``theta`` (same shape)."""
        groups = to_groups(theta, self.m)
        cut = nm_cut(theta, self.n, self.m) * self.threshold.clamp(max=1.0).to(theta.dtype)
        return from_groups(soft_threshold(groups, cut, self.grad), theta.shape)

    def extra_repr(self) -> str:
        return f"n={self.n}, m={self.m}, threshold={self.threshold.item():.6g}, grad={self.grad!r}"
