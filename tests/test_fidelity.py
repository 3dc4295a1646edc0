"""Fidelity to the papers: LTP's eq. 14 gradient, STR from the CLI, the LATS closed form under a
per-iteration scheduler, and ST-3's fixed-mask fine-tuning phase."""

from __future__ import annotations

import pytest
import torch
from helpers import load_script
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from snnprune import sparsify, sparsity
from snnprune.methods import schedules
from snnprune.threshold import LearnedThresholdMask, register_parametrization

TINY = ["--width", "8", "--epochs", "1", "--batch-size", "16", "--limit-train-batches", "3",
        "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet"]  # fmt: skip


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4)
    )


# ------------------------------------------------------------------------------------------------ LTP
@pytest.mark.parametrize("gradient", ["paper", "full"])
def test_ltp_gradient_matches_eq_14(gradient):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, bias=False)
    tau, t_rel = 2e-3, 0.05
    register_parametrization(conv, "weight", LearnedThresholdMask(tau, t_rel, gradient=gradient))
    theta = conv.parametrizations.weight.original
    upstream = torch.randn_like(theta)
    (conv.weight * upstream).sum().backward()
    th = theta.detach().double()
    temp = t_rel * th.var(unbiased=False)
    m = torch.sigmoid((th.pow(2) - tau) / temp)
    if gradient == "paper":
        expected = upstream.double() * m  # eq. 14: dw/dtheta = m
    else:
        expected = upstream.double() * (m + 2 * th.pow(2) / temp * m * (1 - m))
    assert torch.allclose(theta.grad.double(), expected, rtol=1e-4, atol=1e-7)
    # the threshold's gradient is exact in both variants: dw/dtau = -(theta/T) m (1 - m)
    tau_grad = (upstream.double() * -(th / temp) * m * (1 - m)).sum()
    assert conv.parametrizations.weight[0].tau.grad.double().item() == pytest.approx(
        tau_grad.item(), rel=1e-4
    )


@pytest.mark.parametrize("terms", ["both", "weight", "l0"])
def test_ltp_one_node_gives_the_gradients_of_both_terms(terms):
    """The fused soft-mask node: d/dtheta and d/dtau of (w . u) + c * L0 equal eq. 14 plus the exact soft-L0
    gradient (float64, tight), whether the loss uses both outputs or only one of them."""
    torch.manual_seed(1)
    layer = LearnedThresholdMask(2e-3, 0.05)
    theta = (0.05 * torch.randn(16, 8, 3, 3, dtype=torch.float64)).requires_grad_(True)
    layer.tau.data = layer.tau.data.double()
    u, c = torch.randn_like(theta), 0.7
    w = layer(theta)
    loss = {"both": (w * u).sum() + c * layer.l0(theta), "weight": (w * u).sum(), "l0": c * layer.l0(theta)}[
        terms
    ]
    loss.backward()
    th = theta.detach()
    temp = 0.05 * th.var(unbiased=False)
    m = torch.sigmoid((th.pow(2) - layer.tau.detach().item()) / temp)
    slope = m * (1 - m)
    uw, ul0 = (u, c) if terms == "both" else ((u, 0.0) if terms == "weight" else (torch.zeros_like(u), c))
    assert torch.allclose(theta.grad, uw * m + ul0 * 2 * th / temp * slope, rtol=1e-10, atol=1e-14)
    tau_grad = -(uw * th / temp * slope).sum() - ul0 / temp * slope.sum()
    assert layer.tau.grad.item() == pytest.approx(tau_grad.item(), rel=1e-10)


def test_ltp_l0_coeff_relates_to_the_papers_lambda():
    model = _net()
    pruner = sparsify(model, "ltp", l0_coeff=2.0, tau_init=1e-3)
    n = sum(m.parametrizations.weight.original.numel() for m in pruner.layers.values())
    paper = 0.0
    for m in pruner.layers.values():
        plist = m.parametrizations.weight
        paper += plist[0].soft_mask(plist.original).sum().item()
    # the paper's lambda * sum_l L0_l with lambda = l0_coeff / (number of pruned weights)
    assert pruner.regularization().item() == pytest.approx(2.0 / n * paper, rel=1e-6)


# ------------------------------------------------------------------------------------------------ STR
def test_str_from_the_command_line_prunes(tmp_path):
    ann = load_script("train_ann")
    res = ann.main(
        [*TINY, "--method", "str", "--s-init", "-5", "--weight-decay", "5e-4", "--output-dir", str(tmp_path)]
    )
    assert res["sparsity"] > 0.005
    config = (tmp_path / "ann_resnet18_str" / "config.json").read_text()
    assert '"s_init": -5.0' in config
    # steps.csv logs the learned thresholds from device snapshots resolved once per epoch: plain numbers,
    # rising step by step, the last one the final mean threshold
    import csv

    with open(tmp_path / "ann_resnet18_str" / "steps.csv") as f:
        thresholds = [float(r["threshold"]) for r in csv.DictReader(f)]
    assert (
        thresholds[-1] == pytest.approx(res["threshold"], rel=1e-5) and len(set(thresholds)) > 1
    )  # 6 digits


# ----------------------------------------------------------------------------------- LATS closed form
def test_lats_closed_form_with_a_per_iteration_scheduler_is_the_authors_formula():
    spe, epochs, start, d = 5, 6, 10, 0.3
    total = spe * epochs
    model = _net()
    pruner = sparsify(
        model,
        "lats",
        final_threshold=d,
        total_steps=total,
        start_step=start,
        schedule="closed_form",
        epoch_length=spe,
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = CosineAnnealingLR(opt, total)  # stepped every iteration: the closed form does not read it
    pruner.bind(opt, sched, steps_per_epoch=None)
    for k in range(1, total + 1):
        opt.step()
        pruner.step()
        sched.step()
        n = max(k - start, 0)
        assert pruner.threshold == d * schedules.lats_low_freq(n, spe, (total - start) // spe)
    assert pruner.threshold == pytest.approx(d, rel=1e-15)


def test_closed_form_with_lr_step_per_iter_trains_from_the_cli(tmp_path):
    sew = load_script("train_sew")
    res = sew.main(
        [*TINY, "--T", "2", "--method", "lats", "--lats-schedule", "closed_form", "--lr-step-per-iter",
         "--output-dir", str(tmp_path)]
    )  # fmt: skip
    assert res["threshold"] == pytest.approx(0.1, rel=1e-12)


# ------------------------------------------------------------------------------------ ST-3 fine-tuning
@pytest.mark.parametrize("method", ["st3", "st3sigma"])
def test_st3_fixed_mask_phase(method):
    total, finetune, target = 12, 4, 0.7
    model = _net(seed=2)
    pruner = sparsify(model, method, target_sparsity=target, total_steps=total, finetune_steps=finetune)
    assert pruner.end_step == total - finetune
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner.bind(opt)
    g = torch.Generator().manual_seed(0)
    masks, effective_at_fix = [], None
    for k in range(1, total + 1):
        x, y = torch.randn(8, 2, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if k > total - finetune:
            for m in pruner.layers.values():  # pruned weights get no gradient in the fixed phase
                pruned = m.parametrizations.weight[0].mask.logical_not()
                assert bool((m.parametrizations.weight.original.grad[pruned] == 0).all())
        if k == total - finetune:
            with torch.no_grad():
                before = {n: m.weight.clone() for n, m in pruner.layers.items()}  # c * S_t(theta) at step k
        opt.step()
        pruner.step()
        if k == total - finetune:
            # theta <- c * S_t(theta) with t from the updated theta, mask = its non-zeros
            assert pruner.fixed
            effective_at_fix = {n: m.weight.detach().clone() for n, m in pruner.layers.items()}
            for m in pruner.layers.values():
                theta = m.parametrizations.weight.original.detach()
                assert torch.equal(m.weight, theta * m.parametrizations.weight[0].mask)
                assert torch.equal(m.parametrizations.weight[0].mask, theta != 0)
            assert sparsity(model)["overall"] == pytest.approx(target, abs=0.01)
            assert any(not torch.equal(before[n], effective_at_fix[n]) for n in before)
        if k >= total - finetune:
            masks.append([(m.weight != 0).clone() for m in pruner.layers.values()])
    assert all(all(torch.equal(a, b) for a, b in zip(masks[0], ms, strict=True)) for ms in masks)
    assert sparsity(model)["overall"] == pytest.approx(target, abs=0.01)


def test_st3_fixed_phase_resumes_from_a_checkpoint():
    total, finetune = 8, 3
    model = _net()
    pruner = sparsify(model, "st3", target_sparsity=0.6, total_steps=total, finetune_steps=finetune)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner.bind(opt)
    for _ in range(6):
        opt.zero_grad()
        model(torch.randn(4, 2, 6, 6)).sum().backward()
        opt.step()
        pruner.step()
    fresh = _net(seed=5)
    fresh_pruner = sparsify(fresh, "st3", target_sparsity=0.6, total_steps=total, finetune_steps=finetune)
    fresh.load_state_dict(model.state_dict())
    with pytest.raises(RuntimeError, match="fixed=True in the model, False in the pruner"):
        fresh_pruner.step()
    fresh_pruner.load_state_dict(pruner.state_dict())
    assert fresh_pruner.fixed
    x = torch.randn(4, 2, 6, 6)
    assert torch.equal(fresh(x), model(x))


def test_ltp_l0_term_reuses_the_forward_mask_with_the_same_value_and_gradients():
    x, y = torch.randn(8, 2, 6, 6), torch.randint(0, 4, (8,))
    results = []
    for reuse in (True, False):
        model = _net()
        pruner = sparsify(model, "ltp", l0_coeff=0.7, tau_init=1e-3, temperature=0.05)
        loss = nn.functional.cross_entropy(model(x), y)
        if not reuse:
            for m in pruner.layers.values():
                m.parametrizations.weight[0]._last = None  # forces the recomputation
        reg = pruner.regularization()
        (loss + reg).backward()
        layers = list(pruner.layers.values())
        results.append(
            (
                reg.item(),
                [m.parametrizations.weight.original.grad for m in layers],
                [m.parametrizations.weight[0].tau.grad for m in layers],
            )
        )
    (r1, g1, t1), (r2, g2, t2) = results
    assert r1 == pytest.approx(r2, rel=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(g1, g2, strict=True))
    assert all(torch.allclose(a, b, rtol=1e-5) for a, b in zip(t1, t2, strict=True))
    # after an optimizer step theta changed, so the stale mask is not reused
    model = _net()
    pruner = sparsify(model, "ltp", tau_init=1e-3)
    model(x)
    with torch.no_grad():
        model[0].parametrizations.weight.original.mul_(2)
    mask = model[0].parametrizations.weight[0]
    theta = model[0].parametrizations.weight.original
    assert mask.l0(theta).item() == pytest.approx(mask.soft_mask(theta).sum().item(), rel=1e-6)
