"""Reload a training run in one call: :func:`load_run` returns a :class:`Run` (model, pruner, config, summary).

A run records how its model was built in ``config.json`` under :data:`BUILDER_KEY`, Hydra-style: a dotted
path and its keyword arguments, e.g. ``{"_target_": "models.create_model", "name": "sew_resnet18",
"num_classes": 10, "in_channels": 1, "T": 2, "width": 16, ...}``. The engine builds every model from that
record (:func:`instantiate`), so the record is exactly what was trained. A run folder is data: the record's
``_target_`` is called only when installed code has declared it a model builder
(:func:`snnprune.model_builder`; ``import models`` declares ``models.create_model``), and only after its
keywords are checked against the builder's signature; nothing is imported, so ``snnprune`` never imports
the ``models`` package itself. Checkpoints load with ``weights_only=True`` (no pickle).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from snnprune.data import build_datasets
from snnprune.model_builders import check_kwargs, declared_builder
from snnprune.training.checkpoint import CheckpointError, TrainState, load_checkpoint
from snnprune.training.cli import ConfigError, option_name

__all__ = ["BUILDER_KEY", "Run", "instantiate", "load_run", "restore"]

#: The key of ``config.json`` that holds the model builder record.
BUILDER_KEY = "model_builder"


def instantiate(
    record: Mapping[str, Any], where: str = BUILDER_KEY, fix: str = "fix the record", flags: bool = False
) -> nn.Module:
    """Build a model from a builder record (see the module docstring): its declared builder called with the
    record's other keys, checked first against its signature (:func:`snnprune.model_builders.check_kwargs`).
    Any problem is one :class:`ConfigError` line naming ``where`` (a builder's refusal ends with ``fix``; with
    ``flags``, a :class:`snnprune.KeywordError` names the command-line flag of its keyword instead)."""
    if not isinstance(record, Mapping) or "_target_" not in record:
        shown = repr(record) if len(repr(record)) <= 80 else repr(record)[:77] + "..."
        raise ConfigError(
            f"{where}: {shown} has no '_target_' dotted path; record "
            "{'_target_': 'package.module.function', **kwargs}"
        )
    kwargs = {k: v for k, v in record.items() if k != "_target_"}
    try:
        fn = declared_builder(record["_target_"], where)
        check_kwargs(fn, kwargs, f"{where}: {record['_target_']}")
    except (LookupError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    try:
        return fn(**kwargs)
    except (TypeError, ValueError) as exc:  # the builder's own check of its arguments (e.g. a model name)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        keyword = getattr(exc, "keyword", None)  # a snnprune.KeywordError: the flag of that keyword
        if flags and keyword in kwargs:
            problem = first.removeprefix(f"{keyword} ")
            fix = "" if "; " in problem else "; pass another value"
            raise ConfigError(f"{option_name(keyword)}: {problem}{fix}") from None
        raise ConfigError(f"{where}: {first}; {fix}") from None


def restore(
    model: nn.Module, method: str, checkpoint: TrainState, *, exclude: Any = None, source: str
) -> Any:
    """Attach ``method`` to ``model`` with the configuration saved in ``checkpoint.pruner`` (plus the run's
    ``exclude`` globs) and load the checkpoint's model and pruner states; returns the pruner. A checkpoint
    that does not fit is a :class:`CheckpointError` naming ``source`` (e.g. ``"--resume: checkpoint 'x'"``)."""
    import snnprune

    saved = checkpoint.pruner
    kwargs = dict(saved["config"]) if isinstance(saved.get("config"), dict) else {}
    if exclude:
        kwargs["exclude"] = list(exclude)
    try:
        pruner = snnprune.sparsify(model, method, **kwargs)
        model.load_state_dict(checkpoint.model)
        pruner.load_state_dict(saved)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{source} does not match the model/method {method!r} of its run ({first}); pass a checkpoint of "
            "that run"
        ) from None
    return pruner


@dataclass
class Run:
    """A reloaded training run (see :func:`load_run`).

    Attributes:
        model: the trained model in eval mode.
        pruner: the attached :class:`snnprune.Pruner` with its state loaded (None when finalized or compacted).
        config: the run's ``config.json``.
        summary: its ``summary.json`` (None for an unfinished run).
        path: the run folder.
    """

    model: nn.Module
    pruner: Any
    config: dict[str, Any]
    summary: dict[str, Any] | None
    path: Path

    def test_data(self, batch_size: int = 100) -> DataLoader:
        """A loader of ``batch_size`` over the run's test set, in order, from its stored dataset options
        (a :class:`DataError` when the dataset cannot be loaded here, e.g. its ``data_path`` is missing)."""
        _, test, _, _ = build_datasets(
            argparse.Namespace(**{"data_path": None, "download": False, **self.config})
        )
        return DataLoader(test, batch_size=batch_size, shuffle=False)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        problem = "" if isinstance(data, dict) else "is not a JSON object"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"is damaged ({exc})"
    except RecursionError:
        problem = "is nested too deeply to be a run's JSON"
    if problem:
        raise ConfigError(
            f"load_run: {str(path)!r} {problem}; pass a run folder written by the training scripts"
        )
    return data


def load_run(
    path: str | Path,
    *,
    finalize: bool = False,
    compact: bool = False,
    builder: Callable[[dict[str, Any]], nn.Module] | None = None,
    map_location: str | torch.device = "cpu",
) -> Run:
    """Rebuild a trained model from its run folder (the one way: the engine, the figure scripts and the
    README use it).

    The model is built from the builder record of ``config.json`` by its declared builder (see the module
    docstring: import the package that declares it first, e.g. ``import models``), the run's method is
    attached with the configuration saved in the checkpoint, and the checkpoint's model and pruner states
    are loaded (``weights_only=True``: the folder is data, loading it runs no code).

    Args:
        path: a run folder (its ``checkpoint.pth``, the final state that ``summary.json`` describes) or a
            checkpoint inside one (e.g. ``run/best.pth``).
        finalize: return plain sparse weights (:func:`snnprune.finalize`; ``pruner`` is None).
        compact: return the physically smaller model of ``model_compact.pth`` (``--granularity filter
            --export`` runs; ``pruner`` is None).
        builder: ``config -> nn.Module`` instead of the recorded builder (runs without a record, or a
            model that cannot be imported here).
        map_location: device of the returned model.

    Returns:
        The :class:`Run`.

    Raises:
        ConfigError: no such folder, no or a damaged ``config.json``, no builder record and no ``builder``,
            a record naming an undeclared builder or keywords it does not take, no ``model_compact.pth``
            for ``compact=True``.
        CheckpointError: a missing, corrupt or mismatching checkpoint, or one that needs pickle to load.
        CorruptFileError: a damaged ``model_compact.pth`` (:class:`~snnprune.files.UnsafeFileError`: one
            that needs pickle).
    """
    import snnprune
    from snnprune.structured import load_compact

    given = Path(path).expanduser()
    if not given.exists():
        raise ConfigError(
            f"load_run: {str(given)!r} does not exist; pass a run folder or a checkpoint inside one"
        )
    folder, ckpt_path = (given, given / "checkpoint.pth") if given.is_dir() else (given.parent, given)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"load_run: {str(folder)!r} has no config.json; pass a run folder written by the training scripts"
        )
    config = _read_json(folder / "config.json")
    if not isinstance(config.get("method"), str):
        raise ConfigError(
            f"load_run: {str(folder / 'config.json')!r} names no method; pass a run folder written by the "
            "training scripts"
        )
    summary = _read_json(folder / "summary.json") if (folder / "summary.json").is_file() else None
    if builder is None and BUILDER_KEY not in config:
        raise ConfigError(
            f"load_run: {str(folder / 'config.json')!r} has no {BUILDER_KEY!r} record of how its model was "
            "built; pass builder=<function config -> nn.Module>"
        )

    def build() -> nn.Module:
        if builder is not None:
            return builder(config)
        return instantiate(config[BUILDER_KEY], f"load_run: {str(folder / 'config.json')!r} {BUILDER_KEY}")

    if compact:
        if not (folder / "model_compact.pth").is_file():
            raise ConfigError(
                f"load_run: {str(folder)!r} has no model_compact.pth; train the run with --granularity filter "
                "--export, or load it without compact=True"
            )
        model, pruner = load_compact(build(), folder / "model_compact.pth"), None
    else:
        ckpt = TrainState.of(load_checkpoint(ckpt_path, name="load_run"))
        model = build()
        pruner = restore(
            model,
            config["method"],
            ckpt,
            exclude=config.get("prune_exclude"),
            source=f"load_run: {str(ckpt_path)!r}",
        )
        if finalize:
            model, pruner = snnprune.finalize(model), None
    return Run(
        model=model.to(map_location).eval(), pruner=pruner, config=config, summary=summary, path=folder
    )
