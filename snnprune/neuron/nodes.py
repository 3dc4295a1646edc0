"""Drop-in SpikingJelly neurons with a fused CuPy multi-step path.

:class:`IFNode`, :class:`LIFNode` and :class:`ParametricLIFNode` subclass SpikingJelly 2.0.0's classes
with the same constructor arguments plus ``backend``:

* ``"spikingjelly"``: always SpikingJelly's own implementation.
* ``"auto"`` (default): the fused CuPy kernels for CUDA tensors in multi-step mode when CuPy is
  installed, the kernels compile on the input's device (probed once per device; a failure, e.g. NVRTC
  without ``cuda_fp16.h``, warns once and says why) and the configuration is supported (ATan/Sigmoid
  surrogate, fp32/fp16/bf16 input, no SpikingJelly precision plan); SpikingJelly's implementation otherwise.
* ``"cupy"``: the fused kernels, or a :class:`RuntimeError` saying why they cannot run.

Single-step mode always runs SpikingJelly's code (``"cupy"`` refuses it). On the fused path the
membrane state ``v`` is kept in fp32 (also under autocast) and ``v`` / ``v_seq`` are updated as in
SpikingJelly, so ``functional.reset_net``, ``detach_net`` and monitors keep working.
"""

from __future__ import annotations

import numbers
import warnings

import torch
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate

from . import cupy_runtime

__all__ = ["BACKENDS", "IFNode", "LIFNode", "ParametricLIFNode"]

BACKENDS = ("auto", "cupy", "spikingjelly")
_SURROGATES = {sj_surrogate.ATan: "atan", sj_surrogate.Sigmoid: "sigmoid"}
_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_WARNED: set[tuple[str, str]] = set()


def _ops():
    from .kernels import ops  # deferred: registers the custom ops on first use only

    return ops


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


class _FusedMultiStepMixin:
    """Backend resolution and the fused multi-step forward shared by the three neurons."""

    _kind: str = ""

    def _surrogate_spec(self) -> tuple[str, float] | None:
        sg = self.surrogate_function
        name = _SURROGATES.get(type(sg))
        alpha = getattr(sg, "alpha", None)
        if name is None or not getattr(sg, "spiking", True) or isinstance(alpha, bool):
            return None
        if not isinstance(alpha, numbers.Real):
            return None
        return name, float(alpha)

    def cupy_unavailable_reason(self, x_seq: torch.Tensor | None = None) -> str | None:
        """Why the fused CuPy path cannot run for this input, or ``None`` if it can.

        Args:
            x_seq: the multi-step input (``None`` checks only the configuration).

        Returns:
            A human-readable reason with the fix, or ``None``.
        """
        if self.step_mode != "m":
            return (
                "the fused CuPy kernels are multi-step only, this neuron is in single-step mode "
                "(step_mode='s'); use step_mode='m' (functional.set_step_mode(net, 'm')) or backend='auto'"
            )
        if self._surrogate_spec() is None:
            return (
                f"surrogate {type(self.surrogate_function).__name__} is not fused (supported: "
                "spikingjelly surrogate.ATan and surrogate.Sigmoid with spiking=True and a float alpha); "
                "use backend='auto' or 'spikingjelly'"
            )
        if getattr(self, "_neuron_precision", None) is not None:
            return "a SpikingJelly neuron precision plan is set on this neuron; use backend='spikingjelly'"
        if x_seq is not None and x_seq.device.type == "cpu" and _ops().hooked_launcher_active():
            return None  # kernel_hooks: CPU tensors take the kernel path with the test's launcher
        if x_seq is not None:
            if not x_seq.is_cuda:
                return (
                    f"the input is on {x_seq.device}, the fused CuPy kernels need a CUDA tensor; "
                    "move the model and data to a GPU or use backend='auto' / 'spikingjelly'"
                )
            if x_seq.dtype not in _FUSED_DTYPES:
                return (
                    f"input dtype {x_seq.dtype} is not fused (float32/float16/bfloat16); use backend='auto'"
                )
        if not cupy_runtime.cupy_available():
            return (
                f"CuPy is not installed or failed to import ({cupy_runtime.cupy_import_error()!r}); "
                f"{cupy_runtime.INSTALL_HINT}, or use backend='auto' / 'spikingjelly'"
            )
        if x_seq is not None:
            error = _ops().probe_error(x_seq.device)
            if error is not None:
                return (
                    f"the fused kernels do not compile on {x_seq.device} ({error}); check that NVRTC finds "
                    "cuda_fp16.h (set CUDA_PATH to a CUDA toolkit, or pip install nvidia-cuda-runtime) or use "
                    "backend='spikingjelly'"
                )
        return None

    def uses_cupy(self, x_seq: torch.Tensor) -> bool:
        """Whether a multi-step forward on ``x_seq`` takes the fused CuPy path.

        Raises:
            RuntimeError: ``backend="cupy"`` and the fused path cannot run (message says why).
        """
        if self.backend == "spikingjelly":
            return False
        reason = self.cupy_unavailable_reason(x_seq)
        if reason is not None and self.backend == "cupy":
            raise RuntimeError(f"{type(self).__name__}(backend='cupy') cannot run: {reason}")
        if reason is not None and "do not compile" in reason and (str(x_seq.device), reason) not in _WARNED:
            _WARNED.add((str(x_seq.device), reason))
            warnings.warn(
                f"{type(self).__name__}(backend='auto') runs SpikingJelly's implementation: {reason}",
                RuntimeWarning,
                stacklevel=3,
            )
        return reason is None

    def _fused_multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        v = self._memories["v"]
        # After a reset v is a number: the kernels start every neuron from that scalar (no state tensor).
        if not isinstance(v, torch.Tensor):
            v = float(v)
        elif v.shape != x_seq.shape[1:]:
            v = float(self.v_reset if self.v_reset is not None else 0.0)
        surrogate, alpha = self._surrogate_spec()
        spikes, v_final, v_seq = _ops().multistep_neuron(
            x_seq,
            v,
            getattr(self, "w", None) if self._kind == "plif" else None,
            kind=self._kind,
            tau=float(getattr(self, "tau", 2.0)),
            decay_input=bool(getattr(self, "decay_input", True)),
            v_threshold=float(self.v_threshold),
            v_reset=None if self.v_reset is None else float(self.v_reset),
            detach_reset=bool(self.detach_reset),
            surrogate=surrogate,
            alpha=alpha,
            store_v_seq=bool(self.store_v_seq),
        )
        self._memories["v"] = v_final
        self.v_seq = v_seq
        return spikes

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        """Fused CuPy path when :meth:`uses_cupy` says so, SpikingJelly's multi-step forward otherwise.

        Raises:
            RuntimeError: ``backend="cupy"`` with extra forward arguments (the fused kernels take none) or
                where the fused path cannot run.
        """
        if args or kwargs:
            if self.backend == "cupy":
                raise RuntimeError(
                    f"{type(self).__name__}(backend='cupy') cannot run: the fused kernels take only the input "
                    "sequence, got extra forward arguments; use backend='auto' or 'spikingjelly'"
                )
            return super().multi_step_forward(x_seq, *args, **kwargs)
        if self.uses_cupy(x_seq):
            return self._fused_multi_step(x_seq)
        return super().multi_step_forward(x_seq)

    def single_step_forward(self, x: torch.Tensor, *args, **kwargs):
        """SpikingJelly's single-step forward (``backend="cupy"`` raises: the kernels are multi-step)."""
        if self.backend == "cupy":
            raise RuntimeError(
                f"{type(self).__name__}(backend='cupy') cannot run: {self.cupy_unavailable_reason()}"
            )
        return super().single_step_forward(x, *args, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend}"


class IFNode(_FusedMultiStepMixin, sj_neuron.IFNode):
    """Integrate-and-fire neuron, :math:`H_t = V_{t-1} + X_t`, with a fused multi-step CuPy path.

    Args:
        v_threshold: firing threshold :math:`v_{th}`.
        v_reset: hard-reset value, or ``None`` for the soft reset :math:`V_t = H_t - S_t v_{th}`.
        surrogate_function: surrogate of the Heaviside step (ATan/Sigmoid are fused); a fresh
            ``surrogate.Sigmoid()`` when ``None``.
        detach_reset: no gradient through the reset.
        step_mode: ``"s"`` or ``"m"``.
        store_v_seq: keep the membrane potential of every step in ``self.v_seq``.
        backend: ``"auto"``, ``"cupy"`` or ``"spikingjelly"`` (see the module docstring).

    Raises:
        ValueError: unknown ``backend``.
    """

    _kind = "if"

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: sj_surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        backend: str = "auto",
    ) -> None:
        self.backend = _check_backend(backend)
        super().__init__(
            v_threshold,
            v_reset,
            sj_surrogate.Sigmoid() if surrogate_function is None else surrogate_function,
            detach_reset,
            step_mode,
            store_v_seq,
        )


class LIFNode(_FusedMultiStepMixin, sj_neuron.LIFNode):
    """Leaky integrate-and-fire neuron with a fused multi-step CuPy path.

    .. math::
        H_t = V_{t-1} + (X_t - (V_{t-1} - v_r)) / \\tau \\ \\text{(decay\\_input)},\\qquad
        H_t = V_{t-1} - (V_{t-1} - v_r) / \\tau + X_t

    Args:
        tau: membrane time constant (> 1).
        decay_input: whether the input is divided by ``tau``.
        v_threshold: firing threshold.
        v_reset: hard-reset value, or ``None`` for the soft reset.
        surrogate_function: surrogate (ATan/Sigmoid are fused); ``surrogate.Sigmoid()`` when ``None``.
        detach_reset: no gradient through the reset.
        step_mode: ``"s"`` or ``"m"``.
        store_v_seq: keep the membrane potential of every step in ``self.v_seq``.
        backend: ``"auto"``, ``"cupy"`` or ``"spikingjelly"``.

    Raises:
        ValueError: unknown ``backend``.
    """

    _kind = "lif"

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: sj_surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        backend: str = "auto",
    ) -> None:
        self.backend = _check_backend(backend)
        super().__init__(
            tau,
            decay_input,
            v_threshold,
            v_reset,
            sj_surrogate.Sigmoid() if surrogate_function is None else surrogate_function,
            detach_reset,
            step_mode,
            store_v_seq,
        )


class ParametricLIFNode(_FusedMultiStepMixin, sj_neuron.ParametricLIFNode):
    """Parametric LIF neuron (learnable :math:`1/\\tau = \\sigma(w)`) with a fused multi-step CuPy path.

    The fused backward returns :math:`\\partial L/\\partial w = \\sigma'(w) \\sum_{t,i} g_{t,i}\\,
    \\partial H_{t,i}/\\partial q`, accumulated in fp32 per thread and reduced per warp.

    Args:
        init_tau: initial time constant (> 1); ``w = -log(init_tau - 1)``.
        decay_input: whether the input is scaled by ``1/tau``.
        v_threshold: firing threshold.
        v_reset: hard-reset value, or ``None`` for the soft reset.
        surrogate_function: surrogate (ATan/Sigmoid are fused); ``surrogate.Sigmoid()`` when ``None``.
        detach_reset: no gradient through the reset.
        step_mode: ``"s"`` or ``"m"``.
        store_v_seq: keep the membrane potential of every step in ``self.v_seq``.
        backend: ``"auto"``, ``"cupy"`` or ``"spikingjelly"``.

    Raises:
        ValueError: unknown ``backend``.
    """

    _kind = "plif"

    def __init__(
        self,
        init_tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: sj_surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        backend: str = "auto",
    ) -> None:
        self.backend = _check_backend(backend)
        super().__init__(
            init_tau,
            decay_input,
            v_threshold,
            v_reset,
            sj_surrogate.Sigmoid() if surrogate_function is None else surrogate_function,
            detach_reset,
            step_mode,
            store_v_seq,
        )
