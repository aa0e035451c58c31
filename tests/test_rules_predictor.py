"""The public predictor running momentum, Nesterov, schedules and weight decay through one rule object.

References: the explicitly linearised network stepped in parameter space (tests/reference_linearised.py),
the eigh path against the Lanczos path, and today's plain-descent path (bit for bit).
"""

import numpy as np
import pytest

from ntksolve.dynamics import DivergenceWarning, Eigh, GradientDescent, Krylov, Schedule, gradient_descent_mse
from ntksolve.nets.forward_mode import own_parameter_image
from reference_linearised import Linearised

STEPS = np.array([0, 1, 7, 30, 60])
RULES = [(0.9, False), (0.9, True), (0.5, False)]


@pytest.fixture(scope="module")
def lin():
    lin = Linearised()
    lin.Kf, lin.Ktf = lin.full(lin.K, lin.N), lin.full(lin.Kt, lin.M)
    lin.lmax = np.linalg.eigvalsh(lin.K)[-1]
    return lin


def crit(lin, mu, nesterov):
    return 2 * (1 + mu) * lin.N * lin.k / (((1 + 2 * mu) if nesterov else 1) * lin.lmax)


def predict(lin, rule, method, steps=STEPS, **kw):
    return gradient_descent_mse(lin.Kf, lin.y, dynamics=rule, method=method)(steps, lin.f0, lin.ft0, lin.Ktf, **kw)


@pytest.mark.parametrize("mu,nesterov", RULES)
@pytest.mark.parametrize("cosine", [False, True])
def test_momentum_and_schedules_equal_parameter_space_sgd(lin, mu, nesterov, cosine):
    lr0 = 0.6 * crit(lin, mu, nesterov)
    lr = Schedule.cosine(lr0, 60, min_lr=0.1 * lr0) if cosine else lr0
    rule = GradientDescent(lr, momentum=mu, nesterov=nesterov)
    ref_train, ref_test = lin.sgd(STEPS, lr.rates(60) if cosine else np.full(60, lr0), momentum=mu, nesterov=nesterov)
    train, test = predict(lin, rule, Eigh())
    np.testing.assert_allclose(train, ref_train, rtol=0, atol=1e-10)
    np.testing.assert_allclose(test, ref_test, rtol=0, atol=1e-10)
    ktrain, ktest = predict(lin, rule, Krylov(tol=1e-12))
    np.testing.assert_allclose(ktrain, train, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ktest, test, rtol=0, atol=1e-8)


def test_zero_momentum_and_constant_schedule_are_todays_descent_bit_for_bit(lin):
    lr = 0.7 * crit(lin, 0.0, False)
    ts = np.array([0, 3, 50, np.inf])
    base = gradient_descent_mse(lin.Kf, lin.y, lr, dynamics="discrete", method="eigh")(ts, lin.f0, lin.ft0, lin.Ktf)
    for rule in (GradientDescent(lr, momentum=0.0), GradientDescent(Schedule.constant(lr))):
        assert rule == GradientDescent(lr) and rule.plain
        got = predict(lin, rule, Eigh(), ts)
        assert np.array_equal(got[0], base[0]) and np.array_equal(got[1], base[1])


@pytest.mark.parametrize("mu,nesterov", RULES)
def test_momentum_converges_to_kernel_regression(lin, mu, nesterov):
    rule = GradientDescent(0.5 * crit(lin, mu, nesterov), momentum=mu, nesterov=nesterov)
    train, test = predict(lin, rule, Eigh(), np.array([np.inf, 4000]))
    pinv = np.linalg.pinv(lin.K, rcond=1e-10, hermitian=True)
    r = (lin.y - lin.f0).ravel()
    np.testing.assert_allclose(test[0].ravel(), lin.ft0.ravel() + lin.Kt @ pinv @ r, atol=1e-9)
    np.testing.assert_allclose(train[0], train[1], atol=1e-9)  # 4000 steps have converged


@pytest.mark.parametrize("mu,nesterov", RULES[:2] + [(0.0, False)])
@pytest.mark.parametrize("cosine", [False, True])
def test_weight_decay_equals_parameter_space_sgd(mu, nesterov, cosine):
    lin = Linearised(parameterization="standard", seed=1)
    Kf, Ktf = lin.full(lin.K, lin.N), lin.full(lin.Kt, lin.M)
    lmax, wd = np.linalg.eigvalsh(lin.K)[-1], 0.05
    lr0 = 0.5 * 2 * (1 + mu) * lin.N * lin.k / (((1 + 2 * mu) if nesterov else 1) * lmax)
    lr = Schedule.cosine(lr0, 60, min_lr=0.2 * lr0) if cosine else lr0
    rule = GradientDescent(lr, momentum=mu, nesterov=nesterov, weight_decay=wd)
    jt, jt_test = own_parameter_image(lin.net, lin.params, lin.X), own_parameter_image(lin.net, lin.params, lin.Xt)
    ref = lin.sgd(STEPS, lr.rates(60) if cosine else np.full(60, lr0), momentum=mu, nesterov=nesterov, weight_decay=wd)
    for method in (Eigh(), Krylov(tol=1e-12)):
        p = gradient_descent_mse(Kf, lin.y, dynamics=rule, method=method)
        train, test = p(STEPS, lin.f0, lin.ft0, Ktf, jtheta_train=jt, jtheta_test=jt_test)
        np.testing.assert_allclose(train, ref[0], rtol=0, atol=1e-10)
        np.testing.assert_allclose(test, ref[1], rtol=0, atol=1e-10)
    if not cosine:  # t = inf: the ridge limit, reached by long training
        p = gradient_descent_mse(Kf, lin.y, dynamics=rule, method="eigh")
        a = p(np.array([np.inf, 5000]), lin.f0, lin.ft0, Ktf, jtheta_train=jt, jtheta_test=jt_test)
        np.testing.assert_allclose(a[0][0], a[0][1], atol=1e-9)
        np.testing.assert_allclose(a[1][0], a[1][1], atol=1e-9)


def test_weight_decay_without_parameters_is_a_clear_error(lin):
    p = gradient_descent_mse(lin.Kf, lin.y, dynamics=GradientDescent(0.1, weight_decay=0.01))
    with pytest.raises(ValueError, match="J θ_0.*jtheta_train and jtheta_test.*analytic kernel has no"):
        p(5, lin.f0, lin.ft0, lin.Ktf)
    with pytest.raises(ValueError, match="weight decay only"):
        gradient_descent_mse(lin.Kf, lin.y, dynamics=GradientDescent(0.1))(5, lin.f0, jtheta_train=lin.f0)


def test_schedule_limits_and_divergence(lin):
    c = crit(lin, 0.9, False)
    cos = GradientDescent(Schedule.cosine(0.5 * c, 100), momentum=0.9)
    with pytest.raises(ValueError, match="t = inf has no meaning for the schedule"):
        predict(lin, cos, Eigh(), np.inf)
    short = GradientDescent(Schedule(np.full(10, 0.1)))
    with pytest.raises(ValueError, match="10 rates but 11 steps"):
        predict(lin, short, Eigh(), 11)
    brief = GradientDescent(Schedule(np.r_[np.full(2, 1.2 * c), np.full(198, 0.5 * c)]), momentum=0.9)
    ref = lin.sgd([200], brief.learning_rate.rates(200), momentum=0.9)[0][0]
    np.testing.assert_allclose(predict(lin, brief, Eigh(), 200)[0], ref, atol=1e-10)  # a brief excess is harmless
    hot = GradientDescent(Schedule.cosine(1.5 * c, 400), momentum=0.9)
    p = gradient_descent_mse(lin.Kf, lin.y, dynamics=hot)
    with pytest.raises(ValueError, match="diverges within 200 steps.*allow_divergence"):
        p(200, lin.f0)
    q = gradient_descent_mse(lin.Kf, lin.y, dynamics=hot, allow_divergence=True)
    with pytest.warns(DivergenceWarning, match="diverges within 200 steps"):
        q(200, lin.f0)
    with pytest.raises(ValueError, match="critical learning rate .* of heavy-ball momentum"):
        gradient_descent_mse(lin.Kf, lin.y, dynamics=GradientDescent(1.01 * c, momentum=0.9))


def test_rule_values_and_bad_input():
    rule = GradientDescent(Schedule.cosine(0.5, 10), momentum=0.9, nesterov=True)
    assert rule == GradientDescent(Schedule.cosine(0.5, 10), momentum=0.9, nesterov=True) != GradientDescent(0.5)
    assert "momentum=0.9" in repr(rule) and hash(rule) == hash(
        GradientDescent(Schedule.cosine(0.5, 10), momentum=0.9, nesterov=True)
    )
    with pytest.raises(ValueError, match="momentum"):
        GradientDescent(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        GradientDescent(0.1, nesterov=True)
    with pytest.raises(TypeError, match="Schedule"):
        GradientDescent(np.ones(3))
    with pytest.raises(ValueError, match="weight_decay"):
        GradientDescent(0.1, weight_decay=-1.0)
    with pytest.raises(NotImplementedError, match="expm"):
        gradient_descent_mse(np.eye(3), np.ones(3), dynamics=GradientDescent(0.1, momentum=0.5), method="expm")(
            2, np.zeros(3)
        )


@pytest.mark.parametrize("name", ["adam", "AdamW", "rmsprop"])
def test_adaptive_rules_have_no_function_space_twin(name):
    with pytest.raises(ValueError, match="no function-space.*train the network"):
        gradient_descent_mse(np.eye(3), np.ones(3), dynamics=name)


@pytest.mark.parametrize(
    "rule",
    [
        GradientDescent(0.1, momentum=0.5),
        GradientDescent(0.1, weight_decay=0.01),
        GradientDescent(Schedule.cosine(0.1, 10)),
    ],
    ids=["momentum", "weight-decay", "schedule"],
)
def test_expm_refuses_a_rule_it_does_not_cover_before_any_decomposition(rule, monkeypatch):
    from ntksolve.dynamics import MSEPredictor, solvers

    def no_decomposition(self):
        raise AssertionError("decomposed before refusing")

    monkeypatch.setattr(solvers.Problem, "decompose", no_decomposition)
    K = np.eye(3) + 0.1
    with pytest.raises(NotImplementedError, match="method='expm'.*use method='eigh'"):
        MSEPredictor(K, np.ones(3), dynamics=rule, method="expm")
    # the rules it covers still build and agree with the eigendecomposition
    monkeypatch.undo()
    for ok in ("discrete", "continuous"):
        a = MSEPredictor(K, np.ones(3), learning_rate=0.1, dynamics=ok, method="expm").predict(
            np.array([3.0]), np.zeros(3)
        )
        b = MSEPredictor(K, np.ones(3), learning_rate=0.1, dynamics=ok, method="eigh").predict(
            np.array([3.0]), np.zeros(3)
        )
        assert np.allclose(a, b, rtol=1e-12, atol=1e-14)
