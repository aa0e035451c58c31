"""The analytic infinite-width NNGP and NTK of a network's architecture, and their diagonals."""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from ntksolve._jit import analytic as _jit_analytic
from ntksolve._validation import check_inputs, check_memory
from ntksolve.kernels.empirical import _check_net
from ntksolve._jit.activations import ACTIVATION_CODES
from ntksolve.nets.mlp import ACTIVATIONS, MLP


class Kernels(NamedTuple):
    """The infinite-width kernels of a network, each of shape ``(N1, N2)``."""

    nngp: np.ndarray
    ntk: np.ndarray


def _check_architecture(depth, activation):
    """ValueError unless ``depth`` is a non-negative int and ``activation`` a known name."""
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0:
        raise ValueError(f"depth must be a non-negative int (the number of hidden layers), got {depth!r}")
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"unknown activation {activation!r}; valid activations are {', '.join(ACTIVATIONS)}")


def analytic_kernels(net: MLP, X1, X2=None) -> Kernels:
    """The infinite-width NNGP and NTK of ``net``'s architecture (NTK parameterisation only).

    Closed forms for relu, erf, gelu and identity; for tanh, sigmoid and softplus the closed forms
    of a scale mixture over the Kolmogorov distribution (a fixed 24-node rule, about 1e-12 at any
    scale). Numba over blocks of pairs, ``O(N1 N2 (d + L))`` (``O(N1 N2 (d + 576 L))`` for the
    mixture). Identical rows, in ``X1`` and ``X2`` or across them, get exactly the diagonal value
    ``K(x, x)`` (:func:`analytic_diagonals`), so that a duplicated point or a test point equal to a
    training point keeps the kernel positive semidefinite.

    Parameters
    ----------
    net : MLP
        Its widths are ignored (infinite); depth, activation, weight_std, bias_std are used.
    X1 : array_like, shape (N1, d)
    X2 : array_like, shape (N2, d), optional (defaults to ``X1``)

    Returns
    -------
    Kernels
        Named pair ``(nngp, ntk)``, each of shape (N1, N2), float64 (times ``I_k`` over outputs).

    Raises
    ------
    ValueError
        Standard parameterisation; or inputs so large that a pre-activation variance
        ``Sigma^l(x, x)`` exceeds 1e150 (1e7 for erf, tanh, sigmoid, whose NTK would lose accuracy
        at nearly parallel pairs): standardise the features.
    """
    net = _check_net(net)
    if not net.supports_analytic:
        raise ValueError(
            "analytic kernels are defined in NTK parameterisation only: in standard parameterisation "
            "the infinite-width NTK grows without bound with width. Use MLP(..., parameterization='ntk'), "
            "or empirical_ntk for a finite standard-parameterised network"
        )

    X1 = check_inputs(X1, name="X1")
    symmetric = X2 is None
    if not symmetric:
        X2 = check_inputs(X2, name="X2", n_features=X1.shape[1])
    N2 = X1.shape[0] if symmetric else X2.shape[0]
    check_memory((2, X1.shape[0], N2), np.float64, what="pair of analytic kernels (NNGP and NTK)",
                 hint="use fewer inputs or the tiled Dask path (ntksolve[dask])")
    nngp, ntk = _jit_analytic.analytic_pair_kernels(
        X1, X1 if symmetric else X2, net.depth, net.activation_code, net.weight_std, net.bias_std, symmetric
    )
    return Kernels(nngp=nngp, ntk=ntk)


def analytic_diagonals(X, depth, activation, weight_std, bias_std):
    """Diagonals of the infinite-width NNGP and NTK, ``K(x_i, x_i)``, in ``O(N (d + L))``.

    Parameters
    ----------
    X : array_like, shape (N, d)
    depth : int
        Number of hidden layers ``L``.
    activation : str
        One of ``ntksolve.ACTIVATIONS``.
    weight_std, bias_std : float
        ``sigma_w > 0``, ``sigma_b >= 0``.

    Returns
    -------
    nngp_diag, ntk_diag : ndarray, shape (N,)
        Bit-identical to the diagonals of :func:`analytic_kernels` of ``X`` (with itself or with
        any array holding the same rows).

    Raises
    ------
    ValueError
        As :func:`analytic_kernels`.
    """
    _check_architecture(depth, activation)
    net = MLP((1,) * int(depth), activation, weight_std, bias_std)  # validates the two stds
    X = check_inputs(X)
    return _jit_analytic.analytic_diag(X, net.depth, net.activation_code, net.weight_std, net.bias_std)


__all__ = ["Kernels", "analytic_kernels", "analytic_diagonals"]
