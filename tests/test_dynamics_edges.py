"""Edge inputs of the closed forms, the ensemble and the function-space twins: huge times, times
past what an integer step count holds, non-finite inputs, runs that overflow.

Each number is pinned to an independent source: the eigendecomposition of the kernel written out
here with numpy, the converged limit (kernel regression), the step-by-step recurrence.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.integrate
from scipy.special import expit

from ntksolve.dynamics import (
    ConjugateGradient,
    Krylov,
    DivergenceWarning,
    Nystrom,
    GradientDescent,
    Schedule,
    gradient_descent_mse,
    flow_cross_entropy,
    gradient_descent_mse_ensemble,
    sgd_cross_entropy,
    sgd_mse,
    shuffled_batches,
)
from ntksolve.dynamics import critical_learning_rate as ntksolve_critical
from ntksolve.dynamics.rules import GradientFlow


def _problem(N=5, M=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N + M, 3))
    A = X @ X.T + 0.1 * np.eye(N + M)
    return A[:N, :N], A[N:, :N], rng.normal(size=N), rng.normal(size=N), rng.normal(size=M)


def _flow_by_modes(K, Ks, y, f0, ft0, s):
    """``f_t`` and ``f*_t`` of gradient flow at ``s = η t/(N k)`` from numpy's eigendecomposition."""
    lam, V = np.linalg.eigh(K)
    g = -np.expm1(-s * lam)
    r = V.T @ (y - f0)
    return f0 + V @ (g * r), ft0 + Ks @ (V @ (g / lam * r))


@pytest.mark.parametrize("t", [1e20, 1e45, 1e120, 1e300])
def test_expm_flow_at_huge_times_is_the_eigenbasis_answer(t):
    """scipy's expm turns NaN once the block matrix's norm passes ~1e38; the reference must not."""
    K, Ks, y, f0, ft0 = _problem()
    rule = GradientFlow(0.5)
    tr, te = gradient_descent_mse(K, y, dynamics=rule, method="expm")(t, f0, ft0, Ks)
    ref_tr, ref_te = _flow_by_modes(K, Ks, y, f0, ft0, 0.5 / 5 * t)
    np.testing.assert_allclose(tr, ref_tr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(te, ref_te, rtol=0, atol=1e-11)


def test_expm_flow_propagator_scaled_and_squared_matches_direct():
    """Where scipy's expm still works, the scaled-and-squared propagator agrees with it."""
    K, *_ = _problem()
    lam, V = np.linalg.eigh(K)
    for t in (3.0, 1e6, 1e19):
        s = 0.5 / 5 * t
        E, H = GradientFlow(0.5).dense_propagator(K, t, 5)
        np.testing.assert_allclose(E, (V * np.exp(-s * lam)) @ V.T, rtol=0, atol=1e-13)
        np.testing.assert_allclose(H, (V * (-np.expm1(-s * lam) / lam)) @ V.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("momentum,nesterov", [(0.9, False), (0.5, True)])
@pytest.mark.parametrize("method", ["eigh", "krylov"])
def test_momentum_past_int64_steps_is_the_converged_limit(momentum, nesterov, method):
    """Step counts beyond 2^63 (which an int64 cannot hold) of a stable constant rate: every mode
    has converged, so the answer is kernel regression (it wrapped to negative steps before)."""
    K, Ks, y, f0, ft0 = _problem()
    rate = 0.3 * 2 * 5 / np.linalg.eigvalsh(K)[-1]
    rule = GradientDescent(rate, momentum=momentum, nesterov=nesterov)
    pred = gradient_descent_mse(K, y, dynamics=rule, method=method)
    ref_tr = y
    ref_te = ft0 + Ks @ np.linalg.solve(K, y - f0)
    for t in (1e19, 1e300, [3, 1e300, 1e19]):
        tr, te = pred(t, f0, ft0, Ks)
        last_tr, last_te = (tr[-1], te[-1]) if np.ndim(t) else (tr, te)
        np.testing.assert_allclose(last_tr, ref_tr, rtol=0, atol=1e-12)
        np.testing.assert_allclose(last_te, ref_te, rtol=0, atol=1e-11)
    # the finite entry of the list is the 3-step answer of the recurrence
    tr = pred([3, 1e300], f0)[0]
    np.testing.assert_allclose(tr, pred(3, f0), rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "rule",
    [
        GradientDescent(0.1, weight_decay=0.01),
        GradientDescent(Schedule.cosine(0.1, 100)),
        GradientDescent(Schedule.exponential(0.1, 0.999), momentum=0.5),
    ],
)
def test_stepwise_rules_refuse_unreachable_step_counts_up_front(rule):
    """Weight decay and schedules iterate every step: a count whose rates alone would not fit in
    memory is refused by name before any allocation (not numpy's bare allocation failure)."""
    K, Ks, y, f0, ft0 = _problem()
    pred = gradient_descent_mse(K, y, dynamics=rule, method="eigh")
    kw = {"jtheta_train": f0} if rule.weight_decay else {}
    for t in (1e15, 1e19, 1e300):
        with pytest.raises(MemoryError, match="learning rate of every step.*ask for fewer steps"):
            pred(t, f0, **kw)


def test_schedule_rates_refuse_a_count_that_cannot_fit():
    with pytest.raises(MemoryError, match="learning rate of every step"):
        Schedule.constant(0.1).rates(10**16)
    np.testing.assert_array_equal(Schedule.constant(0.1).rates(3), [0.1, 0.1, 0.1])


def _ensemble(seed=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(8, 3))
    K = X @ X.T + 0.05 * np.eye(8)
    Th = np.tanh(X) @ np.tanh(X).T + 0.05 * np.eye(8)
    y = rng.normal(size=5)
    return gradient_descent_mse_ensemble(K[:5, :5], Th[:5, :5], y, 0.8), K, Th


def test_ensemble_variance_refuses_a_non_finite_test_diagonal():
    e, K, Th = _ensemble()
    diag = np.diag(K[5:, 5:]).copy()
    v = e.variance(2.0, K[5:, :5], Th[5:, :5], diag)
    cov = e(2.0, K[5:, :5], Th[5:, :5], K[5:, 5:], compute_cov=True)[1]
    np.testing.assert_allclose(v, np.diag(cov), rtol=1e-12, atol=1e-14)
    diag[0] = np.nan
    with pytest.raises(ValueError, match="nngp_test_diag contains NaN"):
        e.variance(2.0, K[5:, :5], Th[5:, :5], diag)


@pytest.mark.parametrize("t", [-np.inf, -1.0, 5.0])
def test_ensemble_nngp_posterior_needs_plus_infinity(t):
    e, K, Th = _ensemble()
    with pytest.raises(ValueError, match="posterior='nngp'"):
        e(t, K[5:, :5], Th[5:, :5], posterior="nngp")
    mean = e(None, K[5:, :5], Th[5:, :5], posterior="nngp")
    np.testing.assert_allclose(mean, K[5:, :5] @ np.linalg.solve(K[:5, :5], e._Y[:, 0]), rtol=1e-10)


def _overflowing_run():
    K, _, y, f0, _ = _problem(N=8, seed=7)
    crit = 2 * 8 / np.linalg.eigvalsh(K)[-1]
    return K, y, f0, crit


@pytest.mark.parametrize("batched", [False, True])
def test_sgd_mse_that_overflows_raises_naming_the_rate(batched):
    """Past the stability edge the residual grows as |1 − η a|^s: by step 600 it overflows, and
    the twin says so (it returned NaN losses with numpy's overflow warnings only)."""
    K, y, f0, crit = _overflowing_run()
    batches = shuffled_batches(8, 4, 600, random_state=0) if batched else None
    rule = GradientDescent(3 * crit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warnings on the way
        with pytest.raises(FloatingPointError, match="diverged.*learning_rate"):
            sgd_mse(K, y, f0, [0, 10, 600], dynamics=GradientDescent(20 * crit), batches=batches)
    # below the overflow the run is the recurrence f ← f − η/N K (f − y), growing as it should
    traj = sgd_mse(K, y, f0, [0, 10], dynamics=rule)
    f = f0.copy()
    for _ in range(10):
        f = f - 3 * crit / 8 * K @ (f - y)
    np.testing.assert_allclose(traj.train[-1], f, rtol=1e-12)


def test_sgd_cross_entropy_finite_at_a_huge_rate_is_not_refused():
    """Cross-entropy's gradient is bounded, so a huge rate moves the logits linearly, never to
    overflow: the twin answers (and is the recurrence)."""
    K, y, f0, _ = _overflowing_run()
    lab = (y > 0).astype(int)
    traj = sgd_cross_entropy(K, lab, f0, [0, 3], dynamics=GradientDescent(1e3))
    f = f0.copy()
    for _ in range(3):
        f = f - 1e3 / 8 * K @ (expit(f) - lab)
    np.testing.assert_allclose(traj.train[-1], f, rtol=1e-12)


@pytest.mark.parametrize("method", ["eigh", "krylov", "expm"])
def test_flow_whose_exponent_overflows_is_the_limit_quietly(method):
    """``η λ t/(Nk)`` past the float range is the converged flow, without numpy overflow warnings."""
    K, Ks, y, f0, ft0 = _problem()
    pred = gradient_descent_mse(K, y, dynamics=GradientFlow(0.9), method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        tr, te = pred(1.7e308, f0, ft0, Ks)
    np.testing.assert_allclose(tr, y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(te, ft0 + Ks @ np.linalg.solve(K, y - f0), rtol=0, atol=1e-11)


def test_expm_refuses_a_scaled_time_past_the_float_range_by_name():
    K, Ks, y, f0, ft0 = _problem()
    with pytest.warns(DivergenceWarning):  # the rate is past discrete descent's edge; flow converges
        pred = gradient_descent_mse(K, y, dynamics=GradientFlow(10.0), method="expm")
    with pytest.raises(ValueError, match="overflows.*t=np.inf"):
        pred(1e308, f0)


@pytest.mark.parametrize("bad,err", [(2.5, TypeError), (True, TypeError), ("2", TypeError), (0, ValueError)])
def test_critical_learning_rate_refuses_a_non_integer_output_count(bad, err):
    K, *_ = _problem()
    with pytest.raises(err, match="n_outputs"):
        ntksolve_critical(K, bad)
    lmax = np.linalg.eigvalsh(K)[-1]
    np.testing.assert_allclose(ntksolve_critical(K, 3), 2 * 5 * 3 / lmax, rtol=1e-13)
    np.testing.assert_allclose(ntksolve_critical(K, np.int64(2)), 2 * 5 * 2 / lmax, rtol=1e-13)


@pytest.mark.parametrize("landmarks", [30, 80])
def test_nystrom_cg_without_ridge_on_a_singular_kernel_is_the_pseudo_inverse(landmarks):
    """Without a ridge the Nyström preconditioner weighted the kernel's unexplained directions by
    ``1/(N ε mean diag)``: rounding leaking into the null space was blown up ~1e13-fold, and CG
    reported negative curvature on a PSD kernel, or returned garbage with overflow warnings."""
    rng = np.random.default_rng(12)
    X, W = rng.normal(size=(150, 5)), rng.normal(size=(5, 20))
    Z = np.tanh(X @ W)  # rank 20
    K, Ks = Z @ Z.T, np.tanh(rng.normal(size=(4, 5)) @ W) @ Z.T
    y, f0, ft0 = rng.normal(size=150), np.zeros(150), np.zeros(4)
    pinv = np.linalg.pinv(K, rcond=1e-10, hermitian=True)
    solver = ConjugateGradient(tol=1e-10, preconditioner=Nystrom(landmarks))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow, no KrylovConvergenceWarning
        warnings.filterwarnings("ignore", category=DivergenceWarning)
        tr, te = gradient_descent_mse(K, y, method=solver)(np.inf, f0, ft0, Ks)
    np.testing.assert_allclose(te, Ks @ pinv @ y, rtol=1e-7)
    np.testing.assert_allclose(tr, K @ pinv @ y, rtol=1e-7, atol=1e-8)


def test_test_loss_checks_y_test_before_solving():
    """A wrong or non-finite ``y_test`` is refused before the (Krylov) solve, and the test loss is
    ``1/(2Mk) Σ (f* − y*)²`` of the predicted test outputs."""
    K, Ks, y, f0, ft0 = _problem()

    class Counting:
        shape, dtype, calls = K.shape, np.dtype(np.float64), 0

        def matmat(self, V):
            Counting.calls += 1
            return K @ V

        def diagonal(self):
            return np.diag(K).copy()

    pred = gradient_descent_mse(Counting(), y, 0.5, method="krylov")
    for bad, match in ((np.zeros(3), "shape"), (np.array([np.nan, 0.0]), "NaN")):
        with pytest.raises(ValueError, match=match):
            pred.loss(2.0, f0, ft0, Ks, y_test=bad)
    assert Counting.calls == 0
    y_test = np.array([0.3, -0.2])
    _, test = pred(2.0, f0, ft0, Ks)
    np.testing.assert_allclose(pred.loss(2.0, f0, ft0, Ks, y_test=y_test)[1], np.mean((test - y_test) ** 2) / 2)


def test_a_recurrence_twin_that_overflows_is_reported_as_diverging():
    """The comparison's twin of a minibatch run far past the stability edge: the recurrence now
    refuses to return its overflowed trajectory, and the twin reports the run as diverging."""
    from ntksolve.twins import Run, Twin

    K, y, f0, crit = _overflowing_run()
    Kt = K[:3]
    run = Run(GradientDescent(3 * crit), "mse", 4, np.array([0, 10, 2000]), y[:, None], y[:3, None], 1)
    twin = Twin(run, K, Kt, what="empirical-NTK", kernel_words="the test kernel", plain_crit=crit)
    batches = shuffled_batches(8, 4, 2000, random_state=0)
    pred = twin.predict(f0[:, None], f0[:3, None], batches=batches)
    assert pred.status == "diverges" and "non-finite" in pred.message and pred.train is None
    # a run below the edge is the recurrence itself
    ok = Run(GradientDescent(0.2 * crit), "mse", 4, np.array([0, 5]), y[:, None], y[:3, None], 1)
    pred = Twin(ok, K, Kt, what="empirical-NTK", kernel_words="k", plain_crit=crit).predict(
        f0[:, None], f0[:3, None], batches=batches
    )
    ref = sgd_mse(K, y[:, None], f0[:, None], [0, 5], dynamics=ok.rule, batches=batches)
    assert pred.status == "ok"
    np.testing.assert_array_equal(pred.train, ref.train)


def test_flow_cross_entropy_takes_repeated_times():
    """Ascending times may repeat (as in sgd_mse); scipy's solve_ivp refused them with its own error."""
    K, y, f0, _ = _overflowing_run()
    lab = (y > 0).astype(int)
    rep = flow_cross_entropy(K, lab, f0, [0.0, 1.0, 1.0, 2.0])
    once = flow_cross_entropy(K, lab, f0, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(rep.train[[0, 1, 3]], once.train)
    np.testing.assert_array_equal(rep.train[2], rep.train[1])
    # and the flow is the ODE df/dt = -(1/N) K (σ(f) − y), by a second integrator
    ref = scipy.integrate.solve_ivp(
        lambda _, f: -K @ (expit(f) - lab) / 8, (0, 2.0), f0, method="Radau", t_eval=[2.0], rtol=1e-11, atol=1e-12
    )
    np.testing.assert_allclose(once.train[-1], ref.y[:, -1], rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("rule", [GradientDescent(0.1, weight_decay=0.05), GradientDescent(Schedule.cosine(0.1, 10))])
def test_loo_refuses_rules_whose_limit_is_not_kernel_regression(rule):
    """Weight decay's limit is the decayed quadratic's (it returned the leave-one-out of another
    model, 0.35 off); a schedule has no limit (it failed comparing a Schedule with a float)."""
    K, _, y, f0, _ = _problem(N=8, seed=23)
    with pytest.raises(ValueError, match="leave-one-out of kernel regression.*K-fold"):
        gradient_descent_mse(K, y, dynamics=rule, diag_reg=0.1).loo_residuals(f0)
    # the rules that converge to kernel regression give its exact leave-one-out (refits by hand)
    mu = 0.1 * np.mean(np.diag(K))
    ref = []
    for i in range(8):
        m = np.arange(8) != i
        ref.append(y[i] - f0[i] - K[i, m] @ np.linalg.solve(K[np.ix_(m, m)] + mu * np.eye(7), y[m] - f0[m]))
    for ok in (GradientFlow(0.1), GradientDescent(0.1, momentum=0.9)):
        np.testing.assert_allclose(
            gradient_descent_mse(K, y, dynamics=ok, diag_reg=0.1).loo_residuals(f0), ref, rtol=1e-10
        )


def test_conjugate_gradients_refuse_weight_decay():
    """CG solves kernel regression whatever the rule: with weight decay it returned the undecayed
    answer (2.2 off the eigh limit); Krylov applies the rule's own limit."""
    K, Ks, y, f0, ft0 = _problem(N=8, seed=24)
    rule = GradientDescent(0.1, weight_decay=0.05)
    kw = dict(jtheta_train=f0, jtheta_test=ft0)
    with pytest.raises(ValueError, match="ConjugateGradient solves kernel regression.*Krylov"):
        gradient_descent_mse(K, y, dynamics=rule, method=ConjugateGradient())(np.inf, f0, ft0, Ks, **kw)
    # the limit, two ways: eigh and Krylov; and by hand, the minimiser of the decayed quadratic
    # in function space: (Θ + wNk I) f = Θ y + wNk (f_0 − J θ_0) on the train side
    eig = gradient_descent_mse(K, y, dynamics=rule, method="eigh")(np.inf, f0, ft0, Ks, **kw)
    kry = gradient_descent_mse(K, y, dynamics=rule, method=Krylov(tol=1e-12))(np.inf, f0, ft0, Ks, **kw)
    np.testing.assert_allclose(kry[0], eig[0], rtol=1e-10)
    np.testing.assert_allclose(kry[1], eig[1], rtol=1e-10)
    wn = 0.05 * 8
    np.testing.assert_allclose(
        eig[0], np.linalg.solve(K + wn * np.eye(8), K @ y + wn * (f0 - kw["jtheta_train"])), rtol=1e-10
    )
    # kernel regression itself is CG's: momentum converges there too
    mom = GradientDescent(0.1, momentum=0.9)
    cg = gradient_descent_mse(K, y, dynamics=mom, method=ConjugateGradient(tol=1e-13))(np.inf, f0, ft0, Ks)
    np.testing.assert_allclose(cg[1], ft0 + Ks @ np.linalg.solve(K, y - f0), rtol=1e-9)
