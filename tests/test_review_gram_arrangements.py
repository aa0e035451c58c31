"""The empirical NTK in every arrangement of its Gram products at once: block columns
(``_config.GRAM_BLOCK_ROWS`` 8 or None) inside each thread's diagonal blocks
(``GRAM_DIAGONAL_BLOCKS`` 1, 2, 4), on 1, 2 or 3 threads, with a number of inputs no block size
divides, traced and full (``trace=False``, k = 3), symmetric and cross, float64 and float32;
against ``J J^T`` from the explicit Jacobian multiplied out in float64."""

import numpy as np
import pytest

from ntksolve import MLP, _config, empirical_ntk, jacobian
from ntksolve.kernels import empirical

# float64: the products' rounding (the brief's 1e-13); float32: a few hundred of its eps
RTOL = {np.float64: 1e-13, np.float32: 2e-5}


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def case():
    net = MLP((9, 7), activation="tanh", weight_std=1.2, bias_std=0.3, n_outputs=3)
    rng = np.random.default_rng(8)
    X, X2 = rng.standard_normal((23, 5)), rng.standard_normal((11, 5))
    out = {}
    for dtype in (np.float64, np.float32):
        p = net.init(5, random_state=2, dtype=dtype)
        J, J2 = (jacobian(net, p, Z.astype(dtype)).astype(np.float64) for Z in (X, X2))
        out[dtype] = p, np.einsum("iap,jbp->ijab", J, J), np.einsum("iap,jbp->ijab", J, J2)
    return net, X, X2, out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("block_rows", [None, 8])
@pytest.mark.parametrize("diagonal_blocks", [1, 2, 4])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_arrangement_equals_the_jacobian_product(monkeypatch, case, dtype, block_rows, diagonal_blocks, workers):
    net, X, X2, refs = case
    p, full, cross = refs[dtype]
    monkeypatch.setattr(_config, "GRAM_BLOCK_ROWS", block_rows)
    monkeypatch.setattr(_config, "GRAM_DIAGONAL_BLOCKS", diagonal_blocks)
    monkeypatch.setattr(_config, "EMPIRICAL_THREAD_MIN_ROWS", 1)
    monkeypatch.setattr(_config, "EMPIRICAL_THREAD_MIN_FLOPS", 0)
    monkeypatch.setattr(empirical, "parallel_workers", lambda: workers)
    Xd, X2d = X.astype(dtype), X2.astype(dtype)
    for bs in (None, 10):  # one tile; tiles of 10 rows (23 = 2 x 10 + 3)
        thf = empirical_ntk(net, p, Xd, trace=False, block_size=bs)
        assert thf.dtype == dtype and thf.shape == (23, 23, 3, 3)
        assert _rel(thf, full) <= RTOL[dtype]
        assert np.array_equal(thf, thf.transpose(1, 0, 3, 2))  # exactly symmetric
        th = empirical_ntk(net, p, Xd, block_size=bs)
        assert _rel(th, np.einsum("ijaa->ij", full) / 3) <= RTOL[dtype]
        assert _rel(empirical_ntk(net, p, Xd, X2d, trace=False, block_size=bs), cross) <= RTOL[dtype]
