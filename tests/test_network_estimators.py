"""Estimators with network= a layered Network: the closed-form prediction of its empirical NTK."""

import numpy as np
import pytest

from ntksolve import NTKRegressor, empirical_ntk, gradient_descent_mse
from ntksolve.nets.layers import Dense
from ntksolve.nets.network import Network
from ntksolve.nets.normalization import LayerNorm
from ntksolve.nets.residual import Residual

NET = Network([Dense(16, 1.2, 0.1), LayerNorm(), "relu", Residual(["tanh", Dense(16)], scale=0.5), Dense(1)])


def test_regressor_with_a_network_predicts_its_linearised_training():
    rng = np.random.default_rng(0)
    X, y, Z = rng.standard_normal((12, 3)), rng.standard_normal(12), rng.standard_normal((4, 3))
    params = NET.init(3, random_state=1)
    est = NTKRegressor(network=(NET, params), time=50.0, learning_rate=0.5, diag_reg=0.0, normalize_y=False).fit(X, y)
    # the closed form on the same network's kernels, computed here independently
    K, Kt = empirical_ntk(NET, params, X), empirical_ntk(NET, params, Z, X)
    f0, ft0 = NET.apply(params, X), NET.apply(params, Z)
    predictor = gradient_descent_mse(K, y[:, None], learning_rate=0.5)
    expected = predictor(50.0, f0, ft0, Kt)
    expected = expected[1] if isinstance(expected, tuple) else expected
    np.testing.assert_allclose(est.predict(Z), expected[:, 0], rtol=1e-8, atol=1e-10)
    # a bare Network is drawn from random_state
    est2 = NTKRegressor(network=NET, random_state=1, time=50.0, learning_rate=0.5, diag_reg=0.0, normalize_y=False).fit(
        X, y
    )
    np.testing.assert_allclose(est2.predict(Z), est.predict(Z), rtol=1e-12)


def test_regressor_network_mismatch_is_a_clear_error():
    X, y = np.ones((4, 3)), np.ones((4, 2))
    with pytest.raises(ValueError, match="1 output"):
        NTKRegressor(network=NET).fit(X, y)
    with pytest.raises(TypeError, match="Network"):
        NTKRegressor(network="resnet").fit(X, y[:, 0])


def test_regressor_with_a_torch_module_with_layer_norm_and_a_residual_block():
    torch = pytest.importorskip("torch")
    from ntksolve.torch import Residual as TorchResidual, from_torch

    torch.manual_seed(0)
    nn = torch.nn
    module = nn.Sequential(
        nn.Linear(3, 8),
        nn.LayerNorm(8),
        nn.ReLU(),
        TorchResidual(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8)),
        nn.Linear(8, 1),
    ).double()
    rng = np.random.default_rng(2)
    X, y, Z = rng.standard_normal((10, 3)), rng.standard_normal(10), rng.standard_normal((3, 3))
    kw = dict(time=20.0, learning_rate=0.3, diag_reg=0.0, normalize_y=False)
    a = NTKRegressor(network=module, **kw).fit(X, y)
    assert isinstance(a.network_, Network)
    b = NTKRegressor(network=from_torch(module), **kw).fit(X, y)
    np.testing.assert_array_equal(a.predict(Z), b.predict(Z))
    with torch.no_grad():  # at time 0 the prediction is the module's own output
        f0 = module(torch.from_numpy(Z)).numpy()[:, 0]
    np.testing.assert_allclose(
        NTKRegressor(network=module, **{**kw, "time": 0.0}).fit(X, y).predict(Z), f0, rtol=1e-10, atol=1e-12
    )
