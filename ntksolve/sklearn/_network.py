"""The estimators' ``network=`` parameter: a user's own network, read as ``(net, params)`` (private).

Accepted: a PyTorch ``nn.Sequential`` (or ``nn.Linear``) that :func:`ntksolve.torch.from_torch`
imports (an MLP, or a :class:`~ntksolve.nets.network.Network` with layer norms and residual
blocks), an ntksolve ``Network`` (drawn from the estimator's ``random_state``) or a pair
``(Network, params)``, and a scikit-learn ``MLPRegressor`` / ``MLPClassifier``, fitted
(:func:`~ntksolve.sklearn.mlp_import.from_sklearn`) or not (the network its ``fit`` would start from,
:func:`~ntksolve.sklearn.mlp_import.sklearn_initial_network`). PyTorch is never imported here: an
object can only be a PyTorch module if the caller has imported torch already.
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.neural_network import MLPClassifier, MLPRegressor

from ntksolve.nets.network import Network
from ntksolve.sklearn.mlp_import import from_sklearn, sklearn_initial_network

ACCEPTED = (
    "a PyTorch nn.Sequential of Linear layers and activations, nn.LayerNorm and ntksolve.torch.Residual "
    "blocks (ntksolve.torch.from_torch), an ntksolve Network or a (Network, params) pair, or a "
    "scikit-learn MLPRegressor / MLPClassifier, fitted or not"
)


def _network_pair(network) -> bool:
    return isinstance(network, tuple) and len(network) == 2 and isinstance(network[0], Network)


def _torch_module(network) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(network, torch.nn.Module)


def check_network(network) -> None:
    """TypeError unless ``network`` is None or of a kind :func:`read_network` reads."""
    if network is None or _torch_module(network) or isinstance(network, (MLPRegressor, MLPClassifier, Network)):
        return
    if _network_pair(network):
        return
    raise TypeError(f"network must be None (the estimator's own network) or {ACCEPTED}; got {type(network).__name__}")


def _cast(params, dtype):
    if isinstance(params, list):
        return [_cast(p, dtype) for p in params]
    return tuple(np.asarray(a).astype(dtype, copy=False) for a in params)


def read_network(network, X, Y, dtype, random_state=None):
    """``(net, params)`` of ``network`` for inputs ``X`` (N, d) and the ``k`` target columns of ``Y``.

    Parameters
    ----------
    network : torch.nn.Module, MLPRegressor or MLPClassifier
    X : ndarray, shape (N, d)
    Y : ndarray, shape (N, k)
        The targets the estimator trains on: an unfitted scikit-learn MLP reads its output count
        from them (a classifier's ``+-1`` codes as class indices).
    dtype : numpy dtype
        The estimator's; the parameters are cast to it.
    random_state : None, int or Generator
        Draws the parameters of a bare ntksolve Network.

    Returns
    -------
    net : MLP or Network
    params : list of (W, b) in ``dtype`` (a Network's parameter list)

    Raises
    ------
    ValueError
        What the importers refuse; a network whose inputs or outputs do not match ``X`` and ``Y``.
    """
    if isinstance(network, Network) or _network_pair(network):
        net, params = (network, None) if isinstance(network, Network) else network
        d, k = X.shape[1], Y.shape[1]
        try:
            out = net.output_shape((d,))[0]
        except ValueError as exc:
            raise ValueError(f"network cannot take X's {d} features: {exc}") from None
        if out != k:
            raise ValueError(
                f"network has {out} output(s), but the estimator trains {k} target column(s) "
                "(a classifier: one for two classes, else one per class)"
            )
        params = net.init(d, random_state, dtype) if params is None else _cast(params, dtype)
        net.check_params(params, (d,))
        return net, params
    if _torch_module(network):
        from ntksolve.torch import from_torch  # the user has torch: the extra is installed

        net, params = from_torch(network)
    elif hasattr(network, "coefs_"):
        net, params = from_sklearn(network)
    else:
        # scikit-learn counts a classifier's outputs from its labels: one for two classes, else one per class
        labels = (
            Y
            if isinstance(network, MLPRegressor)
            else ((Y[:, 0] > 0).astype(int) if Y.shape[1] == 1 else np.argmax(Y, axis=1))
        )
        net, params = sklearn_initial_network(network, X, labels)
    if isinstance(net, Network):  # a module with layer norms or residual blocks
        return read_network((net, params), X, Y, dtype)
    d, k = X.shape[1], Y.shape[1]
    if params[0][0].shape[1] != d:
        raise ValueError(f"network takes {params[0][0].shape[1]} input features, but X has {d}")
    if net.n_outputs != k:
        raise ValueError(
            f"network has {net.n_outputs} output(s), but the estimator trains {k} target column(s) "
            "(a classifier: one for two classes, else one per class)"
        )
    return net, [(W.astype(dtype, copy=False), b.astype(dtype, copy=False)) for W, b in params]
