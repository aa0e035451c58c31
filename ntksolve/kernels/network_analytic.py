"""The analytic (infinite-width) NNGP and NTK of a :class:`~ntksolve.nets.network.Network`.

The kernels are carried through the layers as a :class:`~ntksolve.nets.layer_protocol.KernelState`
(whole matrices), each layer applying its map (:meth:`~ntksolve.nets.layer_protocol.Layer.analytic`)::

    Dense          K -> sw^2 K + sb^2                 Theta -> sw^2 Theta + (sw^2 K + sb^2)
    activation     K -> E[phi(u) phi(v)]              Theta -> E[phi'(u) phi'(v)] Theta
    Residual       K -> K + s^2 K_block(K)            Theta -> Theta + s^2 Theta_block
    LayerNorm      K -> K / sqrt((K11 + eps)(K22 + eps)), and Theta alike

(neural-tangents' ``stax`` maps; ``(u, v)`` Gaussian with the state's covariances). Layers before
the first parametrised one act on the inputs themselves, exactly as in the finite network; the
state then starts from ``<x, x'> / d``. A network that is an MLP runs on the MLP's path
(:func:`ntksolve.kernels.analytic.analytic_kernels`).

The activation maps are the MLP's: closed forms, and for tanh, sigmoid and softplus the Hermite
series in the correlation with the scale mixture for the pairs it does not serve (and for a
point's pair with itself). The series' per-point coefficients and terms are those of all the
points, made once per activation on a pass of the layers over the points alone
(:class:`ActivationMaps`, which also checks every layer's state before any pair); the tiles then
take them, and a Network equal to an MLP gets the MLP's kernels to rounding (the tiles' edges are
the MLP's column blocks').
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import NamedTuple

import numba
import numpy as np
from scipy.linalg.blas import dsyrk as _dsyrk

from ntksolve._config import ANALYTIC_MAX_VARIANCE, ANALYTIC_MAX_VARIANCE_BOUNDED
from ntksolve._jit.analytic_points import _COLUMN_BLOCK
from ntksolve._jit.threads import _mirror_rows, run_in_threads
from ntksolve._jit.expectations import BOUNDED_CODES, LOGISTIC_CODES, PRODUCT_CODES
from ntksolve._jit.network_analytic import CLOSED, MIXTURE, SERIES, activation_rows, activation_variances
from ntksolve._validation import check_inputs, check_memory, check_small_variances
from ntksolve.kernels._analytic_rules import logistic_mixture_rule, series_pieces
from ntksolve.nets.layer_protocol import KernelState
from ntksolve.nets.network import Network, check_network, flat_rows

_EMPTY = np.zeros(0)

#: Edge of the tiles of pairs carried through all the layers at once: two 256 x 256 float64 tiles
#: (the NNGP and the NTK) and a residual's copies stay in the L2 cache between the layers' passes.
#: The MLP's column block: the Hermite series picks its terms by the pairs of a block, and the
#: MLP's blocks end where the tiles do.
_TILE = _COLUMN_BLOCK


def _check_variance(phi, state: KernelState) -> None:
    limit = ANALYTIC_MAX_VARIANCE_BOUNDED if phi.code in BOUNDED_CODES else ANALYTIC_MAX_VARIANCE
    top = max(float(state.var1.max()), float(state.var2.max()))
    if not top <= limit:
        raise ValueError(
            f"the pre-activation variance before {phi.name} reaches {top:.3g}, above {limit:.0e}, the "
            f"largest for which its analytic kernel is accurate in float64; lower the weight_std "
            "values or the depth, or standardise the features"
        )
    if phi.code in PRODUCT_CODES:
        check_small_variances(phi.name, state.var1, state.var2)


def _check_activation(phi, state: KernelState) -> None:
    if len(state.shape) != 1:
        raise ValueError(
            f"the analytic kernel of {phi.name} is implemented on flat features; got per-example shape {state.shape}"
        )
    if not state.gaussian:
        raise ValueError(
            f"the analytic kernel of {phi.name} needs mean-zero Gaussian pre-activations (the output "
            "of a Dense, a LayerNorm of one, or a sum of such); here its input is not (the inputs "
            "themselves, an activation's output, or a residual sum with such a skip path): put a "
            "Dense before it (after a Flatten of spatial features, one Gaussian per position with "
            "its own covariance: put the activation before the Flatten, the same network)"
        )
    _check_variance(phi, state)


#: The series arguments of the maps that do not use it (the types of the pieces, so one compilation).
_NO_SERIES = (np.zeros((0, 0, 0)), np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0), np.int64), np.zeros(0), False)


def activation_map(phi, state: KernelState, layer=None, offsets=(0, 0)) -> KernelState:
    """The element-wise activation's map of ``state`` (:mod:`ntksolve._jit.network_analytic`).

    ``layer``: the map's :class:`ActivationLayerPieces` of the whole sets of row and column points
    (:class:`ActivationMaps`, which has checked the state), ``offsets`` the state's first row and
    column in them: for tanh, sigmoid and softplus the pairs the series serves take it, the others
    the scale mixture (the MLP's maps). None: the state is checked, and the mixture takes every pair."""
    if layer is None:
        _check_activation(phi, state)
    if phi.code in LOGISTIC_CODES:
        method = MIXTURE if layer is None or layer.series is None else SERIES
        mix_var, mix_w = logistic_mixture_rule(phi.code)
    else:
        method, mix_var, mix_w = CLOSED, _EMPTY, _EMPTY
    ser1, ser2 = (_NO_SERIES, _NO_SERIES) if method != SERIES else layer.series
    i0, j0 = int(offsets[0]), int(offsets[1])
    state.rows(
        activation_rows,
        state.nngp,
        state.ntk,
        state.var1,
        state.var2,
        phi.code,
        phi.params,
        method,
        mix_var,
        mix_w,
        ser1,
        ser2,
        i0,
        j0,
        state.symmetric,
    )
    n1, n2 = state.var1.shape[0], state.var2.shape[0]
    if layer is None:
        var1 = activation_variances(state.var1, phi.code, phi.params, method, mix_var, mix_w)[0]
    else:  # the points' own maps, computed once for every tile
        var1 = layer.var1[i0 : i0 + n1]
    if state.symmetric:
        np.fill_diagonal(state.nngp, var1)  # the point's own map (bit-identical to the pair's, made sure)
        if method == SERIES:  # the rows left the diagonal to the point's own map
            d = np.arange(min(state.ntk.shape))  # none on the pass over the points alone
            state.ntk[d, d] *= layer.dvar1[i0 : i0 + d.size]
        var2 = var1
    elif layer is None:
        var2 = activation_variances(state.var2, phi.code, phi.params, method, mix_var, mix_w)[0]
    else:
        var2 = layer.var2[j0 : j0 + n2]
    return state.replace(var1=var1, var2=var2, gaussian=False, mean_zero=False)


class ActivationLayerPieces(NamedTuple):
    """What an activation's map shares between the tiles: of the whole sets of points."""

    series: object  # (ser1, ser2), the series pieces of the row and column points; None: no series
    var1: np.ndarray  # (N1,) the row points' variances after the map
    var2: np.ndarray  # (N2,) the column points'
    dvar1: np.ndarray  # (N1,) E[phi'(u)^2] of the row points (the NTK's factor of a point's own pair)


class ActivationMaps:
    """The driver's activation map (``KernelState.expect``), with the Hermite series of the MLP.

    The series' per-point coefficients and its terms per correlation level are those of the whole
    sets of points (the MLP's :func:`~ntksolve.kernels._analytic_rules.series_pieces`, one layer at
    a time), so that every tile of pairs takes the very numbers of the MLP. A recording instance
    (``record=True``) checks the states and computes them, with the points' own maps, one entry per
    activation it maps, on a pass of the layers over the points alone (no pairs); each tile then
    maps its activations, in the same order, through :meth:`for_tile`.

    Parameters
    ----------
    pieces : list of ActivationLayerPieces, or None
        Per activation map, in order. None: the mixture for every pair (:func:`activation_map`).
    offsets : (int, int)
        The tile's first row and column point.
    record : bool
    """

    def __init__(self, pieces=None, offsets=(0, 0), record=False):
        self.pieces = pieces
        self.offsets = offsets
        self.record = record
        self.calls = 0

    def for_tile(self, i0: int, j0: int) -> "ActivationMaps":
        return ActivationMaps(self.pieces, (i0, j0))

    def __call__(self, phi, state: KernelState) -> KernelState:
        if self.pieces is None:
            return activation_map(phi, state)
        if self.record:
            self.pieces.append(_layer_pieces(phi, state))
        layer = self.pieces[self.calls]
        self.calls += 1
        return activation_map(phi, state, layer, self.offsets)


def _layer_pieces(phi, state: KernelState) -> ActivationLayerPieces:
    """The checks of ``state``, then its points' series pieces (tanh, sigmoid, softplus) and own maps."""
    _check_activation(phi, state)  # before the coefficients, which need variances in range
    series = None
    method, mix_var, mix_w = CLOSED, _EMPTY, _EMPTY
    if phi.code in LOGISTIC_CODES:
        sets = [state.var1[None]] if state.symmetric else [state.var1[None], state.var2[None]]
        pieces = series_pieces(sets, 1, phi)
        series = tuple(pieces[0]), tuple(pieces[-1])
        method, (mix_var, mix_w) = SERIES, logistic_mixture_rule(phi.code)
    var1, dvar1 = activation_variances(state.var1, phi.code, phi.params, method, mix_var, mix_w)
    var2 = (
        var1 if state.symmetric else activation_variances(state.var2, phi.code, phi.params, method, mix_var, mix_w)[0]
    )
    return ActivationLayerPieces(series, var1, var2, dvar1)


def _input_state(F1, F2, symmetric) -> KernelState:
    """The state at the first parametrised layer: ``<x, x'> / d`` of the (exact) features.

    Symmetric: only the upper triangle, by ``dsyrk`` (half the flops), as
    :func:`ntksolve.kernels.analytic.input_gram` does; identical rows get exactly the point's
    ``|x|^2 / d``, so that their pair follows the point's recursion bit for bit."""
    A1 = np.ascontiguousarray(F1.reshape(F1.shape[0], -1), dtype=np.float64)
    A2 = A1 if symmetric else np.ascontiguousarray(F2.reshape(F2.shape[0], -1), dtype=np.float64)
    d = A1.shape[1]
    var1 = np.einsum("ij,ij->i", A1, A1) / d
    var2 = var1 if symmetric else np.einsum("ij,ij->i", A2, A2) / d
    K = np.empty((A1.shape[0], A2.shape[0]))
    if symmetric:
        # the C-order upper triangle is the lower one of the Fortran view K.T
        _dsyrk(1.0 / d, A1.T, trans=1, lower=1, c=K.T, overwrite_c=1)
        np.fill_diagonal(K, var1)
    else:
        np.dot(A1, A2.T, out=K)
        K *= 1.0 / d
    _identical_rows_exact(K, A1, A2, var1, symmetric)
    # the NTK is 0 at the input: each tile starts from its own zeros (the whole matrix is only written)
    return KernelState(
        nngp=K,
        ntk=np.empty_like(K),
        var1=var1,
        var2=var2,
        symmetric=symmetric,
        shape=tuple(F1.shape[1:]),
        at_input=True,
        expect=activation_map,
        inputs=(F1, F1 if symmetric else F2),
    )


def _identical_rows_exact(K, A1, A2, var1, symmetric) -> None:
    """``K[i, j] = var1[i]`` wherever row ``i`` of ``A1`` equals row ``j`` of ``A2`` (symmetric: the
    upper triangle): the pair then follows the point's own recursion bit for bit (a BLAS dot
    product need not equal the norm). ``+ 0.0`` makes ``-0.0`` and ``0.0`` alike."""
    rows2 = {}
    for j, row in enumerate(A2 + 0.0):
        rows2.setdefault(row.tobytes(), []).append(j)
    if symmetric and len(rows2) == A2.shape[0]:
        return  # no duplicates
    for i, row in enumerate(A1 + 0.0):
        for j in rows2.get(row.tobytes(), ()):
            if not symmetric or j >= i:
                K[i, j] = var1[i]


def _on_threads(fn, items) -> None:
    """``fn(item)`` for every item, on ``numba.get_num_threads()`` Python threads (the tiles' row
    kernels release the GIL); errors are raised here."""
    n = numba.get_num_threads()
    if n <= 1 or len(items) <= 1:
        for item in items:
            fn(item)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        for fut in [pool.submit(fn, item) for item in items]:
            fut.result()


def _apply_prefix(net, layers, X):
    h = X
    for layer in layers:
        h = layer.forward((), h, False)[0]
    return h


def _through(layers, first, state: KernelState) -> KernelState:
    """``state`` through ``layers`` (numbered from ``first``), a layer's error naming it."""
    for i, layer in enumerate(layers, start=first):
        try:
            state = layer.analytic(state)
        except ValueError as exc:
            raise ValueError(f"layer {i} ({layer.name}): {exc}") from None
    return state


def network_analytic_kernels(net: Network, X1, X2=None):
    """The infinite-width NNGP and NTK of a network (NTK parameterisation), ``(N1, N2)`` each.

    Parameters
    ----------
    net : Network
    X1 : array_like, shape (N1, *input_shape)
    X2 : array_like, shape (N2, *input_shape), optional (defaults to ``X1``)

    Returns
    -------
    nngp, ntk : ndarray, shape (N1, N2), float64
        (times ``I_k`` over the outputs); :func:`ntksolve.analytic_kernels` returns them as ``Kernels``.

    Raises
    ------
    ValueError
        Standard parameterisation; a layer without an analytic map or in an order that has none
        (the message names it); a variance out of the accurate range.
    """
    net = check_network(net)
    if not net.supports_analytic:
        raise ValueError(
            "analytic kernels are defined in NTK parameterisation only: in standard parameterisation "
            "the infinite-width NTK grows without bound with width. Use Network(..., "
            "parameterization='ntk'), or empirical_ntk for a finite network"
        )
    X1 = np.asarray(X1, dtype=np.float64) if not isinstance(X1, np.ndarray) else X1
    if X1.ndim < 2:
        raise ValueError(f"X1 must have shape (N, *input_shape), got shape {X1.shape}")
    shape = X1.shape[1:]
    net.shapes(shape)
    X1 = check_inputs(flat_rows(X1), name="X1").reshape(X1.shape)
    symmetric = X2 is None
    if not symmetric:
        X2 = np.asarray(X2)
        if X2.shape[1:] != shape:
            raise ValueError(f"X2 has per-example shape {X2.shape[1:]}, but X1 has {shape}")
        X2 = check_inputs(flat_rows(X2), name="X2").reshape(X2.shape)
    N2 = X1.shape[0] if symmetric else X2.shape[0]
    check_memory(
        (4, X1.shape[0], N2),
        np.float64,
        what="analytic kernels of a network (NNGP, NTK and the next layer's)",
        hint="use fewer inputs",
    )
    first = next(i for i, layer in enumerate(net.layers) if layer.leaves())
    prefix = net.layers[:first]
    for i, layer in enumerate(prefix):
        s = net.shapes(shape)[i]
        if getattr(layer, "normalizes", False) and s[-1] == 1:
            raise ValueError(
                f"layer {i} ({layer.name}) normalises over one input feature, which makes every "
                "input 0: the kernels are degenerate. Remove it or give the inputs more features"
            )
    last = max(i for i, layer in enumerate(net.layers) if layer.leaves())
    for i, layer in enumerate(net.layers[last + 1 :], start=last + 1):
        if getattr(layer, "normalizes", False):
            # its map is the limit of a mean and a variance over infinitely many features; here
            # they are over the k outputs (k = 1: every output is 0, the NTK too, at any width)
            raise ValueError(
                f"layer {i} ({layer.name}) normalises the network's {net.output_shape(shape)[-1]} "
                "output(s), a finite number of features, which its infinite-width map does not "
                "describe (one output it makes 0): the analytic kernels of this network are not "
                "defined. Put it before the last Dense, or use the empirical kernels"
            )
    F1 = _apply_prefix(net, prefix, X1)
    F2 = F1 if symmetric else _apply_prefix(net, prefix, X2)
    start = _input_state(F1, None if symmetric else F2, symmetric)
    nngp, ntk = start.nngp, start.ntk
    N1, N2 = nngp.shape
    layers = net.layers[first:]
    pools = {}
    maps = ActivationMaps()  # no series on spatial features (their activations have closed forms)
    if len(start.shape) == 1:
        # the layers over the points alone (no pairs): every activation's series pieces, of all the
        # points; a layer order without a kernel is refused here, before any pair
        maps = ActivationMaps([], record=True)
        none = np.empty((N1, 0))
        _through(layers, first, start.replace(nngp=none, ntk=none, serial=True, pool={}, expect=maps))

    def run(box):
        # one cache-sized tile through every layer (the maps are element-wise over pairs), serially
        i0, i1, j0, j1 = box
        diagonal = symmetric and i0 == j0
        v1, v2 = start.var1[i0:i1], start.var2[j0:j1]
        pool = pools.setdefault(threading.get_ident(), {})  # this thread's buffers, reused tile to tile
        tile = start.replace(
            var1=v1,
            var2=v1 if diagonal else v2,
            symmetric=diagonal,
            inputs=(F1[i0:i1], F2[j0:j1]),
            serial=True,
            pool=pool,
        )
        K, T = tile.workspace("tile K", nngp[i0:i1, j0:j1]), tile.workspace("tile T", nngp[i0:i1, j0:j1])
        np.copyto(K, nngp[i0:i1, j0:j1])
        T.fill(0.0)
        tile = _through(layers, first, tile.replace(nngp=K, ntk=T, expect=maps.for_tile(i0, j0)))
        # a diagonal tile's lower triangle is not computed (the mirror overwrites it)
        valid = (np.triu(tile.nngp), np.triu(tile.ntk)) if diagonal else (tile.nngp, tile.ntk)
        if not (np.isfinite(valid[0].sum()) and np.isfinite(valid[1].sum())):
            raise ValueError("the analytic kernels overflowed: lower the weight_std values or standardise the features")
        nngp[i0:i1, j0:j1] = tile.nngp
        ntk[i0:i1, j0:j1] = tile.ntk
        return tile.shape

    boxes = [
        (i0, min(i0 + _TILE, N1), j0, min(j0 + _TILE, N2))
        for i0 in range(0, N1, _TILE)
        for j0 in range(i0 if symmetric else 0, N2, _TILE)
    ]
    out_shape = run(boxes[0])  # a layer order without a kernel is refused before the other tiles
    if len(out_shape) != 1:
        raise ValueError(f"the network's output has per-example shape {out_shape}; it must be flat")
    _on_threads(run, boxes[1:])
    if symmetric:
        run_in_threads(_mirror_rows, nngp, ntk)
    return nngp, ntk


__all__ = ["network_analytic_kernels", "activation_map", "ActivationMaps", "ActivationLayerPieces"]
