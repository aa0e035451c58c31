"""The train kernel as an operator on tiles: :class:`TiledKernelOperator` and its test-side :class:`TiledCrossOperator`.

Both follow the small operator protocol of the solvers in :mod:`ntksolve.dynamics`: ``shape``,
``dtype``, ``matmat(V)`` (float64 whatever the storage dtype), and for the square train kernel
``diagonal()``.
"""

from __future__ import annotations

import time
import warnings
from typing import List, Tuple

import numpy as np

from ntksolve._config import TILE_MEMORY_FRACTION
from ntksolve._extras import require
from ntksolve._jit.tiles import symmetric_tile_products, tile_products
from ntksolve._validation import check_dtype, fmt_bytes
from ntksolve.dask.checksums import StoreVerificationError, _failure, _read_verified, _tile_states
from ntksolve.dask.chunks import _offsets, resolve_chunks
from ntksolve.dask.runner import _Runner, _task_threads
from ntksolve.dask.spec import KernelSpec, _kernel_tile
from ntksolve.dask.store import _sync_store
from ntksolve.dynamics.nystrom import NystromPreconditioner, nystrom_block, nystrom_cholesky, nystrom_eig, nystrom_shift

delayed = require("dask", "dask", "ntksolve.dask (kernel tiles on Dask)").delayed


# ---------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------
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
    """Task: ``(B_i, B_i^T B_i)`` of one row block (see :mod:`ntksolve.dynamics.nystrom`)."""
    with _task_threads():
        return nystrom_block(spec.tile(XI, Xm).astype(np.float64, copy=False), rows, cols, nu, C)


def _nystrom_gram_sum(*pairs):
    """Task: ``sum_i B_i^T B_i``, in block order."""
    G = pairs[0][1].copy()
    for p in pairs[1:]:
        G += p[1]
    return G


def _nystrom_basis(pair, W):
    """Task: the block ``U_i = B_i W`` of the orthonormal basis."""
    with _task_threads():
        return pair[0] @ W


def _tile_diagonal(t):
    return np.diag(t).astype(np.float64)


def _cross_products(spec, XA, XB, V):
    """Task: ``K(XA, XB) V`` from a test-side tile that is computed, used and dropped."""
    with _task_threads():
        t = spec.tile(XA, XB)
        return t.astype(np.float64, copy=False) @ V


def _as_columns(V, n: int) -> Tuple[np.ndarray, bool]:
    """``V`` as float64 columns ``(n, r)``, and whether it was one vector ``(n,)``."""
    V = np.asarray(V, dtype=np.float64)
    vec = V.ndim == 1
    if vec:
        V = V[:, None]
    if V.ndim != 2 or V.shape[0] != n:
        raise ValueError(f"V must have shape ({n},) or ({n}, r), got {np.shape(V)}")
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
# operators
# ---------------------------------------------------------------------------------------------
class TiledCrossOperator:
    """The test-side kernel ``Theta(X_other, X)``, shape (M, N), known through streamed products.

    Each product computes every tile on the workers, uses it and drops it: nothing of the
    ``M x N`` kernel is held. Made by :meth:`TiledKernelOperator.cross`; runs on its scheduler.

    Parameters
    ----------
    spec : KernelSpec
        Which kernel, and how one tile is computed.
    X_other : ndarray, shape (M, d)
        The test-side inputs (rows of the kernel).
    X : ndarray, shape (N, d)
        The training inputs (columns).
    chunks_other, chunks : int
        Tile edges along ``X_other`` and ``X``.
    runner : object
        The scheduler connection of the operator that made it.

    Attributes
    ----------
    shape : (M, N)
    dtype : numpy.dtype
        The kernel's (the spec's); products are float64.
    """

    def __init__(self, spec: KernelSpec, X_other: np.ndarray, X: np.ndarray, chunks_other, chunks, runner: _Runner):
        self.spec = spec
        self.X_other = X_other
        self.X = X
        self.shape = (X_other.shape[0], X.shape[0])
        self.dtype = spec.dtype
        self._chunks = (chunks_other, chunks)
        self._runner = runner

    def matmat(self, V) -> np.ndarray:
        """``Theta(X_other, X) V``.

        Parameters
        ----------
        V : array_like, shape (N, r) or (N,)
            Coefficients on the ``N`` inputs ``X`` (the training inputs of a fit), one column each.

        Returns
        -------
        ndarray, shape (M, r) or (M,), float64
        """
        return _stream_cross(self.spec, self.X_other, self.X, V, *self._chunks, self._runner)

    def __repr__(self) -> str:
        return f"TiledCrossOperator({self.spec!r}, shape={self.shape}, {self._runner.description})"


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
        Inputs per tile edge (see :func:`ntksolve.dask.resolve_chunks`).
    scheduler : optional
        See :mod:`ntksolve.dask.runner`. The operator keeps its connection until :meth:`close`.
    dtype : float64 or float32, optional
        Storage dtype of the tiles (default: the spec's). float32 halves the memory; products
        still accumulate in float64, so the operator is the rounded kernel, applied exactly.
    store : str or path-like, optional
        A Zarr store (see :func:`ntksolve.dask.store_kernel`): missing tiles are computed into it
        first, then the tiles are read from it, each checked against its checksum.
    in_memory : bool, default True
        With ``store``: ``False`` reads (and checks) the tiles from the store at every product
        instead of holding them, for kernels larger than the cluster's memory.

    Attributes
    ----------
    shape : (N, N)
    dtype : numpy.dtype
        Storage dtype of the tiles; :meth:`matmat` and :meth:`diagonal` return float64.
    n_tiles : int
    setup_seconds : float
        Wall time spent computing/reading and persisting the tiles.

    Raises
    ------
    StoreVerificationError
        ``store`` holds tiles that fail their checksums (all named; ``store_kernel(...,
        repair=True)`` recomputes them). With ``in_memory=False`` the tiles are first read at the
        first product, which raises instead, naming the tile it read.

    Examples
    --------
    >>> op = TiledKernelOperator(KernelSpec(net), X, chunks=4096, scheduler="tcp://host:8786")  # doctest: +SKIP
    >>> scipy.sparse.linalg.cg(op.as_linear_operator(), y)                                     # doctest: +SKIP
    """

    def __init__(
        self, spec: KernelSpec, X, *, chunks, scheduler=None, dtype=None, store=None, in_memory: bool = True
    ) -> None:
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
            layout = None
            if store is not None:
                # Only the missing tiles are found without reading; the finished ones are checked by
                # the reads below (once when held, at every product when streamed).
                layout, sums, _, _ = _sync_store(
                    spec,
                    self.X,
                    None,
                    store,
                    self.chunks,
                    self.chunks,
                    self.dtype,
                    self._runner,
                    repair=False,
                    verify=False,
                )
                lazy = {
                    (i, j): delayed(_read_verified, pure=True)(layout, i, j, sums[i, j])
                    for i in range(nb)
                    for j in range(i, nb)
                }
            else:
                in_memory = True
                lazy = {
                    (i, j): delayed(_kernel_tile, pure=True)(
                        self._spec_d, self._Xb[i], None if i == j else self._Xb[j], self.dtype
                    )
                    for i in range(nb)
                    for j in range(i, nb)
                }
            if in_memory:
                self._tiles = self._hold(lazy, N, layout)
            else:
                self._tiles = lazy
        except BaseException:
            self._runner.close()
            raise
        self.setup_seconds = time.perf_counter() - t0

    def _hold(self, lazy: dict, N: int, layout) -> dict:
        """Persist the tiles in the workers' memory, within ``TILE_MEMORY_FRACTION`` of it."""
        need = (N * (N + self.chunks[0]) / 2) * self.dtype.itemsize
        limit = self._runner.memory_limit()
        if need > limit:
            raise MemoryError(
                f"the kernel's tiles take {fmt_bytes(need)} but the workers may hold {fmt_bytes(limit)} "
                f"({TILE_MEMORY_FRACTION:.0%} of their memory); add workers, use dtype=float32, or "
                "store=<zarr path> with in_memory=False to stream tiles from disk"
            )
        keys = list(lazy)
        try:
            held = self._runner.persist([lazy[k] for k in keys])
        except StoreVerificationError as exc:
            if layout is None:
                raise
            # one failing read stopped the persist: name every failing tile, as store_kernel would
            failed = _tile_states(layout, self._runner).failed or dict.fromkeys(exc.tiles, str(exc))
            raise _failure(
                layout.path,
                failed,
                self.n_tiles,
                "Recompute exactly these tiles with ntksolve.dask.store_kernel(spec, X, path, chunks=..., repair=True)",
            ) from None
        tiles = dict(zip(keys, held))
        if self._runner.client is not None:
            from distributed import futures_of

            self._futures = {k: futures_of(d)[0] for k, d in tiles.items()}
        return tiles

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
        if self._futures is not None:
            out = self._matmat_futures(V)
            return out[:, 0] if vec else out
        nb = len(self.chunks)
        # pure=False: fresh keys at every product, so a repeated vector never races the release
        # of the previous product's results on a distributed scheduler ("forgotten" keys)
        vb = [delayed(np.ascontiguousarray(V[self._off[i] : self._off[i + 1]]), pure=False) for i in range(nb)]
        parts: List[list] = [[] for _ in range(nb)]
        for (i, j), t in self._tiles.items():
            if i == j:
                parts[i].append(delayed(tile_products, pure=True)(t, vb[i]))
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
                parts[i].append(client.submit(tile_products, fut, vb[i], pure=False))
                which[i].append(-1)
            else:
                both = client.submit(symmetric_tile_products, fut, vb[i], vb[j], pure=False)
                parts[i].append(both)
                which[i].append(0)
                parts[j].append(both)
                which[j].append(1)
        sums = [client.submit(_sum_selected, parts[i], which[i], pure=False) for i in range(nb)]
        return np.concatenate(client.gather(sums), axis=0)

    def matvec(self, v) -> np.ndarray:
        """``Theta v`` for ``v`` of shape (N,) (or one column, (N, 1)); shape (N,)."""
        v, n = np.asarray(v), self.shape[0]
        if v.shape not in ((n,), (n, 1)):  # flattening another array of N entries would scramble it
            raise ValueError(f"v must have shape ({n},) or ({n}, 1), got {v.shape}; use matmat for several columns")
        return self.matmat(v.reshape(-1))

    def diagonal(self) -> np.ndarray:
        """``diag Theta``, shape (N,), float64 (of the stored, possibly float32, tiles)."""
        if self._diag is None:
            nb = len(self.chunks)
            parts = self._runner.compute([delayed(_tile_diagonal, pure=True)(self._tiles[(i, i)]) for i in range(nb)])
            self._diag = np.concatenate(parts)
        return self._diag

    def cross(self, X_other, *, chunks=None) -> TiledCrossOperator:
        """The test-side kernel ``Theta(X_other, X)`` as a streamed operator on this one's scheduler.

        Parameters
        ----------
        X_other : array_like, shape (M, d)
        chunks : int or sequence, optional
            Rows of ``X_other`` per tile (default: the train tile edge).

        Returns
        -------
        TiledCrossOperator
            Valid until :meth:`close`.
        """
        Xo = self.spec.prepare(X_other, "X_test", n_features=self.X.shape[1])
        edge = self.chunks[0] if chunks is None else chunks  # 0 is refused by resolve_chunks, not read as the default
        return TiledCrossOperator(self.spec, Xo, self.X, edge, self.chunks, self._runner)

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
        (k_mm,) = self._runner.compute(
            [delayed(_kernel_tile, pure=True)(self._spec_d, delayed(Xm, pure=True), None, f64)]
        )
        nu = nystrom_shift(k_mm, N, self.spec.dtype)  # the dtype the tiles are computed in
        C = nystrom_cholesky(k_mm, nu)
        Xm_d, C_d = delayed(Xm, pure=True), delayed(C, pure=True)
        blocks = []
        for i in range(len(self.chunks)):
            inside = np.flatnonzero((landmarks >= self._off[i]) & (landmarks < self._off[i + 1]))
            blocks.append(
                delayed(_nystrom_block_task, pure=True)(
                    self._spec_d, self._Xb[i], Xm_d, landmarks[inside] - self._off[i], inside, nu, C_d
                )
            )
        blocks = self._runner.persist(blocks)
        (G,) = self._runner.compute([delayed(_nystrom_gram_sum, pure=True)(*blocks)])
        W, lam = nystrom_eig(G, nu)
        W_d = delayed(W, pure=True)
        U = np.concatenate(self._runner.compute([delayed(_nystrom_basis, pure=True)(b, W_d) for b in blocks]), axis=0)
        del blocks
        return NystromPreconditioner(U, lam, mu)

    def as_linear_operator(self):
        """This operator as a ``scipy.sparse.linalg.LinearOperator`` (float64, symmetric)."""
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator(
            self.shape,
            matvec=self.matvec,
            rmatvec=self.matvec,
            matmat=self.matmat,
            rmatmat=self.matmat,
            dtype=np.float64,
        )

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
        return (
            f"TiledKernelOperator({self.spec!r}, N={self.shape[0]}, tiles={self.n_tiles} of edge "
            f"{self.chunks[0]}, {self.dtype.name}, {self._runner.description})"
        )


__all__ = ["TiledCrossOperator", "TiledKernelOperator"]
