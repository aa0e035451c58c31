"""Fixtures that several test modules share (helpers they import are in ``compare_support``,
``dask_support`` and the ``reference`` modules)."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """A small regression set saved for ``--data``: ``X`` (30, 3) standard normal, ``y = sin x0 + x1 x2``."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3))
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, X=X, y=np.sin(X[:, 0]) + X[:, 1] * X[:, 2])
    return str(path)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, restored afterwards: the tests' networks are tiny, one thread
    is fastest, and a pool of spinning threads is slowest on a shared machine."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
