"""The analytic (infinite-width) NNGP and NTK kernels of ``ntksolve._jit.analytic``.

Every number is pinned by an independent source: a plain-numpy recursion (tests/reference_analytic.py),
hand-derived closed forms (identity network; Cho & Saul 2009's arc-cosine kernel), the erf and
identity closed forms for the quadrature, and Monte Carlo for the activations without one.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from ntksolve._jit import analytic as ja
from ntksolve._jit.activations import ACTIVATION_CODES, ERF, IDENTITY, RELU

from reference_analytic import DPHI, PHI, layer_expectations, reference_kernels


def _rel_err(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def _outer_factors(code, s11, nodes, weights):
    """``w_k phi(sqrt(s11) z_k)`` and ``w_k phi'(...)``, through the module's own per-point helper."""
    wphi, wdphi = ja._weighted_activations_at_nodes(np.array([[s11], [s11]]), 1, code, nodes, weights)
    return wphi[0, 0], wdphi[0, 0]


def _gh(code, s11, s22, s12, order):
    nodes, weights, lo, hi = ja.gauss_hermite_rule(order)
    wphi, wdphi = _outer_factors(code, s11, nodes, weights)
    return ja.gauss_hermite_expectations(code, s11, s22, s12, wphi, wdphi, nodes, weights, lo, hi)


# ---------------------------------------------------------------------------------------------
# closed forms against the numpy reference, fuzzed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "erf", "identity"])
@pytest.mark.parametrize("seed", range(4))
def test_closed_forms_match_numpy_reference(activation, seed):
    rng = np.random.default_rng(seed)
    code = ACTIVATION_CODES[activation]
    X1 = rng.standard_normal((7, 3)) * rng.uniform(0.2, 2.0)
    X2 = rng.standard_normal((5, 3))
    # nearly parallel and nearly antiparallel pairs. Exactly (anti)parallel ones are left to
    # test_exactly_parallel_pairs: there theta = atan2(sqrt(det), s12) has condition ~1/sqrt(eps),
    # and two correct codes that round the Gram differently differ by ~1e-8.
    X1[1] = 2.5 * X1[0] + 1e-3 * rng.standard_normal(3)
    X2[0] = -X1[2] + 1e-3 * rng.standard_normal(3)
    for depth in range(5):
        sw, sb = rng.uniform(0.5, 2.0), rng.uniform(0.0, 1.0) * (depth % 2)
        nngp, ntk = ja.analytic_pair_kernels(X1, X2, depth, code, sw, sb, False)
        ref_nngp, ref_ntk = reference_kernels(X1, X2, depth, activation, sw, sb)
        assert _rel_err(nngp, ref_nngp) <= 1e-12
        assert _rel_err(ntk, ref_ntk) <= 1e-12
        nngp, ntk = ja.analytic_pair_kernels(X1, X1, depth, code, sw, sb, True)
        ref_nngp, ref_ntk = reference_kernels(X1, X1, depth, activation, sw, sb, symmetric=True)
        assert _rel_err(nngp, ref_nngp) <= 1e-12
        assert _rel_err(ntk, ref_ntk) <= 1e-12


def test_exactly_parallel_pairs():
    # theta = 0 and pi off the diagonal: rounding leaves sqrt(det) ~ sqrt(eps) s, so the agreement
    # with the reference is ~1e-8 (the conditioning), not 1e-12; and it must be finite
    X1 = np.array([[1.0, -2.0, 0.5], [0.3, 0.1, -0.7]])
    X2 = np.array([[2.5, -5.0, 1.25], [-0.3, -0.1, 0.7]])
    for activation in ("relu", "erf"):
        got = ja.analytic_pair_kernels(X1, X2, 3, ACTIVATION_CODES[activation], 1.2, 0.1, False)
        ref = reference_kernels(X1, X2, 3, activation, 1.2, 0.1)
        for a, b in zip(got, ref):
            assert np.all(np.isfinite(a))
            assert _rel_err(a, b) <= 1e-7


def test_identity_network_hand_derived():
    # Sigma^{l+1} = sw^2 Sigma^l + sb^2 and Theta^{l+1} = Sigma^{l+1} + sw^2 Theta^l, unrolled:
    # Sigma^{L+1} = sw^{2(L+1)} <x,x'>/d + sb^2 sum_{k=0}^{L} sw^{2k};
    # Theta^{L+1} = sum_{l=1}^{L+1} sw^{2(L+1-l)} Sigma^l.
    rng = np.random.default_rng(3)
    X1, X2 = rng.standard_normal((4, 6)), rng.standard_normal((3, 6))
    sw, sb, depth = 1.3, 0.7, 3
    g = X1 @ X2.T / 6
    sigma = [sw ** (2 * l) * g + sb**2 * sum(sw ** (2 * k) for k in range(l)) for l in range(1, depth + 2)]
    theta = sum(sw ** (2 * (depth + 1 - l)) * sigma[l - 1] for l in range(1, depth + 2))
    nngp, ntk = ja.analytic_pair_kernels(X1, X2, depth, IDENTITY, sw, sb, False)
    np.testing.assert_allclose(nngp, sigma[-1], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(ntk, theta, rtol=1e-13, atol=1e-13)


def test_relu_one_layer_is_cho_saul_arc_cosine():
    # Cho & Saul (2009): for w ~ N(0, I), E[relu(w.x) relu(w.y)] = k1(x, y) / 2 with
    # k1 = |x||y| (sin t + (pi - t) cos t) / pi, and E[step(w.x) step(w.y)] = (pi - t) / (2 pi).
    # x = (1, 0), y = (1, 1): t = pi/4. With d = 2, sw = 1: u = w.x / sqrt(2), so E[phi phi] = k1/4.
    x, y = np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]])
    t = math.pi / 4
    k1 = 1.0 * math.sqrt(2.0) * (math.sin(t) + (math.pi - t) * math.cos(t)) / math.pi
    nngp_expected = k1 / 4  # sb = 0
    sigma1 = 0.5  # <x, y> / d
    ntk_expected = nngp_expected + (math.pi - t) / (2 * math.pi) * sigma1
    nngp, ntk = ja.analytic_pair_kernels(x, y, 1, RELU, 1.0, 0.0, False)
    assert abs(nngp[0, 0] - nngp_expected) <= 1e-15
    assert abs(ntk[0, 0] - ntk_expected) <= 1e-15
    assert abs(nngp_expected - (1 + 3 * math.pi / 4) / (4 * math.pi)) <= 1e-16  # the same, by hand


def test_vectorised_arctangent_within_two_ulp():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(20000) * np.exp(rng.uniform(-30, 30, 20000))
    y = np.abs(rng.standard_normal(20000)) * np.exp(rng.uniform(-30, 30, 20000))
    x[:50], y[:50] = 1.0, np.linspace(0, 1e-7, 50)  # tiny angles: relative accuracy matters
    x[50:100], y[50:100] = -1.0, np.linspace(0, 1e-7, 50)
    got = np.array([ja._atan2_upper(b, a) for a, b in zip(x, y)])
    want = np.arctan2(y, x)
    assert np.max(np.abs(got - want)) <= 2 * np.spacing(np.pi)
    assert np.max(np.abs(got[1:50] - want[1:50]) / want[1:50]) <= 4e-16
    assert ja._atan2_upper(0.0, 0.0) == 0.0


# ---------------------------------------------------------------------------------------------
# quadrature
# ---------------------------------------------------------------------------------------------

_CORRELATIONS = [-1.0, -0.999999, -0.99, -0.5, 0.0, 0.3, 0.9, 0.99999, 1.0]


@pytest.mark.parametrize("code", [ERF, IDENTITY])
def test_quadrature_matches_closed_forms_up_to_variance_five(code):
    name = {ERF: "erf", IDENTITY: "identity"}[code]
    order = ja._adaptive_order(5.0, code)
    worst = 0.0
    for s11 in (0.05, 1.0, 2.5, 5.0):
        for s22 in (0.3, 5.0):
            for c in _CORRELATIONS:
                s12 = c * math.sqrt(s11 * s22)
                got = _gh(code, s11, s22, s12, order)
                want = layer_expectations(name, s11, s22, s12)
                worst = max(worst, abs(got[0] - float(want[0])), abs(got[1] - float(want[1])))
    assert worst <= 1e-8, worst


def test_adaptive_order_holds_erf_to_1e8_in_the_full_recursion():
    # inputs scaled so that the first-layer variance reaches 5: the adaptive order must follow
    rng = np.random.default_rng(5)
    X = rng.standard_normal((5, 4))
    X *= math.sqrt(5.0 * 4) / np.linalg.norm(X, axis=1, keepdims=True).max()
    X[1] = 0.999 * X[0]
    X[2] = -X[0]
    closed = ja.analytic_pair_kernels(X, X, 2, ERF, 1.0, 0.0, True)
    quad = ja.analytic_pair_kernels(X, X, 2, ERF, 1.0, 0.0, True, force_quadrature=True)
    for a, b in zip(quad, closed):
        assert np.max(np.abs(a - b)) <= 1e-8


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu", "softplus"])
def test_quadrature_matches_monte_carlo(activation):
    code = ACTIVATION_CODES[activation]
    rng = np.random.default_rng(11)
    n = 2_000_000
    for s11, s22, c in ((0.7, 2.0, 0.6), (3.0, 1.2, -0.95)):
        s12 = c * math.sqrt(s11 * s22)
        z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
        u = math.sqrt(s11) * z1
        v = math.sqrt(s22) * (c * z1 + math.sqrt(1 - c * c) * z2)
        got = _gh(code, s11, s22, s12, ja._adaptive_order(max(s11, s22), code))
        for sample, value in zip((PHI[activation](u) * PHI[activation](v),
                                  DPHI[activation](u) * DPHI[activation](v)), got):
            se = sample.std() / math.sqrt(n)
            assert abs(sample.mean() - value) <= 5 * se, (activation, sample.mean(), value, se)


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_quadrature_recursion_matches_dense_reference(activation):
    # the layer map applied twice (depth 2), against a dense tensor-product rule in numpy
    rng = np.random.default_rng(2)
    X1, X2 = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    code = ACTIVATION_CODES[activation]
    nngp, ntk = ja.analytic_pair_kernels(X1, X2, 2, code, 1.1, 0.3, False, quad_order=40)
    ref = reference_kernels(X1, X2, 2, activation, 1.1, 0.3, quadrature=True, order=40)
    assert _rel_err(nngp, ref[0]) <= 1e-12
    assert _rel_err(ntk, ref[1]) <= 1e-12


# ---------------------------------------------------------------------------------------------
# symmetric case, diagonal, degenerate points
# ---------------------------------------------------------------------------------------------


def _relu_diag_by_hand(X, depth, sw, sb):
    s = sw**2 * np.sum(X * X, axis=1) / X.shape[1] + sb**2
    t = s.copy()
    for _ in range(depth):
        # theta = 0: E[relu(u)^2] = s/2, E[relu'(u)^2] = 1/2
        s_new = sw**2 * s / 2 + sb**2
        t = s_new + sw**2 / 2 * t
        s = s_new
    return s, t


def test_symmetric_relu_exact_symmetry_diagonal_and_psd():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((300, 5))
    X[7] = 0.0  # zero variance with sb = 0
    depth, sw, sb = 3, 1.4, 0.0
    nngp, ntk = ja.analytic_pair_kernels(X, X, depth, RELU, sw, sb, True)
    for K in (nngp, ntk):
        assert K.flags.c_contiguous and K.dtype == np.float64
        assert np.array_equal(K, K.T)
        assert np.all(np.isfinite(K))
        assert np.all(K[7] == 0.0)
        eig = np.linalg.eigvalsh(K)
        assert eig[0] >= -1e-10 * eig[-1]
    s, t = _relu_diag_by_hand(X, depth, sw, sb)
    np.testing.assert_allclose(np.diag(nngp), s, rtol=1e-14, atol=0)
    np.testing.assert_allclose(np.diag(ntk), t, rtol=1e-14, atol=0)


@pytest.mark.parametrize("code", [RELU, ERF, ACTIVATION_CODES["tanh"]])
def test_symmetric_equals_general_path_off_the_diagonal(code):
    rng = np.random.default_rng(4)
    quadrature = code not in ja.CLOSED_FORM_CODES
    n = 9 if quadrature else 40
    X = rng.standard_normal((n, 3)) * (0.6 if quadrature else 1.0)  # tanh: variances < 2
    sym = ja.analytic_pair_kernels(X, X, 2, code, 1.2, 0.4, True)
    gen = ja.analytic_pair_kernels(X, X.copy(), 2, code, 1.2, 0.4, False)
    off = ~np.eye(n, dtype=bool)
    for a, b in zip(sym, gen):
        # closed forms: the same arithmetic. Quadrature: the symmetric path puts the row point of
        # (j, i) on the outer axis, the general path that of (i, j); both are within the rule's 1e-8.
        assert _rel_err(a[off], b[off]) <= (2e-8 if quadrature else 1e-14)
        # on the diagonal the general path sees a rounded angle; theta = 0 exactly is the reference
        np.testing.assert_allclose(np.diag(a), np.diag(b), rtol=1e-6)
    diag = ja.analytic_diag(X, 2, code, 1.2, 0.4)
    for a, d in zip(sym, diag):
        assert np.array_equal(np.diag(a), d)


def test_zero_input_non_symmetric_is_finite_zero():
    X1 = np.array([[0.0, 0.0], [1.0, -2.0]])
    X2 = np.array([[3.0, 1.0], [0.0, 0.0]])
    nngp, ntk = ja.analytic_pair_kernels(X1, X2, 2, RELU, 1.0, 0.0, False)
    assert np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))
    assert nngp[0].tolist() == [0.0, 0.0] and ntk[0].tolist() == [0.0, 0.0]
    assert nngp[1, 1] == 0.0 and ntk[1, 1] == 0.0


def test_analytic_diag_is_the_full_diagonal():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((50, 4))
    for code in (RELU, ERF, IDENTITY):
        full = ja.analytic_pair_kernels(X, X, 3, code, 0.9, 0.2, True)
        diag = ja.analytic_diag(X, 3, code, 0.9, 0.2)
        for a, d in zip(full, diag):
            assert d.shape == (50,)
            assert np.array_equal(np.diag(a), d)
