"""Sums of squares, mean squares and 2-norms that neither overflow nor underflow (the one implementation).

``np.mean(a * a)`` is ``inf`` once ``|a| >~ 1e154`` and ``0`` once ``|a| <~ 1e-162`` (float64), even
where the mean square itself is representable, and ``np.linalg.norm(a, axis=0)`` squares the same
way. These compute the plain formula first and redo only the reductions whose result left the
safe range, on ``a / s`` with ``s`` a power of two near ``max |a|``: dividing by a power of two is
exact, so the answer is the plain formula's wherever that one neither overflowed nor underflowed,
and where the true value lies beyond the dtype's range it is ``inf`` (or ``0``) and nothing else.
"""

from __future__ import annotations

import numpy as np

__all__ = ["power_of_two_scale", "mean_square", "norm", "squares_in_range", "SQUARE_SAFE"]

#: Magnitudes within ``SQUARE_SAFE`` of 1 (``1e-100 <= |a| <= 1e100``) have float64 squares at least
#: 1e100 from either end of the range: sums of any realistic number of them, and products with
#: values of the same kind, stay normal numbers. The one threshold of "the plain formula is safe".
SQUARE_SAFE = 1e100


def squares_in_range(a) -> bool:
    """Whether every element of ``a`` is 0 or of magnitude in ``[1 / SQUARE_SAFE, SQUARE_SAFE]``:
    then ``a²`` (and sums and products of a few such squares) neither overflow nor underflow in
    float64, and the plain formula can be used bit for bit.

    Parameters
    ----------
    a : array_like

    Returns
    -------
    bool
    """
    m = np.abs(np.asarray(a, dtype=np.float64))
    return bool(np.all((m == 0) | ((m >= 1.0 / SQUARE_SAFE) & (m <= SQUARE_SAFE))))


def power_of_two_scale(a, axis=None, keepdims=False):
    """A power of two ``s`` with ``max |a| / s`` in ``[1, 2)`` along ``axis`` (1 where ``a`` is all
    zero or not finite), of ``a``'s float dtype: ``a / s`` is then exact and its squares are below 4.

    Parameters
    ----------
    a : ndarray
    axis : int or tuple of int, optional
        Reduced axes (all by default).
    keepdims : bool, default False

    Returns
    -------
    s : ndarray of a's dtype, shape of ``max(a, axis)``
    """
    a = np.asarray(a)
    dt = a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)
    m = np.max(np.abs(a), axis=axis, keepdims=keepdims) if a.size else np.zeros(())
    _, e = np.frexp(m)
    # 2**(e - 1), not 2**e: max |a| = 2**e is never reached, and float32's 2**128 would overflow
    s = np.ldexp(np.ones((), dtype=dt), e - 1).astype(dt)
    return np.where(np.isfinite(m) & (m > 0), s, np.ones((), dtype=dt))


def _reduce(a, axis, mean, root):
    """``sum`` (or ``mean``) of ``a * a`` along ``axis``, or its square root, overflow- and underflow-free."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    fi = np.finfo(a.dtype)
    reduce = np.mean if mean else np.sum
    with np.errstate(over="ignore", under="ignore"):
        plain = reduce(a * a, axis=axis)
    # below tiny / eps, squares lost to underflow could matter at the last digit: redo those
    ok = np.isfinite(plain) & (plain >= fi.tiny / fi.eps)
    if root:
        plain = np.sqrt(plain)
    if a.size == 0 or np.all(ok):
        return plain
    s = power_of_two_scale(a, axis=axis, keepdims=True)
    b = a / s
    s = np.squeeze(s, axis=axis) if axis is not None else s.reshape(())
    with np.errstate(over="ignore", under="ignore"):
        inner = reduce(b * b, axis=axis)
        scaled = np.sqrt(inner) * s if root else (inner * s) * s  # inf or 0 only when the true value is
    return np.where(ok, plain, scaled)[()]


def mean_square(a, axis=None):
    """``mean(a²)`` along ``axis``, without overflow or underflow.

    Parameters
    ----------
    a : ndarray
    axis : int or tuple of int, optional
        Reduced axes (all by default).

    Returns
    -------
    float or ndarray, shape of ``a`` without ``axis``
    """
    return _reduce(a, axis, mean=True, root=False)


def norm(a, axis=None):
    """The 2-norm ``sqrt(Σ a²)`` along ``axis``, without overflow or underflow: ``np.linalg.norm``'s
    value bit for bit wherever that one's squares stay in range.

    Parameters
    ----------
    a : ndarray
        Finite or not (``inf`` and NaN propagate as in ``np.linalg.norm``).
    axis : int, optional
        The one reduced axis, e.g. ``0`` for the norm of every column (all axes by default).

    Returns
    -------
    float or ndarray
        ``a``'s shape without ``axis``; of ``a``'s float dtype.
    """
    return _reduce(a, axis, mean=False, root=True)
