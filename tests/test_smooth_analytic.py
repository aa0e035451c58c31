"""The fast analytic kernels of the smooth activations: the Hermite series of tanh, sigmoid and
softplus (``ntksolve._jit.hermite_series``) and the gelu closed form.

Every number is pinned by a second method: the Kolmogorov scale mixture (closed forms averaged over
a Gauss rule, variance-independent 7e-13), two-dimensional Gauss-Hermite quadrature at the highest
order the module offers, adaptive nested quadrature (tests/reference_analytic.py), and an
independent fine trapezoidal rule for the series coefficients.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ntksolve._jit.activations import ACTIVATION_CODES
from ntksolve.kernels import _analytic_rules as kr
from ntksolve.kernels import analytic as ka

from reference_analytic import PHI, nested_quad_expectations

SERIES = ["tanh", "sigmoid", "softplus"]
#: correlations of the test pairs: both ends, the series' correlation levels and either side of them
RHOS = np.array(
    [
        1.0,
        0.99999,
        0.9995,
        0.999,
        0.996,
        0.99,
        0.985,
        0.97,
        0.95,
        0.93,
        0.9,
        0.85,
        0.8,
        0.75,
        0.7,
        0.6,
        0.5,
        0.4,
        0.3,
        0.1,
        0.0,
        -0.2,
        -0.5,
        -0.8,
        -0.9,
        -0.95,
        -0.99,
        -0.9999,
        -1.0,
    ]
)


def _points(variances, rhos=RHOS):
    """Points in the plane whose first-layer covariances (``sigma_w = 1``, ``sigma_b = 0``, d = 2)
    are ``s`` for each variance and ``sqrt(s s') rho`` between angles ``arccos(rho)`` apart."""
    theta = np.arccos(np.clip(rhos, -1.0, 1.0))
    r = np.sqrt(2.0 * np.asarray(variances, dtype=float))
    return np.concatenate([np.stack([ri * np.cos(theta), ri * np.sin(theta)], axis=1) for ri in r])


def _err(a, b):
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


#: An independent rule of the series coefficients: the full line, five times finer and wider than
#: the module's half grid.
_FINE_Z = np.arange(-16.0, 16.0 + 1e-9, 0.015)


def _fine_hermite_rule(k_max):
    """``w_m He_k(z_m) / sqrt(k!)`` on :data:`_FINE_Z` for ``k = 0 ... k_max``, so that
    ``rule @ f(z)`` is ``E[f(z) He_k(z)] / sqrt(k!)``."""
    z = _FINE_Z
    w = 0.015 * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    he = [w, z * w]
    for k in range(1, k_max):
        he.append((z * he[k] - math.sqrt(k) * he[k - 1]) / math.sqrt(k + 1.0))
    return np.array(he)


@pytest.mark.parametrize("activation", SERIES)
def test_series_layer_maps_match_the_mixture_for_all_correlations_up_to_variance_10(activation):
    # depth 1: nngp = E[phi phi], ntk = nngp + E[phi' phi'] Sigma^1, for every pair of points with
    # variances 0.01 ... 10 and correlations -1 ... 1 (diagonals and identical points included)
    X = _points([0.01, 0.2, 1.0, 2.5, 5.0, 7.5, 10.0])
    code = ACTIVATION_CODES[activation]
    fast = ka.analytic_pair_kernels(X, X, 1, code, 1.0, 0.0, True)
    mix = ka.analytic_pair_kernels(X, X, 1, code, 1.0, 0.0, True, series=False)
    cross = ka.analytic_pair_kernels(X[::3].copy(), X, 1, code, 1.0, 0.0, False)
    for a, b, c in zip(fast, mix, cross):
        assert _err(a, b) <= 1e-11
        assert _err(c, b[::3]) <= 1e-11
    # the series serves every point in range (the mixture the pairs beyond its correlation levels)
    var = kr._diag_pieces(X, 1, kr.as_activation(code), 1.0, 0.0, kr.SERIES, None)[0]
    pieces = kr.series_pieces([var], 1, kr.as_activation(code))[0]
    assert np.array_equal(np.isfinite(pieces.rinv[0]), var[0] <= kr.SERIES_MAX_VARIANCE)
    assert (pieces.level_terms[0] > 0).sum() >= 5  # up to |rho| = 0.9 at variance 10 (tanh)


@pytest.mark.parametrize("activation", SERIES)
def test_series_matches_gauss_hermite_at_its_highest_order(activation):
    # the old 2-D rule at 320 nodes a dimension, within its reach (tanh to 1e-9 up to variance 3)
    smax = 3.0 if activation == "tanh" else 7.0
    X = _points([0.05, 1.0, smax], RHOS[::3])
    code = ACTIVATION_CODES[activation]
    fast = ka.analytic_pair_kernels(X, X, 1, code, 1.0, 0.0, True)
    quad = ka.analytic_pair_kernels(X, X, 1, code, 1.0, 0.0, True, quad_order=320)
    for a, b in zip(fast, quad):
        assert _err(a, b) <= 1e-8


@pytest.mark.parametrize("activation", SERIES + ["gelu"])
def test_maps_at_variance_10_match_nested_quadrature(activation):
    # adaptive nested integration, ~1e-13, at the top of the range: nearly parallel and anti-parallel
    X = _points([10.0], np.array([1.0, 0.97]))
    code = ACTIVATION_CODES[activation]
    nngp, ntk = ka.analytic_pair_kernels(X, X, 1, code, 1.0, 0.0, True)
    for i, j in ((0, 1),):
        s12 = X[i] @ X[j] / 2.0
        e_phi, e_dphi = nested_quad_expectations(activation, 10.0, 10.0, s12)
        assert abs(nngp[i, j] - e_phi) <= 1e-9 * max(1.0, abs(e_phi))
        assert abs(ntk[i, j] - (e_phi + e_dphi * s12)) <= 1e-9 * max(1.0, abs(e_phi + e_dphi * s12))


@pytest.mark.parametrize("activation", SERIES + ["gelu"])
@pytest.mark.parametrize("depth", [1, 2, 5, 10])
def test_deep_kernels_match_a_second_method(activation, depth):
    # random directions, |x|^2 / d from 0.05 to 1.5, and weight scales that keep every variance in (0, 10]
    rng = np.random.default_rng(depth)
    X = rng.standard_normal((14, 4))
    X *= np.sqrt(4.0 * np.linspace(0.05, 1.5, 14))[:, None] / np.linalg.norm(X, axis=1, keepdims=True)
    X[3] = X[1]  # a duplicate
    X[4] = X[1] * (1 + 1e-9)  # and a near-duplicate
    sw, sb = {"tanh": (2.5, 0.3), "sigmoid": (3.0, 0.2), "softplus": (1.2, 0.2), "gelu": (1.3, 0.2)}[activation]
    code = ACTIVATION_CODES[activation]
    var = ka.analytic_diag(X, depth, code, sw, sb)[0]
    assert var.max() <= 10.0
    fast = ka.analytic_pair_kernels(X, X, depth, code, sw, sb, True)
    if activation == "gelu":
        ref = ka.analytic_pair_kernels(X, X, depth, code, sw, sb, True, force_quadrature=True)
        tol = 1e-8  # the adaptive rule's own accuracy
    else:
        ref = ka.analytic_pair_kernels(X, X, depth, code, sw, sb, True, series=False)
        tol = 1e-10
    for a, b in zip(fast, ref):
        assert _err(a, b) <= tol


@pytest.mark.parametrize("activation", SERIES)
def test_identical_points_are_exactly_the_diagonal_beside_served_pairs(activation):
    # duplicates among points the series serves: their pairs are the per-point recursion's numbers
    X = _points([0.3, 1.0, 4.0])
    X = np.concatenate([X, X[[2, 5, 40]], -X[[7]]])
    code = ACTIVATION_CODES[activation]
    diag = ka.analytic_diag(X, 3, code, 1.4, 0.3)
    sym = ka.analytic_pair_kernels(X, X, 3, code, 1.4, 0.3, True)
    cross = ka.analytic_pair_kernels(X[::-1].copy(), X, 3, code, 1.4, 0.3, False)
    n = X.shape[0]
    for K, C, dg in zip(sym, cross, diag):
        assert np.array_equal(np.diag(K), dg)
        for i, j in ((2, n - 4), (5, n - 3), (40, n - 2)):
            assert K[i, j] == K[j, i] == dg[i] == dg[j]
            assert C[n - 1 - i, j] == C[n - 1 - j, i] == dg[i]
        assert np.array_equal(np.diag(C[::-1]), dg)


@pytest.mark.parametrize("activation", SERIES)
def test_series_coefficients_match_an_independent_fine_rule(activation):
    # A_k(s) = E[phi(sqrt(s) z) He_k(z)] / sqrt(k!) on the full line, five times finer and wider,
    # against the module's half-grid rule of the activation's odd (tanh, sigmoid) or even part
    grid, half_w, psi, k_of, even = kr.hermite_series_rule(ACTIVATION_CODES[activation])
    he = _fine_hermite_rule(int(k_of[-2]))
    phi = PHI[activation]
    for s in (0.01, 0.7, 3.0, 10.0):
        full = he @ phi(math.sqrt(s) * _FINE_Z)  # every A_k, k = 0 ... k_max
        x = math.sqrt(s) * grid
        part = phi(x) - 0.5 * x if even else phi(x) - (0.5 if activation == "sigmoid" else 0.0)
        got = psi @ part
        # rounding of sums of ~2000 terms, relative to the largest coefficient
        assert np.max(np.abs(got - full[k_of[:-1]])) <= 5e-14 * max(1.0, np.max(np.abs(full)))
        # the indices the series leaves out are what the parity says: A_1 = sqrt(s)/2 for softplus,
        # A_0 = 0 or 1/2 for tanh, sigmoid, and zero elsewhere
        scale = max(1.0, np.max(np.abs(full)))
        rest = np.delete(full, np.concatenate([[0, 1] if even else [0], k_of[:-1]]))
        assert np.max(np.abs(rest)) <= 5e-14 * scale
        if even:
            assert abs(full[1] - 0.5 * math.sqrt(s)) <= 5e-14 * scale
        else:
            assert abs(full[0] - (0.5 if activation == "sigmoid" else 0.0)) <= 5e-14


@pytest.mark.parametrize("activation", SERIES)
@pytest.mark.parametrize("weight_std", [1.5, 2.0])
def test_blocks_spanning_every_level_match_the_mixture_at_larger_weight_std(activation, weight_std):
    # one block of columns holds pairs at every correlation level (RHOS): the base pass and each
    # stage of gathered pairs above it, at first-layer variances up to 5.6 (10 at weight_std 2)
    X = _points([0.3, 1.0, 2.5])
    code = ACTIVATION_CODES[activation]
    for depth, tol in ((1, 1e-11), (3, 1e-10)):
        fast = ka.analytic_pair_kernels(X, X, depth, code, weight_std, 0.1, True)
        mix = ka.analytic_pair_kernels(X, X, depth, code, weight_std, 0.1, True, series=False)
        cross = ka.analytic_pair_kernels(X[::2].copy(), X, depth, code, weight_std, 0.1, False)
        for a, b, c in zip(fast, mix, cross):
            assert _err(a, b) <= tol
            assert _err(c, b[::2]) <= tol
    # the benchmark's data (d = 16, standard normal, three hidden layers), with a few pairs at
    # high correlations among mostly low ones: blocks where few pairs lie above the base level
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 16))
    near = X[:40] + np.geomspace(0.01, 1.0, 40)[:, None] * rng.standard_normal((40, 16))
    X = np.concatenate([X, near])
    fast = ka.analytic_pair_kernels(X, X, 3, code, weight_std, 0.1, True)
    mix = ka.analytic_pair_kernels(X, X, 3, code, weight_std, 0.1, True, series=False)
    for a, b in zip(fast, mix):
        assert _err(a, b) <= 1e-10


@pytest.mark.parametrize("spread", ["few_high", "uniform"])
def test_each_pair_of_a_block_takes_at_least_the_terms_of_its_own_level(spread):
    # the block kernel against the series summed directly in rho: every pair must equal the series
    # truncated at the terms of its own level or of a level above it (the base's, a stage's), never
    # fewer. Arbitrary coefficients and term counts far below what accuracy needs, so that a pair
    # given too few terms is off by far more than rounding
    from ntksolve._jit.hermite_series import series_expectations_block

    rng = np.random.default_rng(11 if spread == "few_high" else 12)
    levels = np.array([0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999])
    level_terms = np.array([3, 5, 8, 12, 17, 23, 30, 34, 37, 39, 40], np.int64)
    n, j0, t_cap = 256, 7, 40
    if spread == "few_high":  # mostly below the lowest level, a few pairs at each level above
        rho = rng.uniform(-0.3, 0.3, n)
        rho[rng.choice(n, 22, replace=False)] = np.repeat(levels, 2) * rng.choice([-1.0, 1.0], 22)
    else:
        rho = rng.uniform(-0.999, 0.999, n)
    coef1 = rng.standard_normal((1, t_cap, 1)) * 0.8 ** np.arange(t_cap)[None, :, None]
    coef2 = rng.standard_normal((1, t_cap, n + j0)) * 0.8 ** np.arange(t_cap)[None, :, None]
    s11, s22 = 1.7, rng.uniform(0.5, 3.0, n)
    r2 = 1.0 / np.sqrt(s22)
    s12 = rho * np.sqrt(s11 * s22)
    mix_var, mix_w = kr.logistic_mixture_rule(ACTIVATION_CODES["tanh"])
    e_phi, e_dphi = np.empty(n), np.empty(n)
    series_expectations_block(
        ACTIVATION_CODES["tanh"], s11, s22, s12, n, 1.0 / math.sqrt(s11), r2, 0.0, np.zeros(n),
        coef1, coef2, 0, 0, j0, level_terms, levels, False, mix_var, mix_w, e_phi, e_dphi,
        np.empty((8, n)), np.empty((t_cap, n)),
    )  # fmt: skip
    at_top = 0
    for j in range(n):
        own = level_terms[np.searchsorted(levels, abs(rho[j]))]
        matches = []
        for t in level_terms[level_terms >= own]:
            c = coef1[0, :t, 0] * coef2[0, :t, j0 + j]
            k = 2 * np.arange(t) + 1  # the odd series: E = sum_t c_t rho^(2t+1), E' = dE/ds12
            ref = np.sum(c * rho[j] ** k)
            ref_d = np.sum(c * k * rho[j] ** (k - 1)) / math.sqrt(s11 * s22[j])
            if abs(e_phi[j] - ref) <= 1e-14 * np.sum(np.abs(c)) and abs(e_dphi[j] - ref_d) <= 1e-13 * np.sum(
                np.abs(c) * k
            ) / math.sqrt(s11 * s22[j]):
                matches.append(t)
        assert matches, (j, rho[j], own)
        at_top += matches[0] == level_terms[-1]
    if spread == "few_high":  # and the few high pairs do not take everyone to the top level's terms
        assert at_top < n // 4


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_kernel_coefficients_from_the_arithmetic_tanh_match_an_independent_fine_rule(activation):
    # the coefficients the kernels use (tanh from the arithmetic exponential) against the full-line
    # rule of the test above, with numpy's tanh / sigmoid, for variances up to the series' range
    code = ACTIVATION_CODES[activation]
    k_of = kr.hermite_series_rule(code)[3]
    he = _fine_hermite_rule(int(k_of[-2]))
    s = np.array([0.01, 0.7, 2.25, 5.86, 10.0])
    pieces = kr.series_pieces([np.stack([s, s])], 1, kr.as_activation(code))[0]
    t = pieces.coef.shape[1]
    for i, si in enumerate(s):
        full = he @ PHI[activation](math.sqrt(si) * _FINE_Z)
        scale = max(1.0, np.max(np.abs(full)))
        assert np.max(np.abs(pieces.coef[0, :, i] - full[k_of[:t]])) <= 5e-14 * scale
        assert pieces.a0[0, i] == (0.5 if activation == "sigmoid" else 0.0)


def test_gelu_closed_form_matches_gauss_hermite_at_its_highest_order():
    X = _points([0.01, 0.5, 2.0, 7.0], RHOS[::2])
    code = ACTIVATION_CODES["gelu"]
    closed = ka.analytic_pair_kernels(X, X, 1, code, 1.0, 0.0, True)
    quad = ka.analytic_pair_kernels(X, X, 1, code, 1.0, 0.0, True, force_quadrature=True, quad_order=320)
    for a, b in zip(closed, quad):
        assert _err(a, b) <= 1e-10


def test_gp_kernel_gradients_of_tanh_follow_the_fast_kernel():
    # the finite-difference gradient of the scikit-learn kernel differentiates the same values
    from ntksolve.sklearn import NTKKernel

    X = np.random.default_rng(3).standard_normal((9, 3))
    kernel = NTKKernel(weight_std=1.1, bias_std=0.4, depth=2, activation="tanh")
    K, grad = kernel(X, eval_gradient=True)
    code = ACTIVATION_CODES["tanh"]
    for col, (sw, sb) in enumerate(((1.1, 0.4 * math.exp(1e-5)), (1.1 * math.exp(1e-5), 0.4))):
        up = ka.analytic_pair_kernels(X, X, 2, code, sw, sb, True, series=False)[1]
        sw0, sb0 = (1.1, 0.4 * math.exp(-1e-5)) if col == 0 else (1.1 * math.exp(-1e-5), 0.4)
        down = ka.analytic_pair_kernels(X, X, 2, code, sw0, sb0, True, series=False)[1]
        assert _err(grad[:, :, col], (up - down) / 2e-5) <= 1e-6
    assert _err(K, ka.analytic_pair_kernels(X, X, 2, code, 1.1, 0.4, True, series=False)[1]) <= 1e-11
