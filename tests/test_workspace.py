"""The scratch buffers kept between calls: never handed out twice while in use, bounded, and
invisible in what the kernels return."""

import threading

import numpy as np
import pytest

from ntksolve import MLP, _config, _workspace, empirical_ntk, jacobian


@pytest.fixture(autouse=True)
def fresh_workspace():
    _workspace.clear()
    yield
    _workspace.clear()


def test_a_buffer_is_reused_only_when_no_view_of_it_is_alive():
    a = _workspace.empty((100, 10), np.float64)
    b = _workspace.empty((100, 10), np.float64)
    assert not np.shares_memory(a, b)
    part = a[3:5].reshape(-1)  # a view of a view keeps the buffer in use
    del a
    c = _workspace.empty((100, 10), np.float64)
    assert not np.shares_memory(c, part) and not np.shares_memory(c, b)
    kept = _workspace.kept_bytes()
    del part
    d = _workspace.empty((10, 100), np.float64)  # same bytes, another shape: the freed buffer
    assert _workspace.kept_bytes() == kept
    assert d.shape == (10, 100) and d.flags.c_contiguous and d.dtype == np.float64


def test_the_bound_is_kept(monkeypatch):
    monkeypatch.setattr(_config, "WORKSPACE_BYTES", 10_000)
    arrays = [_workspace.empty((500,), np.float64) for _ in range(3)]  # 4000 bytes each
    assert _workspace.kept_bytes() == 8000  # the third is a plain array
    assert all(a.shape == (500,) for a in arrays)
    monkeypatch.setattr(_config, "WORKSPACE_BYTES", 0)
    del arrays
    _workspace.clear()
    _workspace.empty((5,), np.float32)
    assert _workspace.kept_bytes() == 0


def test_threads_never_share_a_buffer():
    live, errors = [], []
    lock = threading.Lock()

    def grab():
        for _ in range(200):
            a = _workspace.empty((64,), np.float64)
            a[:] = threading.get_ident()
            with lock:
                if any(np.shares_memory(a, b) for b in live):
                    errors.append("shared")
                live.append(a)
            with lock:
                live.remove(a)
            if not np.all(a == threading.get_ident()):
                errors.append("overwritten")

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_kernels_return_their_own_arrays():
    net = MLP((16, 16), activation="tanh", n_outputs=2)
    p = net.init(3, random_state=0)
    X, Z = np.random.default_rng(0).standard_normal((2, 12, 3))
    first, J = empirical_ntk(net, p, X), jacobian(net, p, X)
    kept = (first.copy(), J.copy())
    assert _workspace.kept_bytes() > 0  # the calls left buffers to reuse
    empirical_ntk(net, p, Z, trace=False)
    jacobian(net, p, Z)
    np.testing.assert_array_equal(first, kept[0])
    np.testing.assert_array_equal(J, kept[1])
    np.testing.assert_array_equal(empirical_ntk(net, p, X), first)  # reused buffers, same numbers
