"""The arithmetic of the empirical NTK of an MLP: a block's features, Gram products, layer terms.

Private; :mod:`ntksolve.kernels.empirical` validates, guards memory and tiles, then calls
:func:`features` per block of inputs and :func:`tile_into` per tile. Per tile the kernel is the
layer sum of ``docs/conventions.md``::

    Theta_ab(x, x') = sum_{l=1}^{L+1} <delta^l_a(x), delta^l_b(x')> * (c_l <h^l-1(x), h^l-1(x')> + beta_l)

All FLOPs but a few percent are BLAS products: the forward ``h W^T`` and backward ``delta W``
GEMMs, and two Gram products per layer. The work is split between ``workers`` Python threads, each
calling BLAS single-threaded (:func:`ntksolve._blas.side_by_side`), rather than handed to BLAS's own
threads call by call:

- the features: each thread runs the forward and backward pass over its own rows of the block,
  writing into row blocks of shared arrays, so the elementwise passes between the GEMMs (bias,
  activation, derivatives; the ``nogil`` kernels of ``ntksolve._jit.empirical``) run on every core;
- the layer terms: the tile is cut into disjoint pieces shared out between the threads, one
  diagonal block (SYRK) and an equal share of the rectangles (GEMM) each
  (:mod:`ntksolve.nets.gram_terms`, which a network's dense layers use too).

The README's performance section gives the measured fraction of the machine's GEMM rate.
"""

from __future__ import annotations

import numpy as np

from ntksolve import _config, _workspace
from ntksolve._blas import side_by_side
from ntksolve.kernels.network_empirical import in_tile
from ntksolve.nets.backprop import backward
from ntksolve.nets.gram_terms import LayerTerm, add_terms, row_parts
from ntksolve.nets.mlp import MLP, forward


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
    B, k, dt = X.shape[0], net.n_outputs, X.dtype
    w = net.widths(X.shape[1])
    widths = w[1:-1]
    # forward and backward GEMMs: 2 B n_{l-1} n_l each way, the backward k times
    flops = 2.0 * B * sum(a * b for a, b in zip(w[:-1], w[1:])) * (1 + k)
    blocks = [slice(a, b) for a, b in row_parts(B, workers if flops >= _config.EMPIRICAL_THREAD_MIN_FLOPS else 1)]
    hs = [X] + [_workspace.empty((B, n), dt) for n in widths]
    dphis = [_workspace.empty((B, n), dt) for n in widths]
    deltas = [_workspace.empty((B, k, n), dt) for n in widths]
    f = np.empty((B, k), dtype=dt)

    def rows(r):
        out = ([h[r] for h in hs[1:]], [p[r] for p in dphis])
        f[r], _, dp = forward(net, params, X[r], keep=True, out=out)
        for _ in backward(net, params, dp, out=[g[r] for g in deltas]):
            pass

    side_by_side(rows, blocks)
    return f, hs, deltas


def _terms(net: MLP, coefs, FI, FJ):
    """The MLP's layer terms of one tile, layer 1 to the readout."""
    _, hsI, dsI = FI
    hsJ, dsJ = (None, None) if FJ is None else (FJ[1], FJ[2])
    L = net.depth
    return [
        LayerTerm(
            hsI[l - 1],
            None if FJ is None else hsJ[l - 1],
            None if l == L + 1 else dsI[l - 1],
            None if (FJ is None or l == L + 1) else dsJ[l - 1],
            *coefs[l - 1],
        )
        for l in range(1, L + 2)
    ]


def tile_into(net, coefs, theta, box, FI, FJ, trace, lower, workers: int = 1) -> None:
    """Accumulate the tile ``box`` of ``theta`` from the features of its two blocks."""
    terms = _terms(net, coefs, FI, FJ)
    in_tile(theta, box, lambda tile: add_terms(tile, terms, trace, lower, workers))


__all__ = ["features", "tile_into"]
