"""The arithmetic of the empirical NTK of an MLP: a block's features, Gram products, layer terms.

Private; :mod:`ntksolve.kernels.empirical` validates, guards memory and tiles, then calls
:func:`features` per block of inputs and :func:`tile_into` per tile. Per tile the kernel is the
layer sum of ``docs/conventions.md``::

    Theta_ab(x, x') = sum_{l=1}^{L+1} <delta^l_a(x), delta^l_b(x')> * (c_l <h^l-1(x), h^l-1(x')> + beta_l)

All FLOPs but a few percent are BLAS products: the forward ``h W^T`` and backward ``delta W``
GEMMs, and two Gram products per layer. The work is split between ``workers`` Python threads, each
calling BLAS single-threaded (:func:`ntksolve._blas.blas_workers`), rather than handed to BLAS's own
threads call by call:

- the features: each thread runs the forward and backward pass over its own rows of the block,
  writing into row blocks of shared arrays, so the elementwise passes between the GEMMs (bias,
  activation, derivatives; the ``nogil`` kernels of ``ntksolve._jit.empirical``) run on every core;
- the layer terms: each thread computes a whole layer's Gram products (one SYRK each for a symmetric
  tile, which OpenBLAS threads poorly, one GEMM otherwise) while the calling thread adds the finished
  layers into the tile in layer order, so that the result does not depend on which thread finished
  first.

``docs/scaling.md`` gives the measured fraction of the machine's GEMM rate.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np

from ntksolve import _config
from ntksolve._blas import blas_workers
from ntksolve._jit import empirical as _jit
from ntksolve.nets.backprop import backward
from ntksolve.nets.mlp import MLP, forward


def _row_blocks(n_rows: int, workers: int):
    """At most ``workers`` contiguous row slices of about equal size, none under
    ``_config.EMPIRICAL_THREAD_MIN_ROWS`` rows (a single slice: no threads)."""
    n = max(1, min(workers, n_rows // max(1, _config.EMPIRICAL_THREAD_MIN_ROWS)))
    edges = np.linspace(0, n_rows, n + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def features(net: MLP, params, X: np.ndarray, workers: int = 1):
    """Forward and backward pass over a block of inputs.

    Parameters
    ----------
    net : MLP
    params : list of (W, b), validated
    X : ndarray, shape (B, d), C-contiguous, of the parameters' dtype
    workers : int, default 1
        Threads to split the rows between (fewer for a small block).

    Returns
    -------
    f : (B, k) outputs
    hs : list of L+1 arrays, ``hs[l-1] = h^{l-1}`` of shape (B, n_{l-1})
    deltas : list of L arrays, ``deltas[l-1] = delta^l`` of shape (B, k, n_l), l = 1 ... L
        (``delta^{L+1}`` is the identity and is never stored)
    """
    blocks = _row_blocks(X.shape[0], workers)
    if len(blocks) == 1:
        f, hs, dphis = forward(net, params, X, keep=True)
        deltas = [None] * net.depth
        for l, delta in backward(net, params, dphis):
            if l <= net.depth:
                deltas[l - 1] = delta
        return f, hs, deltas
    B, k, dt = X.shape[0], net.n_outputs, X.dtype
    widths = net.widths(X.shape[1])[1:-1]
    hs = [X] + [np.empty((B, n), dtype=dt) for n in widths]
    dphis = [np.empty((B, n), dtype=dt) for n in widths]
    deltas = [np.empty((B, k, n), dtype=dt) for n in widths]
    f = np.empty((B, k), dtype=dt)

    def rows(r):
        out = ([h[r] for h in hs[1:]], [p[r] for p in dphis])
        f[r], _, dp = forward(net, params, X[r], keep=True, out=out)
        for _ in backward(net, params, dp, out=[g[r] for g in deltas]):
            pass

    with blas_workers(len(blocks)) as pool:
        for fut in [pool.submit(rows, r) for r in blocks]:
            fut.result()
    return f, hs, deltas


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


class _Term:
    """One layer's term of a tile: its Gram products into two buffers, then its combine."""

    __slots__ = ("l", "hI", "hJ", "dI", "dJ", "c", "beta")

    def __init__(self, l, hI, hJ, dI, dJ, c, beta):
        self.l, self.hI, self.hJ, self.dI, self.dJ, self.c, self.beta = l, hI, hJ, dI, dJ, c, beta

    def grams(self, Gh, Gd, trace: bool, lower: bool) -> None:
        gram(self.hI, self.hJ, out=Gh, lower=lower)
        if self.dI is None:  # the readout: its delta Gram is the identity
            return
        BI, k, n = self.dI.shape
        if trace:
            BJ = BI if self.dJ is None else self.dJ.shape[0]
            gram(self.dI.reshape(BI, k * n), None if self.dJ is None else self.dJ.reshape(BJ, k * n), out=Gd, lower=lower)
        else:
            gram(self.dI.reshape(BI * k, n), None if self.dJ is None else self.dJ.reshape(-1, n), out=Gd, lower=lower)

    def combine(self, theta, Gh, Gd, k: int, trace: bool, lower: bool) -> None:
        dt = theta.dtype.type
        has_delta = self.dI is not None
        if trace:
            # the mean over outputs: (1/k) <delta_I, delta_J>, the 1/k folded into (c, beta)
            scale = 1.0 / k if has_delta else 1.0
            _jit.combine_traced(theta, Gd, Gh, dt(self.c * scale), dt(self.beta * scale), lower, has_delta)
        else:
            _jit.combine_full(theta, Gd, Gh, dt(self.c), dt(self.beta), lower, has_delta)


def _terms(net: MLP, coefs, FI, FJ):
    _, hsI, dsI = FI
    hsJ, dsJ = (None, None) if FJ is None else (FJ[1], FJ[2])
    L = net.depth
    return [
        _Term(
            l,
            hsI[l - 1],
            None if FJ is None else hsJ[l - 1],
            None if l == L + 1 else dsI[l - 1],
            None if (FJ is None or l == L + 1) else dsJ[l - 1],
            *coefs[l - 1],
        )
        for l in range(1, L + 2)
    ]


def _accumulate_tile(net, coefs, theta, FI, FJ, trace: bool, lower: bool, workers: int) -> None:
    """Add every layer's term of the NTK between two blocks of inputs into ``theta``.

    ``FJ is None`` means the diagonal tile of a symmetric kernel (``lower`` must be True): its Gram
    products are then computed on the lower triangle only.
    """
    k = net.n_outputs
    BI = FI[1][0].shape[0]
    BJ = BI if FJ is None else FJ[1][0].shape[0]
    gd_shape = (BI, BJ) if trace else (BI * k, BJ * k)
    terms = _terms(net, coefs, FI, FJ)
    itemsize = theta.dtype.itemsize
    # buffers of Gram pairs in flight: one pair per worker plus the one being added in
    inflight = workers + 1
    pair_bytes = itemsize * (BI * BJ + int(np.prod(gd_shape)))
    if workers > 1 and (inflight * pair_bytes > _config.EMPIRICAL_GRAM_BYTES or min(BI, BJ) < _config.EMPIRICAL_THREAD_MIN_ROWS):
        workers, inflight = 1, 1
    # fresh arrays of this size are page-faulted anew: a few buffers serve every layer
    free = [(np.empty((BI, BJ), dtype=theta.dtype), np.empty(gd_shape, dtype=theta.dtype)) for _ in range(min(inflight, len(terms)))]
    if workers == 1:
        Gh, Gd = free[0]
        for t in terms:
            t.grams(Gh, Gd, trace, lower)
            t.combine(theta, Gh, Gd, k, trace, lower)
        return
    with blas_workers(workers) as pool:
        pending = collections.deque()
        todo = iter(terms)

        def submit():
            t = next(todo, None)
            if t is not None:
                bufs = free.pop()
                pending.append((t, bufs, pool.submit(t.grams, *bufs, trace, lower)))

        for _ in range(len(free)):
            submit()
        while pending:
            t, bufs, fut = pending.popleft()
            fut.result()
            t.combine(theta, *bufs, k, trace, lower)
            free.append(bufs)
            submit()


def tile_into(net, coefs, theta, box, FI, FJ, trace, lower, workers: int = 1) -> None:
    """Accumulate one tile of ``theta``; a tile that is not the whole array is built in a
    contiguous buffer first, so the jitted kernels are compiled for one memory layout only."""
    I0, I1, J0, J1 = box
    if I1 - I0 == theta.shape[0] and J1 - J0 == theta.shape[1]:
        _accumulate_tile(net, coefs, theta, FI, FJ, trace, lower, workers)
        return
    buf = np.zeros((I1 - I0, J1 - J0) + theta.shape[2:], dtype=theta.dtype)
    _accumulate_tile(net, coefs, buf, FI, FJ, trace, lower, workers)
    theta[I0:I1, J0:J1] = buf


__all__ = ["features", "gram", "tile_into"]
