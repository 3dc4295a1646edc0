"""The one timer of the benchmarks in ``scripts/``: interleaved samples, synchronized on a GPU.

Every benchmark times several callables against each other (dense vs pruned, eval vs analyze, one neuron
implementation vs another). :func:`time_calls` runs them in rounds, each callable once per round, so a
slow phase of a shared machine (another process, a frequency change) costs every callable one sample
instead of one callable all of its samples; the benchmarks report the min (the least disturbed sample) and
the median (:func:`min_median`).

On a CUDA device each sample is timed with CUDA events recorded around the calls on the current stream
and the device is synchronized after it, so a sample is the GPU time of its calls and nothing of one
sample runs into the next. On the CPU (or with an explicit ``clock``) a sample is the host clock around
the calls, the device synchronized before and after it when it is a GPU.

Used as ``from timing import time_calls`` by the scripts (``scripts/`` is on ``sys.path`` when they run).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import torch

__all__ = ["min_median", "time_calls"]

K = TypeVar("K", bound=Hashable)


def time_calls(
    fns: Mapping[K, Callable[[], Any]],
    rounds: int,
    *,
    warmup: int = 0,
    number: int = 1,
    device: torch.device | str | None = None,
    clock: Callable[[], float] | None = None,
) -> dict[K, list[float]]:
    """Seconds per call of every callable of ``fns``, sampled in interleaved rounds.

    First ``warmup`` untimed rounds (each callable called once per round, in the order of ``fns``), then
    ``rounds`` timed rounds: in each, every callable in turn gives one sample, the mean time of ``number``
    back-to-back calls.

    Args:
        fns: name -> callable without arguments (its return value is discarded).
        rounds: timed rounds (samples per callable), >= 1.
        warmup: untimed rounds first.
        number: calls per sample (a sample is their mean), >= 1.
        device: where the callables run; a CUDA device is timed with CUDA events and synchronized after
            every sample (None or a CPU device: host clock, no synchronization).
        clock: a host clock in seconds (e.g. ``time.process_time`` for CPU time) instead of
            ``time.perf_counter``; on a CUDA device it replaces the events and the device is synchronized
            before and after every sample.

    Returns:
        name -> ``rounds`` samples in seconds per call, in the order they were taken.

    Raises:
        ValueError: ``rounds``, ``number`` < 1 or ``warmup`` < 0.
    """
    if rounds < 1 or number < 1 or warmup < 0:
        raise ValueError(
            f"time_calls needs rounds >= 1, number >= 1, warmup >= 0; got {rounds}, {number}, {warmup}"
        )
    cuda = device is not None and torch.device(device).type == "cuda"
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    if cuda:
        torch.cuda.synchronize(device)
    samples: dict[K, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(_sample(fn, number, device if cuda else None, clock) / number)
    return samples


def _sample(fn: Callable[[], Any], number: int, cuda: Any, clock: Callable[[], float] | None) -> float:
    """Seconds taken by ``number`` calls of ``fn``."""
    if cuda is not None and clock is None:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(number):
            fn()
        end.record()
        torch.cuda.synchronize(cuda)
        return start.elapsed_time(end) * 1e-3
    clock = clock or time.perf_counter
    if cuda is not None:
        torch.cuda.synchronize(cuda)
    t0 = clock()
    for _ in range(number):
        fn()
    if cuda is not None:
        torch.cuda.synchronize(cuda)
    return clock() - t0


def min_median(samples: list[float]) -> dict[str, float]:
    """``{"min": ..., "median": ...}`` of ``samples``.

    Args:
        samples: one callable's samples from :func:`time_calls` (non-empty).
    """
    return {"min": min(samples), "median": statistics.median(samples)}
