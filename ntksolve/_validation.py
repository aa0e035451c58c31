"""Input checks shared by the public modules: finite, 2-D, right dtype, memory that fits.

Jitted code never sees raw user input: the public wrappers call these first.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from ntksolve import _config


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
    with np.errstate(over="ignore"):  # an overflow of the cast is reported below, by name
        out = np.ascontiguousarray(arr, dtype=dt)
    if not np.all(np.isfinite(out)):
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        if arr.dtype != dt and np.all(np.isfinite(arr)):  # finite as given: the cast overflowed
            raise ValueError(
                f"{name} has {bad} entries beyond the range of {dt.name} (largest {np.finfo(dt).max:.3g}; "
                f"here up to {float(np.max(np.abs(arr))):.3g}), the parameters' dtype: standardise the "
                "features or use float64 parameters"
            )
        raise ValueError(f"{name} contains NaN or infinity ({bad} entries); remove or impute them first")
    return out


def _read_int(path):
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) and anything odd read as None


def _cgroup_headroom():
    """Bytes this process's memory cgroup still allows (v2 ``memory.max`` or v1
    ``memory.limit_in_bytes``, minus what the group uses now), or None without a limit."""
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: limits may sit on any ancestor, so walk up to the root
            candidates = [("/sys/fs/cgroup" + path.rstrip("/"), "memory.max", "memory.current")]
            while path not in ("", "/"):
                path = path.rsplit("/", 1)[0]
                candidates.append(("/sys/fs/cgroup" + path.rstrip("/"), "memory.max", "memory.current"))
        elif "memory" in controllers.split(","):
            candidates = [
                (root, "memory.limit_in_bytes", "memory.usage_in_bytes")
                for root in ("/sys/fs/cgroup/memory" + path.rstrip("/"), "/sys/fs/cgroup/memory")
            ]
        else:
            continue
        for folder, limit_name, usage_name in candidates:
            limit = _read_int(os.path.join(folder, limit_name))
            if limit is None or limit >= 1 << 60:  # v1 writes "no limit" as a huge number
                continue
            used = _read_int(os.path.join(folder, usage_name)) or 0
            room = max(limit - used, 0)
            best = room if best is None else min(best, room)
    return best


def _address_space_headroom():
    """Bytes left under ``RLIMIT_AS`` (``ulimit -v``), or None without a limit."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):  # pragma: no cover - non-POSIX
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    size = None
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    size = int(line.split()[1]) * 1024
    except OSError:
        pass
    return max(soft - (size or 0), 0)


def available_memory() -> int:
    """Bytes of memory this process may still allocate now.

    The least of the machine's ``MemAvailable`` (Linux; else its physical RAM), the headroom of
    the process's memory cgroup (containers, batch schedulers) and the headroom under its
    ``RLIMIT_AS`` (``ulimit -v``): a limit below the machine's free memory is the one that bites.
    """
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
            avail = 1 << 62
    for room in (_cgroup_headroom(), _address_space_headroom()):
        if room is not None:
            avail = min(avail, room)
    return avail


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_memory(shape, dtype, *, what: str = "kernel", hint: str = "", copies: float = 1.0) -> None:
    """Raise ``MemoryError`` before work whose peak would not fit.

    Parameters
    ----------
    shape : tuple of int
        One array of the work.
    dtype : numpy dtype
    what : str
        Named in the message.
    hint : str
        The way out, appended to the message.
    copies : float, default 1
        How many such arrays are alive at the work's peak. One array (``copies = 1``) may take
        ``_config.MAX_OUTPUT_MEMORY_FRACTION`` of the memory available now
        (:func:`available_memory`, which honours cgroup and ``RLIMIT_AS`` limits); a peak of
        several arrays may take ``_config.MAX_PEAK_MEMORY_FRACTION`` of it.
    """
    one = float(np.prod([float(s) for s in shape])) * np.dtype(dtype).itemsize
    nbytes = one * copies
    avail = available_memory()
    fraction = _config.MAX_OUTPUT_MEMORY_FRACTION if copies <= 1 else _config.MAX_PEAK_MEMORY_FRACTION
    if nbytes > fraction * avail:
        size = (
            f"{_fmt_bytes(nbytes)}"
            if copies <= 1
            else f"about {_fmt_bytes(nbytes)} at its peak ({copies:g} arrays of {_fmt_bytes(one)})"
        )
        msg = (
            f"the {what} of shape {tuple(int(s) for s in shape)} ({np.dtype(dtype).name}) would take "
            f"{size}, but only {_fmt_bytes(avail)} of memory is available to this process "
            f"(ntksolve allows {fraction:.0%} of it)"
        )
        if hint:
            msg += f"; {hint}"
        raise MemoryError(msg)


def fmt_bytes(n: float) -> str:
    """Human-readable byte count, e.g. ``'1.5 GiB'``."""
    return _fmt_bytes(n)


# --- scalars, choices and arrays shared by the solvers -------------------------------------------
#
# One implementation each: ``TypeError`` for a wrong type, ``ValueError`` for a wrong value, the
# message naming the argument, what was given and what is accepted.


def check_real_scalar(
    value, name: str, *, low: float = -np.inf, strict: bool = False, allow_inf: bool = False
) -> float:
    """A real number (not a bool) ``> low`` (``strict``) or ``>= low``, finite unless ``allow_inf``.

    Returns
    -------
    float
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    v = float(value)
    if np.isnan(v) or (np.isinf(v) and not (allow_inf and v > 0)):
        raise ValueError(f"{name} must be a finite number{' (or np.inf)' if allow_inf else ''}, got {value!r}")
    if (v <= low) if strict else (v < low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low:g}, got {value!r}")
    return v


#: Why a learning rate of 0 is refused: the same words wherever a rate is given (the rules, the
#: schedules' peak rates, the conversions from other libraries' rates, the estimators).
ZERO_RATE_REASON = (
    "a rate of 0 trains nothing, and the converged limit t = inf and the time grids in units of "
    "1 / learning_rate divide by it; to predict no training, ask for time 0 (steps=0) at a positive rate"
)


def refuse_zero_rate(value, name: str, requirement: str) -> None:
    """ValueError (``name requirement, got value: ZERO_RATE_REASON``) if ``value`` is a real 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        return  # the type error is the caller's check
    if float(value) == 0.0:
        raise ValueError(f"{name} {requirement}, got {value!r}: {ZERO_RATE_REASON}")


def check_learning_rate(value, name: str = "learning_rate") -> float:
    """``η``: a positive finite real number (0 refused with :data:`ZERO_RATE_REASON`)."""
    refuse_zero_rate(value, name, "must be > 0")
    return check_real_scalar(value, name, low=0.0, strict=True)


def check_diag_reg(value, name: str = "diag_reg") -> float:
    """The relative ridge: a non-negative finite real number."""
    return check_real_scalar(value, name, low=0.0)


def check_positive_int(value, name: str, *, allow_none: bool = False):
    """A positive integer (not a bool), or None when ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_choice(value, name: str, valid):
    """``value`` if it is one of the strings ``valid``; TypeError for a non-string."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, valid))}, got {value!r}")
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid values: {', '.join(map(repr, valid))}")
    return value


def as_real_array(a, name: str) -> np.ndarray:
    """``np.asarray(a)`` if it is a real numeric (or boolean) array; TypeError otherwise."""
    arr = np.asarray(a)
    kind = arr.dtype.kind
    if kind in "fiub":  # float, signed, unsigned, bool
        return arr
    if kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")


def check_finite(arr, name: str, what: str = "the kernel and targets must be finite") -> None:
    """ValueError naming how many entries of ``arr`` are NaN or infinite."""
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains NaN or infinity ({bad} entries); {what}")


def overflow_reason(dtype) -> str:
    """Why an array computed from finite inputs and parameters is not finite, and the fix: the one
    wording of every overflow check (the empirical kernels, the forward pass)."""
    dt = np.dtype(dtype)
    fix = "use float64 parameters (net.init(..., dtype=np.float64)), " if dt == np.float32 else ""
    return (
        f"it overflowed {dt.name} (whose largest number is {np.finfo(dt).max:.3g}): {fix}lower "
        "weight_std or standardise the features"
    )


class FloatOverflowError(ValueError):
    """A result computed from finite inputs and parameters is not finite: its dtype overflowed (a
    forward pass's pre-activations, an empirical kernel, a Jacobian). A ValueError; the trainers
    take it for divergence (the parameters grew past the dtype), everything else refuses the
    result with it.

    Parameters
    ----------
    what : str
        What overflowed, without an article, e.g. ``"pre-activations of hidden layer 2"``; kept as
        the attribute ``what``.
    dtype : numpy dtype
        The dtype it overflowed; kept as the attribute ``dtype``.
    detail : str, optional
        What is wrong with it (default ``"are not finite"``).
    """

    def __init__(self, what: str, dtype, detail: str = "") -> None:
        self.what, self.dtype = what, np.dtype(dtype)
        super().__init__(f"the {what} {detail or 'are not finite'}: {overflow_reason(self.dtype)}")


def check_forward_finite(finite: bool, where: str, dtype) -> None:
    """:class:`FloatOverflowError` if ``finite`` is False (from
    :func:`ntksolve._jit.empirical.bias_act`) for the pre-activations ``where`` names (without an
    article: ``"pre-activations of hidden layer 2"``): an overflow, which the activation would
    otherwise hide (relu(-inf) = 0, tanh(inf) = 1)."""
    if not finite:
        raise FloatOverflowError(where, dtype)


def ridge_shift(diag_reg: float, diagonal) -> float:
    """The absolute ridge ``diag_reg · mean(diag Θ)`` that a relative ``diag_reg`` adds to ``Θ``.

    Relative to the kernel's mean diagonal, so that one ``diag_reg`` means the same thing for
    kernels of any scale; 0 exactly when ``diag_reg`` is 0 (no pass over the diagonal).
    """
    if not diag_reg:
        return 0.0
    return float(diag_reg) * float(np.mean(diagonal))


def check_small_variances(name, *variances, where=None) -> None:
    """ValueError if a positive pre-activation variance before ``name`` (relu, the abrelu family) is
    below ``_config.ANALYTIC_MIN_VARIANCE`` (its map's product of two would underflow).

    ``where``, optional: ``index -> str`` naming the place of the entry (its index in the array)."""
    for v in variances:
        v = np.asarray(v)
        small = (v > 0.0) & (v < _config.ANALYTIC_MIN_VARIANCE)
        if small.any():
            at = tuple(int(i) for i in np.argwhere(small)[0])
            raise ValueError(
                f"the pre-activation variance before {name} is as small as {float(v[small].min()):.3g}"
                f"{'' if where is None else ' (' + where(at) + ')'}, below {_config.ANALYTIC_MIN_VARIANCE:.0e}, "
                "where the product of two underflows float64 (too small for its analytic kernel); "
                "standardise the features, or raise the weight_std or bias_std values"
            )
