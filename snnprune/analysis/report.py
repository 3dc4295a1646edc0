"""The :class:`Report` returned by :func:`snnprune.analyze`: rows per layer, totals, table, JSON/CSV, plot."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
from collections.abc import Iterable
from typing import Any

from .energy import EnergyModel

__all__ = [
    "CONVENTIONS",
    "CSV_COLUMNS",
    "Report",
    "build_report",
    "format_count",
    "format_energy",
    "price_row",
]

#: Column order of :meth:`Report.to_csv` (rows may hold ``None`` = not applicable -> empty cell).
CSV_COLUMNS: tuple[str, ...] = (
    "name",
    "kind",
    "params",
    "nonzero_params",
    "sparsity",
    "neuron_sparsity",
    "firing_rate",
    "sops",
    "macs",
    "dense_macs",
    "energy_pj",
    "energy_compute_pj",
    "energy_memory_pj",
    "sops_per_step",
    "macs_per_step",
    "energy_pj_per_step",
    "input",
    "neurons",
    "spikes",
    "calls",
)

_SUMMED = ("params", "nonzero_params", "sops", "macs", "dense_macs", "energy_pj")


def format_count(x: float | None) -> str:
    """Human-readable count: ``1234567 -> '1.23M'``; ``None -> '-'``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    ax = abs(x)
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if ax >= scale:
            return f"{x / scale:.2f}{suffix}"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.3g}"


def format_energy(pj: float | None) -> str:
    """Human-readable energy from picojoules: ``2.5e6 -> '2.50 µJ'``."""
    if pj is None:
        return "-"
    for scale, unit in ((1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if abs(pj) >= scale:
            return f"{pj / scale:.2f} {unit}"
    return f"{pj:.2f} pJ"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:.2e}"


#: Counting conventions of :func:`snnprune.analyze` (documented rule by rule in ``snnprune/docs/energy.md``).
CONVENTIONS: tuple[str, ...] = ("ours", "spikingjelly", "syops", "neurobench")

_ENERGY_KEYS = (
    "energy_compute_pj",
    "energy_weights_pj",
    "energy_index_pj",
    "energy_potential_pj",
    "energy_activations_pj",
    "energy_memory_pj",
)


def _convention_counts(raw: dict[str, Any], convention: str, t: int, first_real: bool) -> tuple[float, float]:
    """(SOPs, MACs) of one synaptic row, summed over the samples, under ``convention``."""
    if convention == "spikingjelly":
        return raw["binary_dense_sops"], raw["nonbinary_macs"]
    if convention == "syops":
        macs = raw["nonbinary_macs"]
        if first_real:
            macs *= t  # the encoding layer runs on the input repeated T times
        return raw["syops_acs"], macs
    if convention == "neurobench":
        return raw["nb_acs"], raw["nb_macs"]
    return raw["sops"], raw["macs"]


#: Operations per membrane update of an IF, LIF or PLIF neuron: NeuroBench 2.3.0's entry for snnTorch's
#: ``Leaky`` (``metrics/workload/neuron_operations.py``: ``"Leaky": {"subtract": 4, "zero": 4}``), the
#: snnTorch neuron with the same equations (IF is ``Leaky`` with ``beta=1``); see docs/analyze.md.
NEURON_OPS_PER_UPDATE = 4


def price_row(row: dict[str, Any], energy: EnergyModel, spiking: bool, t: int) -> None:
    """Fill the energy columns of one :class:`Report` row, in place, from its counts and ``access`` record.

    Energy applies to synaptic rows (``conv``, ``linear``), to neuron rows with an ``access`` record when
    ``energy`` charges memory, and to norm rows with MACs; the energy columns of any other row are set to
    None.

    Args:
        row: a report row (e.g. a copy of ``report.layers[i]`` with scaled counts).
        energy: the energy model that prices it.
        spiking: whether the model is an SNN (see :meth:`EnergyModel.row_energy`).
        t: time steps (for ``energy_pj_per_step``).
    """
    if row["kind"] == "product":  # compute only: the operands' memory traffic is not priced
        for k in _ENERGY_KEYS:
            row[k] = None
        row["energy_compute_pj"] = row["energy_pj"] = energy.energy_pj(sops=row["sops"], macs=row["macs"])
        row["energy_pj_per_step"] = row["energy_pj"] / t
        return
    applies = (
        row["kind"] in ("conv", "linear")
        or (energy.has_memory and row["kind"] == "neuron" and "access" in row)
        or (row["kind"] == "norm" and row.get("macs") is not None)
    )
    if not applies:
        for k in (*_ENERGY_KEYS, "energy_pj"):
            row[k] = None
        return
    e = energy.row_energy(row, spiking)
    row.update({k: e[k] for k in _ENERGY_KEYS})
    row["energy_pj"] = e["energy_pj"]
    row["energy_pj_per_step"] = e["energy_pj"] / t


def build_report(
    raw_rows: list[dict[str, Any]],
    meta: dict[str, Any],
    energy: EnergyModel,
    convention: str = "ours",
) -> Report:
    """Normalise the raw accumulators of :class:`~snnprune.analysis.counting.Collector` into a Report.

    Args:
        raw_rows: rows of :meth:`Collector.finish` (sums over all forward calls).
        meta: ``samples``, ``time_steps`` and the other run facts.
        energy: the energy model used for ``energy_pj``.
        convention: ``"ours"``, ``"spikingjelly"``, ``"syops"`` or ``"neurobench"``: which rules give
            ``sops`` and ``macs`` (and, for ``"neurobench"``, ``dense_macs``: NeuroBench's Dense).
    """
    samples = max(int(meta["samples"]), 1)
    t = max(int(meta["time_steps"]), 1)
    spiking = bool(meta.get("spiking", True))
    syn = [r for r in raw_rows if "sops" in r and r.get("calls")]
    first = min(syn, key=lambda r: r["order"]) if syn else None
    layers: list[dict[str, Any]] = []
    for raw in raw_rows:
        row: dict[str, Any] = {
            "name": raw["name"],
            "kind": raw["kind"],
            "params": raw["params"],
            "nonzero_params": raw["nonzero_params"],
            "sparsity": None,
            "firing_rate": None,
            "sops": None,
            "macs": None,
            "dense_macs": None,
            "energy_pj": None,
        }
        if "sops" in raw:
            first_real = raw is first and raw["real_calls"] == raw["calls"] and raw["batch_calls"] == 1
            sops_c, macs_c = _convention_counts(raw, convention, t, first_real)
            sops = sops_c / samples
            macs = macs_c / samples
            calls = raw["calls"]
            if calls == 0:
                kind_in = None
            elif not spiking:
                kind_in = "ann"
            elif raw["real_calls"] == calls:
                kind_in = "real"
            elif raw["real_calls"] > 0:
                kind_in = "mixed"
            else:
                kind_in = "spikes" if raw["max_in"] <= 1 else "counts"
            row.update(
                sparsity=1.0 - raw["weight_nonzero"] / raw["weight_numel"] if raw["weight_numel"] else 0.0,
                firing_rate=raw["in_events"] / raw["in_elems"] if raw["in_elems"] > 0 else None,
                sops=sops,
                macs=macs,
                dense_macs=(raw["nb_dense"] if convention == "neurobench" else raw["dense_macs"]) / samples,
                sops_per_step=sops / t,
                macs_per_step=macs / t,
                input=kind_in,
                calls=calls,
                weight_params=raw["weight_numel"],
                weight_nonzero=raw["weight_nonzero"],
                access={
                    "sops": raw["sops"] / samples,
                    "dense_sops": raw["dense_sops"] / samples,
                    "macs": raw["macs"] / samples,
                    "dense_macs_real": raw["dense_macs_real"] / samples,
                    "nonzero_input_macs": raw["nonzero_input_macs"] / samples,
                    "in_events": raw["in_events"] / samples,
                    "in_elems": raw["in_elems"] / samples,
                    "real_in_elems": raw["real_in_elems"] / samples,
                    "out_elems": raw["out_numel"] / samples,
                    "in_step_elems": raw["in_step_elems"],
                    "out_step_elems": raw["out_step_elems"],
                    "weight_params": raw["weight_numel"],
                    "weight_nonzero": raw["weight_nonzero"],
                    "order": raw["order"],
                },
            )
            if not spiking and raw["macs"] > 0:
                row["input_density"] = raw["nonzero_input_macs"] / raw["macs"]
        if "spikes" in raw:
            row.update(
                firing_rate=raw["spikes"] / raw["elems"] if raw["elems"] else None,
                neurons=raw["neurons"],
                neuron_sparsity=raw["masked"] / raw["neurons"] if raw["neurons"] else None,
                spikes=raw["spikes"] / samples,
                access={
                    "neuron_steps": raw["elems"] / samples,
                    "neurons": raw["neurons"],
                    "spikes": raw["spikes"] / samples,
                },
            )
            if "mem_updates" in raw:
                row.update(
                    membrane_updates=raw["mem_updates"] / samples,
                    neuron_ops=raw["mem_updates"] * NEURON_OPS_PER_UPDATE / samples,
                    neuron_dense_ops=raw["elems"] * NEURON_OPS_PER_UPDATE / samples,
                )
        if "nonzero_out" in raw:
            row.update(
                activation_sparsity=1.0 - raw["nonzero_out"] / raw["elems"] if raw["elems"] else None,
                nonzero_out=raw["nonzero_out"] / samples,
                activations=raw["elems"] / samples,
            )
        if raw["kind"] == "product":
            sops_c, macs_c = {
                "ours": (raw["product_sops"], raw["product_macs"]),
                "spikingjelly": (raw["product_sj_sops"], raw["product_sj_macs"]),
            }.get(convention, (0.0, 0.0))  # syops counts registered layer types only
            row.update(
                sops=sops_c / samples,
                macs=macs_c / samples,
                ands=raw["product_ands"] / samples if convention == "ours" else 0.0,
                sops_per_step=sops_c / samples / t,
                macs_per_step=macs_c / samples / t,
                calls=raw["calls"],
            )
        if "norm_macs" in raw and convention == "spikingjelly":
            row.update(macs=raw["norm_macs"] / samples, sops=0.0, calls=raw["calls"])
        price_row(row, energy, spiking, t)
        layers.append(row)
    return Report(layers, _totals(layers, energy, meta), {**meta, "convention": convention})


def _totals(layers: list[dict[str, Any]], energy: EnergyModel, meta: dict[str, Any]) -> dict[str, Any]:
    t = max(int(meta["time_steps"]), 1)
    # the memory breakdown only where memory is charged (compute-only totals stay short)
    keys = (*_SUMMED, *(_ENERGY_KEYS if energy.has_memory else _ENERGY_KEYS[:1] + _ENERGY_KEYS[-1:]))
    totals: dict[str, Any] = {k: sum(r.get(k) or 0 for r in layers) for k in keys}
    w_numel = sum(r.get("weight_params", 0) for r in layers)
    w_nonzero = sum(r.get("weight_nonzero", 0) for r in layers)
    neuron_rows = [r for r in layers if r["kind"] == "neuron" and r["firing_rate"] is not None]
    n_neurons = sum(r["neurons"] for r in neuron_rows)
    active = [r for r in layers if r["kind"] in ("neuron", "activation") and r.get("activations")]
    outputs = sum(r["activations"] for r in active)
    totals.update(
        sparsity=1.0 - w_nonzero / w_numel if w_numel else 0.0,
        model_sparsity=1.0 - totals["nonzero_params"] / totals["params"] if totals["params"] else 0.0,
        firing_rate=(
            sum(r["firing_rate"] * r["neurons"] for r in neuron_rows) / n_neurons if n_neurons else None
        ),
        neurons=n_neurons,
        neuron_sparsity=(
            sum((r["neuron_sparsity"] or 0.0) * r["neurons"] for r in neuron_rows) / n_neurons
            if n_neurons
            else None
        ),
        spikes=sum(r["spikes"] for r in neuron_rows),
        activation_sparsity=(1.0 - sum(r["nonzero_out"] for r in active) / outputs if outputs else None),
        footprint_bytes=meta.get("footprint_bytes"),
        **{
            k: (sum(r[k] for r in neuron_rows if k in r) if any(k in r for r in neuron_rows) else None)
            for k in ("membrane_updates", "neuron_ops", "neuron_dense_ops")
        },
        dense_energy_pj=energy.energy_pj(macs=totals["dense_macs"]),
        sops_per_step=totals["sops"] / t,
        macs_per_step=totals["macs"] / t,
        energy_pj_per_step=totals["energy_pj"] / t,
        samples=int(meta["samples"]),
        time_steps=t,
    )
    return totals


class Report:
    """Per-layer and total statistics of one :func:`snnprune.analyze` run.

    Rows (``report.layers``, dicts) have ``name``, ``kind`` (``conv``, ``linear``, ``neuron``, ``norm``,
    ``product``, ``other``), ``params``, ``nonzero_params`` and, where they apply (else ``None``): ``sparsity`` (zeros
    of the weight), ``firing_rate``, ``sops``, ``macs`` (effective), ``dense_macs``, ``energy_pj``,
    ``*_per_step``, ``input`` (``spikes``/``counts``/``real``/``mixed``/``ann``), ``neurons``, ``spikes``,
    ``neuron_sparsity`` (neuron rows: the fraction of the neurons whose output mask is 0, see
    :mod:`snnprune.output_masks`; 0 without a mask);
    ``product`` rows (a product of two activations, docs/analyze.md) also ``ands``.
    ``sops``/``macs``/``energy_pj`` are per sample, summed over time steps. ``report.totals`` sums the
    additive columns over the rows and adds ``sparsity`` (zeros among all synaptic weights),
    ``model_sparsity`` (zeros among all parameters), ``neuron_sparsity`` (masked neurons among all spiking
    neurons; None without them), ``firing_rate`` (neuron-weighted mean),
    ``dense_energy_pj`` (all dense MACs at E_MAC), ``*_per_step``, ``samples``, ``time_steps``,
    ``activation_sparsity`` (zero outputs / outputs over all spiking neurons and ``nn.ReLU``/``nn.Sigmoid``
    modules, NeuroBench's ActivationSparsity; None without them) and ``footprint_bytes`` (parameters and
    buffers; None in reports written before it existed). Neuron rows and ``activation`` rows (ReLU,
    Sigmoid) have ``activation_sparsity``, ``nonzero_out`` and ``activations`` (non-zero and all outputs per
    sample). With ``analyze(..., membrane=True)`` (the default under ``convention="neurobench"``) neuron rows
    and ``totals`` have NeuroBench's ``membrane_updates``, ``neuron_ops`` (Effective Neuron Ops) and
    ``neuron_dense_ops`` per sample (``None`` in the totals without them).
    ``report.meta`` says which energy model, convention, T and data were used.

    Energy columns (rows where energy applies: synaptic layers; neurons when the model charges memory;
    norm rows under the ``"spikingjelly"`` convention): ``energy_compute_pj``, ``energy_memory_pj`` (=
    ``energy_weights_pj + energy_index_pj + energy_potential_pj + energy_activations_pj``) and
    ``energy_pj`` (their sum). ``row["access"]`` holds the exact per-sample counts the memory terms are
    priced from (SOPs, dense-fan-out SOPs, input events and elements, MACs with a non-zero input...), so
    :meth:`with_energy` can re-price a report. ANN rows have ``input_density`` (MACs with a non-zero
    input / MACs).

    Args:
        layers: row dicts.
        totals: totals dict.
        meta: run facts (``energy_model`` dict, ``time_steps``, ``samples``...).
    """

    def __init__(self, layers: list[dict[str, Any]], totals: dict[str, Any], meta: dict[str, Any]) -> None:
        self.layers = layers
        self.totals = totals
        self.meta = meta

    # ------------------------------------------------------------------ access
    @property
    def energy_model(self) -> EnergyModel:
        """The :class:`EnergyModel` used for ``energy_pj``."""
        return EnergyModel.from_dict(self.meta["energy_model"])

    @property
    def convention(self) -> str:
        """The counting convention of ``sops``/``macs`` (``"ours"`` for reports written before it existed)."""
        return self.meta.get("convention", "ours")

    def with_energy(self, energy: EnergyModel | str | None) -> Report:
        """The same counts priced with another energy model (no model run needed).

        Args:
            energy: an :class:`EnergyModel` or a preset name (``"lemaire"``, ``"yan-accelerator"``...).

        Returns:
            A new :class:`Report` whose energy columns and totals use ``energy``.

        Raises:
            ValueError: when the report has no access counts (written by an older version) and ``energy``
                charges memory.
        """
        model = EnergyModel.resolve(energy)
        layers = copy.deepcopy(self.layers)
        if model.has_memory and any(r["kind"] in ("conv", "linear") and "access" not in r for r in layers):
            raise ValueError(
                "this report has no access counts (written before memory energy existed); "
                "run analyze(model, data, energy=...) again to price memory"
            )
        spiking = bool(self.meta.get("spiking", True))
        t = max(int(self.totals["time_steps"]), 1)
        for row in layers:
            price_row(row, model, spiking, t)
        meta = {**copy.deepcopy(self.meta), "energy_model": model.to_dict()}
        return Report(layers, _totals(layers, model, meta), meta)

    def __getitem__(self, name: str) -> dict[str, Any]:
        for row in self.layers:
            if row["name"] == name:
                return row
        raise KeyError(f"no layer named {name!r} in the report; names: {[r['name'] for r in self.layers]}")

    def __repr__(self) -> str:
        t = self.totals
        return (
            f"Report(layers={len(self.layers)}, sops={format_count(t['sops'])}, "
            f"macs={format_count(t['macs'])}, energy={format_energy(t['energy_pj'])})"
        )

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """``{"layers": [...], "totals": {...}, "meta": {...}}`` (a deep copy, JSON-serialisable)."""
        return {
            "layers": copy.deepcopy(self.layers),
            "totals": copy.deepcopy(self.totals),
            "meta": copy.deepcopy(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        """Rebuild a report from :meth:`to_dict` output (e.g. a run folder's ``analyze.json``)."""
        if not isinstance(d, dict) or "layers" not in d or "totals" not in d:
            raise ValueError("expected a dict with 'layers' and 'totals' (the output of Report.to_dict())")
        meta = d.get("meta") or {"energy_model": EnergyModel().to_dict()}
        return cls(copy.deepcopy(d["layers"]), copy.deepcopy(d["totals"]), copy.deepcopy(meta))

    def to_json(self, path: str | os.PathLike[str]) -> str:
        """Write :meth:`to_dict` as JSON to ``path`` and return the path."""
        path = os.fspath(path)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Report:
        """Load a report written by :meth:`to_json`."""
        if not os.path.exists(path):
            raise FileNotFoundError(f"no report at {os.fspath(path)!r}; write one with Report.to_json(path)")
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_csv(self, path: str | os.PathLike[str]) -> str:
        """Write one line per layer plus a final ``total`` line (columns :data:`CSV_COLUMNS`)."""
        path = os.fspath(path)
        total_row = {"name": "total", "kind": "total", **self.totals}
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
            writer.writeheader()
            for row in [*self.layers, total_row]:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
        return path

    # ------------------------------------------------------------------ table
    def table(self, kinds: Iterable[str] | None = ("conv", "linear", "neuron", "product")) -> str:
        """Per-layer table plus totals; ``kinds=None`` shows every row (norm layers too)."""
        shown = [r for r in self.layers if kinds is None or r["kind"] in set(kinds)]
        memory = self.energy_model.has_memory
        head = ("layer", "kind", "params", "nonzero", "sparsity", "rate", "input", "SOPs", "MACs", "energy")
        if memory:
            head = (*head, "compute", "memory")
        lines = [
            (
                r["name"],
                r["kind"],
                format_count(r["params"]),
                format_count(r["nonzero_params"]),
                _pct(r["sparsity"]),
                _rate(r["firing_rate"]),
                r.get("input") or "-",
                format_count(r["sops"]),
                format_count(r["macs"]),
                format_energy(r["energy_pj"]),
                *(
                    (format_energy(r.get("energy_compute_pj")), format_energy(r.get("energy_memory_pj")))
                    if memory
                    else ()
                ),
            )
            for r in shown
        ]
        t = self.totals
        total = (
            "total",
            "",
            format_count(t["params"]),
            format_count(t["nonzero_params"]),
            _pct(t["sparsity"]),
            _rate(t["firing_rate"]),
            "",
            format_count(t["sops"]),
            format_count(t["macs"]),
            format_energy(t["energy_pj"]),
            *(
                (format_energy(t["energy_compute_pj"]), format_energy(t["energy_memory_pj"]))
                if memory
                else ()
            ),
        )
        widths = [max(len(str(c[i])) for c in [head, *lines, total]) for i in range(len(head))]

        def fmt(cells: tuple) -> str:
            return "  ".join(
                str(c).ljust(w) if i < 2 or i == 6 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        rule = "-" * len(fmt(head))
        hidden = [r for r in self.layers if r not in shown]
        out = [fmt(head), rule, *(fmt(line) for line in lines), rule, fmt(total)]
        if hidden:
            out.append(
                f"(+ {len(hidden)} rows of other kinds with {format_count(sum(r['params'] for r in hidden))} "
                "params, counted in the totals; table(kinds=None) shows them)"
            )
        m = self.meta
        out.append(
            f"per sample, summed over T={t['time_steps']} ({m.get('time_steps_source', '?')}); "
            f"per step: SOPs {format_count(t['sops_per_step'])}, MACs {format_count(t['macs_per_step'])}, "
            f"energy {format_energy(t['energy_pj_per_step'])}"
        )
        out.append(
            f"model sparsity {_pct(t['model_sparsity'])}; neuron sparsity {_pct(t.get('neuron_sparsity'))}; "
            f"dense MACs {format_count(t['dense_macs'])} "
            f"({format_energy(t['dense_energy_pj'])} if dense); {t['samples']} samples in "
            f"{m.get('batches', '?')} batches; energy model {self.energy_model}"
        )
        if t.get("membrane_updates") is not None:
            out.append(
                f"membrane updates {format_count(t['membrane_updates'])}, neuron ops "
                f"{format_count(t['neuron_ops'])} (dense {format_count(t['neuron_dense_ops'])}) per sample"
            )
        if self.convention != "ours" or memory:
            out.append(
                f"convention {self.convention}; energy = compute {format_energy(t.get('energy_compute_pj'))} + "
                f"memory {format_energy(t.get('energy_memory_pj'))} (weights "
                f"{format_energy(t.get('energy_weights_pj', 0.0))}, index {format_energy(t.get('energy_index_pj', 0.0))}, "
                f"potentials {format_energy(t.get('energy_potential_pj', 0.0))}, spikes/activations "
                f"{format_energy(t.get('energy_activations_pj', 0.0))})"
            )
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()

    def summary(self) -> str:
        """One line of totals (what the training scripts print at the end of a run)."""
        t = self.totals
        rate = "" if t["firing_rate"] is None else f", firing rate {_rate(t['firing_rate'])}"
        return (
            f"SOPs {format_count(t['sops'])}, MACs {format_count(t['macs'])} "
            f"(dense {format_count(t['dense_macs'])}), energy {format_energy(t['energy_pj'])} per sample "
            f"({self.energy_model.name}), sparsity {_pct(t['sparsity'])}, "
            f"neuron sparsity {_pct(t.get('neuron_sparsity'))}, "
            f"nonzero params {format_count(t['nonzero_params'])}/{format_count(t['params'])}{rate}"
        )

    # ------------------------------------------------------------------ plot
    def plot(self, figsize: tuple[float, float] | None = None) -> Any:
        """Per-layer weight sparsity, firing rate and share of the energy as three bar charts.

        Args:
            figsize: matplotlib figure size; default grows with the number of layers.

        Returns:
            A ``matplotlib.figure.Figure`` (created without pyplot, so it works on headless machines;
            ``fig.savefig(path)`` to write it).
        """
        from matplotlib.figure import Figure

        syn = [r for r in self.layers if r["kind"] in ("conv", "linear")]
        neu = [r for r in self.layers if r["kind"] == "neuron"]
        n = max(len(syn), len(neu), 1)
        fig = Figure(figsize=figsize or (13.0, 1.5 + 0.22 * n), layout="constrained")
        axes = fig.subplots(1, 3)
        total_e = self.totals["energy_pj"] or 1.0
        panels = (
            (axes[0], syn, [100 * (r["sparsity"] or 0) for r in syn], "weight sparsity (%)", "tab:blue"),
            (
                axes[1],
                neu,
                [r["firing_rate"] or 0 for r in neu],
                "firing rate (spikes/neuron/step)",
                "tab:red",
            ),
            (
                axes[2],
                syn,
                [100 * (r["energy_pj"] or 0) / total_e for r in syn],
                "energy share (%)",
                "tab:green",
            ),
        )
        for ax, rows, values, title, color in panels:
            names = [r["name"] for r in rows]
            ax.barh(range(len(rows)), values, color=color)
            ax.set_yticks(range(len(rows)), names, fontsize=7)
            ax.invert_yaxis()
            ax.set_title(title, fontsize=9)
            ax.grid(axis="x", alpha=0.3)
        fig.suptitle(
            f"energy {format_energy(self.totals['energy_pj'])} / sample, "
            f"sparsity {_pct(self.totals['sparsity'])} ({self.energy_model.name})",
            fontsize=10,
        )
        return fig
