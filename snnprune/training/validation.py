"""One validation of the whole training configuration, before any data or model is built.

:func:`prepare` runs, in order: the value of every option (:data:`RULES`: type, range, finiteness), the
checkpoint's own settings for ``--resume``/``--test-only`` (:func:`apply_checkpoint`), the cross-option
rules (pruning window, options the method does not take, options the method needs, optimizer/scheduler
options, device and AMP) and the run folder (writable, not already holding a run unless resumed or
``--overwrite``). Every failure is a :class:`~snnprune.training.cli.ConfigError` (or
:class:`~snnprune.training.checkpoint.CheckpointError`) whose message reads
``<option>: <what is wrong>; <what to do>``.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from snnprune.methods import METHODS, method_kwargs
from snnprune.training.checkpoint import CheckpointError, load_checkpoint
from snnprune.training.cli import (
    PRUNING_OPTIONS,
    ConfigError,
    explicit_options,
    method_options,
    option_name,
    run_name,
)

__all__ = [
    "MODEL_KEYS",
    "PLAN_KEYS",
    "REQUIRED_OPTIONS",
    "RULES",
    "RUN_FILES",
    "Prepared",
    "apply_checkpoint",
    "check_values",
    "prepare",
    "resolve_device",
]

# ----------------------------------------------------------------------------------------------- values


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


#: dest -> (check, what it must be, what to do). ``None`` passes for options whose default is ``None``.
RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "final_threshold": (
        _opt(lambda v: _num(v) and v >= 0),
        "must be a finite number >= 0",
        "pass a threshold D such as 0.1",
    ),
    "target_sparsity": (
        _opt(lambda v: _num(v) and 0 <= v < 1),
        "must be in [0, 1)",
        "pass the fraction of zeros, e.g. 0.9",
    ),
    "beta": (_opt(lambda v: _num(v) and v > 0), "must be a finite number > 0", "e.g. 0.1 (1 is S-LATS)"),
    "prune_start_epoch": (
        lambda v: _int(v) and v >= 0,
        "must be >= 0",
        "pass the first pruning epoch, e.g. 0",
    ),
    "prune_end_epoch": (
        _opt(lambda v: _int(v) and v >= 1),
        "must be >= 1",
        "pass the epoch the sparsity ramp ends",
    ),
    "st3_finetune_epochs": (
        _opt(lambda v: _int(v) and v >= 1),
        "must be >= 1",
        "pass the fixed-mask epochs (the authors: 10), or drop it",
    ),
    "s_init": (_opt(_num), "must be a finite number", "pass the threshold logit, e.g. -5"),
    "l0_coeff": (_opt(lambda v: _num(v) and v >= 0), "must be a finite number >= 0", "e.g. 1.0"),
    "ltp_temperature": (_opt(lambda v: _num(v) and v > 0), "must be a finite number > 0", "e.g. 0.01"),
    "tau_init": (_opt(lambda v: _num(v) and v >= 0), "must be a finite number >= 0", "e.g. 0"),
    "width": (_opt(lambda v: _int(v) and v >= 1), "must be >= 1", "e.g. 64 (the paper's) or 16"),
    "T": (lambda v: _int(v) and v >= 1, "must be >= 1", "pass the number of time steps, e.g. 4"),
    "workers": (lambda v: _int(v) and v >= 0, "must be >= 0", "pass 0 (load in the main process) or more"),
    "limit_train_batches": (_opt(lambda v: _int(v) and v >= 1), "must be >= 1", "drop it to use every batch"),
    "limit_test_batches": (_opt(lambda v: _int(v) and v >= 1), "must be >= 1", "drop it to use every batch"),
    "epochs": (lambda v: _int(v) and v >= 1, "must be >= 1", "pass the number of epochs, e.g. 8"),
    "batch_size": (lambda v: _int(v) and v >= 1, "must be >= 1", "pass a batch size such as 32"),
    "lr": (lambda v: _num(v) and v > 0, "must be a finite number > 0", "pass a learning rate such as 0.1"),
    "momentum": (lambda v: _num(v) and 0 <= v <= 1, "must be in [0, 1]", "e.g. 0.9"),
    "weight_decay": (lambda v: _num(v) and v >= 0, "must be a finite number >= 0", "e.g. 0 or 5e-4"),
    "norm_weight_decay": (_opt(lambda v: _num(v) and v >= 0), "must be a finite number >= 0", "e.g. 0"),
    "lr_step_size": (lambda v: _int(v) and v >= 1, "must be >= 1", "pass the epochs per decay, e.g. 30"),
    "lr_gamma": (lambda v: _num(v) and v > 0, "must be a finite number > 0", "e.g. 0.1"),
    "lr_warmup_epochs": (lambda v: _int(v) and v >= 0, "must be >= 0", "pass 0 for no warm-up"),
    "lr_warmup_decay": (lambda v: _num(v) and 0 < v <= 1, "must be in (0, 1]", "e.g. 0.01"),
    "label_smoothing": (lambda v: _num(v) and 0 <= v < 1, "must be in [0, 1)", "e.g. 0.1"),
    "clip_grad_norm": (
        _opt(lambda v: _num(v) and v > 0),
        "must be a finite number > 0",
        "e.g. 1.0, or drop it",
    ),
    "seed": (lambda v: _int(v) and 0 <= v < 2**32, "must be in [0, 2**32)", "pass a seed such as 2020"),
    "analyze_batches": (lambda v: _int(v) and v >= 0, "must be >= 0", "pass 0 to skip the final analysis"),
    "bn_recalibrate": (
        _opt(lambda v: _int(v) and v >= 0),
        "must be >= 0",
        "pass the number of training batches, or 0 to keep the running statistics of training",
    ),
    "stop_after_epoch": (_opt(lambda v: _int(v) and v >= 0), "must be >= 0", "pass the last epoch to run"),
    "log_every": (lambda v: _int(v) and v >= 0, "must be >= 0", "pass 0 to turn the step lines off"),
    "run_name": (
        _opt(
            lambda v: (
                isinstance(v, str) and v.strip() not in ("", ".", "..") and "/" not in v and os.sep not in v
            )
        ),
        "must be a plain folder name",
        "pass a name without '/'",
    ),
    "prune_exclude": (
        _opt(lambda v: isinstance(v, list) and all(isinstance(p, str) and p for p in v)),
        "must be a list of layer-name globs",
        "e.g. --prune-exclude fc 'conv1*'",
    ),
    "output_dir": (lambda v: isinstance(v, str) and v != "", "must be a folder", "pass --output-dir DIR"),
}

#: Methods and the options they cannot run without.
REQUIRED_OPTIONS: dict[str, tuple[str, ...]] = {
    "lats": ("final_threshold",),
    "slats": ("final_threshold",),
    "pgh": ("final_threshold", "beta"),
    "stds": ("final_threshold",),
    "st3": ("target_sparsity",),
    "st3sigma": ("target_sparsity",),
    "gmp": ("target_sparsity",),
}
_WHAT = {
    "final_threshold": "the final threshold D, e.g. 0.1",
    "target_sparsity": "the fraction of zeros P, e.g. 0.9",
    "beta": "the PGH decay, e.g. 0.1",
}

#: Settings that define the model and its pruning: ``--resume`` and ``--test-only`` take them from the
#: checkpoint; an explicit flag that contradicts it is an error.
MODEL_KEYS: tuple[str, ...] = (
    "model",
    "width",
    "stem",
    "T",
    "neuron",
    "surrogate",
    "cnf",
    "dataset",
    "method",
    *PRUNING_OPTIONS,
    "prune_start_epoch",
    "prune_exclude",
)
#: The training plan: ``--resume`` (not ``--test-only``) takes it from the checkpoint too, so every
#: schedule (lr, threshold, sparsity) continues as planned.
PLAN_KEYS: tuple[str, ...] = (
    "epochs",
    "batch_size",
    "opt",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "norm_weight_decay",
    "lr_scheduler",
    "lr_step_size",
    "lr_gamma",
    "lr_warmup_epochs",
    "lr_warmup_decay",
    "lr_warmup_shape",
    "lr_step_per_iter",
    "label_smoothing",
    "clip_grad_norm",
    "limit_train_batches",
    "seed",
)

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


def check_values(args: argparse.Namespace) -> None:
    """Check each option's own value (:data:`RULES`).

    Args:
        args: parsed arguments.

    Raises:
        ConfigError: the first invalid value, as ``--option: must be ..., got X; <fix>``.
    """
    for dest, (ok, what, fix) in RULES.items():
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if not ok(value):
            raise ConfigError(f"{option_name(dest)}: {what}, got {value!r}; {fix}")


# ----------------------------------------------------------------------------------------------- device
def resolve_device(spec: str | None, amp: str = "none") -> torch.device:
    """The training device for ``--device`` (None: CUDA when available), checked against ``--amp``.

    Under ``torchrun`` a bare ``cuda`` becomes ``cuda:LOCAL_RANK``.

    Args:
        spec: ``cpu``, ``cuda``, ``cuda:N`` or None.
        amp: ``none``, ``fp16`` or ``bf16``.

    Returns:
        The device.

    Raises:
        ConfigError: unknown device, CUDA not available, no such GPU, or fp16 autocast on a CPU.
    """
    if spec is None:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(spec)
        except (RuntimeError, ValueError):
            raise ConfigError(f"--device: unknown device {spec!r}; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
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


# ----------------------------------------------------------------------------------------------- checkpoint
def checkpoint_kind(state: dict[str, Any]) -> str | None:
    """``"snn"``/``"ann"`` of a training checkpoint (stored, or inferred from its arguments).

    Args:
        state: a checkpoint dict.

    Returns:
        The kind, or None for a checkpoint that records neither.
    """
    if state.get("kind") in ("snn", "ann"):
        return state["kind"]
    saved = state.get("args")
    if isinstance(saved, dict):
        return "snn" if "T" in saved else "ann"
    return None


def apply_checkpoint(
    args: argparse.Namespace, state: dict[str, Any], path: Path, *, kind: str, explicit: frozenset[str]
) -> None:
    """Take the model, pruning and (unless ``--test-only``) the training plan from the checkpoint.

    Args:
        args: parsed arguments (updated in place).
        state: the checkpoint dict.
        path: its file (for messages).
        kind: ``"snn"``/``"ann"`` of the script.
        explicit: options given on the command line or in ``--config``.

    Raises:
        CheckpointError: a checkpoint of the other kind.
        ConfigError: an explicit option that contradicts the checkpoint (its message names both values).
    """
    ck_kind = checkpoint_kind(state)
    if ck_kind is not None and ck_kind != kind:
        script = "train_sew.py" if ck_kind == "snn" else "train_ann.py"
        raise CheckpointError(
            f"--resume: {str(path)!r} is a checkpoint of an {ck_kind.upper()} run; use scripts/{script} for it"
        )
    saved = state.get("args")
    if not isinstance(saved, dict):
        return  # an old checkpoint without its arguments: the model load checks the shapes
    keys = MODEL_KEYS if args.test_only else MODEL_KEYS + PLAN_KEYS
    for key in keys:
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
def check_combination(
    args: argparse.Namespace, explicit: frozenset[str], model_kwargs: Callable[[str], Any] | None = None
) -> None:
    """Cross-option rules (pruning window, method options, optimizer/scheduler options).

    Args:
        args: parsed (and checkpoint-merged) arguments.
        explicit: options given on the command line or in ``--config``.
        model_kwargs: ``model name -> accepted keyword arguments`` (the ``models`` registry), or None.

    Raises:
        ConfigError: the first violated rule.
    """
    e = args.epochs
    if args.prune_start_epoch >= e:
        raise ConfigError(
            f"--prune-start-epoch: must be < --epochs ({e}), got {args.prune_start_epoch}; "
            "start pruning in an epoch of the run"
        )
    if args.prune_end_epoch is not None and not args.prune_start_epoch < args.prune_end_epoch <= e:
        raise ConfigError(
            f"--prune-end-epoch: must be in (--prune-start-epoch={args.prune_start_epoch}, --epochs={e}], "
            f"got {args.prune_end_epoch}; end the ramp inside the run"
        )
    ft = getattr(args, "st3_finetune_epochs", None)
    if ft is not None:
        last = e if args.prune_end_epoch is None else args.prune_end_epoch
        if not (ft < e - args.prune_start_epoch and last <= e - ft):
            raise ConfigError(
                f"--st3-finetune-epochs: {ft} fixed-mask epochs leave no room for the sparsity ramp "
                f"(--prune-start-epoch={args.prune_start_epoch} to --prune-end-epoch={last}) in --epochs={e}; "
                "use fewer fine-tuning epochs or end the ramp earlier (--prune-end-epoch)"
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
    if args.method not in METHODS:  # only reachable through a namespace built without the parser
        raise ConfigError(f"--method: unknown method {args.method!r}; choose one of {', '.join(METHODS)}")
    taken = method_kwargs(args.method)
    for dest, keyword in PRUNING_OPTIONS.items():
        if dest in explicit and getattr(args, dest, None) is not None and keyword not in taken:
            opts = method_options(args.method)
            takes = f"it takes {', '.join(opts)}" if opts else "it takes no pruning option"
            raise ConfigError(
                f"{option_name(dest)}: not an option of --method {args.method} ({takes}); "
                f"drop {option_name(dest)} or choose a method that takes it"
            )
    for dest in REQUIRED_OPTIONS.get(args.method, ()):
        if getattr(args, dest, None) is None:
            raise ConfigError(
                f"{option_name(dest)}: --method {args.method} needs it ({_WHAT[dest]}); pass "
                f"{option_name(dest)} or add '{dest}: <value>' to the config file"
            )
    if args.opt == "adam":
        for dest in ("momentum", "nesterov"):
            if dest in explicit and (dest == "momentum" or args.nesterov):
                raise ConfigError(
                    f"{option_name(dest)}: not an option of --opt adam (SGD only); drop it or use --opt sgd"
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
    if getattr(args, "neuron_backend", "spikingjelly") == "cupy" and str(args.device or "").startswith("cpu"):
        raise ConfigError(
            "--neuron-backend: cupy needs a CUDA device; use --neuron-backend spikingjelly or auto"
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
        for dest in ("width", "stem"):
            if dest in explicit and getattr(args, dest) is not None and dest not in accepted:
                raise ConfigError(
                    f"{option_name(dest)}: not an option of --model {args.model} (it takes "
                    f"{', '.join(sorted(accepted - {'num_classes', 'in_channels'}))}); drop {option_name(dest)}"
                )


# ----------------------------------------------------------------------------------------------- run folder
def holds_run(folder: Path) -> list[str]:
    """Run files present in ``folder`` (:data:`RUN_FILES`; empty when it holds no run).

    Args:
        folder: a run folder.

    Returns:
        Their names.
    """
    return [f for f in RUN_FILES if (folder / f).exists()] + (["tb/"] if (folder / "tb").is_dir() else [])


def check_output(run_dir: Path) -> None:
    """The run folder can be created and written.

    Args:
        run_dir: ``output_dir / run_name``.

    Raises:
        ConfigError: a file in the way, or a folder without write permission.
    """
    out = run_dir.parent
    for p, opt in ((out, "--output-dir"), (run_dir, "--run-name")):
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
    """A new run never starts into a folder that holds one (unless ``--overwrite``).

    Args:
        run_dir: the run folder.
        args: parsed arguments (``resume``, ``overwrite``, ``test_only``).
        resume_path: the checkpoint being resumed (None: a new run).

    Raises:
        ConfigError: the folder holds a run and this is neither its resume nor an ``--overwrite``.
    """
    if args.test_only or args.overwrite:
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
    """What :func:`prepare` resolved.

    Attributes:
        device: the training device.
        run_dir: ``output_dir / run_name``.
        resume_path: the checkpoint to resume/evaluate (None: a new run).
        checkpoint: its contents (None: a new run).
    """

    device: torch.device
    run_dir: Path
    resume_path: Path | None
    checkpoint: dict[str, Any] | None


def prepare(
    args: argparse.Namespace, kind: str, model_kwargs: Callable[[str], Any] | None = None
) -> Prepared:
    """Validate the whole configuration and resolve device, run folder and checkpoint (no data, no model).

    Args:
        args: parsed arguments (updated in place: ``run_name`` and the checkpoint's settings).
        kind: ``"snn"``/``"ann"`` of the script.
        model_kwargs: ``model name -> accepted keyword arguments`` (the ``models`` registry), or None.

    Returns:
        The resolved :class:`Prepared`.

    Raises:
        ConfigError, CheckpointError: the first invalid input, as one line with its fix.
    """
    explicit = explicit_options(args)
    check_values(args)
    resume_path: Path | None = None
    state = None
    if args.resume and args.resume != "auto":
        resume_path = Path(args.resume)
        state = load_checkpoint(resume_path)
        apply_checkpoint(args, state, resume_path, kind=kind, explicit=explicit)
    args.run_name = args.run_name or run_name(args)
    run_dir = Path(args.output_dir).expanduser() / args.run_name
    if args.resume == "auto":
        candidate = run_dir / "checkpoint.pth"
        if candidate.is_file():
            resume_path = candidate
            state = load_checkpoint(candidate)
            apply_checkpoint(args, state, candidate, kind=kind, explicit=explicit)
        elif args.test_only:
            raise ConfigError(
                f"--resume: no checkpoint.pth in {str(run_dir)!r} to evaluate; pass --resume PATH"
            )
    check_values(args)  # the checkpoint's values too
    check_combination(args, explicit, model_kwargs)
    device = resolve_device(args.device, args.amp)
    if not args.test_only and int(os.environ.get("RANK", "0")) == 0:  # the writer; torchrun stops the others
        check_output(run_dir)
        check_run_folder(run_dir, args, resume_path)
    if state is not None and not args.test_only:
        done = int(state["epoch"])
        if args.stop_after_epoch is not None and args.stop_after_epoch < done + 1 and done + 1 < args.epochs:
            raise ConfigError(
                f"--stop-after-epoch: the checkpoint has already finished epoch {done}; pass a later epoch "
                "or drop --stop-after-epoch"
            )
    # Pruning options the method does not take were only defaults: record them as unset.
    if args.method in METHODS:
        taken = method_kwargs(args.method)
        for dest, keyword in PRUNING_OPTIONS.items():
            if keyword not in taken and hasattr(args, dest) and dest != "prune_end_epoch":
                setattr(args, dest, None)
    return Prepared(device=device, run_dir=run_dir, resume_path=resume_path, checkpoint=state)
