"""The network spec: layers, initialisation, the forward pass and the one backward pass."""

from ntksolve.nets.backprop import backward
from ntksolve.nets.layers import ACTIVATIONS, PARAMETERIZATIONS, PARAMETRIC_ACTIVATIONS, Activation, Dense, LayerScales
from ntksolve.nets.mlp import MLP, forward
from ntksolve.nets.layer_protocol import KernelState, Layer
from ntksolve.nets.network import Network
from ntksolve.nets.normalization import LayerNorm
from ntksolve.nets.residual import Residual
from ntksolve.nets.conv import Conv, Conv1D, Conv2D
from ntksolve.nets.pooling import Flatten, GlobalAvgPool, Reshape

__all__ = [
    "MLP",
    "Network",
    "Layer",
    "KernelState",
    "LayerNorm",
    "Residual",
    "Conv",
    "Conv1D",
    "Conv2D",
    "GlobalAvgPool",
    "Flatten",
    "Reshape",
    "Dense",
    "Activation",
    "LayerScales",
    "ACTIVATIONS",
    "PARAMETRIC_ACTIVATIONS",
    "PARAMETERIZATIONS",
    "forward",
    "backward",
]
