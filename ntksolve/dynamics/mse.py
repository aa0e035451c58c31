"""Closed-form training dynamics of the linearised network under MSE: the entry points.

Implements "Training, and its closed form" of ``docs/conventions.md``. With ``Θ`` the
(regularised) train–train NTK, ``r = y − f_0`` and ``N k`` target entries:

    train:  f_t      = f_0   + g_t(Θ) r               g_t(λ) = 1 − p_t(λ)
    test:   f_t(X*)  = f_0*  + Θ* h_t(Θ) r            h_t(λ) = g_t(λ) / λ

where the training rule (``dynamics=``, :mod:`ntksolve.dynamics.rules`) fixes the residual
factor ``p_t`` (gradient flow ``e^{−ηλt/(Nk)}``, gradient descent ``(1 − ηλ/(Nk))^t``) and the
solver (``method=``, :mod:`ntksolve.dynamics.solvers`) how the matrix functions are evaluated.
Eigenvalues at or below ``n ε λ_max`` are exact zeros (``g = h = 0``), so singular kernels give
the limit and ``t = ∞`` is kernel regression ``Θ* Θ⁺ r``.
"""

from __future__ import annotations

from ntksolve._validation import check_diag_reg, check_positive_int, ridge_shift
from ntksolve.dynamics.krylov import KrylovConvergenceWarning
from ntksolve.dynamics.loss import mse_loss
from ntksolve.dynamics.operator import (
    DenseKernel,
    ShiftedOperator,
    check_operator,
    check_train_kernel,
    is_kernel_operator,
    largest_eigenvalue,
)
from ntksolve.dynamics.predictor import MSEPredictor
from ntksolve.dynamics.rules import DYNAMICS, DivergenceWarning, GradientDescent
from ntksolve.dynamics.solvers import METHODS

__all__ = [
    "gradient_descent_mse",
    "critical_learning_rate",
    "mse_loss",
    "MSEPredictor",
    "DivergenceWarning",
    "KrylovConvergenceWarning",
    "DYNAMICS",
    "METHODS",
]


def gradient_descent_mse(
    k_train_train,
    y_train,
    learning_rate=None,
    *,
    diag_reg=0.0,
    dynamics="continuous",
    method="auto",
    allow_divergence=False,
):
    """Closed-form training on MSE of the network linearised at initialisation.

    Parameters
    ----------
    k_train_train : array_like of shape (N, N) or (N, N, k, k), or KernelOperator
        Train–train NTK ``Θ``: traced (acting on each target column) or full (flattened to
        ``(N k, N k)`` with index ``(i, a)``); or a traced kernel known by its products (an
        object with ``shape``, ``dtype``, ``matmat(V)``, ``diagonal()``, e.g. a tiled kernel or
        :class:`~ntksolve.dynamics.operator.DenseKernel`), solved by ``Krylov`` or
        ``ConjugateGradient``.
    y_train : array_like, shape (N,) or (N, k)
        Targets.
    learning_rate : float, optional
        ``η`` for a ``dynamics`` name (default 1.0); time ``t`` counts steps. Must be left out
        when ``dynamics`` is a rule object (the rule carries its rate).
    diag_reg : float, default 0.0
        Adds ``diag_reg · mean(diag Θ) · I`` to the flattened kernel.
    dynamics : {"continuous", "discrete"} or TrainingRule, default "continuous"
        ``"continuous"`` is ``GradientFlow(learning_rate)``, ``"discrete"`` is
        ``GradientDescent(learning_rate)`` (exact integer steps).
    method : {"auto", "eigh", "expm", "krylov"} or Solver, default "auto"
        ``Eigh()``, ``Expm()``, ``Krylov(tol, max_iter)``, ``ConjugateGradient(tol, max_iter,
        preconditioner)`` or ``Auto()``; see :mod:`ntksolve.dynamics.solvers`. ``"auto"`` decides
        at each prediction from its sizes; ``predictor.method`` says what ran.
    allow_divergence : bool, default False
        With ``GradientDescent`` a learning rate at or above ``2Nk/λ_max`` is an error unless
        this is True. (Gradient flow only warns with :class:`DivergenceWarning`.)

    Returns
    -------
    predictor : MSEPredictor
        ``predictor(t, fx_train_0, fx_test_0=None, k_test_train=None)``.

    Notes
    -----
    ``Eigh``/``Expm`` decompose the kernel here, once (so does ``"auto"`` for kernels below
    ``AUTO_MIN_KRYLOV_SIZE``); ``Krylov`` works per call (the Krylov basis depends on ``y − f_0``).
    The divergence check runs here when ``λ_max`` is known or the rule needs it (descent: ARPACK
    Lanczos on the kernel's products), else at the first call (from the eigenvalues, or the
    Lanczos estimate of ``λ_max`` at no extra cost).
    """
    return MSEPredictor(
        k_train_train,
        y_train,
        learning_rate,
        diag_reg=diag_reg,
        dynamics=dynamics,
        method=method,
        allow_divergence=allow_divergence,
    )


def critical_learning_rate(k_train_train, n_outputs=None, *, diag_reg=0.0):
    """The learning rate ``2 N k / λ_max(Θ)`` above which gradient descent diverges.

    Parameters
    ----------
    k_train_train : array_like of shape (N, N) or (N, N, k, k), or KernelOperator
    n_outputs : int, optional
        ``k`` for a traced kernel (number of target columns; default 1). For a full kernel it is the
        kernel's ``k`` and, if given, must agree.
    diag_reg : float, default 0.0
        As in :func:`gradient_descent_mse`.

    Returns
    -------
    eta_crit : float
    """
    reg = check_diag_reg(diag_reg)
    if is_kernel_operator(k_train_train):
        n, diag = check_operator(k_train_train)
        kernel, full_k = ShiftedOperator(k_train_train, ridge_shift(reg, diag)), None
    else:
        A, full_k = check_train_kernel(k_train_train)
        n = A.shape[0]
        kernel = DenseKernel._trusted(A, ridge_shift(reg, A.diagonal()))
    k = check_positive_int(n_outputs, "n_outputs", allow_none=True)
    if full_k is not None:
        if k is not None and k != full_k:
            raise ValueError(f"n_outputs={n_outputs} disagrees with the full kernel's k = {full_k}")
        size = n
    else:
        size = n * (1 if k is None else k)
    return GradientDescent().critical_learning_rate(largest_eigenvalue(kernel), size)
