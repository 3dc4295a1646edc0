"""The one shared training engine of snnprune (used by ``scripts/train_sew.py`` and ``scripts/train_ann.py``).

Its modules, each described by its own docstring, in the order a run uses them: :mod:`~snnprune.training.cli`
(the options), :mod:`~snnprune.training.validation` (:func:`prepare`, the one check before any data or model
is built), :mod:`~snnprune.training.builders`, :mod:`~snnprune.training.loop`,
:mod:`~snnprune.training.run_folder` (the one writer of a run's files), :mod:`~snnprune.training.interrupts`,
:mod:`~snnprune.training.engine` (:func:`run`, :func:`main`), :mod:`~snnprune.training.runs`
(:func:`load_run`), :mod:`~snnprune.training.checkpoint` and :mod:`~snnprune.training.distributed`.

This package never imports ``models`` or ``scripts``: the scripts pass a model builder in :class:`Task`.
"""

from snnprune.data import DataError, build_datasets
from snnprune.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    upgrade_checkpoint,
)
from snnprune.training.cli import ConfigError, get_args_parser, parse_args, pruner_kwargs
from snnprune.training.engine import main, run
from snnprune.training.interrupts import Interrupted
from snnprune.training.loop import LoopOptions, NonFiniteLossError, Task, evaluate, train_one_epoch
from snnprune.training.run_folder import RunFolder, RunLock
from snnprune.training.runs import Run, load_run
from snnprune.training.validation import prepare

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Interrupted",
    "LoopOptions",
    "NonFiniteLossError",
    "Run",
    "RunFolder",
    "RunLock",
    "Task",
    "build_datasets",
    "evaluate",
    "get_args_parser",
    "load_checkpoint",
    "load_run",
    "main",
    "parse_args",
    "prepare",
    "pruner_kwargs",
    "run",
    "save_checkpoint",
    "train_one_epoch",
    "upgrade_checkpoint",
]
