"""The one training loop of snnprune: :func:`train_one_epoch`, :func:`evaluate` and :func:`run`.

Order of operations (snnprune/docs/methods.md §3.2, §12.6):

1. model (``task.build_model``) -> ``pruner = snnprune.sparsify(model, method, **pruner_kwargs(...))``
2. optimizer over ``model.parameters()`` (θ and learned thresholds; weight decay acts on θ)
3. lr scheduler (cosine/step/constant, optional linear warm-up via ``SequentialLR``)
4. ``pruner.bind(optimizer, lr_scheduler, steps_per_epoch)``
5. per batch: forward, ``loss + pruner.regularization()``, backward, ``scaler.step(optimizer)``,
   ``pruner.step()`` (every iteration, also when GradScaler skipped the step), per-iteration lr step.

The SNN/ANN differences live in a small :class:`Task` (input preparation, ``reset_net`` after each batch).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, Dataset, Sampler

from snnprune.training import distributed as D
from snnprune.training.checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from snnprune.training.cli import ConfigError, parse_args, pruner_kwargs, run_name
from snnprune.training.data import DataError, build_datasets

__all__ = ["METRICS_COLUMNS", "STEPS_COLUMNS", "Task", "evaluate", "main", "run", "train_one_epoch"]

METRICS_COLUMNS = (
    "epoch,lr,train_loss,train_top1,test_loss,test_top1,test_top5,sparsity,threshold,firing_rate,epoch_time_s"
).split(",")
STEPS_COLUMNS = ["step", "epoch", "lr", "threshold", "loss"]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _noop(model: nn.Module) -> None:
    return None


@dataclass
class Task:
    """What differs between an SNN and an ANN run.

    Attributes:
        kind: ``"snn"`` or ``"ann"``.
        build_model: ``(args, num_classes, in_channels) -> nn.Module``.
        prepare_input: applied to every input batch on the device (e.g. DVS layout handling).
        after_batch: called with the unwrapped model after each forward (``reset_net`` for SNNs).
        time_steps: ``args -> T`` for the analysis (None for ANNs).
    """

    kind: str
    build_model: Callable[[argparse.Namespace, int, int], nn.Module]
    prepare_input: Callable[[torch.Tensor], torch.Tensor] = field(default=_identity)
    after_batch: Callable[[nn.Module], None] = field(default=_noop)
    time_steps: Callable[[argparse.Namespace], int | None] | None = None


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


# ----------------------------------------------------------------------------------------------- helpers
_POSTFIX_EVERY = 20  # steps between progress-bar loss refreshes (each one is a host sync)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _mean_threshold(pruner: Any) -> float:
    """Mean over layers of ``pruner.get_last_threshold()`` (a global threshold exactly as it is)."""
    values = list(pruner.get_last_threshold().values())
    if not values:
        return 0.0
    if all(v == values[0] for v in values):
        return float(values[0])
    return float(np.mean(values))


def _accuracy(
    output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 5)
) -> list[torch.Tensor]:
    k = min(max(topk), output.shape[1])
    pred = output.topk(k, dim=1).indices
    correct = pred.eq(target[:, None])
    return [correct[:, : min(t, k)].any(dim=1).sum() for t in topk]


def _autocast(device: torch.device, amp: str) -> Any:
    if amp == "none":
        return nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _firing_monitor(model: nn.Module) -> tuple[list[Any], torch.Tensor] | None:
    """Forward hooks on every SpikingJelly neuron summing ``[spikes, neuron-steps]`` into one float64
    tensor on the neuron's device (no host sync per batch; None if the model has no neuron)."""
    try:
        from spikingjelly.activation_based.neuron import BaseNode
    except ImportError:  # pragma: no cover
        return None
    neurons = [m for m in model.modules() if isinstance(m, BaseNode)]
    if not neurons:
        return None
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    acc = torch.zeros(2, dtype=torch.float64, device=device)

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        acc[0] += output.detach().sum(dtype=torch.float64)
        acc[1] += output.numel()

    return [m.register_forward_hook(hook) for m in neurons], acc


def _to_device(
    x: torch.Tensor, y: torch.Tensor, device: torch.device, args: argparse.Namespace, task: Task
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch to ``device``, apply the task's input hook and the ``--channels-last`` layout."""
    x = task.prepare_input(x.to(device, non_blocking=True))
    if args.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def count_params(model: nn.Module) -> tuple[int, int]:
    """``(params, nonzero_params)`` of the effective model (pruned layers count their sparse weight).

    Args:
        model: a (possibly parametrized) model.

    Returns:
        Total and non-zero parameter counts.
    """
    total = nonzero = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".parametrizations." in name and name.endswith(".original"):
                path, rest = name.split(".parametrizations.")
                p = getattr(model.get_submodule(path), rest.split(".")[0])
            total += p.numel()
            nonzero += int(torch.count_nonzero(p))
    return total, nonzero


# ----------------------------------------------------------------------------------------------- loop
def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    device: torch.device,
    epoch: int,
    args: argparse.Namespace,
    task: Task,
    pruner: Any,
    scaler: torch.amp.GradScaler,
    lr_scheduler: Any,
    global_step: int,
    step_rows: list[list[Any]],
    progress: bool,
) -> tuple[dict[str, float], int]:
    """Train one epoch.

    Returns:
        ``({"train_loss", "train_top1"}, global_step)`` with metrics averaged over all processes.
    """
    from tqdm import tqdm

    model.train()
    limit = args.limit_train_batches
    n_batches = len(loader) if limit is None else min(limit, len(loader))
    # Per-step values stay on the device and are read once at the end of the epoch (one host sync), except
    # the progress bar's loss, refreshed every _POSTFIX_EVERY steps.
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss*n, correct, n
    losses: list[torch.Tensor] = []
    rows: list[list[Any]] = []
    bar = tqdm(total=n_batches, desc=f"epoch {epoch}", disable=not progress, leave=False, dynamic_ncols=True)
    for i, (x, y) in enumerate(loader):
        if i >= n_batches:
            break
        x, y = _to_device(x, y, device, args, task)
        with _autocast(device, args.amp):
            out = model(x)
            loss = criterion(out, y)
        loss = loss + pruner.regularization()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.clip_grad_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        task.after_batch(_unwrap(model))
        lr = optimizer.param_groups[0]["lr"]
        pruner.step()  # after optimizer.step(), before the lr scheduler (snnprune/docs/methods.md §12.6)
        if args.lr_step_per_iter:
            lr_scheduler.step()
        global_step += 1
        with torch.no_grad():
            loss_d = loss.detach().to(torch.float64)
            sums[0] += loss_d * len(y)
            sums[1] += _accuracy(out.float(), y, (1,))[0]
            sums[2] += len(y)
        losses.append(loss_d)
        rows.append([global_step, epoch, lr, _mean_threshold(pruner)])
        if progress and (i % _POSTFIX_EVERY == 0 or i == n_batches - 1):
            bar.set_postfix(loss=f"{float(loss_d):.3f}", lr=f"{lr:.3g}")
        bar.update()
    bar.close()
    if losses:
        for row, loss_v in zip(rows, torch.stack(losses).tolist(), strict=True):
            step_rows.append([*row, loss_v])
    loss_sum, correct, n = D.all_reduce_sum(sums.tolist(), device)
    return {"train_loss": loss_sum / max(n, 1), "train_top1": 100.0 * correct / max(n, 1)}, global_step


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    loader: DataLoader,
    device: torch.device,
    args: argparse.Namespace,
    task: Task,
) -> dict[str, float]:
    """Evaluate on ``loader`` (all processes; sums are all-reduced).

    Returns:
        ``{"test_loss", "test_top1", "test_top5", "firing_rate"}`` (firing_rate NaN for ANNs).
    """
    model.eval()
    monitor = _firing_monitor(_unwrap(model)) if task.kind == "snn" else None
    limit = args.limit_test_batches
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, top1, top5, n (one sync at the end)
    try:
        with parametrize.cached():
            for i, (x, y) in enumerate(loader):
                if limit is not None and i >= limit:
                    break
                x, y = _to_device(x, y, device, args, task)
                with _autocast(device, args.amp):
                    out = model(x)
                    loss = criterion(out, y)
                task.after_batch(_unwrap(model))
                top1, top5 = _accuracy(out.float(), y)
                sums[0] += loss.detach().double() * len(y)
                sums[1] += top1
                sums[2] += top5
                sums[3] += len(y)
    finally:
        if monitor is not None:
            for h in monitor[0]:
                h.remove()
    spikes = monitor[1].tolist() if monitor is not None else [0.0, 0.0]
    loss_sum, c1, c5, n, s, cnt = D.all_reduce_sum(sums.tolist() + spikes, device)
    n = max(n, 1)
    return {
        "test_loss": loss_sum / n,
        "test_top1": 100.0 * c1 / n,
        "test_top5": 100.0 * c5 / n,
        "firing_rate": (s / cnt) if (monitor is not None and cnt > 0) else float("nan"),
    }


# ----------------------------------------------------------------------------------------------- setup
def _device(args: argparse.Namespace) -> torch.device:
    if args.device:
        dev = torch.device(args.device)
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda requested but CUDA is not available; use --device cpu")
        if "LOCAL_RANK" in os.environ and dev.index is None:
            dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if args.amp == "fp16" and dev.type == "cpu":
        raise RuntimeError("--amp fp16 needs a CUDA device (CPU autocast supports bf16 only): use --amp bf16")
    return dev


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seeds the global RNG used by user transforms)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def _optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """Every parameter (θ, learned thresholds, BN) is optimized; weight decay acts on θ (snnprune/docs/methods.md §12.4)."""
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


def _scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace, steps_per_epoch: int) -> Any:
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


def _loaders(
    train_set: Dataset, test_set: Dataset, args: argparse.Namespace, distributed: bool
) -> tuple[DataLoader, DataLoader, Any]:
    from torch.utils.data.distributed import DistributedSampler

    if distributed:
        train_sampler: Any = DistributedSampler(train_set, shuffle=True, seed=args.seed, drop_last=True)
        test_sampler: Any = DistributedSampler(test_set, shuffle=False)
    else:
        train_sampler = EpochShuffleSampler(len(train_set), args.seed)
        test_sampler = None
    common = dict(
        num_workers=args.workers, pin_memory=torch.cuda.is_available(), persistent_workers=args.workers > 0
    )
    train_loader = DataLoader(
        train_set, batch_size=args.batch_size, sampler=train_sampler, drop_last=True, **common
    )
    test_loader = DataLoader(
        test_set, batch_size=args.batch_size, sampler=test_sampler, shuffle=False, **common
    )
    if len(train_loader) == 0:
        raise DataError(
            f"training set of {len(train_set)} samples is smaller than --batch-size {args.batch_size}"
        )
    return train_loader, test_loader, train_sampler


def _resolve_resume(args: argparse.Namespace, run_dir: Path) -> Path | None:
    if not args.resume:
        return None
    if args.resume == "auto":
        path = run_dir / "checkpoint.pth"
        return path if path.is_file() else None
    return Path(args.resume)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]], append: bool) -> None:
    new = not (append and path.is_file())
    with open(path, "w" if new else "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(header)
        w.writerows(rows)


def _truncate_csv(path: Path, column: str, keep_upto: int) -> None:
    """Drop rows with ``column > keep_upto`` (rows written after the checkpoint being resumed)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        header = rows and list(rows[0].keys())
    if not rows:
        return
    kept = [[r[h] for h in header] for r in rows if int(r[column]) <= keep_upto]
    _write_csv(path, header, kept, append=False)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


# ----------------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace, task: Task) -> dict[str, Any]:
    """Train (or ``--test-only`` evaluate) as configured by ``args``; see the module docstring.

    Args:
        args: parsed arguments (:func:`snnprune.training.get_args_parser`).
        task: the SNN/ANN hooks.

    Returns:
        The summary dict (also written to ``summary.json`` on rank 0), plus ``"run_dir"``.

    Raises:
        DataError, CheckpointError, ValueError, RuntimeError: bad inputs, with the fix in the message.
    """
    import snnprune

    t_start = time.perf_counter()
    device = _device(args)
    distributed = D.init_distributed(device)
    main_proc = D.is_main_process()
    progress = main_proc and not args.quiet and sys.stderr.isatty()
    log = (lambda *a: print(*a, flush=True)) if (main_proc and not args.quiet) else (lambda *a: None)
    _seed_everything(args.seed, args.deterministic)  # same init on every rank

    args.run_name = args.run_name or run_name(args)
    run_dir = Path(args.output_dir) / args.run_name
    resume_path = _resolve_resume(args, run_dir)
    if args.test_only and resume_path is None:
        raise CheckpointError(
            "--test-only needs --resume PATH (a checkpoint.pth/best.pth) or an existing run"
        )
    ckpt = load_checkpoint(resume_path) if resume_path is not None else None

    train_set, test_set, num_classes, in_channels = build_datasets(args)
    train_loader, test_loader, train_sampler = _loaders(train_set, test_set, args, distributed)
    steps_per_epoch = len(train_loader)
    if args.limit_train_batches is not None:
        steps_per_epoch = min(steps_per_epoch, args.limit_train_batches)

    model = task.build_model(args, num_classes, in_channels)
    pruner = snnprune.sparsify(model, args.method, **pruner_kwargs(args, steps_per_epoch))
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, args)
    lr_scheduler = _scheduler(optimizer, args, steps_per_epoch)
    pruner.bind(optimizer, lr_scheduler, None if args.lr_step_per_iter else steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    start_epoch, global_step, best_top1 = 0, 0, -1.0
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint {str(resume_path)!r} does not match the model/method of this run ({exc}); "
                "use the same --model/--width/--method as the run that wrote it"
            ) from None
        if not args.test_only:
            optimizer.load_state_dict(ckpt["optimizer"])
            lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            start_epoch, global_step = int(ckpt["epoch"]) + 1, int(ckpt["global_step"])
            best_top1 = float(ckpt.get("best_top1", -1.0))
        pruner.load_state_dict(ckpt["pruner"])

    dmodel: nn.Module = model
    if distributed:
        if args.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        dmodel = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    if args.test_only:
        m = evaluate(dmodel, criterion, test_loader, device, args, task)
        sp = snnprune.sparsity(model)
        res = {
            "kind": task.kind,
            "model": args.model,
            "method": args.method,
            "dataset": args.dataset,
            **m,
            "sparsity": sp["overall"],
            "threshold": _mean_threshold(pruner),
            "checkpoint": str(resume_path),
        }
        log(
            f"test-only {resume_path}: top1 {m['test_top1']:.2f}% top5 {m['test_top5']:.2f}% "
            f"sparsity {100 * sp['overall']:.2f}%"
        )
        D.cleanup()
        return res

    writer = None
    if main_proc:
        run_dir.mkdir(parents=True, exist_ok=True)
        config = {
            **vars(args),
            "kind": task.kind,
            "model": args.model,
            "method": args.method,
            "dataset": args.dataset,
            "steps_per_epoch": steps_per_epoch,
            "world_size": D.get_world_size(),
        }
        (run_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
        if ckpt is not None:
            _truncate_csv(run_dir / "metrics.csv", "epoch", start_epoch - 1)
            _truncate_csv(run_dir / "steps.csv", "step", global_step)
        else:
            for f in ("metrics.csv", "steps.csv"):
                (run_dir / f).unlink(missing_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_epoch if ckpt is not None else None)
        except ImportError:  # pragma: no cover
            log("tensorboard not installed: no TensorBoard events (pip install tensorboard)")
    if ckpt is not None:
        set_rng_state(ckpt["rng"])
        log(f"resumed from {resume_path} at epoch {start_epoch} (step {global_step})")

    log(
        f"{task.kind} {args.model} | {args.method} | {args.dataset} | {len(pruner.layers)} pruned layers | "
        f"{args.epochs} epochs x {steps_per_epoch} steps | device {device} x{D.get_world_size()}"
    )
    last_epoch = (
        args.epochs - 1 if args.stop_after_epoch is None else min(args.stop_after_epoch, args.epochs - 1)
    )
    m: dict[str, float] = {}
    for epoch in range(start_epoch, last_epoch + 1):
        t0 = time.perf_counter()
        train_sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        step_rows: list[list[Any]] = []
        tm, global_step = train_one_epoch(
            dmodel,
            criterion,
            optimizer,
            train_loader,
            device,
            epoch,
            args,
            task,
            pruner,
            scaler,
            lr_scheduler,
            global_step,
            step_rows,
            progress,
        )
        if not args.lr_step_per_iter:
            lr_scheduler.step()
        m = evaluate(dmodel, criterion, test_loader, device, args, task)
        sp = snnprune.sparsity(model)["overall"]
        row = {
            "epoch": epoch,
            "lr": lr,
            **tm,
            **m,
            "sparsity": sp,
            "threshold": _mean_threshold(pruner),
            "epoch_time_s": time.perf_counter() - t0,
        }
        is_best = m["test_top1"] > best_top1
        best_top1 = max(best_top1, m["test_top1"])
        if main_proc:
            _write_csv(
                run_dir / "metrics.csv", METRICS_COLUMNS, [[_fmt(row[c]) for c in METRICS_COLUMNS]], True
            )
            _write_csv(run_dir / "steps.csv", STEPS_COLUMNS, [[_fmt(v) for v in r] for r in step_rows], True)
            if writer is not None:
                for k in METRICS_COLUMNS[1:]:
                    if not (isinstance(row[k], float) and math.isnan(row[k])):
                        writer.add_scalar(k, row[k], epoch)
                writer.flush()
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict(),
                "pruner": pruner.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "global_step": global_step,
                "best_top1": best_top1,
                "rng": get_rng_state(),
                "args": vars(args),
            }
            save_checkpoint(state, run_dir / "checkpoint.pth")
            if is_best:
                save_checkpoint(state, run_dir / "best.pth")
        fr = "" if math.isnan(m["firing_rate"]) else f" fr {m['firing_rate']:.3f}"
        log(
            f"epoch {epoch}: loss {tm['train_loss']:.4f} train {tm['train_top1']:.2f}% | test {m['test_top1']:.2f}% "
            f"(top5 {m['test_top5']:.2f}%) | sparsity {100 * sp:.2f}% thr {row['threshold']:.4g}{fr} | "
            f"{row['epoch_time_s']:.1f}s"
        )

    if not m:  # resumed a finished run: evaluate the restored model
        m = evaluate(dmodel, criterion, test_loader, device, args, task)
    summary = _finish(
        args, task, model, pruner, test_loader, m, run_dir, main_proc, last_epoch + 1, t_start, log
    )
    if writer is not None:
        writer.close()
    D.cleanup()
    return summary


def _finish(
    args: argparse.Namespace,
    task: Task,
    model: nn.Module,
    pruner: Any,
    test_loader: DataLoader,
    m: dict[str, float],
    run_dir: Path,
    main_proc: bool,
    epochs_done: int,
    t_start: float,
    log: Callable[..., None],
) -> dict[str, Any]:
    import snnprune
    from snnprune.structured import export_files

    sp = snnprune.sparsity(model)
    params, nonzero = count_params(model)
    summary: dict[str, Any] = {
        "kind": task.kind,
        "model": args.model,
        "method": args.method,
        "dataset": args.dataset,
        "test_top1": m["test_top1"],
        "test_top5": m["test_top5"],
        "sparsity": sp["overall"],
        "nonzero_params": nonzero,
        "params": params,
        "firing_rate": None if math.isnan(m["firing_rate"]) else m["firing_rate"],
        "energy_pj": None,
        "sops": None,
        "macs": None,
        "threshold": _mean_threshold(pruner),
        "wall_time_s": None,
        "epochs": epochs_done,
    }
    totals: dict[str, Any] = {}
    if main_proc:
        try:
            report = snnprune.analyze(
                model,
                _AnalysisData(test_loader, task),
                max_batches=args.analyze_batches,
                time_steps=task.time_steps(args) if task.time_steps else None,
                progress=not args.quiet and sys.stderr.isatty(),
            )
        except (ImportError, AttributeError) as exc:
            log(f"snnprune.analyze unavailable ({exc}): analyze.json not written")
        else:
            report.to_json(run_dir / "analyze.json")
            totals = report.to_dict()["totals"]
            summary.update({k: totals.get(k) for k in ("energy_pj", "sops", "macs")})
        if args.export:
            sparse = snnprune.finalize(copy.deepcopy(model))
            torch.save(sparse.state_dict(), run_dir / "model_sparse.pth")
            x = next(iter(_AnalysisData(test_loader, task)))[0].to(next(model.parameters()).device)
            filt = getattr(args, "granularity", "weight") == "filter"  # + values/bitmask (and compact) files
            summary["export"] = export_files(model, sparse, x, run_dir, compacted=filt)
        summary["wall_time_s"] = time.perf_counter() - t_start
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["wall_time_s"] = time.perf_counter() - t_start
    summary["run_dir"] = str(run_dir)
    if D.get_world_size() > 1:  # one line per rank (checks that the ranks agree)
        print(
            f"[rank {D.get_rank()}] sparsity {sp['overall']:.8f} threshold {summary['threshold']:.8g} "
            f"test_top1 {m['test_top1']:.4f}",
            flush=True,
        )

    log("-" * 80)
    log(f"run {run_dir}  ({summary['wall_time_s']:.1f}s)")
    log(
        f"test top1 {m['test_top1']:.2f}%  top5 {m['test_top5']:.2f}%  | sparsity {100 * sp['overall']:.2f}% "
        f"({nonzero:,}/{params:,} params non-zero) | threshold {summary['threshold']:.4g}"
        + ("" if summary["firing_rate"] is None else f" | firing rate {summary['firing_rate']:.4f}")
    )
    for name, s in sp["layers"].items():
        log(f"  {name:<40s} {100 * s:6.2f}%")
    if totals:
        log(
            "analyze totals: "
            + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in totals.items())
        )
    return summary


class _AnalysisData:
    """Test batches as ``(prepared_input, target)`` for :func:`snnprune.analyze`."""

    def __init__(self, loader: DataLoader, task: Task) -> None:
        self.loader, self.task = loader, task

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield self.task.prepare_input(x), y

    def __len__(self) -> int:
        return len(self.loader)


def main(task: Task, parser: Any, argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` (with ``--config``), run, and turn input errors into one clear line (exit code 2).

    Args:
        task: the SNN/ANN hooks.
        parser: from :func:`snnprune.training.get_args_parser`.
        argv: arguments (None: ``sys.argv[1:]``).

    Returns:
        The summary dict.

    Raises:
        SystemExit: code 2 on a data, checkpoint or config error (message on stderr, no traceback).
    """
    try:
        args = parse_args(parser, argv)
        return run(args, task)
    except (DataError, CheckpointError, ConfigError) as exc:
        D.cleanup()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
