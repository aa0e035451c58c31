"""Coefficients of the closed-form MSE dynamics, mode by mode (``CONVENTIONS.md``, "Training, and
its closed form"): which eigen- or Ritz values are exact zeros, and the train and test coefficients
``1 - e^{-lambda s}`` and ``(1 - e^{-lambda s}) / lambda`` (continuous) or their discrete twins.

Private, below both :mod:`ntksolve.dynamics` (in-memory eigh / Krylov) and
:mod:`ntksolve.distributed` (tiled Krylov), so both evaluate the same numbers.
"""
from __future__ import annotations

import numpy as np


def null_mask(lam, n, dtype, what):
    """Exact-zero modes ``λ ≤ n ε λ_max``; ValueError for ``λ < −√ε λ_max`` (not a kernel)."""
    eps = np.finfo(dtype).eps
    lmax = float(np.max(lam)) if lam.size else 0.0
    if lam.size and float(np.min(lam)) < -np.sqrt(eps) * max(lmax, 0.0):
        raise ValueError(
            f"{what} has eigenvalue {float(np.min(lam)):.3g} < -sqrt(eps)·λ_max "
            f"(λ_max = {lmax:.3g}): it is not a kernel (not positive semidefinite)"
        )
    return lam <= n * eps * max(lmax, 0.0)


def mode_coefficients(lam, null, ts, lr_over_size, dynamics, need_h=True):
    """Train coefficients ``g_t(λ)`` and test coefficients ``h_t(λ) = g_t(λ)/λ`` (zero on null modes).

    Parameters
    ----------
    lam : ndarray, shape (m,)
        Eigenvalues (or Ritz values) of the regularised flattened kernel.
    null : ndarray of bool, shape (m,)
    ts : ndarray, shape (T,)
        Times in steps (``np.inf`` allowed; integers for discrete).
    lr_over_size : float
        ``η / (N k)``.

    Returns
    -------
    g, h : ndarrays, shape (T, m)  (``h`` None unless ``need_h``)
    """
    lam = np.asarray(lam, dtype=np.float64)
    lam_safe = np.where(null, 1.0, lam)
    fin = np.isfinite(ts)
    g = np.empty((ts.size, lam.size))
    if dynamics == "continuous":
        s = lr_over_size * ts[fin]
        g[fin] = -np.expm1(-np.outer(s, lam_safe))  # 1 − e^{−λs} without cancellation
        g[~fin] = 1.0
    else:
        c = lr_over_size * lam_safe  # ηλ/(Nk)
        if np.any(~fin):
            live = ~null
            if np.any(c[live] >= 2.0):
                raise ValueError(
                    "discrete gradient descent diverges (η λ_max/(Nk) ≥ 2), so t = inf has no limit; "
                    "lower learning_rate below critical_learning_rate or ask for finite t"
                )
            g[~fin] = 1.0
        tf = ts[fin][:, None]
        pos = c < 1.0
        with np.errstate(over="ignore", invalid="ignore"):
            # b = 1 − c > 0: 1 − b^t = −expm1(t log1p(−c)); b ≤ 0 (oscillating): the integer power.
            gp = -np.expm1(tf * np.log1p(-np.where(pos, c, 0.0)))
            gn = 1.0 - np.power(1.0 - c, tf)
        g[fin] = np.where(pos, gp, gn)
    g[:, null] = 0.0
    if not need_h:
        return g, None
    h = g / lam_safe
    h[:, null] = 0.0
    return g, h
