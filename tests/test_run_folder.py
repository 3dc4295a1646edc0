"""One process owns a run folder (the lock), ``--overwrite`` removes exactly the previous run's files, and
``--resume auto`` without a checkpoint says which folders beside it hold one."""

from __future__ import annotations

import csv
import fcntl
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import expect_exit

from snnprune.structured import EXPORT_FILES
from snnprune.training import ConfigError
from snnprune.training.run_folder import LOCK_FILE, RUN_FILES, RunLock, new_run_note, run_files

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--width", "4", "--epochs", "1", "--batch-size", "16", "--limit-train-batches", "2",
        "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet", "--T", "2"]  # fmt: skip


def _hold(folder: Path, text: bytes = b"4242\npython somebody_else.py\n") -> int:
    """Lock ``folder/.lock`` as another run would (a separate open file description: flock conflicts)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, text)
    return fd


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture
def no_data(monkeypatch):
    from snnprune.training import engine

    def tripwire(*a, **k):
        raise AssertionError("data built although the run folder is locked")

    monkeypatch.setattr(engine, "build_datasets", tripwire)


@pytest.mark.parametrize("extra", [[], ["--resume", "auto"], ["--overwrite"]])
def test_locked_folder_refused_one_line_nothing_written(sew, tmp_path, capsys, no_data, extra):
    run = tmp_path / "r"
    fd = _hold(run)
    (run / "notes.txt").write_text("mine")
    before = _contents(run)
    try:
        code, err = expect_exit(
            sew, [*TINY, *extra, "--output-dir", str(tmp_path), "--run-name", "r"], capsys
        )
    finally:
        os.close(fd)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert lines[0] == (
        f"error: --run-name: {str(run)!r} is in use by another run (pid 4242, its command line is in .lock); "
        "wait for it to end or pick another --run-name"
    )
    assert _contents(run) == before


def test_lock_released_on_every_exit_and_test_only_takes_none(sew, tmp_path, capsys):
    out = tmp_path / "runs"
    s = sew.main(["--method", "lats", *TINY, "--output-dir", str(out), "--run-name", "r"])
    run = Path(s["run_dir"])
    assert not (run / LOCK_FILE).exists()  # released and removed at the end
    RunLock(run).acquire().release()  # free again
    fd = _hold(run)  # held by someone else: --test-only only reads, so it runs
    try:
        res = sew.main(["--test-only", "--resume", str(run / "checkpoint.pth"), "--limit-test-batches", "1",
                        "--batch-size", "16", "--quiet"])  # fmt: skip
    finally:
        os.close(fd)
    assert res["test_top1"] == pytest.approx(s["test_top1"])
    # an error after the lock (here: bad data) releases it, and the folder the run created goes again
    bad = ["--dataset", "cifar10", "--data-path", str(tmp_path / "none"), "--run-name", "bad"]
    code, _ = expect_exit(sew, [*TINY, *bad, "--output-dir", str(out)], capsys)
    assert code == 2 and not (out / "bad").exists()


def test_lock_file_holds_pid_and_command_line(tmp_path):
    lock = RunLock(tmp_path / "new").acquire()
    try:
        pid, command = (tmp_path / "new" / LOCK_FILE).read_text().splitlines()
        assert int(pid) == os.getpid() and command == " ".join(sys.argv)
        with pytest.raises(ConfigError, match=rf"in use by another run \(pid {os.getpid()},"):
            RunLock(tmp_path / "new").acquire()
    finally:
        lock.release()
    assert not (tmp_path / "new").exists()  # created by the lock, left empty: removed
    nested = RunLock(tmp_path / "out" / "deeper" / "run").acquire()  # a missing --output-dir too
    (tmp_path / "out" / "keep.txt").write_text("x")
    nested.release()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]  # the empty ones went


def test_two_concurrent_runs_one_runs_one_refused(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "scripts" / "train_sew.py"), "--method", "lats", *TINY,
           "--output-dir", str(tmp_path), "--run-name", "same"]  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)]
    procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = [(p.pid, p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(code for _, code, _ in results) == [0, 2], results
    (winner, _, _), (_, _, err) = sorted(results, key=lambda r: r[1])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and str(tmp_path / "same") in lines[0], err
    m = re.search(r"is in use by another run \(pid (\d+),", lines[0])
    # the refused one met the lock (and names the winner) or, started after the winner had finished,
    # the winner's files
    assert (m is not None and int(m.group(1)) == winner) or "already holds a run" in lines[0], lines[0]
    with open(tmp_path / "same" / "metrics.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0"]
    assert not (tmp_path / "same" / LOCK_FILE).exists()


def test_run_files_are_the_named_files_and_their_digests():
    names = set(run_files())
    assert set(RUN_FILES) | set(EXPORT_FILES) <= names
    assert {"model_sparse_packed.pth", "model_compact.pth", "checkpoint.pth.sha256"} <= names
    assert {n for n in names if not n.endswith(".sha256")} == set(RUN_FILES) | set(EXPORT_FILES)
    assert LOCK_FILE not in names


def test_overwrite_removes_every_file_of_the_previous_run_and_only_those(sew, tmp_path):
    argv = ["--method", "slats", "--granularity", "filter", "--final-threshold", "0.2", "--prune-exclude",
            "fc", *TINY, "--output-dir", str(tmp_path), "--run-name", "r"]  # fmt: skip
    sew.main([*argv, "--export"])
    run = tmp_path / "r"
    exported = {"model_sparse.pth", "model_sparse_packed.pth", "model_compact.pth"}
    assert exported <= {p.name for p in run.iterdir()}
    (run / "model_compact.pth.sha256").write_text("stale digest")  # a digest beside an export file
    (run / "notes.txt").write_text("my notes")
    (run / "notes.txt.sha256").write_text("not a run file's digest")
    sew.main([*argv, "--overwrite"])
    left = {p.name for p in run.iterdir()}
    assert not (exported | {"model_compact.pth.sha256"}) & left, left
    assert (run / "notes.txt").read_text() == "my notes"
    assert (run / "notes.txt.sha256").read_text() == "not a run file's digest"
    assert {"checkpoint.pth", "metrics.csv", "summary.json"} <= left and LOCK_FILE not in left


def test_resume_auto_without_checkpoint_names_the_folders_that_have_one(sew, tmp_path, capsys):
    for i, name in enumerate(["old", "newer", "newest"]):  # checkpoints of three runs, oldest first
        (tmp_path / name).mkdir()
        (tmp_path / name / "checkpoint.pth").write_bytes(b"x")
        os.utime(tmp_path / name / "checkpoint.pth", (time.time() - 100 + i, time.time() - 100 + i))
    (tmp_path / "no_checkpoint").mkdir()
    s = sew.main(["--method", "lats", *TINY, "--output-dir", str(tmp_path), "--run-name", "typo",
                  "--resume", "auto"])  # fmt: skip
    assert s["epochs"] == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        f"note: --resume auto found no checkpoint.pth in {str(tmp_path / 'typo')!r}, so a new run starts "
        f"(run folders with a checkpoint in {str(tmp_path)!r}: newest, newer, old)"
    ]  # the one line, also under --quiet
    assert out.err == ""
    note = new_run_note(tmp_path / "other", shown=2)  # typo now holds a checkpoint too, the newest
    assert note.endswith(f"in {str(tmp_path)!r}: typo, newest and 2 more)"), note
    assert new_run_note(tmp_path / "empty" / "x").endswith(
        f"(no run folder in {str(tmp_path / 'empty')!r} has a checkpoint)"
    )


def test_holder_pid_read_once_written(tmp_path):
    import threading

    fd = _hold(tmp_path / "r", b"")  # locked, pid not written yet
    try:
        with pytest.raises(ConfigError, match=r"in use by another run \(pid unknown,"):
            RunLock(tmp_path / "r").acquire()
        later = threading.Timer(0.1, lambda: os.pwrite(fd, b"777\ncmd\n", 0))
        later.start()
        with pytest.raises(ConfigError, match=r"in use by another run \(pid 777,"):
            RunLock(tmp_path / "r").acquire()  # waits for the holder's write
        later.join()
    finally:
        os.close(fd)
