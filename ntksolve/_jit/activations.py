"""Scalar activation functions and their derivatives, jitted, dispatched on an integer code.

Private: numba kernels in the other ``_jit_*`` modules call :func:`act`, :func:`dact` and
:func:`ddact` inside their loops; the public modules only use :data:`ACTIVATION_CODES`.
Nothing here is compiled at import: ``@njit`` compiles lazily on first call.

Every function takes the activation's code and its parameters ``prm``, a pair of floats that
:class:`ntksolve.nets.layers.Activation` fills: ``(a, b)`` of ``abrelu``
(``phi(x) = a min(x, 0) + b max(x, 0)``; leaky relu and abs are the cases ``(slope, 1)`` and
``(-1, 1)``), ``(n, 0)`` of ``monomial`` (``phi(x) = x^n``), and ``(0, 0)`` for the others.
"""

from __future__ import annotations

import math

from numba import njit

#: Activation name -> integer code understood by the jitted kernels. Order is part of the cache key.
ACTIVATION_CODES = {
    "relu": 0,
    "erf": 1,
    "tanh": 2,
    "identity": 3,
    "sigmoid": 4,
    "gelu": 5,
    "softplus": 6,
    "abrelu": 7,
    "sin": 8,
    "cos": 9,
    "gaussian": 10,
    "monomial": 11,
}

RELU, ERF, TANH, IDENTITY, SIGMOID, GELU, SOFTPLUS, ABRELU, SIN, COS, GAUSSIAN, MONOMIAL = range(12)

#: The parameters of an activation without any.
NO_PARAMS = (0.0, 0.0)

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRTPI = 2.0 / math.sqrt(math.pi)


@njit(cache=True, inline="always")
def _sigmoid(x):
    # Branches keep exp() from overflowing for large |x|.
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def ipow(x, n):
    """``x^n`` for an integer ``n >= 0`` by repeated multiplication (the same bits everywhere)."""
    r = 1.0
    for _ in range(n):
        r *= x
    return r


@njit(cache=True, inline="always")
def act(code, prm, x):
    """phi(x) for the activation ``code`` with parameters ``prm``."""
    if code == RELU:
        return x if x > 0.0 else 0.0 * x
    elif code == ERF:
        return math.erf(x)
    elif code == TANH:
        return math.tanh(x)
    elif code == IDENTITY:
        return x
    elif code == SIGMOID:
        return _sigmoid(x)
    elif code == GELU:
        return x * 0.5 * math.erfc(-x * _INV_SQRT2)
    elif code == ABRELU:
        return prm[1] * x if x > 0.0 else prm[0] * x
    elif code == SIN:
        return math.sin(x)
    elif code == COS:
        return math.cos(x)
    elif code == GAUSSIAN:
        return math.exp(-0.5 * x * x)
    elif code == MONOMIAL:
        return ipow(x, int(prm[0]))
    else:  # SOFTPLUS, log(1 + e^x) without overflow
        if x > 0.0:
            return x + math.log1p(math.exp(-x))
        return math.log1p(math.exp(x))


@njit(cache=True, inline="always")
def dact(code, prm, x):
    """phi'(x); relu'(0) = 0, as in the conventions (abrelu'(0) = a likewise)."""
    if code == RELU:
        return 1.0 if x > 0.0 else 0.0
    elif code == ERF:
        return _TWO_OVER_SQRTPI * math.exp(-x * x)
    elif code == TANH:
        t = math.tanh(x)
        return 1.0 - t * t
    elif code == IDENTITY:
        return 1.0
    elif code == SIGMOID:
        s = _sigmoid(x)
        return s * (1.0 - s)
    elif code == GELU:
        return 0.5 * math.erfc(-x * _INV_SQRT2) + x * _INV_SQRT2PI * math.exp(-0.5 * x * x)
    elif code == ABRELU:
        return prm[1] if x > 0.0 else prm[0]
    elif code == SIN:
        return math.cos(x)
    elif code == COS:
        return -math.sin(x)
    elif code == GAUSSIAN:
        return -x * math.exp(-0.5 * x * x)
    elif code == MONOMIAL:
        n = int(prm[0])
        return n * ipow(x, n - 1)
    else:  # SOFTPLUS
        return _sigmoid(x)


@njit(cache=True, inline="always")
def ddact(code, prm, x):
    """phi''(x) (0 for relu, abrelu and identity, away from the kink)."""
    if code == RELU or code == IDENTITY or code == ABRELU:
        return 0.0
    elif code == ERF:
        return -2.0 * x * _TWO_OVER_SQRTPI * math.exp(-x * x)
    elif code == TANH:
        t = math.tanh(x)
        return -2.0 * t * (1.0 - t * t)
    elif code == SIGMOID:
        s = _sigmoid(x)
        return s * (1.0 - s) * (1.0 - 2.0 * s)
    elif code == GELU:
        return _INV_SQRT2PI * math.exp(-0.5 * x * x) * (2.0 - x * x)
    elif code == SIN:
        return -math.sin(x)
    elif code == COS:
        return -math.cos(x)
    elif code == GAUSSIAN:
        return (x * x - 1.0) * math.exp(-0.5 * x * x)
    elif code == MONOMIAL:
        n = int(prm[0])
        return n * (n - 1) * ipow(x, n - 2) if n >= 2 else 0.0
    else:  # SOFTPLUS
        s = _sigmoid(x)
        return s * (1.0 - s)
