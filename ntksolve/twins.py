"""Which linear twin predicts a run of :func:`ntksolve.compare`, and its trajectory.

A real run is its rule (a :class:`~ntksolve.dynamics.GradientDescent` or an
:class:`~ntksolve.dynamics.Adam`), its loss and its batches (:class:`Run`). Its twin on one kernel
(the network's own empirical NTK, or the analytic one) is:

==================================  ================================================================
real run                            twin (:class:`Twin`)
==================================  ================================================================
gradient descent, full-batch MSE    the closed form (``gradient_descent_mse``, eigh): momentum,
                                    Nesterov, schedules, weight decay (with the network's ``J θ_0``)
gradient descent, minibatch MSE     the function-space recurrence ``sgd_mse`` over the same batches
gradient descent, cross-entropy     ``sgd_cross_entropy`` (full batch or the same batches)
Adam (any loss, any batches)        none exists: the **loss-matched gradient flow** (below)
==================================  ================================================================

The analytic kernel is traced (``N x N``, acting as ``Θ ⊗ I_k``); the empirical one is traced for
one output and full for several. Weight decay pulls the parameters towards zero, so its twin needs
``J θ_0``, which the analytic (infinite-width) kernel does not have: that twin is ``"n/a"``.

**Adam.** Adam divides each parameter's step by its own gradient statistics, which the kernel does
not determine, so no kernel recurrence reproduces it. The closest linear prediction reported is
gradient flow ``df/dτ = −Θ ∇_f L / N`` on the kernel (``τ`` in units of learning rate × steps:
gradient descent at rate ``η`` for ``t`` steps is near ``τ = η t``), read at the flow time ``τ_s``
whose training loss equals the real run's at each recorded step ``s``. The flow's loss decreases
monotonically, so ``τ_s`` is unique. The training losses agree by construction; the gap (outputs,
train and test) and the test loss then say whether Adam moves the function along the kernel's path
at another speed, or somewhere else. A real loss above the start is matched at ``τ = 0``; one
below what the flow reaches is matched at the flow's end (its limit for MSE), and a note says so.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import NamedTuple, Optional

import numpy as np
import scipy.optimize

from ntksolve._config import DIVERGENCE_FACTOR
from ntksolve.dynamics import (
    Adam,
    DivergenceWarning,
    GradientDescent,
    flow_cross_entropy,
    gradient_descent_mse,
    mse_loss,
    sgd_cross_entropy,
    sgd_mse,
)
from ntksolve.dynamics.descent_modes import rule_words
from ntksolve.report import _prediction_status

#: The kinds of twin, as the report names them.
CLOSED_FORM, RECURRENCE, MATCHED_FLOW = "closed form", "recurrence", "loss-matched flow"
LOSSES = ("mse", "cross_entropy")
#: Flow time of the loss-matched flow of cross-entropy, in top-mode time constants ``Nk/λ_max``,
#: beyond which it is not integrated (its loss falls like ``1/τ`` there, and DOP853's steps stay
#: of the order of one time constant, so each factor of 8 costs 8 times more).
MAX_FLOW_TIME = 4096.0

__all__ = [
    "Run",
    "Twin",
    "Prediction",
    "not_available",
    "critical_rate",
    "rule_at_fraction",
    "describe",
    "CLOSED_FORM",
    "RECURRENCE",
    "MATCHED_FLOW",
    "LOSSES",
]


class Run(NamedTuple):
    """What every width of a sweep trains with.

    rule : GradientDescent or Adam
    loss : {"mse", "cross_entropy"}
    batch_size : int or None (full batch)
    record_at : ndarray of int, shape (T,)
    y, y_test : MSE targets (N, k) and (M, k), or class labels (N,) and (M,) for cross-entropy
    n_outputs : int
    """

    rule: object
    loss: str
    batch_size: Optional[int]
    record_at: np.ndarray
    y: np.ndarray
    y_test: np.ndarray
    n_outputs: int

    @property
    def plain(self) -> bool:
        """Plain full-batch descent on MSE: what the sweep did before rules existed."""
        return (
            isinstance(self.rule, GradientDescent)
            and self.rule.plain
            and self.loss == "mse"
            and self.batch_size is None
        )

    @property
    def kind(self) -> str:
        if isinstance(self.rule, Adam):
            return MATCHED_FLOW
        return CLOSED_FORM if self.loss == "mse" and self.batch_size is None else RECURRENCE


class Prediction(NamedTuple):
    """One twin's trajectory at the recorded steps, or why there is none.

    status : {"ok", "diverges", "non-finite", "n/a"}
    train, test : ndarray, shape (T, N, k) / (T, M, k) (outputs; logits for cross-entropy)
    loss_train, loss_test, accuracy_train, accuracy_test : ndarray, shape (T,) (accuracies: cross-entropy)
    flow_time : ndarray, shape (T,): the matched flow times ``τ_s`` (Adam only)
    """

    status: str
    message: str
    train: Optional[np.ndarray] = None
    test: Optional[np.ndarray] = None
    loss_train: Optional[np.ndarray] = None
    loss_test: Optional[np.ndarray] = None
    accuracy_train: Optional[np.ndarray] = None
    accuracy_test: Optional[np.ndarray] = None
    flow_time: Optional[np.ndarray] = None


def not_available(reason: str) -> Prediction:
    return Prediction("n/a", reason)


def describe(run: Run) -> str:
    """The twin of ``run``, in words (``settings["twin"]``)."""
    kind = run.kind
    if kind == CLOSED_FORM:
        return (
            f"closed form of {rule_words(run.rule)} on MSE (gradient_descent_mse, eigh): the exact twin of the "
            "network linearised at initialisation"
        )
    if kind == RECURRENCE:
        fn = "sgd_mse" if run.loss == "mse" else "sgd_cross_entropy"
        batches = "the real run's batch order" if run.batch_size else "full batches"
        return (
            f"function-space recurrence {fn} of {rule_words(run.rule)} with {batches}: the exact twin of the "
            "network linearised at initialisation"
        )
    return (
        "none exists for Adam; reported: the loss-matched gradient flow on each kernel (each recorded step read "
        "at the flow time whose training loss equals the real run's), the closest linear path"
    )


# ---------------------------------------------------------------------------------------------
# learning rates
# ---------------------------------------------------------------------------------------------
def critical_rate(rule, plain_crit: float, size: int) -> Optional[float]:
    """The rule's critical rate from the plain one ``2Nk/λ_max`` (that same number for plain
    descent; ``None`` for Adam, which has none)."""
    if isinstance(rule, Adam):
        return None
    if rule.plain:
        return float(plain_crit)
    lmax = 2.0 * size / plain_crit if 0.0 < plain_crit < np.inf else 0.0
    return float(rule.critical_learning_rate(lmax, size))


def rule_at_fraction(rule: GradientDescent, fraction: float, plain_crit: float, size: int, steps: int):
    """``(rule, critical rate)``: ``rule`` with its rate set to ``fraction`` times its own critical
    rate; a schedule keeps its shape and is scaled so that its peak over ``steps`` steps is that rate."""
    crit = critical_rate(rule, plain_crit, size)
    target = fraction * crit
    if rule.schedule is None:
        return dataclasses.replace(rule, learning_rate=target), crit
    peak = peak_rate(rule, steps)
    if not peak > 0:  # sweep_checks.check_training refuses it before any work
        raise ValueError(f"every rate of the schedule over the {steps} steps is 0: no fraction of it is set")
    return dataclasses.replace(rule, learning_rate=rule.schedule.scaled(target / peak)), crit


def peak_rate(rule, steps: int) -> float:
    """The rule's rate, or a schedule's largest over the run."""
    if isinstance(rule, GradientDescent) and rule.schedule is not None:
        return float(np.max(rule.schedule.rates(steps)))
    return float(rule.learning_rate)


# ---------------------------------------------------------------------------------------------
# the twin of one kernel
# ---------------------------------------------------------------------------------------------
class Twin:
    """The twin of ``run`` on one kernel; :meth:`predict` gives a width's trajectory.

    Parameters
    ----------
    run : Run
    k_train : ndarray, shape (N, N) traced or (N, N, k, k) full
    k_test : ndarray, shape (M, N) or (M, N, k, k)
    what : str
        ``"empirical-NTK"`` or ``"analytic-NTK"`` (messages).
    kernel_words : str
        The kernel in words (messages).
    plain_crit : float
        ``2Nk/λ_max`` of ``k_train``.

    The closed form and the MSE flow decompose the kernel here, once: a twin shared by every width
    (the analytic one) pays for it once.
    """

    def __init__(self, run: Run, k_train, k_test, *, what: str, kernel_words: str, plain_crit: float):
        self.run, self.k_train, self.k_test = run, k_train, k_test
        self.what, self.kernel_words, self.plain_crit = what, kernel_words, float(plain_crit)
        self.size = int(run.y.shape[0]) * int(run.n_outputs)
        self._pred, self._warned = None, []
        kind = run.kind
        if kind == CLOSED_FORM or (kind == MATCHED_FLOW and run.loss == "mse"):
            with warnings.catch_warnings(record=True) as caught, np.errstate(over="ignore", invalid="ignore"):
                warnings.simplefilter("always", DivergenceWarning)
                if kind == CLOSED_FORM:
                    self._pred = gradient_descent_mse(
                        k_train, run.y, dynamics=run.rule, method="eigh", allow_divergence=True
                    )
                else:  # gradient flow at rate 1: its time is tau; it converges at every rate
                    self._pred = gradient_descent_mse(k_train, run.y, 1.0, dynamics="continuous", method="eigh")
            self._warned = [str(w.message) for w in caught if issubclass(w.category, DivergenceWarning)]

    def predict(self, f0, f0_test, *, batches=None, images=None, real_loss=None) -> Prediction:
        """The trajectory from the width's outputs at initialisation.

        Parameters
        ----------
        f0, f0_test : ndarray, shape (N, k), (M, k)
        batches : list of index arrays, optional
            The real run's batch order (minibatch runs).
        images : (ndarray (N, k), ndarray (M, k)), optional
            ``J θ_0`` on the train and test inputs (weight decay).
        real_loss : ndarray, shape (T,), optional
            The real run's training loss at the recorded steps (Adam's loss-matched flow).
        """
        kind = self.run.kind
        if kind == CLOSED_FORM:
            return self._closed_form(f0, f0_test, images)
        if kind == RECURRENCE:
            return self._recurrence(f0, f0_test, batches, images)
        return (
            self._matched_mse(f0, f0_test, real_loss)
            if self.run.loss == "mse"
            else self._matched_ce(f0, f0_test, real_loss)
        )

    # -- gradient descent on MSE, full batch: the closed form
    def _closed_form(self, f0, f0_test, images):
        run = self.run
        jt = {} if images is None else dict(jtheta_train=images[0], jtheta_test=images[1])
        with warnings.catch_warnings(record=True) as caught, np.errstate(over="ignore", invalid="ignore"):
            warnings.simplefilter("always", DivergenceWarning)
            ft, fte = self._pred(run.record_at, f0, f0_test, self.k_test, **jt)
        warned = self._warned + [str(w.message) for w in caught if issubclass(w.category, DivergenceWarning)]
        if run.rule.plain:
            status, msg = _prediction_status(
                self.what, run.rule.learning_rate, self.plain_crit, self.kernel_words, ft, fte
            )
        elif warned:
            status, msg = (
                "diverges",
                (
                    f"the {self.what} prediction diverges: {warned[0].split(' (allow_divergence')[0]}"
                    f" on {self.kernel_words}; left out of the gaps and slopes (the real network, "
                    "whose kernel moves, may still train)"
                ),
            )
        else:
            status, msg = _prediction_status(self.what, 0.0, 1.0, self.kernel_words, ft, fte)
        if status != "ok":
            return Prediction(status, msg)
        return Prediction("ok", "", ft, fte, mse_loss(ft, run.y), mse_loss(fte, run.y_test))

    # -- minibatches or cross-entropy: the function-space recurrences
    def _recurrence(self, f0, f0_test, batches, images):
        run = self.run
        img = {} if images is None else dict(image_train=images[0], image_test=images[1])
        with np.errstate(all="ignore"):  # a diverging twin is reported by _growth, not warned about
            # the two recurrences differ in their function and in the name of the test targets
            recurrence, test_targets = (sgd_mse, "y_test") if run.loss == "mse" else (sgd_cross_entropy, "targets_test")
            try:
                tr = recurrence(
                    self.k_train,
                    run.y,
                    f0,
                    run.record_at,
                    dynamics=run.rule,
                    batches=batches,
                    k_test_train=self.k_test,
                    fx_test_0=f0_test,
                    **{test_targets: run.y_test},
                    **img,
                )
            except FloatingPointError:  # its outputs overflowed (the recurrences refuse to return them)
                return Prediction(*self._growth(np.array([np.nan])))
        status, msg = self._growth(tr.train_loss, tr.train, tr.test)
        if status != "ok":
            return Prediction(status, msg)
        return Prediction("ok", "", tr.train, tr.test, tr.train_loss, tr.test_loss, tr.train_accuracy, tr.test_accuracy)

    def _growth(self, loss, *outputs):
        """Diverged when the twin's training loss grows past ``DIVERGENCE_FACTOR`` times its start
        (the real trainer's criterion) or anything is non-finite."""
        with np.errstate(all="ignore"):
            finite = bool(np.all(np.isfinite(loss))) and all(o is None or bool(np.all(np.isfinite(o))) for o in outputs)
            grew = finite and float(np.max(loss)) > DIVERGENCE_FACTOR * max(float(loss[0]), np.finfo(float).tiny)
        if finite and not grew:
            return "ok", ""
        what = (
            "became non-finite"
            if not finite
            else f"grew to {float(np.max(loss)):.3g}, over {DIVERGENCE_FACTOR:.0e} times its initial {float(loss[0]):.3g}"
        )
        rate = peak_rate(self.run.rule, int(self.run.record_at[-1]))
        return "diverges", (
            f"the {self.what} prediction diverges: the training loss of the network linearised on "
            f"{self.kernel_words} {what} at learning rate {rate:.4g}; left out of the gaps and slopes "
            "(the real network, whose kernel moves, may still train; lower the learning rate)"
        )

    # -- Adam: the loss-matched gradient flow
    def _matched_mse(self, f0, f0_test, real_loss):
        p = self._pred

        def loss_at(tau):
            return float(p.loss(tau, f0))

        start, limit = loss_at(0.0), loss_at(np.inf)
        tau0 = self.size / max(float(p.eigenvalues[-1]), np.finfo(float).tiny)
        taus, below = np.empty(len(real_loss)), 0
        for i, target in enumerate(np.asarray(real_loss, dtype=float)):
            if target >= start:
                taus[i] = 0.0
            elif target <= limit:
                taus[i], below = np.inf, below + 1
            else:
                hi = tau0
                while loss_at(hi) > target:
                    hi *= 4.0
                taus[i] = scipy.optimize.brentq(lambda t: loss_at(t) - target, 0.0, hi, xtol=1e-12 * hi, rtol=1e-12)
        ft, fte = p(taus, f0, f0_test, self.k_test)
        note = (
            ""
            if not below
            else (
                f"{below} recorded step(s) of Adam reach a training loss below the limit of gradient flow on "
                f"{self.kernel_words} (kernel regression, {limit:.4g}): they are compared with that limit"
            )
        )
        return Prediction("ok", note, ft, fte, mse_loss(ft, self.run.y), mse_loss(fte, self.run.y_test), flow_time=taus)

    def _matched_ce(self, f0, f0_test, real_loss):
        run = self.run
        tau0 = self.plain_crit / 2.0  # Nk / lambda_max, the top mode's time constant
        real = np.asarray(real_loss, dtype=float)
        goal = float(np.min(real))
        span = 16.0
        while True:  # integrate further until the flow's loss falls below every real one
            grid = np.concatenate([[0.0], tau0 * np.geomspace(1.0 / 64.0, span, int(24 * np.log2(64 * span)))])
            tr = flow_cross_entropy(self.k_train, run.y, f0, grid)
            if tr.train_loss[-1] <= goal or span >= MAX_FLOW_TIME:
                break
            span *= 8.0
        L = tr.train_loss
        taus, beyond = np.empty(real.size), 0
        for i, target in enumerate(real):
            if target >= L[0]:
                taus[i] = 0.0
            elif target <= L[-1]:
                taus[i], beyond = grid[-1], beyond + 1
            else:  # the flow's loss decreases: the first grid point below the target brackets it
                j = int(np.argmax(L <= target))
                w = (L[j - 1] - target) / (L[j - 1] - L[j])
                taus[i] = grid[j - 1] + w * (grid[j] - grid[j - 1])
        uniq, back = np.unique(taus, return_inverse=True)
        tr = flow_cross_entropy(
            self.k_train, run.y, f0, uniq, k_test_train=self.k_test, fx_test_0=f0_test, targets_test=run.y_test
        )
        note = (
            ""
            if not beyond
            else (
                f"{beyond} recorded step(s) of Adam reach a training loss below what gradient flow on {self.kernel_words} "
                f"reaches by tau = {grid[-1]:.4g} ({L[-1]:.4g}): they are compared with the flow there"
            )
        )
        pick = lambda a: None if a is None else np.asarray(a)[back]  # noqa: E731
        return Prediction(
            "ok",
            note,
            pick(tr.train),
            pick(tr.test),
            pick(tr.train_loss),
            pick(tr.test_loss),
            pick(tr.train_accuracy),
            pick(tr.test_accuracy),
            taus,
        )
