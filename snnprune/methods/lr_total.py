"""Sum of the learning rates a training run will use, from a dry run of copies of optimizer and scheduler."""

from __future__ import annotations

import copy
import math
import warnings
from collections import defaultdict

import torch
from torch.optim import Optimizer

__all__ = ["MAX_DRY_RUN_STEPS", "lr_total"]

#: The most scheduler steps :func:`lr_total` dry-runs (a few seconds on one CPU core).
MAX_DRY_RUN_STEPS = 10**6


def _dry_copies(optimizer: Optimizer, lr_scheduler: object | None) -> tuple[Optimizer, object | None]:
    """Deep-copy optimizer and scheduler together (the copied scheduler drives the copied optimizer).

    Parameters and optimizer state are replaced by tiny placeholders through the ``deepcopy`` memo, so
    nothing large is copied and the real objects are never touched.
    """
    memo: dict[int, object] = {}
    keep: list[object] = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            dummy = torch.zeros(1)
            memo[id(p)] = dummy
            keep.append(dummy)
    memo[id(optimizer.state)] = defaultdict(dict)
    opt_copy, sched_copy = copy.deepcopy((optimizer, lr_scheduler), memo)
    del keep
    return opt_copy, sched_copy


def lr_total(
    optimizer: Optimizer,
    lr_scheduler: object | None,
    total_steps: int,
    steps_per_epoch: int | None = None,
    start_step: int = 0,
) -> float:
    """:math:`\\sum_{j=\\mathrm{start}}^{\\mathrm{total}-1} \\eta_j`, the lr summed over the pruning window.

    Dry-runs deep copies of ``optimizer`` and ``lr_scheduler`` from their **current** state (call it
    before training starts, e.g. in :meth:`Pruner.bind`): step ``j`` (0-based) uses the lr found in
    ``param_groups[0]["lr"]``, then the scheduler steps after every step (``steps_per_epoch=None``) or
    after every ``steps_per_epoch`` steps (per-epoch stepping). Warm-up (``SequentialLR``), ``StepLR``,
    cosine, ... all work; the real objects are untouched.

    Args:
        optimizer: the real optimizer.
        lr_scheduler: its scheduler, or None for a constant lr.
        total_steps: optimizer steps of the whole run.
        steps_per_epoch: optimizer steps per scheduler step (None: the scheduler steps every step).
        start_step: first step of the pruning window (steps before it are not summed).

    Returns:
        The lr sum (float).

    Raises:
        ValueError: bad step counts, ``ReduceLROnPlateau`` (depends on metrics, cannot be dry-run), a
            NaN/negative lr, or more than :data:`MAX_DRY_RUN_STEPS` scheduler steps.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if not 0 <= start_step < total_steps:
        raise ValueError(f"start_step must be in [0, total_steps={total_steps}), got {start_step}")
    if steps_per_epoch is not None and steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be > 0 or None, got {steps_per_epoch}")
    if isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ValueError(
            "lr_total cannot dry-run ReduceLROnPlateau (it depends on validation metrics); "
            "pass lr_total= or l1_coeff= explicitly"
        )
    every = 1 if steps_per_epoch is None else steps_per_epoch
    if math.ceil(total_steps / every) > MAX_DRY_RUN_STEPS:
        raise ValueError(
            f"the run has {math.ceil(total_steps / every):,} lr scheduler steps, more than the "
            f"{MAX_DRY_RUN_STEPS:,} that lr_total dry-runs in seconds; plan fewer epochs, step the scheduler "
            "per epoch, or pass lr_total= explicitly"
        )
    opt, sched = _dry_copies(optimizer, lr_scheduler)
    total = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(0, total_steps, every):  # the lr is constant between scheduler steps
            lr = float(opt.param_groups[0]["lr"])
            if not math.isfinite(lr) or lr < 0:
                raise ValueError(f"learning rate at step {j} is {lr}; fix the optimizer/scheduler settings")
            total += lr * max(0, min(j + every, total_steps) - max(j, start_step))
            if sched is not None:
                sched.step()
    return total
