"""Energy models: compute (per operation) plus memory and data movement (per access, by size and width).

**Compute.** The convention of the SNN pruning literature (STDS, LATS, Grad R, Spikformer, ...) charges
every multiply-accumulate (MAC) of a layer fed with real values and every accumulate (AC, one synaptic
operation, SOP) of a layer fed with spikes with the 45 nm costs of Horowitz (ISSCC 2014):

.. math::

    E_{compute} = E_{MAC} \\cdot \\mathrm{MACs} + E_{AC} \\cdot \\mathrm{SOPs}

**Memory** (zero in the compute-only presets ``fp32`` (default), ``fp16``, ``int32``, ``int8``). Every
access of ``b`` bits to an SRAM holding ``S`` bits costs ``b * e_bit(S)``, where ``e_bit`` interpolates
linearly between ``sram_pj`` points ``(capacity in bytes, pJ per sram_word_bits-bit access)`` and is
constant below the first and beyond the last point. Per sample, summed over the time steps (see ``snnprune/docs/energy.md``):

* **weights**: one read of ``weight_bits`` per accumulate of a non-zero weight (event-driven layers) or per
  effective MAC (real-valued inputs), from the layer's weight memory. ``weight_format`` decides what is
  stored and read: ``"dense"`` (every weight, zeros included, is stored and read: the dense fan-out),
  ``"csr"`` (only non-zero weights plus ``index_bits`` of index per non-zero, read with each weight) or
  ``"bitmask"`` (non-zero weights plus one mask bit per weight, the mask bit of every synapse of the dense
  fan-out is read). The weight memory holds the stored format, so pruning also makes each access cheaper.
* **membrane potentials**: one read and one write of ``potential_bits`` per neuron per time step (the
  neuron update), plus, with ``potential_per_sop``, one read and one write per accumulate (event-driven
  hardware updates the target potential of every synapse an event reaches, Lemaire et al. 2022).
* **spikes / activations**: with ``spike_format="aer"`` every input event is read and every output spike
  written as an address event of ``event_bits`` through a FIFO of ``fifo_bytes``; with ``"map"`` every
  neuron writes one bit per step and every synaptic input element is read as one bit. Real-valued inputs
  are read with ``activation_bits`` once per element (``mac_input_reads="once"``, input reuse) or once per
  MAC (``"per_mac"``, no reuse); an ANN writes each output activation once.

``zero_skipping`` (used for the quantized ANN baseline of :func:`~snnprune.analysis.compare`) charges only
the MACs whose input activation is non-zero (exact per layer: measured on the same data by ``analyze``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = [
    "ENERGY_PRESETS",
    "HOROWITZ_SRAM_64BIT_PJ",
    "EnergyModel",
    "add_pj",
    "mult_pj",
    "quantized_activation_bits",
]

_HOROWITZ = "Horowitz, ISSCC 2014, 45 nm"

#: Preset name -> (pJ per MAC, pJ per accumulate) of the compute-only presets.
ENERGY_PRESETS: dict[str, tuple[float, float]] = {
    "fp32": (4.6, 0.9),
    "fp16": (1.5, 0.4),
    "int32": (3.2, 0.1),
    "int8": (0.23, 0.03),
}

#: Horowitz (ISSCC 2014, 45 nm) cache read energies: (capacity in bytes, pJ per 64-bit access).
HOROWITZ_SRAM_64BIT_PJ: tuple[tuple[float, float], ...] = (
    (8 * 1024, 10.0),
    (32 * 1024, 20.0),
    (1 << 20, 100.0),
)

#: The same three points read as pJ per 32-bit access from an empty memory up, as Lemaire et al. use them
#: (SpikingJelly 2.0.0 ``op_counter.analytical_energy.LemaireEnergyCostConfig``).
_LEMAIRE_SRAM_32BIT_PJ: tuple[tuple[float, float], ...] = ((0.0, 0.0), *HOROWITZ_SRAM_64BIT_PJ)

_WEIGHT_FORMATS = ("dense", "csr", "bitmask")
_SPIKE_FORMATS = ("aer", "map")
_MAC_INPUT_READS = ("once", "per_mac")


def mult_pj(a_bits: int, b_bits: int) -> float:
    """Energy of an ``a_bits`` x ``b_bits`` integer multiply: Horowitz's 0.2 pJ (INT8) scaled by a*b/64.

    An array multiplier's energy grows with the product of the operand widths (INT32: 3.2 pJ here, 3.1 pJ
    in Horowitz's table).

    Args:
        a_bits: width of the first operand.
        b_bits: width of the second operand.

    Returns:
        pJ per multiply.
    """
    return 0.2 * a_bits * b_bits / 64.0


def add_pj(bits: int) -> float:
    """Energy of a ``bits``-wide integer add: Horowitz's 0.03 pJ (INT8) scaled linearly with the width.

    Args:
        bits: adder width (the accumulator or membrane-potential width).

    Returns:
        pJ per add (INT32: 0.12 pJ here, 0.1 pJ in Horowitz's table).
    """
    return 0.03 * bits / 8.0


def quantized_activation_bits(time_steps: int) -> int:
    """Activation width of the quantized ANN equivalent to an SNN with T steps: ``ceil(log2(T + 1))``.

    A neuron of an SNN emits 0..T spikes in T steps, i.e. T + 1 levels (Yan et al., arXiv 2409.08290).

    Args:
        time_steps: T, >= 1.

    Returns:
        The bit width (T=1 -> 1, T=2..3 -> 2, T=4..7 -> 3).
    """
    if not isinstance(time_steps, int) or time_steps < 1:
        raise ValueError(f"time_steps must be a positive int, got {time_steps!r}")
    return max(1, math.ceil(math.log2(time_steps + 1)))


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation and per memory access.

    Args:
        e_mac_pj: energy of one multiply-accumulate in picojoules (charged to MACs).
        e_ac_pj: energy of one accumulate in picojoules (charged to SOPs).
        name: short label printed in reports.
        source: where the numbers come from.
        sram_pj: ``(capacity bytes, pJ per access of sram_word_bits bits)`` points, increasing capacity;
            empty (default) = no memory term (compute only).
        sram_word_bits: width of one access the ``sram_pj`` energies are given for.
        weight_bits: stored width of one weight.
        potential_bits: width of one membrane potential.
        activation_bits: width of a real-valued activation (ANN, encoding-layer input).
        event_bits: width of one address event (``spike_format="aer"``).
        spike_format: ``"aer"`` (address events through a FIFO) or ``"map"`` (one bit per neuron per step).
        weight_format: ``"dense"``, ``"csr"`` or ``"bitmask"`` (see the module docstring).
        index_bits: bits of index stored and read with each non-zero weight (``"csr"``).
        potential_per_sop: also read and write the target potential at every accumulate (event-driven).
        mac_input_reads: ``"once"`` (each real input element read once) or ``"per_mac"``.
        fifo_bytes: capacity of the event FIFOs (``"aer"``).
        zero_skipping: charge only the MACs (and their weight reads) whose input activation is non-zero.

    Example:
        >>> EnergyModel.fp16().energy_pj(sops=1000, macs=10)
        415.0
    """

    e_mac_pj: float = 4.6
    e_ac_pj: float = 0.9
    name: str = "fp32"
    source: str = _HOROWITZ
    sram_pj: tuple[tuple[float, float], ...] = ()
    sram_word_bits: int = 64
    weight_bits: int = 32
    potential_bits: int = 32
    activation_bits: int = 32
    event_bits: int = 32
    spike_format: str = "aer"
    weight_format: str = "dense"
    index_bits: int = 16
    potential_per_sop: bool = False
    mac_input_reads: str = "once"
    fifo_bytes: int = 4000
    zero_skipping: bool = False

    def __post_init__(self) -> None:
        for name in ("e_mac_pj", "e_ac_pj"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"EnergyModel.{name} must be a non-negative number of pJ, got {value!r}")
        for name in ("sram_word_bits", "weight_bits", "potential_bits", "activation_bits", "event_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"EnergyModel.{name} must be a positive int (bits), got {value!r}")
        if not isinstance(self.index_bits, int) or self.index_bits < 0:
            raise ValueError(f"EnergyModel.index_bits must be a non-negative int, got {self.index_bits!r}")
        if not isinstance(self.fifo_bytes, int) or self.fifo_bytes < 1:
            raise ValueError(f"EnergyModel.fifo_bytes must be a positive int, got {self.fifo_bytes!r}")
        for name, choices in (
            ("weight_format", _WEIGHT_FORMATS),
            ("spike_format", _SPIKE_FORMATS),
            ("mac_input_reads", _MAC_INPUT_READS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"EnergyModel.{name} must be one of {choices}, got {getattr(self, name)!r}")
        try:
            points = tuple((float(c), float(e)) for c, e in self.sram_pj)
        except (TypeError, ValueError):
            raise ValueError(
                f"EnergyModel.sram_pj must be (capacity bytes, pJ per access) pairs, got {self.sram_pj!r}"
            ) from None
        if any(c < 0 or e < 0 or not math.isfinite(c) or not math.isfinite(e) for c, e in points) or any(
            b[0] <= a[0] for a, b in itertools.pairwise(points)
        ):
            raise ValueError(
                "EnergyModel.sram_pj capacities must be strictly increasing and every value finite and "
                f">= 0, got {self.sram_pj!r}"
            )
        object.__setattr__(self, "sram_pj", points)  # lists from JSON become tuples (hashable, comparable)

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str) -> EnergyModel:
        """Return a preset by name: compute-only ``"fp32"``, ``"fp16"``, ``"int32"``, ``"int8"``, or the
        memory-aware ``"lemaire"``, ``"yan-neuromorphic"``, ``"yan-accelerator"`` (see :meth:`lemaire`,
        :meth:`yan_neuromorphic`, :meth:`yan_accelerator`)."""
        key = str(name).lower().replace("_", "-")
        if key in _MEMORY_PRESETS:
            return _MEMORY_PRESETS[key]()
        if key not in ENERGY_PRESETS:
            raise ValueError(
                f"unknown energy preset {name!r}; choose one of {sorted([*ENERGY_PRESETS, *_MEMORY_PRESETS])} "
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
    def lemaire(cls) -> EnergyModel:
        """Lemaire et al. (ICONIP 2022), as implemented by SpikingJelly 2.0.0's ``estimate_lemaire_energy``.

        32-bit integers everywhere: add 0.1 pJ (one accumulate), multiply 3.1 pJ (a MAC = 3.2 pJ); SRAM
        10 / 20 / 100 pJ per 32-bit access at 8 KB / 32 KB / 1 MB (Horowitz 2014), linear from an empty
        memory; dense weight storage (zeros are read); potential read and write per accumulate and per
        neuron per step; 32-bit address events through 1000-message FIFOs; real inputs read per MAC.
        Left out (as documented in ``snnprune/docs/energy.md``): the address-computation ops.
        """
        return cls(
            e_mac_pj=3.2,
            e_ac_pj=0.1,
            name="lemaire",
            source="Lemaire et al., ICONIP 2022 (SpikingJelly 2.0.0 LemaireEnergyCostConfig); Horowitz 2014 SRAM",
            sram_pj=_LEMAIRE_SRAM_32BIT_PJ,
            sram_word_bits=32,
            weight_bits=32,
            potential_bits=32,
            activation_bits=32,
            event_bits=32,
            spike_format="aer",
            weight_format="dense",
            potential_per_sop=True,
            mac_input_reads="per_mac",
            fifo_bytes=4000,
        )

    @classmethod
    def yan_neuromorphic(cls) -> EnergyModel:
        """The event-driven ("neuromorphic") setting of Yan et al. (arXiv 2409.08290), with Horowitz costs.

        8-bit weights in CSR with 16-bit indices, 16-bit potentials read and written per accumulate and per
        neuron per step, 16-bit address events; compute scaled from Horowitz's INT8 numbers (accumulate =
        16-bit add 0.06 pJ, encoding MAC = 8x8 multiply 0.2 pJ + 16-bit add); SRAM 10 / 20 / 100 pJ per
        64-bit access at 8 KB / 32 KB / 1 MB (Horowitz 2014). The bit widths and formats are this
        project's reading of the paper's setting, not constants copied from it (see the docs).
        """
        return cls(
            e_mac_pj=mult_pj(8, 8) + add_pj(16),
            e_ac_pj=add_pj(16),
            name="yan-neuromorphic",
            source="setting of Yan et al., arXiv 2409.08290; costs Horowitz 2014 (INT8 ops scaled, SRAM by size)",
            sram_pj=HOROWITZ_SRAM_64BIT_PJ,
            sram_word_bits=64,
            weight_bits=8,
            potential_bits=16,
            activation_bits=8,
            event_bits=16,
            spike_format="aer",
            weight_format="csr",
            index_bits=16,
            potential_per_sop=True,
            mac_input_reads="once",
        )

    @classmethod
    def yan_accelerator(cls) -> EnergyModel:
        """The dense-dataflow ("accelerator") setting of Yan et al. (arXiv 2409.08290), with Horowitz costs.

        8-bit weights with a bitmask, 16-bit potentials read and written once per neuron per step
        (accumulation in processing-element registers), spikes as one-bit maps, real inputs read once;
        compute and SRAM costs as in :meth:`yan_neuromorphic`.
        """
        return replace(
            cls.yan_neuromorphic(),
            name="yan-accelerator",
            spike_format="map",
            weight_format="bitmask",
            potential_per_sop=False,
        )

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
            "use e.g. energy=EnergyModel.fp16() or energy='lemaire'"
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnergyModel:
        """Rebuild a model from :meth:`to_dict` (unknown keys ignored, missing keys take the defaults)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    # ------------------------------------------------------------------ costs
    @property
    def has_memory(self) -> bool:
        """Whether the model charges memory accesses (``sram_pj`` given)."""
        return bool(self.sram_pj)

    def energy_pj(self, sops: float = 0.0, macs: float = 0.0) -> float:
        """Compute energy in pJ of ``sops`` accumulates and ``macs`` multiply-accumulates."""
        return float(sops) * self.e_ac_pj + float(macs) * self.e_mac_pj

    def bit_pj(self, capacity_bits: float) -> float:
        """pJ per bit accessed in an SRAM of ``capacity_bits`` (0 without ``sram_pj``).

        Args:
            capacity_bits: size of the memory in bits.

        Returns:
            The interpolated per-access energy divided by ``sram_word_bits``.
        """
        pts = self.sram_pj
        if not pts:
            return 0.0
        size = capacity_bits / 8.0
        if size <= pts[0][0] or len(pts) == 1:
            e = pts[0][1]
        elif size >= pts[-1][0]:
            e = pts[-1][1]
        else:
            e = pts[-1][1]
            for (c0, e0), (c1, e1) in itertools.pairwise(pts):
                if size <= c1:
                    e = e0 + (e1 - e0) * (size - c0) / (c1 - c0)
                    break
        return e / self.sram_word_bits

    def weight_memory_bits(self, numel: int, nonzero: int) -> float:
        """Stored size of a weight tensor in bits in this model's ``weight_format``."""
        if self.weight_format == "dense":
            return float(numel * self.weight_bits)
        if self.weight_format == "csr":
            return float(nonzero * (self.weight_bits + self.index_bits))
        return float(nonzero * self.weight_bits + numel)

    def row_energy(self, row: dict[str, Any], spiking: bool) -> dict[str, float]:
        """Compute and memory energy of one report row (per sample, summed over time steps).

        Args:
            row: a :class:`~snnprune.analysis.report.Report` row with its ``access`` counts.
            spiking: whether the model is an SNN (an ANN writes its output activations).

        Returns:
            ``energy_compute_pj``, ``energy_weights_pj``, ``energy_index_pj``, ``energy_potential_pj``,
            ``energy_activations_pj`` (spike or activation reads and writes), ``energy_memory_pj`` and
            ``energy_pj`` (compute + memory).
        """
        a = row.get("access") or {}
        out = dict.fromkeys(
            (
                "energy_compute_pj",
                "energy_weights_pj",
                "energy_index_pj",
                "energy_potential_pj",
                "energy_activations_pj",
            ),
            0.0,
        )
        kind = row.get("kind")
        if kind in ("conv", "linear"):
            macs_x = a.get("macs", 0.0)
            z = 1.0
            if self.zero_skipping and macs_x > 0:
                z = a.get("nonzero_input_macs", macs_x) / macs_x
            out["energy_compute_pj"] = self.energy_pj(
                sops=row.get("sops") or 0.0, macs=(row.get("macs") or 0.0) * z
            )
            if self.has_memory:
                self._synaptic_memory(a, spiking, z, out)
        elif kind == "neuron" and self.has_memory:
            steps = a.get("neuron_steps", 0.0)
            neurons = a.get("neurons", 0)
            pb = self.potential_bits
            out["energy_potential_pj"] = 2 * steps * pb * self.bit_pj(neurons * pb)
            if self.spike_format == "aer":
                out["energy_activations_pj"] = (
                    a.get("spikes", 0.0) * self.event_bits * self.bit_pj(8 * self.fifo_bytes)
                )
            else:
                out["energy_activations_pj"] = steps * self.bit_pj(neurons)
        elif kind == "norm" and row.get("macs"):
            out["energy_compute_pj"] = self.energy_pj(macs=row["macs"])
        mem = (
            out["energy_weights_pj"]
            + out["energy_index_pj"]
            + out["energy_potential_pj"]
            + out["energy_activations_pj"]
        )
        out["energy_memory_pj"] = mem
        out["energy_pj"] = out["energy_compute_pj"] + mem
        return out

    def _synaptic_memory(self, a: dict[str, Any], spiking: bool, z: float, out: dict[str, float]) -> None:
        numel, nnz = a.get("weight_params", 0), a.get("weight_nonzero", 0)
        w_bit = self.bit_pj(self.weight_memory_bits(numel, nnz))
        wb, pb, ab = self.weight_bits, self.potential_bits, self.activation_bits
        fmt = self.weight_format
        # event-driven part (spike / count inputs)
        sops, dense_sops = a.get("sops", 0.0), a.get("dense_sops", 0.0)
        w_ev = dense_sops if fmt == "dense" else sops
        idx_ev = sops * self.index_bits if fmt == "csr" else (dense_sops if fmt == "bitmask" else 0.0)
        # MAC part (real-valued inputs, ANN)
        macs, dense_real = a.get("macs", 0.0) * z, a.get("dense_macs_real", 0.0) * z
        w_mac = dense_real if fmt == "dense" else macs
        idx_mac = macs * self.index_bits if fmt == "csr" else (dense_real if fmt == "bitmask" else 0.0)
        out["energy_weights_pj"] = (w_ev + w_mac) * wb * w_bit
        out["energy_index_pj"] = (idx_ev + idx_mac) * w_bit
        out_step = a.get("out_step_elems", 0)
        if self.potential_per_sop:
            out["energy_potential_pj"] = 2 * w_ev * pb * self.bit_pj(out_step * pb)
        in_step = a.get("in_step_elems", 0)
        if self.spike_format == "aer":
            act = a.get("in_events", 0.0) * self.event_bits * self.bit_pj(8 * self.fifo_bytes)
        else:
            act = a.get("in_elems", 0.0) * self.bit_pj(in_step)
        real_reads = w_mac if self.mac_input_reads == "per_mac" else a.get("real_in_elems", 0.0) * z
        act += real_reads * ab * self.bit_pj(in_step * ab)
        if not spiking:
            act += a.get("out_elems", 0.0) * ab * self.bit_pj(out_step * ab)
        out["energy_activations_pj"] = act

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (stored in the report)."""
        d = asdict(self)
        d["sram_pj"] = [list(p) for p in self.sram_pj]
        return d

    def __str__(self) -> str:
        text = f"{self.name}: {self.e_mac_pj:g} pJ/MAC, {self.e_ac_pj:g} pJ/AC"
        if self.has_memory:
            text += (
                f", SRAM by size, {self.weight_bits}-bit {self.weight_format} weights, "
                f"{self.potential_bits}-bit potentials, {self.spike_format} spikes"
            )
        return f"{text} ({self.source})"


_MEMORY_PRESETS = {
    "lemaire": EnergyModel.lemaire,
    "yan-neuromorphic": EnergyModel.yan_neuromorphic,
    "yan-accelerator": EnergyModel.yan_accelerator,
}
