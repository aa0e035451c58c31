"""Real training of a network, beside which the closed forms and the function-space twins are judged.

The losses and the step are those of ``docs/conventions.md`` and ``docs/training-rules.md``: the MSE
``L = 1/(2Nk) sum_i ||f(x_i) - y_i||^2`` or the mean cross-entropy (softmax over the ``k`` outputs,
logistic for ``k = 1``), full batch or on the batch of each step, and one rule object for the
optimiser: :class:`~ntksolve.dynamics.rules.GradientDescent` (``torch.optim.SGD``: momentum,
Nesterov, weight decay, a schedule) or :class:`~ntksolve.dynamics.adaptive.Adam`. Plain descent is

    theta_{s+1}   = theta_s - eta grad L(theta_s)

The network's one backward pass (:func:`ntksolve.nets.backward`) carries the loss gradient in the
outputs, ``r = (f - y) / (Nk)`` or ``(softmax(f) - Y) / N`` (one ``(N, k)`` seed), not the ``k``
per-output deltas the kernel needs: with ``g^l = dL/dz^l``::

    g^{L+1} = r
    g^l     = ws_{l+1} (g^{l+1} W^{l+1}) * phi'(z^l)

and :mod:`ntksolve.optimizers` turns ``(g^l)^T h^{l-1}`` and ``sum_i g^l_i`` into each layer's step
(plain descent: ``W^l <- W^l - eta alpha_l (g^l)^T h^{l-1}``, ``b^l <- b^l - eta beta_l sum_i g^l_i``
with ``(alpha_l, beta_l)`` the layer's :attr:`~ntksolve.nets.layers.LayerScales.stored_step`). Every
product is one BLAS GEMM (numpy's).

In NTK parameterisation the stored ``W, b`` are trained. Standard parameterisation trains
``W~ = ws W`` and ``b~ = bs b``; we keep the storage convention of :class:`~ntksolve.MLP` and step
the stored variables by the chain rule, which is exactly the rule on ``(W~, b~)`` (the Jacobian of
:func:`~ntksolve.jacobian` in standard parameterisation is taken with respect to them; weight decay
and Adam's moments act on them too, see :mod:`ntksolve.optimizers`). Where the stored ``b`` cannot
carry the trained ``b~`` (``bias_std = 0``), training runs on :meth:`MLP.trainable()
<ntksolve.MLP.trainable>`, which trains identically; :attr:`TrainingResult.net` is that network,
and ``result.net.apply(result.params, X)`` evaluates the trained model in every case.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ntksolve._validation import check_choice, check_inputs
from ntksolve.dynamics.descent_modes import rule_words
from ntksolve.dynamics.batches import check_batches
from ntksolve.dynamics.function_space import _ce_metrics, _probabilities, _targets
from ntksolve.dynamics.mse import critical_learning_rate, mse_loss
from ntksolve.dynamics.rules import GradientDescent
from ntksolve.dynamics.schedules import as_schedule
from ntksolve.kernels.empirical import empirical_ntk
from ntksolve.nets.backprop import backward
from ntksolve.nets.mlp import MLP, forward
from ntksolve.optimizers import parameter_optimizer, training_rule
from ntksolve.training_records import KernelTracker, Stopwatch, recorded  # noqa: F401  (re-exported)

from ntksolve._config import (  # tunables live in the config module, with their reasons
    DIVERGENCE_FACTOR,
)


class TrainingDivergedError(FloatingPointError):
    """Gradient descent diverged; ``.result`` holds the records up to the last finite step."""

    def __init__(self, message: str, result: "TrainingResult"):
        super().__init__(message)
        self.result = result


@dataclass
class TrainingResult:
    """What :func:`train_network` recorded.

    Attributes
    ----------
    steps : ndarray of int, shape (T,)
        The recorded steps (a prefix of ``record_at`` if training diverged).
    fx_train : ndarray, shape (T, N, k)
        Network outputs on the training inputs at each recorded step.
    fx_test : ndarray, shape (T, M, k), or None
        Outputs on ``X_test``, if given.
    loss_train : ndarray, shape (T,)
        ``1/(2Nk) sum ||f - y||^2`` (or the mean cross-entropy) on all training inputs at each
        recorded step.
    loss_test : ndarray, shape (T,), or None
        The same on ``(X_test, y_test)``, if ``y_test`` was given.
    accuracy_train, accuracy_test : ndarray, shape (T,), or None
        Cross-entropy only: the fraction of argmax (``f > 0`` for ``k = 1``) equal to the label.
    kernel_change : ndarray, shape (T,), or None
        ``||Theta_t - Theta_0||_F / ||Theta_0||_F`` of the empirical NTK on the training inputs
        (``kernel_kind`` says traced or full); ``None`` unless ``track_kernel``.
    kernel_kind : str or None
        ``"traced"`` (``k = 1``, where traced and full agree) or ``"full"`` (``k > 1``).
    net : MLP
        The network whose storage convention ``params`` follow (``net`` itself, except in
        standard parameterisation with ``bias_std = 0``; see the module docstring).
    params : list of (W, b)
        The parameters after the last step taken; ``net.apply(params, X)`` evaluates the trained
        model.
    learning_rate : float
        The rate of the first step.
    wall_time : float
        Seconds spent in gradient descent (forward, backward, update, and the recorded test
        outputs), excluding the kernel tracking.
    kernel_time : float
        Seconds spent computing the kernels for ``kernel_change``.
    critical_learning_rate : float or None
        Gradient descent on MSE: the rule's full-batch critical rate on the empirical NTK at
        initialisation (full kernel if ``k > 1``), ``2Nk / lambda_max`` for plain descent; computed
        when the kernel is tracked or training diverged. None for cross-entropy and Adam.
    diverged : bool
    message : str
        Empty, or why training stopped early.
    loss : str or None
        ``"mse"`` or ``"cross_entropy"`` (None where a trainer does not say).
    dynamics : GradientDescent, Adam or None
        The rule that trained.
    """

    steps: np.ndarray
    fx_train: np.ndarray
    fx_test: Optional[np.ndarray]
    loss_train: np.ndarray
    loss_test: Optional[np.ndarray]
    kernel_change: Optional[np.ndarray]
    kernel_kind: Optional[str]
    net: MLP
    params: list
    learning_rate: float
    wall_time: float
    kernel_time: float = 0.0
    critical_learning_rate: Optional[float] = None
    diverged: bool = False
    message: str = ""
    n_steps_taken: int = field(default=0)
    accuracy_train: Optional[np.ndarray] = None
    accuracy_test: Optional[np.ndarray] = None
    loss: Optional[str] = None
    dynamics: Any = None


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _check_targets(y, n_rows: int, k: int, name: str, dtype) -> np.ndarray:
    arr = np.asarray(y)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape != (n_rows, k):
        raise ValueError(
            f"{name} must have shape ({n_rows},) or ({n_rows}, {k}) to match the inputs and the "
            f"network's {k} output(s), got {np.shape(y)}"
        )
    out = np.ascontiguousarray(arr, dtype=dtype)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or infinity; remove or impute them first")
    return out


def _check_steps(steps, record_at):
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    steps = int(steps)
    if record_at is None:
        return steps, np.array([0, steps], dtype=np.int64) if steps else np.array([0], dtype=np.int64)
    rec = np.asarray(record_at)
    if rec.ndim == 0:
        rec = rec[None]
    if rec.ndim != 1 or rec.size == 0:
        raise ValueError(f"record_at must be a non-empty 1-D sequence of steps, got shape {rec.shape}")
    if not np.issubdtype(rec.dtype, np.integer):
        if not (np.issubdtype(rec.dtype, np.floating) and np.all(np.isfinite(rec)) and np.all(rec == np.round(rec))):
            raise ValueError(f"record_at must contain integer steps (time is counted in steps), got {record_at!r}")
    rec = rec.astype(np.int64)
    if rec[0] < 0 or rec[-1] > steps:
        raise ValueError(f"record_at must lie within [0, steps] = [0, {steps}], got {rec.min()} ... {rec.max()}")
    if np.any(np.diff(rec) <= 0):
        raise ValueError("record_at must be strictly increasing (sorted, no repeats)")
    return steps, rec


# ---------------------------------------------------------------------------------------------
# public
# ---------------------------------------------------------------------------------------------


def _measure(kind, f, target):
    """``(loss, accuracy)`` of outputs ``f`` (n, k): the conventions' MSE (accuracy None), or the
    mean cross-entropy and accuracy against the labels ``target``."""
    if kind == "mse":
        return mse_loss(f, target), None
    loss, acc = _ce_metrics(f[None], target)
    return float(loss[0]), float(acc[0])


def _loss_scale(kind, value, target, k, dt) -> float:
    """The divergence test's scale: the initial loss, or the loss of a zero predictor if larger
    (``0.5 mean(y^2)`` for MSE, ``log k`` (``log 2``) for cross-entropy)."""
    zero = (
        0.5 * float(np.vdot(target, target)) / target.size
        if kind == "mse"
        else _measure(kind, np.zeros((1, k), dtype=dt), target[:1])[0]
    )
    return max(value, zero, np.finfo(dt).tiny)


def _diverged(value, scale) -> str:
    """Why a loss means divergence, or ``""``."""
    if not np.isfinite(value):
        return "loss became non-finite"
    if value > DIVERGENCE_FACTOR * scale:
        return f"loss grew to {value:.3g}, over {DIVERGENCE_FACTOR:.0e} times its initial scale {scale:.3g}"
    return ""


def _seed(kind, f, Y):
    """``g^{L+1} = dL/df`` on the rows ``f`` (n, k): ``(f - y)/(nk)``, or ``(sigma(f) - Y)/n``."""
    dt = f.dtype.type
    if kind == "mse":
        r = f - Y
        r *= dt(1.0 / r.size)
        return r
    r = np.asarray(_probabilities(f), dtype=f.dtype)
    r -= Y
    r *= dt(1.0 / f.shape[0])
    return r


def _rule_critical_rate(rule, theta, k):
    """The rule's critical rate on the empirical NTK ``theta`` (``2Nk/lambda_max`` plain)."""
    plain = float(critical_learning_rate(theta, n_outputs=k))
    if rule.plain:
        return plain
    size = theta.shape[0] * k
    lmax = 2.0 * size / plain if 0.0 < plain < np.inf else 0.0
    return float(rule.critical_learning_rate(lmax, size))


def _divergence_hint(rule, rates, crit, batches):
    if crit is None or not np.isfinite(crit):
        return "; use a smaller learning rate"
    if isinstance(rule, GradientDescent) and rule.plain and batches is None:
        eta = float(rates[0])
        return (
            f". The learning rate {eta:.4g} is {eta / crit:.3g} times the critical learning rate "
            f"2Nk/lambda_max = {crit:.4g} of this network's empirical NTK at initialisation; use a "
            f"learning rate below it (e.g. {0.5 * crit:.4g})"
        )
    eta = float(np.max(rates)) if rates.size else float(rule.learning_rate)
    which = "peak learning rate" if rule.schedule is not None else "learning rate"
    where = "full-batch " if batches is not None else ""
    return (
        f". The {which} {eta:.4g} is {eta / crit:.3g} times the {where}critical learning rate {crit:.4g} of "
        f"{rule_words(rule)} on this network's empirical NTK at initialisation; use a smaller one "
        f"(e.g. {0.5 * crit:.4g})"
    )


def train_network(
    net: MLP,
    params,
    X,
    y,
    *,
    steps: int,
    learning_rate=None,
    dynamics=None,
    loss: str = "mse",
    batches=None,
    record_at=None,
    X_test=None,
    y_test=None,
    track_kernel: bool = True,
    on_divergence: str = "raise",
    callback: Optional[Callable[[int, float], None]] = None,
) -> TrainingResult:
    """Train ``net`` from ``params`` by the rule ``dynamics`` (or plain descent at ``learning_rate``).

    Parameters
    ----------
    net : MLP
    params : list of (W, b)
        Starting parameters (from ``net.init``); never modified.
    X : array_like, shape (N, d)
    y : array_like
        MSE: shape (N,) or (N, k). Cross-entropy: class labels (N,) in ``[0, k)`` or one-hot rows
        (N, k); 0/1 labels for ``k = 1``.
    steps : int
        Number of optimiser steps.
    learning_rate : float or Schedule, optional
        ``eta > 0``: the same as ``dynamics=GradientDescent(eta)``. Full-batch gradient descent on
        MSE converges only below ``2Nk / lambda_max`` of the NTK.
    dynamics : GradientDescent or Adam, optional
        The rule (exactly one of ``learning_rate`` and ``dynamics``): ``torch.optim.SGD`` with
        momentum, Nesterov, weight decay and a :class:`~ntksolve.dynamics.schedules.Schedule`
        (rate of step ``s``: ``Schedule.rates(steps)[s]``), or ``torch.optim.Adam`` / ``AdamW``,
        on the gradient of the loss with respect to the trained parameters (weight decay on all of
        them, biases too). A :class:`~ntksolve.dynamics.rules.GradientFlow` is a TypeError.
    loss : {"mse", "cross_entropy"}, default "mse"
        ``1/(2Nk) sum ||f - y||^2``, or ``torch.nn.CrossEntropyLoss`` over the ``k`` outputs
        (``BCEWithLogitsLoss`` for ``k = 1``), mean over the examples.
    batches : sequence of index arrays, optional
        Step ``s`` uses the training rows ``batches[s]`` only (at least ``steps`` entries, e.g. from
        :func:`~ntksolve.dynamics.shuffled_batches`); the loss is then the batch's (normaliser
        ``|b| k`` for MSE, ``|b|`` for cross-entropy). None: full batch. Records always evaluate the
        whole training and test sets.
    record_at : sequence of int, optional
        Strictly increasing steps in ``[0, steps]`` at which to record outputs, losses and the
        kernel change. Default ``[0, steps]``.
    X_test : array_like, shape (M, d), optional
    y_test : array_like, optional (needs ``X_test``), as ``y``
    track_kernel : bool, default True
        Record ``||Theta_t - Theta_0||_F / ||Theta_0||_F`` (empirical NTK on ``X``; traced for
        ``k = 1``, full for ``k > 1``). Costs one kernel per recorded step, not counted in
        ``wall_time``.
    on_divergence : {"raise", "return"}, default "raise"
        When the training loss becomes non-finite or exceeds ``DIVERGENCE_FACTOR`` times its scale
        (checked every step for full batches; at recorded steps, and every batch loss for being
        finite, with ``batches``): raise :class:`TrainingDivergedError` (whose ``.result`` holds the
        finite records), or return the result with ``diverged=True``. For gradient descent on MSE
        the message names the rule's critical learning rate.
    callback : callable ``(step, loss_train) -> None``, optional
        Called at each recorded step (progress bars; it may raise ``KeyboardInterrupt``).

    Returns
    -------
    TrainingResult
        ``steps`` (T,), ``fx_train`` (T, N, k), ``fx_test`` (T, M, k) or None, ``loss_train`` (T,),
        ``loss_test`` (T,) or None, ``accuracy_train``/``accuracy_test`` (cross-entropy),
        ``kernel_change`` (T,) or None, final ``params``, times.

    Raises
    ------
    TypeError
        Neither or both of ``learning_rate`` and ``dynamics``; a rule that is not a GradientDescent or an Adam.
    ValueError
        Bad inputs (shapes, NaN, ``record_at`` outside ``[0, steps]`` or unsorted, bad rate, a
        schedule shorter than ``steps``, batch indices out of range, cross-entropy targets that
        are not labels or one-hot rows), all before the first step.
    TrainingDivergedError
        The loss diverged and ``on_divergence="raise"``.
    """
    rule = training_rule(learning_rate, dynamics)
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an ntksolve.MLP, got {type(net).__name__}")
    kind = check_choice(loss, "loss", ("mse", "cross_entropy"))
    d, dt = net.check_params(params)
    X = check_inputs(X, name="X", n_features=d, dtype=dt)
    N, k = X.shape[0], net.n_outputs
    if X_test is not None:
        X_test = check_inputs(X_test, name="X_test", n_features=d, dtype=dt)
    elif y_test is not None:
        raise ValueError("y_test was given without X_test")
    if kind == "mse":
        Y = target = _check_targets(y, N, k, "y", dt)
        target_test = None if y_test is None else _check_targets(y_test, X_test.shape[0], k, "y_test", dt)
    else:
        Y, target = _targets(y, N, k, "y")
        Y = Y.astype(dt)
        target_test = None if y_test is None else _targets(y_test, X_test.shape[0], k, "y_test")[1]
    steps, rec = _check_steps(steps, record_at)
    rates = as_schedule(rule.learning_rate).rates(steps)  # an array schedule too short: refused here
    first_rate = float(as_schedule(rule.learning_rate).rates(1)[0])
    batch_list = check_batches(batches, N, steps)
    if on_divergence not in ("raise", "return"):
        raise ValueError(f"on_divergence must be 'raise' or 'return', got {on_divergence!r}")
    with_crit = kind == "mse" and isinstance(rule, GradientDescent)

    train_net = net.trainable()
    # Working copies in the storage convention of train_net (b~ = 0 is b = 0 there).
    work = []
    for W, b in params:
        Wc = np.array(W, dtype=dt, order="C", copy=True)
        bc = np.zeros_like(np.asarray(b, dtype=dt)) if train_net is not net else np.array(b, dtype=dt, copy=True)
        work.append((Wc, bc))
    opt = parameter_optimizer(rule, work, train_net.scales(d))

    T = rec.size
    M = X_test.shape[0] if X_test is not None else 0
    fx_train = np.empty((T, N, k), dtype=dt)
    fx_test = np.empty((T, M, k), dtype=dt) if X_test is not None else None
    loss_train = np.empty(T)
    loss_test = np.empty(T) if target_test is not None else None
    acc_train = np.empty(T) if kind != "mse" else None
    acc_test = np.empty(T) if (kind != "mse" and target_test is not None) else None
    kchange = np.empty(T) if track_kernel else None
    crit = None
    tracker = None
    if track_kernel:
        tracker = KernelTracker(lambda: empirical_ntk(train_net, work, X, trace=(k == 1)))
        if with_crit:
            crit = _rule_critical_rate(rule, tracker.theta0, k)

    loss_scale = None
    diverged, message = False, ""
    i_rec = 0
    s_done = 0
    clock = Stopwatch()

    def stop(s, what):
        nonlocal crit, diverged, message
        diverged = True
        clock.stop()
        if crit is None and with_crit:
            crit = _rule_critical_rate(rule, empirical_ntk(net, params, X, trace=(k == 1)), k)
        message = f"training diverged at step {s}: the {what}{_divergence_hint(rule, rates, crit, batch_list)}"

    for s in range(steps + 1):
        recording = i_rec < T and rec[i_rec] == s
        if batch_list is None or recording or s == 0:
            f, hs, dphis = forward(train_net, work, X, keep=(batch_list is None and s < steps))
            value, acc = _measure(kind, f, target)
            if loss_scale is None:
                loss_scale = _loss_scale(kind, value, target, k, dt)
            if _diverged(value, loss_scale):
                stop(s, _diverged(value, loss_scale))
                break
        if recording:
            fx_train[i_rec] = f
            loss_train[i_rec] = value
            if acc_train is not None:
                acc_train[i_rec] = acc
            if X_test is not None:
                ft = forward(train_net, work, X_test, keep=False)[0]
                fx_test[i_rec] = ft
                if target_test is not None:
                    loss_test[i_rec], a = _measure(kind, ft, target_test)
                    if acc_test is not None:
                        acc_test[i_rec] = a
            if tracker is not None:
                with clock.paused():
                    kchange[i_rec] = tracker.change(s)
            i_rec += 1
            if callback is not None:
                with clock.paused():
                    callback(s, value)
        if s == steps:
            break
        if batch_list is None:
            r = _seed(kind, f, Y)
        else:
            b = batch_list[s]
            fb, hs, dphis = forward(train_net, work, X[b], keep=True)
            r = _seed(kind, fb, Y[b])
            if not np.all(np.isfinite(r)):
                stop(s, "batch loss became non-finite")
                break
        opt.start_step(rates[s])
        # backward() computes g^{l-1} from W^l before it hands over g^l, so W^l may move right away.
        for l, g in backward(train_net, work, dphis, r[:, None, :]):
            opt.update(l - 1, g.reshape(g.shape[0], g.shape[2]), hs[l - 1])
        s_done = s + 1
    if not diverged:
        clock.stop()

    result = TrainingResult(
        **recorded(i_rec, rec, fx_train, fx_test, loss_train, loss_test, kchange, track_kernel, k),
        net=train_net,
        params=work,
        learning_rate=first_rate,
        wall_time=clock.seconds,
        kernel_time=0.0 if tracker is None else tracker.seconds,
        critical_learning_rate=crit,
        diverged=diverged,
        message=message,
        n_steps_taken=s_done,
        accuracy_train=None if acc_train is None else acc_train[:i_rec],
        accuracy_test=None if acc_test is None else acc_test[:i_rec],
        loss=kind,
        dynamics=rule,
    )
    if diverged and on_divergence == "raise":
        raise TrainingDivergedError(message, result)
    return result


__all__ = ["train_network", "TrainingResult", "TrainingDivergedError", "DIVERGENCE_FACTOR"]
