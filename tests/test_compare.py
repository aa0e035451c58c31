"""compare: the gaps shrink with width, the report is strict JSON, bad cases are reported not NaN."""

import json

import numpy as np
import pytest

from ntksolve.comparison import GAP_KEYS, SLOPE_KEYS, compare, default_record_steps
from ntksolve.datasets import default_regression

from compare_support import ROW_NUMBERS, slow_analytic_kernels, sweep_on


@pytest.fixture(scope="module")
def data():
    return default_regression(n_train=40, n_test=30, random_state=1)


@pytest.fixture(scope="module")
def sweep(data):
    return sweep_on(data, [32, 256, 2048], steps=40, n_records=10, random_state=0)


def test_gaps_shrink_with_width(sweep):
    rows = sweep.rows
    assert [r["width"] for r in rows] == [32, 256, 2048]
    for key in ("gap_train_empirical", "gap_test_empirical", "gap_train_analytic", "gap_test_analytic"):
        assert rows[-1][key] < 0.5 * rows[0][key], key
    slopes = sweep.slopes()
    # linearisation error alone (empirical) falls faster than kernel fluctuation + linearisation
    assert slopes["slope_test_empirical"] < slopes["slope_test_analytic"] < 0
    assert rows[-1]["kernel_change_final"] < rows[0]["kernel_change_final"]
    # at the widest width the empirical prediction of the final test loss is close
    assert rows[-1]["test_loss_rel_error_empirical"] < 0.05


def test_report_json(sweep):
    d = json.loads(json.dumps(sweep.to_dict(), allow_nan=False))
    for key in SLOPE_KEYS:
        assert isinstance(d[key], float)
    for row in d["rows"]:
        for key in ROW_NUMBERS:
            assert isinstance(row[key], float) and np.isfinite(row[key]), key
    assert d["settings"]["record_at"] == default_record_steps(40, 10).tolist()
    assert "width" in sweep.table() and "slope" in sweep.table()


def test_deterministic_per_width(data, sweep):
    # a width's network depends only on (seed, width), not on which other widths are swept
    one = sweep_on(data, [256], steps=40, n_records=10, random_state=0)
    assert one.rows[0]["gap_test_analytic"] == sweep.rows[1]["gap_test_analytic"]
    assert one.slopes()["slope_test_analytic"] is None  # one width: no slope, not NaN


def test_standard_parameterisation_and_several_outputs(data):
    y2 = np.hstack([data.y_train, -0.5 * data.y_train])
    y2t = np.hstack([data.y_test, -0.5 * data.y_test])
    rep = compare(
        data.X_train,
        y2,
        [32, 512],
        X_test=data.X_test,
        y_test=y2t,
        parameterization="standard",
        steps=20,
        n_records=6,
        progress=False,
    )
    assert rep.settings["empirical_kernel"] == "full"
    for r in rep.rows:
        assert r["gap_test_analytic"] is None and not r["diverged"]
        # each network's own critical rate: in standard parameterisation it falls with width
        assert r["learning_rate"] == pytest.approx(0.5 * r["critical_learning_rate"])
    assert rep.rows[1]["gap_train_empirical"] < rep.rows[0]["gap_train_empirical"]
    assert rep.to_dict()["slope_test_analytic"] is None


def test_diverging_learning_rate_is_reported_without_nan(data):
    rep = sweep_on(data, [32, 64], learning_rate=1e3, steps=200, n_records=5)
    assert all(r["diverged"] for r in rep.rows)
    assert "critical learning rate" in rep.rows[0]["message"]
    text = json.dumps(rep.to_dict(), allow_nan=False)  # raises on NaN/inf
    assert "NaN" not in text and "nan" not in rep.table().lower().replace("diverged", "")
    assert "diverged" in rep.table()


def test_interrupt_keeps_finished_widths(data):
    seen = []

    def stop_after_first(row, report):
        seen.append(row["width"])
        raise KeyboardInterrupt

    rep = sweep_on(data, [16, 32, 64], steps=5, n_records=3, on_width_done=stop_after_first)
    assert rep.interrupted and seen == [16] and [r["width"] for r in rep.rows] == [16]
    assert rep.to_dict()["interrupted"] is True


def _tiny_sweep(data, **kwargs):
    """``compare`` of one width-8 network for 2 steps on ``data``, any argument replaced by ``kwargs``."""
    args = dict(X=data.X_train, y=data.y_train, widths=[8], X_test=data.X_test, y_test=data.y_test, steps=2)
    return compare(**{**args, "progress": False, **kwargs})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(widths=[]), "empty"),
        (dict(widths=[8, 8]), "repeat"),
        (dict(widths=[0]), "positive"),
        (dict(lr_fraction=2.5), "lr_fraction"),
        (dict(activation="nope"), "activation"),
        (dict(steps=0), "steps"),
        (dict(y_test=np.ones((30, 2))), "y_test"),
    ],
)
def test_bad_arguments(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _tiny_sweep(data, **kwargs)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("missing", ["y", "y_test"])
def test_missing_targets_are_named_as_missing(data, loss, missing):
    labels = dict(y=np.arange(data.X_train.shape[0]) % 2, y_test=np.arange(data.X_test.shape[0]) % 2)
    kwargs = labels if loss == "cross_entropy" else {}
    with pytest.raises(TypeError, match=f"{missing} is None: compare needs"):
        _tiny_sweep(data, loss=loss, **{**kwargs, missing: None})


def test_package_attribute_is_the_function_whatever_was_imported_first(data):
    import ntksolve
    from ntksolve.comparison import CompareReport  # binds ntksolve.comparison, never ntksolve.compare

    rep = ntksolve.compare(
        data.X_train, data.y_train, [8], X_test=data.X_test, y_test=data.y_test, steps=2, progress=False
    )
    assert isinstance(rep, CompareReport)


# ---------------------------------------------------------------------------------------------
# predictions that diverge, per width and per kernel
# ---------------------------------------------------------------------------------------------
def _critical_rates(data, widths, seed=0):
    """2N / lambda_max of the analytic NTK and of each width's network, from an explicit Jacobian."""
    import ntksolve
    from ntksolve import MLP, analytic_kernels

    N = data.X_train.shape[0]
    K = analytic_kernels(MLP((1,), "relu", 1.0, 0.1), data.X_train).ntk
    crit_an = 2 * N / np.linalg.eigvalsh(K)[-1]
    crit = {}
    for w in widths:
        net = MLP((w,), "relu", 1.0, 0.1)
        p = net.init(data.X_train.shape[1], random_state=np.random.default_rng(np.random.SeedSequence([seed, w])))
        J = ntksolve.jacobian(net, p, data.X_train)[:, 0, :]
        crit[w] = 2 * N / np.linalg.eigvalsh(J @ J.T)[-1]
    return crit_an, crit


@pytest.fixture(scope="module")
def between_rates(data):
    """A sweep at a rate between width 16's empirical critical rate and the analytic one."""
    widths = [16, 256, 2048]
    crit_an, crit = _critical_rates(data, widths)
    lr = 0.5 * (crit[16] + crit_an)
    assert crit[16] < lr < crit_an and crit[256] > lr and crit[2048] > lr  # the case this sweep is about
    rep = sweep_on(data, widths, learning_rate=lr, steps=40, n_records=10)
    return rep, lr, crit_an, crit


def test_prediction_status_follows_each_kernels_critical_rate(between_rates):
    rep, lr, crit_an, crit = between_rates
    for r in rep.rows:
        assert r["critical_learning_rate"] == pytest.approx(crit[r["width"]], rel=1e-8)
        assert r["critical_learning_rate_analytic"] == pytest.approx(crit_an, rel=1e-8)
        assert r["status_empirical"] == ("diverges" if lr >= crit[r["width"]] else "ok")
        assert r["status_analytic"] == "ok"
    narrow = rep.rows[0]
    assert narrow["gap_test_empirical"] is None and narrow["loss_test_final_empirical"] is None
    assert f"{crit[16]:.4g}" in narrow["message_empirical"] and "critical rate" in narrow["message_empirical"]
    assert rep.trajectories[0]["loss_test_empirical"] is None  # no curve for the figures either
    # the empirical slope is fitted to the two widths whose prediction converges, the analytic to all three
    ws = rep.slope_widths()
    assert ws["slope_test_empirical"] == [256, 2048]
    expected = np.polyfit(
        np.log([256, 2048]), np.log([rep.rows[1]["gap_test_empirical"], rep.rows[2]["gap_test_empirical"]]), 1
    )[0]
    assert rep.slopes()["slope_test_empirical"] == pytest.approx(expected, rel=1e-12)
    if not narrow["diverged"]:
        assert ws["slope_test_analytic"] == [16, 256, 2048]
    table = rep.table()
    assert "diverges" in table and "(2 of 3 widths)" in table and f"{crit[16]:.4g}" in table


def test_prediction_above_the_analytic_rate_is_marked_while_real_training_converges():
    # The default data at learning rate 12: the analytic critical rate is 9.416, the real networks
    # train (their kernels move), and the closed forms grow to 1e55.
    d = default_regression()
    crit_an, crit = _critical_rates(d, [64, 128])
    assert crit_an == pytest.approx(9.416, abs=1e-3) and all(c < 12 for c in crit.values())
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # as the command runs it at N = 256: small products lose to BLAS threads
        rep = sweep_on(d, [64, 128], learning_rate=12.0, steps=300, n_records=12)
    for r in rep.rows:
        assert not r["diverged"] and r["loss_test_final_real"] < 1.0  # real training is fine
        assert r["status_analytic"] == r["status_empirical"] == "diverges"
        assert all(r[key] is None for key in GAP_KEYS)
        assert f"{crit_an:.4g}" in r["message_analytic"]
    assert all(v is None for v in rep.slopes().values())
    text = json.dumps(rep.to_dict(), allow_nan=False)
    assert "e+5" not in text and "e+1" not in text.replace("e+10", "")  # no 1e55 gaps or 1e111 losses
    table = rep.table()
    assert "diverges" in table and "e+" not in table.split("\n\n")[0]
    # once, not once per width: one analytic kernel serves every width
    assert table.count("analytic-NTK prediction diverges") == 1
    # the figures draw no diverging curve and say why
    pytest.importorskip("matplotlib")
    from ntksolve.plots import draw_gap_vs_width, draw_loss_trajectories

    fig = draw_loss_trajectories(rep.to_dict())
    for ax in fig.axes:
        assert all(np.nanmax(line.get_ydata()) < 10 for line in ax.get_lines())
    notes = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "analytic-NTK prediction diverges for all widths" in notes and "9.42" in notes
    fig = draw_gap_vs_width(rep)
    assert not fig.axes[0].get_lines()  # nothing to draw: every prediction diverges
    assert "diverges" in " ".join(t.get_text() for t in fig.axes[0].texts)


def test_gap_of_huge_but_finite_outputs_is_finite():
    from ntksolve.report import _rel_rmse

    a = np.full((3, 4, 1), 1e200)
    assert _rel_rmse(a, -a, 1.0) == pytest.approx(2e200)  # sqrt(mean(d^2)) would square to inf
    assert _rel_rmse(a, a.copy(), 1.0) == 0.0
    assert _rel_rmse(np.full((1, 2, 1), np.inf), a[:1, :2], 1.0) is None


# ---------------------------------------------------------------------------------------------
# the report's state, timings, progress, environment, limits
# ---------------------------------------------------------------------------------------------
def test_report_says_its_state_at_every_save(data, tmp_path):
    path = tmp_path / "r.json"
    seen = []

    def save(report):
        report.write_json(path)
        d = json.loads(path.read_text())
        seen.append((d["state"], d["widths_done"], d["widths_pending"], d["interrupted"]))

    sweep_on(data, [32, 16], steps=5, n_records=3, on_state=save)
    assert seen[0] == ("running", [], [16, 32], False)
    assert ("running", [16], [32], False) in seen  # what a SIGKILL after the first width leaves
    assert seen[-1] == ("complete", [16, 32], [], False)

    def boom(row, report):
        raise RuntimeError("disk on fire")

    seen.clear()
    with pytest.raises(RuntimeError, match="disk on fire"):
        sweep_on(data, [16, 32], steps=5, n_records=3, on_width_done=boom, on_state=save)
    assert seen[-1][0] == "failed" and seen[-1][1] == [16]
    assert "disk on fire" in json.loads(path.read_text())["message"]


def test_one_off_analytic_cost_is_counted_once(data, monkeypatch):
    # A fake clock: the analytic kernels "take" 1000 s each time they are computed. Each width's
    # time_predict must not contain them; the sweep total counts them once.
    slow_analytic_kernels(monkeypatch, 1000.0)
    rep = sweep_on(data, [16, 32], steps=5, n_records=3)
    s = rep.settings
    assert 2000.0 <= s["time_analytic_kernels"] < 2100.0
    for r in rep.rows:
        assert r["time_predict_analytic"] < 100.0
        assert r["speedup"] == pytest.approx(r["time_train"] / r["time_predict"])
    total_pred = s["time_analytic_kernels"] + sum(r["time_predict"] for r in rep.rows)
    assert s["speedup_sweep"] == pytest.approx(sum(r["time_train"] for r in rep.rows) / total_pred)
    assert "made once" in rep.table() and "one-off included" in rep.table()


def test_progress_counts_work_not_steps(data, monkeypatch, capsys):
    import ntksolve.comparison as cmp

    fractions = []

    class Recording(cmp._Progress):
        def end_width(self):
            super().end_width()
            fractions.append(self.done / self.total)

    monkeypatch.setattr(cmp, "_Progress", Recording)
    sweep_on(data, [16, 1024], steps=20, n_records=4, progress=True)
    # a width-16 step does 1/64 of the work of a width-1024 step: a bar over steps would say 50%
    assert fractions[0] < 0.05 and fractions[-1] == pytest.approx(1.0)
    err = capsys.readouterr().err
    assert "width 1024 (2/2)" in err and "FLOP" in err


def test_work_model_scales_like_the_weights():
    from ntksolve.sweep_checks import _Sizes, _width_work

    # d = 8, depth 2: per step 6 N (8 n + n^2 + n) flops, from the GEMM shapes of one forward+backward pass
    s = _Sizes(100, 50, 8, 1, 2, 10, False)
    for n in (64, 4096):
        assert _width_work(s, n, 300, 10)[1] == 6 * 100 * (8 * n + n * n + n)


def test_environment_is_recorded(sweep):
    import numba
    import scipy
    import sklearn

    import ntksolve

    v = sweep.settings["versions"]
    assert v["ntksolve"] == ntksolve.__version__ and v["numpy"] == np.__version__
    assert v["scipy"] == scipy.__version__ and v["numba"] == numba.__version__
    assert v["scikit-learn"] == sklearn.__version__
    blas = sweep.settings["blas"]
    assert any(b.get("internal_api") in ("openblas", "mkl", "blis", "flexiblas", "accelerate") for b in blas)
    assert all(isinstance(b.get("num_threads"), int) for b in blas)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(widths=[10**9]), ValueError, "MAX_WIDTH"),
        (dict(depth=101), ValueError, "MAX_DEPTH"),
        (dict(n_records=5000), ValueError, "MAX_RECORDS"),
        (dict(widths=[2**19], depth=3), MemoryError, "largest width that fits"),
    ],
)
def test_resource_limits_before_any_work(data, kwargs, error, match, monkeypatch):
    import ntksolve.comparison as cmp

    monkeypatch.setattr(cmp, "_warm_up", lambda *a: pytest.fail("work started"))
    with pytest.raises(error, match=match):
        _tiny_sweep(data, **kwargs)


def test_memory_estimate_bounds_the_measured_peak(data):
    # tracemalloc sees numpy's allocations: the estimate must be an upper bound, and not a wild one
    import tracemalloc

    from ntksolve.sweep_checks import _Sizes, _width_memory

    width = 1024
    sweep_on(data, [width], steps=3, n_records=3)  # compiled and warm: the measured run allocates only arrays
    tracemalloc.start()
    try:
        sweep_on(data, [width], steps=3, n_records=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    est = _width_memory(_Sizes(40, 30, 8, 1, 1, 3, False), width)
    assert peak <= est <= 3 * peak


def test_interrupt_during_compilation_is_held_then_delivered(data, monkeypatch):
    # numba's compiler calls back from C, where a KeyboardInterrupt is swallowed: the warm-up holds
    # Ctrl-C and delivers it when the compilation is done
    import signal

    import ntksolve.comparison as cmp

    finished = []

    def warm_up(*args):
        # raise_signal delivers to this thread before it returns (a kill() of the whole process
        # may land on a BLAS thread and reach Python's handler only later, under load)
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):  # give the handler every chance to run inside
            sum(range(100))
        finished.append(True)

    monkeypatch.setattr(cmp, "_warm_up", warm_up)
    rep = sweep_on(data, [8], steps=2)
    assert finished == [True] and rep.state == "interrupted" and rep.rows == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
