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


# -- tiled fits, the scheduler ---------------------------------------------------------------------
def test_tiled_model_reloads_tiled_without_its_kernel(data, tmp_path, monkeypatch):
    pytest.importorskip("dask")
    from ntksolve.sklearn.base import _NTKBase

    X, y, labels, Xt = data
    models = [
        NTKRegressor(time=40.0, chunks=8, scheduler="sync").fit(X, y),
        NTKRegressor(
            kernel="empirical",
            hidden_layer_sizes=(8,),
            random_state=2,
            dtype="float32",
            chunks=[10, 10, 10],
            scheduler="sync",
        ).fit(X, np.stack([y, -y], axis=1)),
        NTKClassifier(chunks=16, scheduler="sync").fit(X, labels),
    ]
    for i, est in enumerate(models):
        path = tmp_path / f"tiled{i}.npz"
        est.save(path)
        with np.load(path, allow_pickle=False) as npz:
            assert "scheduler" not in json.loads(str(npz["__ntksolve__"][()]))["params"]
        with monkeypatch.context() as m:
            m.setattr(_NTKBase, "_kernel", lambda *a: pytest.fail("a tiled model's kernel was recomputed"))
            loaded = ntksolve.load(path, scheduler="sync")
        assert loaded.tiled_ is not None and loaded.predictor_ is None
        assert loaded.get_params() == est.get_params()  # chunks round-trips; the scheduler is the caller's
        np.testing.assert_array_equal(loaded.tiled_.coef, est.tiled_.coef)
        for a, b in zip(_outputs_at_time(est, Xt), _outputs_at_time(loaded, Xt)):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(ValueError, match="needs the in-memory solver"):
            loaded.loss_curve([1.0])
    assert ntksolve.load(tmp_path / "tiled0.npz").scheduler is None


def _outputs_at_time(est, X):
    out = [est.predict(X)]
    if hasattr(est, "decision_function"):
        out.append(est.decision_function(X))
    return out


def _members(path):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(str(arrays.pop("__ntksolve__")[()]))
    return meta, arrays


def _write(path, meta, arrays, compress=False):
    members = {"__ntksolve__": np.array(json.dumps(meta)), **arrays}
    (np.savez_compressed if compress else np.savez)(path, **members)


def test_file_scheduler_is_never_obeyed(data, tmp_path):
    """A file of the first writer stored the scheduler (and y_ndim for a classifier): it loads,
    and the scheduler is the caller's, never an address the file names."""
    X, y, labels, Xt = data
    for i, est in enumerate([NTKRegressor(time=5.0).fit(X, y), NTKClassifier().fit(X, labels)]):
        path = tmp_path / f"m{i}.npz"
        est.save(path)
        meta, arrays = _members(path)
        meta["params"]["scheduler"] = "tcp://203.0.113.9:8786"
        meta["attrs"].setdefault("y_ndim", 1)
        _write(path, meta, arrays)
        loaded = ntksolve.load(path)
        assert loaded.scheduler is None
        assert ntksolve.load(path, scheduler="threads").scheduler == "threads"
        np.testing.assert_array_equal(loaded.predict(Xt), est.predict(Xt))


# -- files are never trusted ---------------------------------------------------------------------
@pytest.fixture
def saved(data, tmp_path):
    X, y, labels, _ = data
    path = tmp_path / "m.npz"
    NTKRegressor(time=50.0).fit(X, y).save(path)
    return path


def test_only_known_members_are_read(saved, monkeypatch, data):
    import zipfile

    meta, arrays = _members(saved)
    # 16 MiB of zeros compress to ~16 KiB: a member that must never be decompressed
    with zipfile.ZipFile(saved, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.npy", b"\0" * (16 << 20))
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(
        zipfile.ZipFile,
        "open",
        lambda self, name, *a, **k: opened.append(getattr(name, "filename", name)) or real_open(self, name, *a, **k),
    )
    loaded = ntksolve.load(saved)
    assert "bomb.npy" not in opened and "X_train.npy" in opened
    np.testing.assert_array_equal(
        loaded.predict(data[3]), NTKRegressor(time=50.0).fit(data[0], data[1]).predict(data[3])
    )


def test_sizes_are_checked_before_reading(saved, tmp_path):
    import zipfile

    meta, arrays = _members(saved)
    compressed = tmp_path / "compressed.npz"
    _write(compressed, meta, arrays, compress=True)
    with pytest.raises(ValueError, match="compressed"):
        ntksolve.load(compressed)
    # an .npy header declaring 10^7 rows over 30 rows of data
    raw = io.BytesIO()
    np.lib.format.write_array_header_1_0(raw, {"descr": "<f8", "fortran_order": False, "shape": (10**7, 3)})
    header = raw.getvalue()
    lying = tmp_path / "lying.npz"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(lying, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "X_train.npy":
                body = header + body[len(header) :]
            dst.writestr(info.filename, body)
    with pytest.raises(ValueError, match="X_train.*size does not match"):
        ntksolve.load(lying)
    # the kernel an in-memory model recomputes counts against max_bytes (30 x 30 float64: 7200 bytes)
    with pytest.raises(ValueError, match=r"\(30, 30\) train kernel.*max_bytes=8000"):
        ntksolve.load(saved, max_bytes=8000)
    assert ntksolve.load(saved, max_bytes=None).n_features_in_ == 3
    with pytest.raises(ValueError, match="max_bytes must be"):
        ntksolve.load(saved, max_bytes=0)


@pytest.mark.parametrize("version", [0, -1, True, 1.0, "1", None])
def test_versions_other_than_1_are_refused(saved, version):
    meta, arrays = _members(saved)
    meta["version"] = version
    _write(saved, meta, arrays)
    with pytest.raises(ValueError, match="unsupported format version"):
        ntksolve.load(saved)


def test_inconsistent_state_is_refused(data, tmp_path):
    X, y, labels, _ = data
    reg, clf, cv = (
        NTKRegressor().fit(X, y),
        NTKClassifier().fit(X, labels),
        NTKRegressorCV(times=[1.0, np.inf], diag_regs=(0.1,), cv=3).fit(X, y),
    )

    def refused(est, edit, match):
        path = tmp_path / "m.npz"
        est.save(path)
        meta, arrays = _members(path)
        edit(meta, arrays)
        _write(path, meta, arrays)
        with pytest.raises(ValueError, match=match):
            ntksolve.load(path)

    refused(reg, lambda m, a: a.update(y_train_std=np.array([np.nan])), "y_train_std.*NaN")
    refused(reg, lambda m, a: a.update(y_train_std=np.array([-1.0])), "y_train_std must be positive")
    refused(reg, lambda m, a: a.update(y_train=a["y_train"].astype(np.float32)), "y_train.*dtype float32")
    refused(reg, lambda m, a: a.update(X_train=a["X_train"][:-1]), "y_train.*shape")
    refused(reg, lambda m, a: a.pop("fx_train_0"), "no 'fx_train_0' array")
    refused(reg, lambda m, a: m.update({"class": "NTKClassifier"}), "no 'classes")  # a regressor is no classifier
    refused(clf, lambda m, a: m.update({"class": "NTKRegressor"}), "attrs .* y_ndim|no 'y_ndim'")
    refused(reg, lambda m, a: m.update({"class": "NTKRegressorCV"}), "does not take")
    refused(reg, lambda m, a: m.update({"class": "Pipeline"}), "unknown estimator class")
    refused(reg, lambda m, a: m["params"].pop("time"), "params lacks")
    refused(reg, lambda m, a: m["params"].update(time=-1.0), "time must be")
    refused(reg, lambda m, a: m["attrs"].update(extra=1), "attrs has entries")
    refused(reg, lambda m, a: m["attrs"].update(n_features_in_=True), "n_features_in_")
    refused(clf, lambda m, a: a.update(classes=a["classes"][::-1]), "sorted")
    refused(cv, lambda m, a: m["attrs"].update(time_=1.0 if cv.time_ != 1.0 else np.inf), "best entry")
    refused(cv, lambda m, a: a.update(mse_path=a["mse_path"] * np.nan), "mse_path")
    refused(reg, lambda m, a: m["params"].update(hidden_layer_sizes=[[[[[]]]]] * 2), "hidden_layer_sizes")


def test_damaged_files_give_the_documented_error(saved, tmp_path):
    blob = saved.read_bytes()
    for i, damaged in enumerate([blob[: len(blob) // 2], blob[:-30], b"PK\x03\x04" + b"\0" * 60]):
        path = tmp_path / f"d{i}.npz"
        path.write_bytes(damaged)
        with pytest.raises(ValueError):
            ntksolve.load(path)
    meta, arrays = _members(saved)
    deep = tmp_path / "deep.npz"
    np.savez(
        deep,
        __ntksolve__=np.array(
            '{"format": "ntksolve-estimator", "version": 1, "params": ' + "[" * 20000 + "]" * 20000 + "}"
        ),
        **arrays,
    )
    with pytest.raises(ValueError):
        ntksolve.load(deep)


# -- writing -----------------------------------------------------------------------------------------
def test_saved_files_respect_the_umask(saved, data, tmp_path):
    est = ntksolve.load(saved)
    for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(umask)
        try:
            est.save(tmp_path / f"u{umask}.npz")
        finally:
            os.umask(old)
        assert os.stat(tmp_path / f"u{umask}.npz").st_mode & 0o777 == mode


def test_stale_temporary_files_are_removed_on_the_next_save(saved, tmp_path):
    import subprocess
    import sys

    from ntksolve import _atomic

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = _atomic._host_tag()
    dead = tmp_path / f".m.npz.{host}-{gone.pid}.{'a' * 16}.tmp"  # a save killed mid-write
    live = tmp_path / f".m.npz.{host}-{os.getppid()}.{'b' * 16}.tmp"  # one still writing
    foreign = tmp_path / f".m.npz.{'0' * 8}-1.{'c' * 16}.tmp"  # another machine's, recent
    old_style = tmp_path / ".m.npz.k2j4h5g6.tmp"  # the first writer's, a week old
    other = tmp_path / f".n.npz.{host}-{gone.pid}.{'d' * 16}.tmp"  # another path's
    for p in (dead, live, foreign, old_style, other):
        p.write_bytes(b"half a model")
    week_ago = os.stat(old_style).st_mtime - 7 * 24 * 3600
    os.utime(old_style, (week_ago, week_ago))
    ntksolve.load(saved).save(saved)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in (saved, live, foreign, other))


# -- fuzz: every crafted file is refused with ValueError, or is the model that was saved ----------
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@pytest.fixture(scope="module")
def fuzz_models(tmp_path_factory):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((12, 2))
    y = X[:, 0] - X[:, 1] ** 2
    labels = np.array(["a", "b", "c"])[np.argmax(np.c_[X, -X[:, :1]], axis=1)]
    Xt = rng.standard_normal((4, 2))
    folder = tmp_path_factory.mktemp("fuzz")
    out = []
    for i, est in enumerate(
        [
            NTKRegressor(hidden_layer_sizes=(4,), time=7.0).fit(X, y),
            NTKClassifier(kernel="empirical", hidden_layer_sizes=(3,), random_state=0, dtype="float32").fit(X, labels),
            NTKRegressorCV(hidden_layer_sizes=(2,), times=[1.0, np.inf], diag_regs=(0.0, 0.1), cv=3).fit(X, y > 0),
        ]
    ):
        path = folder / f"m{i}.npz"
        est.save(path)
        out.append((est, path.read_bytes(), _outputs(est, Xt)))
    return _Saved((folder, Xt, out))


class _Saved(tuple):
    def __repr__(self):  # hypothesis prints the arguments of a failing example
        return "<saved fuzz models>"


def _loads_as_saved_or_refused(folder, blob, est, expected, Xt):
    path = folder / "crafted.npz"
    path.write_bytes(blob)
    try:
        loaded = ntksolve.load(path)
    except ValueError:
        return
    assert type(loaded) is type(est) and loaded.get_params() == est.get_params()
    for a, b in zip(expected, _outputs(loaded, Xt)):
        np.testing.assert_array_equal(a, b)


_FUZZ = hypothesis.settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(hypothesis.HealthCheck)
)


@_FUZZ
@hypothesis.given(
    which=st.integers(0, 2),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete", "truncate"]),
            st.floats(0, 1, exclude_max=True),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_fuzz_bytes(fuzz_models, which, edits):
    folder, Xt, models = fuzz_models
    est, blob, expected = models[which]
    data = bytearray(blob)
    for op, where, value in edits:
        if len(data) < 2:
            break
        i = int(where * len(data))
        if op == "set":
            data[i] = value if data[i] != value else (value + 1) % 256
        elif op == "insert":
            data[i:i] = bytes([value])
        elif op == "delete":
            del data[i]
        else:
            del data[max(i, 1) :]
    _loads_as_saved_or_refused(folder, bytes(data), est, expected, Xt)


_BAD_VALUES = [float("nan"), -1, -1.5, "bogus", None, True, [], [[1]], {"a": 1}]


@_FUZZ
@hypothesis.given(
    which=st.integers(0, 2),
    part=st.sampled_from(["meta", "params", "attrs", "array", "member"]),
    pick=st.integers(0, 10**6),
    value=st.sampled_from(_BAD_VALUES),
    op=st.integers(0, 5),
)
def test_fuzz_structure(fuzz_models, which, part, pick, value, op):
    folder, Xt, models = fuzz_models
    est, blob, expected = models[which]
    source = folder / "source.npz"
    source.write_bytes(blob)
    meta, arrays = _members(source)
    compress = False
    if part in ("meta", "params", "attrs"):
        table = meta if part == "meta" else meta[part]
        keys = sorted(table)
        key = keys[pick % len(keys)]
        if part == "meta" and key == "ntksolve_version":
            key = "version"
        if op == 0:
            del table[key]
        elif op == 1:
            table[f"unknown_{pick}"] = value
        else:
            # every bad value is impossible for every entry (where it could be right, use another)
            fine = {
                "random_state": (None, -1),
                "block_size": (None,),
                "times": (None,),
                "dtype": (None,),
                "hidden_layer_sizes": ([],),
                "cv": (None,),
                "unsaved_params": ([],),
                "sequence_params": ({"a": 1},),
            }
            hypothesis.assume(value not in fine.get(key, ()))
            hypothesis.assume(
                part != "params"
                or key
                in (
                    "time",
                    "diag_reg",
                    "learning_rate",
                    "activation",
                    "weight_std",
                    "bias_std",
                    "kernel",
                    "dynamics",
                    "method",
                    "dtype",
                    "normalize_y",
                    "hidden_layer_sizes",
                    "diag_regs",
                    "parameterization",
                )
            )
            table[key] = value
    elif part == "array":  # (new values of the right kind make another model: only the CRC-32 tells)
        key = sorted(arrays)[pick % len(arrays)]
        a = arrays[key]
        if op == 0:
            del arrays[key]
        elif op == 1 and a.ndim:
            arrays[key] = a[:-1]
        elif op == 2 and a.dtype.kind == "f":
            arrays[key] = np.full_like(a, np.nan)
        elif op == 3 and a.dtype.kind == "f":
            arrays[key] = a.astype(np.float32 if a.dtype == np.float64 else np.float64)
        elif op == 4:
            arrays[key] = a[None]
        else:
            compress = True
    else:  # harmless: an unknown member, of any size
        arrays[f"extra{pick % 7}"] = np.zeros(pick % 1000)
    buf = folder / "edited.npz"
    _write(buf, meta, arrays, compress=compress)
    _loads_as_saved_or_refused(folder, buf.read_bytes(), est, expected, Xt)


def test_rule_objects_are_refused_not_silently_reset(tmp_path):
    """A rule or solver object the format cannot store would come back as the default name and
    predict something else: save refuses it, naming the alternatives; names round-trip exactly."""
    from ntksolve.dynamics import GradientDescent, Krylov

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 3)), rng.normal(size=30)
    for kw in ({"dynamics": GradientDescent(0.5, momentum=0.9)}, {"method": Krylov(tol=1e-10)}):
        model = ntksolve.NTKRegressor(hidden_layer_sizes=(1,), time=20, **kw).fit(X, y)
        with pytest.raises(ValueError, match="pickle-free format does not store"):
            model.save(tmp_path / "m.npz")
        assert not (tmp_path / "m.npz").exists()
    model = ntksolve.NTKRegressor(hidden_layer_sizes=(1,), time=20, dynamics="discrete", learning_rate=0.5).fit(X, y)
    model.save(tmp_path / "m.npz")
    np.testing.assert_allclose(ntksolve.load(tmp_path / "m.npz").predict(X), model.predict(X), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "change",
    [
        {"learning_rate": 0.3},
        {"weight_std": 2.0},
        {"dynamics": "discrete", "time": 50},
        {"hidden_layer_sizes": (512, 512)},
    ],
)
def test_save_refuses_parameters_changed_since_fit(data, tmp_path, change):
    """A saved model is rebuilt from its parameters: one changed after ``fit`` (without a refit,
    which the in-memory model honours, as scikit-learn's do) would have the loaded model predict
    otherwise (learning_rate 0.3: 0.28 apart on these points). ``time`` and ``diag_reg`` may
    change: the file reproduces this model's answers exactly (``uncertainty`` too: loading fits
    the noise model as ``fit`` would, ``tests/test_uncertainty.py``)."""
    X, y, _, Xt = data
    reg = NTKRegressor(time=50.0).fit(X, y)
    before = reg.predict(Xt)
    reg.set_params(**change)
    with pytest.raises(ValueError, match=f"{next(iter(change))} changed from .* since fit.*refit before saving"):
        reg.save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)  # nothing written
    np.testing.assert_array_equal(reg.set_params(**NTKRegressor(time=50.0).get_params()).predict(Xt), before)
    reg.set_params(time=7.0, diag_reg=0.5).save(tmp_path / "m.npz")
    again = ntksolve.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.predict(Xt), reg.predict(Xt))
    # a refit, and a model loaded, are judged against their own parameters
    reg.set_params(**change).fit(X, y).save(tmp_path / "m.npz")
    ntksolve.load(tmp_path / "m.npz").save(tmp_path / "again.npz")


def test_a_write_through_a_symbolic_link_replaces_its_target(tmp_path):
    # renaming the temporary file over the link itself turned the link into a file and left the
    # file it names as it was: a model saved to models/current -> v3 was not v3 afterwards
    from ntksolve._atomic import write_atomically

    target, link = tmp_path / "v3.bin", tmp_path / "current.bin"
    target.write_bytes(b"old")
    os.symlink(target, link)
    assert write_atomically(link, lambda fh: fh.write(b"new")) == str(link)
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.bin", "v3.bin"]  # no temporary left
    # a link to a file not yet written creates it, as open would
    fresh = tmp_path / "fresh.bin"
    os.symlink(tmp_path / "later.bin", fresh)
    write_atomically(fresh, lambda fh: fh.write(b"x"))
    assert os.path.islink(fresh) and (tmp_path / "later.bin").read_bytes() == b"x"
