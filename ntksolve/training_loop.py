"""The one training loop of every trainer: its steps, records, divergence test and result.

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
(:mod:`ntksolve.training_plan`), its signature (:func:`trainer`) and its result.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ntksolve._config import DIVERGENCE_FACTOR
from ntksolve._validation import FloatOverflowError, check_choice
from ntksolve.dynamics.descent_modes import rule_words
from ntksolve.dynamics.function_space import _ce_metrics
from ntksolve.dynamics.mse import critical_learning_rate, mse_loss
from ntksolve.dynamics.rules import GradientDescent
from ntksolve.kernels.empirical import empirical_ntk
from ntksolve.optimizers import training_rule
from ntksolve.training_plan import Plan
from ntksolve.training_records import Records, Stopwatch, TrainingDivergedError, TrainingResult

__all__ = ["Steps", "PlanSteps", "LossWatch", "TrainingLoop", "trainer", "finish"]


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

    def _overflowed(self, s, err, clock):
        # the parameters grew past the dtype: the forward pass overflowed, which is divergence
        # (an activation would have hidden it: relu(-inf) = 0), not a bad input
        self._stop(s, f"{err.what} overflowed {err.dtype.name}", clock)

    def run(self) -> "TrainingLoop":
        tr, rec, watch, steps = self.trainer, self.records, self.watch, self.steps
        every, batched = tr.measure_every_step, tr.batched
        # bound once: the loop's own cost per step stays a few calls
        due, measure, check, loss_of_step, update = rec.due, tr.measure, watch.check, tr.loss_of_step, tr.update
        clock = Stopwatch()
        for s in range(steps + 1):
            # two guarded stretches, the callback between them: a FloatOverflowError the user's
            # callback raises is the callback's own error, not this run's divergence
            try:
                recording = due(s)
                if every or recording or s == 0:
                    f, value, acc = measure(s)
                    why = check(value)
                    if why:
                        self._stop(s, why, clock)
                        break
                if recording:
                    rec.add(s, f, value, acc, None if rec.fx_test is None else tr.measure_test(), clock)
            except FloatOverflowError as err:
                self._overflowed(s, err, clock)
                break
            if recording and self.callback is not None:
                with clock.paused():
                    self.callback(s, value / tr.loss_units)
            if s == steps:
                break
            try:
                step_loss = loss_of_step(s)
                why = "" if step_loss is None else watch.check_step(step_loss, batched)
                if why:
                    if tr.updates_before_check:
                        self.taken = s + 1
                    self._stop(s, why, clock)
                    break
                update(s)
                self.taken = s + 1
            except FloatOverflowError as err:
                self._overflowed(s, err, clock)
                break
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

    A subclass implements :meth:`plan` (the network's checks, then
    :func:`~ntksolve.training_plan.plan_run`), :meth:`outputs` and :meth:`test_outputs` (the losses
    are measured here, in ntksolve's terms) and the step. ``train_net`` is ``net.trainable()``
    and ``work`` the starting parameters in its storage convention (:meth:`_working_copy`).
    """

    def __init__(self, net, params, plan: Plan):
        self.net, self.params, self.plan = net, params, plan
        self.n_train, self.k, self.dtype = plan.N, plan.k, plan.dt
        self.n_test = None if plan.X_test is None else plan.X_test.shape[0]
        self.test_loss = plan.target_test is not None
        self.accuracy = plan.kind != "mse"
        self.batched = plan.batches is not None
        self.train_net = net.trainable()
        self.work = self._working_copy(params, plan.dt)

    def _working_copy(self, params, dt):
        """An MLP's ``(W, b)``, copied C-contiguous in ``dt`` in the storage convention of
        ``train_net`` (``b~ = 0`` is ``b = 0`` there)."""
        fresh = self.train_net is not self.net
        return [
            (
                np.array(W, dtype=dt, order="C", copy=True),
                np.zeros_like(np.asarray(b, dtype=dt)) if fresh else np.array(b, dtype=dt, copy=True),
            )
            for W, b in params
        ]

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

    def current_params(self):
        """The parameters now, in ``train_net``'s storage convention."""
        return self.work

    def kernel(self):
        return empirical_ntk(self.train_net, self.current_params(), self.plan.X, trace=(self.k == 1))

    def initial_kernel(self):
        return empirical_ntk(self.net, self.params, self.plan.X, trace=(self.k == 1))

    def result_fields(self, fields) -> dict:
        """``net`` and ``params`` of the result (and any recorded field in the trainer's terms)."""
        return dict(net=self.train_net, params=self.current_params())


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
            callback: Optional[Callable[[int, float], None]] = None,
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
