"""The trained linearised network under MSE, at any time: :class:`MSEPredictor`.

It validates once (kernel, targets, rule, solver, ridge), holds the regularised kernel as an
operator (:class:`~ntksolve.dynamics.operator.DenseKernel` for an array, a shifted operator for a
kernel known by its products), runs the one divergence check, and hands each prediction to its
solver (:mod:`ntksolve.dynamics.solvers`), which asks the training rule
(:mod:`ntksolve.dynamics.rules`) for the per-mode coefficients.
"""

from __future__ import annotations

import copy

import numpy as np

from ntksolve._config import AUTO_MIN_KRYLOV_SIZE
from ntksolve._validation import as_real_array, check_diag_reg, check_finite, ridge_shift
from ntksolve.dynamics.descent_modes import AffinePart, unseen_decay
from ntksolve.dynamics.kernel_gp import KernelGP
from ntksolve.dynamics.loss import mse_loss
from ntksolve.dynamics.operator import (
    DenseKernel,
    ShiftedOperator,
    check_operator,
    check_train_kernel,
    flatten_full,
    float_dtype,
    is_kernel_operator,
    largest_eigenvalue,
)
from ntksolve.dynamics.rules import resolve_rule
from ntksolve.dynamics.solvers import Auto, Eigh, Problem, resolve_solver
from ntksolve.dynamics.spectral import shifted_spectrum

__all__ = ["MSEPredictor"]


class MSEPredictor:
    """Outputs of the linearised network trained on MSE, at any time.

    Made by :func:`ntksolve.dynamics.gradient_descent_mse` (same parameters); call it as
    ``predictor(t, fx_train_0, fx_test_0=None, k_test_train=None)`` (same as :meth:`predict`).

    Parameters
    ----------
    k_train_train, y_train, learning_rate, diag_reg, dynamics, method, allow_divergence
        As in :func:`ntksolve.dynamics.gradient_descent_mse`.

    Attributes
    ----------
    rule : TrainingRule
        ``GradientFlow`` or ``GradientDescent`` (with its learning rate).
    solver : Solver
        As given (``Auto()`` stays ``Auto()``; :attr:`method` says what ran).
    diag_reg : float
    allow_divergence : bool
    n_train, n_outputs : int
        ``N`` and ``k``.
    krylov_info : dict or None
        Krylov dimensions and Ritz extremes (or CG iterations) of the latest product-only call.
    """

    def __init__(
        self,
        k_train_train,
        y_train,
        learning_rate=None,
        *,
        diag_reg=0.0,
        dynamics="continuous",
        method="auto",
        allow_divergence=False,
    ):
        self.rule = resolve_rule(dynamics, learning_rate)
        self.solver = resolve_solver(method)
        self.solver.check_rule(self.rule)  # before any decomposition
        self.diag_reg = check_diag_reg(diag_reg)
        if not isinstance(allow_divergence, (bool, np.bool_)):
            raise TypeError(f"allow_divergence must be True or False, got {allow_divergence!r}")
        self.allow_divergence = bool(allow_divergence)
        y = as_real_array(y_train, "y_train")
        if is_kernel_operator(k_train_train):
            if self.solver.dense_only:
                raise TypeError(
                    f"method={self.solver.name!r} needs the kernel as an array (it works on the whole "
                    "matrix); a kernel operator is solved from its products: use method=Krylov(...) for any t "
                    "or ConjugateGradient(...) for t = inf"
                )
            n, diag = check_operator(k_train_train)
            full_k, N, k = None, n, self._targets_traced(y, n)
            op_dtype = np.dtype(getattr(k_train_train, "dtype", np.float64))
            self._dtype = (
                np.dtype(np.float32) if op_dtype == np.float32 and y.dtype == np.float32 else np.dtype(np.float64)
            )
            kernel = ShiftedOperator(k_train_train, ridge_shift(self.diag_reg, diag))
        else:
            A, full_k = check_train_kernel(k_train_train)
            n = A.shape[0]
            if full_k is None:
                N, k = n, self._targets_traced(y, n)
            else:
                k, N = full_k, n // full_k
                if y.shape not in ((N, k),) + (((N,),) if k == 1 else ()):
                    raise ValueError(
                        f"with a full kernel of shape {(N, N, k, k)}, y_train must have shape {(N, k)}, got {y.shape}"
                    )
            self._dtype, entries = float_dtype(A, y), A.dtype
            A = A.astype(self._dtype, copy=False)  # never written to: it may be the caller's array
            diag = np.diagonal(A)
            kernel = DenseKernel._trusted(A, ridge_shift(self.diag_reg, diag), entries)
        y = np.asarray(y, dtype=self._dtype)
        check_finite(y, "y_train")
        self.n_train, self.n_outputs = N, k
        self._full = full_k is not None
        self._y_shape = y.shape
        self._Y = self._to_internal(y)
        self._diag = diag  # unregularised, for the ridge of with_diag_reg
        self._problem = Problem(kernel, self.rule, N * k, self._dtype)
        self.krylov_info = None
        self._start()

    @staticmethod
    def _targets_traced(y, N):
        if y.ndim not in (1, 2) or y.shape[0] != N:
            raise ValueError(
                f"y_train must have shape (N,) or (N, k) with N = {N} rows of k_train_train, got {y.shape}"
            )
        if y.ndim == 2 and y.shape[1] == 0:
            raise ValueError("y_train has no target columns")
        return 1 if y.ndim == 1 else y.shape[1]

    def _start(self):
        """What construction decides: the solver if it is size-independent, the divergence check if
        ``λ_max`` is known or the rule needs it now (a diverging closed form is refused before any
        prediction)."""
        p = self._problem
        self._active = self.solver
        if isinstance(self.solver, Auto):
            self._active = Eigh() if p.dense and (p.eig is not None or p.n < AUTO_MIN_KRYLOV_SIZE) else None
        if self._active is not None and self._active.dense_only:
            p.decompose()
        self._last = self._active
        self._checked = False
        if p.lmax is None and self.rule.stability_required:
            p.lmax = largest_eigenvalue(p.kernel)
        if p.lmax is not None and not self.rule.checks_per_call:
            self._check_divergence(p.lmax, stacklevel=4)

    def _check_divergence(self, lmax, stacklevel, exact=True):
        self.rule.check_divergence(
            lmax, self._problem.size, allow_divergence=self.allow_divergence, stacklevel=stacklevel + 1
        )
        self._checked = self._checked or exact

    def _check_schedule(self, ts, stacklevel):
        """A schedule's verdict over the steps of this call, on every eigenvalue when decomposed."""
        fin = ts[np.isfinite(ts)]
        p = self._problem
        if fin.size and fin.max() > 0:
            self.rule.check_divergence(
                p.lmax,
                p.size,
                allow_divergence=self.allow_divergence,
                stacklevel=stacklevel + 1,
                n_steps=int(fin.max()),
                eigenvalues=None if p.eig is None else p.eig[0][~p.eig[2]],
            )

    # -- read-only facts
    @property
    def learning_rate(self):
        """``η`` of the rule."""
        return self.rule.learning_rate

    @property
    def dynamics(self):
        """The rule's name: ``"continuous"`` or ``"discrete"``."""
        return self.rule.name

    @property
    def method(self):
        """The solver that ran last (or will run): ``"eigh"``, ``"expm"``, ``"krylov"``, ``"cg"``;
        ``"auto"`` while ``Auto()`` has not decided (it decides per call)."""
        return self._last.name if self._last is not None else "auto"

    @property
    def eigenvalues(self):
        """Ascending eigenvalues of the regularised flattened kernel, once decomposed (else None)."""
        return None if self._problem.eig is None else self._problem.eig[0]

    @property
    def critical_learning_rate(self):
        """``2 N k / λ_max`` of the regularised kernel (``np.inf`` for a zero kernel)."""
        p = self._problem
        if p.lmax is None:
            p.lmax = largest_eigenvalue(p.kernel)
        return self.rule.critical_learning_rate(p.lmax, p.size)

    # -- other ridges, leave-one-out
    def with_diag_reg(self, diag_reg):
        """The same training for another relative ridge, sharing this predictor's decomposition.

        A ridge ``diag_reg · mean(diag Θ)`` only shifts every eigenvalue, so a decomposed kernel is
        not decomposed again: the new predictor's eigenvalues are this one's, moved.

        Parameters
        ----------
        diag_reg : float

        Returns
        -------
        MSEPredictor
        """
        reg = check_diag_reg(diag_reg)
        old = self._problem
        new = copy.copy(self)
        new.diag_reg = reg
        shift = ridge_shift(reg, self._diag)
        new._problem = p = Problem(old.kernel.with_shift(shift), self.rule, old.size, old.dtype, old.what)
        delta = shift - old.kernel.shift
        if old.eig is not None:
            lam, V, _ = old.eig
            lam, null = shifted_spectrum(lam, delta, p.n, p.dtype, p.what)
            p.eig, p.lmax = (lam, V, null), float(lam[-1])
        elif old.lmax is not None:
            p.lmax = old.lmax + delta
        new.krylov_info = None
        new._start()
        return new

    def loo_residuals(self, fx_train_0):
        """Exact leave-one-out residuals of the converged (``t = ∞``) kernel ridge regression.

        ``r_loo,i = y_i − f^{(−i)}(x_i) = [G r]_i / G_ii`` with ``G = (Θ + μI)⁻¹`` and ``r = y − f_0``
        (for a full kernel, the ``k × k`` block ``G_ii`` is solved), all from the one
        eigendecomposition; with :meth:`with_diag_reg` a ridge path costs no further decomposition.

        Parameters
        ----------
        fx_train_0 : array_like, shape like ``y_train``

        Returns
        -------
        residuals : ndarray, shape like ``y_train``
        """
        p = self._problem
        if not p.dense:
            raise TypeError("loo_residuals needs the kernel as an array (it uses its eigendecomposition)")
        if not self.rule.kernel_regression_limit:
            raise ValueError(
                f"loo_residuals is the leave-one-out of kernel regression, the converged limit of a constant "
                f"rate without weight decay, which {self.rule!r} does not reach; use K-fold validation"
            )
        lam, V, null = p.decompose()
        if np.any(null):
            raise ValueError(
                f"the regularised kernel is singular ({int(np.count_nonzero(null))} zero modes): leave-one-out "
                "of kernel regression needs an invertible kernel; pass diag_reg > 0 (e.g. with_diag_reg(1e-6))"
            )
        _, h = self.rule.mode_coefficients(lam, null, np.array([np.inf]), p.size)
        h = h[0]  # 1/λ: the t = ∞ limit (GradientDescent refuses it above the critical rate)
        R = self._Y - self._check_outputs(fx_train_0, "fx_train_0", self.n_train)
        alpha = V @ (h[:, None] * (V.T @ R))
        if not self._full:
            out = alpha / ((V * V) @ h)[:, None]
        else:
            N, k = self.n_train, self.n_outputs
            Vr = V.reshape(N, k, -1)
            G = (Vr * h) @ Vr.transpose(0, 2, 1)  # (N, k, k) diagonal blocks of the inverse
            out = np.linalg.solve(G, alpha.reshape(N, k, 1)).reshape(-1, 1)
        return self._to_user(out[None].astype(self._dtype, copy=False), self.n_train)[0]

    def kernel_gp(self, fx_train_0):
        """The targets as the Gaussian process ``y - f_0 ~ N(0, a Θ + σ² I)`` on this decomposition.

        ``Θ`` is the unregularised kernel (the eigenvalues less the ridge), the eigenvectors are
        the solver's own: the model costs one ``O(N² k)`` projection of the residuals, no second
        decomposition (a predictor that has not decomposed yet, ``Krylov``/``Expm``/large ``Auto``,
        decomposes once here). See :class:`~ntksolve.dynamics.kernel_gp.KernelGP`.

        Parameters
        ----------
        fx_train_0 : array_like, shape like ``y_train``
            The prior mean (outputs at initialisation).

        Returns
        -------
        KernelGP
        """
        p = self._problem
        if not p.dense:
            raise TypeError("kernel_gp needs the kernel as an array (it uses its eigendecomposition)")
        if self._full:
            raise ValueError(
                "kernel_gp takes a traced (N, N) kernel (one amplitude and noise per output "
                "column); trace the full kernel over outputs first"
            )
        lam, V, _ = p.decompose()
        theta = np.asarray(lam, dtype=np.float64) - p.kernel.shift
        R = self._Y - self._check_outputs(fx_train_0, "fx_train_0", self.n_train)
        return KernelGP(theta, V, R)

    # -- layout: internal (n, c) columns; traced: (N, k); full: (N k, 1) with index (i, a)
    def _to_internal(self, f):
        return f.reshape(-1, 1) if self._full else f.reshape(f.shape[0], -1)

    def _to_user(self, F, n_points):
        """(T, n_rows, c) → (T, M, k) or (T, M) following the shape of ``y_train``."""
        T = F.shape[0]
        if self._full:
            F = F.reshape(T, n_points, self.n_outputs)
        if len(self._y_shape) == 1:
            F = F.reshape(T, n_points)
        return F

    # -- public
    def __call__(self, t, fx_train_0, fx_test_0=None, k_test_train=None, *, jtheta_train=None, jtheta_test=None):
        return self.predict(t, fx_train_0, fx_test_0, k_test_train, jtheta_train=jtheta_train, jtheta_test=jtheta_test)

    def predict(self, t, fx_train_0, fx_test_0=None, k_test_train=None, *, jtheta_train=None, jtheta_test=None):
        """Train (and test) outputs after ``t`` steps of training.

        Parameters
        ----------
        t : float, array_like of shape (T,), or None
            Steps, ``≥ 0`` (integers for ``GradientDescent``); ``np.inf`` or None is the converged
            limit (kernel regression).
        fx_train_0 : array_like, shape like ``y_train``: (N,) or (N, k)
            Outputs at initialisation on the training inputs.
        fx_test_0 : array_like, shape (M,) or (M, k), optional
            Outputs at initialisation on the test inputs (with ``k_test_train``).
        k_test_train : array_like or operator, optional
            ``Θ(X*, X)``: an array (M, N) traced or (M, N, k, k) full, of the same kind as
            ``k_train_train``; or an object with ``shape`` (rows, N) (``(M k, N k)`` for a full
            kernel) and ``matmat(V)``, the test–train cross operator.
        jtheta_train : array_like, shape like ``y_train``: (N,) or (N, k), optional
            ``J θ_0`` on the training inputs, the network's Jacobian times its initial parameters
            (:func:`ntksolve.nets.forward_mode.own_parameter_image`); needed by weight decay, and
            refused by every other rule.
        jtheta_test : array_like, shape like ``fx_test_0``: (M,) or (M, k), optional
            ``J* θ_0`` on the test inputs; needed by weight decay when test inputs are given.

        Returns
        -------
        fx_train_t : ndarray, shape like ``y_train`` for scalar ``t``, ``(T,) + y_train.shape`` for an array
        fx_test_t : ndarray, shape like ``fx_test_0`` (with the leading ``T``), only when test inputs are given
        """
        ts, scalar = self.rule.check_times(t)
        F0 = self._check_outputs(fx_train_0, "fx_train_0", self.n_train)
        test = self._check_test(fx_test_0, k_test_train)
        B, Bt = self._check_jtheta(jtheta_train, jtheta_test, test)
        R = self._Y - F0
        p = self._problem
        solver = self._active
        if solver is None:  # Auto, deciding from this call's sizes
            solver = self.solver.choose(p, ts.size, R.shape[1], 0 if test is None else test[0][1])
        self._last = solver
        if self.rule.checks_per_call:
            self._check_schedule(ts, stacklevel=2)
        train, test_out, info = solver.solve(p, ts, R, None if test is None else test[0])
        if B is not None:  # weight decay: the same solver on J θ_0 with the rule's second function
            q = copy.copy(p)
            q.rule = AffinePart(self.rule)
            tr_b, te_b, info_b = solver.solve(q, ts, B, None if test is None else test[0])
            train = train + tr_b
            if test is not None:
                free = unseen_decay(self.rule, ts, p.size)
                test_out = test_out + te_b - (1.0 - free)[:, None, None] * Bt[None]
            info = dict(info, affine=info_b) if info or info_b else info
        if info:
            self.krylov_info = info
        if not self._checked:
            if p.lmax is not None:
                self._check_divergence(p.lmax, stacklevel=2)
            elif np.isfinite(info.get("ritz_max", np.nan)) and info["ritz_max"] > 0:
                # The largest Ritz value is a (fast-converging) lower bound of λ_max: warn at no cost.
                self._check_divergence(info["ritz_max"], stacklevel=2, exact=False)
        if not p.dense:
            check_finite(train, "the trained outputs", "the kernel operator's products must be finite")
            if test_out is not None:
                check_finite(test_out, "the test outputs", "the kernel operators' products must be finite")
        train = self._to_user((train + F0[None]).astype(self._dtype, copy=False), self.n_train)
        if scalar:
            train = train[0]
        if test is None:
            return train
        (_, _), Ft0, M = test
        test_out = self._to_user((test_out + Ft0[None]).astype(self._dtype, copy=False), M)
        return train, (test_out[0] if scalar else test_out)

    def loss(self, t, fx_train_0, fx_test_0=None, k_test_train=None, y_test=None):
        """Training (and test) loss ``1/(2Nk) Σ ‖f − y‖²`` along the trajectory.

        Parameters
        ----------
        t, fx_train_0, fx_test_0, k_test_train
            As :meth:`predict`.
        y_test : array_like, shape like ``fx_test_0``, optional
            Test targets; needed for the test loss.

        Returns
        -------
        train_loss : float or ndarray, shape (T,)
        test_loss : float or ndarray, shape (T,), only when ``y_test`` is given
        """
        y_train = self._Y.reshape(self._y_shape)
        if y_test is None:
            return mse_loss(self.predict(t, fx_train_0), y_train)
        if k_test_train is None or fx_test_0 is None:
            raise ValueError("the test loss needs fx_test_0 and k_test_train along with y_test")
        y_test = as_real_array(y_test, "y_test")
        if y_test.shape != np.shape(fx_test_0):
            raise ValueError(f"y_test must have the shape of fx_test_0 {np.shape(fx_test_0)}, got {y_test.shape}")
        check_finite(y_test, "y_test")  # before the solve, not after it
        train, test = self.predict(t, fx_train_0, fx_test_0, k_test_train)
        return mse_loss(train, y_train), mse_loss(test, y_test)

    # -- input checks of predict
    def _check_jtheta(self, jtheta_train, jtheta_test, test):
        """``(B, Bt)``: ``J θ_0`` on train and test (internal layout), or ``(None, None)`` without weight decay."""
        if not self.rule.needs_parameters:
            if jtheta_train is not None or jtheta_test is not None:
                raise ValueError(
                    f"jtheta_train/jtheta_test are used by weight decay only, and {self.rule!r} has none; "
                    "leave them out (or set weight_decay in GradientDescent)"
                )
            return None, None
        if jtheta_train is None or (test is not None and jtheta_test is None):
            need = "jtheta_train" + (" and jtheta_test" if test is not None else "")
            raise ValueError(
                f"weight decay pulls the parameters towards zero, so the outputs feel the network's own J θ_0 "
                f"(its Jacobian times its initial parameters), which the kernel does not determine: pass {need} "
                "(ntksolve.nets.forward_mode.own_parameter_image(net, params, X)); the analytic kernel has no "
                "parameters, so it has no weight decay"
            )
        B = self._check_outputs(jtheta_train, "jtheta_train", self.n_train)
        Bt = None if test is None else self._check_outputs(jtheta_test, "jtheta_test", test[2])
        return B, Bt

    def _check_outputs(self, f, name, n_points):
        f = as_real_array(f, name)
        want = (n_points,) + tuple(self._y_shape[1:])
        if f.shape != want:
            raise ValueError(f"{name} must have shape {want} (like y_train, over {n_points} points), got {f.shape}")
        f = np.asarray(f, dtype=self._dtype)
        check_finite(f, name)
        return self._to_internal(f)

    def _check_test(self, fx_test_0, k_test_train):
        """``((K, rows), F, M)``: the cross kernel (internal layout) and its rows, outputs, points."""
        if fx_test_0 is None and k_test_train is None:
            return None
        if fx_test_0 is None or k_test_train is None:
            raise ValueError(
                "test predictions need both fx_test_0 (outputs at initialisation, e.g. np.zeros((M, k))) "
                "and k_test_train (the test–train kernel)"
            )
        N, k, n = self.n_train, self.n_outputs, self._problem.n
        if not isinstance(k_test_train, np.ndarray) and hasattr(k_test_train, "matmat"):
            shape = tuple(k_test_train.shape)
            rows = shape[0] if len(shape) == 2 else -1
            if len(shape) != 2 or shape[1] != n or (self._full and rows % k):
                want = f"(M·{k}, {n})" if self._full else f"(M, {n})"
                raise ValueError(f"a k_test_train operator must have shape {want} (test × train), got {shape}")
            K, M = k_test_train, (rows // k if self._full else rows)
        else:
            K = as_real_array(k_test_train, "k_test_train")
            if self._full:
                if K.ndim != 4 or K.shape[1:] != (N, k, k):
                    raise ValueError(f"k_test_train must be a full kernel of shape (M, {N}, {k}, {k}), got {K.shape}")
                M = K.shape[0]
                K = flatten_full(K)
            else:
                if K.ndim != 2 or K.shape[1] != N:
                    raise ValueError(f"k_test_train must have shape (M, {N}) (test × train, traced), got {K.shape}")
                M = K.shape[0]
            K = np.asarray(K, dtype=self._dtype)
            check_finite(K, "k_test_train")
            rows = K.shape[0]
        F = self._check_outputs(fx_test_0, "fx_test_0", M)
        return (K, rows), F, M
