"""The base of the training rules (:class:`TrainingRule`): the per-mode math every solver shares,
the checks of a prediction's times, and the one divergence check (:class:`DivergenceWarning`).

The rules themselves (:class:`~ntksolve.dynamics.rules.GradientFlow`,
:class:`~ntksolve.dynamics.rules.GradientDescent`) are in :mod:`ntksolve.dynamics.rules`, which
re-exports both names; a rule only decides its residual factor ``p_t(λ)`` (and, if it has one,
another critical learning rate).
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np

from ntksolve._validation import as_real_array

__all__ = ["TrainingRule", "DivergenceWarning"]


class DivergenceWarning(RuntimeWarning):
    """The learning rate is above the critical ``2Nk/λ_max``: real gradient descent would diverge."""


class TrainingRule:
    """Base of the training rules: the per-mode math shared by every solver.

    Subclasses are frozen dataclasses with a ``learning_rate`` field; they set ``name`` (the
    ``dynamics=`` string that builds them) and ``stability_required`` (whether a rate above the
    critical one is an error rather than a warning), and implement :meth:`residual_factor`, ideally
    :meth:`learned_fraction` (without cancellation for small ``λ t``) and :meth:`dense_propagator`.
    """

    name: ClassVar[str] = ""
    stability_required: ClassVar[bool] = False
    #: Whether predictions need ``J θ_0`` (weight decay: the analytic kernel has no parameters).
    needs_parameters: ClassVar[bool] = False
    #: Whether the divergence verdict depends on the steps of each prediction (a schedule).
    checks_per_call: ClassVar[bool] = False
    #: Whether ``t = ∞`` is kernel regression ``Θ* Θ⁺ (y − f_0)`` (not for a schedule, which has no
    #: single limit, nor for weight decay, whose limit is the decayed quadratic's).
    kernel_regression_limit: ClassVar[bool] = True
    learning_rate: float

    # -- times -------------------------------------------------------------------------------
    def check_times(self, t):
        """Validate the times of a prediction.

        Parameters
        ----------
        t : float, array_like of shape (T,), or None
            Steps since initialisation, ``≥ 0``; ``np.inf`` and ``None`` both mean convergence.

        Returns
        -------
        ts : ndarray, shape (T,), float64
        scalar : bool
            Whether ``t`` was a scalar (or None).
        """
        if t is None:
            return np.array([np.inf]), True
        arr = as_real_array(t, "t")
        if arr.ndim > 1:
            raise ValueError(f"t must be a scalar or a 1-D array of times, got shape {arr.shape}")
        ts = np.atleast_1d(arr).astype(np.float64)
        if np.any(np.isnan(ts)):
            raise ValueError("t contains NaN; times are numbers of steps ≥ 0 (np.inf allowed)")
        if np.any(ts < 0):
            raise ValueError(f"t must be non-negative (steps since initialisation), got min {ts.min():g}")
        self._check_finite_times(ts[np.isfinite(ts)])
        return ts, arr.ndim == 0

    def _check_finite_times(self, ts):
        """Hook for rules whose time is discrete."""

    # -- the per-mode math --------------------------------------------------------------------
    def residual_factor(self, lam, ts, size):
        """``p_t(λ)``: the factor by which training multiplies the residual of a mode.

        Parameters
        ----------
        lam : ndarray, shape (m,)
            Eigenvalues (or Ritz values) of the regularised flattened kernel.
        ts : ndarray, shape (T,)
            Times in steps (finite).
        size : int
            ``N k``, the number of target entries the loss averages over.

        Returns
        -------
        p : ndarray, shape (T, m), float64
        """
        raise NotImplementedError

    def learned_fraction(self, lam, ts, size):
        """``g_t(λ) = 1 − p_t(λ)`` on live modes; ``t = ∞`` allowed (the limit, 1, where it exists).

        Subclasses override it to avoid the cancellation of ``1 − p`` when ``λ t`` is small.

        Returns
        -------
        g : ndarray, shape (T, m), float64
        """
        fin = np.isfinite(ts)
        g = np.ones((ts.size, np.size(lam)))
        g[fin] = 1.0 - self.residual_factor(lam, ts[fin], size)
        return g

    def mode_coefficients(self, lam, null, ts, size, need_test=True):
        """Train coefficients ``g_t(λ)`` and test coefficients ``h_t(λ) = g_t(λ)/λ``, 0 on null modes.

        ``h`` is computed from the accurate ``g`` (``−expm1``), so small live eigenvalues keep
        their ``λ → 0`` limit ``h ≈ η t/(N k)`` without cancellation; exact-zero modes get 0
        (the pseudo-inverse), which the test side never needs (``Θ*`` is orthogonal to them).

        Parameters
        ----------
        lam : ndarray, shape (m,)
        null : ndarray of bool, shape (m,)
        ts : ndarray, shape (T,)
            Steps (``np.inf`` allowed).
        size : int
            ``N k``.
        need_test : bool
            Also return ``h``.

        Returns
        -------
        g, h : ndarrays, shape (T, m), float64 (``h`` None unless ``need_test``)
        """
        lam = np.asarray(lam, dtype=np.float64)
        if np.any(null):
            live = ~null
            g = np.zeros((ts.size, lam.size))
            g[:, live] = self.learned_fraction(lam[live], ts, size)
            if not need_test:
                return g, None
            h = np.zeros_like(g)
            h[:, live] = g[:, live] / lam[live]
            return g, h
        g = self.learned_fraction(lam, ts, size)
        return g, (g / lam if need_test else None)

    #: Whether :meth:`dense_propagator` covers this rule (``method="expm"``); checked when a
    #: predictor is built, before any decomposition.
    has_dense_reference: ClassVar[bool] = False

    def dense_propagator(self, A, t, size):
        """``(p_t(A), h_t(A))`` as matrices for one finite ``t``: the direct reference (``Expm``).

        Parameters
        ----------
        A : ndarray, shape (n, n), float64
            The regularised flattened kernel.
        t : float
        size : int

        Returns
        -------
        E, H : ndarrays, shape (n, n)
            ``f_t = f_0 + (I − E) r``, ``f*_t = f*_0 + Θ* H r``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no dense reference; use method='eigh' or 'krylov'")

    # -- stability ----------------------------------------------------------------------------
    def critical_learning_rate(self, lmax, size):
        """The rate above which discrete steps diverge: ``2 N k / λ_max`` (``np.inf`` if ``λ_max ≤ 0``)."""
        return 2.0 * size / lmax if lmax > 0 else np.inf

    def check_divergence(self, lmax, size, *, allow_divergence=False, stacklevel=2):
        """The one divergence check of every solver and kernel kind.

        At or above :meth:`critical_learning_rate`: a ValueError for rules whose closed form then
        grows without bound (``stability_required``) unless ``allow_divergence``, a
        :class:`DivergenceWarning` otherwise.

        Parameters
        ----------
        lmax : float
            ``λ_max`` of the regularised kernel (exact, or a Lanczos lower bound).
        size : int
            ``N k``.
        allow_divergence : bool
        stacklevel : int
            Of the warning, counted from the caller of this method.
        """
        crit = self.critical_learning_rate(lmax, size)
        if self.learning_rate < crit:
            return
        msg = (
            f"learning_rate={self.learning_rate:g} ≥ critical learning rate 2Nk/λ_max = {crit:.6g}: "
            "real (discrete) gradient descent at this rate diverges"
        )
        if self.stability_required and not allow_divergence:
            raise ValueError(msg + "; lower learning_rate, or pass allow_divergence=True to compute it anyway")
        tail = (
            " (allow_divergence=True: computing it anyway)"
            if self.stability_required
            else "; gradient flow (dynamics='continuous') still converges"
        )
        warnings.warn(msg + tail, DivergenceWarning, stacklevel=stacklevel + 1)
