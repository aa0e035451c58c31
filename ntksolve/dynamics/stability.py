"""Stability of momentum and schedules: the critical constant rate, and the verdict on a schedule.

The reasoning is in ``docs/training-rules.md`` ("Critical rates and divergence").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ntksolve import _config
from ntksolve._jit.modes import peak_residual
from ntksolve.dynamics.schedules import _check_modes, _count, _real, as_schedule, check_momentum

__all__ = ["critical_rate", "Stability", "schedule_stability"]


# --- stability -------------------------------------------------------------------------------------


def critical_rate(lam_max, *, size, momentum=0.0, nesterov=False) -> float:
    """The constant learning rate at which the top mode stops converging.

    Heavy ball ``2 (1 + μ) N k / λ_max``, Nesterov ``2 (1 + μ) N k / ((1 + 2μ) λ_max)``; plain
    descent (``μ = 0``) ``2 N k / λ_max``. Below it every mode's per-step matrix has spectral radius
    under 1; at it the top mode's root is ``−1``.

    Parameters
    ----------
    lam_max : float
        Largest eigenvalue of the (flattened) train kernel.
    size : float
        ``N k``.
    momentum, nesterov : as :func:`mode_factors`

    Returns
    -------
    eta_crit : float (``inf`` for ``lam_max = 0``)
    """
    lmax = _real(lam_max, "lam_max")
    size = _real(size, "size", positive=True)
    mu, nesterov = check_momentum(momentum, nesterov)
    if lmax == 0.0:
        return np.inf
    return 2.0 * (1.0 + mu) * size / (((1.0 + 2.0 * mu) if nesterov else 1.0) * lmax)


class Stability(NamedTuple):
    """The verdict of :func:`schedule_stability`.

    amplification : float
        ``max_{s, λ} |P_s(λ)|``: how far any residual mode grows above its start (1 if never).
    peak_step : int
        The step where it does.
    final_radius : float
        Spectral radius of the last step's matrix for the top mode (above 1: still growing at the end).
    diverges : bool
        ``amplification > bound`` or ``final_radius > 1`` (or an overflow).
    """

    amplification: float
    peak_step: int
    final_radius: float
    diverges: bool


def _radius(x, mu, nesterov):
    """Spectral radius of the 2×2 step matrix at ``x = η a``."""
    tr, det = ((1.0 + mu) * (1.0 - x), mu * (1.0 - x)) if nesterov else (1.0 + mu - x, mu)
    disc = tr * tr - 4.0 * det
    if disc < 0:
        return float(np.sqrt(det))
    return float(abs(tr) + np.sqrt(disc)) / 2.0


def schedule_stability(
    eigenvalues, n_steps, *, size, learning_rate, momentum=0.0, nesterov=False, null=None, bound=None
) -> Stability:
    """Judge whether a schedule diverges: iterate every given mode's 2×2 recurrence along it.

    Cheap (``O(n_steps · n)``); pass all eigenvalues, or only the top few. Every mode is checked
    because with a varying rate the top mode alone can miss growth: a step far above the critical
    rate followed by one that zeroes the top mode leaves the modes below it amplified.

    Parameters
    ----------
    eigenvalues : array_like, shape (n,)
    n_steps : int
    size, learning_rate, momentum, nesterov, null
        As :func:`mode_factors`.
    bound : float, optional
        Largest tolerated amplitude growth; default ``√DIVERGENCE_FACTOR`` (the loss criterion of
        :func:`ntksolve.train_network`, in amplitude).

    Returns
    -------
    Stability
    """
    lam, _, size, null = _check_modes(eigenvalues, [0], size, null)
    n = _count(n_steps, "n_steps")
    mu, nesterov = check_momentum(momentum, nesterov)
    bound = np.sqrt(_config.DIVERGENCE_FACTOR) if bound is None else _real(bound, "bound", positive=True)
    rates = as_schedule(learning_rate).rates(n)
    a = lam / size
    peak = np.empty(a.size)
    at = np.empty(a.size, dtype=np.int64)
    peak_residual(np.ascontiguousarray(a), np.ascontiguousarray(rates), mu, nesterov, null, peak, at)
    live = np.flatnonzero(~null)
    if live.size == 0:
        return Stability(1.0, 0, 0.0, False)
    i = live[np.argmax(peak[live])]
    radius = _radius(rates[-1] * float(np.max(a[live])), mu, nesterov)
    amp = float(peak[i])
    return Stability(amp, int(at[i]), radius, bool(not np.isfinite(amp) or amp > bound or radius > 1.0))
