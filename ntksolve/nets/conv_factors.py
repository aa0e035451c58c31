"""A convolution's backpropagated signal when it factors per channel, and its NTK term.

After a convolution, an element-wise activation, global average pooling and a readout
``Dense``, the signal every output sends back to the convolution is the same local factor
scaled per channel by the readout's weights. :class:`ChannelFactors` carries it in that form, and
:func:`_factored_term` adds its NTK term from one gradient per example instead of one per output.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ChannelFactors(NamedTuple):
    """A signal at a convolution's output that factors per channel,
    ``g[i, a, p, c] = readout[a, c] * local[i, p, c]``: what a readout ``Dense`` after global
    average pooling (and an element-wise activation) sends back (``readout = ws W_out``,
    ``local = phi'(z) / S``). The NTK term then needs one gradient per example and channel instead
    of ``m``: ``<G_a, G'_b> = sum_c readout[a, c] readout[b, c] <H_c, H'_c>``,
    ``H_c = sum_p local[p, c] P_p``.

    Attributes
    ----------
    readout : ndarray, shape (m, channels)
    local : ndarray, shape (B, S, channels)
    """

    readout: np.ndarray
    local: np.ndarray


def _factored_term(theta, coef, R, HI, HJ, trace) -> None:
    """``theta += coef sum_c R[a, c] R[b, c] <HI[i, c], HJ[j, c]>`` (``trace``: the mean over ``a = b``),
    ``HI`` ``(B_I, channels, F)`` (``HJ`` None: ``HI``)."""
    m = R.shape[0]
    if trace:  # sum_a R[a, c]^2 / m folded into both sides: one GEMM over (channel, F)
        w = np.sqrt((R * R).sum(axis=0) * (coef / m))[None, :, None]
        AI = (HI * w).reshape(HI.shape[0], -1)
        theta += np.dot(AI, AI.T if HJ is None else (HJ * w).reshape(HJ.shape[0], -1).T)
        return
    HJ = HI if HJ is None else HJ
    BI, Co, F = HI.shape
    BJ = HJ.shape[0]
    M = (R.T[:, :, None] * R.T[:, None, :]).reshape(Co, m * m)
    M *= coef
    # per-channel Grams (channels, B_I, B_J), then one GEMM against the (channels, m m) outer products
    # of R; m m channels at a time, so that the Grams take no more memory than theta's tile
    step = m * m
    for c0 in range(0, Co, step):
        c1 = min(c0 + step, Co)
        K = np.matmul(HI[:, c0:c1].transpose(1, 0, 2), HJ[:, c0:c1].transpose(1, 2, 0)).reshape(c1 - c0, BI * BJ)
        theta += np.dot(K.T, M[c0:c1]).reshape(BI, BJ, m, m)
