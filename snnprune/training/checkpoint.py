"""Checkpoints (one dict of state_dicts) that check themselves, and RNG-state capture for exact resume.

:func:`save_checkpoint` writes with :func:`snnprune.files.save` (atomic, with a ``.sha256`` digest beside
the file); :func:`load_checkpoint` reads with :func:`snnprune.files.load` and checks every key the training
engine reads, so a damaged or incomplete checkpoint is one :class:`CheckpointError` line.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnprune import files

__all__ = [
    "CheckpointError",
    "TrainState",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
    "upgrade_checkpoint",
]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not a snnprune training checkpoint."""


def _is_dict(v: Any) -> bool:
    return isinstance(v, dict)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _set_states(state: Any, python: Any, numpy: Any, generator: Any) -> None:
    """Set the ``python``, ``numpy`` and torch CPU ``generator`` states of a :func:`get_rng_state` dict."""
    version, internal, gauss = state["python"]
    python.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    numpy.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    generator.set_state(state["torch"])


def _is_rng(v: Any) -> bool:
    """The form of :func:`get_rng_state`: fresh generators take it (before it reaches the global ones)."""
    if not isinstance(v, dict):
        return False
    try:
        _set_states(v, random.Random(), np.random.RandomState(), torch.Generator())
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, RuntimeError):
        return False
    return True


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(kw_only=True)
class TrainState:
    """The state of a training run after an epoch: the one schema of a checkpoint, which the engine writes
    (:meth:`as_dict`, a plain dict of state_dicts) and reads back to resume (:meth:`of`), and whose fields
    :func:`load_checkpoint` checks (each field's ``what`` and check; ``best_top1``, ``args`` and ``kind``
    may be absent from an older checkpoint)."""

    model: dict[str, Any] = field(metadata={"what": "the model's state_dict", "ok": _is_dict})
    optimizer: dict[str, Any] = field(metadata={"what": "the optimizer's state_dict", "ok": _is_dict})
    lr_scheduler: dict[str, Any] = field(metadata={"what": "the lr scheduler's state_dict", "ok": _is_dict})
    scaler: dict[str, Any] = field(metadata={"what": "the grad scaler's state_dict", "ok": _is_dict})
    pruner: dict[str, Any] = field(metadata={"what": "the pruner's state_dict", "ok": _is_dict})
    rng: dict[str, Any] = field(
        metadata={"what": "the random number generator states of get_rng_state", "ok": _is_rng}
    )
    epoch: int = field(metadata={"what": "the last finished epoch, an integer >= 0", "ok": _is_count})
    global_step: int = field(
        metadata={"what": "the optimizer steps so far, an integer >= 0", "ok": _is_count}
    )
    best_top1: float = field(default=-1.0, metadata={"what": "a number", "ok": _is_number})
    args: dict[str, Any] | None = None  #: the run's options (none in the oldest checkpoints)
    kind: str | None = None  #: ``"snn"`` or ``"ann"``

    def as_dict(self) -> dict[str, Any]:
        """The checkpoint's dict (the fields as they are: no copy of the state_dicts)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def of(cls, state: dict[str, Any]) -> TrainState:
        """The state of a checkpoint checked by :func:`load_checkpoint` (absent optional fields: defaults)."""
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})


def _check_keys(state: Any, path: Path, name: str) -> None:
    """One :class:`CheckpointError` line for the first missing or bad field of :class:`TrainState`."""
    fix = "pass a checkpoint.pth/best.pth written by the training scripts"
    where = f"{name}: checkpoint {str(path)!r}"
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{where} is not a snnprune training checkpoint (a {type(state).__name__}, not a dict); {fix}"
        )
    for f in fields(TrainState):
        if "ok" not in f.metadata or (f.name not in state and f.default is not MISSING):
            continue
        what = f.metadata["what"]
        if f.name not in state:
            raise CheckpointError(
                f"{where} is not a snnprune training checkpoint: it has no {f.name!r} ({what}); {fix}"
            )
        if not f.metadata["ok"](state[f.name]):
            value = state[f.name]
            shown = f"a dict of {sorted(map(str, value))}" if isinstance(value, dict) else repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise CheckpointError(f"{where} has a bad {f.name!r}: {shown}, not {what}; {fix}")


def _plain_rng(python: Any, numpy: Any) -> tuple[list[Any], list[Any]]:
    """Python's and NumPy's RNG states (also those of an older checkpoint: tuples and a NumPy array) as
    tensors and plain values only, so that a checkpoint loads with ``weights_only=True``: ``[version, [ints],
    gauss]`` and ``[name, int64 tensor, pos, has_gauss, cached_gaussian]``."""
    version, internal, gauss = python
    name, keys, pos, has_gauss, cached = numpy
    keys = keys if torch.is_tensor(keys) else torch.from_numpy(np.asarray(keys).astype(np.int64))
    plain = [int(version), [int(v) for v in internal], gauss]
    return plain, [str(name), keys, int(pos), int(has_gauss), float(cached)]


def get_rng_state() -> dict[str, Any]:
    """The RNG states of Python, NumPy, torch CPU and (if available) every CUDA device, for
    :func:`set_rng_state`."""
    python, numpy = _plain_rng(random.getstate(), np.random.get_state())  # noqa: NPY002 (the global RNG)
    state: dict[str, Any] = {"python": python, "numpy": numpy, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by :func:`get_rng_state`."""
    _set_states(state, random, np.random, torch.default_generator)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


#: Write a checkpoint with :func:`snnprune.files.save`: atomically, with ``<path>.sha256`` beside it (a full
#: disk or a read-only folder raises and leaves the previous checkpoint unchanged).
save_checkpoint = files.save


def load_checkpoint(path: str | os.PathLike, *, name: str = "--resume") -> dict[str, Any]:
    """Read a checkpoint onto the CPU with :func:`snnprune.files.load` (which checks the bytes) and check the
    fields of :class:`TrainState`; any problem is one :class:`CheckpointError` line naming ``name`` (the
    option or function), the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{name}: checkpoint {str(path)!r} does not exist; pass an existing .pth file"
            + (" or --resume auto" if name == "--resume" else "")
        )
    try:
        state = files.load(path)
    except files.UnsafeFileError as exc:
        raise CheckpointError(f"{name}: checkpoint {str(path)!r} {exc.problem}; {exc.fix}") from None
    except files.CorruptFileError as exc:
        raise CheckpointError(
            f"{name}: checkpoint {str(path)!r} {exc.problem}; delete it or resume from another checkpoint "
            "(e.g. best.pth)"
        ) from None
    _check_keys(state, path, name)
    return state


#: What the NumPy RNG state of an older checkpoint needs beyond tensors and plain values: NumPy's array
#: reconstructor, ``ndarray`` and the ``uint32`` dtype, allowlisted for ``weights_only`` loading (they build
#: arrays and call nothing else).
_OLD_RNG_GLOBALS = [np.empty(0).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def upgrade_checkpoint(path: str | os.PathLike) -> Path:
    """Rewrite a checkpoint written before checkpoints held only tensors and plain values (its NumPy RNG
    state was pickled as a NumPy array), so that :func:`load_checkpoint` reads it. It loads with
    ``weights_only=True`` like every other load, with only NumPy's array globals allowed besides: nothing in
    the file runs, and a file that needs anything else is refused.

    Args:
        path: the checkpoint (its ``.sha256``, when present, must match).

    Returns:
        ``path``, rewritten with :func:`save_checkpoint` (a new ``.sha256`` beside it).

    Raises:
        CheckpointError: the file is missing, corrupt, needs more than NumPy arrays to load, or is not a
            snnprune training checkpoint.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_OLD_RNG_GLOBALS):
            state = files.load(path)
    except FileNotFoundError:
        raise CheckpointError(
            f"upgrade_checkpoint: {str(path)!r} does not exist; pass an existing .pth file"
        ) from None
    except files.CorruptFileError as exc:
        raise CheckpointError(f"upgrade_checkpoint: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("rng"), dict):
        rng = state["rng"]
        with contextlib.suppress(TypeError, ValueError, KeyError):  # a bad one is named by _check_keys
            rng["python"], rng["numpy"] = _plain_rng(rng["python"], rng["numpy"])
    _check_keys(state, path, "upgrade_checkpoint")
    return save_checkpoint(state, path)
