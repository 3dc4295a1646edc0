"""Measured speed-up of physically compacted (filter-pruned) models against the dense model, in one run.

For each model (SEW ResNet-18 and its ANN twin) and base width, the dense model and compacted copies at
several channel sparsities are timed, interleaved (dense, p1, p2, ... in every repetition, so load changes of
a shared machine hit all variants alike):

* inference latency at batch 1 and the large batch (eval mode, ``torch.no_grad``, neuron state reset per
  batch);
* one training step at the large batch (forward, cross-entropy, backward, SGD step).

``--scale`` picks the input and the defaults: ``mnist`` (small stem, ``[N, 1, 28, 28]``, 10 classes; widths 16
and 64, T = 2, batch 64) or ``imagenet`` (ImageNet stem: 7x7/2 conv and 3x3/2 max-pool, ``[N, 3, 224, 224]``,
1000 classes; width 64, T = 4, batch 32). ``--widths``, ``--T`` and ``--batch`` override the defaults.

A compacted copy at channel sparsity ``p`` is made the way a filter-pruned run is: the group soft-threshold
of ``granularity="filter"`` is attached, the filters of ``round(p * U)`` of the ``U`` units of every channel
group (coupled SEW/residual streams and block-internal channels alike; for the transformers the MLP hidden
channels and the attention heads, a head being one unit of ``head_dim`` channels) are driven under the
threshold, and :func:`snnprune.compact` removes them (checked against the masked model). ``--groups mlp`` or
``--groups heads`` restricts this to the transformers' MLP or head groups. Timing does not depend on the
weight values, so no training is needed here; accuracy at each sparsity comes from real runs
(``scripts/make_structured_figure.py``).

Prints a table (min and median per cell, speed-up = dense min / variant min) and writes JSON (``--json``,
rewritten after every row).
One intra-op thread by default on the CPU (``--threads``), so the numbers measure the kernels, not the
scheduler. ``--device cuda`` times the same cells on a GPU (models and inputs moved there after compaction,
every call timed with CUDA events and the device synchronized after it: ``scripts/timing.py``).

Usage::

    python scripts/bench_compact.py --json /tmp/bench_compact.json
    python scripts/bench_compact.py --widths 16 --sparsities 0.5 --repeats 3 --json out.json  # quick
    python scripts/bench_compact.py --device cuda --repeats 20 --repeats-wide 20 --json gpu.json
    python scripts/bench_compact.py --scale imagenet --device cuda --repeats-wide 10 --json gpu_imagenet.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import time_calls  # scripts/ is on sys.path: the script's own folder

import models
import snnprune
from snnprune.methods import select_layers
from snnprune.structured import attach_filter_threshold, channel_groups


def _reset(model: nn.Module) -> None:
    from spikingjelly.activation_based import functional

    functional.reset_net(model)


#: ``--scale``: the stem, the input ``[channels, size, size]``, the classes, and the defaults of the options.
SCALES = {
    "mnist": {"stem": "small", "in_channels": 1, "size": 28, "num_classes": 10, "widths": [16, 64], "T": 2,
              "batch": 64},
    "imagenet": {"stem": "imagenet", "in_channels": 3, "size": 224, "num_classes": 1000, "widths": [64],
                 "T": 4, "batch": 32},
}  # fmt: skip

#: --kinds: the model and the option its width sets (SEW ResNet-18 and its twin; the small Spikformer and its
#: twin, whose groups are the MLP hidden channels and the attention heads).
KINDS = {
    "sew": ("sew_resnet18", "width"),
    "ann": ("ann_resnet18", "width"),
    "spikformer": ("spikformer_small", "embed_dim"),
    "ann_spikformer": ("ann_spikformer_small", "embed_dim"),
}


def build(kind: str, width: int, T: int, scale: str = "mnist") -> nn.Module:
    """Dense model of ``kind`` (:data:`KINDS`) with the stem, input channels and classes of ``scale`` (a key
    of :data:`SCALES`), where the model takes them."""
    name, width_option = KINDS[kind]
    sc = SCALES[scale]
    taken = models.model_kwargs(name)
    options = {"num_classes": sc["num_classes"], "in_channels": sc["in_channels"], "stem": sc["stem"], "T": T}
    options[width_option] = width
    return models.create_model(name, **{k: v for k, v in options.items() if k in taken})


#: --groups: the prefixes of the group names driven under the threshold (None: every group).
GROUPS = {"all": None, "mlp": ("mlp:",), "heads": ("heads:",)}


@torch.no_grad()
def compacted(
    kind: str, width: int, T: int, sparsity: float, x: torch.Tensor, scale: str = "mnist", groups: str = "all"
) -> nn.Module:
    """A compacted copy with ``round(sparsity * U)`` of the ``U`` units of every group (of ``groups``, a key
    of :data:`GROUPS`) removed."""
    torch.manual_seed(0)
    model = build(kind, width, T, scale)
    if sparsity == 0:
        return model
    classifier = "fc" if hasattr(model, "fc") else "head"  # kept dense
    layers = select_layers(model, exclude=[classifier])
    attach_filter_threshold(model, layers, threshold=0.0)
    modules = dict(model.named_modules())
    prefixes = GROUPS[groups]
    for group in channel_groups(model):
        if prefixes is not None and not group.name.startswith(prefixes):
            continue
        for conv_name, _ in group.producers:
            theta = modules[conv_name].parametrizations.weight.original
            units = theta.shape[0] // group.width
            theta[: round(sparsity * units) * group.width] = 0.0  # RMS 0 <= any D: removed
    for layer in layers.values():
        layer.parametrizations.weight[0].threshold.fill_(1e-6)
    model.eval()
    return snnprune.compact(model, x)


def _infer(model: nn.Module, x: torch.Tensor) -> Any:
    def run() -> None:
        with torch.no_grad():
            model(x)
        _reset(model)

    return run


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        _reset(model)

    return run


def params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def bench(args: argparse.Namespace, save: Any = None) -> list[dict[str, Any]]:
    """Time every (kind, width, sparsity, measure) cell, interleaving the sparsities; returns the rows
    (``save(rows)`` is called after every row, so a run cut short keeps what it measured)."""
    rows: list[dict[str, Any]] = []
    sparsities = [0.0] + [p for p in args.sparsities if p > 0]
    device = torch.device(args.device)
    sc = SCALES[args.scale]
    shape = (sc["in_channels"], sc["size"], sc["size"])
    for kind in args.kinds:
        for width in args.widths:
            g = torch.Generator().manual_seed(0)
            x1 = torch.rand(1, *shape, generator=g)
            x64 = torch.rand(args.batch, *shape, generator=g).to(device)
            y64 = torch.randint(0, sc["num_classes"], (args.batch,), generator=g).to(device)
            nets = {
                p: compacted(kind, width, args.T, p, x1, args.scale, args.groups).to(device)
                for p in sparsities
            }
            train_nets = {
                p: compacted(kind, width, args.T, p, x1, args.scale, args.groups).to(device).train()
                for p in sparsities
            }
            x1 = x1.to(device)
            measures = {
                "infer_b1": {p: _infer(nets[p].eval(), x1) for p in sparsities},
                f"infer_b{args.batch}": {p: _infer(nets[p].eval(), x64) for p in sparsities},
                f"train_b{args.batch}": {p: _train_step(train_nets[p], x64, y64) for p in sparsities},
            }
            repeats = args.repeats if width <= 32 else args.repeats_wide
            for measure, fns in measures.items():
                times = time_calls(fns, repeats, warmup=1, device=device)
                base = min(times[0.0])
                for p in sparsities:
                    rows.append(
                        {
                            "kind": kind,
                            "groups": args.groups,
                            "scale": args.scale,
                            "width": width,
                            "channel_sparsity": p,
                            "params": params(nets[p]),
                            "measure": measure,
                            "min_ms": 1e3 * min(times[p]),
                            "median_ms": 1e3 * statistics.median(times[p]),
                            "speedup_min": base / min(times[p]),
                            "speedup_median": statistics.median(times[0.0]) / statistics.median(times[p]),
                            "repeats": repeats,
                        }
                    )
                    print(_fmt(rows[-1]), flush=True)
                    if save is not None:
                        save(rows)
    return rows


def _fmt(r: dict[str, Any]) -> str:
    return (
        f"| {r['kind']}{'' if r['groups'] == 'all' else ' (' + r['groups'] + ')'} | {r['width']} | {r['channel_sparsity']:.2f} | {r['params']:,} | {r['measure']} | "
        f"{r['min_ms']:.1f} | {r['median_ms']:.1f} | {r['speedup_min']:.2f}x | {r['speedup_median']:.2f}x |"
    )


def get_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kinds", nargs="+", choices=tuple(KINDS), default=["sew", "ann"])
    p.add_argument(
        "--scale", choices=tuple(SCALES), default="mnist", help="input, stem and defaults (see the docstring)"
    )
    p.add_argument("--widths", nargs="+", type=int, default=None, help="base widths (default: by --scale)")
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.25, 0.5, 0.75])
    p.add_argument(
        "--groups",
        choices=tuple(GROUPS),
        default="all",
        help="which groups lose units: all, or only the transformers' MLP channels or attention heads",
    )
    p.add_argument("--T", type=int, default=None, help="SEW time steps (default: by --scale)")
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="the large batch, inference and training (default: by --scale)",
    )
    p.add_argument("--repeats", type=int, default=9, help="timed repetitions per cell (width <= 32)")
    p.add_argument("--repeats-wide", type=int, default=3, help="timed repetitions per cell (width > 32)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default 1: on an oversubscribed shared CPU, 2 OpenMP threads wait on "
        "each other's time slices and a batch-1 SEW forward takes 100x longer; 0 = torch's default)",
    )
    p.add_argument("--device", default="cpu", help="cpu, or cuda (timed with device synchronization)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the rows and the machine as JSON")
    return p


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; print the table; write the JSON."""
    parser = get_parser()
    args = parser.parse_args(argv)
    for name in ("widths", "T", "batch"):
        if getattr(args, name) is None:
            setattr(args, name, SCALES[args.scale][name])
    for p in args.sparsities:
        if not 0 <= p < 1:
            parser.error(f"--sparsities: {p} is not in [0, 1); give channel fractions such as 0.5")
    if min(args.widths) < 4 or args.repeats < 1 or args.repeats_wide < 1:
        parser.error("--widths must be >= 4 and --repeats/--repeats-wide >= 1")
    if args.T < 1 or args.batch < 1:
        parser.error(f"--T {args.T} / --batch {args.batch}: both must be >= 1")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device: {args.device!r} is not a device; give cpu or cuda")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device: {args.device!r} is not supported; give cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(f"# bench_compact, --scale {args.scale}, on {machine}")
    print(
        "| model | width | channel sparsity | params | measure | min ms | median ms | speed-up (min) | (median) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")

    def save(rows: list[dict[str, Any]]) -> None:
        Path(args.json).write_text(
            json.dumps({"machine": machine, "args": vars(args), "rows": rows}, indent=2)
        )

    rows = bench(args, save if args.json else None)
    if torch.cuda.is_available() and device.type == "cpu":
        print("# CUDA is available; this run timed the CPU (--device cuda times the GPU)")
    return rows


if __name__ == "__main__":
    main()
