"""Infinite-width NNGP and NTK *with their gradients* in ``log sigma_b`` and ``log sigma_w``, jitted.

Private: :mod:`ntksolve.sklearn.gp_kernels` validates inputs and calls
:func:`pair_kernel_with_gradient` when scikit-learn asks for ``eval_gradient=True``. Everything but
the partial derivatives comes from the analytic kernels: the caller passes the input Gram
(``ntksolve.kernels.analytic.input_gram``) and the per-point variances, range-checked
(``ntksolve.kernels._analytic_rules._diag_pieces``); the layer maps
(:func:`~ntksolve._jit.expectations.closed_form_expectations`) and the layer update
(:func:`~ntksolve._jit.expectations.next_layer`) are the same numba code. The values are therefore
bit-identical to :func:`ntksolve.analytic_kernels`, identical points included.

Derivation (``docs/conventions.md`` recursion, ``a = sigma_w^2``, ``b = sigma_b^2``)::

    Sigma^1        = a <x, x'>/d + b                   dSigma^1/da = <x, x'>/d,  dSigma^1/db = 1
    Sigma^{l+1}    = a F(S11, S12, S22) + b            F = E[phi(u) phi(v)]
    Sdot^{l+1}     = a G(S11, S12, S22)                G = E[phi'(u) phi'(v)]
    Theta^{l+1}    = Sigma^{l+1} + Sdot^{l+1} Theta^l

so for ``p`` in ``(a, b)``, with ``dF = F_11 dS11 + F_12 dS12 + F_22 dS22`` (same for ``G``)::

    dSigma^{l+1} = [p = a] F + a dF + [p = b]
    dSdot^{l+1}  = [p = a] G + a dG
    dTheta^{l+1} = dSigma^{l+1} + dSdot^{l+1} Theta^l + Sdot^{l+1} dTheta^l

The variances ``S11 = Sigma^l(x, x)`` follow the same recursion at ``x = x'`` (``dS = (F_11 + F_12 +
F_22) dS`` along it) and carry their own derivatives. Partial derivatives of the closed forms
(Price's theorem gives ``F_12 = G``):

- ReLU, ``r = sqrt(S11 S22 - S12^2)``: ``F_11 = r / (4 pi S11)``, ``G_12 = 1 / (2 pi r)``,
  ``G_11 = -S12 / (4 pi S11 r)`` (and 1 <-> 2). ``G`` is singular at ``r = 0`` (collinear points);
  where ``r = 0`` exactly (a point with itself, or identical points) ``G`` is locally the constant
  1/2 along the path the recursion takes, so its partials are taken as 0.
- erf, ``A = (1+2S11)(1+2S22)``, ``D = A - 4 S12^2 >= 1``: ``F_11 = -(4/pi) S12 / (sqrt(D)(1+2S11))``,
  ``G_12 = (16/pi) S12 / D^{3/2}``, ``G_11 = -(4/pi)(1+2S22) / D^{3/2}``.
- identity: ``F_12 = 1``, every other partial 0.
- abrelu ``(a, b)``: ``(a - b)^2`` times the ReLU partials (``F - (a^2 + b^2) s12 / 2`` and
  ``G - (a^2 + b^2) / 2`` are ``(a - b)^2`` times ReLU's ``F - s12 / 2`` and ``G - 1 / 2``).
- sin (cos), ``m = (S11 + S22)/2``: ``F = e^{-m} sinh S12`` (``cosh``), ``G`` the other one;
  ``F_11 = -F/2``, ``G_11 = -G/2``, ``G_12 = F`` (and 1 <-> 2).
- gaussian, ``D = (1+S11)(1+S22) - S12^2``: ``F_11 = -(1+S22) / (2 D^{3/2})``,
  ``G_12 = D^{-3/2} + 3 S12^2 D^{-5/2}``, ``G_11 = -3 S12 (1+S22) / (2 D^{5/2})``.
- monomial ``x^n``, ``M_k = E[u^k v^k]``: ``F = M_n``, ``G = n^2 M_{n-1}``,
  ``F_11 = S22 dM_n/dP`` (``P = S11 S22``), ``G_11 = n^2 S22 dM_{n-1}/dP``,
  ``G_12 = n^2 (n-1)^2 M_{n-2}`` (Price again).

The chain rule to log space: ``d/dlog sigma_w = 2a d/da`` and ``d/dlog sigma_b = 2b d/db``.
Gradient columns are ordered as scikit-learn orders hyperparameters (by name): ``bias_std``,
then ``weight_std``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ntksolve._jit.activations import ABRELU, COS, ERF, GAUSSIAN, IDENTITY, MONOMIAL, RELU, SIN
from ntksolve._jit.threads import run_in_threads
from ntksolve._jit.elementary_maps import gaussian_determinant, monomial_moment
from ntksolve._jit.expectations import closed_form_expectations, erf_determinant, next_layer
from ntksolve._jit.scalar_math import exp_sinh_cosh

_INV_2PI = 1.0 / (2.0 * math.pi)
_INV_4PI = 1.0 / (4.0 * math.pi)
_FOUR_OVER_PI = 4.0 / math.pi
_SIXTEEN_OVER_PI = 16.0 / math.pi

#: Codes with closed-form partial derivatives here; others fall back to finite differences.
GRADIENT_CODES = (RELU, ERF, IDENTITY, ABRELU, SIN, COS, GAUSSIAN, MONOMIAL)


@njit(cache=True, inline="always", error_model="numpy")
def _relu_partials(s11, s22, s12):
    """ReLU's ``(F11, F22, G11, G12, G22)``."""
    prod = s11 * s22
    if prod <= 0.0:
        # a zero variance: relu(u) = 0 a.s. and relu'(0) = 0, so F = G = 0 nearby along b > 0
        return 0.0, 0.0, 0.0, 0.0, 0.0
    r = math.sqrt(max(prod - s12 * s12, 0.0))
    if r > 0.0:
        return (
            r * _INV_4PI / s11,
            r * _INV_4PI / s22,
            -s12 * _INV_4PI / (s11 * r),
            _INV_2PI / r,
            -s12 * _INV_4PI / (s22 * r),
        )
    return 0.0, 0.0, 0.0, 0.0, 0.0


@njit(cache=True, error_model="numpy")
def _elementary_partials(code, prm, s11, s22, s12):
    """``(F11, F22, G11, G12, G22)`` of abrelu, sin, cos, gaussian and the monomials."""
    if code == ABRELU:
        a, b = prm
        w = (a - b) * (a - b)
        f11, f22, g11, g12, g22 = _relu_partials(s11, s22, s12)
        return w * f11, w * f22, w * g11, w * g12, w * g22
    if code == SIN or code == COS:
        sh, ch = exp_sinh_cosh(0.5 * (s11 + s22), s12)
        f, g = (sh, ch) if code == SIN else (ch, sh)
        return -0.5 * f, -0.5 * f, -0.5 * g, f, -0.5 * g
    if code == GAUSSIAN:
        dd = gaussian_determinant(s11, s22, s12)
        d32 = 1.0 / (dd * math.sqrt(dd))
        d52 = d32 / dd
        return (
            -0.5 * (1.0 + s22) * d32,
            -0.5 * (1.0 + s11) * d32,
            -1.5 * s12 * (1.0 + s22) * d52,
            d32 + 3.0 * s12 * s12 * d52,
            -1.5 * s12 * (1.0 + s11) * d52,
        )
    # MONOMIAL
    n = int(prm[0])
    _, df = monomial_moment(n, s11, s22, s12)
    _, dg = monomial_moment(n - 1, s11, s22, s12)
    g12 = 0.0
    if n >= 2:
        g12 = (n * (n - 1)) ** 2 * monomial_moment(n - 2, s11, s22, s12)[0]
    n2 = n * n
    return s22 * df, s11 * df, n2 * s22 * dg, g12, n2 * s11 * dg


@njit(cache=True, inline="always", error_model="numpy")
def _partials(code, prm, s11, s22, s12):
    """The partials ``F_11, F_22, G_11, G_12, G_22`` for one pair (``F_12 = G``, Price's theorem).

    Parameters
    ----------
    code : int
        Activation code (one of :data:`GRADIENT_CODES`).
    prm : (float, float)
        Its parameters.
    s11, s22 : float
        Variances ``>= 0``.
    s12 : float
        Covariance.

    Returns
    -------
    tuple of 5 floats
        ``(F11, F22, G11, G12, G22)``.
    """
    if code == RELU:
        return _relu_partials(s11, s22, s12)
    elif code == ERF:
        p1 = 1.0 + 2.0 * s11
        p2 = 1.0 + 2.0 * s22
        dd = erf_determinant(s11, s22, s12)
        root = math.sqrt(dd)
        d32 = dd * root
        return (
            -_FOUR_OVER_PI * s12 / (root * p1),
            -_FOUR_OVER_PI * s12 / (root * p2),
            -_FOUR_OVER_PI * p2 / d32,
            _SIXTEEN_OVER_PI * s12 / d32,
            -_FOUR_OVER_PI * p1 / d32,
        )
    elif code == IDENTITY:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    return _elementary_partials(code, prm, s11, s22, s12)


@njit(cache=True, error_model="numpy")
def _point_derivatives(variances, sq_norms, n_features, depth, code, prm, sw2):
    """Derivatives of the per-point variances ``Sigma^{l+1}(x_i, x_i)`` in ``a`` and ``b``.

    Parameters
    ----------
    variances : ndarray, shape (depth + 1, N)
        From the analytic module's per-point recursion.
    sq_norms : ndarray, shape (N,)
    n_features, depth, code : int
    prm : (float, float)
    sw2 : float

    Returns
    -------
    dqa, dqb : ndarray, shape (depth + 1, N)
    """
    n = variances.shape[1]
    dqa = np.empty((depth + 1, n))
    dqb = np.empty((depth + 1, n))
    for i in range(n):
        sa = sq_norms[i] / n_features
        sb = 1.0
        dqa[0, i] = sa
        dqb[0, i] = sb
        for l in range(depth):
            s = variances[l, i]
            e_phi, e_dphi = closed_form_expectations(code, prm, s, s, s)
            f11, f22, _, _, _ = _partials(code, prm, s, s, s)
            total = f11 + e_dphi + f22  # dF along S11 = S22 = S12 = s
            sa = e_phi + sw2 * total * sa
            sb = sw2 * total * sb + 1.0
            dqa[l + 1, i] = sa
            dqb[l + 1, i] = sb
    return dqa, dqb


@njit(cache=True, inline="always", error_model="numpy")
def _pair(g, i, j, depth, code, prm, scale, inv_d, sw2, sb2, q1, dqa1, dqb1, q2, dqa2, dqb2, ntk):
    """Kernel value and its ``(d/da, d/db)`` for the pair ``(i, j)`` whose input Gram entry is ``g``.

    The values go through the analytic module's maps and update, in its order of operations.

    Returns
    -------
    value, d_da, d_db : float
    """
    s = scale * g + sb2
    sa = g * inv_d
    sb = 1.0
    t = s
    ta = sa
    tb = sb
    for l in range(depth):
        s11 = q1[l, i]
        s22 = q2[l, j]
        if s == s11 and s == s22:
            # a pair at correlation one is the point itself (its value is the point's, bit for bit):
            # its derivatives are the point's too. The pair's own recursion would reach them only to
            # rounding, and in the chaotic regime (sigma_w^2 E[phi'^2] > 1) that rounding grows by
            # that factor every layer: 4e-7 at depth 10 for sin at sigma_w = 4.3, measured.
            sa = 0.5 * (dqa1[l, i] + dqa2[l, j])
            sb = 0.5 * (dqb1[l, i] + dqb2[l, j])
        e_phi, e_dphi = closed_form_expectations(code, prm, s11, s22, s)
        f11, f22, g11, g12, g22 = _partials(code, prm, s11, s22, s)
        fa = f11 * dqa1[l, i] + e_dphi * sa + f22 * dqa2[l, j]
        fb = f11 * dqb1[l, i] + e_dphi * sb + f22 * dqb2[l, j]
        ga = g11 * dqa1[l, i] + g12 * sa + g22 * dqa2[l, j]
        gb = g11 * dqb1[l, i] + g12 * sb + g22 * dqb2[l, j]
        sdot = sw2 * e_dphi
        sa = e_phi + sw2 * fa
        sb = sw2 * fb + 1.0
        ta = sa + (e_dphi + sw2 * ga) * t + sdot * ta
        tb = sb + sw2 * gb * t + sdot * tb
        s, t = next_layer(sw2, sb2, e_phi, e_dphi, t)
    if ntk:
        return t, ta, tb
    return s, sa, sb


@njit(cache=True, nogil=True)
def _fill(
    gram, symmetric, depth, code, prm, scale, inv_d, sw2, sb2, q1, dqa1, dqb1, q2, dqa2, dqb2, ntk, K, grad, start, step
):
    """Fill rows ``start::step`` of ``K`` and ``grad`` (each thread of
    :func:`ntksolve._jit.threads.run_in_threads` writes its own rows).

    Parameters
    ----------
    gram : ndarray, shape (N1, N2)
        From :func:`ntksolve.kernels.analytic.input_gram` (symmetric: upper triangle and diagonal).
    symmetric : bool
        Rows compute ``j >= i``; a serial pass mirrors afterwards.
    depth, code : int
    prm : (float, float)
    scale, inv_d, sw2, sb2 : float
        ``sigma_w^2 / d``, ``1 / d``, ``sigma_w^2``, ``sigma_b^2``.
    q1, dqa1, dqb1, q2, dqa2, dqb2 : ndarray, shape (depth + 1, N1) and (depth + 1, N2)
        Per-point variances and their derivatives.
    ntk : bool
    K : ndarray, shape (N1, N2)
        Output values.
    grad : ndarray, shape (N1, N2, 2)
        Output gradient, ``[..., 0]`` in ``log sigma_b`` and ``[..., 1]`` in ``log sigma_w``.
    start, step : int
        This thread's rows.
    """
    n1, n2 = gram.shape
    for i in range(start, n1, step):
        j0 = i if symmetric else 0
        for j in range(j0, n2):
            v, va, vb = _pair(
                gram[i, j], i, j, depth, code, prm, scale, inv_d, sw2, sb2, q1, dqa1, dqb1, q2, dqa2, dqb2, ntk
            )
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


def pair_kernel_with_gradient(gram, n_features, q1, sq1, q2, sq2, depth, code, prm, weight_std, bias_std, ntk):
    """The NNGP or NTK between two point sets and its gradient in log hyperparameters.

    The caller (:mod:`ntksolve.sklearn.gp_kernels`) computes the pieces shared with the analytic
    kernels, so that the values are theirs bit for bit: the per-point variances, range-checked
    (``ntksolve.kernels._analytic_rules._diag_pieces``, closed-form method), and the input Gram
    (``ntksolve.kernels.analytic.input_gram``).

    Parameters
    ----------
    gram : ndarray, shape (N1, N2)
        Input Gram ``X1 X2^T`` (symmetric: upper triangle and diagonal filled).
    n_features : int
        ``d``, the number of input features.
    q1 : ndarray, shape (depth + 1, N1)
        Per-point variances ``Sigma^{l+1}(x, x)`` of the rows of ``X1``.
    sq1 : ndarray, shape (N1,)
        Their squared norms.
    q2, sq2 : ndarray, shapes (depth + 1, N2) and (N2,), or None
        The same for ``X2``; ``None`` for the symmetric kernel of ``X1`` with itself.
    depth : int
        ``L``, the number of hidden layers.
    code : int
        One of :data:`GRADIENT_CODES`.
    prm : (float, float)
        The activation's parameters (``Activation.params``).
    weight_std, bias_std : float
    ntk : bool
        The NTK (True) or the NNGP (False).

    Returns
    -------
    K : ndarray, shape (N1, N2)
        Bit-identical to the analytic module's kernel.
    grad : ndarray, shape (N1, N2, 2)
        ``dK/dlog(bias_std)`` then ``dK/dlog(weight_std)``.

    Raises
    ------
    ValueError
        For an activation without closed-form partials.
    """
    code = int(code)
    prm = (float(prm[0]), float(prm[1]))
    if code not in GRADIENT_CODES:
        raise ValueError(f"no closed-form gradient for activation code {code}")
    depth = int(depth)
    sw2 = float(weight_std) ** 2
    sb2 = float(bias_std) ** 2
    d = int(n_features)
    symmetric = q2 is None
    dqa1, dqb1 = _point_derivatives(q1, sq1, d, depth, code, prm, sw2)
    if symmetric:
        q2, sq2, dqa2, dqb2 = q1, sq1, dqa1, dqb1
    else:
        dqa2, dqb2 = _point_derivatives(q2, sq2, d, depth, code, prm, sw2)
    K = np.empty(gram.shape)
    grad = np.empty(gram.shape + (2,))
    run_in_threads(
        _fill,
        gram,
        symmetric,
        depth,
        code,
        prm,
        sw2 / d,
        1.0 / d,
        sw2,
        sb2,
        q1,
        dqa1,
        dqb1,
        q2,
        dqa2,
        dqb2,
        bool(ntk),
        K,
        grad,
    )
    if symmetric:
        _mirror(K, grad)
    return K, grad


__all__ = ["pair_kernel_with_gradient", "GRADIENT_CODES"]
