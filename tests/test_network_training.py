"""Real training of layered networks: the MLP's trajectories, and steps against an explicit Jacobian."""

import numpy as np
import pytest

import ntksolve
from ntksolve import MLP, Adam, GradientDescent
from ntksolve.kernels.network_empirical import network_jacobian
from ntksolve.nets.layers import Dense
from ntksolve.nets.network import Network
from ntksolve.nets.normalization import LayerNorm
from ntksolve.nets.residual import Residual
from ntksolve.network_training import _train_layers


def _data(N=6, d=3, k=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d)), rng.standard_normal((N, k))


@pytest.mark.parametrize(
    "rule", [GradientDescent(0.3), GradientDescent(0.2, momentum=0.9, nesterov=True, weight_decay=0.01), Adam(0.01)]
)
def test_mlp_shaped_network_trains_exactly_as_the_mlp(rule):
    X, y = _data()
    mlp = MLP((8, 8), "tanh", 1.2, 0.1, n_outputs=2)
    net = Network.from_mlp(mlp)
    p = mlp.init(3, random_state=0)
    a = ntksolve.train_network(mlp, p, X, y, steps=5, dynamics=rule, record_at=[0, 2, 5])
    b = ntksolve.train_network(net, Network.params_from_mlp(p), X, y, steps=5, dynamics=rule, record_at=[0, 2, 5])
    np.testing.assert_array_equal(b.fx_train, a.fx_train)
    np.testing.assert_array_equal(b.kernel_change, a.kernel_change)
    assert b.net == net and len(b.params) == 5
    # the layer-by-layer loop follows the same trajectory to rounding
    c = _train_layers(net, Network.params_from_mlp(p), X, y, steps=5, dynamics=rule, record_at=[0, 2, 5])
    np.testing.assert_allclose(c.fx_train, a.fx_train, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c.kernel_change, a.kernel_change, rtol=1e-9, atol=1e-13)


NETS = {
    "residual_layernorm": Network(
        [
            Dense(5, 1.3, 0.2),
            LayerNorm(affine=True),
            "relu",
            Residual([Dense(5, bias=False), "erf", Dense(5, 0.9, 0.1)], scale=0.5),
            LayerNorm(),
            Dense(2, 1.1, 0.3),
        ]
    ),
    "standard": Network(
        [LayerNorm(affine=True), Dense(6), "gelu", Residual(Dense(6)), Dense(2)], parameterization="standard"
    ),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_one_step_is_the_jacobian_gradient(name):
    """theta_1 = theta_0 - eta J^T r, r = (f - y)/(Nk), with J from the explicit Jacobian (trained
    coordinates are the stored ones in NTK parameterisation; in standard ones, for the layer norm)."""
    net = NETS[name]
    X, y = _data(seed=1)
    p = net.init(3, random_state=2)
    p = net.unflatten_params(
        net.flatten_params(p) + 0.2 * np.random.default_rng(3).standard_normal(net.n_params(3)), (3,)
    )
    res = ntksolve.train_network(net, p, X, y, steps=1, learning_rate=0.5, track_kernel=False)
    J = network_jacobian(net, p, X)
    r = (net.apply(p, X) - y) / y.size
    step = -0.5 * np.einsum("iap,ia->p", J, r)
    theta0, theta1 = net.flatten_params(p), res.net.flatten_params(res.params)
    if net.parameterization == "ntk":
        np.testing.assert_allclose(theta1 - theta0, step, rtol=1e-10, atol=1e-14)
    else:  # the layer norm's gamma, beta come first and are trained as stored
        n = 3  # the inputs' features
        np.testing.assert_allclose((theta1 - theta0)[: 2 * n], step[: 2 * n], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res.fx_train[0], net.apply(p, X))
    np.testing.assert_allclose(res.fx_train[-1], res.net.apply(res.params, X))


def test_layered_network_training_decreases_the_loss_with_every_rule():
    net = NETS["residual_layernorm"]
    X, y = _data(N=8, seed=4)
    p = net.init(3, random_state=5)
    for rule in (GradientDescent(0.5, momentum=0.5), Adam(0.02), GradientDescent(0.3, weight_decay=0.1)):
        res = ntksolve.train_network(net, p, X, y, steps=20, dynamics=rule, track_kernel=True)
        assert res.loss_train[-1] < 0.9 * res.loss_train[0]
        assert res.kernel_change[-1] > 0
    with pytest.raises(ntksolve.TrainingDivergedError):
        ntksolve.train_network(net, p, X, y, steps=50, learning_rate=1e4, track_kernel=False)


def test_standard_parameterisation_without_bias_scale_trains_as_the_trainable_network():
    """In standard parameterisation a layer with bias_std = 0 has b~ = 0 (trained, from 0); the
    other layers keep their biases. One step against the Jacobian of the network itself."""
    net = Network(
        [Dense(5, 1.0, 0.0), "tanh", Dense(5, 1.0, 0.7), "relu", Dense(2, 1.3, 0.0)], parameterization="standard"
    )
    X, y = _data(seed=6)
    p = net.init(3, random_state=7)
    res = ntksolve.train_network(net, p, X, y, steps=1, learning_rate=0.4, track_kernel=False)
    np.testing.assert_allclose(res.fx_train[0], net.apply(p, X), rtol=1e-13)
    J = network_jacobian(net, p, X)  # by the trained parameters (W~, b~)
    r = (net.apply(p, X) - y) / y.size
    step = -0.4 * np.einsum("iap,ia->p", J, r)

    def trained(network, params):  # (ws W, bs b) of every Dense, flattened like the Jacobian
        out = []
        for leaf, (W, b) in zip(network.leaves(), [q for q in params if q != ()]):
            s = leaf.scales((W.shape[1],))
            out += [s.trained_weight * W.ravel(), s.trained_bias * b if leaf.spec.bias_std else 0.0 * b]
        return np.concatenate(out)

    np.testing.assert_allclose(trained(res.net, res.params) - trained(net, p), step, rtol=1e-10, atol=1e-14)
    assert res.net != net and res.net.flatten_params(res.params).shape == net.flatten_params(p).shape
