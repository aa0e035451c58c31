"""Nyström preconditioner for ``Theta + mu I``, from ``m`` columns of the kernel.

Private, used by :mod:`ntksolve.distributed` for the ``t = inf`` conjugate gradients. The idea is
Falkon's (Rudi, Carratino & Rosasco 2017, "FALKON: An optimal large scale kernel method") and
EigenPro's (Ma & Belkin 2017, "Diving into the shallows"): the kernel's top eigenspace, which makes
``Theta + mu I`` ill-conditioned, is captured by a Nyström approximation from ``m`` landmark
points, and the preconditioner removes it. The construction is the numerically stable one of
Frangella, Tropp & Udell 2023 ("Randomized Nyström preconditioning", SIAM J. Matrix Anal. Appl.
44(2), Alg. 2.1 and eq. (5.3)), with the test matrix ``Omega`` a column selection ``S`` (the landmarks):

    Y      = Theta S = K_nm                             (N x m, the only kernel evaluations)
    nu     = sqrt(N) eps |Y|_F                          a shift that makes the Cholesky safe
    C      = chol(S^T Y + nu I) = chol(K_mm + nu I)     (upper)
    B      = (Y + nu S) C^{-1}                          B B^T = shifted Nyström approximation
    B      = U Sigma V^T                                (thin SVD, via eigh of B^T B)
    Lambda = max(Sigma^2 - nu, 0)
    P      = U Lambda U^T + mu I
    P^{-1} = U (Lambda + mu I)^{-1} U^T + (I - U U^T) / mu

With the ``m`` largest eigenvalues captured, the condition number of ``P^{-1/2} A P^{-1/2}`` is
about ``(lambda_{m+1} + mu) / mu`` (Frangella et al., Thm 5.1), so CG needs
``O(sqrt(lambda_{m+1} / mu) log(1/tol))`` iterations instead of ``O(sqrt(lambda_1 / mu) ...)``.

The SVD of the tall ``B`` is taken through the eigendecomposition of the small ``B^T B`` (one SYRK,
``N m^2`` flops, instead of a Householder QR at twice that): modes with
``Sigma_i < 1e-6 Sigma_max`` are dropped, because there the squaring loses the digits that
``U = B V Sigma^{-1}`` would need, and such modes (``Lambda_i ~ 0``) are left to the ``1/mu`` part,
which is what the exact preconditioner would do with them too. ``P`` stays symmetric positive
definite whatever is dropped, so CG still converges to the exact solution.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import cholesky, eigh, get_blas_funcs, solve_triangular

#: Singular values of ``B`` below this fraction of the largest are dropped (see module docstring):
#: ``U = B V / Sigma`` amplifies the rounding of ``B^T B`` (``eps Sigma_max^2``) by
#: ``Sigma_max^2 / Sigma_i^2``, so 1e-6 keeps ``U`` orthonormal to about 1e-4 at worst, ample for a
#: preconditioner.
_SIGMA_DROP = 1e-6


class NystromPreconditioner:
    """``P^{-1}`` for ``A = Theta + mu I`` from the kernel's columns at ``m`` landmarks.

    Parameters
    ----------
    k_nm : ndarray, shape (N, m)
        ``Theta[:, landmarks]``, float64. Overwritten (it is the largest array here).
    landmarks : ndarray of int, shape (m,)
        Row indices of the landmarks in ``0 ... N-1``, distinct.
    mu : float
        The ridge, ``> 0``.

    Attributes
    ----------
    U : ndarray, shape (N, r)
        Orthonormal basis of the captured eigenspace, ``r <= m``.
    eigenvalues : ndarray, shape (r,)
        ``Lambda``, the Nyström eigenvalue estimates, descending.
    """

    def __init__(self, k_nm: np.ndarray, landmarks: np.ndarray, mu: float) -> None:
        if not mu > 0:
            raise ValueError(f"the Nyström preconditioner needs a positive ridge mu, got {mu!r}")
        Y = np.asarray(k_nm, dtype=np.float64)
        N, m = Y.shape
        landmarks = np.asarray(landmarks)
        eps = np.finfo(np.float64).eps
        nu = np.sqrt(N) * eps * np.linalg.norm(Y)
        k_mm = Y[landmarks]
        k_mm = 0.5 * (k_mm + k_mm.T)  # the landmark rows were evaluated as a cross kernel
        k_mm[np.diag_indices(m)] += nu
        C = cholesky(k_mm, lower=False, check_finite=False)
        Y[landmarks, np.arange(m)] += nu
        # B = Y_nu C^{-1}  <=>  B^T = C^{-T} Y_nu^T: Y.T is Fortran-ordered, solved in place.
        Bt = solve_triangular(C, Y.T, trans="T", lower=False, overwrite_b=True, check_finite=False)
        B = Bt.T
        # G = B^T B by SYRK (half the flops of a GEMM); B.T is Fortran-ordered, so no copy, and
        # only the upper triangle of G is written, which is the one eigh reads.
        Bt_f = np.asfortranarray(Bt)
        syrk = get_blas_funcs("syrk", (Bt_f,))
        G = syrk(1.0, Bt_f, trans=0)
        sig2, V = eigh(G, lower=False, overwrite_a=True, check_finite=False)
        sig2, V = sig2[::-1], V[:, ::-1]
        sig2 = np.maximum(sig2, 0.0)
        keep = sig2 > (_SIGMA_DROP**2) * sig2[0] if sig2.size and sig2[0] > 0 else np.zeros(sig2.shape, bool)
        lam = np.maximum(sig2[keep] - nu, 0.0)
        keep_idx = np.flatnonzero(keep)[lam > 0]
        lam = lam[lam > 0]
        self.U = B @ (V[:, keep_idx] / np.sqrt(sig2[keep_idx]))
        self.eigenvalues = lam
        self.mu = float(mu)
        # P^{-1} R = R / mu + U ((Lambda + mu)^{-1} - 1/mu) U^T R
        self._coef = 1.0 / (lam + self.mu) - 1.0 / self.mu

    def __call__(self, R: np.ndarray) -> np.ndarray:
        """``P^{-1} R`` for ``R`` of shape (N, r)."""
        W = self.U.T @ R
        W *= self._coef[:, None]
        out = self.U @ W
        out += R / self.mu
        return out


__all__ = ["NystromPreconditioner"]
