"""The one shared training engine of snnprune (used by ``scripts/train_sew.py`` and ``scripts/train_ann.py``).

* :mod:`~snnprune.training.cli`: :data:`OPTIONS` (each training option declared once), :func:`get_args_parser`,
  :func:`parse_args` (``--config`` checked key by key against them), :func:`pruner_kwargs` (options -> method
  keyword arguments);
* :mod:`~snnprune.training.validation`: :func:`prepare`, the one check of the whole configuration before
  any data or model is built (``error: <option>: <what is wrong>; <what to do>``, exit code 2);
* :func:`build_datasets` (from :mod:`snnprune.data`: embedded MNIST, torchvision, ImageFolder, DVS);
* :mod:`~snnprune.training.builders`: optimizer, lr scheduler, samplers and loaders;
* :mod:`~snnprune.training.loop`: :class:`Task` hooks, :func:`train_one_epoch`, :func:`evaluate`;
* :mod:`~snnprune.training.run_folder`: :class:`RunFolder`, the one writer of a run's files, and
  :class:`RunLock`, the lock that makes one process the owner of a run folder;
* :mod:`~snnprune.training.interrupts`: SIGINT/SIGTERM stop a run after the current step
  (:class:`Interrupted`);
* :mod:`~snnprune.training.engine`: :func:`run` and :func:`main` (raise; the entry scripts exit);
* :mod:`~snnprune.training.runs`: :func:`load_run`, the one way to rebuild a trained run;
* :mod:`~snnprune.training.checkpoint`: atomic :func:`save_checkpoint` / :func:`load_checkpoint` (no
  pickle: tensors and plain values only) and :func:`upgrade_checkpoint` for an older checkpoint;
* :mod:`~snnprune.training.distributed`: torchrun initialisation and rank helpers.

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
