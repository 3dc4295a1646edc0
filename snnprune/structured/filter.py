"""Filter granularity for the scheduled-threshold methods: group soft-thresholds, coupled and followed."""

from __future__ import annotations

from torch import nn

from snnprune.structured.groups import (
    BatchNormFollower,
    ChannelGroup,
    channel_groups,
    is_resnet_like,
    is_transformer_like,
)
from snnprune.threshold.group import register_group_soft_threshold
from snnprune.threshold.parametrization import remove_soft_threshold

__all__ = ["GRANULARITIES", "attach_filter_threshold", "couple_filter_groups"]

GRANULARITIES: tuple[str, ...] = ("weight", "filter")


def attach_filter_threshold(
    model: nn.Module | None,
    layers: dict[str, nn.Module],
    threshold: float = 0.0,
    grad: str = "ste",
    scale_by: str = "size",
) -> list[ChannelGroup]:
    """Register a :class:`~snnprune.threshold.group.GroupSoftThreshold` on every layer of ``layers``.

    For a ResNet-protocol ``model`` (see :mod:`snnprune.structured.groups`) the output channels joined by
    a SEW/residual connection share one group (one norm, one :math:`n_g`); for a transformer-protocol one
    an attention head's rows of Q, K and V form one group; and the BN after every pruned
    conv follows it (:class:`~snnprune.structured.groups.FollowConv`), so a removed group is exactly zero
    downstream and :func:`snnprune.compact` can remove it. Producers outside ``layers`` (excluded) stay
    dense; the channels they feed are then never removed. For other models every layer's output channels
    are independent groups and nothing follows them (a removed filter leaves its bias and any BN shift).

    Args:
        model: the root model (None: independent groups).
        layers: qualified name -> layer, as selected by :func:`snnprune.methods.select_layers`.
        threshold: initial :math:`D`.
        grad: ``"exact"``, ``"ste"`` or ``"dense"``.
        scale_by: ``"size"`` (:math:`d_g = D\\sqrt{n_g}`) or ``"layer"`` (times the layer RMS), see
            :class:`~snnprune.threshold.group.GroupSoftThreshold`.

    Returns:
        The channel groups (empty for a model outside the ResNet protocol).

    Raises:
        ValueError: as :func:`~snnprune.threshold.group.register_group_soft_threshold` and
            :func:`couple_filter_groups`; the layers are then left as they were.
    """
    attached: list[nn.Module] = []
    try:
        for module in layers.values():
            register_group_soft_threshold(module, threshold=threshold, grad=grad, scale_by=scale_by)
            attached.append(module)
        return couple_filter_groups(model, layers)
    except BaseException:
        for module in reversed(attached):
            remove_soft_threshold(module, leave_parametrized=False)
        raise


def couple_filter_groups(model: nn.Module | None, layers: dict[str, nn.Module]) -> list[ChannelGroup]:
    """Couple the group soft-thresholds already registered on ``layers`` across ``model``'s connections.

    The second half of :func:`attach_filter_threshold`, for pruners that register the parametrizations
    themselves (:meth:`snnprune.methods.ScheduledThresholdPruner.make_parametrization`). The BN hooks
    (:class:`~snnprune.structured.groups.BatchNormFollower`) go with their conv's parametrization:
    :func:`snnprune.finalize` folds them into the BN and removes them, so attaching again after it leaves
    one of each.

    Args:
        model: the root model (None: independent groups).
        layers: qualified name -> layer carrying a :class:`~snnprune.threshold.group.GroupSoftThreshold`.

    Returns:
        The channel groups (empty for a model outside the ResNet protocol).

    Raises:
        ValueError: a BN after a pruned conv without affine parameters.
    """
    if model is None or not (is_resnet_like(model) or is_transformer_like(model)):
        return []
    modules = dict(model.named_modules())
    selected = {id(m) for m in layers.values()}
    groups = channel_groups(model)
    for group in groups:
        members = [modules[c] for c, _ in group.producers if id(modules[c]) in selected]
        for m in members:
            m.parametrizations.weight[0].couple([o for o in members if o is not m], block=group.width)
        for conv_name, bn_name in group.producers:
            if bn_name is not None and id(modules[conv_name]) in selected:
                BatchNormFollower(modules[bn_name], modules[conv_name])
    return groups
