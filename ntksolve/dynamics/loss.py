"""The MSE of the conventions, ``1/(2Nk) Σ_i ‖f(x_i) − y_i‖²``: the one implementation, for outputs
anywhere in the float64 range (:mod:`ntksolve.dynamics.squares`)."""

from __future__ import annotations

import math

import numpy as np

from ntksolve._validation import as_real_array
from ntksolve.dynamics.squares import mean_square

__all__ = ["mse_loss"]

#: Below this, the dot product may have lost squares to underflow: :func:`mean_square` redoes it.
_SAFE_SUM = np.finfo(np.float64).tiny / np.finfo(np.float64).eps


def mse_loss(fx, y):
    """Mean squared error ``1/(2Nk) Σ_i ‖f(x_i) − y_i‖²`` of the conventions, along a trajectory.

    Parameters
    ----------
    fx : array_like, shape (..., N, k) or (..., N)
        Outputs; any leading axes (e.g. the time axis ``T`` of a trajectory) are kept.
    y : array_like, shape (N, k) or (N,)
        Targets; must match the trailing axes of ``fx``.

    Returns
    -------
    loss : float or ndarray, shape (...)
    """
    fx = as_real_array(fx, "fx")
    y = as_real_array(y, "y")
    if y.ndim == 0 or fx.shape[fx.ndim - y.ndim :] != y.shape:
        raise ValueError(f"fx of shape {fx.shape} does not end with the targets' shape {y.shape}")
    diff = fx - y
    if fx.ndim == y.ndim:  # one set of outputs (the training loop's case): a single dot product
        d = diff.ravel()
        with np.errstate(over="ignore"):  # an overflow is redone below
            ss = float(np.dot(d, d))
        if ss >= _SAFE_SUM and ss != math.inf:  # (NaN fails the first test)
            return 0.5 * ss / d.size
        return float(0.5 * mean_square(d))  # overflowed or underflowed: redone scaled
    axes = tuple(range(fx.ndim - y.ndim, fx.ndim))
    return 0.5 * mean_square(diff, axis=axes)
