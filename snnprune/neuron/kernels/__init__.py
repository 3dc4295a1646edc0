"""Fused multi-step neuron kernels: pure-torch reference, CUDA source generators, torch custom ops."""

from . import reference, source

__all__ = ["reference", "source"]
