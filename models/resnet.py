"""torchvision ResNet-50 for the LATS ANN recipes, with a small-image stem and an optional bias-free fc.

LATS prunes the classifier as a 1x1 conv without bias (snnprune/docs/methods.md 3.6); ``fc_bias=False`` gives the same
thing as an ``nn.Linear`` without bias (a 1x1 conv on a 1x1 map is a linear layer).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet as tv_resnet

from snnprune.methods import KeywordError

from .init import init_conv_bn_
from .registry import register_model

__all__ = ["resnet50"]


@register_model
def resnet50(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    stem: str = "imagenet",
    fc_bias: bool = True,
    zero_init_residual: bool = False,
) -> nn.Module:
    """torchvision ResNet-50 (random init: Kaiming-normal fan_out convs, BN 1/0).

    Args:
        num_classes: classifier outputs (default 1000).
        in_channels: input channels (default 3).
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool, default) or ``"small"`` (3x3/1 conv, no max-pool,
            for 28-64 px inputs).
        fc_bias: keep the classifier bias (default True; ``False`` matches the LATS bias-free classifier).
        zero_init_residual: zero the last BN gamma of each block (torchvision option, default False).

    Returns:
        A ``torchvision.models.ResNet`` with ``is_spiking = False``.
    """
    if stem not in ("imagenet", "small"):
        raise KeywordError("stem", f"unknown stem {stem!r}; choose one of 'imagenet', 'small'")
    net = tv_resnet.resnet50(weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual)
    if stem == "small" or in_channels != 3:
        k, s, p = (7, 2, 3) if stem == "imagenet" else (3, 1, 1)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=k, stride=s, padding=p, bias=False)
        init_conv_bn_(net.conv1)
    if stem == "small":
        net.maxpool = nn.Identity()
    if not fc_bias:
        fc = nn.Linear(net.fc.in_features, num_classes, bias=False)
        fc.weight.data.copy_(net.fc.weight.data)
        net.fc = fc
    net.is_spiking = False
    return net
