"""N:M granularity: the group cut against a per-group reference, exact structure after every method,
the refusals, the sparse file round trip and the 2:4 sparse kernels (CUDA only)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import snnprune
from snnprune.structured import load_sparse, save_sparse
from snnprune.threshold.nm import NMSoftThreshold, nm_violations, parse_nm

# (method, its keywords): every method that takes granularity="N:M"
METHODS = [
    ("lats", {"lr_total": 0.6}),
    ("slats", {}),
    ("stds", {}),
    ("pgh", {"beta": 0.1}),
    ("gmp", {}),
]


def _groups(weight: torch.Tensor, m: int):
    """Every N:M group of ``weight`` by explicit slicing: M consecutive input channels at one output channel
    and one kernel position (written independently of ``snnprune.threshold.nm.to_groups``)."""
    out, inp, *kernel = weight.shape
    for o, k in itertools.product(range(out), itertools.product(*(range(s) for s in kernel))):
        for i in range(0, inp, m):
            yield weight[(o, slice(i, i + m), *k)]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 8))


def _train(model: nn.Module, pruner, steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if pruner.method == "lats":
        pruner.bind(opt)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 8, 6, 6, generator=gen)).square().mean().backward()
        opt.step()
        pruner.step()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2:4", (2, 4)), ("2:8", (2, 8)), (" 1 : 4 ", (1, 4)), ("filter", None), ("2-4", None), ("2:4:8", None)],
)
def test_parse_nm(text, expected):
    assert parse_nm(text) == expected


@pytest.mark.parametrize("shape", [(6, 8), (5, 8, 3, 3), (4, 16, 3)])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (2, 8)])
@pytest.mark.parametrize("fraction", [0.0, 0.4, 1.0, 1.5])
def test_forward_matches_per_group_reference(shape, n, m, fraction):
    """Each group's soft threshold is fraction x its (M-N)-th smallest magnitude (a fraction above 1 acts as
    1): checked group by group against a sort in float64."""
    torch.manual_seed(0)
    theta = torch.randn(shape)
    p = NMSoftThreshold(n, m, threshold=fraction)
    w = p(theta)
    for g_theta, g_w in zip(_groups(theta, m), _groups(w, m), strict=True):
        t = g_theta.double()
        cut = sorted(t.abs().tolist())[m - n - 1] * min(fraction, 1.0)
        ref = t.sign() * (t.abs() - cut).clamp_min(0)
        torch.testing.assert_close(g_w.double(), ref, rtol=1e-6, atol=1e-7)
        if fraction >= 1:
            assert int(g_w.ne(0).sum()) == n  # continuous values: no ties, exactly N survive


def test_ties_at_the_cut_leave_at_most_n():
    """Equal magnitudes at the cut all go: never more than N survive (here 1 of 4 in the first group)."""
    theta = torch.tensor([[0.5, -0.5, 0.5, 2.0, 0.1, 0.2, 0.3, 0.4]])
    w = NMSoftThreshold(2, 4, threshold=1.0)(theta)
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.1, 0.2]]))
    assert nm_violations(w, 2, 4) == 0


@pytest.mark.parametrize(("n", "m"), [(2, 4), (2, 8)])
@pytest.mark.parametrize(("method", "kwargs"), METHODS, ids=[m for m, _ in METHODS])
def test_every_group_exactly_n_of_m_at_the_end(method, kwargs, n, m):
    """After the window every group of every pruned layer, finalized, holds exactly N non-zeros; half-way
    the structure is forming (some zeros, fewer than the final 1 - N/M)."""
    model = _net()
    pruner = snnprune.sparsify(model, method, granularity=f"{n}:{m}", total_steps=6, **kwargs)
    _train(model, pruner, 3)
    mid = snnprune.sparsity(model)["overall"]
    assert 0 < mid < 1 - n / m
    _train(model, pruner, 3)
    snnprune.finalize(model)
    for layer in (model[0], model[3]):
        counts = [int(g.ne(0).sum()) for g in _groups(layer.weight, m)]
        assert counts and set(counts) == {n}
    assert snnprune.sparsity(model)["overall"] == pytest.approx(1 - n / m)


def test_lats_missed_lr_plan_still_ends_on_the_exact_cut():
    """LATS told a larger lr sum than the run uses ends below D; the N:M cut is installed at the last step
    all the same (the plan warning still fires)."""
    model = _net()
    pruner = snnprune.sparsify(model, "lats", granularity="2:4", lr_total=0.9, total_steps=6)
    with pytest.warns(UserWarning, match="learning rates"):
        _train(model, pruner, 6)
    assert pruner.threshold == 1.0
    snnprune.finalize(model)
    assert all(int(g.ne(0).sum()) == 2 for g in _groups(model[0].weight, 4))


@pytest.mark.parametrize(("method", "kwargs"), METHODS, ids=[m for m, _ in METHODS])
def test_resume_mid_window_is_bit_identical(method, kwargs):
    """Model and pruner state saved half-way and loaded into fresh copies continue to the same weights."""
    model = _net()
    pruner = snnprune.sparsify(model, method, granularity="2:4", total_steps=6, **kwargs)
    _train(model, pruner, 3)
    state, pstate = {k: v.clone() for k, v in model.state_dict().items()}, pruner.state_dict()
    _train(model, pruner, 3)
    fresh = _net()
    again = snnprune.sparsify(fresh, method, granularity="2:4", total_steps=6, **kwargs)
    fresh.load_state_dict(state)
    again.load_state_dict(pstate)
    _train(fresh, again, 3)  # a fresh optimizer in both continuations' second half would differ: plain SGD
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# (method, keywords, expected message): each refusal names the argument, the problem and the fix
REFUSALS = [
    ("lats", {"granularity": "4:4"}, "granularity '4:4' must have 0 < N < M"),
    ("lats", {"granularity": "0:4"}, "granularity '0:4' must have 0 < N < M"),
    ("lats", {"granularity": "block"}, "granularity must be weight, filter or N:M such as 2:4, got 'block'"),
    ("stds", {"granularity": "2:4", "final_threshold": 0.1}, "final_threshold does not apply to granularity '2:4'"),
    ("lats", {"granularity": "2:4", "l1_coeff": 0.1}, "l1_coeff does not apply to an N:M granularity"),
    ("lats", {"granularity": "2:4", "filter_scale": "size"}, "filter_scale='size' applies to granularity='filter' only"),
    ("gmp", {"granularity": "filter"}, "granularity must be weight or N:M such as 2:4, got 'filter'"),
    ("gmp", {"granularity": "2:4", "target_sparsity": 0.9}, "target_sparsity does not apply to granularity '2:4'"),
    ("gmp", {"granularity": "4:4"}, "granularity '4:4' must have 0 < N < M"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "kwargs", "fragment"), REFUSALS, ids=[r[2][:40] for r in REFUSALS])
def test_refusals(method, kwargs, fragment):
    extra = {"lr_total": 1.0} if method == "lats" and "l1_coeff" not in kwargs else {}
    with pytest.raises(ValueError, match="; ") as exc:
        snnprune.sparsify(_net(), method, total_steps=4, **kwargs, **extra)
    assert fragment in str(exc.value)


@pytest.mark.parametrize(("method", "kwargs"), [("lats", {"lr_total": 1.0}), ("gmp", {})])
def test_layer_without_whole_groups_is_refused_and_model_left_as_it_was(method, kwargs):
    """A layer whose input dimension is not a multiple of M is named with the fix; nothing stays attached."""
    model = nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 4))
    with pytest.raises(
        ValueError, match=r"layer '1' has weight shape \(4, 6\).*exclude it \(exclude=\['1'\]\)"
    ):
        snnprune.sparsify(model, method, granularity="2:4", total_steps=4, **kwargs)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in model)
    snnprune.sparsify(model, method, granularity="2:4", total_steps=4, exclude=["1"], **kwargs)


def test_sparse_file_round_trip_keeps_the_structure(tmp_path):
    """A finalized 2:4 model written as values + bitmask loads back bit for bit, every group still 2 of 4."""
    model = _net()
    pruner = snnprune.sparsify(model, "stds", granularity="2:4", total_steps=2)
    _train(model, pruner, 2)
    snnprune.finalize(model)
    sizes = save_sparse(model.state_dict(), tmp_path / "m.pth")
    back = load_sparse(tmp_path / "m.pth")
    fresh = _net()
    fresh.load_state_dict(back)
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key])
    for layer in (fresh[0], fresh[3]):
        assert all(int(g.ne(0).sum()) == 2 for g in _groups(layer.weight, 4))
    assert sizes["sparse_bytes"] < sizes["dense_bytes"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="semi-structured sparse kernels need CUDA")
def test_semi_structured_kernel_matches_dense_on_cuda():
    """A 2:4 Linear pruned by LATS runs through ``to_sparse_semi_structured`` with the dense layer's output."""
    from torch.sparse import to_sparse_semi_structured

    torch.manual_seed(0)
    layer = nn.Linear(128, 128).cuda()
    pruner = snnprune.sparsify(layer, "lats", granularity="2:4", lr_total=0.2, total_steps=2)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    pruner.bind(opt)
    for _ in range(2):
        opt.zero_grad()
        layer(torch.randn(64, 128, device="cuda")).square().mean().backward()
        opt.step()
        pruner.step()
    snnprune.finalize(layer)
    weight = layer.weight.detach().half()
    x = torch.randn(128, 128, device="cuda", dtype=torch.half)
    dense = nn.functional.linear(x, weight)
    sparse = nn.functional.linear(x, to_sparse_semi_structured(weight))
    torch.testing.assert_close(sparse, dense, rtol=1e-2, atol=1e-2)
