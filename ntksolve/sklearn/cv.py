""":class:`NTKRegressorCV`: ``time`` (early stopping, without any training) and ``diag_reg`` by K-fold CV.

One decomposition per fold serves every ``diag_reg`` (a relative ridge only shifts the eigenvalues)
and every time; ``cv="loo"`` is the exact leave-one-out of converged training from one
decomposition of all the data, as :class:`~sklearn.linear_model.RidgeCV` picks its ``alpha``.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import check_cv

from ntksolve.sklearn._params import CV_PARAMETERS, REGRESSOR_PARAMETERS, SHARED_PARAMETERS, document, keyword_init
from ntksolve.sklearn.base import _check_real, _standardisation, register
from ntksolve.sklearn.regressor import _NTKRegressorBase

__all__ = ["NTKRegressorCV"]

#: The automatic ``times`` grid of :class:`NTKRegressorCV`: ``_AUTO_TIME_POINTS`` times log-spaced
#: between ``10**_AUTO_TIME_DECADES[0]`` and ``10**_AUTO_TIME_DECADES[1]`` in units of
#: ``k / (learning_rate * mean(diag Theta))`` steps, plus ``np.inf``. In these units a mode of
#: eigenvalue ``lambda`` has learned a fraction ``1 - exp(-lambda * u / (N mean diag))`` at ``u``:
#: the grid starts where even the top mode (``lambda <= N mean diag``) has learned < 10% and ends
#: where modes down to ``1e-7`` of the top one have converged.
_AUTO_TIME_POINTS = 49
_AUTO_TIME_DECADES = (-1.0, 7.0)


@register
@document(CV_PARAMETERS, REGRESSOR_PARAMETERS, SHARED_PARAMETERS)
class NTKRegressorCV(_NTKRegressorBase):
    """:class:`NTKRegressor` that chooses ``time`` and ``diag_reg`` by K-fold cross-validation.

    The kernel of all the data is computed once and sliced per fold; each fold's train kernel is
    decomposed once, and every ``diag_reg`` shifts its eigenvalues, after which every time of the grid
    costs two matrix products: a grid of 50 times and 5 ridges costs about one fit per fold. This is early stopping
    chosen by validation error, without any training, the way :class:`~sklearn.linear_model.RidgeCV`
    chooses ``alpha``. The score is the mean squared error on the original scale (averaged over
    outputs); the winner is refitted on all the data (reusing the kernel). The kernel of all the
    data is held in memory (there is no ``chunks``).

    All parameters are keyword-only.

    Parameters
    ----------
    {parameters}

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
    amplitude_, noise_variance_, log_marginal_likelihood_value_
        As :class:`NTKRegressor` (``uncertainty="predictive"``), fitted on the refitted model's
        decomposition.
    """

    _fit_peak = "cv"  # the full kernel plus each fold's kernel and decomposition

    __init__ = keyword_init(CV_PARAMETERS, REGRESSOR_PARAMETERS, SHARED_PARAMETERS)

    _tiled_capable = False
    chunks = None  # the search needs the whole kernel in memory
    scheduler = None

    def _time_at_predict(self):
        return self.time_

    def _check_params(self):
        """The shared parameters and the grids: ridges ``(R,)``, times ``(T,)`` or None (automatic)."""
        self._validate_params_ntk()
        regs = np.asarray(self.diag_regs, dtype=np.float64).reshape(-1)
        if regs.size == 0:
            raise ValueError("diag_regs must contain at least one value")
        for r in regs:
            _check_real(r, "diag_regs")
        if self.times is None:
            return regs, None
        ts = self._check_times(np.asarray(self.times, dtype=np.float64).reshape(-1))
        if ts.size == 0:
            raise ValueError("times must contain at least one value")
        return regs, ts

    def _auto_times(self, K, k):
        rule = self._rule()
        rate = rule.schedule.rates(1)[0] if getattr(rule, "schedule", None) is not None else rule.learning_rate
        unit = k / (float(rate) * float(np.mean(np.diagonal(K))))
        ts = unit * np.logspace(*_AUTO_TIME_DECADES, _AUTO_TIME_POINTS)
        schedule = getattr(rule, "schedule", None)
        if schedule is not None and schedule.total_steps is not None:  # a schedule's own horizon, no t = inf
            return np.unique(np.ceil(np.geomspace(1, schedule.total_steps, _AUTO_TIME_POINTS)))
        if rule.name == "discrete":
            ts = np.unique(np.ceil(ts))
        return ts if schedule is not None else np.concatenate([ts, [np.inf]])

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
        regs, ts = self._check_params()
        X, y, Y = self._fit_targets(X, y)
        # the network (and, for the empirical kernel, its parameters and f_0) of the final model
        self._set_training_state(X, Y)
        K = self._kernel(X)
        f0 = self.fx_train_0_
        if ts is None:
            ts = np.array([np.inf]) if isinstance(self.cv, str) and self.cv == "loo" else self._auto_times(K, Y.shape[1])
        if isinstance(self.cv, str) and self.cv == "loo":
            mse = self._loo_path(K, Y, f0, regs, ts)
        else:
            mse = self._kfold_path(K, X, y, Y, f0, regs, ts)
        self.times_ = ts
        self.diag_regs_ = regs
        self.mse_path_ = mse
        self._set_search_results()
        self._build_predictor(K, float(regs[self._best[0]]))
        del K
        self._solve_at_time()
        return self

    def _kfold_path(self, K, X, y, Y, f0, regs, ts):
        """Validation MSE ``(R, T, folds)``: one decomposition per fold serves every ridge and time."""
        splits = list(check_cv(self.cv).split(X, y))
        mse = np.empty((regs.size, ts.size, len(splits)))
        image = self._jtheta(X) if self._rule().needs_parameters else None  # weight decay's J θ_0, sliced per fold
        for f, (tr, te) in enumerate(splits):
            Ytr = Y[tr]
            mean, std = _standardisation(Ytr, self._normalizes_y())
            Ytr_n = ((Ytr - mean) / std).astype(self._dtype)
            K_te = K[np.ix_(te, tr)]
            base = self._solver(K[np.ix_(tr, tr)], Ytr_n, regs[0], shared=regs.size > 1)
            decay = {} if image is None else {"jtheta_train": image[tr], "jtheta_test": image[te]}
            for r, reg in enumerate(regs):
                # a relative ridge only shifts the eigenvalues: no second decomposition
                with self._solver_warnings():
                    pred = base if r == 0 else base.with_diag_reg(reg)
                    _, out = pred(ts, f0[tr], f0[te], K_te, **decay)  # (T, M, k): all times at once
                err = out * std + mean - Y[te]
                mse[r, :, f] = np.mean(err * err, axis=(1, 2))
        return mse

    def _loo_path(self, K, Y, f0, regs, ts):
        """Exact leave-one-out MSE ``(R, 1, N)`` of converged kernel regression, one decomposition.

        Each point's residual when the model is refitted without it is ``[G r]_i / G_ii`` with
        ``G = (Θ + μI)⁻¹``. The targets are standardised once on all the data (a refit without one
        point would shift their mean by ``O(1/N)``; ``normalize_y=False`` makes the score exact), and
        the ridge ``μ = diag_reg · mean(diag Θ)`` is that of all the data. A
        ridge whose kernel is singular has no leave-one-out answer and scores ``inf``.
        """
        if ts.size != 1 or not np.isinf(ts[0]):
            raise ValueError("cv='loo' is the exact leave-one-out of converged training (t = inf): "
                             "pass times=None or times=[np.inf], or use K-fold (cv=5) for finite times")
        rule = self._rule()
        if not (rule.name == "continuous" or (rule.schedule is None and not rule.needs_parameters)):
            raise ValueError(f"cv='loo' is the leave-one-out of kernel regression, the converged limit of a constant "
                             f"rate without weight decay, which dynamics={rule!r} does not reach; use K-fold (cv=5)")
        mean, std = _standardisation(Y, self._normalizes_y())
        Yn = ((Y - mean) / std).astype(self._dtype)
        base = self._solver(K, Yn, regs[0], shared=True)
        mse = np.empty((regs.size, 1, Y.shape[0]))
        for r, reg in enumerate(regs):
            try:
                with self._solver_warnings():
                    pred = base if r == 0 else base.with_diag_reg(reg)
                    res = pred.loo_residuals(f0)
            except ValueError:  # a singular kernel at this ridge
                mse[r, 0] = np.inf
                continue
            res = np.asarray(res).reshape(Y.shape[0], -1) * std
            mse[r, 0] = np.mean(res * res, axis=1)
        return mse

    def _set_search_results(self):
        """``time_``, ``best_score_``, ``cv_results_`` from ``times_``, ``diag_regs_``, ``mse_path_``."""
        mean_mse = self.mse_path_.mean(axis=2)
        self._best = np.unravel_index(np.argmin(mean_mse), mean_mse.shape)
        self.time_ = float(self.times_[self._best[1]])
        self.best_score_ = -float(mean_mse[self._best])
        self.cv_results_ = self._cv_results(self.diag_regs_, self.times_, self.mse_path_)

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
            "std_test_score": _std(scores),
            "rank_test_score": rank,
        }
        for f in range(F):
            res[f"split{f}_test_score"] = scores[:, f]
        res["params"] = [{"diag_reg": float(r), "time": float(t)} for r in regs for t in ts]
        return res

    # -- state ---------------------------------------------------------------------------------
    def _state_extras(self, attrs, arrays):
        super()._state_extras(attrs, arrays)
        attrs["time_"] = float(self.time_)  # implied by mse_path; kept for readers of the file
        attrs["best_score_"] = float(self.best_score_)
        arrays["times"] = self.times_
        arrays["diag_regs"] = self.diag_regs_
        arrays["mse_path"] = self.mse_path_

    def _restore_extras(self, state):
        k = super()._restore_extras(state)
        ts = self._check_times(state.array("times", np.float64, (None,)))
        regs = state.array("diag_regs", np.float64, (None,), finite=True)
        for r in regs:
            _check_real(r, "diag_regs")
        mse = state.array("mse_path", np.float64, (regs.size, ts.size, None))
        if ts.size == 0 or regs.size == 0 or mse.shape[2] == 0 or np.any(np.isnan(mse)) or np.any(mse < 0):
            raise ValueError("times, diag_regs and mse_path must be non-empty, mse_path >= 0 and not NaN")
        grid_regs, grid_ts = self._check_params()
        if not np.array_equal(grid_regs, regs) or (grid_ts is not None and not np.array_equal(grid_ts, ts)):
            raise ValueError("diag_regs_ and times_ must be the grids of the diag_regs and times parameters")
        self.times_, self.diag_regs_, self.mse_path_ = ts, regs, mse
        self._set_search_results()
        if (state.attr("time_", "float") != self.time_ or state.attr("best_score_", "float") != self.best_score_
                or state.attr("diag_reg_", "float") != float(regs[self._best[0]])):
            raise ValueError("time_, best_score_ and diag_reg_ must be the best entry of mse_path")
        return k


def _std(scores):
    """Per-candidate spread of the fold scores; NaN (no warning) where a score is infinite."""
    with np.errstate(invalid="ignore"):
        return scores.std(axis=1)
