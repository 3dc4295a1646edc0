"""Tests of the Pruner API: open registry, two-step construction, thresholds, state checks, misuse."""

from __future__ import annotations

import io
import math
import warnings
from typing import Literal

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

import snnprune
from snnprune import list_methods, sparsify
from snnprune.methods import ScheduledThresholdPruner, register_method, unregister_method

THRESHOLD_KWARGS = {
    "dense": {},
    "lats": {"final_threshold": 0.05},
    "slats": {"final_threshold": 0.05},
    "pgh": {"final_threshold": 0.05, "beta": 0.1},
    "stds": {"final_threshold": 0.05},
    "str": {"s_init": -4.0},
    "ltp": {"tau_init": 1e-3},
    "st3": {"target_sparsity": 0.5},
    "st3sigma": {"target_sparsity": 0.5},
    "gmp": {"target_sparsity": 0.5, "frequency": 1},
    "imp": {"target_sparsity": 0.5, "rounds": 2},
    "shi2024": {"penalty": 1e-3},
}


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4)
    )


def _tied_net() -> nn.Sequential:
    """Two Linear layers sharing one weight Parameter (``2.weight = 0.weight``)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    net[2].weight = net[0].weight
    return net


def _snapshot(model: nn.Module) -> tuple:
    return (
        [type(m) for m in model.modules()],
        {k: v.clone() for k, v in model.state_dict().items()},
        [id(p) for p in model.parameters()],
        [sorted(vars(m)) for m in model.modules()],
    )


def _same(a: tuple, b: tuple) -> bool:
    return (
        a[0] == b[0]
        and a[1].keys() == b[1].keys()
        and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
        and a[2] == b[2]
        and a[3] == b[3]
    )


def _train_steps(model, pruner, opt, sched, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x, y = torch.randn(8, 2, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad()
        (nn.functional.cross_entropy(model(x), y) + pruner.regularization()).backward()
        opt.step()
        pruner.step()
        if sched is not None:
            sched.step()


# ----------------------------------------------------------------------------------------------- registry
def test_list_methods_is_live_and_get_method_finds_each():
    builtin = tuple("dense lats slats pgh stds str ltp st3 st3sigma gmp imp shi2024".split())
    assert list_methods() == builtin and isinstance(list_methods(), tuple)
    assert not hasattr(snnprune, "METHODS") and not hasattr(snnprune.methods, "METHODS")
    assert [snnprune.get_method(m).method for m in builtin] == list(builtin)

    @register_method("test_linear_d")
    class LinearD(ScheduledThresholdPruner):
        def fraction(self, x: float) -> float:
            return x

    try:
        assert (
            list_methods() == (*builtin, "test_linear_d") and snnprune.get_method("test_linear_d") is LinearD
        )
        model = _net()
        pruner = sparsify(model, "test_linear_d", final_threshold=0.2, total_steps=4)
        assert isinstance(pruner, LinearD) and pruner.method == "test_linear_d"
        for k in range(1, 5):
            pruner.step()
            assert pruner.threshold == pytest.approx(0.2 * k / 4)
        with pytest.raises(ValueError, match="already registered by"):
            register_method("test_linear_d")(type("Other", (ScheduledThresholdPruner,), {}))
    finally:
        assert unregister_method("test_linear_d") is LinearD
    assert list_methods() == builtin
    with pytest.raises(ValueError, match=r"unknown pruning method 'test_linear_d'; choose one of"):
        unregister_method("test_linear_d")
    with pytest.raises(
        ValueError, match=r"unknown pruning method 'test_linear_d'; choose one of \('dense', "
    ):
        snnprune.get_method("test_linear_d")


def test_method_keywords_give_type_default_and_docstring_line():
    from snnprune.methods import MethodKeyword, method_keywords, method_kwargs

    class Curved(ScheduledThresholdPruner):
        """A test schedule.

        Args:
            k: curvature of the ramp,
                non-zero.
            mode: how to bend.
        """

        def __init__(self, *, k: float = 2.0, mode="up", count: int | None = None, **base):
            super().__init__(**base)
            self.k, self.mode, self.count = k, mode, count

        def fraction(self, x: float) -> float:
            return x**self.k

    kws = method_keywords(Curved)
    assert kws["k"] == MethodKeyword(float, 2.0, "curvature of the ramp, non-zero.")
    assert kws["mode"] == MethodKeyword(str, "up", "how to bend.")  # the default's type
    assert kws["count"] == MethodKeyword(int, None, "")  # the annotation's type, no docstring entry
    # the parent's keywords through **base, with the parent's Args: lines
    assert kws["final_threshold"].type is float and kws["final_threshold"].help.startswith(":math:`D")
    assert set(kws) == method_kwargs(Curved)
    beta = method_keywords("pgh")["beta"]
    assert (beta.type, beta.default) == (float, None) and "decay" in beta.help


def test_literal_annotation_gives_the_choices_and_check_choice_refuses_others():
    from snnprune.methods import KeywordError, check_choice, method_keywords

    class Bent(ScheduledThresholdPruner):
        def __init__(self, *, side: Literal["up", "down"] = "up", tilt: Literal[1, 2] | None = None, **base):
            super().__init__(**base)
            self.side = check_choice(Bent, "side", side)
            self.tilt = check_choice(Bent, "tilt", tilt)

        def fraction(self, x: float) -> float:
            return x

    kws = method_keywords(Bent)
    assert (kws["side"].choices, kws["side"].type) == (("up", "down"), str)
    assert (kws["tilt"].choices, kws["tilt"].type) == ((1, 2), int)  # Optional[Literal]: the literal's
    assert kws["filter_scale"].choices == ("size", "layer")  # the parent's, through **base
    assert kws["final_threshold"].choices is None
    assert Bent(final_threshold=0.1, total_steps=4, tilt=None).tilt is None  # None: the default
    with pytest.raises(KeywordError, match=r"side must be one of 'up', 'down', got 'left'") as err:
        Bent(final_threshold=0.1, total_steps=4, side="left")
    assert err.value.keyword == "side"


# Each refusal of a built-in constructor names the keyword it concerns (the training scripts blame its flag).
KEYWORD_ERRORS = [
    ("slats", {"total_steps": 4}, "final_threshold"),
    ("slats", {"final_threshold": -1.0, "total_steps": 4}, "final_threshold"),
    ("slats", {"final_threshold": 0.2, "granularity": "2:4", "total_steps": 4}, "final_threshold"),
    ("slats", {"final_threshold": 0.1, "granularity": "block", "total_steps": 4}, "granularity"),
    ("slats", {"final_threshold": 0.1, "granularity": "4:4", "total_steps": 4}, "granularity"),
    ("slats", {"final_threshold": 0.1, "grad": "odd", "total_steps": 4}, "grad"),
    ("slats", {"final_threshold": 0.1, "filter_scale": "layer", "total_steps": 4}, "filter_scale"),
    ("slats", {"final_threshold": 0.1, "filter_scale": "x", "granularity": "filter", "total_steps": 4}, "filter_scale"),
    ("lats", {"total_steps": 4}, "final_threshold"),
    ("lats", {"final_threshold": 0.1, "l1_coeff": 0.1, "total_steps": 4}, "final_threshold"),
    ("lats", {"l1_coeff": 0.1, "granularity": "2:4", "total_steps": 4}, "l1_coeff"),
    ("lats", {"l1_coeff": -1.0, "total_steps": 4}, "l1_coeff"),
    ("lats", {"final_threshold": 0.1, "schedule": "cosine", "total_steps": 4}, "schedule"),
    ("lats", {"final_threshold": 0.1, "schedule": "closed_form", "epoch_length": 3, "total_steps": 4}, "schedule"),
    ("pgh", {"final_threshold": 0.1, "total_steps": 4}, "beta"),
    ("pgh", {"final_threshold": 0.1, "beta": 0.0, "total_steps": 4}, "beta"),
    ("stds", {"final_threshold": 0.1, "shape": "cosine", "total_steps": 4}, "shape"),
    ("str", {"s_init": float("inf")}, "s_init"),
    ("str", {"grad": "odd"}, "grad"),
    ("ltp", {"l0_coeff": -1.0}, "l0_coeff"),
    ("ltp", {"temperature": 0.0}, "temperature"),
    ("ltp", {"tau_init": -1.0}, "tau_init"),
    ("ltp", {"gradient": "odd"}, "gradient"),
    ("gmp", {"total_steps": 4}, "target_sparsity"),
    ("gmp", {"target_sparsity": 1.0, "total_steps": 4}, "target_sparsity"),
    ("gmp", {"target_sparsity": 0.9, "granularity": "2:4", "total_steps": 4}, "target_sparsity"),
    ("gmp", {"target_sparsity": 0.5, "granularity": "filter", "total_steps": 4}, "granularity"),
    ("gmp", {"target_sparsity": 0.5, "initial_sparsity": 0.6, "total_steps": 4}, "initial_sparsity"),
    ("gmp", {"target_sparsity": 0.5, "frequency": 0, "total_steps": 4}, "frequency"),
    ("gmp", {"target_sparsity": 0.5, "end_step": 5, "total_steps": 4}, "end_step"),
    ("st3", {"total_steps": 4}, "target_sparsity"),
    ("st3", {"target_sparsity": 0.5, "finetune_steps": 4, "total_steps": 4}, "finetune_steps"),
    ("st3", {"target_sparsity": 0.5, "finetune_steps": 2, "end_step": 3, "total_steps": 4}, "end_step"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "kwargs", "keyword"), KEYWORD_ERRORS, ids=[f"{m}-{k}" for m, _, k in KEYWORD_ERRORS]
)
def test_constructor_refusals_carry_their_keyword(method, kwargs, keyword):
    from snnprune.methods import KeywordError

    with pytest.raises(KeywordError) as err:
        snnprune.get_method(method)(**kwargs)
    assert err.value.keyword == keyword and keyword in str(err.value)


def test_options_of_a_subclass_follow_its_own_signature():
    """A subclass with an explicit signature takes only its own options (the parent's are reachable only
    through **kwargs), so --granularity on it is a clean usage error and its config round-trips."""
    from snnprune.methods import method_kwargs

    class Explicit(ScheduledThresholdPruner):
        def __init__(self, *, final_threshold=None, k=2.0, grad="ste", total_steps=None, start_step=0):
            super().__init__(
                final_threshold=final_threshold, grad=grad, total_steps=total_steps, start_step=start_step
            )
            self.k = float(k)

        def fraction(self, x: float) -> float:
            return x**self.k

    class Forwarding(ScheduledThresholdPruner):
        def __init__(self, *, k=2.0, **base):
            super().__init__(**base)
            self.k = float(k)

        def fraction(self, x: float) -> float:
            return x**self.k

    explicit = {"final_threshold", "k", "grad", "total_steps", "start_step"}
    assert method_kwargs(Explicit) == explicit  # a class need not be registered
    with pytest.raises(TypeError, match="method must be a method name or a Pruner subclass, got 3"):
        method_kwargs(3)
    register_method("test_explicit")(Explicit)
    register_method("test_forwarding")(Forwarding)
    try:
        assert method_kwargs("test_explicit") == explicit
        assert {"k", "granularity", "filter_scale", "final_threshold"} <= method_kwargs("test_forwarding")
        with pytest.raises(TypeError, match="granularity"):
            sparsify(_net(), "test_explicit", final_threshold=0.1, total_steps=4, granularity="filter")
        pruner = sparsify(_net(), "test_explicit", final_threshold=0.1, k=3.0, total_steps=4)
        assert pruner.config() == {
            "final_threshold": 0.1,
            "grad": "ste",
            "k": 3.0,
            "start_step": 0,
            "total_steps": 4,
        }
        Explicit(**pruner.config())  # the saved configuration builds the pruner again
    finally:
        unregister_method("test_explicit")
        unregister_method("test_forwarding")


@pytest.mark.parametrize(
    ("name", "obj", "exc", "match"),
    [
        ("", ScheduledThresholdPruner, ValueError, "non-empty string without whitespace"),
        ("my method", ScheduledThresholdPruner, ValueError, "non-empty string without whitespace"),
        ("fine_name", int, TypeError, "decorates Pruner subclasses"),
    ],
)
def test_register_method_rejects(name, obj, exc, match):
    with pytest.raises(exc, match=match):
        register_method(name)(obj)
    assert name not in list_methods()


# ------------------------------------------------------------------------------ two-step construction
def test_construction_validates_without_a_model_then_prepares():
    pruner = snnprune.methods.SLATSPruner(final_threshold=0.1, total_steps=10)
    assert pruner.layers == {}
    with pytest.raises(RuntimeError, match=r"call pruner.prepare\(model\)"):
        pruner.step()
    model = _net()
    assert pruner.prepare(model, exclude=["4"]) is pruner
    assert list(pruner.layers) == ["0"] and hasattr(model[0], "parametrizations")
    with pytest.raises(RuntimeError, match="already prepared"):
        pruner.prepare(_net())


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (
            {"method": "slats", "final_threshold": 0.1, "total_steps": 3, "include": ["nope*"]},
            ValueError,
            "matches no",
        ),
        ({"method": "slats", "final_threshold": -1.0, "total_steps": 3}, ValueError, "final_threshold"),
        ({"method": "gmp", "target_sparsity": 0.5, "total_steps": 3, "bogus": 1}, TypeError, "'bogus'"),
        ({"method": "lats", "final_threshold": 0.1, "total_steps": 3, "bogus": None}, TypeError, "'bogus'"),
    ],
)
def test_failed_sparsify_leaves_the_model_as_it_was(kwargs, exc, match):
    model = _net()
    before = _snapshot(model)
    kwargs = dict(kwargs)
    method = kwargs.pop("method")
    with pytest.raises(exc, match=match):
        sparsify(model, method, **kwargs)
    assert _same(before, _snapshot(model))


def test_failure_on_a_later_layer_rolls_back_the_earlier_ones():
    model = _net()
    snnprune.register_soft_threshold(model[4], threshold=0.0)  # the second layer is already parametrized
    before = _snapshot(model)
    with pytest.raises(ValueError, match="already parametrized"):
        sparsify(model, "slats", final_threshold=0.1, total_steps=3)
    assert _same(before, _snapshot(model))
    assert not hasattr(model[0], "parametrizations") and type(model[0]) is nn.Conv2d
    # the rolled-back layer is a plain Conv2d again and can be prepared by another pruner
    sparsify(model, "slats", final_threshold=0.1, total_steps=3, include=["0"])


@pytest.mark.parametrize("method", list_methods())
def test_a_shared_weight_is_refused_and_stays_tied(method):
    """Every method that parametrizes refuses two layers sharing one weight; the model stays as it was."""
    model = _tied_net()
    weight, state = model[0].weight, {k: v.clone() for k, v in model.state_dict().items()}
    if method == "dense":  # attaches nothing: the tied model trains as it is
        sparsify(model, method, total_steps=6)
    else:
        with pytest.raises(ValueError, match=f"^{method}: layers '0' and '2' share one weight Parameter"):
            sparsify(model, method, total_steps=6, **THRESHOLD_KWARGS[method])
    assert model[0].weight is weight and model[2].weight is weight
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear] and len(list(model.parameters())) == 3
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], v) for k, v in state.items())


# --------------------------------------------------------------------------- one meaning per name
@pytest.mark.parametrize("method", list_methods())
def test_get_last_threshold_is_a_threshold_per_layer(method):
    model = _net()
    pruner = sparsify(model, method, total_steps=6, **THRESHOLD_KWARGS[method])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner.bind(opt)
    _train_steps(model, pruner, opt, None, 6)
    last = pruner.get_last_threshold()
    assert set(last) == set(pruner.layers) and all(isinstance(v, float) for v in last.values())
    snapshot = pruner.threshold_snapshot()  # what the training loop logs per step without a host sync
    if method in ("str", "ltp", "st3", "st3sigma"):
        assert (
            isinstance(snapshot, torch.Tensor) and pruner.thresholds_from_snapshot(snapshot.tolist()) == last
        )
    else:
        assert snapshot is None
    t = pruner.threshold
    if isinstance(t, dict):
        assert t == last
    else:
        assert all(v == t for v in last.values())
    model.eval()
    for name, module in pruner.layers.items():
        w = module.weight.detach()
        if method in ("lats", "slats", "pgh", "stds", "st3", "st3sigma", "str"):
            # soft threshold: every raw weight at or below the threshold is exactly zero
            theta = module.parametrizations.weight.original.detach()
            assert bool((w[theta.abs() <= last[name] * (1 - 1e-6)] == 0).all())
            assert last[name] > 0
        elif method == "ltp":
            theta = module.parametrizations.weight.original.detach()
            assert torch.equal(w == 0, theta.pow(2) <= last[name])
        elif method == "gmp":
            theta = module.parametrizations.weight.original.detach()
            kept = theta.abs()[w != 0]
            assert last[name] > 0 and bool((kept >= last[name]).all())
        else:
            assert last[name] == 0.0
    if method in ("gmp", "st3", "st3sigma"):
        assert pruner.target_sparsity == 0.5 and pruner.current_sparsity == pytest.approx(0.5)


# ------------------------------------------------------------------------ model is the source of truth
def _bound(model, method, **kwargs):
    """``method`` attached to ``model`` and bound to a plain SGD optimizer: ``(pruner, optimizer)``."""
    pruner = sparsify(model, method, **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner.bind(opt)
    return pruner, opt


def _trained_lats():
    model = _net()
    pruner = sparsify(model, "lats", final_threshold=0.1, total_steps=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = CosineAnnealingLR(opt, 8)
    pruner.bind(opt, sched)
    _train_steps(model, pruner, opt, sched, 5)
    return model, pruner


@pytest.mark.parametrize("method", ["lats", "slats", "st3", "gmp"])
def test_model_checkpoint_without_pruner_state_raises_instead_of_restarting(method):
    kwargs = {"total_steps": 8, **THRESHOLD_KWARGS[method]}
    model = _net()
    pruner, opt = _bound(model, method, **kwargs)
    _train_steps(model, pruner, opt, None, 5)
    fresh = _net(seed=1)
    fresh_pruner, _ = _bound(fresh, method, **kwargs)
    fresh.load_state_dict(model.state_dict())
    before = fresh.state_dict()
    with pytest.raises(RuntimeError, match=r"pruner.load_state_dict\(checkpoint\['pruner'\]\)"):
        fresh_pruner.step()
    assert fresh_pruner.step_count == 0
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in before.items())  # nothing was restarted
    fresh_pruner.load_state_dict(pruner.state_dict())
    fresh_pruner.step()  # continues from step 5
    assert fresh_pruner.step_count == 6


@pytest.mark.parametrize("method", [m for m in THRESHOLD_KWARGS if m != "dense"])
def test_resume_where_the_default_device_is_not_the_models(method):
    """A CPU model restored and stepped while the default device is ``meta`` (as a GPU model under a CPU
    default, or a CPU model under ``torch.set_default_device("cuda")``): every tensor the pruner makes is
    on the weights' device, so thresholds read back equal and the next steps run."""
    kwargs = {"total_steps": 8, **THRESHOLD_KWARGS[method]}
    model = _net()
    pruner, opt = _bound(model, method, **kwargs)
    _train_steps(model, pruner, opt, None, 4)
    fresh = _net(seed=1)
    g = torch.Generator().manual_seed(5)
    batches = [
        (torch.randn(8, 2, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(2)
    ]
    with torch.device("meta"):
        fresh_pruner, fresh_opt = _bound(fresh, method, **kwargs)
        fresh.load_state_dict(model.state_dict())
        fresh_pruner.load_state_dict(pruner.state_dict())
        assert fresh_pruner.get_last_threshold() == pruner.get_last_threshold()
        for net, pr, op in ((fresh, fresh_pruner, fresh_opt), (model, pruner, opt)):
            for x, y in batches:
                op.zero_grad()
                (nn.functional.cross_entropy(net(x), y) + pr.regularization()).backward()
                op.step()
                pr.step()
        assert fresh_pruner.get_last_threshold() == pruner.get_last_threshold()
    assert all(t.device.type == "cpu" for t in fresh.state_dict().values())


@pytest.mark.parametrize("method", ["str", "ltp"])
def test_learned_thresholds_continue_from_the_model(method):
    model = _net()
    pruner = sparsify(model, method, **THRESHOLD_KWARGS[method])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    _train_steps(model, pruner, opt, None, 3)
    fresh = _net(seed=1)
    fresh_pruner = sparsify(fresh, method, **THRESHOLD_KWARGS[method])
    fresh.load_state_dict(model.state_dict())
    assert fresh_pruner.get_last_threshold() == pruner.get_last_threshold()
    fresh_pruner.step()


# ------------------------------------------------------------------------------ state that checks itself
def test_state_dict_carries_the_configuration():
    pruner = sparsify(_net(), "pgh", final_threshold=0.05, beta=0.1, total_steps=8, start_step=2)
    state = pruner.state_dict()
    assert state["method"] == "pgh" and state["step_count"] == 0
    assert state["config"] == {
        "beta": 0.1,
        "filter_scale": None,
        "final_threshold": 0.05,
        "grad": "ste",
        "granularity": "weight",
        "start_step": 2,
        "total_steps": 8,
    }


@pytest.mark.parametrize(
    ("method", "saved", "mine", "match"),
    [
        (
            "slats",
            {"total_steps": 8},
            {"total_steps": 10},
            "saved with total_steps=8, but this pruner has total_steps=10",
        ),
        (
            "slats",
            {"final_threshold": 0.1},
            {"final_threshold": 0.2},
            "final_threshold=0.1, but this pruner has final_threshold=0.2",
        ),
        ("pgh", {"beta": 0.1}, {"beta": 0.5}, "beta=0.1, but this pruner has beta=0.5"),
        ("stds", {"shape": "sine"}, {"shape": "linear"}, "shape='sine', but this pruner has shape='linear'"),
        ("lats", {"schedule": "lr"}, {"schedule": "closed_form", "epoch_length": 2}, "epoch_length=None"),
        (
            "st3",
            {"target_sparsity": 0.5},
            {"target_sparsity": 0.6},
            "target_sparsity=0.5, but this pruner has target_sparsity=0.6",
        ),
        ("gmp", {"start_step": 0}, {"start_step": 2}, "start_step=0, but this pruner has start_step=2"),
        ("str", {"s_init": -4.0}, {"s_init": -5.0}, "s_init=-4.0, but this pruner has s_init=-5.0"),
    ],
)
def test_load_state_dict_rejects_another_configuration(method, saved, mine, match):
    base = {"total_steps": 8, **THRESHOLD_KWARGS[method]}
    state = sparsify(_net(), method, **{**base, **saved}).state_dict()
    pruner = sparsify(_net(), method, **{**base, **mine})
    with pytest.raises(ValueError, match=match):
        pruner.load_state_dict(state)


@pytest.mark.parametrize(
    ("mutate", "exc", "match"),
    [
        (lambda s: s.pop("config"), ValueError, r"pruner state is missing \['config'\]"),
        (lambda s: s.pop("step_count"), ValueError, r"pruner state is missing \['step_count'\]"),
        (lambda s: s.pop("lr_sum"), ValueError, "missing key 'lr_sum'"),
        (lambda s: s.update(method="gmp"), ValueError, "state is for method 'gmp', this pruner is 'lats'"),
        (lambda s: s.update(step_count=99), ValueError, r"step_count=99 outside \[0, total_steps=8\]"),
    ],
)
def test_load_state_dict_reports_bad_states(mutate, exc, match):
    _, pruner = _trained_lats()
    state = pruner.state_dict()
    mutate(state)
    with pytest.raises(exc, match=match):
        pruner.load_state_dict(state)
    with pytest.raises(TypeError, match=r"must be the dict from Pruner\.state_dict"):
        pruner.load_state_dict([("method", "lats")])


# ------------------------------------------------------------------------------------- misuse: errors
MISUSE_ERRORS = [
    ("unknown method", lambda: sparsify(_net(), "lasso"), ValueError, r"unknown pruning method 'lasso'.*'slats'"),
    ("method typo", lambda: sparsify(_net(), "LATS"), ValueError, r"unknown pruning method 'LATS'; did you mean 'lats'\?"),
    ("not a module", lambda: sparsify([nn.Linear(2, 2)], "slats"), TypeError, "expects an nn.Module as model, got list"),
    (
        "unknown keyword",
        lambda: sparsify(_net(), "slats", final_threshold=0.1, total_steps=3, beta=0.5),
        TypeError,
        r"unexpected keyword argument\(s\) 'beta' for method 'slats'; accepted: filter_scale, final_threshold, grad, granularity",
    ),
    (
        "unknown keyword set to None",
        lambda: sparsify(_net(), "lats", final_threshold=0.1, total_steps=3, bogus=None),
        TypeError,
        r"unexpected keyword argument\(s\) 'bogus' for method 'lats'; accepted: ",
    ),
    (
        "unknown keyword to a Pruner",
        lambda: snnprune.methods.LATSPruner(final_threshold=0.1, total_steps=3, bogus=None),
        TypeError,
        "unexpected keyword argument 'bogus'",
    ),
    (
        "infinite D",
        lambda: sparsify(_net(), "slats", final_threshold=math.inf, total_steps=3),
        ValueError,
        "final_threshold must be a finite number >= 0, got inf",
    ),
    (
        "non-integer total_steps",
        lambda: sparsify(_net(), "slats", final_threshold=0.1, total_steps=2.5),
        TypeError,
        r"total_steps must be an integer number of optimizer steps, got 2.5 \(float\)",
    ),
    (
        "non-integer start_step",
        lambda: sparsify(_net(), "gmp", target_sparsity=0.5, total_steps=8, start_step=1.0),
        TypeError,
        "start_step must be an integer",
    ),
    ("missing total_steps", lambda: sparsify(_net(), "slats", final_threshold=0.1), ValueError, "needs total_steps"),
    ("missing D", lambda: sparsify(_net(), "stds", total_steps=3), ValueError, "needs final_threshold"),
    ("start past the end", lambda: sparsify(_net(), "slats", final_threshold=0.1, total_steps=3, start_step=3), ValueError, "start_step must be in"),
    ("pgh beta", lambda: sparsify(_net(), "pgh", final_threshold=0.1, total_steps=3, beta=0.0), ValueError, r"beta must be a finite number > 0, got 0\.0"),
    ("pgh no beta", lambda: sparsify(_net(), "pgh", final_threshold=0.1, total_steps=3), ValueError, "pgh needs beta > 0"),
    ("weight filter_scale", lambda: sparsify(_net(), "lats", final_threshold=0.1, total_steps=3, filter_scale="layer"), ValueError, r"filter_scale='layer' applies to granularity='filter' only"),
    ("st3 target", lambda: sparsify(_net(), "st3", total_steps=3), ValueError, "needs target_sparsity"),
    ("gmp target", lambda: sparsify(_net(), "gmp", total_steps=3, target_sparsity=1.5), ValueError, r"target_sparsity must be in \[0, 1\), got 1\.5"),
    ("gmp no target", lambda: sparsify(_net(), "gmp", total_steps=3), ValueError, "gmp needs target_sparsity"),
    ("include", lambda: sparsify(_net(), "str", include=["layer9.*"]), ValueError, r"include pattern 'layer9\.\*' matches no"),
    ("exclude", lambda: sparsify(_net(), "str", exclude=["nope"]), ValueError, "exclude pattern 'nope' matches no"),
    ("empty selection", lambda: sparsify(_net(), "str", exclude=["*"]), ValueError, "leave no layer to prune"),
    (
        "no prunable layer",
        lambda: sparsify(nn.Sequential(nn.BatchNorm1d(3)), "slats", final_threshold=0.1, total_steps=3),
        ValueError,
        "has no prunable layer",
    ),
    (
        "closed form without epoch length",
        lambda: sparsify(_net(), "lats", final_threshold=0.1, total_steps=10, schedule="closed_form"),
        ValueError,
        r"closed_form' needs epoch_length .* got epoch_length=None",
    ),
    (
        "closed form, partial epochs",
        lambda: sparsify(_net(), "lats", final_threshold=0.1, total_steps=10, schedule="closed_form", epoch_length=3),
        ValueError,
        r"window \(total_steps - start_step = 10\) of whole epochs",
    ),
    ("lats without D or lambda", lambda: sparsify(_net(), "lats", total_steps=3), ValueError, "final_threshold \\(D\\) or l1_coeff"),
    ("lr_total inf", lambda: sparsify(_net(), "lats", final_threshold=0.1, lr_total=math.inf, total_steps=3), ValueError, "lr_total must be a finite"),
    ("ltp temperature", lambda: sparsify(_net(), "ltp", temperature=0.0), ValueError, "temperature must be > 0"),
    ("ltp gradient", lambda: sparsify(_net(), "ltp", gradient="approx"), ValueError, "ltp gradient must be one of"),
    ("st3 finetune", lambda: sparsify(_net(), "st3", target_sparsity=0.5, total_steps=4, finetune_steps=4), ValueError, "finetune_steps must be in"),
    ("bind a non-optimizer", lambda: sparsify(_net(), "str").bind("sgd"), TypeError, "needs a torch.optim.Optimizer"),
    ("D a bool", lambda: sparsify(_net(), "slats", final_threshold=True, total_steps=3), TypeError, r"final_threshold must be a number, got True \(bool\); pass one float"),
    ("D a list", lambda: sparsify(_net(), "lats", final_threshold=[0.1], total_steps=3), TypeError, r"final_threshold must be a number, got \[0.1\] \(list\)"),
    ("shared weight, str", lambda: sparsify(_tied_net(), "str"), ValueError, r"str: layers '0' and '2' share one weight Parameter, .*give each layer its own weight \(2\.weight = nn\.Parameter\(0\.weight\.detach\(\)\.clone\(\)\)\)"),
    ("lazy layer", lambda: sparsify(nn.Sequential(nn.Linear(2, 3), nn.LazyLinear(4)), "str"), ValueError, r"layer '1' \(LazyLinear\) has an uninitialized weight; run one forward pass"),
    ("meta-device model", lambda: sparsify(nn.Sequential(nn.Linear(2, 3, device="meta")), "str"), ValueError, r"layer '0' \(Linear\) has its weight on the meta device; materialize the model"),
    ("load_compact, narrower model", lambda: _load_compact_into_narrower(), ValueError, r"layer '1' has out_features=6 in Sequential, the compacted model has 8; build the model with the width"),
]  # fmt: skip


def _load_compact_into_narrower() -> None:
    from snnprune.structured import load_compact, save_compact

    buf = io.BytesIO()
    save_compact(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 8)), buf)
    buf.seek(0)
    load_compact(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 6)), buf)


@pytest.mark.parametrize(("case", "call", "exc", "match"), MISUSE_ERRORS, ids=[c[0] for c in MISUSE_ERRORS])
def test_misuse_raises_one_clear_error(case, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("method", ["slats", "gmp"])
def test_sparsity_has_one_denominator_before_and_after_finalize(method):
    """Every Conv/Linear weight counts, pruned or excluded: 144 conv + 512 linear weights, the linear kept
    dense, so the overall fraction is the conv's zeros / 656 in both states (and in a reloaded model)."""
    model = _net()
    pruner = sparsify(model, method, total_steps=1, exclude=["4"], **THRESHOLD_KWARGS[method])
    pruner.step()
    zeros = int((model[0].weight == 0).sum())
    assert zeros > 0
    before = snnprune.sparsity(model)
    assert before == {"overall": zeros / 656, "layers": {"0": zeros / 144, "4": 0.0}}
    snnprune.finalize(model)
    assert snnprune.sparsity(model) == before
    plain = _net(seed=1)
    plain.load_state_dict(model.state_dict())
    assert snnprune.sparsity(plain) == before


def test_step_and_threshold_checks_for_method_authors():
    from snnprune.methods import check_finite_nonnegative, check_steps

    assert (
        check_steps(3, "total_steps", "m") == 3 and type(check_steps(torch.tensor(4).item(), "n", "m")) is int
    )
    for bad in (2.5, True, "3", None):
        with pytest.raises(TypeError, match=r"m: frequency must be an integer number of optimizer steps"):
            check_steps(bad, "frequency", "m")
    assert check_finite_nonnegative(2, "k") == 2.0 and check_finite_nonnegative(0.0, "k") == 0.0
    for bad in (-1e-9, math.inf, math.nan):
        with pytest.raises(ValueError, match="k must be a finite number >= 0"):
            check_finite_nonnegative(bad, "k")


def test_step_errors():
    model = _net()
    pruner = sparsify(model, "slats", final_threshold=0.1, total_steps=2)
    pruner.step()
    snnprune.finalize(model)
    with pytest.raises(RuntimeError, match=r"the model was finalized .* only after the last step"):
        pruner.step()
    pruner = sparsify(_net(), "gmp", target_sparsity=0.5, total_steps=2)
    pruner.step()
    pruner.step()
    with pytest.raises(RuntimeError, match="past total_steps=2"):
        pruner.step()
    pruner = sparsify(_net(), "lats", final_threshold=0.1, total_steps=3)
    with pytest.raises(RuntimeError, match=r"call pruner.bind\(optimizer"):
        pruner.step()
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = sparsify(model, "lats", l1_coeff=0.1, total_steps=3, optimizer=opt)
    opt.param_groups[0]["lr"] = float("nan")
    with pytest.raises(ValueError, match="learning rate is nan"):
        pruner.step()
    assert pruner.step_count == 0 and pruner.threshold == 0.0  # a failed step is not counted
    opt.param_groups[0]["lr"] = -0.9
    with pytest.raises(ValueError, match="negative/NaN"):
        pruner.step()
    assert pruner.step_count == 0 and pruner.lr_sum == 0.0
    opt.param_groups[0]["lr"] = 0.1
    pruner.step()
    assert pruner.lr_sum == pytest.approx(0.1) and pruner.threshold == pytest.approx(0.01)


def test_models_create_model_raises_type_error_for_unknown_keywords():
    import models

    with pytest.raises(TypeError, match="unexpected keyword argument"):
        models.create_model("ann_resnet18", num_classes=10, bogus=1)


# ----------------------------------------------------------------------------------- misuse: warnings
def test_scheduler_stepped_before_pruner_warns_once():
    model = _net()
    pruner = sparsify(model, "lats", final_threshold=0.1, total_steps=6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = CosineAnnealingLR(opt, 6)
    pruner.bind(opt, sched)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            opt.step()
            sched.step()
            pruner.step()
    order = [w for w in caught if "before `pruner.step()`" in str(w.message)]
    assert len(order) == 1 and "LATS sums the wrong learning rates" in str(order[0].message)


@pytest.mark.parametrize("per_epoch", [False, True])
def test_right_order_and_skipped_optimizer_steps_do_not_warn(per_epoch):
    model = _net()
    spe, epochs = 3, 2
    pruner = sparsify(model, "lats", final_threshold=0.1, total_steps=spe * epochs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = CosineAnnealingLR(opt, epochs if per_epoch else spe * epochs)
    pruner.bind(opt, sched, spe if per_epoch else None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for j in range(spe * epochs):
            if j != 2:  # step 2: the optimizer step is skipped (as GradScaler does on inf gradients)
                opt.step()
            pruner.step()
            if not per_epoch or (j + 1) % spe == 0:
                sched.step()
    assert pruner.threshold == pytest.approx(0.1, rel=1e-12)


@pytest.mark.parametrize(
    ("bound_per_epoch", "stepped_per_epoch", "cause"),
    [
        (True, False, "steps once every steps_per_epoch=4 optimizer steps; if it steps every iteration"),
        (
            False,
            True,
            "steps after every optimizer step \\(steps_per_epoch=None\\); if it steps once per epoch",
        ),
    ],
)
def test_lats_warns_when_the_lr_plan_is_missed(bound_per_epoch, stepped_per_epoch, cause):
    spe, epochs = 4, 5
    model = _net()
    pruner = sparsify(model, "lats", final_threshold=0.1, total_steps=spe * epochs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = CosineAnnealingLR(opt, epochs if stepped_per_epoch else spe * epochs)
    pruner.bind(opt, sched, spe if bound_per_epoch else None)
    with pytest.warns(
        UserWarning,
        match=f"instead of final_threshold=0.1. Likely cause: bind\\(\\) was told the lr scheduler {cause}",
    ):
        for j in range(spe * epochs):
            opt.step()
            pruner.step()
            if not stepped_per_epoch or (j + 1) % spe == 0:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch's own warning when the scheduler runs past T_max
                    sched.step()
    assert abs(pruner.threshold - 0.1) > 1e-3


# What a run's default folder name shows of a configuration (Pruner.run_name_part), by hand.
RUN_NAME_PARTS = [
    ("lats", {"final_threshold": 0.1}, "_D0.1"),
    ("lats", {"l1_coeff": 1e-4}, ""),
    ("pgh", {"final_threshold": 0.2, "beta": 0.5}, "_D0.2_b0.5"),
    ("slats", {"final_threshold": 0.2, "granularity": "filter"}, "_D0.2_filter"),
    ("slats", {"final_threshold": 0.2, "granularity": "filter", "filter_scale": "layer"}, "_D0.2_filter_rel"),
    ("stds", {"granularity": "2:4"}, "_2of4"),
    ("stds", {"granularity": "block"}, ""),  # refused by the constructor, never part of a name
    ("gmp", {"target_sparsity": 0.9, "granularity": "1:4"}, "_P0.9_1of4"),
    ("st3", {"target_sparsity": 0.75}, "_P0.75"),
    ("str", {"s_init": -5.0}, ""),
]  # fmt: skip


@pytest.mark.parametrize(("method", "config", "part"), RUN_NAME_PARTS)
def test_run_name_part(method, config, part):
    assert snnprune.get_method(method).run_name_part(config) == part


def test_plan_hooks_of_the_builtin_methods():
    from snnprune.methods import KeywordError
    from snnprune.methods.lr_total import MAX_DRY_RUN_STEPS

    lats, gmp = snnprune.get_method("lats"), snnprune.get_method("gmp")
    # defaults a configuration does without: D beside lambda or under N:M, P under N:M
    assert lats.unset_defaults({"final_threshold": 0.1, "l1_coeff": 1e-4}, {"l1_coeff"}) == {
        "final_threshold"
    }
    assert lats.unset_defaults({"final_threshold": 0.1}, {"final_threshold"}) == set()
    assert snnprune.get_method("slats").unset_defaults({"granularity": "2:4"}, set()) == {"final_threshold"}
    assert gmp.unset_defaults({"granularity": "2:4"}, set()) == {"target_sparsity"}
    assert gmp.unset_defaults({"granularity": "weight"}, set()) == set()
    # the plan: LATS's dry run of the lr sum is bounded, its closed form needs a cosine lr
    lats.check_plan({}, {"epochs": MAX_DRY_RUN_STEPS, "lr_scheduler": "step"})
    with pytest.raises(KeywordError) as err:
        lats.check_plan({}, {"epochs": MAX_DRY_RUN_STEPS + 1, "lr_scheduler": "cosine"})
    assert err.value.keyword == "epochs"
    lats.check_plan({"schedule": "closed_form"}, {"epochs": 8, "lr_scheduler": "cosine"})
    with pytest.raises(KeywordError, match="not for the lr scheduler step") as err:
        lats.check_plan({"schedule": "closed_form"}, {"epochs": 8, "lr_scheduler": "step"})
    assert err.value.keyword == "schedule"
    gmp.check_plan({}, {"epochs": MAX_DRY_RUN_STEPS + 1, "lr_scheduler": "step"})  # nothing by default
    # whole channels removed only by a filter granularity
    slats = snnprune.get_method("slats")
    assert slats(final_threshold=0.1, granularity="filter", total_steps=4).removes_channels
    assert not slats(final_threshold=0.1, total_steps=4).removes_channels
    assert not gmp(target_sparsity=0.5, total_steps=4).removes_channels


@pytest.mark.parametrize(
    ("method", "in_epochs", "in_steps"),
    [
        # the default frequency follows the ramp in steps: max(1, min(100, 30 // 10)) = 3, not 3 // 10 -> 1
        ("gmp", {"target_sparsity": 0.5, "end_step": 3, "start_step": 0}, {"end_step": 30, "start_step": 0}),
        (
            "st3",
            {"target_sparsity": 0.5, "finetune_steps": 1, "start_step": 1},
            {"finetune_steps": 10, "start_step": 10},
        ),
        (
            "lats",
            {"final_threshold": 0.1, "schedule": "closed_form", "epoch_length": 1},
            {"epoch_length": 10},
        ),
    ],
)
def test_scale_steps_gives_the_pruner_built_in_optimizer_steps(method, in_epochs, in_steps):
    """A pruner configured in epochs (4 of them) and scaled to 10 steps per epoch is the one built with
    those step counts: same configuration, same thresholds along the run."""
    scaled = snnprune.get_method(method)(**in_epochs, total_steps=4).scale_steps(10).prepare(_net())
    direct = sparsify(_net(), method, **{**in_epochs, **in_steps, "total_steps": 40})
    assert scaled.total_steps == 40 and scaled.state_dict() == direct.state_dict()
    if method == "gmp":
        assert scaled.frequency == 3
    for _ in range(40):
        scaled.step(), direct.step()
        assert scaled.get_last_threshold() == direct.get_last_threshold()


def test_scale_steps_refusals():
    lats = snnprune.get_method("lats")
    with pytest.raises(ValueError, match="steps_per_epoch must be > 0"):
        lats(final_threshold=0.1, total_steps=4).scale_steps(0)
    with pytest.raises(TypeError, match="steps_per_epoch must be an integer"):
        lats(final_threshold=0.1, total_steps=4).scale_steps(2.5)
    with pytest.raises(RuntimeError, match="before prepare"):
        sparsify(_net(), "lats", final_threshold=0.1, total_steps=4).scale_steps(2)
