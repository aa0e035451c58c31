"""Kernels on disk: :func:`store_kernel` writes one tile by tile into a Zarr store, :func:`open_kernel` reads it.

A store is a Zarr group holding the array ``kernel`` (the whole matrix, one Zarr chunk per tile; a
symmetric kernel's lower tiles are the transposes of the upper ones, written by the same task),
the array ``checksums`` (one per chunk, :mod:`ntksolve.dask.checksums`), and in the group's
attributes the identity of the kernel: hashes of the network and kernel type, the inputs, the
parameters of an empirical kernel, the storage dtype and the chunks, written with the group,
before any tile, and compared at every open for writing.

Nothing is trusted without being read: a tile is complete when its chunks match their checksums.
Every read checks (the arrays :func:`open_kernel` and :func:`store_kernel` return, the tiles
:class:`ntksolve.dask.TiledKernelOperator` reads), and so does a rerun of :func:`store_kernel`
before it decides what to compute. A tile without a checksum was never finished (an interrupted
run): a rerun computes it. A tile whose data no longer match (a deleted or altered chunk, a
deleted array, chunks of another kernel) makes :func:`store_kernel` and :func:`open_kernel` raise
:class:`StoreVerificationError` naming it; ``store_kernel(..., repair=True)`` recomputes exactly
those tiles. One writer at a time holds the store (:mod:`ntksolve.dask.lock`).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple, Tuple

import numpy as np

from ntksolve._extras import require
from ntksolve._validation import check_dtype
from ntksolve.dask.checksums import (
    _DIGEST_BYTES,
    _KERNEL,
    _LISTED,
    _SUMS,
    StoreVerificationError,
    _digest,
    _failure,
    _identity_key,
    _kernel_array_problem,
    _Layout,
    _layout_of,
    _recorded,
    _tile_states,
    _verified_array,
    _zarr,
)
from ntksolve.dask.chunks import _is_regular, _offsets, resolve_chunks
from ntksolve.dask.lock import StoreLockedError, WriterLock, _holder_alive, describe_holder, read_lock
from ntksolve.dask.runner import _Runner
from ntksolve.dask.spec import KernelSpec, _kernel_tile, _sha, _transpose_tile

dask = require("dask", "dask", "ntksolve.dask (kernel tiles on Dask)")
da = require("dask.array", "dask", "ntksolve.dask (kernel tiles on Dask)")
delayed = dask.delayed

_FORMAT = 2  # 1: a side list of finished tiles, no checksums (refused: its tiles cannot be verified)
_ATTR = "ntksolve_kernel"


class StoreResult(NamedTuple):
    """What :func:`store_kernel` did.

    Attributes
    ----------
    kernel : dask.array.Array
        The stored kernel, read lazily from the store (every chunk verified against its checksum),
        shape (N1, N2) (or (N1, N2, k, k)).
    path : str
    n_tiles : int
        Tiles the kernel consists of (computed ones only: the upper triangle when symmetric).
    n_computed : int
        Tiles computed by this call (missing and repaired ones); the others verified in the store.
    repaired : tuple of (int, int)
        Tiles that failed verification and were recomputed (``repair=True``).
    """

    kernel: "da.Array"
    path: str
    n_tiles: int
    n_computed: int
    repaired: Tuple[Tuple[int, int], ...] = ()


def _identity(spec: KernelSpec, X1, X2, rows, cols, dtype) -> dict:
    parts = dict(spec.components())
    parts["X1"] = _sha(X1)
    parts["X2"] = "symmetric" if X2 is None else _sha(X2)
    parts["dtype"] = np.dtype(dtype).name
    parts["chunks"] = json.dumps([list(rows), list(cols)])
    return parts


def _open_group(path: str, identity: dict, description: dict):
    """The store's group for this kernel, created with its identity if new; refuse any other."""
    zarr = _zarr()
    record = {"format": _FORMAT, "identity": identity, "description": description}
    group = zarr.open_group(path, mode="a", attributes={_ATTR: record})  # identity in the group's first write
    stored = dict(group.attrs).get(_ATTR)
    if stored is None:
        if len(list(group.keys())):
            raise ValueError(
                f"{path!r} is a Zarr group that ntksolve did not write (it has members "
                f"{sorted(group.keys())[:5]}); refusing to write a kernel into it"
            )
        group.attrs[_ATTR] = record  # an empty group (created by hand): ours from now on, before any tile
        return group
    _check_format(path, stored)
    if stored.get("identity") != identity:
        have = stored.get("identity", {})
        differ = sorted(k for k in set(have) | set(identity) if have.get(k) != identity.get(k))
        raise ValueError(
            f"the Zarr store at {path!r} holds a different kernel ({', '.join(differ)} differ: it holds "
            f"{stored.get('description')}); refusing to mix tiles of two kernels. Use another path, or delete "
            "this store to recompute"
        )
    return group


def _check_format(path: str, stored: dict) -> None:
    if stored.get("format") != _FORMAT:
        raise ValueError(
            f"the kernel store at {path!r} has format {stored.get('format')!r}, written by another version of "
            f"ntksolve (this one writes format {_FORMAT}, with a checksum per tile); its tiles cannot be verified. "
            "Delete it and rerun store_kernel"
        )


def _create_arrays(group, layout: _Layout, *, recreate_kernel: bool) -> None:
    names = set(group.keys())
    if recreate_kernel or _KERNEL not in names:
        group.create_array(
            _KERNEL,
            shape=layout.shape(),
            chunks=(layout.rows[0], layout.cols[0]) + layout.extra,
            dtype=layout.dtype,
            fill_value=np.nan,
            overwrite=True,
        )
    shape = layout.grid + (_DIGEST_BYTES,)
    if _SUMS not in names or tuple(group[_SUMS].shape) != shape:  # unusable checksums record nothing
        group.create_array(
            _SUMS, shape=shape, chunks=(1, 1, _DIGEST_BYTES), dtype="uint8", fill_value=0, overwrite=True
        )


def _write_tile(spec, XI, XJ, layout: _Layout, i: int, j: int, clear, after_tile) -> int:
    """Task: compute tile ``(i, j)``, write its chunk(s), then their checksums (the tile is then complete).

    ``clear``: chunks of the tile with a checksum recorded, erased first, so that a rewrite cut short
    leaves the tile unfinished rather than new data beside an old checksum.
    """
    zarr = _zarr()
    found = dict(zarr.open_group(layout.path, mode="r").attrs).get(_ATTR, {}).get("identity")
    if found is None or _identity_key(found) != layout.key:  # the store changed hands since the writer opened it
        raise ValueError(
            f"the kernel store at {layout.path!r} no longer holds the kernel this tile belongs to; "
            "another writer replaced it. Rerun store_kernel"
        )
    chunks = layout.chunks_of(i, j)
    sums = zarr.open_array(layout.sums_path, mode="r+")
    for c in clear:
        sums[c] = 0
    t = _kernel_tile(spec, XI, XJ, np.dtype(layout.dtype))
    arr = zarr.open_array(layout.kernel_path, mode="r+")
    blocks = [t] if len(chunks) == 1 else [t, _transpose_tile(t, False)]
    for (ci, cj), block in zip(chunks, blocks):
        r0, r1, c0, c1 = layout.box(ci, cj)
        arr[r0:r1, c0:c1] = block
    for (ci, cj), block in zip(chunks, blocks):
        sums[ci, cj] = _digest(layout.key, ci, cj, block)
    if after_tile is not None:
        after_tile(i, j)
    return 1


def _sync_store(
    spec: KernelSpec, X1, X2, path, rows, cols, dtype, runner: _Runner, *, repair: bool, verify: bool, after_tile=None
):
    """Bring the store at ``path`` up to date under its writer lock: ``(layout, sums, n_computed, repaired)``.

    ``verify=False`` trusts the recorded checksums to say which tiles exist (the caller then reads
    every tile verified, and must report failures itself).
    """
    if not (_is_regular(rows) and _is_regular(cols)):
        raise ValueError(
            f"a Zarr store needs regular chunks (all equal, the last one possibly smaller), got rows "
            f"{rows!r} and columns {cols!r}; pass an int"
        )
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"the kernel store path {path!r} is a file, not a folder (a Zarr store is a folder of "
            "chunks); choose another path, or remove the file"
        )
    identity = _identity(spec, X1, X2, rows, cols, dtype)
    layout = _layout_of(path, identity, spec.tile_extra_shape)
    symmetric = X2 is None
    with WriterLock(path) as lock:
        group = _open_group(path, identity, spec.describe())
        states = _tile_states(layout, runner, read=verify)
        if states.failed and not repair:
            raise _failure(
                path,
                states.failed,
                len(layout.tiles()),
                "Rerun store_kernel(..., repair=True) with the same arguments to recompute exactly these tiles",
            )
        todo = states.missing + list(states.failed)
        _create_arrays(group, layout, recreate_kernel=_kernel_array_problem(layout) is not None)
        if todo:
            r_off, c_off = _offsets(rows), _offsets(cols)
            spec_d = delayed(spec, pure=True)
            XbI = {i: delayed(X1[r_off[i] : r_off[i + 1]], pure=True) for i in {i for i, _ in todo}}
            XbJ = XbI if symmetric else {}
            for j in {j for _, j in todo}:
                if j not in XbJ:
                    XbJ[j] = delayed((X1 if symmetric else X2)[c_off[j] : c_off[j + 1]], pure=True)
            recorded = np.any(states.sums != 0, axis=-1)
            tasks = [
                delayed(_write_tile, pure=False)(
                    spec_d,
                    XbI[i],
                    None if symmetric and i == j else XbJ[j],
                    layout,
                    i,
                    j,
                    [c for c in layout.chunks_of(i, j) if recorded[c]],
                    after_tile,
                )
                for i, j in todo
            ]
            runner.compute(tasks)
        sums, _ = _recorded(layout)
        if not lock.held():
            raise StoreLockedError(
                f"the writer lock of the kernel store at {path!r} was taken over while this writer held it (now "
                f"{describe_holder(read_lock(path))}); its tiles may be mixed. Rerun store_kernel to verify them"
            )
    return layout, sums, len(todo), tuple(states.failed)


def store_kernel(
    spec: KernelSpec, X1, path, *, chunks, X2=None, dtype=None, scheduler=None, repair: bool = False, _after_tile=None
) -> StoreResult:
    """Compute a kernel tile by tile into a Zarr store, resuming whatever an earlier run left.

    The store (see the module docstring) holds the array ``kernel``, a checksum per chunk, and the
    identity of the kernel in its attributes. A rerun with the same arguments first verifies every
    finished tile against its checksum, then computes the tiles never finished; a store with
    another identity, or one another writer holds, is refused.

    Parameters
    ----------
    spec : KernelSpec
    X1 : array_like, shape (N1, d)
    path : str or path-like
        A directory (created if missing). ``<path>.lock`` beside it exists while a writer runs.
    chunks : int or sequence
        Tile edges, regular (all equal but a smaller last one): they are the Zarr chunks.
    X2 : array_like, shape (N2, d), optional
        Defaults to ``X1``: a symmetric kernel, upper tiles computed, each written twice.
    dtype : float64 or float32, optional
        Storage dtype; defaults to the spec's. Tiles are computed in the spec's dtype and rounded.
    scheduler : optional
        See :mod:`ntksolve.dask.runner`.
    repair : bool, default False
        Recompute the tiles that fail verification instead of raising.

    Returns
    -------
    StoreResult

    Raises
    ------
    ValueError
        Bad or irregular chunks; a store holding another kernel.
    StoreVerificationError
        Finished tiles whose data no longer match their checksums (``repair=False``); it names them.
    StoreLockedError
        Another writer holds the store.
    """
    if spec.kernel == "pair":
        raise ValueError("store one kernel at a time: KernelSpec(net, kernel='ntk') or kernel='nngp'")
    X1 = spec.prepare(X1, "X1")
    if X2 is not None:
        X2 = spec.prepare(X2, "X2", n_features=X1.shape[1])
    rows, cols = resolve_chunks(chunks, X1.shape[0], None if X2 is None else X2.shape[0])
    dtype = spec.dtype if dtype is None else check_dtype(dtype)
    with _Runner(scheduler) as runner:
        layout, sums, n_computed, repaired = _sync_store(
            spec, X1, X2, path, rows, cols, dtype, runner, repair=repair, verify=True, after_tile=_after_tile
        )
    return StoreResult(
        kernel=_verified_array(layout, sums),
        path=layout.path,
        n_tiles=len(layout.tiles()),
        n_computed=n_computed,
        repaired=repaired,
    )


def _open_layout(path: str) -> _Layout:
    """The layout of the existing store at ``path``, from its identity; refuse what is not one."""
    zarr = _zarr()
    try:
        stored = dict(zarr.open_group(path, mode="r").attrs).get(_ATTR)
    except FileNotFoundError:
        stored = None
    if stored is None:
        raise ValueError(f"{path!r} is not a kernel store written by ntksolve.dask.store_kernel")
    _check_format(path, stored)
    try:
        extra = tuple(zarr.open_array(os.path.join(path, _KERNEL), mode="r").shape[2:])
    except (FileNotFoundError, KeyError, ValueError):
        extra = ()  # the array is gone: every finished tile then fails verification
    return _layout_of(path, stored["identity"], extra)


def open_kernel(path, *, verify: bool = False, scheduler=None) -> "da.Array":
    """The kernel in a complete store written by :func:`store_kernel`, as a lazy dask array.

    Every chunk the array reads is checked against its checksum (a failing one raises
    :class:`StoreVerificationError` naming its tile).

    Parameters
    ----------
    path : str or path-like
    verify : bool, default False
        Also read and check every tile now (on ``scheduler``), so that a damaged store fails here,
        naming all its failing tiles, rather than at the first read of one.
    scheduler : optional
        For ``verify``; see :mod:`ntksolve.dask.runner`.

    Returns
    -------
    dask.array.Array, shape (N1, N2) or (N1, N2, k, k)

    Raises
    ------
    ValueError
        Not an ntksolve store, or some tiles were never finished (rerun :func:`store_kernel`).
    StoreVerificationError
        Its kernel array is gone or reshaped, or (``verify=True``) tiles fail their checksums.
    """
    path = os.fspath(path)
    layout = _open_layout(path)
    with _Runner(scheduler) as runner:
        states = _tile_states(layout, runner, read=verify)
    n_tiles = len(layout.tiles())
    fix = "Rerun store_kernel(..., repair=True) with the arguments that wrote it to recompute exactly these tiles"
    if states.failed:
        raise _failure(path, states.failed, n_tiles, fix)
    if states.missing:
        holder = read_lock(path)
        writing = ""
        if holder is not None:  # a killed writer leaves its lock: say so, rather than that it still writes
            gone = holder and _holder_alive(holder) is False
            writing = f"; its writer, {describe_holder(holder)}, " + ("is gone" if gone else "is writing it")
        raise ValueError(
            f"the kernel store at {path!r} is incomplete ({len(states.ok)} of {n_tiles} tiles; missing "
            f"{states.missing[:_LISTED]}{' ...' if len(states.missing) > _LISTED else ''}){writing}; rerun "
            "store_kernel with the same arguments to compute the missing ones"
        )
    return _verified_array(layout, states.sums)


__all__ = ["StoreLockedError", "StoreResult", "StoreVerificationError", "open_kernel", "store_kernel"]
