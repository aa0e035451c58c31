"""The analytic (infinite-width) NNGP and NTK kernels (``ntksolve.kernels.analytic`` and its numba kernels).

Every number is pinned by an independent source: a plain-numpy recursion (tests/reference_analytic.py),
hand-derived closed forms (identity network; Cho & Saul 2009's arc-cosine kernel), the erf and
identity closed forms for the quadrature, and Monte Carlo for the activations without one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import ntksolve
from ntksolve._jit import analytic_points as jp
from ntksolve._jit import expectations as je
from ntksolve.kernels import _analytic_rules as kr
from ntksolve.kernels import analytic as ka
from ntksolve._jit.activations import ACTIVATION_CODES, ERF, IDENTITY, RELU

from reference_analytic import DPHI, PHI, layer_expectations, reference_kernels


def _rel_err(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def _outer_factors(phi, s11, nodes, weights):
    """``w_k phi(sqrt(s11) z_k)`` and ``w_k phi'(...)``, through the module's own per-point helper."""
    wphi, wdphi = jp._weighted_activations_at_nodes(np.array([[s11], [s11]]), 1, phi.code, phi.params, nodes, weights)
    return wphi[0, 0], wdphi[0, 0]


def _gh(code, s11, s22, s12, order):
    """The module's 2-D Gauss-Hermite layer map; ``code`` an activation code or an Activation."""
    phi = kr.as_activation(code)
    nodes, weights, lo, hi = kr.gauss_hermite_rule(order)
    wphi, wdphi = _outer_factors(phi, s11, nodes, weights)
    return je.gauss_hermite_expectations(phi.code, phi.params, s11, s22, s12, wphi, wdphi, nodes, weights, lo, hi)


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
        nngp, ntk = ka.analytic_pair_kernels(X1, X2, depth, code, sw, sb, False)
        ref_nngp, ref_ntk = reference_kernels(X1, X2, depth, activation, sw, sb)
        assert _rel_err(nngp, ref_nngp) <= 1e-12
        assert _rel_err(ntk, ref_ntk) <= 1e-12
        nngp, ntk = ka.analytic_pair_kernels(X1, X1, depth, code, sw, sb, True)
        ref_nngp, ref_ntk = reference_kernels(X1, X1, depth, activation, sw, sb, symmetric=True)
        assert _rel_err(nngp, ref_nngp) <= 1e-12
        assert _rel_err(ntk, ref_ntk) <= 1e-12


def test_exactly_parallel_pairs():
    # theta = 0 and pi off the diagonal: rounding leaves sqrt(det) ~ sqrt(eps) s, so the agreement
    # with the reference is ~1e-8 (the conditioning), not 1e-12; and it must be finite
    X1 = np.array([[1.0, -2.0, 0.5], [0.3, 0.1, -0.7]])
    X2 = np.array([[2.5, -5.0, 1.25], [-0.3, -0.1, 0.7]])
    for activation in ("relu", "erf"):
        got = ka.analytic_pair_kernels(X1, X2, 3, ACTIVATION_CODES[activation], 1.2, 0.1, False)
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
    nngp, ntk = ka.analytic_pair_kernels(X1, X2, depth, IDENTITY, sw, sb, False)
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
    nngp, ntk = ka.analytic_pair_kernels(x, y, 1, RELU, 1.0, 0.0, False)
    assert abs(nngp[0, 0] - nngp_expected) <= 1e-15
    assert abs(ntk[0, 0] - ntk_expected) <= 1e-15
    assert abs(nngp_expected - (1 + 3 * math.pi / 4) / (4 * math.pi)) <= 1e-16  # the same, by hand


def test_vectorised_arctangent_within_two_ulp():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(20000) * np.exp(rng.uniform(-30, 30, 20000))
    y = np.abs(rng.standard_normal(20000)) * np.exp(rng.uniform(-30, 30, 20000))
    x[:50], y[:50] = 1.0, np.linspace(0, 1e-7, 50)  # tiny angles: relative accuracy matters
    x[50:100], y[50:100] = -1.0, np.linspace(0, 1e-7, 50)
    got = np.array([je._atan2_upper(b, a) for a, b in zip(x, y)])
    want = np.arctan2(y, x)
    assert np.max(np.abs(got - want)) <= 2 * np.spacing(np.pi)
    assert np.max(np.abs(got[1:50] - want[1:50]) / want[1:50]) <= 4e-16
    assert je._atan2_upper(0.0, 0.0) == 0.0


# ---------------------------------------------------------------------------------------------
# quadrature
# ---------------------------------------------------------------------------------------------

_CORRELATIONS = [-1.0, -0.999999, -0.99, -0.5, 0.0, 0.3, 0.9, 0.99999, 1.0]


@pytest.mark.parametrize("code", [ERF, IDENTITY])
def test_quadrature_matches_closed_forms_up_to_variance_five(code):
    name = {ERF: "erf", IDENTITY: "identity"}[code]
    order = kr._adaptive_order(5.0, code)
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
    closed = ka.analytic_pair_kernels(X, X, 2, ERF, 1.0, 0.0, True)
    quad = ka.analytic_pair_kernels(X, X, 2, ERF, 1.0, 0.0, True, force_quadrature=True)
    for a, b in zip(quad, closed):
        assert np.max(np.abs(a - b)) <= 1e-8


def test_quadrature_keeps_the_correlation_of_tiny_variances():
    # bias-free erf is linear near 0: K(s X) / s^2 tends to a limit the closed form reaches; the
    # quadrature's correlation s12 / sqrt(s11 s22) read s11 s22 = 0 below variances of 1e-154 and
    # took every pair for independent (an off-diagonal NNGP of 0)
    X = np.random.default_rng(0).standard_normal((3, 4))
    closed = ka.analytic_pair_kernels(X * 1e-70, X * 1e-70, 1, ERF, 1.0, 0.0, True)
    for s in (1e-70, 1e-100):
        Z = np.ascontiguousarray(X * s)
        quad = ka.analytic_pair_kernels(Z, Z, 1, ERF, 1.0, 0.0, True, force_quadrature=True)
        for a, b in zip(quad, closed):
            np.testing.assert_allclose(a / s**2, b / 1e-140, rtol=1e-8)


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
        got = _gh(code, s11, s22, s12, kr._adaptive_order(max(s11, s22), code))
        for sample, value in zip(
            (PHI[activation](u) * PHI[activation](v), DPHI[activation](u) * DPHI[activation](v)), got
        ):
            se = sample.std() / math.sqrt(n)
            assert abs(sample.mean() - value) <= 5 * se, (activation, sample.mean(), value, se)


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_quadrature_recursion_matches_dense_reference(activation):
    # the layer map applied twice (depth 2), against a dense tensor-product rule in numpy
    rng = np.random.default_rng(2)
    X1, X2 = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    code = ACTIVATION_CODES[activation]
    nngp, ntk = ka.analytic_pair_kernels(X1, X2, 2, code, 1.1, 0.3, False, quad_order=40)
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
    nngp, ntk = ka.analytic_pair_kernels(X, X, depth, RELU, sw, sb, True)
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
    quadrature = code not in je.CLOSED_FORM_CODES
    n = 9 if quadrature else 40
    X = rng.standard_normal((n, 3)) * (0.6 if quadrature else 1.0)  # tanh: variances < 2
    sym = ka.analytic_pair_kernels(X, X, 2, code, 1.2, 0.4, True)
    gen = ka.analytic_pair_kernels(X, X.copy(), 2, code, 1.2, 0.4, False)
    off = ~np.eye(n, dtype=bool)
    for a, b in zip(sym, gen):
        # closed forms: the same arithmetic. Quadrature: the symmetric path puts the row point of
        # (j, i) on the outer axis, the general path that of (i, j); both are within the rule's 1e-8.
        assert _rel_err(a[off], b[off]) <= (2e-8 if quadrature else 1e-14)
        # on the diagonal the general path sees a rounded angle; theta = 0 exactly is the reference
        np.testing.assert_allclose(np.diag(a), np.diag(b), rtol=1e-6)
    diag = ka.analytic_diag(X, 2, code, 1.2, 0.4)
    for a, d in zip(sym, diag):
        assert np.array_equal(np.diag(a), d)


def test_zero_input_non_symmetric_is_finite_zero():
    X1 = np.array([[0.0, 0.0], [1.0, -2.0]])
    X2 = np.array([[3.0, 1.0], [0.0, 0.0]])
    nngp, ntk = ka.analytic_pair_kernels(X1, X2, 2, RELU, 1.0, 0.0, False)
    assert np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))
    assert nngp[0].tolist() == [0.0, 0.0] and ntk[0].tolist() == [0.0, 0.0]
    assert nngp[1, 1] == 0.0 and ntk[1, 1] == 0.0


def test_analytic_diag_is_the_full_diagonal():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((50, 4))
    for code in (RELU, ERF, IDENTITY):
        full = ka.analytic_pair_kernels(X, X, 3, code, 0.9, 0.2, True)
        diag = ka.analytic_diag(X, 3, code, 0.9, 0.2)
        for a, d in zip(full, diag):
            assert d.shape == (50,)
            assert np.array_equal(np.diag(a), d)


# ---------------------------------------------------------------------------------------------
# identical inputs: exactly the diagonal, on every path
# ---------------------------------------------------------------------------------------------

#: every activation: the plain names, and spellings with arguments whose variances stay moderate
#: at the weight scales below (the growing monomials have tests of their own)
_ALL = list(ntksolve.ACTIVATIONS) + ["leaky_relu(0.2)", "abrelu(-0.3, 1.5)", "monomial(1)"]


def _points_with_copies(n=12, d=3, seed=21):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X[5] = X[3]  # a duplicated row
    X[8] = X[3]  # ... twice
    X[9] = np.where(X[1] == 0.0, -0.0, X[1])
    X[10] = 0.0
    X[11] = -0.0  # equal to X[10] in value; every product treats them alike
    Y = rng.standard_normal((4, d))
    Y[0] = X[2]  # a test point equal to a training point
    Y[2] = X[3]
    return X, Y


def _assert_identical_pairs_exact(code, depth, sw, sb, **kw):
    X, Y = _points_with_copies()
    diag = ka.analytic_diag(X, depth, code, sw, sb, **kw)
    sym = ka.analytic_pair_kernels(X, X, depth, code, sw, sb, True, **kw)
    cross = ka.analytic_pair_kernels(X, X.copy(), depth, code, sw, sb, False, **kw)
    test = ka.analytic_pair_kernels(Y, X, depth, code, sw, sb, False, **kw)
    for K, C, T, dg in zip(sym, cross, test, diag):
        assert np.all(np.diag(K) == dg) and np.all(np.diag(C) == dg)
        for i, j in ((3, 5), (5, 8), (3, 8), (10, 11)):
            assert K[i, j] == dg[i] and K[j, i] == dg[i] and C[i, j] == dg[i] and C[j, i] == dg[j]
        assert T[0, 2] == dg[2] == K[2, 2] and T[2, 3] == T[2, 5] == T[2, 8] == dg[3]


@pytest.mark.parametrize("activation", _ALL)
def test_identical_inputs_give_exactly_the_diagonal(activation):
    # the reference for identical points is the per-point recursion; the pair formula must agree to
    # the bit, whether the points are on the diagonal, duplicated, copied or in a second array
    _assert_identical_pairs_exact(activation, 4, 1.4, 0.3)


@pytest.mark.parametrize("activation", ["erf", "tanh", "gelu", "sin", "gaussian", "monomial(2)"])
def test_identical_inputs_exact_with_gauss_hermite(activation):
    _assert_identical_pairs_exact(activation, 2, 0.7, 0.2, force_quadrature=True)


@pytest.mark.parametrize("degree", range(2, 9))
def test_identical_inputs_exact_for_every_monomial(degree):
    # the variances of x^n grow like s^n per layer: a small weight scale keeps them in range
    _assert_identical_pairs_exact(f"monomial({degree})", 3, 0.3, 0.3)


def test_relu_deep_duplicates_were_off_now_exact():
    # before: the general formula at a rounded angle, ~1e-9 relative off the diagonal at depth 3
    # and growing with depth
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 5))
    X[5] = X[3]
    for depth in (3, 20):
        nngp, ntk = ka.analytic_pair_kernels(X, X, depth, RELU, 1.4, 0.1, True)
        s, t = _relu_diag_by_hand(X, depth, 1.4, 0.1)
        assert ntk[3, 5] == ntk[3, 3] and nngp[3, 5] == nngp[3, 3]
        np.testing.assert_allclose(np.diag(ntk), t, rtol=1e-13)


def test_chaotic_erf_depth_20_stays_a_kernel_and_fits():
    # weight_std = 8: nearby correlations are driven apart at every layer, so the old mismatch of a
    # duplicated row (general formula vs the point's own recursion) grew to 30% and made the kernel
    # indefinite. The exact diagonal keeps it positive semidefinite; the fit must go through.
    from ntksolve import MLP, analytic_kernels
    from ntksolve import NTKRegressor

    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    X[7] = X[2]
    X[19] = X[2]
    y = np.sin(X[:, 0]) + X[:, 1]
    net = MLP((1,) * 20, "erf", 8.0, 0.5)
    pair = analytic_kernels(net, X)
    cross = analytic_kernels(net, X, X.copy())
    for K, C in zip(pair, cross):
        assert K[2, 7] == K[2, 2] == K[7, 19] and np.all(np.diag(C) == np.diag(K))
        eig = np.linalg.eigvalsh(K)
        assert eig[0] >= -1e-12 * eig[-1]
    model = NTKRegressor(
        hidden_layer_sizes=(8,) * 20, activation="erf", weight_std=8.0, bias_std=0.5, diag_reg=0.0
    ).fit(X, y)
    pred = model.predict(X)
    # t = inf without ridge interpolates (the duplicates carry the same target, so the zero mode
    # they add is consistent): the training targets come back
    np.testing.assert_allclose(pred, y, rtol=0, atol=1e-10)


def test_dask_tiles_identical_rows_exact():
    dask = pytest.importorskip("dask")
    from ntksolve import MLP
    from ntksolve.dask import analytic_kernels as tiled

    X, _ = _points_with_copies()
    net = MLP((1, 1, 1), "tanh", 1.3, 0.2)
    diag = ka.analytic_diag(X, 3, ACTIVATION_CODES["tanh"], 1.3, 0.2)
    with dask.config.set(scheduler="sync"):
        pair = tiled(net, X, chunks=4)  # rows 3, 5, 8 in three different tiles
        nngp, ntk = dask.compute(pair.nngp, pair.ntk)
    for K, dg in zip((nngp, ntk), diag):
        assert np.all(np.diag(K) == dg)
        assert K[3, 5] == K[5, 8] == K[8, 3] == dg[3] and K[10, 11] == dg[10]


# ---------------------------------------------------------------------------------------------
# extreme inputs: computed within the accepted range, refused beyond it
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", _ALL + ["monomial(4)"])
@pytest.mark.parametrize("magnitude", [1e78, 1e154, 1e300])
def test_overflowing_inputs_are_refused(activation, magnitude):
    # before: NaN (relu, erf at 1e78), OverflowError (quadrature at 1e154)
    X = np.random.default_rng(0).standard_normal((4, 3)) * magnitude
    with pytest.raises(ValueError, match="Standardise the features"):
        ka.analytic_pair_kernels(X, X, 2, activation, 1.0, 0.1, True)
    with pytest.raises(ValueError, match="Standardise the features"):
        ka.analytic_diag(X, 2, activation, 1.0, 0.1)
    with pytest.raises(ValueError, match="Standardise the features"):
        ka.analytic_pair_kernels(X[:1] / magnitude, X, 2, activation, 1.0, 0.1, False)


def test_overflowing_inputs_refused_by_gauss_hermite_and_public_api():
    from ntksolve import MLP, analytic_kernels

    X = np.full((3, 2), 1e154)
    with pytest.raises(ValueError, match="Standardise the features"):
        ka.analytic_pair_kernels(X, X, 2, ERF, 1.0, 0.1, True, force_quadrature=True)
    with pytest.raises(ValueError, match=r"relu kernel: row 0 has entries up to 1e\+154"):
        analytic_kernels(MLP((4,), "relu"), X)


def test_variance_growing_with_depth_is_refused():
    # relu with sigma_w^2 / 2 = 50 per layer: 50^100 overflows long before the output
    X = np.random.default_rng(0).standard_normal((3, 2))
    with pytest.raises(ValueError, match="lower weight_std"):
        ka.analytic_pair_kernels(X, X, 100, RELU, 10.0, 0.0, True)


def test_relu_at_large_accepted_scale_is_exactly_homogeneous():
    # without bias the relu kernels are positively homogeneous of degree 2, and a power of two
    # scales every operation exactly: K(a x, a y) = a^2 K(x, y) to the bit, near the top of the range
    rng = np.random.default_rng(1)
    X1, X2 = rng.standard_normal((6, 3)), rng.standard_normal((5, 3))
    X2[1] = X1[0]
    a = 2.0**230  # variances ~ 1e138
    for sym in (True, False):
        Y = X1 if sym else X2
        small = ka.analytic_pair_kernels(X1, Y, 3, RELU, 1.3, 0.0, sym)
        big = ka.analytic_pair_kernels(X1 * a, Y * a, 3, RELU, 1.3, 0.0, sym)
        for s, b in zip(small, big):
            assert np.all(np.isfinite(b))
            assert np.array_equal(b, s * a * a)


def _erf_ntk_exact_det(x, y, sw, sb):
    """Depth-1 erf NTK with the determinant of the first-layer covariance in exact rationals.

    Everything else is well conditioned, so double precision suffices for it.
    """
    from fractions import Fraction

    d = x.size
    a, b = Fraction(sw) ** 2 / d, Fraction(sb) ** 2
    fx, fy = [Fraction(float(v)) for v in x], [Fraction(float(v)) for v in y]
    s11 = a * sum(v * v for v in fx) + b
    s22 = a * sum(v * v for v in fy) + b
    s12 = a * sum(u * v for u, v in zip(fx, fy)) + b
    D = float(1 + 2 * (s11 + s22) + 4 * (s11 * s22 - s12 * s12))
    A = float((1 + 2 * s11) * (1 + 2 * s22))
    e_phi = 2 / np.pi * np.arcsin(float(2 * s12) / np.sqrt(A))
    return sw**2 * e_phi + sb**2 + sw**2 * 4 / np.pi / np.sqrt(D) * float(s12)


def test_erf_at_the_accepted_scale_is_accurate_and_beyond_is_refused():
    # before: identical rows of magnitude 1e7 were 1.6% apart, as (1 + 2s)^2 - 4 s^2 cancelled
    # (the code claimed it did not). Now identical rows are exact, nearly parallel ones are good to
    # eps * s (1e-9 here), and variances where that exceeds 1e-8 are refused.
    rng = np.random.default_rng(3)
    limit = kr._MAX_VARIANCE_BOUNDED
    X = rng.standard_normal((6, 3))
    X *= np.sqrt(0.9 * limit * 3) / np.linalg.norm(X, axis=1, keepdims=True)  # first-layer s = 0.9 limit
    X[1] = X[0]
    X[2] = X[0] * (1 + 1e-9)
    X[3] = X[0]
    X[3, 1] *= 1 + 1e-6
    nngp, ntk = ka.analytic_pair_kernels(X, X, 1, ERF, 1.0, 0.1, True)
    assert ntk[0, 1] == ntk[0, 0] and nngp[0, 1] == nngp[0, 0]
    for j in (2, 3, 4):
        want = _erf_ntk_exact_det(X[0], X[j], 1.0, 0.1)
        assert abs(ntk[0, j] - want) <= 1e-8 * abs(want), (j, ntk[0, j], want)
    with pytest.raises(ValueError, match="above 1e\\+07"):
        ka.analytic_pair_kernels(X * 1.1, X * 1.1, 1, ERF, 1.0, 0.1, True)
    with pytest.raises(ValueError, match="Standardise"):
        ka.analytic_diag(X, 1, ACTIVATION_CODES["tanh"], 1.1, 0.0)


def test_gauss_hermite_beyond_its_capped_order_is_refused():
    # the adaptive rule (on request only) reaches 1e-8 up to a variance of 3.6 for tanh
    X = np.full((2, 1), 3.0)
    with pytest.raises(ValueError, match="Gauss-Hermite rule"):
        ka.analytic_pair_kernels(X, X, 2, ACTIVATION_CODES["tanh"], 1.0, 0.0, True, force_quadrature=True)


# ---------------------------------------------------------------------------------------------
# the logistic family (Kolmogorov scale mixture) and gelu: accurate at every scale
# ---------------------------------------------------------------------------------------------


def test_kolmogorov_rule_reproduces_the_logistic_function():
    from scipy import special

    v, w = kr.logistic_mixture_rule(ACTIVATION_CODES["sigmoid"])  # v = 4 K^2
    k = np.sqrt(v) / 2
    assert abs(w.sum() - 1) <= 1e-15
    assert abs(w @ k - np.sqrt(np.pi / 2) * np.log(2)) <= 1e-14  # E[K] of the Kolmogorov law
    assert abs(w @ k**2 - np.pi**2 / 12) <= 1e-14  # E[K^2]
    x = np.linspace(-40, 40, 2001)
    mix = special.ndtr(x[:, None] / (2 * k[None, :])) @ w  # sigmoid(x) = E[Phi(x / 2K)]
    # pointwise 4e-12; averaged over a Gaussian pre-activation (the layer maps) it shrinks further
    assert np.max(np.abs(mix - special.expit(x))) <= 1e-11


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus", "gelu"])
def test_default_maps_match_dense_gauss_hermite_at_unit_scale(activation):
    # a second method where the dense rule is exact to ~1e-13: variances <= 0.6
    rng = np.random.default_rng(9)
    X1, X2 = rng.standard_normal((4, 3)) * 0.5, rng.standard_normal((3, 3)) * 0.5
    X2[0] = -X1[1]
    code = ACTIVATION_CODES[activation]
    got = ka.analytic_pair_kernels(X1, X2, 2, code, 1.1, 0.3, False)
    ref = reference_kernels(X1, X2, 2, activation, 1.1, 0.3, quadrature=True, order=160)
    for a, b in zip(got, ref):
        assert _rel_err(a, b) <= 1e-11


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu", "softplus"])
def test_large_feature_scale_accurate_psd_and_symmetric(activation):
    # features of std 10: variances ~ 100-300, where the old Gauss-Hermite rule (capped at 320
    # nodes) lost up to 1e-2, the kernel went indefinite (tanh: min/max eigenvalue -2e-2) and the
    # cross kernel differed from the symmetric one by 1e-4
    from reference_analytic import nested_quad_expectations

    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 5)) * 10.0
    code = ACTIVATION_CODES[activation]
    sym = ka.analytic_pair_kernels(X, X, 1, code, 1.0, 0.1, True)
    cross = ka.analytic_pair_kernels(X, X.copy(), 1, code, 1.0, 0.1, False)
    for K, C in zip(sym, cross):
        eig = np.linalg.eigvalsh(K)
        assert eig[0] >= -1e-13 * eig[-1]
        assert _rel_err(C, K) <= 1e-13
    # depth 1: each entry is sw^2 E[phi phi] + sb^2 of the first-layer covariances, by nested quad
    s = X @ X.T / 5 + 0.01
    for i, j in ((0, 1), (2, 2)):
        e_phi, e_dphi = nested_quad_expectations(activation, s[i, i], s[j, j], s[i, j])
        scale = max(1.0, abs(s[i, j]))
        assert abs(sym[0][i, j] - (e_phi + 0.01)) <= 1e-11 * scale
        assert abs(sym[1][i, j] - (e_phi + 0.01 + e_dphi * s[i, j])) <= 1e-11 * scale
