"""One-shot post-training pruning of a dense run: the masks against a hand-made magnitude cut, the three
top-1 numbers against independent evaluations, the new run folder through load_run, and the bad inputs."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from torch import nn

import snnprune
from snnprune import oneshot as oneshot_mod
from snnprune.oneshot import oneshot_prune
from snnprune.training import ConfigError, LoopOptions, evaluate, load_run
from tests.helpers import load_script

TINY = ["--width", "8", "--epochs", "1", "--batch-size", "16", "--limit-train-batches", "3", "--T", "2",
        "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet"]  # fmt: skip
KW = {"batch_size": 16, "calibration_batches": 2, "limit_test_batches": 2, "log": lambda *a: None}


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("oneshot")
    load_script("train_sew").main(
        ["--method", "dense", *TINY, "--output-dir", str(out), "--run-name", "dense"]
    )
    return out / "dense"


def _top1(model: nn.Module, run) -> float:
    return evaluate(
        model,
        nn.CrossEntropyLoss(),
        run.test_data(16),
        torch.device("cpu"),
        LoopOptions(limit_test_batches=2),
    )["test_top1"]


def test_magnitude_oneshot_prunes_every_layer_and_reports_before_and_after_bn(dense_run, tmp_path):
    summary = oneshot_prune(dense_run, tmp_path, target_sparsity=0.9, **KW)
    dense = load_run(dense_run, finalize=True)
    pruned = load_run(summary["run_dir"], finalize=True)
    assert pruned.config["oneshot"]["target_sparsity"] == 0.9
    expected = dense.model
    with torch.no_grad():  # the cut by hand: each layer keeps its ceil(0.1 n) largest |w|
        for (name, a), (_, b) in zip(dense.model.named_modules(), pruned.model.named_modules(), strict=True):
            if isinstance(a, (nn.Conv2d, nn.Linear)):
                keep = math.ceil(0.1 * a.weight.numel())
                cut = a.weight.abs().flatten().sort(descending=True).values[keep - 1]
                a.weight.mul_(a.weight.abs() >= cut)
                assert int(a.weight.count_nonzero()) == keep == int(b.weight.count_nonzero()), name
                assert torch.equal(a.weight, b.weight), name
            elif isinstance(a, nn.BatchNorm2d):  # affine kept, statistics re-estimated
                assert torch.equal(a.weight, b.weight) and not torch.equal(a.running_var, b.running_var)
    assert summary["test_top1_dense"] == _top1(load_run(dense_run, finalize=True).model, dense)
    assert summary["test_top1_pruned"] == _top1(expected, dense)  # dense BN statistics, hand-pruned weights
    assert summary["test_top1"] == _top1(pruned.model, dense)  # the saved run: re-estimated BN
    assert summary["sparsity"] == pytest.approx(snnprune.sparsity(pruned.model)["overall"])
    assert (
        json.loads((tmp_path / "dense_oneshot_P0.9" / "summary.json").read_text())["test_top1"]
        == summary["test_top1"]
    )


def test_nm_oneshot_leaves_n_of_m_in_every_group(dense_run, tmp_path):
    from snnprune.threshold.nm import to_groups

    summary = oneshot_prune(
        dense_run, tmp_path, target_sparsity=0.5, granularity="2:4", exclude=["conv1"], **KW
    )
    assert summary["run_dir"].endswith("dense_oneshot_P0.5_2of4")
    model = load_run(summary["run_dir"], finalize=True).model
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and name != "conv1":
            assert set(to_groups(m.weight, 4).ne(0).sum(1).tolist()) == {2}, name


def _non_dense(run, tmp_path):
    copy = tmp_path / "lats_run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "method": "lats"}))
    return copy


# (keywords, prepare the run folder, expected message): every case before any data is read
BAD = [
    ({"target_sparsity": 1.0}, None, "--target-sparsity: must be in [0, 1), got 1.0"),
    ({"target_sparsity": 0.9, "granularity": "4:4"}, None, "--granularity: granularity '4:4' must have 0 < N < M"),
    ({"target_sparsity": 0.9, "granularity": "rows"}, None, "--granularity: must be weight or N:M such as 2:4, got 'rows'"),
    ({"target_sparsity": 0.9, "granularity": "2:4"}, None, "--target-sparsity: granularity 2:4 prunes 0.5 of the weights"),
    ({"target_sparsity": 0.9, "calibration_batches": 0}, None, "--calibration-batches: must be an integer >= 1, got 0"),
    ({"target_sparsity": 0.9, "run_name": "dense"}, None, "--run-name: 'dense' is the dense run's own folder"),
    ({"target_sparsity": 0.9}, _non_dense, "was trained with --method lats; one-shot pruning starts from a dense run"),
    ({"target_sparsity": 0.5, "granularity": "2:4"}, None, "--prune-exclude: layer 'conv1' has weight shape (8, 1, 3, 3)"),
    ({"target_sparsity": 0.9, "exclude": ["nothing*"]}, None, "--prune-exclude: exclude pattern"),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "prepare", "fragment"), BAD, ids=[b[2][:40] for b in BAD])
def test_bad_inputs_one_line_before_any_data(dense_run, tmp_path, monkeypatch, kwargs, prepare, fragment):
    def tripwire(*a, **k):
        raise AssertionError("data read before the inputs were checked")

    monkeypatch.setattr(oneshot_mod, "build_datasets", tripwire)
    run = prepare(dense_run, tmp_path) if prepare else dense_run
    out = dense_run.parent if kwargs.get("run_name") == "dense" else tmp_path
    with pytest.raises(ConfigError) as exc:
        oneshot_prune(run, out, **{**KW, **kwargs})
    assert fragment in str(exc.value) and "; " in str(exc.value) and "\n" not in str(exc.value)


def test_occupied_folder_needs_overwrite(dense_run, tmp_path, monkeypatch):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "summary.json").write_text("{}")
    monkeypatch.setattr(oneshot_mod, "build_datasets", lambda *a: (_ for _ in ()).throw(AssertionError))
    with pytest.raises(ConfigError, match="already holds a run; pass another --run-name or --overwrite"):
        oneshot_prune(dense_run, tmp_path, target_sparsity=0.9, run_name="taken", **KW)


def test_script_exits_2_with_one_line(dense_run, tmp_path, capsys):
    script = load_script("oneshot")
    with pytest.raises(SystemExit) as exc:
        script.main(["--run", str(dense_run), "--target-sparsity", "2", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: --target-sparsity: must be in")
