"""Registers, spills and stack per fused neuron kernel specialization, from ptxas (no GPU needed).

Compiles the generated CUDA source of :mod:`snnprune.neuron.kernels.source` with ``nvcc -cubin
-arch=<arch> -Xptxas -v`` (same source and no fast math, as the runtime NVRTC build) and prints one row per
kernel plus a summary per family (direction, neuron kind, dtype, launch variant), writes JSON.
Occupancy at 256 threads per block is derived from the register count (65,536 registers and 64 warps per
SM on sm_80/sm_90; register allocation granularity 256 per warp).

Usage::

    python scripts/neuron_kernel_resources.py --output runs/neuron_kernel_resources.json
    python scripts/neuron_kernel_resources.py --quick   # 12 kernels, for tests

Exits with code 2 and a message when ``nvcc`` is not on PATH.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["get_args_parser", "main", "occupancy", "parse_ptxas"]

LAUNCHES = {
    "Tn_v1": (0, 1),
    "Tn_v2": (0, 2),
    "T4_v1": (4, 1),
    "T4_v2": (4, 2),
    "T8_v2": (8, 2),
    "T16_v1": (16, 1),
}


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options (returned, not parsed)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="sm_90", help="GPU architecture for ptxas (default sm_90, H100)")
    p.add_argument("--quick", action="store_true", help="12 kernels (IF/LIF/PLIF x fp32/bf16, T=4, vec 2)")
    p.add_argument("--output", default="neuron_kernel_resources.json", help="JSON file to write")
    return p


def _keys(quick: bool):
    from snnprune.neuron.kernels import source

    rows = []
    dtypes = ("fp32", "bf16") if quick else tuple(source.DTYPES)
    launches = {"T4_v2": LAUNCHES["T4_v2"]} if quick else LAUNCHES
    for kind in ("if", "lif", "plif"):
        for dtype in dtypes:
            for launch, (steps, vec) in launches.items():
                fwd = source.ForwardKey(kind, True, True, dtype, steps, vec, True)
                rows.append((("fwd", kind, dtype, launch), fwd))
                for sg in ("atan",) if quick else ("atan", "sigmoid"):
                    bwd = source.BackwardKey(kind, True, True, dtype, False, sg, steps, vec, True)
                    rows.append((("bwd", kind, dtype, launch), bwd))
    return rows


def parse_ptxas(log: str) -> dict[str, dict[str, int]]:
    """``{kernel: {registers, spill_stores, spill_loads, stack}}`` from ``ptxas -v`` output.

    Args:
        log: the text ptxas printed (stderr of nvcc ``-Xptxas -v``).

    Returns:
        One entry per compiled entry function.
    """
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = m.group(1)
            out[current] = {"registers": 0, "spill_stores": 0, "spill_loads": 0, "stack": 0}
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            out[current].update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[current]["registers"] = int(m[1])
    return out


def occupancy(registers: int, threads: int = 256) -> float:
    """Fraction of an SM's 64 warps resident for ``threads``-thread blocks at ``registers`` per thread."""
    per_warp = -(-registers * 32 // 256) * 256
    warps_per_block = threads // 32
    blocks = min(65536 // (per_warp * warps_per_block), 32, 64 // warps_per_block)
    return blocks * warps_per_block / 64


def main(argv: list[str] | None = None) -> dict:
    """Compile, print the table and the per-family summary, write JSON; returns the results."""
    args = get_args_parser().parse_args(argv)
    if shutil.which("nvcc") is None:
        print("neuron_kernel_resources.py needs nvcc (CUDA toolkit) on PATH; none found.", file=sys.stderr)
        sys.exit(2)
    from snnprune.neuron.kernels import source

    rows = _keys(args.quick)
    code = "\n".join(
        source.forward_source(k) if isinstance(k, source.ForwardKey) else source.backward_source(k)
        for _, k in rows
    )
    with tempfile.TemporaryDirectory() as tmp:
        cu = Path(tmp) / "kernels.cu"
        cu.write_text(code)
        cmd = [
            "nvcc",
            "-cubin",
            f"-arch={args.arch}",
            "-Xptxas",
            "-v",
            "-o",
            str(Path(tmp) / "k.cubin"),
            str(cu),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if r.returncode != 0:
        print(r.stderr[-4000:], file=sys.stderr)
        sys.exit(1)
    res = parse_ptxas(r.stderr + r.stdout)
    kernels = []
    for (direction, kind, dtype, launch), key in rows:
        info = res[key.name]
        kernels.append(
            {
                "kernel": key.name,
                "family": f"{direction} {kind} {dtype} {launch}",
                **info,
                "occupancy_256": occupancy(info["registers"]),
            }
        )
    result = {"arch": args.arch, "nvcc": _nvcc_version(), "kernels": kernels}
    _print(result)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")
    return result


def _nvcc_version() -> str:
    r = subprocess.run(["nvcc", "--version"], capture_output=True, text=True)
    return r.stdout.strip().splitlines()[-1] if r.returncode == 0 else "unknown"


def _print(result: dict) -> None:
    print(f"# ptxas -v, {result['arch']}, {result['nvcc']}; occupancy at 256 threads/block from registers")
    print("| family | registers | spill stores B | spill loads B | stack B | occupancy |")
    print("|---|---|---|---|---|---|")
    families: dict[str, list[dict]] = {}
    for k in result["kernels"]:
        families.setdefault(k["family"], []).append(k)
    for family, ks in families.items():
        regs = sorted({k["registers"] for k in ks})
        reg = str(regs[0]) if len(regs) == 1 else f"{regs[0]}-{regs[-1]}"
        occ = min(k["occupancy_256"] for k in ks)
        print(
            f"| {family} | {reg} | {max(k['spill_stores'] for k in ks)} | {max(k['spill_loads'] for k in ks)} | "
            f"{max(k['stack'] for k in ks)} | {occ:.0%} |"
        )


if __name__ == "__main__":
    main()
