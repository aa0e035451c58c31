"""The one training loop of every trainer: checks, steps, records, divergence and the result.

A trainer (the numpy MLP's, the layered network's, scikit-learn's, PyTorch's) is a :class:`Steps`:
what it alone does -- its outputs, its loss and its optimiser step. :class:`TrainingLoop` does the
rest, the same for all: at each step ``s = 0 ... steps``

1. measure the training loss (at every step where the forward pass also serves the step, else at the
   recorded steps and step 0), whose first value sets the divergence scale (:class:`LossWatch`);
2. at a recorded step, record the outputs, losses, accuracies and the kernel change
   (:class:`~ntksolve.training_records.Records`) and call the callback;
3. take step ``s``: the trainer's loss of the step (checked: the training loss in full batch, only
   finite for a minibatch), then its update.

The trainers with :func:`ntksolve.train_network`'s interface share its argument checks
(:func:`plan_run`, giving a :class:`Plan`), its signature (:func:`trainer`) and its result.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ntksolve._config import DIVERGENCE_FACTOR
from ntksolve._validation import check_choice, check_inputs
from ntksolve.dynamics.batches import check_batches
from ntksolve.dynamics.descent_modes import rule_words
from ntksolve.dynamics.function_space import _ce_metrics, _targets
from ntksolve.dynamics.mse import critical_learning_rate, mse_loss
from ntksolve.dynamics.rules import GradientDescent
from ntksolve.dynamics.schedules import as_schedule
from ntksolve.kernels.empirical import empirical_ntk
from ntksolve.optimizers import training_rule
from ntksolve.training_records import Records, Stopwatch, TrainingDivergedError, TrainingResult

__all__ = ["Plan", "plan_run", "plan_mlp", "Steps", "PlanSteps", "LossWatch", "TrainingLoop", "trainer"]


# ---------------------------------------------------------------------------------------------
# argument checks
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


def check_on_divergence(on_divergence) -> str:
    if on_divergence not in ("raise", "return"):
        raise ValueError(f"on_divergence must be 'raise' or 'return', got {on_divergence!r}")
    return on_divergence


def check_test_inputs(X_test, y_test, check):
    """``check(X_test, "X_test")``, or None; ``y_test`` without ``X_test`` is refused."""
    if X_test is not None:
        return check(X_test, "X_test")
    if y_test is not None:
        raise ValueError("y_test was given without X_test")
    return None


@dataclass
class Plan:
    """A checked run of :func:`ntksolve.train_network`'s interface (every array validated).

    Attributes
    ----------
    rule : GradientDescent or Adam
    kind : {"mse", "cross_entropy"}
    X : ndarray, shape (N, ...)
    X_test : ndarray, shape (M, ...), or None
    Y : ndarray, shape (N, k)
        The loss seed's targets (MSE targets, or one-hot rows / 0-1 column) in ``dt``.
    target, target_test : ndarray
        What the loss is measured against: ``Y`` (MSE) or the labels; ``target_test`` None without
        test targets.
    steps : int
    record_at : ndarray of int, shape (T,)
    rates : ndarray, shape (steps,)
        The rate of each step.
    first_rate : float
    batches : list of ndarray or None
    on_divergence : {"raise", "return"}
    k : int
    dt : numpy dtype
    """

    rule: Any
    kind: str
    X: np.ndarray
    X_test: Optional[np.ndarray]
    Y: np.ndarray
    target: np.ndarray
    target_test: Optional[np.ndarray]
    steps: int
    record_at: np.ndarray
    rates: np.ndarray
    first_rate: float
    batches: Optional[list]
    on_divergence: str
    k: int
    dt: Any

    @property
    def N(self) -> int:
        return self.X.shape[0]

    @property
    def with_critical_rate(self) -> bool:
        """Gradient descent on MSE: the divergence message quotes the rule's critical rate."""
        return self.kind == "mse" and isinstance(self.rule, GradientDescent)


def plan_run(rule, kind, X, y, *, k, dt, check, X_test, y_test, steps, record_at, batches, on_divergence) -> Plan:
    """The checks of :func:`ntksolve.train_network` after the network's: ``X`` is validated,
    ``check(A, name)`` validates ``X_test`` the same way; targets, steps, rates, batches."""
    N = X.shape[0]
    X_test = check_test_inputs(X_test, y_test, check)
    if kind == "mse":
        Y = target = _check_targets(y, N, k, "y", dt)
        target_test = None if y_test is None else _check_targets(y_test, X_test.shape[0], k, "y_test", dt)
    else:
        Y, target = _targets(y, N, k, "y")
        Y = Y.astype(dt)
        target_test = None if y_test is None else _targets(y_test, X_test.shape[0], k, "y_test")[1]
    steps, rec = _check_steps(steps, record_at)
    schedule = as_schedule(rule.learning_rate)
    rates = schedule.rates(steps)  # an array schedule too short: refused here
    first_rate = float(schedule.rates(1)[0])
    batch_list = check_batches(batches, N, steps)
    check_on_divergence(on_divergence)
    return Plan(rule, kind, X, X_test, Y, target, target_test, steps, rec, rates, first_rate, batch_list, on_divergence, k, dt)


def plan_mlp(net, params, X, y, rule, kind, **run) -> Plan:
    """:func:`plan_run` for an :class:`~ntksolve.MLP` (``X`` of shape (N, d))."""
    from ntksolve.nets.mlp import MLP

    if not isinstance(net, MLP):
        raise ValueError(f"net must be an ntksolve.MLP, got {type(net).__name__}")
    d, dt = net.check_params(params)

    def check(A, name):
        return check_inputs(A, name=name, n_features=d, dtype=dt)

    return plan_run(rule, kind, check(X, "X"), y, k=net.n_outputs, dt=dt, check=check, **run)


# ---------------------------------------------------------------------------------------------
# losses and divergence
# ---------------------------------------------------------------------------------------------
def _measure(kind, f, target):
    """``(loss, accuracy)`` of outputs ``f`` (n, k): the conventions' MSE (accuracy None), or the
    mean cross-entropy and accuracy against the labels ``target``."""
    if kind == "mse":
        return mse_loss(f, target), None
    loss, acc = _ce_metrics(f[None], target)
    return float(loss[0]), float(acc[0])


def _zero_loss(kind, target, k, dt) -> float:
    """The loss of a zero predictor: ``0.5 mean(y^2)`` for MSE, ``log k`` (``log 2``) for cross-entropy."""
    if kind == "mse":
        return 0.5 * float(np.vdot(target, target)) / target.size
    return _measure(kind, np.zeros((1, k), dtype=dt), target[:1])[0]


class LossWatch:
    """The divergence test: a loss is non-finite, or over ``DIVERGENCE_FACTOR`` times its scale,
    the first loss seen or the loss of a zero predictor ``zero`` if larger.

    Parameters
    ----------
    zero : float
    dtype : numpy dtype
        Of the outputs (its smallest normal number bounds the scale below).
    units : float, default 1.0
        What the losses are divided by in messages (PyTorch's loss over ntksolve's).
    name : str, default "loss"
        The loss's name in messages.
    """

    def __init__(self, zero, dtype, units=1.0, name="loss"):
        self.zero, self.tiny, self.units, self.name = zero, np.finfo(dtype).tiny, units, name
        self.scale = None

    def check(self, value) -> str:
        """Why the training loss ``value`` means divergence, or ``""``."""
        if self.scale is None:
            self.scale = max(value, self.zero, self.tiny)
        if not np.isfinite(value):
            return f"{self.name} became non-finite"
        if value > DIVERGENCE_FACTOR * self.scale:
            return (
                f"{self.name} grew to {value / self.units:.3g}, over {DIVERGENCE_FACTOR:.0e} times its "
                f"initial scale {self.scale / self.units:.3g}"
            )
        return ""

    def check_step(self, value, batched) -> str:
        """A step's own loss (or loss seed): in full batch the training loss (:meth:`check`); a
        minibatch's is only checked for being finite (its scale is the batch's)."""
        if not batched:
            return self.check(value)
        return "" if np.all(np.isfinite(value)) else "batch loss became non-finite"


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


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
class Steps:
    """What one trainer does itself; :class:`TrainingLoop` does the rest.

    A subclass sets ``n_train``, ``n_test`` (None: no test inputs), ``k``, ``dtype``, ``test_loss``
    (test targets given), ``accuracy`` (accuracies recorded) and ``batched`` (minibatches), and
    implements the methods below.
    """

    #: measure the training loss at every step (the forward pass that measures serves the step)
    measure_every_step = False
    #: the update of a step comes with its loss, before the check (scikit-learn's ``partial_fit``)
    updates_before_check = False
    #: what the recorded losses are divided by in messages and the callback (PyTorch's / ntksolve's)
    loss_units = 1.0
    #: the training loss's name in divergence messages
    loss_name = "loss"
    accuracy = False

    def measure(self, s):
        """``(f, loss, accuracy)`` on the training set before step ``s`` (accuracy None if not kept)."""
        raise NotImplementedError

    def measure_test(self):
        """``(ft, loss, accuracy)`` on the test inputs (loss None without test targets)."""
        raise NotImplementedError

    def loss_of_step(self, s):
        """Begin step ``s``: its loss (or loss seed) to check, or None (nothing new to check)."""
        raise NotImplementedError

    def update(self, s):
        """Finish step ``s``: move the parameters."""
        raise NotImplementedError

    def kernel(self):
        """The empirical NTK of the current parameters on the training inputs."""
        raise NotImplementedError

    def initial_kernel(self):
        """The empirical NTK at initialisation (for a divergence message when it was not tracked)."""
        raise NotImplementedError

    def zero_loss(self) -> float:
        """The loss of a zero predictor on the training set (a floor of the divergence scale)."""
        raise NotImplementedError


class TrainingLoop:
    """The loop of every trainer over steps ``0 ... steps`` (see the module docstring).

    Parameters
    ----------
    trainer : Steps
    record_at : ndarray of int, shape (T,)
    steps : int
    track_kernel : bool
    critical_rate : callable ``theta -> float``, or None
        The critical rate a divergence message quotes, from the kernel at initialisation (None:
        there is none).
    hint : callable ``crit -> str``
        The message's advice.
    callback : callable ``(step, loss) -> None``, or None
        Called at each recorded step with the training loss (over ``trainer.loss_units``).
    """

    def __init__(self, trainer, record_at, steps, *, track_kernel, critical_rate, hint, callback):
        self.trainer, self.steps = trainer, steps
        self.critical_rate, self.hint, self.callback = critical_rate, hint, callback
        self.records = Records(
            record_at,
            trainer.n_train,
            trainer.n_test,
            trainer.k,
            trainer.dtype,
            test_loss=trainer.test_loss,
            accuracy=trainer.accuracy,
            kernel_now=trainer.kernel if track_kernel else None,
        )
        self.crit = None
        if self.records.tracker is not None and critical_rate is not None:
            self.crit = critical_rate(self.records.tracker.theta0)
        self.watch = LossWatch(trainer.zero_loss(), trainer.dtype, trainer.loss_units, trainer.loss_name)
        self.diverged, self.message, self.taken, self.wall_time = False, "", 0, 0.0

    def _stop(self, s, what, clock):
        self.diverged = True
        clock.stop()
        if self.crit is None and self.critical_rate is not None:
            self.crit = self.critical_rate(self.trainer.initial_kernel())
        self.message = f"training diverged at step {s}: the {what}{self.hint(self.crit)}"

    def run(self) -> "TrainingLoop":
        tr, rec, watch, steps = self.trainer, self.records, self.watch, self.steps
        every, batched = tr.measure_every_step, tr.batched
        clock = Stopwatch()
        for s in range(steps + 1):
            recording = rec.due(s)
            if every or recording or s == 0:
                f, value, acc = tr.measure(s)
                why = watch.check(value)
                if why:
                    self._stop(s, why, clock)
                    break
            if recording:
                rec.add(s, f, value, acc, None if rec.fx_test is None else tr.measure_test(), clock)
                if self.callback is not None:
                    with clock.paused():
                        self.callback(s, value / tr.loss_units)
            if s == steps:
                break
            step_loss = tr.loss_of_step(s)
            why = "" if step_loss is None else watch.check_step(step_loss, batched)
            if why:
                if tr.updates_before_check:
                    self.taken = s + 1
                self._stop(s, why, clock)
                break
            tr.update(s)
            self.taken = s + 1
        if not self.diverged:
            clock.stop()
        self.wall_time = clock.seconds
        return self

    def fields(self) -> dict:
        """The :class:`~ntksolve.training_records.TrainingResult` fields of the run."""
        return dict(
            self.records.fields(),
            wall_time=self.wall_time,
            critical_learning_rate=self.crit,
            diverged=self.diverged,
            message=self.message,
            n_steps_taken=self.taken,
        )


def finish(result, on_divergence):
    """``result``, or :class:`~ntksolve.training_records.TrainingDivergedError` carrying it."""
    if result.diverged and on_divergence == "raise":
        raise TrainingDivergedError(result.message, result)
    return result


# ---------------------------------------------------------------------------------------------
# the trainers of train_network's interface
# ---------------------------------------------------------------------------------------------
class PlanSteps(Steps):
    """A trainer of :func:`ntksolve.train_network`'s interface, from its checked :class:`Plan`.

    A subclass implements :meth:`plan` (the network's checks, then :func:`plan_run`),
    :meth:`outputs` and :meth:`test_outputs` (the losses are measured here, in ntksolve's terms),
    the step and :meth:`result_fields`.
    """

    def __init__(self, net, params, plan: Plan):
        self.net, self.params, self.plan = net, params, plan
        self.n_train, self.k, self.dtype = plan.N, plan.k, plan.dt
        self.n_test = None if plan.X_test is None else plan.X_test.shape[0]
        self.test_loss = plan.target_test is not None
        self.accuracy = plan.kind != "mse"
        self.batched = plan.batches is not None

    @classmethod
    def plan(cls, net, params, X, y, rule, kind, **run) -> Plan:
        raise NotImplementedError

    def outputs(self, s):
        """The training outputs (N, k) before step ``s``."""
        raise NotImplementedError

    def test_outputs(self):
        raise NotImplementedError

    def measure(self, s):
        f = self.outputs(s)
        return (f,) + _measure(self.plan.kind, f, self.plan.target)

    def measure_test(self):
        ft = self.test_outputs()
        if self.plan.target_test is None:
            return ft, None, None
        return (ft,) + _measure(self.plan.kind, ft, self.plan.target_test)

    def zero_loss(self):
        p = self.plan
        return _zero_loss(p.kind, p.target, p.k, p.dt)

    def initial_kernel(self):
        return empirical_ntk(self.net, self.params, self.plan.X, trace=(self.k == 1))

    def result_fields(self, fields) -> dict:
        """``net`` and ``params`` of the result (and any recorded field in the trainer's terms)."""
        raise NotImplementedError


def _train(cls, net, params, X, y, *, learning_rate, dynamics, loss, track_kernel, callback, **run):
    rule = training_rule(learning_rate, dynamics)
    kind = check_choice(loss, "loss", ("mse", "cross_entropy"))
    plan = cls.plan(net, params, X, y, rule, kind, **run)
    tr = cls(net, params, plan)
    loop = TrainingLoop(
        tr,
        plan.record_at,
        plan.steps,
        track_kernel=track_kernel,
        critical_rate=(lambda theta: _rule_critical_rate(rule, theta, plan.k)) if plan.with_critical_rate else None,
        hint=lambda crit: _divergence_hint(rule, plan.rates, crit, plan.batches),
        callback=callback,
    ).run()
    fields = loop.fields()
    fields.update(tr.result_fields(fields))
    result = TrainingResult(**fields, learning_rate=plan.first_rate, loss=kind, dynamics=rule)
    return finish(result, plan.on_divergence)


def trainer(steps_class):
    """Decorator: ``steps_class``'s trainer, with :func:`ntksolve.train_network`'s signature, under
    the name and docstring of the decorated function (whose body is never run)."""

    def make(described):
        def train_network(
            net,
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
            callback=None,
        ) -> TrainingResult:
            return _train(
                steps_class,
                net,
                params,
                X,
                y,
                steps=steps,
                learning_rate=learning_rate,
                dynamics=dynamics,
                loss=loss,
                batches=batches,
                record_at=record_at,
                X_test=X_test,
                y_test=y_test,
                track_kernel=track_kernel,
                on_divergence=on_divergence,
                callback=callback,
            )

        for name in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(train_network, name, getattr(described, name))
        return train_network

    return make
