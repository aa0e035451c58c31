"""A residual (skip) connection around a block of layers: ``y = x + scale * block(x)``.

neural-tangents spells it ``serial(FanOut(2), parallel(Identity(), block), FanInSum())``, with the
scale folded into the block's last layer (``Residual(block, scale=s)`` is the block whose last
Dense has ``s`` times its ``weight_std`` and ``bias_std``). Backward, the signal at the input is
``g + scale * block^T(g)``; the block's leaves see ``scale * g`` at its output. Analytic kernels:
the two branches are independent at infinite width when the block ends with a layer whose output
is centred and independent of its input's sign (a Dense: zero-mean weights), so
``K -> K + s^2 K_block``, ``Theta -> Theta + s^2 Theta_block``; any other last layer is refused there.
"""

from __future__ import annotations

import numbers

import numpy as np

from ntksolve._jit.network_analytic import add_rows
from ntksolve.nets.layer_protocol import KernelState, Layer, identity_seed, layer_from_config, register_layer
from ntksolve.nets.network import as_layer


@register_layer
class Residual(Layer):
    """``y = x + scale * block(x)``: a skip connection around ``block`` (whose output keeps the shape).

    Parameters
    ----------
    block : layer or sequence of layers
        As in :class:`~ntksolve.nets.network.Network` (at least one with parameters).
    scale : float, default 1.0
        The factor on the branch.
    """

    def __init__(self, block, scale: float = 1.0) -> None:
        if isinstance(block, (str, Layer)) or not hasattr(block, "__iter__"):
            block = [block]
        self.layers = tuple(as_layer(b) for b in block)
        if not self.layers or not any(layer.leaves() for layer in self.layers):
            raise ValueError(
                "a Residual block needs at least one layer with parameters, e.g. "
                "Residual([Dense(512), 'relu', Dense(512)])"
            )
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not np.isfinite(scale):
            raise ValueError(f"scale must be a finite real number, got {scale!r}")
        self.scale = float(scale)

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Residual([{inner}]{'' if self.scale == 1.0 else f', scale={self.scale!r}'})"

    def get_config(self) -> dict:
        return {"type": "Residual", "block": [layer.get_config() for layer in self.layers], "scale": self.scale}

    @classmethod
    def from_config(cls, cfg):
        return cls([layer_from_config(c) for c in cfg["block"]], cfg.get("scale", 1.0))

    def bind(self, parameterization):
        return self.map_layers(lambda layer: layer.bind(parameterization))

    def map_layers(self, fn) -> "Residual":
        out = Residual.__new__(Residual)
        out.layers = tuple(as_layer(fn(layer)) for layer in self.layers)
        out.scale = self.scale
        return out

    @property
    def has_infinite_width_limit(self) -> bool:
        return all(leaf.has_infinite_width_limit for leaf in self.leaves())

    def leaves(self):
        return tuple(leaf for layer in self.layers for leaf in layer.leaves())

    def _shapes(self, input_shape):
        shapes = [tuple(input_shape)]
        for layer in self.layers:
            shapes.append(tuple(layer.output_shape(shapes[-1])))
        return shapes

    def output_shape(self, input_shape):
        out = self._shapes(input_shape)[-1]
        if out != tuple(input_shape):
            raise ValueError(
                f"a residual block must keep the shape of its input: this one maps {tuple(input_shape)} "
                f"to {out} (make its last layer as wide as its input)"
            )
        return out

    def leaf_shapes(self, input_shape):
        out = []
        for layer, s in zip(self.layers, self._shapes(input_shape)):
            if layer.has_params:
                out.append((layer, layer.param_shapes(s)))
            elif layer.leaves():
                out.extend(layer.leaf_shapes(s))
        return out

    def init(self, input_shape, rng, dtype):
        return [layer.init(s, rng, dtype) for layer, s in zip(self.layers, self._shapes(input_shape))]

    def forward(self, params, x, keep):
        h = x
        caches = []
        for layer, p in zip(self.layers, params):
            h, c = layer.forward(p, h, keep)
            caches.append(c)
        y = x + self.scale * h if self.scale != 1.0 else x + h
        return y, ((x.shape, x.dtype, caches) if keep else None)

    def backward(self, params, cache, g, signals, want_input=True):
        shape, dtype, caches = cache
        B = shape[0]
        gb = g
        if self.scale != 1.0:
            gb = self.scale * (identity_seed(B, shape[1:], dtype) if g is None else g)
        layers = self.layers
        stop = 0 if want_input else next(i for i, layer in enumerate(layers) if layer.leaves())
        for i in range(len(layers) - 1, stop - 1, -1):
            gb = layers[i].backward(params[i], caches[i], gb, signals, want_input=want_input or i > stop)
        if not want_input:
            return None
        return (identity_seed(B, shape[1:], dtype) if g is None else g) + gb

    def analytic(self, state: KernelState) -> KernelState:
        last = self.layers[-1]
        if not last.centred_output:
            raise ValueError(
                f"the analytic kernel of a Residual needs its block to end with a Dense (whose output is "
                f"independent of the skip path at infinite width); this block ends with {last.name}"
            )
        # the maps overwrite their state: the block works on a copy, the skip path keeps the original
        K, T = state.workspace("residual K", state.nngp), state.workspace("residual T", state.ntk)
        np.copyto(K, state.nngp)
        np.copyto(T, state.ntk)
        inner = state.replace(nngp=K, ntk=T, depth=state.depth + 1)
        for layer in self.layers:
            inner = layer.analytic(inner)
        s2 = self.scale**2
        state.rows(add_rows, state.nngp, state.ntk, inner.nngp, inner.ntk, s2, state.symmetric)
        var1 = state.var1 + s2 * inner.var1
        return state.replace(
            var1=var1,
            var2=var1 if state.symmetric else state.var2 + s2 * inner.var2,
            at_input=False,
            inputs=None,
            gaussian=state.gaussian and inner.gaussian,
            mean_zero=state.mean_zero and inner.mean_zero,
            depth=state.depth,
        )


__all__ = ["Residual"]
