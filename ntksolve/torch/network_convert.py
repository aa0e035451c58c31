"""PyTorch modules with layer norms and residual blocks <-> ntksolve :class:`~ntksolve.nets.network.Network`, exactly.

The structure read (and written) is an ``nn.Sequential`` (nested allowed) of

- ``nn.Linear`` (with or without a bias) -> ``Dense(n_out, weight_std=1, bias_std=1, bias=...)`` in
  standard parameterisation, stored ``W = sqrt(n_in) weight``, ``b = bias`` (as
  :func:`ntksolve.torch.from_torch` imports an MLP);
- the element-wise activations of :func:`ntksolve.torch.from_torch` (one after another allowed);
- ``nn.LayerNorm(n)`` over the last axis -> :class:`~ntksolve.nets.normalization.LayerNorm` with the
  module's ``eps``; ``elementwise_affine=True`` imports ``weight`` and ``bias`` as the trained
  ``gamma`` and ``beta`` (with their NTK terms), ``False`` as the parameter-free layer;
- :class:`Residual` -- ``Residual(block, scale=1.0)``, whose ``forward`` is ``x + scale * block(x)``:
  the documented structure of a residual block (PyTorch has no residual module; any other module
  with a skip connection is refused, since its ``forward`` could compute anything) ->
  :class:`~ntksolve.nets.residual.Residual` of the imported block;
- the no-ops ``nn.Identity`` and inactive dropout, dropped.

:func:`from_torch` (``ntksolve.torch.from_torch``) reads a module with such layers this way and any
other as :func:`ntksolve.torch.convert.from_torch` does (an MLP); :func:`to_torch` writes a Network
this way and an MLP (or a Network that is one) as before.

The network computes the module's function to rounding, and its empirical NTK is the one PyTorch's
autograd defines over the module's parameters (``torch.func`` in the tests). Anything else is a
ValueError naming the module's position and class.
"""

from __future__ import annotations

import numbers

import numpy as np

from ntksolve._extras import require
from ntksolve.nets.dense_layers import ActivationLayer, DenseLayer
from ntksolve.nets.conv import Conv
from ntksolve.nets.layers import Dense
from ntksolve.nets.network import Network, accepts_network, check_network
from ntksolve.nets.normalization import LayerNorm
from ntksolve.nets.residual import Residual as NetResidual
from ntksolve.torch.convert import (
    _activation_module,
    _activation_name,
    _check_activation_options,
    _check_parameter,
    _check_readable,
    _is_noop,
    _numpy,
    _plain,
)
from ntksolve.torch.conv_import import conv_from_torch, conv_to_torch
from ntksolve.torch.convert import from_torch as _mlp_from_torch
from ntksolve.torch.convert import to_torch as _mlp_to_torch

torch = require("torch", "torch", "ntksolve.torch (PyTorch interop)")
nn = torch.nn

__all__ = ["Residual", "from_torch", "to_torch", "network_from_torch", "network_to_torch", "has_network_layers"]


class Residual(nn.Module):
    """``x + scale * block(x)``: the residual block :func:`ntksolve.torch.from_torch` imports.

    Parameters
    ----------
    block : nn.Module or several modules
        One module (an ``nn.Sequential`` of the supported layers), or several, made a Sequential.
    scale : float, default 1.0
    """

    def __init__(self, *block, scale: float = 1.0):
        super().__init__()
        if not block:
            raise ValueError("Residual needs a block: Residual(nn.Linear(n, n), ...) or Residual(nn.Sequential(...))")
        self.block = block[0] if len(block) == 1 else nn.Sequential(*block)
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise ValueError(f"scale must be a real number, got {scale!r}")
        self.scale = float(scale)

    def forward(self, x):
        """``x + scale * block(x)`` for a batch ``x`` of the block's input shape."""
        return x + self.scale * self.block(x)


def has_network_layers(module) -> bool:
    """Whether ``module`` holds a LayerNorm or a :class:`Residual` (what the MLP importer cannot read)."""
    return any(isinstance(m, (nn.LayerNorm, Residual)) for m in module.modules())


def _read(module, where, out, state):
    """Append the layers of ``module`` and their ``(W, b)`` pairs (torch tensors) to ``out``."""
    _check_readable(module, where)
    cls = type(module).__name__
    if isinstance(module, nn.Sequential):
        if type(module).forward is not nn.Sequential.forward:
            raise ValueError(
                f"{where} ({cls}) overrides Sequential.forward, which ntksolve cannot read; use a plain nn.Sequential"
            )
        for i, child in enumerate(module):
            _read(child, f"{where}[{i}]", out, state)
        return
    if _plain(module, Residual):
        inner, width = [], state.get("width")
        _read(module.block, f"{where}.block", inner, state)
        width = state.get("n_in") if width is None else width
        if state.get("width") != width:
            raise ValueError(
                f"{where} (Residual) maps {width} features to {state.get('width')}: x + scale * block(x) needs "
                "a block that keeps its input's width"
            )
        layers = [layer for layer, _ in inner]
        if not any(layer.leaves() for layer in layers):
            raise ValueError(f"{where} (Residual) has no parameters in its block; ntksolve's Residual needs one")
        out.append((NetResidual(layers, module.scale), [p for _, p in inner]))
        return
    if _plain(module, nn.Linear):
        for name, p in module.named_parameters(recurse=False):
            _check_parameter(p, f"{where}.{name}", state)
        _takes(state, module.in_features, where, f"(Linear) has in_features={module.in_features}")
        state["width"] = module.out_features
        out.append(
            (
                DenseLayer(Dense(module.out_features, 1.0, 1.0, "standard", bias=module.bias is not None)),
                ("linear", module),
            )
        )
        return
    if _plain(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            raise ValueError(
                f"{where} (LayerNorm) normalises over {tuple(module.normalized_shape)}: ntksolve's "
                "LayerNorm is over the last axis only; use nn.LayerNorm(n_features)"
            )
        if module.elementwise_affine and module.bias is None:
            raise ValueError(
                f"{where} (LayerNorm) has a weight but no bias (bias=False), which ntksolve's "
                "LayerNorm does not represent; use bias=True or elementwise_affine=False"
            )
        for name, p in module.named_parameters(recurse=False):
            _check_parameter(p, f"{where}.{name}", state)
        n = int(module.normalized_shape[0])
        _takes(state, n, where, f"(LayerNorm) normalises {n} features")
        out.append((LayerNorm(eps=float(module.eps), affine=bool(module.elementwise_affine)), ("norm", module)))
        return
    if _activation_name(module) is not None:
        _check_activation_options(module, where)
        out.append((ActivationLayer(_activation_name(module)), ()))
        return
    if _is_noop(module):
        return
    if isinstance(module, nn.modules.dropout._DropoutNd):
        raise ValueError(f"{where} ({cls}) is dropout in training mode (random): call module.eval() first")
    raise ValueError(
        f"{where} ({cls}) is not supported: ntksolve imports nn.Linear, nn.LayerNorm, "
        "ntksolve.torch.Residual, the element-wise activations and the no-ops, in nested nn.Sequential"
    )


def _takes(state, n: int, where: str, what: str) -> None:
    """A layer taking ``n`` features: refuse a module whose widths do not chain (PyTorch could not
    run it); the first such layer fixes the module's input width (``state["n_in"]``)."""
    width = state.get("width")
    if width is None:
        state["n_in"] = state["width"] = n
    elif width != n:
        raise ValueError(f"{where} {what}, but its input has {width} features: the module cannot run")


def _params(entry, n_in):
    """The stored ``(W, b)`` of one read layer, fresh arrays."""
    kind, m = entry
    if kind == "linear":
        w = _numpy(m.weight)
        W = np.multiply(w, w.dtype.type(np.sqrt(m.in_features)), order="C")
        b = np.zeros(0, dtype=w.dtype) if m.bias is None else np.array(_numpy(m.bias), order="C", copy=True)
        return W, b
    return np.array(_numpy(m.weight), copy=True), np.array(_numpy(m.bias), copy=True)


def _convert(layers_params):
    out = []
    for layer, p in layers_params:
        if isinstance(layer, NetResidual):
            out.append(_convert(list(zip(layer.layers, p))))
        elif p == ():
            out.append(())
        elif p[0] == "norm" and not layer.affine:
            out.append(())
        else:
            out.append(_params(p, None))
    return out


def network_from_torch(module):
    """``(Network, params)`` of an ``nn.Sequential`` with LayerNorm / :class:`Residual` layers (module docstring).

    Returns
    -------
    net : Network
        Standard parameterisation (what PyTorch trains), input shape ``(in_features,)``.
    params : list
        Fresh arrays in the module's dtype.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    read, state = [], {}
    _read(module, "module", read, state)
    if "dtype" not in state:
        raise ValueError("the module has no parameters (no nn.Linear), so no NTK")
    net = Network([layer for layer, _ in read], parameterization="standard")
    params = _convert(read)
    if not any(p and p[0] == "linear" for _, p in _flat(read)):
        raise ValueError("the module contains no nn.Linear layer")
    net.check_params(params, (state["n_in"],))  # shapes chain (a residual block keeps its width)
    return net, params


def _flat(read):
    for layer, p in read:
        if isinstance(layer, NetResidual):
            yield from _flat(list(zip(layer.layers, p)))
        else:
            yield layer, p


def network_to_torch(net, params):
    """An ``nn.Sequential`` computing ``net.apply(params, .)`` for a Network of Dense, activation,
    LayerNorm and Residual layers (the structure :func:`network_from_torch` reads); the scales of
    each Dense are folded into its ``weight`` and ``bias``."""
    net = check_network(net)
    W = next(p for _, p in _pairs(net.layers, params))[0]
    first = next(leaf for leaf in net.leaves())
    n_in = W.shape[1] if isinstance(first, DenseLayer) else W.shape[0]
    net.check_params(params, (n_in,))
    dtype = torch.float64 if W.dtype == np.float64 else torch.float32
    return nn.Sequential(*_modules(net.layers, params, dtype, n_in)[0])


def _pairs(layers, params):
    for layer, p in zip(layers, params):
        if layer.has_params:
            yield layer, p
        elif layer.leaves():
            yield from _pairs(layer.layers, p)


def _modules(layers, params, dtype, n):
    """The modules of ``layers`` on inputs of width ``n``, and the width they output."""
    mods = []
    for layer, p in zip(layers, params):
        if isinstance(layer, DenseLayer):
            W, b = p
            s = layer.spec.scales(W.shape[1])
            lin = nn.Linear(W.shape[1], W.shape[0], bias=layer.spec.bias, device="meta", dtype=dtype)
            lin.weight = nn.Parameter(torch.from_numpy(np.multiply(W, W.dtype.type(s.weight), order="C")))
            if layer.spec.bias:
                lin.bias = nn.Parameter(torch.from_numpy(np.multiply(b, b.dtype.type(s.bias))))
            mods.append(lin)
            n = W.shape[0]
        elif isinstance(layer, ActivationLayer):
            mods.append(_activation_module(layer.spec.name, dtype))
        elif isinstance(layer, LayerNorm):
            if layer.affine:
                ln = nn.LayerNorm(n, eps=layer.eps, device="meta", dtype=dtype)
                ln.weight = nn.Parameter(torch.from_numpy(np.array(p[0], copy=True)))
                ln.bias = nn.Parameter(torch.from_numpy(np.array(p[1], copy=True)))
            else:
                ln = nn.LayerNorm(n, eps=layer.eps, elementwise_affine=False, dtype=dtype)
            mods.append(ln)
        elif isinstance(layer, NetResidual):
            inner, _ = _modules(layer.layers, p, dtype, n)
            mods.append(Residual(nn.Sequential(*inner), scale=layer.scale))
        else:
            raise ValueError(
                f"to_torch cannot write a {layer.name} layer (it writes Dense, the activations "
                "PyTorch has, LayerNorm and Residual)"
            )
    return mods, n


def _has_conv(module) -> bool:
    """A convolutional module: a convolution anywhere in it (nested Sequentials are read flat, and
    one that is no Sequential is refused by :func:`conv_from_torch` by name), and no LayerNorm or
    Residual (what the network importer refuses, it refuses by name)."""
    return (
        isinstance(module, nn.Module)
        and any(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in module.modules())
        and not has_network_layers(module)
    )


def from_torch(module, input_shape=None):
    """Import a PyTorch module exactly.

    Parameters
    ----------
    module : torch.nn.Module
        An ``nn.Sequential`` MLP (-> ``(MLP, params)``, :func:`ntksolve.torch.convert.from_torch`); one
        with ``nn.LayerNorm`` or :class:`Residual` layers (-> ``(Network, params)``,
        :func:`network_from_torch`); or a convolutional ``nn.Sequential`` of ``Conv1d``/``Conv2d``,
        ``AdaptiveAvgPool(1)``, ``Flatten``, ``Linear`` and activations (-> ``(Network, params)``,
        :func:`ntksolve.torch.conv_import.conv_from_torch`, inputs channels last).
    input_shape : tuple of int, optional
        PyTorch's per-example input shape, ``(C, H, W)`` or ``(C, L)``: needed (and only allowed)
        for a convolutional module, whose layers do not record the image size.

    Returns
    -------
    net : MLP or Network
    params : list
    """
    if _has_conv(module):
        if input_shape is None and isinstance(module, nn.Sequential):
            raise ValueError(
                "a convolutional module needs its per-example input shape: "
                "from_torch(module, input_shape=(C, H, W)) (or (C, L) for Conv1d)"
            )
        return conv_from_torch(module, input_shape)
    if input_shape is not None:
        raise ValueError("input_shape is for convolutional modules only; this module has no Conv1d/Conv2d")
    if isinstance(module, nn.Module) and has_network_layers(module):
        return network_from_torch(module)
    return _mlp_from_torch(module)


_to_torch = accepts_network(network_to_torch)(_mlp_to_torch)


def to_torch(net, params, input_shape=None):
    """An ``nn.Module`` computing ``net.apply(params, .)``: :func:`ntksolve.torch.convert.to_torch`
    for an MLP, :func:`network_to_torch` for a Network of dense layers, LayerNorm and Residual, and
    :func:`ntksolve.torch.conv_import.conv_to_torch` (on ``NCHW`` / ``NCL`` inputs) for a Network
    with convolutions, which needs ``input_shape``, the per-example input shape, channels last.

    Parameters
    ----------
    net : MLP or Network
        Either parameterisation: the scales are folded into each ``weight`` and ``bias``.
    params : list
        The network's parameters, as ``net.init`` returns them.
    input_shape : tuple of int, optional
        The per-example input shape, channels last (``(H, W, C)`` or ``(T, C)``): networks with
        convolutions only, and needed by them.

    Returns
    -------
    module : torch.nn.Sequential
        In the parameters' dtype; it maps ``(N, d)`` (``(N, C, H, W)`` / ``(N, C, T)`` with
        convolutions) to the network's ``(N, k)`` outputs. Training it trains ``weight`` and
        ``bias``, so its NTK is the standard-parameterisation NTK of ``net``.
    """
    if isinstance(net, Network) and any(isinstance(leaf, Conv) for leaf in net.leaves()):
        if input_shape is None:
            raise ValueError(
                "a network with convolutions needs its per-example input shape (channels last): "
                "to_torch(net, params, input_shape=(H, W, C))"
            )
        return conv_to_torch(net, params, input_shape)
    if input_shape is not None:
        raise ValueError("input_shape is for networks with convolutions only")
    return _to_torch(net, params)
