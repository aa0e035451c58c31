""":class:`NTKRegressorCV`: ``time`` (early stopping, without any training) and ``diag_reg`` by K-fold CV.

One decomposition per fold serves every ``diag_reg`` (a relative ridge only shifts the eigenvalues)
and every time; ``cv="loo"`` is the exact leave-one-out of converged training from one
decomposition of all the data, as :class:`~sklearn.linear_model.RidgeCV` picks its ``alpha``.
"""

from __future__ import annotations

import numpy as np

from ntksolve.dynamics.squares import mean_square, power_of_two_scale, squares_in_range
from ntksolve.sklearn._params import (
    CV_PARAMETERS,
    REGRESSOR_PARAMETERS,
    SEARCH_TILED_PARAMETERS,
    SHARED_PARAMETERS,
    document,
    keyword_init,
)
from ntksolve.sklearn._search import _GridSearch
from ntksolve.sklearn.base import register
from ntksolve.sklearn.regressor import _NTKRegressorBase

__all__ = ["NTKRegressorCV"]


@register
@document(CV_PARAMETERS, REGRESSOR_PARAMETERS, SEARCH_TILED_PARAMETERS, SHARED_PARAMETERS)
class NTKRegressorCV(_GridSearch, _NTKRegressorBase):
    """:class:`NTKRegressor` that chooses ``time`` and ``diag_reg`` by K-fold cross-validation.

    The kernel of all the data is computed once and sliced per fold; each fold's train kernel is
    decomposed once, and every ``diag_reg`` shifts its eigenvalues, after which every time of the grid
    costs two matrix products: a grid of 50 times and 5 ridges costs about one fit per fold. This is early stopping
    chosen by validation error, without any training, the way :class:`~sklearn.linear_model.RidgeCV`
    chooses ``alpha``. The score is the mean squared error on the original scale (averaged over
    outputs); the winner is refitted on all the data (reusing the kernel). With ``chunks`` no
    kernel is formed: each fold's train kernel is tiled on Dask, each ridge is one Lanczos solve
    serving every time, and the winner is refitted as ``NTKRegressor(chunks=...)`` would be.

    {parameters}

    Attributes
    ----------
    {search_attributes}
    mse_path_ : ndarray, shape (R, T, n_folds)
        Validation MSE of every ``(diag_reg, time)`` on every fold, in units of ``y²``: ``inf`` (or
        0) only where the true MSE lies beyond float64 (targets beyond ``~1e154``, or below
        ``~1e-162``). The choice and the ranks are made on the MSE of ``y / s`` (``s`` a power of two
        near ``max |y|``, exact), so they are the ones made for the same targets near 1.
    cv_results_ : dict of ndarrays, each of shape (R * T,)
        ``param_diag_reg``, ``param_time``, ``mean_test_score`` (negative MSE, higher is better),
        ``std_test_score``, ``rank_test_score``, ``split{i}_test_score``, ``params``
        (``pandas.DataFrame(cv_results_)`` tabulates it, as for ``GridSearchCV``).
    best_score_ : float
        ``-min`` mean validation MSE.
    X_train_, y_train_, network_, params_, fx_train_0_, predictor_, tiled_, n_features_in_
        As :class:`NTKRegressor`, for the refitted model.
    amplitude_, noise_variance_, log_marginal_likelihood_value_
        As :class:`NTKRegressor` (``uncertainty="predictive"``), fitted on the refitted model's
        decomposition.
    """

    __init__ = keyword_init(CV_PARAMETERS, REGRESSOR_PARAMETERS, SEARCH_TILED_PARAMETERS, SHARED_PARAMETERS)

    #: Absent from files written before them: ``load`` gives them their defaults.
    _parameters_added_later = {
        **_NTKRegressorBase._parameters_added_later,
        **{name: default for name, default, _ in SEARCH_TILED_PARAMETERS},
    }

    def fit(self, X, y):
        """Cross-validate ``(diag_reg, time)`` on one kernel of all the data, then refit.

        {fit_targets}
        """
        regs, ts = self._check_params()
        X, y, Y = self._fit_targets(X, y)
        # the network (and, for the empirical kernel, its parameters and f_0) of the final model
        self._set_training_state(X, Y)
        self._search(X, y, Y, regs, ts)
        return self

    def _scale_of_scores(self, Y):
        """A power of two near ``max |y|``: the path is the MSE of ``y / s`` (exact; no overflow)."""
        return float(power_of_two_scale(Y))

    def _fold_scores(self, out, te, y, Y):
        """Held-out MSE ``(R, T)`` of ``y / _score_scale``, averaged over outputs."""
        s = self._score_scale
        if squares_in_range(s):
            # dividing by a power of two commutes with the rounding while nothing leaves the range:
            # the same bits as scaling first, without two more (R, T, M, k) temporaries
            return mean_square(out - Y[te], axis=(2, 3)) / s / s
        return mean_square(out / s - Y[te] / s, axis=(2, 3))

    def _loo_path(self, K, y, Y, regs, ts):
        """Exact leave-one-out MSE ``(R, 1, N)`` of converged kernel regression, one decomposition
        (:meth:`_loo_residuals`). A ridge whose kernel is singular has no leave-one-out answer and
        scores ``inf``."""
        res = self._loo_residuals(K, Y, regs)
        mse = mean_square(res / self._score_scale, axis=2)
        return np.where(np.isnan(mse), np.inf, mse)[:, None, :]
