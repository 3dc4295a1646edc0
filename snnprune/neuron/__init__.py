"""SpikingJelly-compatible neurons with fused multi-step CuPy kernels (CuPy optional).

``IFNode``, ``LIFNode`` and ``ParametricLIFNode`` take SpikingJelly's constructor arguments plus
``backend="auto"|"cupy"|"spikingjelly"``. Importing this package never imports CuPy.
"""

from .nodes import BACKENDS, IFNode, LIFNode, ParametricLIFNode

__all__ = ["BACKENDS", "IFNode", "LIFNode", "ParametricLIFNode"]
