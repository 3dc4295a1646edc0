"""Builders of the training run: seeding, optimizer, lr scheduler, samplers and data loaders."""

from __future__ import annotations

import argparse
import os
import random
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from snnprune.data import DataError
from snnprune.training.interrupts import ignore_in_worker

__all__ = ["build_loaders", "build_optimizer", "build_scheduler", "seed_everything"]


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch with ``seed`` (the same on every rank: the same initialisation); with
    ``deterministic``, torch's deterministic algorithms and deterministic cuDNN."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seeds the global RNG used by user transforms)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def build_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW (``args.opt``, ``lr``, ``momentum``, ``nesterov``) over every parameter (θ, learned
    thresholds, BN), normalization parameters in their own group (``norm_weight_decay``); weight decay acts on
    θ (snnprune/docs/methods.md §12.4)."""
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
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[args.opt](groups, lr=args.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace, steps_per_epoch: int) -> Any:
    """The ``args.lr_scheduler`` schedule (cosine, step, constant) over ``args.epochs``, after an optional
    warm-up (``lr_warmup_*``, ``SequentialLR``); its unit is the epoch, or the optimizer step with
    ``lr_step_per_iter`` (``steps_per_epoch`` of them per epoch)."""
    unit = steps_per_epoch if args.lr_step_per_iter else 1
    warm = args.lr_warmup_epochs * unit
    main_len = max(args.epochs * unit - warm, 1)
    sched = {  # the choices of --lr-scheduler
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=main_len),
        "step": lambda: torch.optim.lr_scheduler.StepLR(optimizer, args.lr_step_size * unit, args.lr_gamma),
        "constant": lambda: torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0),
    }[args.lr_scheduler]()
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
    """``(train_loader, test_loader, train_sampler)`` of ``args.batch_size`` and ``args.workers``; call
    ``train_sampler.set_epoch(e)`` each epoch. The training order of epoch ``e`` is the permutation seeded by
    ``args.seed + e`` (``DistributedSampler``, also in one process), so it never depends on what ran before
    and a resumed run sees exactly the batches of an uninterrupted one. A training set smaller than one batch
    is a :class:`DataError`."""
    from torch.utils.data.distributed import DistributedSampler

    one = {} if distributed else {"num_replicas": 1, "rank": 0}
    train_sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed, drop_last=True, **one)
    test_sampler = DistributedSampler(test_set, shuffle=False) if distributed else None
    common = dict(
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=args.workers > 0,
        worker_init_fn=ignore_in_worker if args.workers > 0 else None,  # Ctrl-C: the main process stops
    )
    train_loader = DataLoader(train_set, sampler=train_sampler, drop_last=True, **common)
    test_loader = DataLoader(test_set, sampler=test_sampler, shuffle=False, **common)
    if len(train_loader) == 0:
        raise DataError(
            f"--batch-size: the training set of {len(train_set)} samples is smaller than --batch-size "
            f"{args.batch_size}; pass a smaller --batch-size"
        )
    return train_loader, test_loader, train_sampler
