"""Pickle-free save and load of the fitted estimators.

Format (version 1): one ``.npz`` archive (``numpy.savez``), read with ``allow_pickle=False``, so
loading a file never executes code. Entries:

``__ntksolve__``
    A 0-d unicode array holding JSON::

        {"format": "ntksolve-estimator", "version": 1, "ntksolve_version": "...",
         "class": "NTKRegressor" | "NTKClassifier" | "NTKRegressorCV",
         "params": {...constructor parameters...},
         "attrs": {...scalar fitted attributes: n_features_in_, diag_reg_, time_, ...},
         "unsaved_params": [...names of parameters that were not plain values and were reset...],
         "sequence_params": {name: "tuple" | "list" | "ndarray"}}  (JSON has lists only)

``X_train``, ``y_train``, ``y_train_mean``, ``y_train_std``, ``fx_train_0``
    Training inputs ``(N, d)``, standardised targets ``(N, k)``, their scaling ``(k,)`` and the
    outputs at initialisation ``(N, k)``.
``W0``, ``b0``, ``W1``, ... (empirical kernel only)
    The network's parameters, layer by layer.
``classes`` (classifier), ``feature_names_in`` (when fitted on named columns),
``times``, ``diag_regs``, ``mse_path`` (:class:`~ntksolve.NTKRegressorCV`)

Loading recomputes the train kernel from ``X_train`` (and the parameters) and decomposes it again,
which is deterministic, so predictions are identical; the decomposition itself is not stored
(it is as large as the kernel and as quick to recompute as ``fit``'s linear algebra).
A file without the ``__ntksolve__`` entry, of another format or of a newer version is refused
with a ``ValueError``.
"""
from __future__ import annotations

import json
import numbers
import os
import tempfile

import numpy as np
from sklearn.utils.validation import check_is_fitted

FORMAT = "ntksolve-estimator"
VERSION = 1
MARKER = "__ntksolve__"


def _jsonable(value):
    """A JSON-serialisable copy of a plain parameter value, or raise TypeError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)  # json writes inf as Infinity and reads it back
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_jsonable(v) for v in np.asarray(value, dtype=object).tolist()] if isinstance(value, np.ndarray) \
            else [_jsonable(v) for v in value]
    if isinstance(value, type) or isinstance(value, np.dtype):
        return np.dtype(value).name  # dtype=np.float32 -> "float32"
    raise TypeError(f"{type(value).__name__} is not a plain value")


def _text_array(arr, what):
    """Labels or names as an array numpy can store without pickle (object -> unicode)."""
    arr = np.asarray(arr)
    if arr.dtype != object:
        return arr
    if all(isinstance(v, str) for v in arr.tolist()):
        return arr.astype(str)
    raise ValueError(
        f"cannot save {what} of mixed Python objects ({arr[:3].tolist()}...) without pickle; "
        "use pickle/joblib for this model, or labels of one numeric or string type"
    )


def save(est, path):
    """Write a fitted estimator to ``path`` (see the module docstring for the format).

    Parameters
    ----------
    est : NTKRegressor, NTKClassifier or NTKRegressorCV, fitted
    path : str or os.PathLike
    """
    check_is_fitted(est)
    params, unsaved, sequences = {}, [], {}
    for name, value in est.get_params(deep=False).items():
        if isinstance(value, (tuple, list, np.ndarray)):
            sequences[name] = type(value).__name__  # JSON keeps lists only: remember the type
        try:
            params[name] = _jsonable(value)
        except TypeError:
            params[name] = None
            unsaved.append(name)
    attrs = {"n_features_in_": int(est.n_features_in_), "diag_reg_": float(est.diag_reg_),
             "y_ndim": int(getattr(est, "_y_ndim", 1))}
    arrays = {
        "X_train": est.X_train_,
        "y_train": est.y_train_,
        "y_train_mean": est._y_train_mean,
        "y_train_std": est._y_train_std,
        "fx_train_0": est.fx_train_0_,
    }
    if est.params_ is not None:
        for l, (W, b) in enumerate(est.params_):
            arrays[f"W{l}"] = W
            arrays[f"b{l}"] = b
    if hasattr(est, "feature_names_in_"):
        arrays["feature_names_in"] = _text_array(est.feature_names_in_, "feature names")
    if hasattr(est, "classes_"):
        arrays["classes"] = _text_array(est.classes_, "class labels")
        attrs["classes_object"] = bool(np.asarray(est.classes_).dtype == object)
    if hasattr(est, "time_"):
        attrs["time_"] = float(est.time_)
        attrs["best_score_"] = float(est.best_score_)
        arrays["times"] = est.times_
        arrays["diag_regs"] = est.diag_regs_
        arrays["mse_path"] = est.mse_path_
    from ntksolve import __version__

    meta = {"format": FORMAT, "version": VERSION, "ntksolve_version": __version__,
            "class": type(est).__name__, "params": params, "attrs": attrs, "unsaved_params": unsaved,
            "sequence_params": sequences}
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{MARKER: np.array(json.dumps(meta))}, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old file or the new one
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(path):
    """Read an estimator written by ``save``.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    est : NTKRegressor, NTKClassifier or NTKRegressorCV
        Fitted; its predictions are identical to those of the saved estimator.

    Raises
    ------
    ValueError
        The file is not an ntksolve model (not an ``.npz`` archive, no ``__ntksolve__`` entry,
        another format) or was written by a newer format version.
    """
    from ntksolve.sklearn import estimators

    path = os.fspath(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # not a zip/npy file, or one that would need pickle
        raise ValueError(f"{path!r} is not an ntksolve model file: cannot read it as a .npz archive ({exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is not an ntksolve model file: it holds a single array, not an .npz archive")
    with npz:
        if MARKER not in npz.files:
            raise ValueError(
                f"{path!r} is not an ntksolve model file: the archive has no {MARKER!r} entry "
                f"(entries: {sorted(npz.files)[:8]})")
        try:
            meta = json.loads(str(npz[MARKER][()]))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path!r}: the {MARKER!r} entry is not valid JSON ({exc})") from exc
        arrays = {name: npz[name] for name in npz.files if name != MARKER}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not an ntksolve model file (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise ValueError(
            f"{path!r} was written in format version {meta.get('version')!r}; this ntksolve reads up to "
            f"version {VERSION}: upgrade ntksolve to load it")
    classes = {c.__name__: c for c in (estimators.NTKRegressor, estimators.NTKClassifier, estimators.NTKRegressorCV)}
    if meta.get("class") not in classes:
        raise ValueError(f"{path!r}: unknown estimator class {meta.get('class')!r}")
    params = dict(meta["params"])
    restore = {"tuple": tuple, "list": list, "ndarray": np.asarray}
    for name, kind in meta.get("sequence_params", {}).items():
        if isinstance(params.get(name), list) and kind in restore:
            params[name] = restore[kind](params[name])
    for name in meta.get("unsaved_params", []):
        params.pop(name, None)  # back to the default
    est = classes[meta["class"]](**params)
    _restore(est, arrays, meta["attrs"])
    return est


def _restore(est, arrays, attrs):
    """Set the fitted attributes and rebuild the solver (kernel and decomposition) from ``arrays``."""
    from ntksolve._validation import check_dtype

    est._dtype = check_dtype(est.dtype)
    est.n_features_in_ = int(attrs["n_features_in_"])
    if "feature_names_in" in arrays:
        est.feature_names_in_ = arrays["feature_names_in"].astype(object)
    est._y_ndim = int(attrs["y_ndim"])
    est.X_train_ = arrays["X_train"]
    est.y_train_ = arrays["y_train"]
    est._y_train_mean = arrays["y_train_mean"]
    est._y_train_std = arrays["y_train_std"]
    est.fx_train_0_ = arrays["fx_train_0"]
    est.network_ = est._network(est.y_train_.shape[1])
    if "W0" in arrays:
        est.params_ = [(arrays[f"W{l}"], arrays[f"b{l}"]) for l in range(est.network_.depth + 1)]
    else:
        est.params_ = None
    if "classes" in arrays:
        classes = arrays["classes"]
        est.classes_ = classes.astype(object) if attrs.get("classes_object") else classes
    if "time_" in attrs:
        est.time_ = float(attrs["time_"])
        est.best_score_ = float(attrs["best_score_"])
        est.times_ = arrays["times"]
        est.diag_regs_ = arrays["diag_regs"]
        est.mse_path_ = arrays["mse_path"]
        est.cv_results_ = est._cv_results(est.diag_regs_, est.times_, est.mse_path_)
    est._build_predictor(est._kernel(est.X_train_), float(attrs["diag_reg_"]))
