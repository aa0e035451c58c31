"""The searches with ``chunks=``: kernel tiles on Dask give the in-memory search's path, choice and
refitted predictions (to the Lanczos and conjugate-gradient tolerances). The synchronous scheduler
keeps them fast; the distributed schedulers run the same tiles (tests/test_dask_tiles.py)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dask")

import ntksolve  # noqa: E402
from ntksolve import NTKClassifierCV, NTKRegressorCV  # noqa: E402

from dask_support import _data, _rel  # noqa: E402


@pytest.mark.parametrize(
    "params",
    [
        {"times": [0.5, 5.0, 50.0, np.inf], "diag_regs": (1e-3, 1e-1)},
        {"times": None, "diag_regs": (1e-2,), "kernel": "empirical", "hidden_layer_sizes": (8,), "random_state": 0},
        {"times": [2.0, 20.0], "diag_regs": (0.0, 1e-1), "dynamics": "discrete", "learning_rate": 0.5},
    ],
)
def test_tiled_regressor_search_is_the_in_memory_search(params):
    X, Y = _data(40)
    memory = NTKRegressorCV(cv=3, **params).fit(X[:32], Y[:32])
    tiled = NTKRegressorCV(cv=3, chunks=12, scheduler="sync", **params).fit(X[:32], Y[:32])
    assert tiled.tiled_ is not None and tiled.predictor_ is None  # the kernel was never formed
    np.testing.assert_allclose(tiled.times_, memory.times_, rtol=1e-12)
    assert _rel(tiled.mse_path_, memory.mse_path_) < 1e-8
    assert (tiled.time_, tiled.diag_reg_) == (memory.time_, memory.diag_reg_)
    assert _rel(tiled.predict(X[32:]), memory.predict(X[32:])) < 1e-8


def test_tiled_classifier_search_is_the_in_memory_search():
    X, Y = _data(45)
    y = np.digitize(Y[:, 0], np.quantile(Y[:, 0], [1 / 3, 2 / 3]))
    params = {"times": [1.0, 10.0, np.inf], "diag_regs": (1e-2, 1.0), "cv": 3}
    memory = NTKClassifierCV(**params).fit(X, y)
    tiled = NTKClassifierCV(chunks=16, scheduler="sync", **params).fit(X, y)
    np.testing.assert_array_equal(tiled.scores_path_, memory.scores_path_)
    assert (tiled.time_, tiled.diag_reg_) == (memory.time_, memory.diag_reg_)
    assert _rel(tiled.decision_function(X[:10]), memory.decision_function(X[:10])) < 1e-8


def test_tiled_search_round_trips(tmp_path):
    X, Y = _data(36)
    params = {"times": [1.0, np.inf], "diag_regs": (1e-2, 1e-1), "cv": 3}
    tiled = NTKRegressorCV(chunks=10, scheduler="sync", **params).fit(X[:30], Y[:30, 0])
    tiled.save(tmp_path / "cv.npz")
    loaded = ntksolve.load(tmp_path / "cv.npz", scheduler="sync")
    np.testing.assert_array_equal(loaded.mse_path_, tiled.mse_path_)
    np.testing.assert_allclose(loaded.predict(X[30:]), tiled.predict(X[30:]), rtol=1e-12)
    with pytest.raises(ValueError, match="needs the in-memory solver"):
        tiled.predict_trajectory(X[30:], [1.0])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"cv": "loo"}, "cv='loo' reads every leave-one-out"),
        ({"uncertainty": "predictive"}, "uncertainty='predictive'"),
        ({"method": "expm"}, "method='expm' cannot"),
        ({"dynamics": ntksolve.GradientDescent(0.5, weight_decay=0.1), "kernel": "empirical"}, "use chunks=None"),
    ],
)
def test_tiled_search_refuses_up_front(params, match, monkeypatch):
    from ntksolve.sklearn import _solve

    monkeypatch.setattr(_solve, "validation_path_tiled", lambda *a, **k: pytest.fail("a tile was computed"))
    X, Y = _data(20)
    with pytest.raises(ValueError, match=match):
        NTKRegressorCV(chunks=8, scheduler="sync", **params).fit(X, Y)
