"""The layer terms of the empirical NTK between two blocks of inputs, on threads.

Private. A dense-like layer adds ``<g, g'> (c <h, h'> + beta)`` to a tile of the kernel
(``docs/conventions.md``): two Gram products and one fused elementwise combine. This module is the
one place those products are taken, for the MLP (:mod:`ntksolve.kernels.empirical_terms`) and for a
network's dense layers (:mod:`ntksolve.nets.dense_layers`).

The tile is cut into disjoint pieces shared out between Python threads, each calling BLAS
single-threaded (:func:`ntksolve._blas.side_by_side`), and each thread computes its pieces of every
layer's Gram products and adds them into the same pieces of the tile, layer by layer. For a
symmetric tile each thread gets one diagonal block (a SYRK, which OpenBLAS threads poorly when it
gets the whole product) and an equal share of the rectangles left of the blocks (GEMMs), so every
thread has the same FLOPs with the same mix. No thread reads another's entries, so there is no
barrier between layers, and every entry is the same sum of layers in the same order whatever the
number of threads.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ntksolve import _config, _workspace
from ntksolve._blas import side_by_side
from ntksolve._jit import empirical as _jit


def gram(
    A: np.ndarray, B: Optional[np.ndarray] = None, *, out: Optional[np.ndarray] = None, lower: bool = False
) -> np.ndarray:
    """The Gram product ``A B^T``; with ``B=None`` the symmetric ``A A^T`` at half the FLOPs.

    The one helper behind every Gram matrix of the empirical kernels (the NTK's per-layer products,
    traced and full, in every tile, and the NNGP). By default (``_config.GRAM_BLOCK_ROWS = None``)
    a symmetric product is numpy's ``A @ A.T`` (SYRK), which measured fastest inside the NTK. With a
    block size set, a product of more rows is computed block column by block column, each one GEMM
    ``G[c0:, c0:c1] = A[c0:] A[c0:c1]^T`` written straight into ``G``: only the lower triangle plus
    the diagonal blocks' upper halves are computed, a waste of ``block / N`` over SYRK's FLOPs, at
    GEMM speed (``_config`` gives the figures).

    We stay on numpy's BLAS rather than calling scipy's directly: scipy ships a second OpenBLAS with
    its own thread pool, and alternating between the two pools leaves one pool's threads spinning
    while the other works (about a fifth slower per NTK, measured: see the README).

    Parameters
    ----------
    A : ndarray, shape (N1, m), C-contiguous
    B : ndarray, shape (N2, m), optional
        ``None``: the symmetric Gram of ``A`` (``N2 = N1``).
    out : ndarray, shape (N1, N2), C-contiguous, of ``A``'s dtype, optional
        Written in place (a buffer reused across layers saves a fresh, page-faulted array each).
    lower : bool, default False
        For ``B=None`` only: the entries above the diagonal may be left unset (the caller reads
        ``j <= i`` only); ``False`` mirrors them, so that the result is the whole symmetric matrix.

    Returns
    -------
    G : ndarray, shape (N1, N2)
    """
    N1 = A.shape[0]
    N2 = N1 if B is None else B.shape[0]
    if out is None:
        out = np.empty((N1, N2), dtype=A.dtype)
    if B is not None:
        np.matmul(A, B.T, out=out)
        return out
    nb = _config.GRAM_BLOCK_ROWS
    if nb is None or N1 <= nb:
        np.matmul(A, A.T, out=out)  # numpy recognises A A^T: SYRK, and it fills both triangles
        return out
    for c0 in range(0, N1, nb):
        c1 = min(c0 + nb, N1)
        # one GEMM per block column, its diagonal block included: tall (N - c0 rows), so that both
        # of OpenBLAS's threads get thick panels (block rows, M = nb, measured slower)
        np.matmul(A[c0:], A[c0:c1].T, out=out[c0:, c0:c1])
    if not lower:
        _jit.mirror_lower_traced(out)
    return out


def row_parts(n_rows: int, workers: int):
    """At most ``workers`` contiguous row ranges of about equal size, none under
    ``_config.EMPIRICAL_THREAD_MIN_ROWS`` rows (a single range: no threads)."""
    T = max(1, min(workers, n_rows // max(1, _config.EMPIRICAL_THREAD_MIN_ROWS)))
    edges = (np.arange(T + 1) * n_rows / T).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def pieces(BI: int, BJ: int, workers: int, lower: bool):
    """Each worker's share of a tile, as pieces ``(r0, r1, c0, c1, diagonal)``: rectangles
    ``[r0:r1, c0:c1]`` of GEMM work, and (``diagonal``) lower triangles of square diagonal blocks.

    A whole rectangle is split into equal row ranges. A lower triangle is cut into equal diagonal
    blocks (SYRK), ``_config.GRAM_DIAGONAL_BLOCKS`` per worker and dealt out in turn, and the
    rectangles left of them (GEMM) are shared out by rows, so that every worker gets the same FLOPs
    with the same mix of SYRK and GEMM (the two run at different rates).
    """
    rows = row_parts(BI, workers)
    T = len(rows)
    if not lower:
        return [[(r0, r1, 0, BJ, False)] for r0, r1 in rows]
    blocks = rows if T == 1 else row_parts(BI, T * _config.GRAM_DIAGONAL_BLOCKS)
    shares = [[] for _ in range(T)]
    for b, (r0, r1) in enumerate(blocks):
        shares[b % T].append((r0, r1, r0, r1, True))
    if T == 1:
        return shares
    # the rectangles left of the diagonal blocks: the rows of block b >= 1 are blocks[b][0] wide
    nb = len(blocks)
    cum = np.concatenate([[0], np.cumsum([(r1 - r0) * r0 for r0, r1 in blocks])])
    b, pos = 1, blocks[1][0]  # the next row of rectangle work to hand out
    for worker in range(T):
        goal = cum[-1] * (worker + 1) / T
        while b < nb:
            r0, r1 = blocks[b]
            if cum[b] + (pos - r0) * r0 >= goal - 0.5 * r0:  # the work before row `pos` reaches the goal
                break
            stop = r1 if worker == T - 1 else min(r1, r0 + int(round((goal - cum[b]) / r0)))
            stop = max(stop, pos + 1)
            shares[worker].append((pos, stop, 0, r0, False))
            pos = stop
            if pos >= r1:
                b += 1
                pos = blocks[b][0] if b < nb else BI
    return shares


def _gram_piece(A: np.ndarray, B: Optional[np.ndarray], out: np.ndarray, piece, kk: int) -> None:
    """One piece of the Gram product ``A B^T`` (``B=None``: ``A A^T``) into ``out``; ``kk`` rows of
    ``A`` per input (the full kernel's delta Gram)."""
    r0, r1, c0, c1 = (x * kk for x in piece[:4])
    if piece[4]:
        gram(A[r0:r1], out=out[r0:r1, r0:r1], lower=True)
    else:
        np.matmul(A[r0:r1], (A if B is None else B)[c0:c1].T, out=out[r0:r1, c0:c1])


class LayerTerm:
    """One layer's term ``<g, g'> (c <h, h'> + beta)`` of a tile, piece by piece.

    Parameters
    ----------
    hI, hJ : ndarray, shapes (BI, n_in) and (BJ, n_in); ``hJ=None`` for a diagonal tile
        The layer's inputs on the tile's two blocks.
    dI, dJ : ndarray, shapes (BI, k, n) and (BJ, k, n), or None
        The signals at the layer's output (``dI=None``: the readout, whose signal is the identity).
    c, beta : float
        The layer's :attr:`~ntksolve.nets.layers.LayerScales.ntk_coefficients`.
    """

    __slots__ = ("hI", "hJ", "dI", "dJ", "c", "beta")

    def __init__(self, hI, hJ, dI, dJ, c, beta):
        # contiguous once here, not once per piece (a broadcast signal would be copied each time)
        flat = lambda a: None if a is None else np.ascontiguousarray(a)  # noqa: E731
        self.hI, self.hJ, self.dI, self.dJ, self.c, self.beta = flat(hI), flat(hJ), flat(dI), flat(dJ), c, beta

    def add_piece(self, theta, Gh, Gd, piece, trace: bool) -> None:
        """The Gram products of one piece into the buffers, then that piece of ``theta``: every
        entry it reads or writes is in the piece, so disjoint pieces may run side by side."""
        _gram_piece(self.hI, self.hJ, Gh, piece, 1)
        has_delta = self.dI is not None  # the readout's delta Gram is the identity
        k = 1 if not has_delta else self.dI.shape[1]
        dt = theta.dtype.type
        if trace:
            # the mean over outputs: (1/k) <delta_I, delta_J>, the 1/k folded into (c, beta)
            c, beta, combine, kk = dt(self.c / k), dt(self.beta / k), _jit.combine_traced, 1
            flat = lambda d: None if d is None else d.reshape(d.shape[0], -1)  # noqa: E731
        else:
            c, beta, combine, kk = dt(self.c), dt(self.beta), _jit.combine_full, k
            flat = lambda d: None if d is None else d.reshape(-1, d.shape[2])  # noqa: E731
        if has_delta:
            _gram_piece(flat(self.dI), flat(self.dJ), Gd, piece, kk)
        else:
            Gd = Gh
        r0, r1, c0, c1, diagonal = piece
        combine(theta, Gd, Gh, c, beta, diagonal, has_delta, r0, r1, c0, c1)


def add_terms(theta, terms, trace: bool, lower: bool, workers: int = 1) -> None:
    """Add layer terms of one tile into ``theta``, each entry in the order of ``terms``.

    Parameters
    ----------
    theta : ndarray, shape (BI, BJ) (``trace``) or (BI, BJ, k, k), C-contiguous, accumulated in place
    terms : list of LayerTerm
    trace : bool
        The mean over outputs (``theta`` 2-D) or the full kernel.
    lower : bool
        A diagonal tile of a symmetric kernel (every ``hJ``, ``dJ`` None): its lower triangle only,
        the diagonal blocks' lower halves included.
    workers : int, default 1
        Threads to share the tile between (fewer for a small tile: ``row_parts``).
    """
    BI, BJ = theta.shape[:2]
    k = 1 if trace else theta.shape[2]
    # two Gram buffers serve every layer: fresh arrays of this size are page-faulted anew
    Gh = _workspace.empty((BI, BJ), theta.dtype)
    Gd = _workspace.empty((BI * k, BJ * k), theta.dtype)

    def share(own):
        for t in terms:
            for piece in own:
                t.add_piece(theta, Gh, Gd, piece, trace)

    width = sum(t.hI.shape[1] + (0 if t.dI is None else t.dI.shape[1] * t.dI.shape[2]) for t in terms)
    flops = (1.0 if lower else 2.0) * BI * BJ * width  # SYRK's half of the products on a diagonal tile
    shares = pieces(BI, BJ, workers if flops >= _config.EMPIRICAL_THREAD_MIN_FLOPS else 1, lower)
    if len(shares) == 1:
        share(shares[0])
        return
    side_by_side(share, shares)


__all__ = ["LayerTerm", "add_terms", "gram", "pieces", "row_parts"]
