"""One validation of the whole training configuration, before any data is read or weight allocated
(:func:`prepare`); every failure is a :class:`~snnprune.training.cli.ConfigError` (or
:class:`~snnprune.training.checkpoint.CheckpointError`) whose message reads
``<option>: <what is wrong>; <what to do>``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from snnprune.data import DataError, check_data_path
from snnprune.methods import Pruner, get_method, method_kwargs, select_layers
from snnprune.training.checkpoint import CheckpointError, TrainState, load_checkpoint
from snnprune.training.cli import (
    SCRIPTS,
    ConfigError,
    check_values,
    explicit_options,
    method_options,
    model_option_names,
    option_name,
    options_with_role,
    pruner_kwargs,
    pruning_options,
    run_name,
)
from snnprune.training.loop import Task
from snnprune.training.run_folder import RunLock, check_output, check_run_folder
from snnprune.training.runs import instantiate

__all__ = ["Prepared", "flag_error", "prepare", "resolve_device"]


# ----------------------------------------------------------------------------------------------- device
def resolve_device(spec: str | None, amp: str = "none") -> torch.device:
    """The training device for ``--device`` ``spec`` (``cpu``, ``cuda``, ``cuda:N``; None: CUDA when
    available; under ``torchrun`` a bare ``cuda`` is ``cuda:LOCAL_RANK``), checked against ``--amp``: an
    unknown device, no CUDA, no such GPU or fp16 autocast on a CPU is a :class:`ConfigError`."""
    if spec is None:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(spec)
        except (RuntimeError, ValueError):
            raise ConfigError(f"--device: unknown device {spec!r}; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index):
        raise ConfigError(f"--device: {spec!r} is not supported for training; use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device: {spec!r} requested but no CUDA GPU is available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device: {spec!r} does not exist ({torch.cuda.device_count()} GPU(s) visible); "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
        if "LOCAL_RANK" in os.environ and dev.index is None:
            dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if amp == "fp16" and dev.type == "cpu":
        raise ConfigError(
            "--amp: fp16 needs a CUDA device (CPU autocast supports bf16 only); use --amp bf16 or none"
        )
    return dev


def _check_machine(args: argparse.Namespace) -> torch.device:
    """The device, after the checks of what this machine offers (device, AMP, CuPy backend, dataset path):
    each of them is made, and their problems are one :class:`ConfigError` together (a GPU recipe on a CPU
    machine without the data names both)."""
    problems: list[str] = []
    device = torch.device("cpu")
    try:
        device = resolve_device(args.device, args.amp)
    except ConfigError as exc:
        problems.append(str(exc))
    if getattr(args, "neuron_backend", None) == "cupy" and device.type != "cuda" and not problems:
        problems.append(
            f"--neuron-backend: cupy needs a CUDA device (this run uses {device}); use --neuron-backend "
            "spikingjelly or auto"
        )
    try:
        check_data_path(args)
    except DataError as exc:
        if not problems:
            raise
        problems.append(str(exc))
    if problems:
        raise ConfigError(" | ".join(problems))
    return device


# ----------------------------------------------------------------------------------------------- checkpoint
def _take_checkpoint(args: argparse.Namespace, path: Path, kind: str, explicit: frozenset[str]) -> TrainState:
    """The checkpoint at ``path``, its model, pruning and (unless ``--test-only``) training plan taken into
    ``args``; an explicit option that contradicts it is a :class:`ConfigError` naming both values."""
    state = TrainState.of(load_checkpoint(path))
    if state.kind in SCRIPTS and state.kind != kind:
        raise CheckpointError(
            f"--resume: {str(path)!r} is a checkpoint of an {state.kind.upper()} run; "
            f"use scripts/{SCRIPTS[state.kind]} for it"
        )
    saved = state.args
    if not isinstance(saved, dict):
        return state  # an old checkpoint without its arguments: the model load checks the shapes
    roles = ("model",) if args.test_only else ("model", "plan")
    for key in [*options_with_role(*roles), *model_option_names(args)]:
        if key not in saved or not hasattr(args, key):
            continue
        value, stored = getattr(args, key), saved[key]
        if key in explicit and value != stored:
            opt = option_name(key)
            if key == "epochs":
                raise ConfigError(
                    f"--epochs: the run of {str(path)!r} is planned for {stored} epochs (its lr and pruning "
                    f"schedules end there) and cannot be re-planned on resume; drop --epochs to finish it, "
                    f"or start a new run with --epochs {value}"
                )
            raise ConfigError(
                f"{opt}: the checkpoint {str(path)!r} was trained with {opt} {stored!r}, not {value!r}; "
                f"drop {opt} (--resume and --test-only use the checkpoint's own settings)"
            )
        setattr(args, key, stored)
    if not args.data_path and saved.get("data_path") and "data_path" not in explicit:
        args.data_path = saved["data_path"]
    return state


# ----------------------------------------------------------------------------------------------- combinations
def _check_combination(
    args: argparse.Namespace, explicit: frozenset[str], model_kwargs: Callable[[str], Any] | None = None
) -> None:
    """The cross-option rules (method options, optimizer/scheduler options, model options
    through ``model_kwargs``: model name -> accepted keywords); the first violated one is a :class:`ConfigError`."""
    e = args.epochs
    if args.lr_warmup_epochs >= e:
        raise ConfigError(
            f"--lr-warmup-epochs: must be < --epochs ({e}), got {args.lr_warmup_epochs}; shorten the warm-up"
        )
    if args.stop_after_epoch is not None and args.stop_after_epoch >= e:
        raise ConfigError(
            f"--stop-after-epoch: must be < --epochs ({e}) (epochs are numbered 0 to {e - 1}), got "
            f"{args.stop_after_epoch}; drop it to run to the end"
        )
    taken = method_kwargs(args.method)
    for dest, keyword in pruning_options().items():
        if dest in explicit and getattr(args, dest, None) is not None and keyword not in taken:
            opts = method_options(args.method)
            takes = f"it takes {', '.join(opts)}" if opts else "it takes no pruning option"
            raise ConfigError(
                f"{option_name(dest)}: not an option of --method {args.method} ({takes}); "
                f"drop {option_name(dest)} or choose a method that takes it"
            )
    if args.opt in ("adam", "adamw"):
        for dest in ("momentum", "nesterov"):
            if dest in explicit and (dest == "momentum" or args.nesterov):
                raise ConfigError(
                    f"{option_name(dest)}: not an option of --opt {args.opt} (SGD only); drop it or use --opt sgd"
                )
    if args.opt == "sgd" and args.nesterov and args.momentum <= 0:
        raise ConfigError("--nesterov: needs --momentum > 0; pass --momentum 0.9 or drop --nesterov")
    if args.lr_scheduler != "step":
        for dest in ("lr_step_size", "lr_gamma"):
            if dest in explicit:
                raise ConfigError(
                    f"{option_name(dest)}: only used by --lr-scheduler step (this run uses "
                    f"{args.lr_scheduler}); drop it or pass --lr-scheduler step"
                )
    if args.test_only and not args.resume:
        raise ConfigError(
            "--test-only: needs the checkpoint to evaluate; pass --resume PATH (checkpoint.pth/best.pth)"
        )
    if args.overwrite and args.resume:
        raise ConfigError(
            "--overwrite: contradicts --resume (a resumed run keeps its folder); drop one of them"
        )
    if model_kwargs is not None:
        try:
            accepted = set(model_kwargs(args.model))
        except (KeyError, ValueError):
            raise ConfigError(f"--model: unknown model {args.model!r}; see --help for the choices") from None
        for dest in ("width", "stem", *model_option_names(args)):
            if dest in explicit and getattr(args, dest) is not None and dest not in accepted:
                raise ConfigError(
                    f"{option_name(dest)}: not an option of --model {args.model} (it takes "
                    f"{', '.join(sorted(accepted - {'num_classes', 'in_channels'}))}); drop {option_name(dest)}"
                )


def flag_error(args: argparse.Namespace, exc: Exception) -> ConfigError:
    """The method's refusal ``exc`` (of its configuration, or of the model it is attached to) as the one
    line of the option it concerns: a
    :class:`~snnprune.KeywordError` names the option of its keyword (one not set is needed by the method, a
    set one has a value the method refuses), anything else names ``--method``."""
    msg = str(exc)
    taken = method_kwargs(args.method)
    options = {kw: dest for dest, kw in pruning_options().items() if kw in taken}
    options.update(exclude="prune_exclude", start_step="prune_start_epoch")  # see pruner_kwargs
    keyword = getattr(exc, "keyword", None)
    if keyword not in options and keyword in options_with_role("plan"):  # a plan the method cannot work with
        return ConfigError(f"{option_name(keyword)}: {msg}")
    if keyword not in options:
        return ConfigError(f"--method {args.method}: {msg}; fix the pruning options")
    dest = options[keyword]
    opt = option_name(dest)
    if getattr(args, dest, None) is None:
        return ConfigError(
            f"{opt}: --method {args.method} needs it ({msg}); pass {opt} or add '{dest}: <value>' to "
            "the config file"
        )
    problem = msg.removeprefix(f"{keyword} ")
    return ConfigError(f"{opt}: {problem}" + ("" if "; " in problem else f"; pass another {opt}"))


def _check_model(args: argparse.Namespace, task: Task) -> None:
    """The model's own checks of its options before any data: the engine's build of ``task``'s model record,
    on the meta device (no memory, no initialisation) with stand-ins for the dataset's classes and input
    channels (2 and 1); a :class:`~snnprune.KeywordError` of a model option names its flag (see
    :func:`~snnprune.training.runs.instantiate`). Then the ``--prune-exclude`` globs against the model's
    prunable layers."""
    with torch.device("meta"):
        record = task.model_builder(args, 2, 1)
        model = instantiate(record, where=f"--model {args.model}", fix="fix the model options", flags=True)
    try:
        select_layers(model, None, args.prune_exclude)
    except ValueError as exc:
        raise flag_error(args, exc) from None


# ----------------------------------------------------------------------------------------------- all
@dataclass
class Prepared:
    """What :func:`prepare` resolved: the training ``device``, ``run_dir`` (``output_dir / run_name``), the
    checkpoint to resume or evaluate (``resume_path`` and its :class:`TrainState` ``checkpoint``; None for a new
    run), the ``pruner`` configured in epochs (:meth:`~snnprune.Pruner.scale_steps` counts it in steps) and the held
    :class:`~snnprune.training.run_folder.RunLock` of ``run_dir`` (``lock``; None for ``--test-only`` and ranks
    other than 0), which the caller releases at the end of the run."""

    device: torch.device
    run_dir: Path
    resume_path: Path | None
    checkpoint: TrainState | None
    pruner: Pruner
    lock: Any = None


def prepare(args: argparse.Namespace, task: Task) -> Prepared:
    """Validate the whole configuration of a run of ``task`` (its ``kind``, model builder and models'
    keywords) and resolve device, run folder, checkpoint and lock, before any data or model exists;
    ``args`` is updated in place (``run_name``, the checkpoint's settings). In order: each option's range
    (:func:`~snnprune.training.cli.check_values`), the checkpoint's settings for ``--resume``/``--test-only``,
    the cross-option rules, the pruner's configuration (the method's own checks), device, AMP and
    dataset path, the model's own checks (its record built on the meta device) and the run folder
    (writable, locked, not holding a run unless resumed or ``--overwrite``). The first invalid input is a
    :class:`ConfigError`/:class:`CheckpointError` line."""
    explicit = explicit_options(args)
    check_values(args)
    # the script's defaults that the method's configuration does without are unset
    dest_of = {kw: dest for dest, kw in pruning_options().items()}
    given = {kw for kw, dest in dest_of.items() if dest in explicit}
    for kw in get_method(args.method).unset_defaults(pruner_kwargs(args), given):
        if kw in dest_of and dest_of[kw] not in explicit:
            setattr(args, dest_of[kw], None)
    resume_path = Path(args.resume) if args.resume and args.resume != "auto" else None
    state = None if resume_path is None else _take_checkpoint(args, resume_path, task.kind, explicit)
    args.run_name = args.run_name or run_name(args)
    run_dir = Path(args.output_dir).expanduser() / args.run_name
    if args.resume == "auto":
        if (run_dir / "checkpoint.pth").is_file():
            resume_path = run_dir / "checkpoint.pth"
            state = _take_checkpoint(args, resume_path, task.kind, explicit)
        elif args.test_only:
            raise ConfigError(
                f"--resume: no checkpoint.pth in {str(run_dir)!r} to evaluate; pass --resume PATH"
            )
    check_values(args)  # the checkpoint's values too
    _check_combination(args, explicit, task.model_kwargs)
    # the options this run's method and model do not take were only the script's defaults: unset
    taken = method_kwargs(args.method)
    unused = [dest for dest, keyword in pruning_options().items() if keyword not in taken]
    if task.model_kwargs is not None:
        accepted = set(task.model_kwargs(args.model))
        unused += [dest for dest in ("width", "stem", *model_option_names(args)) if dest not in accepted]
    for dest in unused:
        if hasattr(args, dest):
            setattr(args, dest, None)
    # the pruner in epochs (see pruner_kwargs): the method's checks of the plan and of its configuration
    config, plan = pruner_kwargs(args), {dest: getattr(args, dest) for dest in options_with_role("plan")}
    try:
        get_method(args.method).check_plan(config, plan)
        pruner = get_method(args.method)(**config)
    except (ValueError, TypeError) as exc:
        raise flag_error(args, exc) from None
    device = _check_machine(args)
    _check_model(args, task)
    if state is not None and not args.test_only:
        done = state.epoch
        if args.stop_after_epoch is not None and args.stop_after_epoch < done + 1 and done + 1 < args.epochs:
            raise ConfigError(
                f"--stop-after-epoch: the checkpoint has already finished epoch {done}; pass a later epoch "
                "or drop --stop-after-epoch"
            )
    lock = None
    if not args.test_only and int(os.environ.get("RANK", "0")) == 0:  # the writer; torchrun stops the others
        check_output(run_dir)
        lock = RunLock(run_dir).acquire()  # before the check, so two runs cannot both find the folder free
        try:
            check_run_folder(run_dir, args, resume_path)
        except BaseException:
            lock.release()
            raise
    return Prepared(device, run_dir, resume_path, state, pruner, lock)
