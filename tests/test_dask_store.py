"""Zarr kernel stores: resume after an interruption, one writer at a time, and no tile trusted
without its checksum (deleted chunks, a deleted array, flipped bits, tiles of another kernel).

The reference for every stored number is the in-memory ``ntksolve.analytic_kernels``; a store is
damaged by hand (files deleted, a bit flipped, attributes rewritten) exactly as a disk or a user
would, and each damage is shown to change what plain Zarr reads back before the store is shown to
name it.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

import ntksolve  # noqa: E402
import ntksolve.dask as D  # noqa: E402
from ntksolve.dask.lock import lock_path, read_lock  # noqa: E402
from ntksolve.dask.runner import _Runner  # noqa: E402
from ntksolve.dask.checksums import _tile_states  # noqa: E402
from ntksolve.dask.store import _open_layout  # noqa: E402
from ntksolve.dynamics import ConjugateGradient, Nystrom  # noqa: E402

CG12 = ConjugateGradient(tol=1e-12, preconditioner=Nystrom())

NET = ntksolve.MLP((512, 512), activation="relu", bias_std=0.1)


from dask_support import _data, _rel, client  # noqa: E402,F401  (client is a fixture)


def _states(path):
    """Tiles of the store verified against their checksums, never finished, failing (all read)."""
    return _tile_states(_open_layout(os.fspath(path)), _Runner("sync"))


# ---------------------------------------------------------------------------------------------
# Zarr: resume after an interruption, refuse a foreign store
# ---------------------------------------------------------------------------------------------
class _Interrupt(RuntimeError):
    pass


class _StopAfter:
    """Test hook: raise after ``k`` tiles (the sync scheduler runs them one at a time, in order)."""

    def __init__(self, k):
        self.k, self.seen = k, 0

    def __call__(self, i, j):
        self.seen += 1
        if self.seen >= self.k:
            raise _Interrupt(f"simulated interruption after {self.seen} tiles")


def test_zarr_store_resumes_and_computes_only_missing_tiles(client, tmp_path):
    X, _ = _data(900)
    spec = D.KernelSpec(NET)
    path = tmp_path / "ntk.zarr"
    n_tiles = 4 * 5 // 2  # 4 row blocks of 256 (the last 132), upper triangle
    with pytest.raises(_Interrupt):
        D.store_kernel(spec, X, path, chunks=256, scheduler="sync", _after_tile=_StopAfter(4))
    assert len(_states(path).ok) == 4
    with pytest.raises(ValueError, match="incomplete"):
        D.open_kernel(path)
    res = D.store_kernel(spec, X, path, chunks=256, scheduler=client)  # resumed on the cluster
    assert (res.n_tiles, res.n_computed) == (n_tiles, n_tiles - 4)
    again = D.store_kernel(spec, X, path, chunks=256, scheduler=client)
    assert again.n_computed == 0
    stored = D.open_kernel(path).compute(scheduler="threads")
    ref = ntksolve.analytic_kernels(NET, X).ntk
    assert _rel(stored, ref) <= 1e-13
    # identical to an uninterrupted run
    fresh = D.store_kernel(spec, X, tmp_path / "fresh.zarr", chunks=256, scheduler="threads")
    np.testing.assert_array_equal(stored, fresh.kernel.compute(scheduler="threads"))
    # and the solver reads its tiles from the store: same answer as computing them
    _, y = _data(900)
    a = D.fit_tiled(NET, X, y, diag_reg=1e-3, chunks=256, store=path, scheduler=client, method=CG12)
    b = D.fit_tiled(NET, X, y, diag_reg=1e-3, chunks=256, scheduler=client, method=CG12)
    np.testing.assert_array_equal(a.coef, b.coef)


_KILLED_RUN = """
import os, signal, sys
import numpy as np
import ntksolve
import ntksolve.dask as D

print(os.getpid(), flush=True)

def die_after_three(i, j, seen=[]):
    seen.append((i, j))
    if len(seen) == 3:
        os.kill(os.getpid(), signal.SIGKILL)   # a hard interruption: no cleanup, no exception

X = np.random.default_rng(0).standard_normal((700, 6))
net = ntksolve.MLP((512, 512), activation="relu", bias_std=0.1)
D.store_kernel(D.KernelSpec(net), X, sys.argv[1], chunks=100, scheduler="sync", _after_tile=die_after_three)
"""


def test_zarr_store_resumes_after_the_process_is_killed(tmp_path):
    path = tmp_path / "killed.zarr"
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(path)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert len(_states(path).ok) == 3
    # the killed writer's lock is left behind, naming a process that no longer exists: broken
    pid = int(proc.stdout.split()[0])
    assert read_lock(path)["pid"] == pid and os.path.exists(lock_path(path))
    # and a reader is told that writer is gone, not that it is still writing
    with pytest.raises(ValueError, match=rf"incomplete \(3 of 28 tiles.*its writer, pid {pid} .* is gone; rerun"):
        D.open_kernel(path)
    X = np.random.default_rng(0).standard_normal((700, 6))
    res = D.store_kernel(D.KernelSpec(NET), X, path, chunks=100, scheduler="threads")
    assert (res.n_tiles, res.n_computed) == (28, 25)
    assert _rel(res.kernel.compute(scheduler="threads"), ntksolve.analytic_kernels(NET, X).ntk) <= 1e-13
    assert read_lock(path) is None


def test_zarr_store_refuses_another_kernel(tmp_path):
    X, _ = _data(300)
    path = tmp_path / "k.zarr"
    D.store_kernel(D.KernelSpec(NET), X, path, chunks=128, scheduler="sync")
    other = ntksolve.MLP((512, 512), activation="relu", bias_std=0.2)
    with pytest.raises(ValueError, match=r"holds a different kernel \(kernel differ"):
        D.store_kernel(D.KernelSpec(other), X, path, chunks=128, scheduler="sync")
    with pytest.raises(ValueError, match=r"X1 differ"):
        D.store_kernel(D.KernelSpec(NET), X + 1e-9, path, chunks=128, scheduler="sync")
    with pytest.raises(ValueError, match=r"chunks differ"):
        D.store_kernel(D.KernelSpec(NET), X, path, chunks=100, scheduler="sync")
    with pytest.raises(ValueError, match=r"dtype differ"):
        D.store_kernel(D.KernelSpec(NET), X, path, chunks=128, dtype=np.float32, scheduler="sync")
    import zarr

    foreign = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="a")
    foreign.create_array("data", shape=(3,), dtype="f8")
    with pytest.raises(ValueError, match="did not write"):
        D.store_kernel(D.KernelSpec(NET), X, tmp_path / "foreign.zarr", chunks=128, scheduler="sync")


def test_store_path_that_is_a_file_is_refused_before_any_tile(tmp_path):
    X, _ = _data(20)
    path = tmp_path / "k.zarr"
    path.write_text("not a store")
    with pytest.raises(ValueError, match=r"k.zarr.*is a file, not a folder.*another path"):
        D.store_kernel(D.KernelSpec(NET), X, path, chunks=8, scheduler="sync")
    assert path.read_text() == "not a store"
    assert read_lock(path) is None and not os.path.exists(lock_path(os.fspath(path)))
    with pytest.raises(OSError, match=r"cannot write the kernel store at .*k.zarr/inner.*writable folder"):
        D.store_kernel(D.KernelSpec(NET), X, path / "inner", chunks=8, scheduler="sync")


# ---------------------------------------------------------------------------------------------
# one writer at a time
# ---------------------------------------------------------------------------------------------
_HOLDING_WRITER = """
import os, sys, time
import numpy as np
import ntksolve
import ntksolve.dask as D

path, ready, go = sys.argv[1:4]

def hold_after_first(i, j, seen=[]):
    seen.append((i, j))
    if len(seen) == 1:   # one tile written: tell the test, then wait for it
        open(ready, "w").close()
        t0 = time.monotonic()
        while not os.path.exists(go) and time.monotonic() - t0 < 60:
            time.sleep(0.02)

X = np.random.default_rng(1).standard_normal((300, 6))
net = ntksolve.MLP((512, 512), activation="relu", bias_std=0.1)
D.store_kernel(D.KernelSpec(net), X, path, chunks=100, scheduler="sync", _after_tile=hold_after_first)
"""


def test_second_writer_is_refused_while_the_first_writes(tmp_path):
    """Two processes, two data sets, one store: the second is refused (naming the first) while the
    first writes, and by the identity afterwards; the store then holds exactly the first's kernel."""
    path, ready, go = tmp_path / "shared.zarr", tmp_path / "ready", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDING_WRITER, str(path), str(ready), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        t0 = time.monotonic()
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() - t0 < 120
            time.sleep(0.02)
        X_mine = np.random.default_rng(2).standard_normal((300, 6))
        with pytest.raises(D.StoreLockedError, match=rf"being written by pid {proc.pid} on host"):
            D.store_kernel(D.KernelSpec(NET), X_mine, path, chunks=100, scheduler="sync")
        with pytest.raises(ValueError, match=rf"incomplete \(1 of 6 tiles.*pid {proc.pid} .* is writing it"):
            D.open_kernel(path)
    finally:
        go.touch()
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert read_lock(path) is None
    with pytest.raises(ValueError, match=r"holds a different kernel \(X1 differ"):
        D.store_kernel(D.KernelSpec(NET), X_mine, path, chunks=100, scheduler="sync")
    X_theirs = np.random.default_rng(1).standard_normal((300, 6))
    stored = D.open_kernel(path, verify=True).compute(scheduler="sync")
    assert _rel(stored, ntksolve.analytic_kernels(NET, X_theirs).ntk) <= 1e-13


def test_lock_of_another_host_is_refused_and_of_a_dead_pid_broken(tmp_path):
    X, _ = _data(200)
    path = tmp_path / "k.zarr"
    with open(lock_path(path), "w") as fh:
        json.dump({"pid": os.getpid(), "host": "node-17.elsewhere", "time": 0.0, "token": "t"}, fh)
    with pytest.raises(D.StoreLockedError, match=r"pid \d+ on host 'node-17.elsewhere'.*another host"):
        D.store_kernel(D.KernelSpec(NET), X, path, chunks=100, scheduler="sync")
    assert not path.exists()  # refused before anything was written
    # a pid of this host that has exited (a child, reaped) holds nothing
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(lock_path(path), "w") as fh:
        json.dump({"pid": int(dead.stdout), "host": socket.gethostname(), "time": 0.0, "token": "t"}, fh)
    res = D.store_kernel(D.KernelSpec(NET), X, path, chunks=100, scheduler="sync")
    assert res.n_computed == 3 and read_lock(path) is None


def test_a_store_reached_through_a_symbolic_link_has_one_lock(tmp_path):
    from ntksolve.dask.lock import WriterLock

    real, link = tmp_path / "real.zarr", tmp_path / "link.zarr"
    real.mkdir()
    os.symlink(real, link)  # the lock file is beside the store, so a link to the store itself
    X, _ = _data(50)
    with WriterLock(real):
        with pytest.raises(D.StoreLockedError, match=rf"being written by pid {os.getpid()} on host"):
            D.store_kernel(D.KernelSpec(NET), X, link, chunks=25, scheduler="sync")
    assert os.listdir(real) == []  # refused before anything was written


# ---------------------------------------------------------------------------------------------
# every tile checked against its checksum
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def stored(tmp_path):
    """A complete symmetric store of 3 x 3 chunks (6 tiles of 100, the last row of 50)."""
    X, _ = _data(250, seed=4)
    path = tmp_path / "k.zarr"
    res = D.store_kernel(D.KernelSpec(NET), X, path, chunks=100, scheduler="sync")
    assert res.n_computed == 6
    return X, path, ntksolve.analytic_kernels(NET, X).ntk


def _plain(path):
    """What Zarr alone reads back (no checksums): a damaged chunk reads as NaN or other numbers."""
    return np.asarray(zarr.open_array(str(path / "kernel"), mode="r")[:])


def _named_and_repaired(X, path, ref, tiles):
    """The damage is named by every reader, a plain rerun refuses it, repair recomputes exactly it."""
    with pytest.raises(D.StoreVerificationError, match="fails verification") as lazy:
        D.open_kernel(path).compute(scheduler="sync")
    assert set(lazy.value.tiles) <= set(tiles)
    with pytest.raises(D.StoreVerificationError, match=r"repair=True") as eager:
        D.open_kernel(path, verify=True, scheduler="threads")
    assert sorted(eager.value.tiles) == sorted(tiles)
    with pytest.raises(D.StoreVerificationError, match=r"recompute exactly these tiles") as rerun:
        D.store_kernel(D.KernelSpec(NET), X, path, chunks=100, scheduler="sync")
    assert sorted(rerun.value.tiles) == sorted(tiles)
    res = D.store_kernel(D.KernelSpec(NET), X, path, chunks=100, scheduler="sync", repair=True)
    assert res.n_computed == len(tiles) and sorted(res.repaired) == sorted(tiles)
    assert _rel(D.open_kernel(path, verify=True).compute(scheduler="sync"), ref) <= 1e-13
    assert D.store_kernel(D.KernelSpec(NET), X, path, chunks=100, scheduler="sync").n_computed == 0


def test_deleted_chunk_is_named_not_read_as_nan(stored):
    X, path, ref = stored
    os.remove(path / "kernel" / "c" / "2" / "0")  # the mirror of tile (0, 2)
    assert np.isnan(_plain(path)).any()
    _named_and_repaired(X, path, ref, [(0, 2)])


def test_deleted_kernel_array_is_named_not_recreated_as_complete(stored):
    X, path, ref = stored
    shutil.rmtree(path / "kernel")
    with pytest.raises(D.StoreVerificationError, match="kernel array is missing") as exc:
        D.open_kernel(path)
    assert len(exc.value.tiles) == 6
    with pytest.raises(D.StoreVerificationError, match="6 of 6 tiles"):
        D.store_kernel(D.KernelSpec(NET), X, path, chunks=100, scheduler="sync")
    res = D.store_kernel(D.KernelSpec(NET), X, path, chunks=100, scheduler="sync", repair=True)
    assert res.n_computed == 6
    assert _rel(D.open_kernel(path, verify=True).compute(scheduler="sync"), ref) <= 1e-13


def test_flipped_bit_in_a_compressed_tile_is_named(stored):
    X, path, ref = stored
    chunk = path / "kernel" / "c" / "1" / "1"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    try:  # plain Zarr: either other numbers or a decoding error, depending on the bit
        assert not np.array_equal(_plain(path)[100:200, 100:200], ref[100:200, 100:200])
    except Exception:
        pass
    _named_and_repaired(X, path, ref, [(1, 1)])


def test_identity_rewritten_for_another_data_set_fails_every_tile(stored, tmp_path):
    """The race this guards against ends with one writer's identity over the other's tiles: the
    checksums are keyed by the identity, so no tile then verifies."""
    X, path, ref = stored
    other = tmp_path / "other.zarr"
    X_other = X + 0.5
    D.store_kernel(D.KernelSpec(NET), X_other, other, chunks=100, scheduler="sync")
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["ntksolve_kernel"] = dict(zarr.open_group(str(other), mode="r").attrs)["ntksolve_kernel"]
    with pytest.raises(D.StoreVerificationError, match="6 of 6 tiles") as exc:
        D.open_kernel(path, verify=True)
    assert "written for another kernel" in str(exc.value)
    with pytest.raises(D.StoreVerificationError):
        D.store_kernel(D.KernelSpec(NET), X_other, path, chunks=100, scheduler="sync")
    res = D.store_kernel(D.KernelSpec(NET), X_other, path, chunks=100, scheduler="sync", repair=True)
    assert res.n_computed == 6
    assert _rel(D.open_kernel(path).compute(scheduler="sync"), ntksolve.analytic_kernels(NET, X_other).ntk) <= 1e-13


def test_operator_reads_are_verified(stored):
    X, path, ref = stored
    spec = D.KernelSpec(NET)
    V = np.random.default_rng(0).standard_normal((250, 2))
    with D.TiledKernelOperator(spec, X, chunks=100, store=path, in_memory=False, scheduler="sync") as op:
        assert _rel(op.matmat(V), ref @ V) <= 1e-13
        os.remove(path / "kernel" / "c" / "0" / "1")
        with pytest.raises(D.StoreVerificationError, match=r"tile \(0, 1\)"):
            op.matmat(V)  # streamed from disk: every product checks what it reads
    (path / "kernel" / "c" / "2" / "2").write_bytes(b"not a zstd frame")
    with pytest.raises(D.StoreVerificationError, match="2 of 6 tiles") as exc:
        D.TiledKernelOperator(spec, X, chunks=100, store=path, scheduler="threads")  # held: checked once
    assert sorted(exc.value.tiles) == [(0, 1), (2, 2)]
    assert "cannot be read" in str(exc.value)


def test_store_of_the_unchecked_format_is_refused(stored):
    """A store of the first format (a side list of finished tiles, no checksums) cannot be verified."""
    X, path, _ = stored
    group = zarr.open_group(str(path), mode="r+")
    record = dict(group.attrs)["ntksolve_kernel"]
    group.attrs["ntksolve_kernel"] = dict(record, format=1)
    for call in (lambda: D.open_kernel(path), lambda: D.store_kernel(D.KernelSpec(NET), X, path, chunks=100)):
        with pytest.raises(ValueError, match="has format 1.*cannot be verified. Delete it"):
            call()


def test_rectangular_full_empirical_store_is_checked_too(tmp_path):
    """``K(X1, X2)`` with its ``(k, k)`` output axes: chunks (i, j, 0, 0), every one checksummed."""
    net = ntksolve.MLP((32,), activation="erf", bias_std=0.2, n_outputs=2)
    X1, _ = _data(70, seed=5)
    X2, _ = _data(45, seed=6)
    params = net.init(6, random_state=0)
    spec = D.KernelSpec(net, params, trace=False)
    path = tmp_path / "full.zarr"
    res = D.store_kernel(spec, X1, path, X2=X2, chunks=30, scheduler="sync")
    assert (res.n_tiles, res.n_computed) == (6, 6)  # 3 row blocks (30, 30, 10) x 2 (30, 15)
    ref = ntksolve.empirical_ntk(net, params, X1, X2, trace=False)
    assert res.kernel.shape == (70, 45, 2, 2)
    assert _rel(D.open_kernel(path, verify=True).compute(scheduler="sync"), ref) <= 1e-13
    os.remove(path / "kernel" / "c" / "2" / "1" / "0" / "0")
    with pytest.raises(D.StoreVerificationError, match=r"1 of 6 tiles.*\(2, 1\)") as exc:
        D.store_kernel(spec, X1, path, X2=X2, chunks=30, scheduler="sync")
    assert exc.value.tiles == ((2, 1),)
    res = D.store_kernel(spec, X1, path, X2=X2, chunks=30, scheduler="sync", repair=True)
    assert res.repaired == ((2, 1),)
    assert _rel(res.kernel.compute(scheduler="sync"), ref) <= 1e-13
