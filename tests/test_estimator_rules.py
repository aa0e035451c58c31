"""The estimators with training rules: NTKClassifier on cross-entropy, weight decay, schedules in CV.

References, each computed another way: the function-space recurrence driven by hand on the same
kernel (``sgd_cross_entropy``), the explicitly linearised network stepped in parameter space
(tests/reference_linearised.py), explicit refits per fold and step, and gradient flow as the
small-rate limit of discrete steps.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.datasets import load_digits
from sklearn.model_selection import KFold

import ntksolve
from ntksolve import NTKClassifier, NTKRegressor, NTKRegressorCV
from ntksolve.dynamics import Adam, GradientDescent, Schedule
from ntksolve.dynamics.function_space import flow_cross_entropy, sgd_cross_entropy, shuffled_batches
from reference_linearised import Linearised

STEPS = np.array([0, 1, 7, 30, 60])


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 4)) * 2
    lab = rng.integers(0, 3, 48)
    X = centres[lab] + rng.standard_normal((48, 4))
    names = np.array(["cat", "ant", "bee"])  # sorted: ant, bee, cat
    return X[:36], names[lab[:36]], X[36:], names[lab[36:]]


def _analytic(X, Xt):
    net = ntksolve.MLP((512,), "relu", 1.0, 0.1)
    return ntksolve.analytic_kernels(net, X).ntk, ntksolve.analytic_kernels(net, Xt, X).ntk


# -- cross-entropy: the recurrence by hand, the linearised network --------------------------------
@pytest.mark.parametrize("batch_size", [None, 8])
def test_log_loss_probabilities_are_sgd_cross_entropy_by_hand(blobs, batch_size):
    X, y, Xt, _ = blobs
    rule = GradientDescent(Schedule.cosine(3.0, 60, min_lr=0.3), momentum=0.9, nesterov=True)
    clf = NTKClassifier(
        loss="log_loss", dynamics=rule, time=60, diag_reg=0.05, batch_size=batch_size, random_state=3
    ).fit(X, y)
    assert list(clf.classes_) == ["ant", "bee", "cat"]
    K, Ks = _analytic(X, Xt)
    N = X.shape[0]
    batches = None if batch_size is None else shuffled_batches(N, batch_size, 60, random_state=clf._batch_seed)
    labels = np.searchsorted(["ant", "bee", "cat"], y)
    ref = sgd_cross_entropy(
        K + 0.05 * np.mean(np.diag(K)) * np.eye(N),
        labels,
        np.zeros((N, 3)),
        STEPS,
        dynamics=rule,
        batches=batches,
        k_test_train=Ks,
        fx_test_0=np.zeros((len(Xt), 3)),
    )
    times = [60, 0, 7, 30, 1, 60]  # any order, repeats: each answered from the one run
    order = [4, 0, 2, 3, 1, 4]
    P = clf.predict_proba_trajectory(Xt, times)
    assert P.shape == (6, len(Xt), 3)
    np.testing.assert_allclose(P, softmax(ref.test, axis=-1)[order], rtol=0, atol=1e-12)
    np.testing.assert_allclose(clf.decision_trajectory(Xt, STEPS), ref.test, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(P.sum(axis=-1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(clf.predict_proba(Xt), P[0], rtol=0, atol=0)
    np.testing.assert_allclose(clf.predict_log_proba(Xt), np.log(P[0]), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(clf.predict(Xt), clf.classes_[np.argmax(ref.test[-1], axis=1)])
    for staged, expected in zip(clf.staged_predict_proba(Xt, STEPS), softmax(ref.test, axis=-1)):
        np.testing.assert_allclose(staged, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(clf.loss_curve(STEPS), ref.train_loss, rtol=1e-12)
    assert ref.train_loss[-1] < 0.5 * ref.train_loss[0]  # it trained


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_empirical_log_loss_is_the_linearised_network(parameterization):
    """Two classes, one logit (BCEWithLogitsLoss): the empirical kernel is then the network's exact
    NTK, so the classifier is the linearised network stepped in parameter space, weight decay and
    minibatches included."""
    lin = Linearised(k=1, n_train=8, seed=4, parameterization=parameterization)
    assert set(lin.labels) == {0, 1}
    lmax = np.linalg.eigvalsh(lin.K)[-1]
    lr0 = 2.0 * lin.N / lmax
    rule = GradientDescent(Schedule.step(lr0, 20, 0.5), momentum=0.9, weight_decay=0.01)
    clf = NTKClassifier(
        loss="log_loss",
        kernel="empirical",
        hidden_layer_sizes=(12,),
        activation="erf",
        bias_std=0.2,
        parameterization=parameterization,
        random_state=4,
        dynamics=rule,
        time=60,
        diag_reg=0.0,
        batch_size=3,
    ).fit(lin.X, lin.labels)
    np.testing.assert_array_equal(clf.params_[0][0], lin.params[0][0])
    batches = shuffled_batches(lin.N, 3, 60, random_state=clf._batch_seed)
    ref_tr, ref_te = lin.sgd(
        STEPS, rule.learning_rate.rates(60), momentum=0.9, weight_decay=0.01, batches=batches, loss="ce"
    )
    np.testing.assert_allclose(clf.decision_trajectory(lin.Xt, STEPS), ref_te[..., 0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(clf.decision_trajectory(lin.X, STEPS), ref_tr[..., 0], rtol=0, atol=1e-10)
    P = clf.predict_proba_trajectory(lin.Xt, STEPS)
    np.testing.assert_allclose(P[..., 1], expit(ref_te[..., 0]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(P[..., 0], expit(-ref_te[..., 0]), rtol=0, atol=1e-10)
    assert abs(ref_te[-1] - ref_te[0]).max() > 0.1  # the outputs moved


def test_log_loss_flow_is_the_small_rate_limit_of_steps(blobs):
    X, y, Xt, _ = blobs
    eta, t = 2.0, 6.0
    flow = NTKClassifier(loss="log_loss", learning_rate=eta, time=t).fit(X, y)
    K, Ks = _analytic(X, Xt)
    N = X.shape[0]
    labels = np.searchsorted(clf_classes := np.unique(y), y)
    by_hand = flow_cross_entropy(
        K + 0.1 * np.mean(np.diag(K)) * np.eye(N),
        labels,
        np.zeros((N, 3)),
        [t],
        learning_rate=eta,
        k_test_train=Ks,
        fx_test_0=np.zeros((len(Xt), 3)),
    )
    np.testing.assert_array_equal(flow.classes_, clf_classes)
    P = flow.predict_proba(Xt)
    np.testing.assert_allclose(P, softmax(by_hand.test[0], axis=-1), rtol=0, atol=1e-8)
    both = flow.predict_proba(np.vstack([Xt, X]))  # more test than training points: through coefficients
    np.testing.assert_allclose(both[: len(Xt)], P, rtol=0, atol=1e-8)
    errors = []
    for m in (4, 8, 16):
        steps = NTKClassifier(loss="log_loss", dynamics="discrete", learning_rate=eta / m, time=int(m * t)).fit(X, y)
        errors.append(np.abs(steps.predict_proba(Xt) - P).max())
    # first order in eta/m: each halving of the rate halves the gap
    assert 1.8 < errors[0] / errors[1] < 2.2 and 1.8 < errors[1] / errors[2] < 2.2
    assert errors[2] < 5e-3


def test_log_loss_on_digits_is_well_above_chance():
    """300 digits, 300 steps at rate 20 (torch's CrossEntropyLoss units): 0.917 measured on the
    next 300. The same kernel's converged squared-loss classifier gets 0.95 and logistic
    regression on the pixels 0.93 on this split; chance is 0.1."""
    X, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))
    X, y = X[idx] / 16.0, y[idx]
    clf = NTKClassifier(loss="log_loss", dynamics="discrete", learning_rate=20.0, time=300).fit(X[:300], y[:300])
    acc = clf.score(X[300:600], y[300:600])
    assert acc >= 0.9
    assert clf.loss_curve([300])[0] < 0.2 < np.log(10) == pytest.approx(clf.loss_curve([0])[0])


def test_one_recurrence_per_call(blobs, monkeypatch):
    from ntksolve.sklearn import _solve

    X, y, Xt, _ = blobs
    runs = []
    real = _solve._fs.sgd_cross_entropy
    monkeypatch.setattr(_solve._fs, "sgd_cross_entropy", lambda *a, **kw: runs.append(a[3]) or real(*a, **kw))
    clf = NTKClassifier(loss="log_loss", dynamics="discrete", learning_rate=2.0, time=40).fit(X, y)
    assert len(runs) == 1 and runs[0].tolist() == [40]  # fit runs the recurrence to time, once
    kept = clf.predict_proba(Xt)  # fit's coefficients: no run
    clf.predict(X)
    clf.loss_curve([40])
    assert len(runs) == 1
    clf.predict_proba_trajectory(Xt, np.arange(0, 41, 5))
    assert len(runs) == 2 and runs[1].tolist() == list(range(0, 41, 5))
    list(clf.staged_predict(Xt, [10, 20, 40]))
    assert len(runs) == 3
    direct = clf.predict_proba_trajectory(Xt, [0, 40])[
        1
    ]  # fewer test than training points: carried through the run itself
    assert len(runs) == 4
    np.testing.assert_allclose(kept, direct, rtol=0, atol=1e-13)  # the two paths agree


# -- weight decay in the empirical estimators -------------------------------------------------------
def test_empirical_regressor_with_weight_decay_is_parameter_space_sgd():
    lin = Linearised(k=1, n_train=8, seed=2)
    lmax = np.linalg.eigvalsh(lin.K)[-1]
    lr = 0.5 * 2 * lin.N / lmax
    rule = GradientDescent(lr, momentum=0.5, weight_decay=0.05)
    reg = NTKRegressor(
        kernel="empirical",
        hidden_layer_sizes=(12,),
        activation="erf",
        bias_std=0.2,
        random_state=2,
        dynamics=rule,
        time=60,
        diag_reg=0.0,
        normalize_y=False,
    ).fit(lin.X, lin.y[:, 0])
    ref_tr, ref_te = lin.sgd(STEPS, np.full(60, lr), momentum=0.5, weight_decay=0.05)
    np.testing.assert_allclose(reg.predict_trajectory(lin.Xt, STEPS), ref_te[..., 0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(reg.predict(lin.Xt), ref_te[-1, :, 0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(next(reg.staged_predict(lin.Xt, [30])), ref_te[3, :, 0], rtol=0, atol=1e-10)
    mse = 0.5 * np.mean((ref_tr[..., 0] - lin.y[:, 0]) ** 2, axis=1)
    np.testing.assert_allclose(reg.loss_curve(STEPS), mse, rtol=1e-9)
    # without weight decay the answer differs: the decay is not ignored
    plain = NTKRegressor(**{**reg.get_params(), "dynamics": GradientDescent(lr, momentum=0.5)}).fit(lin.X, lin.y[:, 0])
    assert np.abs(plain.predict(lin.Xt) - reg.predict(lin.Xt)).max() > 1e-3


def test_cv_with_weight_decay_equals_refits_per_fold():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((24, 3)), rng.standard_normal(24)
    kw = dict(
        kernel="empirical",
        hidden_layer_sizes=(16,),
        random_state=0,
        dynamics=GradientDescent(0.5, momentum=0.9, weight_decay=0.02),
    )
    cv = NTKRegressorCV(times=[5, 40], diag_regs=(1e-2,), cv=KFold(3), **kw).fit(X, y)
    for f, (tr, te) in enumerate(KFold(3).split(X)):
        for j, t in enumerate((5, 40)):
            r = NTKRegressor(time=t, diag_reg=1e-2, **kw).fit(X[tr], y[tr])
            assert cv.mse_path_[0, j, f] == pytest.approx(np.mean((r.predict(X[te]) - y[te]) ** 2), rel=1e-9)
    with pytest.raises(ValueError, match="cv='loo' is the leave-one-out of kernel regression.*K-fold"):
        NTKRegressorCV(cv="loo", **kw).fit(X, y)


# -- schedules in the search -----------------------------------------------------------------------
def test_cv_chooses_the_stopping_step_of_a_schedule_as_refits_do():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((30, 3))
    y = np.sin(X[:, 0]) + 0.3 * rng.standard_normal(30)
    rule = GradientDescent(Schedule.warmup_cosine(0.5, 200, 10), momentum=0.9)
    steps = [1, 10, 50, 120, 200]
    cv = NTKRegressorCV(dynamics=rule, times=steps, diag_regs=(0.0, 1e-1), cv=KFold(3)).fit(X, y)
    for r, reg in enumerate((0.0, 1e-1)):
        for f, (tr, te) in enumerate(KFold(3).split(X)):
            for j, t in enumerate(steps):
                refit = NTKRegressor(dynamics=rule, time=t, diag_reg=reg).fit(X[tr], y[tr])
                mse = np.mean((refit.predict(X[te]) - y[te]) ** 2)
                assert cv.mse_path_[r, j, f] == pytest.approx(mse, rel=1e-9, abs=1e-12)
    i, j = np.unravel_index(np.argmin(cv.mse_path_.mean(axis=2)), (2, 5))
    assert (cv.diag_reg_, cv.time_) == ((0.0, 1e-1)[i], steps[j])


# -- refusals, before any work ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"loss": "log_loss"}, ValueError, "time = inf has no meaning for loss='log_loss'.*time=1000"),
        ({"loss": "softmax", "time": 5}, ValueError, "'log_loss', scikit-learn's name"),
        ({"loss": "hinge", "time": 5}, ValueError, "loss must be one of 'squared_error', 'log_loss'"),
        ({"loss": "log_loss", "time": 5, "dynamics": Adam()}, ValueError, "no function-space.*Train the network"),
        ({"loss": "log_loss", "time": 5, "dynamics": "adam"}, ValueError, "no function-space"),
        (
            {"loss": "log_loss", "time": 5, "dynamics": GradientDescent(1.0, weight_decay=0.1)},
            ValueError,
            "weight decay.*kernel='analytic'.*no parameters.*kernel='empirical'",
        ),
        ({"loss": "log_loss", "time": 2.5, "dynamics": "discrete"}, ValueError, "whole number of steps"),
        ({"loss": "log_loss", "time": 5, "batch_size": 4}, ValueError, "batch_size needs discrete steps"),
        (
            {"loss": "log_loss", "time": 5, "batch_size": 0, "dynamics": "discrete"},
            ValueError,
            "batch_size must be None or a positive int",
        ),
        ({"time": 5, "batch_size": 4}, ValueError, "batch_size needs loss='log_loss'"),
        ({"loss": "log_loss", "time": 5, "chunks": 16}, ValueError, "loss='log_loss' runs step by step.*chunks=None"),
    ],
)
def test_classifier_refusals(blobs, params, error, match):
    X, y = blobs[0], blobs[1]
    with pytest.raises(error, match=match):
        NTKClassifier(**params).fit(X, y)


def test_trajectory_and_probability_refusals(blobs):
    X, y, Xt, _ = blobs
    clf = NTKClassifier(loss="log_loss", time=5.0).fit(X, y)
    with pytest.raises(ValueError, match="times = inf has no meaning for loss='log_loss'"):
        clf.predict_proba_trajectory(Xt, [1.0, np.inf])
    with pytest.raises(ValueError, match="time = inf has no meaning"):
        clf.set_params(time=np.inf).predict(Xt)
    mse = NTKClassifier().fit(X, y)
    assert not hasattr(mse, "predict_proba") and not hasattr(mse, "staged_predict_proba")
    with pytest.raises(AttributeError, match="has no attribute 'predict_proba'") as err:
        mse.predict_proba(Xt)
    assert "needs loss='log_loss'" in str(err.value.__cause__) and "not probabilities" in str(err.value.__cause__)


@pytest.mark.parametrize(
    "rule",
    [
        GradientDescent(0.1, momentum=0.9),
        GradientDescent(Schedule.cosine(0.1, 10)),
        GradientDescent(0.1, weight_decay=1e-3),
        GradientDescent(0.1, nesterov=True, momentum=0.5),
    ],
)
def test_tiled_path_refuses_rules_it_cannot_run_before_any_tile(blobs, rule, monkeypatch):
    from ntksolve.sklearn import _solve

    X, y = blobs[0], blobs[1]
    monkeypatch.setattr(_solve, "fit_tiled", lambda *a, **kw: pytest.fail("tiles were computed"))
    for est in (
        NTKRegressor(kernel="empirical", hidden_layer_sizes=(4,), random_state=0, dynamics=rule, time=10, chunks=16),
        NTKClassifier(kernel="empirical", hidden_layer_sizes=(4,), random_state=0, dynamics=rule, time=10, chunks=16),
    ):
        with pytest.raises(
            ValueError,
            match="chunks=... .the tiled solve. supports gradient flow and plain "
            "constant-rate descent only.*chunks=None",
        ):
            est.fit(X, y if isinstance(est, NTKClassifier) else np.arange(len(X), dtype=float))
        assert not hasattr(est, "network_")  # refused before the network was made


# -- persistence -----------------------------------------------------------------------------------
def test_log_loss_models_round_trip(blobs, tmp_path):
    import json
    import zipfile

    X, y, Xt, _ = blobs
    for est in (
        NTKClassifier(loss="log_loss", dynamics="discrete", learning_rate=2.0, time=30, batch_size=5, random_state=1),
        NTKClassifier(
            loss="log_loss", kernel="empirical", hidden_layer_sizes=(8,), random_state=2, learning_rate=2.0, time=3.5
        ),
    ):
        est.fit(X, y)
        est.save(tmp_path / "m.npz")
        back = ntksolve.load(tmp_path / "m.npz")
        assert back.get_params() == est.get_params()
        np.testing.assert_array_equal(
            back.predict_proba_trajectory(Xt, [1, 3, 30 if est.batch_size else 3.5]),
            est.predict_proba_trajectory(Xt, [1, 3, 30 if est.batch_size else 3.5]),
        )
    # a rule object is refused, as for the regressor
    est = NTKClassifier(loss="log_loss", dynamics=GradientDescent(1.0, momentum=0.9), time=5).fit(X, y)
    with pytest.raises(ValueError, match="pickle-free format does not store"):
        est.save(tmp_path / "r.npz")
    # a squared-loss classifier's file names neither new parameter: the files of earlier versions load
    NTKClassifier().fit(X, y).save(tmp_path / "old.npz")
    with zipfile.ZipFile(tmp_path / "old.npz") as z:
        meta = json.loads(np.load(z.open("__ntksolve__.npy")).item())
    assert "loss" not in meta["params"] and "batch_size" not in meta["params"]
    np.testing.assert_array_equal(
        ntksolve.load(tmp_path / "old.npz").decision_function(Xt), NTKClassifier().fit(X, y).decision_function(Xt)
    )


def test_cross_entropy_is_log_loss_under_ntksolves_own_name(blobs):
    from ntksolve import NTKClassifier

    X, labels = blobs[0], blobs[1]
    a = NTKClassifier(loss="log_loss", learning_rate=2.0, time=40).fit(X, labels)
    b = NTKClassifier(loss="cross_entropy", learning_rate=2.0, time=40).fit(X, labels)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


@pytest.mark.parametrize("time", [1e12, 1e19, 1e300])
def test_log_loss_refuses_step_counts_it_cannot_run_by_name(blobs, time):
    """A cross-entropy run far beyond memory is refused naming the step count and the fix (a count
    past 2^63 wrapped to negative steps: "steps must be non-negative")."""
    X, y = blobs[0], blobs[1]
    clf = NTKClassifier(loss="log_loss", dynamics="discrete", time=time)
    with pytest.raises((ValueError, MemoryError), match="step by step.*ask for fewer steps"):
        clf.fit(X, y)
    # a runnable count is the recurrence itself (the ridge on the train kernel only)
    clf.set_params(time=3).fit(X, y)
    K, Ks = _analytic(X, blobs[2])
    Kr = K + 0.1 * np.mean(np.diag(K)) * np.eye(K.shape[0])
    Y, M = clf.y_train_, Ks.shape[0]
    ref = sgd_cross_entropy(
        Kr, Y, np.zeros_like(Y), [3], dynamics=GradientDescent(1.0), k_test_train=Ks, fx_test_0=np.zeros((M, 3))
    )
    np.testing.assert_allclose(clf.decision_function(blobs[2]), ref.test[-1], rtol=1e-12, atol=1e-14)
