"""Real training of a :class:`~ntksolve.nets.network.Network`: :func:`train_network` for any layered network.

``ntksolve.train_network`` is this module's :func:`train_network`: an :class:`~ntksolve.MLP` (and a
Network that is one, :meth:`~ntksolve.nets.network.Network.as_mlp`) trains on
:func:`ntksolve.training.train_network`'s fused loop, exactly as before; any other Network on the
loop below, which is that one's with the network's passes: the forward pass, the backward pass of
the loss seed ``r = dL/df`` (:func:`ntksolve.nets.network.backward`) and, per parametrised leaf,
its step (:meth:`~ntksolve.nets.layer_protocol.Layer.step`: a dense layer's ``g^T h`` products, a
normalisation's own) by the same optimisers (:mod:`ntksolve.optimizers`: every rule). Losses,
records, divergence and the result are those of :func:`ntksolve.training.train_network`, whose
docstring documents the arguments.
"""

from __future__ import annotations

import numpy as np

from ntksolve._validation import check_choice
from ntksolve.dynamics.function_space import _targets, check_batches
from ntksolve.dynamics.rules import GradientDescent
from ntksolve.dynamics.schedules import as_schedule
from ntksolve.kernels.empirical import empirical_ntk
from ntksolve.nets.network import Network, accepts_network, backward, forward, prepare_inputs, stores_trained_bias
from ntksolve.optimizers import parameter_optimizer, training_rule
from ntksolve.training import (
    KernelTracker,
    Stopwatch,
    TrainingDivergedError,
    TrainingResult,
    _check_steps,
    _check_targets,
    _divergence_hint,
    _diverged,
    _loss_scale,
    _measure,
    _rule_critical_rate,
    _seed,
    recorded,
)
from ntksolve.training import train_network as _train_mlp


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


def _train_layers(
    net: Network,
    params,
    X,
    y,
    *,
    steps,
    learning_rate=None,
    dynamics=None,
    loss="mse",
    batches=None,
    record_at=None,
    X_test=None,
    y_test=None,
    track_kernel=True,
    on_divergence="raise",
    callback=None,
) -> TrainingResult:
    rule = training_rule(learning_rate, dynamics)
    kind = check_choice(loss, "loss", ("mse", "cross_entropy"))
    X, dt = prepare_inputs(net, params, X)
    shape = X.shape[1:]
    N, k = X.shape[0], net.output_shape(shape)[0]
    if X_test is not None:
        X_test, _ = prepare_inputs(net, params, X_test, "X_test", input_shape=shape)
    elif y_test is not None:
        raise ValueError("y_test was given without X_test")
    if kind == "mse":
        Y = target = _check_targets(y, N, k, "y", dt)
        target_test = None if y_test is None else _check_targets(y_test, X_test.shape[0], k, "y_test", dt)
    else:
        Y, target = _targets(y, N, k, "y")
        Y = Y.astype(dt)
        target_test = None if y_test is None else _targets(y_test, X_test.shape[0], k, "y_test")[1]
    steps, rec = _check_steps(steps, record_at)
    rates = as_schedule(rule.learning_rate).rates(steps)
    first_rate = float(as_schedule(rule.learning_rate).rates(1)[0])
    batch_list = check_batches(batches, N, steps)
    if on_divergence not in ("raise", "return"):
        raise ValueError(f"on_divergence must be 'raise' or 'return', got {on_divergence!r}")
    with_crit = kind == "mse" and isinstance(rule, GradientDescent)

    train_net = net.trainable()
    work = _copy(params, dt)
    if train_net is not net:
        # a layer whose stored b cannot carry b~ (bias_std = 0) trains as bias_std = 1 with b = 0
        for leaf, pair in zip(net.leaves(), _leaf_params(work, net.layers, [])):
            if not stores_trained_bias(leaf):
                pair[1][...] = 0.0
    leaves = _leaf_params(work, train_net.layers, [])
    opt = parameter_optimizer(rule, leaves, _leaf_scales(train_net, shape))
    index = {id(pair[0]): i for i, pair in enumerate(leaves)}

    T = rec.size
    M = X_test.shape[0] if X_test is not None else 0
    fx_train = np.empty((T, N, k), dtype=dt)
    fx_test = np.empty((T, M, k), dtype=dt) if X_test is not None else None
    loss_train = np.empty(T)
    loss_test = np.empty(T) if target_test is not None else None
    acc_train = np.empty(T) if kind != "mse" else None
    acc_test = np.empty(T) if (kind != "mse" and target_test is not None) else None
    kchange = np.empty(T) if track_kernel else None
    crit = tracker = None
    if track_kernel:
        tracker = KernelTracker(lambda: empirical_ntk(train_net, work, X, trace=(k == 1)))
        if with_crit:
            crit = _rule_critical_rate(rule, tracker.theta0, k)
    loss_scale = None
    diverged, message = False, ""
    i_rec = s_done = 0
    clock = Stopwatch()

    def stop(s, what):
        nonlocal crit, diverged, message
        diverged = True
        clock.stop()
        if crit is None and with_crit:
            crit = _rule_critical_rate(rule, empirical_ntk(net, params, X, trace=(k == 1)), k)
        message = f"training diverged at step {s}: the {what}{_divergence_hint(rule, rates, crit, batch_list)}"

    for s in range(steps + 1):
        recording = i_rec < T and rec[i_rec] == s
        if batch_list is None or recording or s == 0:
            f, caches = forward(train_net, work, X, keep=(batch_list is None and s < steps))
            value, acc = _measure(kind, f, target)
            if loss_scale is None:
                loss_scale = _loss_scale(kind, value, target, k, dt)
            if _diverged(value, loss_scale):
                stop(s, _diverged(value, loss_scale))
                break
        if recording:
            fx_train[i_rec] = f
            loss_train[i_rec] = value
            if acc_train is not None:
                acc_train[i_rec] = acc
            if X_test is not None:
                ft = forward(train_net, work, X_test, keep=False)[0]
                fx_test[i_rec] = ft
                if target_test is not None:
                    loss_test[i_rec], a = _measure(kind, ft, target_test)
                    if acc_test is not None:
                        acc_test[i_rec] = a
            if tracker is not None:
                with clock.paused():
                    kchange[i_rec] = tracker.change(s)
            i_rec += 1
            if callback is not None:
                with clock.paused():
                    callback(s, value)
        if s == steps:
            break
        if batch_list is None:
            r = _seed(kind, f, Y)
        else:
            fb, caches = forward(train_net, work, X[batch_list[s]], keep=True)
            r = _seed(kind, fb, Y[batch_list[s]])
            if not np.all(np.isfinite(r)):
                stop(s, "batch loss became non-finite")
                break
        opt.start_step(rates[s])
        # every signal is computed before any parameter moves (the leaves' steps come after the pass)
        for leaf, p, cache, g in backward(train_net, work, caches, r[:, None, :]):
            leaf.step(opt, index[id(p[0])], p, cache, g)
        s_done = s + 1
    if not diverged:
        clock.stop()

    result = TrainingResult(
        **recorded(i_rec, rec, fx_train, fx_test, loss_train, loss_test, kchange, track_kernel, k),
        net=train_net,
        params=work,
        learning_rate=first_rate,
        wall_time=clock.seconds,
        kernel_time=0.0 if tracker is None else tracker.seconds,
        critical_learning_rate=crit,
        diverged=diverged,
        message=message,
        n_steps_taken=s_done,
        accuracy_train=None if acc_train is None else acc_train[:i_rec],
        accuracy_test=None if acc_test is None else acc_test[:i_rec],
        loss=kind,
        dynamics=rule,
    )
    if diverged and on_divergence == "raise":
        raise TrainingDivergedError(message, result)
    return result


def _from_mlp_result(result: TrainingResult, net: Network) -> TrainingResult:
    """An MLP-shaped network's result, in the network's terms (its net and parameter list)."""
    result.net = net if result.net == net.as_mlp() else Network.from_mlp(result.net)
    result.params = Network.params_from_mlp(result.params)
    return result


_train_layers.from_mlp_result = _from_mlp_result

#: :func:`ntksolve.training.train_network`, also for a :class:`~ntksolve.nets.network.Network`.
train_network = accepts_network(_train_layers)(_train_mlp)


__all__ = ["train_network"]
