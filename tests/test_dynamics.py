"""Closed-form MSE dynamics: every test pins a number from an independent computation.

Kernels are built here in plain numpy (J Jᵀ of random Jacobians, an RBF kernel, the ReLU NNGP/NTK
recursion of the conventions) so that these tests do not depend on other ntksolve modules.
"""

from __future__ import annotations


import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

from ntksolve.dynamics.solvers import Krylov, auto_method
from ntksolve.dynamics import (
    DivergenceWarning,
    critical_learning_rate,
    gradient_descent_mse,
    gradient_descent_mse_ensemble,
    mse_loss,
)

METHODS = ("eigh", "expm", "krylov")
TIMES = np.array([0.0, 0.3, 4.0, 50.0, 700.0, np.inf])


# --- independent kernels ---------------------------------------------------------------------------


def jacobian_kernels(n_train, n_test, n_params, k=None, seed=0):
    """``Θ = J Jᵀ / P`` from a random Jacobian: traced ``(n, n)`` or full ``(n, n, k, k)``."""
    rng = np.random.default_rng(seed)
    if k is None:
        J = rng.standard_normal((n_train + n_test, n_params))
        K = J @ J.T / n_params
        return K[:n_train, :n_train], K[n_train:, :n_train]
    J = rng.standard_normal((n_train + n_test, k, n_params))
    K = np.einsum("iap,jbp->ijab", J, J) / n_params
    return K[:n_train, :n_train], K[n_train:, :n_train]


def rbf_kernel(X1, X2, length=1.5):
    d2 = np.sum(X1**2, 1)[:, None] + np.sum(X2**2, 1)[None, :] - 2 * X1 @ X2.T
    return np.exp(-np.maximum(d2, 0) / (2 * length**2))


def relu_kernels(X1, X2, depth=2, weight_std=1.0, bias_std=0.1):
    """NNGP and NTK of a ReLU MLP (conventions, arc-cosine closed form) in plain numpy."""
    d = X1.shape[1]
    s12 = weight_std**2 * X1 @ X2.T / d + bias_std**2
    s11 = weight_std**2 * np.sum(X1 * X1, 1) / d + bias_std**2
    s22 = weight_std**2 * np.sum(X2 * X2, 1) / d + bias_std**2
    ntk = s12.copy()
    for _ in range(depth):
        prod = np.outer(s11, s22)
        ang = np.arctan2(np.sqrt(np.maximum(prod - s12**2, 0)), s12)
        e = np.sqrt(prod) * (np.sin(ang) + (np.pi - ang) * np.cos(ang)) / (2 * np.pi)
        ed = (np.pi - ang) / (2 * np.pi)
        s12 = weight_std**2 * e + bias_std**2
        ntk = s12 + weight_std**2 * ed * ntk
        s11 = weight_std**2 * s11 / 2 + bias_std**2
        s22 = weight_std**2 * s22 / 2 + bias_std**2
    return s12, ntk


def split(K, n):
    K = (K + K.T) / 2
    return K[:n, :n], K[n:, :n], K[n:, n:]


def reference_trajectory(K, Ks, y, f0, fs0, ts, lr, reg=0.0):
    """Dense scipy expm / pinv formula of the conventions, time by time (shapes (N,c), (M,c))."""
    n = K.shape[0]
    Kr = K + reg * np.mean(np.diag(K)) * np.eye(n)
    pinv = np.linalg.pinv(Kr, rcond=1e-10, hermitian=True)
    size = y.size
    r = y - f0
    tr, te = [], []
    for t in ts:
        if np.isinf(t):
            I_E = Kr @ pinv
        else:
            I_E = np.eye(n) - scipy.linalg.expm(-lr * t / size * Kr)
        tr.append(f0 + I_E @ r)
        te.append(fs0 + Ks @ (pinv @ (I_E @ r)))
    return np.array(tr), np.array(te)


def rel(a, b):
    return np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b))


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(1)
    N, M = 30, 9
    K, Ks = jacobian_kernels(N, M, 80, seed=2)
    y = rng.standard_normal((N, 2))
    f0 = 0.3 * rng.standard_normal((N, 2))
    fs0 = 0.3 * rng.standard_normal((M, 2))
    return K, Ks, y, f0, fs0


# --- agreement between methods and with the dense reference --------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("reg", [0.0, 1e-3])
def test_methods_match_dense_reference_traced(problem, method, reg):
    K, Ks, y, f0, fs0 = problem
    pred = gradient_descent_mse(K, y, 0.7, diag_reg=reg, method=method)
    tr, te = pred(TIMES, f0, fs0, Ks)
    ref_tr, ref_te = reference_trajectory(K, Ks, y, f0, fs0, TIMES, 0.7, reg)
    tol = 1e-8 if method == "krylov" else 1e-10
    assert tr.shape == (TIMES.size, 30, 2) and te.shape == (TIMES.size, 9, 2)
    assert rel(tr, ref_tr) < tol and rel(te, ref_te) < tol


def test_eigh_expm_krylov_agree_on_rbf_and_1d_targets():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((45, 3))
    K, Ks, _ = split(rbf_kernel(X, X), 36)
    y = np.sin(X[:36, 0])
    f0 = np.zeros(36)
    fs0 = np.zeros(9)
    ts = np.array([0.0, 1.0, 30.0, 1e3, 1e5])
    out = {m: gradient_descent_mse(K, y, 2.0, method=m, diag_reg=1e-6)(ts, f0, fs0, Ks) for m in METHODS}
    assert out["eigh"][0].shape == (5, 36) and out["eigh"][1].shape == (5, 9)
    for i in range(2):
        assert rel(out["expm"][i], out["eigh"][i]) < 1e-10
        assert rel(out["krylov"][i], out["eigh"][i]) < 1e-8


@pytest.mark.parametrize("method", METHODS)
def test_full_kernel_matches_flattened_reference(method):
    N, M, k = 12, 5, 3
    K4, Ks4 = jacobian_kernels(N, M, 50, k=k, seed=4)
    rng = np.random.default_rng(5)
    y, f0, fs0 = rng.standard_normal((N, k)), rng.standard_normal((N, k)), rng.standard_normal((M, k))
    tr, te = gradient_descent_mse(K4, y, 1.3, method=method)(TIMES, f0, fs0, Ks4)
    # independent flattening: Θ[(i,a),(j,b)] by explicit loops
    Kf = np.zeros((N * k, N * k))
    Ksf = np.zeros((M * k, N * k))
    for i in range(N):
        for a in range(k):
            for j in range(N):
                for b in range(k):
                    Kf[i * k + a, j * k + b] = K4[i, j, a, b]
            for j in range(M):
                for b in range(k):
                    Ksf[j * k + b, i * k + a] = Ks4[j, i, b, a]
    ref_tr, ref_te = reference_trajectory(Kf, Ksf, y.reshape(-1, 1), f0.reshape(-1, 1), fs0.reshape(-1, 1), TIMES, 1.3)
    tol = 1e-8 if method == "krylov" else 1e-10
    assert tr.shape == (TIMES.size, N, k) and te.shape == (TIMES.size, M, k)
    assert rel(tr, ref_tr.reshape(tr.shape)) < tol and rel(te, ref_te.reshape(te.shape)) < tol


@pytest.mark.parametrize("method", METHODS)
def test_scalar_time_shapes_and_t0_is_f0(problem, method):
    K, Ks, y, f0, fs0 = problem
    tr, te = gradient_descent_mse(K, y, method=method)(0.0, f0, fs0, Ks)
    assert tr.shape == f0.shape and te.shape == fs0.shape
    np.testing.assert_array_equal(tr, f0)
    np.testing.assert_array_equal(te, fs0)
    only_train = gradient_descent_mse(K, y, method=method)(2.0, f0)
    assert isinstance(only_train, np.ndarray) and only_train.shape == f0.shape


@pytest.mark.parametrize("method", METHODS)
def test_infinite_time_is_kernel_regression_with_diag_reg(problem, method):
    K, Ks, y, f0, fs0 = problem
    reg = 0.05
    tr, te = gradient_descent_mse(K, y, diag_reg=reg, method=method)(np.inf, f0, fs0, Ks)
    Kr = K + reg * np.mean(np.diag(K)) * np.eye(K.shape[0])
    expected = fs0 + Ks @ np.linalg.solve(Kr, y - f0)
    assert rel(te, expected) < 1e-9
    assert rel(tr, y) < 1e-9  # the regularised kernel is invertible: the train set is fitted


def test_krylov_matches_eigh_on_ill_conditioned_relu_ntk_without_reg():
    """N = 300, diag_reg = 0: tiny eigenvalues make large t (≈ CG) the hard case for Lanczos."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((364, 8))
    _, ntk = relu_kernels(X, X, depth=3, bias_std=0.0)
    K, Ks, _ = split(ntk, 300)
    y = rng.standard_normal(300)
    f0 = 0.1 * rng.standard_normal(300)
    fs0 = 0.1 * rng.standard_normal(64)
    cond = np.linalg.cond(K)
    assert cond > 1e3  # the point of the test
    ts = np.concatenate([np.logspace(-2, 6, 12), [np.inf]])
    a = gradient_descent_mse(K, y, method="eigh")(ts, f0, fs0, Ks)
    b = gradient_descent_mse(K, y, method="krylov")(ts, f0, fs0, Ks)
    for i in range(2):
        assert rel(b[i], a[i]) < 1e-8
        for j in range(ts.size):  # every time, not only the whole trajectory
            assert rel(b[i][j], a[i][j]) < 1e-7


def test_float32_kernel_tracks_float64():
    rng = np.random.default_rng(7)
    K, Ks = jacobian_kernels(40, 6, 100, seed=8)
    y = rng.standard_normal(40)
    ts = np.array([1.0, 30.0, np.inf])
    for method in METHODS:
        lo = gradient_descent_mse(K.astype(np.float32), y.astype(np.float32), method=method)(
            ts, np.zeros(40, np.float32), np.zeros(6, np.float32), Ks.astype(np.float32)
        )
        hi = gradient_descent_mse(K, y, method=method)(ts, np.zeros(40), np.zeros(6), Ks)
        assert lo[0].dtype == np.float32
        assert rel(lo[0], hi[0]) < 1e-4 and rel(lo[1], hi[1]) < 1e-3


# --- dynamics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_training_loss_never_increases_in_continuous_time(problem, method):
    K, Ks, y, f0, fs0 = problem
    ts = np.concatenate([[0.0], np.logspace(-2, 4, 60)])
    pred = gradient_descent_mse(K, y, method=method)
    loss = pred.loss(ts, f0)
    assert loss.shape == ts.shape
    assert np.all(np.diff(loss) <= 1e-14 * loss[0])
    assert loss[0] == pytest.approx(0.5 * np.mean((f0 - y) ** 2), rel=1e-14)
    assert loss[-1] < 1e-6 * loss[0]


@pytest.mark.parametrize("method", METHODS)
def test_discrete_equals_explicit_gradient_descent_with_oscillating_mode(problem, method):
    K, Ks, y, f0, fs0 = problem
    size = y.size
    lmax = np.linalg.eigvalsh(K)[-1]
    lr = 1.6 * size / lmax  # ηλ_max/(Nk) = 1.6: the top mode flips sign every step, still converges
    pred = gradient_descent_mse(K, y, lr, dynamics="discrete", method=method)
    steps = np.arange(0, 41)
    tr, te = pred(steps, f0, fs0, Ks)
    f, fs = f0.copy(), fs0.copy()
    for s in steps:
        assert rel(tr[s], f) < 1e-10 * (1 if method != "krylov" else 100) + 1e-15
        assert rel(te[s], fs) < 1e-10 * (1 if method != "krylov" else 100) + 1e-15
        grad = (f - y) * lr / size
        f, fs = f - K @ grad, fs - Ks @ grad
    # the oscillation is visible in the top mode
    v = np.linalg.eigh(K)[1][:, -1]
    proj = v @ (tr[:6] - y)[:, :, 0].T
    assert np.all(np.sign(proj[1:]) == -np.sign(proj[:-1]))


def test_discrete_approaches_continuous_at_first_order_in_learning_rate(problem):
    K, Ks, y, f0, fs0 = problem
    errs = []
    for lr in (0.5, 0.25, 0.125):
        steps = int(round(20.0 / lr))  # the same s = ηt/(Nk)
        disc = gradient_descent_mse(K, y, lr, dynamics="discrete")(steps, f0, fs0, Ks)
        cont = gradient_descent_mse(K, y, lr)(float(steps), f0, fs0, Ks)
        errs.append(rel(disc[1], cont[1]))
    assert errs[-1] < 1e-2
    assert errs[0] / errs[1] == pytest.approx(2.0, rel=0.1)
    assert errs[1] / errs[2] == pytest.approx(2.0, rel=0.1)


def test_continuous_equals_ode_solution(problem):
    K, Ks, y, f0, fs0 = problem
    lr, size = 0.9, y.size
    ts = np.array([0.5, 7.0, 60.0, 400.0])

    def rhs(_, z):  # train and test outputs together: df/dt = −η/(Nk) Θ (f − y)
        f = z[: f0.size].reshape(f0.shape)
        grad = lr / size * (f - y)
        return np.concatenate([-(K @ grad).ravel(), -(Ks @ grad).ravel()])

    sol = scipy.integrate.solve_ivp(
        rhs, (0, ts[-1]), np.concatenate([f0.ravel(), fs0.ravel()]), t_eval=ts, method="DOP853", rtol=1e-12, atol=1e-13
    )
    tr, te = gradient_descent_mse(K, y, lr)(ts, f0, fs0, Ks)
    assert rel(tr, sol.y[: f0.size].T.reshape(tr.shape)) < 1e-9
    assert rel(te, sol.y[f0.size :].T.reshape(te.shape)) < 1e-9


@pytest.mark.parametrize("method", METHODS)
def test_singular_kernel_from_repeated_inputs_gives_the_limit(method):
    rng = np.random.default_rng(9)
    J = rng.standard_normal((10, 40))
    J = np.vstack([J, J[:4], J[:3]])  # 17 inputs, 7 of them repeated: rank 10
    Jt = rng.standard_normal((5, 40))
    K, Ks = J @ J.T / 40, Jt @ J.T / 40
    assert np.linalg.matrix_rank(K) == 10
    y = rng.standard_normal(17)  # inconsistent on repeated inputs: cannot be fitted
    f0, fs0 = 0.2 * rng.standard_normal(17), 0.2 * rng.standard_normal(5)
    ts = np.array([0.0, 2.0, 100.0, 1e6, 1e12, np.inf])
    tr, te = gradient_descent_mse(K, y, method=method)(ts, f0, fs0, Ks)
    assert np.all(np.isfinite(tr)) and np.all(np.isfinite(te))
    # the dense reference (expm; pinv at ∞) is itself accurate only while s·‖Θ‖ is moderate: expm at
    # s = 1e12/17 turns the rounding-level "null" eigenvalues (~1e-16 λ_max) into a 1e-5 drift
    ok = [0, 1, 2, 5]
    ref_tr, ref_te = reference_trajectory(K, Ks, y[:, None], f0[:, None], fs0[:, None], ts[ok], 1.0)
    tol = 1e-8 if method == "krylov" else 1e-10
    assert rel(tr[ok], ref_tr[..., 0]) < tol and rel(te[ok], ref_te[..., 0]) < tol
    # no drift: t = 1e6 and 1e12 already equal the limit (the smallest non-null mode has long decayed).
    # method="expm" works on the matrix, not its modes, so rounding-level null eigenvalues times
    # s ≈ 6e10 drift by about 1e-5 at t = 1e12 (documented); it is checked up to t = 1e6 only.
    for i in (3,) if method == "expm" else (3, 4):
        assert rel(te[i], te[-1]) < tol and rel(tr[i], tr[-1]) < tol
    # training moves two copies of an input identically: their initial difference is kept at every t
    keep = [0, 1, 2, 3, 5] if method == "expm" else slice(None)
    np.testing.assert_allclose((tr[:, 0] - tr[:, 10])[keep], f0[0] - f0[10], rtol=0, atol=1e-9)


# --- learning rates ----------------------------------------------------------------------------------


def test_critical_learning_rate_is_where_gradient_descent_stops_converging(problem):
    K, Ks, y, f0, fs0 = problem
    lmax = np.linalg.eigvalsh(K)[-1]
    crit = critical_learning_rate(K, n_outputs=2)
    assert crit == pytest.approx(2 * y.size / lmax, rel=1e-12)
    assert gradient_descent_mse(K, y).critical_learning_rate == pytest.approx(crit, rel=1e-12)
    assert gradient_descent_mse(K, y, method="krylov").critical_learning_rate == pytest.approx(crit, rel=1e-9)

    def explicit_loss(lr, steps=3000):
        f = f0.copy()
        for _ in range(steps):
            f = f - lr / y.size * K @ (f - y)
        return 0.5 * np.mean((f - y) ** 2)

    assert explicit_loss(0.99 * crit) < 1e-6 * 0.5 * np.mean((f0 - y) ** 2)
    assert explicit_loss(1.01 * crit) > 1e6
    # the closed form agrees, and refuses a diverging rate unless asked
    with pytest.raises(ValueError, match="allow_divergence"):
        gradient_descent_mse(K, y, 1.01 * crit, dynamics="discrete")
    with pytest.warns(DivergenceWarning, match="allow_divergence=True"):
        div = gradient_descent_mse(K, y, 1.01 * crit, dynamics="discrete", allow_divergence=True)
    assert div.loss(3000, f0) == pytest.approx(explicit_loss(1.01 * crit), rel=1e-6)
    conv = gradient_descent_mse(K, y, 0.99 * crit, dynamics="discrete")
    assert conv.loss(3000, f0) < 1e-6 * 0.5 * np.mean((f0 - y) ** 2)
    with pytest.warns(DivergenceWarning):
        gradient_descent_mse(K, y, 1.01 * crit)


def test_critical_learning_rate_of_a_full_kernel_uses_the_flattened_spectrum():
    K4, _ = jacobian_kernels(9, 0, 30, k=2, seed=10)
    Kf = K4.transpose(0, 2, 1, 3).reshape(18, 18)
    assert critical_learning_rate(K4) == pytest.approx(2 * 18 / np.linalg.eigvalsh(Kf)[-1], rel=1e-12)


# --- losses ------------------------------------------------------------------------------------------


def test_mse_loss_and_predictor_loss(problem):
    K, Ks, y, f0, fs0 = problem
    rng = np.random.default_rng(11)
    fx = rng.standard_normal((4,) + y.shape)
    expected = [sum((fx[t, i, a] - y[i, a]) ** 2 for i in range(30) for a in range(2)) / (2 * 60) for t in range(4)]
    np.testing.assert_allclose(mse_loss(fx, y), expected, rtol=1e-13)
    assert mse_loss(fx[0], y) == pytest.approx(expected[0], rel=1e-13)
    y_test = rng.standard_normal(fs0.shape)
    pred = gradient_descent_mse(K, y)
    ts = np.array([0.0, 10.0, 100.0])
    tr_loss, te_loss = pred.loss(ts, f0, fs0, Ks, y_test=y_test)
    tr, te = pred(ts, f0, fs0, Ks)
    np.testing.assert_allclose(tr_loss, [0.5 * np.mean((tr[i] - y) ** 2) for i in range(3)], rtol=1e-13)
    np.testing.assert_allclose(te_loss, [0.5 * np.mean((te[i] - y_test) ** 2) for i in range(3)], rtol=1e-13)


# --- auto --------------------------------------------------------------------------------------------


def test_auto_cost_model_choices():
    assert auto_method(4096, 1, 50, 256) == "krylov"  # one column, 50 times, 256 test points
    assert auto_method(4096, 1024, 50, 256) == "eigh"  # many columns: one decomposition serves all
    assert auto_method(100, 1, 50, 256) == "eigh"
    K, _ = jacobian_kernels(20, 0, 30)
    assert gradient_descent_mse(K, np.zeros(20)).method == "eigh"


# --- the trained ensemble ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gp_problem():
    rng = np.random.default_rng(12)
    N, M = 6, 3
    X = rng.standard_normal((N + M, 4))
    nngp, ntk = relu_kernels(X, X)
    K, Ks, Kss = split(nngp, N)
    T, Ts, _ = split(ntk, N)
    y = rng.standard_normal(N)
    return K, Ks, Kss, T, Ts, y


def closed_form_ensemble(K, Ks, Kss, T, Ts, y, t, lr=1.0):
    n = T.shape[0]
    I_E = np.eye(n) - scipy.linalg.expm(-lr * t / y.size * T) if np.isfinite(t) else np.eye(n)
    A = Ts @ np.linalg.solve(T, I_E)
    return A @ y, Kss - A @ Ks.T - Ks @ A.T + A @ K @ A.T


def test_ensemble_matches_monte_carlo_over_linearised_networks(gp_problem):
    K, Ks, Kss, T, Ts, y = gp_problem
    N, M = T.shape[0], Ts.shape[0]
    t = 3.0
    pred = gradient_descent_mse_ensemble(K, T, y, 1.0)
    mean, cov = pred(t, Ks, Ts, Kss, compute_cov=True)
    # Monte Carlo: f_0 ~ N(0, K) jointly on train + test; each linearised network trains in closed form
    rng = np.random.default_rng(13)
    n_samples = 20000
    joint = np.block([[K, Ks.T], [Ks, Kss]])
    L = np.linalg.cholesky(joint + 1e-12 * np.eye(N + M))
    f = rng.standard_normal((n_samples, N + M)) @ L.T
    f0, fs0 = f[:, :N], f[:, N:]
    I_E = np.eye(N) - scipy.linalg.expm(-t / N * T)
    fs_t = fs0 + (y - f0) @ np.linalg.solve(T, I_E).T @ Ts.T
    mc_mean = fs_t.mean(0)
    mc_cov = np.cov(fs_t.T)
    se_mean = np.sqrt(np.diag(mc_cov) / n_samples)
    assert np.all(np.abs(mean - mc_mean) < 4.5 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(mc_cov), np.diag(mc_cov)) + mc_cov**2) / n_samples)
    assert np.all(np.abs(cov - mc_cov) < 4.5 * se_cov)
    assert np.all(np.diag(cov) < 0.99 * np.diag(Kss))  # training reduced the uncertainty visibly


def test_ensemble_matches_dense_formula_and_is_psd(gp_problem):
    K, Ks, Kss, T, Ts, y = gp_problem
    ts = np.array([0.0, 0.5, 5.0, 50.0, np.inf])
    mean, cov = gradient_descent_mse_ensemble(K, T, y, 0.8)(ts, Ks, Ts, Kss, compute_cov=True)
    assert mean.shape == (5, 3) and cov.shape == (5, 3, 3)
    for i, t in enumerate(ts):
        m_ref, c_ref = closed_form_ensemble(K, Ks, Kss, T, Ts, y, t, 0.8)
        assert rel(mean[i], m_ref) < 1e-9 if i else np.all(mean[i] == 0)
        assert rel(cov[i], c_ref) < 1e-9
        np.testing.assert_array_equal(cov[i], cov[i].T)
        assert np.linalg.eigvalsh(cov[i])[0] > -1e-12 * np.abs(cov[i]).max()
    np.testing.assert_allclose(cov[0], Kss, rtol=1e-14)  # before training: the NNGP prior


def test_ensemble_nngp_posterior_and_multi_output(gp_problem):
    K, Ks, Kss, T, Ts, y = gp_problem
    pred = gradient_descent_mse_ensemble(K, T, np.stack([y, 2 * y], 1), diag_reg=1e-3)
    mean, cov = pred(np.inf, Ks, Ts, Kss, compute_cov=True, posterior="nngp")
    Kr = K + 1e-3 * np.mean(np.diag(K)) * np.eye(6)
    assert rel(mean[:, 0], Ks @ np.linalg.solve(Kr, y)) < 1e-10
    assert rel(mean[:, 1], 2 * mean[:, 0]) < 1e-14
    assert rel(cov, Kss - Ks @ np.linalg.solve(Kr, Ks.T)) < 1e-9
    with pytest.raises(ValueError, match="posterior='nngp'"):
        pred(3.0, Ks, Ts, posterior="nngp")
    with pytest.raises(ValueError, match="nngp_test_test"):
        pred(3.0, Ks, Ts, compute_cov=True)


def test_ensemble_ntk_gp_mean_at_infinity(gp_problem):
    K, Ks, Kss, T, Ts, y = gp_problem
    mean = gradient_descent_mse_ensemble(K, T, y)(np.inf, Ks, Ts)
    assert rel(mean, Ts @ np.linalg.solve(T, y)) < 1e-10


# --- bad input ------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(problem):
    K, Ks, y, f0, fs0 = problem
    bad = K.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        gradient_descent_mse(bad, y)
    with pytest.raises(ValueError, match="square"):
        gradient_descent_mse(K[:, :-1], y)
    asym = K.copy()
    asym[0, 1] += 0.1
    with pytest.raises(ValueError, match="not symmetric"):
        gradient_descent_mse(asym, y)
    with pytest.raises(ValueError, match="y_train must have shape"):
        gradient_descent_mse(K, y[:-1])
    neg = K - 2 * np.linalg.eigvalsh(K)[-1] * np.outer(np.ones(30), np.ones(30)) / 30
    with pytest.raises(ValueError, match="not a kernel"):
        gradient_descent_mse(neg, y)
    with pytest.raises(ValueError, match="not a kernel"):
        gradient_descent_mse(neg, y, method="krylov")(1.0, f0)
    with pytest.raises(ValueError, match="'continuous', 'discrete'"):
        gradient_descent_mse(K, y, dynamics="sgd")
    with pytest.raises(ValueError, match="'auto', 'eigh', 'expm', 'krylov'"):
        gradient_descent_mse(K, y, method="lu")
    with pytest.raises(ValueError, match="learning_rate"):
        gradient_descent_mse(K, y, 0.0)
    with pytest.raises(ValueError, match="learning_rate"):
        gradient_descent_mse(K, y, -1.0)
    with pytest.raises(ValueError, match="diag_reg"):
        gradient_descent_mse(K, y, diag_reg=-1e-3)
    pred = gradient_descent_mse(K, y)
    with pytest.raises(ValueError, match="non-negative"):
        pred(-1.0, f0)
    with pytest.raises(ValueError, match="NaN"):
        pred(np.array([1.0, np.nan]), f0)
    with pytest.raises(ValueError, match="fx_train_0 must have shape"):
        pred(1.0, f0[:, :1])
    with pytest.raises(ValueError, match="fx_test_0 must have shape"):
        pred(1.0, f0, fs0[:-1], Ks)
    with pytest.raises(ValueError, match="k_test_train must have shape"):
        pred(1.0, f0, fs0, Ks[:, :-1])
    with pytest.raises(ValueError, match="both fx_test_0"):
        pred(1.0, f0, k_test_train=Ks)
    with pytest.raises(ValueError, match="integer"):
        gradient_descent_mse(K, y, dynamics="discrete")(2.5, f0)
    with pytest.raises(ValueError, match="shape"):
        gradient_descent_mse(np.zeros((3, 3, 2)), y)
    K4, _ = jacobian_kernels(5, 0, 20, k=2)
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        gradient_descent_mse(K4, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="same shape"):
        gradient_descent_mse_ensemble(K, K[:-1, :-1], y)


def test_krylov_warns_when_max_iter_stops_it_early(problem):
    from ntksolve.dynamics import KrylovConvergenceWarning

    K, Ks, y, f0, fs0 = problem
    with pytest.warns(KrylovConvergenceWarning, match="max_iter=3"):
        gradient_descent_mse(K, y, method=Krylov(max_iter=3))(100.0, f0)
    with pytest.raises(ValueError, match="'ntk', 'nngp'"):
        gradient_descent_mse_ensemble(K, K, y)(1.0, Ks, Ks, posterior="bayes")


def test_caller_arrays_are_not_modified_and_read_only_input_works(problem):
    K, Ks, y, f0, fs0 = problem
    arrays = [np.array(a) for a in (K, Ks, y, f0, fs0)]
    for a in arrays:
        a.setflags(write=False)
    copies = [a.copy() for a in arrays]
    for method in METHODS:
        gradient_descent_mse(arrays[0], arrays[2], diag_reg=0.1, method=method)(
            np.array([1.0, np.inf]), arrays[3], arrays[4], arrays[1]
        )
    gradient_descent_mse_ensemble(arrays[0], arrays[0], arrays[2], diag_reg=0.1)(
        1.0, arrays[1], arrays[1], np.eye(9), compute_cov=True
    )
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)
