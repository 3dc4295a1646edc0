"""CuPy runtime for the fused neuron kernels: optional import, explanatory error, PyTorch-stream binding.

Importing this module never imports CuPy: :func:`import_cupy` imports it on first use and remembers the
exception, so :func:`cupy_available`, :func:`cupy_import_error` and :func:`ensure_cupy` can say why the
fused kernels cannot run. :data:`INSTALL_HINT` is the fix those messages quote.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

__all__ = [
    "INSTALL_HINT",
    "cupy_available",
    "cupy_import_error",
    "ensure_cupy",
    "import_cupy",
    "torch_stream_for_cupy",
]

#: How to get CuPy; quoted by every error that needs it.
INSTALL_HINT = "install the CUDA extra: pip install -e .[cuda] (cupy-cuda13x)"
_STREAMS: dict[tuple[int, int], Any] = {}


@functools.cache
def import_cupy() -> tuple[Any, BaseException | None]:
    """Import CuPy once and memoize the outcome.

    Returns:
        ``(cupy, None)`` when ``import cupy`` succeeds, else ``(None, the exception it raised)``.
    """
    try:
        import cupy
    except Exception as err:  # ImportError, or a CUDA-runtime mismatch raised at import time
        return None, err
    return cupy, None


def cupy_available() -> bool:
    """Whether CuPy can be imported (does not check that a GPU exists)."""
    return import_cupy()[0] is not None


def cupy_import_error() -> BaseException | None:
    """The exception raised by ``import cupy``, or ``None`` when CuPy imported fine."""
    return import_cupy()[1]


def ensure_cupy() -> Any:
    """Return the ``cupy`` module or raise a :class:`RuntimeError` saying how to get it.

    Raises:
        RuntimeError: CuPy is not importable; the message carries the original error and the fix.
    """
    cupy, err = import_cupy()
    if cupy is None:
        raise RuntimeError(
            f"the fused CuPy neuron kernels need CuPy, which could not be imported ({err!r}); "
            f"{INSTALL_HINT}, or use backend='spikingjelly' / 'auto'"
        ) from err
    return cupy


def torch_stream_for_cupy(device: torch.device) -> Any:
    """A CuPy stream object wrapping PyTorch's *current* CUDA stream on ``device``.

    Launching on it keeps kernels ordered with PyTorch's work and capturable by CUDA graphs
    (``torch.compile(mode="reduce-overhead")``). Uses ``cupy.cuda.Stream.from_external`` with the torch
    stream (CUDA stream protocol, CuPy >= 14) and falls back to the deprecated
    ``cupy.cuda.ExternalStream(ptr, device_id)``. Memoized per (device, stream handle).

    Args:
        device: a CUDA device.

    Returns:
        A ``cupy.cuda.Stream``; enter it (``with stream:``) around ``RawKernel`` calls.
    """
    cupy = ensure_cupy()
    torch_stream = torch.cuda.current_stream(device)
    key = (torch_stream.device_index, torch_stream.cuda_stream)
    stream = _STREAMS.get(key)
    if stream is None:
        from_external = getattr(cupy.cuda.Stream, "from_external", None)
        if from_external is not None and hasattr(torch_stream, "__cuda_stream__"):
            stream = from_external(torch_stream)  # CUDA stream protocol; keeps torch_stream alive
        else:
            stream = cupy.cuda.ExternalStream(torch_stream.cuda_stream, device_id=torch_stream.device_index)
        _STREAMS[key] = stream
    return stream
