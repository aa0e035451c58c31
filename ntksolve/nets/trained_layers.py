"""Trained layers of another library <-> an ntksolve :class:`~ntksolve.MLP`: the one conversion.

PyTorch's ``nn.Linear`` and scikit-learn's ``MLPRegressor`` train the weights and biases the
forward pass uses, ``z = W~ h + b~``: that is the standard parameterisation of the conventions,
whose trained parameters are ``W~ = (sigma_w/sqrt(n_in)) W`` and ``b~ = sigma_b b``. With
``sigma_w = sigma_b = 1`` the stored ntksolve parameters are a pure rescale,

    W = sqrt(n_in) W~        b = b~

and the empirical NTK over ``(W~, b~)`` -- the one those libraries' autograd defines -- is
ntksolve's standard-parameterisation NTK. (In standard parameterisation ``sigma_w`` and
``sigma_b`` never enter the gradient or the NTK; ``sigma_b = 1`` is needed only so that the
stored ``b`` can carry a non-zero ``b~``.)

Every importer (``ntksolve.torch``, ``ntksolve.sklearn.mlp_import``) goes through
:func:`mlp_from_layers`, and every exporter through :func:`layers_from_mlp`, so that a new kind
of layer is supported in one place.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ntksolve.nets.mlp import MLP, require_mlp

#: One imported layer: ``(weight (n_out, n_in), bias (n_out,) or None, where)``, ``where`` naming
#: it for error messages (e.g. ``"module[2]"``), arrays in the trained parameterisation.
Layer = Tuple[np.ndarray, Optional[np.ndarray], str]


def mlp_from_layers(layers: Sequence[Layer], activation: str) -> Tuple[MLP, list]:
    """An ntksolve network computing ``z^{l} = W~^l h^{l-1} + b~^l``, ``h = phi(z)``, exactly.

    Parameters
    ----------
    layers : sequence of (weight, bias, where)
        ``weight`` of shape ``(n_l, n_{l-1})`` and ``bias`` of shape ``(n_l,)``, as numpy arrays
        of one float dtype (float32 or float64), consecutive shapes chained (checked by the
        caller, who can name its modules). ``bias`` None means a bias-free layer.
    activation : str
        The hidden layers' activation (one of ``ntksolve.ACTIVATIONS``).

    Returns
    -------
    net : MLP
        ``parameterization="standard"``, ``weight_std = bias_std = 1``; ``bias`` the layers' flags
        (a layer without a bias has none in the network either).
    params : list of (W, b)
        Fresh C-contiguous arrays (never views of the inputs): ``W = sqrt(n_in) W~``, ``b = b~``
        (of shape ``(0,)`` for a layer without a bias).
    """
    params: list = []
    for weight, bias, _ in layers:
        n_out, n_in = weight.shape
        dt = weight.dtype
        W = np.empty((n_out, n_in), dtype=dt)  # C order whatever the layout of ``weight``
        np.multiply(weight, dt.type(np.sqrt(n_in)), out=W)
        b = np.zeros(0, dtype=dt) if bias is None else np.array(bias, dtype=dt, order="C", copy=True)
        params.append((W, b))
    net = MLP(
        hidden_layer_sizes=tuple(int(w.shape[0]) for w, _, _ in layers[:-1]),
        activation=activation,
        weight_std=1.0,
        bias_std=1.0,
        parameterization="standard",
        n_outputs=int(layers[-1][0].shape[0]),
        bias=tuple(bias is not None for _, bias, _ in layers),
    )
    return net, params


def layers_from_mlp(net: MLP, params) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The weights and biases the forward pass uses, ``(W~, b~) = (ws W, bs b)`` per layer.

    Any :class:`~ntksolve.MLP`, either parameterisation: the scales ``(ws, bs)`` of
    :meth:`MLP.layer_scales` are folded in. The function is the same; the NTK of the result
    over ``(W~, b~)`` is the standard-parameterisation NTK of ``net``.

    Returns
    -------
    layers : list of (weight (n_l, n_{l-1}), bias (n_l,) or None)
        Fresh arrays in the parameters' dtype; ``bias`` None for a layer without a bias.
    """
    require_mlp(net, "layers_from_mlp")
    d, dt = net.check_params(params)
    out = []
    for layer, (W, b), (ws, bs) in zip(net.layers, params, net.layer_scales(d)):
        out.append((np.multiply(W, dt.type(ws), order="C"), np.multiply(b, dt.type(bs)) if layer.bias else None))
    return out
