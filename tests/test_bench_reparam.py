"""scripts/bench_reparam.py runs end to end on a tiny configuration and writes its table as JSON."""

from __future__ import annotations

import json

from helpers import load_script


def test_bench_reparam_tiny(tmp_path, capsys):
    bench = load_script("bench_reparam")
    out = tmp_path / "bench.json"
    res = bench.main(
        ["--width", "4", "--img-size", "16", "--batch-size", "2", "--num-classes", "10", "--rounds", "2",
         "--warmup", "0", "--methods", "slats,gmp", "--clock", "cpu", "--output", str(out)]
    )  # fmt: skip
    saved = json.loads(out.read_text())
    assert (
        [r["method"] for r in saved["rows"]]
        == ["dense", "slats", "gmp"]
        == [r["method"] for r in res["rows"]]
    )
    dense = saved["rows"][0]
    assert dense["ratio_min"] == 1.0 and len(dense["samples_ms"]) == 2
    for row in saved["rows"]:
        assert row["min_ms"] == min(row["samples_ms"]) and row["ratio_min"] == row["min_ms"] / dense["min_ms"]
    assert saved["config"]["clock"] == "cpu" and "ratio(min)" in capsys.readouterr().out
