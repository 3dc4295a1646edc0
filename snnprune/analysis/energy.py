"""Per-operation energy costs used to turn operation counts into an energy estimate.

The convention of the SNN pruning literature (STDS, LATS, Grad R, Spikformer, ...) charges every
multiply-accumulate (MAC) of a layer fed with real values and every accumulate (AC, one synaptic
operation, SOP) of a layer fed with spikes with the 45 nm costs of Horowitz (ISSCC 2014):

.. math::

    E = E_{MAC} \\cdot \\mathrm{MACs} + E_{AC} \\cdot \\mathrm{SOPs}

Neuron state updates, batch norm (folded at inference) and memory traffic are not charged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ENERGY_PRESETS", "EnergyModel"]

_HOROWITZ = "Horowitz, ISSCC 2014, 45 nm"

#: Preset name -> (pJ per MAC, pJ per accumulate).
ENERGY_PRESETS: dict[str, tuple[float, float]] = {
    "fp32": (4.6, 0.9),
    "fp16": (1.5, 0.4),
    "int32": (3.2, 0.1),
    "int8": (0.23, 0.03),
}


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation.

    Args:
        e_mac_pj: energy of one multiply-accumulate in picojoules (charged to MACs).
        e_ac_pj: energy of one accumulate in picojoules (charged to SOPs).
        name: short label printed in reports.
        source: where the numbers come from.

    Example:
        >>> EnergyModel.fp16().energy_pj(sops=1000, macs=10)
        415.0
    """

    e_mac_pj: float = 4.6
    e_ac_pj: float = 0.9
    name: str = "fp32"
    source: str = _HOROWITZ

    def __post_init__(self) -> None:
        for field in ("e_mac_pj", "e_ac_pj"):
            value = getattr(self, field)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"EnergyModel.{field} must be a non-negative number of pJ, got {value!r}")

    @classmethod
    def preset(cls, name: str) -> EnergyModel:
        """Return a preset by name (``"fp32"``, ``"fp16"``, ``"int32"``, ``"int8"``)."""
        key = str(name).lower()
        if key not in ENERGY_PRESETS:
            raise ValueError(
                f"unknown energy preset {name!r}; choose one of {sorted(ENERGY_PRESETS)} "
                "or build EnergyModel(e_mac_pj=..., e_ac_pj=...)"
            )
        mac, ac = ENERGY_PRESETS[key]
        return cls(e_mac_pj=mac, e_ac_pj=ac, name=key)

    @classmethod
    def fp32(cls) -> EnergyModel:
        """45 nm FP32: 4.6 pJ per MAC (3.7 mult + 0.9 add), 0.9 pJ per accumulate (the default)."""
        return cls.preset("fp32")

    @classmethod
    def fp16(cls) -> EnergyModel:
        """45 nm FP16: 1.5 pJ per MAC, 0.4 pJ per accumulate."""
        return cls.preset("fp16")

    @classmethod
    def int32(cls) -> EnergyModel:
        """45 nm INT32: 3.2 pJ per MAC, 0.1 pJ per accumulate."""
        return cls.preset("int32")

    @classmethod
    def int8(cls) -> EnergyModel:
        """45 nm INT8: 0.23 pJ per MAC, 0.03 pJ per accumulate."""
        return cls.preset("int8")

    @classmethod
    def resolve(cls, energy: EnergyModel | str | None) -> EnergyModel:
        """Accept an :class:`EnergyModel`, a preset name, or ``None`` (FP32 default)."""
        if energy is None:
            return cls.fp32()
        if isinstance(energy, EnergyModel):
            return energy
        if isinstance(energy, str):
            return cls.preset(energy)
        raise ValueError(
            f"energy must be an EnergyModel, a preset name or None, got {type(energy).__name__}; "
            "use e.g. energy=EnergyModel.fp16() or energy='int8'"
        )

    def energy_pj(self, sops: float = 0.0, macs: float = 0.0) -> float:
        """Energy in pJ of ``sops`` accumulates and ``macs`` multiply-accumulates."""
        return float(sops) * self.e_ac_pj + float(macs) * self.e_mac_pj

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (stored in the report)."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.name}: {self.e_mac_pj:g} pJ/MAC, {self.e_ac_pj:g} pJ/AC ({self.source})"
