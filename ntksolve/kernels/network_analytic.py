"""The analytic (infinite-width) NNGP and NTK of a :class:`~ntksolve.nets.network.Network`.

The kernels are carried through the layers as a :class:`~ntksolve.nets.layer_protocol.KernelState`
(whole matrices), each layer applying its map (:meth:`~ntksolve.nets.layer_protocol.Layer.analytic`)::

    Dense          K -> sw^2 K + sb^2                 Theta -> sw^2 Theta + (sw^2 K + sb^2)
    activation     K -> E[phi(u) phi(v)]              Theta -> E[phi'(u) phi'(v)] Theta
    Residual       K -> K + s^2 K_block(K)            Theta -> Theta + s^2 Theta_block
    LayerNorm      K -> K / sqrt((K11 + eps)(K22 + eps)), and Theta alike

(neural-tangents' ``stax`` maps; ``(u, v)`` Gaussian with the state's covariances). Layers before
the first parametrised one act on the inputs themselves, exactly as in the finite network; the
state then starts from ``<x, x'> / d``. A network that is an MLP runs on the MLP's path
(:func:`ntksolve.kernels.analytic.analytic_kernels`).
"""
from __future__ import annotations

import numpy as np

from ntksolve._config import ANALYTIC_MAX_VARIANCE, ANALYTIC_MAX_VARIANCE_BOUNDED
from ntksolve._jit.analytic import _mirror_rows, run_in_threads
from ntksolve._jit.expectations import BOUNDED_CODES, LOGISTIC_CODES
from ntksolve._jit.network_analytic import CLOSED, MIXTURE, activation_rows, activation_variances
from ntksolve._validation import check_inputs, check_memory
from ntksolve.kernels._analytic_rules import logistic_mixture_rule
from ntksolve.nets.layer_protocol import KernelState
from ntksolve.nets.network import Network, check_network

_EMPTY = np.zeros(0)


def _check_variance(phi, state: KernelState) -> None:
    limit = ANALYTIC_MAX_VARIANCE_BOUNDED if phi.code in BOUNDED_CODES else ANALYTIC_MAX_VARIANCE
    top = max(float(state.var1.max()), float(state.var2.max()))
    if not top <= limit:
        raise ValueError(f"the pre-activation variance before {phi.name} reaches {top:.3g}, above {limit:.0e}, the "
                         f"largest for which its analytic kernel is accurate in float64; lower the weight_std "
                         "values or the depth, or standardise the features")


def activation_map(phi, state: KernelState) -> KernelState:
    """The element-wise activation's map of ``state`` (:mod:`ntksolve._jit.network_analytic`)."""
    if len(state.shape) != 1:
        raise ValueError(f"the analytic kernel of {phi.name} is implemented on flat features; got per-example "
                         f"shape {state.shape}")
    if not state.gaussian:
        raise ValueError(f"the analytic kernel of {phi.name} needs mean-zero Gaussian pre-activations (the output "
                         "of a Dense, a LayerNorm of one, or a sum of such); here its input is not (the inputs "
                         "themselves, an activation's output, or a residual sum with such a skip path): put a "
                         "Dense before it")
    _check_variance(phi, state)
    method = MIXTURE if phi.code in LOGISTIC_CODES else CLOSED
    mix_var, mix_w = logistic_mixture_rule(phi.code) if method == MIXTURE else (_EMPTY, _EMPTY)
    K = np.empty_like(state.nngp)
    T = np.empty_like(state.ntk)
    run_in_threads(activation_rows, state.nngp, state.ntk, K, T, state.var1, state.var2, phi.code, phi.params,
                   method, mix_var, mix_w, state.symmetric)
    var1 = activation_variances(state.var1, phi.code, phi.params, method, mix_var, mix_w)
    if state.symmetric:
        run_in_threads(_mirror_rows, K, T)
        np.fill_diagonal(K, var1)
        var2 = var1
    else:
        var2 = activation_variances(state.var2, phi.code, phi.params, method, mix_var, mix_w)
    return state.replace(nngp=K, ntk=T, var1=var1, var2=var2, gaussian=False)


def _input_state(F1, F2, symmetric) -> KernelState:
    n = F1.shape[1]
    A1 = F1.reshape(F1.shape[0], -1)
    A2 = A1 if symmetric else F2.reshape(F2.shape[0], -1)
    d = A1.shape[1]
    K = np.dot(A1, A2.T) / d
    var1 = np.einsum("ij,ij->i", A1, A1) / d
    var2 = var1 if symmetric else np.einsum("ij,ij->i", A2, A2) / d
    if symmetric:
        np.fill_diagonal(K, var1)
        K = 0.5 * (K + K.T)  # exactly symmetric
    del n
    return KernelState(nngp=K, ntk=np.zeros_like(K), var1=var1, var2=var2, symmetric=symmetric,
                       shape=tuple(F1.shape[1:]), at_input=True, expect=activation_map,
                       inputs=(F1, F1 if symmetric else F2))


def _apply_prefix(net, layers, X):
    h = X
    for layer in layers:
        h = layer.forward((), h, False)[0]
    return h


def network_analytic_kernels(net: Network, X1, X2=None):
    """The infinite-width NNGP and NTK of a network (NTK parameterisation), ``(N1, N2)`` each.

    Parameters
    ----------
    net : Network
    X1 : array_like, shape (N1, *input_shape)
    X2 : array_like, shape (N2, *input_shape), optional (defaults to ``X1``)

    Returns
    -------
    Kernels
        ``(nngp, ntk)``, float64, times ``I_k`` over the outputs.

    Raises
    ------
    ValueError
        Standard parameterisation; a layer without an analytic map or in an order that has none
        (the message names it); a variance out of the accurate range.
    """
    from ntksolve.kernels.analytic import Kernels

    net = check_network(net)
    if not net.supports_analytic:
        raise ValueError("analytic kernels are defined in NTK parameterisation only: in standard parameterisation "
                         "the infinite-width NTK grows without bound with width. Use Network(..., "
                         "parameterization='ntk'), or empirical_ntk for a finite network")
    X1 = np.asarray(X1, dtype=np.float64) if not isinstance(X1, np.ndarray) else X1
    if X1.ndim < 2:
        raise ValueError(f"X1 must have shape (N, *input_shape), got shape {X1.shape}")
    shape = X1.shape[1:]
    net.shapes(shape)
    X1 = check_inputs(X1.reshape(X1.shape[0], -1), name="X1").reshape(X1.shape)
    symmetric = X2 is None
    if not symmetric:
        X2 = np.asarray(X2)
        if X2.shape[1:] != shape:
            raise ValueError(f"X2 has per-example shape {X2.shape[1:]}, but X1 has {shape}")
        X2 = check_inputs(X2.reshape(X2.shape[0], -1), name="X2").reshape(X2.shape)
    N2 = X1.shape[0] if symmetric else X2.shape[0]
    check_memory((4, X1.shape[0], N2), np.float64, what="analytic kernels of a network (NNGP, NTK and the next "
                 "layer's)", hint="use fewer inputs")
    first = next(i for i, layer in enumerate(net.layers) if layer.leaves())
    prefix = net.layers[:first]
    for i, layer in enumerate(prefix):
        s = net.shapes(shape)[i]
        if getattr(layer, "normalizes", False) and s[-1] == 1:
            raise ValueError(f"layer {i} ({layer.name}) normalises over one input feature, which makes every "
                             "input 0: the kernels are degenerate. Remove it or give the inputs more features")
    F1 = _apply_prefix(net, prefix, X1)
    F2 = None if symmetric else _apply_prefix(net, prefix, X2)
    state = _input_state(F1, F2, symmetric)
    for i, layer in enumerate(net.layers[first:], start=first):
        try:
            state = layer.analytic(state)
        except ValueError as exc:
            raise ValueError(f"layer {i} ({layer.name}): {exc}") from None
    if len(state.shape) != 1:
        raise ValueError(f"the network's output has per-example shape {state.shape}; it must be flat")
    if not (np.all(np.isfinite(state.nngp)) and np.all(np.isfinite(state.ntk))):
        raise ValueError("the analytic kernels overflowed: lower the weight_std values or standardise the features")
    return Kernels(nngp=np.ascontiguousarray(state.nngp), ntk=np.ascontiguousarray(state.ntk))


__all__ = ["network_analytic_kernels", "activation_map"]
