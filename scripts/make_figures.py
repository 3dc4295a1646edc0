"""Make the ANN-vs-SNN pruning figures from run folders (output of scripts/sweep.py or single runs).

Usage::

    python scripts/make_figures.py runs/sweep_quick [more results or run folders] --out figures/

Run folders are found recursively (any directory holding summary.json). Each figure is written as PNG
and SVG with its data as CSV of the same stem:

1. ``fig1_top1_vs_sparsity``: test top-1 vs connectivity (1 - sparsity, %, log axis), one line per
   method; SNN and ANN panels, and a third panel of published reference points (other datasets/models,
   from scripts/reference_points.csv, labelled SNN/ANN and by source).
2. ``fig2_energy_vs_top1``: energy per sample (uJ, summary.json energy_pj) vs top-1; ANN = MAC energy,
   SNN = SOP energy.
3. ``fig3_threshold_schedules``: threshold, learning rate, sparsity and implied L1 coefficient
   lambda_k over optimizer steps (steps.csv; sparsity per epoch from metrics.csv)
   for LATS, S-LATS, PGH, STDS sine/linear (one SNN run per method: the highest level).
   lambda_k = (d_k - d_{k-1}) / lr_k pairs the threshold step of optimizer step k with the lr it used.
4. ``fig4_layer_sparsity``: per-layer sparsity of SNN vs ANN, per method the SNN run and the ANN run
   closest to one common overall sparsity (``--match-sparsity``, default 0.9), each panel titled with the
   levels it shows.
5. ``fig5_firing_rate``: per-layer firing rate, dense vs pruned SNN.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: the snnprune package
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from snnprune.methods import list_methods, method_kwargs
from snnprune.training.cli import plain_text

__all__ = ["METHOD_COLORS", "Run", "discover_runs", "load_reference_points", "main", "method_label"]

REFERENCE_CSV = Path(__file__).resolve().parent / "reference_points.csv"

#: Fixed colour per method label, identical in every figure.
METHOD_COLORS: dict[str, str] = {
    "dense": "#000000",
    "lats": "#1f77b4",
    "slats": "#17becf",
    "pgh": "#2ca02c",
    "stds-sine": "#d62728",
    "stds-linear": "#ff7f0e",
    "stds": "#d62728",
    "str": "#9467bd",
    "ltp": "#8c564b",
    "st3": "#e377c2",
    "st3sigma": "#bcbd22",
    "gmp": "#7f7f7f",
    "imp": "#aec7e8",
    "oneshot-magnitude": "#98df8a",
    "oneshot-osbc": "#ff9896",
    "shi2024": "#c5b0d5",
}
SCHEDULE_METHODS = ("lats", "slats", "pgh", "stds-sine", "stds-linear")
REF_MARKERS = ("s", "D", "^", "v", "P", "X", "*", "h")


def method_label(config: dict, summary: dict) -> str:
    """Method label of a run: method name, with the STDS shape appended (``stds-sine``/``stds-linear``);
    a one-shot pruned dense run (``config.json`` key ``oneshot`` of ``scripts/oneshot.py``) is
    ``oneshot-<its method>``; an N:M granularity appends ``-<N>of<M>`` (``lats-2of4``), as the sweep's run
    names do."""
    oneshot = config.get("oneshot")
    if isinstance(oneshot, dict):
        label = f"oneshot-{oneshot.get('method') or 'magnitude'}"
        granularity = str(oneshot.get("granularity") or "")
    else:
        label = summary.get("method") or config.get("method") or "dense"
        if label == "stds":
            label = f"stds-{config.get('stds_shape') or 'sine'}"
        granularity = str(config.get("granularity") or "")
    if ":" in granularity:
        label += "-{}of{}".format(*granularity.split(":", 1))
    return label


def _is_nm(label: str) -> bool:
    return re.fullmatch(r"\d+of\d+", label.rsplit("-", 1)[-1]) is not None


def _color(label: str) -> str:
    """The method's colour; an N:M variant takes its method's (and another marker: square, diamond)."""
    base = label.rsplit("-", 1)[0] if _is_nm(label) else label
    return METHOD_COLORS.get(label, METHOD_COLORS.get(base, "#444444"))


def _marker(label: str) -> str:
    return "s" if _is_nm(label) else "o"


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _run_level(method: str | None, config: dict) -> float:
    """The swept level of a run: its target sparsity or final threshold, whichever its method takes (NaN
    for dense and learned-threshold methods). config.json holds both options, one of them unused."""
    accepted = method_kwargs(method) if method in list_methods() else frozenset()
    for key in ("target_sparsity", "final_threshold"):
        if key in accepted:
            return _float(config.get(key))
    return math.nan


class Run:
    """One run folder: summary, config, metrics/steps rows and analyze report (missing files -> empty)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.summary = json.loads((self.path / "summary.json").read_text())
        cfg = self.path / "config.json"
        self.config = json.loads(cfg.read_text()) if cfg.exists() else {}
        # per-epoch rows: metrics.csv (the training engine today), epochs.csv (the same columns, other name)
        self.metrics = _read_csv(self.path / "metrics.csv") or _read_csv(self.path / "epochs.csv")
        self.steps = _read_csv(self.path / "steps.csv")
        an = self.path / "analyze.json"
        self.analyze = json.loads(an.read_text()) if an.exists() else {"layers": [], "totals": {}}
        self.kind = self.summary.get("kind") or self.config.get("kind") or "snn"
        self.label = method_label(self.config, self.summary)
        # summary.json of scripts/oneshot.py holds the numbers only; config.json the dense run's options
        self.dataset = self.summary.get("dataset") or self.config.get("dataset") or ""
        self.name = self.path.name
        self.sparsity = _float(self.summary.get("sparsity"))
        self.top1 = _float(self.summary.get("test_top1"))
        self.level = _run_level(self.config.get("method") or self.summary.get("method"), self.config)
        if isinstance(self.config.get("oneshot"), dict):  # the one-shot target, not the dense run's options
            self.level = _float(self.config["oneshot"].get("target_sparsity"))

    def layer_rows(self, kinds: Sequence[str]) -> list[dict]:
        """analyze.json layer rows whose ``kind`` is in ``kinds``."""
        return [r for r in self.analyze.get("layers", []) if r.get("kind") in kinds]


def discover_runs(paths: Sequence[str | Path]) -> list[Run]:
    """All run folders (dirs holding summary.json) under the given paths, sorted by name."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"results path {p} does not exist; pass a sweep output dir or run folder")
        for s in sorted([p / "summary.json"] if (p / "summary.json").exists() else p.rglob("summary.json")):
            found[s.parent.resolve()] = None
    if not found:
        raise FileNotFoundError(
            f"no run folders (dirs with summary.json) under {list(map(str, paths))}; "
            "run scripts/sweep.py first"
        )
    return sorted((Run(p) for p in found), key=lambda r: (r.kind, r.label, r.sparsity, r.name))


def load_reference_points(path: Path = REFERENCE_CSV) -> list[dict]:
    """Published reference points (columns model, dataset, kind, method, sparsity, top1, top5,
    metric_note, source).

    Raises:
        ValueError: a row without a source, or whose kind is not ``snn`` or ``ann``.
    """
    rows = _read_csv(Path(path))
    for i, r in enumerate(rows, 2):
        if not (r.get("source") or "").strip():
            raise ValueError(
                f"{path}:{i}: reference point without a source; add the citation or drop the row"
            )
        if r.get("kind") not in ("snn", "ann"):
            raise ValueError(
                f"{path}:{i}: reference point kind is {r.get('kind')!r}; set the kind column to snn or ann"
            )
    return rows


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _save(fig, out: Path, stem: str) -> None:
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"{stem}.{ext}", dpi=150, bbox_inches="tight")
    plt.close(fig)


def _connectivity(sparsity: float) -> float:
    return max(100.0 * (1.0 - sparsity), 1e-2)


def _connectivity_axis(ax) -> None:
    """Log connectivity axis, dense (100 %) on the left as in the SNN papers, plain-number ticks."""
    ax.set_xscale("log")
    lo = min(ax.get_xlim())
    ax.set_xlim(150, min(lo * 0.8, 50))
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("connectivity = 1 − sparsity (%, log scale)")
    ax.grid(True, which="both", alpha=0.3)


def fig_top1(runs: list[Run], refs: list[dict], out: Path) -> None:
    """Figure 1: top-1 vs connectivity, SNN / ANN / published panels.

    Each method's line starts at the dense run of the same kind (connectivity 100 %), as in the papers.
    """
    stem = "fig1_top1_vs_sparsity"
    header = ["kind", "method", "run", "level", "sparsity", "connectivity_pct", "test_top1", "dataset"]
    rows = []
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [1, 1, 1.15]})
    for ax, kind in zip(axes[:2], ("snn", "ann"), strict=True):
        sub = [r for r in runs if r.kind == kind]
        dense = [r for r in sub if r.label == "dense"]
        for label in sorted({r.label for r in sub}, key=lambda m: (m != "dense", m)):
            pts = sorted((r for r in sub if r.label == label), key=lambda r: r.sparsity)
            for r in pts:
                rows.append(
                    [
                        kind,
                        label,
                        r.name,
                        r.level,
                        r.sparsity,
                        _connectivity(r.sparsity),
                        r.top1,
                        r.dataset,
                    ]
                )
            line = pts if label == "dense" else dense[:1] + pts
            xs = [_connectivity(r.sparsity) for r in line]
            ys = [r.top1 for r in line]
            if label == "dense":
                ax.plot(xs, ys, ls="none", marker="*", ms=12, color=_color(label), label=label)
            else:
                ax.plot(xs, ys, marker=_marker(label), ms=5, color=_color(label), label=label)
        ds = sorted({r.dataset or "?" for r in sub}) or ["no runs"]
        net = ", ".join(sorted({str(r.config.get("model") or r.summary.get("model", "?")) for r in sub}))
        ax.set_title(f"ours: {kind.upper()}, {net}, {', '.join(ds)}")
        _connectivity_axis(ax)
        ax.set_ylabel("test top-1 (%)")
        if sub:
            ax.legend(fontsize=8, title="method")
    ax = axes[2]
    groups: dict[tuple, list[dict]] = {}
    for r in refs:
        if r.get("top1"):
            key = (r["kind"] != "snn", r["source"], r["model"], r["dataset"], r["method"])
            groups.setdefault(key, []).append(r)
    sources = sorted({k[1] for k in groups})
    for (_, src, model, dataset, method), pts in sorted(groups.items()):
        pts = sorted(pts, key=lambda r: float(r["sparsity"]))
        kind = pts[0]["kind"]
        xs = [_connectivity(float(r["sparsity"])) for r in pts]
        ys = [float(r["top1"]) for r in pts]
        marker = REF_MARKERS[sources.index(src) % len(REF_MARKERS)]
        ax.plot(
            xs,
            ys,
            ls="-" if kind == "snn" else ":",
            marker=marker,
            mfc=None if kind == "snn" else "none",
            ms=7,
            color=_color(method),
            label=f"{kind.upper()} {method}, {model} / {dataset} [{src}]",
        )
        for r in pts:
            rows.append(
                [
                    f"published_{kind}",
                    method,
                    f"{model} [{src}]",
                    "",
                    float(r["sparsity"]),
                    _connectivity(float(r["sparsity"])),
                    float(r["top1"]),
                    dataset,
                ]
            )
    ax.set_title("published (other models/datasets): SNN filled/solid, ANN open/dotted")
    _connectivity_axis(ax)
    ax.set_ylabel("top-1 (%)")
    if groups:
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    _save(fig, out, stem)
    _write_csv(out / f"{stem}.csv", header, rows)


def fig_energy(runs: list[Run], out: Path) -> None:
    """Figure 2: energy per sample (uJ) vs top-1, SNN SOP energy (filled) vs ANN MAC energy (open)."""
    stem = "fig2_energy_vs_top1"
    rows = []
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for label in sorted({r.label for r in runs}):
        for kind, mk, fill in (("snn", "o", None), ("ann", "s", "none")):
            pts = sorted((r for r in runs if r.label == label and r.kind == kind), key=lambda r: r.sparsity)
            pts = [r for r in pts if not math.isnan(_float(r.summary.get("energy_pj")))]
            if not pts:
                continue
            e = [_float(r.summary["energy_pj"]) * 1e-6 for r in pts]
            ax.plot(
                e,
                [r.top1 for r in pts],
                marker="D" if _is_nm(label) else mk,  # N:M: its method's colour, a diamond
                mfc=fill,
                ls="-" if kind == "snn" else "--",
                color=_color(label),
                label=f"{label} {kind.upper()}",
            )
            for r, ej in zip(pts, e, strict=True):
                rows.append(
                    [
                        kind,
                        label,
                        r.name,
                        r.sparsity,
                        r.top1,
                        r.summary["energy_pj"],
                        ej,
                        r.summary.get("sops"),
                        r.summary.get("macs"),
                    ]
                )
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("energy per sample (µJ, log; SNN = SOPs × E_AC, ANN = MACs × E_MAC)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("energy vs accuracy (filled/solid: SNN, open/dashed: ANN)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, out, stem)
    _write_csv(
        out / f"{stem}.csv",
        ["kind", "method", "run", "sparsity", "test_top1", "energy_pj", "energy_uj", "sops", "macs"],
        rows,
    )


def implied_l1(steps: list[dict]) -> list[float]:
    r"""Implied L1 coefficient per step, in phase with the increment the pruner applied at that step.

    A steps.csv row ``k`` holds the learning rate :math:`\eta_k` used by optimizer step ``k`` and the
    threshold :math:`d_k` installed right after it (the pruner steps after the optimizer), so
    :math:`\lambda_k = (d_k - d_{k-1}) / \eta_k` with :math:`d_{-1} = 0` (every scheduled threshold starts
    at 0). LATS sets :math:`d_k - d_{k-1} = \lambda\eta_k`, so its curve is flat (NaN where
    :math:`\eta_k = 0`).
    """
    lam = []
    prev = 0.0
    for s in steps:
        d, lr = _float(s["threshold"]), _float(s["lr"])
        lam.append((d - prev) / lr if lr > 0 else math.nan)
        prev = d
    return lam


def _lambda_limits(values: Sequence[float]) -> tuple[float, float]:
    """Log-axis limits for the implied lambda: all positive values, at least two decades wide, so a
    constant curve reads as flat instead of being zoomed into the 6-digit rounding of steps.csv."""
    pos = [v for v in values if isinstance(v, float) and v > 0 and math.isfinite(v)]
    if not pos:
        return 1e-3, 1.0
    lo, hi = min(pos), max(pos)
    lo = max(lo, hi * 1e-4) / 1.5  # values more than 4 decades below the top are clipped
    hi *= 1.5
    if hi / lo < 100:
        mid = math.sqrt(lo * hi)
        lo, hi = mid / 10, mid * 10
    return lo, hi


def fig_schedules(runs: list[Run], out: Path) -> None:
    """Figure 3: threshold, lr, sparsity and implied lambda over steps for the scheduled methods (SNN)."""
    stem = "fig3_threshold_schedules"
    chosen: dict[str, Run] = {}
    for label in SCHEDULE_METHODS:
        cands = [r for r in runs if r.label == label and r.steps]
        snn = [r for r in cands if r.kind == "snn"] or cands
        if snn:
            chosen[label] = max(snn, key=lambda r: (r.level if not math.isnan(r.level) else -1, r.name))
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    rows = []
    for label, r in chosen.items():
        steps = sorted(r.steps, key=lambda s: int(float(s["step"])))
        x = [int(float(s["step"])) for s in steps]
        lam = implied_l1(steps)
        c = _color(label)
        axes[0].plot(x, [_float(s["threshold"]) for s in steps], color=c, label=f"{label} ({r.name})")
        axes[1].plot(x, [_float(s["lr"]) for s in steps], color=c)
        axes[3].plot(x, lam, color=c)
        for s, lk in zip(steps, lam, strict=True):
            rows.append([label, r.name, "step", s["step"], s["epoch"], s["lr"], s["threshold"], "", lk])
        # sparsity per epoch, drawn at the last step of each epoch
        last_step: dict[int, int] = {}
        for s in steps:
            last_step[int(float(s["epoch"]))] = int(float(s["step"]))
        ex, ey = [], []
        for m in r.metrics:
            ep = int(float(m["epoch"]))
            if ep in last_step:
                ex.append(last_step[ep])
                ey.append(100 * _float(m["sparsity"]))
                rows.append(
                    [
                        label,
                        r.name,
                        "epoch",
                        last_step[ep],
                        ep,
                        m["lr"],
                        m["threshold"],
                        _float(m["sparsity"]),
                        "",
                    ]
                )
        axes[2].plot(ex, ey, color=c, marker="o")
    axes[0].set_ylabel("threshold d (raw-weight units)")
    axes[1].set_ylabel("learning rate η")
    axes[2].set_ylabel("sparsity (%)")
    axes[3].set_ylabel("implied L1 λ = Δd / η (log)")
    axes[3].set_yscale("log")
    axes[3].set_ylim(*_lambda_limits([row[-1] for row in rows if row[2] == "step"]))
    axes[3].set_xlabel("optimizer step")
    title = "threshold schedules (one SNN run per method)"
    if "lats" in chosen:
        title += ": LATS keeps λ = Δd/η constant"
    if any(m.startswith("stds") for m in chosen):
        title += "; STDS raises it as η falls"
    axes[0].set_title(title)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    if chosen:
        axes[0].legend(fontsize=8)
    _save(fig, out, stem)
    _write_csv(
        out / f"{stem}.csv",
        ["method", "run", "row", "step", "epoch", "lr", "threshold", "sparsity", "implied_l1"],
        rows,
    )


def _closest(runs: list[Run], level: float) -> Run:
    return min(runs, key=lambda r: (abs(r.sparsity - level), r.name))


def fig_layer_sparsity(runs: list[Run], out: Path, level: float = 0.9) -> None:
    """Figure 4: per-layer sparsity of SNN vs ANN at matched overall sparsity.

    Per method, the SNN run and the ANN run whose overall sparsity is closest to ``level``; each panel's
    title states both overall levels, in red when either is more than 5 points from ``level``.
    """
    stem = "fig4_layer_sparsity"
    pairs = []
    for label in sorted({r.label for r in runs} - {"dense"}):
        snn = [r for r in runs if r.label == label and r.kind == "snn" and r.layer_rows(("conv", "linear"))]
        ann = [r for r in runs if r.label == label and r.kind == "ann" and r.layer_rows(("conv", "linear"))]
        if snn and ann:
            pairs.append((label, _closest(snn, level), _closest(ann, level)))
    n = max(len(pairs), 1)
    fig, axes = plt.subplots(n, 1, figsize=(12, 2.9 * n), squeeze=False)
    rows = []
    for ax, (label, s, a) in zip(axes[:, 0], pairs, strict=False):
        names: list[str] = []
        vals: dict[str, dict[str, float]] = {"snn": {}, "ann": {}}
        for kind, r in (("snn", s), ("ann", a)):
            for row in r.layer_rows(("conv", "linear")):
                if row["name"] not in names:
                    names.append(row["name"])
                vals[kind][row["name"]] = 100 * _float(row["sparsity"])
        xs = range(len(names))
        ax.bar(
            [i - 0.2 for i in xs],
            [vals["snn"].get(k, math.nan) for k in names],
            0.4,
            color=_color(label),
            label=f"SNN {s.name}",
        )
        ax.bar(
            [i + 0.2 for i in xs],
            [vals["ann"].get(k, math.nan) for k in names],
            0.4,
            color=_color(label),
            alpha=0.4,
            hatch="//",
            label=f"ANN {a.name}",
        )
        ax.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=6)
        ax.set_ylabel("layer sparsity (%)")
        ax.set_ylim(0, 100)
        off = max(abs(s.sparsity - level), abs(a.sparsity - level)) > 0.05
        ax.set_title(
            f"{label}: overall sparsity SNN {100 * s.sparsity:.1f} %, ANN {100 * a.sparsity:.1f} %"
            + (f"  (no run within 5 points of {100 * level:g} %)" if off else ""),
            fontsize=11,
            fontweight="bold",
            color="#b00000" if off else "black",
            loc="left",
        )
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
        ax.grid(True, axis="y", alpha=0.3)
        for k in names:
            rows.append(
                [
                    label,
                    k,
                    s.name,
                    vals["snn"].get(k, ""),
                    a.name,
                    vals["ann"].get(k, ""),
                    100 * s.sparsity,
                    100 * a.sparsity,
                    100 * level,
                ]
            )
    if pairs:
        fig.suptitle(
            f"per-layer sparsity, SNN (solid) vs ANN twin (hatched): per method the runs closest to "
            f"{100 * level:g} % overall sparsity",
            fontsize=12,
        )
    else:
        axes[0, 0].text(
            0.5, 0.5, "no SNN/ANN pair with analyze.json", ha="center", transform=axes[0, 0].transAxes
        )
    _save(fig, out, stem)
    _write_csv(
        out / f"{stem}.csv",
        [
            "method",
            "layer",
            "snn_run",
            "snn_sparsity_pct",
            "ann_run",
            "ann_sparsity_pct",
            "snn_overall_pct",
            "ann_overall_pct",
            "matched_level_pct",
        ],
        rows,
    )


def fig_firing(runs: list[Run], out: Path) -> None:
    """Figure 5: per-layer firing rate of the dense SNN and of the most pruned SNN of each method."""
    stem = "fig5_firing_rate"
    snn = [r for r in runs if r.kind == "snn" and r.layer_rows(("neuron",))]
    chosen = [r for r in snn if r.label == "dense"][:1]
    for label in sorted({r.label for r in snn} - {"dense"}):
        chosen.append(max((r for r in snn if r.label == label), key=lambda r: r.sparsity))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    rows = []
    for r in chosen:
        lr = r.layer_rows(("neuron",))
        ys = [_float(x.get("firing_rate")) for x in lr]
        ax.plot(
            range(len(lr)),
            ys,
            marker="o",
            color=_color(r.label),
            lw=2.5 if r.label == "dense" else 1.2,
            label=f"{r.label} ({r.name}, sparsity {100 * r.sparsity:.1f} %)",
        )
        for i, (x, y) in enumerate(zip(lr, ys, strict=True)):
            rows.append([r.label, r.name, r.sparsity, i, x["name"], y])
        if r is chosen[0]:
            ax.set_xticks(range(len(lr)), [x["name"] for x in lr], rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("firing rate (spikes / neuron / time step)")
    ax.set_xlabel("spiking layer (depth order)")
    ax.set_title("per-layer firing rate: dense vs pruned SNN")
    ax.grid(True, alpha=0.3)
    if chosen:
        ax.legend(fontsize=7)
    _save(fig, out, stem)
    _write_csv(out / f"{stem}.csv", ["method", "run", "sparsity", "index", "layer", "firing_rate"], rows)


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """CLI entry point; returns the written file paths."""
    p = argparse.ArgumentParser(
        description=plain_text(__doc__.split("\n\n")[0]),
        epilog=plain_text(__doc__.split("\n\n", 1)[1]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results", nargs="+", help="results folders and/or run folders (searched recursively)")
    p.add_argument("--out", type=Path, default=Path("figures"), help="output folder (default figures/)")
    p.add_argument(
        "--reference",
        type=Path,
        default=REFERENCE_CSV,
        help="published reference points CSV "
        "(default scripts/reference_points.csv); pass an empty file to omit them",
    )
    p.add_argument(
        "--match-sparsity",
        type=float,
        default=0.9,
        metavar="P",
        help="figure 4: per method, the SNN and ANN runs closest to this overall sparsity (default 0.9)",
    )
    args = p.parse_args(argv)
    if not 0.0 < args.match_sparsity < 1.0:
        p.error(f"--match-sparsity must be in (0, 1), got {args.match_sparsity}; e.g. 0.9")
    runs = discover_runs(args.results)
    refs = load_reference_points(args.reference)
    args.out.mkdir(parents=True, exist_ok=True)
    fig_top1(runs, refs, args.out)
    fig_energy(runs, args.out)
    fig_schedules(runs, args.out)
    fig_layer_sparsity(runs, args.out, args.match_sparsity)
    fig_firing(runs, args.out)
    written = sorted(args.out.glob("fig[1-5]_*.*"))
    print(f"make_figures: {len(runs)} runs -> {len(written)} files in {args.out}")
    return written


if __name__ == "__main__":
    main()
