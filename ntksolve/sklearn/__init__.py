"""scikit-learn faces: estimators, Gaussian-process kernels, and their persistence."""

from ntksolve.sklearn._checks import AnalyticWidthWarning
from ntksolve.sklearn.classifier import NTKClassifier
from ntksolve.sklearn.cv import NTKRegressorCV
from ntksolve.sklearn.cv_classifier import NTKClassifierCV
from ntksolve.sklearn.gp_kernels import NNGPKernel, NTKKernel
from ntksolve.sklearn.persistence import load
from ntksolve.sklearn.regressor import NTKRegressor

__all__ = [
    "NTKRegressor",
    "NTKClassifier",
    "NTKRegressorCV",
    "NTKClassifierCV",
    "NTKKernel",
    "NNGPKernel",
    "load",
    "AnalyticWidthWarning",
]
