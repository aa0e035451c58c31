"""The blocked symmetric Gram products (``kernels.empirical._gram``) against plain products.

The reference is numpy's full GEMM ``A @ B.T`` on a copy of ``A`` (no symmetry used), and for the
kernels the explicit Jacobian ``J J^T``; the block size is shrunk so that small arrays cross many
block boundaries, at sizes below, at, and above it, odd included.
"""

import numpy as np
import pytest

from ntksolve import MLP, _config, empirical_nngp, empirical_ntk, jacobian
from ntksolve.kernels.empirical import _gram

# relative rounding bound of a length-m dot product: float64 1e-13 (the brief's bound); float32 a
# few hundred of its eps for the lengths used here
RTOL = {np.float64: 1e-13, np.float32: 2e-5}


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(_config, "GRAM_BLOCK_ROWS", 8)


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N", [1, 7, 8, 9, 16, 37, 64])
def test_symmetric_gram_equals_plain(small_blocks, dtype, N):
    A = np.random.default_rng(N).standard_normal((N, 13)).astype(dtype)
    ref = A.astype(np.float64) @ A.astype(np.float64).T
    G = _gram(A)
    assert G.dtype == dtype and G.shape == (N, N)
    assert _rel(G, ref) <= RTOL[dtype]
    np.testing.assert_array_equal(G, G.T)  # the mirrored result is exactly symmetric
    # lower=True: the lower triangle (with the diagonal) is the same, written into the buffer given
    out = np.full((N, N), np.nan, dtype=dtype)
    L = _gram(A, out=out, lower=True)
    assert L is out
    rows, cols = np.tril_indices(N)
    np.testing.assert_array_equal(L[rows, cols], G[rows, cols])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_gram_equals_plain(dtype):
    rng = np.random.default_rng(1)
    A, B = (rng.standard_normal((n, 11)).astype(dtype) for n in (19, 5))
    ref = A.astype(np.float64) @ B.astype(np.float64).T
    assert _rel(_gram(A, B), ref) <= RTOL[dtype]


def test_blocked_and_unblocked_agree(monkeypatch):
    """Block sizes from 1 to above N give the same Gram to rounding (None: the plain SYRK path)."""
    A = np.random.default_rng(2).standard_normal((45, 30))
    ref = A @ A.copy().T
    for nb in (1, 2, 5, 16, 44, 45, 1000, None):
        monkeypatch.setattr(_config, "GRAM_BLOCK_ROWS", nb)
        assert _rel(_gram(A), ref) <= 1e-13, nb


def _jjt(net, p, X1, X2=None):
    J1 = jacobian(net, p, X1).astype(np.float64)
    J2 = J1 if X2 is None else jacobian(net, p, X2).astype(np.float64)
    return np.einsum("iap,jbp->ijab", J1, J2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ntk_through_blocks_matches_jacobian(small_blocks, dtype):
    """Traced and full NTK, symmetric (blocked Grams), cross (X1 != X2) and tiled, against J J^T."""
    rng = np.random.default_rng(3)
    net = MLP((24, 17), n_outputs=3, bias_std=0.3)
    p = net.init(4, random_state=0, dtype=dtype)
    X, X2 = rng.standard_normal((29, 4)).astype(dtype), rng.standard_normal((11, 4)).astype(dtype)
    full = _jjt(net, p, X)
    cross = _jjt(net, p, X, X2)
    tol = 1e-12 if dtype == np.float64 else 3e-5
    for bs in (None, 10):  # untiled; tiles of 10 rows (odd last tile, off-diagonal tiles)
        th = empirical_ntk(net, p, X, block_size=bs)
        assert th.dtype == dtype
        assert _rel(th, np.einsum("ijaa->ij", full) / 3) <= tol
        thf = empirical_ntk(net, p, X, trace=False, block_size=bs)
        assert _rel(thf, full) <= tol
        assert _rel(empirical_ntk(net, p, X, X2, trace=False, block_size=bs), cross) <= tol
        assert _rel(empirical_ntk(net, p, X, X2, block_size=bs), np.einsum("ijaa->ij", cross) / 3) <= tol


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nngp_through_blocks(small_blocks, dtype):
    """The NNGP's blocked Gram against the readout's input features multiplied out in float64."""
    rng = np.random.default_rng(4)
    net = MLP((33,), bias_std=0.5)
    p = net.init(3, random_state=1, dtype=dtype)
    X = rng.standard_normal((21, 3)).astype(dtype)
    W, b = (np.asarray(a, np.float64) for a in p[0])
    h = np.maximum(X.astype(np.float64) @ W.T / np.sqrt(3) + 0.5 * b, 0.0)  # NTK parameterisation, relu
    ref = h @ h.T / 33 + 0.25
    K = empirical_nngp(net, p, X)
    assert K.dtype == dtype
    assert _rel(K, ref) <= (1e-13 if dtype == np.float64 else 2e-6)
    np.testing.assert_array_equal(K, K.T)
