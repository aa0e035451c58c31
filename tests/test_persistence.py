"""Persistence: pickle/joblib and the pickle-free ``save``/``ntksolve.load`` give identical predictions."""
from __future__ import annotations

import io
import json
import os
import pickle

import numpy as np
import pytest

import ntksolve
from ntksolve import NTKClassifier, NTKRegressor, NTKRegressorCV


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2
    labels = np.array(["cat", "dog", "emu"])[np.argmax(X, axis=1)]
    return X[:30], y[:30], labels[:30], X[30:]


def _fitted(data):
    X, y, labels, _ = data
    Y2 = np.stack([y, -y], axis=1)
    return [
        NTKRegressor(time=50.0).fit(X, y),
        NTKRegressor(kernel="empirical", hidden_layer_sizes=(16, 16), random_state=1, dtype="float32").fit(X, Y2),
        NTKClassifier(time=1e3).fit(X, labels),
        NTKClassifier(kernel="empirical", hidden_layer_sizes=(8,), random_state=0).fit(X, labels == "dog"),
        NTKRegressorCV(times=[1.0, 100.0, np.inf], diag_regs=(0.0, 0.1), cv=3).fit(X, y),
    ]


def _outputs(est, X):
    out = [est.predict(X)]
    if hasattr(est, "decision_function"):
        out.append(est.decision_function(X))
    else:
        out.append(est.predict_trajectory(X, [0.0, 3.0, np.inf]))
    return out


def test_pickle_and_joblib_round_trips(data, tmp_path):
    joblib = pytest.importorskip("joblib")
    Xt = data[3]
    for i, est in enumerate(_fitted(data)):
        again = pickle.loads(pickle.dumps(est))
        for a, b in zip(_outputs(est, Xt), _outputs(again, Xt)):
            np.testing.assert_array_equal(a, b)
        path = tmp_path / f"m{i}.joblib"
        joblib.dump(est, path)
        for a, b in zip(_outputs(est, Xt), _outputs(joblib.load(path), Xt)):
            np.testing.assert_array_equal(a, b)


def test_save_load_identical(data, tmp_path):
    Xt = data[3]
    for i, est in enumerate(_fitted(data)):
        path = tmp_path / f"model{i}.npz"
        est.save(path)
        loaded = ntksolve.load(path)
        assert type(loaded) is type(est)
        assert loaded.get_params() == est.get_params()
        for a, b in zip(_outputs(est, Xt), _outputs(loaded, Xt)):
            np.testing.assert_array_equal(a, b)
        if hasattr(est, "classes_"):
            np.testing.assert_array_equal(loaded.classes_, est.classes_)
        if hasattr(est, "time_"):
            assert (loaded.time_, loaded.diag_reg_) == (est.time_, est.diag_reg_)
            np.testing.assert_array_equal(loaded.mse_path_, est.mse_path_)
    # no temporary files are left next to the models
    assert sorted(os.listdir(tmp_path)) == [f"model{i}.npz" for i in range(5)]


def test_file_is_plain_npz_with_marker(data, tmp_path):
    est = _fitted(data)[0]
    path = tmp_path / "m.npz"
    est.save(str(path))
    with np.load(path, allow_pickle=False) as npz:  # never needs pickle
        meta = json.loads(str(npz["__ntksolve__"][()]))
        assert npz["X_train"].shape == (30, 3)
    assert meta["format"] == "ntksolve-estimator" and meta["version"] == 1
    assert meta["class"] == "NTKRegressor" and meta["params"]["time"] == 50.0


def test_pandas_feature_names_survive(data, tmp_path):
    pd = pytest.importorskip("pandas")
    X, y, _, Xt = data
    est = NTKRegressor().fit(pd.DataFrame(X, columns=["a", "b", "c"]), y)
    est.save(tmp_path / "m.npz")
    loaded = ntksolve.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.feature_names_in_, ["a", "b", "c"])
    df = pd.DataFrame(Xt, columns=["a", "b", "c"])
    np.testing.assert_array_equal(loaded.predict(df), est.predict(df))


def test_refuses_foreign_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not an ntksolve model file"):
        ntksolve.load(text)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.arange(3))
    with pytest.raises(ValueError, match="no '__ntksolve__' entry"):
        ntksolve.load(plain)
    other = tmp_path / "other.npz"
    np.savez(other, __ntksolve__=np.array(json.dumps({"format": "something-else", "version": 1})))
    with pytest.raises(ValueError, match="not an ntksolve model file"):
        ntksolve.load(other)
    newer = tmp_path / "newer.npz"
    np.savez(newer, __ntksolve__=np.array(json.dumps({"format": "ntksolve-estimator", "version": 99})))
    with pytest.raises(ValueError, match="version 99"):
        ntksolve.load(newer)
    single = tmp_path / "single.npy"
    np.save(single, np.arange(3))
    with pytest.raises(ValueError, match="single array"):
        ntksolve.load(single)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not an ntksolve model file"):
        ntksolve.load(pickled)
    with pytest.raises(FileNotFoundError):
        ntksolve.load(tmp_path / "missing.npz")


def test_save_is_atomic(data, tmp_path, monkeypatch):
    est = _fitted(data)[0]
    path = tmp_path / "m.npz"
    est.save(path)
    before = path.read_bytes()

    def broken_savez(fh, **arrays):
        fh.write(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        NTKRegressor(time=1.0).fit(data[0], data[1]).save(path)
    assert path.read_bytes() == before  # the old model is intact
    assert os.listdir(tmp_path) == ["m.npz"]  # and the temporary file is gone


def test_unsaveable_labels_are_refused(data, tmp_path):
    X = data[0]
    y = np.array([1, "a"] * 15, dtype=object)
    est = NTKClassifier().fit(X, y.astype(str))  # fine as strings
    est.classes_ = np.array([1, "a"], dtype=object)  # mixed objects cannot be stored without pickle
    with pytest.raises(ValueError, match="without pickle"):
        est.save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


def test_in_memory_pickle_size_is_arrays_only(data):
    """The fitted estimator holds arrays and plain objects only (no compiled numba functions)."""
    buf = io.BytesIO()
    pickle.dump(_fitted(data)[1], buf)
    assert b"numba" not in buf.getvalue()
