"""Infinite-width NNGP and NTK of a fully connected network, as numba kernels over pairs of points.

Private: :func:`ntksolve.kernels.analytic_kernels` validates the inputs and calls
:func:`analytic_pair_kernels`; the sklearn kernel's ``diag`` calls :func:`analytic_diag`.

The recursion is the one of ``CONVENTIONS.md`` ("The analytic NTK and NNGP"; Lee et al. 2018 for the
NNGP, Jacot et al. 2018 and Arora et al. 2019, eq. (9)-(10), for the NTK)::

    Sigma^1   = sigma_w^2 <x, x'> / d + sigma_b^2                Theta^1 = Sigma^1
    Sigma^l+1 = sigma_w^2 E[phi(u) phi(v)] + sigma_b^2
    Sdot^l+1  = sigma_w^2 E[phi'(u) phi'(v)]
    Theta^l+1 = Sigma^l+1 + Sdot^l+1 * Theta^l

How it is made fast:

- The input Gram ``X1 X2^T`` is one BLAS call (``O(N1 N2 d)``), written straight into the NNGP output.
- A point's variances ``Sigma^l(x, x)`` obey a one-dimensional recursion (the same maps at angle
  ``theta = 0``), so all of them are precomputed in ``O(N L)``; a pair then only carries its
  covariance ``Sigma^l(x, x')`` and ``Theta^l(x, x')`` through the layers.
- One ``parallel=True`` kernel over output rows; each thread transforms its rows of the outputs in
  place, a cache-sized block of columns at a time through all layers, so no ``N x N`` intermediate
  is ever made. In the symmetric case only the upper triangle is computed, rows paired as
  ``(i, N-1-i)`` so that every thread gets the same amount of work, and a blocked copy mirrors it.
- The ReLU map uses an arctangent written here as straight-line code (Cephes' rational
  approximation), which LLVM vectorises; ``math.atan2`` is a scalar libm call and would take
  about ten times as long. Its error is at most 2 ulp of ``pi`` (checked in the tests).

Closed forms exist for relu (the arc-cosine kernel of Cho & Saul 2009), erf (Williams 1997) and
identity; every other activation uses a two-dimensional Gauss-Hermite rule.
"""
from __future__ import annotations

import concurrent.futures
import functools
import math
import warnings

import numpy as np
import numba
from numba import njit
from scipy.linalg.blas import dsyrk as _dsyrk

from ntksolve._jit.activations import ERF, IDENTITY, RELU, TANH, act, dact

#: Activations with closed-form layer maps; all others use quadrature.
CLOSED_FORM_CODES = (RELU, ERF, IDENTITY)

from ntksolve._config import (  # noqa: E402  (tunables live in the config module; reasons there)
    GH_PAIR_WEIGHT_CUTOFF as _GH_PAIR_WEIGHT_CUTOFF,
    GH_ORDER_BASE as _ORDER_BASE,
    GH_ORDER_PER_VARIANCE as _ORDER_PER_VARIANCE,
    GH_ORDER_PER_VARIANCE_TANH as _ORDER_PER_VARIANCE_TANH,
    GH_ORDER_MAX as _ORDER_MAX,
)

#: Columns of one output row transformed together through all layers: the block of both outputs
#: and the per-layer variances stays in the L1 cache while the inner loops vectorise.
_COLUMN_BLOCK = 256

#: Tile edge of the blocked copy that mirrors the upper triangle (two 64 x 64 float64 tiles = 64 KiB).
_MIRROR_TILE = 64

_PI = math.pi
_INV_2PI = 1.0 / (2.0 * math.pi)
_TWO_OVER_PI = 2.0 / math.pi
_FOUR_OVER_PI = 4.0 / math.pi

# Cephes ``atan`` (S. Moshier, atan.c): atan(t) = t + t z P(z)/Q(z), z = t^2, |t| <= 0.66, with the
# reduction atan(a) = pi/4 + atan((a - 1)/(a + 1)) above 0.66. Relative error 1.9e-16 on [-10, 10].
_ATAN_P0 = -8.750608600031904122785e-1
_ATAN_P1 = -1.615753718733365076637e1
_ATAN_P2 = -7.500855792314704667340e1
_ATAN_P3 = -1.228866684490136173410e2
_ATAN_P4 = -6.485021904942025371773e1
_ATAN_Q0 = 2.485846490142306297962e1
_ATAN_Q1 = 1.650270098316988542046e2
_ATAN_Q2 = 4.328810604912902668951e2
_ATAN_Q3 = 4.853903996359136964868e2
_ATAN_Q4 = 1.945506571482613964425e2
_ATAN_MOREBITS = 6.123233995736765886130e-17  # pi/4 - fl(pi/4)


# ---------------------------------------------------------------------------------------------
# scalar pieces (inlined into the loops)
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always", error_model="numpy")
def _atan2_upper(y, x):
    """``atan2(y, x)`` for ``y >= 0``: the angle in ``[0, pi]``, as branch-free code that vectorises.

    Parameters
    ----------
    y : float
        Non-negative ordinate (``sqrt(det)`` in the ReLU map).
    x : float
        Abscissa (the covariance ``Sigma12``).

    Returns
    -------
    theta : float
        In ``[0, pi]``; ``atan2(0, 0) = 0`` as in libm. ``error_model="numpy"`` lets ``0/0`` pass
        (it is selected away) instead of raising, which is what lets LLVM vectorise the loop.
    """
    ax = abs(x)
    big = max(ax, y)
    small = min(ax, y)
    a = small / big if big > 0.0 else 0.0  # in [0, 1]
    reduced = a > 0.66
    t = (a - 1.0) / (a + 1.0) if reduced else a
    z = t * t
    p = (((_ATAN_P0 * z + _ATAN_P1) * z + _ATAN_P2) * z + _ATAN_P3) * z + _ATAN_P4
    q = ((((z + _ATAN_Q0) * z + _ATAN_Q1) * z + _ATAN_Q2) * z + _ATAN_Q3) * z + _ATAN_Q4
    r = t + t * (z * p / q)
    r = 0.25 * _PI + (r + 0.5 * _ATAN_MOREBITS) if reduced else r
    r = 0.5 * _PI - r if y > ax else r  # atan(y/|x|) = pi/2 - atan(|x|/y)
    return _PI - r if x < 0.0 else r


@njit(cache=True, inline="always", error_model="numpy")
def _relu_expectations(s11, s22, s12):
    """``(E[relu(u) relu(v)], E[relu'(u) relu'(v)])`` for ``(u, v) ~ N(0, [[s11, s12], [s12, s22]])``.

    The arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009, eq. (6)):
    ``E[phi phi] = (sqrt(s11 s22 - s12^2) + (pi - theta) s12) / (2 pi)`` (the conventions'
    ``sqrt(s11 s22) (sin theta + (pi - theta) cos theta) / (2 pi)`` with ``sin theta sqrt(s11 s22)``
    written as ``sqrt(det)``) and ``E[phi' phi'] = (pi - theta) / (2 pi)``, where
    ``theta = atan2(sqrt(max(det, 0)), s12)`` (never ``arccos`` of a rounded correlation).
    A zero variance makes both 0 (``relu'(0) = 0``), not ``0/0``.

    Parameters
    ----------
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
def _erf_expectations(s11, s22, s12):
    """``(E[erf(u) erf(v)], E[erf'(u) erf'(v)])`` in closed form (Williams 1997).

    ``E[phi phi] = (2/pi) arcsin(2 s12 / sqrt(A))`` and ``E[phi' phi'] = (4/pi) / sqrt(A - 4 s12^2)``
    with ``A = (1 + 2 s11)(1 + 2 s22)``. The arcsine is taken as
    ``atan2(2 s12, sqrt(A - 4 s12^2))``, which shares the square root and vectorises;
    ``A - 4 s12^2 >= 1 + 2 s11 + 2 s22 >= 1``, so there is no cancellation.

    Parameters
    ----------
    s11, s22 : float
        Variances, ``>= 0``.
    s12 : float
        Covariance.

    Returns
    -------
    e_phi, e_dphi : float
    """
    a = (1.0 + 2.0 * s11) * (1.0 + 2.0 * s22)
    root = math.sqrt(max(a - 4.0 * s12 * s12, 1.0))
    angle = _atan2_upper(2.0 * abs(s12), root)
    angle = -angle if s12 < 0.0 else angle
    return _TWO_OVER_PI * angle, _FOUR_OVER_PI / root


@njit(cache=True, error_model="numpy")
def gauss_hermite_expectations(code, s11, s22, s12, wphi_u, wdphi_u, nodes, weights, lo, hi):
    """``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` by two-dimensional Gauss-Hermite quadrature.

    ``u = sqrt(s11) z1`` and ``v = sqrt(s22) (c z1 + sqrt(1 - c^2) z2)`` with ``z1, z2`` independent
    standard normals and ``c = s12 / sqrt(s11 s22)``; the outer sum runs over ``z1``, whose factor
    ``w_k phi(u_k)`` depends on one point only and comes precomputed.

    Parameters
    ----------
    code : int
        Activation code (``_jit_activations.ACTIVATION_CODES``).
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
    root = math.sqrt(s11 * s22)
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
            inner_phi += weights[m] * act(code, v)
            inner_dphi += weights[m] * dact(code, v)
        e_phi += wphi_u[k] * inner_phi
        e_dphi += wdphi_u[k] * inner_dphi
    return e_phi, e_dphi


# ---------------------------------------------------------------------------------------------
# the per-point (theta = 0) recursion
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _squared_norms(X):
    """Row norms squared, ``sum_k X[i, k]^2``.

    One fixed summation order, used by both the full kernels and :func:`analytic_diag`, so that the
    diagonal of one is bit-identical to the other.

    Parameters
    ----------
    X : ndarray, shape (N, d)

    Returns
    -------
    sq : ndarray, shape (N,)
    """
    n, d = X.shape
    sq = np.empty(n)
    for i in range(n):
        acc = 0.0
        for k in range(d):
            acc += X[i, k] * X[i, k]
        sq[i] = acc
    return sq


@njit(cache=True, error_model="numpy")
def _diagonal_recursion(sq_norms, n_features, depth, code, quadrature, sw2, sb2, nodes, weights):
    """The recursion for a point paired with itself: ``theta = 0`` exactly, ``O(N L)``.

    Parameters
    ----------
    sq_norms : ndarray, shape (N,)
        ``|x_i|^2``.
    n_features : int
        ``d``.
    depth : int
        ``L``, the number of hidden layers.
    code : int
        Activation code.
    quadrature : bool
        Use the 1-D Gauss-Hermite rule (the 2-D rule at ``c = 1``) instead of the closed form.
    sw2, sb2 : float
        ``sigma_w^2``, ``sigma_b^2``.
    nodes, weights : ndarray, shape (n,)
        Probabilists' Gauss-Hermite rule, weights summing to 1 (unused for closed forms).

    Returns
    -------
    variances : ndarray, shape (depth + 1, N)
        ``variances[l, i] = Sigma^{l+1}(x_i, x_i)``; the last row is the NNGP diagonal.
    ntk_diag : ndarray, shape (N,)
        ``Theta^{L+1}(x_i, x_i)``.
    """
    n = sq_norms.shape[0]
    variances = np.empty((depth + 1, n))
    ntk_diag = np.empty(n)
    scale = sw2 / n_features
    for i in range(n):
        s = scale * sq_norms[i] + sb2
        t = s
        variances[0, i] = s
        for l in range(depth):
            if quadrature:
                sd = math.sqrt(s)
                e_phi = 0.0
                e_dphi = 0.0
                for k in range(nodes.shape[0]):
                    u = sd * nodes[k]
                    f = act(code, u)
                    g = dact(code, u)
                    e_phi += weights[k] * f * f
                    e_dphi += weights[k] * g * g
            elif code == RELU:
                # theta = 0: E[relu(u)^2] = s/2, E[relu'(u)^2] = 1/2 (0 if u is the constant 0)
                e_phi = 0.5 * s
                e_dphi = 0.5 if s > 0.0 else 0.0
            elif code == ERF:
                # arcsin(2s / (1 + 2s)) and (4/pi) / sqrt((1 + 2s)^2 - 4 s^2) = (4/pi) / sqrt(1 + 4s)
                e_phi = _TWO_OVER_PI * math.asin(2.0 * s / (1.0 + 2.0 * s))
                e_dphi = _FOUR_OVER_PI / math.sqrt(1.0 + 4.0 * s)
            else:  # IDENTITY
                e_phi = s
                e_dphi = 1.0
            s = sw2 * e_phi + sb2
            t = s + sw2 * e_dphi * t
            variances[l + 1, i] = s
        ntk_diag[i] = t
    return variances, ntk_diag


@njit(cache=True, error_model="numpy")
def _weighted_activations_at_nodes(variances, depth, code, nodes, weights):
    """``w_k phi(sqrt(Sigma^l(x_i, x_i)) z_k)`` and ``w_k phi'(...)``: the per-point outer factors.

    Parameters
    ----------
    variances : ndarray, shape (depth + 1, N)
    depth : int
    code : int
    nodes, weights : ndarray, shape (n,)

    Returns
    -------
    wphi, wdphi : ndarray, shape (depth, N, n)
    """
    n_points = variances.shape[1]
    n = nodes.shape[0]
    wphi = np.empty((depth, n_points, n))
    wdphi = np.empty((depth, n_points, n))
    for l in range(depth):
        for i in range(n_points):
            sd = math.sqrt(variances[l, i])
            for k in range(n):
                u = sd * nodes[k]
                wphi[l, i, k] = weights[k] * act(code, u)
                wdphi[l, i, k] = weights[k] * dact(code, u)
    return wphi, wdphi


# ---------------------------------------------------------------------------------------------
# the pair kernel
# ---------------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _row_block(nngp, ntk, i, j0, j1, var1, var2, scale, sw2, sb2, depth, code, quadrature,
               wphi1, wdphi1, nodes, weights, lo, hi):
    """Transform ``nngp[i, j0:j1]`` (holding the input Gram) and fill ``ntk[i, j0:j1]``, in place.

    Closed forms go layer by layer over the whole block (loops over columns that vectorise); the
    quadrature goes pair by pair, the pair's ``Sigma12`` and ``Theta`` carried through the layers
    in registers.

    Parameters
    ----------
    nngp, ntk : ndarray, shape (N1, N2)
        Outputs; on entry ``nngp[i, j0:j1]`` is ``<x_i, x'_j>``.
    i, j0, j1 : int
        Row and half-open column range.
    var1 : ndarray, shape (depth + 1, N1)
    var2 : ndarray, shape (depth + 1, N2)
        Per-point variances ``Sigma^{l+1}(x, x)`` of the row and column points.
    scale, sw2, sb2 : float
        ``sigma_w^2 / d``, ``sigma_w^2``, ``sigma_b^2``.
    depth, code : int
    quadrature : bool
    wphi1, wdphi1 : ndarray, shape (depth, N1, n)
        Outer quadrature factors of the row points (shape ``(0, 0, 0)`` for closed forms).
    nodes, weights : ndarray, shape (n,)
    lo, hi : ndarray of int64, shape (n,)
    """
    # Slices indexed from 0: with a non-negative loop index numba drops its negative-index
    # wrap-around, and only then does LLVM vectorise the loops below.
    k_blk = nngp[i, j0:j1]
    t_blk = ntk[i, j0:j1]
    n = k_blk.shape[0]
    for j in range(n):
        s = scale * k_blk[j] + sb2
        k_blk[j] = s
        t_blk[j] = s
    if quadrature:
        for j in range(n):
            s12 = k_blk[j]
            t = t_blk[j]
            for l in range(depth):
                e_phi, e_dphi = gauss_hermite_expectations(
                    code, var1[l, i], var2[l, j0 + j], s12, wphi1[l, i], wdphi1[l, i], nodes, weights,
                    lo, hi,
                )
                s12 = sw2 * e_phi + sb2
                t = s12 + sw2 * e_dphi * t
            k_blk[j] = s12
            t_blk[j] = t
        return
    for l in range(depth):
        s11 = var1[l, i]
        v2 = var2[l, j0:j1]
        if code == RELU:
            for j in range(n):
                e_phi, e_dphi = _relu_expectations(s11, v2[j], k_blk[j])
                s = sw2 * e_phi + sb2
                k_blk[j] = s
                t_blk[j] = s + sw2 * e_dphi * t_blk[j]
        elif code == ERF:
            for j in range(n):
                e_phi, e_dphi = _erf_expectations(s11, v2[j], k_blk[j])
                s = sw2 * e_phi + sb2
                k_blk[j] = s
                t_blk[j] = s + sw2 * e_dphi * t_blk[j]
        else:  # IDENTITY: E[uv] = Sigma12, E[1 * 1] = 1
            for j in range(n):
                s = sw2 * k_blk[j] + sb2
                k_blk[j] = s
                t_blk[j] = s + sw2 * t_blk[j]


@njit(cache=True)
def _row(nngp, ntk, i, j_start, var1, var2, scale, sw2, sb2, depth, code, quadrature,
         wphi1, wdphi1, nodes, weights, lo, hi):
    """Row ``i`` from column ``j_start`` to the end, a cache-sized block of columns at a time.

    Parameters
    ----------
    As :func:`_row_block`; columns ``j_start <= j < N2``.
    """
    n2 = nngp.shape[1]
    for j0 in range(j_start, n2, _COLUMN_BLOCK):
        _row_block(nngp, ntk, i, j0, min(j0 + _COLUMN_BLOCK, n2), var1, var2, scale, sw2, sb2,
                   depth, code, quadrature, wphi1, wdphi1, nodes, weights, lo, hi)


@njit(cache=True, nogil=True)
def _pair_rows(nngp, ntk, var1, var2, ntk_diag, scale, sw2, sb2, depth, code,
               quadrature, symmetric, wphi1, wdphi1, nodes, weights, lo, hi, start, step):
    """Turn the Gram in ``nngp`` into the NNGP and NTK, in place, for rows ``start::step``.

    Called by :func:`run_in_threads` with ``step`` threads, each on its own rows (``nogil``, so
    the threads run truly in parallel). Symmetric case: only ``j > i`` is computed, rows paired
    ``(p, N-1-p)`` so that every ``p`` carries ``N - 1`` pairs of points and a strided split
    balances the threads; the diagonal is the ``theta = 0`` recursion. (A ``prange`` loop here
    cost 5.8 s of compilation for a three-line driver; Python threads over a ``nogil`` kernel
    cost none, and do not spin against OpenBLAS's threads between calls.)

    Parameters
    ----------
    nngp : ndarray, shape (N1, N2)
        On entry the input Gram ``X1 X2^T``; on exit the NNGP ``Sigma^{L+1}`` (symmetric case:
        the upper triangle, mirrored afterwards by :func:`_mirror_rows`).
    ntk : ndarray, shape (N1, N2)
        Output, the NTK ``Theta^{L+1}``.
    var1, var2 : ndarray, shapes (depth + 1, N1), (depth + 1, N2)
    ntk_diag : ndarray, shape (N1,)
        Diagonal NTK (used when ``symmetric``).
    scale, sw2, sb2 : float
    depth, code : int
    quadrature, symmetric : bool
    wphi1, wdphi1 : ndarray, shape (depth, N1, n) or (0, 0, 0)
    nodes, weights : ndarray, shape (n,)
    lo, hi : ndarray of int64, shape (n,)
    start, step : int
        This thread's rows (or row pairs): ``start, start + step, ...``.
    """
    n1 = nngp.shape[0]
    if not symmetric:
        for i in range(start, n1, step):
            _row(nngp, ntk, i, 0, var1, var2, scale, sw2, sb2, depth, code, quadrature,
                 wphi1, wdphi1, nodes, weights, lo, hi)
        return
    for p in range(start, (n1 + 1) // 2, step):
        _upper_row(nngp, ntk, p, var1, var2, ntk_diag, scale, sw2, sb2, depth, code, quadrature,
                   wphi1, wdphi1, nodes, weights, lo, hi)
        if n1 - 1 - p != p:
            _upper_row(nngp, ntk, n1 - 1 - p, var1, var2, ntk_diag, scale, sw2, sb2, depth, code,
                       quadrature, wphi1, wdphi1, nodes, weights, lo, hi)


@njit(cache=True, nogil=True)
def _mirror_rows(nngp, ntk, start, step):
    """Mirror the upper triangles onto the lower ones, tile rows ``(q, nt-1-q)`` for ``q`` in
    ``start::step`` (pairing balances the triangular work).

    Parameters
    ----------
    nngp, ntk : ndarray, shape (N, N), modified in place
    start, step : int
    """
    nt = (nngp.shape[0] + _MIRROR_TILE - 1) // _MIRROR_TILE
    for q in range(start, (nt + 1) // 2, step):
        _mirror_tile_row(nngp, ntk, q)
        if nt - 1 - q != q:
            _mirror_tile_row(nngp, ntk, nt - 1 - q)


def run_in_threads(kernel, *args):
    """``kernel(*args, start, step)`` on ``numba.get_num_threads()`` threads (1: inline), each
    taking every ``step``-th row. Respects ``numba.set_num_threads`` (the Dask path sets 1)."""
    n = numba.get_num_threads()
    if n <= 1:
        kernel(*args, 0, 1)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        for fut in [pool.submit(kernel, *args, s, n) for s in range(n)]:
            fut.result()


@njit(cache=True)
def _upper_row(nngp, ntk, i, var1, var2, ntk_diag, scale, sw2, sb2, depth, code, quadrature,
               wphi1, wdphi1, nodes, weights, lo, hi):
    """Symmetric case, row ``i``: the diagonal from the ``theta = 0`` recursion, then ``j > i``.

    Parameters
    ----------
    As :func:`_pair_rows`; ``i`` the row.
    """
    nngp[i, i] = var1[depth, i]
    ntk[i, i] = ntk_diag[i]
    _row(nngp, ntk, i, i + 1, var1, var2, scale, sw2, sb2, depth, code, quadrature,
         wphi1, wdphi1, nodes, weights, lo, hi)


@njit(cache=True)
def _mirror_tile_row(nngp, ntk, bt):
    """Copy the upper triangle onto the lower one for rows of tile row ``bt``, tile by tile.

    Parameters
    ----------
    nngp, ntk : ndarray, shape (N, N)
        Upper triangle filled; rows ``bt * T <= r < (bt + 1) * T`` get ``[r, c] = [c, r]``, ``c < r``.
    bt : int
        Tile row; tiles of edge ``T = _MIRROR_TILE`` keep source and destination in cache.
    """
    n = nngp.shape[0]
    r0 = bt * _MIRROR_TILE
    r1 = min(r0 + _MIRROR_TILE, n)
    for c0 in range(0, r1, _MIRROR_TILE):
        c1 = min(c0 + _MIRROR_TILE, n)
        # views indexed from 0 (no wrap-around checks); dst[a, b] = nngp[r0 + a, c0 + b]
        k_dst = nngp[r0:r1, c0:c1]
        k_src = nngp[c0:c1, r0:r1]
        t_dst = ntk[r0:r1, c0:c1]
        t_src = ntk[c0:c1, r0:r1]
        diagonal_tile = c0 == r0
        for a in range(r1 - r0):
            b_end = a if diagonal_tile else c1 - c0
            for b in range(b_end):
                k_dst[a, b] = k_src[b, a]
                t_dst[a, b] = t_src[b, a]


# ---------------------------------------------------------------------------------------------
# Python entry points (nothing is compiled until they are called)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _gauss_hermite_rule_cached(order):
    from numpy.polynomial.hermite_e import hermegauss

    nodes, weights = hermegauss(order)  # weight exp(-z^2 / 2): z is directly a standard normal
    weights = weights / weights.sum()  # sum is sqrt(2 pi); normalise so the rule is an expectation
    keep = weights[:, None] * weights[None, :] > _GH_PAIR_WEIGHT_CUTOFF
    # the weights fall off monotonically from the centre, so each kept range is contiguous
    lo = np.argmax(keep, axis=1).astype(np.int64)
    hi = (order - np.argmax(keep[:, ::-1], axis=1)).astype(np.int64)
    hi[~keep.any(axis=1)] = lo[~keep.any(axis=1)]
    for arr in (nodes, weights, lo, hi):
        arr.setflags(write=False)
    return nodes, weights, lo, hi


def gauss_hermite_rule(order):
    """The probabilists' Gauss-Hermite rule used for the quadrature activations.

    Parameters
    ----------
    order : int
        Nodes per dimension.

    Returns
    -------
    nodes, weights : ndarray, shape (order,)
        ``E[f(z)] ~ sum_k weights[k] f(nodes[k])`` for ``z ~ N(0, 1)``; weights sum to 1.
    lo, hi : ndarray of int64, shape (order,)
        Inner-node ranges of the 2-D rule: pairs ``(k, m)`` with ``lo[k] <= m < hi[k]`` are those
        whose product weight exceeds the cut-off.
    """
    order = int(order)
    if order < 1:
        raise ValueError(f"quadrature order must be a positive integer, got {order}")
    # fresh writable copies: numba compiles read-only arrays as a different type
    return tuple(a.copy() for a in _gauss_hermite_rule_cached(order))


def _uses_quadrature(activation_code, force_quadrature):
    return bool(force_quadrature) or int(activation_code) not in CLOSED_FORM_CODES


def _order_slope(code):
    return _ORDER_PER_VARIANCE_TANH if code == TANH else _ORDER_PER_VARIANCE


def _adaptive_order(max_variance, code=ERF):
    """Gauss-Hermite nodes per dimension for variances up to ``max_variance`` (see ``_ORDER_BASE``)."""
    slope = _order_slope(code)
    return int(min(_ORDER_MAX, _ORDER_BASE + math.ceil(slope * max(max_variance, 1.0))))


def _diag_pieces(X, depth, activation_code, weight_std, bias_std, quadrature, quad_order):
    """Per-point recursion and the quadrature rule that goes with it.

    With ``quad_order=None`` the order adapts to the largest variance the rule must integrate over
    (``variances[:depth]``); since those variances themselves come from the rule, the order is
    raised and the (cheap, 1-D) recursion redone until it suffices.
    """
    sq = _squared_norms(X)
    sw2 = float(weight_std) ** 2
    sb2 = float(bias_std) ** 2
    if not quadrature:
        nodes, weights, lo, hi = _empty_rule()
        variances, ntk_diag = _diagonal_recursion(sq, X.shape[1], depth, activation_code, False,
                                                  sw2, sb2, nodes, weights)
        return variances, ntk_diag, (nodes, weights, lo, hi), 0
    order = int(quad_order) if quad_order is not None else _adaptive_order(sw2 * sq.max() / X.shape[1] + sb2, activation_code)
    while True:
        nodes, weights, lo, hi = gauss_hermite_rule(order)
        variances, ntk_diag = _diagonal_recursion(sq, X.shape[1], depth, activation_code, True,
                                                  sw2, sb2, nodes, weights)
        if quad_order is not None or depth == 0:
            break
        needed = _adaptive_order(variances[:depth].max(), activation_code)
        if needed <= order:
            break
        order = needed
    if quad_order is None and order == _ORDER_MAX and depth > 0 and variances[:depth].max() > (
            (_ORDER_MAX - _ORDER_BASE) / _order_slope(activation_code)):
        warnings.warn(
            f"pre-activation variances reach {variances[:depth].max():.3g}: the Gauss-Hermite rule is "
            f"capped at {_ORDER_MAX} nodes per dimension and may be inexact above 1e-8; scale the inputs "
            "or weight_std down", RuntimeWarning, stacklevel=3)
    return variances, ntk_diag, (nodes, weights, lo, hi), order


def _empty_rule():
    return np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)


def analytic_diag(X, depth, activation_code, weight_std, bias_std, force_quadrature=False,
                  quad_order=None):
    """Diagonals ``K(x_i, x_i)`` and ``Theta(x_i, x_i)`` of the NNGP and NTK, in ``O(N (d + L))``.

    The ``theta = 0`` recursion of the conventions; bit-identical to the diagonal of
    ``analytic_pair_kernels(X, X, ..., symmetric=True)``.

    Parameters
    ----------
    X : ndarray, shape (N, d), C-contiguous float64 (validated by the caller)
    depth : int
        ``L``, number of hidden layers (``>= 0``).
    activation_code : int
        ``_jit_activations.ACTIVATION_CODES[name]``.
    weight_std, bias_std : float
        ``sigma_w``, ``sigma_b``.
    force_quadrature : bool
        Use Gauss-Hermite even where a closed form exists (for tests).
    quad_order : int or None
        Gauss-Hermite nodes per dimension; ``None`` adapts it to the variances (as in
        :func:`analytic_pair_kernels`).

    Returns
    -------
    nngp_diag, ntk_diag : ndarray, shape (N,)
    """
    quadrature = _uses_quadrature(activation_code, force_quadrature)
    variances, ntk_diag, _, _ = _diag_pieces(X, int(depth), int(activation_code), weight_std,
                                             bias_std, quadrature, quad_order)
    return variances[int(depth)].copy(), ntk_diag


def analytic_pair_kernels(X1, X2, depth, activation_code, weight_std, bias_std, symmetric,
                          quad_order=None, force_quadrature=False):
    """The infinite-width NNGP ``Sigma^{L+1}(X1, X2)`` and NTK ``Theta^{L+1}(X1, X2)``.

    Parameters
    ----------
    X1 : ndarray, shape (N1, d), C-contiguous float64 (validated by the caller)
    X2 : ndarray, shape (N2, d), C-contiguous float64
        ``X1`` itself when ``symmetric``.
    depth : int
        ``L``, number of hidden layers (``>= 0``).
    activation_code : int
        ``_jit_activations.ACTIVATION_CODES[name]``. Closed forms for relu, erf and identity,
        Gauss-Hermite quadrature for the rest.
    weight_std, bias_std : float
        ``sigma_w``, ``sigma_b``.
    symmetric : bool
        ``X2`` is ``X1``: only the upper triangle is computed and mirrored (the result is exactly
        symmetric), and the diagonal uses ``theta = 0`` exactly.
    quad_order : int or None
        Gauss-Hermite nodes per dimension (quadrature activations only). ``None`` (default) adapts
        it to the largest variance, ``_ORDER_BASE + slope * max(s, 1)`` (slope 40, 85 for tanh), which
        keeps the rule within 1e-8 (capped at ``_ORDER_MAX``, with a warning beyond).
    force_quadrature : bool
        Use quadrature even for an activation with a closed form (for tests; never for relu,
        whose kink makes it converge slowly).

    Returns
    -------
    nngp, ntk : ndarray, shape (N1, N2), float64, C-contiguous
    """
    depth = int(depth)
    code = int(activation_code)
    quadrature = _uses_quadrature(code, force_quadrature)
    sw2 = float(weight_std) ** 2
    sb2 = float(bias_std) ** 2
    n_features = X1.shape[1]
    if symmetric or not quadrature:
        var1, ntk_diag, rule, order = _diag_pieces(X1, depth, code, weight_std, bias_std, quadrature,
                                                   quad_order)
    else:
        # one rule for both sets of points: the order the larger of their variances needs
        order = quad_order
        if order is None:
            order = max(_diag_pieces(X, depth, code, weight_std, bias_std, True, None)[3] for X in (X1, X2))
        var1, ntk_diag, rule, order = _diag_pieces(X1, depth, code, weight_std, bias_std, True, order)
    if symmetric:
        var2 = var1
    else:
        var2 = _diag_pieces(X2, depth, code, weight_std, bias_std, quadrature, order or None)[0]
    nodes, weights, lo, hi = rule
    if quadrature:
        wphi1, wdphi1 = _weighted_activations_at_nodes(var1, depth, code, nodes, weights)
    else:
        wphi1 = wdphi1 = np.zeros((0, 0, 0))
    nngp = np.empty((X1.shape[0], X1.shape[0] if symmetric else X2.shape[0]))
    # The input Gram by BLAS, straight into the NNGP output. Symmetric: dsyrk fills only the
    # triangle that is read (the C-order upper triangle is the lower one of the Fortran view
    # nngp.T), half the flops, and skips the strided triangle copy numpy's X @ X.T does after it.
    if symmetric:
        _dsyrk(1.0, X1.T, trans=1, lower=1, c=nngp.T, overwrite_c=1)
    else:
        np.dot(X1, X2.T, out=nngp)
    ntk = np.empty_like(nngp)
    run_in_threads(_pair_rows, nngp, ntk, var1, var2, ntk_diag, sw2 / n_features, sw2, sb2, depth, code,
                    quadrature, bool(symmetric), wphi1, wdphi1, nodes, weights, lo, hi)
    if symmetric:
        run_in_threads(_mirror_rows, nngp, ntk)
    return nngp, ntk


__all__ = ["analytic_pair_kernels", "analytic_diag", "gauss_hermite_rule", "gauss_hermite_expectations",
           "CLOSED_FORM_CODES"]
