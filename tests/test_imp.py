"""Iterative magnitude pruning with rewinding (``imp``): the cuts against a hand-made global magnitude cut,
the rewind, the optimizer and scheduler restart, and an interrupted run resumed mid-round bit for bit."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate
from torch import nn

import snnprune
from snnprune.training import load_checkpoint
from tests.helpers import load_script


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.parametrizations.weight.original for m in model if isinstance(m, nn.Linear)]


def test_rounds_cut_globally_rewind_and_restart_the_lr_plan():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    pruner = snnprune.sparsify(
        model, "imp", target_sparsity=0.75, rounds=3, rewind_fraction=0.5, total_steps=6
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    pruner.bind(opt, sched, steps_per_epoch=1)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    saved, masks, lrs = None, [], []
    for epoch in range(6):
        before = [w.detach().clone() for w in _weights(model)]
        pruner.before_epoch()
        lrs.append(opt.param_groups[0]["lr"])
        if epoch in (2, 4):  # a cut: the ceil((1 - s_r) N) largest |theta * M| of both layers together
            s = 1 - 0.25 ** ((epoch // 2) / 2)
            mags = torch.cat([(w.abs() * m).flatten() for w, m in zip(before, masks[-1], strict=True)])
            keep = math.ceil((1 - s) * mags.numel())
            expected = mags >= mags.sort(descending=True).values[keep - 1]
            got = torch.cat(
                [m.parametrizations.weight[0].mask.flatten() for m in model if isinstance(m, nn.Linear)]
            )
            assert int(got.sum()) == keep and torch.equal(got, expected)
            for w, w1 in zip(_weights(model), saved, strict=True):  # rewound to step 1
                assert torch.equal(w, w1)
            assert len(opt.state) == 0 and sched.last_epoch == 0
        masks.append([m.parametrizations.weight[0].mask.clone() for m in model if isinstance(m, nn.Linear)])
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        pruner.step()
        if epoch == 0:
            saved = [w.detach().clone() for w in _weights(model)]
        sched.step()
    assert lrs == [0.5, 0.25, 0.5, 0.25, 0.5, 0.25]  # the plan of one round, replayed
    assert all(torch.equal(a, a & b) for a, b in zip(masks[4], masks[2], strict=True))  # nested tickets
    assert snnprune.sparsity(model)["overall"] == pytest.approx(1 - math.ceil(0.25 * 72) / 72)


class _Spiking(nn.Module):
    """A static image repeated ``T`` times into a multi-step IF neuron, as the SEW ResNets read ``model.T``."""

    def __init__(self, T: int) -> None:
        super().__init__()
        self.T, self.fc1, self.fc2 = T, nn.Linear(6, 8), nn.Linear(8, 3)
        self.sn = neuron.IFNode(step_mode="m", surrogate_function=surrogate.ATan(), v_threshold=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        return self.fc2(self.sn(self.fc1(x).unsqueeze(0).repeat(self.T, 1, 1))).mean(0)


def test_early_time_ticket_searches_at_search_T_and_trains_the_ticket_at_full_T():
    torch.manual_seed(0)
    model = _Spiking(T=3)
    steps: list[int] = []  # time steps the neuron ran, one entry per forward
    model.sn.register_forward_hook(lambda m, inp, out: steps.append(inp[0].shape[0]))
    pruner = snnprune.sparsify(model, "imp", target_sparsity=0.75, rounds=3, search_T=1, total_steps=6)
    assert model.T == 1  # the first search round starts at prepare
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner.bind(opt, steps_per_epoch=1)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(6):
        pruner.before_epoch()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        pruner.step()
    assert steps == [1, 1, 1, 1, 3, 3]  # rounds 0 and 1 search at T = 1; the ticket trains at T = 3
    assert model.T == 3 and pruner.rounds_done == 2
    for rounds_done, T in ((0, 1), (1, 1), (2, 3)):  # a reloaded run runs at the T of its round
        other = _Spiking(T=3)
        restored = snnprune.sparsify(other, "imp", target_sparsity=0.75, rounds=3, search_T=1, total_steps=6)
        restored.load_state_dict(
            {**pruner.state_dict(), "rounds_done": rounds_done, "step_count": 2 * rounds_done}
        )
        assert other.T == T, rounds_done


BAD = [  # (the model's T, None: no attribute; keywords; message)
    (2, {"rounds": 1}, "rounds must be >= 2 and divide total_steps=6 (rounds of whole epochs), got 1"),
    (2, {"rounds": 4}, "rounds must be >= 2 and divide total_steps=6 (rounds of whole epochs), got 4"),
    (2, {"rewind_fraction": 1.0}, "rewind_fraction must be in [0, 1) (a point of the first round), got 1.0"),
    (2, {"target_sparsity": 1.0}, "target_sparsity must be in [0, 1), got 1.0"),
    (2, {"start_step": 1}, "start_step must be 0, got 1"),
    (2, {"search_T": 0}, "search_T must be >= 1 (time steps of the search rounds), got 0"),
    (2, {"search_T": 2}, "search_T must be below the model's T=2 (fewer time steps for the search), got 2"),
    (None, {"search_T": 1}, "search_T needs a model whose time steps are an int attribute T, but Sequential"),
]


@pytest.mark.parametrize(("T", "kwargs", "fragment"), BAD, ids=[b[2][:30] for b in BAD])
def test_bad_settings_name_the_keyword(T, kwargs, fragment):
    model = nn.Sequential(nn.Linear(4, 4))
    if T is not None:
        model.T = T
    with pytest.raises(ValueError) as exc:
        snnprune.sparsify(model, "imp", **{"target_sparsity": 0.5, "rounds": 3, "total_steps": 6, **kwargs})
    assert fragment in str(exc.value)
    assert not any("parametrizations" in k for k in model.state_dict())  # nothing attached


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in csv.DictReader(f)]


#: a tiny two-round IMP run of train_sew.py (4 epochs of one batch)
_IMP_RUN = ["--method", "imp", "--target-sparsity", "0.75", "--rounds", "2", "--width", "8", "--T", "2",
            "--epochs", "4", "--batch-size", "16", "--limit-train-batches", "1", "--limit-test-batches", "1",
            "--quiet"]  # fmt: skip


def _same_final_checkpoints(full: dict, resumed: dict) -> tuple[dict, dict]:
    """The final checkpoints of the runs of two summaries, after asserting that their models are equal."""
    a = load_checkpoint(Path(full["run_dir"]) / "checkpoint.pth")
    b = load_checkpoint(Path(resumed["run_dir"]) / "checkpoint.pth")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    return a, b


def test_rounds_resume_bit_identically(tmp_path):
    sew = load_script("train_sew")
    base = [*_IMP_RUN, "--rewind-fraction", "0.5", "--analyze-batches", "0"]
    full = sew.main([*base, "--output-dir", str(tmp_path / "a")])
    sew.main([*base, "--output-dir", str(tmp_path / "b"), "--stop-after-epoch", "2"])  # mid-round 2
    resumed = sew.main([*base, "--output-dir", str(tmp_path / "b"), "--resume", "auto"])
    a, b = _same_final_checkpoints(full, resumed)
    assert a["pruner"]["rounds_done"] == b["pruner"]["rounds_done"] == 1
    assert a["pruner"] == b["pruner"]
    rows = _rows(Path(full["run_dir"]))
    assert rows == _rows(Path(resumed["run_dir"]))
    # each round is visible: the lr plan (a cosine over one round of 2 epochs) restarts, the sparsity steps up
    assert [r["lr"] for r in rows] == ["0.1", "0.05", "0.1", "0.05"]
    sp = [float(r["sparsity"]) for r in rows]
    assert sp[0] == sp[1] == 0 and sp[2] == sp[3] == pytest.approx(0.75, abs=0.01)


def test_early_time_ticket_resumes_bit_identically_across_the_T_switch(tmp_path):
    sew = load_script("train_sew")
    base = [*_IMP_RUN, "--search-T", "1", "--analyze-batches", "1"]
    full = sew.main([*base, "--output-dir", str(tmp_path / "a")])
    out = ["--output-dir", str(tmp_path / "b")]
    sew.main([*base, *out, "--stop-after-epoch", "0"])  # mid search round
    stopped = json.loads((tmp_path / "b" / "sew_resnet18_imp" / "analyze.json").read_text())
    # through the switch, to the middle of the last round
    sew.main([*base, *out, "--resume", "auto", "--stop-after-epoch", "2"])
    resumed = sew.main([*base, *out, "--resume", "auto"])
    a, b = _same_final_checkpoints(full, resumed)
    assert a["pruner"] == b["pruner"] and a["pruner"]["rounds_done"] == 1
    assert _rows(Path(full["run_dir"])) == _rows(Path(resumed["run_dir"]))
    # the run stopped in the search round was analyzed at T = 1, the finished one at the model's T = 2
    final = json.loads((Path(full["run_dir"]) / "analyze.json").read_text())
    assert (stopped["meta"]["time_steps"], final["meta"]["time_steps"]) == (1, 2)
