"""Numba kernels of the layer norm's passes: one pass over each row (private).

:class:`ntksolve.nets.normalization.LayerNorm` calls them on 2-D views, rows = examples (times
positions), columns = the normalised features; the formulas are in its module docstring.
"""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True)
def layer_norm_forward(x, eps, xhat, r):
    """``xhat = (x - mean) r`` and ``r = 1 / sqrt(var + eps)`` row by row (``var`` biased).

    Parameters
    ----------
    x : (R, n) array
    eps : scalar
    xhat : (R, n) output array
    r : (R,) output array
    """
    R, n = x.shape
    for i in range(R):
        s = 0.0
        for f in range(n):
            s += x[i, f]
        mean = s / n
        q = 0.0
        for f in range(n):
            c = x[i, f] - mean
            q += c * c
        ri = 1.0 / math.sqrt(q / n + eps)
        r[i] = ri
        for f in range(n):
            xhat[i, f] = (x[i, f] - mean) * ri


@njit(cache=True)
def layer_norm_backward(g, xhat, r, out):
    """``out[i, a] = r_i (g[i, a] - mean(g[i, a]) - xhat_i mean(g[i, a] xhat_i))`` (means over the features).

    Parameters
    ----------
    g : (R, m, n) array, the signal at the output (already times ``gamma`` for the affine layer)
    xhat : (R, n) array
    r : (R,) array
    out : (R, m, n) output array
    """
    R, m, n = g.shape
    for i in range(R):
        ri = r[i]
        for a in range(m):
            s = 0.0
            t = 0.0
            for f in range(n):
                s += g[i, a, f]
                t += g[i, a, f] * xhat[i, f]
            s /= n
            t /= n
            for f in range(n):
                out[i, a, f] = ri * (g[i, a, f] - s - xhat[i, f] * t)
