"""``torch.library`` custom ops wrapping the fused multi-step neuron kernels.

``snnprune::multistep_neuron_fwd`` and ``snnprune::multistep_neuron_bwd`` run the CuPy kernels of
:mod:`~snnprune.neuron.kernels.source` on CUDA tensors (on PyTorch's current stream, so CUDA graphs and
``torch.compile`` capture them) and the pure-torch :mod:`~snnprune.neuron.kernels.reference` on CPU
(the CPU path exists so the op plumbing — fake tensors, autograd — is testable without a GPU).
Both have ``register_fake`` shape functions and the forward has ``register_autograd``.

Layout: the ops work on a *time-major dense* ``x_seq`` (``x_seq.stride(0) == x_seq[0].numel()`` and
``x_seq[0]`` non-overlapping and dense, e.g. contiguous or channels-last per step): the kernels index
memory as ``[T, N]`` and every output is allocated with ``empty_like`` so it has the input's strides.
:func:`multistep_neuron` makes anything else contiguous once.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _cupy
from . import reference, source

__all__ = [
    "THREADS",
    "compiled_kernel",
    "is_time_major_dense",
    "multistep_neuron",
    "num_blocks",
    "round_toward_threshold",
]

THREADS = 256
MAX_BLOCKS = 8192
_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_KERNELS: dict[tuple[int, str], object] = {}
#: Number of CUDA kernel launches; tests use it as a sentinel that the fused path ran.
LAUNCHES = {"fwd": 0, "bwd": 0}
#: Test hook: ``callable(key, n, args)`` run instead of the CuPy launch; when set, CPU tensors also take the
#: kernel path, so tests can drive the real argument packing against the CPU-compiled kernel source.
CPU_LAUNCHER = None
#: When True, CUDA outputs are filled with NaN before the launch (tests: an unwritten element fails).
POISON_OUTPUTS = False


def _out_like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    out = torch.empty_like(t, dtype=dtype)
    return out.fill_(math.nan) if POISON_OUTPUTS else out


def num_blocks(n: int) -> int:
    """Grid size of a launch over ``n`` neurons (grid-stride loop beyond ``MAX_BLOCKS`` blocks)."""
    return max(1, min(-(-n // THREADS), MAX_BLOCKS))


def is_time_major_dense(x: torch.Tensor) -> bool:
    """Whether ``x`` ``[T, ...]`` can be indexed as a dense ``[T, N]`` buffer with per-step layout ``x[0]``."""
    if x.dim() < 1 or x.shape[0] == 0:
        return x.is_contiguous()
    step = x[0]
    n = step.numel()
    if x.shape[0] > 1 and x.stride(0) != n:
        return False
    dims = sorted((s, st) for s, st in zip(step.shape, step.stride(), strict=True) if s != 1)
    expected = 1
    for size, stride in sorted(dims, key=lambda d: d[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def round_toward_threshold(h: torch.Tensor, dtype: torch.dtype, v_threshold: float) -> torch.Tensor:
    """Cast fp32 ``h`` to ``dtype`` rounding *away from the threshold*'s other side.

    ``h >= v_threshold`` rounds up, ``h < v_threshold`` rounds down, so ``cast(h) >= v_threshold`` iff
    ``h >= v_threshold``: the backward's recomputed spike equals the forward's. Mirrors the
    ``__float2half_ru/_rd`` stores of the CUDA forward.

    Args:
        h: fp32 tensor.
        dtype: target dtype (fp32 returns ``h`` itself).
        v_threshold: firing threshold.

    Returns:
        ``h`` in ``dtype``.
    """
    if dtype == torch.float32:
        return h
    r = h.to(dtype)
    back = r.float()
    up = (h >= v_threshold) & (back < h)
    down = (h < v_threshold) & (back > h)
    inf = torch.full_like(r, math.inf)
    r = torch.where(up, torch.nextafter(r, inf), r)
    return torch.where(down, torch.nextafter(r, -inf), r)


def compiled_kernel(device_index: int, key: source.ForwardKey | source.BackwardKey) -> object:
    """The ``cupy.RawKernel`` for ``key``, built once per (device, specialization) and memoized.

    The source is generated only on a cache miss; NVRTC compiles it on the first launch with
    ``--std=c++17`` and no ``-use_fast_math`` (exactness), and CuPy also caches the binary on disk.
    """
    cache_key = (device_index, key.name)
    kernel = _KERNELS.get(cache_key)
    if kernel is None:
        cupy = _cupy.ensure_cupy()
        code = (
            source.forward_source(key) if isinstance(key, source.ForwardKey) else source.backward_source(key)
        )
        with cupy.cuda.Device(device_index):
            kernel = cupy.RawKernel(code, key.name, options=("--std=c++17",))
        _KERNELS[cache_key] = kernel
    return kernel


def _ptr(t: torch.Tensor | None) -> np.uint64:
    return np.uint64(0 if t is None else t.data_ptr())


def _launch(key, n: int, args: tuple, device: torch.device) -> None:
    if CPU_LAUNCHER is not None:
        CPU_LAUNCHER(key, n, args)
        return
    kernel = compiled_kernel(device.index, key)
    cupy = _cupy.ensure_cupy()
    # RawKernel.__call__ launches on CuPy's current stream: make it PyTorch's current stream.
    with cupy.cuda.Device(device.index), _cupy.torch_stream_for_cupy(device):
        kernel((num_blocks(n),), (THREADS,), args)


def _like_layout(t: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """``t`` with ``template``'s device, strides and dtype (copy only when they differ; the kernels take raw
    pointers, so a tensor on another device must never pass through)."""
    if t.device == template.device and t.stride() == template.stride() and t.dtype == template.dtype:
        return t
    return torch.empty_like(template).copy_(t)


def _sg_constants(surrogate: str, alpha: float) -> tuple[np.float32, np.float32]:
    if surrogate == "atan":
        return np.float32(math.pi / 2 * alpha), np.float32(alpha / 2)
    return np.float32(alpha), np.float32(0.0)


# --------------------------------------------------------------------------------------------- forward


@torch.library.custom_op("snnprune::multistep_neuron_fwd", mutates_args=())
def _fwd(
    x_seq: torch.Tensor,
    v_init: torch.Tensor,
    q: torch.Tensor | None,
    kind: str,
    tau: float,
    decay_input: bool,
    v_threshold: float,
    v_reset: float | None,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
    store_v_seq: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if x_seq.device.type == "cpu" and CPU_LAUNCHER is None:
        spikes, v_final, h32, v_seq = reference.multistep_forward(
            x_seq,
            v_init,
            q,
            kind=kind,
            tau=tau,
            decay_input=decay_input,
            v_threshold=v_threshold,
            v_reset=v_reset,
            store_v_seq=store_v_seq,
        )
        h_seq = round_toward_threshold(h32, x_seq.dtype, v_threshold)
        v_seq = v_seq if v_seq is not None else x_seq.new_empty(0, dtype=torch.float32)
        if x_seq.shape[0] == 0:
            v_final = v_final.clone()  # a custom op may not return an alias of its input
        return (
            _like_layout(spikes, x_seq),
            _like_layout(v_final, v_init),
            _like_layout(h_seq, x_seq),
            _like_layout(v_seq, torch.empty_like(x_seq, dtype=torch.float32)) if store_v_seq else v_seq,
        )
    spikes = _out_like(x_seq)
    h_seq = _out_like(x_seq)
    v_final = _out_like(v_init)
    v_seq = _out_like(x_seq, torch.float32) if store_v_seq else x_seq.new_empty(0, dtype=torch.float32)
    steps, n = x_seq.shape[0], v_init.numel()
    if steps == 0 or n == 0:
        v_final.copy_(v_init)
        return spikes, v_final, h_seq, v_seq
    key = source.ForwardKey(kind, v_reset is not None, decay_input or kind == "if", _DTYPE_NAMES[x_seq.dtype])
    args = (
        _ptr(x_seq),
        _ptr(v_init),
        _ptr(q),
        _ptr(spikes),
        _ptr(h_seq),
        _ptr(v_final),
        _ptr(v_seq if store_v_seq else None),
        np.int64(n),
        np.int32(steps),
        np.float32(tau),
        np.float32(v_threshold),
        np.float32(0.0 if v_reset is None else v_reset),
    )
    _launch(key, n, args, x_seq.device)
    LAUNCHES["fwd"] += 1
    return spikes, v_final, h_seq, v_seq


@_fwd.register_fake
def _fwd_fake(
    x_seq,
    v_init,
    q,
    kind,
    tau,
    decay_input,
    v_threshold,
    v_reset,
    detach_reset,
    surrogate,
    alpha,
    store_v_seq,
):
    v_seq = (
        torch.empty_like(x_seq, dtype=torch.float32)
        if store_v_seq
        else x_seq.new_empty(0, dtype=torch.float32)
    )
    return torch.empty_like(x_seq), torch.empty_like(v_init), torch.empty_like(x_seq), v_seq


# -------------------------------------------------------------------------------------------- backward


@torch.library.custom_op("snnprune::multistep_neuron_bwd", mutates_args=())
def _bwd(
    grad_spikes: torch.Tensor,
    grad_v_final: torch.Tensor | None,
    grad_v_seq: torch.Tensor | None,
    h_seq: torch.Tensor,
    v_init: torch.Tensor,
    q: torch.Tensor | None,
    kind: str,
    tau: float,
    decay_input: bool,
    v_threshold: float,
    v_reset: float | None,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
    need_grad_v_init: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if h_seq.device.type == "cpu" and CPU_LAUNCHER is None:
        grad_x, grad_v, grad_q = reference.multistep_backward(
            grad_spikes,
            grad_v_final,
            grad_v_seq,
            h_seq,
            v_init,
            q,
            kind=kind,
            tau=tau,
            decay_input=decay_input,
            v_threshold=v_threshold,
            v_reset=v_reset,
            detach_reset=detach_reset,
            surrogate=surrogate,
            alpha=alpha,
        )
        grad_x = _like_layout(grad_x, torch.empty_like(h_seq, dtype=grad_spikes.dtype))
        grad_v = _like_layout(grad_v, v_init) if need_grad_v_init else v_init.new_empty(0)
        grad_q = grad_q if grad_q is not None else h_seq.new_zeros((), dtype=torch.float32)
        return grad_x, grad_v, grad_q
    grad_x = _out_like(h_seq, grad_spikes.dtype)
    grad_v = _out_like(v_init) if need_grad_v_init else v_init.new_empty(0)
    steps, n = h_seq.shape[0], v_init.numel()
    plif = kind == "plif"
    partials = _out_like(h_seq.new_empty(num_blocks(n) * THREADS // 32 if plif else 0, dtype=torch.float32))
    if steps == 0 or n == 0:
        if need_grad_v_init:
            grad_v.zero_() if grad_v_final is None else grad_v.copy_(grad_v_final)
        return grad_x, grad_v, h_seq.new_zeros((), dtype=torch.float32)
    key = source.BackwardKey(
        kind,
        v_reset is not None,
        decay_input or kind == "if",
        _DTYPE_NAMES[h_seq.dtype],
        detach_reset,
        surrogate,
    )
    c1, c2 = _sg_constants(surrogate, alpha)
    args = (
        _ptr(grad_spikes),
        _ptr(grad_v_final),
        _ptr(grad_v_seq),
        _ptr(h_seq),
        _ptr(v_init if plif else None),
        _ptr(q),
        _ptr(grad_x),
        _ptr(grad_v if need_grad_v_init else None),
        _ptr(partials if plif else None),
        np.int64(n),
        np.int32(steps),
        np.float32(tau),
        np.float32(v_threshold),
        np.float32(0.0 if v_reset is None else v_reset),
        c1,
        c2,
    )
    _launch(key, n, args, h_seq.device)
    LAUNCHES["bwd"] += 1
    grad_q = partials.sum() if plif else h_seq.new_zeros((), dtype=torch.float32)
    return grad_x, grad_v, grad_q


@_bwd.register_fake
def _bwd_fake(
    grad_spikes,
    grad_v_final,
    grad_v_seq,
    h_seq,
    v_init,
    q,
    kind,
    tau,
    decay_input,
    v_threshold,
    v_reset,
    detach_reset,
    surrogate,
    alpha,
    need_grad_v_init,
):
    grad_v = torch.empty_like(v_init) if need_grad_v_init else v_init.new_empty(0)
    return torch.empty_like(h_seq, dtype=grad_spikes.dtype), grad_v, h_seq.new_empty((), dtype=torch.float32)


# -------------------------------------------------------------------------------------------- autograd


def _setup_context(ctx, inputs, output) -> None:
    x_seq, v_init, q, kind, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha, store = (
        inputs
    )
    _, _, h_seq, _ = output
    ctx.save_for_backward(h_seq, v_init, q)
    ctx.params = (kind, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha)
    ctx.store_v_seq = store
    ctx.input_dtype = x_seq.dtype
    ctx.mark_non_differentiable(h_seq)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_spikes, grad_v_final, grad_h, grad_v_seq):
    h_seq, v_init, q = ctx.saved_tensors
    kind, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha = ctx.params
    template = torch.empty_like(h_seq, dtype=ctx.input_dtype)
    grad_spikes = torch.zeros_like(template) if grad_spikes is None else _like_layout(grad_spikes, template)
    if grad_v_final is not None:
        grad_v_final = _like_layout(grad_v_final.float(), v_init)
    if grad_v_seq is not None and ctx.store_v_seq:
        grad_v_seq = _like_layout(grad_v_seq.float(), torch.empty_like(h_seq, dtype=torch.float32))
    else:
        grad_v_seq = None
    need_v = bool(ctx.needs_input_grad[1])
    grad_x, grad_v, grad_q = _bwd(
        grad_spikes,
        grad_v_final,
        grad_v_seq,
        h_seq,
        v_init,
        q,
        kind,
        tau,
        decay_input,
        v_threshold,
        v_reset,
        detach_reset,
        surrogate,
        alpha,
        need_v,
    )
    grad_q = grad_q if (q is not None and ctx.needs_input_grad[2]) else None
    return (grad_x, grad_v if need_v else None, grad_q) + (None,) * 9


_fwd.register_autograd(_backward, setup_context=_setup_context)


# -------------------------------------------------------------------------------------------- public


def multistep_neuron(
    x_seq: torch.Tensor,
    v_init: torch.Tensor,
    w: torch.Tensor | None = None,
    *,
    kind: str,
    tau: float = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    detach_reset: bool = False,
    surrogate: str = "atan",
    alpha: float = 2.0,
    store_v_seq: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Fused multi-step IF/LIF/PLIF neuron with fp32 state (autograd-aware, ``torch.compile``-traceable).

    Args:
        x_seq: input ``[T, N, ...]`` (fp32/fp16/bf16, any strides; non time-major-dense inputs are
            made contiguous once).
        v_init: membrane potential before step 0, shape ``x_seq.shape[1:]`` (any float dtype).
        w: PLIF parameter (``1/tau = sigmoid(w)``), required for ``kind="plif"``.
        kind: ``"if"``, ``"lif"`` or ``"plif"``.
        tau: LIF time constant.
        decay_input: LIF/PLIF input scaling.
        v_threshold: firing threshold.
        v_reset: hard-reset value, ``None`` for the soft reset.
        detach_reset: no surrogate gradient through the reset.
        surrogate: ``"atan"`` or ``"sigmoid"``.
        alpha: surrogate sharpness.
        store_v_seq: also return the fp32 membrane potential after every step.

    Returns:
        ``(spikes, v_final, v_seq)``: spikes with ``x_seq``'s shape and dtype, final fp32 membrane
        potential, and ``v_seq`` (fp32 ``[T, N, ...]``) or ``None``.

    Raises:
        ValueError: unknown ``kind``/``surrogate``, missing ``w`` for PLIF, or a shape mismatch.
    """
    if kind not in reference.KINDS:
        raise ValueError(f"kind must be one of {reference.KINDS}, got {kind!r}")
    if surrogate not in reference.SURROGATES:
        raise ValueError(f"surrogate must be one of {reference.SURROGATES}, got {surrogate!r}")
    if x_seq.dtype not in _DTYPE_NAMES:
        raise ValueError(f"x_seq must be float32, float16 or bfloat16, got {x_seq.dtype}")
    if tuple(v_init.shape) != tuple(x_seq.shape[1:]):
        raise ValueError(f"v_init has shape {tuple(v_init.shape)}, expected {tuple(x_seq.shape[1:])}")
    if kind == "plif" and w is None:
        raise ValueError("kind='plif' needs the parameter w (1/tau = sigmoid(w))")
    x = x_seq if is_time_major_dense(x_seq) else x_seq.contiguous()
    step_layout = (
        torch.empty_like(x[0], dtype=torch.float32) if x.shape[0] > 0 else v_init.float().contiguous()
    )
    v = _like_layout(v_init, step_layout)
    q = torch.sigmoid(w.float()).reshape(()) if kind == "plif" else None
    spikes, v_final, _, v_seq = _fwd(
        x,
        v,
        q,
        kind,
        float(tau),
        bool(decay_input),
        float(v_threshold),
        None if v_reset is None else float(v_reset),
        bool(detach_reset),
        surrogate,
        float(alpha),
        bool(store_v_seq),
    )
    return spikes, v_final, (v_seq if store_v_seq else None)
