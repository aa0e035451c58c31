"""Training in closed form from tiled kernel products: :func:`fit_tiled`, :func:`solve_tiled`, :class:`TiledFit`.

The linearised training dynamics of ``docs/conventions.md`` on a :class:`TiledKernelOperator`:
``t = inf`` (kernel regression) by conjugate gradients (:mod:`ntksolve.dynamics.cg`) with a Nyström
preconditioner (:mod:`ntksolve.dynamics.nystrom`); finite ``t`` by the Lanczos process of
:mod:`ntksolve.dynamics.krylov` with the mode coefficients of :mod:`ntksolve.dynamics.spectral`.
Only the products are tiled; the solvers are the in-memory ones.
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Optional, Tuple

import numpy as np

from ntksolve._config import DEFAULT_CG_TOL, DEFAULT_LANDMARKS, KRYLOV_TOL
from ntksolve.dask.operator import TiledKernelOperator, _stream_cross
from ntksolve.dask.runner import _Runner
from ntksolve.dask.spec import KernelSpec
from ntksolve.dynamics.cg import preconditioned_cg
from ntksolve.dynamics.krylov import lanczos_function_products
from ntksolve.dynamics.rules import resolve_rule
from ntksolve.dynamics.spectral import null_mask as _null_mask
from ntksolve.nets.mlp import MLP


class TiledFit:
    """The trained predictor of :func:`fit_tiled`: coefficients on the training inputs.

    Test predictions are ``fx_test_0 + Theta(X_test, X_train) coef``, streamed tile by tile.

    Attributes
    ----------
    spec : KernelSpec
    X_train : ndarray, shape (N, d)
    coef : ndarray, shape (N, k), float64
        ``(Theta + mu I)^{-1} (I - E_t) (y - f_0)`` (``t = inf``: ``(Theta + mu I)^{-1} (y - f_0)``).
    fx_train : ndarray, shape (N, k) or (N,)
        Predictions on the training inputs at time ``t``: ``y + E_t (f_0 - y)``.
    t, learning_rate, diag_reg, dynamics, mu
        The problem solved; ``mu = diag_reg * mean(diag Theta)``.
    chunks : int
        Test tile edge used by :meth:`predict`.
    info : dict
        ``method`` ("cg" or "lanczos"), ``iterations``, ``converged``, residuals or changes,
        ``setup_seconds`` (tiles), ``solve_seconds``, ``n_landmarks``.
    """

    def __init__(self, spec, X_train, coef, fx_train, *, t, learning_rate, diag_reg, dynamics, mu, chunks,
                 info, scheduler, y_ndim) -> None:
        self.spec = spec
        self.X_train = X_train
        self.coef = coef
        self.fx_train = fx_train
        self.t = t
        self.learning_rate = learning_rate
        self.diag_reg = diag_reg
        self.dynamics = dynamics
        self.mu = mu
        self.chunks = chunks
        self.info = info
        self.scheduler = scheduler if isinstance(scheduler, (str, type(None))) else None
        self._y_ndim = y_ndim

    def predict(self, X_test, *, fx_test_0=None, scheduler=None, chunks=None) -> np.ndarray:
        """Predictions at time ``t`` on ``X_test``: ``fx_test_0 + Theta(X_test, X_train) coef``.

        Parameters
        ----------
        X_test : array_like, shape (M, d)
        fx_test_0 : array_like, shape (M, k) or (M,), optional
            The network's outputs at initialisation on ``X_test`` (default 0: the infinite
            ensemble's mean).
        scheduler : optional
            Default: the one given to :func:`fit_tiled` if it was a name or address, else the
            current client or threads.
        chunks : int, optional
            Test inputs per tile edge (default: the train tile edge).

        Returns
        -------
        ndarray, shape (M, k) or (M,) like ``y_train``
        """
        Xt = self.spec.prepare(X_test, "X_test", n_features=self.X_train.shape[1])
        with _Runner(scheduler if scheduler is not None else self.scheduler) as runner:
            out = _stream_cross(self.spec, Xt, self.X_train, self.coef, chunks or self.chunks, self.chunks, runner)
        if fx_test_0 is not None:
            out = out + _as_2d(fx_test_0, "fx_test_0", Xt.shape[0], out.shape[1])
        return out[:, 0] if self._y_ndim == 1 else out


def _as_2d(a, name, n, k=None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n or (k is not None and a.shape[1] != k):
        want = f"({n},)" + (f" or ({n}, {k})" if k is not None else " or (N, k)")
        raise ValueError(f"{name} must have shape {want}, got {np.shape(a)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def solve_tiled(
    operator: TiledKernelOperator,
    y_train,
    *,
    t=np.inf,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    dynamics: str = "continuous",
    fx_train_0=None,
    tol: Optional[float] = None,
    maxiter: Optional[int] = None,
    n_landmarks: Optional[int] = None,
    random_state=0,
) -> Tuple[np.ndarray, np.ndarray, dict]:
    """The linearised dynamics on a tiled train kernel: ``(coef, fx_train, info)``.

    ``A = Theta + mu I`` with ``mu = diag_reg * mean(diag Theta)`` (``docs/conventions.md``); ``r = y - f_0``.
    ``t = inf``: ``coef = A^{-1} r`` by conjugate gradients preconditioned with a Nyström
    approximation from ``n_landmarks`` uniformly drawn training points (Falkon's choice), and
    ``fx_train = y``. Finite ``t``: ``coef = A^{-1} (I - E_t) r`` and ``fx_train = y - E_t r`` by
    Lanczos on ``A`` started at ``r``.

    Parameters
    ----------
    operator : TiledKernelOperator
    y_train : array_like, shape (N,) or (N, k)
    t : float, default inf
        Time in steps of gradient descent (continuous: gradient-flow time). Non-negative.
    learning_rate : float, default 1.0
    diag_reg : float, default 0.0
    dynamics : {"continuous", "discrete"}
    fx_train_0 : array_like, shape like ``y_train``, optional (default 0)
    tol : float, optional
        CG relative residual (default ``DEFAULT_CG_TOL``) or Lanczos relative change
        (default ``ntksolve._config.KRYLOV_TOL``).
    maxiter : int, optional
        Products with ``Theta`` at most (default 1000 for CG, N for Lanczos).
    n_landmarks : int, optional
        Nyström landmarks (default ``min(N, DEFAULT_LANDMARKS)``); 0 disables the preconditioner.
    random_state : int or Generator
        Draws the landmarks.

    Returns
    -------
    coef : ndarray, shape (N, k)
    fx_train : ndarray, shape (N, k)
    info : dict
    """
    N = operator.shape[0]
    y = _as_2d(y_train, "y_train", N)
    k = y.shape[1]
    f0 = np.zeros_like(y) if fx_train_0 is None else _as_2d(fx_train_0, "fx_train_0", N, k)
    t = float(t)
    if not t >= 0:
        raise ValueError(f"t must be a non-negative time (or inf), got {t!r}")
    if dynamics not in ("continuous", "discrete"):
        raise ValueError(f"dynamics must be 'continuous' or 'discrete', got {dynamics!r}")
    if dynamics == "discrete" and math.isfinite(t) and t != int(t):
        raise ValueError(f"discrete dynamics count whole steps; t must be an integer, got {t!r}")
    if not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate must be positive and finite, got {learning_rate!r}")
    if not (diag_reg >= 0 and math.isfinite(diag_reg)):
        raise ValueError(f"diag_reg must be a non-negative finite number, got {diag_reg!r}")
    mu = float(diag_reg) * float(np.mean(operator.diagonal())) if diag_reg else 0.0
    r = y - f0
    info: dict = {"setup_seconds": operator.setup_seconds, "mu": mu}
    t0 = time.perf_counter()

    def A(V):
        out = operator.matmat(V)
        if mu:
            out += mu * V
        return out

    if t == 0:
        coef, fx_train = np.zeros_like(r), f0.copy()
        info.update(method="none", iterations=0, converged=True)
    elif math.isinf(t):
        m = min(N, DEFAULT_LANDMARKS) if n_landmarks is None else int(n_landmarks)
        precond = None
        if m > 0:
            rng = np.random.default_rng(random_state)
            landmarks = np.sort(rng.choice(N, size=min(m, N), replace=False))
            tp = time.perf_counter()
            shift = mu
            if shift <= 0:  # no ridge: shift by the kernel's scale at the rounding level
                shift = float(np.mean(operator.diagonal())) * N * np.finfo(operator.dtype).eps
            precond = operator.nystrom(landmarks, shift)
            info["preconditioner_seconds"] = time.perf_counter() - tp
        info["n_landmarks"] = m
        coef, cg = preconditioned_cg(A, r, precond, tol=DEFAULT_CG_TOL if tol is None else tol,
                                     max_iter=1000 if maxiter is None else maxiter)
        if not cg["converged"]:
            warnings.warn(
                f"conjugate gradients did not reach tol within {cg['iterations']} iterations (relative "
                f"residuals {cg['residuals']}); raise maxiter, diag_reg or n_landmarks",
                RuntimeWarning, stacklevel=2,
            )
        fx_train = y.copy()
        info.update(method="cg", iterations=cg["iterations"], converged=cg["converged"], residuals=cg["residuals"])
    else:
        # The Lanczos process and the mode coefficients of the in-memory method="krylov"
        # (ntksolve.dynamics.krylov, ntksolve.dynamics.spectral): the same dynamics, only the
        # products are tiled.
        ts = np.array([t])
        lr_over_size = learning_rate / (N * k)

        def coefficient_fn(theta):
            null = _null_mask(theta, N, operator.dtype, "the tiled train kernel")
            g, h = resolve_rule(dynamics, learning_rate).mode_coefficients(theta, null, ts, N * k)
            return np.vstack([g, h])

        eps = np.finfo(operator.dtype).eps
        out, lz = lanczos_function_products(A, r, coefficient_fn, tol=max(KRYLOV_TOL if tol is None else tol, 10 * eps),
                                            max_iter=maxiter)
        fx_train = f0 + out[0]  # f_t = f_0 + (1 - E_t) r = y + E_t (f_0 - y)
        coef = out[1]
        info.update(method="lanczos", iterations=max(lz["iterations"]), converged=all(lz["converged"]))
    info["solve_seconds"] = time.perf_counter() - t0
    return coef, fx_train, info


def fit_tiled(
    net: MLP,
    X_train,
    y_train,
    *,
    params=None,
    kernel: str = "ntk",
    t=np.inf,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    dynamics: str = "continuous",
    fx_train_0=None,
    chunks,
    scheduler=None,
    dtype=None,
    store=None,
    in_memory: bool = True,
    tol: Optional[float] = None,
    maxiter: Optional[int] = None,
    n_landmarks: Optional[int] = None,
    random_state=0,
) -> TiledFit:
    """Train (in closed form, from kernel products only) on a kernel too large for one machine.

    The one call an estimator needs: the train kernel is built as tiles on the workers
    (:class:`TiledKernelOperator`), the dynamics are solved (:func:`solve_tiled`), the tiles are
    released, and the returned :class:`TiledFit` predicts on new inputs by streaming test tiles.

    Parameters
    ----------
    net : MLP
    X_train : array_like, shape (N, d)
    y_train : array_like, shape (N,) or (N, k)
    params : list of (W, b), optional
        ``None``: the analytic (infinite-width) kernel; given: the traced empirical NTK at them.
    kernel : {"ntk", "nngp"}
        Analytic only: ``"nngp"`` gives the NNGP posterior mean (Bayesian inference) instead.
    t, learning_rate, diag_reg, dynamics, fx_train_0, tol, maxiter, n_landmarks, random_state
        See :func:`solve_tiled`.
    chunks : int or sequence
        Training inputs per tile edge.
    scheduler : optional
        See :mod:`ntksolve.dask.runner`.
    dtype : float64 or float32, optional
        Storage dtype of the train tiles.
    store, in_memory
        See :class:`TiledKernelOperator`.

    Returns
    -------
    TiledFit
    """
    spec = KernelSpec(net, params, kernel=kernel, trace=True)
    with TiledKernelOperator(spec, X_train, chunks=chunks, scheduler=scheduler, dtype=dtype, store=store,
                             in_memory=in_memory) as op:
        coef, fx_train, info = solve_tiled(
            op, y_train, t=t, learning_rate=learning_rate, diag_reg=diag_reg, dynamics=dynamics,
            fx_train_0=fx_train_0, tol=tol, maxiter=maxiter, n_landmarks=n_landmarks, random_state=random_state,
        )
        X = op.X
        edge = op.chunks[0]
    y_ndim = np.ndim(y_train)
    return TiledFit(spec, X, coef, fx_train[:, 0] if y_ndim == 1 else fx_train, t=float(t),
                    learning_rate=learning_rate, diag_reg=diag_reg, dynamics=dynamics, mu=info["mu"],
                    chunks=edge, info=info, scheduler=scheduler, y_ndim=y_ndim)


__all__ = ["TiledFit", "fit_tiled", "solve_tiled"]
