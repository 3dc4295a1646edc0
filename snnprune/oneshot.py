"""One-shot post-training pruning of a trained dense run: no retraining, BN re-estimated on a few batches.

:func:`oneshot_prune` reloads a dense run with :func:`~snnprune.training.load_run`, prunes every selected
layer to ``target_sparsity`` by magnitude in one step (the ``gmp`` mask at the end of its ramp: each layer
keeps its largest ``ceil((1 - s) n_l)`` weights, or N of every M with an N:M granularity), re-estimates the
BatchNorm running statistics on ``calibration_batches`` training batches
(:func:`snnprune.structured.recalibrate_bn`) and writes a new run folder that
:func:`~snnprune.training.load_run` reads like any other: ``config.json`` (the dense run's, with a
``oneshot`` record), ``checkpoint.pth`` (the dense run's checkpoint with the pruned weights),
``summary.json`` and ``analyze.json``. The summary gives the test top-1 of the dense model, of the pruned
model with the dense run's BN statistics, and after the re-estimation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from snnprune.training.checkpoint import load_checkpoint, save_checkpoint
from snnprune.training.cli import ConfigError
from snnprune.training.data import build_datasets
from snnprune.training.loop import LoopOptions, evaluate
from snnprune.training.runs import load_run
from snnprune.training.validation import holds_run

__all__ = ["oneshot_prune"]


def _check(target_sparsity: float, granularity: str, calibration_batches: int, batch_size: int) -> None:
    from snnprune.threshold.nm import parse_nm

    if not (isinstance(target_sparsity, (int, float)) and 0.0 <= target_sparsity < 1.0):
        raise ConfigError(
            f"--target-sparsity: must be in [0, 1), got {target_sparsity}; pass the fraction of zeros, e.g. 0.9"
        )
    try:
        nm = None if granularity == "weight" else parse_nm(granularity)
    except ValueError as exc:
        raise ConfigError(f"--granularity: {exc}") from None
    if granularity != "weight" and nm is None:
        raise ConfigError(
            f"--granularity: must be weight or N:M such as 2:4, got {granularity!r}; pass one of them"
        )
    if nm is not None and not math.isclose(target_sparsity, 1 - nm[0] / nm[1]):
        raise ConfigError(
            f"--target-sparsity: granularity {granularity} prunes {1 - nm[0] / nm[1]:g} of the weights, got "
            f"{target_sparsity}; pass --target-sparsity {1 - nm[0] / nm[1]:g}"
        )
    for name, value in (("--calibration-batches", calibration_batches), ("--batch-size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: must be an integer >= 1, got {value!r}; pass e.g. 20")


def oneshot_prune(
    run: str | Path,
    output_dir: str | Path,
    *,
    target_sparsity: float,
    granularity: str = "weight",
    calibration_batches: int = 20,
    batch_size: int = 64,
    exclude: list[str] | None = None,
    limit_test_batches: int | None = None,
    run_name: str | None = None,
    overwrite: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Prune the dense run ``run`` to ``target_sparsity`` by magnitude, re-estimate BN, write a new run folder.

    Args:
        run: a dense run folder (``--method dense``) written by the training scripts.
        output_dir: parent folder of the new run folder.
        target_sparsity: fraction of zeros of every pruned layer, in [0, 1) (``1 - N/M`` with N:M).
        granularity: ``"weight"`` (per-layer magnitude) or ``"N:M"`` such as ``"2:4"``.
        calibration_batches: training batches (seeded order of the run's ``seed``) for the BN re-estimation.
        batch_size: of the calibration and test batches.
        exclude: layer-name globs kept dense (e.g. ``["conv1"]``, a stem whose input channels are no
            multiple of M).
        limit_test_batches: evaluate on the first N test batches (None: all).
        run_name: the new folder's name (default: ``<dense run>_oneshot_P<s>`` plus ``_<N>of<M>``).
        overwrite: replace a folder that already holds a run.
        log: called with progress lines.

    Returns:
        The summary (also ``summary.json``): ``test_top1_dense``, ``test_top1_pruned`` (the dense run's BN
        statistics), ``test_top1`` (after the re-estimation), ``sparsity``, ``run_dir`` and the analysis totals.

    Raises:
        ConfigError: a bad argument, a run that is not dense, an occupied output folder, a layer the
            granularity cannot prune (all before any data is read).
    """
    import snnprune
    from snnprune.structured import recalibrate_bn

    _check(target_sparsity, granularity, calibration_batches, batch_size)
    if limit_test_batches is not None and (isinstance(limit_test_batches, bool) or limit_test_batches < 1):
        raise ConfigError(
            f"--limit-test-batches: must be >= 1, got {limit_test_batches}; pass N >= 1 or omit it"
        )
    folder = Path(run).expanduser()
    folder = folder if folder.is_dir() or not folder.exists() else folder.parent
    try:
        method = json.loads((folder / "config.json").read_text()).get("method")
    except (OSError, ValueError, AttributeError):
        method = "dense"  # load_run names what is wrong with the folder
    if method != "dense":
        raise ConfigError(
            f"--run: {str(folder)!r} was trained with --method {method}; one-shot pruning starts from a dense "
            "run: pass a run trained with --method dense"
        )
    loaded = load_run(folder, finalize=True)
    source = loaded.config
    suffix = "" if granularity == "weight" else "_{}of{}".format(*granularity.split(":"))
    name = run_name or f"{loaded.path.name}_oneshot_P{target_sparsity:g}{suffix}"
    out = Path(output_dir).expanduser() / name
    if out.resolve() == loaded.path.resolve():
        raise ConfigError(f"--run-name: {name!r} is the dense run's own folder; pass another --run-name")
    if holds_run(out) and not overwrite:
        raise ConfigError(
            f"--run-name: {str(out)!r} already holds a run; pass another --run-name or --overwrite"
        )
    model = loaded.model
    try:
        pruner = snnprune.sparsify(
            model, "gmp", target_sparsity=target_sparsity, granularity=granularity, total_steps=1,
            frequency=1, exclude=exclude,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"--prune-exclude: {exc}") from None

    train_set, test_set, _, _ = build_datasets(
        argparse.Namespace(**{"data_path": None, "download": False, **source})
    )
    test = DataLoader(test_set, batch_size=batch_size, shuffle=False)
    gen = torch.Generator().manual_seed(int(source.get("seed", 0)))
    calib = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=gen, drop_last=True)
    device = torch.device("cpu")
    options = LoopOptions(limit_test_batches=limit_test_batches)
    criterion = nn.CrossEntropyLoss()

    dense = evaluate(model, criterion, test, device, options)
    log(f"dense: test top1 {dense['test_top1']:.2f}%")
    pruner.step()  # the mask at the end of the ramp: target_sparsity in every pruned layer
    snnprune.finalize(model)
    sparsity = snnprune.sparsity(model)["overall"]
    pruned = evaluate(model, criterion, test, device, options)
    log(f"pruned to {100 * sparsity:.2f}%: test top1 {pruned['test_top1']:.2f}% (dense BN statistics)")
    recalibrate_bn(model, [x for x, *_ in itertools.islice(calib, calibration_batches)])
    model.eval()
    final = evaluate(model, criterion, test, device, options)
    log(f"BN re-estimated on {calibration_batches} batches: test top1 {final['test_top1']:.2f}%")

    report = snnprune.analyze(model, test, max_batches=1 if limit_test_batches is None else limit_test_batches,
                              time_steps=source.get("T"), progress=False)  # fmt: skip
    totals = report.to_dict()["totals"]
    record = {"run": str(loaded.path), "target_sparsity": target_sparsity, "granularity": granularity,
              "calibration_batches": calibration_batches, "batch_size": batch_size, "exclude": exclude or []}  # fmt: skip
    summary = {
        "test_top1_dense": dense["test_top1"],
        "test_top1_pruned": pruned["test_top1"],
        "test_top1": final["test_top1"],
        "test_top5": final["test_top5"],
        "firing_rate": None if math.isnan(final["firing_rate"]) else final["firing_rate"],
        "sparsity": sparsity,
        "oneshot": record,
        **{k: totals.get(k) for k in ("energy_pj", "sops", "macs")},
    }
    ckpt = load_checkpoint(loaded.path / "checkpoint.pth", name="--run")
    ckpt["model"] = model.state_dict()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**source, "oneshot": record}, indent=2, default=str))
    save_checkpoint(ckpt, out / "checkpoint.pth")
    (out / "analyze.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return {**summary, "run_dir": str(out)}
