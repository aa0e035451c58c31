"""Elementary functions as straight-line arithmetic, so that a vectorised lane and a scalar call round alike.

Private. The layer maps of :mod:`ntksolve._jit.expectations` and
:mod:`ntksolve._jit.elementary_maps` loop over the columns of a block, which LLVM vectorises; a
libm call there would either stop the vectorisation or, with a vector math library (SVML),
round differently in a vector lane than in the scalar call of the per-point recursion, and a
pair of identical points would then miss the diagonal value by an ulp. These functions use only
``+ - * /``, ``sqrt``, comparisons and a table lookup, each correctly rounded on every path.

- :func:`atan2_upper`, :func:`arcsine_angle`: Cephes' arctangent (S. Moshier, atan.c), at most
  2 ulp of ``pi``.
- :func:`exp`: Cephes' exponential (exp.c): ``e^x = 2^k e^r``, ``|r| <= ln 2 / 2``, ``e^r`` a
  Pade form, ``2^k`` applied in two exact steps from a table of powers of two; within 2 ulp of
  libm on ``[-745, 709]`` (subnormal results included), 0 below.
- :func:`exp_sinh_cosh`: ``(e^{-m} sinh c, e^{-m} cosh c)``, the trigonometric layer maps, without
  overflow for ``|c| <= m`` (which a covariance satisfies, ``|c| <= sqrt(q1 q2) <= m``) and
  without cancellation at small ``c``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_PI = math.pi

# Cephes ``atan`` (S. Moshier, atan.c): atan(t) = t + t z P(z)/Q(z), z = t^2, |t| <= 0.66, with the
# reduction atan(a) = pi/4 + atan((a - 1)/(a + 1)) above 0.66. Relative error 1.9e-16 on [-10, 10].
_ATAN_P0 = -8.750608600031904122785e-1
_ATAN_P1 = -1.615753718733365076637e1
_ATAN_P2 = -7.500855792314704667340e1
_ATAN_P3 = -1.228866684490136173410e2
_ATAN_P4 = -6.485021904942025371773e1
_ATAN_Q0 = 2.485846490142306297962e1
_ATAN_Q1 = 1.650270098316988542046e2
_ATAN_Q2 = 4.328810604912902668951e2
_ATAN_Q3 = 4.853903996359136964868e2
_ATAN_Q4 = 1.945506571482613964425e2
_ATAN_MOREBITS = 6.123233995736765886130e-17  # pi/4 - fl(pi/4)


@njit(cache=True, inline="always", error_model="numpy")
def atan2_upper(y, x):
    """``atan2(y, x)`` for ``y >= 0``: the angle in ``[0, pi]``, as branch-free code that vectorises.

    Parameters
    ----------
    y : float
        Non-negative ordinate.
    x : float
        Abscissa.

    Returns
    -------
    theta : float
        In ``[0, pi]``; ``atan2(0, 0) = 0`` as in libm. ``error_model="numpy"`` lets ``0/0`` pass
        (it is selected away) instead of raising, which is what lets LLVM vectorise the loop.
    """
    ax = abs(x)
    big = max(ax, y)
    small = min(ax, y)
    a = small / big if big > 0.0 else 0.0  # in [0, 1]
    reduced = a > 0.66
    t = (a - 1.0) / (a + 1.0) if reduced else a
    z = t * t
    p = (((_ATAN_P0 * z + _ATAN_P1) * z + _ATAN_P2) * z + _ATAN_P3) * z + _ATAN_P4
    q = ((((z + _ATAN_Q0) * z + _ATAN_Q1) * z + _ATAN_Q2) * z + _ATAN_Q3) * z + _ATAN_Q4
    r = t + t * (z * p / q)
    r = 0.25 * _PI + (r + 0.5 * _ATAN_MOREBITS) if reduced else r
    r = 0.5 * _PI - r if y > ax else r  # atan(y/|x|) = pi/2 - atan(|x|/y)
    return _PI - r if x < 0.0 else r


@njit(cache=True, inline="always", error_model="numpy")
def arcsine_angle(y, x):
    """``atan2(y, x)`` for ``x > 0``, in ``(-pi/2, pi/2)``: ``arcsin(y / sqrt(x^2 + y^2))``."""
    angle = atan2_upper(abs(y), x)
    return -angle if y < 0.0 else angle


# Cephes ``exp`` (exp.c): e^r = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)) on |r| <= ln(2)/2, after
# x = k ln 2 + r with ln 2 split in two (C1 exact in 11 bits, so k C1 is exact).
_EXP_P0 = 1.26177193074810590878e-4
_EXP_P1 = 3.02994407707441961300e-2
_EXP_P2 = 9.99999999999999999910e-1
_EXP_Q0 = 3.00198505138664455042e-6
_EXP_Q1 = 2.52448340349684104192e-3
_EXP_Q2 = 2.27265548208155028766e-1
_EXP_Q3 = 2.00000000000000000009e0
_EXP_C1 = 6.93145751953125e-1
_EXP_C2 = 1.42860682030941723212e-6
_LOG2E = 1.4426950408889634073599
_EXP_MAX = 709.78  # e^x overflows just above 709.782
_EXP_MIN = -745.2  # e^x rounds to 0 below -745.13
#: 2^j for j = -540 ... 540: 2^k = 2^(k // 2) 2^(k - k // 2), both factors normal, so the first
#: product is exact and only the last one rounds (into the subnormals, where it must).
_POW2_OFFSET = 540
_POW2 = 2.0 ** np.arange(-_POW2_OFFSET, _POW2_OFFSET + 1, dtype=np.float64)
_POW2.setflags(write=False)


@njit(cache=True, error_model="numpy")
def exp(x):
    """``e^x`` for a finite ``x`` (``inf`` above 709.78, 0 below -745.2), arithmetic only.

    Parameters
    ----------
    x : float

    Returns
    -------
    float
    """
    xc = min(max(x, _EXP_MIN), _EXP_MAX)
    kf = math.floor(_LOG2E * xc + 0.5)
    k = int(kf)
    r = xc - kf * _EXP_C1
    r = r - kf * _EXP_C2
    rr = r * r
    p = r * ((_EXP_P0 * rr + _EXP_P1) * rr + _EXP_P2)
    q = ((_EXP_Q0 * rr + _EXP_Q1) * rr + _EXP_Q2) * rr + _EXP_Q3
    e = 1.0 + 2.0 * (p / (q - p))
    k1 = k // 2
    e = e * _POW2[k1 + _POW2_OFFSET] * _POW2[k - k1 + _POW2_OFFSET]
    if x > _EXP_MAX:
        return math.inf
    return e if x >= _EXP_MIN else 0.0


@njit(cache=True, error_model="numpy")
def exp_sinh_cosh(m, c):
    """``(e^{-m} sinh c, e^{-m} cosh c)`` for ``|c| <= m`` (up to rounding), ``m >= 0``.

    Below ``|c| = 1`` the Taylor series of ``sinh`` and ``cosh`` to ``c^17`` and ``c^18``
    (truncation below 1e-17 relative) times ``e^{-m}``; above, ``(e^{|c| - m} -+ e^{-|c| - m}) / 2``,
    whose exponents are ``<= 0`` and whose difference loses at most a factor 1.3 to cancellation.
    """
    ac = abs(c)
    c2 = c * c
    sh = c * (
        1.0
        + c2
        / 6.0
        * (
            1.0
            + c2
            / 20.0
            * (
                1.0
                + c2
                / 42.0
                * (1.0 + c2 / 72.0 * (1.0 + c2 / 110.0 * (1.0 + c2 / 156.0 * (1.0 + c2 / 210.0 * (1.0 + c2 / 272.0)))))
            )
        )
    )
    ch = 1.0 + c2 / 2.0 * (
        1.0
        + c2
        / 12.0
        * (
            1.0
            + c2
            / 30.0
            * (
                1.0
                + c2
                / 56.0
                * (1.0 + c2 / 90.0 * (1.0 + c2 / 132.0 * (1.0 + c2 / 182.0 * (1.0 + c2 / 240.0 * (1.0 + c2 / 306.0)))))
            )
        )
    )
    em = exp(-m)
    big_plus = exp(ac - m)
    big_minus = exp(-ac - m)
    if ac < 1.0:
        return em * sh, em * ch
    half_diff = 0.5 * (big_plus - big_minus)
    return (half_diff if c > 0.0 else -half_diff), 0.5 * (big_plus + big_minus)


__all__ = ["atan2_upper", "arcsine_angle", "exp", "exp_sinh_cosh"]
