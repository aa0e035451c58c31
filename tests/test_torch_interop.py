"""ntksolve.torch against PyTorch itself: the imported network's NTK equals torch.func's over the
module's own parameters; round trips reproduce outputs; the closed-form linearised prediction equals
PyTorch training a torch.func-linearised copy; train() equals independent references (ntksolve's
own gradient descent, hand-written update rules, closed-form first steps); bad input is refused."""

import functools
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra: pip install 'ntksolve[torch]'")
from torch import nn  # noqa: E402
from torch.func import functional_call, jacrev, jvp, vmap  # noqa: E402

import ntksolve  # noqa: E402
from ntksolve import MLP, empirical_ntk, gradient_descent_mse, jacobian  # noqa: E402
from ntksolve.torch import (  # noqa: E402
    DataLoaderBatches,
    Erf,
    from_torch,
    learning_rate_from_torch,
    to_torch,
    train,
)
from ntksolve.training import TrainingDivergedError, TrainingResult, train_network  # noqa: E402

# torch.func.jvp scripts a helper on first use, which PyTorch itself now flags as deprecated
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]

F64 = torch.float64


ACTIVATIONS = {  # ntksolve name -> module factory (None: no module between the Linears)
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "erf": Erf,
    "identity": None,
    "leaky_relu": nn.LeakyReLU,
    "leaky_relu(0.2)": functools.partial(nn.LeakyReLU, 0.2),
}


def _sequential(widths, act, k, d=3, seed=0, dtype=F64, bias=True):
    """Linear, act, ..., Linear with PyTorch's own initialisation; ``bias`` one flag or one per Linear."""
    torch.manual_seed(seed)
    flags = [bias] * (len(widths) + 1) if isinstance(bias, bool) else list(bias)
    mods, n = [], d
    for w, has in zip(widths, flags):
        mods.append(nn.Linear(n, w, bias=has))
        if act is not None:
            mods.append(act())
        n = w
    mods.append(nn.Linear(n, k, bias=flags[-1]))
    return nn.Sequential(*mods).to(dtype)


def _data(N=5, d=3, k=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d)), rng.standard_normal((N, k))


def _torch_func_ntk(model, X1, X2=None):
    """Full NTK (N1, N2, k, k): per-example Jacobians over the module's parameters (torch.func),
    contracted and summed over parameters."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def f(p, x):
        return functional_call(model, p, (x[None],))[0]

    def jac(X):
        return vmap(jacrev(f), (None, 0))(params, torch.from_numpy(X))

    J1 = jac(X1)
    J2 = J1 if X2 is None else jac(X2)
    return sum(torch.einsum("iaP,jbP->ijab", J1[n].flatten(2), J2[n].flatten(2)) for n in params).numpy()


def _outputs(model, X):
    with torch.no_grad():
        return model(torch.from_numpy(X)).numpy()


def _flat_torch(model):
    """The module's parameters in the Jacobian's order (weight row-major, then bias, per layer)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()


# --------------------------------------------------------------------------------------------
# the NTK and the function
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_ntk_equals_torch_func(activation, depth, k):
    model = _sequential((7, 6, 5, 4)[:depth], ACTIVATIONS[activation], k, seed=depth)
    net, params = from_torch(model)
    assert net.activation == activation and net.depth == depth and net.n_outputs == k
    assert net.parameterization == "standard"
    X, _ = _data(N=5)
    ref = _torch_func_ntk(model, X)
    full = empirical_ntk(net, params, X, trace=False)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(full, ref, rtol=0, atol=1e-10 * scale)
    traced = empirical_ntk(net, params, X)
    np.testing.assert_allclose(traced, np.einsum("ijaa->ij", ref) / k, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(net.apply(params, X), _outputs(model, X), rtol=0, atol=1e-13)


#: Linears without biases: none at all, and mixed (first, last, or alternate layers without one)
BIAS_PATTERNS = {
    1: [False, (False, True), (True, False)],
    2: [False, (True, False, True), (False, True, False)],
    3: [False, (False, False, True, True), (True, True, True, False)],
}


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("depth, bias", [(d, b) for d, bs in BIAS_PATTERNS.items() for b in bs])
def test_bias_free_ntk_equals_torch_func(depth, bias, k):
    # torch.func differentiates over the module's own parameters, which has no bias tensor where
    # bias=False: the imported network must have none either (no zero bias that trains).
    model = _sequential((7, 6, 5)[:depth], nn.Tanh, k, seed=depth, bias=bias)
    net, params = from_torch(model)
    flags = [bias] * (depth + 1) if isinstance(bias, bool) else list(bias)
    assert [layer.bias for layer in net.layers] == flags
    assert net.n_params(3) == sum(p.numel() for p in model.parameters())
    assert all(b.shape == ((W.shape[0],) if has else (0,)) for (W, b), has in zip(params, flags))
    X, _ = _data(N=5)
    ref = _torch_func_ntk(model, X)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(empirical_ntk(net, params, X, trace=False), ref, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(
        empirical_ntk(net, params, X), np.einsum("ijaa->ij", ref) / k, rtol=0, atol=1e-10 * scale
    )
    np.testing.assert_allclose(net.apply(params, X), _outputs(model, X), rtol=0, atol=1e-13)
    # the Jacobian's columns are the module's parameters, in its own order
    Jt = torch.func.jacrev(lambda p: functional_call(model, p, (torch.from_numpy(X),)))(
        {n: p.detach() for n, p in model.named_parameters()}
    )
    Jt = torch.cat([Jt[n].flatten(2) for n, _ in model.named_parameters()], dim=2).numpy()
    np.testing.assert_allclose(jacobian(net, params, X), Jt, rtol=0, atol=1e-12 * np.abs(Jt).max())
    # and back: Linear(bias=False) where the network has no bias, the same module to rounding
    back = to_torch(net, params)
    assert [lin.bias is None for lin in back if isinstance(lin, nn.Linear)] == [not f for f in flags]
    for a, b in zip(back.parameters(), model.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(_outputs(back, X), _outputs(model, X), rtol=0, atol=1e-12)


def test_cross_kernel_equals_torch_func():
    model = _sequential((9, 8), nn.Tanh, 2)
    net, params = from_torch(model)
    X1, _ = _data(N=4, seed=1)
    X2, _ = _data(N=6, seed=2)
    ref = _torch_func_ntk(model, X1, X2)
    np.testing.assert_allclose(
        empirical_ntk(net, params, X1, X2, trace=False), ref, rtol=0, atol=1e-10 * np.abs(ref).max()
    )


def test_nested_sequential_and_noops_are_read():
    torch.manual_seed(0)
    flat = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    nested = nn.Sequential(
        nn.Sequential(flat[0], nn.ReLU()),
        nn.Identity(),
        nn.Sequential(nn.Sequential(flat[2]), nn.Dropout(0.0), nn.ReLU()),
        nn.Dropout(0.5).eval(),
        flat[4],
    )
    net, params = from_torch(nested)
    X, _ = _data()
    assert net.hidden_layer_sizes == (6, 5) and net.activation == "relu"
    np.testing.assert_allclose(net.apply(params, X), _outputs(flat, X), rtol=0, atol=1e-13)
    ref = _torch_func_ntk(flat, X)
    np.testing.assert_allclose(empirical_ntk(net, params, X, trace=False), ref, rtol=0, atol=1e-10 * ref.max())


def test_identity_module_and_no_activation_are_the_same_network():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(3, 4), nn.Identity(), nn.Linear(4, 1)).double()
    b = nn.Sequential(a[0], a[2])
    (na, pa), (nb, pb) = from_torch(a), from_torch(b)
    assert na == nb and na.activation == "identity"
    for (W1, b1), (W2, b2) in zip(pa, pb):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)


def test_single_linear_is_a_linear_model():
    torch.manual_seed(0)
    lin = nn.Linear(4, 2).double()
    net, params = from_torch(lin)
    X, _ = _data(d=4)
    assert net.depth == 0
    np.testing.assert_allclose(net.apply(params, X), _outputs(lin, X), rtol=0, atol=1e-14)
    # NTK of a linear model: <x, x'> + 1 on the diagonal of the outputs
    np.testing.assert_allclose(empirical_ntk(net, params, X), X @ X.T + 1, rtol=1e-13)


def test_import_copies_and_stored_parameters_are_the_rescale():
    model = _sequential((5,), nn.Tanh, 1)
    net, params = from_torch(model)
    w0 = model[0].weight.detach().numpy().copy()
    np.testing.assert_allclose(params[0][0], w0 * np.sqrt(3), rtol=1e-15)
    np.testing.assert_array_equal(params[0][1], model[0].bias.detach().numpy())
    with torch.no_grad():
        model[0].weight.add_(1.0)  # the import holds its own arrays
    np.testing.assert_allclose(params[0][0], w0 * np.sqrt(3), rtol=1e-15)
    assert all(W.flags.c_contiguous and b.flags.c_contiguous for W, b in params)


def test_float32_is_kept():
    model = _sequential((6,), nn.Tanh, 2, dtype=torch.float32)
    net, params = from_torch(model)
    assert params[0][0].dtype == np.float32
    X, _ = _data()
    np.testing.assert_allclose(
        net.apply(params, X.astype(np.float32)), _outputs(model, X.astype(np.float32)), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_round_trip_reproduces_the_module(activation):
    model = _sequential((6, 5), ACTIVATIONS[activation], 2, seed=3)
    back = to_torch(*from_torch(model))
    X, _ = _data(N=7)
    np.testing.assert_allclose(_outputs(back, X), _outputs(model, X), rtol=0, atol=1e-12)
    np.testing.assert_allclose(_torch_func_ntk(back, X), _torch_func_ntk(model, X), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize(
    "activation", ["erf", "relu", "softplus", "identity", "leaky_relu(0.2)", "abs", "abrelu(-0.5, 1.0)"]
)
def test_to_torch_computes_any_network(parameterization, activation):
    net = MLP(
        (6, 4), activation=activation, weight_std=1.7, bias_std=0.4, parameterization=parameterization, n_outputs=3
    )
    params = net.init(3, random_state=0)
    module = to_torch(net, params)
    X, _ = _data(N=6)
    np.testing.assert_allclose(_outputs(module, X), net.apply(params, X), rtol=0, atol=1e-12)
    # PyTorch trains weight and bias: the module's NTK is net's standard-parameterisation NTK
    cfg = net.get_config()
    cfg["parameterization"] = "standard"
    std = MLP(**cfg)
    ref = _torch_func_ntk(module, X)
    np.testing.assert_allclose(empirical_ntk(std, params, X, trace=False), ref, rtol=0, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("activation", ["sin", "gaussian", "monomial(2)", "abrelu(-0.5, 2.0)"])
def test_to_torch_refuses_activations_without_a_module(activation):
    net = MLP((4,), activation)
    with pytest.raises(ValueError, match=re.escape(f"activation '{activation}' has no PyTorch module")):
        to_torch(net, net.init(3, random_state=0))


def test_to_torch_does_not_draw_from_torch_rng():
    net = MLP((8,), n_outputs=2)
    params = net.init(3, random_state=0)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    to_torch(net, params)
    assert torch.equal(torch.get_rng_state(), state)


def test_softplus_threshold_is_the_only_difference():
    # PyTorch's Softplus returns z above its threshold; ntksolve's log(1 + e^z) differs there by
    # log1p(e^-z). to_torch writes threshold 40 in float64, where the difference is invisible.
    torch.manual_seed(0)
    lin = nn.Linear(1, 1).double()
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(0.0)
    model = nn.Sequential(lin, nn.Softplus(), nn.Linear(1, 1).double())
    with torch.no_grad():
        model[2].weight.fill_(1.0)
        model[2].bias.fill_(0.0)
    net, params = from_torch(model)
    z = np.array([[-3.0], [5.0], [19.0], [20.5], [22.0]])
    diff = net.apply(params, z)[:, 0] - _outputs(model, z)[:, 0]
    np.testing.assert_allclose(diff[:3], 0, atol=1e-13)
    np.testing.assert_allclose(diff[3:], np.log1p(np.exp(-z[3:, 0])), rtol=0, atol=2e-14)
    assert diff[3] > 1e-9
    back = to_torch(net, params)
    assert back[1].threshold == 40.0
    np.testing.assert_allclose(_outputs(back, z * 2), net.apply(params, z * 2), rtol=0, atol=1e-13)


# --------------------------------------------------------------------------------------------
# the linearised prediction equals PyTorch training the linearised module
# --------------------------------------------------------------------------------------------
def _train_linearised(model, X, y, make_optimizer, loss, steps):
    """PyTorch training of f_lin(theta) = f_0 + J_0 (theta - theta_0) (a torch.func jvp), full
    batch; outputs on X after each of 0 ... steps steps."""
    p0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def f(p):
        return functional_call(model, p, (Xt,))

    f0 = f(p0).detach()
    theta = {n: nn.Parameter(v.clone()) for n, v in p0.items()}
    opt = make_optimizer(list(theta.values()))

    def f_lin():
        _, jv = jvp(f, (p0,), ({n: theta[n] - p0[n] for n in p0},))
        return f0 + jv

    out = [f0.numpy().copy()]
    for _ in range(steps):
        opt.zero_grad()
        loss(f_lin(), yt).backward()
        opt.step()
        with torch.no_grad():
            out.append(f_lin().numpy().copy())
    return np.array(out)


def _sgd_closed_form(theta, f0, y, torch_lr, loss, steps):
    N, k = y.shape
    rate = learning_rate_from_torch(torch_lr, loss=loss, n_samples=N, n_outputs=k)
    return gradient_descent_mse(theta, y, learning_rate=rate, dynamics="discrete")(np.arange(steps + 1), f0)


# Each rule: (name, PyTorch optimiser factory given the rate, ntksolve's prediction). The momentum,
# schedule, minibatch and cross-entropy twins join this table when ntksolve has them.
RULES = [
    ("sgd", lambda lr: functools.partial(torch.optim.SGD, lr=lr), _sgd_closed_form),
]


@pytest.mark.parametrize("rule", RULES, ids=[r[0] for r in RULES])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("k", [1, 3])
def test_linearised_prediction_equals_torch_training_of_linearised_module(rule, reduction, k):
    _, make, predict = rule
    model = _sequential((16, 12), nn.Tanh, k, seed=k)
    X, y = _data(N=8, k=k, seed=1)
    net, params = from_torch(model)
    theta = empirical_ntk(net, params, X, trace=False)
    f0 = net.apply(params, X)
    loss = nn.MSELoss(reduction=reduction)
    rate_per_torch = learning_rate_from_torch(1.0, loss=loss, n_samples=8, n_outputs=k)
    crit = ntksolve.critical_learning_rate(theta) / rate_per_torch  # in PyTorch's units
    steps = 25
    lr = 0.6 * crit
    ref = _train_linearised(model, X, y, make(lr), loss, steps)
    pred = predict(theta, f0, y, lr, loss, steps)
    assert np.abs(ref[-1] - ref[0]).max() > 0.1  # it trained
    np.testing.assert_allclose(pred, ref, rtol=0, atol=1e-8)


# --------------------------------------------------------------------------------------------
# train(): real training in PyTorch
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_train_full_batch_sgd_equals_train_network(k):
    # Two implementations of real gradient descent: PyTorch's autograd + SGD, and ntksolve's
    # backpropagation on the imported network at the mapped rate.
    model = _sequential((10, 8), nn.Tanh, k, seed=2)
    X, y = _data(N=6, k=k)
    Xs, _ = _data(N=4, seed=9)
    lr, steps, rec = 0.3, 12, [0, 1, 5, 12]
    before = _flat_torch(model).copy()
    res = train(model, X, y, optimizer=functools.partial(torch.optim.SGD, lr=lr), steps=steps, record_at=rec, X_test=Xs)
    net, params = from_torch(model)
    rate = learning_rate_from_torch(lr, loss=nn.MSELoss(), n_samples=6, n_outputs=k)
    ref = train_network(net, params, X, y, learning_rate=rate, steps=steps, record_at=rec, X_test=Xs, track_kernel=True)
    assert isinstance(res, TrainingResult)
    np.testing.assert_array_equal(res.steps, rec)
    assert res.fx_train.shape == (4, 6, k) and res.fx_test.shape == (4, 4, k)
    np.testing.assert_allclose(res.fx_train, ref.fx_train, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.fx_test, ref.fx_test, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.loss_train, 2 * ref.loss_train, rtol=1e-12)  # MSELoss is 2x ours
    np.testing.assert_allclose(res.kernel_change, ref.kernel_change, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(res.critical_learning_rate * rate / lr, ref.critical_learning_rate, rtol=1e-10)
    np.testing.assert_allclose(res.net.apply(res.params, X), res.fx_train[-1], rtol=0, atol=1e-13)
    assert res.n_steps_taken == steps and not res.diverged
    np.testing.assert_array_equal(res.learning_rates, np.full(steps, lr))
    np.testing.assert_array_equal(_flat_torch(model), before)  # the caller's module is untouched


@pytest.mark.parametrize("bias", [False, (False, True, False)])
def test_bias_free_train_network_equals_torch_sgd(bias):
    # ntksolve's gradient descent on the imported bias-free network against torch.optim.SGD on
    # the module itself: the same run, and no bias appears where the module has none.
    model = _sequential((9, 7), nn.Tanh, 2, seed=4, bias=bias)
    X, y = _data(N=6, k=2)
    lr, steps = 0.2, 10
    net, params = from_torch(model)
    ref = train_network(
        net,
        params,
        X,
        y,
        learning_rate=learning_rate_from_torch(lr, loss=nn.MSELoss(), n_samples=6, n_outputs=2),
        steps=steps,
        track_kernel=False,
    )
    m = functools.partial(torch.optim.SGD, lr=lr)
    res = train(model, X, y, optimizer=m, steps=steps, track_kernel=False)
    np.testing.assert_allclose(ref.fx_train, res.fx_train, rtol=0, atol=1e-12)
    assert np.abs(res.fx_train[-1] - res.fx_train[0]).max() > 0.05  # it trained
    for (W, b), (V, c) in zip(ref.params, from_torch(res.module)[1]):
        assert b.shape == c.shape
        np.testing.assert_allclose(W, V, rtol=0, atol=1e-12)
        np.testing.assert_allclose(b, c, rtol=0, atol=1e-12)


@pytest.mark.parametrize("nesterov", [False, True])
def test_train_momentum_weight_decay_schedule_minibatches_equal_hand_written_rule(nesterov):
    # Reference: PyTorch's documented SGD rule written out by hand (u = mu u + g + w p;
    # p -= eta_s (u or g + mu u)), gradients from autograd on the same batches.
    model = _sequential((7,), nn.Tanh, 2, seed=4)
    X, y = _data(N=10, k=2, seed=3)
    steps, mu, wd = 9, 0.8, 0.05
    rates = 0.2 * 0.9 ** np.arange(steps)
    rng = np.random.default_rng(0)
    batches = [rng.choice(10, size=4, replace=False) for _ in range(steps)]
    res = train(
        model,
        X,
        y,
        optimizer=functools.partial(torch.optim.SGD, lr=1.0, momentum=mu, nesterov=nesterov, weight_decay=wd),
        steps=steps,
        lr_schedule=rates,
        batches=batches,
        record_at=list(range(steps + 1)),
        track_kernel=False,
    )
    ref = _sequential((7,), nn.Tanh, 2, seed=4)
    ps = list(ref.parameters())
    u = [torch.zeros_like(p) for p in ps]
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    outs = [_outputs(ref, X)]
    for s in range(steps):
        idx = torch.from_numpy(batches[s])
        grads = torch.autograd.grad(nn.functional.mse_loss(ref(Xt[idx]), yt[idx]), ps)
        with torch.no_grad():
            for p, g, ui in zip(ps, grads, u):
                g = g + wd * p
                ui.mul_(mu).add_(g)
                p.sub_(rates[s] * (g + mu * ui if nesterov else ui))
        outs.append(_outputs(ref, X))
    np.testing.assert_allclose(res.fx_train, np.array(outs), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(res.learning_rates, rates)
    assert len(res.batches) == steps and all(np.array_equal(a, b) for a, b in zip(res.batches, batches))


def test_train_torch_scheduler_equals_its_rate_array():
    model = _sequential((5,), nn.ReLU, 1, seed=1)
    X, y = _data(N=6)
    sgd = functools.partial(torch.optim.SGD, lr=0.4, momentum=0.5)
    a = train(
        model,
        X,
        y,
        optimizer=sgd,
        steps=8,
        track_kernel=False,
        lr_schedule=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    )
    expected = 0.4 * 0.5 ** (np.arange(8) // 3)
    np.testing.assert_allclose(a.learning_rates, expected, rtol=1e-15)
    b = train(model, X, y, optimizer=sgd, steps=8, track_kernel=False, lr_schedule=expected)
    np.testing.assert_allclose(a.fx_train, b.fx_train, rtol=0, atol=1e-14)


def test_dataloader_batches_are_a_dataloaders_order():
    N, B = 10, 4
    order = DataLoaderBatches(batch_size=B, seed=7)
    got = order.indices(N, 8)  # 3 batches per epoch (4, 4, 2): spans three epochs
    gen = torch.Generator()
    gen.manual_seed(7)
    ds = torch.utils.data.TensorDataset(torch.arange(N), torch.zeros(N, 2))
    loader = torch.utils.data.DataLoader(ds, batch_size=B, shuffle=True, generator=gen)
    ref = [idx.numpy() for _ in range(3) for idx, _ in loader][:8]
    assert [len(g) for g in got] == [4, 4, 2] * 2 + [4, 4]
    assert all(np.array_equal(g, r) for g, r in zip(got, ref))
    model = _sequential((5,), nn.Tanh, 1)
    X, y = _data(N=N)
    res = train(
        model, X, y, optimizer=functools.partial(torch.optim.SGD, lr=0.1), steps=8, batches=order, track_kernel=False
    )
    assert all(np.array_equal(g, r) for g, r in zip(res.batches, ref))
    dropped = DataLoaderBatches(batch_size=B, seed=7, drop_last=True).indices(N, 4)
    assert [len(g) for g in dropped] == [4, 4, 4, 4]


def _one_sgd_step(model, X, y, loss, eta):
    """``train`` for one step of ``torch.optim.SGD`` at ``lr=eta``."""
    sgd = functools.partial(torch.optim.SGD, lr=eta)
    return train(model, X, y, loss=loss, optimizer=sgd, steps=1, track_kernel=False)


@pytest.mark.parametrize("soft", [False, True], ids=["labels", "probability rows"])
def test_train_cross_entropy_first_step_is_the_explicit_jacobian_step(soft):
    # theta_1 = theta_0 - eta J^T (softmax(f_0) - Y) / N, J from ntksolve's explicit Jacobian, for
    # class labels (Y one-hot) and for rows that are distributions (soft targets)
    model = _sequential((6,), nn.Tanh, 3, seed=5)
    X, _ = _data(N=7)
    labels = np.array([0, 2, 1, 1, 0, 2, 2])
    Y = np.random.default_rng(3).dirichlet(np.ones(3), size=7) if soft else np.eye(3)[labels]
    eta = 0.7
    res = _one_sgd_step(model, X, Y if soft else labels, nn.CrossEntropyLoss(), eta)
    net, params = from_torch(model)
    f0 = net.apply(params, X)
    p = np.exp(f0 - f0.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    J = jacobian(net, params, X)  # (N, k, P) over (weight, bias), PyTorch's order
    theta1 = _flat_torch(model) - eta * np.einsum("iaP,ia->P", J, (p - Y) / 7)
    np.testing.assert_allclose(_flat_torch(res.module), theta1, rtol=0, atol=1e-14)
    ce = -np.mean(np.sum(Y * np.log(p), axis=1))
    np.testing.assert_allclose(res.loss_train[0], ce, rtol=1e-13)
    assert res.critical_learning_rate is None


def test_train_cross_entropy_refuses_rows_that_are_not_distributions():
    # PyTorch's gradient is softmax(f_0) sum(Y) - Y there, not the rule's; rows normalised in
    # float32 are still distributions
    model = _sequential((6,), nn.Tanh, 3, seed=5)
    X, _ = _data(N=7)
    Y = np.random.default_rng(3).dirichlet(np.ones(3), size=7)
    _one_sgd_step(model, X, Y.astype(np.float32).astype(np.float64), nn.CrossEntropyLoss(), 0.7)
    for bad in (2 * Y, np.tile([1.5, -0.5, 0.0], (7, 1))):  # rows summing to 2; a negative entry
        with pytest.raises(ValueError, match="entries >= 0 and rows summing to 1"):
            _one_sgd_step(model, X, bad, nn.CrossEntropyLoss(), 0.7)


def test_train_binary_cross_entropy_first_step_is_the_explicit_jacobian_step():
    # one output, BCEWithLogitsLoss: theta_1 = theta_0 - eta J^T (sigmoid(f_0) - y) / N
    model = _sequential((6,), nn.Tanh, 1, seed=6, bias=(False, True))
    X, _ = _data(N=7)
    y = np.array([0, 1, 1, 0, 1, 0, 0])
    eta = 0.7
    res = _one_sgd_step(model, X, y, nn.BCEWithLogitsLoss(), eta)
    net, params = from_torch(model)
    f0 = net.apply(params, X)[:, 0]
    G = (1 / (1 + np.exp(-f0)) - y)[:, None] / 7
    theta1 = _flat_torch(model) - eta * np.einsum("iaP,ia->P", jacobian(net, params, X), G)
    np.testing.assert_allclose(_flat_torch(res.module), theta1, rtol=0, atol=1e-14)
    np.testing.assert_allclose(res.loss_train[0], np.mean(np.logaddexp(0, f0) - y * f0), rtol=1e-13)
    assert learning_rate_from_torch(0.3, loss=nn.BCEWithLogitsLoss(), n_samples=7, n_outputs=1) == 0.3
    assert learning_rate_from_torch(
        0.3, loss=nn.BCEWithLogitsLoss(reduction="sum"), n_samples=7, n_outputs=1
    ) == pytest.approx(2.1)
    with pytest.raises(ValueError, match="pos_weight"):
        learning_rate_from_torch(0.3, loss=nn.BCEWithLogitsLoss(pos_weight=torch.ones(1)), n_samples=7, n_outputs=1)
    with pytest.raises(ValueError, match="BCEWithLogitsLoss here is the cross-entropy of one output"):
        train(
            _sequential((6,), nn.Tanh, 2),
            X,
            y,
            loss=nn.BCEWithLogitsLoss(),
            optimizer=functools.partial(torch.optim.SGD, lr=eta),
            steps=1,
        )
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        train(
            model, X, y + 1, loss=nn.BCEWithLogitsLoss(), optimizer=functools.partial(torch.optim.SGD, lr=eta), steps=1
        )


def test_train_adam_first_step_is_the_sign_step():
    # Adam's first step moves each parameter by -lr g / (|g| + eps) (bias-corrected moments g, g^2)
    model = _sequential((5,), nn.Sigmoid, 2, seed=6)
    X, y = _data(N=6, k=2)
    lr, eps = 0.01, 1e-8
    res = train(model, X, y, optimizer=functools.partial(torch.optim.Adam, lr=lr, eps=eps), steps=1, track_kernel=False)
    net, params = from_torch(model)
    r = 2 * (net.apply(params, X) - y) / y.size  # d MSELoss / d f
    g = np.einsum("iaP,ia->P", jacobian(net, params, X), r)
    np.testing.assert_allclose(
        _flat_torch(res.module), _flat_torch(model) - lr * g / (np.abs(g) + eps), rtol=0, atol=1e-12
    )


def test_train_divergence_is_reported_with_the_critical_rate():
    model = _sequential((8,), nn.Tanh, 1)
    X, y = _data(N=6)
    net, params = from_torch(model)
    crit_ours = ntksolve.critical_learning_rate(empirical_ntk(net, params, X))
    lr = 20 * crit_ours / 2  # 20x the critical rate, in PyTorch's units
    with pytest.raises(TrainingDivergedError, match="critical rate") as info:
        train(model, X, y, optimizer=functools.partial(torch.optim.SGD, lr=lr), steps=300, track_kernel=False)
    res = info.value.result
    assert res.diverged and res.n_steps_taken < 300
    np.testing.assert_allclose(res.critical_learning_rate, crit_ours / 2, rtol=1e-10)
    res2 = train(
        model,
        X,
        y,
        optimizer=functools.partial(torch.optim.SGD, lr=lr),
        steps=300,
        track_kernel=False,
        on_divergence="return",
    )
    assert res2.diverged and np.all(np.isfinite(res2.fx_train))


def test_learning_rate_from_torch_units():
    assert learning_rate_from_torch(0.1, loss=nn.MSELoss(), n_samples=10, n_outputs=3) == pytest.approx(0.2)
    assert learning_rate_from_torch(0.1, loss=nn.MSELoss(reduction="sum"), n_samples=10, n_outputs=3) == pytest.approx(
        6.0
    )
    assert learning_rate_from_torch(0.1, loss=nn.CrossEntropyLoss(), n_samples=10, n_outputs=3) == pytest.approx(0.1)
    assert learning_rate_from_torch(
        0.1, loss=nn.CrossEntropyLoss(reduction="sum"), n_samples=10, n_outputs=3
    ) == pytest.approx(1.0)
    np.testing.assert_allclose(
        learning_rate_from_torch([0.1, 0.2], loss=nn.MSELoss(), n_samples=4, n_outputs=1), [0.2, 0.4]
    )
    with pytest.raises(TypeError, match="MSELoss or torch.nn.CrossEntropyLoss"):
        learning_rate_from_torch(0.1, loss=nn.L1Loss(), n_samples=4, n_outputs=1)
    with pytest.raises(ValueError, match="reduction"):
        learning_rate_from_torch(0.1, loss=nn.MSELoss(reduction="none"), n_samples=4, n_outputs=1)
    with pytest.raises(ValueError, match="label smoothing"):
        learning_rate_from_torch(0.1, loss=nn.CrossEntropyLoss(label_smoothing=0.1), n_samples=4, n_outputs=2)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x):
        return self.lin(x) ** 2


class _Seq(nn.Sequential):
    def forward(self, x):
        return super().forward(x) * 2


def _lin(i, o, **kw):
    return nn.Linear(i, o, dtype=F64, **kw)


@pytest.mark.parametrize(
    "module, match",
    [
        (
            nn.Sequential(_lin(3, 4), nn.BatchNorm1d(4, dtype=F64), _lin(4, 1)),
            r"module\[1\] \(BatchNorm1d\) is not supported",
        ),
        (nn.Sequential(_lin(3, 4), nn.SiLU(), _lin(4, 1)), r"module\[1\] \(SiLU\) is not supported"),
        (
            nn.Sequential(_lin(3, 4), nn.ReLU(), nn.Sequential(_lin(4, 4), nn.ELU()), _lin(4, 1)),
            r"module\[2\]\[1\] \(ELU\) is not supported",
        ),
        (nn.Sequential(_lin(3, 4), nn.Dropout(0.5), _lin(4, 1)), r"module\[1\] \(Dropout\).*module.eval\(\)"),
        (nn.Sequential(_lin(3, 4), nn.ReLU(), _Custom()), r"module\[2\] \(_Custom\) is not supported"),
        (
            nn.Sequential(_lin(3, 4), nn.GELU(approximate="tanh"), _lin(4, 1)),
            r"module\[1\] \(GELU\).*approximate='tanh'",
        ),
        (nn.Sequential(_lin(3, 4), nn.Softplus(beta=2), _lin(4, 1)), r"module\[1\] \(Softplus\) has beta=2"),
        (nn.Sequential(_lin(3, 4), nn.Softplus(threshold=5), _lin(4, 1)), r"threshold=5"),
        (
            nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(4, 2), nn.Softmax(dim=1)),
            r"module\[3\] \(Softmax\) is not supported.*last layer must be nn.Linear",
        ),
        (nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(4, 1), nn.Sigmoid()), r"last layer must be nn.Linear"),
        (nn.Sequential(nn.Tanh(), _lin(3, 4), nn.ReLU(), _lin(4, 1)), r"module\[0\] \(Tanh\) comes before the first"),
        (
            nn.Sequential(_lin(3, 4), nn.ReLU(), nn.Tanh(), _lin(4, 1)),
            r"module\[1\] \(ReLU\) and module\[2\] \(Tanh\).*in a row",
        ),
        (
            nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(4, 4), nn.Tanh(), _lin(4, 1)),
            r"module\[3\] \(Tanh\) differs from the first hidden activation, module\[1\] \(ReLU\)",
        ),
        (nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(4, 4), _lin(4, 1)), r"no activation: identity\) differs"),
        (nn.Sequential(nn.ReLU(), nn.Identity()), r"no nn.Linear"),
        (
            nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(5, 1)),
            r"module\[2\] \(Linear\) has in_features=5.*module\[0\].*out_features=4",
        ),
        (nn.Sequential(_lin(3, 4), nn.ReLU(), _Seq(_lin(4, 1))), r"module\[2\] \(_Seq\) overrides Sequential.forward"),
        (
            nn.Sequential(nn.Linear(3, 4, dtype=torch.float16), nn.ReLU(), nn.Linear(4, 1, dtype=torch.float16)),
            r"module\[0\].weight is torch.float16.*float32 or float64",
        ),
        (
            nn.Sequential(nn.Linear(3, 4, dtype=torch.bfloat16), nn.ReLU(), nn.Linear(4, 1, dtype=torch.bfloat16)),
            r"torch.bfloat16",
        ),
        (
            nn.Sequential(_lin(3, 4), nn.ReLU(), nn.Linear(4, 1)),
            r"module\[2\].weight is torch.float32 but earlier.*float64",
        ),
        (nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 1)), r"module\[0\].*uninitialised parameters"),
    ],
)
def test_unsupported_modules_are_refused(module, match):
    with pytest.raises(ValueError, match=match):
        from_torch(module)


def test_hooks_parametrizations_and_frozen_parameters_are_refused():
    m = nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(4, 1))
    h = m[1].register_forward_hook(lambda mod, i, o: o * 2)
    with pytest.raises(ValueError, match=r"module\[1\] \(ReLU\) has forward hooks"):
        from_torch(m)
    h.remove()
    from_torch(m)
    torch.nn.utils.parametrize.register_parametrization(m[0], "weight", _Double())
    with pytest.raises(ValueError, match=r"module\[0\].*parametrizations"):
        from_torch(m)
    m2 = nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(4, 1))
    m2[0].weight.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad=False"):
        from_torch(m2)
    from_torch(m2.requires_grad_(False))  # all frozen (inference): the same network


class _Double(nn.Module):
    def forward(self, w):
        return 2 * w


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.ones((3, 3)), TypeError, "torch.nn.Module"),
        (_Custom(), TypeError, r"_Custom.*nn.Sequential"),
        (nn.Conv1d(1, 1, 3), TypeError, r"Conv1d.*nn.Sequential"),
    ],
)
def test_non_sequential_modules_are_type_errors(bad, exc, match):
    with pytest.raises(exc, match=match):
        from_torch(bad)


def test_feature_count_mismatch_is_clear():
    model = _sequential((5,), nn.Tanh, 1)  # 3 features
    net, params = from_torch(model)
    X, y = _data(d=4)
    with pytest.raises(ValueError, match="X1 has 4 features, but the network expects 3"):
        empirical_ntk(net, params, X)
    with pytest.raises(ValueError, match="X has 4 features, but the network expects 3"):
        train(model, X, y, optimizer=functools.partial(torch.optim.SGD, lr=0.1), steps=1)


def test_train_bad_arguments():
    model = _sequential((5,), nn.Tanh, 2)
    X, y = _data(k=2)
    sgd = functools.partial(torch.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="factory"):
        train(model, X, y, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), steps=1)
    with pytest.raises(TypeError, match="MSELoss or torch.nn.CrossEntropyLoss"):
        train(model, X, y, optimizer=sgd, steps=1, loss=nn.L1Loss())
    with pytest.raises(ValueError, match=r"shape \(5,\) or \(5, 2\)"):
        train(model, X, y[:, :1].repeat(3, axis=1), optimizer=sgd, steps=1)
    with pytest.raises(ValueError, match=r"class indices outside \[0, 2\)"):
        train(model, X, np.array([0, 1, 2, 0, 1]), optimizer=sgd, steps=1, loss=nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="fewer than steps=3"):
        train(model, X, y, optimizer=sgd, steps=3, batches=[[0, 1]])
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        train(model, X, y, optimizer=sgd, steps=1, batches=[[0, 7]])
    with pytest.raises(ValueError, match="at least steps=4 rates"):
        train(model, X, y, optimizer=sgd, steps=4, lr_schedule=[0.1, 0.1])
    with pytest.raises(ValueError, match="record_at"):
        train(model, X, y, optimizer=sgd, steps=2, record_at=[0, 3])
    with pytest.raises(ValueError, match="k >= 2"):
        train(
            _sequential((5,), nn.Tanh, 1), X, np.zeros(5, dtype=int), optimizer=sgd, steps=1, loss=nn.CrossEntropyLoss()
        )
    with pytest.raises(ValueError, match="y_test was given without X_test"):
        train(model, X, y, optimizer=sgd, steps=1, y_test=y)
