""":class:`NTKRegressor`: a wide network trained by gradient descent on MSE, predicted from its NTK.

``fit`` computes the train-train NTK and hands it to the closed-form solver
(:func:`ntksolve.dynamics.gradient_descent_mse`), which decomposes it once; ``predict`` then answers
at ``self.time`` (steps of gradient descent, ``np.inf`` = trained to convergence), and
``predict_trajectory`` / ``staged_predict`` answer a whole training run at no extra kernel cost.

``kernel="analytic"`` is the infinitely wide network: its NTK is deterministic and the output at
initialisation averages to zero over the ensemble of networks, so predictions are the mean of the
trained ensemble, with its uncertainty available through ``predict(X, return_std=True)``.
``kernel="empirical"`` is one real network of the given widths, initialised with ``random_state``:
its kernel is the NTK at initialisation and its initial outputs ``f_0`` are part of every
prediction (the linearised network, exact as the width grows).
"""
from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ntksolve.kernels import analytic_kernels
from ntksolve.sklearn import _solve
from ntksolve.sklearn._params import MODEL_PARAMETERS, SHARED_PARAMETERS, document
from ntksolve.sklearn.base import _NTKBase, register
from ntksolve.kernels.analytic import analytic_diagonals

__all__ = ["NTKRegressor"]


class _NTKRegressorBase(RegressorMixin, _NTKBase):
    """Prediction methods shared by :class:`NTKRegressor` and :class:`NTKRegressorCV` (not public)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _shape_outputs(self, F):
        """(T, M, k) -> (T, M) for a 1-D training target."""
        return F[..., 0] if self._y_ndim == 1 else F

    def _fit_targets(self, X, y):
        """Validated ``(X, y, Y)``, ``Y`` the float64 ``(N, k)`` view of ``y``; remembers whether ``y`` was 1-D."""
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        self._y_ndim = y.ndim
        return X, y, y.reshape(y.shape[0], -1).astype(np.float64)

    def predict(self, X, *, return_std=False, return_cov=False):
        """Outputs of the trained network after ``self.time`` steps.

        Parameters
        ----------
        X : array_like, shape (M, d)
        return_std : bool, default False
            Also return the standard deviation of the trained infinite ensemble (``kernel="analytic"``,
            ``dynamics="continuous"``, ``chunks=None`` only): the spread over random initialisations
            of networks trained for ``time`` steps (the NTK-GP at ``t = inf``).
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
        if not (return_std or return_cov):
            X = self._validated_X(X)
            return self._shape_outputs(self._unscale(self._outputs(X, [self._time_at_predict()])[0]))
        check_is_fitted(self)
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
        cov = cov[:, :, None] * self._y_train_std**2
        return mean, (cov[:, :, 0] if self._y_ndim == 1 else cov)

    def _check_ensemble(self):
        """Refuse return_std/return_cov where there is no ensemble to describe, before any work."""
        self._require_in_memory("return_std/return_cov")
        if self._kernel_kind() != "analytic":
            raise NotImplementedError(
                "return_std/return_cov describe the ensemble of infinitely wide networks; they need "
                "kernel='analytic' (one empirical network has no ensemble spread to report)")
        if self._rule().name != "continuous":
            raise NotImplementedError(
                "return_std/return_cov are available for dynamics='continuous' (the ensemble solver "
                "models gradient flow); for discrete steps use the mean, or continuous time eta*t")

    def _ensemble(self):
        """The trained infinite ensemble on the training data: one more decomposition, made on
        the first call after ``fit`` and reused by every later one."""
        cached = getattr(self, "_ensemble_cache", None)
        if cached is not None:
            return cached
        pair = analytic_kernels(self.network_, self.X_train_)
        self._ensemble_cache = _solve.ensemble(pair.nngp, pair.ntk, self.y_train_.astype(np.float64),
                                               learning_rate=self._rule().learning_rate, diag_reg=self.diag_reg_)
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

    # -- state ---------------------------------------------------------------------------------
    def _state_extras(self, attrs, arrays):
        attrs["y_ndim"] = int(self._y_ndim)

    def _restore_extras(self, state):
        y_ndim = state.attr("y_ndim", "int", lower=1)
        if y_ndim not in (1, 2):
            raise ValueError(f"y_ndim must be 1 or 2, got {y_ndim}")
        self._y_ndim = y_ndim
        return 1 if y_ndim == 1 else None


@register
@document(MODEL_PARAMETERS, SHARED_PARAMETERS)
class NTKRegressor(_NTKRegressorBase):
    """A wide network trained by gradient descent on MSE, predicted from its neural tangent kernel.

    All parameters are keyword-only.

    Parameters
    ----------
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
        self._check_params()
        X, _, Y = self._fit_targets(X, y)
        self._set_training_state(X, Y)
        self._fit_solver(X)
        return self
