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
import numbers
import signal
import threading
import time
import warnings
from typing import Callable, List, NamedTuple, Optional, Sequence

import numpy as np

from ntksolve._validation import check_inputs
from ntksolve.dynamics import DivergenceWarning, critical_learning_rate, gradient_descent_mse, mse_loss
from ntksolve.kernels import analytic_kernels, empirical_ntk
from ntksolve.nets.layers import check_activation
from ntksolve.nets.mlp import MLP, PARAMETERIZATIONS
from ntksolve.progress import _Progress
from ntksolve.report import (GAP_KEYS, SLOPE_KEYS, STATES, CompareReport, _jsonable, _prediction_status,
                             _rel_rmse, _sweep_totals, environment)
from ntksolve.sweep_checks import (MAX_DEPTH, MAX_RECORDS, MAX_WIDTH, _Sizes, _targets, _width_work, check_sweep,
                                   default_record_steps)
from ntksolve.training import train_network


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
    check_activation(activation)
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
