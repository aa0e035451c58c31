"""The layers a network is built from: a dense (fully connected) layer and an element-wise activation.

A :class:`Dense` layer of width ``n`` maps ``h`` (width ``n_in``) to ``z = ws W h + bs b`` with
``ws = sigma_w / sqrt(n_in)``, ``bs = sigma_b`` and every entry of the stored ``W`` (``n x n_in``)
and ``b`` (``n``) drawn i.i.d. N(0, 1). A layer built with ``bias=False`` has no ``b`` at all
(``z = ws W h``; its stored ``b`` is an empty array of shape ``(0,)``): nothing to train, nothing in
the parameter count, the NTK or the Jacobian. Its *parameterisation* says which variables gradient
descent trains, and this module is the one place that decides it (see ``docs/conventions.md``):

- ``"ntk"``: the stored ``W`` and ``b``. ``dz/dW = ws delta h^T``, ``dz/db = bs delta``.
- ``"standard"``: the scaled ``W~ = ws W`` and ``b~ = bs b``. ``dz/dW~ = delta h^T``, ``dz/db~ = delta``.

Both compute the same function from the same stored parameters; they differ in the gradient, and
so in the NTK and in a gradient step. Everything else asks a layer's :class:`LayerScales` for the
numbers: the forward scales, the gradient scales (the Jacobian), their squares (the NTK's per-layer
coefficients) and the step of the stored variables (real training).
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Tuple

import numpy as np

from ntksolve._jit.activations import ACTIVATION_CODES

ACTIVATIONS: Tuple[str, ...] = tuple(ACTIVATION_CODES)


class _Parameterization(NamedTuple):
    trains_scaled: bool  # trained are the forward-scaled (ws W, bs b), not the stored (W, b)
    has_infinite_width_limit: bool  # the NTK converges as the widths grow


_PARAMETERIZATIONS = {
    "ntk": _Parameterization(trains_scaled=False, has_infinite_width_limit=True),
    # the NTK of the standard parameterisation grows without bound with width
    "standard": _Parameterization(trains_scaled=True, has_infinite_width_limit=False),
}
PARAMETERIZATIONS: Tuple[str, ...] = tuple(_PARAMETERIZATIONS)


class LayerScales(NamedTuple):
    """The scalars of one dense layer at a given input width ``n_in``.

    Attributes
    ----------
    weight, bias : float
        The forward scales: ``z = weight * W h + bias * b`` (``sigma_w / sqrt(n_in)``, ``sigma_b``).
    grad_weight, grad_bias : float
        Derivatives with respect to the trained parameters: ``dz/dW_trained = grad_weight delta h^T``,
        ``dz/db_trained = grad_bias delta``.
    trained_weight, trained_bias : float
        The trained parameters in units of the stored ones: ``W_trained = trained_weight * W``.

    A layer without a bias has ``bias = grad_bias = 0`` (and ``trained_bias = 1``: there is
    nothing to carry).
    """

    weight: float
    bias: float
    grad_weight: float
    grad_bias: float
    trained_weight: float
    trained_bias: float

    @property
    def ntk_coefficients(self) -> Tuple[float, float]:
        """``(c, beta)`` of the layer's NTK term ``<delta, delta'> (c <h, h'> + beta)``."""
        return self.grad_weight**2, self.grad_bias**2

    @property
    def stored_step(self) -> Tuple[float, float]:
        """Gradient descent on the trained parameters as a step of the stored ones:
        ``W -= eta * alpha * G_W`` and ``b -= eta * beta * G_b``, returned as ``(alpha, beta)``, with
        ``G_W = sum_i g_i h_i^T`` and ``G_b = sum_i g_i`` (``g = dL/dz``).

        ``W_trained = t W`` moves by ``-eta grad_weight G_W``, so ``W`` moves by ``1/t`` of that.
        Needs ``trained_bias != 0`` (see :attr:`Dense.stores_trained_bias`); ``beta = 0`` for a
        layer without a bias.
        """
        return self.grad_weight / self.trained_weight, self.grad_bias / self.trained_bias


def _check_std(value, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (positive and value == 0):
        need = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite {need} number, got {value!r}")
    return value


def check_width(n, what: str) -> int:
    """A layer width: a positive int (``what`` names the argument in the error)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        raise ValueError(f"{what} must be a positive int, got {n!r}")
    return int(n)


class Activation:
    """The element-wise activation ``h = phi(z)``, one of :data:`ACTIVATIONS`.

    Parameters
    ----------
    name : str
        relu, erf, tanh, identity, sigmoid, gelu (exact ``x Phi(x)``) or softplus.
    """

    __slots__ = ("name", "code")

    def __init__(self, name: str) -> None:
        if name not in ACTIVATION_CODES:
            raise ValueError(f"unknown activation {name!r}; valid activations are {', '.join(ACTIVATIONS)}")
        self.name = name
        #: the integer the jitted kernels dispatch on
        self.code = ACTIVATION_CODES[name]

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


class Dense:
    """A dense layer of ``width`` outputs, ``z = (weight_std / sqrt(n_in)) W h + bias_std b``.

    Parameters
    ----------
    width : int
        ``n``, the number of outputs (positive).
    weight_std : float
        ``sigma_w > 0``.
    bias_std : float
        ``sigma_b >= 0``.
    parameterization : {"ntk", "standard"}
        Which variables are trained (module docstring).
    bias : bool, default True
        Whether the layer has a bias. Without one (``False``, PyTorch's ``bias=False``) the layer
        computes ``z = ws W h``, its ``b`` has shape ``(0,)`` and ``bias_std`` is not used.
    """

    __slots__ = ("width", "weight_std", "bias_std", "parameterization", "bias", "_kind")

    def __init__(self, width: int, weight_std: float = 1.0, bias_std: float = 0.0,
                 parameterization: str = "ntk", *, bias: bool = True) -> None:
        if parameterization not in _PARAMETERIZATIONS:
            raise ValueError(
                f"unknown parameterization {parameterization!r}; valid values are {', '.join(PARAMETERIZATIONS)}"
            )
        self.width = check_width(width, "width")
        self.weight_std = _check_std(weight_std, "weight_std", positive=True)
        self.bias_std = _check_std(bias_std, "bias_std", positive=False)
        self.parameterization = parameterization
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False (whether the layer has a bias), got {bias!r}")
        self.bias = bool(bias)
        self._kind = _PARAMETERIZATIONS[parameterization]

    def __repr__(self) -> str:
        return (f"Dense({self.width}, weight_std={self.weight_std}, bias_std={self.bias_std}, "
                f"parameterization={self.parameterization!r}{'' if self.bias else ', bias=False'})")

    @property
    def has_infinite_width_limit(self) -> bool:
        """Whether the layer's NTK contribution has a finite infinite-width limit (analytic kernels)."""
        return self._kind.has_infinite_width_limit

    @property
    def stores_trained_bias(self) -> bool:
        """Whether the stored ``b`` can carry the trained bias (not so for ``b~ = 0 * b``; a layer
        without a bias has none to carry)."""
        return not self.bias or not self._kind.trains_scaled or self.bias_std > 0.0

    @property
    def forward_bias_std(self) -> float:
        """The ``sigma_b`` of the forward pass: ``bias_std``, or 0 without a bias (the analytic
        kernels' ``sigma_b``: a layer without a bias is the layer with ``sigma_b = 0`` there)."""
        return self.bias_std if self.bias else 0.0

    def param_shapes(self, n_in: int) -> Tuple[Tuple[int, int], Tuple[int]]:
        """``(W.shape, b.shape) = ((width, n_in), (width,))``; ``b.shape = (0,)`` without a bias."""
        return (self.width, n_in), ((self.width if self.bias else 0),)

    def scales(self, n_in: int) -> LayerScales:
        """The layer's :class:`LayerScales` for inputs of width ``n_in``."""
        ws, bs = self.weight_std / math.sqrt(n_in), self.forward_bias_std
        if self._kind.trains_scaled:
            # without a bias nothing is trained there: no gradient, and 1 for "nothing to carry"
            return LayerScales(ws, bs, 1.0, 1.0, ws, bs) if self.bias else LayerScales(ws, 0.0, 1.0, 0.0, ws, 1.0)
        return LayerScales(ws, bs, ws, bs, 1.0, 1.0)


__all__ = ["ACTIVATIONS", "PARAMETERIZATIONS", "Activation", "Dense", "LayerScales", "check_width"]
