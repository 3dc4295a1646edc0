"""Measure which NIR importers run snnprune's graphs: one row per importer, graph and export option.

    python scripts/nir_importers.py --json benchmarks/nir_importers.json
    python scripts/nir_importers.py --sinabs-python ENV/bin/python --spyx-python ENV2/bin/python

Graphs: a plain Conv-BN-IF-Linear net and a LIF MLP (784-64-10, on the flattened image: NIR ``Affine`` and
``LIF``, Xylo's dense path), each trained one epoch on the embedded MNIST training set (T = 2, surrogate gradients), and a width-4 small-stem SEW ResNet-18 (ADD) with IF and
with LIF neurons, untrained, with raised BatchNorm gains so that every stage fires (their top-1 is chance:
the spike mismatches are what they measure). Each graph is exported twice, with ``export_nir``'s defaults
and with ``portable=True``, and run by :func:`snnprune.verify_nir` on the first ``--images`` embedded
MNIST test images: every public importer unmodified, then the rows snnprune helps. Sinabs 3.1.3 pins
``nir<=1.0.4``, so its rows run in its own environment (``--sinabs-python``: a Python with ``sinabs``,
``nir==1.0.4`` and ``nirtorch==1.0``), and so do spyx's (``--spyx-python``: a Python with ``spyx`` and
JAX) and Rockpool's (``--rockpool-python``); this script calls each with the saved models and images.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import snnprune  # noqa: E402
from snnprune.interop import FRAMEWORKS  # noqa: E402

CASES = ("plain IF", "LIF MLP", "SEW IF", "SEW LIF")
T = 2


def build(case: str) -> nn.Module:
    """The untrained network of ``case`` (seeded; the same architecture in every environment)."""
    from spikingjelly.activation_based import neuron

    torch.manual_seed(0)
    if case == "plain IF":
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            neuron.IFNode(),
            nn.Flatten(),
            nn.Linear(8 * 14 * 14, 10),
        )
    if case == "LIF MLP":
        return nn.Sequential(nn.Linear(784, 64), neuron.LIFNode(tau=2.0), nn.Linear(64, 10))
    import models

    kw = {"neuron_backend": "auto"} if case == "SEW IF" else {"neuron": "lif"}
    m = models.create_model("sew_resnet18", num_classes=10, in_channels=1, T=T, width=4, stem="small", **kw)
    with torch.no_grad():  # raised gains: every stage fires
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(1.0, 3.0)
                mod.bias.uniform_(0.0, 0.5)
    return m


def inputs(case: str, x: torch.Tensor) -> torch.Tensor:
    """The images as ``case`` takes them: flat for the MLP."""
    return x.flatten(1) if case == "LIF MLP" else x


def train_one_epoch(case: str, net: nn.Module, train_set) -> None:
    """One epoch of Adam on the mean over T of the outputs (single-step mode, surrogate gradients)."""
    from spikingjelly.activation_based import functional

    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for x, y in torch.utils.data.DataLoader(train_set, batch_size=100, shuffle=True):
        functional.reset_net(net)
        out = torch.stack([net(inputs(case, x)) for _ in range(T)]).mean(0)
        loss = nn.functional.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    functional.reset_net(net)
    net.eval()


def rows_for(case: str, net: nn.Module, x: torch.Tensor, y: torch.Tensor, folder: Path, frameworks) -> list:
    import nir

    out, x = [], inputs(case, x)
    for option in ("default", "portable"):
        path = folder / f"{case.replace(' ', '_')}_{option}.nir"
        if not path.exists():
            snnprune.export_nir(net, x[:2], path, T=T, portable=option == "portable")
        try:
            nir.read(str(path))
        except Exception as e:  # the file itself is refused (nir 1.0.4 and a newer field)
            why = f"read: {type(e).__name__}: {e}"[:300]
            got = [
                {"framework": f, "loaded": False, "spike_mismatches": None, "reason": why} for f in frameworks
            ]
        else:
            got = snnprune.verify_nir(path, net, (x, y), frameworks=frameworks)
        for r in got:
            r.update(graph=case, export=option)
            out.append(r)
    return out


def worker(folder: Path, framework: str) -> None:
    """Run inside another environment: ``framework``'s rows of every saved model, as JSON on stdout."""
    x, y = torch.load(folder / "images.pt", weights_only=True)
    rows = []
    for case in CASES:
        net = build(case)
        net.load_state_dict(torch.load(folder / f"{case.replace(' ', '_')}.pt", weights_only=True))
        rows += [
            r for r in rows_for(case, net.eval(), x, y, folder, (framework,)) if r["framework"] == framework
        ]
    print(json.dumps(rows))


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=200, help="embedded MNIST test images (default 200)")
    p.add_argument("--sinabs-python", default=None, help="a Python with sinabs, nir==1.0.4, nirtorch==1.0")
    p.add_argument("--spyx-python", default=None, help="a Python with spyx 1.0.0 and JAX")
    p.add_argument("--rockpool-python", default=None, help="a Python with rockpool 3.1.0")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--worker", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(Path(args.worker[0]), args.worker[1])
        return []
    if args.images < 1:
        print(f"error: --images: must be a positive integer, got {args.images}", file=sys.stderr)
        raise SystemExit(2)
    outside = {"sinabs": args.sinabs_python, "spyx": args.spyx_python, "rockpool": args.rockpool_python}
    for fw, python in outside.items():
        if python and not Path(python).is_file():
            print(f"error: --{fw}-python {python}: no such file; pass a Python executable", file=sys.stderr)
            raise SystemExit(2)
    from snnprune.training import build_datasets

    train_set, test_set, _, _ = build_datasets(argparse.Namespace(dataset="embedded_mnist"))
    x, y = (torch.stack(t) for t in zip(*(test_set[i] for i in range(args.images)), strict=True))
    here = tuple(f for f in FRAMEWORKS if f not in outside)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save((x, y), folder / "images.pt")
        for case in CASES:
            net = build(case)
            if case in ("plain IF", "LIF MLP"):
                train_one_epoch(case, net, train_set)
            net.eval()
            torch.save(net.state_dict(), folder / f"{case.replace(' ', '_')}.pt")
            rows += rows_for(case, net, x, y, folder, here)
        for fw, python in outside.items():
            if python:
                cmd = [python, __file__, "--worker", str(folder), fw]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
                rows += json.loads(done.stdout.strip().splitlines()[-1])
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: one line per graph and export option, one column per importer; a cell is the spike
    mismatches and top-1, or why it did not load or run."""
    fws = list(dict.fromkeys(r["framework"] for r in rows if r["framework"] != "source model"))
    lines = ["| graph | export | source top-1 | " + " | ".join(fws) + " |", "|---" * (len(fws) + 3) + "|"]
    keys = list(dict.fromkeys((r["graph"], r["export"]) for r in rows))
    for g, e in keys:
        by = {r["framework"]: r for r in rows if (r["graph"], r["export"]) == (g, e)}
        cells = []
        for f in fws:
            r = by.get(f)
            if r is None:
                cells.append("not run")
            elif r["spike_mismatches"] is None:
                kind, why = r["reason"].split(":")[0], r["reason"].split(":", 2)[-1].strip()
                cells.append(f"{kind}: `{why[:70]}{'…' if len(why) > 70 else ''}`")
            else:
                cells.append(f"{r['spike_mismatches']:,} ({r['top1']:.1f} %)")
        top = by["source model"]["top1"]
        lines.append(f"| {g} | {e} | {top:.1f} % | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
