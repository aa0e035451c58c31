"""Where tiled work runs: the scheduler a user names, the connection to it, and threads per task.

Schedulers
----------
``scheduler=None`` uses the current ``dask.distributed`` client if there is one, else Dask's
threaded scheduler. Also accepted: ``"threads"``, ``"sync"``, ``"processes"``, a
``distributed.Client``, or a scheduler address such as ``"tcp://10.0.0.5:8786"`` (connected within
``CONNECT_TIMEOUT_S`` seconds, or a ``ConnectionError`` naming the address).

Threads
-------
A Dask worker with ``T`` threads runs ``T`` tasks at once. Every task of :mod:`ntksolve.dask`
therefore runs its numba and BLAS code on one thread (``numba.set_num_threads(1)`` in the task's
thread, its count restored when the task ends; BLAS limited to one thread for the whole worker process through ``threadpoolctl``): ``T``
busy cores per worker, its thread count, never ``T`` tasks each starting a pool as wide as the
machine. The threaded scheduler's pool gets the same treatment for the duration of a computation.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time

from ntksolve._config import CONNECT_TIMEOUT_S, TILE_MEMORY_FRACTION
from ntksolve._extras import require

dask = require("dask", "dask", "ntksolve.dask (kernel tiles on Dask)")

_LOCAL_SCHEDULERS = ("threads", "threading", "sync", "synchronous", "single-threaded", "processes", "multiprocessing")

_BLAS_LIMITED_IN_PROCESS = False
_LIMIT_LOCK = threading.Lock()


def _current_worker():
    try:
        from distributed import get_worker
    except ImportError:  # pragma: no cover - distributed is part of the extra
        return None
    try:
        return get_worker()
    except ValueError:
        return None


def _limit_task_threads() -> None:
    """One numba thread for this task's thread; one BLAS thread for a worker process (module doc).

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


@contextlib.contextmanager
def _task_threads():
    """The body of a task: :func:`_limit_task_threads`, then the calling thread's numba thread count
    as it was. Under the synchronous scheduler a task runs in the caller's own thread, which was
    otherwise left on one numba thread for the rest of the session."""
    import numba

    before = numba.get_num_threads()
    _limit_task_threads()
    try:
        yield
    finally:
        numba.set_num_threads(before)


class _Runner:
    """Runs Dask collections on the scheduler the user named; owns a client it opened itself.

    Parameters
    ----------
    scheduler : None, str or distributed.Client
        See the module docstring.
    connect_timeout : float
        Seconds to reach a scheduler given by address.

    Attributes
    ----------
    client : distributed.Client or None
    local : str or None
        The local scheduler's name when there is no client.
    description : str
    """

    def __init__(self, scheduler=None, *, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.client = None
        self.local = None
        self._own = False
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
            except ImportError:  # pragma: no cover - distributed is part of the extra
                Client = ()
            if not isinstance(scheduler, Client):
                raise ValueError(
                    f"scheduler must be None, a name ('threads', 'sync', 'processes'), a scheduler "
                    f"address or a distributed.Client, got {type(scheduler).__name__}"
                )
            self.client = scheduler
        self.description = f"client {self.client.scheduler.address}" if self.client is not None else self.local

    def _local_context(self):
        if self.local in ("threads", "threading"):
            from threadpoolctl import threadpool_limits

            return threadpool_limits(1)
        return contextlib.nullcontext()

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
            futures = futures_of(out)
            with self.client.as_current():  # wait() looks for the current client
                wait(futures)
            for f in futures:  # a failed task raises here, as under a local scheduler, not at first use
                if f.status == "error":
                    f.result()
            return list(out)
        with self._local_context():
            return list(dask.persist(*objs, scheduler=self.local))

    def memory_limit(self) -> float:
        """Bytes the tiles may take across the workers (see ``TILE_MEMORY_FRACTION``)."""
        if self.client is not None:
            info = self.client.scheduler_info
            workers = (info(n_workers=-1) if _accepts_n_workers(info) else info())["workers"]
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


def _accepts_n_workers(method) -> bool:
    """Whether ``Client.scheduler_info`` takes ``n_workers`` (newer distributed lists only some without it)."""
    try:
        return "n_workers" in inspect.signature(method).parameters
    except (TypeError, ValueError):  # pragma: no cover
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


__all__ = ["CONNECT_TIMEOUT_S"]
