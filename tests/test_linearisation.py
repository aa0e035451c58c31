"""The linearisation check: the kernel where the linear prediction ends, against independent runs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ntksolve import MLP, Adam, GradientDescent, empirical_ntk, gradient_descent_mse, jacobian, train_network
from ntksolve.datasets import default_regression
from ntksolve.dynamics import critical_learning_rate
from ntksolve.linearisation import LinearisationWarning, linearisation_check


@pytest.fixture(scope="module")
def data():
    d = default_regression(n_train=64, n_test=8)
    return d.X_train, d.y_train


def _rate(net, params, X, fraction=0.5):
    return fraction * critical_learning_rate(empirical_ntk(net, params, X, trace=True))


def test_end_point_kernel_equals_an_explicit_jacobian_construction(data):
    X, y = data
    net = MLP((24, 24), "tanh", 1.3, 0.2, "ntk")
    params = net.init(X.shape[1], random_state=3)
    lr, steps = _rate(net, params, X), 40
    got = linearisation_check(net, params, X, y, steps=steps, learning_rate=lr, warn=False)
    # independently: the closed form's end point, θ_S = θ_0 + J⁺ (f_S − f_0) by an explicit
    # Jacobian and lstsq, then the kernel there
    J = jacobian(net, params, X).reshape(X.shape[0], -1)
    f0 = net.apply(params, X)
    fS = gradient_descent_mse(J @ J.T, y, lr, dynamics="discrete")(steps, f0)
    dtheta = np.linalg.lstsq(J, (fS - f0)[:, 0], rcond=None)[0]
    flat, i = [], 0
    for W, b in params:
        Wn = W + dtheta[i : i + W.size].reshape(W.shape)
        i += W.size
        bn = b + dtheta[i : i + b.size].reshape(b.shape)
        i += b.size
        flat.append((Wn, bn))
    K0, KS = empirical_ntk(net, params, X, trace=True), empirical_ntk(net, flat, X, trace=True)
    want = np.linalg.norm(KS - K0) / np.linalg.norm(K0)
    assert got.kernel_change == pytest.approx(want, rel=1e-7)
    assert got.parameter_distance == pytest.approx(np.linalg.norm(dtheta), rel=1e-7)
    assert got.holds == (want <= 0.05)


@pytest.mark.parametrize(
    "width,parameterization,steps,low,high",
    [
        (1024, "ntk", 30, 0.8, 1.5),  # short runs: the end point is where the real run goes
        (64, "ntk", 30, 0.8, 1.5),
        (1024, "ntk", 300, 0.3, 1.0),  # long runs: the real path wanders farther (measured 0.37-0.65)
        (16, "standard", 300, 0.3, 1.0),
    ],
)
def test_end_point_change_tracks_the_real_runs_kernel_change(data, width, parameterization, steps, low, high):
    X, y = data
    net = MLP((width,), "relu", 1.0, 0.1, parameterization)
    params = net.init(X.shape[1], random_state=0)
    lr = _rate(net, params, X)
    check = linearisation_check(net, params, X, y, steps=steps, learning_rate=lr, warn=False)
    real = train_network(net, params, X, y, learning_rate=lr, steps=steps, record_at=[0, steps])
    ratio = check.kernel_change / real.kernel_change[-1]
    assert low <= ratio <= high, (check.kernel_change, real.kernel_change[-1])


def test_warns_with_the_number_for_a_narrow_network_and_not_for_a_wide_one(data):
    X, y = data
    narrow = MLP((16,), "relu", 1.0, 0.1, "standard")
    p = narrow.init(X.shape[1], random_state=0)
    with pytest.warns(LinearisationWarning, match=r"differs from the one at initialisation by \d+\.\d%"):
        c = linearisation_check(narrow, p, X, y, steps=300, learning_rate=_rate(narrow, p, X))
    assert not c.holds and c.kernel_change > 0.1
    wide = MLP((2048,), "relu", 1.0, 0.1, "ntk")
    q = wide.init(X.shape[1], random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinearisationWarning)
        c = linearisation_check(wide, q, X, y, steps=30, learning_rate=_rate(wide, q, X))
    assert c.holds and c.kernel_change < 0.05


def test_momentum_minibatches_and_cross_entropy_run(data):
    from ntksolve.dynamics import shuffled_batches

    X, y = data
    net = MLP((256,), "relu", 1.0, 0.1, "ntk", 3)
    p = net.init(X.shape[1], random_state=1)
    labels = np.argsort(X[:, :3], axis=1)[:, 0]
    lr = 0.2 * critical_learning_rate(empirical_ntk(net, p, X, trace=False), n_outputs=3)
    batches = shuffled_batches(X.shape[0], 16, 60, random_state=0)
    run = dict(steps=60, dynamics=GradientDescent(lr, momentum=0.5), loss="cross_entropy", batches=batches)
    c = linearisation_check(net, p, X, labels, warn=False, **run)
    real = train_network(net, p, X, labels, record_at=[0, 60], **run)
    assert 0.3 <= c.kernel_change / real.kernel_change[-1] <= 1.5


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        (dict(dynamics=Adam(1e-3)), ValueError, "no function-space"),
        (dict(), TypeError, "needs a training rule"),
        (dict(learning_rate=0.1, steps=0), ValueError, "steps must be a positive int"),
        (dict(learning_rate=0.1, threshold=0.0), ValueError, "threshold"),
        (dict(learning_rate=0.1, loss="hinge"), ValueError, "loss must be"),
    ],
)
def test_bad_input(data, kw, exc, match):
    X, y = data
    net = MLP((8,))
    p = net.init(X.shape[1], random_state=0)
    kw = {"steps": 10, **kw}
    with pytest.raises(exc, match=match):
        linearisation_check(net, p, X, y, **kw)
