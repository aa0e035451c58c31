"""Real training in PyTorch with the interface and the units of :func:`ntksolve.train_network`.

:func:`train_network_torch` takes what the numpy trainer takes -- an ntksolve network and its
parameters, a rule object, ntksolve's loss -- exports the network with
:func:`~ntksolve.torch.to_torch`, maps the rule onto PyTorch optimisers tensor by tensor
(:mod:`ntksolve.torch.rules`) and trains the module with the loop of :func:`ntksolve.torch.train`.
It returns a :class:`~ntksolve.training.TrainingResult` in ntksolve's units (losses, rates, the
kernel of the network's own parameterisation, parameters in its storage convention), so that the
two trainers can be swapped and compared number for number.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ntksolve._extras import require
from ntksolve._validation import check_choice, check_inputs
from ntksolve.dynamics.batches import check_batches
from ntksolve.dynamics.function_space import _targets as _class_targets
from ntksolve.dynamics.rules import GradientDescent
from ntksolve.dynamics.schedules import as_schedule
from ntksolve.kernels.empirical import empirical_ntk
from ntksolve.nets.mlp import MLP
from ntksolve.optimizers import training_rule
from ntksolve.torch.convert import to_torch
from ntksolve.torch.rules import module_scales, torch_optimizer
from ntksolve.torch.training import _run
from ntksolve.torch.units import learning_rate_from_torch
from ntksolve.training import (
    TrainingDivergedError,
    TrainingResult,
    _check_steps,
    _check_targets,
    _divergence_hint,
    _measure,
    _rule_critical_rate,
    recorded,
)

torch = require("torch", "torch", "ntksolve.torch (PyTorch interop)")
nn = torch.nn

__all__ = ["train_network_torch"]


def _stored(module, train_net, scales, free, d):
    """The module's tensors (and the free ones) as ``(W, b)`` in ``train_net``'s storage convention."""
    tensors = [p.detach().cpu().numpy() for p in module.parameters()]
    fwd = train_net.layer_scales(d)
    out = [[None, np.zeros(0, dtype=tensors[0].dtype)] for _ in train_net.layers]
    free_iter = iter(free)
    for p, sc in zip(tensors, scales):
        ws, bs = fwd[sc.layer]
        if sc.name == "weight":
            out[sc.layer][0] = p / p.dtype.type(ws)
        elif sc.scale == 0.0:  # the free tensor holds the stored bias
            out[sc.layer][1] = next(free_iter).detach().cpu().numpy().copy()
        else:
            out[sc.layer][1] = p / p.dtype.type(bs)
    return [(W, b) for W, b in out]


def train_network_torch(
    net: MLP,
    params,
    X,
    y,
    *,
    steps: int,
    learning_rate=None,
    dynamics=None,
    loss: str = "mse",
    batches=None,
    record_at=None,
    X_test=None,
    y_test=None,
    track_kernel: bool = True,
    on_divergence: str = "raise",
    callback: Optional[Callable[[int, float], None]] = None,
) -> TrainingResult:
    """:func:`ntksolve.train_network`, run in PyTorch: the same arguments, the same result, its units.

    Parameters
    ----------
    net, params, X, y, steps, learning_rate, dynamics, loss, batches, record_at, X_test, y_test,
    track_kernel, on_divergence, callback
        As :func:`ntksolve.train_network`: ``dynamics`` a
        :class:`~ntksolve.dynamics.rules.GradientDescent` (``torch.optim.SGD``: momentum, Nesterov,
        weight decay, a schedule) or an :class:`~ntksolve.dynamics.adaptive.Adam` (``Adam`` /
        ``AdamW``), in ntksolve's units; ``loss`` ``"mse"`` (``1/(2Nk) sum ||f - y||^2``) or
        ``"cross_entropy"`` (labels or one-hot rows; 0/1 labels for ``k = 1``, the logistic
        function); ``batches`` one index array per step.

    Returns
    -------
    TrainingResult
        As :func:`ntksolve.train_network` returns it: ``loss_train``/``loss_test`` in ntksolve's
        loss, ``kernel_change`` of ``net``'s own empirical NTK (its parameterisation),
        ``critical_learning_rate`` in ntksolve's units, ``net, params`` in ``net``'s storage
        convention (``net.trainable()``). The PyTorch run itself: ``to_torch(net, params)``
        trained with ``MSELoss()``, ``CrossEntropyLoss()`` or ``BCEWithLogitsLoss()`` and the
        optimiser of :mod:`ntksolve.torch.rules`.

    Raises
    ------
    TypeError, ValueError
        As :func:`ntksolve.train_network`, before the first step.
    TrainingDivergedError
        The loss diverged and ``on_divergence="raise"``.

    Notes
    -----
    The parameters live in PyTorch as ``p = s θ`` (see :mod:`ntksolve.torch.rules`); in NTK
    parameterisation every tensor has its own learning rate.
    """
    rule = training_rule(learning_rate, dynamics)
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an ntksolve.MLP, got {type(net).__name__}")
    kind = check_choice(loss, "loss", ("mse", "cross_entropy"))
    d, dt = net.check_params(params)
    X = check_inputs(X, name="X", n_features=d, dtype=dt)
    N, k = X.shape[0], net.n_outputs
    if X_test is not None:
        X_test = check_inputs(X_test, name="X_test", n_features=d, dtype=dt)
    elif y_test is not None:
        raise ValueError("y_test was given without X_test")
    if kind == "mse":
        Y = _check_targets(y, N, k, "y", dt)
        Y_test = None if y_test is None else _check_targets(y_test, X_test.shape[0], k, "y_test", dt)
        yt, yt_test = torch.from_numpy(Y), None if Y_test is None else torch.from_numpy(Y_test)
        torch_loss = nn.MSELoss()
    else:
        Yk, lab = _class_targets(y, N, k, "y")
        lab_test = None if y_test is None else _class_targets(y_test, X_test.shape[0], k, "y_test")[1]
        if k == 1:
            yt = torch.from_numpy(Yk.astype(dt))
            yt_test = None if lab_test is None else torch.from_numpy(lab_test.astype(dt)[:, None])
            torch_loss = nn.BCEWithLogitsLoss()
        else:
            yt, yt_test = torch.from_numpy(lab), None if lab_test is None else torch.from_numpy(lab_test)
            torch_loss = nn.CrossEntropyLoss()
    steps, rec = _check_steps(steps, record_at)
    rates = as_schedule(rule.learning_rate).rates(steps)  # an array schedule too short: refused here
    first_rate = float(as_schedule(rule.learning_rate).rates(1)[0])
    batch_list = check_batches(batches, N, steps)
    if on_divergence not in ("raise", "return"):
        raise ValueError(f"on_divergence must be 'raise' or 'return', got {on_divergence!r}")
    with_crit = kind == "mse" and isinstance(rule, GradientDescent)

    train_net = net.trainable()
    # the starting point in train_net's storage convention (b~ = 0 is b = 0 there)
    work = [
        (np.array(W, dtype=dt, order="C"), np.zeros_like(b) if train_net is not net else np.array(b, dtype=dt))
        for W, b in params
    ]
    module = to_torch(train_net, work)
    scales = module_scales(train_net, d)
    free = [
        torch.from_numpy(work[sc.layer][1].copy()).requires_grad_(True)
        for sc in scales
        if sc.name == "bias" and sc.scale == 0.0
    ]
    c = learning_rate_from_torch(1.0, loss=torch_loss, n_samples=N, n_outputs=k)  # PyTorch's loss / ours
    opt, scheduler = torch_optimizer(rule, list(module.parameters()), scales, free, c, rates)

    def now():
        return _stored(module, train_net, scales, free, d)

    run = _run(
        module,
        opt,
        scheduler,
        None,
        torch_loss,
        X,
        yt,
        X_test,
        yt_test,
        rec,
        steps,
        batch_list,
        k,
        kernel_now=(lambda: empirical_ntk(train_net, now(), X, trace=(k == 1))) if track_kernel else None,
        initial_kernel=lambda: empirical_ntk(train_net, work, X, trace=(k == 1)),
        critical_rate=(lambda theta: _rule_critical_rate(rule, theta, k)) if with_crit else None,
        hint=lambda crit: _divergence_hint(rule, rates, crit, batch_list),
        loss_units=c,
        callback=callback,
    )
    n = run.n_recorded
    # the recorded losses (and accuracies) in ntksolve's own terms, from the recorded outputs
    target = Y if kind == "mse" else lab
    target_test = (Y_test if kind == "mse" else lab_test) if y_test is not None else None
    train_m = [_measure(kind, f, target) for f in run.fx_train[:n]]
    test_m = None if target_test is None else [_measure(kind, f, target_test) for f in run.fx_test[:n]]
    loss_train = np.array([m[0] for m in train_m])
    loss_test = None if test_m is None else np.array([m[0] for m in test_m])
    acc_train = None if kind == "mse" else np.array([m[1] for m in train_m])
    acc_test = None if (kind == "mse" or test_m is None) else np.array([m[1] for m in test_m])
    result = TrainingResult(
        **recorded(n, rec, run.fx_train, run.fx_test, loss_train, loss_test, run.kernel_change, track_kernel, k),
        net=train_net,
        params=now(),
        learning_rate=first_rate,
        wall_time=run.wall_time,
        kernel_time=run.kernel_time,
        critical_learning_rate=run.critical_learning_rate,
        diverged=run.diverged,
        message=run.message,
        n_steps_taken=run.n_steps_taken,
        accuracy_train=acc_train,
        accuracy_test=acc_test,
        loss=kind,
        dynamics=rule,
    )
    if run.diverged and on_divergence == "raise":
        raise TrainingDivergedError(run.message, result)
    return result
