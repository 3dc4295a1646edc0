"""Structured pruning: channel coupling in SEW blocks, compaction equality, save/load, sparse files."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import expect_exit, load_script, prune_half
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

import snnprune
from models.ann_resnet import ANNResNet
from models.sew_resnet import BasicBlock, Bottleneck, SEWResNet
from snnprune import files
from snnprune.files import CorruptFileError, digest_path
from snnprune.structured import (
    FollowConv,
    export_files,
    layer_widths,
    load_compact,
    load_sparse,
    save_compact,
    save_sparse,
)
from snnprune.structured.sparse import pack_bits, unpack_bits
from snnprune.threshold.group import GroupSoftThreshold

X = torch.rand(4, 1, 12, 12)


def _sew(cnf: str, block=BasicBlock, layers=(1, 1, 1, 1), width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return SEWResNet(block, layers, num_classes=5, in_channels=1, T=2, cnf=cnf, stem="small", width=width)


def _spikes(model: nn.Module) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    spikes: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda mod, i, o, n=n: spikes.__setitem__(n, o.detach()))
        for n, m in model.named_modules()
        if isinstance(m, BaseNode)
    ]
    with torch.no_grad():
        out = model(X)
    functional.reset_net(model)
    for h in handles:
        h.remove()
    return spikes, out


def _input_conv(neuron_name: str) -> str:
    """The conv whose channels a neuron's output carries (its BN's conv)."""
    prefix, _, leaf = neuron_name.rpartition(".")
    if leaf == "downsample_sn":
        return f"{prefix}.downsample.0"
    return f"{prefix}.conv{leaf[2:]}" if prefix else f"conv{leaf[2:]}"


@pytest.mark.parametrize("cnf", ["ADD", "AND", "IAND"])
def test_compact_equals_masked_sew_with_and_without_downsample(cnf):
    model = _sew(cnf)
    assert model.layer1[0].downsample is None and model.layer2[0].downsample is not None
    alive = prune_half(model, X)
    model.eval()
    small = snnprune.compact(model, X)
    ref_spikes, ref = _spikes(model)
    out_spikes, out = _spikes(small)
    assert (out - ref).abs().max().item() <= 1e-5
    widths = layer_widths(small)
    assert widths["conv1"]["out_channels"] == 4  # stem + layer1 stream (no downsample) halved
    assert widths["layer2.0.downsample.0"] == {"in_channels": 4, "out_channels": 8}  # downsample stream
    assert widths["layer2.0.conv1"]["out_channels"] == 8 and widths["fc"]["in_features"] == 32
    for name, s in ref_spikes.items():
        keep = alive[_input_conv(name)]
        assert s[:, :, keep].sum() > 0, name
        assert torch.equal(s[:, :, ~keep], torch.zeros_like(s[:, :, ~keep]))  # removed channels are silent
        assert torch.equal(out_spikes[name], s[:, :, keep]), name  # identical spikes on the kept ones


def test_compact_checks_its_structure_in_float64():
    """compact()'s own check runs on float64 copies: float32 outputs of the compacted model differ from the
    masked model's by summation-order rounding (measured here: about 1e-7; in trained SNNs enough to flip a
    spike at its threshold and fail a float32 check), the float64 ones do not, so even atol=1e-12 passes."""
    model = _sew("ADD")
    prune_half(model, X)
    model.eval()
    small = snnprune.compact(model, X, atol=1e-12)
    assert small.conv1.weight.dtype == torch.float32  # the returned model keeps the model's dtype
    assert (_spikes(small)[1] - _spikes(model)[1]).abs().max().item() <= 1e-5


def test_compact_bottleneck_and_ann_twin():
    for model in (
        _sew("ADD", block=Bottleneck, layers=(1, 1, 1, 1), width=2),
        ANNResNet(BasicBlock, (1, 1, 1, 1), num_classes=5, in_channels=1, stem="small", width=8),
    ):
        prune_half(model, X)
        model.eval()
        small = snnprune.compact(model, X)
        functional.reset_net(model)
        with torch.no_grad():
            ref = model(X)
            functional.reset_net(model)
            out = small(X)
        assert (out - ref).abs().max().item() <= 1e-5
        assert sum(p.numel() for p in small.parameters()) < 0.5 * sum(p.numel() for p in model.parameters())


def test_filter_granularity_couples_stream_and_bn_follows():
    model = _sew("ADD", layers=(2, 1, 1, 1))
    snnprune.sparsify(model, "lats", granularity="filter", final_threshold=0.05, lr_total=1.0, total_steps=2)
    p = model.layer1[1].conv2.parametrizations.weight[0]
    assert isinstance(p, GroupSoftThreshold)
    peers = {id(m) for m in p.peers}
    assert peers == {id(model.conv1), id(model.layer1[0].conv2)}  # the stage-1 stream (stem + both blocks)
    assert model.layer1[0].conv1.parametrizations.weight[0].peers == []  # internal channels stand alone
    assert any(isinstance(h, FollowConv) for h in model.layer2[0].downsample[1]._forward_hooks.values())
    with pytest.raises(ValueError, match="granularity must be weight, filter or N:M"):
        snnprune.sparsify(_sew("ADD"), "slats", granularity="block", final_threshold=0.1, total_steps=2)


def test_bn_follows_a_removed_channel_to_exact_zero():
    model = _sew("ADD")
    prune_half(model, X)
    model.eval()
    seen = {}
    model.layer2[0].bn1.register_forward_hook(lambda m, i, o: seen.setdefault("bn", o.detach()))
    with torch.no_grad():
        model(X)
    functional.reset_net(model)
    bn_out = seen["bn"]  # [T, N, C, H, W] after the FollowConv hook ran (registered first)
    assert torch.equal(bn_out[:, :, 1::2], torch.zeros_like(bn_out[:, :, 1::2]))
    assert bn_out[:, :, 0::2].abs().sum() > 0


def _bn_hooks(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {
        n: (len(m._forward_hooks), len(m._forward_pre_hooks))
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }


def test_sparsify_finalize_sparsify_leaves_one_of_each():
    model = _sew("ADD")
    n_bn = 12  # stem, 2 per block (4 blocks), 3 downsample BNs
    prunable = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for _ in range(2):
        snnprune.sparsify(model, "stds", granularity="filter", final_threshold=0.01, total_steps=1)
        assert list(_bn_hooks(model).values()) == [(1, 1)] * n_bn
        modules = dict(model.named_modules())
        assert [len(modules[n].parametrizations.weight) for n in prunable] == [1] * len(prunable)
        snnprune.finalize(model)
        assert list(_bn_hooks(model).values()) == [(0, 0)] * n_bn
        assert not any(hasattr(m, "parametrizations") for m in model.modules())


def test_finalize_folds_the_bn_hooks_into_the_bn():
    """The finalized model (a deep copy: the original keeps its hooks) computes what the pruned one did,
    and so does a plain model loaded from its state_dict: the removed channels' BN is gamma = beta = 0."""
    model = _sew("AND")
    alive = prune_half(model, X)
    model.eval()
    ref = _spikes(model)[1]
    fin = snnprune.finalize(copy.deepcopy(model))
    assert list(_bn_hooks(fin).values()) == [(0, 0)] * 12
    assert list(_bn_hooks(model).values()) == [(1, 1)] * 12
    plain = _sew("AND")
    plain.load_state_dict(fin.state_dict())
    plain.eval()
    assert torch.equal(_spikes(fin)[1], ref) and torch.equal(_spikes(plain)[1], ref)
    assert torch.equal(_spikes(model)[1], ref)  # the original still runs with its hooks
    bn, keep = fin.layer2[0].bn1, alive["layer2.0.conv1"]
    assert bn.weight[~keep].eq(0).all() and bn.bias[~keep].eq(0).all() and bn.bias[keep].eq(0.8).all()


def test_failed_filter_prepare_removes_the_bn_hooks():
    model = _sew("ADD")
    model.layer4[0].bn2 = nn.BatchNorm2d(model.layer4[0].bn2.num_features, affine=False)  # found last
    with pytest.raises(ValueError, match="without affine parameters cannot follow its conv"):
        snnprune.sparsify(model, "stds", granularity="filter", final_threshold=0.01, total_steps=1)
    assert list(_bn_hooks(model).values()) == [(0, 0)] * 12
    assert not any(hasattr(m, "parametrizations") for m in model.modules())


def test_batch_norm_follower_needs_a_parametrized_conv_and_an_affine_bn():
    from snnprune.structured import BatchNormFollower

    conv, bn = nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)
    with pytest.raises(ValueError, match=r"Conv2d\.weight is not parametrized"):
        BatchNormFollower(bn, conv)
    assert _bn_hooks(nn.Sequential(bn)) == {"0": (0, 0)}  # nothing attached
    snnprune.register_soft_threshold(conv)
    with pytest.raises(ValueError, match="without affine parameters cannot follow its conv under filter"):
        BatchNormFollower(nn.BatchNorm2d(4, affine=False), conv)
    follower = BatchNormFollower(bn, conv)
    assert _bn_hooks(nn.Sequential(bn)) == {"0": (1, 1)}
    snnprune.remove_soft_threshold(conv, leave_parametrized=False)  # undo: hooks gone, BN untouched
    assert _bn_hooks(nn.Sequential(bn)) == {"0": (0, 0)} and follower.handles == []
    assert bn.weight.eq(1).all() and bn.bias.eq(0).all()


def test_save_load_compact_round_trip(tmp_path):
    model = _sew("IAND")
    prune_half(model, X)
    model.eval()
    small = snnprune.compact(model, X)
    save_compact(small, tmp_path / "c.pth")
    fresh = _sew("IAND").eval()
    load_compact(fresh, tmp_path / "c.pth")
    assert layer_widths(fresh) == layer_widths(small)
    _, a = _spikes(small)
    _, b = _spikes(fresh)
    assert torch.equal(a, b)
    report = snnprune.analyze(fresh, X, progress=False).to_dict()
    dense = snnprune.analyze(_sew("IAND"), X, progress=False).to_dict()
    assert 0 < report["totals"]["dense_macs"] < 0.5 * dense["totals"]["dense_macs"]
    with pytest.raises(ValueError, match="not a compacted model"):
        load_compact(fresh, {"format": "other"})


def test_compact_rejects_other_models():
    with pytest.raises(ValueError, match="does not follow the ResNet protocol"):
        snnprune.compact(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), X)


def test_sparse_file_round_trip_and_sizes(tmp_path):
    torch.manual_seed(0)
    w = torch.randn(64, 32, 3, 3)
    w[torch.rand_like(w) < 0.9] = 0.0
    state = {"w": w, "b": torch.randn(7), "n": torch.tensor(3), "h": torch.zeros(5, 3).half()}
    sizes = save_sparse(state, tmp_path / "s.pth")
    back = load_sparse(tmp_path / "s.pth")
    assert set(back) == set(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and torch.equal(back[k], state[k])
    assert sizes["sparse_bytes"] < 0.25 * sizes["dense_bytes"]
    for n in (1, 7, 8, 9, 64, 1001):
        m = torch.rand(n) < 0.5
        assert torch.equal(unpack_bits(pack_bits(m), n), m)
    torch.save({"x": 1}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a sparse weight file"):
        load_sparse(tmp_path / "other.pth")


def _sparse_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    w = torch.randn(64, 32, 3, 3)
    w[torch.rand_like(w) < 0.9] = 0.0
    return {"w": w, "b": torch.randn(7)}


def _flip_middle(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _tampered_sparse(path, change) -> None:
    """A sparse file written by plain torch.save (no digest) after ``change(entry of 'w')``."""
    save_sparse(_sparse_state(), path)
    data = torch.load(path, weights_only=True)
    change(data["tensors"]["w"])
    digest_path(path).unlink()
    torch.save(data, path)


def _save_linear_compact(path, change=None) -> None:
    data = {"format": "snnprune-compact-v1", "widths": {"0": {"in_features": 3, "out_features": 4}},
            "state_dict": nn.Sequential(nn.Linear(3, 4)).state_dict()}  # fmt: skip
    if change is None:
        save_compact(nn.Sequential(nn.Linear(3, 4)), path)
        return
    change(data)
    torch.save(data, path)


def _compact_wrong_channels(tmp_path) -> None:
    model = _sew("ADD")
    snnprune.compact(model, torch.rand(4, 3, 12, 12))


# (case, call with tmp_path, error type, message part); each is one line naming the file or the input
BAD_FILES = [
    ("sparse, flipped byte", lambda t: (save_sparse(_sparse_state(), t / "s.pth"), _flip_middle(t / "s.pth"), load_sparse(t / "s.pth")),
     CorruptFileError, "s.pth: is corrupt: its SHA-256 does not match the one recorded in s.pth.sha256"),
    ("sparse, truncated", lambda t: (save_sparse(_sparse_state(), t / "s.pth"), digest_path(t / "s.pth").unlink(), (t / "s.pth").write_bytes((t / "s.pth").read_bytes()[:500]), load_sparse(t / "s.pth")),
     CorruptFileError, "s.pth: is corrupt: not a complete zip archive"),
    ("sparse, values != popcount", lambda t: (_tampered_sparse(t / "s.pth", lambda e: e.update(values=e["values"][:-1])), load_sparse(t / "s.pth")),
     CorruptFileError, "s.pth: is corrupt: tensor 'w' has 1823 values but 1824 set bits in its mask; restore it from a backup or export it again"),
    ("sparse, mask too short", lambda t: (_tampered_sparse(t / "s.pth", lambda e: e.update(mask=e["mask"][:-1])), load_sparse(t / "s.pth")),
     CorruptFileError, "tensor 'w' has a mask of 2303 bytes for shape [64, 32, 3, 3] (2304 expected)"),
    ("sparse, shape of another tensor", lambda t: (_tampered_sparse(t / "s.pth", lambda e: e.update(shape=[64, 32, 3, 4])), load_sparse(t / "s.pth")),
     CorruptFileError, "tensor 'w' has a mask of 2304 bytes for shape [64, 32, 3, 4] (3072 expected)"),
    ("sparse, shape not sizes", lambda t: (_tampered_sparse(t / "s.pth", lambda e: e.update(shape=[64, -32])), load_sparse(t / "s.pth")),
     CorruptFileError, "tensor 'w' has the shape [64, -32], not a list of sizes"),
    ("sparse, mask of floats", lambda t: (_tampered_sparse(t / "s.pth", lambda e: e.update(mask=e["mask"].float())), load_sparse(t / "s.pth")),
     CorruptFileError, "tensor 'w' has a mask that is not a 1-D uint8 tensor"),
    ("sparse, another torch file", lambda t: (torch.save({"x": 1}, t / "s.pth"), load_sparse(t / "s.pth")),
     ValueError, "s.pth: not a sparse weight file (no format tag 'snnprune-sparse-v1'); pass a file written by"),
    ("compact, flipped byte", lambda t: (_save_linear_compact(t / "model_compact.pth"), _flip_middle(t / "model_compact.pth"), load_compact(nn.Sequential(nn.Linear(3, 4)), t / "model_compact.pth")),
     CorruptFileError, "model_compact.pth: is corrupt: its SHA-256 does not match the one recorded in model_compact.pth.sha256"),
    ("compact, widths of strings", lambda t: (_save_linear_compact(t / "c.pth", lambda d: d["widths"]["0"].update(out_features="4")), load_compact(nn.Sequential(nn.Linear(3, 4)), t / "c.pth")),
     CorruptFileError, "c.pth: is corrupt: its widths are not {layer: {attribute: int}}"),
    ("compact, weight of another shape", lambda t: (_save_linear_compact(t / "c.pth", lambda d: d["state_dict"].update({"0.weight": torch.zeros(4, 2)})), load_compact(nn.Sequential(nn.Linear(3, 4)), t / "c.pth")),
     ValueError, "c.pth: its weights do not load into Sequential (Error(s) in loading state_dict for Sequential: size mismatch for 0.weight"),
    ("compact, wrong input channels", _compact_wrong_channels,
     ValueError, "compact: example_input of shape [4, 3, 12, 12] does not fit SEWResNet, whose first layer 'conv1' (Conv2d) expects 1 input channels"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "exc", "message"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_and_inputs_are_one_line(tmp_path, case, call, exc, message):
    with pytest.raises(exc) as info:
        call(tmp_path)
    text = str(info.value)
    assert message in text and "\n" not in text
    if case.startswith(("sparse", "compact,")) and "input" not in case:
        assert str(tmp_path) in text


def test_export_files_write_their_digests(tmp_path):
    model = _sew("IAND")
    prune_half(model, X)
    model.eval()
    sizes = export_files(model, snnprune.finalize(copy.deepcopy(model)), X, tmp_path, compacted=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["model_compact.pth", "model_compact.pth.sha256", "model_sparse_packed.pth",
                     "model_sparse_packed.pth.sha256"]  # fmt: skip
    assert sizes["model_compact_bytes"] == (tmp_path / "model_compact.pth").stat().st_size
    fresh = load_compact(_sew("IAND").eval(), tmp_path / "model_compact.pth")
    assert sum(p.numel() for p in fresh.parameters()) == sizes["compact_params"]


def test_cli_filter_export_writes_compact_and_packed_files(tmp_path, capsys):
    import models

    sew = load_script("train_sew")
    tiny = ["--width", "8", "--epochs", "1", "--batch-size", "16", "--limit-train-batches", "2", "--T", "2",
            "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet", "--output-dir", str(tmp_path)]  # fmt: skip
    summary = sew.main(["--method", "slats", "--granularity", "filter", "--final-threshold", "0.2",
                        "--prune-exclude", "fc", "--export", *tiny])  # fmt: skip
    run = tmp_path / "sew_resnet18_slats_D0.2_filter"
    assert summary["run_dir"] == str(run)
    dense = torch.load(run / "model_sparse.pth")
    packed = load_sparse(run / "model_sparse_packed.pth")
    assert all(torch.equal(dense[k], packed[k]) for k in dense) and set(dense) == set(packed)
    sizes = summary["export"]
    assert sizes["model_sparse_packed_bytes"] < sizes["model_sparse_bytes"]
    fresh = models.create_model("sew_resnet18", num_classes=10, in_channels=1, stem="small", width=8, T=2)
    load_compact(fresh, run / "model_compact.pth")
    assert sum(p.numel() for p in fresh.parameters()) == sizes["compact_params"] < summary["params"]
    with pytest.raises(SystemExit) as exc:
        sew.main(["--method", "gmp", "--granularity", "filter", *tiny])
    assert exc.value.code == 2
    assert "--granularity: must be weight or N:M such as 2:4, got 'filter'" in capsys.readouterr().err


def test_cli_filter_runs_recalibrate_bn_before_each_evaluation(tmp_path):
    """Filter runs re-estimate the BN statistics on the first N training batches (in order) before every
    evaluation, by default 20; weights, the data order and everything else of training stay as without."""
    import snnprune
    from snnprune.data import build_datasets
    from snnprune.structured import recalibrate_bn
    from snnprune.training.cli import parse_args

    ann = load_script("train_ann")
    tiny = ["--width", "8", "--epochs", "2", "--batch-size", "16", "--limit-train-batches", "3",
            "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet", "--output-dir", str(tmp_path),
            "--method", "lats", "--granularity", "filter", "--final-threshold", "0.1"]  # fmt: skip
    states = {}
    for n in (None, "2", "0"):
        name = f"recal_{n}"
        ann.main([*tiny, "--run-name", name] + ([] if n is None else ["--bn-recalibrate", n]))
        states[n] = files.load(tmp_path / name / "checkpoint.pth")
    weights = {k: v for k, v in states["0"]["model"].items() if "running" not in k and "num_batches" not in k}
    for n in (None, "2"):  # training itself is untouched
        assert all(torch.equal(states[n]["model"][k], v) for k, v in weights.items())
    for n in (None, "2"):
        assert not torch.equal(
            states[n]["model"]["bn1.running_mean"], states["0"]["model"]["bn1.running_mean"]
        )
    # the recalibrated statistics are recalibrate_bn on the first 2 training batches, in order
    args = parse_args(ann.get_parser(), tiny)
    x = torch.stack([build_datasets(args)[0][i][0] for i in range(32)])
    from snnprune.training.runs import instantiate

    model = instantiate(ann.task.model_builder(args, 10, 1))
    snnprune.sparsify(model, "lats", final_threshold=0.1, total_steps=6, granularity="filter")
    model.load_state_dict(states["2"]["model"])
    recalibrate_bn(model, [x[:16], x[16:]])
    got = states["2"]["model"]
    assert torch.allclose(model.bn1.running_mean, got["bn1.running_mean"], atol=1e-6)
    assert torch.allclose(model.bn1.running_var, got["bn1.running_var"], atol=1e-6)


def test_bn_running_stats_follow_the_shrink_factor():
    from snnprune.structured import FollowScale
    from snnprune.threshold.group import register_group_soft_threshold

    def net(follow: bool) -> nn.Module:
        torch.manual_seed(0)
        conv, bn = nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8)
        register_group_soft_threshold(conv, threshold=0.0, scale_by="layer")
        if follow:
            bn.register_forward_hook(FollowConv(conv))
            bn.register_forward_pre_hook(FollowScale(conv))
        return nn.Sequential(conv, bn)

    x = torch.randn(16, 1, 10, 10)
    errors = []
    for follow in (True, False):
        model = net(follow)
        p = model[0].parametrizations.weight[0]
        rms = model[0].parametrizations.weight.original.detach().flatten(1).pow(2).mean(1).sqrt()
        top = float(rms.max() / rms.pow(2).mean().sqrt())  # D just under the largest filter: s -> 0.01
        with torch.no_grad():
            for k in range(80):  # ramp the threshold as the scheduled methods do
                p.threshold.fill_(min(1.0, (k + 1) / 60) * 0.99 * top)
                train_out = model.train()(x)
            eval_out = model.eval()(x)
        errors.append((eval_out - train_out).abs().max().item() / train_out.abs().max().item())
    assert errors[0] < 0.05 < errors[1]  # followed: eval matches the batch statistics; plain BN: far off


def test_recalibrate_bn_estimates_the_current_statistics():
    from snnprune.structured import recalibrate_bn

    model = ANNResNet(BasicBlock, (1, 1, 1, 1), num_classes=5, in_channels=1, stem="small", width=8)
    recalibrate_bn(model.eval(), [X[:2], (X[2:], None)])  # tensors or (input, target) pairs
    with torch.no_grad():
        expected = model.conv1(X).mean((0, 2, 3))  # the cumulative average over both = full-batch mean
    torch.testing.assert_close(model.bn1.running_mean, expected, rtol=1e-5, atol=1e-6)
    assert not model.training and model.bn1.momentum == 0.1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--sparsities", "1.5"], "--sparsities: 1.5 is not in [0, 1)"),
        (["--widths", "2"], "--widths must be >= 4"),
        (["--repeats", "0"], "--repeats/--repeats-wide >= 1"),
        (["--device", "tpu"], "--device: 'tpu' is not a device"),
        (["--device", "meta"], "--device: 'meta' is not supported"),
        (["--T", "0"], "--T 0 / --batch 64: both must be >= 1"),
        (["--scale", "imagenet", "--batch", "0"], "--T 4 / --batch 0: both must be >= 1"),
        (["--scale", "cifar"], "--scale: invalid choice: 'cifar'"),
        pytest.param(
            ["--device", "cuda"],
            "--device cuda: no CUDA device is visible",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible"),
        ),
    ],
)
def test_bench_compact_bad_options_exit_2_with_one_line(argv, message, capsys):
    code, err = expect_exit(load_script("bench_compact"), argv, capsys)
    assert code == 2
    err = err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


def test_bench_compact_tiny_run_writes_rows_and_json(tmp_path):
    bench = load_script("bench_compact")
    out = tmp_path / "b.json"
    rows = bench.main(
        ["--kinds", "ann", "--widths", "8", "--sparsities", "0.5", "--repeats", "1", "--batch", "4",
         "--json", str(out)]
    )  # fmt: skip
    assert {(r["channel_sparsity"], r["measure"]) for r in rows} == {
        (p, m) for p in (0.0, 0.5) for m in ("infer_b1", "infer_b4", "train_b4")
    }
    half = next(r for r in rows if r["channel_sparsity"] == 0.5)
    assert half["params"] < next(r for r in rows if r["channel_sparsity"] == 0.0)["params"]
    written = json.loads(out.read_text())
    assert written["machine"]["device"] == "cpu" and len(written["rows"]) == 6


def test_bench_compact_imagenet_scale_uses_the_imagenet_stem_and_input(tmp_path):
    bench = load_script("bench_compact")
    out = tmp_path / "b.json"
    rows = bench.main(
        ["--scale", "imagenet", "--kinds", "ann", "--widths", "4", "--sparsities", "0.5", "--repeats-wide", "1",
         "--batch", "2", "--json", str(out)]
    )  # fmt: skip
    args = json.loads(out.read_text())["args"]
    assert (args["T"], args["widths"], args["batch"]) == (4, [4], 2)  # T from --scale, the rest as given
    assert {r["scale"] for r in rows} == {"imagenet"} and len(rows) == 6
    dense = bench.build("ann", 4, 4, "imagenet")
    assert (dense.conv1.in_channels, dense.conv1.kernel_size, dense.conv1.stride) == (3, (7, 7), (2, 2))
    assert dense.fc.out_features == 1000
    assert next(r for r in rows if r["channel_sparsity"] == 0.0)["params"] == bench.params(dense)
    # by hand at width 4: 4 x 3 x 7 x 7 stem weights, a 1000 x 32 classifier (8 x width features)
    assert dense.conv1.weight.numel() == 4 * 3 * 49 and dense.fc.weight.shape == (1000, 32)


@pytest.mark.parametrize("groups", ["heads", "mlp"])
def test_bench_compact_groups_remove_heads_or_mlp_channels_only(groups):
    bench = load_script("bench_compact")
    x = torch.rand(1, 1, 28, 28)
    dense = bench.build("ann_spikformer", 16, 1)
    small = bench.compacted("ann_spikformer", 16, 1, 0.5, x, groups=groups)
    for block in small.block:
        assert block.attn.num_heads == (2 if groups == "heads" else 4)  # 4 heads of 4 channels
        assert block.attn.q.out_features == (8 if groups == "heads" else 16)
        assert block.mlp.fc1.out_features == (64 if groups == "heads" else 32)
    # per block, heads: 2 x (4 rows of Q, K, V of 16 weights, 3 BN pairs of 4, 4 columns of proj);
    # mlp: 32 x (fc1 row of 16 + bias, BN pair, fc2 column of 16)
    per_block = 2 * (3 * 4 * 16 + 3 * 2 * 4 + 4 * 16) if groups == "heads" else 32 * (16 + 1 + 2 + 16)
    assert bench.params(small) == bench.params(dense) - 2 * per_block
