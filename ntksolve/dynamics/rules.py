"""Training rules: how training moves each mode of the kernel, as small immutable objects.

The linearised network trained on MSE (``docs/conventions.md``, "Training, and its closed form")
evolves mode by mode in the eigenbasis of the regularised, flattened train kernel ``Θ``. With
``r = y − f_0`` and ``N k`` target entries, every rule here has the form

    train:  f_t      = f_0   + g_t(Θ) r               g_t(λ) = 1 − p_t(λ)
    test:   f_t(X*)  = f_0*  + Θ* h_t(Θ) r            h_t(λ) = g_t(λ) / λ

where ``p_t(λ)``, the *residual factor*, is what the rule decides:

- :class:`GradientFlow`: ``p_t(λ) = exp(−η λ t / (N k))`` (continuous time ``t``, in steps);
- :class:`GradientDescent`: ``p_t(λ) = (1 − η λ / (N k))^t`` (integer ``t``); with momentum,
  Nesterov, a :class:`~ntksolve.dynamics.schedules.Schedule` or weight decay, the factors of
  :mod:`ntksolve.dynamics.schedules` (weight decay adds a second spectral function, applied to
  ``J θ_0``: :meth:`GradientDescent.affine_coefficients`).

The base class, :class:`~ntksolve.dynamics.rule_base.TrainingRule` (re-exported here with
:class:`~ntksolve.dynamics.rule_base.DivergenceWarning`), holds the per-mode math they share.
The solvers never ask which rule they hold. The eigh path evaluates :meth:`TrainingRule.mode_coefficients`
at the eigenvalues, the Lanczos path at the Ritz values (it applies any spectral function), and
the dense reference (``Expm``) asks for :meth:`TrainingRule.dense_propagator`. A new rule is a new
``residual_factor`` / ``learned_fraction`` (and, if it has one, another critical learning rate):
nothing in the solvers changes. Modes at or below ``n ε λ_max``
(:func:`ntksolve.dynamics.spectral.null_mask`) are exact zeros: ``g = h = 0`` there, so ``t = ∞``
is the pseudo-inverse.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar, Union

import numpy as np
import scipy.linalg

from ntksolve._validation import check_choice, check_learning_rate, check_real_scalar
from ntksolve.dynamics.adaptive import NO_TWIN, Adam
from ntksolve.dynamics.rule_base import DivergenceWarning, TrainingRule
from ntksolve.dynamics.descent_modes import descent_factors, rule_words, schedule_verdict
from ntksolve.dynamics.schedules import Schedule, check_momentum
from ntksolve.dynamics.stability import critical_rate

__all__ = ["TrainingRule", "GradientFlow", "GradientDescent", "DivergenceWarning", "resolve_rule", "DYNAMICS"]


#: Largest norm of the block matrix handed to ``scipy.linalg.expm`` (well inside the range where it is finite).
_EXPM_NORM = 2.0**64


def _validated_rate(rule):
    object.__setattr__(rule, "learning_rate", check_learning_rate(rule.learning_rate))


@dataclass(frozen=True)
class GradientFlow(TrainingRule):
    """Gradient flow: the continuous-time limit of gradient descent, ``ḟ = −η/(Nk) Θ (f − y)``.

    ``p_t(λ) = exp(−η λ t / (N k))``; ``t`` is any time ``≥ 0`` in units of steps. It converges at
    every learning rate (``η`` only sets the unit of time); above the critical rate it warns,
    because discrete steps would not.

    Parameters
    ----------
    learning_rate : float, default 1.0
        ``η > 0``.
    """

    name: ClassVar[str] = "continuous"
    stability_required: ClassVar[bool] = False
    has_dense_reference: ClassVar[bool] = True
    learning_rate: float = 1.0

    def __post_init__(self):
        _validated_rate(self)

    # η λ t/(Nk) past the float range is inf, whose exponential is the converged mode's exact 0.
    @np.errstate(over="ignore")
    def residual_factor(self, lam, ts, size):
        return np.exp(-np.outer(self.learning_rate / size * np.asarray(ts, dtype=np.float64), lam))

    @np.errstate(over="ignore")
    def learned_fraction(self, lam, ts, size):
        fin = np.isfinite(ts)
        g = np.empty((ts.size, np.size(lam)))
        s = self.learning_rate / size * ts[fin]
        g[fin] = -np.expm1(-np.outer(s, lam))  # 1 − e^{−λs} without cancellation
        g[~fin] = 1.0
        return g

    def dense_propagator(self, A, t, size):
        # Van Loan 1978: expm([[−sA, sI], [0, 0]]) = [[e^{−sA}, A⁻¹(I − e^{−sA})], [0, I]], no inverse.
        n = A.shape[0]
        s = self.learning_rate / size * float(t)  # Python floats: inf past the range, no warning
        # scipy's expm returns NaN once the matrix's norm passes ~1e38 (huge t): take the exponential
        # at s / 2^j, inside its range, and square j times by the semigroup law of the block matrix,
        # E(2s) = E(s)², H(2s) = H(s) + E(s) H(s).
        if not np.isfinite(s):
            raise ValueError(
                f"η t/(Nk) overflows at t={t:g} steps (learning_rate={self.learning_rate:g}, Nk={size}): "
                "the flow has converged long before; pass t=np.inf for the converged limit"
            )
        log_norm = np.log2(s) + np.log2(max(float(np.max(np.sum(np.abs(A), axis=0))), 1.0)) if s > 0 else -np.inf
        j = int(np.ceil(log_norm - np.log2(_EXPM_NORM))) if log_norm > np.log2(_EXPM_NORM) else 0
        s0 = float(np.ldexp(s, -j))
        Z = np.zeros((2 * n, 2 * n))
        Z[:n, :n] = -s0 * A
        Z[:n, n:] = s0 * np.eye(n)
        B = scipy.linalg.expm(Z)
        E, H = B[:n, :n], B[:n, n:]
        for _ in range(j):
            H = H + E @ H
            E = E @ E
        return E, H


@dataclass(frozen=True, repr=False)
class GradientDescent(TrainingRule):
    """Full-batch gradient descent as ``torch.optim.SGD`` runs it: ``f ← f − η_s/(Nk) Θ (f − y)`` and its variants.

    Plain constant descent has ``p_t(λ) = (1 − η λ / (N k))^t`` for integer ``t``; momentum
    (heavy ball or Nesterov, dampening 0, empty buffer at the start), a learning-rate
    :class:`~ntksolve.dynamics.schedules.Schedule` and weight decay move every mode by the
    per-mode factors of :func:`~ntksolve.dynamics.schedules.mode_factors` /
    :func:`~ntksolve.dynamics.schedules.weight_decay_mode_factors` (``docs/training-rules.md``).
    At or above the critical rate the solvers refuse unless ``allow_divergence=True``.

    Parameters
    ----------
    learning_rate : float or Schedule, default 1.0
        ``η > 0``, or the rate of every step (``Schedule.cosine(0.5, 1000)``, any array of rates
        as ``Schedule(rates)``). This is the one place a schedule goes; a constant schedule is
        stored as its rate (the two are the same rule).
    momentum : float in [0, 1), default 0.0
        ``μ`` of ``torch.optim.SGD``.
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0``).
    weight_decay : float ≥ 0, default 0.0
        ``w`` of ``torch.optim.SGD`` (``w θ`` added to every parameter's gradient). It pulls the
        parameters towards zero, so the outputs feel the network's own ``J θ_0``: predictions then
        need ``jtheta_train`` (and ``jtheta_test``), see :meth:`MSEPredictor.predict`.

    Notes
    -----
    Times are integer steps. ``t = ∞`` is the converged limit: for a constant rate below the
    critical one it is kernel regression (with momentum too; with weight decay the ridge limit
    of the decayed quadratic). A non-constant schedule has no single limit (a decaying one stops
    short of convergence), so ``t = ∞`` is refused there; an array schedule must give a rate for
    every step up to the last one requested (it is not extended).
    """

    name: ClassVar[str] = "discrete"
    stability_required: ClassVar[bool] = True
    learning_rate: Union[float, Schedule] = 1.0
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self):
        lr = self.learning_rate
        if isinstance(lr, Schedule):
            if lr.is_constant:
                object.__setattr__(self, "learning_rate", float(lr.rates(1)[0]))
        elif isinstance(lr, np.ndarray) and lr.ndim == 1:
            raise TypeError("pass a learning rate per step as learning_rate=Schedule(rates), not as a bare array")
        else:
            _validated_rate(self)
        mu, nesterov = check_momentum(self.momentum, self.nesterov)
        object.__setattr__(self, "momentum", mu)
        object.__setattr__(self, "nesterov", nesterov)
        object.__setattr__(self, "weight_decay", check_real_scalar(self.weight_decay, "weight_decay", low=0.0))

    def __repr__(self):
        extra = "".join(
            f", {f}={getattr(self, f)!r}"
            for f, d in (("momentum", 0.0), ("nesterov", False), ("weight_decay", 0.0))
            if getattr(self, f) != d
        )
        return f"GradientDescent(learning_rate={self.learning_rate!r}{extra})"

    # -- what kind of descent
    schedule = property(
        lambda self: self.learning_rate if isinstance(self.learning_rate, Schedule) else None,
        doc="The :class:`Schedule` of a non-constant rate, else None.",
    )

    @property
    def plain(self):
        """Constant rate, no momentum, no weight decay: the exact ``(1 − c)^t`` path."""
        return self.schedule is None and self.momentum == 0.0 and self.weight_decay == 0.0

    @property
    def has_dense_reference(self):
        """The dense reference (``method="expm"``) covers plain constant-rate descent only."""
        return self.plain

    @property
    def kernel_regression_limit(self):
        """``t = ∞`` is kernel regression: a constant rate (momentum allowed) without weight decay."""
        return self.schedule is None and self.weight_decay == 0.0

    @property
    def needs_parameters(self):
        """Weight decay acts on the parameters: predictions need ``J θ_0`` on train and test."""
        return self.weight_decay > 0.0

    def _check_finite_times(self, ts):
        bad = ts[ts != np.round(ts)]
        if bad.size:
            raise ValueError(
                "discrete dynamics need integer numbers of steps t (or np.inf); got non-integer "
                f"{bad[:3].tolist()}; use dynamics='continuous' for gradient flow"
            )

    def check_times(self, t):
        ts, scalar = super().check_times(t)
        if self.schedule is not None and not np.all(np.isfinite(ts)):
            raise ValueError(
                f"t = inf has no meaning for the schedule {self.schedule!r}: a schedule has no single converged "
                "limit (a decaying one stops short of it); ask for finite steps, e.g. the schedule's total steps"
            )
        return ts, scalar

    # -- the per-mode math
    def residual_factor(self, lam, ts, size):
        if self.plain:
            c = self.learning_rate / size * np.asarray(lam, dtype=np.float64)
            with np.errstate(over="ignore"):
                return np.power(1.0 - c, np.asarray(ts, dtype=np.float64)[:, None])
        return 1.0 - self._factors(np.asarray(lam, dtype=np.float64), None, ts, size)[0]

    def learned_fraction(self, lam, ts, size):
        if not self.plain:
            return self._factors(np.asarray(lam, dtype=np.float64), None, ts, size)[0]
        c = self.learning_rate / size * np.asarray(lam, dtype=np.float64)  # ηλ/(Nk)
        fin = np.isfinite(ts)
        g = np.empty((ts.size, c.size))
        if not np.all(fin):
            if np.any(c >= 2.0):
                raise ValueError(
                    "discrete gradient descent diverges (η λ_max/(Nk) ≥ 2), so t = inf has no limit; "
                    "lower learning_rate below critical_learning_rate or ask for finite t"
                )
            g[~fin] = 1.0
        tf = ts[fin][:, None]
        pos = c < 1.0
        with np.errstate(over="ignore", invalid="ignore"):
            # b = 1 − c > 0: 1 − b^t = −expm1(t log1p(−c)); b ≤ 0 (oscillating): the integer power.
            gp = -np.expm1(tf * np.log1p(-np.where(pos, c, 0.0)))
            gn = 1.0 - np.power(1.0 - c, tf)
        g[fin] = np.where(pos, gp, gn)
        return g

    def mode_coefficients(self, lam, null, ts, size, need_test=True):
        if self.plain:
            return super().mode_coefficients(lam, null, ts, size, need_test)
        g, h = self._factors(np.asarray(lam, dtype=np.float64), null, ts, size)[:2]
        return g, (h if need_test else None)

    def affine_coefficients(self, lam, null, ts, size):
        """Weight decay's coefficients ``(g_B, h_B, P_t(w))`` of ``J θ_0`` (:mod:`~ntksolve.dynamics.descent_modes`)."""
        _, _, gB, hB, free = self._factors(np.asarray(lam, dtype=np.float64), null, ts, size)
        return gB, hB, free

    def _factors(self, lam, null, ts, size):
        """``(g, h, g_B, h_B, free)`` of the non-plain rules (:func:`~ntksolve.dynamics.descent_modes.descent_factors`)."""
        return descent_factors(self, lam, null, ts, size)

    def dense_propagator(self, A, t, size):
        if not self.has_dense_reference:
            raise NotImplementedError(
                f"the dense reference (method='expm') covers plain constant-rate descent only, not {self!r}; "
                "use method='eigh' or 'krylov'"
            )
        # [[B, cI], [0, I]]^t = [[B^t, c Σ_{j<t} B^j], [0, I]] with B = I − cA, and c Σ_{j<t} B^j = A⁻¹(I − B^t).
        n = A.shape[0]
        c = self.learning_rate / size
        eye = np.eye(n)
        Z = np.zeros((2 * n, 2 * n))
        Z[:n, :n] = eye - c * A
        Z[:n, n:] = c * eye
        Z[n:, n:] = eye
        E = np.linalg.matrix_power(Z, int(t))
        return E[:n, :n], E[:n, n:]

    # -- stability
    def critical_learning_rate(self, lmax, size):
        """The constant rate where the top mode stops converging (:func:`~ntksolve.dynamics.stability.critical_rate`).

        ``2 N k / λ_max`` plain, ``2 (1 + μ) N k / λ_max`` heavy ball, ``2 (1 + μ) N k / ((1 + 2μ) λ_max)``
        Nesterov; weight decay moves ``λ_max`` to ``λ_max + w N k``. For a schedule it is the bound
        its constant pieces are held to (the verdict on the schedule is :meth:`check_divergence`'s).
        """
        if self.plain:
            return super().critical_learning_rate(lmax, size)
        return critical_rate(
            max(float(lmax), 0.0) + self.weight_decay * size, size=size, momentum=self.momentum, nesterov=self.nesterov
        )

    checks_per_call = property(
        lambda self: self.schedule is not None,
        doc="A schedule is judged on the steps of each prediction (how far it runs).",
    )

    def check_divergence(self, lmax, size, *, allow_divergence=False, stacklevel=2, eigenvalues=None, n_steps=None):
        """As :meth:`TrainingRule.check_divergence`; a schedule is judged by
        :func:`~ntksolve.dynamics.stability.schedule_stability` over its first ``n_steps`` steps on
        ``eigenvalues`` (all of them when known, else ``[λ_max]``); without ``n_steps`` it is not judged."""
        if self.schedule is None:
            crit = self.critical_learning_rate(lmax, size)
            if self.learning_rate < crit:
                return
            if self.plain:
                msg = (
                    f"learning_rate={self.learning_rate:g} ≥ critical learning rate 2Nk/λ_max = {crit:.6g}: "
                    "real (discrete) gradient descent at this rate diverges"
                )
            else:
                msg = (
                    f"learning_rate={self.learning_rate:g} ≥ critical learning rate {crit:.6g} of "
                    f"{rule_words(self)}: real training at this rate diverges"
                )
        else:
            if not n_steps:
                return
            msg = schedule_verdict(self, lmax, size, eigenvalues, n_steps)
            if msg is None:
                return
        if not allow_divergence:
            raise ValueError(msg + "; lower learning_rate, or pass allow_divergence=True to compute it anyway")
        warnings.warn(
            msg + " (allow_divergence=True: computing it anyway)", DivergenceWarning, stacklevel=stacklevel + 1
        )


#: The ``dynamics=`` names and the rules they build.
_RULES = {GradientFlow.name: GradientFlow, GradientDescent.name: GradientDescent}
DYNAMICS = tuple(_RULES)
#: Optimisers whose step depends on each parameter's own gradient history: no function-space twin.
ADAPTIVE = (
    "adam",
    "adamw",
    "adamax",
    "nadam",
    "radam",
    "rmsprop",
    "adagrad",
    "adadelta",
    "sparseadam",
    "rprop",
    "lbfgs",
    "adafactor",
    "lion",
    "sophia",
    "lamb",
)


def resolve_rule(dynamics, learning_rate=None):
    """The rule object for ``dynamics=`` (a name or a rule) and ``learning_rate=``.

    Parameters
    ----------
    dynamics : {"continuous", "discrete"} or TrainingRule
        An :class:`~ntksolve.dynamics.adaptive.Adam` (or an adaptive optimiser's name) is a
        ValueError: it has no function-space twin.
    learning_rate : float, optional
        With a name: ``η`` (default 1.0). With a rule: must be None (the rule carries its own).

    Returns
    -------
    rule : TrainingRule
    """
    if isinstance(dynamics, Adam):
        raise dynamics.no_twin_error()
    if isinstance(dynamics, TrainingRule):
        if learning_rate is not None:
            raise TypeError(
                f"dynamics={dynamics!r} carries its own learning rate; pass learning_rate=None (or leave "
                f"it out) and put the rate in the rule, e.g. {type(dynamics).__name__}(learning_rate={learning_rate!r})"
            )
        return dynamics
    if not isinstance(dynamics, str):
        raise TypeError(
            f"dynamics must be one of {', '.join(map(repr, DYNAMICS))} or a training rule such as "
            f"GradientDescent(learning_rate=0.5), got {dynamics!r}"
        )
    if dynamics.strip().lower() in ADAPTIVE:
        raise ValueError(
            f"dynamics={dynamics!r}: {NO_TWIN}; train the network itself (ntksolve.train_network with "
            "dynamics=Adam(...), or your own PyTorch loop), or predict SGD with GradientDescent(learning_rate, "
            "momentum=..., nesterov=...)"
        )
    cls = _RULES[check_choice(dynamics, "dynamics", DYNAMICS)]
    return cls(1.0 if learning_rate is None else learning_rate)
