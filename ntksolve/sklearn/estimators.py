"""scikit-learn estimators that predict how a wide network trains, from its neural tangent kernel.

:class:`NTKRegressor` and :class:`NTKClassifier` are the network of ``hidden_layer_sizes``
trained by full-batch gradient descent on the mean squared error, *without training it*: ``fit``
computes the train-train NTK and hands it to the closed-form solver
(:func:`ntksolve.dynamics.gradient_descent_mse`), which decomposes it once; ``predict`` then answers
at ``self.time`` (steps of gradient descent, ``np.inf`` = trained to convergence), and
``predict_trajectory`` / ``staged_predict`` answer a whole training run at no extra kernel cost.

``kernel="analytic"`` is the infinitely wide network: its NTK is deterministic and the output at
initialisation averages to zero over the ensemble of networks, so predictions are the mean of the
trained ensemble, with its uncertainty available through ``predict(X, return_std=True)``.
``kernel="empirical"`` is one real network of the given widths, initialised with ``random_state``:
its kernel is the NTK at initialisation and its initial outputs ``f_0`` are part of every
prediction (the linearised network, exact as the width grows).

:class:`NTKRegressorCV` picks ``time`` (early stopping, without any training) and ``diag_reg`` by
K-fold cross-validation from one decomposition per fold and ``diag_reg``, as
:class:`~sklearn.linear_model.RidgeCV` picks its ``alpha``.

Estimators save to a documented, pickle-free ``.npz`` (:meth:`NTKRegressor.save`,
:func:`ntksolve.load`); ``pickle`` and ``joblib`` also work.
"""
from __future__ import annotations

import contextlib
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import check_cv
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ntksolve import dynamics as _dynamics
from ntksolve.dynamics import mse as _mse
from ntksolve._extras import require
from ntksolve._validation import check_dtype
from ntksolve.kernels.analytic import analytic_diagonals
from ntksolve.kernels import analytic_kernels, empirical_ntk
from ntksolve.nets.mlp import ACTIVATIONS, MLP, PARAMETERIZATIONS

__all__ = ["NTKRegressor", "NTKClassifier", "NTKRegressorCV"]

KERNELS = ("analytic", "empirical")

#: Test rows per block when ``return_std`` needs the test-test NNGP: the ensemble solver returns
#: a full ``(block, block)`` covariance, of which the standard deviation needs only the diagonal.
_STD_BLOCK = 512

#: Default ``diag_regs`` grid of :class:`NTKRegressorCV` (fractions of the mean diagonal).
DEFAULT_DIAG_REGS = (0.0, 1e-3, 1e-2, 1e-1, 1.0)

#: The automatic ``times`` grid of :class:`NTKRegressorCV`: ``_AUTO_TIME_POINTS`` times log-spaced
#: between ``10**_AUTO_TIME_DECADES[0]`` and ``10**_AUTO_TIME_DECADES[1]`` in units of
#: ``k / (learning_rate * mean(diag Theta))`` steps, plus ``np.inf``. In these units a mode of
#: eigenvalue ``lambda`` has learned a fraction ``1 - exp(-lambda * u / (N mean diag))`` at ``u``:
#: the grid starts where even the top mode (``lambda <= N mean diag``) has learned < 10% and ends
#: where modes down to ``1e-7`` of the top one have converged.
_AUTO_TIME_POINTS = 49
_AUTO_TIME_DECADES = (-1.0, 7.0)


# ---------------------------------------------------------------------------------------------
# parameter validation (in fit, never in __init__)
# ---------------------------------------------------------------------------------------------
def _check_choice(value, name, valid):
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")
    return value


def _check_real(value, name, *, lower=0.0, strict=False, allow_inf=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    ok = (np.isfinite(v) or (allow_inf and v == np.inf)) and (v > lower if strict else v >= lower)
    if not ok:
        rel = ">" if strict else ">="
        raise ValueError(f"{name} must be a {'finite ' if not allow_inf else ''}number {rel} {lower:g}"
                         f"{' (np.inf allowed)' if allow_inf else ''}; got {value!r}")
    return v


def _check_time(value, name, dynamics):
    t = _check_real(value, name, allow_inf=True)
    if dynamics == "discrete" and np.isfinite(t) and t != round(t):
        raise ValueError(f"{name} must be a whole number of steps (or np.inf) with dynamics='discrete'; got {value!r}")
    return t


class _NTKBase(BaseEstimator):
    """Parameters, fitting and prediction shared by the NTK estimators (not public).

    Subclasses set ``_fitted_time`` / ``_fitted_diag_reg`` semantics; all outputs of the private
    methods are on the standardised scale the network is trained on, shape ``(T, M, k)``.
    """

    def __init__(
        self,
        hidden_layer_sizes=(512,),
        activation="relu",
        weight_std=1.0,
        bias_std=0.1,
        parameterization="ntk",
        kernel="analytic",
        time=np.inf,
        learning_rate=1.0,
        dynamics="continuous",
        method="auto",
        diag_reg=0.1,
        normalize_y=True,
        random_state=None,
        dtype="float64",
        block_size=None,
        chunks=None,
        scheduler=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.weight_std = weight_std
        self.bias_std = bias_std
        self.parameterization = parameterization
        self.kernel = kernel
        self.time = time
        self.learning_rate = learning_rate
        self.dynamics = dynamics
        self.method = method
        self.diag_reg = diag_reg
        self.normalize_y = normalize_y
        self.random_state = random_state
        self.dtype = dtype
        self.block_size = block_size
        self.chunks = chunks
        self.scheduler = scheduler

    # -- validation ------------------------------------------------------------------------
    def _validate_params_ntk(self):
        """Check every parameter; raise ValueError naming the valid values. Returns the dtype."""
        _check_choice(self.kernel, "kernel", KERNELS)
        _check_choice(self.activation, "activation", ACTIVATIONS)
        _check_choice(self.parameterization, "parameterization", PARAMETERIZATIONS)
        _check_choice(self.dynamics, "dynamics", _mse.DYNAMICS)
        _check_choice(self.method, "method", _mse.METHODS)
        if self.kernel == "analytic" and not MLP((1,), parameterization=self.parameterization).supports_analytic:
            raise ValueError(
                "kernel='analytic' (infinite width) is defined for parameterization='ntk' only: in "
                "standard parameterisation the infinite-width NTK grows without bound; use "
                "kernel='empirical' for a finite standard-parameterised network"
            )
        _check_real(self.learning_rate, "learning_rate", strict=True)
        if not isinstance(self.normalize_y, (bool, np.bool_)):
            raise ValueError(f"normalize_y must be True or False, got {self.normalize_y!r}")
        if self.block_size is not None and (
            isinstance(self.block_size, bool) or not isinstance(self.block_size, numbers.Integral) or self.block_size <= 0
        ):
            raise ValueError(f"block_size must be None or a positive int, got {self.block_size!r}")
        dt = check_dtype(self.dtype)
        self._network(1)  # MLP validates widths and the two standard deviations with clear messages
        return dt

    # -- pieces ------------------------------------------------------------------------------
    def _network(self, n_outputs):
        return MLP(self.hidden_layer_sizes, self.activation, self.weight_std, self.bias_std,
                   self.parameterization, n_outputs)

    @contextlib.contextmanager
    def _solver_warnings(self):
        """Silence DivergenceWarning for gradient flow: with ``dynamics='continuous'`` the learning
        rate only rescales time, and the flow converges at any rate (the warning concerns discrete
        steps, which the solver refuses outright when they would diverge)."""
        with warnings.catch_warnings():
            if self.dynamics == "continuous":
                warnings.simplefilter("ignore", _dynamics.DivergenceWarning)
            yield

    def _kernel(self, X1, X2=None):
        """Traced NTK between validated inputs, in the fitted dtype, shape (N1, N2)."""
        if self.kernel == "analytic":
            K = analytic_kernels(self.network_, X1, X2).ntk
            return K.astype(self._dtype, copy=False)
        return empirical_ntk(self.network_, self.params_, X1, X2, trace=True, block_size=self.block_size)

    def _f0(self, X):
        """Outputs at initialisation, shape (N, k): 0 for the infinite ensemble (its mean)."""
        if self.kernel == "analytic":
            return np.zeros((X.shape[0], self.network_.n_outputs), dtype=self._dtype)
        return self.network_.apply(self.params_, X)

    def _set_training_state(self, X, Y):
        """Store what prediction needs (no kernel yet): data, scaling, network, f_0."""
        self._dtype = check_dtype(self.dtype)
        Y = np.asarray(Y, dtype=np.float64)
        if self.normalize_y:
            mean = Y.mean(axis=0)
            std = Y.std(axis=0)
            std[std == 0.0] = 1.0  # a constant target: nothing to scale
        else:
            mean = np.zeros(Y.shape[1])
            std = np.ones(Y.shape[1])
        self._y_train_mean = mean
        self._y_train_std = std
        self.X_train_ = X
        self.y_train_ = ((Y - mean) / std).astype(self._dtype)
        self.network_ = self._network(Y.shape[1])
        if self.kernel == "empirical":
            self.params_ = self.network_.init(X.shape[1], self.random_state, self._dtype)
        else:
            self.params_ = None
        self.fx_train_0_ = self._f0(X)

    def _build_predictor(self, K, diag_reg):
        with self._solver_warnings():
            self.predictor_ = _dynamics.gradient_descent_mse(
                K, self.y_train_, self.learning_rate, diag_reg=diag_reg, dynamics=self.dynamics,
                method=self.method)
        self.diag_reg_ = float(diag_reg)
        self._ensemble_cache = None  # built on the first return_std/return_cov, then reused

    def _fit_solver(self, X):
        """Decompose the train kernel in memory; or, with ``chunks``, solve at ``self.time`` from
        kernel tiles on Dask (:func:`ntksolve.distributed.fit_tiled`), never forming the kernel."""
        chunks = getattr(self, "chunks", None)
        if chunks is None:
            self.tiled_ = None
            self._build_predictor(self._kernel(X), self.diag_reg)
            return
        tiles = require("ntksolve.dask", "dask", "chunks=... (kernel tiles on Dask)")
        with self._solver_warnings():
            self.tiled_ = tiles.fit_tiled(
                self.network_, X, self.y_train_.astype(np.float64), params=self.params_,
                t=self._time_at_predict(), learning_rate=self.learning_rate, diag_reg=self.diag_reg,
                dynamics=self.dynamics, fx_train_0=self.fx_train_0_, chunks=chunks,
                scheduler=getattr(self, "scheduler", None), dtype=self._dtype)
        self.predictor_ = None
        self.diag_reg_ = float(self.diag_reg)
        self._ensemble_cache = None

    def _require_in_memory(self, what):
        if getattr(self, "tiled_", None) is not None:
            raise ValueError(
                f"{what} needs the in-memory solver; this estimator was fitted with chunks="
                f"{self.chunks!r}, whose tiled solve answers predict and score at time={self.tiled_.t} "
                "only. Refit with chunks=None (the kernel must then fit in memory)")

    def _validated_X(self, X):
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float64)

    def _outputs(self, X, times):
        """Standardised-scale outputs at ``times``: ``(T, M, k)``; X already validated."""
        tiled = getattr(self, "tiled_", None)
        if tiled is not None:
            ts = np.asarray(times, dtype=np.float64).reshape(-1)
            if not np.all(ts == tiled.t):
                self._require_in_memory(f"prediction at times {ts.tolist()} (time was changed after fit, "
                                        "or a trajectory was asked for)")
            out = tiled.predict(X, fx_test_0=self._f0(X)).astype(self._dtype, copy=False)
            return np.repeat(out[None], ts.size, axis=0)
        Ks = self._kernel(X, self.X_train_)
        f0 = self._f0(X)
        with self._solver_warnings():
            _, out = self.predictor_(np.asarray(times, dtype=np.float64).reshape(-1), self.fx_train_0_, f0, Ks)
        return out

    def _staged_outputs(self, X, times):
        """Yield the standardised outputs ``(1, M, k)`` at each time in turn; the test kernel
        and ``f_0`` are computed once, before the first."""
        X = self._validated_X(X)
        self._require_in_memory("staged prediction")
        ts = self._check_times(times)
        Ks = self._kernel(X, self.X_train_)
        f0 = self._f0(X)
        for t in ts:
            with self._solver_warnings():
                _, out = self.predictor_(np.array([t]), self.fx_train_0_, f0, Ks)
            yield out

    def _unscale(self, F):
        return F * self._y_train_std + self._y_train_mean

    def _check_times(self, times):
        arr = np.asarray(times, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"times must be a 1-D array of steps (np.inf allowed), got shape {arr.shape}")
        for t in arr:
            _check_time(t, "times", self.dynamics)
        return arr

    def _time_at_predict(self):
        return _check_time(self.time, "time", self.dynamics)

    # -- public methods shared by regressor and classifier ------------------------------------
    def loss_curve(self, times):
        """Training loss along training, ``1/(2Nk) sum ||f_t(x_i) - y_i||^2`` (the conventions' MSE).

        Measured on the scale the network is trained on: the standardised targets when
        ``normalize_y=True`` (so 0.5 at ``t = 0`` for the analytic kernel), the original ones
        otherwise; for the classifier, on the ``+-1`` codes. With ``diag_reg > 0`` the ridge is part
        of the train kernel the solver evolves (neural-tangents' convention), so the training loss
        still tends to 0 as ``t -> inf``; the ridge shows in the test predictions.

        Parameters
        ----------
        times : array_like, shape (T,)
            Steps of gradient descent (``np.inf`` allowed).

        Returns
        -------
        loss : ndarray, shape (T,)
        """
        check_is_fitted(self)
        self._require_in_memory("loss_curve")
        ts = self._check_times(times)
        with self._solver_warnings():
            return np.atleast_1d(self.predictor_.loss(ts, self.fx_train_0_))

    def save(self, path):
        """Save the fitted estimator to ``path`` in ntksolve's pickle-free ``.npz`` format.

        The file holds arrays (training inputs, standardised targets, network parameters, ...)
        and a JSON entry ``__ntksolve__`` with the format version, the class and its parameters;
        it is written to a temporary file in the same directory and renamed, so ``path`` never
        holds a half-written model. :func:`ntksolve.load` reads it back (recomputing the kernel
        decomposition), giving identical predictions.

        Parameters
        ----------
        path : str or os.PathLike
            Destination (conventionally ending in ``.npz``; written exactly as given).
        """
        from ntksolve.sklearn.persistence import save

        save(self, path)


# ---------------------------------------------------------------------------------------------
# regressor
# ---------------------------------------------------------------------------------------------
class _NTKRegressorBase(RegressorMixin, _NTKBase):
    """Prediction methods shared by :class:`NTKRegressor` and :class:`NTKRegressorCV` (not public)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _shape_outputs(self, F):
        """(T, M, k) -> (T, M) for a 1-D training target."""
        return F[..., 0] if self._y_ndim == 1 else F

    def predict(self, X, return_std=False, return_cov=False):
        """Outputs of the trained network after ``self.time`` steps.

        Parameters
        ----------
        X : array_like, shape (M, d)
        return_std : bool, default False
            Also return the standard deviation of the trained infinite ensemble (``kernel="analytic"``,
            ``dynamics="continuous"`` only): the spread over random initialisations of networks
            trained for ``time`` steps (the NTK-GP at ``t = inf``).
        return_cov : bool, default False
            Also return the ensemble's covariance between test points (same conditions).

        Returns
        -------
        y_pred : ndarray, shape (M,) or (M, k)
        y_std : ndarray, shape (M,) or (M, k), only with ``return_std``
        y_cov : ndarray, shape (M, M) or (M, M, k), only with ``return_cov``
        """
        if return_std and return_cov:
            raise RuntimeError("At most one of return_std or return_cov can be requested.")
        X = self._validated_X(X)
        t = self._time_at_predict()
        mean = self._shape_outputs(self._unscale(self._outputs(X, [t])[0]))
        if not (return_std or return_cov):
            return mean
        ensemble = self._ensemble()
        scale2 = self._y_train_std**2
        if return_std:
            var = np.empty(X.shape[0])
            for i in range(0, X.shape[0], _STD_BLOCK):
                Xb = X[i : i + _STD_BLOCK]
                cross = analytic_kernels(self.network_, Xb, self.X_train_)
                nngp_bb = analytic_kernels(self.network_, Xb).nngp
                _, cov = ensemble(t, cross.nngp, cross.ntk, nngp_bb, compute_cov=True)
                var[i : i + _STD_BLOCK] = np.diagonal(cov)
            std = np.sqrt(np.maximum(var, 0.0))[:, None] * np.sqrt(scale2)
            return mean, (std[:, 0] if self._y_ndim == 1 else std)
        cross = analytic_kernels(self.network_, X, self.X_train_)
        _, cov = ensemble(t, cross.nngp, cross.ntk, analytic_kernels(self.network_, X).nngp, compute_cov=True)
        cov = cov[:, :, None] * scale2
        return mean, (cov[:, :, 0] if self._y_ndim == 1 else cov)

    def _ensemble(self):
        """The trained infinite ensemble on the training data: one more decomposition, made on
        the first call after ``fit`` and reused by every later one."""
        self._require_in_memory("return_std/return_cov")
        if self.kernel != "analytic":
            raise NotImplementedError(
                "return_std/return_cov describe the ensemble of infinitely wide networks; they need "
                "kernel='analytic' (one empirical network has no ensemble spread to report)")
        if self.dynamics != "continuous":
            raise NotImplementedError(
                "return_std/return_cov are available for dynamics='continuous' (the ensemble solver "
                "models gradient flow); for discrete steps use the mean, or continuous time eta*t")
        cached = getattr(self, "_ensemble_cache", None)
        if cached is not None:
            return cached
        pair = analytic_kernels(self.network_, self.X_train_)
        self._ensemble_cache = _dynamics.gradient_descent_mse_ensemble(
            pair.nngp, pair.ntk, self.y_train_.astype(np.float64), self.learning_rate, diag_reg=self.diag_reg_)
        return self._ensemble_cache

    def predict_trajectory(self, X, times):
        """Outputs at every time of a training run, from one kernel evaluation.

        Parameters
        ----------
        X : array_like, shape (M, d)
        times : array_like, shape (T,)
            Steps of gradient descent (``np.inf`` allowed; integers for discrete dynamics).

        Returns
        -------
        y_traj : ndarray, shape (T, M) or (T, M, k)
        """
        X = self._validated_X(X)
        ts = self._check_times(times)
        return self._shape_outputs(self._unscale(self._outputs(X, ts)))

    def staged_predict(self, X, times):
        """Yield :meth:`predict` at each of ``times`` in turn, computing the test kernel once.

        Parameters
        ----------
        X : array_like, shape (M, d)
        times : array_like, shape (T,)

        Yields
        ------
        y_pred : ndarray, shape (M,) or (M, k)
        """
        for out in self._staged_outputs(X, times):
            yield self._shape_outputs(self._unscale(out))[0]

class NTKRegressor(_NTKRegressorBase):
    """A wide network trained by gradient descent on MSE, predicted from its neural tangent kernel.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (512,)
        Hidden widths. The analytic kernel uses only their number (the depth ``L``).
    activation : str, default "relu"
        One of ``ntksolve.ACTIVATIONS``.
    weight_std : float, default 1.0
        ``sigma_w > 0``.
    bias_std : float, default 0.1
        ``sigma_b >= 0``. Positive by default: without biases a ReLU network's kernel depends only
        on angles and norms through the origin, which fits data poorly.
    parameterization : {"ntk", "standard"}, default "ntk"
        ``"standard"`` requires ``kernel="empirical"``.
    kernel : {"analytic", "empirical"}, default "analytic"
        ``"analytic"``: the infinitely wide network (deterministic; predictions are the trained
        ensemble's mean, ``f_0 = 0``). ``"empirical"``: one network of these widths initialised
        with ``random_state``; its NTK at initialisation and its ``f_0`` make the prediction. With
        several outputs the traced kernel (mean over outputs) is used, exact at infinite width.
    time : float, default np.inf
        Steps of gradient descent at which :meth:`predict` answers; ``np.inf`` is convergence
        (kernel regression). It may be changed after ``fit`` without refitting. The loss is a
        mean over all ``N k`` target entries (``CONVENTIONS.md``), so with ``k`` outputs every
        mode moves ``k`` times slower per step than with one.
    learning_rate : float, default 1.0
        ``eta``. With ``dynamics="continuous"`` it only sets the unit of time (``eta * t``).
    dynamics : {"continuous", "discrete"}, default "continuous"
        Gradient flow, or exact discrete steps (integer ``time``; a learning rate above the
        critical ``2Nk / lambda_max`` is then an error in ``fit``).
    method : {"auto", "eigh", "expm", "krylov"}, default "auto"
        The solver's method (:func:`ntksolve.dynamics.gradient_descent_mse`).
    diag_reg : float, default 0.1
        Ridge ``diag_reg * mean(diag Theta)`` added to the train kernel; 0 is the unregularised
        network (which interpolates at ``t = inf``). Tune it (or ``time``) with
        :class:`NTKRegressorCV`.
    normalize_y : bool, default True
        Train on standardised targets (per output), as ``GaussianProcessRegressor`` does, so that
        an uncentred target does not fight the zero-mean network at initialisation; outputs and
        standard deviations are returned on the original scale.
    random_state : int, RandomState instance or None, default None
        Seeds the empirical network's initialisation (unused by the analytic kernel).
    dtype : {"float64", "float32"}, default "float64"
        Precision of the kernels and of the solver.
    block_size : int, optional
        Rows per block of the empirical NTK (memory control); see :func:`ntksolve.empirical_ntk`.
    chunks : int or tuple, optional
        Beyond one machine's memory (``pip install 'ntksolve[dask]'``): the train kernel is never
        formed; its tiles (this edge, or per-axis sizes) are computed on Dask and the model is
        solved at ``time`` by Nystrom-preconditioned conjugate gradients (``t = inf``) or Lanczos
        (finite ``t``), test predictions streamed tile by tile. Only ``predict``/``score`` at the
        fitted ``time`` are then available. See :func:`ntksolve.distributed.fit_tiled`.
    scheduler : str, dask.distributed.Client or None, default None
        With ``chunks``: ``None`` (the current Dask client, else threads), ``"threads"``,
        ``"processes"``, ``"sync"``, a client, or a scheduler address such as ``"tcp://host:8786"``:
        moving from a laptop to a cluster changes this one argument.

    Attributes
    ----------
    X_train_ : ndarray, shape (N, d)
    y_train_ : ndarray, shape (N, k)
        Training targets on the trained (standardised) scale.
    network_ : MLP
    params_ : list of (W, b) or None
        The empirical network's parameters (None for the analytic kernel).
    fx_train_0_ : ndarray, shape (N, k)
        Outputs at initialisation on the training inputs (zeros for the analytic kernel).
    predictor_ : ntksolve.dynamics.MSEPredictor or None
        The solver, holding the one decomposition of the train kernel (None with ``chunks``).
    tiled_ : ntksolve.distributed.TiledFit or None
        The tiled solve at ``time`` (only with ``chunks``).
    diag_reg_ : float
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string column names.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = NTKRegressor(hidden_layer_sizes=(512, 512)).fit(X[:300], y[:300])
    >>> reg.predict_trajectory(X[300:], [0, 10, 100, np.inf]).shape
    (4, 142)
    """

    def fit(self, X, y):
        """Compute the train kernel and its decomposition (nothing per time).

        Parameters
        ----------
        X : array_like, shape (N, d)
        y : array_like, shape (N,) or (N, k)

        Returns
        -------
        self
        """
        self._validate_params_ntk()
        _check_real(self.diag_reg, "diag_reg")
        _check_time(self.time, "time", self.dynamics)
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        self._y_ndim = y.ndim
        self._set_training_state(X, y.reshape(y.shape[0], -1))
        self._fit_solver(X)
        return self

# ---------------------------------------------------------------------------------------------
# classifier
# ---------------------------------------------------------------------------------------------
class NTKClassifier(ClassifierMixin, _NTKBase):
    """A wide network trained by gradient descent on MSE to one-hot targets, as a classifier.

    The labels are coded as in :class:`~sklearn.linear_model.RidgeClassifier`: ``+1`` for the
    sample's class and ``-1`` for the others (one column for two classes: ``+1`` for
    ``classes_[1]``), and the network is trained on them with the same mean squared error as
    :class:`NTKRegressor` (same parameters, see there; ``normalize_y`` standardises each column).
    ``predict`` takes the largest output (two classes: its sign).

    There is no ``predict_proba``: the outputs of a network trained on MSE are not probabilities
    (they are not confined to [0, 1], nor calibrated), and inventing a squashing would misreport
    them. Use :class:`~sklearn.calibration.CalibratedClassifierCV` on :meth:`decision_function` if
    probabilities are needed.

    Parameters
    ----------
    hidden_layer_sizes, activation, weight_std, bias_std, parameterization, kernel, time,
    learning_rate, dynamics, method, diag_reg, normalize_y, random_state, dtype, block_size
        As :class:`NTKRegressor`.

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
        Labels of any type, sorted.
    X_train_, y_train_, network_, params_, fx_train_0_, predictor_, diag_reg_, n_features_in_
        As :class:`NTKRegressor` (``y_train_`` holds the standardised ``+-1`` codes).
    """

    def fit(self, X, y):
        """Compute the train kernel and its decomposition for the one-hot (``+-1``) targets.

        Parameters
        ----------
        X : array_like, shape (N, d)
        y : array_like, shape (N,)
            Class labels (any type).

        Returns
        -------
        self
        """
        self._validate_params_ntk()
        _check_real(self.diag_reg, "diag_reg")
        _check_time(self.time, "time", self.dynamics)
        X, y = validate_data(self, X, y, dtype=np.float64)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"NTKClassifier supports binary and multiclass targets, got {kind!r}")
        binarizer = LabelBinarizer(neg_label=-1, pos_label=1)
        Y = binarizer.fit_transform(y)
        self.classes_ = binarizer.classes_
        if self.classes_.size < 2:
            raise ValueError(
                f"NTKClassifier needs samples of at least 2 classes in the data, but it contains only "
                f"one class: {self.classes_[0]!r}")
        self._set_training_state(X, Y.astype(np.float64))
        self._fit_solver(X)
        return self

    def _decision(self, F):
        """(..., M, k) standardised outputs -> decision values on the +-1 scale, binary squeezed."""
        D = self._unscale(F)
        return D[..., 0] if D.shape[-1] == 1 else D

    def decision_function(self, X):
        """Network outputs after ``self.time`` steps, on the ``+-1`` code scale.

        Parameters
        ----------
        X : array_like, shape (M, d)

        Returns
        -------
        scores : ndarray, shape (M,) for two classes (positive means ``classes_[1]``), else (M, n_classes)
        """
        X = self._validated_X(X)
        return self._decision(self._outputs(X, [self._time_at_predict()])[0])

    def predict(self, X):
        """Class of the largest output (two classes: the sign of the single output).

        Parameters
        ----------
        X : array_like, shape (M, d)

        Returns
        -------
        y_pred : ndarray, shape (M,)
        """
        D = self.decision_function(X)
        if D.ndim == 1:
            return self.classes_[(D > 0).astype(int)]
        return self.classes_[np.argmax(D, axis=1)]

    def decision_trajectory(self, X, times):
        """Decision values at every time of a training run, from one kernel evaluation.

        Parameters
        ----------
        X : array_like, shape (M, d)
        times : array_like, shape (T,)

        Returns
        -------
        scores : ndarray, shape (T, M) for two classes, else (T, M, n_classes)
        """
        X = self._validated_X(X)
        return self._decision(self._outputs(X, self._check_times(times)))

    def staged_decision_function(self, X, times):
        """Yield :meth:`decision_function` at each of ``times`` (test kernel computed once).

        Parameters
        ----------
        X : array_like, shape (M, d)
        times : array_like, shape (T,)

        Yields
        ------
        scores : ndarray, shape (M,) or (M, n_classes)
        """
        for out in self._staged_outputs(X, times):
            yield self._decision(out[0])

    def staged_predict(self, X, times):
        """Yield :meth:`predict` at each of ``times`` (test kernel computed once).

        Parameters
        ----------
        X : array_like, shape (M, d)
        times : array_like, shape (T,)

        Yields
        ------
        y_pred : ndarray, shape (M,)
        """
        for D in self.staged_decision_function(X, times):
            yield self.classes_[(D > 0).astype(int)] if D.ndim == 1 else self.classes_[np.argmax(D, axis=1)]


# ---------------------------------------------------------------------------------------------
# cross-validated regressor
# ---------------------------------------------------------------------------------------------
class NTKRegressorCV(_NTKRegressorBase):
    """:class:`NTKRegressor` that chooses ``time`` and ``diag_reg`` by K-fold cross-validation.

    The kernel of all the data is computed once and sliced per fold; each fold's train kernel is
    decomposed once per ``diag_reg`` (the solver's ``eigh``), after which every time of the grid
    costs two matrix products: a grid of 50 times costs about one fit. This is early stopping
    chosen by validation error, without any training, the way :class:`~sklearn.linear_model.RidgeCV`
    chooses ``alpha``. The score is the mean squared error on the original scale (averaged over
    outputs); the winner is refitted on all the data (reusing the kernel).

    Parameters
    ----------
    times : array_like of shape (T,) or None, default None
        Candidate times (steps; ``np.inf`` allowed). None: 49 log-spaced times spanning the
        kernel's spectrum (in units of ``k / (learning_rate * mean(diag Theta))`` steps, from
        ``1e-1`` to ``1e7``; rounded up to whole steps for discrete dynamics) plus ``np.inf``.
    diag_regs : array_like of shape (R,), default (0, 1e-3, 1e-2, 1e-1, 1)
        Candidate ridges (each costs one decomposition per fold).
    cv : int, cross-validation generator or iterable, default 5
        As in scikit-learn (:func:`~sklearn.model_selection.check_cv`; ``KFold`` for an int).
    hidden_layer_sizes, activation, weight_std, bias_std, parameterization, kernel,
    learning_rate, dynamics, method, normalize_y, random_state, dtype, block_size
        As :class:`NTKRegressor`.

    Attributes
    ----------
    time_ : float
        The chosen time (used by :meth:`predict`).
    diag_reg_ : float
        The chosen ridge.
    times_ : ndarray, shape (T,)
        The grid of times searched.
    diag_regs_ : ndarray, shape (R,)
    mse_path_ : ndarray, shape (R, T, n_folds)
        Validation MSE of every ``(diag_reg, time)`` on every fold.
    cv_results_ : dict of ndarrays, each of shape (R * T,)
        ``param_diag_reg``, ``param_time``, ``mean_test_score`` (negative MSE, higher is better),
        ``std_test_score``, ``rank_test_score``, ``split{i}_test_score``, ``params``
        (``pandas.DataFrame(cv_results_)`` tabulates it, as for ``GridSearchCV``).
    best_score_ : float
        ``-min`` mean validation MSE.
    X_train_, y_train_, network_, params_, fx_train_0_, predictor_, n_features_in_
        As :class:`NTKRegressor`, for the refitted model.
    """

    def __init__(
        self,
        times=None,
        diag_regs=DEFAULT_DIAG_REGS,
        cv=5,
        hidden_layer_sizes=(512,),
        activation="relu",
        weight_std=1.0,
        bias_std=0.1,
        parameterization="ntk",
        kernel="analytic",
        learning_rate=1.0,
        dynamics="continuous",
        method="auto",
        normalize_y=True,
        random_state=None,
        dtype="float64",
        block_size=None,
    ):
        self.times = times
        self.diag_regs = diag_regs
        self.cv = cv
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.weight_std = weight_std
        self.bias_std = bias_std
        self.parameterization = parameterization
        self.kernel = kernel
        self.learning_rate = learning_rate
        self.dynamics = dynamics
        self.method = method
        self.normalize_y = normalize_y
        self.random_state = random_state
        self.dtype = dtype
        self.block_size = block_size

    def _time_at_predict(self):
        return self.time_

    def _auto_times(self, K, k):
        unit = k / (float(self.learning_rate) * float(np.mean(np.diagonal(K))))
        ts = unit * np.logspace(*_AUTO_TIME_DECADES, _AUTO_TIME_POINTS)
        if self.dynamics == "discrete":
            ts = np.unique(np.ceil(ts))
        return np.concatenate([ts, [np.inf]])

    def fit(self, X, y):
        """Cross-validate ``(diag_reg, time)`` on one kernel of all the data, then refit.

        Parameters
        ----------
        X : array_like, shape (N, d)
        y : array_like, shape (N,) or (N, k)

        Returns
        -------
        self
        """
        self._validate_params_ntk()
        regs = np.asarray(self.diag_regs, dtype=np.float64).reshape(-1)
        if regs.size == 0:
            raise ValueError("diag_regs must contain at least one value")
        for r in regs:
            _check_real(r, "diag_regs")
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        self._y_ndim = y.ndim
        Y = y.reshape(y.shape[0], -1).astype(np.float64)
        # the network (and, for the empirical kernel, its parameters and f_0) of the final model
        self._set_training_state(X, Y)
        K = self._kernel(X)
        f0 = self.fx_train_0_
        if self.times is None:
            ts = self._auto_times(K, Y.shape[1])
        else:
            ts = self._check_times(np.asarray(self.times, dtype=np.float64).reshape(-1))
            if ts.size == 0:
                raise ValueError("times must contain at least one value")
        splits = list(check_cv(self.cv).split(X, y))
        mse = np.empty((regs.size, ts.size, len(splits)))
        for f, (tr, te) in enumerate(splits):
            Ytr = Y[tr]
            if self.normalize_y:
                mean, std = Ytr.mean(axis=0), Ytr.std(axis=0)
                std[std == 0.0] = 1.0
            else:
                mean, std = np.zeros(Y.shape[1]), np.ones(Y.shape[1])
            Ytr_n = ((Ytr - mean) / std).astype(self._dtype)
            K_tr = K[np.ix_(tr, tr)]
            K_te = K[np.ix_(te, tr)]
            for r, reg in enumerate(regs):
                with self._solver_warnings():
                    pred = _dynamics.gradient_descent_mse(K_tr, Ytr_n, self.learning_rate, diag_reg=reg,
                                                          dynamics=self.dynamics, method=self.method)
                    _, out = pred(ts, f0[tr], f0[te], K_te)  # (T, M, k): all times from one decomposition
                err = out * std + mean - Y[te]
                mse[r, :, f] = np.mean(err * err, axis=(1, 2))
        mean_mse = mse.mean(axis=2)
        r_best, t_best = np.unravel_index(np.argmin(mean_mse), mean_mse.shape)
        self.times_ = ts
        self.diag_regs_ = regs
        self.mse_path_ = mse
        self.time_ = float(ts[t_best])
        self.best_score_ = -float(mean_mse[r_best, t_best])
        self.cv_results_ = self._cv_results(regs, ts, mse)
        self._build_predictor(K, float(regs[r_best]))
        return self

    @staticmethod
    def _cv_results(regs, ts, mse):
        R, T, F = mse.shape
        scores = -mse.reshape(R * T, F)
        mean = scores.mean(axis=1)
        order = np.argsort(-mean, kind="stable")
        rank = np.empty(R * T, dtype=np.int32)
        rank[order] = np.arange(1, R * T + 1)
        res = {
            "param_diag_reg": np.repeat(regs, T),
            "param_time": np.tile(ts, R),
            "mean_test_score": mean,
            "std_test_score": scores.std(axis=1),
            "rank_test_score": rank,
        }
        for f in range(F):
            res[f"split{f}_test_score"] = scores[:, f]
        res["params"] = [{"diag_reg": float(r), "time": float(t)} for r in regs for t in ts]
        return res
