"""scikit-learn faces: estimators, Gaussian-process kernels, and their persistence."""
from ntksolve.sklearn.estimators import NTKClassifier, NTKRegressor, NTKRegressorCV
from ntksolve.sklearn.gp_kernels import NNGPKernel, NTKKernel
from ntksolve.sklearn.persistence import load

__all__ = ["NTKRegressor", "NTKClassifier", "NTKRegressorCV", "NTKKernel", "NNGPKernel", "load"]
