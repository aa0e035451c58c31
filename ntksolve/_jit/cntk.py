"""The infinite-width kernels of a convolutional prefix (the CNTK, Arora et al. 2019), per pair of inputs.

Private: :mod:`ntksolve.kernels.cntk` builds the operation tables and calls these. A prefix is a
list of operations on spatial covariances, the first a convolution of the inputs, ending in a
global average pool or a flatten. For a pair of inputs ``(x, x')`` the state is the covariance of
the pre-activations (or features) at every pair of positions, ``K[p, q]``, and the NTK ``T[p, q]``:

- convolution (kernel ``kh x kw``, ``K_k = kh kw`` taps, stride, zero padding)::

      K'[P, Q] = sw2 / K_k sum_o K[s P + o, s Q + o] + sb2      (a padded position contributes 0)
      T'[P, Q] = sw2 / K_k sum_o T[s P + o, s Q + o] + K'[P, Q]

  and on the inputs ``K[p, q] = <x_p, x'_q> / C_in``, ``T = 0``;
- activation: ``K[p, q] <- E[phi(u) phi(v)]``, ``T[p, q] <- T[p, q] E[phi'(u) phi'(v)]`` with
  ``(u, v)`` of variances ``K_x[p, p]``, ``K_x'[q, q]`` (each input's own, computed first along the
  diagonal) and covariance ``K[p, q]``;
- global average pooling: the mean of ``K`` and ``T`` over all ``(p, q)``; flatten: over ``p = q``.

A convolution maps the diagonal ``p = q`` to itself (the same tap on both sides), so without
pooling only the ``S`` diagonal entries are kept per pair; with pooling all ``S^2``. The layer
maps are those of the dense recursion (:mod:`ntksolve._jit.expectations`), so they round alike.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ntksolve._jit.activations import RELU
from ntksolve._jit.expectations import _relu_expectations, closed_form_expectations

#: Operation kinds of the table.
CONV, ACT = 0, 1
#: Columns of the geometry table: input grid, kernel, stride, leading padding, output grid.
GEO_H, GEO_W, GEO_KH, GEO_KW, GEO_SH, GEO_SW, GEO_PH, GEO_PW, GEO_OH, GEO_OW = range(10)


@njit(cache=True, inline="always", error_model="numpy")
def _conv_full(K, T, t_zero, Kn, Tn, g, sw2, sb2):
    """One convolution of the full ``S x S`` state (``K``, ``T`` flat, ``H W`` per side) into ``Kn``, ``Tn``."""
    H, W, kh, kw, sh, sw, ph, pw, oh, ow = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9]
    S, So = H * W, oh * ow
    c = sw2 / (kh * kw)
    for y in range(oh):
        for x in range(ow):
            P = y * ow + x
            for y2 in range(oh):
                for x2 in range(ow):
                    Q = y2 * ow + x2
                    acc = 0.0
                    acct = 0.0
                    for dy in range(kh):
                        a = sh * y - ph + dy
                        b = sh * y2 - ph + dy
                        if a < 0 or a >= H or b < 0 or b >= H:
                            continue
                        for dx in range(kw):
                            u = sw * x - pw + dx
                            v = sw * x2 - pw + dx
                            if u < 0 or u >= W or v < 0 or v >= W:
                                continue
                            idx = (a * W + u) * S + b * W + v
                            acc += K[idx]
                            if not t_zero:
                                acct += T[idx]
                    kv = c * acc + sb2
                    Kn[P * So + Q] = kv
                    Tn[P * So + Q] = c * acct + kv


@njit(cache=True, inline="always", error_model="numpy")
def _conv_diag(K, T, t_zero, Kn, Tn, g, sw2, sb2):
    """One convolution of the diagonal state (``S`` entries) into ``Kn``, ``Tn``."""
    H, W, kh, kw, sh, sw, ph, pw, oh, ow = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9]
    c = sw2 / (kh * kw)
    for y in range(oh):
        for x in range(ow):
            acc = 0.0
            acct = 0.0
            for dy in range(kh):
                a = sh * y - ph + dy
                if a < 0 or a >= H:
                    continue
                for dx in range(kw):
                    u = sw * x - pw + dx
                    if u < 0 or u >= W:
                        continue
                    acc += K[a * W + u]
                    if not t_zero:
                        acct += T[a * W + u]
            kv = c * acc + sb2
            Kn[y * ow + x] = kv
            Tn[y * ow + x] = c * acct + kv


@njit(cache=True, inline="always", error_model="numpy")
def _act_full(K, T, S, v1, v2, code, prm):
    """The activation map on the full state; ``v1``, ``v2`` the two inputs' variances (``S`` each)."""
    if code == RELU:  # one loop per activation, so that it vectorises
        for p in range(S):
            a = v1[p]
            for q in range(S):
                e, ed = _relu_expectations(a, v2[q], K[p * S + q])
                K[p * S + q] = e
                T[p * S + q] *= ed
    else:
        for p in range(S):
            a = v1[p]
            for q in range(S):
                e, ed = closed_form_expectations(code, prm, a, v2[q], K[p * S + q])
                K[p * S + q] = e
                T[p * S + q] *= ed


@njit(cache=True, inline="always", error_model="numpy")
def _act_diag(K, T, S, v1, v2, code, prm):
    for p in range(S):
        e, ed = closed_form_expectations(code, prm, v1[p], v2[p], K[p])
        K[p] = e
        T[p] *= ed


@njit(cache=True, error_model="numpy")
def _input_gram(x1, x2, C, S, full, K):
    """``K[p, q] = <x1_p, x2_q> / C`` (all pairs, or ``p = q`` only), inputs flat ``(S C,)``."""
    inv = 1.0 / C
    if full:
        for p in range(S):
            for q in range(S):
                acc = 0.0
                for c in range(C):
                    acc += x1[p * C + c] * x2[q * C + c]
                K[p * S + q] = acc * inv
    else:
        for p in range(S):
            acc = 0.0
            for c in range(C):
                acc += x1[p * C + c] * x2[p * C + c]
            K[p] = acc * inv


@njit(cache=True, error_model="numpy")
def _pair(x1, x2, v1, v2, kinds, geo, wb, codes, prms, C0, S0, full, bufs):
    """``(nngp, ntk)`` of one pair after the prefix; ``v1``, ``v2`` ``(n_ops, S_max)`` the inputs'
    variances before each operation (read at activations only); ``bufs`` ``(4, S_max^2)`` scratch."""
    K, T, Kn, Tn = bufs[0], bufs[1], bufs[2], bufs[3]
    _input_gram(x1, x2, C0, S0, full, K)
    S = S0
    t_zero = True
    for o in range(kinds.shape[0]):
        if kinds[o] == CONV:
            g = geo[o]
            if full:
                _conv_full(K, T, t_zero, Kn, Tn, g, wb[o, 0], wb[o, 1])
            else:
                _conv_diag(K, T, t_zero, Kn, Tn, g, wb[o, 0], wb[o, 1])
            K, Kn = Kn, K
            T, Tn = Tn, T
            t_zero = False
            S = g[GEO_OH] * g[GEO_OW]
        else:
            if full:
                _act_full(K, T, S, v1[o], v2[o], codes[o], (prms[o, 0], prms[o, 1]))
            else:
                _act_diag(K, T, S, v1[o], v2[o], codes[o], (prms[o, 0], prms[o, 1]))
    n = S * S if full else S
    k = 0.0
    t = 0.0
    for p in range(n):
        k += K[p]
        t += T[p]
    return k / n, t / n


@njit(cache=True, nogil=True, error_model="numpy")
def variances(X, kinds, geo, wb, codes, prms, C0, S0, s_max, out, start, step):
    """Each input's own variances before every operation (its diagonal state), into
    ``out`` ``(N, n_ops, s_max)``: every ``step``-th input from ``start``."""
    bufs = np.empty((4, s_max), dtype=np.float64)
    for i in range(start, X.shape[0], step):
        K, T, Kn, Tn = bufs[0], bufs[1], bufs[2], bufs[3]
        _input_gram(X[i], X[i], C0, S0, False, K)
        S = S0
        t_zero = True
        for o in range(kinds.shape[0]):
            for p in range(S):
                out[i, o, p] = K[p]
            if kinds[o] == CONV:
                _conv_diag(K, T, t_zero, Kn, Tn, geo[o], wb[o, 0], wb[o, 1])
                K, Kn = Kn, K
                T, Tn = Tn, T
                t_zero = False
                S = geo[o, GEO_OH] * geo[o, GEO_OW]
            else:
                _act_diag(K, T, S, out[i, o], out[i, o], codes[o], (prms[o, 0], prms[o, 1]))


@njit(cache=True, nogil=True, error_model="numpy")
def pair_rows(X1, X2, V1, V2, symmetric, kinds, geo, wb, codes, prms, C0, S0, s_max, full, nngp, ntk,
              start, step):
    """Rows ``start::step`` of the prefix's ``nngp`` and ``ntk`` ``(N1, N2)``; ``symmetric``:
    ``X2 is X1``, the upper triangle computed and mirrored."""
    n = s_max * s_max if full else s_max
    bufs = np.empty((4, n), dtype=np.float64)
    for i in range(start, X1.shape[0], step):
        j0 = i if symmetric else 0
        for j in range(j0, X2.shape[0]):
            k, t = _pair(X1[i], X2[j], V1[i], V2[j], kinds, geo, wb, codes, prms, C0, S0, full, bufs)
            nngp[i, j] = k
            ntk[i, j] = t
            if symmetric:
                nngp[j, i] = k
                ntk[j, i] = t


@njit(cache=True, nogil=True, error_model="numpy")
def self_pairs(X, V, kinds, geo, wb, codes, prms, C0, S0, s_max, full, out, start, step):
    """``out[i]``: the prefix's NNGP of every ``step``-th input from ``start`` with itself."""
    n = s_max * s_max if full else s_max
    bufs = np.empty((4, n), dtype=np.float64)
    for i in range(start, X.shape[0], step):
        out[i] = _pair(X[i], X[i], V[i], V[i], kinds, geo, wb, codes, prms, C0, S0, full, bufs)[0]
