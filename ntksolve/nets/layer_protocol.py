"""The protocol every layer of a :class:`~ntksolve.nets.network.Network` implements, and its kernel state.

A layer is a :class:`Layer` subclass (or a :class:`~ntksolve.nets.layers.Dense` /
:class:`~ntksolve.nets.layers.Activation` spec, which the network wraps in the classes of
:mod:`ntksolve.nets.dense_layers`). Shapes are *per example*: a network's inputs are arrays
``(N, *input_shape)``, ``input_shape`` e.g. ``(d,)`` or ``(H, W, C)``; every array a layer
handles has the examples first, ``(B, *shape)``, and every backpropagated signal has ``m``
vectors per example, ``(B, m, *shape)``.

What a layer implements (each method's docstring below gives the shapes):

``output_shape(input_shape)``
    Shape inference; a ValueError naming the layer, the shape it got and the fix (e.g. "Dense needs
    a flat input ``(d,)``: put Flatten() before it").
``param_shapes(input_shape)``
    ``()`` for a layer without parameters, else the pair ``(weight_shape, bias_shape)`` (a layer
    without a bias has ``bias_shape = (0,)``). Parameters of a network are a list with one entry
    per layer: ``()``, a pair ``(W, b)``, or (a composite layer, :class:`Residual`) the list of its
    block's entries. Flattened (the Jacobian's order) depth first, ``W`` row-major then ``b``.
``scales(input_shape)``
    A parametrised layer's :class:`~ntksolve.nets.layers.LayerScales` (forward, gradient and
    training scales of ``W`` and ``b``): the parameterisation is decided there and nowhere else.
``init(input_shape, rng, dtype)``
    The initial ``(W, b)`` (default: every entry i.i.d. N(0, 1), as the conventions draw).
``forward(params, x, keep)``
    ``(y, cache)``: ``y`` of shape ``(B, *output_shape)``; ``cache`` what :meth:`backward` and the
    kernel terms need (only when ``keep``; else None).
``backward(params, cache, g, signals, want_input=True)``
    The signal at the layer's input, ``(B, m, *input_shape)``, from ``g`` at its output
    ``(B, m, *output_shape)``. ``g is None`` is the identity seed (``m = prod(output_shape)``,
    ``g[i, a]`` the ``a``-th unit vector), which a layer may handle without forming it
    (:func:`identity_seed` forms it). A layer never modifies ``g`` in place (another layer may
    hold it). A parametrised leaf appends ``(self, params, cache, g)`` to ``signals`` (a composite
    layer lets its block's leaves append theirs); the network's kernels are sums over those entries.
    ``want_input=False`` (the lowest parametrised layer): record the signals, return None.
``ntk_term(params, I, J, theta, trace, lower)``
    Add the layer's term of the empirical NTK between two blocks of inputs, ``I = (cache, g)`` and
    ``J = (cache, g)`` (``J is None``: the diagonal tile of a symmetric kernel, ``lower`` True, only
    entries ``j <= i`` need be right), into ``theta`` ``(B_I, B_J)`` (``trace``: the mean over the
    ``k`` outputs) or ``(B_I, B_J, k, k)``. Structured: products of signals and inputs, never the
    Jacobian.
``products(params, cache, g)``
    ``(G_W, G_b)``, shaped like ``(W, b)``: the raw products whose multiples by
    ``scales.grad_weight`` / ``grad_bias`` are the gradient of ``sum_i <g_i, y_i>`` (``m = 1``) with
    respect to the trained parameters (a dense layer: ``g^T x`` and ``sum_i g_i``). What real
    training steps on (:mod:`ntksolve.optimizers`).
``step(opt, i, params, cache, g)``
    One optimiser step of the leaf (``i`` its index among the network's leaves): the default
    calls ``opt.update_products(i, *products(...))``; a dense-like layer may call the optimiser's
    GEMM path ``opt.update(i, g2, x)`` instead.
``jacobian(params, cache, g)``
    ``(B, m, P_layer)``: the derivatives of ``sum <g, y>`` by the trained parameters, in the
    flattened order (checks and small problems only).
``analytic(state)``
    The layer's map of a :class:`KernelState` (the infinite-width NNGP and NTK); a ValueError naming
    the layer when it has none (a layer order without a kernel, a state it cannot take). A map may
    overwrite the state's matrices (the driver owns them; a layer that needs its input state again,
    a residual, copies it first), and of a symmetric state only the upper triangle ``j >= i`` is
    valid (every map is element-wise over pairs; the driver mirrors once at the end). The driver
    hands a map one cache-sized tile of pairs at a time (``state.serial``): run row kernels through
    :meth:`KernelState.rows`. A layer whose output is centred and independent of its input at
    infinite width (a Dense, a convolution) sets ``centred_output = True``: a residual block must
    end with one.
``get_config()``
    A JSON-serialisable dict with ``"type"`` (the class name) that :func:`layer_from_config`
    rebuilds it from; equality and hashing go through it.
``bind(parameterization)``
    The layer as the network with that parameterisation uses it (default: itself).

A composite layer (one holding a block of layers, :class:`~ntksolve.nets.residual.Residual`) has
``has_params = False``, a ``layers`` tuple, ``leaves()`` (its block's parametrised leaves, in order),
``leaf_shapes(input_shape)`` (``[(leaf, param_shapes), ...]``) and ``map_layers(fn)`` (itself with
``fn`` applied to every layer of its block). Its parameters are its block's list.

A layer with parameters also implements nothing else: the network's drivers
(:mod:`ntksolve.nets.network`, :mod:`ntksolve.kernels.network_empirical`, ...) do the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ntksolve._jit.threads import run_in_threads

Shape = Tuple[int, ...]


def identity_seed(B: int, shape: Shape, dtype) -> np.ndarray:
    """The identity seed at an output of per-example ``shape``: ``(B, m, *shape)``, ``m = prod(shape)``."""
    m = int(np.prod(shape))
    eye = np.eye(m, dtype=dtype).reshape((m,) + tuple(shape))
    return np.broadcast_to(eye[None], (B, m) + tuple(shape))


@dataclass(frozen=True)
class KernelState:
    """The infinite-width kernels at one layer boundary, for inputs ``X1`` (``N1``) and ``X2`` (``N2``).

    Attributes
    ----------
    nngp : ndarray, shape (N1, N2)
        ``K(x, x') = (1/n) sum_j E[h_j(x) h_j(x')]`` of the features there (at the network input the
        exact ``<x, x'> / d``).
    ntk : ndarray, shape (N1, N2)
        ``Theta(x, x')``, the kernel of the features' gradients by the parameters below (0 at the input).
    var1, var2 : ndarray, shapes (N1,), (N2,)
        The diagonals ``K(x, x)`` of the two sets of points.
    symmetric : bool
        ``X2`` is ``X1`` (the matrices are symmetric; a map may compute one triangle and mirror).
    shape : tuple of int
        The per-example shape of the features (a layer that needs a flat input checks it).
    at_input : bool
        No parametrised layer has acted yet: the features are the exact inputs, not Gaussian.
    pool : dict or None
        Reusable buffers of the driver's thread (:meth:`workspace`).
    depth : int
        The nesting of composite layers (part of the keys of their buffers in ``pool``).
    serial : bool
        The state is one tile of a driver that runs tiles on threads: run row kernels serially
        (:meth:`rows` does).
    gaussian : bool
        The features are mean-zero Gaussian processes (the output of a Dense, of a normalisation or
        sum of such): what an activation's map needs.
    mean_zero : bool
        The features are mean-zero with mean square ``var1`` / ``var2`` over the width (every
        ``gaussian`` state, and a Flatten of spatial pre-activations, Gaussian per position each
        with its own covariance, whose mean the state holds): what a normalisation's map needs.
    inputs : (ndarray, ndarray) or None
        The exact inputs ``(X1, X2)`` ``(N, *shape)`` of the first parametrised layer (while
        ``at_input``), for layers whose first map needs more than ``<x, x'> / d`` (convolutions).
    expect : callable or None
        ``expect(activation, state) -> state``, the element-wise activation map (Gaussian
        expectations), supplied by the driver that builds the state
        (:mod:`ntksolve.kernels.network_analytic`).
    """

    nngp: np.ndarray
    ntk: np.ndarray
    var1: np.ndarray
    var2: np.ndarray
    symmetric: bool
    shape: Shape
    at_input: bool = False
    expect: object = None
    gaussian: bool = False
    mean_zero: bool = False
    serial: bool = False
    pool: object = None
    depth: int = 0
    inputs: object = None

    def replace(self, **changes) -> "KernelState":
        """A copy with ``changes`` (the arrays are shared, not copied)."""
        # dataclasses.replace re-runs __init__: a tenth of a small tile's time over all its layers
        unknown = changes.keys() - self.__dataclass_fields__.keys()
        if unknown:
            raise TypeError(f"KernelState has no field(s) {', '.join(sorted(unknown))}")
        new = object.__new__(KernelState)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def workspace(self, key, like: np.ndarray) -> np.ndarray:
        """A buffer shaped like ``like`` for ``key`` (unique per use at this ``depth``): reused from tile
        to tile of one thread (fresh pages of a new array cost more than the maps), else new."""
        if self.pool is None:
            return np.empty_like(like)
        k = (key, self.depth, like.shape)
        buf = self.pool.get(k)
        if buf is None:
            buf = self.pool[k] = np.empty_like(like)
        return buf

    def rows(self, kernel, *args) -> None:
        """``kernel(*args, start, step)`` over the rows: on threads (:func:`ntksolve._jit.threads.run_in_threads`),
        or in one call for a tile (``serial``)."""
        if self.serial:
            kernel(*args, 0, 1)
        else:
            run_in_threads(kernel, *args)


class Layer:
    """Base class of a layer of a :class:`~ntksolve.nets.network.Network` (module docstring)."""

    #: A short name for messages ("Dense", "LayerNorm", ...); the class name by default.
    @property
    def name(self) -> str:
        return type(self).__name__

    # -- description ---------------------------------------------------------------------------
    def output_shape(self, input_shape: Shape) -> Shape:
        """Per-example output shape for a per-example ``input_shape`` (ValueError if it cannot take it)."""
        raise NotImplementedError

    def param_shapes(self, input_shape: Shape):
        """``()`` (no parameters) or ``(weight_shape, bias_shape)``."""
        return ()

    def scales(self, input_shape: Shape):
        """The :class:`~ntksolve.nets.layers.LayerScales` of a parametrised layer (None without parameters)."""
        return None

    def bind(self, parameterization: str) -> "Layer":
        """This layer as used by a network of ``parameterization``."""
        return self

    @property
    def has_infinite_width_limit(self) -> bool:
        """Whether the analytic kernels exist for this layer (as bound)."""
        return True

    #: Whether the layer itself has parameters (a pair ``(W, b)``).
    has_params: bool = False
    #: Whether its output is independent of (and uncorrelated with) its input at infinite width.
    centred_output: bool = False

    def leaves(self):
        """The layers whose parameters this one holds, in the flattened order (itself, or none)."""
        return (self,) if self.has_params else ()

    def get_config(self) -> dict:
        raise NotImplementedError

    def __eq__(self, other) -> bool:
        return isinstance(other, Layer) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.get_config().items())))

    # -- parameters ----------------------------------------------------------------------------
    def init(self, input_shape: Shape, rng: np.random.Generator, dtype):
        """``()`` or ``(W, b)`` drawn i.i.d. N(0, 1) in ``dtype``."""
        shapes = self.param_shapes(input_shape)
        return tuple(rng.standard_normal(s).astype(dtype, copy=False) for s in shapes)

    # -- passes --------------------------------------------------------------------------------
    def forward(self, params, x: np.ndarray, keep: bool):
        raise NotImplementedError

    def backward(self, params, cache, g: Optional[np.ndarray], signals: list, want_input: bool = True):
        raise NotImplementedError

    def step(self, opt, i, params, cache, g) -> None:
        """One optimiser step of this leaf from its signal ``g`` (``(B, 1, *output_shape)``)."""
        opt.update_products(i, *self.products(params, cache, g))

    def ntk_term(self, params, I, J, theta, trace: bool, lower: bool) -> None:
        raise NotImplementedError(f"{self.name} has no parameters and no NTK term")

    def products(self, params, cache, g):
        raise NotImplementedError(f"{self.name} has no parameters")

    def jacobian(self, params, cache, g):
        raise NotImplementedError(f"{self.name} has no parameters")

    def analytic(self, state: KernelState) -> KernelState:
        raise ValueError(f"{self.name} has no analytic (infinite-width) kernel; use the empirical kernels")


_REGISTRY = {}


def register_layer(cls):
    """Class decorator: make ``cls`` rebuildable by :func:`layer_from_config` from its ``"type"``
    (``cls.config_type``, default the class name), via ``cls.from_config(cfg without "type")``."""
    _REGISTRY[getattr(cls, "config_type", None) or cls.__name__] = cls
    return cls


def layer_from_config(cfg: dict) -> Layer:
    """The layer a :meth:`Layer.get_config` dict describes."""
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ValueError(f"a layer config must be a dict with a 'type' key, got {cfg!r}")
    kind = cfg["type"]
    if kind not in _REGISTRY:
        raise ValueError(f"unknown layer type {kind!r}; known types are {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[kind].from_config({k: v for k, v in cfg.items() if k != "type"})


__all__ = ["Layer", "KernelState", "identity_seed", "register_layer", "layer_from_config"]
