"""The dense baseline: the same code path, nothing pruned."""

from __future__ import annotations

from snnprune.methods.base import Pruner, register_method

__all__ = ["DensePruner"]


@register_method("dense")
class DensePruner(Pruner):
    """No parametrization is registered; :meth:`step` only counts steps and the threshold is 0.

    Args:
        total_steps: optimizer steps of the whole run (optional; checked if given).
        start_step: unused by the dense baseline, validated like the other methods'.
    """

    requires_total_steps = False

    def __init__(self, *, total_steps: int | None = None, start_step: int = 0) -> None:
        super().__init__(total_steps=total_steps, start_step=start_step)
