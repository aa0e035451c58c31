"""Real training of a network, beside which the closed forms and the function-space twins are judged.

The losses and the step are those of ``docs/conventions.md`` and ``docs/training-rules.md``: the MSE
``L = 1/(2Nk) sum_i ||f(x_i) - y_i||^2`` or the mean cross-entropy (softmax over the ``k`` outputs,
logistic for ``k = 1``), full batch or on the batch of each step, and one rule object for the
optimiser: :class:`~ntksolve.dynamics.rules.GradientDescent` (``torch.optim.SGD``: momentum,
Nesterov, weight decay, a schedule) or :class:`~ntksolve.dynamics.adaptive.Adam`. Plain descent is

    theta_{s+1}   = theta_s - eta grad L(theta_s)

The network's one backward pass (:func:`ntksolve.nets.backward`) carries the loss gradient in the
outputs, ``r = (f - y) / (Nk)`` or ``(softmax(f) - Y) / N`` (one ``(N, k)`` seed), not the ``k``
per-output deltas the kernel needs: with ``g^l = dL/dz^l``::

    g^{L+1} = r
    g^l     = ws_{l+1} (g^{l+1} W^{l+1}) * phi'(z^l)

and :mod:`ntksolve.optimizers` turns ``(g^l)^T h^{l-1}`` and ``sum_i g^l_i`` into each layer's step
(plain descent: ``W^l <- W^l - eta alpha_l (g^l)^T h^{l-1}``, ``b^l <- b^l - eta beta_l sum_i g^l_i``
with ``(alpha_l, beta_l)`` the layer's :attr:`~ntksolve.nets.layers.LayerScales.stored_step`). Every
product is one BLAS GEMM (numpy's).

In NTK parameterisation the stored ``W, b`` are trained. Standard parameterisation trains
``W~ = ws W`` and ``b~ = bs b``; we keep the storage convention of :class:`~ntksolve.MLP` and step
the stored variables by the chain rule, which is exactly the rule on ``(W~, b~)`` (the Jacobian of
:func:`~ntksolve.jacobian` in standard parameterisation is taken with respect to them; weight decay
and Adam's moments act on them too, see :mod:`ntksolve.optimizers`). Where the stored ``b`` cannot
carry the trained ``b~`` (``bias_std = 0``), training runs on :meth:`MLP.trainable()
<ntksolve.MLP.trainable>`, which trains identically; :attr:`TrainingResult.net` is that network,
and ``result.net.apply(result.params, X)`` evaluates the trained model in every case.
"""

from __future__ import annotations

import numpy as np

from ntksolve._config import DIVERGENCE_FACTOR  # noqa: F401  (re-exported)
from ntksolve.dynamics.function_space import _probabilities
from ntksolve.nets.backprop import backward
from ntksolve.nets.mlp import forward
from ntksolve.optimizers import parameter_optimizer
from ntksolve.training_loop import PlanSteps, trainer
from ntksolve.training_plan import plan_mlp
from ntksolve.training_records import (  # noqa: F401  (re-exported)
    KernelTracker,
    Stopwatch,
    TrainingDivergedError,
    TrainingResult,
)


def _seed(kind, f, Y):
    """``g^{L+1} = dL/df`` on the rows ``f`` (n, k): ``(f - y)/(nk)``, or ``(sigma(f) - Y)/n``."""
    dt = f.dtype.type
    if kind == "mse":
        r = f - Y
        r *= dt(1.0 / r.size)
        return r
    r = np.asarray(_probabilities(f), dtype=f.dtype)
    r -= Y
    r *= dt(1.0 / f.shape[0])
    return r


class MLPSteps(PlanSteps):
    """The numpy MLP's steps: one forward pass (kept for the step in full batch), the seed
    ``r = dL/df``, the one backward pass and :mod:`ntksolve.optimizers`' update per layer.
    :class:`~ntksolve.network_training` overrides the passes (:meth:`_pass`, :meth:`_apply`)."""

    def __init__(self, net, params, plan):
        super().__init__(net, params, plan)
        # in full batch the measuring forward pass keeps what the step needs
        self.measure_every_step = not self.batched
        self.opt = self._optimizer()

    def _optimizer(self):
        return parameter_optimizer(self.plan.rule, self.work, self.train_net.scales(self.plan.X.shape[1]))

    @classmethod
    def plan(cls, net, params, X, y, rule, kind, **run):
        return plan_mlp(net, params, X, y, rule, kind, **run)

    def _pass(self, rows, keep):
        """The forward pass on ``rows``: ``f`` and what the step needs (kept when ``keep``)."""
        f, hs, dphis = forward(self.train_net, self.work, rows, keep=keep)
        return f, (hs, dphis)

    def _apply(self, r, cache):
        """The backward pass of the seed ``r`` (n, k) and each layer's update."""
        opt, (hs, dphis) = self.opt, cache
        # backward() computes g^{l-1} from W^l before it hands over g^l, so W^l may move right away.
        for l, g in backward(self.train_net, self.work, dphis, r[:, None, :]):
            opt.update(l - 1, g.reshape(g.shape[0], g.shape[2]), hs[l - 1])

    def outputs(self, s):
        self.f, self.cache = self._pass(self.plan.X, not self.batched and s < self.plan.steps)
        return self.f

    def test_outputs(self):
        return self._pass(self.plan.X_test, False)[0]

    def loss_of_step(self, s):
        p = self.plan
        if not self.batched:
            self.r = _seed(p.kind, self.f, p.Y)
            return None
        b = p.batches[s]
        fb, self.cache = self._pass(p.X[b], True)
        self.r = _seed(p.kind, fb, p.Y[b])
        return self.r

    def update(self, s):
        self.opt.start_step(self.plan.rates[s])
        self._apply(self.r, self.cache)


@trainer(MLPSteps)
def train_network():
    """Train ``net`` from ``params`` by the rule ``dynamics`` (or plain descent at ``learning_rate``).

    Parameters
    ----------
    net : MLP
    params : list of (W, b)
        Starting parameters (from ``net.init``); never modified.
    X : array_like, shape (N, d)
    y : array_like
        MSE: shape (N,) or (N, k). Cross-entropy: class labels (N,) in ``[0, k)`` or one-hot rows
        (N, k); 0/1 labels for ``k = 1``.
    steps : int
        Number of optimiser steps.
    learning_rate : float or Schedule, optional
        ``eta > 0``: the same as ``dynamics=GradientDescent(eta)``. Full-batch gradient descent on
        MSE converges only below ``2Nk / lambda_max`` of the NTK.
    dynamics : GradientDescent or Adam, optional
        The rule (exactly one of ``learning_rate`` and ``dynamics``): ``torch.optim.SGD`` with
        momentum, Nesterov, weight decay and a :class:`~ntksolve.dynamics.schedules.Schedule`
        (rate of step ``s``: ``Schedule.rates(steps)[s]``), or ``torch.optim.Adam`` / ``AdamW``,
        on the gradient of the loss with respect to the trained parameters (weight decay on all of
        them, biases too). A :class:`~ntksolve.dynamics.rules.GradientFlow` is a TypeError.
    loss : {"mse", "cross_entropy"}, default "mse"
        ``1/(2Nk) sum ||f - y||^2``, or ``torch.nn.CrossEntropyLoss`` over the ``k`` outputs
        (``BCEWithLogitsLoss`` for ``k = 1``), mean over the examples.
    batches : sequence of index arrays, optional
        Step ``s`` uses the training rows ``batches[s]`` only (at least ``steps`` entries, e.g. from
        :func:`~ntksolve.dynamics.shuffled_batches`); the loss is then the batch's (normaliser
        ``|b| k`` for MSE, ``|b|`` for cross-entropy). None: full batch. Records always evaluate the
        whole training and test sets.
    record_at : sequence of int, optional
        Strictly increasing steps in ``[0, steps]`` at which to record outputs, losses and the
        kernel change. Default ``[0, steps]``.
    X_test : array_like, shape (M, d), optional
    y_test : array_like, optional (needs ``X_test``), as ``y``
    track_kernel : bool, default True
        Record ``||Theta_t - Theta_0||_F / ||Theta_0||_F`` (empirical NTK on ``X``; traced for
        ``k = 1``, full for ``k > 1``). Costs one kernel per recorded step, not counted in
        ``wall_time``.
    on_divergence : {"raise", "return"}, default "raise"
        When the training loss becomes non-finite or exceeds ``DIVERGENCE_FACTOR`` times its scale
        (checked every step for full batches; at recorded steps, and every batch loss for being
        finite, with ``batches``): raise :class:`TrainingDivergedError` (whose ``.result`` holds the
        finite records), or return the result with ``diverged=True``. For gradient descent on MSE
        the message names the rule's critical learning rate.
    callback : callable ``(step, loss_train) -> None``, optional
        Called at each recorded step (progress bars; it may raise ``KeyboardInterrupt``).

    Returns
    -------
    TrainingResult
        ``steps`` (T,), ``fx_train`` (T, N, k), ``fx_test`` (T, M, k) or None, ``loss_train`` (T,),
        ``loss_test`` (T,) or None, ``accuracy_train``/``accuracy_test`` (cross-entropy),
        ``kernel_change`` (T,) or None, final ``params``, times.

    Raises
    ------
    TypeError
        Neither or both of ``learning_rate`` and ``dynamics``; a rule that is not a GradientDescent or an Adam.
    ValueError
        Bad inputs (shapes, NaN, ``record_at`` outside ``[0, steps]`` or unsorted, bad rate, a
        schedule shorter than ``steps``, batch indices out of range, cross-entropy targets that
        are not labels or one-hot rows), all before the first step.
    TrainingDivergedError
        The loss diverged and ``on_divergence="raise"``.
    """


__all__ = ["train_network", "TrainingResult", "TrainingDivergedError", "DIVERGENCE_FACTOR"]
