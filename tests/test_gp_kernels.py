"""NTKKernel / NNGPKernel: values, exact gradients against finite differences, scikit-learn plumbing."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

import ntksolve
from ntksolve import NNGPKernel, NTKKernel


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((25, 4))
    X[7] = X[3]  # a duplicate: the ReLU map is singular at angle 0
    X[11] = 0.0  # the origin
    return X


def _fd_gradient(kernel, X, h=1e-5):
    """Central differences of K in log hyperparameters (theta), column per free hyperparameter."""
    cols = []
    for i in range(kernel.theta.size):
        up, down = kernel.theta.copy(), kernel.theta.copy()
        up[i] += h
        down[i] -= h
        cols.append((kernel.clone_with_theta(up)(X) - kernel.clone_with_theta(down)(X)) / (2 * h))
    return np.stack(cols, axis=-1)


#: exact gradients: the closed-form partials of ntksolve._jit.gp
EXACT = [
    "relu",
    "erf",
    "identity",
    "leaky_relu(0.2)",
    "abs",
    "abrelu(-0.3, 1.5)",
    "sin",
    "cos",
    "gaussian",
    "monomial(2)",
    "monomial(3)",
]


@pytest.mark.parametrize("Kern", [NTKKernel, NNGPKernel])
@pytest.mark.parametrize("activation", EXACT)
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_exact_gradient_matches_finite_differences(Kern, activation, depth, points):
    kernel = Kern(weight_std=1.3, bias_std=0.4, depth=depth, activation=activation)
    K, grad = kernel(points, eval_gradient=True)
    assert grad.shape == (25, 25, 2)
    np.testing.assert_allclose(K, kernel(points), rtol=1e-13, atol=1e-15)
    fd = _fd_gradient(kernel, points)
    scale = np.abs(fd).max(axis=(0, 1))
    assert np.all(np.abs(grad - fd).max(axis=(0, 1)) <= 1e-6 * scale)


@pytest.mark.parametrize("activation", EXACT)
def test_gradient_kernel_values_are_the_analytic_kernels_bit_for_bit(activation, points):
    # one implementation of the values: the gradient path reproduces analytic_kernels exactly, and
    # the duplicated row (points[7] = points[3]) gets exactly the diagonal value and gradient
    for Kern, which in ((NTKKernel, "ntk"), (NNGPKernel, "nngp")):
        kernel = Kern(weight_std=1.3, bias_std=0.4, depth=3, activation=activation)
        K, grad = kernel(points, eval_gradient=True)
        pair = ntksolve.analytic_kernels(ntksolve.MLP((1,) * 3, activation, 1.3, 0.4), points)
        assert np.array_equal(K, getattr(pair, which))
        assert np.array_equal(np.diag(K), kernel.diag(points))
        assert K[3, 7] == K[3, 3] == K[7, 7]
        assert np.array_equal(grad[3, 7], grad[3, 3]) and np.array_equal(grad[7, 3], grad[7, 7])


def test_analytic_diagonals_lives_with_the_analytic_kernels(points):
    from ntksolve.kernels.analytic import analytic_diagonals

    pair = ntksolve.analytic_kernels(ntksolve.MLP((1, 1), "gelu", 1.2, 0.3), points, points.copy())
    nngp_diag, ntk_diag = analytic_diagonals(points, 2, "gelu", 1.2, 0.3)
    assert np.array_equal(nngp_diag, np.diag(pair.nngp)) and np.array_equal(ntk_diag, np.diag(pair.ntk))
    with pytest.raises(ValueError, match="depth must be a non-negative int"):
        analytic_diagonals(points, -1, "relu", 1.0, 0.0)
    with pytest.raises(ValueError, match="weight_std"):
        analytic_diagonals(points, 1, "relu", -1.0, 0.0)


def test_finite_difference_fallback_for_quadrature_activations(points):
    kernel = NTKKernel(weight_std=0.9, bias_std=0.3, depth=2, activation="tanh")
    _, grad = kernel(points, eval_gradient=True)
    # an independent 4-point stencil with a larger step
    h = 1e-3
    cols = []
    for i in range(2):
        e = np.zeros(2)
        e[i] = h
        f = [kernel.clone_with_theta(kernel.theta + m * e)(points) for m in (-2, -1, 1, 2)]
        cols.append((f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h))
    ref = np.stack(cols, axis=-1)
    assert np.abs(grad - ref).max() <= 1e-6 * np.abs(ref).max()


def test_identity_depth0_closed_form(points):
    """Depth 0: both kernels are sigma_w^2 <x, x'>/d + sigma_b^2, a formula checked by hand."""
    sw, sb = 1.7, 0.2
    K, grad = NTKKernel(weight_std=sw, bias_std=sb, depth=0)(points, eval_gradient=True)
    gram = points @ points.T / 4
    np.testing.assert_allclose(K, sw**2 * gram + sb**2, rtol=1e-14)
    np.testing.assert_allclose(grad[..., 0], 2 * sb**2, rtol=1e-14)  # d/dlog sigma_b
    np.testing.assert_allclose(grad[..., 1], 2 * sw**2 * gram, rtol=1e-14, atol=1e-15)  # d/dlog sigma_w


def test_relu_nngp_is_arccosine_kernel(points):
    """One hidden ReLU layer: sigma_w^2 sqrt(s1 s2)(sin t + (pi - t) cos t)/(2 pi) + sigma_b^2 (Cho & Saul)."""
    sw, sb = 1.2, 0.3
    X = points[:6]
    s = sw**2 * X @ X.T / 4 + sb**2
    d = np.sqrt(np.outer(np.diag(s), np.diag(s)))
    theta = np.arccos(np.clip(s / d, -1, 1))
    expected = sw**2 * d * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi) + sb**2
    np.testing.assert_allclose(NNGPKernel(weight_std=sw, bias_std=sb)(X), expected, rtol=1e-7)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_values_diag_and_cross(activation, points):
    kernel = NTKKernel(depth=2, activation=activation)
    net = ntksolve.MLP((1, 1), activation, 1.0, 0.1)
    pair = ntksolve.analytic_kernels(net, points[:10], points[10:])
    np.testing.assert_array_equal(kernel(points[:10], points[10:]), pair.ntk)
    np.testing.assert_array_equal(NNGPKernel(depth=2, activation=activation)(points[:10], points[10:]), pair.nngp)
    np.testing.assert_allclose(kernel.diag(points), np.diag(kernel(points)), rtol=1e-14)
    assert kernel.diag(points).shape == (25,)


def test_hyperparameter_plumbing(points):
    kernel = NTKKernel(weight_std=2.0, bias_std=0.5, depth=2)
    assert [h.name for h in kernel.hyperparameters] == ["bias_std", "weight_std"]
    np.testing.assert_allclose(kernel.theta, np.log([0.5, 2.0]))
    assert np.all(kernel.bounds[:, 0] > -np.inf) and not kernel.is_stationary()
    assert clone(kernel) == kernel and clone(kernel) is not kernel
    assert kernel.get_params()["depth"] == 2
    fixed = NTKKernel(bias_std_bounds="fixed")
    _, grad = fixed(points, eval_gradient=True)
    assert grad.shape == (25, 25, 1) and fixed.theta.shape == (1,)
    _, grad_ref = NTKKernel()(points, eval_gradient=True)
    np.testing.assert_array_equal(grad[..., 0], grad_ref[..., 1])
    with pytest.raises(ValueError, match="Gradient can only be evaluated when Y is None"):
        kernel(points, points, eval_gradient=True)
    with pytest.raises(ValueError, match="unknown activation"):
        NTKKernel(activation="swish")(points)
    with pytest.raises(ValueError, match="depth must be a non-negative int"):
        NTKKernel(depth=-1)(points)
    with pytest.raises(ValueError, match="NaN"):
        NTKKernel()(np.full((2, 2), np.nan))
    # composes with the other kernels and keeps its gradient
    combo = ConstantKernel(2.0) * NTKKernel() + WhiteKernel(0.1)
    _, g = combo(points, eval_gradient=True)
    assert g.shape == (25, 25, 4)


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(1)
    X = rng.uniform(-2, 2, (60, 2))
    y = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2 + 0.05 * rng.standard_normal(60)
    return X[:45], y[:45], X[45:], y[45:]


def test_gaussian_process_regressor_optimises(regression):
    X, y, Xt, yt = regression
    kernel = ConstantKernel() * NTKKernel(depth=2) + WhiteKernel(1e-2, noise_level_bounds=(1e-8, 1.0))
    gpr = GaussianProcessRegressor(kernel, normalize_y=True, random_state=0).fit(X, y)
    start = gpr.log_marginal_likelihood(gpr.kernel.theta)
    assert gpr.log_marginal_likelihood_value_ > start
    assert gpr.score(Xt, yt) > 0.8
    # scikit-learn's own likelihood gradient, built on ours, agrees with finite differences
    theta = gpr.kernel_.theta
    _, g = gpr.log_marginal_likelihood(theta, eval_gradient=True)
    h = 1e-6
    fd = [
        (gpr.log_marginal_likelihood(theta + h * e) - gpr.log_marginal_likelihood(theta - h * e)) / (2 * h)
        for e in np.eye(theta.size)
    ]
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-5)


def test_kernel_ridge_and_svr_equal_precomputed(regression):
    X, y, Xt, yt = regression
    kernel = NTKKernel(depth=2, bias_std=0.5)
    K, Ks = kernel(X), kernel(Xt, X)
    krr = KernelRidge(kernel=kernel, alpha=0.1).fit(X, y)
    ref = KernelRidge(kernel="precomputed", alpha=0.1).fit(K, y)
    # KernelRidge asks for k(X, X) as a cross kernel (no symmetric fast path): equal to rounding,
    # amplified by the solve's condition number
    np.testing.assert_allclose(krr.predict(Xt), ref.predict(Ks), rtol=1e-6)
    assert krr.score(Xt, yt) > 0.8
    svr = SVR(kernel=kernel, C=10.0, epsilon=0.05).fit(X, y)
    ref = SVR(kernel="precomputed", C=10.0, epsilon=0.05).fit(K, y)
    np.testing.assert_allclose(svr.predict(Xt), ref.predict(Ks), rtol=1e-8)
    assert svr.score(Xt, yt) > 0.8


def test_svc_on_iris():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    idx = np.random.default_rng(0).permutation(150)
    tr, te = idx[:100], idx[100:]
    svc = SVC(kernel=NNGPKernel(depth=2, bias_std=0.5), C=10.0).fit(X[tr], y[tr])
    assert svc.score(X[te], y[te]) > 0.9
