"""Benchmark the fused multi-step neuron kernels against SpikingJelly 2.0.0 and the bandwidth floor.

GPU mode (default) measures, in one run on one GPU: device-to-device copy bandwidth; snnprune's fused
kernels through the node (eager: host + GPU) and as a CUDA-graph replay (kernel time only); SpikingJelly
2.0.0's automatic dispatch (Triton for fp32; its per-step torch loop under fp16, since its node creates the
state in the input dtype); SpikingJelly's functional op with an fp32 state for half inputs (its fastest
path); SpikingJelly's per-step torch loop (``_ops.<op>.reference``). IF and LIF (ATan, detach_reset, hard
reset), fp32 and fp16, forward (no_grad) and forward+backward. Every row reports the min and the median
over repeats, next to the floors (bytes per neuron-step at the copy bandwidth: 2 tensor passes for
inference, 5 for training with recomputation) and the bytes the fused kernels move per neuron-step.

CPU mode (``--cpu``) measures the host cost of the node path (``reset_net``, initial state, dispatch,
allocations, autograd) with a launcher that does nothing, interleaved with the custom-op path that
``torch.compile`` uses, and prints the byte counts; it needs no GPU.

Usage::

    python scripts/bench_neurons.py --output runs/bench_neurons.json
    python scripts/bench_neurons.py --cpu --output runs/bench_neurons_cpu.json

GPU mode exits with code 2 and a message when no CUDA device or no CuPy is available.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
from timing import min_median, time_calls  # scripts/ is on sys.path: the script's own folder

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["get_args_parser", "main"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options (returned, not parsed)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="host overhead with a no-op launcher (no GPU needed)")
    p.add_argument("--T", type=int, default=4, help="time steps")
    p.add_argument("--shape", default=None, help="per-step shape N,C,H,W (GPU 32,64,56,56; CPU 1,64,8,8)")
    p.add_argument("--dtypes", default="fp32,fp16", help="comma list of fp32,fp16,bf16")
    p.add_argument("--neurons", default="if,lif", help="comma list of if,lif,plif")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per repeat (GPU 100, CPU 20)")
    p.add_argument(
        "--repeats", type=int, default=None, help="repeats; min and median reported (GPU 5, CPU 30)"
    )
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="CPU mode: torch intra-op threads (host cost, 1)")
    p.add_argument("--output", default="bench_neurons.json", help="JSON file to write")
    return p


def _parse(argv):
    args = get_args_parser().parse_args(argv)
    try:
        shape = tuple(int(s) for s in (args.shape or ("1,64,8,8" if args.cpu else "32,64,56,56")).split(","))
    except ValueError:
        print(f"--shape must be a comma list of integers, got {args.shape!r}", file=sys.stderr)
        sys.exit(2)
    for name, allowed in (("dtypes", DTYPES), ("neurons", ("if", "lif", "plif"))):
        bad = [v for v in getattr(args, name).split(",") if v not in allowed]
        if bad:
            print(f"--{name}: unknown {bad}; choose from {','.join(allowed)}", file=sys.stderr)
            sys.exit(2)
    args.shape = shape
    args.iters = args.iters or (20 if args.cpu else 100)
    args.repeats = args.repeats or (30 if args.cpu else 5)
    return args


@contextlib.contextmanager
def _counting_forward_launches():
    """Count the fused forward kernel launches: ``ops.launch_kernel`` wrapped while the block runs.

    Yields:
        ``{"fwd": n}``, updated at every forward launch (the sentinel that a row ran the fused kernels).
    """
    from snnprune.neuron.kernels import ops, source

    counts = {"fwd": 0}
    launch = ops.launch_kernel

    def counting(key, units, args, device):
        counts["fwd"] += isinstance(key, source.ForwardKey)
        launch(key, units, args, device)

    ops.launch_kernel = counting
    try:
        yield counts
    finally:
        ops.launch_kernel = launch


def _require_gpu() -> None:
    if not torch.cuda.is_available():
        print(
            "bench_neurons.py needs a CUDA GPU; none is visible (torch.cuda.is_available() is False). "
            "Use --cpu for the host-overhead mode.",
            file=sys.stderr,
        )
        sys.exit(2)
    from snnprune.neuron import cupy_runtime

    if not cupy_runtime.cupy_available():
        print(
            f"bench_neurons.py needs CuPy ({cupy_runtime.cupy_import_error()!r}); {cupy_runtime.INSTALL_HINT}.",
            file=sys.stderr,
        )
        sys.exit(2)


def _node(kind: str, impl: str, device: str):
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate

    import snnprune.neuron as ours

    common = dict(surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m", v_reset=0.0)
    if impl == "snnprune":
        cls = {"if": ours.IFNode, "lif": ours.LIFNode, "plif": ours.ParametricLIFNode}[kind]
        return cls(backend="cupy", **common).to(device)
    cls = {"if": sj_neuron.IFNode, "lif": sj_neuron.LIFNode, "plif": sj_neuron.ParametricLIFNode}[kind]
    return cls(**common).to(device)


def _sj_callable(kind: str, impl: str, device: str):
    """A function x -> spikes for the SpikingJelly rows (node dispatch, fp32-state functional, torch loop)."""
    from spikingjelly.activation_based import functional, surrogate

    node = _node(kind, "sj_dispatch", device)
    sg = surrogate.ATan()
    if impl == "sj_dispatch":

        def run(x):
            functional.reset_net(node)
            return node(x)

        return run, node
    if impl == "sj_fp32_state":

        def run(x):
            v = torch.zeros(x.shape[1:], device=x.device, dtype=torch.float32)
            if kind == "if":
                return functional.if_multi_step(x, v, 1.0, 0.0, sg, True)[0]
            if kind == "lif":
                return functional.lif_multi_step(x, v, 2.0, True, 1.0, 0.0, sg, True)[0]
            return functional.plif_multi_step(x, v, node.w, True, 1.0, 0.0, sg, True)[0]

        return run, node
    from spikingjelly._ops.if_.reference import multi_step as if_ms
    from spikingjelly._ops.lif.reference import multi_step as lif_ms
    from spikingjelly._ops.plif.reference import multi_step as plif_ms

    def run(x):
        v = torch.zeros_like(x[0])
        if kind == "if":
            return if_ms(x, v, 1.0, 0.0, sg, True)[0]
        if kind == "lif":
            return lif_ms(x, v, 2.0, True, 1.0, 0.0, sg, True)[0]
        return plif_ms(x, v, node.w, True, 1.0, 0.0, sg, True)[0]

    return run, node


def _bytes_table(dtypes, steps) -> list[dict]:
    from snnprune.neuron.kernels import ops

    rows = []
    for dname in dtypes:
        for phase, training in (("fwd", False), ("fwd+bwd", True)):
            for state_tensor in (False, True):
                t = ops.traffic_bytes(DTYPES[dname], steps, training=training, state_tensor=state_tensor)
                rows.append(
                    {"dtype": dname, "phase": phase, "state": "tensor" if state_tensor else "scalar", **t}
                )
    return rows


def _print_bytes(rows: list[dict], steps: int) -> None:
    print(f"\n# bytes per neuron-step moved by the fused kernels (T={steps}), counted from the source")
    print(
        "| dtype | phase | initial state | bytes | floor inference (2 passes) | floor training (5 passes) | x floor |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        floor = r["floor_training"] if r["phase"] == "fwd+bwd" else r["floor_inference"]
        print(
            f"| {r['dtype']} | {r['phase']} | {r['state']} | {r['bytes']:.2f} | {r['floor_inference']} | "
            f"{r['floor_training']} | {r['bytes'] / floor:.3f} |"
        )


# ----------------------------------------------------------------------------------------------- CPU mode


class _Allocations(torch.autograd.Function):
    """The fused path's allocations (spikes, fp32 state; input gradient) and nothing else: the host floor."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.empty_like(x), torch.empty(x.shape[1:], dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad_spikes, grad_v):
        (x,) = ctx.saved_tensors
        return torch.empty_like(x)


def _cpu_main(args) -> dict:
    from spikingjelly.activation_based import functional

    from snnprune.neuron.kernels import ops

    def noop(key, blocks, units, args_):
        return None

    torch.set_num_threads(args.threads)
    results = {
        "mode": "cpu-host-overhead",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "T": args.T,
        "shape": list(args.shape),
        "rows": [],
    }
    cases = []
    for dname in args.dtypes.split(","):
        x = (torch.randn(args.T, *args.shape) + 0.5).to(DTYPES[dname])
        grad = torch.randn_like(x)
        xg0 = x.detach().requires_grad_(True)

        def floor_fwd_bwd(xg=xg0, grad=grad):
            torch.autograd.grad(_Allocations.apply(xg)[0], xg, grad)

        cases.append(({"neuron": "-", "dtype": dname, "path": "floor: autograd.Function, same allocations, no work",
                       "phase": "fwd+bwd"}, floor_fwd_bwd))  # fmt: skip
        for kind in args.neurons.split(","):
            node = _node(kind, "snnprune", "cpu")
            xg = x.detach().requires_grad_(True)

            def node_fwd(node=node, x=x):
                functional.reset_net(node)
                with torch.no_grad():
                    node(x)

            def node_fwd_bwd(node=node, xg=xg, grad=grad):
                functional.reset_net(node)
                torch.autograd.grad(node(xg), xg, grad)

            q = torch.tensor(0.5, requires_grad=True) if kind == "plif" else None
            op_args = (kind, 2.0, True, 1.0, 0.0, True, "atan", 2.0, False)

            def op_fwd(x=x, q=q, op_args=op_args):
                with torch.no_grad():
                    torch.ops.snnprune.multistep_neuron_fwd(x, None, 0.0, q, *op_args)

            def op_fwd_bwd(xg=xg, q=q, grad=grad, op_args=op_args):
                s = torch.ops.snnprune.multistep_neuron_fwd(xg, None, 0.0, q, *op_args)[0]
                torch.autograd.grad(s, xg, grad)

            for path, fns in (("node (eager autograd.Function)", (node_fwd, node_fwd_bwd)),
                              ("custom op (torch.compile path)", (op_fwd, op_fwd_bwd))):  # fmt: skip
                for phase, fn in zip(("fwd", "fwd+bwd"), fns, strict=True):
                    cases.append(({"neuron": kind, "dtype": dname, "path": path, "phase": phase}, fn))
    with ops.kernel_hooks(noop), _counting_forward_launches() as launched:
        # interleaved, each call timed on its own: a preemption by another process (milliseconds on a shared
        # CPU) costs one sample, not a whole block's mean
        samples = time_calls(
            dict(enumerate(fn for _, fn in cases)), args.repeats * args.iters, warmup=args.warmup
        )
        if launched["fwd"] == 0:
            raise RuntimeError("the node did not take the fused path (no fused forward launch counted)")
    for i, (row, _) in enumerate(cases):
        results["rows"].append({**row, **{f"{k}_us": v * 1e6 for k, v in min_median(samples[i]).items()}})
    results["bytes"] = _bytes_table(args.dtypes.split(","), args.T)
    print(
        f"# host time per call (min and median over {args.repeats * args.iters} single calls), no-op kernel "
        f"launcher, CPU ({results['threads']} threads), torch {results['torch']}, T={args.T} "
        f"shape={list(args.shape)}; target: node fwd+bwd <= 150 us"
    )
    print("| neuron | dtype | path | phase | min us | median us |")
    print("|---|---|---|---|---|---|")
    for r in results["rows"]:
        print(
            f"| {r['neuron']} | {r['dtype']} | {r['path']} | {r['phase']} | {r['min_us']:.0f} | {r['median_us']:.0f} |"
        )
    _print_bytes(results["bytes"], args.T)
    return results


# ----------------------------------------------------------------------------------------------- GPU mode


def _time_ms(fn, iters: int, repeats: int, warmup: int) -> dict[str, float]:
    """Min and median ms per call over ``repeats`` samples of ``iters`` calls (CUDA events)."""
    samples = time_calls({"fn": fn}, repeats, warmup=warmup, number=iters, device="cuda")["fn"]
    return {k: v * 1e3 for k, v in min_median(samples).items()}


def _graph_ms(fn, iters: int, repeats: int, warmup: int) -> dict[str, float]:
    """Kernel-only time: ``fn`` captured once in a CUDA graph, then replayed."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return _time_ms(graph.replay, iters, repeats, warmup)


def _copy_bandwidth(nbytes: int, args) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = _time_ms(lambda: dst.copy_(src), args.iters, args.repeats, args.warmup)["min"]
    return 2 * nbytes / (ms * 1e-3)  # bytes read + written per second


def _gpu_main(args) -> dict:
    _require_gpu()
    from spikingjelly.activation_based import functional

    shape = args.shape
    neuron_steps = args.T * int(torch.tensor(shape).prod())
    bandwidth = _copy_bandwidth(neuron_steps * 4, args)
    results = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "T": args.T,
        "shape": list(shape),
        "copy_bandwidth_TBps": bandwidth / 1e12,
        "rows": [],
    }
    for dname in args.dtypes.split(","):
        dtype = DTYPES[dname]
        e = torch.tensor([], dtype=dtype).element_size()
        floor = {
            "fwd": 2 * e * neuron_steps / bandwidth * 1e3,
            "fwd+bwd": 5 * e * neuron_steps / bandwidth * 1e3,
        }
        x = torch.randn(args.T, *shape, device="cuda").to(dtype) + 0.5
        grad = torch.randn_like(x)
        for kind in args.neurons.split(","):
            impls = (
                ["snnprune", "sj_dispatch"]
                + (["sj_fp32_state"] if dname != "fp32" else [])
                + ["sj_torch_loop"]
            )
            for impl in impls:
                if impl == "snnprune":
                    node = _node(kind, impl, "cuda")

                    def run(x, node=node):
                        functional.reset_net(node)
                        return node(x)

                else:
                    run, node = _sj_callable(kind, impl, "cuda")

                def fwd(run=run, x=x):
                    with torch.no_grad():
                        run(x)

                xg = x.detach().requires_grad_(True)

                def fwd_bwd(run=run, xg=xg, grad=grad):
                    # autograd.grad, not .backward(): no accumulation into xg.grad (3 extra tensor passes)
                    torch.autograd.grad(run(xg), xg, grad)

                row = {"neuron": kind, "impl": impl, "dtype": dname}
                try:
                    with _counting_forward_launches() as launched:
                        for phase, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
                            row[f"{phase}_floor_ms"] = floor[phase]
                            row[f"{phase}_ms"] = _time_ms(fn, args.iters, args.repeats, args.warmup)
                            try:
                                row[f"{phase}_graph_ms"] = _graph_ms(
                                    fn, args.iters, args.repeats, args.warmup
                                )
                            except Exception as err:  # a baseline that cannot be captured keeps its eager row
                                row[f"{phase}_graph_ms"] = None
                                row[f"{phase}_graph_error"] = repr(err)[:200]
                                torch.cuda.synchronize()
                    if impl == "snnprune" and launched["fwd"] == 0:
                        raise RuntimeError(
                            "the snnprune row did not run the fused kernels (no fused forward launch counted)"
                        )
                except Exception as err:  # one failing implementation must not hide the other rows
                    row = {"neuron": kind, "impl": impl, "dtype": dname, "error": repr(err)[:300]}
                results["rows"].append(row)
                print(_row_lines(row)[0] if "error" in row else "\n".join(_row_lines(row)), flush=True)
    results["bytes"] = _bytes_table(args.dtypes.split(","), args.T)
    _print_gpu(results)
    _print_bytes(results["bytes"], args.T)
    return results


def _print_gpu(results: dict) -> None:
    print(
        f"# {results['device']}  torch {results['torch']}  T={results['T']} shape={results['shape']}  "
        f"copy {results['copy_bandwidth_TBps']:.2f} TB/s; ms as min / median over repeats; "
        "floors: fwd 2 passes, fwd+bwd 5 passes"
    )
    print("| neuron | impl | dtype | phase | eager ms | CUDA graph ms | floor ms | graph x floor |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        print("\n".join(_row_lines(r)))


def _row_lines(r: dict) -> list[str]:
    """Table lines of one row (one per phase), or one line naming the error."""
    if "error" in r:
        return [f"| {r['neuron']} | {r['impl']} | {r['dtype']} | - | ERROR {r['error'][:100]} | | | |"]
    lines = []
    for phase in ("fwd", "fwd+bwd"):
        e, g, f = r[f"{phase}_ms"], r[f"{phase}_graph_ms"], r[f"{phase}_floor_ms"]
        gtxt = "capture failed" if g is None else f"{g['min']:.3f} / {g['median']:.3f}"
        xf = "-" if g is None else f"{g['min'] / f:.2f}"
        lines.append(
            f"| {r['neuron']} | {r['impl']} | {r['dtype']} | {phase} | {e['min']:.3f} / {e['median']:.3f} | "
            f"{gtxt} | {f:.3f} | {xf} |"
        )
    return lines


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (GPU, or ``--cpu`` host overhead), print tables, write JSON; returns the results."""
    args = _parse(argv)
    results = _cpu_main(args) if args.cpu else _gpu_main(args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.output}")
    failed = [r for r in results["rows"] if "error" in r and r.get("impl") == "snnprune"]
    if failed:
        print(f"bench_neurons.py: {len(failed)} snnprune row(s) failed; see the ERROR lines", file=sys.stderr)
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
