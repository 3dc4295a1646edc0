"""The run folder: the one writer of a run's files (config.json, CSVs, TensorBoard, checkpoints, JSON).

Rules that live here and nowhere else:

* only the main process (rank 0) writes; on other ranks every method is a no-op;
* one process owns a folder: :class:`RunLock` (an exclusive ``fcntl.flock`` on ``.lock``) is taken before
  the folder is checked or written and held to the end of the run;
* the run touches only what it wrote: :data:`MANIFEST_FILE` lists every file it wrote (:func:`run_files`
  present in the folder and the files under ``tb/``) with its SHA-256, updated after each write; the lock
  and the CSVs are opened without following symlinks and must be regular files;
* starting: stale temp files of a killed write (of the run's own file names) are removed; a new run
  (``--overwrite``) removes exactly the files of the previous run's manifest (files the user put there
  stay); a resumed run truncates its CSVs (atomically) to the checkpoint's epoch/step;
  whether a new run may start into the folder at all is decided before (:func:`check_run_folder`);
* every file is written atomically (temp file + rename) with the permissions of any new file;
* a checkpoint with a non-finite weight is never written, and a non-finite model is never ``best.pth``
  (the engine checks :func:`all_finite` on every rank before it calls :meth:`RunFolder.save_checkpoint`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import torch

from snnprune import files
from snnprune.files import atomic_write, remove_stale_temp_files
from snnprune.structured import EXPORT_FILES
from snnprune.training.cli import ConfigError

__all__ = [
    "LOCK_FILE",
    "MANIFEST_FILE",
    "METRICS_COLUMNS",
    "RUN_FILES",
    "STEPS_COLUMNS",
    "RunFolder",
    "RunLock",
    "all_finite",
    "check_output",
    "check_run_folder",
    "holds_run",
    "new_run_note",
    "read_manifest",
    "run_files",
]

#: The lock file of a run folder (pid and command line of the process that holds it).
LOCK_FILE = ".lock"

#: The files a run wrote into its folder, with their SHA-256 (``{"files": {name: hex}}``); ``--overwrite``
#: removes exactly these.
MANIFEST_FILE = "run_manifest.json"

METRICS_COLUMNS = (
    "epoch,lr,train_loss,train_top1,test_loss,test_top1,test_top5,sparsity,threshold,firing_rate,epoch_time_s"
).split(",")
STEPS_COLUMNS = ["step", "epoch", "lr", "threshold", "loss"]

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
    """Every file a run writes into its folder besides ``tb/``: :data:`RUN_FILES`, the
    :data:`~snnprune.structured.EXPORT_FILES` of ``--export`` and their ``.sha256`` digests."""
    names = (*RUN_FILES, *EXPORT_FILES)
    return (*names, *(f"{n}.sha256" for n in names))


def new_run_note(run_dir: Path, shown: int = 4) -> str:
    """The one-line note of ``--resume auto`` without ``checkpoint.pth`` in ``run_dir``: a new run starts,
    and which folders beside it hold a checkpoint (newest first, at most ``shown``), so a run name that differs
    is seen at once."""
    run_dir = Path(run_dir)
    out = run_dir.parent
    checkpoints = [c for c in out.glob("*/checkpoint.pth") if c.parent != run_dir and c.is_file()]
    found = [c.parent for c in sorted(checkpoints, key=lambda c: c.stat().st_mtime, reverse=True)]
    if found:
        names = ", ".join(p.name for p in found[:shown])
        more = f" and {len(found) - shown} more" if len(found) > shown else ""
        beside = f"run folders with a checkpoint in {str(out)!r}: {names}{more}"
    else:
        beside = f"no run folder in {str(out)!r} has a checkpoint"
    return f"note: --resume auto found no checkpoint.pth in {str(run_dir)!r}, so a new run starts ({beside})"


def _manifest_name_ok(name: Any) -> bool:
    """A name a run writes: one of :func:`run_files`, or a plain file name under ``tb/``."""
    if not isinstance(name, str):
        return False
    if name in run_files():
        return True
    head, _, tail = name.partition("/")
    return head == "tb" and tail not in ("", ".", "..") and "/" not in tail and "\\" not in tail


def read_manifest(folder: Path) -> dict[str, str] | None:
    """The files of :data:`MANIFEST_FILE` in ``folder`` (name -> SHA-256 hex), or None when there is none; a
    damaged manifest, or one naming a file a run does not write, is a :class:`ConfigError`."""
    path = Path(folder) / MANIFEST_FILE
    if not os.path.lexists(path):
        return None
    fix = f"remove the run's files yourself (and {MANIFEST_FILE}), or pick another --run-name"
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise ValueError("not a regular file")
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise ConfigError(f"--run-name: {str(path)!r} is damaged ({exc}); {fix}") from None
    entries = data.get("files") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not all(
        _manifest_name_ok(k) and isinstance(v, str) for k, v in entries.items()
    ):
        raise ConfigError(
            f"--run-name: {str(path)!r} is not a run manifest (a 'files' object of the run's own file names); "
            f"{fix}"
        )
    return dict(entries)


def _digest_of(path: Path) -> str:
    """The SHA-256 of ``path``: the one its ``.sha256`` records (written with it), else of its bytes."""
    dpath = files.digest_path(path)
    if dpath.is_file() and not dpath.is_symlink():
        line = dpath.read_text(errors="replace").split(" ")[0]
        if len(line) == 64:
            return line
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _holder(fd: int) -> str:
    """The pid in a held lock file (its holder writes it right after locking: wait up to 0.5 s for it)."""
    for _ in range(50):
        text = os.pread(fd, 4096, 0).decode(errors="replace")
        if text.endswith("\n"):
            break
        time.sleep(0.01)
    return text.split("\n")[0].strip() or "unknown"


class RunLock:
    """The exclusive lock of run ``folder``: ``fcntl.flock`` on ``<folder>/.lock`` (which holds the holder's
    pid and command line), taken without waiting and released on exit. A killed run loses the lock with its
    process (the kernel drops it) and leaves at most a stale ``.lock`` that the next run takes over."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None
        self.created: list[Path] = []  # the folders acquire() made: the run folder, then missing parents

    def acquire(self) -> RunLock:
        """Create the folder if needed and take the lock (a :class:`ConfigError` naming the holder's pid when
        another process has it)."""
        while self.fd is None:
            if not self.folder.exists():
                self.created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
                self.folder.mkdir(parents=True, exist_ok=True)
            try:  # never through a symlink, and only a regular file: the run writes only what it owns
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
            except FileNotFoundError:  # the folder was removed by a run that just ended: again
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EMLINK):
                    raise
                raise ConfigError(
                    f"--run-name: {str(self.path)!r} is not a regular file the run can lock ({exc.strerror}: "
                    f"a symlink or another kind of file); remove it or pick another --run-name"
                ) from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise ConfigError(
                    f"--run-name: {str(self.path)!r} is not a regular file; remove it or pick another --run-name"
                )
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
        """Remove ``.lock`` and the folders :meth:`acquire` created (the run folder, a missing
        ``--output-dir``) when they are empty, and unlock."""
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


def holds_run(folder: Path) -> list[str]:
    """The run files (:data:`RUN_FILES`, ``tb/``) present in ``folder``; empty when it holds no run."""
    return [f for f in RUN_FILES if (folder / f).exists()] + (["tb/"] if (folder / "tb").is_dir() else [])


def check_output(run_dir: Path) -> None:
    """The run folder ``run_dir`` can be created and written (else a :class:`ConfigError`: a file in the way,
    no write permission)."""
    for p, opt in ((run_dir.parent, "--output-dir"), (run_dir, "--run-name")):
        if p.is_symlink() and not p.exists():
            raise ConfigError(f"{opt}: {str(p)!r} is a dangling symlink; remove it or pass another {opt}")
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{opt}: {str(p)!r} is a file, not a folder; pass another {opt}")
    probe = next((p for p in (run_dir, *run_dir.parents) if p.exists()), Path())  # the nearest existing one
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
    present = holds_run(run_dir)
    if args.overwrite:
        if present and read_manifest(run_dir) is None:
            raise ConfigError(
                f"--overwrite: {str(run_dir)!r} has files with a run's names ({', '.join(present)}) but no "
                f"{MANIFEST_FILE}, so nothing shows that a run wrote them; remove them yourself or pick "
                "another --run-name"
            )
        return
    if not present or (resume_path is not None and resume_path.resolve().parent == run_dir.resolve()):
        return
    finished = set(present) & {"checkpoint.pth", "best.pth", "metrics.csv", "summary.json"}
    if args.resume == "auto" and resume_path is None and not finished:
        return  # killed before its first checkpoint: nothing finished to lose
    raise ConfigError(
        f"--run-name: {str(run_dir)!r} already holds a run ({', '.join(present)}); continue it with "
        "--resume auto, pick a new --run-name, or pass --overwrite to replace it"
    )


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _csv_text(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
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
        for p in remove_stale_temp_files(self.path, (*run_files(), MANIFEST_FILE)):
            log(f"removed {p.name}, left by an interrupted write")
        tb = self.path / "tb"
        if tb.is_symlink() or (tb.exists() and not tb.is_dir()):
            raise ConfigError(
                f"--run-name: {str(tb)!r} is not a folder; remove it or pick another --run-name"
            )
        if resumed is None:
            for name in read_manifest(self.path) or {}:  # exactly the files the previous run wrote
                p = self.path / name
                if os.path.lexists(p) and stat.S_ISREG(os.lstat(p).st_mode):
                    p.unlink()
            with contextlib.suppress(OSError):
                tb.rmdir()  # when empty
            (self.path / MANIFEST_FILE).unlink(missing_ok=True)
        else:
            epoch, step = resumed
            self._truncate(self.path / "metrics.csv", "epoch", epoch)
            self._truncate(self.path / "steps.csv", "step", step)
        self.write_json("config.json", config)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(self.path / "tb"), purge_step=resumed[0] + 1 if resumed else None)

    def _record(self) -> None:
        """Rewrite :data:`MANIFEST_FILE` (after every write, on the main process): every :func:`run_files`
        name in the folder and every file under ``tb/``, with its SHA-256 (all written by this run or the run
        it resumes)."""
        names = [n for n in run_files() if (self.path / n).is_file() and not (self.path / n).is_symlink()]
        tb = self.path / "tb"
        if tb.is_dir() and not tb.is_symlink():
            names += sorted(f"tb/{p.name}" for p in tb.iterdir() if p.is_file() and not p.is_symlink())
        entries = {n: _digest_of(self.path / n) for n in names}
        _write_text(self.path / MANIFEST_FILE, json.dumps({"files": entries}, indent=1))

    def _truncate(self, path: Path, column: str, keep_upto: int) -> None:
        """Drop rows with ``column > keep_upto`` (written after the checkpoint being resumed), atomically."""
        if not path.is_file():
            return
        with open(path, newline="") as f:
            header, *rows = list(csv.reader(f)) or [[]]  # an empty file: no header
        if column not in header:
            return
        k = header.index(column)
        kept = [r for r in rows if len(r) == len(header) and r[k].isdigit() and int(r[k]) <= keep_upto]
        _write_text(path, _csv_text([header, *kept]))

    # ------------------------------------------------------------------ per epoch
    def _append(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        path = self.path / name
        new = not path.is_file()
        fix = "remove it and resume the run"
        try:  # never through a symlink
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
        except OSError as exc:
            raise ConfigError(
                f"{path}: not a regular file the run can append to ({exc.strerror}); {fix}"
            ) from None
        with open(fd, "a", newline="") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"{path}: not a regular file; {fix}")
            f.write(_csv_text([header, *rows] if new else rows))

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
        """Write ``checkpoint.pth`` (and ``best.pth`` if ``is_best``); its model passed :func:`all_finite`."""
        if not self.main:
            return
        files.save(state, self.path / "checkpoint.pth")
        if is_best:
            files.save(state, self.path / "best.pth")
        self._record()

    # ------------------------------------------------------------------ end
    def write_json(self, name: str, data: Any) -> None:
        """Write ``name`` (e.g. ``summary.json``, ``analyze.json``) atomically."""
        if self.main:
            _write_text(self.path / name, json.dumps(data, indent=2, default=str))
            self._record()

    def save_model(self, name: str, state_dict: dict[str, Any]) -> None:
        """Write a model state dict (e.g. ``model_sparse.pth``) atomically, with its ``.sha256`` digest."""
        if self.main:
            files.save(state_dict, self.path / name)
            self._record()

    def close(self) -> None:
        """Close TensorBoard."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None
