"""float32 end to end: kernels, closed-form dynamics, an estimator and real training stay float32 and
agree with the same computation in float64 to what float32 rounding explains.

The float64 reference runs on exactly the float32 parameters and inputs (widened), so the only
difference is the arithmetic's rounding: about ``eps32 = 6e-8`` per operation, grown by the depth
and the sums' lengths for the kernels, and by the conditioning of the kernel for the dynamics.
"""

import numpy as np
import pytest

from ntksolve import MLP, empirical_nngp, empirical_ntk, jacobian
from ntksolve.dynamics import MSEPredictor, gradient_descent_mse
from ntksolve.sklearn import NTKRegressor
from ntksolve.training import train_network

EPS32 = float(np.finfo(np.float32).eps)


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    net = MLP((48, 48), n_outputs=2, bias_std=0.2)
    p32 = net.init(5, random_state=0, dtype=np.float32)
    p64 = [(W.astype(np.float64), b.astype(np.float64)) for W, b in p32]
    X = rng.standard_normal((30, 5)).astype(np.float32)
    Xt = rng.standard_normal((9, 5)).astype(np.float32)
    y = rng.standard_normal((30, 2)).astype(np.float32)
    return net, p32, p64, X, Xt, y


def test_kernels_stay_float32(problem):
    net, p32, p64, X, Xt, _ = problem
    X64, Xt64 = X.astype(np.float64), Xt.astype(np.float64)
    cases = [
        (lambda p, A, B: empirical_ntk(net, p, A), False),
        (lambda p, A, B: empirical_ntk(net, p, A, trace=False), False),
        (lambda p, A, B: empirical_ntk(net, p, B, A), True),
        (lambda p, A, B: empirical_ntk(net, p, B, A, trace=False), True),
        (lambda p, A, B: empirical_nngp(net, p, A), False),
        (lambda p, A, B: jacobian(net, p, A), False),
    ]
    for fn, _ in cases:
        k32, k64 = fn(p32, X, Xt), fn(p64, X64, Xt64)
        assert k32.dtype == np.float32 and k64.dtype == np.float64
        # measured 1-2e-7 (2-3 eps32): sums of length <= 48 through two layers; 10x margin
        assert _rel(k32, k64) < 30 * EPS32
    # float64 inputs with float32 parameters: the inputs are rounded, the kernel stays float32
    assert empirical_ntk(net, p32, X64).dtype == np.float32


@pytest.mark.parametrize("method", ["eigh", "krylov", "expm"])
@pytest.mark.parametrize("dynamics", ["continuous", "discrete"])
def test_dynamics_stay_float32(problem, method, dynamics):
    """The full (N, N, k, k) kernel's closed form, train and test outputs and losses, in float32."""
    net, p32, p64, X, Xt, y = problem
    ts = np.array([0.0, 5.0, 50.0, 500.0])
    out = {}
    for p, dt in ((p32, np.float32), (p64, np.float64)):
        A, At = X.astype(dt), Xt.astype(dt)
        K, Ks = empirical_ntk(net, p, A, trace=False), empirical_ntk(net, p, At, A, trace=False)
        f0, ft0 = net.apply(p, A), net.apply(p, At)
        pred = MSEPredictor(K, y.astype(dt), 1.0, dynamics=dynamics, method=method, diag_reg=1e-2)
        tr, te = pred.predict(ts, f0, ft0, Ks)
        lt, le = pred.loss(ts, f0, ft0, Ks, y_test=np.zeros((9, 2), dt))
        out[dt] = tr, te, lt, le
        assert tr.dtype == dt and te.dtype == dt and tr.shape == (4, 30, 2) and te.shape == (4, 9, 2)
    # the ridge of 1e-2 mean(diag) bounds the conditioning; measured below 1e-5 (150 eps32)
    for a, b in zip(out[np.float32], out[np.float64]):
        assert _rel(a, b) < 1e3 * EPS32


def test_gradient_descent_mse_float32_traced(problem):
    net, p32, p64, X, Xt, y = problem
    ts = np.array([1.0, 100.0, np.inf])
    res = {}
    for p, dt in ((p32, np.float32), (p64, np.float64)):
        A, At = X.astype(dt), Xt.astype(dt)
        pred = gradient_descent_mse(empirical_ntk(net, p, A), y.astype(dt), diag_reg=1e-2)
        res[dt] = pred(ts, net.apply(p, A), net.apply(p, At), empirical_ntk(net, p, At, A))
        assert all(r.dtype == dt for r in res[dt])
        assert pred.eigenvalues.dtype == dt
    for a, b in zip(res[np.float32], res[np.float64]):
        assert _rel(a, b) < 1e3 * EPS32


def test_estimator_float32(problem):
    """NTKRegressor(dtype="float32") with the empirical kernel: the kernel and the solve are float32
    (predictions are returned as float64, the estimator's documented output), and agree with float64."""
    _, _, _, X, Xt, y = problem
    kw = dict(hidden_layer_sizes=(48, 48), kernel="empirical", random_state=0, time=50.0)
    r32 = NTKRegressor(dtype="float32", **kw).fit(X, y)
    r64 = NTKRegressor(dtype="float64", **kw).fit(X, y)
    assert r32.predictor_._dtype == np.float32 and r32.params_[0][0].dtype == np.float32
    m32, m64 = r32.predict(Xt), r64.predict(Xt)
    # float64 initialises in float64 and float32 rounds the same draw: a further eps32 per weight
    assert _rel(m32, m64) < 1e3 * EPS32


def test_training_float32(problem):
    """Real gradient descent in float32: parameters and outputs stay float32 and follow float64."""
    net, p32, p64, X, _, y = problem
    r32 = train_network(net, p32, X, y, learning_rate=0.5, steps=40, record_at=[0, 20, 40], track_kernel=False)
    r64 = train_network(
        net,
        p64,
        X.astype(np.float64),
        y.astype(np.float64),
        learning_rate=0.5,
        steps=40,
        record_at=[0, 20, 40],
        track_kernel=False,
    )
    assert r32.fx_train.dtype == np.float32 and all(
        W.dtype == np.float32 and b.dtype == np.float32 for W, b in r32.params
    )
    # 40 steps of products of length <= 48: measured 4e-7 (6 eps32)
    assert _rel(r32.fx_train, r64.fx_train) < 50 * EPS32
    np.testing.assert_allclose(r32.loss_train, r64.loss_train, rtol=100 * EPS32)
