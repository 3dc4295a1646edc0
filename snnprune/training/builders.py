"""Builders of the training run: seeding, optimizer, lr scheduler, samplers and data loaders."""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler

from snnprune.training.data import DataError
from snnprune.training.interrupts import ignore_in_worker

__all__ = ["EpochShuffleSampler", "build_loaders", "build_optimizer", "build_scheduler", "seed_everything"]


class EpochShuffleSampler(Sampler[int]):
    """Shuffles with a generator seeded by ``seed + epoch``: the order of epoch ``e`` never depends on
    what ran before, so a resumed run sees exactly the batches of an uninterrupted one.

    Args:
        n: dataset length.
        seed: base seed.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; optionally switch torch to deterministic algorithms.

    Args:
        seed: the seed (same on every rank: same initialisation).
        deterministic: ``torch.use_deterministic_algorithms(True)`` and deterministic cuDNN.
    """
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seeds the global RNG used by user transforms)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def build_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """SGD or Adam over every parameter (θ, learned thresholds, BN); weight decay acts on θ (snnprune/docs/methods.md §12.4).

    Args:
        model: the sparsified model.
        args: ``opt``, ``lr``, ``momentum``, ``nesterov``, ``weight_decay``, ``norm_weight_decay``.

    Returns:
        The optimizer (normalization parameters in their own group).

    Raises:
        ValueError: unknown ``--opt``.
    """
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    norm_params, other = [], []
    for m in model.modules():
        for p in m.parameters(recurse=False):
            (norm_params if isinstance(m, norm_types) else other).append(p)
    nwd = args.weight_decay if args.norm_weight_decay is None else args.norm_weight_decay
    groups = [{"params": other, "weight_decay": args.weight_decay}]
    if norm_params:
        groups.append({"params": norm_params, "weight_decay": nwd})
    if args.opt == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov)
    if args.opt == "adam":
        return torch.optim.Adam(groups, lr=args.lr)
    raise ValueError(f"unknown --opt {args.opt!r}; choose sgd or adam")


def build_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace, steps_per_epoch: int) -> Any:
    """Cosine/step/constant lr schedule over ``--epochs``, with an optional linear warm-up.

    Args:
        optimizer: from :func:`build_optimizer`.
        args: ``lr_scheduler``, ``epochs``, ``lr_step_size``, ``lr_gamma``, ``lr_warmup_*``,
            ``lr_step_per_iter``.
        steps_per_epoch: optimizer steps per epoch (the unit when stepped per iteration).

    Returns:
        The scheduler.

    Raises:
        ValueError: unknown ``--lr-scheduler``.
    """
    unit = steps_per_epoch if args.lr_step_per_iter else 1
    warm = args.lr_warmup_epochs * unit
    main_len = max(args.epochs * unit - warm, 1)
    if args.lr_scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=main_len)
    elif args.lr_scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=args.lr_step_size * unit, gamma=args.lr_gamma
        )
    elif args.lr_scheduler == "constant":
        sched = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        raise ValueError(f"unknown --lr-scheduler {args.lr_scheduler!r}; choose cosine, step or constant")
    if warm > 0:
        if getattr(args, "lr_warmup_shape", "linear") == "str":  # lr * (i + 1) / warm, STR/LATS code
            start, ramp = 1.0 / warm, max(warm - 1, 1)
        else:
            start, ramp = args.lr_warmup_decay, warm
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=start, total_iters=ramp)
        sched = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, sched], milestones=[warm])
    return sched


def build_loaders(
    train_set: Dataset, test_set: Dataset, args: argparse.Namespace, distributed: bool
) -> tuple[DataLoader, DataLoader, Any]:
    """Train and test loaders (train: epoch-seeded shuffle, or ``DistributedSampler`` under DDP).

    Args:
        train_set, test_set: the datasets.
        args: ``batch_size``, ``workers``, ``seed``.
        distributed: running under torchrun.

    Returns:
        ``(train_loader, test_loader, train_sampler)``; call ``train_sampler.set_epoch(e)`` each epoch.

    Raises:
        DataError: the training set is smaller than one batch.
    """
    from torch.utils.data.distributed import DistributedSampler

    if distributed:
        train_sampler: Any = DistributedSampler(train_set, shuffle=True, seed=args.seed, drop_last=True)
        test_sampler: Any = DistributedSampler(test_set, shuffle=False)
    else:
        train_sampler = EpochShuffleSampler(len(train_set), args.seed)
        test_sampler = None
    common = dict(
        num_workers=args.workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=args.workers > 0,
        worker_init_fn=ignore_in_worker if args.workers > 0 else None,  # Ctrl-C: the main process stops
    )
    train_loader = DataLoader(
        train_set, batch_size=args.batch_size, sampler=train_sampler, drop_last=True, **common
    )
    test_loader = DataLoader(
        test_set, batch_size=args.batch_size, sampler=test_sampler, shuffle=False, **common
    )
    if len(train_loader) == 0:
        raise DataError(
            f"--batch-size: the training set of {len(train_set)} samples is smaller than --batch-size "
            f"{args.batch_size}; pass a smaller --batch-size"
        )
    return train_loader, test_loader, train_sampler
