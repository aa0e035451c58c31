"""ntksolve.sklearn.trainer.train_network_sklearn: scikit-learn's MLP stepped by partial_fit.

Reference: ntksolve's numpy trainer, an independently written implementation of the same rule
(scikit-learn's forward pass, backpropagation and SGDOptimizer do every step under test).
"""

import numpy as np
import pytest

from ntksolve import MLP, train_network
from ntksolve.dynamics import Adam, GradientDescent, Schedule, shuffled_batches
from ntksolve.sklearn.trainer import train_network_sklearn

RULES = {
    "gd": GradientDescent(0.3),
    "momentum": GradientDescent(0.2, momentum=0.9),
    "nesterov": GradientDescent(0.2, momentum=0.8, nesterov=True),
}


def _problem(k, activation="tanh", bias_std=0.3, seed=0):
    net = MLP((9, 7), activation, weight_std=1.3, bias_std=bias_std, parameterization="standard", n_outputs=k)
    rng = np.random.default_rng(seed + 1)
    return net, net.init(3, random_state=seed), rng.standard_normal((20, 3)), rng.standard_normal((7, 3)), rng


def _same(a, b, tol=1e-9):
    np.testing.assert_allclose(b.fx_train, a.fx_train, rtol=0, atol=tol)
    np.testing.assert_allclose(b.fx_test, a.fx_test, rtol=0, atol=tol)
    np.testing.assert_allclose(b.loss_train, a.loss_train, rtol=tol, atol=0)
    np.testing.assert_allclose(b.kernel_change, a.kernel_change, rtol=0, atol=tol)
    for (Wa, ba), (Wb, bb) in zip(a.params, b.params):
        np.testing.assert_allclose(Wb, Wa, rtol=0, atol=tol)
        np.testing.assert_allclose(bb, ba, rtol=0, atol=tol)
    assert b.n_steps_taken == a.n_steps_taken and not b.diverged


@pytest.mark.parametrize("rule", list(RULES), ids=list(RULES))
@pytest.mark.parametrize("k, activation", [(1, "tanh"), (3, "relu"), (2, "sigmoid")])
@pytest.mark.parametrize("minibatch", [False, True], ids=["full", "minibatch"])
def test_mse_equals_train_network(rule, k, activation, minibatch):
    net, p, X, Xt, rng = _problem(k, activation)
    Y, Yt = rng.standard_normal((20, k)), rng.standard_normal((7, k))
    batches = shuffled_batches(20, 6, 30, random_state=0) if minibatch else None
    kw = dict(steps=30, dynamics=RULES[rule], batches=batches, record_at=[0, 1, 5, 30], X_test=Xt, y_test=Yt)
    a, b = train_network(net, p, X, Y, **kw), train_network_sklearn(net, p, X, Y, **kw)
    _same(a, b)
    assert b.critical_learning_rate == pytest.approx(a.critical_learning_rate, rel=1e-12)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("minibatch", [False, True], ids=["full", "minibatch"])
def test_cross_entropy_equals_train_network(k, minibatch):
    net, p, X, Xt, rng = _problem(k, bias_std=0.0)  # bias_std = 0: trained from b~ = 0
    hi = 2 if k == 1 else k
    lab, lab_t = rng.integers(0, hi, 20), rng.integers(0, hi, 7)
    if k == 1:
        lab, lab_t = lab[:, None], lab_t[:, None]
    batches = shuffled_batches(20, 6, 30, random_state=1) if minibatch else None
    kw = dict(
        steps=30,
        dynamics=RULES["momentum"],
        loss="cross_entropy",
        batches=batches,
        record_at=[0, 3, 30],
        X_test=Xt,
        y_test=lab_t,
    )
    a, b = train_network(net, p, X, lab, **kw), train_network_sklearn(net, p, X, lab, **kw)
    _same(a, b)
    np.testing.assert_array_equal(b.accuracy_test, a.accuracy_test)


def test_divergence_is_reported_like_train_network():
    net, p, X, Xt, rng = _problem(1)
    Y = rng.standard_normal((20, 1))
    a = train_network(net, p, X, Y, steps=200, learning_rate=50.0, on_divergence="return")
    b = train_network_sklearn(net, p, X, Y, steps=200, learning_rate=50.0, on_divergence="return")
    assert a.diverged and b.diverged
    assert "critical learning rate" in b.message and abs(a.n_steps_taken - b.n_steps_taken) <= 1


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: (MLP((5,), parameterization="ntk"), GradientDescent(0.1)),
            r"standard parameterisation only.*--parameterization standard",
        ),
        (lambda: (MLP((5,), parameterization="standard", bias=False), GradientDescent(0.1)), "bias=False"),
        (lambda: (MLP((5,), parameterization="standard"), GradientDescent(0.1, weight_decay=1e-4)), "alpha/\\(2N\\)"),
        (lambda: (MLP((5,), parameterization="standard"), GradientDescent(Schedule.step(0.1, 5, 0.5))), "schedule"),
        (lambda: (MLP((5,), parameterization="standard"), Adam(1e-3)), "bias correction"),
        (lambda: (MLP((5,), "gelu", parameterization="standard"), GradientDescent(0.1)), "no 'gelu' activation"),
    ],
)
def test_refusals(make, match):
    net, rule = make()
    p = net.init(3, random_state=0)
    X = np.zeros((4, 3))
    with pytest.raises(ValueError, match=match):
        train_network_sklearn(net, p, X, np.zeros(4), steps=1, dynamics=rule)


def test_two_class_softmax_is_refused():
    net = MLP((5,), parameterization="standard", n_outputs=2)
    with pytest.raises(ValueError, match="one logistic output"):
        train_network_sklearn(
            net,
            net.init(3, random_state=0),
            np.zeros((4, 3)),
            np.array([0, 1, 0, 1]),
            steps=1,
            learning_rate=0.1,
            loss="cross_entropy",
        )
