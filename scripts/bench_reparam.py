"""Benchmark the cost of the pruning reparametrization: a dense training step vs every registered method.

One model per variant (dense, then each method of ``snnprune.list_methods()`` attached with
``snnprune.sparsify``), the same initial weights, the same batch; the variants are timed **interleaved**
(round r times one step of every variant in turn) so that the load of a shared machine hits them alike.
Per variant the table gives the min and median step time over the rounds and the ratios to dense (min/min
and median/median); the JSON holds every sample. A step is a full SGD training step (forward, loss +
``pruner.regularization()``, backward, ``optimizer.step()``, ``pruner.step()``, neuron reset).

Default configuration: SEW ResNet-18, ImageNet stem, width 64, T = 2, IF neurons, batch 16,
64x64 input, SGD with momentum, on the CPU. ``--device cuda`` runs the same on a GPU (synchronized timing).

``--clock cpu`` times the CPU time the process used (``time.process_time``) instead of wall time: on a
machine shared with other jobs, wall times mostly measure the others' load, while the CPU time of a
single-threaded run (``--threads 1``) measures the work of the step itself.

Usage::

    python scripts/bench_reparam.py --rounds 12 --output runs/bench_reparam.json
    python scripts/bench_reparam.py --methods dense,lats,slats --threads 2
    python scripts/bench_reparam.py --clock cpu --threads 1          # on a busy shared machine
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timing import time_calls  # scripts/ is on sys.path: the script's own folder

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["METHOD_KWARGS", "get_args_parser", "main"]

#: keyword arguments each method is benchmarked with (thresholds that prune a realistic share)
METHOD_KWARGS: dict[str, dict[str, Any]] = {
    "dense": {},
    "lats": {"final_threshold": 0.05},
    "slats": {"final_threshold": 0.05},
    "pgh": {"final_threshold": 0.05, "beta": 0.1},
    "stds": {"final_threshold": 0.05},
    "str": {"s_init": -5.0},
    "ltp": {"tau_init": 1e-4},
    "st3": {"target_sparsity": 0.8},
    "st3sigma": {"target_sparsity": 0.8},
    "gmp": {"target_sparsity": 0.8, "frequency": 100},  # Zhu & Gupta's mask-update interval
    "imp": {"target_sparsity": 0.8, "rounds": 2},  # a cut (and rewind) between two halves
}


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options (returned, not parsed)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default="sew_resnet18",
        help="models.create_model name (an SNN; --stem/--width where the model takes them)",
    )
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--stem", choices=("imagenet", "small"), default="imagenet")
    p.add_argument("--T", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--methods", default=None, help="comma list (default: dense + every registered method)")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds (one step of every variant each)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of this process (robust to other jobs; use --threads 1)",
    )
    p.add_argument("--output", default="runs/bench_reparam.json")
    return p


def _shape_options(args: argparse.Namespace) -> str:
    """`` width W stem stem`` where the model takes them (a transformer does not)."""
    import models

    taken = models.model_kwargs(args.model)
    return f" width {args.width} {args.stem} stem" if "width" in taken and "stem" in taken else ""


def _build(args: argparse.Namespace, method: str, steps: int, device: torch.device) -> dict[str, Any]:
    import models
    import snnprune

    torch.manual_seed(0)
    options = dict(num_classes=args.num_classes, in_channels=3, T=args.T, stem=args.stem, width=args.width)
    taken = models.model_kwargs(args.model)  # a transformer takes no stem/width: its own defaults apply
    model = models.create_model(args.model, **{k: v for k, v in options.items() if k in taken}).to(device)
    pruner = snnprune.sparsify(model, method, total_steps=steps, **METHOD_KWARGS.get(method, {}))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    pruner.bind(optimizer)
    return {"model": model, "pruner": pruner, "optimizer": optimizer}


def _step(v: dict[str, Any], x: torch.Tensor, y: torch.Tensor) -> None:
    from spikingjelly.activation_based import functional

    model, pruner, optimizer = v["model"], v["pruner"], v["optimizer"]
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y) + pruner.regularization()
    loss.backward()
    optimizer.step()
    pruner.step()
    functional.reset_net(model)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time every variant interleaved, print the table, write JSON; returns the results."""
    args = get_args_parser().parse_args(argv)
    import snnprune

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        print(
            "bench_reparam.py: --clock cpu measures CPU work; use --clock wall with --device cuda",
            file=sys.stderr,
        )
        sys.exit(2)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_reparam.py --device cuda: no CUDA device is visible; use --device cpu", file=sys.stderr)
        sys.exit(2)
    methods = (
        args.methods.split(",")
        if args.methods
        else ["dense", *[m for m in snnprune.list_methods() if m != "dense"]]
    )
    unknown = [m for m in methods if m not in snnprune.list_methods()]
    if unknown:
        print(
            f"--methods: unknown {unknown}; registered: {', '.join(snnprune.list_methods())}", file=sys.stderr
        )
        sys.exit(2)
    if "dense" not in methods:
        methods = ["dense", *methods]
    steps = args.warmup + args.rounds
    variants = {m: _build(args, m, steps, device) for m in methods}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g).to(device)
    y = torch.randint(0, args.num_classes, (args.batch_size,), generator=g).to(device)

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    seconds = time_calls(
        {m: lambda m=m: _step(variants[m], x, y) for m in methods},
        args.rounds,
        warmup=args.warmup,
        device=device,
        clock=clock,  # host clock, device synchronized around every step
    )
    samples = {m: [1e3 * t for t in ts] for m, ts in seconds.items()}
    dense_min, dense_med = min(samples["dense"]), statistics.median(samples["dense"])
    rows = []
    for m in methods:
        lo, med = min(samples[m]), statistics.median(samples[m])
        rows.append(
            {
                "method": m,
                "min_ms": lo,
                "median_ms": med,
                "ratio_min": lo / dense_min,
                "ratio_median": med / dense_med,
                "samples_ms": samples[m],
            }
        )
    config = {k: v for k, v in vars(args).items() if k != "output"}
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": config,
        "method_kwargs": {m: METHOD_KWARGS.get(m, {}) for m in methods},
        "rows": rows,
    }
    print(
        f"{args.model}{_shape_options(args)}, T={args.T}, batch {args.batch_size}, "
        f"{args.img_size}px, {results['device']} ({results['threads']} threads), {args.rounds} interleaved rounds, "
        f"{args.clock} clock"
    )
    print(f"{'method':<10} {'min ms':>9} {'median ms':>10} {'ratio(min)':>11} {'ratio(median)':>14}")
    for row in rows:
        print(
            f"{row['method']:<10} {row['min_ms']:>9.1f} {row['median_ms']:>10.1f} "
            f"{row['ratio_min']:>11.3f} {row['ratio_median']:>14.3f}"
        )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
