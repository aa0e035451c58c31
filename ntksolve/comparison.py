"""Width sweeps: really trained networks beside their closed-form predictions.

For each width :func:`compare` initialises one network and

1. predicts its trajectory from its **own empirical NTK** at initialisation (discrete closed form,
   ``docs/conventions.md``; the full ``N x N x k x k`` kernel when ``k > 1``), which is the exact
   twin of gradient descent on the network linearised at initialisation: the gap to real training
   is the linearisation error alone, expected to fall like ``1/width``;
2. predicts it from the **analytic (infinite-width) NTK**, started from the network's own ``f_0``
   (NTK parameterisation only): the gap adds the kernel's fluctuation at initialisation, expected
   to fall like ``width^{-1/2}``;
3. trains it for real from the same parameters (:func:`~ntksolve.train_network`).

The gap is the relative RMSE over the recorded steps and points, ``RMS(f_real - f_pred) / RMS(y)``,
on the training and the test inputs; the slope of each gap against width is the least-squares fit
of ``log gap`` on ``log width``.

A prediction at a learning rate at or above its kernel's critical rate ``2Nk / lambda_max`` grows
without bound (the linearised network diverges) even where the real network, whose kernel moves,
still trains: such a prediction is marked ``"diverges"`` (``status_empirical`` /
``status_analytic`` of a row, with a message naming the critical rate), and its gaps are ``None``
and left out of the slopes. The report records its own state (``"running"`` while the sweep runs,
then ``"complete"``, ``"interrupted"`` or ``"failed"``), so a report written part-way always says
that it is partial.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import numbers
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, List, NamedTuple, Optional, Sequence

import numpy as np

from ntksolve._config import MAX_OUTPUT_MEMORY_FRACTION
from ntksolve._validation import available_memory, check_inputs, fmt_bytes
from ntksolve.dynamics import DivergenceWarning, critical_learning_rate, gradient_descent_mse, mse_loss
from ntksolve.kernels import analytic_kernels, empirical_ntk
from ntksolve.nets.mlp import ACTIVATIONS, MLP, PARAMETERIZATIONS
from ntksolve.training import train_network

#: The gap keys of a row, in table order: (prediction, split).
GAP_KEYS = ("gap_train_empirical", "gap_test_empirical", "gap_train_analytic", "gap_test_analytic")
SLOPE_KEYS = ("slope_train_empirical", "slope_test_empirical", "slope_train_analytic", "slope_test_analytic")
#: The states of a report, in the order a sweep passes through them.
STATES = ("running", "complete", "interrupted", "failed")

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
# the report
# ---------------------------------------------------------------------------------------------
@dataclass
class CompareReport:
    """The result of :func:`compare`.

    Attributes
    ----------
    settings : dict
        Every setting of the sweep (data sizes, network, learning rate, steps, seed, the versions
        of ntksolve and its libraries, timings shared by all widths), JSON-ready.
    rows : list of dict
        One per finished width: gaps, final losses, kernel change, times, ``speedup``, the status
        of each prediction; ``None`` (never NaN) where a value does not exist, with the reason
        beside it (``diverged`` for the real run, ``status_empirical`` / ``status_analytic``).
    trajectories : list of dict
        One per finished width: the recorded ``steps`` and the train/test loss of the real network
        and of both predictions at them (for figures); a prediction that is not ``"ok"`` has no
        curve (``None``).
    state : {"running", "complete", "interrupted", "failed"}
        ``"running"`` until the sweep ends; a report read back with ``"running"`` from a process
        that no longer runs was killed (the widths in ``rows`` are complete).
    message : str
        Why the sweep stopped early (empty when it is running or complete).
    """

    settings: dict
    rows: List[dict] = field(default_factory=list)
    trajectories: List[dict] = field(default_factory=list)
    state: str = "running"
    message: str = ""

    @property
    def interrupted(self) -> bool:
        """``state == "interrupted"``: stopped by ``KeyboardInterrupt``; ``rows`` holds the widths finished before."""
        return self.state == "interrupted"

    @property
    def widths_done(self) -> List[int]:
        return [int(r["width"]) for r in self.rows]

    @property
    def widths_pending(self) -> List[int]:
        done = set(self.widths_done)
        return [int(w) for w in self.settings.get("widths", []) if w not in done]

    def slopes(self) -> dict:
        """Least-squares slope of ``log gap`` against ``log width`` for each gap.

        Only widths whose real run and prediction both converged count; ``None`` with fewer than two."""
        return {s: _loglog_slope(self.rows, g)[0] for s, g in zip(SLOPE_KEYS, GAP_KEYS)}

    def slope_widths(self) -> dict:
        """The widths each slope of :meth:`slopes` was fitted to."""
        return {s: _loglog_slope(self.rows, g)[1] for s, g in zip(SLOPE_KEYS, GAP_KEYS)}

    def to_dict(self) -> dict:
        """JSON-ready dict: ``state``, ``widths_done``/``widths_pending``, the slopes, ``settings``,
        ``rows``, ``trajectories`` (and ``interrupted``, ``state == "interrupted"``)."""
        out = {
            "state": self.state,
            "interrupted": self.interrupted,
            "message": self.message,
            "widths_done": self.widths_done,
            "widths_pending": self.widths_pending,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        out.update(self.slopes())
        out["slope_widths"] = self.slope_widths()
        out["settings"] = self.settings
        out["rows"] = self.rows
        out["trajectories"] = self.trajectories
        return _jsonable(out)

    def write_json(self, path) -> None:
        """Write :meth:`to_dict` to ``path`` atomically: a temporary file in the same folder, flushed
        to disk and renamed over ``path``, so a reader (or a crash) sees the old report or the new one.

        Raises ``OSError`` (disk full, no permission) with ``path`` left as it was."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".json.tmp", dir=folder)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def table(self) -> str:
        """The per-width results as a fixed-width text table, then the fitted slopes and notes."""
        cols = [
            ("width", "width", "{:d}"),
            ("lr", "learning_rate", "{:.3g}"),
            ("gap tr emp", "gap_train_empirical", "{:.2e}"),
            ("gap te emp", "gap_test_empirical", "{:.2e}"),
            ("gap tr ana", "gap_train_analytic", "{:.2e}"),
            ("gap te ana", "gap_test_analytic", "{:.2e}"),
            ("test loss", "loss_test_final_real", "{:.4f}"),
            ("pred emp", "loss_test_final_empirical", "{:.4f}"),
            ("pred ana", "loss_test_final_analytic", "{:.4f}"),
            ("dTheta", "kernel_change_final", "{:.2e}"),
            ("t_pred s", "time_predict", "{:.3f}"),
            ("t_train s", "time_train", "{:.2f}"),
            ("speedup", "speedup", None),
        ]
        pred_cols = {"empirical": (2, 3, 7), "analytic": (4, 5, 8)}
        header = [c[0] for c in cols]
        body = []
        for r in self.rows:
            cells = []
            for _, key, fmt in cols:
                v = r.get(key)
                cells.append("-" if v is None else (_fmt_speedup(v) if fmt is None else fmt.format(v)))
            for pred, idx in pred_cols.items():
                status = r.get(f"status_{pred}", "ok")
                if status not in ("ok", "n/a"):
                    for i in idx:
                        cells[i] = status
            if r.get("diverged"):
                cells[2:10] = ["diverged"] + ["-"] * 7
            body.append(cells)
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
        for b in body:
            lines.append("  ".join(c.rjust(w) for c, w in zip(b, widths)))
        lines.append("")
        n_rows = len(self.rows)
        parts = []
        for k, (v, ws) in zip(SLOPE_KEYS, (_loglog_slope(self.rows, g) for g in GAP_KEYS)):
            used = "" if len(ws) == n_rows else f" ({len(ws)} of {n_rows} widths)"
            parts.append(f"{k[6:]} {_fmt_opt(v, '{:+.3f}')}{used}")
        lines.append("log-log slope of gap vs width:  " + "  ".join(parts))
        lines.append("(theory: analytic-kernel gap ~ width^-1/2, empirical-kernel gap ~ width^-1; widths whose "
                     "real run or prediction diverged are left out)")
        lines.extend(self._timing_notes())
        lines.extend(self.notes())
        if self.state != "complete":
            lines.append(f"{self.state}: only the widths above finished"
                         + (f" ({', '.join(map(str, self.widths_pending))} not run)" if self.widths_pending else ""))
        return "\n".join(lines)

    def _timing_notes(self) -> List[str]:
        s = self.settings
        one_off = s.get("time_analytic_kernels")
        out = []
        if one_off is not None:
            out.append(f"t_pred is each width's own prediction cost (analytic: its f_0 and trajectory); the analytic "
                       f"kernels and their decomposition, made once and shared by all widths, took {one_off:.3f} s "
                       f"and are counted once, in the sweep total")
        done = [r for r in self.rows if r.get("time_predict") is not None]
        if done:
            t_train = sum(r["time_train"] for r in done)
            t_pred = sum(r["time_predict"] for r in done) + (one_off or 0.0)
            out.append(f"whole sweep: training {t_train:.2f} s, predicting {t_pred:.3f} s"
                       f"{' (one-off included)' if one_off is not None else ''}: {_fmt_speedup(t_train / t_pred)}")
        return out

    def notes(self) -> List[str]:
        """One line per thing that went wrong: diverged runs and predictions (each message once)."""
        out, seen = [], set()
        for r in self.rows:
            for key in ("message_analytic", "message_empirical", "message"):
                msg = r.get(key)
                if not msg:
                    continue
                shared = key == "message_analytic"  # one kernel for every width: the same message
                line = msg if shared else f"width {r['width']}: {msg}"
                if line not in seen:
                    seen.add(line)
                    out.append(line)
        return out


def _fmt_opt(v, fmt):
    return "-" if v is None else fmt.format(v)


def _fmt_speedup(v: float) -> str:
    """Two significant digits below 10 (so 0.04x never prints as 0x), whole numbers above."""
    if v >= 10:
        return f"{v:.0f}x"
    if v >= 1:
        return f"{v:.1f}x"
    return f"{v:.2g}x"


def _prediction_of(gap_key: str) -> str:
    return gap_key.rsplit("_", 1)[1]


def _loglog_slope(rows, key):
    """``(slope, widths used)``: rows whose real run diverged or whose prediction is not ok are left out."""
    pred = _prediction_of(key)
    pts = [(r["width"], r.get(key)) for r in rows
           if not r.get("diverged") and r.get(f"status_{pred}", "ok") == "ok"]
    pts = [(w, g) for w, g in pts if g is not None and np.isfinite(g) and g > 0]
    ws = [int(w) for w, _ in pts]
    if len(set(ws)) < 2:
        return None, ws
    lw = np.log([w for w, _ in pts])
    lg = np.log([g for _, g in pts])
    return float(np.polyfit(lw, lg, 1)[0]), ws


def _jsonable(obj):
    """Convert numpy scalars/arrays and non-finite floats (to ``None``) for strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def default_record_steps(steps: int, n_records: int) -> np.ndarray:
    """``0`` and about ``n_records - 1`` log-spaced integer steps up to ``steps`` (unique, sorted).

    Log spacing resolves the fast modes of the first steps and the slow ones of the last
    equally, as the loss curves are drawn on a log step axis. Never more than ``steps + 1``.
    """
    if steps == 0:
        return np.array([0], dtype=np.int64)
    grid = np.round(np.geomspace(1, steps, max(n_records - 1, 1))).astype(np.int64)
    return np.unique(np.concatenate([[0], grid, [steps]]))


def _rel_rmse(a: np.ndarray, b: np.ndarray, rms_target: float) -> Optional[float]:
    """``sqrt(mean((a - b)^2)) / rms_target`` over every recorded step, point and output.

    Scaled by the largest difference first, so finite outputs give a finite gap (no overflow of
    the squares); ``None`` only for non-finite outputs, which the prediction's status reports."""
    with np.errstate(over="ignore", invalid="ignore"):
        diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
        m = float(np.max(np.abs(diff))) if diff.size else 0.0
        if not np.isfinite(m):
            return None
        if m == 0.0:
            return 0.0
        v = m * float(np.sqrt(np.mean((diff / m) ** 2))) / rms_target
    return v if np.isfinite(v) else None


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
        raise ValueError(f"n_records {n_records} is above the limit of {MAX_RECORDS} recorded steps (MAX_RECORDS): "
                         "each record computes the network's NTK once more")
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
    predict = (_kernel_flops(s, width, s.n_train, s.n_train) + _kernel_flops(s, width, s.n_test, s.n_train)
               + 4.0 * nk**3 + 4.0 * n_records * (s.n_train + s.n_test) * s.n_train * s.n_outputs
               + 2.0 * (s.n_train + s.n_test) * Pw)
    step = 6.0 * s.n_train * Pw
    record = 2.0 * s.n_test * Pw + _kernel_flops(s, width, s.n_train, s.n_train)
    return predict, step, record


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
    floats = (4.0 * P + 4.0 * (N + M) * width * s.depth + 4.0 * nk * nk + float(mk) * nk + shared
              + 6.0 * s.n_records * (N + M) * k)
    return 8.0 * floats


def check_sweep(n_train: int, n_test: int, n_features: int, n_outputs: int, widths, *, depth: int = 1,
                n_records: int = 30, parameterization: str = "ntk") -> List[int]:
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
    s = _Sizes(int(n_train), int(n_test), int(n_features), int(n_outputs), L, T, int(n_outputs) > 1,
               parameterization == "ntk")
    avail = available_memory()
    limit = MAX_OUTPUT_MEMORY_FRACTION * avail
    need = _width_memory(s, ws[-1])
    if need > limit:
        lo, hi = 0, ws[-1]  # the largest width that fits, by bisection (memory grows with width)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _width_memory(s, mid) <= limit else (lo, mid)
        fits = f"; the largest width that fits is about {lo}" if lo >= 1 else \
            "; no width fits: use fewer training or test points"
        raise MemoryError(
            f"width {ws[-1]} (depth {L}, {n_train} train / {n_test} test points, {n_records} records) needs about "
            f"{fmt_bytes(need)} of memory, but only {fmt_bytes(avail)} is available and a sweep may use "
            f"{MAX_OUTPUT_MEMORY_FRACTION:.0%} of it{fits}"
        )
    return ws


# ---------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------
def environment() -> dict:
    """Versions of ntksolve, Python and the numerical libraries, and the BLAS in use.

    ``blas`` is threadpoolctl's description of each BLAS/OpenMP library loaded (name, version,
    threads in effect, architecture), or numpy's build configuration without threadpoolctl."""
    import numba
    import scipy

    import ntksolve

    versions = {"ntksolve": ntksolve.__version__, "python": platform.python_version(), "numpy": np.__version__,
                "scipy": scipy.__version__, "numba": numba.__version__}
    for dist in ("scikit-learn", "threadpoolctl"):
        try:  # the distribution's metadata: importing scikit-learn itself would take longer than the report
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    blas = None
    try:
        from threadpoolctl import threadpool_info

        keys = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "architecture", "prefix")
        blas = [{k: info.get(k) for k in keys if k in info} for info in threadpool_info()]
    except ImportError:  # pragma: no cover - a scikit-learn dependency
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        except Exception:  # noqa: BLE001 - old numpy: no machine-readable configuration
            blas = None
    return {"versions": versions, "platform": platform.platform(), "blas": blas}


# ---------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------
class _Progress:
    """Progress in estimated work (floating-point operations), not steps: a step of width 8192
    costs a hundred times one of width 64, so a bar over steps runs fast and then crawls.

    With tqdm: one bar over the sweep (its ETA from the work done so far) and one per width;
    without it, one plain line per width on stderr."""

    def __init__(self, enabled: bool, works: Sequence[float], widths: Sequence[int], stream=None):
        self.enabled = enabled
        self.works = [float(w) for w in works]
        self.widths = list(widths)
        self.total = float(sum(self.works))
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0.0
        self.bar = self.inner = None
        self._tqdm = None
        self._i = -1
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        self._tqdm = tqdm
        if tqdm is not None:
            self.bar = tqdm(total=self.total, unit="FLOP", unit_scale=True, desc="sweep (estimated work)",
                            file=self.stream, dynamic_ncols=True, position=0)

    def start_width(self, i: int) -> None:
        self._i = i
        w, n = self.widths[i], len(self.widths)
        desc = f"width {w} ({i + 1}/{n})"
        if not self.enabled:
            return
        share = self.works[i] / self.total if self.total else 0.0
        if self.bar is not None:
            self.bar.set_description(f"sweep: {desc}")
            self.inner = self._tqdm(total=self.works[i], unit="FLOP", unit_scale=True, desc=desc, file=self.stream,
                                    dynamic_ncols=True, position=1, leave=False)
        else:
            print(f"{desc}: {share:.1%} of the sweep's estimated work", file=self.stream, flush=True)

    def advance(self, work: float) -> None:
        work = max(float(work), 0.0)
        self.done += work
        if self.bar is not None and work > 0:
            self.bar.update(work)
            if self.inner is not None:
                self.inner.update(work)

    def end_width(self) -> None:
        """Count the rest of the width's estimate (the estimate is not exact) as done."""
        target = sum(self.works[: self._i + 1])
        if target > self.done:
            self.advance(target - self.done)
        if self.inner is not None:
            self.inner.close()
            self.inner = None

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------
class _Sweep(NamedTuple):
    """Everything every width shares."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    depth: int
    activation: str
    weight_std: float
    bias_std: float
    parameterization: str
    k: int
    learning_rate: Optional[float]
    lr_fraction: float
    steps: int
    record_at: np.ndarray
    seed: int
    an_pred: object
    an_k_test: Optional[np.ndarray]
    crit_an: Optional[float]
    rms_train: float
    rms_test: float
    sizes: _Sizes


def compare(
    X,
    y,
    widths: Sequence[int],
    *,
    X_test,
    y_test,
    depth: int = 1,
    activation: str = "relu",
    weight_std: float = 1.0,
    bias_std: float = 0.1,
    parameterization: str = "ntk",
    learning_rate: Optional[float] = None,
    lr_fraction: float = 0.5,
    steps: int = 300,
    n_records: int = 30,
    random_state=0,
    progress: bool = True,
    on_width_done: Optional[Callable[[dict, CompareReport], None]] = None,
    on_state: Optional[Callable[[CompareReport], None]] = None,
) -> CompareReport:
    """Train networks of several widths for real beside their NTK predictions.

    Parameters
    ----------
    X : array_like, shape (N, d)
        Training inputs.
    y : array_like, shape (N,) or (N, k)
        Training targets; ``k`` sets the number of outputs.
    widths : sequence of int
        Hidden widths to sweep (every hidden layer of a network has the same width), at most
        :data:`MAX_WIDTH`.
    X_test : array_like, shape (M, d)
    y_test : array_like, shape (M,) or (M, k)
    depth : int, default 1
        Number of hidden layers ``L``, at most :data:`MAX_DEPTH`.
    activation : str, default "relu"
    weight_std, bias_std : float, default 1.0, 0.1
    parameterization : {"ntk", "standard"}, default "ntk"
        In standard parameterisation there is no analytic kernel: only the empirical prediction
        is made, and the analytic gaps and slopes are ``None`` (``status_analytic = "n/a"``).
    learning_rate : float, optional
        Absolute learning rate for every width. Default: ``lr_fraction`` times the critical rate
        ``2Nk / lambda_max``, of the analytic NTK in NTK parameterisation (one rate for all
        widths), of each network's own empirical NTK in standard parameterisation (whose NTK
        grows with width).
    lr_fraction : float, default 0.5
        In ``(0, 2)``; used when ``learning_rate`` is None.
    steps : int, default 300
        Gradient steps per network.
    n_records : int, default 30
        About this many recorded steps, log-spaced from 0 to ``steps``
        (:func:`default_record_steps`; at most ``steps + 1`` distinct ones, at most
        :data:`MAX_RECORDS`); gaps average over them.
    random_state : int or None, default 0
        Seed. Each width's network is drawn from ``SeedSequence([seed, width])``, so a width's
        result does not depend on which other widths are swept. ``None`` draws fresh entropy,
        recorded in ``settings["random_state"]`` to reproduce the run.
    progress : bool, default True
        Progress bars on stderr in estimated work (tqdm; plain lines if it is not installed).
    on_width_done : callable ``(row, report) -> None``, optional
        Called after each width (it may raise ``KeyboardInterrupt``).
    on_state : callable ``(report) -> None``, optional
        Called whenever the report changes: when the sweep starts (no width done), once the shared
        analytic prediction is ready, after each width, and at the end with the final ``state``
        (for saving it: see :meth:`CompareReport.write_json`). If it raises, the sweep stops
        with ``state = "failed"`` (it is called once more, its errors then ignored) and the error
        propagates.

    Returns
    -------
    CompareReport
        ``.rows`` (one dict per width), ``.slopes()``, ``.to_dict()``, ``.table()``, ``.state``. A
        ``KeyboardInterrupt`` during the sweep returns the report of the widths finished so far
        with ``state = "interrupted"`` instead of propagating; any other exception sets
        ``state = "failed"`` (seen by ``on_state``) and propagates.

    Raises
    ------
    ValueError
        Bad arguments, or widths, depth or records beyond the limits (:func:`check_sweep`).
    MemoryError
        The widest network would not fit in memory (:func:`check_sweep`), before any work.

    Notes
    -----
    A prediction whose learning rate is at or above its kernel's critical rate diverges: its row
    has ``status_empirical`` / ``status_analytic = "diverges"`` and a message naming the critical
    rate, and its gaps and final losses are ``None``; its real network may still train.

    Times per width: ``time_train`` is gradient descent alone (the kernel tracking for
    ``kernel_change`` is excluded and reported as ``time_kernel_tracking``).
    ``time_predict_empirical`` is the network's two empirical NTKs, their decomposition, ``f_0`` and
    the trajectory; ``time_predict_analytic`` is that width's own share of the analytic prediction
    (``f_0`` and the trajectory): the analytic kernels and their decomposition are made once per
    sweep, in ``settings["time_analytic_kernels"]``, and counted once in
    ``settings["speedup_sweep"] = sum(time_train) / (time_analytic_kernels + sum(time_predict))``.
    ``speedup = time_train / time_predict``, with ``time_predict`` the analytic one in NTK
    parameterisation and the empirical one in standard.
    """
    X = check_inputs(X, name="X")
    d = X.shape[1]
    X_test = check_inputs(X_test, name="X_test", n_features=d)
    y = _targets(y, X.shape[0], "y")
    k = y.shape[1]
    y_test = _targets(y_test, X_test.shape[0], "y_test", k)
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if learning_rate is not None and (isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real)
                                      or not np.isfinite(learning_rate) or learning_rate <= 0):
        raise ValueError(f"learning_rate must be a finite positive number, got {learning_rate!r}")
    if isinstance(lr_fraction, bool) or not isinstance(lr_fraction, numbers.Real) or not 0 < lr_fraction < 2:
        raise ValueError(f"lr_fraction must be in (0, 2) (a fraction of the critical learning rate), got {lr_fraction!r}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    ws = check_sweep(X.shape[0], X_test.shape[0], d, k, widths, depth=depth, n_records=n_records,
                     parameterization=parameterization)
    depth = int(depth)
    rms_train = float(np.sqrt(np.mean(y**2)))
    rms_test = float(np.sqrt(np.mean(y_test**2)))
    for rms, what in ((rms_train, "training"), (rms_test, "test")):
        if rms == 0:
            raise ValueError(f"the {what} targets are all zero: the relative gap RMS(f_real - f_pred) / RMS(y) is "
                             "undefined")
    # Build one network now so that bad activation / std values fail before any work.
    MLP((ws[0],) * depth, activation, weight_std, bias_std, parameterization, k)
    if random_state is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    elif isinstance(random_state, (numbers.Integral, np.integer)) and not isinstance(random_state, bool) \
            and random_state >= 0:
        seed = int(random_state)
    else:
        raise ValueError(f"random_state must be None or a non-negative int, got {random_state!r}")
    record_at = default_record_steps(int(steps), int(n_records))

    analytic = MLP((1,), parameterization=parameterization).supports_analytic
    settings = {
        "n_train": int(X.shape[0]), "n_test": int(X_test.shape[0]), "n_features": int(d), "n_outputs": int(k),
        "widths": ws, "depth": depth, "activation": activation, "weight_std": float(weight_std),
        "bias_std": float(bias_std), "parameterization": parameterization, "steps": int(steps),
        "n_records": int(record_at.size), "record_at": record_at.tolist(), "random_state": seed, "dtype": "float64",
        "loss": "1/(2Nk) sum ||f - y||^2", "gap": "RMS over recorded steps and points of f_real - f_pred, / RMS(y)",
        "empirical_kernel": "traced" if k == 1 else "full",
    }
    settings.update(environment())
    report = CompareReport(settings=settings)
    sizes = _Sizes(int(X.shape[0]), int(X_test.shape[0]), int(d), int(k), depth, int(record_at.size), k > 1, analytic)
    works = [_width_work(sizes, w, int(steps), int(record_at.size)) for w in ws]
    bar = None
    t_sweep = time.perf_counter()

    def notify():
        if on_state is not None:
            on_state(report)

    try:
        notify()
        # The analytic prediction is shared by every width: its kernels and decomposition are made once.
        an_pred = an_k_test = crit_an = None
        with _signals_held():  # compilation: an interrupt now is delivered when it is done
            _warm_up(depth, activation, weight_std, bias_std, parameterization, k, X, analytic)
        if analytic:
            t0 = time.perf_counter()
            an_net = MLP((1,) * depth, activation, weight_std, bias_std, "ntk", k)
            kern = analytic_kernels(an_net, X)
            an_k_test = analytic_kernels(an_net, X_test, X).ntk
            crit_an = float(critical_learning_rate(kern.ntk, n_outputs=k))
            lr_shared = float(learning_rate) if learning_rate is not None else lr_fraction * crit_an
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DivergenceWarning)
                an_pred = gradient_descent_mse(kern.ntk, y, lr_shared, dynamics="discrete", method="eigh",
                                               allow_divergence=True)
            settings["critical_learning_rate_analytic"] = crit_an
            settings["time_analytic_kernels"] = time.perf_counter() - t0
        settings["learning_rate"] = float(learning_rate) if learning_rate is not None else (
            an_pred.learning_rate if analytic else None)
        settings["learning_rate_rule"] = (
            "absolute (given)" if learning_rate is not None else
            f"{lr_fraction} x critical rate of the analytic NTK" if analytic else
            f"{lr_fraction} x critical rate of each network's empirical NTK")
        settings["lr_fraction"] = float(lr_fraction) if learning_rate is None else None
        notify()

        sweep = _Sweep(X, y, X_test, y_test, depth, activation, float(weight_std), float(bias_std), parameterization,
                       k, learning_rate, float(lr_fraction), int(steps), record_at, seed, an_pred, an_k_test, crit_an,
                       rms_train, rms_test, sizes)
        bar = _Progress(progress, [p + int(steps) * s + record_at.size * r for p, s, r in works], ws)
        for i, width in enumerate(ws):
            bar.start_width(i)
            row, traj = _one_width(width, sweep, works[i], bar)
            bar.end_width()
            report.rows.append(row)
            report.trajectories.append(traj)
            if on_width_done is not None:
                on_width_done(row, report)
            _sweep_totals(report, t_sweep)
            notify()
    except KeyboardInterrupt:
        report.state = "interrupted"
        report.message = (f"interrupted after {len(report.rows)} of {len(ws)} widths; the finished widths are "
                          "complete")
    except BaseException as exc:
        report.state = "failed"
        report.message = f"failed after {len(report.rows)} of {len(ws)} widths: {type(exc).__name__}: {exc}"
        _sweep_totals(report, t_sweep)
        if bar is not None:
            bar.close()
        try:
            notify()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        raise
    else:
        report.state = "complete"
    finally:
        if bar is not None:
            bar.close()
    _sweep_totals(report, t_sweep)
    notify()
    return report


def _sweep_totals(report: CompareReport, t_sweep: float) -> None:
    s = report.settings
    s["time_sweep"] = time.perf_counter() - t_sweep
    done = [r for r in report.rows if r.get("time_predict") is not None]
    if done:
        t_train = sum(r["time_train"] for r in done)
        t_pred = sum(r["time_predict"] for r in done) + (s.get("time_analytic_kernels") or 0.0)
        s["time_train_total"] = t_train
        s["time_predict_total"] = t_pred
        s["speedup_sweep"] = t_train / t_pred if t_pred > 0 else None


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM until the block ends, then deliver them to their own handlers.

    numba compiles and loads its cache through llvmlite callbacks from C: a ``KeyboardInterrupt``
    raised inside one is swallowed ("Exception ignored on calling ctypes callback"), so the
    interrupt is lost and the sweep runs on, or it leaves LLVM objects half built (a double free
    at exit). Measured: 2 of 25 Ctrl-C in the first half second lost, one crash. Off the main
    thread (where no handler runs) nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: List[int] = []

    def hold(signum, frame):
        pending.append(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        if old is None or old == signal.SIG_IGN:
            continue
        previous[sig] = old
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if pending:
            signal.raise_signal(pending[0])  # its own handler now runs (KeyboardInterrupt, or the default)


def _warm_up(depth, activation, weight_std, bias_std, parameterization, k, X, analytic) -> None:
    """Run every jitted path once on two points, so that numba's one-time compilation (or cache
    load, about 0.5 s) is charged to no width's prediction or training time."""
    net = MLP((2,) * depth, activation, weight_std, bias_std, parameterization, k)
    p = net.init(X.shape[1], random_state=0)
    Xs = X[:2]
    empirical_ntk(net, p, Xs, trace=k == 1)
    empirical_ntk(net, p, Xs, Xs, trace=k == 1)
    train_network(net, p, Xs, np.zeros((2, k)), learning_rate=1e-3, steps=1, X_test=Xs, track_kernel=False)
    if analytic:
        analytic_kernels(net, Xs)
        analytic_kernels(net, Xs, Xs)


def _targets(y, n_rows, name, k=None) -> np.ndarray:
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


def _prediction_status(what: str, lr: float, crit: float, kernel: str, *outputs):
    """``("ok" | "diverges" | "non-finite", message)`` of one prediction.

    At or above the critical rate the closed form's top mode is multiplied by ``|1 - lr lambda/(Nk)| >= 1``
    at every step: the linearised network diverges, whatever the real one does."""
    if lr >= crit:
        return "diverges", (
            f"the {what} prediction diverges: learning rate {lr:.4g} >= the critical rate 2Nk/lambda_max = "
            f"{crit:.4g} of {kernel} ({lr / crit:.3f}x), where the linearised network grows without bound; left "
            f"out of the gaps and slopes (the real network, whose kernel moves, may still train; below {crit:.4g} "
            "the prediction converges)"
        )
    with np.errstate(invalid="ignore"):
        finite = all(o is None or bool(np.all(np.isfinite(o))) for o in outputs)
    if not finite:
        return "non-finite", (f"the {what} prediction has non-finite values (its kernel overflowed: are the inputs "
                              "standardised?); its gaps are left out")
    return "ok", ""


def _one_width(width, sw: _Sweep, work, bar):
    predict_work, step_work, record_work = work
    k = sw.k
    net = MLP((width,) * sw.depth, sw.activation, sw.weight_std, sw.bias_std, sw.parameterization, k)
    params = net.init(sw.X.shape[1], random_state=np.random.default_rng(np.random.SeedSequence([sw.seed, width])))
    full = k > 1
    record_at = sw.record_at

    # -- the empirical prediction: own NTK at init, discrete closed form (exact twin of GD on f_lin)
    t0 = time.perf_counter()
    f0 = net.apply(params, sw.X)
    f0_test = net.apply(params, sw.X_test)
    t_f0 = time.perf_counter() - t0
    t0 = time.perf_counter()
    k_tt = empirical_ntk(net, params, sw.X, trace=not full)
    k_st = empirical_ntk(net, params, sw.X_test, sw.X, trace=not full)
    crit_emp = float(critical_learning_rate(k_tt, n_outputs=k))
    if sw.learning_rate is not None:
        lr = float(sw.learning_rate)
    elif sw.an_pred is not None:
        lr = sw.an_pred.learning_rate
    else:
        lr = sw.lr_fraction * crit_emp
    # Above the critical rate the closed form grows geometrically: compute it quietly, then mark it.
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", DivergenceWarning)
        emp = gradient_descent_mse(k_tt, sw.y, lr, dynamics="discrete", method="eigh", allow_divergence=True)
        fe_train, fe_test = emp(record_at, f0, f0_test, k_st)
    t_emp = time.perf_counter() - t0 + t_f0
    status_emp, msg_emp = _prediction_status("empirical-NTK", lr, crit_emp, "its empirical NTK",
                                             fe_train, fe_test)

    # -- the analytic prediction from the network's own f_0 (its kernels were made once for the sweep)
    fa_train = fa_test = None
    t_an = None
    status_an, msg_an = "n/a", ""
    if sw.an_pred is not None:
        t0 = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):
            fa_train, fa_test = sw.an_pred(record_at, f0, f0_test, sw.an_k_test)
        t_an = time.perf_counter() - t0 + t_f0
        status_an, msg_an = _prediction_status("analytic-NTK", lr, sw.crit_an, "the analytic (infinite-width) NTK",
                                               fa_train, fa_test)
    bar.advance(predict_work)

    # -- real training from the same parameters
    last = [0]

    def tick(step, loss):
        bar.advance((step - last[0]) * step_work + record_work)
        last[0] = step

    res = train_network(net, params, sw.X, sw.y, learning_rate=lr, steps=sw.steps, record_at=record_at,
                        X_test=sw.X_test, y_test=sw.y_test, track_kernel=True, on_divergence="return", callback=tick)

    row = {
        "width": width, "n_params": net.n_params(sw.X.shape[1]), "learning_rate": lr,
        "critical_learning_rate": crit_emp, "critical_learning_rate_analytic": sw.crit_an,
        "diverged": bool(res.diverged), "message": res.message,
        "status_empirical": status_emp, "message_empirical": msg_emp,
        "status_analytic": status_an, "message_analytic": msg_an,
        "time_train": res.wall_time, "time_kernel_tracking": res.kernel_time,
        "time_predict_empirical": t_emp, "time_predict_analytic": t_an,
    }
    t_pred = t_an if t_an is not None else t_emp
    row["time_predict"] = t_pred
    row["speedup"] = res.wall_time / t_pred if not res.diverged else None
    row["speedup_empirical"] = res.wall_time / t_emp if not res.diverged else None
    traj = {"width": width, "steps": record_at.tolist(), "status_empirical": status_emp, "status_analytic": status_an}
    final_keys = ("loss_train_final_real", "loss_test_final_real", "loss_train_final_empirical",
                  "loss_test_final_empirical", "loss_train_final_analytic", "loss_test_final_analytic",
                  "test_loss_rel_error_empirical", "test_loss_rel_error_analytic")
    if res.diverged:
        for key in GAP_KEYS + final_keys + ("kernel_change_final", "kernel_change_max"):
            row[key] = None
        traj["steps"] = res.steps.tolist()
        traj["loss_train_real"] = res.loss_train.tolist()
        traj["loss_test_real"] = res.loss_test.tolist()
        return row, _jsonable(traj)

    row["loss_train_final_real"] = float(res.loss_train[-1])
    row["loss_test_final_real"] = float(res.loss_test[-1])
    traj.update(loss_train_real=res.loss_train, loss_test_real=res.loss_test, kernel_change=res.kernel_change)
    for pred, status, f_tr, f_te in (("empirical", status_emp, fe_train, fe_test),
                                     ("analytic", status_an, fa_train, fa_test)):
        if status != "ok":
            for key in (f"gap_train_{pred}", f"gap_test_{pred}", f"loss_train_final_{pred}",
                        f"loss_test_final_{pred}", f"test_loss_rel_error_{pred}"):
                row[key] = None
            traj[f"loss_train_{pred}"] = traj[f"loss_test_{pred}"] = None
            continue
        l_tr, l_te = mse_loss(f_tr, sw.y), mse_loss(f_te, sw.y_test)
        row[f"gap_train_{pred}"] = _rel_rmse(res.fx_train, f_tr, sw.rms_train)
        row[f"gap_test_{pred}"] = _rel_rmse(res.fx_test, f_te, sw.rms_test)
        row[f"loss_train_final_{pred}"] = float(l_tr[-1])
        row[f"loss_test_final_{pred}"] = float(l_te[-1])
        row[f"test_loss_rel_error_{pred}"] = abs(float(l_te[-1]) / float(res.loss_test[-1]) - 1.0)
        traj[f"loss_train_{pred}"], traj[f"loss_test_{pred}"] = l_tr, l_te
    row["kernel_change_final"] = float(res.kernel_change[-1])
    row["kernel_change_max"] = float(np.max(res.kernel_change))
    return row, _jsonable(traj)


__all__ = ["compare", "check_sweep", "environment", "CompareReport", "default_record_steps", "GAP_KEYS",
           "SLOPE_KEYS", "STATES", "MAX_WIDTH", "MAX_DEPTH", "MAX_RECORDS"]
