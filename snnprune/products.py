"""Products of two activations (the arithmetic of attention) as modules of their own.

A model writes ``Q K^T``, ``(Q K^T) V``, ``K ⊙ V``, the sum over tokens and a mask with these modules
instead of inline operators, so that :func:`snnprune.analyze` gives each call its own ``product`` row
(rules in ``docs/analyze.md``) and :func:`snnprune.export_nir` can refuse them by name (NIR has no product
of two activations). They hold no parameters and are never pruned.

* :class:`SpikeMatmul` ``(a @ b) * scale``;
* :class:`SpikeMul` ``a * b`` (element-wise, broadcast);
* :class:`TokenSum` the sum over the token axis ``-2``, kept.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["PRODUCT_TYPES", "SpikeMatmul", "SpikeMul", "TokenSum"]


class SpikeMatmul(nn.Module):
    """``(a @ b) * scale`` of two activations (spike or count valued in a spiking model).

    Args:
        scale: a constant factor applied to the product (the attention scale), or None.
    """

    def __init__(self, scale: float | None = None) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        y = a @ b
        return y if self.scale is None else y * self.scale

    def extra_repr(self) -> str:
        return "" if self.scale is None else f"scale={self.scale}"


class SpikeMul(nn.Module):
    """Element-wise ``a * b`` (broadcast) of two activations: a Hadamard product or a mask."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b


class TokenSum(nn.Module):
    """Sum over the token axis ``-2`` of ``[..., N, D]``, kept (``[..., 1, D]``): a column sum."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=-2, keepdim=True)


#: The module types :func:`snnprune.analyze` counts as ``product`` rows and ``export_nir`` refuses.
PRODUCT_TYPES: tuple[type[nn.Module], ...] = (SpikeMatmul, SpikeMul, TokenSum)
