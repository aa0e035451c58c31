"""The piecewise-linear (leaky relu, abs, abrelu), trigonometric, Gaussian and monomial activations.

Their spellings; the closed-form layer maps against Monte Carlo of the bivariate Gaussian and
against quadrature (tests/reference_analytic.py: a dense Gauss-Hermite product rule, adaptive nested
integration, and for the kinked ones adaptive quadrature of the exact conditional expectation);
the recursion against the numpy reference to depth 10; the lane-identical exponential against
libm; wide networks against the analytic kernel; the estimators and persistence with a spelling.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import ntksolve
from ntksolve import MLP, empirical_ntk
from ntksolve._jit import expectations as je
from ntksolve._jit import scalar_math as sm
from ntksolve.kernels import analytic as ka
from ntksolve.nets.layers import Activation

from reference import piecewise_linear_slopes
from reference_analytic import (
    DPHI,
    PHI,
    conditional_expectations,
    layer_expectations,
    nested_quad_expectations,
    reference_kernels,
)

KINKED = ["leaky_relu", "leaky_relu(0.2)", "abs", "abrelu(-0.3, 1.5)", "abrelu(2.0, -0.5)"]
SMOOTH = ["sin", "cos", "gaussian", "monomial(1)", "monomial(2)", "monomial(3)", "monomial(4)"]
NEW = KINKED + SMOOTH


def _map(spelling, s11, s22, s12):
    phi = Activation(spelling)
    return je.closed_form_expectations(phi.code, phi.params, float(s11), float(s22), float(s12))


# ---------------------------------------------------------------------------------------------
# spellings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling, name, family, params",
    [
        ("leaky_relu", "leaky_relu", "abrelu", (0.01, 1.0)),
        ("leaky_relu(0.01)", "leaky_relu", "abrelu", (0.01, 1.0)),
        ("leaky_relu( 0.2 )", "leaky_relu(0.2)", "abrelu", (0.2, 1.0)),
        ("abs", "abs", "abrelu", (-1.0, 1.0)),
        ("abrelu(-1, 2)", "abrelu(-1.0, 2.0)", "abrelu", (-1.0, 2.0)),
        ("monomial(3)", "monomial(3)", "monomial", (3.0, 0.0)),
        ("sin", "sin", "sin", (0.0, 0.0)),
        ("gaussian", "gaussian", "gaussian", (0.0, 0.0)),
        ("relu", "relu", "relu", (0.0, 0.0)),
    ],
)
def test_spellings(spelling, name, family, params):
    phi = Activation(spelling)
    assert (phi.name, phi.family, phi.params) == (name, family, params)
    assert Activation(phi.name) == phi and hash(Activation(phi.name)) == hash(phi)
    net = MLP((3,), spelling)
    assert net.activation == name and MLP(**net.get_config()) == net


@pytest.mark.parametrize(
    "spelling, match",
    [
        ("abrelu", "takes 2 argument"),
        ("abrelu(1)", "takes 2 argument"),
        ("abrelu(0, 0)", "zero everywhere"),
        ("monomial", "takes 1 argument"),
        ("monomial(9)", "integer from 1 to 8"),
        ("monomial(0)", "integer from 1 to 8"),
        ("monomial(2.0)", "integer from 1 to 8"),
        ("leaky_relu(inf)", "not a finite number"),
        ("leaky_relu(x)", "not a finite number"),
        ("leaky_relu()", "takes 0 or 1 argument"),
        ("sin(1)", "takes 0 argument"),
        ("swish", "valid activations are relu"),
        ("Sin", "valid activations are relu"),
    ],
)
def test_bad_spellings_are_refused(spelling, match):
    with pytest.raises(ValueError, match=match):
        Activation(spelling)
    with pytest.raises(ValueError, match="activation"):
        ntksolve.NTKRegressor(activation=spelling).fit(np.ones((3, 2)), np.ones(3))
    with pytest.raises(TypeError, match="must be a string"):
        Activation(0.2)


def test_the_empirical_forward_pass_computes_the_spelled_function():
    # one hidden layer of width 1, W = b = 1 (weight scale 1/sqrt(1)): f(x) = phi(x + 1) + 1
    z = np.linspace(-3, 3, 13)[:, None]
    for spelling, phi in (
        ("leaky_relu(0.2)", lambda t: np.where(t > 0, t, 0.2 * t)),
        ("abrelu(-0.5, 2)", lambda t: np.where(t > 0, 2 * t, -0.5 * t)),
        ("abs", np.abs),
        ("monomial(3)", lambda t: t**3),
        ("sin", np.sin),
        ("gaussian", lambda t: np.exp(-t * t / 2)),
    ):
        net = MLP((1,), spelling, bias_std=1.0)
        params = [(np.ones((1, 1)), np.ones(1)), (np.ones((1, 1)), np.ones(1))]
        np.testing.assert_allclose(net.apply(params, z)[:, 0], phi(z[:, 0] + 1) + 1, rtol=1e-15, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# the lane-identical exponential
# ---------------------------------------------------------------------------------------------


def test_arithmetic_exp_within_two_ulp_of_libm():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-745, 709.7, 20000),
            rng.uniform(-1, 1, 5000),
            [0.0, -0.0, 1e-300, -1e-17, 709.7, -708.4, -745.1, 0.5 * math.log(2)],
        ]
    )
    got = np.array([sm.exp(v) for v in x])
    want = np.exp(x)
    normal = want >= np.finfo(float).tiny
    assert np.max(np.abs(got - want)[normal] / np.spacing(want[normal])) <= 2
    # subnormal results: within two of the smallest spacing
    assert np.max(np.abs(got - want)[~normal]) <= 2 * 5e-324
    assert sm.exp(0.0) == 1.0 and sm.exp(-746.0) == 0.0 and sm.exp(710.0) == math.inf


def test_exp_sinh_cosh_matches_numpy():
    rng = np.random.default_rng(1)
    m = rng.uniform(0, 30, 4000)
    c = m * rng.uniform(-1, 1, 4000)
    c[:200] = rng.uniform(-1e-6, 1e-6, 200) * m[:200]  # tiny covariances: no cancellation
    c[200:400] = np.where(rng.random(200) < 0.5, 1.0, -1.0) * np.nextafter(1.0, 2.0)  # the switch
    got = np.array([sm.exp_sinh_cosh(a, b) for a, b in zip(m, c)])
    want = np.stack([np.exp(-m) * np.sinh(c), np.exp(-m) * np.cosh(c)], axis=1)
    rel = np.abs(got - want) / np.abs(want)
    assert np.max(rel) <= 1e-14 * (1 + m.max())  # the exponent's own rounding, eps * m
    assert sm.exp_sinh_cosh(1e6, 1e6) == (0.5, 0.5)  # identical points far out: no overflow


# ---------------------------------------------------------------------------------------------
# the layer maps: Monte Carlo and quadrature
# ---------------------------------------------------------------------------------------------

_MC_N = 1_000_000


@pytest.fixture(scope="module")
def normals():
    rng = np.random.default_rng(2024)
    return rng.standard_normal(_MC_N), rng.standard_normal(_MC_N)


@pytest.mark.parametrize("spelling", NEW)
def test_layer_maps_match_monte_carlo(spelling, normals):
    z1, z2 = normals
    for s11, s22, rho in ((0.7, 2.0, 0.6), (3.0, 1.2, -0.95), (1.5, 1.5, 0.0)):
        u = math.sqrt(s11) * z1
        v = math.sqrt(s22) * (rho * z1 + math.sqrt(1 - rho * rho) * z2)
        got = _map(spelling, s11, s22, rho * math.sqrt(s11 * s22))
        for sample, value in zip((PHI[spelling](u) * PHI[spelling](v), DPHI[spelling](u) * DPHI[spelling](v)), got):
            se = sample.std() / math.sqrt(_MC_N)
            assert abs(sample.mean() - value) <= 5 * se + 1e-15, (spelling, s11, s22, rho, sample.mean(), value, se)


_VARIANCES = (0.01, 1.0, 4.0, 10.0)
_CORRELATIONS = (-1.0, -0.999999, -0.5, 0.0, 0.3, 0.99999, 1.0)


def _grid(exactly_parallel):
    """``(s11, s22, s12)``: variances up to 10, correlations in [-1, 1], and the diagonal.

    ``exactly_parallel``: at correlation +-1 only pairs whose ``s11 s22 - s12^2`` is exactly 0 in
    floating point. A kinked map depends on the angle ``atan2(sqrt(det), s12)``, which rounding of
    ``det`` by ``eps s^2`` moves by ``sqrt(eps)``: the conditioning of the map itself.
    """
    out = []
    for s11 in _VARIANCES:
        for s22 in (0.3, 10.0):
            for rho in _CORRELATIONS:
                if exactly_parallel and abs(rho) == 1.0:
                    continue
                out.append((s11, s22, rho * math.sqrt(s11 * s22)))
    for s, t, c in ((4.0, 1.0, 2.0), (0.25, 16.0, 2.0), (10.0, 10.0, 10.0), (2.5, 2.5, 2.5)):
        out += [(s, t, c), (s, t, -c)]  # exactly (anti)parallel; the last two the diagonal
    return out


@pytest.mark.parametrize("spelling", KINKED)
def test_kinked_maps_match_quadrature_to_1e8(spelling):
    slopes = piecewise_linear_slopes(spelling)
    worst = 0.0
    for s11, s22, s12 in _grid(exactly_parallel=True):
        got = _map(spelling, s11, s22, s12)
        quad = conditional_expectations(slopes, s11, s22, s12)
        closed = [float(v) for v in layer_expectations(spelling, s11, s22, s12)]  # via relu's
        for g, q, r in zip(got, quad, closed):
            worst = max(worst, abs(g - q) / max(1.0, abs(q)))
            assert abs(g - r) <= 1e-12 * max(1.0, abs(r))
    assert worst <= 1e-8, worst
    if spelling == "abrelu(-0.3, 1.5)":
        # nested 2-D adaptive quadrature (a second, slower rule) at one pair
        s11, s22, s12 = 1.0, 10.0, -0.3 * math.sqrt(10.0)
        for g, q in zip(_map(spelling, s11, s22, s12), nested_quad_expectations(spelling, s11, s22, s12)):
            assert abs(g - q) <= 1e-8 * max(1.0, abs(q))


@pytest.mark.parametrize("spelling", SMOOTH)
def test_smooth_maps_match_dense_gauss_hermite_to_1e8(spelling):
    worst = 0.0
    for s11, s22, s12 in _grid(exactly_parallel=False):
        if spelling == "gaussian" and s11 + s22 > 14:
            continue  # exp(-10 z^2) against a rule for e^{-z^2/2}: checked by nested quadrature below
        got = _map(spelling, s11, s22, s12)
        ref = layer_expectations(spelling, s11, s22, s12, quadrature=True, order=200)
        for g, r in zip(got, ref):
            worst = max(worst, abs(g - float(r)) / max(1.0, abs(float(r))))
    assert worst <= 1e-8, worst
    if spelling == "gaussian":
        for s12 in (10.0, -0.999999 * 10.0):
            for g, q in zip(_map(spelling, 10.0, 10.0, s12), nested_quad_expectations(spelling, 10.0, 10.0, s12)):
                assert abs(g - q) <= 1e-8 * max(1.0, abs(q))


def test_closed_forms_at_hand_checked_points():
    # Isserlis: E[u^4 v^4] = 9 s11^2 s22^2 + 72 s11 s22 c^2 + 24 c^4; E[u^3 v^3] = 9 s11 s22 c + 6 c^3
    s11, s22, c = 1.5, 0.8, -0.6
    assert _map("monomial(4)", s11, s22, c)[0] == pytest.approx(
        9 * (s11 * s22) ** 2 + 72 * s11 * s22 * c**2 + 24 * c**4, rel=1e-15
    )
    assert _map("monomial(4)", s11, s22, c)[1] == pytest.approx(16 * (9 * s11 * s22 * c + 6 * c**3), rel=1e-15)
    assert _map("monomial(2)", s11, s22, c) == pytest.approx((s11 * s22 + 2 * c * c, 4 * c), rel=1e-15)
    # u = v: E[sin^2 u] = (1 - e^{-2s}) / 2, E[cos^2 u] = (1 + e^{-2s}) / 2; E[|u|^2] = s
    for s in (0.3, 5.0):
        e = math.exp(-2 * s)
        assert _map("sin", s, s, s) == pytest.approx(((1 - e) / 2, (1 + e) / 2), rel=1e-15)
        assert _map("cos", s, s, s) == pytest.approx(((1 + e) / 2, (1 - e) / 2), rel=1e-15)
        assert _map("abs", s, s, s) == pytest.approx((s, 1.0), rel=1e-15)
        # E[exp(-u^2)] = 1 / sqrt(1 + 2s); E[u^2 exp(-u^2)] = s / (1 + 2s)^{3/2}
        assert _map("gaussian", s, s, s) == pytest.approx((1 / math.sqrt(1 + 2 * s), s / (1 + 2 * s) ** 1.5), rel=1e-15)
    # independent pre-activations: E[|u| |v|] = (2/pi) sqrt(s11 s22), E[sign u sign v] = 0
    assert _map("abs", 2.0, 3.0, 0.0) == pytest.approx((2 / math.pi * math.sqrt(6.0), 0.0), abs=1e-15)


# ---------------------------------------------------------------------------------------------
# the recursion, depth 1 to 10
# ---------------------------------------------------------------------------------------------

#: (weight_std, bias_std, input scale): variances that neither vanish nor blow up over 10 layers
_SCALES = {
    "leaky_relu": (1.4, 0.3, 1.0),
    "leaky_relu(0.2)": (1.35, 0.3, 1.0),
    "abs": (1.0, 0.3, 1.0),
    "abrelu(-0.3, 1.5)": (0.9, 0.3, 1.0),
    "abrelu(2.0, -0.5)": (0.65, 0.3, 1.0),
    "sin": (1.6, 0.3, 1.5),
    "cos": (1.3, 0.3, 1.5),
    "gaussian": (1.5, 0.3, 0.8),
    "monomial(1)": (1.05, 0.3, 1.0),
    "monomial(2)": (0.5, 0.3, 1.0),
    "monomial(3)": (0.4, 0.4, 0.5),
    "monomial(4)": (0.25, 0.45, 0.6),
}


@pytest.mark.parametrize("spelling", NEW)
def test_recursion_matches_numpy_reference_to_depth_10(spelling):
    sw, sb, scale = _SCALES[spelling]
    rng = np.random.default_rng(7)
    X1 = rng.standard_normal((4, 3)) * scale
    X2 = rng.standard_normal((3, 3)) * scale
    X1[1] = 1.7 * X1[0] + 1e-3 * rng.standard_normal(3)  # nearly parallel
    X2[0] = -X1[2] + 1e-3 * rng.standard_normal(3)  # nearly antiparallel
    quadrature = spelling in SMOOTH
    for depth in range(1, 11):
        for X2_, sym in ((X2, False), (X1, True))[: 2 if depth in (1, 4, 10) else 1]:
            got = ka.analytic_pair_kernels(X1, X2_, depth, spelling, sw, sb, sym)
            ref = reference_kernels(
                X1,
                X2_,
                depth,
                spelling,
                sw,
                sb,
                symmetric=sym,
                quadrature=quadrature,
                order=160 if spelling == "gaussian" else 100,
            )
            for g, r in zip(got, ref):
                assert np.max(np.abs(g - r)) <= 1e-10 * np.max(np.abs(r)), (spelling, depth, sym)


@pytest.mark.parametrize("spelling", NEW)
def test_kernels_are_psd_and_exactly_symmetric(spelling):
    sw, sb, scale = _SCALES[spelling]
    X = np.random.default_rng(3).standard_normal((60, 4)) * scale
    X[5] = X[2]
    nngp, ntk = ka.analytic_pair_kernels(X, X, 3, spelling, sw, sb, True)
    for K in (nngp, ntk):
        assert np.array_equal(K, K.T) and K[2, 5] == K[2, 2] == K[5, 5]
        eig = np.linalg.eigvalsh(K)
        assert eig[0] >= -1e-12 * eig[-1]


# ---------------------------------------------------------------------------------------------
# finite width approaches the analytic kernel
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", NEW)
def test_wide_networks_approach_the_analytic_ntk(spelling):
    sw, sb, scale = _SCALES[spelling]
    X = np.random.default_rng(0).standard_normal((6, 3)) * scale
    analytic = ntksolve.analytic_kernels(MLP((1,), spelling, sw, sb), X).ntk

    def err(width, seed):
        net = MLP((width,), spelling, sw, sb)
        return np.linalg.norm(empirical_ntk(net, net.init(3, random_state=seed), X) - analytic) / np.linalg.norm(
            analytic
        )

    narrow = np.mean([err(256, s) for s in range(4)])
    wide = np.mean([err(4096, s) for s in range(4)])
    # fluctuations fall as 1/sqrt(width): a factor 4 expected
    assert wide <= 0.5 * narrow and wide <= 0.1, (narrow, wide)


# ---------------------------------------------------------------------------------------------
# the rest of the library takes the spellings
# ---------------------------------------------------------------------------------------------


def test_estimator_with_a_spelling_fits_clones_and_saves(tmp_path):
    from sklearn.base import clone

    rng = np.random.default_rng(0)
    X, y, Xt = rng.standard_normal((20, 3)), rng.standard_normal(20), rng.standard_normal((5, 3))
    for spelling in ("leaky_relu(0.2)", "monomial(2)"):
        est = ntksolve.NTKRegressor(hidden_layer_sizes=(8, 8), activation=spelling, time=np.inf, diag_reg=0.0).fit(X, y)
        # t = inf without ridge: kernel regression with the spelled network's analytic NTK
        K = ntksolve.analytic_kernels(MLP((1, 1), spelling, 1.0, 0.1), X).ntk
        Kt = ntksolve.analytic_kernels(MLP((1, 1), spelling, 1.0, 0.1), Xt, X).ntk
        f0, f0t = est.predict_trajectory(X, [0.0])[0], est.predict_trajectory(Xt, [0.0])[0]
        want = f0t + Kt @ np.linalg.solve(K, y - f0)
        np.testing.assert_allclose(est.predict(Xt), want, rtol=1e-7, atol=1e-8)
        assert clone(est).get_params()["activation"] == spelling
        est.save(tmp_path / "m.npz")
        back = ntksolve.load(tmp_path / "m.npz")
        np.testing.assert_array_equal(back.predict(Xt), est.predict(Xt))
        assert back.activation == spelling


def test_gp_kernel_values_are_the_spelled_analytic_kernel():
    X = np.random.default_rng(1).standard_normal((7, 3))
    for spelling in ("abs", "monomial(3)", "cos"):
        kernel = ntksolve.NTKKernel(weight_std=0.8, bias_std=0.3, depth=2, activation=spelling)
        pair = ntksolve.analytic_kernels(MLP((1, 1), spelling, 0.8, 0.3), X)
        np.testing.assert_array_equal(kernel(X), pair.ntk)
        np.testing.assert_array_equal(kernel.diag(X), np.diag(pair.ntk))
