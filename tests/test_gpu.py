"""GPU checks of the pruning side (skipped without CUDA): every method on a model that is already on the GPU,
filter pruning and compaction on the GPU, sparse files of GPU tensors, and a CUDA training run of the CLI.

The kernel parity tests live in ``tests/test_neuron.py``; ``scripts/gpu_checks.sh`` runs the whole suite.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import load_script, prune_half
from spikingjelly.activation_based import functional
from torch.nn.utils import parametrize

import models
import snnprune
from snnprune.structured import load_sparse, save_sparse

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _sew(width: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create_model("sew_resnet18", num_classes=10, in_channels=1, stem="small", width=width, T=2)


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 16, 16, generator=g).cuda(), torch.randint(0, 10, (n,), generator=g).cuda()


@pytest.mark.parametrize("method", snnprune.list_methods())
def test_every_method_prunes_a_model_already_on_the_gpu(method):
    """``model.cuda()`` then ``sparsify``: buffers follow the weights; the effective weights are
    sign(θ)·max(|θ| − d, 0) (or the method's mask) on the GPU, and they stay finite."""
    bench = load_script("bench_reparam")
    model = _sew().cuda()
    steps = 4
    pruner = snnprune.sparsify(model, method, total_steps=steps, **bench.METHOD_KWARGS.get(method, {}))
    for module in pruner.layers.values():
        if parametrize.is_parametrized(module):
            weight = module.parametrizations.weight
            assert all(t.device.type == "cuda" for t in [*weight.parameters(), *weight.buffers()])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner.bind(optimizer)
    x, y = _batch()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y) + pruner.regularization()
        loss.backward()
        optimizer.step()
        pruner.step()
        functional.reset_net(model)
        assert torch.isfinite(loss)
    thresholds = pruner.get_last_threshold()
    assert all(math.isfinite(v) for v in thresholds.values())
    if method in ("lats", "slats", "pgh", "stds"):
        for name, module in pruner.layers.items():
            theta = module.parametrizations.weight.original.detach()
            d = thresholds[name]
            expected = theta.sign() * (theta.abs() - d).clamp_min(0)
            torch.testing.assert_close(module.weight.detach(), expected, rtol=0, atol=1e-6)
    snnprune.finalize(model)
    assert all(p.device.type == "cuda" for p in model.parameters())
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_filter_pruning_and_compaction_on_the_gpu():
    """Filter granularity on a GPU model, then ``compact`` with a GPU example input: a smaller model on
    the GPU whose outputs equal the masked model's."""
    model = _sew().cuda()
    x, _ = _batch(4)
    prune_half(model, x)
    model.eval()
    with torch.no_grad():
        masked = model(x)
    functional.reset_net(model)
    small = snnprune.compact(model, x)
    assert next(small.parameters()).device.type == "cuda"
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        out = small(x)
    functional.reset_net(small)
    torch.testing.assert_close(out, masked, rtol=0, atol=1e-4)


def test_sparse_file_of_gpu_tensors_round_trips(tmp_path):
    torch.manual_seed(0)
    w = torch.randn(64, 32, device="cuda")
    w[w.abs() < 1.0] = 0
    state = {"w": w, "b": torch.randn(5, device="cuda")}
    save_sparse(state, tmp_path / "s.pth")
    back = load_sparse(tmp_path / "s.pth")
    for k, v in state.items():
        assert torch.equal(back[k].cpu(), v.cpu())


def test_cli_trains_on_cuda_with_fused_neurons_and_fp16(sew, tmp_path):
    """scripts/train_sew.py on the GPU: fused CuPy neurons, fp16 autocast, LATS, export; finite results."""
    pytest.importorskip("cupy")
    summary = sew.main(
        ["--method", "lats", "--device", "cuda", "--neuron-backend", "cupy", "--amp", "fp16", "--width", "8",
         "--T", "2", "--epochs", "1", "--batch-size", "32", "--limit-train-batches", "4",
         "--limit-test-batches", "2", "--analyze-batches", "1", "--quiet", "--export",
         "--output-dir", str(tmp_path)]
    )  # fmt: skip
    run = Path(summary["run_dir"])
    written = json.loads((run / "summary.json").read_text())
    assert 0 <= written["test_top1"] <= 100 and 0 < written["sparsity"] < 1
    assert written["energy_pj"] > 0 and 0 < written["firing_rate"] < 1
    assert (run / "model_sparse.pth").is_file()
