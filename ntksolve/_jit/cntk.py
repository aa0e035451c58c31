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

from ntksolve._jit.expectations import activation_step, closed_form_pairs

#: Operation kinds of the table.
CONV, ACT = 0, 1
#: Columns of the geometry table: input grid, kernel, stride, leading padding, output grid.
GEO_H, GEO_W, GEO_KH, GEO_KW, GEO_SH, GEO_SW, GEO_PH, GEO_PW, GEO_OH, GEO_OW = range(10)


@njit(cache=True, inline="always", error_model="numpy")
def _conv_finish(kn, tn, c, sb2, t_zero):
    """``K' = c K + sb2`` and ``T' = c T + K'`` (``T' = K'`` when ``t_zero``), in place over the
    tap sums, ``c = sw2 / (kh kw)``."""
    for e in range(kn.shape[0]):
        kv = c * kn[e] + sb2
        kn[e] = kv
        tn[e] = (c * tn[e] if not t_zero else 0.0) + kv


@njit(cache=True, inline="always", error_model="numpy")
def _taps(src, dst, n_rows, row_in, step_in, row_out, step_out, n_in, n_out, k, s, p):
    """The zero-padded box sum along one axis of a grid: for ``r < n_rows`` and ``o < n_out``,
    ``dst[r row_out + o step_out] = sum_{d < k, 0 <= s o - p + d < n_in} src[r row_in + (s o - p + d) step_in]``
    (taps in order ``d = 0, 1, ...``)."""
    for r in range(n_rows):
        for o in range(n_out):
            acc = 0.0
            for d in range(k):
                u = s * o - p + d
                if 0 <= u < n_in:
                    acc += src[r * row_in + u * step_in]
            dst[r * row_out + o * step_out] = acc


@njit(cache=True, inline="always", error_model="numpy")
def _conv_full(K, T, t_zero, Kn, Tn, A, g, sw2, sb2):
    """One convolution of the full state into ``Kn``, ``Tn`` (``A``: scratch).

    The state of a pair is laid out ``[y, y', x, x']`` (rows of the two images outermost), so the
    box filter separates into a pass along ``x`` (taps ``dx``, on each ``W x W`` block) and one along
    ``y`` (taps ``dy``, whole contiguous blocks added): ``kh + kw`` instead of ``kh kw`` additions per
    entry, vectorised. :func:`_conv_diag` sums in the same order, so the diagonal of a pair with
    itself is the diagonal state to the bit.
    """
    H, W, kh, kw, sh, sw, ph, pw, oh, ow = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9]
    c = sw2 / (kh * kw)
    blk_in, blk = W * W, ow * ow
    for pass_t in range(1 if t_zero else 2):
        src = K if pass_t == 0 else T
        dst = Kn if pass_t == 0 else Tn
        # along x: A[y, y', X, X'] = sum_dx src[y, y', s X - p + dx, s X' - p + dx]
        for e in range(H * H * blk):
            A[e] = 0.0
        for yy in range(H * H):
            bi, bo = yy * blk_in, yy * blk
            for dx in range(kw):
                lo = (pw - dx + sw - 1) // sw if pw > dx else 0
                hi = min(ow, (W - 1 + pw - dx) // sw + 1)
                m = hi - lo
                for X in range(lo, hi):
                    r_in = bi + (sw * X - pw + dx) * W - pw + dx + sw * lo
                    # slices indexed from 0, so that numba drops the wrap-around and LLVM vectorises
                    out = A[bo + X * ow + lo : bo + X * ow + hi]
                    inp = src[r_in : r_in + sw * (m - 1) + 1 : sw]
                    for e in range(out.shape[0]):
                        out[e] += inp[e]
        # along y: dst[Y, Y', :, :] = sum_dy A[s Y - p + dy, s Y' - p + dy, :, :]
        for e in range(oh * oh * blk):
            dst[e] = 0.0
        for Y in range(oh):
            for Y2 in range(oh):
                bo = (Y * oh + Y2) * blk
                for dy in range(kh):
                    a = sh * Y - ph + dy
                    b = sh * Y2 - ph + dy
                    if a < 0 or a >= H or b < 0 or b >= H:
                        continue
                    out = dst[bo : bo + blk]
                    inp = A[(a * H + b) * blk : (a * H + b + 1) * blk]
                    for e in range(out.shape[0]):
                        out[e] += inp[e]
    _conv_finish(Kn[: oh * oh * blk], Tn[: oh * oh * blk], c, sb2, t_zero)


@njit(cache=True, inline="always", error_model="numpy")
def _conv_diag(K, T, t_zero, Kn, Tn, A, g, sw2, sb2):
    """One convolution of the diagonal state (``S`` entries, ``[y, x]``) into ``Kn``, ``Tn``, summed in
    :func:`_conv_full`'s order (``x`` taps, then ``y`` taps)."""
    H, W, kh, kw, sh, sw, ph, pw, oh, ow = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9]
    c = sw2 / (kh * kw)
    for pass_t in range(1 if t_zero else 2):
        src = K if pass_t == 0 else T
        dst = Kn if pass_t == 0 else Tn
        _taps(src, A, H, W, 1, ow, 1, W, ow, kw, sw, pw)  # along x: A[y, X]
        _taps(A, dst, ow, 1, ow, 1, ow, H, oh, kh, sh, ph)  # along y: dst[Y, X]
    _conv_finish(Kn[: oh * ow], Tn[: oh * ow], c, sb2, t_zero)


@njit(cache=True, inline="always", error_model="numpy")
def _act_full(K, T, H, W, v1, v2, code, prm, s1, s2):
    """The activation map on the full state ``[y, y', x, x']``; ``v1``, ``v2`` the two inputs'
    variances (``[y, x]`` each), spread first over the state's layout into ``s1``, ``s2`` so that
    the map is one flat loop (which LLVM vectorises)."""
    n = 0
    for y in range(H):
        for y2 in range(H):
            for x in range(W):
                a = v1[y * W + x]
                for x2 in range(W):
                    s1[n] = a
                    s2[n] = v2[y2 * W + x2]
                    n += 1
    # slices indexed from 0 (as in ntksolve._jit.analytic): numba then drops the negative-index
    # wrap-around, and only then does LLVM vectorise the loops
    k, t, a1, a2 = K[:n], T[:n], s1[:n], s2[:n]
    closed_form_pairs(code, prm, a1, a2, k, t, n, activation_step, 0.0, 0.0)  # one loop per activation


@njit(cache=True, inline="always", error_model="numpy")
def _act_diag(K, T, S, v1, v2, code, prm):
    closed_form_pairs(code, prm, v1, v2, K, T, S, activation_step, 0.0, 0.0)


@njit(cache=True, error_model="numpy")
def _input_gram(a1, a2, C, H, W, full, K):
    """``K = <a1_p, a2_q> / C`` over all pairs (layout ``[y, y', x, x']``) or ``p = q`` only
    (``[y, x]``); inputs flat ``(H W C,)``, channels last."""
    inv = 1.0 / C
    if full:
        for y in range(H):
            for y2 in range(H):
                for x in range(W):
                    p = (y * W + x) * C
                    row = ((y * H + y2) * W + x) * W
                    for u in range(W):
                        q = (y2 * W + u) * C
                        acc = 0.0
                        for c in range(C):
                            acc += a1[p + c] * a2[q + c]
                        K[row + u] = acc * inv
    else:
        for p in range(H * W):
            acc = 0.0
            for c in range(C):
                acc += a1[p * C + c] * a2[p * C + c]
            K[p] = acc * inv


@njit(cache=True)
def _scratch(n):
    """Seven separate arrays of ``n`` (separate allocations: the loops' stores cannot alias)."""
    return (np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n))


@njit(cache=True, error_model="numpy")
def _pair(x1, x2, v1, v2, kinds, geo, wb, codes, prms, C0, full, bufs):
    """``(nngp, ntk)`` of one pair after the prefix; ``v1``, ``v2`` ``(n_ops, S_max)`` the inputs'
    variances before each operation (read at activations only); ``bufs`` seven ``S_max^2`` scratch
    arrays (:func:`_scratch`)."""
    K, T, Kn, Tn, A, s1, s2 = bufs
    H, W = geo[0, GEO_H], geo[0, GEO_W]
    _input_gram(x1, x2, C0, H, W, full, K)
    t_zero = True
    for o in range(kinds.shape[0]):
        if kinds[o] == CONV:
            g = geo[o]
            if full:
                _conv_full(K, T, t_zero, Kn, Tn, A, g, wb[o, 0], wb[o, 1])
            else:
                _conv_diag(K, T, t_zero, Kn, Tn, A, g, wb[o, 0], wb[o, 1])
            K, Kn = Kn, K
            T, Tn = Tn, T
            t_zero = False
            H, W = g[GEO_OH], g[GEO_OW]
        elif full:
            _act_full(K, T, H, W, v1[o], v2[o], codes[o], (prms[o, 0], prms[o, 1]), s1, s2)
        else:
            _act_diag(K, T, H * W, v1[o], v2[o], codes[o], (prms[o, 0], prms[o, 1]))
    n = (H * W) ** 2 if full else H * W
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
    bufs = np.empty((5, s_max), dtype=np.float64)
    for i in range(start, X.shape[0], step):
        K, T, Kn, Tn, A = bufs[0], bufs[1], bufs[2], bufs[3], bufs[4]
        H, W = geo[0, GEO_H], geo[0, GEO_W]
        _input_gram(X[i], X[i], C0, H, W, False, K)
        t_zero = True
        for o in range(kinds.shape[0]):
            for p in range(H * W):
                out[i, o, p] = K[p]
            if kinds[o] == CONV:
                _conv_diag(K, T, t_zero, Kn, Tn, A, geo[o], wb[o, 0], wb[o, 1])
                K, Kn = Kn, K
                T, Tn = Tn, T
                t_zero = False
                H, W = geo[o, GEO_OH], geo[o, GEO_OW]
            else:
                _act_diag(K, T, H * W, out[i, o], out[i, o], codes[o], (prms[o, 0], prms[o, 1]))


@njit(cache=True, nogil=True, error_model="numpy")
def pair_rows(X1, X2, V1, V2, symmetric, kinds, geo, wb, codes, prms, C0, S0, s_max, full, nngp, ntk, start, step):
    """Rows ``start::step`` of the prefix's ``nngp`` and ``ntk`` ``(N1, N2)``; ``symmetric``:
    ``X2 is X1``, the upper triangle computed and mirrored."""
    bufs = _scratch(s_max * s_max if full else s_max)
    for i in range(start, X1.shape[0], step):
        j0 = i if symmetric else 0
        for j in range(j0, X2.shape[0]):
            k, t = _pair(X1[i], X2[j], V1[i], V2[j], kinds, geo, wb, codes, prms, C0, full, bufs)
            nngp[i, j] = k
            ntk[i, j] = t
            if symmetric:
                nngp[j, i] = k
                ntk[j, i] = t


@njit(cache=True, nogil=True, error_model="numpy")
def self_pairs(X, V, kinds, geo, wb, codes, prms, C0, S0, s_max, full, out, start, step):
    """``out[i]``: the prefix's NNGP of every ``step``-th input from ``start`` with itself."""
    bufs = _scratch(s_max * s_max if full else s_max)
    for i in range(start, X.shape[0], step):
        out[i] = _pair(X[i], X[i], V[i], V[i], kinds, geo, wb, codes, prms, C0, full, bufs)[0]
