"""The analytic infinite-width NNGP and NTK of a network's architecture."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ntksolve._jit import analytic as _jit_analytic
from ntksolve._validation import check_inputs, check_memory
from ntksolve.kernels.empirical import _check_net
from ntksolve.nets.mlp import MLP


class Kernels(NamedTuple):
    """The infinite-width kernels of a network, each of shape ``(N1, N2)``."""

    nngp: np.ndarray
    ntk: np.ndarray



def analytic_kernels(net: MLP, X1, X2=None) -> Kernels:
    """The infinite-width NNGP and NTK of ``net``'s architecture (NTK parameterisation only).

    Closed forms for relu, erf and identity; two-dimensional Gauss-Hermite quadrature for the other
    activations. Numba over pairs of points, all layers of one pair carried in registers:
    ``O(N1 N2 (d + L))`` for the closed forms.

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


__all__ = ["Kernels", "analytic_kernels"]
