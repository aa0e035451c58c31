"""NTKRegressorCV's search against explicit refits: shared decompositions and exact leave-one-out."""

import numpy as np
import pytest
from sklearn.model_selection import KFold

import ntksolve
from ntksolve import NTKRegressorCV


def _data(n=60, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1] ** 2 + 0.1 * rng.standard_normal(n)
    return X, y


def _ntk(X, Z=None):
    net = ntksolve.MLP((1, 1), activation="relu", bias_std=0.1)
    return ntksolve.analytic_kernels(net, X, Z).ntk


def test_kfold_path_equals_one_solve_per_fold_and_ridge():
    """Every (ridge, time, fold) entry equals a fresh eigendecomposition of that fold's ridged kernel."""
    X, y = _data()
    regs = (0.0, 1e-2, 0.3)
    times = np.array([0.5, 7.0, 90.0, np.inf])
    cv = KFold(3, shuffle=True, random_state=1)
    est = NTKRegressorCV(
        hidden_layer_sizes=(1, 1), bias_std=0.1, diag_regs=regs, times=times, cv=cv, normalize_y=False
    ).fit(X, y)
    K = _ntk(X)
    for f, (tr, te) in enumerate(cv.split(X)):
        for r, reg in enumerate(regs):
            pred = ntksolve.gradient_descent_mse(K[np.ix_(tr, tr)], y[tr], diag_reg=reg, method="eigh")
            _, out = pred(times, np.zeros(tr.size), np.zeros(te.size), K[np.ix_(te, tr)])
            np.testing.assert_allclose(
                est.mse_path_[r, :, f], np.mean((out - y[te]) ** 2, axis=1), rtol=1e-9, atol=1e-12
            )
    best = np.unravel_index(np.argmin(est.mse_path_.mean(axis=2)), est.mse_path_.shape[:2])
    assert est.diag_reg_ == regs[best[0]] and est.time_ == times[best[1]]


def test_loo_equals_refits_without_each_point():
    """cv='loo': each residual equals an explicit refit on the other N - 1 points (same ridge mu)."""
    X, y = _data(n=40)
    regs = (1e-3, 1e-1)
    est = NTKRegressorCV(hidden_layer_sizes=(1, 1), bias_std=0.1, diag_regs=regs, cv="loo", normalize_y=False).fit(X, y)
    K = _ntk(X)
    mu_unit = float(np.mean(np.diagonal(K)))  # the ridge of all the data, as the estimator documents
    assert est.mse_path_.shape == (2, 1, 40)
    for r, reg in enumerate(regs):
        for i in range(40):
            keep = np.delete(np.arange(40), i)
            A = K[np.ix_(keep, keep)] + reg * mu_unit * np.eye(39)
            f_i = K[i, keep] @ np.linalg.solve(A, y[keep])
            assert est.mse_path_[r, 0, i] == pytest.approx((y[i] - f_i) ** 2, rel=1e-8, abs=1e-14)
    assert est.time_ == np.inf
    assert est.diag_reg_ == regs[int(np.argmin(est.mse_path_.mean(axis=2)[:, 0]))]


def test_loo_refuses_finite_times():
    X, y = _data(n=20)
    with pytest.raises(ValueError, match="leave-one-out"):
        NTKRegressorCV(hidden_layer_sizes=(1,), cv="loo", times=[1.0, np.inf]).fit(X, y)


def test_loo_singular_ridge_is_never_chosen():
    """A duplicated row makes the unridged kernel singular: no leave-one-out answer there, so inf."""
    X, y = _data(n=20)
    X[5] = X[3]
    est = NTKRegressorCV(hidden_layer_sizes=(1,), cv="loo", diag_regs=(0.0, 1e-2)).fit(X, y)
    assert np.all(np.isinf(est.mse_path_[0])) and est.diag_reg_ == 1e-2
