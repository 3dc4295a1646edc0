"""One rule for "is this model spiking" and one spike-rate monitor, shared by the training engine and
:func:`snnprune.analyze`.

* :func:`is_neuron`: a module is a spiking neuron when it is a SpikingJelly ``BaseNode`` (subclasses
  included, e.g. the neurons of :mod:`snnprune.neuron`);
* :func:`is_spiking`: a model is spiking when ``model.is_spiking`` says so (a bool attribute wins), else when
  it contains at least one spiking neuron;
* :class:`SpikeRateMonitor`: forward hooks on every neuron of a spiking model that sum
  ``[spikes, neuron-steps]`` in one float64 tensor on the model's device (no host sync per batch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["SpikeRateMonitor", "is_neuron", "is_spiking"]


def _base_node_type() -> type | None:
    try:
        from spikingjelly.activation_based.neuron import BaseNode
    except ImportError:  # pragma: no cover - spikingjelly is a hard dependency
        return None
    return BaseNode


def is_neuron(module: nn.Module) -> bool:
    """Whether ``module`` is a spiking neuron (an instance of SpikingJelly's ``BaseNode``).

    Args:
        module: any module.

    Returns:
        True for spiking neurons.
    """
    base = _base_node_type()
    return base is not None and isinstance(module, base)


def is_spiking(model: nn.Module) -> bool:
    """Whether ``model`` is a spiking network.

    A bool attribute ``model.is_spiking`` decides when present (a model can declare itself); otherwise
    the model is spiking when it contains at least one spiking neuron (:func:`is_neuron`).

    Args:
        model: the model (a DDP wrapper is looked through).

    Returns:
        True for SNNs, False for ANNs.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    flag = getattr(model, "is_spiking", None)
    if isinstance(flag, bool):
        return flag
    return any(is_neuron(m) for m in model.modules())


class SpikeRateMonitor:
    """Mean firing rate (spikes per neuron per time step) of a spiking model over several forwards.

    Use as a context manager; the hooks are removed on exit. On a non-spiking model (:func:`is_spiking`
    False) it attaches nothing and :meth:`totals` is ``[0.0, 0.0]``.

    Example::

        with SpikeRateMonitor(model) as monitor:
            for x, _ in loader:
                model(x); functional.reset_net(model)
        print(monitor.rate())

    Args:
        model: the model (a DDP wrapper is looked through).

    Attributes:
        active: whether the model is spiking (hooks attached).
        acc: float64 tensor ``[spikes, neuron-steps]`` on the model's device.
    """

    def __init__(self, model: nn.Module) -> None:
        inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        self.active = is_spiking(inner)
        device = next((t.device for t in inner.parameters()), torch.device("cpu"))
        self.acc = torch.zeros(2, dtype=torch.float64, device=device)
        self._neurons = [m for m in inner.modules() if is_neuron(m)] if self.active else []
        self._handles: list[Any] = []

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        s = output[0] if isinstance(output, tuple | list) else output
        if not isinstance(s, torch.Tensor):
            return
        self.acc[0] += s.detach().sum(dtype=torch.float64)
        self.acc[1] += s.numel()

    def __enter__(self) -> SpikeRateMonitor:
        self._handles = [m.register_forward_hook(self._hook) for m in self._neurons]
        return self

    def __exit__(self, *exc: Any) -> None:
        while self._handles:
            self._handles.pop().remove()

    def totals(self) -> list[float]:
        """``[spikes, neuron-steps]`` summed so far (one host sync).

        Returns:
            Two floats (both 0.0 on a non-spiking model).
        """
        return self.acc.tolist() if self.active else [0.0, 0.0]

    def rate(self) -> float:
        """Spikes per neuron per time step so far (NaN for a non-spiking model or before any forward).

        Returns:
            The mean firing rate in [0, 1] for binary spikes.
        """
        spikes, count = self.totals()
        return spikes / count if (self.active and count > 0) else float("nan")
