"""The kernel as an operator: what the product-only solvers (Lanczos, conjugate gradients) need.

:class:`KernelOperator` is the protocol: ``shape``, ``dtype``, ``matmat(V)`` and ``diagonal()``.
:class:`DenseKernel` implements it for an in-memory array (plus a ridge shift); a tiled kernel
whose tiles live on a cluster implements it too, and then trains through the same
:func:`ntksolve.dynamics.gradient_descent_mse`, with the same validation and divergence check.

Also here: the checks that turn a user's train kernel into a validated symmetric ``(n, n)`` array
(:func:`check_train_kernel`), and ``λ_max`` of any operator (:func:`largest_eigenvalue`).
"""

from __future__ import annotations

from typing import Protocol, Tuple, runtime_checkable

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from ntksolve._config import SYMMETRY_RTOL_SQRT_EPS, SYMMETRY_TILE
from ntksolve._validation import as_real_array, check_finite, check_real_scalar

__all__ = ["KernelOperator", "DenseKernel", "is_kernel_operator", "largest_eigenvalue", "check_train_kernel"]


@runtime_checkable
class KernelOperator(Protocol):
    """A symmetric positive semidefinite kernel known through its products.

    Attributes
    ----------
    shape : tuple of int
        ``(n, n)``.
    dtype : numpy dtype
        Of the products (float64 or float32).
    """

    shape: Tuple[int, int]
    dtype: np.dtype

    def matmat(self, V):
        """``Θ V`` for ``V`` of shape ``(n, r)``: a new array of shape ``(n, r)`` (``V`` untouched)."""

    def diagonal(self):
        """``diag Θ``, shape ``(n,)``."""


def is_kernel_operator(obj) -> bool:
    """Whether ``obj`` is an operator (has ``matmat``, ``diagonal``, ``shape``) and not an array."""
    return not isinstance(obj, np.ndarray) and isinstance(obj, KernelOperator)


class DenseKernel:
    """A symmetric kernel array as a :class:`KernelOperator`, with a ridge: ``A + shift·I``.

    Parameters
    ----------
    array : array_like, shape (n, n)
        Symmetric (checked, rounding-level asymmetry is averaged away) and finite.
    shift : float, default 0.0
        Absolute ridge ``≥ 0`` added to the diagonal (``diag_reg · mean(diag)`` for a relative one).
    """

    def __init__(self, array, shift=0.0):
        A, full_k = check_train_kernel(array, "array")
        if full_k is not None:
            raise ValueError("DenseKernel takes a traced (n, n) kernel; flatten a full kernel to (N k, N k) first")
        self._set(A, check_real_scalar(shift, "shift", low=0.0))

    @classmethod
    def _trusted(cls, A, shift, entries_dtype=None):
        """From an array the caller has already validated (no copy, no check).

        ``entries_dtype``: the dtype ``A``'s entries were computed in, when ``A`` is a wider copy
        (a float32 kernel solved in float64): its rounding is what the Nyström shift must cover.
        """
        self = cls.__new__(cls)
        self._set(A, float(shift), entries_dtype)
        return self

    def _set(self, A, shift, entries_dtype=None):
        self.array = A
        self.shift = shift
        self.shape = A.shape
        self.dtype = A.dtype
        self.entries_dtype = A.dtype if entries_dtype is None else np.dtype(entries_dtype)

    def matmat(self, V):
        out = self.array @ V
        if self.shift:
            out += self.shift * V
        return out

    def diagonal(self):
        d = np.diagonal(self.array).astype(self.dtype, copy=True)
        d += self.shift
        return d

    def with_shift(self, shift):
        """The same array with another ridge (no copy)."""
        return DenseKernel._trusted(self.array, shift, self.entries_dtype)

    def __repr__(self):
        return f"DenseKernel(shape={self.shape}, dtype={self.dtype.name}, shift={self.shift:g})"


class ShiftedOperator:
    """``Θ + shift·I`` for an operator ``Θ`` (the ridge of a relative ``diag_reg``)."""

    def __init__(self, base, shift):
        self.base = base
        self.shift = float(shift)
        self.shape = tuple(int(s) for s in base.shape)
        self.dtype = np.dtype(getattr(base, "dtype", np.float64))

    def matmat(self, V):
        out = np.asarray(self.base.matmat(V))
        if out.shape != V.shape:
            raise ValueError(f"the kernel operator's matmat returned shape {out.shape} for input of shape {V.shape}")
        return out + self.shift * V if self.shift else out

    def diagonal(self):
        return np.asarray(self.base.diagonal(), dtype=np.float64) + self.shift

    def with_shift(self, shift):
        return ShiftedOperator(self.base, shift)


def check_operator(op, name="k_train_train"):
    """Validate an operator's shape and diagonal; return ``(n, diagonal)``."""
    shape = tuple(op.shape)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(f"{name} must be a square (n, n) operator, got shape {shape}")
    d = as_real_array(op.diagonal(), f"{name}.diagonal()")
    if d.shape != (shape[0],):
        raise ValueError(f"{name}.diagonal() must have shape ({shape[0]},), got {d.shape}")
    check_finite(d, f"{name}.diagonal()", "the kernel must be finite")
    if np.any(d < 0):
        raise ValueError(f"{name} has a negative diagonal entry ({float(d.min()):.3g}): it is not a kernel")
    return shape[0], d


def largest_eigenvalue(kernel):
    """``λ_max`` of a kernel operator (ridge included).

    Dense and small (``n ≤ 256``): LAPACK on the array. Otherwise ARPACK's Lanczos (``eigsh``,
    1e-10 relative) from a fixed start vector, so the result is deterministic; it needs only
    ``matmat``, so the same estimate serves tiled kernels.

    Parameters
    ----------
    kernel : DenseKernel or KernelOperator

    Returns
    -------
    lmax : float
    """
    n = kernel.shape[0]
    if isinstance(kernel, DenseKernel) and n <= 256:
        top = scipy.linalg.eigvalsh(kernel.array, subset_by_index=[n - 1, n - 1], check_finite=False)
        return float(top[0]) + kernel.shift
    dtype = np.dtype(kernel.dtype)
    op = scipy.sparse.linalg.LinearOperator(
        (n, n),
        matvec=lambda x: kernel.matmat(np.asarray(x, dtype=dtype).reshape(n, 1)).ravel(),
        matmat=lambda X: kernel.matmat(np.asarray(X, dtype=dtype)),
        dtype=dtype,
    )
    v0 = np.random.default_rng(0).standard_normal(n).astype(dtype)
    lam = scipy.sparse.linalg.eigsh(op, k=1, which="LA", tol=1e-10, v0=v0, return_eigenvectors=False)
    return float(lam[0])


# --- dense train kernels --------------------------------------------------------------------------


def float_dtype(*arrays):
    """float32 only when every array is float32; float64 otherwise."""
    if arrays and all(np.dtype(a.dtype) == np.float32 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def flatten_full(arr):
    """``(A, B, k, k)`` → ``(A k, B k)`` with row index ``(i, a)`` (output index fastest)."""
    a, b, k, _ = arr.shape
    return arr.transpose(0, 2, 1, 3).reshape(a * k, b * k)


def check_train_kernel(k_train_train, name="k_train_train"):
    """Validate a train–train kernel and return it flattened to ``(n, n)``.

    Returns
    -------
    A : ndarray, shape (n, n)
        float64 (float32 if given float32), exactly symmetric. It is the caller's array when that
        was already so (never written to), else a copy.
    n_outputs : int or None
        ``k`` for a full ``(N, N, k, k)`` kernel, None for a traced ``(N, N)`` one.
    """
    arr = as_real_array(k_train_train, name)
    if arr.ndim == 2:
        if arr.shape[0] != arr.shape[1]:
            raise ValueError(f"{name} must be square (N, N), got shape {arr.shape}")
        full_k = None
    elif arr.ndim == 4:
        if arr.shape[0] != arr.shape[1] or arr.shape[2] != arr.shape[3]:
            raise ValueError(f"a full {name} must have shape (N, N, k, k), got shape {arr.shape}")
        full_k = arr.shape[2]
    else:
        raise ValueError(f"{name} must be a traced kernel (N, N) or a full kernel (N, N, k, k), got shape {arr.shape}")
    if arr.shape[0] == 0 or (full_k == 0):
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    dtype = float_dtype(arr)
    A = flatten_full(arr) if full_k is not None else arr
    A = np.asarray(A, dtype=dtype)
    # Finite and symmetric, checked tile by tile: no N×N temporaries (3.2 GB at N = 20000), and
    # square tiles keep the transposed reads in cache. max|·| propagates NaN and inf, so it is
    # also the finiteness check (one pass instead of two).
    n = A.shape[0]
    b = SYMMETRY_TILE
    scale = 0.0
    asym = 0.0
    for i in range(0, n, b):
        big = float(np.max(np.abs(A[i : i + b])))
        if not np.isfinite(big):
            check_finite(A, name)
        scale = max(scale, big)
        for j in range(i, n, b):
            asym = max(asym, float(np.max(np.abs(A[i : i + b, j : j + b] - A[j : j + b, i : i + b].T))))
    tol = SYMMETRY_RTOL_SQRT_EPS * np.sqrt(np.finfo(dtype).eps)
    if asym > tol * scale:
        raise ValueError(
            f"{name} is not symmetric: max|K - K.T| = {asym:.3g} is {asym / scale:.3g} of max|K| "
            f"(allowed {tol:.2g}); a kernel matrix must be symmetric (pass (K + K.T) / 2 if the "
            "difference is rounding)"
        )
    if asym > 0.0:
        A = (A + A.T) / 2  # rounding-level asymmetry: symmetrise a copy
    return A, full_k
