"""Fused multi-step neuron: eager ``autograd.Function``, ``torch.library`` custom ops, kernel launches.

Two entry paths share one implementation (:func:`_forward_impl`, :func:`_backward_impl`):

* **Eager** (the default): a plain :class:`torch.autograd.Function` (or, without autograd, a direct
  call), so the host cost per call is a few tensor allocations and one kernel launch.
* **Traced** (``torch.compile``, including CUDA-graph capture with ``mode="reduce-overhead"``): the custom
  ops ``snnprune::multistep_neuron_fwd`` / ``snnprune::multistep_neuron_bwd`` with ``register_fake`` shape
  functions and ``register_autograd``.

On CUDA tensors the CuPy kernels of :mod:`~snnprune.neuron.kernels.source` run on PyTorch's current stream;
on CPU tensors the pure-torch :mod:`~snnprune.neuron.kernels.reference` runs (so the plumbing is testable
without a GPU). :func:`kernel_hooks` lets tests and the CPU mode of ``scripts/bench_neurons.py`` run CPU
tensors through the real kernel path with a launcher of their own.

Layout: the kernels index a *time-major dense* ``x_seq`` (``x_seq.stride(0) == x_seq[0].numel()``, each step
dense, e.g. contiguous or channels-last) as ``[T, N]``; outputs get the input's strides, the fp32 state
the per-step strides. :func:`multistep_neuron` makes anything else contiguous once. The backward saves only
the input (and a tensor initial state): ``h`` is recomputed in fp32 by the backward kernel.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .. import cupy_runtime
from . import reference, source

__all__ = [
    "MAX_BLOCKS",
    "THREADS",
    "compiled_kernel",
    "is_time_major_dense",
    "kernel_hooks",
    "launch_kernel",
    "launch_plan",
    "multistep_neuron",
    "num_blocks",
    "probe_error",
    "traffic_bytes",
]

THREADS = 256
MAX_BLOCKS = 8192
#: Two neurons per thread only up to this T: beyond it the unrolled backward needs over ~96 registers (ptxas,
#: sm_90), which costs more occupancy than the wider loads win (scripts/neuron_kernel_resources.py).
VEC2_MAX_STEPS = 8
_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_KERNELS: dict[tuple[int, str], object] = {}
_KEYS: dict[tuple, source.ForwardKey | source.BackwardKey] = {}
_PROBES: dict[int, str | None] = {}


@dataclass
class _Hooks:
    launcher: Callable | None = None
    poison: bool = False


_HOOKS = _Hooks()


@contextlib.contextmanager
def kernel_hooks(
    launcher: Callable[[object, int, int, tuple], None] | None = None, *, poison_outputs: bool = False
) -> Iterator[None]:
    """Test hooks for the kernel path, restored on exit.

    Args:
        launcher: ``launcher(key, blocks, units, args)`` runs instead of the CuPy launch (``units``: the
            number of ``key.vec``-neuron groups, ``args``: the kernel's packed arguments). While set, CPU
            tensors also take the kernel path (argument packing, layouts, autograd), and the neuron nodes
            accept CPU tensors for their fused path.
        poison_outputs: fill kernel outputs with NaN before the launch (an element the kernel does not
            write then fails the comparison).

    Yields:
        Nothing; the hooks are active inside the ``with`` block.
    """
    saved = (_HOOKS.launcher, _HOOKS.poison)
    _HOOKS.launcher, _HOOKS.poison = launcher, poison_outputs
    try:
        yield
    finally:
        _HOOKS.launcher, _HOOKS.poison = saved


def hooked_launcher_active() -> bool:
    """Whether a :func:`kernel_hooks` launcher is active (CPU tensors then take the kernel path)."""
    return _HOOKS.launcher is not None


def num_blocks(units: int) -> int:
    """Grid size of a launch over ``units`` thread work items (grid-stride loop beyond ``MAX_BLOCKS``)."""
    return max(1, min(-(-units // THREADS), MAX_BLOCKS))


def is_time_major_dense(x: torch.Tensor) -> bool:
    """Whether ``x`` ``[T, ...]`` can be indexed as a dense ``[T, N]`` buffer with per-step layout ``x[0]``."""
    shape, strides = x.shape, x.stride()
    if len(shape) < 1 or shape[0] == 0:
        return x.is_contiguous()
    n = math.prod(shape[1:])
    if shape[0] > 1 and strides[0] != n:
        return False
    expected = 1
    for size, stride in sorted((st, s) for s, st in zip(shape[1:], strides[1:], strict=True) if s != 1):
        if size != expected:
            return False
        expected *= stride
    return True


def _same_layout(a: torch.Tensor, shape, strides) -> bool:
    """``a`` has ``shape`` and, on every dimension longer than 1, the given strides."""
    if tuple(a.shape) != tuple(shape):
        return False
    return all(s == 1 or sa == sb for s, sa, sb in zip(shape, a.stride(), strides, strict=True))


def _as_layout(t: torch.Tensor, shape, strides, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``t`` with ``dtype``/``device`` and the given strides (copied only when they differ)."""
    if t.dtype == dtype and t.device == device and _same_layout(t, shape, strides):
        return t
    return torch.empty_strided(shape, strides, dtype=dtype, device=device).copy_(t)


def _out(shape, strides, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    out = torch.empty_strided(shape, strides, dtype=dtype, device=device)
    return out.fill_(math.nan) if _HOOKS.poison else out


def _sg_constants(surrogate: str, alpha: float) -> tuple[np.float32, np.float32]:
    if surrogate == "atan":
        return np.float32(math.pi / 2 * alpha), np.float32(alpha / 2)
    return np.float32(alpha), np.float32(0.0)


def _ptr(t: torch.Tensor | None) -> np.uint64:
    return np.uint64(0 if t is None else t.data_ptr())


@dataclass(frozen=True)
class _Config:
    kind: str
    tau: float
    decay_input: bool
    v_threshold: float
    v_reset: float | None
    detach_reset: bool
    surrogate: str
    alpha: float
    store_v_seq: bool


# --------------------------------------------------------------------------------------------- kernels


def cuda_compile_options() -> tuple[str, ...]:
    """NVRTC options: C++17, no fast math, and the CUDA include folder holding ``cuda_fp16.h``.

    NVRTC 13 has no built-in ``cuda_fp16.h``/``cuda_bf16.h``; the folder is searched in the
    ``nvidia-cuda-runtime`` wheel next to CuPy, ``$CUDA_PATH/include`` and ``/usr/local/cuda/include``.
    """
    options = ["--std=c++17"]
    candidates = []
    cupy_mod = cupy_runtime.import_cupy()[0]
    if cupy_mod is not None:
        site = os.path.dirname(os.path.dirname(cupy_mod.__file__))
        candidates += [os.path.join(site, "nvidia", sub, "include") for sub in ("cu13", "cuda_runtime")]
    for env in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(env):
            candidates.append(os.path.join(os.environ[env], "include"))
    candidates.append("/usr/local/cuda/include")
    for folder in candidates:
        if os.path.exists(os.path.join(folder, "cuda_fp16.h")):
            options.append("-I" + folder)
            break
    return tuple(options)


def compiled_kernel(device_index: int, key: source.ForwardKey | source.BackwardKey) -> object:
    """The ``cupy.RawKernel`` for ``key``, compiled once per (device, specialization) and memoized.

    NVRTC compiles it here (``--std=c++17``, no ``-use_fast_math``: exactness), so a compile error surfaces
    at the first use, not inside a launch; CuPy also caches the binary on disk.

    Raises:
        RuntimeError: CuPy is missing; CuPy's compile error propagates unchanged.
    """
    cache_key = (device_index, key.name)
    kernel = _KERNELS.get(cache_key)
    if kernel is None:
        cupy = cupy_runtime.ensure_cupy()
        code = (
            source.forward_source(key) if isinstance(key, source.ForwardKey) else source.backward_source(key)
        )
        with cupy.cuda.Device(device_index):
            kernel = cupy.RawKernel(code, key.name, options=cuda_compile_options())
            if hasattr(kernel, "compile"):  # CuPy >= 9: compile now, not inside the first launch
                kernel.compile()
        _KERNELS[cache_key] = kernel
    return kernel


def probe_error(device: torch.device) -> str | None:
    """Compile a small fp32/fp16/bf16 kernel set once per device; the reason it failed, or ``None``.

    ``backend="auto"`` uses the fused kernels only when this returns ``None`` (so a missing
    ``cuda_fp16.h`` or a broken NVRTC falls back to SpikingJelly instead of stopping training).

    Args:
        device: a CUDA device.

    Returns:
        ``None`` when the kernels compile, else ``"<ExceptionType>: <message>"`` (first line).
    """
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _PROBES:
        try:
            for dtype in ("fp32", "fp16", "bf16"):
                compiled_kernel(index, source.ForwardKey("if", True, True, dtype))
            _PROBES[index] = None
        except Exception as err:  # NVRTC/CuPy errors have no common base class
            first = (str(err).strip().splitlines() or [""])[0]
            _PROBES[index] = f"{type(err).__name__}: {first}"
    return _PROBES[index]


def launch_plan(n: int, steps: int, pointers: list[tuple[torch.Tensor | None, int]]) -> tuple[int, int, bool]:
    """Specialization choices for a launch over ``n`` neurons and ``steps`` steps.

    Args:
        n: neurons per step.
        steps: ``T``.
        pointers: ``(tensor or None, element size)`` of every array the kernel touches.

    Returns:
        ``(static_steps, vec, index32)``: ``T`` as a compile-time constant (0 above
        ``source.MAX_STATIC_STEPS``), 2 neurons per thread when ``T <= VEC2_MAX_STEPS``, ``n`` is even and
        every pointer is aligned to two elements (else 1), and 32-bit indices when ``T * N`` plus one grid
        stride fits in ``int``.
    """
    vec = 1
    if steps <= VEC2_MAX_STEPS and n % 2 == 0:
        vec = 2
        for t, size in pointers:
            if t is not None and t.data_ptr() % (2 * size):
                vec = 1
                break
    index32 = steps * n + THREADS * MAX_BLOCKS < 2**31
    return (steps if steps <= source.MAX_STATIC_STEPS else 0), vec, index32


def traffic_bytes(
    dtype: torch.dtype,
    steps: int,
    *,
    training: bool,
    state_tensor: bool = False,
    store_v_seq: bool = False,
) -> dict[str, float]:
    """DRAM bytes per neuron-step the kernels move (counted from :mod:`source`), and the two floors.

    Forward: reads ``x``, writes spikes (and ``v_seq``), reads a tensor initial state once, writes the fp32
    final state once. Backward: reads ``x`` and the spike gradient, writes the input gradient (a tensor
    initial state is read again, ``grad_v_init`` written when it is needed). A run-time ``T`` above
    ``source.MAX_STATIC_STEPS`` also re-reads ``x`` to replay each backward chunk's start.

    Args:
        dtype: input dtype.
        steps: ``T``.
        training: forward + backward (else forward only).
        state_tensor: the initial state is a tensor (else the scalar after a reset).
        store_v_seq: the fp32 ``v_seq`` is written (and its gradient read in training).

    Returns:
        ``{"bytes": b, "floor_inference": 2 passes, "floor_training": 5 passes}`` per neuron-step.
    """
    e = torch.empty((), dtype=dtype).element_size()
    state = 4 / steps
    fwd = 2 * e + state + (state if state_tensor else 0) + (4 if store_v_seq else 0)
    total = fwd
    if training:
        replay = 0.0
        if steps > source.MAX_STATIC_STEPS:
            chunks = -(-steps // source.CHUNK)
            starts = sum(max(0, steps - c * source.CHUNK) for c in range(1, chunks + 1))
            replay = e * starts / steps
        bwd = 3 * e + replay + (4 if store_v_seq else 0) + (2 * state if state_tensor else 0)
        total += bwd
    return {"bytes": total, "floor_inference": 2 * e, "floor_training": 5 * e}


def _key(cls, *fields):
    key = _KEYS.get((cls, fields))
    if key is None:
        key = _KEYS[(cls, fields)] = cls(*fields)
    return key


def launch_kernel(
    key: source.ForwardKey | source.BackwardKey, units: int, args: tuple, device: torch.device
) -> None:
    """Launch one forward or backward kernel on PyTorch's current stream of ``device``.

    Every kernel launch of the op goes through this function (looked up at call time, so a wrapper set on
    the module sees each one); under :func:`kernel_hooks` the hook's launcher runs instead of CuPy.

    Args:
        key: the kernel specialization (a ``source.ForwardKey`` or ``source.BackwardKey``).
        units: thread work items (``key.vec``-neuron groups); the grid is :func:`num_blocks` of it.
        args: the kernel's packed arguments.
        device: the device of the tensors behind ``args``.
    """
    blocks = num_blocks(units)
    if _HOOKS.launcher is not None:
        _HOOKS.launcher(key, blocks, units, args)
        return
    kernel = compiled_kernel(device.index, key)
    cupy = cupy_runtime.ensure_cupy()
    # RawKernel.__call__ launches on CuPy's current stream: make it PyTorch's current stream.
    with cupy.cuda.Device(device.index), cupy_runtime.torch_stream_for_cupy(device):
        kernel((blocks,), (THREADS,), args)


def _check_kernel_args(
    x: torch.Tensor, v_init: torch.Tensor | None, q: torch.Tensor | None, layout: bool = True
) -> None:
    """One clear error before raw pointers reach a kernel (a pointer from another device is an illegal
    address that poisons the CUDA context). ``layout=False`` skips the layout scan of ``x`` (callers that
    made ``x`` time-major dense themselves)."""
    problem = None
    if x.dtype not in _DTYPE_NAMES:
        problem = f"x_seq has dtype {x.dtype}; use float32, float16 or bfloat16"
    elif layout and not is_time_major_dense(x):
        problem = "x_seq is not time-major dense; pass x_seq.contiguous()"
    elif v_init is not None and (v_init.device != x.device or v_init.dtype != torch.float32):
        problem = (
            f"v_init is {v_init.dtype} on {v_init.device}, the kernels need float32 on the input's device "
            f"{x.device}; move it with v_init.to({str(x.device)!r}, torch.float32)"
        )
    elif v_init is not None and not _same_layout(v_init, x.shape[1:], x.stride()[1:]):
        problem = "v_init does not have the per-step layout of x_seq; pass it through multistep_neuron"
    elif q is not None and (q.device != x.device or q.dtype != torch.float32 or q.numel() != 1):
        problem = (
            f"the PLIF parameter is a {q.dtype} tensor of {q.numel()} elements on {q.device}; the kernels "
            f"need one float32 element on the input's device {x.device} (move the neuron with .to(device))"
        )
    if problem is not None:
        raise ValueError(f"fused neuron kernel: {problem}")


def _forward_impl(
    x: torch.Tensor,
    v_init: torch.Tensor | None,
    v0: float,
    q: torch.Tensor | None,
    cfg: _Config,
    layout_checked: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    shape, strides = x.shape, x.stride()
    step_shape, step_strides = shape[1:], strides[1:]
    steps, dev = shape[0], x.device
    if dev.type == "cpu" and _HOOKS.launcher is None:
        v = v_init if v_init is not None else torch.full(step_shape, float(v0))
        if steps == 0:
            return (
                torch.empty_like(x),
                v.float().clone(),
                (torch.empty_like(x, dtype=torch.float32) if cfg.store_v_seq else None),
            )
        spikes, v_final, _, v_seq = reference.multistep_forward(
            x,
            v,
            q,
            kind=cfg.kind,
            tau=cfg.tau,
            decay_input=cfg.decay_input,
            v_threshold=cfg.v_threshold,
            v_reset=cfg.v_reset,
            store_v_seq=cfg.store_v_seq,
        )
        return (
            _as_layout(spikes, shape, strides, x.dtype, dev),
            _as_layout(v_final, step_shape, step_strides, torch.float32, dev),
            None if v_seq is None else _as_layout(v_seq, shape, strides, torch.float32, dev),
        )
    _check_kernel_args(x, v_init, q, layout=not layout_checked)
    spikes = _out(shape, strides, x.dtype, dev)
    v_final = _out(step_shape, step_strides, torch.float32, dev)
    v_seq = _out(shape, strides, torch.float32, dev) if cfg.store_v_seq else None
    n = math.prod(step_shape)
    if steps == 0 or n == 0:
        v_final.copy_(v_init) if v_init is not None else v_final.fill_(float(v0))
        return spikes, v_final, v_seq
    e = x.element_size()
    static, vec, idx32 = launch_plan(n, steps, [(x, e), (spikes, e), (v_init, 4), (v_final, 4), (v_seq, 4)])
    hard = cfg.v_reset is not None
    key = _key(
        source.ForwardKey,
        cfg.kind,
        hard,
        cfg.decay_input or cfg.kind == "if",
        _DTYPE_NAMES[x.dtype],
        static,
        vec,
        idx32,
    )
    args = (
        _ptr(x),
        _ptr(v_init),
        _ptr(q),
        _ptr(spikes),
        _ptr(v_final),
        _ptr(v_seq),
        np.int64(n),
        np.int32(steps),
        np.float32(cfg.tau),
        np.float32(cfg.v_threshold),
        np.float32(cfg.v_reset if hard else 0.0),
        np.float32(v0),
    )
    launch_kernel(key, n // vec, args, dev)
    return spikes, v_final, v_seq


def _backward_impl(
    grad_spikes: torch.Tensor | None,
    grad_v_final: torch.Tensor | None,
    grad_v_seq: torch.Tensor | None,
    x: torch.Tensor,
    v_init: torch.Tensor | None,
    v0: float,
    q: torch.Tensor | None,
    cfg: _Config,
    need_grad_v_init: bool,
    need_grad_q: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    shape, strides = x.shape, x.stride()
    step_shape, step_strides = shape[1:], strides[1:]
    steps, dev = shape[0], x.device
    plif = cfg.kind == "plif"
    if dev.type == "cpu" and _HOOKS.launcher is None:
        v = v_init if v_init is not None else torch.full(step_shape, float(v0))
        if steps == 0:
            gv = torch.zeros(step_shape) if grad_v_final is None else grad_v_final.float().clone()
            return (
                torch.empty_like(x),
                gv if need_grad_v_init else None,
                (torch.zeros(()) if need_grad_q else None),
            )
        grad_x, grad_v, grad_q = reference.multistep_backward(
            grad_spikes,
            grad_v_final,
            grad_v_seq,
            x,
            v,
            q,
            kind=cfg.kind,
            tau=cfg.tau,
            decay_input=cfg.decay_input,
            v_threshold=cfg.v_threshold,
            v_reset=cfg.v_reset,
            detach_reset=cfg.detach_reset,
            surrogate=cfg.surrogate,
            alpha=cfg.alpha,
        )
        return (
            _as_layout(grad_x, shape, strides, x.dtype, dev),
            _as_layout(grad_v, step_shape, step_strides, torch.float32, dev) if need_grad_v_init else None,
            grad_q if (plif and need_grad_q) else None,
        )
    _check_kernel_args(x, v_init, q, layout=False)  # x was checked by the forward
    if grad_spikes is not None:
        grad_spikes = _as_layout(grad_spikes, shape, strides, x.dtype, dev)
    if grad_v_final is not None:
        grad_v_final = _as_layout(grad_v_final, step_shape, step_strides, torch.float32, dev)
    if grad_v_seq is not None:
        grad_v_seq = _as_layout(grad_v_seq, shape, strides, torch.float32, dev)
    grad_x = _out(shape, strides, x.dtype, dev)
    grad_v = _out(step_shape, step_strides, torch.float32, dev) if need_grad_v_init else None
    n = math.prod(step_shape)
    if steps == 0 or n == 0:
        if grad_v is not None:
            grad_v.zero_() if grad_v_final is None else grad_v.copy_(grad_v_final)
        return grad_x, grad_v, (torch.zeros((), device=dev) if plif and need_grad_q else None)
    e = x.element_size()
    static, vec, idx32 = launch_plan(
        n,
        steps,
        [(grad_spikes, e), (grad_v_final, 4), (grad_v_seq, 4), (x, e), (v_init, 4), (grad_x, e), (grad_v, 4)],
    )
    partials = None
    if plif and need_grad_q:
        partials = _out((num_blocks(n // vec) * THREADS // 32,), (1,), torch.float32, dev)
    hard = cfg.v_reset is not None
    key = _key(
        source.BackwardKey,
        cfg.kind,
        hard,
        cfg.decay_input or cfg.kind == "if",
        _DTYPE_NAMES[x.dtype],
        cfg.detach_reset,
        cfg.surrogate,
        static,
        vec,
        idx32,
    )
    c1, c2 = _sg_constants(cfg.surrogate, cfg.alpha)
    args = (
        _ptr(grad_spikes),
        _ptr(grad_v_final),
        _ptr(grad_v_seq),
        _ptr(x),
        _ptr(v_init),
        _ptr(q),
        _ptr(grad_x),
        _ptr(grad_v),
        _ptr(partials),
        np.int64(n),
        np.int32(steps),
        np.float32(cfg.tau),
        np.float32(cfg.v_threshold),
        np.float32(cfg.v_reset if hard else 0.0),
        np.float32(v0),
        c1,
        c2,
    )
    launch_kernel(key, n // vec, args, dev)
    return grad_x, grad_v, (partials.sum() if partials is not None else None)


# ------------------------------------------------------------------------------- eager autograd path


class _MultiStepFunction(torch.autograd.Function):
    """Eager autograd path: one forward launch, one backward launch, no dispatcher round trips."""

    @staticmethod
    def forward(ctx, x, v_init, q, v0, cfg):
        spikes, v_final, v_seq = _forward_impl(x, v_init, v0, q, cfg, True)
        ctx.save_for_backward(x, v_init, q)
        ctx.v0, ctx.cfg = v0, cfg
        ctx.set_materialize_grads(False)
        if v_seq is None:
            v_seq = x.new_empty(0, dtype=torch.float32)
            ctx.mark_non_differentiable(v_seq)
        return spikes, v_final, v_seq

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_final, grad_v_seq):
        x, v_init, q = ctx.saved_tensors
        cfg = ctx.cfg
        need = ctx.needs_input_grad
        grad_x, grad_v, grad_q = _backward_impl(
            grad_spikes,
            grad_v_final,
            grad_v_seq if cfg.store_v_seq else None,
            x,
            v_init,
            ctx.v0,
            q,
            cfg,
            bool(need[1]),
            bool(need[2]),
        )
        return grad_x if need[0] else None, grad_v, grad_q, None, None


# ------------------------------------------------------------------------- custom ops (torch.compile)


@torch.library.custom_op("snnprune::multistep_neuron_fwd", mutates_args=())
def _fwd(
    x_seq: torch.Tensor,
    v_init: torch.Tensor | None,
    v0: float,
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cfg = _Config(kind, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha, store_v_seq)
    spikes, v_final, v_seq = _forward_impl(x_seq, v_init, v0, q, cfg)
    if v_init is not None and v_final.data_ptr() == v_init.data_ptr():
        v_final = v_final.clone()  # a custom op may not return an alias of its input
    return spikes, v_final, v_seq if v_seq is not None else x_seq.new_empty(0, dtype=torch.float32)


@_fwd.register_fake
def _fwd_fake(
    x_seq,
    v_init,
    v0,
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
    v_final = torch.empty_strided(
        x_seq.shape[1:], x_seq.stride()[1:], dtype=torch.float32, device=x_seq.device
    )
    v_seq = (
        torch.empty_strided(x_seq.shape, x_seq.stride(), dtype=torch.float32, device=x_seq.device)
        if store_v_seq
        else x_seq.new_empty(0, dtype=torch.float32)
    )
    return (
        torch.empty_strided(x_seq.shape, x_seq.stride(), dtype=x_seq.dtype, device=x_seq.device),
        v_final,
        v_seq,
    )


@torch.library.custom_op("snnprune::multistep_neuron_bwd", mutates_args=())
def _bwd(
    grad_spikes: torch.Tensor | None,
    grad_v_final: torch.Tensor | None,
    grad_v_seq: torch.Tensor | None,
    x_seq: torch.Tensor,
    v_init: torch.Tensor | None,
    v0: float,
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
    cfg = _Config(kind, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha, False)
    grad_x, grad_v, grad_q = _backward_impl(
        grad_spikes, grad_v_final, grad_v_seq, x_seq, v_init, v0, q, cfg, need_grad_v_init, kind == "plif"
    )
    if grad_v is None:
        grad_v = x_seq.new_empty(0, dtype=torch.float32)
    if grad_q is None:
        grad_q = x_seq.new_empty(0, dtype=torch.float32)
    return grad_x, grad_v, grad_q


@_bwd.register_fake
def _bwd_fake(
    grad_spikes, grad_v_final, grad_v_seq, x_seq, v_init, v0, q, kind, tau, decay_input, v_threshold, v_reset,
    detach_reset, surrogate, alpha, need_grad_v_init,
):  # fmt: skip
    grad_x = torch.empty_strided(x_seq.shape, x_seq.stride(), dtype=x_seq.dtype, device=x_seq.device)
    if need_grad_v_init:
        grad_v = torch.empty_strided(
            x_seq.shape[1:], x_seq.stride()[1:], dtype=torch.float32, device=x_seq.device
        )
    else:
        grad_v = x_seq.new_empty(0, dtype=torch.float32)
    grad_q = (
        x_seq.new_empty((), dtype=torch.float32)
        if kind == "plif"
        else x_seq.new_empty(0, dtype=torch.float32)
    )
    return grad_x, grad_v, grad_q


def _setup_context(ctx, inputs, output) -> None:
    (
        x_seq,
        v_init,
        v0,
        q,
        kind,
        tau,
        decay_input,
        v_threshold,
        v_reset,
        detach_reset,
        surrogate,
        alpha,
        store,
    ) = inputs
    ctx.save_for_backward(x_seq, v_init, q)
    ctx.v0 = v0
    ctx.params = (kind, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha)
    ctx.store_v_seq = store
    ctx.set_materialize_grads(False)


def _op_backward(ctx, grad_spikes, grad_v_final, grad_v_seq):
    x_seq, v_init, q = ctx.saved_tensors
    need_v = bool(ctx.needs_input_grad[1])
    grad_x, grad_v, grad_q = _bwd(
        grad_spikes,
        grad_v_final,
        grad_v_seq if ctx.store_v_seq else None,
        x_seq,
        v_init,
        ctx.v0,
        q,
        *ctx.params,
        need_v,
    )
    grad_q = grad_q if (q is not None and ctx.needs_input_grad[3]) else None
    return (grad_x, grad_v if need_v else None, None, grad_q) + (None,) * 9


_fwd.register_autograd(_op_backward, setup_context=_setup_context)


# -------------------------------------------------------------------------------------------- public


def multistep_neuron(
    x_seq: torch.Tensor,
    v_init: torch.Tensor | float,
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
        v_init: membrane potential before step 0: a tensor of shape ``x_seq.shape[1:]`` (any float dtype and
            device; converted to fp32 on the input's device) or a number (every neuron starts there; no
            state tensor is created, read or saved).
        w: PLIF parameter (``1/tau = sigmoid(w)``), required for ``kind="plif"``; ``sigmoid(w)`` is moved to
            the input's device inside the autograd graph.
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
        ``(spikes, v_final, v_seq)``: spikes with ``x_seq``'s shape, strides and dtype, final fp32 membrane
        potential, and ``v_seq`` (fp32 ``[T, N, ...]``) or ``None``.

    Raises:
        ValueError: unknown ``kind``/``surrogate``, unsupported dtype, missing ``w`` for PLIF, or a shape
            mismatch.
    """
    if kind not in reference.KINDS:
        raise ValueError(f"kind must be one of {reference.KINDS}, got {kind!r}")
    if surrogate not in reference.SURROGATES:
        raise ValueError(f"surrogate must be one of {reference.SURROGATES}, got {surrogate!r}")
    if x_seq.dtype not in _DTYPE_NAMES:
        raise ValueError(f"x_seq must be float32, float16 or bfloat16, got {x_seq.dtype}")
    if kind == "plif" and w is None:
        raise ValueError("kind='plif' needs the parameter w (1/tau = sigmoid(w))")
    x = x_seq if is_time_major_dense(x_seq) else x_seq.contiguous()
    if isinstance(v_init, torch.Tensor):
        if tuple(v_init.shape) != tuple(x.shape[1:]):
            raise ValueError(f"v_init has shape {tuple(v_init.shape)}, expected {tuple(x.shape[1:])}")
        v, v0 = _as_layout(v_init, x.shape[1:], x.stride()[1:], torch.float32, x.device), 0.0
    else:
        v, v0 = None, float(v_init)
    q = None
    if kind == "plif":
        q = torch.sigmoid(w.float())
        if q.dim():  # SpikingJelly's w is 0-d already: no extra view node per call
            q = q.reshape(())
        if q.device != x.device:
            q = q.to(x.device)
    if torch.compiler.is_compiling():
        spikes, v_final, v_seq = _fwd(
            x, v, v0, q, kind, float(tau), bool(decay_input), float(v_threshold),
            None if v_reset is None else float(v_reset), bool(detach_reset), surrogate, float(alpha),
            bool(store_v_seq),
        )  # fmt: skip
        return spikes, v_final, (v_seq if store_v_seq else None)
    cfg = _config(kind, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha, store_v_seq)
    if torch.is_grad_enabled() and (
        x.requires_grad or (v is not None and v.requires_grad) or (q is not None and q.requires_grad)
    ):
        spikes, v_final, v_seq = _MultiStepFunction.apply(x, v, q, v0, cfg)
        return spikes, v_final, (v_seq if store_v_seq else None)
    return _forward_impl(x, v, v0, q, cfg, True)


@functools.lru_cache(maxsize=256)
def _config(
    kind, tau, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha, store_v_seq
) -> _Config:
    return _Config(
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
