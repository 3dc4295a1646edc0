"""``compare(ann_report, snn_report)``: ANN vs SNN side by side (params, sparsity, MACs vs SOPs, energy)."""

from __future__ import annotations

import json
import os
from typing import Any

from .report import Report, format_count, format_energy

__all__ = ["Comparison", "compare"]

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
    """

    def __init__(self, ann: Report, snn: Report) -> None:
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
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Comparison(energy_ratio={self.energy_ratio!r}, layers={len(self.layers)})"


def compare(ann_report: Report | dict[str, Any], snn_report: Report | dict[str, Any]) -> Comparison:
    """Put an ANN report and an SNN report side by side.

    The energy ratio is

    .. math::

        \\frac{E_{ANN}}{E_{SNN}} = \\frac{E_{MAC} \\cdot \\mathrm{MACs}_{ANN}}
        {E_{AC} \\cdot \\mathrm{SOPs}_{SNN} + E_{MAC} \\cdot \\mathrm{MACs}_{SNN}}

    with the effective (non-zero weight) MACs of each report, per sample.

    Args:
        ann_report: :func:`snnprune.analyze` report (or its ``to_dict()``) of the ANN.
        snn_report: report of the SNN (e.g. the SEW twin of the ANN).

    Returns:
        A :class:`Comparison` (``print`` it, ``to_dict()``, ``energy_ratio``).
    """
    return Comparison(_as_report(ann_report, "ann_report"), _as_report(snn_report, "snn_report"))
