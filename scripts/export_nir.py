"""Export a trained run as a NIR graph and check it in SpikingJelly, snnTorch and Norse.

    python scripts/export_nir.py runs/sew_resnet18_lats_D0.1            # writes RUN/model.nir, prints the table
    python scripts/export_nir.py RUN --compact --images 200 --json rows.json

The run's finalized model (or, with ``--compact``, its compacted filter-pruned model) is exported with
``snnprune.export_nir`` and re-imported with ``snnprune.verify_nir`` on the first ``--images`` test images:
one row per framework with its spike mismatches (every neuron, every step), the largest output difference
and the top-1. The first row, "source model", is the model itself against the BN-folded network the file
holds (the frameworks' reference): a potential exactly at the threshold can flip with the fold's float32
rounding. Progress bars on a terminal; in a log, one line before the check.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import models  # noqa: E402, F401  (declares the model builders that run folders name)
import snnprune  # noqa: E402
from snnprune.interop import FRAMEWORKS, format_rows, model_nonzeros, nir_nonzeros  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a training run folder (config.json + best.pth)")
    p.add_argument("--out", default=None, help="NIR file to write (default RUN/model.nir)")
    p.add_argument("--images", type=int, default=1000, help="test images to verify on (default 1000)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--dt", type=float, default=1e-4, help="NIR time step in seconds (default 1e-4)")
    p.add_argument("--compact", action="store_true", help="export the compacted model (filter runs)")
    p.add_argument("--portable", action="store_true", help="export_nir(portable=True): for outside importers")
    p.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    return p


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def load(run: str, compact: bool) -> tuple[torch.nn.Module, object]:
    """The run's finalized (or compacted) model and its test set, rebuilt by ``snnprune.load_run``."""
    r = snnprune.load_run(run, finalize=not compact, compact=compact)
    return r.model, r.test_data(batch_size=100).dataset


def main(argv: list[str] | None = None) -> list[dict]:
    args = get_parser().parse_args(argv)
    if args.images < 1:
        _fail(f"--images: must be a positive integer, got {args.images}; pass e.g. --images 1000")
    if args.batch_size < 1:
        _fail(f"--batch-size: must be a positive integer, got {args.batch_size}")
    if not (math.isfinite(args.dt) and args.dt > 0):
        _fail(f"--dt: must be a finite positive number of seconds, got {args.dt}; the NIR default is 1e-4")
    if not Path(args.run).is_dir():
        _fail(f"RUN {args.run}: not a folder; pass a training run folder (config.json + best.pth)")
    out = Path(args.out) if args.out else Path(args.run) / "model.nir"
    for option, path in (("--out", out), ("--json", Path(args.json) if args.json else None)):
        if path is not None and (path.is_dir() or not path.parent.is_dir()):
            what = "is a folder" if path.is_dir() else f"is in a folder that does not exist ({path.parent})"
            _fail(f"{option} {path}: {what}; pass a file in an existing folder")
    try:
        model, test_set = load(args.run, args.compact)
    except (ValueError, RuntimeError, OSError) as exc:  # load_run's errors name the file and the fix
        _fail(str(exc).splitlines()[0])
    data = DataLoader(Subset(test_set, range(min(args.images, len(test_set)))), batch_size=args.batch_size)
    example = next(iter(data))[0][:2]
    try:  # export_nir and verify_nir refuse bad inputs with one line
        graph = snnprune.export_nir(model, example, out, dt=args.dt, portable=args.portable)
        print(f"wrote {out}: {len(graph.nodes)} nodes, {len(graph.edges)} edges, T = {graph.metadata['T']}")
        print(f"non-zero weights: file {nir_nonzeros(graph):,}, model {model_nonzeros(model):,}")
        tty = sys.stderr.isatty()  # bars on a terminal; a log gets this one line
        if not tty:
            print(
                f"verifying on {len(data.dataset)} images: {', '.join(['source model', *args.frameworks])}",
                flush=True,
            )
        rows = snnprune.verify_nir(out, model, data, frameworks=tuple(args.frameworks), progress=tty)
        print(format_rows(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    except (ValueError, OSError) as exc:
        _fail(str(exc).splitlines()[0])
    return rows


if __name__ == "__main__":
    main()
