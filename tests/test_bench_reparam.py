"""scripts/bench_reparam.py runs end to end on a tiny configuration and writes its table as JSON."""

from __future__ import annotations

import json
import time

import pytest
from helpers import load_script

ARGV = ["--width", "4", "--img-size", "16", "--batch-size", "2", "--num-classes", "10", "--rounds", "3",
        "--warmup", "1", "--methods", "slats,gmp", "--clock", "cpu"]  # fmt: skip


def test_bench_reparam_tiny(tmp_path, capsys):
    bench = load_script("bench_reparam")
    out = tmp_path / "bench.json"
    res = bench.main([*ARGV, "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(res))
    assert [r["method"] for r in saved["rows"]] == ["dense", "slats", "gmp"]
    assert all(len(r["samples_ms"]) == 3 and min(r["samples_ms"]) > 0 for r in saved["rows"])
    assert saved["config"]["clock"] == "cpu" and "ratio(min)" in capsys.readouterr().out


def test_bench_reparam_table_from_known_times(tmp_path, monkeypatch):
    """With the timer replaced by known samples (seconds), the table's ms and ratios are these by hand:
    dense min 2 / median 3 ms, slats 3 / 4 (ratios 1.5, 4/3), gmp 1 / 5 (ratios 0.5, 5/3)."""
    bench = load_script("bench_reparam")
    known = {"dense": [0.004, 0.002, 0.003], "slats": [0.003, 0.004, 0.006], "gmp": [0.009, 0.001, 0.005]}
    seen = {}

    def fake_time_calls(fns, rounds, **kwargs):
        seen.update(rounds=rounds, **kwargs)
        for fn in fns.values():
            fn()  # every variant still takes a real step
        return {m: known[m] for m in fns}

    monkeypatch.setattr(bench, "time_calls", fake_time_calls)
    res = bench.main([*ARGV, "--output", str(tmp_path / "bench.json")])
    assert seen["rounds"] == 3 and seen["warmup"] == 1 and seen["clock"] is time.process_time
    table = {
        r["method"]: (r["min_ms"], r["median_ms"], r["ratio_min"], r["ratio_median"]) for r in res["rows"]
    }
    assert table == {
        "dense": pytest.approx((2.0, 3.0, 1.0, 1.0)),
        "slats": pytest.approx((3.0, 4.0, 1.5, 4 / 3)),
        "gmp": pytest.approx((1.0, 5.0, 0.5, 5 / 3)),
    }
    assert res["rows"][2]["samples_ms"] == pytest.approx([9.0, 1.0, 5.0])
