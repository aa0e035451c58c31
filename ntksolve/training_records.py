"""How every trainer measures and records a run: the wall time of the training alone
(:class:`Stopwatch`), the kernel's relative change from initialisation (:class:`KernelTracker`)
and the fields of a :class:`~ntksolve.training.TrainingResult` from the record buffers
(:func:`recorded`).

The numpy trainers (:mod:`ntksolve.training`, :mod:`ntksolve.network_training`) and scikit-learn's
(:mod:`ntksolve.sklearn.trainer`) share these, so their ``wall_time``, ``kernel_time`` and
``kernel_change`` mean the same thing.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

__all__ = ["Stopwatch", "KernelTracker", "recorded"]


class Stopwatch:
    """Wall time of the training alone: spans spent tracking the kernel or in a callback are
    paused out (both trainers report ``wall_time`` this way)."""

    def __init__(self):
        self.seconds = 0.0
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def paused(self):
        self.stop()
        try:
            yield
        finally:
            self._start = time.perf_counter()

    def stop(self):
        self.seconds += time.perf_counter() - self._start


class KernelTracker:
    """The kernel's relative change ``||Theta_s - Theta_0||_F / ||Theta_0||_F`` from its value at
    initialisation, and the seconds spent computing kernels (``kernel_time``).

    Parameters
    ----------
    kernel_now : callable () -> ndarray
        The empirical NTK of the network's current parameters on the training inputs.
    """

    def __init__(self, kernel_now):
        self._kernel_now = kernel_now
        t0 = time.perf_counter()
        self.theta0 = kernel_now()
        self._norm = float(np.linalg.norm(self.theta0))
        self.seconds = time.perf_counter() - t0

    def change(self, step):
        if step == 0:
            return 0.0
        t0 = time.perf_counter()
        out = float(np.linalg.norm(self._kernel_now() - self.theta0)) / self._norm
        self.seconds += time.perf_counter() - t0
        return out


def recorded(n, steps, fx_train, fx_test, loss_train, loss_test, kernel_change, track_kernel, k):
    """The fields of a :class:`TrainingResult` from a trainer's record buffers, cut to the ``n``
    records made (every trainer records into the same buffers)."""
    cut = lambda a: None if a is None else a[:n]  # noqa: E731
    return dict(
        steps=steps[:n].copy(),
        fx_train=fx_train[:n],
        fx_test=cut(fx_test),
        loss_train=loss_train[:n],
        loss_test=cut(loss_test),
        kernel_change=cut(kernel_change),
        kernel_kind=None if not track_kernel else ("traced" if k == 1 else "full"),
    )
