"""Real training of a :class:`~ntksolve.nets.network.Network`: :func:`train_network` for any layered network.

``ntksolve.train_network`` is this module's :func:`train_network`: an :class:`~ntksolve.MLP` (and a
Network that is one, :meth:`~ntksolve.nets.network.Network.as_mlp`) trains on
:func:`ntksolve.training.train_network`, exactly as before; any other Network on the same steps
(:class:`NetworkSteps`, the MLP's with the network's passes): the forward pass, the backward pass of
the loss seed ``r = dL/df`` (:func:`ntksolve.nets.network.backward`) and, per parametrised leaf,
its step (:meth:`~ntksolve.nets.layer_protocol.Layer.step`: a dense layer's ``g^T h`` products, a
normalisation's own) by the same optimisers (:mod:`ntksolve.optimizers`: every rule). Losses,
records, divergence and the result are those of :func:`ntksolve.training.train_network`, whose
docstring documents the arguments.
"""

from __future__ import annotations

import numpy as np

from ntksolve.nets.network import Network, accepts_network, backward, forward, prepare_inputs, stores_trained_bias
from ntksolve.optimizers import parameter_optimizer
from ntksolve.training import MLPSteps
from ntksolve.training import train_network as _train_mlp
from ntksolve.training_loop import trainer
from ntksolve.training_plan import plan_run
from ntksolve.training_records import TrainingResult


def _copy(params, dt):
    if isinstance(params, list):
        return [_copy(p, dt) for p in params]
    return tuple(np.array(a, dtype=dt, order="C", copy=True) for a in params)


def _leaf_params(params, layers, out):
    """The parametrised leaves' ``(W, b)`` pairs, in order (the optimiser's list; same arrays)."""
    for layer, p in zip(layers, params):
        if layer.has_params:
            out.append(p)
        elif layer.leaves():
            _leaf_params(p, layer.layers, out)
    return out


def _leaf_scales(net, shape):
    return [leaf.scales(s) for leaf, s in _leaf_inputs(net.layers, net.shapes(shape))]


def _leaf_inputs(layers, shapes):
    out = []
    for layer, s in zip(layers, shapes):
        if layer.has_params:
            out.append((layer, s))
        elif layer.leaves():
            inner = [s]
            for sub in layer.layers:
                inner.append(sub.output_shape(inner[-1]))
            out.extend(_leaf_inputs(layer.layers, inner))
    return out


class NetworkSteps(MLPSteps):
    """The layered network's steps: :class:`~ntksolve.training.MLPSteps` with the network's
    forward and backward passes and, per parametrised leaf, its own step."""

    @classmethod
    def plan(cls, net, params, X, y, rule, kind, **run):
        X, dt = prepare_inputs(net, params, X)
        shape = X.shape[1:]

        def check(A, name):
            return prepare_inputs(net, params, A, name, input_shape=shape)[0]

        return plan_run(rule, kind, X, y, k=net.output_shape(shape)[0], dt=dt, check=check, **run)

    def _working_copy(self, params, dt):
        work = _copy(params, dt)
        if self.train_net is not self.net:
            # a layer whose stored b cannot carry b~ (bias_std = 0) trains as bias_std = 1 with b = 0
            for leaf, pair in zip(self.net.leaves(), _leaf_params(work, self.net.layers, [])):
                if not stores_trained_bias(leaf):
                    pair[1][...] = 0.0
        return work

    def _optimizer(self):
        leaves = _leaf_params(self.work, self.train_net.layers, [])
        self.index = {id(pair[0]): i for i, pair in enumerate(leaves)}
        return parameter_optimizer(self.plan.rule, leaves, _leaf_scales(self.train_net, self.plan.X.shape[1:]))

    def _pass(self, rows, keep):
        return forward(self.train_net, self.work, rows, keep=keep)

    def _apply(self, r, caches):
        opt, index = self.opt, self.index
        # every signal is computed before any parameter moves (the leaves' steps come after the pass)
        for leaf, p, cache, g in backward(self.train_net, self.work, caches, r[:, None, :]):
            leaf.step(opt, index[id(p[0])], p, cache, g)


@trainer(NetworkSteps)
def _train_layers():
    """:func:`ntksolve.training.train_network` for a layered :class:`~ntksolve.nets.network.Network`
    that is not an MLP (the arguments and the result are that function's)."""


def _from_mlp_result(result: TrainingResult, net: Network) -> TrainingResult:
    """An MLP-shaped network's result, in the network's terms (its net and parameter list)."""
    result.net = net if result.net == net.as_mlp() else Network.from_mlp(result.net)
    result.params = Network.params_from_mlp(result.params)
    return result


_train_layers.from_mlp_result = _from_mlp_result

#: :func:`ntksolve.training.train_network`, also for a :class:`~ntksolve.nets.network.Network`.
train_network = accepts_network(_train_layers)(_train_mlp)


__all__ = ["train_network"]
