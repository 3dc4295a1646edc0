"""Spikformer (Zhou et al., ICLR 2023) and Spike-driven Transformer (Yao et al., NeurIPS 2023) on
SpikingJelly 2.0.0 multi-step neurons, and their ANN twins.

One class, :class:`SpikingTransformer`, builds both papers' networks (``attention="ssa"``: Spikformer,
``"sdsa"``: Spike-driven Transformer) and, with ``spiking=False`` (:class:`ANNTransformer`), the ANN twin
of each: the same modules, names and shapes, ReLU in place of every spiking neuron and softmax attention.

Shapes follow the authors' code (ZK-Zhou/spikformer ``imagenet/model.py``, BICLab/Spike-Driven-Transformer
``module/ms_conv.py`` and ``module/sps.py``):

* **spiking patch splitting** (``patch_embed``): four 3x3 convs without bias to ``D/8, D/4, D/2, D``
  channels, each with BN and a neuron, a 3x3/2 max-pool after the stages marked ``1`` in ``pooling``
  (``"1111"``: 224 px -> 14x14 tokens; ``"0011"``: 32 px -> 8x8), then a 3x3 relative-position conv + BN
  added to its input.
* **Spikformer block**: ``x + SSA(x)``, then ``x + MLP(x)``. SSA: spike ``Q, K, V`` (linear + BN + LIF),
  ``(Q (K^T V)) * 0.125`` per head, the attention LIF at threshold 0.5, then ``proj`` + BN + LIF.
  MLP: ``fc1`` + BN + LIF, ``fc2`` + BN + LIF.
* **Spike-driven Transformer block** (membrane shortcuts: the neurons sit at the start of each branch, the
  residual adds membrane potentials): ``x + proj_bn(proj(SDSA(LIF(x))))``; SDSA: spike ``Q, K, V``,
  ``K ⊙ V`` summed over the tokens (the column sum), a LIF at threshold 0.5, the result masks ``Q``.
  MLP: ``fc2_bn(fc2(LIF(fc1_bn(fc1(LIF(x))))))`` added to its input. Head: a LIF before the classifier.

Choices where the papers are silent, taken from the authors' code:

* the attention scale is the constant 0.125 (not ``head_dim ** -0.5``);
* Spikformer multiplies ``K^T V`` first (linear in the tokens; the authors' CIFAR code computes
  ``(Q K^T) V``, the same values), the Spike-driven Transformer code masks
  ``Q`` with ``SN(sum_tokens(K ⊙ V))`` (the paper's Q/K roles swapped; the counts are the same);
* neurons: LIF, tau 2, hard reset to 0, detached reset, SpikingJelly's default surrogate (Sigmoid,
  alpha 4); the Q/K/V projections have no bias (except in the authors' CIFAR Spikformer: ``qkv_bias``),
  ``proj``, ``fc1``, ``fc2`` and the classifier do;
* the LayerNorms the Spikformer blocks construct but never call, and the ``talking_heads`` conv the
  Spike-driven Transformer constructs but never calls, are left out (they change no output); the
  parameter counts below are those of the modules that run.

Q/K/V/proj/fc1/fc2 are ``nn.Linear`` on tokens ``[T, B, N, D]`` (the authors' 1x1 ``Conv1d``/``Conv2d``,
same weights up to a reshape), their BN a ``BatchNorm1d`` over ``D``. The products of two activations
(and the token sum) are the modules of :mod:`snnprune.products`, so ``snnprune.analyze`` counts them.

Parameter counts (exact integers from the modules above; ``tests/test_transformers.py`` checks each against
the count of the authors' code, written there with its commit, and against a hand formula). ImageNet, 1000
classes, MLP ratio 4, 8 heads, equal for both papers: 8-384: 16,816,024; 8-512: 29,689,384; 8-768:
66,338,632 (both papers' Table 2 print 16.81 M, 29.68 M, 66.34 M: the first two truncated, the third
rounded; no one rule gives all three, from these counts or from the authors' ``model.parameters()``, with
or without the biases, BN, the relative-position conv or the LayerNorms, in 10^6 or 2^20). CIFAR-10:
Spikformer 4-384 (12 heads, Q/K/V with biases as in the authors' CIFAR code) 9,324,730 (paper 9.32 M);
Spike-driven Transformer 2-512 (8 heads) 10,233,418; the paper's 10.28 M is the rounded count with a
100-class head (its CIFAR-100 model: 10,279,588). The authors' own ``model.parameters()`` (which their
``train.py`` prints) is larger by the modules built and never called (Spikformer: two LayerNorms per
block, 8-384: 16,828,312; the Spike-driven Transformer: ``talking_heads``, 8-384: 16,816,536).
"""

from __future__ import annotations

from typing import Any

import torch
from spikingjelly.activation_based import functional
from torch import Tensor, nn

from snnprune.methods import KeywordError
from snnprune.products import SpikeMatmul, SpikeMul, TokenSum

from .registry import register_variant
from .sew_resnet import make_spiking_neuron

__all__ = ["ATTENTIONS", "ANNTransformer", "SpikingTransformer"]

ATTENTIONS: tuple[str, ...] = ("ssa", "sdsa")
_SCALE = 0.125  # the authors' constant attention scale


class _Kit:
    """What differs between the spiking model and its twin: the activation factory."""

    def __init__(self, spiking: bool, neuron: Any) -> None:
        self.spiking = spiking
        self.neuron = neuron  # (v_threshold) -> module

    def act(self, v_threshold: float = 1.0) -> nn.Module:
        return self.neuron(v_threshold) if self.spiking else nn.ReLU()


def _bn_tokens(bn: nn.Module, x: Tensor) -> Tensor:
    """BatchNorm1d over the last axis of ``[..., D]``."""
    return bn(x.flatten(0, -2)).view(x.shape)


def _per_frame(fn: Any, x: Tensor) -> Tensor:
    """Apply a single-frame layer to ``[T, B, C, H, W]`` (flattening ``T`` and ``B``)."""
    y = fn(x.flatten(0, 1))
    return y.view(*x.shape[:2], *y.shape[1:])


class PatchSplit(nn.Module):
    """Spiking patch splitting: ``[T, B, C, H, W]`` -> tokens ``[T, B, N, D]``.

    Args:
        kit: activation factory.
        attention: ``"ssa"`` (Spikformer SPS) or ``"sdsa"`` (the Spike-driven Transformer's, membrane
            shortcut around the relative-position conv).
        in_channels: image channels.
        dim: embedding width ``D`` (divisible by 8).
        pooling: four ``0``/``1`` flags, a 3x3/2 max-pool after that stage.
    """

    def __init__(self, kit: _Kit, attention: str, in_channels: int, dim: int, pooling: str) -> None:
        super().__init__()
        self.attention, self.pooling = attention, pooling
        widths = (in_channels, dim // 8, dim // 4, dim // 2, dim)
        for i in range(4):
            s = "" if i == 0 else str(i)
            self.add_module(f"proj_conv{s}", nn.Conv2d(widths[i], widths[i + 1], 3, 1, 1, bias=False))
            self.add_module(f"proj_bn{s}", nn.BatchNorm2d(widths[i + 1]))
            self.add_module(f"proj_lif{s}", kit.act())
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.rpe_conv = nn.Conv2d(dim, dim, 3, 1, 1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(dim)
        self.rpe_lif = kit.act() if attention == "ssa" else nn.Identity()

    def _pool(self, i: int, x: Tensor) -> Tensor:
        return _per_frame(self.maxpool, x) if self.pooling[i] == "1" else x

    def forward(self, x: Tensor) -> Tensor:
        """``x``: the encoded input ``[T, B, D/8, H, W]`` (the output of ``proj_conv`` + ``proj_bn``)."""
        x = self._pool(0, self.proj_lif(x))
        for i in (1, 2):
            conv, bn, lif = (getattr(self, f"{n}{i}") for n in ("proj_conv", "proj_bn", "proj_lif"))
            x = self._pool(i, lif(_per_frame(lambda f: bn(conv(f)), x)))  # noqa: B023
        x = _per_frame(lambda f: self.proj_bn3(self.proj_conv3(f)), x)
        if self.attention == "ssa":  # conv, BN, LIF, pool; rpe conv + BN + LIF added to the spikes
            feat = self._pool(3, self.proj_lif3(x))
            x = self.rpe_lif(_per_frame(lambda f: self.rpe_bn(self.rpe_conv(f)), feat))
        else:  # conv, BN, pool; LIF, rpe conv + BN added to the membrane input
            feat = self._pool(3, x)
            x = _per_frame(lambda f: self.rpe_bn(self.rpe_conv(f)), self.proj_lif3(feat))
        return (x + feat).flatten(3).transpose(2, 3)  # [T, B, N, D]


class Attention(nn.Module):
    """Spiking self-attention (``"ssa"``), spike-driven self-attention (``"sdsa"``) or, in the ANN twin,
    softmax attention with the same projections. Tokens ``[T, B, N, D]`` in and out.

    Args:
        kit: activation factory.
        attention: ``"ssa"`` or ``"sdsa"``.
        dim: embedding width ``D``.
        num_heads: heads (divide ``D``).
        qkv_bias: biases on ``q``, ``k``, ``v``.
    """

    def __init__(self, kit: _Kit, attention: str, dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.attention, self.num_heads, self.spiking = attention, num_heads, kit.spiking
        if attention == "sdsa":
            self.shortcut_lif = kit.act()
        for n in ("q", "k", "v"):
            self.add_module(n, nn.Linear(dim, dim, bias=qkv_bias))
            self.add_module(f"{n}_bn", nn.BatchNorm1d(dim))
            self.add_module(f"{n}_lif", kit.act())
        if not kit.spiking:
            self.qk = SpikeMatmul(_SCALE)
            self.av = SpikeMatmul()
        elif attention == "ssa":
            self.kv = SpikeMatmul()  # K^T V
            self.qkv = SpikeMatmul(_SCALE)  # Q (K^T V) * scale
        else:
            self.kv = SpikeMul()  # K ⊙ V
            self.kv_sum = TokenSum()  # column sum over the tokens
            self.qkv = SpikeMul()  # mask of Q
        self.attn_lif = kit.act(0.5)
        self.proj = nn.Linear(dim, dim)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = kit.act() if attention == "ssa" else nn.Identity()

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)  # [T, B, H, N, D/H]

    def forward(self, x: Tensor) -> Tensor:
        if self.attention == "sdsa":
            x = self.shortcut_lif(x)
        q, k, v = (
            self._heads(getattr(self, f"{n}_lif")(_bn_tokens(getattr(self, f"{n}_bn"), getattr(self, n)(x))))
            for n in ("q", "k", "v")
        )
        if not self.spiking:
            y = self.av(torch.softmax(self.qk(q, k.transpose(-2, -1)), dim=-1), v)
            y = self.attn_lif(y)
        elif self.attention == "ssa":
            y = self.attn_lif(self.qkv(q, self.kv(k.transpose(-2, -1), v)))
        else:
            y = self.qkv(q, self.attn_lif(self.kv_sum(self.kv(k, v))))
        y = y.transpose(-3, -2).flatten(-2)  # [T, B, N, D]
        return self.proj_lif(_bn_tokens(self.proj_bn, self.proj(y)))


class MLP(nn.Module):
    """``fc1`` (to the hidden width) and ``fc2`` (back), each with BN and a neuron: after each BN in
    Spikformer, before each linear layer in the Spike-driven Transformer (membrane shortcut)."""

    def __init__(self, kit: _Kit, attention: str, dim: int, hidden: int) -> None:
        super().__init__()
        self.attention = attention
        self.fc1 = nn.Linear(dim, hidden)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc1_lif = kit.act()
        self.fc2 = nn.Linear(hidden, dim)
        self.fc2_bn = nn.BatchNorm1d(dim)
        self.fc2_lif = kit.act()

    def forward(self, x: Tensor) -> Tensor:
        if self.attention == "ssa":
            x = self.fc1_lif(_bn_tokens(self.fc1_bn, self.fc1(x)))
            return self.fc2_lif(_bn_tokens(self.fc2_bn, self.fc2(x)))
        x = _bn_tokens(self.fc1_bn, self.fc1(self.fc1_lif(x)))
        return _bn_tokens(self.fc2_bn, self.fc2(self.fc2_lif(x)))


class Block(nn.Module):
    """``x + attn(x)``, then ``x + mlp(x)`` (spike residuals in Spikformer, membrane residuals in the
    Spike-driven Transformer)."""

    def __init__(
        self, kit: _Kit, attention: str, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool
    ) -> None:
        super().__init__()
        self.attn = Attention(kit, attention, dim, num_heads, qkv_bias)
        self.mlp = MLP(kit, attention, dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


def _positive_int(what: str, v: Any) -> None:
    if isinstance(v, bool) or int(v) != v or v < 1:
        raise KeywordError(what, f"{what} must be a positive integer, got {v!r}")


class SpikingTransformer(nn.Module):
    """Spikformer (``attention="ssa"``) or Spike-driven Transformer (``"sdsa"``), multi-step.

    .. math::  \\text{logits} = \\frac{1}{T}\\sum_{t=1}^{T} \\big(W\\,\\mathrm{mean}_{\\text{tokens}}(x^{(t)})
        + b\\big)

    (a LIF between the token mean and ``head`` in the Spike-driven Transformer.)

    Args:
        attention: ``"ssa"`` or ``"sdsa"``.
        depth: transformer blocks (the ``L`` of ``L-D``).
        embed_dim: embedding width (the ``D``; divisible by 8 and by ``num_heads``).
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / ``embed_dim``.
        qkv_bias: biases on the ``q``, ``k``, ``v`` projections (the authors' CIFAR-10 Spikformer has them,
            their ImageNet Spikformer and the Spike-driven Transformer do not).
        pooling: four ``0``/``1`` flags, max-pool after that patch-splitting stage (``"1111"``: 16x16
            patches, ``"0011"``: 4x4).
        num_classes: classifier outputs.
        in_channels: input channels.
        T: time steps for static input (event frames ``[N, T, C, H, W]`` bring their own).
        surrogate: ``"sigmoid"`` (the authors' SpikingJelly default) or ``"atan"``.
        tau: LIF time constant.
        neuron_backend: ``"spikingjelly"``, ``"cupy"`` or ``"auto"`` (see
            :func:`models.sew_resnet.make_spiking_neuron`).

    Shapes:
        input ``[N, C, H, W]`` (static) or ``[N, T, C, H, W]``; output ``[N, num_classes]``. Reset the
        state between batches with ``functional.reset_net(model)``.
    """

    is_spiking = True

    def __init__(
        self,
        attention: str,
        *,
        depth: int = 8,
        embed_dim: int = 512,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        pooling: str = "1111",
        num_classes: int = 1000,
        in_channels: int = 3,
        T: int = 4,
        surrogate: str = "sigmoid",
        tau: float = 2.0,
        neuron_backend: str = "spikingjelly",
    ) -> None:
        super().__init__()
        self._build(attention, True, depth, embed_dim, num_heads, mlp_ratio, qkv_bias, pooling, num_classes, in_channels,
                    T, surrogate, tau, neuron_backend)  # fmt: skip

    def _build(
        self, attention: str, spiking: bool, depth: int, embed_dim: int, num_heads: int, mlp_ratio: float,
        qkv_bias: bool, pooling: str, num_classes: int, in_channels: int, T: int, surrogate: str, tau: float,
        neuron_backend: str,
    ) -> None:  # fmt: skip
        if attention not in ATTENTIONS:
            raise KeywordError(
                "attention",
                f"unknown attention {attention!r}; choose one of {', '.join(map(repr, ATTENTIONS))}",
            )
        for what, v in (("depth", depth), ("embed_dim", embed_dim), ("num_heads", num_heads), ("T", T),
                        ("num_classes", num_classes), ("in_channels", in_channels)):  # fmt: skip
            _positive_int(what, v)
        if embed_dim % 8 or embed_dim % num_heads:
            raise KeywordError(
                "embed_dim",
                f"embed_dim must be divisible by 8 and by num_heads ({num_heads}), got {embed_dim}; "
                "pass a multiple of both",
            )
        if not (isinstance(pooling, str) and len(pooling) == 4 and set(pooling) <= {"0", "1"}):
            raise KeywordError(
                "pooling", f"pooling must be four 0/1 flags such as '1111' or '0011', got {pooling!r}"
            )
        if not mlp_ratio > 0 or int(embed_dim * mlp_ratio) < 1:
            raise KeywordError("mlp_ratio", f"mlp_ratio must be > 0, got {mlp_ratio!r}")
        build = make_spiking_neuron(
            "lif", surrogate_function=surrogate, tau=tau, neuron_backend=neuron_backend
        )
        neurons = {1.0: build, 0.5: make_spiking_neuron(
            "lif", surrogate_function=surrogate, tau=tau, v_threshold=0.5, neuron_backend=neuron_backend)}  # fmt: skip
        kit = _Kit(spiking, lambda th: neurons[th]())
        self.attention, self.depth, self.embed_dim, self.num_heads = attention, depth, embed_dim, num_heads
        self.mlp_ratio, self.pooling, self.T = mlp_ratio, pooling, int(T) if spiking else 1
        self.surrogate, self.neuron_backend = surrogate, neuron_backend
        self.patch_embed = PatchSplit(kit, attention, in_channels, embed_dim, pooling)
        self.block = nn.Sequential(
            *(Block(kit, attention, embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth))
        )
        self.head_lif = kit.act() if attention == "sdsa" else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes)
        for m in self.modules():  # the authors' init: truncated normal 0.02 for linear maps, BN 1/0
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if spiking:
            functional.set_step_mode(self, "m")

    def encode(self, x: Tensor) -> Tensor:
        """First conv + BN: ``[N,C,H,W]`` once, repeated to ``[T,N,...]``; ``[N,T,C,H,W]`` per frame."""
        pe = self.patch_embed
        if x.dim() == 4:
            y = pe.proj_bn(pe.proj_conv(x))
            return y.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        if x.dim() == 5 and self.is_spiking:
            return _per_frame(lambda f: pe.proj_bn(pe.proj_conv(f)), x.transpose(0, 1))
        raise ValueError(
            f"{type(self).__name__} expects [N, C, H, W] images"
            f"{' or [N, T, C, H, W] event frames' if self.is_spiking else ''}, got shape {tuple(x.shape)}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]``."""
        x = self.block(self.patch_embed(self.encode(x)))  # [T, B, N, D]
        return self.head(self.head_lif(x.mean(2))).mean(0)

    def extra_repr(self) -> str:
        return (
            f"attention={self.attention!r}, depth={self.depth}, embed_dim={self.embed_dim}, "
            f"num_heads={self.num_heads}, mlp_ratio={self.mlp_ratio}, pooling={self.pooling!r}, T={self.T}"
        )


class ANNTransformer(SpikingTransformer):
    """The ANN twin of :class:`SpikingTransformer`: the same modules, names and shapes, ReLU in place of
    every neuron, softmax attention ``softmax(Q K^T * 0.125) V`` (modules ``qk``, ``av``), no time axis.

    Args: those of :class:`SpikingTransformer` without ``T``, ``surrogate``, ``tau``, ``neuron_backend``.

    Shapes:
        input ``[N, C, H, W]``, output ``[N, num_classes]``.
    """

    is_spiking = False

    def __init__(
        self,
        attention: str,
        *,
        depth: int = 8,
        embed_dim: int = 512,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        pooling: str = "1111",
        num_classes: int = 1000,
        in_channels: int = 3,
    ) -> None:
        nn.Module.__init__(self)
        self._build(attention, False, depth, embed_dim, num_heads, mlp_ratio, qkv_bias, pooling, num_classes, in_channels,
                    1, "sigmoid", 2.0, "spikingjelly")  # fmt: skip

    def extra_repr(self) -> str:
        return super().extra_repr().rsplit(", T=", 1)[0]


_IMAGENET = {"num_heads": 8, "pooling": "1111"}
#: (name suffix, attention, depth, width, extra defaults, paper and variant)
_VARIANTS = (
    ("spikformer_8_384", "ssa", 8, 384, _IMAGENET, "Spikformer-8-384 (ImageNet; 16.81 M in the paper)"),
    ("spikformer_8_512", "ssa", 8, 512, _IMAGENET, "Spikformer-8-512 (ImageNet; 29.68 M in the paper)"),
    ("spikformer_8_768", "ssa", 8, 768, _IMAGENET, "Spikformer-8-768 (ImageNet; 66.34 M in the paper)"),
    ("spikformer_4_384", "ssa", 4, 384, {"num_heads": 12, "qkv_bias": True, "pooling": "0011", "num_classes": 10},
     "Spikformer-4-384 (CIFAR-10; 9.32 M in the paper)"),
    ("spikformer_small", "ssa", 2, 64, {"num_heads": 4, "pooling": "1100", "num_classes": 10, "in_channels": 1,
                                        "T": 2}, "a small Spikformer for 28 px MNIST on CPU (2-64)"),
    ("sdt_8_384", "sdsa", 8, 384, _IMAGENET, "Spike-driven Transformer-8-384 (ImageNet; 16.81 M in the paper)"),
    ("sdt_8_512", "sdsa", 8, 512, _IMAGENET, "Spike-driven Transformer-8-512 (ImageNet; 29.68 M in the paper)"),
    ("sdt_8_768", "sdsa", 8, 768, _IMAGENET, "Spike-driven Transformer-8-768 (ImageNet; 66.34 M in the paper)"),
    ("sdt_2_512", "sdsa", 2, 512, {"num_heads": 8, "pooling": "0011", "num_classes": 10},
     "Spike-driven Transformer-2-512 (CIFAR-10; 10.28 M in the paper, the 100-class count)"),
    ("sdt_small", "sdsa", 2, 64, {"num_heads": 4, "pooling": "1100", "num_classes": 10, "in_channels": 1, "T": 2},
     "a small Spike-driven Transformer for 28 px MNIST on CPU (2-64)"),
)  # fmt: skip

for _name, _attn, _depth, _dim, _extra, _doc in _VARIANTS:
    register_variant(_name, SpikingTransformer, _attn, doc=_doc, depth=_depth, embed_dim=_dim, **_extra)
    register_variant(
        f"ann_{_name}", ANNTransformer, _attn, doc=f"ANN twin of {_doc}", depth=_depth, embed_dim=_dim,
        **{k: v for k, v in _extra.items() if k != "T"},
    )  # fmt: skip
