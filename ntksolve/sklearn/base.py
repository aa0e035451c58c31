"""What the NTK estimators share: their parameters, fitting, prediction and fitted state (private).

The parameters are declared once, with their documentation, in :mod:`ntksolve.sklearn._params`.

A fitted estimator holds its state in plain attributes; :meth:`_NTKBase._get_state` and
:meth:`_NTKBase._set_state` say what of it a saved model holds, and are all that
:mod:`ntksolve.sklearn.persistence` touches.
"""
from __future__ import annotations

import contextlib
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from ntksolve._config import FIT_PEAK_KERNELS
from ntksolve._validation import check_dtype, check_memory
from ntksolve.kernels import analytic_kernels, empirical_ntk
from ntksolve.nets.forward_mode import own_parameter_image
from ntksolve.nets.layers import check_activation
from ntksolve.nets.mlp import MLP, PARAMETERIZATIONS
from ntksolve.sklearn import _network, _solve, persistence
from ntksolve.sklearn._params import MODEL_PARAMETERS, SHARED_PARAMETERS, keyword_init

KERNELS = ("analytic", "empirical")


# ---------------------------------------------------------------------------------------------
# parameter validation (in fit and in load, never in __init__)
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


def _check_time(value, name, rule):
    t = _check_real(value, name, allow_inf=True)
    if rule.name == "discrete" and np.isfinite(t) and t != round(t):
        raise ValueError(f"{name} must be a whole number of steps (or np.inf) with dynamics='discrete'; got {value!r}")
    if t == np.inf and getattr(rule, "schedule", None) is not None:
        raise ValueError(f"{name} = inf has no meaning for a learning-rate schedule (it has no single converged "
                         f"limit); set it to a number of steps, e.g. the schedule's total steps; got {value!r}")
    return t


def _standardisation(Y, normalize):
    """Per-output mean and std ``(k,)`` of the targets (0 and 1 without ``normalize``)."""
    if not normalize:
        return np.zeros(Y.shape[1]), np.ones(Y.shape[1])
    mean, std = Y.mean(axis=0), Y.std(axis=0)
    std[std == 0.0] = 1.0  # a constant target: nothing to scale
    return mean, std


class _NTKBase(BaseEstimator):
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
        if self._kernel_kind() == "analytic" and not MLP((1,), parameterization=self.parameterization).supports_analytic:
            raise ValueError(
                "kernel='analytic' (infinite width) is defined for parameterization='ntk' only: in "
                "standard parameterisation the infinite-width NTK grows without bound; use "
                "kernel='empirical' for a finite standard-parameterised network"
            )
        if not isinstance(self.normalize_y, (bool, np.bool_)):
            raise ValueError(f"normalize_y must be True or False, got {self.normalize_y!r}")
        if self.block_size is not None and (
            isinstance(self.block_size, bool) or not isinstance(self.block_size, numbers.Integral) or self.block_size <= 0
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

    def _time(self, value, name):
        """One time, checked against the rule (the classifier adds its loss's condition)."""
        return _check_time(value, name, self._rule())

    def _rule(self):
        """The training rule: ``dynamics`` (a name, with ``learning_rate``, default 1.0) or a rule object."""
        if isinstance(self.dynamics, str) and self.dynamics.strip().lower() not in _solve.ADAPTIVE:
            _check_choice(self.dynamics, "dynamics", _solve.DYNAMICS)
            if self.learning_rate is not None:
                _check_real(self.learning_rate, "learning_rate", strict=True)
        return _solve.resolve_rule(self.dynamics, self.learning_rate)

    def _plain_rule(self, what):
        """``(name, η)`` of a constant-rate rule without momentum, for the solvers that take only those."""
        rule = self._rule()
        if not (rule.name == "continuous" or rule.plain):
            raise ValueError(f"{what} supports gradient flow and plain constant-rate descent only, not {rule!r}; "
                             "use chunks=None (the in-memory solver runs every rule)")
        return rule.name, rule.learning_rate

    # -- pieces ------------------------------------------------------------------------------
    def _kernel_kind(self):
        """``"analytic"`` or ``"empirical"``: ``kernel``, or the empirical NTK of a given ``network``."""
        return "empirical" if self.network is not None else self.kernel

    def _network(self, n_outputs):
        return MLP(self.hidden_layer_sizes, self.activation, self.weight_std, self.bias_std,
                   self.parameterization, n_outputs)

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

        ``normalize``: standardise the targets (default ``self.normalize_y``)."""
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
        check_memory((n, n), self._dtype, what=f"in-memory fit of {type(self).__name__} on {n} points",
                     copies=FIT_PEAK_KERNELS[self._fit_peak or ("log_loss" if getattr(self, "loss", None) in ("log_loss", "cross_entropy")
                                                                   else self._kernel_kind())],
                     hint="fit with chunks=... (kernel tiles on Dask: pip install 'ntksolve[dask]'), or on fewer points")

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

    def _fit_solver(self, X):
        """Decompose the train kernel in memory; or, with ``chunks``, solve at ``self.time`` from
        kernel tiles on Dask (:func:`ntksolve.dask.fit_tiled`), never forming the kernel."""
        if self.chunks is None:
            self._build_predictor(self._kernel(X), self.diag_reg)
            return
        dynamics, rate = self._plain_rule("chunks=... (the tiled solve)")
        with self._solver_warnings():
            self.tiled_ = _solve.fit_tiled(
                self.network_, X, self.y_train_.astype(np.float64), params=self.params_,
                t=self._time_at_predict(), learning_rate=rate, diag_reg=self.diag_reg,
                dynamics=dynamics, fx_train_0=self.fx_train_0_, chunks=self.chunks,
                scheduler=self.scheduler, dtype=self._dtype)
        self.predictor_ = None
        self.diag_reg_ = float(self.diag_reg)
        self._ensemble_cache = None

    def _require_in_memory(self, what):
        """The one check of what a tiled fit cannot answer; called before any work is done."""
        tiled = getattr(self, "tiled_", None)
        if tiled is not None:
            answers = "predict, score" + (", decision_function" if hasattr(self, "decision_function") else "")
            raise ValueError(
                f"{what} needs the in-memory solver, but this {type(self).__name__} was fitted with "
                f"chunks={self.chunks!r}, whose tiled solve holds the model at time={tiled.t:g} only "
                f"({answers} there). Refit with chunks=None (the train kernel must then fit in memory), "
                "or refit with chunks and time set to each time you need")

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
                self._require_in_memory(f"prediction at times {ts.tolist()} (time was changed after fit, "
                                        "or a trajectory was asked for)")
            out = _solve.predict_tiled(tiled, X, fx_test_0=self._f0(X), scheduler=self.scheduler)
            return np.repeat(out.astype(self._dtype, copy=False)[None], ts.size, axis=0)
        Ks = self._kernel(X, self.X_train_) if k_test_train is None else k_test_train
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
        :func:`ntksolve.load` reads it back, giving identical predictions.

        Parameters
        ----------
        path : str or os.PathLike
            Destination (conventionally ending in ``.npz``; written exactly as given).
        """
        persistence.save(self, path)

    # -- state: what a saved model holds ---------------------------------------------------------
    def _get_state(self):
        """The fitted state as ``(attrs, arrays)``: JSON-ready scalars and named ndarrays.

        The parameters are not part of it (``get_params`` gives them); the solver's decomposition
        is not either (``_set_state`` recomputes it); a tiled fit's coefficients are.
        """
        check_is_fitted(self)
        if self.network is not None:
            raise ValueError(
                f"network={type(self.network).__name__}: the pickle-free format stores ntksolve's own networks only, "
                "not a PyTorch or scikit-learn object; save the estimator with pickle/joblib (or torch.save the "
                "module and refit)")
        attrs = {"n_features_in_": int(self.n_features_in_), "diag_reg_": float(self.diag_reg_)}
        arrays = {
            "X_train": self.X_train_,
            "y_train": self.y_train_,
            "y_train_mean": self._y_train_mean,
            "y_train_std": self._y_train_std,
            "fx_train_0": self.fx_train_0_,
        }
        if self.params_ is not None:
            for l, (W, b) in enumerate(self.params_):
                arrays[f"W{l}"] = W
                arrays[f"b{l}"] = b
        if hasattr(self, "feature_names_in_"):
            arrays["feature_names_in"] = self.feature_names_in_
        if self.tiled_ is not None:
            tiled_attrs, tiled_arrays = _solve.tiled_state(self.tiled_)
            attrs["tiled"] = tiled_attrs
            arrays.update({f"tiled_{name}": a for name, a in tiled_arrays.items()})
        self._state_extras(attrs, arrays)
        return attrs, arrays

    def _state_extras(self, attrs, arrays):
        """Subclasses add their own fitted state to ``attrs`` and ``arrays`` (in place)."""

    def _restore_extras(self, state):
        """Subclasses read their own fitted state, before the common part; return the number of
        target columns it implies (None if it implies none)."""
        return None

    def _set_state(self, state):
        """Restore the fitted state from ``state`` (:class:`ntksolve.sklearn.persistence.StateReader`).

        Everything is checked as ``fit`` would have made it (parameters, shapes, dtypes, finite
        values, positive scales) before the one heavy step, rebuilding the solver: the in-memory
        decomposition of the train kernel (its bytes charged to the reader's budget first), or the
        tiled fit from its stored coefficients (no kernel). Raises ValueError.
        """
        self._check_params()
        dt = self._dtype = check_dtype(self.dtype)
        k_implied = self._restore_extras(state)
        n = state.attr("n_features_in_", "int", lower=1)
        X = state.array("X_train", np.float64, (None, n), finite=True)
        N = X.shape[0]
        if N < 1:
            raise ValueError("X_train has no rows")
        Y = state.array("y_train", dt, (N, k_implied), finite=True)
        k = Y.shape[1]
        if k < 1:
            raise ValueError("y_train has no columns")
        mean = state.array("y_train_mean", np.float64, (k,), finite=True)
        std = state.array("y_train_std", np.float64, (k,), finite=True)
        if not np.all(std > 0):
            raise ValueError(f"y_train_std must be positive, got {std.tolist()}")
        if not self.normalize_y and not (np.all(mean == 0) and np.all(std == 1)):
            raise ValueError("y_train_mean and y_train_std must be 0 and 1 with normalize_y=False")
        f0 = state.array("fx_train_0", dt, (N, k), finite=True)
        network = self._network(k)
        if self.kernel == "empirical":
            widths = network.widths(n)
            params = [(state.array(f"W{l}", dt, (widths[l + 1], widths[l]), finite=True),
                       state.array(f"b{l}", dt, (widths[l + 1],), finite=True)) for l in range(network.depth + 1)]
        else:
            params = None
            if np.any(f0 != 0):
                raise ValueError("fx_train_0 must be 0 for the analytic kernel (the ensemble's mean output)")
        if state.has("feature_names_in"):
            self.feature_names_in_ = state.array("feature_names_in", "U", (n,)).astype(object)
        diag_reg = state.attr("diag_reg_", "float", lower=0.0)
        self.n_features_in_ = n
        self.X_train_, self.y_train_, self.fx_train_0_ = X, Y, f0
        self._y_train_mean, self._y_train_std = mean, std
        self.network_, self.params_ = network, params
        tiled = state.attr("tiled", "dict", default=None)
        if tiled is None:
            state.charge(N * N * dt.itemsize, f"the ({N}, {N}) train kernel that loading recomputes")
            self._build_predictor(self._kernel(X), diag_reg)
            return
        if not self._tiled_capable or self.chunks is None:
            raise ValueError("the file holds a tiled fit, but the estimator's chunks parameter is None")
        tiled = _check_tiled_attrs(tiled, self._rule())
        dynamics, rate = self._plain_rule("chunks=... (the tiled solve)")
        coef = state.array("tiled_coef", np.float64, (N, k), finite=True)
        fx = state.array("tiled_fx_train", np.float64, (N, k), finite=True)
        self.tiled_ = _solve.restore_tiled(network, params, X, tiled, coef, fx, learning_rate=rate,
                                           diag_reg=diag_reg, dynamics=dynamics, scheduler=self.scheduler)
        self.predictor_ = None
        self.diag_reg_ = diag_reg
        self._ensemble_cache = None


def _check_tiled_attrs(tiled, rule):
    """The tiled part of a saved state: exactly ``t``, ``mu``, ``chunks``, ``info``, well typed."""
    if set(tiled) != {"t", "mu", "chunks", "info"}:
        raise ValueError(f"the tiled fit's entries must be t, mu, chunks, info; got {sorted(tiled)}")
    t = _check_time(tiled["t"], "the tiled fit's t", rule)
    mu = _check_real(tiled["mu"], "the tiled fit's mu")
    chunks = tiled["chunks"]
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"the tiled fit's chunks must be a positive int, got {chunks!r}")
    info = tiled["info"]
    if not isinstance(info, dict) or not all(
            isinstance(key, str) and (v is None or isinstance(v, (str, bool, int, float))) for key, v in info.items()):
        raise ValueError("the tiled fit's info must map names to plain scalars")
    return {"t": t, "mu": mu, "chunks": chunks, "info": info}


def register(cls):
    """Class decorator: make ``cls`` loadable by name (:func:`ntksolve.load`)."""
    persistence.register(cls)
    return cls
