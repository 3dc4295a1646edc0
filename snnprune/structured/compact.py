"""Physical compaction: remove the zero channels of a filter-pruned model, keeping its outputs.

:func:`compact` returns a dense model with fewer channels that computes what the masked model computes
(the removed channels are exactly zero there, see :mod:`snnprune.structured.groups`), so the ordinary dense
kernels run faster. Its widths are plain module attributes (``in_channels``, ``out_channels``,
``in_features``, ``num_features``), read back by :func:`layer_widths`; :func:`save_compact` stores them with
the ``state_dict`` and :func:`load_compact` shrinks a freshly built dense model to them before loading.
The files are written by :func:`snnprune.files.save` (atomic, with a ``.sha256`` digest beside each) and
read by :func:`snnprune.files.load`, which refuses changed bytes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from snnprune import files
from snnprune.files import CorruptFileError
from snnprune.structured.groups import (
    FollowConv,
    FollowScale,
    channel_groups,
    fold_removed_channels,
    is_resnet_like,
    is_transformer_like,
)
from snnprune.threshold.parametrization import finalize

__all__ = [
    "EXPORT_FILES",
    "compact",
    "export_files",
    "layer_widths",
    "load_compact",
    "recalibrate_bn",
    "save_compact",
    "shrink_",
]

_FORMAT = "snnprune-compact-v1"
_WIDTH_ATTRS = {
    nn.Linear: ("in_features", "out_features"),
    nn.modules.conv._ConvNd: ("in_channels", "out_channels"),
    nn.modules.batchnorm._BatchNorm: ("num_features",),
}


def _attrs(module: nn.Module) -> tuple[str, ...]:
    for cls, attrs in _WIDTH_ATTRS.items():
        if isinstance(module, cls):
            return attrs
    return ()


def layer_widths(model: nn.Module) -> dict[str, dict[str, int]]:
    """Widths of every Conv, Linear and BatchNorm layer: ``{name: {"in_channels": .., "out_channels": ..}}``,
    and the unit counts of the channel groups (``{attn name: {"num_heads": ..}}``)."""
    widths = {
        name: {a: int(getattr(m, a)) for a in _attrs(m)} for name, m in model.named_modules() if _attrs(m)
    }
    if is_transformer_like(model):
        modules = dict(model.named_modules())
        for group in channel_groups(model):
            for name, attr in group.counts:
                widths.setdefault(name, {})[attr] = int(getattr(modules[name], attr))
    return widths


def _reset(model: nn.Module) -> None:
    from spikingjelly.activation_based.functional import reset_net

    reset_net(model)


def _run(model: nn.Module, x: Tensor) -> Tensor:
    _reset(model)
    out = model(x)
    _reset(model)
    return out


def _param(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone())


def _slice_out(module: nn.Module, keep: Tensor) -> None:
    module.weight = _param(module.weight[keep])
    if getattr(module, "bias", None) is not None:
        module.bias = _param(module.bias[keep])
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        for buf in ("running_mean", "running_var"):
            if getattr(module, buf, None) is not None:
                setattr(module, buf, getattr(module, buf)[keep].clone())
        module.num_features = int(keep.numel())
    elif isinstance(module, nn.Linear):
        module.out_features = int(keep.numel())
    else:
        module.out_channels = int(keep.numel())


def _slice_in(module: nn.Module, keep: Tensor) -> None:
    module.weight = _param(module.weight[:, keep])
    if isinstance(module, nn.Linear):
        module.in_features = int(keep.numel())
    else:
        module.in_channels = int(keep.numel())


def _fold_follow_hooks(model: nn.Module) -> None:
    """Fold every :class:`FollowConv` hook left on a BN (registered by hand: :func:`finalize` removes the
    pruners' ones) into its BN (gamma = beta = 0 on removed channels) and drop it."""
    for bn in model.modules():
        for key, hook in list(bn._forward_hooks.items()):
            if isinstance(hook, FollowConv):
                fold_removed_channels(bn, hook.conv)
                del bn._forward_hooks[key]
        for key, hook in list(bn._forward_pre_hooks.items()):
            if isinstance(hook, FollowScale):
                del bn._forward_pre_hooks[key]


def _run_checked(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)`` on float64 copies (floating inputs), for the structural check of :func:`compact`."""
    if not x.is_floating_point():
        return _run(model, x)
    return _run(copy.deepcopy(model).double(), x.double())


def _input_error(model: nn.Module, x: Tensor, exc: Exception) -> ValueError:
    """One line for an ``example_input`` that ``model`` rejects: its shape and what the first layer expects."""
    first = next(
        (n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    )
    name, layer = first
    expects = (
        f"{layer.in_features} input features"
        if isinstance(layer, nn.Linear)
        else f"{layer.in_channels} input channels"
    )
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ValueError(
        f"compact: example_input of shape {list(x.shape)} does not fit {type(model).__name__}, whose first "
        f"layer {name!r} ({type(layer).__name__}) expects {expects} ({cause}); pass a batch the model accepts"
    )


@torch.no_grad()
def compact(model: nn.Module, example_input: Tensor, *, atol: float = 1e-4) -> nn.Module:
    """A physically smaller dense copy of ``model`` without its removed (all-zero) channels.

    A channel of a group (see :func:`~snnprune.structured.groups.channel_groups`) is removed when every
    producer's filter is exactly zero and its output is exactly zero: :math:`\\gamma = \\beta = 0` in the BN
    that follows it (whatever the producer's bias), or, without a BN, a zero bias; a unit of several
    channels (an attention head) is removed when all its channels are, and the group's count
    (``num_heads``) is lowered to the units kept; at least one channel (unit) per group is kept. The copy
    is finalized (no parametrization, no hook), so it trains and runs as an ordinary model; ``model`` is
    not modified. The compacted model is checked against the masked one on ``example_input`` (eval mode), both run in
    float64 on copies: the check is about structure, and in float32 the convolutions over fewer channels
    sum in another order, which can flip a spike of a neuron sitting at its threshold (a BN channel with a
    tiny variance amplifies the rounding) although nothing is wrong.

    Args:
        model: a filter-pruned (or any) ResNet- or transformer-protocol model, parametrized or finalized.
        example_input: a batch the model accepts (e.g. ``[N, C, H, W]`` images).
        atol: largest allowed max-abs difference of the (float64) outputs in the check.

    Returns:
        The compacted model, in ``model``'s training mode.

    Raises:
        ValueError: ``model`` follows neither protocol, or does not accept ``example_input``
            (one line naming its shape and what the first layer expects).
        RuntimeError: the compacted model's output differs from the masked model's by more than ``atol``.
    """
    groups = channel_groups(model)
    m = finalize(copy.deepcopy(model))
    _fold_follow_hooks(m)
    m.eval()
    try:
        ref = _run_checked(m, example_input)
    except RuntimeError as exc:
        raise _input_error(model, example_input, exc) from None
    modules = dict(m.named_modules())
    for group in groups:
        removable = None
        for conv_name, bn_name in group.producers:
            conv = modules[conv_name]
            zero = conv.weight.reshape(conv.weight.shape[0], -1).eq(0).all(1)
            if bn_name is not None:  # gamma = beta = 0 zeroes the channel whatever the bias before the BN
                bn = modules[bn_name]
                zero &= bn.weight.eq(0) & bn.bias.eq(0) if bn.weight is not None else torch.zeros_like(zero)
            elif conv.bias is not None:
                zero &= conv.bias.eq(0)
            removable = zero if removable is None else removable & zero
        w = group.width
        units = (~removable.view(-1, w).all(1)).nonzero().flatten()  # a unit goes when all its channels go
        if units.numel() == 0:
            units = torch.zeros(1, dtype=torch.long, device=removable.device)
        keep = (units[:, None] * w + torch.arange(w, device=units.device)).flatten()
        if keep.numel() == removable.numel():
            continue
        for module_name, attr in group.counts:
            setattr(modules[module_name], attr, int(units.numel()))
        for conv_name, bn_name in group.producers:
            _slice_out(modules[conv_name], keep)
            if bn_name is not None:
                _slice_out(modules[bn_name], keep)
        for name in group.consumers:
            _slice_in(modules[name], keep)
    out = _run_checked(m, example_input)
    diff = (out - ref).abs().max().item()
    if not diff <= atol:
        raise RuntimeError(
            f"compacted {type(model).__name__} differs from the masked model by {diff:.3g} > atol={atol}; "
            "its structure is outside the ResNet protocol of snnprune.structured.groups"
        )
    m.train(model.training)
    return m


def shrink_(model: nn.Module, widths: dict[str, dict[str, int]]) -> nn.Module:
    """Resize ``model``'s layers in place to ``widths`` (from :func:`layer_widths`); values are left empty.

    Args:
        model: a freshly built dense model of the same architecture.
        widths: recorded widths.

    Returns:
        ``model``, ready for ``load_state_dict`` of the compacted model.

    Raises:
        ValueError: a recorded layer that ``model`` does not have, or one narrower than recorded (a model
            built with another width).
    """
    modules = dict(model.named_modules())
    for name, w in widths.items():
        if name not in modules:
            raise ValueError(
                f"recorded layer {name!r} is not in {type(model).__name__}; build the same model"
            )
        module = modules[name]
        for attr, value in w.items():
            old = getattr(module, attr)
            if old == value:
                continue
            if not 0 < value < old:
                raise ValueError(
                    f"layer {name!r} has {attr}={old} in {type(model).__name__}, the compacted model has "
                    f"{value}; build the model with the width it was trained with"
                )
            if not any(attr in a for a in _WIDTH_ATTRS.values()):  # a unit count (num_heads)
                setattr(module, attr, value)
                continue
            idx = torch.arange(value)
            if attr in ("out_channels", "out_features", "num_features"):
                _slice_out(module, idx)
            else:
                _slice_in(module, idx)
    return model


def save_compact(model: nn.Module, path: str | Path) -> None:
    """Save the compacted model's ``state_dict`` with its widths (see :func:`load_compact`).

    Written by :func:`snnprune.files.save`: atomically, with ``<path>.sha256`` beside it.

    Args:
        model: the compacted model (:func:`compact`).
        path: destination file.

    Raises:
        snnprune.files.DiskFullError: the disk is full (a previous file at ``path`` is unchanged).
        PermissionError: the folder is not writable.
    """
    files.save({"format": _FORMAT, "widths": layer_widths(model), "state_dict": model.state_dict()}, path)


def load_compact(model: nn.Module, path: str | Path | dict[str, Any]) -> nn.Module:
    """Shrink a freshly built dense ``model`` to the saved widths and load the saved weights.

    Args:
        model: the same architecture, built dense (e.g. ``models.create_model(...)``).
        path: a file written by :func:`save_compact` (or its loaded dict).

    Returns:
        ``model``, now the compacted model.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a compact-model file, or ``model`` lacks a recorded layer, is narrower than
            recorded (another width) or does not take the saved weights (another architecture).
        snnprune.files.CorruptFileError: changed bytes (digest, zip CRC), or widths or weights of the
            wrong types.
    """
    data = path if isinstance(path, dict) else files.load(path)
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(
            f"{path!s}: not a compacted model (no format tag {_FORMAT!r}); pass a file written by "
            "snnprune.structured.save_compact"
        )
    widths, state = data.get("widths"), data.get("state_dict")
    fix = "restore it from a backup or export it again with snnprune.structured.save_compact"
    if not (
        isinstance(widths, dict)
        and all(
            isinstance(w, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in w.values())
            for w in widths.values()
        )
    ):
        raise CorruptFileError(str(path), "is corrupt: its widths are not {layer: {attribute: int}}", fix)
    if not (isinstance(state, dict) and all(torch.is_tensor(t) for t in state.values())):
        raise CorruptFileError(str(path), "is corrupt: its state_dict is not a dict of tensors", fix)
    shrink_(model, widths)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        cause = " ".join(str(exc).split())
        raise ValueError(
            f"{path!s}: its weights do not load into {type(model).__name__} ({cause[:300]}); build the model "
            "the file was exported from, or export it again"
        ) from None
    return model


#: The files :func:`export_files` writes (the packed model always, the compacted one when ``compacted``).
EXPORT_FILES = ("model_sparse_packed.pth", "model_compact.pth")


def export_files(
    model: nn.Module, finalized: nn.Module, example_input: Tensor, out_dir: str | Path, *, compacted: bool
) -> dict[str, int]:
    """Write the export files of a pruned run next to ``model_sparse.pth`` and return their sizes.

    * ``model_sparse_packed.pth``: the finalized weights as values + bitmask (:func:`save_sparse`);
    * ``model_compact.pth`` (when ``compacted``): :func:`compact` of ``model``, written by :func:`save_compact`.

    Each file gets its ``.sha256`` digest beside it (:func:`snnprune.files.save`).

    Args:
        model: the trained (parametrized) model.
        finalized: its finalized copy (whose ``state_dict`` is ``model_sparse.pth``).
        example_input: one input batch on the model's device (for the compaction check).
        out_dir: the run folder.
        compacted: also write the compacted model (filter granularity; ResNet-protocol models only).

    Returns:
        Byte sizes ``model_sparse_bytes`` (dense ``torch.save``), ``model_sparse_packed_bytes`` and, when
        compacted, ``model_compact_bytes`` and ``compact_params``.
    """
    from snnprune.structured.sparse import save_sparse

    out_dir = Path(out_dir)
    packed, compact_file = (out_dir / name for name in EXPORT_FILES)
    sizes = save_sparse(finalized.state_dict(), packed)
    result = {"model_sparse_bytes": sizes["dense_bytes"], "model_sparse_packed_bytes": sizes["sparse_bytes"]}
    if compacted and (is_resnet_like(model) or is_transformer_like(model)):  # a protocol of groups.py
        small = compact(model, example_input)
        save_compact(small, compact_file)
        result["model_compact_bytes"] = compact_file.stat().st_size
        result["compact_params"] = sum(p.numel() for p in small.parameters())
    return result


class _ResetAfterForward(nn.Module):
    """``model`` whose neuron states are reset after every forward (for :func:`recalibrate_bn`)."""

    def __init__(self, model: nn.Module, reset: Any) -> None:
        super().__init__()
        self.model, self.reset = model, reset
        self.train(model.training)

    def forward(self, x: Tensor) -> Any:
        out = self.model(x)
        self.reset(self.model)
        return out


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Any, *, reset: Any = None) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics of ``model`` on ``batches`` (in place).

    :func:`torch.optim.swa_utils.update_bn` (running statistics reset, then the cumulative average over
    train-mode forwards, momenta and the training flag restored) with the neuron states reset after each
    batch, under :func:`torch.random.fork_rng`: the random number generators (of the CPU and the model's
    CUDA devices) are as before, so a training run with recalibration draws what one without draws.
    Weights do not change. Useful after filter pruning: the group shrink factor of a surviving channel
    near the threshold is small and moves with every step, and the exponential running averages of
    training can then lag the current weights (measured: a filter-pruned ANN scored 22 % in eval mode and
    93 % with batch statistics; see the README section "Structured pruning").

    Args:
        model: the model (parametrized, finalized or compacted).
        batches: an iterable of input tensors (or ``(input, target, ...)`` tuples), e.g. training batches.
        reset: called with ``model`` after each batch; default: SpikingJelly's ``functional.reset_net``.

    Returns:
        ``model``.
    """
    from torch.optim.swa_utils import update_bn

    devices = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
    with torch.random.fork_rng(devices=devices):
        update_bn(batches, _ResetAfterForward(model, _reset if reset is None else reset))
    return model
