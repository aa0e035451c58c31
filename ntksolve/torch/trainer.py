"""Real training in PyTorch with the interface and the units of :func:`ntksolve.train_network`.

:func:`train_network_torch` takes what the numpy trainer takes -- an ntksolve network and its
parameters, a rule object, ntksolve's loss -- exports the network with
:func:`~ntksolve.torch.to_torch`, maps the rule onto PyTorch optimisers tensor by tensor
(:mod:`ntksolve.torch.rules`) and trains the module with the steps of :func:`ntksolve.torch.train`
(:class:`~ntksolve.torch.training.TorchSteps`).
It returns a :class:`~ntksolve.training.TrainingResult` in ntksolve's units (losses, rates, the
kernel of the network's own parameterisation, parameters in its storage convention), so that the
two trainers can be swapped and compared number for number.
"""

from __future__ import annotations

import numpy as np

from ntksolve._extras import require
from ntksolve.kernels.empirical import empirical_ntk
from ntksolve.torch.convert import to_torch
from ntksolve.torch.rules import module_scales, torch_optimizer
from ntksolve.torch.training import TorchSteps
from ntksolve.torch.units import learning_rate_from_torch
from ntksolve.training_loop import PlanSteps, _measure, trainer
from ntksolve.training_plan import plan_mlp

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


class _TorchMLPSteps(TorchSteps, PlanSteps):
    """An ntksolve MLP trained in PyTorch: :func:`~ntksolve.torch.to_torch` of the network, the rule
    as PyTorch optimisers (:mod:`ntksolve.torch.rules`), PyTorch's loss; the records in ntksolve's
    terms."""

    @classmethod
    def plan(cls, net, params, X, y, rule, kind, **run):
        return plan_mlp(net, params, X, y, rule, kind, **run)

    def __init__(self, net, params, plan):
        PlanSteps.__init__(self, net, params, plan)
        X, k, dt, N = plan.X, plan.k, plan.dt, plan.N
        tt = plan.target_test
        if plan.kind == "mse":
            torch_loss, yt, yt_test = nn.MSELoss(), plan.Y, tt
        elif k == 1:
            torch_loss, yt, yt_test = nn.BCEWithLogitsLoss(), plan.Y, None if tt is None else tt.astype(dt)[:, None]
        else:
            torch_loss, yt, yt_test = nn.CrossEntropyLoss(), plan.target, tt
        d, train_net, work = X.shape[1], self.train_net, self.work
        module = to_torch(train_net, work)
        scales = module_scales(train_net, d)
        free = [
            torch.from_numpy(work[sc.layer][1].copy()).requires_grad_(True)
            for sc in scales
            if sc.name == "bias" and sc.scale == 0.0
        ]
        c = learning_rate_from_torch(1.0, loss=torch_loss, n_samples=N, n_outputs=k)  # PyTorch's loss / ours
        opt, scheduler = torch_optimizer(plan.rule, list(module.parameters()), scales, free, c, plan.rates)
        self.now = lambda: _stored(module, train_net, scales, free, d)
        yt, yt_test = torch.from_numpy(yt), None if yt_test is None else torch.from_numpy(yt_test)
        kernels = (lambda: PlanSteps.kernel(self), lambda: empirical_ntk(train_net, work, X, trace=(k == 1)))
        TorchSteps.__init__(
            self,
            module,
            opt,
            scheduler,
            None,
            torch_loss,
            X,
            yt,
            plan.X_test,
            yt_test,
            plan.batches,
            plan.steps,
            k,
            kernels=kernels,
            units=c,
        )
        self.accuracy = False  # measured afterwards, in ntksolve's terms, from the recorded outputs

    def current_params(self):
        return self.now()

    def result_fields(self, fields):
        # the recorded losses (and accuracies) in ntksolve's own terms, from the recorded outputs
        kind, p = self.plan.kind, self.plan
        train_m = [_measure(kind, f, p.target) for f in fields["fx_train"]]
        test_m = None if p.target_test is None else [_measure(kind, f, p.target_test) for f in fields["fx_test"]]
        return dict(
            super().result_fields(fields),
            loss_train=np.array([m[0] for m in train_m]),
            loss_test=None if test_m is None else np.array([m[0] for m in test_m]),
            accuracy_train=None if kind == "mse" else np.array([m[1] for m in train_m]),
            accuracy_test=None if (kind == "mse" or test_m is None) else np.array([m[1] for m in test_m]),
        )


@trainer(_TorchMLPSteps)
def train_network_torch():
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
