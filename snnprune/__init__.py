"""snnprune: soft-threshold weight pruning for spiking (SpikingJelly) and artificial neural networks.

The public API is re-exported here lazily, so ``import snnprune`` stays light (no matplotlib, no CuPy)
and each name is imported from its home module on first use:

* thresholding core (:mod:`snnprune.threshold`): :func:`soft_threshold`, :class:`SoftThreshold`,
  :func:`register_soft_threshold`, :func:`remove_soft_threshold`, :func:`sparsity`, :func:`finalize`;
* pruning methods (:mod:`snnprune.methods`): :func:`sparsify`, :class:`Pruner`,
  :class:`ScheduledThresholdPruner`, :func:`register_method`, :class:`KeywordError`, :func:`list_methods` (the registered names),
  :func:`get_method`, :func:`lr_total`;
* analytics (:mod:`snnprune.analysis`): :func:`analyze`, :func:`compare`, :class:`EnergyModel`;
* trained runs (:mod:`snnprune.training`): :func:`load_run`, :class:`Run`, :func:`upgrade_checkpoint`,
  :func:`model_builder` (declares the builders a run folder may name);
* neurons with fused CuPy kernels (:mod:`snnprune.neuron`);
* NIR exchange (:mod:`snnprune.interop`): :func:`export_nir`, :func:`verify_nir`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # thresholding core
    "soft_threshold": "snnprune.threshold",
    "SoftThreshold": "snnprune.threshold",
    "register_soft_threshold": "snnprune.threshold",
    "remove_soft_threshold": "snnprune.threshold",
    "sparsity": "snnprune.threshold",
    "finalize": "snnprune.threshold",
    # methods
    "sparsify": "snnprune.methods",
    "Pruner": "snnprune.methods",
    "ScheduledThresholdPruner": "snnprune.methods",
    "register_method": "snnprune.methods",
    "KeywordError": "snnprune.methods",  # a method's refusal of one keyword's value
    "list_methods": "snnprune.methods",
    "get_method": "snnprune.methods",
    "lr_total": "snnprune.methods",
    # analytics
    "analyze": "snnprune.analysis",
    "compare": "snnprune.analysis",
    "EnergyModel": "snnprune.analysis",
    "Report": "snnprune.analysis",
    "compact": "snnprune.structured",  # structured pruning: physically smaller model
    "load_run": "snnprune.training",  # a trained run rebuilt from its folder
    "Run": "snnprune.training",
    "upgrade_checkpoint": "snnprune.training",  # an older checkpoint rewritten to load without pickle
    "model_builder": "snnprune.model_builders",  # declares a callable that run folders may name
    # NIR exchange (imports nir / nirtorch on first use only)
    "export_nir": "snnprune.interop",
    "verify_nir": "snnprune.interop",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'snnprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
