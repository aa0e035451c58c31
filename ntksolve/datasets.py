"""The embedded default data of ``ntksolve compare``: generated, so nothing is downloaded.

A smooth regression in ``d = 8`` dimensions, standardised::

    x ~ N(0, I_8)
    y = sin(2 <w1, x>) + 0.5 cos(<w2, x>) <w1, x> + noise_std * eps,    w1, w2 ~ N(0, I/8)

The inputs have unit variance per feature (``<x, x>/d ~ 1``, the scale the NTK conventions
normalise by) and the targets are centred and scaled by the training set's mean and standard
deviation. It is smooth enough that a wide network's kernel fits it in a hundred steps and rough
enough (two interacting directions, a frequency-2 sine) that a linear model does not.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class RegressionData(NamedTuple):
    """Train and test splits: ``X_train`` (N, d), ``y_train`` (N, 1), ``X_test`` (M, d), ``y_test`` (M, 1)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    description: str


def default_regression(n_train: int = 256, n_test: int = 256, n_features: int = 8, noise_std: float = 0.0,
                       random_state: int = 0) -> RegressionData:
    """The default data set of ``ntksolve compare`` (see the module docstring).

    Parameters
    ----------
    n_train, n_test : int, default 256
    n_features : int, default 8
    noise_std : float, default 0.0
        Standard deviation of Gaussian label noise, before standardisation.
    random_state : int, default 0
        Seed of the inputs, the target function and the noise; fixed so the default is one data set.

    Returns
    -------
    RegressionData
    """
    rng = np.random.default_rng(random_state)
    n = n_train + n_test
    X = rng.standard_normal((n, n_features))
    w1 = rng.standard_normal(n_features) / np.sqrt(n_features)
    w2 = rng.standard_normal(n_features) / np.sqrt(n_features)
    u, v = X @ w1, X @ w2
    y = np.sin(2.0 * u) + 0.5 * np.cos(v) * u
    if noise_std:
        y = y + noise_std * rng.standard_normal(n)
    mu, sd = y[:n_train].mean(), y[:n_train].std()
    y = ((y - mu) / sd)[:, None]
    desc = (f"generated smooth regression, d={n_features}: y = sin(2<w1,x>) + 0.5 cos(<w2,x>) <w1,x>"
            f"{f' + {noise_std} noise' if noise_std else ''}, x ~ N(0, I); targets standardised; "
            f"{n_train} train / {n_test} test points (seed {random_state})")
    return RegressionData(X[:n_train], y[:n_train], X[n_train:], y[n_train:], desc)


__all__ = ["default_regression", "RegressionData"]
