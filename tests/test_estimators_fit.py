"""What ``fit`` does and says: the solve at ``time`` happens in fit, and the analytic kernel warns
about widths it does not use.

The numbers are pinned to the closed form computed here from the kernel (``scipy.linalg.eigh``),
to the predictor's own per-call path, and to parameter-space facts (the infinite-width kernel does
not depend on the widths).
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import scipy.linalg
from sklearn.base import clone

from ntksolve import AnalyticWidthWarning, NTKClassifier, NTKRegressor, NTKRegressorCV
from ntksolve.dynamics import GradientDescent, Schedule
from ntksolve.kernels import analytic_kernels
from ntksolve.nets.mlp import MLP


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 3))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] + 0.05 * rng.standard_normal(40)
    return X[:30], y[:30], X[30:], y[30:]


def _no_solver_calls(est, monkeypatch):
    """Make any call of the fitted solver an error: what predict then answers came from fit."""

    def refuse(*args, **kwargs):
        raise AssertionError("predict called the solver after fit")

    monkeypatch.setattr(est.predictor_, "predict", refuse)
    monkeypatch.setattr(type(est.predictor_), "__call__", lambda self, *a, **kw: refuse())


@pytest.mark.parametrize("method", ["auto", "eigh", "krylov"])
def test_predict_after_fit_applies_fit_solution_only(data, method, monkeypatch):
    X, y, Xt, _ = data
    t, reg_rel = 7.0, 0.05
    reg = NTKRegressor(hidden_layer_sizes=(512, 512), time=t, diag_reg=reg_rel, method=method).fit(X, y)
    # the closed form written out: f* = Θ* Θ_μ^{-1} (I - exp(-η Θ_μ t / N)) y_std, η = 1
    net = MLP((1, 1), "relu", 1.0, 0.1)  # the estimator's defaults
    K = analytic_kernels(net, X).ntk
    Ks = analytic_kernels(net, Xt, X).ntk
    mean, std = y.mean(), y.std()
    A = K + reg_rel * np.mean(np.diag(K)) * np.eye(len(y))
    lam, V = scipy.linalg.eigh(A)
    coef = V @ ((1 - np.exp(-lam * t / len(y))) / lam * (V.T @ ((y - mean) / std)))
    expected = Ks @ coef * std + mean
    _no_solver_calls(reg, monkeypatch)
    np.testing.assert_allclose(reg.predict(Xt), expected, rtol=1e-9, atol=1e-10)
    assert reg.score(Xt, expected) == pytest.approx(1.0)


def test_auto_beyond_its_eigh_size_needs_no_solver_at_predict(data, monkeypatch):
    # beyond AUTO_MIN_KRYLOV_SIZE (lowered here to keep the test small) method="auto" decides per
    # call; it used to decide, and decompose, at the first predict
    from ntksolve.dynamics import predictor, solvers

    monkeypatch.setattr(predictor, "AUTO_MIN_KRYLOV_SIZE", 8)
    monkeypatch.setattr(solvers, "AUTO_MIN_KRYLOV_SIZE", 8)
    X, y, Xt, _ = data
    reg = NTKRegressor(time=np.inf, diag_reg=0.1).fit(X, y)
    assert reg.predictor_.method in ("eigh", "krylov")  # Auto has decided: fit solved
    ref = NTKRegressor(time=np.inf, diag_reg=0.1, method="eigh").fit(X, y)
    expected = ref.predict_trajectory(Xt, [0.0, np.inf])[1]  # the eigh path, by the predictor itself
    _no_solver_calls(reg, monkeypatch)
    np.testing.assert_allclose(reg.predict(Xt), expected, rtol=1e-7, atol=1e-8)


def test_time_changed_after_fit_uses_the_stored_solver(data):
    X, y, Xt, _ = data
    reg = NTKRegressor(time=5.0).fit(X, y)
    reg.time = 40.0
    np.testing.assert_allclose(reg.predict(Xt), NTKRegressor(time=40.0).fit(X, y).predict(Xt), rtol=1e-11)
    reg.time = 5.0
    np.testing.assert_allclose(reg.predict(Xt), reg.predict_trajectory(Xt, [5.0, 40.0])[0], rtol=1e-11)


def test_solver_errors_arise_in_fit(data):
    X, y, _, _ = data
    # a schedule far above the critical rate: its divergence is judged over the steps solved for
    rule = GradientDescent(Schedule.cosine(1e4, 20))
    est = NTKRegressor(dynamics=rule, time=20)
    with pytest.raises(ValueError, match="diverge"):
        est.fit(X, y)


def test_weight_decay_coefficients_match_the_per_call_path(data):
    X, y, Xt, _ = data
    rule = GradientDescent(0.5, momentum=0.5, weight_decay=0.05)
    reg = NTKRegressor(
        kernel="empirical", hidden_layer_sizes=(16,), random_state=1, dynamics=rule, time=30, diag_reg=0.0
    ).fit(X, y)
    per_call = reg.predict_trajectory(Xt, [0, 30])[1]  # the predictor with J θ_0 on the test inputs
    np.testing.assert_allclose(reg.predict(Xt), per_call, rtol=1e-10, atol=1e-12)


def test_cross_entropy_fit_runs_to_time_and_predict_reuses_it(data, monkeypatch):
    from ntksolve.sklearn import _solve

    X, y, Xt, _ = data
    labels = (y > np.median(y)).astype(int) + (y > np.quantile(y, 0.8))
    clf = NTKClassifier(loss="log_loss", time=25.0).fit(X, labels)
    runs = []
    monkeypatch.setattr(_solve._fs, "flow_cross_entropy", lambda *a, **kw: runs.append(1))
    proba = clf.predict_proba(Xt)
    assert runs == []
    monkeypatch.undo()
    np.testing.assert_allclose(proba, clf.predict_proba_trajectory(Xt, [0.0, 25.0])[1], rtol=1e-7, atol=1e-9)


def test_pickle_and_clone_keep_fit_solution(data):
    X, y, Xt, _ = data
    reg = NTKRegressor(time=9.0).fit(X, y)
    again = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(again.predict(Xt), reg.predict(Xt))
    assert not hasattr(clone(reg), "predictor_")


# -- the analytic kernel and the widths --------------------------------------------------------
def _caught(fit):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fit()
    return out, [w for w in rec if issubclass(w.category, AnalyticWidthWarning)]


def test_analytic_kernel_warns_once_per_fit_about_unused_widths(data):
    X, y, Xt, _ = data
    narrow, rec = _caught(lambda: NTKRegressor(hidden_layer_sizes=(1, 1)).fit(X, y))
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "depth" in msg and "(512, 512)" in msg and "kernel='empirical'" in msg
    assert rec[0].filename == __file__  # points at the caller's fit
    wide, rec = _caught(lambda: NTKRegressor(hidden_layer_sizes=(512, 512)).fit(X, y))
    assert rec == []
    # what the warning says: the widths change nothing at infinite width
    np.testing.assert_array_equal(narrow.predict(Xt), wide.predict(Xt))
    # a second fit warns again, once
    _, rec = _caught(lambda: narrow.fit(X, y))
    assert len(rec) == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: NTKClassifier(hidden_layer_sizes=(30,)),
        lambda: NTKRegressorCV(hidden_layer_sizes=(64, 64), diag_regs=(0.1,), cv=3, times=[5.0]),
    ],
)
def test_every_estimator_warns_once(data, make):
    X, y, _, _ = data
    target = (y > 0).astype(int) if isinstance(make(), NTKClassifier) else y
    _, rec = _caught(lambda: make().fit(X, target))
    assert len(rec) == 1


def test_no_width_warning_where_widths_are_used(data):
    X, y, _, _ = data
    est = NTKRegressor(kernel="empirical", hidden_layer_sizes=(7, 5), random_state=0)
    _, rec = _caught(lambda: est.fit(X, y))
    assert rec == []
    assert est.get_params()["hidden_layer_sizes"] == (7, 5)  # nothing rewritten
    assert clone(est).hidden_layer_sizes == (7, 5)


@pytest.mark.parametrize("scale", [1e200, 1e300, 1e-300])
def test_standardisation_of_targets_anywhere_in_the_float_range(data, scale):
    """normalize_y's std of targets near 1e200 squared them to inf: the model trained on zeros and
    predicted NaN (near 1e-300, to 0: the ensemble's std came out unscaled). The model of the
    standardised targets is scale-equivariant: predictions and the ensemble's std scale with the
    targets (the estimator at scale 1 is the reference)."""
    X, y, Xt = data[0], data[1], data[2]
    ref_mean, ref_std = NTKRegressor(time=5.0).fit(X, y).predict(Xt, return_std=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow on the way
        reg = NTKRegressor(time=5.0).fit(X, y * scale)
        mean, std = reg.predict(Xt, return_std=True)
    np.testing.assert_allclose(mean / scale, ref_mean, rtol=1e-12)
    np.testing.assert_allclose(std / scale, ref_std, rtol=1e-12)
    np.testing.assert_allclose(reg.y_train_[:, 0], (y - y.mean()) / y.std(), rtol=1e-12, atol=1e-14)


def test_ensemble_std_uses_the_fitted_rule_like_the_mean(data):
    """learning_rate changed after fit: the mean still answers with the fitted solver (scikit-learn's
    rule: parameters act at the next fit), and the ensemble's std must too (it took the new rate:
    a spread of one training run around the mean of another)."""
    X, y, Xt = data[0], data[1], data[2]
    ref = NTKRegressor(time=5.0, learning_rate=1.0).fit(X, y).predict(Xt, return_std=True)
    reg = NTKRegressor(time=5.0, learning_rate=1.0).fit(X, y).set_params(learning_rate=0.3)
    for got, want in zip(reg.predict(Xt, return_std=True), ref):
        np.testing.assert_allclose(got, want, rtol=1e-13)
