"""Pickle-free save and load of the fitted estimators.

Format (version 1): one ``.npz`` archive as ``numpy.savez`` writes it (members stored, not
compressed), read without pickle, so loading a file never executes code. Members:

``__ntksolve__``
    A 0-d unicode array holding JSON::

        {"format": "ntksolve-estimator", "version": 1, "ntksolve_version": "...",
         "class": "NTKRegressor" | "NTKClassifier" | "NTKRegressorCV",
         "params": {...constructor parameters, but the scheduler and later ones at their defaults...},
         "attrs": {...scalar fitted attributes: n_features_in_, diag_reg_, y_ndim, time_, tiled, ...},
         "unsaved_params": [...names of parameters that were not plain values and were reset...],
         "sequence_params": {name: "tuple" | "list" | "ndarray"}}  (JSON has lists only)

``X_train``, ``y_train``, ``y_train_mean``, ``y_train_std``, ``fx_train_0``
    Training inputs ``(N, d)``, standardised targets ``(N, k)``, their scaling ``(k,)`` and the
    outputs at initialisation ``(N, k)``.
``W0``, ``b0``, ``W1``, ... (empirical kernel only)
    The network's parameters, layer by layer.
``classes`` (classifier), ``feature_names_in`` (when fitted on named columns),
``times``, ``diag_regs``, ``mse_path`` (:class:`~ntksolve.NTKRegressorCV`)
``tiled_coef``, ``tiled_fx_train`` (fitted with ``chunks``)
    The tiled solve's coefficients and train outputs ``(N, k)``; ``attrs["tiled"]`` holds its
    time, ridge and tile edge.

What is saved and restored is each estimator's own state (its ``_get_state`` / ``_set_state``);
this module writes (atomically, through :mod:`ntksolve._atomic`), reads and checks the
container. An in-memory model is restored by
recomputing its train kernel and decomposition from ``X_train`` (deterministic, so predictions
are identical; the decomposition is as large as the kernel and as quick to recompute as
``fit``'s linear algebra); a tiled model from its stored coefficients, without any kernel.

A model file is never trusted: only the members the estimator needs are read, each checked
(stored, sizes consistent with its ``.npy`` header, plain dtype, within ``max_bytes``) before its
data is; the parameters and the state are checked as ``fit`` would have made them; the
scheduler always comes from the caller. Anything else is refused with a ``ValueError``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import struct
import zipfile
import zlib

import numpy as np

from ntksolve._atomic import write_atomically
from ntksolve._validation import fmt_bytes

FORMAT = "ntksolve-estimator"
VERSION = 1
MARKER = "__ntksolve__"

#: Default ``max_bytes`` of :func:`load`: the model's arrays plus the train kernel an in-memory
#: model recomputes (float64: N = 16 384 training points). A small file can describe a large
#: kernel (N points of d features take 8 N d bytes; their kernel 8 N^2), so the caller, not the
#: file, decides how much loading may allocate.
MAX_BYTES = 2 * 1024**3

#: Largest ``__ntksolve__`` member: parameters and scalars only (labels and names are arrays).
_MAX_META_BYTES = 64 * 1024

#: Largest ``.npy`` header read (numpy's own default).
_MAX_NPY_HEADER = 10000

_META_KEYS = ("format", "version", "ntksolve_version", "class", "params", "attrs", "unsaved_params", "sequence_params")
_SEQUENCES = {"tuple": tuple, "list": list, "ndarray": np.asarray}
#: Parameters the fitted model predicts with: one the format cannot store is refused at save (the
#: others, such as a cross-validation splitter, only shape fitting and are reset on load).
_PREDICTION_PARAMS = ("dynamics", "method", "learning_rate")
_STORABLE_KINDS = "biufU"
#: Zip general-purpose flags a member may carry: a trailing data descriptor, UTF-8 names.
_ALLOWED_FLAGS = 0x0008 | 0x0800

#: Estimator classes by name, filled by the modules that define them (:func:`register`).
_REGISTRY: dict = {}


def register(cls):
    """Make ``cls`` loadable under its name; it provides ``_get_state`` and ``_set_state``."""
    _REGISTRY[cls.__name__] = cls
    return cls


# ---------------------------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------------------------
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
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.astype(object).tolist()]
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (type, np.dtype)):
        return np.dtype(value).name  # dtype=np.float32 -> "float32"
    raise TypeError(f"{type(value).__name__} is not a plain value")


def _storable(arr, name):
    """An array numpy stores without pickle: labels or names of objects become unicode."""
    arr = np.asarray(arr)
    if arr.dtype == object:
        if not all(isinstance(v, str) for v in arr.ravel().tolist()):
            raise ValueError(
                f"cannot save {name} of mixed Python objects ({arr.ravel()[:3].tolist()}...) without pickle; "
                "use pickle/joblib for this model, or labels of one numeric or string type"
            )
        arr = arr.astype(str)
    if arr.dtype.kind not in _STORABLE_KINDS:
        raise ValueError(f"cannot save {name} of dtype {arr.dtype} without pickle")
    return arr


def save(est, path):
    """Write a fitted estimator to ``path`` (see the module docstring for the format).

    Parameters
    ----------
    est : NTKRegressor, NTKClassifier or NTKRegressorCV, fitted
    path : str or os.PathLike
        Written exactly as given: to a temporary file beside it, then renamed over it. The file
        gets the permissions the umask gives a new file. Temporary files that earlier saves of
        ``path`` left behind (killed processes) are removed first.
    """
    attrs, arrays = est._get_state()
    params, unsaved, sequences = {}, [], {}
    later = getattr(type(est), "_parameters_added_later", {})  # {name: default}: absent from older files
    for name, value in est.get_params(deep=False).items():
        if name == "scheduler" or (name in later and (value is later[name] or str(value) == later[name])):
            continue  # the scheduler is the caller's business; a later parameter at its default goes unsaid
        if isinstance(value, (tuple, list, np.ndarray)):
            sequences[name] = type(value).__name__ if type(value) in (tuple, list) else "ndarray"
        try:
            params[name] = _jsonable(value)
        except TypeError:
            if name in _PREDICTION_PARAMS:
                # reset to its default on load, it would change the model's predictions: refuse
                raise ValueError(
                    f"{name}={value!r} is an object the pickle-free format does not store, and the "
                    f"loaded model would predict with the default {name} instead; pass {name} by its "
                    "name (e.g. 'discrete', 'krylov') to save this way, or use pickle/joblib"
                ) from None
            params[name] = None
            unsaved.append(name)
            sequences.pop(name, None)
    members = {name: _storable(a, name) for name, a in arrays.items()}
    from ntksolve import __version__

    meta = {
        "format": FORMAT,
        "version": VERSION,
        "ntksolve_version": __version__,
        "class": type(est).__name__,
        "params": params,
        "attrs": attrs,
        "unsaved_params": unsaved,
        "sequence_params": sequences,
    }
    members = {MARKER: np.array(json.dumps(meta)), **members}
    write_atomically(path, lambda fh: np.savez(fh, **members))


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------
_REQUIRED = object()

#: Errors that a damaged or crafted file may raise from the parsers below them; load turns them
#: into its documented ValueError.
#: (An OSError once the file is open is a seek or read the zip directory sent astray.)
_PARSE_ERRORS = (
    LookupError,
    TypeError,
    AttributeError,
    RecursionError,
    OverflowError,
    EOFError,
    OSError,
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    NotImplementedError,
)


class StateReader:
    """What an estimator's ``_set_state`` reads a saved state through (not public).

    Arrays are read on request only, each checked before its data is read: a stored (not
    compressed) member whose size matches its ``.npy`` header, of a plain native dtype, within
    the byte budget, which also pays for what restoring allocates (:meth:`charge`).
    """

    def __init__(self, zf, file_size, max_bytes):
        self._zf = zf
        self._file_size = file_size
        self._members = {info.filename: info for info in zf.infolist()}
        self.attrs = {}  # the JSON's attrs, once read
        self._read_attrs = set()
        self._max_bytes = max_bytes
        self._used = 0

    def has(self, name):
        """Whether the archive holds the array ``name`` (nothing is read)."""
        return f"{name}.npy" in self._members

    def charge(self, nbytes, what):
        """Count ``nbytes`` against the budget; ValueError if they exceed it."""
        self._used += int(nbytes)
        if self._max_bytes is not None and self._used > self._max_bytes:
            raise ValueError(
                f"{what} would take {fmt_bytes(nbytes)}, beyond load's max_bytes={self._max_bytes} "
                f"({fmt_bytes(self._max_bytes)}, counting the model's arrays); pass a larger max_bytes "
                "(or None) to ntksolve.load if you trust this file and have the memory"
            )

    def array(self, name, dtype, shape, *, finite=False, max_bytes=None):
        """The array ``name``, checked.

        Parameters
        ----------
        name : str
        dtype : dtype or str
            The dtype exactly, or a string of the dtype kinds accepted (``"U"``, ``"biufU"``).
        shape : tuple of int or None
            ``None`` entries accept any length.
        finite : bool
            Refuse NaN and infinities.
        max_bytes : int, optional
            A smaller limit for this member.
        """
        info = self._members.get(f"{name}.npy")
        if info is None:
            raise ValueError(f"the file has no {name!r} array")
        if info.flag_bits & ~_ALLOWED_FLAGS:
            raise ValueError(f"the {name!r} member has zip flags {info.flag_bits:#x} (encrypted or patched data)")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"the {name!r} array is compressed; ntksolve writes and reads stored members only")
        if info.file_size != info.compress_size or info.header_offset + info.compress_size > self._file_size:
            raise ValueError(f"the {name!r} member declares sizes the file does not have")
        if max_bytes is not None and info.file_size > max_bytes:
            raise ValueError(f"the {name!r} member takes {info.file_size} bytes, more than its {max_bytes}")
        self.charge(info.file_size, f"the {name!r} array")
        with self._zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                file_shape, fortran, dt = np.lib.format.read_array_header_1_0(fh, max_header_size=_MAX_NPY_HEADER)
            elif version == (2, 0):
                file_shape, fortran, dt = np.lib.format.read_array_header_2_0(fh, max_header_size=_MAX_NPY_HEADER)
            else:
                raise ValueError(f"the {name!r} array has .npy format version {version}, not 1.0 or 2.0")
            self._check_dtype(name, dt, dtype)
            if len(file_shape) != len(shape) or any(w is not None and s != w for s, w in zip(file_shape, shape)):
                want = tuple("any" if w is None else w for w in shape)
                raise ValueError(f"the {name!r} array has shape {file_shape}, expected {want}")
            nbytes = math.prod(file_shape) * dt.itemsize
            if fh.tell() + nbytes != info.file_size:
                raise ValueError(f"the {name!r} member's size does not match its shape {file_shape} and dtype {dt}")
            arr = np.empty(file_shape, dtype=dt, order="F" if fortran else "C")
            buf = memoryview(arr.T if fortran else arr).cast("B")
            done = 0
            while done < nbytes:
                n = fh.readinto(buf[done:])
                if not n:
                    raise ValueError(f"the {name!r} array is truncated")
                done += n
            if fh.read(1):  # also where zipfile checks the member's CRC-32
                raise ValueError(f"the {name!r} member is longer than its array")
        if finite and dt.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"the {name!r} array contains NaN or infinity")
        return arr

    @staticmethod
    def _check_dtype(name, dt, want):
        plain = not dt.hasobject and dt.fields is None and dt.subdtype is None and dt.isnative
        if isinstance(want, str):
            ok = plain and dt.kind in want
        else:
            ok = plain and dt == np.dtype(want)
        if not ok:
            raise ValueError(
                f"the {name!r} array has dtype {dt}, expected "
                f"{np.dtype(want) if not isinstance(want, str) else 'kind ' + repr(want)}"
            )

    def attr(self, name, kind, *, lower=None, default=_REQUIRED):
        """The scalar fitted attribute ``name`` of the JSON, checked.

        ``kind``: ``"int"``, ``"float"`` (an int or a float; returned as float), ``"bool"`` or
        ``"dict"``; ``lower``: the least value allowed (the value must then also be finite).
        """
        self._read_attrs.add(name)
        if name not in self.attrs:
            if default is _REQUIRED:
                raise ValueError(f"the file's attrs have no {name!r}")
            return default
        value = self.attrs[name]
        types = {"int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,)}[kind]
        if not isinstance(value, types) or (kind != "bool" and isinstance(value, bool)):
            raise ValueError(f"the file's {name!r} must be of kind {kind}, got {value!r}")
        if kind == "float":
            value = float(value)
        if lower is not None and not (math.isfinite(value) and value >= lower):
            raise ValueError(f"the file's {name!r} must be a finite number >= {lower}, got {value!r}")
        return value

    def unread_attrs(self):
        return sorted(set(self.attrs) - self._read_attrs)


def load(path, *, scheduler=None, max_bytes=MAX_BYTES):
    """Read an estimator written by ``save``.

    Parameters
    ----------
    path : str or os.PathLike
    scheduler : optional
        The ``scheduler`` of a model fitted with ``chunks`` (where its predictions and any later
        ``fit`` compute; see :class:`~ntksolve.NTKRegressor`). Files never hold one.
    max_bytes : int or None, default MAX_BYTES (2 GiB)
        The most that loading may allocate: the model's arrays plus, for an in-memory model, the
        ``(N, N)`` train kernel it recomputes. None: no limit.

    Returns
    -------
    est : NTKRegressor, NTKClassifier or NTKRegressorCV
        Fitted; its predictions are identical to those of the saved estimator.

    Raises
    ------
    ValueError
        The file is not an ntksolve model (not an ``.npz`` archive, no ``__ntksolve__`` entry,
        another format), was written by a newer format version, is damaged or inconsistent (an
        unknown class or parameter, wrong shapes, dtypes or sizes, non-finite or impossible
        values), or needs more than ``max_bytes``.
    FileNotFoundError
        No file at ``path``.
    ImportError
        A model fitted with ``chunks`` without the Dask extra installed.
    """
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral) or max_bytes <= 0
    ):
        raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
    path = os.fspath(path)
    with open(path, "rb") as fh:
        if fh.read(6) == b"\x93NUMPY":
            raise ValueError(f"{path!r} is not an ntksolve model file: it holds a single array, not an .npz archive")
        size = os.fstat(fh.fileno()).st_size
        fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except _PARSE_ERRORS + (ValueError,) as exc:
            raise ValueError(
                f"{path!r} is not an ntksolve model file: cannot read it as an .npz archive ({exc})"
            ) from exc
        try:
            with zf:
                return _load(zf, size, scheduler, max_bytes)
        except ValueError as exc:
            raise ValueError(f"cannot load {path!r}: {exc}") from exc
        except _PARSE_ERRORS as exc:
            raise ValueError(
                f"cannot load {path!r}: the file is damaged or inconsistent ({type(exc).__name__}: {exc})"
            ) from exc


def _load(zf, size, scheduler, max_bytes):
    state = StateReader(zf, size, max_bytes)
    if not state.has(MARKER):
        names = sorted(info.filename for info in zf.infolist())[:8]
        raise ValueError(f"not an ntksolve model file: the archive has no {MARKER!r} entry (entries: {names})")
    text = str(state.array(MARKER, "U", (), max_bytes=_MAX_META_BYTES)[()])
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the {MARKER!r} entry is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"not an ntksolve model file (format {found!r})")
    version = meta.get("version")
    if type(version) is int and version > VERSION:
        raise ValueError(
            f"it was written in format version {version}; this ntksolve reads up to version "
            f"{VERSION}: upgrade ntksolve to load it"
        )
    if type(version) is not int or version != VERSION:
        raise ValueError(f"unsupported format version {version!r} (this ntksolve reads version {VERSION})")
    missing = [key for key in _META_KEYS if key not in meta]
    unknown = sorted(set(meta) - set(_META_KEYS))
    if missing or unknown:
        raise ValueError(f"the {MARKER!r} entry lacks {missing} or has unknown entries {unknown}")
    cls = _REGISTRY.get(meta["class"]) if isinstance(meta["class"], str) else None
    if cls is None:
        raise ValueError(f"unknown estimator class {meta['class']!r} (known: {sorted(_REGISTRY)})")
    if not isinstance(meta["attrs"], dict):
        raise ValueError("attrs must be a JSON object")
    est = cls(**_params(cls, meta, scheduler))
    state.attrs = meta["attrs"]
    est._set_state(state)
    unread = state.unread_attrs()
    if unread:
        raise ValueError(f"attrs has entries a {cls.__name__} does not have: {unread}")
    return est


def _params(cls, meta, scheduler):
    """The constructor arguments the file gives, checked against ``cls``'s parameters."""
    names = set(cls._get_param_names())
    params = meta["params"]
    unsaved = meta["unsaved_params"]
    sequences = meta["sequence_params"]
    if not isinstance(params, dict) or not isinstance(unsaved, list) or not isinstance(sequences, dict):
        raise ValueError("params and sequence_params must be JSON objects, unsaved_params a list")
    params = {name: value for name, value in params.items() if name != "scheduler"}  # never obeyed
    unknown = sorted(set(params) - names)
    if unknown:
        raise ValueError(f"params has names a {cls.__name__} does not take: {unknown}")
    if not all(isinstance(name, str) and name in params for name in unsaved):
        raise ValueError(f"unsaved_params must name saved parameters, got {unsaved!r}")
    missing = sorted(names - set(params) - {"scheduler"} - set(getattr(cls, "_parameters_added_later", ())))
    if missing:
        raise ValueError(f"params lacks {missing}")
    for name, kind in sequences.items():
        if name not in params or kind not in _SEQUENCES or not isinstance(params[name], list) or name in unsaved:
            raise ValueError(f"sequence_params entry {name!r}: {kind!r} does not describe a saved list")
        params[name] = _SEQUENCES[kind](params[name])
    for name in unsaved:
        del params[name]  # back to the default
    if "scheduler" in names:
        params["scheduler"] = scheduler
    return params
