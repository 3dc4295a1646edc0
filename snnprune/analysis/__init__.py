"""Analytics: spikes, sparsity, synaptic operations (SOPs), MACs and energy of SNNs and ANNs.

* :func:`analyze` runs a model over data with forward hooks and returns a :class:`Report`;
  :func:`footprint_bytes` is its (and NeuroBench's) Footprint of a model;
* :func:`compare` puts an ANN report and an SNN report side by side;
* :class:`EnergyModel` holds the per-operation and per-access energy (45 nm, Horowitz 2014; FP32
  compute-only default; memory-aware presets ``"lemaire"``, ``"yan-neuromorphic"``, ``"yan-accelerator"``);
* :func:`break_even` and :func:`energy_at_rate` give the firing rate at which an SNN matches the quantized
  ANN. Conventions and sources: ``snnprune/docs/energy.md``.
"""

from __future__ import annotations

from .analyze import analyze, footprint_bytes
from .compare import Comparison, ann_baselines, break_even, compare, energy_at_rate
from .energy import ENERGY_PRESETS, EnergyModel, quantized_activation_bits
from .report import CONVENTIONS, Report

__all__ = [
    "CONVENTIONS",
    "ENERGY_PRESETS",
    "Comparison",
    "EnergyModel",
    "Report",
    "analyze",
    "ann_baselines",
    "break_even",
    "compare",
    "energy_at_rate",
    "footprint_bytes",
    "quantized_activation_bits",
]
