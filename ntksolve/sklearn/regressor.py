""":class:`NTKRegressor`: a wide network trained by gradient descent on MSE, predicted from its NTK.

``fit`` computes the train-train NTK and hands it to the closed-form solver
(:func:`ntksolve.dynamics.gradient_descent_mse`), which decomposes it once, and solves at
``self.time`` (steps of gradient descent, ``np.inf`` = trained to convergence); ``predict`` then
forms the test kernel and applies that solution, and
``predict_trajectory`` / ``staged_predict`` answer a whole training run at no extra kernel cost.

``kernel="analytic"`` is the infinitely wide network: its NTK is deterministic and the output at
initialisation averages to zero over the ensemble of networks, so predictions are the mean of the
trained ensemble. ``predict(X, return_std=True)`` gives, by default (``uncertainty="ensemble"``),
that ensemble's spread, which has no observation noise; ``uncertainty="predictive"`` gives intervals
for new targets from a Gaussian process on the same kernel whose amplitude and noise ``fit``
chooses by maximum marginal likelihood (:class:`ntksolve.dynamics.kernel_gp.KernelGP`).
``kernel="empirical"`` is one real network of the given widths, initialised with ``random_state``:
its kernel is the NTK at initialisation and its initial outputs ``f_0`` are part of every
prediction (the linearised network, exact as the width grows).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.exceptions import NotFittedError
from sklearn.metrics import r2_score
from sklearn.utils.validation import check_is_fitted, validate_data

from ntksolve.dynamics.squares import power_of_two_scale, squares_in_range
from ntksolve.kernels import analytic_kernels
from ntksolve.sklearn import _solve
from ntksolve._docstrings import fill_sections
from ntksolve.sklearn._params import (
    METHOD_SECTIONS,
    MODEL_PARAMETERS,
    REGRESSOR_PARAMETERS,
    SHARED_PARAMETERS,
    document,
    keyword_init,
)
from ntksolve.sklearn.base import _check_choice, _NTKBase, register
from ntksolve.kernels.analytic import analytic_diagonals

__all__ = ["NTKRegressor"]

#: Values of the regressors' ``uncertainty`` parameter.
UNCERTAINTIES = ("ensemble", "predictive")

#: The fitted attributes of ``uncertainty="predictive"``.
_NOISE_ATTRIBUTES = ("amplitude_", "noise_variance_", "log_marginal_likelihood_value_")


@fill_sections(METHOD_SECTIONS)
class _NTKRegressorBase(RegressorMixin, _NTKBase):
    """Prediction methods shared by :class:`NTKRegressor` and :class:`NTKRegressorCV` (not public)."""

    #: Absent from files written before them: ``load`` gives them their defaults, ``save`` leaves
    #: them out at their defaults.
    _parameters_added_later = {name: default for name, default, _ in REGRESSOR_PARAMETERS}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def score(self, X, y, sample_weight=None):
        """Coefficient of determination R² of ``predict(X)``, as ``RegressorMixin.score``.

        Computed on ``y / s`` and ``predict(X) / s``, ``s`` a power of two near ``max |y|``: R² does
        not depend on the scale and the division is exact, so targets anywhere in the float64 range
        score as they would near 1 (``r2_score`` squares them: NaN beyond ``|y| ~ 1e154``).

        Parameters
        ----------
        X : array_like, shape (M, d)
        y : array_like, shape (M,) or (M, k)
        sample_weight : array_like, shape (M,), optional

        Returns
        -------
        float
        """
        y_pred = self.predict(X)
        y = np.asarray(y)
        if y.dtype.kind not in "fiu":  # r2_score names what is wrong with these
            return r2_score(y, y_pred, sample_weight=sample_weight)
        s = power_of_two_scale(y.astype(np.float64, copy=False))
        return r2_score(y / s, y_pred / s, sample_weight=sample_weight)

    def _shape_outputs(self, F):
        """(T, M, k) -> (T, M) for a 1-D training target."""
        return F[..., 0] if self._y_ndim == 1 else F

    def _fit_targets(self, X, y):
        """Validated ``(X, y, Y)``, ``Y`` the float64 ``(N, k)`` view of ``y``; remembers whether ``y`` was 1-D."""
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        self._y_ndim = y.ndim
        self._clear_noise_model()
        return X, y, y.reshape(y.shape[0], -1).astype(np.float64)

    # -- the noise model of uncertainty="predictive" --------------------------------------------
    def _validate_params_ntk(self):
        dt = super()._validate_params_ntk()
        _check_choice(self.uncertainty, "uncertainty", UNCERTAINTIES)
        if self.uncertainty == "predictive" and self.chunks is not None:
            raise ValueError(
                f"uncertainty='predictive' fits its noise model on the eigendecomposition of the train kernel, "
                f"which chunks={self.chunks!r} never forms; use chunks=None (the kernel must then fit in memory), "
                "or uncertainty='ensemble' (the tiled fit then answers predict without a standard deviation)"
            )
        return dt

    def _clear_noise_model(self):
        for name in _NOISE_ATTRIBUTES:
            self.__dict__.pop(name, None)
        self._gp = None
        self._restored_noise = None

    def _build_predictor(self, K, diag_reg):
        """The solver, then (``uncertainty="predictive"``) the noise model on its decomposition:
        maximum marginal likelihood in ``fit``, the saved amplitude and noise in ``load``."""
        super()._build_predictor(K, diag_reg)
        restored, self._restored_noise, self._gp = getattr(self, "_restored_noise", None), None, None
        if self.uncertainty != "predictive":
            return
        gp = self.predictor_.kernel_gp(self.fx_train_0_)
        # fitted on the standardised residuals over a power of two where their squares would leave
        # float64 (normalize_y=False with targets beyond 1e±100): variances scale by std², std this
        self._gp_scale = gp.residual_scale()
        gp = gp.scaled(self._gp_scale)
        std = self._gp_std()
        if restored is None:
            a, s2, lml = gp.maximise()
        else:
            k = std.size
            if restored[0].shape != (k,) or restored[1].shape != (k,):
                raise ValueError(
                    f"amplitude and noise_variance must have shape ({k},), one per output; "
                    f"got {restored[0].shape} and {restored[1].shape}"
                )
            a, s2 = _unsquare(restored[0], std), _unsquare(restored[1], std)
            exact = (a == 0) & (s2 == 0)
            lml = np.full(k, np.inf)
            if not exact.all():
                lml[~exact] = gp.log_marginal_likelihood(np.where(exact, 1.0, a), np.where(exact, 1.0, s2))[~exact]
        self._gp, self._gp_params = gp, (a, s2)
        one = self._y_ndim == 1
        A, S = _square(a, std), _square(s2, std)
        self.amplitude_ = float(A[0]) if one else A
        self.noise_variance_ = float(S[0]) if one else S
        # the density of y itself: the standardisation's Jacobian, -N log std per output
        self.log_marginal_likelihood_value_ = float(np.sum(lml - self.y_train_.shape[0] * np.log(std)))

    def _gp_std(self):
        """Per output, the scale of ``y`` over that of the noise model's residuals ``(k,)``."""
        return self._y_train_std * self._gp_scale

    def log_marginal_likelihood(self, amplitude=None, noise_variance=None):
        """Log density of the training targets under the predictive model (``uncertainty="predictive"``).

        The model: ``y_c ~ N(m_c + s_c f_0, A_c Θ + S_c I)`` per output ``c``, with ``Θ`` the train
        NTK, ``m_c, s_c`` the targets' standardisation (0 and 1 without ``normalize_y``) and ``f_0``
        the outputs at initialisation (0 for the analytic kernel). ``fit`` maximises it;
        ``log_marginal_likelihood_value_`` is the maximum. ``O(N k)`` from the fitted decomposition.

        Parameters
        ----------
        amplitude : float or array_like of shape (k,), optional
            ``A >= 0`` on the scale of ``y`` (default: ``amplitude_``).
        noise_variance : float or array_like of shape (k,), optional
            ``S > 0``, the observation noise's variance on the scale of ``y`` (default: ``noise_variance_``).

        Returns
        -------
        float
            Summed over outputs.
        """
        gp = self._fitted_gp("log_marginal_likelihood")
        if amplitude is None and noise_variance is None:
            return self.log_marginal_likelihood_value_
        std = self._gp_std()
        A = self.amplitude_ if amplitude is None else amplitude
        S = self.noise_variance_ if noise_variance is None else noise_variance
        lml = gp.log_marginal_likelihood(_per_output(A, "amplitude", std), _per_output(S, "noise_variance", std))
        return float(np.sum(lml - self.y_train_.shape[0] * np.log(std)))

    def _fitted_gp(self, what):
        check_is_fitted(self)
        self._require_in_memory(what)
        if self.uncertainty != "predictive" or getattr(self, "_gp", None) is None:
            raise NotFittedError(
                f"{what} needs the noise model that fit makes with uncertainty='predictive'; this "
                f"{type(self).__name__} was fitted without it (or uncertainty was changed after fit): "
                "set uncertainty='predictive' and fit again"
            )
        return self._gp

    def _predictive(self, X, return_cov):
        """``predict``'s output with the root mean squared error (or the error covariance) of a new
        observation under the fitted Gaussian process (see :meth:`predict`)."""
        gp = self._fitted_gp("return_std/return_cov")
        X = self._validated_X(X)
        Ks = self._kernel(X, self.X_train_)
        F = np.asarray(self._outputs(X, [self._time_at_predict()], k_test_train=Ks)[0], dtype=np.float64)
        a, s2 = self._gp_params
        if return_cov:
            m_gp, C = gp.predict(a, s2, Ks, k_test_test=self._kernel(X))
        else:
            m_gp, var = gp.predict(a, s2, Ks, k_test_diag=self._kernel_diagonal(X))
        # how far predict's output is from the posterior mean (0 at t = inf when the ridge is the
        # fitted noise-to-signal ratio): its squared error adds to the new observation's variance
        bias = m_gp + self._f0(X) / self._gp_scale - F / self._gp_scale
        mean = self._shape_outputs(self._unscale(F))
        std = self._gp_std()
        if return_cov:
            cov = _square(C + bias[:, None, :] * bias[None, :, :], std)
            return mean, (cov[:, :, 0] if self._y_ndim == 1 else cov)
        out = np.sqrt(var + bias**2) * std
        return mean, (out[:, 0] if self._y_ndim == 1 else out)

    def predict(self, X, *, return_std=False, return_cov=False):
        """Outputs of the trained network after ``self.time`` steps.

        ``y_pred`` is the same whatever is asked besides; what ``y_std`` and ``y_cov`` describe is
        set by the ``uncertainty`` parameter, as ``GaussianProcessRegressor``'s kernel decides
        whether its ``return_std`` includes observation noise (a ``WhiteKernel``) or not.

        Parameters
        ----------
        X : array_like, shape (M, d)
        return_std : bool, default False
            Also return a standard deviation per prediction (and per output).

            - ``uncertainty="ensemble"``: the spread of the trained infinite ensemble, i.e. of the
              outputs of infinitely wide networks from random initialisations, each trained for
              ``time`` steps (the NTK-GP at ``t = inf``); ``kernel="analytic"``,
              ``dynamics="continuous"``, ``chunks=None`` only. It is not a predictive interval for
              new observations: it has no noise term, so ``y_pred ± 1.96 y_std`` covers far fewer
              than 95% of held-out targets (on scikit-learn's diabetes data, standardised,
              about 20%).
            - ``uncertainty="predictive"``: the root mean squared error of ``y_pred`` for a new
              observation at each input, under the Gaussian process that ``fit`` fitted by maximum
              marginal likelihood (covariance ``amplitude_ Θ + noise_variance_ I``, ``Θ`` the NTK):
              ``sqrt(s² + σ² + b²)``, with ``s²`` the process's posterior variance there, ``σ²`` the
              noise and ``b`` the gap between ``y_pred`` and the posterior mean (zero at
              ``time=inf`` if ``diag_reg * mean(diag Θ)`` equals the fitted ``σ²/a``; otherwise it
              makes the interval wider, never narrower). ``y_pred ± 1.96 y_std`` is then an
              interval for new targets; any kernel and dynamics, ``chunks=None`` only.
        return_cov : bool, default False
            Also return the covariance between test points of the same quantity: the ensemble's;
            or, for ``"predictive"``, that of the errors of ``y_pred`` for new observations
            (posterior covariance, the noise on its diagonal, plus ``b bᵀ``).

        Returns
        -------
        y_pred : ndarray, shape (M,) or (M, k)
        y_std : ndarray, shape (M,) or (M, k), only with ``return_std``
        y_cov : ndarray, shape (M, M) or (M, M, k), only with ``return_cov``
        """
        if return_std and return_cov:
            raise RuntimeError("At most one of return_std or return_cov can be requested.")
        if not (return_std or return_cov):
            X = self._validated_X(X)
            return self._shape_outputs(self._unscale(self._outputs(X, [self._time_at_predict()])[0]))
        check_is_fitted(self)
        if self.uncertainty == "predictive":
            return self._predictive(X, return_cov)
        self._check_ensemble()
        X = self._validated_X(X)
        t = self._time_at_predict()
        # one test-train kernel pair: its NTK gives the mean, its NNGP the spread
        cross = analytic_kernels(self.network_, X, self.X_train_)
        F = self._outputs(X, [t], k_test_train=cross.ntk.astype(self._dtype, copy=False))[0]
        mean = self._shape_outputs(self._unscale(F))
        ensemble = self._ensemble()
        if return_std:
            net = self.network_
            nngp_diag, _ = analytic_diagonals(X, net.depth, net.activation, net.weight_std, net.bias_std)
            var = _solve.ensemble_variance(ensemble, t, cross.nngp, cross.ntk, nngp_diag)
            std = np.sqrt(var)[:, None] * self._y_train_std
            return mean, (std[:, 0] if self._y_ndim == 1 else std)
        _, cov = ensemble(t, cross.nngp, cross.ntk, analytic_kernels(self.network_, X).nngp, compute_cov=True)
        cov = _square(cov[:, :, None], self._y_train_std)
        return mean, (cov[:, :, 0] if self._y_ndim == 1 else cov)

    def _check_ensemble(self):
        """Refuse return_std/return_cov where there is no ensemble to describe, before any work."""
        self._require_in_memory("return_std/return_cov")
        if self._kernel_kind() != "analytic":
            raise NotImplementedError(
                "return_std/return_cov describe the ensemble of infinitely wide networks; they need "
                "kernel='analytic' (one empirical network has no ensemble spread to report); for intervals "
                "for new targets from any kernel use uncertainty='predictive'"
            )
        if self.predictor_.rule.name != "continuous":  # the rule of the fit, as the mean's
            raise NotImplementedError(
                "return_std/return_cov are available for dynamics='continuous' (the ensemble solver "
                "models gradient flow); for discrete steps use the mean, continuous time eta*t, or "
                "uncertainty='predictive' (any training rule)"
            )

    def _ensemble(self):
        """The trained infinite ensemble on the training data: one more decomposition, made on
        the first call after ``fit`` and reused by every later one."""
        cached = getattr(self, "_ensemble_cache", None)
        if cached is not None:
            return cached
        pair = analytic_kernels(self.network_, self.X_train_)
        self._ensemble_cache = _solve.ensemble(
            pair.nngp,
            pair.ntk,
            self.y_train_.astype(np.float64),
            learning_rate=self.predictor_.rule.learning_rate,  # the fit's, as the mean's (not a later set_params)
            diag_reg=self.diag_reg_,
        )
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
        check_is_fitted(self)
        self._require_in_memory("predict_trajectory")
        X = self._validated_X(X)
        ts = self._check_times(times)
        return self._shape_outputs(self._unscale(self._outputs(X, ts)))

    def staged_predict(self, X, times):
        """Yield :meth:`predict` at each of ``times`` in turn, computing the test kernel once.

        {staged}
        y_pred : ndarray, shape (M,) or (M, k)
        """
        for out in self._staged_outputs(X, times):
            yield self._shape_outputs(self._unscale(out))[0]

    # -- state ---------------------------------------------------------------------------------
    def _state_extras(self, attrs, arrays):
        attrs["y_ndim"] = int(self._y_ndim)

        if self.uncertainty == "predictive" and getattr(self, "_gp", None) is not None:  # the noise model, per output
            A = np.atleast_1d(np.asarray(self.amplitude_, dtype=np.float64))
            S = np.atleast_1d(np.asarray(self.noise_variance_, dtype=np.float64))
            a, s2 = self._gp_params
            # values float64 does not hold on the scale of y (inf, subnormal, or 0 for a positive one)
            # are left out: loading then fits the noise model again, as fit did, to the same values
            normal = np.finfo(np.float64).tiny
            if np.all(np.isfinite(A) & np.isfinite(S) & ((A >= normal) | (a == 0)) & ((S >= normal) | (s2 == 0))):
                arrays["amplitude"], arrays["noise_variance"] = A, S

    def _restore_extras(self, state):
        y_ndim = state.attr("y_ndim", "int", lower=1)
        if y_ndim not in (1, 2):
            raise ValueError(f"y_ndim must be 1 or 2, got {y_ndim}")
        self._y_ndim = y_ndim
        self._clear_noise_model()
        saved = state.has("amplitude") or state.has("noise_variance")
        # without them (uncertainty set to "predictive" after fit), loading fits them as fit would
        if self.uncertainty == "predictive" and saved:
            a = state.array("amplitude", np.float64, (None,), finite=True)
            s2 = state.array("noise_variance", np.float64, (None,), finite=True)
            if np.any(a < 0) or np.any(s2 < 0) or np.any((s2 == 0) & (a != 0)):
                raise ValueError(
                    "amplitude must be >= 0 and noise_variance > 0 (both 0 only for a target "
                    f"fitted exactly); got {a.tolist()} and {s2.tolist()}"
                )
            self._restored_noise = (a, s2)  # used by _build_predictor, instead of maximising again
        elif saved and self.uncertainty != "predictive":
            raise ValueError(
                f"the file holds a predictive noise model, but the estimator's uncertainty is {self.uncertainty!r}"
            )
        return 1 if y_ndim == 1 else None


def _square(v, std):
    """``v std²`` of a variance ``v`` on the standardised scale; ``(v std) std`` where ``std²`` alone
    could overflow or underflow (``std`` outside :func:`~ntksolve.dynamics.squares.squares_in_range`),
    and ``v std²`` need not."""
    with np.errstate(over="ignore", under="ignore"):  # inf (or 0) only where the true value is
        return v * (std * std) if squares_in_range(std) else (v * std) * std


def _unsquare(v, std):
    """``v / std²`` of a variance ``v`` on the scale of ``y`` (as :func:`_square`, inverted)."""
    with np.errstate(over="ignore", under="ignore"):
        return v / (std * std) if squares_in_range(std) else (v / std) / std


def _per_output(value, name, std):
    """A scalar or per-output variance on the scale of ``y``, divided by ``std² (k,)``."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real number or an array of them, got {value!r}")
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape != std.shape):
        raise ValueError(
            f"{name} must be a number or an array of shape {std.shape} (one per output), got shape {arr.shape}"
        )
    return _unsquare(arr.astype(np.float64), std)


@register
@document(MODEL_PARAMETERS, REGRESSOR_PARAMETERS, SHARED_PARAMETERS)
class NTKRegressor(_NTKRegressorBase):
    """A wide network trained by gradient descent on MSE, predicted from its neural tangent kernel.

    {parameters}

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
    tiled_ : ntksolve.dask.TiledFit or None
        The tiled solve at ``time`` (only with ``chunks``).
    diag_reg_ : float
    amplitude_ : float or ndarray of shape (k,)
        Only with ``uncertainty="predictive"``: ``A`` of the fitted model
        ``y ~ N(mean + f_0, A Θ + S I)`` (:meth:`log_marginal_likelihood`), on the scale of ``y``,
        per output (a float for a 1-D ``y``).
    noise_variance_ : float or ndarray of shape (k,)
        ``S``, the variance of the observation noise, on the scale of ``y``.
    log_marginal_likelihood_value_ : float
        The log density of the training targets at the maximum (summed over outputs).
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
    >>> reg = NTKRegressor(uncertainty="predictive").fit(X[:300], y[:300])
    >>> mean, std = reg.predict(X[300:], return_std=True)  # intervals for new targets
    """

    __init__ = keyword_init(MODEL_PARAMETERS, REGRESSOR_PARAMETERS, SHARED_PARAMETERS)

    def fit(self, X, y):
        """Compute the train kernel, its decomposition and the solution at ``time`` (solver errors
        surface here, not at the first ``predict``).

        {fit_targets}
        """
        self._check_params()
        X, _, Y = self._fit_targets(X, y)
        self._set_training_state(X, Y)
        self._fit_solver(X, self.diag_reg)
        return self
