"""The epoch loop: :func:`train_one_epoch` (returns its rows) and :func:`evaluate`, plus the :class:`Task` hooks.

Per batch (snnprune/docs/methods.md §3.2, §12.6): forward, ``loss + pruner.regularization()``, backward,
``scaler.step(optimizer)``, ``pruner.step()`` (every iteration, also when GradScaler skipped the step),
per-iteration lr step. Per-step values stay on the device and are read once at the end of the epoch; a
non-finite loss stops the epoch with :class:`NonFiniteLossError` (checked every step on the CPU, where
the check costs nothing, and at every log point and the end of the epoch elsewhere).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from snnprune.analysis.spikes import SpikeRateMonitor
from snnprune.training import distributed as D
from snnprune.training import interrupts

__all__ = [
    "LoopOptions",
    "NonFiniteLossError",
    "Task",
    "evaluate",
    "mean_threshold",
    "reset",
    "train_one_epoch",
]

_POSTFIX_EVERY = 20  # steps between progress-bar loss refreshes (each one is a host sync)


@dataclass
class Task:
    """What differs between an SNN and an ANN run.

    Attributes:
        kind: ``"snn"`` or ``"ann"``.
        model_builder: ``(args, num_classes, in_channels) -> record``, the builder record of the model
            (``{"_target_": dotted path, **kwargs}``, see :func:`snnprune.training.runs.instantiate`); the
            engine builds the model from it and writes it to ``config.json``.
        model_kwargs: ``model name -> accepted keyword arguments`` (the ``models`` registry), for the
            validation of ``--model``/``--width``/``--stem`` before anything is built (None: not checked).
    """

    kind: str
    model_builder: Callable[[Any, int, int], dict[str, Any]]
    model_kwargs: Callable[[str], Any] | None = None


def reset(model: nn.Module) -> None:
    """Reset the neuron states after a batch (SpikingJelly's ``reset_net``; nothing to do in an ANN)."""
    functional.reset_net(unwrap(model))


@dataclass(frozen=True)
class LoopOptions:
    """How the epoch loop runs: ``amp`` (``"none"``, ``"fp16"``, ``"bf16"`` autocast), ``channels_last``
    (4-D inputs), ``clip_grad_norm`` (None: no clipping), ``lr_step_per_iter`` (the scheduler steps every
    optimizer step, else once per epoch by the caller), ``limit_train_batches``/``limit_test_batches`` (None:
    all) and ``log_every`` (steps between plain log lines, 0: none)."""

    amp: str = "none"
    channels_last: bool = False
    clip_grad_norm: float | None = None
    lr_step_per_iter: bool = False
    limit_train_batches: int | None = None
    limit_test_batches: int | None = None
    log_every: int = 0


class NonFiniteLossError(RuntimeError):
    """The training loss (``what="loss"``) or e.g. the ``"model weights"`` became NaN or infinite at global
    step ``step`` (1-based) of ``epoch``; ``value`` is the loss."""

    def __init__(self, epoch: int, step: int, value: float, what: str = "loss") -> None:
        self.epoch, self.step, self.value = epoch, step, value
        found = f"the loss is {value}" if what == "loss" else f"the {what} are not finite"
        super().__init__(
            f"training: {found} at epoch {epoch}, step {step}; stopped, the last finite checkpoint and "
            "best.pth are kept: lower --lr, add --clip-grad-norm 1.0, or use --amp none"
        )


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean_threshold(pruner: Any) -> float:
    """The threshold in force as one number: ``pruner.get_last_threshold()`` averaged over layers (a
    global threshold exactly as it is; 0 without layers)."""
    return _mean_of(list(pruner.get_last_threshold().values()))


def _mean_of(values: list[float]) -> float:
    if not values:
        return 0.0
    return float(values[0]) if all(v == values[0] for v in values) else float(np.mean(values))


def _resolve_thresholds(rows: list[list[Any]], pruner: Any) -> None:
    """Replace the device snapshots in the rows' threshold column by :func:`mean_threshold`'s value, with
    one host sync for the whole epoch (see ``Pruner.threshold_snapshot``)."""
    pending = [r for r in rows if isinstance(r[3], torch.Tensor)]
    if not pending:
        return
    for row, values in zip(pending, torch.stack([r[3] for r in pending]).tolist(), strict=True):
        row[3] = _mean_of(list(pruner.thresholds_from_snapshot(values).values()))


def _accuracy(
    output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 5)
) -> list[torch.Tensor]:
    k = min(max(topk), output.shape[1])
    pred = output.topk(k, dim=1).indices
    correct = pred.eq(target[:, None])
    return [correct[:, : min(t, k)].any(dim=1).sum() for t in topk]


def autocast(device: torch.device, amp: str) -> Any:
    """The autocast context of ``--amp`` (disabled for ``none``)."""
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=amp != "none")


def to_device(
    x: torch.Tensor, y: torch.Tensor, device: torch.device, options: LoopOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch to ``device`` (channels-last 4-D inputs with ``options.channels_last``)."""
    x = x.to(device, non_blocking=True)
    if options.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def _first_nonfinite(losses: list[torch.Tensor]) -> int | None:
    if not losses:
        return None
    bad = (~torch.isfinite(torch.stack(losses))).nonzero()
    return int(bad[0, 0]) if len(bad) else None


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    *,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    lr_scheduler: Any,
    pruner: Any,
    device: torch.device,
    epoch: int,
    global_step: int,
    options: LoopOptions,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, float], list[list[Any]], int]:
    """Train the (possibly DDP-wrapped) sparsified ``model`` for one epoch of ``loader``
    (``options.limit_train_batches`` applies) with the run's objects; ``global_step`` optimizer steps are
    done before it. Returns ``(metrics, step_rows, global_step)``: ``{"train_loss", "train_top1"}`` over all
    processes, one ``[step, epoch, lr, threshold, loss]`` row per step, and the new global step. With
    ``progress`` a progress bar; else ``log`` (if given) gets a plain line every ``options.log_every`` steps.
    Raises :class:`NonFiniteLossError` (naming the first NaN/inf step) and
    :class:`~snnprune.training.interrupts.Interrupted` (SIGINT/SIGTERM, after the running step)."""
    from tqdm import tqdm

    model.train()
    limit = options.limit_train_batches
    n_batches = len(loader) if limit is None else min(limit, len(loader))
    log_every = options.log_every if (log is not None and not progress) else 0
    distributed = D.get_world_size() > 1
    check_each_step = device.type == "cpu" and not distributed  # free on the CPU (no device sync)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss*n, correct, n
    losses: list[torch.Tensor] = []
    rows: list[list[Any]] = []
    first_step = global_step + 1
    bar = tqdm(total=n_batches, desc=f"epoch {epoch}", disable=not progress, leave=False, dynamic_ncols=True)
    with bar:
        for i, (x, y) in enumerate(loader):
            if i >= n_batches:
                break
            x, y = to_device(x, y, device, options)
            with autocast(device, options.amp):
                out = model(x)
                loss = criterion(out, y)
            loss = loss + pruner.regularization()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if options.clip_grad_norm is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), options.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            reset(model)
            lr = optimizer.param_groups[0]["lr"]
            pruner.step()  # after optimizer.step(), before the lr scheduler (snnprune/docs/methods.md §12.6)
            if options.lr_step_per_iter:
                lr_scheduler.step()
            global_step += 1
            with torch.no_grad():
                loss_d = loss.detach().to(torch.float64)
                sums[0] += loss_d * len(y)
                sums[1] += _accuracy(out.float(), y, (1,))[0]
                sums[2] += len(y)
            losses.append(loss_d)
            snapshot = pruner.threshold_snapshot()  # no host sync per step (resolved after the epoch)
            rows.append([global_step, epoch, lr, mean_threshold(pruner) if snapshot is None else snapshot])
            logged = log_every and (i + 1) % log_every == 0
            postfix = progress and (i % _POSTFIX_EVERY == 0 or i == n_batches - 1)
            if check_each_step and not math.isfinite(float(loss_d)):
                raise NonFiniteLossError(epoch, global_step, float(loss_d))
            bad = _first_nonfinite(losses) if (logged or postfix) and not distributed else None
            if bad is not None:
                raise NonFiniteLossError(epoch, first_step + bad, float(losses[bad]))
            if postfix:
                bar.set_postfix(loss=f"{float(loss_d):.3f}", lr=f"{lr:.3g}")
            if logged:
                log(
                    f"epoch {epoch} step {i + 1}/{n_batches} (global {global_step}): loss {float(loss_d):.4f} "
                    f"lr {lr:.4g} threshold {mean_threshold(pruner):.4g}"
                )
            bar.update()
            interrupts.check(epoch, global_step, device)  # SIGINT/SIGTERM: stop after this step
    bad = _first_nonfinite(losses)
    if distributed and D.all_reduce_sum([float(bad is not None)], device)[0] > 0:  # every rank stops together
        bad = bad or 0
    if bad is not None:
        raise NonFiniteLossError(epoch, first_step + bad, float(losses[bad]))
    _resolve_thresholds(rows, pruner)
    step_rows = [
        [*row, v] for row, v in zip(rows, torch.stack(losses).tolist() if losses else [], strict=True)
    ]
    loss_sum, correct, n = D.all_reduce_sum(sums.tolist(), device)
    metrics = {"train_loss": loss_sum / max(n, 1), "train_top1": 100.0 * correct / max(n, 1)}
    return metrics, step_rows, global_step


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    loader: DataLoader,
    device: torch.device,
    options: LoopOptions,
    progress: bool = False,
) -> dict[str, float]:
    """``{"test_loss", "test_top1", "test_top5", "firing_rate"}`` of the (possibly DDP-wrapped) ``model``
    on ``loader`` (``options.limit_test_batches`` applies), summed over all processes; ``firing_rate`` is NaN
    for non-spiking models (see :func:`snnprune.analysis.spikes.is_spiking`)."""
    from tqdm import tqdm

    model.eval()
    limit = options.limit_test_batches
    total = len(loader) if limit is None else min(limit, len(loader))
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, top1, top5, n (one sync at the end)
    bar = tqdm(total=total, desc="eval", disable=not progress, leave=False, dynamic_ncols=True)
    with SpikeRateMonitor(unwrap(model)) as monitor, parametrize.cached(), bar:
        for i, (x, y) in enumerate(loader):
            if limit is not None and i >= limit:
                break
            x, y = to_device(x, y, device, options)
            with autocast(device, options.amp):
                out = model(x)
                loss = criterion(out, y)
            reset(model)
            top1, top5 = _accuracy(out.float(), y)
            sums[0] += loss.detach().double() * len(y)
            sums[1] += top1
            sums[2] += top5
            sums[3] += len(y)
            bar.update()
    loss_sum, c1, c5, n, s, cnt = D.all_reduce_sum(sums.tolist() + monitor.totals(), device)
    n = max(n, 1)
    return {
        "test_loss": loss_sum / n,
        "test_top1": 100.0 * c1 / n,
        "test_top5": 100.0 * c5 / n,
        "firing_rate": (s / cnt) if (monitor.active and cnt > 0) else float("nan"),
    }
