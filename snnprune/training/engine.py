"""The training run: :func:`run` (validate -> build -> train/evaluate -> finish) and :func:`main`.

:func:`~snnprune.training.validation.prepare` checks the whole configuration before any data or model is
built; the model comes from ``task.model_builder``'s record and its pruner is the one ``prepare`` configured,
counted in steps by the data and attached (on resume the checkpoint's, by
:func:`~snnprune.training.runs.restore` as ``load_run`` does); the optimizer, lr scheduler and
``pruner.bind`` follow (snnprune/docs/methods.md §3.2, §12.6), then the epochs of
:func:`~snnprune.training.loop.train_one_epoch` and :func:`~snnprune.training.loop.evaluate`, every file
written through one :class:`~snnprune.training.run_folder.RunFolder`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from snnprune.data import build_datasets
from snnprune.output_masks import has_output_mask
from snnprune.structured import recalibrate_bn
from snnprune.training import distributed as D
from snnprune.training.builders import build_loaders, build_optimizer, build_scheduler, seed_everything
from snnprune.training.checkpoint import CheckpointError, TrainState, get_rng_state, set_rng_state
from snnprune.training.cli import (
    ConfigError,
    method_options,
    options_with_role,
    parse_args,
    plain_args,
    pruning_options,
)
from snnprune.training.interrupts import stop_on_signals
from snnprune.training.loop import (
    LoopOptions,
    NonFiniteLossError,
    Task,
    autocast,
    evaluate,
    mean_threshold,
    reset,
    to_device,
    train_one_epoch,
)
from snnprune.training.run_folder import RunFolder, all_finite, new_run_note
from snnprune.training.runs import BUILDER_KEY, instantiate, restore
from snnprune.training.validation import flag_error, prepare

__all__ = ["CHANNEL_BN_RECALIBRATE", "count_params", "main", "run"]

#: training batches the BN statistics are re-estimated on before each evaluation of a run whose method
#: removes whole channels (:attr:`~snnprune.Pruner.removes_channels`: the running statistics of training
#: lag, see :func:`snnprune.structured.recalibrate_bn`), unless ``--bn-recalibrate`` says otherwise
CHANNEL_BN_RECALIBRATE = 20


def count_params(model: nn.Module) -> tuple[int, int]:
    """``(params, nonzero_params)`` of the effective model: a parametrized layer counts its (sparse) weight,
    not θ nor the parametrization's own parameters (a learned threshold or mask logits), nor the parameters
    of a neuron's output mask (:mod:`snnprune.output_masks`)."""
    total = nonzero = 0
    masks = {id(p) for m in model.modules() if has_output_mask(m) for p in m.output_mask.parameters()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if id(p) in masks:
                continue
            path, found, rest = f".{name}".partition(".parametrizations.")  # "." also finds a top-level one
            if found and not name.endswith(".original"):
                continue
            if found:
                p = getattr(model.get_submodule(path[1:]), rest.split(".")[0])
            total += p.numel()
            nonzero += int(torch.count_nonzero(p))
    return total, nonzero


# ----------------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace, task: Task) -> dict[str, Any]:
    """Train (or ``--test-only`` evaluate) as configured by ``args`` (:func:`parse_args`) with the ``task``'s
    hooks; returns the summary (also ``summary.json`` on rank 0) plus ``"run_dir"``. Raises
    :class:`ConfigError`, :class:`DataError`, :class:`CheckpointError` (bad inputs, one line with the fix),
    :class:`NonFiniteLossError` (the last finite checkpoint is kept) and :class:`Interrupted` (SIGINT/SIGTERM
    stopped training after a step; the last checkpoint is kept)."""
    t_start = time.perf_counter()
    prep = prepare(args, task)  # every input checked before any work
    # the run folder is this process's until the run ends; SIGINT/SIGTERM stop training after a step
    with prep.lock or nullcontext(), stop_on_signals(enabled=not args.test_only):
        try:
            return _run(args, task, prep, t_start)
        except RuntimeError as exc:  # out of memory (the last epoch's checkpoint is kept): one line
            text = str(exc)
            if not (
                isinstance(exc, torch.OutOfMemoryError)
                or "can't allocate memory" in text
                or "out of memory" in text
            ):
                raise
            sizes = f"--width {args.width} --T {getattr(args, 'T', '-')} --batch-size {args.batch_size}"
            raise ConfigError(
                f"--width: the run does not fit in memory with {sizes} ({text.strip().splitlines()[0][:160]}); "
                "use smaller values"
            ) from None


def _run(args: argparse.Namespace, task: Task, prep: Any, t_start: float) -> dict[str, Any]:
    import snnprune

    device, run_dir, resume_path, ckpt = prep.device, prep.run_dir, prep.resume_path, prep.checkpoint
    distributed = D.init_distributed(device)
    main_proc = D.is_main_process()
    progress = main_proc and not args.quiet and sys.stderr.isatty()
    plain_log = main_proc and not args.quiet and not sys.stdout.isatty() and not progress
    log = (lambda *a: print(*a, flush=True)) if (main_proc and not args.quiet) else (lambda *a: None)
    if main_proc and args.resume == "auto" and ckpt is None:  # a note, also under --quiet
        print(new_run_note(run_dir), flush=True)
    seed_everything(args.seed, args.deterministic)  # same init on every rank

    train_set, test_set, num_classes, in_channels = build_datasets(args)
    train_loader, test_loader, train_sampler = build_loaders(train_set, test_set, args, distributed)
    steps_per_epoch = min(len(train_loader), args.limit_train_batches or len(train_loader))
    options = LoopOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LoopOptions)})
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    builder = task.model_builder(args, num_classes, in_channels)
    model = instantiate(builder, where=f"--model {args.model}", fix="fix the model options", flags=True)
    if ckpt is None:  # the pruner that prepare configured in epochs, counted in optimizer steps
        try:
            pruner = prep.pruner.scale_steps(steps_per_epoch).prepare(model, exclude=args.prune_exclude)
        except (ValueError, TypeError) as exc:
            raise flag_error(args, exc) from None
    else:  # as load_run rebuilds a run: the pruner configured by the checkpoint, its states loaded
        source = f"--resume: checkpoint {str(resume_path)!r}"
        pruner = restore(model, args.method, ckpt, exclude=args.prune_exclude, source=source)
    model.to(device)
    if args.test_only:  # evaluate the checkpoint; nothing is written
        m = evaluate(model, criterion, test_loader, device, options, progress)
        sp = snnprune.sparsity(model)["overall"]
        log(
            f"test-only {resume_path}: top1 {m['test_top1']:.2f}% top5 {m['test_top5']:.2f}% sparsity {100 * sp:.2f}%"
        )
        D.cleanup()
        return {
            **_summary(args, task, pruner, m, sp),
            "test_loss": m["test_loss"],
            "checkpoint": str(resume_path),
        }
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, args)
    plan = argparse.Namespace(**{**vars(args), "epochs": pruner.schedule_epochs(args.epochs)})
    lr_scheduler = build_scheduler(optimizer, plan, steps_per_epoch)
    try:  # a method may plan on the optimizer and lr schedule here (e.g. sum the learning rates)
        pruner.bind(optimizer, lr_scheduler, None if args.lr_step_per_iter else steps_per_epoch)
    except ValueError as exc:
        raise ConfigError(f"--method {args.method}: {exc}") from None
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")

    start_epoch, global_step, best_top1 = 0, 0, -1.0
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt.optimizer)
            lr_scheduler.load_state_dict(ckpt.lr_scheduler)
            scaler.load_state_dict(ckpt.scaler)
            start_epoch, global_step, best_top1 = ckpt.epoch + 1, ckpt.global_step, float(ckpt.best_top1)
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"--resume: checkpoint {str(resume_path)!r} does not match the model/method of this run "
                f"({first}); use the settings of the run that wrote it"
            ) from None

    dmodel: nn.Module = model
    if distributed and any(p.numel() == 0 for p in model.parameters()):
        _materialize(model, test_loader, device, options)  # DDP fixes its buckets' shapes when it wraps
    if distributed:
        if args.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        dmodel = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    folder = RunFolder(run_dir, main_proc)
    unset = pruning_options()  # the options of other methods are left out of config.json
    once = {"config", *options_with_role("once")}  # as is --config
    config = {
        **{k: v for k, v in plain_args(args).items() if k not in once and not (k in unset and v is None)},
        "kind": task.kind,
        "steps_per_epoch": steps_per_epoch,
        "world_size": D.get_world_size(),
        BUILDER_KEY: builder,
    }
    folder.start(config, resumed=(start_epoch - 1, global_step) if ckpt is not None else None, log=log)
    if ckpt is not None:
        set_rng_state(ckpt.rng)
        log(f"resumed from {resume_path} at epoch {start_epoch} (step {global_step})")

    log(
        f"{task.kind} {args.model} | {args.method} | {args.dataset} | {len(pruner.layers)} pruned layers | "
        f"{args.epochs} epochs x {steps_per_epoch} steps | device {device} x{D.get_world_size()}"
    )
    n_recalibrate = args.bn_recalibrate
    if n_recalibrate is None:
        n_recalibrate = CHANNEL_BN_RECALIBRATE if pruner.removes_channels else 0
    # BN statistics are re-estimated on the first training batches, in order and without workers, so that
    # every DDP process gets the same
    recalibration = DataLoader(train_set, batch_size=args.batch_size, shuffle=False, num_workers=0)
    last_epoch = args.epochs - 1 if args.stop_after_epoch is None else args.stop_after_epoch
    m: dict[str, float] = {}
    try:
        for epoch in range(start_epoch, last_epoch + 1):
            t0 = time.perf_counter()
            train_sampler.set_epoch(epoch)
            pruner.before_epoch()
            lr = optimizer.param_groups[0]["lr"]
            tm, step_rows, global_step = train_one_epoch(
                dmodel,
                train_loader,
                criterion=criterion,
                optimizer=optimizer,
                scaler=scaler,
                lr_scheduler=lr_scheduler,
                pruner=pruner,
                device=device,
                epoch=epoch,
                global_step=global_step,
                options=options,
                progress=progress,
                log=log if plain_log else None,
            )
            if not args.lr_step_per_iter:
                lr_scheduler.step()
            if n_recalibrate > 0:
                batches = itertools.islice(recalibration, n_recalibrate)
                with autocast(device, options.amp), parametrize.cached():
                    recalibrate_bn(
                        model, (to_device(x, y, device, options)[0] for x, y in batches), reset=reset
                    )
            m = evaluate(dmodel, criterion, test_loader, device, options, progress)
            sp = snnprune.sparsity(model)["overall"]
            row = {"epoch": epoch, "lr": lr, **tm, **m, "sparsity": sp, "threshold": mean_threshold(pruner),
                   "epoch_time_s": time.perf_counter() - t0}  # fmt: skip
            state = TrainState(model=model.state_dict(), optimizer=optimizer.state_dict(),
                               lr_scheduler=lr_scheduler.state_dict(), scaler=scaler.state_dict(),
                               pruner=pruner.state_dict(), rng=get_rng_state(), epoch=epoch,
                               global_step=global_step, best_top1=max(best_top1, m["test_top1"]),
                               args=plain_args(args), kind=task.kind)  # fmt: skip
            if not all_finite(state.model):  # never written, never best.pth
                raise NonFiniteLossError(epoch, global_step, float("nan"), what="model weights")
            is_best, best_top1 = m["test_top1"] > best_top1, state.best_top1
            folder.write_epoch(row, step_rows)
            folder.save_checkpoint(state.as_dict(), is_best=is_best)
            fr = "" if math.isnan(m["firing_rate"]) else f" fr {m['firing_rate']:.3f}"
            log(
                f"epoch {epoch}: loss {tm['train_loss']:.4f} train {tm['train_top1']:.2f}% | test "
                f"{m['test_top1']:.2f}% (top5 {m['test_top5']:.2f}%) | sparsity {100 * sp:.2f}% "
                f"thr {row['threshold']:.4g}{fr} | {row['epoch_time_s']:.1f}s"
            )
        if not m:  # resumed a finished run: evaluate the restored model
            m = evaluate(dmodel, criterion, test_loader, device, options, progress)
        summary = _finish(args, task, model, pruner, test_loader, m, folder, last_epoch + 1, log)
    finally:
        folder.close()
    summary["wall_time_s"] = time.perf_counter() - t_start
    folder.write_json("summary.json", summary)
    summary["run_dir"] = str(folder.path)
    log(f"run {folder.path}  ({summary['wall_time_s']:.1f}s)")
    D.cleanup()
    return summary


def _summary(
    args: argparse.Namespace, task: Task, pruner: Any, m: dict[str, float], sp: float
) -> dict[str, Any]:
    """The summary's description of the run and its test metrics."""
    fr = None if math.isnan(m["firing_rate"]) else m["firing_rate"]
    return {"kind": task.kind, "model": args.model, "method": args.method, "dataset": args.dataset,
            "test_top1": m["test_top1"], "test_top5": m["test_top5"],
            "sparsity": sp, "firing_rate": fr, "threshold": mean_threshold(pruner)}  # fmt: skip


def _materialize(model: nn.Module, loader: DataLoader, device: torch.device, options: LoopOptions) -> None:
    """One evaluation forward of a test batch, so that parameters shaped by their first forward (e.g. a
    neuron's output-mask logits) have their shapes; the RNG streams and the model's state are unchanged."""
    was_training = model.training
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        x, _ = to_device(*next(iter(loader))[:2], device, options)
        model.eval()
        with autocast(device, options.amp):
            model(x)
        reset(model)
    model.train(was_training)


def _finish(
    args: argparse.Namespace,
    task: Task,
    model: nn.Module,
    pruner: Any,
    test_loader: DataLoader,
    m: dict[str, float],
    folder: RunFolder,
    epochs_done: int,
    log: Callable[..., None],
) -> dict[str, Any]:
    """The final summary: parameters, the analysis (``analyze.json``) and the ``--export`` files (a run that
    ends with every prunable weight at zero is a :class:`ConfigError` instead)."""
    import snnprune

    sp = snnprune.sparsity(model)
    if epochs_done == args.epochs and pruner.layers and sp["overall"] == 1.0:
        raise ConfigError(
            f"--method {args.method}: every prunable weight is zero at the end of the run (threshold "
            f"{mean_threshold(pruner):.4g}), so the network's output does not depend on its input; the "
            f"checkpoints are kept: train again with options that prune less ({', '.join(method_options(args.method))})"
        )
    params, nonzero = count_params(model)
    summary = {**_summary(args, task, pruner, m, sp["overall"]), "nonzero_params": nonzero, "params": params,
               "energy_pj": None, "sops": None, "macs": None, "neuron_sparsity": None,
               "epochs": epochs_done}  # fmt: skip
    if folder.main and args.analyze_batches > 0:
        report = snnprune.analyze(
            model,
            test_loader,
            max_batches=args.analyze_batches,
            progress=not args.quiet and sys.stderr.isatty(),
        )
        folder.write_json("analyze.json", report.to_dict())
        totals = report.to_dict()["totals"]
        summary.update({k: totals.get(k) for k in ("energy_pj", "sops", "macs", "neuron_sparsity")})
        log(
            "analyze totals: "
            + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in totals.items())
        )
    if folder.main and args.export:
        from snnprune.structured import export_files

        sparse = snnprune.finalize(copy.deepcopy(model))
        folder.save_model("model_sparse.pth", sparse.state_dict())
        x = next(iter(test_loader))[0].to(next(model.parameters()).device)
        # + values/bitmask (and compact) files
        summary["export"] = export_files(model, sparse, x, folder.path, compacted=pruner.removes_channels)
    if D.get_world_size() > 1:  # one line per rank (checks that the ranks agree)
        print(f"[rank {D.get_rank()}] sparsity {sp['overall']:.8f} threshold {summary['threshold']:.8g} "
              f"test_top1 {m['test_top1']:.4f}", flush=True)  # fmt: skip
    log("-" * 80)
    log(
        f"test top1 {m['test_top1']:.2f}%  top5 {m['test_top5']:.2f}%  | sparsity {100 * sp['overall']:.2f}% "
        f"({nonzero:,}/{params:,} params non-zero) | threshold {summary['threshold']:.4g}"
        + ("" if summary["firing_rate"] is None else f" | firing rate {summary['firing_rate']:.4f}")
    )
    for name, s in sp["layers"].items():
        log(f"  {name:<40s} {100 * s:6.2f}%")
    return summary


def main(task: Task, parser: Any, argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` (None: ``sys.argv[1:]``; with ``--config``) with ``parser``
    (:func:`snnprune.training.get_args_parser`) and :func:`run` the ``task``; the entry scripts turn the
    errors of :func:`run` into exit codes."""
    try:
        return run(parse_args(parser, argv, kind=task.kind), task)
    except BaseException:
        D.cleanup()
        raise
