"""``compare(ann=..., snn=...)``: ANN vs SNN side by side (params, sparsity, MACs vs SOPs, energy),
the fair baselines (the ANN twin at FP32 and the equivalent quantized ANN) and the break-even firing rate."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import replace
from typing import Any

from .energy import EnergyModel, add_pj, mult_pj, quantized_activation_bits
from .report import Report, format_count, format_energy, price_row

__all__ = ["Comparison", "ann_baselines", "break_even", "compare", "energy_at_rate"]

_METRICS: tuple[tuple[str, str], ...] = (
    ("params", "count"),
    ("nonzero_params", "count"),
    ("sparsity", "pct"),
    ("model_sparsity", "pct"),
    ("dense_macs", "count"),
    ("macs", "count"),
    ("sops", "count"),
    ("energy_pj", "energy"),
    ("dense_energy_pj", "energy"),
    ("firing_rate", "rate"),
    ("time_steps", "count"),
)


def _as_report(r: Report | dict[str, Any], which: str) -> Report:
    if isinstance(r, Report):
        return r
    if isinstance(r, dict):
        return Report.from_dict(r)
    raise ValueError(f"{which} must be a Report or its to_dict(), got {type(r).__name__}")


def _fmt(value: Any, how: str) -> str:
    if value is None:
        return "-"
    if how == "pct":
        return f"{100 * value:.1f}%"
    if how == "energy":
        return format_energy(value)
    if how == "rate":
        return f"{value:.4f}"
    return format_count(value)


class Comparison:
    """Result of :func:`compare`.

    Attributes:
        metrics: ``{metric: {"ann": value, "snn": value, "ratio": ann / snn or None}}`` over the totals.
        layers: per-layer rows for synaptic layers present in both reports (matched by name):
            ``name``, ``ann_macs``, ``snn_sops``, ``snn_macs``, ``ann_energy_pj``, ``snn_energy_pj``,
            ``energy_ratio``.
        energy_ratio: ANN energy / SNN energy per sample (> 1 means the SNN is cheaper).
        baselines: :func:`ann_baselines` under ``energy`` (None without it).
        break_even: :func:`break_even` under ``energy`` (None without it).

    Args:
        ann: the ANN report.
        snn: the SNN report.
        energy: the preset of the fair baselines, or None.
        weight_bits: weight width of the quantized ANN.
        activation_bits: activation width of the quantized ANN (default ``ceil(log2(T + 1))``).
    """

    def __init__(
        self,
        *,
        ann: Report,
        snn: Report,
        energy: EnergyModel | None = None,
        weight_bits: int = 8,
        activation_bits: int | None = None,
    ) -> None:
        self.ann = ann
        self.snn = snn
        self.metrics: dict[str, dict[str, Any]] = {}
        for key, _ in _METRICS:
            a, s = ann.totals.get(key), snn.totals.get(key)
            ratio = a / s if isinstance(a, int | float) and isinstance(s, int | float) and s else None
            self.metrics[key] = {"ann": a, "snn": s, "ratio": ratio}
        self.energy_ratio: float | None = self.metrics["energy_pj"]["ratio"]
        snn_rows = {r["name"]: r for r in snn.layers if r["kind"] in ("conv", "linear")}
        self.layers: list[dict[str, Any]] = []
        for r in ann.layers:
            s = snn_rows.get(r["name"])
            if r["kind"] not in ("conv", "linear") or s is None:
                continue
            ae, se = r["energy_pj"] or 0.0, s["energy_pj"] or 0.0
            self.layers.append(
                {
                    "name": r["name"],
                    "ann_macs": r["macs"],
                    "snn_sops": s["sops"],
                    "snn_macs": s["macs"],
                    "ann_energy_pj": ae,
                    "snn_energy_pj": se,
                    "energy_ratio": ae / se if se else None,
                }
            )
        self.baselines: dict[str, Any] | None = None
        self.break_even: dict[str, Any] | None = None
        if energy is not None:
            options = {"energy": energy, "weight_bits": weight_bits, "activation_bits": activation_bits}
            self.baselines = ann_baselines(ann=ann, snn=snn, **options)
            self.break_even = break_even(ann=ann, snn=snn, **options)

    def to_dict(self) -> dict[str, Any]:
        """``{"metrics": ..., "energy_ratio": ..., "layers": ..., "energy_models": {...}}``."""
        return {
            "metrics": {k: dict(v) for k, v in self.metrics.items()},
            "energy_ratio": self.energy_ratio,
            "layers": [dict(r) for r in self.layers],
            "energy_models": {
                "ann": self.ann.meta.get("energy_model"),
                "snn": self.snn.meta.get("energy_model"),
            },
            "baselines": copy.deepcopy(self.baselines),
            "break_even": copy.deepcopy(self.break_even),
        }

    def to_json(self, path: str | os.PathLike[str]) -> str:
        """Write :meth:`to_dict` as JSON and return the path."""
        path = os.fspath(path)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
        return path

    def __str__(self) -> str:
        rows = [("metric", "ANN", "SNN", "ANN/SNN")]
        for key, how in _METRICS:
            m = self.metrics[key]
            ratio = "-" if m["ratio"] is None else f"{m['ratio']:.2f}x"
            rows.append((key, _fmt(m["ann"], how), _fmt(m["snn"], how), ratio))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        er = "-" if self.energy_ratio is None else f"{self.energy_ratio:.2f}x"
        lines.append(
            f"energy ratio ANN/SNN per sample: {er} ({self.ann.energy_model.name} vs {self.snn.energy_model.name})"
        )
        if self.baselines is not None:
            b = self.baselines
            lines.append(f"energy model {b['energy_model']}: SNN {_split(b['snn'])}")
            for key in ("ann_fp32", "ann_quantized"):
                lines.append(f"  {b[key]['label']}: {_split(b[key])} -> {b[key]['verdict']}")
        if self.break_even is not None:
            o = self.break_even["overall"]
            lines.append(
                f"break-even firing rate vs the quantized ANN: {_rate(o['break_even_rate'])} "
                f"(measured {_rate(o['measured_rate'])}; the SNN wins below it)"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Comparison(energy_ratio={self.energy_ratio!r}, layers={len(self.layers)})"


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _split(e: dict[str, Any]) -> str:
    return (
        f"{format_energy(e['energy_pj'])} (compute {format_energy(e['energy_compute_pj'])}, "
        f"memory {format_energy(e['energy_memory_pj'])})"
    )


def _verdict(snn_pj: float, ann_pj: float) -> tuple[str, float | None]:
    if snn_pj <= 0 or ann_pj <= 0:
        return "no energy to compare", None
    if snn_pj < ann_pj:
        return f"SNN wins by {ann_pj / snn_pj:.2f}x", ann_pj / snn_pj
    if snn_pj > ann_pj:
        return f"ANN wins by {snn_pj / ann_pj:.2f}x", snn_pj / ann_pj
    return "tie", 1.0


def _quantized_models(
    energy: EnergyModel, snn: Report, weight_bits: int, activation_bits: int | None
) -> tuple[EnergyModel, EnergyModel, int]:
    """(FP32 twin model, quantized ANN model, activation bits) derived from the preset ``energy``."""
    if not isinstance(weight_bits, int) or isinstance(weight_bits, bool) or weight_bits < 1:
        raise ValueError(f"compare: weight_bits must be a positive int, got {weight_bits!r}")
    t = int(snn.totals.get("time_steps") or 1)
    ab = quantized_activation_bits(t) if activation_bits is None else activation_bits
    if not isinstance(ab, int) or isinstance(ab, bool) or ab < 1:
        raise ValueError(f"compare: activation_bits must be a positive int or None, got {activation_bits!r}")
    fp32 = replace(
        energy,
        e_mac_pj=EnergyModel.fp32().e_mac_pj,
        e_ac_pj=EnergyModel.fp32().e_ac_pj,
        weight_bits=32,
        activation_bits=32,
        zero_skipping=False,
        name=f"{energy.name}/ann-fp32",
    )
    quant = replace(
        energy,
        e_mac_pj=mult_pj(ab, weight_bits) + add_pj(energy.potential_bits),
        weight_bits=weight_bits,
        activation_bits=ab,
        zero_skipping=True,
        name=f"{energy.name}/ann-a{ab}w{weight_bits}",
    )
    return fp32, quant, ab


def _summary(report: Report) -> dict[str, float]:
    t = report.totals
    return {k: float(t.get(k) or 0.0) for k in ("energy_pj", "energy_compute_pj", "energy_memory_pj")}


def ann_baselines(
    *,
    ann: Report | dict[str, Any],
    snn: Report | dict[str, Any],
    energy: EnergyModel | str | None = None,
    weight_bits: int = 8,
    activation_bits: int | None = None,
) -> dict[str, Any]:
    """Energy of the SNN, its ANN twin at FP32 and the equivalent quantized ANN, under one preset.

    The quantized ANN has ``ceil(log2(T + 1))``-bit activations (T of the SNN; or ``activation_bits``),
    ``weight_bits``-bit weights, a MAC of ``mult_pj(a, w) + add_pj(potential_bits)`` and charges only the
    MACs whose input is non-zero (the activation sparsity measured by ``analyze`` on the same data). The
    FP32 twin uses 4.6 pJ per MAC, 32-bit weights and activations and no zero skipping. Memory terms use
    the preset's SRAM costs and formats for all three.

    Args:
        ann: report of the ANN twin (same layer names as the SNN).
        snn: report of the SNN.
        energy: the preset (an :class:`EnergyModel` or a name); ``None`` = the SNN report's model.
        weight_bits: weight width of the quantized ANN.
        activation_bits: activation width of the quantized ANN; default ``ceil(log2(T + 1))``.

    Returns:
        ``{"energy_model", "snn", "ann_fp32", "ann_quantized", "activation_bits", "weight_bits"}``; each
        entry holds ``energy_pj``, ``energy_compute_pj``, ``energy_memory_pj`` and, for the ANNs, a
        ``label``, the ``winner`` (``"snn"``/``"ann"``), the ``factor`` and a printable ``verdict``.
    """
    ann, snn = _as_report(ann, "ann"), _as_report(snn, "snn")
    model = snn.energy_model if energy is None else EnergyModel.resolve(energy)
    fp32, quant, ab = _quantized_models(model, snn, weight_bits, activation_bits)
    snn_e = _summary(snn.with_energy(model))
    out: dict[str, Any] = {
        "energy_model": model.name,
        "snn": snn_e,
        "activation_bits": ab,
        "weight_bits": weight_bits,
    }
    for key, m, label in (
        ("ann_fp32", fp32, "ANN twin, FP32"),
        (
            "ann_quantized",
            quant,
            f"quantized ANN, {ab}-bit activations, {weight_bits}-bit weights, measured activation sparsity",
        ),
    ):
        e = _summary(ann.with_energy(m))
        verdict, factor = _verdict(snn_e["energy_pj"], e["energy_pj"])
        winner = None if factor is None else ("snn" if snn_e["energy_pj"] < e["energy_pj"] else "ann")
        out[key] = {**e, "label": label, "verdict": verdict, "winner": winner, "factor": factor}
    return out


def _scale_events(row: dict[str, Any], s: float) -> dict[str, Any]:
    """A copy of an SNN row whose event-driven counts (SOPs, input events, spikes) are scaled by ``s``."""
    r = copy.deepcopy(row)
    a = r.get("access")
    if a is None:
        return r
    if r["kind"] in ("conv", "linear"):
        for k in ("sops", "dense_sops", "in_events"):
            a[k] = a.get(k, 0.0) * s
        r["sops"] = (r.get("sops") or 0.0) * s
    elif r["kind"] == "neuron":
        a["spikes"] = a.get("spikes", 0.0) * s
    return r


def _row_pj(row: dict[str, Any], model: EnergyModel, spiking: bool, t: int) -> float:
    r = copy.deepcopy(row)
    price_row(r, model, spiking, t)
    return float(r.get("energy_pj") or 0.0)


def energy_at_rate(
    snn: Report | dict[str, Any], rate: float, energy: EnergyModel | str | None = None
) -> float:
    """Predicted SNN energy per sample (pJ) if every layer fired ``rate / measured rate`` times as much.

    Every event-driven count (SOPs, input events, spikes) is scaled by the same factor; MACs, per-step
    potential updates and spike maps do not depend on the rate. The prediction is exact for layers whose
    fan-out is the same for every input (linear layers) and the first-order model of the break-even rate
    otherwise.

    Args:
        snn: the SNN report (with its measured ``totals["firing_rate"]``).
        rate: the firing rate (spikes per neuron per step).
        energy: the preset; ``None`` = the report's model.

    Returns:
        Energy in pJ per sample.
    """
    snn = _as_report(snn, "snn")
    model = snn.energy_model if energy is None else EnergyModel.resolve(energy)
    measured = snn.totals.get("firing_rate")
    if not measured:
        raise ValueError("energy_at_rate: the SNN report has no measured firing rate (no spiking neurons)")
    s = float(rate) / measured
    t = max(int(snn.totals["time_steps"]), 1)
    return sum(_row_pj(_scale_events(r, s), model, True, t) for r in snn.layers)


def break_even(
    *,
    ann: Report | dict[str, Any],
    snn: Report | dict[str, Any],
    energy: EnergyModel | str | None = None,
    weight_bits: int = 8,
    activation_bits: int | None = None,
) -> dict[str, Any]:
    """The firing rate below which the SNN uses less energy than the equivalent quantized ANN.

    The SNN energy is linear in its event counts: :math:`E(r) = E_0 + (E_1 - E_0) \\, r / r_m`, with
    :math:`E_1` the measured energy at the measured rate :math:`r_m` and :math:`E_0` the energy with no
    events (MACs, per-step potential updates, spike maps). The break-even rate solves
    :math:`E(r^*) = E_{QANN}`: :math:`r^* = r_m (E_{QANN} - E_0) / (E_1 - E_0)`, clamped at 0 (the SNN
    never wins). Per layer: each synaptic layer fed with spikes against the same-named ANN layer, with the
    layer's input rate; overall: every row (neurons included), with the neuron-weighted mean rate.

    Args:
        ann: the ANN twin's report on the same data (its activation sparsity is used).
        snn: the SNN report.
        energy: the preset; ``None`` = the SNN report's model.
        weight_bits: weight width of the quantized ANN.
        activation_bits: activation width of the quantized ANN; default ``ceil(log2(T + 1))``.

    Returns:
        ``{"overall": {...}, "layers": [...]}``; each has ``measured_rate``, ``break_even_rate``,
        ``snn_energy_pj`` (measured), ``snn_energy_zero_pj`` (:math:`E_0`), ``qann_energy_pj`` and
        ``wins`` (measured rate below the break-even rate); layers also have ``name``.
    """
    ann, snn = _as_report(ann, "ann"), _as_report(snn, "snn")
    model = snn.energy_model if energy is None else EnergyModel.resolve(energy)
    _, quant, _ = _quantized_models(model, snn, weight_bits, activation_bits)
    q = ann.with_energy(quant)
    t = max(int(snn.totals["time_steps"]), 1)

    def solve(e0: float, e1: float, eq: float, rate: float | None) -> float | None:
        if not rate:
            return None  # no measured events: nothing to scale
        if e1 <= e0:
            return None if eq <= e0 else float("inf")
        return max(0.0, rate * (eq - e0) / (e1 - e0))

    q_rows = {r["name"]: r for r in q.layers}
    layers = []
    for row in snn.layers:
        qr = q_rows.get(row["name"])
        if (
            row["kind"] not in ("conv", "linear")
            or qr is None
            or row.get("input") not in ("spikes", "counts")
        ):
            continue
        e1 = _row_pj(row, model, True, t)
        e0 = _row_pj(_scale_events(row, 0.0), model, True, t)
        eq = float(qr.get("energy_pj") or 0.0)
        r_star = solve(e0, e1, eq, row["firing_rate"])
        layers.append(
            {
                "name": row["name"],
                "measured_rate": row["firing_rate"],
                "break_even_rate": r_star,
                "snn_energy_pj": e1,
                "snn_energy_zero_pj": e0,
                "qann_energy_pj": eq,
                "wins": r_star is not None and row["firing_rate"] < r_star,
            }
        )
    rate = snn.totals.get("firing_rate")
    e1 = sum(_row_pj(r, model, True, t) for r in snn.layers)
    e0 = sum(_row_pj(_scale_events(r, 0.0), model, True, t) for r in snn.layers)
    eq = float(q.totals["energy_pj"])
    r_star = solve(e0, e1, eq, rate)
    overall = {
        "measured_rate": rate,
        "break_even_rate": r_star,
        "snn_energy_pj": e1,
        "snn_energy_zero_pj": e0,
        "qann_energy_pj": eq,
        "wins": r_star is not None and rate is not None and rate < r_star,
    }
    return {"energy_model": model.name, "quantized_model": quant.name, "overall": overall, "layers": layers}


def compare(
    *,
    ann: Report | dict[str, Any],
    snn: Report | dict[str, Any],
    energy: EnergyModel | str | None = None,
    weight_bits: int = 8,
    activation_bits: int | None = None,
) -> Comparison:
    """Put an ANN report and an SNN report side by side.

    The energy ratio is

    .. math::

        \\frac{E_{ANN}}{E_{SNN}} = \\frac{E_{MAC} \\cdot \\mathrm{MACs}_{ANN}}
        {E_{AC} \\cdot \\mathrm{SOPs}_{SNN} + E_{MAC} \\cdot \\mathrm{MACs}_{SNN}}

    with the effective (non-zero weight) MACs of each report, per sample.

    With ``energy`` (a preset such as ``"yan-accelerator"``), the comparison also prices, under that one
    preset, the SNN, its ANN twin at FP32 and the equivalent quantized ANN (``ceil(log2(T+1))``-bit
    activations, ``weight_bits``-bit weights, the activation sparsity measured on the same data), prints
    which one wins and by how much (:func:`ann_baselines`) and the break-even firing rate
    (:func:`break_even`).

    Args:
        ann: :func:`snnprune.analyze` report (or its ``to_dict()``) of the ANN.
        snn: report of the SNN (e.g. the SEW twin of the ANN).
        energy: preset for the fair baselines; ``None`` keeps the plain side-by-side comparison.
        weight_bits: weight width of the quantized ANN.
        activation_bits: activation width of the quantized ANN; default ``ceil(log2(T + 1))``.

    Returns:
        A :class:`Comparison` (``print`` it, ``to_dict()``, ``energy_ratio``, ``baselines``,
        ``break_even``).
    """
    ann, snn = _as_report(ann, "ann"), _as_report(snn, "snn")
    model = None if energy is None else EnergyModel.resolve(energy)
    return Comparison(
        ann=ann, snn=snn, energy=model, weight_bits=weight_bits, activation_bits=activation_bits
    )
