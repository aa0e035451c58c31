"""The checksums of a kernel store's tiles, and reads that check them.

Per Zarr chunk of the ``kernel`` array, the array ``checksums`` holds the sha256 of the chunk's
data, keyed by the store's identity, the chunk's index, dtype and shape (so chunks moved between
positions, or written for another kernel, fail), written after the chunk; all zero where none was
written. A tile is complete when its chunks match; :func:`_tile_states` sorts the tiles into
verified, never finished (no checksum: an interrupted write) and failing (a checksum whose data
are gone or changed), and every read here raises :class:`StoreVerificationError` naming the tile
rather than return a number its checksum does not vouch for.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ntksolve._extras import require
from ntksolve.dask.chunks import _offsets
from ntksolve.dask.runner import _Runner

dask = require("dask", "dask", "ntksolve.dask (kernel tiles on Dask)")
da = require("dask.array", "dask", "ntksolve.dask (kernel tiles on Dask)")
delayed = dask.delayed

_KERNEL, _SUMS = "kernel", "checksums"
_DIGEST_BYTES = 32  # sha256: 1.8 GB/s here, a sixth of the time of reading a zstd-compressed tile
_LISTED = 8  # failing tiles spelled out in an error message (all of them are in its ``tiles``)


class StoreVerificationError(ValueError):
    """Tiles of a kernel store whose data do not match their checksums, or cannot be read.

    Parameters
    ----------
    message : str
        What failed, naming the tiles and the fix (``store_kernel(..., repair=True)``).
    path : str or None
        The store.
    tiles : iterable of (int, int)
        The failing tiles (block row, block column; upper triangle for a symmetric kernel), kept
        as the attribute ``tiles``, a tuple of pairs; ``path`` is kept as ``path``.
    """

    def __init__(self, message: str, path: Optional[str] = None, tiles=()) -> None:
        super().__init__(message)
        self.path = path
        self.tiles = tuple(tuple(t) for t in tiles)

    def __reduce__(self):  # crosses process boundaries from the workers with its attributes
        return type(self), (self.args[0], self.path, self.tiles)


class _Layout(NamedTuple):
    """Where a store's tiles are and how to check them (travels inside the tasks)."""

    path: str
    rows: Tuple[int, ...]
    cols: Tuple[int, ...]
    extra: Tuple[int, ...]
    dtype: str
    symmetric: bool
    key: bytes  # sha256 of the identity: every checksum depends on it

    @property
    def kernel_path(self) -> str:
        return os.path.join(self.path, _KERNEL)

    @property
    def sums_path(self) -> str:
        return os.path.join(self.path, _SUMS)

    @property
    def grid(self) -> Tuple[int, int]:
        return len(self.rows), len(self.cols)

    def tiles(self) -> List[Tuple[int, int]]:
        """The computed tiles: all, or those on and above the diagonal of a symmetric kernel."""
        nr, nc = self.grid
        return [(i, j) for i in range(nr) for j in range(nc) if not self.symmetric or i <= j]

    def chunks_of(self, i: int, j: int) -> List[Tuple[int, int]]:
        """The Zarr chunks tile ``(i, j)`` writes: itself, and its mirror below a symmetric diagonal."""
        return [(i, j), (j, i)] if self.symmetric and i != j else [(i, j)]

    def box(self, ci: int, cj: int) -> Tuple[int, int, int, int]:
        ro, co = _offsets(self.rows), _offsets(self.cols)
        return int(ro[ci]), int(ro[ci + 1]), int(co[cj]), int(co[cj + 1])

    def shape(self) -> Tuple[int, ...]:
        return (sum(self.rows), sum(self.cols)) + tuple(self.extra)


def _zarr():
    return require("zarr", "dask", "kernel stores (ntksolve.dask.store_kernel)")


def _identity_key(identity: dict) -> bytes:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).digest()


def _digest(key: bytes, ci: int, cj: int, block: np.ndarray) -> np.ndarray:
    """Checksum of one chunk's data: sha256 over the identity, the chunk index, dtype, shape, bytes."""
    block = np.ascontiguousarray(block)
    h = hashlib.sha256(key)
    h.update(f"{ci},{cj};{block.dtype.str};{block.shape}".encode())
    h.update(block)
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _layout_of(path: str, identity: dict, extra) -> _Layout:
    rows, cols = (tuple(int(s) for s in axis) for axis in json.loads(identity["chunks"]))
    return _Layout(
        path,
        rows,
        cols,
        tuple(int(e) for e in extra),
        identity["dtype"],
        identity["X2"] == "symmetric",
        _identity_key(identity),
    )


def _kernel_array_problem(layout: _Layout) -> Optional[str]:
    """Why the store's ``kernel`` array cannot hold its tiles (missing, other shape), or ``None``."""
    try:
        arr = _zarr().open_array(layout.kernel_path, mode="r")
    except (FileNotFoundError, KeyError, ValueError) as exc:
        return f"its kernel array is missing ({type(exc).__name__})"
    want_chunks = (layout.rows[0], layout.cols[0]) + layout.extra
    if tuple(arr.shape) != layout.shape() or tuple(arr.chunks) != want_chunks or arr.dtype != np.dtype(layout.dtype):
        return (
            f"its kernel array has shape {tuple(arr.shape)}, chunks {tuple(arr.chunks)} and dtype {arr.dtype}, "
            f"not the {layout.shape()}, {want_chunks} and {layout.dtype} of its identity"
        )
    return None


def _recorded(layout: _Layout) -> Tuple[np.ndarray, Dict[Tuple[int, int], str]]:
    """The checksums recorded per chunk, shape (rows, cols, 32) uint8 (zero: none), and unreadable ones."""
    zarr = _zarr()
    nr, nc = layout.grid
    sums = np.zeros((nr, nc, _DIGEST_BYTES), dtype=np.uint8)
    try:
        arr = zarr.open_array(layout.sums_path, mode="r")
    except (FileNotFoundError, KeyError, ValueError):
        return sums, {}  # nothing recorded: every tile is to be computed
    if tuple(arr.shape) != sums.shape:
        return sums, {}
    try:
        return np.asarray(arr[:]), {}
    except Exception:  # a damaged checksum chunk: find which, keep the others
        bad = {}
        for ci in range(nr):
            for cj in range(nc):
                try:
                    sums[ci, cj] = arr[ci, cj]
                except Exception as exc:
                    bad[(ci, cj)] = f"its checksum cannot be read ({type(exc).__name__}: {exc})"
        return sums, bad


def _read_chunk(layout: _Layout, ci: int, cj: int) -> np.ndarray:
    r0, r1, c0, c1 = layout.box(ci, cj)
    return np.ascontiguousarray(_zarr().open_array(layout.kernel_path, mode="r")[r0:r1, c0:c1])


def _chunk_problem(layout: _Layout, ci: int, cj: int, expected: np.ndarray):
    """``(data, None)`` if chunk ``(ci, cj)`` matches its checksum, else ``(None, why)``."""
    try:
        block = _read_chunk(layout, ci, cj)
    except Exception as exc:  # a chunk too damaged to decode
        return None, f"chunk {(ci, cj)} cannot be read ({type(exc).__name__}: {exc})"
    if not np.array_equal(_digest(layout.key, ci, cj, block), expected):
        return None, (
            f"chunk {(ci, cj)} does not match the checksum written with it (deleted, altered, "
            "or written for another kernel)"
        )
    return block, None


def _tile_of(layout: _Layout, ci: int, cj: int) -> Tuple[int, int]:
    return (min(ci, cj), max(ci, cj)) if layout.symmetric else (ci, cj)


def _read_verified(layout: _Layout, ci: int, cj: int, expected: np.ndarray) -> np.ndarray:
    """Task: chunk ``(ci, cj)`` of the kernel, or a :class:`StoreVerificationError` naming its tile."""
    block, why = _chunk_problem(layout, ci, cj, expected)
    if why is not None:
        tile = _tile_of(layout, ci, cj)
        raise StoreVerificationError(
            f"tile {tile} of the kernel store at {layout.path!r} fails verification: {why}. "
            "Recompute it with store_kernel(..., repair=True) and the same arguments",
            layout.path,
            [tile],
        )
    return block


def _check_tile(layout: _Layout, chunks, sums) -> Optional[str]:
    """Task: why a recorded tile fails verification, or ``None``."""
    for (ci, cj), expected in zip(chunks, sums):
        _, why = _chunk_problem(layout, ci, cj, expected)
        if why is not None:
            return why
    return None


class _States(NamedTuple):
    sums: np.ndarray  # the recorded checksums, (rows, cols, 32)
    ok: List[Tuple[int, int]]
    missing: List[Tuple[int, int]]  # never finished: computed by a rerun, no questions asked
    failed: Dict[Tuple[int, int], str]  # finished once, now failing verification: tile -> why


def _tile_states(layout: _Layout, runner: _Runner, *, read: bool = True) -> _States:
    """Which tiles verify, which were never finished, which fail (reading every finished tile)."""
    sums, unreadable = _recorded(layout)
    recorded = np.any(sums != 0, axis=-1)
    broken = _kernel_array_problem(layout)
    ok, missing, failed, to_read = [], [], {}, []
    for i, j in layout.tiles():
        chunks = layout.chunks_of(i, j)
        bad = [unreadable[c] for c in chunks if c in unreadable]
        if bad:
            failed[(i, j)] = bad[0]
        elif not all(recorded[c] for c in chunks):
            missing.append((i, j))  # no checksum, or only the first of a pair: an interrupted write
        elif broken is not None:
            failed[(i, j)] = broken
        elif read:
            to_read.append((i, j))
        else:
            ok.append((i, j))
    if to_read:
        tasks = [
            delayed(_check_tile, pure=False)(layout, layout.chunks_of(i, j), [sums[c] for c in layout.chunks_of(i, j)])
            for i, j in to_read
        ]
        for tile, why in zip(to_read, runner.compute(tasks)):
            if why is None:
                ok.append(tile)
            else:
                failed[tile] = why
    return _States(sums, sorted(ok), sorted(missing), dict(sorted(failed.items())))


def _failure(path: str, failed: Dict[Tuple[int, int], str], n_tiles: int, fix: str) -> StoreVerificationError:
    listed = "; ".join(f"{t}: {why}" for t, why in list(failed.items())[:_LISTED])
    more = f"; and {len(failed) - _LISTED} more" if len(failed) > _LISTED else ""
    return StoreVerificationError(
        f"the kernel store at {path!r} fails verification in {len(failed)} of {n_tiles} tiles (block row, "
        f"block column): {listed}{more}. {fix}",
        path,
        list(failed),
    )


def _verified_array(layout: _Layout, sums: np.ndarray) -> "da.Array":
    """The stored kernel as a dask array whose every chunk is read and checked against its checksum."""
    name = "ntksolve-store-" + dask.base.tokenize(layout, sums.tobytes())
    nr, nc = layout.grid
    trail = (0,) * len(layout.extra)
    dsk = {
        (name, ci, cj, *trail): (_read_verified, layout, ci, cj, sums[ci, cj]) for ci in range(nr) for cj in range(nc)
    }
    chunks = (layout.rows, layout.cols) + tuple((e,) for e in layout.extra)
    return da.Array(dsk, name, chunks=chunks, dtype=np.dtype(layout.dtype))


__all__ = ["StoreVerificationError"]
