"""Thresholding core: the soft-threshold operator, its parametrizations, sparsity and export."""

from snnprune.threshold.functional import GRAD_MODES, check_grad, soft_threshold
from snnprune.threshold.parametrization import (
    PRUNABLE_TYPES,
    LearnedThresholdMask,
    MagnitudeMask,
    SoftThreshold,
    finalize,
    is_prunable,
    register_parametrization,
    register_removal_hook,
    register_soft_threshold,
    remove_soft_threshold,
    sparsity,
)

__all__ = [
    "GRAD_MODES",
    "PRUNABLE_TYPES",
    "LearnedThresholdMask",
    "MagnitudeMask",
    "SoftThreshold",
    "check_grad",
    "finalize",
    "is_prunable",
    "register_parametrization",
    "register_removal_hook",
    "register_soft_threshold",
    "remove_soft_threshold",
    "soft_threshold",
    "sparsity",
]
