"""Conjugate gradients on an operator known only through its products.

Private: :mod:`ntksolve.dask` builds a symmetric kernel ``A = Theta + mu I`` out of tiles
and hands these functions a ``matvec`` callable. Nothing here knows about Dask.

- :func:`preconditioned_cg`: conjugate gradients (Hestenes & Stiefel 1952) with a preconditioner,
  for ``t = inf`` kernel regression, one independent recurrence per right-hand side column, all
  columns sharing each (expensive, distributed) product with ``A``.
  (The finite-``t`` dynamics use the Lanczos process of ``ntksolve.dynamics.krylov``, which takes a
  ``matmat`` callable, so the tiled path shares it with the in-memory ``method="krylov"``.)
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np


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
    maxiter: int = 1000,
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
    maxiter : int
    callback : callable, optional
        ``callback(iteration, relative_residuals)`` after every iteration.

    Returns
    -------
    X : ndarray, shape (N, r), float64
    info : KrylovInfo
        ``iterations`` (products with ``A``, not counting the final residual check),
        ``converged`` (bool), ``residuals`` (true relative residual per column, shape (r,)).
    """
    B = np.asarray(B, dtype=np.float64)
    if B.ndim != 2:
        raise ValueError(f"B must be 2-D (N, r), got shape {B.shape}")
    M = precond if precond is not None else (lambda R: R)
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
    while np.any(active & (rel > tol)) and it < maxiter:
        live = active & (rel > tol)
        AP = matvec(P)
        it += 1
        pAp = np.einsum("ij,ij->j", P, AP)
        if np.any(live & (pAp <= 0)):
            raise np.linalg.LinAlgError(
                "conjugate gradients met a direction of non-positive curvature: the regularised kernel "
                "Theta + diag_reg * mean(diag Theta) * I is not positive definite (increase diag_reg)"
            )
        alpha = np.where(live, rz / np.where(pAp > 0, pAp, 1.0), 0.0)
        X += alpha * P
        R -= alpha * AP
        rel = np.linalg.norm(R, axis=0) / bnorm_safe
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
    true_rel = np.linalg.norm(B - matvec(X), axis=0) / bnorm_safe
    info = KrylovInfo(iterations=it, converged=bool(np.all(rel <= tol)), residuals=true_rel)
    return X, info


__all__ = ["preconditioned_cg", "symmetric_tile_products", "tile_products", "KrylovInfo"]
