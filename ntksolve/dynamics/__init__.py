"""Training dynamics of the linearised network: closed forms, the trained ensemble, solvers."""
from ntksolve.dynamics.ensemble import EnsemblePredictor, gradient_descent_mse_ensemble
from ntksolve.dynamics.krylov import KrylovConvergenceWarning
from ntksolve.dynamics.mse import (
    DivergenceWarning,
    MSEPredictor,
    critical_learning_rate,
    gradient_descent_mse,
    mse_loss,
)

__all__ = [
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "critical_learning_rate",
    "mse_loss",
    "MSEPredictor",
    "EnsemblePredictor",
    "DivergenceWarning",
    "KrylovConvergenceWarning",
]
