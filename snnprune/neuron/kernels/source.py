"""CUDA C source of the fused multi-step neuron kernels, one specialization per key.

One thread owns one neuron and loops over ``T`` with the membrane potential in an fp32 register
(grid-stride loop over neurons, ``[T, N]`` time-major layout). The forward writes the spikes and
the charged potential ``h`` (input dtype: what backward needs, nothing more) plus the final ``v``.
For fp16/bf16 ``h`` is rounded *towards the threshold side it lies on* (``_ru`` when
``h >= v_th``, ``_rd`` otherwise), so the spike recomputed from the stored ``h`` in backward is
always the spike of the forward. The backward runs the reverse loop of
:func:`snnprune.neuron.kernels.reference.multistep_backward` line by line; PLIF's ``dL/dq`` is
accumulated per thread in fp32, reduced per warp with shuffles and written to one partial per warp
(deterministic; summed by torch).

Loads and stores are scalar (no half2 packing yet). Exactness: the forward uses the ``__f*_rn``
intrinsics so that no multiply-add is contracted into an FMA and division is IEEE-rounded, matching
SpikingJelly's CPU and Triton kernels bit for bit in fp32; compile WITHOUT ``-use_fast_math``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DTYPES",
    "WARP_SUM_STORE",
    "BackwardKey",
    "ForwardKey",
    "all_backward_keys",
    "all_forward_keys",
    "backward_source",
    "forward_source",
]

#: dtype name -> (C type, header, to-float, float-to-type round-nearest, round-up, round-down)
DTYPES = {
    "fp32": ("float", "", "{}", "{}", "{}", "{}"),
    "fp16": (
        "__half",
        "#include <cuda_fp16.h>",
        "__half2float({})",
        "__float2half_rn({})",
        "__float2half_ru({})",
        "__float2half_rd({})",
    ),
    "bf16": (
        "__nv_bfloat16",
        "#include <cuda_bf16.h>",
        "__bfloat162float({})",
        "__float2bfloat16_rn({})",
        "__float2bfloat16_ru({})",
        "__float2bfloat16_rd({})",
    ),
}


#: Warp reduction of PLIF's per-thread dL/dq; guarded so several kernels can share one translation unit
#: (and so a CPU emulation of the kernels can supply its own sequential version).
WARP_SUM_STORE = """
#ifndef SNNPRUNE_WARP_SUM_STORE
#define SNNPRUNE_WARP_SUM_STORE
__device__ __forceinline__ void snnprune_warp_sum_store(float v, float* out) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  if ((threadIdx.x & 31) == 0) out[((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5] = v;
}
#endif"""


@dataclass(frozen=True)
class ForwardKey:
    """Specialization of the forward kernel.

    Attributes:
        kind: ``"if"``, ``"lif"`` or ``"plif"``.
        hard_reset: ``v_reset`` is a number (else soft reset).
        decay_input: LIF/PLIF input scaling (normalized to ``True`` for IF).
        dtype: ``"fp32"``, ``"fp16"`` or ``"bf16"``.
    """

    kind: str
    hard_reset: bool
    decay_input: bool
    dtype: str

    @property
    def name(self) -> str:
        """Kernel symbol, unique per specialization."""
        return (
            f"snnprune_fwd_{self.kind}_{'hard' if self.hard_reset else 'soft'}"
            f"_decay{int(self.decay_input)}_{self.dtype}"
        )


@dataclass(frozen=True)
class BackwardKey:
    """Specialization of the backward kernel (:class:`ForwardKey` plus the gradient choices).

    Attributes:
        kind: ``"if"``, ``"lif"`` or ``"plif"``.
        hard_reset: hard or soft reset.
        decay_input: LIF/PLIF input scaling (``True`` for IF).
        dtype: ``"fp32"``, ``"fp16"`` or ``"bf16"``.
        detach_reset: no surrogate gradient through the reset.
        surrogate: ``"atan"`` or ``"sigmoid"``.
    """

    kind: str
    hard_reset: bool
    decay_input: bool
    dtype: str
    detach_reset: bool
    surrogate: str

    @property
    def name(self) -> str:
        """Kernel symbol, unique per specialization."""
        return (
            f"snnprune_bwd_{self.kind}_{'hard' if self.hard_reset else 'soft'}"
            f"_decay{int(self.decay_input)}_detach{int(self.detach_reset)}_{self.surrogate}_{self.dtype}"
        )


def _charge(key: ForwardKey | BackwardKey) -> str:
    # Mirrors reference._charge with explicit round-to-nearest intrinsics (no FMA contraction).
    if key.kind == "if":
        return "__fadd_rn(v, x)"
    scaled = "__fdiv_rn({a}, tau)" if key.kind == "lif" else "__fmul_rn({a}, q)"
    if key.decay_input:
        return "__fadd_rn(v, " + scaled.format(a="__fsub_rn(x, __fsub_rn(v, v_reset))") + ")"
    return "__fadd_rn(__fsub_rn(v, " + scaled.format(a="__fsub_rn(v, v_reset)") + "), x)"


def _reset(h: str, spike: str, hard: bool) -> str:
    if hard:
        return f"__fadd_rn(__fmul_rn({spike}, v_reset), __fmul_rn(__fsub_rn(1.0f, {spike}), {h}))"
    return f"__fsub_rn({h}, __fmul_rn({spike}, v_threshold))"


def forward_source(key: ForwardKey) -> str:
    """CUDA source of the fused forward kernel for ``key``.

    Signature: ``(x, v_init, q, spikes, h_seq, v_final, v_seq, N, T, tau, v_threshold, v_reset)``;
    ``q`` (PLIF ``sigmoid(w)``, device pointer) and ``v_seq`` may be null.

    Args:
        key: the specialization.

    Returns:
        The source text; the kernel symbol is ``key.name``.
    """
    ctype, header, to_f, from_rn, from_ru, from_rd = DTYPES[key.dtype]
    store_h = (
        "h_seq[k] = h;"
        if key.dtype == "fp32"
        else f"h_seq[k] = (h >= v_threshold) ? {from_ru.format('h')} : {from_rd.format('h')};"
    )
    return f"""{header}
extern "C" __global__ void {key.name}(
    const {ctype}* __restrict__ x_seq, const float* __restrict__ v_init, const float* __restrict__ q_ptr,
    {ctype}* __restrict__ spikes, {ctype}* __restrict__ h_seq, float* __restrict__ v_final,
    float* __restrict__ v_seq, const long long N, const int T, const float tau,
    const float v_threshold, const float v_reset) {{
  const float q = (q_ptr != nullptr) ? q_ptr[0] : 0.0f;
  (void)q; (void)tau;
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += stride) {{
    float v = v_init[i];
    for (int t = 0; t < T; ++t) {{
      const long long k = (long long)t * N + i;
      const float x = {to_f.format("x_seq[k]")};
      const float h = {_charge(key)};
      const float spike = (h >= v_threshold) ? 1.0f : 0.0f;
      v = {_reset("h", "spike", key.hard_reset)};
      spikes[k] = {from_rn.format("spike")};
      {store_h}
      if (v_seq != nullptr) v_seq[k] = v;
    }}
    v_final[i] = v;
  }}
}}
"""


def _surrogate(surrogate: str) -> str:
    # sg_c1, sg_c2 are fp32 constants rounded on the host: atan (pi/2*alpha, alpha/2); sigmoid (alpha, -).
    if surrogate == "atan":
        return (
            "const float z = __fmul_rn(d, sg_c1); const float sg = __fmul_rn(__frcp_rn(1.0f + z * z), sg_c2);"
        )
    if surrogate == "sigmoid":
        return (
            "const float s = 1.0f / (1.0f + expf(-__fmul_rn(d, sg_c1))); "
            "const float sg = __fmul_rn(__fmul_rn(1.0f - s, s), sg_c1);"
        )
    raise ValueError(f"unknown surrogate {surrogate!r}")


def backward_source(key: BackwardKey) -> str:
    """CUDA source of the fused backward (BPTT) kernel for ``key``.

    Signature: ``(grad_spikes, grad_v_final, grad_v_seq, h_seq, v_init, q, grad_x, grad_v_init,
    q_partials, N, T, tau, v_threshold, v_reset, sg_c1, sg_c2)``; ``grad_v_final``, ``grad_v_seq``,
    ``v_init``, ``q``, ``grad_v_init`` and ``q_partials`` may be null (``q_partials`` holds one fp32
    partial sum of ``dL/dq`` per warp of the launch, PLIF only).

    Args:
        key: the specialization.

    Returns:
        The source text; the kernel symbol is ``key.name``.
    """
    ctype, header, to_f, from_rn, _, _ = DTYPES[key.dtype]
    if key.hard_reset:
        reset_grad = "float reset_grad = 1.0f - ((h >= v_threshold) ? 1.0f : 0.0f);"
        if not key.detach_reset:
            reset_grad += " reset_grad = reset_grad + (v_reset - h) * sg;"
    else:
        reset_grad = "const float reset_grad = " + (
            "1.0f;" if key.detach_reset else "1.0f - v_threshold * sg;"
        )
    if key.kind == "if":
        step = "gx = gh; carry = gh;"
    elif key.kind == "lif":
        step = ("gx = gh / tau;" if key.decay_input else "gx = gh;") + " carry = gh - gh / tau;"
    else:
        step = ("gx = gh * q;" if key.decay_input else "gx = gh;") + " carry = gh - gh * q;"
        prev_reset = _reset("h_prev", "s_prev", key.hard_reset)
        dh_dq = "(h - v_prev) / q" if key.decay_input else "-(v_prev - v_reset)"
        step += f"""
      float v_prev;
      if (t > 0) {{
        const float h_prev = {to_f.format("h_seq[k - N]")};
        const float s_prev = (h_prev >= v_threshold) ? 1.0f : 0.0f;
        v_prev = {prev_reset};
        h_next = h_prev;  // reused as h of step t - 1: h is read once per step
      }} else {{
        v_prev = v_init[i];
      }}
      gq = gq + gh * ({dh_dq});"""
    plif_reduce = ""
    helper = ""
    h_load = "h_next" if key.kind == "plif" else to_f.format("h_seq[k]")
    gq_decl = "float gq = 0.0f;" if key.kind == "plif" else ""
    h_next_decl = (
        "float h_next = " + to_f.format("h_seq[(long long)(T - 1) * N + i]") + ";"
        if key.kind == "plif"
        else ""
    )
    if key.kind == "plif":
        helper = WARP_SUM_STORE
        plif_reduce = """
  snnprune_warp_sum_store(gq, q_partials);  // one fp32 partial of dL/dq per warp (deterministic)"""
    return f"""{header}{helper}
extern "C" __global__ void {key.name}(
    const {ctype}* __restrict__ grad_spikes, const float* __restrict__ grad_v_final,
    const float* __restrict__ grad_v_seq, const {ctype}* __restrict__ h_seq,
    const float* __restrict__ v_init, const float* __restrict__ q_ptr, {ctype}* __restrict__ grad_x,
    float* __restrict__ grad_v_init, float* __restrict__ q_partials, const long long N, const int T,
    const float tau, const float v_threshold, const float v_reset, const float sg_c1, const float sg_c2) {{
  const float q = (q_ptr != nullptr) ? q_ptr[0] : 0.0f;
  (void)q; (void)tau; (void)sg_c2; (void)v_init; (void)q_partials;
  {gq_decl}
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += stride) {{
    float carry = 0.0f;
    {h_next_decl}
    for (int t = T - 1; t >= 0; --t) {{
      const long long k = (long long)t * N + i;
      const float h = {h_load};
      const float d = h - v_threshold;
      {_surrogate(key.surrogate)}
      float grad_v = carry;
      if (grad_v_seq != nullptr) grad_v = grad_v + grad_v_seq[k];
      if (grad_v_final != nullptr && t == T - 1) grad_v = grad_v + grad_v_final[i];
      {reset_grad}
      const float gh = {to_f.format("grad_spikes[k]")} * sg + grad_v * reset_grad;
      float gx;
      {step}
      grad_x[k] = {from_rn.format("gx")};
    }}
    if (grad_v_init != nullptr) grad_v_init[i] = carry;
  }}{plif_reduce}
}}
"""


def all_forward_keys() -> list[ForwardKey]:
    """Every forward specialization (IF has no ``decay_input`` variant)."""
    keys = []
    for kind in ("if", "lif", "plif"):
        for hard in (True, False):
            for decay in (True,) if kind == "if" else (True, False):
                for dtype in DTYPES:
                    keys.append(ForwardKey(kind, hard, decay, dtype))
    return keys


def all_backward_keys() -> list[BackwardKey]:
    """Every backward specialization."""
    return [
        BackwardKey(f.kind, f.hard_reset, f.decay_input, f.dtype, detach, sg)
        for f in all_forward_keys()
        for detach in (True, False)
        for sg in ("atan", "sigmoid")
    ]
