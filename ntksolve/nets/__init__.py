"""The network spec: layers, initialisation, the forward pass and the one backward pass."""
from ntksolve.nets.mlp import ACTIVATIONS, MLP, PARAMETERIZATIONS, forward

__all__ = ["MLP", "ACTIVATIONS", "PARAMETERIZATIONS", "forward"]
