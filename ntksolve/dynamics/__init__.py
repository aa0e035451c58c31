"""Training dynamics of the linearised network: rules, solvers, closed forms, the trained ensemble.

- :func:`gradient_descent_mse` → :class:`MSEPredictor`; ``dynamics=`` a name or a rule
  (:class:`GradientFlow`, :class:`GradientDescent`), ``method=`` a name or a solver (:class:`Eigh`,
  :class:`Expm`, :class:`Krylov`, :class:`ConjugateGradient`, :class:`Auto`).
- Kernels as arrays or as operators (:class:`KernelOperator` protocol, :class:`DenseKernel`).
- :func:`gradient_descent_mse_ensemble` → :class:`EnsemblePredictor`.
- :class:`KernelGP` (from :meth:`MSEPredictor.kernel_gp`): the targets as a Gaussian process on the
  decomposed kernel, amplitude and noise by maximum marginal likelihood.
- :class:`Schedule` (learning-rate schedules, given as ``GradientDescent(learning_rate=Schedule...)``),
  :func:`to_ntksolve_learning_rate` (other libraries' rates in ours).
- Function space, where no closed form exists: :func:`sgd_mse` (minibatches), :func:`sgd_cross_entropy`,
  :func:`flow_cross_entropy`, with :func:`shuffled_batches` / :func:`independent_batches` and :class:`Trajectory`.
"""

from ntksolve.dynamics.adaptive import Adam
from ntksolve.dynamics.ensemble import EnsemblePredictor, gradient_descent_mse_ensemble
from ntksolve.dynamics.kernel_gp import KernelGP
from ntksolve.dynamics.batches import independent_batches, shuffled_batches
from ntksolve.dynamics.function_space import Trajectory, flow_cross_entropy, sgd_cross_entropy, sgd_mse
from ntksolve.dynamics.krylov import KrylovConvergenceWarning
from ntksolve.dynamics.loss import mse_loss
from ntksolve.dynamics.mse import critical_learning_rate, gradient_descent_mse
from ntksolve.dynamics.nystrom import Nystrom
from ntksolve.dynamics.operator import DenseKernel, KernelOperator
from ntksolve.dynamics.predictor import MSEPredictor
from ntksolve.dynamics.rules import DivergenceWarning, GradientDescent, GradientFlow, TrainingRule
from ntksolve.dynamics.schedules import Schedule
from ntksolve.dynamics.solvers import Auto, ConjugateGradient, Eigh, Expm, Krylov, Solver
from ntksolve.dynamics.units import to_ntksolve_learning_rate

__all__ = [
    "Adam",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "critical_learning_rate",
    "mse_loss",
    "MSEPredictor",
    "EnsemblePredictor",
    "KernelGP",
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
    "Schedule",
    "to_ntksolve_learning_rate",
    "sgd_mse",
    "sgd_cross_entropy",
    "flow_cross_entropy",
    "shuffled_batches",
    "independent_batches",
    "Trajectory",
]
