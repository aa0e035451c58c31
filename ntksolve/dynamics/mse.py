"""Closed-form training dynamics of the linearised network under MSE: trajectories and ensembles.

Implements "Training, and its closed form" and "The trained infinite ensemble" of
``shared/CONVENTIONS.md``. With ``Θ`` the (regularised) train–train NTK, ``r = y − f_0`` and
``s = η t / (N k)`` (time ``t`` in gradient-descent steps, ``N k`` the number of target entries):

    train:  f_t      = f_0   + g_t(Θ) r                    g_t(λ) = 1 − e^{−λ s}
    test:   f_t(X*)  = f_0*  + Θ* h_t(Θ) r                 h_t(λ) = g_t(λ) / λ

and for discrete gradient descent ``g_t(λ) = 1 − (1 − ηλ/(Nk))^t`` (integer ``t``). Eigenvalues at or
below ``rcond · λ_max`` (``rcond = n ε``, ``n`` the size of the flattened kernel) are exact zeros:
``g = h = 0`` there, so singular kernels (repeated inputs) give the limit and ``t = ∞`` does not
drift; ``t = ∞`` is kernel regression ``Θ* Θ⁺ r``.

Three ways to evaluate the same maps, chosen by ``method``:

``"eigh"``
    One symmetric eigendecomposition (LAPACK ``syevd``, the divide-and-conquer driver: measured
    4.5× faster than ``syevr`` and 9× faster than ``syev`` at N = 2048 on this 2-core machine, as
    fast as ``numpy.linalg.eigh``, which calls the same routine, but with no extra copy thanks to
    ``overwrite_a``), cached; a whole ``T``-point trajectory is then two matrix products
    ``V (coefficients ⊙ Vᵀ r)``: ``O(T N² k)`` BLAS-3 work on top of the decomposition.
``"expm"``
    ``scipy.linalg.expm`` of the block matrix ``[[−sΘ, sI], [0, 0]]``, whose blocks are
    ``e^{−sΘ}`` and ``Θ⁻¹(I − e^{−sΘ})`` (no inverse; Van Loan 1978). Discrete descent uses
    the exact integer power of ``[[B, cI], [0, I]]`` with ``B = I − cΘ``, ``c = η/(Nk)``, whose
    top-right block is ``c Σ_{j<t} B^j = Θ⁻¹(I − B^t)``. ``t = ∞`` goes through the
    eigendecomposition (the pseudo-inverse with the ``rcond`` cut above). The direct reference,
    ``O(N³)`` per time. Because it works on the matrix rather than its modes, rounding-level
    eigenvalues of a singular kernel (``~ε λ_max``) are not exact zeros for it: it drifts by about
    ``s λ_max ε`` relative (1e-5 at ``s λ_max = 1e11``), where eigh and krylov do not.
``"krylov"``
    The kernel is never decomposed: the Lanczos approximation in :mod:`ntksolve._krylov` (Saad
    1992; Hochbruck & Lubich 1997) builds one Krylov basis per target column and evaluates
    ``g_t`` and ``h_t`` at every requested time from it (``t = ∞``, ``h = 1/λ``, is conjugate
    gradients in Lanczos form on the same basis). The basis grows until the a-posteriori change
    of every requested vector falls below ``tol``. Cost: ``m`` products with ``Θ`` (``m`` the
    Krylov dimension, typically 20–300), ``O(N m)`` per time.
``"auto"``
    The cheaper of ``"eigh"`` and ``"krylov"`` by :func:`_auto_method`'s cost model.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from ntksolve.dynamics.krylov import KrylovConvergenceWarning, lanczos_function_products

__all__ = [
    "gradient_descent_mse",
    "critical_learning_rate",
    "mse_loss",
    "MSEPredictor",
    "DivergenceWarning",
    "KrylovConvergenceWarning",
]

from ntksolve._config import (  # noqa: E402  (tunables live in the config module, with their reasons)
    EIGH_DRIVER,
    KRYLOV_TOL,
    SYMMETRY_RTOL_SQRT_EPS,
    SYMMETRY_TILE,
    AUTO_EIGH_SECONDS_PER_N3,
    AUTO_MATVEC_SECONDS_PER_N2,
    AUTO_SECONDS_PER_FLOP,
    AUTO_LANCZOS_STEP_OVERHEAD,
    AUTO_KRYLOV_ITERATIONS,
    AUTO_ASSUMED_TIMES,
    AUTO_MIN_KRYLOV_SIZE,
)
from ntksolve.dynamics.spectral import mode_coefficients as _mode_coefficients, null_mask as _null_mask

DYNAMICS = ("continuous", "discrete")
METHODS = ("auto", "eigh", "expm", "krylov")


class DivergenceWarning(RuntimeWarning):
    """The learning rate is above the critical ``2Nk/λ_max``: real gradient descent would diverge."""


# --- validation -------------------------------------------------------------------------------------


def _as_real_array(a, name):
    arr = np.asarray(a)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real, got complex dtype {arr.dtype}")
    return arr


def _float_dtype(*arrays):
    """float32 only when every array is float32; float64 otherwise (house rule 4)."""
    if arrays and all(a.dtype == np.float32 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _check_finite(arr, name):
    if not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains NaN or infinity ({bad} entries); the kernel and targets must be finite")


def _flatten_full(arr):
    """``(A, B, k, k)`` → ``(A k, B k)`` with row index ``(i, a)`` (output index fastest)."""
    a, b, k, _ = arr.shape
    return arr.transpose(0, 2, 1, 3).reshape(a * k, b * k)


def _check_train_kernel(k_train_train, name="k_train_train"):
    """Validate a train–train kernel and return it flattened to ``(n, n)``.

    Returns
    -------
    A : ndarray, shape (n, n)
        float64 (float32 if given float32), exactly symmetric. It is the caller's array when that
        was already so (never written to), else a copy.
    n_outputs : int or None
        ``k`` for a full ``(N, N, k, k)`` kernel, None for a traced ``(N, N)`` one.
    """
    arr = _as_real_array(k_train_train, name)
    if arr.ndim == 2:
        if arr.shape[0] != arr.shape[1]:
            raise ValueError(f"{name} must be square (N, N), got shape {arr.shape}")
        full_k = None
    elif arr.ndim == 4:
        if arr.shape[0] != arr.shape[1] or arr.shape[2] != arr.shape[3]:
            raise ValueError(f"a full {name} must have shape (N, N, k, k), got shape {arr.shape}")
        full_k = arr.shape[2]
    else:
        raise ValueError(
            f"{name} must be a traced kernel (N, N) or a full kernel (N, N, k, k), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or (full_k == 0):
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    dtype = _float_dtype(arr)
    A = _flatten_full(arr) if full_k is not None else arr
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
            _check_finite(A, name)
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


def _check_learning_rate(learning_rate):
    if isinstance(learning_rate, (bool, np.bool_)) or not isinstance(learning_rate, (numbers.Real, np.floating)):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    lr = float(learning_rate)
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"learning_rate must be positive and finite, got {learning_rate!r}")
    return lr


def _check_diag_reg(diag_reg):
    if isinstance(diag_reg, (bool, np.bool_)) or not isinstance(diag_reg, (numbers.Real, np.floating)):
        raise ValueError(f"diag_reg must be a non-negative number, got {diag_reg!r}")
    reg = float(diag_reg)
    if not (np.isfinite(reg) and reg >= 0):
        raise ValueError(f"diag_reg must be non-negative and finite, got {diag_reg!r}")
    return reg


def _check_times(t, dynamics):
    """Return ``(times (T,) float64, scalar: bool)``."""
    arr = _as_real_array(t, "t")
    if arr.ndim > 1:
        raise ValueError(f"t must be a scalar or a 1-D array of times, got shape {arr.shape}")
    ts = np.atleast_1d(arr).astype(np.float64)
    if np.any(np.isnan(ts)):
        raise ValueError("t contains NaN; times are numbers of steps ≥ 0 (np.inf allowed)")
    if np.any(ts < 0):
        raise ValueError(f"t must be non-negative (steps since initialisation), got min {ts.min():g}")
    if dynamics == "discrete":
        fin = ts[np.isfinite(ts)]
        if np.any(fin != np.round(fin)):
            raise ValueError(
                "discrete dynamics need integer numbers of steps t (or np.inf); got non-integer "
                f"{fin[fin != np.round(fin)][:3].tolist()}; use dynamics='continuous' for gradient flow"
            )
    return ts, arr.ndim == 0


def _pick(name, value, valid):
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid values: {', '.join(map(repr, valid))}")
    return value


def mse_loss(fx, y):
    """Mean squared error ``1/(2Nk) Σ_i ‖f(x_i) − y_i‖²`` of the conventions, along a trajectory.

    Parameters
    ----------
    fx : array_like, shape (..., N, k) or (..., N)
        Outputs; any leading axes (e.g. the time axis ``T`` of a trajectory) are kept.
    y : array_like, shape (N, k) or (N,)
        Targets; must match the trailing axes of ``fx``.

    Returns
    -------
    loss : float or ndarray, shape (...)
    """
    fx = _as_real_array(fx, "fx")
    y = _as_real_array(y, "y")
    if y.ndim == 0 or fx.shape[fx.ndim - y.ndim :] != y.shape:
        raise ValueError(f"fx of shape {fx.shape} does not end with the targets' shape {y.shape}")
    axes = tuple(range(fx.ndim - y.ndim, fx.ndim))
    diff = fx - y
    out = 0.5 * np.mean(diff * diff, axis=axes)
    return float(out) if np.ndim(out) == 0 else out


# --- the mode coefficients (shared by eigh, the t = ∞ of expm, and the Ritz values of krylov) -------


# --- cost model ------------------------------------------------------------------------------------


def _auto_method(n, n_columns, n_times=AUTO_ASSUMED_TIMES, has_test=True):
    """Pick ``"eigh"`` or ``"krylov"`` by a deterministic cost model (seconds, constants above).

    eigh:   ``a N³`` once, plus ``2 T c N²`` flops for the train trajectory and as much for the test.
    krylov: per step, one product ``Θ @ Q`` with ``c`` columns (memory-bound read of ``Θ`` plus
            ``2 c N²`` flops), ``4 N m c`` flops of reorthogonalisation and a Python overhead;
            ``m = AUTO_KRYLOV_ITERATIONS`` steps; then ``2 N m T c`` flops to assemble the results.

    Parameters
    ----------
    n : int
        Size of the flattened kernel (``N`` or ``N k``).
    n_columns : int
        Target columns solved separately (``k`` for a traced kernel, 1 for a full one).
    n_times : int
    has_test : bool

    Returns
    -------
    method : str
    """
    if n < AUTO_MIN_KRYLOV_SIZE:
        return "eigh"
    c, T, m = n_columns, n_times, AUTO_KRYLOV_ITERATIONS
    sides = 2 if has_test else 1
    flop = AUTO_SECONDS_PER_FLOP
    cost_eigh = AUTO_EIGH_SECONDS_PER_N3 * n**3 + sides * 2.0 * T * c * n**2 * flop
    step = AUTO_MATVEC_SECONDS_PER_N2 * n**2 + 2.0 * c * n**2 * flop + c * (4.0 * n * m * flop + AUTO_LANCZOS_STEP_OVERHEAD)
    cost_krylov = m * step + sides * 2.0 * n * m * T * c * flop
    return "krylov" if cost_krylov < cost_eigh else "eigh"


# --- the predictor ---------------------------------------------------------------------------------


class MSEPredictor:
    """Outputs of the linearised network trained by gradient descent on MSE, at any time.

    Made by :func:`gradient_descent_mse`; call it as
    ``predictor(t, fx_train_0, fx_test_0=None, k_test_train=None)`` (same as :meth:`predict`).

    Attributes
    ----------
    method : str
        The method actually used (``"eigh"``, ``"expm"`` or ``"krylov"``; never ``"auto"``).
    dynamics : str
    learning_rate, diag_reg : float
    n_train : int
        ``N``.
    n_outputs : int
        ``k``.
    eigenvalues : ndarray, shape (n,) or None
        Eigenvalues of the regularised flattened kernel (ascending) for ``"eigh"``/``"expm"``.
    krylov_info : dict or None
        Krylov dimensions and Ritz extremes of the latest ``"krylov"`` call.
    """

    def __init__(self, k_train_train, y_train, learning_rate=1.0, *, diag_reg=0.0, dynamics="continuous",
                 method="auto", allow_divergence=False, tol=KRYLOV_TOL, max_iter=None):
        self.dynamics = _pick("dynamics", dynamics, DYNAMICS)
        _pick("method", method, METHODS)
        self.learning_rate = _check_learning_rate(learning_rate)
        self.diag_reg = _check_diag_reg(diag_reg)
        self.allow_divergence = bool(allow_divergence)
        if not (isinstance(tol, numbers.Real) and 0 < tol < 1):
            raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
        self.tol = float(tol)
        self.max_iter = None if max_iter is None else int(max_iter)

        A, full_k = _check_train_kernel(k_train_train)
        y = _as_real_array(y_train, "y_train")
        n = A.shape[0]
        if full_k is None:
            N = n
            if y.ndim not in (1, 2) or y.shape[0] != N:
                raise ValueError(
                    f"y_train must have shape (N,) or (N, k) with N = {N} rows of k_train_train, got {y.shape}"
                )
            k = 1 if y.ndim == 1 else y.shape[1]
        else:
            k = full_k
            N = n // k
            if y.shape not in ((N, k),) + (((N,),) if k == 1 else ()):
                raise ValueError(
                    f"with a full kernel of shape {(N, N, k, k)}, y_train must have shape {(N, k)}, got {y.shape}"
                )
        if k == 0:
            raise ValueError("y_train has no target columns")
        self._dtype = _float_dtype(A, y)
        if A.dtype != self._dtype:
            A = A.astype(self._dtype)
        y = np.asarray(y, dtype=self._dtype)
        _check_finite(y, "y_train")
        self.n_train, self.n_outputs = N, k
        self._full = full_k is not None
        self._y_shape = y.shape
        self._Y = self._to_internal(y, "y_train")
        self._n = n
        self._size = N * k
        self._lr_over_size = self.learning_rate / self._size
        self._A = A  # never written to: it may be the caller's array
        self._reg = self.diag_reg * float(np.mean(np.diagonal(A))) if self.diag_reg else 0.0
        if method == "auto":
            method = _auto_method(n, self._Y.shape[1])
        self.method = method
        self.eigenvalues = None
        self.krylov_info = None
        self._V = self._null = None
        self._lmax = None
        if method in ("eigh", "expm"):
            self._decompose()
        if self.dynamics == "discrete" or method != "krylov":
            self._check_divergence(self.critical_learning_rate)

    # -- layout: internal (n, c) columns; traced: (N, k); full: (N k, 1) with index (i, a)
    def _to_internal(self, f, name):
        if self._full:
            return f.reshape(-1, 1)
        return f.reshape(f.shape[0], -1)

    def _to_user(self, F, n_points):
        """(T, n_rows, c) → (T, M, k) or (T, M) following the shape of ``y_train``."""
        T = F.shape[0]
        if self._full:
            F = F.reshape(T, n_points, self.n_outputs)
        if len(self._y_shape) == 1:
            F = F.reshape(T, n_points)
        return F

    def _matmat(self, X):
        out = self._A @ X
        if self._reg:
            out += self._reg * X
        return out

    def _decompose(self):
        if self._V is not None:
            return
        work = np.array(self._A, dtype=self._dtype, order="F")
        if self._reg:
            work.flat[:: self._n + 1] += self._reg
        lam, V = scipy.linalg.eigh(work, driver=EIGH_DRIVER, overwrite_a=True, check_finite=False)
        self._null = _null_mask(lam, self._n, self._dtype, "k_train_train")
        self._lmax = float(lam[-1])
        self._lam, self._V = lam, V
        self.eigenvalues = lam

    @property
    def critical_learning_rate(self):
        """``2 N k / λ_max`` of the regularised kernel (``np.inf`` for a zero kernel)."""
        if self._lmax is None:
            self._lmax = _largest_eigenvalue(self._A, self._reg)
        return 2.0 * self._size / self._lmax if self._lmax > 0 else np.inf

    def _check_divergence(self, crit):
        if self.learning_rate < crit:
            return
        msg = (
            f"learning_rate={self.learning_rate:g} ≥ critical learning rate 2Nk/λ_max = {crit:.6g}: "
            "real (discrete) gradient descent at this rate diverges"
        )
        if self.dynamics == "discrete" and not self.allow_divergence:
            raise ValueError(msg + "; lower learning_rate, or pass allow_divergence=True to compute it anyway")
        tail = ("; gradient flow (dynamics='continuous') still converges" if self.dynamics == "continuous"
                else " (allow_divergence=True: computing it anyway)")
        warnings.warn(msg + tail, DivergenceWarning, stacklevel=3)

    # -- public
    def __call__(self, t, fx_train_0, fx_test_0=None, k_test_train=None):
        return self.predict(t, fx_train_0, fx_test_0, k_test_train)

    def predict(self, t, fx_train_0, fx_test_0=None, k_test_train=None):
        """Train (and test) outputs after ``t`` steps of gradient descent (or gradient flow).

        Parameters
        ----------
        t : float or array_like, shape (T,)
            Steps, ``≥ 0``; ``np.inf`` is the converged limit (kernel regression).
        fx_train_0 : array_like, shape like ``y_train``: (N,) or (N, k)
            Outputs at initialisation on the training inputs.
        fx_test_0 : array_like, shape (M,) or (M, k), optional
            Outputs at initialisation on the test inputs (with ``k_test_train``).
        k_test_train : array_like, shape (M, N) traced or (M, N, k, k) full, optional
            ``Θ(X*, X)``, of the same kind as ``k_train_train``.

        Returns
        -------
        fx_train_t : ndarray, shape like ``y_train`` for scalar ``t``, ``(T,) + y_train.shape`` for an array
        fx_test_t : ndarray, shape like ``fx_test_0`` (with the leading ``T``), only when test inputs are given
        """
        ts, scalar = _check_times(t, self.dynamics)
        F0 = self._check_outputs(fx_train_0, "fx_train_0", self.n_train)
        test = self._check_test(fx_test_0, k_test_train)
        R = self._Y - F0
        if self.method == "eigh":
            train, test_out = self._predict_eigh(ts, R, test)
        elif self.method == "expm":
            train, test_out = self._predict_expm(ts, R, test)
        else:
            train, test_out = self._predict_krylov(ts, R, test)
        train = self._to_user((train + F0[None]).astype(self._dtype, copy=False), self.n_train)
        if scalar:
            train = train[0]
        if test is None:
            return train
        Kt, Ft0, M = test
        test_out = self._to_user((test_out + Ft0[None]).astype(self._dtype, copy=False), M)
        return train, (test_out[0] if scalar else test_out)

    def loss(self, t, fx_train_0, fx_test_0=None, k_test_train=None, y_test=None):
        """Training (and test) loss ``1/(2Nk) Σ ‖f − y‖²`` along the trajectory.

        Parameters
        ----------
        t, fx_train_0, fx_test_0, k_test_train
            As :meth:`predict`.
        y_test : array_like, shape like ``fx_test_0``, optional
            Test targets; needed for the test loss.

        Returns
        -------
        train_loss : float or ndarray, shape (T,)
        test_loss : float or ndarray, shape (T,), only when ``y_test`` is given
        """
        if y_test is None:
            train = self.predict(t, fx_train_0)
            return mse_loss(train, self._Y.reshape(self._y_shape))
        if k_test_train is None or fx_test_0 is None:
            raise ValueError("the test loss needs fx_test_0 and k_test_train along with y_test")
        train, test = self.predict(t, fx_train_0, fx_test_0, k_test_train)
        y_test = _as_real_array(y_test, "y_test")
        fx_test_0 = np.asarray(fx_test_0)
        if y_test.shape != fx_test_0.shape:
            raise ValueError(f"y_test must have the shape of fx_test_0 {fx_test_0.shape}, got {y_test.shape}")
        return mse_loss(train, self._Y.reshape(self._y_shape)), mse_loss(test, y_test)

    # -- input checks of predict
    def _check_outputs(self, f, name, n_points):
        f = _as_real_array(f, name)
        want = (n_points,) + tuple(self._y_shape[1:])
        if f.shape != want:
            raise ValueError(f"{name} must have shape {want} (like y_train, over {n_points} points), got {f.shape}")
        f = np.asarray(f, dtype=self._dtype)
        _check_finite(f, name)
        return self._to_internal(f, name)

    def _check_test(self, fx_test_0, k_test_train):
        if fx_test_0 is None and k_test_train is None:
            return None
        if fx_test_0 is None or k_test_train is None:
            raise ValueError(
                "test predictions need both fx_test_0 (outputs at initialisation, e.g. np.zeros((M, k))) "
                "and k_test_train (the test–train kernel)"
            )
        K = _as_real_array(k_test_train, "k_test_train")
        N, k = self.n_train, self.n_outputs
        if self._full:
            if K.ndim != 4 or K.shape[1:] != (N, k, k):
                raise ValueError(f"k_test_train must be a full kernel of shape (M, {N}, {k}, {k}), got {K.shape}")
            M = K.shape[0]
            K = _flatten_full(K)
        else:
            if K.ndim != 2 or K.shape[1] != N:
                raise ValueError(f"k_test_train must have shape (M, {N}) (test × train, traced), got {K.shape}")
            M = K.shape[0]
        K = np.asarray(K, dtype=self._dtype)
        _check_finite(K, "k_test_train")
        F = self._check_outputs(fx_test_0, "fx_test_0", M)
        return K, F, M

    # -- eigh
    def _predict_eigh(self, ts, R, test):
        V, n = self._V, self._n
        T, c = ts.size, R.shape[1]
        P = V.T @ R  # (n, c): the residual in the eigenbasis, once per call
        g, h = _mode_coefficients(self._lam, self._null, ts, self._lr_over_size, self.dynamics, test is not None)
        g = g.astype(self._dtype, copy=False)
        h = None if h is None else h.astype(self._dtype, copy=False)
        # All times in one GEMM: columns (t, column) of W = coefficient ⊙ P.
        W = (g.T[:, :, None] * P[:, None, :]).reshape(n, T * c)
        train = (V @ W).reshape(n, T, c).transpose(1, 0, 2)
        if test is None:
            return train, None
        K, _, _ = test
        Wh = (h.T[:, :, None] * P[:, None, :]).reshape(n, T * c)
        if T * c <= K.shape[0]:
            out = K @ (V @ Wh)  # 2N²Tc + 2MNTc flops
        else:
            out = (K @ V) @ Wh  # 2MN² + 2MNTc flops
        return train, out.reshape(K.shape[0], T, c).transpose(1, 0, 2)

    # -- expm (the direct reference)
    def _predict_expm(self, ts, R, test):
        n, c = self._n, R.shape[1]
        T = ts.size
        train = np.empty((T, n, c), dtype=self._dtype)
        out = None if test is None else np.empty((T, test[0].shape[0], c), dtype=self._dtype)
        A = np.array(self._A, dtype=np.float64)
        if self._reg:
            A.flat[:: n + 1] += self._reg
        eye = np.eye(n)
        inf = ~np.isfinite(ts)
        if np.any(inf):  # t = ∞: the pseudo-inverse through the eigendecomposition
            tr, te = self._predict_eigh(np.array([np.inf]), R, test)
            train[inf] = tr[0]
            if out is not None:
                out[inf] = te[0]
        for i in np.flatnonzero(~inf):
            Z = np.zeros((2 * n, 2 * n))
            if self.dynamics == "continuous":
                s = self._lr_over_size * ts[i]
                Z[:n, :n] = -s * A
                Z[:n, n:] = s * eye
                E = scipy.linalg.expm(Z)  # [[e^{−sΘ}, Θ⁻¹(I − e^{−sΘ})], [0, I]]
            else:
                cst = self._lr_over_size
                Z[:n, :n] = eye - cst * A
                Z[:n, n:] = cst * eye
                Z[n:, n:] = eye
                E = np.linalg.matrix_power(Z, int(ts[i]))  # [[B^t, Θ⁻¹(I − B^t)], [0, I]]
            train[i] = R - E[:n, :n] @ R
            if out is not None:
                out[i] = test[0] @ (E[:n, n:] @ R)
        return train, out

    # -- krylov
    def _predict_krylov(self, ts, R, test):
        T = ts.size
        need_h = test is not None
        n, dtype = self._n, self._dtype
        lr, dyn = self._lr_over_size, self.dynamics

        def coefficient_fn(theta):
            null = _null_mask(theta, n, dtype, "k_train_train")
            g, h = _mode_coefficients(theta, null, ts, lr, dyn, need_h)
            return np.vstack([g, h]) if need_h else g

        eps = np.finfo(dtype).eps
        tol = max(self.tol, 10 * eps)
        out, info = lanczos_function_products(self._matmat, np.ascontiguousarray(R), coefficient_fn, tol=tol,
                                              max_iter=self.max_iter)
        self.krylov_info = info
        if self.dynamics == "continuous" and np.isfinite(info["ritz_max"]) and info["ritz_max"] > 0:
            # The largest Ritz value is a (fast-converging) lower bound of λ_max: warn at no cost.
            self._check_divergence(2.0 * self._size / info["ritz_max"])
        train = out[:T]
        if test is None:
            return train, None
        K = test[0]
        c = R.shape[1]
        U = out[T:].transpose(1, 0, 2).reshape(n, T * c)  # h_t(Θ) r for all (t, column): one GEMM
        return train, (K @ U).reshape(K.shape[0], T, c).transpose(1, 0, 2)


def _largest_eigenvalue(A, shift=0.0):
    """``λ_max(A + shift·I)`` of a symmetric matrix: dense for small ``n``, else ARPACK Lanczos
    (``eigsh``, 1e-10 relative) with a fixed start vector, so the result is deterministic."""
    n = A.shape[0]
    if n <= 256:
        return float(scipy.linalg.eigvalsh(A, subset_by_index=[n - 1, n - 1], check_finite=False)[0]) + shift

    def matmat(X):
        return A @ X + shift * X if shift else A @ X

    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=lambda x: matmat(x.reshape(n, 1)).ravel(),
                                            matmat=matmat, dtype=A.dtype)
    v0 = np.random.default_rng(0).standard_normal(n).astype(A.dtype)
    lam = scipy.sparse.linalg.eigsh(op, k=1, which="LA", tol=1e-10, v0=v0, return_eigenvectors=False)
    return float(lam[0])


def gradient_descent_mse(k_train_train, y_train, learning_rate=1.0, *, diag_reg=0.0, dynamics="continuous",
                         method="auto", allow_divergence=False, tol=KRYLOV_TOL, max_iter=None):
    """Closed-form gradient descent on MSE for the network linearised at initialisation.

    Parameters
    ----------
    k_train_train : array_like, shape (N, N) or (N, N, k, k)
        Train–train NTK ``Θ``: traced (acting on each target column) or full (flattened to
        ``(N k, N k)`` with index ``(i, a)``).
    y_train : array_like, shape (N,) or (N, k)
        Targets.
    learning_rate : float, default 1.0
        ``η``; time ``t`` counts steps, ``s = η t / (N k)``.
    diag_reg : float, default 0.0
        Adds ``diag_reg · mean(diag Θ) · I`` to the flattened kernel.
    dynamics : {"continuous", "discrete"}
        Gradient flow, or exact discrete steps ``(I − ηΘ/(Nk))^t`` (integer ``t``).
    method : {"auto", "eigh", "expm", "krylov"}
        See the module docstring; ``"auto"`` picks by a cost model, visible as ``predictor.method``.
    allow_divergence : bool, default False
        With ``dynamics="discrete"`` a learning rate at or above ``2Nk/λ_max`` is an error unless
        this is True. (Continuous dynamics only warn with :class:`DivergenceWarning`.)
    tol : float, default 1e-10
        Relative tolerance of ``method="krylov"`` (floored at ``10 ε``).
    max_iter : int, optional
        Largest Krylov dimension of ``method="krylov"`` (default ``n``).

    Returns
    -------
    predictor : MSEPredictor
        ``predictor(t, fx_train_0, fx_test_0=None, k_test_train=None)``.

    Notes
    -----
    ``method="eigh"`` decomposes the kernel here, once; ``"krylov"`` works per call (the Krylov
    basis depends on ``y − f_0``). With ``"krylov"`` and continuous dynamics the divergence warning
    is issued at the first call, from the Lanczos estimate of ``λ_max`` (no extra work).
    """
    return MSEPredictor(k_train_train, y_train, learning_rate, diag_reg=diag_reg, dynamics=dynamics,
                        method=method, allow_divergence=allow_divergence, tol=tol, max_iter=max_iter)


def critical_learning_rate(k_train_train, n_outputs=None, *, diag_reg=0.0):
    """The learning rate ``2 N k / λ_max(Θ)`` above which discrete gradient descent diverges.

    Parameters
    ----------
    k_train_train : array_like, shape (N, N) or (N, N, k, k)
    n_outputs : int, optional
        ``k`` for a traced kernel (number of target columns; default 1). For a full kernel it is the
        kernel's ``k`` and, if given, must agree.
    diag_reg : float, default 0.0
        As in :func:`gradient_descent_mse`.

    Returns
    -------
    eta_crit : float
    """
    A, full_k = _check_train_kernel(k_train_train)
    reg = _check_diag_reg(diag_reg)
    if full_k is not None:
        if n_outputs is not None and int(n_outputs) != full_k:
            raise ValueError(f"n_outputs={n_outputs} disagrees with the full kernel's k = {full_k}")
        size = A.shape[0]
    else:
        k = 1 if n_outputs is None else int(n_outputs)
        if k < 1:
            raise ValueError(f"n_outputs must be a positive integer, got {n_outputs!r}")
        size = A.shape[0] * k
    shift = reg * float(np.mean(np.diagonal(A))) if reg else 0.0
    lmax = _largest_eigenvalue(A, shift)
    return 2.0 * size / lmax if lmax > 0 else np.inf


# --- the trained infinite ensemble -----------------------------------------------------------------
