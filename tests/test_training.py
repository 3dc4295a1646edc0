"""Tests of the shared training engine and both training scripts (tiny runs on CPU)."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import snnprune
from snnprune.training import (
    CheckpointError,
    ConfigError,
    get_args_parser,
    load_checkpoint,
    parse_args,
    pruner_kwargs,
    save_checkpoint,
)
from snnprune.training.checkpoint import TrainState
from snnprune.training.run_folder import METRICS_COLUMNS, STEPS_COLUMNS
from snnprune.training.validation import resolve_device

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
TINY = ["--width", "8", "--epochs", "1", "--batch-size", "16", "--limit-train-batches", "2",
        "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet"]  # fmt: skip
SNN_TINY = [*TINY, "--T", "2"]


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


ROUNDS = ("imp",)  # rounds of whole epochs do not fit a 1-epoch run: tests/test_imp.py runs them


@pytest.mark.parametrize("method", [m for m in snnprune.list_methods() if m not in ROUNDS])
def test_smoke_sew_every_method(sew, tmp_path, method):
    summary = sew.main(["--method", method, *SNN_TINY, "--output-dir", str(tmp_path)])
    run = Path(summary["run_dir"])
    assert summary["kind"] == "snn" and summary["method"] == method
    assert 0.0 <= summary["sparsity"] <= 1.0 and summary["epochs"] == 1
    assert 0.0 <= summary["firing_rate"] <= 1.0
    header, rows = _read_csv(run / "metrics.csv")
    assert header == METRICS_COLUMNS and len(rows) == 1
    assert float(rows[0]["sparsity"]) == pytest.approx(summary["sparsity"], abs=1e-6)
    header, rows = _read_csv(run / "steps.csv")
    assert header == STEPS_COLUMNS and [int(r["step"]) for r in rows] == [1, 2]
    written = json.loads((run / "summary.json").read_text())
    assert set(written) == {"kind", "model", "method", "dataset", "test_top1", "test_top5", "sparsity",
                            "nonzero_params", "params", "firing_rate", "energy_pj", "sops", "macs", "neuron_sparsity",
                            "threshold", "wall_time_s", "epochs"}  # fmt: skip
    assert 0 < written["nonzero_params"] <= written["params"]
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "snn" and config["method"] == method and config["dataset"] == "embedded_mnist"
    assert (run / "checkpoint.pth").is_file() and (run / "best.pth").is_file()
    assert any((run / "tb").iterdir())
    if method == "dense":
        assert summary["sparsity"] == 0.0


@pytest.mark.parametrize("method", [m for m in snnprune.list_methods() if m not in ROUNDS])
def test_smoke_ann_every_method(ann, tmp_path, method):
    summary = ann.main(["--method", method, *TINY, "--output-dir", str(tmp_path)])
    assert summary["kind"] == "ann" and summary["firing_rate"] is None
    _, rows = _read_csv(Path(summary["run_dir"]) / "metrics.csv")
    assert rows[0]["firing_rate"] == ""


def test_lats_reaches_final_threshold_and_export(sew, tmp_path):
    summary = sew.main(["--method", "lats", "--final-threshold", "0.04", *SNN_TINY, "--export",
                        "--output-dir", str(tmp_path)])  # fmt: skip
    # final eval uses d = D (snnprune/docs/methods.md 12.6)
    assert summary["threshold"] == pytest.approx(0.04, rel=1e-6)
    run = Path(summary["run_dir"])
    sparse = torch.load(run / "model_sparse.pth")
    assert not any("parametrizations" in k for k in sparse)
    ckpt = load_checkpoint(run / "checkpoint.pth")
    weights = [v for k, v in sparse.items() if k.endswith("weight") and v.dim() > 1]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros / sum(w.numel() for w in weights) == pytest.approx(summary["sparsity"], abs=1e-6)
    assert ckpt["pruner"]["method"] == "lats" and ckpt["epoch"] == 0 and ckpt["global_step"] == 2
    written = {"model", "optimizer", "lr_scheduler", "scaler", "pruner", "rng", "epoch", "global_step",
               "best_top1", "args", "kind"}  # fmt: skip
    assert set(ckpt) == written == {f.name for f in dataclasses.fields(TrainState)}  # the one schema


def test_resume_equals_uninterrupted(sew, tmp_path):
    base = ["--method", "lats", "--width", "8", "--T", "2", "--epochs", "3", "--batch-size", "16",
            "--limit-train-batches", "3", "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet"]  # fmt: skip
    full = sew.main([*base, "--output-dir", str(tmp_path / "a")])
    part = sew.main([*base, "--output-dir", str(tmp_path / "b"), "--stop-after-epoch", "0"])
    assert part["epochs"] == 1
    resumed = sew.main([*base, "--output-dir", str(tmp_path / "b"), "--resume", "auto"])
    a = load_checkpoint(Path(full["run_dir"]) / "checkpoint.pth")
    b = load_checkpoint(Path(resumed["run_dir"]) / "checkpoint.pth")
    assert a["global_step"] == b["global_step"] == 9
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["pruner"] == b["pruner"]
    assert resumed["test_top1"] == full["test_top1"] and resumed["sparsity"] == full["sparsity"]
    sa = (Path(full["run_dir"]) / "steps.csv").read_text()
    sb = (Path(resumed["run_dir"]) / "steps.csv").read_text()
    assert sa == sb
    _, rows = _read_csv(Path(resumed["run_dir"]) / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]


def test_a_run_builds_one_pruner_configured_before_the_data(sew, tmp_path, monkeypatch):
    """Validation configures the run's pruner before any data is read; the engine attaches that same one,
    its steps counted by the data (1 epoch of 2 batches, so total_steps 2)."""
    import snnprune.training.engine as engine
    from snnprune.methods import Pruner

    built, pruners_at_data = [], []  # the distinct pruners constructed, and how many before the data
    init, build_datasets = Pruner.__init__, engine.build_datasets

    def spy(self, **kwargs):
        built.extend([] if any(p is self for p in built) else [self])
        init(self, **kwargs)

    monkeypatch.setattr(Pruner, "__init__", spy)
    monkeypatch.setattr(
        engine, "build_datasets", lambda args: pruners_at_data.append(len(built)) or build_datasets(args)
    )
    argv = ["--method", "gmp", "--prune-end-epoch", "1", *SNN_TINY, "--output-dir", str(tmp_path)]
    run = Path(sew.main(argv)["run_dir"])
    assert pruners_at_data == [1] and len(built) == 1
    assert built[0].total_steps == built[0].end_step == 2 and built[0].layers
    assert load_checkpoint(run / "checkpoint.pth")["pruner"] == built[0].state_dict()


def test_resume_keeps_the_best_top1_of_the_epochs_before_it(sew, tmp_path):
    """The best accuracy so far travels in the checkpoint: set to 100 % before the resume, no later epoch
    beats it, so best.pth stays the file of epoch 0 and the last checkpoint still says 100."""
    base = ["--method", "lats", *SNN_TINY[:2], "--epochs", "2", *SNN_TINY[4:], "--output-dir", str(tmp_path)]
    run = Path(sew.main([*base, "--stop-after-epoch", "0"])["run_dir"])
    ckpt = load_checkpoint(run / "checkpoint.pth")
    save_checkpoint({**ckpt, "best_top1": 100.0}, run / "checkpoint.pth")
    best = (run / "best.pth").read_bytes()
    sew.main([*base, "--resume", "auto"])
    assert load_checkpoint(run / "checkpoint.pth")["epoch"] == 1
    assert load_checkpoint(run / "checkpoint.pth")["best_top1"] == 100.0
    assert (run / "best.pth").read_bytes() == best


def test_datasets_stay_on_the_cpu_whatever_the_default_device():
    """Under another default device (``meta`` here, ``cuda`` after ``torch.set_default_device``) the data
    is still host memory, as DataLoader workers and pinned memory need."""
    import numpy as np

    from snnprune import data

    data._embedded_mnist.cache_clear()
    try:
        with torch.device("meta"):
            train, test, _, _ = data.build_datasets(argparse.Namespace(dataset="embedded_mnist"))
            frames = data._to_float_tensor(np.zeros((2, 2, 3, 3)))
        (x, y), (xt, _) = train[0], test[0]
        assert {x.device.type, y.device.type, xt.device.type, frames.device.type} == {"cpu"}
        assert x.shape == (1, 28, 28) and float(x.std()) > 0
    finally:
        data._embedded_mnist.cache_clear()


def test_test_only_reproduces_final_accuracy(ann, tmp_path):
    summary = ann.main(["--method", "slats", *TINY, "--output-dir", str(tmp_path)])
    ckpt = Path(summary["run_dir"]) / "checkpoint.pth"
    before = ckpt.read_bytes()
    res = ann.main(
        ["--method", "slats", *TINY, "--output-dir", str(tmp_path), "--test-only", "--resume", str(ckpt)]
    )
    assert res["test_top1"] == pytest.approx(summary["test_top1"])
    assert res["sparsity"] == pytest.approx(summary["sparsity"])
    assert ckpt.read_bytes() == before


def test_bad_data_path_one_line_exit_2(sew, tmp_path, capsys):
    missing = tmp_path / "nope"
    with pytest.raises(SystemExit) as exc:
        sew.main(
            ["--dataset", "cifar10", "--data-path", str(missing), *SNN_TINY, "--output-dir", str(tmp_path)]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(missing) in err[0] and "--download" in err[0]
    with pytest.raises(SystemExit):
        sew.main(
            ["--dataset", "imagenet", "--data-path", str(tmp_path), *SNN_TINY, "--output-dir", str(tmp_path)]
        )
    err = capsys.readouterr().err
    assert "train" in err and "ImageFolder" in err and "Traceback" not in err


def test_corrupt_checkpoint_clear_error_nothing_overwritten(sew, tmp_path, capsys):
    run = tmp_path / "r" / "x"
    run.mkdir(parents=True)
    junk = b"this is not a checkpoint" * 10
    (run / "checkpoint.pth").write_bytes(junk)
    with pytest.raises(SystemExit) as exc:
        sew.main([*SNN_TINY, "--output-dir", str(tmp_path / "r"), "--run-name", "x", "--resume", "auto"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and "checkpoint.pth" in err
    assert (run / "checkpoint.pth").read_bytes() == junk
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pth"]


def test_save_checkpoint_is_atomic(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 0, "global_step": 1}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 (pickling error type varies)
        save_checkpoint({"model": {}, "epoch": 1, "global_step": 2, "bad": lambda: 0}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pth", "c.pth.sha256"]
    torch.save({"x": 1}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a snnprune training checkpoint"):
        load_checkpoint(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")


def test_config_yaml_and_cli_override(tmp_path, ann):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 0.05\nepochs: 3\nfinal-threshold: 0.2\nopt: adam\n")
    parser = get_args_parser(snn=True, defaults={"lr": 0.1, "epochs": 9})
    args = parse_args(parser, ["--config", str(cfg), "--epochs", "1"])
    assert (args.lr, args.epochs, args.final_threshold, args.opt) == (0.05, 1, 0.2, "adam")
    for name in ("sew_resnet18_imagenet_lats", "stds_cifar10", "resnet50_lats", "mobilenet_v1_lats"):
        a = parse_args(get_args_parser(snn=True), ["--config", str(SCRIPTS / "configs" / f"{name}.yaml")])
        assert a.method in snnprune.list_methods()
    # a recipe does not inherit the embedded default run's small stem / width 16 / 8 epochs
    parser = ann.get_parser()
    assert (parser.parse_args([]).stem, parser.parse_args([]).width) == ("small", 16)
    a = parse_args(parser, ["--config", str(SCRIPTS / "configs" / "resnet50_lats.yaml")])
    assert (a.model, a.stem, a.width, a.epochs) == ("resnet50", None, None, 100)
    a = parse_args(
        get_args_parser(snn=True), ["--config", str(SCRIPTS / "configs" / "sew_resnet18_imagenet_lats.yaml")]
    )
    assert (a.T, a.neuron, a.cnf, a.lr, a.epochs, a.batch_size, a.amp) == (
        4,
        "if",
        "ADD",
        0.1,
        320,
        32,
        "fp16",
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nlearning_rate: 3\n")
    with pytest.raises(ConfigError, match="unknown keys \\['learning_rate'\\]"):
        parse_args(get_args_parser(), ["--config", str(bad)])
    with pytest.raises(ConfigError, match="does not exist"):
        parse_args(get_args_parser(), ["--config", str(tmp_path / "none.yaml")])
    one = tmp_path / "one.yaml"
    one.write_text("prune_exclude: fc\n")  # a scalar for a list option is one pattern, not its letters
    assert parse_args(get_args_parser(), ["--config", str(one)]).prune_exclude == ["fc"]


def test_pruner_kwargs_mapping():
    args = get_args_parser().parse_args(["--method", "pgh", "--final-threshold", "0.3", "--beta", "0.5",
                                         "--epochs", "4", "--prune-start-epoch", "1"])  # fmt: skip
    assert pruner_kwargs(args) == {"total_steps": 4, "start_step": 1, "final_threshold": 0.3, "beta": 0.5}
    args.method = "gmp"
    args.target_sparsity = 0.7
    assert pruner_kwargs(args) == {"total_steps": 4, "start_step": 1, "target_sparsity": 0.7}
    args.prune_end_epoch = 3  # ramp ends after epoch 3, one epoch of fine-tuning with the final mask
    assert pruner_kwargs(args)["end_step"] == 3
    # counted in optimizer steps once an epoch's length is known
    pruner = snnprune.get_method("gmp")(**pruner_kwargs(args)).scale_steps(10)
    assert (pruner.total_steps, pruner.start_step, pruner.end_step) == (40, 10, 30)
    args.method = "nope"
    with pytest.raises(ValueError, match="unknown pruning method 'nope'"):
        pruner_kwargs(args)


def test_fp16_on_cpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="bf16"):
        resolve_device("cpu", "fp16")


@pytest.mark.parametrize("method", ["lats", "shi2024"])  # shi2024: neuron-mask logits shaped by a forward
def test_ddp_two_processes_gloo_same_sparsity(tmp_path, method):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(SCRIPTS / "train_sew.py"), "--method", method, *SNN_TINY, "--device", "cpu",
           "--output-dir", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = sorted(line for line in out.stdout.splitlines() if line.startswith("[rank "))
    assert [line[:8] for line in lines] == ["[rank 0]", "[rank 1]"]
    assert lines[0].split("]", 1)[1] == lines[1].split("]", 1)[1]  # same sparsity/threshold/accuracy
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.csv").is_file()
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["world_size"] == 2


def test_spike_rate_monitor_and_is_spiking_rule():
    from spikingjelly.activation_based import functional, neuron

    from snnprune.analysis.spikes import SpikeRateMonitor, is_spiking

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), neuron.IFNode(v_threshold=0.5))
    x = torch.randn(7, 6)
    with SpikeRateMonitor(net) as monitor, torch.no_grad():
        out = net(x)
        functional.reset_net(net)
    assert monitor.totals() == [float(out.sum()), 35.0]
    assert monitor.rate() == pytest.approx(float(out.mean()))
    assert not net[1]._forward_hooks  # hooks removed on exit
    ann = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU())
    with SpikeRateMonitor(ann) as m2:
        ann(x)
    assert is_spiking(net) and not is_spiking(ann) and m2.totals() == [0.0, 0.0] and m2.rate() != m2.rate()
    net.is_spiking = False  # a model may declare itself: the flag wins (analyze and the engine agree)
    assert not is_spiking(net)


def test_training_order_is_a_function_of_the_epoch():
    from snnprune.training.builders import build_loaders

    data = torch.utils.data.TensorDataset(torch.arange(50))
    args = argparse.Namespace(batch_size=10, workers=0, seed=7)
    loader, _, sampler = build_loaders(data, data, args, distributed=False)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        orders.append(torch.cat([x for (x,) in loader]).tolist())
    expected = [torch.randperm(50, generator=torch.Generator().manual_seed(7 + e)).tolist() for e in (0, 1)]
    assert orders == [expected[0], expected[1], expected[0]] and orders[0] != orders[1]


def test_count_params_counts_the_effective_weight():
    from snnprune.training.engine import count_params

    layer = torch.nn.Linear(3, 2)  # 6 weights + 2 biases
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.05, -0.9, 0.2], [-0.05, 0.0, 1.0]]))
        layer.bias.copy_(torch.tensor([0.0, 0.5]))
    snnprune.register_soft_threshold(layer, threshold=0.1)  # |θ| <= 0.1 -> 0: three weights
    assert count_params(layer) == (8, 3 + 1)  # θ itself has five non-zeros: a θ count gives 6


def test_count_params_leaves_out_mask_logits():
    """shi2024 gives every weight a mask logit: the count is the layer's 8 effective parameters, not 14."""
    from snnprune.training.engine import count_params

    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    snnprune.sparsify(model, "shi2024", total_steps=4)
    assert sum(p.numel() for p in model.parameters()) == 8 + 6  # θ, bias and one logit per weight
    assert count_params(model)[0] == 8


def test_recalibrate_bn_leaves_the_random_state_as_it_was():
    from snnprune.structured import recalibrate_bn

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))
    before = torch.get_rng_state()
    recalibrate_bn(
        model, [torch.randn(8, 4, generator=torch.Generator().manual_seed(0))], reset=lambda m: None
    )
    assert torch.equal(torch.get_rng_state(), before)  # dropout drew inside fork_rng only
    assert not torch.equal(model[1].running_mean, torch.zeros(4))
