"""Every activation's analytic kernels at the ends of the accepted range, against references built
here without the library's layer maps.

The ends: a pre-activation variance of 10 (and 0.5), correlations ``1 - 1e-12``, ``-1 + 1e-12`` and
exactly ``-1`` (``x`` and ``-x``), depths 1 and 10, and identical points, which must get exactly
(``==``) the per-point diagonal. References:

* exactly (anti)parallel pairs and the diagonal: one-dimensional expectations
  ``E[f(sqrt(s) z) g(+-sqrt(s') z)]`` by a composite Gauss-Legendre rule on ``z`` in [-14, 14]
  (panels of 0.25, 20 nodes each, a panel edge at the kinks), exact to rounding for these
  integrands; at depth 10 the per-point recursion of ``docs/conventions.md`` run on them;
* nearly parallel pairs, smooth activations: the same at correlation +-1 plus the first-order
  term of Price's theorem ``dE[phi(u) phi(v)] / ds12 = E[phi'(u) phi'(v)]`` (the second-order
  term is ``~1e-24``);
* nearly parallel pairs, kinked activations: the exact conditional expectation over ``v`` given
  ``u`` (normal), integrated over ``u`` by the composite rule with panels graded geometrically
  towards the kink down to ``1e-10``, with ``s11 s22 - s12^2`` taken from the points' cross product
  (Lagrange's identity, no cancellation);
* depth 10, pairs: the recursion run on those maps, the smooth activations' at any correlation by
  the tensor product of a composite rule (``v = sqrt(s22) (c z1 + sqrt(1 - c^2) z2)``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from ntksolve.kernels import analytic as ka

from reference import piecewise_linear_slopes
from reference_analytic import DPHI, PHI

ACTIVATIONS = [
    "relu",
    "erf",
    "identity",
    "gelu",
    "tanh",
    "sigmoid",
    "softplus",
    "leaky_relu",
    "leaky_relu(0.2)",
    "abs",
    "abrelu(-0.3, 1.5)",
    "abrelu(2.0, -0.5)",
    "sin",
    "cos",
    "gaussian",
    "monomial(1)",
    "monomial(2)",
    "monomial(3)",
    "monomial(4)",
    "monomial(8)",
]


def _composite(edges, nodes=20):
    """Nodes and weights of Gauss-Legendre (``nodes`` a panel) on each panel between ``edges``."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    a, b = np.asarray(edges[:-1])[:, None], np.asarray(edges[1:])[:, None]
    return (0.5 * (b - a) * x + 0.5 * (a + b)).ravel(), (0.5 * (b - a) * w).ravel()


_Z, _W = _composite(np.linspace(-14.0, 14.0, 113))
_W = _W * np.exp(-0.5 * _Z * _Z) / math.sqrt(2.0 * math.pi)
_GRADED = np.concatenate([-np.geomspace(14.0, 1e-10, 80), [0.0], np.geomspace(1e-10, 14.0, 80)])
_ZG, _WG = _composite(_GRADED)
_WG = _WG * np.exp(-0.5 * _ZG * _ZG) / math.sqrt(2.0 * math.pi)


def _e1(f, g, s11, s22, sign):
    """``E[f(u) g(v)]`` for ``u = sqrt(s11) z``, ``v = sign sqrt(s22) z``."""
    return float(_W @ (f(math.sqrt(s11) * _Z) * g(sign * math.sqrt(s22) * _Z)))


def _kinked_pair(slopes, s11, s22, s12, det):
    """``(E[phi phi], E[phi' phi'])`` of ``a min(z, 0) + b max(z, 0)`` by the conditional rule."""
    a, b = slopes
    u = math.sqrt(s11) * _ZG
    m = s12 / s11 * u  # E[v | u]
    sd = math.sqrt(det / s11)  # sd(v | u)
    t = m / sd
    cdf, pdf = special.ndtr(t), np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    e_max = m * cdf + sd * pdf
    phi_u = a * np.minimum(u, 0.0) + b * np.maximum(u, 0.0)
    dphi_u = np.where(u > 0.0, b, a)
    return float(_WG @ (phi_u * (b * e_max + a * (m - e_max)))), float(_WG @ (dphi_u * (b * cdf + a * (1.0 - cdf))))


def _pair_reference(act, s11, s22, s12, det):
    """Depth-1 ``(nngp, ntk)`` of a pair (``sigma_w = 1``, ``sigma_b = 0``)."""
    slopes = piecewise_linear_slopes(act)
    if slopes is not None and det > 0.0:
        e, ed = _kinked_pair(slopes, s11, s22, s12, det)
    else:
        sign = 1.0 if s12 > 0 else -1.0
        phi, dphi = PHI[act], DPHI[act]
        e, ed = _e1(phi, phi, s11, s22, sign), _e1(dphi, dphi, s11, s22, sign)
        e += (s12 - sign * math.sqrt(s11 * s22)) * ed  # Price's theorem, first order
    return e, e + ed * s12


def _rel(got, ref):
    return abs(got - ref) / max(1.0, abs(ref))


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_depth_one_at_correlations_next_to_and_at_plus_minus_one(act):
    delta = 1e-12
    theta = math.acos(1.0 - delta)
    worst = 0.0
    for s in (0.5, 10.0):
        r = math.sqrt(2.0 * s)  # d = 2, sigma_w = 1, sigma_b = 0: Sigma^1(x, x) = |x|^2 / 2 = s
        X = np.array(
            [
                [r, 0.0],
                [r * math.cos(theta), r * math.sin(theta)],  # rho = 1 - 1e-12
                [-r * math.cos(theta), r * math.sin(theta)],  # rho = -1 + 1e-12
                [-r, 0.0],  # exactly -x
                [0.0, r],  # rho = 0
            ]
        )
        nngp, ntk = ka.analytic_pair_kernels(X, X, 1, act, 1.0, 0.0, True)
        cross = ka.analytic_pair_kernels(X[:1].copy(), X, 1, act, 1.0, 0.0, False)
        for j in (1, 2, 3):
            s11, s22 = X[0] @ X[0] / 2.0, X[j] @ X[j] / 2.0
            s12 = X[0] @ X[j] / 2.0
            det = (X[0, 0] * X[j, 1] - X[0, 1] * X[j, 0]) ** 2 / 4.0
            ref_nngp, ref_ntk = _pair_reference(act, s11, s22, s12, det)
            for K, C, ref in ((nngp, cross[0], ref_nngp), (ntk, cross[1], ref_ntk)):
                worst = max(worst, _rel(K[0, j], ref), _rel(C[0, j], ref))
                assert _rel(K[0, j], ref) <= 1e-8, (act, s, j, K[0, j], ref)
                assert _rel(C[0, j], ref) <= 1e-8, (act, s, j, C[0, j], ref)
            # the bottom of the kernel: K(x, x) by the one-dimensional rule
        phi, dphi = PHI[act], DPHI[act]
        e, ed = _e1(phi, phi, s, s, 1.0), _e1(dphi, dphi, s, s, 1.0)
        assert _rel(nngp[0, 0], e) <= 1e-12 and _rel(ntk[0, 0], e + ed * s) <= 1e-12
    assert worst <= 1e-8


def _scales(act):
    """``(sigma_w, sigma_b)`` that keep every layer's variance in (0, 10] from a first-layer
    variance of 10: ``sigma_w^2 max_s E[phi(sqrt(s) z)^2] + sigma_b^2 <= 9.5``."""
    sb = 0.3
    phi = PHI[act]
    top = max(_e1(phi, phi, s, s, 1.0) for s in np.linspace(1e-3, 10.0, 41))
    return math.sqrt((9.5 - sb * sb) / top), sb


def _diagonal_recursion(act, s1, depth, sw, sb):
    """``(K(x, x), Theta(x, x))`` and the largest variance, by the one-dimensional rule."""
    phi, dphi = PHI[act], DPHI[act]
    s, t, top = s1, s1, s1
    for _ in range(depth):
        s_new = sw * sw * _e1(phi, phi, s, s, 1.0) + sb * sb
        t = s_new + sw * sw * _e1(dphi, dphi, s, s, 1.0) * t
        s = s_new
        top = max(top, s)
    return s, t, top


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("depth", [1, 10])
def test_identical_points_are_exactly_the_diagonal_and_the_diagonal_is_right(act, depth):
    sw, sb = _scales(act)
    rng = np.random.default_rng(depth)
    d = 3
    # first-layer variances sigma_w^2 |x|^2 / d + sigma_b^2 = 10 (row 0) and 0.5 (row 1)
    X = rng.standard_normal((6, d))
    for i, s1 in enumerate((10.0, 0.5, 4.0, 10.0, 0.5, 4.0)):
        X[i] *= math.sqrt(d * (s1 - sb * sb)) / sw / np.linalg.norm(X[i])
    X = np.concatenate([X, X[[0, 1]], -X[[0]]])  # duplicates of rows 0 and 1; -x of row 0
    n = X.shape[0]
    nngp_d, ntk_d = ka.analytic_diag(X, depth, act, sw, sb)
    sym = ka.analytic_pair_kernels(X, X, depth, act, sw, sb, True)
    other = X[::-1].copy()  # the same rows in another order: every pair of identical rows crosses
    cross = ka.analytic_pair_kernels(other, X, depth, act, sw, sb, False)
    for K, C, dg in zip(sym, cross, (nngp_d, ntk_d)):
        assert np.array_equal(np.diag(K), dg)
        assert np.array_equal(np.diag(C[::-1]), dg)
        for i, j in ((0, n - 3), (1, n - 2)):
            assert K[i, j] == K[j, i] == dg[i] == dg[j]
            assert C[n - 1 - i, j] == C[n - 1 - j, i] == dg[i]
        assert np.all(np.isfinite(K))
    # the diagonal against the one-dimensional recursion, at variance 10 and 0.5
    for i in (0, 1):
        s1 = sw * sw * (X[i] @ X[i]) / d + sb * sb
        k_ref, t_ref, top = _diagonal_recursion(act, s1, depth, sw, sb)
        assert top <= 10.0 + 1e-9
        assert _rel(nngp_d[i], k_ref) <= 1e-10, (act, i, nngp_d[i], k_ref)
        assert _rel(ntk_d[i], t_ref) <= 1e-10, (act, i, ntk_d[i], t_ref)


#: the two-dimensional rule: panels of 0.5 with 12 nodes on [-11, 11] (tanh's poles at
#: ``+-i pi / (2 sqrt(10))`` leave 12 nodes a panel an error of ~1e-15)
_Z2, _W2 = _composite(np.linspace(-11.0, 11.0, 45), 12)
_W2 = _W2 * np.exp(-0.5 * _Z2 * _Z2) / math.sqrt(2.0 * math.pi)


def _e2(act, s11, s22, s12):
    """``(E[phi phi], E[phi' phi'])`` of a pair: the conditional rule (kinked) or the tensor product
    of the composite rule, ``v = sqrt(s22) (c z1 + sqrt(1 - c^2) z2)`` (smooth)."""
    det = max(s11 * s22 - s12 * s12, 0.0)
    slopes = piecewise_linear_slopes(act)
    if slopes is not None:
        if det == 0.0:
            sign = 1.0 if s12 > 0 else -1.0
            return _e1(PHI[act], PHI[act], s11, s22, sign), _e1(DPHI[act], DPHI[act], s11, s22, sign)
        return _kinked_pair(slopes, s11, s22, s12, det)
    c, sc = s12 / math.sqrt(s11 * s22), math.sqrt(det / (s11 * s22))
    u = math.sqrt(s11) * _Z2
    v = math.sqrt(s22) * (c * _Z2[:, None] + sc * _Z2[None, :])
    out = []
    for f in (PHI[act], DPHI[act]):
        out.append(float(_W2 @ (f(u) * (f(v) @ _W2))))
    return tuple(out)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_depth_ten_pairs_next_to_and_at_plus_minus_one(act):
    # x with -x and with a point at correlation 1 - 1e-12 (first layer), first-layer variances 10
    # and 4, through 10 layers whose variances stay in (0, 10], against the recursion of docs/
    # conventions.md run on the two-dimensional rule
    sw, sb = _scales(act)
    depth, d = 10, 2
    theta = math.acos(1.0 - 1e-12)
    r = math.sqrt(d * (10.0 - sb * sb)) / sw
    q = math.sqrt(d * (4.0 - sb * sb)) / sw
    X = np.array(
        [[r, 0.0], [-r, 0.0], [q * math.cos(theta), q * math.sin(theta)], [-q * math.cos(theta), -q * math.sin(theta)]]
    )
    nngp, ntk = ka.analytic_pair_kernels(X, X, depth, act, sw, sb, True)
    sq = sw * sw * np.sum(X * X, axis=1) / d + sb * sb
    for j in (1, 2, 3):
        s11, s22 = sq[0], sq[j]
        s12 = t12 = sw * sw * (X[0] @ X[j]) / d + sb * sb
        for _ in range(depth):
            e, ed = _e2(act, s11, s22, s12)
            e11, e22 = _e1(PHI[act], PHI[act], s11, s11, 1.0), _e1(PHI[act], PHI[act], s22, s22, 1.0)
            s12_new = sw * sw * e + sb * sb
            t12 = s12_new + sw * sw * ed * t12
            s12 = s12_new
            s11, s22 = sw * sw * e11 + sb * sb, sw * sw * e22 + sb * sb
            assert max(s11, s22) <= 10.0 + 1e-9
        assert _rel(nngp[0, j], s12) <= 1e-8, (act, j, nngp[0, j], s12)
        assert _rel(ntk[0, j], t12) <= 1e-8, (act, j, ntk[0, j], t12)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("depth", [1, 10])
def test_layered_network_path_at_the_extremes(act, depth):
    # the layer-by-layer path of a Network (mixture, not series, for tanh, sigmoid, softplus)
    # against the MLP's path, checked above against the references, on the extreme points: variance
    # 10, x and -x, correlation 1 - 1e-12, and a duplicate that must be exactly the diagonal
    from ntksolve import MLP
    from ntksolve.kernels.network_analytic import network_analytic_kernels
    from ntksolve.nets.network import Network

    sw, sb = _scales(act)
    d = 2
    theta = math.acos(1.0 - 1e-12)
    r = math.sqrt(d * (10.0 - sb * sb)) / sw
    q = math.sqrt(d * (4.0 - sb * sb)) / sw
    X = np.array([[r, 0.0], [-r, 0.0], [q * math.cos(theta), q * math.sin(theta)], [q, 0.0], [r, 0.0]])
    mlp = MLP((1,) * depth, act, sw, sb)
    ref = ka.analytic_pair_kernels(X, X, depth, act, sw, sb, True)
    got = network_analytic_kernels(Network.from_mlp(mlp), X)
    for g, k in zip(got, ref):
        assert np.all(np.abs(g - k) <= 1e-10 * np.maximum(1.0, np.abs(k))), (act, depth)
        assert g[0, 4] == g[4, 0] == g[0, 0] == g[4, 4]
