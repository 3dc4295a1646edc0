"""The one shared training engine of snnprune (used by ``scripts/train_sew.py`` and ``scripts/train_ann.py``).

* :mod:`~snnprune.training.cli`: :func:`get_args_parser` (argparse groups, ``--config`` YAML defaults),
  :func:`pruner_kwargs` (flags -> method keyword arguments);
* :mod:`~snnprune.training.data`: :func:`build_datasets` (embedded MNIST, torchvision, ImageFolder, DVS);
* :mod:`~snnprune.training.engine`: :class:`Task` hooks, :func:`train_one_epoch`, :func:`evaluate`, :func:`run`;
* :mod:`~snnprune.training.checkpoint`: atomic :func:`save_checkpoint` / :func:`load_checkpoint`;
* :mod:`~snnprune.training.distributed`: torchrun initialisation and rank helpers.

This package never imports ``models`` or ``scripts``: the scripts pass a model builder in :class:`Task`.
"""

from snnprune.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from snnprune.training.cli import ConfigError, get_args_parser, parse_args, pruner_kwargs
from snnprune.training.data import DataError, build_datasets
from snnprune.training.engine import Task, evaluate, main, run, train_one_epoch

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Task",
    "build_datasets",
    "evaluate",
    "get_args_parser",
    "load_checkpoint",
    "main",
    "parse_args",
    "pruner_kwargs",
    "run",
    "save_checkpoint",
    "train_one_epoch",
]
