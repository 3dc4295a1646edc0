"""Pure-torch multi-step neuron: the exact arithmetic of the fused CUDA kernels.

This module is the test oracle and the CPU implementation of the ``snnprune::multistep_neuron_*``
custom ops. Every line of :func:`multistep_forward` and :func:`multistep_backward` has a twin in
the CUDA source emitted by :mod:`snnprune.neuron.kernels.source`; the forward mirrors the order of
operations of SpikingJelly 2.0.0 (``_ops/{if_,lif,plif}/cpu.py``) so fp32 spikes are bit-identical.

Dynamics (``v_r = 0`` for the soft reset), with :math:`q = \\sigma(w) = 1/\\tau` for PLIF:

.. math::
    H_t = V_{t-1} + X_t                                   \\quad \\text{(IF)}\\\\
    H_t = V_{t-1} + (X_t - (V_{t-1} - v_r)) / \\tau      \\quad \\text{(LIF, decay\\_input)}\\\\
    H_t = V_{t-1} - (V_{t-1} - v_r) / \\tau + X_t        \\quad \\text{(LIF)}\\\\
    S_t = \\Theta(H_t - v_{th}),\\qquad
    V_t = S_t v_r + (1 - S_t) H_t \\ \\text{(hard)} \\quad\\text{or}\\quad V_t = H_t - S_t v_{th}\\ \\text{(soft)}

State is fp32 whatever the input dtype; spikes and gradients come back in the input dtype.
"""

from __future__ import annotations

import math

import torch

__all__ = ["KINDS", "SURROGATES", "multistep_backward", "multistep_forward", "surrogate_gradient"]

KINDS = ("if", "lif", "plif")
SURROGATES = ("atan", "sigmoid")


def surrogate_gradient(x: torch.Tensor, surrogate: str, alpha: float) -> torch.Tensor:
    """Derivative of the smooth surrogate of the Heaviside step, in fp32.

    .. math::
        \\text{atan: } g'(x) = \\frac{\\alpha/2}{1 + (\\frac{\\pi}{2}\\alpha x)^2},\\qquad
        \\text{sigmoid: } g'(x) = \\alpha\\,\\sigma(\\alpha x)(1 - \\sigma(\\alpha x))

    Args:
        x: ``H - v_threshold``.
        surrogate: ``"atan"`` or ``"sigmoid"``.
        alpha: sharpness of the surrogate.

    Returns:
        The surrogate gradient, same shape as ``x``.
    """
    if surrogate == "atan":
        z = x * float(math.pi / 2 * alpha)
        return (1.0 + z * z).reciprocal() * float(alpha / 2)
    if surrogate == "sigmoid":
        s = torch.sigmoid(x * float(alpha))
        return (1.0 - s) * s * float(alpha)
    raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")


def _charge(x, v, kind, tau, q, decay_input, reset_value):
    if kind == "if":
        return v + x
    if kind == "lif":
        if decay_input:
            return v + (x - (v - reset_value)) / tau
        return v - (v - reset_value) / tau + x
    if decay_input:
        return v + (x - (v - reset_value)) * q
    return v - (v - reset_value) * q + x


def _reset(h, spike, v_threshold, v_reset):
    if v_reset is None:
        return h - spike * v_threshold
    return spike * v_reset + (1.0 - spike) * h


def multistep_forward(
    x_seq: torch.Tensor,
    v_init: torch.Tensor,
    q: torch.Tensor | None,
    *,
    kind: str,
    tau: float,
    decay_input: bool,
    v_threshold: float,
    v_reset: float | None,
    store_v_seq: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run ``T`` steps of an IF/LIF/PLIF neuron (no autograd graph is needed or built here).

    Args:
        x_seq: input ``[T, *shape]`` in fp32/fp16/bf16.
        v_init: membrane potential before step 0, ``shape`` (fp32).
        q: PLIF decay ``sigmoid(w)`` as a 0-d fp32 tensor; ``None`` for IF/LIF.
        kind: ``"if"``, ``"lif"`` or ``"plif"``.
        tau: LIF membrane time constant (ignored otherwise).
        decay_input: LIF/PLIF: whether the input is divided by ``tau``.
        v_threshold: firing threshold.
        v_reset: hard-reset value, or ``None`` for the soft (subtractive) reset.
        store_v_seq: also return the membrane potential after every step.

    Returns:
        ``(spikes, v_final, h_seq, v_seq)``: spikes in ``x_seq.dtype``; ``v_final`` fp32;
        ``h_seq`` the charged potential of every step in fp32 (the backward recomputes it); ``v_seq`` fp32
        ``[T, *shape]`` or ``None``.
    """
    _check_kind(kind)
    reset_value = 0.0 if v_reset is None else v_reset
    v = v_init.float()
    qf = None if q is None else q.float()
    spikes, hs, vs = [], [], []
    for x in x_seq.float():
        h = _charge(x, v, kind, tau, qf, decay_input, reset_value)
        spike = (h >= v_threshold).to(torch.float32)
        v = _reset(h, spike, v_threshold, v_reset)
        spikes.append(spike.to(x_seq.dtype))
        hs.append(h)
        if store_v_seq:
            vs.append(v)
    return torch.stack(spikes), v, torch.stack(hs), (torch.stack(vs) if store_v_seq else None)


def multistep_backward(
    grad_spikes: torch.Tensor,
    grad_v_final: torch.Tensor | None,
    grad_v_seq: torch.Tensor | None,
    x_seq: torch.Tensor,
    v_init: torch.Tensor,
    q: torch.Tensor | None,
    *,
    kind: str,
    tau: float,
    decay_input: bool,
    v_threshold: float,
    v_reset: float | None,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Hand-written BPTT through :func:`multistep_forward` (reverse loop over ``T``).

    With :math:`g_t = \\partial L/\\partial H_t`, :math:`\\epsilon_t = \\partial L / \\partial V_t` and the
    surrogate derivative :math:`\\sigma'_t = g'(H_t - v_{th})`:

    .. math::
        \\partial V_t/\\partial H_t = 1 - S_t + (v_r - H_t)\\sigma'_t \\ \\text{(hard)},\\quad
        1 - v_{th}\\sigma'_t \\ \\text{(soft)}\\quad(\\text{the } \\sigma' \\text{ terms vanish with detach\\_reset})\\\\
        g_t = \\frac{\\partial L}{\\partial S_t}\\sigma'_t + \\epsilon_t \\frac{\\partial V_t}{\\partial H_t},\\qquad
        \\epsilon_{t-1} = g_t\\,\\partial H_t/\\partial V_{t-1} \\ (+\\ \\text{grad of } v\\_seq_{t-1})

    PLIF: :math:`\\partial L/\\partial q = \\sum_{t,i} g_t\\,\\partial H_t/\\partial q` with
    :math:`\\partial H_t/\\partial q = X_t - (V_{t-1} - v_r)` (decay_input) or :math:`-(V_{t-1} - v_r)`;
    :math:`H_t` and :math:`V_{t-1}` are recomputed from the input and ``v_init`` with the forward's fp32
    arithmetic (as the CUDA backward does), so nothing but the input is kept between the two passes and
    the surrogate sees the exact fp32 :math:`H_t` also for fp16/bf16 inputs.

    Args:
        grad_spikes: ``dL/dS`` ``[T, *shape]`` (input dtype), or ``None`` (zero).
        grad_v_final: ``dL/dV_{T-1}`` or ``None``.
        grad_v_seq: ``dL/dV_t`` for all ``t`` (when ``store_v_seq``) or ``None``.
        x_seq: the forward's input.
        v_init: membrane potential before step 0 (fp32, shape ``x_seq.shape[1:]``).
        q: PLIF ``sigmoid(w)`` (0-d) or ``None``.
        kind, tau, decay_input, v_threshold, v_reset: as in :func:`multistep_forward`.
        detach_reset: drop the surrogate path through the reset.
        surrogate: ``"atan"`` or ``"sigmoid"``.
        alpha: surrogate sharpness.

    Returns:
        ``(grad_x, grad_v_init, grad_q)``; ``grad_x`` in ``grad_spikes.dtype``, ``grad_v_init`` fp32,
        ``grad_q`` a 0-d fp32 tensor for PLIF else ``None``.
    """
    _check_kind(kind)
    steps = x_seq.shape[0]
    _, _, h_all, v_all = multistep_forward(
        x_seq,
        v_init,
        q,
        kind=kind,
        tau=tau,
        decay_input=decay_input,
        v_threshold=v_threshold,
        v_reset=v_reset,
        store_v_seq=True,
    )
    qf = None if q is None else q.float()
    reset_value = 0.0 if v_reset is None else v_reset
    if grad_spikes is None:
        grad_spikes = torch.zeros_like(x_seq)
    grad_x = torch.empty_like(grad_spikes, memory_format=torch.contiguous_format)
    carry = torch.zeros_like(v_init, dtype=torch.float32)
    grad_q = torch.zeros_like(carry) if kind == "plif" else None
    # no division in the loop: fp32 1/tau once (the kernel's __frcp_rn), and the decay factor of the carry
    inv_tau = torch.tensor(tau, dtype=torch.float32).reciprocal()
    decay = 1.0 - (qf if kind == "plif" else inv_tau)
    for t in range(steps - 1, -1, -1):
        h = h_all[t]
        sg = surrogate_gradient(h - v_threshold, surrogate, alpha)
        grad_v = carry
        if grad_v_seq is not None:
            grad_v = grad_v + grad_v_seq[t].float()
        if grad_v_final is not None and t == steps - 1:
            grad_v = grad_v + grad_v_final.float()
        if v_reset is None:
            reset_grad = torch.ones_like(h) if detach_reset else 1.0 - v_threshold * sg
        else:
            reset_grad = 1.0 - (h >= v_threshold).to(torch.float32)
            if not detach_reset:
                reset_grad = reset_grad + (v_reset - h) * sg
        gh = grad_spikes[t].float() * sg + grad_v * reset_grad
        if kind == "if":
            grad_x[t] = gh
            carry = gh
        elif kind == "lif":
            grad_x[t] = gh * inv_tau if decay_input else gh
            carry = gh * decay
        else:
            grad_x[t] = gh * qf if decay_input else gh
            carry = gh * decay
            v_prev = v_all[t - 1] if t > 0 else v_init.float()
            dh_dq = x_seq[t].float() - (v_prev - reset_value) if decay_input else -(v_prev - reset_value)
            grad_q = grad_q + gh * dh_dq
    return grad_x, carry, (grad_q.sum() if grad_q is not None else None)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
