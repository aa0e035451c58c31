"""A sequential network spec made of layers: :class:`Network`, its parameters and its two passes.

``Network([Dense(512, weight_std=1.5), "relu", Dense(512, bias=False), "erf", Dense(1)])`` is a
network whose every layer has its own settings; the layers are those of the protocol of
:mod:`ntksolve.nets.layer_protocol` (which documents it for writers of new layers):
:class:`~ntksolve.nets.layers.Dense`, the element-wise activations (an
:class:`~ntksolve.nets.layers.Activation` or its spelling), :class:`~ntksolve.nets.residual.Residual`,
:class:`~ntksolve.nets.normalization.LayerNorm`, and any :class:`~ntksolve.nets.layer_protocol.Layer`.
Inputs are arrays ``(N, *input_shape)``; the output must be flat, ``(N, k)``.

One parameterisation for the whole network (``"ntk"`` or ``"standard"``, :mod:`ntksolve.nets.layers`)
is applied to every parametrised layer. :class:`~ntksolve.MLP` stays the short spelling of the
common case with its own (fused) passes: :meth:`Network.from_mlp` gives the equal network and
:meth:`Network.as_mlp` the MLP of a network that is one, through which every public function
runs such a network (so it has exactly the MLP's kernels, trajectories and speed).

Parameters are a list with one entry per layer: ``()`` for a layer without parameters, a pair
``(W, b)``, or a list (a composite layer's block). :func:`forward` returns the output and the
layers' caches; :func:`backward` pulls a seed back and returns, for every parametrised leaf, top
first, ``(layer, params, cache, g)`` with ``g`` the signal at its output.
"""

from __future__ import annotations

import numbers
from typing import List, Optional, Tuple

import numpy as np

from ntksolve._validation import check_dtype, check_inputs
from ntksolve.nets.dense_layers import ActivationLayer, DenseLayer
from ntksolve.nets.layer_protocol import Layer, layer_from_config
from ntksolve.nets.layers import PARAMETERIZATIONS, Activation, Dense
from ntksolve.nets.mlp import MLP, _as_generator


def as_layer(spec, parameterization=None) -> Layer:
    """The protocol layer of ``spec`` (a Layer, a Dense, an Activation or a spelling), bound to
    ``parameterization`` when one is given."""
    if isinstance(spec, Layer):
        layer = spec
    elif isinstance(spec, Dense):
        layer = DenseLayer(spec)
    elif isinstance(spec, (Activation, str)):
        layer = ActivationLayer(spec)
    else:
        raise TypeError(
            f"a network layer must be a Dense, an activation (e.g. 'relu'), a Residual, a "
            f"LayerNorm or another ntksolve Layer, got {type(spec).__name__} {spec!r}"
        )
    return layer if parameterization is None else layer.bind(parameterization)


def as_shape(input_shape) -> Tuple[int, ...]:
    """A per-example input shape from an int ``d`` or a tuple of positive ints."""
    if isinstance(input_shape, numbers.Integral) and not isinstance(input_shape, bool):
        input_shape = (int(input_shape),)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(
            f"input_shape must be an int d or a tuple such as (d,) or (H, W, C), got {input_shape!r}"
        ) from None
    if not shape or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    return tuple(int(n) for n in shape)


def _flat_leaves(params, layers):
    """``[(leaf, (W, b)), ...]`` in the flattened order."""
    out = []
    for layer, p in zip(layers, params):
        if hasattr(layer, "layers") and not layer.has_params:  # a composite: its block's params list
            out.extend(_flat_leaves(p, layer.layers))
        elif layer.has_params:
            out.append((layer, p))
    return out


def _check_entries(params, layers, where: str) -> None:
    """``()`` for each layer without parameters and a list of its block's entries for a composite
    (else ignored: a ``gamma`` given to ``LayerNorm(affine=False)``, an extra entry of a block)."""
    for i, (layer, p) in enumerate(zip(layers, params)):
        name, seq = f"{where}{i} ({layer.name})", isinstance(p, (list, tuple))
        if hasattr(layer, "layers") and not layer.has_params:
            if not seq or len(p) != len(layer.layers):
                raise ValueError(
                    f"params of layer {name} must be a list of {len(layer.layers)} entries (one per layer of its "
                    f"block), got {f'{len(p)} entries' if seq else type(p).__name__}; create them with net.init"
                )
            _check_entries(p, layer.layers, f"{name}, layer ")
        elif not layer.has_params and not (seq and len(p) == 0):
            raise ValueError(
                f"layer {name} has no parameters, so its entry of params must be (), got {type(p).__name__} "
                f"of length {len(p) if hasattr(p, '__len__') else '?'}; create the params with net.init"
            )


class Network:
    """A sequential network: ``f = layer_n(…(layer_1(x)))``.

    Parameters
    ----------
    layers : sequence
        The layers, input first: :class:`~ntksolve.nets.layers.Dense` (per-layer ``width``,
        ``weight_std``, ``bias_std``, ``bias``), activations (``"relu"``, ``Activation("gelu")``),
        :class:`~ntksolve.nets.residual.Residual`, :class:`~ntksolve.nets.normalization.LayerNorm`, ...
        At least one must have parameters.
    parameterization : {"ntk", "standard"}, default "ntk"
        Applied to every parametrised layer (a Dense given another one explicitly is refused).

    Attributes
    ----------
    layers : tuple of Layer
        The protocol layers (a Dense as :class:`~ntksolve.nets.dense_layers.DenseLayer`, whose
        ``spec`` is the Dense).

    Examples
    --------
    >>> net = Network([Dense(256, weight_std=1.4), "relu", Dense(256, bias=False), "tanh", Dense(2)])
    >>> params = net.init(8, random_state=0)
    >>> net.apply(params, np.ones((3, 8))).shape
    (3, 2)
    """

    def __init__(self, layers, *, parameterization: str = "ntk") -> None:
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"unknown parameterization {parameterization!r}; valid values are {', '.join(PARAMETERIZATIONS)}"
            )
        if isinstance(layers, (str, Layer, Dense, Activation)):
            layers = [layers]
        try:
            given = list(layers)
        except TypeError:
            raise TypeError(f"layers must be a sequence of layers, got {type(layers).__name__}") from None
        if not given:
            raise ValueError("a Network needs at least one layer, e.g. Network([Dense(512), 'relu', Dense(1)])")
        self.parameterization = parameterization
        self.layers: Tuple[Layer, ...] = tuple(as_layer(s, parameterization) for s in given)
        if not any(layer.leaves() for layer in self.layers):
            raise ValueError(
                "this network has no parameters (no Dense or other parametrised layer), so no NTK; add a Dense layer"
            )
        self._shapes = {}

    # -- description ---------------------------------------------------------------------------
    def get_config(self) -> dict:
        """A JSON-serialisable dict; :meth:`from_config` rebuilds the network."""
        return {"layers": [layer.get_config() for layer in self.layers], "parameterization": self.parameterization}

    @classmethod
    def from_config(cls, cfg: dict) -> "Network":
        return cls([layer_from_config(c) for c in cfg["layers"]], parameterization=cfg.get("parameterization", "ntk"))

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        extra = "" if self.parameterization == "ntk" else f", parameterization={self.parameterization!r}"
        return f"Network([{inner}]{extra})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Network) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(repr(self.get_config()))

    @property
    def supports_analytic(self) -> bool:
        """Whether the infinite-width kernels can exist (NTK parameterisation everywhere)."""
        return all(leaf.has_infinite_width_limit for layer in self.layers for leaf in layer.leaves())

    def shapes(self, input_shape) -> Tuple[Tuple[int, ...], ...]:
        """Per-example shapes at every layer boundary: ``(input_shape, after layer 1, ..., output)``."""
        shape = as_shape(input_shape)
        cached = self._shapes.get(shape)
        if cached is None:
            out = [shape]
            for i, layer in enumerate(self.layers):
                try:
                    out.append(tuple(layer.output_shape(out[-1])))
                except ValueError as exc:
                    raise ValueError(f"layer {i} ({layer.name}): {exc}") from None
            if len(out[-1]) != 1:
                raise ValueError(
                    f"the network's output must be flat (k,), got per-example shape {out[-1]}: "
                    "end it with Flatten()/GlobalAvgPool() and a Dense"
                )
            cached = self._shapes[shape] = tuple(out)
        return cached

    def output_shape(self, input_shape) -> Tuple[int, ...]:
        """The per-example output shape ``(k,)`` for inputs of per-example ``input_shape``."""
        return self.shapes(input_shape)[-1]

    @property
    def n_outputs(self) -> int:
        """``k``: the width of the last Dense (the layers after it keep the shape); a ValueError for
        a network whose output width depends on its input (use :meth:`output_shape`)."""
        for layer in reversed(self.layers):
            if isinstance(layer, DenseLayer):
                return layer.spec.width
            try:
                if layer.output_shape((7, 5, 3)) != (7, 5, 3):
                    break
            except ValueError:
                break
        raise ValueError("this network's output width depends on its input shape: use net.output_shape(input_shape)")

    def leaves(self):
        """The parametrised layers in the flattened order (inside composite layers too)."""
        return tuple(leaf for layer in self.layers for leaf in layer.leaves())

    def n_params(self, input_shape) -> int:
        """``P``, the number of trainable parameters."""
        return sum(int(np.prod(s)) for _, shapes in self._leaf_shapes(input_shape) for s in shapes)

    def _leaf_shapes(self, input_shape):
        """``[(leaf, (W shape, b shape)), ...]`` with the leaves' input shapes resolved."""
        out = []
        shapes = self.shapes(input_shape)
        for layer, s_in in zip(self.layers, shapes):
            if layer.has_params:
                out.append((layer, layer.param_shapes(s_in)))
            elif layer.leaves():
                out.extend(layer.leaf_shapes(s_in))
        return out

    # -- parameters ----------------------------------------------------------------------------
    def init(self, input_shape, random_state=None, dtype=np.float64) -> list:
        """Draw the parameters (each layer's :meth:`~ntksolve.nets.layer_protocol.Layer.init`).

        Parameters
        ----------
        input_shape : int or tuple of int
            ``d`` or the per-example shape, e.g. ``(H, W, C)``.
        random_state : None, int, Generator or RandomState
        dtype : float64 (default) or float32

        Returns
        -------
        params : list, one entry per layer (``()``, ``(W, b)``, or a block's list)
        """
        shapes = self.shapes(input_shape)
        dt = check_dtype(dtype)
        rng = _as_generator(random_state)
        return [layer.init(s, rng, dt) for layer, s in zip(self.layers, shapes)]

    def check_params(self, params, input_shape) -> np.dtype:
        """Validate ``params`` against the layers at ``input_shape``; return their dtype."""
        if not isinstance(params, (list, tuple)) or len(params) != len(self.layers):
            raise ValueError(
                f"params must be a list of {len(self.layers)} entries (one per layer); create them "
                f"with net.init(input_shape)"
            )
        _check_entries(params, self.layers, "")
        leaves = _flat_leaves(params, self.layers)
        expected = self._leaf_shapes(input_shape)
        if len(leaves) != len(expected):
            raise ValueError("params do not match the network's layers; create them with net.init(input_shape)")
        dt = None
        for i, ((leaf, pair), (_, shapes)) in enumerate(zip(leaves, expected)):
            if not isinstance(pair, (list, tuple)) or len(pair) != len(shapes):
                raise ValueError(f"parametrised layer {i} ({leaf.name}) needs a (W, b) pair, got {type(pair).__name__}")
            for arr, shape in zip(pair, shapes):
                if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
                    got = getattr(arr, "shape", type(arr).__name__)
                    raise ValueError(
                        f"parametrised layer {i} ({leaf.name}): expected shapes {tuple(shapes)}, got "
                        f"{got} (for inputs of per-example shape {as_shape(input_shape)})"
                    )
                if dt is None:
                    dt = arr.dtype
                    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
                        raise ValueError(f"parameters must be float64 or float32, got {dt}")
                elif arr.dtype != dt:
                    raise ValueError(f"all parameters must share one dtype ({dt}); layer {i} ({leaf.name}) differs")
                if not np.isfinite(arr.sum()) and not np.all(np.isfinite(arr)):
                    raise ValueError(f"parametrised layer {i} ({leaf.name}) has NaN or infinite parameters")
        return dt

    def flatten_params(self, params) -> np.ndarray:
        """All parameters as one vector ``(P,)`` in the Jacobian's order (leaves in order, ``W`` then ``b``)."""
        return np.concatenate([np.ravel(a) for _, pair in _flat_leaves(params, self.layers) for a in pair])

    def unflatten_params(self, theta, input_shape) -> list:
        """Inverse of :meth:`flatten_params`."""
        theta = np.asarray(theta)
        P = self.n_params(input_shape)
        if theta.shape != (P,):
            raise ValueError(f"theta must have shape ({P},), got {theta.shape}")
        template = self.init(input_shape, random_state=0, dtype=theta.dtype)
        pos = [0]

        def fill(params, layers):
            out = []
            for layer, p in zip(layers, params):
                if layer.has_params:
                    pair = []
                    for a in p:
                        pair.append(theta[pos[0] : pos[0] + a.size].reshape(a.shape).copy())
                        pos[0] += a.size
                    out.append(tuple(pair))
                elif layer.leaves():
                    out.append(fill(p, layer.layers))
                else:
                    out.append(())
            return out

        return fill(template, self.layers)

    def trainable(self) -> "Network":
        """This network, or one that trains identically and whose stored parameters carry the trained
        ones (standard parameterisation with ``bias_std = 0``; see :meth:`MLP.trainable`)."""
        if all(stores_trained_bias(leaf) for leaf in self.leaves()):
            return self
        return Network([_with_bias_std_one(layer) for layer in self.layers], parameterization=self.parameterization)

    # -- the MLP ---------------------------------------------------------------------------------
    @classmethod
    def from_mlp(cls, mlp: MLP) -> "Network":
        """The network of ``mlp``'s layers (parameters: :meth:`params_from_mlp`)."""
        if not isinstance(mlp, MLP):
            raise TypeError(f"mlp must be an ntksolve.MLP, got {type(mlp).__name__}")
        layers: list = []
        for dense in mlp.layers[:-1]:
            layers += [Dense(dense.width, dense.weight_std, dense.bias_std, bias=dense.bias), mlp.phi]
        last = mlp.layers[-1]
        layers.append(Dense(last.width, last.weight_std, last.bias_std, bias=last.bias))
        return cls(layers, parameterization=mlp.parameterization)

    def as_mlp(self) -> Optional[MLP]:
        """The :class:`~ntksolve.MLP` this network is (Dense and one activation alternating, every Dense
        with the same ``weight_std`` and ``bias_std``), else None."""
        layers = self.layers
        if len(layers) % 2 == 0 or not all(isinstance(l, DenseLayer) for l in layers[::2]):
            return None
        acts = layers[1::2]
        if not all(isinstance(a, ActivationLayer) for a in acts) or len({a.spec for a in acts}) > 1:
            return None
        specs = [l.spec for l in layers[::2]]
        if len({(s.weight_std, s.bias_std) for s in specs}) > 1:
            return None
        return MLP(
            tuple(s.width for s in specs[:-1]),
            acts[0].spec.name if acts else "relu",
            specs[0].weight_std,
            specs[0].bias_std,
            self.parameterization,
            specs[-1].width,
            tuple(s.bias for s in specs),
        )

    @staticmethod
    def params_from_mlp(params) -> list:
        """An MLP's ``[(W, b), ...]`` as the equal network's parameters (the same arrays)."""
        out = []
        for i, pair in enumerate(params):
            if i:
                out.append(())
            out.append(tuple(pair))
        return out

    @staticmethod
    def params_to_mlp(params) -> list:
        """Inverse of :meth:`params_from_mlp` (for a network that :meth:`as_mlp` is)."""
        return [tuple(p) for p in params[::2]]

    # -- forward ---------------------------------------------------------------------------------
    def apply(self, params, X) -> np.ndarray:
        """Network outputs ``f(X)``, shape ``(N, k)``, for ``X`` of shape ``(N, *input_shape)``."""
        X, dt = prepare_inputs(self, params, X)
        return forward(self, params, X, keep=False)[0]


def stores_trained_bias(leaf) -> bool:
    """Whether a parametrised leaf's stored ``b`` carries its trained bias (a Dense's spec, or any leaf's
    ``stores_trained_bias``, a convolution's; True for a leaf without one)."""
    return bool(getattr(leaf.spec if isinstance(leaf, DenseLayer) else leaf, "stores_trained_bias", True))


def _with_bias_std_one(layer):
    if isinstance(layer, DenseLayer) and not layer.spec.stores_trained_bias:
        s = layer.spec
        return DenseLayer(Dense(s.width, s.weight_std, 1.0, s.parameterization, bias=s.bias))
    if layer.has_params and not stores_trained_bias(layer):
        # any other leaf with a bias_std (a convolution): the same layer rebuilt with bias_std = 1
        return layer_from_config({**layer.get_config(), "bias_std": 1.0})
    if hasattr(layer, "map_layers"):
        return layer.map_layers(_with_bias_std_one)
    return layer


def accepts_network(network_fn, *, with_params: bool = True):
    """Decorator: the one place where a public function of an :class:`~ntksolve.MLP` also takes a
    :class:`Network` (``fn(net, [params,] ...)``).

    A Network that is an MLP (:meth:`Network.as_mlp`) runs on the MLP's function, with its
    parameters converted (:meth:`Network.params_to_mlp`), so it gets exactly the MLP's numbers and
    speed; any other Network runs on ``network_fn``. A result that holds the MLP and its parameters
    (and the ``.result`` of an error) is converted back by ``network_fn.from_mlp_result(result,
    net)`` when ``network_fn`` has one.
    """
    import functools

    def wrap(mlp_fn):
        @functools.wraps(mlp_fn)
        def dispatch(net, *args, **kwargs):
            if not isinstance(net, Network):
                return mlp_fn(net, *args, **kwargs)
            mlp = net.as_mlp()
            if mlp is not None and (not with_params or _mlp_shaped(args, kwargs)):
                if with_params:
                    args = _with_mlp_params(args, kwargs)
                    kwargs = {k: v for k, v in kwargs.items() if k != "params"}
                back = getattr(network_fn, "from_mlp_result", None)
                try:
                    out = mlp_fn(mlp, *args, **kwargs)
                except Exception as exc:  # an error carrying a partial result (a diverged training)
                    if back is not None and hasattr(exc, "result"):
                        exc.result = back(exc.result, net)
                    raise
                return out if back is None else back(out, net)
            return network_fn(net, *args, **kwargs)

        return dispatch

    return wrap


def _params_arg(args, kwargs):
    return kwargs["params"] if "params" in kwargs else (args[0] if args else None)


def _mlp_shaped(args, kwargs) -> bool:
    params = _params_arg(args, kwargs)
    return (
        isinstance(params, (list, tuple))
        and len(params) % 2 == 1
        and all(isinstance(p, tuple) and p == () for p in params[1::2])
    )


def _with_mlp_params(args, kwargs):
    converted = Network.params_to_mlp(_params_arg(args, kwargs))
    return (converted,) + tuple(args[1:]) if "params" not in kwargs else (converted,) + tuple(args)


def check_network(net) -> Network:
    if not isinstance(net, Network):
        raise TypeError(f"net must be an ntksolve Network, got {type(net).__name__}")
    return net


def flat_rows(arr) -> np.ndarray:
    """``arr`` ``(N, *shape)`` as ``(N, prod(shape))`` rows: for ``N = 0`` too, which ``-1`` cannot
    infer (so that the check of the rows, not the reshape, names the problem)."""
    return np.reshape(arr, (arr.shape[0], int(np.prod(arr.shape[1:]))))


def prepare_inputs(net: Network, params, X, name: str = "X", input_shape=None):
    """Validated C-contiguous ``X`` ``(N, *input_shape)`` in the parameters' dtype, and that dtype."""
    arr = np.asarray(X) if not hasattr(X, "shape") else X
    if getattr(arr, "ndim", 0) < 2:
        raise ValueError(f"{name} must have shape (N, *input_shape), got shape {getattr(arr, 'shape', None)}")
    shape = tuple(arr.shape[1:]) if input_shape is None else as_shape(input_shape)
    if tuple(arr.shape[1:]) != shape:
        raise ValueError(f"{name} has per-example shape {tuple(arr.shape[1:])}, expected {shape}")
    dt = net.check_params(params, shape)
    net.shapes(shape)
    flat = check_inputs(flat_rows(arr), name=name, dtype=dt)
    return flat.reshape((arr.shape[0],) + shape), dt


def forward(net, params, X: np.ndarray, *, keep: bool = True):
    """The forward pass over validated inputs ``(B, *input_shape)``.

    Returns
    -------
    f : ndarray, shape (B, k)
    caches : list
        One cache per layer (None entries without ``keep``).
    """
    caches = []
    h = X
    for layer, p in zip(net.layers, params):
        h, cache = layer.forward(p, h, keep)
        caches.append(cache)
    return h, caches


def backward(net, params, caches, seed: Optional[np.ndarray] = None) -> List[tuple]:
    """Pull ``seed`` (``(B, m, k)``; None: the identity, ``m = k``) back through the layers.

    Returns
    -------
    signals : list of (leaf, params, cache, g)
        One entry per parametrised leaf, top first; ``g`` the signal at its output,
        ``(B, m, *output_shape)`` or None (the identity at the readout).
    """
    signals: list = []
    layers = net.layers
    first = next(i for i, layer in enumerate(layers) if layer.leaves())
    g = seed
    for i in range(len(layers) - 1, first - 1, -1):
        g = layers[i].backward(params[i], caches[i], g, signals, want_input=i > first)
    return signals


__all__ = [
    "Network",
    "accepts_network",
    "as_layer",
    "as_shape",
    "forward",
    "backward",
    "check_network",
    "flat_rows",
    "prepare_inputs",
    "stores_trained_bias",
]
