"""Files that check themselves, and writes that never damage the previous file.

* :func:`atomic_write`: ``write(f)`` into a temp file in the same folder, fsync, rename into place. A
  failed or killed write leaves the previous file as it was; a full disk or a read-only folder is one
  line (:class:`DiskFullError`, :class:`PermissionError`).
* :func:`save` / :func:`load`: ``torch.save`` / ``torch.load`` with a SHA-256 digest beside the file
  (``<file>.sha256``, in ``sha256sum`` format, so ``sha256sum -c checkpoint.pth.sha256`` checks it too).
  :func:`load` refuses a file whose bytes do not match its recorded digest, and a file without a digest
  (written by plain ``torch.save``) whose zip archive is truncated or whose records fail their CRC-32, with
  one :class:`CorruptFileError` line instead of a zip or pickle error. :func:`load` always reads with
  ``torch.load(..., weights_only=True)``: loading runs no code, and a file that needs pickle's full power
  (Python objects other than tensors and plain values) is an :class:`UnsafeFileError` line.

:func:`save` removes the old digest before it renames the new file into place and writes the new digest
after: a crash in between leaves a file without a digest (checked by its zip CRCs only), never a file
with the wrong digest.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import pickle
import re
import secrets
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = [
    "CorruptFileError",
    "DiskFullError",
    "UnsafeFileError",
    "atomic_write",
    "digest_path",
    "load",
    "remove_stale_temp_files",
    "save",
    "verify_digest",
    "write_digest",
]

#: what :class:`CorruptFileError` suggests unless the caller knows better
RESTORE = "restore it from a backup, use the previous checkpoint, or export it again"

_DIGEST_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


class CorruptFileError(ValueError):
    """A file is damaged: its bytes differ from its recorded SHA-256, or its contents are not what its
    writer writes (a truncated zip, a failed CRC-32, an inconsistent structure).

    The message is one line: ``<file>: <problem>; <fix>``.

    Args:
        path: the damaged file.
        problem: what is wrong (e.g. ``"is corrupt: its SHA-256 does not match ..."``).
        fix: what to do.

    Attributes:
        path: the damaged file.
        problem: what is wrong.
        fix: what to do.
    """

    def __init__(self, path: str | os.PathLike, problem: str, fix: str = RESTORE) -> None:
        super().__init__(str(path), problem, fix)
        self.path, self.problem, self.fix = Path(path), problem, fix

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}; {self.fix}"


class UnsafeFileError(CorruptFileError):
    """A file needs pickle to load (it holds Python objects, not only tensors and plain values); nothing in
    it was run. A file one trusts is rewritten once with :func:`upgrade`."""


class DiskFullError(OSError):
    """A write failed because the file system is full (``ENOSPC``/``EDQUOT``); the previous file is kept.

    The message is one line naming the file, the free space and, when known, the bytes needed.
    """

    def __str__(self) -> str:
        return str(self.strerror)


def digest_path(path: str | os.PathLike) -> Path:
    """The digest file that :func:`save` writes beside ``path``: ``<path>.sha256``.

    Args:
        path: a file written by :func:`save`.

    Returns:
        ``path`` with ``.sha256`` appended to its name.
    """
    path = Path(path)
    return path.with_name(path.name + ".sha256")


#: a temp file of :func:`atomic_write`: ``.<name>.<pid>.<8 hex digits>.tmp`` (unique to the writing process)
_TEMP_NAME = re.compile(r"\.(.+)\.([0-9]+)\.([0-9a-f]{8})\.tmp")


def _temp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid <= 2**31  # another user's live process; a pid beyond any real one is not running
    return True


def _disk_full(exc: BaseException, free: int, needed: int | None) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    # torch.save writing to a path raises RuntimeError from inline_container.cc, without the errno
    return (
        isinstance(exc, RuntimeError) and "inline_container" in str(exc) and free < max(needed or 0, 1 << 20)
    )


def _write_error(exc: BaseException, path: Path, needed: int | None) -> BaseException | None:
    """A one-line error for a full disk or a read-only folder, or None (``exc`` is raised as it is)."""
    folder = path.parent
    if isinstance(exc, PermissionError):
        return PermissionError(
            f"{folder}: cannot write {path.name} in this folder (permission denied); make the folder "
            "writable or write elsewhere",
        )
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if not _disk_full(exc, free, needed):
        return None
    need = f", about {needed:,} bytes needed" if needed else ""
    return DiskFullError(
        errno.ENOSPC,
        f"{path}: the disk is full ({free:,} bytes free on the file system of {folder}{need}); free space or "
        "write elsewhere",
    )


@contextlib.contextmanager
def _clean_failure(tmp: Path, path: Path, needed: int | None) -> Iterator[None]:
    """On an exception: remove ``tmp`` and raise the one-line error of a full disk or a read-only folder
    (any other error as it is)."""
    try:
        yield
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        clear = _write_error(exc, path, needed)
        if clear is None:
            raise
        raise clear from None


def _write_temp(path: Path, write: Callable[[BinaryIO], None], needed: int | None) -> Path:
    """``write(f)`` into a new temp file beside ``path``, fsync; the temp path (removed on an exception)."""
    tmp = _temp_path(path)
    with _clean_failure(tmp, path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return tmp


def _replace(tmp: Path, path: Path) -> None:
    with _clean_failure(tmp, path, None):
        os.replace(tmp, path)


def atomic_write(
    path: str | os.PathLike, write: Callable[[BinaryIO], None], *, needed: int | None = None
) -> Path:
    """Write a file atomically: ``write(f)`` into a temp file in the same folder, fsync, ``os.replace``.

    A failure mid-write leaves the previous file intact (the rename is atomic on POSIX and Windows); the temp
    file (``.<name>.<pid>.<hex>.tmp``) is removed on an exception, and a kill leaves it for
    :func:`remove_stale_temp_files`. The file gets the permissions of any new file (``0666 & ~umask``).

    Args:
        path: destination file.
        write: called with the open binary temp file.
        needed: the expected size in bytes, for the message of a full disk (None: unknown).

    Returns:
        The destination path.

    Raises:
        DiskFullError: the file system is full (the message names the file and the free space).
        PermissionError: the folder is not writable (the message names the folder).
    """
    path = Path(path)
    _replace(_write_temp(path, write, needed), path)
    return path


def remove_stale_temp_files(folder: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """Delete the temp files (``.<name>.<pid>.<8 hex>.tmp``) that a killed :func:`atomic_write` left in
    ``folder``: regular files (not symlinks) with exactly that form, of a process that is no longer running,
    and (when ``names`` is given) of one of those destination names. No other file is touched.

    Args:
        folder: a folder with a single writer (e.g. a run folder).
        names: the destination names whose temp files may be removed (None: any).

    Returns:
        The removed paths.
    """
    folder = Path(folder)
    allowed = None if names is None else set(names)
    removed = []
    if folder.is_dir() and not folder.is_symlink():
        for p in folder.iterdir():
            m = _TEMP_NAME.fullmatch(p.name)
            if m is None or (allowed is not None and m.group(1) not in allowed):
                continue
            if not stat.S_ISREG(os.lstat(p).st_mode) or _running(int(m.group(2))):
                continue
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _tensor_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of the tensor storages in ``obj`` (nested dicts, lists, tuples), each storage counted once."""
    seen = set() if seen is None else seen
    if torch.is_tensor(obj):
        storage = obj.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in obj)
    return 0


class _Hashing:
    """A binary file that feeds what is written to a SHA-256 too, so the file is never read back."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def save(obj: Any, path: str | os.PathLike | BinaryIO) -> Path | BinaryIO:
    """``torch.save`` ``obj`` atomically with its SHA-256 digest beside it (read back with :func:`load`).

    The data goes into a temp file in the same folder (fsync) and is hashed as it is written, the old digest file
    is removed, the temp file is renamed to ``path``, and ``<path>.sha256`` (``"<hex>  <name>\\n"``, the
    ``sha256sum`` format) is written atomically. A failed write (e.g. a full disk) leaves the previous file
    and its digest untouched; a failure at the rename or at the digest leaves a file without a digest
    (which :func:`load` checks by its zip CRCs), never one with a wrong digest.

    Args:
        obj: what ``torch.save`` accepts (e.g. a dict of state_dicts).
        path: destination file, or an open binary file object (then plain ``torch.save``: no digest).

    Returns:
        ``path`` (as a :class:`~pathlib.Path` when a path was given).

    Raises:
        DiskFullError: the file system is full (the message names the file, the free space and about how
            many bytes the tensors need).
        PermissionError: the folder is not writable.
    """
    if hasattr(path, "write"):
        torch.save(obj, path)
        return path
    path = Path(path)
    hashing: list[_Hashing] = []

    def write(f: BinaryIO) -> None:
        hashing.append(_Hashing(f))
        torch.save(obj, hashing[-1])

    tmp = _write_temp(path, write, _tensor_bytes(obj))
    hexdigest = hashing[-1].sha256.hexdigest()
    try:
        digest_path(path).unlink(missing_ok=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _replace(tmp, path)
    line = f"{hexdigest}  {path.name}\n"
    atomic_write(digest_path(path), lambda f: f.write(line.encode()))
    return path


def _recorded_digest(path: Path) -> str | None:
    """The hex digest recorded beside ``path`` (None: no digest file)."""
    dpath = digest_path(path)
    try:
        if os.path.lexists(dpath) and not stat.S_ISREG(os.stat(dpath).st_mode):
            raise CorruptFileError(
                path,
                f"has a digest {dpath.name} that is not a regular file",
                f"remove {dpath.name} (and restore both files)",
            )
        with open(dpath, "rb") as f:
            text = f.read(4096).decode("ascii", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptFileError(
            path,
            f"has an unreadable digest file {dpath.name} ({exc.strerror})",
            f"make {dpath.name} readable",
        ) from None
    match = _DIGEST_LINE.fullmatch(text.strip())
    if match is not None and match.group(2).lstrip("*") != path.name:
        raise CorruptFileError(
            path,
            f"has a digest file {dpath.name} that names another file ({match.group(2)[:60]!r}, not {path.name!r})",
            f"restore both files, or delete {dpath.name} if {path.name} is known to be good",
        )
    if match is None:
        raise CorruptFileError(
            path,
            f"has a damaged digest file {dpath.name} (not one line '<64 hex digits>  {path.name}')",
            f"restore both files, or delete {dpath.name} if {path.name} is known to be good",
        )
    return match.group(1)


def _check_digest(data: bytes, path: Path) -> bool:
    """With a digest file beside ``path``, the SHA-256 of ``data`` must match it; whether there is one."""
    recorded = _recorded_digest(path)
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
        raise CorruptFileError(
            path, f"is corrupt: its SHA-256 does not match the one recorded in {digest_path(path).name}"
        )
    return recorded is not None


def write_digest(path: str | os.PathLike) -> Path:
    """Write ``<path>.sha256`` (atomically) for a file another library wrote, e.g. a ``.nir`` file.

    Args:
        path: an existing file.

    Returns:
        The digest file.
    """
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    line = f"{h.hexdigest()}  {path.name}\n"
    return atomic_write(digest_path(path), lambda f: f.write(line.encode()))


def verify_digest(path: str | os.PathLike) -> bool:
    """Check a file against ``<path>.sha256`` when there is one.

    Args:
        path: an existing file.

    Returns:
        Whether a digest vouched for the bytes (False: no digest file).

    Raises:
        CorruptFileError: the bytes differ from the digest, or the digest file is damaged or names another
            file.
    """
    path = Path(path)
    return _check_digest(path.read_bytes(), path)


def _check_zip(data: bytes, path: Path) -> None:
    """``data`` is a complete zip archive (as ``torch.save`` writes) whose records pass their CRC-32."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CorruptFileError(
            path,
            f"is corrupt: not a complete zip archive, as torch.save writes ({type(exc).__name__}: {exc})",
        ) from None
    if bad is not None:
        raise CorruptFileError(path, f"is corrupt: its record {bad!r} fails its CRC-32 check")


def _is_pickle_refusal(exc: BaseException) -> bool:
    """Whether ``torch.load(..., weights_only=True)`` refused a global that only full pickle would call."""
    return isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc)


def load(path: str | os.PathLike | BinaryIO, *, map_location: Any = "cpu") -> Any:
    """``torch.load(..., weights_only=True)`` a file after checking its bytes: its digest, or else its zip
    archive and CRC-32s.

    Policy: a file with a digest beside it must match it (and is then loaded as it is); a file without one (written by plain
    ``torch.save``, or by a :func:`save` interrupted between its rename and its digest) is loaded when its
    zip archive is complete and its CRCs pass. The file is read into memory once, so what is checked is
    what is loaded (``mmap=True`` is not supported). A digest proves the bytes are intact, not that they are
    safe: loading never runs code from the file (``weights_only=True`` always; tensors go to the CPU unless
    ``map_location`` says otherwise).

    Args:
        path: a file written by :func:`save` or ``torch.save``, or an open binary file object (read from
            its position; no digest, the zip checks only).
        map_location: ``torch.load``'s (default: the CPU). No other ``torch.load`` argument is taken: the
            load is always ``weights_only=True``, with no way to ask for pickle.

    Returns:
        What ``torch.load`` returns.

    Raises:
        FileNotFoundError: no such file.
        UnsafeFileError: the file needs pickle to load (nothing in it was run).
        CorruptFileError: the checks fail, or ``torch.load`` cannot read the checked bytes.
    """
    digested = False
    if hasattr(path, "read"):
        data, path = path.read(), Path(str(getattr(path, "name", "<file object>")))
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; pass the path of an existing file")
        data = path.read_bytes()
        digested = _check_digest(data, path)
    if not digested:  # a matching digest says the bytes are those written: no zip check needed
        _check_zip(data, path)
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location=map_location)
    except Exception as exc:
        if _is_pickle_refusal(exc):
            raise UnsafeFileError(
                path,
                "needs pickle to load (it holds Python objects, not only tensors and plain values), and "
                "loading runs no code, so nothing in it was run",
                "an older snnprune checkpoint (NumPy RNG state) is rewritten once with snnprune.upgrade_checkpoint(path)",
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CorruptFileError(
            path, f"is corrupt: torch.load cannot read it ({type(exc).__name__}: {first})"
        ) from None
