"""Per-mode recurrences of the linearised training rules, one pass over the steps per mode.

Private. The public layer is :mod:`ntksolve.dynamics.schedules`, which validates and converts.

For a mode with scaled eigenvalue ``a = λ/(Nk)`` the train residual and the momentum buffer of
heavy ball (PyTorch ``SGD``, dampening 0, ``u_0 = 0``) obey, with ``u = a w``,

    w_{s+1} = μ w_s + r_s
    r_{s+1} = r_s − η_s a w_{s+1}                       (heavy ball)
    r_{s+1} = r_s − η_s a (r_s + μ w_{s+1})             (Nesterov)

from ``r_0 = 1``, so ``r_s = P_s(a)``. The test coefficient ``c_s = (1 − P_s(a))/a`` takes the same
increments without the factor ``a``:

    c_{s+1} = c_s + η_s w_{s+1}                          (heavy ball)
    c_{s+1} = c_s + η_s (r_s + μ w_{s+1})                (Nesterov)

from ``c_0 = 0``. Both hold for every ``a`` including ``0``, where ``c_s`` is the exact limit
``−dP_s/da`` (for plain descent ``Σ_j η_j``): no division by ``a``, no subtraction of nearly equal
numbers. The residual is carried in its own recurrence (not as ``1 − a c``) so that a decayed
mode keeps its relative accuracy.

Every kernel loops mode by mode, all state in registers; ``O(S_max)`` work per mode.
"""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True, nogil=True)
def momentum_modes(a, rates, mu, nesterov, steps, null, P, C):
    """``P[t, i] = P_{steps[t]}(a_i)`` and ``C[t, i] = (1 − P)/a_i`` (its limit at ``a_i = 0``).

    Parameters
    ----------
    a : (n,) float64, scaled eigenvalues ``λ/(Nk)``
    rates : (S,) float64, ``η_0 … η_{S−1}`` with ``S ≥ steps[-1]``
    mu : float, momentum in [0, 1)
    nesterov : bool
    steps : (T,) int64, ascending (repeats allowed)
    null : (n,) bool, exact-zero modes: ``P = 1``, ``C = 0``
    P, C : (T, n) float64 outputs
    """
    n = a.shape[0]
    T = steps.shape[0]
    for i in range(n):
        if null[i]:
            for t in range(T):
                P[t, i] = 1.0
                C[t, i] = 0.0
            continue
        ai = a[i]
        r = 1.0
        w = 0.0
        c = 0.0
        t = 0
        s = 0
        while True:
            while t < T and steps[t] == s:
                P[t, i] = r
                C[t, i] = c
                t += 1
            if t == T:
                break
            eta = rates[s]
            if mu == 0.0:
                # plain descent: the exact product of (1 − η_j a), factor by factor
                c += eta * r
                r *= 1.0 - eta * ai
            elif nesterov:
                w = mu * w + r
                g = r + mu * w
                c += eta * g
                r -= eta * ai * g
            else:
                w = mu * w + r
                c += eta * w
                r -= eta * ai * w
            s += 1


@njit(cache=True, nogil=True)
def decay_difference(a, wd, rates, mu, nesterov, steps, null, D):
    """``D[t, i] = (P_s(wd) − P_s(wd + a_i)) / a_i`` at ``s = steps[t]`` (``−P_s'(wd)`` at ``a_i = 0``).

    Carried as the first column of ``Z_s = (X_s − Y_s)/a``, with ``X_s``, ``Y_s`` the products of
    the per-step matrices at ``wd + a`` and at ``wd``: ``Z_{s+1} = M_s(wd + a) Z_s + E_s Y_s``,
    ``E_s = dM_s/dx``, so no difference of nearly equal numbers is ever formed. State ``(r, u)``
    with ``M = [[1 − η x, −η μ], [x, μ]]`` (heavy ball) or ``[[1 − η x (1+μ), −η μ²], [x, μ]]``
    (Nesterov); ``E = [[−η m, 0], [1, 0]]`` with ``m = 1`` or ``1 + μ``.

    Parameters as :func:`momentum_modes`; ``wd`` the weight decay (> 0); ``D`` (T, n) output
    (zero on null modes).
    """
    n = a.shape[0]
    T = steps.shape[0]
    m = 1.0 + mu if nesterov else 1.0
    for i in range(n):
        if null[i]:
            for t in range(T):
                D[t, i] = 0.0
            continue
        x = wd + a[i]
        yr = 1.0
        yu = 0.0
        zr = 0.0
        zu = 0.0
        t = 0
        s = 0
        while True:
            while t < T and steps[t] == s:
                D[t, i] = -zr
                t += 1
            if t == T:
                break
            eta = rates[s]
            if nesterov:
                m11x = 1.0 - eta * x * m
                m11w = 1.0 - eta * wd * m
                m12 = -eta * mu * mu
            else:
                m11x = 1.0 - eta * x
                m11w = 1.0 - eta * wd
                m12 = -eta * mu
            nzr = m11x * zr + m12 * zu - eta * m * yr
            nzu = x * zr + mu * zu + yr
            nyr = m11w * yr + m12 * yu
            nyu = wd * yr + mu * yu
            zr, zu, yr, yu = nzr, nzu, nyr, nyu
            s += 1


@njit(cache=True, nogil=True)
def peak_residual(a, rates, mu, nesterov, null, peak, at):
    """Largest ``|P_s(a_i)|`` over ``s = 0 … S`` (``S = len(rates)``) and the step where it occurs.

    Parameters
    ----------
    a, mu, nesterov, null : as :func:`momentum_modes`
    rates : (S,) float64
    peak : (n,) float64 output; ``inf`` once a residual overflows or turns NaN
    at : (n,) int64 output
    """
    n = a.shape[0]
    S = rates.shape[0]
    for i in range(n):
        peak[i] = 1.0
        at[i] = 0
        if null[i]:
            continue
        ai = a[i]
        r = 1.0
        w = 0.0
        for s in range(S):
            eta = rates[s]
            if nesterov:
                w = mu * w + r
                r -= eta * ai * (r + mu * w)
            else:
                w = mu * w + r
                r -= eta * ai * w
            v = abs(r)
            if not math.isfinite(v):
                peak[i] = math.inf
                at[i] = s + 1
                break
            if v > peak[i]:
                peak[i] = v
                at[i] = s + 1
