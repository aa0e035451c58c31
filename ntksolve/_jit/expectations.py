"""The layer maps of the analytic NNGP/NTK recursion, and its layer update, as numba kernels.

Private: the pair and point kernels of :mod:`ntksolve._jit.analytic` and the gradient kernel of
:mod:`ntksolve._jit.gp` evaluate every layer through these functions, so that all paths round alike.

A layer maps ``(S11, S22, S12) -> (E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` for
``(u, v) ~ N(0, [[S11, S12], [S12, S22]])``, one implementation per activation:

- relu: the arc-cosine kernels (Cho & Saul 2009); erf: Williams (1997); gelu ``x Phi(x)``:
  Tsuchida et al. (2021); identity: ``(S12, 1)``. Closed forms, written with
  ``det = S11 S22 - S12^2`` so that a pair with ``S11 = S22 = S12`` has ``det = 0`` exactly.
- abrelu (leaky relu, abs), sin, cos, the Gaussian ``exp(-x^2/2)`` and the monomials ``x^n``:
  closed forms of :mod:`ntksolve._jit.elementary_maps` (derived in ``docs/conventions.md``).
- tanh, sigmoid, softplus: the logistic function is a scale mixture of Gaussian distribution
  functions, ``sigmoid(x) = E_K[Phi(x / 2K)]`` with ``K`` Kolmogorov-distributed (Andrews & Mallows
  1974). Hence ``tanh(u) = E[sign(u + K z)]``, ``sigmoid(u) = E[step(u + 2K z)]`` and
  ``softplus(u) = E[relu(u + 2K z)]`` (``z ~ N(0, 1)``), and each layer map is the sign (arcsine),
  step or arc-cosine closed form at the covariances raised by ``v = K^2`` (``4 K^2``), averaged over
  two independent ``K`` with a fixed Gauss rule (``ntksolve.kernels._analytic_rules.logistic_mixture_rule``).
  The integrand is smooth in ``K`` whatever the variances, so the accuracy (about 1e-12) does not
  degrade with the scale of the inputs, as a Gauss-Hermite rule in the pre-activations does.
  The pair kernels use the Hermite series of :mod:`ntksolve._jit.hermite_series` where it serves
  (most pairs, far cheaper), and this mixture for the other pairs and for every point.
- Gauss-Hermite quadrature (:func:`gauss_hermite_expectations`) remains as the generic rule, only on
  request (``force_quadrature`` / ``quad_order``, a second method for the tests).

The closed forms and the mixture loop over the columns of a block, which LLVM vectorises: the
arctangent and the exponential are straight-line code (:mod:`ntksolve._jit.scalar_math`, checked in
the tests) instead of scalar libm calls, and nothing else calls libm, so a vectorised lane and a
scalar call round identically.
"""

from __future__ import annotations

import math

from numba import njit

from ntksolve._jit.activations import (
    ABRELU,
    COS,
    ERF,
    GAUSSIAN,
    GELU,
    IDENTITY,
    MONOMIAL,
    RELU,
    SIGMOID,
    SIN,
    SOFTPLUS,
    TANH,
    act_dact,
)
from ntksolve._jit.elementary_maps import (
    abrelu_expectations,
    cos_expectations,
    gaussian_expectations,
    monomial_expectations,
    sin_expectations,
)
from ntksolve._jit.scalar_math import arcsine_angle as _arcsine_angle
from ntksolve._jit.scalar_math import atan2_upper as _atan2_upper

#: Activations whose layer maps are closed forms.
CLOSED_FORM_CODES = (RELU, ERF, IDENTITY, GELU, ABRELU, SIN, COS, GAUSSIAN, MONOMIAL)
#: Activations computed as a scale mixture of closed forms over the Kolmogorov distribution.
LOGISTIC_CODES = (TANH, SIGMOID, SOFTPLUS)
#: Bounded activations whose NTK is sensitive to the rounding of ``det`` at large variance.
BOUNDED_CODES = (ERF, TANH, SIGMOID)
#: Activations whose maps multiply two variances (``s11 s22``), which must not underflow.
PRODUCT_CODES = (RELU, ABRELU)

_PI = math.pi
_INV_2PI = 1.0 / (2.0 * math.pi)
_TWO_OVER_PI = 2.0 / math.pi
_FOUR_OVER_PI = 4.0 / math.pi


# ---------------------------------------------------------------------------------------------
# scalar pieces (inlined into the loops; every layer map has exactly one implementation)
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always", error_model="numpy")
def _relu_expectations(prm, s11, s22, s12):
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
    prm : (float, float)
        The activation's parameters (unused here: every closed-form map takes them, so that
        :func:`with_closed_form` hands any of them to the same loop).
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
def _erf_expectations(prm, s11, s22, s12):
    """``(E[erf(u) erf(v)], E[erf'(u) erf'(v)])`` in closed form (Williams 1997).

    ``E[phi phi] = (2/pi) arcsin(2 s12 / sqrt(A))`` and ``E[phi' phi'] = (4/pi) / sqrt(A - 4 s12^2)``
    with ``A = (1 + 2 s11)(1 + 2 s22)``. The arcsine is taken as ``atan2(2 s12, sqrt(D))``,
    ``D = A - 4 s12^2`` from :func:`erf_determinant`, which shares the square root and vectorises.
    Parameters and returns as :func:`_relu_expectations`.
    """
    root = math.sqrt(erf_determinant(s11, s22, s12))
    return _TWO_OVER_PI * _arcsine_angle(2.0 * s12, root), _FOUR_OVER_PI / root


@njit(cache=True, inline="always", error_model="numpy")
def _gelu_expectations(prm, s11, s22, s12):
    """``(E[gelu(u) gelu(v)], E[gelu'(u) gelu'(v)])`` for ``gelu(x) = x Phi(x)``, in closed form.

    Tsuchida, Pearce, van der Heide, Roosta & Gallagher (2021), "Avoiding kernel fixed points":
    with ``P = (1 + s11)(1 + s22)``, ``delta^2 = P - s12^2 = 1 + s11 + s22 + det`` and
    ``alpha = arcsin(s12 / sqrt(P)) = atan2(s12, delta)``::

        E[phi phi]   = s12 / 4 + (s12 alpha + s12^2 / (P delta) + s11 s22 delta / P) / (2 pi)
        E[phi' phi'] = 1/4 + alpha / (2 pi) + s12 / (2 pi delta) (1 / delta^2 + (2 + s11 + s22) / P)

    (the second is the derivative of the first in ``s12``, Price's theorem). Written with the
    ratios ``s / (1 + s)`` so that nothing overflows below the accepted variances. Parameters and
    returns as :func:`_relu_expectations`.
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


@njit(cache=True, inline="always")
def _identity_expectations(prm, s11, s22, s12):
    """``(E[u v], E[1 * 1]) = (s12, 1)``: the identity's layer map."""
    return s12, 1.0


@njit(cache=True, inline="always")
def with_closed_form(code, use, args):
    """``use(f, args)`` with ``f`` the layer map ``f(prm, s11, s22, s12)`` of ``code`` (one of
    :data:`CLOSED_FORM_CODES`): the one dispatch of the closed forms.

    Inlined (as ``use`` is), so that ``use`` is compiled for each map on its own: a loop over a
    block of pairs (:func:`closed_form_rows`) becomes one loop per activation, and each vectorises.
    """
    if code == RELU:
        return use(_relu_expectations, args)
    elif code == ERF:
        return use(_erf_expectations, args)
    elif code == GELU:
        return use(_gelu_expectations, args)
    elif code == ABRELU:
        return use(abrelu_expectations, args)
    elif code == SIN:
        return use(sin_expectations, args)
    elif code == COS:
        return use(cos_expectations, args)
    elif code == GAUSSIAN:
        return use(gaussian_expectations, args)
    elif code == MONOMIAL:
        return use(monomial_expectations, args)
    return use(_identity_expectations, args)


@njit(cache=True, inline="always")
def _at_pair(f, args):
    """``f(prm, s11, s22, s12)``, ``args = (prm, s11, s22, s12)``: one pair."""
    prm, s11, s22, s12 = args
    return f(prm, s11, s22, s12)


@njit(cache=True, inline="always", error_model="numpy")
def closed_form_expectations(code, prm, s11, s22, s12):
    """``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` for an activation of :data:`CLOSED_FORM_CODES`.

    The map of one pair (the per-point recursion, the gradient kernel, the CNTK); the pair loops
    take the same maps through :func:`closed_form_rows`. ``prm``: the activation's parameters
    (``ntksolve._jit.activations``).
    """
    return with_closed_form(code, _at_pair, (prm, s11, s22, s12))


@njit(cache=True, inline="always")
def _same(x, j):
    """``x``: one variance for every pair (a row's)."""
    return x


@njit(cache=True, inline="always")
def _entry(x, j):
    """``x[j]``: a variance for each pair."""
    return x[j]


@njit(cache=True, inline="always", error_model="numpy")
def _over_pairs(f, args):
    """The loop of :func:`closed_form_rows` and :func:`closed_form_pairs` for the map ``f``;
    ``at(s11, j)`` is the pair's first variance (:func:`_same` or :func:`_entry`)."""
    prm, s11, s22, s12, theta, n, step, c1, c2, at = args
    for j in range(n):
        e_phi, e_dphi = f(prm, at(s11, j), s22[j], s12[j])
        s12[j], theta[j] = step(c1, c2, e_phi, e_dphi, theta[j])


@njit(cache=True, inline="always", error_model="numpy")
def closed_form_rows(code, prm, s11, s22, s12, theta, n, step, c1, c2):
    """A closed-form layer over ``n`` pairs of one row, in place: for ``j < n``,
    ``(s12[j], theta[j]) = step(c1, c2, e_phi, e_dphi, theta[j])`` with ``(e_phi, e_dphi)`` the
    map of ``(s11, s22[j], s12[j])``; one loop per activation (:func:`with_closed_form`).

    Parameters
    ----------
    code : int
        One of :data:`CLOSED_FORM_CODES`.
    prm : (float, float)
        Its parameters.
    s11 : float
        The row point's variance.
    s22 : ndarray, shape (>= n,)
        The column points' variances.
    s12, theta : ndarray, shape (>= n,)
        Covariances and NTK of the pairs, overwritten.
    n : int
    step : function
        ``step(c1, c2, e_phi, e_dphi, theta) -> (s12, theta)``: :func:`next_layer` (``c1, c2 =
        sw2, sb2``) or :func:`activation_step`.
    c1, c2 : float
    """
    with_closed_form(code, _over_pairs, (prm, s11, s22, s12, theta, n, step, c1, c2, _same))


@njit(cache=True, inline="always", error_model="numpy")
def closed_form_pairs(code, prm, s11, s22, s12, theta, n, step, c1, c2):
    """:func:`closed_form_rows` with a variance ``s11[j]`` (ndarray, shape (>= n,)) for every pair."""
    with_closed_form(code, _over_pairs, (prm, s11, s22, s12, theta, n, step, c1, c2, _entry))


@njit(cache=True, inline="always")
def activation_step(c1, c2, e_phi, e_dphi, theta):
    """``(E[phi phi], E[phi' phi'] Theta)``: an activation layer alone (``c1, c2`` unused), the
    dense step being a layer of its own (:func:`ntksolve._jit.network_analytic.dense_rows`)."""
    return e_phi, e_dphi * theta


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
        Mixing variances and weights, from :func:`ntksolve.kernels._analytic_rules.logistic_mixture_rule`.
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
def gauss_hermite_diagonal(code, prm, s, nodes, weights):
    """``(E[phi(u)^2], E[phi'(u)^2])`` for ``u ~ N(0, s)``: the one-dimensional rule.

    The map of a point, and of a pair whose covariances are all equal (:func:`gauss_hermite_expectations`
    calls this then), so that both round alike.
    """
    sd = math.sqrt(s)
    e_phi = 0.0
    e_dphi = 0.0
    for k in range(nodes.shape[0]):
        u = sd * nodes[k]
        f, g = act_dact(code, prm, u)
        e_phi += weights[k] * f * f
        e_dphi += weights[k] * g * g
    return e_phi, e_dphi


@njit(cache=True, error_model="numpy")
def gauss_hermite_expectations(code, prm, s11, s22, s12, wphi_u, wdphi_u, nodes, weights, lo, hi):
    """``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` by two-dimensional Gauss-Hermite quadrature.

    ``u = sqrt(s11) z1`` and ``v = sqrt(s22) (c z1 + sqrt(1 - c^2) z2)`` with ``z1, z2`` independent
    standard normals and ``c = s12 / sqrt(s11 s22)``; the outer sum runs over ``z1``, whose factor
    ``w_k phi(u_k)`` depends on one point only and comes precomputed. Equal covariances
    (``s11 = s22 = s12``, ``u = v``) take the one-dimensional rule of the point itself.

    Parameters
    ----------
    code : int
        Activation code (``ntksolve._jit.activations.ACTIVATION_CODES``).
    prm : (float, float)
        Its parameters.
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
        return gauss_hermite_diagonal(code, prm, s11, nodes, weights)
    # the product of the roots, not the root of the product: s11 s22 underflows to 0 for variances
    # below 1e-154, which read the pair as independent (c = 0)
    root = math.sqrt(s11) * math.sqrt(s22)
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
            f, g = act_dact(code, prm, v)
            inner_phi += weights[m] * f
            inner_dphi += weights[m] * g
        e_phi += wphi_u[k] * inner_phi
        e_dphi += wdphi_u[k] * inner_dphi
    return e_phi, e_dphi


__all__ = [
    "closed_form_expectations",
    "closed_form_rows",
    "closed_form_pairs",
    "with_closed_form",
    "activation_step",
    "erf_determinant",
    "next_layer",
    "logistic_expectations_block",
    "gauss_hermite_diagonal",
    "gauss_hermite_expectations",
    "CLOSED_FORM_CODES",
    "LOGISTIC_CODES",
    "BOUNDED_CODES",
    "PRODUCT_CODES",
]
