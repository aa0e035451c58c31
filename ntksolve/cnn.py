"""The small convolutional network of ``ntksolve compare --network cnn`` on the bundled digits.

:func:`digits_cnn` is the network swept across widths (its channels): the 64 pixels of a digit
read as an 8 x 8 image (:class:`~ntksolve.nets.pooling.Reshape`, channels last), ``depth``
convolutions of ``channels`` 3 x 3 filters with zero padding ('same') each followed by the
activation, global average pooling and a dense readout. Its analytic NTK is the CNTK of
:mod:`ntksolve.nets.conv_kernel`, its empirical NTK the structured one of
:class:`~ntksolve.nets.conv.Conv`, and it trains by :func:`ntksolve.train_network`.
"""

from __future__ import annotations

import numbers

from ntksolve.nets.conv import Conv2D
from ntksolve.nets.layers import Activation, Dense
from ntksolve.nets.network import Network
from ntksolve.nets.pooling import GlobalAvgPool, Reshape

#: The digits' images: 8 x 8 pixels, one channel.
DIGITS_SHAPE = (8, 8, 1)


def digits_cnn(
    channels: int,
    *,
    depth: int = 2,
    activation: str = "relu",
    weight_std: float = 1.0,
    bias_std: float = 0.1,
    parameterization: str = "ntk",
    n_outputs: int = 10,
) -> Network:
    """The CNN ``Reshape(8, 8, 1) -> [Conv2D(channels, 3, 'same'), phi] x depth -> GlobalAvgPool -> Dense``.

    Parameters
    ----------
    channels : int
        Output channels of every convolution (the sweep's width).
    depth : int, default 2
        Convolutions (at least 1).
    activation, weight_std, bias_std, parameterization
        As for :class:`~ntksolve.MLP`, for every layer.
    n_outputs : int, default 10

    Returns
    -------
    Network
        Taking flat rows ``(N, 64)``.
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ValueError(f"a CNN needs at least one convolution: depth must be an int >= 1, got {depth!r}")
    phi = Activation(activation)
    layers = [Reshape(DIGITS_SHAPE)]
    for _ in range(int(depth)):
        layers += [Conv2D(channels, 3, padding="same", weight_std=weight_std, bias_std=bias_std), phi]
    layers += [GlobalAvgPool(), Dense(n_outputs, weight_std, bias_std)]
    return Network(layers, parameterization=parameterization)


def sweep_cnn(
    hidden_layer_sizes, activation="relu", weight_std=1.0, bias_std=0.1, parameterization="ntk", n_outputs=10
) -> Network:
    """:func:`digits_cnn` from :class:`~ntksolve.MLP`'s arguments, as :func:`ntksolve.compare` builds a width's
    network (its ``network=``): ``depth = len(hidden_layer_sizes)`` convolutions of
    ``hidden_layer_sizes[0]`` channels."""
    # one int is one convolution, as MLP reads it
    sizes = (hidden_layer_sizes,) if isinstance(hidden_layer_sizes, numbers.Integral) else tuple(hidden_layer_sizes)
    if not sizes or len(set(sizes)) != 1:
        raise ValueError(f"a sweep's CNN has one channel count for every convolution, got {sizes!r}")
    return digits_cnn(
        int(sizes[0]),
        depth=len(sizes),
        activation=activation,
        weight_std=weight_std,
        bias_std=bias_std,
        parameterization=parameterization,
        n_outputs=n_outputs,
    )


__all__ = ["digits_cnn", "sweep_cnn", "DIGITS_SHAPE"]
