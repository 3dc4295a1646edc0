"""The recipes in scripts/configs/ against the authors' code.

The LATS recipes must reproduce the authors' runs (Yanqi-Chen/LATS e140def): the threshold follows the
``--low-freq`` closed form (a per-epoch cosine over the whole run that ignores the warm-up) and the learning
rate follows ``utils/schedulers.py`` ``cosine_lr`` (warm-up ``lr * (e + 1) / 5``, then cosine over the other
95 epochs, set once per epoch). Both are written out again here, independently of ``snnprune``, and the
schedules the training engine builds from each recipe are stepped through every epoch against them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import snnprune
from snnprune.training import builders
from snnprune.training.cli import get_args_parser, parse_args, pruner_kwargs

CONFIGS = Path(__file__).resolve().parents[1] / "scripts" / "configs"
STEPS_PER_EPOCH = 2


def _recipe(name: str):
    snn = name.startswith(("sew_", "stds_", "spikformer_", "sdt_"))
    return parse_args(get_args_parser(snn=snn), ["--config", str(CONFIGS / name)])


def authors_lr(epoch: int, base: float, epochs: int, warmup: int) -> float:
    """LATS/STR ``cosine_lr`` with ``lr_min = 0``: the lr of epoch ``epoch`` (0-based)."""
    if epoch < warmup:
        return base * (epoch + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup))) * base


def authors_lats_fraction(done_epochs: int, epochs: int) -> float:
    """LATS ``--low-freq``: fraction of D after ``done_epochs`` whole epochs, as the sum of its increments
    ``(1 + cos(pi i / E)) / (E + 1)`` for epochs ``i < done_epochs`` (the per-epoch cosine lr, no warm-up)."""
    return sum(1 + math.cos(math.pi * i / epochs) for i in range(done_epochs)) / (epochs + 1)


def _run_schedules(args) -> tuple[list[float], list[float]]:
    """Step the engine's optimizer, lr scheduler and pruner of a recipe through every epoch (no data): the
    lr used in each epoch and the threshold fraction d / D after it."""
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, bias=False), fc=nn.Linear(4, 2)))
    pruner = snnprune.get_method(args.method)(**pruner_kwargs(args)).scale_steps(STEPS_PER_EPOCH)
    pruner.prepare(model, exclude=args.prune_exclude)
    optimizer = builders.build_optimizer(model, args)
    scheduler = builders.build_scheduler(optimizer, args, STEPS_PER_EPOCH)
    pruner.bind(optimizer, scheduler, STEPS_PER_EPOCH)
    lrs, fractions = [], []
    for _ in range(args.epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        for _ in range(STEPS_PER_EPOCH):
            optimizer.step()
            pruner.step()
        fractions.append(pruner.threshold / args.final_threshold)
        scheduler.step()
    return lrs, fractions


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_recipe_parses_and_names_its_paper(name):
    args = _recipe(name)
    assert args.method in snnprune.list_methods()
    assert "Reproduces:" in (CONFIGS / name).read_text()


@pytest.mark.parametrize("name", ["resnet50_lats.yaml", "mobilenet_v1_lats.yaml"])
def test_ann_lats_recipes_follow_the_authors_schedules(name):
    args = _recipe(name)
    assert (args.method, args.lats_schedule, args.lr_warmup_shape) == ("lats", "closed_form", "str")
    assert (args.epochs, args.lr_warmup_epochs, args.lr) == (100, 5, 0.256)
    lrs, fractions = _run_schedules(args)
    # warm-up 0.2, 0.4, ..., 1.0 x lr, then cosine over the remaining 95 epochs
    assert [lr / args.lr for lr in lrs[:6]] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0], abs=1e-12)
    for e, lr in enumerate(lrs):
        assert lr == pytest.approx(authors_lr(e, args.lr, 100, 5), rel=1e-9, abs=1e-15), e
    # the threshold ignores the warm-up: the authors' run is at 0.020 / 0.099 / 0.197 of D after 1 / 5 / 10
    for e, f in enumerate(fractions):
        assert f == pytest.approx(authors_lats_fraction(e + 1, 100), abs=1e-12), e
    assert [round(fractions[e - 1], 3) for e in (1, 5, 10)] == [0.020, 0.099, 0.197]
    assert fractions[-1] == pytest.approx(1.0, abs=1e-12)


def test_sew_lats_recipe_is_the_closed_form_and_the_lr_it_uses():
    args = _recipe("sew_resnet18_imagenet_lats.yaml")
    assert (args.method, args.lats_schedule, args.lr_warmup_epochs, args.epochs) == (
        "lats",
        "closed_form",
        0,
        320,
    )
    lrs, fractions = _run_schedules(args)
    for e, lr in enumerate(lrs):  # STDS: CosineAnnealingLR(T_max=320) stepped per epoch
        assert lr == pytest.approx(0.1 * (1 + math.cos(math.pi * e / 320)) / 2, rel=1e-9, abs=1e-15), e
    total = sum(lrs)
    done = 0.0
    for e, f in enumerate(fractions):
        done += lrs[e]
        assert f == pytest.approx(authors_lats_fraction(e + 1, 320), abs=1e-12), e
        assert f == pytest.approx(done / total, abs=1e-9), e  # = LATS in lr mode: lambda constant


def test_str_warmup_shape_per_iteration_and_default_unchanged():
    def lrs_of(shape: str, per_iter: bool) -> list[float]:
        args = _recipe("resnet50_lats.yaml")
        args.lr_warmup_shape, args.lr_step_per_iter, args.epochs, args.lr_warmup_epochs = (
            shape,
            per_iter,
            4,
            2,
        )
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = builders.build_scheduler(opt, args, STEPS_PER_EPOCH)
        out = []
        for _ in range(4 * STEPS_PER_EPOCH if per_iter else 4):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    assert lrs_of("str", True)[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert lrs_of("str", False)[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs_of("linear", False)[:3] == pytest.approx([0.01, 0.505, 1.0])  # torchvision LinearLR


def test_reproduction_map_covers_every_reference_point_and_names_existing_recipes():
    import csv
    import re

    root = CONFIGS.parents[1]
    doc = (root / "snnprune" / "docs" / "reproduction.md").read_text()
    with open(root / "scripts" / "reference_points.csv", newline="") as f:
        refs = list(csv.DictReader(f))
    table = doc.split("## Every published row", 1)[1]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == len(refs)
    commands = set(re.findall(r"^\| ([A-Z0-9]+-[A-Za-z0-9]+) \|", doc, re.M))
    for cells, ref in zip(rows, refs, strict=True):
        cells = [c.strip() for c in cells]
        assert cells[3] == ref["method"] and cells[6] == ref["source"]
        assert float(cells[4]) == pytest.approx(100 * float(ref["sparsity"]), abs=5e-3)
        assert cells[7] in commands | {"—"}
        assert cells[9] == "no"  # published ImageNet/CIFAR runs cannot run on the development machines
    for recipe in set(re.findall(r"scripts/configs/[\w.]+\.yaml", doc)):
        assert (root / recipe).is_file(), recipe
