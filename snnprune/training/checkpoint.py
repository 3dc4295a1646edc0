"""Checkpoints (one dict of state_dicts) that check themselves, and RNG-state capture for exact resume.

:func:`save_checkpoint` writes with :func:`snnprune.files.save` (atomic, with a ``.sha256`` digest beside
the file); :func:`load_checkpoint` reads with :func:`snnprune.files.load` and checks every key the training
engine reads, so a damaged or incomplete checkpoint is one :class:`CheckpointError` line.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnprune import files

__all__ = [
    "CheckpointError",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not a snnprune training checkpoint."""


def _is_dict(v: Any) -> bool:
    return isinstance(v, dict)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_rng(v: Any) -> bool:
    return isinstance(v, dict) and {"python", "numpy", "torch"} <= set(v)


#: what the training engine reads from a checkpoint: key -> (what it holds, the check of its value)
_KEYS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "model": ("the model's state_dict", _is_dict),
    "optimizer": ("the optimizer's state_dict", _is_dict),
    "lr_scheduler": ("the lr scheduler's state_dict", _is_dict),
    "scaler": ("the grad scaler's state_dict", _is_dict),
    "pruner": ("the pruner's state_dict", _is_dict),
    "rng": ("the random number generator states of get_rng_state", _is_rng),
    "epoch": ("the last finished epoch, an integer >= 0", _is_count),
    "global_step": ("the optimizer steps so far, an integer >= 0", _is_count),
}


def _check_keys(state: Any, path: Path, name: str) -> None:
    """One :class:`CheckpointError` line for the first missing or bad key the engine reads."""
    fix = "pass a checkpoint.pth/best.pth written by the training scripts"
    where = f"{name}: checkpoint {str(path)!r}"
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{where} is not a snnprune training checkpoint (a {type(state).__name__}, not a dict); {fix}"
        )
    for key, (what, ok) in _KEYS.items():
        if key not in state:
            raise CheckpointError(
                f"{where} is not a snnprune training checkpoint: it has no {key!r} ({what}); {fix}"
            )
        if not ok(state[key]):
            value = state[key]
            shown = f"a dict of {sorted(map(str, value))}" if isinstance(value, dict) else repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise CheckpointError(f"{where} has a bad {key!r}: {shown}, not {what}; {fix}")
    best = state.get("best_top1", -1.0)
    if isinstance(best, bool) or not isinstance(best, (int, float)):
        raise CheckpointError(f"{where} has a bad 'best_top1': {repr(best)[:80]}, not a number; {fix}")


def get_rng_state() -> dict[str, Any]:
    """The RNG states of Python, NumPy, torch CPU and (if available) every CUDA device, for
    :func:`set_rng_state`."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the global RNG is what we restore)
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by :func:`get_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` with :func:`snnprune.files.save`: atomically, with ``<path>.sha256`` beside it (a full
    disk or a read-only folder raises and leaves the previous checkpoint unchanged)."""
    return files.save(state, path)


def load_checkpoint(
    path: str | os.PathLike, *, name: str = "--resume", map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and check what the training engine reads of it.

    The bytes are checked by :func:`snnprune.files.load` (the ``.sha256`` digest when there is one, the zip
    archive and its CRCs when there is none); the dict must hold ``model``, ``optimizer``, ``lr_scheduler``, ``scaler``
    and ``pruner`` (dicts), ``rng`` (the states of :func:`get_rng_state`), ``epoch`` and ``global_step``
    (integers >= 0) and, if present, a numeric ``best_top1``. Any problem is one :class:`CheckpointError` line
    naming the file (as given to ``name``, the option or function) and the key; tensors go to
    ``map_location``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{name}: checkpoint {str(path)!r} does not exist; pass an existing .pth file"
            + (" or --resume auto" if name == "--resume" else "")
        )
    try:
        state = files.load(path, map_location=map_location, weights_only=False)
    except files.CorruptFileError as exc:
        raise CheckpointError(
            f"{name}: checkpoint {str(path)!r} {exc.problem}; delete it or resume from another checkpoint "
            "(e.g. best.pth)"
        ) from None
    _check_keys(state, path, name)
    return state
