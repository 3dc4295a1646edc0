"""Weight initialisation shared by the models written here (SEW ResNets, their ANN twins, MobileNet-V1)."""

from __future__ import annotations

from torch import nn

__all__ = ["init_conv_bn_"]


def init_conv_bn_(module: nn.Module) -> nn.Module:
    """Kaiming-normal (fan_out, ReLU gain) for every ``Conv2d`` and weight 1 / bias 0 for every
    ``BatchNorm2d`` below ``module``, in place (torchvision's ResNet init, as the SEW/STDS code uses;
    SpikingJelly's ``layer.Conv2d``/``layer.BatchNorm2d`` are subclasses and are covered).

    Returns:
        ``module``.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
