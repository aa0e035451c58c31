"""Kernel operators, training rules, solver objects, other ridges and leave-one-out.

The product-only path (a kernel known by ``matmat``) is held to the dense eigh path at 1e-8, with a
pure-numpy operator class defined here (no Dask); rules are checked against explicit recurrences;
leave-one-out against explicit refits without the point.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from sklearn.base import clone

import ntksolve
from ntksolve.dynamics import (
    ConjugateGradient,
    DenseKernel,
    DivergenceWarning,
    Expm,
    GradientDescent,
    GradientFlow,
    Krylov,
    Nystrom,
    critical_learning_rate,
    gradient_descent_mse,
)
from ntksolve.dynamics import spectral


class CountingOperator:
    """A symmetric kernel seen only through ``matmat`` and ``diagonal`` (as a tiled kernel is)."""

    def __init__(self, K):
        self._K = np.array(K, dtype=np.float64)
        self.shape = self._K.shape
        self.dtype = np.dtype(np.float64)
        self.products = 0

    def matmat(self, V):
        self.products += 1
        return self._K @ V

    def diagonal(self):
        return np.diagonal(self._K).copy()


class CrossOperator:
    """The test–train kernel as an operator (``shape`` and ``matmat`` only)."""

    def __init__(self, Ks):
        self._K = Ks
        self.shape = Ks.shape

    def matmat(self, V):
        return self._K @ V


def rel(a, b):
    return np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b))


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(21)
    N, M, P = 40, 7, 120
    J = rng.standard_normal((N + M, P))
    K = J @ J.T / P
    y = rng.standard_normal((N, 2))
    f0, fs0 = 0.2 * rng.standard_normal((N, 2)), 0.2 * rng.standard_normal((M, 2))
    return K[:N, :N], K[N:, :N], y, f0, fs0


@pytest.fixture(scope="module")
def singular():
    """17 inputs, 7 repeated (rank 10), targets inconsistent on the repeats."""
    rng = np.random.default_rng(22)
    J = rng.standard_normal((10, 40))
    J = np.vstack([J, J[:4], J[:3]])
    Jt = rng.standard_normal((5, 40))
    return (
        J @ J.T / 40,
        Jt @ J.T / 40,
        rng.standard_normal(17),
        0.1 * rng.standard_normal(17),
        0.1 * rng.standard_normal(5),
    )


# --- the operator path against the dense path ----------------------------------------------------------


@pytest.mark.parametrize("wrap", ["dense_kernel", "numpy_operator"])
@pytest.mark.parametrize("reg", [0.0, 1e-2])
def test_operator_krylov_matches_dense_eigh(problem, wrap, reg):
    K, Ks, y, f0, fs0 = problem
    ts = np.array([0.0, 0.5, 7.0, 300.0, np.inf])
    ref = gradient_descent_mse(K, y, 0.8, diag_reg=reg, method="eigh")(ts, f0, fs0, Ks)
    op = DenseKernel(K) if wrap == "dense_kernel" else CountingOperator(K)
    pred = gradient_descent_mse(op, y, 0.8, diag_reg=reg, method=Krylov(tol=1e-12))
    tr, te = pred(ts, f0, fs0, CrossOperator(Ks))
    assert rel(tr, ref[0]) < 1e-8 and rel(te, ref[1]) < 1e-8
    assert pred.method == "krylov"
    # the same with the cross kernel as an array, and the auto solver (krylov for operators)
    tr2, te2 = gradient_descent_mse(op, y, 0.8, diag_reg=reg)(ts, f0, fs0, Ks)
    assert rel(tr2, ref[0]) < 1e-8 and rel(te2, ref[1]) < 1e-8


@pytest.mark.parametrize("preconditioner", [None, Nystrom(n_landmarks=12)])
def test_operator_cg_matches_dense_kernel_regression(problem, preconditioner):
    K, Ks, y, f0, fs0 = problem
    reg = 1e-3
    Kr = K + reg * np.mean(np.diag(K)) * np.eye(K.shape[0])
    expected = fs0 + Ks @ np.linalg.solve(Kr, y - f0)
    op = CountingOperator(K)
    solver = ConjugateGradient(tol=1e-13, preconditioner=preconditioner)
    tr, te = gradient_descent_mse(op, y, diag_reg=reg, method=solver)(np.inf, f0, fs0, CrossOperator(Ks))
    assert rel(te, expected) < 1e-8
    assert rel(tr, y) < 1e-8  # an invertible kernel fits the train set
    # the same solver on the dense array
    tr_d, te_d = gradient_descent_mse(K, y, diag_reg=reg, method=solver)(None, f0, fs0, Ks)
    assert rel(te_d, expected) < 1e-8


@pytest.mark.parametrize("method", [ConjugateGradient(tol=1e-13), Krylov(tol=1e-12)])
def test_singular_operator_at_infinity_is_the_pseudo_inverse(singular, method):
    K, Ks, y, f0, fs0 = singular
    assert np.linalg.matrix_rank(K) == 10
    pinv = np.linalg.pinv(K, rcond=1e-10, hermitian=True)
    expected_test = fs0 + Ks @ pinv @ (y - f0)
    expected_train = f0 + K @ pinv @ (y - f0)
    dense = gradient_descent_mse(K, y, method="eigh")(np.inf, f0, fs0, Ks)
    assert rel(dense[1], expected_test) < 1e-10  # the in-memory reference
    tr, te = gradient_descent_mse(CountingOperator(K), y, method=method)(np.inf, f0, fs0, Ks)
    assert np.all(np.isfinite(te))
    assert rel(te, expected_test) < 1e-8 and rel(tr, expected_train) < 1e-8


def test_one_divergence_check_for_operators(problem):
    K, Ks, y, f0, fs0 = problem
    crit = 2 * y.size / np.linalg.eigvalsh(K)[-1]
    op = CountingOperator(K)
    assert critical_learning_rate(op, n_outputs=2) == pytest.approx(crit, rel=1e-9)
    assert gradient_descent_mse(op, y, method=Krylov()).critical_learning_rate == pytest.approx(crit, rel=1e-9)
    for kernel in (K, op):
        with pytest.raises(ValueError, match="allow_divergence"):
            gradient_descent_mse(kernel, y, 3 * crit, dynamics="discrete", method=Krylov())
    with pytest.warns(DivergenceWarning, match="allow_divergence=True"):
        pred = gradient_descent_mse(
            op, y, 3 * crit, dynamics="discrete", method=Krylov(tol=1e-13), allow_divergence=True
        )
    f = f0.copy()
    for _ in range(12):  # explicit gradient descent: the top mode grows by |1 - 3·2| = 5 per step
        f = f - 3 * crit / y.size * K @ (f - y)
    assert rel(pred(12, f0), f) < 1e-8
    assert np.abs(f).max() > 1e6
    with pytest.raises(ValueError, match="no limit"):
        pred(np.inf, f0)
    with pytest.warns(DivergenceWarning, match="still converges"):  # gradient flow: a warning, at the call
        gradient_descent_mse(op, y, 3 * crit, method=Krylov())(1.0, f0)


def test_dense_only_methods_and_cg_times_are_refused(problem):
    K, Ks, y, f0, fs0 = problem
    for method in ("eigh", Expm()):
        with pytest.raises(TypeError, match="Krylov.*ConjugateGradient"):
            gradient_descent_mse(DenseKernel(K), y, method=method)
    with pytest.raises(ValueError, match="t = inf only"):
        gradient_descent_mse(K, y, method=ConjugateGradient())(np.array([1.0, np.inf]), f0)
    with pytest.raises(ValueError, match=r"shape \(M, 40\)"):
        gradient_descent_mse(DenseKernel(K), y)(1.0, f0, fs0, CrossOperator(Ks[:, :-1]))
    with pytest.raises(TypeError, match="leave-one-out|array"):
        gradient_descent_mse(DenseKernel(K), y).loo_residuals(f0)


# --- rules -----------------------------------------------------------------------------------------------


def test_rule_objects_are_immutable_values():
    rule = GradientDescent(learning_rate=0.25)
    assert repr(rule) == "GradientDescent(learning_rate=0.25)"
    assert rule == GradientDescent(0.25) and rule != GradientFlow(0.25) and rule != GradientDescent(0.5)
    assert pickle.loads(pickle.dumps(rule)) == rule and copy.deepcopy(rule) == rule
    with pytest.raises(AttributeError):
        rule.learning_rate = 1.0
    with pytest.raises(ValueError, match="learning_rate"):
        GradientFlow(0.0)
    with pytest.raises(TypeError, match="learning_rate"):
        GradientDescent("fast")
    assert pickle.loads(pickle.dumps(Krylov(tol=1e-8, max_iter=40))) == Krylov(1e-8, 40)
    est = clone(ntksolve.NTKRegressor(method=Krylov(tol=1e-8)))
    assert est.get_params()["method"] == Krylov(tol=1e-8)
    with pytest.raises(ValueError, match="tol"):
        Krylov(tol=2.0)
    with pytest.raises(TypeError, match="max_iter"):
        Krylov(max_iter=3.5)


def test_rule_factors_equal_explicit_recurrences():
    lam = np.array([0.0, 1e-9, 0.3, 2.0, 7.9])
    size, lr = 4, 2.0
    ts = np.arange(6.0)
    p = GradientDescent(lr).residual_factor(lam, ts, size)
    r = np.ones_like(lam)
    for t in range(6):  # r ← r − η/(Nk) λ r, mode by mode
        np.testing.assert_allclose(p[t], r, rtol=1e-13, atol=0)
        r = r - lr / size * lam * r
    np.testing.assert_allclose(
        GradientFlow(lr).residual_factor(lam, ts, size), np.exp(-lr / size * np.outer(ts, lam)), rtol=1e-14
    )
    null = lam == 0.0
    for rule in (GradientFlow(lr), GradientDescent(lr)):
        g, h = rule.mode_coefficients(lam, null, ts, size)
        np.testing.assert_allclose(g[:, ~null], 1 - rule.residual_factor(lam, ts, size)[:, ~null], atol=1e-12)
        assert np.all(g[:, null] == 0) and np.all(h[:, null] == 0)
        # λ → 0: h = (1 − p)/λ → η t/(Nk), without cancellation at λ = 1e-9
        np.testing.assert_allclose(h[:, 1], lr * ts / size, rtol=1e-8)
    with pytest.raises(ValueError, match="integer"):
        GradientDescent().check_times([1.0, 2.5])
    for rule in (GradientFlow(), GradientDescent()):
        ts_none, scalar = rule.check_times(None)
        assert scalar and ts_none.tolist() == [np.inf]


def test_dynamics_names_and_rule_objects_are_the_same_training(problem):
    K, Ks, y, f0, fs0 = problem
    a = gradient_descent_mse(K, y, 0.6, dynamics="discrete")(np.arange(5), f0, fs0, Ks)
    b = gradient_descent_mse(K, y, dynamics=GradientDescent(0.6))(np.arange(5), f0, fs0, Ks)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    pred = gradient_descent_mse(K, y, dynamics=GradientFlow(0.6))
    assert pred.learning_rate == 0.6 and pred.rule == GradientFlow(0.6) and pred.dynamics == "continuous"
    np.testing.assert_array_equal(pred(None, f0), pred(np.inf, f0))
    with pytest.raises(TypeError, match="carries its own learning rate"):
        gradient_descent_mse(K, y, 0.6, dynamics=GradientFlow(0.6))
    with pytest.raises(TypeError, match="dynamics"):
        gradient_descent_mse(K, y, dynamics=3)
    with pytest.raises(TypeError, match="method"):
        gradient_descent_mse(K, y, method=None)
    with pytest.raises(TypeError, match="learning_rate"):
        gradient_descent_mse(K, y, "1.0")
    with pytest.raises(TypeError, match="numeric"):
        gradient_descent_mse(K.astype(str), y)


# --- auto decides per call ---------------------------------------------------------------------------------


def test_auto_decides_at_prediction_from_the_call_sizes():
    rng = np.random.default_rng(23)
    n = 1000  # above AUTO_MIN_KRYLOV_SIZE: nothing is decomposed at construction
    J = rng.standard_normal((n, 60))
    K = J @ J.T / 60 + 0.5 * np.eye(n)
    Y = rng.standard_normal((n, 100))
    pred = gradient_descent_mse(K, Y[:, 0])
    assert pred.method == "auto" and pred.eigenvalues is None
    few = pred(5.0, np.zeros(n))
    assert pred.method == "krylov" and pred.eigenvalues is None  # one time, one column: products win
    many = gradient_descent_mse(K, Y)
    out = many(np.logspace(0, 2, 10), np.zeros((n, 100)))
    assert many.method == "eigh" and many.eigenvalues is not None  # 100 columns x 10 times: decompose
    # the cached decomposition is reused even for one time; s = η t/(Nk): t = 500 here is t = 5 above
    again = many(500.0, np.zeros((n, 100)))
    assert many.method == "eigh"
    assert rel(few, again[:, 0]) < 1e-8  # krylov and eigh, two methods
    assert out.shape == (10, n, 100)


# --- other ridges, leave-one-out -----------------------------------------------------------------------


def test_with_diag_reg_shares_the_decomposition(problem, monkeypatch):
    K, Ks, y, f0, fs0 = problem
    ts = np.array([0.0, 3.0, 80.0, np.inf])
    base = gradient_descent_mse(K, y, 0.9, diag_reg=1e-2, method="eigh")
    refs = {
        reg: gradient_descent_mse(K, y, 0.9, diag_reg=reg, method="eigh")(ts, f0, fs0, Ks) for reg in (0.0, 1e-3, 0.3)
    }

    def no_more(*args, **kwargs):
        raise AssertionError("decomposed again")

    monkeypatch.setattr(spectral.scipy.linalg, "eigh", no_more)
    for reg, ref in refs.items():
        other = base.with_diag_reg(reg)
        assert other.diag_reg == reg
        tr, te = other(ts, f0, fs0, Ks)
        assert rel(tr, ref[0]) < 1e-10 and rel(te, ref[1]) < 1e-10
    assert base.diag_reg == 1e-2  # the original is untouched


def _refit_loo(K, y, f0, reg_abs, k=None):
    """y_i − f^{(−i)}(x_i) by refitting kernel regression without point i (explicit solves)."""
    N = y.shape[0]
    out = np.empty_like(y)
    for i in range(N):
        keep = np.arange(N) != i
        if k is None:
            Kr = K[np.ix_(keep, keep)] + reg_abs * np.eye(N - 1)
            out[i] = y[i] - (f0[i] + K[i, keep] @ np.linalg.solve(Kr, y[keep] - f0[keep]))
        else:
            Kf = K.transpose(0, 2, 1, 3)
            Kkk = Kf[np.ix_(keep, range(k), keep, range(k))].reshape((N - 1) * k, (N - 1) * k)
            Kik = Kf[i][:, keep].reshape(k, (N - 1) * k)
            alpha = np.linalg.solve(Kkk + reg_abs * np.eye((N - 1) * k), (y[keep] - f0[keep]).ravel())
            out[i] = y[i] - (f0[i] + Kik @ alpha)
    return out


def test_loo_residuals_equal_explicit_refits(problem):
    K, Ks, y, f0, fs0 = problem
    reg = 0.05
    pred = gradient_descent_mse(K, y, diag_reg=reg)
    expected = _refit_loo(K, y, f0, reg * np.mean(np.diag(K)))
    assert rel(pred.loo_residuals(f0), expected) < 1e-10
    other = pred.with_diag_reg(0.2)  # a ridge path from one decomposition
    assert rel(other.loo_residuals(f0), _refit_loo(K, y, f0, 0.2 * np.mean(np.diag(K)))) < 1e-10
    # a full (N, N, k, k) kernel: the k × k diagonal blocks of the inverse
    rng = np.random.default_rng(24)
    J = rng.standard_normal((9, 2, 30))
    K4 = np.einsum("iap,jbp->ijab", J, J) / 30
    y4, f4 = rng.standard_normal((9, 2)), rng.standard_normal((9, 2))
    mean_diag = np.mean(np.einsum("iiaa->ia", K4))
    loo4 = gradient_descent_mse(K4, y4, diag_reg=0.1).loo_residuals(f4)
    assert rel(loo4, _refit_loo(K4, y4, f4, 0.1 * mean_diag, k=2)) < 1e-10


def test_loo_refuses_a_singular_kernel(singular):
    K, _, y, f0, _ = singular
    with pytest.raises(ValueError, match="diag_reg > 0"):
        gradient_descent_mse(K, y).loo_residuals(f0)
    loo = gradient_descent_mse(K, y, diag_reg=1e-3).loo_residuals(f0)
    assert rel(loo, _refit_loo(K, y, f0, 1e-3 * np.mean(np.diag(K)))) < 1e-9
