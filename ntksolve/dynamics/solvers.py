"""Solvers of the closed-form MSE dynamics, as objects that carry their own options.

``method=`` takes a name or one of these (as ``opt_einsum``'s ``optimize=`` does):

:class:`Eigh` (``"eigh"``)
    One symmetric eigendecomposition (:func:`ntksolve.dynamics.spectral.regularised_eigh`),
    cached; a whole ``T``-point trajectory is then two matrix products ``V (coefficients ⊙ Vᵀ r)``:
    ``O(T N² k)`` BLAS-3 work on top of the decomposition. Dense kernels only.
:class:`Expm` (``"expm"``)
    The direct reference: the rule's matrix propagator per time (``scipy.linalg.expm`` of a block
    matrix for gradient flow, Van Loan 1978; the exact integer power of a block matrix for
    descent), ``O(N³)`` per time; ``t = ∞`` through the eigendecomposition. It works on the
    matrix, not its modes, so rounding-level eigenvalues of a singular kernel (``~ε λ_max``) are
    not exact zeros for it: it drifts by about ``s λ_max ε`` relative. Dense kernels only.
:class:`Krylov` (``"krylov"``)
    The kernel is only multiplied: the Lanczos approximation of :mod:`ntksolve.dynamics.krylov`
    builds one Krylov basis per target column and evaluates the rule's coefficients at every
    requested time from it (``t = ∞`` is conjugate gradients in Lanczos form, with the null Ritz
    values dropped: the pseudo-inverse). Cost: ``m`` products with ``Θ`` (``m`` the Krylov
    dimension, typically 20–300), ``O(N m)`` per time. Arrays or kernel operators.
:class:`ConjugateGradient`
    ``t = ∞`` only (kernel regression), preconditioned conjugate gradients, e.g. with a Nyström
    preconditioner (:class:`ntksolve.dynamics.nystrom.Nystrom`). Arrays or kernel operators.
:class:`Auto` (``"auto"``)
    Decides at each prediction from that call's sizes: eigh when the decomposition is cached or
    the cost model (constants in :mod:`ntksolve._config`) prices it below krylov; krylov for
    kernel operators.

Every solver answers ``solve(problem, ts, R, test)`` with the train and test increments; none of
them knows which training rule it serves (they ask it for coefficients).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np

from ntksolve._config import (  # tunables live in the config module, with their reasons
    AUTO_EIGH_SECONDS_PER_N3,
    AUTO_KRYLOV_ITERATIONS,
    AUTO_LANCZOS_STEP_OVERHEAD,
    AUTO_MATVEC_SECONDS_PER_N2,
    AUTO_MIN_KRYLOV_SIZE,
    AUTO_SECONDS_PER_FLOP,
    DEFAULT_CG_TOL,
    KRYLOV_TOL,
)
from ntksolve._validation import check_choice, check_positive_int, check_real_scalar
from ntksolve.dynamics.cg import preconditioned_cg
from ntksolve.dynamics.krylov import KrylovConvergenceWarning, lanczos_function_products
from ntksolve.dynamics.operator import DenseKernel
from ntksolve.dynamics.spectral import null_mask, regularised_eigh

__all__ = ["Solver", "Eigh", "Expm", "Krylov", "ConjugateGradient", "Auto", "resolve_solver", "METHODS"]


class Problem:
    """What a solver sees: the regularised kernel as an operator, the rule, the sizes, the cache.

    Parameters
    ----------
    kernel : DenseKernel or ShiftedOperator
        ``Θ + shift·I``.
    rule : TrainingRule
    size : int
        ``N k``.
    dtype : float64 or float32
        Precision of the outputs.
    what : str
        Name of the kernel in error messages.
    """

    def __init__(self, kernel, rule, size, dtype, what="k_train_train"):
        self.kernel = kernel
        self.rule = rule
        self.size = size
        self.dtype = np.dtype(dtype)
        self.what = what
        self.n = kernel.shape[0]
        self.eig = None  # (lam, V, null) of the dense kernel, once decomposed
        self.lmax = None  # λ_max, exact or ARPACK

    @property
    def dense(self):
        return isinstance(self.kernel, DenseKernel)

    def decompose(self):
        """The cached ``(lam, V, null)`` of a dense kernel."""
        if self.eig is None:
            self.eig = regularised_eigh(self.kernel.array, self.kernel.shift, self.dtype, self.what)
            self.lmax = float(self.eig[0][-1])
        return self.eig


def cross_apply(K, U):
    """``K U`` for a test–train kernel given as an array or as an operator with ``matmat``."""
    return K @ U if isinstance(K, np.ndarray) else np.asarray(K.matmat(U))


class Solver:
    """Base of the solvers. ``name`` is the ``method=`` string; ``dense_only`` refuses operators."""

    name: ClassVar[str] = ""
    dense_only: ClassVar[bool] = False

    def check_rule(self, rule) -> None:
        """Refuse a training rule this solver cannot follow (when a predictor is built, before any
        decomposition; an estimator's ``fit``, before any kernel); every rule by default."""

    def check_time(self, t, name="t") -> None:
        """Refuse a time this solver cannot answer (at each prediction; an estimator's ``fit``,
        before any kernel); every time by default."""

    def solve(self, problem, ts, R, test):
        """Train and test increments over the initial outputs.

        Parameters
        ----------
        problem : Problem
        ts : ndarray, shape (T,)
            Validated times (``np.inf`` allowed).
        R : ndarray, shape (n, c)
            Residual ``y − f_0`` in the internal layout.
        test : tuple (K, M) or None
            Test–train kernel (array ``(M', n)`` or operator) and ``M'`` its rows.

        Returns
        -------
        train : ndarray, shape (T, n, c)
            ``g_t(Θ) r``.
        test_out : ndarray, shape (T, M', c) or None
            ``Θ* h_t(Θ) r``.
        info : dict
            Solver facts (Krylov dimensions, ``ritz_max`` …).
        """
        raise NotImplementedError


@dataclass(frozen=True)
class Eigh(Solver):
    """The eigendecomposition path (see the module docstring); no options."""

    name: ClassVar[str] = "eigh"
    dense_only: ClassVar[bool] = True

    def solve(self, problem, ts, R, test):
        lam, V, null = problem.decompose()
        n, dtype = problem.n, problem.dtype
        T, c = ts.size, R.shape[1]
        P = V.T @ R  # (n, c): the residual in the eigenbasis, once per call
        g, h = problem.rule.mode_coefficients(lam, null, ts, problem.size, test is not None)
        g = g.astype(dtype, copy=False)
        # All times in one GEMM: columns (t, column) of W = coefficient ⊙ P.
        W = (g.T[:, :, None] * P[:, None, :]).reshape(n, T * c)
        train = (V @ W).reshape(n, T, c).transpose(1, 0, 2)
        if test is None:
            return train, None, {}
        K, M = test
        h = h.astype(dtype, copy=False)
        Wh = (h.T[:, :, None] * P[:, None, :]).reshape(n, T * c)
        if T * c <= M or not isinstance(K, np.ndarray):
            out = cross_apply(K, V @ Wh)  # 2N²Tc + 2MNTc flops
        else:
            out = (K @ V) @ Wh  # 2MN² + 2MNTc flops
        return train, out.reshape(M, T, c).transpose(1, 0, 2), {}


@dataclass(frozen=True)
class Expm(Solver):
    """The direct matrix-function reference (see the module docstring); no options."""

    name: ClassVar[str] = "expm"
    dense_only: ClassVar[bool] = True

    def check_rule(self, rule) -> None:
        if not rule.has_dense_reference:
            raise NotImplementedError(
                f"the dense reference (method='expm') covers gradient flow and plain constant-rate descent "
                f"only, not {rule!r}; use method='eigh' or 'krylov'"
            )

    def solve(self, problem, ts, R, test):
        n, c, T = problem.n, R.shape[1], ts.size
        train = np.empty((T, n, c), dtype=problem.dtype)
        out = None if test is None else np.empty((T, test[1], c), dtype=problem.dtype)
        inf = ~np.isfinite(ts)
        if np.any(inf):  # t = ∞: the pseudo-inverse through the eigendecomposition
            tr, te, _ = Eigh().solve(problem, np.array([np.inf]), R, test)
            train[inf] = tr[0]
            if out is not None:
                out[inf] = te[0]
        finite = np.flatnonzero(~inf)
        if finite.size:
            A = np.array(problem.kernel.array, dtype=np.float64)
            if problem.kernel.shift:
                A.flat[:: n + 1] += problem.kernel.shift
            for i in finite:
                E, H = problem.rule.dense_propagator(A, ts[i], problem.size)
                train[i] = R - E @ R
                if out is not None:
                    out[i] = cross_apply(test[0], H @ R)
        return train, out, {}


def _check_tol(tol):
    tol = check_real_scalar(tol, "tol", low=0.0, strict=True)
    if tol >= 1:
        raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
    return tol


@dataclass(frozen=True)
class Krylov(Solver):
    """The Lanczos path: products with the kernel only.

    Parameters
    ----------
    tol : float, default 1e-10
        Relative a-posteriori change of every requested vector at which a column stops (floored
        at ``10 ε`` of the dtype).
    max_iter : int, optional
        Largest Krylov dimension (default ``n``); stopping there warns with
        :class:`~ntksolve.dynamics.KrylovConvergenceWarning`.
    """

    name: ClassVar[str] = "krylov"
    tol: float = KRYLOV_TOL
    max_iter: Optional[int] = None

    def __post_init__(self):
        object.__setattr__(self, "tol", _check_tol(self.tol))
        object.__setattr__(self, "max_iter", check_positive_int(self.max_iter, "max_iter", allow_none=True))

    def solve(self, problem, ts, R, test):
        T, c = ts.size, R.shape[1]
        need_h = test is not None
        n, dtype, rule, size, what = problem.n, problem.dtype, problem.rule, problem.size, problem.what

        def coefficient_fn(ritz):
            g, h = rule.mode_coefficients(ritz, null_mask(ritz, n, dtype, what), ts, size, need_h)
            return np.vstack([g, h]) if need_h else g

        tol = max(self.tol, 10 * np.finfo(dtype).eps)
        out, info = lanczos_function_products(
            problem.kernel.matmat, np.ascontiguousarray(R, dtype=dtype), coefficient_fn, tol=tol, max_iter=self.max_iter
        )
        train = out[:T]
        if not need_h:
            return train, None, info
        K, M = test
        U = out[T:].transpose(1, 0, 2).reshape(n, T * c)  # h_t(Θ) r for all (t, column): one GEMM
        return train, cross_apply(K, U).reshape(M, T, c).transpose(1, 0, 2), info


@dataclass(frozen=True)
class ConjugateGradient(Solver):
    """Kernel regression (``t = ∞`` only) by preconditioned conjugate gradients.

    With a ridge (``diag_reg > 0``) one solve of ``(Θ + μI) x = r``. Without one the kernel may be
    singular and ``r`` outside its range, where plain CG drifts; so the residual is first projected
    onto the range by a solve of the consistent ``Θ z = Θ r`` (its minimum-norm solution is that
    projection), then ``Θ x = z`` is solved from zero, whose CG limit is the minimum-norm
    ``x = Θ⁺ r``: the pseudo-inverse answer of the eigh path, at twice the products.

    Parameters
    ----------
    tol : float, default ``DEFAULT_CG_TOL``
        Relative residual per column.
    max_iter : int, optional
        Products with the kernel per solve (default ``n``).
    preconditioner : optional
        A callable ``R ↦ M⁻¹ R``, or a recipe with ``build(kernel, shift)`` such as
        :class:`~ntksolve.dynamics.nystrom.Nystrom`. Without a ridge it must map the kernel's null
        space into itself for the minimum-norm answer (a Nyström one does: its basis lies in the
        kernel's range).
    """

    name: ClassVar[str] = "cg"
    tol: float = DEFAULT_CG_TOL
    max_iter: Optional[int] = None
    preconditioner: Any = field(default=None, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "tol", _check_tol(self.tol))
        object.__setattr__(self, "max_iter", check_positive_int(self.max_iter, "max_iter", allow_none=True))
        p = self.preconditioner
        if p is not None and not (callable(p) or hasattr(p, "build")):
            raise TypeError(f"preconditioner must be a callable R -> M^-1 R or have build(kernel, shift), got {p!r}")

    def check_rule(self, rule) -> None:
        if not rule.kernel_regression_limit:  # weight decay, a schedule
            raise ValueError(
                f"ConjugateGradient solves kernel regression, the t = inf of a constant rate without weight "
                f"decay, which {rule!r} does not reach; use method=Krylov(...) or 'eigh'"
            )

    def check_time(self, t, name="t") -> None:
        if np.isfinite(t):
            raise ValueError(
                f"ConjugateGradient solves the converged limit t = inf only, not {name}={t!r}; for finite "
                "times use method=Krylov(...) (or 'auto')"
            )

    def solve(self, problem, ts, R, test):
        # the rule was checked when the predictor was built (check_rule)
        finite = ts[np.isfinite(ts)]
        if finite.size:
            self.check_time(float(finite[0]), "t")
        kernel = problem.kernel
        shift = kernel.shift
        precond = self.preconditioner
        if precond is not None and hasattr(precond, "build"):
            precond = precond.build(kernel, shift)
        max_iter = problem.n if self.max_iter is None else self.max_iter
        R = np.asarray(R, dtype=np.float64)
        iters = 0
        if shift <= 0:  # project onto the range first (see the class docstring)
            R, info = preconditioned_cg(kernel.matmat, kernel.matmat(R), precond, tol=self.tol, max_iter=max_iter)
            iters += info["iterations"]
            self._warn(info)
        X, info = preconditioned_cg(kernel.matmat, R, precond, tol=self.tol, max_iter=max_iter)
        self._warn(info)
        info = dict(info, iterations=iters + info["iterations"])
        train = info.pop("AX")[None].astype(problem.dtype, copy=False)  # Θ Θ⁺ r
        if test is None:
            return train, None, info
        return train, cross_apply(test[0], X)[None].astype(problem.dtype, copy=False), info

    def _warn(self, info):
        if not info["converged"]:
            warnings.warn(
                f"conjugate gradients did not reach tol={self.tol:g} within {info['iterations']} products "
                f"(relative residuals {np.asarray(info['residuals']).tolist()}); raise max_iter, add "
                "diag_reg or a preconditioner",
                KrylovConvergenceWarning,
                stacklevel=5,
            )


@dataclass(frozen=True)
class Auto(Solver):
    """Choose eigh or krylov at each prediction, from that call's sizes (see :func:`auto_method`)."""

    name: ClassVar[str] = "auto"

    def choose(self, problem, n_times, n_columns, n_test):
        """The solver for one call: a cached decomposition is reused; operators use Krylov."""
        if not problem.dense:
            return Krylov()
        if problem.eig is not None:
            return Eigh()
        return Eigh() if auto_method(problem.n, n_columns, n_times, n_test) == "eigh" else Krylov()

    def solve(self, problem, ts, R, test):
        solver = self.choose(problem, ts.size, R.shape[1], 0 if test is None else test[1])
        return solver.solve(problem, ts, R, test)


def auto_method(n, n_columns, n_times, n_test):
    """``"eigh"`` or ``"krylov"`` for one call, by a deterministic cost model (seconds).

    eigh:   ``a N³`` once, ``2 T c N²`` flops for the train trajectory, and for the test side
            ``min(2 T c N², 2 M N²) + 2 M N T c`` (the cheaper product order).
    krylov: per step one product ``Θ Q`` with ``c`` columns (memory-bound read of ``Θ`` plus
            ``2 c N²`` flops), ``4 N m c`` flops of reorthogonalisation and a Python overhead;
            ``m = AUTO_KRYLOV_ITERATIONS`` steps; then ``2 N m T c`` flops per side to assemble
            the results and ``2 M N T c`` for the test product.

    Parameters
    ----------
    n : int
        Size of the flattened kernel (``N`` or ``N k``).
    n_columns : int
        Target columns solved separately (``k`` for a traced kernel, 1 for a full one).
    n_times : int
        Times requested in this call.
    n_test : int
        Test rows in this call (0 for none).

    Returns
    -------
    method : str
    """
    if n < AUTO_MIN_KRYLOV_SIZE:
        return "eigh"
    c, T, m, M = n_columns, n_times, AUTO_KRYLOV_ITERATIONS, n_test
    flop = AUTO_SECONDS_PER_FLOP
    test_eigh = (min(2.0 * T * c * n**2, 2.0 * M * n**2) + 2.0 * M * n * T * c) if M else 0.0
    cost_eigh = AUTO_EIGH_SECONDS_PER_N3 * n**3 + (2.0 * T * c * n**2 + test_eigh) * flop
    step = (
        AUTO_MATVEC_SECONDS_PER_N2 * n**2
        + 2.0 * c * n**2 * flop
        + c * (4.0 * n * m * flop + AUTO_LANCZOS_STEP_OVERHEAD)
    )
    sides = 2 if M else 1
    cost_krylov = m * step + (sides * 2.0 * n * m * T * c + 2.0 * M * n * T * c) * flop
    return "krylov" if cost_krylov < cost_eigh else "eigh"


_SOLVERS = {cls.name: cls for cls in (Auto, Eigh, Expm, Krylov)}
#: The ``method=`` names (ConjugateGradient is given as an object: it needs ``t = ∞``).
METHODS = tuple(_SOLVERS)


def resolve_solver(method):
    """The solver object for ``method=`` (a name or a solver)."""
    if isinstance(method, Solver):
        return method
    if not isinstance(method, str):
        raise TypeError(
            f"method must be one of {', '.join(map(repr, METHODS))} or a solver such as Krylov(tol=1e-8) "
            f"or ConjugateGradient(), got {method!r}"
        )
    return _SOLVERS[check_choice(method, "method", METHODS)]()
