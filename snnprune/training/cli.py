"""The training options, each declared once (:data:`OPTIONS`), and everything made from them.

One :class:`Option` per training option gives its type, default, range or choices, help and role. From it
come the flag and its ``--help`` line (:func:`get_args_parser`), the ``--config`` keys (:func:`load_config`),
the range checks (:func:`check_values`), what ``--resume``/``--test-only`` take from a checkpoint
(:func:`options_with_role`) and the method's constructor keywords (:func:`pruner_kwargs`). A keyword of a
registered method or model that no declaration feeds is an option too, made from its signature
(:func:`method_keyword_options`, :func:`model_keyword_options`); the method or model checks its value.

Plain argparse over dataclass declarations rather than jsonargparse: the values are converted and checked
here, so every bad input has one message format (``<option>: <what is wrong>; <what to do>``) with no
library's messages to rewrite.

Configuration flows one way: the declared defaults -> the script's defaults (a ``--config`` file is a whole
recipe that replaces them) -> the ``--config`` file -> the command line.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import yaml

from snnprune.data import DATASETS
from snnprune.methods import closest, get_method, list_methods, method_keywords, method_kwargs

__all__ = [
    "ENGINE_KEYWORDS",
    "OPTIONS",
    "RUN_METADATA_KEYS",
    "SCRIPTS",
    "ConfigError",
    "Option",
    "check_values",
    "explicit_options",
    "get_args_parser",
    "load_config",
    "method_keyword_options",
    "method_options",
    "model_keyword_options",
    "model_option_names",
    "option_name",
    "options_with_role",
    "parse_args",
    "plain_args",
    "pruner_kwargs",
    "pruning_options",
    "run_name",
]


class ConfigError(ValueError):
    """An invalid option value or combination, or a missing or malformed ``--config`` file: one line
    ``<option>: <what is wrong>; <what to do>``; the scripts print ``error: <message>`` and exit with 2."""


def _text(ok: Callable[[str], bool], must: str, fix: str) -> Callable[[str], str]:
    """A converter of a text option: ``ok(text)`` or ``must be <must>, got 'x'; <fix>``."""

    def convert(text: str) -> str:
        if not ok(text):
            raise argparse.ArgumentTypeError(f"must be {must}, got {text!r}; {fix}")
        return text

    return convert


_plain_name = _text(lambda t: t.strip() not in ("", ".", "..") and "/" not in t and os.sep not in t,
                    "a plain folder name", "pass a name without '/'")  # fmt: skip
_nonempty = _text(bool, "a checkpoint file or auto", "pass --resume PATH|auto")
_folder = _text(bool, "a folder", "pass --output-dir DIR")


@dataclass(frozen=True)
class Option:
    """One training option.

    Attributes:
        name: the dest (``final_threshold``; the flag is ``--final-threshold``, the YAML key either).
        type: ``int``, ``float``, ``str``, ``bool`` (``--x``/``--no-x``), ``list`` (of names) or a converter
            ``str -> value`` raising ``argparse.ArgumentTypeError``.
        default: the generic default (a script's defaults and a ``--config`` file replace it).
        help: the ``--help`` line.
        group: the ``--help`` section.
        role: ``"model"`` (defines the model or its pruning: ``--resume`` and ``--test-only`` take it from
            the checkpoint), ``"plan"`` (the training plan: ``--resume`` takes it), ``"run"`` (this
            invocation's) or ``"once"`` (this invocation's only: left out of ``config.json``, so that file
            given back as ``--config`` does not resume, overwrite or stop early again; ``""``: the group's).
        choices: the accepted values.
        range: numbers (always finite): ``">= 0"``, ``"> 0"`` or an interval ``"[0, 1)"``.
        keyword: the :func:`snnprune.sparsify` keyword it feeds (for the methods whose signature takes it).
        snn: an option of the SNN script only.
        metavar: the value's name in ``--help`` (default: the choices, or the name in capitals).
    """

    name: str
    type: Callable[..., Any] = str
    default: Any = None
    help: str = ""
    group: str = "runtime"
    role: str = ""
    choices: tuple[str, ...] | None = None
    range: str = ""
    keyword: str = ""
    snn: bool = False
    metavar: str | None = None


def _group(group: str, role: str, *options: Option) -> tuple[Option, ...]:
    """``options`` in ``group``; those without a role of their own get ``role``."""
    return tuple(replace(o, group=group, role=o.role or role) for o in options)


_O = Option
#: Every training option (the method keywords no declaration feeds are added from the registry).
OPTIONS: tuple[Option, ...] = (
    *_group(
        "pruning",
        "model",
        _O("method", str, None, "pruning method, any registered name", metavar="NAME"),  # default: the script's
        _O("prune_start_epoch", int, 0, "start of the pruning window", metavar="E", range=">= 0"),
        _O("prune_exclude", list, None, "layers kept dense", metavar="GLOB"),
    ),
    *_group(
        "model",
        "model",
        _O("model", str, None, "models.create_model name"),  # default and choices: the script's
        _O("width", int, None, "base width (64 = the paper's)", range=">= 1"),
        _O("stem", str, None, "imagenet or small-image stem", choices=("imagenet", "small")),
        _O("T", int, 4, "time steps (also frames_number of DVS datasets)", range=">= 1", snn=True),
        _O("neuron", str, "if", "spiking neuron", choices=("if", "lif", "plif"), snn=True),
        _O("surrogate", str, "atan", "surrogate gradient", choices=("atan", "sigmoid"), snn=True),
        _O("cnf", str, "ADD", "connect function of the spiking residual blocks", choices=("ADD", "AND", "IAND"),
           snn=True),
        _O("neuron_backend", str, "spikingjelly", "neuron kernels", choices=("spikingjelly", "cupy", "auto"),
           snn=True, role="run"),
    ),
    *_group(
        "data",
        "run",
        _O("dataset", str, "embedded_mnist", "embedded_mnist is offline; the others read --data-path",
           choices=DATASETS, role="model"),
        _O("data_path", str, None, "dataset root", metavar="DIR"),
        _O("download", bool, False, "allow torchvision to download the dataset"),
        _O("workers", int, 0, "DataLoader worker processes", range=">= 0"),
        _O("limit_train_batches", int, None, "train on N batches/epoch", metavar="N", range=">= 1",
           role="plan"),
        _O("limit_test_batches", int, None, "test on N batches", metavar="N", range=">= 1"),
    ),
    *_group(
        "optimization",
        "plan",
        _O("epochs", int, 90, "epochs of the run (every schedule is planned on it)", range=">= 1"),
        _O("batch_size", int, 32, "per process", range=">= 1"),
        _O("opt", str, "sgd", "optimizer (adamw: decoupled weight decay)", choices=("sgd", "adam", "adamw")),
        _O("lr", float, 0.1, "learning rate", range="> 0"),
        _O("momentum", float, 0.9, "SGD momentum", range="[0, 1]"),
        _O("nesterov", bool, False, "SGD Nesterov momentum"),
        _O("weight_decay", float, 0.0, "applied to theta (as the papers)", range=">= 0"),
        _O("norm_weight_decay", float, None, "weight decay of BN (default: same)", range=">= 0"),
        _O("lr_scheduler", str, "cosine", "lr schedule", choices=("cosine", "step", "constant")),
        _O("lr_step_size", int, 30, "step scheduler: epochs per decay", range=">= 1"),
        _O("lr_gamma", float, 0.1, "step scheduler: decay factor", range="> 0"),
        _O("lr_warmup_epochs", int, 0, "linear warm-up epochs", range=">= 0"),
        _O("lr_warmup_decay", float, 0.01, "warm-up start factor", range="(0, 1]"),
        _O("lr_warmup_shape", str, "linear", "linear: from --lr-warmup-decay to 1, full lr in the first step "
           "after the warm-up (torchvision); str: lr*(i+1)/W for warm-up step i of W, full lr in the last "
           "warm-up step (the code of two methods' authors; 0.2, 0.4, ..., 1.0 for 5 epochs; ignores "
           "--lr-warmup-decay)", choices=("linear", "str")),
        _O("lr_step_per_iter", bool, False, "step the lr scheduler every iteration"),
        _O("label_smoothing", float, 0.0, "in [0, 1)", range="[0, 1)"),
        _O("clip_grad_norm", float, None, "max gradient norm (> 0)", range="> 0"),
    ),
    *_group(
        "runtime",
        "run",
        _O("amp", str, "none", "autocast (fp16 needs CUDA)", choices=("none", "fp16", "bf16")),
        _O("channels_last", bool, False, "channels-last memory format"),
        _O("seed", int, 2020, "in [0, 2**32)", range="[0, 2**32)", role="plan"),
        _O("deterministic", bool, False, "torch.use_deterministic_algorithms"),
        _O("device", str, None, "cpu, cuda, cuda:1 (default: cuda if available)"),
        _O("sync_bn", bool, False, "SyncBatchNorm under DDP"),
        _O("analyze_batches", int, 4, "test batches for the final snnprune.analyze", range=">= 0"),
        _O("bn_recalibrate", int, None, "re-estimate BN statistics on N training batches before every "
           "evaluation (default: 20 when the method removes whole channels, else 0 = off)", metavar="N", range=">= 0"),
    ),
    *_group(
        "output",
        "run",
        _O("output_dir", _folder, "./runs", "parent folder of the run folders", metavar="DIR"),
        _O("run_name", _plain_name, None, "default: <model>_<method>[_D<d>|_P<p>]"),
        _O("resume", _nonempty, None, "checkpoint to continue from (auto: the run folder's checkpoint.pth, if any); "
           "the model, pruning and training plan come from the checkpoint", metavar="PATH|auto", role="once"),
        _O("overwrite", bool, False, "replace a run folder that already holds a run", role="once"),
        _O("stop_after_epoch", int, None, "stop after epoch K (checkpoint written; continue with --resume "
           "auto)", metavar="K", range=">= 0", role="once"),
        _O("test_only", bool, False, "evaluate the --resume checkpoint and exit", role="once"),
        _O("export", bool, False, "write the finalized sparse model_sparse.pth"),
        _O("quiet", bool, False, "no progress bar and no per-epoch lines"),
        _O("log_every", int, 50, "when stdout is not a terminal (SLURM, nohup): a plain progress line every "
           "N steps (0: off)", metavar="N", range=">= 0"),
    ),
)  # fmt: skip

#: The method keywords that :func:`pruner_kwargs` computes from the epochs (no option of their own).
ENGINE_KEYWORDS = ("total_steps", "start_step", "epoch_length")

#: Keys of a run's ``config.json`` that describe the run rather than set an option: accepted (and ignored)
#: when that file is given back as ``--config``; ``kind`` must match the script.
RUN_METADATA_KEYS = ("kind", "steps_per_epoch", "world_size", "config", "model_builder")
#: The script that trains each ``kind`` of run (named by the errors of a checkpoint or config of the other).
SCRIPTS = {"snn": "train_sew.py", "ann": "train_ann.py"}

_EXPLICIT = "_explicit_options"  # attribute of the parsed namespace (never written to config.json)
_MODEL_OPTIONS = "_model_options"  # the same: the dests of model_keyword_options
#: Model keywords the dataset sets (no option).
DATASET_KEYWORDS = ("num_classes", "in_channels")


# ----------------------------------------------------------------------------------------------- method options
_SYMBOLS = {
    "lambda": "λ", "theta": "θ", "sigma": "σ", "beta": "β", "tau": "τ", "eta": "η", "pi": "π", "Delta": "Δ",
    "odot": "⊙", "ne": "≠", "le": "≤", "ge": "≥", "in": "∈", "approx": "≈", "propto": "∝", "leftarrow": "←",
    "sum": "Σ", "partial": "∂", "lfloor": "⌊", "rfloor": "⌋", "lceil": "⌈", "rceil": "⌉", "sqrt": "√",
}  # fmt: skip


def _plain_math(tex: str) -> str:
    tex = re.sub(r"\\(?:mathrm|operatorname)\{([^}]*)\}", r"\1", tex).replace("\\,", " ")
    tex = re.sub(r"\\([A-Za-z]+)", lambda m: _SYMBOLS.get(m.group(1), m.group(1)), tex)
    return tex.replace("{", "").replace("}", "")


def plain_text(doc: str) -> str:
    """A docstring's reStructuredText as the plain text of ``--help``: ``:math:`` rendered with Unicode
    symbols (λ, θ, Δ), other roles by their target (``~`` keeps its last name) and literals (double backquotes) as their text."""
    doc = re.sub(r":math:`([^`]*)`", lambda m: _plain_math(m.group(1)), doc)
    doc = re.sub(
        r":[\w:]+:`(~?)([^`]*)`", lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), doc
    )
    return re.sub(r"``([^`]*)``", r"\1", doc)


def method_keyword_options() -> tuple[Option, ...]:
    """The keywords of the registered methods that no declared option feeds, as options of role ``model``:
    name from :attr:`~snnprune.Pruner.option_names` (else the keyword), type, choices (a ``typing.Literal``)
    and default from the signature (None on the command line: the method's default applies), help from
    the ``Args:`` docstring (a keyword of several methods names them all), counted in epochs for
    :attr:`~snnprune.Pruner.epoch_keywords`; the constructor checks the value. Declared names, state
    keywords and :data:`ENGINE_KEYWORDS` are left out."""
    taken = {o.keyword for o in OPTIONS} | {o.name for o in OPTIONS} | set(ENGINE_KEYWORDS)
    found: dict[str, tuple[list[str], str, set[str], Any, Any]] = {}  # methods, doc, defaults, first, owner
    for method in list_methods():
        cls = get_method(method)
        for kw, k in method_keywords(method).items():
            if kw not in taken and kw not in cls.state_kwargs:
                methods, doc, defaults, first, owner = found.get(kw, ([], "", set(), k, cls))
                defaults.add("" if k.default is None else f" (default: {k.default})")
                found[kw] = ([*methods, method], doc or plain_text(k.help), defaults, first, owner)
    options = []
    for kw, (methods, doc, defaults, k, owner) in found.items():
        epochs = kw in owner.epoch_keywords
        text = f"{', '.join(methods)}: {doc or kw}{defaults.pop() if len(defaults) == 1 else ''}"
        options.append(Option(owner.option_names.get(kw, kw), int if epochs else k.type, None,
                              text + (" Given in epochs." if epochs else ""), "pruning", "model",
                              choices=k.choices, keyword=kw, metavar="E" if epochs else None))  # fmt: skip
    return tuple(options)


def model_keyword_options(
    kwargs_of: Callable[[str], dict[str, Any]], names: Sequence[str]
) -> tuple[Option, ...]:
    """The keywords of the models ``names`` that no declared option feeds, as options of role ``model``
    (``kwargs_of``: model name -> ``{keyword: default}``, e.g. ``models.model_kwargs``): type from the
    default (``bool``, ``int``, ``float``, ``str``; an int and a float default make a float), None on the
    command line (the model's own default applies), help naming the models that take it; the model checks
    the value. Declared names and :data:`DATASET_KEYWORDS` are left out."""
    declared = {o.name for o in OPTIONS} | set(DATASET_KEYWORDS)
    found: dict[str, tuple[list[str], type]] = {}
    for name in names:
        for kw, default in kwargs_of(name).items():
            kind = type(default)
            if kw in declared or kind not in (bool, int, float, str):
                continue
            takers, first = found.get(kw, ([], kind))
            found[kw] = ([*takers, name], float if {first, kind} == {int, float} else first)
    return tuple(
        Option(kw, kind, None, f"model option of {', '.join(takers[:3])}"
               f"{f' and {len(takers) - 3} more' if len(takers) > 3 else ''} (default: the model's)",
               "model", "model")
        for kw, (takers, kind) in found.items()
    )  # fmt: skip


def method_options(method: str) -> list[str]:
    """The pruning options (:func:`pruning_options`) that ``method`` takes, as sorted ``--flags``."""
    taken = method_kwargs(method)
    return sorted(option_name(d) for d, kw in pruning_options().items() if kw in taken)


def pruning_options() -> dict[str, str]:
    """Options that feed a method keyword: dest -> :func:`snnprune.sparsify` keyword (declared and from
    the registry). An option is valid for the methods whose signature takes its keyword."""
    return {o.name: o.keyword for o in (*OPTIONS, *method_keyword_options()) if o.keyword}


def options_with_role(*roles: str) -> list[str]:
    """Dests of the options of these roles (``"model"``, ``"plan"``), method keywords included."""
    return [o.name for o in (*OPTIONS, *method_keyword_options()) if o.role in roles]


# ----------------------------------------------------------------------------------------------- values
def _bound(text: str) -> float:
    base, _, exponent = text.strip().partition("**")
    return float(base) ** float(exponent) if exponent else float(base)


def _within(spec: str, v: Any) -> bool:
    if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)):
        return False
    if spec[0] not in "[(":  # ">= a" is "[a, inf)", "> a" is "(a, inf)"
        spec = ("[" if spec.startswith(">=") else "(") + spec.split()[1] + ", inf)"
    lo, hi = (_bound(s) for s in spec[1:-1].split(","))
    return (lo <= v if spec[0] == "[" else lo < v) and (v <= hi if spec[-1] == "]" else v < hi)


def check_values(args: argparse.Namespace) -> None:
    """Each option's value against its declared range (None passes where the default is None); the first
    one out of range is a :class:`ConfigError` ``--option: must be ..., got X; <fix>``."""
    for o in OPTIONS:
        v = getattr(args, o.name, None)
        if not o.range or (v is None and o.default is None) or not hasattr(args, o.name):
            continue
        if not (_within(o.range, v) and (o.type is not int or isinstance(v, int))):
            interval = o.range[0] in "[("
            must = f"in {o.range}" if interval else o.range if o.type is int else f"a finite number {o.range}"
            number = "a whole number" if o.type is int else "a number"
            raise ConfigError(
                f"{option_name(o.name)}: must be {must}, got {v!r}; pass {number} {o.range if not interval else must}"
            )


_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}  # fmt: skip


def _value(o: Option, v: Any, key: str | None = None) -> Any:
    """``v`` as ``o``'s value: a command-line token (``key`` None; one name of a list option), or the value
    of line ``key`` of a ``--config`` file (not None). Raises ``argparse.ArgumentTypeError``."""
    bad = argparse.ArgumentTypeError
    if o.type is bool:  # from a file only: the flags are --x/--no-x
        b = v if isinstance(v, bool) else _BOOLEANS.get(str(v).strip().lower())
        if b is None:
            raise bad(f"expected true or false, got {v!r}; write {key}: true or false")
        return b
    if isinstance(v, dict):
        raise bad(f"expected a value, got a mapping; write {key}: <value>")
    if o.type is list:
        items = v if isinstance(v, list) else [v]  # a scalar is one pattern
        if any(isinstance(i, list | dict) for i in items):
            raise bad(f"expected a list of names, got {v!r}; write {key}: [a, b]")
        if "" in map(str, items):
            raise bad("must be a list of layer-name globs, got ''; e.g. fc 'conv1*'")
        return [str(i) for i in items] if key else str(v)
    if isinstance(v, list | bool):
        what = f"a list {v!r}" if isinstance(v, list) else f"the boolean {v}"
        raise bad(f"expected one value, got {what}; write {key}: <value>")
    text = str(v)
    if o.choices is not None and text not in o.choices:
        listed = ", ".join(map(repr, o.choices))
        near = closest(text, o.choices)
        fix = f"did you mean {near!r}?" if near else "pick one of the listed values"
        raise bad(f"invalid choice: {text!r} (choose from {listed}); {fix}")
    try:
        return o.type(text)
    except ValueError:
        number = "a whole number" if o.type is int else "a number"
        raise bad(f"invalid {o.type.__name__} value: {text!r}; give {number}") from None


# ----------------------------------------------------------------------------------------------- parser
class TrainingParser(argparse.ArgumentParser):
    """``ArgumentParser`` over :class:`Option` declarations whose errors raise :class:`ConfigError`;
    ``options``: dest -> :class:`Option` (choices resolved), ``generic_defaults``: dest -> declared default."""

    options: dict[str, Option]
    generic_defaults: dict[str, Any]
    model_option_names: tuple[str, ...] = ()

    def error(self, message: str) -> NoReturn:  # unknown arguments
        raise ConfigError(f"{message}; see --help for the options")


def get_args_parser(
    *,
    snn: bool = True,
    defaults: dict[str, Any] | None = None,
    model_choices: Sequence[str] | None = None,
    model_options: Sequence[Option] = (),
    base_defaults: dict[str, Any] | None = None,
) -> TrainingParser:
    """The training parser, one flag per :class:`Option` (returned, not parsed, so scripts can extend it):
    ``snn`` adds the SNN-only options, ``defaults`` are the script's own (shown by ``--help``; a ``--config``
    recipe replaces them), ``model_choices`` the names ``--model`` accepts (None: any), ``model_options``
    the models' own keywords (:func:`model_keyword_options`), ``base_defaults`` the script's defaults that
    hold under a ``--config`` recipe too (the model and method it trains when a recipe names none). Plain
    ``parser.parse_args`` gives typed values; :func:`parse_args` adds ``--config``."""
    p = TrainingParser(
        description="snnprune training (one engine for SNN and ANN)",
        exit_on_error=False,
    )
    p.add_argument("--config", default=None, metavar="FILE", help="YAML recipe (or a run's config.json); CLI flags override it")  # fmt: skip
    p.options, groups = {}, {}
    p.model_option_names = tuple(o.name for o in model_options)
    chosen = {**(base_defaults or {}), **(defaults or {})}
    for o in (*OPTIONS, *method_keyword_options(), *model_options):
        if o.snn and not snn:
            continue
        if o.name == "method":
            o = replace(o, choices=list_methods())
        elif o.name == "model":
            o = replace(o, choices=None if model_choices is None else tuple(model_choices))
        if o.group not in groups:
            groups[o.group] = p.add_argument_group(o.group)
        if o.type is bool:
            kw: dict[str, Any] = {"action": argparse.BooleanOptionalAction}
        else:
            metavar = o.metavar or ("{" + ",".join(o.choices) + "}" if o.choices is not None else None)
            kw = {
                "type": functools.partial(_value, o),
                "metavar": metavar,
                "nargs": "*" if o.type is list else None,
            }
        text = o.help + (f": {', '.join(o.choices)}" if o.choices is not None and o.metavar else "")
        if chosen.get(o.name, o.default) not in (None, False):  # the default in force, not a signature's
            text = re.sub(r" ?\(default: [^()]*\)$", "", text) + " (default: %(default)s)"
        groups[o.group].add_argument(option_name(o.name), default=o.default, help=text, **kw)
        p.options[o.name] = o
    p.generic_defaults = {"config": None, **{name: o.default for name, o in p.options.items()}}
    p.generic_defaults.update(base_defaults or {})
    p.set_defaults(**chosen)
    return p


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader refusing a key written twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        for k in keys:
            if keys.count(k) > 1:
                raise _DuplicateKey(k)
        return super().construct_mapping(node, deep)


def load_config(
    path: str | Path, parser: TrainingParser, kind: str | None = None
) -> tuple[dict[str, Any], bool]:
    """Read a YAML recipe (or a run's ``config.json``, which has ``kind``) into ``({dest: value},
    is_run_config)``, each key converted and checked against its declaration in ``parser``. Keys may be
    written ``final-threshold`` or ``final_threshold`` (one of them, once); booleans also as ``"true"``/
    ``"false"``, ``yes``/``no``, ``on``/``off``, 1/0; :data:`RUN_METADATA_KEYS` only in a run's
    ``config.json`` (``kind`` must match the script's). Every problem is a :class:`ConfigError`."""
    path = Path(path)
    where = f"--config {path}"
    if path.is_dir() or not path.exists():
        raise ConfigError(f"--config: file {str(path)!r} does not exist; pass a YAML recipe file")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise ConfigError(
            f"--config: {str(path)!r} sets {exc.args[0]!r} twice (the last one would win silently); keep one"
        ) from None
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
    spelled = [str(k).replace("-", "_") for k in data]
    raw = dict(zip(spelled, data.values(), strict=True))
    if len(raw) < len(data):
        twice = sorted(str(k) for k, s in zip(data, spelled, strict=True) if spelled.count(s) > 1)
        raise ConfigError(
            f"--config: {str(path)!r} sets one option under two spellings {twice}; keep one of them"
        )
    if kind is not None and raw.get("kind") not in (None, kind):
        raise ConfigError(
            f"--config: {str(path)!r} is the config of an {str(raw['kind']).upper()} run; "
            f"use scripts/{SCRIPTS.get(str(raw['kind']), SCRIPTS['ann'])} for it"
        )
    is_run_config = "kind" in raw
    for key in RUN_METADATA_KEYS if is_run_config else ():
        raw.pop(key, None)
    unknown = sorted(set(raw) - set(parser.options))
    if unknown:
        raise ConfigError(
            f"--config: {str(path)!r} has unknown keys {unknown}; valid keys are the CLI options "
            f"(e.g. {', '.join(sorted(parser.options)[:6])}, ...; see --help)"
        )
    out: dict[str, Any] = {}
    for key, value in raw.items():
        default = parser.generic_defaults[key]
        if value is None and default is not None:
            raise ConfigError(
                f"{key} ({where}): must not be null; give a value or delete the line (default {default!r})"
            )
        try:
            out[key] = None if value is None else _value(parser.options[key], value, key)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{key} ({where}): {exc}") from None
    return out, is_run_config


_UNSET = object()  # an option the command line did not set
_NEGATIVE = re.compile(r"-(\d+\.?\d*|\.\d+)(e[+-]?\d+)?|-inf(inity)?", re.IGNORECASE)


def parse_args(
    parser: TrainingParser, argv: list[str] | None = None, *, kind: str | None = None
) -> argparse.Namespace:
    """Parse ``argv`` (None: ``sys.argv[1:]``) over the ``--config`` file's values, a whole recipe that
    replaces the script's defaults (the command line wins); :func:`explicit_options` of the result tells
    which options the command line or the file set. Types and choices are checked here, ranges and
    combinations by :func:`snnprune.training.validation.prepare`; ``kind`` refuses a run ``config.json`` of
    the other kind. Every problem is a :class:`ConfigError`."""
    tokens: list[str] = []
    for tok in sys.argv[1:] if argv is None else argv:  # --s-init -1e3: argparse takes -1e3 for a flag
        o = parser.options.get(tokens[-1][2:].replace("-", "_")) if tokens[-1:] else None
        if o is not None and o.type in (int, float) and _NEGATIVE.fullmatch(tok):
            tokens[-1] += "=" + tok
        else:
            tokens.append(tok)
    ns = argparse.Namespace(**dict.fromkeys(parser.generic_defaults, _UNSET))
    try:
        parser.parse_args(tokens, namespace=ns)
    except argparse.ArgumentError as exc:
        message = exc.message  # the converters' messages carry their fix; argparse's own do not
        if "; " not in message:
            message += "; give a value after the option" if "expected" in message else "; see --help"
        raise ConfigError(f"{(exc.argument_name or '').split('/')[0]}: {message}") from None
    cli = {k: v for k, v in vars(ns).items() if v is not _UNSET}
    values = {k: parser.get_default(k) for k in parser.generic_defaults}
    explicit = set(cli)
    if cli.get("config"):
        values = dict(parser.generic_defaults)
        from_file, is_run_config = load_config(cli["config"], parser, kind=kind)
        values.update(from_file)
        # A recipe's keys are choices; a run's config.json lists every option, so there only the values
        # that differ from the defaults count as chosen.
        explicit |= {k for k, v in from_file.items() if not is_run_config or v != parser.generic_defaults[k]}
    values.update(cli)
    args = argparse.Namespace(**values)
    setattr(args, _EXPLICIT, frozenset(explicit))
    setattr(args, _MODEL_OPTIONS, parser.model_option_names)
    return args


def explicit_options(args: argparse.Namespace) -> frozenset[str]:
    """Options (dests) set on the command line or by the ``--config`` file (empty for a plain namespace)."""
    return getattr(args, _EXPLICIT, frozenset())


def model_option_names(args: argparse.Namespace) -> tuple[str, ...]:
    """Dests of the model keyword options of the parser that made ``args`` (empty for a plain namespace)."""
    return getattr(args, _MODEL_OPTIONS, ())


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """``vars(args)`` without the parser's bookkeeping (what config.json and checkpoints store)."""
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}


def option_name(dest: str) -> str:
    """``final_threshold`` -> ``--final-threshold`` (``T`` -> ``--T``)."""
    return "--" + dest.replace("_", "-")


# ----------------------------------------------------------------------------------------------- method
def pruner_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The constructor keyword arguments of ``args.method`` from the options, its steps counted in epochs
    (one step per epoch: ``total_steps = epochs``, ``start_step = prune_start_epoch``, ``epoch_length = 1``
    for a method that takes it; :meth:`~snnprune.Pruner.scale_steps` counts them in optimizer steps), and
    every set option of :func:`pruning_options` whose keyword the method takes. A plain mapping: the
    method's constructor checks the values (``ValueError`` for an unknown method)."""
    kw: dict[str, Any] = {"total_steps": args.epochs, "start_step": args.prune_start_epoch}
    accepted = method_kwargs(args.method)  # each option goes to the methods whose signature takes it
    for dest, keyword in pruning_options().items():
        value = getattr(args, dest, None)
        if value is not None and keyword in accepted:
            kw[keyword] = value
    if "epoch_length" in accepted:
        kw["epoch_length"] = 1
    return kw


def run_name(args: argparse.Namespace) -> str:
    """Default run folder name: ``<model>_<method>`` and what the method shows of its options
    (:meth:`~snnprune.Pruner.run_name_part`, e.g. ``_D0.1``)."""
    return f"{args.model}_{args.method}" + get_method(args.method).run_name_part(pruner_kwargs(args))
