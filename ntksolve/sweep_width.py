"""One width of a sweep of :func:`ntksolve.comparison.compare`: its network, its empirical and
analytic twins, its real training from the same parameters and batches, and its row of the report.

:func:`_one_width` takes the :class:`_Sweep` (everything every width shares) and returns the width's
row and trajectory; :func:`_warm_up` runs every jitted path once before the first width, so no
width is charged numba's compilation.
"""

from __future__ import annotations

import time
import warnings
from typing import NamedTuple, Optional

import numpy as np

from ntksolve.dynamics import Adam, GradientDescent, critical_learning_rate, shuffled_batches
from ntksolve.kernels import analytic_kernels, empirical_ntk
from ntksolve.nets.forward_mode import own_parameter_image
from ntksolve.network_training import train_network
from ntksolve.report import _jsonable, _record_results
from ntksolve.sweep_checks import _Sizes
from ntksolve.twins import (
    MATCHED_FLOW,
    Prediction,
    Run,
    Twin,
    critical_rate,
    not_available,
    peak_rate,
    rule_at_fraction,
)


class _Sweep(NamedTuple):
    """Everything every width shares."""

    X: np.ndarray
    y: np.ndarray  # MSE targets (N, k), or class labels (N,) for cross-entropy
    X_test: np.ndarray
    y_test: np.ndarray
    depth: int
    activation: str
    weight_std: float
    bias_std: float
    parameterization: str
    k: int
    rule: object  # the sweep's GradientDescent or Adam (with a fraction: its rate is a shape)
    fraction: Optional[float]  # set per width from each network's own critical rate, or None
    loss: str
    batch_size: Optional[int]
    steps: int
    record_at: np.ndarray
    seed: int
    an_twin: object  # a Twin, a Prediction saying why there is none, or None (standard parameterisation)
    crit_an: Optional[float]
    rms_train: float
    rms_test: float
    sizes: _Sizes
    trainer: object  # the SweepTrainer of the real runs
    build: object  # the network of a width from MLP's arguments


def _warm_up(net, k, X, analytic, run, train) -> None:
    """Run every jitted path once on two points, so that numba's one-time compilation (or cache
    load) is charged to no width's prediction or training time (``train``: the sweep's
    trainer too). ``run``: the sweep's own rule, loss and batches (momentum, weight decay, ``J theta_0``)."""
    p = net.init(X.shape[1], random_state=0)
    Xs = X[:2]
    empirical_ntk(net, p, Xs, trace=k == 1)
    k2 = empirical_ntk(net, p, Xs, Xs, trace=k == 1)
    for fn in {train_network, train}:
        fn(net, p, Xs, np.zeros((2, k)), learning_rate=1e-3, steps=1, X_test=Xs, track_kernel=False)
    if analytic:
        analytic_kernels(net, Xs)
        analytic_kernels(net, Xs, Xs)
    if run is None or isinstance(run.rule, Adam):  # Adam's twin is numpy and scipy only
        return
    small = run._replace(
        record_at=np.arange(3), y=run.y[:2], y_test=run.y[:2], batch_size=None if run.batch_size is None else 1
    )
    images = None
    if run.rule.needs_parameters:
        images = (own_parameter_image(net, p, Xs),) * 2
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        f0 = net.apply(p, Xs)
        Twin(small, k2, k2, what="", kernel_words="", plain_crit=1.0).predict(
            f0, f0, batches=None if run.batch_size is None else [np.array([0]), np.array([1])], images=images
        )


def _one_width(width, sw: _Sweep, work, bar):
    (predict_work, step_work, record_work), k, N = work, sw.k, sw.X.shape[0]
    net = sw.build((width,) * sw.depth, sw.activation, sw.weight_std, sw.bias_std, sw.parameterization, k)
    params = net.init(sw.X.shape[1], random_state=np.random.default_rng(np.random.SeedSequence([sw.seed, width])))
    full, record_at = k > 1, sw.record_at

    # -- the empirical twin: own NTK at init (for GD on MSE the exact closed form of f_lin)
    t0 = time.perf_counter()
    f0 = net.apply(params, sw.X)
    f0_test = net.apply(params, sw.X_test)
    t_f0 = time.perf_counter() - t0
    t0 = time.perf_counter()
    k_tt = empirical_ntk(net, params, sw.X, trace=not full)
    k_st = empirical_ntk(net, params, sw.X_test, sw.X, trace=not full)
    crit_plain = float(critical_learning_rate(k_tt, n_outputs=k))
    rule = sw.rule
    if sw.fraction is not None:  # standard parameterisation: each network's own critical rate
        rule, crit_emp = rule_at_fraction(rule, sw.fraction, crit_plain, N * k, sw.steps)
    else:
        crit_emp = critical_rate(rule, crit_plain, N * k)
    run = Run(rule, sw.loss, sw.batch_size, record_at, sw.y, sw.y_test, k)
    images = None
    if isinstance(rule, GradientDescent) and rule.needs_parameters:
        images = (own_parameter_image(net, params, sw.X), own_parameter_image(net, params, sw.X_test))
    batches = None
    if sw.batch_size is not None:
        rng = np.random.default_rng(np.random.SeedSequence([sw.seed, width, 1]))
        batches = shuffled_batches(N, sw.batch_size, sw.steps, random_state=rng)
    twin = Twin(run, k_tt, k_st, what="empirical-NTK", kernel_words="its empirical NTK", plain_crit=crit_plain)
    matched = run.kind == MATCHED_FLOW  # Adam: the twin follows the real run's loss, so it comes after
    emp = None if matched else twin.predict(f0, f0_test, batches=batches, images=images)
    t_emp = time.perf_counter() - t0 + t_f0

    # -- the analytic twin from the network's own f_0 (its kernels were made once for the sweep)
    an, t_an = sw.an_twin, None
    pa = an if isinstance(an, Prediction) else not_available("")
    if isinstance(an, Twin) and not matched:
        t0 = time.perf_counter()
        pa = an.predict(f0, f0_test, batches=batches)
        t_an = time.perf_counter() - t0 + t_f0
    bar.advance(predict_work)

    # -- real training from the same parameters (and the same batches)
    last = [0]

    def tick(step, loss):
        bar.advance((step - last[0]) * step_work + record_work)
        last[0] = step

    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported, with its reason
        res = sw.trainer.train(
            net,
            params,
            sw.X,
            sw.y,
            steps=sw.steps,
            dynamics=rule,
            loss=sw.loss,
            batches=batches,
            record_at=record_at,
            X_test=sw.X_test,
            y_test=sw.y_test,
            track_kernel=True,
            on_divergence="return",
            callback=tick,
        )
    if matched:
        if res.diverged:
            emp = pa = not_available("the real run diverged: there is no loss to match")
        else:
            t0 = time.perf_counter()
            emp = twin.predict(f0, f0_test, real_loss=res.loss_train)
            t_emp += time.perf_counter() - t0
            if isinstance(an, Twin):
                t0 = time.perf_counter()
                pa = an.predict(f0, f0_test, real_loss=res.loss_train)
                t_an = time.perf_counter() - t0 + t_f0

    row = {
        "width": width,
        "n_params": net.n_params(sw.X.shape[1]),
        "learning_rate": peak_rate(rule, sw.steps),
        "critical_learning_rate": crit_emp,
        "critical_learning_rate_analytic": sw.crit_an,
        "diverged": bool(res.diverged),
        "message": res.message,
        "status_empirical": emp.status,
        "message_empirical": emp.message,
        "status_analytic": pa.status,
        "message_analytic": pa.message,
        "time_train": res.wall_time,
        "time_kernel_tracking": res.kernel_time,
        "time_predict_empirical": t_emp,
        "time_predict_analytic": t_an,
    }
    row["time_predict"] = t_pred = t_an if t_an is not None else t_emp
    row["speedup"] = res.wall_time / t_pred if not res.diverged else None
    row["speedup_empirical"] = res.wall_time / t_emp if not res.diverged else None
    traj = {"width": width, "steps": record_at.tolist(), "status_empirical": emp.status, "status_analytic": pa.status}
    if sw.loss == "cross_entropy":  # the gap on logits, relative to how far the real logits moved
        scales = (
            (
                float(np.sqrt(np.mean((res.fx_train - f0) ** 2))) or 1.0,
                float(np.sqrt(np.mean((res.fx_test - f0_test) ** 2))) or 1.0,
            )
            if not res.diverged
            else None
        )
    else:
        scales = (sw.rms_train, sw.rms_test)
    _record_results(row, traj, res, {"empirical": emp, "analytic": pa}, scales, sw.loss == "cross_entropy")
    return row, _jsonable(traj)
