"""CUDA C source of the fused multi-step neuron kernels, one specialization per key.

Layout: ``[T, N]`` time-major, one thread owns ``vec`` adjacent neurons (``vec=2``: ``float2`` /
``__half2`` / ``__nv_bfloat162`` loads and stores) and loops over ``T`` with the membrane potential in fp32
registers (grid-stride loop over neuron pairs).

* **Forward** reads ``x`` and writes the spikes (plus the fp32 final ``v`` and, on request, ``v_seq``):
  two tensor passes. Nothing is saved for the backward.
* **Backward** recomputes the charged potential ``h`` from ``x`` and the initial state with the forward's
  exact arithmetic (so the surrogate sees the fp32 ``h`` of the forward, for every input dtype), then runs
  the reverse loop of :func:`snnprune.neuron.kernels.reference.multistep_backward`: reads ``x`` and the
  spike gradient, writes the input gradient (three passes; five per training step with the forward).
  PLIF's ``dL/dq`` is accumulated per thread in fp32, reduced per warp with shuffles and written as one
  partial per warp (deterministic; summed by torch).
* The initial state is a tensor (``v_init``) or, when ``v_init`` is null, the scalar ``v0`` (after a reset:
  no state tensor is created, read or saved).

Latency: with a compile-time ``T`` (``steps`` in 1..:data:`MAX_STATIC_STEPS`) every load of the sequence is
issued before the arithmetic (fully unrolled, ``h`` kept in registers); with a run-time ``T`` the next
step's input is prefetched before the current step's arithmetic, and the backward recomputes ``h`` in chunks
of :data:`CHUNK` steps (replaying the forward from the initial state to each chunk's start). ``index32``
uses 32-bit index arithmetic (the host picks it when ``T * N`` plus one grid stride fits in ``int``).

Exactness: the forward arithmetic uses the ``__f*_rn`` intrinsics so that no multiply-add is contracted into
an FMA and division is IEEE-rounded, matching SpikingJelly's CPU and Triton kernels bit for bit in fp32;
compile WITHOUT ``-use_fast_math``. The backward's reverse loop divides nothing (LIF multiplies by an fp32
``1/tau`` taken once per thread with ``__frcp_rn``, PLIF's ``dH/dq`` is the charge's own ``x - (v - v_reset)``);
only its recomputation of ``h`` keeps the forward's division, so that ``h`` stays bit-exact.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CHUNK",
    "DTYPES",
    "MAX_STATIC_STEPS",
    "WARP_SUM_STORE",
    "BackwardKey",
    "ForwardKey",
    "all_backward_keys",
    "all_forward_keys",
    "backward_source",
    "forward_source",
]

#: Largest ``T`` compiled as a constant (fully unrolled loops, ``h`` in registers).
MAX_STATIC_STEPS = 16
#: Backward chunk length for a run-time ``T`` (``h`` of one chunk lives in registers).
CHUNK = 8

#: dtype name -> C type, vector type, header, to-float, from-float (rn), low/high of a vector, vector pack.
DTYPES = {
    "fp32": {
        "ctype": "float",
        "vtype": "float2",
        "header": "",
        "to_f": "{}",
        "from_f": "{}",
        "lo": "{}.x",
        "hi": "{}.y",
        "pack": "make_float2({}, {})",
    },
    "fp16": {
        "ctype": "__half",
        "vtype": "__half2",
        "header": "#include <cuda_fp16.h>",
        "to_f": "__half2float({})",
        "from_f": "__float2half_rn({})",
        "lo": "__low2float({})",
        "hi": "__high2float({})",
        "pack": "__floats2half2_rn({}, {})",
    },
    "bf16": {
        "ctype": "__nv_bfloat16",
        "vtype": "__nv_bfloat162",
        "header": "#include <cuda_bf16.h>",
        "to_f": "__bfloat162float({})",
        "from_f": "__float2bfloat16_rn({})",
        "lo": "__low2float({})",
        "hi": "__high2float({})",
        "pack": "__floats2bfloat162_rn({}, {})",
    },
}
_FP32 = {"to_f": "{}", "from_f": "{}", "lo": "{}.x", "hi": "{}.y", "pack": "make_float2({}, {})"}


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
        steps: compile-time ``T`` (1..:data:`MAX_STATIC_STEPS`), or 0 for a run-time ``T``.
        vec: neurons per thread, 1 or 2 (2 needs an even ``N`` and pointers aligned to two elements).
        index32: 32-bit index arithmetic (only when ``T * N`` plus a grid stride fits in ``int``).
    """

    kind: str
    hard_reset: bool
    decay_input: bool
    dtype: str
    steps: int = 0
    vec: int = 1
    index32: bool = False

    @property
    def name(self) -> str:
        """Kernel symbol, unique per specialization."""
        return f"snnprune_fwd_{_common_name(self)}"


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
        steps: compile-time ``T`` or 0.
        vec: neurons per thread, 1 or 2.
        index32: 32-bit index arithmetic.
    """

    kind: str
    hard_reset: bool
    decay_input: bool
    dtype: str
    detach_reset: bool
    surrogate: str
    steps: int = 0
    vec: int = 1
    index32: bool = False

    @property
    def name(self) -> str:
        """Kernel symbol, unique per specialization."""
        return f"snnprune_bwd_{_common_name(self)}_detach{int(self.detach_reset)}_{self.surrogate}"


def _common_name(key: ForwardKey | BackwardKey) -> str:
    steps = f"T{key.steps}" if key.steps else "Tn"
    return (
        f"{key.kind}_{'hard' if key.hard_reset else 'soft'}_decay{int(key.decay_input)}_{key.dtype}"
        f"_{steps}_v{key.vec}_i{32 if key.index32 else 64}"
    )


def _check_key(key: ForwardKey | BackwardKey) -> None:
    if key.vec not in (1, 2):
        raise ValueError(f"vec must be 1 or 2, got {key.vec}")
    if not 0 <= key.steps <= MAX_STATIC_STEPS:
        raise ValueError(f"steps must be 0 (run-time T) or 1..{MAX_STATIC_STEPS}, got {key.steps}")
    if key.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {key.dtype!r}")


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


class _Access:
    """Loads and stores of one logical ``[.., N]`` array for ``vec`` neurons per thread."""

    def __init__(self, vec: int, conv: dict, vtype: str) -> None:
        self.vec, self.conv, self.vtype = vec, conv, vtype

    def load(self, ptr: str, idx: str, dst: list[str]) -> str:
        if self.vec == 1:
            return f"{dst[0]} = {self.conv['to_f'].format(f'{ptr}[{idx}]')};"
        return (
            f"{{ const {self.vtype} p_ = reinterpret_cast<const {self.vtype}*>({ptr})[{idx}]; "
            f"{dst[0]} = {self.conv['lo'].format('p_')}; {dst[1]} = {self.conv['hi'].format('p_')}; }}"
        )

    def store(self, ptr: str, idx: str, src: list[str]) -> str:
        if self.vec == 1:
            return f"{ptr}[{idx}] = {self.conv['from_f'].format(src[0])};"
        return f"reinterpret_cast<{self.vtype}*>({ptr})[{idx}] = {self.conv['pack'].format(src[0], src[1])};"


def _lanes(vec: int, template: str) -> str:
    """``template`` once per neuron of the thread, ``{l}`` replaced by the lane index."""
    return " ".join(template.replace("{l}", str(lane)) for lane in range(vec))


def _names(prefix: str, vec: int, suffix: str = "") -> list[str]:
    return [f"{prefix}{lane}{suffix}" for lane in range(vec)]


def _prologue(key: ForwardKey | BackwardKey) -> str:
    idx = "int" if key.index32 else "long long"
    steps = f"constexpr int T = {key.steps};" if key.steps else "const int T = T_rt;"
    return f"""  using idx_t = {idx};
  {steps}
  const float q = (q_ptr != nullptr) ? q_ptr[0] : 0.0f;
  (void)q; (void)tau; (void)T_rt;
  const idx_t NV = (idx_t)(N / {key.vec});  // neuron groups of {key.vec}
  const idx_t stride = (idx_t)blockDim.x * gridDim.x;"""


def _step_forward(key, x: str, v: str, spike: str | None, h: str | None = None) -> str:
    """One neuron's step: ``h = charge(x, v)``, spike, reset; optionally keeps the spike and ``h``."""
    keep = (f" {spike} = spike;" if spike else "") + (f" {h} = h;" if h else "")
    return (
        f"{{ const float x = {x}; const float v = {v}; const float h = {_charge(key)}; "
        f"const float spike = (h >= v_threshold) ? 1.0f : 0.0f; {v} = {_reset('h', 'spike', key.hard_reset)}; "
        f"{keep.strip()} }}"
    )


def forward_source(key: ForwardKey) -> str:
    """CUDA source of the fused forward kernel for ``key``.

    Signature: ``(x_seq, v_init, q, spikes, v_final, v_seq, N, T, tau, v_threshold, v_reset, v0)``;
    ``v_init`` (null: every neuron starts at the scalar ``v0``), ``q`` (PLIF ``sigmoid(w)``, a device
    pointer so CUDA graphs see its updates) and ``v_seq`` may be null.

    Args:
        key: the specialization.

    Returns:
        The source text; the kernel symbol is ``key.name``.
    """
    _check_key(key)
    d = DTYPES[key.dtype]
    vec = key.vec
    xs = _Access(vec, d, d["vtype"])
    fs = _Access(vec, _FP32, "float2")
    v, s = _names("vm", vec), _names("s", vec)
    if key.steps:
        xa = [f"xa{lane}[t]" for lane in range(vec)]
        body = f"""    float {", ".join(f"xa{lane}[T]" for lane in range(vec))};
#pragma unroll
    for (int t = 0; t < T; ++t) {xs.load("x_seq", "(idx_t)t * NV + i", xa)}  // all loads in flight
#pragma unroll
    for (int t = 0; t < T; ++t) {{
      const idx_t k = (idx_t)t * NV + i;
      float {", ".join(s)};
      {" ".join(_step_forward(key, xa[lane], v[lane], s[lane]) for lane in range(vec))}
      {xs.store("spikes", "k", s)}
      if (v_seq != nullptr) {fs.store("v_seq", "k", v)}
    }}"""
    else:
        xn, xc = _names("xn", vec), _names("xc", vec)
        body = f"""    float {", ".join(xn)};
    {xs.load("x_seq", "i", xn)}
    for (int t = 0; t < T; ++t) {{
      const idx_t k = (idx_t)t * NV + i;
      {_lanes(vec, "const float xc{l} = xn{l};")}
      if (t + 1 < T) {xs.load("x_seq", "k + NV", xn)}  // prefetch x[t+1] before step t's arithmetic
      float {", ".join(s)};
      {" ".join(_step_forward(key, xc[lane], v[lane], s[lane]) for lane in range(vec))}
      {xs.store("spikes", "k", s)}
      if (v_seq != nullptr) {fs.store("v_seq", "k", v)}
    }}"""
    return f"""{d["header"]}
extern "C" __global__ void {key.name}(
    const {d["ctype"]}* __restrict__ x_seq, const float* __restrict__ v_init, const float* __restrict__ q_ptr,
    {d["ctype"]}* __restrict__ spikes, float* __restrict__ v_final, float* __restrict__ v_seq,
    const long long N, const int T_rt, const float tau, const float v_threshold, const float v_reset,
    const float v0) {{
{_prologue(key)}
  for (idx_t i = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; i < NV; i += stride) {{
    float {", ".join(v)};
    if (v_init != nullptr) {fs.load("v_init", "i", v)} else {{ {_lanes(vec, "vm{l} = v0;")} }}
{body}
    {fs.store("v_final", "i", v)}
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
            "const float s = __frcp_rn(1.0f + expf(-__fmul_rn(d, sg_c1))); "
            "const float sg = __fmul_rn(__fmul_rn(1.0f - s, s), sg_c1);"
        )
    raise ValueError(f"unknown surrogate {surrogate!r}")


def _step_backward(key: BackwardKey, h: str, dq: str, gs: str, gv: str, carry: str, gx: str, gq: str) -> str:
    """One neuron's reverse step: from ``h`` (and PLIF's ``dH/dq``) to ``gx`` and the new ``carry``.

    No division: LIF multiplies by ``inv_tau`` and both leaky kinds by ``decay`` (``1 - 1/tau``, ``1 - q``),
    constants of the launch (:func:`_backward_constants`).
    """
    if key.hard_reset:
        reset_grad = "float reset_grad = 1.0f - ((h >= v_threshold) ? 1.0f : 0.0f);"
        if not key.detach_reset:
            reset_grad += " reset_grad = reset_grad + (v_reset - h) * sg;"
    else:
        reset_grad = "const float reset_grad = " + (
            "1.0f;" if key.detach_reset else "1.0f - v_threshold * sg;"
        )
    if key.kind == "if":
        step = f"{gx} = gh; {carry} = gh;"
    elif key.kind == "lif":
        step = (f"{gx} = gh * inv_tau;" if key.decay_input else f"{gx} = gh;") + f" {carry} = gh * decay;"
    else:
        step = (f"{gx} = gh * q;" if key.decay_input else f"{gx} = gh;") + f" {carry} = gh * decay;"
        step += f" {gq} = {gq} + gh * {dq};"
    return (
        f"{{ const float h = {h}; const float d = h - v_threshold; {_surrogate(key.surrogate)} "
        f"{reset_grad} const float gh = {gs} * sg + {gv} * reset_grad; {step} }}"
    )


def _backward_constants(key: BackwardKey) -> str:
    # One IEEE reciprocal per thread instead of a division per step (fp32 1/tau is what reference.py uses).
    if key.kind == "lif":
        return "const float inv_tau = __frcp_rn(tau); const float decay = __fsub_rn(1.0f, inv_tau);"
    if key.kind == "plif":
        return "const float decay = __fsub_rn(1.0f, q);"
    return ""


def _dh_dq(key: BackwardKey, x: str, v: str) -> str:
    # PLIF's dH/dq from the step's input and previous potential, as the forward's charge computes it.
    if key.decay_input:
        return f"__fsub_rn({x}, __fsub_rn({v}, v_reset))"
    return f"-__fsub_rn({v}, v_reset)"


def backward_source(key: BackwardKey) -> str:
    """CUDA source of the fused backward (BPTT with recomputation of ``h``) kernel for ``key``.

    Signature: ``(grad_spikes, grad_v_final, grad_v_seq, x_seq, v_init, q, grad_x, grad_v_init, q_partials,
    N, T, tau, v_threshold, v_reset, v0, sg_c1, sg_c2)``; ``grad_spikes`` (zero), ``grad_v_final``,
    ``grad_v_seq``, ``v_init`` (scalar ``v0``), ``q``, ``grad_v_init`` and ``q_partials`` may be null
    (``q_partials`` holds one fp32 partial sum of ``dL/dq`` per warp of the launch, PLIF only).

    Args:
        key: the specialization.

    Returns:
        The source text; the kernel symbol is ``key.name``.
    """
    _check_key(key)
    d = DTYPES[key.dtype]
    vec, plif = key.vec, key.kind == "plif"
    xs = _Access(vec, d, d["vtype"])
    fs = _Access(vec, _FP32, "float2")
    v, carry, gq = _names("vm", vec), _names("carry", vec), _names("gq", vec)
    chunk = "T" if key.steps else str(CHUNK)
    hb = ", ".join(f"hb{lane}[{chunk}]" for lane in range(vec))
    qb = ", ".join(f"qb{lane}[{chunk}]" for lane in range(vec))
    keep_dq = _lanes(vec, "qb{l}[j] = " + _dh_dq(key, "xt{l}", "vm{l}") + ";") if plif else ""
    xt = _names("xt", vec)
    recompute = f"""      float {hb};{f" float {qb};" if plif else ""}
#pragma unroll
      for (int j = 0; j < {chunk}; ++j) {{
        const int t = start + j;
        if (t < end) {{
          float {", ".join(xt)};
          {xs.load("x_seq", "(idx_t)t * NV + i", xt)}
          {keep_dq}
          {" ".join(_step_forward(key, xt[lane], v[lane], None, f"hb{lane}[j]") for lane in range(vec))}
        }}
      }}"""
    gs, gv, gx = _names("gs", vec), _names("gv", vec), _names("gx", vec)
    steps = " ".join(
        _step_backward(
            key, f"hb{lane}[j]", f"qb{lane}[j]", gs[lane], gv[lane], carry[lane], gx[lane], gq[lane]
        )
        for lane in range(vec)
    )
    reverse = f"""#pragma unroll
      for (int j = {chunk} - 1; j >= 0; --j) {{
        const int t = start + j;
        if (t < end) {{
          const idx_t k = (idx_t)t * NV + i;
          float {", ".join(gs)}, {", ".join(gv)}, {", ".join(gx)};
          if (grad_spikes != nullptr) {xs.load("grad_spikes", "k", gs)} else {{ {_lanes(vec, "gs{l} = 0.0f;")} }}
          {_lanes(vec, "gv{l} = carry{l};")}
          if (grad_v_seq != nullptr) {{
            float {", ".join(_names("a", vec))};
            {fs.load("grad_v_seq", "k", _names("a", vec))}
            {_lanes(vec, "gv{l} = gv{l} + a{l};")}
          }}
          if (grad_v_final != nullptr && t == T - 1) {{
            float {", ".join(_names("a", vec))};
            {fs.load("grad_v_final", "i", _names("a", vec))}
            {_lanes(vec, "gv{l} = gv{l} + a{l};")}
          }}
          {steps}
          {xs.store("grad_x", "k", gx)}
        }}
      }}"""
    init_v = f"if (v_init != nullptr) {fs.load('v_init', 'i', v)} else {{ {_lanes(vec, 'vm{l} = v0;')} }}"
    if key.steps:
        loop = f"""    {{
      const int start = 0, end = T;
      float {", ".join(v)};
      {init_v}
{recompute}
{reverse}
    }}"""
    else:
        xr = _names("xr", vec)
        loop = f"""    for (int end = T; end > 0;) {{
      const int start = end > {CHUNK} ? end - {CHUNK} : 0;
      float {", ".join(v)};
      {init_v}
      for (int t = 0; t < start; ++t) {{  // replay the forward to the chunk's start
        float {", ".join(xr)};
        {xs.load("x_seq", "(idx_t)t * NV + i", xr)}
        {" ".join(_step_forward(key, xr[lane], v[lane], None) for lane in range(vec))}
      }}
{recompute}
{reverse}
      end = start;
    }}"""
    plif_reduce = ""
    helper = ""
    if plif:
        helper = WARP_SUM_STORE
        plif_reduce = f"""
  // one fp32 partial of dL/dq per warp (q_partials is uniform: all threads take the same branch)
  if (q_partials != nullptr) snnprune_warp_sum_store({" + ".join(gq)}, q_partials);"""
    return f"""{d["header"]}{helper}
extern "C" __global__ void {key.name}(
    const {d["ctype"]}* __restrict__ grad_spikes, const float* __restrict__ grad_v_final,
    const float* __restrict__ grad_v_seq, const {d["ctype"]}* __restrict__ x_seq,
    const float* __restrict__ v_init, const float* __restrict__ q_ptr, {d["ctype"]}* __restrict__ grad_x,
    float* __restrict__ grad_v_init, float* __restrict__ q_partials, const long long N, const int T_rt,
    const float tau, const float v_threshold, const float v_reset, const float v0, const float sg_c1,
    const float sg_c2) {{
{_prologue(key)}
  (void)sg_c2; (void)q_partials;
  {_backward_constants(key)}
  {"float " + ", ".join(f"{g} = 0.0f" for g in gq) + ";" if plif else ""}
  for (idx_t i = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; i < NV; i += stride) {{
    float {", ".join(f"{c} = 0.0f" for c in carry)};
{loop}
    if (grad_v_init != nullptr) {fs.store("grad_v_init", "i", carry)}
  }}{plif_reduce}
}}
"""


def all_forward_keys(steps: tuple[int, ...] = (0, 4), vec: tuple[int, ...] = (1, 2)) -> list[ForwardKey]:
    """Forward specializations (IF has no ``decay_input`` variant), 32-bit and 64-bit indices.

    Args:
        steps: compile-time ``T`` values to include (0: run-time ``T``).
        vec: neurons per thread to include.

    Returns:
        The keys.
    """
    keys = []
    for kind in ("if", "lif", "plif"):
        for hard in (True, False):
            for decay in (True,) if kind == "if" else (True, False):
                for dtype in DTYPES:
                    for t in steps:
                        for v in vec:
                            for idx32 in (True, False):
                                keys.append(ForwardKey(kind, hard, decay, dtype, t, v, idx32))
    return keys


def all_backward_keys(steps: tuple[int, ...] = (0, 4), vec: tuple[int, ...] = (1, 2)) -> list[BackwardKey]:
    """Backward specializations for every forward key of :func:`all_forward_keys` (same arguments)."""
    return [
        BackwardKey(f.kind, f.hard_reset, f.decay_input, f.dtype, detach, sg, f.steps, f.vec, f.index32)
        for f in all_forward_keys(steps, vec)
        for detach in (True, False)
        for sg in ("atan", "sigmoid")
    ]
