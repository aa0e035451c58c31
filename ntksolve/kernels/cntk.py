"""The analytic NNGP and NTK of a network with convolutions: the CNTK of Arora et al. (2019).

A convolutional network here is a *prefix* -- a :class:`~ntksolve.nets.conv.Conv` on the inputs,
then convolutions and element-wise activations in any order -- ending in
:class:`~ntksolve.nets.conv.GlobalAvgPool` or :class:`~ntksolve.nets.conv.Flatten`, and then a
dense tail (:class:`~ntksolve.nets.layers.Dense` and activations, as in an MLP). The prefix is
computed per pair of inputs by :mod:`ntksolve._jit.cntk` (its docstring has the recursion): on the
full ``S x S`` spatial covariance when it ends in pooling, on its diagonal (``S`` entries) when it
ends in a flatten. The symmetric kernel computes one triangle. The dense tail is the usual layer
recursion on the pooled kernels. Values agree with neural-tangents' ``stax`` kernels of the same
architecture (``tests/reference_nt``).

What has no kernel here, refused with a ValueError before any work: standard parameterisation
(no infinite-width limit), an activation without a closed-form layer map (tanh, sigmoid, softplus),
a convolution after the flatten or pooling, an activation on the raw inputs (not Gaussian).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ntksolve._jit import cntk as _jit
from ntksolve._jit.analytic import run_in_threads
from ntksolve._jit.expectations import CLOSED_FORM_CODES
from ntksolve._validation import check_inputs, check_memory
from ntksolve.kernels.conv_empirical import ConvStack
from ntksolve.nets.conv import Conv, Flatten, GlobalAvgPool
from ntksolve.nets.layers import ACTIVATIONS, Activation, Dense

_CLOSED = tuple(name for name in ACTIVATIONS if Activation(name).code in CLOSED_FORM_CODES)


class Kernels(NamedTuple):
    """The infinite-width kernels, each ``(N1, N2)``."""

    nngp: np.ndarray
    ntk: np.ndarray


class _Prefix(NamedTuple):
    kinds: np.ndarray  # (n_ops,) CONV or ACT
    geo: np.ndarray  # (n_ops, 10) int64
    wb: np.ndarray  # (n_ops, 2): sigma_w^2, sigma_b^2
    codes: np.ndarray  # (n_ops,) activation codes
    prms: np.ndarray  # (n_ops, 2) activation parameters
    C0: int
    S0: int
    s_max: int
    full: bool  # ends in global average pooling (the full spatial covariance is needed)
    tail: tuple  # the layers after the pooling or flatten


def _check_activation(layer: Activation, pos: int) -> None:
    if layer.code not in CLOSED_FORM_CODES:
        raise ValueError(f"layer {pos} ({layer!r}) has no closed-form layer map, which the analytic kernels of a "
                         f"convolutional network need; use one of {', '.join(_CLOSED)} (or the abrelu, monomial "
                         f"families), or the empirical kernels")


def _prefix(net: ConvStack) -> _Prefix:
    """The operation table of the prefix, and the tail; ValueError for a layer order with no kernel."""
    layers = net.layers
    for layer in layers:
        if isinstance(layer, (Dense, Conv)) and not layer.has_infinite_width_limit:
            raise ValueError(f"{layer!r}: the standard parameterisation has no infinite-width limit, hence no "
                             f"analytic kernel; use parameterization='ntk' or the empirical kernels")
    if not isinstance(layers[0], Conv):
        raise ValueError(f"the analytic kernels of a convolutional network need a Conv first (an activation of "
                         f"the raw inputs is not Gaussian), got {layers[0]!r}; a network without convolutions "
                         f"is an MLP (ntksolve.analytic_kernels)")
    kinds, geo, wb, codes, prms = [], [], [], [], []
    end = None
    s_max = int(np.prod(net.input_shape[:-1]))
    for pos, layer in enumerate(layers):
        if isinstance(layer, (GlobalAvgPool, Flatten)):
            end = pos
            break
        if isinstance(layer, Conv):
            g = layer.geometry(net.shapes[pos])
            kinds.append(_jit.CONV)
            geo.append([g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow])
            wb.append((layer.weight_std**2, layer.forward_bias_std**2))
            codes.append(0)
            prms.append((0.0, 0.0))
            s_max = max(s_max, g.n_out)
        elif isinstance(layer, Activation):
            _check_activation(layer, pos)
            kinds.append(_jit.ACT)
            geo.append([0] * 10)
            wb.append((0.0, 0.0))
            codes.append(layer.code)
            prms.append(layer.params)
        else:  # a Dense on spatial inputs is refused by ConvStack already
            raise ValueError(f"layer {pos} ({layer!r}) cannot act on spatial features")
    if end is None:  # pragma: no cover - ConvStack requires a flat output
        raise ValueError("the convolutions must end in GlobalAvgPool() or Flatten()")
    tail = layers[end + 1:]
    for pos, layer in enumerate(tail, start=end + 1):
        if isinstance(layer, (Conv, GlobalAvgPool, Flatten)):
            raise ValueError(f"layer {pos} ({layer!r}) comes after the features were pooled or flattened: a "
                             f"convolutional network here is convolutions, then one pooling or flatten, then "
                             f"dense layers")
        if isinstance(layer, Activation):
            _check_activation(layer, pos)
    full = isinstance(layers[end], GlobalAvgPool)
    return _Prefix(np.array(kinds, dtype=np.int64), np.array(geo, dtype=np.int64).reshape(-1, 10),
                   np.array(wb, dtype=np.float64).reshape(-1, 2), np.array(codes, dtype=np.int64),
                   np.array(prms, dtype=np.float64).reshape(-1, 2), int(net.input_shape[-1]),
                   int(np.prod(net.input_shape[:-1])), int(s_max), full, tuple(tail))


def _variances(pre: _Prefix, X: np.ndarray) -> np.ndarray:
    out = np.zeros((X.shape[0], pre.kinds.shape[0], pre.s_max))
    run_in_threads(_jit.variances, X, pre.kinds, pre.geo, pre.wb, pre.codes, pre.prms, pre.C0, pre.S0,
                   pre.s_max, out)
    return out


def _prefix_kernels(pre: _Prefix, X1, X2, V1, V2, symmetric):
    N1, N2 = X1.shape[0], X2.shape[0]
    nngp, ntk = np.empty((N1, N2)), np.empty((N1, N2))
    run_in_threads(_jit.pair_rows, X1, X2, V1, V2, symmetric, pre.kinds, pre.geo, pre.wb, pre.codes, pre.prms,
                   pre.C0, pre.S0, pre.s_max, pre.full, nngp, ntk)
    return nngp, ntk


def _pooled_variances(pre: _Prefix, X, V):
    """Each input's own kernel after the prefix (its pair with itself)."""
    out = np.empty(X.shape[0])
    run_in_threads(_jit.self_pairs, X, V, pre.kinds, pre.geo, pre.wb, pre.codes, pre.prms, pre.C0, pre.S0,
                   pre.s_max, pre.full, out)
    return out


def cntk_kernels(net: ConvStack, X1, X2=None) -> Kernels:
    """The analytic NNGP and NTK of a convolutional network (module docstring).

    Parameters
    ----------
    net : ConvStack
        In NTK parameterisation; the layer order of the module docstring.
    X1 : array_like, shape (N1, prod(input_shape))
        Inputs, channels last, read row-major (:mod:`ntksolve.nets.conv`).
    X2 : array_like, shape (N2, prod(input_shape)), optional
        Defaults to ``X1`` (symmetric: one triangle is computed).

    Returns
    -------
    Kernels
        ``nngp`` and ``ntk``, each ``(N1, N2)``, float64.
    """
    if not isinstance(net, ConvStack):
        raise TypeError(f"net must be a ConvStack (layers and an input shape), got {type(net).__name__}")
    pre = _prefix(net)
    X1 = check_inputs(X1, name="X1", n_features=net.n_features)
    symmetric = X2 is None
    X2 = X1 if symmetric else check_inputs(X2, name="X2", n_features=net.n_features)
    check_memory((X1.shape[0], X2.shape[0]), np.float64, what="analytic CNTK", copies=2.0)
    V1 = _variances(pre, X1)
    V2 = V1 if symmetric else _variances(pre, X2)
    nngp, ntk = _prefix_kernels(pre, X1, X2, V1, V2, symmetric)
    if symmetric:
        var1 = var2 = np.ascontiguousarray(np.diagonal(nngp)).copy()
    else:
        var1, var2 = _pooled_variances(pre, X1, V1), _pooled_variances(pre, X2, V2)
    for layer in pre.tail:
        if isinstance(layer, Dense):
            sw2, sb2 = layer.weight_std**2, layer.forward_bias_std**2
            nngp *= sw2
            nngp += sb2
            ntk *= sw2
            ntk += nngp
            var1 = sw2 * var1 + sb2
            var2 = var1 if symmetric else sw2 * var2 + sb2
        else:
            _jit.dense_activation(nngp, ntk, var1, var2, layer.code, layer.params)
            var1 = _jit.diagonal_activation(var1, layer.code, layer.params)
            var2 = var1 if symmetric else _jit.diagonal_activation(var2, layer.code, layer.params)
    return Kernels(nngp, ntk)


__all__ = ["cntk_kernels", "Kernels"]
