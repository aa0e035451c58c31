"""The checked arguments of a run of :func:`ntksolve.train_network`'s interface: a :class:`Plan`.

Every trainer of that interface (numpy's MLP and layered network, scikit-learn's, PyTorch's) checks
its network and inputs its own way, then everything else here (:func:`plan_run`; :func:`plan_mlp`
for an :class:`~ntksolve.MLP`): test inputs, targets for the loss, steps and records, the rates of
the rule, batches, ``on_divergence``; all before any work. :func:`ntksolve.torch.train` shares the
pieces (:func:`_check_steps`, :func:`_check_targets`, ...).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ntksolve._validation import check_inputs
from ntksolve.dynamics.batches import check_batches
from ntksolve.dynamics.function_space import _targets
from ntksolve.dynamics.rules import GradientDescent
from ntksolve.dynamics.schedules import as_schedule

__all__ = ["Plan", "plan_run", "plan_mlp", "check_on_divergence", "check_test_inputs"]


def _check_targets(y, n_rows: int, k: int, name: str, dtype) -> np.ndarray:
    arr = np.asarray(y)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape != (n_rows, k):
        raise ValueError(
            f"{name} must have shape ({n_rows},) or ({n_rows}, {k}) to match the inputs and the "
            f"network's {k} output(s), got {np.shape(y)}"
        )
    out = np.ascontiguousarray(arr, dtype=dtype)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or infinity; remove or impute them first")
    return out


def _check_steps(steps, record_at):
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    steps = int(steps)
    if record_at is None:
        return steps, np.array([0, steps], dtype=np.int64) if steps else np.array([0], dtype=np.int64)
    rec = np.asarray(record_at)
    if rec.ndim == 0:
        rec = rec[None]
    if rec.ndim != 1 or rec.size == 0:
        raise ValueError(f"record_at must be a non-empty 1-D sequence of steps, got shape {rec.shape}")
    if not np.issubdtype(rec.dtype, np.integer):
        if not (np.issubdtype(rec.dtype, np.floating) and np.all(np.isfinite(rec)) and np.all(rec == np.round(rec))):
            raise ValueError(f"record_at must contain integer steps (time is counted in steps), got {record_at!r}")
    rec = rec.astype(np.int64)
    if rec[0] < 0 or rec[-1] > steps:
        raise ValueError(f"record_at must lie within [0, steps] = [0, {steps}], got {rec.min()} ... {rec.max()}")
    if np.any(np.diff(rec) <= 0):
        raise ValueError("record_at must be strictly increasing (sorted, no repeats)")
    return steps, rec


def check_on_divergence(on_divergence) -> str:
    if on_divergence not in ("raise", "return"):
        raise ValueError(f"on_divergence must be 'raise' or 'return', got {on_divergence!r}")
    return on_divergence


def check_test_inputs(X_test, y_test, check):
    """``check(X_test, "X_test")``, or None; ``y_test`` without ``X_test`` is refused."""
    if X_test is not None:
        return check(X_test, "X_test")
    if y_test is not None:
        raise ValueError("y_test was given without X_test")
    return None


@dataclass
class Plan:
    """A checked run of :func:`ntksolve.train_network`'s interface (every array validated).

    Attributes
    ----------
    rule : GradientDescent or Adam
    kind : {"mse", "cross_entropy"}
    X : ndarray, shape (N, ...)
    X_test : ndarray, shape (M, ...), or None
    Y : ndarray, shape (N, k)
        The loss seed's targets (MSE targets, or one-hot rows / 0-1 column) in ``dt``.
    target, target_test : ndarray
        What the loss is measured against: ``Y`` (MSE) or the labels; ``target_test`` None without
        test targets.
    steps : int
    record_at : ndarray of int, shape (T,)
    rates : ndarray, shape (steps,)
        The rate of each step.
    first_rate : float
    batches : list of ndarray or None
    on_divergence : {"raise", "return"}
    k : int
    dt : numpy dtype
    """

    rule: Any
    kind: str
    X: np.ndarray
    X_test: Optional[np.ndarray]
    Y: np.ndarray
    target: np.ndarray
    target_test: Optional[np.ndarray]
    steps: int
    record_at: np.ndarray
    rates: np.ndarray
    first_rate: float
    batches: Optional[list]
    on_divergence: str
    k: int
    dt: Any

    @property
    def N(self) -> int:
        return self.X.shape[0]

    @property
    def with_critical_rate(self) -> bool:
        """Gradient descent on MSE: the divergence message quotes the rule's critical rate."""
        return self.kind == "mse" and isinstance(self.rule, GradientDescent)


def plan_run(rule, kind, X, y, *, k, dt, check, X_test, y_test, steps, record_at, batches, on_divergence) -> Plan:
    """The checks of :func:`ntksolve.train_network` after the network's: ``X`` is validated,
    ``check(A, name)`` validates ``X_test`` the same way; targets, steps, rates, batches."""
    N = X.shape[0]
    X_test = check_test_inputs(X_test, y_test, check)
    if kind == "mse":
        Y = target = _check_targets(y, N, k, "y", dt)
        target_test = None if y_test is None else _check_targets(y_test, X_test.shape[0], k, "y_test", dt)
    else:
        Y, target = _targets(y, N, k, "y")
        Y = Y.astype(dt)
        target_test = None if y_test is None else _targets(y_test, X_test.shape[0], k, "y_test")[1]
    steps, rec = _check_steps(steps, record_at)
    schedule = as_schedule(rule.learning_rate)
    rates = schedule.rates(steps)  # an array schedule too short: refused here
    first_rate = float(schedule.rates(1)[0])
    batch_list = check_batches(batches, N, steps)
    check_on_divergence(on_divergence)
    return Plan(
        rule, kind, X, X_test, Y, target, target_test, steps, rec, rates, first_rate, batch_list, on_divergence, k, dt
    )


def plan_mlp(net, params, X, y, rule, kind, **run) -> Plan:
    """:func:`plan_run` for an :class:`~ntksolve.MLP` (``X`` of shape (N, d))."""
    from ntksolve.nets.mlp import require_mlp

    require_mlp(net, "this trainer", "train a Network with ntksolve.train_network")
    d, dt = net.check_params(params)

    def check(A, name):
        return check_inputs(A, name=name, n_features=d, dtype=dt)

    return plan_run(rule, kind, check(X, "X"), y, k=net.n_outputs, dt=dt, check=check, **run)
