"""Conjugate gradients on an operator known only through its products.

Private: the ``ConjugateGradient`` solver of :mod:`ntksolve.dynamics.solvers` hands it the
products of the regularised kernel ``A = Theta + mu I`` (in memory, or tiled on a cluster). Nothing
here knows about Dask.

- :func:`preconditioned_cg`: conjugate gradients (Hestenes & Stiefel 1952) with a preconditioner,
  for ``t = inf`` kernel regression, one independent recurrence per right-hand side column, all
  columns sharing each (expensive, distributed) product with ``A``.
  (The finite-``t`` dynamics use the Lanczos process of ``ntksolve.dynamics.krylov``, which takes a
  ``matmat`` callable, so the tiled path shares it with the in-memory ``method="krylov"``.)
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from ntksolve.dynamics.squares import power_of_two_scale


# ---------------------------------------------------------------------------------------------
# preconditioned conjugate gradients
# ---------------------------------------------------------------------------------------------
class KrylovInfo(dict):
    """What a Krylov solve did: ``iterations``, ``converged``, ``residuals`` (relative, per column)."""


def preconditioned_cg(
    matvec: Callable[[np.ndarray], np.ndarray],
    B: np.ndarray,
    precond: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
    callback: Optional[Callable[[int, np.ndarray], None]] = None,
) -> Tuple[np.ndarray, KrylovInfo]:
    """Solve ``A X = B`` for a symmetric positive definite ``A`` given by products, column by column.

    Textbook PCG (Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., Alg. 9.1), run
    for all columns at once so that each product with ``A`` (a pass over every tile) serves all
    of them. A column stops updating once ``|b - A x| <= tol |b|``, which is the residual the
    recurrence carries; the true residual is checked at the end and reported.

    Parameters
    ----------
    matvec : callable
        ``V (N, r) -> A V (N, r)``, float64.
    B : ndarray, shape (N, r)
    precond : callable, optional
        ``R (N, r) -> M^{-1} R``, ``M`` symmetric positive definite and ``M ~ A``.
    tol : float
        Relative residual per column.
    max_iter : int
        Products with ``A`` at most.
    callback : callable, optional
        ``callback(iteration, relative_residuals)`` after every iteration.

    Returns
    -------
    X : ndarray, shape (N, r), float64
    info : KrylovInfo
        ``iterations`` (products with ``A``, not counting the final residual check),
        ``converged`` (bool), ``residuals`` (true relative residual per column, shape (r,)),
        ``AX`` (the product ``A X`` of the final check, shape (N, r): ``f_inf = f_0 + A X``).

    Notes
    -----
    On a positive *semi*definite ``A`` with ``B`` in its range, the iterates stay in the Krylov
    space of ``B``, inside the range, so from ``X = 0`` they converge to the minimum-norm solution
    ``A⁺ B`` (with a preconditioner, if it maps the null space of ``A`` into itself). A column whose
    direction has non-positive curvature ``pᵀAp ≤ 0`` at rounding level (a singular ``A`` solved to
    its last digits) stops there; clearly negative curvature is an error.
    """
    B = np.asarray(B, dtype=np.float64)
    if B.ndim != 2:
        raise ValueError(f"B must be 2-D (N, r), got shape {B.shape}")
    M = precond if precond is not None else (lambda R: R)
    # Solved for B / s, s a power of two near max |B| of each column (exact, and every step is
    # linear in its column: the products with A and the preconditioner act column by column): the
    # inner products below square B, which overflow for |B| >~ 1e154 and underflow for
    # |B| <~ 1e-162. One scale per column, so columns of scales far apart are each kept in range.
    scale = power_of_two_scale(B, axis=0, keepdims=True)
    B = B / scale
    bnorm = np.linalg.norm(B, axis=0)
    bnorm_safe = np.where(bnorm > 0, bnorm, 1.0)
    X = np.zeros_like(B)
    R = B.copy()
    Z = M(R)
    P = Z.copy()
    rz = np.einsum("ij,ij->j", R, Z)
    active = bnorm > 0
    it = 0
    rel = np.linalg.norm(R, axis=0) / bnorm_safe
    eps = np.finfo(np.float64).eps
    anorm = 0.0  # largest Rayleigh quotient seen: a lower bound of ||A||, the scale of "rounding"
    while np.any(active & (rel > tol)) and it < max_iter:
        live = active & (rel > tol)
        AP = matvec(P)
        it += 1
        pAp = np.einsum("ij,ij->j", P, AP)
        pp = np.einsum("ij,ij->j", P, P)
        anorm = max(anorm, float(np.max(np.where(live & (pp > 0), pAp / np.where(pp > 0, pp, 1.0), 0.0))))
        flat = live & (pAp <= 0)
        if np.any(flat & (pAp < -np.sqrt(eps) * anorm * pp)):
            raise np.linalg.LinAlgError(
                "conjugate gradients met a direction of negative curvature: the regularised kernel "
                "Theta + diag_reg * mean(diag Theta) * I is not positive semidefinite (increase diag_reg)"
            )
        if np.any(flat):  # rounding-level curvature: this column is solved as far as it can be
            active = active & ~flat
            live = live & ~flat
        alpha = np.where(live, rz / np.where(pAp > 0, pAp, 1.0), 0.0)
        X += alpha * P
        R -= alpha * AP
        rel = np.where(live, np.linalg.norm(R, axis=0) / bnorm_safe, rel)
        if callback is not None:
            callback(it, rel.copy())
        live = active & (rel > tol)
        if not np.any(live):
            break
        Z = M(R)
        rz_new = np.einsum("ij,ij->j", R, Z)
        beta = np.where(live, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        rz = rz_new
        P = Z + beta * P
    AX = matvec(X)
    true_rel = np.linalg.norm(B - AX, axis=0) / bnorm_safe
    info = KrylovInfo(iterations=it, converged=bool(np.all(rel <= tol)), residuals=true_rel, AX=AX * scale)
    return X * scale, info


__all__ = ["preconditioned_cg", "KrylovInfo"]
