"""Sums of squares anywhere in the float64 range: the helper against mpmath, and every place that
squares targets or residuals (the MSE, conjugate gradients, Lanczos, the CV search, score) against
the same computation on targets near 1, scaled back (a power of ten: an independent scaling)."""

import json
import warnings

import numpy as np
import pytest
from sklearn.model_selection import KFold

import ntksolve
from ntksolve import NTKRegressor, NTKRegressorCV
from ntksolve.dynamics.squares import mean_square, norm, power_of_two_scale

BIG, SMALL = 1e160, 1e-170  # squares overflow / underflow float64


def _exact_mean_square(a, axis):
    """mean(a²) along axis 0 of a 2-D array, in 60-digit arithmetic, rounded to float64 (or inf/0)."""
    mpmath = pytest.importorskip("mpmath")  # installed with torch's sympy; not a dependency
    mpmath.mp.dps = 60
    a = np.moveaxis(a, axis, 0)
    out = [mpmath.fsum(mpmath.mpf(float(v)) ** 2 for v in col) / a.shape[0] for col in a.T]
    return np.array([float(v) if v < mpmath.mpf("1.7976931348623157e308") else np.inf for v in out])


@pytest.mark.parametrize("c", [1.0, 1e150, BIG, 1e-150, SMALL, 1e-300])
def test_mean_square_and_norm_match_mpmath(c):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 4)) * c
    a[0, 1] = 3e-200 * c  # a tiny entry next to ordinary ones
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow/underflow warning escapes
        ms, nrm = mean_square(a, axis=0), norm(a, axis=0)
    exact = _exact_mean_square(a, 0)
    np.testing.assert_allclose(ms, exact, rtol=1e-14, atol=0)
    import mpmath

    mpmath.mp.dps = 60
    exact_norm = [float(mpmath.sqrt(mpmath.fsum(mpmath.mpf(float(v)) ** 2 for v in col))) for col in a.T]
    np.testing.assert_allclose(nrm, exact_norm, rtol=1e-14)
    assert np.all(np.isfinite(nrm)) and np.all(nrm > 0)


def test_plain_formula_kept_bit_for_bit_in_range_and_inf_zero_nan_out_of_it():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 3))
    assert np.array_equal(mean_square(a, axis=0), np.mean(a * a, axis=0))
    assert np.array_equal(norm(a, axis=0), np.linalg.norm(a, axis=0))
    assert mean_square(a * 1e200) == np.inf  # the true value, ~1e400, is beyond float64
    assert mean_square(np.zeros(3)) == 0.0 and np.isnan(mean_square(np.array([np.nan, 1.0])))
    assert mean_square(np.array([np.inf, 1.0])) == np.inf
    f = np.float32(3e20) * np.ones(4, dtype=np.float32)  # float32 squares overflow at 1.8e19
    assert norm(f).dtype == np.float32 and norm(f) == pytest.approx(6e20, rel=1e-6)
    for x in (3.0, 1e-310, 1e300, np.float32(1e-40)):
        s = power_of_two_scale(np.array([x, -x / 3]))
        assert 1.0 <= abs(x) / s < 2.0 and np.frexp(s)[0] == 0.5


@pytest.mark.parametrize("c", [BIG, SMALL])
def test_mse_loss_of_huge_and_tiny_residuals(c):
    rng = np.random.default_rng(2)
    f, y = rng.standard_normal((2, 6, 2))
    ref = 0.5 * np.mean((f - y) ** 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = ntksolve.mse_loss(f * c, y * c)
        path = ntksolve.mse_loss(np.stack([f, 2 * f]) * c, y * c)
    with np.errstate(over="ignore", under="ignore"):
        expected = ref * c * c  # 1e320 -> inf, 1e-340 -> 0: the true values are beyond float64
    assert one == expected
    assert path[0] == expected
    mid = 1e150 if c == BIG else 1e-150  # representable squares: accurate
    assert ntksolve.mse_loss(f * mid, y * mid) == pytest.approx(ref * mid * mid, rel=1e-13)


@pytest.mark.parametrize("method", ["cg", "krylov"])
@pytest.mark.parametrize("c", [1e200, 1e-200])
def test_iterative_solvers_scale_with_the_targets(method, c):
    """``f(t)`` is linear in ``y``: the answer for ``y * c`` is ``c`` times that for ``y``."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((25, 3))
    K = ntksolve.analytic_kernels(ntksolve.MLP((1,), activation="relu"), X).ntk
    y = np.sin(X[:, :2])
    solver = ntksolve.ConjugateGradient(tol=1e-10, max_iter=200) if method == "cg" else ntksolve.Krylov(tol=1e-10)
    t = np.inf if method == "cg" else 30.0
    ref = ntksolve.gradient_descent_mse(K, y, diag_reg=0.1, method=solver)(t, np.zeros_like(y))
    got = ntksolve.gradient_descent_mse(K, y * c, diag_reg=0.1, method=solver)(t, np.zeros_like(y))
    np.testing.assert_allclose(got / c, ref, rtol=1e-7, atol=1e-9)  # tol 1e-10 on the residual


@pytest.mark.parametrize("method", ["cg", "krylov"])
def test_iterative_solvers_keep_columns_of_far_apart_scales(method):
    """Columns 1e100 and 1e-60 in one solve: each is the answer for its own column near 1, scaled
    back (one scale shared by the columns would push the small one to subnormals)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((25, 3))
    K = ntksolve.analytic_kernels(ntksolve.MLP((1,), activation="relu"), X).ntk
    y = np.sin(X[:, :2])
    c = np.array([1e100, 1e-60])
    solver = ntksolve.ConjugateGradient(tol=1e-10, max_iter=200) if method == "cg" else ntksolve.Krylov(tol=1e-10)
    t = np.inf if method == "cg" else 30.0
    ref = ntksolve.gradient_descent_mse(K, y, diag_reg=0.1, method=solver)(t, np.zeros_like(y))
    got = ntksolve.gradient_descent_mse(K, y * c, diag_reg=0.1, method=solver)(t, np.zeros_like(y))
    np.testing.assert_allclose(got / c, ref, rtol=1e-7, atol=1e-9)


def _data(n=36, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    return X, np.sin(X[:, 0]) + 0.3 * X[:, 1] ** 2 + 0.1 * rng.standard_normal(n)


@pytest.mark.parametrize("cv", [KFold(3, shuffle=True, random_state=0), "loo"])
@pytest.mark.parametrize("c", [BIG, 1e150, 1e-150, SMALL])
def test_cv_chooses_as_for_targets_near_one(cv, c):
    """The search picks what it picks for ``y`` near 1; its path is that one's times ``c²``: exact
    where representable, inf (0) where the true MSE is beyond float64."""
    X, y = _data()
    kw = dict(hidden_layer_sizes=(512,), diag_regs=(1e-3, 0.1, 1.0), cv=cv)
    ref = NTKRegressorCV(**kw).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        est = NTKRegressorCV(**kw).fit(X, y * c)
    assert (est.diag_reg_, est.time_) == (ref.diag_reg_, ref.time_)
    with np.errstate(over="ignore", under="ignore"):
        expected = ref.mse_path_ * c * c
    if c in (BIG, SMALL):
        assert np.all(est.mse_path_ == (np.inf if c == BIG else 0.0))
    else:
        np.testing.assert_allclose(est.mse_path_, expected, rtol=1e-9)
        assert est.best_score_ == pytest.approx(ref.best_score_ * c * c, rel=1e-9)
    # the ranks: as GridSearchCV's, equal scores share their group's best rank; scores equal to
    # rounding at one scale may differ in the last bits at the other, so each rank lies within
    # its group's ranks, and is the same wherever the score stands apart from the others
    ref_mean, r_ref, r_est = (
        ref.cv_results_["mean_test_score"],
        ref.cv_results_["rank_test_score"],
        est.cv_results_["rank_test_score"],
    )
    close = np.isclose(ref_mean[:, None], ref_mean[None, :], rtol=1e-9, atol=0)
    for i in range(ref_mean.size):
        lo = r_ref[close[i]].min()
        assert lo <= r_est[i] <= lo + close[i].sum() - 1
    np.testing.assert_allclose(est.predict(X) / c, ref.predict(X), rtol=1e-9, atol=1e-12)


def test_cv_search_survives_save_and_load_with_an_infinite_path(tmp_path):
    X, y = _data()
    est = NTKRegressorCV(hidden_layer_sizes=(512,), diag_regs=(1e-3, 0.1, 1.0), cv=3).fit(X, y * BIG)
    path = tmp_path / "cv.npz"
    est.save(path)
    loaded = ntksolve.load(path)
    assert (loaded.diag_reg_, loaded.time_) == (est.diag_reg_, est.time_)
    np.testing.assert_array_equal(loaded.mse_path_, est.mse_path_)
    # the file holds the path on the search's scale, and that scale: a power of two
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(str(arrays["__ntksolve__"][()]))
    assert np.all(np.isfinite(arrays["mse_path"]))
    for bad in (3.0, -2.0, 0.0):
        meta["attrs"]["path_scale"] = bad
        np.savez(path, **{**arrays, "__ntksolve__": np.array(json.dumps(meta))})
        with pytest.raises(ValueError, match="path_scale must be a positive power of two"):
            ntksolve.load(path)


@pytest.mark.parametrize("c", [BIG, SMALL])
def test_score_is_scale_free(c):
    """R² does not depend on the targets' scale: as for targets near 1 (r2_score gives NaN at 1e160)."""
    X, y = _data()
    ref = NTKRegressor(hidden_layer_sizes=(512,), time=20.0).fit(X, y)
    est = NTKRegressor(hidden_layer_sizes=(512,), time=20.0).fit(X, y * c)
    Y2 = np.stack([y, -y], axis=1)
    ref2 = NTKRegressor(hidden_layer_sizes=(512,), time=20.0).fit(X, Y2)
    est2 = NTKRegressor(hidden_layer_sizes=(512,), time=20.0).fit(X, Y2 * c)
    w = np.linspace(0.5, 2.0, y.size)
    assert est.score(X, y * c) == pytest.approx(ref.score(X, y), rel=1e-12)
    assert est.score(X, y * c, sample_weight=w) == pytest.approx(ref.score(X, y, sample_weight=w), rel=1e-12)
    assert est2.score(X, Y2 * c) == pytest.approx(ref2.score(X, Y2), rel=1e-12)


def test_predictive_variances_of_huge_targets_are_the_scaled_ones():
    """``std² = inf`` for ``std ~ 1.7e154`` while ``S std²`` is finite: variances on the scale of ``y``
    are those for ``y`` near 1 times ``c²``; the density of ``y c`` is that of ``y`` over ``c^N``."""
    X, y = _data()
    c = 2e154
    kw = dict(hidden_layer_sizes=(512,), uncertainty="predictive")
    ref = NTKRegressor(**kw).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        est = NTKRegressor(**kw).fit(X, y * c)
        _, cov = est.predict(X[:5], return_cov=True)
        lml = est.log_marginal_likelihood(1e307, est.noise_variance_)
    assert ref.amplitude_ * 4.0 > 2.0  # ref.amplitude_ c² > 1.8e308: beyond float64, so inf
    assert est.amplitude_ == np.inf
    assert est.noise_variance_ / c / c == pytest.approx(ref.noise_variance_, rel=1e-9)
    np.testing.assert_allclose(cov / c / c, ref.predict(X[:5], return_cov=True)[1], rtol=1e-9, atol=1e-15)
    expected = ref.log_marginal_likelihood(1e307 / c / c, ref.noise_variance_) - y.size * np.log(c)
    assert lml == pytest.approx(expected, rel=1e-9)
    assert est.log_marginal_likelihood_value_ == pytest.approx(ref.log_marginal_likelihood_value_ - y.size * np.log(c))


@pytest.mark.parametrize("c", [BIG, 1e-160, SMALL])
def test_unnormalised_predictive_model_fits_on_scaled_residuals(c, tmp_path):
    """``normalize_y=False``: the noise model of ``y c`` is that of ``y`` with variances times ``c²``
    (inf or 0 only where that lies beyond float64); its ``return_std`` is ``c`` times, its density
    that over ``c^N``; saved and loaded, it predicts the same. (The residuals' squares were inf or 0:
    a = σ² = 0 and a wrong ``return_std`` near 1e-160, an unnamed error near 1e160.)"""
    X, y = _data()
    kw = dict(hidden_layer_sizes=(512,), uncertainty="predictive", normalize_y=False)
    ref = NTKRegressor(**kw).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        est = NTKRegressor(**kw).fit(X, y * c)
        _, std = est.predict(X[:5], return_std=True)
    np.testing.assert_allclose(std / c, ref.predict(X[:5], return_std=True)[1], rtol=1e-9)
    assert est.log_marginal_likelihood_value_ == pytest.approx(ref.log_marginal_likelihood_value_ - y.size * np.log(c))
    with np.errstate(over="ignore", under="ignore"):
        expected = ref.noise_variance_ * c * c
    if c == 1e-160:  # subnormal: a few digits
        assert est.noise_variance_ == pytest.approx(expected, rel=1e-2)
    else:
        assert est.noise_variance_ == expected
    path = tmp_path / "m.npz"
    est.save(path)
    loaded = ntksolve.load(path)
    np.testing.assert_array_equal(loaded.predict(X[:5], return_std=True)[1], std)
    assert loaded.noise_variance_ == est.noise_variance_
