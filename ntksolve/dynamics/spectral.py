"""The spectrum of a regularised kernel: its symmetric eigendecomposition and its exact-zero modes.

Shared by the in-memory predictor, the ensemble, and the Ritz values of the Lanczos path, so that
every solver drops the same modes: eigenvalues at or below ``n ε λ_max`` (``n`` the size of the
flattened kernel) are exact zeros, where the closed-form coefficients are 0; singular kernels
(repeated inputs) then give the limit, and ``t = ∞`` is the pseudo-inverse.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ntksolve._config import EIGH_DRIVER


def null_mask(lam, n, dtype, what):
    """Exact-zero modes ``λ ≤ n ε λ_max``; ValueError for ``λ < −√ε λ_max`` (not a kernel).

    Parameters
    ----------
    lam : ndarray, shape (m,)
        Eigenvalues or Ritz values.
    n : int
        Size of the flattened kernel.
    dtype : float64 or float32
        Precision the kernel is held in (sets ``ε``).
    what : str
        Name of the kernel in the error message.

    Returns
    -------
    null : ndarray of bool, shape (m,)
    """
    eps = np.finfo(dtype).eps
    lmax = float(np.max(lam)) if lam.size else 0.0
    if lam.size and float(np.min(lam)) < -np.sqrt(eps) * max(lmax, 0.0):
        raise ValueError(
            f"{what} has eigenvalue {float(np.min(lam)):.3g} < -sqrt(eps)·λ_max "
            f"(λ_max = {lmax:.3g}): it is not a kernel (not positive semidefinite)"
        )
    return lam <= n * eps * max(lmax, 0.0)


def regularised_eigh(A, shift, dtype, what):
    """Eigendecomposition of ``A + shift·I`` (LAPACK ``syevd``, one Fortran-ordered work copy).

    ``syevd`` (divide and conquer) is the fastest symmetric driver here (``EIGH_DRIVER`` in
    :mod:`ntksolve._config`), and ``overwrite_a`` on our own copy avoids LAPACK's second one.

    Parameters
    ----------
    A : ndarray, shape (n, n)
        Symmetric; never written to.
    shift : float
        Absolute ridge (see :func:`ntksolve._validation.ridge_shift`).
    dtype : float64 or float32
    what : str
        Name of the kernel in error messages.

    Returns
    -------
    lam : ndarray, shape (n,)
        Ascending eigenvalues of ``A + shift·I``.
    V : ndarray, shape (n, n)
        Orthonormal eigenvectors (columns).
    null : ndarray of bool, shape (n,)
        The exact-zero modes (:func:`null_mask`).
    """
    n = A.shape[0]
    work = np.array(A, dtype=dtype, order="F")
    if shift:
        work.flat[:: n + 1] += shift
    lam, V = scipy.linalg.eigh(work, driver=EIGH_DRIVER, overwrite_a=True, check_finite=False)
    return lam, V, null_mask(lam, n, dtype, what)


def shifted_spectrum(lam, delta, n, dtype, what):
    """Eigenvalues and null modes of ``A + (shift + delta)·I`` from those of ``A + shift·I``.

    A ridge only moves every eigenvalue by the same amount, so one decomposition serves every
    ``diag_reg`` (the eigenvectors are the same).

    Returns
    -------
    lam : ndarray, shape (n,)
    null : ndarray of bool, shape (n,)
    """
    lam = lam + delta
    return lam, null_mask(lam, n, dtype, what)
