"""Kernels beyond one machine's memory: tiles on Dask, stored in Zarr, solved by Krylov methods.

The optional extra ``pip install 'ntksolve[dask]'`` (Dask, distributed, Zarr). ``import ntksolve``
never imports this module; :func:`ntksolve.kernels.empirical_ntk` and friends dispatch here when
given ``chunks=``.

What is here
------------
- :func:`empirical_ntk`, :func:`analytic_kernels`: the kernels of :mod:`ntksolve.kernels` as
  ``dask.array`` objects. Every tile is one task: a call of the in-memory function on two row
  blocks of inputs (so the same numba kernels; the NNGP and the NTK of a tile share one task).
  A symmetric kernel computes only the tiles on and above the diagonal; those below are their
  transposes.
- :func:`store_kernel`, :func:`open_kernel`: a kernel written tile by tile to a Zarr store,
  labelled with a fingerprint of what it is (network, inputs, parameters, dtype, chunks). A
  per-tile completion marker is written after each tile, so a rerun after an interruption computes
  only the missing tiles, and a store holding another kernel is refused.
- :class:`TiledKernelOperator`: the train kernel ``Theta(X, X)`` as upper tiles held in the
  workers' memory (or read from a Zarr store at each product), with products ``Theta V`` done tile
  by tile on the workers in float64 whatever the tile's storage dtype, and products with the
  test-side kernel ``Theta(X*, X) V`` streamed: each test tile is computed, used and dropped.
- :func:`fit_tiled` -> :class:`TiledFit`: the linearised training dynamics of ``CONVENTIONS.md``
  from products alone. ``t = inf`` (kernel regression) by conjugate gradients with a Nyström
  preconditioner (``ntksolve._nystrom``); finite ``t`` by the Lanczos process (``ntksolve._cg``).

Schedulers
----------
``scheduler=None`` uses the current ``dask.distributed`` client if there is one, else Dask's
threaded scheduler. Also accepted: ``"threads"``, ``"sync"``, ``"processes"``, a
``distributed.Client``, or a scheduler address such as ``"tcp://10.0.0.5:8786"`` (connected within
``CONNECT_TIMEOUT_S`` seconds, or a ``ConnectionError`` naming the address).

Threads
-------
A Dask worker with ``T`` threads runs ``T`` tasks at once. Every task here therefore runs its numba
and BLAS code on one thread (``numba.set_num_threads(1)`` in the task's thread; BLAS limited to one
thread for the whole worker process through ``threadpoolctl``): ``T`` busy cores per worker, its
thread count, never ``T`` tasks each starting a pool as wide as the machine. The threaded
scheduler's pool gets the same treatment for the duration of a computation.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import threading
import time
import warnings
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.delayed import delayed
    from dask.highlevelgraph import HighLevelGraph
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ntksolve.distributed needs Dask, distributed and Zarr: pip install 'ntksolve[dask]'"
    ) from exc

from ntksolve import kernels as _kernels
from ntksolve.kernels.empirical import _check_net, _prepare_inputs
from ntksolve._jit.tiles import symmetric_tile_products, tile_products
from ntksolve.dynamics.cg import preconditioned_cg
from ntksolve.dynamics.krylov import lanczos_function_products
from ntksolve._config import KRYLOV_TOL
from ntksolve.dynamics.rules import resolve_rule
from ntksolve.dynamics.spectral import null_mask as _null_mask
from ntksolve.dynamics.nystrom import NystromPreconditioner, nystrom_block, nystrom_cholesky, nystrom_eig, nystrom_shift
from ntksolve._validation import check_dtype, check_inputs, fmt_bytes
from ntksolve.nets.mlp import MLP

from ntksolve._config import (  # tunables live in the config module, with their reasons
    CONNECT_TIMEOUT_S,
    DEFAULT_LANDMARKS,
    DEFAULT_CG_TOL,
    TILE_MEMORY_FRACTION,
)

_STORE_FORMAT = 1
_STORE_ATTR = "ntksolve_kernel"
_LOCAL_SCHEDULERS = ("threads", "threading", "sync", "synchronous", "single-threaded", "processes", "multiprocessing")


# ---------------------------------------------------------------------------------------------
# chunks
# ---------------------------------------------------------------------------------------------
def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _axis_chunks(spec, n: int, what: str) -> Tuple[int, ...]:
    """Block sizes along one axis of length ``n``: a positive int, or sizes summing to ``n``."""
    if _is_int(spec):
        if spec <= 0:
            raise ValueError(f"chunks must be a positive int or a sequence of positive ints, got {spec!r}")
        c = int(spec)
        return tuple([c] * (n // c) + ([n % c] if n % c else []))
    try:
        sizes = tuple(spec)
    except TypeError:
        raise ValueError(
            f"chunks must be a positive int or a sequence of positive ints summing to the number of "
            f"inputs, got {spec!r}"
        ) from None
    if not sizes or not all(_is_int(s) and s > 0 for s in sizes):
        raise ValueError(f"chunks for {what} must be positive ints, got {sizes!r}")
    if sum(sizes) != n:
        raise ValueError(
            f"chunks for {what} must tile its {n} inputs exactly, but {sizes!r} sums to {sum(sizes)}"
        )
    return tuple(int(s) for s in sizes)


def resolve_chunks(chunks, n1: int, n2: Optional[int] = None) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Row and column block sizes of an ``(n1, n2)`` kernel.

    Parameters
    ----------
    chunks : int, sequence of int, or pair of those
        An int ``c``: blocks of ``c`` inputs (the last one smaller) on both axes. A sequence of ints
        summing to ``n1``: the row blocks, also used for the columns when ``n2`` is ``None`` (a
        symmetric kernel) or equals ``n1``. A pair ``(rows, cols)`` of ints or sequences: one per axis.
    n1 : int
        Rows, the number of inputs ``X1``.
    n2 : int, optional
        Columns, the number of inputs ``X2``; ``None`` for the symmetric ``K(X1, X1)``.

    Returns
    -------
    rows, cols : tuple of int
        Summing to ``n1`` and ``n2``.

    Raises
    ------
    ValueError
        Non-positive sizes, or sizes that do not sum to the data's length.
    """
    if chunks is None:
        raise ValueError("chunks is required: a positive int (inputs per tile edge) or per-axis block sizes")
    symmetric = n2 is None
    n2 = n1 if symmetric else n2
    if (
        not _is_int(chunks)
        and isinstance(chunks, (tuple, list))
        and len(chunks) == 2
        and not all(_is_int(c) for c in chunks)
    ):
        if symmetric:
            rows = _axis_chunks(chunks[0], n1, "the rows")
            cols = _axis_chunks(chunks[1], n2, "the columns")
            if rows != cols:
                raise ValueError(
                    f"a symmetric kernel needs the same blocks on both axes, got {rows!r} and {cols!r}"
                )
            return rows, cols
        return _axis_chunks(chunks[0], n1, "X1"), _axis_chunks(chunks[1], n2, "X2")
    rows = _axis_chunks(chunks, n1, "X1" if not symmetric else "X")
    if _is_int(chunks) or symmetric or n2 == n1:
        return rows, rows if n2 == n1 else _axis_chunks(chunks, n2, "X2")
    raise ValueError(
        f"chunks {tuple(chunks)!r} sum to len(X1) = {n1} but X2 has {n2} inputs; give one sequence per "
        "axis, chunks=(chunks_X1, chunks_X2), or an int"
    )


def _offsets(sizes: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# threads inside tasks
# ---------------------------------------------------------------------------------------------
_BLAS_LIMITED_IN_PROCESS = False
_LIMIT_LOCK = threading.Lock()


def _current_worker():
    try:
        from distributed import get_worker
    except ImportError:  # pragma: no cover
        return None
    try:
        return get_worker()
    except ValueError:
        return None


def _limit_task_threads() -> None:
    """One numba thread for this task's thread; one BLAS thread for a worker process (see module doc).

    ``numba.set_num_threads`` is per calling thread, so it is set in every task. The BLAS limit is
    process-wide: on a ``dask.distributed`` worker, whose process exists only to run tasks, it is
    set once and kept; under a local scheduler :class:`_Runner` limits BLAS around each computation
    instead, so that the caller's own numpy is untouched afterwards.
    """
    import numba

    numba.set_num_threads(1)
    global _BLAS_LIMITED_IN_PROCESS
    if not _BLAS_LIMITED_IN_PROCESS and _current_worker() is not None:
        with _LIMIT_LOCK:
            if not _BLAS_LIMITED_IN_PROCESS:
                from threadpoolctl import threadpool_limits

                threadpool_limits(1)
                _BLAS_LIMITED_IN_PROCESS = True


# ---------------------------------------------------------------------------------------------
# what a tile is
# ---------------------------------------------------------------------------------------------
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
        if kernel not in ("ntk", "nngp", "pair"):
            raise ValueError(f"kernel must be 'ntk' or 'nngp', got {kernel!r}")
        self.net = net
        self.kernel = kernel
        self.analytic = params is None
        if self.analytic:
            if not net.supports_analytic:
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
            self.trace = bool(trace)
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
    _limit_task_threads()
    t = spec.tile(XI, XJ)
    return t if dtype is None or t.dtype == dtype else t.astype(dtype)


def _transpose_tile(t: np.ndarray, pair: bool) -> np.ndarray:
    """Task: the tile below the diagonal from the one above, ``K(x_j, x_i)_{ab} = K(x_i, x_j)_{ba}``."""
    if pair:
        return np.ascontiguousarray(t.transpose(0, 2, 1))
    if t.ndim == 4:
        return np.ascontiguousarray(t.transpose(1, 0, 3, 2))
    return np.ascontiguousarray(t.T)


# ---------------------------------------------------------------------------------------------
# kernels as dask arrays
# ---------------------------------------------------------------------------------------------
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
    >>> theta = distributed.empirical_ntk(net, params, X, chunks=4096)   # doctest: +SKIP
    >>> theta.to_zarr("ntk.zarr")                                         # doctest: +SKIP
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


# ---------------------------------------------------------------------------------------------
# schedulers
# ---------------------------------------------------------------------------------------------
class _Runner:
    """Runs Dask collections on the scheduler the user named; owns a client it opened itself."""

    def __init__(self, scheduler=None, *, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.client = None
        self.local = None
        self._own = False
        self.description = ""
        if scheduler is None:
            try:
                from distributed import default_client

                self.client = default_client()
            except (ImportError, ValueError):
                self.local = "threads"
        elif isinstance(scheduler, str):
            if scheduler in _LOCAL_SCHEDULERS:
                self.local = scheduler
            elif "://" in scheduler or ":" in scheduler:
                self.client = _connect(scheduler, connect_timeout)
                self._own = True
            else:
                raise ValueError(
                    f"unknown scheduler {scheduler!r}: use None, 'threads', 'sync', 'processes', a "
                    "distributed.Client, or a scheduler address such as 'tcp://host:8786'"
                )
        else:
            try:
                from distributed import Client
            except ImportError:  # pragma: no cover
                Client = ()
            if not isinstance(scheduler, Client):
                raise ValueError(
                    f"scheduler must be None, a name ('threads', 'sync', 'processes'), a scheduler "
                    f"address or a distributed.Client, got {type(scheduler).__name__}"
                )
            self.client = scheduler
        self.description = f"client {self.client.scheduler.address}" if self.client is not None else self.local

    def _local_context(self):
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1) if self.local in ("threads", "threading") else _null_context()

    def compute(self, objs: list) -> list:
        """Values of a list of Dask collections."""
        if self.client is not None:
            return self.client.gather(self.client.compute(objs))
        with self._local_context():
            return list(dask.compute(*objs, scheduler=self.local))

    def persist(self, objs: list) -> list:
        """The collections, computed and held (in the workers' memory, or in this process)."""
        if self.client is not None:
            from distributed import futures_of, wait

            out = self.client.persist(objs)
            with self.client.as_current():  # wait() looks for the current client
                wait(futures_of(out))
            return list(out)
        with self._local_context():
            return list(dask.persist(*objs, scheduler=self.local))

    def memory_limit(self) -> float:
        """Bytes the tiles may take across the workers (see ``TILE_MEMORY_FRACTION``)."""
        if self.client is not None:
            workers = self.client.scheduler_info(n_workers=-1)["workers"] if _accepts_n_workers(self.client) \
                else self.client.scheduler_info()["workers"]
            limits = [w.get("memory_limit") or 0 for w in workers.values()]
            total = sum(limits) if limits and all(limits) else float("inf")
        else:
            from ntksolve._validation import available_memory

            total = available_memory()
        return TILE_MEMORY_FRACTION * total

    def close(self) -> None:
        if self._own and self.client is not None:
            self.client.close()
        self.client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _accepts_n_workers(client) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


class _null_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _connect(address: str, timeout: float):
    """A ``distributed.Client`` for ``address``, or a ``ConnectionError`` naming it within ``timeout`` s."""
    from distributed import Client

    t0 = time.monotonic()
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(
            f"could not reach the Dask scheduler at {address!r} within {timeout:g} s "
            f"(after {time.monotonic() - t0:.1f} s: {exc}); check that a scheduler runs there "
            "(`dask scheduler`) and that the address and port are right"
        ) from None


# ---------------------------------------------------------------------------------------------
# Zarr storage
# ---------------------------------------------------------------------------------------------
class StoreResult(NamedTuple):
    """What :func:`store_kernel` did.

    Attributes
    ----------
    kernel : dask.array.Array
        The stored kernel read lazily from the store, shape (N1, N2) (or (N1, N2, k, k)).
    path : str
    n_tiles : int
        Tiles the kernel consists of (computed ones only: the upper triangle when symmetric).
    n_computed : int
        Tiles computed by this call; the others were already complete in the store.
    """

    kernel: "da.Array"
    path: str
    n_tiles: int
    n_computed: int


def _zarr():
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover
        raise ImportError("storing kernels needs Zarr: pip install 'ntksolve[dask]'") from exc
    return zarr


def _create_array(group, name: str, **kw):
    if hasattr(group, "create_array"):  # zarr >= 3
        return group.create_array(name, **kw)
    return group.create_dataset(name, **kw)  # pragma: no cover - zarr 2


def _regular(sizes: Tuple[int, ...]) -> bool:
    return all(s == sizes[0] for s in sizes[:-1]) and sizes[-1] <= sizes[0]


def _store_identity(spec: KernelSpec, X1, X2, rows, cols, dtype) -> dict:
    parts = dict(spec.components())
    parts["X1"] = _sha(X1)
    parts["X2"] = "symmetric" if X2 is None else _sha(X2)
    parts["dtype"] = np.dtype(dtype).name
    parts["chunks"] = json.dumps([list(rows), list(cols)])
    return parts


def _open_store(path: str, identity: dict, description: dict, shape, tile_shape, nb, dtype):
    """Open (or create) the store at ``path`` for this kernel; refuse one that holds another."""
    zarr = _zarr()
    group = zarr.open_group(str(path), mode="a")
    attrs = dict(group.attrs)
    if _STORE_ATTR in attrs:
        stored = attrs[_STORE_ATTR].get("identity", {})
        if stored != identity:
            differ = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            raise ValueError(
                f"the Zarr store at {str(path)!r} holds a different kernel ({', '.join(differ)} differ: "
                f"it holds {attrs[_STORE_ATTR].get('description')}); refusing to mix tiles of two kernels. "
                "Use another path, or delete this store to recompute"
            )
    else:
        if len(list(group.keys())):
            raise ValueError(
                f"{str(path)!r} is a Zarr group that ntksolve did not write (it has members "
                f"{sorted(group.keys())[:5]}); refusing to write a kernel into it"
            )
        # identity first: a store interrupted right after this is still recognised as ours
        group.attrs[_STORE_ATTR] = {"format": _STORE_FORMAT, "identity": identity, "description": description}
    names = set(group.keys())
    if "kernel" not in names:
        _create_array(group, "kernel", shape=tuple(shape), chunks=tuple(tile_shape), dtype=dtype, fill_value=np.nan)
    if "done" not in names:
        _create_array(group, "done", shape=tuple(nb), chunks=(1, 1), dtype="uint8", fill_value=0)
    return group


def _store_tile(spec, XI, XJ, kernel_path, done_path, i, j, r0, r1, c0, c1, mirror, dtype, after_tile):
    """Task: compute tile (i, j), write it (and its mirror below the diagonal), then its marker."""
    zarr = _zarr()
    t = _kernel_tile(spec, XI, XJ, dtype)
    arr = zarr.open_array(kernel_path, mode="r+")
    arr[r0:r1, c0:c1] = t
    if mirror:
        arr[c0:c1, r0:r1] = _transpose_tile(t, False)
    zarr.open_array(done_path, mode="r+")[i, j] = 1  # written last: the tile is complete
    if after_tile is not None:
        after_tile(i, j)
    return 1


def store_kernel(
    spec: KernelSpec,
    X1,
    path,
    *,
    chunks,
    X2=None,
    dtype=None,
    scheduler=None,
    _after_tile=None,
) -> StoreResult:
    """Compute a kernel tile by tile into a Zarr store, resuming whatever an earlier run left.

    The store holds the array ``kernel`` (the full matrix, symmetric kernels mirrored), a
    per-tile marker array ``done`` written after each tile, and in its attributes the identity of
    the kernel: hashes of the network and kernel type, the inputs, the parameters (empirical),
    the dtype and the chunks. A rerun with the same arguments computes only the tiles whose marker
    is missing; a store with another identity is refused.

    Parameters
    ----------
    spec : KernelSpec
    X1 : array_like, shape (N1, d)
    path : str or path-like
        A directory (created if missing).
    chunks : int or sequence
        Tile edges, regular (all equal but a smaller last one): they are the Zarr chunks.
    X2 : array_like, shape (N2, d), optional
        Defaults to ``X1``: a symmetric kernel, upper tiles computed, each written twice.
    dtype : float64 or float32, optional
        Storage dtype; defaults to the spec's. Tiles are computed in the spec's dtype and rounded.
    scheduler : optional
        See the module docstring.

    Returns
    -------
    StoreResult

    Raises
    ------
    ValueError
        Bad or irregular chunks; a store holding another kernel.
    """
    if spec.kernel == "pair":
        raise ValueError("store one kernel at a time: KernelSpec(net, kernel='ntk') or kernel='nngp'")
    X1 = spec.prepare(X1, "X1")
    symmetric = X2 is None
    if not symmetric:
        X2 = spec.prepare(X2, "X2", n_features=X1.shape[1])
    N1 = X1.shape[0]
    N2 = N1 if symmetric else X2.shape[0]
    rows, cols = resolve_chunks(chunks, N1, None if symmetric else N2)
    if not (_regular(rows) and _regular(cols)):
        raise ValueError(
            f"a Zarr store needs regular chunks (all equal, the last one possibly smaller), got rows "
            f"{rows!r} and columns {cols!r}; pass an int"
        )
    dtype = spec.dtype if dtype is None else check_dtype(dtype)
    extra = spec.tile_extra_shape
    path = os.fspath(path)
    identity = _store_identity(spec, X1, X2, rows, cols, dtype)
    _open_store(path, identity, spec.describe(), (N1, N2) + extra, (rows[0], cols[0]) + extra,
                (len(rows), len(cols)), dtype)
    zarr = _zarr()
    kernel_path, done_path = os.path.join(path, "kernel"), os.path.join(path, "done")
    done = np.asarray(zarr.open_array(done_path, mode="r")[:]).astype(bool)
    r_off, c_off = _offsets(rows), _offsets(cols)
    wanted = [(i, j) for i in range(len(rows)) for j in range(len(cols)) if not symmetric or i <= j]
    missing = [(i, j) for (i, j) in wanted if not done[i, j]]
    if missing:
        spec_d = delayed(spec, pure=True)
        Xb1 = {i: delayed(X1[r_off[i] : r_off[i + 1]], pure=True) for i in {i for i, _ in missing}}
        Xb2 = Xb1 if symmetric else {j: delayed(X2[c_off[j] : c_off[j + 1]], pure=True) for j in {j for _, j in missing}}
        if symmetric:
            for j in {j for _, j in missing}:
                Xb2.setdefault(j, delayed(X1[c_off[j] : c_off[j + 1]], pure=True))
        tasks = []
        for i, j in missing:
            XJ = None if symmetric and i == j else Xb2[j]
            tasks.append(
                delayed(_store_tile, pure=False)(
                    spec_d, Xb1[i], XJ, kernel_path, done_path, i, j,
                    int(r_off[i]), int(r_off[i + 1]), int(c_off[j]), int(c_off[j + 1]),
                    symmetric and i != j, dtype, _after_tile,
                )
            )
        with _Runner(scheduler) as runner:
            runner.compute(tasks)
    return StoreResult(kernel=da.from_zarr(kernel_path), path=path, n_tiles=len(wanted), n_computed=len(missing))


def open_kernel(path) -> "da.Array":
    """The kernel in a complete store written by :func:`store_kernel`, as a lazy dask array.

    Raises
    ------
    ValueError
        Not an ntksolve store, or some tiles are missing (rerun :func:`store_kernel` to finish).
    """
    zarr = _zarr()
    path = os.fspath(path)
    group = zarr.open_group(path, mode="r")
    if _STORE_ATTR not in dict(group.attrs):
        raise ValueError(f"{path!r} is not a kernel store written by ntksolve.distributed.store_kernel")
    done = np.asarray(group["done"][:]).astype(bool)
    ident = dict(group.attrs)[_STORE_ATTR]["identity"]
    n_needed = done.size if ident["X2"] != "symmetric" else done.shape[0] * (done.shape[0] + 1) // 2
    n_done = int(np.triu(done).sum() if ident["X2"] == "symmetric" else done.sum())
    if n_done < n_needed:
        raise ValueError(
            f"the kernel store at {path!r} is incomplete ({n_done} of {n_needed} tiles); rerun "
            "store_kernel with the same arguments to compute the missing ones"
        )
    return da.from_zarr(os.path.join(path, "kernel"))


def _read_tile(kernel_path: str, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Task: one tile read from a Zarr store."""
    return np.ascontiguousarray(_zarr().open_array(kernel_path, mode="r")[r0:r1, c0:c1])


# ---------------------------------------------------------------------------------------------
# the train kernel as an operator
# ---------------------------------------------------------------------------------------------
def _diag_products(t, V):
    """Task: ``K_ii V_i`` for a diagonal tile (stored whole)."""
    return tile_products(t, V)


def _sum_blocks(*parts):
    """Task: the sum of a row block's partial products, in the fixed order given (reproducible)."""
    out = parts[0].copy()
    for p in parts[1:]:
        out += p
    return out


def _sum_selected(parts, which):
    """Task: the sum of partial products, ``which[p]`` picking one half of a symmetric tile's pair."""
    out = None
    for part, w in zip(parts, which):
        block = part if w < 0 else part[w]
        out = block.copy() if out is None else out.__iadd__(block)
    return out


def _nystrom_block_task(spec, XI, Xm, rows, cols, nu, C):
    """Task: ``(B_i, B_i^T B_i)`` of one row block (see ``ntksolve._nystrom``)."""
    _limit_task_threads()
    return nystrom_block(spec.tile(XI, Xm).astype(np.float64, copy=False), rows, cols, nu, C)


def _nystrom_gram_sum(*pairs):
    """Task: ``sum_i B_i^T B_i``, in block order."""
    G = pairs[0][1].copy()
    for p in pairs[1:]:
        G += p[1]
    return G


def _nystrom_basis(pair, W):
    """Task: the block ``U_i = B_i W`` of the orthonormal basis."""
    _limit_task_threads()
    return pair[0] @ W


def _tile_diagonal(t):
    return np.diag(t).astype(np.float64)


def _cross_products(spec, XA, XB, V):
    """Task: ``K(XA, XB) V`` from a test-side tile that is computed, used and dropped."""
    _limit_task_threads()
    t = spec.tile(XA, XB)
    return t.astype(np.float64, copy=False) @ V


class TiledKernelOperator:
    """The symmetric train kernel ``Theta(X, X)`` as tiles on Dask, known through its products.

    The tiles on and above the diagonal are computed once (or read from a Zarr store) and held in
    the workers' memory, ``N^2/2`` entries of the storage dtype in all; a product ``Theta V`` is
    one task per tile on the worker that holds it (both ``K_ij V_j`` and ``K_ij^T V_i`` in one
    pass over the tile, accumulated in float64) and one sum per row block.

    Parameters
    ----------
    spec : KernelSpec
        An ``(N, N)`` kernel: the analytic NTK/NNGP or the traced empirical NTK.
    X : array_like, shape (N, d)
    chunks : int or sequence
        Inputs per tile edge (see :func:`resolve_chunks`).
    scheduler : optional
        See the module docstring. The operator keeps its connection until :meth:`close`.
    dtype : float64 or float32, optional
        Storage dtype of the tiles (default: the spec's). float32 halves the memory; products
        still accumulate in float64, so the operator is the rounded kernel, applied exactly.
    store : str or path-like, optional
        A Zarr store (see :func:`store_kernel`): missing tiles are computed into it first, then
        the tiles are read from it.
    in_memory : bool, default True
        With ``store``: ``False`` reads the tiles from the store at every product instead of
        holding them, for kernels larger than the cluster's memory.

    Attributes
    ----------
    shape : (N, N)
    n_tiles : int
    setup_seconds : float
        Wall time spent computing/reading and persisting the tiles.

    Examples
    --------
    >>> op = TiledKernelOperator(KernelSpec(net), X, chunks=4096, scheduler="tcp://host:8786")  # doctest: +SKIP
    >>> scipy.sparse.linalg.cg(op.as_linear_operator(), y)                                     # doctest: +SKIP
    """

    def __init__(self, spec: KernelSpec, X, *, chunks, scheduler=None, dtype=None, store=None,
                 in_memory: bool = True) -> None:
        if spec.tile_extra_shape or spec.kernel == "pair":
            raise ValueError(
                "the tiled solvers need an (N, N) kernel: the analytic 'ntk'/'nngp' or the traced "
                "empirical NTK (trace=True)"
            )
        self.spec = spec
        self.X = spec.prepare(X, "X")
        N = self.X.shape[0]
        self.shape = (N, N)
        self.dtype = spec.dtype if dtype is None else check_dtype(dtype)
        self.chunks, _ = resolve_chunks(chunks, N)
        self._off = _offsets(self.chunks)
        nb = len(self.chunks)
        self.n_tiles = nb * (nb + 1) // 2
        self._runner = _Runner(scheduler)
        self._diag = None
        self._futures = None
        t0 = time.perf_counter()
        try:
            self._spec_d = delayed(spec, pure=True)
            self._Xb = [delayed(self.X[self._off[i] : self._off[i + 1]], pure=True) for i in range(nb)]
            if store is not None:
                store_kernel(spec, self.X, store, chunks=self.chunks, dtype=self.dtype,
                             scheduler=self._runner.client or self._runner.local)
                kpath = os.path.join(os.fspath(store), "kernel")
                lazy = {
                    (i, j): delayed(_read_tile, pure=True)(
                        kpath, int(self._off[i]), int(self._off[i + 1]), int(self._off[j]), int(self._off[j + 1])
                    )
                    for i in range(nb) for j in range(i, nb)
                }
            else:
                in_memory = True
                lazy = {
                    (i, j): delayed(_kernel_tile, pure=True)(
                        self._spec_d, self._Xb[i], None if i == j else self._Xb[j], self.dtype
                    )
                    for i in range(nb) for j in range(i, nb)
                }
            if in_memory:
                need = (N * (N + self.chunks[0]) / 2) * self.dtype.itemsize
                limit = self._runner.memory_limit()
                if need > limit:
                    raise MemoryError(
                        f"the kernel's tiles take {fmt_bytes(need)} but the workers may hold "
                        f"{fmt_bytes(limit)} ({TILE_MEMORY_FRACTION:.0%} of their memory); add workers, use "
                        "dtype=float32, or store=<zarr path> with in_memory=False to stream tiles from disk"
                    )
                keys = list(lazy)
                held = self._runner.persist([lazy[k] for k in keys])
                self._tiles = dict(zip(keys, held))
                if self._runner.client is not None:
                    from distributed import futures_of

                    self._futures = {k: futures_of(d)[0] for k, d in self._tiles.items()}
            else:
                self._tiles = lazy
        except BaseException:
            self._runner.close()
            raise
        self.setup_seconds = time.perf_counter() - t0

    # -- products ------------------------------------------------------------------------------
    def matmat(self, V) -> np.ndarray:
        """``Theta V``.

        Parameters
        ----------
        V : array_like, shape (N, r) or (N,)

        Returns
        -------
        ndarray, shape like ``V``, float64
        """
        V, vec = _as_columns(V, self.shape[0])
        nb = len(self.chunks)
        if self._futures is not None:
            out = self._matmat_futures(V)
            return out[:, 0] if vec else out
        # pure=False: fresh keys at every product, so a repeated vector never races the release
        # of the previous product's results on a distributed scheduler ("forgotten" keys)
        vb = [delayed(np.ascontiguousarray(V[self._off[i] : self._off[i + 1]]), pure=False) for i in range(nb)]
        parts: List[list] = [[] for _ in range(nb)]
        for (i, j), t in self._tiles.items():
            if i == j:
                parts[i].append(delayed(_diag_products, pure=True)(t, vb[i]))
            else:
                both = delayed(symmetric_tile_products, pure=True, nout=2)(t, vb[i], vb[j])
                parts[i].append(both[0])
                parts[j].append(both[1])
        sums = [delayed(_sum_blocks, pure=True)(*p) for p in parts]
        out = np.concatenate(self._runner.compute(sums), axis=0)
        return out[:, 0] if vec else out

    def _matmat_futures(self, V: np.ndarray) -> np.ndarray:
        """``Theta V`` on a distributed cluster by direct task submission (no graph building).

        The vector blocks travel inside the tasks (a few tens of KiB each), not scattered: a task
        whose worker dies can then be rerun anywhere, and the tiles it needs are recomputed by
        the scheduler from their own tasks.
        """
        client = self._runner.client
        nb = len(self.chunks)
        vb = [np.ascontiguousarray(V[self._off[i] : self._off[i + 1]]) for i in range(nb)]
        parts: List[list] = [[] for _ in range(nb)]
        which: List[list] = [[] for _ in range(nb)]
        for (i, j), fut in self._futures.items():
            if i == j:
                parts[i].append(client.submit(_diag_products, fut, vb[i], pure=False))
                which[i].append(-1)
            else:
                both = client.submit(symmetric_tile_products, fut, vb[i], vb[j], pure=False)
                parts[i].append(both)
                which[i].append(0)
                parts[j].append(both)
                which[j].append(1)
        sums = [client.submit(_sum_selected, parts[i], which[i], pure=False) for i in range(nb)]
        return np.concatenate(client.gather(sums), axis=0)

    def nystrom(self, landmarks, mu: float) -> NystromPreconditioner:
        """The Nyström preconditioner of ``Theta + mu I`` from the given landmark rows.

        ``K_mm`` is one task; each row block's ``K_im``, ``B_i`` and ``B_i^T B_i`` are one task on the
        workers (the ``N m^2`` flops run there, in parallel); the ``m x m`` eigenproblem runs here;
        the basis ``U`` (shape (N, r), float64) is assembled here, where CG runs.

        Parameters
        ----------
        landmarks : ndarray of int, shape (m,)
            Distinct row indices, ascending.
        mu : float
            ``> 0``.

        Returns
        -------
        NystromPreconditioner
        """
        with warnings.catch_warnings():
            # C and W (m x m, 32 MB at m = 2000) travel inside the graph on purpose: a lost worker's
            # blocks can then be recomputed anywhere; distributed warns about graphs over 10 MB.
            warnings.filterwarnings("ignore", message="Sending large graph")
            return self._nystrom(np.asarray(landmarks), mu)

    def _nystrom(self, landmarks: np.ndarray, mu: float) -> NystromPreconditioner:
        N = self.shape[0]
        Xm = self.X[landmarks]
        f64 = np.dtype(np.float64)
        (k_mm,) = self._runner.compute([delayed(_kernel_tile, pure=True)(self._spec_d, delayed(Xm, pure=True), None, f64)])
        nu = nystrom_shift(k_mm, N)
        C = nystrom_cholesky(k_mm, nu)
        Xm_d, C_d = delayed(Xm, pure=True), delayed(C, pure=True)
        blocks = []
        for i in range(len(self.chunks)):
            inside = np.flatnonzero((landmarks >= self._off[i]) & (landmarks < self._off[i + 1]))
            blocks.append(delayed(_nystrom_block_task, pure=True)(
                self._spec_d, self._Xb[i], Xm_d, landmarks[inside] - self._off[i], inside, nu, C_d))
        blocks = self._runner.persist(blocks)
        (G,) = self._runner.compute([delayed(_nystrom_gram_sum, pure=True)(*blocks)])
        W, lam = nystrom_eig(G, nu)
        W_d = delayed(W, pure=True)
        U = np.concatenate(self._runner.compute([delayed(_nystrom_basis, pure=True)(b, W_d) for b in blocks]), axis=0)
        del blocks
        return NystromPreconditioner(U, lam, mu)

    def matvec(self, v) -> np.ndarray:
        """``Theta v`` for ``v`` of shape (N,)."""
        return self.matmat(np.asarray(v).reshape(-1))

    def diagonal(self) -> np.ndarray:
        """``diag Theta``, shape (N,), float64 (of the stored, possibly float32, tiles)."""
        if self._diag is None:
            nb = len(self.chunks)
            parts = self._runner.compute([delayed(_tile_diagonal, pure=True)(self._tiles[(i, i)]) for i in range(nb)])
            self._diag = np.concatenate(parts)
        return self._diag

    def columns(self, index) -> np.ndarray:
        """``Theta(X, X[index])``, shape (N, m), float64, computed afresh tile by tile (not from storage)."""
        index = np.asarray(index)
        Xm = delayed(self.X[index], pure=True)
        blocks = [delayed(_kernel_tile, pure=True)(self._spec_d, xb, Xm, np.dtype(np.float64)) for xb in self._Xb]
        return np.concatenate(self._runner.compute(blocks), axis=0)

    def cross_matmat(self, X_other, V, *, chunks=None) -> np.ndarray:
        """``Theta(X_other, X) V``, the test-side kernel streamed: each tile computed, used, dropped.

        Parameters
        ----------
        X_other : array_like, shape (M, d)
        V : array_like, shape (N, r) or (N,)
        chunks : int or sequence, optional
            Rows of ``X_other`` per tile (default: the train tile edge).

        Returns
        -------
        ndarray, shape (M, r) or (M,), float64
        """
        Xo = self.spec.prepare(X_other, "X_test", n_features=self.X.shape[1])
        return _stream_cross(self.spec, Xo, self.X, V, chunks or self.chunks[0], self.chunks, self._runner)

    def as_linear_operator(self):
        """This operator as a ``scipy.sparse.linalg.LinearOperator`` (float64, symmetric)."""
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator(self.shape, matvec=self.matvec, rmatvec=self.matvec, matmat=self.matmat,
                              rmatmat=self.matmat, dtype=np.float64)

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the held tiles, and the connection if this operator opened it."""
        self._tiles = {}
        self._futures = None
        self._runner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"TiledKernelOperator({self.spec!r}, N={self.shape[0]}, tiles={self.n_tiles} of edge "
                f"{self.chunks[0]}, {self.dtype.name}, {self._runner.description})")


def _as_columns(V, n: int):
    """``V`` as float64 columns ``(n, r)``, and whether it was one vector ``(n,)``."""
    V = np.asarray(V, dtype=np.float64)
    vec = V.ndim == 1
    if vec:
        V = V[:, None]
    if V.shape[0] != n:
        raise ValueError(f"V must have {n} rows, got shape {V.shape}")
    return V, vec


def _stream_cross(spec, XA, XB, V, chunks_a, chunks_b, runner) -> np.ndarray:
    """``K(XA, XB) V`` tile by tile; the tiles exist only inside their tasks."""
    V, vec = _as_columns(V, XB.shape[0])
    rows_a, _ = resolve_chunks(chunks_a, XA.shape[0])
    rows_b, _ = resolve_chunks(chunks_b, XB.shape[0])
    oa, ob = _offsets(rows_a), _offsets(rows_b)
    spec_d = delayed(spec, pure=True)
    xb = [delayed(XB[ob[j] : ob[j + 1]], pure=True) for j in range(len(rows_b))]
    vb = [delayed(np.ascontiguousarray(V[ob[j] : ob[j + 1]]), pure=False) for j in range(len(rows_b))]
    sums = []
    for i in range(len(rows_a)):
        xa = delayed(XA[oa[i] : oa[i + 1]], pure=True)
        parts = [delayed(_cross_products, pure=True)(spec_d, xa, xb[j], vb[j]) for j in range(len(rows_b))]
        sums.append(delayed(_sum_blocks, pure=True)(*parts))
    out = np.concatenate(runner.compute(sums), axis=0)
    return out[:, 0] if vec else out


# ---------------------------------------------------------------------------------------------
# dynamics from products
# ---------------------------------------------------------------------------------------------
class TiledFit:
    """The trained predictor of :func:`fit_tiled`: coefficients on the training inputs.

    Test predictions are ``fx_test_0 + Theta(X_test, X_train) coef``, streamed tile by tile.

    Attributes
    ----------
    spec : KernelSpec
    X_train : ndarray, shape (N, d)
    coef : ndarray, shape (N, k), float64
        ``(Theta + mu I)^{-1} (I - E_t) (y - f_0)`` (``t = inf``: ``(Theta + mu I)^{-1} (y - f_0)``).
    fx_train : ndarray, shape (N, k) or (N,)
        Predictions on the training inputs at time ``t``: ``y + E_t (f_0 - y)``.
    t, learning_rate, diag_reg, dynamics, mu
        The problem solved; ``mu = diag_reg * mean(diag Theta)``.
    chunks : int
        Test tile edge used by :meth:`predict`.
    info : dict
        ``method`` ("cg" or "lanczos"), ``iterations``, ``converged``, residuals or changes,
        ``setup_seconds`` (tiles), ``solve_seconds``, ``n_landmarks``.
    """

    def __init__(self, spec, X_train, coef, fx_train, *, t, learning_rate, diag_reg, dynamics, mu, chunks,
                 info, scheduler, y_ndim) -> None:
        self.spec = spec
        self.X_train = X_train
        self.coef = coef
        self.fx_train = fx_train
        self.t = t
        self.learning_rate = learning_rate
        self.diag_reg = diag_reg
        self.dynamics = dynamics
        self.mu = mu
        self.chunks = chunks
        self.info = info
        self.scheduler = scheduler if isinstance(scheduler, (str, type(None))) else None
        self._y_ndim = y_ndim

    def predict(self, X_test, *, fx_test_0=None, scheduler=None, chunks=None) -> np.ndarray:
        """Predictions at time ``t`` on ``X_test``: ``fx_test_0 + Theta(X_test, X_train) coef``.

        Parameters
        ----------
        X_test : array_like, shape (M, d)
        fx_test_0 : array_like, shape (M, k) or (M,), optional
            The network's outputs at initialisation on ``X_test`` (default 0: the infinite
            ensemble's mean).
        scheduler : optional
            Default: the one given to :func:`fit_tiled` if it was a name or address, else the
            current client or threads.
        chunks : int, optional
            Test inputs per tile edge (default: the train tile edge).

        Returns
        -------
        ndarray, shape (M, k) or (M,) like ``y_train``
        """
        Xt = self.spec.prepare(X_test, "X_test", n_features=self.X_train.shape[1])
        with _Runner(scheduler if scheduler is not None else self.scheduler) as runner:
            out = _stream_cross(self.spec, Xt, self.X_train, self.coef, chunks or self.chunks, self.chunks, runner)
        if fx_test_0 is not None:
            out = out + _as_2d(fx_test_0, "fx_test_0", Xt.shape[0], out.shape[1])
        return out[:, 0] if self._y_ndim == 1 else out


def _as_2d(a, name, n, k=None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n or (k is not None and a.shape[1] != k):
        want = f"({n},)" + (f" or ({n}, {k})" if k is not None else " or (N, k)")
        raise ValueError(f"{name} must have shape {want}, got {np.shape(a)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def solve_tiled(
    operator: TiledKernelOperator,
    y_train,
    *,
    t=np.inf,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    dynamics: str = "continuous",
    fx_train_0=None,
    tol: Optional[float] = None,
    maxiter: Optional[int] = None,
    n_landmarks: Optional[int] = None,
    random_state=0,
) -> Tuple[np.ndarray, np.ndarray, dict]:
    """The linearised dynamics on a tiled train kernel: ``(coef, fx_train, info)``.

    ``A = Theta + mu I`` with ``mu = diag_reg * mean(diag Theta)`` (``CONVENTIONS.md``); ``r = y - f_0``.
    ``t = inf``: ``coef = A^{-1} r`` by conjugate gradients preconditioned with a Nyström
    approximation from ``n_landmarks`` uniformly drawn training points (Falkon's choice), and
    ``fx_train = y``. Finite ``t``: ``coef = A^{-1} (I - E_t) r`` and ``fx_train = y - E_t r`` by
    Lanczos on ``A`` started at ``r``.

    Parameters
    ----------
    operator : TiledKernelOperator
    y_train : array_like, shape (N,) or (N, k)
    t : float, default inf
        Time in steps of gradient descent (continuous: gradient-flow time). Non-negative.
    learning_rate : float, default 1.0
    diag_reg : float, default 0.0
    dynamics : {"continuous", "discrete"}
    fx_train_0 : array_like, shape like ``y_train``, optional (default 0)
    tol : float, optional
        CG relative residual (default ``DEFAULT_CG_TOL``) or Lanczos relative change
        (default ``ntksolve.dynamics.KRYLOV_TOL``).
    maxiter : int, optional
        Products with ``Theta`` at most (default 1000 for CG, N for Lanczos).
    n_landmarks : int, optional
        Nyström landmarks (default ``min(N, DEFAULT_LANDMARKS)``); 0 disables the preconditioner.
    random_state : int or Generator
        Draws the landmarks.

    Returns
    -------
    coef : ndarray, shape (N, k)
    fx_train : ndarray, shape (N, k)
    info : dict
    """
    N = operator.shape[0]
    y = _as_2d(y_train, "y_train", N)
    k = y.shape[1]
    f0 = np.zeros_like(y) if fx_train_0 is None else _as_2d(fx_train_0, "fx_train_0", N, k)
    t = float(t)
    if not t >= 0:
        raise ValueError(f"t must be a non-negative time (or inf), got {t!r}")
    if dynamics not in ("continuous", "discrete"):
        raise ValueError(f"dynamics must be 'continuous' or 'discrete', got {dynamics!r}")
    if dynamics == "discrete" and math.isfinite(t) and t != int(t):
        raise ValueError(f"discrete dynamics count whole steps; t must be an integer, got {t!r}")
    if not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate must be positive and finite, got {learning_rate!r}")
    if not (diag_reg >= 0 and math.isfinite(diag_reg)):
        raise ValueError(f"diag_reg must be a non-negative finite number, got {diag_reg!r}")
    mu = float(diag_reg) * float(np.mean(operator.diagonal())) if diag_reg else 0.0
    r = y - f0
    info: dict = {"setup_seconds": operator.setup_seconds, "mu": mu}
    t0 = time.perf_counter()

    def A(V):
        out = operator.matmat(V)
        if mu:
            out += mu * V
        return out

    if t == 0:
        coef, fx_train = np.zeros_like(r), f0.copy()
        info.update(method="none", iterations=0, converged=True)
    elif math.isinf(t):
        m = min(N, DEFAULT_LANDMARKS) if n_landmarks is None else int(n_landmarks)
        precond = None
        if m > 0:
            rng = np.random.default_rng(random_state)
            landmarks = np.sort(rng.choice(N, size=min(m, N), replace=False))
            tp = time.perf_counter()
            shift = mu
            if shift <= 0:  # no ridge: shift by the kernel's scale at the rounding level
                shift = float(np.mean(operator.diagonal())) * N * np.finfo(operator.dtype).eps
            precond = operator.nystrom(landmarks, shift)
            info["preconditioner_seconds"] = time.perf_counter() - tp
        info["n_landmarks"] = m
        coef, cg = preconditioned_cg(A, r, precond, tol=DEFAULT_CG_TOL if tol is None else tol,
                                     max_iter=1000 if maxiter is None else maxiter)
        if not cg["converged"]:
            warnings.warn(
                f"conjugate gradients did not reach tol within {cg['iterations']} iterations (relative "
                f"residuals {cg['residuals']}); raise maxiter, diag_reg or n_landmarks",
                RuntimeWarning, stacklevel=2,
            )
        fx_train = y.copy()
        info.update(method="cg", iterations=cg["iterations"], converged=cg["converged"], residuals=cg["residuals"])
    else:
        # The Lanczos process and the mode coefficients of the in-memory method="krylov"
        # (ntksolve._krylov, ntksolve.dynamics): the same dynamics, only the products are tiled.
        ts = np.array([t])
        lr_over_size = learning_rate / (N * k)

        def coefficient_fn(theta):
            null = _null_mask(theta, N, operator.dtype, "the tiled train kernel")
            g, h = resolve_rule(dynamics, learning_rate).mode_coefficients(theta, null, ts, N * k)
            return np.vstack([g, h])

        eps = np.finfo(operator.dtype).eps
        out, lz = lanczos_function_products(A, r, coefficient_fn, tol=max(KRYLOV_TOL if tol is None else tol, 10 * eps),
                                            max_iter=maxiter)
        fx_train = f0 + out[0]  # f_t = f_0 + (1 - E_t) r = y + E_t (f_0 - y)
        coef = out[1]
        info.update(method="lanczos", iterations=max(lz["iterations"]), converged=all(lz["converged"]))
    info["solve_seconds"] = time.perf_counter() - t0
    return coef, fx_train, info


def fit_tiled(
    net: MLP,
    X_train,
    y_train,
    *,
    params=None,
    kernel: str = "ntk",
    t=np.inf,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    dynamics: str = "continuous",
    fx_train_0=None,
    chunks,
    scheduler=None,
    dtype=None,
    store=None,
    in_memory: bool = True,
    tol: Optional[float] = None,
    maxiter: Optional[int] = None,
    n_landmarks: Optional[int] = None,
    random_state=0,
) -> TiledFit:
    """Train (in closed form, from kernel products only) on a kernel too large for one machine.

    The one call an estimator needs: the train kernel is built as tiles on the workers
    (:class:`TiledKernelOperator`), the dynamics are solved (:func:`solve_tiled`), the tiles are
    released, and the returned :class:`TiledFit` predicts on new inputs by streaming test tiles.

    Parameters
    ----------
    net : MLP
    X_train : array_like, shape (N, d)
    y_train : array_like, shape (N,) or (N, k)
    params : list of (W, b), optional
        ``None``: the analytic (infinite-width) kernel; given: the traced empirical NTK at them.
    kernel : {"ntk", "nngp"}
        Analytic only: ``"nngp"`` gives the NNGP posterior mean (Bayesian inference) instead.
    t, learning_rate, diag_reg, dynamics, fx_train_0, tol, maxiter, n_landmarks, random_state
        See :func:`solve_tiled`.
    chunks : int or sequence
        Training inputs per tile edge.
    scheduler : optional
        See the module docstring.
    dtype : float64 or float32, optional
        Storage dtype of the train tiles.
    store, in_memory
        See :class:`TiledKernelOperator`.

    Returns
    -------
    TiledFit
    """
    spec = KernelSpec(net, params, kernel=kernel, trace=True)
    with TiledKernelOperator(spec, X_train, chunks=chunks, scheduler=scheduler, dtype=dtype, store=store,
                             in_memory=in_memory) as op:
        coef, fx_train, info = solve_tiled(
            op, y_train, t=t, learning_rate=learning_rate, diag_reg=diag_reg, dynamics=dynamics,
            fx_train_0=fx_train_0, tol=tol, maxiter=maxiter, n_landmarks=n_landmarks, random_state=random_state,
        )
        X = op.X
        edge = op.chunks[0]
    y_ndim = np.ndim(y_train)
    return TiledFit(spec, X, coef, fx_train[:, 0] if y_ndim == 1 else fx_train, t=float(t),
                    learning_rate=learning_rate, diag_reg=diag_reg, dynamics=dynamics, mu=info["mu"],
                    chunks=edge, info=info, scheduler=scheduler, y_ndim=y_ndim)


__all__ = [
    "CONNECT_TIMEOUT_S",
    "KernelSpec",
    "StoreResult",
    "TiledFit",
    "TiledKernelOperator",
    "analytic_kernels",
    "empirical_ntk",
    "fit_tiled",
    "open_kernel",
    "resolve_chunks",
    "solve_tiled",
    "store_kernel",
]
