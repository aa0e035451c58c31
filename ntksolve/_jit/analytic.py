"""Infinite-width NNGP and NTK of a fully connected network, as numba kernels over pairs of points.

Private: the drivers of :mod:`ntksolve.kernels.analytic` validate, build the rules
(:mod:`ntksolve.kernels._analytic_rules`) and call the per-point recursion
(:mod:`ntksolve._jit.analytic_points`) and the row kernel :func:`_pair_rows` and
:func:`ntksolve._jit.threads._mirror_rows` through :func:`ntksolve._jit.threads.run_in_threads`.
The pair kernel is :mod:`ntksolve._jit.analytic_block`; the layer maps are those of
:mod:`ntksolve._jit.expectations` (and, for the pairs of tanh, sigmoid and softplus, the Hermite
series of :mod:`ntksolve._jit.hermite_series`).

The recursion is the one of ``docs/conventions.md`` ("The analytic NTK and NNGP"; Lee et al. 2018
for the NNGP, Jacot et al. 2018 and Arora et al. 2019, eq. (9)-(10), for the NTK)::

    Sigma^1   = sigma_w^2 <x, x'> / d + sigma_b^2                Theta^1 = Sigma^1
    Sigma^l+1 = sigma_w^2 E[phi(u) phi(v)] + sigma_b^2
    Sdot^l+1  = sigma_w^2 E[phi'(u) phi'(v)]
    Theta^l+1 = Sigma^l+1 + Sdot^l+1 * Theta^l

with ``(u, v) ~ N(0, [[S11, S12], [S12, S22]])`` the previous layer's covariances.

Identical inputs give exactly the diagonal: a point's variances follow the one-dimensional
recursion (the same maps at ``S11 = S22 = S12``), and every map is the very same code for a pair
and for a point, so a pair whose covariances are equal at some layer stays equal to the point's
values from there on, bit for bit. At the first layer ``ntksolve.kernels.analytic.input_gram``
writes the squared norm (the diagonal's own number, :func:`ntksolve._jit.analytic_points._squared_norms`) for every pair of
identical rows, which a BLAS dot product need not reproduce to the last bit.

How it is made fast:

- The input Gram ``X1 X2^T`` is one BLAS call (``O(N1 N2 d)``), written straight into the NNGP output.
- The per-point variances are precomputed in ``O(N L)``; a pair then only carries its covariance
  ``Sigma^l(x, x')`` and ``Theta^l(x, x')`` through the layers.
- Python threads over a ``nogil`` kernel, each transforming its rows of the outputs in place, a
  cache-sized block of columns at a time through all layers, so no ``N x N`` intermediate is ever
  made. In the symmetric case only the upper triangle is computed, rows paired as ``(i, N-1-i)``
  so that every thread gets the same amount of work, and a blocked copy mirrors it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ntksolve._jit.analytic_block import _row_block
from ntksolve._jit.analytic_points import _COLUMN_BLOCK, CLOSED, GAUSS_HERMITE, MIXTURE, SERIES
from ntksolve._jit.network_analytic import thread_rows
from ntksolve._jit.threads import run_in_threads


@njit(cache=True, nogil=True)
def _pair_rows(
    nngp,
    ntk,
    var1,
    var2,
    ntk_diag,
    scale,
    sw2,
    sb2,
    depth,
    code,
    prm,
    method,
    symmetric,
    wphi1,
    wdphi1,
    nodes,
    weights,
    lo,
    hi,
    ser1,
    ser2,
    start,
    step,
):
    """Turn the Gram in ``nngp`` into the NNGP and NTK, in place, for rows ``start::step``.

    Called by :func:`run_in_threads` with ``step`` threads, each on its own rows (``nogil``, so
    the threads run truly in parallel). Symmetric case: only ``j > i`` is computed, rows paired
    ``(p, N-1-p)`` so that every ``p`` carries ``N - 1`` pairs of points and a strided split
    balances the threads; the diagonal is the per-point recursion. (A ``prange`` loop here
    cost seconds of compilation for a three-line driver; Python threads over a ``nogil`` kernel
    cost none, and do not spin against OpenBLAS's threads between calls.) Each row goes a
    cache-sized block of columns at a time through :func:`ntksolve._jit.analytic_block._row_block`.

    Parameters
    ----------
    nngp : ndarray, shape (N1, N2)
        On entry the input Gram of :func:`input_gram`; on exit the NNGP ``Sigma^{L+1}``
        (symmetric case: the upper triangle, mirrored afterwards by :func:`ntksolve._jit.threads._mirror_rows`).
    ntk : ndarray, shape (N1, N2)
        Output, the NTK ``Theta^{L+1}``.
    var1, var2 : ndarray, shapes (depth + 1, N1), (depth + 1, N2)
    ntk_diag : ndarray, shape (N1,)
        Diagonal NTK (used when ``symmetric``).
    scale, sw2, sb2 : float
    depth, code : int
    prm : (float, float)
    method : int
    symmetric : bool
    wphi1, wdphi1 : ndarray, shape (depth, N1, n) or (0, 0, 0)
    nodes, weights : ndarray, shape (n,)
    lo, hi : ndarray of int64, shape (n,)
    ser1, ser2 : tuple
        Series pieces (:func:`ntksolve._jit.analytic_block._row_block`).
    start, step : int
        This thread's rows (or row pairs): ``start, start + step, ...``.
    """
    n1, n2 = nngp.shape
    # per-thread scratch of the series (a block's worth), allocated once: a large array per block
    # would be a fresh mmap and its page faults every time
    t_cap = ser1[0].shape[1] if method == SERIES else 0
    rows = _COLUMN_BLOCK if method == SERIES else 0
    work = (np.empty((8, rows)), np.empty((t_cap, rows)), np.empty((2, rows)))
    rule = (scale, sw2, sb2, depth, code, prm, method, wphi1, wdphi1, nodes, weights, lo, hi, ser1, ser2)
    for i, j_start in thread_rows(n1, symmetric, start, step):
        if symmetric:  # the diagonal from the per-point recursion, then j > i
            nngp[i, i] = var1[depth, i]
            ntk[i, i] = ntk_diag[i]
            j_start = i + 1
        # blocks end on multiples of the block, as the tiles of a Network's kernels do: the series
        # picks its terms by the pairs of a block, and a Network equal to this MLP gets its numbers
        j0 = j_start
        while j0 < n2:
            j1 = min((j0 // _COLUMN_BLOCK + 1) * _COLUMN_BLOCK, n2)
            _row_block(nngp, ntk, i, j0, j1, var1, var2, rule, work)
            j0 = j1


__all__ = ["run_in_threads", "CLOSED", "MIXTURE", "GAUSS_HERMITE", "SERIES"]
