"""Layer normalisation over the features (the last axis): ``y = gamma * (x - mean) / sqrt(var + eps) + beta``.

Per example, ``mean`` and ``var`` (biased, as PyTorch's ``nn.LayerNorm``) are over the last axis
(all features of a flat input, the channels of an image). With ``affine=False`` (neural-tangents'
``stax.LayerNorm``) there are no parameters. With ``affine=True`` (PyTorch's
``elementwise_affine``) ``gamma`` (initialised to 1) and ``beta`` (to 0) are trained, as they are
stored, in both parameterisations (no fan-in enters them), and add their own NTK term

    sum_f g_f(x) g_f(x') (xhat_f(x) xhat_f(x') + 1)

with ``g`` the signal at the layer's output (the gradients of ``y_f`` are ``xhat_f`` and 1).
Backward (``xhat = (x - mean) r``, ``r = 1 / sqrt(var + eps)``, ``u = gamma g``)::

    g_in = r (u - mean_f(u) - xhat mean_f(u xhat))

The analytic map (neural-tangents'): ``K -> K / sqrt((K11 + eps)(K22 + eps))`` and the NTK alike,
for the layer's parameter-free form only.
"""

from __future__ import annotations

import numbers

import numpy as np

from ntksolve._jit.network_analytic import scale_rows
from ntksolve._jit.normalization import layer_norm_backward, layer_norm_forward
from ntksolve.nets.layer_protocol import KernelState, Layer, identity_seed, register_layer
from ntksolve.nets.layers import LayerScales

_UNIT = LayerScales(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)


@register_layer
class LayerNorm(Layer):
    """Normalisation over the last axis of each example.

    Parameters
    ----------
    eps : float, default 1e-5
        Added to the variance (PyTorch's default).
    affine : bool, default False
        Trained per-feature ``gamma`` and ``beta`` (PyTorch's ``elementwise_affine``); ``False`` is
        the parameter-free layer of neural-tangents, the only one with analytic kernels here.
    """

    normalizes = True

    def __init__(self, eps: float = 1e-5, affine: bool = False) -> None:
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (np.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be a finite non-negative number, got {eps!r}")
        if not isinstance(affine, (bool, np.bool_)):
            raise TypeError(f"affine must be True or False, got {affine!r}")
        self.eps = float(eps)
        self.affine = bool(affine)
        self.has_params = self.affine

    def __repr__(self) -> str:
        return f"LayerNorm(eps={self.eps!r}{', affine=True' if self.affine else ''})"

    def get_config(self) -> dict:
        return {"type": "LayerNorm", "eps": self.eps, "affine": self.affine}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.get("eps", 1e-5), cfg.get("affine", False))

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def param_shapes(self, input_shape):
        n = int(input_shape[-1])
        return ((n,), (n,)) if self.affine else ()

    def scales(self, input_shape):
        return _UNIT if self.affine else None

    def init(self, input_shape, rng, dtype):
        if not self.affine:
            return ()
        n = int(input_shape[-1])
        return np.ones(n, dtype=dtype), np.zeros(n, dtype=dtype)

    def forward(self, params, x, keep):
        n = x.shape[-1]
        x2 = np.ascontiguousarray(x).reshape(-1, n)
        xhat = np.empty_like(x2)
        r = np.empty(x2.shape[0], dtype=x.dtype)
        try:
            layer_norm_forward(x2, x.dtype.type(self.eps), xhat, r)
        except ZeroDivisionError:  # only eps = 0 (in x's dtype) and a row of equal features divide by zero
            raise self._zero_variance_error() from None
        xhat = xhat.reshape(x.shape)
        if self.affine:
            y = xhat * params[0]
            y += params[1]
        else:
            y = xhat
        return y, ((xhat, r.reshape(x.shape[:-1])) if keep else None)

    def backward(self, params, cache, g, signals, want_input=True):
        xhat, r = cache
        if self.affine:
            signals.append((self, params, cache, g))
        if not want_input:
            return None
        if g is None:
            g = identity_seed(xhat.shape[0], xhat.shape[1:], xhat.dtype)
        u = g * params[0] if self.affine else g
        B, m = u.shape[:2]
        n = xhat.shape[-1]
        P = int(np.prod(xhat.shape[1:-1], dtype=np.int64))  # positions of an image (1 for flat features)
        # rows (example, position), each with its m signals: (B P, m, n)
        u3 = np.ascontiguousarray(np.moveaxis(np.reshape(u, (B, m, P, n)), 1, 2)).reshape(B * P, m, n)
        out = np.empty_like(u3)
        layer_norm_backward(
            u3, np.ascontiguousarray(xhat).reshape(B * P, n), np.ascontiguousarray(r).reshape(B * P), out
        )
        if P == 1:
            return out.reshape((B, m) + xhat.shape[1:])
        return np.moveaxis(out.reshape(B, P, m, n), 2, 1).reshape((B, m) + xhat.shape[1:])

    def _zero_variance_error(self) -> ValueError:
        return ValueError(
            f"{self!r} met an example whose features are all equal (variance 0), which it would "
            "divide by zero (eps is 0 in the inputs' dtype); give eps > 0 (PyTorch's default is 1e-5)"
        )

    def _flat(self, cache, g):
        """``(sum_p g xhat, sum_p g)``, each ``(B, m, n)``: the derivatives of ``<g, y>`` by ``gamma``
        and ``beta`` (``sum_p`` over the positions of an image; none for a flat input)."""
        xhat = cache[0]
        if g is None:
            g = identity_seed(xhat.shape[0], xhat.shape[1:], xhat.dtype)
        B, m = g.shape[:2]
        n = xhat.shape[-1]
        gx = (g * xhat[:, None]).reshape(B, m, -1, n).sum(axis=2)
        gg = np.reshape(g, (B, m, -1, n)).sum(axis=2)
        return gx, gg

    def ntk_term(self, params, I, J, theta, trace, lower):
        gxI, gI = self._flat(*I)
        gxJ, gJ = (gxI, gI) if J is None else self._flat(*J)
        B1, k = gI.shape[:2]
        B2 = gJ.shape[0]
        if trace:
            G = np.dot(gxI.reshape(B1, -1), gxJ.reshape(B2, -1).T)
            G += np.dot(gI.reshape(B1, -1), gJ.reshape(B2, -1).T)
            G *= 1.0 / k
            theta += G
            return
        G = np.einsum("iaf,jbf->ijab", gxI, gxJ, optimize=True)
        G += np.einsum("iaf,jbf->ijab", gI, gJ, optimize=True)
        theta += G

    def products(self, params, cache, g):
        gx, gg = self._flat(cache, g)
        return gx.sum(axis=(0, 1)), gg.sum(axis=(0, 1))

    def jacobian(self, params, cache, g):
        gx, gg = self._flat(cache, g)
        return np.concatenate([gx, gg], axis=2)

    def analytic(self, state: KernelState) -> KernelState:
        if self.affine:
            raise ValueError(
                "LayerNorm(affine=True) has no analytic kernel here (neural-tangents' LayerNorm has no "
                "parameters); use LayerNorm() for the analytic kernels"
            )
        # mean-zero features, Gaussian per position (a Flatten's may each have their own covariance:
        # the mean square over the width, which it divides by, is still the state's variance)
        if not state.mean_zero:
            raise ValueError(
                "the analytic LayerNorm needs mean-zero Gaussian features (the output of a Dense, of a "
                "convolution, or a sum of such); its input here is not (the inputs, an activation's output, "
                "or a residual sum with such a skip path): put a Dense before it"
            )
        if len(state.shape) != 1:
            raise ValueError(
                f"the analytic LayerNorm is implemented on flat features; got per-example shape {state.shape}"
            )
        if self.eps == 0 and not (np.all(state.var1 > 0) and np.all(state.var2 > 0)):
            raise self._zero_variance_error()
        d1 = 1.0 / np.sqrt(state.var1 + self.eps)
        d2 = d1 if state.symmetric else 1.0 / np.sqrt(state.var2 + self.eps)
        state.rows(scale_rows, state.nngp, state.ntk, d1, d2, state.symmetric)
        # the pairs' very operations (K * (d1 d2)), so that a point paired with itself stays on its variance
        v1 = state.var1 * (d1 * d1)
        return state.replace(var1=v1, var2=v1 if state.symmetric else state.var2 * (d2 * d2))


__all__ = ["LayerNorm"]
