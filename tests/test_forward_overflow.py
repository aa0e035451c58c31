"""A forward pass whose pre-activations overflow their dtype is refused, never evaluated on.

From finite inputs and parameters, an infinite pre-activation can only be an overflow, and most
activations hide it: relu(-inf) = 0 and tanh(+-inf) = +-1 are finite, so the outputs and kernels
came out finite and wrong. The true pre-activations here are computed exactly in integers.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ntksolve import MLP, FloatOverflowError, empirical_ntk, train_network
from ntksolve.nets import Activation, Dense, Network
from ntksolve.nets.forward_mode import jacobian_vector_product

W1 = [[1e300, 1e300], [1.0, 1.0]]
X = [[1e10, -5e9]]


def _exact_first_preactivation():
    # 1e300 * 1e10 + 1e300 * (-5e9) = 5e309, in integers (float64's largest is 1.8e308)
    return int(1e300) * int(1e10) + int(1e300) * int(-5e9)


@pytest.fixture
def overflowing(request):
    net = MLP((2,), request.param, parameterization="standard")
    p = [(np.array(W1), np.zeros(2)), (np.ones((1, 2)), np.zeros(1))]
    return net, p, np.array(X)


@pytest.mark.parametrize("overflowing", ["relu", "tanh", "sigmoid", "erf"], indirect=True)
def test_mlp_forward_kernel_and_products_refuse_an_overflow(overflowing):
    net, p, x = overflowing
    assert _exact_first_preactivation() > int(np.finfo(np.float64).max)
    # the scales of a standard-parameterised layer of 2 inputs: sigma_w / sqrt(2) > 0.7, so the
    # scaled pre-activation still overflows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for run in (
            lambda: net.apply(p, x),
            lambda: empirical_ntk(net, p, x),
            lambda: jacobian_vector_product(net, p, x, p),
        ):
            with pytest.raises(FloatOverflowError, match="hidden layer 1 are not finite.*overflowed float64"):
                run()


def test_float32_overflow_names_float64():
    net = MLP((2,), "relu", parameterization="standard")
    p = [
        (np.array([[1e30, 1e30], [1, 1]], np.float32), np.zeros(2, np.float32)),
        (np.ones((1, 2), np.float32), np.zeros(1, np.float32)),
    ]
    x = np.array([[1e10, -5e9]], np.float32)  # 5e39 > float32's 3.4e38
    assert int(1e30) * int(1e10) - int(1e30) * int(5e9) > int(np.finfo(np.float32).max)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match=r"overflowed float32.*net.init\(\.\.\., dtype=np.float64\)"):
            net.apply(p, x)


def test_finite_preactivations_pass_unchanged():
    # the same network one scale below the overflow: evaluated, and equal to the plain formula
    net = MLP((2,), "relu", parameterization="standard")
    p = [(np.array([[1e290, 1e290], [1.0, 1.0]]), np.zeros(2)), (np.ones((1, 2)), np.zeros(1))]
    x = np.array(X)
    ws = net.weight_std / np.sqrt(2)
    z = ws * (x @ p[0][0].T)
    want = net.weight_std / np.sqrt(2) * np.maximum(z, 0).sum(axis=1, keepdims=True)
    assert np.allclose(net.apply(p, x), want, rtol=1e-14)


def test_network_activation_layer_refuses_an_overflow():
    # tanh(+-inf) = +-1: the overflow would pass as a saturated unit
    net = Network([Dense(2), Activation("tanh"), Dense(1)], parameterization="standard")
    params = net.init(2, random_state=0)
    params[0] = (np.array(W1), np.zeros(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(FloatOverflowError, match="inputs of a tanh activation layer are not finite"):
            net.apply(params, np.array(X))
        with pytest.raises(FloatOverflowError):
            empirical_ntk(net, params, np.array(X))


def test_training_takes_an_overflow_for_divergence():
    # a rate that throws the weights past float64 in one step: the run reports a divergence (with
    # on_divergence="return" a result, not an exception), whatever the activation hides
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal(8)
    for act in ("relu", "tanh"):
        net = MLP((16, 16), act)
        p = net.init(3, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = train_network(net, p, x, y, steps=5, learning_rate=1e306, on_divergence="return", track_kernel=False)
        assert res.diverged and res.n_steps_taken == 1
        assert "step 1" in res.message and "the the" not in res.message
        # the rate is the cause, not the features: the message names the critical rate
        assert "critical learning rate" in res.message and "standardise" not in res.message


def test_an_overflow_raised_by_the_callback_is_the_callbacks_own():
    # the training loop takes a FloatOverflowError of its own forward pass for divergence; one the
    # user's callback raises (here: the callback evaluates a network that overflows) is no
    # divergence of the run and reaches the caller unchanged
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal(8)
    net = MLP((16,), "relu")
    p = net.init(3, random_state=0)
    bad_net = MLP((2,), "relu", parameterization="standard")
    bad = [(np.array(W1), np.zeros(2)), (np.ones((1, 2)), np.zeros(1))]
    calls = []

    def callback(step, loss):
        calls.append(step)
        if len(calls) == 2:
            bad_net.apply(bad, np.array(X))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(FloatOverflowError, match="hidden layer 1"):
            train_network(net, p, x, y, steps=5, learning_rate=0.1, callback=callback, track_kernel=False)
    assert len(calls) == 2
