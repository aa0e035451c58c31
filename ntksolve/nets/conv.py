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
from ntksolve.nets.conv_factors import ChannelFactors, _factored_term
from ntksolve.nets.conv_kernel import conv_map
from ntksolve.nets.layer_protocol import KernelState, Layer, identity_seed, register_layer
from ntksolve.nets.layers import Dense, LayerScales, check_width

PADDINGS = ("valid", "same")
#: Bytes of signal patches formed at once in the backward pass (a cache-sized chunk).
_CHUNK_BYTES = 1 << 22


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
    if (
        out is None
        or len(out) != n
        or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum for v in out)
    ):
        raise ValueError(f"{what} must be an int >= {minimum} or {n} of them (one per spatial axis), got {value!r}")
    return tuple(int(v) for v in out)


@register_layer
class Conv(Layer):
    """A convolution of ``channels`` outputs over 1-D signals or 2-D images (module docstring).

    Parameters
    ----------
    channels : int
        Output channels.
    kernel_size : int or tuple of 1 or 2 ints
        ``k`` or ``(k,)`` for a 1-D convolution, ``(kh, kw)`` for a 2-D one (:class:`Conv2D` takes a
        square kernel as one int).
    stride : int or tuple, default 1
    padding : {"valid", "same"} or int or tuple, default "valid"
        Zeros added on each side of each spatial axis; ``"same"`` keeps the size (stride 1 only;
        an even kernel gets the extra zero at the end, as PyTorch and XLA do).
    weight_std, bias_std, parameterization, bias
        As for :class:`~ntksolve.nets.layers.Dense` (fan-in ``C_in kh kw``); in a
        :class:`~ntksolve.nets.network.Network` the network's parameterisation applies.

    Examples
    --------
    >>> from ntksolve.nets.network import Network
    >>> from ntksolve.nets.layers import Dense
    >>> from ntksolve.nets.pooling import GlobalAvgPool
    >>> net = Network([Conv2D(16, 3, padding="same"), "relu", GlobalAvgPool(), Dense(10)])
    >>> net.shapes((8, 8, 1))[-1]
    (10,)
    """

    has_params = True
    name = "Conv"
    #: Spatial axes fixed by the class (:class:`Conv1D`: 1, :class:`Conv2D`: 2, where an int
    #: ``kernel_size`` is that many equal sides); ``None``: as many as ``kernel_size`` gives.
    _spatial_axes = None

    def __init__(
        self,
        channels: int,
        kernel_size,
        stride=1,
        padding="valid",
        weight_std: float = 1.0,
        bias_std: float = 0.0,
        parameterization: str = "ntk",
        *,
        bias: bool = True,
    ) -> None:
        if self._spatial_axes is not None:
            kernel_size = _ints(kernel_size, self._spatial_axes, "kernel_size", minimum=1)
        ks = (
            (kernel_size,)
            if isinstance(kernel_size, numbers.Integral) and not isinstance(kernel_size, bool)
            else kernel_size
        )
        try:
            ndim = len(ks)
        except TypeError:
            ndim = 0
        if ndim not in (1, 2):
            raise ValueError(
                f"kernel_size must be an int (1-D), or a tuple of 1 or 2 ints (1-D or 2-D), got {kernel_size!r}"
            )
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
        self.spec = Dense(check_width(channels, "channels"), weight_std, bias_std, parameterization, bias=bias)
        self.channels = self.spec.width
        self._geo = {}

    # the dense layer on each patch decides the parameterisation and the scales
    weight_std = property(lambda self: self.spec.weight_std)
    bias_std = property(lambda self: self.spec.bias_std)
    parameterization = property(lambda self: self.spec.parameterization)
    bias = property(lambda self: self.spec.bias)
    stores_trained_bias = property(lambda self: self.spec.stores_trained_bias)
    forward_bias_std = property(lambda self: self.spec.forward_bias_std)

    @property
    def has_infinite_width_limit(self) -> bool:
        return self.spec.has_infinite_width_limit

    def __repr__(self) -> str:
        d = self.spec
        ks = self.kernel_size[0] if self.ndim == 1 else self.kernel_size
        return (
            f"Conv({self.channels}, {ks!r}, stride={self.stride!r}, padding={self.padding!r}, "
            f"weight_std={d.weight_std}, bias_std={d.bias_std}, parameterization={d.parameterization!r}"
            f"{'' if d.bias else ', bias=False'})"
        )

    def get_config(self) -> dict:
        """The constructor arguments (JSON-serialisable), with ``"type": "Conv"``."""
        d = self.spec
        return {
            "type": "Conv",
            "channels": self.channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "weight_std": d.weight_std,
            "bias_std": d.bias_std,
            "parameterization": d.parameterization,
            "bias": d.bias,
        }

    @classmethod
    def from_config(cls, cfg):
        cfg = dict(cfg)
        pad = cfg.pop("padding")
        return cls(
            cfg.pop("channels"),
            tuple(cfg.pop("kernel_size")),
            tuple(cfg.pop("stride")),
            pad if isinstance(pad, str) else tuple(pad),
            **{k: cfg[k] for k in ("weight_std", "bias_std", "parameterization")},
            bias=cfg.get("bias", True),
        )

    def bind(self, parameterization: str) -> "Conv":
        if self.parameterization == parameterization:
            return self
        if self.parameterization != "ntk":
            raise ValueError(
                f"{self!r} asks for parameterization={self.parameterization!r}, but the network's is "
                f"{parameterization!r}: a network has one parameterisation; set it on the Network"
            )
        cfg = self.get_config()
        cfg["parameterization"] = parameterization
        return Conv.from_config({k: v for k, v in cfg.items() if k != "type"})

    # -- shapes ------------------------------------------------------------------------------
    def geometry(self, in_shape) -> Geometry:
        """The :class:`Geometry` on inputs of shape ``(H, W, C)`` (2-D) or ``(T, C)`` (1-D)."""
        in_shape = tuple(int(s) for s in in_shape)
        geo = self._geo.get(in_shape)
        if geo is None:
            geo = self._geo[in_shape] = self._geometry(in_shape)
        return geo

    def _geometry(self, in_shape) -> Geometry:
        if len(in_shape) != self.ndim + 1:
            raise ValueError(
                f"a {self.ndim}-D convolution takes inputs of per-example shape "
                f"{'(H, W, C)' if self.ndim == 2 else '(T, C)'}, got {in_shape}"
                + ("; reshape flat rows to (N, H, W, C) (or (N, T, C)), channels last" if len(in_shape) == 1 else "")
            )
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
                raise ValueError(
                    f"{self!r}: the kernel ({k}) is larger than the padded input ({n + lo + hi}) "
                    f"along spatial axis {axis}"
                )
            if span % s:
                raise ValueError(
                    f"{self!r}: stride {s} does not tile the input along spatial axis {axis} "
                    f"(size {n}, padded {n + lo + hi}, kernel {k}: {span % s} pixel(s) would be "
                    f"dropped); change the padding or the stride so that (size + padding - kernel) "
                    f"is a multiple of the stride"
                )
            geo.append((k, s, lo, span // s + 1, n))
        if self.ndim == 1:
            geo.insert(0, (1, 1, 0, 1, 1))
        (kh, sh, ph, oh, H), (kw, sw, pw, ow, W) = geo
        return Geometry(H, W, C, kh, kw, sh, sw, ph, pw, oh, ow)

    def output_shape(self, in_shape) -> Tuple[int, ...]:
        g = self.geometry(in_shape)
        return (g.oh, g.ow, self.channels) if self.ndim == 2 else (g.ow, self.channels)

    def param_shapes(self, in_shape):
        """``(W.shape, b.shape) = ((channels, C_in kh kw), (channels,))`` (``(0,)`` without a bias).

        ``W`` is the dense layer on each patch: row ``c_out`` lists ``(c_in, dy, dx)`` row-major,
        PyTorch's ``weight.reshape(channels, -1)`` (the import and export reshape)."""
        geo = self.geometry(in_shape)
        return (self.channels, geo.fan_in), ((self.channels if self.bias else 0),)

    def scales(self, in_shape) -> LayerScales:
        """The :class:`~ntksolve.nets.layers.LayerScales` of the dense layer on each patch."""
        return self.spec.scales(self.geometry(in_shape).fan_in)

    # -- passes ------------------------------------------------------------------------------
    def forward(self, params, x, keep):
        """``(y, cache)``: ``y`` ``(B, *output_shape)``; the cache holds the patches ``(B, S, F)``."""
        W, b = params
        in_shape = x.shape[1:]
        geo = self.geometry(in_shape)
        s = self.scales(in_shape)
        B = x.shape[0]
        cols = np.empty((B, geo.n_out, geo.fan_in), dtype=x.dtype)
        _jit.im2col(
            np.ascontiguousarray(x).reshape(B, geo.H, geo.W, geo.C),
            geo.kh,
            geo.kw,
            geo.sh,
            geo.sw,
            geo.ph,
            geo.pw,
            geo.oh,
            geo.ow,
            cols,
        )
        y = np.dot(cols.reshape(-1, geo.fan_in), W.T)  # (B S, channels): one 2-D GEMM (numpy's N-D dot is no GEMM)
        y *= s.weight
        if self.bias:
            y += s.bias * b
        return y.reshape((B,) + self.output_shape(in_shape)), (_ConvCache(cols, in_shape) if keep else None)

    def backward(self, params, cache, g, signals, want_input=True):
        signals.append((self, params, cache, g))
        if not want_input:
            return None
        W = params[0]
        geo = self.geometry(cache.shape)
        if g is None:
            g = identity_seed(cache.cols.shape[0], self.output_shape(cache.shape), cache.cols.dtype)
        B, m = g.shape[:2]
        ws = W.dtype.type(self.scales(cache.shape).weight)  # folded into the (small) W, not the signals
        # W's columns reordered (dy, dx, c): the patches of the signal then have the channels fastest,
        # as the image has, and col2im_hwc's inner loop is contiguous on both sides
        Wt = np.ascontiguousarray((ws * W).reshape(self.channels, geo.C, geo.kh * geo.kw).transpose(0, 2, 1)).reshape(
            self.channels, geo.fan_in
        )
        g2 = np.ascontiguousarray(g).reshape(B * m, geo.n_out, self.channels)
        out = np.empty((B * m, geo.H, geo.W, geo.C), dtype=Wt.dtype)
        # in chunks of rows whose patches stay in cache: the full (B m, S, F) patches are F / C times
        # the signal, written once and read once from memory otherwise
        rows = max(1, _CHUNK_BYTES // (geo.n_out * geo.fan_in * Wt.dtype.itemsize))
        for r0 in range(0, B * m, rows):
            r1 = min(r0 + rows, B * m)
            cols = np.dot(g2[r0:r1].reshape(-1, self.channels), Wt).reshape(r1 - r0, geo.n_out, geo.fan_in)
            _jit.col2im_hwc(cols, geo.kh, geo.kw, geo.sh, geo.sw, geo.ph, geo.pw, geo.oh, geo.ow, out[r0:r1])
        return out.reshape((B, m) + tuple(cache.shape))

    def _signal(self, cache, g):
        """``g`` as ``(B, m, S, channels)`` (the identity formed if None)."""
        if g is None:
            g = identity_seed(cache.cols.shape[0], self.output_shape(cache.shape), cache.cols.dtype)
        return g.reshape(g.shape[0], g.shape[1], -1, self.channels)

    def _gradients(self, cache, g):
        """Per example and seed, the weight products ``sum_p g_p P_p^T`` ``(B, m, channels F)`` and the
        bias products ``sum_p g_p`` ``(B, m, channels)`` (None without a bias); kept on the cache
        for the tiles that reuse them. For :class:`ChannelFactors` ``g``, the products of the local
        factor alone, ``(B, channels, F)`` and ``(B, channels, 1)``: one per example, not ``m``."""
        memo = cache.memo
        if memo is None or memo[0] is not g:
            if isinstance(g, ChannelFactors):
                V = g.local  # (B, S, Co)
                GW = np.matmul(V.transpose(0, 2, 1), cache.cols)
                Gb = V.sum(axis=1)[:, :, None] if self.bias else None
            else:
                g4 = self._signal(cache, g)
                B, m, S, Co = g4.shape
                # (B, m Co, S) @ (B, S, F): one batched GEMM
                GW = np.matmul(g4.transpose(0, 1, 3, 2).reshape(B, m * Co, S), cache.cols).reshape(B, m, -1)
                Gb = g4.sum(axis=2) if self.bias else None
            memo = cache.memo = (g, GW, Gb)
        return memo[1], memo[2]

    def ntk_term(self, params, I, J, theta, trace, lower):
        """``c <G, G'> + beta <s, s'>`` between two blocks (module docstring of
        :mod:`ntksolve.nets.conv`), added into ``theta``."""
        c, beta = self.scales(I[0].shape).ntk_coefficients
        GI, bI = self._gradients(*I)
        GJ, bJ = (None, None) if J is None else self._gradients(*J)
        factors = I[1] if isinstance(I[1], ChannelFactors) else None
        for coef, A, Bm in ((c, GI, GJ), (beta, bI, bJ)):
            if A is None or coef == 0.0:
                continue
            if factors is not None:
                _factored_term(theta, coef, factors.readout, A, Bm, trace)
                continue
            Bm = A if Bm is None else Bm
            BI, m, P = A.shape
            if trace:  # the mean over the m = k outputs of <G_a, G'_a>
                G = np.dot(A.reshape(BI, m * P), Bm.reshape(Bm.shape[0], m * P).T)
                G *= coef / m
                theta += G
            else:
                G = np.dot(A.reshape(BI * m, P), Bm.reshape(-1, P).T)
                G *= coef
                theta += G.reshape(BI, m, Bm.shape[0], m).transpose(0, 2, 1, 3)

    def kernel_row_numbers(self, in_shape, k: int) -> int:
        """Numbers the empirical NTK holds per input row for this layer beyond its boundaries' features
        and signals: the patches ``S F``, the ``k`` per-example weight and bias products
        ``k channels (F + 1)`` (fewer when factored), and one scaled copy of them."""
        geo = self.geometry(in_shape)
        return geo.n_out * geo.fan_in + 2 * k * self.channels * (geo.fan_in + 1)

    def products(self, params, cache, g):
        """``(G_W, G_b)`` shaped like ``(W, b)`` for a seed ``g`` ``(B, 1, *output_shape)``: one GEMM
        of the signals and patches over every example and position."""
        g2, cols = self._rows(cache, g)
        return np.dot(g2.T, cols), (g2.sum(axis=0) if self.bias else np.zeros(0, dtype=g.dtype))

    def _rows(self, cache, g):
        """The layer as a dense layer on ``B S`` rows: signals ``(B S, channels)``, patches ``(B S, F)``."""
        return g.reshape(-1, self.channels), cache.cols.reshape(-1, cache.cols.shape[2])

    def step(self, opt, i, params, cache, g):
        """One optimiser step: the dense layer's, on every (example, position) row."""
        opt.update(i, *self._rows(cache, g))

    def jacobian(self, params, cache, g):
        s = self.scales(cache.shape)
        g4 = self._signal(cache, g)
        B, m = g4.shape[:2]
        cache.memo = None
        GW, Gb = self._gradients(cache, g)
        cols = [s.grad_weight * GW]
        if self.bias:
            cols.append(s.grad_bias * Gb)
        cache.memo = None
        return np.concatenate(cols, axis=2).reshape(B, m, -1)

    def analytic(self, state: KernelState) -> KernelState:
        """Records the convolution on the state's spatial covariances (:mod:`ntksolve.nets.conv_kernel`),
        computed per pair of inputs at the pooling or flatten that ends the convolutions."""
        return conv_map(self, state)


class _ConvCache:
    """A convolution's cache: the patches ``cols`` ``(B, S, F)``, the per-example input ``shape``,
    and the gradient products of the last signal seen (:meth:`Conv._gradients`)."""

    __slots__ = ("cols", "shape", "memo")

    def __init__(self, cols, shape):
        self.cols = cols
        self.shape = tuple(shape)
        self.memo = None


class Conv1D(Conv):
    """:class:`Conv` over 1-D signals ``(T, C)``: ``kernel_size``, ``stride``, ``padding`` are ints."""

    _spatial_axes = 1


class Conv2D(Conv):
    """:class:`Conv` over images ``(H, W, C)``; an int ``kernel_size`` is a square kernel."""

    _spatial_axes = 2


__all__ = ["ChannelFactors", "Conv", "Conv1D", "Conv2D", "Geometry", "PADDINGS"]
