"""Command-line interface shared by the training scripts: :func:`get_args_parser`, :func:`parse_args`, adapters.

Configuration flows one way: parser defaults (the script's) -> YAML file (``--config``, a whole recipe that
replaces the script's defaults) -> command line -> ``args``. The YAML values go through the same typed
parser as the command line (each key becomes ``--key=value``), so types, choices and booleans are checked
once, the same way. :func:`parse_args` never changes its parser (a second parse starts from the same
defaults) and records which options were given explicitly (:func:`explicit_options`), which the
validation (:mod:`snnprune.training.validation`) and the resume rules need. :func:`pruner_kwargs` turns
``args`` into the keyword arguments of :func:`snnprune.sparsify` through one table,
:data:`PRUNING_OPTIONS`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snnprune.methods import METHODS, method_kwargs
from snnprune.training.data import DATASETS

__all__ = [
    "PRUNING_OPTIONS",
    "RUN_METADATA_KEYS",
    "ConfigError",
    "explicit_options",
    "get_args_parser",
    "load_config",
    "parse_args",
    "pruner_kwargs",
    "run_name",
]


#: The default run of both training scripts on the embedded MNIST subset: a width-16 small-stem ResNet-18
#: (SEW for train_sew.py with T = 2, the ReLU twin for train_ann.py), 8 epochs of SGD 0.1 with a cosine
#: schedule, LATS to D = 0.1 (>= 80 % sparsity in about 3 minutes on 2 CPU cores; see README).
EMBEDDED_DEFAULTS: dict[str, Any] = {
    "stem": "small",
    "width": 16,
    "epochs": 8,
    "batch_size": 64,
    "opt": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "lr_scheduler": "cosine",
    "final_threshold": 0.1,
    "target_sparsity": 0.9,
    "beta": 0.1,
}

#: Pruning options: CLI dest -> the :func:`snnprune.sparsify` keyword it feeds. An option is valid for the
#: methods whose signature takes that keyword (:func:`snnprune.methods.method_kwargs`); giving it to
#: another method is an error naming the options that method takes. A new method option is one row here
#: (plus its ``add_argument``); ``prune_end_epoch`` is converted from epochs to steps.
PRUNING_OPTIONS: dict[str, str] = {
    "final_threshold": "final_threshold",
    "target_sparsity": "target_sparsity",
    "beta": "beta",
    "stds_shape": "shape",
    "lats_schedule": "schedule",
    "prune_end_epoch": "end_step",
    "st3_finetune_epochs": "finetune_steps",
    "s_init": "s_init",
    "l0_coeff": "l0_coeff",
    "ltp_temperature": "temperature",
    "tau_init": "tau_init",
    "granularity": "granularity",
    "filter_scale": "filter_scale",
}

#: Keys of a run's ``config.json`` that describe the run rather than set an option: accepted (and ignored)
#: when that file is given back as ``--config``; ``kind`` must match the script.
RUN_METADATA_KEYS = ("kind", "steps_per_epoch", "world_size", "config", "model_builder")

_EXPLICIT = "_explicit_options"  # attribute of the parsed namespace (never written to config.json)


class ConfigError(ValueError):
    """An invalid option value or combination, or a ``--config`` file that is missing or malformed.

    The message has the form ``<option>: <what is wrong>; <what to do>``; the scripts print it as
    ``error: <message>`` and exit with code 2.
    """


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's effective default (the script's own, e.g. ``epochs 8`` for the default run)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class TrainingParser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors raise :class:`ConfigError` (one line, no usage dump) instead of
    printing usage and exiting, so the scripts report every bad input the same way."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(_argparse_message(message))


def _argparse_message(message: str) -> str:
    """``argument --epochs: invalid int value: '2.5'`` -> ``--epochs: invalid int value '2.5'; <fix>``."""
    m = re.match(r"argument ([^:]+): (.*)", message, re.S)
    if m is None:
        return f"{message}; see --help for the options"
    opt = m.group(1).split("/")[0]
    what = m.group(2)
    if "invalid int value" in what:
        fix = "give a whole number"
    elif "invalid float value" in what:
        fix = "give a number"
    elif "invalid choice" in what:
        fix = "pick one of the listed values"
    elif "expected" in what:
        fix = "give a value after the option"
    else:
        fix = "see --help"
    return f"{opt}: {what}; {fix}"


def get_args_parser(
    *,
    add_help: bool = True,
    snn: bool = True,
    defaults: dict[str, Any] | None = None,
    model_choices: Sequence[str] | None = None,
) -> argparse.ArgumentParser:
    """The training parser (returned, not parsed, so scripts can extend it).

    Args:
        add_help: add ``-h/--help``.
        snn: add the SNN-only options (``--T``, ``--neuron``, ``--surrogate``, ``--cnf``).
        defaults: script-specific defaults (applied with ``set_defaults`` and shown by ``--help``; a YAML
            ``--config`` replaces them and the command line overrides both).
        model_choices: the names ``--model`` accepts (the scripts pass their part of the ``models``
            registry; None: any name, checked when the model is built).

    Returns:
        The parser (a :class:`TrainingParser`: errors raise :class:`ConfigError`).
    """
    p = TrainingParser(
        description="snnprune training (one engine for SNN and ANN)",
        add_help=add_help,
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="YAML recipe (or a run's config.json); CLI flags override it",
    )
    flag = argparse.BooleanOptionalAction

    g = p.add_argument_group("pruning")
    g.add_argument(
        "--method",
        default="lats",
        choices=METHODS,  # the live registry: a method registered before parsing is accepted and listed
        metavar="NAME",
        help=f"pruning method, any registered name: {', '.join(METHODS)}",
    )
    g.add_argument(
        "--final-threshold", type=float, default=None, metavar="D", help="final threshold D (>= 0, finite)"
    )
    g.add_argument(
        "--target-sparsity", type=float, default=None, metavar="P", help="st3/st3sigma/gmp, in [0, 1)"
    )
    g.add_argument("--beta", type=float, default=None, help="PGH decay beta (>0; 1 = S-LATS)")
    g.add_argument("--stds-shape", choices=("sine", "linear"), default="sine", help="STDS schedule shape")
    g.add_argument("--lats-schedule", choices=("lr", "closed_form"), default="lr", help="LATS schedule")
    g.add_argument(
        "--prune-start-epoch", type=int, default=0, metavar="E", help="start of the pruning window"
    )
    g.add_argument(
        "--prune-end-epoch",
        type=int,
        default=None,
        metavar="E",
        help="st3/st3sigma/gmp: epoch at which the sparsity ramp ends (default: the end of training); "
        "the remaining epochs fine-tune with the final sparsity",
    )
    g.add_argument("--prune-exclude", nargs="*", default=None, metavar="GLOB", help="layers kept dense")
    g.add_argument(
        "--st3-finetune-epochs",
        type=int,
        default=None,
        metavar="E",
        help="st3/st3sigma: the last E epochs fine-tune with the mask fixed (the authors' n_ft_epochs, 10)",
    )
    g.add_argument("--s-init", type=float, default=None, help="str: initial threshold logit s (e.g. -5)")
    g.add_argument("--l0-coeff", type=float, default=None, help="ltp: weight of the normalized soft-L0 term")
    g.add_argument(
        "--ltp-temperature",
        type=float,
        default=None,
        help="ltp: temperature relative to each layer's Var(theta)",
    )
    g.add_argument("--tau-init", type=float, default=None, help="ltp: initial threshold tau on theta^2")
    g.add_argument(
        "--granularity",
        choices=("weight", "filter"),
        default=None,
        help="lats/slats/pgh/stds: filter = channels",
    )
    g.add_argument(
        "--filter-scale",
        choices=("size", "layer"),
        default=None,
        help="filter granularity: a channel goes when its RMS <= D (size) or <= D x its layer's RMS (layer)",
    )

    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default="sew_resnet18" if snn else "ann_resnet18",
        choices=tuple(model_choices) if model_choices is not None else None,
        help="models.create_model name",
    )
    g.add_argument("--width", type=int, default=None, help="base width (64 = the paper's)")
    g.add_argument("--stem", choices=("imagenet", "small"), default=None, help="imagenet or small-image stem")
    if snn:
        g.add_argument("--T", type=int, default=4, help="time steps (also frames_number of DVS datasets)")
        g.add_argument("--neuron", choices=("if", "lif", "plif"), default="if", help="spiking neuron")
        g.add_argument("--surrogate", choices=("atan", "sigmoid"), default="atan", help="surrogate gradient")
        g.add_argument("--cnf", choices=("ADD", "AND", "IAND"), default="ADD", help="SEW connect function")
        g.add_argument(
            "--neuron-backend",
            choices=("spikingjelly", "cupy", "auto"),
            default="spikingjelly",
            help="neuron kernels",
        )

    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default="embedded_mnist",
        choices=DATASETS,
        help="embedded_mnist is offline; the others read --data-path",
    )
    g.add_argument("--data-path", default=None, metavar="DIR", help="dataset root")
    g.add_argument("--download", action=flag, default=False, help="allow torchvision to download the dataset")
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument(
        "--limit-train-batches", type=int, default=None, metavar="N", help="train on N batches/epoch"
    )
    g.add_argument("--limit-test-batches", type=int, default=None, metavar="N", help="test on N batches")

    g = p.add_argument_group("optimization")
    g.add_argument(
        "--epochs", type=int, default=90, help="epochs of the run (every schedule is planned on it)"
    )
    g.add_argument("--batch-size", type=int, default=32, help="per process")
    g.add_argument("--opt", choices=("sgd", "adam"), default="sgd", help="optimizer")
    g.add_argument("--lr", type=float, default=0.1, help="learning rate")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--nesterov", action=flag, default=False, help="SGD Nesterov momentum")
    g.add_argument("--weight-decay", type=float, default=0.0, help="applied to theta (as the papers)")
    g.add_argument("--norm-weight-decay", type=float, default=None, help="weight decay of BN (default: same)")
    g.add_argument(
        "--lr-scheduler", choices=("cosine", "step", "constant"), default="cosine", help="lr schedule"
    )
    g.add_argument("--lr-step-size", type=int, default=30, help="step scheduler: epochs per decay")
    g.add_argument("--lr-gamma", type=float, default=0.1, help="step scheduler: decay factor")
    g.add_argument("--lr-warmup-epochs", type=int, default=0, help="linear warm-up epochs")
    g.add_argument("--lr-warmup-decay", type=float, default=0.01, help="warm-up start factor")
    g.add_argument(
        "--lr-warmup-shape",
        choices=("linear", "str"),
        default="linear",
        help="linear: from --lr-warmup-decay to 1, full lr in the first step after the warm-up "
        "(torchvision); str: lr*(i+1)/W for warm-up step i of W, full lr in the last warm-up step "
        "(the STR and LATS code; 0.2, 0.4, ..., 1.0 for 5 epochs; ignores --lr-warmup-decay)",
    )
    g.add_argument(
        "--lr-step-per-iter", action=flag, default=False, help="step the lr scheduler every iteration"
    )
    g.add_argument("--label-smoothing", type=float, default=0.0, help="in [0, 1)")
    g.add_argument("--clip-grad-norm", type=float, default=None, help="max gradient norm (> 0)")

    g = p.add_argument_group("runtime")
    g.add_argument(
        "--amp", choices=("none", "fp16", "bf16"), default="none", help="autocast (fp16 needs CUDA)"
    )
    g.add_argument("--channels-last", action=flag, default=False, help="channels-last memory format")
    g.add_argument("--seed", type=int, default=2020, help="in [0, 2**32)")
    g.add_argument("--deterministic", action=flag, default=False, help="torch.use_deterministic_algorithms")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    g.add_argument("--sync-bn", action=flag, default=False, help="SyncBatchNorm under DDP")
    g.add_argument(
        "--analyze-batches", type=int, default=4, help="test batches for the final snnprune.analyze"
    )
    g.add_argument(
        "--bn-recalibrate",
        type=int,
        default=None,
        metavar="N",
        help="re-estimate BN statistics on N training batches before every evaluation "
        "(default: 20 with --granularity filter, else 0 = off)",
    )

    g = p.add_argument_group("output")
    g.add_argument("--output-dir", default="./runs", metavar="DIR", help="parent folder of the run folders")
    g.add_argument("--run-name", default=None, help="default: <model>_<method>[_D<d>|_P<p>]")
    g.add_argument(
        "--resume",
        default=None,
        metavar="PATH|auto",
        help="checkpoint to continue from (auto: the run folder's checkpoint.pth, if any); the model, "
        "pruning and training plan come from the checkpoint",
    )
    g.add_argument(
        "--overwrite", action=flag, default=False, help="replace a run folder that already holds a run"
    )
    g.add_argument(
        "--stop-after-epoch",
        type=int,
        default=None,
        metavar="K",
        help="stop after epoch K (checkpoint written; continue with --resume auto)",
    )
    g.add_argument(
        "--test-only", action=flag, default=False, help="evaluate the --resume checkpoint and exit"
    )
    g.add_argument("--export", action=flag, default=False, help="write the finalized sparse model_sparse.pth")
    g.add_argument("--quiet", action=flag, default=False, help="no progress bar and no per-epoch lines")
    g.add_argument(
        "--log-every",
        type=int,
        default=50,
        metavar="N",
        help="when stdout is not a terminal (SLURM, nohup): a plain progress line every N steps (0: off)",
    )
    # The script's defaults describe its default run (e.g. EMBEDDED_DEFAULTS); a --config recipe replaces
    # them (parse_args starts from these generic values), so a recipe never inherits the small-image stem.
    p.generic_defaults = {a.dest: a.default for a in p._actions if a.dest != "help"}
    if defaults:
        p.set_defaults(**defaults)
    return p


def _dests(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in ("help", argparse.SUPPRESS)}


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (
        "true",
        "yes",
        "on",
        "1",
        "false",
        "no",
        "off",
        "0",
    ):
        return value.strip().lower() in ("true", "yes", "on", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


def _config_tokens(
    key: str, value: Any, action: argparse.Action, where: str, default: Any
) -> list[str] | None:
    """One YAML ``key: value`` as command-line tokens for the same parser (None: set the option to None)."""
    opt = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        b = _as_bool(value)
        if b is None:
            raise ConfigError(
                f"{key} ({where}): expected true or false, got {value!r}; write {key}: true or false"
            )
        return [opt if b else "--no-" + opt[2:]]
    if value is None:
        if default is None:
            return None
        raise ConfigError(
            f"{key} ({where}): must not be null; give a value or delete the line (default {default!r})"
        )
    if isinstance(value, dict):
        raise ConfigError(f"{key} ({where}): expected a value, got a mapping; write {key}: <value>")
    if action.nargs == "*":
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, list | dict) for v in items):
            raise ConfigError(
                f"{key} ({where}): expected a list of names, got {value!r}; write {key}: [a, b]"
            )
        return [opt, *[str(v) for v in items]]
    if isinstance(value, list):
        raise ConfigError(f"{key} ({where}): expected one value, got a list {value!r}; write {key}: <value>")
    if isinstance(value, bool):
        raise ConfigError(f"{key} ({where}): expected a value, got the boolean {value}; write {key}: <value>")
    return [f"{opt}={value}"]


def load_config(path: str | Path, parser: argparse.ArgumentParser, kind: str | None = None) -> dict[str, Any]:
    """Read a YAML config (or a run's ``config.json``); see :func:`_read_config`.

    Args:
        path: YAML/JSON file with a flat mapping of option -> value.
        parser: the parser whose options the keys must name.
        kind: ``"snn"``/``"ann"``: a run ``config.json`` (key ``kind``) of the other kind is refused.

    Returns:
        ``{dest: value}`` (already converted).

    Raises:
        ConfigError: missing file, invalid YAML, not a mapping, unknown keys, or a bad value.
    """
    return _read_config(path, parser, kind)[0]


def _read_config(
    path: str | Path, parser: argparse.ArgumentParser, kind: str | None = None
) -> tuple[dict[str, Any], bool]:
    """Read a YAML config (or a run's ``config.json``) and parse its values with ``parser``'s types.

    Keys may be written ``final-threshold`` or ``final_threshold``. Each value goes through the parser as
    ``--key=value`` (booleans as ``--flag``/``--no-flag``; YAML strings ``"true"``/``"false"`` are
    booleans), so a wrong type or choice is reported like the same mistake on the command line.

    Args:
        path: YAML/JSON file with a flat mapping of option -> value.
        parser: the parser whose options the keys must name.
        kind: ``"snn"``/``"ann"``: a run ``config.json`` (key ``kind``) of the other kind is refused.

    Returns:
        ``({dest: value}, is_run_config)``: the values (already converted), and whether the file is a run's
        ``config.json`` (it has the key ``kind``: every option written out, defaults included).

    Raises:
        ConfigError: missing file, invalid YAML, not a mapping, unknown keys, or a bad value.
    """
    path = Path(path)
    where = f"--config {path}"
    if path.is_dir() or not path.exists():
        raise ConfigError(f"--config: file {str(path)!r} does not exist; pass a YAML recipe file")
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--config: {str(path)!r} is not valid YAML ({first}); fix the file") from None
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {str(path)!r} ({exc.strerror}); check the path") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config: {str(path)!r} must be a mapping of option: value; write one 'key: value' a line"
        )
    actions = _dests(parser)
    raw = {str(k).replace("-", "_"): v for k, v in data.items()}
    if kind is not None and raw.get("kind") not in (None, kind):
        script = "train_sew.py" if raw["kind"] == "snn" else "train_ann.py"
        raise ConfigError(
            f"--config: {str(path)!r} is the config of an {str(raw['kind']).upper()} run; use scripts/{script} for it"
        )
    is_run_config = "kind" in raw
    for key in RUN_METADATA_KEYS:
        raw.pop(key, None)
    unknown = sorted(set(raw) - set(actions))
    if unknown:
        raise ConfigError(
            f"--config: {str(path)!r} has unknown keys {unknown}; valid keys are the CLI options "
            f"(e.g. {', '.join(sorted(actions)[:6])}, ...; see --help)"
        )
    out: dict[str, Any] = {}
    generic = getattr(parser, "generic_defaults", {})
    for key, value in raw.items():
        action = actions[key]
        tokens = _config_tokens(key, value, action, where, generic.get(key, action.default))
        if tokens is None:
            out[key] = None
            continue
        try:
            parsed = _given(parser, tokens)
        except ConfigError as exc:
            raise ConfigError(f"{key} ({where}): {str(exc).split(': ', 1)[-1]}") from None
        out[key] = parsed[key]
    return out, is_run_config


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def _given(parser: argparse.ArgumentParser, tokens: list[str]) -> dict[str, Any]:
    """Values of the options present in ``tokens`` (parsed and converted; defaults left out)."""
    ns = argparse.Namespace(**dict.fromkeys(_dests(parser), _UNSET))
    parser.parse_args(tokens, namespace=ns)
    return {k: v for k, v in vars(ns).items() if v is not _UNSET}


def parse_args(
    parser: argparse.ArgumentParser, argv: list[str] | None = None, *, kind: str | None = None
) -> argparse.Namespace:
    """Parse ``argv`` with ``--config`` YAML values as defaults (command line wins); the parser is unchanged.

    A ``--config`` file is a whole recipe: the script's own defaults (the embedded-dataset default run) do
    not apply under it, so keys the file omits take the generic parser defaults (e.g. ``stem``/``width``
    ``None`` = the model's own ImageNet stem and width), never the default run's small stem. Only the
    syntax and types are checked here; :func:`snnprune.training.validation.validate` checks the values.

    Args:
        parser: from :func:`get_args_parser`.
        argv: arguments (None: ``sys.argv[1:]``).
        kind: ``"snn"``/``"ann"`` of the script (a run ``config.json`` of the other kind is refused).

    Returns:
        The parsed namespace; :func:`explicit_options` tells which options were set by the command line
        or the config file.

    Raises:
        ConfigError: an unknown option, a wrong type or choice, or a bad ``--config`` file.
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    cli = _given(parser, argv)
    actions = _dests(parser)
    values = {k: a.default for k, a in actions.items()}
    explicit = set(cli)
    config_path = cli.get("config")
    if config_path:
        generic = getattr(parser, "generic_defaults", {})
        values.update({k: v for k, v in generic.items() if k in values})
        from_file, is_run_config = _read_config(config_path, parser, kind=kind)
        values.update(from_file)
        # A recipe's keys are choices; a run's config.json lists every option, so there only the values
        # that differ from the defaults count as chosen.
        explicit |= {
            k for k, v in from_file.items() if not is_run_config or v != generic.get(k, actions[k].default)
        }
    values.update(cli)
    args = argparse.Namespace(**values)
    setattr(args, _EXPLICIT, frozenset(explicit))
    return args


def explicit_options(args: argparse.Namespace) -> frozenset[str]:
    """Options (dests) set on the command line or by the ``--config`` file (not left at a default).

    Args:
        args: from :func:`parse_args` (a namespace from ``parser.parse_args`` has none recorded: empty).

    Returns:
        The set of dests.
    """
    return getattr(args, _EXPLICIT, frozenset())


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """``vars(args)`` without the parser's bookkeeping (what config.json and checkpoints store).

    Args:
        args: parsed arguments.

    Returns:
        ``{dest: value}``.
    """
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}


def option_name(dest: str) -> str:
    """``final_threshold`` -> ``--final-threshold`` (``T`` -> ``--T``).

    Args:
        dest: an argparse dest.

    Returns:
        The command-line spelling.
    """
    return "--" + dest.replace("_", "-")


def method_options(method: str) -> list[str]:
    """The pruning options (:data:`PRUNING_OPTIONS`) that ``method`` takes, as ``--flags``.

    Args:
        method: one of :data:`snnprune.METHODS`.

    Returns:
        Sorted option names.
    """
    taken = method_kwargs(method)
    return sorted(option_name(d) for d, kw in PRUNING_OPTIONS.items() if kw in taken)


def pruner_kwargs(args: argparse.Namespace, steps_per_epoch: int) -> dict[str, Any]:
    """Map CLI options to :func:`snnprune.sparsify` keyword arguments for ``args.method``.

    ``total_steps = epochs * steps_per_epoch``, ``start_step = prune_start_epoch * steps_per_epoch`` and,
    for the target-sparsity methods, ``end_step = prune_end_epoch * steps_per_epoch`` (when given). Every
    other option of :data:`PRUNING_OPTIONS` is passed when the method takes its keyword and it is set.

    Args:
        args: parsed arguments.
        steps_per_epoch: optimizer steps per epoch.

    Returns:
        The method's keyword arguments.

    Raises:
        ValueError: unknown method or a pruning window outside the run.
    """
    if args.method not in METHODS:
        raise ValueError(f"unknown --method {args.method!r}; choose one of {', '.join(METHODS)}")
    total = args.epochs * steps_per_epoch
    start = args.prune_start_epoch * steps_per_epoch
    if not 0 <= args.prune_start_epoch < args.epochs:
        raise ValueError(
            f"--prune-start-epoch must be in [0, --epochs={args.epochs}), got {args.prune_start_epoch}"
        )
    values = {PRUNING_OPTIONS[d]: getattr(args, d, None) for d in PRUNING_OPTIONS}
    if values.get("end_step") is not None:
        if not args.prune_start_epoch < args.prune_end_epoch <= args.epochs:
            raise ValueError(
                f"--prune-end-epoch must be in (--prune-start-epoch={args.prune_start_epoch}, "
                f"--epochs={args.epochs}], got {args.prune_end_epoch}"
            )
        values["end_step"] = args.prune_end_epoch * steps_per_epoch
    if values.get("finetune_steps") is not None:  # epochs -> steps (st3/st3sigma fixed-mask phase)
        values["finetune_steps"] = args.st3_finetune_epochs * steps_per_epoch
    if args.lats_schedule == "closed_form":  # the closed form's epoch length B, not how the lr is stepped
        values["epoch_length"] = steps_per_epoch
    kw: dict[str, Any] = {"total_steps": total, "start_step": start}
    accepted = method_kwargs(args.method)  # each option goes to the methods whose signature takes it
    kw.update({k: v for k, v in values.items() if k in accepted and v is not None})
    if args.prune_exclude:
        kw["exclude"] = list(args.prune_exclude)
    return kw


def run_name(args: argparse.Namespace) -> str:
    """Default run folder name: ``<model>_<method>`` plus ``_D<d>`` / ``_P<p>`` / ``_b<beta>`` when set."""
    name = f"{args.model}_{args.method}"
    keys = method_kwargs(args.method) if args.method in METHODS else frozenset()
    if "final_threshold" in keys and args.final_threshold is not None:
        name += f"_D{args.final_threshold:g}"
    if "target_sparsity" in keys and args.target_sparsity is not None:
        name += f"_P{args.target_sparsity:g}"
    if "beta" in keys and args.beta is not None:
        name += f"_b{args.beta:g}"
    if getattr(args, "granularity", None) == "filter":
        name += f"_{args.granularity}" + ("_rel" if getattr(args, "filter_scale", "size") == "layer" else "")
    return name
