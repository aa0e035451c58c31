"""Infinite-width NNGP and NTK *with their gradients* in ``log sigma_b`` and ``log sigma_w``, jitted.

Private: :mod:`ntksolve.gp_kernels` validates inputs and calls :func:`pair_kernel_with_gradient`
when scikit-learn asks for ``eval_gradient=True``. Plain kernel values come from
:func:`ntksolve.analytic_kernels` (``_jit_analytic``); the values computed here agree with them to
rounding (a few ulp: ``math.atan2`` here, a Cephes arctangent there).

Derivation (``CONVENTIONS.md`` recursion, ``a = sigma_w^2``, ``b = sigma_b^2``)::

    Sigma^1        = a <x, x'>/d + b                   dSigma^1/da = <x, x'>/d,  dSigma^1/db = 1
    Sigma^{l+1}    = a F(S11, S12, S22) + b            F = E[phi(u) phi(v)]
    Sdot^{l+1}     = a G(S11, S12, S22)                G = E[phi'(u) phi'(v)]
    Theta^{l+1}    = Sigma^{l+1} + Sdot^{l+1} Theta^l

so for ``p`` in ``(a, b)``, with ``dF = F_11 dS11 + F_12 dS12 + F_22 dS22`` (same for ``G``)::

    dSigma^{l+1} = [p = a] F + a dF + [p = b]
    dSdot^{l+1}  = [p = a] G + a dG
    dTheta^{l+1} = dSigma^{l+1} + dSdot^{l+1} Theta^l + Sdot^{l+1} dTheta^l

The variances ``S11 = Sigma^l(x, x)`` follow the same recursion at ``x = x'`` and carry their own
derivatives. Partial derivatives of the closed forms (Price's theorem gives ``F_12 = G``):

- ReLU, ``r = sqrt(S11 S22 - S12^2)``: ``F_11 = r / (4 pi S11)``, ``G_12 = 1 / (2 pi r)``,
  ``G_11 = -S12 / (4 pi S11 r)`` (and 1 <-> 2). ``G`` is singular at ``r = 0`` (collinear points);
  where ``r = 0`` exactly (a point with itself, or duplicates) ``G`` is locally the constant 1/2
  along the path the recursion takes, so its partials are taken as 0.
- erf, ``A = (1+2S11)(1+2S22)``, ``D = A - 4 S12^2 >= 1``: ``F_11 = -(4/pi) S12 / (sqrt(D)(1+2S11))``,
  ``G_12 = (16/pi) S12 / D^{3/2}``, ``G_11 = -(4/pi)(1+2S22) / D^{3/2}``.
- identity: ``F_12 = 1``, every other partial 0.

The chain rule to log space: ``d/dlog sigma_w = 2a d/da`` and ``d/dlog sigma_b = 2b d/db``.
Gradient columns are ordered as scikit-learn orders hyperparameters (by name): ``bias_std``,
then ``weight_std``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ntksolve._jit.activations import ERF, IDENTITY, RELU
from ntksolve._jit.analytic import _erf_expectations, _relu_expectations, run_in_threads

_INV_2PI = 1.0 / (2.0 * math.pi)
_INV_4PI = 1.0 / (4.0 * math.pi)
_FOUR_OVER_PI = 4.0 / math.pi
_SIXTEEN_OVER_PI = 16.0 / math.pi

#: Codes with closed-form partial derivatives here; others fall back to finite differences.
GRADIENT_CODES = (RELU, ERF, IDENTITY)


@njit(cache=True, inline="always")
def _expectations_and_partials(code, s11, s22, s12):
    """``F, G`` and their partials ``F_11, F_12, F_22, G_11, G_12, G_22`` for one pair.

    Parameters
    ----------
    code : int
        Activation code (relu, erf or identity).
    s11, s22 : float
        Variances ``>= 0``.
    s12 : float
        Covariance.

    Returns
    -------
    tuple of 8 floats
        ``(F, G, F11, F12, F22, G11, G12, G22)``.
    """
    if code == RELU:
        prod = s11 * s22
        if prod <= 0.0:
            # a zero variance: relu(u) = 0 a.s. and relu'(0) = 0, so F = G = 0 nearby along b > 0
            return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        # the values from the one implementation of the closed form; the partials are ours
        f, g = _relu_expectations(s11, s22, s12)
        r = math.sqrt(max(prod - s12 * s12, 0.0))
        f11 = r * _INV_4PI / s11
        f22 = r * _INV_4PI / s22
        if r > 0.0:
            g12 = _INV_2PI / r
            g11 = -s12 * _INV_4PI / (s11 * r)
            g22 = -s12 * _INV_4PI / (s22 * r)
        else:
            g12 = 0.0
            g11 = 0.0
            g22 = 0.0
        return f, g, f11, g, f22, g11, g12, g22
    elif code == ERF:
        p1 = 1.0 + 2.0 * s11
        p2 = 1.0 + 2.0 * s22
        dd = max(p1 * p2 - 4.0 * s12 * s12, 1.0)
        root = math.sqrt(dd)
        f, g = _erf_expectations(s11, s22, s12)
        f11 = -_FOUR_OVER_PI * s12 / (root * p1)
        f22 = -_FOUR_OVER_PI * s12 / (root * p2)
        d32 = dd * root
        g12 = _SIXTEEN_OVER_PI * s12 / d32
        g11 = -_FOUR_OVER_PI * p2 / d32
        g22 = -_FOUR_OVER_PI * p1 / d32
        return f, g, f11, g, f22, g11, g12, g22
    else:  # IDENTITY
        return s12, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0


@njit(cache=True)
def _point_recursion(X, depth, code, sw2, sb2):
    """Variances ``Sigma^{l+1}(x_i, x_i)`` and their derivatives in ``a = sigma_w^2``, ``b = sigma_b^2``.

    Parameters
    ----------
    X : ndarray, shape (N, d)
    depth, code : int
    sw2, sb2 : float

    Returns
    -------
    q, dqa, dqb : ndarray, shape (depth + 1, N)
    """
    n, d = X.shape
    q = np.empty((depth + 1, n))
    dqa = np.empty((depth + 1, n))
    dqb = np.empty((depth + 1, n))
    for i in range(n):
        acc = 0.0
        for k in range(d):
            acc += X[i, k] * X[i, k]
        g0 = acc / d
        s = sw2 * g0 + sb2
        sa = g0
        sb = 1.0
        q[0, i] = s
        dqa[0, i] = sa
        dqb[0, i] = sb
        for l in range(depth):
            if code == RELU:
                # at theta = 0: F = s/2 exactly, so dF = ds/2
                f = 0.5 * s
                fa = 0.5 * sa
                fb = 0.5 * sb
            else:
                f, g, f11, f12, f22, g11, g12, g22 = _expectations_and_partials(code, s, s, s)
                tot = f11 + f12 + f22
                fa = tot * sa
                fb = tot * sb
            s_new = sw2 * f + sb2
            sa = f + sw2 * fa
            sb = sw2 * fb + 1.0
            s = s_new
            q[l + 1, i] = s
            dqa[l + 1, i] = sa
            dqb[l + 1, i] = sb
    return q, dqa, dqb


@njit(cache=True)
def _pair(x1, x2, i, j, same, depth, code, sw2, sb2, q1, dqa1, dqb1, q2, dqa2, dqb2, ntk):
    """Kernel value and its ``(d/da, d/db)`` for the pair ``(x1, x2)``.

    Parameters
    ----------
    x1, x2 : ndarray, shape (d,)
    i, j : int
        Their indices into the per-point arrays.
    same : bool
        The pair is a point with itself: ``S12 = S11`` exactly at every layer (``theta = 0``).
    depth, code : int
    sw2, sb2 : float
    q1, dqa1, dqb1, q2, dqa2, dqb2 : ndarray, shape (depth + 1, N1) and (depth + 1, N2)
    ntk : bool
        Return the NTK (True) or the NNGP (False).

    Returns
    -------
    value, d_da, d_db : float
    """
    d = x1.shape[0]
    acc = 0.0
    for k in range(d):
        acc += x1[k] * x2[k]
    g0 = acc / d
    s = sw2 * g0 + sb2
    sa = g0
    sb = 1.0
    t = s
    ta = sa
    tb = sb
    for l in range(depth):
        s11 = q1[l, i]
        s22 = q2[l, j]
        if same:
            s = s11  # theta = 0 exactly, as the analytic kernel's diagonal does
        f, g, f11, f12, f22, g11, g12, g22 = _expectations_and_partials(code, s11, s22, s)
        if same and code == RELU:
            f11 = 0.0
            f22 = 0.0
            f12 = 0.5
        fa = f11 * dqa1[l, i] + f12 * sa + f22 * dqa2[l, j]
        fb = f11 * dqb1[l, i] + f12 * sb + f22 * dqb2[l, j]
        ga = g11 * dqa1[l, i] + g12 * sa + g22 * dqa2[l, j]
        gb = g11 * dqb1[l, i] + g12 * sb + g22 * dqb2[l, j]
        s_new = sw2 * f + sb2
        sa_new = f + sw2 * fa
        sb_new = sw2 * fb + 1.0
        sdot = sw2 * g
        sdot_a = g + sw2 * ga
        sdot_b = sw2 * gb
        ta = sa_new + sdot_a * t + sdot * ta
        tb = sb_new + sdot_b * t + sdot * tb
        t = s_new + sdot * t
        s = s_new
        sa = sa_new
        sb = sb_new
    if ntk:
        return t, ta, tb
    return s, sa, sb


@njit(cache=True, nogil=True)
def _fill(X1, X2, symmetric, depth, code, sw2, sb2, q1, dqa1, dqb1, q2, dqa2, dqb2, ntk, K, grad, start, step):
    """Fill rows ``start::step`` of ``K`` and ``grad`` (each thread of
    :func:`ntksolve._jit_analytic.run_in_threads` writes its own rows).

    Parameters
    ----------
    X1 : ndarray, shape (N1, d)
    X2 : ndarray, shape (N2, d)
    symmetric : bool
        ``X2`` is ``X1``: rows compute ``j >= i``; a serial pass mirrors afterwards.
    depth, code : int
    sw2, sb2 : float
    q1, dqa1, dqb1, q2, dqa2, dqb2 : ndarray
        From :func:`_point_recursion`.
    ntk : bool
    K : ndarray, shape (N1, N2)
        Output values.
    grad : ndarray, shape (N1, N2, 2)
        Output gradient, ``[..., 0]`` in ``log sigma_b`` and ``[..., 1]`` in ``log sigma_w``.
    start, step : int
        This thread's rows.
    """
    n1 = X1.shape[0]
    n2 = X2.shape[0]
    for i in range(start, n1, step):
        j0 = i if symmetric else 0
        for j in range(j0, n2):
            v, va, vb = _pair(X1[i], X2[j], i, j, symmetric and i == j, depth, code, sw2, sb2,
                              q1, dqa1, dqb1, q2, dqa2, dqb2, ntk)
            K[i, j] = v
            grad[i, j, 0] = 2.0 * sb2 * vb
            grad[i, j, 1] = 2.0 * sw2 * va


@njit(cache=True)
def _mirror(K, grad):
    """Copy the upper triangle of ``K`` (N, N) and ``grad`` (N, N, 2) onto the lower one."""
    n1 = K.shape[0]
    for i in range(n1):
        for j in range(i):
            K[i, j] = K[j, i]
            grad[i, j, 0] = grad[j, i, 0]
            grad[i, j, 1] = grad[j, i, 1]


def pair_kernel_with_gradient(X1, X2, depth, activation_code, weight_std, bias_std, ntk):
    """The NNGP or NTK between ``X1`` and ``X2`` and its gradient in log hyperparameters.

    Parameters
    ----------
    X1 : ndarray, shape (N1, d), C-contiguous float64 (validated by the caller)
    X2 : ndarray, shape (N2, d) or None
        ``None`` for the symmetric kernel of ``X1`` with itself.
    depth : int
        ``L``, the number of hidden layers.
    activation_code : int
        One of :data:`GRADIENT_CODES`.
    weight_std, bias_std : float
    ntk : bool
        The NTK (True) or the NNGP (False).

    Returns
    -------
    K : ndarray, shape (N1, N2)
    grad : ndarray, shape (N1, N2, 2)
        ``dK/dlog(bias_std)`` then ``dK/dlog(weight_std)``.
    """
    code = int(activation_code)
    if code not in GRADIENT_CODES:
        raise ValueError(f"no closed-form gradient for activation code {code}")
    depth = int(depth)
    sw2 = float(weight_std) ** 2
    sb2 = float(bias_std) ** 2
    symmetric = X2 is None
    q1, dqa1, dqb1 = _point_recursion(X1, depth, code, sw2, sb2)
    if symmetric:
        X2 = X1
        q2, dqa2, dqb2 = q1, dqa1, dqb1
    else:
        q2, dqa2, dqb2 = _point_recursion(X2, depth, code, sw2, sb2)
    K = np.empty((X1.shape[0], X2.shape[0]))
    grad = np.empty((X1.shape[0], X2.shape[0], 2))
    run_in_threads(_fill, X1, X2, symmetric, depth, code, sw2, sb2, q1, dqa1, dqb1, q2, dqa2, dqb2, bool(ntk),
                    K, grad)
    if symmetric:
        _mirror(K, grad)
    return K, grad


__all__ = ["pair_kernel_with_gradient", "GRADIENT_CODES"]
