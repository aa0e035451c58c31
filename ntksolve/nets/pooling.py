"""Global average pooling and flattening: from spatial features to the flat features of a dense layer;
and :class:`Reshape`, the other way, for flat inputs that are images.

Both take channels-last features (``(T, C)`` or ``(H, W, C)``, :mod:`ntksolve.nets.conv`) and have
no parameters. :class:`GlobalAvgPool` is the mean over the ``S`` positions, ``(..., C) -> (C,)``
(PyTorch's ``AdaptiveAvgPool2d(1)`` followed by a flatten); :class:`Flatten` reads the features
row-major, channels fastest, ``(..., C) -> (S C,)`` (PyTorch's ``nn.Flatten`` on ``NCHW`` orders the
channels slowest: :mod:`ntksolve.torch.conv_import` permutes the next ``Linear``'s columns). In the
analytic kernels either one ends the convolutions (:mod:`ntksolve.nets.conv_kernel`).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ntksolve.nets.conv_kernel import pool_map
from ntksolve.nets.layer_protocol import KernelState, Layer, identity_seed, register_layer


def _check_spatial(layer, in_shape) -> None:
    if len(in_shape) < 2:
        raise ValueError(
            f"{layer.name} takes spatial features (T, C) or (H, W, C), got per-example shape "
            f"{tuple(in_shape)}; it belongs after a convolution"
        )


class _Reshaping(Layer):
    """What the two share: no parameters, a shape check, the seed's identity."""

    def __repr__(self) -> str:
        return f"{self.name}()"

    def get_config(self) -> dict:
        return {"type": self.name}

    @classmethod
    def from_config(cls, cfg):
        return cls()

    def _seed(self, cache, g):
        in_shape, B, dtype = cache
        return identity_seed(B, self.output_shape(in_shape), dtype) if g is None else g


@register_layer
class GlobalAvgPool(_Reshaping):
    """The mean over every spatial position: ``(..., C) -> (C,)``."""

    def output_shape(self, in_shape) -> Tuple[int, ...]:
        _check_spatial(self, in_shape)
        return (int(in_shape[-1]),)

    def forward(self, params, x, keep):
        B, C = x.shape[0], x.shape[-1]
        y = x.reshape(B, -1, C).mean(axis=1)
        return y, ((tuple(x.shape[1:]), B, x.dtype) if keep else None)

    def backward(self, params, cache, g, signals, want_input=True):
        if not want_input:
            return None
        in_shape = cache[0]
        g = self._seed(cache, g)
        S = int(np.prod(in_shape[:-1]))
        B, m, C = g.shape
        out = np.empty((B, m, S, C), dtype=g.dtype)
        out[...] = (g * g.dtype.type(1.0 / S))[:, :, None, :]
        return out.reshape((B, m) + tuple(in_shape))

    def analytic(self, state: KernelState) -> KernelState:
        """The mean of the spatial covariances over all pairs of positions."""
        return pool_map(self, state, full=True)


@register_layer
class Flatten(_Reshaping):
    """The spatial features as one vector, row-major: ``(..., C) -> (S C,)``."""

    def output_shape(self, in_shape) -> Tuple[int, ...]:
        _check_spatial(self, in_shape)
        return (int(np.prod(in_shape)),)

    def forward(self, params, x, keep):
        B = x.shape[0]
        return x.reshape(B, -1), ((tuple(x.shape[1:]), B, x.dtype) if keep else None)

    def backward(self, params, cache, g, signals, want_input=True):
        if not want_input:
            return None
        g = self._seed(cache, g)
        return g.reshape(g.shape[:2] + tuple(cache[0]))

    def analytic(self, state: KernelState) -> KernelState:
        """The mean of the spatial covariances over the diagonal (a position with itself)."""
        return pool_map(self, state, full=False)


@register_layer
class Reshape(_Reshaping):
    """Flat inputs read as spatial ones, row-major: ``(d,) -> shape``, e.g. ``(64,) -> (8, 8, 1)``
    (channels last). No parameters; as the first layer it lets a convolutional network take the
    rows of a design matrix ``(N, d)``. A spatial input is refused unless it is laid out as
    ``shape`` (up to axes of size 1, e.g. ``(8, 8)`` for ``(8, 8, 1)``): row-major, ``NCHW``
    images ``(3, 8, 8)`` would be read as channels last and silently mixed up.

    Parameters
    ----------
    shape : tuple of int
        The per-example output shape; its product must be the input's size.
    """

    def __init__(self, shape) -> None:
        try:
            shape = tuple(int(s) for s in shape)
        except TypeError:
            raise TypeError(f"shape must be a tuple of ints such as (8, 8, 1), got {shape!r}") from None
        if not shape or min(shape) <= 0:
            raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
        self.shape = shape

    def __repr__(self) -> str:
        return f"Reshape({self.shape!r})"

    def get_config(self) -> dict:
        return {"type": "Reshape", "shape": list(self.shape)}

    @classmethod
    def from_config(cls, cfg):
        return cls(tuple(cfg["shape"]))

    def output_shape(self, in_shape) -> Tuple[int, ...]:
        if int(np.prod(in_shape)) != int(np.prod(self.shape)):
            raise ValueError(
                f"{self!r} needs inputs of {int(np.prod(self.shape))} numbers, got per-example shape {tuple(in_shape)}"
            )
        # a spatial input is read row-major too: only one laid out as the shape (up to axes of size 1)
        # means the same thing; another one (NCHW images for an (H, W, C) shape) would be misread
        if len(in_shape) > 1 and [n for n in in_shape if n != 1] != [n for n in self.shape if n != 1]:
            raise ValueError(
                f"{self!r} takes flat inputs (d,) read row-major, or inputs already of that shape, got "
                f"per-example shape {tuple(in_shape)}, which it would misread; give channels-last rows "
                f"(PyTorch's NCHW images: ntksolve.torch.to_channels_last(X).reshape(len(X), -1))"
            )
        return self.shape

    def forward(self, params, x, keep):
        B = x.shape[0]
        return x.reshape((B,) + self.shape), ((tuple(x.shape[1:]), B, x.dtype) if keep else None)

    def backward(self, params, cache, g, signals, want_input=True):
        if not want_input:
            return None
        g = self._seed(cache, g)
        return g.reshape(g.shape[:2] + tuple(cache[0]))


__all__ = ["GlobalAvgPool", "Flatten", "Reshape"]
