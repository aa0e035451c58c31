"""The empirical NTK against independent numbers: J J^T from the explicit Jacobian, finite
differences, the analytic infinite-width limit, and its invariants."""

import numpy as np
import pytest

import ntksolve
from ntksolve import MLP, empirical_ntk, empirical_nngp, jacobian

from reference import WITH_ARGUMENTS, fd_jacobian


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _data(N=7, d=5, seed=1):
    return np.random.default_rng(seed).normal(size=(N, d))


@pytest.mark.parametrize("activation", list(ntksolve.ACTIVATIONS) + WITH_ARGUMENTS)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("k", [1, 3])
def test_ntk_equals_JJt(activation, parameterization, k):
    net = MLP(
        (8, 6), activation=activation, weight_std=1.4, bias_std=0.3, parameterization=parameterization, n_outputs=k
    )
    p = net.init(5, random_state=2)
    X, X2 = _data(), _data(4, seed=9)
    J, J2 = jacobian(net, p, X), jacobian(net, p, X2)
    full = np.einsum("iap,jbp->ijab", J, J)
    assert _rel(empirical_ntk(net, p, X, trace=False), full) < 1e-12
    assert _rel(empirical_ntk(net, p, X), np.einsum("ijaa->ij", full) / k) < 1e-12
    cross = np.einsum("iap,jbp->ijab", J, J2)
    assert _rel(empirical_ntk(net, p, X, X2, trace=False), cross) < 1e-12
    assert _rel(empirical_ntk(net, p, X, X2), np.einsum("ijaa->ij", cross) / k) < 1e-12


@pytest.mark.parametrize(
    "activation",
    [
        "relu",
        "erf",
        "gelu",
        "softplus",
        "leaky_relu(0.2)",
        "abs",
        "abrelu(-0.3, 1.5)",
        "sin",
        "cos",
        "gaussian",
        "monomial(3)",
    ],
)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_jacobian_equals_finite_differences(activation, parameterization):
    net = MLP(
        (5, 4), activation=activation, weight_std=1.2, bias_std=0.5, parameterization=parameterization, n_outputs=2
    )
    p = net.init(3, random_state=4)
    X = _data(4, 3, seed=5)
    J = jacobian(net, p, X)
    assert J.shape == (4, 2, net.n_params(3))
    assert _rel(J, fd_jacobian(net, p, X)) < 1e-6


def test_zero_layers_is_linear_model():
    net = MLP((), bias_std=0.5, n_outputs=2)
    p = net.init(3, random_state=0)
    X = _data(4, 3)
    # Theta = sigma_w^2 <x, x'>/d + sigma_b^2, times I_k
    expect = X @ X.T / 3 + 0.25
    np.testing.assert_allclose(empirical_ntk(net, p, X), expect, rtol=1e-14)
    full = empirical_ntk(net, p, X, trace=False)
    np.testing.assert_allclose(full[:, :, 0, 1], 0.0, atol=1e-15)


@pytest.mark.parametrize("trace", [True, False])
@pytest.mark.parametrize("block_size", [1, 3, 5, 64])
def test_tiled_equals_untiled(trace, block_size):
    net = MLP((16, 12), activation="tanh", bias_std=0.2, n_outputs=2)
    p = net.init(4, random_state=0)
    X, X2 = _data(13, 4), _data(6, 4, seed=3)
    for A, B in [(X, None), (X, X2)]:
        ref = empirical_ntk(net, p, A, B, trace=trace)
        tiled = empirical_ntk(net, p, A, B, trace=trace, block_size=block_size)
        assert _rel(tiled, ref) <= 1e-13


def test_symmetric_and_psd():
    net = MLP((32, 32), activation="relu", bias_std=0.1, n_outputs=3)
    p = net.init(6, random_state=1)
    X = _data(20, 6)
    full = empirical_ntk(net, p, X, trace=False)
    np.testing.assert_array_equal(full, full.transpose(1, 0, 3, 2))
    flat = full.transpose(0, 2, 1, 3).reshape(60, 60)
    ev = np.linalg.eigvalsh(flat)
    assert ev.min() > -1e-12 * ev.max()
    # the symmetric path (X2=None) and the general path (X2=X) agree
    assert _rel(empirical_ntk(net, p, X, X, trace=False), full) < 1e-14


def test_float32_matches_float64():
    net = MLP((64, 64), activation="erf", bias_std=0.1)
    p64 = net.init(5, random_state=0)
    p32 = [(W.astype(np.float32), b.astype(np.float32)) for W, b in p64]
    X = _data(10)
    k64 = empirical_ntk(net, p64, X)
    k32 = empirical_ntk(net, p32, X)
    assert k32.dtype == np.float32
    assert _rel(k32.astype(np.float64), k64) < 1e-5


def test_standard_and_ntk_same_f0_different_kernels():
    kw = dict(hidden_layer_sizes=(20, 20), activation="erf", weight_std=1.5, bias_std=0.3)
    ntk_net, std_net = MLP(**kw), MLP(**kw, parameterization="standard")
    p = ntk_net.init(4, random_state=3)
    X = _data(6, 4)
    np.testing.assert_array_equal(ntk_net.apply(p, X), std_net.apply(p, X))
    k_ntk, k_std = empirical_ntk(ntk_net, p, X), empirical_ntk(std_net, p, X)
    assert _rel(k_ntk, k_std) > 0.1
    for net, k in [(ntk_net, k_ntk), (std_net, k_std)]:
        J = jacobian(net, p, X)[:, 0]
        assert _rel(k, J @ J.T) < 1e-12


def test_empirical_nngp_definition():
    net = MLP((10, 7), activation="tanh", weight_std=1.3, bias_std=0.2)
    p = net.init(3, random_state=0)
    X = _data(5, 3)
    h = X
    for W, b in p[:-1]:
        h = np.tanh(1.3 / np.sqrt(h.shape[1]) * h @ W.T + 0.2 * b)
    np.testing.assert_allclose(empirical_nngp(net, p, X), 1.69 / 7 * h @ h.T + 0.04, rtol=1e-13)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_empirical_approaches_analytic_with_width(activation):
    X = _data(8, 4, seed=11)
    errs = {}
    for width in (256, 4096):
        e_ntk, e_nngp = [], []
        for seed in range(3):
            net = MLP((width, width), activation=activation, weight_std=1.2, bias_std=0.3)
            p = net.init(4, random_state=seed)
            ana = ntksolve.analytic_kernels(net, X)
            e_ntk.append(_rel(empirical_ntk(net, p, X), ana.ntk))
            e_nngp.append(_rel(empirical_nngp(net, p, X), ana.nngp))
        errs[width] = (np.mean(e_ntk), np.mean(e_nngp))
    # fluctuations shrink like width^{-1/2}: 16x the width, about 4x smaller; demand 2x
    assert errs[4096][0] < 0.5 * errs[256][0]
    assert errs[4096][1] < 0.5 * errs[256][1]
    assert errs[4096][0] < 0.1


def test_bad_inputs():
    net = MLP((4,))
    p = net.init(3, random_state=0)
    X = _data(3, 3)
    with pytest.raises(ValueError, match="NaN or infinity"):
        empirical_ntk(net, p, np.where(X > 0, np.nan, X))
    with pytest.raises(ValueError, match="X2 has 2 features, but the network expects 3"):
        empirical_ntk(net, p, X, np.ones((2, 2)))
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        empirical_ntk(net, p, X, block_size=0)
    with pytest.raises(ValueError, match="net must be an ntksolve.MLP"):
        empirical_ntk("mlp", p, X)
    with pytest.raises(ValueError, match="layer 1: expected W of shape"):
        empirical_ntk(MLP((5,)), p, X)
    with pytest.raises(ValueError, match="standard parameterisation"):
        ntksolve.analytic_kernels(MLP((4,), parameterization="standard"), X)


def test_memory_guard_before_work():
    net = MLP((4,))
    p = net.init(2, random_state=0)
    big = np.zeros((3_000_000, 2))
    with pytest.raises(MemoryError, match=r"would take .* [TG]iB, but only .* available"):
        empirical_ntk(net, p, big)
    with pytest.raises(MemoryError, match="analytic kernels"):
        ntksolve.analytic_kernels(net, big)
    with pytest.raises(MemoryError, match="Jacobian"):
        jacobian(MLP((4096,)), MLP((4096,)).init(2), np.zeros((200_000, 2)))
