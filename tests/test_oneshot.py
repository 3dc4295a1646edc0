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


def _correlated(n: int, d: int, seed: int) -> torch.Tensor:
    """``n`` samples of ``d`` correlated inputs of uneven scale (float64)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) + 2 * torch.eye(d, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix * torch.linspace(0.2, 3, d).double()


def test_osbc_survivors_are_the_least_squares_solution_of_their_mask():
    a = _correlated(40, 9, 0)
    w = torch.randn(4, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = oneshot_mod.osbc_solve(w, a.T @ a / 40, 3, damp=0.0)
    for row, new in zip(w, out, strict=True):
        kept = new.ne(0).nonzero().flatten()
        assert kept.numel() == 3
        ref = torch.linalg.lstsq(a[:, kept], (a @ row).unsqueeze(1)).solution.flatten()  # min ||A_S v - A w||
        torch.testing.assert_close(new[kept], ref, rtol=1e-9, atol=1e-12)


def test_osbc_first_zero_is_the_brute_force_obs_choice():
    a = _correlated(30, 6, 2)
    w = torch.randn(20, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def error(row: torch.Tensor, q: int) -> float:  # remove q, re-fit the others by least squares
        keep = [i for i in range(6) if i != q]
        v = torch.linalg.lstsq(a[:, keep], a @ row).solution
        return float((a[:, keep] @ v - a @ row).pow(2).sum())

    out = oneshot_mod.osbc_solve(w, a.T @ a, 5, damp=0.0)  # every row a 1-row problem of its own
    best = [min(range(6), key=lambda q, r=row: error(r, q)) for row in w]
    assert out.eq(0).nonzero()[:, 1].tolist() == best
    assert best != w.abs().argmin(1).tolist()  # magnitude removes another weight in some rows


def test_osbc_reconstruction_error_is_below_magnitude_at_the_same_sparsity():
    a = _correlated(200, 24, 3)
    w = torch.randn(8, 24, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    h = a.T @ a / 200
    for keep in (3, 6, 12):
        magnitude = w * (w.abs() >= w.abs().topk(keep, dim=1).values[:, -1:])
        osbc = oneshot_mod.osbc_solve(w, h, keep)
        assert osbc.ne(0).sum(1).tolist() == [keep] * 8
        err = [float(((x - w) @ a.T).pow(2).sum()) for x in (osbc, magnitude)]
        assert err[0] < err[1], keep


def test_osbc_nm_groups_keep_n_of_every_m():
    from snnprune.threshold.nm import to_groups

    shape = torch.Size([5, 8, 3, 3])
    groups = oneshot_mod.nm_column_groups(shape, 4)
    assert sorted(groups.flatten().tolist()) == list(range(72))  # a partition of the columns
    a = _correlated(300, 72, 5)
    w = torch.randn(5, 72, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out = oneshot_mod.osbc_solve(w, a.T @ a / 300, 2, groups=groups).reshape(shape)
    assert set(to_groups(out, 4).ne(0).sum(1).tolist()) == {2}


def test_membrane_hessian_is_the_charge_over_time():
    from spikingjelly.activation_based import layer, neuron

    torch.manual_seed(0)
    conv = layer.Conv2d(2, 3, 3, padding=1, stride=2, bias=False, step_mode="m")
    fc = layer.Linear(3 * 16, 4, step_mode="m")
    model = nn.Sequential(conv, neuron.LIFNode(tau=4.0, step_mode="m"), layer.Flatten(step_mode="m"), fc)
    assert oneshot_mod.membrane_decay(model) == 0.75
    x = [torch.rand(3, 5, 2, 8, 8) for _ in range(2)]  # [T, N, C, H, W]
    h = oneshot_mod.membrane_hessians(model, {"conv": conv, "fc": fc}, x, 0.75)
    charged = []
    for xb in x:  # sum_s 0.75^(t-s) x_s by hand
        charged.append(torch.stack([sum(0.75 ** (t - s) * xb[s] for s in range(t + 1)) for t in range(3)]))
    v = torch.randn(7, 18, dtype=torch.float64)  # any W: mean ||W a||² over patches = trace(W H Wᵀ)
    out = torch.cat([nn.functional.conv2d(c.flatten(0, 1).double(), v.view(7, 2, 3, 3), padding=1, stride=2)
                     for c in charged])  # fmt: skip
    torch.testing.assert_close(torch.trace(v @ h["conv"] @ v.T), out.pow(2).sum() / (out.numel() / 7))
    model(x[0])  # the fc input: flattened spikes, charged over T like the conv's
    assert h["fc"].shape == (48, 48) and torch.equal(h["fc"], h["fc"].T)


def test_membrane_decay_refuses_learnable_or_mixed_decays():
    from spikingjelly.activation_based import neuron

    assert oneshot_mod.membrane_decay(nn.Sequential(neuron.IFNode(), nn.Linear(2, 2))) == 1.0
    with pytest.raises(ValueError, match="learnable decay"):
        oneshot_mod.membrane_decay(nn.Sequential(neuron.ParametricLIFNode()))
    with pytest.raises(ValueError, match="needs one decay"):
        oneshot_mod.membrane_decay(nn.Sequential(neuron.IFNode(), neuron.LIFNode(tau=2.0)))


def test_osbc_oneshot_prunes_every_row_and_writes_a_run(dense_run, tmp_path):
    summary = oneshot_prune(dense_run, tmp_path, target_sparsity=0.9, method="osbc", **KW)
    assert summary["run_dir"].endswith("dense_oneshot_osbc_P0.9")
    pruned = load_run(summary["run_dir"], finalize=True)
    assert pruned.config["oneshot"]["method"] == "osbc"
    for name, m in pruned.model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            d = m.weight[0].numel()
            assert m.weight.flatten(1).ne(0).sum(1).tolist() == [math.ceil(0.1 * d)] * m.weight.shape[0], name
    assert summary["test_top1"] == _top1(pruned.model, pruned)


# (keywords, prepare the run folder, expected message): every case before any data is read
BAD = [
    ({"target_sparsity": 0.9, "method": "obs"}, None, "--method: must be one of magnitude, osbc, got 'obs'"),
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


def test_energy_figure_reads_a_oneshot_run_folder(dense_run, tmp_path):
    # scripts/oneshot.py writes no best.pth: the energy figure's --pruned takes its final checkpoint.pth
    summary = oneshot_prune(dense_run, tmp_path, target_sparsity=0.9, **KW)
    model, args, info = load_script("make_energy_figure").load_run(summary["run_dir"], "--pruned")
    assert args.oneshot["method"] == "magnitude" and info["test_top1"] == summary["test_top1"]
    assert snnprune.sparsity(model)["overall"] == pytest.approx(summary["sparsity"])
