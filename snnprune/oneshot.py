"""One-shot post-training pruning of a trained dense run: no retraining, BN re-estimated on a few batches.

:func:`oneshot_prune` reloads a dense run with :func:`~snnprune.training.load_run`, prunes every selected
layer to ``target_sparsity`` in one step, by magnitude (the ``gmp`` mask at the end of its ramp: each layer
keeps its largest ``ceil((1 - s) n_l)`` weights, or N of every M with an N:M granularity) or by OSBC's
membrane-potential objective (:func:`membrane_hessians`, :func:`osbc_solve`), re-estimates the
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
from torch import Tensor, nn
from torch.utils.data import DataLoader

from snnprune.data import build_datasets
from snnprune.training.checkpoint import load_checkpoint, save_checkpoint
from snnprune.training.cli import ConfigError
from snnprune.training.loop import LoopOptions, evaluate
from snnprune.training.run_folder import holds_run
from snnprune.training.runs import load_run

__all__ = [
    "METHODS",
    "check_solvable",
    "membrane_decay",
    "membrane_hessians",
    "nm_column_groups",
    "oneshot_prune",
    "osbc_solve",
]

METHODS = ("magnitude", "osbc")


def _check(
    method: str, target_sparsity: float, granularity: str, calibration_batches: int, batch_size: int
) -> None:
    from snnprune.threshold.nm import parse_nm

    if method not in METHODS:
        raise ConfigError(f"--method: must be one of {', '.join(METHODS)}, got {method!r}; pass one of them")
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
    method: str = "magnitude",
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
        method: ``"magnitude"`` (the largest weights survive) or ``"osbc"`` (each row pruned under its
            membrane-potential error, :func:`osbc_solve`, with the Hessians of :func:`membrane_hessians` on
            the calibration batches; every row keeps ``ceil((1 - s) d)`` of its ``d`` weights).
        granularity: ``"weight"`` (per-layer magnitude) or ``"N:M"`` such as ``"2:4"``.
        calibration_batches: training batches (seeded order of the run's ``seed``) for the BN re-estimation
            (and the osbc Hessians).
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

    _check(method, target_sparsity, granularity, calibration_batches, batch_size)
    if limit_test_batches is not None and (isinstance(limit_test_batches, bool) or limit_test_batches < 1):
        raise ConfigError(
            f"--limit-test-batches: must be >= 1, got {limit_test_batches}; pass N >= 1 or omit it"
        )
    folder = Path(run).expanduser()
    folder = folder if folder.is_dir() or not folder.exists() else folder.parent
    try:
        trained = json.loads((folder / "config.json").read_text()).get("method")
    except (OSError, ValueError, AttributeError):
        trained = "dense"  # load_run names what is wrong with the folder
    if trained != "dense":
        raise ConfigError(
            f"--run: {str(folder)!r} was trained with --method {trained}; one-shot pruning starts from a dense "
            "run: pass a run trained with --method dense"
        )
    loaded = load_run(folder, finalize=True)
    source = loaded.config
    suffix = "" if granularity == "weight" else "_{}of{}".format(*granularity.split(":"))
    tag = "" if method == "magnitude" else f"_{method}"
    name = run_name or f"{loaded.path.name}_oneshot{tag}_P{target_sparsity:g}{suffix}"
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
    layers = dict(pruner.layers)
    decay = 1.0
    if method == "osbc":
        try:
            decay = membrane_decay(model)
            for layer in layers.values():
                check_solvable(layer)
        except ValueError as exc:
            raise ConfigError(f"--method: {exc}") from None

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
    batches = [x for x, *_ in itertools.islice(calib, calibration_batches)]
    if method == "magnitude":
        pruner.step()  # the mask at the end of the ramp: target_sparsity in every pruned layer
        snnprune.finalize(model)
    else:
        snnprune.finalize(model)  # before its first step the pruner leaves the weights dense
        _osbc(model, layers, batches, decay, target_sparsity, granularity)
    sparsity = snnprune.sparsity(model)["overall"]
    pruned = evaluate(model, criterion, test, device, options)
    log(f"pruned to {100 * sparsity:.2f}%: test top1 {pruned['test_top1']:.2f}% (dense BN statistics)")
    recalibrate_bn(model, batches)
    model.eval()
    final = evaluate(model, criterion, test, device, options)
    log(f"BN re-estimated on {calibration_batches} batches: test top1 {final['test_top1']:.2f}%")

    report = snnprune.analyze(model, test, max_batches=1 if limit_test_batches is None else limit_test_batches,
                              time_steps=source.get("T"), progress=False)  # fmt: skip
    totals = report.to_dict()["totals"]
    record = {"run": str(loaded.path), "method": method, "target_sparsity": target_sparsity, "granularity": granularity,
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


def _osbc(
    model: nn.Module,
    layers: dict[str, nn.Module],
    batches: list[Tensor],
    decay: float,
    sparsity: float,
    granularity: str,
) -> None:
    from snnprune.threshold.nm import parse_nm

    nm = None if granularity == "weight" else parse_nm(granularity)
    hessians = membrane_hessians(model, layers, batches, decay)
    with torch.no_grad():
        for name, layer in layers.items():
            w = layer.weight.flatten(1)
            groups = None if nm is None else nm_column_groups(layer.weight.shape, nm[1])
            keep = math.ceil((1 - sparsity) * w.shape[1]) if nm is None else nm[0]
            layer.weight.copy_(osbc_solve(w, hessians[name], keep, groups=groups).reshape_as(layer.weight))


def membrane_decay(model: nn.Module) -> float:
    """The per-step decay λ of the membrane potential of ``model``'s spiking neurons (1 with no neuron).

    SpikingJelly's IF neuron charges ``V[t] = V[t-1] + X[t]`` (λ = 1) and its LIF neuron
    ``V[t] = (1 - 1/τ) V[t-1] + X[t]/τ`` or ``+ X[t]`` (λ = 1 - 1/τ, whether the input is divided by τ or
    not: a constant factor of the row does not move the solve). A neuron is recognised by SpikingJelly's
    ``BaseNode`` and its ``tau`` attribute.

    Raises:
        ValueError: neurons with a learnable decay (PLIF) or with several decays.
    """
    from spikingjelly.activation_based.neuron import BaseNode

    decays = set()
    for name, m in model.named_modules():
        if not isinstance(m, BaseNode):
            continue
        tau = getattr(m, "tau", None)
        if (tau is not None and not isinstance(tau, (int, float))) or hasattr(m, "w"):
            raise ValueError(
                f"neuron {name!r} ({type(m).__name__}) has a learnable decay; the osbc membrane objective "
                "needs a fixed one (IF or LIF neurons): use method 'magnitude'"
            )
        decays.add(1.0 if tau is None else 1.0 - 1.0 / float(tau))
    if len(decays) > 1:
        raise ValueError(
            f"the model's neurons decay by {sorted(decays)} per step; the osbc membrane objective needs one "
            "decay: use method 'magnitude'"
        )
    return decays.pop() if decays else 1.0


def check_solvable(module: nn.Module) -> None:
    """Raise ValueError unless :func:`membrane_hessians` handles ``module`` (Linear, Conv2d of one group, zero padding)."""
    if isinstance(module, nn.Linear):
        return
    if not isinstance(module, nn.Conv2d) or module.groups != 1 or module.padding_mode != "zeros":
        raise ValueError(
            f"osbc solves nn.Linear and nn.Conv2d layers with groups=1 and zero padding, got {module!r}; "
            "exclude the layer or use method 'magnitude'"
        )


def _charge(x: Tensor, decay: float) -> Tensor:
    """``sum_{s<=t} decay^(t-s) x[s]`` along dim 0 (the reset-free membrane charge of an input sequence)."""
    out = torch.empty_like(x)
    acc = torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        acc = decay * acc + x[t]
        out[t] = acc
    return out


def _inputs(module: nn.Module, x: Tensor, decay: float) -> Tensor:
    """The rows ``a`` of the layer's linear map ``out = a @ W.T`` (``[samples, in]``), charged over time."""
    if isinstance(module, nn.Linear):
        timed = getattr(module, "step_mode", "s") == "m" and x.dim() >= 3
    else:
        timed = x.dim() == module.weight.dim() + 1  # [T, N, C, ...] through a multi-step conv
    x = _charge(x.double(), decay).flatten(0, 1) if timed else x.double()
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    check_solvable(module)
    cols = nn.functional.unfold(
        x, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride
    )  # [N, C*kh*kw, L], the column order of weight.flatten(1)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def membrane_hessians(
    model: nn.Module, layers: dict[str, nn.Module], batches: list[Tensor], decay: float
) -> dict[str, Tensor]:
    """``H_l = A_lᵀ A_l / n`` (float64) of every layer of ``layers`` over the calibration ``batches``.

    A row of ``A_l`` is one input patch of layer ``l`` charged over time, ``a_t = sum_{s<=t} decay^(t-s)
    x_s``: the layer's contribution to the membrane potential of the neuron it feeds, before any reset, is
    ``W a_t`` (a per-channel BatchNorm in between scales a whole row and does not move the row's solve),
    so ``||(W' - W) A_lᵀ||²`` is the error of that membrane potential. A multi-step layer's input is
    ``[T, N, ...]`` (time first); a layer called once per sample (an encoding layer of static images) has
    no time axis. The model runs in eval mode, neuron states reset after each batch.
    """
    from spikingjelly.activation_based.functional import reset_net

    sums: dict[str, Tensor] = {}
    counts = dict.fromkeys(layers, 0)

    def hook(name: str) -> Any:
        def record(module: nn.Module, args: tuple[Tensor, ...], _out: Any) -> None:
            a = _inputs(module, args[0].detach(), decay)
            sums[name] = sums.get(name, 0) + a.T @ a
            counts[name] += a.shape[0]

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for x in batches:
                model(x)
                reset_net(model)
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    return {n: sums[n] / counts[n] for n in layers if n in sums}


def osbc_solve(
    weight: Tensor, hessian: Tensor, keep: int, *, groups: Tensor | None = None, damp: float = 0.01
) -> Tensor:
    """Prune every row of ``weight`` (``[rows, d]``) to ``keep`` weights under the quadratic error of ``hessian``.

    Each row ``w`` minimises ``(w' - w) H (w' - w)ᵀ`` over the rows ``w'`` with the chosen zeros, ``H`` the
    damped Hessian ``hessian + damp * mean(diag) * I``. The zeros are the ``d - keep`` weights of least
    Optimal Brain Surgeon saliency ``w_q² / [H⁻¹]_qq`` (the error of removing ``q`` alone with the best
    compensation); the survivors then take the exact compensation for that mask, the solution of
    ``H_SS w'_S = (w H)_S``. With ``groups`` (``[num_groups, M]`` column indices), the zeros are the
    ``M - keep_per_group`` least salient of every group instead, ``keep`` then being the survivors per group.

    Returns:
        The pruned weight (float64, ``[rows, d]``).
    """
    w = weight.double()
    h = hessian.double().clone()
    h.diagonal().add_(damp * h.diagonal().mean().clamp_min(1e-12))
    hinv_diag = torch.cholesky_inverse(torch.linalg.cholesky(h)).diagonal()
    saliency = w.pow(2) / hinv_diag
    if groups is None:
        kept = saliency.topk(keep, dim=1).indices.sort(dim=1).values
    else:
        sal = saliency[:, groups]  # [rows, num_groups, M]
        top = sal.topk(keep, dim=2).indices
        kept = groups.expand(w.shape[0], -1, -1).gather(2, top).flatten(1).sort(dim=1).values
    rhs = (w @ h).gather(1, kept)  # (w H)_S of every row
    out = torch.zeros_like(w)
    k = kept.shape[1]
    chunk = max(1, 2**24 // max(1, k * k))  # H_SS of a few rows at a time: at most 16 M float64 values
    for i in range(0, w.shape[0], chunk):
        idx = kept[i : i + chunk]
        h_ss = h[idx.unsqueeze(2), idx.unsqueeze(1)]  # [rows, k, k]
        out[i : i + chunk].scatter_(
            1, idx, torch.linalg.solve(h_ss, rhs[i : i + chunk].unsqueeze(2)).squeeze(2)
        )
    return out


def nm_column_groups(shape: torch.Size, m: int) -> Tensor:
    """Column indices of ``weight.flatten(1)`` of the N:M groups (:mod:`snnprune.threshold.nm`), ``[g, M]``."""
    from snnprune.threshold.nm import to_groups

    index = torch.arange(int(torch.Size(shape[1:]).numel())).reshape(1, *shape[1:])
    return to_groups(index, m)
