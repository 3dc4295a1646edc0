"""Train an ANN (ResNet twin, ResNet-50, MobileNet-V1) with soft-threshold pruning: the ANN entry point.

The default command ``python scripts/train_ann.py --method lats`` trains the ANN twin of the default SEW
run (small-stem ResNet-18, width 16, ReLU) on the embedded MNIST subset. Paper recipes:
``--config scripts/configs/resnet50_lats.yaml`` / ``mobilenet_v1_lats.yaml``.
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

DEFAULTS: dict[str, Any] = {**EMBEDDED_DEFAULTS, "model": "ann_resnet18"}
#: The non-spiking models of the registry (those without ``T``): the choices of ``--model``.
MODELS = tuple(m for m in models.list_models() if "T" not in models.model_kwargs(m))
task = Task(kind="ann", model_builder=model_record, model_kwargs=models.model_kwargs)


def get_parser() -> argparse.ArgumentParser:
    """The ANN training parser with this script's defaults."""
    return get_args_parser(
        snn=False, defaults=DEFAULTS, base_defaults={"model": DEFAULTS["model"], "method": "lats"}, model_choices=MODELS,
        model_options=model_keyword_options(models.model_kwargs, MODELS),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the ANN training; returns the summary dict."""
    return exit_on_error(lambda a: engine_main(task, get_parser(), a), argv)


if __name__ == "__main__":
    main()
