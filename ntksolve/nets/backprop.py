"""The one backward pass of the network, shared by the empirical NTK, the Jacobian and real training.

With ``g^{L+1}`` a seed of shape ``(B, m, k)`` (``m`` vectors per input to pull back)::

    g^l = ws_{l+1} (g^{l+1} W^{l+1}) * phi'(z^l)        (B, m, n_l),  l = L ... 1

where ``ws_{l+1}`` is layer ``l+1``'s forward weight scale. The seed ``I_k`` (``seed=None``) gives
the per-output deltas ``delta^l_a = df_a/dz^l`` of the NTK and the Jacobian; the seed ``r[:, None, :]``
gives ``g^l = d(sum_i <r_i, f(x_i)>)/dz^l``, whose products with the layer inputs are the gradient
of the loss (``r = (f - y) / (Nk)``). The parameterisation does not enter here: it only scales the
products (:class:`~ntksolve.nets.layers.LayerScales`).

Each product is one BLAS GEMM (numpy's) and each derivative one jitted in-place pass.
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np

from ntksolve._jit import empirical as _jit


def backward(
    net, params, dphis, seed: Optional[np.ndarray] = None, *, out=None
) -> Iterator[Tuple[int, Optional[np.ndarray]]]:
    """Pull ``seed`` back through the network, top layer first.

    Parameters
    ----------
    net : MLP
    params : list of (W, b)
    dphis : list of ndarray
        ``[phi'(z^1), ..., phi'(z^L)]``, each (B, n_l), from :func:`~ntksolve.nets.mlp.forward`.
    seed : ndarray, shape (B, m, k), optional
        ``g^{L+1}``; ``None`` is the identity ``I_k`` for every input (``m = k``), which is never
        formed.
    out : list of ndarray, optional
        C-contiguous arrays to write ``g^1 ... g^L`` into instead of fresh ones, ``out[l-1]`` of
        shape (B, m, n_l) in the dtype of ``dphis`` (row blocks of larger arrays, so that threads
        can fill one each).

    Yields
    ------
    l : int
        The layer, ``L+1`` down to ``1``.
    g : ndarray, shape (B, m, n_l)
        ``g^l``; for ``l = L+1`` the seed itself (``None`` when ``seed`` is ``None``).
        ``g^{l-1}`` is computed before ``g^l`` is yielded, so the consumer may update ``W^l`` in
        place on receiving it (gradient descent does).
    """
    L = len(dphis)
    scales = net.scales(params[0][0].shape[1])
    g = seed
    for l in range(L + 1, 0, -1):
        below = None
        if l > 1:
            W = params[l - 1][0]  # W^l, (n_l, n_{l-1})
            dphi = dphis[l - 2]  # phi'(z^{l-1}), (B, n_{l-1})
            ws = dphi.dtype.type(scales[l - 1].weight)
            buf = None if out is None else out[l - 2]
            if g is None:
                # the identity seed: delta^L[i, a, :] = ws W^{L+1}[a, :] phi'(z^L(x_i)), one pass
                below = np.multiply(dphi[:, None, :], (ws * W)[None, :, :], out=buf)
            else:
                B, m, n = g.shape
                flat = None if buf is None else buf.reshape(B * m, W.shape[1])
                below = np.dot(g.reshape(B * m, n), W, out=flat).reshape(B, m, W.shape[1])
                _jit.scale_by_deriv(below, dphi, ws)
        yield l, g
        g = below


__all__ = ["backward"]
