"""One validation of the whole training configuration, before any data or model is built.

:func:`prepare` runs, in order: each option's declared range (:func:`~snnprune.training.cli.check_values`),
the checkpoint's own settings for ``--resume``/``--test-only`` (the options of
role ``model``, and ``plan`` for ``--resume``), the cross-option rules (pruning window, options the method
does not take, optimizer/scheduler options), the method's own check of its options (the
:class:`~snnprune.Pruner` is constructed, which builds no model), device and AMP, and the run folder
(writable, locked, not already holding a run unless resumed or ``--overwrite``). Every failure is a
:class:`~snnprune.training.cli.ConfigError` (or :class:`~snnprune.training.checkpoint.CheckpointError`)
whose message reads ``<option>: <what is wrong>; <what to do>``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from snnprune.methods import get_method, list_methods, method_kwargs
from snnprune.training.checkpoint import CheckpointError, load_checkpoint
from snnprune.training.cli import (
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
from snnprune.training.data import DataError, check_data_path

__all__ = ["RUN_FILES", "Prepared", "prepare", "resolve_device"]

#: Files that make a folder a run folder (a new run into it needs --resume or --overwrite).
RUN_FILES = (
    "checkpoint.pth",
    "best.pth",
    "metrics.csv",
    "steps.csv",
    "summary.json",
    "analyze.json",
    "config.json",
    "model_sparse.pth",
)


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
def _apply_checkpoint(
    args: argparse.Namespace, state: dict[str, Any], path: Path, *, kind: str, explicit: frozenset[str]
) -> None:
    """Take the model, pruning and (unless ``--test-only``) the training plan from the checkpoint ``state``
    into ``args``; an explicit option that contradicts it is a :class:`ConfigError` naming both values."""
    ck_kind = state.get("kind")
    if ck_kind in ("snn", "ann") and ck_kind != kind:
        script = "train_sew.py" if ck_kind == "snn" else "train_ann.py"
        raise CheckpointError(
            f"--resume: {str(path)!r} is a checkpoint of an {ck_kind.upper()} run; use scripts/{script} for it"
        )
    saved = state.get("args")
    if not isinstance(saved, dict):
        return  # an old checkpoint without its arguments: the model load checks the shapes
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


# ----------------------------------------------------------------------------------------------- combinations
def _check_combination(
    args: argparse.Namespace, explicit: frozenset[str], model_kwargs: Callable[[str], Any] | None = None
) -> None:
    """The cross-option rules (pruning window, method options, optimizer/scheduler options, model options
    through ``model_kwargs``: model name -> accepted keywords); the first violated one is a :class:`ConfigError`."""
    e = args.epochs
    if args.prune_start_epoch >= e:
        raise ConfigError(
            f"--prune-start-epoch: must be < --epochs ({e}), got {args.prune_start_epoch}; "
            "start pruning in an epoch of the run"
        )
    if args.lr_warmup_epochs >= e:
        raise ConfigError(
            f"--lr-warmup-epochs: must be < --epochs ({e}), got {args.lr_warmup_epochs}; shorten the warm-up"
        )
    if args.stop_after_epoch is not None and args.stop_after_epoch >= e:
        raise ConfigError(
            f"--stop-after-epoch: must be < --epochs ({e}) (epochs are numbered 0 to {e - 1}), got "
            f"{args.stop_after_epoch}; drop it to run to the end"
        )
    if args.method not in list_methods():  # only reachable through a namespace built without the parser
        raise ConfigError(
            f"--method: unknown method {args.method!r}; choose one of {', '.join(list_methods())}"
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


def _check_method(args: argparse.Namespace) -> None:
    """The method's own check of its options: its :meth:`~snnprune.Pruner.check_plan` of the training plan,
    then its :class:`~snnprune.Pruner` is constructed (no model, an epoch counted as one step). A :class:`~snnprune.KeywordError` names the option of its keyword: one not
    set is needed by the method, a set one has a value the method refuses."""
    kwargs = pruner_kwargs(args, 1)
    kwargs.pop("exclude", None)
    plan = {dest: getattr(args, dest) for dest in options_with_role("plan") if hasattr(args, dest)}
    try:
        get_method(args.method).check_plan(kwargs, plan)
        get_method(args.method)(**kwargs)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        taken = method_kwargs(args.method)
        options = {kw: dest for dest, kw in pruning_options().items() if kw in taken}
        keyword = getattr(exc, "keyword", None)
        if keyword in plan and keyword not in options:  # a plan option the method cannot work with
            raise ConfigError(f"{option_name(keyword)}: {msg}") from None
        if keyword not in options:
            raise ConfigError(f"--method {args.method}: {msg}; fix the pruning options") from None
        dest = options[keyword]
        opt = option_name(dest)
        if getattr(args, dest, None) is None:
            raise ConfigError(
                f"{opt}: --method {args.method} needs it ({msg}); pass {opt} or add '{dest}: <value>' to "
                "the config file"
            ) from None
        problem = msg.removeprefix(f"{keyword} ")
        raise ConfigError(
            f"{opt}: {problem}" + ("" if "; " in problem else f"; pass another {opt}")
        ) from None


# ----------------------------------------------------------------------------------------------- run folder
def holds_run(folder: Path) -> list[str]:
    """The run files (:data:`RUN_FILES`, ``tb/``) present in ``folder``; empty when it holds no run."""
    return [f for f in RUN_FILES if (folder / f).exists()] + (["tb/"] if (folder / "tb").is_dir() else [])


def check_output(run_dir: Path) -> None:
    """The run folder ``run_dir`` can be created and written (else a :class:`ConfigError`: a file in the way,
    no write permission)."""
    out = run_dir.parent
    for p, opt in ((out, "--output-dir"), (run_dir, "--run-name")):
        if p.is_symlink() and not p.exists():
            raise ConfigError(f"{opt}: {str(p)!r} is a dangling symlink; remove it or pass another {opt}")
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{opt}: {str(p)!r} is a file, not a folder; pass another {opt}")
    probe = run_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"--output-dir: {str(probe)!r} is a file, so {str(run_dir)!r} cannot be created; pass another --output-dir"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"--output-dir: {str(probe)!r} is not writable (permission denied); pass a folder you can write to"
        )


def check_run_folder(run_dir: Path, args: argparse.Namespace, resume_path: Path | None) -> None:
    """A new run never starts into a folder that holds one, unless ``--overwrite`` (or it is the folder of the
    checkpoint being resumed, ``resume_path``); else a :class:`ConfigError`. ``--overwrite`` removes only
    the files of the previous run's manifest, so it refuses a folder with run files but no manifest."""
    if args.test_only:
        return
    if args.overwrite:
        from snnprune.training.run_folder import MANIFEST_FILE, read_manifest

        present = holds_run(run_dir)
        if present and read_manifest(run_dir) is None:
            raise ConfigError(
                f"--overwrite: {str(run_dir)!r} has files with a run's names ({', '.join(present)}) but no "
                f"{MANIFEST_FILE}, so nothing shows that a run wrote them; remove them yourself or pick "
                "another --run-name"
            )
        return
    present = holds_run(run_dir)
    if not present:
        return
    if resume_path is not None and resume_path.resolve().parent == run_dir.resolve():
        return
    if (
        args.resume == "auto"
        and resume_path is None
        and not set(present) & {"checkpoint.pth", "best.pth", "metrics.csv", "summary.json"}
    ):
        return  # killed before its first checkpoint: nothing finished to lose
    raise ConfigError(
        f"--run-name: {str(run_dir)!r} already holds a run ({', '.join(present)}); continue it with "
        "--resume auto, pick a new --run-name, or pass --overwrite to replace it"
    )


# ----------------------------------------------------------------------------------------------- all
@dataclass
class Prepared:
    """What :func:`prepare` resolved: the training ``device``, ``run_dir`` (``output_dir / run_name``), the
    checkpoint to resume or evaluate (``resume_path`` and its contents ``checkpoint``; None for a new run) and
    the held :class:`~snnprune.training.run_folder.RunLock` of ``run_dir`` (``lock``; None for
    ``--test-only`` and ranks other than 0), which the caller releases at the end of the run."""

    device: torch.device
    run_dir: Path
    resume_path: Path | None
    checkpoint: dict[str, Any] | None
    lock: Any = None


def prepare(
    args: argparse.Namespace, kind: str, model_kwargs: Callable[[str], Any] | None = None
) -> Prepared:
    """Validate the whole configuration of a ``kind`` (``"snn"``/``"ann"``) run and resolve device, run
    folder, checkpoint and lock, before any data or model exists; ``args`` is updated in place (``run_name``,
    the checkpoint's settings), ``model_kwargs`` is the ``models`` registry's name -> accepted keywords (None:
    not checked). The first invalid input is a :class:`ConfigError`/:class:`CheckpointError` line."""
    explicit = explicit_options(args)
    check_values(args)
    if args.method in list_methods():  # the script's defaults that the method's configuration does without
        dest_of = {kw: dest for dest, kw in pruning_options().items()}
        given = {kw for kw, dest in dest_of.items() if dest in explicit}
        for kw in get_method(args.method).unset_defaults(pruner_kwargs(args, 1), given):
            if kw in dest_of and dest_of[kw] not in explicit:
                setattr(args, dest_of[kw], None)
    if model_kwargs is not None and args.model is not None:  # the script's model defaults this model lacks
        try:
            taken = set(model_kwargs(args.model))
        except (KeyError, ValueError):
            taken = None  # refused below, by _check_combination
        for dest in ("width", "stem", *model_option_names(args)) if taken is not None else ():
            if dest not in taken and dest not in explicit:
                setattr(args, dest, None)
    resume_path: Path | None = None
    state = None
    if args.resume and args.resume != "auto":
        resume_path = Path(args.resume)
        state = load_checkpoint(resume_path)
        _apply_checkpoint(args, state, resume_path, kind=kind, explicit=explicit)
    args.run_name = args.run_name or run_name(args)
    run_dir = Path(args.output_dir).expanduser() / args.run_name
    if args.resume == "auto":
        candidate = run_dir / "checkpoint.pth"
        if candidate.is_file():
            resume_path = candidate
            state = load_checkpoint(candidate)
            _apply_checkpoint(args, state, candidate, kind=kind, explicit=explicit)
        elif args.test_only:
            raise ConfigError(
                f"--resume: no checkpoint.pth in {str(run_dir)!r} to evaluate; pass --resume PATH"
            )
    check_values(args)  # the checkpoint's values too
    _check_combination(args, explicit, model_kwargs)
    _check_method(args)
    device = _check_machine(args)
    if state is not None and not args.test_only:
        done = int(state["epoch"])
        if args.stop_after_epoch is not None and args.stop_after_epoch < done + 1 and done + 1 < args.epochs:
            raise ConfigError(
                f"--stop-after-epoch: the checkpoint has already finished epoch {done}; pass a later epoch "
                "or drop --stop-after-epoch"
            )
    # Pruning options the method does not take were only defaults: record them as unset.
    taken = method_kwargs(args.method)
    for dest, keyword in pruning_options().items():
        if keyword not in taken and hasattr(args, dest):
            setattr(args, dest, None)
    lock = None
    if not args.test_only and int(os.environ.get("RANK", "0")) == 0:  # the writer; torchrun stops the others
        check_output(run_dir)
        from snnprune.training.run_folder import RunLock  # (run_folder imports this module)

        lock = RunLock(run_dir).acquire()  # before the check, so two runs cannot both find the folder free
        try:
            check_run_folder(run_dir, args, resume_path)
        except BaseException:
            lock.release()
            raise
    return Prepared(device=device, run_dir=run_dir, resume_path=resume_path, checkpoint=state, lock=lock)
