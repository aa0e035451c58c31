"""Real training of an imported module in PyTorch, recorded like :func:`ntksolve.train_network`.

:func:`train` runs the user's own optimiser (any ``torch.optim`` optimiser: ``SGD`` with momentum,
Nesterov and weight decay, ``Adam``, ...) on a copy of the module with ``MSELoss``,
``CrossEntropyLoss`` or ``BCEWithLogitsLoss``, full batch or minibatches, with a per-step rate
array or a torch scheduler, and records the outputs on the training and test inputs at the
requested steps. Its loop (:func:`_run`) also runs :func:`~ntksolve.torch.train_network_torch`.

PyTorch's rates and losses map onto ntksolve's by :func:`~ntksolve.torch.learning_rate_from_torch`
(the table of units is in :mod:`ntksolve.torch.units`); the batch orders are in
:mod:`ntksolve.torch.batches`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ntksolve._config import DIVERGENCE_FACTOR
from ntksolve._extras import require
from ntksolve._validation import check_inputs
from ntksolve.dynamics.mse import critical_learning_rate
from ntksolve.kernels.empirical import empirical_ntk
from ntksolve.torch.batches import DataLoaderBatches, _check_batches
from ntksolve.torch.convert import _FLOAT_DTYPES, _read, from_torch
from ntksolve.torch.units import _loss_kind, learning_rate_from_torch
from ntksolve.training import (
    TrainingDivergedError,
    TrainingResult,
    KernelTracker,
    Stopwatch,
    _check_steps,
    _check_targets,
    recorded,
)

torch = require("torch", "torch", "ntksolve.torch (PyTorch interop)")
nn = torch.nn

__all__ = ["train", "learning_rate_from_torch", "DataLoaderBatches", "TorchTrainingResult"]


# ---------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------
@dataclass
class TorchTrainingResult(TrainingResult):
    """What :func:`train` recorded: the fields of :class:`ntksolve.training.TrainingResult`, in
    PyTorch's units, and three more.

    Attributes
    ----------
    steps, fx_train, fx_test, kernel_change, kernel_kind, wall_time, kernel_time, diverged,
    message, n_steps_taken
        As in :class:`~ntksolve.training.TrainingResult` (``fx_*`` the module's outputs: logits
        for a cross-entropy).
    loss_train, loss_test : ndarray, shape (T,)
        The training loss (``loss`` on all training inputs, in PyTorch's units: twice ntksolve's
        for the mean MSE) at each recorded step; ``loss_test`` on ``(X_test, y_test)``.
    net, params
        ``from_torch`` of the trained module: ``net.apply(params, X)`` evaluates it.
    learning_rate : float
        PyTorch's rate at the first step (``optimizer.param_groups[0]["lr"]``).
    critical_learning_rate : float or None
        MSE only: the PyTorch rate at which full-batch gradient descent on the linearised module
        diverges, ``2Nk/lambda_max`` of the empirical NTK at initialisation in PyTorch's units.
    module : torch.nn.Module
        The trained copy (the caller's module is never modified).
    batches : list of ndarray or None
        The index arrays used at each step taken (None: full batch).
    learning_rates : ndarray, shape (n_steps_taken,)
        PyTorch's rate (param group 0) used at each step.
    """

    module: Any = None
    batches: Optional[list] = None
    learning_rates: Optional[np.ndarray] = None


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def _as_array(a, name):
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return a


def _targets(kind, y, n_rows, k, dt, name):
    """Targets as the tensor the loss expects: (n, k) floats (MSE), class indices or (n, k)
    probabilities (cross-entropy)."""
    y = _as_array(y, name)
    if kind == "mse":
        return torch.from_numpy(_check_targets(y, n_rows, k, name, dt))
    if kind == "bce":
        arr = _check_targets(y, n_rows, 1, name, dt)
        if not np.all((arr >= 0) & (arr <= 1)):
            raise ValueError(f"{name} must hold probabilities in [0, 1] (0/1 labels) for BCEWithLogitsLoss")
        return torch.from_numpy(arr)
    arr = np.asarray(y)
    if arr.ndim == 1:
        if arr.shape[0] != n_rows:
            raise ValueError(f"{name} must have {n_rows} class labels, got shape {arr.shape}")
        if not (
            np.issubdtype(arr.dtype, np.integer)
            or (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))
        ):
            raise ValueError(f"{name} must hold integer class indices in [0, {k}) for CrossEntropyLoss")
        if arr.min() < 0 or arr.max() >= k:
            raise ValueError(f"{name} has class indices outside [0, {k}) (the module's {k} outputs)")
        return torch.from_numpy(arr.astype(np.int64))
    if arr.ndim == 2 and arr.shape == (n_rows, k):
        return torch.from_numpy(_check_targets(arr, n_rows, k, name, dt))  # class probabilities
    raise ValueError(
        f"{name} must be class indices of shape ({n_rows},) or class probabilities of shape "
        f"({n_rows}, {k}) for CrossEntropyLoss, got shape {arr.shape}"
    )


def train(
    module,
    X,
    y,
    *,
    optimizer: Callable,
    steps: int,
    loss=None,
    lr_schedule=None,
    batches=None,
    record_at=None,
    X_test=None,
    y_test=None,
    track_kernel: bool = True,
    on_divergence: str = "raise",
    callback: Optional[Callable[[int, float], None]] = None,
) -> TorchTrainingResult:
    """Train a copy of ``module`` in PyTorch and record its outputs, like :func:`ntksolve.train_network`.

    Parameters
    ----------
    module : torch.nn.Sequential
        A module :func:`~ntksolve.torch.from_torch` imports (checked first); never modified.
    X : array_like or tensor, shape (N, d)
    y : array_like or tensor
        MSE: shape (N,) or (N, k). Cross-entropy: class indices (N,) or probabilities (N, k);
        ``BCEWithLogitsLoss``: 0/1 labels (or probabilities) of shape (N,) or (N, 1).
    optimizer : callable ``parameters -> torch.optim.Optimizer``
        E.g. ``functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True,
        weight_decay=1e-4)`` or ``functools.partial(torch.optim.Adam, lr=1e-3)``; called once with
        the copy's parameters. Its ``step()`` must not need a closure.
    steps : int
        Optimiser steps.
    loss : torch.nn.MSELoss, torch.nn.CrossEntropyLoss or torch.nn.BCEWithLogitsLoss, default ``MSELoss()``
        ``BCEWithLogitsLoss`` for a module of one output (the cross-entropy of the logistic function).
    lr_schedule : array_like of float, or callable ``optimizer -> scheduler``, optional
        A per-step rate (length >= ``steps``; it sets every param group's ``lr`` before each
        step), or a torch scheduler factory (e.g. ``lambda o: torch.optim.lr_scheduler.StepLR(o,
        10)``), whose ``step()`` is called after every optimiser step.
    batches : None, sequence of index arrays, or DataLoaderBatches
        None: full batch. A sequence: step ``s`` uses the examples ``batches[s]`` (at least
        ``steps`` entries). :class:`DataLoaderBatches`: the order of a seeded DataLoader.
    record_at : sequence of int, optional
        Strictly increasing steps in ``[0, steps]``; default ``[0, steps]``.
    X_test : array_like, shape (M, d), optional
    y_test : optional (needs ``X_test``), shaped like ``y``
    track_kernel : bool, default True
        Record ``||Theta_t - Theta_0||_F / ||Theta_0||_F`` of ntksolve's empirical NTK of the
        module on ``X`` (traced for ``k = 1``, full otherwise); not counted in ``wall_time``.
    on_divergence : {"raise", "return"}, default "raise"
        When a loss becomes non-finite or the training loss exceeds ``DIVERGENCE_FACTOR`` times
        its scale: raise :class:`~ntksolve.training.TrainingDivergedError` (its ``.result`` holds
        the finite records) or return with ``diverged=True``.
    callback : callable ``(step, loss_train) -> None``, optional
        Called at each recorded step.

    Returns
    -------
    TorchTrainingResult
        ``steps`` (T,), ``fx_train`` (T, N, k), ``fx_test`` (T, M, k) or None, ``loss_train`` (T,),
        ``loss_test`` (T,) or None, ``kernel_change``, the trained ``module`` and ``net, params``,
        the ``batches`` and ``learning_rates`` used.

    Notes
    -----
    The outputs are recorded with the module in its own mode (it has no active dropout: such a
    module is refused) and without gradients. ``fx_train[i]`` is the output after ``steps[i]``
    optimiser steps. To compare with :func:`ntksolve.gradient_descent_mse`, convert the rate with
    :func:`learning_rate_from_torch`.
    """
    reading = _read(module)
    tdt = reading.dtype
    dt = np.dtype(_FLOAT_DTYPES[tdt])
    d, k = reading.n_features, reading.n_outputs
    if loss is None:
        loss = nn.MSELoss()
    kind, _ = _loss_kind(loss)
    if kind == "ce" and k < 2:
        raise ValueError(
            "CrossEntropyLoss needs k >= 2 outputs (a softmax over one output is constant); the "
            f"module has {k}: use BCEWithLogitsLoss for one output"
        )
    if kind == "bce" and k != 1:
        raise ValueError(
            f"BCEWithLogitsLoss here is the cross-entropy of one output; the module has {k} "
            "(use CrossEntropyLoss for several classes)"
        )
    X = check_inputs(_as_array(X, "X"), name="X", n_features=d, dtype=dt)
    N = X.shape[0]
    yt = _targets(kind, y, N, k, dt, "y")
    if X_test is not None:
        X_test = check_inputs(_as_array(X_test, "X_test"), name="X_test", n_features=d, dtype=dt)
        yt_test = None if y_test is None else _targets(kind, y_test, X_test.shape[0], k, dt, "y_test")
    elif y_test is not None:
        raise ValueError("y_test was given without X_test")
    else:
        yt_test = None
    steps, rec = _check_steps(steps, record_at)
    if on_divergence not in ("raise", "return"):
        raise ValueError(f"on_divergence must be 'raise' or 'return', got {on_divergence!r}")
    batch_list = _check_batches(batches, N, steps)
    rates = None
    make_scheduler = None
    if lr_schedule is not None:
        if callable(lr_schedule):
            make_scheduler = lr_schedule
        else:
            rates = np.asarray(lr_schedule, dtype=np.float64)
            if rates.ndim != 1 or rates.shape[0] < steps:
                raise ValueError(
                    f"lr_schedule must be a 1-D array of at least steps={steps} rates (one per step) or "
                    f"a callable optimizer -> scheduler, got shape {rates.shape}"
                )
            if not np.all(np.isfinite(rates[:steps])) or np.any(rates[:steps] < 0):
                raise ValueError("lr_schedule rates must be finite and non-negative")
    if not callable(optimizer) or isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "optimizer must be a factory called with the parameters of the module's copy, e.g. "
            "functools.partial(torch.optim.SGD, lr=0.1), not an optimizer instance (which holds the "
            f"caller's parameters); got {type(optimizer).__name__}"
        )

    model = copy.deepcopy(module)
    opt = optimizer(model.parameters())
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer(parameters) must return a torch.optim.Optimizer, got {type(opt).__name__}")
    scheduler = None
    if make_scheduler is not None:
        scheduler = make_scheduler(opt)
        if not callable(getattr(scheduler, "step", None)):
            raise TypeError(
                f"lr_schedule(optimizer) must return a scheduler with step(), got {type(scheduler).__name__}"
            )
    first_lr = float(rates[0]) if (rates is not None and steps) else float(opt.param_groups[0]["lr"])

    def kernel_now():
        net_s, params_s = from_torch(model)
        return empirical_ntk(net_s, params_s, X, trace=(k == 1))

    per_torch = None if kind != "mse" else learning_rate_from_torch(1.0, loss=loss, n_samples=N, n_outputs=k)

    def critical_rate(theta):
        """Full-batch descent's critical rate on the module's NTK, in PyTorch's units."""
        return float(critical_learning_rate(theta, n_outputs=k)) / per_torch

    def hint(crit):
        if crit is None or not np.isfinite(crit):
            return ". Use a smaller learning rate."
        return (
            f". The learning rate {first_lr:.4g} is {first_lr / crit:.3g} times the critical "
            f"rate {crit:.4g} of full-batch gradient descent on the linearised module (2Nk/lambda_max "
            f"of its empirical NTK at initialisation, in PyTorch's units); use a smaller one "
            f"(e.g. {0.5 * crit:.4g})"
        )

    run = _run(
        model,
        opt,
        scheduler,
        rates,
        loss,
        X,
        yt,
        X_test,
        yt_test,
        rec,
        steps,
        batch_list,
        k,
        kernel_now=kernel_now if track_kernel else None,
        initial_kernel=lambda: empirical_ntk(*from_torch(module), X, trace=(k == 1)),
        critical_rate=critical_rate if kind == "mse" else None,
        hint=hint,
        loss_units=1.0,
        callback=callback,
    )
    net, params = from_torch(model)
    result = TorchTrainingResult(
        **recorded(
            run.n_recorded,
            rec,
            run.fx_train,
            run.fx_test,
            run.loss_train,
            run.loss_test,
            run.kernel_change,
            track_kernel,
            k,
        ),
        net=net,
        params=params,
        learning_rate=first_lr,
        wall_time=run.wall_time,
        kernel_time=run.kernel_time,
        critical_learning_rate=run.critical_learning_rate,
        diverged=run.diverged,
        message=run.message,
        n_steps_taken=run.n_steps_taken,
        module=model,
        batches=None if batch_list is None else batch_list[: run.n_steps_taken],
        learning_rates=run.learning_rates,
    )
    if run.diverged and on_divergence == "raise":
        raise TrainingDivergedError(run.message, result)
    return result


@dataclass
class _Run:
    """What :func:`_run` recorded (buffers of ``T`` records, the first ``n_recorded`` filled)."""

    fx_train: np.ndarray
    fx_test: Optional[np.ndarray]
    loss_train: np.ndarray
    loss_test: Optional[np.ndarray]
    kernel_change: Optional[np.ndarray]
    learning_rates: np.ndarray
    n_recorded: int = 0
    n_steps_taken: int = 0
    diverged: bool = False
    message: str = ""
    wall_time: float = 0.0
    kernel_time: float = 0.0
    critical_learning_rate: Optional[float] = None


def _run(
    model,
    opt,
    scheduler,
    rates,
    loss,
    X,
    yt,
    X_test,
    yt_test,
    rec,
    steps,
    batch_list,
    k,
    *,
    kernel_now,
    initial_kernel,
    critical_rate,
    hint,
    loss_units,
    callback,
) -> _Run:
    """The training loop of :func:`train` (and of :func:`~ntksolve.torch.trainer.train_network_torch`)
    on the module copy ``model`` with its optimiser ``opt``, validated inputs and targets.

    ``kernel_now()`` is the tracked kernel (None: not tracked), ``initial_kernel()`` the kernel at
    initialisation when it is needed only for a divergence message; ``critical_rate(theta)`` turns
    it into the critical rate the message quotes (``critical_rate`` None: there is none),
    ``hint(crit)`` into the message's
    advice; ``loss_units`` divides PyTorch's loss values in messages and in what ``callback`` sees
    (they are recorded as PyTorch computes them).
    """
    dt = X.dtype
    N = X.shape[0]
    device = next(model.parameters()).device  # inputs go where the module is; records come back
    Xt = torch.from_numpy(X).to(device)
    Xt_test = None if X_test is None else torch.from_numpy(X_test).to(device)
    yt = yt.to(device)
    yt_test = None if yt_test is None else yt_test.to(device)
    T = rec.size
    M = 0 if X_test is None else X_test.shape[0]
    run = _Run(
        fx_train=np.empty((T, N, k), dtype=dt),
        fx_test=None if X_test is None else np.empty((T, M, k), dtype=dt),
        loss_train=np.empty(T),
        loss_test=None if yt_test is None else np.empty(T),
        kernel_change=None if kernel_now is None else np.empty(T),
        learning_rates=np.empty(steps),
    )
    tracker = None
    if kernel_now is not None:
        tracker = KernelTracker(kernel_now)
        if critical_rate is not None:
            run.critical_learning_rate = critical_rate(tracker.theta0)

    with torch.no_grad():
        f_init = model(Xt)
        zero_loss = float(loss(torch.zeros_like(f_init), yt))  # the loss of a zero predictor
        loss_scale = max(float(loss(f_init, yt)), zero_loss, float(np.finfo(dt).tiny))

    i_rec = 0
    clock = Stopwatch()

    def stop(s, what):
        if run.critical_learning_rate is None and critical_rate is not None:
            run.critical_learning_rate = critical_rate(initial_kernel())
        run.diverged = True
        run.message = f"training diverged at step {s}: the {what}{hint(run.critical_learning_rate)}"

    def grew(value):
        return (
            f"training loss grew to {value / loss_units:.3g}, over {DIVERGENCE_FACTOR:.0e} times its "
            f"initial scale {loss_scale / loss_units:.3g}"
        )

    for s in range(steps + 1):
        if i_rec < T and rec[i_rec] == s:
            with torch.no_grad():
                f = model(Xt)
                lv = float(loss(f, yt))
            if not np.isfinite(lv) or lv > DIVERGENCE_FACTOR * loss_scale:
                clock.stop()
                stop(s, "training loss became non-finite" if not np.isfinite(lv) else grew(lv))
                break
            run.fx_train[i_rec] = f.cpu().numpy()
            run.loss_train[i_rec] = lv
            if Xt_test is not None:
                with torch.no_grad():
                    ft = model(Xt_test)
                run.fx_test[i_rec] = ft.cpu().numpy()
                if yt_test is not None:
                    run.loss_test[i_rec] = float(loss(ft, yt_test))
            if tracker is not None:
                with clock.paused():
                    run.kernel_change[i_rec] = tracker.change(s)
            i_rec += 1
            if callback is not None:
                with clock.paused():
                    callback(s, lv / loss_units)
        if s == steps:
            break
        if rates is not None:
            for group in opt.param_groups:
                group["lr"] = float(rates[s])
        run.learning_rates[s] = float(opt.param_groups[0]["lr"])
        if batch_list is None:
            xb, yb = Xt, yt
        else:
            idx = torch.from_numpy(batch_list[s]).to(device)
            xb, yb = Xt[idx], yt[idx]
        opt.zero_grad(set_to_none=True)
        out = loss(model(xb), yb)
        out.backward()
        bl = float(out.detach())
        # every full-batch step sees the training loss, as train_network does; a minibatch
        # loss is only checked for being finite (its scale is the batch's)
        if not np.isfinite(bl) or (batch_list is None and bl > DIVERGENCE_FACTOR * loss_scale):
            clock.stop()
            stop(s, "batch loss became non-finite" if not np.isfinite(bl) else grew(bl))
            break
        opt.step()
        if scheduler is not None:
            scheduler.step()
        run.n_steps_taken = s + 1
    if not run.diverged:
        clock.stop()
    run.n_recorded = i_rec
    run.wall_time = clock.seconds
    run.kernel_time = 0.0 if tracker is None else tracker.seconds
    run.learning_rates = run.learning_rates[: run.n_steps_taken].copy()
    return run
