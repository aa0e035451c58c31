"""The per-mode coefficients of :class:`~ntksolve.dynamics.rules.GradientDescent`'s variants, for the solvers.

Private. :mod:`ntksolve.dynamics.schedules` computes the factors of momentum, Nesterov, schedules
and weight decay at sorted step counts; this module turns them into what a solver asks of a rule:
coefficients at any (unsorted, repeated, infinite) times, with null modes exact zeros, and the
verdict on a schedule's stability. With ``r = y − f_0`` and ``b = J θ_0`` (weight decay only):

    f_t  = f_0  + g(Θ) r + g_B(Θ) b
    f*_t = f*_0 + Θ* [h(Θ) r + h_B(Θ) b] − (1 − P_t(w)) J* θ_0

where (:class:`~ntksolve.dynamics.schedules.WeightDecayFactors`) ``g = 1 − residual − forcing``,
``h = test``, ``g_B = −forcing``, ``h_B = test − image``, ``P_t(w) = free``; without weight decay
``g = gain``, ``h = test`` of :func:`~ntksolve.dynamics.schedules.mode_factors` and ``b`` is absent.
"""

from __future__ import annotations

import numpy as np

from ntksolve.dynamics.schedules import mode_factors, weight_decay_mode_factors
from ntksolve.dynamics.stability import schedule_stability

__all__ = ["descent_factors", "schedule_verdict", "AffinePart", "unseen_decay", "rule_words", "check_limit"]


def rule_words(rule):
    """How error messages name a descent rule."""
    words = "Nesterov momentum" if rule.nesterov else ("heavy-ball momentum" if rule.momentum else "gradient descent")
    return words + (" with weight decay" if rule.weight_decay else "")


def check_limit(rule, lam_live, size):
    """``t = ∞`` needs a convergent rule: a ValueError at or above the critical constant rate."""
    lmax = float(np.max(lam_live)) if lam_live.size else 0.0
    crit = rule.critical_learning_rate(lmax, size)
    if rule.learning_rate >= crit:
        raise ValueError(
            f"{rule_words(rule)} diverges at learning_rate={rule.learning_rate:g} (critical {crit:.6g}), "
            "so t = inf has no limit; lower learning_rate below the critical rate or ask for finite t"
        )


def descent_factors(rule, lam, null, ts, size):
    """``(g, h, g_B, h_B, free)``: shapes (T, m) ×4 and (T,); ``np.inf`` in ``ts`` is the limit.

    Parameters
    ----------
    rule : GradientDescent
    lam : ndarray, shape (m,)
        Eigenvalues or Ritz values of the regularised kernel.
    null : ndarray of bool, shape (m,), or None
    ts : ndarray, shape (T,)
        Integer steps or ``np.inf`` (refused by the rule for a schedule).
    size : int
        ``N k``.
    """
    lam = np.asarray(lam, dtype=np.float64)
    null = np.zeros(lam.size, dtype=bool) if null is None else np.asarray(null, dtype=bool)
    lam = np.where(null, 0.0, np.maximum(lam, 0.0))  # Ritz values may be rounding-level negative
    T, n, w = ts.size, lam.size, rule.weight_decay
    g, h, gB, hB = (np.zeros((T, n)) for _ in range(4))
    free = np.zeros(T)
    fin = np.isfinite(ts)
    live = ~null
    if np.any(~fin):
        check_limit(rule, lam[live], size)
        hess = lam[live] + w * size  # the Hessian's eigenvalues, in kernel units
        idx = np.ix_(~fin, live)
        g[idx], h[idx] = lam[live] / hess, 1.0 / hess
        if w:
            gB[idx], hB[idx] = -(w * size) / hess, 1.0 / hess
    if np.any(fin):
        # float64 (integer-valued, checked by the rule): a count past 2^63 must not wrap in an int64
        steps, back = np.unique(ts[fin], return_inverse=True)
        kw = dict(
            size=size, learning_rate=rule.learning_rate, momentum=rule.momentum, nesterov=rule.nesterov, null=null
        )
        rows = np.flatnonzero(fin)
        if not w:
            fac = mode_factors(lam, steps, **kw)
            g[rows], h[rows] = fac.gain[back], fac.test[back]
        else:
            fac = weight_decay_mode_factors(lam, steps, weight_decay=w, **kw)
            g[rows] = ((1.0 - fac.residual - fac.forcing) * live)[back]
            h[rows] = fac.test[back]
            gB[rows] = -fac.forcing[back]
            hB[rows] = (fac.test - fac.image)[back]
            free[rows] = fac.free[back]
    return g, h, gB, hB, free


def schedule_verdict(rule, lmax, size, eigenvalues, n_steps):
    """The divergence message of a scheduled rule over its first ``n_steps`` steps, or None if it is stable.

    Every given mode is iterated (:func:`~ntksolve.dynamics.stability.schedule_stability`): all
    eigenvalues when known, else ``[λ_max]``; weight decay shifts them by ``w N k``.
    """
    lam = np.atleast_1d(np.asarray(lmax if eigenvalues is None else eigenvalues, dtype=np.float64))
    lam = np.maximum(lam, 0.0) + rule.weight_decay * size
    v = schedule_stability(
        lam, int(n_steps), size=size, learning_rate=rule.schedule, momentum=rule.momentum, nesterov=rule.nesterov
    )
    if not v.diverges:
        return None
    crit = rule.critical_learning_rate(float(np.max(lam)) - rule.weight_decay * size, size)
    return (
        f"the schedule {rule.schedule!r} with {rule_words(rule)} diverges within {int(n_steps)} steps: "
        f"a residual mode grows {v.amplification:.3g}-fold (at step {v.peak_step}), last-step spectral "
        f"radius {v.final_radius:.4g}; the constant-rate critical learning rate is {crit:.6g}"
    )


class AffinePart:
    """The rule seen by a solver for weight decay's second column: coefficients ``(g_B, h_B)`` of ``J θ_0``.

    The solvers only ask a rule for :meth:`mode_coefficients`, so the term in ``J θ_0`` is solved by
    the same solver (eigh on the cached decomposition, or one more Lanczos run).
    """

    def __init__(self, rule):
        self.rule = rule

    def mode_coefficients(self, lam, null, ts, size, need_test=True):
        _, _, gB, hB, _ = descent_factors(self.rule, lam, null, ts, size)
        return gB, (hB if need_test else None)


def unseen_decay(rule, ts, size):
    """``P_t(w)``, shape (T,): how much of ``J* θ_0`` outside the train kernel's reach is left."""
    return descent_factors(rule, np.zeros(1), np.ones(1, dtype=bool), ts, size)[4]
