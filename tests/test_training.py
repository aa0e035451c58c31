"""train_network: one step equals the explicit-Jacobian step; tiny rates follow the linearised flow;
divergence is stopped and reported; inputs are validated and never modified."""

import numpy as np
import pytest
import scipy.linalg

import ntksolve
from ntksolve import MLP, jacobian, empirical_ntk
from ntksolve.training import TrainingDivergedError, train_network

from reference import PHI


def _data(N=6, d=4, k=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d)), rng.standard_normal((N, k))


def _trained_flat(net, params):
    """Parameters in the trained parameterisation, flattened in the Jacobian's order."""
    if net.parameterization == "ntk":
        return net.flatten_params(params)
    scales = net.layer_scales(params[0][0].shape[1])
    return net.flatten_params([(ws * W, bs * b) for (W, b), (ws, bs) in zip(params, scales)])


def _loss_of_trained(net, theta, X, y):
    """The conventions' loss as a function of the trained parameters, written out directly:
    ``z = (sigma_w/sqrt(n)) W h + sigma_b b`` (NTK) or ``z = W~ h + b~`` (standard)."""
    h, pos = X, 0
    widths = net.widths(X.shape[1])
    for l in range(1, len(widths)):
        n_out, n_in = widths[l], widths[l - 1]
        W = theta[pos : pos + n_out * n_in].reshape(n_out, n_in)
        b = theta[pos + n_out * n_in : pos + n_out * (n_in + 1)]
        pos += n_out * (n_in + 1)
        if net.parameterization == "ntk":
            z = net.weight_std / np.sqrt(n_in) * h @ W.T + net.bias_std * b
        else:
            z = h @ W.T + b
        h = z if l == len(widths) - 1 else PHI[net.activation](z)
    return 0.5 * np.mean((h - y) ** 2)


def _fd_gradient(net, theta, X, y, eps=1e-6):
    """Central differences of :func:`_loss_of_trained`, (P,)."""
    grad = np.empty_like(theta)
    for p in range(theta.size):
        up, down = theta.copy(), theta.copy()
        up[p] += eps
        down[p] -= eps
        grad[p] = (_loss_of_trained(net, up, X, y) - _loss_of_trained(net, down, X, y)) / (2 * eps)
    return grad


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("bias_std", [0.0, 0.4])
@pytest.mark.parametrize("k", [1, 3])
def test_one_step_equals_explicit_jacobian_step(parameterization, bias_std, k):
    # Independent references: Delta theta = -eta J^T r / (Nk) in the trained parameterisation,
    # then the outputs of the network with the moved parameters; and, independent of the backward
    # pass altogether, -eta times the loss gradient by central differences.
    net = MLP(
        (7, 5), activation="erf", weight_std=1.3, bias_std=bias_std, parameterization=parameterization, n_outputs=k
    )
    X, y = _data(k=k)
    params = net.init(4, random_state=1)
    eta = 0.3
    res = train_network(net, params, X, y, learning_rate=eta, steps=1, record_at=[0, 1], track_kernel=False)
    J = jacobian(net, params, X).reshape(X.shape[0] * k, -1)
    r = (net.apply(params, X) - y).ravel() / (X.shape[0] * k)
    theta0 = _trained_flat(net, params)
    theta1 = theta0 - eta * J.T @ r
    # evaluate the moved network through its own (trained-parameterisation) flat vector
    moved = _trained_flat(res.net, res.params)
    np.testing.assert_allclose(moved, theta1, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(res.fx_train[1], res.net.apply(res.params, X), rtol=1e-12, atol=1e-13)
    grad = _fd_gradient(net, theta0, X, y)
    np.testing.assert_allclose(J.T @ r, grad, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(moved - theta0, -eta * grad, rtol=1e-6, atol=1e-10)
    assert np.abs(moved - theta0).max() > 1e-3  # it did move


def test_params_not_modified_and_result_evaluates():
    net = MLP((9,), bias_std=0.2)
    X, y = _data()
    params = net.init(4, random_state=0)
    before = [(W.copy(), b.copy()) for W, b in params]
    res = train_network(net, params, X, y, learning_rate=0.5, steps=5, record_at=[0, 2, 5], X_test=X[:3], y_test=y[:3])
    for (W, b), (W0, b0) in zip(params, before):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    assert res.fx_train.shape == (3, 6, 1) and res.fx_test.shape == (3, 3, 1)
    np.testing.assert_allclose(res.fx_train[-1], net.apply(res.params, X), rtol=1e-12)
    np.testing.assert_allclose(res.fx_test[:, :, 0], res.fx_train[:, :3, 0], rtol=1e-12)
    np.testing.assert_allclose(res.loss_train, 0.5 * np.mean((res.fx_train - y) ** 2, axis=(1, 2)), rtol=1e-12)
    assert res.kernel_change[0] == 0 and res.kernel_kind == "traced"


@pytest.mark.parametrize("k", [1, 2])
def test_tiny_rate_follows_linearised_gradient_flow(k):
    # Gradient flow of f_lin: f_t = y + expm(-eta t Theta/(Nk)) (f_0 - y), Theta = J J^T (full kernel).
    # Real GD differs from it by the discretisation, at most t a^2 / 2 = 3.2e-3 relative for the top
    # mode (a = eta lambda_max/(Nk) = 4e-3, t = 400), and by the linearisation error, O(1/width).
    # The discrete twin (I - eta Theta/(Nk))^t removes the first: only the second is left (about
    # 4e-3 relative here; tests/test_compare.py checks that it falls with width).
    net = MLP((256,), activation="erf", bias_std=0.2, n_outputs=k)
    X, y = _data(N=8, d=3, k=k)
    params = net.init(3, random_state=3)
    theta = empirical_ntk(net, params, X, trace=False).transpose(0, 2, 1, 3).reshape(8 * k, 8 * k)
    eta = 2e-3 * 2 * 8 * k / np.linalg.eigvalsh(theta)[-1]
    res = train_network(net, params, X, y, learning_rate=eta, steps=400, record_at=[0, 200, 400], track_kernel=False)
    f0, yv = res.fx_train[0].ravel(), y.ravel()
    B = np.eye(8 * k) - eta * theta / (8 * k)
    for i, t in enumerate([0, 200, 400]):
        flow = yv + scipy.linalg.expm(-eta * t * theta / (8 * k)) @ (f0 - yv)
        twin = yv + np.linalg.matrix_power(B, t) @ (f0 - yv)
        change = np.linalg.norm(flow - f0) if t else 1.0
        assert np.linalg.norm(res.fx_train[i].ravel() - flow) <= 1e-2 * change
        assert np.linalg.norm(res.fx_train[i].ravel() - twin) <= 6e-3 * change  # measured 3.9e-3 (k=2)
    assert np.linalg.norm(res.fx_train[-1] - res.fx_train[0]) > 0.1  # it did move


def test_float32_matches_float64():
    net = MLP((32,), activation="relu", bias_std=0.1)
    X, y = _data()
    p64 = net.init(4, random_state=0)
    p32 = [(W.astype(np.float32), b.astype(np.float32)) for W, b in p64]
    r64 = train_network(net, p64, X, y, learning_rate=1.0, steps=20, track_kernel=False)
    r32 = train_network(net, p32, X, y, learning_rate=1.0, steps=20, track_kernel=False)
    assert r32.fx_train.dtype == np.float32
    np.testing.assert_allclose(r32.fx_train, r64.fx_train, rtol=1e-4, atol=1e-5)


def test_divergence_is_stopped_with_the_critical_rate():
    net = MLP((64,), activation="relu", bias_std=0.1)
    X, y = _data(N=10)
    params = net.init(4, random_state=0)
    crit = float(ntksolve.dynamics.critical_learning_rate(empirical_ntk(net, params, X)))
    with pytest.raises(TrainingDivergedError, match="critical learning rate") as info:
        train_network(net, params, X, y, learning_rate=5 * crit, steps=2000, record_at=[0, 1, 2000])
    res = info.value.result
    assert res.diverged and np.all(np.isfinite(res.loss_train))
    assert res.critical_learning_rate == pytest.approx(crit, rel=1e-8)
    assert res.steps.tolist() == [0, 1]  # only the records before it diverged
    ret = train_network(
        net, params, X, y, learning_rate=5 * crit, steps=2000, on_divergence="return", track_kernel=False
    )
    assert ret.diverged and f"{crit:.4g}" in ret.message
    # just below the critical rate it converges
    ok = train_network(net, params, X, y, learning_rate=0.9 * crit, steps=200, track_kernel=False)
    assert not ok.diverged and ok.loss_train[-1] < ok.loss_train[0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(record_at=[0, 11]), "within"),
        (dict(record_at=[3, 1]), "increasing"),
        (dict(record_at=[0.5]), "integer"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(learning_rate=np.nan), "learning_rate"),
        (dict(steps=-1), "steps"),
        (dict(y=np.ones((6, 2))), "shape"),
        (dict(y=np.array([np.nan] * 6)), "NaN"),
        (dict(X=np.full((6, 4), np.nan)), "NaN"),
        (dict(X=np.ones((6, 5))), "features"),
        (dict(y_test=np.ones(3)), "X_test"),
    ],
)
def test_bad_inputs(kwargs, match):
    net = MLP((5,))
    X, y = _data()
    args = dict(X=X, y=y, learning_rate=0.1, steps=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train_network(net, net.init(4, random_state=0), **args)


@pytest.mark.parametrize(
    "activation",
    ["leaky_relu(0.2)", "abs", "abrelu(-0.3, 1.5)", "sin", "cos", "gaussian", "monomial(2)", "monomial(3)"],
)
def test_new_activations_first_step_is_the_gradient_and_the_loss_falls(activation):
    # the step against central differences of the loss written out with numpy's activation
    # (tests/reference.py); then half the critical rate for 50 steps must lower the loss
    net = MLP((7, 5), activation=activation, weight_std=0.7 if "monomial" in activation else 1.1, bias_std=0.3)
    X, y = _data()
    params = net.init(4, random_state=1)
    theta0 = _trained_flat(net, params)
    crit = float(ntksolve.dynamics.critical_learning_rate(empirical_ntk(net, params, X)))
    eta = 0.2 * crit
    res = train_network(net, params, X, y, learning_rate=eta, steps=1, track_kernel=False)
    grad = _fd_gradient(net, theta0, X, y)
    np.testing.assert_allclose(_trained_flat(res.net, res.params) - theta0, -eta * grad, rtol=1e-6, atol=1e-10)
    assert np.abs(grad).max() > 1e-3  # a real step
    run = train_network(net, params, X, y, learning_rate=0.5 * crit, steps=50, track_kernel=False)
    assert run.loss_train[-1] < 0.8 * run.loss_train[0], run.loss_train
