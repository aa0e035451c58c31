"""Per-mode factors of momentum, Nesterov, schedules and weight decay; the units mapping; J θ_0.

Every closed form and recurrence is checked against an independent computation: parameter-space
SGD on an explicitly linearised network (``tests/reference_linearised.py``), explicit 2×2 matrix
powers, sums written out by hand, ``torch.optim`` where torch is installed.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import ntksolve
from ntksolve.dynamics.momentum_closed_form import constant_rate_modes
from ntksolve.dynamics.schedules import (
    Schedule,
    _scheduled_modes,
    mode_factors,
    weight_decay_mode_factors,
)
from ntksolve.dynamics.stability import critical_rate, schedule_stability
from ntksolve.dynamics.rules import GradientDescent
from ntksolve.dynamics.spectral import null_mask
from ntksolve.dynamics.units import to_ntksolve_learning_rate
from ntksolve.nets.forward_mode import jacobian_vector_product, own_parameter_image, trained_parameters
from reference_linearised import Linearised, trained_flat

RULES = [(0.0, False), (0.5, False), (0.9, False), (0.5, True), (0.9, True)]
STEPS = np.array([0, 1, 2, 5, 17, 60])
TORCH_REASON = "needs the torch extra: pip install 'ntksolve[torch]'"


def schedules(lr, total=60):
    return {
        "constant": Schedule.constant(lr),
        "step": Schedule.step(lr, step_size=7, gamma=0.5),
        "exponential": Schedule.exponential(lr, 0.97),
        "cosine": Schedule.cosine(lr, total_steps=total, min_lr=0.1 * lr),
        "warmup_cosine": Schedule.warmup_cosine(lr, total, 10, start_factor=0.1, min_lr=0.01 * lr),
        "warmup_linear": Schedule.warmup_linear(lr, total, 10, start_factor=0.2),
        "array": Schedule(lr * np.random.default_rng(3).uniform(0.2, 1.0, total)),
    }


@pytest.fixture(scope="module")
def lin():
    return Linearised()


def spectral_prediction(lin, factors):
    """Assemble train/test outputs from mode factors (the solvers' eigh path, written out)."""
    lam, V = scipy.linalg.eigh(lin.K)
    R = V.T @ (lin.y - lin.f0).ravel()
    train = lin.f0.ravel() + (factors.gain * R) @ V.T
    test = lin.ft0.ravel() + (factors.test * R) @ V.T @ lin.Kt.T
    return train.reshape(-1, lin.N, lin.k), test.reshape(-1, lin.M, lin.k)


def eig(lin):
    lam, _ = scipy.linalg.eigh(lin.K)
    lam = np.maximum(lam, 0.0)
    return lam, null_mask(lam, lam.size, np.float64, "K")


@pytest.mark.parametrize("mu,nesterov", RULES)
@pytest.mark.parametrize("kind", list(schedules(1.0)))
def test_mode_factors_equal_parameter_space_sgd(lin, mu, nesterov, kind):
    lam, null = eig(lin)
    assert null.sum() >= lin.k  # the repeated input
    size = lin.N * lin.k
    lr = 0.6 * critical_rate(lam[-1], size=size, momentum=mu, nesterov=nesterov)
    sched = schedules(lr)[kind]
    fac = mode_factors(lam, STEPS, size=size, learning_rate=sched, momentum=mu, nesterov=nesterov, null=null)
    train, test = spectral_prediction(lin, fac)
    ref_train, ref_test = lin.sgd(STEPS, sched.rates(60), momentum=mu, nesterov=nesterov)
    np.testing.assert_allclose(train, ref_train, rtol=0, atol=1e-10)
    np.testing.assert_allclose(test, ref_test, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fac.gain, 1.0 - fac.residual, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mu,nesterov", RULES)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_weight_decay_factors_equal_parameter_space_sgd(mu, nesterov, parameterization):
    lin = Linearised(parameterization=parameterization, seed=1)
    lam, V = scipy.linalg.eigh(lin.K)
    lam = np.maximum(lam, 0.0)
    null = null_mask(lam, lam.size, np.float64, "K")
    size, wd = lin.N * lin.k, 0.05
    lr = 0.5 * critical_rate(lam[-1], size=size, momentum=mu, nesterov=nesterov)
    sched = Schedule.cosine(lr, 60, min_lr=0.2 * lr)
    fac = weight_decay_mode_factors(
        lam, STEPS, size=size, learning_rate=sched, weight_decay=wd, momentum=mu, nesterov=nesterov, null=null
    )
    img = own_parameter_image(lin.net, lin.params, lin.X).ravel()
    img_t = own_parameter_image(lin.net, lin.params, lin.Xt).ravel()
    R0, B = V.T @ (lin.f0 - lin.y).ravel(), V.T @ img
    Q = V.T @ (lin.y - lin.f0).ravel() + B
    train = lin.y.ravel() + (fac.residual * R0 + fac.forcing * (R0 - B)) @ V.T
    test = lin.ft0.ravel() - (1 - fac.free)[:, None] * img_t + (fac.test * Q - fac.image * B) @ V.T @ lin.Kt.T
    ref_train, ref_test = lin.sgd(STEPS, sched.rates(60), momentum=mu, nesterov=nesterov, weight_decay=wd)
    np.testing.assert_allclose(train.reshape(ref_train.shape), ref_train, rtol=0, atol=1e-10)
    np.testing.assert_allclose(test.reshape(ref_test.shape), ref_test, rtol=0, atol=1e-10)


@pytest.mark.parametrize("mu,nesterov", RULES)
def test_mode_factors_equal_torch_sgd(lin, mu, nesterov):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    lam, null = eig(lin)
    size = lin.N * lin.k
    lr = 0.6 * critical_rate(lam[-1], size=size, momentum=mu, nesterov=nesterov)
    fac = mode_factors(
        lam, STEPS, size=size, learning_rate=Schedule.cosine(lr, 60), momentum=mu, nesterov=nesterov, null=null
    )
    train, test = spectral_prediction(lin, fac)
    J, Jt = torch.tensor(lin.J), torch.tensor(lin.Jt)
    theta0 = torch.tensor(lin.theta0)
    theta = torch.nn.Parameter(theta0.clone())
    f0, y = torch.tensor(lin.f0.ravel()), torch.tensor(lin.y.ravel())
    opt = torch.optim.SGD([theta], lr=lr, momentum=mu, nesterov=nesterov)
    sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=60)
    got_tr, got_te = [], []
    for s in range(61):
        with torch.no_grad():
            if s in STEPS:
                got_tr.append((f0 + J @ (theta - theta0)).numpy().copy())
                got_te.append((torch.tensor(lin.ft0.ravel()) + Jt @ (theta - theta0)).numpy().copy())
        if s == 60:
            break
        opt.zero_grad()
        loss = ((f0 + J @ (theta - theta0) - y) ** 2).sum() / (2 * size)
        loss.backward()
        opt.step()
        sch.step()
    np.testing.assert_allclose(train.reshape(len(STEPS), -1), np.array(got_tr), rtol=0, atol=1e-10)
    np.testing.assert_allclose(test.reshape(len(STEPS), -1), np.array(got_te), rtol=0, atol=1e-10)


# --- closed form against the loop and against matrix powers -------------------------------------------


def grid(mu, nesterov, eta):
    crit = 2 * (1 + mu) / ((1 + 2 * mu) if nesterov else 1) / eta
    dd = [(1 - np.sqrt(mu)) ** 2, (1 + np.sqrt(mu)) ** 2, ((1 - mu) / (1 + mu)) ** 2] if mu else [1.0]
    # up to 0.99 of critical: closer, the loop's own rounding (~ s ε per step of a barely damped
    # oscillation) exceeds 1e-12 by step 1000; test_closed_form_near_critical covers that range
    pts = [0.0, 1e-12, 1e-8, 1e-4] + [v / eta for v in dd if v / eta < 0.99 * crit] + [1.0 / eta, 0.99 * crit]
    return np.sort(np.concatenate([pts, np.linspace(0, 0.99 * crit, 150)[1:-1]]))


@pytest.mark.parametrize("mu,nesterov", [(0.0, False)] + [(m, n) for m in (0.3, 0.9, 0.99) for n in (False, True)])
@pytest.mark.parametrize("eta", [1.0, 0.37])
def test_constant_rate_closed_form_equals_loop(mu, nesterov, eta):
    a = grid(mu, nesterov, eta)
    st = np.array([0, 1, 2, 3, 7, 50, 333, 1000, 2000])
    null = np.zeros(a.size, dtype=bool)
    P1, C1 = _scheduled_modes(a, st, np.full(2000, eta), mu, nesterov, null)
    P2, C2 = constant_rate_modes(a, st, eta, mu, nesterov, null)
    # Residuals to 1e-12 of their size (at least of the start, 1); the test coefficient C = (1 − P)/a
    # to 1e-12 of its own size, or of η (its size after one step) where it crosses zero.
    np.testing.assert_array_less(np.abs(P1 - P2), 1e-12 * np.maximum(np.abs(P1), 1.0))
    np.testing.assert_array_less(np.abs(C1 - C2), 1e-12 * np.maximum(np.abs(C1), eta) + 1e-300)


@pytest.mark.parametrize("mu,nesterov", [(0.99, False), (0.99, True), (0.9, False)])
def test_closed_form_near_critical(mu, nesterov):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    crit = 2 * (1 + mu) / ((1 + 2 * mu) if nesterov else 1)
    a = np.array([0.999 * crit, 0.9999 * crit])
    P, C = constant_rate_modes(a, np.array([1000]), 1.0, mu, nesterov, np.zeros(2, dtype=bool))
    for i, ai in enumerate(a):
        A, m, r, w = mpmath.mpf(ai), mpmath.mpf(mu), mpmath.mpf(1), mpmath.mpf(0)
        for _ in range(1000):  # the recurrence in 40 digits
            w = m * w + r
            r -= A * ((r + m * w) if nesterov else w)
        assert P[0, i] == pytest.approx(float(r), rel=1e-13)
        assert C[0, i] == pytest.approx(float((1 - r) / A), rel=1e-13)


@pytest.mark.parametrize("mu,nesterov", RULES[1:])
def test_closed_form_equals_matrix_power(mu, nesterov):
    eta, st = 0.8, np.array([1, 4, 9, 30])
    a = np.array([0.0, 1e-3, 0.05, 0.4, 1.1, 2.0])
    P, C = constant_rate_modes(a, st, eta, mu, nesterov, np.zeros(a.size, dtype=bool))
    for i, ai in enumerate(a):
        M = [[1 - eta * ai * (1 + mu), -eta * mu**2], [ai, mu]] if nesterov else [[1 - eta * ai, -eta * mu], [ai, mu]]
        # (1 − P)/a by the affine 3×3 lift [[M, g], [0, 1]] (g = (M e1 − e1)/a): valid at a = 0 too
        g = [-eta * (1 + mu), 1.0] if nesterov else [-eta, 1.0]
        A = np.block([[np.array(M), np.array(g)[:, None]], [np.zeros((1, 2)), np.ones((1, 1))]])
        for t, s in enumerate(st):
            Ms = np.linalg.matrix_power(np.array(M), int(s))
            As = np.linalg.matrix_power(A, int(s))
            assert P[t, i] == pytest.approx(Ms[0, 0], rel=1e-12, abs=1e-14)
            assert C[t, i] == pytest.approx(-As[0, 2], rel=1e-12, abs=1e-14)


def test_plain_constant_rate_is_the_power_of_one_minus_eta_a():
    lam = np.array([0.0, 1e-9, 0.3, 2.0, 5.0, 9.0])
    size, eta, st = 4.0, 1.5, np.array([0, 1, 3, 10, 100])
    x = eta * lam / size
    # the plain-descent coefficients of the existing solvers (expm1/log1p), on the positive modes
    g, h = GradientDescent(eta).mode_coefficients(lam[1:], np.zeros(lam.size - 1, dtype=bool), st.astype(float), size)
    for fac in (
        mode_factors(lam, st, size=size, learning_rate=eta),
        mode_factors(lam, st, size=size, learning_rate=Schedule(np.full(100, eta))),
    ):
        np.testing.assert_allclose(fac.residual, (1 - x)[None] ** st[:, None], rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(fac.gain[:, 1:], g, rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(fac.test[:, 1:], h, rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(fac.test[:, 0], st * eta / size, rtol=1e-15)  # the limit t η/(Nk)


@pytest.mark.parametrize("nesterov", [False, True])
def test_zero_eigenvalue_limit_is_the_derivative(nesterov):
    mu, rates = 0.7, Schedule.step(0.3, 4, 0.5).rates(25)
    st = np.array([0, 1, 2, 10, 25])
    # by hand at a = 0: r stays 1, w_{j+1} = Σ_{i ≤ j} μ^i, dc = η_j w_{j+1} (heavy ball) or η_j (1 + μ w_{j+1})
    w = np.cumsum(mu ** np.arange(25))
    inc = rates * ((1 + mu * w) if nesterov else w)
    want = np.concatenate([[0.0], np.cumsum(inc)])[st]
    size = 3.0
    for lr in (Schedule(rates), 0.3):
        fac = mode_factors(np.array([0.0, 1e-7]), st, size=size, learning_rate=lr, momentum=mu, nesterov=nesterov)
        if not isinstance(lr, Schedule):
            w0 = np.cumsum(mu ** np.arange(25))
            want = np.concatenate([[0.0], np.cumsum(0.3 * ((1 + mu * w0) if nesterov else w0))])[st]
        np.testing.assert_allclose(fac.test[:, 0] * size, want, rtol=1e-14)
        np.testing.assert_allclose(fac.test[:, 1], fac.test[:, 0], rtol=1e-5)  # continuity
        assert np.all(fac.residual[:, 0] == 1.0)


def test_null_modes_are_exact_zeros():
    lam = np.array([0.0, 1e-20, 1.0, 3.0])
    null = np.array([True, True, False, False])
    for lr, wd in ((Schedule.cosine(0.5, 30), 0.0), (0.5, 0.0), (0.5, 0.1)):
        if wd:
            fac = weight_decay_mode_factors(
                lam, [0, 5, 30], size=2.0, learning_rate=lr, weight_decay=wd, momentum=0.9, null=null
            )
            assert np.all(fac.forcing[:, null] == 0) and np.all(fac.image[:, null] == 0)
        else:
            fac = mode_factors(lam, [0, 5, 30], size=2.0, learning_rate=lr, momentum=0.9, null=null)
            assert np.all(fac.gain[:, null] == 0)
        assert np.all(fac.residual[:, null] == 1.0) and np.all(fac.test[:, null] == 0.0)
        assert np.all(fac.test[:, ~null][1:] != 0.0)


# --- critical rates and the divergence judgement -----------------------------------------------------


def radius(eta, a, mu, nesterov):
    M = [[1 - eta * a * (1 + mu), -eta * mu**2], [a, mu]] if nesterov else [[1 - eta * a, -eta * mu], [a, mu]]
    return np.max(np.abs(np.linalg.eigvals(np.array(M))))


@pytest.mark.parametrize("mu,nesterov", RULES)
def test_critical_rate_is_where_the_top_mode_turns_unstable(mu, nesterov):
    lam_max, size = 7.0, 10.0
    crit = critical_rate(lam_max, size=size, momentum=mu, nesterov=nesterov)
    a = lam_max / size
    assert radius(crit * (1 - 1e-6), a, mu, nesterov) < 1 < radius(crit * (1 + 1e-6), a, mu, nesterov)
    lam = np.linspace(0, lam_max, 50)
    for factor, diverges in ((0.98, False), (1.02, True)):
        st = schedule_stability(lam, 3000, size=size, learning_rate=factor * crit, momentum=mu, nesterov=nesterov)
        assert st.diverges is diverges
        assert (st.final_radius > 1) is diverges


def test_stability_sees_growth_the_top_mode_hides():
    # Rates 10/a_max, 1/a_max in turn: the second step zeroes the top mode, while the mode at
    # 0.8 a_max gains |(1 − 8)(1 − 0.8)| = 1.4 per pair of steps.
    size, lam = 1.0, np.array([0.8, 1.0])
    rates = np.tile([10.0, 1.0], 30)
    top = schedule_stability(lam[1:], 60, size=size, learning_rate=Schedule(rates))
    both = schedule_stability(lam, 60, size=size, learning_rate=Schedule(rates))
    assert not top.diverges and both.diverges
    # the peak: after step 59, (−1.4)^29 · (−7)
    assert both.amplification == pytest.approx(7 * 1.4**29, rel=1e-12) and both.peak_step == 59
    assert top.amplification == pytest.approx(9.0, rel=1e-12)


# --- schedules -------------------------------------------------------------------------------------


def torch_rates(make, n, lr):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))], lr=lr)
    sch = make(torch.optim.lr_scheduler, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    return np.array(out)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["step", "exponential", "cosine", "cosine_past_end", "warmup_cosine", "warmup_linear"])
def test_schedules_equal_torch(name):
    lr, n = 0.3, 80
    ours, make = {
        "step": (Schedule.step(lr, 7, 0.5), lambda S, o: S.StepLR(o, 7, 0.5)),
        "exponential": (Schedule.exponential(lr, 0.95), lambda S, o: S.ExponentialLR(o, 0.95)),
        "cosine": (Schedule.cosine(lr, 80, min_lr=0.01), lambda S, o: S.CosineAnnealingLR(o, 80, eta_min=0.01)),
        "cosine_past_end": (
            Schedule.cosine(lr, 50, min_lr=0.01),
            lambda S, o: S.CosineAnnealingLR(o, 50, eta_min=0.01),
        ),
        "warmup_cosine": (
            Schedule.warmup_cosine(lr, 80, 12, start_factor=0.1, min_lr=0.02),
            lambda S, o: S.SequentialLR(
                o, [S.LinearLR(o, 0.1, total_iters=12), S.CosineAnnealingLR(o, 68, eta_min=0.02)], [12]
            ),
        ),
        "warmup_linear": (
            Schedule.warmup_linear(lr, 80, 12, start_factor=0.25, min_lr=0.03),
            lambda S, o: S.SequentialLR(
                o, [S.LinearLR(o, 0.25, total_iters=12), S.LinearLR(o, 1.0, 0.1, total_iters=68)], [12]
            ),
        ),
    }[name]
    np.testing.assert_allclose(ours.rates(n), torch_rates(make, n, lr), rtol=1e-12, atol=1e-15)


def test_schedule_values_by_hand():
    np.testing.assert_allclose(Schedule.step(1.0, 2, 0.1).rates(5), [1, 1, 0.1, 0.1, 0.01])
    np.testing.assert_allclose(Schedule.cosine(2.0, 2, min_lr=1.0).rates(3), [2.0, 1.5, 1.0])
    np.testing.assert_allclose(Schedule.warmup_linear(1.0, 4, 2, start_factor=0.5).rates(5), [0.5, 0.75, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(Schedule.constant(0.2).scaled(3).rates(2), [0.6, 0.6])
    np.testing.assert_allclose(
        Schedule.cosine(1.0, 4, min_lr=0.5).scaled(2).rates(5), 2 * Schedule.cosine(1.0, 4, min_lr=0.5).rates(5)
    )
    s = Schedule([0.1, 0.2])
    assert s.rates(2).tolist() == [0.1, 0.2] and s == Schedule(np.array([0.1, 0.2]))
    with pytest.raises(AttributeError, match="immutable"):
        s.foo = 1


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (lambda: Schedule([0.1, -0.2]), ValueError, "non-negative"),
        (lambda: Schedule([0.1, np.nan]), ValueError, "finite"),
        (lambda: Schedule([0.1, np.inf]), ValueError, "finite"),
        (lambda: Schedule([]), ValueError, "non-empty"),
        (lambda: Schedule([[0.1]]), ValueError, "1-D"),
        (lambda: Schedule(["a"]), TypeError, "numeric"),
        (lambda: Schedule([0.1, 0.2]).rates(3), ValueError, "2 rates but 3 steps"),
        (lambda: Schedule.constant(0.0), ValueError, "positive"),
        (lambda: Schedule.constant(True), TypeError, "real number"),
        (lambda: Schedule.step(0.1, 0), ValueError, "step_size"),
        (lambda: Schedule.cosine(0.1, 10, min_lr=0.2), ValueError, "must not exceed"),
        (lambda: Schedule.warmup_cosine(0.1, 10, 10), ValueError, "below total_steps"),
        (lambda: Schedule.warmup_cosine(0.1, 10, 2, start_factor=1.5), ValueError, r"\(0, 1\]"),
        (lambda: mode_factors([1.0], [1], size=1, learning_rate=0.1, momentum=1.0), ValueError, r"\[0, 1\)"),
        (lambda: mode_factors([1.0], [1], size=1, learning_rate=0.1, momentum=-0.1), ValueError, "non-negative"),
        (lambda: mode_factors([1.0], [1], size=1, learning_rate=0.1, nesterov=True), ValueError, "Nesterov"),
        (lambda: mode_factors([1.0], [1], size=1, learning_rate=np.ones(3)), TypeError, "Schedule"),
        (lambda: mode_factors([1.0], [3, 1], size=1, learning_rate=0.1), ValueError, "ascending"),
        (lambda: mode_factors([-1.0], [1], size=1, learning_rate=0.1), ValueError, "non-negative"),
        (lambda: mode_factors([1.0], [5], size=1, learning_rate=Schedule([0.1] * 4)), ValueError, "4 rates"),
    ],
)
def test_bad_input_is_a_clear_error(bad, exc, match):
    with pytest.raises(exc, match=match):
        bad()


# --- units --------------------------------------------------------------------------------------------


def test_learning_rate_units_against_torch_losses(lin):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    size = lin.N * lin.k
    J, theta0 = torch.tensor(lin.J), torch.tensor(lin.theta0)
    f0, y = torch.tensor(lin.f0.ravel()), torch.tensor(lin.y.ravel())
    lam, null = eig(lin)
    for reduction, lr_torch in (("mean", 0.3 * size / lam[-1]), ("sum", 0.3 / lam[-1])):
        theta = torch.nn.Parameter(theta0.clone())
        opt = torch.optim.SGD([theta], lr=lr_torch, momentum=0.5)
        for _ in range(5):
            opt.zero_grad()
            torch.nn.MSELoss(reduction=reduction)(f0 + J @ (theta - theta0), y).backward()
            opt.step()
        got = (f0 + J @ (theta - theta0)).detach().numpy()
        lr = to_ntksolve_learning_rate(lr_torch, loss=f"torch_mse_{reduction}", n_samples=lin.N, n_outputs=lin.k)
        fac = mode_factors(lam, [5], size=size, learning_rate=lr, momentum=0.5, null=null)
        np.testing.assert_allclose(spectral_prediction(lin, fac)[0][0].ravel(), got, rtol=0, atol=1e-10)


def test_learning_rate_units_against_sklearn_mlp():
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((20, 3)), rng.standard_normal((20, 4))
    m = MLPRegressor(
        hidden_layer_sizes=(5,),
        activation="identity",
        solver="sgd",
        learning_rate_init=0.01,
        momentum=0.0,
        alpha=0.0,
        batch_size=20,
        shuffle=False,
        random_state=0,
    )
    m.partial_fit(X, Y)
    W1, W2 = [c.copy() for c in m.coefs_]
    b1, b2 = [c.copy() for c in m.intercepts_]
    m.partial_fit(X, Y)
    # our gradient of 1/(2Nk) Σ (f − y)², by hand for f = (X W1 + b1) W2 + b2
    H = X @ W1 + b1
    E = (H @ W2 + b2 - Y) / Y.size
    grads = [X.T @ (E @ W2.T), H.T @ E]
    lr = to_ntksolve_learning_rate(0.01, loss="sklearn_mlp_regressor", n_samples=20, n_outputs=4)
    np.testing.assert_allclose(m.coefs_[0], W1 - lr * grads[0], rtol=1e-12)
    np.testing.assert_allclose(m.coefs_[1], W2 - lr * grads[1], rtol=1e-12)


def test_learning_rate_units_table_and_errors():
    assert to_ntksolve_learning_rate(0.1, loss="torch_cross_entropy_sum", n_samples=8, n_outputs=3) == 0.8
    assert to_ntksolve_learning_rate(0.1, loss="torch_cross_entropy_mean", n_samples=8, n_outputs=3) == 0.1
    sched = to_ntksolve_learning_rate(Schedule.cosine(0.1, 10), loss="torch_mse_sum", n_samples=2, n_outputs=3)
    np.testing.assert_allclose(sched.rates(10), 12 * Schedule.cosine(0.1, 10).rates(10))
    with pytest.raises(ValueError, match="unknown loss"):
        to_ntksolve_learning_rate(0.1, loss="mse", n_samples=2, n_outputs=1)
    with pytest.raises(ValueError, match="positive"):
        to_ntksolve_learning_rate(-0.1, loss="torch_mse_sum", n_samples=2, n_outputs=1)
    with pytest.raises(ValueError, match="positive int"):
        to_ntksolve_learning_rate(0.1, loss="torch_mse_sum", n_samples=0, n_outputs=1)


# --- forward mode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("activation", ["relu", "erf", "gelu"])
def test_forward_mode_equals_explicit_jacobian(parameterization, activation):
    net = ntksolve.MLP((9, 6), activation=activation, bias_std=0.4, parameterization=parameterization, n_outputs=3)
    params = net.init(4, random_state=2)
    X = np.random.default_rng(5).standard_normal((8, 4))
    J = ntksolve.jacobian(net, params, X)
    theta = trained_flat(net, params)
    np.testing.assert_allclose(own_parameter_image(net, params, X), J @ theta, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(net.flatten_params(trained_parameters(net, params)), theta, rtol=0, atol=0)
    v = net.init(4, random_state=9)
    np.testing.assert_allclose(
        jacobian_vector_product(net, params, X, v), J @ net.flatten_params(v), rtol=1e-12, atol=1e-13
    )
    with pytest.raises(ValueError, match="shaped like params"):
        jacobian_vector_product(net, params, X, v[:-1])
