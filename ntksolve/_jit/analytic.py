"""Infinite-width NNGP and NTK of a fully connected network, as numba kernels over pairs of points.

Private: :func:`ntksolve.kernels.analytic_kernels` validates the inputs and calls
:func:`analytic_pair_kernels`; :func:`ntksolve.kernels.analytic.analytic_diagonals` calls
:func:`analytic_diag`; the scikit-learn kernels' gradients (:mod:`ntksolve._jit.gp`) take the
values, the input Gram and the per-point recursion from here and add only the partial derivatives.

The recursion is the one of ``docs/conventions.md`` ("The analytic NTK and NNGP"; Lee et al. 2018
for the NNGP, Jacot et al. 2018 and Arora et al. 2019, eq. (9)-(10), for the NTK)::

    Sigma^1   = sigma_w^2 <x, x'> / d + sigma_b^2                Theta^1 = Sigma^1
    Sigma^l+1 = sigma_w^2 E[phi(u) phi(v)] + sigma_b^2
    Sdot^l+1  = sigma_w^2 E[phi'(u) phi'(v)]
    Theta^l+1 = Sigma^l+1 + Sdot^l+1 * Theta^l

with ``(u, v) ~ N(0, [[S11, S12], [S12, S22]])`` the previous layer's covariances.

The layer maps ``(S11, S22, S12) -> (E[phi phi], E[phi' phi'])``, one implementation each:

- relu: the arc-cosine kernels (Cho & Saul 2009); erf: Williams (1997); gelu ``x Phi(x)``:
  Tsuchida et al. (2021); identity: ``(S12, 1)``. Closed forms, written with
  ``det = S11 S22 - S12^2`` so that a pair with ``S11 = S22 = S12`` has ``det = 0`` exactly.
- tanh, sigmoid, softplus: the logistic function is a scale mixture of Gaussian distribution
  functions, ``sigmoid(x) = E_K[Phi(x / 2K)]`` with ``K`` Kolmogorov-distributed (Andrews & Mallows
  1974). Hence ``tanh(u) = E[sign(u + K z)]``, ``sigmoid(u) = E[step(u + 2K z)]`` and
  ``softplus(u) = E[relu(u + 2K z)]`` (``z ~ N(0, 1)``), and each layer map is the sign (arcsine),
  step or arc-cosine closed form at the covariances raised by ``v = K^2`` (``4 K^2``), averaged over
  two independent ``K`` with a fixed Gauss rule (:func:`logistic_mixture_rule`). The integrand is
  smooth in ``K`` whatever the variances, so the accuracy (about 1e-12) does not degrade with the
  scale of the inputs, as a Gauss-Hermite rule in the pre-activations does.
- Gauss-Hermite quadrature (:func:`gauss_hermite_expectations`) remains as the generic rule, only on
  request (``force_quadrature`` / ``quad_order``, a second method for the tests). Its order adapts
  to the variance (``GH_ORDER_*`` in ``ntksolve._config``), and variances its capped order cannot
  integrate to 1e-8 are refused.

Identical inputs give exactly the diagonal: a point's variances follow the one-dimensional
recursion (the same maps at ``S11 = S22 = S12``), and every map is the very same code for a pair
and for a point, so a pair whose covariances are equal at some layer stays equal to the point's
values from there on, bit for bit. At the first layer :func:`input_gram` writes the squared norm
(the diagonal's own number) for every pair of identical rows, which a BLAS dot product need not
reproduce to the last bit.

Accepted range: every variance at most ``ANALYTIC_MAX_VARIANCE`` (products of two stay finite), and
``ANALYTIC_MAX_VARIANCE_BOUNDED`` for erf, tanh and sigmoid, whose NTK at a nearly parallel pair
hangs on ``det``, which rounding perturbs by ``eps S^2``; beyond, :func:`analytic_pair_kernels`
raises a ValueError before any pair is computed.

How it is made fast:

- The input Gram ``X1 X2^T`` is one BLAS call (``O(N1 N2 d)``), written straight into the NNGP output.
- The per-point variances are precomputed in ``O(N L)``; a pair then only carries its covariance
  ``Sigma^l(x, x')`` and ``Theta^l(x, x')`` through the layers.
- Python threads over a ``nogil`` kernel, each transforming its rows of the outputs in place, a
  cache-sized block of columns at a time through all layers, so no ``N x N`` intermediate is ever
  made. In the symmetric case only the upper triangle is computed, rows paired as ``(i, N-1-i)``
  so that every thread gets the same amount of work, and a blocked copy mirrors it.
- The closed forms and the mixture loop over the columns of a block, which LLVM vectorises: the
  arctangent is written here as straight-line code (Cephes' rational approximation, at most 2 ulp
  of ``pi``, checked in the tests) instead of a scalar libm call, and nothing else calls libm, so a
  vectorised lane and a scalar call round identically.
"""
from __future__ import annotations

import concurrent.futures
import functools
import math

import numpy as np
import numba
from numba import njit
from scipy.linalg.blas import dsyrk as _dsyrk

from ntksolve._jit.activations import (ACTIVATION_CODES, ERF, GELU, IDENTITY, RELU, SIGMOID,
                                       SOFTPLUS, TANH, act, dact)

#: Activations whose layer maps are closed forms.
CLOSED_FORM_CODES = (RELU, ERF, IDENTITY, GELU)
#: Activations computed as a scale mixture of closed forms over the Kolmogorov distribution.
LOGISTIC_CODES = (TANH, SIGMOID, SOFTPLUS)
#: Bounded activations whose NTK is sensitive to the rounding of ``det`` at large variance.
BOUNDED_CODES = (ERF, TANH, SIGMOID)

from ntksolve._config import (  # noqa: E402  (tunables live in the config module; reasons there)
    ANALYTIC_MAX_VARIANCE as _MAX_VARIANCE,
    ANALYTIC_MAX_VARIANCE_BOUNDED as _MAX_VARIANCE_BOUNDED,
    GH_PAIR_WEIGHT_CUTOFF as _GH_PAIR_WEIGHT_CUTOFF,
    GH_ORDER_BASE as _ORDER_BASE,
    GH_ORDER_PER_VARIANCE as _ORDER_PER_VARIANCE,
    GH_ORDER_PER_VARIANCE_TANH as _ORDER_PER_VARIANCE_TANH,
    GH_ORDER_MAX as _ORDER_MAX,
    LOGISTIC_MIXTURE_NODES as _MIXTURE_NODES,
)

#: How a layer map is evaluated (the ``method`` argument of the kernels).
CLOSED, MIXTURE, GAUSS_HERMITE = 0, 1, 2

_NAMES = {code: name for name, code in ACTIVATION_CODES.items()}

#: Columns of one output row transformed together through all layers: the block of both outputs
#: and the per-layer variances stays in the L1 cache while the inner loops vectorise.
_COLUMN_BLOCK = 256

#: Tile edge of the blocked copy that mirrors the upper triangle (two 64 x 64 float64 tiles = 64 KiB).
_MIRROR_TILE = 64

_PI = math.pi
_INV_2PI = 1.0 / (2.0 * math.pi)
_TWO_OVER_PI = 2.0 / math.pi
_FOUR_OVER_PI = 4.0 / math.pi

# Cephes ``atan`` (S. Moshier, atan.c): atan(t) = t + t z P(z)/Q(z), z = t^2, |t| <= 0.66, with the
# reduction atan(a) = pi/4 + atan((a - 1)/(a + 1)) above 0.66. Relative error 1.9e-16 on [-10, 10].
_ATAN_P0 = -8.750608600031904122785e-1
_ATAN_P1 = -1.615753718733365076637e1
_ATAN_P2 = -7.500855792314704667340e1
_ATAN_P3 = -1.228866684490136173410e2
_ATAN_P4 = -6.485021904942025371773e1
_ATAN_Q0 = 2.485846490142306297962e1
_ATAN_Q1 = 1.650270098316988542046e2
_ATAN_Q2 = 4.328810604912902668951e2
_ATAN_Q3 = 4.853903996359136964868e2
_ATAN_Q4 = 1.945506571482613964425e2
_ATAN_MOREBITS = 6.123233995736765886130e-17  # pi/4 - fl(pi/4)


# ---------------------------------------------------------------------------------------------
# scalar pieces (inlined into the loops; every layer map has exactly one implementation)
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always", error_model="numpy")
def _atan2_upper(y, x):
    """``atan2(y, x)`` for ``y >= 0``: the angle in ``[0, pi]``, as branch-free code that vectorises.

    Parameters
    ----------
    y : float
        Non-negative ordinate.
    x : float
        Abscissa.

    Returns
    -------
    theta : float
        In ``[0, pi]``; ``atan2(0, 0) = 0`` as in libm. ``error_model="numpy"`` lets ``0/0`` pass
        (it is selected away) instead of raising, which is what lets LLVM vectorise the loop.
    """
    ax = abs(x)
    big = max(ax, y)
    small = min(ax, y)
    a = small / big if big > 0.0 else 0.0  # in [0, 1]
    reduced = a > 0.66
    t = (a - 1.0) / (a + 1.0) if reduced else a
    z = t * t
    p = (((_ATAN_P0 * z + _ATAN_P1) * z + _ATAN_P2) * z + _ATAN_P3) * z + _ATAN_P4
    q = ((((z + _ATAN_Q0) * z + _ATAN_Q1) * z + _ATAN_Q2) * z + _ATAN_Q3) * z + _ATAN_Q4
    r = t + t * (z * p / q)
    r = 0.25 * _PI + (r + 0.5 * _ATAN_MOREBITS) if reduced else r
    r = 0.5 * _PI - r if y > ax else r  # atan(y/|x|) = pi/2 - atan(|x|/y)
    return _PI - r if x < 0.0 else r


@njit(cache=True, inline="always", error_model="numpy")
def _arcsine_angle(y, x):
    """``atan2(y, x)`` for ``x > 0``, in ``(-pi/2, pi/2)``: ``arcsin(y / sqrt(x^2 + y^2))``."""
    angle = _atan2_upper(abs(y), x)
    return -angle if y < 0.0 else angle


@njit(cache=True, inline="always", error_model="numpy")
def _relu_expectations(s11, s22, s12):
    """``(E[relu(u) relu(v)], E[relu'(u) relu'(v)])`` for ``(u, v) ~ N(0, [[s11, s12], [s12, s22]])``.

    The arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009, eq. (6)):
    ``E[phi phi] = (sqrt(det) + (pi - theta) s12) / (2 pi)`` (the conventions'
    ``sqrt(s11 s22) (sin theta + (pi - theta) cos theta) / (2 pi)`` with ``sin theta sqrt(s11 s22)``
    written as ``sqrt(det)``) and ``E[phi' phi'] = (pi - theta) / (2 pi)``, where
    ``det = s11 s22 - s12^2`` and ``theta = atan2(sqrt(max(det, 0)), s12)`` (never ``arccos`` of a
    rounded correlation). A zero variance makes both 0 (``relu'(0) = 0``), not ``0/0``. Near
    ``theta = 0`` the rounding of ``det`` (``eps s^2``) moves ``theta`` by ``sqrt(eps)``: nearly
    parallel distinct pairs are good to about 1e-8 relative, identical ones are exact.

    Parameters
    ----------
    s11, s22 : float
        Variances, ``>= 0``.
    s12 : float
        Covariance.

    Returns
    -------
    e_phi, e_dphi : float
    """
    prod = s11 * s22
    root_det = math.sqrt(max(prod - s12 * s12, 0.0))
    rest = _PI - _atan2_upper(root_det, s12)
    e_phi = (root_det + rest * s12) * _INV_2PI
    e_dphi = rest * _INV_2PI if prod > 0.0 else 0.0
    return e_phi, e_dphi


@njit(cache=True, inline="always", error_model="numpy")
def erf_determinant(s11, s22, s12):
    """``D = (1 + 2 s11)(1 + 2 s22) - 4 s12^2``, written as ``1 + 2 (s11 + s22) + 4 det``.

    The product form cancels catastrophically at large variance (``4 s^2`` against ``1 + 4 s``:
    1% lost at ``s = 1e14`` for identical points); this one is exact for ``s11 = s22 = s12`` and
    otherwise off only by the rounding of ``det = s11 s22 - s12^2`` (``eps s11 s22``). ``D >= 1``.
    """
    return 1.0 + 2.0 * (s11 + s22) + 4.0 * max(s11 * s22 - s12 * s12, 0.0)


@njit(cache=True, inline="always", error_model="numpy")
def _erf_expectations(s11, s22, s12):
    """``(E[erf(u) erf(v)], E[erf'(u) erf'(v)])`` in closed form (Williams 1997).

    ``E[phi phi] = (2/pi) arcsin(2 s12 / sqrt(A))`` and ``E[phi' phi'] = (4/pi) / sqrt(A - 4 s12^2)``
    with ``A = (1 + 2 s11)(1 + 2 s22)``. The arcsine is taken as ``atan2(2 s12, sqrt(D))``,
    ``D = A - 4 s12^2`` from :func:`erf_determinant`, which shares the square root and vectorises.

    Parameters
    ----------
    s11, s22 : float
        Variances, ``>= 0``.
    s12 : float
        Covariance.

    Returns
    -------
    e_phi, e_dphi : float
    """
    root = math.sqrt(erf_determinant(s11, s22, s12))
    return _TWO_OVER_PI * _arcsine_angle(2.0 * s12, root), _FOUR_OVER_PI / root


@njit(cache=True, inline="always", error_model="numpy")
def _gelu_expectations(s11, s22, s12):
    """``(E[gelu(u) gelu(v)], E[gelu'(u) gelu'(v)])`` for ``gelu(x) = x Phi(x)``, in closed form.

    Tsuchida, Pearce, van der Heide, Roosta & Gallagher (2021), "Avoiding kernel fixed points":
    with ``P = (1 + s11)(1 + s22)``, ``delta^2 = P - s12^2 = 1 + s11 + s22 + det`` and
    ``alpha = arcsin(s12 / sqrt(P)) = atan2(s12, delta)``::

        E[phi phi]   = s12 / 4 + (s12 alpha + s12^2 / (P delta) + s11 s22 delta / P) / (2 pi)
        E[phi' phi'] = 1/4 + alpha / (2 pi) + s12 / (2 pi delta) (1 / delta^2 + (2 + s11 + s22) / P)

    (the second is the derivative of the first in ``s12``, Price's theorem). Written with the
    ratios ``s / (1 + s)`` so that nothing overflows below the accepted variances.

    Parameters
    ----------
    s11, s22 : float
        Variances, ``>= 0``.
    s12 : float
        Covariance.

    Returns
    -------
    e_phi, e_dphi : float
    """
    p1 = 1.0 + s11
    p2 = 1.0 + s22
    delta2 = 1.0 + s11 + s22 + max(s11 * s22 - s12 * s12, 0.0)
    delta = math.sqrt(delta2)
    alpha = _arcsine_angle(s12, delta)
    c = s12 / p1 / p2  # s12 / P
    e_phi = 0.25 * s12 + (s12 * alpha + s12 * c / delta + (s11 / p1) * (s22 / p2) * delta) * _INV_2PI
    e_dphi = 0.25 + alpha * _INV_2PI + s12 / delta * (1.0 / delta2 + (2.0 + s11 + s22) / p1 / p2) * _INV_2PI
    return e_phi, e_dphi


@njit(cache=True, inline="always", error_model="numpy")
def closed_form_expectations(code, s11, s22, s12):
    """``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` for an activation of :data:`CLOSED_FORM_CODES`.

    The one dispatch the per-point recursion and the gradient kernel use; the pair loops call the
    same functions, one loop per activation so that each vectorises.
    """
    if code == RELU:
        return _relu_expectations(s11, s22, s12)
    elif code == ERF:
        return _erf_expectations(s11, s22, s12)
    elif code == GELU:
        return _gelu_expectations(s11, s22, s12)
    return s12, 1.0  # IDENTITY: E[uv] = Sigma12, E[1 * 1] = 1


@njit(cache=True, inline="always")
def next_layer(sw2, sb2, e_phi, e_dphi, theta):
    """``Sigma^{l+1} = sw2 E[phi phi] + sb2`` and ``Theta^{l+1} = Sigma^{l+1} + sw2 E[phi' phi'] Theta^l``.

    The one update of every path (pairs, points, gradient kernel), so that they round alike.
    """
    s = sw2 * e_phi + sb2
    return s, s + sw2 * e_dphi * theta


# ---------------------------------------------------------------------------------------------
# the logistic family: a scale mixture of closed forms
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always", error_model="numpy")
def _logistic_term(code, q, s12):
    """One mixture term: the closed form at covariances raised by ``(v1, v2)``, ``q`` their ``det``.

    tanh and sigmoid: ``(atan2(s12, sqrt(q)), 1 / sqrt(q))`` (the sign / step kernel and the
    Gaussian-bump kernel of ``phi'``); softplus: the arc-cosine pair ``(sqrt(q) + (pi - theta) s12,
    pi - theta)`` with ``theta = atan2(sqrt(q), s12)``. Constant factors are applied by
    :func:`_logistic_finish`.
    """
    r = math.sqrt(q)
    if code == SOFTPLUS:
        rest = _PI - _atan2_upper(r, s12)
        return r + rest * s12, rest
    return _arcsine_angle(s12, r), 1.0 / r


@njit(cache=True, inline="always")
def _logistic_finish(code, f, g):
    """The constant factors of the mixture sums: ``(E[phi phi], E[phi' phi'])``."""
    if code == TANH:
        return _TWO_OVER_PI * f, _TWO_OVER_PI * g
    elif code == SIGMOID:
        return 0.25 + f * _INV_2PI, g * _INV_2PI
    return f * _INV_2PI, g * _INV_2PI  # SOFTPLUS


@njit(cache=True, error_model="numpy")
def logistic_expectations_block(code, s11, s22, s12, n, mix_var, mix_w, e_phi, e_dphi, det):
    """Layer map of tanh, sigmoid or softplus for ``n`` pairs at once: a mixture of closed forms.

    ``E[phi(u) phi(v)] = sum_ab w_a w_b F(s11 + v_a, s22 + v_b, s12)`` and likewise for ``phi'``,
    where ``F`` is the sign (tanh), step (sigmoid) or arc-cosine (softplus) kernel and ``v_a`` the
    rule's mixing variances (module docstring). The determinant of the raised covariance is
    ``v_a v_b + v_a s22 + v_b s11 + det >= v_a v_b > 0``, a sum of non-negative terms. The column
    loop is innermost, so it vectorises; the terms are summed in the same ``(a, b)`` order for
    every pair, so a pair and a point with the same covariances get the same bits.

    Parameters
    ----------
    code : int
        TANH, SIGMOID or SOFTPLUS.
    s11, s22, s12 : ndarray, shape (>= n,)
        Variances and covariances of the pairs (the same array thrice for points).
    n : int
        Number of pairs.
    mix_var, mix_w : ndarray, shape (K,)
        Mixing variances and weights, from :func:`logistic_mixture_rule`.
    e_phi, e_dphi : ndarray, shape (>= n,)
        Outputs.
    det : ndarray, shape (>= n,)
        Scratch.
    """
    for j in range(n):
        det[j] = max(s11[j] * s22[j] - s12[j] * s12[j], 0.0)
        e_phi[j] = 0.0
        e_dphi[j] = 0.0
    k = mix_var.shape[0]
    for a in range(k):
        va = mix_var[a]
        wa = mix_w[a]
        for b in range(k):
            vb = mix_var[b]
            w = wa * mix_w[b]
            vab = va * vb
            for j in range(n):
                f, g = _logistic_term(code, vab + va * s22[j] + vb * s11[j] + det[j], s12[j])
                e_phi[j] += w * f
                e_dphi[j] += w * g
    for j in range(n):
        e_phi[j], e_dphi[j] = _logistic_finish(code, e_phi[j], e_dphi[j])


# ---------------------------------------------------------------------------------------------
# Gauss-Hermite quadrature (on request only)
# ---------------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def gauss_hermite_diagonal(code, s, nodes, weights):
    """``(E[phi(u)^2], E[phi'(u)^2])`` for ``u ~ N(0, s)``: the one-dimensional rule.

    The map of a point, and of a pair whose covariances are all equal (:func:`gauss_hermite_expectations`
    calls this then), so that both round alike.
    """
    sd = math.sqrt(s)
    e_phi = 0.0
    e_dphi = 0.0
    for k in range(nodes.shape[0]):
        u = sd * nodes[k]
        f = act(code, u)
        g = dact(code, u)
        e_phi += weights[k] * f * f
        e_dphi += weights[k] * g * g
    return e_phi, e_dphi


@njit(cache=True, error_model="numpy")
def gauss_hermite_expectations(code, s11, s22, s12, wphi_u, wdphi_u, nodes, weights, lo, hi):
    """``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` by two-dimensional Gauss-Hermite quadrature.

    ``u = sqrt(s11) z1`` and ``v = sqrt(s22) (c z1 + sqrt(1 - c^2) z2)`` with ``z1, z2`` independent
    standard normals and ``c = s12 / sqrt(s11 s22)``; the outer sum runs over ``z1``, whose factor
    ``w_k phi(u_k)`` depends on one point only and comes precomputed. Equal covariances
    (``s11 = s22 = s12``, ``u = v``) take the one-dimensional rule of the point itself.

    Parameters
    ----------
    code : int
        Activation code (``ntksolve._jit.activations.ACTIVATION_CODES``).
    s11, s22 : float
        Variances, ``>= 0``.
    s12 : float
        Covariance.
    wphi_u, wdphi_u : ndarray, shape (n,)
        ``weights[k] * phi(sqrt(s11) nodes[k])`` and the same with ``phi'``.
    nodes, weights : ndarray, shape (n,)
        Probabilists' Gauss-Hermite rule, weights normalised to sum 1.
    lo, hi : ndarray of int64, shape (n,)
        For outer node ``k`` the inner nodes ``lo[k] <= m < hi[k]`` are those with
        ``weights[k] weights[m]`` above the cut-off.

    Returns
    -------
    e_phi, e_dphi : float
    """
    if s12 == s11 and s12 == s22:
        return gauss_hermite_diagonal(code, s11, nodes, weights)
    root = math.sqrt(s11 * s22)
    c = s12 / root if root > 0.0 else 0.0  # a zero variance: u or v is constant, c is irrelevant
    c = min(max(c, -1.0), 1.0)
    sd2 = math.sqrt(s22)
    a = sd2 * c
    b = sd2 * math.sqrt((1.0 - c) * (1.0 + c))  # (1-c)(1+c), not 1-c^2: no cancellation near |c|=1
    e_phi = 0.0
    e_dphi = 0.0
    for k in range(nodes.shape[0]):
        base = a * nodes[k]
        inner_phi = 0.0
        inner_dphi = 0.0
        for m in range(lo[k], hi[k]):
            v = base + b * nodes[m]
            inner_phi += weights[m] * act(code, v)
            inner_dphi += weights[m] * dact(code, v)
        e_phi += wphi_u[k] * inner_phi
        e_dphi += wdphi_u[k] * inner_dphi
    return e_phi, e_dphi


# ---------------------------------------------------------------------------------------------
# the per-point recursion
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _squared_norms(X):
    """Row norms squared, ``sum_k X[i, k]^2``.

    One fixed summation order, used by every path (and by :func:`input_gram` for identical rows),
    so that identical rows get the same bits wherever they are.

    Parameters
    ----------
    X : ndarray, shape (N, d)

    Returns
    -------
    sq : ndarray, shape (N,)
    """
    n, d = X.shape
    sq = np.empty(n)
    for i in range(n):
        acc = 0.0
        for k in range(d):
            acc += X[i, k] * X[i, k]
        sq[i] = acc
    return sq


@njit(cache=True, error_model="numpy")
def _diagonal_recursion(sq_norms, n_features, depth, code, method, sw2, sb2, nodes, weights):
    """The recursion for a point paired with itself (``S11 = S22 = S12``), ``O(N L)``.

    Each layer is the pairs' own map at equal covariances (:func:`closed_form_expectations`,
    :func:`logistic_expectations_block`, :func:`gauss_hermite_diagonal`) followed by
    :func:`next_layer`, so a pair of identical points reproduces these numbers exactly.

    Parameters
    ----------
    sq_norms : ndarray, shape (N,)
        ``|x_i|^2``.
    n_features : int
        ``d``.
    depth : int
        ``L``, the number of hidden layers.
    code : int
        Activation code.
    method : int
        CLOSED, MIXTURE or GAUSS_HERMITE.
    sw2, sb2 : float
        ``sigma_w^2``, ``sigma_b^2``.
    nodes, weights : ndarray, shape (n,)
        The method's rule: Gauss-Hermite nodes and weights, or the mixing variances and weights
        (empty for closed forms).

    Returns
    -------
    variances : ndarray, shape (depth + 1, N)
        ``variances[l, i] = Sigma^{l+1}(x_i, x_i)``; the last row is the NNGP diagonal.
    ntk_diag : ndarray, shape (N,)
        ``Theta^{L+1}(x_i, x_i)``.
    """
    n = sq_norms.shape[0]
    variances = np.empty((depth + 1, n))
    ntk_diag = np.empty(n)
    scale = sw2 / n_features
    for i in range(n):
        s = scale * sq_norms[i] + sb2
        variances[0, i] = s
        ntk_diag[i] = s
    if method == MIXTURE:
        # blocks of points through all layers, the same vectorised map as a block of pairs
        e_phi = np.empty(_COLUMN_BLOCK)
        e_dphi = np.empty(_COLUMN_BLOCK)
        det = np.empty(_COLUMN_BLOCK)
        for c0 in range(0, n, _COLUMN_BLOCK):
            m = min(c0 + _COLUMN_BLOCK, n) - c0
            t = ntk_diag[c0:c0 + m]
            for l in range(depth):
                s_l = variances[l, c0:c0 + m]
                nxt = variances[l + 1, c0:c0 + m]
                logistic_expectations_block(code, s_l, s_l, s_l, m, nodes, weights, e_phi, e_dphi, det)
                for j in range(m):
                    nxt[j], t[j] = next_layer(sw2, sb2, e_phi[j], e_dphi[j], t[j])
        return variances, ntk_diag
    for i in range(n):
        s = variances[0, i]
        t = s
        for l in range(depth):
            if method == GAUSS_HERMITE:
                e_phi, e_dphi = gauss_hermite_diagonal(code, s, nodes, weights)
            else:
                e_phi, e_dphi = closed_form_expectations(code, s, s, s)
            s, t = next_layer(sw2, sb2, e_phi, e_dphi, t)
            variances[l + 1, i] = s
        ntk_diag[i] = t
    return variances, ntk_diag


@njit(cache=True, error_model="numpy")
def _weighted_activations_at_nodes(variances, depth, code, nodes, weights):
    """``w_k phi(sqrt(Sigma^l(x_i, x_i)) z_k)`` and ``w_k phi'(...)``: the per-point outer factors.

    Parameters
    ----------
    variances : ndarray, shape (depth + 1, N)
    depth : int
    code : int
    nodes, weights : ndarray, shape (n,)

    Returns
    -------
    wphi, wdphi : ndarray, shape (depth, N, n)
    """
    n_points = variances.shape[1]
    n = nodes.shape[0]
    wphi = np.empty((depth, n_points, n))
    wdphi = np.empty((depth, n_points, n))
    for l in range(depth):
        for i in range(n_points):
            sd = math.sqrt(variances[l, i])
            for k in range(n):
                u = sd * nodes[k]
                wphi[l, i, k] = weights[k] * act(code, u)
                wdphi[l, i, k] = weights[k] * dact(code, u)
    return wphi, wdphi


# ---------------------------------------------------------------------------------------------
# the pair kernel
# ---------------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _row_block(nngp, ntk, i, j0, j1, var1, var2, scale, sw2, sb2, depth, code, method,
               wphi1, wdphi1, nodes, weights, lo, hi):
    """Transform ``nngp[i, j0:j1]`` (holding the input Gram) and fill ``ntk[i, j0:j1]``, in place.

    Closed forms and the mixture go layer by layer over the whole block (loops over columns that
    vectorise); Gauss-Hermite goes pair by pair, the pair's ``Sigma12`` and ``Theta`` carried
    through the layers in registers.

    Parameters
    ----------
    nngp, ntk : ndarray, shape (N1, N2)
        Outputs; on entry ``nngp[i, j0:j1]`` is ``<x_i, x'_j>``.
    i, j0, j1 : int
        Row and half-open column range.
    var1 : ndarray, shape (depth + 1, N1)
    var2 : ndarray, shape (depth + 1, N2)
        Per-point variances ``Sigma^{l+1}(x, x)`` of the row and column points.
    scale, sw2, sb2 : float
        ``sigma_w^2 / d``, ``sigma_w^2``, ``sigma_b^2``.
    depth, code, method : int
    wphi1, wdphi1 : ndarray, shape (depth, N1, n)
        Outer Gauss-Hermite factors of the row points (shape ``(0, 0, 0)`` for the other methods).
    nodes, weights : ndarray, shape (n,)
        The method's rule (see :func:`_diagonal_recursion`).
    lo, hi : ndarray of int64, shape (n,)
        Gauss-Hermite inner-node ranges (empty for the other methods).
    """
    # Slices indexed from 0: with a non-negative loop index numba drops its negative-index
    # wrap-around, and only then does LLVM vectorise the loops below.
    k_blk = nngp[i, j0:j1]
    t_blk = ntk[i, j0:j1]
    n = k_blk.shape[0]
    for j in range(n):
        s = scale * k_blk[j] + sb2
        k_blk[j] = s
        t_blk[j] = s
    if method == GAUSS_HERMITE:
        for j in range(n):
            s12 = k_blk[j]
            t = t_blk[j]
            for l in range(depth):
                e_phi, e_dphi = gauss_hermite_expectations(
                    code, var1[l, i], var2[l, j0 + j], s12, wphi1[l, i], wdphi1[l, i], nodes, weights,
                    lo, hi,
                )
                s12, t = next_layer(sw2, sb2, e_phi, e_dphi, t)
            k_blk[j] = s12
            t_blk[j] = t
        return
    if method == MIXTURE:
        s11_blk = np.empty(n)
        e_phi_blk = np.empty(n)
        e_dphi_blk = np.empty(n)
        det_blk = np.empty(n)
        for l in range(depth):
            s11_blk[:] = var1[l, i]
            logistic_expectations_block(code, s11_blk, var2[l, j0:j1], k_blk, n, nodes, weights,
                                        e_phi_blk, e_dphi_blk, det_blk)
            for j in range(n):
                k_blk[j], t_blk[j] = next_layer(sw2, sb2, e_phi_blk[j], e_dphi_blk[j], t_blk[j])
        return
    for l in range(depth):
        s11 = var1[l, i]
        v2 = var2[l, j0:j1]
        if code == RELU:
            for j in range(n):
                e_phi, e_dphi = _relu_expectations(s11, v2[j], k_blk[j])
                k_blk[j], t_blk[j] = next_layer(sw2, sb2, e_phi, e_dphi, t_blk[j])
        elif code == ERF:
            for j in range(n):
                e_phi, e_dphi = _erf_expectations(s11, v2[j], k_blk[j])
                k_blk[j], t_blk[j] = next_layer(sw2, sb2, e_phi, e_dphi, t_blk[j])
        elif code == GELU:
            for j in range(n):
                e_phi, e_dphi = _gelu_expectations(s11, v2[j], k_blk[j])
                k_blk[j], t_blk[j] = next_layer(sw2, sb2, e_phi, e_dphi, t_blk[j])
        else:  # IDENTITY
            for j in range(n):
                k_blk[j], t_blk[j] = next_layer(sw2, sb2, k_blk[j], 1.0, t_blk[j])


@njit(cache=True)
def _row(nngp, ntk, i, j_start, var1, var2, scale, sw2, sb2, depth, code, method,
         wphi1, wdphi1, nodes, weights, lo, hi):
    """Row ``i`` from column ``j_start`` to the end, a cache-sized block of columns at a time.

    Parameters
    ----------
    As :func:`_row_block`; columns ``j_start <= j < N2``.
    """
    n2 = nngp.shape[1]
    for j0 in range(j_start, n2, _COLUMN_BLOCK):
        _row_block(nngp, ntk, i, j0, min(j0 + _COLUMN_BLOCK, n2), var1, var2, scale, sw2, sb2,
                   depth, code, method, wphi1, wdphi1, nodes, weights, lo, hi)


@njit(cache=True, nogil=True)
def _pair_rows(nngp, ntk, var1, var2, ntk_diag, scale, sw2, sb2, depth, code,
               method, symmetric, wphi1, wdphi1, nodes, weights, lo, hi, start, step):
    """Turn the Gram in ``nngp`` into the NNGP and NTK, in place, for rows ``start::step``.

    Called by :func:`run_in_threads` with ``step`` threads, each on its own rows (``nogil``, so
    the threads run truly in parallel). Symmetric case: only ``j > i`` is computed, rows paired
    ``(p, N-1-p)`` so that every ``p`` carries ``N - 1`` pairs of points and a strided split
    balances the threads; the diagonal is the per-point recursion. (A ``prange`` loop here
    cost 5.8 s of compilation for a three-line driver; Python threads over a ``nogil`` kernel
    cost none, and do not spin against OpenBLAS's threads between calls.)

    Parameters
    ----------
    nngp : ndarray, shape (N1, N2)
        On entry the input Gram of :func:`input_gram`; on exit the NNGP ``Sigma^{L+1}``
        (symmetric case: the upper triangle, mirrored afterwards by :func:`_mirror_rows`).
    ntk : ndarray, shape (N1, N2)
        Output, the NTK ``Theta^{L+1}``.
    var1, var2 : ndarray, shapes (depth + 1, N1), (depth + 1, N2)
    ntk_diag : ndarray, shape (N1,)
        Diagonal NTK (used when ``symmetric``).
    scale, sw2, sb2 : float
    depth, code, method : int
    symmetric : bool
    wphi1, wdphi1 : ndarray, shape (depth, N1, n) or (0, 0, 0)
    nodes, weights : ndarray, shape (n,)
    lo, hi : ndarray of int64, shape (n,)
    start, step : int
        This thread's rows (or row pairs): ``start, start + step, ...``.
    """
    n1 = nngp.shape[0]
    if not symmetric:
        for i in range(start, n1, step):
            _row(nngp, ntk, i, 0, var1, var2, scale, sw2, sb2, depth, code, method,
                 wphi1, wdphi1, nodes, weights, lo, hi)
        return
    for p in range(start, (n1 + 1) // 2, step):
        _upper_row(nngp, ntk, p, var1, var2, ntk_diag, scale, sw2, sb2, depth, code, method,
                   wphi1, wdphi1, nodes, weights, lo, hi)
        if n1 - 1 - p != p:
            _upper_row(nngp, ntk, n1 - 1 - p, var1, var2, ntk_diag, scale, sw2, sb2, depth, code,
                       method, wphi1, wdphi1, nodes, weights, lo, hi)


@njit(cache=True, nogil=True)
def _mirror_rows(nngp, ntk, start, step):
    """Mirror the upper triangles onto the lower ones, tile rows ``(q, nt-1-q)`` for ``q`` in
    ``start::step`` (pairing balances the triangular work).

    Parameters
    ----------
    nngp, ntk : ndarray, shape (N, N), modified in place
    start, step : int
    """
    nt = (nngp.shape[0] + _MIRROR_TILE - 1) // _MIRROR_TILE
    for q in range(start, (nt + 1) // 2, step):
        _mirror_tile_row(nngp, ntk, q)
        if nt - 1 - q != q:
            _mirror_tile_row(nngp, ntk, nt - 1 - q)


def run_in_threads(kernel, *args):
    """``kernel(*args, start, step)`` on ``numba.get_num_threads()`` threads (1: inline), each
    taking every ``step``-th row. Respects ``numba.set_num_threads`` (the Dask path sets 1)."""
    n = numba.get_num_threads()
    if n <= 1:
        kernel(*args, 0, 1)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        for fut in [pool.submit(kernel, *args, s, n) for s in range(n)]:
            fut.result()


@njit(cache=True)
def _upper_row(nngp, ntk, i, var1, var2, ntk_diag, scale, sw2, sb2, depth, code, method,
               wphi1, wdphi1, nodes, weights, lo, hi):
    """Symmetric case, row ``i``: the diagonal from the per-point recursion, then ``j > i``.

    Parameters
    ----------
    As :func:`_pair_rows`; ``i`` the row.
    """
    nngp[i, i] = var1[depth, i]
    ntk[i, i] = ntk_diag[i]
    _row(nngp, ntk, i, i + 1, var1, var2, scale, sw2, sb2, depth, code, method,
         wphi1, wdphi1, nodes, weights, lo, hi)


@njit(cache=True)
def _mirror_tile_row(nngp, ntk, bt):
    """Copy the upper triangle onto the lower one for rows of tile row ``bt``, tile by tile.

    Parameters
    ----------
    nngp, ntk : ndarray, shape (N, N)
        Upper triangle filled; rows ``bt * T <= r < (bt + 1) * T`` get ``[r, c] = [c, r]``, ``c < r``.
    bt : int
        Tile row; tiles of edge ``T = _MIRROR_TILE`` keep source and destination in cache.
    """
    n = nngp.shape[0]
    r0 = bt * _MIRROR_TILE
    r1 = min(r0 + _MIRROR_TILE, n)
    for c0 in range(0, r1, _MIRROR_TILE):
        c1 = min(c0 + _MIRROR_TILE, n)
        # views indexed from 0 (no wrap-around checks); dst[a, b] = nngp[r0 + a, c0 + b]
        k_dst = nngp[r0:r1, c0:c1]
        k_src = nngp[c0:c1, r0:r1]
        t_dst = ntk[r0:r1, c0:c1]
        t_src = ntk[c0:c1, r0:r1]
        diagonal_tile = c0 == r0
        for a in range(r1 - r0):
            b_end = a if diagonal_tile else c1 - c0
            for b in range(b_end):
                k_dst[a, b] = k_src[b, a]
                t_dst[a, b] = t_src[b, a]


# ---------------------------------------------------------------------------------------------
# Python entry points (nothing is compiled until they are called)
# ---------------------------------------------------------------------------------------------


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


def _empty_rule():
    return np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)


def _method(code, force_quadrature, quad_order):
    """CLOSED, MIXTURE, or GAUSS_HERMITE when forced (any activation) or an order is given (not for
    the closed forms, which ignore it)."""
    if force_quadrature or (quad_order is not None and code not in CLOSED_FORM_CODES):
        return GAUSS_HERMITE
    return MIXTURE if code in LOGISTIC_CODES else CLOSED


def _order_slope(code):
    return _ORDER_PER_VARIANCE_TANH if code == TANH else _ORDER_PER_VARIANCE


def _adaptive_order(max_variance, code=ERF):
    """Gauss-Hermite nodes per dimension for variances up to ``max_variance`` (see ``GH_ORDER_BASE``)."""
    slope = _order_slope(code)
    return int(min(_ORDER_MAX, _ORDER_BASE + math.ceil(slope * max(max_variance, 1.0))))


def _check_variances(variances, X, code, weight_std):
    """ValueError, naming the scale and the fix, if a variance leaves the accepted range."""
    limit = _MAX_VARIANCE_BOUNDED if code in BOUNDED_CODES else _MAX_VARIANCE
    ok = variances <= limit  # False for inf and NaN too
    if ok.all():
        return
    layer, row = (int(v) for v in np.argwhere(~ok)[0])
    name = _NAMES.get(code, str(code))
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


def _diag_pieces(X, depth, code, weight_std, bias_std, method, quad_order):
    """Per-point recursion, range check, and the rule that goes with the method.

    With Gauss-Hermite and ``quad_order=None`` the order adapts to the largest variance the rule
    must integrate over (``variances[:depth]``); since those variances themselves come from the
    rule, the order is raised and the (cheap, 1-D) recursion redone until it suffices. Variances
    beyond what the capped order integrates to 1e-8 are refused.

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
    sw2 = float(weight_std) ** 2
    sb2 = float(bias_std) ** 2
    if method != GAUSS_HERMITE:
        if method == MIXTURE:
            mix_var, mix_w = logistic_mixture_rule(code)
            rule = (mix_var, mix_w, np.zeros(0, np.int64), np.zeros(0, np.int64))
        else:
            rule = _empty_rule()
        variances, ntk_diag = _diagonal_recursion(sq, d, depth, code, method, sw2, sb2, rule[0], rule[1])
        _check_variances(variances, X, code, weight_std)
        return variances, ntk_diag, sq, rule, 0
    # first layer checked before it sizes the rule (an infinite variance has no order)
    _check_variances((sw2 / d * sq + sb2)[None, :], X, code, weight_std)
    order = int(quad_order) if quad_order is not None else _adaptive_order(sw2 * sq.max() / d + sb2, code)
    while True:
        rule = gauss_hermite_rule(order)
        variances, ntk_diag = _diagonal_recursion(sq, d, depth, code, GAUSS_HERMITE, sw2, sb2,
                                                  rule[0], rule[1])
        if quad_order is not None or depth == 0:
            break
        needed = _adaptive_order(variances[:depth].max(), code)
        if needed <= order:
            break
        order = needed
    _check_variances(variances, X, code, weight_std)
    if quad_order is None and depth > 0:
        limit = (_ORDER_MAX - _ORDER_BASE) / _order_slope(code)
        if variances[:depth].max() > limit:
            name = _NAMES.get(code, str(code))
            raise ValueError(
                f"pre-activation variances reach {variances[:depth].max():.3g}: the Gauss-Hermite rule, "
                f"capped at {_ORDER_MAX} nodes per dimension, integrates {name} to 1e-8 only up to "
                f"{limit:.3g}. Scale the inputs or weight_std down, or use the default method"
            )
    return variances, ntk_diag, sq, rule, order


def _identical_row_groups(X1, sq1, X2=None, sq2=None):
    """Groups of identical rows: a list of ``(rows of X1, rows of X2)`` index arrays.

    ``X2=None``: groups of at least two identical rows of ``X1`` (both arrays the same). Identical
    rows have identical squared norms (one summation order), so only rows whose norm occurs twice
    are compared, by their bytes (``+ 0.0`` makes ``-0.0`` and ``0.0`` alike, as they are in every
    product); typical data costs one sort of ``N`` floats.
    """
    if X2 is None:
        order = np.argsort(sq1, kind="stable")
        s = sq1[order]
        tie = np.zeros(s.shape[0], dtype=bool)
        eq = s[1:] == s[:-1]
        tie[1:] |= eq
        tie[:-1] |= eq
        cand1 = np.sort(order[tie])
        if cand1.size == 0:
            return []
        rows = X1[cand1]
    else:
        cand1 = np.flatnonzero(np.isin(sq1, sq2))
        if cand1.size == 0:
            return []
        cand2 = np.flatnonzero(np.isin(sq2, sq1[cand1]))
        rows = np.concatenate([X1[cand1], X2[cand2]])
    rows = np.ascontiguousarray(rows + 0.0)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, labels = np.unique(keys, return_inverse=True)
    labels = labels.ravel()
    if X2 is None:
        g1 = g2 = labels
        c1 = c2 = cand1
        common = np.flatnonzero(np.bincount(labels) > 1)
    else:
        g1, g2 = labels[:cand1.size], labels[cand1.size:]
        c1, c2 = cand1, cand2
        common = np.intersect1d(g1, g2)
    if common.size == 0:
        return []
    o1 = np.argsort(g1, kind="stable")
    o2 = np.argsort(g2, kind="stable")
    g1s, r1 = g1[o1], c1[o1]
    g2s, r2 = g2[o2], c2[o2]
    a1, b1 = np.searchsorted(g1s, common, "left"), np.searchsorted(g1s, common, "right")
    a2, b2 = np.searchsorted(g2s, common, "left"), np.searchsorted(g2s, common, "right")
    return [(r1[p:q], r2[u:v]) for p, q, u, v in zip(a1, b1, a2, b2)]


def input_gram(X1, X2, sq1, sq2):
    """The input Gram ``X1 X2^T`` by BLAS, exactly ``|x|^2`` wherever the two rows are identical.

    A dot product computed by BLAS need not equal the squared norm summed by
    :func:`_squared_norms` to the last bit; the per-point recursion starts from the latter, so
    identical rows get it here too, and their pair then follows the point's recursion exactly.

    Parameters
    ----------
    X1 : ndarray, shape (N1, d)
    X2 : ndarray, shape (N2, d) or None
        ``None`` for the symmetric Gram of ``X1``: only the upper triangle (C order) and the
        diagonal are filled (``dsyrk``, half the flops; the diagonal is ``sq1``).
    sq1, sq2 : ndarray, shapes (N1,), (N2,)
        Squared norms from :func:`_squared_norms` (``sq2`` unused when ``X2`` is None).

    Returns
    -------
    gram : ndarray, shape (N1, N2), C-contiguous
    """
    if X2 is None:
        gram = np.empty((X1.shape[0], X1.shape[0]))
        # the C-order upper triangle is the lower one of the Fortran view gram.T; dsyrk skips the
        # strided triangle copy numpy's X @ X.T does after it
        _dsyrk(1.0, X1.T, trans=1, lower=1, c=gram.T, overwrite_c=1)
        np.fill_diagonal(gram, sq1)
    else:
        gram = np.empty((X1.shape[0], X2.shape[0]))
        np.dot(X1, X2.T, out=gram)
    for rows1, rows2 in _identical_row_groups(X1, sq1, X2, sq2):
        gram[np.ix_(rows1, rows2)] = sq1[rows1[0]]
    return gram


def analytic_diag(X, depth, activation_code, weight_std, bias_std, force_quadrature=False,
                  quad_order=None):
    """Diagonals ``K(x_i, x_i)`` and ``Theta(x_i, x_i)`` of the NNGP and NTK, in ``O(N (d + L))``.

    The per-point recursion; bit-identical to the diagonal of ``analytic_pair_kernels`` and to
    every pair of identical points in it.

    Parameters
    ----------
    X : ndarray, shape (N, d), C-contiguous float64 (validated by the caller)
    depth : int
        ``L``, number of hidden layers (``>= 0``).
    activation_code : int
        ``ntksolve._jit.activations.ACTIVATION_CODES[name]``.
    weight_std, bias_std : float
        ``sigma_w``, ``sigma_b``.
    force_quadrature : bool
        Use Gauss-Hermite for any activation (for tests).
    quad_order : int or None
        Gauss-Hermite nodes per dimension (as in :func:`analytic_pair_kernels`).

    Returns
    -------
    nngp_diag, ntk_diag : ndarray, shape (N,)

    Raises
    ------
    ValueError
        If a variance leaves the accepted range (module docstring).
    """
    code = int(activation_code)
    method = _method(code, force_quadrature, quad_order)
    variances, ntk_diag, _, _, _ = _diag_pieces(X, int(depth), code, weight_std, bias_std, method,
                                                quad_order)
    return variances[int(depth)].copy(), ntk_diag


def analytic_pair_kernels(X1, X2, depth, activation_code, weight_std, bias_std, symmetric,
                          quad_order=None, force_quadrature=False):
    """The infinite-width NNGP ``Sigma^{L+1}(X1, X2)`` and NTK ``Theta^{L+1}(X1, X2)``.

    Parameters
    ----------
    X1 : ndarray, shape (N1, d), C-contiguous float64 (validated by the caller)
    X2 : ndarray, shape (N2, d), C-contiguous float64
        ``X1`` itself when ``symmetric``.
    depth : int
        ``L``, number of hidden layers (``>= 0``).
    activation_code : int
        ``ntksolve._jit.activations.ACTIVATION_CODES[name]``. Closed forms for relu, erf, gelu and
        identity; the Kolmogorov scale mixture for tanh, sigmoid and softplus.
    weight_std, bias_std : float
        ``sigma_w``, ``sigma_b``.
    symmetric : bool
        ``X2`` is ``X1``: only the upper triangle is computed and mirrored (the result is exactly
        symmetric). Either way every pair of identical rows equals the per-point diagonal exactly.
    quad_order : int or None
        Gauss-Hermite nodes per dimension: given, tanh, sigmoid and softplus use that rule instead
        of the mixture (for tests; closed forms ignore it).
    force_quadrature : bool
        Gauss-Hermite for every activation (for tests; never for relu, whose kink makes it converge
        slowly). With ``quad_order=None`` the order adapts to the largest variance,
        ``GH_ORDER_BASE + slope * max(s, 1)`` (slope 40, 85 for tanh), which keeps the rule within
        1e-8; variances beyond the capped order's reach are refused.

    Returns
    -------
    nngp, ntk : ndarray, shape (N1, N2), float64, C-contiguous

    Raises
    ------
    ValueError
        If a variance leaves the accepted range (module docstring), before any pair is computed.
    """
    depth = int(depth)
    code = int(activation_code)
    method = _method(code, force_quadrature, quad_order)
    sw2 = float(weight_std) ** 2
    sb2 = float(bias_std) ** 2
    n_features = X1.shape[1]
    order = quad_order
    if method == GAUSS_HERMITE and not symmetric and order is None:
        # one rule for both sets of points: the order the larger of their variances needs
        order = max(_diag_pieces(X, depth, code, weight_std, bias_std, method, None)[4] for X in (X1, X2))
    var1, ntk_diag, sq1, rule, _ = _diag_pieces(X1, depth, code, weight_std, bias_std, method, order)
    if symmetric:
        var2, sq2 = var1, sq1
    else:
        var2, _, sq2, _, _ = _diag_pieces(X2, depth, code, weight_std, bias_std, method, order)
    nodes, weights, lo, hi = rule
    if method == GAUSS_HERMITE:
        wphi1, wdphi1 = _weighted_activations_at_nodes(var1, depth, code, nodes, weights)
    else:
        wphi1 = wdphi1 = np.zeros((0, 0, 0))
    nngp = input_gram(X1, None if symmetric else X2, sq1, sq2)
    ntk = np.empty_like(nngp)
    run_in_threads(_pair_rows, nngp, ntk, var1, var2, ntk_diag, sw2 / n_features, sw2, sb2, depth, code,
                   method, bool(symmetric), wphi1, wdphi1, nodes, weights, lo, hi)
    if symmetric:
        run_in_threads(_mirror_rows, nngp, ntk)
    return nngp, ntk


__all__ = ["analytic_pair_kernels", "analytic_diag", "input_gram", "gauss_hermite_rule",
           "gauss_hermite_expectations", "logistic_mixture_rule", "closed_form_expectations",
           "next_layer", "CLOSED_FORM_CODES", "LOGISTIC_CODES"]
