"""The estimators' only calls into :mod:`ntksolve.dynamics` and :mod:`ntksolve.dask` (private).

Everything the scikit-learn faces ask of the solvers goes through the few functions here, so
that a change of the solvers' signatures is adapted in this one module: the in-memory predictor
of gradient descent on MSE, the trajectory of training on cross-entropy
(:class:`CrossEntropyPredictor`), the trained infinite ensemble and the diagonal of its
covariance, and the tiled fit (``chunks=``) with what of it a saved model holds.
"""

from __future__ import annotations

import numbers

import numpy as np

from ntksolve import dynamics as _dynamics
from ntksolve._extras import require
from ntksolve._validation import ridge_shift
from ntksolve.dynamics import function_space as _fs
from ntksolve.dynamics import loss as _loss
from ntksolve.dynamics import mse as _mse
from ntksolve.dynamics import rules as _rules
from ntksolve.dynamics import solvers as _solvers

#: Values of the estimators' ``dynamics`` and ``method`` parameters.
DYNAMICS = _mse.DYNAMICS
METHODS = _mse.METHODS
DivergenceWarning = _dynamics.DivergenceWarning
Auto = _dynamics.Auto
Krylov = _dynamics.Krylov
resolve_rule = _rules.resolve_rule
ADAPTIVE = _rules.ADAPTIVE
resolve_solver = _solvers.resolve_solver
mse_loss = _loss.mse_loss


# ---------------------------------------------------------------------------------------------
# in memory
# ---------------------------------------------------------------------------------------------
def mse_predictor(k_train_train, y_train, *, diag_reg, dynamics, method):
    """The closed-form solver of gradient descent on MSE (one decomposition of the kernel); ``dynamics``
    is a rule object (it carries its learning rate), ``method`` a name or a solver."""
    return _dynamics.gradient_descent_mse(k_train_train, y_train, diag_reg=diag_reg, dynamics=dynamics, method=method)


class _Probe:
    """The identity as a test–train operator, with one more row of zeros for weight decay.

    Given as ``k_test_train`` (with ``fx_test_0 = 0`` and, under weight decay, ``jtheta_test`` 1 on
    the last row only), the predictor's test side is the coefficients of :func:`coefficients`.
    """

    def __init__(self, n, decay):
        self.shape = (n + 1 if decay else n, n)
        self._pad = 1 if decay else 0

    def matmat(self, V):
        V = np.asarray(V)
        return np.vstack([V, np.zeros((1, V.shape[1]), dtype=V.dtype)]) if self._pad else V


def coefficients(predictor, t, fx_train_0, jtheta_train=None):
    """What makes a prediction at time ``t`` one product: ``(coef, decay)``, ``(N, k)`` and ``(k,)`` or None.

    Every test output at ``t`` is ``f*_0 + Θ* coef + decay · J* θ_0`` (``decay`` only under weight
    decay): the test side is linear in the test–train kernel and in ``J* θ_0`` (:class:`_Probe`).
    ``fit`` computes them once, as scikit-learn's kernel models keep their dual coefficients, so
    that every call answers from them.

    Parameters
    ----------
    predictor : MSEPredictor or CrossEntropyPredictor
    t : float
    fx_train_0 : ndarray, shape (N, k)
    jtheta_train : ndarray, shape (N, k), optional
        Weight decay's ``J θ_0`` on the training inputs.
    """
    if isinstance(predictor, CrossEntropyPredictor):
        _, X, c, _ = predictor.coefficients(np.array([float(t)]), fx_train_0, jtheta_train)
        return X[0], (None if c is None else c[0])
    N, k = np.shape(fx_train_0)
    decay = jtheta_train is not None
    rows = N + 1 if decay else N
    extra = {}
    if decay:
        unit = np.zeros((rows, k), dtype=np.asarray(jtheta_train).dtype)
        unit[N] = 1.0
        extra = {"jtheta_train": jtheta_train, "jtheta_test": unit}
    _, out = predictor(
        np.array([float(t)]),
        fx_train_0,
        np.zeros((rows, k), dtype=np.asarray(fx_train_0).dtype),
        _Probe(N, decay),
        **extra,
    )
    out = out.reshape(1, rows, k)[0]
    return out[:N], (out[N] if decay else None)


class CrossEntropyPredictor:
    """The linearised network trained on softmax cross-entropy, at any finite times (private).

    Holds the regularised train kernel ``Θ + μI`` (traced, used as ``Θ ⊗ I_k``), the targets, the
    rule and the batch order. Each call runs the function-space recurrence
    (:func:`~ntksolve.dynamics.function_space.sgd_cross_entropy`) or the gradient flow
    (:func:`~ntksolve.dynamics.function_space.flow_cross_entropy`) once, up to the last time asked
    for, recording every requested time on the way.

    The test side of every step is linear in ``Θ*`` (and, with weight decay ``w``, in
    ``J* θ_0``): ``f*_t = f*_0 + Θ* X_t + c_t J* θ_0``, where ``X_t`` is the test side of the same
    run with the identity as test–train kernel (``N`` rows: "test points" that see one training
    point each) and ``c_t`` that of one more row with kernel 0 and ``J θ_0 = 1``. So the run costs
    ``O(S N² k)`` for ``S`` steps whatever the number of test points, and the test inputs then cost
    one product ``Θ* X_t`` per recorded time. The last run's coefficients are kept, so asking
    for the same times again (``predict`` after ``predict_proba``) does not run it again. Fewer
    test points than training points (and no kept run) ride along the run directly instead, at
    ``O(S M N k)``, which is then less. The estimators run it in ``fit``, at their ``time``
    (:func:`coefficients`).

    Parameters
    ----------
    k_train_train : ndarray, shape (N, N)
    targets : ndarray, shape (N, k)
        One-hot rows (``k >= 2``), or 0/1 in one column (``k = 1``, ``BCEWithLogitsLoss``).
    diag_reg : float
        Relative ridge added to the train kernel the recurrence evolves (as for MSE).
    rule : GradientFlow or GradientDescent
    batch_size : int, optional
        Minibatches of the epochs of a shuffling data loader (:func:`shuffled_batches`); a size
        of at least ``N`` is full batch, as ``DataLoader`` gives it.
    batch_seed : int, optional
        Seeds the batch order (the same for every call: a longer run extends a shorter one).
    """

    def __init__(self, k_train_train, targets, *, diag_reg, rule, batch_size=None, batch_seed=None):
        K = np.asarray(k_train_train, dtype=np.float64)
        N = K.shape[0]
        self.kernel = K + ridge_shift(diag_reg, np.diagonal(K)) * np.eye(N)
        self.targets = _check_one_hot(targets)
        self.rule = rule
        self.flow = rule.name == "continuous"
        self.batch_size = None if batch_size is None or batch_size >= N else int(batch_size)
        self.batch_seed = batch_seed
        self.n_train, self.n_outputs = N, self.targets.shape[1]
        self._last = None

    def _run(self, ts, fx_train_0, jtheta_train, k_test_train=None, fx_test_0=None, jtheta_test=None):
        """One run of the recurrence (or the flow) to ``ts[-1]``, sorted unique: a ``Trajectory``."""
        N, k = self.n_train, self.n_outputs
        f0 = np.asarray(fx_train_0, dtype=np.float64).reshape(N, k)
        test = {} if k_test_train is None else {"k_test_train": k_test_train, "fx_test_0": fx_test_0}
        if self.flow:
            return _fs.flow_cross_entropy(
                self.kernel, self.targets, f0, ts, learning_rate=self.rule.learning_rate, **test
            )
        if ts[-1] >= 2.0**62:  # an int64 would wrap; no run of that many steps could end anyway
            raise ValueError(
                f"time={ts[-1]:g} steps: the cross-entropy recurrence runs step by step (O(N² k) each); "
                "ask for fewer steps"
            )
        steps = np.rint(ts).astype(np.int64)
        batches = None
        if self.batch_size is not None and steps[-1] > 0:
            batches = _fs.shuffled_batches(N, self.batch_size, int(steps[-1]), random_state=self.batch_seed)
        if jtheta_train is not None:
            test["image_train"] = np.asarray(jtheta_train, dtype=np.float64).reshape(N, k)
            if k_test_train is not None:
                test["image_test"] = jtheta_test
        return _fs.sgd_cross_entropy(self.kernel, self.targets, f0, steps, dynamics=self.rule, batches=batches, **test)

    def _cached(self, ts, fx_train_0, jtheta_train):
        """The key of this train-side run, and its coefficients if the last call computed them."""
        key = (
            ts.tobytes(),
            np.asarray(fx_train_0).tobytes(),
            None if jtheta_train is None else np.asarray(jtheta_train).tobytes(),
        )
        return key, (self._last[1] if self._last is not None and self._last[0] == key else None)

    def coefficients(self, ts, fx_train_0, jtheta_train=None):
        """``(train, X, c, loss)`` at the sorted unique times ``ts``: ``(T, N, k)``, ``(T, N, k)``,
        ``(T, k)`` or None, ``(T,)``."""
        key, out = self._cached(ts, fx_train_0, jtheta_train)
        if out is not None:
            return out
        N, k = self.n_train, self.n_outputs
        decay = jtheta_train is not None
        # the flow's step control weighs every state entry by its own size: probe rows of the size of
        # a whole kernel row's sum (N mean diag) keep X_t's entries as large as a test output's, so
        # they do not force steps that no prediction needs
        scale = N * float(np.mean(np.diagonal(self.kernel))) if self.flow else 1.0
        scale = scale if np.isfinite(scale) and scale > 0 else 1.0
        probe = scale * np.eye(N)
        if decay:
            probe = np.vstack([probe, np.zeros((1, N))])
        unit = np.zeros((probe.shape[0], k))
        if decay:
            unit[N] = 1.0
        traj = self._run(ts, fx_train_0, jtheta_train, probe, np.zeros_like(unit), unit)
        test = traj.test.reshape(ts.size, -1, k)
        out = (traj.train.reshape(ts.size, N, k), test[:, :N] / scale, test[:, N] if decay else None, traj.train_loss)
        self._last = (key, out)
        return out

    def __call__(self, ts, fx_train_0, fx_test_0=None, k_test_train=None, *, jtheta_train=None, jtheta_test=None):
        """Train logits ``(T, N, k)`` and, with test inputs, test logits ``(T, M, k)`` at ``ts``.

        ``ts``: finite times (whole steps for discrete rules), in any order, repeats allowed.
        Arguments as :meth:`ntksolve.dynamics.MSEPredictor.predict` (``jtheta_*`` with weight decay).
        """
        uts, inverse = np.unique(np.asarray(ts, dtype=np.float64).reshape(-1), return_inverse=True)
        shape = (uts.size, self.n_train, self.n_outputs)
        _, out = self._cached(uts, fx_train_0, jtheta_train)
        if out is None and (k_test_train is None or np.shape(k_test_train)[0] < self.n_train):
            traj = self._run(uts, fx_train_0, jtheta_train, k_test_train, fx_test_0, jtheta_test)
            train = traj.train.reshape(shape)[inverse]
            return train if k_test_train is None else (train, traj.test.reshape(uts.size, -1, shape[2])[inverse])
        train, X, c, _ = self.coefficients(uts, fx_train_0, jtheta_train)
        train = train[inverse]
        if k_test_train is None:
            return train
        Ks = np.asarray(k_test_train, dtype=np.float64)
        test = np.asarray(fx_test_0, dtype=np.float64)[None] + np.matmul(Ks, X[inverse])
        if c is not None:
            test += c[inverse][:, None, :] * np.asarray(jtheta_test, dtype=np.float64)[None]
        return train, test

    def loss(self, ts, fx_train_0, *, jtheta_train=None):
        """Mean training cross-entropy ``(T,)`` at ``ts`` (``torch.nn.CrossEntropyLoss``'s)."""
        uts, inverse = np.unique(np.asarray(ts, dtype=np.float64).reshape(-1), return_inverse=True)
        _, out = self._cached(uts, fx_train_0, jtheta_train)
        return (out[3] if out is not None else self._run(uts, fx_train_0, jtheta_train).train_loss)[inverse]


def _check_one_hot(targets):
    """The targets as float64 ``(N, k)``: one-hot rows, or one column of 0/1; else ValueError."""
    Y = np.asarray(targets, dtype=np.float64)
    if (
        Y.ndim != 2
        or Y.shape[1] < 1
        or not np.all((Y == 0) | (Y == 1))
        or (Y.shape[1] > 1 and not np.all(Y.sum(axis=1) == 1))
    ):
        raise ValueError("cross-entropy targets must be one-hot rows (N, k), or 0/1 in one column (N, 1)")
    return Y


def ensemble(nngp_train_train, ntk_train_train, y_train, *, learning_rate, diag_reg):
    """The trained infinite ensemble (its own decomposition of the regularised train NTK)."""
    return _dynamics.gradient_descent_mse_ensemble(
        nngp_train_train, ntk_train_train, y_train, learning_rate, diag_reg=diag_reg
    )


def ensemble_variance(ens, t, nngp_test_train, ntk_test_train, nngp_test_diag):
    """Diagonal of the ensemble's test covariance at ``t`` (:meth:`EnsemblePredictor.variance`)."""
    return ens.variance(t, nngp_test_train, ntk_test_train, nngp_test_diag)


# ---------------------------------------------------------------------------------------------
# tiled (chunks=...)
# ---------------------------------------------------------------------------------------------
def _tiles():
    return require("ntksolve.dask", "dask", "chunks=... (kernel tiles on Dask)")


def fit_tiled(
    network,
    X,
    y_train,
    *,
    params,
    t,
    learning_rate,
    diag_reg,
    dynamics,
    fx_train_0,
    chunks,
    scheduler,
    dtype,
    method="auto",
):
    """Solve at time ``t`` from kernel tiles on Dask, never forming the train kernel.

    ``method`` is the estimator's: ``"auto"`` is the tiled default (:func:`ntksolve.dask.fit.default_method`),
    ``"krylov"`` Lanczos at any ``t`` (a solver object with its options); ``"eigh"`` and ``"expm"``
    need the kernel in memory and are refused here, before any tile is computed.
    """
    solver = check_tiled_method(method, chunks)
    return _tiles().fit_tiled(
        network,
        X,
        y_train,
        params=params,
        t=t,
        learning_rate=learning_rate,
        diag_reg=diag_reg,
        dynamics=dynamics,
        fx_train_0=fx_train_0,
        chunks=chunks,
        scheduler=scheduler,
        dtype=dtype,
        method=None if isinstance(solver, Auto) else solver,
    )


def check_tiled_method(method, chunks):
    """The solver of ``method`` for a tiled fit; ValueError for one that needs the kernel in memory."""
    solver = resolve_solver(method)
    if solver.dense_only:
        raise ValueError(
            f"method={method!r} decomposes the train kernel in memory, which chunks={chunks!r} never forms; "
            "use method='auto' (conjugate gradients or Lanczos on the tiles) or 'krylov' with chunks, "
            "or chunks=None"
        )
    return solver


def predict_tiled(fit, X, *, fx_test_0, scheduler):
    """Test outputs ``(M, k)`` of a tiled fit, at its time."""
    return fit.predict(X, fx_test_0=fx_test_0, scheduler=scheduler)


def tiled_state(fit):
    """What a saved model holds of a tiled fit: ``(attrs, arrays)``; the scheduler never.

    The test tile edge, the time solved for, the ridge ``mu`` and the scalar diagnostics; the
    coefficients ``(N, k)`` and the train outputs at ``t``. The kernel spec is the estimator's
    network and parameters, the inputs its ``X_train_``.
    """
    info = {k: v for k, v in ((k, _plain(v)) for k, v in fit.info.items()) if v is not None}
    attrs = {"t": float(fit.t), "mu": float(fit.mu), "chunks": int(fit.chunks), "info": info}
    return attrs, {"coef": fit.coef, "fx_train": fit.fx_train}


def _plain(value):
    """A JSON value for a scalar diagnostic, None for anything else (arrays of residuals)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value if isinstance(value, str) else None


def restore_tiled(network, params, X_train, attrs, coef, fx_train, *, learning_rate, diag_reg, dynamics, scheduler):
    """Rebuild the tiled fit that :func:`tiled_state` described (no kernel is computed).

    ``attrs`` has been checked by the caller: ``t``, ``mu``, ``chunks`` and ``info`` only, of the
    right types; ``coef`` and ``fx_train`` are ``(N, k)`` float64.
    """
    tiles = _tiles()
    spec = tiles.KernelSpec(network, params, kernel="ntk", trace=True)
    X = spec.prepare(X_train, "X_train")  # what fit_tiled's operator held: the same cast of the same inputs
    return tiles.TiledFit(
        spec,
        X,
        coef,
        fx_train,
        t=attrs["t"],
        learning_rate=learning_rate,
        diag_reg=diag_reg,
        dynamics=dynamics,
        mu=attrs["mu"],
        chunks=attrs["chunks"],
        info=dict(attrs["info"]),
        scheduler=scheduler,
        y_ndim=2,
    )


def validation_path_tiled(
    network,
    X_train,
    y_train,
    X_valid,
    *,
    params,
    times,
    diag_regs,
    learning_rate,
    dynamics,
    fx_train_0,
    fx_valid_0,
    chunks,
    scheduler,
    dtype,
):
    """Held-out outputs ``(R, T, M, k)`` of one fold at every ridge and time, from kernel tiles
    (:func:`ntksolve.dask.fit.validation_path_tiled`)."""
    return _tiles().fit.validation_path_tiled(
        network,
        X_train,
        y_train,
        X_valid,
        params=params,
        times=times,
        diag_regs=diag_regs,
        learning_rate=learning_rate,
        dynamics=dynamics,
        fx_train_0=fx_train_0,
        fx_valid_0=fx_valid_0,
        chunks=chunks,
        scheduler=scheduler,
        dtype=dtype,
    )
