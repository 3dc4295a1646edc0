"""SIGINT/SIGTERM stop training after the current step: one line, exit 130/143, the last checkpoint kept,
and ``--resume auto`` ends where an uninterrupted run ends, bit for bit."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import expect_exit

from snnprune.training import engine as engine_mod
from snnprune.training.checkpoint import load_checkpoint
from snnprune.training.run_folder import LOCK_FILE

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--width", "4", "--epochs", "2", "--batch-size", "16", "--limit-train-batches", "2",
        "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet", "--T", "2"]  # fmt: skip


def _signalling_loss(signals: dict[int, list[int]]):
    """A CrossEntropyLoss class that sends ``signals[k]`` to this process in its k-th call (1-based; per
    tiny epoch: 2 training steps, then 1 test batch)."""

    class Loss(torch.nn.CrossEntropyLoss):
        calls = 0

        def forward(self, input, target):
            type(self).calls += 1
            for s in signals.get(type(self).calls, []):
                os.kill(os.getpid(), s)
            return super().forward(input, target)

    return Loss


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run_in_process(sew, tmp_path, capsys, monkeypatch, signals):
    monkeypatch.setattr(engine_mod.nn, "CrossEntropyLoss", _signalling_loss(signals))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    code, err = expect_exit(
        sew, ["--method", "lats", *TINY, "--output-dir", str(tmp_path), "--run-name", "r"], capsys
    )
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # restored
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "r" / LOCK_FILE).exists()
    return code, lines[0], tmp_path / "r"


def test_sigint_finishes_the_step_and_keeps_the_last_epoch(sew, tmp_path, capsys, monkeypatch):
    # call 4 is the forward of the first step of epoch 1 (global step 3): that step still completes
    code, line, run = _run_in_process(sew, tmp_path, capsys, monkeypatch, {4: [signal.SIGINT]})
    assert code == 130
    assert line == (
        "interrupted (SIGINT) at epoch 1, step 3: checkpoint.pth holds epoch 0; continue with the same "
        "command plus --resume auto"
    )
    ckpt = load_checkpoint(run / "checkpoint.pth")
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, 2)
    assert [r["epoch"] for r in _rows(run / "metrics.csv")] == ["0"]
    assert [r["step"] for r in _rows(run / "steps.csv")] == ["1", "2"]
    assert not (run / "summary.json").exists()


def test_sigterm_before_the_first_checkpoint_exits_143(sew, tmp_path, capsys, monkeypatch):
    code, line, run = _run_in_process(sew, tmp_path, capsys, monkeypatch, {1: [signal.SIGTERM]})
    assert code == 143
    assert line == (
        "interrupted (SIGTERM) at epoch 0, step 1: nothing was saved; the same command plus --resume auto "
        "starts the run again"
    )
    assert not (run / "checkpoint.pth").exists() and not (run / "metrics.csv").exists()


def test_the_first_stop_signal_decides_the_exit_code(sew, tmp_path, capsys, monkeypatch):
    # SIGINT then SIGTERM within one step: the run stops after that step as SIGINT asked (130, not 143)
    code, line, _ = _run_in_process(sew, tmp_path, capsys, monkeypatch, {1: [signal.SIGINT, signal.SIGTERM]})
    assert code == 130 and line.startswith("interrupted (SIGINT) at epoch 0, step 1: nothing was saved")


def test_second_sigint_stops_at_once(sew, tmp_path, capsys, monkeypatch):
    code, line, run = _run_in_process(sew, tmp_path, capsys, monkeypatch, {4: [signal.SIGINT, signal.SIGINT]})
    assert code == 130
    assert line.startswith(
        "interrupted (SIGINT): stopped at once; checkpoint.pth holds the last complete epoch"
    )
    assert load_checkpoint(run / "checkpoint.pth")["epoch"] == 0


def _command(out: Path, name: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "train_sew.py"), "--method", "lats", "--width", "4",
            "--T", "2", "--epochs", "3", "--batch-size", "16", "--limit-train-batches", "4",
            "--limit-test-batches", "1", "--analyze-batches", "1", "--log-every", "1",
            "--output-dir", str(out), "--run-name", name]  # fmt: skip


def test_sigint_then_resume_auto_equals_uninterrupted(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    full = subprocess.Popen(_command(tmp_path, "full"), **run)  # alongside the interrupted one
    part = subprocess.Popen(_command(tmp_path, "part"), **run)
    for line in part.stdout:  # stdout is a pipe: one plain line per step, flushed
        if line.startswith("epoch 1 step 1/4"):
            part.send_signal(signal.SIGINT)  # during epoch 1 (3 steps left), after checkpoint.pth of epoch 0
            break
    _, err = part.communicate(timeout=300)
    assert part.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted (SIGINT) at epoch 1, step "), err
    assert "checkpoint.pth holds epoch 0; continue with the same command plus --resume auto" in lines[0]
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pth")["epoch"] == 0
    resumed = subprocess.run([*_command(tmp_path, "part"), "--resume", "auto"], timeout=300, **run)
    assert resumed.returncode == 0, resumed.stderr
    full.communicate(timeout=300)
    assert full.returncode == 0
    a, b = (load_checkpoint(tmp_path / n / "checkpoint.pth") for n in ("full", "part"))
    assert a["global_step"] == b["global_step"] == 12 and a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ra, rb = (_rows(tmp_path / n / "metrics.csv") for n in ("full", "part"))
    assert [r["epoch"] for r in rb] == ["0", "1", "2"]
    assert [{**r, "epoch_time_s": ""} for r in ra] == [{**r, "epoch_time_s": ""} for r in rb]
    assert (tmp_path / "full" / "steps.csv").read_text() == (tmp_path / "part" / "steps.csv").read_text()


def test_keyboard_interrupt_outside_training_is_one_line_exit_130(sew, capsys):
    from entry import exit_on_error  # scripts/ is on sys.path (the sew fixture loads it)

    def main(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exc:
        exit_on_error(main, [])
    err = capsys.readouterr().err
    assert exc.value.code == 130 and err.startswith("interrupted (SIGINT): stopped at once;")
    assert len(err.strip().splitlines()) == 1


_DDP_WORKER = """
import os, signal, sys
import torch
import torch.distributed as dist
from snnprune.training import interrupts
dist.init_process_group("gloo")
rank = dist.get_rank()
with interrupts.stop_on_signals():
    for step, sender in ((1, None), (2, 1)):  # step 1: nobody was signalled; step 2: rank 1 only
        if rank == sender:
            os.kill(os.getpid(), signal.SIGINT)
        try:
            interrupts.check(0, step, torch.device("cpu"))
            print(f"step {step}: go on", flush=True)
        except interrupts.Interrupted as exc:
            print(f"step {step}: stop {exc.exit_code}", flush=True)
interrupts._requested = signal.SIGINT  # outside stop_on_signals check() does nothing (and no all-reduce)
interrupts.check(0, 3, torch.device("cpu"))
print("outside: go on", flush=True)
dist.destroy_process_group()
"""


def test_every_rank_stops_at_the_step_one_rank_was_signalled(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _DDP_WORKER],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "RANK": str(r)},
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for out, _ in outs:
        assert out.splitlines() == ["step 1: go on", "step 2: stop 130", "outside: go on"]


@pytest.mark.parametrize(("name", "group"), [("SIGINT", True), ("SIGTERM", False)])
def test_signal_with_workers_exits_128_plus_signal(tmp_path, name, group):
    """Ctrl-C of a terminal reaches the whole process group (the DataLoader workers ignore it); SIGTERM goes
    to the main process, which still ends its workers on the way out."""
    signum = getattr(signal, name)
    cmd = [*_command(tmp_path, "w"), "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)  # fmt: skip
    for line in p.stdout:
        if line.startswith("epoch 0 step 2/4"):
            os.killpg(p.pid, signum) if group else p.send_signal(signum)
            break
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signum, err
    assert re.fullmatch(
        rf"interrupted \({name}\) at epoch 0, step [2-4]: nothing was saved; the same command plus "
        r"--resume auto starts the run again\n",
        err,
    ), err
    assert not (tmp_path / "w" / "checkpoint.pth").exists() and not (tmp_path / "w" / LOCK_FILE).exists()


class _SigintDisposition(torch.utils.data.Dataset):
    """Each item: whether the process that loads it ignores SIGINT."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.tensor(float(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)), 0


def test_dataloader_workers_ignore_sigint():
    from argparse import Namespace

    from snnprune.training.builders import build_loaders

    data = _SigintDisposition()
    for workers, ignored in ((2, 1.0), (0, 0.0)):  # without workers the main process loads (and stops)
        train, test, _ = build_loaders(data, data, Namespace(batch_size=2, workers=workers, seed=0), False)
        assert [float(x.min()) for x, _ in train] == [ignored, ignored]
        assert [float(x.min()) for x, _ in test] == [ignored, ignored]
