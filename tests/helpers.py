"""Helpers shared by the test modules (imported as ``helpers``: pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from spikingjelly.activation_based import neuron
from torch import nn

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


class Probe(nn.Module):
    """A spiking wrapper: makes the model 'spiking' without touching the layer input."""

    def __init__(self, syn: nn.Module) -> None:
        super().__init__()
        self.syn = syn
        self.sn = neuron.IFNode()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sn(self.syn(x))
