"""Figure 7: energy per sample against firing rate for a dense and a pruned SEW ResNet-18, with the
measured points, the quantized-ANN baselines and the break-even firing rates, under each energy preset.

Reads real run folders (``config.json`` + ``best.pth`` written by ``scripts/train_sew.py`` and
``scripts/train_ann.py``), rebuilds each model, runs ``snnprune.analyze`` on the first test batches and
writes, in ``--out-dir`` (default ``figures/``):

* ``fig7_energy_vs_firing_rate.{png,svg,csv}``: one panel per preset; the SNN energy is linear in its
  event counts (``snnprune.analysis.energy_at_rate``), the quantized ANN (``ceil(log2(T+1))``-bit
  activations, ``--weight-bits`` weights, activation sparsity measured on the same images) is a
  horizontal line; the pruned SNN is compared with the ANN twin pruned to the same per-layer density
  (an estimate: MACs and weight reads scaled by each layer's density, independent of the activations);
* ``fig7_conventions.csv``: the pruned (default) run under every counting convention and preset
  (the table of ``snnprune/docs/energy.md`` and the README).

Example (the default runs of the README)::

    python scripts/train_sew.py --method lats
    python scripts/train_sew.py --method dense
    python scripts/train_ann.py --method dense
    python scripts/make_energy_figure.py --pruned runs/sew_resnet18_lats_D0.1 \\
        --dense runs/sew_resnet18_dense --ann runs/ann_resnet18_dense
"""

from __future__ import annotations

import argparse
import copy
import csv
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import models  # noqa: E402, F401  (declares the model builders that run folders name)
import snnprune  # noqa: E402
from snnprune.analysis import Report, ann_baselines, break_even, energy_at_rate  # noqa: E402
from snnprune.training import CheckpointError, ConfigError, DataError  # noqa: E402

__all__ = ["get_args_parser", "load_run", "main", "pruned_twin"]

PRESETS = ("fp32", "lemaire", "yan-neuromorphic", "yan-accelerator")


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--pruned",
        required=True,
        metavar="RUN_DIR",
        help="run folder of the pruned SNN (any method, or a one-shot pruned dense run of scripts/oneshot.py)",
    )
    p.add_argument("--dense", required=True, metavar="RUN_DIR", help="run folder of the dense SNN")
    p.add_argument("--ann", required=True, metavar="RUN_DIR", help="run folder of the dense ANN twin")
    p.add_argument("--presets", nargs="+", default=list(PRESETS), help="energy presets, one panel each")
    p.add_argument("--weight-bits", type=int, default=8, help="weight width of the quantized ANN")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--batches", type=int, default=4, help="test batches analysed (the README uses 4 x 100)")
    p.add_argument("--out-dir", default=str(ROOT / "figures"))
    return p


def load_run(
    run_dir: str, option: str = "--run"
) -> tuple[torch.nn.Module, argparse.Namespace, dict[str, Any]]:
    """The model of a run folder's ``best.pth`` with its sparse weights baked in (:func:`snnprune.load_run`);
    a folder without one (``scripts/oneshot.py`` writes only the final ``checkpoint.pth``) gives its final
    state.

    Args:
        run_dir: a folder written by ``train_sew.py``, ``train_ann.py`` or ``oneshot.py``.
        option: the option that named it (for the error message).

    Returns:
        ``(model in eval mode, the run's configuration, its summary.json or {} with "test_set")``.
    """
    try:
        best = Path(run_dir) / "best.pth"
        run = snnprune.load_run(best if best.is_file() else Path(run_dir), finalize=True)
        test_set = run.test_data().dataset
    except (
        ConfigError,
        CheckpointError,
        DataError,
    ) as exc:
        print(f"error: {option}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return run.model, argparse.Namespace(**run.config), {**(run.summary or {}), "test_set": test_set}


def pruned_twin(ann: Report, snn: Report) -> Report:
    """The ANN twin's report with every synaptic layer pruned to the SNN layer's weight density (estimate).

    MACs, MACs with a non-zero input and the weight counts of each layer are scaled by ``nnz / numel`` of
    the same-named SNN layer, i.e. pruning is assumed independent of where the activations are non-zero.
    """
    density = {
        r["name"]: r["weight_nonzero"] / r["weight_params"]
        for r in snn.layers
        if r["kind"] in ("conv", "linear") and r.get("weight_params")
    }
    layers = copy.deepcopy(ann.layers)
    for r in layers:
        d = density.get(r["name"])
        if d is None or "access" not in r:
            continue
        a = r["access"]
        for k in ("macs", "nonzero_input_macs"):
            a[k] = a[k] * d
        a["weight_nonzero"] = round(a["weight_params"] * d)
        r["macs"] = r["macs"] * d
        r["weight_nonzero"] = a["weight_nonzero"]
    return Report(layers, ann.totals, copy.deepcopy(ann.meta)).with_energy(ann.energy_model)  # re-priced


def _analyze(model: torch.nn.Module, args: argparse.Namespace, test_set: Any, opts: argparse.Namespace, **kw):
    loader = DataLoader(test_set, batch_size=opts.batch_size, shuffle=False)
    t = args.T if args.kind == "snn" else None
    return snnprune.analyze(model, loader, max_batches=opts.batches, time_steps=t, progress=False, **kw)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Analyse the three runs, draw figure 7, write its CSVs; returns the numbers."""
    opts = get_args_parser().parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    runs = {}
    for key in ("pruned", "dense", "ann"):
        model, args, info = load_run(getattr(opts, key), f"--{key}")
        runs[key] = (model, args, info)
    reports = {k: _analyze(m, a, info["test_set"], opts) for k, (m, a, info) in runs.items()}
    ann_pruned = pruned_twin(reports["ann"], reports["pruned"])
    out_dir = Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    curves: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for preset in opts.presets:
        for key, ann in (("dense", reports["ann"]), ("pruned", ann_pruned)):
            snn = reports[key]
            base = ann_baselines(ann=ann, snn=snn, energy=preset, weight_bits=opts.weight_bits)
            be = break_even(ann=ann, snn=snn, energy=preset, weight_bits=opts.weight_bits)
            o = be["overall"]
            info = runs[key][2]
            rows.append(
                {
                    "preset": preset,
                    "model": key,
                    "top1": info.get("test_top1"),
                    "sparsity": snn.totals["sparsity"],
                    "measured_rate": o["measured_rate"],
                    "break_even_rate": o["break_even_rate"],
                    "snn_energy_pj": base["snn"]["energy_pj"],
                    "snn_energy_compute_pj": base["snn"]["energy_compute_pj"],
                    "snn_energy_memory_pj": base["snn"]["energy_memory_pj"],
                    "snn_energy_zero_rate_pj": o["snn_energy_zero_pj"],
                    "qann_energy_pj": base["ann_quantized"]["energy_pj"],
                    "ann_fp32_energy_pj": base["ann_fp32"]["energy_pj"],
                    "qann_bits": f"a{base['activation_bits']}w{base['weight_bits']}",
                    "verdict_vs_qann": base["ann_quantized"]["verdict"],
                    "verdict_vs_fp32": base["ann_fp32"]["verdict"],
                    "layers_winning": sum(r["wins"] for r in be["layers"]),
                    "layers": len(be["layers"]),
                }
            )
            xs = [i / 100 for i in range(0, 41)]
            curves[(preset, key)] = (xs, [energy_at_rate(snn, x, preset) for x in xs])

    with open(out_dir / "fig7_energy_vs_firing_rate.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    # the default (pruned) run under each convention and preset
    conv_rows = []
    pm, pa, pinfo = runs["pruned"]
    for convention in ("ours", "spikingjelly", "syops"):
        rep = (
            reports["pruned"]
            if convention == "ours"
            else _analyze(pm, pa, pinfo["test_set"], opts, convention=convention)
        )
        for preset in opts.presets:
            t = rep.with_energy(preset).totals
            conv_rows.append(
                {
                    "convention": convention,
                    "preset": preset,
                    "sops": t["sops"],
                    "macs": t["macs"],
                    "energy_compute_pj": t["energy_compute_pj"],
                    "energy_memory_pj": t["energy_memory_pj"],
                    "energy_pj": t["energy_pj"],
                }
            )
    with open(out_dir / "fig7_conventions.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(conv_rows[0]))
        w.writeheader()
        w.writerows(conv_rows)

    _plot(rows, curves, opts.presets, out_dir)
    for r in rows:
        be = "-" if r["break_even_rate"] is None else f"{r['break_even_rate']:.4f}"
        print(
            f"{r['preset']:>16} {r['model']:>6}: rate {r['measured_rate']:.4f} break-even {be} | SNN "
            f"{r['snn_energy_pj'] / 1e6:.3f} uJ, QANN {r['qann_energy_pj'] / 1e6:.3f} uJ, "
            f"FP32 ANN {r['ann_fp32_energy_pj'] / 1e6:.3f} uJ | vs QANN: {r['verdict_vs_qann']}"
        )
    for r in conv_rows:
        print(
            f"{r['convention']:>12} {r['preset']:>16}: SOPs {r['sops']:.4g} MACs {r['macs']:.4g} energy "
            f"{r['energy_pj'] / 1e6:.3f} uJ (compute {r['energy_compute_pj'] / 1e6:.3f}, "
            f"memory {r['energy_memory_pj'] / 1e6:.3f})"
        )
    return {"rows": rows, "conventions": conv_rows}


def _plot(rows: list[dict[str, Any]], curves: dict, presets: list[str], out_dir: Path) -> None:
    from matplotlib.figure import Figure

    n = len(presets)
    cols = 2 if n > 1 else 1
    nrows = (n + cols - 1) // cols
    fig = Figure(figsize=(6.0 * cols, 4.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    colors = {"dense": "tab:blue", "pruned": "tab:red"}
    for ax, preset in zip(axes, presets, strict=False):
        for key in ("dense", "pruned"):
            xs, ys = curves[(preset, key)]
            r = next(r for r in rows if r["preset"] == preset and r["model"] == key)
            c = colors[key]
            label = f"{key} SNN ({100 * r['sparsity']:.0f}% sparse)"
            ax.plot(xs, [y / 1e6 for y in ys], color=c, label=label)
            ax.plot([r["measured_rate"]], [r["snn_energy_pj"] / 1e6], "o", color=c, ms=7)
            ax.axhline(
                r["qann_energy_pj"] / 1e6,
                color=c,
                ls="--",
                lw=1,
                label=f"quantized ANN ({key}, {r['qann_bits']})",
            )
            be = r["break_even_rate"]
            if be is not None and 0 < be <= xs[-1]:
                ax.axvline(be, color=c, ls=":", lw=1)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("firing rate (spikes / neuron / step)")
        ax.set_ylabel("energy per sample (uJ)")
        ax.set_title(preset, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(
        "Fig. 7: SEW ResNet-18 energy vs firing rate (dots: measured; dotted: break-even vs quantized ANN)",
        fontsize=10,
    )
    for ext in ("png", "svg"):
        fig.savefig(out_dir / f"fig7_energy_vs_firing_rate.{ext}", dpi=150)


if __name__ == "__main__":
    main()
