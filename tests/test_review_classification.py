"""Classification and the other libraries' units: inputs that map onto no rule of ntksolve's are
refused instead of given a rate, and a classifier's options leave what they do not concern alone.
Each refusal is pinned by the other library's own gradient (PyTorch's autograd, scikit-learn's
fitted output layer)."""

from __future__ import annotations

import numpy as np
import pytest

from ntksolve.sklearn import NTKClassifier

RNG = np.random.default_rng(20261202)


def test_learning_rate_from_torch_refuses_losses_that_are_not_the_rule_of_their_outputs():
    torch = pytest.importorskip("torch")
    from ntksolve.torch import learning_rate_from_torch

    N, k = 6, 3
    f = RNG.standard_normal((N, k))
    y = (RNG.random((N, k)) > 0.5).astype(np.float64)
    # BCEWithLogitsLoss on k outputs: k independent logistic losses over N k entries, gradient
    # (sigmoid(f) - y)/(N k), not the rule's softmax (p - Y)/N: no rate maps it
    ft = torch.tensor(f, requires_grad=True)
    torch.nn.BCEWithLogitsLoss()(ft, torch.tensor(y)).backward()
    np.testing.assert_allclose(ft.grad.numpy(), (1 / (1 + np.exp(-f)) - y) / (N * k), rtol=1e-12)
    with pytest.raises(ValueError, match="cross-entropy of one output; got k = 3"):
        learning_rate_from_torch(0.1, loss=torch.nn.BCEWithLogitsLoss(), n_samples=N, n_outputs=k)
    # CrossEntropyLoss on one output: the softmax of one logit is 1, the gradient 0 (not BCE's)
    ft = torch.tensor(f[:, :1], requires_grad=True)
    torch.nn.CrossEntropyLoss()(ft, torch.zeros(N, dtype=torch.long)).backward()
    assert np.all(ft.grad.numpy() == 0)
    with pytest.raises(ValueError, match="CrossEntropyLoss needs k >= 2 outputs"):
        learning_rate_from_torch(0.1, loss=torch.nn.CrossEntropyLoss(), n_samples=N, n_outputs=1)
    # ignore_index among the classes: the mean runs over the other examples only, (p - Y)/N_kept
    labels = np.array([0, 1, 2, 0, 1, 1])
    ft = torch.tensor(f, requires_grad=True)
    torch.nn.CrossEntropyLoss(ignore_index=0)(ft, torch.tensor(labels)).backward()
    p = np.exp(f) / np.exp(f).sum(axis=1, keepdims=True)
    kept = labels != 0
    expected = np.where(kept[:, None], (p - np.eye(k)[labels]) / kept.sum(), 0.0)
    np.testing.assert_allclose(ft.grad.numpy(), expected, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="ignore_index=0"):
        learning_rate_from_torch(0.1, loss=torch.nn.CrossEntropyLoss(ignore_index=0), n_samples=N, n_outputs=k)
    # the losses of the rule still map: one logistic output, and a softmax over two
    assert (
        learning_rate_from_torch(0.1, loss=torch.nn.CrossEntropyLoss(ignore_index=k), n_samples=N, n_outputs=k) == 0.1
    )
    assert learning_rate_from_torch(0.1, loss=torch.nn.BCEWithLogitsLoss(), n_samples=N, n_outputs=1) == 0.1
    assert learning_rate_from_torch(0.1, loss=torch.nn.CrossEntropyLoss(), n_samples=N, n_outputs=2) == 0.1


def test_learning_rate_from_sklearn_refuses_a_multilabel_classifier():
    from sklearn.neural_network import MLPClassifier

    from ntksolve.sklearn.mlp_import import learning_rate_from_sklearn

    X = RNG.standard_normal((20, 3))
    Y = (RNG.random((20, 3)) > 0.5).astype(int)
    with pytest.warns(Warning):  # two iterations do not converge
        est = MLPClassifier(solver="sgd", learning_rate_init=0.1, max_iter=2, random_state=0).fit(X, Y)
    # scikit-learn's own output layer: independent logistic outputs, not a softmax
    assert est.out_activation_ == "logistic" and est.n_outputs_ == 3
    with pytest.raises(ValueError, match="multi-label"):
        learning_rate_from_sklearn(est)
    with pytest.warns(Warning):
        single = MLPClassifier(solver="sgd", learning_rate_init=0.1, max_iter=2, random_state=0).fit(X, Y[:, 0])
    assert learning_rate_from_sklearn(single) == 0.1  # one logistic output for two classes: the rule


@pytest.mark.parametrize("make", [np.random.RandomState, np.random.default_rng])
def test_batch_size_leaves_the_network_of_a_random_state_unchanged(make):
    X = RNG.standard_normal((12, 3))
    y = np.arange(12) % 3
    kw = dict(kernel="empirical", loss="log_loss", dynamics="discrete", learning_rate=1.0, time=2)
    kw.update(hidden_layer_sizes=(8,))
    clf = NTKClassifier(**kw, random_state=make(5), batch_size=4).fit(X, y)
    # the network random_state draws first, as without minibatches
    expected = clf._network(3).init(3, make(5))
    for (W, b), (W0, b0) in zip(clf.params_, expected):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_the_cross_entropy_step_at_zero_logits_has_the_documented_curvature(k):
    # one training point, kernel λ: the step is f -> f - η λ (σ(f) - y), whose derivative at f = 0
    # is 1 - η λ σ'(0) = 1 - η λ/4 for one logistic output, and 1 - η λ/k on the softmax's
    # non-constant directions (curvature (I - 11ᵀ/k)/k); training-rules.md "Learning rate"
    from ntksolve import GradientDescent
    from ntksolve.dynamics.function_space import sgd_cross_entropy

    lam, eta, h = 1.7, 0.3, 1e-6
    rule = GradientDescent(eta)

    def step(f):
        return sgd_cross_entropy([[lam]], [0], f[None, :], [1], dynamics=rule).train[-1][0]

    jac = np.column_stack([(step(h * e) - step(-h * e)) / (2 * h) for e in np.eye(k)])
    if k == 1:
        np.testing.assert_allclose(jac, [[1 - eta * lam / 4]], rtol=1e-9)
    else:
        np.testing.assert_allclose(jac, np.eye(k) - eta * lam * (np.eye(k) - 1 / k) / k, rtol=0, atol=1e-9)
