"""What every trainer records of a run: the :class:`TrainingResult` (and the error that carries it,
:class:`TrainingDivergedError`), the wall time of the training alone (:class:`Stopwatch`), the
kernel's relative change from initialisation (:class:`KernelTracker`) and the record buffers
(:class:`Records`).

The numpy trainers (:mod:`ntksolve.training`, :mod:`ntksolve.network_training`), scikit-learn's
(:mod:`ntksolve.sklearn.trainer`) and PyTorch's (:mod:`ntksolve.torch`) all record through these,
so their ``wall_time``, ``kernel_time`` and ``kernel_change`` mean the same thing.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

__all__ = ["TrainingResult", "TrainingDivergedError", "Stopwatch", "KernelTracker", "Records"]


@dataclass
class TrainingResult:
    """What :func:`~ntksolve.train_network` recorded.

    Attributes
    ----------
    steps : ndarray of int, shape (T,)
        The recorded steps (a prefix of ``record_at`` if training diverged).
    fx_train : ndarray, shape (T, N, k)
        Network outputs on the training inputs at each recorded step.
    fx_test : ndarray, shape (T, M, k), or None
        Outputs on ``X_test``, if given.
    loss_train : ndarray, shape (T,)
        ``1/(2Nk) sum ||f - y||^2`` (or the mean cross-entropy) on all training inputs at each
        recorded step.
    loss_test : ndarray, shape (T,), or None
        The same on ``(X_test, y_test)``, if ``y_test`` was given.
    accuracy_train, accuracy_test : ndarray, shape (T,), or None
        Cross-entropy only: the fraction of argmax (``f > 0`` for ``k = 1``) equal to the label.
    kernel_change : ndarray, shape (T,), or None
        ``||Theta_t - Theta_0||_F / ||Theta_0||_F`` of the empirical NTK on the training inputs
        (``kernel_kind`` says traced or full); ``None`` unless ``track_kernel``.
    kernel_kind : str or None
        ``"traced"`` (``k = 1``, where traced and full agree) or ``"full"`` (``k > 1``).
    net : MLP
        The network whose storage convention ``params`` follow (``net`` itself, except in
        standard parameterisation with ``bias_std = 0``; see :mod:`ntksolve.training`).
    params : list of (W, b)
        The parameters after the last step taken; ``net.apply(params, X)`` evaluates the trained
        model.
    learning_rate : float
        The rate of the first step.
    wall_time : float
        Seconds spent in gradient descent (forward, backward, update, and the recorded test
        outputs), excluding the kernel tracking.
    kernel_time : float
        Seconds spent computing the kernels for ``kernel_change``.
    critical_learning_rate : float or None
        Gradient descent on MSE: the rule's full-batch critical rate on the empirical NTK at
        initialisation (full kernel if ``k > 1``), ``2Nk / lambda_max`` for plain descent; computed
        when the kernel is tracked or training diverged. None for cross-entropy and Adam.
    diverged : bool
    message : str
        Empty, or why training stopped early.
    n_steps_taken : int
        The optimiser steps taken: ``steps`` unless training stopped early.
    loss : str or None
        ``"mse"`` or ``"cross_entropy"`` (None where a trainer does not say).
    dynamics : GradientDescent, Adam or None
        The rule that trained.
    """

    steps: np.ndarray
    fx_train: np.ndarray
    fx_test: Optional[np.ndarray]
    loss_train: np.ndarray
    loss_test: Optional[np.ndarray]
    kernel_change: Optional[np.ndarray]
    kernel_kind: Optional[str]
    net: Any
    params: list
    learning_rate: float
    wall_time: float
    kernel_time: float = 0.0
    critical_learning_rate: Optional[float] = None
    diverged: bool = False
    message: str = ""
    n_steps_taken: int = field(default=0)
    accuracy_train: Optional[np.ndarray] = None
    accuracy_test: Optional[np.ndarray] = None
    loss: Optional[str] = None
    dynamics: Any = None


class TrainingDivergedError(FloatingPointError):
    """Gradient descent diverged; ``.result`` holds the records up to the last finite step.

    Parameters
    ----------
    message : str
        What diverged, and the critical learning rate where it is known.
    result : TrainingResult
        The records up to the last finite step (``diverged`` True).
    """

    def __init__(self, message: str, result: TrainingResult):
        super().__init__(message)
        self.result = result


class Stopwatch:
    """Wall time of the training alone: spans spent tracking the kernel or in a callback are
    paused out (every trainer reports ``wall_time`` this way)."""

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


class Records:
    """The buffers of one run's records, filled at the steps ``steps`` (one record each).

    Parameters
    ----------
    steps : ndarray of int, shape (T,)
        The steps to record at (strictly increasing).
    n_train, n_test : int
        ``N`` training rows; ``M`` test rows (None: no test inputs).
    k : int
        Outputs.
    dtype : numpy dtype
        Of the recorded outputs.
    test_loss, accuracy : bool
        Whether a test loss (test targets given) and accuracies (a cross-entropy) are recorded.
    kernel_now : callable () -> ndarray, or None
        The empirical NTK of the current parameters on the training inputs (None: not tracked).
    """

    def __init__(self, steps, n_train, n_test, k, dtype, *, test_loss, accuracy, kernel_now):
        T = steps.size
        self.steps, self.k, self.n, self._T = steps, k, 0, T
        self.fx_train = np.empty((T, n_train, k), dtype=dtype)
        self.fx_test = None if n_test is None else np.empty((T, n_test, k), dtype=dtype)
        self.loss_train = np.empty(T)
        self.loss_test = np.empty(T) if test_loss else None
        self.accuracy_train = np.empty(T) if accuracy else None
        self.accuracy_test = np.empty(T) if (accuracy and test_loss) else None
        self.tracker = None if kernel_now is None else KernelTracker(kernel_now)
        self.kernel_change = None if kernel_now is None else np.empty(T)

    def due(self, s) -> bool:
        """Whether step ``s`` is the next to record."""
        return self.n < self._T and self.steps[self.n] == s

    def add(self, s, f, value, acc, test, clock):
        """Record step ``s``: training outputs ``f`` (N, k), their loss and accuracy, ``test``
        ``(ft, loss, accuracy)`` or None, the kernel change (outside ``clock``)."""
        i = self.n
        self.fx_train[i] = f
        self.loss_train[i] = value
        if self.accuracy_train is not None:
            self.accuracy_train[i] = acc
        if test is not None:
            self.fx_test[i] = test[0]
            if self.loss_test is not None:
                self.loss_test[i] = test[1]
            if self.accuracy_test is not None:
                self.accuracy_test[i] = test[2]
        if self.tracker is not None:
            with clock.paused():
                self.kernel_change[i] = self.tracker.change(s)
        self.n += 1

    def fields(self) -> dict:
        """The :class:`TrainingResult` fields of the records made."""
        n = self.n
        cut = lambda a: None if a is None else a[:n]  # noqa: E731
        return dict(
            steps=self.steps[:n].copy(),
            fx_train=self.fx_train[:n],
            fx_test=cut(self.fx_test),
            loss_train=self.loss_train[:n],
            loss_test=cut(self.loss_test),
            accuracy_train=cut(self.accuracy_train),
            accuracy_test=cut(self.accuracy_test),
            kernel_change=cut(self.kernel_change),
            kernel_kind=None if self.tracker is None else ("traced" if self.k == 1 else "full"),
            kernel_time=0.0 if self.tracker is None else self.tracker.seconds,
        )
