"""scripts/bench_sew_step.py without a GPU: every bad option is one line and exit code 2, checked before any
GPU work; valid options on a machine without CUDA exit 2 saying so."""

from __future__ import annotations

import pytest
import torch
from helpers import expect_exit, load_script


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--precisions", "fp8"], "--precisions: unknown fp8; choose from fp16,bf16,fp32"),
        (["--backends", "cupy,cuppy"], "--backends: unknown cuppy; choose from"),
        (["--modes", "eager,fast"], "--modes: unknown fast; choose from"),
        (["--weights", "sparse"], "--weights: unknown sparse; choose from dense,lats"),
        (["--baseline-weights", "ltp"], "--baseline-weights: unknown ltp; choose from dense,lats"),
        (["--T", "0"], "--T: must be >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
        (["--repeats", "0"], "--repeats: must be >= 1, got 0"),
        (["--warmup", "-1"], "--warmup: must be >= 0, got -1"),
    ],
)
def test_bad_options_exit_2_with_one_line(argv, message, capsys):
    code, err = expect_exit(load_script("bench_sew_step"), argv, capsys)
    assert code == 2
    err = err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_no_gpu_exits_2_with_one_line(capsys):
    argv = ["--backends", "sj_model", "--precisions", "fp32"]
    code, err = expect_exit(load_script("bench_sew_step"), argv, capsys)
    assert code == 2
    err = err.strip().splitlines()
    assert len(err) == 1 and "needs a CUDA GPU" in err[0]


def test_baselines_run_only_their_own_weights():
    """--baseline-weights dense: SpikingJelly rows dense only, ours with LATS; ours and the baseline back to
    back in every (precision, mode)."""
    bench = load_script("bench_sew_step")
    args = bench._parse(
        ["--precisions", "fp16", "--backends", "sj_model,cupy", "--modes", "eager,default", "--weights", "lats",
         "--baseline-weights", "dense"]
    )  # fmt: skip
    assert bench.configurations(args) == [
        ("fp16", "eager", "lats", "cupy"),
        ("fp16", "eager", "dense", "sj_model"),
        ("fp16", "default", "lats", "cupy"),
        ("fp16", "default", "dense", "sj_model"),
    ]
