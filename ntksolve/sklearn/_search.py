"""The search that :class:`NTKRegressorCV` and :class:`NTKClassifierCV` share (private).

Grids of ridges and times, the folds, the held-out outputs of every fold at every ``(diag_reg,
time)`` (one decomposition per fold serving every ridge and time in memory; one Lanczos solve per
ridge on kernel tiles with ``chunks``), the table of results, the refit of the winner, and what a
saved search holds. The estimators add the score of held-out outputs and what they predict.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
from sklearn.base import is_classifier
from sklearn.model_selection import check_cv

from ntksolve.sklearn import _solve
from ntksolve.sklearn.base import _check_real, _standardisation

#: The automatic ``times`` grid: ``_AUTO_TIME_POINTS`` times log-spaced between
#: ``10**_AUTO_TIME_DECADES[0]`` and ``10**_AUTO_TIME_DECADES[1]`` in units of
#: ``k / (learning_rate * mean(diag Theta))`` steps, plus ``np.inf``. In these units a mode of
#: eigenvalue ``lambda`` has learned a fraction ``1 - exp(-lambda * u / (N mean diag))`` at ``u``:
#: the grid starts where even the top mode (``lambda <= N mean diag``) has learned < 10% and ends
#: where modes down to ``1e-7`` of the top one have converged.
_AUTO_TIME_POINTS = 49
_AUTO_TIME_DECADES = (-1.0, 7.0)
#: Cross-entropy has no converged limit and each time costs steps of its recurrence: its automatic
#: grid stops at ``1e3`` units, with fewer points, and has no ``np.inf``.
_AUTO_TIME_POINTS_CE = 25
_AUTO_TIME_DECADES_CE = (-1.0, 3.0)


class _GridSearch:
    """Mixin before an NTK estimator: cross-validated ``(diag_reg, time)``, then a refit (not public).

    Subclasses set ``_path_name`` (the fitted per-fold path, ``(R, T, n_folds)``) and
    ``_higher_is_better``, and define :meth:`_fold_scores` (held-out outputs -> scores).

    Scores are held on the scale ``_score_scale`` (a power of two; the attribute's units are its
    square times theirs): the regressor's squared errors of targets near 1e160 would overflow, and
    the choice must be the one made for the same targets divided by 1e150.
    """

    _fit_peak = "cv"  # the full kernel plus each fold's kernel and decomposition
    _path_name = "mse_path_"
    _higher_is_better = False
    #: Whether the fold solver is the cross-entropy run (one run per ridge) rather than MSE's closed form.
    _cross_entropy = False

    def _scale_of_scores(self, Y):
        """The power of two ``s`` the path is computed on (scores ``/ s²``): 1, scores of labels."""
        return 1.0

    def _time_at_predict(self):
        return self.time_

    # -- parameters ----------------------------------------------------------------------------
    def _check_params(self):
        """The shared parameters and the grids: ridges ``(R,)``, times ``(T,)`` or None (automatic);
        with ``chunks``, the one check of what the tiled search cannot do, before any work."""
        self._validate_params_ntk()
        regs = np.asarray(self.diag_regs, dtype=np.float64).reshape(-1)
        if regs.size == 0:
            raise ValueError("diag_regs must contain at least one value")
        for r in regs:
            _check_real(r, "diag_regs")
        ts = None
        if self.times is not None:
            ts = self._check_times(np.asarray(self.times, dtype=np.float64).reshape(-1))
            if ts.size == 0:
                raise ValueError("times must contain at least one value")
        elif not self._loo() and self._mse_solver() is not None:  # the automatic grid's finite times
            try:
                self._mse_solver().check_time(1.0)
            except ValueError as err:
                raise ValueError(f"times=None makes a grid of finite times: {err}; or pass times=[np.inf]") from None
        if self._loo():
            self._check_loo(ts)
        if self.chunks is not None:
            self._check_tiled_search()
        return regs, ts

    def _loo(self):
        return isinstance(self.cv, str) and self.cv == "loo"

    def _check_tiled_search(self):
        """What ``chunks`` cannot search, refused up front, each naming the alternative (the rule's
        limits were checked with the shared parameters)."""
        name = type(self).__name__
        if self._loo():
            raise ValueError(
                f"cv='loo' reads every leave-one-out residual off the decomposition of the whole kernel, "
                f"which chunks={self.chunks!r} never forms; use K-fold (cv=5) with chunks, or chunks=None"
            )
        method = _solve.resolve_solver(self.method)
        if not isinstance(method, (_solve.Auto, _solve.Krylov)):
            raise ValueError(
                f"{name}(chunks=...) solves each fold for every time of the grid by Lanczos on the kernel "
                f"tiles; method={self.method!r} cannot (eigh and expm need the kernel in memory, conjugate "
                "gradients answers t = inf only): use method='auto' or 'krylov', or chunks=None"
            )

    # -- grids and folds -------------------------------------------------------------------------
    def _auto_times(self, mean_diag, k):
        """The automatic grid from ``mean(diag Θ)`` of all the data and the number of outputs ``k``."""
        rule = self._rule()
        schedule = getattr(rule, "schedule", None)
        if schedule is not None and schedule.total_steps is not None:  # a schedule's own horizon, no t = inf
            return np.unique(np.ceil(np.geomspace(1, schedule.total_steps, _AUTO_TIME_POINTS)))
        rate = schedule.rates(1)[0] if schedule is not None else rule.learning_rate
        unit = k / (float(rate) * float(mean_diag))
        points, decades = (
            (_AUTO_TIME_POINTS_CE, _AUTO_TIME_DECADES_CE)
            if self._cross_entropy
            else (_AUTO_TIME_POINTS, _AUTO_TIME_DECADES)
        )
        ts = unit * np.logspace(*decades, points)
        if rule.name == "discrete":
            ts = np.unique(np.ceil(ts))
        return ts if schedule is not None or self._cross_entropy else np.concatenate([ts, [np.inf]])

    def _splits(self, X, y):
        """The folds: ``check_cv`` (stratified for a classifier, as scikit-learn makes them)."""
        return list(check_cv(self.cv, y, classifier=is_classifier(self)).split(X, y))

    def _fold_targets(self, Y):
        """``(Y_n, mean, std)``: a fold's targets on the scale it trains on, and that scale."""
        mean, std = _standardisation(Y, self._normalizes_y(False if self._cross_entropy else None))
        return ((Y - mean) / std).astype(self._dtype), mean, std

    def _held_out(self, X, Y, K, splits, regs, ts):
        """Yield ``(te, out)`` per fold: held-out outputs ``(R, T, M, k)`` on the targets' scale, the
        network trained on the fold's other points at every ridge and time.

        In memory (``K`` the kernel of all the data): one decomposition of the fold's kernel serves
        every ridge (a relative ridge only shifts its eigenvalues) and every time; cross-entropy
        runs once per ridge, recording every time. With ``chunks`` (``K`` None): kernel tiles, one
        Lanczos solve per ridge (:func:`ntksolve.dask.fit.validation_path_tiled`).
        """
        f0 = self.fx_train_0_
        image = self._jtheta(X) if self._rule().needs_parameters else None  # weight decay's J θ_0, per fold
        for tr, te in splits:
            Ytr, mean, std = self._fold_targets(Y[tr])
            if K is None:
                dynamics, rate = self._plain_rule("chunks=... (the tiled solve)")
                with self._solver_warnings():
                    out = _solve.validation_path_tiled(
                        self.network_,
                        X[tr],
                        Ytr.astype(np.float64),
                        X[te],
                        params=self.params_,
                        times=ts,
                        diag_regs=regs,
                        learning_rate=rate,
                        dynamics=dynamics,
                        fx_train_0=f0[tr],
                        fx_valid_0=f0[te],
                        chunks=self.chunks,
                        scheduler=self.scheduler,
                        dtype=self._dtype,
                    )
                yield te, out * std + mean
                continue
            K_te = K[np.ix_(te, tr)]
            decay = {} if image is None else {"jtheta_train": image[tr], "jtheta_test": image[te]}
            base = None
            outs = []
            for r, reg in enumerate(regs):
                with self._solver_warnings():
                    if self._cross_entropy:
                        pred = self._fold_cross_entropy(K[np.ix_(tr, tr)], Ytr, reg)
                    else:  # a relative ridge only shifts the eigenvalues: no second decomposition
                        if base is None:
                            base = self._solver(K[np.ix_(tr, tr)], Ytr, regs[0], shared=regs.size > 1)
                        pred = base if r == 0 else base.with_diag_reg(reg)
                    _, out = pred(ts, f0[tr], f0[te], K_te, **decay)  # (T, M, k): all times at once
                outs.append(np.asarray(out, dtype=np.float64) * std + mean)
            yield te, np.stack(outs)

    def _fold_cross_entropy(self, K_train, Y_train, diag_reg):
        raise NotImplementedError

    def _search(self, X, y, Y, regs, ts):
        """Fit the search: the path, the results and the refit (after :meth:`_set_training_state`)."""
        tiled = self.chunks is not None
        K = None if tiled else self._kernel(X)
        if ts is None:
            if self._loo():
                ts = np.array([np.inf])
            else:
                mean_diag = np.mean(self._kernel_diagonal(X) if tiled else np.diagonal(K))
                ts = self._auto_times(mean_diag, Y.shape[1])
        self._score_scale = self._scale_of_scores(Y)
        if self._loo():
            path = self._loo_path(K, y, Y, regs, ts)
        else:
            splits = self._splits(X, y)
            path = np.empty((regs.size, ts.size, len(splits)))
            for f, (te, out) in enumerate(self._held_out(X, Y, K, splits, regs, ts)):
                path[:, :, f] = self._fold_scores(out, te, y, Y)
        self.times_, self.diag_regs_ = ts, regs
        self._set_search_results(path)
        best = float(regs[self._best[0]])
        if tiled:
            self._fit_solver(X, best)
            return
        self._build_predictor(K, best)
        del K  # the predictor holds what it needs; the time's solve may then use the memory
        self._solve_at_time()

    def _loo_residuals(self, K, Y, regs):
        """Exact leave-one-out residuals ``(R, N, k)`` of converged kernel regression on the targets'
        scale, from one decomposition of ``K`` (NaN where a ridge leaves the kernel singular).

        Each point's residual when the model is refitted without it is ``[G r]_i / G_ii`` with
        ``G = (Θ + μI)⁻¹``. The targets are standardised once on all the data (a refit without one
        point would shift their mean by ``O(1/N)``; ``normalize_y=False`` makes it exact), and the
        ridge ``μ = diag_reg · mean(diag Θ)`` is that of all the data.
        """
        Yn, _, std = self._fold_targets(Y)
        base = self._solver(K, Yn, regs[0], shared=True)
        res = np.full((regs.size,) + Y.shape, np.nan)
        for r, reg in enumerate(regs):
            try:
                with self._solver_warnings():
                    pred = base if r == 0 else base.with_diag_reg(reg)
                    res[r] = np.asarray(pred.loo_residuals(self.fx_train_0_)).reshape(Y.shape) * std
            except ValueError:  # a singular kernel at this ridge
                continue
        return res

    def _check_loo(self, ts):
        """What ``cv='loo'`` cannot do, refused with the parameters (before any kernel): a rule whose
        ``t = inf`` is not kernel regression, finite times (``ts`` None: the grid ``[inf]``)."""
        rule = self._rule()
        if not rule.kernel_regression_limit:
            raise ValueError(
                f"cv='loo' is the leave-one-out of kernel regression, the converged limit of a constant "
                f"rate without weight decay, which dynamics={rule!r} does not reach; use K-fold (cv=5)"
            )
        if ts is not None and (ts.size != 1 or not np.isinf(ts[0])):
            raise ValueError(
                "cv='loo' is the exact leave-one-out of converged training (t = inf): "
                "pass times=None or times=[np.inf], or use K-fold (cv=5) for finite times"
            )

    # -- results -----------------------------------------------------------------------------------
    def _set_search_results(self, path):
        """The path (``_path_name``), ``time_``, ``best_score_``, ``cv_results_`` from ``times_``,
        ``diag_regs_`` and the path on the scale ``_score_scale`` (what is chosen and ranked).
        Ties go to the first candidate in ``diag_regs`` order, then the earliest time."""
        self._scaled_path = path
        s = self._score_scale
        with np.errstate(over="ignore", under="ignore"):  # inf (or 0) only where the true value is
            setattr(self, self._path_name, (path * s) * s)
        scores = path.mean(axis=2) if self._higher_is_better else -path.mean(axis=2)
        self._best = np.unravel_index(np.argmax(scores), scores.shape)
        self.time_ = float(self.times_[self._best[1]])
        with np.errstate(over="ignore", under="ignore"):
            self.best_score_ = float((scores[self._best] * s) * s)
        self.cv_results_ = _cv_results(self.diag_regs_, self.times_, path if self._higher_is_better else -path, s)

    # -- state ---------------------------------------------------------------------------------------
    def _state_extras(self, attrs, arrays):
        super()._state_extras(attrs, arrays)
        attrs["time_"] = float(self.time_)  # implied by the path; kept for readers of the file
        attrs["best_score_"] = float(self.best_score_)
        arrays["times"] = self.times_
        arrays["diag_regs"] = self.diag_regs_
        # on the scale of the search (the attribute may be inf where these are not), and that scale
        arrays[self._path_name.rstrip("_")] = self._scaled_path
        attrs["path_scale"] = float(self._score_scale)

    def _check_path(self, path):
        """ValueError unless a saved path holds valid scores."""
        if np.any(np.isnan(path)) or np.any(path < 0):
            raise ValueError(f"{self._path_name.rstrip('_')} must be >= 0 and not NaN")

    @staticmethod
    def _check_path_scale(scale):
        """ValueError unless a saved ``path_scale`` is a positive power of two."""
        if not (np.isfinite(scale) and scale > 0 and np.frexp(scale)[0] == 0.5):
            raise ValueError(f"path_scale must be a positive power of two, got {scale!r}")
        return scale

    def _restore_extras(self, state):
        k = super()._restore_extras(state)
        ts = self._check_times(state.array("times", np.float64, (None,)))
        regs = state.array("diag_regs", np.float64, (None,), finite=True)
        for r in regs:
            _check_real(r, "diag_regs")
        name = self._path_name.rstrip("_")
        path = state.array(name, np.float64, (regs.size, ts.size, None))
        if ts.size == 0 or regs.size == 0 or path.shape[2] == 0:
            raise ValueError(f"times, diag_regs and {name} must be non-empty")
        self._check_path(path)
        self._score_scale = self._check_path_scale(state.attr("path_scale", "float", default=1.0))
        grid_regs, grid_ts = self._check_params()
        if not np.array_equal(grid_regs, regs) or (grid_ts is not None and not np.array_equal(grid_ts, ts)):
            raise ValueError("diag_regs_ and times_ must be the grids of the diag_regs and times parameters")
        self.times_, self.diag_regs_ = ts, regs
        self._set_search_results(path)
        if (
            state.attr("time_", "float") != self.time_
            or state.attr("best_score_", "float") != self.best_score_
            or state.attr("diag_reg_", "float") != float(regs[self._best[0]])
        ):
            raise ValueError(f"time_, best_score_ and diag_reg_ must be the best entry of {name}")
        return k


def _cv_results(regs, ts, scores, scale=1.0):
    """``cv_results_`` of scores ``(R, T, n_folds)`` (higher is better) on the scale ``scale`` (a
    power of two: the results are ``scores * scale²``, ranked on the scores), as ``GridSearchCV``'s."""
    R, T, F = scores.shape
    scores = scores.reshape(R * T, F)
    mean = mean_unscaled = scores.mean(axis=1)
    with np.errstate(over="ignore", under="ignore"):
        mean, spread, scores = ((a * scale) * scale for a in (mean, _std(scores), scores))
    # GridSearchCV's ranks: equal scores share the best rank of their group ("min"), on the scores
    # before the scaling (which can round two different scores to one)
    rank = scipy.stats.rankdata(-mean_unscaled, method="min").astype(np.int32)
    res = {
        "param_diag_reg": np.repeat(regs, T),
        "param_time": np.tile(ts, R),
        "mean_test_score": mean,
        "std_test_score": spread,
        "rank_test_score": rank,
    }
    for f in range(F):
        res[f"split{f}_test_score"] = scores[:, f]
    res["params"] = [{"diag_reg": float(r), "time": float(t)} for r in regs for t in ts]
    return res


def _std(scores):
    """Per-candidate spread of the fold scores; NaN (no warning) where a score is infinite."""
    with np.errstate(invalid="ignore"):
        return scores.std(axis=1)
