"""What the NTK estimators share: their parameters, fitting, prediction and fitted state (private).

The parameters are declared once, with their documentation, in :mod:`ntksolve.sklearn._params`.

A fitted estimator holds its state in plain attributes; what of it a saved model holds, and how
it is restored, is its base :class:`ntksolve.sklearn._state._FittedState`.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from ntksolve._config import FIT_PEAK_KERNELS
from ntksolve._validation import check_dtype, check_memory, refuse_zero_rate
from ntksolve.kernels import analytic_kernels, empirical_ntk
from ntksolve.nets.forward_mode import own_parameter_image
from ntksolve.nets.layers import check_activation
from ntksolve.nets.mlp import MLP, PARAMETERIZATIONS
from ntksolve.sklearn import _network, _solve, persistence
from ntksolve.sklearn._checks import (  # the checks, which the estimators import from here too
    _check_choice,
    _check_real,
    _check_time,
    _standardisation,
    _warn_unused_widths,
)
from ntksolve.sklearn._params import MODEL_PARAMETERS, SHARED_PARAMETERS, keyword_init
from ntksolve.sklearn._state import _FittedState

KERNELS = ("analytic", "empirical")

#: Rows per block of the kernel whose diagonal gives ``diag Θ(X, X)`` (:meth:`_NTKBase._kernel_diagonal`).
_DIAGONAL_BLOCK = 64


class _NTKBase(_FittedState, BaseEstimator):
    """Parameters, fitting, prediction and state shared by the NTK estimators (not public).

    All outputs of the private methods are on the standardised scale the network is trained
    on, shape ``(T, M, k)``. Subclasses add their targets' coding and their fitted extras to the
    state through :meth:`_state_extras` / :meth:`_restore_extras`.
    """

    __init__ = keyword_init(MODEL_PARAMETERS, SHARED_PARAMETERS)

    #: Whether ``chunks`` (the tiled solve) is a parameter of the estimator.
    _tiled_capable = True

    # -- validation ------------------------------------------------------------------------
    def _validate_params_ntk(self):
        """Check the shared parameters; raise ValueError naming the valid values. Returns the dtype."""
        _network.check_network(self.network)  # a TypeError naming what is accepted
        imported = self.network is not None  # it replaces the architecture and kernel parameters
        if not imported:
            _check_choice(self.kernel, "kernel", KERNELS)
            check_activation(self.activation)
            _check_choice(self.parameterization, "parameterization", PARAMETERIZATIONS)
        rule = self._rule()
        if rule.needs_parameters and self._kernel_kind() != "empirical":
            raise ValueError(
                f"dynamics={rule!r}: weight decay pulls the parameters towards zero, so the outputs depend on the "
                f"network's own J θ_0, and kernel={self.kernel!r} (infinite width) has no parameters; use "
                "kernel='empirical' (its network supplies J θ_0), weight_decay=0, or "
                "ntksolve.gradient_descent_mse(...) with jtheta_train/jtheta_test for a network of your own"
            )
        if getattr(self, "chunks", None) is not None:  # refused before any tile, or any network, is made
            self._plain_rule("chunks=... (the tiled solve)")
        if isinstance(self.method, str):
            _check_choice(self.method, "method", _solve.METHODS)
        _solve.resolve_solver(self.method)  # a solver object, or a TypeError naming what is accepted
        if self._mse_solver() is not None:  # a rule it cannot follow: refused here, before any kernel
            self._mse_solver().check_rule(rule)
        if (
            self._kernel_kind() == "analytic"
            and not MLP((1,), parameterization=self.parameterization).supports_analytic
        ):
            raise ValueError(
                "kernel='analytic' (infinite width) is defined for parameterization='ntk' only: in "
                "standard parameterisation the infinite-width NTK grows without bound; use "
                "kernel='empirical' for a finite standard-parameterised network"
            )
        if not isinstance(self.normalize_y, (bool, np.bool_)):
            raise ValueError(f"normalize_y must be True or False, got {self.normalize_y!r}")
        if self.block_size is not None and (
            isinstance(self.block_size, bool)
            or not isinstance(self.block_size, numbers.Integral)
            or self.block_size <= 0
        ):
            raise ValueError(f"block_size must be None or a positive int, got {self.block_size!r}")
        dt = check_dtype(self.dtype)
        if not imported:
            self._network(1)  # MLP validates widths and the two standard deviations with clear messages
        return dt

    def _check_params(self):
        """Every parameter as ``fit`` needs it (also run on a loaded model's parameters)."""
        self._validate_params_ntk()
        _check_real(self.diag_reg, "diag_reg")
        self._time(self.time, "time")
        if self.chunks is not None:  # the search checks its own (_GridSearch._check_tiled_search)
            _solve.check_tiled_method(self.method, self.chunks)

    def _time(self, value, name):
        """One time, checked against the rule and the solver (the classifier adds its loss's condition)."""
        t = _check_time(value, name, self._rule())
        if self._mse_solver() is not None:
            self._mse_solver().check_time(t, name)
        return t

    def _mse_solver(self):
        """The solver of ``method`` for the squared loss's closed form; None for cross-entropy, which
        runs its own recurrence."""
        if getattr(self, "loss", None) in ("log_loss", "cross_entropy"):
            return None
        return _solve.resolve_solver(self.method)

    def _rule(self):
        """The training rule: ``dynamics`` (a name, with ``learning_rate``, default 1.0) or a rule object."""
        if isinstance(self.dynamics, str) and self.dynamics.strip().lower() not in _solve.ADAPTIVE:
            _check_choice(self.dynamics, "dynamics", _solve.DYNAMICS)
            if self.learning_rate is not None:
                refuse_zero_rate(self.learning_rate, "learning_rate", "must be a finite number > 0")
                _check_real(self.learning_rate, "learning_rate", strict=True)
        return _solve.resolve_rule(self.dynamics, self.learning_rate)

    def _plain_rule(self, what):
        """``(name, η)`` of a constant-rate rule without momentum, for the solvers that take only those."""
        rule = self._rule()
        if not (rule.name == "continuous" or rule.plain):
            raise ValueError(
                f"{what} supports gradient flow and plain constant-rate descent only, not {rule!r}; "
                "use chunks=None (the in-memory solver runs every rule)"
            )
        return rule.name, rule.learning_rate

    # -- pieces ------------------------------------------------------------------------------
    def _kernel_kind(self):
        """``"analytic"`` or ``"empirical"``: ``kernel``, or the empirical NTK of a given ``network``."""
        return "empirical" if self.network is not None else self.kernel

    def _network(self, n_outputs):
        return MLP(
            self.hidden_layer_sizes, self.activation, self.weight_std, self.bias_std, self.parameterization, n_outputs
        )

    @contextlib.contextmanager
    def _solver_warnings(self):
        """Silence DivergenceWarning for gradient flow: with ``dynamics='continuous'`` the learning
        rate only rescales time, and the flow converges at any rate (the warning concerns discrete
        steps, which the solver refuses outright when they would diverge)."""
        with warnings.catch_warnings():
            if self._rule().name == "continuous":
                warnings.simplefilter("ignore", _solve.DivergenceWarning)
            yield

    def _kernel(self, X1, X2=None):
        """Traced NTK between validated inputs, in the fitted dtype, shape (N1, N2)."""
        if self._kernel_kind() == "analytic":
            return analytic_kernels(self.network_, X1, X2).ntk.astype(self._dtype, copy=False)
        return empirical_ntk(self.network_, self.params_, X1, X2, trace=True, block_size=self.block_size)

    def _f0(self, X):
        """Outputs at initialisation, shape (N, k): 0 for the infinite ensemble (its mean)."""
        if self._kernel_kind() == "analytic":
            return np.zeros((X.shape[0], self.network_.n_outputs), dtype=self._dtype)
        return self.network_.apply(self.params_, X)

    def _normalizes_y(self, normalize=None):
        """Whether the targets are standardised: ``normalize`` (default ``normalize_y``), except for a
        given ``network``, whose outputs ``f_0`` are on the targets' own scale (its training is
        predicted as it is)."""
        return bool(self.normalize_y if normalize is None else normalize) and self.network is None

    def _jtheta(self, X):
        """``J θ_0`` of the empirical network on validated inputs, shape (N, k) (weight decay's term)."""
        return own_parameter_image(self.network_, self.params_, X.astype(self._dtype, copy=False))

    def _decay_arguments(self, X=None):
        """The predictor's ``jtheta_train`` (and, for test inputs ``X``, ``jtheta_test``) under weight
        decay; nothing without it."""
        if not self._rule().needs_parameters:
            return {}
        out = {"jtheta_train": self._jtheta(self.X_train_)}
        if X is not None:
            out["jtheta_test"] = self._jtheta(X)
        return out

    def _set_training_state(self, X, Y, normalize=None):
        """Store what prediction needs (no kernel yet): data, scaling, network, f_0.

        ``normalize``: standardise the targets (default ``self.normalize_y``). Every ``fit`` calls it
        once, so that is where :class:`AnalyticWidthWarning` is issued (``load`` does not warn)."""
        _warn_unused_widths(self)
        self._remember_params()
        self._dtype = check_dtype(self.dtype)
        Y = np.asarray(Y, dtype=np.float64)
        mean, std = _standardisation(Y, self._normalizes_y(normalize))
        self._y_train_mean = mean
        self._y_train_std = std
        self._check_fit_memory(X.shape[0])
        self.X_train_ = X
        self.y_train_ = ((Y - mean) / std).astype(self._dtype)
        if self.network is not None:
            self.network_, self.params_ = _network.read_network(self.network, X, Y, self._dtype, self.random_state)
        else:
            self.network_ = self._network(Y.shape[1])
            if self.kernel == "empirical":
                self.params_ = self.network_.init(X.shape[1], self.random_state, self._dtype)
            else:
                self.params_ = None
        self.fx_train_0_ = self._f0(X)

    #: The entry of ``_config.FIT_PEAK_KERNELS`` that sizes this estimator's fit (else its kernel's).
    _fit_peak = None

    def _check_fit_memory(self, n):
        """MemoryError before any kernel work if the in-memory fit's peak (several N x N arrays,
        ``_config.FIT_PEAK_KERNELS``) would not fit in the memory this process may use."""
        if getattr(self, "chunks", None) is not None:
            return  # the tiled fit never forms the kernel
        check_memory(
            (n, n),
            self._dtype,
            what=f"in-memory fit of {type(self).__name__} on {n} points",
            copies=FIT_PEAK_KERNELS[
                self._fit_peak
                or ("log_loss" if getattr(self, "loss", None) in ("log_loss", "cross_entropy") else self._kernel_kind())
            ],
            hint="fit with chunks=... (kernel tiles on Dask: pip install 'ntksolve[dask]'), or on fewer points",
        )

    def _solver(self, K, y, diag_reg, *, shared=False):
        """The in-memory solver of these parameters on the train kernel ``K`` and targets ``y``.

        ``shared``: the decomposition will serve several ridges (:meth:`MSEPredictor.with_diag_reg`),
        so ``method="auto"`` takes the eigendecomposition, which they share, over Krylov, which
        they would each repeat.
        """
        method = _solve.resolve_solver(self.method)
        method = "eigh" if shared and isinstance(method, _solve.Auto) else method
        with self._solver_warnings():
            return _solve.mse_predictor(K, y, diag_reg=diag_reg, dynamics=self._rule(), method=method)

    def _build_predictor(self, K, diag_reg):
        self.predictor_ = self._solver(K, self.y_train_, diag_reg)
        self.tiled_ = None
        self.diag_reg_ = float(diag_reg)
        self._ensemble_cache = None  # built on the first return_std/return_cov, then reused

    def _solve_at_time(self):
        """``fit``'s last step, after :meth:`_build_predictor` (once the caller's kernel is released):
        solve at ``time`` (the decomposition, or the Krylov solve or the cross-entropy run, happens
        here), keeping the coefficients that make every later prediction at that time one
        test–train product (:func:`_solve.coefficients`); a solver's error surfaces in ``fit``,
        not at the first ``predict``."""
        t = self._time_at_predict()
        with self._solver_warnings():
            coef, decay = _solve.coefficients(self.predictor_, t, self.fx_train_0_, **self._decay_arguments())
        self._fitted_at = (t, coef, decay)

    def _fit_solver(self, X, diag_reg):
        """Decompose the train kernel in memory and solve at ``time``; or, with ``chunks``, solve at
        ``time`` from kernel tiles on Dask (:func:`ntksolve.dask.fit_tiled`), never forming the kernel."""
        if self.chunks is None:
            self._build_predictor(self._kernel(X), diag_reg)
            self._solve_at_time()
            return
        dynamics, rate = self._plain_rule("chunks=... (the tiled solve)")
        with self._solver_warnings():
            self.tiled_ = _solve.fit_tiled(
                self.network_,
                X,
                self.y_train_.astype(np.float64),
                params=self.params_,
                t=self._time_at_predict(),
                learning_rate=rate,
                diag_reg=diag_reg,
                dynamics=dynamics,
                fx_train_0=self.fx_train_0_,
                chunks=self.chunks,
                scheduler=self.scheduler,
                dtype=self._dtype,
                method=self.method,  # with its options (a Krylov tol, a CG preconditioner)
            )
        self.predictor_ = None
        self._fitted_at = None
        self.diag_reg_ = float(diag_reg)
        self._ensemble_cache = None

    def _kernel_diagonal(self, X):
        """``diag Θ(X, X)`` of validated inputs, shape (M,): the diagonals of :meth:`_kernel` on
        blocks of rows (whatever the kernel; a block costs ``_DIAGONAL_BLOCK`` times the diagonal)."""
        return np.concatenate(
            [np.diagonal(self._kernel(X[i : i + _DIAGONAL_BLOCK])) for i in range(0, X.shape[0], _DIAGONAL_BLOCK)]
        )

    def _require_in_memory(self, what):
        """The one check of what a tiled fit cannot answer; called before any work is done."""
        tiled = getattr(self, "tiled_", None)
        if tiled is not None:
            answers = "predict, score" + (", decision_function" if hasattr(self, "decision_function") else "")
            raise ValueError(
                f"{what} needs the in-memory solver, but this {type(self).__name__} was fitted with "
                f"chunks={self.chunks!r}, whose tiled solve holds the model at time={tiled.t:g} only "
                f"({answers} there). Refit with chunks=None (the train kernel must then fit in memory), "
                "or refit with chunks and time set to each time you need"
            )

    def _validated_X(self, X):
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float64)

    def _outputs(self, X, times, k_test_train=None):
        """Standardised-scale outputs at ``times``: ``(T, M, k)``; X already validated.

        ``k_test_train``: the test-train NTK when the caller has it already (in the fitted dtype).
        """
        ts = np.asarray(times, dtype=np.float64).reshape(-1)
        tiled = self.tiled_
        if tiled is not None:
            if not np.all(ts == tiled.t):
                self._require_in_memory(
                    f"prediction at times {ts.tolist()} (time was changed after fit, or a trajectory was asked for)"
                )
            out = _solve.predict_tiled(tiled, X, fx_test_0=self._f0(X), scheduler=self.scheduler)
            return np.repeat(out.astype(self._dtype, copy=False)[None], ts.size, axis=0)
        Ks = self._kernel(X, self.X_train_) if k_test_train is None else k_test_train
        fitted = getattr(self, "_fitted_at", None)
        if fitted is not None and np.all(ts == fitted[0]):  # fit's time: one product with its coefficients
            out = self._f0(X) + Ks @ fitted[1]
            if fitted[2] is not None:
                out = out + fitted[2] * self._jtheta(X)
            return np.repeat(out[None], ts.size, axis=0)
        with self._solver_warnings():
            _, out = self.predictor_(ts, self.fx_train_0_, self._f0(X), Ks, **self._decay_arguments(X))
        return out

    def _staged_outputs(self, X, times):
        """Yield the standardised outputs ``(1, M, k)`` at each time in turn; the test kernel
        and ``f_0`` are computed once, before the first."""
        check_is_fitted(self)
        self._require_in_memory("staged prediction")
        X = self._validated_X(X)
        ts = self._check_times(times)
        Ks = self._kernel(X, self.X_train_)
        f0 = self._f0(X)
        decay = self._decay_arguments(X)
        for t in ts:
            with self._solver_warnings():
                _, out = self.predictor_(np.array([t]), self.fx_train_0_, f0, Ks, **decay)
            yield out

    def _unscale(self, F):
        return F * self._y_train_std + self._y_train_mean

    def _check_times(self, times):
        arr = np.asarray(times, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"times must be a 1-D array of steps (np.inf allowed), got shape {arr.shape}")
        for t in arr:
            self._time(t, "times")
        return arr

    def _time_at_predict(self):
        return self._time(self.time, "time")

    # -- public methods shared by regressor and classifier ------------------------------------
    def loss_curve(self, times):
        """Training loss along training, ``1/(2Nk) sum ||f_t(x_i) - y_i||^2`` (the conventions' MSE).

        Measured on the scale the network is trained on: the standardised targets when
        ``normalize_y=True`` (so 0.5 at ``t = 0`` for the analytic kernel), the original ones
        otherwise; for the classifier, on the ``+-1`` codes, and with ``loss="log_loss"`` the
        mean cross-entropy it trains on (``torch.nn.CrossEntropyLoss``'s). With ``diag_reg > 0`` the ridge is part
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
        return self._train_loss(ts)

    def _train_loss(self, ts):
        """The training loss ``(T,)`` at validated times (the MSE; the classifier adds its own)."""
        with self._solver_warnings():
            train = self.predictor_(ts, self.fx_train_0_, **self._decay_arguments())
        return np.atleast_1d(_solve.mse_loss(train, self.y_train_))

    def save(self, path):
        """Save the fitted estimator to ``path`` in ntksolve's pickle-free ``.npz`` format.

        The file holds arrays (training inputs, standardised targets, network parameters, the
        tiled fit's coefficients, ...) and a JSON entry ``__ntksolve__`` with the format version,
        the class and its parameters (never the scheduler); it is written to a temporary file in
        the same directory and renamed, so ``path`` never holds a half-written model.
        :func:`ntksolve.load` reads it back, giving identical predictions. A loaded model is
        rebuilt from its parameters, so a parameter changed since ``fit`` (other than ``time``,
        ``diag_reg``, ``uncertainty`` and how to compute) is refused with a ValueError: refit first.

        Parameters
        ----------
        path : str or os.PathLike
            Destination (conventionally ending in ``.npz``; written exactly as given).
        """
        persistence.save(self, path)


def register(cls):
    """Class decorator: make ``cls`` loadable by name (:func:`ntksolve.load`)."""
    persistence.register(cls)
    return cls
