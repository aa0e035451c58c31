"""train_network runs the rules the predictors describe, for real: PyTorch's own optimisers
(SGD with momentum, Nesterov, weight decay, schedules and batches; Adam and AdamW) on the same
network, losses and batch order give the same outputs; a minibatch step equals the explicit-Jacobian
step; ``learning_rate=eta`` is ``GradientDescent(eta)`` bit for bit; bad input is refused up front."""

import numpy as np
import pytest
from scipy.special import softmax

from ntksolve import MLP, empirical_ntk, jacobian
from ntksolve.dynamics import Adam, GradientDescent, GradientFlow, Schedule, shuffled_batches
from ntksolve.training import TrainingDivergedError, train_network

TORCH_SKIP = "needs the torch extra: pip install 'ntksolve[torch]'"


def _data(N=12, d=3, k=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d)), rng.standard_normal((N, k))


def _labels(N, k, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, max(k, 2), size=N)


def _trained_flat(net, params):
    """Parameters in the trained parameterisation, flattened in the Jacobian's order."""
    if net.parameterization == "ntk":
        return net.flatten_params(params)
    scales = net.layer_scales(params[0][0].shape[1])
    return net.flatten_params([(ws * W, bs * b) for (W, b), (ws, bs) in zip(params, scales)])


# --------------------------------------------------------------------------------------------
# against PyTorch's optimisers
# --------------------------------------------------------------------------------------------
def _torch_module(torch, net, params, d):
    """A module whose parameters ARE ntksolve's trained ones: ``to_torch`` (the folded ``W~, b~``)
    in standard parameterisation; for NTK parameterisation an explicit module that multiplies the
    stored ``W, b`` by the layer scales in its forward pass."""
    if net.parameterization == "standard":
        from ntksolve.torch import to_torch

        return to_torch(net, params)
    act = {"tanh": torch.tanh, "relu": torch.relu}[net.activation]
    scales = net.layer_scales(d)

    class NTKNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(W)) for W, _ in params])
            self.b = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(b)) for _, b in params])

        def forward(self, x):
            h = x
            for l, ((ws, bs), W, b) in enumerate(zip(scales, self.W, self.b)):
                z = ws * (h @ W.T) + bs * b
                h = z if l == len(scales) - 1 else act(z)
            return h

    return NTKNet()


RULES = {  # name -> (ntksolve rule, torch optimiser factory, torch scheduler factory, uses batches)
    "sgd_momentum_wd_step_batches": (
        lambda: GradientDescent(Schedule.step(0.05, 5, 0.5), momentum=0.9, weight_decay=1e-2),
        lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
        lambda t, o, steps: t.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5),
        True,
    ),
    "nesterov_wd_cosine": (
        lambda: GradientDescent(Schedule.cosine(0.05, 15), momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda t, o, steps: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=15),
        False,
    ),
    "adam_wd_batches": (
        lambda: Adam(0.02, weight_decay=1e-2),
        lambda t, p: t.optim.Adam(p, lr=0.02, weight_decay=1e-2),
        None,
        True,
    ),
    "adamw": (
        lambda: Adam(0.02, betas=(0.8, 0.99), weight_decay=1e-2, decoupled=True),
        lambda t, p: t.optim.AdamW(p, lr=0.02, betas=(0.8, 0.99), weight_decay=1e-2),
        None,
        False,
    ),
}


@pytest.mark.parametrize("rule_name", list(RULES))
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize(
    "parameterization, bias_std, hidden, activation",
    [
        ("ntk", 0.3, (16, 12), "tanh"),
        ("standard", 0.0, (20,), "relu"),  # bias_std = 0: the trained bias b~ starts at 0 and trains
    ],
)
@pytest.mark.parametrize("k", [1, 3])
def test_equals_pytorch_optimiser(rule_name, loss, parameterization, bias_std, hidden, activation, k):
    torch = pytest.importorskip("torch", reason=TORCH_SKIP)
    make_rule, make_opt, make_sched, use_batches = RULES[rule_name]
    N, d, steps, rec = 10, 3, 15, [0, 1, 7, 15]
    net = MLP(
        hidden, activation=activation, weight_std=1.2, bias_std=bias_std, parameterization=parameterization, n_outputs=k
    )
    params = net.init(d, random_state=3)
    X, y = _data(N=N, d=d, k=k)
    Xs, _ = _data(N=4, d=d, seed=5)
    if loss == "cross_entropy":
        y = _labels(N, k)
    batches = shuffled_batches(N, 4, steps, random_state=2) if use_batches else None
    res = train_network(
        net,
        params,
        X,
        y,
        steps=steps,
        dynamics=make_rule(),
        loss=loss,
        batches=batches,
        record_at=rec,
        X_test=Xs,
        track_kernel=False,
    )

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _torch_module(torch, net, params, d).to(torch.float64)
        opt = make_opt(torch, model.parameters())
        sched = make_sched(torch, opt, steps) if make_sched else None
        if loss == "mse":
            criterion = lambda f, t: torch.nn.MSELoss()(f, t) / 2  # noqa: E731 - ours is half of MSELoss
            target = torch.tensor(y)
        elif k == 1:
            criterion, target = torch.nn.BCEWithLogitsLoss(), torch.tensor(y, dtype=torch.float64)[:, None]
        else:
            criterion, target = torch.nn.CrossEntropyLoss(), torch.tensor(y)
        Xt, Xst = torch.tensor(X), torch.tensor(Xs)
        out, out_test = [], []
        for s in range(steps + 1):
            if s in rec:
                with torch.no_grad():
                    out.append(model(Xt).numpy().copy())
                    out_test.append(model(Xst).numpy().copy())
            if s == steps:
                break
            idx = slice(None) if batches is None else torch.from_numpy(batches[s])
            opt.zero_grad()
            criterion(model(Xt[idx]), target[idx]).backward()
            opt.step()
            if sched is not None:
                sched.step()
    finally:
        torch.set_num_threads(n_threads)
    out, out_test = np.array(out), np.array(out_test)
    assert np.abs(out[-1] - out[0]).max() > 1e-2  # it trained
    scale = np.abs(out).max()
    assert np.abs(res.fx_train - out).max() <= 1e-10 * scale
    assert np.abs(res.fx_test - out_test).max() <= 1e-10 * np.abs(out_test).max()
    np.testing.assert_allclose(res.net.apply(res.params, X), out[-1], rtol=0, atol=1e-10 * scale)
    assert res.dynamics == make_rule() and res.loss == loss
    assert (res.accuracy_train is None) == (loss == "mse")


# --------------------------------------------------------------------------------------------
# independent of PyTorch
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("loss, k", [("mse", 2), ("cross_entropy", 3), ("cross_entropy", 1)])
def test_first_minibatch_step_equals_explicit_jacobian_step(parameterization, loss, k):
    # Delta theta~ = -eta J_b^T e_b with e_b = (f_b - y_b)/(|b| k) (MSE) or (sigma(f_b) - Y_b)/|b|.
    net = MLP((9, 7), activation="erf", bias_std=0.5, parameterization=parameterization, n_outputs=k)
    X, y = _data(N=11, d=4, k=k)
    if loss == "cross_entropy":
        y = _labels(11, k)
    params = net.init(4, random_state=0)
    b = np.array([7, 2, 9, 0])
    eta = 0.7
    res = train_network(net, params, X, y, learning_rate=eta, loss=loss, steps=1, batches=[b], track_kernel=False)
    f = net.apply(params, X[b])
    if loss == "mse":
        e = (f - y[b]) / (b.size * k)
    elif k == 1:
        e = (1.0 / (1.0 + np.exp(-f)) - y[b][:, None]) / b.size
    else:
        e = (softmax(f, axis=1) - np.eye(k)[y[b]]) / b.size
    J = jacobian(net, params, X[b]).reshape(b.size * k, -1)
    theta1 = _trained_flat(net, params) - eta * J.T @ e.ravel()
    np.testing.assert_allclose(_trained_flat(res.net, res.params), theta1, rtol=1e-12, atol=1e-13)
    assert np.abs(theta1 - _trained_flat(net, params)).max() > 1e-3
    # records are on the whole training set
    np.testing.assert_allclose(res.fx_train[1], res.net.apply(res.params, X), rtol=1e-12, atol=1e-13)


def test_cross_entropy_records_loss_and_accuracy():
    net = MLP((8,), n_outputs=3)
    X, _ = _data(N=9)
    y = _labels(9, 3)
    onehot = np.eye(3)[y]
    res = train_network(
        net,
        net.init(3, random_state=0),
        X,
        onehot,
        learning_rate=0.5,
        steps=4,
        loss="cross_entropy",
        X_test=X[:5],
        y_test=y[:5],
        track_kernel=False,
    )
    f = res.fx_train
    per_example = np.log(np.exp(f).sum(axis=2)) - np.take_along_axis(f, y[None, :, None], axis=2)[..., 0]
    np.testing.assert_allclose(res.loss_train, per_example.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(res.loss_test, per_example[:, :5].mean(axis=1), rtol=1e-12)  # X_test = X[:5]
    np.testing.assert_allclose(res.accuracy_train, np.mean(f.argmax(axis=2) == y, axis=1))
    np.testing.assert_allclose(res.accuracy_test, np.mean(f[:, :5].argmax(axis=2) == y[:5], axis=1))
    assert res.critical_learning_rate is None and res.loss == "cross_entropy"


def test_learning_rate_is_gradient_descent_bit_for_bit():
    net = MLP((10, 6), activation="tanh", bias_std=0.2, parameterization="standard", n_outputs=2)
    X, y = _data(N=8, k=2)
    params = net.init(3, random_state=4)
    kw = dict(steps=9, record_at=[0, 3, 9], X_test=X[:3], y_test=y[:3])
    a = train_network(net, params, X, y, learning_rate=0.4, **kw)
    b = train_network(net, params, X, y, dynamics=GradientDescent(0.4), **kw)
    for name in ("fx_train", "fx_test", "loss_train", "loss_test", "kernel_change"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for (W, bb), (W2, bb2) in zip(a.params, b.params):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(bb, bb2)
    assert a.critical_learning_rate == b.critical_learning_rate and a.learning_rate == 0.4
    assert a.dynamics == GradientDescent(0.4) and a.loss == "mse" and a.accuracy_train is None


def test_momentum_divergence_names_its_own_critical_rate():
    # Heavy ball's critical rate 2 (1 + mu) Nk / lambda_max (docs/training-rules.md), lambda_max by eigh.
    net = MLP((32,), activation="relu", bias_std=0.1)
    X, y = _data(N=8)
    params = net.init(3, random_state=0)
    lmax = np.linalg.eigvalsh(empirical_ntk(net, params, X))[-1]
    crit = 2 * 1.9 * 8 / lmax
    rule = GradientDescent(3 * crit, momentum=0.9)
    with pytest.raises(TrainingDivergedError, match="heavy-ball momentum") as info:
        train_network(net, params, X, y, dynamics=rule, steps=3000, track_kernel=False)
    assert f"{crit:.4g}" in str(info.value)
    assert info.value.result.critical_learning_rate == pytest.approx(crit, rel=1e-8)
    ok = train_network(net, params, X, y, dynamics=GradientDescent(0.5 * crit, momentum=0.9), steps=300)
    assert not ok.diverged and ok.loss_train[-1] < ok.loss_train[0]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(), TypeError, "learning_rate=eta .* or dynamics="),
        (dict(learning_rate=0.1, dynamics=GradientDescent(0.1)), TypeError, "not both"),
        (dict(dynamics=GradientFlow(0.1)), TypeError, "discrete steps"),
        (dict(dynamics="adam"), TypeError, "GradientDescent"),
        (dict(learning_rate=GradientDescent(0.1)), TypeError, "as dynamics="),
        (dict(learning_rate=0.1, loss="hinge"), ValueError, "unknown loss"),
        (dict(dynamics=GradientDescent(Schedule(np.full(5, 0.1)))), ValueError, "5 rates but 10 steps"),
        (dict(learning_rate=0.1, batches=[np.array([0, 6])] * 10), ValueError, r"outside \[0, 6\)"),
        (dict(learning_rate=0.1, batches=[np.array([0, 1])] * 9), ValueError, "fewer than steps"),
        (dict(learning_rate=0.1, loss="cross_entropy", y=np.linspace(0, 1, 6)), ValueError, "0/1 labels"),
        (
            dict(learning_rate=0.1, loss="cross_entropy", net=MLP((5,), n_outputs=3), y=np.full(6, 3)),
            ValueError,
            r"integers in \[0, 3\)",
        ),
        (
            dict(learning_rate=0.1, loss="cross_entropy", net=MLP((5,), n_outputs=2), y=np.ones((6, 2))),
            ValueError,
            "single 1 per row",
        ),
        (
            dict(learning_rate=0.1, loss="cross_entropy", X_test=np.ones((2, 4)), y_test=np.array([0, 2])),
            ValueError,
            "y_test",
        ),
    ],
)
def test_bad_input_is_refused_before_training(kwargs, error, match):
    calls = []
    args = dict(
        net=MLP((5,)),
        X=_data(N=6, d=4)[0],
        y=np.array([0, 1, 1, 0, 1, 0]),
        steps=10,
        callback=lambda s, v: calls.append(s),
    )
    args.update(kwargs)
    net = args.pop("net")
    with pytest.raises(error, match=match):
        train_network(net, net.init(4, random_state=0), **args)
    assert calls == []  # no step was recorded, hence none taken


@pytest.mark.parametrize(
    "rule",
    [
        GradientDescent(0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
        Adam(1e-2, weight_decay=1e-2, decoupled=True),
    ],
)
def test_float32_follows_float64(rule):
    net = MLP((16,), n_outputs=3, bias_std=0.2, parameterization="standard")
    X, _ = _data(N=10)
    y = _labels(10, 3)
    batches = shuffled_batches(10, 4, 20, random_state=0)
    runs = [
        train_network(
            net,
            net.init(3, random_state=0, dtype=dt),
            X,
            y,
            dynamics=rule,
            loss="cross_entropy",
            steps=20,
            batches=batches,
            track_kernel=False,
        )
        for dt in (np.float64, np.float32)
    ]
    assert runs[1].fx_train.dtype == np.float32 and runs[1].params[0][0].dtype == np.float32
    assert np.abs(runs[0].fx_train[-1] - runs[0].fx_train[0]).max() > 0.1
    np.testing.assert_allclose(runs[1].fx_train, runs[0].fx_train, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(dynamics=Adam(100.0)), dict(learning_rate=1e6, loss="cross_entropy")])
def test_adam_and_cross_entropy_divergence_suggest_a_smaller_rate(kwargs):
    # One step of Adam moves every parameter by about its rate (100 here), so the outputs grow
    # by orders of magnitude beyond the factor 1e6 on the loss; likewise the huge CE step.
    net = MLP((16,))
    X, y = _data(N=8)
    y = (y[:, 0] > 0).astype(int) if kwargs.get("loss") else y
    res = train_network(net, net.init(3, random_state=0), X, y, steps=50, on_divergence="return", **kwargs)
    assert res.diverged and res.n_steps_taken == 1 and res.steps.tolist() == [0]
    assert res.message.endswith("use a smaller learning rate") and res.critical_learning_rate is None
