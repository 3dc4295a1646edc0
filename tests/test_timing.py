"""scripts/timing.py: the one timer of the benchmarks (interleaved rounds, warm-up, calls per sample)."""

from __future__ import annotations

import pytest
from helpers import load_script

timing = load_script("timing")


def test_time_calls_interleaves_and_averages_on_a_fake_clock():
    now, calls = [0.0], []

    def make(name: str, cost: float):
        def fn() -> None:
            calls.append(name)
            now[0] += cost

        return fn

    samples = timing.time_calls(
        {"a": make("a", 1.0), "b": make("b", 3.0)}, 2, warmup=1, number=2, clock=lambda: now[0]
    )
    assert samples == {"a": [1.0, 1.0], "b": [3.0, 3.0]}  # seconds per call: the mean of 2 calls
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 2  # one warm-up round, then interleaved rounds


def test_time_calls_real_clock_and_bad_counts():
    samples = timing.time_calls({"x": lambda: sum(range(100))}, 3, device="cpu")
    assert len(samples["x"]) == 3 and all(t >= 0 for t in samples["x"])
    for kwargs in ({"rounds": 0}, {"rounds": 1, "number": 0}, {"rounds": 1, "warmup": -1}):
        with pytest.raises(ValueError, match="time_calls needs rounds >= 1, number >= 1, warmup >= 0"):
            timing.time_calls({"x": lambda: None}, **kwargs)


def test_min_median():
    assert timing.min_median([3.0, 1.0, 2.0, 10.0]) == {"min": 1.0, "median": 2.5}
