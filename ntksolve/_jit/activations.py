"""Scalar activation functions and their derivatives, jitted, dispatched on an integer code.

Private: numba kernels in the other ``_jit_*`` modules call :func:`act`, :func:`dact` and
:func:`ddact` inside their loops; the public modules only use :data:`ACTIVATION_CODES`.
Nothing here is compiled at import: ``@njit`` compiles lazily on first call.
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
}

RELU, ERF, TANH, IDENTITY, SIGMOID, GELU, SOFTPLUS = range(7)

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
def act(code, x):
    """phi(x) for the activation ``code``."""
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
    else:  # SOFTPLUS, log(1 + e^x) without overflow
        if x > 0.0:
            return x + math.log1p(math.exp(-x))
        return math.log1p(math.exp(x))


@njit(cache=True, inline="always")
def dact(code, x):
    """phi'(x); relu'(0) = 0, as in the conventions."""
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
    else:  # SOFTPLUS
        return _sigmoid(x)


@njit(cache=True, inline="always")
def ddact(code, x):
    """phi''(x) (0 for relu and identity, away from the kink)."""
    if code == RELU or code == IDENTITY:
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
    else:  # SOFTPLUS
        s = _sigmoid(x)
        return s * (1.0 - s)
