"""Convolutions in one and two dimensions, global average pooling and flattening.

Layout: channels last. An image is ``h[y, x, c]`` (shape ``(H, W, C)``), a 1-D signal ``h[t, c]``
(shape ``(T, C)``); a batch puts the inputs first, ``(N, H, W, C)``, and a network's input ``X``
of shape ``(N, H * W * C)`` is that batch read row-major. PyTorch's ``NCHW`` maps to it by
``x.permute(0, 2, 3, 1)`` (``NCL``: ``permute(0, 2, 1)``); weights keep PyTorch's layout
``W[c_out, c_in, dy, dx]`` (1-D: ``W[c_out, c_in, dt]``).

A :class:`Conv` of ``channels`` outputs and kernel ``kh x kw`` computes, at every output pixel
``p`` with its input patch ``P_p`` (``C_in kh kw`` numbers, zero where it leaves the image)::

    z[p, :] = ws W P_p + bs b,     ws = sigma_w / sqrt(C_in kh kw),  bs = sigma_b

the dense layer of :mod:`ntksolve.nets.layers` with fan-in ``C_in kh kw``, applied to every patch
with shared weights. Its parameterisation (which variables are trained) is therefore decided
where the dense layer's is: :meth:`Conv.scales` is the :class:`~ntksolve.nets.layers.LayerScales`
of that dense layer. The per-example gradient is ``dz/dW_trained = grad_weight sum_p delta_p P_p^T``.

Strides must tile the padded input exactly (``(H + 2 p - kh) % stride == 0``): PyTorch drops the
remainder silently, and we refuse it rather than compute on part of the image.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Tuple

import numpy as np

from ntksolve._jit import conv as _jit
from ntksolve.nets.layers import Dense, LayerScales, check_width

PADDINGS = ("valid", "same")


class Geometry(NamedTuple):
    """The 2-D view of a convolution on one input shape (a 1-D one has ``H = kh = sh = 1``,
    ``ph = 0``): input ``(H, W, C)``, kernel, stride, leading padding, output ``(oh, ow)``."""

    H: int
    W: int
    C: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    oh: int
    ow: int

    @property
    def fan_in(self) -> int:
        return self.C * self.kh * self.kw

    @property
    def n_out(self) -> int:
        return self.oh * self.ow


def _ints(value, n: int, what: str, *, minimum: int) -> Tuple[int, ...]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,) * n
    try:
        out = tuple(value)
    except TypeError:
        out = None
    if (out is None or len(out) != n or any(isinstance(v, bool) or not isinstance(v, numbers.Integral)
                                            or v < minimum for v in out)):
        raise ValueError(f"{what} must be an int >= {minimum} or {n} of them (one per spatial axis), got {value!r}")
    return tuple(int(v) for v in out)


class Conv:
    """A convolution of ``channels`` outputs over 1-D signals or 2-D images.

    Parameters
    ----------
    channels : int
        Output channels.
    kernel_size : int or tuple of 1 or 2 ints
        ``k`` or ``(k,)`` for a 1-D convolution, ``(kh, kw)`` for a 2-D one (use :class:`Conv2D`
        for a square kernel given as one int).
    stride : int or tuple, default 1
    padding : {"valid", "same"} or int or tuple, default "valid"
        Zeros added on each side of each spatial axis; ``"same"`` keeps the size (stride 1 only;
        an even kernel gets the extra zero at the end, as PyTorch and XLA do).
    weight_std, bias_std, parameterization, bias
        As for :class:`~ntksolve.nets.layers.Dense` (fan-in ``C_in kh kw``).
    """

    __slots__ = ("channels", "kernel_size", "stride", "padding", "ndim", "dense")

    def __init__(self, channels: int, kernel_size, stride=1, padding="valid", weight_std: float = 1.0,
                 bias_std: float = 0.0, parameterization: str = "ntk", *, bias: bool = True) -> None:
        ks = (kernel_size,) if isinstance(kernel_size, numbers.Integral) and not isinstance(kernel_size, bool) \
            else kernel_size
        try:
            ndim = len(ks)
        except TypeError:
            ndim = 0
        if ndim not in (1, 2):
            raise ValueError(f"kernel_size must be an int (1-D), or a tuple of 1 or 2 ints (1-D or 2-D), "
                             f"got {kernel_size!r}")
        self.ndim = ndim
        self.kernel_size = _ints(ks, ndim, "kernel_size", minimum=1)
        self.stride = _ints(stride, ndim, "stride", minimum=1)
        if isinstance(padding, str):
            if padding.lower() not in PADDINGS:
                raise ValueError(f"padding must be 'valid', 'same' or a number of zeros, got {padding!r}")
            padding = padding.lower()
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError("padding='same' needs stride 1 (as in PyTorch); give the padding as a number")
        else:
            padding = _ints(padding, ndim, "padding", minimum=0)
        self.padding = padding
        self.dense = Dense(check_width(channels, "channels"), weight_std, bias_std, parameterization, bias=bias)
        self.channels = self.dense.width

    # the dense layer's description, shared
    weight_std = property(lambda self: self.dense.weight_std)
    bias_std = property(lambda self: self.dense.bias_std)
    parameterization = property(lambda self: self.dense.parameterization)
    bias = property(lambda self: self.dense.bias)
    has_infinite_width_limit = property(lambda self: self.dense.has_infinite_width_limit)
    stores_trained_bias = property(lambda self: self.dense.stores_trained_bias)
    forward_bias_std = property(lambda self: self.dense.forward_bias_std)

    def __repr__(self) -> str:
        d = self.dense
        ks = self.kernel_size[0] if self.ndim == 1 else self.kernel_size
        return (f"Conv({self.channels}, {ks!r}, stride={self.stride!r}, padding={self.padding!r}, "
                f"weight_std={d.weight_std}, bias_std={d.bias_std}, parameterization={d.parameterization!r}"
                f"{'' if d.bias else ', bias=False'})")

    def __eq__(self, other) -> bool:
        return isinstance(other, Conv) and repr(other) == repr(self)

    def __hash__(self) -> int:
        return hash(repr(self))

    def get_config(self) -> dict:
        """The constructor arguments (JSON-serialisable)."""
        d = self.dense
        return {"channels": self.channels, "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "weight_std": d.weight_std, "bias_std": d.bias_std, "parameterization": d.parameterization,
                "bias": d.bias}

    # -- shapes ------------------------------------------------------------------------------
    def geometry(self, in_shape) -> Geometry:
        """The :class:`Geometry` on inputs of shape ``(H, W, C)`` (2-D) or ``(T, C)`` (1-D)."""
        in_shape = tuple(int(s) for s in in_shape)
        if len(in_shape) != self.ndim + 1:
            raise ValueError(f"a {self.ndim}-D convolution takes inputs of shape "
                             f"{'(H, W, C)' if self.ndim == 2 else '(T, C)'}, got shape {in_shape}")
        spatial, C = in_shape[:-1], in_shape[-1]
        geo = []
        for axis, (n, k, s) in enumerate(zip(spatial, self.kernel_size, self.stride)):
            if self.padding == "valid":
                lo = hi = 0
            elif self.padding == "same":
                lo, hi = (k - 1) // 2, k - 1 - (k - 1) // 2
            else:
                lo = hi = self.padding[axis]
            span = n + lo + hi - k
            if span < 0:
                raise ValueError(f"{self!r}: the kernel ({k}) is larger than the padded input ({n + lo + hi}) "
                                 f"along spatial axis {axis}")
            if span % s:
                raise ValueError(f"{self!r}: stride {s} does not tile the input along spatial axis {axis} "
                                 f"(size {n}, padded {n + lo + hi}, kernel {k}: {span % s} pixel(s) would be "
                                 f"dropped); change the padding or the stride so that (size + padding - kernel) "
                                 f"is a multiple of the stride")
            geo.append((k, s, lo, span // s + 1, n))
        if self.ndim == 1:
            geo.insert(0, (1, 1, 0, 1, 1))
        (kh, sh, ph, oh, H), (kw, sw, pw, ow, W) = geo
        return Geometry(H, W, C, kh, kw, sh, sw, ph, pw, oh, ow)

    def output_shape(self, in_shape) -> Tuple[int, ...]:
        g = self.geometry(in_shape)
        return (g.oh, g.ow, self.channels) if self.ndim == 2 else (g.ow, self.channels)

    def param_shapes(self, in_shape):
        """``(W.shape, b.shape)``: ``(channels, C_in, kh, kw)`` (1-D: ``(channels, C_in, k)``) and
        ``(channels,)`` (``(0,)`` without a bias)."""
        C = int(in_shape[-1])
        return (self.channels, C) + self.kernel_size, ((self.channels if self.bias else 0),)

    def scales(self, in_shape) -> LayerScales:
        """The :class:`~ntksolve.nets.layers.LayerScales` of the dense layer on each patch."""
        return self.dense.scales(self.geometry(in_shape).fan_in)

    # -- passes ------------------------------------------------------------------------------
    def patches(self, h: np.ndarray, geo: Geometry) -> np.ndarray:
        """The patch matrix of a batch ``h`` (``(N,) + in_shape``): ``(N, oh ow, C kh kw)``."""
        h4 = h.reshape(h.shape[0], geo.H, geo.W, geo.C)
        out = np.empty((h.shape[0], geo.n_out, geo.fan_in), dtype=h.dtype)
        _jit.im2col(np.ascontiguousarray(h4), geo.kh, geo.kw, geo.sh, geo.sw, geo.ph, geo.pw, geo.oh, geo.ow, out)
        return out

    def pre_activation(self, W, b, cols: np.ndarray, scales: LayerScales) -> np.ndarray:
        """``z = ws cols W^T + bs b``, shape ``(N, oh ow, channels)``, from :meth:`patches`."""
        Wm = W.reshape(W.shape[0], -1)
        z = np.dot(cols, Wm.T)
        z *= scales.weight
        if self.bias:
            z += scales.bias * b
        return z

    def pull_back(self, W, g: np.ndarray, geo: Geometry, ws: float) -> np.ndarray:
        """``d/dh`` of ``sum <g, z>`` for seeds ``g`` of shape ``(M, oh ow, channels)``:
        ``ws`` times the transposed convolution, shape ``(M, H, W, C)``."""
        cols = np.dot(g, W.reshape(W.shape[0], -1))
        if ws != 1.0:
            cols *= ws
        out = np.empty((g.shape[0], geo.H, geo.W, geo.C), dtype=g.dtype)
        _jit.col2im(cols, geo.kh, geo.kw, geo.sh, geo.sw, geo.ph, geo.pw, geo.oh, geo.ow, out)
        return out

    @staticmethod
    def weight_gradients(g: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``sum_p g[i, m, p, :] cols[i, p, :]^T`` for seeds ``g`` ``(N, m, oh ow, channels)``:
        the per-example, per-seed weight gradient before its scale, ``(N, m, channels, C kh kw)``."""
        N, m, S, Co = g.shape
        # (N, m Co, S) @ (N, S, F): one batched GEMM per input
        return np.matmul(g.transpose(0, 1, 3, 2).reshape(N, m * Co, S), cols).reshape(N, m, Co, cols.shape[2])


class Conv1D(Conv):
    """:class:`Conv` over 1-D signals ``(T, C)``: ``kernel_size``, ``stride``, ``padding`` are ints."""

    __slots__ = ()

    def __init__(self, channels: int, kernel_size: int, stride=1, padding="valid", weight_std: float = 1.0,
                 bias_std: float = 0.0, parameterization: str = "ntk", *, bias: bool = True) -> None:
        super().__init__(channels, _ints(kernel_size, 1, "kernel_size", minimum=1), stride, padding, weight_std,
                         bias_std, parameterization, bias=bias)


class Conv2D(Conv):
    """:class:`Conv` over images ``(H, W, C)``; an int ``kernel_size`` is a square kernel."""

    __slots__ = ()

    def __init__(self, channels: int, kernel_size, stride=1, padding="valid", weight_std: float = 1.0,
                 bias_std: float = 0.0, parameterization: str = "ntk", *, bias: bool = True) -> None:
        super().__init__(channels, _ints(kernel_size, 2, "kernel_size", minimum=1), stride, padding, weight_std,
                         bias_std, parameterization, bias=bias)


class GlobalAvgPool:
    """The mean over every spatial position: ``(..., C) -> (C,)``. No parameters."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "GlobalAvgPool()"

    def __eq__(self, other) -> bool:
        return isinstance(other, GlobalAvgPool)

    def __hash__(self) -> int:
        return hash("GlobalAvgPool")

    def get_config(self) -> dict:
        return {}

    def output_shape(self, in_shape) -> Tuple[int, ...]:
        _check_spatial(self, in_shape)
        return (int(in_shape[-1]),)

    @staticmethod
    def apply(h: np.ndarray) -> np.ndarray:
        """``(N, S..., C) -> (N, C)``."""
        N, C = h.shape[0], h.shape[-1]
        return h.reshape(N, -1, C).mean(axis=1)

    @staticmethod
    def pull_back(g: np.ndarray, in_shape) -> np.ndarray:
        """Seeds ``(M, C)`` to ``(M, S, C)``: each position gets ``1/S`` of its channel's seed."""
        S = int(np.prod(in_shape[:-1]))
        out = np.empty((g.shape[0], S, g.shape[1]), dtype=g.dtype)
        out[...] = (g * (1.0 / S))[:, None, :]
        return out


class Flatten:
    """Spatial positions and channels as one vector: ``(..., C) -> (S C,)``, row-major (channels
    fastest). PyTorch's ``nn.Flatten`` on ``NCHW`` orders channels slowest: the import permutes the
    following ``Linear``'s columns. No parameters."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Flatten()"

    def __eq__(self, other) -> bool:
        return isinstance(other, Flatten)

    def __hash__(self) -> int:
        return hash("Flatten")

    def get_config(self) -> dict:
        return {}

    def output_shape(self, in_shape) -> Tuple[int, ...]:
        _check_spatial(self, in_shape)
        return (int(np.prod(in_shape)),)


def _check_spatial(layer, in_shape) -> None:
    if len(in_shape) < 2:
        raise ValueError(f"{layer!r} takes spatial inputs (T, C) or (H, W, C), got shape {tuple(in_shape)}; "
                         f"it belongs after a convolution")


SPATIAL_LAYERS = (Conv, GlobalAvgPool, Flatten)

__all__ = ["Conv", "Conv1D", "Conv2D", "GlobalAvgPool", "Flatten", "Geometry", "PADDINGS", "SPATIAL_LAYERS"]
