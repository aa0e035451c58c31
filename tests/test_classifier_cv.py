"""NTKClassifierCV: every fold's score is that of an explicit NTKClassifier refit on the fold's other
points, its choice is the best of those refits, and it behaves as a scikit-learn classifier."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import ntksolve
from ntksolve import NTKClassifier, NTKClassifierCV
from ntksolve.dynamics import GradientDescent


@parametrize_with_checks(
    [
        NTKClassifierCV(diag_regs=(1e-2, 1e-1), cv=3),
        NTKClassifierCV(
            loss="log_loss",
            dynamics="discrete",
            learning_rate=5.0,
            times=[10, 30],
            diag_regs=(0.1,),
            cv=3,
            scoring="log_loss",
        ),
    ]
)
def test_sklearn_contract(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def three_classes():
    rng = np.random.default_rng(4)
    centres = np.array([[0.0, 0.0], [1.2, 0.3], [0.4, 1.1]])
    y = np.repeat([0, 1, 2], 16)
    X = centres[y] + 0.55 * rng.standard_normal((y.size, 2))
    X = np.hstack([X, 0.3 * rng.standard_normal((y.size, 1))])
    labels = np.array(["a", "b", "c"])[y]  # string labels: the coding must follow classes_
    return X, labels


def _explicit(X, y, splits, regs, ts, score, **params):
    """Scores ``(R, T, folds)`` of NTKClassifier refitted on each fold's training part."""
    out = np.empty((len(regs), len(ts), len(splits)))
    for f, (tr, te) in enumerate(splits):
        for r, reg in enumerate(regs):
            for i, t in enumerate(ts):
                clf = NTKClassifier(diag_reg=reg, time=t, **params).fit(X[tr], y[tr])
                out[r, i, f] = score(clf, X[te], y[te])
    return out


def _accuracy(clf, X, y):
    return clf.score(X, y)


def _neg_log_loss(clf, X, y):
    return -log_loss(y, clf.predict_proba(X), labels=clf.classes_)


def _first_best(scores):
    mean = scores.mean(axis=2)
    return np.unravel_index(np.argmax(mean), mean.shape)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"normalize_y": False, "kernel": "empirical", "hidden_layer_sizes": (24,), "random_state": 0},
        {"dynamics": "discrete", "learning_rate": 1.0},
    ],
)
def test_squared_loss_scores_equal_explicit_refits(three_classes, params):
    X, y = three_classes
    regs, ts = (0.0, 1e-2, 1.0), [1.0, 10.0, 100.0, np.inf]
    cv = NTKClassifierCV(diag_regs=regs, times=ts, cv=3, **params).fit(X, y)
    splits = list(StratifiedKFold(3).split(X, y))
    expected = _explicit(X, y, splits, regs, ts, _accuracy, **params)
    np.testing.assert_allclose(cv.scores_path_, expected, rtol=0, atol=1e-10)
    assert 0.3 < expected.min() and expected.max() < 1.0  # the grid is not uniform: the choice means something
    r, i = _first_best(expected)
    assert (cv.diag_reg_, cv.time_) == (regs[r], ts[i])
    assert cv.best_score_ == pytest.approx(expected.mean(axis=2)[r, i], abs=1e-12)
    refit = NTKClassifier(diag_reg=regs[r], time=ts[i], **params).fit(X, y)
    np.testing.assert_allclose(cv.decision_function(X), refit.decision_function(X), rtol=1e-10, atol=1e-10)
    assert cv.cv_results_["mean_test_score"].shape == (len(regs) * len(ts),)


@pytest.mark.parametrize(
    "params",
    [
        {"dynamics": "discrete", "learning_rate": 3.0},
        {"dynamics": GradientDescent(2.0, momentum=0.5), "batch_size": 10, "random_state": 3},
        {
            "dynamics": GradientDescent(1.0, weight_decay=0.02),
            "kernel": "empirical",
            "hidden_layer_sizes": (16,),
            "random_state": 1,
        },
    ],
)
def test_cross_entropy_log_loss_scores_equal_explicit_refits(three_classes, params):
    X, y = three_classes
    regs, ts = (1e-2, 0.3), [3, 15, 40]
    cv = NTKClassifierCV(loss="log_loss", scoring="log_loss", diag_regs=regs, times=ts, cv=3, **params).fit(X, y)
    splits = list(StratifiedKFold(3).split(X, y))
    expected = _explicit(X, y, splits, regs, ts, _neg_log_loss, loss="log_loss", **params)
    np.testing.assert_allclose(cv.scores_path_, expected, rtol=0, atol=1e-10)
    r, i = _first_best(expected)
    assert (cv.diag_reg_, cv.time_) == (regs[r], ts[i])
    refit = NTKClassifier(loss="log_loss", diag_reg=regs[r], time=ts[i], **params).fit(X, y)
    np.testing.assert_allclose(cv.predict_proba(X), refit.predict_proba(X), rtol=0, atol=1e-10)


def test_cross_entropy_flow_accuracy_matches_refits(three_classes):
    X, y = three_classes
    regs, ts = (0.1,), [2.0, 20.0]
    cv = NTKClassifierCV(loss="log_loss", diag_regs=regs, times=ts, cv=3).fit(X, y)
    splits = list(StratifiedKFold(3).split(X, y))
    np.testing.assert_array_equal(cv.scores_path_, _explicit(X, y, splits, regs, ts, _accuracy, loss="log_loss"))


def test_leave_one_out_is_refitting_without_each_point(three_classes):
    X, y = three_classes
    cv = NTKClassifierCV(cv="loo", diag_regs=(0.0,), normalize_y=False).fit(X, y)
    assert cv.scores_path_.shape == (1, 1, y.size) and cv.time_ == np.inf
    expected = [
        NTKClassifier(diag_reg=0.0, normalize_y=False).fit(np.delete(X, i, 0), np.delete(y, i)).predict(X[i : i + 1])[0]
        == y[i]
        for i in range(y.size)
    ]
    np.testing.assert_array_equal(cv.scores_path_[0, 0], np.array(expected, dtype=float))
    assert 0 < cv.best_score_ < 1


@pytest.mark.parametrize(
    "params, match",
    [
        ({"scoring": "log_loss"}, "scoring='log_loss' scores probabilities"),
        ({"scoring": "roc_auc"}, "scoring must be one of"),
        ({"loss": "log_loss", "cv": "loo", "times": [5.0]}, "cv='loo' is the exact leave-one-out"),
        ({"loss": "log_loss", "times": [5.0, np.inf]}, "no converged limit"),
        ({"loss": "log_loss", "chunks": 16, "times": [5.0]}, "chunks=16"),
        ({"chunks": 16, "cv": "loo"}, "cv='loo' reads every leave-one-out"),
        ({"chunks": 16, "method": "eigh"}, "method='eigh' cannot"),
        ({"chunks": 16, "dynamics": GradientDescent(0.5, momentum=0.9)}, "use chunks=None"),
    ],
)
def test_refusals_before_any_kernel(three_classes, params, match, monkeypatch):
    X, y = three_classes
    from ntksolve.sklearn import base

    monkeypatch.setattr(base, "analytic_kernels", lambda *a, **k: pytest.fail("a kernel was computed"))
    with pytest.raises(ValueError, match=match):
        NTKClassifierCV(**params).fit(X, y)


def test_pipeline_grid_search_clone_pickle_and_save(three_classes, tmp_path):
    X, y = three_classes
    est = NTKClassifierCV(diag_regs=(1e-2, 1e-1), times=[10.0, np.inf], cv=3)
    pipe = make_pipeline(StandardScaler(), est).fit(X, y)
    assert pipe.score(X, y) > 0.7
    grid = GridSearchCV(est, {"hidden_layer_sizes": [(512,), (512, 512)]}, cv=2).fit(X, y)
    assert grid.best_params_["hidden_layer_sizes"] in [(512,), (512, 512)]
    fitted = clone(est).fit(X, y)
    copy = clone(fitted)
    assert copy.get_params() == est.get_params() and not hasattr(copy, "time_")
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.decision_function(X), fitted.decision_function(X))
    fitted.save(tmp_path / "cv.npz")
    loaded = ntksolve.load(tmp_path / "cv.npz")
    assert isinstance(loaded, NTKClassifierCV) and (loaded.time_, loaded.diag_reg_) == (fitted.time_, fitted.diag_reg_)
    np.testing.assert_array_equal(loaded.scores_path_, fitted.scores_path_)
    np.testing.assert_allclose(loaded.decision_function(X), fitted.decision_function(X), rtol=1e-12, atol=1e-12)


def test_exports():
    from ntksolve import sklearn as sk

    assert ntksolve.NTKClassifierCV is sk.NTKClassifierCV is NTKClassifierCV
    assert "NTKClassifierCV" in ntksolve.__all__ and "NTKClassifierCV" in sk.__all__


def test_cross_entropy_automatic_grid_is_finite_and_in_the_kernels_units(three_classes):
    X, y = three_classes
    cv = NTKClassifierCV(loss="log_loss", diag_regs=(0.1,), cv=2, learning_rate=2.0).fit(X, y)
    K = ntksolve.analytic_kernels(ntksolve.MLP((1,), "relu", 1.0, 0.1), X).ntk
    unit = 3 / (2.0 * np.mean(np.diag(K)))  # k / (learning_rate * mean diag Θ) steps
    np.testing.assert_allclose(cv.times_, unit * np.logspace(-1, 3, 25), rtol=1e-12)
    squared = NTKClassifierCV(diag_regs=(0.1,), cv=2, learning_rate=2.0).fit(X, y)
    assert squared.times_[-1] == np.inf and squared.times_.size == 50
    np.testing.assert_allclose(squared.times_[:-1], unit * np.logspace(-1, 7, 49), rtol=1e-12)
