"""The documentation's claims, each held to an independent computation.

``docs/conventions.md``, ``docs/training-rules.md``, ``docs/interop.md``, ``docs/torch.md`` and
``docs/networks.md`` state the math, the normalisations and the other libraries' units in the
project's own words. Every test here takes one such claim as the page writes it and checks it
against a computation that does not go through the code under test: an explicit Jacobian written
out by hand, a closed form, a matrix exponential or power from scipy/numpy, PyTorch's autograd and
optimisers, scikit-learn's own steps, or ``inspect.signature`` for a stated default.
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest
import scipy.linalg

import ntksolve

RNG = np.random.default_rng(20261201)


def _data(n=6, d=3, k=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, k))


def _relu(z):
    return np.maximum(z, 0.0)


def _one_hidden_layer_by_hand(params, X, sw, sb, parameterization):
    """f, and its Jacobian in the conventions' column order, of a one-hidden-layer ReLU MLP.

    Written out from docs/conventions.md, "The network": ``z^1 = (σ_w/√n_0) W^1 x + σ_b b^1``,
    ``f = (σ_w/√n_1) W^2 φ(z^1) + σ_b b^2``; the parameters go layer by layer, ``W^l`` row-major
    then ``b^l``; in standard parameterisation the trained parameters are ``W̃ = (σ_w/√n) W`` and
    ``b̃ = σ_b b``, so the derivatives lose the scale factors.
    """
    (W1, b1), (W2, b2) = params
    n0, n1 = W1.shape[1], W1.shape[0]
    a1, a2 = sw / np.sqrt(n0), sw / np.sqrt(n1)
    z1 = a1 * X @ W1.T + sb * b1
    h1 = _relu(z1)
    f = a2 * h1 @ W2.T + sb * b2  # (N, k)
    k = W2.shape[0]
    N = X.shape[0]
    dphi = (z1 > 0).astype(float)
    # Derivatives in the stored (NTK) parameters; standard parameterisation divides each block by
    # its scale (the derivative with respect to W̃ = a W is the one with respect to W over a).
    scale = {"W1": a1, "b1": sb, "W2": a2, "b2": sb} if parameterization == "standard" else None
    J = np.zeros((N, k, W1.size + b1.size + W2.size + b2.size))
    for a in range(k):
        g1 = a2 * W2[a] * dphi  # ∂f_a/∂z^1, (N, n1)
        dW1 = a1 * g1[:, :, None] * X[:, None, :]  # (N, n1, n0), row-major
        db1 = sb * g1
        dW2 = np.zeros((N, k, n1))
        dW2[:, a, :] = a2 * h1
        db2 = np.zeros((N, k))
        db2[:, a] = sb
        blocks = [dW1.reshape(N, -1), db1, dW2.reshape(N, -1), db2]
        if scale is not None:
            blocks = [blk / s for blk, s in zip(blocks, [scale["W1"], scale["b1"], scale["W2"], scale["b2"]])]
        J[:, a, :] = np.concatenate(blocks, axis=1)
    return f, J


# -- The network (conventions.md) ---------------------------------------------------------------


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_the_network_and_its_jacobian_are_the_conventions_formulas(parameterization):
    X, _ = _data(n=5, d=3)
    net = ntksolve.MLP(
        (7,), activation="relu", weight_std=1.3, bias_std=0.4, n_outputs=2, parameterization=parameterization
    )
    params = net.init(n_features=3, random_state=1)
    f, J = _one_hidden_layer_by_hand(params, X, 1.3, 0.4, parameterization)
    # "computes the same function at initialisation" in both parameterisations, from the same params
    np.testing.assert_allclose(net.apply(params, X), f, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(ntksolve.jacobian(net, params, X).reshape(J.shape), J, rtol=1e-12, atol=1e-13)
    # Θ_ab(x, x') = Σ_p ∂f_a(x)/∂θ_p ∂f_b(x')/∂θ_p, full N × N × k × k; traced = mean over outputs
    full = np.einsum("iap,jbp->ijab", J, J)
    np.testing.assert_allclose(ntksolve.empirical_ntk(net, params, X, trace=False), full, rtol=1e-12, atol=1e-12)
    traced = np.einsum("ijaa->ij", full) / 2
    np.testing.assert_allclose(
        ntksolve.empirical_ntk(net, params, X), traced, rtol=1e-12, atol=1e-12
    )  # default trace=True


def test_the_empirical_nngp_is_the_readouts_input_kernel():
    X, _ = _data(n=5, d=3)
    net = ntksolve.MLP((9, 7), activation="relu", weight_std=1.2, bias_std=0.3)
    params = net.init(n_features=3, random_state=2)
    (W1, b1), (W2, b2), _ = params
    h1 = _relu(1.2 / np.sqrt(3) * X @ W1.T + 0.3 * b1)
    h2 = _relu(1.2 / np.sqrt(9) * h1 @ W2.T + 0.3 * b2)
    want = 1.2**2 / 7 * h2 @ h2.T + 0.3**2  # σ_w²/n_L ⟨h^L(x), h^L(x')⟩ + σ_b²
    np.testing.assert_allclose(ntksolve.empirical_nngp(net, params, X), want, rtol=1e-13)


def test_a_layer_without_bias_has_no_bias_parameters():
    X, _ = _data(n=4, d=3)
    net = ntksolve.MLP((5,), bias=False, bias_std=0.7)
    params = net.init(n_features=3, random_state=0)
    assert params[0][1].shape == (0,) and params[1][1].shape == (0,)
    assert ntksolve.jacobian(net, params, X).shape[-1] == 5 * 3 + 1 * 5
    # "For the analytic kernels a network without biases is the network with σ_b = 0."
    no_bias = ntksolve.analytic_kernels(net, X)
    zero_bias = ntksolve.analytic_kernels(ntksolve.MLP((5,), bias_std=0.0), X)
    np.testing.assert_array_equal(no_bias.ntk, zero_bias.ntk)


# -- The analytic kernels (conventions.md) -----------------------------------------------------


def test_the_analytic_relu_kernels_are_the_arc_cosine_recursion():
    X, _ = _data(n=5, d=4)
    sw, sb = 1.4, 0.3
    sigma = sw**2 * X @ X.T / 4 + sb**2  # Σ^1 = σ_w² ⟨x, x'⟩/d + σ_b²
    theta = sigma.copy()
    for _ in range(2):  # two hidden layers
        d = np.sqrt(np.diag(sigma))
        cos = np.clip(sigma / np.outer(d, d), -1, 1)
        t = np.arccos(cos)
        np.fill_diagonal(t, 0.0)
        e_phiphi = np.outer(d, d) * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
        e_dphi = (np.pi - t) / (2 * np.pi)
        sigma, sigma_dot = sw**2 * e_phiphi + sb**2, sw**2 * e_dphi
        theta = sigma + sigma_dot * theta
    k = ntksolve.analytic_kernels(ntksolve.MLP((3, 3), activation="relu", weight_std=sw, bias_std=sb), X)
    np.testing.assert_allclose(k.nngp, sigma, rtol=1e-12)
    np.testing.assert_allclose(k.ntk, theta, rtol=1e-12)


def test_the_analytic_kernels_refuse_the_standard_parameterisation():
    X, _ = _data()
    with pytest.raises(ValueError, match="NTK parameterisation"):
        ntksolve.analytic_kernels(ntksolve.MLP((8,), parameterization="standard"), X)


def test_the_estimators_warn_about_widths_the_analytic_kernel_ignores():
    X, y = _data(n=12, d=3)
    with pytest.warns(ntksolve.AnalyticWidthWarning):
        ntksolve.NTKRegressor(hidden_layer_sizes=(64,)).fit(X, y.ravel())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ntksolve.AnalyticWidthWarning)
        ntksolve.NTKRegressor(hidden_layer_sizes=(512, 512)).fit(X, y.ravel())


@pytest.mark.parametrize(
    "name, phi",
    [
        ("leaky_relu", lambda z: np.where(z > 0, z, 0.01 * z)),
        ("leaky_relu(0.2)", lambda z: np.where(z > 0, z, 0.2 * z)),
        ("abs", np.abs),
        ("abrelu(-0.5, 2)", lambda z: -0.5 * np.minimum(z, 0) + 2 * np.maximum(z, 0)),
    ],
)
def test_the_activation_names_are_the_stated_functions(name, phi):
    X, _ = _data(n=6, d=3)
    net = ntksolve.MLP((5,), activation=name, weight_std=1.1, bias_std=0.2)
    params = net.init(n_features=3, random_state=0)
    (W1, b1), (W2, b2) = params
    h = phi(1.1 / np.sqrt(3) * X @ W1.T + 0.2 * b1)
    np.testing.assert_allclose(net.apply(params, X), 1.1 / np.sqrt(5) * h @ W2.T + 0.2 * b2, rtol=1e-13)


def test_the_abrelu_closed_form_is_the_stated_formula():
    """E[φφ] and E[φ'φ'] of ``abrelu(a, b)`` as conventions.md writes them, one hidden layer."""
    a, b = -0.5, 2.0
    X, _ = _data(n=5, d=3)
    sigma = X @ X.T / 3  # σ_w = 1, σ_b = 0
    d = np.sqrt(np.diag(sigma))
    r = np.sqrt(np.maximum(np.outer(d, d) ** 2 - sigma**2, 0))
    t = np.arctan2(r, sigma)
    np.fill_diagonal(t, 0.0)
    np.fill_diagonal(r, 0.0)
    e_phiphi = ((a - b) ** 2 * r + ((a * a + b * b) * (np.pi - t) + 2 * a * b * t) * sigma) / (2 * np.pi)
    e_dphi = ((a * a + b * b) * (np.pi - t) + 2 * a * b * t) / (2 * np.pi)
    k = ntksolve.analytic_kernels(ntksolve.MLP((4,), activation=f"abrelu({a}, {b})"), X)
    np.testing.assert_allclose(k.nngp, e_phiphi, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(k.ntk, e_phiphi + e_dphi * sigma, rtol=1e-12, atol=1e-14)


# -- Training and its closed form (conventions.md) ---------------------------------------------


def _kernel(n=6, seed=0):
    A = np.random.default_rng(seed).standard_normal((n, n + 2))
    return A @ A.T / (n + 2)  # λ_max below 4: every rate used here is below the critical 2Nk/λ_max


def test_the_loss_is_the_mean_over_all_entries_halved():
    f, y = RNG.standard_normal((7, 3)), RNG.standard_normal((7, 3))
    assert ntksolve.mse_loss(f, y) == pytest.approx(((f - y) ** 2).sum() / (2 * 7 * 3), rel=1e-14)


def test_flow_descent_and_the_test_side_are_the_stated_closed_forms():
    n, k, eta = 6, 2, 0.7
    theta = _kernel(n)
    theta_test = np.random.default_rng(1).standard_normal((3, n))
    y, f0 = RNG.standard_normal((n, k)), RNG.standard_normal((n, k))
    f0_test = RNG.standard_normal((3, k))
    t = 13.0
    flow = ntksolve.gradient_descent_mse(theta, y, learning_rate=eta, dynamics="continuous")
    prop = scipy.linalg.expm(-eta * t * theta / (n * k))  # exp(−η t Θ/(Nk))
    train, test = flow(t, f0, f0_test, theta_test)
    np.testing.assert_allclose(train, y + prop @ (f0 - y), rtol=1e-10, atol=1e-12)
    want_test = f0_test + theta_test @ np.linalg.solve(theta, (np.eye(n) - prop) @ (y - f0))
    np.testing.assert_allclose(test, want_test, rtol=1e-9, atol=1e-11)
    descent = ntksolve.gradient_descent_mse(theta, y, learning_rate=eta, dynamics="discrete")
    power = np.linalg.matrix_power(np.eye(n) - eta * theta / (n * k), 13)  # (I − η Θ/(Nk))^s
    np.testing.assert_allclose(descent(13, f0), y + power @ (f0 - y), rtol=1e-10, atol=1e-12)


def test_time_counts_steps_of_gradient_descent():
    """``t`` steps of the predictor are ``t`` explicit steps ``f ← f − (η/(Nk)) Θ (f − y)``."""
    n, eta = 5, 0.9
    theta, y, f = _kernel(n), RNG.standard_normal((n, 1)), RNG.standard_normal((n, 1))
    pred = ntksolve.gradient_descent_mse(theta, y, learning_rate=eta, dynamics="discrete")(7, f)
    for _ in range(7):
        f = f - eta / n * theta @ (f - y)
    np.testing.assert_allclose(pred, f, rtol=1e-11)


def test_the_ridge_is_relative_to_the_mean_diagonal_and_infinity_is_kernel_regression():
    n, reg = 6, 0.05
    theta = _kernel(n)
    theta_test = np.random.default_rng(3).standard_normal((2, n))
    y = RNG.standard_normal((n, 1))
    mu = reg * np.mean(np.diag(theta))
    want = theta_test @ np.linalg.solve(theta + mu * np.eye(n), y)
    pred = ntksolve.gradient_descent_mse(theta, y, diag_reg=reg)
    _, test = pred(np.inf, np.zeros((n, 1)), np.zeros((2, 1)), theta_test)
    np.testing.assert_allclose(test, want, rtol=1e-10)
    _, test_none = pred(None, np.zeros((n, 1)), np.zeros((2, 1)), theta_test)  # t = None spells ∞
    np.testing.assert_array_equal(test_none, test)


def test_a_singular_kernel_at_infinity_is_the_pseudo_inverse_answer():
    X = np.random.default_rng(4).standard_normal((5, 3))
    X = np.vstack([X, X[:2]])  # repeated inputs: null vectors of the kernel
    net = ntksolve.MLP((16,), bias_std=0.1)
    params = net.init(n_features=3, random_state=0)
    theta = ntksolve.empirical_ntk(net, params, X)
    X_test = np.random.default_rng(5).standard_normal((3, 3))
    theta_test = ntksolve.empirical_ntk(net, params, X_test, X)
    y = RNG.standard_normal((7, 1))
    _, test = ntksolve.gradient_descent_mse(theta, y)(np.inf, np.zeros((7, 1)), np.zeros((3, 1)), theta_test)
    np.testing.assert_allclose(test, theta_test @ np.linalg.pinv(theta, rcond=1e-10) @ y, rtol=1e-7, atol=1e-9)


def test_the_critical_learning_rates_are_the_stated_thresholds():
    n, k = 6, 1
    theta = _kernel(n)
    lmax = np.linalg.eigvalsh(theta)[-1]
    assert ntksolve.critical_learning_rate(theta) == pytest.approx(2 * n * k / lmax, rel=1e-12)
    assert ntksolve.critical_learning_rate(theta, 3) == pytest.approx(2 * n * 3 / lmax, rel=1e-12)
    # Heavy ball 2(1 + μ)Nk/λ_max, Nesterov 2(1 + μ)Nk/((1 + 2μ)λ_max): the spectral radius of the
    # mode matrix M of training-rules.md, "One mode", crosses 1 there.
    mu = 0.6
    a = lmax / n
    for nesterov, crit in [(False, 2 * (1 + mu) * n / lmax), (True, 2 * (1 + mu) * n / ((1 + 2 * mu) * lmax))]:
        for eta, stable in [(0.999 * crit, True), (1.001 * crit, False)]:
            x = eta * a
            M = [[1 - x * (1 + mu), -eta * mu * mu], [a, mu]] if nesterov else [[1 - x, -eta * mu], [a, mu]]
            assert (max(abs(np.linalg.eigvals(M))) < 1) == stable
        rule = ntksolve.GradientDescent(0.999 * crit, momentum=mu, nesterov=nesterov)
        ntksolve.gradient_descent_mse(theta, np.ones((n, 1)), dynamics=rule)(50, np.zeros((n, 1)))
        with pytest.raises(ValueError):
            rule = ntksolve.GradientDescent(1.001 * crit, momentum=mu, nesterov=nesterov)
            ntksolve.gradient_descent_mse(theta, np.ones((n, 1)), dynamics=rule)(50, np.zeros((n, 1)))


def test_heavy_ball_and_nesterov_are_pytorchs_sgd_in_function_space():
    """training-rules.md: ``u ← μ u + G``, ``f ← f − η u`` (Nesterov ``f ← f − η (G + μ u)``)."""
    n, eta, mu, steps = 5, 0.3, 0.8, 9
    theta, y, f0 = _kernel(n), RNG.standard_normal((n, 1)), RNG.standard_normal((n, 1))
    for nesterov in (False, True):
        f, u = f0.copy(), np.zeros_like(f0)
        for _ in range(steps):
            g = theta @ (f - y) / n
            u = mu * u + g
            f = f - eta * (g + mu * u if nesterov else u)
        rule = ntksolve.GradientDescent(eta, momentum=mu, nesterov=nesterov)
        np.testing.assert_allclose(ntksolve.gradient_descent_mse(theta, y, dynamics=rule)(steps, f0), f, rtol=1e-11)


def test_the_trained_ensemble_is_the_stated_gaussian():
    n, m, eta, t = 6, 3, 0.5, 11.0
    A = np.random.default_rng(6).standard_normal((n + m, n + 4))
    ntk_all, nngp_all = A @ A.T, (A[:, :5] @ A[:, :5].T) + 0.1 * np.eye(n + m)
    ntk, ntk_star = ntk_all[:n, :n], ntk_all[n:, :n]
    K, K_star, K_ss = nngp_all[:n, :n], nngp_all[n:, :n], nngp_all[n:, n:]
    y = RNG.standard_normal((n, 1))
    E = scipy.linalg.expm(-eta * t * ntk / n)
    A_t = ntk_star @ np.linalg.solve(ntk, np.eye(n) - E)
    cov = K_ss - A_t @ K_star.T - K_star @ A_t.T + A_t @ K @ A_t.T
    mean, got = ntksolve.gradient_descent_mse_ensemble(K, ntk, y, learning_rate=eta)(
        t, K_star, ntk_star, K_ss, compute_cov=True
    )
    np.testing.assert_allclose(mean, A_t @ y, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got, cov, rtol=1e-8, atol=1e-11)


# -- Other libraries' units (conventions.md, training-rules.md, interop.md, torch.md) -----------


def _our_gradient(f, y):
    return (f - y) / f.size  # ∇_f of 1/(2Nk) Σ ‖f − y‖²


def test_the_torch_loss_factors_are_the_ratio_of_the_gradients():
    torch = pytest.importorskip("torch")
    from ntksolve.torch import learning_rate_from_torch

    N, k = 7, 3
    f, y = RNG.standard_normal((N, k)), RNG.standard_normal((N, k))
    for reduction in ("mean", "sum"):
        ft = torch.tensor(f, requires_grad=True)
        torch.nn.MSELoss(reduction=reduction)(ft, torch.tensor(y)).backward()
        c = learning_rate_from_torch(1.0, loss=torch.nn.MSELoss(reduction=reduction), n_samples=N, n_outputs=k)
        # a step of rate lr on their loss c·L is a step of rate c·lr on ours
        np.testing.assert_allclose(ft.grad.numpy(), c * _our_gradient(f, y), rtol=1e-13)
        assert c == ntksolve.to_ntksolve_learning_rate(1.0, loss=f"torch_mse_{reduction}", n_samples=N, n_outputs=k)
    labels = RNG.integers(0, k, N)
    for reduction, c in (("mean", 1.0), ("sum", float(N))):
        ft = torch.tensor(f, requires_grad=True)
        torch.nn.CrossEntropyLoss(reduction=reduction)(ft, torch.tensor(labels)).backward()
        p = np.exp(f - f.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        np.testing.assert_allclose(ft.grad.numpy(), c * (p - np.eye(k)[labels]) / N, rtol=1e-12)  # (softmax − Y)/N
        loss = torch.nn.CrossEntropyLoss(reduction=reduction)
        assert learning_rate_from_torch(1.0, loss=loss, n_samples=N, n_outputs=k) == c
        assert (
            ntksolve.to_ntksolve_learning_rate(1.0, loss=f"torch_cross_entropy_{reduction}", n_samples=N, n_outputs=k)
            == c
        )


def test_torch_weight_decay_on_the_mean_mse_is_half_ours():
    """interop.md: ``optim.SGD(lr, weight_decay=w)`` on ``MSELoss()`` is our rate ``2 lr``, decay ``w/2``."""
    torch = pytest.importorskip("torch")
    X, y = _data(n=6, d=3)
    net = ntksolve.MLP((5,), activation="tanh", bias_std=0.3, parameterization="standard")
    params = net.init(n_features=3, random_state=0)
    from ntksolve.torch import to_torch

    module = to_torch(net, params).double()
    lr, w, mu = 0.05, 0.2, 0.5
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=mu, weight_decay=w)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.MSELoss()(module(torch.tensor(X)), torch.tensor(y)).backward()
        opt.step()
    rule = ntksolve.GradientDescent(2 * lr, momentum=mu, weight_decay=w / 2)
    ours = ntksolve.train_network(net, params, X, y, steps=3, dynamics=rule, record_at=[3], track_kernel=False)
    with torch.no_grad():
        np.testing.assert_allclose(ours.fx_train[-1], module(torch.tensor(X)).numpy(), rtol=1e-11, atol=1e-12)


def test_sklearn_mlp_regressor_steps_along_the_unnormalised_gradient():
    """MLPRegressor reports ``½·mean`` (our loss) and steps along ∇ ``1/(2N) Σ ‖f − y‖²`` (``k η'``);
    ``alpha`` adds ``alpha · W / N`` to the weights' gradient only."""
    from sklearn.neural_network import MLPRegressor

    from ntksolve.sklearn.mlp_import import learning_rate_from_sklearn

    N, d, k, lr, alpha = 8, 3, 2, 0.01, 0.3
    X, y = _data(n=N, d=d, k=k, seed=7)
    est = MLPRegressor(hidden_layer_sizes=(4,), activation="identity", solver="sgd", random_state=0)
    est.set_params(batch_size=N, momentum=0.0, alpha=alpha, shuffle=False, learning_rate_init=lr)  # plain steps
    est.partial_fit(X, y)  # initialises and takes one step; take the next one by hand
    W1, W2 = (c.copy() for c in est.coefs_)
    b1, b2 = (c.copy() for c in est.intercepts_)
    h = X @ W1 + b1
    f = h @ W2 + b2
    r = (f - y) / N  # ∇_f of 1/(2N) Σ ‖f − y‖²: no 1/k
    gW2, gb2 = h.T @ r + alpha * W2 / N, r.sum(0)
    gW1, gb1 = X.T @ (r @ W2.T) + alpha * W1 / N, (r @ W2.T).sum(0)
    est.partial_fit(X, y)
    for got, before, g in zip(est.coefs_ + est.intercepts_, [W1, W2, b1, b2], [gW1, gW2, gb1, gb2]):
        np.testing.assert_allclose(got, before - lr * g, rtol=1e-12, atol=1e-15)
    # the reported loss: half the mean over all N k entries (plus the penalty alpha/(2N) ‖W‖²)
    f_now = X @ W1 @ W2 + b1 @ W2 + b2  # loss_ is of the parameters before this step
    penalty = alpha / (2 * N) * (np.sum(W1**2) + np.sum(W2**2))
    assert est.loss_ == pytest.approx(((f_now - y) ** 2).mean() / 2 + penalty, rel=1e-10)
    assert learning_rate_from_sklearn(est, n_outputs=k) == pytest.approx(k * lr)
    assert ntksolve.to_ntksolve_learning_rate(lr, loss="sklearn_mlp_regressor", n_samples=N, n_outputs=k) == k * lr


# -- Stated signatures and defaults ----------------------------------------------------------


def _defaults(obj):
    return {p.name: p.default for p in inspect.signature(obj).parameters.values()}


def test_the_documented_train_network_signature_is_the_real_one():
    # docs/training-rules.md, "Real training runs the same rules", written out in full there
    documented = (
        "(net, params, X, y, *, steps, learning_rate=None, dynamics=None, loss='mse', batches=None, "
        "record_at=None, X_test=None, y_test=None, track_kernel=True, on_divergence='raise', callback=None)"
    )
    real = inspect.signature(ntksolve.train_network).replace(return_annotation=inspect.Signature.empty)
    real = real.replace(parameters=[p.replace(annotation=inspect.Parameter.empty) for p in real.parameters.values()])
    assert str(real) == documented


def test_the_stated_defaults():
    assert _defaults(ntksolve.MLP)["parameterization"] == "ntk"  # conventions.md: the default
    assert _defaults(ntksolve.empirical_ntk)["trace"] is True  # conventions.md: traced by default
    assert _defaults(ntksolve.LayerNorm) == {"eps": 1e-5, "affine": False}  # networks.md
    assert _defaults(ntksolve.Residual)["scale"] == 1  # networks.md: Residual(block, scale=1)
    conv = _defaults(ntksolve.Conv)  # networks.md: Conv(channels, kernel_size, stride=1, ...)
    assert (conv["stride"], conv["padding"], conv["weight_std"], conv["bias_std"], conv["bias"]) == (
        1,
        "valid",
        1,
        0,
        True,
    )
    dense = _defaults(ntksolve.Dense)
    assert dense["bias"] is True
    gd = _defaults(ntksolve.GradientDescent)
    assert (gd["momentum"], gd["nesterov"], gd["weight_decay"]) == (0.0, False, 0.0)


def test_the_estimators_take_every_parameter_by_keyword_only():
    # README: "all parameters keyword-only"
    for cls in (ntksolve.NTKRegressor, ntksolve.NTKClassifier, ntksolve.NTKRegressorCV, ntksolve.NTKClassifierCV):
        kinds = {p.kind for name, p in inspect.signature(cls).parameters.items()}
        assert kinds == {inspect.Parameter.KEYWORD_ONLY}, cls.__name__


def test_the_layer_norm_is_pytorchs():
    """networks.md: ``(x − mean)/sqrt(var + eps)`` over the last axis, biased ``var``, as PyTorch."""
    torch = pytest.importorskip("torch")
    X = RNG.standard_normal((4, 6))
    net = ntksolve.Network([ntksolve.LayerNorm(eps=1e-3), ntksolve.Dense(2)])
    params = net.init(input_shape=6, random_state=0)
    W, b = params[1]
    xhat = torch.nn.functional.layer_norm(torch.tensor(X), (6,), eps=1e-3).numpy()
    np.testing.assert_allclose(net.apply(params, X), xhat @ W.T / math.sqrt(6), rtol=1e-12, atol=1e-14)


# -- Function-space twins, the full kernel, predictive uncertainty -------------------------------


def test_a_minibatch_step_uses_the_batchs_kernel_columns():
    """training-rules.md, "Minibatches": ``G_s = Θ[:, b_s] r_s[b_s]/(|b_s| k)``."""
    n, k, eta = 6, 2, 0.3
    theta, y = _kernel(n), RNG.standard_normal((n, k))
    batches = [np.array([0, 2, 3]), np.array([1, 5, 4]), np.array([3, 0, 1])]
    f = np.zeros((n, k))
    for b in batches:
        f = f - eta * theta[:, b] @ (f - y)[b] / (len(b) * k)
    run = ntksolve.sgd_mse(theta, y, np.zeros((n, k)), [0, 3], dynamics=ntksolve.GradientDescent(eta), batches=batches)
    np.testing.assert_allclose(run.train[-1], f, rtol=1e-12, atol=1e-15)


def test_a_cross_entropy_step_and_two_logits_at_twice_the_rate():
    """``f ← f − (η/N) Θ (softmax(f) − Y)``; one logit is ``BCEWithLogitsLoss`` with the logistic
    function, and a two-logit softmax moves the logit difference as one logit at ``2η``."""
    n, eta = 6, 0.7
    theta = _kernel(n)
    labels = np.array([0, 1, 2, 1, 0, 2])
    f = np.zeros((n, 3))
    for _ in range(3):
        p = np.exp(f) / np.exp(f).sum(1, keepdims=True)
        f = f - eta / n * theta @ (p - np.eye(3)[labels])
    run = ntksolve.sgd_cross_entropy(theta, labels, np.zeros((n, 3)), [3], dynamics=ntksolve.GradientDescent(eta))
    np.testing.assert_allclose(run.train[-1], f, rtol=1e-12, atol=1e-15)
    two = np.array([0, 1, 1, 0, 1, 0])
    one = ntksolve.sgd_cross_entropy(theta, two, np.zeros((n, 1)), [5], dynamics=ntksolve.GradientDescent(2 * eta))
    pair = ntksolve.sgd_cross_entropy(theta, two, np.zeros((n, 2)), [5], dynamics=ntksolve.GradientDescent(eta))
    np.testing.assert_allclose(one.train[-1][:, 0], pair.train[-1][:, 1] - pair.train[-1][:, 0], rtol=1e-12)
    f = np.zeros((n, 1))
    for _ in range(5):
        f = f - 2 * eta / n * theta @ (1 / (1 + np.exp(-f)) - two[:, None])
    np.testing.assert_allclose(one.train[-1], f, rtol=1e-12, atol=1e-15)


def test_a_full_kernel_is_the_flattened_nk_by_nk_matrix():
    """The ridge adds ``diag_reg · mean(diag)`` of the kernel flattened to ``Nk × Nk``; the critical
    rate is ``2Nk/λ_max`` of that matrix."""
    n, k, m, reg = 5, 2, 3, 0.1
    B = np.random.default_rng(8).standard_normal((n * k, n * k + 2))
    flat = B @ B.T / (n * k)  # rows and columns ordered (point, output)
    full = flat.reshape(n, k, n, k).transpose(0, 2, 1, 3)  # (N, N, k, k)
    cross_flat = np.random.default_rng(9).standard_normal((m * k, n * k))
    cross = cross_flat.reshape(m, k, n, k).transpose(0, 2, 1, 3)
    y = RNG.standard_normal((n, k))
    mu = reg * np.mean(np.diag(flat))
    _, test = ntksolve.gradient_descent_mse(full, y, diag_reg=reg)(np.inf, np.zeros((n, k)), np.zeros((m, k)), cross)
    want = cross_flat @ np.linalg.solve(flat + mu * np.eye(n * k), y.reshape(-1))
    np.testing.assert_allclose(test, want.reshape(m, k), rtol=1e-10)
    lmax = np.linalg.eigvalsh(flat)[-1]
    assert ntksolve.critical_learning_rate(full) == pytest.approx(2 * n * k / lmax, rel=1e-12)
    # with weight decay w the function-space Hessian is Θ/(Nk) + w: λ_max + w Nk in place of λ_max
    w = 0.05
    rule = ntksolve.GradientDescent(0.1, weight_decay=w)
    assert rule.critical_learning_rate(lmax, n * k) == pytest.approx(2 * n * k / (lmax + w * n * k), rel=1e-12)


def test_the_predictive_process_is_the_stated_gaussian_at_its_maximum():
    """conventions.md, "Predictive uncertainty": ``y − f_0 ~ N(0, a Θ + σ² I)`` with ``a`` and ``σ²``
    by maximum marginal likelihood, ``a(ρ) = (1/N) Σ_j z_j²/(θ_j + ρ)``."""
    import scipy.optimize
    import scipy.stats

    from ntksolve.dynamics import KernelGP

    rng = np.random.default_rng(10)
    n = 20
    theta = _kernel(n, seed=10)
    r = rng.multivariate_normal(np.zeros(n), 2.0 * theta + 0.3 * np.eye(n))[:, None]
    lam, V = np.linalg.eigh(theta)
    gp = KernelGP(lam, V, r)

    def logpdf(a, s2):
        return scipy.stats.multivariate_normal(np.zeros(n), a * theta + s2 * np.eye(n)).logpdf(r[:, 0])

    assert gp.log_marginal_likelihood(1.5, 0.2)[0] == pytest.approx(logpdf(1.5, 0.2), rel=1e-12)
    (a,), (s2,), (lml,) = gp.maximise()
    best = scipy.optimize.minimize(
        lambda p: -logpdf(*np.exp(p)), [0.0, -1.0], method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-13)
    )
    np.testing.assert_allclose([a, s2], np.exp(best.x), rtol=1e-5)
    assert lml == pytest.approx(-best.fun, rel=1e-10)
    z = V.T @ r[:, 0]
    assert a == pytest.approx(np.mean(z**2 / (lam + s2 / a)), rel=1e-10)


def test_torch_trains_in_its_own_units():
    """torch.md: losses in PyTorch's units (``MSELoss()`` twice ours); ``critical_learning_rate``
    the PyTorch rate at which descent on the linearised module diverges, ``(2Nk/λ_max)/2``."""
    torch = pytest.importorskip("torch")
    import functools

    from torch.func import functional_call, jacrev

    from ntksolve.torch import train

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    X, y = _data(n=10, d=3, k=2, seed=11)
    result = train(
        module, X, y, optimizer=functools.partial(torch.optim.SGD, lr=0.01), loss=torch.nn.MSELoss(), steps=1
    )
    params = {name: p.detach() for name, p in module.named_parameters()}
    jac = jacrev(lambda p: functional_call(module, p, (torch.tensor(X),)))(params)
    J = torch.cat([j.reshape(20, -1) for j in jac.values()], 1).numpy()  # (Nk, P)
    lmax = np.linalg.eigvalsh(J @ J.T)[-1]
    assert result.critical_learning_rate == pytest.approx(2 * 20 / lmax / 2, rel=1e-10)
    with torch.no_grad():
        f0 = module(torch.tensor(X)).numpy()
    assert result.loss_train[0] == pytest.approx(((f0 - y) ** 2).mean(), rel=1e-12)


# -- The README's install lines and import claims ------------------------------------------------


def test_the_extras_the_readme_and_pages_install_exist():
    tomllib = pytest.importorskip("tomllib")
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    extras = set(tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = set()
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for group in re.findall(r"(?:\.|ntksolve)\[([\w,]+)\]", page.read_text(encoding="utf-8")):
            named |= set(group.split(","))
    assert {"cli", "test", "dask", "torch", "docs", "lint"} <= named  # the README's commands name them
    assert named <= extras, f"extras named but not in pyproject.toml: {sorted(named - extras)}"
    listed = re.search(r"Optional extras, each imported only where used.*?\n\n", (root / "README.md").read_text(), re.S)
    in_list = set(re.findall(r"`([a-z]+)`", listed.group(0)))  # `cli` (...), `plot`, ...
    assert len(in_list) > 8 and in_list <= extras, sorted(in_list - extras)


def test_import_ntksolve_compiles_nothing_and_imports_no_extra():
    import subprocess
    import sys

    code = (
        "import sys, ntksolve\n"
        "from numba.core.registry import CPUDispatcher\n"
        "jit = [v for n, m in list(sys.modules.items()) if n.startswith('ntksolve') for v in vars(m).values()\n"
        "       if isinstance(v, CPUDispatcher)]\n"
        "print(len(jit), sum(bool(v.signatures) for v in jit))\n"
        "print(' '.join(m for m in ('sklearn', 'torch', 'dask', 'distributed', 'zarr', 'matplotlib', 'tqdm',\n"
        "                           'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    n_jit, n_compiled = map(int, out[0].split())
    assert n_jit > 50 and n_compiled == 0
    assert out[1] == ""


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_a_training_step_with_weight_decay_acts_on_the_trained_parameters(parameterization):
    """training-rules.md, "Real training runs the same rules": the step is on the gradient of our
    loss with respect to the *trained* parameters (``W, b`` in NTK parameterisation, ``W̃ = (σ_w/√n) W``
    and ``b̃ = σ_b b`` in standard), and weight decay adds ``w`` times each trained parameter."""
    X, y = _data(n=6, d=3, k=2, seed=12)
    sw, sb, eta, w = 1.3, 0.4, 0.2, 0.3
    net = ntksolve.MLP((7,), weight_std=sw, bias_std=sb, n_outputs=2, parameterization=parameterization)
    params = net.init(n_features=3, random_state=3)
    f, J = _one_hidden_layer_by_hand(params, X, sw, sb, parameterization)
    (W1, b1), (W2, b2) = params
    scales = [sw / np.sqrt(3), sb, sw / np.sqrt(7), sb] if parameterization == "standard" else [1, 1, 1, 1]
    trained = np.concatenate([s * a.ravel() for s, a in zip(scales, [W1, b1, W2, b2])])
    grad = np.einsum("iap,ia->p", J, f - y) / f.size  # Jᵀ r/(Nk), with respect to the trained parameters
    new = trained - eta * (grad + w * trained)
    rule = ntksolve.GradientDescent(eta, weight_decay=w)
    result = ntksolve.train_network(net, params, X, y, steps=1, dynamics=rule, track_kernel=False)
    got = np.concatenate([s * a.ravel() for s, a in zip(scales, [a for layer in result.params for a in layer])])
    np.testing.assert_allclose(got, new, rtol=1e-12, atol=1e-14)


def test_the_readme_describes_the_default_sweep():
    """README, "Evidence": one hidden ReLU layer, ``σ_w = 1``, ``σ_b = 0.1``, NTK parameterisation,
    300 full-batch steps, widths 64 … 8192, the embedded 256 / 256 points with ``d = 8``, seed 0."""
    from ntksolve.cli_parser import build_parser
    from ntksolve.datasets import default_regression

    a = build_parser().parse_args(["compare"])
    assert (a.depth, a.activation, a.weight_std, a.bias_std, a.parameterization) == (1, "relu", 1.0, 0.1, "ntk")
    assert (a.steps, a.batch_size, a.optimizer, a.loss, a.seed, a.records) == (300, None, "sgd", "mse", 0, 30)
    assert list(a.widths) == [64, 128, 256, 512, 1024, 2048, 4096, 8192]
    data = default_regression()
    assert data.X_train.shape == (256, 8) and data.X_test.shape == (256, 8)
    # "at half the analytic critical learning rate, η = 4.71"
    theta = ntksolve.analytic_kernels(ntksolve.MLP((512,), bias_std=0.1), data.X_train).ntk
    assert 0.5 * 2 * 256 / np.linalg.eigvalsh(theta)[-1] == pytest.approx(4.71, abs=0.005)
