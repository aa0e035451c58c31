"""Estimators: scikit-learn's contract, and equivalences with independent computations.

Each equivalence pins the estimator to something computed another way: kernel ridge regression
(scikit-learn's ``KernelRidge`` on the precomputed kernel), the closed form of the linearised
network written out with ``scipy.linalg.expm``, the ensemble covariance written out in numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_digits
from sklearn.exceptions import NotFittedError
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import LabelBinarizer, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import ntksolve
from ntksolve import NTKClassifier, NTKRegressor, NTKRegressorCV
from ntksolve.dynamics import GradientDescent, GradientFlow, Krylov, Schedule


@parametrize_with_checks(
    [
        NTKRegressor(hidden_layer_sizes=(16,)),
        NTKRegressor(kernel="empirical", hidden_layer_sizes=(16,), random_state=0),
        NTKClassifier(hidden_layer_sizes=(16, 16)),
        NTKClassifier(kernel="empirical", hidden_layer_sizes=(16,), random_state=0),
        NTKRegressorCV(hidden_layer_sizes=(16,), diag_regs=(1e-2, 1e-1), cv=3),
        NTKRegressor(hidden_layer_sizes=(16,), dynamics=GradientFlow(0.5), time=30, method=Krylov(tol=1e-10)),
        NTKClassifier(loss="log_loss", hidden_layer_sizes=(16,), dynamics="discrete", learning_rate=5.0, time=50),
        NTKClassifier(
            loss="log_loss",
            kernel="empirical",
            hidden_layer_sizes=(16,),
            random_state=0,
            time=40,
            dynamics=GradientDescent(Schedule.cosine(2.0, 40), momentum=0.9, weight_decay=1e-3),
            batch_size=16,
        ),
    ]
)
def test_sklearn_contract(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return X[:200], y[:200], X[200:260], y[200:260]


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    Y = np.stack([np.sin(X[:, 0]) + 2.0, X[:, 1] * X[:, 2] - 1.0], axis=1)
    return X[:30], Y[:30], X[30:], Y[30:]


# -- equivalences ------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize_y", [False, True])
def test_infinite_time_is_kernel_ridge(diabetes, normalize_y):
    X, y, Xt, _ = diabetes
    reg = NTKRegressor(hidden_layer_sizes=(1, 1), diag_reg=0.05, normalize_y=normalize_y).fit(X, y)
    net = ntksolve.MLP((1, 1), "relu", 1.0, 0.1)
    K = ntksolve.analytic_kernels(net, X).ntk
    Ks = ntksolve.analytic_kernels(net, Xt, X).ntk
    mean, std = (y.mean(), y.std()) if normalize_y else (0.0, 1.0)
    krr = KernelRidge(kernel="precomputed", alpha=0.05 * np.mean(np.diag(K))).fit(K, (y - mean) / std)
    expected = mean + std * krr.predict(Ks)
    np.testing.assert_allclose(reg.predict_trajectory(Xt, [np.inf])[0], expected, rtol=1e-8)
    np.testing.assert_allclose(reg.predict(Xt), expected, rtol=1e-8)


def test_empirical_regressor_is_linearised_network(toy):
    """f_t(X*) = f_0* + Th* Th^-1 (I - expm(-eta t Th / (Nk))) (y - f_0), written out with expm."""
    X, Y, Xt, _ = toy
    t, lr = 7.0, 0.5
    reg = NTKRegressor(
        kernel="empirical",
        hidden_layer_sizes=(32, 32),
        activation="erf",
        time=t,
        learning_rate=lr,
        diag_reg=0.0,
        normalize_y=False,
        random_state=3,
        method="eigh",
    ).fit(X, Y)
    net = ntksolve.MLP((32, 32), "erf", 1.0, 0.1, n_outputs=2)
    params = net.init(3, random_state=3)  # as MLP.init seeds it
    np.testing.assert_array_equal(reg.params_[0][0], params[0][0])
    K = ntksolve.empirical_ntk(net, params, X)
    Ks = ntksolve.empirical_ntk(net, params, Xt, X)
    f0, f0s = net.apply(params, X), net.apply(params, Xt)
    N, k = Y.shape
    E = scipy.linalg.expm(-lr * t / (N * k) * K)
    expected = f0s + Ks @ np.linalg.solve(K, (np.eye(N) - E) @ (Y - f0))
    np.testing.assert_allclose(reg.predict(Xt), expected, rtol=1e-7, atol=1e-9)
    # the same through the solver fed the same kernel and f_0
    pred = ntksolve.gradient_descent_mse(K, Y, lr)
    _, via_solver = pred(t, f0, f0s, Ks)
    np.testing.assert_allclose(reg.predict(Xt), via_solver, rtol=1e-10, atol=1e-12)
    # at t = 0 the prediction is the network at initialisation
    np.testing.assert_allclose(reg.predict_trajectory(Xt, [0.0])[0], f0s, rtol=1e-12)


def test_return_std_and_cov_are_the_ensemble_formulas(toy):
    X, Y, Xt, _ = toy
    y = Y[:, 0]
    t, reg_frac = 20.0, 1e-2
    reg = NTKRegressor(hidden_layer_sizes=(1, 1), time=t, diag_reg=reg_frac, normalize_y=False).fit(X, y)
    net = ntksolve.MLP((1, 1), "relu", 1.0, 0.1)
    tr, cross, test = (
        ntksolve.analytic_kernels(net, X),
        ntksolve.analytic_kernels(net, Xt, X),
        ntksolve.analytic_kernels(net, Xt),
    )
    N = X.shape[0]
    Th = tr.ntk + reg_frac * np.mean(np.diag(tr.ntk)) * np.eye(N)
    A = cross.ntk @ np.linalg.solve(Th, np.eye(N) - scipy.linalg.expm(-t / N * Th))
    cov = test.nngp - A @ cross.nngp.T - cross.nngp @ A.T + A @ tr.nngp @ A.T
    mean, std = reg.predict(Xt, return_std=True)
    np.testing.assert_allclose(mean, A @ y, rtol=1e-8)
    np.testing.assert_allclose(std, np.sqrt(np.diag(cov)), rtol=1e-6)
    _, c = reg.predict(Xt, return_cov=True)
    np.testing.assert_allclose(c, cov, rtol=1e-6, atol=1e-12)
    # normalize_y scales the std by the targets' std, per output (two outputs: time at half speed)
    reg2 = NTKRegressor(hidden_layer_sizes=(1, 1), time=2 * t, diag_reg=reg_frac).fit(X, Y)
    _, std2 = reg2.predict(Xt, return_std=True)
    np.testing.assert_allclose(std2, np.sqrt(np.diag(cov))[:, None] * Y.std(axis=0), rtol=1e-6)
    _, cov2 = reg2.predict(Xt, return_cov=True)
    assert cov2.shape == (Xt.shape[0], Xt.shape[0], 2)


def test_return_std_errors(toy):
    X, Y, Xt, _ = toy
    with pytest.raises(NotImplementedError, match="kernel='analytic'"):
        NTKRegressor(kernel="empirical", hidden_layer_sizes=(8,), random_state=0).fit(X, Y).predict(Xt, return_std=True)
    with pytest.raises(NotImplementedError, match="continuous"):
        NTKRegressor(dynamics="discrete", time=3, learning_rate=0.1).fit(X, Y).predict(Xt, return_std=True)
    with pytest.raises(RuntimeError, match="At most one"):
        NTKRegressor().fit(X, Y).predict(Xt, return_std=True, return_cov=True)


def test_multi_output_is_columnwise(toy):
    X, Y, Xt, _ = toy
    both = NTKRegressor(time=30.0).fit(X, Y)
    assert both.predict(Xt).shape == (10, 2)
    traj = both.predict_trajectory(Xt, [0, 1, np.inf])
    assert traj.shape == (3, 10, 2)
    for j in range(2):
        # the loss averages over all N k entries, so with k = 2 outputs time runs at half speed
        one = NTKRegressor(time=15.0).fit(X, Y[:, j])
        assert one.predict(Xt).shape == (10,)
        np.testing.assert_allclose(both.predict(Xt)[:, j], one.predict(Xt), rtol=1e-9)
        np.testing.assert_allclose(traj[2, :, j], one.predict_trajectory(Xt, [np.inf])[0], rtol=1e-9)


def test_trajectory_staged_and_time_parameter(toy):
    X, Y, Xt, _ = toy
    times = [0.0, 1.0, 10.0, 100.0, np.inf]
    reg = NTKRegressor().fit(X, Y)
    traj = reg.predict_trajectory(Xt, times)
    for i, staged in enumerate(reg.staged_predict(Xt, times)):
        np.testing.assert_allclose(staged, traj[i], rtol=1e-12)
    # the analytic ensemble starts at the (zero-mean) prior: the targets' mean after un-scaling
    np.testing.assert_allclose(traj[0], np.broadcast_to(Y.mean(axis=0), traj[0].shape), rtol=1e-12)
    # time may change after fit, without refitting
    reg.set_params(time=10.0)
    np.testing.assert_allclose(reg.predict(Xt), traj[2], rtol=1e-12)
    np.testing.assert_allclose(NTKRegressor(time=10.0).fit(X, Y).predict(Xt), traj[2], rtol=1e-12)


def test_loss_curve(toy):
    X, Y, _, _ = toy
    reg = NTKRegressor(diag_reg=0.0).fit(X, Y)
    loss = reg.loss_curve([0.0, 1.0, 10.0, 100.0, 1e4])
    # standardised targets, f_0 = 0: the loss at t = 0 is mean(y_std^2) / 2 = 1/2 exactly
    assert loss[0] == pytest.approx(0.5, rel=1e-12)
    assert np.all(np.diff(loss) < 0)
    direct = 0.5 * np.mean((reg.predictor_(10.0, reg.fx_train_0_) - reg.y_train_) ** 2)
    assert loss[2] == pytest.approx(direct, rel=1e-10)


def test_discrete_dynamics(toy):
    X, Y, Xt, _ = toy
    net = ntksolve.MLP((1,), "relu", 1.0, 0.1)
    K = ntksolve.analytic_kernels(net, X).ntk
    lr = 0.5 * ntksolve.critical_learning_rate(K, 2)
    reg = NTKRegressor(
        hidden_layer_sizes=(1,), dynamics="discrete", learning_rate=lr, time=5, diag_reg=0.0, normalize_y=False
    ).fit(X, Y)
    N = X.shape[0]
    B = np.eye(N) - lr / (2 * N) * K
    Ks = ntksolve.analytic_kernels(net, Xt, X).ntk
    expected = Ks @ np.linalg.solve(K, (np.eye(N) - np.linalg.matrix_power(B, 5)) @ Y)
    np.testing.assert_allclose(reg.predict(Xt), expected, rtol=1e-7, atol=1e-10)
    with pytest.raises(ValueError, match="critical"):
        NTKRegressor(hidden_layer_sizes=(1,), dynamics="discrete", learning_rate=3 * lr, time=5).fit(X, Y)
    with pytest.raises(ValueError, match="whole number"):
        reg.set_params(time=2.5).predict(Xt)


def test_float32_matches_float64(toy):
    X, Y, Xt, _ = toy
    p64 = NTKRegressor(time=50.0).fit(X, Y).predict(Xt)
    r32 = NTKRegressor(time=50.0, dtype="float32").fit(X, Y)
    assert r32.predictor_._dtype == np.float32
    np.testing.assert_allclose(r32.predict(Xt), p64, rtol=1e-4, atol=1e-4)


# -- classifier ----------------------------------------------------------------------------------
def test_classifier_is_regressor_on_pm1_codes():
    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16.0, y[:300]
    labels = np.array([f"digit-{v}" for v in y])
    clf = NTKClassifier(time=1e4).fit(X[:250], labels[:250])
    codes = LabelBinarizer(neg_label=-1, pos_label=1).fit_transform(y[:250]).astype(float)
    reg = NTKRegressor(time=1e4).fit(X[:250], codes)
    np.testing.assert_allclose(clf.decision_function(X[250:]), reg.predict(X[250:]), rtol=1e-10)
    assert list(clf.classes_) == [f"digit-{v}" for v in range(10)]
    assert np.mean(clf.predict(X[250:]) == labels[250:]) > 0.85
    assert not hasattr(clf, "predict_proba")
    traj = clf.decision_trajectory(X[250:], [0.0, 1e4])
    np.testing.assert_allclose(traj[1], clf.decision_function(X[250:]), rtol=1e-12)
    staged = list(clf.staged_predict(X[250:], [1e4]))
    np.testing.assert_array_equal(staged[0], clf.predict(X[250:]))


def test_binary_classifier_sign_and_interpolation():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 4))
    y = np.where(X[:, 0] + 0.3 * X[:, 1] > 0, "yes", "no")
    clf = NTKClassifier(diag_reg=0.0, normalize_y=False).fit(X, y)
    d = clf.decision_function(X)
    assert d.shape == (40,)
    # +1 codes classes_[1] = "yes": unregularised kernel regression interpolates the codes
    np.testing.assert_allclose(d, np.where(y == "yes", 1.0, -1.0), atol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), y)
    # at t = 0 the infinite ensemble's mean output is exactly 0
    np.testing.assert_array_equal(clf.decision_trajectory(X, [0.0])[0], 0.0)


# -- scikit-learn tools --------------------------------------------------------------------------
def test_pipeline_grid_search_and_cross_val(diabetes):
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:150], y[:150]
    pipe = make_pipeline(StandardScaler(), NTKRegressor(diag_reg=1.0))
    scores = cross_val_score(pipe, X, y, cv=KFold(3))
    assert scores.shape == (3,) and np.all(scores > 0.2)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), NTKRegressor(diag_reg=0.0)),
        {"ntkregressor__time": [10.0, 1000.0, np.inf], "ntkregressor__weight_std": [0.5, 1.5]},
        cv=3,
    ).fit(X, y)
    # early stopping beats interpolating the noisy targets
    assert search.best_params_["ntkregressor__time"] < np.inf
    assert search.best_score_ > 0.2


def test_regressor_cv_ranks_ties_as_grid_search(toy):
    # duplicated candidates score alike; GridSearchCV, over the same grid with the same folds and
    # scoring, gives them one rank (the best of their group): NTKRegressorCV's cv_results_ agree
    X, Y, _, _ = toy
    y = Y[:, 0]
    regs, times = [0.1, 0.1, 1e-3], [2.0, np.inf]
    cv = NTKRegressorCV(hidden_layer_sizes=(512,), diag_regs=regs, times=times, cv=KFold(3)).fit(X, y)
    grid = GridSearchCV(
        NTKRegressor(hidden_layer_sizes=(512,)),
        {"diag_reg": regs, "time": times},
        cv=KFold(3),
        scoring="neg_mean_squared_error",
    ).fit(X, y)
    # the same candidates in the same order (diag_reg outer, time inner, as GridSearchCV's grid)
    assert [(p["diag_reg"], p["time"]) for p in grid.cv_results_["params"]] == [
        (p["diag_reg"], p["time"]) for p in cv.cv_results_["params"]
    ]
    np.testing.assert_allclose(cv.cv_results_["mean_test_score"], grid.cv_results_["mean_test_score"], rtol=1e-9)
    np.testing.assert_array_equal(cv.cv_results_["rank_test_score"], grid.cv_results_["rank_test_score"])
    assert len(set(cv.cv_results_["rank_test_score"])) < len(regs) * len(times)  # the ties are there


def test_pandas_input(toy):
    pd = pytest.importorskip("pandas")
    X, Y, Xt, _ = toy
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    reg = NTKRegressor().fit(df, pd.Series(Y[:, 0]))
    np.testing.assert_array_equal(reg.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_allclose(
        reg.predict(pd.DataFrame(Xt, columns=["a", "b", "c"])), NTKRegressor().fit(X, Y[:, 0]).predict(Xt), rtol=1e-12
    )
    clf = NTKClassifier().fit(df, pd.Series(np.where(Y[:, 1] > -1, "p", "q"), dtype="category"))
    assert set(clf.classes_) == {"p", "q"}


def test_regressor_cv(toy):
    X, Y, Xt, _ = toy
    y = Y[:, 0] + 0.3 * np.random.default_rng(0).standard_normal(30)
    times = np.array([1.0, 10.0, 100.0, np.inf])
    regs = (0.0, 0.1)
    cv = NTKRegressorCV(times=times, diag_regs=regs, cv=KFold(3)).fit(X, y)
    assert cv.mse_path_.shape == (2, 4, 3)
    # one entry recomputed by a plain regressor on that fold
    tr, te = list(KFold(3).split(X))[1]
    r = NTKRegressor(time=10.0, diag_reg=0.1).fit(X[tr], y[tr])
    assert cv.mse_path_[1, 1, 1] == pytest.approx(np.mean((r.predict(X[te]) - y[te]) ** 2), rel=1e-9)
    i, j = np.unravel_index(np.argmin(cv.mse_path_.mean(axis=2)), (2, 4))
    assert (cv.diag_reg_, cv.time_) == (regs[i], times[j])
    assert cv.best_score_ == pytest.approx(-cv.mse_path_.mean(axis=2).min())
    refit = NTKRegressor(time=cv.time_, diag_reg=cv.diag_reg_).fit(X, y)
    np.testing.assert_allclose(cv.predict(Xt), refit.predict(Xt), rtol=1e-10)
    res = cv.cv_results_
    assert len(res["params"]) == 8 and res["rank_test_score"].min() == 1
    assert res["params"][int(np.argmin(res["rank_test_score"]))] == {"diag_reg": cv.diag_reg_, "time": cv.time_}
    # automatic grid: 49 finite times plus inf
    auto = NTKRegressorCV(diag_regs=(0.1,), cv=3).fit(X, y)
    assert auto.times_.shape == (50,) and auto.times_[-1] == np.inf


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("Est", [NTKRegressor, NTKClassifier, NTKRegressorCV])
def test_not_fitted(Est, toy):
    X = toy[0]
    est = Est()
    with pytest.raises(NotFittedError):
        est.predict(X)
    with pytest.raises(NotFittedError):
        est.loss_curve([1.0])
    with pytest.raises(NotFittedError):
        est.save("unused.npz")


def test_nan_shape_and_feature_errors(toy):
    X, Y, Xt, _ = toy
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        NTKRegressor().fit(Xn, Y)
    with pytest.raises(ValueError, match="Input y contains NaN"):
        NTKRegressor().fit(X, np.where(np.arange(30)[:, None] == 0, np.nan, Y))
    reg = NTKRegressor().fit(X, Y)
    with pytest.raises(ValueError, match="X has 2 features, but NTKRegressor is expecting 3 features"):
        reg.predict(Xt[:, :2])
    with pytest.raises(ValueError, match="Expected 2D array"):
        reg.predict(Xt[0])
    with pytest.raises(ValueError, match="times must be a 1-D"):
        reg.predict_trajectory(Xt, [[1.0]])
    with pytest.raises(ValueError, match="times must be a number >= 0"):
        reg.predict_trajectory(Xt, [-1.0])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"kernel": "rbf"}, "kernel must be one of 'analytic', 'empirical'"),
        ({"activation": "swish"}, "activation must be one of 'relu', 'erf'"),
        ({"dynamics": "sgd"}, "dynamics must be one of 'continuous', 'discrete'"),
        ({"method": "lu"}, "method must be one of 'auto', 'eigh', 'expm', 'krylov'"),
        ({"parameterization": "mup"}, "parameterization must be one of 'ntk', 'standard'"),
        ({"parameterization": "standard"}, "parameterization='ntk' only"),
        ({"diag_reg": -1.0}, "diag_reg must be a finite number >= 0"),
        ({"time": -1.0}, "time must be a number >= 0"),
        ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
        ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes must contain positive ints"),
        ({"weight_std": -1.0}, "weight_std must be a finite positive number"),
        ({"dtype": "int32"}, "dtype must be float64 or float32"),
        ({"block_size": 0}, "block_size must be None or a positive int"),
        ({"normalize_y": "yes"}, "normalize_y must be True or False"),
    ],
)
def test_invalid_parameters_rejected_in_fit(params, match, toy):
    X, Y = toy[0], toy[1][:, 0]
    est = NTKRegressor(**params)  # __init__ stores, never validates
    with pytest.raises(ValueError, match=match):
        est.fit(X, Y)
    with pytest.raises(ValueError, match=match):
        NTKClassifier(**params).fit(X, Y > 2)


def test_cv_invalid_grids(toy):
    X, Y = toy[0], toy[1][:, 0]
    with pytest.raises(ValueError, match="diag_regs must be a finite number >= 0"):
        NTKRegressorCV(diag_regs=(-1.0,)).fit(X, Y)
    with pytest.raises(ValueError, match="times must be a number >= 0"):
        NTKRegressorCV(times=(-1.0,)).fit(X, Y)


def test_classifier_one_class_and_regression_target(toy):
    X = toy[0]
    with pytest.raises(ValueError, match="at least 2 classes"):
        NTKClassifier().fit(X, np.zeros(30))
    with pytest.raises(ValueError, match="Unknown label type"):
        NTKClassifier().fit(X, np.linspace(0, 1, 30))


def test_clone_keeps_plain_params():
    est = NTKRegressor(hidden_layer_sizes=(8, 8), time=5.0, dtype="float32")
    assert clone(est).get_params() == est.get_params()


# -- one parameter set, keyword-only ---------------------------------------------------------------
def test_parameters_are_keyword_only_and_shared():
    import inspect

    from ntksolve.sklearn._params import (
        CLASSIFIER_CV_PARAMETERS,
        CLASSIFIER_PARAMETERS,
        CV_PARAMETERS,
        MODEL_PARAMETERS,
        SEARCH_TILED_PARAMETERS,
        SHARED_PARAMETERS,
    )

    shared = {name: default for name, default, _ in SHARED_PARAMETERS}
    for Est, own in (
        (NTKRegressor, MODEL_PARAMETERS),
        (NTKClassifier, CLASSIFIER_PARAMETERS + MODEL_PARAMETERS),
        (NTKRegressorCV, CV_PARAMETERS + SEARCH_TILED_PARAMETERS),
        (
            ntksolve.NTKClassifierCV,
            CV_PARAMETERS + CLASSIFIER_CV_PARAMETERS + CLASSIFIER_PARAMETERS + SEARCH_TILED_PARAMETERS,
        ),
    ):
        sig = inspect.signature(Est)
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in sig.parameters.values())
        classifier = Est in (NTKClassifier, ntksolve.NTKClassifierCV)
        own = own if classifier else own + ntksolve.sklearn._params.REGRESSOR_PARAMETERS  # regressors'
        expected = {**{name: default for name, default, _ in own}, **shared}
        assert {name: p.default for name, p in sig.parameters.items()} == expected
        assert Est().get_params() == expected
        for name in expected:  # every parameter documented, once
            assert Est.__doc__.count(f"\n    {name} : ") == 1, (Est.__name__, name)
        with pytest.raises(TypeError, match="keyword arguments only"):
            Est((512,))
        with pytest.raises(TypeError, match="unexpected keyword argument 'widths'"):
            Est(widths=(8,))


def test_methods_are_keyword_only_after_the_data(toy):
    X, Y, Xt, _ = toy
    reg = NTKRegressor(hidden_layer_sizes=(4,)).fit(X, Y[:, 0])
    with pytest.raises(TypeError):
        reg.predict(Xt, True)
    np.testing.assert_array_equal(reg.predict_trajectory(Xt, [1.0])[0], reg.set_params(time=1.0).predict(Xt))


# -- return_std: each kernel once, the diagonal only ---------------------------------------------
def test_ensemble_variance_is_the_covariance_diagonal(toy):
    from ntksolve.sklearn import _solve

    X, Y, Xt, _ = toy
    net = ntksolve.MLP((2,), "erf", 1.3, 0.2)
    tr, cross = ntksolve.analytic_kernels(net, X), ntksolve.analytic_kernels(net, Xt, X)
    test = ntksolve.analytic_kernels(net, Xt)
    ens = ntksolve.gradient_descent_mse_ensemble(tr.nngp, tr.ntk, Y, 0.7, diag_reg=1e-3)
    for t in (0.0, 3.0, 100.0, np.inf):
        _, cov = ens(t, cross.nngp, cross.ntk, test.nngp, compute_cov=True)
        var = _solve.ensemble_variance(ens, t, cross.nngp, cross.ntk, np.diagonal(test.nngp).copy())
        np.testing.assert_allclose(var, np.diagonal(cov), rtol=1e-10, atol=1e-14)
    # the analytic diagonal recursion gives the test-test diagonal bit for bit
    from ntksolve.sklearn.gp_kernels import analytic_diagonals

    np.testing.assert_array_equal(analytic_diagonals(Xt, 1, "erf", 1.3, 0.2)[0], np.diagonal(test.nngp))


def test_return_std_computes_each_kernel_once(toy, monkeypatch):
    from ntksolve.sklearn import regressor

    X, Y, Xt, _ = toy
    reg = NTKRegressor(hidden_layer_sizes=(1, 1), time=20.0, diag_reg=1e-2).fit(X, Y)
    reg.predict(Xt, return_std=True)  # builds the ensemble's decomposition once
    calls = []
    real = regressor.analytic_kernels
    monkeypatch.setattr(
        regressor,
        "analytic_kernels",
        lambda net, A, B=None: calls.append((A.shape[0], None if B is None else B.shape[0])) or real(net, A, B),
    )
    monkeypatch.setattr(reg, "_kernel", lambda *a: pytest.fail("the test-train NTK was computed again"))
    mean, std = reg.predict(Xt, return_std=True)
    assert calls == [(10, 30)]  # one test-train pair; no (M, M) test kernel
    monkeypatch.undo()
    np.testing.assert_array_equal(mean, reg.predict(Xt))
    _, cov = reg.predict(Xt, return_cov=True)
    np.testing.assert_allclose(std, np.sqrt(np.einsum("iik->ik", cov)), rtol=1e-9)


# -- chunks=: one capability check ----------------------------------------------------------------
def test_tiled_fit_refuses_what_it_cannot_answer(toy):
    pytest.importorskip("dask")
    X, Y, Xt, _ = toy
    y = Y[:, 0]
    reg = NTKRegressor(hidden_layer_sizes=(4,), time=30.0, chunks=16, scheduler="sync").fit(X, y)
    mem = NTKRegressor(hidden_layer_sizes=(4,), time=30.0).fit(X, y)
    np.testing.assert_allclose(reg.predict(Xt), mem.predict(Xt), rtol=1e-6)
    refused = [
        lambda: reg.predict_trajectory(Xt, [30.0]),
        lambda: next(reg.staged_predict(Xt, [30.0])),
        lambda: reg.loss_curve([30.0]),
        lambda: reg.predict(Xt, return_std=True),
        lambda: reg.predict(Xt, return_cov=True),
        lambda: reg.set_params(time=10.0).predict(Xt),
    ]
    clf = NTKClassifier(hidden_layer_sizes=(4,), chunks=16, scheduler="sync").fit(X, y > 2)
    refused += [
        lambda: clf.decision_trajectory(Xt, [np.inf]),
        lambda: next(clf.staged_predict(Xt, [np.inf])),
        lambda: clf.loss_curve([1.0]),
    ]
    for call in refused:
        with pytest.raises(ValueError, match="needs the in-memory solver.*Refit with chunks=None"):
            call()
    np.testing.assert_array_equal(clf.predict(Xt), NTKClassifier(hidden_layer_sizes=(4,)).fit(X, y > 2).predict(Xt))


# --- rule and solver objects -------------------------------------------------------------------------------


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("cosine", [False, True])
def test_regressor_with_a_momentum_rule_equals_parameter_space_sgd(nesterov, cosine):
    rng = np.random.default_rng(0)
    X, Xt = rng.standard_normal((12, 3)), rng.standard_normal((5, 3))
    y = rng.standard_normal(12)
    probe = NTKRegressor(
        kernel="empirical", hidden_layer_sizes=(32,), random_state=1, diag_reg=0.0, normalize_y=False
    ).fit(X, y)
    J = ntksolve.jacobian(probe.network_, probe.params_, X).reshape(12, -1)
    Jt = ntksolve.jacobian(probe.network_, probe.params_, Xt).reshape(5, -1)
    lr0 = 0.4 * 2 * 12 / np.linalg.eigvalsh(J @ J.T)[-1]
    lr = Schedule.cosine(lr0, 40, min_lr=0.1 * lr0) if cosine else lr0
    rule = GradientDescent(lr, momentum=0.9, nesterov=nesterov)
    est = clone(probe).set_params(dynamics=rule, time=40).fit(X, y)
    assert est.get_params()["dynamics"] == rule and clone(est).dynamics == rule
    rates = lr.rates(40) if cosine else np.full(40, lr0)
    d = np.zeros(J.shape[1])
    buf = np.zeros_like(d)
    f0 = probe.network_.apply(probe.params_, X)[:, 0]
    for s in range(40):  # torch.optim.SGD on the linearised network, written out
        g = J.T @ ((f0 + J @ d - y) / 12)
        buf = 0.9 * buf + g
        d = d - rates[s] * ((g + 0.9 * buf) if nesterov else buf)
    ref = probe.network_.apply(probe.params_, Xt)[:, 0] + Jt @ d
    np.testing.assert_allclose(est.predict(Xt), ref, rtol=0, atol=1e-10)
    kry = clone(est).set_params(method=Krylov(tol=1e-12)).fit(X, y)
    np.testing.assert_allclose(kry.predict(Xt), ref, rtol=0, atol=1e-8)


def test_rule_objects_in_estimators_refuse_what_they_cannot_do(toy):
    X, Y = toy[0], toy[1][:, 0]
    with pytest.raises(TypeError, match="carries its own learning rate"):
        NTKRegressor(dynamics=GradientDescent(0.1), learning_rate=0.1).fit(X, Y)
    with pytest.raises(ValueError, match="no function-space.*train the network"):
        NTKRegressor(dynamics="adam").fit(X, Y)
    with pytest.raises(ValueError, match="weight decay.*J θ_0.*jtheta_train"):
        NTKRegressor(dynamics=GradientDescent(0.1, weight_decay=1e-3), time=5).fit(X, Y)
    with pytest.raises(ValueError, match="time = inf has no meaning for a learning-rate schedule"):
        NTKRegressor(dynamics=GradientDescent(Schedule.cosine(0.1, 10))).fit(X, Y)
    with pytest.raises(TypeError, match="method must be one of"):
        NTKRegressor(method=3.0).fit(X, Y)


def test_cv_with_a_schedule_searches_whole_steps(toy):
    X, Y = toy[0], toy[1][:, 0]
    rule = GradientDescent(Schedule.cosine(0.05, 400), momentum=0.9)
    cv = NTKRegressorCV(dynamics=rule, diag_regs=(1e-2,), cv=3).fit(X, Y)
    assert np.isfinite(cv.time_) and cv.time_ == round(cv.time_) and 1 <= cv.time_ <= 400  # the schedule's horizon
    grid = NTKRegressorCV(dynamics=rule, times=[10, 100, 400], diag_regs=(1e-2,), cv=3).fit(X, Y)
    assert grid.time_ in (10, 100, 400)
    one = NTKRegressor(dynamics=rule, time=grid.time_, diag_reg=1e-2).fit(X, Y)
    np.testing.assert_allclose(grid.predict(X), one.predict(X), rtol=0, atol=1e-10)
    flow = NTKRegressor(dynamics=GradientFlow(0.5), time=3.0).fit(X, Y)  # a flow rule object: any time
    np.testing.assert_allclose(
        flow.predict(X), NTKRegressor(learning_rate=0.5, time=3.0).fit(X, Y).predict(X), rtol=0, atol=0
    )
