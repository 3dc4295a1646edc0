"""Benchmark the fused multi-step neuron kernels against SpikingJelly 2.0.0 and the bandwidth floor.

Measures, in one run on one GPU: device-to-device copy bandwidth; snnprune's fused CuPy kernels;
SpikingJelly 2.0.0's automatic dispatch (Triton for fp32; its per-step torch loop under fp16, since its
state is created in the input dtype); SpikingJelly's per-step torch loop (``_ops.<op>.reference``).
For IF and LIF (ATan, detach_reset, hard reset), fp32 and fp16, forward and forward+backward, timed with
CUDA events. The floor is 3 tensor passes (forward) / 6 passes (forward+backward) at the copy bandwidth.

Usage::

    python scripts/bench_neurons.py --output runs/bench_neurons.json

Exits with code 2 and a message when no CUDA device or no CuPy is available.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["get_args_parser", "main"]


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options (returned, not parsed)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, default=4, help="time steps")
    p.add_argument("--shape", default="32,64,56,56", help="per-step shape N,C,H,W")
    p.add_argument("--dtypes", default="fp32,fp16", help="comma list of fp32,fp16,bf16")
    p.add_argument("--neurons", default="if,lif", help="comma list of if,lif,plif")
    p.add_argument("--iters", type=int, default=100, help="timed iterations per repeat")
    p.add_argument("--repeats", type=int, default=5, help="repeats; the best mean is reported")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--output", default="bench_neurons.json", help="JSON file to write")
    return p


def _require_gpu() -> None:
    if not torch.cuda.is_available():
        print(
            "bench_neurons.py needs a CUDA GPU; none is visible (torch.cuda.is_available() is False).",
            file=sys.stderr,
        )
        sys.exit(2)
    from snnprune.neuron import _cupy

    if not _cupy.cupy_available():
        print(
            f"bench_neurons.py needs CuPy ({_cupy.cupy_import_error()!r}); {_cupy.INSTALL_HINT}.",
            file=sys.stderr,
        )
        sys.exit(2)


def _time_ms(fn, iters: int, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / iters)
    return best


def _copy_bandwidth(nbytes: int, args) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = _time_ms(lambda: dst.copy_(src), args.iters, args.repeats, args.warmup)
    return 2 * nbytes / (ms * 1e-3)  # bytes read + written per second


def _make(kind: str, impl: str):
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate

    import snnprune.neuron as ours

    common = dict(surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m", v_reset=0.0)
    if impl == "snnprune":
        cls = {"if": ours.IFNode, "lif": ours.LIFNode, "plif": ours.ParametricLIFNode}[kind]
        return cls(backend="cupy", **common).cuda()
    cls = {"if": sj_neuron.IFNode, "lif": sj_neuron.LIFNode, "plif": sj_neuron.ParametricLIFNode}[kind]
    node = cls(**common).cuda()
    if impl == "sj_dispatch":
        return node
    # SpikingJelly's per-step torch loop: the _ops reference implementation of the same neuron.
    from spikingjelly._ops.if_.reference import multi_step as if_ms
    from spikingjelly._ops.lif.reference import multi_step as lif_ms
    from spikingjelly._ops.plif.reference import multi_step as plif_ms

    sg = common["surrogate_function"]

    def loop(x):
        v = torch.zeros_like(x[0])
        if kind == "if":
            return if_ms(x, v, 1.0, 0.0, sg, True)[0]
        if kind == "lif":
            return lif_ms(x, v, 2.0, True, 1.0, 0.0, sg, True)[0]
        return plif_ms(x, v, node.w, True, 1.0, 0.0, sg, True)[0]

    return loop


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a table, write JSON; returns the results dict."""
    args = get_args_parser().parse_args(argv)
    _require_gpu()
    from spikingjelly.activation_based import functional

    from snnprune.neuron.kernels import ops

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    shape = tuple(int(s) for s in args.shape.split(","))
    numel = args.T * int(torch.tensor(shape).prod())
    bandwidth = _copy_bandwidth(numel * 4, args)
    results = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "T": args.T,
        "shape": list(shape),
        "copy_bandwidth_TBps": bandwidth / 1e12,
        "rows": [],
    }
    for dname in args.dtypes.split(","):
        dtype = dtypes[dname]
        pass_bytes = numel * torch.tensor([], dtype=dtype).element_size()
        floor = {"fwd": 3 * pass_bytes / bandwidth * 1e3, "fwd+bwd": 6 * pass_bytes / bandwidth * 1e3}
        x = torch.randn(args.T, *shape, device="cuda").to(dtype) + 0.5
        grad = torch.randn_like(x)
        for kind in args.neurons.split(","):
            for impl in ("snnprune", "sj_dispatch", "sj_torch_loop"):
                node = _make(kind, impl)
                is_module = isinstance(node, torch.nn.Module)

                def fwd(node=node, is_module=is_module, x=x):
                    if is_module:
                        functional.reset_net(node)
                    with torch.no_grad():
                        node(x)

                xg = x.detach().requires_grad_(True)

                def fwd_bwd(node=node, is_module=is_module, xg=xg, grad=grad):
                    if is_module:
                        functional.reset_net(node)
                    # autograd.grad, not .backward(): no accumulation into xg.grad (3 extra tensor passes)
                    torch.autograd.grad(node(xg), xg, grad)

                before = ops.LAUNCHES["fwd"]
                row = {"neuron": kind, "impl": impl, "dtype": dname}
                for phase, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
                    ms = _time_ms(fn, args.iters, args.repeats, args.warmup)
                    row[f"{phase}_ms"] = ms
                    row[f"{phase}_x_floor"] = ms / floor[phase]
                    row[f"{phase}_floor_ms"] = floor[phase]
                if impl == "snnprune" and ops.LAUNCHES["fwd"] == before:
                    raise RuntimeError("the snnprune rows did not run the fused kernels (sentinel unchanged)")
                results["rows"].append(row)
    _print_table(results)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.output}")
    return results


def _print_table(results: dict) -> None:
    print(
        f"# {results['device']}  torch {results['torch']}  T={results['T']} shape={results['shape']}  "
        f"copy {results['copy_bandwidth_TBps']:.2f} TB/s"
    )
    print("| neuron | impl | dtype | fwd ms | fwd x floor | fwd+bwd ms | fwd+bwd x floor |")
    print("|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        print(
            f"| {r['neuron']} | {r['impl']} | {r['dtype']} | {r['fwd_ms']:.3f} | {r['fwd_x_floor']:.2f} | "
            f"{r['fwd+bwd_ms']:.3f} | {r['fwd+bwd_x_floor']:.2f} |"
        )


if __name__ == "__main__":
    main()
