"""ntksolve: predict how a wide neural network trains, without training it.

Public API (importing compiles nothing; numba kernels are jitted lazily on first use, and the
scikit-learn faces and the comparison tools are imported on first access):

- :class:`MLP` -- the fully connected network of the conventions.
- :class:`Network` -- a sequential network of layers: :class:`Dense` (per-layer settings), the
  activations (:class:`Activation` or a spelling), :class:`Residual`, :class:`LayerNorm`, the
  convolutions :class:`Conv` (:class:`Conv1D`, :class:`Conv2D`) with :class:`GlobalAvgPool`,
  :class:`Flatten` and :class:`Reshape`
  (``docs/networks.md``); accepted wherever an MLP is.
- :func:`empirical_ntk`, :func:`empirical_nngp`, :func:`jacobian`, :func:`analytic_kernels` -- kernels;
  :class:`FloatOverflowError` (a ValueError) -- what a forward pass or kernel raises when it overflowed its dtype.
- :func:`gradient_descent_mse`, :func:`gradient_descent_mse_ensemble`, :func:`critical_learning_rate`,
  :func:`mse_loss` -- closed-form training dynamics; :class:`GradientFlow`, :class:`GradientDescent`
  (training rules), :class:`Adam` (real training only), :class:`Eigh`, :class:`Expm`, :class:`Krylov`, :class:`ConjugateGradient`,
  :class:`Auto` (solvers), :class:`DenseKernel` (a kernel as an operator), :class:`Schedule`
  (learning-rate schedules), :func:`to_ntksolve_learning_rate`.
- :func:`sgd_mse`, :func:`sgd_cross_entropy`, :func:`flow_cross_entropy`, :func:`shuffled_batches`,
  :func:`independent_batches` -- minibatch and cross-entropy training in function space.
- :class:`NTKRegressor`, :class:`NTKClassifier`, :class:`NTKRegressorCV`,
  :class:`NTKClassifierCV`, :class:`NTKKernel`,
  :class:`NNGPKernel`, :func:`load` -- scikit-learn estimators and GP kernels.
- :func:`train_network`, :func:`compare` -- real training beside the prediction;
  :func:`linearisation_check` -- whether the linear prediction of a run will hold, before it.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from ntksolve._validation import FloatOverflowError
from ntksolve.nets.layers import PARAMETRIC_ACTIVATIONS
from ntksolve.nets.mlp import MLP, ACTIVATIONS, PARAMETERIZATIONS
from ntksolve.nets import (
    Activation,
    Conv,
    Conv1D,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool,
    LayerNorm,
    Network,
    Reshape,
    Residual,
)
from ntksolve.kernels import empirical_ntk, empirical_nngp, jacobian, analytic_kernels, Kernels
from ntksolve.dynamics import (
    gradient_descent_mse,
    gradient_descent_mse_ensemble,
    critical_learning_rate,
    mse_loss,
    DivergenceWarning,
    GradientFlow,
    GradientDescent,
    Adam,
    Eigh,
    Expm,
    Krylov,
    ConjugateGradient,
    Auto,
    DenseKernel,
    Schedule,
    to_ntksolve_learning_rate,
    sgd_mse,
    sgd_cross_entropy,
    flow_cross_entropy,
    shuffled_batches,
    independent_batches,
)

# Attributes resolved on first access (PEP 562): scikit-learn alone takes longer to import than
# the whole core, and a user computing kernels should not pay for it.
_LAZY = {
    "NTKRegressor": "sklearn.regressor",
    "NTKClassifier": "sklearn.classifier",
    "NTKRegressorCV": "sklearn.cv",
    "NTKClassifierCV": "sklearn.cv_classifier",
    "AnalyticWidthWarning": "sklearn",
    "NTKKernel": "sklearn.gp_kernels",
    "NNGPKernel": "sklearn.gp_kernels",
    "load": "sklearn.persistence",
    "train_network": "network_training",
    "linearisation_check": "linearisation",
    "LinearisationWarning": "linearisation",
    "TrainingResult": "training",
    "TrainingDivergedError": "training",
    "compare": "comparison",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ntksolve' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "MLP",
    "Network",
    "Dense",
    "Activation",
    "Residual",
    "Conv",
    "Conv1D",
    "Conv2D",
    "GlobalAvgPool",
    "Flatten",
    "Reshape",
    "LayerNorm",
    "ACTIVATIONS",
    "PARAMETRIC_ACTIVATIONS",
    "PARAMETERIZATIONS",
    "empirical_ntk",
    "empirical_nngp",
    "jacobian",
    "analytic_kernels",
    "Kernels",
    "FloatOverflowError",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "critical_learning_rate",
    "mse_loss",
    "DivergenceWarning",
    "GradientFlow",
    "GradientDescent",
    "Adam",
    "Eigh",
    "Expm",
    "Krylov",
    "ConjugateGradient",
    "Auto",
    "DenseKernel",
    "Schedule",
    "to_ntksolve_learning_rate",
    "sgd_mse",
    "sgd_cross_entropy",
    "flow_cross_entropy",
    "shuffled_batches",
    "independent_batches",
    *_LAZY,
]
