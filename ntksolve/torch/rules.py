"""ntksolve's training rules as PyTorch optimisers over the tensors of :func:`~ntksolve.torch.to_torch`.

ntksolve's rules (:class:`~ntksolve.dynamics.rules.GradientDescent`, :class:`~ntksolve.dynamics.adaptive.Adam`)
act on the *trained* parameters ``θ`` of a network (``docs/conventions.md``) with the gradient of
ntksolve's loss ``L``. The module of ``to_torch`` holds instead the tensors of its forward pass,
``p = s θ`` per tensor, with ``s = ws / t`` (forward scale over trained scale, from the layer's
:class:`~ntksolve.nets.layers.LayerScales`): ``s = 1`` in standard parameterisation, ``s = σ_w/√n``
for a weight and ``s = σ_b`` for a bias in NTK parameterisation. PyTorch's loss is ``c L``
(``c = 2`` for ``MSELoss()``, ``1`` for the cross-entropies, :func:`learning_rate_from_torch`), so
its gradient is ``∇_p (c L) = (c / s) ∇_θ L``. One parameter group per tensor then runs the same
rule exactly:

**SGD** (``θ ← θ − η d``, ``d = ∇_θ L + w θ`` with momentum on ``d``). In ``p``:
``p ← p − η s d = p − (η s² / c) (∇_p(cL) + (c w / s²) p)``. Every step is linear in ``d``, so the
momentum buffer is ``c/s`` times ntksolve's and the update the same:

    lr = η s² / c          weight_decay = c w / s²          momentum, nesterov unchanged

**Adam** (``θ ← θ − η m̂ / (√v̂ + ε)`` on ``d = ∇_θ L + w θ``). PyTorch's moments of
``∇_p(cL) + w' p = (c/s) (∇_θ L + (w' s²/c) θ)`` are ``c/s`` and ``(c/s)²`` times ntksolve's, and
``p`` moves by ``s`` times ``θ``'s step:

    lr = η s               eps = c ε / s                    weight_decay = c w / s²

and for AdamW's decoupled decay ``θ ← (1 − η w) θ``, the same factor on ``p`` with ``lr = η s``:
``weight_decay = w / s``. A learning-rate schedule multiplies every group's rate by ``η_s``
(``LambdaLR``).

A tensor with ``s = 0`` (a bias of an NTK-parameterised layer with ``σ_b = 0``, ``p = 0 · b``) does
not enter the function: its gradient in ntksolve is 0, but weight decay still moves the stored
``b``. The module's tensor is frozen there (``lr = 0``) and the stored ``b`` trained beside the
module as a free tensor (``s = 1``) whose gradient is set to zero before every step.
"""

from __future__ import annotations

from typing import List, NamedTuple

import numpy as np

from ntksolve._extras import require
from ntksolve.dynamics.adaptive import Adam
from ntksolve.dynamics.rules import GradientDescent

torch = require("torch", "torch", "ntksolve.torch (PyTorch interop)")

__all__ = ["TensorScale", "module_scales", "torch_optimizer"]


class TensorScale(NamedTuple):
    """One trained tensor: layer ``layer`` (0-based), ``"weight"`` or ``"bias"``, and ``p = s θ``."""

    layer: int
    name: str
    scale: float


def module_scales(net, n_features: int) -> List[TensorScale]:
    """The scales ``s`` of the tensors of ``to_torch(net, ...)``, in ``module.parameters()`` order."""
    out = []
    for l, (layer, sc) in enumerate(zip(net.layers, net.scales(n_features))):
        out.append(TensorScale(l, "weight", sc.weight / sc.trained_weight))
        if layer.bias:
            out.append(TensorScale(l, "bias", sc.bias / sc.trained_bias))
    return out


def _group(rule, s: float, c: float) -> dict:
    """The PyTorch settings of one tensor of scale ``s`` at unit learning rate (see the module docstring)."""
    if s == 0.0:
        return (
            {"lr": 0.0, "weight_decay": 0.0}
            if isinstance(rule, GradientDescent)
            else {"lr": 0.0, "weight_decay": 0.0, "eps": rule.eps}
        )
    w = rule.weight_decay
    if isinstance(rule, GradientDescent):
        return {"lr": s * s / c, "weight_decay": c * w / (s * s)}
    return {"lr": s, "eps": c * rule.eps / s, "weight_decay": (w / s) if rule.decoupled else c * w / (s * s)}


def torch_optimizer(rule, tensors, scales, free, c: float, rates: np.ndarray):
    """A PyTorch optimiser (and scheduler) running ``rule`` on ``tensors`` as ntksolve runs it on ``θ``.

    Parameters
    ----------
    rule : GradientDescent or Adam
    tensors : list of torch.Tensor
        The module's parameters, in :func:`module_scales` order.
    scales : list of TensorScale
    free : list of torch.Tensor
        Free tensors in trained units (``s = 1``, zero gradient): the stored parameters of the
        tensors with ``s = 0``.
    c : float
        PyTorch's loss over ntksolve's.
    rates : ndarray, shape (steps,)
        ``η_s`` of every step.

    Returns
    -------
    optimizer : torch.optim.SGD, Adam or AdamW
    scheduler : torch.optim.lr_scheduler.LambdaLR
        Sets every group's rate to its unit rate times ``η_s`` before step ``s``.
    """
    groups = [dict(params=[p], **_group(rule, sc.scale, c)) for p, sc in zip(tensors, scales)]
    groups += [dict(params=[p], **_group(rule, 1.0, c)) for p in free]
    if isinstance(rule, GradientDescent):
        opt = torch.optim.SGD(groups, lr=1.0, momentum=rule.momentum, nesterov=rule.nesterov)
    elif isinstance(rule, Adam):
        cls = torch.optim.AdamW if rule.decoupled else torch.optim.Adam
        opt = cls(groups, lr=1.0, betas=rule.betas)
    else:  # pragma: no cover - the caller resolved the rule
        raise TypeError(f"no PyTorch optimiser for {rule!r}")
    if free:

        def zero_gradients(optimizer, args, kwargs):
            for p in free:  # they do not enter the loss: PyTorch would skip a tensor without a gradient
                p.grad = torch.zeros_like(p)

        opt.register_step_pre_hook(zero_gradients)
    last = float(rates[-1]) if rates.size else 0.0
    # LambdaLR asks once more after the last step: the last rate again (never used)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: float(rates[s]) if s < rates.size else last)
    return opt, scheduler
