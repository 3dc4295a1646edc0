"""Tests of the thresholding core: soft_threshold, parametrizations, sparsity, finalize."""

from __future__ import annotations

import copy

import pytest
import torch
from spikingjelly.activation_based import layer
from torch import nn
from torch.nn.utils import parametrize

from snnprune import (
    SoftThreshold,
    finalize,
    register_soft_threshold,
    remove_soft_threshold,
    soft_threshold,
    sparsity,
)
from snnprune.threshold import (
    LearnedThresholdMask,
    MagnitudeMask,
    check_grad,
    register_parametrization,
    register_removal_hook,
)


def _away_from_kinks(shape, d, seed=0, alive_only=False):
    """Random float64 values with |theta| - d and theta kept >= 0.1 away from 0."""
    g = torch.Generator().manual_seed(seed)
    mag = torch.rand(shape, generator=g, dtype=torch.float64) * 1.0
    if alive_only:
        mag = d + 0.1 + mag
    else:
        # half well below d (but > 0.1 away from 0), half well above
        low = 0.1 + mag * (d - 0.2)
        high = d + 0.1 + mag
        mag = torch.where(torch.rand(shape, generator=g) < 0.5, low, high)
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).double()
    return mag * sign


def test_forward_values_and_sign_zero():
    theta = torch.tensor([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    expected = torch.tensor([-1.0, 0.0, 0.0, 0.0, 0.0, 2.0])
    for grad in ("exact", "ste", "dense"):
        assert torch.equal(soft_threshold(theta, 1.0, grad), expected)
        assert torch.equal(soft_threshold(theta, torch.tensor(1.0), grad), expected)
    # d = 0 is the identity
    assert torch.equal(soft_threshold(theta, 0.0), theta)


def test_per_channel_threshold_broadcasts():
    theta = torch.randn(4, 3, 2, 2)
    d = torch.tensor([0.0, 0.5, 1.0, 100.0]).view(4, 1, 1, 1)
    w = soft_threshold(theta, d, "ste")
    for c in range(4):
        ref = torch.sign(theta[c]) * torch.clamp(theta[c].abs() - d[c], min=0)
        assert torch.equal(w[c], ref)
    assert (w[3] == 0).all()


@pytest.mark.parametrize("grad", ["exact", "ste", "dense"])
def test_gradcheck_alive_region(grad):
    """Away from the kinks and with every entry alive all three modes equal the true derivative."""
    d = 0.3
    theta = _away_from_kinks((5, 4), d, alive_only=True).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: soft_threshold(t, d, grad), (theta,))
    # non-contiguous input
    theta_nc = _away_from_kinks((4, 6), d, seed=1, alive_only=True).t().requires_grad_()
    assert not theta_nc.is_contiguous()
    assert torch.autograd.gradcheck(lambda t: soft_threshold(t, d, grad), (theta_nc,))


def test_gradcheck_exact_mixed_and_threshold_grad():
    d = 0.5
    theta = _away_from_kinks((6, 5), d, seed=2).requires_grad_()
    assert ((theta.abs() - d).abs() > 0.05).all()
    thr = torch.tensor(d, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, s: soft_threshold(t, s, "exact"), (theta, thr))
    per_channel = torch.full((6, 1), d, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, s: soft_threshold(t, s, "exact"), (theta, per_channel))


def test_backward_of_pruned_entries():
    theta = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    expected = {
        "exact": torch.tensor([1.0, 0.0, 0.0, 0.0, 5.0]),  # ReLU mask
        "ste": torch.tensor([1.0, 2.0, 0.0, 4.0, 5.0]),  # identity except sign(0) = 0
        "dense": torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]),  # identity everywhere (ST-3)
    }
    for grad, ref in expected.items():
        theta.grad = None
        soft_threshold(theta, 1.0, grad).backward(upstream)
        assert torch.equal(theta.grad, ref), grad


@pytest.mark.parametrize("zero", [True, False], ids=["with-a-zero", "no-zero"])
def test_ste_backward_is_sign_squared_on_both_paths(zero):
    """The straight-through backward skips its mask when theta has no exact zero (the common case): both
    paths give sign(theta)^2 * upstream, and the upstream gradient itself is never modified."""
    g = torch.Generator().manual_seed(3)
    theta = torch.randn(64, 9, generator=g)
    if zero:
        theta[3, 4] = 0.0
    theta.requires_grad_(True)
    upstream = torch.randn(64, 9, generator=g)
    kept = upstream.clone()
    soft_threshold(theta, 0.5, "ste").backward(upstream)
    assert torch.equal(theta.grad, upstream * theta.detach().sign().square())
    assert torch.equal(upstream, kept)


def test_soft_threshold_rescale_hand_values():
    """ST-3 rescale by hand: row 0 keeps |theta| 2 of (2, 0.5), r = 1/1.25 = 0.8, c = 1.01/0.81; row 1
    keeps everything, r = 1, c = 1. No gradient flows through c."""
    theta = torch.tensor([[2.0, -0.5], [3.0, 1.5]], dtype=torch.float64, requires_grad=True)
    w = soft_threshold(theta, 1.0, "exact", rescale=True)
    c0 = 1.01 / ((1.0 + 1e-6) / (1.25 + 1e-6) + 0.01)
    expected = torch.tensor([[c0, 0.0], [2.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=0)
    w.sum().backward()
    torch.testing.assert_close(theta.grad, torch.tensor([[c0, 0.0], [1.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(soft_threshold(theta, 1.0, "dense", rescale=True), expected.detach())


def test_check_grad():
    for grad in ("exact", "ste", "dense"):
        check_grad(grad)
    with pytest.raises(ValueError, match=r"unknown grad mode 'STE'; use one of \('exact', 'ste', 'dense'\)"):
        check_grad("STE")


def test_soft_threshold_bad_input():
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        soft_threshold(torch.ones(2), -0.1)
    with pytest.raises(ValueError, match="unknown grad mode 'bogus'"):
        soft_threshold(torch.ones(2), 0.1, grad="bogus")
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        SoftThreshold(torch.tensor([0.1, -0.2]))
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        SoftThreshold(float("nan"))


LAYERS = [
    lambda: nn.Conv1d(3, 4, 3),
    lambda: nn.Conv2d(3, 4, 3),
    lambda: nn.Conv3d(2, 4, 3),
    lambda: nn.Linear(5, 4),
    lambda: layer.Conv2d(3, 4, 3),
    lambda: layer.Linear(5, 4),
]


@pytest.mark.parametrize("make", LAYERS)
def test_register_on_every_layer_type(make):
    torch.manual_seed(0)
    module = make()
    cls = type(module)
    theta = module.weight.detach().clone()
    register_soft_threshold(module, threshold=0.1)
    assert parametrize.type_before_parametrizations(module) is cls
    assert torch.equal(module.parametrizations.weight.original, theta)
    assert torch.equal(module.weight, soft_threshold(theta, 0.1))
    module.parametrizations.weight[0].threshold.fill_(0.2)
    assert torch.equal(module.weight, soft_threshold(theta, 0.2))
    keys = set(module.state_dict())
    assert {"parametrizations.weight.original", "parametrizations.weight.0.threshold"} <= keys
    remove_soft_threshold(module)
    assert type(module) is cls
    assert torch.equal(module.weight, soft_threshold(theta, 0.2))


def test_extra_repr_shows_settings():
    st = SoftThreshold(0.25, grad="exact", learnable=True)
    text = repr(st)
    assert "threshold=0.25" in text and "grad='exact'" in text and "learnable=True" in text
    assert isinstance(st.threshold, nn.Parameter)
    st = SoftThreshold(-4.0, logit=True, learnable=True)
    assert "threshold_logit=-4" in repr(st)
    assert torch.allclose(st.effective_threshold(), torch.sigmoid(torch.tensor(-4.0)))
    assert "temperature=0.05" in repr(LearnedThresholdMask(temperature=0.05))
    assert "shape=(2, 3)" in repr(MagnitudeMask((2, 3)))


def _net():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )


def test_dense_checkpoint_loads_into_parametrized_model():
    torch.manual_seed(0)
    dense = _net()
    ckpt = dense.state_dict()
    torch.manual_seed(1)
    model = _net()
    for m in (model[0], model[4]):
        register_soft_threshold(m, threshold=0.05)
        m.parametrizations.weight[0].threshold.fill_(0.07)
    result = model.load_state_dict(ckpt)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model[0].parametrizations.weight.original, dense[0].weight)
    assert torch.equal(model[4].weight, soft_threshold(dense[4].weight, 0.07))
    assert model[0].parametrizations.weight[0].threshold.item() == pytest.approx(0.07)
    # and the parametrized checkpoint round-trips into a fresh parametrized model
    fresh = _net()
    for m in (fresh[0], fresh[4]):
        register_soft_threshold(m)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh[4].weight, model[4].weight)


def test_register_errors():
    conv = nn.Conv2d(1, 1, 1)
    register_soft_threshold(conv)
    with pytest.raises(ValueError, match="already parametrized"):
        register_soft_threshold(conv)
    with pytest.raises(ValueError, match="has no tensor 'kernel'"):
        register_soft_threshold(nn.Linear(2, 2), name="kernel")
    with pytest.raises(ValueError, match="not parametrized"):
        remove_soft_threshold(nn.Linear(2, 2))


def test_sparsity_values_and_single_sync(monkeypatch):
    torch.manual_seed(0)
    model = _net()
    register_soft_threshold(model[0], threshold=0.1)
    register_soft_threshold(model[4], threshold=0.05)
    z0 = int((soft_threshold(model[0].parametrizations.weight.original, 0.1) == 0).sum())
    z4 = int((soft_threshold(model[4].parametrizations.weight.original, 0.05) == 0).sum())
    calls = {"tolist": 0}
    real_tolist = torch.Tensor.tolist

    def counting_tolist(self):
        calls["tolist"] += 1
        return real_tolist(self)

    def no_item(self):
        raise AssertionError("sparsity() must not call .item()")

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    monkeypatch.setattr(torch.Tensor, "item", no_item)
    s = sparsity(model)
    monkeypatch.undo()
    assert calls["tolist"] == 1
    assert s["layers"] == {"0": z0 / 72, "4": z4 / 192}
    assert s["overall"] == pytest.approx((z0 + z4) / (72 + 192))
    # dense model: all conv/linear layers, 0 zeros
    assert sparsity(_net())["overall"] == 0.0
    assert sparsity(nn.ReLU()) == {"overall": 0.0, "layers": {}}


def test_finalize_round_trip():
    torch.manual_seed(0)
    model = _net().eval()
    register_soft_threshold(model[0], threshold=0.15)
    register_soft_threshold(model[4], threshold=0.05, grad="exact")
    register_parametrization(model[4], "bias", SoftThreshold(0.0))
    x = torch.randn(2, 2, 6, 6)
    before, s_before = model(x), sparsity(model)
    assert s_before["overall"] > 0.2
    out = finalize(model)
    assert out is model
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert torch.equal(model(x), before)
    assert sparsity(model) == s_before
    assert "0.weight" in model.state_dict() and "0.parametrizations.weight.original" not in model.state_dict()
    assert model[0].weight.requires_grad
    # finalizing a deep copy leaves the original parametrized model working
    model2 = _net().eval()
    register_soft_threshold(model2[0], threshold=0.15)
    export = finalize(copy.deepcopy(model2))
    assert parametrize.is_parametrized(model2[0]) and torch.equal(export(x), model2(x))
    # a plain checkpoint of the finalized model loads into a fresh dense model
    fresh = _net().eval()
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), before)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    def undo(self, leave_parametrized: bool) -> None:
        self.calls.append(leave_parametrized)


def test_removal_hooks_run_once_with_the_parametrization():
    lin = register_soft_threshold(nn.Linear(3, 2))
    with pytest.raises(
        ValueError, match=r"Linear\.bias is not parametrized; register the parametrization first"
    ):
        register_removal_hook(lin, _Recorder().undo, name="bias")
    first, second = _Recorder(), _Recorder()
    register_removal_hook(lin, first.undo)
    register_removal_hook(lin, second.undo)
    copied = copy.deepcopy(lin)  # the copy's hooks act on copies
    finalize(copied)
    assert first.calls == second.calls == []
    remove_soft_threshold(lin, leave_parametrized=False)
    assert first.calls == second.calls == [False]
    register_soft_threshold(lin)
    finalize(lin)  # a new parametrization: the old hooks are gone
    assert first.calls == [False] and vars(lin).keys().isdisjoint({"_snnprune_removal_hooks"})
    register_soft_threshold(lin)
    third = _Recorder()
    register_removal_hook(lin, third.undo)
    finalize(lin)
    assert third.calls == [True]


def test_learned_threshold_mask_soft_and_hard():
    torch.manual_seed(0)
    lin = nn.Linear(8, 6)
    theta = lin.weight.detach().clone()
    register_parametrization(lin, "weight", LearnedThresholdMask(tau=0.01, temperature=0.1))
    temp = 0.1 * theta.var(unbiased=False)
    assert torch.allclose(lin.weight, theta * torch.sigmoid((theta.pow(2) - 0.01) / temp))
    lin.eval()
    assert torch.equal(lin.weight, theta * (theta.pow(2) > 0.01))
    lin.train()
    lin.weight.sum().backward()
    assert lin.parametrizations.weight[0].tau.grad is not None
    finalize(lin)
    assert torch.equal(lin.weight, theta * (theta.pow(2) > 0.01))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        LearnedThresholdMask(temperature=0.0)


class _ReferenceReLUmod(torch.autograd.Function):
    """The LATS/STDS code's ``ReLUmod``: relu forward, identity backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        return grad


@pytest.mark.parametrize("grad", ["exact", "ste", "dense"])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_fused_operator_is_bit_identical_to_the_reference_formula(grad, as_tensor):
    """The one-pass forward/backward equals sign(θ)·max(|θ|−d, 0) and its autograd bit for bit."""
    g = torch.Generator().manual_seed(3)
    for scale in (1e-3, 0.05, 1.0):
        theta = (torch.randn(4096, generator=g) * scale).requires_grad_()
        with torch.no_grad():
            theta[:5] = 0.0
        d = float(torch.tensor(0.7 * scale))  # a float32 value, as the buffers hold
        upstream = torch.randn(4096, generator=g)
        w = soft_threshold(theta, torch.tensor(d) if as_tensor else d, grad)
        (grad_new,) = torch.autograd.grad(w, theta, upstream)
        ref_theta = theta.detach().clone().requires_grad_()
        if grad == "ste":
            ref = torch.sign(ref_theta) * _ReferenceReLUmod.apply(ref_theta.abs() - d)
        else:
            ref = torch.sign(ref_theta) * torch.relu(ref_theta.abs() - d)
        (grad_ref,) = torch.autograd.grad(ref, ref_theta, upstream)
        if grad == "dense":
            grad_ref = upstream
        assert torch.equal(w, ref)
        assert torch.equal(grad_new, grad_ref)


def test_scalar_fast_path_follows_every_write_to_the_buffer():
    st = SoftThreshold(0.0, grad="ste")
    theta = torch.linspace(-1, 1, 11)
    st.set_threshold(0.5)
    assert torch.equal(st(theta), soft_threshold(theta, 0.5))
    st.threshold.fill_(0.25)  # written behind set_threshold's back: the tensor is used, not the stale float
    assert torch.equal(st(theta), soft_threshold(theta, 0.25))
    st.load_state_dict({"threshold": torch.tensor(0.75)})
    assert torch.equal(st(theta), soft_threshold(theta, 0.75))
    with pytest.raises(ValueError, match="sets a buffer threshold; a learnable one"):
        SoftThreshold(0.0, learnable=True).set_threshold(0.1)
    per_channel = SoftThreshold(torch.zeros(3, 1), grad="ste")
    per_channel.set_threshold(0.5)
    assert torch.equal(per_channel(torch.ones(3, 4)), torch.full((3, 4), 0.5))


def test_compiled_forward_follows_the_threshold_without_recompiling():
    """torch.compile traces the threshold as a tensor: a scheduled update neither recompiles nor is missed."""
    from torch._dynamo.testing import CompileCounter

    torch.manual_seed(0)
    layer = nn.Linear(8, 4)
    p = register_soft_threshold(layer, "weight", 0.0).parametrizations.weight[0]
    counter = CompileCounter()
    compiled = torch.compile(layer, backend=counter)
    x = torch.randn(2, 8)
    theta = layer.parametrizations.weight.original.detach()
    for d in (0.05, 0.1, 0.2, 0.3):
        p.set_threshold(d)
        expected = nn.functional.linear(x, theta.sign() * (theta.abs() - d).clamp_min(0), layer.bias)
        torch.testing.assert_close(compiled(x), expected)
    assert counter.frame_count == 1


def test_parametrization_buffers_follow_the_weight_device():
    """A layer already on another device (here ``meta``; ``cuda`` in tests/test_gpu.py) gets its threshold
    buffer there, so ``model.cuda()`` followed by ``sparsify`` works."""
    layer = nn.Linear(4, 3, device="meta")
    p = register_soft_threshold(layer, "weight", 0.1).parametrizations.weight[0]
    assert p.threshold.device.type == "meta"
    assert layer.parametrizations.weight.original.device.type == "meta"


def test_removing_the_parametrization_restores_the_parameter_order():
    """parametrize appends the tensor it restores; the layer gets its parameters back in their order, so
    ``parameters()`` (what an optimizer is built from) and ``state_dict`` keys match the dense model."""
    import snnprune
    from snnprune.threshold import remove_soft_threshold

    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Linear(3, 2))
    names, keys = [n for n, _ in model.named_parameters()], list(model.state_dict())
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    snnprune.sparsify(model, "lats", final_threshold=0.1, total_steps=4)
    snnprune.finalize(model)
    assert [n for n, _ in model.named_parameters()] == names and list(model.state_dict()) == keys
    layer = nn.Linear(3, 2)
    snnprune.register_soft_threshold(layer, threshold=0.1)
    remove_soft_threshold(layer, leave_parametrized=False)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"] and not vars(layer).get(
        "_snnprune_parameter_order"
    )
