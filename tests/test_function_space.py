"""Function-space recurrences (minibatch SGD, cross-entropy, gradient flow) against independent runs.

The reference is SGD in parameter space on an explicitly linearised network
(``tests/reference_linearised.py``) and ``torch.optim.SGD`` stepping a torch module that computes
``f_0 + J (θ − θ_0)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from ntksolve.dynamics import gradient_descent_mse
from ntksolve.dynamics import function_space
from ntksolve.dynamics.adaptive import Adam
from ntksolve.dynamics.function_space import flow_cross_entropy, independent_batches, shuffled_batches
from ntksolve.dynamics.rules import GradientDescent, GradientFlow
from ntksolve.dynamics.schedules import Schedule
from ntksolve.nets.forward_mode import own_parameter_image
from reference_linearised import Linearised

RULES = [(0.0, False), (0.6, False), (0.6, True)]


def _with_rule(twin):
    """The twin called with torch.optim.SGD's keywords gathered into its GradientDescent rule."""

    def call(*args, learning_rate=1.0, momentum=0.0, nesterov=False, weight_decay=0.0, **kw):
        rule = GradientDescent(learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        return twin(*args, dynamics=rule, **kw)

    return call


sgd_mse = _with_rule(function_space.sgd_mse)
sgd_cross_entropy = _with_rule(function_space.sgd_cross_entropy)
STEPS = np.array([0, 1, 3, 12, 40])
TORCH_REASON = "needs the torch extra: pip install 'ntksolve[torch]'"


@pytest.fixture(scope="module")
def lin():
    return Linearised(k=2, n_train=8, seed=2)


def lr_of(lin, fraction=0.5):
    return fraction * 2 * lin.N * lin.k / np.linalg.eigvalsh(lin.K)[-1]


def run_mse(lin, rates_or_sched, **kw):
    images = {}
    if kw.get("weight_decay"):
        images = dict(
            image_train=own_parameter_image(lin.net, lin.params, lin.X),
            image_test=own_parameter_image(lin.net, lin.params, lin.Xt),
        )
    return sgd_mse(
        lin.full(lin.K, lin.N),
        lin.y,
        lin.f0,
        STEPS,
        k_test_train=lin.full(lin.Kt, lin.M),
        fx_test_0=lin.ft0,
        **images,
        **kw,
    )


@pytest.mark.parametrize("mu,nesterov", RULES)
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_sgd_mse_equals_parameter_space(lin, mu, nesterov, batched, wd):
    sched = Schedule.warmup_cosine(lr_of(lin), 40, 5, start_factor=0.2)
    batches = shuffled_batches(lin.N, 3, 40, random_state=1) if batched else None
    got = run_mse(lin, sched, learning_rate=sched, momentum=mu, nesterov=nesterov, weight_decay=wd, batches=batches)
    ref_tr, ref_te = lin.sgd(STEPS, sched.rates(40), momentum=mu, nesterov=nesterov, weight_decay=wd, batches=batches)
    np.testing.assert_allclose(got.train, ref_tr, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.test, ref_te, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.train_loss, 0.5 * np.mean((ref_tr - lin.y) ** 2, axis=(1, 2)), rtol=1e-10)
    assert got.batches is None or all(np.array_equal(a, b) for a, b in zip(got.batches, batches))


def test_sgd_mse_full_batch_plain_equals_closed_form(lin):
    # traced kernel of a one-output network: the same as gradient_descent_mse's discrete closed form
    one = Linearised(k=1, n_train=8, seed=3)
    lr = lr_of(one, 0.7)
    got = sgd_mse(
        one.K, one.y[:, 0], one.f0[:, 0], STEPS, learning_rate=lr, k_test_train=one.Kt, fx_test_0=one.ft0[:, 0]
    )
    pred = gradient_descent_mse(one.K, one.y[:, 0], lr, dynamics="discrete", method="eigh")
    tr, te = pred(STEPS.astype(float), one.f0[:, 0], one.ft0[:, 0], one.Kt)
    np.testing.assert_allclose(got.train, tr, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.test, te, rtol=0, atol=1e-10)


def test_traced_kernel_is_kernel_times_identity(lin):
    K, Kt = lin.K[::2, ::2], lin.Kt[::2, ::2]  # any PSD N × N kernel
    eye = np.eye(lin.k)
    kron = lambda A, n: np.kron(A, eye).reshape(n, lin.k, lin.N, lin.k).transpose(0, 2, 1, 3)
    batches = shuffled_batches(lin.N, 5, 40, random_state=0)
    kw = dict(learning_rate=Schedule.cosine(1.0, 40), momentum=0.5, batches=batches)
    a = sgd_mse(K, lin.y, lin.f0, STEPS, k_test_train=Kt, fx_test_0=lin.ft0, **kw)
    b = sgd_mse(kron(K, lin.N), lin.y, lin.f0, STEPS, k_test_train=kron(Kt, lin.M), fx_test_0=lin.ft0, **kw)
    np.testing.assert_allclose(a.train, b.train, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.test, b.test, rtol=0, atol=1e-12)
    c = sgd_cross_entropy(K, lin.labels, lin.f0, STEPS, k_test_train=Kt, fx_test_0=lin.ft0, **kw)
    d = sgd_cross_entropy(
        kron(K, lin.N), np.eye(lin.k)[lin.labels], lin.f0, STEPS, k_test_train=kron(Kt, lin.M), fx_test_0=lin.ft0, **kw
    )
    np.testing.assert_allclose(c.train, d.train, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c.test, d.test, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("mu,nesterov", RULES)
def test_cross_entropy_equals_parameter_space(k, mu, nesterov):
    lin = Linearised(k=k, n_train=8, seed=4)
    sched = Schedule.step(4.0, 10, 0.5)
    batches = independent_batches(lin.N, 4, 40, random_state=2)
    img = own_parameter_image(lin.net, lin.params, lin.X)
    img_t = own_parameter_image(lin.net, lin.params, lin.Xt)
    got = sgd_cross_entropy(
        lin.full(lin.K, lin.N),
        lin.labels,
        lin.f0,
        STEPS,
        learning_rate=sched,
        momentum=mu,
        nesterov=nesterov,
        weight_decay=0.01,
        batches=batches,
        k_test_train=lin.full(lin.Kt, lin.M),
        fx_test_0=lin.ft0,
        targets_test=lin.labels_test,
        image_train=img,
        image_test=img_t,
    )
    ref_tr, ref_te = lin.sgd(
        STEPS, sched.rates(40), momentum=mu, nesterov=nesterov, weight_decay=0.01, batches=batches, loss="ce"
    )
    np.testing.assert_allclose(got.train, ref_tr, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.test, ref_te, rtol=0, atol=1e-10)
    if k == 1:
        acc = np.mean((ref_tr[..., 0] > 0) == (lin.labels == 1), axis=1)
    else:
        acc = np.mean(np.argmax(ref_tr, axis=2) == lin.labels, axis=1)
    np.testing.assert_array_equal(got.train_accuracy, acc)
    assert got.train_loss[-1] < got.train_loss[0]


def torch_linearised(torch, lin):
    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.theta0 = torch.tensor(lin.theta0)
            self.theta = torch.nn.Parameter(self.theta0.clone())

        def forward(self, J, f0):
            return f0 + (J @ (self.theta - self.theta0)).reshape(f0.shape)

    return Lin()


@pytest.mark.parametrize("loss", ["mse", "ce", "bce"])
@pytest.mark.parametrize("mu,nesterov", RULES)
def test_function_space_equals_torch_sgd(loss, mu, nesterov):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    lin = Linearised(k=1 if loss == "bce" else 3, n_train=8, seed=5)
    model = torch_linearised(torch, lin)
    J, Jt = torch.tensor(lin.J), torch.tensor(lin.Jt)
    f0, ft0 = torch.tensor(lin.f0), torch.tensor(lin.ft0)
    lr, wd = (lr_of(lin) / 2 if loss == "mse" else 3.0), 0.02
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=mu, nesterov=nesterov, weight_decay=wd)
    sch = torch.optim.lr_scheduler.StepLR(opt, step_size=9, gamma=0.7)
    batches = shuffled_batches(lin.N, 3, 40, random_state=4)
    tr, te = [], []
    for s in range(41):
        if s in STEPS:
            with torch.no_grad():
                tr.append(model(J, f0).numpy().copy())
                te.append(model(Jt, ft0).numpy().copy())
        if s == 40:
            break
        b = torch.tensor(batches[s])
        out = model(J, f0)[b]
        opt.zero_grad()
        if loss == "mse":  # ours is 1/(2|b|k) Σ: MSELoss(mean)/2
            torch.nn.MSELoss()(out, torch.tensor(lin.y)[b]).div(2).backward()
        elif loss == "ce":
            torch.nn.CrossEntropyLoss()(out, torch.tensor(lin.labels)[b]).backward()
        else:
            torch.nn.BCEWithLogitsLoss()(out[:, 0], torch.tensor(lin.labels, dtype=torch.float64)[b]).backward()
        opt.step()
        sch.step()
    kw = dict(
        learning_rate=Schedule.step(lr, 9, 0.7),
        momentum=mu,
        nesterov=nesterov,
        weight_decay=wd,
        batches=batches,
        k_test_train=lin.full(lin.Kt, lin.M),
        fx_test_0=lin.ft0,
        image_train=own_parameter_image(lin.net, lin.params, lin.X),
        image_test=own_parameter_image(lin.net, lin.params, lin.Xt),
    )
    if loss == "mse":
        got = sgd_mse(lin.full(lin.K, lin.N), lin.y, lin.f0, STEPS, **kw)
    else:
        got = sgd_cross_entropy(lin.full(lin.K, lin.N), lin.labels, lin.f0, STEPS, **kw)
    np.testing.assert_allclose(got.train, np.array(tr), rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.test, np.array(te), rtol=0, atol=1e-10)


@pytest.mark.parametrize("k", [1, 3])
def test_cross_entropy_flow_is_the_small_rate_limit(k):
    lin = Linearised(k=k, n_train=6, seed=6)
    kw = dict(k_test_train=lin.full(lin.Kt, lin.M), fx_test_0=lin.ft0, targets_test=lin.labels_test)
    T = 4.0  # time in units of steps at rate 1
    flow = flow_cross_entropy(lin.full(lin.K, lin.N), lin.labels, lin.f0, [0.0, T / 2, T], **kw)
    errs = []
    for m in (50, 100):
        disc = sgd_cross_entropy(
            lin.full(lin.K, lin.N), lin.labels, lin.f0, [0, m * 2, m * 4], learning_rate=1.0 / m, **kw
        )
        errs.append(max(np.abs(disc.train - flow.train).max(), np.abs(disc.test - flow.test).max()))
    assert errs[1] < 1e-2 * np.abs(flow.train[-1] - flow.train[0]).max()
    assert 1.8 < errs[0] / errs[1] < 2.2  # first order in the rate
    np.testing.assert_allclose(flow.train_loss, disc.train_loss, rtol=1e-2)


def test_independent_batches_average_to_full_batch():
    # E[one step with a uniformly drawn batch] is the full-batch step and batches are drawn
    # independently of the state, so the mean of independent runs is the full-batch trajectory.
    lin = Linearised(k=1, n_train=10, n_test=3, seed=7, duplicate=False)
    steps, lr, runs = np.array([1, 2, 4]), lr_of(lin, 0.4), 3000
    kw = dict(learning_rate=lr, momentum=0.5, k_test_train=lin.Kt, fx_test_0=lin.ft0[:, 0])
    full = sgd_mse(lin.K, lin.y[:, 0], lin.f0[:, 0], steps, **kw)
    rng = np.random.default_rng(11)
    samples = np.array(
        [
            np.concatenate([r.train.ravel(), r.test.ravel()])
            for r in (
                sgd_mse(
                    lin.K,
                    lin.y[:, 0],
                    lin.f0[:, 0],
                    steps,
                    batches=independent_batches(10, 5, 4, random_state=rng),
                    **kw,
                )
                for _ in range(runs)
            )
        ]
    )
    mean, se = samples.mean(axis=0), samples.std(axis=0, ddof=1) / np.sqrt(runs)
    want = np.concatenate([full.train.ravel(), full.test.ravel()])
    z = np.abs(mean - want) / se
    # 39 entries; P(any |z| > 4.5) ≈ 3e-4 under the claim. Power: a step 5 % too large in the
    # batched runs gives max z ≈ 8.
    assert np.all(se > 0) and np.max(z) < 4.5
    # and the spread is real: one run is far from the mean in some entry
    assert np.max(np.abs(samples[0] - want)) > 10 * np.max(se)


def test_shuffled_batches_are_epochs():
    b = shuffled_batches(10, 4, 9, random_state=0)
    assert [x.size for x in b] == [4, 4, 2] * 3
    for e in range(3):
        assert sorted(np.concatenate(b[3 * e : 3 * e + 3]).tolist()) == list(range(10))
    d = shuffled_batches(10, 4, 4, random_state=0, drop_last=True)
    assert [x.size for x in d] == [4, 4, 4, 4]
    assert all(np.array_equal(x, y) for x, y in zip(shuffled_batches(10, 4, 9, random_state=0), b))


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda L: function_space.sgd_mse(L.K, L.y, L.f0, [1], dynamics=Adam()), ValueError, "no function-space"),
        (
            lambda L: function_space.sgd_cross_entropy(L.K, L.labels, L.f0, [1], dynamics=Adam(1e-2)),
            ValueError,
            "no function-space",
        ),
        (lambda L: function_space.sgd_mse(L.K, L.y, L.f0, [1], dynamics=GradientFlow(1.0)), TypeError, "flow"),
        (lambda L: function_space.sgd_mse(L.K, L.y, L.f0, [1], dynamics="sgd"), TypeError, "GradientDescent"),
        (lambda L: shuffled_batches(8, 9, 3), ValueError, "batch_size"),
        (lambda L: shuffled_batches(8, 0, 3), ValueError, "batch_size"),
        (lambda L: independent_batches(8, -1, 3), ValueError, "batch_size"),
        (lambda L: sgd_mse(L.K, L.y, L.f0, [2], batches=[[0, 1]]), ValueError, "1 entries but 2 steps"),
        (lambda L: sgd_mse(L.K, L.y, L.f0, [1], batches=[[0, 8]]), ValueError, r"outside \[0, 8\)"),
        (lambda L: sgd_mse(L.K, L.y, L.f0, [1], batches=[[]]), ValueError, "non-empty"),
        (lambda L: sgd_mse(L.K, L.y, L.f0, [1], weight_decay=0.1), ValueError, "own_parameter_image"),
        (lambda L: sgd_mse(L.K, L.y, L.f0, [1], momentum=1.0), ValueError, r"\[0, 1\)"),
        (lambda L: sgd_mse(L.K, L.y, L.f0, [3, 1]), ValueError, "ascending"),
        (lambda L: sgd_mse(L.K, L.y, L.f0, [1], learning_rate=-1.0), ValueError, "must be > 0"),
        (lambda L: sgd_mse(L.K, L.y, L.f0, [5], learning_rate=Schedule([0.1] * 4)), ValueError, "4 rates"),
        (lambda L: sgd_cross_entropy(L.K, L.labels + 2, L.f0, [1]), ValueError, r"integers in \[0, 2\)"),
        (lambda L: sgd_cross_entropy(L.K, L.labels + 0.5, L.f0, [1]), ValueError, "integers"),
        (lambda L: sgd_cross_entropy(L.K, np.full((8, 2), 0.5), L.f0, [1]), ValueError, "single 1 per row"),
        (lambda L: sgd_cross_entropy(L.K, np.ones((8, 2)), L.f0, [1]), ValueError, "single 1 per row"),
        (lambda L: sgd_cross_entropy(L.K, L.labels[:5], L.f0, [1]), ValueError, "labels of shape"),
        (lambda L: sgd_cross_entropy(L.K, ["a"] * 8, L.f0, [1]), ValueError, "class labels or one-hot"),
        (lambda L: sgd_cross_entropy(L.K, np.full(8, 2), L.f0[:, :1], [1]), ValueError, "0/1 labels"),
        (lambda L: flow_cross_entropy(L.K, L.labels, L.f0, [2.0, 1.0]), ValueError, "ascending"),
    ],
)
def test_bad_input_is_a_clear_error(call, exc, match):
    L = Linearised(k=2, n_train=8, seed=8)
    L.K = L.K[::2, ::2]  # traced (N, N)
    with pytest.raises(exc, match=match):
        call(L)
