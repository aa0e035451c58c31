"""What a tile is, and kernels as lazy Dask arrays of tiles.

- :class:`KernelSpec`: which kernel the tiles hold (the analytic NTK/NNGP of a network, or its
  empirical NTK at given parameters) and how one tile is computed: by the in-memory functions of
  :mod:`ntksolve.kernels` on two row blocks of inputs (so the same numba kernels).
- :func:`empirical_ntk`, :func:`analytic_kernels`: those kernels as ``dask.array`` objects, one
  task per tile (the NNGP and the NTK of a tile share one task). A symmetric kernel computes only
  the tiles on and above the diagonal; those below are their transposes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Dict, Optional, Tuple

import numpy as np

from ntksolve import kernels as _kernels
from ntksolve._extras import require
from ntksolve._validation import check_dtype, check_inputs
from ntksolve.dask.chunks import _offsets, resolve_chunks
from ntksolve.dask.runner import _task_threads
from ntksolve.kernels.empirical import _check_net, _prepare_inputs
from ntksolve.kernels.network_empirical import check_trace
from ntksolve.nets.mlp import MLP

dask = require("dask", "dask", "ntksolve.dask (kernel tiles on Dask)")
da = require("dask.array", "dask", "ntksolve.dask (kernel tiles on Dask)")
HighLevelGraph = require("dask.highlevelgraph", "dask", "ntksolve.dask (kernel tiles on Dask)").HighLevelGraph


def _sha(*arrays_or_text) -> str:
    h = hashlib.sha256()
    for a in arrays_or_text:
        if isinstance(a, np.ndarray):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(str(a).encode())
    return h.hexdigest()


class KernelSpec:
    """Which kernel the tiles hold: the analytic NTK/NNGP of ``net``, or its empirical NTK at ``params``.

    Parameters
    ----------
    net : MLP
    params : list of (W, b), optional
        Given: the empirical (finite-width) NTK at these parameters, in their dtype. ``None``: the
        analytic (infinite-width) kernel, float64, NTK parameterisation only.
    kernel : {"ntk", "nngp"}, default "ntk"
        ``"nngp"`` only for the analytic kernels.
    trace : bool, default True
        Empirical NTK only: the output-traced ``(N1, N2)`` kernel, or the full ``(N1, N2, k, k)``.

    Notes
    -----
    A spec is what the Zarr fingerprint and the Dask task names identify, together with the
    inputs; two equal specs give the same tiles.
    """

    def __init__(self, net: MLP, params=None, *, kernel: str = "ntk", trace: bool = True) -> None:
        net = _check_net(net)
        trace = check_trace(trace)
        if kernel not in ("ntk", "nngp", "pair"):
            raise ValueError(f"kernel must be 'ntk' or 'nngp', got {kernel!r}")
        self.net = net
        self.kernel = kernel
        self.analytic = params is None
        if self.analytic:
            if net.parameterization != "ntk":
                # the same message as the in-memory function, raised before any task is built
                _kernels.analytic_kernels(net, np.zeros((1, 1)))
            self.params = None
            self.dtype = np.dtype(np.float64)
            self.trace = True
            self.n_features = None
        else:
            if kernel != "ntk":
                raise ValueError("the empirical tiled kernel is the NTK; use params=None for the analytic NNGP")
            d, dt = net.check_params(params)
            self.params = [(np.ascontiguousarray(W), np.ascontiguousarray(b)) for W, b in params]
            self.dtype = np.dtype(dt)
            self.trace = trace
            self.n_features = d

    # -- identity ------------------------------------------------------------------------------
    def components(self) -> Dict[str, str]:
        """Hashes of what defines the kernel: ``{"kernel": ..., "params": ...}`` (hex sha256)."""
        desc = json.dumps(
            {"analytic": self.analytic, "kernel": self.kernel, "trace": self.trace, "net": self.net.get_config()},
            sort_keys=True,
        )
        parts = {"kernel": _sha(desc)}
        if not self.analytic:
            parts["params"] = _sha(*[a for pair in self.params for a in pair])
        return parts

    def describe(self) -> dict:
        """A human-readable description (stored beside the fingerprint in a Zarr store)."""
        return {
            "type": ("analytic " if self.analytic else "empirical ") + self.kernel,
            "trace": self.trace,
            "net": self.net.get_config(),
        }

    def __dask_tokenize__(self):
        return ("ntksolve.KernelSpec", tuple(sorted(self.components().items())))

    def __repr__(self) -> str:
        kind = "analytic" if self.analytic else "empirical"
        return f"KernelSpec({kind} {self.kernel}, {self.net!r}, trace={self.trace})"

    # -- inputs and tiles ------------------------------------------------------------------------
    @property
    def tile_extra_shape(self) -> Tuple[int, ...]:
        """Trailing tile axes: ``(2,)`` leading for the pair, ``(k, k)`` for the full empirical kernel."""
        if not self.analytic and not self.trace:
            k = self.net.n_outputs
            return (k, k)
        return ()

    def prepare(self, X, name: str = "X", n_features: Optional[int] = None) -> np.ndarray:
        """Validate inputs as the in-memory functions do; shape (N, d), C-ordered, the kernel's dtype."""
        d = self.n_features if self.n_features is not None else n_features
        return check_inputs(X, name=name, n_features=d, dtype=self.dtype)

    def tile(self, XI: np.ndarray, XJ: Optional[np.ndarray]) -> np.ndarray:
        """One tile, by the in-memory function: ``K(XI, XJ)``, or the symmetric ``K(XI, XI)`` for ``XJ=None``.

        Returns
        -------
        ndarray, shape (bI, bJ), (bI, bJ, k, k) for the full empirical NTK, or (2, bI, bJ) for the
        analytic pair (NNGP first).
        """
        if self.analytic:
            pair = _kernels.analytic_kernels(self.net, XI, XJ)
            if self.kernel == "ntk":
                return pair.ntk
            if self.kernel == "nngp":
                return pair.nngp
            return np.stack([pair.nngp, pair.ntk])
        return _kernels.empirical_ntk(self.net, self.params, XI, XJ, trace=self.trace)


def _kernel_tile(spec: KernelSpec, XI, XJ, dtype) -> np.ndarray:
    """Task: one tile in the spec's dtype, then rounded to the storage ``dtype``."""
    with _task_threads():
        t = spec.tile(XI, XJ)
    return t if dtype is None or t.dtype == dtype else t.astype(dtype)


def _transpose_tile(t: np.ndarray, pair: bool) -> np.ndarray:
    """Task: the tile below the diagonal from the one above, ``K(x_j, x_i)_{ab} = K(x_i, x_j)_{ba}``."""
    if pair:
        return np.ascontiguousarray(t.transpose(0, 2, 1))
    if t.ndim == 4:
        return np.ascontiguousarray(t.transpose(1, 0, 3, 2))
    return np.ascontiguousarray(t.T)


def _tiled_array(spec: KernelSpec, X1, X2, chunks, dtype=None) -> "da.Array":
    """The kernel ``K(X1, X2)`` as a dask array, one task per tile (upper tiles only if symmetric)."""
    symmetric = X2 is None
    N1 = X1.shape[0]
    N2 = N1 if symmetric else X2.shape[0]
    rows, cols = resolve_chunks(chunks, N1, None if symmetric else N2)
    dtype = spec.dtype if dtype is None else check_dtype(dtype)
    pair = spec.kernel == "pair"
    extra = spec.tile_extra_shape
    token = dask.base.tokenize(spec, X1, X2, rows, cols, str(dtype))
    name = f"ntksolve-{'pair' if pair else spec.kernel}-{token}"
    x1name, x2name = f"ntksolve-X1-{token}", f"ntksolve-X2-{token}"
    r_off, c_off = _offsets(rows), _offsets(cols)
    dsk = {}
    for i in range(len(rows)):
        dsk[(x1name, i)] = X1[r_off[i] : r_off[i + 1]]
    if not symmetric:
        for j in range(len(cols)):
            dsk[(x2name, j)] = X2[c_off[j] : c_off[j + 1]]
    lead = (0,) if pair else ()
    trail = (0,) * len(extra)
    for i in range(len(rows)):
        for j in range(len(cols)):
            key = (name, *lead, i, j, *trail)
            if symmetric and i > j:
                dsk[key] = (_transpose_tile, (name, *lead, j, i, *trail), pair)
            elif symmetric:
                dsk[key] = (_kernel_tile, spec, (x1name, i), None if i == j else (x1name, j), dtype)
            else:
                dsk[key] = (_kernel_tile, spec, (x1name, i), (x2name, j), dtype)
    chunks_all = (((2,),) if pair else ()) + (rows, cols) + tuple((e,) for e in extra)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(graph, name, chunks=chunks_all, dtype=dtype)


def empirical_ntk(net: MLP, params, X1, X2=None, *, chunks, trace: bool = True) -> "da.Array":
    """The empirical NTK as a lazy ``dask.array``, tile by tile.

    Each tile is :func:`ntksolve.kernels.empirical_ntk` on two row blocks of the inputs; a
    symmetric kernel (``X2=None``) computes the tiles on and above the diagonal and transposes
    them below. Nothing is computed until the array is (with any Dask scheduler).

    Parameters
    ----------
    net : MLP
    params : list of (W, b)
    X1 : array_like, shape (N1, d)
    X2 : array_like, shape (N2, d), optional
    chunks : int or sequence
        Inputs per tile edge; see :func:`resolve_chunks`.
    trace : bool, default True

    Returns
    -------
    theta : dask.array.Array, shape (N1, N2) or (N1, N2, k, k), the params' dtype

    Examples
    --------
    >>> theta = ntksolve.dask.empirical_ntk(net, params, X, chunks=4096)  # doctest: +SKIP
    >>> theta.to_zarr("ntk.zarr")                                        # doctest: +SKIP
    """
    spec = KernelSpec(net, params, trace=trace)
    X1, X2, *_ = _prepare_inputs(net, params, X1, X2)
    return _tiled_array(spec, X1, X2, chunks)


def analytic_kernels(net: MLP, X1, X2=None, *, chunks) -> "_kernels.Kernels":
    """The infinite-width NNGP and NTK as lazy ``dask.array`` objects, tile by tile.

    One task per tile computes both kernels (one call of :func:`ntksolve.kernels.analytic_kernels`
    on two row blocks); the two arrays share those tasks, so computing both together costs one pass.

    Parameters
    ----------
    net : MLP
    X1 : array_like, shape (N1, d)
    X2 : array_like, shape (N2, d), optional
    chunks : int or sequence
        See :func:`resolve_chunks`.

    Returns
    -------
    Kernels
        ``(nngp, ntk)``, each a dask array of shape (N1, N2), float64.
    """
    spec = KernelSpec(net, None, kernel="pair")
    X1 = check_inputs(X1, name="X1")
    if X2 is not None:
        X2 = check_inputs(X2, name="X2", n_features=X1.shape[1])
    both = _tiled_array(spec, X1, X2, chunks)
    return _kernels.Kernels(nngp=both[0], ntk=both[1])


__all__ = ["KernelSpec", "analytic_kernels", "empirical_ntk"]
