"""The empirical NTK, NNGP and Jacobian of a network with convolutions, without the Jacobian.

A network here is a sequence of layers -- :class:`~ntksolve.nets.conv.Conv`,
:class:`~ntksolve.nets.layers.Activation`, :class:`~ntksolve.nets.conv.GlobalAvgPool`,
:class:`~ntksolve.nets.conv.Flatten`, :class:`~ntksolve.nets.layers.Dense` -- on inputs of a
given shape, read from the rows of ``X`` (:mod:`ntksolve.nets.conv` for the layout). With
``delta^l_a = df_a / dz^l`` from the one backward pass and ``(c_l, beta_l)`` the layer's
:attr:`~ntksolve.nets.layers.LayerScales.ntk_coefficients`, the NTK is a sum over the trained
layers:

- dense: ``<delta_a(x), delta_b(x')> (c <h(x), h(x')> + beta)`` (two Gram matrices);
- convolution: ``c <G_a(x), G_b(x')> + beta <s_a(x), s_b(x')>`` with the per-example weight
  gradient ``G_a(x) = sum_p delta_a,p(x) P_p(x)^T`` (``channels x C_in kh kw``, one batched GEMM of
  the deltas and the patches) and ``s_a = sum_p delta_a,p``.

Why the per-example gradient and not the spatial form ``sum_{p,q} <delta_p, delta'_q> <P_p, P'_q>``:
per pair of inputs the gradient Gram costs ``k C_out C_in kh kw`` multiply-adds and the spatial form
``S^2 (k C_out + C_in kh kw)`` (``S`` output positions). For the networks of images this package
targets (``S = 64``, 32 channels, 3 x 3 kernels) the first is 20-50x fewer; the spatial form only
wins for very wide layers on a handful of positions. The gradients of a block of inputs are held
at once, the block sized by ``_config.EMPIRICAL_BLOCK_BYTES``.
"""
from __future__ import annotations

import numbers
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ntksolve import _config
from ntksolve._jit import empirical as _jit_dense
from ntksolve._validation import check_dtype, check_inputs, check_memory
from ntksolve.nets.conv import Conv, Flatten, GlobalAvgPool
from ntksolve.nets.layers import Activation, Dense


class ConvStack:
    """A validated sequence of layers on inputs of one shape: the shapes between them and the
    trained layers (:class:`Dense`, :class:`Conv`) in order.

    Parameters
    ----------
    layers : sequence of layers
    input_shape : tuple of int
        ``(H, W, C)``, ``(T, C)`` or ``(d,)``: the shape of one input (``X`` has ``prod`` columns).
    """

    def __init__(self, layers: Sequence, input_shape) -> None:
        layers = tuple(layers)
        shape = tuple(int(s) for s in input_shape)
        if not layers:
            raise ValueError("a network needs at least one layer")
        shapes = [shape]
        for pos, layer in enumerate(layers):
            if isinstance(layer, Dense):
                if len(shape) != 1:
                    raise ValueError(f"layer {pos} ({layer!r}) is dense but its input has spatial shape {shape}: "
                                     f"put Flatten() or GlobalAvgPool() before it")
                shape = (layer.width,)
            elif isinstance(layer, Conv):
                if len(shape) != layer.ndim + 1:
                    raise ValueError(f"layer {pos} ({layer!r}) is a {layer.ndim}-D convolution but its input has "
                                     f"shape {shape}; it needs {'(H, W, C)' if layer.ndim == 2 else '(T, C)'}")
                try:
                    shape = layer.output_shape(shape)
                except ValueError as exc:
                    raise ValueError(f"layer {pos}: {exc}") from None
            elif isinstance(layer, (GlobalAvgPool, Flatten)):
                try:
                    shape = layer.output_shape(shape)
                except ValueError as exc:
                    raise ValueError(f"layer {pos}: {exc}") from None
            elif isinstance(layer, Activation):
                pass
            else:
                raise TypeError(f"layer {pos} is a {type(layer).__name__}; the layers of a convolutional network "
                                f"are Conv, Activation, GlobalAvgPool, Flatten and Dense")
            shapes.append(shape)
        if len(shape) != 1:
            raise ValueError(f"the network's output has spatial shape {shape}: end it with GlobalAvgPool() or "
                             f"Flatten() and a Dense readout")
        self.layers = layers
        self.input_shape = shapes[0]
        self.shapes = tuple(shapes)  # shapes[i]: the input of layers[i]; shapes[-1]: the output
        self.trained = tuple(i for i, layer in enumerate(layers) if isinstance(layer, (Dense, Conv)))
        if not self.trained:
            raise ValueError("the network has no trained layer (Dense or Conv)")
        self.n_features = int(np.prod(self.input_shape))
        self.n_outputs = shape[0]
        self.scales = tuple(layers[i].scales(self._fan(i)) for i in self.trained)

    def _fan(self, i):
        layer = self.layers[i]
        return self.shapes[i] if isinstance(layer, Conv) else self.shapes[i][0]

    def param_shapes(self):
        return [self.layers[i].param_shapes(self._fan(i)) for i in self.trained]

    def n_params(self) -> int:
        return int(sum(np.prod(w) + b[0] for w, b in self.param_shapes()))

    def init(self, random_state=None, dtype=np.float64):
        """Every entry of every ``W`` and ``b`` i.i.d. standard normal: one ``(W, b)`` per trained layer."""
        from ntksolve.nets.mlp import _as_generator

        rng, dt = _as_generator(random_state), check_dtype(dtype)
        return [(rng.standard_normal(w).astype(dt), rng.standard_normal(b).astype(dt)) for w, b in self.param_shapes()]

    def check_params(self, params) -> np.dtype:
        shapes = self.param_shapes()
        if not isinstance(params, (list, tuple)) or len(params) != len(shapes):
            raise ValueError(f"params must be a list of {len(shapes)} (W, b) pairs, one per trained layer; "
                             f"create them with .init(...)")
        dt = np.asarray(params[0][0]).dtype
        if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"parameters must be float64 or float32, got {dt}")
        for pos, ((W, b), (ws, bs)) in enumerate(zip(params, shapes)):
            if np.shape(W) != ws or np.shape(b) != bs:
                raise ValueError(f"trained layer {pos}: expected W of shape {ws} and b of shape {bs}, got "
                                 f"{np.shape(W)} and {np.shape(b)}")
            if np.asarray(W).dtype != dt or np.asarray(b).dtype != dt:
                raise ValueError(f"all parameters must share one dtype ({dt}); trained layer {pos} differs")
            if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
                raise ValueError(f"trained layer {pos}'s parameters contain NaN or infinity")
        return dt

    # -- passes ------------------------------------------------------------------------------
    def forward(self, params, X: np.ndarray, keep: bool = True):
        """Outputs ``(N, k)``; with ``keep`` also each trained layer's input (dense: ``h``
        ``(N, n_in)``, convolution: its patches ``(N, S, F)``) and each activation's ``phi'(z)``
        (flat, ``(N, size)``)."""
        N = X.shape[0]
        h = X
        inputs, dphis = [], []
        t = 0
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                W, b = params[t]
                s = self.scales[t]
                h = h.reshape(N, -1)
                if keep:
                    inputs.append(h)
                z = np.dot(h, W.T)
                z *= s.weight
                if layer.bias:
                    z += s.bias * b
                h, t = z, t + 1
            elif isinstance(layer, Conv):
                W, b = params[t]
                geo = layer.geometry(self.shapes[i])
                cols = layer.patches(h, geo)
                if keep:
                    inputs.append(cols)
                h, t = layer.pre_activation(W, b, cols, self.scales[t]).reshape(N, -1), t + 1
            elif isinstance(layer, GlobalAvgPool):
                h = layer.apply(h.reshape((N,) + self.shapes[i]))
            elif isinstance(layer, Flatten):
                h = h.reshape(N, -1)
            else:  # Activation
                z = np.ascontiguousarray(h.reshape(N, -1))
                h = np.empty_like(z)
                dphi = np.empty_like(z) if keep else h
                one, zero = z.dtype.type(1.0), np.zeros(z.shape[1], dtype=z.dtype)
                _jit_dense.bias_act(z, zero, one, z.dtype.type(0.0), layer.code, layer.params, h, dphi, keep)
                if keep:
                    dphis.append(dphi)
        return h.reshape(N, -1), inputs, dphis

    def backward(self, params, dphis, N: int, dtype):
        """The per-output deltas of every trained layer, top first: a list (bottom first) of
        ``(N, k, size)`` arrays (``None`` for a readout that is the last layer: the identity)."""
        k = self.n_outputs
        g = None  # the identity seed, (N, k, k), formed only if a layer needs it
        deltas = [None] * len(self.trained)
        t, a = len(self.trained), len(dphis)
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if isinstance(layer, (Dense, Conv)):
                t -= 1
                deltas[t] = g
                if t == 0:
                    break
                W = params[t][0]
                ws = self.scales[t].weight
                if g is None:
                    g = np.broadcast_to(np.eye(k, dtype=dtype)[None], (N, k, k))
                if isinstance(layer, Dense):
                    g = np.dot(g.reshape(N * k, -1), W).reshape(N, k, -1)
                    g *= ws
                else:
                    geo = layer.geometry(self.shapes[i])
                    g = layer.pull_back(W, g.reshape(N * k, geo.n_out, layer.channels), geo, ws).reshape(N, k, -1)
            elif isinstance(layer, GlobalAvgPool):
                if g is None:
                    g = np.broadcast_to(np.eye(k, dtype=dtype)[None], (N, k, k))
                g = layer.pull_back(g.reshape(N * k, -1), self.shapes[i]).reshape(N, k, -1)
            elif isinstance(layer, Activation):
                a -= 1
                if g is None:
                    g = np.broadcast_to(np.eye(k, dtype=dtype)[None], (N, k, k))
                g = g * dphis[a][:, None, :]
        return deltas


def _check_stack(net) -> ConvStack:
    if not isinstance(net, ConvStack):
        raise TypeError(f"net must be a ConvStack (layers and an input shape), got {type(net).__name__}")
    return net


def _layer_features(net: ConvStack, params, X: np.ndarray):
    """Per trained layer, what its NTK term needs of a block of inputs: ``("dense", delta, h)`` or
    ``("conv", G, s)`` (the per-example gradients ``(B, k, P_w)`` and summed deltas ``(B, k, C)``)."""
    N = X.shape[0]
    _, inputs, dphis = net.forward(params, X, keep=True)
    deltas = net.backward(params, dphis, N, X.dtype)
    feats = []
    for t, i in enumerate(net.trained):
        layer, d, x = net.layers[i], deltas[t], inputs[t]
        if isinstance(layer, Dense):
            feats.append(("dense", d, x))
        else:
            g4 = np.broadcast_to(np.eye(net.n_outputs, dtype=X.dtype)[None], (N,) * 1 + (net.n_outputs,) * 2) \
                if d is None else d
            g4 = g4.reshape(N, net.n_outputs, x.shape[1], layer.channels)
            G = Conv.weight_gradients(g4, x).reshape(N, net.n_outputs, -1)
            feats.append(("conv", G, g4.sum(axis=2) if layer.bias else None))
    return feats


def _gram(A, B):
    return np.dot(A, A.T) if B is None else np.dot(A, B.T)


def _add_tile(net: ConvStack, theta, FI, FJ, trace: bool) -> None:
    """Add every trained layer's NTK term between two blocks (``FJ is None``: a block with itself)."""
    k = net.n_outputs
    for t, fi in enumerate(FI):
        c, beta = net.scales[t].ntk_coefficients
        fj = None if FJ is None else FJ[t]
        kind, A, Bv = fi
        BI = A.shape[0] if A is not None else Bv.shape[0]
        if kind == "dense":
            h_i, h_j = Bv, (None if fj is None else fj[2])
            Gh = c * _gram(h_i, h_j) + beta
            if A is None:  # the readout: <delta_a, delta_b> = [a == b]
                if trace:
                    theta += Gh
                else:
                    theta += Gh[:, :, None, None] * np.eye(k, dtype=theta.dtype)
                continue
            d_j = None if fj is None else fj[1]
            if trace:
                theta += _gram(A.reshape(BI, -1), None if d_j is None else d_j.reshape(d_j.shape[0], -1)) / k * Gh
            else:
                n = A.shape[2]
                Gd = _gram(A.reshape(-1, n), None if d_j is None else d_j.reshape(-1, n))
                BJ = Gd.shape[1] // k
                theta += Gd.reshape(BI, k, BJ, k).transpose(0, 2, 1, 3) * Gh[:, :, None, None]
        else:
            terms = [(c, A, None if fj is None else fj[1])]
            if Bv is not None:
                terms.append((beta, Bv, None if fj is None else fj[2]))
            for coef, M_i, M_j in terms:
                if trace:
                    G = _gram(M_i.reshape(BI, -1), None if M_j is None else M_j.reshape(M_j.shape[0], -1))
                    theta += (coef / k) * G
                else:
                    P = M_i.shape[2]
                    G = _gram(M_i.reshape(-1, P), None if M_j is None else M_j.reshape(-1, P))
                    BJ = G.shape[1] // k
                    theta += coef * G.reshape(BI, k, BJ, k).transpose(0, 2, 1, 3)


def _feature_bytes_per_row(net: ConvStack, itemsize: int) -> int:
    k, total = net.n_outputs, 0
    for i, shape in zip(range(len(net.layers)), net.shapes):
        layer = net.layers[i]
        size = int(np.prod(net.shapes[i + 1]))
        total += size * (2 + k)  # the layer's output, phi', its delta
        if isinstance(layer, Conv):
            geo = layer.geometry(shape)
            total += geo.n_out * geo.fan_in * 2 + k * layer.channels * geo.fan_in  # patches, their pull-back, G
    return itemsize * total


def empirical_ntk(net: ConvStack, params, X1, X2=None, *, trace: bool = True, block_size: Optional[int] = None):
    """The empirical NTK of a network with convolutions (module docstring for the formula).

    Parameters
    ----------
    net : ConvStack
    params : list of (W, b), one per trained layer (``net.init``); float64 or float32
    X1 : array_like, shape (N1, prod(input_shape))
    X2 : array_like, shape (N2, prod(input_shape)), optional (defaults to ``X1``: symmetric)
    trace : bool, default True
        The mean over outputs, ``(N1, N2)``; ``False``: the full ``(N1, N2, k, k)``.
    block_size : int, optional
        Inputs whose gradients are held at once (default: as many as fit in
        ``_config.EMPIRICAL_BLOCK_BYTES``).

    Returns
    -------
    theta : ndarray, shape (N1, N2) or (N1, N2, k, k)
    """
    net = _check_stack(net)
    dt = net.check_params(params)
    X1 = check_inputs(X1, name="X1", n_features=net.n_features, dtype=dt)
    symmetric = X2 is None
    X2 = X1 if symmetric else check_inputs(X2, name="X2", n_features=net.n_features, dtype=dt)
    N1, N2, k = X1.shape[0], X2.shape[0], net.n_outputs
    shape = (N1, N2) if trace else (N1, N2, k, k)
    check_memory(shape, dt, what="empirical NTK")
    if block_size is None:
        bs = max(1, min(max(N1, N2), _config.EMPIRICAL_BLOCK_BYTES // max(_feature_bytes_per_row(net, dt.itemsize), 1)))
    elif isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral) or block_size <= 0:
        raise ValueError(f"block_size must be a positive int (rows of inputs per block) or None, got {block_size!r}")
    else:
        bs = int(block_size)
    theta = np.zeros(shape, dtype=dt)
    starts1 = range(0, N1, bs)
    if symmetric:
        for I0 in starts1:
            I1 = min(I0 + bs, N1)
            FI = _layer_features(net, params, X1[I0:I1])
            for J0 in range(0, I0, bs):
                J1 = min(J0 + bs, N1)
                tile = np.zeros((I1 - I0, J1 - J0) + shape[2:], dtype=dt)
                _add_tile(net, tile, FI, _layer_features(net, params, X1[J0:J1]), trace)
                theta[I0:I1, J0:J1] = tile
                theta[J0:J1, I0:I1] = tile.transpose((1, 0) + ((3, 2) if not trace else ()))
            tile = np.zeros((I1 - I0, I1 - I0) + shape[2:], dtype=dt)
            _add_tile(net, tile, FI, None, trace)
            theta[I0:I1, I0:I1] = tile
    else:
        F2 = _layer_features(net, params, X2) if N2 <= bs else None
        for I0 in starts1:
            I1 = min(I0 + bs, N1)
            FI = _layer_features(net, params, X1[I0:I1])
            for J0 in range(0, N2, bs):
                J1 = min(J0 + bs, N2)
                FJ = F2 if F2 is not None else _layer_features(net, params, X2[J0:J1])
                tile = np.zeros((I1 - I0, J1 - J0) + shape[2:], dtype=dt)
                _add_tile(net, tile, FI, FJ, trace)
                theta[I0:I1, J0:J1] = tile
    return theta


def jacobian(net: ConvStack, params, X) -> np.ndarray:
    """The explicit Jacobian ``(N, k, P)`` (for checking): per trained layer ``W`` row-major in its
    stored layout, then ``b``; derivatives with respect to the trained variables."""
    net = _check_stack(net)
    dt = net.check_params(params)
    X = check_inputs(X, n_features=net.n_features, dtype=dt)
    N, k = X.shape[0], net.n_outputs
    check_memory((N, k, net.n_params()), dt, what="Jacobian", hint="use empirical_ntk, which never forms it")
    _, inputs, dphis = net.forward(params, X, keep=True)
    deltas = net.backward(params, dphis, N, dt)
    blocks = []
    eye = np.broadcast_to(np.eye(k, dtype=dt)[None], (N, k, k))
    for t, i in enumerate(net.trained):
        layer, s, x = net.layers[i], net.scales[t], inputs[t]
        d = eye if deltas[t] is None else deltas[t]
        if isinstance(layer, Dense):
            blocks.append((s.grad_weight * d[:, :, :, None] * x[:, None, None, :]).reshape(N, k, -1))
            if layer.bias:
                blocks.append(s.grad_bias * d)
        else:
            g4 = d.reshape(N, k, x.shape[1], layer.channels)
            blocks.append(s.grad_weight * Conv.weight_gradients(g4, x).reshape(N, k, -1))
            if layer.bias:
                blocks.append(s.grad_bias * g4.sum(axis=2))
    return np.concatenate(blocks, axis=2)


def empirical_nngp(net: ConvStack, params, X1, X2=None) -> np.ndarray:
    """The readout's input kernel ``sigma_w^2 / n <h(x), h(x')> + sigma_b^2``, ``(N1, N2)``; the
    last layer must be dense."""
    net = _check_stack(net)
    last = net.trained[-1]
    if last != len(net.layers) - 1 or not isinstance(net.layers[last], Dense):
        raise ValueError("empirical_nngp needs a network whose last layer is a Dense readout")
    dt = net.check_params(params)
    X1 = check_inputs(X1, name="X1", n_features=net.n_features, dtype=dt)
    h1 = net.forward(params, X1)[1][-1]
    h2 = h1 if X2 is None else net.forward(
        params, check_inputs(X2, name="X2", n_features=net.n_features, dtype=dt))[1][-1]
    s = net.scales[-1]
    return s.weight**2 * np.dot(h1, h2.T) + s.bias**2


__all__ = ["ConvStack", "empirical_ntk", "empirical_nngp", "jacobian"]
