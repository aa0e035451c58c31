"""Exact function-space recurrences of the linearised network, from the kernel alone.

Where no closed form exists (minibatches, cross-entropy) the linearised network's outputs still
obey a recurrence that needs only kernel columns: step ``s`` with batch ``b_s`` moves the train and
test outputs by ``−η_s`` times the momentum combination of

    MSE            G_s = Θ[:, b_s] (f_s − y)[b_s] / (|b_s| k),      G*_s = Θ*[:, b_s] (f_s − y)[b_s] / (|b_s| k)
    cross-entropy  G_s = Θ[:, b_s] (σ(f_s) − Y)[b_s] / |b_s|,       G*_s likewise with Θ*

(``σ`` the softmax over the ``k`` outputs, or the logistic function for ``k = 1``), plus
``w (f_s − f_0 + J θ_0)`` with weight decay ``w``. A full ``(N, N, k, k)`` kernel is used as the
``Nk × Nk`` matrix it is; a traced ``(N, N)`` one as ``Θ ⊗ I_k``. Each step costs
``O(N |b| k)`` (plus the test side); the momentum buffers follow PyTorch's ``SGD``.

Adaptive rules (Adam, RMSprop, Adagrad, ...) normalise the parameter gradient coordinate by
coordinate, so their function-space step depends on the parameters, not only on the kernel:
they have no function-space twin, and asking for one is an error.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import scipy.integrate
from scipy.special import expit, log_softmax, softmax

from ntksolve._validation import as_real_array as _as_real_array, check_finite as _check_finite
from ntksolve.dynamics.loss import mse_loss
from ntksolve.dynamics.operator import check_train_kernel as _check_train_kernel, flatten_full as _flatten_full
from ntksolve.dynamics.adaptive import Adam
from ntksolve.dynamics.batches import check_batches, independent_batches, shuffled_batches  # noqa: F401  (re-exported)
from ntksolve.dynamics.rules import GradientDescent, GradientFlow
from ntksolve.dynamics.schedules import _real, as_schedule

__all__ = [
    "Trajectory",
    "sgd_mse",
    "sgd_cross_entropy",
    "flow_cross_entropy",
    "shuffled_batches",
    "independent_batches",
]


class Trajectory(NamedTuple):
    """Outputs and losses at the requested steps (or times).

    Attributes
    ----------
    steps : ndarray, shape (T,)
    train : ndarray, shape (T,) + the shape of ``fx_train_0``
    test : ndarray, shape (T,) + the shape of ``fx_test_0``, or None
    train_loss, test_loss : ndarray, shape (T,)
        ``test_loss`` is None without test targets.
    train_accuracy, test_accuracy : ndarray, shape (T,), or None
        Cross-entropy only.
    batches : list of ndarray or None
        The index arrays actually used (None for full batches).
    """

    steps: np.ndarray
    train: np.ndarray
    test: Optional[np.ndarray]
    train_loss: np.ndarray
    test_loss: Optional[np.ndarray]
    train_accuracy: Optional[np.ndarray]
    test_accuracy: Optional[np.ndarray]
    batches: Optional[list]


def _check_rule(dynamics):
    """The :class:`GradientDescent` a function-space twin iterates (an adaptive rule is refused)."""
    if isinstance(dynamics, Adam):
        raise dynamics.no_twin_error("a function-space twin")
    if isinstance(dynamics, GradientFlow):
        raise TypeError(
            f"dynamics={dynamics!r}: the step-by-step twins iterate GradientDescent(...); for gradient flow use "
            "gradient_descent_mse (MSE) or flow_cross_entropy (cross-entropy)"
        )
    if not isinstance(dynamics, GradientDescent):
        raise TypeError(
            "dynamics must be a GradientDescent(learning_rate, momentum=..., nesterov=..., weight_decay=...) "
            f"(torch.optim.SGD's rule), got {dynamics!r}"
        )
    return dynamics


# --- the problem in internal layout ------------------------------------------------------------------


class _Problem:
    """Kernels flattened to ``(n, n)`` / ``(m, n)`` and outputs to ``(rows, c)`` columns.

    Traced kernel: ``n = N`` rows, ``c = k`` columns; full kernel: ``n = N k`` rows (index
    ``(i, a)``), ``c = 1``.
    """

    def __init__(self, k_train_train, fx_train_0, k_test_train, fx_test_0, images):
        A, full_k = _check_train_kernel(k_train_train)
        self.A = np.asarray(A, dtype=np.float64)
        f0 = _as_real_array(fx_train_0, "fx_train_0")
        n = self.A.shape[0]
        if full_k is None:
            if f0.ndim not in (1, 2) or f0.shape[0] != n:
                raise ValueError(f"fx_train_0 must have shape (N,) or (N, k) with N = {n}, got {f0.shape}")
            self.N, self.k = n, (1 if f0.ndim == 1 else f0.shape[1])
        else:
            self.N, self.k = n // full_k, full_k
            if f0.shape not in ((self.N, full_k),) + (((self.N,),) if full_k == 1 else ()):
                raise ValueError(
                    f"with a full kernel of k = {full_k}, fx_train_0 must have shape {(self.N, full_k)}, got {f0.shape}"
                )
        self.full, self.shape = full_k is not None, f0.shape
        self.F0 = self.inner(f0, "fx_train_0")
        self.test = k_test_train is not None or fx_test_0 is not None
        if self.test:
            if k_test_train is None or fx_test_0 is None:
                raise ValueError("test outputs need both k_test_train and fx_test_0")
            K = _as_real_array(k_test_train, "k_test_train")
            if self.full:
                if K.ndim != 4 or K.shape[1:] != (self.N, self.k, self.k):
                    raise ValueError(f"k_test_train must have shape (M, {self.N}, {self.k}, {self.k}), got {K.shape}")
                self.M, K = K.shape[0], _flatten_full(K)
            else:
                if K.ndim != 2 or K.shape[1] != self.N:
                    raise ValueError(f"k_test_train must have shape (M, {self.N}), got {K.shape}")
                self.M = K.shape[0]
            K = np.asarray(K, dtype=np.float64)
            _check_finite(K, "k_test_train")
            self.Kt = np.ascontiguousarray(K)  # applied at the recorded steps only
            ft0 = _as_real_array(fx_test_0, "fx_test_0")
            if ft0.shape != (self.M,) + self.shape[1:]:
                raise ValueError(f"fx_test_0 must have shape {(self.M,) + self.shape[1:]}, got {ft0.shape}")
            self.test_shape = ft0.shape
            self.Ft0 = self.inner(ft0, "fx_test_0")
        img_train, img_test = images
        self.img = (
            None if img_train is None else self.inner(self._like(img_train, self.shape, "image_train"), "image_train")
        )
        self.img_t = None
        if self.test and img_test is not None:
            self.img_t = self.inner(self._like(img_test, self.test_shape, "image_test"), "image_test")

    @staticmethod
    def _like(arr, shape, name):
        arr = _as_real_array(arr, name)
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
        return arr

    def inner(self, f, name):
        f = np.asarray(f, dtype=np.float64)
        _check_finite(f, name)
        return f.reshape(-1, 1).copy() if self.full else f.reshape(f.shape[0], -1).copy()

    def rows(self, b):
        """Rows of the internal layout that batch ``b`` of training points covers."""
        if not self.full:
            return b
        return (b[:, None] * self.k + np.arange(self.k)).ravel()

    def per_example(self, F):
        """Internal ``(rows, c)`` → ``(points, k)``."""
        return F.reshape(-1, self.k)


def _check_steps(steps):
    st = np.atleast_1d(np.asarray(steps))
    if st.ndim != 1 or st.size == 0 or not np.issubdtype(st.dtype, np.integer):
        raise ValueError(f"steps must be a non-empty 1-D array of ints (step counts), got {steps!r}")
    if np.any(st < 0) or np.any(np.diff(st) < 0):
        raise ValueError("steps must be non-negative and ascending")
    return st.astype(np.int64)


# Past the stability edge the outputs grow geometrically and overflow: the run is refused at the
# first recorded step it reaches, with the reason, instead of numpy's warnings and a trajectory of NaN.
@np.errstate(over="ignore", invalid="ignore")
def _run(prob, residual, steps, rule, batches, normaliser):
    """Iterate the rule; ``residual(F_rows)`` gives the loss gradient per output before the kernel.

    Only the train side is stepped through the kernel. The test outputs are linear in what drives
    them, so ``f*_s = f*_0 + Θ* C_s + α_s J*θ_0`` with ``C_s`` in the train layout and a scalar
    ``α_s`` that follow the same rule driven by ``E_s + w C_s`` and ``w (α_s + 1)`` (``E_s`` the
    pre-kernel residual of step ``s``, ``w`` the weight decay): the test kernel is applied at the
    recorded steps only, never per step.
    """
    mu, nesterov, wd = rule.momentum, rule.nesterov, rule.weight_decay
    S = int(steps[-1])
    rates = as_schedule(rule.learning_rate).rates(S)
    batches = check_batches(batches, prob.N, S)
    if wd > 0 and prob.img is None:
        raise ValueError(
            "weight decay needs image_train = own_parameter_image(net, params, X_train) "
            "(and image_test on the test inputs); it is not defined for an analytic kernel"
        )
    if wd > 0 and prob.test and prob.img_t is None:
        raise ValueError("weight decay with test outputs needs image_test = own_parameter_image(net, params, X_test)")
    F = prob.F0.copy()
    U = np.zeros_like(F) if mu else None
    out = np.empty((steps.size,) + F.shape)
    if prob.test:
        C = np.zeros_like(F)
        Uc = np.zeros_like(F) if mu else None
        alpha = u_alpha = 0.0
        out_t = np.empty((steps.size,) + prob.Ft0.shape)
    else:
        out_t = None
    t = 0
    for s in range(S + 1):
        while t < steps.size and steps[t] == s:
            if not np.all(np.isfinite(F)):
                raise FloatingPointError(
                    f"the {rule!r} run diverged: its outputs overflowed by step {s}, as real training at this "
                    "learning_rate does; lower learning_rate (full-batch MSE converges below "
                    "ntksolve.dynamics.critical_learning_rate(k_train_train, n_outputs)), or record earlier steps"
                )
            out[t] = F
            if prob.test:
                np.matmul(prob.Kt, C, out=out_t[t])
                out_t[t] += prob.Ft0
                if alpha:
                    out_t[t] += alpha * prob.img_t
            t += 1
        if s == S:
            break
        eta = rates[s]
        if batches is None:
            E = residual(F) / normaliser(prob.N)
            G = prob.A @ E
        else:
            r = prob.rows(batches[s])
            E = residual(F, batches[s])[r] / normaliser(batches[s].size)
            G = prob.A[r].T @ E  # the kernel is symmetric: rows instead of strided columns
        if wd:
            G += wd * (F - prob.F0 + prob.img)
        F -= eta * _momentum(G, U, mu, nesterov)
        if prob.test:
            if batches is None:
                D = E + wd * C if wd else E
            else:
                D = wd * C if wd else np.zeros_like(C)
                np.add.at(D, r, E)  # a batch may repeat an index: each occurrence counts, as in A[r].T @ E
            C -= eta * _momentum(D, Uc, mu, nesterov)
            if wd:
                g = wd * (alpha + 1.0)
                u_alpha = mu * u_alpha + g
                alpha -= eta * ((g + mu * u_alpha) if nesterov else u_alpha)
    return out, out_t, batches


def _momentum(G, U, mu, nesterov):
    """PyTorch SGD's direction from the gradient ``G``; updates the buffer ``U`` in place."""
    if not mu:
        return G
    U *= mu
    U += G
    return G + mu * U if nesterov else U


def sgd_mse(
    k_train_train,
    y_train,
    fx_train_0,
    steps,
    *,
    dynamics,
    batches=None,
    k_test_train=None,
    fx_test_0=None,
    y_test=None,
    image_train=None,
    image_test=None,
):
    """(Minibatch) SGD on MSE ``1/(2Nk) Σ ‖f − y‖²`` of the linearised network, step by step.

    Parameters
    ----------
    k_train_train : array_like, shape (N, N) traced or (N, N, k, k) full
    y_train, fx_train_0 : array_like, shape (N,) or (N, k)
    steps : array_like of int, shape (T,)
        Steps to record, ascending (0 is the start).
    dynamics : GradientDescent
        The rule: ``learning_rate`` (a float or a :class:`Schedule`), ``momentum``, ``nesterov`` and
        ``weight_decay`` as ``torch.optim.SGD``'s (dampening 0). Weight decay acts on all
        parameters and needs ``image_train`` (and ``image_test``). An :class:`Adam` is a
        ValueError (no function-space twin).
    batches : list of index arrays, optional
        The batch of each step (:func:`shuffled_batches`, :func:`independent_batches`); None is full batch.
    k_test_train : array_like, shape (M, N) or (M, N, k, k), optional
    fx_test_0, y_test : array_like, shape (M,) or (M, k), optional
    image_train, image_test : array_like, like ``fx_train_0`` / ``fx_test_0``, optional
        ``J θ_0`` (:func:`ntksolve.nets.forward_mode.own_parameter_image`).

    Returns
    -------
    Trajectory
    """
    rule = _check_rule(dynamics)
    prob = _Problem(k_train_train, fx_train_0, k_test_train, fx_test_0, (image_train, image_test))
    Y = prob.inner(_Problem._like(y_train, prob.shape, "y_train"), "y_train")
    st = _check_steps(steps)
    k = prob.k

    def residual(F, b=None):
        return F - Y

    out, out_t, used = _run(prob, residual, st, rule, batches, lambda B: B * k)
    train = out.reshape((st.size,) + prob.shape)
    y = np.asarray(y_train, dtype=np.float64)
    test = test_loss = None
    if prob.test:
        test = out_t.reshape((st.size,) + prob.test_shape)
        if y_test is not None:
            test_loss = mse_loss(test, _Problem._like(y_test, prob.test_shape, "y_test"))
    return Trajectory(st, train, test, np.atleast_1d(mse_loss(train, y)), test_loss, None, None, used)


# --- cross-entropy -----------------------------------------------------------------------------------


def _targets(targets, n_points, k, name):
    """One-hot ``(n_points, k)`` (``(n_points, 1)`` of 0/1 for ``k = 1``) and the labels."""
    t = np.asarray(targets)
    if t.dtype == object or not (np.issubdtype(t.dtype, np.number) or t.dtype == bool) or np.iscomplexobj(t):
        raise ValueError(f"{name} must be class labels or one-hot rows, got dtype {t.dtype}")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{name} contains NaN or infinity")
    if k == 1:
        if t.shape not in ((n_points,), (n_points, 1)) or not np.all((t == 0) | (t == 1)):
            raise ValueError(
                f"with one output (binary, BCEWithLogitsLoss) {name} must be 0/1 labels of shape "
                f"({n_points},), got shape {t.shape} with values {np.unique(t)[:5]}"
            )
        lab = t.reshape(-1).astype(np.int64)
        return lab.astype(np.float64).reshape(-1, 1), lab
    if t.shape == (n_points,):
        if np.any(t != np.round(t)) or t.min() < 0 or t.max() >= k:
            raise ValueError(f"{name} as class labels must be integers in [0, {k}), got values {np.unique(t)[:5]}")
        lab = t.astype(np.int64)
        return np.eye(k)[lab], lab
    if t.shape == (n_points, k):
        if not np.all((t == 0) | (t == 1)) or not np.all(t.sum(axis=1) == 1):
            raise ValueError(f"{name} as one-hot rows must hold a single 1 per row and 0 elsewhere")
        return t.astype(np.float64), np.argmax(t, axis=1)
    raise ValueError(
        f"{name} must be labels of shape ({n_points},) or one-hot rows ({n_points}, {k}), got shape {t.shape}"
    )


def _probabilities(Fk):
    return expit(Fk) if Fk.shape[1] == 1 else softmax(Fk, axis=1)


def _ce_metrics(Fk_all, lab):
    """Mean cross-entropy and accuracy along a trajectory ``(T, points, k)``."""
    if Fk_all.shape[-1] == 1:
        f = Fk_all[..., 0]
        loss = np.mean(np.logaddexp(0.0, f) - lab * f, axis=-1)
        acc = np.mean((f > 0) == (lab == 1), axis=-1)
    else:
        lp = log_softmax(Fk_all, axis=-1)
        loss = -np.mean(np.take_along_axis(lp, lab[None, :, None], axis=-1)[..., 0], axis=-1)
        acc = np.mean(np.argmax(Fk_all, axis=-1) == lab, axis=-1)
    return loss, acc


def _ce_setup(k_train_train, targets, fx_train_0, k_test_train, fx_test_0, targets_test, images=(None, None)):
    prob = _Problem(k_train_train, fx_train_0, k_test_train, fx_test_0, images)
    Yk, lab = _targets(targets, prob.N, prob.k, "targets")
    lab_t = None
    if targets_test is not None:
        if not prob.test:
            raise ValueError("targets_test needs k_test_train and fx_test_0")
        _, lab_t = _targets(targets_test, prob.M, prob.k, "targets_test")

    def residual(F, b=None):
        return (_probabilities(prob.per_example(F)) - Yk).reshape(F.shape)

    return prob, lab, lab_t, residual


def _ce_trajectory(prob, st, out, out_t, lab, lab_t, used):
    Fk = out.reshape(st.size, prob.N, prob.k)
    loss, acc = _ce_metrics(Fk, lab)
    test = test_loss = test_acc = None
    if prob.test:
        Ftk = out_t.reshape(st.size, prob.M, prob.k)
        test = Ftk.reshape((st.size,) + prob.test_shape)
        if lab_t is not None:
            test_loss, test_acc = _ce_metrics(Ftk, lab_t)
    return Trajectory(st, Fk.reshape((st.size,) + prob.shape), test, loss, test_loss, acc, test_acc, used)


def sgd_cross_entropy(
    k_train_train,
    targets,
    fx_train_0,
    steps,
    *,
    dynamics,
    batches=None,
    k_test_train=None,
    fx_test_0=None,
    targets_test=None,
    image_train=None,
    image_test=None,
):
    """(Minibatch) SGD on cross-entropy of the linearised network (logits ``f``), step by step.

    The loss is ``torch.nn.CrossEntropyLoss`` (softmax over the ``k`` outputs, mean over the
    examples), or ``BCEWithLogitsLoss`` for ``k = 1``: ``f ← f − (η/N) Θ (σ(f) − Y)``.

    Parameters
    ----------
    k_train_train : array_like, shape (N, N) traced (used as ``Θ ⊗ I_k``) or (N, N, k, k) full
    targets : array_like
        Class labels, ints in ``[0, k)`` of shape (N,), or one-hot rows (N, k); 0/1 labels for ``k = 1``.
    fx_train_0 : array_like, shape (N, k) (or (N,) for ``k = 1``)
        Logits at initialisation.
    steps, dynamics, batches, image_train, image_test
        As :func:`sgd_mse`.
    k_test_train, fx_test_0 : optional test kernel and logits
    targets_test : optional, for the test loss and accuracy

    Returns
    -------
    Trajectory
        With ``train_accuracy`` (and ``test_accuracy``): argmax (``f > 0`` for ``k = 1``) against the labels.
    """
    rule = _check_rule(dynamics)
    prob, lab, lab_t, residual = _ce_setup(
        k_train_train, targets, fx_train_0, k_test_train, fx_test_0, targets_test, (image_train, image_test)
    )
    st = _check_steps(steps)
    out, out_t, used = _run(prob, residual, st, rule, batches, lambda B: B)
    return _ce_trajectory(prob, st, out, out_t, lab, lab_t, used)


def flow_cross_entropy(
    k_train_train,
    targets,
    fx_train_0,
    times,
    *,
    learning_rate=1.0,
    k_test_train=None,
    fx_test_0=None,
    targets_test=None,
    rtol=1e-10,
    atol=1e-12,
):
    """Gradient flow ``df/dt = −(η/N) Θ (σ(f) − Y)`` on cross-entropy, by ``scipy.integrate.solve_ivp``.

    The continuous twin of :func:`sgd_cross_entropy` (time ``t`` counts steps). Integrated with
    DOP853 at the given tolerances; train and test outputs in one system.

    Parameters
    ----------
    k_train_train, targets, fx_train_0, k_test_train, fx_test_0, targets_test
        As :func:`sgd_cross_entropy`.
    times : array_like, shape (T,)
        Finite, non-negative, ascending.
    learning_rate : float
    rtol, atol : float
        Passed to ``solve_ivp``.

    Returns
    -------
    Trajectory (``steps`` holds the times)
    """
    prob, lab, lab_t, residual = _ce_setup(k_train_train, targets, fx_train_0, k_test_train, fx_test_0, targets_test)
    ts = np.atleast_1d(_as_real_array(times, "times")).astype(np.float64)
    if ts.ndim != 1 or not np.all(np.isfinite(ts)) or np.any(ts < 0) or np.any(np.diff(ts) < 0):
        raise ValueError("times must be finite, non-negative and ascending")
    eta = _real(learning_rate, "learning_rate", positive=True)
    n = prob.F0.size
    shape = prob.F0.shape
    scale = eta / prob.N

    def rhs(_, z):
        E = residual(z[:n].reshape(shape)) * scale
        dz = -(prob.A @ E).ravel()
        if prob.test:
            dz = np.concatenate([dz, -(prob.Kt @ E).ravel()])
        return dz

    z0 = prob.F0.ravel() if not prob.test else np.concatenate([prob.F0.ravel(), prob.Ft0.ravel()])
    if ts[-1] == 0.0:
        Z = np.repeat(z0[:, None], ts.size, axis=1)
    else:
        # solve_ivp wants strictly increasing t_eval: integrate to each distinct time once
        uts, back = np.unique(ts, return_inverse=True)
        sol = scipy.integrate.solve_ivp(rhs, (0.0, ts[-1]), z0, method="DOP853", t_eval=uts, rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed: {sol.message}")
        Z = sol.y[:, back]
    out = Z[:n].T.reshape((ts.size,) + shape)
    out_t = Z[n:].T.reshape((ts.size,) + prob.Ft0.shape) if prob.test else None
    return _ce_trajectory(prob, ts, out, out_t, lab, lab_t, None)
