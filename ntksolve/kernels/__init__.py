"""Kernels of a network: empirical (finite width) and analytic (infinite width)."""

from ntksolve.kernels.analytic import Kernels, analytic_kernels
from ntksolve.kernels.empirical import empirical_nngp, empirical_ntk, jacobian

__all__ = ["Kernels", "analytic_kernels", "empirical_ntk", "empirical_nngp", "jacobian"]
