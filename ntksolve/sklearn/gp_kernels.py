"""The infinite-width NTK and NNGP as scikit-learn Gaussian-process kernels.

:class:`NTKKernel` and :class:`NNGPKernel` subclass :class:`sklearn.gaussian_process.kernels.Kernel`,
so they plug into :class:`~sklearn.gaussian_process.GaussianProcessRegressor` (which can optimise
``weight_std`` and ``bias_std`` by marginal likelihood), :class:`~sklearn.kernel_ridge.KernelRidge`,
:class:`~sklearn.svm.SVR`, :class:`~sklearn.svm.SVC` and any other estimator that accepts a kernel
or a callable, and combine with the other kernels (``ConstantKernel() * NTKKernel() + WhiteKernel()``).

Hyperparameters, in log space as scikit-learn's optimisers expect: ``bias_std`` and ``weight_std``
(``theta = [log bias_std, log weight_std]``, the alphabetical order scikit-learn uses). ``depth``
(the number of hidden layers) and ``activation`` are fixed parameters of the architecture.

Gradients (``eval_gradient=True``) are exact for relu, erf, identity, abrelu (leaky relu, abs),
sin, cos, gaussian and the monomials: the layer recursion is differentiated in closed form
(``ntksolve._jit.gp`` holds the derivation). For the other activations (tanh, sigmoid, gelu,
softplus) the gradient is a central finite difference in log space (step :func:`_fd_step`); it
measured accurate to about 1e-9 relative at any depth (bounded by 2e-8, the series' switching
noise), ample for an optimiser, but it costs four extra kernel evaluations.
"""

from __future__ import annotations

import numpy as np
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

from ntksolve._validation import check_inputs
from ntksolve.kernels._analytic_rules import CLOSED, _diag_pieces
from ntksolve.kernels.analytic import _check_architecture, analytic_diagonals, analytic_kernels, input_gram
from ntksolve.nets.mlp import MLP


def _fd_step(depth: int) -> float:
    """Central-difference step in log hyperparameter space, for activations without a closed-form
    gradient, at ``depth`` hidden layers.

    A kernel of ``L`` layers moves like ``sigma^(2L)``, so the relative truncation error of a step
    ``h`` is about ``(2 L h)^2 / 6``: the step shrinks with depth past three layers, which keeps it
    near 1e-10 (measured against sixth-order differences: at most 8e-10 for tanh, sigmoid, gelu
    and softplus at depths 1 to 30; a fixed step of 1e-4 gave 3e-8 at depth 1 and 9e-7 at depth
    10). Rounding adds about ``eps / (2 L h)``, 1e-11; the Hermite series' switching noise (at most
    about 1e-12 of the kernel where the number of terms changes) at most ``1e-12 / (2 L h)``, 2e-8.
    """
    return 1e-5 * min(1.0, 3.0 / max(1, depth))


class _InfiniteWidthKernel(Kernel):
    """Shared machinery of :class:`NTKKernel` and :class:`NNGPKernel` (``_ntk`` selects which)."""

    _ntk = True

    def __init__(
        self,
        weight_std=1.0,
        bias_std=0.1,
        depth=1,
        activation="relu",
        weight_std_bounds=(1e-2, 1e2),
        bias_std_bounds=(1e-4, 1e2),
    ):
        self.weight_std = weight_std
        self.bias_std = bias_std
        self.depth = depth
        self.activation = activation
        self.weight_std_bounds = weight_std_bounds
        self.bias_std_bounds = bias_std_bounds

    # -- hyperparameters (scikit-learn finds them by the hyperparameter_ prefix) -----------
    @property
    def hyperparameter_weight_std(self):
        return Hyperparameter("weight_std", "numeric", self.weight_std_bounds)

    @property
    def hyperparameter_bias_std(self):
        return Hyperparameter("bias_std", "numeric", self.bias_std_bounds)

    @property
    def requires_vector_input(self):
        return True

    def is_stationary(self):
        """Dot-product kernels depend on the points, not only their difference: False."""
        return False

    # -- evaluation ------------------------------------------------------------------------
    def _net(self):
        _check_architecture(self.depth, self.activation)
        # MLP validates weight_std > 0 and bias_std >= 0 with clear messages; widths are ignored
        return MLP((1,) * int(self.depth), self.activation, self.weight_std, self.bias_std)

    def _values(self, X, Y):
        pair = analytic_kernels(self._net(), X, Y)
        return pair.ntk if self._ntk else pair.nngp

    def __call__(self, X, Y=None, eval_gradient=False):
        """Kernel ``k(X, Y)`` and optionally its gradient in the log hyperparameters.

        Parameters
        ----------
        X : array_like, shape (N1, d)
        Y : array_like, shape (N2, d), optional
            Defaults to ``X``.
        eval_gradient : bool, default False
            Only when ``Y`` is None.

        Returns
        -------
        K : ndarray, shape (N1, N2)
        K_gradient : ndarray, shape (N1, N1, n_dims)
            Only when ``eval_gradient``: ``dK/dtheta`` for the non-fixed hyperparameters, in the
            order of ``self.hyperparameters`` (``bias_std``, ``weight_std``).
        """
        X = check_inputs(X)
        if Y is not None:
            Y = check_inputs(Y, name="Y", n_features=X.shape[1])
        if not eval_gradient:
            return self._values(X, Y)
        if Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        net = self._net()
        free = [not self.hyperparameter_bias_std.fixed, not self.hyperparameter_weight_std.fixed]
        phi = net.phi
        from ntksolve._jit import gp as _jit_gp

        if phi.code in _jit_gp.GRADIENT_CODES:
            # the analytic kernels' own per-point variances (range-checked) and input Gram
            q, _, sq, _, _ = _diag_pieces(X, net.depth, phi, net.weight_std, net.bias_std, CLOSED, None)
            K, grad = _jit_gp.pair_kernel_with_gradient(
                input_gram(X, None, sq, sq),
                X.shape[1],
                q,
                sq,
                None,
                None,
                net.depth,
                phi.code,
                phi.params,
                net.weight_std,
                net.bias_std,
                self._ntk,
            )
            return K, grad[:, :, [i for i in range(2) if free[i]]]
        K = self._values(X, None)
        cols, h = [], _fd_step(self.depth)
        for i, name in enumerate(("bias_std", "weight_std")):
            if not free[i]:
                continue
            value = getattr(self, name)
            up = self.clone_with_theta(self.theta)
            down = self.clone_with_theta(self.theta)
            setattr(up, name, value * np.exp(h))
            setattr(down, name, value * np.exp(-h))
            cols.append((up._values(X, None) - down._values(X, None)) / (2.0 * h))
        grad = np.stack(cols, axis=-1) if cols else np.empty(K.shape + (0,))
        return K, grad

    def diag(self, X):
        """``k(x_i, x_i)`` without the ``N x N`` kernel, ``O(N (d + L))``.

        Parameters
        ----------
        X : array_like, shape (N, d)

        Returns
        -------
        K_diag : ndarray, shape (N,)
        """
        net = self._net()
        nngp_diag, ntk_diag = analytic_diagonals(X, net.depth, net.activation, net.weight_std, net.bias_std)
        return ntk_diag if self._ntk else nngp_diag

    def __repr__(self):
        return (
            f"{type(self).__name__}(weight_std={self.weight_std:.3g}, bias_std={self.bias_std:.3g}, "
            f"depth={self.depth}, activation={self.activation!r})"
        )


class NTKKernel(_InfiniteWidthKernel):
    """The infinite-width neural tangent kernel of a fully connected network, as a GP kernel.

    ``Theta^{L+1}(x, x')`` of ``docs/conventions.md`` (NTK parameterisation): the kernel that wide
    networks of this architecture train with, and whose kernel regression is the trained network
    at ``t = inf``. Not stationary.

    Parameters
    ----------
    weight_std : float, default 1.0
        ``sigma_w > 0``; hyperparameter.
    bias_std : float, default 0.1
        ``sigma_b > 0``; hyperparameter (positive, since it is optimised in log space).
    depth : int, default 1
        Number of hidden layers ``L`` (fixed).
    activation : str, default "relu"
        One of ``ntksolve.ACTIVATIONS`` or a spelling with arguments such as
        ``"leaky_relu(0.2)"``, ``"monomial(3)"`` (fixed; :class:`~ntksolve.nets.layers.Activation`).
        Exact gradients except for tanh, sigmoid, gelu and softplus, which use finite differences
        (module docstring).
    weight_std_bounds, bias_std_bounds : pair of float or "fixed"
        Bounds of the hyperparameters for optimisers; "fixed" keeps one out of ``theta``.

    Examples
    --------
    >>> from sklearn.gaussian_process import GaussianProcessRegressor
    >>> from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel
    >>> gpr = GaussianProcessRegressor(ConstantKernel() * NTKKernel(depth=2) + WhiteKernel())
    """

    _ntk = True


class NNGPKernel(_InfiniteWidthKernel):
    """The infinite-width NNGP kernel (the covariance of ``f_0``) of a fully connected network.

    ``Sigma^{L+1}(x, x')`` of ``docs/conventions.md``: Bayesian inference with this kernel is the
    infinitely wide Bayesian network (Lee et al. 2018). Same parameters as :class:`NTKKernel`.

    Parameters
    ----------
    weight_std : float, default 1.0
    bias_std : float, default 0.1
    depth : int, default 1
    activation : str, default "relu"
    weight_std_bounds, bias_std_bounds : pair of float or "fixed"
    """

    _ntk = False


__all__ = ["NTKKernel", "NNGPKernel"]
