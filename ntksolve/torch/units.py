"""PyTorch's learning rates and losses in ntksolve's units.

ntksolve's loss is ``L = 1/(2Nk) sum_i ||f(x_i) - y_i||^2``; PyTorch's learning rate and
loss are taken as they are, and :func:`learning_rate_from_torch` maps the rate onto ntksolve's:

================================  ===========================  ============================
PyTorch loss                      relation to ntksolve's loss  ntksolve's rate for torch's ``eta``
================================  ===========================  ============================
``MSELoss(reduction="mean")``     ``2 L``                      ``2 eta``
``MSELoss(reduction="sum")``      ``2 N k L``                  ``2 N k eta``
``CrossEntropyLoss()`` (mean)     the cross-entropy rule's     ``eta``
``CrossEntropyLoss("sum")``       ``N`` times it               ``N eta``
``BCEWithLogitsLoss()`` (mean)    the rule's for ``k = 1``     ``eta``
``BCEWithLogitsLoss("sum")``      ``N`` times it               ``N eta``
================================  ===========================  ============================

(``N`` the number of examples the loss averages over: the batch size for minibatches.) The map
holds for heavy-ball and Nesterov momentum too (``u/2`` is ntksolve's velocity); PyTorch's
``weight_decay = w`` is ntksolve's ``w * eta / rate`` (``w/2`` for the mean MSE). Adam normalises
the gradient coordinate-wise and has no function-space twin: it is trained, not predicted.
"""

from __future__ import annotations

import numbers

import numpy as np

from ntksolve._extras import require
from ntksolve._validation import refuse_zero_rate
from ntksolve.dynamics.units import LOSS_CONVENTIONS

torch = require("torch", "torch", "ntksolve.torch (PyTorch interop)")
nn = torch.nn

__all__ = ["learning_rate_from_torch"]


def _loss_kind(loss):
    """``("mse" | "ce" | "bce", reduction)`` of a supported loss module, else TypeError/ValueError.

    ``"bce"`` is ``BCEWithLogitsLoss``: the cross-entropy of one output (the logistic function)."""
    if isinstance(loss, nn.MSELoss) and type(loss).forward is nn.MSELoss.forward:
        kind = "mse"
    elif isinstance(loss, nn.CrossEntropyLoss) and type(loss).forward is nn.CrossEntropyLoss.forward:
        kind = "ce"
    elif isinstance(loss, nn.BCEWithLogitsLoss) and type(loss).forward is nn.BCEWithLogitsLoss.forward:
        kind = "bce"
    else:
        raise TypeError(
            f"loss must be a torch.nn.MSELoss or torch.nn.CrossEntropyLoss instance (or a "
            f"torch.nn.BCEWithLogitsLoss for one output), got {type(loss).__name__}"
        )
    if loss.reduction not in ("mean", "sum"):
        raise ValueError(f"loss.reduction must be 'mean' or 'sum' (a scalar loss to train on), got {loss.reduction!r}")
    return kind, loss.reduction


def check_loss_outputs(kind, n_outputs):
    """Refuse a loss that is not the cross-entropy rule of ``n_outputs`` logits (ValueError).

    ``CrossEntropyLoss`` over one output is a softmax over one logit, constant, with gradient 0;
    ``BCEWithLogitsLoss`` over ``k > 1`` outputs is ``k`` independent logistic losses averaged over
    ``N k`` entries (multi-label), which the rule (a softmax over the ``k`` outputs) is not.
    """
    if kind == "ce" and n_outputs < 2:
        raise ValueError(
            "CrossEntropyLoss needs k >= 2 outputs (a softmax over one output is constant, its "
            f"gradient 0); got k = {n_outputs}: use BCEWithLogitsLoss for one output"
        )
    if kind == "bce" and n_outputs != 1:
        raise ValueError(
            f"BCEWithLogitsLoss here is the cross-entropy of one output; got k = {n_outputs} (on several "
            "outputs it is a multi-label loss, not a softmax: use CrossEntropyLoss for several classes)"
        )


def learning_rate_from_torch(lr, *, loss, n_samples: int, n_outputs: int):
    """ntksolve's learning rate equivalent to PyTorch's rate ``lr`` under the loss ``loss``.

    Parameters
    ----------
    lr : float or array_like of float
        PyTorch's rate ``eta`` (a per-step schedule maps entry by entry).
    loss : torch.nn.MSELoss, torch.nn.CrossEntropyLoss or torch.nn.BCEWithLogitsLoss
        The loss PyTorch trains on (its ``reduction`` matters).
    n_samples : int
        ``N``, the number of examples the loss averages over (the batch size for minibatches).
        With ``reduction="sum"`` each step's gradient is scaled by its own batch's size, so a
        batch order of unequal sizes (a ``DataLoader``'s shorter last batch of each epoch) has no
        single rate: use equal batches (``drop_last=True``), or the mean.
    n_outputs : int
        ``k``.

    Returns
    -------
    rate : float or ndarray (the shape of ``lr``)
        ``2 eta`` (mean MSE), ``2 N k eta`` (summed MSE), ``eta`` (mean cross-entropy, whose
        function-space gradient ``Theta (softmax(f) - Y) / N`` is the cross-entropy rule's; the
        logistic function for ``BCEWithLogitsLoss``) or ``N eta`` (summed). See the module docstring.

    Raises
    ------
    TypeError
        Another loss.
    ValueError
        ``reduction="none"``, a ``CrossEntropyLoss`` with ``n_outputs = 1`` (a softmax over one
        logit does not train) or a ``BCEWithLogitsLoss`` with ``n_outputs > 1`` (multi-label, not
        the softmax rule), a cross-entropy with class weights, label smoothing or an
        ``ignore_index`` among the classes, a
        ``BCEWithLogitsLoss`` with ``weight`` or ``pos_weight`` (their gradients are not the
        cross-entropy rule's), bad counts or rates (a single rate of 0 is refused, as every rule
        refuses it; the single steps of a per-step schedule may be 0).
    """
    kind, reduction = _loss_kind(loss)
    for name, v in (("n_samples", n_samples), ("n_outputs", n_outputs)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    check_loss_outputs(kind, n_outputs)
    if kind == "ce" and (loss.weight is not None or loss.label_smoothing != 0):
        raise ValueError(
            "a CrossEntropyLoss with class weights or label smoothing has another gradient than the "
            "cross-entropy rule's Theta (softmax(f) - Y) / N; no learning rate maps it"
        )
    if kind == "ce" and 0 <= loss.ignore_index < n_outputs:
        raise ValueError(
            f"a CrossEntropyLoss with ignore_index={loss.ignore_index}, a class of the {n_outputs} outputs, "
            "drops that class's examples and averages over the others: another gradient than the "
            "cross-entropy rule's Theta (softmax(f) - Y) / N; no learning rate maps it"
        )
    if kind == "bce" and (loss.weight is not None or loss.pos_weight is not None):
        raise ValueError(
            "a BCEWithLogitsLoss with weight or pos_weight has another gradient than the cross-entropy "
            "rule's Theta (sigmoid(f) - y) / N; no learning rate maps it"
        )
    arr = (
        np.asarray(lr, dtype=np.float64)
        if not isinstance(lr, torch.Tensor)
        else lr.detach().cpu().numpy().astype(np.float64)
    )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"lr must be finite and non-negative, got {lr!r}")
    if arr.ndim == 0:  # one rate, as the rules take it (a schedule's single steps may be 0)
        refuse_zero_rate(float(arr), "lr", "must be positive")
    # the one table of other libraries' units
    factor = LOSS_CONVENTIONS[f"torch_{'mse' if kind == 'mse' else 'cross_entropy'}_{reduction}"](n_samples, n_outputs)
    out = factor * arr
    return float(out) if out.ndim == 0 else out
