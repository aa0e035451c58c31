"""Analytic kernels of layered networks: neural-tangents' stax values, Monte Carlo, the MLP, errors."""

import os

import numpy as np
import pytest

from ntksolve import MLP, analytic_kernels
from ntksolve.kernels.analytic import analytic_kernels as network_analytic_kernels
from ntksolve.kernels.network_analytic import network_analytic_kernels as generic_analytic
from ntksolve.kernels.network_empirical import network_empirical_nngp, network_empirical_ntk
from ntksolve.nets.layers import Activation, Dense
from ntksolve.nets.network import Network
from ntksolve.nets.normalization import LayerNorm
from ntksolve.nets.residual import Residual

DATA = os.path.join(os.path.dirname(__file__), "data", "nt_network_kernels.npz")


def architectures(width=3):
    """The networks of tests/reference_nt/make_network_kernels.py, at a given width."""
    n = width
    return {
        "per_layer": Network([Dense(n, 1.5, 0.2), "relu", Dense(n, 0.8, 0.0), "erf", Dense(1, 1.2, 0.1)]),
        "residual": Network(
            [
                Dense(n, 1.4, 0.1),
                Residual(["relu", Dense(n, 1.3, 0.1), "gelu", Dense(n, 1.1, 0.2)], scale=0.7),
                "relu",
                Dense(1, 1.0, 0.0),
            ]
        ),
        "layer_norm": Network(
            [Dense(n, 1.2, 0.3), LayerNorm(), "relu", Dense(n, 1.5, 0.1), LayerNorm(), "erf", Dense(1, 1.0, 0.2)]
        ),
        "prenorm": Network(
            [
                Dense(n, 1.0, 0.1),
                Residual([LayerNorm(), Dense(n, 1.4, 0.0), Activation("leaky_relu(0.1)"), Dense(n, 1.0, 0.05)]),
                LayerNorm(),
                "abs",
                Dense(1, 1.1, 0.0),
            ]
        ),
    }


@pytest.mark.parametrize("name", sorted(architectures()))
def test_network_analytic_kernels_equal_neural_tangents(name):
    ref = np.load(DATA)
    net = architectures()[name]
    k11 = network_analytic_kernels(net, ref["X1"])
    np.testing.assert_allclose(k11.nngp, ref[f"{name}_nngp"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(k11.ntk, ref[f"{name}_ntk"], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(k11.ntk, k11.ntk.T)
    k12 = network_analytic_kernels(net, ref["X1"], ref["X2"])
    np.testing.assert_allclose(k12.nngp, ref[f"{name}_nngp12"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(k12.ntk, ref[f"{name}_ntk12"], rtol=1e-12, atol=1e-14)
    # the shared point X2[0] = X1[2]: its pair is the diagonal
    assert k12.ntk[2, 0] == k11.ntk[2, 2] and k12.nngp[2, 0] == k11.nngp[2, 2]


@pytest.mark.parametrize("name", ["residual", "layer_norm"])
def test_monte_carlo_mean_of_wide_empirical_kernels(name):
    """The mean of the empirical kernels of wide random networks is the analytic kernel within its
    standard error (5 sigma, plus the O(1/width) bias)."""
    ref = np.load(DATA)
    X = ref["X1"][:3]
    net = architectures(width=512)[name]
    draws_ntk, draws_nngp = [], []
    for seed in range(12):
        p = net.init(5, random_state=seed)
        draws_ntk.append(network_empirical_ntk(net, p, X))
        draws_nngp.append(network_empirical_nngp(net, p, X))
    for draws, target in ((draws_ntk, ref[f"{name}_ntk"][:3, :3]), (draws_nngp, ref[f"{name}_nngp"][:3, :3])):
        draws = np.array(draws)
        mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
        assert np.all(np.abs(mean - target) <= 5 * se + 0.02 * np.abs(target)), (mean, target, se)


def test_mlp_network_analytic_equals_mlp():
    mlp = MLP((8, 8), "tanh", 1.3, 0.2)
    net = Network.from_mlp(mlp)
    X = np.random.default_rng(0).standard_normal((7, 4))
    a = analytic_kernels(mlp, X)
    # the public function runs an MLP-shaped network on the MLP's path: the very same numbers
    np.testing.assert_array_equal(analytic_kernels(net, X).ntk, a.ntk)
    nngp, ntk = generic_analytic(net, X)  # the layer-by-layer path agrees to rounding
    np.testing.assert_allclose(nngp, a.nngp, rtol=1e-13)
    np.testing.assert_allclose(ntk, a.ntk, rtol=1e-13)
    a, b = analytic_kernels(mlp, X, X[:3] + 0.1), generic_analytic(net, X, X[:3] + 0.1)
    np.testing.assert_allclose(b[1], a.ntk, rtol=1e-13)


def test_residual_scale_is_the_scaled_last_layer():
    """Residual(block, scale=s) is the block with s times its last Dense's weight_std and bias_std."""
    X = np.random.default_rng(1).standard_normal((5, 3))
    a = network_analytic_kernels(Network([Dense(4), Residual(["erf", Dense(4, 1.2, 0.3)], scale=0.5), Dense(1)]), X)
    b = network_analytic_kernels(Network([Dense(4), Residual(["erf", Dense(4, 0.6, 0.15)]), Dense(1)]), X)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-14)


def test_analytic_errors_name_the_layer():
    X = np.random.default_rng(2).standard_normal((4, 3))
    with pytest.raises(ValueError, match="layer 2 .*Gaussian"):
        network_analytic_kernels(Network([Dense(4), "relu", LayerNorm(), Dense(1)]), X)
    with pytest.raises(ValueError, match="Gaussian"):
        network_analytic_kernels(Network([Dense(4), "relu", Residual(Dense(4)), "relu", Dense(1)]), X)
    with pytest.raises(ValueError, match="end with a Dense"):
        network_analytic_kernels(Network([Dense(4), Residual([Dense(4), "relu"]), Dense(1)]), X)
    with pytest.raises(ValueError, match="affine"):
        network_analytic_kernels(Network([Dense(4), LayerNorm(affine=True), Dense(1)]), X)
    with pytest.raises(ValueError, match="one input feature"):
        network_analytic_kernels(Network([LayerNorm(), Dense(4), Dense(1)]), X[:, :1])
    with pytest.raises(ValueError, match="NTK parameterisation"):
        network_analytic_kernels(Network([Dense(4), "relu", Dense(1)], parameterization="standard"), X)


def test_layers_before_the_first_dense_act_on_the_inputs_exactly():
    """A LayerNorm (or activation) of the inputs is applied to them: the kernel is the MLP's of the
    normalised inputs."""
    X = np.random.default_rng(3).standard_normal((5, 4)) * 3 + 1
    Xn = (X - X.mean(1, keepdims=True)) / np.sqrt(X.var(1, keepdims=True) + 1e-5)
    a = network_analytic_kernels(Network([LayerNorm(), Dense(6), "relu", Dense(1)]), X)
    b = analytic_kernels(MLP((6,), "relu"), Xn)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-12)


def test_duplicated_points_get_the_diagonal_exactly():
    X = np.random.default_rng(5).standard_normal((6, 4))
    X[4] = X[1]
    net = architectures(width=3)["residual"]
    k = network_analytic_kernels(net, X)
    assert k.ntk[1, 4] == k.ntk[1, 1] == k.ntk[4, 4] and k.nngp[4, 1] == k.nngp[1, 1]
    assert np.linalg.eigvalsh(k.ntk).min() > -1e-12


def test_overflow_is_refused():
    X = np.random.default_rng(6).standard_normal((300, 3))
    net = Network([Dense(4, 1e40), "monomial(3)", Dense(4, 1e40), "monomial(3)", Dense(1)])
    with pytest.raises(ValueError, match="overflow|variance"):
        network_analytic_kernels(net, X)


@pytest.mark.parametrize("k", [1, 2])
def test_layernorm_of_the_outputs_has_no_analytic_kernel(k):
    """A LayerNorm after the readout normalises the k outputs, not infinitely many features: with
    one output the network is 0 at every width (its NTK too), so its map's kernels (about 1 on the
    diagonal) would be another network's."""
    X = np.random.default_rng(3).standard_normal((3, 4))
    net = Network([Dense(64), "relu", Dense(k), LayerNorm()])
    if k == 1:
        p = net.init(4, random_state=0)
        assert np.all(net.apply(p, X) == 0.0) and np.all(network_empirical_ntk(net, p, X) == 0.0)
    with pytest.raises(ValueError, match=rf"layer 3 \(LayerNorm\) normalises the network's {k} output"):
        network_analytic_kernels(net, X)
    with pytest.raises(ValueError, match="before the last Dense"):
        generic_analytic(Network([Dense(64), "relu", Dense(k), "tanh", LayerNorm(eps=0.1)]), X)
    # before the readout it keeps its map
    network_analytic_kernels(Network([Dense(64), LayerNorm(), "relu", Dense(k)]), X)
