"""Kernels of a :class:`~ntksolve.nets.network.Network` at finite width: empirical NTK, NNGP, Jacobian.

The NTK is the sum over the network's parametrised leaves of their structured terms
(:meth:`~ntksolve.nets.layer_protocol.Layer.ntk_term`: products of the backpropagated signals and
the layers' inputs between two blocks of examples), never the ``N x P`` Jacobian; symmetric kernels
are computed on one triangle of tiles and mirrored, as :func:`ntksolve.kernels.empirical.empirical_ntk`
does for the MLP. A network that is an MLP (:meth:`Network.as_mlp`) runs on the MLP's path.
"""

from __future__ import annotations

import functools
import numbers
from typing import Optional

import numpy as np

from ntksolve import _config
from ntksolve._jit import empirical as _jit
from ntksolve._validation import FloatOverflowError, check_memory
from ntksolve.nets.conv import Conv
from ntksolve.nets.conv_factors import ChannelFactors
from ntksolve.nets.dense_layers import ActivationLayer, DenseLayer
from ntksolve.nets.network import Network, backward, check_network, forward, prepare_inputs
from ntksolve.nets.pooling import GlobalAvgPool


def check_trace(trace) -> bool:
    """``trace`` as a bool; TypeError for anything else (a string such as ``"False"`` is truthy)."""
    if not isinstance(trace, (bool, np.bool_)):
        raise TypeError(
            f"trace must be True or False (True: the mean over outputs, False: the full kernel), got {trace!r}"
        )
    return bool(trace)


def check_no_overflow(arr: np.ndarray, what: str) -> np.ndarray:
    """``arr``, computed from finite inputs and parameters; ValueError naming the fix if it holds a
    NaN or infinity, which only an overflow of its dtype makes there."""
    # a sum is non-finite whenever an entry is, and costs a third of isfinite(); the exact test
    # runs only to rule out an overflow of the sum itself
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(arr.sum()):
            return arr
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise FloatOverflowError(what, arr.dtype, f"contains NaN or infinity ({bad} entries)")
    return arr


def _features(net, params, X):
    f, caches = forward(net, params, X, keep=True)
    signals = backward(net, params, caches)
    _factor_top_conv(net, params, caches, signals)
    return [(leaf, p, (cache, g)) for leaf, p, cache, g in signals]


def _factor_top_conv(net, params, caches, signals) -> None:
    """A network ending ``Conv, [activation,] GlobalAvgPool, Dense``: the identity seed reaches the
    convolution as ``g[i, a, p, c] = ws W_out[a, c] phi'(z[i, p, c]) / S``; its entry of ``signals``
    gets those :class:`~ntksolve.nets.conv_factors.ChannelFactors` (exactly the same signal), whose NTK term
    is ``m`` times cheaper."""
    layers = net.layers
    if len(layers) < 3 or not isinstance(layers[-1], DenseLayer) or not isinstance(layers[-2], GlobalAvgPool):
        return
    act = isinstance(layers[-3], ActivationLayer)
    ci = len(layers) - 3 - act
    if ci < 0 or not isinstance(layers[ci], Conv) or len(signals) < 2 or signals[1][0] is not layers[ci]:
        return
    W = params[-1][0]
    R = W * W.dtype.type(layers[-1].scales(caches[-1].shape[1:]).weight)
    leaf, p, cache, _ = signals[1]
    B, S = cache.cols.shape[:2]
    local = (
        caches[-3].reshape(B, S, -1) * W.dtype.type(1.0 / S)
        if act
        else np.full((B, S, W.shape[1]), 1.0 / S, dtype=W.dtype)
    )
    signals[1] = (leaf, p, cache, ChannelFactors(R, local))


def _accumulate(theta, FI, FJ, trace, lower):
    for n, (leaf, p, I) in enumerate(FI):
        leaf.ntk_term(p, I, None if FJ is None else FJ[n][2], theta, trace, lower)


def in_tile(theta, box, add) -> None:
    """``add(tile)`` on the tile ``box = (I0, I1, J0, J1)`` of ``theta``: on ``theta`` itself when
    the tile is all of it, else on a zeroed contiguous buffer copied in after, so that the jitted
    kernels are compiled for one memory layout only (both empirical NTKs' tiles)."""
    I0, I1, J0, J1 = box
    if I1 - I0 == theta.shape[0] and J1 - J0 == theta.shape[1]:
        add(theta)
        return
    buf = np.zeros((I1 - I0, J1 - J0) + theta.shape[2:], dtype=theta.dtype)
    add(buf)
    theta[I0:I1, J0:J1] = buf


def _tile_into(theta, trace, box, FI, FJ, lower):
    in_tile(theta, box, lambda tile: _accumulate(tile, FI, FJ, trace, lower))


def _fill_tiles(theta, X1, X2, block_rows, features, tile_into) -> np.ndarray:
    """Fill ``theta`` tile by tile: the loop over blocks of inputs of both empirical NTKs (the
    network's and :func:`ntksolve.kernels.empirical.empirical_ntk`'s, the MLP's).

    Parameters
    ----------
    theta : ndarray, shape (N1, N2) or (N1, N2, k, k)
        Zeros, accumulated into in place.
    X1 : ndarray, shape (N1, ...)
    X2 : ndarray, shape (N2, ...), or None
        ``None``: the symmetric kernel of ``X1``, computed on the tiles of its lower triangle and mirrored.
    block_rows : int
        Inputs per block: a tile is ``block_rows x block_rows`` pairs at most.
    features : callable
        ``features(X_block)``: what a tile needs of a block of inputs (its forward and backward passes).
    tile_into : callable
        ``tile_into(box, FI, FJ, lower)``: add the tile ``box = (I0, I1, J0, J1)`` into ``theta``, from
        the features ``FI`` and ``FJ`` of its two blocks; ``FJ=None`` (``lower=True``) is a diagonal
        tile of the symmetric kernel, whose lower triangle alone is needed.

    Returns
    -------
    theta : ndarray, the same array
    """
    N1 = X1.shape[0]
    starts1 = list(range(0, N1, block_rows))
    if X2 is None:
        for I0 in starts1:
            I1 = min(I0 + block_rows, N1)
            FI = features(X1[I0:I1])
            for J0 in starts1:
                if J0 >= I0:
                    break
                J1 = min(J0 + block_rows, N1)
                tile_into((I0, I1, J0, J1), FI, features(X1[J0:J1]), False)
            tile_into((I0, I1, I0, I1), FI, None, True)
        (_jit.mirror_lower_traced if theta.ndim == 2 else _jit.mirror_lower_full)(theta)
        return theta
    N2 = X2.shape[0]
    starts2 = list(range(0, N2, block_rows))
    F2 = features(X2) if len(starts2) == 1 else None
    for I0 in starts1:
        I1 = min(I0 + block_rows, N1)
        FI = features(X1[I0:I1])
        for J0 in starts2:
            J1 = min(J0 + block_rows, N2)
            tile_into((I0, I1, J0, J1), FI, F2 if F2 is not None else features(X2[J0:J1]), False)
    return theta


def _block_rows(net, shape, k, itemsize, n_rows, block_size):
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral) or block_size <= 0:
            raise ValueError(
                f"block_size must be a positive int (rows of inputs per block) or None, got {block_size!r}"
            )
        return int(min(block_size, n_rows))
    # every boundary's features, a derivative and k signals per row (for the two blocks of a tile:
    # generous), and what a layer keeps beyond them (a convolution's patches and per-example products)
    shapes = net.shapes(shape)
    numbers_ = sum((2 + 2 * k) * int(np.prod(s)) for s in shapes)
    numbers_ += sum(
        layer.kernel_row_numbers(s, k) for layer, s in zip(net.layers, shapes) if hasattr(layer, "kernel_row_numbers")
    )
    per_row = itemsize * numbers_
    return int(max(1, min(n_rows, _config.EMPIRICAL_BLOCK_BYTES // max(per_row, 1))))


def network_empirical_ntk(
    net: Network, params, X1, X2=None, *, trace: bool = True, block_size: Optional[int] = None
) -> np.ndarray:
    """The empirical NTK of a :class:`~ntksolve.nets.network.Network` (see :func:`ntksolve.empirical_ntk`).

    Parameters
    ----------
    net : Network
    params : list, from ``net.init``
    X1 : array_like, shape (N1, *input_shape)
    X2 : array_like, shape (N2, *input_shape), optional (defaults to ``X1``: symmetric)
    trace : bool, default True
        The mean over outputs ``(N1, N2)``, or the full kernel ``(N1, N2, k, k)``.
    block_size : int, optional
        Rows of inputs whose caches and signals are held at once.

    Returns
    -------
    theta : ndarray, shape (N1, N2) or (N1, N2, k, k), in the parameters' dtype
    """
    net = check_network(net)
    trace = check_trace(trace)
    X1, dt = prepare_inputs(net, params, X1, "X1")
    shape = X1.shape[1:]
    symmetric = X2 is None
    if not symmetric:
        X2, _ = prepare_inputs(net, params, X2, "X2", input_shape=shape)
    N1 = X1.shape[0]
    N2 = N1 if symmetric else X2.shape[0]
    k = net.output_shape(shape)[0]
    out_shape = (N1, N2) if trace else (N1, N2, k, k)
    check_memory(
        out_shape, dt, what="empirical NTK", hint="use trace=True or fewer inputs" if not trace else "use fewer inputs"
    )
    bs = _block_rows(net, shape, k, dt.itemsize, max(N1, N2), block_size)
    theta = np.zeros(out_shape, dtype=dt)
    _fill_tiles(
        theta, X1, X2, bs, functools.partial(_features, net, params), functools.partial(_tile_into, theta, trace)
    )
    return check_no_overflow(theta, "empirical NTK")


def network_empirical_nngp(net: Network, params, X1, X2=None) -> np.ndarray:
    """The readout's input kernel ``ws^2 <h, h'> + bs^2`` of a network ending in a Dense, ``(N1, N2)``."""
    net = check_network(net)
    last = net.layers[-1]
    if not isinstance(last, DenseLayer):
        raise ValueError(
            f"the empirical NNGP is the kernel of the readout's inputs, so the network must end "
            f"with a Dense layer; it ends with {last.name}"
        )
    X1, dt = prepare_inputs(net, params, X1, "X1")
    shape = X1.shape[1:]
    s = last.scales(net.shapes(shape)[-2])

    def readout_inputs(X):
        return forward(net, params, X, keep=True)[1][-1]

    h1 = readout_inputs(X1)
    if X2 is None:
        K = np.dot(h1, h1.T)
    else:
        X2, _ = prepare_inputs(net, params, X2, "X2", input_shape=shape)
        K = np.dot(h1, readout_inputs(X2).T)
    K *= s.weight**2
    K += s.bias**2
    return check_no_overflow(K, "empirical NNGP")


def network_jacobian(net: Network, params, X) -> np.ndarray:
    """The explicit Jacobian ``(N, k, P)`` of a network, columns in :meth:`Network.flatten_params` order."""
    net = check_network(net)
    X, dt = prepare_inputs(net, params, X)
    shape = X.shape[1:]
    N, k, P = X.shape[0], net.output_shape(shape)[0], net.n_params(shape)
    check_memory((N, k, P), dt, what="Jacobian", hint="use empirical_ntk, which never forms it")
    _, caches = forward(net, params, X, keep=True)
    signals = backward(net, params, caches)
    cols = [leaf.jacobian(p, cache, g) for leaf, p, cache, g in reversed(signals)]
    return check_no_overflow(np.concatenate(cols, axis=2) if len(cols) > 1 else cols[0], "Jacobian")


__all__ = ["network_empirical_ntk", "network_empirical_nngp", "network_jacobian", "check_no_overflow", "check_trace"]
