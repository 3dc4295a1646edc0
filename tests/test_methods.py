"""Tests of the pruning methods: schedules, LATS lr accounting, lr_total, resume, targets, errors."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torchvision
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR, StepLR

import snnprune
from snnprune import Pruner, list_methods, lr_total, sparsify, sparsity
from snnprune.methods import schedules
from snnprune.threshold import soft_threshold

# snnprune/docs/methods.md 3.3 reference table: x -> (S-LATS, STDS sine, linear, PGH 0.1, PGH 0.01, PGH 0.999)
REFERENCE = {
    0.10: (0.198363, 0.024472, 0.100000, 0.317787, 0.436344, 0.198412),
    0.25: (0.475079, 0.146447, 0.250000, 0.652250, 0.784696, 0.475163),
    0.50: (0.818310, 0.500000, 0.500000, 0.921835, 0.970064, 0.818370),
    0.75: (0.975079, 0.853553, 0.750000, 0.993089, 0.998346, 0.975092),
    0.90: (0.998363, 0.975528, 0.900000, 0.999651, 0.999936, 0.998364),
}


@pytest.mark.parametrize("x", sorted(REFERENCE))
def test_schedules_match_reference_table(x):
    slats, sine, linear, p1, p01, p999 = REFERENCE[x]
    assert schedules.slats_fraction(x) == pytest.approx(slats, abs=1e-6)
    assert schedules.stds_sine_fraction(x) == pytest.approx(sine, abs=1e-6)
    assert schedules.stds_linear_fraction(x) == pytest.approx(linear, abs=1e-6)
    assert schedules.pgh_fraction(x, 0.1) == pytest.approx(p1, abs=1e-6)
    assert schedules.pgh_fraction(x, 0.01) == pytest.approx(p01, abs=1e-6)
    assert schedules.pgh_fraction(x, 0.999) == pytest.approx(p999, abs=1e-6)


def test_schedule_endpoints_and_pgh_limits():
    for f in (schedules.slats_fraction, schedules.stds_sine_fraction, schedules.stds_linear_fraction):
        assert f(0.0) == 0.0 and f(1.0) == pytest.approx(1.0, abs=1e-15)
    for beta in (0.01, 0.5, 2.0):
        assert schedules.pgh_fraction(0.0, beta) == pytest.approx(0.0, abs=1e-12)
        assert schedules.pgh_fraction(1.0, beta) == pytest.approx(1.0, abs=1e-12)
    assert schedules.pgh_fraction(0.3, 1.0) == schedules.slats_fraction(0.3)
    for beta in (1e300, 1e306, 1e-300):  # beta**x and ln(beta)**2 * beta overflow a direct evaluation
        xs = [i / 20 for i in range(21)]
        values = [schedules.pgh_fraction(x, beta) for x in xs]
        assert values[0] == pytest.approx(0.0, abs=1e-12) and values[-1] == pytest.approx(1.0, abs=1e-12)
        assert all(0.0 <= v <= 1.0 for v in values) and values == sorted(values)
    # beta = 1e300 against the formula evaluated in exact rational arithmetic at x = 0.5 (beta**0.5 = 1e150)
    from fractions import Fraction

    b, bx, ell = Fraction(10**300), Fraction(10**150), Fraction(math.log(1e300))
    pi2 = Fraction(math.pi) ** 2
    exact = (pi2 * (bx - 1) + (bx - 2) * ell**2 + bx * ell * (ell * 0 + Fraction(math.pi))) / (
        pi2 * (b - 1) - 2 * ell**2
    )
    assert schedules.pgh_fraction(0.5, 1e300) == pytest.approx(float(exact), rel=1e-9)
    for beta in (0.0, -1.0):
        with pytest.raises(ValueError, match="beta > 0"):
            schedules.pgh_fraction(0.5, beta)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        schedules.slats_fraction(1.5)
    assert schedules.cubic_sparsity(0.5, 0.8) == pytest.approx(0.8 * (1 - 0.5**3))
    assert schedules.cubic_sparsity(0.0, 0.8, 0.2) == pytest.approx(0.2)


def test_lats_low_freq_reference_values():
    f = schedules.lats_low_freq
    big_b, big_e = 5004, 100
    assert f(big_b, big_b, big_e) == pytest.approx(0.019802, abs=1e-6)
    assert f(2 * big_b, big_b, big_e) == pytest.approx(0.039599, abs=1e-6)
    assert f(50 * big_b, big_b, big_e) == pytest.approx(0.815132, abs=1e-6)
    assert f(100 * big_b, big_b, big_e) == pytest.approx(1.0, abs=1e-12)
    assert f(0, big_b, big_e) == 0.0
    # cumulative sum of the per-epoch cosine lr, normalized
    big_b, big_e = 3, 7
    incs = [1 + math.cos(math.pi * (n // big_b) / big_e) for n in range(big_b * big_e)]
    cum = [sum(incs[: n + 1]) / sum(incs) for n in range(len(incs))]
    for n in range(1, big_b * big_e + 1):
        assert f(n, big_b, big_e) == pytest.approx(cum[n - 1], abs=1e-12)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4)
    )


def _scheduler(kind, opt, steps):
    if kind == "cosine":
        return CosineAnnealingLR(opt, T_max=steps)
    if kind == "step":
        return StepLR(opt, step_size=max(steps // 3, 1), gamma=0.3)
    warm = max(steps // 4, 1)
    return SequentialLR(
        opt,
        [LinearLR(opt, start_factor=0.1, total_iters=warm), CosineAnnealingLR(opt, T_max=steps - warm)],
        milestones=[warm],
    )


@pytest.mark.parametrize("kind", ["cosine", "step", "warmup_cosine"])
@pytest.mark.parametrize("per_epoch", [False, True])
@pytest.mark.parametrize("start_step", [0, 5])
def test_lats_equals_lambda_cumsum_of_lr(kind, per_epoch, start_step):
    spe, epochs = 4, 6
    total = spe * epochs
    model = _mlp()
    pruner = sparsify(model, "lats", final_threshold=0.2, total_steps=total, start_step=start_step)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    sched = _scheduler(kind, opt, epochs if per_epoch else total)
    pruner.bind(opt, sched, steps_per_epoch=spe if per_epoch else None)
    lrs, thresholds = [], []
    for j in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        pruner.step()
        thresholds.append(pruner.threshold)
        if not per_epoch or (j + 1) % spe == 0:
            sched.step()
    window = lrs[start_step:]
    assert pruner.lr_total == pytest.approx(sum(window), rel=1e-12)
    lam = 0.2 / sum(window)
    expected = [0.0] * start_step + [
        lam * s for s in torch.tensor(window, dtype=torch.float64).cumsum(0).tolist()
    ]
    assert thresholds == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert thresholds[-1] == pytest.approx(0.2, rel=1e-12)
    # the layers hold the same threshold as the pruner
    assert model[0].parametrizations.weight[0].threshold.item() == pytest.approx(thresholds[-1], rel=1e-6)
    assert len(set(lrs)) > 1


def test_lats_closed_form_agrees_with_lr_for_per_epoch_cosine():
    spe, epochs, d = 5, 8, 0.3
    total = spe * epochs
    results = {}
    for schedule in ("lr", "closed_form"):
        model = _mlp()
        pruner = sparsify(
            model, "lats", final_threshold=d, total_steps=total, schedule=schedule, epoch_length=spe
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = CosineAnnealingLR(opt, T_max=epochs)
        pruner.bind(opt, sched, steps_per_epoch=spe)
        values = []
        for j in range(total):
            opt.step()
            pruner.step()
            values.append(pruner.threshold)
            if (j + 1) % spe == 0:
                sched.step()
        results[schedule] = values
    assert results["lr"] == pytest.approx(results["closed_form"], rel=1e-9, abs=1e-14)
    assert results["closed_form"][-1] == pytest.approx(d, rel=1e-12)


def test_lats_l1_coeff_and_explicit_lr_total():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.25)
    pruner = sparsify(model, "lats", l1_coeff=0.5, total_steps=4, optimizer=opt)
    pruner.step()
    pruner.step()
    assert pruner.threshold == pytest.approx(0.5 * 0.25 * 2)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.25)
    pruner = sparsify(model, "lats", final_threshold=0.1, lr_total=1.0, total_steps=4, optimizer=opt)
    pruner.step()
    assert pruner.threshold == pytest.approx(0.1 * 0.25)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("per_epoch", [False, True])
def test_lr_total_leaves_real_objects_untouched(per_epoch):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.4, momentum=0.9)
    model(torch.randn(2, 2, 6, 6)).sum().backward()
    opt.step()  # creates momentum state
    sched = _scheduler("warmup_cosine", opt, 5 if per_epoch else 20)
    opt_before = {k: v for k, v in opt.state_dict().items() if k != "state"}
    sched_before = sched.state_dict()
    momentum = opt.state[model[0].weight]["momentum_buffer"].clone()
    weight = model[0].weight.detach().clone()
    total = lr_total(opt, sched, 20, steps_per_epoch=4 if per_epoch else None)
    assert opt.param_groups[0]["lr"] == sched.get_last_lr()[0]
    assert {k: v for k, v in opt.state_dict().items() if k != "state"} == opt_before
    assert sched.state_dict() == sched_before
    assert torch.equal(opt.state[model[0].weight]["momentum_buffer"], momentum)
    assert torch.equal(model[0].weight, weight)
    # reference: step the real objects
    ref = 0.0
    for j in range(20):
        ref += opt.param_groups[0]["lr"]
        if not per_epoch or (j + 1) % 4 == 0:
            sched.step()
    assert total == pytest.approx(ref, rel=1e-12)
    # constant lr without scheduler
    assert lr_total(opt, None, 10, start_step=4) == pytest.approx(6 * opt.param_groups[0]["lr"])


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 2, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)]


METHOD_KWARGS = {
    "lats": {"final_threshold": 0.05},
    "slats": {"final_threshold": 0.05},
    "pgh": {"final_threshold": 0.05, "beta": 0.1},
    "stds": {"final_threshold": 0.05, "shape": "linear"},
    "str": {"s_init": -4.0},
    "ltp": {"l0_coeff": 0.5, "tau_init": 1e-4},
    "st3": {"target_sparsity": 0.6},
    "st3sigma": {"target_sparsity": 0.6},
    "gmp": {"target_sparsity": 0.6, "frequency": 2},
    "dense": {},
    "shi2024": {"penalty": 1e-3},
}


def _make_run(method, total, spe=4):
    model = _mlp(seed=3)
    pruner = sparsify(model, method, total_steps=total, start_step=2, **METHOD_KWARGS[method])
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-4)
    sched = _scheduler("warmup_cosine", opt, total)
    pruner.bind(opt, sched, steps_per_epoch=None)
    return model, pruner, opt, sched


def _train(model, pruner, opt, sched, batches):
    thresholds = []
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x), y) + pruner.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step()
        sched.step()
        thresholds.append(pruner.threshold)
    return thresholds


@pytest.mark.parametrize("method", [m for m in list_methods() if m != "imp"])  # imp: tests/test_imp.py
def test_resume_mid_schedule_is_exact(method):
    total = 12
    batches = _batches(total)
    model, pruner, opt, sched = _make_run(method, total)
    full = _train(model, pruner, opt, sched, batches)
    model_a, pruner_a, opt_a, sched_a = _make_run(method, total)
    first = _train(model_a, pruner_a, opt_a, sched_a, batches[:5])
    ckpt = {
        "model": model_a.state_dict(),
        "optimizer": opt_a.state_dict(),
        "lr_scheduler": sched_a.state_dict(),
        "pruner": pruner_a.state_dict(),
    }
    model_b, pruner_b, opt_b, sched_b = _make_run(method, total)
    model_b.load_state_dict(ckpt["model"])
    opt_b.load_state_dict(ckpt["optimizer"])
    sched_b.load_state_dict(ckpt["lr_scheduler"])
    pruner_b.load_state_dict(ckpt["pruner"])
    assert pruner_b.threshold == pruner_a.threshold
    second = _train(model_b, pruner_b, opt_b, sched_b, batches[5:])
    assert first + second == full
    for (name, a), b in zip(model.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert pruner_b.state_dict() == pruner.state_dict()


def test_resume_rejects_other_method():
    pruner = sparsify(_mlp(), "slats", final_threshold=0.1, total_steps=3)
    with pytest.raises(ValueError, match="method 'gmp'"):
        pruner.load_state_dict({"method": "gmp", "step_count": 1})


@pytest.mark.parametrize("method", ["st3", "st3sigma", "gmp"])
@pytest.mark.parametrize("target", [0.5, 0.9])
def test_target_methods_hit_target(method, target):
    total = 10
    model = _mlp(seed=1)
    kwargs = {"frequency": 3} if method == "gmp" else {}
    pruner = sparsify(model, method, target_sparsity=target, total_steps=total, start_step=1, **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner.bind(opt)
    fractions = []
    for x, y in _batches(total, seed=4):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        pruner.step()
        fractions.append(sparsity(model)["overall"])
    assert fractions[-1] == pytest.approx(target, abs=0.005)
    assert fractions[0] == 0.0
    assert fractions[5] < fractions[-1]
    if method == "gmp":
        for frac in sparsity(model)["layers"].values():
            assert frac == pytest.approx(target, abs=0.005)
    if method == "st3sigma":
        t = pruner.threshold
        assert t["0"] / t["4"] == pytest.approx(math.sqrt((4 + 128) / (8 + 2 + 3 + 3)), rel=1e-6)


def test_st3_rescale_and_dense_gradient():
    model = _mlp(seed=2)
    pruner = sparsify(model, "st3", target_sparsity=0.5, total_steps=1)
    pruner.step()
    conv = model[0]
    theta = conv.parametrizations.weight.original.detach()
    t = conv.parametrizations.weight[0].threshold
    mag = theta.abs()
    r = ((mag * (mag > t)).mean(dim=(1, 2, 3), keepdim=True) + 1e-6) / (
        mag.mean(dim=(1, 2, 3), keepdim=True) + 1e-6
    )
    expected = 1.01 / (r + 0.01) * soft_threshold(theta, t)
    assert torch.allclose(conv.weight, expected)
    conv.weight.sum().backward()
    assert torch.equal(conv.parametrizations.weight.original.grad, torch.ones_like(theta))


def test_scheduled_threshold_order_of_operations():
    """First forward uses d = 0; step k installs D f(k/N); the last step installs D exactly."""
    total, d = 8, 0.2
    model = _mlp()
    pruner = sparsify(model, "slats", final_threshold=d, total_steps=total)
    assert pruner.threshold == 0.0
    assert sparsity(model)["overall"] == 0.0
    for k in range(1, total + 1):
        pruner.step()
        assert pruner.threshold == pytest.approx(d * schedules.slats_fraction(k / total))
    assert pruner.threshold == pytest.approx(d)
    with pytest.raises(RuntimeError, match="past total_steps=8"):
        pruner.step()


def test_include_exclude_and_defaults():
    model = _mlp()
    pruner = sparsify(model, "stds", final_threshold=0.1, total_steps=4, exclude=["4"])
    assert list(pruner.layers) == ["0"] and pruner.method == "stds"
    assert not hasattr(model[4], "parametrizations")
    assert model[0].parametrizations.weight[0].grad == "ste"
    model = _mlp()
    pruner = sparsify(model, "str", include=["4*"])
    assert list(pruner.layers) == ["4"]
    assert model[4].parametrizations.weight[0].grad == "exact"
    assert isinstance(model[4].parametrizations.weight[0].threshold_logit, nn.Parameter)
    assert set(pruner.threshold) == {"4"}
    # dense registers nothing
    model = _mlp()
    pruner = sparsify(model, "dense", total_steps=2)
    assert set(pruner.layers) == {"0", "4"} and pruner.threshold == 0.0
    assert not any(hasattr(m, "parametrizations") for m in model.modules())
    assert pruner.regularization().item() == 0.0
    assert isinstance(pruner, Pruner)


def test_str_threshold_is_learned():
    model = _mlp()
    pruner = sparsify(model, "str", s_init=-2.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=0.1)
    before = pruner.threshold["0"]
    assert before == pytest.approx(1 / (1 + math.exp(2.0)))
    x, y = _batches(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    assert model[0].parametrizations.weight[0].threshold_logit.grad is not None
    opt.step()
    assert pruner.threshold["0"] != before


@pytest.mark.parametrize("after_forward", [False, True], ids=["fresh", "reusing-the-forward"])
def test_ltp_regularization_hand_values(after_forward):
    """Two layers with theta = (0, 1, 2) and (-1, 1): Var = 2/3 and 1, so with t_rel = 1.5 the temperatures
    are T = 1 and 1.5, and with tau = 1 the sigmoid arguments (theta^2 - tau)/T are (-1, 0, 3) and (0, 0)."""
    model = nn.Sequential(nn.Linear(3, 1, bias=False), nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 1.0, 2.0]]))
        model[1].weight.copy_(torch.tensor([[-1.0], [1.0]]))
    pruner = sparsify(model, "ltp", l0_coeff=0.3, temperature=1.5, tau_init=1.0)
    if after_forward:  # the soft L0 then comes from the forward's own node
        model(torch.ones(1, 3))
    reg = pruner.regularization()

    def sig(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    masks = [sig(-1.0), 0.5, sig(3.0), 0.5, 0.5]
    assert reg.item() == pytest.approx(0.3 * sum(masks) / 5, rel=1e-6)  # 0.16329...
    reg.backward()
    slope = [m * (1 - m) for m in masks]  # d sigma / dz
    # d reg / d tau_l = -(0.3 / 5) sum_l sigma' / T_l: the L0 term pushes tau up
    assert model[0].parametrizations.weight[0].tau.grad.item() == pytest.approx(
        -0.06 * sum(slope[:3]), rel=1e-5
    )
    assert model[1].parametrizations.weight[0].tau.grad.item() == pytest.approx(-0.06 * 0.5 / 1.5, rel=1e-5)
    # d reg / d theta_k = (0.3 / 5) sigma'_k 2 theta_k / T (T detached)
    grad0 = model[0].parametrizations.weight.original.grad.flatten().tolist()
    grad1 = model[1].parametrizations.weight.original.grad.flatten().tolist()
    assert grad0 == pytest.approx([0.0, 0.06 * 0.25 * 2, 0.06 * slope[2] * 4], rel=1e-5, abs=1e-12)
    assert grad1 == pytest.approx([-0.02, 0.02], rel=1e-5)
    model.eval()  # hard mask theta^2 > tau: (0, 1, 2) keeps 2, (-1, 1) keeps nothing
    assert sparsity(model)["overall"] == pytest.approx(4 / 5)
    assert pruner.threshold == pytest.approx({"0": 1.0, "1": 1.0})


def test_ltp_model_deep_copies_after_a_training_forward():
    """The training forward caches its L0 node for ``regularization()``; ``copy.deepcopy`` (the training
    scripts' ``--export``) cannot copy a graph node, so the copy leaves the cache out."""
    model = _mlp()
    sparsify(model, "ltp", tau_init=0.01)
    x = _batches(1)[0][0]
    model(x)
    twin = copy.deepcopy(model)
    assert twin[0].parametrizations.weight[0]._last is None
    model.eval(), twin.eval()
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))
        assert torch.equal(twin[0].weight, model[0].weight) and bool(model[0].weight.eq(0).any())


def _sj_net():
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Conv2d(2, 8, 3, padding=1, bias=False),
        layer.BatchNorm2d(8),
        neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=True),
        layer.Conv2d(8, 8, 3, padding=1, bias=False),
        layer.BatchNorm2d(8),
        neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=True),
        layer.Flatten(),
        layer.Linear(8 * 6 * 6, 4),
    )
    functional.set_step_mode(net, "m")
    return net


def test_spikingjelly_multistep_net():
    net = _sj_net()
    total = 6
    pruner = sparsify(net, "slats", final_threshold=0.1, total_steps=total)
    assert set(pruner.layers) == {"0", "3", "7"}
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x = torch.rand(4, 3, 2, 6, 6)  # [T, N, C, H, W]
    y = torch.tensor([0, 1, 2])
    for _ in range(total):
        out = net(x).mean(0)
        loss = nn.functional.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        assert net[3].parametrizations.weight.original.grad.abs().sum() > 0
        opt.step()
        pruner.step()
        functional.reset_net(net)
    s = sparsity(net)
    assert 0 < s["overall"] < 1 and set(s["layers"]) == {"0", "3", "7"}
    with torch.no_grad():
        out = net(x)
    functional.reset_net(net)
    snnprune.finalize(net)
    with torch.no_grad():
        assert torch.equal(net(x), out)
    assert sparsity(net) == s


def test_torchvision_resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    pruner = sparsify(model, "st3", target_sparsity=0.7, total_steps=2, exclude=["conv1"])
    assert (
        "fc" in pruner.layers
        and "conv1" not in pruner.layers
        and "layer1.0.downsample.0" not in pruner.layers
    )
    assert "layer2.0.downsample.0" in pruner.layers and len(pruner.layers) == 20
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        pruner.step()
    assert sparsity(model)["overall"] == pytest.approx(0.7, abs=0.005)
    assert torch.isfinite(model(x)).all()


def test_gmp_default_frequency_prunes_short_runs_gradually():
    # Zhu & Gupta's 100-step interval, capped at a tenth of the ramp: a 60-step ramp updates every 6 steps,
    # so the sparsity rises in small increments instead of one jump at the end.
    pruner = sparsify(_mlp(), "gmp", target_sparsity=0.8, total_steps=80, end_step=60)
    assert pruner.frequency == 6
    assert sparsify(_mlp(), "gmp", target_sparsity=0.8, total_steps=5000).frequency == 100
    seen = []
    for _ in range(80):
        pruner.step()
        seen.append(pruner.current_sparsity)
    jumps = [b - a for a, b in itertools.pairwise(seen) if b != a]
    assert len(jumps) >= 9 and max(jumps) < 0.3
    assert seen[-1] == pytest.approx(0.8)


def test_gmp_keeps_ceil_of_the_remaining_fraction_in_every_layer():
    # (1 - s) n rounded up: a 16-weight layer at 99.5 % keeps 1 weight (never a dead layer), 512 keep 3
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(32, 16, bias=False))
    pruner = sparsify(model, "gmp", target_sparsity=0.995, total_steps=2, frequency=1)
    pruner.step()
    pruner.step()
    assert [int(m.weight.count_nonzero()) for m in model] == [1, 3]


def test_global_quantile_matches_torch_quantile_with_ties():
    from snnprune.methods.st3 import global_quantile

    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        v = torch.randn(int(torch.randint(1, 500, (1,), generator=g)), generator=g).abs()
        if trial % 2:
            v = torch.round(v * 3) / 3  # many repeated values
        for q in (0.0, 0.37, 0.5, 0.9, 1.0):
            assert torch.allclose(global_quantile(v, q), torch.quantile(v, q), rtol=1e-6, atol=0)


@pytest.mark.parametrize("hint_factor", [None, 1.0005, 3.0])
def test_global_quantile_bracketed_search_equals_the_full_selection(hint_factor, monkeypatch):
    """ST-3's bracketed search (near the previous threshold, else from a strided sample) gives exactly the
    kthvalue answer, ties included, over several tensors at once, without a full selection."""
    from snnprune.methods import st3

    calls: list[int] = []
    kthvalue = torch.kthvalue

    def counted(values, *args, **kwargs):
        if values.numel() > 1 << 17:  # a selection over (nearly) all values, not over a bracket
            calls.append(1)
        return kthvalue(values, *args, **kwargs)

    g = torch.Generator().manual_seed(1)
    for trial in range(4):
        sizes = [200_000, int(torch.randint(1, 100_000, (1,), generator=g)), 80_000]  # > 2^18 together
        parts = [torch.randn(k, generator=g).abs() for k in sizes]
        if trial % 2:
            parts = [torch.round(p * 40) / 40 for p in parts]  # many repeated values
        flat = torch.cat(parts)
        for q in (0.0, 0.5, 0.9, 0.97, 1.0):
            monkeypatch.setattr(st3, "_BRACKET_MIN", 1 << 40)
            full = st3.global_quantile(flat, q)  # the reference: the full kthvalue selection
            monkeypatch.undo()
            hint = None if hint_factor is None else max(float(full), 0.5) * hint_factor
            calls.clear()
            monkeypatch.setattr(torch, "kthvalue", counted)
            got = st3.global_quantile(parts, q, hint=hint)
            monkeypatch.undo()
            assert torch.equal(got, full), (trial, q)
            assert torch.allclose(got, torch.quantile(flat, q), rtol=1e-5, atol=0)
            assert not calls, "the bracketed search fell back to the full selection"


def test_global_quantile_bracketed_search_on_adversarial_inputs(monkeypatch):
    """The path a GPU takes (no hint, strided-sample bracket, counts read once) equals the full kthvalue
    selection exactly on many zeros, ties, and a strided sample that misses (then the full selection)."""
    from snnprune.methods import st3

    n = 300_000
    zeros = torch.zeros(n)
    zeros[-1000:] = torch.arange(1000, dtype=torch.float32)  # mostly zeros
    ties = torch.full((n,), 0.25)
    ties[::3] = 0.5  # two values, repeated
    miss = torch.full((n,), 10.0)
    miss[:: n // 65536] = 0.0  # the strided sample sees only zeros: its bracket misses
    for values in (zeros, ties, miss):
        for q in (0.0, 0.3, 0.5, 0.9, 0.999, 1.0):
            monkeypatch.setattr(st3, "_BRACKET_MIN", 1 << 40)
            full = st3.global_quantile(values, q)
            monkeypatch.undo()
            got = st3.global_quantile([values[:100_000], values[100_000:]], q)
            assert torch.equal(got, full), q
            assert torch.allclose(got, torch.quantile(values, q), rtol=1e-5, atol=0)
