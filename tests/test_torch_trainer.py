"""ntksolve.torch.train_network_torch: ntksolve's trainer interface run in PyTorch.

References: a hand-written training loop in PyTorch on the network's own trained coordinates
``θ`` (its parameterisation's, not the exported module's), with ntksolve's loss and the update
rules written out from PyTorch's documentation -- independent of the per-tensor mapping under
test -- and ntksolve's numpy trainer.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra: pip install 'ntksolve[torch]'")
import torch.nn.functional as F  # noqa: E402

from ntksolve import MLP, empirical_ntk  # noqa: E402
from ntksolve.dynamics import Adam, GradientDescent, Schedule  # noqa: E402
from ntksolve.nets.forward_mode import trained_parameters  # noqa: E402
from ntksolve.torch import train_network_torch  # noqa: E402
from ntksolve.training import TrainingDivergedError, TrainingResult, train_network  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _problem(parameterization, k=2, N=8, bias_std=0.3, bias=True, seed=0):
    net = MLP(
        (9, 7), "tanh", weight_std=1.3, bias_std=bias_std, parameterization=parameterization, n_outputs=k, bias=bias
    )
    params = net.init(3, random_state=seed)
    rng = np.random.default_rng(seed + 1)
    X = rng.standard_normal((N, 3))
    return net, params, X, rng


def _reference(net, params, X, y, rule, loss, steps, batches=None):
    """Hand-written training of ``θ`` (the trained coordinates) in PyTorch; returns the outputs
    after every step (steps + 1, N, k) and the final stored parameters."""
    d = X.shape[1]
    scales = net.scales(d)
    theta = [torch.tensor(a, requires_grad=True) for pair in trained_parameters(net, params) for a in pair]
    Xt = torch.from_numpy(X)

    def f(th, x):
        h = x
        for l, s in enumerate(scales):
            W, b = th[2 * l], th[2 * l + 1]
            z = (s.weight / s.trained_weight) * h @ W.T
            if net.layers[l].bias:
                z = z + (s.bias / s.trained_bias) * b
            h = torch.tanh(z) if l < net.depth else z
        return h

    def objective(out, idx):
        if loss == "mse":
            return 0.5 * torch.mean((out - torch.from_numpy(y)[idx]) ** 2)
        if out.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(out, torch.from_numpy(y.astype(float))[idx, None])
        return F.cross_entropy(out, torch.from_numpy(y)[idx])

    rates = _rates(rule, steps)
    state = [dict(u=None, m=torch.zeros_like(p), v=torch.zeros_like(p)) for p in theta]
    outs = [f(theta, Xt).detach().numpy()]
    for s in range(steps):
        idx = torch.arange(X.shape[0]) if batches is None else torch.from_numpy(batches[s])
        grads = torch.autograd.grad(objective(f(theta, Xt[idx]), idx), theta, allow_unused=True, materialize_grads=True)
        eta = rates[s]
        with torch.no_grad():
            for p, g, st in zip(theta, grads, state):
                if isinstance(rule, GradientDescent):
                    dd = g + rule.weight_decay * p
                    if rule.momentum:
                        st["u"] = dd.clone() if st["u"] is None else rule.momentum * st["u"] + dd
                        dd = dd + rule.momentum * st["u"] if rule.nesterov else st["u"]
                    p -= eta * dd
                else:
                    b1, b2 = rule.betas
                    if rule.decoupled:
                        p *= 1 - eta * rule.weight_decay
                        dd = g
                    else:
                        dd = g + rule.weight_decay * p
                    st["m"] = b1 * st["m"] + (1 - b1) * dd
                    st["v"] = b2 * st["v"] + (1 - b2) * dd * dd
                    mhat, vhat = st["m"] / (1 - b1 ** (s + 1)), st["v"] / (1 - b2 ** (s + 1))
                    p -= eta * mhat / (vhat.sqrt() + rule.eps)
        outs.append(f(theta, Xt).detach().numpy())
    stored = []
    for l, s in enumerate(scales):
        W, b = theta[2 * l].detach().numpy(), theta[2 * l + 1].detach().numpy()
        stored.append((W / s.trained_weight, b / s.trained_bias))
    return np.array(outs), stored


def _rates(rule, steps):
    lr = rule.learning_rate
    return lr.rates(steps) if isinstance(lr, Schedule) else np.full(steps, float(lr))


RULES = {
    "plain": GradientDescent(0.7),
    "nesterov": GradientDescent(0.3, momentum=0.8, nesterov=True),
    "momentum+decay": GradientDescent(0.3, momentum=0.6, weight_decay=0.05),
    "schedule": GradientDescent(Schedule.warmup_cosine(0.8, 12, 3), momentum=0.5),
    "adam": Adam(0.02, weight_decay=0.01),
    "adamw": Adam(0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, decoupled=True),
}


LOSSES = [("mse", 2), ("cross_entropy", 3), ("cross_entropy", 1)]
#: every rule in both parameterisations, the losses taken in turn
CASES = [(par, rule) + LOSSES[(i + j) % 3] for i, par in enumerate(["ntk", "standard"]) for j, rule in enumerate(RULES)]


@pytest.mark.parametrize("parameterization, rule, loss, k", CASES)
def test_equals_hand_written_torch_loop(parameterization, rule, loss, k):
    rule = RULES[rule]
    net, params, X, rng = _problem(parameterization, k=k)
    y = rng.standard_normal((8, k)) if loss == "mse" else rng.integers(0, max(k, 2), 8)
    steps = 12
    res = train_network_torch(
        net, params, X, y, dynamics=rule, loss=loss, steps=steps, record_at=np.arange(steps + 1), track_kernel=False
    )
    outs, stored = _reference(net, params, X, y, rule, loss, steps)
    assert isinstance(res, TrainingResult)
    assert np.abs(outs[-1] - outs[0]).max() > 0.02  # it trained
    np.testing.assert_allclose(res.fx_train, outs, rtol=0, atol=1e-10)
    for (W, b), (V, c) in zip(res.params, stored):
        np.testing.assert_allclose(W, V, rtol=0, atol=1e-9)
        np.testing.assert_allclose(b, c, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.net.apply(res.params, X), res.fx_train[-1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("parameterization, rule", [("ntk", "nesterov"), ("standard", "adam")])
def test_minibatches_equal_hand_written_torch_loop(parameterization, rule):
    rule = RULES[rule]
    net, params, X, rng = _problem(parameterization, N=10)
    y = rng.standard_normal((10, 2))
    batches = [rng.choice(10, size=4, replace=False) for _ in range(9)]
    res = train_network_torch(
        net, params, X, y, dynamics=rule, steps=9, batches=batches, record_at=np.arange(10), track_kernel=False
    )
    outs, _ = _reference(net, params, X, y, rule, "mse", 9, batches)
    assert np.abs(outs[-1] - outs[0]).max() > 0.02
    np.testing.assert_allclose(res.fx_train, outs, rtol=0, atol=1e-10)


@pytest.mark.parametrize("rule", ["momentum+decay", "adam", "adamw"])
def test_ntk_parameterisation_without_bias_scale_and_without_biases(rule):
    # bias_std = 0 in NTK parameterisation: the biases do not enter the function (p = 0 b), but
    # weight decay moves the stored b; a network without biases has none to move.
    rule = RULES[rule]
    for kw in (dict(bias_std=0.0), dict(bias=(False, True, False))):
        net, params, X, rng = _problem("ntk", **kw)
        y = rng.standard_normal((8, 2))
        res = train_network_torch(net, params, X, y, dynamics=rule, steps=10, track_kernel=False)
        outs, stored = _reference(net, params, X, y, rule, "mse", 10)
        np.testing.assert_allclose(res.fx_train[-1], outs[-1], rtol=0, atol=1e-10)
        for (W, b), (V, c) in zip(res.params, stored):
            assert b.shape == c.shape
            np.testing.assert_allclose(W, V, rtol=0, atol=1e-9)
            np.testing.assert_allclose(b, c, rtol=0, atol=1e-9)
        if kw.get("bias_std") == 0.0 and rule.weight_decay:
            assert np.abs(res.params[0][1] - params[0][1]).max() > 1e-3  # the decay moved them


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_records_in_ntksolves_units_equal_the_numpy_trainer(parameterization):
    # Plain full-batch descent: the numpy trainer records the same losses (ours, not MSELoss's),
    # the kernel change of the network's own NTK and the critical rate 2Nk/lambda_max.
    net, params, X, rng = _problem(parameterization)
    y = rng.standard_normal((8, 2))
    Xs = rng.standard_normal((5, 3))
    ys = rng.standard_normal((5, 2))
    kw = dict(steps=15, record_at=[0, 1, 7, 15], X_test=Xs, y_test=ys)
    eta = 0.4 * float(
        2
        * 8
        * 2
        / np.linalg.eigvalsh(empirical_ntk(net, params, X, trace=False).transpose(0, 2, 1, 3).reshape(16, 16))[-1]
    )
    ref = train_network(net, params, X, y, learning_rate=eta, **kw)
    res = train_network_torch(net, params, X, y, learning_rate=eta, **kw)
    for name in ("fx_train", "fx_test", "loss_train", "loss_test", "kernel_change"):
        np.testing.assert_allclose(getattr(res, name), getattr(ref, name), rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(res.steps, ref.steps)
    assert res.kernel_kind == ref.kernel_kind == "full"
    np.testing.assert_allclose(res.critical_learning_rate, ref.critical_learning_rate, rtol=1e-10)
    assert res.learning_rate == eta and res.n_steps_taken == 15 and res.net == ref.net
    for (W, b), (V, c) in zip(res.params, ref.params):
        np.testing.assert_allclose(W, V, rtol=0, atol=1e-10)
        np.testing.assert_allclose(b, c, rtol=0, atol=1e-10)


FIELDS = ("fx_train", "fx_test", "loss_train", "loss_test", "accuracy_train", "accuracy_test", "kernel_change")


_LOSSES = [("mse", 2, False), ("mse", 2, True), ("cross_entropy", 3, True), ("cross_entropy", 1, False)]
NUMPY_CASES = (
    # every rule in both parameterisations, the losses (full batch, minibatches) taken in turn
    [
        (dict(bias_std=0.3), par, rule) + _LOSSES[(i + j) % 4]
        for i, par in enumerate(["ntk", "standard"])
        for j, rule in enumerate(RULES)
    ]
    # NTK parameterisation with sigma_b = 0 (biases outside the function), and layers without biases
    + [
        (net, par, rule, "mse", 2, True)
        for net in (dict(bias_std=0.0), dict(bias=(False, True, False)))
        for par in ("ntk", "standard")
        for rule in ("momentum+decay", "adamw")
    ]
)


@pytest.mark.parametrize("network, parameterization, rule, loss, k, batched", NUMPY_CASES)
def test_equals_the_numpy_trainer(network, parameterization, rule, loss, k, batched):
    # Two implementations of the same run: ntksolve's backpropagation and optimiser steps on the
    # stored parameters, and PyTorch's autograd and optimisers on the exported module's tensors.
    net, params, X, rng = _problem(parameterization, k=k, **network)
    draw = (lambda n: rng.standard_normal((n, k))) if loss == "mse" else (lambda n: rng.integers(0, max(k, 2), n))
    y, Xs, ys = draw(8), rng.standard_normal((4, 3)), draw(4)
    batches = [rng.choice(8, size=3, replace=False) for _ in range(12)] if batched else None
    kw = dict(dynamics=RULES[rule], loss=loss, steps=12, record_at=[0, 5, 12], batches=batches, X_test=Xs, y_test=ys)
    ref = train_network(net, params, X, y, **kw)
    res = train_network_torch(net, params, X, y, **kw)
    for name in FIELDS:
        a, b = getattr(res, name), getattr(ref, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-9, err_msg=name)
    assert res.accuracy_train is None if loss == "mse" else res.accuracy_train.shape == (3,)
    for (W, b), (V, c) in zip(res.params, ref.params):
        assert b.shape == c.shape
        np.testing.assert_allclose(W, V, rtol=0, atol=1e-9)
        np.testing.assert_allclose(b, c, rtol=0, atol=1e-9)
    assert res.net == ref.net and res.learning_rate == ref.learning_rate and res.kernel_kind == ref.kernel_kind
    assert (res.loss, res.dynamics, res.n_steps_taken) == (ref.loss, ref.dynamics, ref.n_steps_taken)
    if ref.critical_learning_rate is None:
        assert res.critical_learning_rate is None
    else:
        np.testing.assert_allclose(res.critical_learning_rate, ref.critical_learning_rate, rtol=1e-10)


def test_standard_parameterisation_with_zero_bias_std_trains_its_biases():
    # As train_network: bias_std = 0 cannot carry the trained b~, so training runs on net.trainable()
    net, params, X, rng = _problem("standard", bias_std=0.0)
    y = rng.standard_normal((8, 2))
    res = train_network_torch(net, params, X, y, learning_rate=0.3, steps=5, track_kernel=False)
    ref = train_network(net, params, X, y, learning_rate=0.3, steps=5, track_kernel=False)
    assert res.net == ref.net == net.trainable()
    np.testing.assert_allclose(res.fx_train, ref.fx_train, rtol=0, atol=1e-12)
    assert np.abs(res.params[0][1]).max() > 1e-4


def test_divergence_is_reported_in_ntksolves_units():
    net, params, X, rng = _problem("ntk")
    y = rng.standard_normal((8, 2))
    with pytest.raises(TrainingDivergedError, match=r"diverged at step \d+.*critical learning rate") as info:
        train_network_torch(net, params, X, y, learning_rate=50.0, steps=200, track_kernel=False)
    ref = train_network(net, params, X, y, learning_rate=1.0, steps=1)  # the critical rate, tracked
    res = info.value.result
    assert res.diverged and res.n_steps_taken < 200
    np.testing.assert_allclose(res.critical_learning_rate, ref.critical_learning_rate, rtol=1e-10)
    back = train_network_torch(
        net, params, X, y, learning_rate=50.0, steps=200, on_divergence="return", track_kernel=False
    )
    assert back.diverged and back.message == res.message


def test_bad_arguments_are_refused_before_training():
    net, params, X, rng = _problem("ntk")
    y = rng.standard_normal((8, 2))
    with pytest.raises(TypeError, match="needs a training rule"):
        train_network_torch(net, params, X, y, steps=1)
    with pytest.raises(TypeError, match="not both"):
        train_network_torch(net, params, X, y, steps=1, learning_rate=0.1, dynamics=GradientDescent(0.1))
    with pytest.raises(ValueError, match="unknown loss"):
        train_network_torch(net, params, X, y, steps=1, learning_rate=0.1, loss="hinge")
    with pytest.raises(ValueError, match="schedule has 3 rates but 5"):
        train_network_torch(net, params, X, y, steps=5, dynamics=GradientDescent(Schedule([0.1] * 3)))
    with pytest.raises(ValueError, match="batch 0 has an index outside"):
        train_network_torch(net, params, X, y, steps=1, learning_rate=0.1, batches=[np.array([8])])
    with pytest.raises(ValueError, match="class labels must be integers"):
        train_network_torch(net, params, X, np.full(8, 3), steps=1, learning_rate=0.1, loss="cross_entropy")


def test_a_network_is_refused_naming_the_way_out():
    from ntksolve.nets import Dense, Network

    mlp = MLP((4,))
    p = mlp.init(3, random_state=0)
    X = np.random.default_rng(0).standard_normal((5, 3))
    y = X[:, :1]
    with pytest.raises(TypeError, match="this Network is an MLP: pass net.as_mlp"):
        train_network_torch(Network.from_mlp(mlp), Network.params_from_mlp(p), X, y, steps=1, learning_rate=0.1)
    other = Network([Dense(4), "relu", Dense(4), "tanh", Dense(1)])
    with pytest.raises(TypeError, match="got Network; train a Network with ntksolve.train_network"):
        train_network_torch(other, other.init(3, random_state=0), X, y, steps=1, learning_rate=0.1)
