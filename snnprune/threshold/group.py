"""Group soft-threshold: the proximal operator of the group-lasso penalty, over output channels.

.. math::
    w_g = \\theta_g \\max\\!\\left(0,\\ 1 - \\frac{d_g}{\\lVert\\theta_g\\rVert_2}\\right),\\qquad
    d_g = D\\sqrt{n_g}

for every group :math:`g` of weights. Here a group is one output channel: the filter ``theta[c]`` of a
Conv1d/2d/3d or the row ``theta[c]`` of a Linear, optionally joined with the same output channel of other
layers whose outputs are summed or multiplied channel by channel (SEW ADD/AND/IAND shortcuts, see
:mod:`snnprune.structured`), or a block of consecutive output channels of every member (an attention head's
rows of Q, K and V, see :meth:`GroupSoftThreshold.couple`).

**Scaling of D.** :math:`n_g` is the number of weights in the group (``C_in * kH * kW`` for one conv
filter, summed over the coupled layers), so a group is removed exactly when the *root-mean-square* of its
weights falls to :math:`D` or below: :math:`\\lVert\\theta_g\\rVert_2 \\le D\\sqrt{n_g} \\iff
\\operatorname{rms}(\\theta_g) \\le D`. One ``D`` therefore means the same in every layer, whatever the
filter size, and the same as the element-wise threshold (a group of one weight is :math:`S_D`). This is
also the group-lasso weighting :math:`\\lambda\\sqrt{p_g}` of Yuan & Lin (2006), so the ISTA reading of
LATS/PGH/STDS carries over with :math:`\\lambda\\sum_g \\sqrt{n_g}\\lVert w_g\\rVert_2`.

**Layer-relative D** (``scale_by="layer"``). Under BatchNorm a filter's scale does not change the function,
so a layer's filter RMS is set by its initialisation (Kaiming fan-out: :math:`\\sqrt{2/(k^2 C_{out})}`, 0.12
for 16 channels, 0.04 for 128) and, in short runs, hardly moves (measured after 4 short epochs on the
embedded data: every filter within about 10 % of its layer's RMS). With the absolute rule one D then
selects whole layers, not filters. ``scale_by="layer"`` multiplies :math:`d_g` by the RMS of the whole
(coupled) layer (detached), so a group is removed when its RMS is at most D times its layer's.

**Gradients** (``grad``):

* ``"exact"``: plain autograd through the norm,
  :math:`\\partial w_g/\\partial\\theta_g = s I + \\frac{d_g}{\\lVert\\theta_g\\rVert^3}\\theta_g\\theta_g^\\top`
  for a surviving group (:math:`s = 1 - d_g/\\lVert\\theta_g\\rVert`), 0 for a removed one.
* ``"ste"``: exact for surviving groups, identity for removed ones, so removed filters keep receiving
  :math:`\\partial L/\\partial w` and can regrow (the group form of LATS/STDS ``stmod``). The literal
  straight-through of the ReLU (backward through the unclipped shrink :math:`\\theta_g(1 - d_g/\\lVert
  \\theta_g\\rVert)`) is not used: on a removed group its tangential gain :math:`1 - d_g/\\lVert\\theta_g
  \\rVert` is negative and would push the filter the wrong way.
* ``"dense"``: identity everywhere (ST-3 form); the threshold gets no gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from snnprune.threshold.functional import check_grad

__all__ = [
    "SCALE_BY",
    "GroupSoftThreshold",
    "group_scale",
    "group_size",
    "group_soft_threshold",
    "register_group_soft_threshold",
]

SCALE_BY: tuple[str, ...] = ("size", "layer")
_EPS_SQ = 1e-30  # floor of ||theta_g||^2: keeps d/||theta_g|| and its gradient finite for an all-zero group


def group_size(theta: Tensor) -> int:
    """Weights per output-channel group of ``theta``: ``theta[0].numel()`` (``C_in*kH*kW`` or ``in_features``)."""
    if theta.dim() < 1 or theta.shape[0] == 0:
        raise ValueError(
            f"a group soft-threshold needs a weight with output channels, got shape {tuple(theta.shape)}"
        )
    return theta[0].numel()


def _row_sq(theta: Tensor) -> Tensor:
    """Sum of squares of each output channel: shape ``[C_out]``."""
    return theta.reshape(theta.shape[0], -1).pow(2).sum(1)


def group_scale(norm_sq: Tensor, threshold: Tensor | float, n: int) -> Tensor:
    """The group shrink factor :math:`s_g = \\max(0, 1 - D\\sqrt{n}/\\lVert\\theta_g\\rVert_2)`.

    Args:
        norm_sq: :math:`\\lVert\\theta_g\\rVert_2^2` per group, shape ``[G]``.
        threshold: :math:`D \\ge 0` (float, 0-d tensor, or ``[G]`` tensor).
        n: weights per group :math:`n_g`.

    Returns:
        :math:`s_g`, shape ``[G]`` (differentiable in ``norm_sq`` and ``threshold``).
    """
    norm = norm_sq.clamp_min(_EPS_SQ).sqrt()
    return torch.relu(1.0 - threshold * math.sqrt(n) / norm)


class _GroupDense(torch.autograd.Function):
    """``w = theta * s`` forward (``s`` given), identity backward to ``theta`` (ST-3 form)."""

    @staticmethod
    def forward(ctx, theta: Tensor, scale: Tensor) -> Tensor:
        return theta * scale

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def _apply_scale(theta: Tensor, scale: Tensor, grad: str) -> Tensor:
    """``theta * scale`` (scale ``[C_out]``) with the backward of ``grad`` (see the module docstring)."""
    shape = (-1,) + (1,) * (theta.dim() - 1)
    s = scale.reshape(shape)
    if grad == "exact":
        return theta * s
    if grad == "dense":
        return _GroupDense.apply(theta, s.detach())
    # ste: exact where the group survives, identity (forward exactly 0) where it is removed
    return torch.where(s > 0, theta * s, theta - theta.detach())


def group_soft_threshold(theta: Tensor, threshold: Tensor | float, grad: str = "exact") -> Tensor:
    """Group soft-threshold over output channels: :math:`w_c = \\theta_c\\max(0, 1 - D\\sqrt{n}/\\lVert\\theta_c\\rVert_2)`.

    ``theta[c]`` (a conv filter or a Linear row) is one group of :math:`n` = ``theta[c].numel()`` weights;
    a group whose RMS is at most ``threshold`` becomes exactly zero, the others shrink radially.

    Args:
        theta: raw weight, output channels first (``[C_out, ...]``).
        threshold: :math:`D \\ge 0`; float, 0-d tensor, or ``[C_out]`` tensor.
        grad: ``"exact"``, ``"ste"`` or ``"dense"`` (see the module docstring).

    Returns:
        The effective weight, same shape as ``theta``.

    Raises:
        ValueError: unknown ``grad``, negative/NaN float threshold, or a weight without output channels.

    Example::

        >>> group_soft_threshold(torch.tensor([[3.0, 4.0], [0.1, 0.1]]), 1.0)  # rms 3.54 and 0.1
        tensor([[2.1515, 2.8686],
                [0.0000, 0.0000]])
    """
    check_grad(grad)
    if isinstance(threshold, (int, float)) and (math.isnan(threshold) or threshold < 0):
        raise ValueError(f"threshold must be >= 0, got {threshold}; pass a non-negative threshold")
    n = group_size(theta)
    return _apply_scale(theta, group_scale(_row_sq(theta), threshold, n), grad)


class GroupSoftThreshold(nn.Module):
    """Parametrization :math:`w = ` :func:`group_soft_threshold` :math:`(\\theta)`, optionally coupled.

    A coupled parametrization shares its groups with ``peers`` (other parametrized layers with the same
    number of output channels whose channel ``c`` is pruned together with this layer's channel ``c``):
    :math:`\\lVert\\theta_g\\rVert_2^2` and :math:`n_g` are summed over this layer and the peers, so the
    whole coupled group survives or goes at once. Peers are held as plain references (not submodules), so
    ``state_dict`` is unchanged and ``copy.deepcopy`` of the model maps them to the copies.

    The last shrink factor computed with every member still parametrized is kept (detached) in
    ``last_scale`` of every member; once a peer has been finalized (its raw weight replaced by the effective one) the
    factor is taken from there, which makes :func:`snnprune.finalize` order-independent.

    Args:
        threshold: :math:`D \\ge 0` (float or ``[C_out]`` tensor); a buffer unless ``learnable``.
        grad: ``"exact"``, ``"ste"`` (default, as the scheduled methods) or ``"dense"``.
        learnable: hold ``threshold`` as an ``nn.Parameter`` (its gradient flows with ``grad="exact"``
            and for surviving groups with ``"ste"``).
        scale_by: ``"size"`` (:math:`d_g = D\\sqrt{n_g}`: removed when the group RMS is at most :math:`D`)
            or ``"layer"`` (:math:`d_g = D\\sqrt{n_g}\\,\\operatorname{rms}(\\theta_{layer})`, the RMS over all
            groups of the (coupled) layer, detached: removed when the group RMS is at most :math:`D` times
            the layer's; scale-free, see the module docstring).

    Raises:
        ValueError: negative threshold, unknown ``grad`` or ``scale_by``.
    """

    def __init__(
        self,
        threshold: float | Tensor = 0.0,
        grad: str = "ste",
        learnable: bool = False,
        scale_by: str = "size",
    ) -> None:
        super().__init__()
        check_grad(grad)
        if scale_by not in SCALE_BY:
            raise ValueError(f"scale_by must be one of {SCALE_BY}, got {scale_by!r}")
        self.scale_by = scale_by
        value = torch.as_tensor(threshold, dtype=torch.get_default_dtype()).detach().clone()
        if bool(torch.isnan(value).any() or (value < 0).any()):
            raise ValueError(f"threshold must be >= 0, got {threshold}; pass a non-negative threshold")
        self.grad = grad
        self.learnable = learnable
        if learnable:
            self.threshold = nn.Parameter(value)
        else:
            self.register_buffer("threshold", value)
        self.peers: list[nn.Module] = []
        self.block = 1
        self.last_scale: Tensor | None = None

    def __setattr__(self, name: str, value: object) -> None:
        if name == "peers":  # plain list of layers, never registered as submodules
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @torch.no_grad()
    def set_threshold(self, value: float) -> None:
        """Fill the (buffer) threshold with :math:`D \\ge 0` (what the scheduled pruners call every step).

        Raises:
            ValueError: a learnable threshold (the optimizer owns it).
        """
        if self.learnable:
            raise ValueError(
                "set_threshold() sets a buffer threshold; a learnable one is trained by the optimizer"
            )
        self.threshold.fill_(value)

    def couple(self, peers: list[nn.Module], block: int = 1) -> None:
        """Join this layer's output channels with those of ``peers`` (parametrized layers, same ``C_out``).

        Args:
            peers: the other members of the groups.
            block: consecutive output channels per group (an attention head's ``head_dim``: channels
                ``[g * block, (g + 1) * block)`` of every member form group ``g``); divides ``C_out``.
        """
        self.peers = list(peers)
        self.block = int(block)

    def scale(self, theta: Tensor) -> Tensor:
        """The shrink factor :math:`s_g` per output channel for this layer's raw weight ``theta``."""
        sq, n = _row_sq(theta), group_size(theta)
        frozen = False
        for peer in self.peers:
            if not parametrize.is_parametrized(peer, "weight"):
                frozen = True
                break
            other = peer.parametrizations.weight.original
            sq = sq + _row_sq(other)
            n += group_size(other)
        if frozen and self.last_scale is not None:
            return self.last_scale.to(theta.dtype)
        d = self.threshold
        if self.scale_by == "layer":  # D relative to the (coupled) layer's RMS, detached
            d = d * (sq.detach().sum() / (sq.numel() * n)).sqrt()
        if self.block > 1:  # one factor per block of channels, repeated over its channels
            if d.dim() > 0 and d.numel() > 1:
                d = d.reshape(-1, self.block)[:, 0]
            s = group_scale(sq.reshape(-1, self.block).sum(1), d, n * self.block)
            s = s.repeat_interleave(self.block)
        else:
            s = group_scale(sq, d, n)
        self.last_scale = s.detach()
        for peer in self.peers:  # the whole group shares the factor (finalize reads it from any member)
            peer.parametrizations.weight[0].last_scale = self.last_scale
        return s

    def forward(self, theta: Tensor) -> Tensor:
        """Return the effective weight for raw weight ``theta``."""
        return _apply_scale(theta, self.scale(theta), self.grad)

    def extra_repr(self) -> str:
        t = self.threshold
        value = f"{t.item():.6g}" if t.numel() == 1 else f"shape={tuple(t.shape)}"
        return (
            f"threshold={value}, grad={self.grad!r}, learnable={self.learnable}, scale_by={self.scale_by!r}, "
            f"coupled={len(self.peers)}"
        )


def check_groupable(module: nn.Module) -> None:
    """Raise unless ``module``'s filters map one-to-one to removable output channels.

    Raises:
        ValueError: a grouped or depthwise convolution (``groups > 1``).
    """
    if getattr(module, "groups", 1) != 1:
        raise ValueError(
            f"{type(module).__name__} has groups={module.groups}; filter granularity supports groups=1 "
            "layers only: exclude it (exclude=[...]) or use granularity='weight'"
        )


def register_group_soft_threshold(
    module: nn.Module,
    threshold: float | Tensor = 0.0,
    grad: str = "ste",
    learnable: bool = False,
    scale_by: str = "size",
) -> nn.Module:
    """Reparametrize ``module.weight`` with a :class:`GroupSoftThreshold` (one group per output channel).

    Args:
        module: Conv1d/2d/3d or Linear (SpikingJelly's layers included).
        threshold: initial :math:`D`.
        grad: backward variant.
        learnable: threshold as an ``nn.Parameter``.
        scale_by: ``"size"`` or ``"layer"`` (see :class:`GroupSoftThreshold`).

    Returns:
        ``module``.

    Raises:
        ValueError: as :func:`snnprune.threshold.register_parametrization`, or a grouped/depthwise conv
            (``groups > 1``), whose filters do not map one-to-one to removable channels.
    """
    from snnprune.threshold.parametrization import register_parametrization

    check_groupable(module)
    return register_parametrization(
        module, "weight", GroupSoftThreshold(threshold, grad, learnable, scale_by)
    )
