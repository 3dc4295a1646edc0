"""Tests for scripts/make_figures.py, scripts/sweep.py and scripts/reference_points.csv (synthetic runs)."""

from __future__ import annotations

import copy
import csv
import itertools
import json
import math
from pathlib import Path

import pytest
from helpers import load_script
from torch import nn

import models

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


mf = load_script("make_figures")
msf = load_script("make_structured_figure")
sweep = load_script("sweep")

METRIC_COLS = (
    "epoch,lr,train_loss,train_top1,test_loss,test_top1,test_top5,sparsity,threshold,firing_rate,epoch_time_s"
)
RUNS = [  # kind, method, shape, D, sparsity, top1
    ("snn", "dense", None, 0.0, 0.0, 95.0),
    ("snn", "lats", None, 0.2, 0.8, 93.0),
    ("snn", "stds", "sine", 0.2, 0.7, 91.0),
    ("ann", "dense", None, 0.0, 0.0, 97.0),
    ("ann", "lats", None, 0.2, 0.75, 96.0),
    ("ann", "stds", "sine", 0.2, 0.9, 94.0),
]
LAYERS = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "fc"]


def _write_run(root: Path, kind, method, shape, D, sp, top1, epochs=2, steps_per_epoch=5) -> Path:
    name = f"{kind}_{method}" + (f"-{shape}" if shape else "") + ("" if method == "dense" else f"_{D:g}")
    d = root / name
    d.mkdir(parents=True)
    cfg = {
        "kind": kind,
        "model": "sew_resnet18" if kind == "snn" else "ann_resnet18",
        "method": method,
        "dataset": "embedded_mnist",
        "final_threshold": D if method != "dense" else None,
        "stds_shape": shape or "sine",
        "epochs": epochs,
    }
    (d / "config.json").write_text(json.dumps(cfg))
    n = epochs * steps_per_epoch
    with open(d / "steps.csv", "w") as f:
        f.write("step,epoch,lr,threshold,loss\n")
        for k in range(n):
            lr = 0.1 * (1 + math.cos(math.pi * k / n)) / 2
            thr = 0.0 if method == "dense" else D * (k + 1) / n
            f.write(f"{k},{k // steps_per_epoch},{lr},{thr},{1.0 / (k + 1)}\n")
    with open(d / "metrics.csv", "w") as f:
        f.write(METRIC_COLS + "\n")
        for e in range(epochs):
            fr = "0.1" if kind == "snn" else ""
            f.write(f"{e},0.1,1.0,50,1.0,{top1},99,{sp * (e + 1) / epochs},{D},{fr},1.0\n")
    energy = 1e6 * (1 - sp) * (0.9 if kind == "snn" else 4.6)
    layers = [
        {
            "name": ln,
            "kind": "linear" if ln == "fc" else "conv",
            "params": 100,
            "nonzero_params": int(100 * (1 - sp)),
            "sparsity": sp,
            "firing_rate": None,
            "sops": 0,
            "macs": 0,
            "energy_pj": 0,
        }
        for ln in LAYERS
    ]
    if kind == "snn":
        layers += [
            {
                "name": f"sn{i}",
                "kind": "neuron",
                "params": 0,
                "nonzero_params": 0,
                "sparsity": 0.0,
                "firing_rate": 0.2 - 0.05 * i * sp,
                "sops": 0,
                "macs": 0,
                "energy_pj": 0,
            }
            for i in range(3)
        ]
    (d / "analyze.json").write_text(json.dumps({"layers": layers, "totals": {"sparsity": sp}}))
    summary = {
        "kind": kind,
        "model": cfg["model"],
        "method": method,
        "dataset": "embedded_mnist",
        "test_top1": top1,
        "test_top5": 99.0,
        "sparsity": sp,
        "nonzero_params": 1,
        "params": 2,
        "firing_rate": 0.1 if kind == "snn" else None,
        "energy_pj": energy,
        "sops": 1,
        "macs": 1,
        "threshold": D,
        "wall_time_s": 1.0,
        "epochs": epochs,
    }
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for r in RUNS:
        _write_run(root / "sweep", *r)
    out = root / "figs"
    written = mf.main([str(root), "--out", str(out)])
    return out, written


STEMS = [
    "fig1_top1_vs_sparsity",
    "fig2_energy_vs_top1",
    "fig3_threshold_schedules",
    "fig4_layer_sparsity",
    "fig5_firing_rate",
]


@pytest.mark.parametrize("stem", STEMS)
def test_every_figure_written(figures, stem):
    out, written = figures
    for ext in ("png", "svg", "csv"):
        p = out / f"{stem}.{ext}"
        assert p.exists() and p.stat().st_size > 0, p
        assert p in written
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / f"{stem}.svg").read_bytes()[:2000]


def test_fig1_csv_one_row_per_run(figures):
    rows = _rows(figures[0] / "fig1_top1_vs_sparsity.csv")
    ours = {r["run"]: r for r in rows if r["kind"] in ("snn", "ann")}
    assert len(ours) == len(RUNS)
    assert float(ours["snn_lats_0.2"]["sparsity"]) == pytest.approx(0.8)
    assert float(ours["snn_lats_0.2"]["connectivity_pct"]) == pytest.approx(20.0)
    assert ours["ann_stds-sine_0.2"]["method"] == "stds-sine"
    assert float(ours["ann_stds-sine_0.2"]["test_top1"]) == pytest.approx(94.0)
    published = [r for r in rows if r["kind"].startswith("published_")]
    refs = [r for r in mf.load_reference_points() if r["top1"]]
    assert len(published) == len(refs) > 0
    n_snn = sum(r["kind"] == "snn" for r in refs)
    assert sum(r["kind"] == "published_snn" for r in published) == n_snn > 0


def test_fig2_energy_in_uj(figures):
    rows = {r["run"]: r for r in _rows(figures[0] / "fig2_energy_vs_top1.csv")}
    assert len(rows) == len(RUNS)
    assert float(rows["ann_dense"]["energy_uj"]) == pytest.approx(4.6)
    assert float(rows["snn_lats_0.2"]["energy_uj"]) == pytest.approx(0.9 * 0.2)


def test_fig3_implied_l1_matches_formula(figures):
    rows = [r for r in _rows(figures[0] / "fig3_threshold_schedules.csv") if r["method"] == "lats"]
    step_rows = [r for r in rows if r["row"] == "step"]
    assert rows[0]["run"] == "snn_lats_0.2" and len(step_rows) == 10
    n = 10
    for k in range(n - 1):
        lr = 0.1 * (1 + math.cos(math.pi * k / n)) / 2
        assert float(step_rows[k]["implied_l1"]) == pytest.approx((0.2 / n) / lr)
    epoch_rows = [r for r in rows if r["row"] == "epoch"]
    assert [float(r["sparsity"]) for r in epoch_rows] == pytest.approx([0.4, 0.8])
    assert [int(r["step"]) for r in epoch_rows] == [4, 9]


def test_fig3_implied_l1_is_in_phase_with_the_lats_increment():
    # LATS: d_k = lambda * (eta_1 + ... + eta_k), the lr changing once per epoch (3 steps per epoch). Pairing
    # d_{k+1} - d_k with eta_k would dip at every epoch boundary; in phase the curve is flat.
    lam, lrs = 0.25, [0.1, 0.1, 0.1, 0.06, 0.06, 0.06, 0.01, 0.01, 0.01]
    d, steps = 0.0, []
    for k, lr in enumerate(lrs):
        d += lam * lr
        steps.append({"step": k + 1, "epoch": k // 3, "lr": lr, "threshold": d})
    assert mf.implied_l1(steps) == pytest.approx([lam] * len(lrs), rel=1e-12)
    steps[4]["lr"] = 0.0  # no lr, no coefficient
    assert math.isnan(mf.implied_l1(steps)[4])


def test_fig3_lambda_axis_shows_a_constant_as_flat():
    lo, hi = mf._lambda_limits([0.0064516, 0.0064517, 0.0064515, math.nan, 0.0])
    assert lo < 0.0064515 < 0.0064517 < hi and hi / lo == pytest.approx(100.0)
    lo, hi = mf._lambda_limits([1e-9, 1e-2, 1.0])  # more than 4 decades below the top are clipped
    assert lo == pytest.approx(1e-4 / 1.5) and hi == pytest.approx(1.5)


def test_fig4_picks_the_runs_closest_to_the_matched_level(tmp_path):
    for r in [
        ("snn", "lats", None, 0.2, 0.8, 93.0),
        ("snn", "lats", None, 0.4, 0.93, 90.0),
        ("ann", "lats", None, 0.2, 0.75, 96.0),
        ("ann", "lats", None, 0.4, 0.6, 97.0),
        ("snn", "stds", "sine", 0.2, 0.5, 91.0),
        ("ann", "stds", "sine", 0.2, 0.55, 94.0),
    ]:
        _write_run(tmp_path / "runs", *r)
    out = tmp_path / "figs"
    mf.main([str(tmp_path / "runs"), "--out", str(out), "--match-sparsity", "0.9"])
    rows = _rows(out / "fig4_layer_sparsity.csv")
    lats = {(r["snn_run"], r["ann_run"], r["matched_level_pct"]) for r in rows if r["method"] == "lats"}
    assert lats == {("snn_lats_0.4", "ann_lats_0.2", "90.0")}
    mf.main([str(tmp_path / "runs"), "--out", str(out), "--match-sparsity", "0.6"])
    rows = _rows(out / "fig4_layer_sparsity.csv")
    lats = {(r["snn_run"], r["ann_run"]) for r in rows if r["method"] == "lats"}
    assert lats == {("snn_lats_0.2", "ann_lats_0.4")}
    with pytest.raises(SystemExit) as exc:
        mf.main([str(tmp_path / "runs"), "--out", str(out), "--match-sparsity", "90"])
    assert exc.value.code == 2


def test_fig4_pairs_and_fig5_firing(figures):
    rows = _rows(figures[0] / "fig4_layer_sparsity.csv")
    assert {r["method"] for r in rows} == {"lats", "stds-sine"}
    lats = [r for r in rows if r["method"] == "lats"]
    assert [r["layer"] for r in lats] == LAYERS
    assert float(lats[0]["snn_sparsity_pct"]) == pytest.approx(80.0)
    assert float(lats[0]["ann_sparsity_pct"]) == pytest.approx(75.0)
    fr = _rows(figures[0] / "fig5_firing_rate.csv")
    assert {r["run"] for r in fr} == {"snn_dense", "snn_lats_0.2", "snn_stds-sine_0.2"}
    last = next(r for r in fr if r["run"] == "snn_lats_0.2" and r["index"] == "2")
    assert float(last["firing_rate"]) == pytest.approx(0.2 - 0.1 * 0.8)


def test_make_figures_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run folders"):
        mf.main([str(tmp_path), "--out", str(tmp_path / "o")])
    bad = tmp_path / "ref.csv"
    head = "model,dataset,kind,method,sparsity,top1,top5,metric_note,source\n"
    bad.write_text(head + "r50,imagenet,ann,str,0.9,74,,x,\n")
    with pytest.raises(ValueError, match="without a source"):
        mf.load_reference_points(bad)
    bad.write_text(head + "r50,imagenet,cnn,str,0.9,74,,x,STR README\n")
    with pytest.raises(ValueError, match="kind is 'cnn'; set the kind column to snn or ann"):
        mf.load_reference_points(bad)


def test_reference_points_have_sources():
    rows = mf.load_reference_points()
    assert len(rows) >= 20
    for r in rows:
        assert r["source"].strip()
        assert 0.0 <= float(r["sparsity"]) < 1.0
        assert r["top1"] or r["top5"]
        assert "unverified" not in " ".join(r.values()).lower()
    str90 = [
        r for r in rows if r["method"] == "str" and r["model"] == "resnet50" and r["sparsity"] == "0.9023"
    ]
    assert float(str90[0]["top1"]) == pytest.approx(74.31)


def test_sweep_quick_plan_and_names(tmp_path):
    ramp = ["--prune-end-epoch", "2"]
    specs = sweep.plan(
        tmp_path, sweep.QUICK_GRID, ["snn", "ann"], ["--epochs", "3"], ["--T", "2"], ramp_flags=ramp
    )
    names = [s.name for s in specs]
    # dense + 5 threshold methods x 4 D + gmp x 4 targets + lats 2:4 + gmp 2:8 + imp x 4 targets + one-shot
    # magnitude and osbc x 4 targets + shi2024 x 3 penalties, for each of snn and ann
    assert len(names) == len(set(names)) == 2 * (1 + 5 * 4 + 4 + 2 + 4 + 2 * 4 + 3)
    assert {"snn_dense", "ann_dense", "snn_stds-sine_0.15", "snn_stds-linear_0.15", "ann_gmp_0.9"} <= set(
        names
    )
    snn = next(s for s in specs if s.name == "snn_pgh_0.15")
    assert snn.command[1].endswith("train_sew.py")
    assert snn.command[snn.command.index("--final-threshold") + 1] == "0.15"
    assert snn.command[snn.command.index("--beta") + 1] == str(sweep.QUICK_PGH_BETA)
    assert snn.command[snn.command.index("--run-name") + 1] == "snn_pgh_0.15"
    assert snn.command[snn.command.index("--resume") + 1] == "auto"  # a killed run continues
    assert "--prune-end-epoch" not in snn.command  # threshold methods schedule over the whole run
    ann = next(s for s in specs if s.name == "ann_gmp_0.5")
    assert ann.command[1].endswith("train_ann.py") and "--T" not in ann.command
    assert ann.command[ann.command.index("--target-sparsity") + 1] == "0.5"
    assert ann.command[ann.command.index("--prune-end-epoch") + 1] == "2"  # ramp, then fine-tune


def test_sweep_quick_plan_has_every_comparison_family(tmp_path):
    ramp = ["--prune-end-epoch", "2"]
    specs = sweep.plan(
        tmp_path, sweep.QUICK_GRID, ["snn", "ann"], ["--epochs", "3"], ["--T", "2"], ramp_flags=ramp
    )
    by = {s.name: s for s in specs}
    for kind in ("snn", "ann"):
        nm = by[f"{kind}_lats-2of4"].command
        assert nm[nm.index("--granularity") + 1] == "2:4" and "--final-threshold" not in nm
        assert nm[nm.index("--prune-exclude") + 1] == "conv1"  # the 1-channel stem has no group of 4
        gmp = by[f"{kind}_gmp-2of8"].command
        assert gmp[gmp.index("--granularity") + 1] == "2:8" and "--target-sparsity" not in gmp
        assert gmp[gmp.index("--prune-end-epoch") + 1] == "2"  # gmp ramps, whatever its level flag
        shi = by[f"{kind}_shi2024_1e-07"].command
        assert shi[shi.index("--penalty") + 1] == "1e-07" and "--prune-end-epoch" not in shi
        imp = by[f"{kind}_imp_0.9"].command
        assert imp[1].endswith("train_sew.py" if kind == "snn" else "train_ann.py")
        assert imp[imp.index("--target-sparsity") + 1] == "0.9"
        assert imp[imp.index("--rounds") + 1] == str(sweep.QUICK_IMP_ROUNDS)
        assert "--prune-end-epoch" not in imp  # imp takes no end_step: its rounds span the run
        assert 3 % sweep.QUICK_IMP_ROUNDS == 0  # rounds divide the quick epochs
        for method in ("magnitude", "osbc"):
            spec = by[f"{kind}_oneshot-{method}_0.9"]
            cmd = spec.command
            assert cmd[1].endswith("oneshot.py") and spec.after_dense
            assert cmd[cmd.index("--run") + 1] == str(tmp_path / f"{kind}_dense")
            assert cmd[cmd.index("--method") + 1] == method
            assert cmd[cmd.index("--target-sparsity") + 1] == "0.9"
            assert cmd[cmd.index("--run-name") + 1] == spec.name
            assert "--epochs" not in cmd and "--T" not in cmd  # training flags are not oneshot.py's
            assert specs.index(by[f"{kind}_dense"]) < specs.index(spec)  # the dense run is trained first


def test_sweep_oneshot_needs_the_dense_run(tmp_path, capsys):
    grid = (sweep.GridEntry("dense"), *(e for e in sweep.QUICK_GRID if e.script))
    with pytest.raises(ValueError, match="add dense to --methods"):
        sweep.plan(tmp_path, grid, ["snn"], [], methods=["oneshot"])
    assert len(sweep.plan(tmp_path, grid, ["snn"], [], methods=["oneshot", "dense"])) == 1 + 2 * 4
    (tmp_path / "snn_dense").mkdir()
    (tmp_path / "snn_dense" / "summary.json").write_text("{}")  # finished: the one-shot runs alone
    assert len(sweep.plan(tmp_path, grid, ["snn"], [], methods=["oneshot-osbc"])) == 4
    with pytest.raises(SystemExit) as exc:
        sweep.main(
            ["--dry-run", "--output-dir", str(tmp_path / "x"), "--kinds", "ann", "--methods", "oneshot"]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--methods: ann_oneshot-magnitude_0.5 prunes the dense run" in err and "Traceback" not in err


def test_sweep_resume_skips_finished_and_reports_failures(tmp_path):
    grid = (sweep.GridEntry("dense"), sweep.GridEntry("lats", (0.05, 0.2), "--final-threshold"))
    (tmp_path / "snn_lats_0.2").mkdir()
    (tmp_path / "snn_lats_0.2" / "summary.json").write_text("{}")
    specs = sweep.plan(tmp_path, grid, ["snn"], [], methods=["lats", "dense"])
    assert [s.name for s in specs] == ["snn_dense", "snn_lats_0.05", "snn_lats_0.2"]
    called, logs = [], []

    def fake_runner(cmd, log_path):
        name = cmd[cmd.index("--run-name") + 1]
        called.append(name)
        if name == "snn_lats_0.05":
            return 3
        run_dir = Path(cmd[cmd.index("--output-dir") + 1]) / name
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text("{}")
        return 0

    res = sweep.run_sweep(specs, runner=fake_runner, log=logs.append)
    assert called == ["snn_dense", "snn_lats_0.05"]
    assert res == {"ran": ["snn_dense"], "skipped": ["snn_lats_0.2"], "failed": ["snn_lats_0.05"]}
    assert any("skipped" in m and "snn_lats_0.2" in m for m in logs)
    assert any("FAILED (exit code 3)" in m for m in logs)
    # second pass: the finished runs are skipped, only the failed one is retried
    called.clear()
    specs = sweep.plan(tmp_path, grid, ["snn"], [], methods=["lats", "dense"])
    res = sweep.run_sweep(specs, runner=fake_runner, log=logs.append)
    assert called == ["snn_lats_0.05"] and res["skipped"] == ["snn_dense", "snn_lats_0.2"]


def test_sweep_dry_run_main(tmp_path, capsys):
    (tmp_path / "ann_dense").mkdir()
    (tmp_path / "ann_dense" / "summary.json").write_text("{}")
    rc = sweep.main(
        [
            "--quick",
            "--dry-run",
            "--output-dir",
            str(tmp_path),
            "--kinds",
            "ann",
            "--methods",
            "dense",
            "stds-linear",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "ann_dense: skipped" in out
    last = f"{sweep.QUICK_STDS_D[-1]:g}"
    assert "--stds-shape linear" in out and f"--run-name ann_stds-linear_{last}" in out
    assert "--stds-shape sine" not in out
    assert not any(p.name != "ann_dense" for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="no runs selected"):
        sweep.main(["--dry-run", "--output-dir", str(tmp_path), "--methods", "nosuch"])


def test_sweep_full_imagenet_uses_the_imagenet_stem(tmp_path, capsys):
    argv = ["--full", "--dry-run", "--output-dir", str(tmp_path), "--kinds", "snn", "--methods", "dense"]
    assert sweep.main([*argv, "--dataset", "imagenet", "--data-path", str(tmp_path)]) == 0
    assert "--stem imagenet" in capsys.readouterr().out
    assert sweep.main([*argv, "--dataset", "cifar10", "--data-path", str(tmp_path)]) == 0
    assert "--stem small" in capsys.readouterr().out


def test_sweep_runs_the_pair_it_is_given(tmp_path, capsys):
    argv = ["--quick", "--dry-run", "--output-dir", str(tmp_path), "--methods", "dense", "lats"]
    pair = ["--model", "spikformer_small", "--ann-model", "ann_spikformer_small"]
    assert sweep.main([*argv, *pair]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "train_" in ln]
    assert len(lines) == 2 * (1 + len(sweep.QUICK_LATS_D) + 1)  # --methods lats: every lats entry (2:4 too)
    assert all(
        ("train_sew.py --model spikformer_small " in ln)
        != ("train_ann.py --model ann_spikformer_small " in ln)
        for ln in lines
    )
    assert not any("--width" in ln for ln in lines)  # the transformers take none
    assert sweep.main(argv) == 0 and "--model sew_resnet18" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--model", "nosuch"], "--model: unknown model 'nosuch'; choose one of"),
        (["--ann-model", "nosuch"], "--ann-model: unknown model 'nosuch'"),
        (["--model", "spikformer_small", "--kinds", "snn", "--width", "8"], "--width: not an option of --model spikformer_small"),
    ],
)  # fmt: skip
def test_sweep_refuses_a_bad_pair_in_one_line(tmp_path, capsys, argv, fragment):
    with pytest.raises(SystemExit) as e:
        sweep.main(["--dry-run", "--output-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and fragment in err.splitlines()[-1], err
    assert not any(tmp_path.iterdir())


def test_run_level_is_the_option_the_method_takes():
    # config.json holds every CLI option; gmp's level is its target, lats's its threshold, dense has none
    config = {"final_threshold": 0.1, "target_sparsity": 0.5}
    assert mf._run_level("gmp", config) == 0.5
    assert mf._run_level("lats", config) == 0.1
    assert math.isnan(mf._run_level("dense", config))


def test_channels_removed_counts_linear_groups():
    net = models.create_model("spikformer_small", depth=1, embed_dim=16, num_heads=2, pooling="0011", T=1)
    small = copy.deepcopy(net)
    small.block[0].attn.q = nn.Linear(16, 8, bias=False)  # one of the 2 heads of 8 channels kept
    small.block[0].mlp.fc1 = nn.Linear(16, 16)  # 16 of the 64 MLP channels kept
    assert msf.channels_removed(net, small) == pytest.approx(1 - (8 + 16) / (16 + 64))
    assert msf.channels_removed(net, copy.deepcopy(net)) == 0.0


def test_fig1_panels_name_the_models_of_their_runs(tmp_path, monkeypatch):
    for r in RUNS:
        _write_run(tmp_path / "sweep", *r)
    titles = []

    def keep_titles(fig, out, stem):
        titles.extend(ax.get_title() for ax in fig.axes[:2])
        mf.plt.close(fig)

    monkeypatch.setattr(mf, "_save", keep_titles)
    mf.fig_top1(mf.discover_runs([tmp_path]), mf.load_reference_points(), tmp_path)
    assert titles == ["ours: SNN, sew_resnet18, embedded_mnist", "ours: ANN, ann_resnet18, embedded_mnist"]


def _config_of(cmd: list[str]) -> dict:
    """The config.json fields method_label reads, as the training scripts / scripts/oneshot.py write them."""
    opt = {k: v for k, v in itertools.pairwise(cmd) if k.startswith("--")}
    if cmd[1].endswith("oneshot.py"):
        record = {"method": opt["--method"], "granularity": opt.get("--granularity", "weight")}
        return {"method": "dense", "oneshot": record}
    return {
        "method": opt["--method"],
        "stds_shape": opt.get("--stds-shape"),
        "granularity": opt.get("--granularity"),
    }


@pytest.mark.parametrize("grid", [sweep.QUICK_GRID, sweep.FULL_GRID], ids=["quick", "full"])
def test_figure_labels_match_the_sweep_run_names(tmp_path, grid):
    for spec in sweep.plan(tmp_path, grid, ["snn", "ann"], []):
        cfg = _config_of(spec.command)
        label = mf.method_label(cfg, {} if "oneshot" in cfg else {"method": cfg["method"]})
        assert spec.name.removeprefix(f"{spec.kind}_").split("_")[0] == label, spec.command


@pytest.mark.parametrize(
    ("config", "summary", "label"),
    [
        ({"method": "dense", "oneshot": {"method": "osbc", "granularity": "weight"}}, {}, "oneshot-osbc"),
        ({"method": "dense", "oneshot": {"method": "magnitude", "granularity": "2:4"}}, {}, "oneshot-magnitude-2of4"),
        ({"method": "lats", "granularity": "2:4"}, {"method": "lats"}, "lats-2of4"),
        ({"method": "gmp", "granularity": "2:8"}, {"method": "gmp"}, "gmp-2of8"),
        ({"method": "stds", "stds_shape": "linear", "granularity": "weight"}, {"method": "stds"}, "stds-linear"),
        ({"method": "imp", "granularity": "weight"}, {"method": "imp"}, "imp"),
        ({"method": "dense"}, {"method": "dense"}, "dense"),
    ],
)  # fmt: skip
def test_method_label_names_each_family(config, summary, label):
    assert mf.method_label(config, summary) == label


def test_figures_include_every_comparison_family(tmp_path):
    for r in RUNS:
        _write_run(tmp_path / "sweep", *r)
    families = {  # folder: method, sparsity, top1, config fields
        "imp": ("imp", 0.9, 92.0, {"target_sparsity": 0.9}),
        "nm": ("lats", 0.5, 94.5, {"granularity": "2:4"}),
        "mag": ("dense", 0.9, 60.0, {"oneshot": {"method": "magnitude", "target_sparsity": 0.9}}),
        "osbc": ("dense", 0.9, 85.0, {"oneshot": {"method": "osbc", "target_sparsity": 0.9}}),
    }
    for folder, (method, sp, top1, extra) in families.items():
        d = _write_run(tmp_path / folder, "snn", method, None, 0.1, sp, top1)
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, **extra}))
        if "oneshot" in extra:  # summary.json of scripts/oneshot.py: numbers only, the options in config.json
            summary = json.loads((d / "summary.json").read_text())
            for key in ("method", "dataset", "kind", "model"):
                del summary[key]
            (d / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "figs"
    mf.main([str(tmp_path), "--out", str(out)])
    fig1 = {r["method"]: r for r in _rows(out / "fig1_top1_vs_sparsity.csv") if r["kind"] == "snn"}
    fig2 = {r["method"]: r for r in _rows(out / "fig2_energy_vs_top1.csv") if r["kind"] == "snn"}
    for label, top1, level in (("imp", 92.0, 0.9), ("lats-2of4", 94.5, 0.1), ("oneshot-magnitude", 60.0, 0.9),
                               ("oneshot-osbc", 85.0, 0.9)):  # fmt: skip
        assert float(fig1[label]["test_top1"]) == top1 and float(fig1[label]["level"]) == level
        assert float(fig2[label]["test_top1"]) == top1 and fig1[label]["dataset"] == "embedded_mnist"
    assert fig1["dense"]["run"] == "snn_dense"  # the one-shot folders are not dense runs
