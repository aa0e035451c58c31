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
import re
from typing import NamedTuple, Tuple

import numpy as np

from ntksolve._jit.activations import ACTIVATION_CODES, NO_PARAMS

#: The activations named without arguments (``leaky_relu`` has negative slope 0.01, as PyTorch's).
ACTIVATIONS: Tuple[str, ...] = (
    "relu",
    "erf",
    "tanh",
    "identity",
    "sigmoid",
    "gelu",
    "softplus",
    "leaky_relu",
    "abs",
    "sin",
    "cos",
    "gaussian",
)
#: The spellings with arguments (:class:`Activation`).
PARAMETRIC_ACTIVATIONS: Tuple[str, ...] = ("leaky_relu(slope)", "abrelu(a, b)", "monomial(n)")
#: Largest degree ``n`` of ``monomial(n)``.
MAX_MONOMIAL_DEGREE = 8
_LEAKY_DEFAULT = 0.01
_SPELLING = re.compile(r"([a-z_]+)\s*(?:\((.*)\))?", re.S)


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

    Notes
    -----
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
    if math.isinf(value * value):  # every kernel scales with the square: it would be infinite
        raise ValueError(
            f"{name} must be below 1.3e154, so that its square (the kernels' scale) is a finite "
            f"float64, got {value!r}; lower it"
        )
    return value


def check_width(n, what: str) -> int:
    """A layer width: a positive int (``what`` names the argument in the error)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        raise ValueError(f"{what} must be a positive int, got {n!r}")
    return int(n)


def _real_argument(text: str, spelling: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"activation {spelling!r}: {text.strip()!r} is not a finite number")
    return value


class Activation:
    """The element-wise activation ``h = phi(z)``, named by its spelling.

    Parameters
    ----------
    spelling : str
        One of :data:`ACTIVATIONS` -- relu, erf, tanh, identity, sigmoid, gelu (exact
        ``x Phi(x)``), softplus, leaky_relu (negative slope 0.01), abs, sin, cos, gaussian
        (``exp(-x^2 / 2)``) -- or one with arguments:

        - ``"leaky_relu(slope)"``: ``max(x, 0) + slope min(x, 0)``;
        - ``"abrelu(a, b)"``: ``a min(x, 0) + b max(x, 0)`` (leaky relu is ``(slope, 1)``, abs is
          ``(-1, 1)``, relu ``(0, 1)``); ``a`` and ``b`` finite, not both zero;
        - ``"monomial(n)"``: ``x^n``, ``n`` an integer from 1 to :data:`MAX_MONOMIAL_DEGREE`.

        At the kink, ``phi'(0) = a`` (``0`` for relu, ``slope`` for leaky relu).

    Attributes
    ----------
    name : str
        The canonical spelling (``"leaky_relu(0.2)"``, ``"monomial(3)"``; arguments equal to the
        default dropped): what networks report and serialise.
    family : str
        ``name`` without its arguments; ``abs`` and ``leaky_relu`` are of family ``abrelu``.
    code : int
        The integer the jitted kernels dispatch on.
    params : (float, float)
        The parameters the jitted kernels take: ``(a, b)`` of abrelu, ``(n, 0)`` of monomial,
        ``(0, 0)`` otherwise.

    Examples
    --------
    >>> Activation("leaky_relu(0.2)").params
    (0.2, 1.0)
    >>> Activation("abs").family, Activation("monomial( 3 )").name
    ('abrelu', 'monomial(3)')
    """

    __slots__ = ("name", "family", "code", "params")

    def __init__(self, spelling: str) -> None:
        if not isinstance(spelling, str):
            raise TypeError(
                f"activation must be a string such as 'relu' or 'leaky_relu(0.2)', got "
                f"{type(spelling).__name__} {spelling!r}"
            )
        match = _SPELLING.fullmatch(spelling.strip())
        head = match.group(1) if match else None
        # None: no parentheses; "()" is a list of one empty argument, refused by _arity
        args = None if match is None or match.group(2) is None else match.group(2).split(",")
        known = head in ACTIVATIONS or head in ("abrelu", "monomial")
        if not known:
            raise ValueError(
                f"unknown activation {spelling!r}; valid activations are {', '.join(ACTIVATIONS)}, "
                f"and with arguments {', '.join(PARAMETRIC_ACTIVATIONS)}"
            )
        family, params, name = head, NO_PARAMS, head
        if head == "leaky_relu":
            self._arity(spelling, args, (0, 1), "leaky_relu(slope), e.g. 'leaky_relu(0.2)'")
            slope = _real_argument(args[0], spelling) if args else _LEAKY_DEFAULT
            family, params = "abrelu", (slope, 1.0)
            name = "leaky_relu" if slope == _LEAKY_DEFAULT else f"leaky_relu({slope!r})"
        elif head == "abrelu":
            self._arity(spelling, args, (2,), "abrelu(a, b), e.g. 'abrelu(-0.5, 1.0)'")
            a, b = (_real_argument(t, spelling) for t in args)
            if a == 0.0 and b == 0.0:
                raise ValueError(f"activation {spelling!r} is zero everywhere; give a or b a nonzero value")
            params, name = (a, b), f"abrelu({a!r}, {b!r})"
        elif head == "monomial":
            self._arity(spelling, args, (1,), "monomial(n), e.g. 'monomial(3)'")
            text = args[0].strip()
            if not text.isdigit() or not 1 <= int(text) <= MAX_MONOMIAL_DEGREE:
                raise ValueError(
                    f"activation {spelling!r}: the degree must be an integer from 1 to "
                    f"{MAX_MONOMIAL_DEGREE}, got {text!r}"
                )
            params, name = (float(int(text)), 0.0), f"monomial({int(text)})"
        else:
            self._arity(spelling, args, (0,), repr(head))
            if head == "abs":
                family, params = "abrelu", (-1.0, 1.0)
        self.name = name
        self.family = family
        self.code = ACTIVATION_CODES[family]
        self.params = params

    @staticmethod
    def _arity(spelling, args, allowed, usage):
        n = 0 if args is None else len(args)
        if n not in allowed or (args is not None and not all(a.strip() for a in args)):
            raise ValueError(
                f"activation {spelling!r} takes {' or '.join(map(str, allowed))} argument(s): write {usage}"
            )

    def __eq__(self, other) -> bool:
        return isinstance(other, Activation) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


def check_activation(value, name: str = "activation") -> Activation:
    """``Activation(value)``, or a ValueError naming ``name``, the valid spellings and what is wrong."""
    if isinstance(value, str):
        try:
            return Activation(value)
        except ValueError as exc:
            if not str(exc).startswith("unknown activation"):
                raise ValueError(f"{name}={value!r}: {exc}") from None
    raise ValueError(
        f"{name} must be one of {', '.join(map(repr, ACTIVATIONS))}, or one with "
        f"arguments: {', '.join(map(repr, PARAMETRIC_ACTIVATIONS))}; got {value!r}"
    )


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

    def __init__(
        self,
        width: int,
        weight_std: float = 1.0,
        bias_std: float = 0.0,
        parameterization: str = "ntk",
        *,
        bias: bool = True,
    ) -> None:
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
        return (
            f"Dense({self.width}, weight_std={self.weight_std}, bias_std={self.bias_std}, "
            f"parameterization={self.parameterization!r}{'' if self.bias else ', bias=False'})"
        )

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


__all__ = [
    "ACTIVATIONS",
    "PARAMETRIC_ACTIVATIONS",
    "MAX_MONOMIAL_DEGREE",
    "PARAMETERIZATIONS",
    "Activation",
    "Dense",
    "LayerScales",
    "check_activation",
    "check_width",
]
