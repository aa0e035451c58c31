"""The element-wise activation map of a network's analytic kernels, over whole kernel matrices.

Private: :mod:`ntksolve.kernels.network_analytic` calls :func:`activation_rows` through
:func:`ntksolve._jit.analytic.run_in_threads`. For every pair ``(i, j)`` with the covariances
``(S11, S22, S12) = (var1[i], var2[j], K[i, j])`` it writes ``E[phi(u) phi(v)]`` and
``E[phi'(u) phi'(v)] * Theta[i, j]``, with the very layer maps of the MLP's kernels
(:mod:`ntksolve._jit.expectations`), one loop per activation so that each vectorises. Symmetric
inputs: the upper triangle only (rows paired ``(p, N-1-p)`` to balance the threads), mirrored after.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ntksolve._jit.activations import ABRELU, COS, ERF, GAUSSIAN, GELU, MONOMIAL, RELU, SIN
from ntksolve._jit.elementary_maps import (abrelu_expectations, cos_expectations, gaussian_expectations,
                                           monomial_expectations, sin_expectations)
from ntksolve._jit.expectations import (_erf_expectations, _gelu_expectations, _relu_expectations,
                                        closed_form_expectations, logistic_expectations_block)

#: How the map is evaluated: closed form, or the logistic scale mixture (as ``ntksolve._jit.analytic``).
CLOSED, MIXTURE = 0, 1


@njit(cache=True, error_model="numpy")
def _row(K, T, Kout, Tout, i, j0, var1, var2, code, prm, method, mix_var, mix_w):
    """Row ``i``, columns ``j0:``, of the map (see the module docstring)."""
    s12 = K[i, j0:]
    t = T[i, j0:]
    ko = Kout[i, j0:]
    to = Tout[i, j0:]
    v2 = var2[j0:]
    s11 = var1[i]
    n = s12.shape[0]
    if method == MIXTURE:
        s11_blk = np.full(n, s11)
        det = np.empty(n)
        e_dphi = np.empty(n)
        logistic_expectations_block(code, s11_blk, v2, s12, n, mix_var, mix_w, ko, e_dphi, det)
        for j in range(n):
            to[j] = e_dphi[j] * t[j]
        return
    if code == RELU:
        for j in range(n):
            a, b = _relu_expectations(s11, v2[j], s12[j])
            ko[j] = a
            to[j] = b * t[j]
    elif code == ERF:
        for j in range(n):
            a, b = _erf_expectations(s11, v2[j], s12[j])
            ko[j] = a
            to[j] = b * t[j]
    elif code == GELU:
        for j in range(n):
            a, b = _gelu_expectations(s11, v2[j], s12[j])
            ko[j] = a
            to[j] = b * t[j]
    elif code == ABRELU:
        for j in range(n):
            a, b = abrelu_expectations(prm, s11, v2[j], s12[j])
            ko[j] = a
            to[j] = b * t[j]
    elif code == SIN:
        for j in range(n):
            a, b = sin_expectations(s11, v2[j], s12[j])
            ko[j] = a
            to[j] = b * t[j]
    elif code == COS:
        for j in range(n):
            a, b = cos_expectations(s11, v2[j], s12[j])
            ko[j] = a
            to[j] = b * t[j]
    elif code == GAUSSIAN:
        for j in range(n):
            a, b = gaussian_expectations(s11, v2[j], s12[j])
            ko[j] = a
            to[j] = b * t[j]
    elif code == MONOMIAL:
        for j in range(n):
            a, b = monomial_expectations(prm, s11, v2[j], s12[j])
            ko[j] = a
            to[j] = b * t[j]
    else:  # IDENTITY
        for j in range(n):
            ko[j] = s12[j]
            to[j] = t[j]


@njit(cache=True, nogil=True)
def activation_rows(K, T, Kout, Tout, var1, var2, code, prm, method, mix_var, mix_w, symmetric, start, step):
    """Rows ``start::step`` of the map (symmetric: row pairs ``(p, N-1-p)``, columns ``j >= i``).

    Parameters
    ----------
    K, T : ndarray, shape (N1, N2)
        The covariances ``Sigma12`` and the NTK before the activation (read only).
    Kout, Tout : ndarray, shape (N1, N2)
        Outputs ``E[phi phi]`` and ``E[phi' phi'] T`` (symmetric: the upper triangle and diagonal).
    var1, var2 : ndarray, shapes (N1,), (N2,)
        The variances ``Sigma(x, x)`` of the row and column points.
    code, prm, method : the activation and the map's method
    mix_var, mix_w : ndarray
        The mixture's rule (empty for closed forms).
    symmetric : bool
    start, step : int
    """
    n1 = K.shape[0]
    if not symmetric:
        for i in range(start, n1, step):
            _row(K, T, Kout, Tout, i, 0, var1, var2, code, prm, method, mix_var, mix_w)
        return
    for p in range(start, (n1 + 1) // 2, step):
        _row(K, T, Kout, Tout, p, p, var1, var2, code, prm, method, mix_var, mix_w)
        if n1 - 1 - p != p:
            _row(K, T, Kout, Tout, n1 - 1 - p, n1 - 1 - p, var1, var2, code, prm, method, mix_var, mix_w)


@njit(cache=True, error_model="numpy")
def activation_variances(var, code, prm, method, mix_var, mix_w):
    """``E[phi(u)^2]`` for ``u ~ N(0, var[i])``: the map of a point (the pairs' map at equal covariances)."""
    n = var.shape[0]
    out = np.empty(n)
    if method == MIXTURE:
        e_dphi = np.empty(n)
        det = np.empty(n)
        logistic_expectations_block(code, var, var, var, n, mix_var, mix_w, out, e_dphi, det)
        return out
    for i in range(n):
        out[i] = closed_form_expectations(code, prm, var[i], var[i], var[i])[0]
    return out


__all__ = ["activation_rows", "activation_variances", "CLOSED", "MIXTURE"]
