"""How the analytic kernels evaluate a layer: the method, its rule, and the accepted variances.

Private, plain Python (nothing here is compiled): :mod:`ntksolve.kernels.analytic` chooses the
method (:func:`_method`), builds its rule (:func:`gauss_hermite_rule`, :func:`logistic_mixture_rule`,
:func:`hermite_series_rule` and the per-point series coefficients :func:`series_pieces`)
and runs the per-point recursion with its range check (:func:`_diag_pieces`) before any pair is
computed; the layer maps themselves are the numba kernels of :mod:`ntksolve._jit.expectations`.

Gauss-Hermite quadrature is only on request; its order adapts to the variance (``GH_ORDER_*`` in
``ntksolve._config``), and variances its capped order cannot integrate to 1e-8 are refused.

Accepted range: every variance at most ``ANALYTIC_MAX_VARIANCE`` (products of two stay finite), and
``ANALYTIC_MAX_VARIANCE_BOUNDED`` for erf, tanh and sigmoid, whose NTK at a nearly parallel pair
hangs on ``det``, which rounding perturbs by ``eps S^2``; before relu and the abrelu family, 0 or at
least ``ANALYTIC_MIN_VARIANCE`` (products of two stay normal); beyond, :func:`_check_variances`
raises a ValueError naming the scale and the fix.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import numpy as np

from ntksolve._config import (  # tunables live in the config module; reasons there
    ANALYTIC_MAX_VARIANCE as _MAX_VARIANCE,
    ANALYTIC_MAX_VARIANCE_BOUNDED as _MAX_VARIANCE_BOUNDED,
    GH_PAIR_WEIGHT_CUTOFF as _GH_PAIR_WEIGHT_CUTOFF,
    GH_ORDER_BASE as _ORDER_BASE,
    GH_ORDER_PER_VARIANCE as _ORDER_PER_VARIANCE,
    GH_ORDER_PER_VARIANCE_TANH as _ORDER_PER_VARIANCE_TANH,
    GH_ORDER_MAX as _ORDER_MAX,
    LOGISTIC_MIXTURE_NODES as _MIXTURE_NODES,
)
from ntksolve._validation import check_small_variances
from ntksolve._jit.activations import ABRELU, ACTIVATION_CODES, ERF, MONOMIAL, SIGMOID, SOFTPLUS, TANH
from ntksolve._jit.analytic_points import CLOSED, GAUSS_HERMITE, MIXTURE, SERIES, _diagonal_recursion, _squared_norms
from ntksolve._jit.threads import run_in_threads
from ntksolve._jit.hermite_series import series_coefficient_rows, series_term_counts
from ntksolve._jit.expectations import BOUNDED_CODES, CLOSED_FORM_CODES, LOGISTIC_CODES, PRODUCT_CODES
from ntksolve.nets.layers import Activation

_NAMES = {code: name for name, code in ACTIVATION_CODES.items()}


def as_activation(activation) -> Activation:
    """An :class:`~ntksolve.nets.layers.Activation`, from itself, its spelling, or the integer code
    of an activation without parameters (the drivers' and the tests' shorthand)."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        return Activation(activation)
    if isinstance(activation, numbers.Integral) and not isinstance(activation, bool):
        code = int(activation)
        if code in (ABRELU, MONOMIAL):
            raise ValueError(
                f"activation code {code} ({_NAMES[code]}) needs its parameters: pass an "
                f"Activation, e.g. Activation('{_NAMES[code]}(...)')"
            )
        if code not in _NAMES:
            raise ValueError(f"unknown activation code {code}")
        return Activation(_NAMES[code])
    raise TypeError(f"activation must be an Activation, its spelling or an activation code, got {activation!r}")


@functools.lru_cache(maxsize=8)
def _gauss_hermite_rule_cached(order):
    from numpy.polynomial.hermite_e import hermegauss

    nodes, weights = hermegauss(order)  # weight exp(-z^2 / 2): z is directly a standard normal
    weights = weights / weights.sum()  # sum is sqrt(2 pi); normalise so the rule is an expectation
    keep = weights[:, None] * weights[None, :] > _GH_PAIR_WEIGHT_CUTOFF
    # the weights fall off monotonically from the centre, so each kept range is contiguous
    lo = np.argmax(keep, axis=1).astype(np.int64)
    hi = (order - np.argmax(keep[:, ::-1], axis=1)).astype(np.int64)
    hi[~keep.any(axis=1)] = lo[~keep.any(axis=1)]
    for arr in (nodes, weights, lo, hi):
        arr.setflags(write=False)
    return nodes, weights, lo, hi


def gauss_hermite_rule(order):
    """The probabilists' Gauss-Hermite rule of the quadrature method.

    Parameters
    ----------
    order : int
        Nodes per dimension.

    Returns
    -------
    nodes, weights : ndarray, shape (order,)
        ``E[f(z)] ~ sum_k weights[k] f(nodes[k])`` for ``z ~ N(0, 1)``; weights sum to 1.
    lo, hi : ndarray of int64, shape (order,)
        Inner-node ranges of the 2-D rule: pairs ``(k, m)`` with ``lo[k] <= m < hi[k]`` are those
        whose product weight exceeds the cut-off.
    """
    order = int(order)
    if order < 1:
        raise ValueError(f"quadrature order must be a positive integer, got {order}")
    # fresh writable copies: numba compiles read-only arrays as a different type
    return tuple(a.copy() for a in _gauss_hermite_rule_cached(order))


def _kolmogorov_density(k):
    """Density of the Kolmogorov distribution (the limit law of ``sqrt(n) D_n``), ``k > 0``.

    Two theta-function series, each where it converges fast: ``8 k sum (-1)^{j-1} j^2 e^{-2 j^2 k^2}``
    for ``k >= 0.6``, and the derivative of ``sqrt(2 pi) / k sum_j e^{-(2j-1)^2 pi^2 / (8 k^2)}`` below.
    """
    k = np.asarray(k, dtype=float)
    out = np.empty_like(k)
    j = np.arange(1, 41, dtype=float)[:, None]
    big = k >= 0.6
    kb = k[big][None, :]
    out[big] = 8.0 * kb[0] * np.sum((-1.0) ** (j - 1) * j**2 * np.exp(-2.0 * j**2 * kb**2), axis=0)
    ks = k[~big][None, :]
    m2 = ((2.0 * j - 1.0) * np.pi) ** 2
    e = np.exp(-m2 / (8.0 * ks**2))
    out[~big] = math.sqrt(2.0 * math.pi) * np.sum(e * (m2 / (4.0 * ks**4) - 1.0 / ks**2), axis=0)
    return out


@functools.lru_cache(maxsize=4)
def _kolmogorov_rule(n):
    """The ``n``-node Gauss rule of the Kolmogorov distribution: ``E[f(K)] ~ sum_a w_a f(K_a)``.

    The Stieltjes procedure on a fine discretisation of the density (160 Gauss-Legendre panels
    of 80 nodes on ``[0.04, 6.5]``; the mass outside is below 1e-30), then Golub-Welsch.
    """
    from numpy.polynomial.legendre import leggauss
    from scipy.linalg import eigh_tridiagonal

    z, w = leggauss(80)
    edges = np.linspace(0.04, 6.5, 161)
    half = 0.5 * np.diff(edges)[:, None]
    x = (half * z[None, :] + 0.5 * (edges[1:] + edges[:-1])[:, None]).ravel()
    mass = (half * w[None, :]).ravel() * _kolmogorov_density(x)
    alpha = np.empty(n)
    beta = np.empty(n)
    p_prev = np.zeros_like(x)
    p = np.ones_like(x)
    norm_prev = 1.0
    for k in range(n):
        norm = np.sum(mass * p * p)
        alpha[k] = np.sum(mass * x * p * p) / norm
        beta[k] = norm / norm_prev if k > 0 else norm
        p, p_prev = (x - alpha[k]) * p - (beta[k] if k > 0 else 0.0) * p_prev, p
        norm_prev = norm
    nodes, vectors = eigh_tridiagonal(alpha, np.sqrt(beta[1:]))
    weights = beta[0] * vectors[0] ** 2
    weights /= weights.sum()
    for arr in (nodes, weights):
        arr.setflags(write=False)
    return nodes, weights


def logistic_mixture_rule(code, n_nodes=None):
    """Mixing variances and weights of the logistic-family layer maps.

    ``sigmoid(x) = E_K[Phi(x / 2K)]`` with ``K`` Kolmogorov-distributed, so tanh mixes sign
    functions of ``u + K z`` (``v = K^2``) and sigmoid, softplus step and relu functions of
    ``u + 2K z`` (``v = 4 K^2``).

    Parameters
    ----------
    code : int
        TANH, SIGMOID or SOFTPLUS.
    n_nodes : int, optional
        Nodes of the Kolmogorov rule; default ``LOGISTIC_MIXTURE_NODES``.

    Returns
    -------
    mix_var, mix_w : ndarray, shape (n_nodes,)
        ``v_a`` and ``w_a`` (weights summing to 1).
    """
    k, w = _kolmogorov_rule(int(n_nodes or _MIXTURE_NODES))
    v = k * k if int(code) == TANH else 4.0 * k * k
    return v, w.copy()


#: The Hermite-series layer maps of tanh, sigmoid and softplus (``ntksolve._jit.hermite_series``):
#: a pair with ``|rho| <= level`` and both variances ``<= SERIES_MAX_VARIANCE`` takes the terms its
#: level needs, the fewest for which every point's Parseval tail bound is below ``SERIES_TOLERANCE``
#: relative (so every served pair is within that of the exact map); the others take the mixture.
#: Levels: a block takes the one that minimises its work (most pairs of generic data lie below
#: 0.5, where a unit-variance tanh needs 13 odd terms, against 37 at 0.9 and 58 at 0.99), and the
#: highest ones keep the correlations of sigmoid and softplus, whose means push the deeper layers'
#: correlations to 0.9 - 0.99, off the mixture. The tolerance is the mixture's own accuracy (7e-13);
#: 10 is the range of variances the tests hold to 1e-8.
_SERIES_CORRELATIONS = np.array([0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999])
SERIES_TOLERANCE = 1e-12
SERIES_MAX_VARIANCE = 10.0
#: Largest number of series terms (every other index ``k``, up to 192); beyond, a point takes the
#: mixture.
_SERIES_MAX_TERMS = 96
#: Trapezoidal rule of the coefficients on ``[-13.5, 13.5]``: ``|He_k(z)| phi_N(z) / sqrt(k!)`` is
#: below ``phi_N(z)^(1/2)`` (Hermite functions are bounded by 1), under 1e-19 outside. The step is
#: the smaller of ``2 pi tau / 40`` (the rule's error ``exp(-2 pi tau / h)`` for an integrand
#: analytic in the strip ``|Im z| < tau``; ``tau`` the activation's nearest complex singularity,
#: ``pi / 2`` for tanh and ``pi`` for sigmoid and softplus, over ``sqrt(SERIES_MAX_VARIANCE)``) and
#: ``pi / (sqrt(2 k_max) + 8)``, which keeps the highest Hermite function's band below the rule's
#: Nyquist frequency. Measured against a rule of step 0.02 on ``[-16, 16]``: every coefficient
#: within 1e-15 for variances 0.01 ... 10.
_SERIES_HALF_WIDTH = 13.5
#: Points from which the per-point coefficients are computed on threads.
_SERIES_THREADED_POINTS = 2048
_SERIES_STRIP = {TANH: 0.5 * math.pi, SIGMOID: math.pi, SOFTPLUS: math.pi}


@functools.lru_cache(maxsize=4)
def _hermite_series_rule_cached(code):
    t_cap = _SERIES_MAX_TERMS
    even = code == SOFTPLUS
    k_of = np.arange(2 if even else 1, 2 * t_cap + 3, 2, dtype=np.int64)[: t_cap + 1]
    tau = _SERIES_STRIP[code] / math.sqrt(SERIES_MAX_VARIANCE)
    h = min(2.0 * math.pi * tau / 40.0, math.pi / (math.sqrt(2.0 * k_of[-2]) + 8.0))
    grid = h * np.arange(int(math.ceil(_SERIES_HALF_WIDTH / h)) + 1, dtype=float)
    dens = h * np.exp(-0.5 * grid * grid) / math.sqrt(2.0 * math.pi)
    half_w = np.where(grid > 0.0, 2.0 * dens, dens)
    psi = np.empty((t_cap, grid.size))
    prev, cur = np.zeros_like(grid), half_w.copy()  # w He_k / sqrt(k!) for k = -1, 0
    row = 0
    for k in range(int(k_of[-2]) + 1):
        if k == k_of[row]:
            psi[row] = cur
            row += 1
        prev, cur = cur, (grid * cur - math.sqrt(k) * prev) / math.sqrt(k + 1.0)
    for arr in (grid, half_w, psi, k_of):
        arr.setflags(write=False)
    return grid, half_w, psi, k_of, even


def hermite_series_rule(code):
    """The rule of the Hermite-series layer maps (``ntksolve._jit.hermite_series``).

    Parameters
    ----------
    code : int
        TANH, SIGMOID or SOFTPLUS.

    Returns
    -------
    grid, half_w : ndarray, shape (n_half,)
        The trapezoidal rule's nodes ``z >= 0`` and weights of an even integrand (the normal density
        times ``h`` at 0, twice that beyond): ``E[f(z)] = sum half_w f`` for an even ``f``.
    psi : ndarray, shape (T_cap, n_half)
        ``half_w He_{k_t}(grid) / sqrt(k_t!)``: ``A_{k_t} = psi @ part``, ``part`` the activation's odd
        part (tanh, sigmoid) or even part (softplus) on the grid.
    k_of : ndarray of int64, shape (T_cap + 1,)
        ``k_t``: odd indices for tanh and sigmoid, even ones from 2 for softplus.
    even : bool
        Softplus' series (even ``k``, beside ``A_0`` and the linear term).
    """
    grid, half_w, psi, k_of, even = _hermite_series_rule_cached(int(code))
    return grid.copy(), half_w.copy(), psi.copy(), k_of.copy(), even


class SeriesPieces(NamedTuple):
    """Per-point coefficients of the Hermite-series layer maps (arguments of the pair kernels)."""

    coef: np.ndarray  # (depth, T, N): A_{k_t}
    rinv: np.ndarray  # (depth, N): 1 / sqrt(s), NaN where the mixture serves the point
    a0: np.ndarray  # (depth, N): A_0 = E[phi(u)]
    level_terms: np.ndarray  # (depth, n_lev) int64: terms per correlation level, -1 if not served
    levels: np.ndarray  # (n_lev,) the correlation levels
    even: bool


def series_pieces(variance_sets, depth, phi):
    """The series coefficients of each set of points (row points, column points), with terms per
    layer and correlation level shared by both sets.

    Per layer, a level is served if every point of both sets (with a variance in range) meets its
    tail bound within the rule's terms; its term count is the most any of them needs. Points that
    meet no level take the mixture.

    Parameters
    ----------
    variance_sets : list of ndarray, shapes (depth + 1, N_s)
    depth : int
    phi : Activation

    Returns
    -------
    list of SeriesPieces, one per set
    """
    grid, half_w, psi, k_of, even = hermite_series_rule(phi.code)
    psi_t = np.ascontiguousarray(psi.T)
    levels = _SERIES_CORRELATIONS.copy()
    t_cap = psi.shape[0]
    level_terms = np.full((depth, levels.size), -1, np.int64)
    per_layer = []
    for l in range(depth):
        coefs, counts, a0s = [], [], []
        for var in variance_sets:
            n = var.shape[1]
            coef = np.empty((n, t_cap))
            totals = np.empty((n, 5))
            args = (
                np.ascontiguousarray(var[l]),
                phi.code,
                phi.params,
                grid,
                half_w,
                psi_t,
                SERIES_MAX_VARIANCE,
                coef,
                totals,
            )
            if n >= _SERIES_THREADED_POINTS:
                run_in_threads(series_coefficient_rows, *args)
            else:  # a few milliseconds of work: starting threads would cost more
                series_coefficient_rows(*args, 0, 1)
            count = np.empty((n, levels.size), np.int64)
            series_term_counts(coef, totals, k_of, levels, SERIES_TOLERANCE, count)
            coefs.append(coef)
            counts.append(count)
            a0s.append(totals[:, 0].copy())
        # a point served by the lowest level must meet every level kept for the layer
        met = [c[:, 0] <= t_cap for c in counts]
        need = np.stack([np.where(m[:, None], c, 0).max(axis=0, initial=0) for c, m in zip(counts, met)]).max(axis=0)
        for v in range(levels.size):
            if all((c[m, v] <= t_cap).all() for c, m in zip(counts, met)) and any(m.any() for m in met):
                level_terms[l, v] = need[v]
        per_layer.append((coefs, met, a0s))
    t_max = int(level_terms.max(initial=0))
    pieces = []
    for s, var in enumerate(variance_sets):
        n = var.shape[1]
        coef = np.zeros((depth, t_max, n))
        rinv = np.full((depth, n), np.nan)
        a0 = np.zeros((depth, n))
        for l, (coefs, met, a0s) in enumerate(per_layer):
            t_l = int(level_terms[l].max(initial=0))
            coef[l, :t_l] = coefs[s][:, :t_l].T
            rinv[l, met[s]] = 1.0 / np.sqrt(var[l, met[s]])
            a0[l] = a0s[s]
        pieces.append(SeriesPieces(coef, rinv, a0, level_terms, levels, bool(even)))
    return pieces


def _empty_rule():
    return np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)


def _method(code, force_quadrature, quad_order, series=True):
    """CLOSED, SERIES (MIXTURE with ``series=False``), or GAUSS_HERMITE when forced (any activation)
    or an order is given (not for the closed forms, which ignore it)."""
    if force_quadrature or (quad_order is not None and code not in CLOSED_FORM_CODES):
        return GAUSS_HERMITE
    if code in LOGISTIC_CODES:
        return SERIES if series else MIXTURE
    return CLOSED


def _order_slope(code):
    return _ORDER_PER_VARIANCE_TANH if code == TANH else _ORDER_PER_VARIANCE


def _adaptive_order(max_variance, code=ERF):
    """Gauss-Hermite nodes per dimension for variances up to ``max_variance`` (see ``GH_ORDER_BASE``)."""
    slope = _order_slope(code)
    return int(min(_ORDER_MAX, _ORDER_BASE + math.ceil(slope * max(max_variance, 1.0))))


def _check_variances(variances, X, phi, weight_std):
    """ValueError, naming the scale and the fix, if a variance leaves the accepted range."""
    limit = _MAX_VARIANCE_BOUNDED if phi.code in BOUNDED_CODES else _MAX_VARIANCE
    if phi.code in PRODUCT_CODES:  # the rows before an activation (the last feeds the readout)
        check_small_variances(phi.name, variances[:-1], where=lambda at: f"layer {at[0] + 1}, row {at[1]}")
    ok = variances <= limit  # False for inf and NaN too
    if ok.all():
        return
    layer, row = (int(v) for v in np.argwhere(~ok)[0])
    name = phi.name
    value = float(variances[layer, row])
    if layer == 0:
        raise ValueError(
            f"inputs too large for the analytic {name} kernel: row {row} has entries up to "
            f"{np.abs(X[row]).max():.3g} in magnitude, so its first-layer pre-activation variance weight_std^2 |x|^2 / d + bias_std^2 is {value:.3g}, "
            f"above {limit:.0e}, the largest for which the {name} kernel is accurate in float64. "
            "Standardise the features (e.g. sklearn.preprocessing.StandardScaler) or lower weight_std"
        )
    raise ValueError(
        f"the pre-activation variance of the analytic {name} kernel grows to {value:.3g} at layer "
        f"{layer + 1} (row {row}), above {limit:.0e}, the largest for which it is accurate in float64; "
        f"lower weight_std (now {weight_std:.3g}) or the depth, or standardise the features"
    )


def _diag_pieces(X, depth, phi, weight_std, bias_std, method, quad_order):
    """Per-point recursion, range check, and the rule that goes with the method.

    With Gauss-Hermite and ``quad_order=None`` the order adapts to the largest variance the rule
    must integrate over (``variances[:depth]``); since those variances themselves come from the
    rule, the order is raised and the (cheap, 1-D) recursion redone until it suffices. Variances
    beyond what the capped order integrates to 1e-8 are refused.

    ``phi`` is the :class:`~ntksolve.nets.layers.Activation`.

    Returns
    -------
    variances : ndarray, shape (depth + 1, N)
    ntk_diag, sq : ndarray, shape (N,)
    rule : tuple of 4 arrays
        ``(nodes, weights, lo, hi)``: Gauss-Hermite, mixture (``lo``, ``hi`` empty) or all empty.
    order : int
        Gauss-Hermite order, else 0.
    """
    sq = _squared_norms(X)
    d = X.shape[1]
    code, prm = phi.code, phi.params
    sw2 = float(weight_std) ** 2
    sb2 = float(bias_std) ** 2
    if method != GAUSS_HERMITE:
        if method in (MIXTURE, SERIES):
            mix_var, mix_w = logistic_mixture_rule(code)
            rule = (mix_var, mix_w, np.zeros(0, np.int64), np.zeros(0, np.int64))
        else:
            rule = _empty_rule()
        variances, ntk_diag = _diagonal_recursion(sq, d, depth, code, prm, method, sw2, sb2, rule[0], rule[1])
        _check_variances(variances, X, phi, weight_std)
        return variances, ntk_diag, sq, rule, 0
    # first layer checked before it sizes the rule (an infinite variance has no order)
    _check_variances((sw2 / d * sq + sb2)[None, :], X, phi, weight_std)
    order = int(quad_order) if quad_order is not None else _adaptive_order(sw2 * sq.max() / d + sb2, code)
    while True:
        rule = gauss_hermite_rule(order)
        variances, ntk_diag = _diagonal_recursion(sq, d, depth, code, prm, GAUSS_HERMITE, sw2, sb2, rule[0], rule[1])
        if quad_order is not None or depth == 0:
            break
        needed = _adaptive_order(variances[:depth].max(), code)
        if needed <= order:
            break
        order = needed
    _check_variances(variances, X, phi, weight_std)
    if quad_order is None and depth > 0:
        limit = (_ORDER_MAX - _ORDER_BASE) / _order_slope(code)
        if variances[:depth].max() > limit:
            name = phi.name
            raise ValueError(
                f"pre-activation variances reach {variances[:depth].max():.3g}: the Gauss-Hermite rule, "
                f"capped at {_ORDER_MAX} nodes per dimension, integrates {name} to 1e-8 only up to "
                f"{limit:.3g}. Scale the inputs or weight_std down, or use the default method"
            )
    return variances, ntk_diag, sq, rule, order


__all__ = [
    "as_activation",
    "gauss_hermite_rule",
    "logistic_mixture_rule",
    "hermite_series_rule",
    "series_pieces",
    "CLOSED",
    "MIXTURE",
    "SERIES",
    "GAUSS_HERMITE",
]
