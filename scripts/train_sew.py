"""Train a SEW ResNet (spiking) with soft-threshold pruning: the SNN entry point of the shared engine.

The default command ``python scripts/train_sew.py --method lats`` trains a narrow small-stem SEW ResNet-18
(width 16, T=2, IF neurons, ATan, ADD) on the embedded 5,000-image MNIST subset for a few epochs on CPU,
pruning it with LATS to >= 80 % sparsity. Paper recipes: ``--config scripts/configs/<recipe>.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the top-level `models` package
sys.path.insert(0, str(Path(__file__).resolve().parent))

from entry import exit_on_error

import models
from snnprune.training import Task, get_args_parser
from snnprune.training import main as engine_main
from snnprune.training.cli import EMBEDDED_DEFAULTS

__all__ = ["DEFAULTS", "MODELS", "get_parser", "main", "model_builder", "task"]

# Default run: <= 10 min on 2 CPU cores, sparsity >= 80 % (see README).
DEFAULTS: dict[str, Any] = {**EMBEDDED_DEFAULTS, "model": "sew_resnet18", "T": 2}
#: The spiking models of the registry (those taking ``T``): the choices of ``--model``.
MODELS = tuple(m for m in models.list_models() if "T" in models.model_kwargs(m))


def model_builder(args: argparse.Namespace, num_classes: int, in_channels: int) -> dict[str, Any]:
    """The builder record of ``args.model`` (the ``models`` registry) with the SNN options (None: default)."""
    kw = dict(
        num_classes=num_classes,
        in_channels=in_channels,
        T=args.T,
        neuron=args.neuron,
        surrogate=args.surrogate,
        cnf=args.cnf,
        stem=args.stem,
        width=args.width,
        neuron_backend=args.neuron_backend,
    )
    return {
        "_target_": "models.create_model",
        "name": args.model,
        **{k: v for k, v in kw.items() if v is not None},
    }


def _reset(model: nn.Module) -> None:
    from spikingjelly.activation_based import functional

    functional.reset_net(model)


# The SEW models take static [N, C, H, W] images (encoder run once, repeated T times) and event frames
# [N, T, C, H, W] directly, so the input needs no preparation; the neuron state is reset after each batch.
task = Task(
    kind="snn",
    model_builder=model_builder,
    after_batch=_reset,
    time_steps=lambda a: a.T,
    model_kwargs=models.model_kwargs,
)


def get_parser() -> argparse.ArgumentParser:
    """The SNN training parser with this script's defaults."""
    return get_args_parser(snn=True, defaults=DEFAULTS, model_choices=MODELS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the SNN training; returns the summary dict."""
    return exit_on_error(lambda a: engine_main(task, get_parser(), a), argv)


if __name__ == "__main__":
    main()
