"""The analytic kernels of convolutions: the CNTK of Arora et al. (2019), carried through a network.

The driver (:mod:`ntksolve.kernels.network_analytic`) passes a
:class:`~ntksolve.nets.layer_protocol.KernelState` through the layers. Spatial covariances do not
fit its ``(N1, N2)`` matrices (a pair of 8 x 8 images has 4096 of them per layer), so a
convolution *records* itself instead: :func:`conv_map` turns the state into a pending
:class:`SpatialPrefix` (the exact inputs and the list of operations so far), the activations
that follow append their maps to it (the state's ``expect`` is :func:`_spatial_activation` while
one is pending), and the :class:`~ntksolve.nets.pooling.GlobalAvgPool` or
:class:`~ntksolve.nets.pooling.Flatten` that ends the convolutions computes every pair at once in
numba (:mod:`ntksolve._jit.cntk`, whose docstring has the recursion): on the full ``S x S``
covariance of each pair after pooling, on its ``S`` diagonal entries after a flatten (a
convolution maps the diagonal to itself). The flat state it returns goes on through the dense
layers as usual. Values agree with neural-tangents' ``stax`` kernels (``tests/reference_nt``).

Refused, with the layer named by the driver: an activation without a closed-form layer map
(tanh, sigmoid, softplus: their mixture rule is not implemented on spatial covariances), a
convolution whose input is neither the network's input nor another convolution's output, an
activation after a :class:`~ntksolve.nets.pooling.Flatten` of more than one position, or after a
LayerNorm of it (its features are Gaussian with a covariance per position, not one: put the
activation before the Flatten, the same network; the LayerNorm itself, which divides by the mean
square over all positions, is exact), and variances beyond the accurate range (as for the dense
kernels).
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np

from ntksolve._config import ANALYTIC_MAX_VARIANCE, ANALYTIC_MAX_VARIANCE_BOUNDED
from ntksolve._jit import cntk as _jit
from ntksolve._jit.expectations import BOUNDED_CODES, CLOSED_FORM_CODES, PRODUCT_CODES
from ntksolve._validation import check_small_variances
from ntksolve.nets.layer_protocol import KernelState
from ntksolve.nets.layers import ACTIVATIONS, Activation

_CLOSED = tuple(name for name in ACTIVATIONS if Activation(name).code in CLOSED_FORM_CODES)


class SpatialPrefix(NamedTuple):
    """A pending convolutional prefix: inputs flat ``(N, S0 C0)``, their shape, the operations.

    ``ops`` is a tuple of ``("conv", geometry row, sigma_w^2, sigma_b^2)`` and ``("act",
    Activation)``; ``expect`` the driver's activation map, restored after the pooling.
    """

    X1: np.ndarray
    X2: np.ndarray
    input_shape: Tuple[int, ...]
    ops: tuple
    expect: object

    def tables(self):
        """The operation table of :mod:`ntksolve._jit.cntk`: kinds, geometry, weights, codes, params."""
        n = len(self.ops)
        kinds = np.empty(n, dtype=np.int64)
        geo = np.zeros((n, 10), dtype=np.int64)
        wb = np.zeros((n, 2))
        codes = np.zeros(n, dtype=np.int64)
        prms = np.zeros((n, 2))
        for o, op in enumerate(self.ops):
            if op[0] == "conv":
                kinds[o] = _jit.CONV
                geo[o] = op[1]
                wb[o] = op[2], op[3]
            else:
                kinds[o] = _jit.ACT
                codes[o] = op[1].code
                prms[o] = op[1].params
        return kinds, geo, wb, codes, prms


def conv_map(layer, state: KernelState) -> KernelState:
    """Record ``layer`` (a :class:`~ntksolve.nets.conv.Conv`) on the state (module docstring)."""
    prefix = state.nngp
    if not isinstance(prefix, SpatialPrefix):
        if not (state.at_input and state.inputs is not None and len(state.shape) > 1):
            raise ValueError(
                f"a convolution's analytic kernel is computed from the exact inputs or from another "
                f"convolution's output; here it follows a layer that produced per-example shape "
                f"{state.shape} without them"
            )
        X1, X2 = state.inputs
        X1 = np.ascontiguousarray(X1, dtype=np.float64).reshape(X1.shape[0], -1)
        X2 = X1 if state.symmetric else np.ascontiguousarray(X2, dtype=np.float64).reshape(X2.shape[0], -1)
        prefix = SpatialPrefix(X1, X2, tuple(state.shape), (), state.expect)
    g = layer.geometry(state.shape)
    op = (
        "conv",
        (g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow),
        layer.weight_std**2,
        layer.forward_bias_std**2,
    )
    return state.replace(
        nngp=prefix._replace(ops=prefix.ops + (op,)),
        ntk=None,
        shape=layer.output_shape(state.shape),
        at_input=False,
        expect=_spatial_activation,
        gaussian=True,
        mean_zero=True,
    )


def _spatial_activation(phi: Activation, state: KernelState) -> KernelState:
    """An activation on pending spatial features: appended to the prefix."""
    if phi.code not in CLOSED_FORM_CODES:
        raise ValueError(
            f"{phi.name} has no closed-form layer map, which the analytic kernels of convolutions "
            f"need; use one of {', '.join(_CLOSED)} (or the abrelu and monomial families), or the "
            f"empirical kernels"
        )
    if not state.gaussian:
        raise ValueError(
            f"{phi.name} follows another activation: its analytic kernel needs Gaussian "
            f"pre-activations (a convolution's output); put a Conv before it"
        )
    prefix = state.nngp
    return state.replace(nngp=prefix._replace(ops=prefix.ops + (("act", phi),)), gaussian=False, mean_zero=False)


def _check_variances(prefix: SpatialPrefix, kinds, codes, V) -> None:
    for o, op in enumerate(prefix.ops):
        if op[0] != "act":
            continue
        limit = ANALYTIC_MAX_VARIANCE_BOUNDED if codes[o] in BOUNDED_CODES else ANALYTIC_MAX_VARIANCE
        top = float(V[:, o].max())
        if not top <= limit:
            raise ValueError(
                f"the pre-activation variance before {op[1].name} reaches {top:.3g}, above {limit:.0e}, "
                f"the largest for which its analytic kernel is accurate in float64; lower the "
                f"weight_std values or the depth, or standardise the inputs"
            )
        if codes[o] in PRODUCT_CODES:
            check_small_variances(op[1].name, V[:, o])


def pool_map(layer, state: KernelState, *, full: bool) -> KernelState:
    """Compute the pending prefix ending in ``layer`` (pooling: ``full``; flatten: the diagonal)."""
    prefix = state.nngp
    if not isinstance(prefix, SpatialPrefix):
        raise ValueError(
            f"{layer.name}'s analytic kernel ends a run of convolutions; here nothing spatial is "
            f"pending (per-example shape {state.shape})"
        )
    kinds, geo, wb, codes, prms = prefix.tables()
    C0 = int(prefix.input_shape[-1])
    S0 = int(np.prod(prefix.input_shape[:-1]))
    s_max = max([S0] + [int(g[8] * g[9]) for g, k in zip(geo, kinds) if k == _jit.CONV])
    args = (kinds, geo, wb, codes, prms, C0, S0, s_max)

    def variances(X):
        V = np.zeros((X.shape[0], kinds.shape[0], s_max))
        state.rows(_jit.variances, X, *args, V)
        _check_variances(prefix, kinds, codes, V)
        return V

    X1, X2 = prefix.X1, prefix.X2
    V1 = variances(X1)
    V2 = V1 if state.symmetric else variances(X2)
    N1, N2 = X1.shape[0], X2.shape[0]
    K, T = np.empty((N1, N2)), np.empty((N1, N2))
    state.rows(_jit.pair_rows, X1, X2, V1, V2, state.symmetric, *args, full, K, T)

    def own(X, V):  # each input with itself: the variances of the flat features
        out = np.empty(X.shape[0])
        state.rows(_jit.self_pairs, X, V, *args, full, out)
        return out

    var1 = np.diagonal(K).copy() if state.symmetric else own(X1, V1)
    var2 = var1 if state.symmetric else own(X2, V2)
    # pooled pre-activations are Gaussian with the state's covariance; features after an activation
    # are not. Flattened pre-activations are Gaussian per position, each with its own covariance:
    # the state holds their mean, on which an activation's map is not the mean of its maps (an
    # activation after a Flatten is the same network as one before it, which the prefix computes);
    # a LayerNorm divides by their mean square over all positions, the state's variance: exact
    positions = int(np.prod(state.shape[:-1]))
    return state.replace(
        nngp=K,
        ntk=T,
        var1=var1,
        var2=var2,
        shape=layer.output_shape(state.shape),
        at_input=False,
        expect=prefix.expect,
        inputs=None,
        gaussian=prefix.ops[-1][0] == "conv" and (full or positions == 1),
        mean_zero=prefix.ops[-1][0] == "conv",  # a normalisation over all the features is exact
    )


__all__ = ["SpatialPrefix", "conv_map", "pool_map"]
