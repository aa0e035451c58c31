"""Threads over ``nogil`` row kernels, and the blocked mirror of a symmetric pair of outputs.

Private: the analytic kernels (:mod:`ntksolve._jit.analytic`, :mod:`ntksolve._jit.network_analytic`),
the scikit-learn kernels' gradients (:mod:`ntksolve._jit.gp`) and the network layers' protocol run
their row kernels through :func:`run_in_threads`; a symmetric case computes the upper triangles
only, and :func:`_mirror_rows` copies them onto the lower ones, tile by tile.
"""

from __future__ import annotations

import concurrent.futures

import numba
from numba import njit

#: Tile edge of the blocked copy that mirrors the upper triangle (two 64 x 64 float64 tiles = 64 KiB).
_MIRROR_TILE = 64


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


__all__ = ["run_in_threads"]
