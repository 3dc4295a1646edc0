"""Atomic checkpoints (one dict of state_dicts) and RNG-state capture for exact resume."""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "atomic_write",
    "get_rng_state",
    "load_checkpoint",
    "remove_stale_temp_files",
    "save_checkpoint",
    "set_rng_state",
]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not a snnprune training checkpoint."""


_REQUIRED_KEYS = ("model", "epoch", "global_step")


def get_rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy, torch CPU and (if available) every CUDA device.

    Returns:
        A dict that :func:`set_rng_state` restores.
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the global RNG is what we restore)
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by :func:`get_rng_state`.

    Args:
        state: the dict from :func:`get_rng_state`.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _temp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file atomically: ``write(f)`` into a temp file in the same folder, fsync, ``os.replace``.

    A crash mid-write leaves the previous file intact (the rename is atomic on POSIX and Windows); the temp
    file (``.<name>.<hex>.tmp``) is removed on an exception, and a kill leaves it for
    :func:`remove_stale_temp_files`. The file gets the permissions of any new file (``0666 & ~umask``),
    like the other files of the run.

    Args:
        path: destination file.
        write: called with the open binary temp file.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files (``.<name>.<suffix>.tmp``) that a killed :func:`atomic_write` left in ``folder``.

    Args:
        folder: a run folder (only one process may write to it, so every such file is stale).

    Returns:
        The removed paths.
    """
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.name.count(".") >= 3 and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` atomically with :func:`atomic_write` (``torch.save`` into a temp file, then rename).

    Args:
        state: the checkpoint dict (state_dicts and plain values).
        path: destination file.

    Returns:
        The destination path.
    """
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(
    path: str | os.PathLike, *, name: str = "--resume", map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: checkpoint file.
        name: what the errors name as the source of ``path`` (the option or function that was given it).
        map_location: where the tensors are loaded.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: missing file, corrupt/truncated file, or a dict without the training keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{name}: checkpoint {str(path)!r} does not exist; pass an existing .pth file"
            + (" or --resume auto" if name == "--resume" else "")
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise CheckpointError(
            f"{name}: checkpoint {str(path)!r} is corrupt or not a torch file ({type(exc).__name__}: {exc}); "
            "delete it or resume from another checkpoint (e.g. best.pth)"
        ) from None
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED_KEYS):
        raise CheckpointError(
            f"{name}: {str(path)!r} is not a snnprune training checkpoint (needs keys {_REQUIRED_KEYS}); "
            "pass a checkpoint.pth/best.pth written by the training scripts"
        )
    return state
