"""Every activation's value and derivatives against 50-digit references, in both tails.

The forward pass of the empirical NTK (``bias_act``) is checked as it runs, float64 and float32,
at the brief's points ``0, +-1e-300, +-1e-8, +-1, +-20, +-40, +-300, +-700, +-1e4`` and at
non-integer points out to 40 (whose squares round, unlike an integer's). Where the true value is
a normal number of the dtype the relative error must be below 1e-14 (float64) or 1e-6 (float32);
where it is below the normals, the result must be within the smallest normal of it. The one
exception is gelu' near its zero ``x0 = -0.7518``, where ``Phi(x) + x phi(x)`` cancels: there
the error is absolute, a few ulp of ``Phi``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

from ntksolve import MLP
from ntksolve._jit.activations import act, act_dact, dact, ddact
from ntksolve._jit.empirical import bias_act
from ntksolve.kernels.empirical import jacobian
from ntksolve.nets.layers import ACTIVATIONS, Activation

mp = pytest.importorskip("mpmath")

SPELLINGS = [*ACTIVATIONS, "abrelu(-0.5, 2)", "monomial(1)", "monomial(3)"]
POINTS = [0.0, 1e-300, 1e-8, 1.0, 20.0, 40.0, 300.0, 700.0, 1e4]
POINTS = POINTS + list(np.random.default_rng(0).uniform(0.0, 40.0, 24)) + list(np.logspace(-3, 1.5, 12))
POINTS = np.array(sorted({s * p for p in POINTS for s in (1.0, -1.0)}))
RTOL = {np.float64: 1e-14, np.float32: 1e-6}
_GELU_DERIV_ROOT = -0.7517915241


def _reference(name, prm, x, k):
    """The ``k``-th derivative (0, 1, 2) of the activation at ``x``, with mpmath at 50 digits."""
    with mp.workdps(50):
        x = mp.mpf(x)

        def s(t):
            return 1 / (1 + mp.exp(-t))

        if name == "abrelu":
            a, b = prm
            return [b * x if x > 0 else a * x, b if x > 0 else a, 0][k]
        if name == "monomial":
            n = int(prm[0])
            return [x**n, n * x ** (n - 1) if n else 0, n * (n - 1) * x ** (n - 2) if n >= 2 else 0][k]
        g = mp.exp(-x * x / 2)
        pdf = g / mp.sqrt(2 * mp.pi)
        return {
            "relu": [max(x, 0), 1 if x > 0 else 0, 0],
            "identity": [x, 1, 0],
            "erf": [mp.erf(x), 2 / mp.sqrt(mp.pi) * mp.exp(-x * x), -4 * x / mp.sqrt(mp.pi) * mp.exp(-x * x)],
            "tanh": [mp.tanh(x), mp.sech(x) ** 2, -2 * mp.tanh(x) * mp.sech(x) ** 2],
            "sigmoid": [s(x), s(x) * s(-x), -s(x) * s(-x) * mp.tanh(x / 2)],
            "softplus": [x + mp.log1p(mp.exp(-x)) if x > 0 else mp.log1p(mp.exp(x)), s(x), s(x) * s(-x)],
            "gelu": [x * mp.ncdf(x), mp.ncdf(x) + x * pdf, pdf * (2 - x * x)],
            "sin": [mp.sin(x), mp.cos(x), -mp.sin(x)],
            "cos": [mp.cos(x), -mp.sin(x), -mp.cos(x)],
            "gaussian": [g, -x * g, (x * x - 1) * g],
        }[name][k]


def _assert_accurate(name, prm, z, got, k, dt):
    tiny = float(np.finfo(dt).tiny)
    bad = []
    for zi, gi in zip(z, got):
        want = _reference(name, prm, float(zi), k)
        w = float(want)
        err = float(abs(mp.mpf(float(gi)) - want)) if np.isfinite(gi) else math.inf
        if name == "gelu" and k == 1 and abs(zi - _GELU_DERIV_ROOT) < 0.1:
            ok = err <= 8 * np.finfo(dt).eps * 0.3  # a few ulp of Phi there (about 0.22)
        elif abs(w) < tiny:
            ok = err <= tiny
        else:
            ok = err <= RTOL[dt] * abs(w)
        if not ok:
            bad.append((float(zi), float(gi), w))
    assert not bad, f"{name} derivative {k} ({dt.__name__}): (z, got, want) {bad[:5]}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_forward_pass_value_and_derivative_match_mpmath(spelling, dtype):
    spec = Activation(spelling)
    with np.errstate(over="ignore", under="ignore"):  # 1e4 is finite in float32; 1e-300 is 0 there
        z = POINTS.astype(dtype)
    z = z[np.isfinite(z)]
    h, d = np.empty((1, z.size), dtype), np.empty((1, z.size), dtype)
    h2 = np.empty_like(h)
    one, zero = dtype(1.0), dtype(0.0)
    with np.errstate(all="raise"):
        bias_act(z[None].copy(), np.zeros(z.size, dtype), one, zero, spec.code, spec.params, h, d, True)
        bias_act(z[None].copy(), np.zeros(z.size, dtype), one, zero, spec.code, spec.params, h2, h2, False)
    np.testing.assert_array_equal(h2, h)  # the value does not depend on whether the derivative is wanted
    _assert_accurate(spec.family, spec.params, z, h[0], 0, dtype)
    _assert_accurate(spec.family, spec.params, z, d[0], 1, dtype)


@njit
def _scalar_maps(code, prm, z, out):
    for i in range(z.shape[0]):
        v, g = act_dact(code, prm, z[i])
        out[0, i] = act(code, prm, z[i])
        out[1, i] = dact(code, prm, z[i])
        out[2, i] = ddact(code, prm, z[i])
        out[3, i] = v
        out[4, i] = g


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_second_derivative_matches_mpmath_and_the_pair_is_the_two_functions(spelling):
    spec = Activation(spelling)
    out = np.empty((5, POINTS.size))
    _scalar_maps(spec.code, spec.params, POINTS, out)
    _assert_accurate(spec.family, spec.params, POINTS, out[2], 2, np.float64)
    np.testing.assert_array_equal(out[3], out[0])
    np.testing.assert_array_equal(out[4], out[1])


#: (phi, phi', phi'') at -inf and +inf: the limits (gelu(-inf) = 0, not -inf * 0).
LIMITS = {
    "relu": [(0, math.inf), (0, 1), (0, 0)],
    "erf": [(-1, 1), (0, 0), (0, 0)],
    "tanh": [(-1, 1), (0, 0), (0, 0)],
    "sigmoid": [(0, 1), (0, 0), (0, 0)],
    "softplus": [(0, math.inf), (0, 1), (0, 0)],
    "gelu": [(0, math.inf), (0, 1), (0, 0)],
    "gaussian": [(0, 0), (0, 0), (0, 0)],
}


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_infinite_huge_and_nan_inputs(spelling):
    spec = Activation(spelling)
    z = np.array([-np.inf, np.inf, np.nan, -1e300, 1e300, -2e154, 2e154])
    out = np.empty((5, z.size))
    _scalar_maps(spec.code, spec.params, z, out)
    assert np.isnan(out[0, 2]), "a NaN pre-activation must stay NaN"
    if spec.family in LIMITS:
        for k, (lo, hi) in enumerate(LIMITS[spec.family]):
            assert (out[k, 0], out[k, 1]) == (lo, hi), (k, out[k])
            assert np.isnan(out[k, 2]) or spec.family == "relu", (k, out[k])
            # huge finite inputs: finite where the truth is (x^2 overflowed to inf * 0 = NaN)
            assert np.isfinite(out[k, 3:]).all() or hi == math.inf, (k, out[k])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("spelling", ["tanh", "sigmoid", "softplus", "gelu", "erf", "gaussian"])
def test_saturated_units_get_their_tiny_gradients(spelling, dtype):
    # f(x) = phi(x + 1) + 1 with W = b = 1 (test_activations): df/db1 = phi'(x + 1), the backward pass
    # through saturated units, where 1 - tanh^2 and s (1 - s) were 0
    net = MLP((1,), spelling, bias_std=1.0)
    params = [(np.ones((1, 1), dtype), np.ones(1, dtype)), (np.ones((1, 1), dtype), np.ones(1, dtype))]
    x = np.array([-41.3, -25.5, -12.25, 18.5, 24.0, 35.7], dtype)
    J = jacobian(net, params, x[:, None])
    name = Activation(spelling).family
    for xi, gi in zip(x, J[:, 0, 1]):
        want = _reference(name, (0.0, 0.0), float(xi) + 1.0, 1)
        if abs(float(want)) >= np.finfo(dtype).tiny:
            assert gi != 0.0, (spelling, xi)
            assert abs(float(gi) / want - 1) <= 10 * RTOL[dtype], (spelling, xi, gi, float(want))
