"""The estimators' ``network=`` parameter: a user's own network, read as ``(net, params)`` (private).

Accepted: a PyTorch ``nn.Sequential`` (or ``nn.Linear``) that :func:`ntksolve.torch.from_torch`
imports, and a scikit-learn ``MLPRegressor`` / ``MLPClassifier``, fitted
(:func:`~ntksolve.sklearn.mlp_import.from_sklearn`) or not (the network its ``fit`` would start from,
:func:`~ntksolve.sklearn.mlp_import.sklearn_initial_network`). PyTorch is never imported here: an
object can only be a PyTorch module if the caller has imported torch already.
"""
from __future__ import annotations

import sys

import numpy as np
from sklearn.neural_network import MLPClassifier, MLPRegressor

from ntksolve.sklearn.mlp_import import from_sklearn, sklearn_initial_network

ACCEPTED = ("a PyTorch nn.Sequential of Linear layers and one activation (ntksolve.torch.from_torch), or a "
            "scikit-learn MLPRegressor / MLPClassifier, fitted or not")


def _torch_module(network) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(network, torch.nn.Module)


def check_network(network) -> None:
    """TypeError unless ``network`` is None or of a kind :func:`read_network` reads."""
    if network is None or _torch_module(network) or isinstance(network, (MLPRegressor, MLPClassifier)):
        return
    raise TypeError(f"network must be None (the estimator's own network) or {ACCEPTED}; got {type(network).__name__}")


def read_network(network, X, Y, dtype):
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

    Returns
    -------
    net : MLP
    params : list of (W, b) in ``dtype``

    Raises
    ------
    ValueError
        What the importers refuse; a network whose inputs or outputs do not match ``X`` and ``Y``.
    """
    if _torch_module(network):
        from ntksolve.torch import from_torch  # the user has torch: the extra is installed

        net, params = from_torch(network)
    elif hasattr(network, "coefs_"):
        net, params = from_sklearn(network)
    else:
        # scikit-learn counts a classifier's outputs from its labels: one for two classes, else one per class
        labels = Y if isinstance(network, MLPRegressor) else (
            (Y[:, 0] > 0).astype(int) if Y.shape[1] == 1 else np.argmax(Y, axis=1))
        net, params = sklearn_initial_network(network, X, labels)
    d, k = X.shape[1], Y.shape[1]
    if params[0][0].shape[1] != d:
        raise ValueError(f"network takes {params[0][0].shape[1]} input features, but X has {d}")
    if net.n_outputs != k:
        raise ValueError(f"network has {net.n_outputs} output(s), but the estimator trains {k} target column(s) "
                         "(a classifier: one for two classes, else one per class)")
    return net, [(W.astype(dtype, copy=False), b.astype(dtype, copy=False)) for W, b in params]
