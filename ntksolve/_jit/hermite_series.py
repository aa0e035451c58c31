"""The layer maps of tanh, sigmoid and softplus as Hermite series in the correlation, jitted.

Private: :func:`ntksolve.kernels._analytic_rules.series_pieces` calls :func:`series_coefficient_rows`
(the per-point coefficients from the half grid, ``O(N L n_grid T)``) and :func:`series_term_counts`; the pair kernels of :mod:`ntksolve._jit.analytic`
call :func:`series_expectations_block` for every block of pairs. The rule (grid, Hermite table)
comes from :func:`ntksolve.kernels._analytic_rules.hermite_series_rule`.

With ``u = sqrt(s1) z1``, ``v = sqrt(s2) z2`` and ``corr(z1, z2) = rho = s12 / sqrt(s1 s2)``, Mehler's
formula gives the dual activation as a power series in ``rho`` whose coefficients factor over the
two points::

    E[phi(u) phi(v)]   = sum_k A_k(s1) A_k(s2) rho^k,   A_k(s) = E[phi(sqrt(s) z) He_k(z)] / sqrt(k!)
    E[phi'(u) phi'(v)] = sum_k k A_k(s1) A_k(s2) rho^(k-1) / sqrt(s1 s2)      (Price's theorem)

so a pair costs one Horner pass in ``y = rho^2`` for both maps. tanh is odd and sigmoid
``1/2 +`` odd (``A_0 = 0, 1/2``; then odd ``k`` only); softplus is ``x/2 +`` even (``A_1 = sqrt(s)/2``
exactly, then even ``k`` only), so its series is ``A_0 A_0 + s12/4 + sum_{k even >= 2}``. The
coefficients of a point come from a trapezoidal rule on the half grid ``z >= 0`` (the parity does
the other half), and the number of terms from the point's own tail bound (Parseval,
``sum_k A_k^2 = E[phi^2]`` and ``sum_k k A_k^2 = s E[phi'^2]``)::

    |tail of E[phi phi]| <= sqrt(R1 R2),  R = rho_max^(k_T) (E[phi^2] - sum_{k < k_T} A_k^2)

(likewise for ``phi'``), valid for ``|rho| <= rho_max``; ``T`` is raised until ``R`` is below
``tol`` times the point's ``E[phi^2]`` (``s E[phi'^2]``), so every truncation error is below
``tol`` relative to ``sqrt(E1 E2)``. Pairs beyond the highest correlation level served
(identical points among them), and every pair of a point whose variance the rule does not
cover, take the Kolmogorov mixture (:func:`ntksolve._jit.expectations.logistic_expectations_block`),
the map of the per-point recursion too, so identical points keep exactly the diagonal value.

The bound holds for any pair given at least the terms of a level at or above its ``|rho|`` (more
terms only shrink the tail), which is all the block evaluation relies on: each pair's level is
found by branch-free passes (one a level, stopping above the last occupied one); one Horner pass
sums every pair of the block to the terms of a base level, the one that minimises the block's
work; the pairs above it are then gathered and summed again to the terms of a higher level, in
one or two stages (:func:`_stages`). At weight_std 1.5 (``benchmarks/bench_activations.py
--terms``) the first layer dominates: its variances reach 6, so a typical block (most pairs below
0.5, a few at 0.7 - 0.8) takes 17 terms for all its pairs and 30 - 44 for those few.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ntksolve._jit.activations import SIGMOID, SOFTPLUS, TANH, act_dact
from ntksolve._jit.expectations import logistic_expectations_block
from ntksolve._jit.scalar_math import exp


@njit(cache=True, nogil=True, error_model="numpy")
def series_coefficient_rows(variances, code, prm, grid, half_w, psi_t, s_max, coef, totals, start, step):
    """Series coefficients and Parseval totals of points ``start::step``: the activation's parity
    part on the half grid, then ``A_{k_t} = sum_m psi_t[m, t] part[m]`` (the loop over ``t``
    innermost, which vectorises, four nodes at a time; one summation order for every point, so
    identical points get identical coefficients).

    tanh and sigmoid take ``tanh`` from the arithmetic exponential
    (:func:`ntksolve._jit.scalar_math.exp`; ``tanh x = (1 - e^{-2x}) / (1 + e^{-2x})`` for
    ``x >= 0``, and ``sigmoid(x) - 1/2 = tanh(x/2) / 2``), so that the loop over the grid
    vectorises instead of calling libm at every node; its absolute error, a few ulp of 1, moves a
    coefficient by under 1e-15 (``sum_m |psi_t[m, t]| <= 1``).

    Parameters
    ----------
    variances : ndarray, shape (N,)
        One layer's per-point variances ``s``.
    code : int
        TANH, SIGMOID or SOFTPLUS.
    prm : (float, float)
    grid, half_w : ndarray, shape (n_half,)
        Half-grid nodes ``z_m = m h >= 0`` and weights: ``h phi_N(0)`` at 0, ``2 h phi_N(z_m)`` beyond
        (``phi_N`` the normal density), so that ``sum half_w f`` is the full rule of an even ``f``.
    psi_t : ndarray, shape (n_half, T_cap)
        ``half_w He_{k_t}(z_m) / sqrt(k_t!)`` (:func:`ntksolve.kernels._analytic_rules.hermite_series_rule`).
    s_max : float
        Largest variance served; other points (and ``s <= 0``, NaN) get zero coefficients and totals.
    coef : ndarray, shape (N, T_cap)
        Output: ``A_{k_t}`` of the activation's odd part ``phi(sqrt(s) z) - A_0`` (tanh, sigmoid) or
        even part ``phi - sqrt(s) z / 2`` (softplus).
    totals : ndarray, shape (N, 5)
        Output: ``A_0``, then ``E[phi^2]`` and ``s E[phi'^2]`` less the parts outside the series
        (``A_0^2``; softplus also ``A_1^2 = s/4`` and ``1 A_1^2``), then the two totals themselves.
    start, step : int
    """
    n = variances.shape[0]
    n_grid = grid.shape[0]
    t_cap = psi_t.shape[1]
    odd = code != SOFTPLUS
    a0 = 0.5 if code == SIGMOID else 0.0
    out = np.empty(n_grid)
    gd = np.empty(n_grid)
    for i in range(start, n, step):
        s = variances[i]
        row = coef[i]
        row[:] = 0.0
        if not (s > 0.0 and s <= s_max):  # NaN-safe: anything else is the mixture's
            totals[i, :] = 0.0
            continue
        sd = math.sqrt(s)
        # the derivative from the value where it is one (half the transcendental calls)
        if code == TANH:
            for m in range(n_grid):
                e = exp(-2.0 * sd * grid[m])
                f = (1.0 - e) / (1.0 + e)
                out[m] = f
                gd[m] = sd * (1.0 - f * f)
        elif code == SIGMOID:
            for m in range(n_grid):
                e = exp(-sd * grid[m])
                f = (1.0 - e) / (1.0 + e)
                out[m] = 0.5 * f
                gd[m] = 0.25 * sd * (1.0 - f * f)
        else:
            for m in range(n_grid):
                x = sd * grid[m]
                f, g = act_dact(code, prm, x)
                out[m] = f - 0.5 * x
                gd[m] = sd * (g - 0.5)  # the odd part of softplus' = sigmoid
        acc_mean = 0.0
        acc = 0.0
        acc_d = 0.0
        for m in range(n_grid):
            w = half_w[m]
            pm = out[m]
            acc_mean += w * pm
            acc += w * pm * pm
            acc_d += w * gd[m] * gd[m]
        # four nodes a pass over the row: a quarter of its loads and stores
        m4 = n_grid - n_grid % 4
        for m in range(0, m4, 4):
            p0 = out[m]
            p1 = out[m + 1]
            p2 = out[m + 2]
            p3 = out[m + 3]
            w0 = psi_t[m]
            w1 = psi_t[m + 1]
            w2 = psi_t[m + 2]
            w3 = psi_t[m + 3]
            for t in range(t_cap):
                row[t] += (w0[t] * p0 + w1[t] * p1) + (w2[t] * p2 + w3[t] * p3)
        for m in range(m4, n_grid):
            pm = out[m]
            w_row = psi_t[m]
            for t in range(t_cap):
                row[t] += w_row[t] * pm
        if odd:
            totals[i, 0] = a0
            totals[i, 1] = acc
            totals[i, 2] = acc_d
            totals[i, 3] = a0 * a0 + acc
            totals[i, 4] = acc_d
        else:
            totals[i, 0] = acc_mean
            totals[i, 1] = acc - acc_mean * acc_mean
            totals[i, 2] = acc_d
            totals[i, 3] = acc + 0.25 * s
            totals[i, 4] = acc_d + 0.25 * s


@njit(cache=True, error_model="numpy")
def series_term_counts(coef, totals, k_of, levels, tol, counts):
    """Terms each point needs at each correlation level: the first ``T`` whose tail bound
    (module docstring) is below ``tol`` for both maps.

    Parameters
    ----------
    coef : ndarray, shape (N, T_cap)
        ``A_{k_t}`` of each point.
    totals : ndarray, shape (N, 5)
        From :func:`series_coefficient_rows`; a point with zero totals is not served.
    k_of : ndarray of int64, shape (T_cap + 1,)
    levels : ndarray, shape (n_lev,)
        Correlation bounds ``rho_max``, ascending.
    tol : float
    counts : ndarray of int64, shape (N, n_lev)
        Output; ``T_cap + 1`` where ``T_cap`` terms do not suffice.
    """
    n, t_cap = coef.shape
    n_lev = levels.shape[0]
    for i in range(n):
        for v in range(n_lev):
            counts[i, v] = t_cap + 1
        e2 = totals[i, 3]
        ed2 = totals[i, 4]
        if not (e2 > 0.0):
            continue
        rest = totals[i, 1]
        rest_d = totals[i, 2]
        v = 0
        power = levels[0] ** k_of[0]  # levels[v]^k_t, kept by one product a term (k_t steps by 2)
        for t in range(t_cap + 1):
            if t > 0:
                a2 = coef[i, t - 1] * coef[i, t - 1]
                rest -= a2
                rest_d -= k_of[t - 1] * a2
                power *= levels[v] * levels[v]
            while v < n_lev and (power * rest <= tol * e2 and power / levels[v] * rest_d <= tol * ed2):
                counts[i, v] = t
                v += 1
                if v < n_lev:
                    power = levels[v] ** k_of[t]
            if v == n_lev:
                break


#: The cost of a stage of gathered pairs, in pair-terms summed in place (the unit of the base
#: pass): per term, a fixed part (a short loop) and a part per pair (an indexed load and the
#: Horner step). They only steer the choice of levels, never a value; the kernels' times hardly
#: move with them (0 / 2 to 100 / 8 measured within 3 % at weight_std 1.5).
_STAGE_TERM = 48
_STAGE_PAIR_TERM = 5


@njit(cache=True, inline="always", error_model="numpy")
def _horner(coef1, l, i, rows, off, idx, n_terms, y, q, dq, m):
    """``q = sum_t c_t y^t`` and ``dq = q'(y)`` for ``m`` pairs, ``c_t = coef1[l, t, i] rows[t, off + k_j]``
    with ``k_j = j`` (``idx`` None: the block itself) or ``idx[j]`` (gathered pairs, read in place);
    two terms a pass (fewer loads and stores of ``q``, ``dq`` per term)."""
    for j in range(m):
        q[j] = 0.0
        dq[j] = 0.0
    t = n_terms - 1
    if n_terms % 2 == 1:
        a = coef1[l, t, i]
        row = rows[t, off:]
        for j in range(m):
            q[j] = a * row[j if idx is None else idx[j]]
        t -= 1
    while t > 0:
        a = coef1[l, t, i]
        b = coef1[l, t - 1, i]
        row_a = rows[t, off:]
        row_b = rows[t - 1, off:]
        for j in range(m):
            k = j if idx is None else idx[j]
            yj = y[j]
            qa = q[j]
            d = dq[j] * yj + qa
            qa = qa * yj + a * row_a[k]
            dq[j] = d * yj + qa
            q[j] = qa * yj + b * row_b[k]
        t -= 2


@njit(cache=True, inline="always", error_model="numpy")
def _finish(even, a00, s12, rho, y, q, dq, r12):
    """One pair's ``(E[phi phi], E[phi' phi'])`` from ``q(y)``, ``q'(y)``: ``A_0 A_0 + rho q`` (odd
    series) or ``A_0 A_0 + s12 / 4 + y q`` (softplus), and their derivatives in ``s12``."""
    if even:
        return a00 + 0.25 * s12 + y * q, 0.25 + 2.0 * rho * (q + y * dq) * r12
    return a00 + rho * q, (q + 2.0 * y * dq) * r12


@njit(cache=True, error_model="numpy")
def _stages(coef1, row2, l, i, j0, n, base, highest, mix, above, level_terms, lev, y, q, dq, scratch, g_q, g_dq):
    """The pairs of a block above its base level, in stages: those above the current level, at
    the terms of the next level chosen by the same cost, until the highest one (one or two stages
    on typical data); their ``q``, ``dq`` replaced. A function of its own (not inlined), so that
    the loops of the base pass compile as without it.

    Parameters
    ----------
    coef1 : ndarray, shape (depth, T_cap, N1)
    row2 : ndarray, shape (T_cap, N2)
        This layer's coefficients of the column points.
    l, i, j0, n : int
    base, highest, mix : int
        The base level, the highest level among the block's pairs, the mixture's level.
    above : ndarray of int64, shape (n_lev + 1,)
        Served pairs above each level.
    level_terms : ndarray of int64, shape (n_lev,)
    lev, y, q, dq : ndarray, shape (>= n,)
        Each pair's level (as a float), ``rho^2``, and the base pass's sums (updated).
    scratch : ndarray, shape (8, >= n)
        Rows 6 and 7 are used.
    g_q, g_dq : ndarray, shape (>= n,)
        Scratch.
    """
    idx = scratch[6].view(np.int64)
    g_y = scratch[7]
    cur = base
    while highest > cur and level_terms[highest] > level_terms[cur]:
        m_cur = above[cur]
        nxt = highest
        best = level_terms[highest] * (_STAGE_TERM + _STAGE_PAIR_TERM * m_cur)
        for v in range(cur + 1, highest):
            cost = level_terms[v] * (_STAGE_TERM + _STAGE_PAIR_TERM * m_cur)
            if above[v] > 0:
                cost += level_terms[highest] * (_STAGE_TERM + _STAGE_PAIR_TERM * above[v])
            if cost < best:
                best = cost
                nxt = v
        # compacted without a branch (a store for every pair, the count advanced by the test):
        # the levels of neighbouring pairs are random, and a branch on them mispredicts
        m = 0
        for j in range(n):
            idx[m] = j
            g_y[m] = y[j]
            m += 1 if lev[j] > cur and lev[j] < mix else 0
        _horner(coef1, l, i, row2, j0, idx, level_terms[nxt], g_y, g_q, g_dq, m)
        for j in range(m):
            jj = idx[j]
            q[jj] = g_q[j]
            dq[jj] = g_dq[j]
        cur = nxt


@njit(cache=True, error_model="numpy")
def series_expectations_block(
    code,
    s11,
    s22,
    s12,
    n,
    r1,
    r2,
    a01,
    a02,
    coef1,
    coef2,
    l,
    i,
    j0,
    level_terms,
    levels,
    even,
    mix_var,
    mix_w,
    e_phi,
    e_dphi,
    scratch,
    gathered,
):
    """Layer map of tanh, sigmoid or softplus for ``n`` pairs of one row point: the Hermite series.

    A pair of correlation ``|rho| <= levels[v]`` takes at least ``level_terms[v]`` terms: one
    Horner pass over the whole block to the terms of a base level (the one that minimises the
    work given how many pairs lie above it), then the pairs above it, gathered (their column
    coefficients read in place) and summed again to the terms of a higher level, in stages
    (:func:`_stages`). Pairs the series does not
    serve (``|rho|`` above the highest served level, or a point without coefficients, whose ``r``
    is NaN) are gathered and take the mixture, the per-point recursion's map.

    Parameters
    ----------
    code : int
    s11 : float
        The row point's variance.
    s22, s12 : ndarray, shape (>= n,)
        Column points' variances and the covariances.
    n : int
    r1 : float
        ``1 / sqrt(s11)`` (NaN: not served).
    r2 : ndarray, shape (>= n,)
    a01 : float
        The row point's ``A_0``.
    a02 : ndarray, shape (>= n,)
        The column points' ``A_0``.
    coef1, coef2 : ndarray, shapes (depth, T_cap, N1), (depth, T_cap, N2)
        Coefficients of the row points and the column points
        (:func:`ntksolve.kernels._analytic_rules.series_pieces`).
    l, i, j0 : int
        Layer, row point, first column point.
    level_terms : ndarray of int64, shape (n_lev,)
        This layer's terms per correlation level (-1: the level is not served), non-decreasing
        over the served levels, which come first.
    levels : ndarray, shape (n_lev,)
        The correlation levels, ascending.
    even : bool
        The softplus series (even ``k``, with the linear term), else the odd one.
    mix_var, mix_w : ndarray, shape (K,)
        The mixture rule.
    e_phi, e_dphi : ndarray, shape (>= n,)
        Outputs (the stages' scratch before that).
    scratch : ndarray, shape (8, >= n)
    gathered : ndarray, shape (T_cap, >= n)
        Not used (the stages read the gathered pairs' coefficients in place); kept for the
        callers' per-thread scratch.
    """
    n_lev = levels.shape[0]
    q = scratch[0]
    dq = scratch[1]
    y = scratch[2]
    rho = scratch[3]
    r12 = scratch[4]
    lev = scratch[5]
    top = -1
    for v in range(n_lev):
        if level_terms[v] >= 0:
            top = v
    rho_max = levels[top] if top >= 0 else -1.0
    mix = top + 1  # the mixture's level
    n_mix = 0
    for j in range(n):
        r = r1 * r2[j]
        c = s12[j] * r
        r12[j] = r
        rho[j] = c
        y[j] = c * c
        # NaN (a point the series does not serve) and |rho| > rho_max: the mixture
        served = abs(c) <= rho_max
        lev[j] = 0.0 if served else mix
        n_mix += 0 if served else 1
    # level of each pair: the number of levels below |rho| (branch-free, a pass a level), and
    # above[v]: how many served pairs lie above level v
    above = np.zeros(n_lev + 1, np.int64)
    for v in range(top):
        lv = levels[v]
        cnt = 0
        for j in range(n):
            up = abs(rho[j]) > lv and lev[j] < mix
            lev[j] += 1.0 if up else 0.0
            cnt += 1 if up else 0
        above[v] = cnt
        if cnt == 0:  # no pair above this level: the passes above it would change nothing
            break
    highest = -1
    for v in range(top + 1):
        if (above[v - 1] if v > 0 else n - n_mix) > 0:
            highest = v
    # base level: n T[base] for every pair, plus the pairs above it, gathered and summed to the
    # terms of the highest level; stages (:func:`_stages`) may stop at a level between
    base = highest
    if highest >= 0:
        best = n * level_terms[highest]
        for b in range(highest - 1, -1, -1):
            cost = n * level_terms[b] + level_terms[highest] * (_STAGE_TERM + _STAGE_PAIR_TERM * above[b])
            if cost < best:
                best = cost
                base = b
    n_base = level_terms[base] if base >= 0 else 0
    _horner(coef1, l, i, coef2[l], j0, None, n_base, y, q, dq, n)
    if highest > base and level_terms[highest] > n_base:
        _stages(
            coef1,
            coef2[l],
            l,
            i,
            j0,
            n,
            base,
            highest,
            mix,
            above,
            level_terms,
            lev,
            y,
            q,
            dq,
            scratch,
            e_phi,
            e_dphi,
        )
    for j in range(n):
        e_phi[j], e_dphi[j] = _finish(even, a01 * a02[j], s12[j], rho[j], y[j], q[j], dq[j], r12[j])
    if n_mix == 0:
        return
    # the mixture's pairs
    g11 = scratch[0]
    g22 = scratch[1]
    g12 = scratch[2]
    m = 0
    for j in range(n):
        if lev[j] == mix:
            g22[m] = s22[j]
            g12[m] = s12[j]
            scratch[3, m] = j
            m += 1
    for j in range(m):
        g11[j] = s11
    logistic_expectations_block(code, g11, g22, g12, m, mix_var, mix_w, scratch[4], scratch[5], scratch[6])
    for j in range(m):
        jj = int(scratch[3, j])
        e_phi[jj] = scratch[4, j]
        e_dphi[jj] = scratch[5, j]


__all__ = ["series_coefficient_rows", "series_expectations_block"]
