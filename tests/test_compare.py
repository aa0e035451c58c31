"""compare: the gaps shrink with width, the report is strict JSON, bad cases are reported not NaN."""
import json

import numpy as np
import pytest

from ntksolve.comparison import SLOPE_KEYS, compare, default_record_steps
from ntksolve.datasets import default_regression


@pytest.fixture(scope="module")
def data():
    return default_regression(n_train=40, n_test=30, random_state=1)


@pytest.fixture(scope="module")
def sweep(data):
    return compare(data.X_train, data.y_train, [32, 256, 2048], X_test=data.X_test, y_test=data.y_test,
                   steps=40, n_records=10, random_state=0, progress=False)


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
        for key in ("gap_train_empirical", "gap_test_analytic", "loss_test_final_real", "loss_test_final_empirical",
                    "kernel_change_final", "time_train", "time_predict", "speedup"):
            assert isinstance(row[key], float) and np.isfinite(row[key]), key
    assert d["settings"]["record_at"] == default_record_steps(40, 10).tolist()
    assert "width" in sweep.table() and "slope" in sweep.table()


def test_deterministic_per_width(data, sweep):
    # a width's network depends only on (seed, width), not on which other widths are swept
    one = compare(data.X_train, data.y_train, [256], X_test=data.X_test, y_test=data.y_test,
                  steps=40, n_records=10, random_state=0, progress=False)
    assert one.rows[0]["gap_test_analytic"] == sweep.rows[1]["gap_test_analytic"]
    assert one.slopes()["slope_test_analytic"] is None  # one width: no slope, not NaN


def test_standard_parameterisation_and_several_outputs(data):
    y2 = np.hstack([data.y_train, -0.5 * data.y_train])
    y2t = np.hstack([data.y_test, -0.5 * data.y_test])
    rep = compare(data.X_train, y2, [32, 512], X_test=data.X_test, y_test=y2t, parameterization="standard",
                  steps=20, n_records=6, progress=False)
    assert rep.settings["empirical_kernel"] == "full"
    for r in rep.rows:
        assert r["gap_test_analytic"] is None and not r["diverged"]
        # each network's own critical rate: in standard parameterisation it falls with width
        assert r["learning_rate"] == pytest.approx(0.5 * r["critical_learning_rate"])
    assert rep.rows[1]["gap_train_empirical"] < rep.rows[0]["gap_train_empirical"]
    assert rep.to_dict()["slope_test_analytic"] is None


def test_diverging_learning_rate_is_reported_without_nan(data):
    rep = compare(data.X_train, data.y_train, [32, 64], X_test=data.X_test, y_test=data.y_test,
                  learning_rate=1e3, steps=200, n_records=5, progress=False)
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

    rep = compare(data.X_train, data.y_train, [16, 32, 64], X_test=data.X_test, y_test=data.y_test,
                  steps=5, n_records=3, progress=False, on_width_done=stop_after_first)
    assert rep.interrupted and seen == [16] and [r["width"] for r in rep.rows] == [16]
    assert rep.to_dict()["interrupted"] is True


@pytest.mark.parametrize("kwargs, match", [
    (dict(widths=[]), "empty"),
    (dict(widths=[8, 8]), "repeat"),
    (dict(widths=[0]), "positive"),
    (dict(lr_fraction=2.5), "lr_fraction"),
    (dict(activation="nope"), "activation"),
    (dict(steps=0), "steps"),
    (dict(y_test=np.ones((30, 2))), "y_test"),
])
def test_bad_arguments(data, kwargs, match):
    args = dict(X=data.X_train, y=data.y_train, widths=[8], X_test=data.X_test, y_test=data.y_test, steps=2,
                progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        compare(**args)


def test_package_attribute_is_the_function_whatever_was_imported_first(data):
    import ntksolve
    from ntksolve.comparison import CompareReport  # binds ntksolve.comparison, never ntksolve.compare

    rep = ntksolve.compare(data.X_train, data.y_train, [8], X_test=data.X_test, y_test=data.y_test, steps=2,
                           progress=False)
    assert isinstance(rep, CompareReport)
