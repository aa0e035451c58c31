"""The Hermite series in a Network's analytic kernels: the MLP's numbers, the mixture's values, the diagonal."""

import numpy as np
import pytest

from ntksolve import MLP, analytic_kernels
from ntksolve.kernels.network_analytic import _input_state
from ntksolve.kernels.network_analytic import network_analytic_kernels as generic_analytic
from ntksolve.nets.layers import Activation, Dense
from ntksolve.nets.network import Network
from ntksolve.nets.normalization import LayerNorm
from ntksolve.nets.residual import Residual

#: More points than a tile (256): pairs in every kind of tile, blocks cut by the tiles' edges.
N = 300


def _data(seed=0, n=N, d=6):
    X = np.random.default_rng(seed).standard_normal((n, d))
    if n > 270:
        X[270] = X[3]  # identical points in different tiles
        X[10] = X[4]  # and in one tile
    return X


def _scaled_error(a, b, diag1, diag2):
    """``max |a - b| / sqrt(K(x, x) K(x', x'))``: the error on the kernel's own scale (an entry
    near 0 has no relative accuracy, from any method)."""
    return float(np.max(np.abs(a - b) / np.sqrt(np.outer(diag1, diag2))))


def _layers(depth, act, ws, width=16):
    out = []
    for _ in range(depth):
        out += [Dense(width, ws, 0.1), Activation(act)]
    return out + [Dense(1, ws, 0.1)]


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softplus"])
@pytest.mark.parametrize("depth, ws", [(1, 1.0), (3, 1.5)])
def test_network_equal_to_an_mlp_gives_the_mlps_kernels(act, depth, ws):
    """The layer-by-layer path (tiles of pairs) against the MLP's (rows of pairs): the same series,
    the same terms for every pair, so agreement to rounding (the mixture in every pair differed by up to
    1.4e-13); identical points the exact diagonal."""
    mlp = MLP((16,) * depth, act, ws, 0.1)
    net = Network(_layers(depth, act, ws))
    X = _data()
    Y = np.vstack([X[::7], _data(seed=1, n=40)])  # shares points with X
    a, b = analytic_kernels(mlp, X), generic_analytic(net, X)
    dn, dt = np.diag(a.nngp), np.diag(a.ntk)
    assert _scaled_error(b[0], a.nngp, dn, dn) <= 1e-14
    assert _scaled_error(b[1], a.ntk, dt, dt) <= 1e-14
    for K in b:
        np.testing.assert_array_equal(K, K.T)
        assert K[3, 270] == K[3, 3] == K[270, 270] and K[4, 10] == K[4, 4]
    a2, b2 = analytic_kernels(mlp, X, Y), generic_analytic(net, X, Y)
    dY = analytic_kernels(mlp, Y)
    assert _scaled_error(b2[0], a2.nngp, dn, np.diag(dY.nngp)) <= 1e-14
    assert _scaled_error(b2[1], a2.ntk, dt, np.diag(dY.ntk)) <= 1e-14
    assert b2[1][7, 1] == b[1][7, 7] and b2[0][7, 1] == b[0][7, 7]  # Y[1] = X[7]


def _mixture_kernels(net, X):
    """A second method: the layers' maps on the whole matrices (no tiles), every pair of tanh,
    sigmoid and softplus by the scale mixture (the state's own ``activation_map``, without series)."""
    state = _input_state(X, None, True)
    state = state.replace(ntk=np.zeros_like(state.nngp))
    for layer in net.layers:
        state = layer.analytic(state)
    K, T = np.triu(state.nngp), np.triu(state.ntk)
    return K + np.triu(K, 1).T, T + np.triu(T, 1).T


@pytest.mark.parametrize(
    "net",
    [
        Network([Dense(8, 1.5, 0.1), Residual(["tanh", Dense(8, 1.2, 0.2)], scale=0.7), "sigmoid", Dense(1)]),
        Network([Dense(8, 1.0, 0.3), LayerNorm(), "softplus", Dense(8, 1.5, 0.1), LayerNorm(), "tanh", Dense(1)]),
        Network(
            [
                Dense(8, 1.5, 0.0),
                "tanh",
                Dense(8, 1.5, 0.1),
                Residual([LayerNorm(), "sigmoid", Dense(8)]),
                "erf",
                Dense(1),
            ]
        ),
    ],
    ids=["residual", "layer_norm", "prenorm"],
)
def test_network_without_an_mlp_agrees_with_the_mixture(net):
    """Residual blocks and layer norms: the series (1e-12 per map) against the mixture for every
    pair; identical points still the exact diagonal."""
    X = _data(seed=2)
    nngp, ntk = generic_analytic(net, X)
    ref_nngp, ref_ntk = _mixture_kernels(net, X)
    assert _scaled_error(nngp, ref_nngp, np.diag(ref_nngp), np.diag(ref_nngp)) <= 1e-10
    assert _scaled_error(ntk, ref_ntk, np.diag(ref_ntk), np.diag(ref_ntk)) <= 1e-10
    assert not np.array_equal(ntk, ref_ntk)  # the series did serve pairs
    for K in (nngp, ntk):
        assert K[3, 270] == K[3, 3] == K[270, 270] and K[4, 10] == K[4, 4]


def test_mixture_helper_is_the_mlps_mixture():
    """The second method itself, on a network equal to an MLP: the MLP's pair kernel with the
    series switched off, to rounding."""
    from ntksolve.kernels.analytic import analytic_pair_kernels

    X = _data(seed=3, n=40)
    nngp, ntk = _mixture_kernels(Network(_layers(2, "tanh", 1.5)), X)
    ref = analytic_pair_kernels(X, X, 2, "tanh", 1.5, 0.1, True, series=False)
    d = np.diag(ref[1])
    assert _scaled_error(ntk, ref[1], d, d) <= 1e-13
