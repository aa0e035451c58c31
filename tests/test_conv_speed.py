"""The convolution's fast routes against independent references: the per-channel factored NTK term
and the chunked backward against the explicit Jacobian, a standard-parameterisation CNN without a
bias draw trained by the explicit Jacobian's steps, and the empirical NTK's block bound against the
memory it really takes."""

import tracemalloc

import numpy as np
import pytest

from ntksolve.kernels import network_empirical
from ntksolve.kernels.network_empirical import network_empirical_ntk, network_jacobian
from ntksolve.nets.conv import Conv1D, Conv2D
from ntksolve.nets.layers import Dense
from ntksolve.nets.network import Network
from ntksolve.nets.pooling import GlobalAvgPool


@pytest.mark.parametrize("act", [["relu"], []])
def test_factored_top_convolution_is_the_jacobian_gram(act, monkeypatch):
    """Conv, [activation,] pooling, Dense (the factored route), with a bias and 1-D: J J^T; and the
    unfactored route (the factoring switched off) gives the same numbers."""
    net = Network(
        [Conv2D(3, 2, bias_std=0.4), "tanh", Conv2D(4, 3, padding="same", bias_std=0.7)]
        + act
        + [GlobalAvgPool(), Dense(3, bias_std=0.1)]
    )
    shape = (4, 5, 2)
    rng = np.random.default_rng(0)
    X, Z = rng.standard_normal((5,) + shape), rng.standard_normal((4,) + shape)
    params = net.init(shape, random_state=1)
    JX, JZ = network_jacobian(net, params, X), network_jacobian(net, params, Z)
    full = np.einsum("iap,jbp->ijab", JX, JX)
    got = network_empirical_ntk(net, params, X, trace=False)
    np.testing.assert_allclose(got, full, rtol=0, atol=1e-11)
    np.testing.assert_allclose(
        network_empirical_ntk(net, params, X, Z, block_size=2), np.einsum("iap,jap->ij", JX, JZ) / 3, rtol=0, atol=1e-11
    )
    monkeypatch.setattr(network_empirical, "_factor_top_conv", lambda *a: None)
    np.testing.assert_allclose(network_empirical_ntk(net, params, X, trace=False), full, rtol=0, atol=1e-11)

    net1 = Network(
        [Conv1D(5, 3, padding=1, bias_std=0.3)] + act + [GlobalAvgPool(), Dense(2)], parameterization="standard"
    )
    X1 = rng.standard_normal((4, 6, 2))
    p1 = net1.init((6, 2), random_state=2)
    J1 = network_jacobian(net1, p1, X1)
    monkeypatch.undo()
    np.testing.assert_allclose(
        network_empirical_ntk(net1, p1, X1, trace=False), np.einsum("iap,jbp->ijab", J1, J1), rtol=0, atol=1e-11
    )


def test_chunked_backward_matches_the_jacobian(monkeypatch):
    """Chunks of one row of signal patches (a strided, padded kernel): the same Jacobian as one chunk."""
    from ntksolve.nets import conv

    net = Network(
        [
            Conv2D(3, (3, 2), stride=(2, 1), padding=(1, 0), bias_std=0.2),
            "erf",
            Conv2D(2, 2, bias_std=0.5),
            "relu",
            GlobalAvgPool(),
            Dense(2),
        ]
    )
    shape = (5, 4, 2)
    X = np.random.default_rng(3).standard_normal((3,) + shape)
    params = net.init(shape, random_state=4)
    ref = network_jacobian(net, params, X)
    monkeypatch.setattr(conv, "_CHUNK_BYTES", 1)
    np.testing.assert_allclose(network_jacobian(net, params, X), ref, rtol=0, atol=1e-14)
    # and against finite differences of the outputs by the first layer's weights
    theta, eps = net.flatten_params(params), 1e-6
    for p in (0, 7, 17):
        e = np.zeros_like(theta)
        e[p] = eps
        fd = (
            net.apply(net.unflatten_params(theta + e, shape), X) - net.apply(net.unflatten_params(theta - e, shape), X)
        ) / (2 * eps)
        np.testing.assert_allclose(ref[:, :, p], fd, atol=1e-8)


def test_standard_cnn_without_bias_draw_trains_by_its_jacobian():
    """Standard parameterisation, convolutions with ``bias_std = 0``: the stored b cannot carry the
    trained bias, so training runs on :meth:`Network.trainable` (``bias_std = 1``, ``b = 0``): the
    same function, and two steps equal ``theta -= eta J^T (f - y) / (N k)`` from its explicit Jacobian."""
    from ntksolve import train_network

    net = Network(
        [Conv2D(3, 3, padding="same"), "tanh", Conv2D(2, 2), "relu", GlobalAvgPool(), Dense(2, bias_std=0.5)],
        parameterization="standard",
    )
    shape = (4, 4, 1)
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((5,) + shape), rng.standard_normal((5, 2))
    params = net.init(shape, random_state=6)
    tnet = net.trainable()
    assert tnet is not net and [getattr(l, "bias_std", None) for l in tnet.layers[:3:2]] == [1.0, 1.0]
    start = [(p[0], np.zeros_like(p[1])) if i in (0, 2) else p for i, p in enumerate(params)]
    np.testing.assert_allclose(tnet.apply(start, X), net.apply(params, X), rtol=0, atol=1e-14)
    eta = 0.2
    res = train_network(net, params, X, y, steps=2, learning_rate=eta, record_at=[0, 2])
    assert res.net == tnet
    t = np.concatenate(
        [
            np.concatenate([np.full(p[0].size, s.trained_weight), np.full(p[1].size, s.trained_bias)])
            for l, p, sh in zip(tnet.layers, start, tnet.shapes(shape))
            if l.has_params
            for s in [l.scales(sh)]
        ]
    )
    theta = tnet.flatten_params(start)
    for _ in range(2):
        cur = tnet.unflatten_params(theta, shape)
        J = network_jacobian(tnet, cur, X)
        theta = theta - eta * np.einsum("iap,ia->p", J, (tnet.apply(cur, X) - y) / y.size) / t
    assert np.abs(theta - tnet.flatten_params(start)).max() > 1e-3  # the biases and weights moved
    np.testing.assert_allclose(tnet.flatten_params(res.params), theta, rtol=0, atol=1e-12)


@pytest.mark.parametrize("trace", [True, False])
def test_block_bound_holds_the_measured_peak(trace, monkeypatch):
    """With a small block budget the empirical NTK of a CNN tiles its inputs, and what it holds beyond
    the kernel itself (tracemalloc sees numpy's allocations) stays within that budget; the tiles
    give the one-block kernel."""
    from ntksolve import _config

    net = Network(
        [
            Conv2D(8, 3, padding="same", bias_std=0.3),
            "relu",
            Conv2D(8, 3, padding="same"),
            "relu",
            GlobalAvgPool(),
            Dense(3),
        ]
    )
    shape = (6, 6, 1)
    X = np.random.default_rng(7).standard_normal((48,) + shape)
    params = net.init(shape, random_state=8)
    ref = network_empirical_ntk(net, params, X, trace=trace)
    budget = 1 << 20
    monkeypatch.setattr(_config, "EMPIRICAL_BLOCK_BYTES", budget)
    rows = network_empirical._block_rows(net, shape, 3, 8, 48, None)
    assert 1 < rows < 24  # several blocks
    tracemalloc.start()
    try:
        got = network_empirical_ntk(net, params, X, trace=trace)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - got.nbytes <= budget, (peak - got.nbytes, budget)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
