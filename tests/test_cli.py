"""Every bad input of the training scripts ends with one line ``error: <option>: ...; <fix>`` and exit code 2.

The validation cases run in-process through the scripts' ``main()`` with the data and model builders
replaced by a tripwire: they must fail before any data or model work (so each costs milliseconds). The
checkpoint, run-folder and non-finite cases share a few tiny training runs; three subprocess cases prove
"one line, exit 2, no traceback" end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import expect_exit

from snnprune.files import atomic_write
from snnprune.methods import list_methods
from snnprune.training import engine as engine_mod
from snnprune.training import parse_args, pruner_kwargs
from snnprune.training.checkpoint import load_checkpoint
from snnprune.training.cli import explicit_options, plain_text
from snnprune.training.run_folder import RunFolder
from snnprune.training.validation import prepare

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
TINY = ["--width", "4", "--epochs", "2", "--batch-size", "16", "--limit-train-batches", "2",
        "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet", "--T", "2"]  # fmt: skip


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    assert "; " in lines[0], f"no fix given: {lines[0]}"
    return lines[0]


@pytest.fixture
def no_work(monkeypatch):
    """Any data or model construction fails the test: validation must come first."""

    def tripwire(*a, **k):
        raise AssertionError("data or model built before validation finished")

    monkeypatch.setattr(engine_mod, "build_datasets", tripwire)
    return tripwire


# --------------------------------------------------------------------------- bad inputs: one line, exit 2
# (argv, expected message fragment); every case: exit code 2, one line, nothing built.
VALIDATION_CASES = [
    (["--method", "nope"], "--method: invalid choice: 'nope'"),
    (["--method", "LATS"], "; did you mean 'lats'?"),
    (["--method", "lts"], "; did you mean 'lats'?"),
    (["--method", "xyzzy"], f"(choose from {', '.join(map(repr, list_methods()))}); pick one of the listed values"),
    (["--model", "SEW_ResNet81"], "; did you mean 'sew_resnet18'?"),
    (["--final-threshold", "-0.1"], "--final-threshold: must be a finite number >= 0, got -0.1"),
    (["--final-threshold", "nan"], "--final-threshold: must be a finite number >= 0, got nan"),
    (["--final-threshold", "inf"], "--final-threshold: must be a finite number >= 0, got inf"),
    (["--method", "gmp", "--target-sparsity", "1.0"], "--target-sparsity: must be in [0, 1), got 1.0"),
    (["--method", "gmp", "--target-sparsity", "-0.1"], "--target-sparsity: must be in [0, 1)"),
    (["--method", "pgh", "--beta", "0"], "--beta: must be a finite number > 0, got 0.0"),
    (["--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    (["--batch-size", "-4"], "--batch-size: must be >= 1, got -4"),
    (["--T", "0"], "--T: must be >= 1, got 0"),
    (["--width", "0"], "--width: must be >= 1, got 0"),
    (["--lr", "0"], "--lr: must be a finite number > 0, got 0.0"),
    (["--lr", "-0.1"], "--lr: must be a finite number > 0, got -0.1"),
    (["--lr", "nan"], "--lr: must be a finite number > 0, got nan"),
    (["--workers", "-1"], "--workers: must be >= 0, got -1"),
    (["--prune-start-epoch", "8"], "--prune-start-epoch: must be in [0, total_steps=8), got 8; start inside the run"),
    (["--prune-exclude", "fc", "nope*"], "--prune-exclude: pattern 'nope*' matches no prunable layer; prunable layers are: ['conv1',"),
    (["--epochs", "3", "--prune-start-epoch", "5"], "--prune-start-epoch: must be in [0, total_steps=3), got 5"),
    (["--device", "tpu"], "--device: unknown device 'tpu'"),
    (["--model", "resnet9000"], "--model: invalid choice: 'resnet9000'"),
    (["--model", "ann_resnet18"], "--model: invalid choice: 'ann_resnet18'"),
    (["--epochs", "0"], "--epochs: must be >= 1, got 0"),
    (["--epochs", "2.5"], "--epochs: invalid int value: '2.5'"),
    (["--limit-train-batches", "0"], "--limit-train-batches: must be >= 1, got 0"),
    (["--limit-test-batches", "0"], "--limit-test-batches: must be >= 1, got 0"),
    (["--method", "gmp", "--final-threshold", "0.2"], "--final-threshold: not an option of --method gmp (it takes --frequency, --granularity, --initial-sparsity, --prune-end-epoch, --target-sparsity)"),
    (["--granularity", "4:4"], "--granularity: '4:4' must have 0 < N < M"),
    (["--granularity", "block"], "--granularity: must be weight, filter or N:M such as 2:4, got 'block'"),
    (["--granularity", "2:4", "--final-threshold", "0.2"], "--final-threshold: does not apply to granularity '2:4'"),
    (["--granularity", "2:4", "--l1-coeff", "0.1"], "--l1-coeff: does not apply to an N:M granularity"),
    (["--method", "gmp", "--granularity", "2:4", "--target-sparsity", "0.9"], "--target-sparsity: does not apply to granularity '2:4'"),
    (["--method", "lats", "--target-sparsity", "0.5"], "--target-sparsity: not an option of --method lats (it takes --filter-scale, --final-threshold, --grad, --granularity, --l1-coeff, --lats-schedule)"),
    (["--method", "dense", "--beta", "0.5"], "--beta: not an option of --method dense (it takes no pruning option)"),
    (["--method", "lats", "--prune-end-epoch", "4"], "--prune-end-epoch: not an option of --method lats"),
    (["--method", "gmp", "--prune-end-epoch", "9"], "--prune-end-epoch: must be in (start_step=0, total_steps=8], got 9"),
    (["--method", "st3", "--st3-finetune-epochs", "8"], "--st3-finetune-epochs: must be in [0, total_steps - start_step = 8), got 8"),
    (["--method", "st3", "--st3-finetune-epochs", "2", "--prune-end-epoch", "7"], "--prune-end-epoch: must be in (start_step, total_steps - finetune_steps = 6], got 7"),
    (["--stop-after-epoch", "-1"], "--stop-after-epoch: must be >= 0, got -1"),
    (["--stop-after-epoch", "8"], "--stop-after-epoch: must be < --epochs (8)"),
    (["--test-only"], "--test-only: needs the checkpoint to evaluate"),
    (["--lr-warmup-epochs", "8"], "--lr-warmup-epochs: must be < --epochs (8)"),
    (["--opt", "adam", "--momentum", "0.5"], "--momentum: not an option of --opt adam"),
    (["--nesterov", "--momentum", "0"], "--nesterov: needs --momentum > 0"),
    (["--lr-gamma", "0.5"], "--lr-gamma: only used by --lr-scheduler step"),
    (["--label-smoothing", "1"], "--label-smoothing: must be in [0, 1)"),
    (["--clip-grad-norm", "0"], "--clip-grad-norm: must be a finite number > 0"),
    (["--seed", "-1"], "--seed: must be in [0, 2**32)"),
    (["--log-every", "-5"], "--log-every: must be >= 0"),
    (["--bn-recalibrate", "-1"], "--bn-recalibrate: must be >= 0, got -1"),
    (["--run-name", "a/b"], "--run-name: must be a plain folder name"),
    (["--neuron", "hh"], "--neuron: invalid choice: 'hh'"),
    (["--dataset", "svhn"], "--dataset: invalid choice: 'svhn'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--resume", "/no/such/checkpoint.pth"], "--resume: checkpoint '/no/such/checkpoint.pth' does not exist"),
    (["--resume", "auto", "--overwrite"], "--overwrite: contradicts --resume"),
    (["--neuron-backend", "cupy", "--device", "cpu"], "--neuron-backend: cupy needs a CUDA device"),
    (["--lats-schedule", "closed_form", "--lr-scheduler", "step"], "--lats-schedule: closed_form is the authors' threshold for a cosine lr, not for the lr scheduler step"),
    (["--lats-schedule", "closed_form", "--lr-scheduler", "constant"], "--lats-schedule: closed_form is the authors' threshold for a cosine lr, not for the lr scheduler constant"),
    (["--filter-scale", "layer"], "--filter-scale: filter_scale='layer' applies to granularity='filter' only"),
    (["--method", "str", "--s-init", "-1e400"], "--s-init: must be a finite number, got -inf; pass e.g. -5"),
    (["--resume", ""], "--resume: must be a checkpoint file or auto, got ''"),
    (["--device", "cpu:1"], "--device: 'cpu:1' is not supported for training"),
    (["--final-threshold", "0.1", "--l1-coeff", "1e-4"], "--final-threshold: lats takes final_threshold (D) or l1_coeff (lambda, then D is an outcome), not both"),
    (["--epochs", "1000000000", "--stop-after-epoch", "0"], "--epochs: LATS sums the learning rates of all 1,000,000,000 epochs before training"),
    (["--method", "imp", "--rounds", "3"], "--rounds: must be >= 2 and divide total_steps=8 (rounds of whole epochs), got 3"),
    (["--method", "imp", "--rewind-fraction", "1.5"], "--rewind-fraction: must be in [0, 1) (a point of the first round), got 1.5"),
    (["--method", "imp", "--search-T", "0"], "--search-T: must be >= 1 (time steps of the search rounds), got 0; pass e.g. 1"),
]  # fmt: skip
if not torch.cuda.is_available():
    VALIDATION_CASES += [
        (["--device", "cuda"], "--device: 'cuda' requested but no CUDA GPU is available"),
        (["--amp", "fp16"], "--amp: fp16 needs a CUDA device"),
        (
            ["--amp", "fp16", "--dataset", "imagenet", "--data-path", "/no/such/dir"],
            "--amp: fp16 needs a CUDA device (CPU autocast supports bf16 only); use --amp bf16 or none | "
            "--data-path: '/no/such/dir' is not a directory",
        ),
        (["--neuron-backend", "cupy"], "--neuron-backend: cupy needs a CUDA device (this run uses cpu)"),
    ]


@pytest.mark.parametrize(
    ("argv", "fragment"), VALIDATION_CASES, ids=[" ".join(a) for a, _ in VALIDATION_CASES]
)
def test_bad_option_one_line_exit_2(sew, tmp_path, capsys, no_work, argv, fragment):
    code, err = expect_exit(sew, [*argv, "--output-dir", str(tmp_path)], capsys)
    assert code == 2
    line = _one_line(err)
    assert fragment in line, line
    assert not any(tmp_path.iterdir())  # nothing written


# (yaml text, extra argv, expected fragment): the --config file goes through the same typed parser.
CONFIG_CASES = [
    ("epochs: 2.5\n", [], "epochs (--config {cfg}): invalid int value: '2.5'"),
    ("lr: [0.1, 0.2]\n", [], "lr (--config {cfg}): expected one value, got a list"),
    ("batch_size: null\n", [], "batch_size (--config {cfg}): must not be null"),
    ("method: 5\n", [], "method (--config {cfg}): invalid choice: '5'"),
    ("export: maybe\n", [], "export (--config {cfg}): expected true or false, got 'maybe'"),
    ("lr: nan\n", [], "--lr: must be a finite number > 0, got nan"),
    ("final_threshold: .inf\n", [], "--final-threshold: must be a finite number >= 0, got inf"),
    ("model: sew_resnet18\nmethod: lats\nepochs: 4\n", [], "--final-threshold: --method lats needs it"),
    ("method: gmp\n", [], "--target-sparsity: --method gmp needs it"),
    ("method: pgh\nfinal_threshold: 0.1\n", [], "--beta: --method pgh needs it"),
    ("lr: 0.1\nlearning_rate: 3\n", [], "has unknown keys ['learning_rate']"),
    ("a: [\n", [], "is not valid YAML"),
    ("- 1\n- 2\n", [], "must be a mapping of option: value"),
    ("kind: ann\nmodel: ann_resnet18\n", [], "is the config of an ANN run; use scripts/train_ann.py"),
    ("method: stds\nfinal_threshold: 0.2\nstds_shape: sine\n", ["--method", "lats"], "--stds-shape: not an option of --method lats"),
    ("lr: 0.1\nepochs: 2\nlr: 0.2\n", [], "sets 'lr' twice (the last one would win silently); keep one"),
    ("final-threshold: 0.1\nfinal_threshold: 0.2\n", [], "sets one option under two spellings ['final-threshold', 'final_threshold']"),
    ("epochs: 2\nmodel_builder: {_target_: x.y}\n", [], "has unknown keys ['model_builder']"),
    ("trainer:\n  max_epochs: 3\n", [], "has unknown keys ['trainer']"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "extra", "fragment"), CONFIG_CASES, ids=[c[2][:40] for c in CONFIG_CASES])
def test_bad_config_one_line_exit_2(sew, tmp_path, capsys, no_work, text, extra, fragment):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    code, err = expect_exit(
        sew, ["--config", str(cfg), *extra, "--output-dir", str(tmp_path / "runs")], capsys
    )
    assert code == 2
    assert fragment.format(cfg=cfg) in _one_line(err)


def test_negative_numbers_in_scientific_notation_are_values(sew):
    args = parse_args(
        sew.get_parser(), ["--method", "str", "--s-init", "-1e3", "--final-threshold", "-.5e-1"]
    )
    assert (args.s_init, args.final_threshold) == (-1000.0, -0.05)
    assert parse_args(sew.get_parser(), ["--method", "str", "--s-init", "-5"]).s_init == -5.0


def test_missing_config_and_recipe_on_cpu(sew, tmp_path, capsys, no_work):
    code, err = expect_exit(sew, ["--config", str(tmp_path / "none.yaml")], capsys)
    assert code == 2 and "--config: file" in _one_line(err) and "does not exist" in err
    if not torch.cuda.is_available():  # the README's ImageNet recipe on a CPU machine
        recipe = SCRIPTS / "configs" / "sew_resnet18_imagenet_lats.yaml"
        code, err = expect_exit(sew, ["--config", str(recipe), "--data-path", str(tmp_path)], capsys)
        assert code == 2 and "--amp: fp16 needs a CUDA device" in _one_line(err)


def test_output_dir_blocked_by_a_file(sew, tmp_path, capsys, no_work):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = expect_exit(sew, ["--output-dir", str(blocker)], capsys)
    assert code == 2 and "--output-dir: " in _one_line(err) and "is a file" in err
    code, err = expect_exit(sew, ["--output-dir", str(blocker / "sub")], capsys)
    assert code == 2 and "cannot be created" in _one_line(err)
    assert blocker.read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_output_dir_not_writable(sew, tmp_path, capsys, no_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, err = expect_exit(sew, ["--output-dir", str(locked)], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and "is not writable" in _one_line(err)


def test_ann_script_options(ann, tmp_path, capsys, no_work):
    code, err = expect_exit(ann, ["--model", "sew_resnet18", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "--model: invalid choice: 'sew_resnet18'" in _one_line(err)
    code, err = expect_exit(
        ann, ["--model", "resnet50", "--width", "32", "--output-dir", str(tmp_path)], capsys
    )
    assert code == 2 and "--width: not an option of --model resnet50" in _one_line(err)
    code, err = expect_exit(ann, ["--T", "4"], capsys)  # an SNN-only option
    assert code == 2 and "unrecognized arguments: --T 4" in _one_line(err)


def test_subprocess_one_line_no_traceback(tmp_path):
    cases = [
        (["--lr", "nan"], "--lr: must be a finite number > 0, got nan"),
        (["--method", "gmp", "--final-threshold", "0.2"], "--final-threshold: not an option of --method gmp"),
    ]
    for argv, fragment in cases:
        out = subprocess.run(
            [sys.executable, str(SCRIPTS / "train_sew.py"), *argv, "--output-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "Traceback" not in out.stderr
        assert out.stderr.startswith("error: ") and fragment in out.stderr
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------------- parsing and help
def test_config_booleans_and_parser_unchanged(sew, tmp_path):
    parser = sew.get_parser()
    cfg = tmp_path / "c.yaml"
    cfg.write_text('export: "false"\nquiet: "yes"\nepochs: 3\nlr: 1e-3\n')
    a = parse_args(parser, ["--config", str(cfg)], kind="snn")
    assert a.export is False and a.quiet is True and a.epochs == 3 and a.lr == 1e-3
    assert {"epochs", "lr", "quiet", "export", "config"} <= explicit_options(a)  # a recipe's keys are choices
    b = parse_args(parser, [], kind="snn")  # the second parse does not inherit the first config
    assert (b.epochs, b.lr, b.stem, b.width, b.T) == (8, 0.1, "small", 16, 2)
    assert explicit_options(b) == frozenset()
    c = parse_args(parser, ["--config", str(cfg), "--epochs", "5", "--export"], kind="snn")
    assert (c.epochs, c.export) == (5, True)


def test_help_shows_script_defaults_and_choices(sew, ann):
    text = " ".join(sew.get_parser().format_help().split())
    assert "--epochs EPOCHS epochs of the run (every schedule is planned on it) (default: 8)" in text
    assert "--T T time steps (also frames_number of DVS datasets) (default: 2)" in text
    # the script's short-run default of a method keyword replaces the signature's (1.0)
    assert (
        "--l0-coeff L0_COEFF ltp: λ_L0 ≥ 0, the weight of the normalized soft-L0 term. (default: 0.001) "
        in text
    )
    assert "any registered name: " + ", ".join(list_methods()) in text
    assert "sew_resnet18,sew_resnet34,sew_resnet50" in text
    assert "{embedded_mnist,mnist,fashion_mnist,cifar10,cifar100,imagenet,dvs128_gesture,cifar10_dvs}" in text
    ann_text = " ".join(ann.get_parser().format_help().split())
    assert "ann_resnet18" in ann_text and "sew_resnet18," not in ann_text and "--T" not in ann_text
    # the method keywords' help comes from their Args: docstrings, as plain text
    assert "--l1-coeff L1_COEFF lats: λ directly (then D is an outcome)." in text
    assert "gmp: s_i in [0, target_sparsity]." in text and "Zhu & Gupta's Δ t" in text
    for markup in ("``", ":math:", ":class:", ":func:", "`"):
        assert markup not in text and markup not in ann_text, markup


@pytest.mark.parametrize(
    ("doc", "plain"),
    [
        (":math:`\\lambda` directly (then :math:`D` is an outcome)", "λ directly (then D is an outcome)"),
        ('backward variant (default ``"ste"``)', 'backward variant (default "ste")'),
        (
            ":math:`w = \\operatorname{sign}(\\theta)\\,\\mathrm{ReLU}(|\\theta| - t)`",
            "w = sign(θ) ReLU(|θ| - t)",
        ),
        (":math:`p_{\\max}`", "p_max"),
        (
            "see :class:`~snnprune.methods.Pruner` and :func:`snnprune.sparsify`",
            "see Pruner and snnprune.sparsify",
        ),
        ("plain text stays", "plain text stays"),
    ],
)
def test_plain_text_renders_docstring_markup(doc, plain):
    assert plain_text(doc) == plain


# --------------------------------------------------------------------------- runs: logs, resume, no lost run
def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(sew, ann, tmp_path_factory):
    """One tiny SLATS SNN run (2 epochs, 2 steps each; step lines logged) and one tiny ANN run."""
    out = tmp_path_factory.mktemp("runs")
    import contextlib
    import io

    buf = io.StringIO()
    argv = [a for a in TINY if a != "--quiet"]
    with contextlib.redirect_stdout(buf):  # stdout is not a terminal: plain step lines
        snn = sew.main(
            ["--method", "slats", *argv, "--log-every", "1", "--output-dir", str(out), "--run-name", "snn"]
        )
    ann_tiny = TINY[: TINY.index("--T")]
    ann_summary = ann.main(["--method", "lats", *ann_tiny, "--output-dir", str(out), "--run-name", "ann"])
    return {"out": out, "snn": Path(snn["run_dir"]), "ann": Path(ann_summary["run_dir"]), "summary": snn,
            "stdout": buf.getvalue()}  # fmt: skip


def _corrupt_mnist(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 60000), ("t10k", 10000)):  # right names, wrong bytes
        (raw / f"{split}-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x01" * 20)
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + n.to_bytes(4, "big"))


# (extra argv, files to prepare, expected fragment): cases found only once data and model are built; each
# ends in one line, exit 2, and no summary.json claims a result.
RUN_CASES = [
    (["--final-threshold", "1e3"], None, "--method lats: every prunable weight is zero at the end of the run (threshold 1000)"),
    (["--lr", "1e-320"], None, "--method lats: the learning rates of the pruning window sum to"),
    (["--width", "100000"], None, "--width: the run does not fit in memory with --width 100000 --T 2 --batch-size 16"),
    (["--dataset", "mnist"], _corrupt_mnist, "--data-path: dataset 'mnist' not found or malformed under"),
    (["--granularity", "2:4"], None, "--method lats: layer 'conv1' has weight shape (4, 1, 3, 3): N:M groups of 4"),
    (["--method", "imp", "--rounds", "2", "--search-T", "2"], None, "--search-T: must be below the model's T=2"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "prepare_files", "fragment"), RUN_CASES, ids=[c[2][:40] for c in RUN_CASES])
def test_bad_run_one_line_exit_2(sew, tmp_path, capsys, argv, prepare_files, fragment):
    if prepare_files is not None:
        prepare_files(tmp_path / "data")
    extra = ["--data-path", str(tmp_path / "data")] if prepare_files is not None else []
    tiny = [*TINY, *argv, *extra, "--output-dir", str(tmp_path / "runs"), "--run-name", "r"]
    code, err = expect_exit(sew, tiny, capsys)
    assert code == 2 and fragment in _one_line(err)
    assert not (tmp_path / "runs" / "r" / "summary.json").exists()


@pytest.mark.parametrize("failure", ["disk full", "read-only folder"])
def test_checkpoint_write_failure_one_line_previous_checkpoint_kept(
    sew, tmp_path, capsys, monkeypatch, failure
):
    import errno

    from snnprune import files

    run = tmp_path / "r"
    argv = [*TINY, "--output-dir", str(tmp_path), "--run-name", "r"]
    sew.main([*argv, "--stop-after-epoch", "0"])  # epoch 0 checkpointed
    before = (run / "checkpoint.pth").read_bytes()
    real_save = files.torch.save

    def failing_save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("epoch") == 1:  # the checkpoint of epoch 1
            f.write(b"\0" * 1024)
            if failure == "disk full":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(files.torch, "save", failing_save)
    code, err = expect_exit(sew, [*argv, "--resume", "auto"], capsys)
    line = _one_line(err)
    assert code == 2 and str(run) in line, line
    assert ("disk" in line) if failure == "disk full" else ("not writable" in line or "ermission" in line), (
        line
    )
    assert (run / "checkpoint.pth").read_bytes() == before  # the previous checkpoint is intact
    assert files.load(run / "checkpoint.pth")["epoch"] == 0
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_plain_step_lines_without_terminal(trained):
    lines = trained["stdout"].splitlines()
    steps = [line for line in lines if line.startswith("epoch 0 step ")]
    assert [s.split(" (")[0] for s in steps] == ["epoch 0 step 1/2", "epoch 0 step 2/2"]
    assert "loss " in steps[0] and "lr 0.1 " in steps[0] and "threshold " in steps[0]
    assert any(line.startswith("epoch 1 step 2/2 (global 4)") for line in lines)


RESUME_CASES = [
    (["--test-only", "--neuron", "lif"], "--neuron: the checkpoint {ckpt!r} was trained with --neuron 'if', not 'lif'"),
    (["--test-only", "--cnf", "AND"], "--cnf: the checkpoint {ckpt!r} was trained with --cnf 'ADD', not 'AND'"),
    (["--test-only", "--width", "16"], "--width: the checkpoint {ckpt!r} was trained with --width 4, not 16"),
    (["--method", "lats"], "--method: the checkpoint {ckpt!r} was trained with --method 'slats', not 'lats'"),
    (["--epochs", "5"], "--epochs: the run of {ckpt!r} is planned for 2 epochs"),
    (["--lr", "0.5"], "--lr: the checkpoint {ckpt!r} was trained with --lr 0.1, not 0.5"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "fragment"), RESUME_CASES, ids=[" ".join(a) for a, _ in RESUME_CASES])
def test_resume_contradicting_flag_is_an_error(sew, trained, capsys, no_work, argv, fragment):
    ckpt = str(trained["snn"] / "checkpoint.pth")
    before = _hashes(trained["snn"])
    code, err = expect_exit(sew, [*argv, "--resume", ckpt, "--output-dir", str(trained["out"])], capsys)
    assert code == 2 and fragment.format(ckpt=ckpt) in _one_line(err)
    assert _hashes(trained["snn"]) == before


def test_ann_checkpoint_into_sew_is_an_error(sew, trained, capsys, no_work):
    ckpt = trained["ann"] / "checkpoint.pth"
    code, err = expect_exit(sew, ["--test-only", "--resume", str(ckpt)], capsys)
    assert code == 2 and "is a checkpoint of an ANN run; use scripts/train_ann.py" in _one_line(err)


def test_test_only_uses_the_checkpoint_settings(sew, trained):
    # no --width/--method/--T: they come from the checkpoint (width 4, slats, T 2), not the script defaults
    res = sew.main(["--test-only", "--resume", str(trained["snn"] / "checkpoint.pth"),
                    "--limit-test-batches", "1", "--batch-size", "16", "--quiet"])  # fmt: skip
    assert res["method"] == "slats"
    assert res["test_top1"] == pytest.approx(trained["summary"]["test_top1"])
    assert res["sparsity"] == pytest.approx(trained["summary"]["sparsity"])


def test_new_run_into_existing_folder_refused_files_identical(sew, trained, capsys, no_work):
    before = _hashes(trained["snn"])
    assert {"checkpoint.pth", "best.pth", "metrics.csv", "steps.csv", "summary.json"} <= set(before)
    argv = ["--method", "slats", *TINY, "--output-dir", str(trained["out"]), "--run-name", "snn"]
    code, err = expect_exit(sew, argv, capsys)
    line = _one_line(err)
    assert code == 2 and "already holds a run" in line
    assert "--resume auto" in line and "--run-name" in line and "--overwrite" in line
    assert _hashes(trained["snn"]) == before


def test_l1_coeff_alone_replaces_the_default_final_threshold(sew, tmp_path):
    args = parse_args(sew.get_parser(), ["--l1-coeff", "1e-4", "--output-dir", str(tmp_path)])
    prepare(args, sew.task).lock.release()
    kwargs = pruner_kwargs(args)
    assert (
        kwargs["l1_coeff"] == 1e-4
        and "final_threshold" not in kwargs
        and args.run_name == "sew_resnet18_lats"
    )


def test_run_config_json_accepted_as_config(sew, trained):
    cfg = trained["snn"] / "config.json"
    args = parse_args(sew.get_parser(), ["--config", str(cfg), "--run-name", "again"], kind="snn")
    prep = prepare(args, sew.task)
    assert (prep.run_dir / ".lock").is_file()  # prepare locks the folder; the run releases it
    prep.lock.release()
    assert not prep.run_dir.exists()
    saved = json.loads(cfg.read_text())
    assert (args.method, args.width, args.T, args.epochs, args.final_threshold) == ("slats", 4, 2, 2, 0.1)
    assert args.limit_train_batches == saved["limit_train_batches"] == 2
    assert prep.run_dir == trained["out"] / "again" and prep.checkpoint is None


def test_overwrite_replaces_the_run(sew, trained, tmp_path):
    out = tmp_path / "o"
    argv = ["--method", "lats", *TINY, "--epochs", "1", "--output-dir", str(out), "--run-name", "r"]
    sew.main(argv)
    stale = out / "r" / ".checkpoint.pth.999999999.deadbeef.tmp"  # left by a write that a kill interrupted
    stale.write_bytes(b"partial")
    (out / "r" / "summary.json").write_text("{}")
    s = sew.main([*argv, "--overwrite"])
    assert s["epochs"] == 1 and json.loads((out / "r" / "summary.json").read_text())["epochs"] == 1
    assert not stale.exists()
    mode = stat.S_IMODE(os.stat(out / "r" / "checkpoint.pth").st_mode)
    assert mode == stat.S_IMODE(os.stat(out / "r" / "metrics.csv").st_mode)  # not mkstemp's 0600
    assert mode == stat.S_IMODE(os.stat(out / "r" / "best.pth").st_mode)


class _NaNAfter(torch.nn.CrossEntropyLoss):
    """A loss that turns NaN after ``limit`` calls (2 train steps + 1 test batch per tiny epoch)."""

    limit = 3

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls = 0

    def forward(self, input, target):
        self.calls += 1
        loss = super().forward(input, target)
        return loss * float("nan") if self.calls > self.limit else loss


def test_non_finite_loss_stops_and_keeps_last_finite_checkpoint(sew, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(engine_mod.nn, "CrossEntropyLoss", _NaNAfter)
    argv = ["--method", "lats", *TINY, "--output-dir", str(tmp_path), "--run-name", "nan"]
    code, err = expect_exit(sew, argv, capsys)
    line = _one_line(err)
    assert code == 3
    assert (
        "the loss is nan at epoch 1, step 3" in line and "lower --lr" in line and "--clip-grad-norm" in line
    )
    run = tmp_path / "nan"
    ckpt, best = load_checkpoint(run / "checkpoint.pth"), load_checkpoint(run / "best.pth")
    assert ckpt["epoch"] == best["epoch"] == 0  # epoch 1 never written
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert (run / "metrics.csv").read_text().count("\n") == 2  # header + epoch 0
    assert not (run / "summary.json").exists()


def test_csv_truncation_on_resume_is_atomic(tmp_path, monkeypatch):
    run = tmp_path / "r"
    run.mkdir()
    text = "epoch,lr\n0,0.1\n1,0.05\n2,0.01\n"
    (run / "metrics.csv").write_text(text)
    (run / "steps.csv").write_text("step,epoch\n1,0\n2,1\n")

    def fail(*a):
        raise OSError("disk full")

    monkeypatch.setattr("snnprune.training.checkpoint.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        RunFolder(run).start({}, resumed=(0, 1))
    assert (run / "metrics.csv").read_text() == text  # untouched, no temp file left
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv", "steps.csv"]
    monkeypatch.undo()
    folder = RunFolder(run)
    folder.start({"a": 1}, resumed=(0, 1))
    folder.close()
    assert (run / "metrics.csv").read_text() == "epoch,lr\n0,0.1\n"
    assert (run / "steps.csv").read_text() == "step,epoch\n1,0\n"


def test_atomic_write_permissions_follow_umask(tmp_path):
    atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x"))
    (tmp_path / "b.txt").write_text("x")
    assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == stat.S_IMODE(
        os.stat(tmp_path / "b.txt").st_mode
    )


def test_corrupt_image_names_the_file(sew, tmp_path, capsys):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / "img" / split / "a").mkdir(parents=True)
    (tmp_path / "img" / "train" / "a" / "broken.JPEG").write_bytes(b"\xff\xd8 not a jpeg")
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "val" / "a" / "ok.JPEG")
    code, err = expect_exit(sew, ["--dataset", "imagenet", "--data-path", str(tmp_path / "img"), "--batch-size", "1",
                            "--width", "4", "--T", "1", "--epochs", "1", "--quiet",
                            "--output-dir", str(tmp_path / "runs")], capsys)  # fmt: skip
    line = _one_line(err)
    assert code == 2 and "broken.JPEG" in line and "is corrupt or unreadable" in line
