"""SEW ResNet-18/34/50 (Fang et al., NeurIPS 2021) on SpikingJelly 2.0.0, and the shared ResNet backbone.

One backbone class, :class:`ResNetBackbone`, builds both the spiking SEW ResNet (``spiking=True``:
SpikingJelly ``layer`` convolutions in multi-step mode, IF/LIF/PLIF neurons, SEW connect function) and its
ANN twin (``spiking=False``: ``nn`` layers, ReLU, standard residual add; see :mod:`models.ann_resnet`).
Module names are identical in both, so per-layer comparisons line up.

Block correspondence (BasicBlock; Bottleneck is the same with a third conv):

.. math::

    \\text{SEW:}\\quad  y = g\\big(\\mathrm{SN}(\\mathrm{BN}(\\mathrm{conv}(\\cdot))),\\;
        \\mathrm{SN}_{ds}(\\mathrm{BN}_{ds}(\\mathrm{conv}_{ds}(x)))\\big),\\quad
        g \\in \\{a+b,\\; a\\cdot b,\\; b\\,(1-a)\\}\\ \\text{for ADD, AND, IAND}

    \\text{ANN:}\\quad  y = \\mathrm{ReLU}\\big(\\mathrm{BN}(\\mathrm{conv}(\\cdot)) +
        \\mathrm{BN}_{ds}(\\mathrm{conv}_{ds}(x))\\big)

(``b`` is the identity/shortcut branch, ``a`` the residual branch, as ``sew_function`` in SpikingJelly).
The ANN block's ``sn2`` (``sn3`` for Bottleneck) is the ReLU *after* the add, and ``downsample_sn`` is
``nn.Identity``; SEW-ADD is the spiking analog of this standard residual block.

Encoding (STDS/SEW papers, snnprune/docs/methods.md 10.3): a static image ``[N, C, H, W]`` goes through ``conv1`` + ``bn1``
**once** (plain single-step layers), the result is repeated ``T`` times to ``[T, N, ...]`` and fed to the
first neuron; event frames ``[N, T, C, H, W]`` are permuted to ``[T, N, ...]`` and ``conv1`` + ``bn1`` run
on all ``T*N`` frames in one call (SpikingJelly's multi-step convention, BN statistics over ``T*N``). Head:
adaptive average pool -> flatten -> mean over ``T`` -> ``fc`` (``nn.Linear`` with bias, sees firing rates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import Tensor, nn

import snnprune.neuron as snnprune_neuron
from snnprune.methods import KeywordError

from .init import init_conv_bn_
from .registry import register_variant

__all__ = [
    "CONNECT_FUNCTIONS",
    "NEURONS",
    "STEMS",
    "SURROGATES",
    "BasicBlock",
    "Bottleneck",
    "ResNetBackbone",
    "SEWResNet",
    "make_spiking_neuron",
    "sew_resnet18",
    "sew_resnet34",
    "sew_resnet50",
]

NEURONS: tuple[str, ...] = ("if", "lif", "plif")
SURROGATES: tuple[str, ...] = ("atan", "sigmoid")
CONNECT_FUNCTIONS: tuple[str, ...] = ("ADD", "AND", "IAND")
STEMS: tuple[str, ...] = ("imagenet", "small")
NEURON_BACKENDS: tuple[str, ...] = snnprune_neuron.BACKENDS

_SJ_NEURONS = {"if": neuron.IFNode, "lif": neuron.LIFNode, "plif": neuron.ParametricLIFNode}
_SNNPRUNE_NEURONS = {
    "if": snnprune_neuron.IFNode,
    "lif": snnprune_neuron.LIFNode,
    "plif": snnprune_neuron.ParametricLIFNode,
}


def _check_choice(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise KeywordError(what, f"unknown {what} {value!r}; choose one of {', '.join(map(repr, choices))}")


def make_spiking_neuron(
    neuron_type: str = "if",
    *,
    surrogate_function: str = "atan",
    detach_reset: bool = True,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    v_reset: float = 0.0,
    neuron_backend: str = "spikingjelly",
) -> Callable[[], nn.Module]:
    """Return a factory of multi-step spiking neurons (one fresh neuron and surrogate per call).

    Args:
        neuron_type: ``"if"``, ``"lif"`` (fixed ``tau``) or ``"plif"`` (learnable tau, initialised to ``tau``).
        surrogate_function: ``"atan"`` (ATan, alpha 2) or ``"sigmoid"`` (Sigmoid, alpha 4).
        detach_reset: detach the reset from the graph (STDS/SEW default ``True``).
        tau: membrane time constant of LIF / initial tau of PLIF (ignored for IF).
        v_threshold: firing threshold.
        v_reset: hard-reset potential.
        neuron_backend: ``"spikingjelly"`` (SpikingJelly's classes) or ``"cupy"`` / ``"auto"`` (the
            ``snnprune.neuron`` classes with fused kernels, given ``backend=neuron_backend``).

    Returns:
        A zero-argument callable building a neuron in ``step_mode="m"``.

    Raises:
        ValueError: an unknown choice.
    """
    _check_choice("neuron", neuron_type, NEURONS)
    _check_choice("surrogate", surrogate_function, SURROGATES)
    _check_choice("neuron_backend", neuron_backend, NEURON_BACKENDS)
    extra: dict[str, Any] = {}
    if neuron_backend == "spikingjelly":
        cls = _SJ_NEURONS[neuron_type]
    else:
        cls = _SNNPRUNE_NEURONS[neuron_type]
        extra["backend"] = neuron_backend
    if neuron_type == "lif":
        extra["tau"] = tau
    elif neuron_type == "plif":
        extra["init_tau"] = tau

    def build() -> nn.Module:
        sg = surrogate.ATan(alpha=2.0) if surrogate_function == "atan" else surrogate.Sigmoid(alpha=4.0)
        return cls(
            v_threshold=v_threshold,
            v_reset=v_reset,
            surrogate_function=sg,
            detach_reset=detach_reset,
            step_mode="m",
            **extra,
        )

    return build


def _connect(identity: Tensor, out: Tensor, cnf: str) -> Tensor:
    """SEW connect function g(b=identity, a=out) as SpikingJelly's ``sew_function``."""
    if cnf == "ADD":
        return identity + out
    if cnf == "AND":
        return identity * out
    return identity * (1.0 - out)  # IAND


class _LayerKit:
    """Layer types and activation factory shared by blocks (spiking or not)."""

    def __init__(self, spiking: bool, act: Callable[[], nn.Module], cnf: str) -> None:
        self.spiking = spiking
        self.act = act
        self.cnf = cnf
        self.conv = layer.Conv2d if spiking else nn.Conv2d
        self.norm = layer.BatchNorm2d if spiking else nn.BatchNorm2d

    def conv3x3(self, cin: int, cout: int, stride: int = 1) -> nn.Module:
        return self.conv(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)

    def conv1x1(self, cin: int, cout: int, stride: int = 1) -> nn.Module:
        return self.conv(cin, cout, kernel_size=1, stride=stride, bias=False)


class _Block(nn.Module):
    """Common residual logic: SEW connect for spiking blocks, add-then-ReLU for ANN blocks."""

    expansion = 1

    def _shortcut_and_merge(self, x: Tensor, out: Tensor, last_act: nn.Module) -> Tensor:
        identity = x
        if self.spiking:
            out = last_act(out)
            if self.downsample is not None:
                identity = self.downsample_sn(self.downsample(x))
            return _connect(identity, out, self.cnf)
        if self.downsample is not None:
            identity = self.downsample(x)
        return last_act(out + identity)

    def _init_shortcut(self, kit: _LayerKit, cin: int, cout: int, stride: int) -> None:
        self.spiking = kit.spiking
        self.cnf = kit.cnf
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(kit.conv1x1(cin, cout, stride), kit.norm(cout))
            self.downsample_sn = kit.act() if kit.spiking else nn.Identity()
        else:
            self.downsample = None
            self.downsample_sn = None

    def extra_repr(self) -> str:
        return f"cnf={self.cnf!r}" if self.spiking else "connect='add-relu'"


class BasicBlock(_Block):
    """ResNet-18/34 block (two 3x3 convs). SEW when the kit is spiking, standard ResNet block otherwise.

    Args:
        kit: layer types / activation factory / connect function.
        cin: input channels.
        planes: output channels.
        stride: stride of the first conv and of the 1x1 downsample.
    """

    expansion = 1

    def __init__(self, kit: _LayerKit, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = kit.conv3x3(cin, planes, stride)
        self.bn1 = kit.norm(planes)
        self.sn1 = kit.act()
        self.conv2 = kit.conv3x3(planes, planes)
        self.bn2 = kit.norm(planes)
        self.sn2 = kit.act()
        self._init_shortcut(kit, cin, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        """Block forward (``[T, N, C, H, W]`` for spiking, ``[N, C, H, W]`` for ANN)."""
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self._shortcut_and_merge(x, out, self.sn2)


class Bottleneck(_Block):
    """ResNet-50 bottleneck (1x1, 3x3 with stride, 1x1 with expansion 4); SEW or standard as the kit says.

    Args:
        kit: layer types / activation factory / connect function.
        cin: input channels.
        planes: bottleneck channels (output is ``4 * planes``).
        stride: stride of the 3x3 conv and of the 1x1 downsample.
    """

    expansion = 4

    def __init__(self, kit: _LayerKit, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = kit.conv1x1(cin, planes)
        self.bn1 = kit.norm(planes)
        self.sn1 = kit.act()
        self.conv2 = kit.conv3x3(planes, planes, stride)
        self.bn2 = kit.norm(planes)
        self.sn2 = kit.act()
        self.conv3 = kit.conv1x1(planes, planes * self.expansion)
        self.bn3 = kit.norm(planes * self.expansion)
        self.sn3 = kit.act()
        self._init_shortcut(kit, cin, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        """Block forward (``[T, N, C, H, W]`` for spiking, ``[N, C, H, W]`` for ANN)."""
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.sn2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self._shortcut_and_merge(x, out, self.sn3)


class ResNetBackbone(nn.Module):
    """ResNet body shared by SEW ResNets and their ANN twins.

    Module names: ``conv1, bn1, sn1, maxpool, layer1..layer4, avgpool, fc``; inside blocks
    ``conv{i}, bn{i}, sn{i}, downsample.{0,1}, downsample_sn``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage (e.g. ``(2, 2, 2, 2)``).
        spiking: SEW (multi-step SpikingJelly layers + neurons) or ANN (``nn`` layers + ReLU).
        act: factory of activation modules (spiking neurons or ReLU).
        num_classes: classifier outputs.
        in_channels: input image channels.
        stem: ``"imagenet"`` (7x7/2 conv + BN + act + 3x3/2 max-pool) or ``"small"`` (3x3/1 conv + BN + act).
        width: base width; stage widths are ``width * (1, 2, 4, 8)`` (times 4 for Bottleneck outputs).
        cnf: SEW connect function (ignored by the ANN).
    """

    def __init__(
        self,
        block: type[_Block],
        layers: tuple[int, ...],
        *,
        spiking: bool,
        act: Callable[[], nn.Module],
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: str = "imagenet",
        width: int = 64,
        cnf: str = "ADD",
    ) -> None:
        super().__init__()
        _check_choice("stem", stem, STEMS)
        _check_choice("cnf", cnf, CONNECT_FUNCTIONS)
        for what, v in (("num_classes", num_classes), ("in_channels", in_channels), ("width", width)):
            if int(v) != v or v < 1:
                raise KeywordError(what, f"{what} must be a positive integer, got {v!r}")
        self.stem, self.width, self.in_channels, self.num_classes = stem, width, in_channels, num_classes
        kit = _LayerKit(spiking, act, cnf)
        # encoding conv: plain single-step layers in both cases (see module docstring)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.sn1 = act()
        if stem == "imagenet":
            pool = layer.MaxPool2d if spiking else nn.MaxPool2d
            self.maxpool = pool(kernel_size=3, stride=2, padding=1)
        else:
            self.maxpool = nn.Identity()
        cin = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(kit, cin, planes, stride=2 if (i > 0 and j == 0) else 1))
                cin = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = layer.AdaptiveAvgPool2d((1, 1)) if spiking else nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)
        init_conv_bn_(self)

    def _body(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.sn1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)


class SEWResNet(ResNetBackbone):
    """Spike-Element-Wise ResNet in multi-step mode (input encoding and head as STDS, snnprune/docs/methods.md 4.3).

    .. math::  \\text{logits} = W\\,\\frac{1}{T}\\sum_{t=1}^{T}\\mathrm{avgpool}(s^{(t)}) + b

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage.
        num_classes: classifier outputs.
        in_channels: input channels.
        T: time steps for static input (event frames bring their own ``T``).
        neuron: ``"if"``, ``"lif"``, ``"plif"``.
        surrogate: ``"atan"`` or ``"sigmoid"``.
        cnf: ``"ADD"``, ``"AND"``, ``"IAND"``.
        detach_reset: detach the neuron reset.
        stem: ``"imagenet"`` or ``"small"``.
        width: base width.
        tau: LIF tau / PLIF initial tau.
        neuron_backend: ``"spikingjelly"``, ``"cupy"`` or ``"auto"`` (see :func:`make_spiking_neuron`).

    Shapes:
        input ``[N, C, H, W]`` (static) or ``[N, T, C, H, W]`` (event frames); output ``[N, num_classes]``.
        Reset state between batches with ``functional.reset_net(model)``.
    """

    is_spiking = True

    def __init__(
        self,
        block: type[_Block],
        layers: tuple[int, ...],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        T: int = 4,
        neuron: str = "if",
        surrogate: str = "atan",
        cnf: str = "ADD",
        detach_reset: bool = True,
        stem: str = "imagenet",
        width: int = 64,
        tau: float = 2.0,
        neuron_backend: str = "spikingjelly",
    ) -> None:
        if int(T) != T or T < 1:
            raise KeywordError("T", f"T (time steps) must be a positive integer, got {T!r}")
        act = make_spiking_neuron(
            neuron,
            surrogate_function=surrogate,
            detach_reset=detach_reset,
            tau=tau,
            neuron_backend=neuron_backend,
        )
        super().__init__(
            block, layers, spiking=True, act=act, num_classes=num_classes, in_channels=in_channels,
            stem=stem, width=width, cnf=cnf,
        )  # fmt: skip
        self.T = int(T)
        self.neuron, self.surrogate, self.cnf = neuron, surrogate, cnf
        self.detach_reset, self.neuron_backend = detach_reset, neuron_backend
        functional.set_step_mode(self, "m")

    def encode(self, x: Tensor) -> Tensor:
        """Encoding conv + BN: ``[N,C,H,W]`` -> once, repeated to ``[T,N,...]``; ``[N,T,C,H,W]`` -> per step."""
        if x.dim() == 4:
            y = self.bn1(self.conv1(x))
            return y.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)  # contiguous for fused kernels
        if x.dim() == 5:
            x = x.transpose(0, 1)  # [T, N, C, H, W]
            t, n = x.shape[:2]
            y = self.bn1(self.conv1(x.flatten(0, 1)))
            return y.view(t, n, *y.shape[1:])
        raise ValueError(
            f"SEW ResNet expects [N, C, H, W] images or [N, T, C, H, W] event frames, got shape {tuple(x.shape)}"
        )

    def nir_step(self, x: Tensor) -> Tensor:
        """One time step for ``snnprune.export_nir``: a static image ``[N, C, H, W]`` (or one event frame)
        through the encoding conv + BN, the body and ``fc``; the mean over T of these per-step logits is
        :meth:`forward` (``fc`` is affine). Run in single-step mode; the exporter does that on its copy."""
        return self.fc(torch.flatten(self._body(self.bn1(self.conv1(x))), 1))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` from the mean over time of the pooled spike features."""
        x = self._body(self.encode(x))  # [T, N, C, 1, 1]
        return self.fc(torch.flatten(x, 2).mean(0))

    def extra_repr(self) -> str:
        return (
            f"T={self.T}, neuron={self.neuron!r}, surrogate={self.surrogate!r}, cnf={self.cnf!r}, "
            f"detach_reset={self.detach_reset}, stem={self.stem!r}, width={self.width}, "
            f"neuron_backend={self.neuron_backend!r}"
        )


sew_resnet18 = register_variant(
    "sew_resnet18", SEWResNet, BasicBlock, (2, 2, 2, 2), doc="SEW ResNet-18 (BasicBlock, 2-2-2-2)."
)
sew_resnet34 = register_variant(
    "sew_resnet34", SEWResNet, BasicBlock, (3, 4, 6, 3), doc="SEW ResNet-34 (BasicBlock, 3-4-6-3)."
)
sew_resnet50 = register_variant(
    "sew_resnet50", SEWResNet, Bottleneck, (3, 4, 6, 3), doc="SEW ResNet-50 (Bottleneck, 3-4-6-3)."
)
