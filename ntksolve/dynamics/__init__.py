"""Training dynamics of the linearised network: rules, solvers, closed forms, the trained ensemble.

- :func:`gradient_descent_mse` → :class:`MSEPredictor`; ``dynamics=`` a name or a rule
  (:class:`GradientFlow`, :class:`GradientDescent`), ``method=`` a name or a solver (:class:`Eigh`,
  :class:`Expm`, :class:`Krylov`, :class:`ConjugateGradient`, :class:`Auto`).
- Kernels as arrays or as operators (:class:`KernelOperator` protocol, :class:`DenseKernel`).
- :func:`gradient_descent_mse_ensemble` → :class:`EnsemblePredictor`.
"""
from ntksolve.dynamics.ensemble import EnsemblePredictor, gradient_descent_mse_ensemble
from ntksolve.dynamics.krylov import KrylovConvergenceWarning
from ntksolve.dynamics.loss import mse_loss
from ntksolve.dynamics.mse import critical_learning_rate, gradient_descent_mse
from ntksolve.dynamics.nystrom import Nystrom
from ntksolve.dynamics.operator import DenseKernel, KernelOperator
from ntksolve.dynamics.predictor import MSEPredictor
from ntksolve.dynamics.rules import DivergenceWarning, GradientDescent, GradientFlow, TrainingRule
from ntksolve.dynamics.solvers import Auto, ConjugateGradient, Eigh, Expm, Krylov, Solver

__all__ = [
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "critical_learning_rate",
    "mse_loss",
    "MSEPredictor",
    "EnsemblePredictor",
    "DivergenceWarning",
    "KrylovConvergenceWarning",
    "TrainingRule",
    "GradientFlow",
    "GradientDescent",
    "Solver",
    "Eigh",
    "Expm",
    "Krylov",
    "ConjugateGradient",
    "Auto",
    "Nystrom",
    "KernelOperator",
    "DenseKernel",
]
