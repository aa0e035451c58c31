"""BLAS threads: how many are in effect, and running one BLAS call per Python thread.

Private. The empirical kernels split their work between Python threads, each of which calls BLAS
single-threaded (:func:`single_threaded`), instead of letting OpenBLAS split each call between its
own threads. OpenBLAS threads a symmetric Gram product (SYRK) poorly: on two cores, two
single-threaded SYRKs side by side run about 15 % faster than one after another on two BLAS threads,
and the elementwise passes between the products then run on every core as well
(``kernels/empirical_terms.py``, ``nets/gram_terms.py``).

The limits go through ``threadpoolctl``, a dependency of scikit-learn. They are process-wide while
they hold: BLAS calls from other threads of the process run single-threaded for that time too.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading

import numba

_LOCK = threading.Lock()
_CONTROLLER = None
# Nested and concurrent single-threaded blocks share one limit: the first to enter sets it, the last
# to leave restores what was there before (two threads each saving and restoring "the previous"
# limit could otherwise leave BLAS at one thread for good).
_HOLDERS = 0
_LIMITER = None


def _blas_controller():
    """threadpoolctl's controller of the BLAS libraries loaded (built once: it scans the process)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        with _LOCK:
            if _CONTROLLER is None:
                from threadpoolctl import ThreadpoolController

                _CONTROLLER = ThreadpoolController().select(user_api="blas")
    return _CONTROLLER


def blas_threads() -> int:
    """The number of threads numpy's BLAS uses now (1 when it reports none)."""
    libs = _blas_controller().lib_controllers
    return max([1] + [int(lib.num_threads) for lib in libs])


def parallel_workers() -> int:
    """How many Python threads a kernel may split its work between: the smaller of numba's thread
    count (``numba.set_num_threads``; the Dask path sets 1) and BLAS's (``threadpoolctl``,
    ``OPENBLAS_NUM_THREADS``), so that neither limit a user set is exceeded."""
    return max(1, min(numba.get_num_threads(), blas_threads()))


@contextlib.contextmanager
def single_threaded():
    """BLAS limited to one thread while the block runs (the previous limits restored after).

    Yields whether the limit holds in the calling thread. OpenBLAS (0.3.30, measured) may ignore a
    limit set from a thread other than the main one once the main thread has set one itself, so
    the caller must not count on it: :func:`side_by_side` then runs its calls one after another.
    """
    global _HOLDERS, _LIMITER
    controller = _blas_controller()
    with _LOCK:
        if _HOLDERS == 0 and controller.lib_controllers:
            _LIMITER = controller.limit(limits=1)
        _HOLDERS += 1
    try:
        yield blas_threads() == 1
    finally:
        with _LOCK:
            _HOLDERS -= 1
            if _HOLDERS == 0 and _LIMITER is not None:
                _LIMITER.restore_original_limits()
                _LIMITER = None


class _Pool:
    """One lazily started pool of threads for the whole process (starting threads for every call
    costs milliseconds), started anew after a fork, whose child inherits no threads."""

    def __init__(self):
        self.executor, self.size, self.pid = None, 0, None

    def get(self, n: int) -> concurrent.futures.ThreadPoolExecutor:
        with _LOCK:
            if self.executor is None or self.size < n or self.pid != os.getpid():
                if self.executor is not None and self.pid == os.getpid():
                    self.executor.shutdown(wait=False)
                self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix=_PREFIX)
                self.size, self.pid = n, os.getpid()
            return self.executor


_PREFIX = "ntksolve-blas"
_POOL = _Pool()


def _after_fork_in_child() -> None:
    # a lock another thread held at the fork would stay held in the child for good
    global _LOCK, _HOLDERS, _LIMITER
    _LOCK, _HOLDERS, _LIMITER = threading.Lock(), 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def side_by_side(fn, items) -> None:
    """``fn(item)`` for every item, each on its own Python thread with BLAS single-threaded.

    Returns when every call has returned; the first exception raised is then re-raised. Worth it
    only for work that releases the GIL: BLAS calls through numpy and ``nogil`` numba kernels. Where
    the BLAS limit does not take (:func:`single_threaded`), or when called from one of these threads
    (a nested call would wait on its own pool), the calls run one after another in the caller.
    """
    items = list(items)
    if len(items) <= 1 or threading.current_thread().name.startswith(_PREFIX):
        for item in items:  # one call (BLAS keeps its threads), or nested in one of ours
            fn(item)
        return
    with single_threaded() as limited:
        if not limited:
            for item in items:
                fn(item)
            return
        pool = _POOL.get(len(items))
        futures = [pool.submit(fn, item) for item in items]
        concurrent.futures.wait(futures)
        for fut in futures:
            fut.result()


__all__ = ["blas_threads", "parallel_workers", "side_by_side", "single_threaded"]
