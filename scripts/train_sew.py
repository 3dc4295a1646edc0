"""Train a SEW ResNet (spiking) with soft-threshold pruning: the SNN entry point of the shared engine.

The default command ``python scripts/train_sew.py --method lats`` trains a narrow small-stem SEW ResNet-18
(width 16, T=2, IF neurons, ATan, ADD) on the embedded 5,000-image MNIST subset for a few epochs on CPU,
pruning it with LATS to >= 80 % sparsity. Paper recipes: ``--config scripts/configs/<recipe>.yaml``.
The SEW models take static ``[N, C, H, W]`` images (encoder run once, repeated T times) and event frames
``[N, T, C, H, W]`` directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the top-level `models` package
sys.path.insert(0, str(Path(__file__).resolve().parent))

from entry import EMBEDDED_DEFAULTS, exit_on_error, model_record

import models
from snnprune.training import Task, get_args_parser
from snnprune.training import main as engine_main
from snnprune.training.cli import model_keyword_options

__all__ = ["DEFAULTS", "MODELS", "get_parser", "main", "task"]

DEFAULTS: dict[str, Any] = {**EMBEDDED_DEFAULTS, "model": "sew_resnet18", "T": 2}
#: The spiking models of the registry (those taking ``T``): the choices of ``--model``.
MODELS = tuple(m for m in models.list_models() if "T" in models.model_kwargs(m))
task = Task(kind="snn", model_builder=model_record, model_kwargs=models.model_kwargs)


def get_parser() -> argparse.ArgumentParser:
    """The SNN training parser with this script's defaults."""
    return get_args_parser(
        snn=True, defaults=DEFAULTS, model_choices=MODELS, base_defaults={"model": DEFAULTS["model"], "method": "lats"},
        model_options=model_keyword_options(models.model_kwargs, MODELS),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the SNN training; returns the summary dict."""
    return exit_on_error(lambda a: engine_main(task, get_parser(), a), argv)


if __name__ == "__main__":
    main()
