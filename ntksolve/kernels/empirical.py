"""Kernels of a network at finite width: the empirical NTK and NNGP, and the explicit Jacobian.

This module validates, guards memory and tiles; the arithmetic of each block and tile (BLAS
products split between threads, the numba kernels of ``_jit.empirical``) is in
:mod:`ntksolve.kernels.empirical_terms`, and the forward and backward passes are the network's own
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
from ntksolve._blas import parallel_workers
from ntksolve._validation import check_inputs, check_memory
from ntksolve.kernels.empirical_terms import features as _features
from ntksolve.nets.gram_terms import gram as _gram
from ntksolve.kernels.empirical_terms import tile_into as _tile_into
from ntksolve.nets.mlp import MLP, forward
from ntksolve.nets.network import accepts_network
from ntksolve.kernels.network_empirical import (
    _fill_tiles,
    check_no_overflow,
    check_trace,
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
    TypeError
        ``trace`` is not a bool.
    ValueError
        Bad inputs (NaN/inf, wrong feature count, wrong parameter shapes, bad block_size); or a
        kernel that overflowed its dtype (float32 parameters, a large weight_std or large inputs).
    MemoryError
        The output would not fit in memory (raised before any work).

    Notes
    -----
    The work is split between as many Python threads as both ``numba.get_num_threads()`` and
    BLAS's thread count allow (``numba.set_num_threads(1)`` keeps it on one), each calling BLAS
    single-threaded: BLAS is limited to one thread, process-wide, while the call runs. The result
    does not depend on the number of threads beyond rounding.
    """
    net = _check_net(net)
    trace = check_trace(trace)
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
    w = parallel_workers()

    _fill_tiles(
        theta,
        X1,
        None if symmetric else X2,
        bs,
        lambda rows: _features(net, params, rows, w),
        lambda box, FI, FJ, lower: _tile_into(net, coefs, theta, box, FI, FJ, trace, lower, w),
    )
    return check_no_overflow(theta, "empirical NTK")


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

    Raises
    ------
    ValueError
        Bad inputs; or a kernel that overflowed its dtype (the message names the way out).
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
    return check_no_overflow(K, "empirical NNGP")


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

    Raises
    ------
    ValueError
        Bad inputs; or derivatives that overflowed the parameters' dtype.
    """
    net = _check_net(net)
    d, dt = net.check_params(params)
    X = check_inputs(X, n_features=d, dtype=dt)
    N, k, P = X.shape[0], net.n_outputs, net.n_params(d)
    check_memory((N, k, P), dt, what="Jacobian", hint="use empirical_ntk, which never forms it")
    _, hs, deltas = _features(net, params, X, parallel_workers())
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
    return check_no_overflow(J, "Jacobian")


__all__ = ["empirical_ntk", "empirical_nngp", "jacobian"]
