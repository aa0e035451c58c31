"""The empirical NTK split between threads (rows of the features, layers of the Gram products)
against the explicit Jacobian computed on one thread, and the BLAS limits it sets and restores."""

import threading
import time

import numba
import numpy as np
import pytest

from ntksolve import MLP, _blas, _config, empirical_ntk, jacobian
from ntksolve.kernels import empirical, empirical_terms
from ntksolve.nets import gram_terms


@pytest.fixture
def threaded(monkeypatch):
    """Threads for every block (one row each at least) and three workers, on any machine."""
    monkeypatch.setattr(_config, "EMPIRICAL_THREAD_MIN_ROWS", 1)
    monkeypatch.setattr(_config, "EMPIRICAL_THREAD_MIN_FLOPS", 0)
    monkeypatch.setattr(empirical, "parallel_workers", lambda: 3)


def _jac_ntk(net, p, X, X2, trace):
    """J J^T from the explicit Jacobian, built on one thread."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        J = jacobian(net, p, X)
        J2 = J if X2 is None else jacobian(net, p, X2)
    finally:
        numba.set_num_threads(before)
    full = np.einsum("iap,jbp->ijab", J.astype(np.float64), J2.astype(np.float64))
    return np.einsum("ijaa->ij", full) / net.n_outputs if trace else full


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 1e-5)])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("trace", [True, False])
@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("block_size", [None, 4])
def test_threaded_ntk_equals_jacobian(threaded, dtype, tol, k, trace, cross, block_size):
    net = MLP((9, 7, 6), activation="tanh", weight_std=1.3, bias_std=0.2, n_outputs=k)
    p = net.init(5, random_state=3, dtype=dtype)
    rng = np.random.default_rng(k)
    X, X2 = rng.standard_normal((11, 5)), (rng.standard_normal((7, 5)) if cross else None)
    theta = empirical_ntk(net, p, X, X2, trace=trace, block_size=block_size)
    assert theta.dtype == dtype
    assert _rel(theta, _jac_ntk(net, p, X, X2, trace)) <= tol


@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_threaded_ntk_shallow_and_bias_free(threaded, depth, bias, parameterization):
    net = MLP((6,) * depth, activation="relu", bias=bias, parameterization=parameterization, n_outputs=2)
    p = net.init(4, random_state=depth)
    X = np.random.default_rng(7).standard_normal((10, 4))
    for trace in (True, False):
        assert _rel(empirical_ntk(net, p, X, trace=trace), _jac_ntk(net, p, X, None, trace)) <= 1e-13


def test_threaded_and_single_thread_agree(threaded, monkeypatch):
    net = MLP((16, 16), activation="erf", bias_std=0.1, n_outputs=2)
    p = net.init(3, random_state=0)
    X = np.random.default_rng(0).standard_normal((40, 3))
    many = empirical_ntk(net, p, X, trace=False)
    monkeypatch.setattr(empirical, "parallel_workers", lambda: 1)
    one = empirical_ntk(net, p, X, trace=False)
    assert _rel(many, one) <= 1e-14
    # the rows of the features are split: equal to one thread's features
    monkeypatch.setattr(_config, "EMPIRICAL_THREAD_MIN_ROWS", 1)
    monkeypatch.setattr(_config, "EMPIRICAL_THREAD_MIN_FLOPS", 0)
    f1, hs1, ds1 = empirical_terms.features(net, p, X, 1)
    f3, hs3, ds3 = empirical_terms.features(net, p, X, 3)
    for a, b in zip([f1] + hs1 + ds1, [f3] + hs3 + ds3):
        assert _rel(a, b) <= 1e-14


def test_small_phases_stay_on_blas_threads(monkeypatch):
    """Below EMPIRICAL_THREAD_MIN_FLOPS neither phase asks for threads (workers offered: 3)."""
    monkeypatch.setattr(_config, "EMPIRICAL_THREAD_MIN_ROWS", 1)
    asked = []
    row_parts, pieces = gram_terms.row_parts, gram_terms.pieces
    monkeypatch.setattr(empirical_terms, "row_parts", lambda n, w: asked.append(("rows", w)) or row_parts(n, w))
    monkeypatch.setattr(gram_terms, "pieces", lambda *a: asked.append(("pieces", a[2])) or pieces(*a))
    net = MLP((8, 8), n_outputs=1)
    p = net.init(3, random_state=0)
    X = np.random.default_rng(0).standard_normal((12, 3))
    monkeypatch.setattr(empirical, "parallel_workers", lambda: 3)
    empirical_ntk(net, p, X)
    assert asked == [("rows", 1), ("pieces", 1)]
    monkeypatch.setattr(_config, "EMPIRICAL_THREAD_MIN_FLOPS", 0)
    empirical_ntk(net, p, X)
    assert asked[2:] == [("rows", 3), ("pieces", 3)]


@pytest.mark.parametrize("blocks", [1, 3])
def test_pieces_cover_the_tile_once_with_equal_work(monkeypatch, blocks):
    monkeypatch.setattr(_config, "GRAM_DIAGONAL_BLOCKS", blocks)
    assert len(gram_terms.row_parts(_config.EMPIRICAL_THREAD_MIN_ROWS * 2 - 1, 8)) == 1
    assert gram_terms.row_parts(1000, 3) == [(0, 333), (333, 667), (667, 1000)]
    for N, T in [(1000, 2), (1000, 3), (777, 4), (1300, 2), (64, 1)]:
        shares = gram_terms.pieces(N, N, T, lower=True)
        cover = np.zeros((N, N), int)
        work = []
        for pieces in shares:
            w = 0
            for r0, r1, c0, c1, diagonal in pieces:
                block = cover[r0:r1, c0:c1]
                block += np.tril(np.ones_like(block)) if diagonal else 1
                w += (r1 - r0) * ((r1 - r0 + 1) / 2 if diagonal else (c1 - c0))
            work.append(w)
        np.testing.assert_array_equal(cover, np.tril(np.ones((N, N), int)))  # every entry once
        assert max(work) / min(work) < 1.02, (N, T, work)
    for pieces in gram_terms.pieces(100, 37, 2, lower=False):
        assert [p[2:] for p in pieces] == [(0, 37, False)]


def test_blas_limit_restored_after_a_failing_worker(threaded, monkeypatch):
    before = _blas.blas_threads()
    net = MLP((8,), n_outputs=1)
    p = net.init(3, random_state=0)

    def broken(*args, **kwargs):
        raise FloatingPointError("from a worker")

    monkeypatch.setattr(gram_terms, "gram", broken)
    with pytest.raises(FloatingPointError, match="from a worker"):
        empirical_ntk(net, p, np.ones((12, 3)))
    assert _blas.blas_threads() == before


def test_concurrent_single_threaded_blocks_restore_the_limit():
    before = _blas.blas_threads()
    inside = []
    barrier = threading.Barrier(2)

    def hold():
        with _blas.single_threaded() as limited:
            barrier.wait()
            inside.append(limited == (_blas.blas_threads() == 1))
            barrier.wait()

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside == [True, True]  # each thread is told whether the limit holds
    assert _blas.blas_threads() == before


def test_main_thread_limit_holds():
    with _blas.single_threaded() as limited:
        assert limited and _blas.blas_threads() == 1
        seen = []
        _blas.side_by_side(lambda i: seen.append((i, _blas.blas_threads())), range(3))
        assert sorted(seen) == [(0, 1), (1, 1), (2, 1)]
        assert _blas.blas_threads() == 1  # nested: the limit stays until the outer block ends


def test_side_by_side_waits_for_every_call_and_reraises():
    done = []

    def work(i):
        if i == 0:
            raise KeyError("first")
        time.sleep(0.05)
        done.append(i)

    with pytest.raises(KeyError, match="first"):
        _blas.side_by_side(work, range(3))
    assert sorted(done) == [1, 2]  # the others had finished before the error came back


def test_nested_side_by_side_runs_inline():
    names = []

    def outer(i):
        _blas.side_by_side(lambda j: names.append(threading.current_thread().name), range(2))

    _blas.side_by_side(outer, range(2))
    assert len(names) == 4 and all(n.startswith("ntksolve-blas") for n in names)


def test_workers_respect_numba_threads():
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        assert _blas.parallel_workers() == 1
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("kk", [1, 3])
def test_gram_pieces_equal_the_plain_product(dtype, tol, kk):
    """Every worker's pieces of a symmetric Gram (SYRK diagonal blocks, GEMM rectangles) and of a
    cross Gram, with ``kk`` rows per input, against numpy's full product on a float64 copy."""
    rng = np.random.default_rng(kk)
    N, M, m = 150, 41, 29
    A, B = (rng.standard_normal((n * kk, m)).astype(dtype) for n in (N, M))
    ref_sym = A.astype(np.float64) @ A.astype(np.float64).T
    ref_cross = A.astype(np.float64) @ B.astype(np.float64).T
    for T in (1, 2, 3):
        G = np.full((N * kk, N * kk), np.nan, dtype=dtype)
        for pieces in gram_terms.pieces(N, N, T, lower=True):
            for piece in pieces:
                gram_terms._gram_piece(A, None, G, piece, kk)
        rows, cols = np.tril_indices(N * kk, -kk)  # below the diagonal blocks of kk x kk
        assert _rel(G[rows, cols], ref_sym[rows, cols]) <= tol
        assert _rel(np.diagonal(G), np.diagonal(ref_sym)) <= tol
        C = np.full((N * kk, M * kk), np.nan, dtype=dtype)
        for pieces in gram_terms.pieces(N, M, T, lower=False):
            for piece in pieces:
                gram_terms._gram_piece(A, B, C, piece, kk)
        assert _rel(C, ref_cross) <= tol


@pytest.mark.parametrize("trace", [True, False])
@pytest.mark.parametrize("cross", [False, True])
def test_threaded_network_dense_terms_equal_the_jacobian(monkeypatch, trace, cross):
    """A network's dense layers (here around a residual block, so not an MLP) on three threads."""
    from ntksolve import Network, Residual
    from ntksolve.kernels.network_empirical import network_empirical_ntk, network_jacobian
    from ntksolve.nets import dense_layers
    from ntksolve.nets.layers import Activation, Dense

    monkeypatch.setattr(_config, "EMPIRICAL_THREAD_MIN_ROWS", 1)
    monkeypatch.setattr(_config, "EMPIRICAL_THREAD_MIN_FLOPS", 0)
    monkeypatch.setattr(dense_layers, "parallel_workers", lambda: 3)
    net = Network(
        [Dense(6, bias_std=0.3), Activation("tanh"), Residual([Dense(6), Activation("relu")]), Dense(2, bias_std=0.3)]
    )
    p = net.init(4, random_state=1)
    rng = np.random.default_rng(5)
    X, Z = rng.standard_normal((9, 4)), rng.standard_normal((5, 4))
    JX = network_jacobian(net, p, X)
    JZ = JX if not cross else network_jacobian(net, p, Z)
    full = np.einsum("iap,jbp->ijab", JX, JZ)
    ref = np.einsum("ijaa->ij", full) / 2 if trace else full
    theta = network_empirical_ntk(net, p, X, Z if cross else None, trace=trace)
    assert _rel(theta, ref) <= 1e-13


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_threads_start_anew_in_a_forked_child(threaded):
    """The pool's threads are not inherited by a child process: it starts its own."""
    import os

    net = MLP((16, 16), n_outputs=1)
    p = net.init(4, random_state=0)
    X = np.random.default_rng(0).standard_normal((20, 4))
    ref = empirical_ntk(net, p, X)  # the parent's pool is started
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's exit code carries the result
        ok = np.array_equal(empirical_ntk(net, p, X), ref)
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
