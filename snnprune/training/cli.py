"""Command-line interface shared by the training scripts: :func:`get_args_parser` and adapters.

Configuration flows one way: YAML file (``--config``) -> parser defaults -> command line -> ``args``;
:func:`pruner_kwargs` turns ``args`` into the keyword arguments of :func:`snnprune.sparsify` before
anything from the library is called.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from snnprune.methods import METHODS, method_kwargs

__all__ = ["ConfigError", "get_args_parser", "load_config", "parse_args", "pruner_kwargs", "run_name"]


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


class ConfigError(ValueError):
    """A ``--config`` YAML file is missing, malformed, or has keys that are not CLI options."""


def get_args_parser(
    *, add_help: bool = True, snn: bool = True, defaults: dict[str, Any] | None = None
) -> argparse.ArgumentParser:
    """The training parser (returned, not parsed, so scripts can extend it).

    Args:
        add_help: add ``-h/--help``.
        snn: add the SNN-only options (``--T``, ``--neuron``, ``--surrogate``, ``--cnf``).
        defaults: script-specific defaults (applied with ``set_defaults``; a YAML ``--config`` overrides
            them and the command line overrides both).

    Returns:
        The parser.
    """
    p = argparse.ArgumentParser(
        description="snnprune training (one engine for SNN and ANN)", add_help=add_help
    )
    p.add_argument(
        "--config", default=None, metavar="FILE", help="YAML file of defaults; CLI flags override it"
    )

    g = p.add_argument_group("pruning")
    g.add_argument(
        "--method",
        default="lats",
        choices=METHODS,  # the live registry: a method registered before parsing is accepted and listed
        metavar="NAME",
        help=f"pruning method, any registered name: {', '.join(METHODS)}",
    )
    g.add_argument("--final-threshold", type=float, default=None, metavar="D", help="final threshold D")
    g.add_argument(
        "--target-sparsity", type=float, default=None, metavar="P", help="st3/st3sigma/gmp, in (0,1)"
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
        default=0,
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
        default="weight",
        help="lats/slats/pgh/stds: filter = channels",
    )
    g.add_argument(
        "--filter-scale",
        choices=("size", "layer"),
        default="size",
        help="filter granularity: a channel goes when its RMS <= D (size) or <= D x its layer's RMS (layer)",
    )

    g = p.add_argument_group("model")
    g.add_argument(
        "--model", default="sew_resnet18" if snn else "ann_resnet18", help="models.create_model name"
    )
    g.add_argument("--width", type=int, default=None, help="base width (64 = the paper's)")
    g.add_argument("--stem", choices=("imagenet", "small"), default=None, help="imagenet or small-image stem")
    if snn:
        g.add_argument("--T", type=int, default=4, help="time steps (also frames_number of DVS datasets)")
        g.add_argument("--neuron", choices=("if", "lif", "plif"), default="if", help="spiking neuron")
        g.add_argument("--surrogate", choices=("atan", "sigmoid"), default="atan", help="surrogate gradient")
        g.add_argument("--cnf", choices=("ADD", "AND", "IAND"), default="ADD", help="SEW connect function")
        g.add_argument("--neuron-backend", choices=("spikingjelly", "cupy", "auto"), default="spikingjelly")

    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default="embedded_mnist",
        help="embedded_mnist (offline), mnist, fashion_mnist, "
        "cifar10, cifar100, imagenet, dvs128_gesture, cifar10_dvs",
    )
    g.add_argument("--data-path", default=None, metavar="DIR", help="dataset root")
    g.add_argument("--download", action="store_true", help="allow torchvision to download the dataset")
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument(
        "--limit-train-batches", type=int, default=None, metavar="N", help="train on N batches/epoch"
    )
    g.add_argument("--limit-test-batches", type=int, default=None, metavar="N", help="test on N batches")

    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=90)
    g.add_argument("--batch-size", type=int, default=32, help="per process")
    g.add_argument("--opt", choices=("sgd", "adam"), default="sgd")
    g.add_argument("--lr", type=float, default=0.1)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", action="store_true")
    g.add_argument("--weight-decay", type=float, default=0.0, help="applied to theta (as the papers)")
    g.add_argument("--norm-weight-decay", type=float, default=None, help="weight decay of BN (default: same)")
    g.add_argument("--lr-scheduler", choices=("cosine", "step", "constant"), default="cosine")
    g.add_argument("--lr-step-size", type=int, default=30, help="step scheduler: epochs per decay")
    g.add_argument("--lr-gamma", type=float, default=0.1, help="step scheduler: decay factor")
    g.add_argument("--lr-warmup-epochs", type=int, default=0)
    g.add_argument("--lr-warmup-decay", type=float, default=0.01, help="warm-up start factor")
    g.add_argument(
        "--lr-warmup-shape",
        choices=("linear", "str"),
        default="linear",
        help="linear: from --lr-warmup-decay to 1, full lr in the first step after the warm-up "
        "(torchvision); str: lr*(i+1)/W for warm-up step i of W, full lr in the last warm-up step "
        "(the STR and LATS code; 0.2, 0.4, ..., 1.0 for 5 epochs; ignores --lr-warmup-decay)",
    )
    g.add_argument("--lr-step-per-iter", action="store_true", help="step the lr scheduler every iteration")
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--clip-grad-norm", type=float, default=None)

    g = p.add_argument_group("runtime")
    g.add_argument("--amp", choices=("none", "fp16", "bf16"), default="none")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--seed", type=int, default=2020)
    g.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP")
    g.add_argument(
        "--analyze-batches", type=int, default=4, help="test batches for the final snnprune.analyze"
    )

    g = p.add_argument_group("output")
    g.add_argument("--output-dir", default="./runs", metavar="DIR")
    g.add_argument("--run-name", default=None, help="default: <model>_<method>[_D<d>|_P<p>]")
    g.add_argument("--resume", default=None, metavar="PATH|auto", help="checkpoint to continue from")
    g.add_argument(
        "--stop-after-epoch",
        type=int,
        default=None,
        metavar="K",
        help="stop after epoch K (checkpoint written; continue with --resume auto)",
    )
    g.add_argument("--test-only", action="store_true", help="evaluate the --resume checkpoint and exit")
    g.add_argument("--export", action="store_true", help="write the finalized sparse model_sparse.pth")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    # The script's defaults describe its default run (e.g. EMBEDDED_DEFAULTS); a --config recipe replaces
    # them (parse_args restores these generic values first), so a recipe never inherits the small-image stem.
    p.generic_defaults = {k: p.get_default(k) for k in defaults or {}}
    if defaults:
        p.set_defaults(**defaults)
    return p


def load_config(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a YAML config and map its keys (``lr``, ``final-threshold`` or ``final_threshold``) to dests.

    Args:
        path: YAML file with a flat mapping of option -> value.
        parser: the parser whose options the keys must name.

    Returns:
        ``{dest: value}`` for ``parser.set_defaults``.

    Raises:
        ConfigError: missing file, invalid YAML, not a mapping, or unknown keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must be a mapping of option: value")
    dests = {a.dest for a in parser._actions} - {"help", "config"}
    out = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(out) - dests)
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r} has unknown keys {unknown}; valid keys are the CLI options "
            f"(e.g. {', '.join(sorted(dests)[:6])}, ...)"
        )
    # list options (nargs="*", e.g. prune_exclude) given one YAML scalar: a one-item list, not its letters
    for a in parser._actions:
        if a.nargs == "*" and isinstance(out.get(a.dest), str):
            out[a.dest] = [out[a.dest]]
    return out


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` with ``--config`` YAML values as defaults (command line wins).

    A ``--config`` file is a whole recipe: the script's own defaults (the embedded-dataset default run) do
    not apply under it, so keys the file omits take the generic parser defaults (e.g. ``stem``/``width``
    ``None`` = the model's own ImageNet stem and width), never the default run's small stem.

    Args:
        parser: from :func:`get_args_parser`.
        argv: arguments (None: ``sys.argv[1:]``).

    Returns:
        The parsed namespace.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**getattr(parser, "generic_defaults", {}))
        parser.set_defaults(**load_config(known.config, parser))
    return parser.parse_args(argv)


def pruner_kwargs(args: argparse.Namespace, steps_per_epoch: int) -> dict[str, Any]:
    """Map CLI options to :func:`snnprune.sparsify` keyword arguments for ``args.method``.

    ``total_steps = epochs * steps_per_epoch``, ``start_step = prune_start_epoch * steps_per_epoch`` and,
    for the target-sparsity methods, ``end_step = prune_end_epoch * steps_per_epoch`` (when given).

    Args:
        args: parsed arguments.
        steps_per_epoch: optimizer steps per epoch.

    Returns:
        The method's keyword arguments (None values are dropped by ``sparsify``).

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
    end = None
    if getattr(args, "prune_end_epoch", None) is not None:
        if not args.prune_start_epoch < args.prune_end_epoch <= args.epochs:
            raise ValueError(
                f"--prune-end-epoch must be in (--prune-start-epoch={args.prune_start_epoch}, "
                f"--epochs={args.epochs}], got {args.prune_end_epoch}"
            )
        end = args.prune_end_epoch * steps_per_epoch
    finetune = getattr(args, "st3_finetune_epochs", 0) or 0
    if finetune and "finetune_steps" in method_kwargs(args.method):
        last = args.epochs if args.prune_end_epoch is None else args.prune_end_epoch
        if not 0 < finetune < args.epochs - args.prune_start_epoch or last > args.epochs - finetune:
            raise ValueError(
                f"--st3-finetune-epochs must leave the ramp (--prune-start-epoch={args.prune_start_epoch} to "
                f"--prune-end-epoch) before the fine-tuning epochs of --epochs={args.epochs}, got {finetune}"
            )
    values = {
        "end_step": end,
        "final_threshold": args.final_threshold,
        "target_sparsity": args.target_sparsity,
        "beta": args.beta,
        "shape": args.stds_shape,
        "schedule": args.lats_schedule,
        "epoch_length": steps_per_epoch if args.lats_schedule == "closed_form" else None,
        "s_init": getattr(args, "s_init", None),
        "l0_coeff": getattr(args, "l0_coeff", None),
        "temperature": getattr(args, "ltp_temperature", None),
        "tau_init": getattr(args, "tau_init", None),
        "finetune_steps": finetune * steps_per_epoch if finetune else None,
        "granularity": None if getattr(args, "granularity", "weight") == "weight" else args.granularity,
        "filter_scale": None if getattr(args, "filter_scale", "size") == "size" else args.filter_scale,
    }
    kw: dict[str, Any] = {"total_steps": total, "start_step": start}
    accepted = method_kwargs(args.method)  # each option goes to the methods whose signature takes it
    if values["granularity"] and "granularity" not in accepted:
        raise ValueError(
            f"--granularity filter: method {args.method!r} has none; use lats, slats, pgh or stds"
        )
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
    if getattr(args, "granularity", "weight") != "weight":
        name += f"_{args.granularity}" + ("_rel" if getattr(args, "filter_scale", "size") == "layer" else "")
    return name
