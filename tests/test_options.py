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
        f"ckpt = torch.load({ckpt!r}, weights_only=True)['model']; "
        "same = all(torch.equal(v, ckpt[k]) for k, v in run.model.state_dict().items()); "
        "print(run.pruner.method, run.pruner.k, same)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [NAME, "2.0", "True"]


def test_the_generic_training_layer_names_no_method_and_no_model():
    """validation.py, cli.py and engine.py know methods and models only through the registries and the
    Pruner hooks: no registered method or model is named there, nor a family of them."""
    import builtins
    import re

    import models
    import snnprune

    names = {m for m in snnprune.list_methods() if not hasattr(builtins, m)} - {"dense"}  # str, dense: words
    names |= set(models.list_models()) | {"lats", "stds", "st3", "gmp", "pgh", "ltp", "filter", "sew", "resnet",
                                          "spikformer", "mobilenet"}  # fmt: skip
    assert {"slats", "st3sigma", "sew_resnet18"} <= names  # the registries answered
    for name in ("validation.py", "cli.py", "engine.py"):
        text = (ROOT / "snnprune" / "training" / name).read_text().lower()
        text = text.replace("train_sew.py", "")  # the SNN entry script's file name, in its error messages
        found = sorted(n for n in names if re.search(rf"(?<![a-z]){re.escape(n.lower())}(?![a-z])", text))
        assert not found, f"snnprune/training/{name} names {found}"


MODEL = '''
from torch import nn

import models
import snnprune


@models.register_model
def tiny_blocks_options_test(*, num_classes=10, in_channels=1, T=2, blocks=1):
    """A conv stack of ``blocks`` layers (a model registered outside the project)."""
    if blocks < 1:
        raise snnprune.KeywordError("blocks", f"a stack needs one layer or more, got {blocks}")
    convs = [nn.Conv2d(in_channels if i == 0 else 4, 4, 3, padding=1) for i in range(blocks)]
    return nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
'''


def test_outside_method_and_model_keywords_are_flags_with_one_line_errors(train, tmp_path):
    """A method and a model registered outside the project, each with a new keyword (k, blocks): both are
    flags with their help, and a value the method's or the builder's check refuses is one line naming the
    flag (a KeywordError carries the keyword; its message is not read for it), exit 2."""
    (tmp_path / "exp_method.py").write_text(METHOD + MODEL)
    runs = str(tmp_path / "runs")
    help_text = " ".join(train("--help").stdout.split())
    assert "--k K" in help_text and "--blocks BLOCKS model option of tiny_blocks_options_test" in help_text
    model = ["--model", "tiny_blocks_options_test", "--output-dir", runs]
    assert (
        _line(train(*model, "--blocks", "0"))
        == "error: --blocks: a stack needs one layer or more, got 0; pass another value"
    )
    assert _line(train(*model, "--k", "0")) == (
        "error: --k: exp_threshold needs k != 0 (k = 0 is the linear schedule); pass another --k"
    )
