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
