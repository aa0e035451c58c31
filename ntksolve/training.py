"""Real full-batch gradient descent on a network, beside which the closed forms are judged.

The loss and the step are those of ``docs/conventions.md``::

    L(theta)      = 1/(2Nk) sum_i ||f(x_i) - y_i||^2
    theta_{s+1}   = theta_s - eta grad L(theta_s)

The network's one backward pass (:func:`ntksolve.nets.backward`) carries the residual
``r = (f - y) / (Nk)`` (one ``(N, k)`` seed), not the ``k`` per-output deltas the kernel needs:
with ``g^l = dL/dz^l``::

    g^{L+1} = r
    g^l     = ws_{l+1} (g^{l+1} W^{l+1}) * phi'(z^l)
    W^l    <- W^l - eta alpha_l (g^l)^T h^{l-1}        b^l <- b^l - eta beta_l sum_i g^l_i

with ``(alpha_l, beta_l)`` the layer's :attr:`~ntksolve.nets.layers.LayerScales.stored_step`.
Every product is one BLAS GEMM (numpy's), so one step costs two GEMMs per layer plus one
elementwise pass and one in-place update.

In NTK parameterisation the stored ``W, b`` are trained and ``(alpha, beta) = (ws, bs)``. Standard
parameterisation trains ``W~ = ws W`` and ``b~ = bs b``, whose gradients are ``(g^l)^T h^{l-1}`` and
``sum_i g^l_i``; we keep the storage convention of :class:`~ntksolve.MLP` (``W`` standard-normal-
scaled, the forward pass multiplies by ``ws``) and step the stored variables by the chain rule,
``(alpha, beta) = (1/ws, 1/bs)``. This is exactly gradient descent on ``(W~, b~)`` (the Jacobian of
:func:`~ntksolve.jacobian` in standard parameterisation is taken with respect to them). Where the
stored ``b`` cannot carry the trained ``b~`` (``bias_std = 0``), training runs on
:meth:`MLP.trainable() <ntksolve.MLP.trainable>`, which trains identically;
:attr:`TrainingResult.net` is that network, and ``result.net.apply(result.params, X)`` evaluates the
trained model in every case.
"""
from __future__ import annotations

import contextlib
import numbers
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ntksolve._validation import check_inputs
from ntksolve.dynamics.mse import critical_learning_rate, mse_loss
from ntksolve.kernels.empirical import empirical_ntk
from ntksolve.nets.backprop import backward
from ntksolve.nets.mlp import MLP, forward

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
        ``1/(2Nk) sum ||f - y||^2`` at each recorded step.
    loss_test : ndarray, shape (T,), or None
        The same on ``(X_test, y_test)``, if ``y_test`` was given.
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
    wall_time : float
        Seconds spent in gradient descent (forward, backward, update, and the recorded test
        outputs), excluding the kernel tracking.
    kernel_time : float
        Seconds spent computing the kernels for ``kernel_change``.
    critical_learning_rate : float or None
        ``2Nk / lambda_max`` of the empirical NTK at initialisation (full kernel if ``k > 1``);
        computed when the kernel is tracked or training diverged.
    diverged : bool
    message : str
        Empty, or why training stopped early.
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
# the step
# ---------------------------------------------------------------------------------------------
def _gd_step(net, params, hs, dphis, r, stored_steps, eta) -> None:
    """One gradient step in place, from the forward pass's ``hs``/``dphis`` and residual ``r``.

    Parameters
    ----------
    params : list of (W, b), updated in place (never the caller's arrays)
    hs : list ``[h^0, ..., h^L]``, each (N, n_l)
    dphis : list ``[phi'(z^1), ..., phi'(z^L)]``, each (N, n_l)
    r : (N, k) array, ``(f - y) / (Nk)`` = ``g^{L+1}``
    stored_steps : per layer ``(alpha_l, beta_l)``, the layers' ``LayerScales.stored_step``
    """
    dt = r.dtype.type
    # backward() computes g^{l-1} from W^l before it hands over g^l, so W^l may move right away.
    for l, g in backward(net, params, dphis, r[:, None, :]):
        W, b = params[l - 1]
        g = g.reshape(g.shape[0], g.shape[2])  # (N, n_l): one seed per input
        alpha, beta = stored_steps[l - 1]
        # numpy's BLAS with one (n_l, n_{l-1}) temporary, not scipy's in-place GEMM: scipy ships
        # a second OpenBLAS whose idle threads spin against numpy's on every alternation
        # (measured: a step at N=512, width 2048, depth 2 took 290 ms that way, 1.5x numpy's).
        step = np.dot(g.T, hs[l - 1])
        step *= dt(eta * alpha)
        W -= step
        if beta != 0.0:
            b -= dt(eta * beta) * g.sum(axis=0)


def _loss(f: np.ndarray, y: np.ndarray) -> float:
    return mse_loss(f, y)


def _critical_rate(net, params, X) -> float:
    """``2Nk / lambda_max`` of the empirical NTK at ``params`` (full kernel when ``k > 1``)."""
    return float(critical_learning_rate(empirical_ntk(net, params, X, trace=(net.n_outputs == 1))))


# ---------------------------------------------------------------------------------------------
# public
# ---------------------------------------------------------------------------------------------


class Stopwatch:
    """Wall time of the training alone: spans spent tracking the kernel or in a callback are
    paused out (both trainers report ``wall_time`` this way)."""

    def __init__(self):
        self.seconds = 0.0
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def paused(self):
        self.stop()
        try:
            yield
        finally:
            self._start = time.perf_counter()

    def stop(self):
        self.seconds += time.perf_counter() - self._start


class KernelTracker:
    """The kernel's relative change ``||Theta_s - Theta_0||_F / ||Theta_0||_F`` from its value at
    initialisation, and the seconds spent computing kernels (``kernel_time``).

    Parameters
    ----------
    kernel_now : callable () -> ndarray
        The empirical NTK of the network's current parameters on the training inputs.
    """

    def __init__(self, kernel_now):
        self._kernel_now = kernel_now
        t0 = time.perf_counter()
        self.theta0 = kernel_now()
        self._norm = float(np.linalg.norm(self.theta0))
        self.seconds = time.perf_counter() - t0

    def change(self, step):
        if step == 0:
            return 0.0
        t0 = time.perf_counter()
        out = float(np.linalg.norm(self._kernel_now() - self.theta0)) / self._norm
        self.seconds += time.perf_counter() - t0
        return out

def recorded(n, steps, fx_train, fx_test, loss_train, loss_test, kernel_change, track_kernel, k):
    """The fields of a :class:`TrainingResult` from a trainer's record buffers, cut to the ``n``
    records made (every trainer records into the same buffers)."""
    cut = lambda a: None if a is None else a[:n]  # noqa: E731
    return dict(steps=steps[:n].copy(), fx_train=fx_train[:n], fx_test=cut(fx_test), loss_train=loss_train[:n],
                loss_test=cut(loss_test), kernel_change=cut(kernel_change),
                kernel_kind=None if not track_kernel else ("traced" if k == 1 else "full"))

def train_network(
    net: MLP,
    params,
    X,
    y,
    *,
    learning_rate: float,
    steps: int,
    record_at=None,
    X_test=None,
    y_test=None,
    track_kernel: bool = True,
    on_divergence: str = "raise",
    callback: Optional[Callable[[int, float], None]] = None,
) -> TrainingResult:
    """Train ``net`` from ``params`` by full-batch gradient descent on the conventions' MSE loss.

    Parameters
    ----------
    net : MLP
    params : list of (W, b)
        Starting parameters (from ``net.init``); never modified.
    X : array_like, shape (N, d)
    y : array_like, shape (N,) or (N, k)
    learning_rate : float
        ``eta > 0``. Gradient descent converges only below ``2Nk / lambda_max`` of the NTK.
    steps : int
        Number of gradient steps.
    record_at : sequence of int, optional
        Strictly increasing steps in ``[0, steps]`` at which to record outputs, losses and the
        kernel change. Default ``[0, steps]``.
    X_test : array_like, shape (M, d), optional
    y_test : array_like, shape (M,) or (M, k), optional (needs ``X_test``)
    track_kernel : bool, default True
        Record ``||Theta_t - Theta_0||_F / ||Theta_0||_F`` (empirical NTK on ``X``; traced for
        ``k = 1``, full for ``k > 1``). Costs one kernel per recorded step, not counted in
        ``wall_time``.
    on_divergence : {"raise", "return"}, default "raise"
        When the loss becomes non-finite or exceeds ``DIVERGENCE_FACTOR`` times its scale:
        raise :class:`TrainingDivergedError` (whose ``.result`` holds the finite records), or
        return the result with ``diverged=True``. The message names the critical learning rate.
    callback : callable ``(step, loss_train) -> None``, optional
        Called at each recorded step (progress bars; it may raise ``KeyboardInterrupt``).

    Returns
    -------
    TrainingResult
        ``steps`` (T,), ``fx_train`` (T, N, k), ``fx_test`` (T, M, k) or None, ``loss_train`` (T,),
        ``loss_test`` (T,) or None, ``kernel_change`` (T,) or None, final ``params``, times.

    Raises
    ------
    ValueError
        Bad inputs (shapes, NaN, ``record_at`` outside ``[0, steps]`` or unsorted, bad rate).
    TrainingDivergedError
        The loss diverged and ``on_divergence="raise"``.
    """
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an ntksolve.MLP, got {type(net).__name__}")
    d, dt = net.check_params(params)
    X = check_inputs(X, name="X", n_features=d, dtype=dt)
    N, k = X.shape[0], net.n_outputs
    y = _check_targets(y, N, k, "y", dt)
    if X_test is not None:
        X_test = check_inputs(X_test, name="X_test", n_features=d, dtype=dt)
        if y_test is not None:
            y_test = _check_targets(y_test, X_test.shape[0], k, "y_test", dt)
    elif y_test is not None:
        raise ValueError("y_test was given without X_test")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real) \
            or not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate must be a finite positive number, got {learning_rate!r}")
    eta = float(learning_rate)
    steps, rec = _check_steps(steps, record_at)
    if on_divergence not in ("raise", "return"):
        raise ValueError(f"on_divergence must be 'raise' or 'return', got {on_divergence!r}")

    train_net = net.trainable()
    # Working copies in the storage convention of train_net (b~ = 0 is b = 0 there).
    work = []
    for W, b in params:
        Wc = np.array(W, dtype=dt, order="C", copy=True)
        bc = np.zeros_like(np.asarray(b, dtype=dt)) if train_net is not net else np.array(b, dtype=dt, copy=True)
        work.append((Wc, bc))

    stored_steps = [s.stored_step for s in train_net.scales(d)]
    T = rec.size
    M = X_test.shape[0] if X_test is not None else 0
    fx_train = np.empty((T, N, k), dtype=dt)
    fx_test = np.empty((T, M, k), dtype=dt) if X_test is not None else None
    loss_train = np.empty(T)
    loss_test = np.empty(T) if y_test is not None else None
    kchange = np.empty(T) if track_kernel else None
    crit = None
    tracker = None
    if track_kernel:
        tracker = KernelTracker(lambda: empirical_ntk(train_net, work, X, trace=(k == 1)))
        crit = float(critical_learning_rate(tracker.theta0, n_outputs=k))

    loss_scale = None
    diverged, message = False, ""
    i_rec = 0
    s_done = 0
    clock = Stopwatch()
    for s in range(steps + 1):
        f, hs, dphis = forward(train_net, work, X, keep=(s < steps))
        r = f - y
        loss = mse_loss(f, y)
        if loss_scale is None:
            loss_scale = max(loss, 0.5 * float(np.vdot(y, y)) / y.size, np.finfo(dt).tiny)
        if not np.isfinite(loss) or loss > DIVERGENCE_FACTOR * loss_scale:
            diverged = True
            clock.stop()
            if crit is None:
                crit = _critical_rate(net, params, X)
            what = "became non-finite" if not np.isfinite(loss) else (
                f"grew to {loss:.3g}, over {DIVERGENCE_FACTOR:.0e} times its initial scale {loss_scale:.3g}")
            message = (
                f"training diverged at step {s}: the loss {what}. The learning rate {eta:.4g} is "
                f"{eta / crit:.3g} times the critical learning rate 2Nk/lambda_max = {crit:.4g} of this "
                f"network's empirical NTK at initialisation; use a learning rate below it "
                f"(e.g. {0.5 * crit:.4g})"
            )
            break
        if i_rec < T and rec[i_rec] == s:
            fx_train[i_rec] = f
            loss_train[i_rec] = loss
            if X_test is not None:
                ft = forward(train_net, work, X_test, keep=False)[0]
                fx_test[i_rec] = ft
                if y_test is not None:
                    loss_test[i_rec] = _loss(ft, y_test)
            if tracker is not None:
                with clock.paused():
                    kchange[i_rec] = tracker.change(s)
            i_rec += 1
            if callback is not None:
                with clock.paused():
                    callback(s, loss)
        if s == steps:
            break
        r *= dt.type(1.0 / r.size)  # g^{L+1} = (f - y) / (Nk)
        _gd_step(train_net, work, hs, dphis, r, stored_steps, eta)
        s_done = s + 1
    if not diverged:
        clock.stop()

    T_done = i_rec
    result = TrainingResult(
        **recorded(T_done, rec, fx_train, fx_test, loss_train, loss_test, kchange, track_kernel, k),
        net=train_net,
        params=work,
        learning_rate=eta,
        wall_time=clock.seconds,
        kernel_time=0.0 if tracker is None else tracker.seconds,
        critical_learning_rate=crit,
        diverged=diverged,
        message=message,
        n_steps_taken=s_done,
    )
    if diverged and on_divergence == "raise":
        raise TrainingDivergedError(message, result)
    return result


__all__ = ["train_network", "TrainingResult", "TrainingDivergedError", "DIVERGENCE_FACTOR"]
