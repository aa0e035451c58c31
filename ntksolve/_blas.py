"""BLAS threads: how many are in effect, and running one BLAS call per Python thread.

Private. The empirical kernels split their work between Python threads, each of which calls BLAS
single-threaded (:func:`single_threaded`), instead of letting OpenBLAS split each call between its
own threads. OpenBLAS threads a symmetric Gram product (SYRK) poorly: on two cores, two
single-threaded SYRKs side by side run about 15 % faster than one after another on two BLAS threads,
and the elementwise passes between the products then run on every core as well
(``kernels/empirical.py``).

The limits go through ``threadpoolctl``, a dependency of scikit-learn. They are process-wide while
they hold: BLAS calls from other threads of the process run single-threaded for that time too.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
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
    the caller must not count on it: :func:`blas_workers` then keeps to one worker.
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


@contextlib.contextmanager
def blas_workers(n: int):
    """A pool of ``n`` Python threads whose BLAS calls each run single-threaded, side by side
    (one thread where the limit does not take: :func:`single_threaded`).

    Yields a :class:`concurrent.futures.ThreadPoolExecutor`; an exception raised in a task reaches
    the caller through its future's ``result()``. Worth it only for work that releases the GIL:
    BLAS calls through numpy and ``nogil`` numba kernels.
    """
    with single_threaded() as limited:
        # where the limit did not take, one worker (on BLAS's own threads) rather than n of them
        # each starting as many BLAS threads as there are cores
        with concurrent.futures.ThreadPoolExecutor(max_workers=n if limited else 1) as pool:
            yield pool


__all__ = ["blas_threads", "blas_workers", "parallel_workers", "single_threaded"]
