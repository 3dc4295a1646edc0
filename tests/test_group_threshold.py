"""Group soft-threshold (filter granularity): values and both gradients against a reference."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from snnprune import finalize
from snnprune.threshold.group import (
    GroupSoftThreshold,
    group_soft_threshold,
    register_group_soft_threshold,
)


def _reference(theta: torch.Tensor, d: float) -> torch.Tensor:
    """Row by row, in plain Python arithmetic: w_c = theta_c * max(0, 1 - d*sqrt(n)/||theta_c||)."""
    out = torch.zeros_like(theta)
    n = theta[0].numel()
    for c in range(theta.shape[0]):
        norm = math.sqrt(sum(float(v) ** 2 for v in theta[c].flatten()))
        s = max(0.0, 1.0 - d * math.sqrt(n) / norm) if norm > 0 else 0.0
        out[c] = theta[c] * s
    return out


def _filters(seed: int = 0) -> torch.Tensor:
    """[6, 2, 3, 3] float64 filters with RMS 0.05, 0.3, ... (far from the threshold 0.2 used below)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64)
    rms = torch.tensor([0.05, 0.3, 0.1, 0.5, 0.12, 0.9], dtype=torch.float64)
    theta = theta / theta.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    return theta * rms.view(-1, 1, 1, 1)


def test_values_match_reference_and_rms_rule():
    theta = _filters()
    w = group_soft_threshold(theta, 0.2)
    torch.testing.assert_close(w, _reference(theta, 0.2))
    removed = (w.flatten(1) == 0).all(1)
    assert removed.tolist() == [True, False, True, False, True, False]  # rms <= D  <=>  removed
    # a group of one weight is the element-wise soft threshold
    x = torch.tensor([[-2.0], [0.5], [3.0]])
    torch.testing.assert_close(group_soft_threshold(x, 1.0), torch.tensor([[-1.0], [0.0], [2.0]]))


def test_linear_rows_and_zero_threshold_identity():
    theta = torch.randn(5, 7)
    torch.testing.assert_close(group_soft_threshold(theta, 0.0), theta, rtol=0, atol=0)
    torch.testing.assert_close(group_soft_threshold(theta, 0.3), _reference(theta, 0.3))
    zero = torch.zeros(3, 4, requires_grad=True)
    group_soft_threshold(zero, 0.1, grad="exact").sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_exact_gradient_gradcheck_theta_and_threshold():
    theta = _filters().requires_grad_()
    d = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, dd: group_soft_threshold(t, dd, "exact"), (theta, d))


def test_ste_gradient_exact_on_survivors_identity_on_removed():
    theta = _filters().requires_grad_()
    upstream = torch.randn_like(theta)
    (group_soft_threshold(theta, 0.2, "ste") * upstream).sum().backward()
    ref = theta.detach().clone().requires_grad_()
    (group_soft_threshold(ref, 0.2, "exact") * upstream).sum().backward()
    removed = torch.tensor([True, False, True, False, True, False])
    torch.testing.assert_close(theta.grad[removed], upstream[removed])
    torch.testing.assert_close(theta.grad[~removed], ref.grad[~removed])
    # survivors' Jacobian is s*I + d_g/||t||^3 t t^T: check one filter by hand
    t, u = theta.detach()[1].flatten(), upstream[1].flatten()
    norm, dg = t.norm(), 0.2 * math.sqrt(t.numel())
    expected = (1 - dg / norm) * u + dg / norm**3 * t * (t @ u)
    torch.testing.assert_close(theta.grad[1].flatten(), expected)


def test_dense_gradient_is_identity():
    theta = _filters().requires_grad_()
    upstream = torch.randn_like(theta)
    (group_soft_threshold(theta, 0.2, "dense") * upstream).sum().backward()
    torch.testing.assert_close(theta.grad, upstream)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown grad mode"):
        group_soft_threshold(torch.ones(2, 2), 0.1, grad="nope")
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        group_soft_threshold(torch.ones(2, 2), -0.1)
    with pytest.raises(ValueError, match="groups=1"):
        register_group_soft_threshold(nn.Conv2d(4, 4, 3, groups=4))


def test_coupled_groups_share_norm_and_finalize_is_order_independent():
    a, b = nn.Conv2d(3, 4, 3, bias=False), nn.Conv2d(5, 4, 1, bias=False)
    with torch.no_grad():
        a.weight.mul_(0.0).add_(0.3)
        a.weight[1] = 0.01  # channel 1 tiny in a but large in b: the coupled group survives
        b.weight.fill_(0.3)
        b.weight[2] = 0.01  # channel 2 tiny in b only
        a.weight[2] = 0.01  # ... and in a: the coupled group is removed
    ta, tb = a.weight.detach().clone(), b.weight.detach().clone()
    for m in (a, b):
        register_group_soft_threshold(m, 0.1, grad="exact")
    a.parametrizations.weight[0].couple([b])
    b.parametrizations.weight[0].couple([a])
    sq = ta.flatten(1).pow(2).sum(1) + tb.flatten(1).pow(2).sum(1)
    s = torch.relu(1 - 0.1 * math.sqrt(27 + 5) / sq.sqrt())
    torch.testing.assert_close(a.weight, ta * s.view(-1, 1, 1, 1))
    torch.testing.assert_close(b.weight, tb * s.view(-1, 1, 1, 1))
    assert s[1] > 0 and s[2] == 0
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    model = nn.Sequential(a, b)
    fin = finalize(copy.deepcopy(model))  # a first, then b reads the frozen factor
    torch.testing.assert_close(fin[0].weight, wa)
    torch.testing.assert_close(fin[1].weight, wb)
    assert isinstance(model[0].parametrizations.weight[0], GroupSoftThreshold)  # the original is untouched


def test_layer_relative_scale_removes_groups_below_d_times_layer_rms():
    theta = _filters().float() * 10.0  # the rule is scale-free: multiply every weight by 10
    layer_rms = theta.pow(2).mean().sqrt()
    conv = register_group_soft_threshold(nn.Conv2d(2, 6, 3, bias=False), threshold=0.5, scale_by="layer")
    with torch.no_grad():
        conv.parametrizations.weight.original.copy_(theta)
    rms = theta.flatten(1).pow(2).mean(1).sqrt()
    removed = (conv.weight.flatten(1) == 0).all(1)
    assert removed.tolist() == (rms <= 0.5 * layer_rms).tolist() and 0 < int(removed.sum()) < 6
    torch.testing.assert_close(conv.weight, _reference(theta, 0.5 * float(layer_rms)))
    with pytest.raises(ValueError, match="scale_by must be one of"):
        GroupSoftThreshold(0.1, scale_by="norm")
