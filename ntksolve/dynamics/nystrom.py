"""Nyström preconditioner for ``Theta + mu I``, from ``m`` columns of the kernel.

Used by the ``ConjugateGradient`` solver (:mod:`ntksolve.dynamics.solvers`) for ``t = inf``, in
memory or on a tiled kernel (whose operator builds the same preconditioner on its workers). The idea is
Falkon's (Rudi, Carratino & Rosasco 2017, "FALKON: An optimal large scale kernel method") and
EigenPro's (Ma & Belkin 2017, "Diving into the shallows"): the kernel's top eigenspace, which makes
``Theta + mu I`` ill-conditioned, is captured by a Nyström approximation from ``m`` landmark
points, and the preconditioner removes it. The construction is the numerically stable one of
Frangella, Tropp & Udell 2023 ("Randomized Nyström preconditioning", SIAM J. Matrix Anal. Appl.
44(2), Alg. 2.1 and eq. (5.3)), with the test matrix ``Omega`` a column selection ``S`` (the landmarks):

    Y      = Theta S = K_nm                             (N x m, the only kernel evaluations)
    nu     = sqrt(N) eps |Y|_F                          a shift that makes the Cholesky safe
                                                        (|Y|_F estimated from K_mm; eps that of
                                                        the dtype the kernel was computed in)
    C      = chol(S^T Y + nu I) = chol(K_mm + nu I)     (upper)
    B      = (Y + nu S) C^{-1}                          B B^T = shifted Nyström approximation
    B      = U Sigma V^T                                (thin SVD, via eigh of B^T B)
    Lambda = max(Sigma^2 - nu, 0)
    P      = U Lambda U^T + mu I
    P^{-1} = U (Lambda + mu I)^{-1} U^T + (I - U U^T) / mu

With the ``m`` largest eigenvalues captured, the condition number of ``P^{-1/2} A P^{-1/2}`` is
about ``(lambda_{m+1} + mu) / mu`` (Frangella et al., Thm 5.1), so CG needs
``O(sqrt(lambda_{m+1} / mu) log(1/tol))`` iterations instead of ``O(sqrt(lambda_1 / mu) ...)``.
Without a ridge, ``mu`` in ``P`` is the smallest retained ``Lambda_i`` (Frangella et al.'s weight of
the unexplained directions), never a rounding-scale number (:meth:`Nystrom.build`).

The SVD of the tall ``B`` is taken through the eigendecomposition of the small ``B^T B`` (one SYRK,
``N m^2`` flops, instead of a Householder QR at twice that): modes with
``Sigma_i < 1e-6 Sigma_max`` are dropped, because there the squaring loses the digits that
``U = B V Sigma^{-1}`` would need, and such modes (``Lambda_i ~ 0``) are left to the ``1/mu`` part,
which is what the exact preconditioner would do with them too. ``P`` stays symmetric positive
definite whatever is dropped, so CG still converges to the exact solution.

Row blocks: ``B``, ``B^T B`` and ``U = B W`` are sums or products over row blocks of ``Y``, so the
``N m^2`` flops run where the blocks are computed (:func:`nystrom_block`); only ``m x m`` matrices
meet in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.linalg import cholesky, eigh, get_blas_funcs, solve_triangular

from ntksolve._config import DEFAULT_LANDMARKS
from ntksolve.dynamics.squares import norm

#: Singular values of ``B`` below this fraction of the largest are dropped (see module docstring):
#: ``U = B V / Sigma`` amplifies the rounding of ``B^T B`` (``eps Sigma_max^2``) by
#: ``Sigma_max^2 / Sigma_i^2``, so 1e-6 keeps ``U`` orthonormal to about 1e-4 at worst, ample for a
#: preconditioner.
_SIGMA_DROP = 1e-6


def nystrom_shift(k_mm: np.ndarray, n: int, dtype=np.float64) -> float:
    """The shift ``nu = sqrt(N) eps |Y|_F``, with ``|Y|_F`` estimated as ``sqrt(N/m) |K_mm|_F``.

    The landmarks are a uniform sample of the rows of ``Y = K_nm``, of which ``K_mm`` is the sample,
    so ``(N/m) |K_mm|_F^2`` estimates ``|Y|_F^2`` without a pass over ``Y``; the shift only has to make
    the Cholesky factorisation safe, so an estimate is enough. ``eps`` is that of the dtype the
    kernel's entries were computed in, not of the float64 copy factorised here: a float32 kernel is
    positive semi-definite only to float32 rounding, and float64's ``eps`` left its ``K_mm + nu I``
    indefinite (the Cholesky failed).

    Parameters
    ----------
    k_mm : ndarray, shape (m, m)
    n : int
        ``N``, the number of rows of ``Y``.
    dtype : numpy dtype, default float64
        The dtype the kernel was computed in (float32 or float64).
    """
    m = k_mm.shape[0]
    eps = np.finfo(np.promote_types(dtype, np.float32)).eps
    return float(np.sqrt(n) * eps * np.sqrt(n / m) * norm(k_mm))


def nystrom_cholesky(k_mm: np.ndarray, nu: float) -> np.ndarray:
    """``C = chol(K_mm + nu I)``, upper triangular, shape (m, m); ``K_mm`` symmetrised first."""
    k = 0.5 * (k_mm + k_mm.T)
    k[np.diag_indices(k.shape[0])] += nu
    try:
        return cholesky(k, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        lowest = float(np.linalg.eigvalsh(k_mm)[0])
        raise ValueError(
            f"the kernel is not positive semi-definite to within the Nystrom shift ({nu:.3g}): its "
            f"landmarks' block has the eigenvalue {lowest:.3g}. A kernel computed in float32 and "
            "passed as float64 carries float32's rounding: pass it in float32 (the shift then follows "
            "float32's precision), or compute it in float64; otherwise check that the matrix is a kernel"
        ) from None


def nystrom_block(y_block: np.ndarray, landmark_rows: np.ndarray, landmark_cols: np.ndarray, nu: float, C: np.ndarray):
    """One row block of ``B = (Y + nu S) C^{-1}`` and its Gram ``B_i^T B_i``.

    Parameters
    ----------
    y_block : ndarray, shape (b, m)
        Rows of ``Y = K_nm``; overwritten.
    landmark_rows, landmark_cols : ndarray of int
        The landmarks inside this block: ``S[row, col] = 1``.
    nu : float
    C : ndarray, shape (m, m)
        From :func:`nystrom_cholesky`.

    Returns
    -------
    B : ndarray, shape (b, m)
    G : ndarray, shape (m, m)
        ``B^T B``, full (both triangles).
    """
    Y = np.asarray(y_block, dtype=np.float64)
    Y[landmark_rows, landmark_cols] += nu
    # B^T = C^{-T} Y^T: Y.T is Fortran-ordered, solved in place.
    Bt = solve_triangular(C, Y.T, trans="T", lower=False, overwrite_b=True, check_finite=False)
    # B^T B by SYRK (half the flops of a GEMM), upper triangle, then mirrored.
    Bt_f = np.asfortranarray(Bt)
    G = get_blas_funcs("syrk", (Bt_f,))(1.0, Bt_f, trans=0)
    G = np.triu(G) + np.triu(G, 1).T
    return Bt.T, G


def nystrom_eig(G: np.ndarray, nu: float):
    """From ``G = B^T B``: ``(W, Lambda)`` with ``U = B W`` orthonormal and ``Lambda`` the eigenvalues.

    ``W = V_k / Sigma_k`` over the kept modes (``Sigma_i >= _SIGMA_DROP Sigma_max`` and
    ``Lambda_i = Sigma_i^2 - nu > 0``), descending.

    Returns
    -------
    W : ndarray, shape (m, r)
    eigenvalues : ndarray, shape (r,)
    """
    sig2, V = eigh(G, check_finite=False)
    sig2, V = np.maximum(sig2[::-1], 0.0), V[:, ::-1]
    if not sig2.size or sig2[0] <= 0:
        return np.zeros((G.shape[0], 0)), np.zeros(0)
    lam = sig2 - nu
    keep = (sig2 > (_SIGMA_DROP**2) * sig2[0]) & (lam > 0)
    return V[:, keep] / np.sqrt(sig2[keep]), lam[keep]


class NystromPreconditioner:
    """``P^{-1}`` for ``A = Theta + mu I`` from the kernel's columns at ``m`` landmarks.

    Parameters
    ----------
    U : ndarray, shape (N, r)
        Orthonormal basis of the captured eigenspace.
    eigenvalues : ndarray, shape (r,)
        ``Lambda``, the Nyström eigenvalue estimates.
    mu : float
        The ridge, ``> 0``.

    See :meth:`from_columns` for the construction from ``K_nm`` in one process;
    :mod:`ntksolve.dask` runs the same steps (:func:`nystrom_block` per row block on the
    workers, :func:`nystrom_eig` once) and calls this constructor.
    """

    def __init__(self, U: np.ndarray, eigenvalues: np.ndarray, mu: float) -> None:
        if not mu > 0:
            raise ValueError(f"the Nyström preconditioner needs a positive ridge mu, got {mu!r}")
        self.U = U
        self.eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
        self.mu = float(mu)
        # P^{-1} R = R / mu + U ((Lambda + mu)^{-1} - 1/mu) U^T R
        self._coef = 1.0 / (self.eigenvalues + self.mu) - 1.0 / self.mu

    @classmethod
    def from_columns(cls, k_nm: np.ndarray, landmarks: np.ndarray, mu: float, dtype=None) -> "NystromPreconditioner":
        """Build from ``K_nm = Theta[:, landmarks]`` (shape (N, m), overwritten) in this process.

        ``dtype``: the one the kernel was computed in (default ``k_nm``'s), for :func:`nystrom_shift`.
        """
        dtype = np.asarray(k_nm).dtype if dtype is None else dtype
        Y = np.asarray(k_nm, dtype=np.float64)
        N, m = Y.shape
        landmarks = np.asarray(landmarks)
        k_mm = Y[landmarks].copy()
        nu = nystrom_shift(k_mm, N, dtype)
        C = nystrom_cholesky(k_mm, nu)
        B, G = nystrom_block(Y, landmarks, np.arange(m), nu, C)
        W, lam = nystrom_eig(G, nu)
        return cls(B @ W, lam, mu)

    def __call__(self, R: np.ndarray) -> np.ndarray:
        """``P^{-1} R`` for ``R`` of shape (N, r)."""
        W = self.U.T @ R
        W *= self._coef[:, None]
        out = self.U @ W
        out += R / self.mu
        return out


@dataclass(frozen=True)
class Nystrom:
    """How to build a :class:`NystromPreconditioner` for a kernel operator: the recipe, not the arrays.

    Give it to ``ConjugateGradient(preconditioner=Nystrom(...))``; the solver builds it for the
    kernel and ridge it solves with.

    Parameters
    ----------
    n_landmarks : int, optional
        Landmarks drawn uniformly without replacement (Falkon's choice); default
        ``min(N, DEFAULT_LANDMARKS)``.
    random_state : int, default 0
        Seeds the draw.
    """

    n_landmarks: Optional[int] = None
    random_state: int = 0

    def __post_init__(self):
        from ntksolve._validation import check_positive_int

        object.__setattr__(self, "n_landmarks", check_positive_int(self.n_landmarks, "n_landmarks", allow_none=True))

    def build(self, kernel, shift):
        """The preconditioner of ``kernel`` (whose products include the ridge ``shift``).

        ``kernel`` is a ``DenseKernel`` (columns read from its array), or an operator whose
        unshifted ``base`` has ``nystrom(landmarks, mu)`` (built where the tiles are) or
        ``columns(index)``; otherwise the columns are one product with landmark indicator vectors.
        Without a ridge the directions the landmarks do not explain are weighted by the smallest
        retained Nyström eigenvalue (Frangella et al.'s weight ``1/(λ̂_ℓ + μ)`` at ``μ = 0``), not by
        ``1/μ`` of a rounding-scale ``μ``, which blew the rounding that leaks into a singular
        kernel's null space up ~1e13-fold (CG then met false negative curvature or overflowed).
        """
        n = kernel.shape[0]
        m = min(n, DEFAULT_LANDMARKS if self.n_landmarks is None else self.n_landmarks)
        rng = np.random.default_rng(self.random_state)
        landmarks = np.sort(rng.choice(n, size=m, replace=False))
        mu = float(shift)
        ridge_free = mu <= 0
        if ridge_free:  # a placeholder for the construction (mu only weights the result); replaced below
            mu = float(np.mean(kernel.diagonal())) * n * np.finfo(np.float64).eps
        base = getattr(kernel, "base", None)
        if base is not None and hasattr(base, "nystrom"):
            pre = base.nystrom(landmarks, mu)
        else:
            if hasattr(kernel, "array"):
                k_nm = np.array(kernel.array[:, landmarks], dtype=np.float64)
            elif base is not None and hasattr(base, "columns"):
                k_nm = np.array(base.columns(landmarks), dtype=np.float64)
            else:
                E = np.zeros((n, m))
                E[landmarks, np.arange(m)] = 1.0
                k_nm = np.asarray(kernel.matmat(E), dtype=np.float64) - float(shift) * E
            pre = NystromPreconditioner.from_columns(
                k_nm, landmarks, mu, np.dtype(getattr(kernel, "entries_dtype", getattr(kernel, "dtype", np.float64)))
            )
        captured = pre.eigenvalues[pre.eigenvalues > 0]
        if ridge_free and captured.size:
            pre = NystromPreconditioner(pre.U, pre.eigenvalues, float(captured.min()))
        return pre


__all__ = ["Nystrom", "NystromPreconditioner", "nystrom_block", "nystrom_cholesky", "nystrom_eig", "nystrom_shift"]
