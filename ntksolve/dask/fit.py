"""Training in closed form from tiled kernel products: :func:`fit_tiled`, :func:`solve_tiled`, :class:`TiledFit`.

The tiled train kernel (:class:`TiledKernelOperator`) is a kernel operator of
:mod:`ntksolve.dynamics.operator`, so it trains through the one in-memory entry point,
:func:`ntksolve.dynamics.gradient_descent_mse`: the same validation, the same divergence check,
the same solvers and their options (``method=ConjugateGradient(...)`` or ``Krylov(...)``). Only the
products are tiled; nothing here re-implements the dynamics.

What a tiled fit keeps is the coefficient vector ``h_t(Θ) r`` on the training inputs (so that test
predictions need only streamed test-side products, and a saved model needs no kernel): the
predictor computes it in the same solve as the train outputs, as its test side with the identity
as the "test–train kernel" (:class:`_Coefficients`). :func:`validation_path_tiled` does the same
for every ridge and time of a cross-validation fold.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from ntksolve._config import DEFAULT_CG_TOL
from ntksolve._validation import as_real_array, check_diag_reg, check_finite, ridge_shift
from ntksolve.dask.operator import TiledCrossOperator, TiledKernelOperator
from ntksolve.dask.runner import _Runner
from ntksolve.dask.spec import KernelSpec
from ntksolve.dynamics import ConjugateGradient, Krylov, Nystrom, gradient_descent_mse
from ntksolve.dynamics.rules import resolve_rule
from ntksolve.dynamics.solvers import resolve_solver
from ntksolve.nets.mlp import MLP

#: Products at most of the default conjugate-gradient solve (the solver's own default is ``N``):
#: each product is a pass over every tile of the cluster, so a solve that has not converged in
#: 1000 preconditioned iterations warns (raise ``diag_reg``, landmarks or ``max_iter``) instead of
#: running for hours at ``N = 50 000``.
DEFAULT_CG_MAX_ITER = 1000

#: ``info["method"]`` of a tiled fit, by the name of the solver that ran.
_INFO_METHOD = {"cg": "cg", "krylov": "lanczos"}


def default_method(t, diag_reg=0.0):
    """The solver a tiled fit uses unless given one.

    ``t = inf`` with a ridge: conjugate gradients with a Nyström preconditioner (one pass over
    the tiles per iteration, tens of iterations). Otherwise ``Krylov()``: finite times, and
    ``t = inf`` without a ridge, where the kernel may be singular (duplicated inputs) and the
    Lanczos form of CG, which drops the null Ritz values, gives the pseudo-inverse answer of the
    in-memory eigendecomposition (a Nyström preconditioner needs a ridge to be well scaled).

    Parameters
    ----------
    t : float
    diag_reg : float, default 0.0

    Returns
    -------
    ConjugateGradient or Krylov
        ``ConjugateGradient(DEFAULT_CG_TOL, DEFAULT_CG_MAX_ITER, Nystrom())`` (``Nystrom()``:
        ``min(N, DEFAULT_LANDMARKS)`` landmarks, seed 0), or ``Krylov()``.
    """
    if math.isinf(t) and diag_reg > 0:
        return ConjugateGradient(tol=DEFAULT_CG_TOL, max_iter=DEFAULT_CG_MAX_ITER, preconditioner=Nystrom())
    return Krylov()


class _Instrumented:
    """The train operator as the solvers see it, counting its products and timing its preconditioner.

    Products are float64 whatever the tiles' storage dtype, so that is the dtype it declares.
    ``matmat`` is looked up on the operator at each call (a caller may have replaced it).
    """

    def __init__(self, op):
        self.op = op
        self.shape = tuple(op.shape)
        self.dtype = np.dtype(np.float64)
        self.products = 0
        self.preconditioner_seconds = None
        self.n_landmarks = 0

    def matmat(self, V):
        self.products += 1
        return self.op.matmat(V)

    def diagonal(self):
        return self.op.diagonal()

    def nystrom(self, landmarks, mu):
        t0 = time.perf_counter()
        precond = self.op.nystrom(landmarks, mu)
        self.preconditioner_seconds = time.perf_counter() - t0
        self.n_landmarks = len(landmarks)
        return precond


class _Coefficients:
    """The identity as a test–train operator ``(N, N)``: the predictor's test side is then ``h_t(Θ) r``."""

    def __init__(self, n):
        self.shape = (n, n)

    def matmat(self, V):
        return V


@dataclasses.dataclass(eq=False, repr=False)
class TiledFit:
    """The trained predictor of :func:`fit_tiled`: coefficients on the training inputs.

    Test predictions are ``fx_test_0 + Theta(X_test, X_train) coef``, streamed tile by tile
    (:class:`TiledCrossOperator`).

    Attributes
    ----------
    spec : KernelSpec
    X_train : ndarray, shape (N, d)
    coef : ndarray, shape (N, k), float64
        ``h_t(A) r = A^{-1} (I - E_t) r`` with ``A = Theta + mu I``, ``r = y - f_0`` (``t = inf``:
        ``A^+ r``).
    fx_train : ndarray, shape (N, k) or (N,)
        Predictions on the training inputs at time ``t``: ``f_0 + (I - E_t) r`` (``t = inf``:
        ``f_0 + A A^+ r``, which is ``y`` to the solver's tolerance for an invertible ``A``).
    t, learning_rate, diag_reg, dynamics, mu
        The problem solved; ``mu = diag_reg * mean(diag Theta)``.
    chunks : int
        Test tile edge used by :meth:`predict`.
    info : dict
        ``method`` ("cg" or "lanczos"), ``iterations``, ``converged``, ``products`` (passes over
        the tiles, the divergence check's included), residuals (CG) or Ritz extremes (Lanczos),
        ``setup_seconds`` (tiles), ``solve_seconds``, ``preconditioner_seconds``, ``n_landmarks``.
    scheduler : str or None
        :meth:`predict`'s default scheduler: the fit's, when it was a name or an address (a client
        object given to the fit is not kept).
    y_ndim : int
        Constructor only: ``y.ndim`` of the training targets (1 or 2), which :meth:`predict`'s
        output follows.
    """

    spec: KernelSpec
    X_train: np.ndarray
    coef: np.ndarray
    fx_train: np.ndarray
    _: dataclasses.KW_ONLY
    t: float
    learning_rate: float
    diag_reg: float
    dynamics: str
    mu: float
    chunks: int
    info: dict
    scheduler: object
    y_ndim: dataclasses.InitVar[int]

    def __post_init__(self, y_ndim) -> None:
        # predict's default scheduler: a name or an address is kept, a client object is not
        self.scheduler = self.scheduler if isinstance(self.scheduler, (str, type(None))) else None
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
        M, k = Xt.shape[0], self.coef.shape[1]
        f0 = None
        if fx_test_0 is not None:  # checked before any tile is computed
            f0 = as_real_array(fx_test_0, "fx_test_0")
            if f0.shape not in ((M, k),) + (((M,),) if k == 1 else ()):
                raise ValueError(
                    f"fx_test_0 must have shape ({M}, {k})"
                    + (f" or ({M},)" if k == 1 else "")
                    + f" (outputs at initialisation on X_test), got {f0.shape}"
                )
            f0 = np.asarray(f0, dtype=np.float64).reshape(M, k)
            check_finite(f0, "fx_test_0")
        with _Runner(scheduler if scheduler is not None else self.scheduler) as runner:
            cross = TiledCrossOperator(
                self.spec, Xt, self.X_train, self.chunks if chunks is None else chunks, self.chunks, runner
            )
            out = cross.matmat(self.coef)
        if f0 is not None:
            out = out + f0
        return out[:, 0] if self._y_ndim == 1 else out


def _check_one_time(t, rule):
    """``t`` as a float, validated by the rule; a tiled fit holds one time."""
    ts, scalar = rule.check_times(t)
    if not scalar:
        raise ValueError(
            f"a tiled fit is solved at one time t (it keeps that time's coefficients), got {np.shape(t)} times; "
            "fit once per time, or use ntksolve.dynamics.gradient_descent_mse on the TiledKernelOperator "
            "with method=Krylov() for a trajectory"
        )
    return float(ts[0])


def _check_like(f, name: str, shape, what: str) -> np.ndarray:
    """``f`` as a finite float64 array of exactly ``shape`` (no broadcasting), else a clear error."""
    f = as_real_array(f, name)
    if f.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} ({what}), got {f.shape}")
    f = np.asarray(f, dtype=np.float64)
    check_finite(f, name)
    return f


def _check_train_targets(y_train, fx_train_0, n: int, *, columns: bool = False):
    """``y_train`` (and ``fx_train_0``) checked as :func:`~ntksolve.dynamics.gradient_descent_mse`
    checks them, but before any tile is computed (it sees them only after the train tiles);
    ``columns``: ``(N, k)`` only. Returns the float64 targets."""
    y = as_real_array(y_train, "y_train")
    ndims = (2,) if columns else (1, 2)
    if y.ndim not in ndims or y.shape[0] != n or (y.ndim == 2 and y.shape[1] == 0):
        want = f"({n}, k)" if columns else f"({n},) or ({n}, k)"
        raise ValueError(f"y_train must have shape {want} (one row per training input), got {y.shape}")
    y = np.asarray(y, dtype=np.float64)
    check_finite(y, "y_train")
    if fx_train_0 is not None:
        _check_like(fx_train_0, "fx_train_0", y.shape, "like y_train: the outputs at initialisation")
    return y


def solve_tiled(
    operator,
    y_train,
    *,
    t=np.inf,
    learning_rate=None,
    diag_reg: float = 0.0,
    dynamics="continuous",
    fx_train_0=None,
    method=None,
    allow_divergence: bool = False,
):
    """The linearised dynamics on a tiled train kernel: ``(coef, fx_train, info)``.

    One call of :func:`ntksolve.dynamics.gradient_descent_mse` on the operator (its validation,
    divergence check and solvers); ``coef = h_t(A) r`` and ``fx_train = f_0 + g_t(A) r`` with
    ``A = Theta + mu I``, ``mu = diag_reg * mean(diag Theta)``, ``r = y - f_0``
    (``docs/conventions.md``), from one solve.

    Parameters
    ----------
    operator : TiledKernelOperator
        Or any kernel operator with ``shape``, ``dtype``, ``matmat``, ``diagonal`` (and ``nystrom``
        for ``Nystrom`` to build the preconditioner where the tiles are).
    y_train : array_like, shape (N,) or (N, k)
    t : float, default inf
        Time in steps of gradient descent (continuous: gradient-flow time). One time.
    learning_rate : float, optional
        Default 1.0; leave out when ``dynamics`` is a rule object.
    diag_reg : float, default 0.0
    dynamics : {"continuous", "discrete"} or TrainingRule
    fx_train_0 : array_like, shape like ``y_train``, optional (default 0)
    method : ConjugateGradient or Krylov or "krylov", optional
        Default :func:`default_method` of ``t`` and ``diag_reg``. Options travel with the object, e.g.
        ``ConjugateGradient(tol=1e-8, preconditioner=Nystrom(500, random_state=1))``.
    allow_divergence : bool, default False
        As in :func:`~ntksolve.dynamics.gradient_descent_mse`.

    Returns
    -------
    coef : ndarray, shape (N, k)
    fx_train : ndarray, shape (N, k)
    info : dict
        See :attr:`TiledFit.info`; also ``mu``.
    """
    rule = resolve_rule(dynamics, learning_rate)
    t = _check_one_time(t, rule)
    solver = default_method(t, check_diag_reg(diag_reg)) if method is None else resolve_solver(method)
    N = operator.shape[0]
    kernel = _Instrumented(operator)
    t0 = time.perf_counter()
    pred = gradient_descent_mse(
        kernel, y_train, dynamics=rule, diag_reg=diag_reg, method=solver, allow_divergence=allow_divergence
    )
    shape = np.shape(y_train)
    f0 = np.zeros(shape) if fx_train_0 is None else fx_train_0
    fx_train, coef = pred.predict(t, f0, np.zeros(shape), _Coefficients(N))
    k = pred.n_outputs
    solved = pred.krylov_info or {}
    info = {
        "method": _INFO_METHOD.get(pred.method, pred.method),
        "mu": ridge_shift(pred.diag_reg, operator.diagonal()),
        "setup_seconds": getattr(operator, "setup_seconds", 0.0),
    }
    for key, value in solved.items():
        if key == "iterations":
            value = int(np.max(value))
        elif key == "converged":
            value = bool(np.all(value))
        info[key] = value
    info.update(products=kernel.products, n_landmarks=kernel.n_landmarks, solve_seconds=time.perf_counter() - t0)
    if kernel.preconditioner_seconds is not None:
        info["preconditioner_seconds"] = kernel.preconditioner_seconds
    return (
        np.asarray(coef, dtype=np.float64).reshape(N, k),
        np.asarray(fx_train, dtype=np.float64).reshape(N, k),
        info,
    )


def fit_tiled(
    net: MLP,
    X_train,
    y_train,
    *,
    params=None,
    kernel: str = "ntk",
    t=np.inf,
    learning_rate=None,
    diag_reg: float = 0.0,
    dynamics="continuous",
    fx_train_0=None,
    chunks,
    scheduler=None,
    dtype=None,
    store=None,
    in_memory: bool = True,
    method=None,
    allow_divergence: bool = False,
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
    t, learning_rate, diag_reg, dynamics, fx_train_0, method, allow_divergence
        See :func:`solve_tiled`; the rule, the time, the ridge and the solver are checked before
        any tile is computed.
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

    Examples
    --------
    >>> fit = fit_tiled(net, X, y, diag_reg=1e-3, chunks=4096,                          # doctest: +SKIP
    ...                 method=ConjugateGradient(tol=1e-8, preconditioner=Nystrom(4000)))
    """
    rule = resolve_rule(dynamics, learning_rate)
    t = _check_one_time(t, rule)
    diag_reg = check_diag_reg(diag_reg)
    solver = default_method(t, diag_reg) if method is None else resolve_solver(method)
    spec = KernelSpec(net, params, kernel=kernel, trace=True)
    X_train = spec.prepare(X_train, "X_train")
    _check_train_targets(y_train, fx_train_0, X_train.shape[0])
    with TiledKernelOperator(
        spec, X_train, chunks=chunks, scheduler=scheduler, dtype=dtype, store=store, in_memory=in_memory
    ) as op:
        coef, fx_train, info = solve_tiled(
            op,
            y_train,
            t=t,
            dynamics=rule,
            diag_reg=diag_reg,
            fx_train_0=fx_train_0,
            method=solver,
            allow_divergence=allow_divergence,
        )
        X = op.X
        edge = op.chunks[0]
    y_ndim = np.ndim(y_train)
    return TiledFit(
        spec,
        X,
        coef,
        fx_train[:, 0] if y_ndim == 1 else fx_train,
        t=t,
        learning_rate=rule.learning_rate,
        diag_reg=diag_reg,
        dynamics=rule.name,
        mu=info["mu"],
        chunks=edge,
        info=info,
        scheduler=scheduler,
        y_ndim=y_ndim,
    )


def validation_path_tiled(
    net: MLP,
    X_train,
    y_train,
    X_valid,
    *,
    params=None,
    times,
    diag_regs,
    learning_rate=None,
    dynamics="continuous",
    fx_train_0=None,
    fx_valid_0=None,
    chunks,
    scheduler=None,
    dtype=None,
    method=None,
) -> np.ndarray:
    """Outputs on held-out inputs of training on ``(X_train, y_train)``, at every ridge and time.

    What a cross-validation fold needs, without forming its kernel: the train tiles are computed
    once; each ridge is one Lanczos solve (:class:`Krylov`, which serves every time of the grid,
    ``np.inf`` included) of :func:`ntksolve.dynamics.gradient_descent_mse` on them, kept as its
    coefficients ``h_t(Θ + μI) r`` for every time; then one streamed pass over the validation–train
    tiles multiplies all of them at once.

    Parameters
    ----------
    net, params
        As :func:`fit_tiled` (``params=None``: the analytic kernel).
    X_train : array_like, shape (N, d)
    y_train : array_like, shape (N, k)
    X_valid : array_like, shape (M, d)
    times : array_like, shape (T,)
    diag_regs : array_like, shape (R,)
    learning_rate, dynamics
        As :func:`solve_tiled`.
    fx_train_0 : array_like, shape (N, k), optional (default 0)
    fx_valid_0 : array_like, shape (M, k), optional (default 0)
    chunks, scheduler, dtype
        As :func:`fit_tiled`.
    method : Krylov, optional
        Default ``Krylov()``; conjugate gradients answer ``t = inf`` only, so a grid of times
        takes Lanczos.

    Returns
    -------
    ndarray, shape (R, T, M, k)
    """
    rule = resolve_rule(dynamics, learning_rate)
    solver = Krylov() if method is None else resolve_solver(method)
    if not isinstance(solver, Krylov):
        raise ValueError(f"a grid of times is solved by Lanczos (method='krylov' or Krylov(...)), not by {solver!r}")
    ts = np.asarray(rule.check_times(times)[0], dtype=np.float64).reshape(-1)
    regs = [check_diag_reg(r) for r in np.asarray(diag_regs, dtype=np.float64).reshape(-1)]
    spec = KernelSpec(net, params, kernel="ntk", trace=True)
    # every input checked before the train tiles are computed
    X_train = spec.prepare(X_train, "X_train")
    Y = _check_train_targets(y_train, fx_train_0, X_train.shape[0], columns=True)
    N, k = Y.shape
    f0 = np.zeros((N, k)) if fx_train_0 is None else np.asarray(fx_train_0, dtype=np.float64)
    Xv = spec.prepare(X_valid, "X_valid", n_features=X_train.shape[1])
    M = Xv.shape[0]
    if fx_valid_0 is not None:
        fx_valid_0 = _check_like(fx_valid_0, "fx_valid_0", (M, k), "the outputs at initialisation on X_valid")
    with TiledKernelOperator(spec, X_train, chunks=chunks, scheduler=scheduler, dtype=dtype) as op:
        coefs = []
        for reg in regs:
            pred = gradient_descent_mse(_Instrumented(op), Y, dynamics=rule, diag_reg=reg, method=solver)
            _, coef = pred.predict(ts, f0, np.zeros((N, k)), _Coefficients(N))  # (T, N, k)
            coefs.append(np.asarray(coef, dtype=np.float64).reshape(ts.size, N, k))
        X = op.X
        edge = op.chunks[0]
    C = np.stack(coefs).transpose(2, 0, 1, 3).reshape(N, -1)  # (N, R T k): one pass for every column
    with _Runner(scheduler) as runner:
        out = TiledCrossOperator(spec, Xv, X, edge, edge, runner).matmat(C)
    out = np.asarray(out, dtype=np.float64).reshape(M, len(regs), ts.size, k).transpose(1, 2, 0, 3)
    return out if fx_valid_0 is None else out + fx_valid_0


__all__ = ["TiledFit", "default_method", "fit_tiled", "solve_tiled", "validation_path_tiled"]
