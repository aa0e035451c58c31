"""Real training by scikit-learn's own ``MLPRegressor`` / ``MLPClassifier``, with the interface and
the units of :func:`ntksolve.train_network`.

:func:`train_network_sklearn` starts an estimator from ntksolve's parameters and steps it with
``partial_fit``, one optimiser step per call (the whole training set with ``batch_size = N``, or
``partial_fit(X[b], y[b])`` with ``batch_size = |b|``), so that scikit-learn's own forward pass,
backpropagation and ``SGDOptimizer`` do the training. The estimator is

``MLPRegressor(solver="sgd", alpha=0, learning_rate="constant", shuffle=False, momentum=mu,
nesterovs_momentum=nesterov, learning_rate_init=eta / k, ...)``

(``MLPClassifier`` for cross-entropy). The mapping, exactly:

- **Parameters.** scikit-learn computes ``z = h @ coefs_[l] + intercepts_[l]`` and trains those
  arrays: the standard parameterisation's ``W~ = ws W`` and ``b~ = bs b``, so ``coefs_[l] =
  (ws W).T`` and ``intercepts_[l] = bs b`` (:func:`~ntksolve.sklearn.mlp_import.from_sklearn` is
  the inverse). An initialising ``partial_fit`` on the first rows builds the arrays; they are then
  overwritten and the optimiser's state (its velocities) dropped, so the first real step starts
  from ntksolve's parameters with zero velocity.
- **Rate.** ``squared_error`` reports ntksolve's loss ``1/(2Nk) Σ‖f − y‖²`` but steps along the
  gradient of ``1/(2N) Σ‖f − y‖²``: ``learning_rate_init = η / k``
  (:func:`~ntksolve.sklearn.mlp_import.learning_rate_from_sklearn` is the inverse). Its log loss
  over the logits has gradient ``(p − Y) / N``, the cross-entropy rule's: ``learning_rate_init = η``.
- **Momentum.** ``SGDOptimizer`` takes ``u ← μ u − η g; θ ← θ + u`` (Nesterov: ``θ ← θ + μ u − η g``
  with the new ``u``), from ``u = 0``. With ``u = −η b`` this is PyTorch's heavy ball
  ``b ← μ b + g; θ ← θ − η b`` (Nesterov ``θ ← θ − η (g + μ b)``) at a constant rate, step for step.

Refused, before any work, because scikit-learn cannot do them exactly: NTK parameterisation (its
per-layer gradient factors are per-layer learning rates), layers without a bias (scikit-learn
always trains intercepts), activations other than identity, logistic, tanh and relu, schedules
(``invscaling`` and ``adaptive`` are not ntksolve's schedules, and the rate is fixed per estimator),
weight decay (``alpha`` adds ``alpha/(2N) ‖W‖²`` on the weights only, per batch size; PyTorch's
weight decay acts on every parameter), Adam (``AdamOptimizer`` folds the bias correction into the
rate and adds ``epsilon`` to the uncorrected ``sqrt(v)``, i.e. PyTorch's ``eps`` times
``sqrt(1 − beta2^t)``), and a softmax over two outputs (scikit-learn has one logistic output for two
classes: use a 0/1 column, ``k = 1``).
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

from ntksolve._validation import check_choice
from ntksolve.dynamics.rules import GradientDescent
from ntksolve.dynamics.units import LOSS_CONVENTIONS
from ntksolve.kernels.empirical import empirical_ntk
from ntksolve.nets.mlp import require_mlp
from ntksolve.sklearn.mlp_import import ACTIVATION_NAMES, from_sklearn
from ntksolve.training_loop import PlanSteps, trainer
from ntksolve.training_plan import plan_mlp

__all__ = ["train_network_sklearn", "check_sklearn_run"]

#: ntksolve's activation -> scikit-learn's.
SKLEARN_ACTIVATIONS = {v: k for k, v in ACTIVATION_NAMES.items()}
_STANDARD = "use parameterization='standard' (ntksolve compare --parameterization standard)"
#: how scikit-learn's ``fit`` / ``partial_fit`` refuses a step that made a parameter non-finite
_NON_FINITE = "Solver produced non-finite parameter weights"


def check_sklearn_run(net, rule, *, loss: str = "mse", n_outputs: Optional[int] = None) -> None:
    """Refuse what scikit-learn's MLP cannot train exactly (see the module docstring), before any work.

    Parameters
    ----------
    net : MLP
    rule : GradientDescent, Adam or other
    loss : {"mse", "cross_entropy"}
    n_outputs : int, optional
        ``k`` (default ``net.n_outputs``).

    Raises
    ------
    TypeError
        ``net`` not an MLP, ``rule`` not a GradientDescent or an Adam.
    ValueError
        The reason scikit-learn cannot run it, and what to change.
    """
    from ntksolve.dynamics.adaptive import Adam

    require_mlp(
        net, "scikit-learn's trainer", "scikit-learn's MLPs are plain MLPs: train a Network with ntksolve.train_network"
    )
    if net.parameterization != "standard":
        raise ValueError(
            f"scikit-learn's MLP trains in standard parameterisation only: NTK parameterisation scales "
            f"each layer's gradient by its own factor, a per-layer learning rate that its single "
            f"learning_rate_init cannot express; {_STANDARD}"
        )
    if not all(layer.bias for layer in net.layers):
        raise ValueError(
            "scikit-learn's MLP always trains an intercept in every layer, so a network with bias=False "
            "layers cannot be trained by it; use bias=True (bias_std=0 starts the biases at zero)"
        )
    if net.activation not in SKLEARN_ACTIVATIONS:
        raise ValueError(
            f"scikit-learn's MLP has no {net.activation!r} activation; use one of {', '.join(SKLEARN_ACTIVATIONS)}"
        )
    if isinstance(rule, Adam):
        raise ValueError(
            "scikit-learn's adam is not torch.optim.Adam: it folds the bias correction into the rate "
            "and adds epsilon to the uncorrected sqrt(v) (PyTorch's eps times sqrt(1 - beta2^t)), so it "
            "cannot reproduce ntksolve's Adam exactly; use trainer 'numpy' or 'torch' for Adam"
        )
    if not isinstance(rule, GradientDescent):
        raise TypeError(f"scikit-learn trains by GradientDescent (solver='sgd'), got {rule!r}")
    if rule.schedule is not None:
        raise ValueError(
            f"scikit-learn's MLP has no learning-rate schedule like {rule.schedule!r} (its 'invscaling' "
            "and 'adaptive' rates are other rules); use a constant rate, or trainer 'numpy' or 'torch'"
        )
    if rule.weight_decay > 0:
        raise ValueError(
            f"weight_decay={rule.weight_decay} has no exact scikit-learn counterpart: its alpha is an "
            "L2 penalty alpha/(2N) ||W||^2 on the weights only (not the intercepts), while ntksolve's "
            "(PyTorch's) weight decay acts on every parameter; use trainer 'numpy' or 'torch'"
        )
    check_choice(loss, "loss", ("mse", "cross_entropy"))
    k = net.n_outputs if n_outputs is None else int(n_outputs)
    if loss == "cross_entropy" and k == 2:
        raise ValueError(
            "scikit-learn's MLPClassifier gives two classes one logistic output, not a softmax over "
            "two: use a 0/1 column of labels (k = 1, the logistic loss), or trainer 'numpy' or 'torch'"
        )


def _to_sklearn(est, train_net, params, d):
    """Write ``params`` (``train_net``'s storage convention) into ``coefs_`` / ``intercepts_``."""
    est.coefs_ = [np.ascontiguousarray((ws * W).T) for (W, _), (ws, _) in zip(params, train_net.layer_scales(d))]
    est.intercepts_ = [np.array(bs * b) for (_, b), (_, bs) in zip(params, train_net.layer_scales(d))]


def _from_sklearn(est, train_net, d):
    """``coefs_`` / ``intercepts_`` as ``(W, b)`` in ``train_net``'s storage convention."""
    return [
        (np.ascontiguousarray(c.T) / ws, np.array(i) / bs)
        for c, i, (ws, bs) in zip(est.coefs_, est.intercepts_, train_net.layer_scales(d))
    ]


class _SklearnSteps(PlanSteps):
    """scikit-learn's steps: one ``partial_fit`` a step, whose loss (of the step's batch, before
    its update) is checked after it."""

    updates_before_check = True

    @classmethod
    def plan(cls, net, params, X, y, rule, kind, **run):
        check_sklearn_run(net, rule, loss=kind)
        plan = plan_mlp(net, params, X, y, rule, kind, **run)
        if plan.dt != np.float64:
            raise ValueError(f"scikit-learn's MLP trains float64 here; got parameters of dtype {np.dtype(plan.dt)}")
        return plan

    def __init__(self, net, params, plan):
        super().__init__(net, params, plan)
        X, N, k = plan.X, plan.N, plan.k
        self.d = d = X.shape[1]
        if plan.kind == "mse":
            self.fit_y = plan.Y[:, 0] if k == 1 else plan.Y
            rate_init = 1.0 / LOSS_CONVENTIONS["sklearn_mlp_regressor"](N, k)  # its step / ours, per unit rate
        else:
            self.fit_y, rate_init = plan.target, 1.0
        rule, train_net = plan.rule, self.train_net
        common = dict(
            hidden_layer_sizes=train_net.hidden_layer_sizes,
            activation=SKLEARN_ACTIVATIONS[train_net.activation],
            solver="sgd",
            alpha=0.0,
            batch_size=N,
            learning_rate="constant",
            learning_rate_init=float(rule.learning_rate) * rate_init,
            momentum=rule.momentum,
            nesterovs_momentum=rule.nesterov,
            shuffle=False,
            max_iter=1,
            tol=0.0,
            n_iter_no_change=2**31 - 1,
            random_state=0,
        )
        classes = None
        if plan.kind == "mse":
            est = MLPRegressor(**common)
        else:
            est = MLPClassifier(**common)
            classes = np.arange(max(k, 2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            # builds coefs_ and intercepts_ (one step, then overwritten) and the label binariser
            est.partial_fit(X, self.fit_y, **({} if classes is None else {"classes": classes}))
        _to_sklearn(est, train_net, self.work, d)
        del est._optimizer  # a fresh SGDOptimizer (zero velocities) over the new arrays at the next call
        est.n_iter_ = est.t_ = 0
        est.loss_curve_ = []
        self.est = est

    def _outputs(self, Z):
        if self.plan.kind == "mse":
            return self.est.predict(Z).reshape(Z.shape[0], self.k)
        sk_net, sk_params = from_sklearn(self.est)
        return sk_net.apply(sk_params, Z)

    def outputs(self, s):
        return self._outputs(self.plan.X)

    def test_outputs(self):
        return self._outputs(self.plan.X_test)

    def loss_of_step(self, s):
        est, X, fit_y = self.est, self.plan.X, self.fit_y
        if self.plan.batches is not None:
            b = self.plan.batches[s]
            est.batch_size = len(b)
            X, fit_y = X[b], fit_y[b]
        try:
            est.partial_fit(X, fit_y)
        except ValueError as exc:
            if not str(exc).startswith(_NON_FINITE):
                raise
            return np.nan  # the step left non-finite parameters, so the loss that follows is non-finite
        # est.loss_ is the loss of step s's batch before its update (the whole set in full batch)
        return est.loss_

    def update(self, s):
        pass  # partial_fit has updated

    def kernel(self):
        return empirical_ntk(*from_sklearn(self.est), self.plan.X, trace=(self.k == 1))

    def current_params(self):
        return _from_sklearn(self.est, self.train_net, self.d)


@trainer(_SklearnSteps)
def train_network_sklearn():
    """:func:`ntksolve.train_network`, run by scikit-learn's MLP: the same arguments, result and units.

    Parameters
    ----------
    net, params, X, y, steps, learning_rate, dynamics, loss, batches, record_at, X_test, y_test,
    track_kernel, on_divergence, callback
        As :func:`ntksolve.train_network`, within what :func:`check_sklearn_run` accepts: standard
        parameterisation with biases; a constant-rate :class:`~ntksolve.dynamics.rules.GradientDescent`
        (momentum and Nesterov allowed); ``"mse"`` (``MLPRegressor``) or ``"cross_entropy"``
        (``MLPClassifier``: ``k >= 3`` classes, or 0/1 labels with ``k = 1``).

    Returns
    -------
    TrainingResult
        As :func:`ntksolve.train_network` returns it. The recorded outputs are the regressor's
        ``predict`` (the classifier's logits, through :func:`~ntksolve.sklearn.mlp_import.from_sklearn`);
        ``kernel_change`` is of the empirical NTK of ``from_sklearn(estimator)`` (the NTK over
        scikit-learn's own parameters, which is ``net``'s in standard parameterisation).

    Raises
    ------
    TypeError, ValueError
        As :func:`ntksolve.train_network`, or what scikit-learn cannot train exactly
        (:func:`check_sklearn_run`), before the first step.
    TrainingDivergedError
        The loss diverged and ``on_divergence="raise"``.
    """
