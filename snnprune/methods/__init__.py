"""Pruning methods on the thresholding core: :func:`sparsify`, :class:`Pruner`, :func:`list_methods`, :func:`lr_total`.

Formulas, options and the choices made where the papers are silent: ``snnprune/docs/methods.md``. New
methods register with :func:`register_method` (:func:`unregister_method` removes one); :func:`list_methods`
and :func:`get_method` read the registry.

The method table (effective weight, threshold schedule, what is trained, key arguments) is the one at the top
of ``snnprune/docs/methods.md``.
"""

# registration order = the order of list_methods()
from snnprune.methods import dense, lats, learned, st3, gmp, imp, shi2024  # noqa: F401, I001  (register the methods)
from snnprune.methods.base import (
    KeywordError,
    Pruner,
    check_choice,
    check_finite_nonnegative,
    check_grad_keyword,
    check_steps,
    check_target_sparsity,
    closest,
    get_method,
    list_methods,
    MethodKeyword,
    method_keywords,
    method_kwargs,
    register_method,
    select_layers,
    parse_granularity,
    sparsify,
    unregister_method,
)
from snnprune.methods.dense import DensePruner
from snnprune.methods.gmp import GMPPruner
from snnprune.methods.imp import IMPPruner
from snnprune.methods.lats import LATSPruner, PGHPruner, ScheduledThresholdPruner, SLATSPruner, STDSPruner
from snnprune.methods.learned import LTPPruner, STRPruner
from snnprune.methods.lr_total import lr_total
from snnprune.methods.shi2024 import Shi2024Pruner
from snnprune.methods.st3 import ST3Pruner, ST3SigmaPruner

__all__ = [
    "DensePruner",
    "GMPPruner",
    "IMPPruner",
    "KeywordError",
    "LATSPruner",
    "LTPPruner",
    "MethodKeyword",
    "PGHPruner",
    "Pruner",
    "SLATSPruner",
    "ST3Pruner",
    "ST3SigmaPruner",
    "STDSPruner",
    "STRPruner",
    "ScheduledThresholdPruner",
    "Shi2024Pruner",
    "check_choice",
    "check_finite_nonnegative",
    "check_grad_keyword",
    "check_steps",
    "check_target_sparsity",
    "closest",
    "get_method",
    "list_methods",
    "lr_total",
    "method_keywords",
    "method_kwargs",
    "parse_granularity",
    "register_method",
    "select_layers",
    "sparsify",
    "unregister_method",
]
