"""MobileNet-V1 (Howard et al., 2017) with a width multiplier; torchvision has none.

Stem ``conv_bn(in, 32, stride 2)``, then 13 depthwise-separable blocks (3x3 depthwise conv + BN + ReLU,
1x1 pointwise conv + BN + ReLU), global average pool, classifier. At width 1.0 and 1000 classes it has
4,231,976 parameters (4,230,976 without the fc bias, the LATS/STR bias-free classifier).
"""

from __future__ import annotations

from torch import Tensor, nn

from snnprune.methods import KeywordError

from .init import init_conv_bn_
from .registry import register_model

__all__ = ["MobileNetV1", "mobilenet_v1"]

# (output channels, stride) of the 13 depthwise-separable blocks
_CFG: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU.

    Args:
        cin: input channels.
        cout: output channels.
        stride: stride of the depthwise conv.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.dw = _conv_bn_relu(cin, cin, 3, stride, groups=cin)
        self.pw = _conv_bn_relu(cin, cout, 1, 1)


class MobileNetV1(nn.Module):
    """MobileNet-V1.

    Args:
        num_classes: classifier outputs.
        in_channels: input channels.
        width_mult: channel multiplier (channels ``max(8, round(c * width_mult))``).
        stem: ``"imagenet"`` (first conv stride 2) or ``"small"`` (stride 1, for 28-64 px inputs).
        fc_bias: classifier bias.

    Shapes:
        input ``[N, C, H, W]``, output ``[N, num_classes]``.
    """

    is_spiking = False

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        stem: str = "imagenet",
        fc_bias: bool = True,
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "small"):
            raise KeywordError("stem", f"unknown stem {stem!r}; choose one of 'imagenet', 'small'")
        if width_mult <= 0:
            raise KeywordError("width_mult", f"width_mult must be > 0, got {width_mult!r}")
        self.width_mult, self.stem = width_mult, stem

        def ch(c: int) -> int:
            return max(8, round(c * width_mult))

        cin = ch(32)
        layers: list[nn.Module] = [_conv_bn_relu(in_channels, cin, 3, 2 if stem == "imagenet" else 1)]
        for cout, stride in _CFG:
            layers.append(DepthwiseSeparable(cin, ch(cout), stride))
            cin = ch(cout)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes, bias=fc_bias)
        init_conv_bn_(self)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]``."""
        return self.fc(self.avgpool(self.features(x)).flatten(1))

    def extra_repr(self) -> str:
        return f"width_mult={self.width_mult}, stem={self.stem!r}"


@register_model
def mobilenet_v1(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    width_mult: float = 1.0,
    stem: str = "imagenet",
    fc_bias: bool = True,
) -> MobileNetV1:
    """MobileNet-V1.

    Args:
        num_classes: classifier outputs (default 1000).
        in_channels: input channels (default 3).
        width_mult: width multiplier (default 1.0).
        stem: ``"imagenet"`` (default) or ``"small"`` (stride-1 first conv).
        fc_bias: classifier bias (default True; False = LATS bias-free classifier).

    Returns:
        A :class:`MobileNetV1`.
    """
    return MobileNetV1(num_classes, in_channels, width_mult, stem, fc_bias)
