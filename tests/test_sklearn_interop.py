"""ntksolve.sklearn.mlp_import against scikit-learn itself: imported MLPs predict what scikit-learn
predicts, their NTK is the one over scikit-learn's own coefficients (finite differences of
``predict``), the initial network is bitwise the one ``fit`` draws, and scikit-learn's first SGD
steps follow the linearised prediction to first order in the learning rate."""

import copy
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.utils import check_random_state

from ntksolve import empirical_ntk, gradient_descent_mse
from ntksolve.sklearn.mlp_import import from_sklearn, learning_rate_from_sklearn, sklearn_initial_network

ACTIVATIONS = ["identity", "logistic", "tanh", "relu"]


def _data(N=30, d=4, k=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, d))
    y = np.sin(X @ rng.standard_normal((d, k)))
    return X, y


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _same_params(a, b):
    return all(np.array_equal(W1, W2) and np.array_equal(b1, b2) for (W1, b1), (W2, b2) in zip(a, b))


# --------------------------------------------------------------------------------------------
# the function and the NTK
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("k", [1, 3])
def test_regressor_predict_equals_net_apply(activation, k):
    X, y = _data(k=k)
    est = _fit(
        MLPRegressor(hidden_layer_sizes=(8, 6), activation=activation, max_iter=30, random_state=0),
        X,
        y[:, 0] if k == 1 else y,
    )
    net, params = from_sklearn(est)
    assert net.parameterization == "standard" and net.n_outputs == k and net.hidden_layer_sizes == (8, 6)
    assert net.activation == {"logistic": "sigmoid"}.get(activation, activation)
    np.testing.assert_allclose(net.apply(params, X), est.predict(X).reshape(len(X), k), rtol=0, atol=1e-12)


def test_float32_fit_is_imported_in_float32():
    X, y = _data()
    X = X.astype(np.float32)
    est = _fit(MLPRegressor(hidden_layer_sizes=(5,), max_iter=20, random_state=0), X, y)
    net, params = from_sklearn(est)
    assert params[0][0].dtype == np.float32
    np.testing.assert_allclose(net.apply(params, X), est.predict(X), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_classifier_logits_give_predict_proba(kind):
    X, y = _data(k=3)
    labels = {
        "binary": (y[:, 0] > 0).astype(int),
        "multiclass": np.argmax(y, axis=1),
        "multilabel": (y > 0).astype(int),
    }[kind]
    est = _fit(MLPClassifier(hidden_layer_sizes=(7,), activation="tanh", max_iter=40, random_state=1), X, labels)
    net, params = from_sklearn(est)
    z = net.apply(params, X)
    if kind == "multiclass":
        proba = _softmax(z)
    else:
        p = 1 / (1 + np.exp(-z))
        proba = np.hstack([1 - p, p]) if kind == "binary" else p
    assert net.n_outputs == {"binary": 1, "multiclass": 3, "multilabel": 3}[kind]
    np.testing.assert_allclose(proba, est.predict_proba(X), rtol=0, atol=1e-12)


def test_poisson_regressor_outputs_are_log_means():
    X, y = _data(k=1)
    est = _fit(MLPRegressor(hidden_layer_sizes=(6,), loss="poisson", max_iter=20, random_state=0), X, np.exp(y[:, 0]))
    net, params = from_sklearn(est)
    np.testing.assert_allclose(np.exp(net.apply(params, X)[:, 0]), est.predict(X), rtol=1e-12)


def test_ntk_is_the_kernel_over_sklearns_coefficients():
    # Independent reference: the Jacobian of predict over every entry of coefs_ and intercepts_,
    # by central differences.
    X, y = _data(N=4, k=2)
    est = _fit(MLPRegressor(hidden_layer_sizes=(5, 3), activation="tanh", max_iter=10, random_state=2), X, y)
    net, params = from_sklearn(est)
    arrays = [a for pair in zip(est.coefs_, est.intercepts_) for a in pair]
    h = 1e-6
    cols = []
    for a in arrays:
        for idx in np.ndindex(a.shape):
            keep = a[idx]
            a[idx] = keep + h
            up = est.predict(X)
            a[idx] = keep - h
            down = est.predict(X)
            a[idx] = keep
            cols.append((up - down) / (2 * h))
    J = np.stack(cols, axis=-1)  # (N, k, P)
    ref = np.einsum("iaP,jbP->ijab", J, J)
    np.testing.assert_allclose(empirical_ntk(net, params, X, trace=False), ref, rtol=0, atol=1e-8 * np.abs(ref).max())


# --------------------------------------------------------------------------------------------
# the initial network
# --------------------------------------------------------------------------------------------
def _initial_by_fit(est, X, y):
    """What fit draws, read back through scikit-learn's public path: one SGD epoch at a rate so
    small (1e-300) that no coefficient moves by a representable amount."""
    probe = clone(est).set_params(solver="sgd", learning_rate_init=1e-300, max_iter=1, momentum=0.0, warm_start=False)
    return from_sklearn(_fit(probe, X, y))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_initial_regressor_is_bitwise_what_fit_draws(activation, dtype):
    X, y = _data()
    est = MLPRegressor(hidden_layer_sizes=(6, 5), activation=activation, random_state=4)
    net, params = sklearn_initial_network(est, X.astype(dtype), y)
    ref_net, ref_params = _initial_by_fit(est, X.astype(dtype), y)
    assert net == ref_net and params[0][0].dtype == dtype
    assert _same_params(params, ref_params)
    assert not hasattr(est, "coefs_")  # the estimator itself is not fitted


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_initial_classifier_is_bitwise_what_fit_draws(kind):
    X, y = _data(k=3)
    labels = {
        "binary": np.where(y[:, 0] > 0, "yes", "no"),
        "multiclass": np.argmax(y, axis=1),
        "multilabel": (y > 0).astype(int),
    }[kind]
    est = MLPClassifier(hidden_layer_sizes=(7,), activation="logistic", random_state=5)
    net, params = sklearn_initial_network(est, X, labels)
    ref_net, ref_params = _initial_by_fit(est, X, labels)
    assert net == ref_net and _same_params(params, ref_params)


def test_initial_network_is_sklearns_private_initialize():
    # A second reference: scikit-learn's own _initialize on a clone (Glorot-uniform, bound
    # sqrt(2/(fan_in+fan_out)) for logistic), converted with from_sklearn.
    X, y = _data(k=2)
    est = MLPRegressor(hidden_layer_sizes=(6,), activation="logistic", random_state=8)
    ref = clone(est)
    ref._random_state = check_random_state(8)
    ref._initialize(y, [4, 6, 2], np.float64)
    assert np.abs(ref.coefs_[0]).max() <= np.sqrt(2 / 10)
    net, params = sklearn_initial_network(est, X, y)
    assert _same_params(params, from_sklearn(ref)[1])


def test_random_state_instance_is_copied_not_consumed():
    X, y = _data()
    rs = np.random.RandomState(3)
    est = MLPRegressor(hidden_layer_sizes=(5,), random_state=rs)
    before = copy.deepcopy(rs.get_state())
    net, params = sklearn_initial_network(est, X, y)
    after = rs.get_state()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    ref = _fit(clone(est).set_params(solver="sgd", learning_rate_init=1e-300, max_iter=1, momentum=0.0), X, y)
    assert _same_params(params, from_sklearn(ref)[1])


def test_warm_start_continues_from_current_weights():
    X, y = _data()
    est = _fit(MLPRegressor(hidden_layer_sizes=(5,), warm_start=True, max_iter=5, random_state=0), X, y)
    assert _same_params(sklearn_initial_network(est, X, y)[1], from_sklearn(est)[1])


# --------------------------------------------------------------------------------------------
# training: scikit-learn's first steps follow the linearised prediction
# --------------------------------------------------------------------------------------------
def test_sgd_first_steps_follow_the_linearised_prediction_to_first_order():
    # Real training differs from the linearised network by O(eta^2) over a fixed number of steps;
    # with the rate unmapped (eta instead of k eta) the difference would be O(eta).
    N, k, steps = 12, 3, 3
    X, y = _data(N=N, k=k, seed=1)
    errors, moved = [], []
    for eta in (2e-2, 2e-3):
        est = MLPRegressor(
            hidden_layer_sizes=(16,),
            activation="tanh",
            solver="sgd",
            batch_size=N,
            momentum=0.0,
            alpha=0.0,
            shuffle=False,
            learning_rate_init=eta,
            max_iter=steps,
            random_state=0,
        )
        net, params = sklearn_initial_network(est, X, y)
        theta = empirical_ntk(net, params, X, trace=False)
        f0 = net.apply(params, X)
        pred = gradient_descent_mse(
            theta, y, learning_rate=learning_rate_from_sklearn(est, n_outputs=k), dynamics="discrete"
        )(steps, f0)
        real = _fit(est, X, y).predict(X)
        assert est.n_iter_ == steps
        errors.append(np.abs(real - pred).max())
        moved.append(np.abs(real - f0).max())
    assert moved[1] > 1e-3  # it trained, by O(eta)
    ratio = errors[0] / errors[1]
    assert 60 < ratio < 160, ratio  # O(eta^2): a factor 100 per decade
    assert errors[1] < 1e-3 * moved[1]


def test_learning_rate_from_sklearn():
    reg = MLPRegressor(solver="sgd", learning_rate_init=0.01)
    assert learning_rate_from_sklearn(reg, n_outputs=4) == pytest.approx(0.04)
    X, y = _data(k=2)
    fitted = _fit(clone(reg).set_params(max_iter=2, random_state=0), X, y)
    assert learning_rate_from_sklearn(fitted) == pytest.approx(0.02)
    assert learning_rate_from_sklearn(MLPClassifier(solver="sgd", learning_rate_init=0.3)) == 0.3
    with pytest.raises(ValueError, match="solver='adam'"):
        learning_rate_from_sklearn(MLPRegressor(learning_rate_init=0.01), n_outputs=1)
    with pytest.raises(ValueError, match="invscaling"):
        learning_rate_from_sklearn(MLPRegressor(solver="sgd", learning_rate="invscaling"), n_outputs=1)
    with pytest.raises(ValueError, match="poisson"):
        learning_rate_from_sklearn(MLPRegressor(solver="sgd", loss="poisson"), n_outputs=1)
    with pytest.raises(ValueError, match="pass n_outputs"):
        learning_rate_from_sklearn(reg)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_unfitted_estimator_names_the_alternative():
    with pytest.raises(NotFittedError, match="sklearn_initial_network") as info:
        from_sklearn(MLPRegressor())
    assert isinstance(info.value, ValueError)


def test_not_an_mlp_is_a_type_error():
    with pytest.raises(TypeError, match="MLPRegressor or MLPClassifier, got Ridge"):
        from_sklearn(Ridge().fit(np.ones((3, 1)), np.ones(3)))
    with pytest.raises(TypeError, match="got Ridge"):
        sklearn_initial_network(Ridge(), np.ones((3, 1)), np.ones(3))


def test_unseeded_initial_network_is_refused():
    X, y = _data()
    with pytest.raises(ValueError, match="random_state=None.*set random_state to an int"):
        sklearn_initial_network(MLPRegressor(), X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes must contain positive ints"):
        sklearn_initial_network(MLPRegressor(hidden_layer_sizes=(4, 0), random_state=0), X, y)
