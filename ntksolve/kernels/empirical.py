"""Kernels of a network at finite width: the empirical NTK and NNGP, and the explicit Jacobian.

This module validates, guards memory, tiles, and hands the arithmetic to BLAS and to the numba
kernels in ``_jit.empirical``; the forward and backward passes are the network's own
(:mod:`ntksolve.nets`). The formula is that of ``docs/conventions.md``::

    Theta_ab(x, x') = sum_{l=1}^{L+1} <delta^l_a(x), delta^l_b(x')> * (c_l <h^{l-1}(x), h^{l-1}(x')> + beta_l)

with ``(c_l, beta_l)`` the layer's :attr:`~ntksolve.nets.layers.LayerScales.ntk_coefficients`:
``(sigma_w^2 / n_{l-1}, sigma_b^2)`` in NTK parameterisation, ``(1, 1)`` in standard, ``beta_l = 0``
for a layer without a bias. The ``N x P``
Jacobian is never formed by :func:`empirical_ntk`.
"""

from __future__ import annotations

import numbers
from typing import Optional

import numpy as np

from ntksolve import _config
from ntksolve._jit import empirical as _jit
from ntksolve._validation import check_inputs, check_memory
from ntksolve.nets.backprop import backward
from ntksolve.nets.mlp import MLP, forward
from ntksolve.nets.network import accepts_network
from ntksolve.kernels.network_empirical import (
    _fill_tiles,
    network_empirical_nngp,
    network_empirical_ntk,
    network_jacobian,
)


# ---------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------
def _check_net(net) -> MLP:
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an ntksolve.MLP (or an ntksolve.Network), got {type(net).__name__}")
    return net


def _prepare_inputs(net, params, X1, X2):
    """Validate params and inputs; return (X1, X2 or None, d, dtype, symmetric)."""
    d, dt = net.check_params(params)
    X1 = check_inputs(X1, name="X1", n_features=d, dtype=dt)
    symmetric = X2 is None
    if not symmetric:
        X2 = check_inputs(X2, name="X2", n_features=d, dtype=dt)
    return X1, X2, d, dt, symmetric


def _features(net: MLP, params, X: np.ndarray):
    """Forward and backward pass over a block of inputs.

    Returns
    -------
    f : (B, k) outputs
    hs : list of L+1 arrays, ``hs[l-1] = h^{l-1}`` of shape (B, n_{l-1})
    deltas : list of L arrays, ``deltas[l-1] = delta^l`` of shape (B, k, n_l), l = 1 ... L
        (``delta^{L+1}`` is the identity and is never stored)
    """
    f, hs, dphis = forward(net, params, X, keep=True)
    deltas = [None] * net.depth
    for l, delta in backward(net, params, dphis):
        if l <= net.depth:
            deltas[l - 1] = delta
    return f, hs, deltas


def _gram(
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


def _accumulate_tile(net, coefs, theta, FI, FJ, trace: bool, lower: bool) -> None:
    """Add every layer's term of the NTK between two blocks of inputs into ``theta``.

    ``FJ is None`` means the diagonal tile of a symmetric kernel (``lower`` must be True): its Gram
    products are then computed on the lower triangle only.
    """
    _, hsI, dsI = FI
    hsJ, dsJ = (None, None) if FJ is None else (FJ[1], FJ[2])
    L, k = net.depth, net.n_outputs
    dt = theta.dtype.type
    BI = hsI[0].shape[0]
    BJ = BI if FJ is None else hsJ[0].shape[0]
    # two Gram buffers reused by every layer: fresh arrays of this size are page-faulted anew
    Gh = np.empty((BI, BJ), dtype=theta.dtype)
    Gd = Gh if L == 0 else np.empty((BI, BJ) if trace else (BI * k, BJ * k), dtype=theta.dtype)
    for l in range(1, L + 2):
        c, beta = coefs[l - 1]
        _gram(hsI[l - 1], None if FJ is None else hsJ[l - 1], out=Gh, lower=lower)
        if l == L + 1:  # the readout: its delta Gram is the identity
            combine = _jit.combine_traced if trace else _jit.combine_full
            combine(theta, Gh, Gh, dt(c), dt(beta), lower, False)
            continue
        dI = dsI[l - 1]
        dJ = None if FJ is None else dsJ[l - 1]
        if trace:
            # the mean over outputs: (1/k) <delta_I, delta_J>, the 1/k folded into (c, beta)
            _gram(dI.reshape(BI, -1), None if dJ is None else dJ.reshape(BJ, -1), out=Gd, lower=lower)
            _jit.combine_traced(theta, Gd, Gh, dt(c / k), dt(beta / k), lower, True)
        else:
            n = dI.shape[2]
            _gram(dI.reshape(-1, n), None if dJ is None else dJ.reshape(-1, n), out=Gd, lower=lower)
            _jit.combine_full(theta, Gd, Gh, dt(c), dt(beta), lower, True)


def _tile_into(net, coefs, theta, box, FI, FJ, trace, lower) -> None:
    """Accumulate one tile of ``theta``; a tile that is not the whole array is built in a
    contiguous buffer first, so the jitted kernels are compiled for one memory layout only."""
    I0, I1, J0, J1 = box
    if I1 - I0 == theta.shape[0] and J1 - J0 == theta.shape[1]:
        _accumulate_tile(net, coefs, theta, FI, FJ, trace, lower)
        return
    buf = np.zeros((I1 - I0, J1 - J0) + theta.shape[2:], dtype=theta.dtype)
    _accumulate_tile(net, coefs, buf, FI, FJ, trace, lower)
    theta[I0:I1, J0:J1] = buf


def _feature_bytes_per_row(net: MLP, d: int, itemsize: int) -> int:
    widths = net.widths(d)
    hidden = sum(widths[1:-1])
    # h^0..h^L, phi'(z^1..L), delta^1..L (k each), plus one backward temporary
    return itemsize * (d + 2 * hidden + 2 * net.n_outputs * hidden + net.n_outputs)


def _resolve_block_size(block_size, net, d, itemsize, n_rows) -> int:
    if block_size is None:
        per_row = max(_feature_bytes_per_row(net, d, itemsize), 1)
        return int(max(1, min(n_rows, _config.EMPIRICAL_BLOCK_BYTES // per_row)))
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral) or block_size <= 0:
        raise ValueError(f"block_size must be a positive int (rows of inputs per block) or None, got {block_size!r}")
    return int(min(block_size, n_rows))


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
@accepts_network(network_empirical_ntk)
def empirical_ntk(net: MLP, params, X1, X2=None, *, trace: bool = True, block_size: Optional[int] = None):
    """The finite-width (empirical) NTK of ``net`` at ``params``.

    Computed layer by layer from activations and backpropagated deltas (``docs/conventions.md``),
    never forming the ``N x P`` Jacobian: per layer two Gram matrices (on one triangle when ``X2`` is ``None``)
    and one fused elementwise combine.

    Parameters
    ----------
    net : MLP
    params : list of (W, b), from ``net.init``; float64 or float32 (the kernel's dtype)
    X1 : array_like, shape (N1, d)
    X2 : array_like, shape (N2, d), optional
        Defaults to ``X1`` (a symmetric kernel, computed on one triangle and mirrored).
    trace : bool, default True
        ``True``: the mean over outputs ``(1/k) sum_a Theta_aa``, shape (N1, N2).
        ``False``: the full kernel, shape (N1, N2, k, k).
    block_size : int, optional
        Rows of inputs whose activations and deltas are held at once. ``None`` holds all of them
        unless that would exceed ``_config.EMPIRICAL_BLOCK_BYTES``. Tiled and untiled results agree
        to rounding (about 1e-15 relative). For kernels beyond memory, :func:`ntksolve.dask.empirical_ntk`
        computes the same kernel as Dask tiles.
    Returns
    -------
    theta : ndarray, shape (N1, N2) or (N1, N2, k, k)

    Raises
    ------
    ValueError
        Bad inputs (NaN/inf, wrong feature count, wrong parameter shapes, bad block_size).
    MemoryError
        The output would not fit in memory (raised before any work).
    """
    net = _check_net(net)
    X1, X2, d, dt, symmetric = _prepare_inputs(net, params, X1, X2)
    N1 = X1.shape[0]
    N2 = N1 if symmetric else X2.shape[0]
    k = net.n_outputs
    shape = (N1, N2) if trace else (N1, N2, k, k)
    check_memory(
        shape,
        dt,
        what="empirical NTK",
        hint="use trace=True, fewer inputs, or the tiled Dask path (ntksolve[dask])"
        if not trace
        else "use fewer inputs or the tiled Dask path (ntksolve[dask])",
    )
    bs = _resolve_block_size(block_size, net, d, dt.itemsize, max(N1, N2))
    theta = np.zeros(shape, dtype=dt)
    coefs = net.ntk_coefficients(d)

    return _fill_tiles(
        theta,
        X1,
        None if symmetric else X2,
        bs,
        lambda rows: _features(net, params, rows),
        lambda box, FI, FJ, lower: _tile_into(net, coefs, theta, box, FI, FJ, trace, lower),
    )


@accepts_network(network_empirical_nngp)
def empirical_nngp(net: MLP, params, X1, X2=None) -> np.ndarray:
    """The readout's input kernel ``sigma_w^2/n_L <h^L(x), h^L(x')> + sigma_b^2``, shape (N1, N2).

    At infinite width it converges to the analytic NNGP (the covariance of ``f_0``); the
    same definition is used in both parameterisations, since ``f_0`` is the same function.

    Parameters
    ----------
    net : MLP
    params : list of (W, b)
    X1 : array_like, shape (N1, d)
    X2 : array_like, shape (N2, d), optional (defaults to ``X1``)

    Returns
    -------
    K : ndarray, shape (N1, N2)
    """
    net = _check_net(net)
    X1, X2, d, dt, symmetric = _prepare_inputs(net, params, X1, X2)
    N2 = X1.shape[0] if symmetric else X2.shape[0]
    check_memory((X1.shape[0], N2), dt, what="empirical NNGP")
    readout = net.scales(d)[-1]  # the forward scales: f_0 is the same in every parameterisation
    h1 = forward(net, params, X1, keep=True)[1][-1]
    K = _gram(h1, None if symmetric else forward(net, params, X2, keep=True)[1][-1])
    K *= readout.weight**2
    K += readout.bias**2
    return K


@accepts_network(network_jacobian)
def jacobian(net: MLP, params, X) -> np.ndarray:
    """The explicit Jacobian ``df_a(x_i)/d theta_p``, for checking and small problems.

    Parameters are ordered layer by layer, ``W^l`` row-major (``n_l x n_{l-1}``) then ``b^l``
    (:meth:`MLP.flatten_params`; a layer without a bias has no ``b^l``). In standard
    parameterisation the derivatives are with respect to the trained, scaled parameters ``W~ = (sigma_w/sqrt(n)) W`` and ``b~ = sigma_b b``.

    Parameters
    ----------
    net : MLP
    params : list of (W, b)
    X : array_like, shape (N, d)

    Returns
    -------
    J : ndarray, shape (N, k, P)
    """
    net = _check_net(net)
    d, dt = net.check_params(params)
    X = check_inputs(X, n_features=d, dtype=dt)
    N, k, P = X.shape[0], net.n_outputs, net.n_params(d)
    check_memory((N, k, P), dt, what="Jacobian", hint="use empirical_ntk, which never forms it")
    _, hs, deltas = _features(net, params, X)
    scales = net.scales(d)
    J = np.empty((N, k, P), dtype=dt)
    pos = 0
    eye = np.broadcast_to(np.eye(k, dtype=dt)[None], (N, k, k))
    for l in range(1, net.depth + 2):
        h = hs[l - 1]
        delta = eye if l == net.depth + 1 else deltas[l - 1]
        n_out, n_in = delta.shape[2], h.shape[1]
        ws, bs = scales[l - 1].grad_weight, scales[l - 1].grad_bias
        J[:, :, pos : pos + n_out * n_in] = (ws * delta[:, :, :, None] * h[:, None, None, :]).reshape(N, k, -1)
        pos += n_out * n_in
        if net.layers[l - 1].bias:  # a layer without a bias has no columns here
            J[:, :, pos : pos + n_out] = bs * delta
            pos += n_out
    return J


__all__ = ["empirical_ntk", "empirical_nngp", "jacobian"]
