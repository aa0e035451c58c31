"""Width sweeps: really trained networks beside their closed-form predictions.

For each width :func:`compare` initialises one network and

1. predicts its trajectory from its **own empirical NTK** at initialisation (discrete closed form,
   ``CONVENTIONS.md``; the full ``N x N x k x k`` kernel when ``k > 1``), which is the exact twin of
   gradient descent on the network linearised at initialisation: the gap to real training is the
   linearisation error alone, expected to fall like ``1/width``;
2. predicts it from the **analytic (infinite-width) NTK**, started from the network's own ``f_0``
   (NTK parameterisation only): the gap adds the kernel's fluctuation at initialisation, expected
   to fall like ``width^{-1/2}``;
3. trains it for real from the same parameters (:func:`~ntksolve.train_network`).

The gap is the relative RMSE over the recorded steps and points, ``RMS(f_real - f_pred) / RMS(y)``,
on the training and the test inputs; the slope of each gap against width is the least-squares fit
of ``log gap`` on ``log width``.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

from ntksolve._validation import check_inputs
from ntksolve.dynamics.mse import DivergenceWarning, critical_learning_rate, gradient_descent_mse, mse_loss
from ntksolve.kernels import analytic_kernels, empirical_ntk
from ntksolve.nets.mlp import ACTIVATIONS, MLP, PARAMETERIZATIONS
from ntksolve.training import train_network

#: The gap keys of a row, in table order: (prediction, split).
GAP_KEYS = ("gap_train_empirical", "gap_test_empirical", "gap_train_analytic", "gap_test_analytic")
SLOPE_KEYS = ("slope_train_empirical", "slope_test_empirical", "slope_train_analytic", "slope_test_analytic")


@dataclass
class CompareReport:
    """The result of :func:`compare`.

    Attributes
    ----------
    settings : dict
        Every setting of the sweep (data sizes, network, learning rate, steps, seed, timings
        shared by all widths), JSON-ready.
    rows : list of dict
        One per finished width: gaps, final losses, kernel change, times, ``speedup``; ``None``
        (never NaN) where a value does not exist (a diverged run, no analytic kernel).
    trajectories : list of dict
        One per finished width: the recorded ``steps`` and the train/test loss of the real network
        and of both predictions at them (for figures).
    interrupted : bool
        The sweep was stopped by ``KeyboardInterrupt``; ``rows`` holds the widths finished before.
    """

    settings: dict
    rows: List[dict] = field(default_factory=list)
    trajectories: List[dict] = field(default_factory=list)
    interrupted: bool = False

    def slopes(self) -> dict:
        """Least-squares slope of ``log gap`` against ``log width`` for each gap (``None`` if < 2 widths)."""
        return {s: _loglog_slope(self.rows, g) for s, g in zip(SLOPE_KEYS, GAP_KEYS)}

    def to_dict(self) -> dict:
        """JSON-ready dict: top-level slopes, ``settings``, ``rows``, ``trajectories``, ``interrupted``."""
        out = dict(self.slopes())
        out["interrupted"] = self.interrupted
        out["settings"] = self.settings
        out["rows"] = self.rows
        out["trajectories"] = self.trajectories
        return _jsonable(out)

    def write_json(self, path) -> None:
        """Write :meth:`to_dict` to ``path`` atomically (a temporary file in the same folder, renamed)."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".json.tmp", dir=folder)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_dict(), fh, indent=2, allow_nan=False)
                fh.write("\n")
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def table(self) -> str:
        """The per-width results as a fixed-width text table, then the fitted slopes."""
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
            ("speedup", "speedup", "{:.0f}x"),
        ]
        lines = []
        header = [c[0] for c in cols]
        body = []
        for r in self.rows:
            cells = []
            for _, key, fmt in cols:
                v = r.get(key)
                cells.append("-" if v is None else fmt.format(v))
            if r.get("diverged"):
                cells[2:10] = ["diverged"] + ["-"] * 7
            body.append(cells)
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
        lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        for b in body:
            lines.append("  ".join(c.rjust(w) for c, w in zip(b, widths)))
        slopes = self.slopes()
        lines.append("")
        lines.append(
            "log-log slope of gap vs width:  "
            + "  ".join(f"{k[6:]} {_fmt_opt(v, '{:+.3f}')}" for k, v in slopes.items())
        )
        lines.append("(theory: analytic-kernel gap ~ width^-1/2, empirical-kernel gap ~ width^-1)")
        for r in self.rows:
            if r.get("diverged"):
                lines.append(f"width {r['width']}: {r['message']}")
        if self.interrupted:
            lines.append("interrupted: only the widths above finished")
        return "\n".join(lines)


def _fmt_opt(v, fmt):
    return "-" if v is None else fmt.format(v)


def _loglog_slope(rows, key) -> Optional[float]:
    pts = [(r["width"], r.get(key)) for r in rows if not r.get("diverged")]
    pts = [(w, g) for w, g in pts if g is not None and np.isfinite(g) and g > 0]
    if len({w for w, _ in pts}) < 2:
        return None
    lw = np.log([w for w, _ in pts])
    lg = np.log([g for _, g in pts])
    return float(np.polyfit(lw, lg, 1)[0])


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
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def default_record_steps(steps: int, n_records: int) -> np.ndarray:
    """``0`` and about ``n_records - 1`` log-spaced integer steps up to ``steps`` (unique, sorted).

    Log spacing resolves the fast modes of the first steps and the slow ones of the last
    equally, as the loss curves are drawn on a log step axis.
    """
    if steps == 0:
        return np.array([0], dtype=np.int64)
    grid = np.round(np.geomspace(1, steps, max(n_records - 1, 1))).astype(np.int64)
    return np.unique(np.concatenate([[0], grid, [steps]]))


def _rel_rmse(a: np.ndarray, b: np.ndarray, rms_target: float) -> Optional[float]:
    """``sqrt(mean((a - b)^2)) / rms_target`` over every recorded step, point and output.

    ``None`` if it is not finite (a prediction at a rate above its kernel's critical one)."""
    with np.errstate(over="ignore", invalid="ignore"):
        v = float(np.sqrt(np.mean((a - b) ** 2)) / rms_target)
    return v if np.isfinite(v) else None


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
    return sorted(int(w) for w in ws)


class _Progress:
    """A tqdm bar over all training steps of the sweep, or plain lines on stderr without tqdm."""

    def __init__(self, enabled: bool, total: int, stream=None):
        self.enabled = enabled
        self.bar = None
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self.bar = tqdm(total=total, unit="step", desc="compare", file=self.stream, dynamic_ncols=True)

    def describe(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description(text)
        else:
            print(text, file=self.stream, flush=True)

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None and n > 0:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
) -> CompareReport:
    """Train networks of several widths for real beside their NTK predictions.

    Parameters
    ----------
    X : array_like, shape (N, d)
        Training inputs.
    y : array_like, shape (N,) or (N, k)
        Training targets; ``k`` sets the number of outputs.
    widths : sequence of int
        Hidden widths to sweep (every hidden layer of a network has the same width).
    X_test : array_like, shape (M, d)
    y_test : array_like, shape (M,) or (M, k)
    depth : int, default 1
        Number of hidden layers ``L``.
    activation : str, default "relu"
    weight_std, bias_std : float, default 1.0, 0.1
    parameterization : {"ntk", "standard"}, default "ntk"
        In standard parameterisation there is no analytic kernel: only the empirical prediction
        is made, and the analytic gaps and slopes are ``None``.
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
        (:func:`default_record_steps`); gaps average over them.
    random_state : int or None, default 0
        Seed. Each width's network is drawn from ``SeedSequence([seed, width])``, so a width's
        result does not depend on which other widths are swept. ``None`` draws fresh entropy,
        recorded in ``settings["random_state"]`` to reproduce the run.
    progress : bool, default True
        A tqdm progress bar on stderr (plain lines if tqdm is not installed).
    on_width_done : callable ``(row, report) -> None``, optional
        Called after each width (saving partial results; it may raise ``KeyboardInterrupt``).

    Returns
    -------
    CompareReport
        ``.rows`` (one dict per width), ``.slopes()``, ``.to_dict()``, ``.table()``. A
        ``KeyboardInterrupt`` during the sweep returns the report of the widths finished so far
        with ``interrupted=True`` instead of propagating.

    Notes
    -----
    Times per width: ``time_train`` is gradient descent alone (the kernel tracking for
    ``kernel_change`` is excluded and reported as ``time_kernel_tracking``).
    ``time_predict_analytic`` charges each width the whole analytic prediction from scratch (the
    analytic kernels and their decomposition, computed once for the sweep, plus that network's
    ``f_0`` and the trajectory); ``time_predict_empirical`` is the empirical NTKs, ``f_0`` and the
    trajectory. ``speedup = time_train / time_predict``, with ``time_predict`` the analytic one in
    NTK parameterisation and the empirical one in standard.
    """
    ws = _check_widths(widths)
    X = check_inputs(X, name="X")
    d = X.shape[1]
    X_test = check_inputs(X_test, name="X_test", n_features=d)
    y = _targets(y, X.shape[0], "y")
    k = y.shape[1]
    y_test = _targets(y_test, X_test.shape[0], "y_test", k)
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ValueError(f"depth must be a positive int (number of hidden layers), got {depth!r}")
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
    if isinstance(n_records, bool) or not isinstance(n_records, numbers.Integral) or n_records < 2:
        raise ValueError(f"n_records must be an int >= 2, got {n_records!r}")
    rms_train = float(np.sqrt(np.mean(y**2)))
    rms_test = float(np.sqrt(np.mean(y_test**2)))
    if rms_train == 0 or rms_test == 0:
        raise ValueError("the targets are all zero: the relative gap RMS(f_real - f_pred) / RMS(y) is undefined")
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
        "widths": ws, "depth": int(depth), "activation": activation, "weight_std": float(weight_std),
        "bias_std": float(bias_std), "parameterization": parameterization, "steps": int(steps),
        "record_at": record_at.tolist(), "random_state": seed, "dtype": "float64",
        "loss": "1/(2Nk) sum ||f - y||^2", "gap": "RMS over recorded steps and points of f_real - f_pred, / RMS(y)",
        "empirical_kernel": "traced" if k == 1 else "full",
    }

    # The analytic prediction is shared by every width: its kernels and decomposition are made once.
    an_pred = None
    an_shared_time = 0.0
    _warm_up(depth, activation, weight_std, bias_std, parameterization, k, X, analytic)
    if analytic:
        t0 = time.perf_counter()
        kern = analytic_kernels(MLP((1,) * depth, activation, weight_std, bias_std, "ntk", k), X)
        kern_test = analytic_kernels(MLP((1,) * depth, activation, weight_std, bias_std, "ntk", k), X_test, X)
        crit_an = float(critical_learning_rate(kern.ntk, n_outputs=k))
        lr_shared = float(learning_rate) if learning_rate is not None else lr_fraction * crit_an
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)
            an_pred = gradient_descent_mse(kern.ntk, y, lr_shared, dynamics="discrete", method="eigh",
                                           allow_divergence=True)
        an_shared_time = time.perf_counter() - t0
        settings["critical_learning_rate_analytic"] = crit_an
        settings["time_analytic_kernels"] = an_shared_time
    settings["learning_rate"] = float(learning_rate) if learning_rate is not None else (
        lr_shared if analytic else None)
    settings["learning_rate_rule"] = (
        "absolute (given)" if learning_rate is not None else
        f"{lr_fraction} x critical rate of the analytic NTK" if analytic else
        f"{lr_fraction} x critical rate of each network's empirical NTK")
    settings["lr_fraction"] = float(lr_fraction) if learning_rate is None else None

    report = CompareReport(settings=settings)
    bar = _Progress(progress, total=len(ws) * int(steps))
    t_sweep = time.perf_counter()
    try:
        for i, width in enumerate(ws):
            bar.describe(f"width {width} ({i + 1}/{len(ws)})")
            row, traj = _one_width(
                width, X, y, X_test, y_test, depth, activation, weight_std, bias_std, parameterization, k,
                learning_rate, lr_fraction, int(steps), record_at, seed, an_pred,
                kern_test.ntk if analytic else None, an_shared_time, rms_train, rms_test, bar,
            )
            report.rows.append(row)
            report.trajectories.append(traj)
            if on_width_done is not None:
                on_width_done(row, report)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        bar.close()
        report.settings["time_sweep"] = time.perf_counter() - t_sweep
    return report


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


def _one_width(width, X, y, X_test, y_test, depth, activation, weight_std, bias_std, parameterization, k,
               learning_rate, lr_fraction, steps, record_at, seed, an_pred, an_k_test, an_shared_time,
               rms_train, rms_test, bar):
    net = MLP((width,) * depth, activation, weight_std, bias_std, parameterization, k)
    params = net.init(X.shape[1], random_state=np.random.default_rng(np.random.SeedSequence([seed, width])))
    full = k > 1

    # -- the empirical prediction: own NTK at init, discrete closed form (exact twin of GD on f_lin)
    t0 = time.perf_counter()
    f0 = net.apply(params, X)
    f0_test = net.apply(params, X_test)
    t_f0 = time.perf_counter() - t0
    t0 = time.perf_counter()
    k_tt = empirical_ntk(net, params, X, trace=not full)
    k_st = empirical_ntk(net, params, X_test, X, trace=not full)
    crit_emp = float(critical_learning_rate(k_tt, n_outputs=k))
    if learning_rate is not None:
        lr = float(learning_rate)
    elif an_pred is not None:
        lr = an_pred.learning_rate
    else:
        lr = lr_fraction * crit_emp
    # Above the critical rate the closed form grows geometrically, as real training does: compute it
    # quietly (the row reports the divergence from real training, and non-finite values never reach it).
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", DivergenceWarning)
        emp = gradient_descent_mse(k_tt, y, lr, dynamics="discrete", method="eigh", allow_divergence=True)
        fe_train, fe_test = emp(record_at, f0, f0_test, k_st)
    t_emp = time.perf_counter() - t0 + t_f0

    # -- the analytic prediction from the network's own f_0
    fa_train = fa_test = None
    t_an = None
    if an_pred is not None:
        t0 = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):
            fa_train, fa_test = an_pred(record_at, f0, f0_test, an_k_test)
        t_an = time.perf_counter() - t0 + t_f0 + an_shared_time

    # -- real training from the same parameters
    last = [0]

    def tick(step, loss):
        bar.advance(step - last[0])
        last[0] = step

    res = train_network(net, params, X, y, learning_rate=lr, steps=steps, record_at=record_at, X_test=X_test,
                        y_test=y_test, track_kernel=True, on_divergence="return", callback=tick)
    bar.advance(steps - last[0])

    row = {
        "width": width, "n_params": net.n_params(X.shape[1]), "learning_rate": lr,
        "critical_learning_rate": crit_emp, "diverged": bool(res.diverged), "message": res.message,
        "time_train": res.wall_time, "time_kernel_tracking": res.kernel_time,
        "time_predict_empirical": t_emp, "time_predict_analytic": t_an,
    }
    t_pred = t_an if t_an is not None else t_emp
    row["time_predict"] = t_pred
    row["speedup"] = res.wall_time / t_pred if not res.diverged else None
    row["speedup_empirical"] = res.wall_time / t_emp if not res.diverged else None
    traj = {"width": width, "steps": record_at.tolist()}
    if res.diverged:
        for key in GAP_KEYS + ("loss_train_final_real", "loss_test_final_real", "loss_train_final_empirical",
                               "loss_test_final_empirical", "loss_train_final_analytic",
                               "loss_test_final_analytic", "test_loss_rel_error_empirical",
                               "test_loss_rel_error_analytic", "kernel_change_final"):
            row[key] = None
        traj["steps"] = res.steps.tolist()
        traj["loss_train_real"] = res.loss_train.tolist()
        traj["loss_test_real"] = res.loss_test.tolist()
        return row, traj

    le_train, le_test = mse_loss(fe_train, y), mse_loss(fe_test, y_test)
    row["gap_train_empirical"] = _rel_rmse(res.fx_train, fe_train, rms_train)
    row["gap_test_empirical"] = _rel_rmse(res.fx_test, fe_test, rms_test)
    row["loss_train_final_real"] = float(res.loss_train[-1])
    row["loss_test_final_real"] = float(res.loss_test[-1])
    row["loss_train_final_empirical"] = float(le_train[-1])
    row["loss_test_final_empirical"] = float(le_test[-1])
    row["test_loss_rel_error_empirical"] = abs(float(le_test[-1]) / float(res.loss_test[-1]) - 1.0)
    traj.update(loss_train_real=res.loss_train, loss_test_real=res.loss_test, loss_train_empirical=le_train,
                loss_test_empirical=le_test, kernel_change=res.kernel_change)
    if fa_train is not None:
        la_train, la_test = mse_loss(fa_train, y), mse_loss(fa_test, y_test)
        row["gap_train_analytic"] = _rel_rmse(res.fx_train, fa_train, rms_train)
        row["gap_test_analytic"] = _rel_rmse(res.fx_test, fa_test, rms_test)
        row["loss_train_final_analytic"] = float(la_train[-1])
        row["loss_test_final_analytic"] = float(la_test[-1])
        row["test_loss_rel_error_analytic"] = abs(float(la_test[-1]) / float(res.loss_test[-1]) - 1.0)
        traj.update(loss_train_analytic=la_train, loss_test_analytic=la_test)
    else:
        for key in ("gap_train_analytic", "gap_test_analytic", "loss_train_final_analytic",
                    "loss_test_final_analytic", "test_loss_rel_error_analytic"):
            row[key] = None
    row["kernel_change_final"] = float(res.kernel_change[-1])
    row["kernel_change_max"] = float(np.max(res.kernel_change))
    return row, _jsonable(traj)


__all__ = ["compare", "CompareReport", "default_record_steps", "GAP_KEYS", "SLOPE_KEYS"]
