"""A method registered outside the project gets its training options with no table row anywhere.

Each keyword of its signature is a flag whose ``--help`` line is the method's ``Args:`` docstring; its
value is checked by the method's constructor before any data or model is built (one line, exit 2); it is
recorded in the run's config.json and taken from the checkpoint by ``--resume``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import expect_exit

import snnprune
from snnprune.training import engine as engine_mod
from snnprune.training import load_checkpoint

NAME = "exp_threshold_options_test"
TINY = ["--width", "4", "--epochs", "1", "--batch-size", "16", "--limit-train-batches", "2",
        "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet", "--T", "2"]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def exp_threshold():
    """The README's example method (keyword ``k``), registered here, not in the project."""

    @snnprune.register_method(NAME)
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
                raise ValueError("exp_threshold needs k != 0 (k = 0 is the linear schedule)")
            self.k = float(k)

        def fraction(self, x):
            return math.expm1(self.k * x) / math.expm1(self.k)

    return ExponentialThreshold


def _tripwire(*a, **k):
    raise AssertionError("data or model built before validation finished")


@pytest.fixture
def no_work(monkeypatch):
    monkeypatch.setattr(engine_mod, "build_datasets", _tripwire)


def _line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_new_keyword_is_a_flag_with_its_docstring_line(sew):
    text = " ".join(sew.get_parser().format_help().split())
    assert f"--k K {NAME}: curvature of the threshold ramp, non-zero. (default: 3.0)" in text


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--k", "0"], "error: --k: exp_threshold needs k != 0 (k = 0 is the linear schedule); pass another --k"),
        (["--k", "x"], "error: --k: invalid float value: 'x'; give a number"),
        (["--method", "lats", "--k", "2"], "error: --k: not an option of --method lats (it takes --filter-scale, "
         "--final-threshold, --granularity, --lats-schedule); drop --k or choose a method that takes it"),
    ],
)  # fmt: skip
def test_new_keyword_errors_are_one_line_before_any_work(sew, tmp_path, capsys, no_work, argv, line):
    code, err = expect_exit(sew, ["--method", NAME, *argv, "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and _line(err) == line
    assert not any(tmp_path.iterdir())


def test_new_keyword_from_a_config_file(sew, tmp_path, capsys, no_work):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: {NAME}\nfinal_threshold: 0.1\nk: 0\n")
    code, err = expect_exit(sew, ["--config", str(cfg), "--output-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and _line(err).startswith("error: --k: exp_threshold needs k != 0")


def test_new_keyword_lands_in_config_json_and_the_checkpoint(sew, tmp_path, capsys, monkeypatch):
    out = str(tmp_path)
    summary = sew.main(["--method", NAME, "--k", "2.0", *TINY, "--output-dir", out, "--run-name", "k2"])
    run = Path(summary["run_dir"])
    assert json.loads((run / "config.json").read_text())["k"] == 2.0
    assert load_checkpoint(run / "checkpoint.pth")["pruner"]["config"]["k"] == 2.0
    assert summary["threshold"] == pytest.approx(0.1)
    default = sew.main(["--method", NAME, *TINY, "--output-dir", out, "--run-name", "k_default"])
    assert "k" not in json.loads((Path(default["run_dir"]) / "config.json").read_text())
    assert load_checkpoint(Path(default["run_dir"]) / "checkpoint.pth")["pruner"]["config"]["k"] == 3.0
    # --resume takes k from the checkpoint: a contradicting --k is refused before any work
    monkeypatch.setattr(engine_mod, "build_datasets", _tripwire)
    ckpt = str(run / "checkpoint.pth")
    code, err = expect_exit(sew, ["--resume", ckpt, "--k", "5", "--output-dir", out], capsys)
    assert code == 2 and _line(err).startswith(
        f"error: --k: the checkpoint {ckpt!r} was trained with --k 2.0"
    )
