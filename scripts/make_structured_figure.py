"""Figure 6: accuracy against speed-up, structured (measured wall-clock) vs unstructured (estimated energy).

Reads finished runs of ``scripts/train_sew.py`` / ``scripts/train_ann.py`` on the embedded data, laid out as
``RUNS/sew/<run>/`` and ``RUNS/ann/<run>/`` (each with ``config.json``, ``summary.json``,
``checkpoint.pth``): one ``--method dense`` run per kind, filter runs (``--granularity filter``) and
unstructured runs. For every filter run the trained model is rebuilt from its checkpoint and compacted with
:func:`snnprune.compact`; on the whole embedded test set the compacted model must give the masked model's
logits (max abs difference reported) and predictions. Then the dense model, every compacted model and every
unstructured model (finalized: zeros stored densely, as exported) are timed interleaved (inference at batch
64 and batch 1, one intra-op thread, min and median). Unstructured runs also get the energy reduction that
``snnprune.analyze`` estimates (dense ``energy_pj`` / run ``energy_pj``).

Every model's BN statistics are first re-estimated on the same 20 training batches
(:func:`snnprune.structured.recalibrate_bn`; filter-pruned models need it, see the README); both the
training run's top-1 and the recalibrated top-1 are reported, the figure plots the recalibrated one.

Writes ``fig6_structured_speedup.{png,svg,csv}`` into ``--out`` (default ``figures/``) and prints the table.

Usage::

    python scripts/make_structured_figure.py --runs /path/to/runs --out figures
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from timing import time_calls  # noqa: E402

import models  # noqa: E402, F401  (declares the model builders that run folders name)
import snnprune  # noqa: E402
from snnprune.structured import channel_groups, recalibrate_bn  # noqa: E402

KINDS = {"sew": "SNN (SEW ResNet-18)", "ann": "ANN (ResNet-18 twin)"}
COLUMNS = [
    "kind", "run", "method", "granularity", "final_threshold", "test_top1", "top1_recal", "weight_sparsity",
    "channels_removed", "params", "energy_reduction_est", "speedup_b64_min", "speedup_b64_median",
    "speedup_b1_min", "speedup_b1_median", "compact_top1", "compact_max_abs_diff", "compact_same_predictions", "compact_max_abs_diff_f64",
    "compact_same_predictions_f64",
]  # fmt: skip


def _reset(model: nn.Module) -> None:
    from spikingjelly.activation_based import functional

    functional.reset_net(model)


def load_run(kind: str, run: Path) -> tuple[dict[str, Any], dict[str, Any], nn.Module]:
    """``(config, summary, model)``: the run's final model with its pruning parametrizations loaded."""
    loaded = snnprune.load_run(run)
    return loaded.config, loaded.summary, loaded.model


@torch.no_grad()
def top1(model: nn.Module, test: Any) -> float:
    """Top-1 (%) of ``model`` (eval mode) on the whole test set."""
    correct = 0
    for i in range(0, len(test), 200):
        x = torch.stack([test[j][0] for j in range(i, min(i + 200, len(test)))])
        y = torch.stack([test[j][1] for j in range(i, min(i + 200, len(test)))])
        correct += int((model(x).argmax(1) == y).sum())
        _reset(model)
    return 100.0 * correct / len(test)


@torch.no_grad()
def compare_on_test_set(
    masked: nn.Module, small: nn.Module, test: Any, dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """Max abs logit difference, identical predictions, and the compacted model's top-1 (%) in ``dtype``."""
    diff, same, correct, n = 0.0, True, 0, 0
    for i in range(0, len(test), 200):
        x = torch.stack([test[j][0] for j in range(i, min(i + 200, len(test)))]).to(dtype)
        y = torch.stack([test[j][1] for j in range(i, min(i + 200, len(test)))])
        a = masked(x)
        _reset(masked)
        b = small(x)
        _reset(small)
        diff = max(diff, (a - b).abs().max().item())
        same &= bool(torch.equal(a.argmax(1), b.argmax(1)))
        correct += int((b.argmax(1) == y).sum())
        n += len(y)
    return {
        "compact_max_abs_diff": diff,
        "compact_same_predictions": same,
        "compact_top1": 100.0 * correct / n,
    }


def channels_removed(model: nn.Module, small: nn.Module) -> float:
    """Fraction of the channels (over all channel groups) that compaction removed."""
    full, kept = 0, 0
    before, after = dict(model.named_modules()), dict(small.named_modules())
    for group in channel_groups(model):
        producer = group.producers[0][0]  # a Conv or a Linear: its output channels are its weight's rows
        full += before[producer].weight.shape[0]
        kept += after[producer].weight.shape[0]
    return 1.0 - kept / full


def time_models(nets: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, list[float]]:
    """Interleaved inference times (s) of every model on ``x`` (one warm-up round first)."""

    def infer(net: nn.Module) -> None:
        with torch.no_grad():
            net(x)
        _reset(net)

    return time_calls({name: lambda net=net: infer(net) for name, net in nets.items()}, repeats, warmup=1)


def collect(runs: Path, repeats: int, recal_batches: int) -> list[dict[str, Any]]:
    """One row per run (see ``COLUMNS``), dense first per kind."""
    from snnprune.training import build_datasets

    train, test, _, _ = build_datasets(argparse.Namespace(dataset="embedded_mnist"))
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(train), generator=g)[: 64 * recal_batches]
    recal = [torch.stack([train[int(j)][0] for j in order[i : i + 64]]) for i in range(0, len(order), 64)]
    rows: list[dict[str, Any]] = []
    for kind in KINDS:
        folder = runs / kind
        if not folder.is_dir():
            continue
        loaded = {
            r.name: load_run(kind, r) for r in sorted(folder.iterdir()) if (r / "summary.json").is_file()
        }
        dense_name = next(n for n, (c, _, _) in loaded.items() if c["method"] == "dense")
        dense_energy = loaded[dense_name][1]["energy_pj"]
        nets: dict[str, nn.Module] = {}
        info: dict[str, dict[str, Any]] = {}
        for name, (cfg, summary, model) in loaded.items():
            gran = cfg.get("granularity") or "weight"
            row = {
                "kind": kind,
                "run": name,
                "method": cfg["method"],
                "granularity": gran if cfg["method"] != "dense" else "-",
                "final_threshold": cfg["final_threshold"] if cfg["method"] != "dense" else None,
                "test_top1": summary["test_top1"],
                "weight_sparsity": summary["sparsity"],
                "energy_reduction_est": dense_energy / summary["energy_pj"] if summary["energy_pj"] else None,
            }
            x = test[0][0].unsqueeze(0)
            recalibrate_bn(model, recal)  # the same training batches for every model (see README)
            model.eval()
            if gran == "filter":
                small = snnprune.compact(model, x)
                row.update(compare_on_test_set(model, small, test))
                f64 = compare_on_test_set(
                    snnprune.finalize(copy.deepcopy(model)).double(),
                    copy.deepcopy(small).double(),
                    test,
                    torch.float64,
                )
                row["compact_max_abs_diff_f64"] = f64["compact_max_abs_diff"]
                row["compact_same_predictions_f64"] = f64["compact_same_predictions"]
                row["top1_recal"] = top1(model, test)
                row["channels_removed"] = channels_removed(model, small)
                nets[name] = small
            else:
                row["top1_recal"] = top1(model, test)
                nets[name] = snnprune.finalize(
                    copy.deepcopy(model)
                )  # what export writes: zeros stored densely
                row["channels_removed"] = 0.0
            row["params"] = sum(p.numel() for p in nets[name].parameters())
            info[name] = row
        xb = torch.stack([test[j][0] for j in range(64)])
        for batch, xin in (("b64", xb), ("b1", xb[:1])):
            times = time_models(nets, xin, repeats)
            base_min, base_med = min(times[dense_name]), statistics.median(times[dense_name])
            for name in nets:
                info[name][f"speedup_{batch}_min"] = base_min / min(times[name])
                info[name][f"speedup_{batch}_median"] = base_med / statistics.median(times[name])
        rows.extend(info[n] for n in [dense_name] + [n for n in loaded if n != dense_name])
    return rows


def _value(v: str) -> Any:
    """CSV cell back to float / None / str."""
    if v == "":
        return None
    try:
        return float(v)
    except ValueError:
        return v


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """Two panels (SNN, ANN): top-1 against speed-up; filter = measured time, unstructured = estimated energy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    kinds = [k for k in KINDS if any(r["kind"] == k for r in rows)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.6 * len(kinds), 5.0), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        rs = [r for r in rows if r["kind"] == kind]
        dense = next(r for r in rs if r["method"] == "dense")
        ax.axhline(dense["top1_recal"] - 1.0, color="0.6", ls="--", lw=1, label="dense − 1 point")
        ax.plot([1.0], [dense["top1_recal"]], "ks", label="dense")
        filt = sorted((r for r in rs if r["granularity"] == "filter"), key=lambda r: r["speedup_b64_min"])
        unst = [r for r in rs if r["granularity"] == "weight"]
        for i, method in enumerate(sorted({r["method"] for r in filt}, key=lambda m: m != "pgh")):
            series = [r for r in filt if r["method"] == method]
            ax.plot([r["speedup_b64_min"] for r in series], [r["top1_recal"] for r in series], "o-",
                    color=f"C{2 * i}", label=f"filter {method.upper()}, measured time (batch 64)")  # fmt: skip
            for r in series:
                ax.annotate(f"D={r['final_threshold']:g}", (r["speedup_b64_min"], r["top1_recal"]),
                            textcoords="offset points", xytext=(4, -10), fontsize=7, color=f"C{2 * i}")  # fmt: skip
        if unst:
            ax.plot([r["energy_reduction_est"] for r in unst], [r["top1_recal"] for r in unst], "x", color="C3",
                    ms=8, label="unstructured LATS, estimated energy")  # fmt: skip
            ax.plot([r["speedup_b64_min"] for r in unst], [r["top1_recal"] for r in unst], "^", color="C3",
                    mfc="none", label="unstructured LATS, measured time")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        xs = [r.get(k) or 1.0 for r in rs for k in ("speedup_b64_min", "energy_reduction_est")]
        ax.set_xlim(min(0.7, 0.8 * min(xs)), max(4.0, 1.3 * max(xs)))
        ax.set_xlabel("speed-up over dense (×)")
        ax.set_ylabel("top-1 (%), embedded test set, BN recalibrated")
        ax.set_title(KINDS[kind])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"fig6_structured_speedup.{ext}", dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Collect, print, write the CSV and the figure."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default=None, metavar="DIR", help="folder with sew/<run>/ and ann/<run>/")
    p.add_argument(
        "--from-csv", default=None, metavar="CSV", help="only redraw the figure from a written CSV"
    )
    p.add_argument("--out", default=str(HERE.parent / "figures"), metavar="DIR", help="output folder")
    p.add_argument("--repeats", type=int, default=7, help="timed inference repetitions per model")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (see bench_compact.py)")
    p.add_argument(
        "--recal-batches", type=int, default=20, help="training batches of 64 for snnprune BN recalibration"
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.from_csv:
        with open(args.from_csv) as f:
            rows = [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]
        plot(rows, out)
        return rows
    if args.runs is None:
        p.error("--runs DIR is required (or --from-csv CSV to redraw)")
    runs = Path(args.runs)
    if not (runs / "sew").is_dir() and not (runs / "ann").is_dir():
        p.error(f"--runs {str(runs)!r} has neither sew/ nor ann/; pass the folder holding the run folders")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    torch.set_num_threads(args.threads)
    rows = collect(runs, args.repeats, args.recal_batches)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "fig6_structured_speedup.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in COLUMNS})
    print("| model | run | top-1 % | top-1 % recal. | weight sparsity | channels removed | params | est. energy red. | "
          "speed-up b64 (min/med) | speed-up b1 (min/med) | compact max diff f32 / f64 | same preds f32 / f64 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        e = "-" if r.get("energy_reduction_est") is None else f"{r['energy_reduction_est']:.2f}x"
        d = (
            "-"
            if r.get("compact_max_abs_diff") is None
            else (f"{r['compact_max_abs_diff']:.2g} / {r['compact_max_abs_diff_f64']:.2g}")
        )
        same = (
            "-"
            if r.get("compact_max_abs_diff") is None
            else (f"{r['compact_same_predictions']} / {r['compact_same_predictions_f64']}")
        )
        print(f"| {r['kind']} | {r['run']} | {r['test_top1']:.1f} | {r['top1_recal']:.1f} | "
              f"{100 * r['weight_sparsity']:.1f}% | "
              f"{100 * r['channels_removed']:.1f}% | {r['params']:,} | {e} | "
              f"{r['speedup_b64_min']:.2f}x / {r['speedup_b64_median']:.2f}x | "
              f"{r['speedup_b1_min']:.2f}x / {r['speedup_b1_median']:.2f}x | {d} | "
              f"{same} |")  # fmt: skip
    plot(rows, out)
    return rows


if __name__ == "__main__":
    main()
