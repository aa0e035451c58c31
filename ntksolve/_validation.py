"""Input checks shared by the public modules: finite, 2-D, right dtype, memory that fits.

Jitted code never sees raw user input: the public wrappers call these first.
"""
from __future__ import annotations

import os

import numpy as np

from ntksolve import _config

FLOAT_DTYPES = (np.float64, np.float32)


def check_dtype(dtype) -> np.dtype:
    """Return ``np.dtype(dtype)`` if it is float64 or float32, else raise ``ValueError``."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}") from exc
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dt}")
    return dt


def check_inputs(X, *, name: str = "X", n_features: int | None = None, dtype=np.float64) -> np.ndarray:
    """Validate a design matrix and return a fresh C-ordered copy-or-view of dtype ``dtype``.

    Parameters
    ----------
    X : array_like, shape (N, d)
    name : str
        Name used in error messages.
    n_features : int, optional
        Required number of columns ``d``.
    dtype : float64 or float32

    Returns
    -------
    X : ndarray, shape (N, d), C-contiguous, never the caller's array if it had to change.
    """
    dt = check_dtype(dtype)
    arr = np.asarray(X)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real, got complex dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n_samples, n_features), got shape {arr.shape}; "
            "reshape a single sample with X.reshape(1, -1) or a single feature with X.reshape(-1, 1)"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sample and one feature, got shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features, but the network expects {n_features} "
            f"(it was initialised with n_features={n_features})"
        )
    out = np.ascontiguousarray(arr, dtype=dt)
    if not np.all(np.isfinite(out)):
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        raise ValueError(f"{name} contains NaN or infinity ({bad} entries); remove or impute them first")
    return out


def available_memory() -> int:
    """Bytes of memory available to this process now (Linux ``MemAvailable``, else physical RAM)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 1 << 62


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_memory(shape, dtype, *, what: str = "kernel", hint: str = "") -> None:
    """Raise ``MemoryError`` before allocating an array of ``shape`` that would not fit.

    The limit is ``_config.MAX_OUTPUT_MEMORY_FRACTION`` of the memory available now.
    """
    nbytes = float(np.prod([float(s) for s in shape])) * np.dtype(dtype).itemsize
    avail = available_memory()
    if nbytes > _config.MAX_OUTPUT_MEMORY_FRACTION * avail:
        msg = (
            f"the {what} of shape {tuple(int(s) for s in shape)} ({np.dtype(dtype).name}) would take "
            f"{_fmt_bytes(nbytes)}, but only {_fmt_bytes(avail)} of memory is available "
            f"(ntksolve allows {_config.MAX_OUTPUT_MEMORY_FRACTION:.0%} of it for one array)"
        )
        if hint:
            msg += f"; {hint}"
        raise MemoryError(msg)


def fmt_bytes(n: float) -> str:
    """Human-readable byte count, e.g. ``'1.5 GiB'``."""
    return _fmt_bytes(n)
