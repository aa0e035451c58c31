"""Width sweeps: really trained networks beside their linear predictions.

For each width :func:`compare` initialises one network and

1. predicts its trajectory from its **own empirical NTK** at initialisation (the full
   ``N x N x k x k`` kernel when ``k > 1``) by the exact twin of its training rule on the network
   linearised at initialisation (:mod:`ntksolve.twins`: the closed form for gradient descent on
   full-batch MSE, momentum, schedules and weight decay included; the function-space recurrence for
   minibatches and cross-entropy): the gap to real training is the linearisation error alone,
   expected to fall like ``1/width``;
2. predicts it from the **analytic (infinite-width) NTK**, started from the network's own ``f_0``
   (NTK parameterisation only; not with weight decay, which needs ``J theta_0``): the gap adds the
   kernel's fluctuation at initialisation, expected to fall like ``width^{-1/2}``;
3. trains it for real from the same parameters and the same batch order
   (``trainer``: :func:`~ntksolve.train_network`, or PyTorch's or scikit-learn's optimisers).

Adam has no kernel twin: its "predictions" are the loss-matched gradient flow of
:mod:`ntksolve.twins`, the closest linear path, and their gaps say how far Adam's path is from it.

The gap is the relative RMSE over the recorded steps and points, ``RMS(f_real - f_pred) / RMS(y)``
(for cross-entropy on the logits, over ``RMS(f_real - f_0)``), on the training and the test
inputs; the slope of each gap against width is the least-squares fit of ``log gap`` on
``log width``.

A prediction at a learning rate at or above its kernel's critical rate ``2Nk / lambda_max`` (the
rule's own, with momentum or weight decay) grows without bound (the linearised network diverges)
even where the real network, whose kernel moves, still trains: such a prediction is marked
``"diverges"`` (``status_empirical`` / ``status_analytic`` of a row, with a message naming the
critical rate), and its gaps are ``None`` and left out of the slopes. The report records its own
state (``"running"`` while the sweep runs, then ``"complete"``, ``"interrupted"`` or ``"failed"``),
so a report written part-way always says that it is partial.
"""

from __future__ import annotations

import contextlib
import numbers
import signal
import threading
import time
from typing import Callable, List, Optional, Sequence

import numpy as np

from ntksolve._validation import check_inputs
from ntksolve.dynamics import Adam, GradientDescent, critical_learning_rate
from ntksolve.dynamics.descent_modes import rule_words
from ntksolve.kernels import analytic_kernels
from ntksolve.nets.layers import check_activation
from ntksolve.nets.mlp import MLP, PARAMETERIZATIONS
from ntksolve.progress import _Progress
from ntksolve.report import GAP_KEYS, LOSS_WORDS, SLOPE_KEYS, STATES, CompareReport, _sweep_totals, environment
from ntksolve.sweep_checks import (
    MAX_DEPTH,
    MAX_RECORDS,
    MAX_WIDTH,
    _class_labels,
    _Sizes,
    _targets,
    _twin_work,
    _width_work,
    check_sweep,
    check_training,
    default_record_steps,
)
from ntksolve.sweep_trainers import sweep_trainer
from ntksolve.sweep_width import _one_width, _Sweep, _warm_up
from ntksolve.twins import CLOSED_FORM, Run, Twin, critical_rate, describe, not_available, peak_rate, rule_at_fraction


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
    lr_fraction: Optional[float] = None,
    dynamics=None,
    loss: str = "mse",
    batch_size: Optional[int] = None,
    steps: int = 300,
    n_records: int = 30,
    random_state=0,
    progress: bool = True,
    on_width_done: Optional[Callable[[dict, CompareReport], None]] = None,
    on_state: Optional[Callable[[CompareReport], None]] = None,
    trainer="numpy",
    network=None,
) -> CompareReport:
    """Train networks of several widths for real beside their NTK predictions.

    Parameters
    ----------
    X : array_like, shape (N, d)
        Training inputs.
    y : array_like
        MSE: targets of shape (N,) or (N, k); ``k`` sets the number of outputs. Cross-entropy:
        class labels (N,) (``k`` = the number of classes, softmax), one-hot rows (N, k), or a 0/1
        column (N, 1) (``k = 1``, the logistic loss).
    widths : sequence of int
        Hidden widths to sweep (every hidden layer of a network has the same width), at most
        :data:`MAX_WIDTH`.
    X_test : array_like, shape (M, d)
    y_test : array_like, shape (M,) or (M, k), of the same kind as ``y``
    depth : int, default 1
        Number of hidden layers ``L``, at most :data:`MAX_DEPTH`.
    activation : str, default "relu"
    weight_std, bias_std : float, default 1.0, 0.1
    parameterization : {"ntk", "standard"}, default "ntk"
        In standard parameterisation there is no analytic kernel: only the empirical prediction
        is made, and the analytic gaps and slopes are ``None`` (``status_analytic = "n/a"``).
    learning_rate : float, optional
        Absolute rate of plain gradient descent for every width (without ``dynamics``).
    lr_fraction : float in (0, 2), optional
        The rate as this fraction of the rule's critical rate (``2Nk/lambda_max`` plain, the
        momentum / weight-decay one of :meth:`GradientDescent.critical_learning_rate` otherwise):
        of the analytic NTK in NTK parameterisation (one rate for all widths), of each network's
        own empirical NTK in standard parameterisation. A schedule keeps its shape and is scaled
        so that its peak is that rate. Default 0.5 when neither ``learning_rate`` nor ``dynamics``
        is given; with ``dynamics`` and no ``lr_fraction`` the rule's own rate is used as is.
    dynamics : GradientDescent or Adam, optional
        The rule of the real runs (``torch.optim.SGD``'s momentum, Nesterov, weight decay, a
        :class:`~ntksolve.dynamics.Schedule` as its learning rate; or ``torch.optim.Adam``).
        Default: plain gradient descent. Its twin on each kernel is chosen by
        :mod:`ntksolve.twins` (closed form, function-space recurrence, or for Adam, which has none,
        the loss-matched gradient flow).
    loss : {"mse", "cross_entropy"}, default "mse"
    batch_size : int, optional
        Minibatches of this size: each width draws one epoch-wise shuffled order
        (:func:`~ntksolve.dynamics.shuffled_batches`, seed ``SeedSequence([seed, width, 1])``),
        used by the real run and by both twins. Default: full batch.
    steps : int, default 300
        Optimiser steps per network.
    n_records : int, default 30
        About this many recorded steps, log-spaced from 0 to ``steps``
        (:func:`default_record_steps`; at most ``steps + 1`` distinct ones, at most
        :data:`MAX_RECORDS`); gaps average over them.
    random_state : int or None, default 0
        Seed. Each width's network is drawn from ``SeedSequence([seed, width])``, so a width's
        result does not depend on which other widths are swept. ``None`` draws fresh entropy,
        recorded in ``settings["random_state"]`` to reproduce the run.
    progress : bool, default True
        Progress on stderr in estimated work (:mod:`ntksolve.progress`: tqdm bars on a terminal).
    on_width_done : callable ``(row, report) -> None``, optional
        Called after each width (it may raise ``KeyboardInterrupt``).
    on_state : callable ``(report) -> None``, optional
        Called whenever the report changes: when the sweep starts (no width done), once the shared
        analytic prediction is ready, after each width, and at the end with the final ``state``
        (for saving it: see :meth:`CompareReport.write_json`). If it raises, the sweep stops
        with ``state = "failed"`` (it is called once more, its errors then ignored) and the error
        propagates.
    trainer : {"numpy", "torch", "sklearn"} or callable, default "numpy"
        What trains the real networks (:mod:`ntksolve.sweep_trainers`); in ``settings["trainer"]``.
    network : callable, optional
        Each width's network from ``MLP``'s arguments (default :class:`MLP`), e.g. :func:`ntksolve.cnn.sweep_cnn`.

    Returns
    -------
    CompareReport
        ``.rows`` (one dict per width), ``.slopes()``, ``.to_dict()``, ``.table()``, ``.state``. A
        ``KeyboardInterrupt`` during the sweep returns the report of the widths finished so far
        with ``state = "interrupted"`` instead of propagating; any other exception sets
        ``state = "failed"`` (seen by ``on_state``) and propagates.

    Raises
    ------
    TypeError
        ``dynamics`` not a GradientDescent or an Adam, or given with ``learning_rate``.
    ValueError
        Bad arguments (cross-entropy targets that are not labels, ``lr_fraction`` with Adam or with
        ``learning_rate``, ``batch_size`` outside ``[1, N]``), widths, depth or records beyond
        the limits (:func:`check_sweep`), or a run the ``trainer`` cannot do exactly.
    ImportError
        ``trainer``'s framework is not installed (naming the extra).
    MemoryError
        The widest network would not fit in memory (:func:`check_sweep`), before any work.

    Notes
    -----
    A prediction whose rule diverges on its kernel (at or above the critical rate, a schedule
    that grows a mode, a recurrence whose loss grows a millionfold) has ``status_empirical`` /
    ``status_analytic = "diverges"`` and a message saying why, and its gaps and final losses are
    ``None``; its real network may still train. Weight decay has no analytic twin
    (``status_analytic = "n/a"`` with the reason).

    Cross-entropy rows add the accuracies and ``accuracy_test_diff_*`` (predicted minus real, last step).

    Times per width: ``time_train`` is the real run alone (the kernel tracking for
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
    rule, fraction = check_training(dynamics, learning_rate, lr_fraction, loss, batch_size, X.shape[0], steps)
    if loss == "mse":
        y = _targets(y, X.shape[0], "y")
        k = y.shape[1]
        y_test = _targets(y_test, X_test.shape[0], "y_test", k)
    else:
        y, y_test, k = _class_labels(y, y_test, X.shape[0], X_test.shape[0])
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    check_activation(activation)
    ws = check_sweep(
        X.shape[0], X_test.shape[0], d, k, widths, depth=depth, n_records=n_records, parameterization=parameterization
    )
    depth = int(depth)
    rms_train = rms_test = None
    if loss == "mse":
        rms_train = float(np.sqrt(np.mean(y**2)))
        rms_test = float(np.sqrt(np.mean(y_test**2)))
        for rms, what in ((rms_train, "training"), (rms_test, "test")):
            if rms == 0:
                raise ValueError(
                    f"the {what} targets are all zero: the relative gap RMS(f_real - f_pred) / RMS(y) is undefined"
                )
    build = MLP if network is None else network
    net0 = build((ws[0],) * depth, activation, weight_std, bias_std, parameterization, k)  # bad values fail now
    trainer = sweep_trainer(trainer, net0, rule, loss=loss, n_outputs=k)
    if random_state is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    elif (
        isinstance(random_state, (numbers.Integral, np.integer))
        and not isinstance(random_state, bool)
        and random_state >= 0
    ):
        seed = int(random_state)
    else:
        raise ValueError(f"random_state must be None or a non-negative int, got {random_state!r}")
    record_at = default_record_steps(int(steps), int(n_records))
    N, size = int(X.shape[0]), int(X.shape[0]) * int(k)

    analytic = MLP((1,), parameterization=parameterization).supports_analytic
    settings = {
        "n_train": N,
        "n_test": int(X_test.shape[0]),
        "n_features": int(d),
        "n_outputs": int(k),
        "widths": ws,
        "depth": depth,
        "activation": activation,
        "weight_std": float(weight_std),
        "bias_std": float(bias_std),
        "parameterization": parameterization,
        "steps": int(steps),
        "n_records": int(record_at.size),
        "record_at": record_at.tolist(),
        "random_state": seed,
        "dtype": "float64",
        "loss": LOSS_WORDS[loss],
        "gap": "RMS over recorded steps and points of f_real - f_pred, / RMS(y)"
        if loss == "mse"
        else "RMS over recorded steps and points of the logits f_real - f_pred, / RMS(f_real - f_0)",
        "empirical_kernel": "traced" if k == 1 else "full",
    }
    run0 = Run(rule, loss, batch_size, record_at, y, y_test, k)
    settings.update(
        loss_function=loss,
        batch_size=batch_size,
        twin=describe(run0),
        batches=None
        if batch_size is None
        else "epoch-wise shuffled (shuffled_batches), one order per width from SeedSequence([seed, width, 1]), "
        "shared by the real run and both twins",
    )
    settings.update(trainer.settings(), **environment())
    report = CompareReport(settings=settings)
    sizes = _Sizes(N, int(X_test.shape[0]), int(d), int(k), depth, int(record_at.size), k > 1, analytic)
    works = [_width_work(sizes, w, int(steps), int(record_at.size)) for w in ws]
    if run0.kind != CLOSED_FORM:
        works = [(p + _twin_work(sizes, int(steps), batch_size, analytic), s, r) for p, s, r in works]
    bar = None
    t_sweep = time.perf_counter()

    def notify():
        if on_state is not None:
            on_state(report)

    try:
        notify()
        # The analytic twin is shared by every width: its kernels and decomposition are made once.
        an_twin = crit_an = None
        with _signals_held():  # compilation: an interrupt now is delivered when it is done
            _warm_up(
                build((2,) * depth, activation, weight_std, bias_std, parameterization, k),
                k,
                X,
                analytic,
                None if run0.plain else run0,
                trainer.train,
            )
        if analytic:
            t0 = time.perf_counter()
            an_net = build((1,) * depth, activation, weight_std, bias_std, "ntk", k)
            kern = analytic_kernels(an_net, X)
            an_k_test = analytic_kernels(an_net, X_test, X).ntk
            crit_plain = float(critical_learning_rate(kern.ntk, n_outputs=k))
            if fraction is not None:  # one rate for every width, from the analytic kernel
                rule, crit_an = rule_at_fraction(rule, fraction, crit_plain, size, int(steps))
            else:
                crit_an = critical_rate(rule, crit_plain, size)
            run = run0._replace(rule=rule)
            if isinstance(rule, GradientDescent) and rule.needs_parameters:
                an_twin = not_available(
                    "no analytic-NTK prediction: weight decay pulls the parameters towards zero, so the outputs feel "
                    "the network's own J theta_0, which the analytic (infinite-width) NTK does not have"
                )
            else:
                an_twin = Twin(
                    run,
                    kern.ntk,
                    an_k_test,
                    what="analytic-NTK",
                    kernel_words="the analytic (infinite-width) NTK",
                    plain_crit=crit_plain,
                )
            settings["critical_learning_rate_analytic"] = crit_an
            settings["time_analytic_kernels"] = time.perf_counter() - t0
        per_width = fraction is not None and not analytic
        settings["learning_rate"] = None if per_width else peak_rate(rule, int(steps))
        of = (
            ""
            if isinstance(rule, Adam) or rule.plain
            else f" ({rule_words(rule)}" + (", the schedule's peak)" if rule.schedule is not None else ")")
        )
        settings["learning_rate_rule"] = (
            "absolute (given)"
            if fraction is None
            else f"{fraction} x critical rate of the analytic NTK{of}"
            if analytic
            else f"{fraction} x critical rate of each network's empirical NTK{of}"
        )
        settings["lr_fraction"] = fraction
        settings["dynamics"] = repr(rule) + (" (its rate set per width)" if per_width else "")
        notify()

        sweep = _Sweep(
            X,
            y,
            X_test,
            y_test,
            depth,
            activation,
            float(weight_std),
            float(bias_std),
            parameterization,
            k,
            rule,
            fraction if per_width else None,
            loss,
            batch_size,
            int(steps),
            record_at,
            seed,
            an_twin,
            crit_an,
            rms_train,
            rms_test,
            sizes,
            trainer,
            build,
        )
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
        report.message = f"interrupted after {len(report.rows)} of {len(ws)} widths; the finished widths are complete"
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


__all__ = [
    "compare",
    "check_sweep",
    "environment",
    "CompareReport",
    "default_record_steps",
    "GAP_KEYS",
    "SLOPE_KEYS",
    "STATES",
    "MAX_WIDTH",
    "MAX_DEPTH",
    "MAX_RECORDS",
]
