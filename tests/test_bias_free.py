"""Layers without a bias (``MLP(..., bias=False)`` or one flag per layer): no bias parameter at all.

Checked against independent references: the forward pass against the plain numpy reference, the
Jacobian against central finite differences, the empirical NTK against the explicit ``J Jᵀ``,
forward-mode ``J v`` and ``J θ_0`` against the explicit Jacobian, the analytic kernels against the
network with ``bias_std = 0``, real training against hand-written gradient descent on the explicit
Jacobian.
"""

import numpy as np
import pytest

from ntksolve import MLP, analytic_kernels, empirical_nngp, empirical_ntk, jacobian
from ntksolve.nets.forward_mode import jacobian_vector_product, own_parameter_image, trained_parameters
from ntksolve.training import train_network

from reference import fd_jacobian, forward as ref_forward

PATTERNS = [False, (False, True, False), (True, False, True), (True, True, False)]


def _net(bias, parameterization="ntk", k=2, activation="tanh"):
    return MLP(
        (6, 5),
        activation=activation,
        weight_std=1.3,
        bias_std=0.4,
        parameterization=parameterization,
        n_outputs=k,
        bias=bias,
    )


def _flags(bias):
    return [bias] * 3 if isinstance(bias, bool) else list(bias)


def _X(N=4, d=3, seed=1):
    return np.random.default_rng(seed).standard_normal((N, d))


@pytest.mark.parametrize("bias", PATTERNS)
def test_no_bias_parameter_exists(bias):
    net = _net(bias)
    params = net.init(3, random_state=0)
    widths = (6, 5, 2)
    for (W, b), n, has in zip(params, widths, _flags(bias)):
        assert b.shape == ((n,) if has else (0,))
    assert net.n_params(3) == sum(W.size for W, _ in params) + sum(n for n, h in zip(widths, _flags(bias)) if h)
    theta = net.flatten_params(params)
    assert theta.shape == (net.n_params(3),)
    for (W, b), (V, c) in zip(params, net.unflatten_params(theta, 3)):
        assert np.array_equal(W, V) and np.array_equal(b, c)
    # a zero-sized bias where one is expected, or a bias where there is none, is refused
    wrong = [(W, np.zeros(W.shape[0]) if b.size == 0 else np.zeros(0)) for W, b in params]
    with pytest.raises(ValueError, match="expected W of shape"):
        net.check_params(wrong)


def test_config_round_trip_equality_and_errors():
    net = _net((True, False, True))
    again = MLP(**net.get_config())
    assert again == net and hash(again) == hash(net) and again.bias == (True, False, True)
    assert "bias=(True, False, True)" in repr(net)
    assert MLP(**_net(False).get_config()).bias is False
    # biases everywhere: the config (and so stored fingerprints) as it always was
    assert "bias" not in _net(True).get_config() and _net((True,) * 3) == _net(True)
    assert _net(False) != _net(True)
    with pytest.raises(ValueError, match="bias has 2 flags but the network has 3 layers"):
        _net((True, False))
    with pytest.raises(TypeError, match="bias must be True, False or one bool per layer"):
        _net("no")
    with pytest.raises(TypeError, match="bias must be True, False or one bool per layer"):
        _net((1, 0, 1))


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("bias", PATTERNS)
def test_forward_jacobian_and_ntk_against_references(bias, parameterization):
    net = _net(bias, parameterization)
    params = net.init(3, random_state=2)
    X = _X()
    np.testing.assert_allclose(net.apply(params, X), ref_forward(params, X, "tanh", 1.3, 0.4), rtol=1e-13, atol=1e-13)
    J = jacobian(net, params, X)
    assert J.shape == (4, 2, net.n_params(3))
    np.testing.assert_allclose(J, fd_jacobian(net, params, X), rtol=0, atol=1e-7)
    full = np.einsum("iap,jbp->ijab", J, J)
    np.testing.assert_allclose(empirical_ntk(net, params, X, trace=False), full, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(empirical_ntk(net, params, X), np.einsum("ijaa->ij", full) / 2, rtol=1e-12, atol=1e-12)
    # tiled the same as untiled, cross kernel the same as a block of the joint one
    np.testing.assert_allclose(
        empirical_ntk(net, params, X, block_size=3), empirical_ntk(net, params, X), rtol=1e-13, atol=1e-13
    )
    X2 = _X(N=3, seed=5)
    J2 = jacobian(net, params, X2)
    np.testing.assert_allclose(
        empirical_ntk(net, params, X2, X, trace=False), np.einsum("iap,jbp->ijab", J2, J), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("bias", PATTERNS)
def test_forward_mode_against_the_explicit_jacobian(bias, parameterization):
    net = _net(bias, parameterization)
    params = net.init(3, random_state=3)
    X = _X()
    J = jacobian(net, params, X)
    v = net.init(3, random_state=4)
    np.testing.assert_allclose(
        jacobian_vector_product(net, params, X, v), J @ net.flatten_params(v), rtol=1e-12, atol=1e-12
    )
    theta = net.flatten_params(trained_parameters(net, params))
    np.testing.assert_allclose(own_parameter_image(net, params, X), J @ theta, rtol=1e-12, atol=1e-12)


def test_ntk_parameterisation_without_bias_is_bias_std_zero():
    # In NTK parameterisation a bias with sigma_b = 0 has no gradient and no effect: the network
    # without biases has the same function, empirical NTK and NNGP (same weights), and its analytic
    # kernels are those of bias_std = 0 whatever bias_std it was given.
    free = MLP((64, 64), "relu", weight_std=1.4, bias_std=0.7, n_outputs=2, bias=False)
    zero = MLP((64, 64), "relu", weight_std=1.4, bias_std=0.0, n_outputs=2)
    pz = zero.init(3, random_state=0)
    pf = [(W, np.zeros(0)) for W, _ in pz]
    X = _X(N=6)
    np.testing.assert_allclose(free.apply(pf, X), zero.apply(pz, X), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(
        empirical_ntk(free, pf, X, trace=False), empirical_ntk(zero, pz, X, trace=False), rtol=1e-13, atol=1e-13
    )
    np.testing.assert_allclose(empirical_nngp(free, pf, X), empirical_nngp(zero, pz, X), rtol=1e-13)
    a, b = analytic_kernels(free, X), analytic_kernels(zero, X)
    np.testing.assert_array_equal(a.ntk, b.ntk)
    np.testing.assert_array_equal(a.nngp, b.nngp)
    # ...and differ from the biased network's
    assert np.abs(analytic_kernels(MLP((1, 1), "relu", 1.4, 0.7), X).ntk - a.ntk).max() > 0.1


def test_analytic_kernels_refuse_biases_in_some_layers_only():
    X = _X()
    with pytest.raises(ValueError, match="biases in some layers only"):
        analytic_kernels(MLP((4,), bias_std=0.3, bias=(True, False)), X)
    # with bias_std = 0 every layer has sigma_b = 0 anyway
    np.testing.assert_array_equal(
        analytic_kernels(MLP((4,), bias=(True, False)), X).ntk, analytic_kernels(MLP((4,)), X).ntk
    )


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("bias", [False, (True, False, True)])
def test_training_moves_only_the_existing_parameters(bias, parameterization):
    # Reference: gradient descent on the trained coordinates with the explicit Jacobian,
    # theta <- theta - eta J^T (f - y) / (Nk), one step after another.
    net = _net(bias, parameterization)
    params = net.init(3, random_state=6)
    X = _X(N=5)
    y = np.random.default_rng(7).standard_normal((5, 2))
    eta, steps = 0.4, 6
    res = train_network(net, params, X, y, learning_rate=eta, steps=steps, track_kernel=False)
    cur = [(W.copy(), b.copy()) for W, b in params]
    scales = net.scales(3)
    for _ in range(steps):
        J = jacobian(net, cur, X).reshape(10, -1)
        step = eta * J.T @ (net.apply(cur, X) - y).ravel() / 10
        trained = net.flatten_params(trained_parameters(net, cur)) - step
        # back to the stored convention: divide by the trained scale of each entry
        out, pos = [], 0
        for (W, b), s in zip(cur, scales):
            W = trained[pos : pos + W.size].reshape(W.shape) / s.trained_weight
            pos += W.size
            b = trained[pos : pos + b.size] / s.trained_bias
            pos += b.size
            out.append((W, b))
        cur = out
    np.testing.assert_allclose(res.fx_train[-1], net.apply(cur, X), rtol=0, atol=1e-12)
    for (W, b), (V, c) in zip(res.params, cur):
        assert b.shape == c.shape
        np.testing.assert_allclose(W, V, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b, c, rtol=1e-12, atol=1e-12)
    assert np.abs(res.fx_train[-1] - res.fx_train[0]).max() > 0.05  # it trained
