"""ANN twins of the SEW ResNets: same modules and names, ReLU instead of spiking neurons, no time axis.

Built from the same :class:`models.sew_resnet.ResNetBackbone` and blocks as the SEW nets (one code path), so
``conv1``, ``layer1.0.conv1``, ..., ``layer2.0.downsample.0`` and ``fc`` have the same names and shapes in
``ann_resnet18`` and ``sew_resnet18`` with the same ``stem``/``width``. The residual merge is the standard
``y = relu(bn(conv(.)) + shortcut)``, the ANN analog of SEW-ADD (see :mod:`models.sew_resnet`); the module
named ``sn2`` (``sn3`` in Bottleneck) is the ReLU after the add and ``downsample_sn`` is ``nn.Identity``.
"""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_variant
from .sew_resnet import BasicBlock, Bottleneck, ResNetBackbone

__all__ = ["ANNResNet", "ann_resnet18", "ann_resnet34", "ann_resnet50_twin"]


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


class ANNResNet(ResNetBackbone):
    """Non-spiking twin of :class:`models.sew_resnet.SEWResNet`.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage.
        num_classes: classifier outputs.
        in_channels: input channels.
        stem: ``"imagenet"`` or ``"small"``.
        width: base width.

    Shapes:
        input ``[N, C, H, W]``, output ``[N, num_classes]``.
    """

    is_spiking = False

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, ...],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: str = "imagenet",
        width: int = 64,
    ) -> None:
        super().__init__(
            block, layers, spiking=False, act=_relu, num_classes=num_classes, in_channels=in_channels,
            stem=stem, width=width,
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]``."""
        if x.dim() != 4:
            raise ValueError(f"ANN ResNet expects [N, C, H, W] images, got shape {tuple(x.shape)}")
        x = self._body(self.bn1(self.conv1(x)))
        return self.fc(x.flatten(1))

    def extra_repr(self) -> str:
        return f"stem={self.stem!r}, width={self.width}"


ann_resnet18 = register_variant(
    "ann_resnet18",
    ANNResNet,
    BasicBlock,
    (2, 2, 2, 2),
    doc="ANN twin of ``sew_resnet18`` (BasicBlock, 2-2-2-2).",
)
ann_resnet34 = register_variant(
    "ann_resnet34",
    ANNResNet,
    BasicBlock,
    (3, 4, 6, 3),
    doc="ANN twin of ``sew_resnet34`` (BasicBlock, 3-4-6-3).",
)
ann_resnet50_twin = register_variant(
    "ann_resnet50_twin",
    ANNResNet,
    Bottleneck,
    (3, 4, 6, 3),
    doc="ANN twin of ``sew_resnet50`` (Bottleneck, 3-4-6-3); for torchvision's ResNet-50 use ``resnet50``.",
)
