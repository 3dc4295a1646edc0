"""Tests of snnprune.neuron: reference vs SpikingJelly 2.0.0, dispatch rules, op plumbing, CUDA source.

CPU tests pin the kernel math (``kernels/reference.py`` is line-by-line what the CUDA kernels compute)
against SpikingJelly's own neurons, run the generated CUDA source compiled as C++ (g++ emulation: several
blocks, several grid-stride iterations, fp32/fp16/bf16) through the op's real launch path, and replay the
GPU parity cases on the CPU. GPU tests (``@pytest.mark.gpu``) compare the fused kernels with SpikingJelly
and skip cleanly without CUDA or CuPy; their seeds are derived from the case, so a failure reproduces.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import re
import shutil
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load_script
from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate

import snnprune.neuron as nn_mod
from snnprune.neuron import cupy_runtime, nodes
from snnprune.neuron.kernels import ops, reference, source

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("if", "lif", "plif")
SG = {"atan": lambda: surrogate.ATan(alpha=2.0), "sigmoid": lambda: surrogate.Sigmoid(alpha=4.0)}
SG_ALPHA = {"atan": 2.0, "sigmoid": 4.0}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.fixture
def launches(monkeypatch):
    """Forward and backward kernel launches counted by a wrapper around ``ops.launch_kernel``."""
    counts = {"fwd": 0, "bwd": 0}
    launch = ops.launch_kernel

    def counting(key, units, args, device):
        counts["fwd" if isinstance(key, source.ForwardKey) else "bwd"] += 1
        launch(key, units, args, device)

    monkeypatch.setattr(ops, "launch_kernel", counting)
    return counts


def _seed(*case) -> int:
    """A seed derived from the test case (stable across processes, unlike hash() of strings)."""
    return zlib.crc32(repr(case).encode()) % 2**31


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
    seed = _seed(kind, v_reset, detach, decay, sg, steps)
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
    spikes, v_final, _, _ = reference.multistep_forward(x, v0, q, **kw)
    assert torch.equal(spikes, spikes_sj.detach())
    torch.testing.assert_close(v_final, v_sj.detach(), rtol=0, atol=1e-6)

    grad_x, _, grad_q = reference.multistep_backward(
        grad_s, grad_v, None, x, v0, q, detach_reset=detach, surrogate=sg, alpha=SG_ALPHA[sg], **kw
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
    spikes, _, _, _ = reference.multistep_forward(xf, v0.float(), q, **kw)
    assert torch.equal(spikes.double(), s.detach())
    grad_x, _, grad_q = reference.multistep_backward(
        grad_s.float(), None, None, xf, v0.float(), q, detach_reset=detach, surrogate="atan", alpha=2.0, **kw
    )
    torch.testing.assert_close(grad_x.double(), x.grad, rtol=1e-5, atol=1e-6)
    if kind == "plif":
        torch.testing.assert_close((grad_q * q * (1 - q)).double(), w.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_backward_uses_the_fp32_charge(dtype):
    """bf16/fp16 gradients are the fp32 computation on the same input values, rounded once at the end."""
    x = _inputs(8, (64, 33), noncontiguous=False, seed=11, dtype=dtype)
    g = torch.Generator().manual_seed(12)
    grad_s = torch.randn(x.shape, generator=g).to(dtype)
    kw = dict(kind="lif", tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0)
    bw = dict(detach_reset=False, surrogate="atan", alpha=2.0, **kw)
    v0 = torch.zeros(x.shape[1:])
    gx_half, _, _ = reference.multistep_backward(grad_s, None, None, x, v0, None, **bw)
    gx_fp32, _, _ = reference.multistep_backward(grad_s.float(), None, None, x.float(), v0, None, **bw)
    assert gx_half.dtype == dtype and torch.equal(gx_half, gx_fp32.to(dtype))


# ------------------------------------------------------------------------------ op plumbing (CPU)


@pytest.mark.parametrize("kind", KINDS)
def test_op_cpu_plumbing_and_layouts(kind):
    """multistep_neuron (CPU = reference) keeps strides, handles odd/non-contiguous inputs and both states."""
    w = torch.tensor(0.2, requires_grad=True) if kind == "plif" else None
    x_cl = torch.randn(3 * 2, 5, 3, 3).to(memory_format=torch.channels_last).view(3, 2, 5, 3, 3)
    assert ops.is_time_major_dense(x_cl) and not x_cl.is_contiguous()
    x_nc = torch.randn(5, 2, 3, 4).transpose(0, 1)
    assert not ops.is_time_major_dense(x_nc)
    for x in (x_cl, x_nc):
        x = x.clone().requires_grad_(True) if x is x_nc else x.requires_grad_(True)
        for v_init in (0.0, torch.zeros(x.shape[1:])):
            spikes, v_final, v_seq = ops.multistep_neuron(
                x, v_init, w, kind=kind, v_reset=None, store_v_seq=True, surrogate="sigmoid", alpha=4.0
            )
            assert spikes.shape == x.shape and v_final.shape == x.shape[1:] and v_seq.shape == x.shape
            if x is x_cl:
                assert spikes.stride() == x.stride()
            torch.testing.assert_close(v_seq[-1], v_final)
            (spikes.sum() + v_final.sum() + v_seq.sum()).backward()
            assert x.grad.shape == x.shape and torch.isfinite(x.grad).all()
    if kind == "plif":
        assert w.grad is not None and torch.isfinite(w.grad)


def test_eager_path_is_a_plain_autograd_function_and_no_grad_builds_nothing():
    x = torch.randn(4, 3, 5, requires_grad=True)
    s, _, _ = ops.multistep_neuron(x, 0.0, kind="lif")
    assert type(s.grad_fn).__name__ == "_MultiStepFunctionBackward"
    with torch.no_grad():
        s, v, _ = ops.multistep_neuron(x, 0.0, kind="lif")
    assert s.grad_fn is None and v.grad_fn is None
    s, _, _ = ops.multistep_neuron(x.detach(), 0.0, kind="lif")
    assert s.grad_fn is None


def test_scalar_and_tensor_initial_state_agree():
    x = torch.randn(5, 4, 6, requires_grad=True)
    grad = torch.randn(x.shape)
    outs = []
    for v_init in (-0.25, torch.full((4, 6), -0.25, requires_grad=True)):
        s, vf, _ = ops.multistep_neuron(x, v_init, kind="lif", v_reset=-0.25, detach_reset=False)
        (gx,) = torch.autograd.grad((s * grad).sum() + vf.sum(), x)
        outs.append((s, vf, gx))
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)


def test_custom_op_opcheck_and_compile_fullgraph():
    """Fake/autograd registrations are consistent (opcheck) and the op traces without graph breaks."""
    x = torch.randn(4, 3, 5, requires_grad=True)
    q = torch.tensor(0.4, requires_grad=True)
    for v_init, v0 in ((torch.zeros(3, 5), 0.0), (None, 0.5)):
        args = (x, v_init, v0, q, "plif", 2.0, True, 1.0, 0.0, False, "atan", 2.0, False)
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


def test_kernel_argument_checks_raise_one_clear_error():
    x = torch.randn(3, 4, 5)
    cfg = ops._Config("plif", 2.0, True, 1.0, 0.0, False, "atan", 2.0, False)
    with ops.kernel_hooks(lambda *a: None):
        with pytest.raises(ValueError, match=r"^fused neuron kernel: v_init is torch.float64 on cpu"):
            ops._forward_impl(x, torch.zeros(4, 5, dtype=torch.float64), 0.0, torch.tensor(0.5), cfg)
        with pytest.raises(
            ValueError, match=r"PLIF parameter is a torch.float32 tensor of 1 elements on meta"
        ):
            ops._forward_impl(x, None, 0.0, torch.tensor(0.5, device="meta"), cfg)
        with pytest.raises(ValueError, match="per-step layout"):
            ops._forward_impl(x, torch.zeros(5, 4).t(), 0.0, torch.tensor(0.5), cfg)
        with pytest.raises(ValueError, match="not time-major dense"):
            ops._forward_impl(x.transpose(0, 1), None, 0.0, torch.tensor(0.5), cfg)


def test_kernel_hooks_is_a_context_manager_that_restores():
    calls = []
    with ops.kernel_hooks(lambda key, blocks, units, args: calls.append(key), poison_outputs=True):
        assert ops.hooked_launcher_active()
        with ops.kernel_hooks(None):
            assert not ops.hooked_launcher_active()
        with torch.no_grad():
            s, _, _ = ops.multistep_neuron(torch.randn(2, 6), 0.0, kind="if")
        assert torch.isnan(s).all()  # the no-op launcher wrote nothing into the poisoned output
    assert not ops.hooked_launcher_active() and len(calls) == 1
    assert calls[0] == source.ForwardKey("if", True, True, "fp32", steps=2, vec=2, index32=True)


def test_launch_plan_and_traffic():
    x = torch.empty(10, dtype=torch.float16)
    assert ops.launch_plan(8, 4, [(x, 2), (None, 4)]) == (4, 2, True)
    assert ops.launch_plan(7, 4, [(x, 2)]) == (4, 1, True)  # odd N: one neuron per thread
    assert ops.launch_plan(8, 4, [(x[1:], 2)]) == (4, 1, True)  # misaligned pointer
    assert ops.launch_plan(8, 40, [(x, 2)]) == (0, 1, True)  # run-time T above MAX_STATIC_STEPS
    assert ops.launch_plan(8, 12, [(x, 2)]) == (12, 1, True)  # T > VEC2_MAX_STEPS: one neuron per thread
    assert ops.launch_plan(2**29, 4, [(x, 2)])[2] is False  # T * N >= 2**31: 64-bit indices
    t = ops.traffic_bytes(torch.float16, 4, training=True)
    assert t == {"bytes": 5 * 2 + 1.0, "floor_inference": 4, "floor_training": 10}
    t = ops.traffic_bytes(torch.float32, 4, training=False)
    assert t["bytes"] == 2 * 4 + 1.0 and t["floor_inference"] == 8


# ------------------------------------------------------------------------------ node classes (CPU)


@pytest.mark.parametrize(
    "ours,theirs,kwargs",
    [
        (nn_mod.IFNode, sj_neuron.IFNode, {}),
        (nn_mod.LIFNode, sj_neuron.LIFNode, {"tau": 3.0, "decay_input": False}),
        (nn_mod.ParametricLIFNode, sj_neuron.ParametricLIFNode, {"init_tau": 2.5}),
    ],
)
def test_nodes_are_drop_in_on_cpu(ours, theirs, kwargs, launches):
    a = ours(surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m", **kwargs)
    b = theirs(surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m", **kwargs)
    assert isinstance(a, theirs) and a.backend == "auto" and "backend=auto" in repr(a)
    assert a.state_dict().keys() == b.state_dict().keys()
    x = torch.randn(4, 2, 3, 5)
    assert not a.uses_cupy(x)  # auto on CPU -> SpikingJelly
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    torch.testing.assert_close(a.v, b.v, rtol=0, atol=0)
    assert launches == {"fwd": 0, "bwd": 0}
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
    monkeypatch.setattr(cupy_runtime, "import_cupy", lambda: (None, ImportError("No module named 'cupy'")))
    reason = node.cupy_unavailable_reason()
    assert "No module named 'cupy'" in reason and "pip install -e .[cuda]" in reason
    with pytest.raises(RuntimeError, match=r"pip install -e \.\[cuda\]"):
        cupy_runtime.ensure_cupy()
    with pytest.raises(ValueError, match="kind must be one of"):
        ops.multistep_neuron(torch.randn(2, 3), torch.zeros(3), kind="izhikevich")
    with pytest.raises(ValueError, match="needs the parameter w"):
        ops.multistep_neuron(torch.randn(2, 3), torch.zeros(3), kind="plif")


def test_probe_error_reports_a_compile_failure(monkeypatch):
    def broken(device_index, key):
        raise RuntimeError(
            "NVRTC_ERROR_COMPILATION (6)\ncatastrophic error: cannot open source file cuda_fp16.h"
        )

    monkeypatch.setattr(ops, "compiled_kernel", broken)
    monkeypatch.setattr(ops, "_PROBES", {})
    err = ops.probe_error(torch.device("cuda", 3))
    assert err == "RuntimeError: NVRTC_ERROR_COMPILATION (6)"
    assert ops._PROBES == {3: err}


def test_auto_falls_back_to_spikingjelly_with_one_warning_when_kernels_do_not_compile(monkeypatch):
    """backend='auto': a failing probe compile warns once (saying why) and runs SpikingJelly's code;
    backend='cupy' raises with the same reason."""
    x = torch.randn(3, 2, 5)
    err = "RuntimeError: NVRTC_ERROR_COMPILATION (6)"

    def reason(self, x_seq=None):  # pretend the tensor is on a GPU with CuPy whose compile fails
        return f"the fused kernels do not compile on cuda:0 ({err}); use backend='spikingjelly'"

    monkeypatch.setattr(nodes._FusedMultiStepMixin, "cupy_unavailable_reason", reason)
    monkeypatch.setattr(nodes, "_WARNED", set())
    node = nn_mod.LIFNode(step_mode="m", surrogate_function=surrogate.ATan())
    ref = sj_neuron.LIFNode(step_mode="m", surrogate_function=surrogate.ATan())
    with pytest.warns(
        RuntimeWarning, match=r"LIFNode\(backend='auto'\) runs SpikingJelly's implementation: .*NVRTC"
    ):
        out = node(x)
    assert torch.equal(out, ref(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sj_functional.reset_net(node)
        node(x)  # the second call does not warn again
    node = nn_mod.LIFNode(step_mode="m", surrogate_function=surrogate.ATan(), backend="cupy")
    with pytest.raises(RuntimeError, match="do not compile on cuda:0"):
        node(x)


def test_import_does_not_need_cupy():
    code = "import sys, snnprune, snnprune.neuron; assert 'cupy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------------ parity cases (GPU, replayed on CPU)


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
        tuple(DTYPES),
        (1, 4, 8),
        (False, True),
    )
    if not (kind == "if" and not decay)
]


def _parity_case(case, device, seed):
    """The GPU parity check of one case; ``device="cpu"`` replays it through the op's CPU path."""
    kind, v_reset, detach, decay, sg, dname, steps, nonc = case
    dtype = DTYPES[dname]
    shape = (3, 17, 5, 7) if steps != 4 else (2, 33, 9)
    x = _inputs(steps, shape, noncontiguous=nonc, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1)
    grad_s = torch.randn(x.shape, generator=g).to(dtype)
    v0 = torch.full(shape, 0.0 if v_reset is None else v_reset)
    w_cpu = torch.tensor(0.3, requires_grad=True)

    x_ref = x.clone().requires_grad_(True)
    s_ref, v_ref, _ = _sj_functional(
        kind, x_ref, v0, w_cpu, decay=decay, v_reset=v_reset, detach=detach, sg=sg
    )
    (s_ref.float() * grad_s.float()).sum().backward()

    x_dev = x.to(device).requires_grad_(True)
    w_dev = w_cpu.detach().to(device).requires_grad_(True)
    s, v_final, _ = ops.multistep_neuron(
        x_dev,
        0.0 if v_reset is None else v_reset,
        w_dev if kind == "plif" else None,
        kind=kind,
        decay_input=decay,
        v_reset=v_reset,
        detach_reset=detach,
        surrogate=sg,
        alpha=SG_ALPHA[sg],
    )
    (s.float() * grad_s.to(device).float()).sum().backward()
    assert s.dtype == dtype and s.shape == x.shape
    assert torch.equal(s.cpu(), s_ref.detach())
    torch.testing.assert_close(v_final.cpu(), v_ref.detach().float(), rtol=0, atol=1e-6)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(x_dev.grad.cpu().float(), x_ref.grad.float(), **tol)
    if kind == "plif":
        scale = float(grad_s.float().abs().sum())
        atol = 1e-6 * scale if dtype == torch.float32 else 1e-2 * scale**0.5
        torch.testing.assert_close(w_dev.grad.cpu(), w_cpu.grad, rtol=tol["rtol"], atol=atol)


@pytest.mark.parametrize("dname", list(DTYPES))
def test_gpu_parity_cases_replayed_on_cpu(dname):
    """Every GPU parity case of one dtype through the op's CPU path (reference math)."""
    failures = []
    for case in (c for c in GPU_CASES if c[5] == dname):
        for rep in range(1):
            try:
                _parity_case(case, "cpu", _seed(case, rep))
            except AssertionError as err:
                failures.append(f"{case} rep {rep}: {str(err).splitlines()[0]}")
    assert not failures, f"{len(failures)} failing cases, first: {failures[:3]}"


# ------------------------------------------------------------------------------ CUDA source: nvcc / ptxas


def _representative_keys():
    """Every semantic variant (fp16, the common launch: T=4, two neurons per thread, 32-bit indices), and
    every launch variant (run-time/compile-time T, vec, index width) of one semantic variant per dtype."""
    keys_f = [k for k in source.all_forward_keys(steps=(4,), vec=(2,)) if k.dtype == "fp16" and k.index32]
    keys_b = [k for k in source.all_backward_keys(steps=(4,), vec=(2,)) if k.dtype == "fp16" and k.index32]
    assert len({k.name for k in keys_f}) == len(keys_f) == 10
    assert len({k.name for k in keys_b}) == len(keys_b) == 4 * len(keys_f)
    for dname in DTYPES:
        for steps, vec, idx32 in itertools.product((0, 1, source.MAX_STATIC_STEPS), (1, 2), (True, False)):
            keys_f.append(source.ForwardKey("plif", False, True, dname, steps, vec, idx32))
            keys_b.append(source.BackwardKey("plif", False, True, dname, False, "sigmoid", steps, vec, idx32))
    return keys_f, keys_b


@pytest.mark.skipif(
    shutil.which("nvcc") is None, reason="nvcc not found: cannot compile the generated CUDA source"
)
def test_every_specialization_compiles_with_nvcc(tmp_path):
    keys_f, keys_b = _representative_keys()
    code = "\n".join([source.forward_source(k) for k in keys_f] + [source.backward_source(k) for k in keys_b])
    assert "__expf" not in code and "use_fast_math" not in code
    cu = tmp_path / "all.cu"
    cu.write_text(code)
    result = subprocess.run(
        ["nvcc", "--ptx", "-arch=sm_80", "-Werror", "all-warnings", "-o", str(tmp_path / "all.ptx"), str(cu)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ptx = (tmp_path / "all.ptx").read_text()
    for key in keys_f + keys_b:
        assert f".entry {key.name}(" in ptx


@pytest.mark.skipif(
    shutil.which("nvcc") is None, reason="nvcc not found: cannot compile the generated CUDA source"
)
def test_backward_ptx_divides_only_to_recompute_the_lif_charge(tmp_path):
    """Static PTX count (sm_80, no timing): a backward at compile-time T has one ``div.rn.f32`` per step and
    neuron for LIF (the recomputed charge) and none for IF and PLIF; reciprocals are ``rcp.rn.f32``."""
    keys = [
        source.BackwardKey(kind, hard, True, "fp16", False, sg, 4, 2, True)
        for kind in KINDS
        for hard in (True, False)
        for sg in ("atan", "sigmoid")
    ]
    cu = tmp_path / "bwd.cu"
    cu.write_text("\n".join(source.backward_source(k) for k in keys))
    cmd = ["nvcc", "--ptx", "-arch=sm_80", "-o", str(tmp_path / "bwd.ptx"), str(cu)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    entries = dict(e.split("(", 1) for e in (tmp_path / "bwd.ptx").read_text().split(".entry ")[1:])
    for key in keys:
        ptx = entries[key.name]
        divs = re.findall(r"\bdiv\.[\w.]*f32", ptx)
        assert len(divs) == (4 * 2 if key.kind == "lif" else 0), (key.name, divs)
        assert set(re.findall(r"\brcp\.[\w.]*f32", ptx)) == {"rcp.rn.f32"}, key.name


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found: cannot run ptxas")
def test_kernel_resources_script_reports_no_spills(tmp_path):
    """scripts/neuron_kernel_resources.py: registers and spills per specialization from ptxas (sm_90)."""
    out = tmp_path / "res.json"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "neuron_kernel_resources.py"),
            "--output",
            str(out),
            "--quick",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())["kernels"]
    assert len(rows) >= 12 and "| family |" in r.stdout
    for row in rows:
        assert row["spill_stores"] == 0 and row["spill_loads"] == 0 and row["stack"] == 0, row
        assert 0 < row["registers"] <= 96, row


# ------------------------------------------------------------------------------ CPU emulation of the CUDA source

_EMU_PRELUDE = r"""
#include <cmath>
#include <cstdint>
#include <cstring>
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
struct float2 { float x, y; };
static inline float2 make_float2(float a, float b) { return float2{a, b}; }
// host versions of the half intrinsics (round to nearest even, as __float2half_rn / __float2bfloat16_rn)
struct __half { _Float16 v; };
struct __half2 { __half x, y; };
static inline float __half2float(__half h) { return (float)h.v; }
static inline __half __float2half_rn(float f) { return __half{(_Float16)f}; }
static inline float __low2float(__half2 p) { return (float)p.x.v; }
static inline float __high2float(__half2 p) { return (float)p.y.v; }
static inline __half2 __floats2half2_rn(float a, float b) { return __half2{__float2half_rn(a), __float2half_rn(b)}; }
struct __nv_bfloat16 { uint16_t bits; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
static inline float __bfloat162float(__nv_bfloat16 b) {
  uint32_t u = (uint32_t)b.bits << 16; float f; std::memcpy(&f, &u, 4); return f;
}
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u; std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(uint16_t)((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return __nv_bfloat16{(uint16_t)(u >> 16)};
}
static inline float __low2float(__nv_bfloat162 p) { return __bfloat162float(p.x); }
static inline float __high2float(__nv_bfloat162 p) { return __bfloat162float(p.y); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
#define SNNPRUNE_WARP_SUM_STORE
static inline void snnprune_warp_sum_store(float v, float* out) {
  // sequential stand-in for the shuffles: threads run in order, lane 0 of each warp writes first
  long long w = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if ((threadIdx.x & 31) == 0) out[w] = v; else out[w] += v;
}
"""


class _Emulator:
    """Generated kernels compiled with g++ (one shared object per key, built on first use); each gets a
    driver ``emu_<name>(grid, block, args...)`` that runs every block and thread in order."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.fns = folder, {}

    def __call__(self, key, blocks: int, units: int, args: tuple, block: int | None = None) -> None:
        fn = self.fns.get(key.name) or self.build([key])
        conv = {
            np.uint64: ctypes.c_void_p,
            np.int64: ctypes.c_longlong,
            np.int32: ctypes.c_int,
            np.float32: ctypes.c_float,
        }
        assert all(type(a) in conv for a in args)
        cargs = [conv[type(a)](int(a) if type(a) is not np.float32 else float(a)) for a in args]
        fn(ctypes.c_uint(blocks), ctypes.c_uint(block or ops.THREADS), *cargs)

    def build(self, keys):
        """Compile ``keys`` (not built yet) into one shared object; returns the driver of the last key."""
        keys = list({k.name: k for k in keys if k.name not in self.fns}.values())
        parts = [_EMU_PRELUDE]
        for key in keys:
            code = (
                source.forward_source(key)
                if isinstance(key, source.ForwardKey)
                else source.backward_source(key)
            )
            code = re.sub(r"#include <cuda_\w+\.h>", "", code)
            head = code[code.index(key.name + "(") :]
            params = head[len(key.name) + 1 : head.index(") {")]
            names = [p.split()[-1] for p in params.split(",")]
            parts.append(code)
            parts.append(
                f'extern "C" void emu_{key.name}(unsigned grid, unsigned block, {params}) {{\n'
                "  for (unsigned b = 0; b < grid; ++b) for (unsigned t = 0; t < block; ++t) {\n"
                "    blockIdx.x = b; blockDim.x = block; threadIdx.x = t; gridDim.x = grid;\n"
                f"    {key.name}({', '.join(names)});\n  }}\n}}\n"
            )
        if keys:
            stem = f"lib{len(list(self.folder.iterdir()))}"
            cpp, so = self.folder / f"{stem}.cpp", self.folder / f"{stem}.so"
            cpp.write_text("\n".join(parts))
            cmd = [
                "g++",
                "-O1",
                "-ffp-contract=off",
                "-fno-fast-math",
                "-shared",
                "-fPIC",
                "-o",
                str(so),
                str(cpp),
            ]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr[-4000:]
            lib = ctypes.CDLL(str(so))
            for key in keys:
                self.fns[key.name] = getattr(lib, f"emu_{key.name}")
        return self.fns[keys[-1].name] if keys else None


def _launch_keys(kind, dname, steps, vecs, *, v_reset=0.0, decay=True, detach=False, sg="atan"):
    hard, dec = v_reset is not None, decay or kind == "if"
    return [
        key
        for vec in vecs
        for key in (
            source.ForwardKey(kind, hard, dec, dname, steps, vec, True),
            source.BackwardKey(kind, hard, dec, dname, detach, sg, steps, vec, True),
        )
    ]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """All specializations the emulation tests launch, compiled by one g++ run."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: cannot emulate the CUDA source on the CPU")
    emu = _Emulator(tmp_path_factory.mktemp("emu"))
    keys = [k for case in EMU_CASES for k in _emu_keys(case)]
    for kind, dname in OP_CASES:
        keys += _launch_keys(kind, dname, 4, (1, 2), v_reset=None if kind == "lif" else 0.0)
    for case in EMU_PARITY_CASES:
        kind, v_reset, detach, decay, sg, dname, steps, _ = case
        keys += _launch_keys(kind, dname, steps, (2,), v_reset=v_reset, decay=decay, detach=detach, sg=sg)
    for kind in KINDS:
        keys += _launch_keys(kind, "fp32", 4, (2,))
    for kind, _, decay in TAU_CASES:
        keys += _launch_keys(kind, "fp32", 5, (1,), v_reset=None, decay=decay)
    emu.build(keys)
    return emu


EMU_CASES = [
    (kind, v_reset, detach, decay, sg)
    for kind, v_reset, detach, decay, sg in itertools.product(
        KINDS, (0.0, None, -0.25), (True, False), (True, False), ("atan", "sigmoid")
    )
    if not (kind == "if" and not decay)
]
# specializations: (dtype, steps (0 = run-time T), vec, index32, T); every case runs the first (the common
# launch) and one of the others in turn (they differ only in loads, stores and loop structure)
EMU_SPECS = [
    ("fp32", 5, 2, True, 5),
    ("fp32", 0, 1, False, 5),
    ("fp16", 5, 1, True, 5),
    ("bf16", 0, 2, True, 11),
]


def _emu_specs(case):
    i = EMU_CASES.index(case)
    return [EMU_SPECS[0], EMU_SPECS[1 + i % 3]]


def _emu_keys(case):
    kind, v_reset, detach, decay, sg = case
    hard, dec = v_reset is not None, decay or kind == "if"
    return [
        key
        for dname, static, vec, idx32, _ in _emu_specs(case)
        for key in (
            source.ForwardKey(kind, hard, dec, dname, static, vec, idx32),
            source.BackwardKey(kind, hard, dec, dname, detach, sg, static, vec, idx32),
        )
    ]


@pytest.mark.parametrize("kind,v_reset,detach,decay,sg", EMU_CASES)
def test_generated_source_matches_reference_on_cpu(emulator, kind, v_reset, detach, decay, sg):
    """The emitted kernels, compiled for the CPU and run as 3 blocks x 64 threads (several grid-stride
    iterations), reproduce reference.py: forward bit-exact, gradients to rounding (fp32/fp16/bf16, one and
    two neurons per thread, compile-time and run-time T with chunked recomputation)."""
    for dname, static, vec, idx32, steps in _emu_specs((kind, v_reset, detach, decay, sg)):
        dtype = DTYPES[dname]
        shape = (10, 99) if vec == 2 else (9, 111)  # 990 / 999 neurons >> 3 * 64 threads
        x = _inputs(steps, shape, noncontiguous=False, seed=_seed(dname, steps), dtype=dtype)
        g = torch.Generator().manual_seed(4)
        v0 = torch.randn(shape, generator=g) * 0.3
        q = torch.tensor(0.37) if kind == "plif" else None
        grad_s = torch.randn(x.shape, generator=g).to(dtype)
        grad_vf, grad_vs = torch.randn(shape, generator=g), torch.randn(x.shape, generator=g)
        kw = dict(kind=kind, tau=2.0, decay_input=decay, v_threshold=1.0, v_reset=v_reset)
        s_ref, vf_ref, _, vs_ref = reference.multistep_forward(x, v0, q, store_v_seq=True, **kw)
        bw = dict(detach_reset=detach, surrogate=sg, alpha=SG_ALPHA[sg], **kw)
        gx_ref, gv_ref, gq_ref = reference.multistep_backward(grad_s, grad_vf, grad_vs, x, v0, q, **bw)
        n = v0.numel()
        reset = np.float32(0.0 if v_reset is None else v_reset)
        p = ops._ptr
        hard, dec = v_reset is not None, decay or kind == "if"

        fkey = source.ForwardKey(kind, hard, dec, dname, static, vec, idx32)
        nan = float("nan")
        spikes, v_seq, v_final = (
            torch.full_like(x, nan),
            torch.full_like(x, nan, dtype=torch.float32),
            torch.full_like(v0, nan),
        )
        common = (np.int64(n), np.int32(steps), np.float32(2.0), np.float32(1.0), reset)
        emulator(
            fkey, 3, 0, (p(x), p(v0), p(q), p(spikes), p(v_final), p(v_seq), *common, np.float32(0)), block=64
        )
        assert torch.equal(spikes, s_ref), (dname, static, vec)
        assert torch.equal(v_final, vf_ref) and torch.equal(v_seq, vs_ref), (dname, static, vec)

        bkey = source.BackwardKey(kind, hard, dec, dname, detach, sg, static, vec, idx32)
        c1, c2 = ops._sg_constants(sg, SG_ALPHA[sg])
        grad_x, grad_v = torch.full_like(x, nan), torch.full_like(v0, nan)
        partials = torch.full((6,), nan)  # 3 blocks x 64 threads = 6 warps
        args = (p(grad_s), p(grad_vf), p(grad_vs), p(x), p(v0), p(q), p(grad_x), p(grad_v), p(partials))
        emulator(bkey, 3, 0, (*args, *common, np.float32(0), c1, c2), block=64)
        tol = {
            "fp32": dict(rtol=1e-5, atol=1e-6),
            "fp16": dict(rtol=2**-10, atol=1e-6),
            "bf16": dict(rtol=2**-7, atol=1e-6),
        }[dname]  # 1 ulp
        torch.testing.assert_close(
            grad_x, gx_ref, **tol, msg=lambda m, tag=f"{dname} vec{vec} T{static}": f"{tag}: {m}"
        )
        torch.testing.assert_close(grad_v, gv_ref, rtol=1e-5, atol=1e-6)
        if kind == "plif":
            torch.testing.assert_close(partials.sum(), gq_ref, rtol=1e-4, atol=1e-4)


OP_CASES = [(kind, "fp32") for kind in KINDS] + [("plif", "fp16"), ("lif", "bf16")]


@pytest.mark.parametrize("kind,dname", OP_CASES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_op_launch_path_with_emulated_kernels(emulator, kind, dname, layout):
    """ops' real launch path (argument packing, layouts, autograd, PLIF partials) on CPU-compiled kernels
    equals the op's reference path (T=4: compile-time T; odd and even N: one and two neurons per thread)."""
    dtype = DTYPES[dname]
    base = torch.randn(4 * 3, 5, 3, 3) * 1.5 + 0.4
    if layout == "contiguous":
        x = base.view(4, 3, 5, 3, 3)
    elif layout == "channels_last":
        x = base.to(memory_format=torch.channels_last).view(4, 3, 5, 3, 3)
    else:
        x = base.view(3, 4, 5, 3, 3).transpose(0, 1)
    if layout == "contiguous":
        x = x[..., :2]  # 3 * 5 * 3 * 2 = 90 neurons per step: even N
    x = x.to(dtype)
    v0 = torch.randn(x.shape[1:]) * 0.2
    grad_s, grad_vf = torch.randn(x.shape).to(dtype), torch.randn(x.shape[1:])
    outs = {}
    for mode in ("reference", "kernel"):
        with ops.kernel_hooks(emulator if mode == "kernel" else None, poison_outputs=True):
            xr = x.detach().clone().requires_grad_(True)
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
            ((s.float() * grad_s.float()).sum() + (vf * grad_vf).sum() + vs.sum()).backward()
            outs[mode] = (s, vf, vs, xr.grad, vr.grad, w.grad)
    ref, ker = outs["reference"], outs["kernel"]
    assert torch.equal(ker[0], ref[0]) and torch.equal(ker[1], ref[1]) and torch.equal(ker[2], ref[2])
    for a, b in zip(ker[3:], ref[3:], strict=True):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a.float(), b.float(), rtol=1e-5, atol=1e-5)


EMU_PARITY_CASES = [c for c in GPU_CASES if c[2] is False and c[4] == "atan" and c[7] is False and c[6] == 4]


def test_gpu_parity_cases_replayed_on_emulated_kernels(emulator, launches):
    """A sample of the GPU parity cases (all dtypes) through the emulated CUDA kernels, same tolerances."""
    cases = EMU_PARITY_CASES
    assert len(cases) == 5 * 2 * 3
    with ops.kernel_hooks(emulator, poison_outputs=True):
        for case in cases:
            _parity_case(case, "cpu", _seed(case))
    assert launches == {"fwd": len(cases), "bwd": len(cases)}


@pytest.mark.parametrize("cls", [nn_mod.IFNode, nn_mod.LIFNode, nn_mod.ParametricLIFNode])
def test_node_fused_path_with_emulated_kernels_matches_spikingjelly(emulator, cls, launches):
    """The node's fused path (scalar state after reset, tensor state across calls, v_seq) on emulated kernels."""
    kw = dict(step_mode="m", surrogate_function=surrogate.ATan(), store_v_seq=True)
    ours, theirs = cls(backend="cupy", **kw), getattr(sj_neuron, cls.__name__)(**kw)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 2, 3, 6) + 0.5
    with ops.kernel_hooks(emulator):
        for _ in range(2):  # second call continues from the stored fp32 state
            xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            sa, sb = ours(xa), theirs(xb)
            assert torch.equal(sa, sb)
            torch.testing.assert_close(ours.v, theirs.v, rtol=0, atol=1e-6)
            torch.testing.assert_close(ours.v_seq, theirs.v_seq, rtol=0, atol=1e-6)
            sa.sum().backward()
            sb.sum().backward()
            torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)
            ours.v, theirs.v = ours.v.detach(), theirs.v.detach()
        assert launches == {"fwd": 2, "bwd": 2}
        sj_functional.reset_net(ours)
        assert ours.v == 0.0


TAU_CASES = list(itertools.product(("lif", "plif"), (3.0, 1.7, 1.3), (True, False)))


@pytest.mark.parametrize("kind,tau,decay", TAU_CASES)
def test_backward_without_division_matches_spikingjelly_at_inexact_tau(emulator, kind, tau, decay):
    """At a tau whose reciprocal is not a power of two (1/tau != 1 - 1/tau, unlike tau = 2), the op's
    reference path and the emulated kernels both match SpikingJelly's neuron; the kernel's input gradient
    equals the reference's bit for bit (fp32, atan: same operations in the same order)."""
    kw = dict(step_mode="m", surrogate_function=surrogate.ATan(), decay_input=decay, v_reset=None)
    theirs = (
        sj_neuron.LIFNode(tau=tau, **kw) if kind == "lif" else sj_neuron.ParametricLIFNode(init_tau=tau, **kw)
    )
    x = _inputs(5, (6, 9), noncontiguous=False, seed=_seed(kind, tau, decay))
    g = torch.Generator().manual_seed(3)
    grad_s, grad_v = torch.randn(x.shape, generator=g), torch.randn(x.shape[1:], generator=g)
    x_sj = x.clone().requires_grad_(True)
    s_sj = theirs(x_sj)
    ((s_sj * grad_s).sum() + (theirs.v * grad_v).sum()).backward()
    grads = {}
    for mode in ("reference", "kernel"):
        with ops.kernel_hooks(emulator if mode == "kernel" else None, poison_outputs=True):
            xr = x.clone().requires_grad_(True)
            w = theirs.w.detach().clone().requires_grad_(True) if kind == "plif" else None
            s, vf, _ = ops.multistep_neuron(
                xr, 0.0, w, kind=kind, tau=tau, decay_input=decay, v_reset=None, surrogate="atan"
            )
            ((s * grad_s).sum() + (vf * grad_v).sum()).backward()
        assert torch.equal(s, s_sj.detach()), mode
        torch.testing.assert_close(
            xr.grad, x_sj.grad, rtol=1e-5, atol=1e-6, msg=lambda m, mode=mode: f"{mode}: {m}"
        )
        if kind == "plif":
            scale = float(grad_s.abs().sum() + grad_v.abs().sum())
            torch.testing.assert_close(w.grad, theirs.w.grad, rtol=1e-5, atol=1e-6 * scale)
        grads[mode] = xr.grad
    assert torch.equal(grads["kernel"], grads["reference"])


def _without_comments(code: str) -> str:
    return re.sub(r"//[^\n]*", "", code)


def test_backward_source_divides_only_in_the_recomputed_charge():
    """The reverse loop of every backward specialization has no division (no ``/``, no ``__fdiv``); the
    only division left is the forward's own LIF charge, recomputed so that ``h`` stays bit-exact."""
    keys = source.all_backward_keys(steps=(0, 4), vec=(1, 2))
    for key in keys:
        code = source.backward_source(key).replace(source._prologue(key), "")  # (integer N / vec)
        body = _without_comments(code).replace(source._charge(key), "CHARGE")
        assert "/" not in body and "__fdiv" not in body, key.name
        assert ("CHARGE" in body) and ("__fdiv_rn" in source._charge(key)) == (key.kind == "lif"), key.name
    assert sum("__frcp_rn(tau)" in source.backward_source(k) for k in keys) == sum(
        k.kind == "lif" for k in keys
    )


def test_every_specialization_compiles_with_cupy_nvrtc():
    """The runtime compiler (CuPy's NVRTC wrapper, ops.cuda_compile_options) accepts every kernel."""
    cupy = pytest.importorskip("cupy", reason="CuPy not installed (pip install -e .[cuda])")
    from cupy.cuda import compiler

    options = ops.cuda_compile_options()
    if not any(o.startswith("-I") for o in options):
        pytest.skip("no CUDA headers (cuda_fp16.h) found for NVRTC")
    assert cupy is not None
    keys_f, keys_b = _representative_keys()
    code = "\n".join([source.forward_source(k) for k in keys_f] + [source.backward_source(k) for k in keys_b])
    try:
        program = compiler._NVRTCProgram(code, "snnprune_all.cu")
    except Exception as err:  # NVRTC library missing
        pytest.skip(f"NVRTC unavailable: {err!r}")
    ptx, _ = program.compile((*options, "-arch=compute_80"))
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    for key in keys_f + keys_b:
        assert f".entry {key.name}(" in ptx


# ------------------------------------------------------------------------------ GPU tests


def _need_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not cupy_runtime.cupy_available():
        pytest.skip(f"CuPy not importable ({cupy_runtime.cupy_import_error()!r}); pip install -e .[cuda]")


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: "-".join(map(str, c)))
def test_gpu_kernel_matches_spikingjelly(case, launches):
    _need_gpu()
    with ops.kernel_hooks(poison_outputs=True):
        _parity_case(case, "cuda", _seed(case))
        torch.cuda.synchronize()
    assert launches == {"fwd": 1, "bwd": 1}


def _reference_on(x, v_init, kind, grad, **kw):
    """(spikes, v_final, grad_x) of reference.py on x's device (pure torch, so it also runs on CUDA)."""
    s, vf, _, _ = reference.multistep_forward(
        x, v_init, None, kind=kind, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0
    )
    gx, _, _ = reference.multistep_backward(
        grad, None, None, x, v_init, None, kind=kind, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
        detach_reset=True, surrogate="atan", alpha=2.0,
    )  # fmt: skip
    return s, vf, gx


@pytest.mark.gpu
@pytest.mark.parametrize("n", [3 * 2**21 + 1, 5 * 2**21 + 2])  # odd: 1 neuron/thread; even: 2 per thread
def test_gpu_large_n_grid_stride(n):
    """N > 2**21 neurons: every thread runs several grid-stride iterations."""
    _need_gpu()
    g = torch.Generator().manual_seed(_seed("large", n))
    x = (torch.randn(2, n, generator=g) + 0.5).cuda().requires_grad_(True)
    grad = torch.randn(2, n, generator=g).cuda()
    with ops.kernel_hooks(poison_outputs=True):
        s, vf, _ = ops.multistep_neuron(x, 0.0, kind="lif", detach_reset=True)
        (gx,) = torch.autograd.grad(s, x, grad)
    rs, rvf, rgx = _reference_on(x.detach(), torch.zeros(n, device="cuda"), "lif", grad)
    assert torch.equal(s, rs) and torch.equal(vf, rvf)
    torch.testing.assert_close(gx, rgx, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_gpu_channels_last_side_stream_and_second_device():
    _need_gpu()
    g = torch.Generator().manual_seed(_seed("layouts"))
    base = torch.randn(4 * 2, 8, 5, 6, generator=g) + 0.5
    devices = ["cuda:0"] + (["cuda:1"] if torch.cuda.device_count() > 1 else [])
    for dev in devices:
        x = base.to(dev).to(memory_format=torch.channels_last).view(4, 2, 8, 5, 6).requires_grad_(True)
        assert ops.is_time_major_dense(x) and not x.is_contiguous()
        grad = torch.randn(x.shape, generator=g).to(dev)
        ref = _reference_on(
            x.detach().contiguous(), torch.zeros(x.shape[1:], device=dev), "if", grad.contiguous()
        )
        stream = torch.cuda.Stream(device=dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.device(dev), torch.cuda.stream(stream):
            s, vf, _ = ops.multistep_neuron(x, 0.0, kind="if", detach_reset=True)
            (gx,) = torch.autograd.grad(s, x, grad)
        torch.cuda.current_stream(dev).wait_stream(stream)
        torch.cuda.synchronize(dev)
        assert s.stride() == x.stride() and s.device == x.device
        assert torch.equal(s.contiguous(), ref[0]) and torch.equal(vf, ref[1])
        torch.testing.assert_close(gx.contiguous(), ref[2], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_gpu_plif_parameter_on_another_device_is_moved():
    _need_gpu()
    x = torch.randn(3, 4, 8, device="cuda", requires_grad=True)
    w = torch.tensor(0.3, requires_grad=True)  # stays on the CPU
    s, _, _ = ops.multistep_neuron(x, 0.0, w, kind="plif")
    s.sum().backward()
    assert w.grad is not None and w.grad.device.type == "cpu" and torch.isfinite(w.grad)


@pytest.mark.gpu
def test_gpu_compile_with_cuda_graphs_matches_eager():
    """torch.compile(mode='reduce-overhead') captures the custom ops in a CUDA graph; replays are correct."""
    _need_gpu()
    torch.manual_seed(_seed("graphs"))
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).cuda()
    node = nn_mod.LIFNode(step_mode="m", surrogate_function=surrogate.ATan(), backend="cupy").cuda()

    def step(x):
        sj_functional.reset_net(node)
        y = conv(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        return node(y).sum()

    compiled = torch.compile(step, mode="reduce-overhead")
    for i in range(4):
        x = torch.randn(4, 2, 3, 8, 8, device="cuda", generator=torch.Generator("cuda").manual_seed(i))
        conv.zero_grad(set_to_none=True)
        out = compiled(x)
        out.backward()
        grad_c = conv.weight.grad.clone()
        conv.zero_grad(set_to_none=True)
        ref = step(x)
        ref.backward()
        # the compiled conv may round differently: allow a few spikes to flip at the threshold
        torch.testing.assert_close(out, ref, rtol=0, atol=4)
        torch.testing.assert_close(grad_c, conv.weight.grad, rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("amp", [torch.float16, torch.bfloat16])
def test_gpu_autocast_runs_fused_kernel_with_fp32_state(amp, launches):
    _need_gpu()
    torch.manual_seed(_seed("autocast", str(amp)))
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).cuda()
    node = nn_mod.IFNode(step_mode="m", surrogate_function=surrogate.ATan(), backend="cupy").cuda()
    x = torch.randn(4, 2, 3, 8, 8, device="cuda")
    with torch.autocast("cuda", dtype=amp):
        y = conv(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        s = node(y)
    assert launches["fwd"] == 1
    assert y.dtype == amp and s.dtype == amp and node.v.dtype == torch.float32
    s.float().sum().backward()
    assert torch.isfinite(conv.weight.grad).all()
    ref = reference.multistep_forward(
        y.detach(),
        torch.zeros(y.shape[1:], device="cuda"),
        None,
        kind="if",
        tau=2.0,
        decay_input=True,
        v_threshold=1.0,
        v_reset=0.0,
    )
    assert torch.equal(s, ref[0])


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [nn_mod.IFNode, nn_mod.LIFNode, nn_mod.ParametricLIFNode])
def test_gpu_node_uses_kernel_and_keeps_state(cls, launches):
    _need_gpu()
    node = cls(step_mode="m", surrogate_function=surrogate.ATan(), backend="cupy", store_v_seq=True).cuda()
    x = torch.randn(
        4, 2, 3, 5, device="cuda", generator=torch.Generator("cuda").manual_seed(_seed(cls.__name__))
    )
    s = node(x)
    assert launches["fwd"] == 1 and s.shape == x.shape
    assert node.v.dtype == torch.float32 and node.v_seq.shape == x.shape
    torch.testing.assert_close(node.v_seq[-1], node.v)
    node(x)  # continues from the stored state
    sj_functional.reset_net(node)
    assert node.v == 0.0 and node.v_seq is None


@pytest.mark.gpu
def test_gpu_sew_resnet18_cupy_matches_spikingjelly(launches):
    _need_gpu()
    models = pytest.importorskip("models")
    torch.manual_seed(_seed("sew"))
    kw = dict(num_classes=10, in_channels=3, T=4, neuron="if", stem="small", width=8)
    ref = models.create_model("sew_resnet18", neuron_backend="spikingjelly", **kw).cuda()
    ours = models.create_model("sew_resnet18", neuron_backend="cupy", **kw).cuda()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 16, 16, device="cuda")
    out_ref, out = ref(x), ours(x)
    assert launches["fwd"] > 0
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-4)
    out_ref.square().sum().backward()
    out.square().sum().backward()
    for (name, p_ref), (_, p) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-3, atol=1e-4, msg=name)


def test_bench_neurons_cpu_mode_runs_the_fused_node_path(tmp_path, capsys, monkeypatch):
    """scripts/bench_neurons.py --cpu: host time of the node path with a no-op launcher, bytes vs floors."""
    bench = load_script("bench_neurons")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the test process's setting
    out = tmp_path / "b.json"
    argv = [
        "--cpu",
        "--neurons",
        "lif",
        "--dtypes",
        "fp16",
        "--iters",
        "2",
        "--repeats",
        "2",
        "--warmup",
        "1",
    ]
    res = bench.main([*argv, "--output", str(out)])
    assert json.loads(out.read_text()) == res
    paths = {(row["path"], row["phase"]) for row in res["rows"]}
    assert ("node (eager autograd.Function)", "fwd+bwd") in paths and (
        "custom op (torch.compile path)",
        "fwd",
    ) in paths
    assert all(0 < row["min_us"] <= row["median_us"] for row in res["rows"])
    fp16_train = next(b for b in res["bytes"] if b["phase"] == "fwd+bwd" and b["state"] == "scalar")
    assert fp16_train["floor_training"] == 10 and fp16_train["bytes"] == 11.0
    assert "bytes per neuron-step" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        bench.main(["--cpu", "--neurons", "izh"])
    assert exc.value.code == 2 and "--neurons: unknown ['izh']" in capsys.readouterr().err
