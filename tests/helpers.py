"""Helpers shared by the test modules (imported as ``helpers``: pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

import snnprune
from snnprune.structured import channel_groups

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` as a fresh module (the scripts are not a package).

    ``scripts/`` goes on ``sys.path`` (scripts import each other) and the module is registered in
    ``sys.modules`` under a private name (dataclasses look their module up there).
    """
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"_snnprune_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def expect_exit(script: ModuleType, argv: list[str], capsys: Any) -> tuple[int, str]:
    """Run ``script.main(argv)``, expect ``SystemExit``; return (exit code, captured stderr)."""
    with pytest.raises(SystemExit) as exc:
        script.main(argv)
    return exc.value.code, capsys.readouterr().err


class Probe(nn.Module):
    """A spiking wrapper: makes the model 'spiking' without touching the layer input."""

    def __init__(self, syn: nn.Module) -> None:
        super().__init__()
        self.syn = syn
        self.sn = neuron.IFNode()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sn(self.syn(x))


def prune_half(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Filter-sparsify ``model`` and remove every other channel of every group (fc kept); BN statistics
    warmed on ``x``. Returns the surviving output channels of every parametrized layer."""
    pruner = snnprune.sparsify(
        model, "stds", granularity="filter", final_threshold=0.01, total_steps=1, exclude=["fc"]
    )
    modules = dict(model.named_modules())
    with torch.no_grad():
        for group in channel_groups(model):
            for conv_name, _ in group.producers:
                theta = modules[conv_name].parametrizations.weight.original
                theta[1::2] *= 1e-3  # RMS << 0.01: removed; the others (Kaiming, RMS > 0.03) survive
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.fill_(0.8)  # active neurons, so the spike comparison below means something
    pruner.step()  # threshold = D
    model.train()
    for _ in range(2):
        model(x)
        functional.reset_net(model)
    return {
        n: m.weight.detach().flatten(1).ne(0).any(1)
        for n, m in model.named_modules()
        if n in modules and hasattr(m, "parametrizations")
    }


def tiny_lats_run(sew: ModuleType, folder: Any) -> dict[str, Any]:
    """Train a width-4, T = 2 SEW ResNet-18 with LATS for one epoch of 2 batches into ``folder/r``, quietly;
    returns the run's summary (``summary["run_dir"]`` is the run folder)."""
    argv = ["--width", "4", "--epochs", "1", "--batch-size", "16", "--limit-train-batches", "2"]
    argv += ["--limit-test-batches", "1", "--analyze-batches", "1", "--quiet", "--T", "2"]
    return sew.main(["--method", "lats", *argv, "--output-dir", str(folder), "--run-name", "r"])
