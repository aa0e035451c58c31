"""Real training of an imported module in PyTorch, recorded like :func:`ntksolve.train_network`.

:func:`train` runs the user's own optimiser (any ``torch.optim`` optimiser: ``SGD`` with momentum,
Nesterov and weight decay, ``Adam``, ...) on a copy of the module with ``MSELoss``,
``CrossEntropyLoss`` or ``BCEWithLogitsLoss``, full batch or minibatches, with a per-step rate
array or a torch scheduler, and records the outputs on the training and test inputs at the
requested steps. Its steps (:class:`TorchSteps`, run by the one loop of
:mod:`ntksolve.training_loop`) are also :func:`~ntksolve.torch.train_network_torch`'s.

PyTorch's rates and losses map onto ntksolve's by :func:`~ntksolve.torch.learning_rate_from_torch`
(the table of units is in :mod:`ntksolve.torch.units`); the batch orders are in
:mod:`ntksolve.torch.batches`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ntksolve._extras import require
from ntksolve._validation import check_inputs
from ntksolve.dynamics.mse import critical_learning_rate
from ntksolve.kernels.empirical import empirical_ntk
from ntksolve.torch.batches import DataLoaderBatches, _check_batches
from ntksolve.torch.convert import _FLOAT_DTYPES, _read, from_torch
from ntksolve.torch.network_convert import has_network_layers
from ntksolve.torch.units import _loss_kind, check_loss_outputs, learning_rate_from_torch
from ntksolve.training_loop import Steps, TrainingLoop, finish
from ntksolve.training_plan import _check_steps, _check_targets, check_on_divergence, check_test_inputs
from ntksolve.training_records import TrainingResult

torch = require("torch", "torch", "ntksolve.torch (PyTorch interop)")
nn = torch.nn

__all__ = ["train", "learning_rate_from_torch", "DataLoaderBatches", "TorchTrainingResult"]


# ---------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------
@dataclass
class TorchTrainingResult(TrainingResult):
    """What :func:`train` recorded: the fields of :class:`ntksolve.training.TrainingResult`, in
    PyTorch's units, and three more.

    Attributes
    ----------
    steps, fx_train, fx_test, kernel_change, kernel_kind, wall_time, kernel_time, diverged,
    message, n_steps_taken, accuracy_train, accuracy_test
        As in :class:`~ntksolve.training.TrainingResult` (``fx_*`` the module's outputs: logits
        for a cross-entropy).
    loss, dynamics : None
        Not set: the loss and the optimiser are the caller's PyTorch objects.
    loss_train, loss_test : ndarray, shape (T,)
        The training loss (``loss`` on all training inputs, in PyTorch's units: twice ntksolve's
        for the mean MSE) at each recorded step; ``loss_test`` on ``(X_test, y_test)``.
    net, params
        ``from_torch`` of the trained module: ``net.apply(params, X)`` evaluates it.
    learning_rate : float
        PyTorch's rate at the first step (``optimizer.param_groups[0]["lr"]``).
    critical_learning_rate : float or None
        MSE only: the PyTorch rate at which full-batch gradient descent on the linearised module
        diverges, ``2Nk/lambda_max`` of the empirical NTK at initialisation in PyTorch's units.
    module : torch.nn.Module
        The trained copy (the caller's module is never modified).
    batches : list of ndarray or None
        The index arrays used at each step taken (None: full batch).
    learning_rates : ndarray, shape (n_steps_taken,)
        PyTorch's rate (param group 0) used at each step.
    """

    module: Any = None
    batches: Optional[list] = None
    learning_rates: Optional[np.ndarray] = None


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def _as_array(a, name):
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return a


def _targets(kind, y, n_rows, k, dt, name):
    """Targets as the tensor the loss expects: (n, k) floats (MSE), class indices or (n, k)
    probabilities (cross-entropy)."""
    y = _as_array(y, name)
    if kind == "mse":
        return torch.from_numpy(_check_targets(y, n_rows, k, name, dt))
    if kind == "bce":
        arr = _check_targets(y, n_rows, 1, name, dt)
        if not np.all((arr >= 0) & (arr <= 1)):
            raise ValueError(f"{name} must hold probabilities in [0, 1] (0/1 labels) for BCEWithLogitsLoss")
        return torch.from_numpy(arr)
    arr = np.asarray(y)
    if arr.ndim == 1:
        if arr.shape[0] != n_rows:
            raise ValueError(f"{name} must have {n_rows} class labels, got shape {arr.shape}")
        if not (
            np.issubdtype(arr.dtype, np.integer)
            or (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))
        ):
            raise ValueError(f"{name} must hold integer class indices in [0, {k}) for CrossEntropyLoss")
        if arr.min() < 0 or arr.max() >= k:
            raise ValueError(f"{name} has class indices outside [0, {k}) (the module's {k} outputs)")
        return torch.from_numpy(arr.astype(np.int64))
    if arr.ndim == 2 and arr.shape == (n_rows, k):
        probs = _check_targets(arr, n_rows, k, name, dt)
        # PyTorch takes any rows, but its gradient softmax(f) sum(y) - y is the cross-entropy's only
        # for rows that are distributions; the tolerance admits rows normalised in float32
        off = np.abs(probs.sum(axis=1, dtype=np.float64) - 1.0)
        if not np.all(probs >= 0) or np.any(off > 4 * k * np.finfo(np.float32).eps):
            raise ValueError(
                f"{name} as class probabilities of shape ({n_rows}, {k}) must have entries >= 0 and rows "
                "summing to 1 (a distribution over the classes per example); divide each row by its sum, "
                "or give class indices of shape (N,)"
            )
        return torch.from_numpy(probs)
    raise ValueError(
        f"{name} must be class indices of shape ({n_rows},) or class probabilities of shape "
        f"({n_rows}, {k}) for CrossEntropyLoss, got shape {arr.shape}"
    )


def train(
    module,
    X,
    y,
    *,
    optimizer: Callable,
    steps: int,
    loss=None,
    lr_schedule=None,
    batches=None,
    record_at=None,
    X_test=None,
    y_test=None,
    track_kernel: bool = True,
    on_divergence: str = "raise",
    callback: Optional[Callable[[int, float], None]] = None,
) -> TorchTrainingResult:
    """Train a copy of ``module`` in PyTorch and record its outputs, like :func:`ntksolve.train_network`.

    Parameters
    ----------
    module : torch.nn.Sequential
        An MLP module (``nn.Linear`` layers and one element-wise activation, as
        :func:`ntksolve.torch.convert.from_torch` reads them; checked first); never modified. A
        module with LayerNorm, Residual or convolution layers is imported by
        :func:`~ntksolve.torch.from_torch` as a Network, which :func:`ntksolve.train_network` trains.
    X : array_like or tensor, shape (N, d)
    y : array_like or tensor
        MSE: shape (N,) or (N, k). Cross-entropy: class indices (N,) or probabilities (N, k);
        ``BCEWithLogitsLoss``: 0/1 labels (or probabilities) of shape (N,) or (N, 1).
    optimizer : callable ``parameters -> torch.optim.Optimizer``
        E.g. ``functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True,
        weight_decay=1e-4)`` or ``functools.partial(torch.optim.Adam, lr=1e-3)``; called once with
        the copy's parameters. Its ``step()`` must not need a closure.
    steps : int
        Optimiser steps.
    loss : torch.nn.MSELoss, torch.nn.CrossEntropyLoss or torch.nn.BCEWithLogitsLoss, default ``MSELoss()``
        ``BCEWithLogitsLoss`` for a module of one output (the cross-entropy of the logistic function).
    lr_schedule : array_like of float, or callable ``optimizer -> scheduler``, optional
        A per-step rate (length >= ``steps``; it sets every param group's ``lr`` before each
        step), or a torch scheduler factory (e.g. ``lambda o: torch.optim.lr_scheduler.StepLR(o,
        10)``), whose ``step()`` is called after every optimiser step.
    batches : None, sequence of index arrays, or DataLoaderBatches
        None: full batch. A sequence: step ``s`` uses the examples ``batches[s]`` (at least
        ``steps`` entries). :class:`DataLoaderBatches`: the order of a seeded DataLoader.
    record_at : sequence of int, optional
        Strictly increasing steps in ``[0, steps]``; default ``[0, steps]``.
    X_test : array_like, shape (M, d), optional
    y_test : optional (needs ``X_test``), shaped like ``y``
    track_kernel : bool, default True
        Record ``||Theta_t - Theta_0||_F / ||Theta_0||_F`` of ntksolve's empirical NTK of the
        module on ``X`` (traced for ``k = 1``, full otherwise); not counted in ``wall_time``.
    on_divergence : {"raise", "return"}, default "raise"
        When a loss becomes non-finite or the training loss exceeds ``DIVERGENCE_FACTOR`` times
        its scale: raise :class:`~ntksolve.training.TrainingDivergedError` (its ``.result`` holds
        the finite records) or return with ``diverged=True``.
    callback : callable ``(step, loss_train) -> None``, optional
        Called at each recorded step.

    Returns
    -------
    TorchTrainingResult
        ``steps`` (T,), ``fx_train`` (T, N, k), ``fx_test`` (T, M, k) or None, ``loss_train`` (T,),
        ``loss_test`` (T,) or None, ``kernel_change``, the trained ``module`` and ``net, params``,
        the ``batches`` and ``learning_rates`` used.

    Notes
    -----
    The outputs are recorded with the module in its own mode (it has no active dropout: such a
    module is refused) and without gradients. ``fx_train[i]`` is the output after ``steps[i]``
    optimiser steps. To compare with :func:`ntksolve.gradient_descent_mse`, convert the rate with
    :func:`learning_rate_from_torch`.
    """
    if isinstance(module, nn.Module) and (
        has_network_layers(module) or any(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in module.modules())
    ):
        raise ValueError(
            "ntksolve.torch.train trains MLP modules (nn.Linear layers and one activation); this one has "
            "LayerNorm, Residual or convolution layers, which from_torch imports as a Network: train that "
            "network with ntksolve.train_network(*from_torch(module, ...), X, y, ...)"
        )
    reading = _read(module)
    if not any(p.requires_grad for p in module.parameters()):
        raise ValueError(
            "every parameter of the module has requires_grad=False (frozen), so no optimiser step can "
            "move it: unfreeze them (module.requires_grad_(True)) to train it"
        )
    tdt = reading.dtype
    dt = np.dtype(_FLOAT_DTYPES[tdt])
    d, k = reading.n_features, reading.n_outputs
    if loss is None:
        loss = nn.MSELoss()
    kind, _ = _loss_kind(loss)
    check_loss_outputs(kind, k)

    def check(A, name):
        return check_inputs(_as_array(A, name), name=name, n_features=d, dtype=dt)

    X = check(X, "X")
    N = X.shape[0]
    yt = _targets(kind, y, N, k, dt, "y")
    X_test = check_test_inputs(X_test, y_test, check)
    yt_test = None if y_test is None else _targets(kind, y_test, X_test.shape[0], k, dt, "y_test")
    steps, rec = _check_steps(steps, record_at)
    check_on_divergence(on_divergence)
    batch_list = _check_batches(batches, N, steps)
    rates = None
    make_scheduler = None
    if lr_schedule is not None:
        if callable(lr_schedule):
            make_scheduler = lr_schedule
        else:
            rates = np.asarray(lr_schedule, dtype=np.float64)
            if rates.ndim != 1 or rates.shape[0] < steps:
                raise ValueError(
                    f"lr_schedule must be a 1-D array of at least steps={steps} rates (one per step) or "
                    f"a callable optimizer -> scheduler, got shape {rates.shape}"
                )
            if not np.all(np.isfinite(rates[:steps])) or np.any(rates[:steps] < 0):
                raise ValueError("lr_schedule rates must be finite and non-negative")
    if not callable(optimizer) or isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "optimizer must be a factory called with the parameters of the module's copy, e.g. "
            "functools.partial(torch.optim.SGD, lr=0.1), not an optimizer instance (which holds the "
            f"caller's parameters); got {type(optimizer).__name__}"
        )

    model = copy.deepcopy(module)
    opt = optimizer(model.parameters())
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer(parameters) must return a torch.optim.Optimizer, got {type(opt).__name__}")
    scheduler = None
    if make_scheduler is not None:
        scheduler = make_scheduler(opt)
        if not callable(getattr(scheduler, "step", None)):
            raise TypeError(
                f"lr_schedule(optimizer) must return a scheduler with step(), got {type(scheduler).__name__}"
            )
    first_lr = float(rates[0]) if (rates is not None and steps) else float(opt.param_groups[0]["lr"])

    def kernel_now():
        net_s, params_s = from_torch(model)
        return empirical_ntk(net_s, params_s, X, trace=(k == 1))

    per_torch = None if kind != "mse" else learning_rate_from_torch(1.0, loss=loss, n_samples=N, n_outputs=k)

    def critical_rate(theta):
        """Full-batch descent's critical rate on the module's NTK, in PyTorch's units."""
        return float(critical_learning_rate(theta, n_outputs=k)) / per_torch

    def hint(crit):
        if crit is None or not np.isfinite(crit):
            return ". Use a smaller learning rate."
        return (
            f". The learning rate {first_lr:.4g} is {first_lr / crit:.3g} times the critical "
            f"rate {crit:.4g} of full-batch gradient descent on the linearised module (2Nk/lambda_max "
            f"of its empirical NTK at initialisation, in PyTorch's units); use a smaller one "
            f"(e.g. {0.5 * crit:.4g})"
        )

    kernels = (kernel_now, lambda: empirical_ntk(*from_torch(module), X, trace=(k == 1)))
    steps_ = TorchSteps(
        model, opt, scheduler, rates, loss, X, yt, X_test, yt_test, batch_list, steps, k, kernels=kernels
    )
    loop = TrainingLoop(
        steps_,
        rec,
        steps,
        track_kernel=track_kernel,
        critical_rate=critical_rate if kind == "mse" else None,
        hint=hint,
        callback=callback,
    ).run()
    net, params = from_torch(model)
    result = TorchTrainingResult(
        **loop.fields(),
        net=net,
        params=params,
        learning_rate=first_lr,
        module=model,
        batches=None if batch_list is None else batch_list[: loop.taken],
        learning_rates=steps_.learning_rates[: loop.taken].copy(),
    )
    return finish(result, on_divergence)


class TorchSteps(Steps):
    """The steps of a module copy ``model`` with its optimiser ``opt`` (and ``scheduler``, or a
    per-step rate array ``rates``), on validated inputs and the targets as the torch ``loss``
    expects them; its losses are PyTorch's (:attr:`loss_units` of ntksolve's, as the callback sees
    them). :func:`train` and :func:`~ntksolve.torch.train_network_torch` run it."""

    loss_name = "training loss"

    def __init__(
        self, model, opt, scheduler, rates, loss, X, yt, X_test, yt_test, batch_list, steps, k, *, kernels, units=1.0
    ):
        self.model, self.opt, self.scheduler, self.rates, self.loss = model, opt, scheduler, rates, loss
        self.batch_list, self.loss_units = batch_list, units
        self._kernel_now, self._initial_kernel = kernels
        self.n_train, self.k, self.dtype = X.shape[0], k, X.dtype
        self.n_test = None if X_test is None else X_test.shape[0]
        self.test_loss, self.batched = yt_test is not None, batch_list is not None
        self.device = device = next(model.parameters()).device  # inputs go where the module is; records come back
        self.Xt = torch.from_numpy(X).to(device)
        self.Xt_test = None if X_test is None else torch.from_numpy(X_test).to(device)
        self.yt = yt.to(device)
        self.yt_test = None if yt_test is None else yt_test.to(device)
        self.learning_rates = np.empty(steps)

    def _measure(self, Xt, yt):
        with torch.no_grad():
            f = self.model(Xt)
            return f.cpu().numpy(), None if yt is None else float(self.loss(f, yt)), None

    def measure(self, s):
        return self._measure(self.Xt, self.yt)

    def measure_test(self):
        return self._measure(self.Xt_test, self.yt_test)

    def zero_loss(self):
        with torch.no_grad():
            zeros = torch.zeros((self.n_train, self.k), dtype=self.Xt.dtype, device=self.device)
            return float(self.loss(zeros, self.yt))  # the loss of a zero predictor

    def loss_of_step(self, s):
        opt = self.opt
        if self.rates is not None:
            for group in opt.param_groups:
                group["lr"] = float(self.rates[s])
        self.learning_rates[s] = float(opt.param_groups[0]["lr"])
        if self.batch_list is None:
            xb, yb = self.Xt, self.yt
        else:
            idx = torch.from_numpy(self.batch_list[s]).to(self.device)
            xb, yb = self.Xt[idx], self.yt[idx]
        opt.zero_grad(set_to_none=True)
        out = self.loss(self.model(xb), yb)
        out.backward()
        return float(out.detach())

    def update(self, s):
        self.opt.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def kernel(self):
        return self._kernel_now()

    def initial_kernel(self):
        return self._initial_kernel()
