"""Patches of a convolution and their transpose, as numba kernels.

Private: :mod:`ntksolve.nets.conv` calls these. A 1-D signal is an image of height 1, so both
dimensionalities share these kernels. Activations are channels-last, ``h[i, y, x, c]``; a
patch row lists its ``C * kh * kw`` entries channel-major, ``(c, dy, dx)``, the order of a weight
``W[c_out, c, dy, dx]`` (PyTorch's) read row-major, so a convolution is one GEMM of the patches.
Entries outside the image are the zero padding.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def im2col(h, kh, kw, sh, sw, ph, pw, oh, ow, out):
    """``out[i, y * ow + x, (c * kh + dy) * kw + dx] = h[i, sh y - ph + dy, sw x - pw + dx, c]``.

    Parameters
    ----------
    h : (N, H, W, C) array
    kh, kw, sh, sw, ph, pw, oh, ow : int
        Kernel size, stride, leading padding and output size of each spatial axis.
    out : (N, oh * ow, C * kh * kw) array, written whole (zeros where the patch leaves the image)
    """
    N, H, W, C = h.shape
    for i in range(N):
        for y in range(oh):
            for x in range(ow):
                row = y * ow + x
                for c in range(C):
                    for dy in range(kh):
                        yy = sh * y - ph + dy
                        base = (c * kh + dy) * kw
                        if yy < 0 or yy >= H:
                            for dx in range(kw):
                                out[i, row, base + dx] = 0.0
                            continue
                        for dx in range(kw):
                            xx = sw * x - pw + dx
                            out[i, row, base + dx] = h[i, yy, xx, c] if 0 <= xx < W else 0.0


@njit(cache=True)
def col2im_hwc(cols, kh, kw, sh, sw, ph, pw, oh, ow, out):
    """The transpose of :func:`im2col` for patches whose entries are ordered ``(dy, dx, c)``
    (channels fastest, as ``out``; the weight's columns reordered to match), so that the innermost
    loop is contiguous on both sides: ``out[i, ...] = sum`` of every patch entry at its pixel.

    Parameters
    ----------
    cols : (M, oh * ow, kh * kw * C) array
    out : (M, H, W, C) array, overwritten
    """
    M, H, W, C = out.shape
    out[...] = 0.0
    for i in range(M):
        for y in range(oh):
            for x in range(ow):
                row = y * ow + x
                for dy in range(kh):
                    yy = sh * y - ph + dy
                    if yy < 0 or yy >= H:
                        continue
                    for dx in range(kw):
                        xx = sw * x - pw + dx
                        if xx < 0 or xx >= W:
                            continue
                        base = (dy * kw + dx) * C
                        for c in range(C):
                            out[i, yy, xx, c] += cols[i, row, base + c]
