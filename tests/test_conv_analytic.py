"""The analytic kernels of convolutional networks (the CNTK): neural-tangents' stax values, Monte Carlo
of wide networks, the dense kernels, the errors."""

import json
import pathlib

import numpy as np
import pytest

from ntksolve import analytic_kernels as network_analytic_kernels
from ntksolve.kernels.network_empirical import network_empirical_nngp, network_empirical_ntk
from ntksolve.nets.conv import Conv, Conv2D
from ntksolve.nets.layers import Activation, Dense
from ntksolve.nets.network import Network
from ntksolve.nets.normalization import LayerNorm
from ntksolve.nets.pooling import Flatten, GlobalAvgPool

DATA = pathlib.Path(__file__).parent / "data" / "conv_nt_kernels.npz"


def _build(spec):
    layers = []
    for kind, kw in spec["layers"]:
        if kind == "conv":
            layers.append(Conv(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}))
        elif kind == "act":
            layers.append(Activation(kw))
        elif kind == "gap":
            layers.append(GlobalAvgPool())
        elif kind == "flatten":
            layers.append(Flatten())
        else:
            layers.append(Dense(**kw))
    return Network(layers), tuple(spec["input_shape"])


REF = np.load(DATA)
SPECS = json.loads(str(REF["specs"]))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_cntk_equals_neural_tangents(name):
    """stax values from tests/reference_nt/make_conv_kernels.py (1-D and 2-D, 'same' with odd and
    even kernels, strides, no bias, relu / erf / gelu / leaky relu, pooling and flatten)."""
    net, shape = _build(SPECS[name])
    X1 = REF[f"{name}/X1"].reshape((-1,) + shape)
    X2 = REF[f"{name}/X2"].reshape((-1,) + shape)
    k11 = network_analytic_kernels(net, X1)
    k12 = network_analytic_kernels(net, X1, X2)
    np.testing.assert_array_equal(k11.ntk, k11.ntk.T)
    off = ~np.eye(X1.shape[0], dtype=bool)
    np.testing.assert_allclose(k11.nngp, REF[f"{name}/nngp11"], rtol=1e-12)
    np.testing.assert_allclose(k11.ntk[off], REF[f"{name}/ntk11"][off], rtol=1e-12)
    # neural-tangents evaluates the relu NTK of a point with itself through arccos(1 - rounding),
    # which loses half the digits (1e-9 measured on these); ours has det = 0 exactly there
    np.testing.assert_allclose(np.diag(k11.ntk), np.diag(REF[f"{name}/ntk11"]), rtol=1e-8)
    np.testing.assert_allclose(k12.nngp, REF[f"{name}/nngp12"], rtol=1e-12)
    np.testing.assert_allclose(k12.ntk, REF[f"{name}/ntk12"], rtol=1e-12)


@pytest.mark.parametrize("pool", ["gap", "flatten"])
def test_monte_carlo_mean_of_wide_conv_kernels(pool):
    """The mean of the empirical kernels of wide random CNNs is the analytic kernel within its
    standard error (5 sigma, plus the O(1/channels) bias)."""
    end = GlobalAvgPool() if pool == "gap" else Flatten()
    net = Network(
        [
            Conv2D(256, 3, padding="same", weight_std=1.4, bias_std=0.2),
            "relu",
            Conv2D(256, 2, weight_std=1.3),
            "relu",
            end,
            Dense(1, bias_std=0.1),
        ]
    )
    shape = (4, 4, 1)
    X = np.random.default_rng(0).standard_normal((3,) + shape)
    exact = network_analytic_kernels(net, X)
    draws_ntk, draws_nngp = [], []
    for seed in range(10):
        p = net.init(shape, random_state=seed)
        draws_ntk.append(network_empirical_ntk(net, p, X))
        draws_nngp.append(network_empirical_nngp(net, p, X))
    for draws, target in ((draws_ntk, exact.ntk), (draws_nngp, exact.nngp)):
        draws = np.array(draws)
        mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
        assert np.all(np.abs(mean - target) <= 5 * se + 0.02 * np.abs(target)), (mean, target, se)


def test_one_by_one_conv_on_one_pixel_is_dense():
    """A 1x1 convolution of a 1x1 image is a dense layer: the MLP's kernels."""
    X = np.random.default_rng(1).standard_normal((6, 1, 1, 5))
    conv = Network(
        [
            Conv2D(8, 1, weight_std=1.3, bias_std=0.2),
            "erf",
            Conv2D(8, 1, weight_std=1.1),
            "relu",
            Flatten(),
            Dense(1, 0.9, 0.1),
        ]
    )
    dense = Network([Dense(8, 1.3, 0.2), "erf", Dense(8, 1.1), "relu", Dense(1, 0.9, 0.1)])
    a, b = network_analytic_kernels(conv, X), network_analytic_kernels(dense, X.reshape(6, 5))
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-13)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-13)


def test_cntk_errors_name_the_layer():
    X = np.random.default_rng(2).standard_normal((3, 4, 4, 1))
    with pytest.raises(ValueError, match="layer 1 .*closed-form"):
        network_analytic_kernels(Network([Conv2D(2, 3), "tanh", GlobalAvgPool(), Dense(1)]), X)
    with pytest.raises(ValueError, match="standard"):
        network_analytic_kernels(Network([Conv2D(2, 3), GlobalAvgPool(), Dense(1)], parameterization="standard"), X)
    with pytest.raises(ValueError, match="layer 2 .*Gaussian"):
        network_analytic_kernels(Network([Conv2D(2, 3), "relu", "erf", GlobalAvgPool(), Dense(1)]), X)
    with pytest.raises(ValueError, match="variance"):
        network_analytic_kernels(Network([Conv2D(2, 3, weight_std=1e4), "erf", GlobalAvgPool(), Dense(1)]), X)


def test_activation_after_flatten_is_refused_not_averaged():
    """``Conv, Flatten, relu`` is the function of ``Conv, relu, Flatten``, but its flat state after the
    Flatten is the mean of the positions' covariances, and the map of a mean is not the mean of the
    maps: refused (it gave another kernel), with the fix; on one position it is the dense network."""
    X = np.random.default_rng(3).standard_normal((3, 4, 4, 2))
    net = Network([Conv2D(3, 3, padding="same", bias_std=0.2), Flatten(), "relu", Dense(1)])
    with pytest.raises(ValueError, match=r"layer 2 .*Flatten"):
        network_analytic_kernels(net, X)
    # so is one after a LayerNorm of the flattened features, still Gaussian per position
    net = Network([Conv2D(3, 3, padding="same", bias_std=0.2), Flatten(), LayerNorm(), "relu", Dense(1)])
    with pytest.raises(ValueError, match=r"layer 3 .*Flatten"):
        network_analytic_kernels(net, X)
    # one position: the flattened features are one Gaussian, as a Dense's
    X1 = np.random.default_rng(4).standard_normal((5, 1, 1, 3))
    conv = Network([Conv2D(8, 1, weight_std=1.2, bias_std=0.3), Flatten(), "erf", Dense(1, 0.9, 0.1)])
    dense = Network([Dense(8, 1.2, 0.3), "erf", Dense(1, 0.9, 0.1)])
    a, b = network_analytic_kernels(conv, X1), network_analytic_kernels(dense, X1.reshape(5, 3))
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-13)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-13)


@pytest.mark.parametrize("act", ["relu", "leaky_relu(0.2)", "abs"])
def test_tiny_variances_before_relu_are_refused_not_halved(act):
    """Bias-free relu networks are homogeneous: ``K(s X) = s^2 K(X)``. Below variances of 1e-154 the
    relu map's product ``s11 s22`` underflowed to 0 and it returned half the NTK (or 0), silently,
    in the MLP, the Network and the CNTK alike; now refused by name, and exact above the bound."""
    from ntksolve import MLP

    rng = np.random.default_rng(5)
    X = rng.standard_normal((3, 4, 4, 1))
    nets = [
        (Network([Conv2D(3, 3, padding="same"), Activation(act), GlobalAvgPool(), Dense(1)]), X),
        (Network([Dense(3), Activation(act), Dense(4, 1.2), Activation(act), Dense(1)]), X.reshape(3, -1)),
        (MLP((3,), act, 1.0, 0.0), X.reshape(3, -1)),
    ]
    for net, Z in nets:
        ref = network_analytic_kernels(net, Z)
        ok = network_analytic_kernels(net, Z * 1e-70)  # variances ~1e-140: products representable
        np.testing.assert_allclose(ok.ntk, ref.ntk * 1e-140, rtol=1e-12)
        np.testing.assert_allclose(ok.nngp, ref.nngp * 1e-140, rtol=1e-12)
        with pytest.raises(ValueError, match="too small"):
            network_analytic_kernels(net, Z * 1e-100)
    # a variance of exactly 0 (zero inputs, no bias) is exact: relu'(0) = 0
    zero = network_analytic_kernels(nets[0][0], np.zeros((2, 4, 4, 1)))
    np.testing.assert_array_equal(zero.ntk, 0.0)


def test_layernorm_after_flatten_divides_by_the_mean_square_over_every_position():
    """A LayerNorm of flattened convolution outputs divides each example's features by their mean
    square over all positions and channels, at infinite width ``v(x) = mean_p K_pp(x, x)``: its map
    is the flat state's (linear in it), so it is exact there, unlike an activation's. Pinned by the
    closed form of one convolution from its patches (a wide network's empirical kernels, 3000
    channels and 6 seeds, agree with it to 6e-4 and 4e-3); positions of very different variance
    tell it from a normalisation per position."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 3, 3, 1))
    X[:, 0, 0, 0] *= 6.0
    ws, bs, eps = 1.3, 0.3, 1e-5
    net = Network([Conv2D(5, 2, weight_std=ws, bias_std=bs), Flatten(), LayerNorm(eps), Dense(1, 0.9, 0.2)])
    got = network_analytic_kernels(net, X)
    # the convolution's covariance per output position p (2 x 2 of them), (N, N, 4)
    patches = np.stack([X[:, i : i + 2, j : j + 2, 0].reshape(3, 4) for i in range(2) for j in range(2)], axis=2)
    K = ws**2 / 4 * np.einsum("aqp,bqp->abp", patches, patches) + bs**2
    mean = K.mean(axis=2)  # the first layer's NTK is its NNGP
    d = 1 / np.sqrt(np.diag(mean) + eps)
    ln = mean * d[:, None] * d[None, :]
    np.testing.assert_allclose(got.nngp, 0.81 * ln + 0.04, rtol=1e-12)
    np.testing.assert_allclose(got.ntk, 0.81 * ln + 0.04 + 0.81 * ln, rtol=1e-12)
