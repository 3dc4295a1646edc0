"""The dense baseline: the same code path, nothing pruned."""

from __future__ import annotations

from snnprune.methods.base import Pruner, register_method

__all__ = ["DensePruner"]


@register_method("dense")
class DensePruner(Pruner):
    """No parametrization is registered; :meth:`step` only counts steps and the threshold is 0.

    Keyword arguments: ``total_steps=None`` (optional; checked if given), ``start_step=0``.
    """

    requires_total_steps = False
