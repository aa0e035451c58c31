"""A solver's refusal of a rule (or of finite times) fires when the predictor is built, or at the
start of an estimator's ``fit``: before any product with the kernel, before any kernel is computed
(counted by a kernel that records its calls); what is accepted still matches a second method."""

import numpy as np
import pytest

import ntksolve
from ntksolve import (
    ConjugateGradient,
    Expm,
    GradientDescent,
    NTKClassifier,
    NTKClassifierCV,
    NTKRegressor,
    NTKRegressorCV,
    Schedule,
)
from ntksolve.dynamics import DenseKernel, MSEPredictor


class _CountingKernel:
    """A kernel operator that counts every use (products, diagonal)."""

    def __init__(self, K):
        self._op, self.calls = DenseKernel(K), 0
        self.shape, self.dtype = self._op.shape, self._op.dtype

    def matmat(self, V):
        self.calls += 1
        return self._op.matmat(V)

    def diagonal(self):
        self.calls += 1
        return self._op.diagonal()


def _problem(n=12, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n))
    return A @ A.T / n + np.eye(n), rng.standard_normal(n)


@pytest.mark.parametrize(
    "rule", [GradientDescent(0.1, weight_decay=0.05), GradientDescent(Schedule.cosine(0.1, 10))], ids=repr
)
def test_conjugate_gradients_refuse_the_rule_before_any_product(rule):
    K, y = _problem()
    op = _CountingKernel(K)
    with pytest.raises(ValueError, match="ConjugateGradient solves kernel regression.*does not reach"):
        MSEPredictor(op, y, dynamics=rule, method=ConjugateGradient())
    assert op.calls == 0
    # what it accepts, against the eigendecomposition
    ok = MSEPredictor(_CountingKernel(K), y, dynamics=GradientDescent(0.1), method=ConjugateGradient(tol=1e-12))
    ref = ntksolve.gradient_descent_mse(K, y, dynamics=GradientDescent(0.1), method="eigh")
    np.testing.assert_allclose(ok(np.inf, np.zeros_like(y)), ref(np.inf, np.zeros_like(y)), rtol=1e-9)
    with pytest.raises(ValueError, match="t = inf only, not t=5.0"):
        ok(np.array([np.inf, 5.0]), np.zeros_like(y))


@pytest.fixture
def kernel_calls(monkeypatch):
    """How many kernels the estimators computed (train or test, full or diagonal)."""
    calls = []
    base = ntksolve.sklearn.base._NTKBase
    for name in ("_kernel", "_kernel_diagonal"):
        original = getattr(base, name)

        def counting(self, *args, _original=original, **kwargs):
            calls.append(name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(base, name, counting)
    return calls


def _data(n=20):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, 3))
    return X, np.sin(X[:, 0])


@pytest.mark.parametrize(
    "make, error, match",
    [
        (
            lambda: NTKRegressor(
                kernel="empirical",
                hidden_layer_sizes=(16,),
                dynamics=GradientDescent(0.1, weight_decay=0.05),
                method=ConjugateGradient(),
            ),
            ValueError,
            "ConjugateGradient solves kernel regression",
        ),
        (lambda: NTKRegressor(method=ConjugateGradient(), time=10.0), ValueError, "t = inf only, not time=10.0"),
        (lambda: NTKClassifier(method=ConjugateGradient(), time=10.0), ValueError, "t = inf only, not time=10.0"),
        (
            lambda: NTKRegressor(method=Expm(), dynamics=GradientDescent(0.1, momentum=0.9), time=5),
            NotImplementedError,
            "method='expm'",
        ),
        (lambda: NTKRegressorCV(method=ConjugateGradient()), ValueError, "times=None makes a grid of finite times"),
        (lambda: NTKRegressorCV(method=ConjugateGradient(), times=[3.0, np.inf]), ValueError, "not times=3.0"),
        (
            lambda: NTKRegressorCV(
                kernel="empirical", hidden_layer_sizes=(16,), cv="loo", dynamics=GradientDescent(0.1, weight_decay=0.05)
            ),
            ValueError,
            "cv='loo' is the leave-one-out of kernel regression",
        ),
        (lambda: NTKRegressorCV(cv="loo", times=[5.0, np.inf]), ValueError, "cv='loo' is the exact leave-one-out"),
        (lambda: NTKClassifierCV(cv="loo", times=[5.0]), ValueError, "cv='loo' is the exact leave-one-out"),
    ],
)
def test_estimators_refuse_before_any_kernel(make, error, match, kernel_calls):
    X, y = _data()
    est = make()
    with pytest.raises(error, match=match):
        est.fit(X, (y > 0).astype(int) if "Classifier" in type(est).__name__ else y)
    assert kernel_calls == []


def test_what_conjugate_gradients_accept_in_a_search_matches_eigh(kernel_calls):
    X, y = _data()
    kw = dict(hidden_layer_sizes=(512,), diag_regs=(0.1, 1.0), times=[np.inf], cv=3)
    cg = NTKRegressorCV(method=ConjugateGradient(tol=1e-12, max_iter=100), **kw).fit(X, y)
    assert kernel_calls  # the counter sees the kernels of an accepted fit
    eig = NTKRegressorCV(method="eigh", **kw).fit(X, y)
    np.testing.assert_allclose(cg.mse_path_, eig.mse_path_, rtol=1e-7)
    assert cg.diag_reg_ == eig.diag_reg_


def test_a_tiled_fit_takes_the_method_given():
    """``chunks=`` solved with its default solver whatever ``method`` said: ``'eigh'`` was not refused,
    a ``Krylov``'s options were dropped. Now: refused up front; the options hold (a Krylov capped at
    one step warns and misses, the same one at its tolerance matches the in-memory Krylov solve)."""
    pytest.importorskip("dask")
    from ntksolve import Krylov
    from ntksolve.dynamics import KrylovConvergenceWarning

    X, y = _data(24)
    kw = dict(hidden_layer_sizes=(512,), time=5.0, scheduler="sync")
    for method in ("eigh", Expm()):
        with pytest.raises(ValueError, match="decomposes the train kernel in memory"):
            NTKRegressor(chunks=8, method=method, **kw).fit(X, y)
    tiled = NTKRegressor(chunks=8, method=Krylov(tol=1e-12), **kw).fit(X, y)
    memory = NTKRegressor(method="eigh", hidden_layer_sizes=(512,), time=5.0).fit(X, y)
    np.testing.assert_allclose(tiled.predict(X), memory.predict(X), rtol=1e-9, atol=1e-12)
    with pytest.warns(KrylovConvergenceWarning):
        NTKRegressor(chunks=8, method=Krylov(tol=1e-12, max_iter=1), **kw).fit(X, y)


def test_a_float32_kernel_passed_as_float64_to_the_nystrom_preconditioner_is_named():
    # a float32 empirical NTK is positive semi-definite only to float32 rounding; as a float64 array
    # nothing tells its precision, the float64 shift leaves its landmarks' block indefinite, and the
    # Cholesky's bare LinAlgError is replaced by an error naming the cause and the fix
    from ntksolve.dynamics import ConjugateGradient, Nystrom, gradient_descent_mse

    rng = np.random.default_rng(0)
    X = rng.standard_normal((37, 3))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2
    net = ntksolve.MLP((16,), activation="relu")
    params = net.init(n_features=3, random_state=0, dtype=np.float32)
    K = ntksolve.empirical_ntk(net, params, X.astype(np.float32)).astype(np.float64)
    assert np.linalg.eigvalsh(K)[0] < 0
    cg = ConjugateGradient(tol=1e-10, preconditioner=Nystrom())
    with pytest.raises(ValueError, match="not positive semi-definite.*pass it in float32"):
        gradient_descent_mse(K, y, diag_reg=1e-2, method=cg).predict(np.inf, np.zeros(37), np.zeros(37), np.eye(37))
    gradient_descent_mse(K.astype(np.float32), y, diag_reg=1e-2, method=cg)  # the fix it names
