"""The estimators with ``network=``: a user's PyTorch module or scikit-learn MLP, predicted as it trains.

References: ``gradient_descent_mse`` on the network's own empirical NTK (``from_torch`` /
``from_sklearn`` / ``sklearn_initial_network``) with its own ``f_0``, and at ``t = inf`` the
kernel-regression closed form ``f*_0 + K* (K + mu I)^-1 (y - f_0)`` solved directly.
"""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPClassifier, MLPRegressor

from ntksolve import empirical_ntk, gradient_descent_mse
from ntksolve.sklearn import NTKClassifier, NTKRegressor, NTKRegressorCV
from ntksolve.sklearn.mlp_import import from_sklearn, sklearn_initial_network

torch = pytest.importorskip("torch", reason="needs the torch extra: pip install 'ntksolve[torch]'")
from torch import nn  # noqa: E402

from ntksolve.torch import from_torch  # noqa: E402


def _module(k=1, bias=True, d=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d, 24, bias=bias), nn.Tanh(), nn.Linear(24, 16), nn.Tanh(), nn.Linear(16, k, bias=bias)
    ).double()


def _data(N=20, M=7, d=3, k=1, seed=0):
    rng = np.random.default_rng(seed)
    X, Xs = rng.standard_normal((N, d)), rng.standard_normal((M, d))
    Y = np.sin(X @ rng.standard_normal((d, k))) + 2.0  # an offset: f_0 must be the network's own
    return X, Xs, Y


def _reference(net, params, X, Xs, Y, times, lr, diag_reg=0.0):
    K, Ks = empirical_ntk(net, params, X), empirical_ntk(net, params, Xs, X)
    pred = gradient_descent_mse(K, Y, learning_rate=lr, dynamics="discrete", diag_reg=diag_reg)
    return pred(np.asarray(times, dtype=float), net.apply(params, X), net.apply(params, Xs), Ks)[1]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("normalize_y", [True, False])
def test_regressor_predicts_the_modules_own_training(bias, normalize_y):
    model = _module(bias=bias)
    X, Xs, Y = _data()
    times = [0, 5, 50, 500]
    est = NTKRegressor(
        network=model, dynamics="discrete", learning_rate=0.1, diag_reg=0.0, normalize_y=normalize_y
    ).fit(X, Y[:, 0])
    net, params = from_torch(model)
    assert est.network_ == net and est.n_features_in_ == 3
    ref = _reference(net, params, X, Xs, Y, times, 0.1)
    np.testing.assert_allclose(est.predict_trajectory(Xs, times), ref[..., 0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(est.predict_trajectory(Xs, [0])[0], net.apply(params, Xs)[:, 0], rtol=0, atol=1e-13)
    # t = inf: kernel regression from the network's own f_0, solved directly
    mu = 0.1
    est.set_params(time=np.inf, diag_reg=mu).fit(X, Y[:, 0])
    K, Ks = empirical_ntk(net, params, X), empirical_ntk(net, params, Xs, X)
    A = K + mu * np.mean(np.diag(K)) * np.eye(len(X))
    limit = net.apply(params, Xs) + Ks @ np.linalg.solve(A, Y - net.apply(params, X))
    np.testing.assert_allclose(est.predict(Xs), limit[:, 0], rtol=0, atol=1e-9)
    assert np.abs(limit - net.apply(params, Xs)).max() > 0.1  # training moved it


def test_multi_output_regressor_and_classifier():
    # several outputs: the traced kernel (the estimators' convention), the module's own f_0
    X, Xs, Y = _data(k=3, seed=1)
    model = _module(k=3, seed=1)
    net, params = from_torch(model)
    est = NTKRegressor(network=model, time=40, dynamics="discrete", learning_rate=0.2, diag_reg=0.0).fit(X, Y)
    np.testing.assert_allclose(est.predict(Xs), _reference(net, params, X, Xs, Y, [40], 0.2)[0], rtol=0, atol=1e-10)
    labels = np.argmax(Y, axis=1)
    clf = NTKClassifier(network=model, time=40, dynamics="discrete", learning_rate=0.2, diag_reg=0.0).fit(X, labels)
    codes = 2.0 * np.eye(3)[labels] - 1.0  # +-1 codes, trained as they are (normalize_y is not used)
    ref = _reference(net, params, X, Xs, codes, [40], 0.2)[0]
    np.testing.assert_allclose(clf.decision_function(Xs), ref, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(clf.predict(Xs), np.argmax(ref, axis=1))


def test_scikit_learn_mlps_fitted_and_not():
    X, Xs, Y = _data(seed=2)
    y = Y[:, 0]
    mlp = MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", solver="sgd", random_state=3)
    est = NTKRegressor(network=mlp, time=30, dynamics="discrete", learning_rate=0.1, diag_reg=0.0).fit(X, y)
    net, params = sklearn_initial_network(mlp, X, y)  # the network mlp.fit would start from
    np.testing.assert_allclose(
        est.predict(Xs), _reference(net, params, X, Xs, Y, [30], 0.1)[0, :, 0], rtol=0, atol=1e-10
    )
    assert not hasattr(mlp, "coefs_")  # not fitted by the estimator
    mlp.set_params(max_iter=5)
    with pytest.warns(Warning):  # the MLP's own convergence warning
        mlp.fit(X, y)
    est.fit(X, y)
    net, params = from_sklearn(mlp)
    np.testing.assert_allclose(
        est.predict(Xs), _reference(net, params, X, Xs, Y, [30], 0.1)[0, :, 0], rtol=0, atol=1e-10
    )
    # a classifier's outputs: one for two classes
    clf_mlp = MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
    labels = (y > np.median(y)).astype(int)
    clf = NTKClassifier(network=clf_mlp, time=20, dynamics="discrete", learning_rate=0.1).fit(X, labels)
    assert clf.network_.n_outputs == 1 and clf.network_ == sklearn_initial_network(clf_mlp, X, labels)[0]


def test_clone_copies_the_module_and_unfits_a_scikit_learn_mlp():
    model = _module()
    est = NTKRegressor(network=model, kernel="empirical")
    copy = clone(est)
    assert copy.network is not model and isinstance(copy.network, nn.Sequential)
    for a, b in zip(copy.network.parameters(), model.parameters()):
        assert torch.equal(a, b)
    X, Xs, Y = _data()
    np.testing.assert_array_equal(copy.fit(X, Y[:, 0]).predict(Xs), est.fit(X, Y[:, 0]).predict(Xs))
    mlp = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    with pytest.warns(Warning):
        mlp.fit(X, Y[:, 0])
    assert not hasattr(clone(NTKRegressor(network=mlp)).network, "coefs_")  # scikit-learn's rule
    assert "network" in NTKRegressor().get_params() and NTKRegressor().network is None


def test_cross_validation_uses_the_modules_kernel():
    model = _module(seed=4)
    X, _, Y = _data(N=24, seed=4)
    cv = NTKRegressorCV(
        network=model, dynamics="discrete", learning_rate=0.1, times=[0, 10, 100], diag_regs=[0.0, 0.1], cv=3
    ).fit(X, Y[:, 0])
    one = NTKRegressor(network=model, dynamics="discrete", learning_rate=0.1, time=cv.time_, diag_reg=cv.diag_reg_).fit(
        X, Y[:, 0]
    )
    np.testing.assert_allclose(cv.predict(X), one.predict(X), rtol=0, atol=1e-12)
    # at t = 0 every fold scores the module's own f_0
    f0 = from_torch(model)[0].apply(from_torch(model)[1], X)[:, 0]
    folds = [te for _, te in KFold(3).split(X)]
    expected = [np.mean((f0[te] - Y[te, 0]) ** 2) for te in folds]
    np.testing.assert_allclose(cv.mse_path_[0, 0], expected, rtol=1e-12)


def test_bad_networks_are_refused_before_any_kernel(tmp_path):
    X, Xs, Y = _data()
    with pytest.raises(TypeError, match="network must be None .* or a PyTorch nn.Sequential"):
        NTKRegressor(network="mlp").fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="network takes 5 input features, but X has 3"):
        NTKRegressor(network=_module(d=5)).fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="network has 2 output"):
        NTKRegressor(network=_module(k=2)).fit(X, Y[:, 0])
    with pytest.raises(ValueError, match=r"module\[1\] \(BatchNorm1d\) is not supported"):
        NTKRegressor(network=nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double()).fit(X, Y)
    with pytest.raises(ValueError, match="random_state=None"):
        NTKRegressor(network=MLPRegressor()).fit(X, Y[:, 0])
    est = NTKRegressor(network=_module()).fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="pickle-free format stores ntksolve's own networks only"):
        est.save(tmp_path / "m.npz")
    assert not list(tmp_path.iterdir())
