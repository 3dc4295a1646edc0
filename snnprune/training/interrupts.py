"""SIGINT and SIGTERM stop a training run after the current optimizer step.

While :func:`stop_on_signals` is active (the engine holds it for a training run), the first SIGINT or
SIGTERM only records the signal; :func:`check` (called by the epoch loop after every step) then raises
:class:`Interrupted`, so the run ends between two steps and ``checkpoint.pth`` keeps the last complete
epoch. A second SIGINT raises :class:`Interrupted` at once, wherever the process is (the checkpoint stays
intact: it is written atomically). The entry scripts exit with ``128 + signal``: 130 for SIGINT, 143 for
SIGTERM. DataLoader workers ignore SIGINT (:func:`ignore_in_worker`: a terminal's Ctrl-C reaches the whole
process group) and end with the main process; SIGTERM is meant for the main process (``kill PID``,
torchrun): one sent to the workers too ends them, and the run stops with the DataLoader's error instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from snnprune.training import distributed as D

__all__ = ["STOP_SIGNALS", "Interrupted", "check", "ignore_in_worker", "stop_on_signals"]

#: The signals that stop a run cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested: int | None = None  # the first stop signal received while stop_on_signals() is active
_active = False  # stop_on_signals() has installed its handlers


class Interrupted(BaseException):
    """The run stopped on ``signum`` (SIGINT/SIGTERM; a ``BaseException``, like ``KeyboardInterrupt``) in
    ``epoch`` after global ``step`` (1-based; both None: stopped at once, anywhere); ``exit_code`` is
    ``128 + signum`` (130, 143)."""

    def __init__(self, signum: int, epoch: int | None = None, step: int | None = None) -> None:
        self.signum, self.epoch, self.step = int(signum), epoch, step
        self.exit_code = 128 + self.signum
        where = ("" if epoch is None else f" at epoch {epoch}") + ("" if step is None else f", step {step}")
        resume = "continue with the same command plus --resume auto"
        if epoch is None:
            saved = f"stopped at once; checkpoint.pth holds the last complete epoch, if any; {resume}"
        elif epoch == 0:
            saved = "nothing was saved; the same command plus --resume auto starts the run again"
        else:
            saved = f"checkpoint.pth holds epoch {epoch - 1}; {resume}"
        super().__init__(f"interrupted ({signal.Signals(self.signum).name}){where}: {saved}")


def _handle(signum: int, frame: Any) -> None:
    global _requested
    if _requested is not None and signum == signal.SIGINT:
        raise Interrupted(signum)  # the second SIGINT: stop at once
    if _requested is None:
        _requested = signum


@contextmanager
def stop_on_signals(enabled: bool = True) -> Iterator[None]:
    """Handle SIGINT/SIGTERM as stop requests for the duration of the block, the old handlers restored after
    (a null context when not ``enabled``, e.g. ``--test-only``, and off the main thread)."""
    global _requested, _active
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested = None
    previous = {s: signal.signal(s, _handle) for s in STOP_SIGNALS}
    _active = True
    try:
        yield
    finally:
        _active = False
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested = None


def check(epoch: int, step: int, device: torch.device) -> None:
    """Raise :class:`Interrupted` (``epoch``, the global ``step`` just finished) when a stop signal arrived;
    under torchrun the request is all-reduced on ``device`` so every rank stops at the same step. A no-op
    outside :func:`stop_on_signals`."""
    if not _active:
        return
    signum = _requested
    if D.get_world_size() > 1:
        n_int, n_term = D.all_reduce_sum(
            [float(signum == signal.SIGINT), float(signum == signal.SIGTERM)], device
        )
        signum = signal.SIGINT if n_int > 0 else signal.SIGTERM if n_term > 0 else None
    if signum is not None:
        raise Interrupted(signum, epoch, step)


def ignore_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the worker ignores SIGINT, so the main process can finish its step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
