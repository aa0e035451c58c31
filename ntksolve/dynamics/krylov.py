"""Lanczos approximation of many matrix functions ``f(Θ) r`` from one Krylov basis.

The closed-form dynamics need, for a symmetric positive semidefinite kernel ``Θ`` and a residual
``r = y - f_0``, the vectors ``g_s(Θ) r`` and ``h_s(Θ) r`` for many times ``s`` (see
:mod:`ntksolve.dynamics.rules`); ``g_s(λ) = 1 - e^{-λ s}`` and ``h_s(λ) = g_s(λ) / λ`` are entire functions of
``λ``. The Lanczos process (Saad 1992, "Analysis of some Krylov subspace approximations to the
matrix exponential operator", SIAM J. Numer. Anal. 29; Hochbruck & Lubich 1997, "On Krylov
subspace approximations to the matrix exponential operator", SIAM J. Numer. Anal. 34) builds an
orthonormal basis ``Q_m`` of ``span{r, Θr, ..., Θ^{m-1} r}`` and the tridiagonal
``T_m = Q_mᵀ Θ Q_m``; then

    f(Θ) r ≈ ‖r‖ Q_m f(T_m) e_1 = ‖r‖ Q_m S f(ρ) Sᵀ e_1        (T_m = S diag(ρ) Sᵀ, ρ the Ritz values)

for *every* function ``f`` at once: the ``m`` products with ``Θ`` are shared, and each extra
function (each extra time) costs ``O(N m)``. For ``f(λ) = 1/λ`` this is conjugate gradients in
its Lanczos form (Saad 2003, "Iterative Methods for Sparse Linear Systems", §6.7), which the
``t = ∞`` limit uses on the same basis.

Several starting vectors run as independent Lanczos processes in lockstep, so that each step's
products with ``Θ`` form one matrix-matrix product (bandwidth-bound ``Θ`` is read once per step
for all columns instead of once per column).

Nothing here validates input: :mod:`ntksolve.dynamics.predictor` does.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from ntksolve.dynamics.squares import norm
from ntksolve._config import (  # tunables live in the config module, with their reasons
    LANCZOS_CHECK_EVERY,
    LANCZOS_BREAKDOWN_FACTOR,
)


class KrylovConvergenceWarning(RuntimeWarning):
    """The Lanczos approximation stopped at ``max_iter`` before reaching the requested tolerance."""


def lanczos_function_products(matmat, R, coefficient_fn, *, tol, max_iter=None, check_every=None):
    """Approximate ``f_j(A) r_c`` for many functions ``f_j`` and columns ``r_c`` by Lanczos.

    Full reorthogonalisation (classical Gram–Schmidt applied twice) keeps ``Q`` orthonormal to
    working precision, so no spurious Ritz values appear and the a-posteriori estimate is sound.

    Parameters
    ----------
    matmat : callable
        ``matmat(X)`` returns ``A @ X`` for ``X`` of shape ``(n, c')``; ``A`` symmetric, shape ``(n, n)``.
    R : ndarray, shape (n, c)
        Starting vectors (one Lanczos process each).
    coefficient_fn : callable
        ``coefficient_fn(ritz)`` maps Ritz values ``ritz`` of shape ``(m,)`` to the values of all
        functions at them, shape ``(F, m)``.
    tol : float
        Stop a column when every function's coefficient vector changed by at most ``tol`` times its
        norm over the last ``check_every`` steps (the change bounds the error of the older iterate;
        the newer one, which is returned, is more accurate because convergence is superlinear).
    max_iter : int, optional
        Largest Krylov dimension; default ``n``.
    check_every : int, optional
        Default ``LANCZOS_CHECK_EVERY``.

    Returns
    -------
    out : ndarray, shape (F, n, c)
        ``out[j, :, c] ≈ f_j(A) R[:, c]``.
    info : dict
        ``iterations`` (list of Krylov dimensions per column), ``ritz_max`` (largest Ritz value
        over columns, a lower bound on ``λ_max(A)``), ``ritz_min`` (smallest Ritz value),
        ``converged`` (list of bools).
    """
    n, c = R.shape
    dtype = R.dtype
    eps = np.finfo(dtype).eps
    if max_iter is None:
        max_iter = n
    max_iter = int(max(1, min(max_iter, n)))
    check_every = LANCZOS_CHECK_EVERY if check_every is None else int(check_every)

    beta0 = norm(R, axis=0)  # not np.linalg.norm: inf for |r| >~ 1e154, 0 for |r| <~ 1e-162
    n_funcs = None
    out = None
    # Per-column state. Q rows are the basis vectors (row-major: the reorthogonalisation products
    # ``Q @ w`` and ``Qᵀ u`` then stream contiguous memory).
    cap = min(max_iter, 64)
    Qs = [np.empty((cap + 1, n), dtype=dtype) for _ in range(c)]
    alphas = [[] for _ in range(c)]
    betas = [[] for _ in range(c)]
    last_coef = [None] * c
    done = [False] * c
    converged = [False] * c
    iterations = [0] * c
    ritz_max = -np.inf
    ritz_min = np.inf
    results = [None] * c

    def coefficients(j, m):
        """``‖r‖ S f(ρ) Sᵀ e_1`` for the leading ``m × m`` block of column j's ``T``: shape (m, F)."""
        nonlocal ritz_max, ritz_min
        a = np.asarray(alphas[j][:m], dtype=np.float64)
        b = np.asarray(betas[j][: m - 1], dtype=np.float64)
        if m == 1:
            ritz, S = a.copy(), np.ones((1, 1))
        else:
            ritz, S = scipy.linalg.eigh_tridiagonal(a, b, check_finite=False)
        ritz_max = max(ritz_max, float(ritz[-1]))
        ritz_min = min(ritz_min, float(ritz[0]))
        F = np.asarray(coefficient_fn(ritz), dtype=np.float64)  # (F, m)
        return (beta0[j] * S) @ (F.T * S[0, :, None])

    for j in range(c):
        if beta0[j] == 0.0:
            done[j] = converged[j] = True
            results[j] = None  # zero start vector: every f(A) 0 = 0
        else:
            Qs[j][0] = R[:, j] / beta0[j]

    anorm = 0.0
    m = 0  # current number of basis vectors of every active column
    while not all(done):
        active = [j for j in range(c) if not done[j]]
        m += 1
        W = matmat(np.stack([Qs[j][m - 1] for j in active], axis=1))  # (n, a): one GEMM for all
        for i, j in enumerate(active):
            Q = Qs[j]
            w = np.array(W[:, i], dtype=dtype)
            q = Q[m - 1]
            alpha = float(q @ w)
            w -= alpha * q
            if m > 1:
                w -= betas[j][m - 2] * Q[m - 2]
            # Full reorthogonalisation, twice ("twice is enough", Giraud et al. 2005).
            Qm = Q[:m]
            w -= Qm.T @ (Qm @ w)
            w -= Qm.T @ (Qm @ w)
            beta = float(np.linalg.norm(w))
            alphas[j].append(alpha)
            anorm = max(anorm, abs(alpha) + beta + (betas[j][-1] if betas[j] else 0.0))
            iterations[j] = m
            breakdown = beta <= LANCZOS_BREAKDOWN_FACTOR * np.sqrt(n) * eps * anorm
            exhausted = m >= max_iter
            if not (breakdown or exhausted):
                betas[j].append(beta)
                if m + 1 > Q.shape[0]:
                    grown = np.empty((min(2 * Q.shape[0], max_iter + 1), n), dtype=dtype)
                    grown[: Q.shape[0]] = Q
                    Qs[j] = Q = grown
                Q[m] = w / beta
            if breakdown or exhausted or m % check_every == 0:
                coef = coefficients(j, m)
                if breakdown or (exhausted and m >= n):
                    # Invariant subspace: the Krylov approximation is exact.
                    done[j] = converged[j] = True
                elif last_coef[j] is not None:
                    prev = np.zeros_like(coef)
                    prev[: last_coef[j].shape[0]] = last_coef[j]
                    change = norm(coef - prev, axis=0)  # on the scale of r: overflow-free
                    size = norm(coef, axis=0)
                    if np.all(change <= tol * size):
                        done[j] = converged[j] = True
                last_coef[j] = coef
                if exhausted and not done[j]:
                    done[j] = True
                if done[j]:
                    results[j] = coef.T @ Q[:m]  # (F, n): one GEMM for all functions
    for j in range(c):
        if results[j] is not None:
            n_funcs = results[j].shape[0]
            break
    if n_funcs is None:
        n_funcs = np.asarray(coefficient_fn(np.ones(1))).shape[0]
    out = np.zeros((n_funcs, n, c), dtype=dtype)
    for j in range(c):
        if results[j] is not None:
            out[:, :, j] = results[j]
    if not all(converged):
        bad = [j for j in range(c) if not converged[j]]
        warnings.warn(
            f"Lanczos stopped at max_iter={max_iter} for column(s) {bad} before the relative change "
            f"fell below tol={tol:g}; the result may be inaccurate. Raise max_iter, loosen tol, or "
            "add a small diag_reg (slow convergence comes from tiny kernel eigenvalues at large t).",
            KrylovConvergenceWarning,
            stacklevel=3,
        )
    info = {
        "iterations": iterations,
        "ritz_max": ritz_max,
        "ritz_min": ritz_min,
        "converged": converged,
    }
    return out, info
