"""A method registered outside the project gets its training options with no table row anywhere.

The README's example method (keyword ``k``) is saved as a module of its own and trained the way the README
says (import it, then ``scripts/train_sew.py``'s ``main``), in a subprocess so the registration ends with
it. ``--k`` is a flag whose ``--help`` line is the method's ``Args:`` docstring; its value is checked by the
method's constructor before any data or model is built (one line, exit 2); it is recorded in the run's
config.json and taken from the checkpoint by ``--resume``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAME = "exp_threshold_options_test"
METHOD = f'''
import math

import snnprune


@snnprune.register_method("{NAME}")
class ExponentialThreshold(snnprune.ScheduledThresholdPruner):
    """d = D (exp(k x) - 1) / (exp(k) - 1): the threshold rises late (k > 0) or early (k < 0).

    Args:
        final_threshold: D, the threshold after the last step.
        k: curvature of the threshold ramp,
            non-zero.
        grad: backward variant of the soft threshold.
        total_steps: optimizer steps of the whole run.
        start_step: first step of the pruning window.
    """

    def __init__(self, *, final_threshold=None, k=3.0, grad="ste", total_steps=None, start_step=0):
        super().__init__(
            final_threshold=final_threshold, grad=grad, total_steps=total_steps, start_step=start_step
        )
        if k == 0:
            raise snnprune.KeywordError("k", "exp_threshold needs k != 0 (k = 0 is the linear schedule)")
        self.k = float(k)

    def fraction(self, x):
        return math.expm1(self.k * x) / math.expm1(self.k)
'''
TINY = ["--width", "4", "--epochs", "1", "--batch-size", "16", "--limit-train-batches", "2",
        "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet", "--T", "2"]  # fmt: skip


@pytest.fixture
def train(tmp_path):
    """``train(*argv)``: train_sew.py with the method registered (README: import it, then main)."""
    (tmp_path / "exp_method.py").write_text(METHOD)
    code = (
        f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {str(ROOT)!r}]; import exp_method; "
        "from scripts.train_sew import main; main(sys.argv[1:])"
    )

    def run(*argv: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-c", code, "--method", NAME, *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)

    return run


def _line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_new_keyword_flag_help_error_and_config_json(train, tmp_path):
    runs = tmp_path / "runs"
    help_text = " ".join(train("--help").stdout.split())
    assert f"--k K {NAME}: curvature of the threshold ramp, non-zero. (default: 3.0)" in help_text
    assert _line(train("--k", "0", "--output-dir", str(runs))) == (
        "error: --k: exp_threshold needs k != 0 (k = 0 is the linear schedule); pass another --k"
    )
    assert not runs.exists()  # refused before anything was built or written
    out = train("--k", "2.0", *TINY, "--output-dir", str(runs), "--run-name", "k2")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((runs / "k2" / "config.json").read_text())["k"] == 2.0
    assert json.loads((runs / "k2" / "summary.json").read_text())["threshold"] == pytest.approx(0.1)
    ckpt = str(runs / "k2" / "checkpoint.pth")
    assert _line(train("--resume", ckpt, "--k", "5", "--output-dir", str(runs))).startswith(
        f"error: --k: the checkpoint {ckpt!r} was trained with --k 2.0, not 5.0"
    )
    # load_run rebuilds the run with the method's keyword, its weights those of the checkpoint
    code = (
        f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {str(ROOT)!r}]; import exp_method, models, torch, snnprune; "
        f"run = snnprune.load_run({str(runs / 'k2')!r}); "
        f"ckpt = torch.load({ckpt!r}, weights_only=False)['model']; "
        "same = all(torch.equal(v, ckpt[k]) for k, v in run.model.state_dict().items()); "
        "print(run.pruner.method, run.pruner.k, same)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [NAME, "2.0", "True"]
