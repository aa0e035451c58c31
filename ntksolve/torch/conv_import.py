"""Convolutional ``nn.Sequential`` modules <-> ntksolve networks with convolutions, exactly.

Layout. PyTorch computes on ``NCHW`` (``NCL`` for 1-D), ntksolve on channels last, ``NHWC``
(``NLC``): an input batch maps by ``x.permute(0, 2, 3, 1)`` (:func:`to_channels_last` for numpy).
Weights map by a reshape, ``W = sqrt(fan_in) * weight.reshape(out_channels, -1)``
(``fan_in = in_channels * kh * kw``), the patch order of :mod:`ntksolve.nets.conv`; biases are
copied. As for :func:`ntksolve.torch.from_torch`, PyTorch trains ``weight`` and ``bias``, so the
network is in standard parameterisation with ``weight_std = bias_std = 1``, and its empirical NTK
is the one autograd defines over the module's parameters. ``nn.Flatten`` on ``NCHW`` orders the
features channel-major (``c, y, x``), ntksolve's :class:`~ntksolve.nets.pooling.Flatten`
channels-last (``y, x, c``): the first ``nn.Linear`` after it gets its columns permuted.

Imported: ``nn.Conv1d`` / ``nn.Conv2d`` (any stride, zero padding given as ints or ``"same"`` /
``"valid"``, ``dilation=1``, ``groups=1``, ``padding_mode="zeros"``, with or without a bias);
``nn.AdaptiveAvgPool1d(1)`` / ``nn.AdaptiveAvgPool2d(1)`` followed by ``nn.Flatten()``, read as
:class:`~ntksolve.nets.pooling.GlobalAvgPool`; ``nn.Flatten()`` after a convolution; ``nn.Linear``;
the element-wise activations and no-ops of :func:`ntksolve.torch.from_torch`; nested
``nn.Sequential``. Anything else, or a stride that does not tile the input (PyTorch drops the
remainder), is a ValueError naming the module's position; so is a Flatten of several positions and
channels with no ``nn.Linear`` after it (both ways), whose outputs the two orders would permute.
"""

from __future__ import annotations

import math

import numpy as np

from ntksolve._extras import require
from ntksolve.nets.conv import Conv
from ntksolve.nets.dense_layers import ActivationLayer, DenseLayer
from ntksolve.nets.layers import Activation, Dense
from ntksolve.nets.network import Network
from ntksolve.nets.pooling import Flatten, GlobalAvgPool, Reshape
from ntksolve.torch.convert import (
    _FLOAT_DTYPES,
    _activation_module,
    _activation_name,
    _check_activation_options,
    _check_no_global_hooks,
    _check_parameter,
    _is_noop,
    _leaves,
    _numpy,
    _plain,
)

torch = require("torch", "torch", "ntksolve.torch (PyTorch interop)")
nn = torch.nn

__all__ = ["conv_from_torch", "conv_to_torch", "to_channels_last"]


def to_channels_last(X) -> np.ndarray:
    """``NCHW`` (or ``NCL``) to ntksolve's ``NHWC`` (``NLC``): ``X.transpose(0, 2, 3, 1)``, contiguous.

    Parameters
    ----------
    X : array_like, shape (N, C, H, W) or (N, C, T)
        Inputs in PyTorch's layout, channels first.

    Returns
    -------
    X_last : ndarray, shape (N, H, W, C) or (N, T, C)
        The same values, channels last, C-contiguous.
    """
    X = np.asarray(X)
    if X.ndim not in (3, 4):
        raise ValueError(f"X must be NCL (3-D) or NCHW (4-D), got shape {X.shape}")
    return np.ascontiguousarray(np.moveaxis(X, 1, -1))


def _conv_layer(m, where):
    nd = 2 if isinstance(m, nn.Conv2d) else 1
    if m.groups != 1 or any(d != 1 for d in m.dilation) or m.padding_mode != "zeros":
        raise ValueError(
            f"{where} ({type(m).__name__}) has groups={m.groups}, dilation={m.dilation}, "
            f"padding_mode={m.padding_mode!r}: ntksolve's Conv has groups=1, dilation=1 and zero padding"
        )
    pad = m.padding if isinstance(m.padding, str) else tuple(int(p) for p in m.padding)
    return Conv(
        m.out_channels, tuple(m.kernel_size), tuple(m.stride), pad, 1.0, 1.0, "standard", bias=m.bias is not None
    ), nd


def conv_from_torch(module, input_shape):
    """Import a convolutional ``nn.Sequential`` (module docstring) as ``(net, params)``.

    Parameters
    ----------
    module : torch.nn.Sequential
        Not modified; parameters float32 or float64.
    input_shape : tuple of int
        PyTorch's per-example input shape, ``(C, H, W)`` or ``(C, L)``.

    Returns
    -------
    net : Network
        Standard parameterisation, ``weight_std = bias_std = 1``; inputs channels last.
    params : list
        Fresh arrays in the module's dtype. ``net.apply(params, to_channels_last(x))`` equals
        ``module(x)`` to rounding.
    """
    if not isinstance(module, nn.Sequential):
        raise TypeError(
            f"{type(module).__name__} is not an nn.Sequential: ntksolve imports a convolutional module as an "
            "nn.Sequential of convolutions, pooling, Flatten, Linear and activations; wrap it, e.g. "
            "nn.Sequential(conv, nn.Flatten(), nn.Linear(...))"
        )
    _check_no_global_hooks()
    shape = _input_shape(input_shape)
    items = [(w, m) for w, m in _leaves(module, "module") if not _is_noop(m)]
    layers, weights, state = [], [], {}
    cur = shape[1:] + shape[:1]  # channels last
    permute = None  # columns of the next Linear, after a Flatten of NCHW features
    i = 0
    while i < len(items):
        where, m = items[i]
        for pname, p in m.named_parameters(recurse=False):
            _check_parameter(p, f"{where}.{pname}", state)
        if _plain(m, nn.Conv2d) or _plain(m, nn.Conv1d):
            layer, nd = _conv_layer(m, where)
            if len(cur) != nd + 1 or cur[-1] != m.in_channels:
                raise ValueError(
                    f"{where} ({type(m).__name__}) takes {m.in_channels} channels in {nd}-D, but its "
                    f"input has shape {cur} (channels last)"
                )
            try:
                fan = layer.geometry(cur).fan_in
                cur = layer.output_shape(cur)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            W = math.sqrt(fan) * _numpy(m.weight).reshape(m.out_channels, -1)
            weights.append((W, _bias(m)))
            layers.append(layer)
        elif isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)) and type(m).__module__.startswith("torch."):
            size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,)
            nd = 2 if isinstance(m, nn.AdaptiveAvgPool2d) else 1
            if len(cur) != nd + 1:
                # PyTorch would pool other axes (a 2-D pooling of NCL pools the batch as one image)
                fix = f": use nn.AdaptiveAvgPool{len(cur) - 1}d(1)" if len(cur) in (2, 3) else ""
                raise ValueError(
                    f"{where} ({type(m).__name__}) pools {nd}-D inputs, but its input has shape {cur} "
                    f"(channels last){fix}"
                )
            nxt = items[i + 1][1] if i + 1 < len(items) else None
            if any(s != 1 for s in size) or not (_plain(nxt, nn.Flatten) and nxt.start_dim == 1 and nxt.end_dim == -1):
                raise ValueError(
                    f"{where} ({type(m).__name__}) is imported only as global average pooling: "
                    f"output_size=1 followed by nn.Flatten()"
                )
            layers.append(GlobalAvgPool())
            cur = GlobalAvgPool().output_shape(cur)
            i += 1  # the Flatten is part of the pooling
        elif _plain(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError(f"{where} (Flatten) must flatten every per-example axis (start_dim=1, end_dim=-1)")
            if len(cur) > 1:
                S, C = int(np.prod(cur[:-1])), cur[-1]
                permute = _flatten_order(S, C)
                layers.append(Flatten())
                cur = (S * C,)
        elif _plain(m, nn.Linear):
            if len(cur) != 1 or cur[0] != m.in_features:
                raise ValueError(
                    f"{where} (Linear) has in_features={m.in_features} but its input has shape {cur}"
                    + ("; put nn.Flatten() before it" if len(cur) > 1 else "")
                )
            W = _numpy(m.weight)
            if permute is not None:
                W, permute = W[:, permute], None
            weights.append((math.sqrt(m.in_features) * W, _bias(m)))
            layers.append(Dense(m.out_features, 1.0, 1.0, "standard", bias=m.bias is not None))
            cur = (m.out_features,)
        elif _activation_name(m) is not None:
            _check_activation_options(m, where)
            layers.append(Activation(_activation_name(m)))
        elif isinstance(m, nn.modules.dropout._DropoutNd):
            raise ValueError(
                f"{where} ({type(m).__name__}) is dropout in training mode (random): call module.eval() first"
            )
        else:
            raise ValueError(
                f"{where} ({type(m).__name__}) is not supported: ntksolve imports Conv1d, Conv2d, "
                f"AdaptiveAvgPool(1) + Flatten, Flatten, Linear and the element-wise activations"
            )
        i += 1
    if "dtype" not in state:
        raise ValueError("the module has no parameters (no Conv or Linear), so no NTK")
    if permute is not None:
        raise ValueError(_FLATTEN_LAST)
    dtype = state["dtype"]
    net = Network(layers, parameterization="standard")
    net.shapes(shape[1:] + shape[:1])  # a flat output, or the error saying how to end the network
    params, w = [], iter(weights)
    for layer in net.layers:
        params.append(tuple(np.array(a, dtype=_FLOAT_DTYPES[dtype]) for a in next(w)) if layer.has_params else ())
    return net, params


#: A Flatten of spatial features with no Linear after it: nothing can absorb the reordering.
_FLATTEN_LAST = (
    "the network's output is a Flatten of spatial features (after it at most activations), which "
    "PyTorch's nn.Flatten of NCHW orders channel-major and ntksolve's Flatten channels last: the "
    "outputs would be permuted. End it with a Linear / Dense (or pool with AdaptiveAvgPool(1) / "
    "GlobalAvgPool)"
)


def _flatten_order(S: int, C: int):
    """Where ntksolve's flattened feature ``p C + c`` (channels last) sits in PyTorch's flatten of the
    same ``S`` positions and ``C`` channels, ``c S + p``, as an index array; None when it is the
    identity (one position or one channel)."""
    if S == 1 or C == 1:
        return None
    return (np.arange(C)[None, :] * S + np.arange(S)[:, None]).ravel()


def _input_shape(input_shape):
    """PyTorch's per-example input shape as a tuple of 2 or 3 positive ints, else a clear error."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(
            f"input_shape must be PyTorch's per-example shape, a tuple (C, H, W) or (C, L), got {input_shape!r}"
        ) from None
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape):
        raise TypeError(f"input_shape must be a tuple of ints (C, H, W) or (C, L), got {input_shape!r}")
    if len(shape) not in (2, 3) or any(s <= 0 for s in shape):
        raise ValueError(
            f"input_shape must be PyTorch's per-example shape, (C, H, W) or (C, L) of positive sizes, "
            f"got {input_shape!r}"
        )
    return tuple(int(s) for s in shape)


def _bias(m):
    if m.bias is None:
        return np.zeros(0, dtype=_FLOAT_DTYPES[m.weight.dtype])
    return _numpy(m.bias)


def conv_to_torch(net: Network, params, input_shape):
    """An ``nn.Sequential`` (on ``NCHW`` / ``NCL``) computing ``net.apply(params, .)`` on channels-last
    inputs of per-example ``input_shape`` (ntksolve's, channels last), to rounding.

    The scales are folded into each ``weight`` and ``bias``; PyTorch trains those, so the module's NTK
    is ``net``'s in standard parameterisation. GlobalAvgPool is written as ``AdaptiveAvgPool(1)`` and
    ``Flatten()``; a Flatten of spatial features permutes the next Linear's columns back. Written:
    Conv, GlobalAvgPool, Flatten, Dense and the element-wise activations; any other layer is a
    ValueError naming it.
    """
    shapes = net.shapes(input_shape)
    dt = net.check_params(params, input_shape)
    for i, layer in enumerate(net.layers):
        if not isinstance(layer, (Conv, GlobalAvgPool, Flatten, DenseLayer, ActivationLayer)):
            fix = (
                ": the module takes NCHW images, so export the layers after it, Network(net.layers[1:]) "
                "with params[1:] and the input shape it makes"
                if isinstance(layer, Reshape) and i == 0
                else ""
            )
            raise ValueError(
                f"layer {i} ({layer.name}) has no PyTorch counterpart here: a network with convolutions is "
                f"written from Conv, GlobalAvgPool, Flatten, Dense and element-wise activations{fix}"
            )
    tdt = torch.float64 if dt == np.float64 else torch.float32
    mods, permute = [], None
    for layer, p, s_in in zip(net.layers, params, shapes):
        if isinstance(layer, Conv):
            sc = layer.scales(s_in)
            nd = layer.ndim
            cls = nn.Conv2d if nd == 2 else nn.Conv1d
            pad = layer.padding if isinstance(layer.padding, str) else layer.padding
            m = cls(
                s_in[-1],
                layer.channels,
                layer.kernel_size,
                layer.stride,
                pad,
                bias=layer.bias,
                device="meta",
                dtype=tdt,
            )
            m.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(sc.weight * p[0]).reshape(m.weight.shape)))
            if layer.bias:
                m.bias = nn.Parameter(torch.from_numpy(sc.bias * p[1]))
            mods.append(m)
        elif isinstance(layer, GlobalAvgPool):
            mods += [nn.AdaptiveAvgPool2d(1) if len(s_in) == 3 else nn.AdaptiveAvgPool1d(1), nn.Flatten()]
        elif isinstance(layer, Flatten):
            S, C = int(np.prod(s_in[:-1])), s_in[-1]
            order = _flatten_order(S, C)
            permute = None if order is None else np.argsort(order)
            mods.append(nn.Flatten())
        elif layer.has_params:  # Dense
            sc = layer.scales(s_in)
            W = sc.weight * p[0]
            if permute is not None:
                W, permute = W[:, permute], None
            m = nn.Linear(W.shape[1], W.shape[0], bias=layer.spec.bias, device="meta", dtype=tdt)
            m.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(W)))
            if layer.spec.bias:
                m.bias = nn.Parameter(torch.from_numpy(sc.bias * p[1]))
            mods.append(m)
        else:
            mods.append(_activation_module(layer.spec.name, tdt))
    if permute is not None:
        raise ValueError(_FLATTEN_LAST)
    return nn.Sequential(*mods)
