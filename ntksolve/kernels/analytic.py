"""The analytic infinite-width NNGP and NTK of a network's architecture, and their diagonals.

:func:`analytic_kernels` and :func:`analytic_diagonals` validate and call the drivers
:func:`analytic_pair_kernels` and :func:`analytic_diag`, which choose the method and its rule
(:mod:`ntksolve.kernels._analytic_rules`), check the variances before any pair is computed, build
the input Gram (:func:`input_gram`) and run the numba kernels of :mod:`ntksolve._jit.analytic`
(recursion and pair rows) and :mod:`ntksolve._jit.expectations` (layer maps) on threads.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
from scipy.linalg.blas import dsyrk as _dsyrk

from ntksolve._jit.analytic import _pair_rows
from ntksolve._jit.analytic_points import GAUSS_HERMITE, SERIES, _weighted_activations_at_nodes
from ntksolve._jit.threads import _mirror_rows, run_in_threads
from ntksolve._validation import check_inputs, check_memory
from ntksolve.kernels._analytic_rules import _diag_pieces, _method, as_activation, series_pieces
from ntksolve.kernels.empirical import _check_net
from ntksolve.nets.layers import Activation
from ntksolve.nets.mlp import MLP
from ntksolve.nets.network import accepts_network
from ntksolve.kernels.network_analytic import network_analytic_kernels


class Kernels(NamedTuple):
    """The infinite-width kernels of a network, each of shape ``(N1, N2)``.

    Attributes
    ----------
    nngp : ndarray, shape (N1, N2)
        The NNGP ``K = Σ^{L+1}`` (per output; the kernel over outputs is ``K ⊗ I_k``).
    ntk : ndarray, shape (N1, N2)
        The NTK ``Θ = Θ^{L+1}``, likewise per output.
    """

    nngp: np.ndarray
    ntk: np.ndarray


def _check_architecture(depth, activation) -> Activation:
    """The :class:`~ntksolve.nets.layers.Activation` of the spelling ``activation``; ValueError
    unless ``depth`` is a non-negative int and ``activation`` a valid spelling."""
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0:
        raise ValueError(f"depth must be a non-negative int (the number of hidden layers), got {depth!r}")
    return Activation(activation)


def _identical_row_groups(X1, sq1, X2=None, sq2=None):
    """Groups of identical rows: a list of ``(rows of X1, rows of X2)`` index arrays.

    ``X2=None``: groups of at least two identical rows of ``X1`` (both arrays the same). Identical
    rows have identical squared norms (one summation order), so only rows whose norm occurs twice
    are compared, by their bytes (``+ 0.0`` makes ``-0.0`` and ``0.0`` alike, as they are in every
    product); typical data costs one sort of ``N`` floats.
    """
    if X2 is None:
        order = np.argsort(sq1, kind="stable")
        s = sq1[order]
        tie = np.zeros(s.shape[0], dtype=bool)
        eq = s[1:] == s[:-1]
        tie[1:] |= eq
        tie[:-1] |= eq
        cand1 = np.sort(order[tie])
        if cand1.size == 0:
            return []
        rows = X1[cand1]
    else:
        cand1 = np.flatnonzero(np.isin(sq1, sq2))
        if cand1.size == 0:
            return []
        cand2 = np.flatnonzero(np.isin(sq2, sq1[cand1]))
        rows = np.concatenate([X1[cand1], X2[cand2]])
    rows = np.ascontiguousarray(rows + 0.0)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, labels = np.unique(keys, return_inverse=True)
    labels = labels.ravel()
    if X2 is None:
        g1 = g2 = labels
        c1 = c2 = cand1
        common = np.flatnonzero(np.bincount(labels) > 1)
    else:
        g1, g2 = labels[: cand1.size], labels[cand1.size :]
        c1, c2 = cand1, cand2
        common = np.intersect1d(g1, g2)
    if common.size == 0:
        return []
    o1 = np.argsort(g1, kind="stable")
    o2 = np.argsort(g2, kind="stable")
    g1s, r1 = g1[o1], c1[o1]
    g2s, r2 = g2[o2], c2[o2]
    a1, b1 = np.searchsorted(g1s, common, "left"), np.searchsorted(g1s, common, "right")
    a2, b2 = np.searchsorted(g2s, common, "left"), np.searchsorted(g2s, common, "right")
    return [(r1[p:q], r2[u:v]) for p, q, u, v in zip(a1, b1, a2, b2)]


def input_gram(X1, X2, sq1, sq2):
    """The input Gram ``X1 X2^T`` by BLAS, exactly ``|x|^2`` wherever the two rows are identical.

    A dot product computed by BLAS need not equal the squared norm summed by
    :func:`ntksolve._jit.analytic_points._squared_norms` to the last bit; the per-point recursion starts
    from the latter, so identical rows get it here too, and their pair then follows the point's
    recursion exactly.

    Parameters
    ----------
    X1 : ndarray, shape (N1, d)
    X2 : ndarray, shape (N2, d) or None
        ``None`` for the symmetric Gram of ``X1``: only the upper triangle (C order) and the
        diagonal are filled (``dsyrk``, half the flops; the diagonal is ``sq1``).
    sq1, sq2 : ndarray, shapes (N1,), (N2,)
        Squared norms from :func:`ntksolve._jit.analytic_points._squared_norms` (``sq2`` unused when
        ``X2`` is None).

    Returns
    -------
    gram : ndarray, shape (N1, N2), C-contiguous
    """
    if X2 is None:
        gram = np.empty((X1.shape[0], X1.shape[0]))
        # the C-order upper triangle is the lower one of the Fortran view gram.T; dsyrk skips the
        # strided triangle copy numpy's X @ X.T does after it
        _dsyrk(1.0, X1.T, trans=1, lower=1, c=gram.T, overwrite_c=1)
        np.fill_diagonal(gram, sq1)
    else:
        gram = np.empty((X1.shape[0], X2.shape[0]))
        np.dot(X1, X2.T, out=gram)
    for rows1, rows2 in _identical_row_groups(X1, sq1, X2, sq2):
        gram[np.ix_(rows1, rows2)] = sq1[rows1[0]]
    return gram


def analytic_diag(X, depth, activation, weight_std, bias_std, force_quadrature=False, quad_order=None):
    """Diagonals ``K(x_i, x_i)`` and ``Theta(x_i, x_i)`` of the NNGP and NTK, in ``O(N (d + L))``.

    The per-point recursion; bit-identical to the diagonal of ``analytic_pair_kernels`` and to
    every pair of identical points in it.

    Parameters
    ----------
    X : ndarray, shape (N, d), C-contiguous float64 (validated by the caller)
    depth : int
        ``L``, number of hidden layers (``>= 0``).
    activation : Activation, str or int
        The activation (:class:`~ntksolve.nets.layers.Activation`), its spelling, or the integer
        code ``ntksolve._jit.activations.ACTIVATION_CODES[name]`` of one without parameters.
    weight_std, bias_std : float
        ``sigma_w``, ``sigma_b``.
    force_quadrature : bool
        Use Gauss-Hermite for any activation (for tests).
    quad_order : int or None
        Gauss-Hermite nodes per dimension (as in :func:`analytic_pair_kernels`).

    Returns
    -------
    nngp_diag, ntk_diag : ndarray, shape (N,)

    Raises
    ------
    ValueError
        If a variance leaves the accepted range (:mod:`ntksolve.kernels._analytic_rules`).
    """
    phi = as_activation(activation)
    method = _method(phi.code, force_quadrature, quad_order)
    variances, ntk_diag, _, _, _ = _diag_pieces(X, int(depth), phi, weight_std, bias_std, method, quad_order)
    return variances[int(depth)].copy(), ntk_diag


def analytic_pair_kernels(
    X1, X2, depth, activation, weight_std, bias_std, symmetric, quad_order=None, force_quadrature=False, series=True
):
    """The infinite-width NNGP ``Sigma^{L+1}(X1, X2)`` and NTK ``Theta^{L+1}(X1, X2)``.

    Parameters
    ----------
    X1 : ndarray, shape (N1, d), C-contiguous float64 (validated by the caller)
    X2 : ndarray, shape (N2, d), C-contiguous float64
        ``X1`` itself when ``symmetric``.
    depth : int
        ``L``, number of hidden layers (``>= 0``).
    activation : Activation, str or int
        As in :func:`analytic_diag`. Closed forms for relu, erf, gelu, identity, abrelu (leaky
        relu, abs), sin, cos, gaussian and the monomials; the Hermite series (and the Kolmogorov scale
        mixture for the pairs it leaves) for tanh,
        sigmoid and softplus.
    weight_std, bias_std : float
        ``sigma_w``, ``sigma_b``.
    symmetric : bool
        ``X2`` is ``X1``: only the upper triangle is computed and mirrored (the result is exactly
        symmetric). Either way every pair of identical rows equals the per-point diagonal exactly.
    quad_order : int or None
        Gauss-Hermite nodes per dimension: given, tanh, sigmoid and softplus use that rule instead
        of the mixture (for tests; closed forms ignore it).
    force_quadrature : bool
        Gauss-Hermite for every activation (for tests; never for relu, whose kink makes it converge
        slowly). With ``quad_order=None`` the order adapts to the largest variance,
        ``GH_ORDER_BASE + slope * max(s, 1)`` (slope 40, 85 for tanh), which keeps the rule within
        1e-8; variances beyond the capped order's reach are refused.
    series : bool
        tanh, sigmoid, softplus: the Hermite series for pairs it serves (default); ``False``: the
        Kolmogorov mixture for every pair (for tests).

    Returns
    -------
    nngp, ntk : ndarray, shape (N1, N2), float64, C-contiguous

    Raises
    ------
    ValueError
        If a variance leaves the accepted range (:mod:`ntksolve.kernels._analytic_rules`), before any pair is computed.
    """
    depth = int(depth)
    phi = as_activation(activation)
    code, prm = phi.code, phi.params
    method = _method(code, force_quadrature, quad_order, series)
    sw2 = float(weight_std) ** 2
    sb2 = float(bias_std) ** 2
    n_features = X1.shape[1]
    order = quad_order
    if method == GAUSS_HERMITE and not symmetric and order is None:
        # one rule for both sets of points: the order the larger of their variances needs
        order = max(_diag_pieces(X, depth, phi, weight_std, bias_std, method, None)[4] for X in (X1, X2))
    var1, ntk_diag, sq1, rule, _ = _diag_pieces(X1, depth, phi, weight_std, bias_std, method, order)
    if symmetric:
        var2, sq2 = var1, sq1
    else:
        var2, _, sq2, _, _ = _diag_pieces(X2, depth, phi, weight_std, bias_std, method, order)
    nodes, weights, lo, hi = rule
    if method == GAUSS_HERMITE:
        wphi1, wdphi1 = _weighted_activations_at_nodes(var1, depth, code, prm, nodes, weights)
    else:
        wphi1 = wdphi1 = np.zeros((0, 0, 0))
    if method == SERIES:
        pieces = series_pieces([var1] if symmetric else [var1, var2], depth, phi)
        ser1, ser2 = tuple(pieces[0]), tuple(pieces[-1])
    else:
        ser1 = ser2 = (
            np.zeros((0, 0, 0)),
            np.zeros((0, 0)),
            np.zeros((0, 0)),
            np.zeros((0, 0), np.int64),
            np.zeros(0),
            False,
        )
    nngp = input_gram(X1, None if symmetric else X2, sq1, sq2)
    ntk = np.empty_like(nngp)
    run_in_threads(
        _pair_rows,
        nngp,
        ntk,
        var1,
        var2,
        ntk_diag,
        sw2 / n_features,
        sw2,
        sb2,
        depth,
        code,
        prm,
        method,
        bool(symmetric),
        wphi1,
        wdphi1,
        nodes,
        weights,
        lo,
        hi,
        ser1,
        ser2,
    )
    if symmetric:
        run_in_threads(_mirror_rows, nngp, ntk)
    return nngp, ntk


@accepts_network(lambda net, X1, X2=None: Kernels(*network_analytic_kernels(net, X1, X2)), with_params=False)
def analytic_kernels(net: MLP, X1, X2=None) -> Kernels:
    """The infinite-width NNGP and NTK of ``net``'s architecture (NTK parameterisation only).

    Closed forms for relu, erf, gelu, identity, abrelu (leaky relu, abs), sin, cos, gaussian and
    the monomials (``docs/conventions.md``); for tanh, sigmoid and softplus the Hermite series of
    the layer map in the correlation, with per-point coefficients and a truncation bounded by
    1e-12 relative, and the closed forms of a scale mixture over the Kolmogorov distribution (a
    fixed 24-node rule, about 1e-12 at any scale) for pairs beyond its correlation levels and
    variances above 10. Numba over blocks of pairs, ``O(N1 N2 (d + L))`` (``O(N1 N2 (d + T L))``
    for the series of ``T`` terms, ``T`` about 10 to 60; 576 closed forms a layer for the
    mixture). Identical rows, in ``X1`` and ``X2`` or across them, get exactly the diagonal value
    ``K(x, x)`` (:func:`analytic_diagonals`), so that a duplicated point or a test point equal to a
    training point keeps the kernel positive semidefinite.

    Parameters
    ----------
    net : MLP
        Its widths are ignored (infinite); depth, activation, weight_std, bias_std are used
        (``bias_std`` as 0 for a network without biases; biases in some layers only are refused).
    X1 : array_like, shape (N1, d)
    X2 : array_like, shape (N2, d), optional (defaults to ``X1``)

    Returns
    -------
    Kernels
        Named pair ``(nngp, ntk)``, each of shape (N1, N2), float64 (times ``I_k`` over outputs).

    Raises
    ------
    ValueError
        Standard parameterisation; or inputs so large that a pre-activation variance
        ``Sigma^l(x, x)`` exceeds 1e150 (1e7 for erf, tanh, sigmoid, whose NTK would lose accuracy
        at nearly parallel pairs): standardise the features.
    """
    net = _check_net(net)
    if not net.supports_analytic:
        raise ValueError(
            "analytic kernels are defined in NTK parameterisation only: in standard parameterisation "
            "the infinite-width NTK grows without bound with width. Use MLP(..., parameterization='ntk'), "
            "or empirical_ntk for a finite standard-parameterised network"
        )

    X1 = check_inputs(X1, name="X1")
    symmetric = X2 is None
    if not symmetric:
        X2 = check_inputs(X2, name="X2", n_features=X1.shape[1])
    N2 = X1.shape[0] if symmetric else X2.shape[0]
    check_memory(
        (2, X1.shape[0], N2),
        np.float64,
        what="pair of analytic kernels (NNGP and NTK)",
        hint="use fewer inputs or the tiled Dask path (ntksolve[dask])",
    )
    nngp, ntk = analytic_pair_kernels(
        X1, X1 if symmetric else X2, net.depth, net.phi, net.weight_std, _bias_std(net), symmetric
    )
    return Kernels(nngp=nngp, ntk=ntk)


def _bias_std(net: MLP) -> float:
    """The one ``sigma_b`` of every layer's forward pass (0 for a layer without a bias, which is the
    layer with ``sigma_b = 0`` at infinite width too)."""
    stds = {layer.forward_bias_std for layer in net.layers}
    if len(stds) > 1:
        raise ValueError(
            f"the analytic kernels take one sigma_b for every layer, but this network has biases in some "
            f"layers only (bias={net.bias!r}, bias_std={net.bias_std:g}); use bias=True or bias=False "
            "for all layers, or empirical_ntk for this finite network"
        )
    return stds.pop()


def analytic_diagonals(X, depth, activation, weight_std, bias_std):
    """Diagonals of the infinite-width NNGP and NTK, ``K(x_i, x_i)``, in ``O(N (d + L))``.

    Parameters
    ----------
    X : array_like, shape (N, d)
    depth : int
        Number of hidden layers ``L``.
    activation : str
        One of ``ntksolve.ACTIVATIONS`` or a spelling with arguments
        (:class:`~ntksolve.nets.layers.Activation`).
    weight_std, bias_std : float
        ``sigma_w > 0``, ``sigma_b >= 0``.

    Returns
    -------
    nngp_diag, ntk_diag : ndarray, shape (N,)
        Bit-identical to the diagonals of :func:`analytic_kernels` of ``X`` (with itself or with
        any array holding the same rows).

    Raises
    ------
    ValueError
        As :func:`analytic_kernels`.
    """
    _check_architecture(depth, activation)
    net = MLP((1,) * int(depth), activation, weight_std, bias_std)  # validates the two stds
    X = check_inputs(X)
    return analytic_diag(X, net.depth, net.phi, net.weight_std, net.bias_std)


__all__ = ["Kernels", "analytic_kernels", "analytic_diagonals"]
