"""Tests of snnprune.neuron: reference vs SpikingJelly 2.0.0, dispatch rules, op plumbing, CUDA source.

CPU tests pin the kernel math (``kernels/reference.py`` is line-by-line what the CUDA kernels compute)
against SpikingJelly's own neurons; GPU tests (``@pytest.mark.gpu``) compare the fused kernels with
SpikingJelly and skip cleanly without CUDA or CuPy.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess

import pytest
import torch
from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate

import snnprune.neuron as nn_mod
from snnprune.neuron import _cupy
from snnprune.neuron.kernels import ops, reference, source

KINDS = ("if", "lif", "plif")
SG = {"atan": lambda: surrogate.ATan(alpha=2.0), "sigmoid": lambda: surrogate.Sigmoid(alpha=4.0)}
SG_ALPHA = {"atan": 2.0, "sigmoid": 4.0}


def _sj_node(kind, *, v_reset, detach_reset, decay_input, sg, tau=2.0, init_tau=1.7):
    common = dict(v_reset=v_reset, detach_reset=detach_reset, surrogate_function=SG[sg](), step_mode="m")
    if kind == "if":
        return sj_neuron.IFNode(**common)
    if kind == "lif":
        return sj_neuron.LIFNode(tau=tau, decay_input=decay_input, **common)
    return sj_neuron.ParametricLIFNode(init_tau=init_tau, decay_input=decay_input, **common)


def _inputs(steps, shape, *, noncontiguous, seed, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    if noncontiguous:  # [T, *shape] seen through a transpose of a bigger buffer
        base = torch.randn(shape[-1], steps, *shape[:-1], 2, generator=g) * 1.5 + 0.4
        x = base[..., 0].movedim(0, -1)
        assert not x.is_contiguous()
    else:
        x = torch.randn(steps, *shape, generator=g) * 1.5 + 0.4
    return x.to(device=device, dtype=dtype)


CASES = [
    (kind, v_reset, detach, decay, sg, steps)
    for kind, v_reset, detach, decay, sg, steps in itertools.product(
        KINDS, (0.0, None, -0.25), (True, False), (True, False), ("atan", "sigmoid"), (1, 4, 8)
    )
    if not (kind == "if" and not decay)
]


@pytest.mark.parametrize("kind,v_reset,detach,decay,sg,steps", CASES)
def test_reference_matches_spikingjelly(kind, v_reset, detach, decay, sg, steps):
    """Forward: identical spikes, v within 1e-6; hand-written BPTT == autograd through SJ's neuron."""
    seed = hash((kind, v_reset, detach, decay, sg, steps)) % 2**31
    shape = (3, 5, 7) if steps != 4 else (2, 9)
    x = _inputs(steps, shape, noncontiguous=(steps == 4), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    grad_s = torch.randn(x.shape, generator=g)
    grad_v = torch.randn(x.shape[1:], generator=g)

    node = _sj_node(kind, v_reset=v_reset, detach_reset=detach, decay_input=decay, sg=sg)
    x_sj = x.clone().requires_grad_(True)
    spikes_sj = node(x_sj)
    v_sj = node.v
    ((spikes_sj * grad_s).sum() + (v_sj * grad_v).sum()).backward()

    q = torch.sigmoid(node.w.detach().float()) if kind == "plif" else None
    kw = dict(kind=kind, tau=2.0, decay_input=decay, v_threshold=1.0, v_reset=v_reset)
    v0 = torch.full(shape, 0.0 if v_reset is None else v_reset)
    spikes, v_final, h_seq, _ = reference.multistep_forward(x, v0, q, **kw)
    assert torch.equal(spikes, spikes_sj.detach())
    torch.testing.assert_close(v_final, v_sj.detach(), rtol=0, atol=1e-6)

    grad_x, _, grad_q = reference.multistep_backward(
        grad_s, grad_v, None, h_seq, v0, q, detach_reset=detach, surrogate=sg, alpha=SG_ALPHA[sg], **kw
    )
    torch.testing.assert_close(grad_x, x_sj.grad, rtol=1e-5, atol=1e-6)
    if kind == "plif":
        grad_w = grad_q * q * (1 - q)
        scale = float(grad_s.abs().sum() + grad_v.abs().sum())  # bound on the summed terms
        torch.testing.assert_close(grad_w, node.w.grad, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("detach", [True, False])
def test_backward_matches_pure_autograd(kind, v_reset, detach):
    """Hand-written BPTT == plain autograd through SJ's pure-torch reference + surrogate modules (fp64)."""
    from spikingjelly._ops.if_.reference import multi_step as if_ms
    from spikingjelly._ops.lif.reference import multi_step as lif_ms
    from spikingjelly._ops.plif.reference import multi_step as plif_ms

    x = _inputs(6, (4, 5), noncontiguous=False, seed=7).double().requires_grad_(True)
    g = torch.Generator().manual_seed(8)
    grad_s = torch.randn(x.shape, generator=g, dtype=torch.float64)
    v0 = torch.full((4, 5), 0.0 if v_reset is None else v_reset, dtype=torch.float64)
    w = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    sg = surrogate.ATan(alpha=2.0)
    if kind == "if":
        s, _, _ = if_ms(x, v0, 1.0, v_reset, sg, detach)
    elif kind == "lif":
        s, _, _ = lif_ms(x, v0, 2.0, True, 1.0, v_reset, sg, detach)
    else:
        s, _, _ = plif_ms(x, v0, w, True, 1.0, v_reset, sg, detach)
    (s * grad_s).sum().backward()

    q = torch.sigmoid(w.detach().float()) if kind == "plif" else None
    kw = dict(kind=kind, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=v_reset)
    xf = x.detach().float()
    spikes, _, h_seq, _ = reference.multistep_forward(xf, v0.float(), q, **kw)
    assert torch.equal(spikes.double(), s.detach())
    grad_x, _, grad_q = reference.multistep_backward(
        grad_s.float(),
        None,
        None,
        h_seq,
        v0.float(),
        q,
        detach_reset=detach,
        surrogate="atan",
        alpha=2.0,
        **kw,
    )
    torch.testing.assert_close(grad_x.double(), x.grad, rtol=1e-5, atol=1e-6)
    if kind == "plif":
        torch.testing.assert_close((grad_q * q * (1 - q)).double(), w.grad, rtol=1e-5, atol=1e-5)


def test_round_toward_threshold_keeps_spike_decision():
    h = torch.tensor([0.99995, 1.0, 1.00002, 0.3, -2.0, 1.0004883])
    for dtype in (torch.float16, torch.bfloat16):
        r = ops.round_toward_threshold(h, dtype, 1.0)
        assert r.dtype == dtype
        assert torch.equal(r.float() >= 1.0, h >= 1.0)
        assert ((r.float() - h).abs() <= h.abs() * 2**-6).all()  # within 1 ulp of bf16


@pytest.mark.parametrize("kind", KINDS)
def test_custom_op_cpu_plumbing_and_layouts(kind):
    """The registered custom op (CPU = reference) keeps strides, handles odd/non-contiguous inputs."""
    w = torch.tensor(0.2, requires_grad=True) if kind == "plif" else None
    x_cl = torch.randn(3 * 2, 5, 3, 3).to(memory_format=torch.channels_last).view(3, 2, 5, 3, 3)
    assert ops.is_time_major_dense(x_cl) and not x_cl.is_contiguous()
    x_nc = torch.randn(5, 2, 3, 4).transpose(0, 1)
    assert not ops.is_time_major_dense(x_nc)
    for x in (x_cl, x_nc):
        x = x.clone().requires_grad_(True) if x is x_nc else x.requires_grad_(True)
        spikes, v_final, v_seq = ops.multistep_neuron(
            x,
            torch.zeros(x.shape[1:]),
            w,
            kind=kind,
            v_reset=None,
            store_v_seq=True,
            surrogate="sigmoid",
            alpha=4.0,
        )
        assert spikes.shape == x.shape and v_final.shape == x.shape[1:] and v_seq.shape == x.shape
        if x is x_cl:
            assert spikes.stride() == x.stride()
        torch.testing.assert_close(v_seq[-1], v_final)
        (spikes.sum() + v_final.sum() + v_seq.sum()).backward()
        assert x.grad.shape == x.shape and torch.isfinite(x.grad).all()
    if kind == "plif":
        assert w.grad is not None and torch.isfinite(w.grad)


def test_custom_op_opcheck_and_compile_fullgraph():
    """Fake/autograd registrations are consistent (opcheck) and the op traces without graph breaks."""
    x = torch.randn(4, 3, 5, requires_grad=True)
    v = torch.zeros(3, 5)
    q = torch.tensor(0.4, requires_grad=True)
    args = (x, v, q, "plif", 2.0, True, 1.0, 0.0, False, "atan", 2.0, False)
    torch.library.opcheck(
        ops._fwd, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor")
    )

    def f(x, w):
        s, vf, _ = ops.multistep_neuron(x, torch.zeros(x.shape[1:]), w, kind="plif")
        return s.sum() + vf.sum()

    w = torch.tensor(0.1, requires_grad=True)
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x, w)
    out.backward()
    ref = f(x.detach().requires_grad_(True), w.detach().requires_grad_(True))
    torch.testing.assert_close(out, ref)
    assert w.grad is not None


# ------------------------------------------------------------------------------ node classes (CPU)


@pytest.mark.parametrize(
    "ours,theirs,kwargs",
    [
        (nn_mod.IFNode, sj_neuron.IFNode, {}),
        (nn_mod.LIFNode, sj_neuron.LIFNode, {"tau": 3.0, "decay_input": False}),
        (nn_mod.ParametricLIFNode, sj_neuron.ParametricLIFNode, {"init_tau": 2.5}),
    ],
)
def test_nodes_are_drop_in_on_cpu(ours, theirs, kwargs):
    a = ours(surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m", **kwargs)
    b = theirs(surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m", **kwargs)
    assert isinstance(a, theirs) and a.backend == "auto" and "backend=auto" in repr(a)
    assert a.state_dict().keys() == b.state_dict().keys()
    x = torch.randn(4, 2, 3, 5)
    launches = dict(ops.LAUNCHES)
    assert not a.uses_cupy(x)  # auto on CPU -> SpikingJelly
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    torch.testing.assert_close(a.v, b.v, rtol=0, atol=0)
    assert ops.LAUNCHES == launches
    sj_functional.reset_net(a)
    assert a.v == 0.0
    a.step_mode = "s"
    assert a(x[0]).shape == x[0].shape  # single-step: SpikingJelly path


def test_backend_errors_are_explicit(monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of"):
        nn_mod.IFNode(backend="triton")
    node = nn_mod.LIFNode(step_mode="m", backend="cupy", surrogate_function=surrogate.ATan())
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        node(torch.randn(2, 3))
    with pytest.raises(RuntimeError, match="extra forward arguments"):  # never a silent SpikingJelly fallback
        node.multi_step_forward(torch.randn(2, 3), None)
    node.step_mode = "s"
    with pytest.raises(RuntimeError, match="single-step"):
        node(torch.randn(3))
    node = nn_mod.IFNode(step_mode="m", backend="cupy", surrogate_function=surrogate.PiecewiseQuadratic())
    assert "not fused" in node.cupy_unavailable_reason()
    node = nn_mod.IFNode(step_mode="m", backend="cupy", surrogate_function=surrogate.ATan())
    monkeypatch.setattr(_cupy, "_import_cupy", lambda: (None, ImportError("No module named 'cupy'")))
    reason = node.cupy_unavailable_reason()
    assert "No module named 'cupy'" in reason and "pip install -e .[cuda]" in reason
    with pytest.raises(RuntimeError, match=r"pip install -e \.\[cuda\]"):
        _cupy.ensure_cupy()
    with pytest.raises(ValueError, match="kind must be one of"):
        ops.multistep_neuron(torch.randn(2, 3), torch.zeros(3), kind="izhikevich")
    with pytest.raises(ValueError, match="needs the parameter w"):
        ops.multistep_neuron(torch.randn(2, 3), torch.zeros(3), kind="plif")


def test_import_does_not_need_cupy():
    code = "import sys, snnprune, snnprune.neuron; assert 'cupy' not in sys.modules"
    subprocess.run([__import__("sys").executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------------ CUDA source


@pytest.mark.skipif(
    shutil.which("nvcc") is None, reason="nvcc not found: cannot compile the generated CUDA source"
)
def test_every_specialization_compiles_with_nvcc(tmp_path):
    keys_f, keys_b = source.all_forward_keys(), source.all_backward_keys()
    assert len({k.name for k in keys_f}) == len(keys_f) == 30
    assert len({k.name for k in keys_b}) == len(keys_b) == 120
    code = "\n".join([source.forward_source(k) for k in keys_f] + [source.backward_source(k) for k in keys_b])
    assert "__expf" not in code and "use_fast_math" not in code
    cu = tmp_path / "all.cu"
    cu.write_text(code)
    result = subprocess.run(
        ["nvcc", "--ptx", "-arch=sm_80", "-Werror", "all-warnings", "-o", str(tmp_path / "all.ptx"), str(cu)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ptx = (tmp_path / "all.ptx").read_text()
    for key in keys_f + keys_b:
        assert f".entry {key.name}(" in ptx


# ------------------------------------------------------------------------------ GPU parity


def _need_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not _cupy.cupy_available():
        pytest.skip(f"CuPy not importable ({_cupy.cupy_import_error()!r}); pip install -e .[cuda]")


def _sj_functional(kind, x, v0, w, *, decay, v_reset, detach, sg):
    common = dict(v_threshold=1.0, v_reset=v_reset, surrogate_function=SG[sg](), detach_reset=detach)
    if kind == "if":
        return sj_functional.if_multi_step(x, v0, **common)
    if kind == "lif":
        return sj_functional.lif_multi_step(x, v0, 2.0, decay, **common)
    return sj_functional.plif_multi_step(x, v0, w, decay, **common)


GPU_CASES = [
    (kind, v_reset, detach, decay, sg, dtype, steps, nonc)
    for kind, v_reset, detach, decay, sg, dtype, steps, nonc in itertools.product(
        KINDS,
        (0.0, None),
        (True, False),
        (True, False),
        ("atan", "sigmoid"),
        (torch.float32, torch.float16, torch.bfloat16),
        (1, 4, 8),
        (False, True),
    )
    if not (kind == "if" and not decay)
]


@pytest.mark.gpu
@pytest.mark.parametrize("kind,v_reset,detach,decay,sg,dtype,steps,nonc", GPU_CASES)
def test_gpu_kernel_matches_spikingjelly(monkeypatch, kind, v_reset, detach, decay, sg, dtype, steps, nonc):
    _need_gpu()
    monkeypatch.setattr(ops, "POISON_OUTPUTS", True)
    shape = (3, 17, 5, 7) if steps != 4 else (2, 33, 9)
    x = _inputs(steps, shape, noncontiguous=nonc, seed=torch.seed() % 2**31, dtype=dtype)  # fresh inputs
    grad_s = torch.randn(x.shape).to(dtype)
    v0 = torch.full(shape, 0.0 if v_reset is None else v_reset)
    w_cpu = torch.tensor(0.3, requires_grad=True)

    x_ref = x.clone().requires_grad_(True)
    s_ref, v_ref, _ = _sj_functional(
        kind, x_ref, v0, w_cpu, decay=decay, v_reset=v_reset, detach=detach, sg=sg
    )
    (s_ref.float() * grad_s.float()).sum().backward()

    x_gpu = x.cuda().requires_grad_(True)
    w_gpu = w_cpu.detach().cuda().requires_grad_(True)
    before = dict(ops.LAUNCHES)
    s, v_final, _ = ops.multistep_neuron(
        x_gpu,
        v0.cuda(),
        w_gpu if kind == "plif" else None,
        kind=kind,
        decay_input=decay,
        v_reset=v_reset,
        detach_reset=detach,
        surrogate=sg,
        alpha=SG_ALPHA[sg],
    )
    (s.float() * grad_s.cuda().float()).sum().backward()
    torch.cuda.synchronize()
    assert ops.LAUNCHES["fwd"] == before["fwd"] + 1 and ops.LAUNCHES["bwd"] == before["bwd"] + 1
    assert s.dtype == dtype and s.shape == x.shape
    assert torch.equal(s.cpu(), s_ref.detach())
    torch.testing.assert_close(v_final.cpu(), v_ref.detach().float(), rtol=0, atol=1e-6)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(x_gpu.grad.cpu().float(), x_ref.grad.float(), **tol)
    if kind == "plif":
        scale = float(grad_s.float().abs().sum())
        atol = 1e-6 * scale if dtype == torch.float32 else 1e-2 * scale**0.5
        torch.testing.assert_close(w_gpu.grad.cpu(), w_cpu.grad, rtol=tol["rtol"], atol=atol)


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [nn_mod.IFNode, nn_mod.LIFNode, nn_mod.ParametricLIFNode])
def test_gpu_node_uses_kernel_and_keeps_state(cls):
    _need_gpu()
    node = cls(step_mode="m", surrogate_function=surrogate.ATan(), backend="cupy", store_v_seq=True).cuda()
    x = torch.randn(4, 2, 3, 5, device="cuda")
    before = ops.LAUNCHES["fwd"]
    s = node(x)
    assert ops.LAUNCHES["fwd"] == before + 1 and s.shape == x.shape
    assert node.v.dtype == torch.float32 and node.v_seq.shape == x.shape
    torch.testing.assert_close(node.v_seq[-1], node.v)
    node(x)  # continues from the stored state
    sj_functional.reset_net(node)
    assert node.v == 0.0 and node.v_seq is None


@pytest.mark.gpu
def test_gpu_sew_resnet18_cupy_matches_spikingjelly():
    _need_gpu()
    models = pytest.importorskip("models")
    kw = dict(num_classes=10, in_channels=3, T=4, neuron="if", stem="small", width=8)
    ref = models.create_model("sew_resnet18", neuron_backend="spikingjelly", **kw).cuda()
    ours = models.create_model("sew_resnet18", neuron_backend="cupy", **kw).cuda()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 16, 16, device="cuda")
    before = ops.LAUNCHES["fwd"]
    out_ref, out = ref(x), ours(x)
    assert ops.LAUNCHES["fwd"] > before
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-4)
    out_ref.square().sum().backward()
    out.square().sum().backward()
    for (name, p_ref), (_, p) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-3, atol=1e-4, msg=name)


# ------------------------------------------------------------------------------ CPU emulation of the CUDA source

_EMU_PRELUDE = r"""
#include <cmath>
struct snn_dim3 { unsigned x; };
static snn_dim3 blockIdx, blockDim, threadIdx, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
#define SNNPRUNE_WARP_SUM_STORE
static inline void snnprune_warp_sum_store(float v, float* out) {
  // sequential stand-in for the shuffles: threads run in order, lane 0 of each warp writes first
  long long w = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if ((threadIdx.x & 31) == 0) out[w] = v; else out[w] += v;
}
extern "C" void snn_emu_set(unsigned bx, unsigned bdim, unsigned tx, unsigned gdim) {
  blockIdx.x = bx; blockDim.x = bdim; threadIdx.x = tx; gridDim.x = gdim;
}
"""


@pytest.fixture(scope="module")
def emulated_kernels(tmp_path_factory):
    """The generated fp32 CUDA source compiled as C++ for the CPU (threads run one after the other)."""
    import ctypes

    if shutil.which("g++") is None:
        pytest.skip("g++ not found: cannot emulate the CUDA source on the CPU")
    fwd = [k for k in source.all_forward_keys() if k.dtype == "fp32"]
    bwd = [k for k in source.all_backward_keys() if k.dtype == "fp32"]
    code = _EMU_PRELUDE + "\n".join(
        [source.forward_source(k) for k in fwd] + [source.backward_source(k) for k in bwd]
    )
    d = tmp_path_factory.mktemp("emu")
    (d / "emu.cpp").write_text(code)
    so = d / "emu.so"
    r = subprocess.run(
        [
            "g++",
            "-O1",
            "-ffp-contract=off",
            "-fno-fast-math",
            "-shared",
            "-fPIC",
            "-o",
            str(so),
            str(d / "emu.cpp"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return ctypes.CDLL(str(so))


def _emu_launch(lib, name, n, args, grid=2, block=32):
    import ctypes

    fn = getattr(lib, name)
    conv = []
    for a in args:
        if isinstance(a, torch.Tensor) or a is None:
            conv.append(ctypes.c_void_p(0 if a is None else a.data_ptr()))
        elif isinstance(a, tuple):  # ("ll", v) / ("i", v)
            conv.append(ctypes.c_longlong(a[1]) if a[0] == "ll" else ctypes.c_int(a[1]))
        else:
            conv.append(ctypes.c_float(a))
    for b in range(grid):  # grid*block < n: exercises the grid-stride loop (blocks hold whole warps)
        for t in range(block):
            lib.snn_emu_set(b, block, t, grid)
            fn(*conv)


EMU_CASES = [
    (kind, v_reset, detach, decay, sg)
    for kind, v_reset, detach, decay, sg in itertools.product(
        KINDS, (0.0, None, -0.25), (True, False), (True, False), ("atan", "sigmoid")
    )
    if not (kind == "if" and not decay)
]


@pytest.mark.parametrize("kind,v_reset,detach,decay,sg", EMU_CASES)
def test_generated_source_matches_reference_on_cpu(emulated_kernels, kind, v_reset, detach, decay, sg):
    """The emitted fp32 kernels, compiled for the CPU, reproduce reference.py (forward bit-exact)."""
    steps, shape = 5, (9, 11)
    n = 99
    x = _inputs(steps, shape, noncontiguous=False, seed=3)
    g = torch.Generator().manual_seed(4)
    v0 = torch.randn(shape, generator=g) * 0.3
    q = torch.tensor(0.37) if kind == "plif" else None
    grad_s, grad_vf, grad_vs = (
        torch.randn(x.shape, generator=g),
        torch.randn(shape, generator=g),
        torch.randn(x.shape, generator=g),
    )
    kw = dict(kind=kind, tau=2.0, decay_input=decay, v_threshold=1.0, v_reset=v_reset)
    s_ref, vf_ref, h_ref, vs_ref = reference.multistep_forward(x, v0, q, store_v_seq=True, **kw)
    gx_ref, gv_ref, gq_ref = reference.multistep_backward(
        grad_s, grad_vf, grad_vs, h_ref, v0, q, detach_reset=detach, surrogate=sg, alpha=SG_ALPHA[sg], **kw
    )

    fkey = source.ForwardKey(kind, v_reset is not None, decay or kind == "if", "fp32")
    nan = float("nan")
    spikes, h_seq, v_seq = torch.full_like(x, nan), torch.full_like(x, nan), torch.full_like(x, nan)
    v_final = torch.full_like(v0, nan)
    reset = 0.0 if v_reset is None else v_reset
    _emu_launch(
        emulated_kernels,
        fkey.name,
        n,
        (x, v0, q, spikes, h_seq, v_final, v_seq, ("ll", n), ("i", steps), 2.0, 1.0, reset),
    )
    assert torch.equal(spikes, s_ref) and torch.equal(h_seq, h_ref)
    assert torch.equal(v_final, vf_ref) and torch.equal(v_seq, vs_ref)

    bkey = source.BackwardKey(kind, v_reset is not None, decay or kind == "if", "fp32", detach, sg)
    c1, c2 = ops._sg_constants(sg, SG_ALPHA[sg])
    grad_x, grad_v = torch.full_like(x, float("nan")), torch.full_like(v0, float("nan"))
    partials = torch.full((2,), float("nan"))  # grid 2 x block 32 = two warps
    _emu_launch(
        emulated_kernels,
        bkey.name,
        n,
        (
            grad_s,
            grad_vf,
            grad_vs,
            h_seq,
            v0,
            q,
            grad_x,
            grad_v,
            partials,
            ("ll", n),
            ("i", steps),
            2.0,
            1.0,
            reset,
            float(c1),
            float(c2),
        ),
    )
    torch.testing.assert_close(grad_x, gx_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_v, gv_ref, rtol=1e-5, atol=1e-6)
    if kind == "plif":
        torch.testing.assert_close(partials.sum(), gq_ref, rtol=1e-5, atol=1e-5)


def test_every_specialization_compiles_with_cupy_nvrtc():
    """The runtime compiler (CuPy's NVRTC wrapper, same options as ops.compiled_kernel) accepts every kernel."""
    import os

    cupy = pytest.importorskip("cupy", reason="CuPy not installed (pip install -e .[cuda])")
    from cupy.cuda import compiler

    candidates = [os.path.join(os.path.dirname(cupy.__file__), "..", "nvidia", "cu13", "include")]
    candidates += [
        os.path.join(os.environ.get("CUDA_PATH", "/usr/local/cuda"), "include"),
        "/usr/local/cuda-13.0/include",
    ]
    include = next((c for c in candidates if os.path.exists(os.path.join(c, "cuda_fp16.h"))), None)
    if include is None:
        pytest.skip("no CUDA headers (cuda_fp16.h) found for NVRTC")
    keys_f, keys_b = source.all_forward_keys(), source.all_backward_keys()
    code = "\n".join([source.forward_source(k) for k in keys_f] + [source.backward_source(k) for k in keys_b])
    try:
        program = compiler._NVRTCProgram(code, "snnprune_all.cu")
    except Exception as err:  # NVRTC library missing
        pytest.skip(f"NVRTC unavailable: {err!r}")
    ptx, _ = program.compile(("--std=c++17", "-arch=compute_80", "-I" + include))
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    for key in keys_f + keys_b:
        assert f".entry {key.name}(" in ptx


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_op_launch_path_with_emulated_kernels(monkeypatch, emulated_kernels, kind, layout):
    """ops' real launch path (argument packing, layouts, autograd, PLIF partials) on CPU-compiled kernels."""
    import ctypes

    import numpy as np

    def launcher(key, n, args):
        ctype = {np.uint64: ctypes.c_void_p, np.int64: ctypes.c_longlong, np.int32: ctypes.c_int}
        cargs = [ctype.get(type(a), ctypes.c_float)(int(a) if type(a) in ctype else float(a)) for a in args]
        assert all(type(a) in (*ctype, np.float32) for a in args)
        fn = getattr(emulated_kernels, key.name)
        grid = ops.num_blocks(n)
        for b in range(grid):
            for t in range(ops.THREADS):
                emulated_kernels.snn_emu_set(b, ops.THREADS, t, grid)
                fn(*cargs)

    base = torch.randn(4 * 3, 5, 3, 3) * 1.5 + 0.4
    if layout == "contiguous":
        x = base.view(4, 3, 5, 3, 3)
    elif layout == "channels_last":
        x = base.to(memory_format=torch.channels_last).view(4, 3, 5, 3, 3)
    else:
        x = base.view(3, 4, 5, 3, 3).transpose(0, 1)
    v0 = torch.randn(x.shape[1:]) * 0.2
    grad_s, grad_vf = torch.randn(x.shape), torch.randn(x.shape[1:])
    outs = {}
    for mode in ("reference", "kernel"):
        monkeypatch.setattr(ops, "CPU_LAUNCHER", launcher if mode == "kernel" else None)
        xr = x.clone().requires_grad_(True) if layout != "channels_last" else x.detach().requires_grad_(True)
        vr = v0.clone().requires_grad_(True)
        w = torch.tensor(0.25, requires_grad=True)
        s, vf, vs = ops.multistep_neuron(
            xr,
            vr,
            w if kind == "plif" else None,
            kind=kind,
            v_reset=None if kind == "lif" else 0.0,
            store_v_seq=True,
        )
        ((s * grad_s).sum() + (vf * grad_vf).sum() + vs.sum()).backward()
        outs[mode] = (s, vf, vs, xr.grad, vr.grad, w.grad)
        xr.grad = None
    ref, ker = outs["reference"], outs["kernel"]
    assert torch.equal(ker[0], ref[0]) and torch.equal(ker[1], ref[1]) and torch.equal(ker[2], ref[2])
    for a, b in zip(ker[3:], ref[3:], strict=True):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
