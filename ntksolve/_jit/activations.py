"""Scalar activation functions and their derivatives, jitted, dispatched on an integer code.

Private: numba kernels in the other ``_jit`` modules call :func:`act`, :func:`dact`,
:func:`act_dact` (both at once) and :func:`ddact` inside their loops; the public modules only use
:data:`ACTIVATION_CODES`.
Nothing here is compiled at import: ``@njit`` compiles lazily on first call.

Every function takes the activation's code and its parameters ``prm``, a pair of floats that
:class:`ntksolve.nets.layers.Activation` fills: ``(a, b)`` of ``abrelu``
(``phi(x) = a min(x, 0) + b max(x, 0)``; leaky relu and abs are the cases ``(slope, 1)`` and
``(-1, 1)``), ``(n, 0)`` of ``monomial`` (``phi(x) = x^n``), and ``(0, 0)`` for the others.
"""

from __future__ import annotations

import math

import numpy as np

from numba import njit, types
from numba.extending import overload

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
_INV_SQRT2_LO = 6.268583589525109e-17  # 1/sqrt(2) - _INV_SQRT2 (which is 1 ulp below the nearest double)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRTPI = 2.0 / math.sqrt(math.pi)
_SPLITTER = 134217729.0  # 2^27 + 1: Veltkamp's split of a double into two 26-bit halves
#: Beyond this |x| the Gaussian factors underflow (e^{-x^2/2} = 0 from |x| = 38.6) and erfc
#: saturates, so the tails use x clamped here: the split stays finite and x = +-inf gives the
#: limits (0) instead of inf * 0.
_TAIL = 64.0


@njit(cache=True, inline="always")
def _clamp(x, bound):
    """``x`` clamped to ``[-bound, bound]``; NaN stays NaN (numba's ``max`` and ``min`` keep
    their first argument unless the second compares greater, or less)."""
    return min(max(x, -bound), bound)


@njit(cache=True, inline="always")
def _split(x):
    """``(hi, lo)``, ``hi + lo = x`` exactly, each half with at most 26 significant bits."""
    t = _SPLITTER * x
    hi = t - (t - x)
    return hi, x - hi


@njit(cache=True, inline="always")
def _square(x):
    """``(p, e)``: ``p = fl(x^2)`` and its rounding error ``e = x^2 - p`` exactly (Dekker)."""
    p = x * x
    hi, lo = _split(x)
    return p, ((hi * hi - p) + 2.0 * hi * lo) + lo * lo


@njit(cache=True, inline="always")
def _gauss(x, scale):
    """``(exp(-scale x^2), p, e)`` for ``scale`` 1/2 or 1, ``x`` a float64 in ``[-_TAIL, _TAIL]``, with
    ``(p, e)`` of :func:`_square`.

    ``exp(-scale fl(x^2))`` alone is off by ``scale x^2`` ulp (the rounding of ``x^2``, amplified by
    the exponential: 7e-14 relative at ``x = 37``); the exact error ``e`` of the square corrects it,
    ``exp(-scale (p + e)) = exp(-scale p) (1 - scale e)``. The second derivatives use ``(p, e)``
    for ``c - x^2 = (c - p) - e``, exact to an ulp near its root (Sterbenz) where ``c - p`` cancels.
    """
    p, e = _square(x)
    return math.exp(-scale * p) * (1.0 - scale * e), p, e


def _corrects(x):
    """Whether the tails' rounding corrections apply to ``x``: for float64 only. A float32
    ``x`` is squared exactly in float64, and the other errors they remove are far below a
    float32 ulp, so compiling them out keeps the float32 pass as fast as before."""
    return not isinstance(x, np.float32)


@overload(_corrects, inline="always")
def _corrects_typed(x):
    wide = not (isinstance(x, types.Float) and x.bitwidth == 32)
    return lambda x: wide


@njit(cache=True, inline="always")
def _gauss_value(x, scale):
    """``exp(-scale x^2)`` as :func:`_gauss` computes it, for the hot passes: the correction is made
    where it matters, beyond ``|x| = 4`` (below, the rounding costs ``scale x^2 <= 16`` ulp), a
    branch that typical pre-activations predict, cheaper than always computing it."""
    xd = np.float64(x)
    p = xd * xd
    g = math.exp(-scale * p)
    if _corrects(x) and p > 16.0 and p < _TAIL * _TAIL:  # not at inf or NaN, whose split is NaN
        g *= 1.0 - scale * _square(xd)[1]
    return g


@njit(cache=True, inline="always")
def _half_erfc(x):
    """``Phi(x) = erfc(-x / sqrt(2)) / 2``, computed in float64, to a few ulp in both tails.

    ``erfc(y)`` for ``y = fl(-x / sqrt(2))`` would carry the rounding of ``y`` amplified by ``2 y^2``
    (1e-13 relative at ``x = -30``); the exact error ``d`` of ``y`` (Dekker's product, with the
    low part of ``1/sqrt(2)``) corrects it through ``erfc(y + d) = erfc(y) (1 - 2 y d)``, whose
    log-derivative ``-2y`` is the tail's. It is made beyond ``y = 2`` only (a predictable branch):
    below, the rounding costs at most 8 ulp, and for ``y <= 0``, where ``erfc`` is near 2, under one.
    """
    xd = np.float64(x)
    y = -xd * _INV_SQRT2
    r = 0.5 * math.erfc(y)
    if _corrects(x) and y > 2.0 and y < _TAIL:  # and not at inf or NaN, whose split would be NaN
        xh, xl = _split(xd)
        ch, cl = _split(_INV_SQRT2)
        d = -(((xh * ch + y) + xh * cl + xl * ch) + xl * cl) - xd * _INV_SQRT2_LO
        r *= 1.0 - 2.0 * y * d
    return r


@njit(cache=True, inline="always")
def _sigmoid_pair(x):
    """``(sigmoid x, sigmoid' x)`` from ``e = e^{-|x|}`` (no overflow), one exponential.

    ``sigmoid' = s(x) s(-x) = e / (1 + e)^2`` is accurate in the tails, where ``s (1 - s)`` cancels
    to 0 (from ``|x| = 37``) although the truth is ``~e^{-|x|}``.
    """
    e = math.exp(-abs(x))
    q = 1.0 + e
    return (1.0 if x >= 0.0 else e) / q, e / (q * q)


@njit(cache=True, inline="always")
def _sigmoid(x):
    return _sigmoid_pair(x)[0]


@njit(cache=True, inline="always")
def _dsigmoid(x):
    return _sigmoid_pair(x)[1]


@njit(cache=True, inline="always")
def _tanh_pair(x):
    """``(tanh x, tanh' x)`` from one transcendental call, each within 2 ulp.

    Below ``|x| = 0.625`` libm's ``tanh`` and ``1 - tanh^2`` (which loses nothing there, ``tanh^2 <
    0.31``); above, ``e = e^{-2|x|} < 0.29``, ``tanh |x| = (1 - e) / (1 + e)`` and ``tanh' = 4 e /
    (1 + e)^2``, accurate in the tails, where ``1 - tanh^2`` cancels to 0 (from ``|x| = 19.1``)
    although the truth is ``4 e^{-2|x|}``. Value and derivative share the call, so the fused pass
    costs one call, like the value alone.
    """
    ax = abs(x)
    if ax < 0.625:
        t = math.tanh(x)
        return t, 1.0 - t * t
    e = math.exp(-2.0 * ax)
    r = 1.0 / (1.0 + e)
    return math.copysign((1.0 - e) * r, x), 4.0 * e * r * r


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
    if code == RELU:  # NaN stays NaN, relu(-inf) = 0
        return 0.0 if x <= 0.0 else x
    elif code == ERF:
        return math.erf(x)
    elif code == TANH:
        return _tanh_pair(x)[0]
    elif code == IDENTITY:
        return x
    elif code == SIGMOID:
        return _sigmoid(x)
    elif code == GELU:  # x -> -inf: the clamped factor gives the limit 0, not -inf * 0
        return (-_TAIL if x < -_TAIL else x) * _half_erfc(x)
    elif code == ABRELU:
        return prm[1] * x if x > 0.0 else prm[0] * x
    elif code == SIN:
        return math.sin(x)
    elif code == COS:
        return math.cos(x)
    elif code == GAUSSIAN:
        return _gauss_value(x, 0.5)
    elif code == MONOMIAL:
        return ipow(x, int(prm[0]))
    else:  # SOFTPLUS, log(1 + e^x) = max(x, 0) + log(1 + e^{-|x|}) without overflow
        return (x if x > 0.0 else 0.0) + math.log1p(math.exp(-abs(x)))


@njit(cache=True, inline="always")
def dact(code, prm, x):
    """phi'(x); relu'(0) = 0, as in the conventions (abrelu'(0) = a likewise)."""
    if code == RELU:
        return 1.0 if x > 0.0 else 0.0
    elif code == ERF:
        return _TWO_OVER_SQRTPI * _gauss_value(x, 1.0)
    elif code == TANH:
        return _tanh_pair(x)[1]
    elif code == IDENTITY:
        return 1.0
    elif code == SIGMOID:
        return _dsigmoid(x)
    elif code == GELU:
        xc = _clamp(np.float64(x), _TAIL)
        return _half_erfc(x) + xc * _INV_SQRT2PI * _gauss_value(x, 0.5)
    elif code == ABRELU:
        return prm[1] if x > 0.0 else prm[0]
    elif code == SIN:
        return math.cos(x)
    elif code == COS:
        return -math.sin(x)
    elif code == GAUSSIAN:
        xc = _clamp(np.float64(x), _TAIL)
        return -xc * _gauss_value(x, 0.5)
    elif code == MONOMIAL:
        n = int(prm[0])
        return n * ipow(x, n - 1)
    else:  # SOFTPLUS
        return _sigmoid(x)


@njit(cache=True, inline="always")
def act_dact(code, prm, x):
    """``(phi(x), phi'(x))``, the values of :func:`act` and :func:`dact` to the bit.

    The passes that need both (the forward pass of the empirical NTK, the 1-D rules) call this:
    where the two share a transcendental call (tanh, sigmoid, softplus, gelu, gaussian) it is made
    once, which separate inlined calls would not guarantee.
    """
    if code == TANH:
        return _tanh_pair(x)
    elif code == SIGMOID:
        return _sigmoid_pair(x)
    elif code == SOFTPLUS:
        e = math.exp(-abs(x))
        return (x if x > 0.0 else 0.0) + math.log1p(e), (1.0 if x >= 0.0 else e) / (1.0 + e)
    elif code == GELU:
        xc = _clamp(np.float64(x), _TAIL)
        p = _half_erfc(x)
        return (-_TAIL if x < -_TAIL else x) * p, p + xc * _INV_SQRT2PI * _gauss_value(x, 0.5)
    elif code == GAUSSIAN:
        xc = _clamp(np.float64(x), _TAIL)
        g = _gauss_value(x, 0.5)
        return g, -xc * g
    return act(code, prm, x), dact(code, prm, x)


@njit(cache=True, inline="always")
def ddact(code, prm, x):
    """phi''(x) (0 for relu, abrelu and identity, away from the kink)."""
    if code == RELU or code == IDENTITY or code == ABRELU:
        return 0.0
    elif code == ERF:
        xc = _clamp(np.float64(x), _TAIL)
        return -2.0 * xc * _TWO_OVER_SQRTPI * _gauss_value(x, 1.0)
    elif code == TANH:
        t, d = _tanh_pair(x)
        return -2.0 * t * d
    elif code == SIGMOID:  # s'(x) (1 - 2 s(x)), and 1 - 2 s(x) = -tanh(x / 2) without cancellation
        return -_dsigmoid(x) * math.tanh(0.5 * x)
    elif code == GELU:  # phi_N(x) (2 - x^2)
        g, p, e = _gauss(_clamp(np.float64(x), _TAIL), 0.5)
        return _INV_SQRT2PI * g * ((2.0 - p) - e)
    elif code == SIN:
        return -math.sin(x)
    elif code == COS:
        return -math.cos(x)
    elif code == GAUSSIAN:  # (x^2 - 1) exp(-x^2 / 2)
        g, p, e = _gauss(_clamp(np.float64(x), _TAIL), 0.5)
        return ((p - 1.0) + e) * g
    elif code == MONOMIAL:
        n = int(prm[0])
        return n * (n - 1) * ipow(x, n - 2) if n >= 2 else 0.0
    else:  # SOFTPLUS
        return _dsigmoid(x)
