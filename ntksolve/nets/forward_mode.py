"""Forward-mode derivatives of the MLP: ``J v`` in one pass, without the Jacobian.

With ``c_W, c_b`` the factors through which the trained parameters enter a layer
(``(σ_w/√n, σ_b)`` in NTK parameterisation, ``(1, 1)`` in standard, where the scaled weights are
trained), the tangent of the pre-activation along ``v = (dW, db)`` is

    dz^l = c_W dW^l h^{l−1} + (σ_w/√n_{l−1}) W^l dh^{l−1} + c_b db^l,     dh^l = φ'(z^l) ⊙ dz^l

from ``dh^0 = 0``, and ``f``'s tangent is ``dz^{L+1}``. Along the parameters themselves
(``v = θ``, the trained coordinates) the first and last terms add up to ``z^l``:

    dz^l = (σ_w/√n_{l−1}) W^l (h^{l−1} + dh^{l−1}) + σ_b b^l

one product per layer; the same in both parameterisations, since ``J θ`` is the derivative of
``f`` along the ray ``θ → (1 + ε) θ``, which does not depend on how each parameter is scaled.
"""

from __future__ import annotations

import numpy as np

from ntksolve._jit import empirical as _jit
from ntksolve._validation import check_forward_finite, check_inputs
from ntksolve.nets.mlp import MLP, layer_bias, require_mlp

__all__ = ["jacobian_vector_product", "own_parameter_image", "trained_parameters"]


def _check(net, params, X):
    require_mlp(net, "the forward-mode product")
    d, dt = net.check_params(params)
    return d, dt, check_inputs(X, n_features=d, dtype=dt)


def _layer(net, phi, scales, l, h, W, b):
    """``h^l`` and ``φ'(z^l)`` of hidden layer ``l`` (0-based) from ``h^{l−1}``."""
    ws, bs = scales[l]
    pre = np.dot(h, W.T)
    h_new = np.empty_like(pre)
    b = layer_bias(net.layers[l], b, pre.dtype)
    finite = _jit.bias_act(pre, b, pre.dtype.type(ws), pre.dtype.type(bs), phi.code, phi.params, h_new, pre, True)
    check_forward_finite(finite, f"pre-activations of hidden layer {l + 1}", pre.dtype)
    return h_new, pre  # pre now holds φ'(z)


def trained_parameters(net: MLP, params):
    """The trained coordinates of ``params``: themselves (NTK), or ``(σ_w/√n W, σ_b b)`` (standard).

    These are the parameters :func:`ntksolve.jacobian` differentiates by and PyTorch's
    ``weight_decay`` acts on.

    Returns
    -------
    list of (W, b), fresh arrays in standard parameterisation
    """
    d, _ = net.check_params(params)
    if net.parameterization == "ntk":
        return [(W, b) for W, b in params]
    return [(ws * W, bs * b) for (W, b), (ws, bs) in zip(params, net.layer_scales(d))]


def jacobian_vector_product(net: MLP, params, X, v_params) -> np.ndarray:
    """``J(X) v``: the derivative of the outputs along a parameter direction, by tangent propagation.

    Parameters
    ----------
    net : MLP
    params : list of (W, b)
        The point of linearisation.
    X : array_like, shape (N, d)
    v_params : list of (dW, db)
        The direction, shaped like ``params``, in the trained coordinates (those of
        :func:`ntksolve.jacobian`: in standard parameterisation the scaled weights and biases).

    Returns
    -------
    Jv : ndarray, shape (N, k)
        Equal to ``jacobian(net, params, X) @ flatten(v_params)``, at the cost of about two forward
        passes and ``O(N · max width)`` memory per layer.
    """
    d, dt, X = _check(net, params, X)
    try:
        net.check_params(v_params, n_features=d)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"v_params must be shaped like params: {exc}") from None
    scales = net.layer_scales(d)
    # the factors through which the trained parameters enter: the gradient scales (0 without a bias)
    coef = [(s.grad_weight, s.grad_bias) for s in net.scales(d)]
    phi = net.phi
    h, dh = X, None
    for l in range(net.depth + 1):
        (W, b), (dW, db) = params[l], v_params[l]
        ws = scales[l][0]
        cw, cb = coef[l]
        dz = np.dot(h, dW.T)
        dz *= cw
        if dh is not None:
            dz += ws * np.dot(dh, W.T)
        if cb != 0.0:
            dz += cb * db
        if l == net.depth:
            return dz
        h, dphi = _layer(net, phi, scales, l, h, W, b)
        dh = dz * dphi
    raise AssertionError("unreachable")  # pragma: no cover


def own_parameter_image(net: MLP, params, X) -> np.ndarray:
    """``J(X) θ_0``: the Jacobian applied to the network's own (trained) parameters.

    Weight decay's function-space term (``docs/training-rules.md``). One tangent product per layer
    beside the forward pass; no Jacobian.

    Parameters
    ----------
    net : MLP
    params : list of (W, b)
    X : array_like, shape (N, d)

    Returns
    -------
    J_theta : ndarray, shape (N, k), in the parameters' dtype
    """
    d, dt, X = _check(net, params, X)
    scales = net.layer_scales(d)
    phi = net.phi
    h, dh = X, np.zeros_like(X)
    for l in range(net.depth + 1):
        W, b = params[l]
        ws, bs = scales[l]
        dz = np.dot(h + dh, W.T)
        dz *= ws
        if bs != 0.0:
            dz += bs * b
        if l == net.depth:
            return dz
        h, dphi = _layer(net, phi, scales, l, h, W, b)
        dh = dz * dphi
    raise AssertionError("unreachable")  # pragma: no cover
