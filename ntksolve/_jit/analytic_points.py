"""The per-point half of the analytic NNGP/NTK recursion, as numba kernels: squared norms, each
point's variances through the layers, and its activations at the quadrature nodes.

Private: :mod:`ntksolve.kernels._analytic_rules` and :mod:`ntksolve.kernels.analytic` call these
before the pair kernels of :mod:`ntksolve._jit.analytic`, which take the per-point numbers as input
(``O(N L)`` once, so a pair only carries its covariance through the layers). Every map is the very
code the pairs use, so a pair of identical points reproduces these numbers bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ntksolve._jit.activations import act_dact
from ntksolve._jit.expectations import (
    closed_form_expectations,
    gauss_hermite_diagonal,
    logistic_expectations_block,
    next_layer,
)

#: How a layer map is evaluated (the ``method`` argument of the kernels). SERIES: the Hermite series
#: of :mod:`ntksolve._jit.hermite_series` for pairs, the mixture for points and the pairs it leaves.
CLOSED, MIXTURE, GAUSS_HERMITE, SERIES = 0, 1, 2, 3

#: Columns of one output row transformed together through all layers: the block of both outputs
#: and the per-layer variances stays in the L1 cache while the inner loops vectorise.
_COLUMN_BLOCK = 256


@njit(cache=True)
def _squared_norms(X):
    """Row norms squared, ``sum_k X[i, k]^2``.

    One fixed summation order, used by every path (and by
    :func:`ntksolve.kernels.analytic.input_gram` for identical rows), so that identical rows get the
    same bits wherever they are.

    Parameters
    ----------
    X : ndarray, shape (N, d)

    Returns
    -------
    sq : ndarray, shape (N,)
    """
    n, d = X.shape
    sq = np.empty(n)
    for i in range(n):
        acc = 0.0
        for k in range(d):
            acc += X[i, k] * X[i, k]
        sq[i] = acc
    return sq


@njit(cache=True, error_model="numpy")
def _diagonal_recursion(sq_norms, n_features, depth, code, prm, method, sw2, sb2, nodes, weights):
    """The recursion for a point paired with itself (``S11 = S22 = S12``), ``O(N L)``.

    Each layer is the pairs' own map at equal covariances (:func:`closed_form_expectations`,
    :func:`logistic_expectations_block`, :func:`gauss_hermite_diagonal`) followed by
    :func:`next_layer`, so a pair of identical points reproduces these numbers exactly.

    Parameters
    ----------
    sq_norms : ndarray, shape (N,)
        ``|x_i|^2``.
    n_features : int
        ``d``.
    depth : int
        ``L``, the number of hidden layers.
    code : int
        Activation code.
    prm : (float, float)
        Its parameters (``ntksolve._jit.activations``).
    method : int
        CLOSED, MIXTURE or GAUSS_HERMITE.
    sw2, sb2 : float
        ``sigma_w^2``, ``sigma_b^2``.
    nodes, weights : ndarray, shape (n,)
        The method's rule: Gauss-Hermite nodes and weights, or the mixing variances and weights
        (empty for closed forms).

    Returns
    -------
    variances : ndarray, shape (depth + 1, N)
        ``variances[l, i] = Sigma^{l+1}(x_i, x_i)``; the last row is the NNGP diagonal.
    ntk_diag : ndarray, shape (N,)
        ``Theta^{L+1}(x_i, x_i)``.
    """
    n = sq_norms.shape[0]
    variances = np.empty((depth + 1, n))
    ntk_diag = np.empty(n)
    scale = sw2 / n_features
    for i in range(n):
        s = scale * sq_norms[i] + sb2
        variances[0, i] = s
        ntk_diag[i] = s
    if method == MIXTURE or method == SERIES:
        # blocks of points through all layers, the same vectorised map as a block of pairs
        e_phi = np.empty(_COLUMN_BLOCK)
        e_dphi = np.empty(_COLUMN_BLOCK)
        det = np.empty(_COLUMN_BLOCK)
        for c0 in range(0, n, _COLUMN_BLOCK):
            m = min(c0 + _COLUMN_BLOCK, n) - c0
            t = ntk_diag[c0 : c0 + m]
            for l in range(depth):
                s_l = variances[l, c0 : c0 + m]
                nxt = variances[l + 1, c0 : c0 + m]
                logistic_expectations_block(code, s_l, s_l, s_l, m, nodes, weights, e_phi, e_dphi, det)
                for j in range(m):
                    nxt[j], t[j] = next_layer(sw2, sb2, e_phi[j], e_dphi[j], t[j])
        return variances, ntk_diag
    for i in range(n):
        s = variances[0, i]
        t = s
        for l in range(depth):
            if method == GAUSS_HERMITE:
                e_phi, e_dphi = gauss_hermite_diagonal(code, prm, s, nodes, weights)
            else:
                e_phi, e_dphi = closed_form_expectations(code, prm, s, s, s)
            s, t = next_layer(sw2, sb2, e_phi, e_dphi, t)
            variances[l + 1, i] = s
        ntk_diag[i] = t
    return variances, ntk_diag


@njit(cache=True, error_model="numpy")
def _weighted_activations_at_nodes(variances, depth, code, prm, nodes, weights):
    """``w_k phi(sqrt(Sigma^l(x_i, x_i)) z_k)`` and ``w_k phi'(...)``: the per-point outer factors.

    Parameters
    ----------
    variances : ndarray, shape (depth + 1, N)
    depth : int
    code : int
    prm : (float, float)
    nodes, weights : ndarray, shape (n,)

    Returns
    -------
    wphi, wdphi : ndarray, shape (depth, N, n)
    """
    n_points = variances.shape[1]
    n = nodes.shape[0]
    wphi = np.empty((depth, n_points, n))
    wdphi = np.empty((depth, n_points, n))
    for l in range(depth):
        for i in range(n_points):
            sd = math.sqrt(variances[l, i])
            for k in range(n):
                u = sd * nodes[k]
                f, g = act_dact(code, prm, u)
                wphi[l, i, k] = weights[k] * f
                wdphi[l, i, k] = weights[k] * g
    return wphi, wdphi


__all__ = ["CLOSED", "MIXTURE", "GAUSS_HERMITE", "SERIES"]
