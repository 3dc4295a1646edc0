"""Pure threshold / sparsity schedule formulas (fractions of the final value), after ``snnprune/docs/methods.md`` 3.3, 4.1, 8.2.

Each function maps progress :math:`x = n/N \\in [0, 1]` in the pruning window (or a step index) to a
fraction of the final threshold :math:`D` (or of the target sparsity); the pruners multiply.
"""

from __future__ import annotations

import math

__all__ = [
    "cubic_sparsity",
    "lats_low_freq",
    "pgh_fraction",
    "slats_fraction",
    "stds_linear_fraction",
    "stds_sine_fraction",
]


def _check_x(x: float) -> float:
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"schedule progress x must be in [0, 1], got {x}")
    return float(x)


def slats_fraction(x: float) -> float:
    """S-LATS: :math:`f_S(x) = x + \\sin(\\pi x)/\\pi` (integral of a cosine lr, normalized)."""
    x = _check_x(x)
    return x + math.sin(math.pi * x) / math.pi


def pgh_fraction(x: float, beta: float) -> float:
    """PGH (continuation) schedule, :math:`g'(x) \\propto \\beta^x (1 + \\cos\\pi x)`.

    .. math::
        g(x;\\beta) = \\frac{\\pi^2(\\beta^x-1) + (\\beta^x-2)\\ell^2 + \\beta^x\\ell(\\ell\\cos\\pi x
        + \\pi\\sin\\pi x)}{\\pi^2(\\beta-1) - 2\\ell^2},\\quad \\ell = \\ln\\beta

    :math:`\\beta = 1` is the S-LATS limit (used for :math:`|\\beta - 1| < 10^{-7}`).

    Raises:
        ValueError: ``beta <= 0`` (:math:`\\ln\\beta` undefined).
    """
    x = _check_x(x)
    if not beta > 0:
        raise ValueError(f"PGH needs beta > 0 (ln beta), got {beta}; e.g. beta=0.1, or beta=1 for S-LATS")
    if abs(beta - 1.0) < 1e-7:
        return slats_fraction(x)
    ell = math.log(beta)
    # Numerator and denominator divided by s = max(beta, 1), so no power overflows for any finite beta.
    s = max(beta, 1.0)
    bx = math.exp(ell * x - math.log(s))
    pi = math.pi
    num = (
        pi**2 * (bx - 1 / s)
        + (bx - 2 / s) * ell**2
        + bx * ell * (ell * math.cos(pi * x) + pi * math.sin(pi * x))
    )
    return min(max(num / (pi**2 * (beta / s - 1 / s) - 2 * ell**2 / s), 0.0), 1.0)


def stds_sine_fraction(x: float) -> float:
    """STDS sine: :math:`(1 - \\cos \\pi x)/2`."""
    x = _check_x(x)
    return (1.0 - math.cos(math.pi * x)) / 2.0


def stds_linear_fraction(x: float) -> float:
    """STDS linear: :math:`x`."""
    return _check_x(x)


def lats_low_freq(n: int, steps_per_epoch: int, epochs: int) -> float:
    """Original ("low-freq") LATS closed form: fraction of :math:`D` after ``n`` steps of the window.

    With :math:`B` steps per epoch, :math:`E` epochs, epoch :math:`e = \\lfloor (n-1)/B \\rfloor` and
    :math:`b = n - eB \\in \\{1..B\\}` steps done in it:

    .. math::
        f = \\mathrm{base}(e) + \\frac{b(1 + \\cos(\\pi e/E))}{B(E+1)},\\quad
        \\mathrm{base}(e) = \\frac{1 + 2e + \\sin(\\pi(e-\\tfrac12)/E)/\\sin(\\pi/(2E))}{2(E+1)}

    i.e. :math:`\\lambda\\sum\\eta` for a per-epoch cosine lr with no warm-up. ``f(0) = 0``,
    ``f(B E) = 1``.
    """
    if steps_per_epoch <= 0 or epochs <= 0:
        raise ValueError(f"steps_per_epoch and epochs must be > 0, got {steps_per_epoch}, {epochs}")
    if not 0 <= n <= steps_per_epoch * epochs:
        raise ValueError(f"step n must be in [0, {steps_per_epoch * epochs}], got {n}")
    if n == 0:
        return 0.0
    big_b, big_e = steps_per_epoch, epochs
    e = (n - 1) // big_b
    b = n - e * big_b
    base = (1 + 2 * e + math.sin(math.pi * (e - 0.5) / big_e) / math.sin(math.pi / (2 * big_e))) / (
        2 * (big_e + 1)
    )
    return base + b * (1 + math.cos(math.pi * e / big_e)) / (big_b * (big_e + 1))


def cubic_sparsity(x: float, final: float, initial: float = 0.0) -> float:
    """Cubic sparsity ramp (Zhu & Gupta 2017; ST-3 with ``initial = 0``).

    .. math::
        s(x) = s_f + (s_i - s_f)(1 - x)^3
    """
    x = _check_x(x)
    return final + (initial - final) * (1.0 - x) ** 3
