"""Slow, obviously correct reference for ``ntksolve._jit.analytic``: the recursion of docs/conventions.md
written straightforwardly in numpy, one ``N1 x N2`` array per quantity per layer.

Independent of the numba code on purpose: activations from numpy/scipy (not ``_jit.activations``),
the ReLU map in the conventions' ``sin``/``cos`` form with ``numpy.arctan2``, erf with ``numpy.arcsin``,
the quadrature as a dense tensor-product rule over all node pairs (no pruning), and, for large
variances where no fixed rule resolves the activations, adaptive nested integration by
``scipy.integrate.quad`` (:func:`nested_quad_expectations`).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate, special

from reference import PHI, _ByName, _piecewise_linear, piecewise_linear_slopes

DPHI = _ByName(
    {
        "relu": lambda x: (x > 0).astype(float),
        "erf": lambda x: 2.0 / np.sqrt(np.pi) * np.exp(-x * x),
        "tanh": lambda x: 1.0 / np.cosh(x) ** 2,
        "identity": lambda x: np.ones_like(x),
        "sigmoid": lambda x: special.expit(x) * special.expit(-x),
        "gelu": lambda x: special.ndtr(x) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi),
        "softplus": special.expit,
        "leaky_relu": _piecewise_linear(0.01, 1.0)[1],
        "abs": _piecewise_linear(-1.0, 1.0)[1],
        "sin": np.cos,
        "cos": lambda x: -np.sin(x),
        "gaussian": lambda x: -x * np.exp(-0.5 * x * x),
    },
    1,
)


@functools.lru_cache(maxsize=8)
def _rule(order):
    """The dense rule's nodes and normalised weights (cached: numpy builds them by an eigensolve)."""
    z, w = hermegauss(order)
    return z, w / w.sum()


def layer_expectations(activation, s11, s22, s12, quadrature=False, order=64):
    """``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` elementwise over broadcast arrays.

    Closed forms (Cho & Saul 2009 for relu, Williams 1997 for erf) unless ``quadrature``; then a
    dense ``order x order`` Gauss-Hermite product rule.
    """
    s11, s22, s12 = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (s11, s22, s12)))
    slopes = piecewise_linear_slopes(activation)
    if not quadrature and slopes is not None and activation not in ("relu", "identity"):
        # a min(z, 0) + b max(z, 0) = b relu(z) - a relu(-z), and (u, -v) has covariance -s12:
        # E[phi phi] = (a^2 + b^2) k1(s12) - 2ab k1(-s12), E[phi' phi'] = (a^2 + b^2) k0(s12) + 2ab k0(-s12)
        # with relu's arc-cosine kernels k1, k0 (the orthant probabilities for k0)
        a, b = slopes
        k1, k0 = layer_expectations("relu", s11, s22, s12)
        m1, m0 = layer_expectations("relu", s11, s22, -s12)
        return (a * a + b * b) * k1 - 2 * a * b * m1, (a * a + b * b) * k0 + 2 * a * b * (0.5 - k0)
    if not quadrature and activation == "relu":
        norm = np.sqrt(s11 * s22)
        theta = np.arctan2(np.sqrt(np.maximum(s11 * s22 - s12**2, 0.0)), s12)
        e_phi = norm * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
        e_dphi = np.where(norm > 0, (np.pi - theta) / (2 * np.pi), 0.0)
        return e_phi, e_dphi
    if not quadrature and activation == "erf":
        a = (1 + 2 * s11) * (1 + 2 * s22)
        return 2 / np.pi * np.arcsin(np.clip(2 * s12 / np.sqrt(a), -1, 1)), 4 / np.pi / np.sqrt(a - 4 * s12**2)
    if not quadrature and activation == "identity":
        return s12.copy(), np.ones_like(s12)
    z, w = _rule(order)
    norm = np.sqrt(s11 * s22)
    c = np.clip(np.divide(s12, norm, out=np.zeros_like(s12), where=norm > 0), -1, 1)
    z1 = z[:, None]
    z2 = z[None, :]
    ww = w[:, None] * w[None, :]
    e_phi = np.empty(s12.shape)
    e_dphi = np.empty(s12.shape)
    phi, dphi = PHI[activation], DPHI[activation]
    for idx in np.ndindex(s12.shape):
        u = np.sqrt(s11[idx]) * z1
        v = np.sqrt(s22[idx]) * (c[idx] * z1 + np.sqrt(1 - c[idx] ** 2) * z2)
        e_phi[idx] = np.sum(ww * phi(u) * phi(v))
        e_dphi[idx] = np.sum(ww * dphi(u) * dphi(v))
    return e_phi, e_dphi


def nested_quad_expectations(activation, s11, s22, s12):
    """``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` for one pair by adaptive nested integration.

    ``u = sqrt(s11) z1``, ``v | z1 ~ N(sqrt(s22) c z1, s22 (1 - c^2))``; the outer integral breaks at
    ``z1 = 0`` and the inner one at the inner variable's kink ``v = 0``, where the activations turn,
    so the adaptive rule sees them whatever the variance. About 1e-13 absolute; a second or so.
    """
    sd1, sd2 = np.sqrt(s11), np.sqrt(s22)
    c = float(np.clip(s12 / (sd1 * sd2), -1.0, 1.0))
    b = sd2 * np.sqrt(max(1.0 - c * c, 0.0))
    gauss = lambda z: np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)  # noqa: E731

    def expect(f, g):
        def inner(z1):
            m = sd2 * c * z1
            if b < 1e-12 * sd2:
                return float(g(m))
            kink = [-m / b] if abs(m / b) < 12.0 else None
            return integrate.quad(
                lambda z2: float(g(m + b * z2)) * gauss(z2),
                -12.0,
                12.0,
                points=kink,
                limit=400,
                epsabs=1e-15,
                epsrel=1e-13,
            )[0]

        return integrate.quad(
            lambda z1: float(f(sd1 * z1)) * inner(z1) * gauss(z1),
            -12.0,
            12.0,
            points=[0.0],
            limit=400,
            epsabs=1e-15,
            epsrel=1e-13,
        )[0]

    with warnings.catch_warnings():
        # quad reports roundoff when the tolerance asked for sits at the double-precision floor
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return expect(PHI[activation], PHI[activation]), expect(DPHI[activation], DPHI[activation])


def conditional_expectations(slopes, s11, s22, s12):
    """``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` of ``a min(z, 0) + b max(z, 0)`` for one pair, by
    adaptive quadrature over ``u`` of the exact conditional expectation over ``v``.

    ``v | u`` is normal with mean ``mu = (s12 / s11) u`` and variance ``s2 = s22 - s12^2 / s11``, so
    ``E[max(v, 0) | u] = mu Phi(mu / s) + s phi(mu / s)`` and ``P(v > 0 | u) = Phi(mu / s)``; the
    outer integral is split at the kink ``u = 0``. About 1e-14; milliseconds.
    """
    a, b = slopes
    s2 = max(s22 - s12 * s12 / s11, 0.0)
    sd = np.sqrt(s2)
    sd1 = np.sqrt(s11)

    def conditional(u):
        mu = s12 / s11 * u
        if sd == 0.0:
            return a * min(mu, 0.0) + b * max(mu, 0.0), (b if mu > 0 else a)
        t = mu / sd
        e_max = mu * special.ndtr(t) + sd * np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi)
        p_pos = special.ndtr(t)
        return b * e_max + a * (mu - e_max), b * p_pos + a * (1.0 - p_pos)

    gauss = lambda z: np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)  # noqa: E731
    phi = lambda u: a * min(u, 0.0) + b * max(u, 0.0)  # noqa: E731
    dphi = lambda u: b if u > 0 else a  # noqa: E731
    out = []
    for k, f in ((0, phi), (1, dphi)):
        total = 0.0
        for lo, hi in ((-40.0, 0.0), (0.0, 40.0)):
            total += integrate.quad(
                lambda z: f(sd1 * z) * conditional(sd1 * z)[k] * gauss(z), lo, hi, limit=400, epsabs=1e-15, epsrel=1e-13
            )[0]
        out.append(total)
    return tuple(out)


def reference_kernels(X1, X2, depth, activation, weight_std, bias_std, symmetric=False, quadrature=False, order=64):
    """NNGP and NTK, ``(N1, N2)`` each, layer by layer on full arrays.

    ``symmetric`` applies the conventions' rule that a point paired with itself has ``theta = 0``:
    the diagonal is replaced by the per-point recursion at every layer.
    """
    sw2, sb2 = weight_std**2, bias_std**2
    d = X1.shape[1]
    s12 = sw2 * (X1 @ X2.T) / d + sb2
    s11 = sw2 * np.sum(X1 * X1, axis=1) / d + sb2
    s22 = sw2 * np.sum(X2 * X2, axis=1) / d + sb2
    t12 = s12.copy()
    t11 = s11.copy()
    for _ in range(depth):
        e_phi, e_dphi = layer_expectations(activation, s11[:, None], s22[None, :], s12, quadrature, order)
        d_phi, d_dphi = layer_expectations(activation, s11, s11, s11, quadrature, order)
        f_phi, _ = layer_expectations(activation, s22, s22, s22, quadrature, order)
        s12 = sw2 * e_phi + sb2
        t12 = s12 + sw2 * e_dphi * t12
        s11_new = sw2 * d_phi + sb2
        t11 = s11_new + sw2 * d_dphi * t11
        s11 = s11_new
        s22 = sw2 * f_phi + sb2
        if symmetric:
            np.fill_diagonal(s12, s11)
            np.fill_diagonal(t12, t11)
    if symmetric:
        np.fill_diagonal(s12, s11)
        np.fill_diagonal(t12, t11)
    return s12, t12
