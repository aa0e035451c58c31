"""ntksolve: predict how a wide neural network trains, without training it.

Public API (importing compiles nothing; numba kernels are jitted lazily on first use):

- :class:`MLP` -- the fully connected network of the conventions.
- :func:`empirical_ntk`, :func:`jacobian`, :func:`analytic_kernels` -- kernels.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .network import MLP, ACTIVATIONS, PARAMETERIZATIONS
from .kernels import empirical_ntk, empirical_nngp, jacobian, analytic_kernels, Kernels
from .dynamics import gradient_descent_mse, gradient_descent_mse_ensemble, critical_learning_rate, mse_loss, DivergenceWarning
from .estimators import NTKRegressor, NTKClassifier, NTKRegressorCV
from .gp_kernels import NTKKernel, NNGPKernel
from ._persistence import load

__all__ = [
    "MLP",
    "ACTIVATIONS",
    "PARAMETERIZATIONS",
    "empirical_ntk",
    "empirical_nngp",
    "jacobian",
    "analytic_kernels",
    "Kernels",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "critical_learning_rate",
    "mse_loss",
    "DivergenceWarning",
    "NTKRegressor",
    "NTKClassifier",
    "NTKRegressorCV",
    "NTKKernel",
    "NNGPKernel",
    "load",
]
