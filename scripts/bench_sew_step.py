"""Benchmark SEW ResNet-18 training steps: SpikingJelly neurons vs snnprune's fused kernels.

One run on one GPU measures steps of SGD training (IF neurons, ATan, ADD, detach_reset, T=4, batch 32,
224 px, channels_last) for every combination of precision (fp16 autocast + GradScaler, fp32 with TF32),
neuron backend (SpikingJelly 2.0.0 vs ours), execution (eager, ``torch.compile`` default, ``torch.compile``
``reduce-overhead`` = CUDA graphs, around forward+loss) and weights (dense vs the LATS soft-threshold
parametrization attached by ``snnprune.sparsify(model, "lats", ...)``). The two neuron backends run back
to back in every (precision, mode, weights) configuration; each is timed over ``--repeats`` repeats of
``--iters`` steps (min and median). Prints a table, the target ratios (ours+LATS vs SpikingJelly eager, and
vs SpikingJelly + torch.compile), ours vs SpikingJelly in the same mode, and writes JSON.

Usage::

    python scripts/bench_sew_step.py --output runs/bench_sew_step.json

Exits with code 2 and a message when no CUDA device or no CuPy is available.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import time_calls  # scripts/ is on sys.path: the script's own folder

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["get_args_parser", "main"]

#: SpikingJelly baselines: its neurons in our SEW net, and its own sew_resnet18.
BASELINES = ("spikingjelly", "sj_model")


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options (returned, not parsed)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--precisions", default="fp16,fp32", help="comma list of fp16,bf16,fp32")
    p.add_argument(
        "--backends",
        default="spikingjelly,cupy",
        help="comma list: neuron_backend values of models.sew_resnet18 (spikingjelly, cupy, auto), and "
        "sj_model for SpikingJelly's own sew_resnet18 (its IFNode, input repeated over T, mean over T)",
    )
    p.add_argument(
        "--modes", default="eager,default,reduce-overhead", help="eager and/or torch.compile modes"
    )
    p.add_argument("--weights", default="dense,lats", help="dense and/or lats")
    p.add_argument(
        "--baseline-weights",
        default=None,
        help="dense and/or lats for the SpikingJelly baselines (default: --weights)",
    )
    p.add_argument("--warmup", type=int, default=10, help="untimed steps (include compilation)")
    p.add_argument("--iters", type=int, default=30, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; min and median step time reported")
    p.add_argument("--output", default="bench_sew_step.json")
    return p


#: Allowed values of the comma-list options.
CHOICES = {
    "precisions": ("fp16", "bf16", "fp32"),
    "backends": ("spikingjelly", "cupy", "auto", "sj_model"),
    "modes": ("eager", "default", "reduce-overhead", "max-autotune"),
    "weights": ("dense", "lats"),
    "baseline_weights": ("dense", "lats"),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the options before any GPU work; a bad one exits with code 2 and one line."""
    args = get_args_parser().parse_args(argv)
    for name, allowed in CHOICES.items():
        value = getattr(args, name)
        if value is None:
            continue
        bad = [v for v in value.split(",") if v not in allowed]
        if bad:
            option = "--" + name.replace("_", "-")
            print(f"{option}: unknown {','.join(bad)}; choose from {','.join(allowed)}", file=sys.stderr)
            sys.exit(2)
    for name in ("T", "batch_size", "img_size", "num_classes", "iters", "repeats"):
        if getattr(args, name) < 1:
            option = "--" + name.replace("_", "-")
            print(f"{option}: must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            sys.exit(2)
    if args.warmup < 0:
        print(f"--warmup: must be >= 0, got {args.warmup}", file=sys.stderr)
        sys.exit(2)
    return args


def _require_gpu(backends: list[str]) -> None:
    if not torch.cuda.is_available():
        print(
            "bench_sew_step.py needs a CUDA GPU; none is visible (torch.cuda.is_available() is False).",
            file=sys.stderr,
        )
        sys.exit(2)
    from snnprune.neuron import cupy_runtime

    # "auto" without CuPy would silently run SpikingJelly's code and be reported as ours
    if any(b not in BASELINES for b in backends) and not cupy_runtime.cupy_available():
        print(
            f"bench_sew_step.py needs CuPy ({cupy_runtime.cupy_import_error()!r}); {cupy_runtime.INSTALL_HINT}.",
            file=sys.stderr,
        )
        sys.exit(2)


class _RepeatOverTime(torch.nn.Module):
    """SpikingJelly's own multi-step network on a static image: input repeated over ``T``, logits averaged."""

    def __init__(self, net: torch.nn.Module, T: int) -> None:
        super().__init__()
        self.net, self.T = net, T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)).mean(0)


def build_model(args, backend: str) -> torch.nn.Module:
    """SEW ResNet-18 (IF, ATan, ADD, detach_reset) of ``models`` with ``backend`` neurons, or ``sj_model``:
    SpikingJelly 2.0.0's own ``sew_resnet18`` with its ``IFNode`` in multi-step mode."""
    if backend == "sj_model":
        from spikingjelly.activation_based import functional, neuron, surrogate
        from spikingjelly.activation_based.model import sew_resnet

        net = sew_resnet.sew_resnet18(
            num_classes=args.num_classes, cnf="ADD", spiking_neuron=neuron.IFNode,
            surrogate_function=surrogate.ATan(), detach_reset=True,
        )  # fmt: skip
        functional.set_step_mode(net, "m")
        return _RepeatOverTime(net, args.T)
    import models

    return models.create_model(
        "sew_resnet18", num_classes=args.num_classes, T=args.T, neuron="if", surrogate="atan", cnf="ADD",
        detach_reset=True, neuron_backend=backend,
    )  # fmt: skip


def _run_config(args, precision: str, backend: str, mode: str, weights: str) -> dict:
    from spikingjelly.activation_based import functional

    import snnprune

    torch.manual_seed(0)
    model = build_model(args, backend).cuda().to(memory_format=torch.channels_last)
    total = args.warmup + args.repeats * args.iters  # every optimizer step of the run is a pruning step
    pruner = None
    if weights == "lats":
        pruner = snnprune.sparsify(model, "lats", final_threshold=1e-4, total_steps=total)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    if pruner is not None:
        pruner.bind(optimizer)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    def forward_loss(x, y):
        with torch.autocast("cuda", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            return F.cross_entropy(model(x), y)

    step_fn = forward_loss if mode == "eager" else torch.compile(forward_loss, mode=mode)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device="cuda").to(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, args.num_classes, (args.batch_size,), device="cuda")

    def train_step():
        functional.reset_net(model)
        optimizer.zero_grad(set_to_none=True)
        loss = step_fn(x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if pruner is not None:
            pruner.step()

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        train_step()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    seconds = time_calls({"step": train_step}, args.repeats, number=args.iters, device="cuda")["step"]
    samples = [1e3 * t for t in seconds]  # ms per step, CUDA events
    step_ms = min(samples)
    return {
        "precision": precision,
        "backend": backend,
        "mode": mode,
        "weights": weights,
        "step_ms": step_ms,
        "step_ms_median": statistics.median(samples),
        "step_ms_repeats": samples,
        "images_per_s": args.batch_size / (step_ms * 1e-3),
        "warmup_s": warmup_s,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run every configuration, print a table and the target ratios, write JSON; returns the results."""
    args = _parse(argv)
    backends = args.backends.split(",")
    _require_gpu(backends)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    results = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "args": vars(args),
        "rows": [],
    }
    for precision, mode, weights, backend in configurations(args):
        try:
            row = _run_config(args, precision, backend, mode, weights)
        except Exception as err:  # one failing configuration (e.g. a compile error) must not hide the others
            row = {
                "precision": precision,
                "backend": backend,
                "mode": mode,
                "weights": weights,
                "error": repr(err),
            }
        results["rows"].append(row)
        print(_fmt_row(row), flush=True)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2))  # kept if a later row is cut short
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    results["ratios"] = _ratios(results["rows"])
    _print_table(results)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.output}")
    return results


def configurations(args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    """``(precision, mode, weights, backend)`` of every row, backends innermost (ours and the baseline run
    back to back in every precision and mode); the baselines get ``--baseline-weights``."""
    ours_weights = args.weights.split(",")
    baseline_weights = (args.baseline_weights or args.weights).split(",")
    every_weights = list(dict.fromkeys([*ours_weights, *baseline_weights]))
    return [
        (precision, mode, weights, backend)
        for precision, mode, weights, backend in itertools.product(
            args.precisions.split(","), args.modes.split(","), every_weights, args.backends.split(",")
        )
        if weights in (baseline_weights if backend in BASELINES else ours_weights)
    ]


def _ratios(rows: list[dict]) -> dict:
    """Speed ratios of ours+LATS (best mode) vs SpikingJelly eager and vs SpikingJelly compiled, per precision."""
    out = {}
    ok = [r for r in rows if "error" not in r]
    for precision in sorted({r["precision"] for r in ok}):

        def best(rs):
            return max((r["images_per_s"] for r in rs), default=None)

        ours = best(
            [
                r
                for r in ok
                if r["precision"] == precision and r["backend"] not in BASELINES and r["weights"] == "lats"
            ]
        )
        sj_eager = best(
            [
                r
                for r in ok
                if r["precision"] == precision and r["backend"] in BASELINES and r["mode"] == "eager"
            ]
        )
        sj_comp = best(
            [
                r
                for r in ok
                if r["precision"] == precision and r["backend"] in BASELINES and r["mode"] != "eager"
            ]
        )
        same_mode = {}
        for mode in sorted({r["mode"] for r in ok if r["precision"] == precision}):
            for weights in sorted({r["weights"] for r in ok}):
                sel = [
                    r
                    for r in ok
                    if r["precision"] == precision and r["mode"] == mode and r["weights"] == weights
                ]
                o = best([r for r in sel if r["backend"] not in BASELINES])
                b = best([r for r in sel if r["backend"] in BASELINES])
                same_mode[f"{mode}/{weights}"] = o / b if o and b else None
        out[precision] = {
            "ours_lats_vs_sj_eager": ours / sj_eager if ours and sj_eager else None,
            "ours_lats_vs_sj_compile": ours / sj_comp if ours and sj_comp else None,
            "ours_vs_sj_same_mode": same_mode,
        }
    return out


def _fmt_row(r: dict) -> str:
    if "error" in r:
        return f"| {r['precision']} | {r['backend']} | {r['mode']} | {r['weights']} | ERROR {r['error'][:80]} | | |"
    return (
        f"| {r['precision']} | {r['backend']} | {r['mode']} | {r['weights']} | {r['step_ms']:.1f} / "
        f"{r['step_ms_median']:.1f} | {r['images_per_s']:.0f} | {r['warmup_s']:.0f} |"
    )


def _print_table(results: dict) -> None:
    print(f"# {results['device']}  torch {results['torch']}")
    print("| precision | neurons | mode | weights | step ms (min / median) | images/s (best) | warm-up s |")
    print("|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        print(_fmt_row(r))
    for precision, ratio in results["ratios"].items():
        fmt = {
            k: "n/a" if v is None else f"{v:.2f}x" for k, v in ratio.items() if k != "ours_vs_sj_same_mode"
        }
        print(
            f"{precision}: ours+LATS vs SpikingJelly eager {fmt['ours_lats_vs_sj_eager']} (target >= 1.5x), "
            f"vs SpikingJelly + torch.compile {fmt['ours_lats_vs_sj_compile']} (target >= 1.0x)"
        )
        same = ", ".join(
            f"{k} {'n/a' if v is None else f'{v:.2f}x'}" for k, v in ratio["ours_vs_sj_same_mode"].items()
        )
        print(f"{precision}: ours vs SpikingJelly in the same mode: {same}")


if __name__ == "__main__":
    main()
