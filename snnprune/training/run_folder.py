"""The run folder: the one writer of a run's files (config.json, CSVs, TensorBoard, checkpoints, JSON).

Rules that live here and nowhere else:

* only the main process (rank 0) writes; on other ranks every method is a no-op;
* one process owns a folder: :class:`RunLock` (an exclusive ``fcntl.flock`` on ``.lock``) is taken before
  the folder is checked or written and held to the end of the run;
* starting: stale temp files of a killed write are removed; a new run (``--overwrite``) removes the
  previous run's files (:func:`run_files` and ``tb/``; files the user put there stay); a resumed run
  truncates its CSVs (atomically) to the checkpoint's epoch/step;
  whether a new run may start into the folder at all is decided before (``validation.check_run_folder``);
* every file is written atomically (temp file + rename) with the permissions of any new file;
* a checkpoint with a non-finite weight is never written, and a non-finite model is never ``best.pth``
  (the engine checks :func:`all_finite` on every rank before it calls :meth:`RunFolder.save_checkpoint`).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from snnprune import files
from snnprune.files import atomic_write, remove_stale_temp_files
from snnprune.structured import EXPORT_FILES
from snnprune.training.checkpoint import save_checkpoint
from snnprune.training.cli import ConfigError
from snnprune.training.validation import RUN_FILES

__all__ = [
    "LOCK_FILE",
    "METRICS_COLUMNS",
    "STEPS_COLUMNS",
    "RunFolder",
    "RunLock",
    "all_finite",
    "new_run_note",
    "run_files",
]

#: The lock file of a run folder (pid and command line of the process that holds it).
LOCK_FILE = ".lock"

METRICS_COLUMNS = (
    "epoch,lr,train_loss,train_top1,test_loss,test_top1,test_top5,sparsity,threshold,firing_rate,epoch_time_s"
).split(",")
STEPS_COLUMNS = ["step", "epoch", "lr", "threshold", "loss"]


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def all_finite(state_dict: dict[str, Any]) -> bool:
    """Whether every floating-point tensor of ``state_dict`` is finite (one host sync for all of them)."""
    flags = [
        torch.isfinite(t).all() for t in state_dict.values() if torch.is_tensor(t) and t.is_floating_point()
    ]
    return bool(torch.stack(flags).all()) if flags else True


def run_files() -> tuple[str, ...]:
    """Every file a run writes into its folder (besides ``tb/``): :data:`RUN_FILES`, the
    :data:`~snnprune.structured.EXPORT_FILES` of ``--export`` and their ``.sha256`` digests; ``--overwrite``
    removes exactly these (and ``tb/``)."""
    names = (*RUN_FILES, *EXPORT_FILES)
    return (*names, *(f"{n}.sha256" for n in names))


def new_run_note(run_dir: Path, shown: int = 4) -> str:
    """The one-line note of ``--resume auto`` without ``checkpoint.pth`` in ``run_dir``: a new run starts,
    and which folders beside it hold a checkpoint (newest first, at most ``shown``), so a run name that differs
    is seen at once."""
    run_dir = Path(run_dir)
    out = run_dir.parent
    found = (
        [p for p in out.iterdir() if p != run_dir and (p / "checkpoint.pth").is_file()]
        if out.is_dir()
        else []
    )
    found.sort(key=lambda p: (p / "checkpoint.pth").stat().st_mtime, reverse=True)
    if found:
        more = f" and {len(found) - shown} more" if len(found) > shown else ""
        beside = (
            f"run folders with a checkpoint in {str(out)!r}: {', '.join(p.name for p in found[:shown])}{more}"
        )
    else:
        beside = f"no run folder in {str(out)!r} has a checkpoint"
    return f"note: --resume auto found no checkpoint.pth in {str(run_dir)!r}, so a new run starts ({beside})"


def _holder(fd: int) -> str:
    """The pid in a held lock file (its holder writes it right after locking: wait up to 0.5 s for it)."""
    for _ in range(50):
        text = os.pread(fd, 4096, 0).decode(errors="replace")
        if text.endswith("\n"):
            break
        time.sleep(0.01)
    return text.split("\n")[0].strip() or "unknown"


class RunLock:
    """The exclusive lock of run ``folder``: ``fcntl.flock`` on ``<folder>/.lock``, taken without waiting.

    :meth:`acquire` creates the folder if needed, locks ``.lock`` and writes the holder's pid and command line
    into it; :meth:`release` (also the context-manager exit) removes the file, the folders it created (the run
    folder, a missing ``--output-dir``) when they are left empty, and unlocks. A killed run loses the lock with its process (the kernel drops it) and
    leaves at most a stale ``.lock`` that the next run takes over."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None
        self.created: list[Path] = []  # the folders acquire() made: the run folder, then missing parents

    def acquire(self) -> RunLock:
        """Take the lock (a :class:`ConfigError` naming the holder's pid when another process has it)."""
        while self.fd is None:
            if not self.folder.exists():
                self.created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
                self.folder.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder was removed by a run that just ended: again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise ConfigError(
                    f"--run-name: {str(self.folder)!r} is in use by another run (pid {holder}, its command "
                    f"line is in {LOCK_FILE}); wait for it to end or pick another --run-name"
                ) from None
            try:  # the file may have been removed (by the holder that just released it) since it was opened
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n{' '.join(sys.argv)}\n".encode())
            self.fd = fd
        return self

    def release(self) -> None:
        """Remove ``.lock`` (and the folders :meth:`acquire` created, when they are empty) and unlock."""
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:  # not empty: the run's files
                break
        os.close(self.fd)  # closing the descriptor drops the lock
        self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _csv_text(header: list[str] | None, rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    if header is not None:
        w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


class RunFolder:
    """Writes the files of the run in ``path`` (on the main process only: elsewhere every method is a no-op)."""

    def __init__(self, path: Path, main_process: bool = True) -> None:
        self.path = Path(path)
        self.main = main_process
        self.tb: Any = None

    # ------------------------------------------------------------------ start
    def start(self, config: dict[str, Any], *, resumed: tuple[int, int] | None, log: Any = print) -> None:
        """Create the folder and write ``config.json``; prepare the CSVs and TensorBoard. ``resumed``: the
        (last finished epoch, global step) of the checkpoint being resumed (its CSV rows after it are dropped), or
        None for a new run (the previous run's files, allowed by ``--overwrite``, are removed); ``log`` gets notes."""
        if not self.main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        for p in remove_stale_temp_files(self.path):
            log(f"removed {p.name}, left by an interrupted write")
        if resumed is None:
            for name in run_files():
                (self.path / name).unlink(missing_ok=True)
            shutil.rmtree(self.path / "tb", ignore_errors=True)
        else:
            epoch, step = resumed
            self._truncate(self.path / "metrics.csv", "epoch", epoch)
            self._truncate(self.path / "steps.csv", "step", step)
        _write_text(self.path / "config.json", json.dumps(config, indent=2, default=str))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.path / "tb"), purge_step=resumed[0] + 1 if resumed else None)
        except ImportError:  # pragma: no cover
            log("tensorboard not installed: no TensorBoard events (pip install tensorboard)")

    def _truncate(self, path: Path, column: str, keep_upto: int) -> None:
        """Drop rows with ``column > keep_upto`` (written after the checkpoint being resumed), atomically."""
        if not path.is_file():
            return
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = list(reader)
        if header is None or column not in header:
            return
        k = header.index(column)
        kept = [r for r in rows if len(r) == len(header) and r[k].isdigit() and int(r[k]) <= keep_upto]
        _write_text(path, _csv_text(header, kept))

    # ------------------------------------------------------------------ per epoch
    def _append(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        path = self.path / name
        new = not path.is_file()
        with open(path, "a", newline="") as f:
            f.write(_csv_text(header if new else None, rows))

    def write_epoch(self, row: dict[str, Any], step_rows: list[list[Any]]) -> None:
        """Append the epoch's :data:`METRICS_COLUMNS` ``row`` to ``metrics.csv``, its :data:`STEPS_COLUMNS`
        ``step_rows`` to ``steps.csv`` and the scalars to TensorBoard."""
        if not self.main:
            return
        self._append("metrics.csv", METRICS_COLUMNS, [[_fmt(row[c]) for c in METRICS_COLUMNS]])
        self._append("steps.csv", STEPS_COLUMNS, [[_fmt(v) for v in r] for r in step_rows])
        if self.tb is not None:
            for k in METRICS_COLUMNS[1:]:
                if not (isinstance(row[k], float) and math.isnan(row[k])):
                    self.tb.add_scalar(k, row[k], row["epoch"])
            self.tb.flush()

    def save_checkpoint(self, state: dict[str, Any], *, is_best: bool) -> None:
        """Write ``checkpoint.pth`` (and ``best.pth`` when ``is_best``); the engine has checked with
        :func:`all_finite` that every weight of ``state["model"]`` is finite (on every rank)."""
        if not self.main:
            return
        save_checkpoint(state, self.path / "checkpoint.pth")
        if is_best:
            save_checkpoint(state, self.path / "best.pth")

    # ------------------------------------------------------------------ end
    def write_json(self, name: str, data: Any) -> None:
        """Write ``name`` (e.g. ``summary.json``) atomically."""
        if self.main:
            _write_text(self.path / name, json.dumps(data, indent=2, default=str))

    def save_model(self, name: str, state_dict: dict[str, Any]) -> None:
        """Write a model state dict (e.g. ``model_sparse.pth``) atomically, with its ``.sha256`` digest."""
        if self.main:
            files.save(state_dict, self.path / name)

    def write_report(self, report: Any) -> None:
        """Write an :func:`snnprune.analyze` report as ``analyze.json``."""
        if self.main:
            _write_text(self.path / "analyze.json", json.dumps(report.to_dict(), indent=2, default=str))

    def close(self) -> None:
        """Close TensorBoard."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None
