"""NeuroBench's metrics of a trained run, from ``snnprune.analyze`` and from NeuroBench itself, side by side.

    python scripts/neurobench_report.py runs/sew_resnet18_lats_D0.1            # 4 test batches of 100
    python scripts/neurobench_report.py RUN --batches 10 --compact --json nb.json

The run's finalized model (``--compact``: its compacted filter-pruned model) runs on the first ``--batches``
test batches twice: ``snnprune.analyze(..., convention="neurobench")`` and NeuroBench 2.3.0's own
``Benchmark`` through ``snnprune.interop.neurobench.benchmark``, and the training engine's ``evaluate`` gives
the top-1 next to NeuroBench's ClassificationAccuracy. One row per metric; the footprint of the model with
its parametrizations attached (what training holds) is printed below the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import models  # noqa: E402, F401  (declares the model builders that run folders name)
import snnprune  # noqa: E402
from snnprune.analysis import footprint_bytes  # noqa: E402

__all__ = ["get_parser", "main", "rows"]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a training run folder (config.json + checkpoint.pth)")
    p.add_argument("--batches", type=int, default=4, help="test batches (default 4)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--compact", action="store_true", help="the compacted model (filter runs with --export)")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    return p


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def rows(report: Any, nb: dict[str, Any], top1: float) -> list[tuple[str, Any, Any]]:
    """``(metric, snnprune, NeuroBench)`` rows; ``top1``: the training engine's test top-1 (%) of the batches."""
    t, ops = report.totals, nb["SynapticOperations"]
    return [
        ("Footprint (bytes)", t["footprint_bytes"], nb["Footprint"]),
        ("ConnectionSparsity", round(t["sparsity"], 4), nb["ConnectionSparsity"]),
        ("ActivationSparsity", t["activation_sparsity"], nb["ActivationSparsity"]),
        ("Effective_ACs", t["sops"], ops["Effective_ACs"]),
        ("Effective_MACs", t["macs"], ops["Effective_MACs"]),
        ("Dense", t["dense_macs"], ops["Dense"]),
        ("ClassificationAccuracy", top1 / 100.0, nb["ClassificationAccuracy"]),
    ]


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.10g}"
    return f"{int(v):,}"


def main(argv: list[str] | None = None) -> list[tuple[str, Any, Any]]:
    args = get_parser().parse_args(argv)
    if args.batches < 1:
        _fail(f"--batches: must be a positive integer, got {args.batches}; pass e.g. --batches 4")
    if args.batch_size < 1:
        _fail(f"--batch-size: must be a positive integer, got {args.batch_size}; pass e.g. --batch-size 100")
    try:
        from snnprune.interop.neurobench import benchmark
    except ImportError as exc:
        _fail(str(exc))
    import torch
    from torch import nn

    from snnprune.training import CheckpointError, ConfigError, DataError, LoopOptions, evaluate

    try:
        run = snnprune.load_run(args.run, finalize=not args.compact, compact=args.compact)
        attached = None if args.compact else footprint_bytes(snnprune.load_run(args.run).model)
        loader = run.test_data(batch_size=args.batch_size)
    except (ConfigError, CheckpointError, DataError) as exc:
        _fail(str(exc))
    report = snnprune.analyze(
        run.model, loader, max_batches=args.batches, convention="neurobench", progress=False
    )
    nb = benchmark(run.model, loader, max_batches=args.batches)
    ours = evaluate(
        run.model,
        nn.CrossEntropyLoss(),
        loader,
        torch.device("cpu"),
        LoopOptions(limit_test_batches=args.batches),
    )
    table = rows(report, nb, ours["test_top1"])
    head = ("metric", "snnprune", "NeuroBench 2.3.0")
    lines = [head, *((m, _cell(a), _cell(b)) for m, a, b in table)]
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    model = "compacted" if args.compact else "finalized"
    print(
        f"{run.path.name}: {model} model, {report.totals['samples']} test samples in {report.meta['batches']} batches"
    )
    for line in lines:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    if attached is not None:
        print(f"footprint with the parametrizations attached (training state): {attached:,} bytes")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [dict(zip(("metric", "analyze", "neurobench"), r, strict=True)) for r in table], indent=2
            )
        )
    return table


if __name__ == "__main__":
    main()
