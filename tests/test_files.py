"""Files that check themselves (snnprune.files) and checkpoints: digests, damaged files, full disks."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from snnprune import files
from snnprune.files import CorruptFileError, DiskFullError, atomic_write, digest_path
from snnprune.training import CheckpointError, load_checkpoint, save_checkpoint
from snnprune.training.checkpoint import TrainState, get_rng_state

STATE = {"w": torch.randn(2000), "h": torch.arange(6).half().view(2, 3), "n": torch.tensor(3)}


def _checkpoint(**changes: object) -> dict:
    """A checkpoint with every key the training engine writes (``changes``: replaced; None: removed)."""
    ckpt = {
        "model": {"w": torch.randn(2000)},
        "optimizer": {"state": {}, "param_groups": []},
        "lr_scheduler": {"last_epoch": 1},
        "scaler": {},
        "pruner": {"method": "slats", "step_count": 2},
        "epoch": 0,
        "global_step": 2,
        "best_top1": 50.0,
        "rng": get_rng_state(),
        "args": {},
        "kind": "snn",
    }
    for key, value in changes.items():
        if value is None:
            del ckpt[key]
        else:
            ckpt[key] = value
    return ckpt


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _no_digest(path: Path) -> None:
    digest_path(path).unlink()


def test_save_load_round_trip_and_the_digest_file(tmp_path):
    path = files.save(STATE, tmp_path / "a.pth")
    back = files.load(path)
    assert set(back) == set(STATE)
    assert all(back[k].dtype == STATE[k].dtype and torch.equal(back[k], STATE[k]) for k in STATE)
    digest = (tmp_path / "a.pth.sha256").read_text()
    assert digest == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  a.pth\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth", "a.pth.sha256"]
    if shutil.which("sha256sum"):
        check = subprocess.run(["sha256sum", "-c", "a.pth.sha256"], cwd=tmp_path, capture_output=True)
        assert check.returncode == 0, check.stdout
    files.save({"w": torch.zeros(3)}, path)  # a new save replaces both
    assert (tmp_path / "a.pth.sha256").read_text().split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(files.load(path)["w"], torch.zeros(3))


def test_a_plain_torch_save_file_without_digest_loads(tmp_path):
    torch.save(STATE, tmp_path / "b.pth")
    assert torch.equal(files.load(tmp_path / "b.pth")["w"], STATE["w"])


# (case, damage done to a file saved by files.save, error type, message part)
FILE_CASES = [
    ("flipped byte", _flip_middle, CorruptFileError, "is corrupt: its SHA-256 does not match the one recorded in a.pth.sha256; restore it"),
    ("flipped byte, no digest", lambda p: (_no_digest(p), _flip_middle(p)), CorruptFileError, "fails its CRC-32 check; restore it"),
    ("truncated", _truncate, CorruptFileError, "its SHA-256 does not match"),
    ("truncated, no digest", lambda p: (_no_digest(p), _truncate(p)), CorruptFileError, "is corrupt: not a complete zip archive"),
    ("not a zip, no digest", lambda p: (_no_digest(p), p.write_bytes(b"not a torch file" * 9)), CorruptFileError, "not a complete zip archive"),
    ("empty, no digest", lambda p: (_no_digest(p), p.write_bytes(b"")), CorruptFileError, "not a complete zip archive"),
    ("damaged digest file", lambda p: digest_path(p).write_text("xyz  a.pth\n"), CorruptFileError, "has a damaged digest file a.pth.sha256"),
    ("missing", lambda p: p.unlink(), FileNotFoundError, "a.pth: no such file"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "damage", "exc", "message"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_a_damaged_file_is_one_line_naming_it(tmp_path, case, damage, exc, message):
    path = files.save(STATE, tmp_path / "a.pth")
    damage(path)
    with pytest.raises(exc) as info:
        files.load(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_corrupt_file_error_pickles_with_its_message():
    err = CorruptFileError("x.pth", "is corrupt: test", "do this")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) == "x.pth: is corrupt: test; do this" and back.problem == "is corrupt: test"


# (case, the checkpoint file written, message part); every row is a one-line CheckpointError naming the file
CHECKPOINT_CASES = [
    ("flipped byte", lambda p: (save_checkpoint(_checkpoint(), p), _flip_middle(p)), "is corrupt: its SHA-256 does not match the one recorded in checkpoint.pth.sha256; delete it"),
    ("truncated, no digest", lambda p: (save_checkpoint(_checkpoint(), p), _no_digest(p), _truncate(p)), "is corrupt: not a complete zip archive"),
    ("not a dict", lambda p: save_checkpoint([1, 2], p), "is not a snnprune training checkpoint (a list, not a dict)"),
    ("no rng", lambda p: save_checkpoint(_checkpoint(rng=None), p), "is not a snnprune training checkpoint: it has no 'rng' (the random number generator states"),
    ("no optimizer", lambda p: save_checkpoint(_checkpoint(optimizer=None), p), "it has no 'optimizer'"),
    ("rng without torch", lambda p: save_checkpoint(_checkpoint(rng={"python": 1, "numpy": 2}), p), "has a bad 'rng': a dict of ['numpy', 'python']"),
    ("negative epoch", lambda p: save_checkpoint(_checkpoint(epoch=-1), p), "has a bad 'epoch': -1, not the last finished epoch, an integer >= 0"),
    ("epoch a string", lambda p: save_checkpoint(_checkpoint(epoch="3"), p), "has a bad 'epoch': '3'"),
    ("epoch a float", lambda p: save_checkpoint(_checkpoint(epoch=1.5), p), "has a bad 'epoch': 1.5"),
    ("epoch a bool", lambda p: save_checkpoint(_checkpoint(epoch=True), p), "has a bad 'epoch': True"),
    ("global_step a tensor", lambda p: save_checkpoint(_checkpoint(global_step=torch.tensor(2)), p), "has a bad 'global_step': tensor(2)"),
    ("model a tensor", lambda p: save_checkpoint(_checkpoint(model=torch.ones(2)), p), "has a bad 'model': tensor([1., 1.]), not the model's state_dict"),
    ("best_top1 a string", lambda p: save_checkpoint(_checkpoint(best_top1="50"), p), "has a bad 'best_top1': '50', not a number"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "write", "message"), CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_a_bad_checkpoint_is_one_line_naming_the_file_and_the_key(tmp_path, case, write, message):
    path = tmp_path / "checkpoint.pth"
    write(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text.startswith(f"--resume: checkpoint {str(path)!r}") and message in text and "\n" not in text


@pytest.mark.parametrize(("missing", "default"), [("best_top1", -1.0), ("args", None), ("kind", None)])
def test_a_checkpoint_without_a_key_older_runs_lack_loads_with_its_default(tmp_path, missing, default):
    save_checkpoint(_checkpoint(**{missing: None}), tmp_path / "checkpoint.pth")
    state = TrainState.of(load_checkpoint(tmp_path / "checkpoint.pth"))
    assert getattr(state, missing) == default and (state.epoch, state.global_step) == (0, 2)


def test_checkpoint_round_trip(tmp_path):
    ckpt = _checkpoint()
    save_checkpoint(ckpt, tmp_path / "checkpoint.pth")
    back = load_checkpoint(tmp_path / "checkpoint.pth")
    assert torch.equal(back["model"]["w"], ckpt["model"]["w"])
    assert torch.equal(back["rng"]["torch"], ckpt["rng"]["torch"])
    assert {k: back[k] for k in ("epoch", "global_step", "pruner")} == {
        k: ckpt[k] for k in ("epoch", "global_step", "pruner")
    }


def _partial_then_full(_obj: object, f) -> None:
    f.write(b"\0" * 4096)
    raise OSError(errno.ENOSPC, "No space left on device")


def _torch_runtime_error(_obj: object, f) -> None:
    f.write(b"\0" * 4096)
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


# (case, how to write the new file, what torch.save is replaced by)
DISK_FULL_CASES = [
    ("files.save", lambda p: files.save(STATE, p), _partial_then_full),
    ("files.save, torch's RuntimeError", lambda p: files.save(STATE, p), _torch_runtime_error),
    ("save_checkpoint", lambda p: save_checkpoint(_checkpoint(), p), _partial_then_full),
    ("atomic_write", lambda p: atomic_write(p, lambda f: _partial_then_full(None, f)), None),
]


@pytest.mark.parametrize(("case", "write", "fake_save"), DISK_FULL_CASES, ids=[c[0] for c in DISK_FULL_CASES])
def test_a_full_disk_leaves_the_previous_file_intact(tmp_path, monkeypatch, case, write, fake_save):
    path = files.save(_checkpoint(), tmp_path / "checkpoint.pth")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    if fake_save is not None:
        monkeypatch.setattr(torch, "save", fake_save)
    free = 1000  # (torch's RuntimeError has no errno: the free space decides)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda p: SimpleNamespace(total=10**9, used=10**9 - free, free=free)
    )
    with pytest.raises(DiskFullError) as info:
        write(path)
    text = str(info.value)
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert text.startswith(f"{path}: the disk is full ({free:,} bytes free on the file system of {tmp_path}")
    assert ("bytes needed" in text) == (case != "atomic_write") and "\n" not in text
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old file and digest, no temp file
    monkeypatch.undo()
    assert load_checkpoint(path)["global_step"] == 2  # the previous checkpoint, its digest matching


def test_a_full_disk_counts_each_shared_storage_once_in_the_bytes_needed(tmp_path, monkeypatch):
    w = torch.zeros(1000)  # 4,000 bytes, seen five times: itself, tied, two slices and a reshaped view
    state = {
        "model": {"w": w, "tied": w, "half": w[:500], "tail": w[500:]},  # the tail starts 2,000 bytes in
        "opt": [w.view(10, 100)],
        "h": torch.zeros(3).half(),
    }
    monkeypatch.setattr(torch, "save", _partial_then_full)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda p: SimpleNamespace(total=10**9, used=10**9 - 10, free=10)
    )
    with pytest.raises(DiskFullError, match=r", about 4,006 bytes needed\)"):
        files.save(state, tmp_path / "a.pth")


def test_a_runtime_error_with_free_space_is_not_called_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", _torch_runtime_error)
    with pytest.raises(RuntimeError, match="inline_container"):
        files.save(STATE, tmp_path / "a.pth")
    assert not any(tmp_path.iterdir())


def test_a_read_only_folder_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    def denied(file, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(file))

    monkeypatch.setattr(files, "open", denied, raising=False)
    with pytest.raises(PermissionError) as info:
        files.save(STATE, tmp_path / "a.pth")
    assert str(info.value) == (
        f"{tmp_path}: cannot write a.pth in this folder (permission denied); make the folder writable or "
        "write elsewhere"
    )


def test_a_failed_digest_write_leaves_a_loadable_file_without_digest(tmp_path, monkeypatch):
    path = files.save({"w": torch.ones(3)}, tmp_path / "a.pth")

    def fail(*a: object, **k: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(files, "atomic_write", fail)  # save writes the digest last with atomic_write
    with pytest.raises(OSError, match="I/O error"):
        files.save({"w": torch.zeros(3)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth"]  # the old digest went first
    assert torch.equal(files.load(path)["w"], torch.zeros(3))


def test_remove_stale_temp_files_removes_only_temp_files(tmp_path):
    files.save(STATE, tmp_path / "a.pth")
    (tmp_path / ".a.pth.999999999.0badc0de.tmp").write_bytes(b"half")  # of a process that has ended
    (tmp_path / f".b.pth.{os.getpid()}.0badc0de.tmp").write_bytes(b"being written")  # a live process's
    (tmp_path / ".a.pth.0badc0de.tmp").write_bytes(b"a user's")  # no pid: not a name atomic_write makes
    (tmp_path / ".hidden").write_text("x")
    assert files.remove_stale_temp_files(tmp_path) == [tmp_path / ".a.pth.999999999.0badc0de.tmp"]
    left = [".a.pth.0badc0de.tmp", f".b.pth.{os.getpid()}.0badc0de.tmp", ".hidden", "a.pth", "a.pth.sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(left)


def test_file_objects_are_saved_and_loaded_without_digest(tmp_path):
    import io

    buf = io.BytesIO()
    files.save(STATE, buf)
    buf.seek(0)
    assert torch.equal(files.load(buf)["w"], STATE["w"])
    with pytest.raises(CorruptFileError, match="not a complete zip archive"):
        files.load(io.BytesIO(b"junk"))
    assert not any(tmp_path.iterdir())
