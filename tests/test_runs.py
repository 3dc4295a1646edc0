"""Tests of snnprune.load_run: a tiny real run reloaded in one call."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from spikingjelly.activation_based import functional
from torch.nn.utils import parametrize

import snnprune
from snnprune.training import CheckpointError, ConfigError

TINY = ["--width", "8", "--epochs", "1", "--batch-size", "16", "--limit-train-batches", "2", "--T", "2",
        "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def lats_run(sew, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return Path(sew.main(["--method", "lats", *TINY, "--output-dir", str(out)])["run_dir"])


def _top1(model, loader) -> float:
    x, y = next(
        iter(loader)
    )  # the summary's test top-1 is over the first batch of 16 (--limit-test-batches 1)
    with torch.no_grad():
        out = model(x)
    functional.reset_net(model)
    return 100.0 * float((out.argmax(1) == y).float().mean()), out


def test_load_run_reproduces_the_summary(lats_run):
    run = snnprune.load_run(lats_run)
    assert run.path == lats_run and run.config["method"] == "lats" and not run.model.training
    top1, out = _top1(run.model, run.test_data(batch_size=16))
    assert top1 == pytest.approx(run.summary["test_top1"])
    assert snnprune.sparsity(run.model)["overall"] == pytest.approx(run.summary["sparsity"], abs=1e-6)
    assert run.pruner.step_count == 2
    plain = snnprune.load_run(lats_run / "best.pth", finalize=True)
    assert plain.pruner is None and not any("parametrizations" in k for k in plain.model.state_dict())
    _, out_plain = _top1(plain.model, run.test_data(batch_size=16))
    assert torch.allclose(out, out_plain, atol=1e-5)
    assert snnprune.sparsity(plain.model)["overall"] == pytest.approx(run.summary["sparsity"], abs=1e-6)


def test_load_run_compact(sew, tmp_path):
    summary = sew.main(["--method", "slats", "--granularity", "filter", "--final-threshold", "0.2",
                        "--prune-exclude", "fc", "--export", *TINY, "--output-dir", str(tmp_path)])  # fmt: skip
    small = snnprune.load_run(summary["run_dir"], compact=True)
    assert small.pruner is None
    assert sum(p.numel() for p in small.model.parameters()) == summary["export"]["compact_params"]
    run = snnprune.load_run(summary["run_dir"])  # the run's --prune-exclude fc applies again
    assert not parametrize.is_parametrized(run.model.fc) and parametrize.is_parametrized(run.model.conv1)


def _damaged(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    return folder


@pytest.mark.parametrize(
    ("make", "error", "fragment"),
    [
        (lambda p: p / "missing", ConfigError, "does not exist"),
        (lambda p: p, ConfigError, "has no config.json"),
        (lambda p: _damaged(p / "bad"), ConfigError, "is damaged"),
    ],
)
def test_load_run_bad_path_one_clear_error(tmp_path, make, error, fragment):
    with pytest.raises(error, match=fragment) as exc:
        snnprune.load_run(make(tmp_path))
    assert len(str(exc.value).splitlines()) == 1 and str(exc.value).startswith("load_run: ")


def test_load_run_without_record_needs_builder(lats_run, tmp_path):
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(lats_run, old)
    config = json.loads((old / "config.json").read_text())
    record = config.pop("model_builder")
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="pass builder="):
        snnprune.load_run(old)
    with pytest.raises(ConfigError, match=r"no model_compact\.pth"):
        snnprune.load_run(lats_run, compact=True)
    import models

    run = snnprune.load_run(
        old, builder=lambda c: models.create_model(**{k: v for k, v in record.items() if k != "_target_"})
    )
    assert run.pruner.step_count == 2
    (old / "checkpoint.pth").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="load_run: checkpoint"):
        snnprune.load_run(old, builder=lambda c: None)
