"""Learning-rate schedules and the per-mode factors of momentum, Nesterov and weight decay.

For a mode of the train kernel with eigenvalue ``λ`` (``a = λ/(Nk)``), every rule here moves the
train residual by a factor ``P_s(λ)`` after ``s`` steps, and the test outputs by
``Θ* (1 − P_s(λ))/λ`` per unit of ``y − f_0`` (``docs/training-rules.md`` derives both):

    plain descent    P_s = Π_j (1 − η_j a)
    heavy ball       P_s = [M_{s−1} ⋯ M_0]_11,  M_j = [[1 − η_j a, −η_j μ], [a, μ]]
    Nesterov         P_s = [M_{s−1} ⋯ M_0]_11,  M_j = [[1 − η_j a (1 + μ), −η_j μ²], [a, μ]]

(PyTorch ``torch.optim.SGD`` semantics, dampening 0, empty momentum buffer at the start).
:func:`mode_factors` evaluates them: a constant rate by a closed form at any step (no loop over
steps), any other schedule by one jitted pass over the steps per mode (``O(S_max · n)``).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from ntksolve._validation import check_memory, refuse_zero_rate
from ntksolve._jit.modes import decay_difference, momentum_modes
from ntksolve.dynamics.momentum_closed_form import constant_rate_modes

__all__ = [
    "Schedule",
    "as_schedule",
    "ModeFactors",
    "WeightDecayFactors",
    "mode_factors",
    "weight_decay_mode_factors",
]


def _real(value, name, *, positive=False, allow_zero=True):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (positive and v == 0) or (not allow_zero and v == 0):
        need = "positive" if positive or not allow_zero else "non-negative"
        raise ValueError(f"{name} must be a finite {need} number, got {value!r}")
    return v


def _rate(value, name):
    """A peak or constant rate: positive (0 refused with the reason every rate gives)."""
    refuse_zero_rate(value, name, "must be a finite positive number")
    return _real(value, name, positive=True)


def _count(value, name, *, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class Schedule:
    """An immutable learning-rate schedule ``η_s``, ``s = 0, 1, …`` (the rate of step ``s``).

    Build one with a named constructor, or from any array of non-negative finite rates:
    ``Schedule(rates)``. Step ``s`` uses ``η_s`` as PyTorch does when ``scheduler.step()`` follows
    each ``optimizer.step()``.

    PyTorch equivalents (``torch.optim.lr_scheduler``, ``S``):

    - ``constant(lr)``: no scheduler; ``step(lr, step_size, gamma)``: ``S.StepLR``;
      ``exponential(lr, gamma)``: ``S.ExponentialLR``;
    - ``cosine(lr, total_steps, min_lr)``: ``S.CosineAnnealingLR(opt, T_max=total_steps, eta_min=min_lr)``;
    - ``warmup_cosine(lr, total, warmup, start_factor=f, min_lr=m)``: ``S.SequentialLR(opt,
      [S.LinearLR(opt, f, total_iters=warmup), S.CosineAnnealingLR(opt, total - warmup, m)], [warmup])``;
    - ``warmup_linear(...)``: the same with ``S.LinearLR(opt, 1.0, m / lr, total_iters=total - warmup)``.

    Past ``total_steps`` the cosine continues as PyTorch's closed form does (it rises again, period
    ``2 T_max``); a linear decay stays at its end value.

    Parameters
    ----------
    rates : array_like, shape (S,)
        ``η_0 … η_{S−1}``; ``rates(n_steps)`` then needs ``n_steps <= S``.

    Examples
    --------
    >>> Schedule.cosine(0.5, total_steps=4).rates(5)
    array([0.5      , 0.4267767, 0.25     , 0.0732233, 0.       ])
    """

    __slots__ = ("_kind", "_args", "_array")

    def __init__(self, rates):
        arr = np.asarray(rates)
        if (
            arr.dtype == object
            or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool)
            or np.iscomplexobj(arr)
            or arr.dtype == bool
        ):
            raise TypeError(f"rates must be a real numeric array, got dtype {arr.dtype}")
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"rates must be a non-empty 1-D array (one rate per step), got shape {arr.shape}")
        arr = np.array(arr, dtype=np.float64)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
            raise ValueError(
                f"learning rates must be finite and non-negative; step {bad[0]} has {arr[bad[0]]!r} "
                f"({bad.size} such steps)"
            )
        arr.setflags(write=False)
        self._set("array", (), arr)

    def _set(self, kind, args, array):
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_args", args)
        object.__setattr__(self, "_array", array)

    @classmethod
    def _make(cls, kind, args):
        obj = cls.__new__(cls)
        obj._set(kind, args, None)
        return obj

    def __setattr__(self, name, value):
        raise AttributeError("Schedule is immutable; build a new one")

    def __reduce__(self):  # immutable: pickle by value, copies are the object itself
        return (_restore, (self._kind, self._args, self._array))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    # -- constructors -----------------------------------------------------------------------------
    @classmethod
    def constant(cls, lr):
        """``η_s = lr``.

        Parameters
        ----------
        lr : float > 0
        """
        return cls._make("constant", (_rate(lr, "lr"),))

    @classmethod
    def step(cls, lr, step_size, gamma=0.1):
        """``η_s = lr · gamma^⌊s / step_size⌋`` (``StepLR``).

        Parameters
        ----------
        lr : float > 0
        step_size : int ≥ 1
        gamma : float > 0, default 0.1
        """
        return cls._make(
            "step",
            (_rate(lr, "lr"), _count(step_size, "step_size"), _real(gamma, "gamma", positive=True)),
        )

    @classmethod
    def exponential(cls, lr, gamma):
        """``η_s = lr · gamma^s`` (``ExponentialLR``).

        Parameters
        ----------
        lr, gamma : float > 0
        """
        return cls._make("exponential", (_rate(lr, "lr"), _real(gamma, "gamma", positive=True)))

    @classmethod
    def cosine(cls, lr, total_steps, min_lr=0.0):
        """``η_s = min_lr + (lr − min_lr)(1 + cos(π s / total_steps))/2`` (``CosineAnnealingLR``).

        Parameters
        ----------
        lr : float > 0
        total_steps : int ≥ 1
            PyTorch's ``T_max``.
        min_lr : float in [0, lr], default 0.0
        """
        lr = _rate(lr, "lr")
        return cls._make("cosine", (lr, _count(total_steps, "total_steps"), _min_lr(min_lr, lr)))

    @classmethod
    def warmup_cosine(cls, lr, total_steps, warmup_steps, *, start_factor=1.0 / 3.0, min_lr=0.0):
        """Linear warm-up from ``start_factor · lr`` over ``warmup_steps``, then cosine to ``min_lr``.

        Parameters
        ----------
        lr : float > 0
            The peak rate, reached at step ``warmup_steps``.
        total_steps, warmup_steps : int, ``warmup_steps`` below ``total_steps``
        start_factor : float in (0, 1], default 1/3
            ``LinearLR``'s ``start_factor``.
        min_lr : float in [0, lr], default 0.0
        """
        lr, total, warm, start = _warmup_args(lr, total_steps, warmup_steps, start_factor)
        return cls._make("warmup_cosine", (lr, total, warm, start, _min_lr(min_lr, lr)))

    @classmethod
    def warmup_linear(cls, lr, total_steps, warmup_steps, *, start_factor=1.0 / 3.0, min_lr=0.0):
        """Linear warm-up from ``start_factor · lr`` over ``warmup_steps``, then linear decay to ``min_lr``.

        Parameters
        ----------
        lr, total_steps, warmup_steps, start_factor, min_lr
            As in :meth:`warmup_cosine`.
        """
        lr, total, warm, start = _warmup_args(lr, total_steps, warmup_steps, start_factor)
        return cls._make("warmup_linear", (lr, total, warm, start, _min_lr(min_lr, lr)))

    # -- values -----------------------------------------------------------------------------------
    @property
    def is_constant(self) -> bool:
        """True for :meth:`constant` (a closed form in the step count exists)."""
        return self._kind == "constant"

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def total_steps(self):
        """The steps the schedule was made for (cosine, warm-up kinds, an array), else None."""
        if self._kind == "array":
            return int(self._array.size)
        return int(self._args[1]) if self._kind in ("cosine", "warmup_cosine", "warmup_linear") else None

    def rates(self, n_steps) -> np.ndarray:
        """The rates of steps ``0 … n_steps − 1``.

        Parameters
        ----------
        n_steps : int ≥ 0
            At most the length of an array schedule.

        Returns
        -------
        rates : ndarray, shape (n_steps,), float64 (a fresh array)
        """
        n = _count(n_steps, "n_steps", minimum=0)
        k, p = self._kind, self._args
        if k == "array":
            if n > self._array.size:
                raise ValueError(
                    f"the schedule has {self._array.size} rates but {n} steps were asked for; pass a "
                    f"rate for every step up to the last one requested"
                )
            return self._array[:n].copy()
        check_memory(
            (n,),
            np.float64,
            what="learning rate of every step",
            hint="a rule with a schedule or weight decay, and any function-space recurrence, runs step by step: "
            "ask for fewer steps",
        )
        s = np.arange(n, dtype=np.float64)
        if k == "constant":
            return np.full(n, p[0])
        if k == "step":
            return p[0] * p[2] ** np.floor(s / p[1])
        if k == "exponential":
            return p[0] * p[1] ** s
        if k == "cosine":
            return _cosine(s, p[0], p[1], p[2])
        lr, total, warm, start, low = p
        out = np.empty(n)
        up = s < warm
        out[up] = lr * (start + (1.0 - start) * s[up] / warm)
        j, rest = s[~up] - warm, total - warm
        if k == "warmup_cosine":
            out[~up] = _cosine(j, lr, rest, low)
        else:
            out[~up] = lr + (low - lr) * np.minimum(j, rest) / rest
        return out

    def scaled(self, factor) -> "Schedule":
        """The same schedule with every rate multiplied by ``factor > 0`` (a change of loss units).

        Parameters
        ----------
        factor : float > 0

        Returns
        -------
        Schedule
            Of the same kind (``min_lr`` scaled too).
        """
        c = _real(factor, "factor", positive=True)
        if self._kind == "array":
            return Schedule(c * self._array)
        args = list(self._args)
        args[0] *= c  # the peak rate
        if self._kind in ("cosine", "warmup_cosine", "warmup_linear"):
            args[-1] *= c  # min_lr
        return Schedule._make(self._kind, tuple(args))

    def __repr__(self) -> str:
        if self._kind == "array":
            return f"Schedule(<{self._array.size} rates>)"
        return f"Schedule.{self._kind}{self._args!r}"

    def __eq__(self, other) -> bool:
        if not isinstance(other, Schedule) or self._kind != other._kind or self._args != other._args:
            return False
        return self._kind != "array" or np.array_equal(self._array, other._array)

    def __hash__(self) -> int:
        return hash((self._kind, self._args, None if self._array is None else self._array.tobytes()))


def _restore(kind, args, array):
    obj = Schedule.__new__(Schedule)
    obj._set(kind, args, array)
    return obj


def _min_lr(min_lr, lr):
    low = _real(min_lr, "min_lr")
    if low > lr:
        raise ValueError(f"min_lr={min_lr!r} must not exceed lr={lr!r}")
    return low


def _warmup_args(lr, total_steps, warmup_steps, start_factor):
    lr = _rate(lr, "lr")
    total = _count(total_steps, "total_steps", minimum=2)
    warm = _count(warmup_steps, "warmup_steps")
    if warm >= total:
        raise ValueError(f"warmup_steps={warm} must be below total_steps={total} (the decay needs a step)")
    start = _real(start_factor, "start_factor", positive=True)
    if start > 1.0:
        raise ValueError(f"start_factor must lie in (0, 1] (as LinearLR's), got {start_factor!r}")
    return lr, total, warm, start


def _cosine(s, lr, period, low):
    return low + (lr - low) * (1.0 + np.cos(np.pi * s / period)) / 2.0


def as_schedule(learning_rate) -> Schedule:
    """A :class:`Schedule` from a positive number (constant) or a Schedule (returned as is)."""
    if isinstance(learning_rate, Schedule):
        return learning_rate
    if isinstance(learning_rate, np.ndarray):
        raise TypeError("pass an array of rates as Schedule(rates), not as a bare array")
    return Schedule.constant(_rate(learning_rate, "learning_rate"))


# --- per-mode factors --------------------------------------------------------------------------------


class ModeFactors(NamedTuple):
    """Per-mode factors at the requested steps, each of shape (T, n).

    ``residual`` is ``P_s(λ)``; ``gain`` is ``1 − P_s(λ)`` (computed without cancellation, the
    train coefficient of ``y − f_0``); ``test`` is ``(1 − P_s(λ))/λ``, with its limit at ``λ = 0``.
    Null modes: ``residual = 1``, ``gain = test = 0``.
    """

    residual: np.ndarray
    gain: np.ndarray
    test: np.ndarray


class WeightDecayFactors(NamedTuple):
    """Per-mode factors of weight decay ``w`` (:func:`weight_decay_mode_factors`).

    With ``R_0 = Vᵀ(f_0 − y)``, ``B = Vᵀ J θ_0`` and ``Q = Vᵀ(y − f_0 + J θ_0)``:

        f_s  = y + V [residual ⊙ R_0 + forcing ⊙ (R_0 − B)]
        f*_s = f*_0 − (1 − free) J* θ_0 + Θ* V [test ⊙ Q − image ⊙ B]

    residual, forcing, test, image : ndarray, shape (T, n)
        ``P_s(a + w)``, ``w (1 − P_s(a + w))/(a + w)``, ``(1 − P_s(a + w))/((a + w) N k)`` and
        ``(P_s(w) − P_s(a + w))/λ``. Null modes: ``residual = 1``, the others 0.
    free : ndarray, shape (T,)
        ``P_s(w)``: the decay of the parameter directions that no training input sees.
    """

    residual: np.ndarray
    forcing: np.ndarray
    test: np.ndarray
    image: np.ndarray
    free: np.ndarray


def check_momentum(momentum, nesterov):
    """``(μ, nesterov)`` validated as ``torch.optim.SGD`` takes them."""
    mu = _real(momentum, "momentum")
    if mu >= 1.0:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}; momentum 1 or more never forgets a gradient")
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"nesterov must be a bool, got {nesterov!r}")
    if nesterov and mu == 0.0:
        raise ValueError("Nesterov momentum needs momentum > 0 (as torch.optim.SGD requires)")
    return mu, bool(nesterov)


def _check_modes(eigenvalues, steps, size, null):
    lam = np.asarray(eigenvalues)
    if lam.ndim != 1 or not np.issubdtype(lam.dtype, np.floating) and not np.issubdtype(lam.dtype, np.integer):
        raise ValueError(f"eigenvalues must be a 1-D real array, got shape {lam.shape}, dtype {lam.dtype}")
    lam = lam.astype(np.float64)
    if not np.all(np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError("eigenvalues must be finite and non-negative (clip rounding-level negatives first)")
    st = np.asarray(steps)
    if (
        st.ndim != 1
        or st.size == 0
        or not np.issubdtype(st.dtype, np.integer)
        and not (np.issubdtype(st.dtype, np.floating) and np.all(np.isfinite(st)) and np.all(st == np.round(st)))
    ):
        raise ValueError(f"steps must be a non-empty 1-D array of integer step counts, got {steps!r}")
    if np.any(st < 0) or np.any(np.diff(st) < 0):
        raise ValueError("steps must be non-negative and sorted ascending")
    # int64 where it holds the counts; float64 past 2^63, which only the constant-rate closed form
    # answers (the step-by-step recurrences refuse such counts in Schedule.rates)
    st = st.astype(np.int64) if st.dtype.kind != "f" or st[-1] < 2.0**63 else st.astype(np.float64)
    size = _real(size, "size", positive=True)
    if null is None:
        null = np.zeros(lam.size, dtype=bool)
    else:
        null = np.asarray(null)
        if null.dtype != bool or null.shape != lam.shape:
            raise ValueError(f"null must be a boolean mask of shape {lam.shape}, got {null.dtype} {null.shape}")
    return lam, st, size, np.ascontiguousarray(null)


def mode_factors(eigenvalues, steps, *, size, learning_rate, momentum=0.0, nesterov=False, null=None):
    """Per-mode residual factor ``P_s(λ)`` and test coefficient ``(1 − P_s(λ))/λ`` of (momentum) SGD.

    Parameters
    ----------
    eigenvalues : array_like, shape (n,)
        Eigenvalues ``λ ≥ 0`` of the (flattened) train kernel.
    steps : array_like of int, shape (T,)
        Step counts, ascending.
    size : float
        ``N k``, the number of target entries (``a = λ / size``).
    learning_rate : float or Schedule
    momentum : float in [0, 1), default 0
    nesterov : bool, default False
    null : array_like of bool, shape (n,), optional
        Modes that are exact zeros (they stay at ``f_0``).

    Returns
    -------
    ModeFactors
        ``residual``, ``gain``, ``test``, each (T, n).
    """
    lam, st, size, null = _check_modes(eigenvalues, steps, size, null)
    mu, nesterov = check_momentum(momentum, nesterov)
    sched = as_schedule(learning_rate)
    a = lam / size
    if sched.is_constant:
        P, C = constant_rate_modes(a, st, sched.rates(1)[0], mu, nesterov, null)
    else:
        P, C = _scheduled_modes(a, st, sched.rates(int(st[-1])), mu, nesterov, null)
    return ModeFactors(P, a * C, C / size)


def _scheduled_modes(a, steps, rates, mu, nesterov, null):
    """The jitted recurrences: ``(P, C)``, each (T, n), ``C = (1 − P)/a``."""
    P = np.empty((steps.size, a.size))
    C = np.empty_like(P)
    momentum_modes(np.ascontiguousarray(a), _padded(rates), float(mu), bool(nesterov), steps, null, P, C)
    return P, C


def _padded(rates):
    # the kernel reads rates[s] only for s < steps[-1]; a length-0 array still needs a valid buffer
    return np.ascontiguousarray(rates if rates.size else np.zeros(1), dtype=np.float64)


def weight_decay_mode_factors(
    eigenvalues, steps, *, size, learning_rate, weight_decay, momentum=0.0, nesterov=False, null=None
):
    """Per-mode factors of (momentum) SGD with weight decay ``w`` on all parameters (PyTorch's).

    The linearised network gives ``G_s = Θ r_s/(Nk) + w (f_s − f_0 + J θ_0)``: in parameter space a
    quadratic with Hessian ``H = Jᵀ J/(Nk) + w``, so every direction decays by ``P_s`` at its
    eigenvalue of ``H``; the train kernel's modes sit at ``a + w``, the directions no training input
    sees at ``w``. See :class:`WeightDecayFactors` for how the factors assemble.

    Parameters
    ----------
    eigenvalues, steps, size, learning_rate, momentum, nesterov, null
        As :func:`mode_factors`.
    weight_decay : float > 0

    Returns
    -------
    WeightDecayFactors

    Notes
    -----
    Every schedule, a constant rate included, goes through the jitted recurrences
    (``O(steps[-1] · n)``): the divided difference in ``image`` has no closed form here.
    """
    lam, st, size, null = _check_modes(eigenvalues, steps, size, null)
    mu, nesterov = check_momentum(momentum, nesterov)
    w = _real(weight_decay, "weight_decay", positive=True)
    sched = as_schedule(learning_rate)
    rates = _padded(sched.rates(int(st[-1])))
    a = lam / size
    P, C = _scheduled_modes(a + w, st, rates, mu, nesterov, null)
    Pw, _ = _scheduled_modes(np.array([w]), st, rates, mu, nesterov, np.zeros(1, dtype=bool))
    D = np.empty_like(P)
    decay_difference(np.ascontiguousarray(a), w, rates, mu, nesterov, st, null, D)
    return WeightDecayFactors(P, w * C, C / size, D / size, Pw[:, 0])
