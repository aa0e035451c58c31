"""The up-front checks of a width sweep: its limits, its targets, its memory and its work.

:func:`check_sweep` refuses, before any work, widths, depths or record counts beyond the limits and
a widest network that would not fit in memory; the work estimate (floating-point operations per
width) drives the progress display.
"""

from __future__ import annotations

import numbers
from typing import List, NamedTuple

import numpy as np

from ntksolve._config import MAX_OUTPUT_MEMORY_FRACTION
from ntksolve._validation import available_memory, fmt_bytes
from ntksolve.nets.mlp import PARAMETERIZATIONS

#: Largest hidden width a sweep accepts: 128 times the default sweep's widest. A guard against
#: typos (``--widths 1e9``) before the memory estimate; at N = 256 such a layer's activations
#: already take 2 GiB and a step of real training seconds.
MAX_WIDTH = 1 << 20
#: Most hidden layers: far beyond every depth the NTK literature measures, and the ReLU NTK's
#: correlation map has long converged there (``1 - O(1/L^2)``), so a deeper sweep measures rounding.
MAX_DEPTH = 100
#: Most recorded steps: each record costs one empirical NTK of the network (the kernel change)
#: and a test forward pass, and every width rewrites its loss curves into ``report.json``.
MAX_RECORDS = 1000


# ---------------------------------------------------------------------------------------------
# limits, memory and work of a sweep
# ---------------------------------------------------------------------------------------------
def _check_widths(widths) -> List[int]:
    if isinstance(widths, numbers.Integral):
        widths = [widths]
    try:
        ws = list(widths)
    except TypeError as exc:
        raise ValueError(f"widths must be a sequence of positive ints, got {widths!r}") from exc
    if not ws:
        raise ValueError("widths must not be empty")
    for w in ws:
        if isinstance(w, bool) or not isinstance(w, numbers.Integral) or w <= 0:
            raise ValueError(f"widths must be positive ints, got {ws!r}")
    if len(set(ws)) != len(ws):
        raise ValueError(f"widths must not repeat, got {ws!r}")
    big = [int(w) for w in ws if w > MAX_WIDTH]
    if big:
        raise ValueError(f"width {big[0]} is above the limit of {MAX_WIDTH} hidden units per layer (MAX_WIDTH)")
    return sorted(int(w) for w in ws)


def _check_depth(depth) -> int:
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ValueError(f"depth must be a positive int (number of hidden layers), got {depth!r}")
    if depth > MAX_DEPTH:
        raise ValueError(f"depth {depth} is above the limit of {MAX_DEPTH} hidden layers (MAX_DEPTH)")
    return int(depth)


def _check_records(n_records) -> int:
    if isinstance(n_records, bool) or not isinstance(n_records, numbers.Integral) or n_records < 2:
        raise ValueError(f"n_records must be an int >= 2, got {n_records!r}")
    if n_records > MAX_RECORDS:
        raise ValueError(
            f"n_records {n_records} is above the limit of {MAX_RECORDS} recorded steps (MAX_RECORDS): "
            "each record computes the network's NTK once more"
        )
    return int(n_records)


class _Sizes(NamedTuple):
    n_train: int
    n_test: int
    n_features: int
    n_outputs: int
    depth: int
    n_records: int
    full: bool  # the full (N k x N k) kernel, k > 1
    analytic: bool = True  # the analytic kernels are made (NTK parameterisation)


def _weights(s: _Sizes, width: int) -> float:
    """Number of weights (no biases) of the network: ``d n + (L - 1) n^2 + n k``."""
    return float(s.n_features * width + (s.depth - 1) * width * width + width * s.n_outputs)


def _kernel_flops(s: _Sizes, width: int, n1: int, n2: int) -> float:
    """Empirical NTK of ``n1 x n2`` points: forward and backward passes of both sets, then one Gram
    product of activations and one of deltas per layer (``k^2`` delta products for a full kernel)."""
    kk = s.n_outputs**2 if s.full else 1
    passes = 4.0 * (n1 + n2) * _weights(s, width) * (s.n_outputs if s.full else 1)
    grams = 2.0 * n1 * n2 * (s.n_features + s.depth * width * (1 + kk))
    return passes + grams


def _width_work(s: _Sizes, width: int, steps: int, n_records: int):
    """``(prediction, one training step, one recorded step)`` in floating-point operations.

    A training step is a forward and a backward pass (``6 N P``); a recorded step adds the test
    forward pass and the NTK for the kernel change; the prediction is the two empirical kernels,
    the decomposition and the trajectories. Only the proportions matter (the progress bar)."""
    nk = s.n_train * (s.n_outputs if s.full else 1)
    Pw = _weights(s, width)
    predict = (
        _kernel_flops(s, width, s.n_train, s.n_train)
        + _kernel_flops(s, width, s.n_test, s.n_train)
        + 4.0 * nk**3
        + 4.0 * n_records * (s.n_train + s.n_test) * s.n_train * s.n_outputs
        + 2.0 * (s.n_train + s.n_test) * Pw
    )
    step = 6.0 * s.n_train * Pw
    record = 2.0 * s.n_test * Pw + _kernel_flops(s, width, s.n_train, s.n_train)
    return predict, step, record


def _twin_work(s: _Sizes, steps: int, batch_size, analytic: bool) -> float:
    """Floating-point operations of the step-by-step twins of one width (recurrences: each step
    multiplies the residual of the batch by the kernel's columns, train and test)."""
    b = s.n_train if batch_size is None else int(batch_size)
    kk = s.n_outputs**2 if s.full else s.n_outputs
    per_step = 2.0 * (s.n_train + s.n_test) * b * kk
    return steps * per_step * (1.0 + (s.n_outputs / kk if analytic else 0.0))


def _width_memory(s: _Sizes, width: int) -> float:
    """Bytes one width needs at its peak (float64), an upper estimate.

    Parameters four times (the network's, the training copy, a gradient and the update's
    temporary); the activations, their derivatives and the deltas of the train and test inputs
    (backpropagation, the kernels) and their temporaries; the
    train kernel, its copy for the kernel change and the decomposition's work and vectors; the test
    kernel; the analytic kernels shared by the sweep; the recorded outputs of the real network and
    both predictions."""
    N, M, k = s.n_train, s.n_test, s.n_outputs
    nk, mk = (N * k, M * k) if s.full else (N, M)
    P = _weights(s, width) + s.depth * width + k
    shared = 4.0 * N * N + M * N if s.analytic else 0.0
    floats = (
        4.0 * P
        + 4.0 * (N + M) * width * s.depth
        + 4.0 * nk * nk
        + float(mk) * nk
        + shared
        + 6.0 * s.n_records * (N + M) * k
    )
    return 8.0 * floats


def check_sweep(
    n_train: int,
    n_test: int,
    n_features: int,
    n_outputs: int,
    widths,
    *,
    depth: int = 1,
    n_records: int = 30,
    parameterization: str = "ntk",
) -> List[int]:
    """Refuse, before any work, a sweep whose widths, depth or records are beyond the limits, or
    whose widest network would not fit in memory.

    Parameters
    ----------
    n_train, n_test, n_features, n_outputs : int
        ``N``, ``M``, ``d``, ``k`` of the data.
    widths : sequence of int
    depth, n_records : int
    parameterization : {"ntk", "standard"}

    Returns
    -------
    widths : list of int, sorted

    Raises
    ------
    ValueError
        A width above :data:`MAX_WIDTH`, a depth above :data:`MAX_DEPTH`, ``n_records`` above
        :data:`MAX_RECORDS` (or other malformed values).
    MemoryError
        The widest network needs more than ``MAX_OUTPUT_MEMORY_FRACTION`` of the memory available
        now; the message names the largest width that fits.
    """
    ws = _check_widths(widths)
    L = _check_depth(depth)
    T = _check_records(n_records)
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    s = _Sizes(
        int(n_train), int(n_test), int(n_features), int(n_outputs), L, T, int(n_outputs) > 1, parameterization == "ntk"
    )
    avail = available_memory()
    limit = MAX_OUTPUT_MEMORY_FRACTION * avail
    need = _width_memory(s, ws[-1])
    if need > limit:
        lo, hi = 0, ws[-1]  # the largest width that fits, by bisection (memory grows with width)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _width_memory(s, mid) <= limit else (lo, mid)
        fits = (
            f"; the largest width that fits is about {lo}"
            if lo >= 1
            else "; no width fits: use fewer training or test points"
        )
        raise MemoryError(
            f"width {ws[-1]} (depth {L}, {n_train} train / {n_test} test points, {n_records} records) needs about "
            f"{fmt_bytes(need)} of memory, but only {fmt_bytes(avail)} is available and a sweep may use "
            f"{MAX_OUTPUT_MEMORY_FRACTION:.0%} of it{fits}"
        )
    return ws


def default_record_steps(steps: int, n_records: int) -> np.ndarray:
    """``0`` and about ``n_records - 1`` log-spaced integer steps up to ``steps`` (unique, sorted).

    Log spacing resolves the fast modes of the first steps and the slow ones of the last
    equally, as the loss curves are drawn on a log step axis. Never more than ``steps + 1``.
    """
    if steps == 0:
        return np.array([0], dtype=np.int64)
    grid = np.round(np.geomspace(1, steps, max(n_records - 1, 1))).astype(np.int64)
    return np.unique(np.concatenate([[0], grid, [steps]]))


def _given(t, name: str, rows: int) -> None:
    """A TypeError for targets left out (``None`` would read as an array of dtype object)."""
    if t is None:
        raise TypeError(f"{name} is None: compare needs its targets, an array of shape ({rows},) or ({rows}, k)")


def _targets(y, n_rows, name, k=None) -> np.ndarray:
    _given(y, name, n_rows)
    arr = np.asarray(y)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n_rows or (k is not None and arr.shape[1] != k):
        want = f"({n_rows},) or ({n_rows}, k)" if k is None else f"({n_rows},) or ({n_rows}, {k})"
        raise ValueError(f"{name} must have shape {want}, got {np.shape(y)}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinity; remove or impute them first")
    return arr


def _class_labels(y, y_test, n_rows, n_test):
    """Cross-entropy targets: ``(labels (N,), labels_test (M,), k)``.

    Integer labels of shape (N,) give ``k`` = the number of classes (softmax, ``k >= 2``); one-hot
    rows (N, k) give their ``k``; a 0/1 column (N, 1) gives ``k = 1`` (the logistic loss)."""
    out = []
    for t, rows, name in ((y, n_rows, "y"), (y_test, n_test, "y_test")):
        _given(t, name, rows)
        a = np.asarray(t)
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
            raise ValueError(f"{name} must be class labels or one-hot rows, got dtype {a.dtype}")
        if a.shape[:1] != (rows,) or a.ndim not in (1, 2):
            raise ValueError(f"{name} must have shape ({rows},) (labels) or ({rows}, k) (one-hot), got {a.shape}")
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)) or np.any(a < 0):
            raise ValueError(
                f"loss='cross_entropy' needs class labels 0, 1, ..., K-1 (or one-hot rows), but {name} holds other "
                "real numbers: is this a regression data set? Use loss='mse' for it"
            )
        if a.ndim == 2 and a.shape[1] > 1 and not (np.all(a <= 1) and np.all(a.sum(axis=1) == 1)):
            raise ValueError(f"{name} as one-hot rows must hold a single 1 per row and 0 elsewhere")
        out.append(a)
    (a, b) = out
    if a.ndim != b.ndim or (a.ndim == 2 and a.shape[1] != b.shape[1]):
        raise ValueError(f"y and y_test must be targets of the same kind, got shapes {a.shape} and {b.shape}")
    if a.ndim == 2 and a.shape[1] == 1:
        if np.any(a > 1) or np.any(b > 1):
            raise ValueError("a single target column for cross-entropy must hold 0/1 labels (the logistic loss)")
        return a[:, 0].astype(np.int64), b[:, 0].astype(np.int64), 1
    if a.ndim == 2:
        return np.argmax(a, axis=1), np.argmax(b, axis=1), int(a.shape[1])
    k = int(max(a.max(), b.max())) + 1
    if k < 2:
        raise ValueError("cross-entropy needs at least two classes; the labels are all 0")
    return a.astype(np.int64), b.astype(np.int64), k


def check_training(dynamics, learning_rate, lr_fraction, loss, batch_size, n_train, steps):
    """The rule and its learning-rate convention, validated before any work.

    Returns
    -------
    rule : GradientDescent or Adam
        The rule of the sweep; with a ``fraction``, its rate is only a shape (rescaled per kernel).
    fraction : float or None
        The fraction of the rule's critical rate the rate is set to, or None (the rate is absolute).
    """
    from ntksolve.dynamics import Adam, GradientDescent

    if dynamics is not None and not isinstance(dynamics, (GradientDescent, Adam)):
        raise TypeError(
            "dynamics must be a GradientDescent(learning_rate, momentum=..., nesterov=..., "
            f"weight_decay=...) or an Adam(learning_rate, ...), got {dynamics!r}"
        )
    if dynamics is not None and learning_rate is not None:
        raise TypeError(
            f"dynamics={dynamics!r} carries its own learning rate; leave learning_rate out (or pass "
            "lr_fraction to set the rule's rate to a fraction of its critical rate)"
        )
    if learning_rate is not None and (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, numbers.Real)
        or not np.isfinite(learning_rate)
        or learning_rate <= 0
    ):
        raise ValueError(f"learning_rate must be a finite positive number, got {learning_rate!r}")
    if lr_fraction is not None:
        if isinstance(lr_fraction, bool) or not isinstance(lr_fraction, numbers.Real) or not 0 < lr_fraction < 2:
            raise ValueError(
                f"lr_fraction must be in (0, 2) (a fraction of the critical learning rate), got {lr_fraction!r}"
            )
        if learning_rate is not None:
            raise ValueError("give learning_rate (absolute) or lr_fraction (of the critical rate), not both")
        if isinstance(dynamics, Adam):
            raise ValueError(
                f"{dynamics!r} has no critical learning rate (its steps do not scale with the kernel), "
                "so lr_fraction does not apply; give the rate in Adam(learning_rate=...)"
            )
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"batch_size must be an int or None (full batch), got {batch_size!r}")
        if not 0 < batch_size <= n_train:
            raise ValueError(f"batch_size must lie in [1, N = {n_train}] (the training points), got {batch_size}")
    if dynamics is None:
        rule = GradientDescent(1.0 if learning_rate is None else learning_rate)
        fraction = (0.5 if lr_fraction is None else float(lr_fraction)) if learning_rate is None else None
    else:
        rule, fraction = dynamics, (None if lr_fraction is None else float(lr_fraction))
    if isinstance(rule, GradientDescent) and rule.schedule is not None:
        rates = rule.schedule.rates(int(steps))  # an array schedule shorter than the run: refused now
        if fraction is not None and not np.max(rates) > 0:
            raise ValueError(
                f"lr_fraction scales the schedule so that its largest rate over the {int(steps)} steps is that "
                "fraction of the critical rate, but every rate of this schedule over the run is 0: give a "
                "schedule with a positive rate within the run"
            )
    return rule, fraction


__all__ = ["check_training", "check_sweep", "default_record_steps", "MAX_WIDTH", "MAX_DEPTH", "MAX_RECORDS"]
