"""compare with momentum, schedules, weight decay, minibatches, cross-entropy and Adam.

Every sweep is tiny (N = 32, widths 32 and 64, 24 steps). Each width is rebuilt by hand from its
seed: the real run is ``train_network`` called directly (same parameters, same batch order), and
the twin is the function-space recurrence (``sgd_mse`` / ``sgd_cross_entropy``) called directly,
which for full-batch MSE is a second method beside compare's closed form.
"""

import json

import numpy as np
import pytest

from ntksolve import MLP, analytic_kernels, empirical_ntk, train_network
from ntksolve.comparison import compare, default_record_steps
from ntksolve.datasets import default_regression
from ntksolve.dynamics import (
    Adam,
    GradientDescent,
    Schedule,
    gradient_descent_mse,
    sgd_cross_entropy,
    sgd_mse,
    shuffled_batches,
)
from ntksolve.nets.forward_mode import own_parameter_image

WIDTHS, STEPS, RECORDS, SEED = [32, 64], 24, 6, 3


@pytest.fixture(scope="module")
def data():
    return default_regression(n_train=32, n_test=16, random_state=2)


@pytest.fixture(scope="module")
def classes(data):
    """Three classes from the regression target's terciles (labels), train and test."""
    edges = np.quantile(data.y_train[:, 0], [1 / 3, 2 / 3])
    return np.digitize(data.y_train[:, 0], edges), np.digitize(data.y_test[:, 0], edges)


def _sweep(data, y=None, y_test=None, **kw):
    return compare(
        data.X_train,
        data.y_train if y is None else y,
        WIDTHS,
        X_test=data.X_test,
        y_test=data.y_test if y_test is None else y_test,
        steps=STEPS,
        n_records=RECORDS,
        random_state=SEED,
        progress=False,
        **kw,
    )


def _network(data, width, k):
    net = MLP((width,), "relu", 1.0, 0.1, "ntk", k)
    params = net.init(data.X_train.shape[1], random_state=np.random.default_rng(np.random.SeedSequence([SEED, width])))
    return net, params


def _batches(width, batch_size, n=32):
    rng = np.random.default_rng(np.random.SeedSequence([SEED, width, 1]))
    return shuffled_batches(n, batch_size, STEPS, random_state=rng)


def _by_hand(data, width, rule, *, y=None, y_test=None, loss="mse", batch_size=None, kernel="empirical"):
    """``(real TrainingResult, twin Trajectory, f0, f0_test)`` of one width, rebuilt from its seed."""
    y = data.y_train if y is None else y
    y_test = data.y_test if y_test is None else y_test
    k = y.shape[1] if loss == "mse" else int(max(y.max(), y_test.max())) + 1
    net, params = _network(data, width, k)
    X, Xt = data.X_train, data.X_test
    batches = None if batch_size is None else _batches(width, batch_size)
    record = default_record_steps(STEPS, RECORDS)
    with np.errstate(over="ignore", invalid="ignore"):
        real = train_network(
            net,
            params,
            X,
            y,
            steps=STEPS,
            dynamics=rule,
            loss=loss,
            batches=batches,
            record_at=record,
            X_test=Xt,
            y_test=y_test,
            track_kernel=False,
            on_divergence="return",
        )
    f0, f0t = net.apply(params, X), net.apply(params, Xt)
    if kernel == "empirical":
        K, Kt = empirical_ntk(net, params, X, trace=k == 1), empirical_ntk(net, params, Xt, X, trace=k == 1)
    else:
        an = MLP((1,), "relu", 1.0, 0.1, "ntk", k)
        K, Kt = analytic_kernels(an, X).ntk, analytic_kernels(an, Xt, X).ntk
    img = {}
    if isinstance(rule, GradientDescent) and rule.weight_decay:
        img = dict(image_train=own_parameter_image(net, params, X), image_test=own_parameter_image(net, params, Xt))
    with np.errstate(all="ignore"):  # a diverging twin is what one test is about
        twin = (sgd_mse if loss == "mse" else _ce)(
            K, y, f0, record, dynamics=rule, batches=batches, k_test_train=Kt, fx_test_0=f0t, y_test=y_test, **img
        )
    return real, twin, f0, f0t


def _ce(K, y, f0, record, *, y_test, **kw):
    return sgd_cross_entropy(K, y, f0, record, targets_test=y_test, **kw)


def _rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


def _lambda_max_analytic(data, k=1):
    return np.linalg.eigvalsh(analytic_kernels(MLP((1,), "relu", 1.0, 0.1, "ntk", k), data.X_train).ntk)[-1]


def _check_width(rep, i, data, rule, *, tol=1e-9, y=None, y_test=None, loss="mse", batch_size=None, analytic=True):
    width = rep.rows[i]["width"]
    real, twin, f0, f0t = _by_hand(data, width, rule, y=y, y_test=y_test, loss=loss, batch_size=batch_size)
    row, tr = rep.rows[i], rep.trajectories[i]
    np.testing.assert_allclose(tr["loss_train_real"], real.loss_train, rtol=1e-12)
    np.testing.assert_allclose(tr["loss_test_real"], real.loss_test, rtol=1e-12)
    np.testing.assert_allclose(tr["loss_train_empirical"], twin.train_loss, rtol=tol)
    np.testing.assert_allclose(tr["loss_test_empirical"], twin.test_loss, rtol=tol)
    yt = data.y_train if y is None else y
    scale = _rms(yt) if loss == "mse" else _rms(real.fx_train - f0)
    assert row["gap_train_empirical"] == pytest.approx(_rms(real.fx_train - twin.train) / scale, rel=1e-6)
    if loss != "mse":
        np.testing.assert_allclose(tr["accuracy_test_real"], real.accuracy_test)
        np.testing.assert_allclose(tr["accuracy_test_empirical"], twin.test_accuracy)
        assert row["accuracy_test_diff_empirical"] == pytest.approx(twin.test_accuracy[-1] - real.accuracy_test[-1])
    if analytic:
        _, an, _, _ = _by_hand(
            data, width, rule, y=y, y_test=y_test, loss=loss, batch_size=batch_size, kernel="analytic"
        )
        np.testing.assert_allclose(tr["loss_test_analytic"], an.test_loss, rtol=tol)
    return real, twin


# ---------------------------------------------------------------------------------------------
# gradient descent's variants: the twin is exact
# ---------------------------------------------------------------------------------------------
def test_nesterov_at_a_fraction_of_its_own_critical_rate(data):
    rep = _sweep(data, dynamics=GradientDescent(momentum=0.6, nesterov=True), lr_fraction=0.4)
    mu, N = 0.6, 32
    crit = 2 * (1 + mu) * N / ((1 + 2 * mu) * _lambda_max_analytic(data))  # docs/training-rules.md
    assert rep.settings["critical_learning_rate_analytic"] == pytest.approx(crit, rel=1e-9)
    rule = GradientDescent(0.4 * crit, momentum=mu, nesterov=True)
    for i, r in enumerate(rep.rows):
        assert r["learning_rate"] == pytest.approx(0.4 * crit, rel=1e-9) and r["status_empirical"] == "ok"
        _check_width(rep, i, data, rule)  # closed form (compare) against the recurrence (by hand)
    assert "Nesterov" in rep.settings["learning_rate_rule"] and "nesterov=True" in rep.settings["dynamics"]


def test_schedule_is_scaled_to_its_peak(data):
    rep = _sweep(data, dynamics=GradientDescent(Schedule.warmup_cosine(1.0, STEPS, 6), momentum=0.5), lr_fraction=0.5)
    crit = 2 * 1.5 * 32 / _lambda_max_analytic(data)
    rule = GradientDescent(Schedule.warmup_cosine(0.5 * crit, STEPS, 6), momentum=0.5)
    assert rep.rows[0]["learning_rate"] == pytest.approx(0.5 * crit, rel=1e-9)  # the schedule's peak
    for i in range(len(WIDTHS)):
        _check_width(rep, i, data, rule)


def test_weight_decay_needs_the_network_so_no_analytic_twin(data):
    rule = GradientDescent(2.0, weight_decay=0.05)
    rep = _sweep(data, dynamics=rule)
    for i, r in enumerate(rep.rows):
        assert r["status_analytic"] == "n/a" and "J theta_0" in r["message_analytic"]
        assert r["gap_test_analytic"] is None
        _check_width(rep, i, data, rule, analytic=False)
    assert rep.slopes()["slope_test_analytic"] is None
    assert "J theta_0" in rep.table()


def test_minibatches_share_one_order_per_width(data):
    rule = GradientDescent(1.5, momentum=0.3)
    rep = _sweep(data, dynamics=rule, batch_size=8)
    assert rep.settings["batch_size"] == 8 and "sgd_mse" in rep.settings["twin"]
    for i in range(len(WIDTHS)):
        _check_width(rep, i, data, rule, batch_size=8)
    # a wrong order is not what ran: the real loss of another seed's batches differs
    net, params = _network(data, WIDTHS[0], 1)
    other = train_network(
        net,
        params,
        data.X_train,
        data.y_train,
        steps=STEPS,
        dynamics=rule,
        batches=shuffled_batches(32, 8, STEPS, random_state=99),
        record_at=default_record_steps(STEPS, RECORDS),
    )
    assert not np.allclose(other.loss_train[1:], rep.trajectories[0]["loss_train_real"][1:])


@pytest.mark.parametrize("batch_size", [None, 8])
def test_cross_entropy_three_classes(data, classes, batch_size):
    lab, lab_t = classes
    rule = GradientDescent(3.0)
    rep = _sweep(data, lab, lab_t, dynamics=rule, loss="cross_entropy", batch_size=batch_size)
    assert rep.settings["n_outputs"] == 3 and rep.settings["empirical_kernel"] == "full"
    for i in range(len(WIDTHS)):
        _check_width(rep, i, data, rule, y=lab, y_test=lab_t, loss="cross_entropy", batch_size=batch_size)
        assert 0 <= rep.rows[i]["accuracy_test_final_real"] <= 1
    table = rep.table()
    assert "acc real" in table and "acc ana" in table and "logits" in table
    json.dumps(rep.to_dict(), allow_nan=False)


def test_default_rule_spelled_out_is_the_default(data):
    plain = _sweep(data)
    spelled = _sweep(data, dynamics=GradientDescent(1.0), lr_fraction=0.5)
    for a, b in zip(plain.rows, spelled.rows):
        assert a["learning_rate"] == b["learning_rate"] and a["gap_test_analytic"] == b["gap_test_analytic"]
    assert plain.settings["learning_rate_rule"] == spelled.settings["learning_rate_rule"]


# ---------------------------------------------------------------------------------------------
# Adam: no twin, the loss-matched flow
# ---------------------------------------------------------------------------------------------
def test_adam_is_compared_with_the_loss_matched_flow(data):
    rep = _sweep(data, dynamics=Adam(0.01))
    assert "loss-matched" in rep.settings["twin"] and rep.settings["critical_learning_rate_analytic"] is None
    for i, w in enumerate(WIDTHS):
        tr = rep.trajectories[i]
        net, params = _network(data, w, 1)
        real = train_network(
            net,
            params,
            data.X_train,
            data.y_train,
            steps=STEPS,
            dynamics=Adam(0.01),
            record_at=default_record_steps(STEPS, RECORDS),
            X_test=data.X_test,
            y_test=data.y_test,
        )
        np.testing.assert_allclose(tr["loss_train_real"], real.loss_train, rtol=1e-12)
        # the flow's training loss equals the real one at every record (the definition of its time)
        np.testing.assert_allclose(tr["loss_train_empirical"], real.loss_train, rtol=1e-8)
        # and it is gradient flow on the kernel at those times, computed here by hand
        K = empirical_ntk(net, params, data.X_train)
        Kt = empirical_ntk(net, params, data.X_test, data.X_train)
        f0, f0t = net.apply(params, data.X_train), net.apply(params, data.X_test)
        taus = np.asarray(tr["flow_time_empirical"])
        _, ft = gradient_descent_mse(K, data.y_train, 1.0, dynamics="continuous")(taus, f0, f0t, Kt)
        np.testing.assert_allclose(
            tr["loss_test_empirical"], 0.5 * np.mean((ft - data.y_test) ** 2, axis=(1, 2)), rtol=1e-8
        )
        assert taus[0] == 0.0 and np.all(np.diff(taus) >= 0)  # Adam's loss falls here: the flow time grows
        assert rep.rows[i]["status_empirical"] == rep.rows[i]["status_analytic"] == "ok"


def test_adam_cross_entropy_matches_the_loss_within_interpolation(data, classes):
    lab, lab_t = classes
    rep = _sweep(data, lab, lab_t, dynamics=Adam(0.01), loss="cross_entropy")
    for tr in rep.trajectories:
        np.testing.assert_allclose(tr["loss_train_empirical"], tr["loss_train_real"], rtol=2e-3)
        np.testing.assert_allclose(tr["loss_train_analytic"], tr["loss_train_real"], rtol=2e-3)


# ---------------------------------------------------------------------------------------------
# refusals, before any work
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(dynamics=Adam(1e-3), lr_fraction=0.5), ValueError, "no critical learning rate"),
        (dict(dynamics=GradientDescent(0.1), learning_rate=0.1), TypeError, "carries its own learning rate"),
        (dict(learning_rate=0.1, lr_fraction=0.5), ValueError, "not both"),
        (dict(dynamics="adam"), TypeError, "GradientDescent"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(batch_size=33), ValueError, r"\[1, N = 32\]"),
        (dict(loss="cross_entropy"), ValueError, "regression"),
        (dict(loss="hinge"), ValueError, "loss"),
        (dict(dynamics=GradientDescent(Schedule([0.1] * 5))), ValueError, "5 rates"),
        (dict(dynamics=GradientDescent(Schedule([0.0] * 2 * STEPS)), lr_fraction=0.5), ValueError, "every rate"),
    ],
)
def test_bad_training_arguments(data, kwargs, error, match, monkeypatch):
    import ntksolve.comparison as cmp

    monkeypatch.setattr(cmp, "_warm_up", lambda *a: pytest.fail("work started"))
    with pytest.raises(error, match=match):
        _sweep(data, **kwargs)


def test_a_diverging_recurrence_is_reported_not_drawn(data):
    rule = GradientDescent(9.0, momentum=0.9)  # batches of 4 at nearly the full-batch critical rate
    rep = _sweep(data, dynamics=rule, batch_size=4)
    for i, r in enumerate(rep.rows):
        _, twin, _, _ = _by_hand(data, r["width"], rule, batch_size=4)
        grew = np.max(twin.train_loss) > 1e6 * twin.train_loss[0] or not np.all(np.isfinite(twin.train_loss))
        assert (r["status_empirical"] == "diverges") == grew
        if grew:
            assert "grew to" in r["message_empirical"] or "non-finite" in r["message_empirical"]
            assert r["gap_test_empirical"] is None and rep.trajectories[i].get("loss_train_empirical") is None
    assert any(r["status_empirical"] == "diverges" for r in rep.rows)
    json.dumps(rep.to_dict(), allow_nan=False)
