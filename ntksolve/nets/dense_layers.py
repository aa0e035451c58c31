"""The :class:`~ntksolve.nets.layers.Dense` and :class:`~ntksolve.nets.layers.Activation` specs as
layers of a :class:`~ntksolve.nets.network.Network` (the protocol of :mod:`ntksolve.nets.layer_protocol`).

A dense layer computes ``y = ws x W^T + bs b`` on flat inputs ``(B, n_in)``; its NTK term between
two blocks is that of ``docs/conventions.md``, ``<g, g'> (c <x, x'> + beta)`` with ``(c, beta)``
its :attr:`~ntksolve.nets.layers.LayerScales.ntk_coefficients` and ``g`` the signal at its output
(the identity at the readout, never formed). An activation is element-wise on any shape; its
backward multiplies by ``phi'(z)``. The numbers are those of :class:`~ntksolve.MLP`'s passes.
"""

from __future__ import annotations

import numpy as np

from ntksolve._blas import parallel_workers
from ntksolve._jit import empirical as _jit
from ntksolve._jit.network_analytic import dense_rows
from ntksolve._validation import check_forward_finite
from ntksolve.nets.gram_terms import LayerTerm, add_terms
from ntksolve.nets.layer_protocol import KernelState, Layer, identity_seed, register_layer
from ntksolve.nets.layers import Activation, Dense, check_activation


def add_dense_term(theta, c, beta, hI, gI, hJ, gJ, trace, lower) -> None:
    """``theta += <g, g'> (c <h, h'> + beta)`` between two blocks (``hJ is None``: the diagonal tile).

    ``h`` of shape (B, n_in), ``g`` of shape (B, k, n) or None (the identity). The one
    layer-term of every dense-like layer (the kernel of ``W`` and of ``b`` together), on threads
    (:mod:`ntksolve.nets.gram_terms`).
    """
    add_terms(theta, [LayerTerm(hI, hJ, gI, gJ, c, beta)], trace, lower, parallel_workers())


@register_layer
class DenseLayer(Layer):
    """A :class:`~ntksolve.nets.layers.Dense` spec in a network: ``y = ws x W^T + bs b``, ``x`` flat."""

    has_params = True
    config_type = "Dense"
    centred_output = True

    def __init__(self, spec: Dense) -> None:
        if not isinstance(spec, Dense):
            raise TypeError(f"spec must be a Dense, got {type(spec).__name__}")
        self.spec = spec
        self._scales = {}

    name = "Dense"

    def __repr__(self) -> str:
        return repr(self.spec)

    @property
    def has_infinite_width_limit(self) -> bool:
        return self.spec.has_infinite_width_limit

    def bind(self, parameterization: str) -> "DenseLayer":
        s = self.spec
        if s.parameterization == parameterization:
            return self
        if s.parameterization != "ntk":
            raise ValueError(
                f"{s!r} asks for parameterization={s.parameterization!r}, but the network's is "
                f"{parameterization!r}: a network has one parameterisation; set it on the Network"
            )
        return DenseLayer(Dense(s.width, s.weight_std, s.bias_std, parameterization, bias=s.bias))

    def get_config(self) -> dict:
        s = self.spec
        return {"type": "Dense", "width": s.width, "weight_std": s.weight_std, "bias_std": s.bias_std, "bias": s.bias}

    @classmethod
    def from_config(cls, cfg):
        return cls(Dense(cfg["width"], cfg["weight_std"], cfg["bias_std"], bias=cfg.get("bias", True)))

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense({self.spec.width}) needs a flat input (d,), got per-example shape "
                f"{tuple(input_shape)}: put Flatten() (or GlobalAvgPool()) before it"
            )
        return (self.spec.width,)

    def param_shapes(self, input_shape):
        self.output_shape(input_shape)  # a flat input, or the error pointing at Flatten
        return self.spec.param_shapes(int(input_shape[0]))

    def scales(self, input_shape):
        n_in = int(input_shape[0])
        s = self._scales.get(n_in)
        if s is None:
            s = self._scales[n_in] = self.spec.scales(n_in)
        return s

    def forward(self, params, x, keep):
        W, b = params
        s = self.scales(x.shape[1:])
        y = np.dot(x, W.T)
        y *= s.weight
        if self.spec.bias:
            y += s.bias * b
        return y, (x if keep else None)

    def backward(self, params, cache, g, signals, want_input=True):
        signals.append((self, params, cache, g))
        if not want_input:
            return None
        W = params[0]
        ws = W.dtype.type(self.scales(cache.shape[1:]).weight)
        if g is None:  # the identity seed: g_in[i, a, :] = ws W[a, :]
            return np.broadcast_to((ws * W)[None], (cache.shape[0],) + W.shape)
        B, m, n = g.shape
        below = np.dot(g.reshape(B * m, n), W).reshape(B, m, W.shape[1])
        below *= ws
        return below

    def ntk_term(self, params, I, J, theta, trace, lower):
        c, beta = self.scales(I[0].shape[1:]).ntk_coefficients
        add_dense_term(
            theta, c, beta, I[0], I[1], None if J is None else J[0], None if J is None else J[1], trace, lower
        )

    def products(self, params, cache, g):
        g2 = g.reshape(g.shape[0], g.shape[-1])
        return np.dot(g2.T, cache), (g2.sum(axis=0) if self.spec.bias else np.zeros(0, dtype=g.dtype))

    def step(self, opt, i, params, cache, g):
        """One optimiser step of this layer: the dense fast path of the optimisers."""
        opt.update(i, g.reshape(g.shape[0], g.shape[-1]), cache)

    def jacobian(self, params, cache, g):
        x = cache
        B, n_in = x.shape
        if g is None:
            g = identity_seed(B, (self.spec.width,), x.dtype)
        s = self.scales(x.shape[1:])
        m = g.shape[1]
        cols = [(s.grad_weight * g[:, :, :, None] * x[:, None, None, :]).reshape(B, m, -1)]
        if self.spec.bias:
            cols.append(s.grad_bias * g)
        return np.concatenate(cols, axis=2)

    def analytic(self, state: KernelState) -> KernelState:
        if len(state.shape) != 1:
            self.output_shape(state.shape)  # raises the flat-input error
        sw2, sb2 = self.spec.weight_std**2, self.spec.forward_bias_std**2
        state.rows(dense_rows, state.nngp, state.ntk, sw2, sb2, state.symmetric)
        with np.errstate(over="ignore"):  # an infinite variance is refused by the next map's check
            var1 = sw2 * state.var1 + sb2
            var2 = var1 if state.symmetric else sw2 * state.var2 + sb2
        return state.replace(
            var1=var1, var2=var2, shape=(self.spec.width,), at_input=False, gaussian=True, mean_zero=True, inputs=None
        )


@register_layer
class ActivationLayer(Layer):
    """An :class:`~ntksolve.nets.layers.Activation` in a network: ``y = phi(x)`` element-wise, any shape."""

    config_type = "Activation"

    def __init__(self, spec) -> None:
        self.spec = spec if isinstance(spec, Activation) else check_activation(spec)

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return repr(self.spec)

    def get_config(self) -> dict:
        return {"type": "Activation", "activation": self.spec.name}

    @classmethod
    def from_config(cls, cfg):
        return cls(Activation(cfg["activation"]))

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, params, x, keep):
        B = x.shape[0]
        x2 = np.ascontiguousarray(x).reshape(B, -1)
        h = np.empty_like(x2)
        dphi = np.empty_like(x2) if keep else h  # not written without keep
        zero = np.zeros(x2.shape[1], dtype=x2.dtype)
        one = x2.dtype.type(1.0)
        finite = _jit.bias_act(x2, zero, one, x2.dtype.type(0.0), self.spec.code, self.spec.params, h, dphi, keep)
        check_forward_finite(finite, f"inputs of a {self.spec.name} activation layer", x2.dtype)
        return h.reshape(x.shape), (dphi.reshape(x.shape) if keep else None)

    def backward(self, params, cache, g, signals, want_input=True):
        if not want_input:
            return None
        if g is None:
            g = identity_seed(cache.shape[0], cache.shape[1:], cache.dtype)
        return np.multiply(g, cache[:, None])

    def analytic(self, state: KernelState) -> KernelState:
        if state.expect is None:
            raise ValueError(
                "this kernel state carries no activation maps: build it with ntksolve.kernels.network_analytic"
            )
        return state.expect(self.spec, state)


__all__ = ["DenseLayer", "ActivationLayer", "add_dense_term"]
