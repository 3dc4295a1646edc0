"""Channel groups of a model: which output channels are removed together, and who consumes them.

Why not Torch-Pruning (DepGraph)? ``torch-pruning`` 1.6.1 traces a multi-step SEW ResNet-18 (the neurons
appear as chains of element-wise ops with ``StackBackward``/``unbind`` over the time steps, and every
SpikingJelly layer flattens ``[T, N]`` to ``[T*N]``), but removing 4 stem channels gives a model whose
forward fails (``weight of size [16, 12, 3, 3], expected input ... to have 12 channels, but got 8``): the
time-step stacks and ``[T*N]`` reshapes make it remove the wrong index sets. Here the grouping is derived
from the module structure instead (the "ResNet protocol" below), which is small and exact.

**ResNet protocol** (the ``models`` SEW ResNets and their ANN twins, torchvision-style ResNets): the model
has ``conv1``, ``bn1``, stages ``layer1``, ``layer2``, ... (``nn.Sequential`` of blocks) and ``fc``; a block
has ``conv1, bn1, conv2, bn2[, conv3, bn3]`` in a chain and ``downsample`` (``Sequential(conv, bn)``) or
``None``. Groups:

* *internal*: output channel ``c`` of a block's ``conv_i`` (``i`` < last) with ``bn_i``; consumed by
  ``conv_{i+1}``;
* *stream*: channel ``c`` of the tensor that flows along a stage. Its producers are the stem conv (or the
  first block's downsample conv) and the last conv of every block of the stage, each with its BN, because
  the SEW connect function joins them element-wise: with every producer's channel at exactly 0,
  ``ADD`` gives 0 + 0, ``AND`` 0 * 0 and ``IAND`` 0 * (1 - 0), all 0 (and ReLU(0 + 0) = 0 for the ANN), so
  the channel can be removed from the whole stage. Consumed by the next stage's ``conv1`` and downsample
  conv, and by ``fc`` after the last stage.

**Transformer protocol** (the ``models`` Spikformer and Spike-driven Transformer and their ANN twins):
the model has ``block`` (a sequence of blocks) and every block an ``mlp`` with ``fc1``, ``fc1_bn`` and
``fc2``. Groups: *MLP hidden channel* ``c``: row ``c`` of ``fc1`` with its BN channel, consumed by column
``c`` of ``fc2`` (between them only an element-wise neuron or ReLU, silent on zero). *Attention head*
``h``, where the block has an ``attn`` with ``q``, ``k``, ``v`` (each with its BN ``q_bn``, ``k_bn``,
``v_bn``), ``proj`` and ``num_heads``: rows ``[h d, (h + 1) d)`` (``d = C_out / num_heads``) of ``q``,
``k`` and ``v`` with their BN channels, removed as one unit (``width = d``), consumed by the same columns
of ``proj``; removing it lowers ``attn.num_heads`` by one. A head whose Q, K and V are all zero adds
nothing: its spikes are silent, so ``Q (K^T V)`` and ``Q`` masked by ``SN(sum(K V))`` are 0, and in the
ANN twin ``softmax(0) V = 0`` (``V = 0``) through a ReLU.

**BN follows its conv.** A filter at zero does not make its channel zero: BN turns it into the constant
:math:`\\beta - \\gamma\\mu/\\sigma`, which a neuron or ReLU passes on. :class:`FollowConv` (a forward hook
on the BN) therefore multiplies the BN output by ``1[channel alive]``, read from the conv's group shrink
factor; :func:`snnprune.compact` folds it into :math:`\\gamma, \\beta` (both 0). :class:`FollowScale` keeps the
BN running statistics in step with the conv's shrink factor. Neurons are element-wise
and stay silent on a zero input (threshold > 0), so they follow without any change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from snnprune.threshold.parametrization import is_prunable, register_removal_hook

__all__ = [
    "BatchNormFollower",
    "ChannelGroup",
    "FollowConv",
    "FollowScale",
    "channel_groups",
    "fold_removed_channels",
    "is_resnet_like",
    "is_transformer_like",
]


@dataclass
class ChannelGroup:
    """Output channels removed together.

    Attributes:
        name: ``"stream:<stage>"``, ``"internal:<conv name>"``, ``"mlp:<block>"`` or ``"heads:<block>"``.
        producers: ``(conv name, BN name or None)`` whose output channel ``c`` forms channel ``c``.
        consumers: layers (Conv or Linear) whose input channel ``c`` reads channel ``c``.
        width: channels per unit: channels ``[u * width, (u + 1) * width)`` are removed together (an
            attention head); 1 for single channels.
        counts: ``(module name, attribute)`` holding the number of units (``num_heads``), set to the number
            kept when units are removed.
    """

    name: str
    producers: list[tuple[str, str | None]] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    width: int = 1
    counts: list[tuple[str, str]] = field(default_factory=list)


def _block_convs(block: nn.Module) -> int:
    n = 0
    while hasattr(block, f"conv{n + 1}") and hasattr(block, f"bn{n + 1}"):
        n += 1
    return n


def is_resnet_like(model: nn.Module) -> bool:
    """True when ``model`` follows the ResNet protocol of this module (see the module docstring)."""
    if not all(hasattr(model, a) for a in ("conv1", "bn1", "fc", "layer1")):
        return False
    if not (is_prunable(model.conv1) and is_prunable(model.fc)):
        return False
    k = 1
    while hasattr(model, f"layer{k}"):
        stage = getattr(model, f"layer{k}")
        if not isinstance(stage, nn.Sequential) or len(stage) == 0:
            return False
        for block in stage:
            if _block_convs(block) < 2 or not hasattr(block, "downsample"):
                return False
            ds = block.downsample
            if ds is not None and not (isinstance(ds, nn.Sequential) and len(ds) == 2 and is_prunable(ds[0])):
                return False
        k += 1
    return True


def is_transformer_like(model: nn.Module) -> bool:
    """True when ``model`` follows the transformer protocol of this module (see the module docstring)."""
    blocks = getattr(model, "block", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or len(blocks) == 0:
        return False
    return all(
        all(hasattr(getattr(b, "mlp", None), a) for a in ("fc1", "fc1_bn", "fc2"))
        and is_prunable(b.mlp.fc1)
        and is_prunable(b.mlp.fc2)
        for b in blocks
    )


_HEAD_ATTRS = ("q", "q_bn", "k", "k_bn", "v", "v_bn", "proj", "num_heads")


def _head_group(block: nn.Module, prefix: str) -> ChannelGroup | None:
    """The attention-head group of a transformer block (see the module docstring), or None."""
    attn = getattr(block, "attn", None)
    if attn is None or not all(hasattr(attn, a) for a in _HEAD_ATTRS):
        return None
    heads, dim = attn.num_heads, attn.q.weight.shape[0]
    if not (isinstance(heads, int) and heads > 0 and dim % heads == 0):
        return None
    if any(getattr(attn, n).weight.shape[0] != dim for n in ("k", "v")) or attn.proj.weight.shape[1] != dim:
        return None
    p = f"{prefix}.attn"
    return ChannelGroup(
        f"heads:{prefix}", producers=[(f"{p}.{n}", f"{p}.{n}_bn") for n in ("q", "k", "v")],
        consumers=[f"{p}.proj"], width=dim // heads, counts=[(p, "num_heads")],
    )  # fmt: skip


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The channel groups of a ResNet- or transformer-protocol model (see the module docstring).

    Args:
        model: a model following the ResNet protocol (SEW ResNet / ANN twin of ``models``) or the
            transformer protocol (the ``models`` spiking transformers and their twins).

    Returns:
        ResNet: internal groups and one stream group per stage (the first stream group starts at the stem);
        transformer: per block, its attention-head group (where the block has one) and its MLP group.

    Raises:
        ValueError: ``model`` follows neither protocol.
    """
    if is_transformer_like(model):
        groups: list[ChannelGroup] = []
        for i, block in enumerate(model.block):
            head = _head_group(block, f"block.{i}")
            if head is not None:
                groups.append(head)
            groups.append(ChannelGroup(
                f"mlp:block.{i}", producers=[(f"block.{i}.mlp.fc1", f"block.{i}.mlp.fc1_bn")],
                consumers=[f"block.{i}.mlp.fc2"],
            ))  # fmt: skip
        return groups
    if not is_resnet_like(model):
        raise ValueError(
            f"{type(model).__name__} does not follow the ResNet protocol (conv1, bn1, layer1.., fc; blocks "
            "with conv1/bn1, conv2/bn2[, conv3/bn3] and downsample) nor the transformer protocol (block.i.mlp"
            ".fc1/fc1_bn/fc2): filter coupling and snnprune.compact support the SEW ResNets, the spiking "
            "transformers and their ANN twins; use granularity='weight' for other models"
        )
    groups = []
    stream = ChannelGroup("stream:stem", producers=[("conv1", "bn1")])
    k = 1
    while hasattr(model, f"layer{k}"):
        for j, block in enumerate(getattr(model, f"layer{k}")):
            p = f"layer{k}.{j}"
            n = _block_convs(block)
            stream.consumers.append(f"{p}.conv1")
            if block.downsample is not None:
                stream.consumers.append(f"{p}.downsample.0")
                groups.append(stream)
                stream = ChannelGroup(
                    f"stream:layer{k}", producers=[(f"{p}.downsample.0", f"{p}.downsample.1")]
                )
            for i in range(1, n):
                groups.append(
                    ChannelGroup(
                        f"internal:{p}.conv{i}",
                        producers=[(f"{p}.conv{i}", f"{p}.bn{i}")],
                        consumers=[f"{p}.conv{i + 1}"],
                    )
                )
            stream.producers.append((f"{p}.conv{n}", f"{p}.bn{n}"))
        k += 1
    stream.consumers.append("fc")
    groups.append(stream)
    return groups


def _channel_dim(bn: nn.Module, out: Tensor) -> int:
    if isinstance(bn, nn.BatchNorm3d):
        return out.dim() - 4
    if isinstance(bn, nn.BatchNorm2d):
        return out.dim() - 3
    return out.dim() - 1 if out.shape[-1] == bn.num_features else out.dim() - 2


def alive_channels(conv: nn.Module) -> Tensor:
    """Bool ``[C_out]``: channel alive in ``conv`` (group factor > 0; for a plain layer, a non-zero filter)."""
    if parametrize.is_parametrized(conv, "weight"):
        p = conv.parametrizations.weight[0]
        last = getattr(p, "last_scale", None)
        if last is not None:
            return last > 0
    with torch.no_grad():
        w = conv.weight
    return w.detach().reshape(w.shape[0], -1).ne(0).any(1)


class FollowConv:
    """Forward hook of a BN layer: zero the output channels whose conv channel is removed.

    Args:
        conv: the conv that feeds the BN.
    """

    def __init__(self, conv: nn.Module) -> None:
        self.conv = conv

    def __call__(self, module: nn.Module, inputs: object, output: Tensor) -> Tensor:
        keep = alive_channels(self.conv).to(output.dtype)
        shape = [1] * output.dim()
        shape[_channel_dim(module, output)] = -1
        return output * keep.view(shape)


class FollowScale:
    """Forward pre-hook of a BN layer: keep its running statistics in the scale of the current weight.

    The group soft-threshold multiplies channel ``c`` of the conv output by :math:`s_c`, which changes every
    step as the threshold rises. In training mode BN normalizes with batch statistics, so the output does
    not see :math:`s_c`; but the running mean/variance mix batches of old and new scales, and near the
    threshold (:math:`s_c \\to 0`) the eval-mode output is then off by orders of magnitude (measured: a
    filter-pruned ANN with 97 % train accuracy scored 10 % in eval mode without this hook). Before each forward (also in eval
    mode: the pruner moves the threshold after the last training step) this hook multiplies the running mean by :math:`s_c^{now}/s_c^{prev}` and the running variance by its
    square, which converts every past batch of the exponential average to the current scale (channels
    with :math:`s_c = 0` now or before are left as they are: they are masked or have no valid ratio).

    Args:
        conv: the conv that feeds the BN (parametrized with a group soft-threshold).
    """

    def __init__(self, conv: nn.Module) -> None:
        self.conv = conv
        self.prev: Tensor | None = None

    @torch.no_grad()
    def __call__(self, module: nn.Module, inputs: object) -> None:
        if not (module.track_running_stats and parametrize.is_parametrized(self.conv, "weight")):
            return
        now = getattr(self.conv.parametrizations.weight[0], "last_scale", None)
        if now is None:
            return
        if self.prev is not None and self.prev.shape == now.shape:
            valid = (now > 0) & (self.prev > 0)
            ratio = torch.where(valid, now / self.prev.clamp_min(1e-30), torch.ones_like(now))
            module.running_mean.mul_(ratio.to(module.running_mean.dtype))
            module.running_var.mul_(ratio.pow(2).to(module.running_var.dtype))
        self.prev = now.clone()


@torch.no_grad()
def fold_removed_channels(bn: nn.Module, conv: nn.Module) -> None:
    """Set :math:`\\gamma = \\beta = 0` on the channels of ``bn`` whose filter in ``conv`` is all zero.

    What :class:`FollowConv` does to a finalized conv, written into the BN's parameters: the output of
    those channels is then exactly 0 in training and eval mode without the hook.

    Args:
        bn: the BN after ``conv``, with affine parameters.
        conv: the conv that feeds it (plain: finalized or never parametrized).

    Raises:
        ValueError: ``bn`` has no affine parameters.
    """
    if bn.weight is None or bn.bias is None:
        raise ValueError(f"{type(bn).__name__} without affine parameters cannot follow its conv")
    w = conv.weight
    alive = w.detach().reshape(w.shape[0], -1).ne(0).any(1).to(bn.weight.dtype)
    bn.weight.mul_(alive)
    bn.bias.mul_(alive)


class BatchNormFollower:
    """Makes a BN follow its group-soft-thresholded conv: :class:`FollowConv` and :class:`FollowScale`.

    Registers the forward hook (and, with running statistics, the pre-hook) on ``bn`` and ties their
    removal to ``conv``'s parametrization (:func:`snnprune.threshold.register_removal_hook`): removing it
    (:func:`snnprune.finalize`, a failing :meth:`snnprune.Pruner.prepare`) removes both hooks, after
    folding the removed channels into the BN (:func:`fold_removed_channels`) when the effective weight is
    kept, so the finalized model computes what the pruned one did.

    Args:
        bn: the BN after ``conv``, with affine parameters.
        conv: the conv that feeds it, its ``weight`` parametrized.

    Raises:
        ValueError: ``bn`` has no affine parameters, or ``conv.weight`` is not parametrized.
    """

    def __init__(self, bn: nn.Module, conv: nn.Module) -> None:
        if getattr(bn, "weight", None) is None or getattr(bn, "bias", None) is None:
            raise ValueError(
                f"{type(bn).__name__} without affine parameters cannot follow its conv under filter "
                "granularity; build it with affine=True or use granularity='weight'"
            )
        self.bn, self.conv, self.handles = bn, conv, []
        register_removal_hook(conv, self.remove)  # first: raises before anything is attached
        self.handles.append(bn.register_forward_hook(FollowConv(conv)))
        if getattr(bn, "running_mean", None) is not None:
            self.handles.append(bn.register_forward_pre_hook(FollowScale(conv)))

    def remove(self, leave_parametrized: bool) -> None:
        """Remove both hooks; first fold the removed channels into the BN when ``leave_parametrized``."""
        if leave_parametrized:
            fold_removed_channels(self.bn, self.conv)
        for handle in self.handles:
            handle.remove()
        self.handles = []
