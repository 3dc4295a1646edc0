"""Analytics: spikes, sparsity, synaptic operations (SOPs), MACs and energy of SNNs and ANNs.

* :func:`analyze` runs a model over data with forward hooks and returns a :class:`Report`;
* :func:`compare` puts an ANN report and an SNN report side by side;
* :class:`EnergyModel` holds the per-operation energy (45 nm, Horowitz 2014; FP32 default).
"""

from __future__ import annotations

from .analyze import analyze
from .compare import Comparison, compare
from .energy import ENERGY_PRESETS, EnergyModel
from .report import Report

__all__ = ["ENERGY_PRESETS", "Comparison", "EnergyModel", "Report", "analyze", "compare"]
