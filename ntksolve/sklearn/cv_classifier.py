""":class:`NTKClassifierCV`: ``time`` (early stopping, without any training) and ``diag_reg`` of
:class:`NTKClassifier` by cross-validation, scored by accuracy or log-loss.

For the squared loss one decomposition per fold serves every ``diag_reg`` and every time, as in
:class:`NTKRegressorCV`; for cross-entropy, which has no decomposition (its dynamics are nonlinear),
each ``(fold, diag_reg)`` is one run of the recurrence that records every time of the grid.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss

from ntksolve.sklearn import _solve
from ntksolve.sklearn._params import (
    CLASSIFIER_CV_PARAMETERS,
    CLASSIFIER_PARAMETERS,
    CV_PARAMETERS,
    SEARCH_TILED_PARAMETERS,
    SHARED_PARAMETERS,
    document,
    keyword_init,
)
from ntksolve.sklearn._search import _GridSearch
from ntksolve.sklearn.base import _check_choice, register
from ntksolve.sklearn.classifier import CROSS_ENTROPY, NTKClassifier

__all__ = ["NTKClassifierCV"]

#: Values of ``scoring``.
SCORINGS = ("accuracy", "log_loss")


@register
@document(CV_PARAMETERS, CLASSIFIER_CV_PARAMETERS, CLASSIFIER_PARAMETERS, SEARCH_TILED_PARAMETERS, SHARED_PARAMETERS)
class NTKClassifierCV(_GridSearch, NTKClassifier):
    """:class:`NTKClassifier` that chooses ``time`` and ``diag_reg`` by cross-validation.

    The kernel of all the data is computed once and sliced per fold (stratified K-fold for an
    int ``cv``). With ``loss="squared_error"`` each fold's train kernel is decomposed once and
    every ``diag_reg`` shifts its eigenvalues, after which every time of the grid costs two matrix
    products, as in :class:`NTKRegressorCV`. With ``loss="log_loss"`` there is no decomposition to
    share (cross-entropy's dynamics are nonlinear in the logits): each ``(fold, diag_reg)`` is one
    run of the recurrence (or of the flow) to the last time of the grid, recording every time on
    the way, so a long grid costs its steps. Each candidate is scored on the held-out fold by
    accuracy, or by log-loss (``scoring``); the winner is refitted on all the data (reusing the
    kernel). Every fold's score equals that of ``NTKClassifier`` with the same parameters fitted
    on the fold's other points, with the fold's own standardisation of the codes (the label coding
    is that of all the data: a fold's training part that lacks a class still has its column).

    ``cv="loo"`` (squared loss only): the exact leave-one-out of converged training, from one
    decomposition of all the data (codes standardised on all the data; ``normalize_y=False`` makes
    it exact). With ``chunks`` (squared loss only) no kernel is formed: see the parameter.

    {parameters}

    Attributes
    ----------
    {search_attributes}
    scores_path_ : ndarray, shape (R, T, n_folds)
        Held-out score of every ``(diag_reg, time)`` on every fold: accuracy, or the negated
        log-loss (higher is better either way); ``-inf`` where ``cv="loo"`` meets a singular kernel.
    cv_results_ : dict of ndarrays, each of shape (R * T,)
        ``param_diag_reg``, ``param_time``, ``mean_test_score``, ``std_test_score``,
        ``rank_test_score``, ``split{i}_test_score``, ``params``, as for ``GridSearchCV``.
    best_score_ : float
        The best mean held-out score.
    classes_, X_train_, y_train_, network_, params_, fx_train_0_, predictor_, tiled_, n_features_in_
        As :class:`NTKClassifier`, for the refitted model.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = NTKClassifierCV(diag_regs=(1e-3, 1e-1)).fit(X[:300] / 16, y[:300])
    >>> clf.cv_results_["mean_test_score"].shape
    (100,)
    """

    __init__ = keyword_init(
        CV_PARAMETERS, CLASSIFIER_CV_PARAMETERS, CLASSIFIER_PARAMETERS, SEARCH_TILED_PARAMETERS, SHARED_PARAMETERS
    )

    _path_name = "scores_path_"
    _higher_is_better = True
    _parameters_added_later = {}

    @property
    def _cross_entropy(self):
        return self.loss in CROSS_ENTROPY

    def _check_params(self):
        """The loss's parameters, the scoring, and the search's (grids, and what ``chunks`` refuses)."""
        self._check_loss()
        _check_choice(self.scoring, "scoring", SCORINGS)
        if self.scoring == "log_loss" and not self._cross_entropy:
            raise ValueError(
                f"scoring='log_loss' scores probabilities, and a network trained on the squared loss "
                f"(loss={self.loss!r}) gives none; use scoring='accuracy', or loss='log_loss'"
            )
        if self._loo() and self._cross_entropy:
            raise ValueError(
                "cv='loo' is the exact leave-one-out of converged squared-loss training; cross-entropy "
                "has no converged limit and no decomposition to read it from: use K-fold (cv=5)"
            )
        return super()._check_params()

    def fit(self, X, y):
        """Cross-validate ``(diag_reg, time)`` on one kernel of all the data, then refit.

        {fit_labels}
        """
        regs, ts = self._check_params()
        X, y, Y = self._fit_labels(X, y)
        self._search(X, y, Y, regs, ts)
        return self

    def _fold_cross_entropy(self, K_train, Y_train, diag_reg):
        """The cross-entropy trajectory of one fold at one ridge, as :class:`NTKClassifier` makes it."""
        return _solve.CrossEntropyPredictor(
            K_train,
            Y_train,
            diag_reg=diag_reg,
            rule=self._rule(),
            batch_size=self.batch_size,
            batch_seed=self._batch_seed,
        )

    def _predicted(self, out):
        """Held-out outputs ``(..., M, k)`` -> predicted labels ``(..., M)``."""
        idx = (out[..., 0] > 0).astype(int) if out.shape[-1] == 1 else np.argmax(out, axis=-1)
        return self.classes_[idx]

    def _fold_scores(self, out, te, y, Y):
        """Held-out scores ``(R, T)``: accuracy, or the negated mean log-loss."""
        if self.scoring == "accuracy":
            return np.mean(self._predicted(out) == y[te], axis=-1)
        proba = self._probabilities(out)
        R, T = out.shape[:2]
        return np.array([[-log_loss(y[te], proba[r, t], labels=self.classes_) for t in range(T)] for r in range(R)])

    def _loo_path(self, K, y, Y, regs, ts):
        """Exact leave-one-out accuracy ``(R, 1, N)`` (0 or 1 per point), one decomposition: each
        point's decision when refitted without it is its code minus its leave-one-out residual."""
        res = self._loo_residuals(K, Y, regs)  # (R, N, k) on the codes' scale
        correct = (self._predicted(Y[None] - res) == y[None]).astype(np.float64)
        correct[np.isnan(res).any(axis=2)] = -np.inf
        return correct[:, None, :]

    def _check_path(self, path):
        ok = np.all((path >= 0) & (path <= 1) | (path == -np.inf)) if self.scoring == "accuracy" else np.all(path <= 0)
        if np.any(np.isnan(path)) or not ok:
            raise ValueError("scores_path must hold accuracies in [0, 1] (or -inf), or negated log-losses <= 0")
