"""The layer maps of a network's analytic kernels, in place over whole kernel matrices.

Private: the layers' :meth:`analytic` maps (:mod:`ntksolve.nets`) and
:mod:`ntksolve.kernels.network_analytic` call these row kernels through
:func:`ntksolve._jit.threads.run_in_threads` (``nogil``, rows ``start::step``). Every map is
element-wise, so in the symmetric case each computes the upper triangle ``j >= i`` only (rows paired
``(p, N-1-p)`` so that the threads get equal work) and the driver mirrors once at the end.

- :func:`activation_rows`: for every pair, with ``(S11, S22, S12) = (var1[i], var2[j], K[i, j])``,
  ``K <- E[phi(u) phi(v)]`` and ``T <- E[phi'(u) phi'(v)] T``, with the very layer maps of the MLP's
  kernels (:mod:`ntksolve._jit.expectations`), one loop per activation so that each vectorises;
  for tanh, sigmoid and softplus the MLP's Hermite series (its pair kernel's
  :func:`ntksolve._jit.analytic_block.series_block`), the scale mixture for the pairs it leaves.
- :func:`dense_rows`: ``K <- sw2 K + sb2``, ``T <- sw2 T + K``.
- :func:`scale_rows`: ``K <- K d1_i d2_j``, ``T`` alike (a normalisation).
- :func:`add_rows`: ``K <- K + s2 K'``, ``T <- T + s2 T'`` (a residual sum).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ntksolve._jit.analytic_block import series_block
from ntksolve._jit.analytic_points import CLOSED, MIXTURE, SERIES
from ntksolve._jit.expectations import (
    activation_step,
    closed_form_expectations,
    closed_form_rows,
    logistic_expectations_block,
)


@njit(cache=True, error_model="numpy")
def _row(K, T, i, j0, var1, var2, code, prm, method, mix_var, mix_w, ser1, ser2, off1, off2, work, diagonal):
    """Row ``i``, columns ``j0:``, of the activation map, in place (see the module docstring)."""
    ko = K[i, j0:]
    to = T[i, j0:]
    v2 = var2[j0:]
    s11 = var1[i]
    n = ko.shape[0]
    if method == SERIES:
        # a diagonal tile's pair of the point with itself (j0 = i) is the point's own map, which the
        # driver writes; the series block starts after it, as the MLP's does (the series' terms
        # depend on the block's pairs)
        f = 1 if diagonal and n > 0 else 0
        # the series pieces are the whole sets' (the points' rows off1 + i, off2 + j0 + j)
        series_block(code, s11, v2[f:], ko[f:], n - f, ser1, ser2, 0, off1 + i, off2 + j0 + f, mix_var, mix_w, work)
        e_phi, e_dphi = work[2][0], work[2][1]
        for j in range(n - f):
            ko[f + j] = e_phi[j]
            to[f + j] = e_dphi[j] * to[f + j]
        return
    if method == MIXTURE:
        cov = ko.copy()  # the block reads the covariances after it starts writing its output
        s11_blk = np.full(n, s11)
        det = np.empty(n)
        e_dphi = np.empty(n)
        logistic_expectations_block(code, s11_blk, v2, cov, n, mix_var, mix_w, ko, e_dphi, det)
        for j in range(n):
            to[j] = e_dphi[j] * to[j]
        return
    closed_form_rows(code, prm, s11, v2, ko, to, n, activation_step, 0.0, 0.0)


@njit(cache=True, nogil=True)
def activation_rows(
    K, T, var1, var2, code, prm, method, mix_var, mix_w, ser1, ser2, off1, off2, symmetric, start, step
):
    """Rows ``start::step`` of the activation map (symmetric: row pairs ``(p, N-1-p)``, ``j >= i``).

    Parameters
    ----------
    K, T : ndarray, shape (N1, N2)
        The covariances ``Sigma12`` and the NTK before the activation; overwritten with
        ``E[phi phi]`` and ``E[phi' phi'] T``.
    var1, var2 : ndarray, shapes (N1,), (N2,)
        The variances ``Sigma(x, x)`` of the row and column points.
    code, prm, method : the activation and the map's method (CLOSED, MIXTURE or SERIES)
    mix_var, mix_w : ndarray
        The mixture's rule (empty for closed forms).
    ser1, ser2 : tuple
        SERIES: the series pieces of the whole sets of row and column points, of one layer
        (:func:`ntksolve._jit.analytic_block.series_block`); else placeholders.
    off1, off2 : int
        The first row and column point's index in those sets (a tile's offsets).
    symmetric : bool
    start, step : int
    """
    n2 = K.shape[1] if method == SERIES else 0
    t_cap = ser1[0].shape[1] if method == SERIES else 0
    work = (np.empty((8, n2)), np.empty((t_cap, 0)), np.empty((2, n2)))  # the series' scratch
    for i, j0 in thread_rows(K.shape[0], symmetric, start, step):
        _row(K, T, i, j0, var1, var2, code, prm, method, mix_var, mix_w, ser1, ser2, off1, off2, work, symmetric)


@njit(cache=True)
def thread_rows(n1, symmetric, start, step):
    """``(row, first column)`` of this thread's rows (symmetric: pairs ``(p, N-1-p)``, ``j >= i``)."""
    out = []
    if not symmetric:
        for i in range(start, n1, step):
            out.append((i, 0))
        return out
    for p in range(start, (n1 + 1) // 2, step):
        out.append((p, p))
        if n1 - 1 - p != p:
            out.append((n1 - 1 - p, n1 - 1 - p))
    return out


@njit(cache=True, nogil=True)
def dense_rows(K, T, sw2, sb2, symmetric, start, step):
    """``K <- sw2 K + sb2`` and ``T <- sw2 T + K`` (the new ``K``), in place, this thread's rows."""
    for i, j0 in thread_rows(K.shape[0], symmetric, start, step):
        k, t = K[i, j0:], T[i, j0:]
        for j in range(k.shape[0]):
            s = sw2 * k[j] + sb2
            k[j] = s
            t[j] = sw2 * t[j] + s


@njit(cache=True, nogil=True)
def scale_rows(K, T, d1, d2, symmetric, start, step):
    """``K[i, j] *= d1[i] d2[j]`` and ``T`` alike, in place, this thread's rows."""
    for i, j0 in thread_rows(K.shape[0], symmetric, start, step):
        k, t = K[i, j0:], T[i, j0:]
        e = d2[j0:]
        a = d1[i]
        for j in range(k.shape[0]):
            f = a * e[j]
            k[j] *= f
            t[j] *= f


@njit(cache=True, nogil=True)
def add_rows(K, T, K2, T2, s2, symmetric, start, step):
    """``K <- K + s2 K2`` and ``T <- T + s2 T2``, in place, this thread's rows."""
    for i, j0 in thread_rows(K.shape[0], symmetric, start, step):
        k, t = K[i, j0:], T[i, j0:]
        k2, t2 = K2[i, j0:], T2[i, j0:]
        for j in range(k.shape[0]):
            k[j] += s2 * k2[j]
            t[j] += s2 * t2[j]


@njit(cache=True, error_model="numpy")
def activation_variances(var, code, prm, method, mix_var, mix_w):
    """``(E[phi(u)^2], E[phi'(u)^2])`` for ``u ~ N(0, var[i])``, shapes (N,): the map of a point (the
    pairs' map at equal covariances; SERIES: the mixture, which serves a point's pairs with itself)."""
    n = var.shape[0]
    out = np.empty(n)
    e_dphi = np.empty(n)
    if method == MIXTURE or method == SERIES:
        det = np.empty(n)
        logistic_expectations_block(code, var, var, var, n, mix_var, mix_w, out, e_dphi, det)
        return out, e_dphi
    for i in range(n):
        out[i], e_dphi[i] = closed_form_expectations(code, prm, var[i], var[i], var[i])
    return out, e_dphi


__all__ = [
    "activation_rows",
    "activation_variances",
    "dense_rows",
    "scale_rows",
    "add_rows",
    "CLOSED",
    "MIXTURE",
    "SERIES",
]
