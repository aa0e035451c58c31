"""The MLP: initialisation statistics, forward pass against a plain numpy reference, bad input."""

import numpy as np
import pytest

import ntksolve
from ntksolve import MLP

from reference import WITH_ARGUMENTS, forward as ref_forward


@pytest.mark.parametrize("activation", list(ntksolve.ACTIVATIONS) + WITH_ARGUMENTS)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_apply_matches_numpy_reference(activation, parameterization):
    net = MLP(
        (9, 7), activation=activation, weight_std=1.3, bias_std=0.4, parameterization=parameterization, n_outputs=3
    )
    params = net.init(5, random_state=0)
    X = np.random.default_rng(1).normal(size=(11, 5)) * 2
    f = net.apply(params, X)
    assert f.shape == (11, 3)
    np.testing.assert_allclose(f, ref_forward(params, X, activation, 1.3, 0.4), rtol=1e-13, atol=1e-13)


def test_init_shapes_and_standard_normal():
    net = MLP((300, 200), n_outputs=4)
    params = net.init(50, random_state=np.random.default_rng(3))
    shapes = [(W.shape, b.shape) for W, b in params]
    assert shapes == [((300, 50), (300,)), ((200, 300), (200,)), ((4, 200), (4,))]
    allw = np.concatenate([W.ravel() for W, _ in params])
    # 75 800 draws: mean within 5 standard errors of 0, variance within 2%
    assert abs(allw.mean()) < 5 / np.sqrt(allw.size)
    assert abs(allw.var() - 1) < 0.02
    assert net.n_params(50) == sum(W.size + b.size for W, b in params)


def test_init_reproducible_and_dtype():
    net = MLP((8,))
    a = net.init(3, random_state=7)
    b = net.init(3, random_state=7)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    p32 = net.init(3, random_state=7, dtype=np.float32)
    assert p32[0][0].dtype == np.float32
    assert net.apply(p32, np.ones((2, 3))).dtype == np.float32


def test_flatten_roundtrip():
    net = MLP((4, 3), n_outputs=2)
    p = net.init(5, random_state=0)
    q = net.unflatten_params(net.flatten_params(p), 5)
    for (W, b), (V, c) in zip(p, q):
        assert np.array_equal(W, V) and np.array_equal(b, c)


def test_apply_does_not_modify_inputs_and_accepts_odd_layouts():
    net = MLP((6,), activation="tanh", bias_std=0.2)
    p = net.init(4, random_state=0)
    X = np.asfortranarray(np.random.default_rng(0).normal(size=(5, 4)))
    X0 = X.copy()
    f1 = net.apply(p, X)
    Xi = np.arange(20).reshape(5, 4)  # integers are converted, not rejected
    f2 = net.apply(p, Xi)
    assert np.array_equal(X, X0)
    np.testing.assert_allclose(f1, net.apply(p, np.ascontiguousarray(X)))
    np.testing.assert_allclose(f2, net.apply(p, Xi.astype(float)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(activation="swish"), "valid activations are relu, erf, tanh"),
        (dict(parameterization="mup"), "valid values are ntk, standard"),
        (dict(hidden_layer_sizes=(4, 0)), "positive ints"),
        (dict(hidden_layer_sizes=(4, -2)), "positive ints"),
        (dict(weight_std=0.0), "weight_std must be a finite positive"),
        (dict(bias_std=-1.0), "bias_std must be a finite non-negative"),
        (dict(n_outputs=0), "n_outputs must be a positive int"),
    ],
)
def test_bad_network_spec(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLP(**{"hidden_layer_sizes": (4,), **kwargs})


def test_bad_inputs_to_apply():
    net = MLP((4,))
    p = net.init(3, random_state=0)
    with pytest.raises(ValueError, match="NaN or infinity"):
        net.apply(p, np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        net.apply(p, np.array([[0.0, np.inf, 1.0]]))
    with pytest.raises(ValueError, match="has 2 features, but the network expects 3"):
        net.apply(p, np.ones((4, 2)))
    with pytest.raises(ValueError, match="must be 2-D"):
        net.apply(p, np.ones(3))
    with pytest.raises(ValueError, match="list of 2"):
        net.apply(p[:1], np.ones((1, 3)))
    with pytest.raises(ValueError, match="n_features must be a positive int"):
        net.init(0)


def test_config_roundtrip_and_layers():
    net = MLP((6, 4), activation="erf", weight_std=1.5, bias_std=0.2, parameterization="standard", n_outputs=3)
    again = MLP(**net.get_config())
    assert again == net and hash(again) == hash(net) and again != MLP((6, 4))
    assert [layer.width for layer in net.layers] == [6, 4, 3] and net.widths(5) == (5, 6, 4, 3)
    assert net.phi.name == "erf" and net.n_params(5) == 6 * 5 + 6 + 4 * 6 + 4 + 3 * 4 + 3
    np.testing.assert_allclose([s[0] for s in net.layer_scales(5)], 1.5 / np.sqrt([5, 6, 4]), rtol=1e-15)


def _fd_bias_derivative(net, params, X, l, j, eps=1e-6):
    """Central difference of f(X) (N, k) in the stored bias b^l_j: bias_std * delta^l_j(x_i)."""
    up = [(W, b.copy()) for W, b in params]
    down = [(W, b.copy()) for W, b in params]
    up[l - 1][1][j] += eps
    down[l - 1][1][j] -= eps
    return (
        ref_forward(up, X, net.activation, net.weight_std, net.bias_std)
        - ref_forward(down, X, net.activation, net.weight_std, net.bias_std)
    ) / (2 * eps)


@pytest.mark.parametrize("activation", ["relu", "erf", "softplus", "gelu", "leaky_relu(0.2)", "sin", "gaussian"])
@pytest.mark.parametrize("k", [1, 3])
def test_backward_equals_finite_differences(activation, k):
    # Independent reference: perturbing the bias b^l_j moves z^l_j(x_i) by bias_std * eps for every
    # input at once, so a central difference of the outputs gives every delta^l_a(x_i)_j.
    from ntksolve.nets import backward, forward

    net = MLP((6, 5, 4), activation=activation, weight_std=1.3, bias_std=0.7, n_outputs=k)
    params = net.init(3, random_state=2)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(5, 3))
    r = rng.normal(size=(5, k))
    _, _, dphis = forward(net, params, X, keep=True)
    by_identity = dict(backward(net, params, dphis))
    # the identity seed spelled out takes the general (GEMM) path: the same deltas
    by_eye = dict(backward(net, params, dphis, np.tile(np.eye(k), (5, 1, 1))))
    by_residual = dict(backward(net, params, dphis, r[:, None, :]))
    assert sorted(by_identity) == [1, 2, 3, 4] and by_identity[4] is None
    for l in range(1, net.depth + 1):
        fd = (
            np.stack([_fd_bias_derivative(net, params, X, l, j) for j in range(net.layers[l - 1].width)], axis=-1)
            / net.bias_std
        )  # (N, k, n_l)
        np.testing.assert_allclose(by_identity[l], fd, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(by_eye[l], fd, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(by_residual[l][:, 0], np.einsum("ia,iaj->ij", r, fd), rtol=1e-6, atol=1e-8)
