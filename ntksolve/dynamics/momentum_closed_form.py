"""Closed form of heavy-ball and Nesterov momentum at a constant rate: any step, no loop over steps.

Private helper of :func:`ntksolve.dynamics.schedules.mode_factors`. Per mode, with ``x = η a``
(``a = λ/(Nk)``), the step matrix ``M`` has

    heavy ball:  tr = 1 + μ − x,         det = μ,         tr² − 4 det = (x − (1 − √μ)²)(x − (1 + √μ)²)
    Nesterov:    tr = (1 + μ)(1 − x),    det = μ (1 − x), tr² − 4 det = (1 − x)((1 + μ)²(1 − x) − 4μ)

(the discriminants in factored form, so that they keep their relative accuracy near the double
roots). By Cayley–Hamilton ``M^s = p_s M − det · p_{s−1} I`` with the Lucas sequence ``p_s`` of
``(tr, det)``: ``p_s = (α^s − β^s)/(α − β)`` for the roots ``α, β``, evaluated as
``ρ^{s−1} sin(sθ)/sin θ`` for a complex pair ``ρ e^{±iθ}`` (``θ`` from ``arctan2``, never ``arccos``)
and as ``α^{s−1} (1 − q^s)/(1 − q)``, ``q = β/α``, for real roots (``−expm1``/``log1p`` when
``0 < q < 1``; ``s`` at the double root; ``[s = 1]`` when ``M`` is nilpotent). Since ``M_22 = μ``
for both rules, ``P_s = (M^s)_11 = p_{s+1} − μ p_s``.

The test coefficient ``C_s = (1 − P_s)/a`` equals ``η S_{s+1}`` (heavy ball) or
``η (S_{s+1} + μ p_s)`` (Nesterov) with ``S_{s+1} = Σ_{j ≤ s} p_j``. Where ``x`` is below a quarter
of its critical-damping value the roots are real, positive and apart, and
``S_{s+1} = (G(α) − G(β))/(α − β)`` with ``G(z) = Σ_{j ≤ s} z^j`` (``1 − α = x/(1 − β)`` exactly, so
``G(α)`` keeps its accuracy as ``a → 0`` and reaches ``s + 1`` at ``a = 0``); elsewhere ``x`` is not
small and ``(1 − P_s)/a`` loses nothing.
"""

from __future__ import annotations

import numpy as np

from ntksolve._jit.modes import momentum_modes


def _power(z, e):
    """``z ** e`` for real ``z`` of either sign and integer-valued float ``e``."""
    return np.power(z, e)


def _one_minus_power_over(q, omq, e):
    """``(1 − q^e)/(1 − q)`` for ``|q| ≤ 1``, given ``omq = 1 − q`` accurately; ``e`` at ``q = 1``."""
    pos = (q > 0) & (omq > 0)
    logq = np.where(q < 0.5, np.log(np.where(pos, q, 1.0)), np.log1p(-np.where(pos, omq, 0.0)))
    out_pos = -np.expm1(e * logq) / np.where(pos, omq, 1.0)
    out_neg = (1.0 - _power(q, e)) / np.where(omq > 0, omq, 1.0)
    return np.where(omq == 0, e, np.where(pos, out_pos, out_neg))


def _geometric(z, omz, e):
    """``Σ_{j < e} z^j = (1 − z^e)/(1 − z)`` for ``0 ≤ z ≤ 1``, ``omz = 1 − z`` given accurately."""
    pos = z > 0
    logz = np.where(z < 0.5, np.log(np.where(pos, z, 1.0)), np.log1p(-np.minimum(omz, 1.0)))
    val = -np.expm1(e * logz) / np.where(omz > 0, omz, 1.0)
    return np.where(omz == 0, e, np.where(pos, val, 1.0))


def constant_rate_modes(a, steps, eta, mu, nesterov, null):
    """``(P, C)`` at a constant rate, each (T, n); ``C = (1 − P)/a`` with its limit at ``a = 0``.

    Parameters
    ----------
    a : ndarray (n,), scaled eigenvalues ``λ/(Nk)`` (≥ 0)
    steps : ndarray (T,) int
    eta : float > 0
    mu : float in [0, 1)
    nesterov : bool
    null : ndarray (n,) bool
    """
    a = np.asarray(a, dtype=np.float64)
    s = np.asarray(steps, dtype=np.float64)[:, None]
    x = eta * a
    if mu == 0.0:
        P, C = _plain(a, x, s, eta)
        P[:, null] = 1.0
        C[:, null] = 0.0
        return P, C
    tr, det, disc = _trace_det_disc(x, mu, nesterov)
    damp = ((1.0 - mu) / (1.0 + mu)) ** 2 if nesterov else (1.0 - np.sqrt(mu)) ** 2
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        p_s, p_next = _lucas(tr, det, disc, s), _lucas(tr, det, disc, s + 1.0)
        P = p_next - mu * p_s
        C = (1.0 - P) / np.where(a > 0, a, 1.0)
        small = (x < damp / 4.0) & ~null
        if np.any(small):
            C[:, small] = eta * _partial_sum(tr[small], det[small], disc[small], x[small], s)
            if nesterov:
                C[:, small] += eta * mu * p_s[:, small]
    # Left: modes with 1/4 of critical damping <= x < 1/4 in their first steps, before they have
    # moved (|1 − P| < 1/4), where (1 − P)/a would lose log10(1/x) digits. 1 − P_s grows like
    # x s² there, so that is s < 1/√(2x), at most a few / (1 − √μ) steps: iterate those exactly.
    # (Later returns of an oscillating P close to 1 are near-zeros of C, where the absolute
    # accuracy ε/a of the formula is the accuracy of the trajectory.)
    band = (x >= damp / 4.0) & (x < 0.25) & ~null
    early = s <= 4.0 / np.sqrt(np.where(band, x, 1.0))[None, :]
    redo = (np.abs(1.0 - P) < 0.25) & band[None, :] & early
    if np.any(redo):
        cols = np.flatnonzero(np.any(redo, axis=0))
        rows = np.flatnonzero(np.any(redo, axis=1))
        sub = np.asarray(steps)[: rows[-1] + 1].astype(np.int64)  # early steps only: they fit an int64
        Pr = np.empty((sub.size, cols.size))
        Cr = np.empty_like(Pr)
        momentum_modes(
            np.ascontiguousarray(a[cols]),
            np.full(max(int(sub[-1]), 1), float(eta)),
            float(mu),
            bool(nesterov),
            sub,
            np.zeros(cols.size, dtype=bool),
            Pr,
            Cr,
        )
        P[: sub.size, cols] = Pr
        C[: sub.size, cols] = Cr
    P[:, a == 0] = 1.0  # exact: the mode is not driven
    P[:, null] = 1.0
    C[:, null] = 0.0
    return P, C


def _plain(a, x, s, eta):
    """Plain descent: ``P = (1 − x)^s`` and ``C = (1 − P)/a`` (limit ``η s`` at ``a = 0``)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        pos = x < 1.0
        lg = np.log1p(-np.where(pos, x, 0.0))
        P = np.where(pos, np.exp(s * lg), np.power(1.0 - x, s))
        gain = np.where(pos, -np.expm1(s * lg), 1.0 - P)
        C = np.where(a > 0, gain / np.where(a > 0, a, 1.0), eta * s)
    return P, C


def _two_sum(a, b):
    """``a + b = s + e`` exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(a):
    c = 134217729.0 * a  # 2^27 + 1 (Veltkamp)
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a, b):
    """``a b = p + e`` exactly (Dekker)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _trace_det_disc(x, mu, nesterov):
    """``tr``, ``det`` and ``tr² − 4 det`` of the step matrix, the last in double-double arithmetic.

    Near critical damping ``tr² ≈ 4 det`` and a plain evaluation (or the factored form, through the
    rounding of ``(1 ± √μ)²``) leaves an absolute error ``ε tr²`` that the angle ``θ`` turns into a
    relative error ``ε tr² / |disc|`` of every later ``p_s``.
    """
    m, m_lo = _two_sum(1.0, mu)
    if nesterov:
        b, b_lo = _two_sum(1.0, -x)
        t, t_lo = _two_prod(m, b)
        t_lo = t_lo + m * b_lo + m_lo * b
        d, d_lo = _two_prod(mu, b)
        d_lo = d_lo + mu * b_lo
    else:
        t, t_lo = _two_sum(m, -x)
        t_lo = t_lo + m_lo
        d, d_lo = np.full_like(x, mu), np.zeros_like(x)
    sq, sq_lo = _two_prod(t, t)
    diff, diff_lo = _two_sum(sq, -4.0 * d)
    disc = diff + (diff_lo + sq_lo + 2.0 * t * t_lo - 4.0 * d_lo)
    return t + t_lo, d + d_lo, disc


def _lucas(tr, det, disc, s):
    """``p_s`` of ``(tr, det)``, shape (T, n), for step counts ``s`` of shape (T, 1)."""
    cplx = disc < 0
    # complex pair: ρ^{s−1} sin(sθ)/sin θ. For tr < 0 (θ > π/2) it is (−1)^{s−1} times the value
    # at −tr, whose angle π − θ is small near θ = π: sin(s(π − θ)) then keeps its accuracy.
    rho = np.sqrt(np.where(cplx, det, 1.0))
    root = np.sqrt(np.where(cplx, -disc, 0.0))
    theta = np.arctan2(root, np.abs(tr))
    sin_t = np.where(cplx, root / (2.0 * rho), 1.0)
    sign = np.where(tr < 0, 1.0 - 2.0 * np.mod(s - 1.0, 2.0), 1.0)
    pc = sign * _power(rho, s - 1.0) * np.sin(s * theta) / sin_t
    # real roots: α^{s−1} (1 − q^s)/(1 − q)
    sq = np.sqrt(np.where(cplx, 0.0, disc))
    alpha = (tr + np.where(tr < 0, -sq, sq)) / 2.0
    nil = alpha == 0.0  # tr = det = 0: M² = 0
    safe = np.where(nil, 1.0, alpha)
    q = det / (safe * safe)  # β/α, with β = det/α
    omq = sq / np.abs(safe)
    pr = _power(safe, s - 1.0) * _one_minus_power_over(q, omq, s)
    pr = np.where(nil, (s == 1.0).astype(np.float64), pr)
    return np.where(cplx, pc, pr)


def _partial_sum(tr, det, disc, x, s):
    """``S_{s+1} = Σ_{j ≤ s} p_j`` for modes with real, positive, well separated roots ``α > β``."""
    sq = np.sqrt(disc)
    alpha = (tr + sq) / 2.0
    beta = det / alpha
    om_beta = 1.0 - beta
    om_alpha = x / om_beta  # (1 − α)(1 − β) = 1 − tr + det = x, exactly
    G_alpha = _geometric(alpha, om_alpha, s + 1.0)
    G_beta = _geometric(beta, om_beta, s + 1.0)
    return (G_alpha - G_beta) / sq
