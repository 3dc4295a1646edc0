"""Run a grid of pruning methods x sparsity levels for an SNN and its ANN twin (default: SEW ResNet-18).

Every run goes through the normal training scripts (``scripts/train_sew.py`` / ``scripts/train_ann.py``)
in a subprocess and writes its run folder into one results folder. Run names are deterministic from
(kind, method, level), so the sweep is resumable: a run whose ``summary.json`` exists is skipped.
A failed run is reported and the sweep continues; the exit code is 1 if any run failed.

Examples::

    python scripts/sweep.py --quick --output-dir runs/sweep_quick
    python scripts/sweep.py --quick --dry-run                              # print the commands only
    python scripts/sweep.py --quick --model spikformer_small --ann-model ann_spikformer_small \\
        --output-dir runs/sweep_spikformer                                 # the small transformer pair
    python scripts/sweep.py --full --dataset cifar10 --data-path ~/data --output-dir runs/sweep_c10
    python scripts/make_figures.py runs/sweep_quick --out figures/
"""

from __future__ import annotations

import argparse
import functools
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "FULL_GRID",
    "QUICK_GRID",
    "GridEntry",
    "RunSpec",
    "build_command",
    "main",
    "plan",
    "run_name",
    "run_sweep",
]

SCRIPTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS_DIR.parent))  # run from anywhere: the snnprune package

from snnprune.methods import method_kwargs  # noqa: E402

# ---------------------------------------------------------------------------------------------------------
# Grid constants. Quick-grid thresholds D were tuned by running: on the width-8 SEW ResNet-18 with 3 epochs on
# the embedded MNIST subset, LATS with D=0.1 ends at 81 % (SNN) / 80 % (ANN) sparsity, so the four levels
# below span roughly 50 % to 97 %.
# ---------------------------------------------------------------------------------------------------------
QUICK_LATS_D: tuple[float, ...] = (0.03, 0.08, 0.15, 0.3)  # lats / slats final thresholds (raw-weight units)
QUICK_PGH_D: tuple[float, ...] = (0.03, 0.08, 0.15, 0.3)  # pgh final thresholds
QUICK_PGH_BETA: float = 0.1
QUICK_STDS_D: tuple[float, ...] = (0.03, 0.08, 0.15, 0.3)  # stds sine / linear final thresholds
QUICK_TARGETS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)  # gmp target sparsities
QUICK_EPOCHS: int = 3
# Target-sparsity methods (GMP, ST-3) ramp the sparsity over this fraction of the epochs and fine-tune with the
# final mask for the rest, as Zhu & Gupta do (quick grid: ramp over 2 epochs, 1 epoch of fine-tuning).
RAMP_FRACTION: float = 2 / 3
QUICK_WIDTH: int = 8
QUICK_T: int = 2
QUICK_LIMIT_TRAIN_BATCHES: int | None = None  # set e.g. 40 if runs exceed ~1.5 min
QUICK_IMP_ROUNDS: int = 3  # imp rounds (of equal length: must divide the epochs)
FULL_IMP_ROUNDS: int = 4
NM_EXCLUDE: tuple[str, ...] = ("--prune-exclude", "conv1")  # N:M entries keep the stem conv dense

FULL_LATS_D: tuple[float, ...] = (0.1, 0.2, 0.4, 0.6, 0.8, 1.5)
FULL_STDS_D: tuple[float, ...] = (0.1, 0.2, 0.4, 0.6, 0.8, 1.5)  # STDS ImageNet logs use D in 0.1..5
FULL_PGH_BETA: float = 0.1
FULL_TARGETS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.98)
FULL_EPOCHS: dict[str, int] = {"embedded_mnist": 20, "cifar10": 200, "imagenet": 320}
SHI_PENALTIES: tuple[float, ...] = (1e-9, 1e-8, 1e-7)
DEFAULT_MODELS: dict[str, str] = {"snn": "sew_resnet18", "ann": "ann_resnet18"}  # --model, --ann-model


@dataclass(frozen=True)
class GridEntry:
    """One method (with fixed extra flags) and the levels it is swept over.

    Args:
        method: method name from ``snnprune.list_methods()``.
        levels: final thresholds D (``level_flag="--final-threshold"``) or target sparsities.
        level_flag: training CLI flag that receives the level (``None`` for dense).
        extra: additional fixed CLI flags, e.g. ``("--stds-shape", "sine")``.
        tag: suffix distinguishing variants of the same method in run names (e.g. ``"sine"``).
        script: the script of the run, ``""`` for the kind's training script; ``"oneshot.py"`` prunes the
            sweep's dense run of the same kind (``<kind>_dense``) with no training, so it takes ``level``,
            ``extra`` and none of the training flags.
    """

    method: str
    levels: tuple[float | None, ...] = (None,)
    level_flag: str | None = None
    extra: tuple[str, ...] = ()
    tag: str = ""
    script: str = ""


@dataclass
class RunSpec:
    """A planned training run.

    Args:
        kind: ``"snn"`` or ``"ann"``.
        name: deterministic run name (folder name under the results folder).
        command: full subprocess argv.
        run_dir: the run folder the training script will write.
        done: True when ``run_dir/summary.json`` already exists.
        after_dense: the run prunes the sweep's dense run of its kind (``GridEntry.script``).
    """

    kind: str
    name: str
    command: list[str] = field(default_factory=list)
    run_dir: Path = Path()
    done: bool = False
    after_dense: bool = False


def _grid(lats_d, pgh_d, stds_d, targets, beta, rounds) -> tuple[GridEntry, ...]:
    return (
        GridEntry("dense"),
        GridEntry("lats", tuple(lats_d), "--final-threshold", ("--lats-schedule", "lr")),
        GridEntry("slats", tuple(lats_d), "--final-threshold"),
        GridEntry("pgh", tuple(pgh_d), "--final-threshold", ("--beta", str(beta))),
        GridEntry("stds", tuple(stds_d), "--final-threshold", ("--stds-shape", "sine"), "sine"),
        GridEntry("stds", tuple(stds_d), "--final-threshold", ("--stds-shape", "linear"), "linear"),
        GridEntry("gmp", tuple(targets), "--target-sparsity"),
        # the families SNN compression papers compare against (snnprune/docs/methods.md): N:M (sparsity
        # 1 - N/M by construction), lottery tickets, one-shot post-training pruning of the dense run
        # (the stem conv of the grey-image models has 1 input channel, no group of M: kept dense)
        GridEntry(
            "lats", (None,), None, ("--lats-schedule", "lr", "--granularity", "2:4", *NM_EXCLUDE), "2of4"
        ),
        GridEntry("gmp", (None,), None, ("--granularity", "2:8", *NM_EXCLUDE), "2of8"),
        GridEntry("imp", tuple(targets), "--target-sparsity", ("--rounds", str(rounds))),
        GridEntry(
            "oneshot",
            tuple(targets),
            "--target-sparsity",
            ("--method", "magnitude"),
            "magnitude",
            "oneshot.py",
        ),
        GridEntry("oneshot", tuple(targets), "--target-sparsity", ("--method", "osbc"), "osbc", "oneshot.py"),
        # weight and neuron masks with the SOP penalty of Shi et al.: the penalty sets the sparsity (1e-7
        # gave 91.5 % weights and 94 % neurons in the default run, docs/results.md)
        GridEntry("shi2024", SHI_PENALTIES, "--penalty"),
    )


QUICK_GRID = _grid(QUICK_LATS_D, QUICK_PGH_D, QUICK_STDS_D, QUICK_TARGETS, QUICK_PGH_BETA, QUICK_IMP_ROUNDS)
FULL_GRID = (
    *_grid(FULL_LATS_D, FULL_LATS_D, FULL_STDS_D, FULL_TARGETS, FULL_PGH_BETA, FULL_IMP_ROUNDS),
    GridEntry("st3", FULL_TARGETS, "--target-sparsity"),
)


def run_name(kind: str, method: str, level: float | None, tag: str = "") -> str:
    """Deterministic run name from (kind, method, level).

    Example: ``run_name("snn", "stds", 0.2, "sine") == "snn_stds-sine_0.2"``; dense runs are
    ``"snn_dense"``.
    """
    label = f"{method}-{tag}" if tag else method
    return f"{kind}_{label}" if level is None else f"{kind}_{label}_{level:g}"


def build_command(
    kind: str,
    entry: GridEntry,
    level: float | None,
    name: str,
    output_dir: Path,
    common: Sequence[str],
    python: str = sys.executable,
    model: str | None = None,
) -> list[str]:
    """Subprocess argv for one run of ``scripts/train_sew.py`` (snn) or ``scripts/train_ann.py`` (ann) of
    ``model`` (default ``sew_resnet18`` / ``ann_resnet18``), or of ``entry.script`` on the sweep's dense
    run of ``kind`` (``common`` and ``model`` unused)."""
    if kind not in ("snn", "ann"):
        raise ValueError(f"kind must be 'snn' or 'ann', got {kind!r}")
    if entry.script:
        dense = output_dir / run_name(kind, "dense", None)
        cmd = [python, str(SCRIPTS_DIR / entry.script), "--run", str(dense)]
        if level is not None:
            cmd += [entry.level_flag or "", f"{level:g}"]
        # a folder without summary.json is a run that died before its end: replace it
        return [*cmd, *entry.extra, "--output-dir", str(output_dir), "--run-name", name, "--overwrite"]
    script = SCRIPTS_DIR / ("train_sew.py" if kind == "snn" else "train_ann.py")
    model = model or DEFAULT_MODELS[kind]
    cmd = [python, str(script), "--model", model, "--method", entry.method]
    if level is not None:
        if entry.level_flag is None:
            raise ValueError(f"grid entry {entry.method!r} has a level but no level_flag")
        cmd += [entry.level_flag, f"{level:g}"]
    cmd += list(entry.extra)
    # --resume auto: a run killed mid-way continues from its checkpoint (the engine refuses to start a new
    # run into a folder that holds one)
    cmd += ["--output-dir", str(output_dir), "--run-name", name, "--resume", "auto"]
    for tok in common:
        cmd.append(tok)
    return cmd


def plan(
    output_dir: Path,
    grid: Sequence[GridEntry],
    kinds: Sequence[str],
    common: Sequence[str],
    snn_only: Sequence[str] = (),
    methods: Sequence[str] | None = None,
    python: str = sys.executable,
    ramp_flags: Sequence[str] = (),
    models: dict[str, str] | None = None,
) -> list[RunSpec]:
    """Expand the grid into ``RunSpec`` objects, marking runs already finished (summary.json exists).

    Args:
        output_dir: results folder; run folders are ``output_dir/<run name>``.
        grid: grid entries.
        kinds: subset of ``("snn", "ann")``.
        common: flags passed to every run.
        snn_only: flags passed to SNN runs only (``--T``).
        methods: optional filter on method names (``"stds-sine"`` style labels also accepted).
        python: interpreter for the subprocesses.
        ramp_flags: flags passed to the training runs of methods with a sparsity ramp (an ``end_step``
            keyword: ``--prune-end-epoch E``).
        models: kind -> model name (default :data:`DEFAULT_MODELS`).
    """
    specs = []
    for kind in kinds:
        for entry in grid:
            label = f"{entry.method}-{entry.tag}" if entry.tag else entry.method
            if methods and entry.method not in methods and label not in methods:
                continue
            for level in entry.levels:
                name = run_name(kind, entry.method, level, entry.tag)
                flags = list(common) + (list(snn_only) if kind == "snn" else [])
                if not entry.script and "end_step" in method_kwargs(entry.method):
                    flags += list(ramp_flags)
                cmd = build_command(
                    kind, entry, level, name, output_dir, flags, python, (models or {}).get(kind)
                )
                run_dir = output_dir / name
                done = (run_dir / "summary.json").exists()
                specs.append(RunSpec(kind, name, cmd, run_dir, done, bool(entry.script)))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("grid produces duplicate run names; give variants of one method distinct tags")
    for s in specs:
        dense = output_dir / run_name(s.kind, "dense", None)
        if s.after_dense and not (dense / "summary.json").exists() and dense.name not in names:
            raise ValueError(
                f"{s.name} prunes the dense run {dense}, which is neither finished nor planned; add dense to "
                "--methods"
            )
    return specs


def _subprocess_runner(cmd: list[str], log_path: Path, timeout: float | None = None) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        try:
            return subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, check=False, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            log.write(f"\n[sweep] killed after the --run-timeout of {timeout} s\n")
            return 124


def run_sweep(
    specs: Sequence[RunSpec],
    runner: Callable[[list[str], Path], int] = _subprocess_runner,
    dry_run: bool = False,
    log=print,
) -> dict[str, list[str]]:
    """Run the planned runs in order, skipping finished ones.

    Args:
        specs: output of :func:`plan`.
        runner: ``runner(cmd, log_path) -> returncode``; the default runs a subprocess and writes its
            output to ``<results>/logs/<name>.log``.
        dry_run: print the commands, run nothing.
        log: printing function.

    Returns:
        dict with lists of run names under ``"ran"``, ``"skipped"``, ``"failed"``.
    """
    out: dict[str, list[str]] = {"ran": [], "skipped": [], "failed": []}
    for i, spec in enumerate(specs, 1):
        head = f"[{i}/{len(specs)}] {spec.name}"
        if spec.done or (spec.run_dir / "summary.json").exists():
            log(f"{head}: skipped (finished: {spec.run_dir / 'summary.json'} exists)")
            out["skipped"].append(spec.name)
            continue
        if dry_run:
            log(f"{head}: {shlex.join(spec.command)}")
            continue
        t0 = time.time()
        log_path = spec.run_dir.parent / "logs" / f"{spec.name}.log"
        try:
            rc = runner(spec.command, log_path)
        except Exception as exc:  # a broken run must not stop the sweep
            log(f"{head}: FAILED ({type(exc).__name__}: {exc})")
            rc = -1
        dt = time.time() - t0
        if rc == 0 and (spec.run_dir / "summary.json").exists():
            log(f"{head}: done in {dt:.0f} s")
            out["ran"].append(spec.name)
        else:
            if rc == 0:
                log(f"{head}: FAILED (exit 0 but no summary.json in {spec.run_dir}); see {log_path}")
            elif rc != -1:
                log(f"{head}: FAILED (exit code {rc}) after {dt:.0f} s; see {log_path}")
            out["failed"].append(spec.name)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0]
        + " Grid: dense, LATS, S-LATS, PGH (beta), STDS sine and linear over final thresholds D, and GMP "
        "(full grid also ST-3) over target sparsities; beside them the families SNN papers compare against: "
        "LATS 2:4 and GMP 2:8 (N:M), IMP (lottery tickets) over the targets, and one-shot magnitude and OSBC "
        "pruning of the sweep's dense run (scripts/oneshot.py), and Shi et al.'s weight and neuron masks over SOP "
        "penalties (shi2024). The threshold/target constants are at the top of "
        "scripts/sweep.py. Runs named <kind>_<method>[-<variant>]_<level> (e.g. snn_stds-sine_0.2) in "
        "--output-dir; subprocess logs in --output-dir/logs/. Resumable: runs with summary.json are "
        "skipped. Exit code 1 if any run failed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1].replace("``", ""),  # plain text: the docstring has literals only
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--quick",
        action="store_true",
        help="small CPU grid on embedded_mnist (default): "
        f"width {QUICK_WIDTH}, T={QUICK_T}, {QUICK_EPOCHS} epochs, {2 * sum(map(len, (e.levels for e in QUICK_GRID)))} "
        "runs (a training run SNN ~40 s, ANN ~17 s on 2 cores)",
    )
    g.add_argument(
        "--full",
        action="store_true",
        help="paper-scale grid for GPUs (more levels, longer "
        "training; use with --dataset cifar10|imagenet --data-path DIR)",
    )
    p.add_argument(
        "--output-dir", type=Path, default=Path("runs/sweep"), help="results folder (default runs/sweep)"
    )
    p.add_argument("--dataset", default="embedded_mnist", help="dataset name passed to the training scripts")
    p.add_argument("--data-path", default=None, help="dataset root (cifar10/imagenet)")
    p.add_argument(
        "--kinds",
        nargs="+",
        choices=("snn", "ann"),
        default=["snn", "ann"],
        help="which nets to run (default both)",
    )
    p.add_argument(
        "--methods", nargs="+", default=None, help="only these methods/variants, e.g. lats stds-sine dense"
    )
    p.add_argument("--model", default=DEFAULT_MODELS["snn"], help="the SNN (default %(default)s)")
    p.add_argument("--ann-model", default=DEFAULT_MODELS["ann"], help="its ANN twin (default %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="override the grid's epochs")
    p.add_argument("--width", type=int, default=None, help="override the base width (models that take one)")
    p.add_argument("--T", type=int, default=None, help="override the SNN time steps")
    p.add_argument("--seed", type=int, default=0, help="seed for every run (default 0)")
    p.add_argument("--limit-train-batches", type=int, default=None, help="cap train batches per epoch")
    p.add_argument(
        "--run-timeout",
        type=float,
        default=None,
        help="kill a run after this many seconds and count it as failed (exit code 124); default no limit",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands (and skips) and run nothing")
    p.add_argument(
        "--extra",
        default="",
        help="extra flags appended to every training command, quoted, "
        "e.g. --extra '--device cuda --amp bf16'",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 all ok, 1 if any run failed)."""
    parser = _parser()
    args = parser.parse_args(argv)
    sys.path.insert(0, str(SCRIPTS_DIR.parent))
    import models

    pair = {"snn": args.model, "ann": args.ann_model}
    for flag, name in (("--model", args.model), ("--ann-model", args.ann_model)):
        if name not in models.list_models():
            parser.error(f"{flag}: unknown model {name!r}; choose one of {', '.join(models.list_models())}")
    takes = set.intersection(*(set(models.model_kwargs(pair[kind])) for kind in args.kinds))
    if args.width is not None and "width" not in takes:
        parser.error(f"--width: not an option of --model {args.model}; leave it out")
    full = args.full
    grid = FULL_GRID if full else QUICK_GRID
    epochs = args.epochs or (FULL_EPOCHS.get(args.dataset, 100) if full else QUICK_EPOCHS)
    width = args.width or (64 if full else QUICK_WIDTH)
    T = args.T or (4 if full else QUICK_T)
    limit = (
        args.limit_train_batches
        if args.limit_train_batches is not None
        else (None if full else QUICK_LIMIT_TRAIN_BATCHES)
    )
    common = ["--dataset", args.dataset, "--epochs", str(epochs), "--seed", str(args.seed), "--quiet"]
    if "width" in takes:
        common += ["--width", str(width)]
    if full and "stem" in takes:  # the default small stem is for the embedded 28 px data, not ImageNet
        common += ["--stem", "imagenet" if args.dataset == "imagenet" else "small"]
    if args.data_path:
        common += ["--data-path", str(args.data_path)]
    if limit:
        common += ["--limit-train-batches", str(limit)]
    common += shlex.split(args.extra)
    ramp_end = max(1, round(epochs * RAMP_FRACTION))
    ramp = ["--prune-end-epoch", str(ramp_end)] if ramp_end < epochs else []
    try:
        specs = plan(
            args.output_dir,
            grid,
            args.kinds,
            common,
            ["--T", str(T)],
            args.methods,
            ramp_flags=ramp,
            models=pair,
        )
    except ValueError as exc:
        parser.error(f"--methods: {exc}")
    if not specs:
        raise ValueError(
            f"no runs selected: --methods {args.methods} matches nothing in the grid; use names "
            "like dense lats slats pgh stds-sine stds-linear gmp st3 lats-2of4 gmp-2of8 imp oneshot oneshot-osbc shi2024"
        )
    todo = sum(not s.done for s in specs)
    print(f"sweep: {len(specs)} runs ({todo} to do) -> {args.output_dir}")
    runner = functools.partial(_subprocess_runner, timeout=args.run_timeout)
    res = run_sweep(specs, runner=runner, dry_run=args.dry_run)
    if not args.dry_run:
        print(
            f"sweep: ran {len(res['ran'])}, skipped {len(res['skipped'])}, failed {len(res['failed'])}"
            + (f": {', '.join(res['failed'])}" if res["failed"] else "")
        )
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
