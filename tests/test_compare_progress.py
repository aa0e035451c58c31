"""The sweep's progress display (in work, per width) and its honest speedups (the one-off counted once)."""

import io
import json
import re

import numpy as np
import pytest

from ntksolve.datasets import default_regression

from compare_support import slow_analytic_kernels, sweep_on


@pytest.fixture(scope="module")
def data():
    return default_regression(n_train=40, n_test=30, random_state=1)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _recording(monkeypatch, stream):
    import ntksolve.comparison as cmp
    from ntksolve.progress import _Progress

    made = []

    class Recording(_Progress):
        def __init__(self, enabled, works, widths):
            super().__init__(enabled, works, widths, stream=stream)
            made.append(self)
            self.inner_totals, self.at_end = [], []

        def start_width(self, i):
            super().start_width(i)
            if self.inner is not None:
                self.inner_totals.append(self.inner.total)

        def end_width(self):
            super().end_width()
            self.at_end.append(self.done)

    monkeypatch.setattr(cmp, "_Progress", Recording)
    return made


def test_totals_are_the_work_of_each_width(data, monkeypatch):
    from ntksolve.progress import REFRESH_S
    from ntksolve.sweep_checks import _Sizes, _width_work

    pytest.importorskip("tqdm")
    term = _Terminal()
    made = _recording(monkeypatch, term)
    steps, widths = 12, [16, 256]
    rep = sweep_on(data, widths, steps=steps, n_records=4, progress=True)
    (bar,) = made
    n_rec = len(rep.settings["record_at"])
    sizes = _Sizes(40, 30, 8, 1, 1, n_rec, False, True)
    expected = []
    for w in widths:
        p, s, r = _width_work(sizes, w, steps, n_rec)
        expected.append(p + steps * s + n_rec * r)
    assert bar.works == pytest.approx(expected, rel=1e-12)
    assert bar.total == pytest.approx(sum(expected), rel=1e-12)
    assert bar.inner_totals == pytest.approx(expected, rel=1e-12)  # a bar per width, over its own work
    assert bar.at_end == pytest.approx(np.cumsum(expected), rel=1e-12)
    # the work of a step is 6 N x (the weights): a width-256 step is (8*256 + 256) / (8*16 + 16) = 16x one of 16
    assert _width_work(sizes, 256, steps, n_rec)[1] / _width_work(sizes, 16, steps, n_rec)[1] == 16.0
    out = term.getvalue()
    assert "sweep: width 256 (2/2)" in out and "width 16 (1/2)" in out and "FLOP" in out
    assert bar.bar is None and bar.inner is None  # closed
    assert REFRESH_S >= 0.2  # at most a few redraws a second


def test_bars_redraw_at_most_a_few_times_a_second():
    pytest.importorskip("tqdm")
    from ntksolve.progress import REFRESH_S, _Progress

    p = _Progress(True, [1e9, 3e9], [8, 16], stream=_Terminal())
    p.start_width(0)
    assert p.bar.mininterval == p.inner.mininterval == REFRESH_S
    for _ in range(10_000):  # many quick updates, as from a narrow width
        p.advance(1e5)
    # tqdm draws at most once per mininterval: far fewer redraws than updates
    assert p.bar.n == pytest.approx(1e9) and p.stream.getvalue().count("\r") < 100
    p.end_width()
    p.close()


def test_no_terminal_plain_lines_and_quiet(data, monkeypatch):
    log = io.StringIO()  # a log file or a pipe: no redrawn bars
    made = _recording(monkeypatch, log)
    sweep_on(data, [16, 64, 256], steps=8, n_records=3, progress=True)
    text = log.getvalue()
    assert made[0].bar is None and "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 6  # one line as each width starts, one as it ends
    assert lines[0].startswith("width 16 (1/3): ") and "of the sweep's estimated work" in lines[0]
    shares = [float(re.search(r": ([\d.]+)% of the sweep", ln).group(1)) for ln in lines[::2]]
    assert sum(shares) == pytest.approx(100.0, abs=0.2) and shares[0] < shares[1] < shares[2]
    assert "done in" in lines[1] and "s left" in lines[1] and "s left" not in lines[-1]
    assert lines[-1].endswith("100.0% of the estimated work")
    quiet = _Terminal()
    made = _recording(monkeypatch, quiet)
    sweep_on(data, [16], steps=2, n_records=2)
    assert quiet.getvalue() == ""


def test_cli_quiet_prints_no_progress(tmp_path, capsys):
    from ntksolve.cli import main

    out = tmp_path / "q"
    assert (
        main(
            [
                "compare",
                "--widths",
                "8,16",
                "--steps",
                "3",
                "--records",
                "2",
                "--threads",
                "1",
                "--no-plots",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.strip() == str(out)


def test_speedup_counts_the_one_off_kernels_once_never_0x(data, monkeypatch):
    # tanh at depth 2: the analytic kernels need quadrature, a one-off that was once charged to every
    # width ("speedup 0x"). A fake clock makes them take 500 s each time they are made (twice: train and
    # test), far more than all the training, so the whole sweep's speedup is about 1e-4.
    slow_analytic_kernels(monkeypatch, 500.0)
    rep = sweep_on(data, [16, 32], depth=2, activation="tanh", steps=5, n_records=3)
    d = json.loads(json.dumps(rep.to_dict()))
    s = d["settings"]
    one_off = s["time_analytic_kernels"]
    assert 1000.0 <= one_off < 1100.0
    per_width = [r["time_predict"] for r in d["rows"]]
    assert all(r["time_predict"] == r["time_predict_analytic"] < 100.0 for r in d["rows"])
    assert s["time_predict_per_width_total"] == pytest.approx(sum(per_width), rel=1e-12)
    assert s["time_predict_total"] == pytest.approx(one_off + sum(per_width), rel=1e-12)
    t_train = sum(r["time_train"] for r in d["rows"])
    assert s["time_train_total"] == pytest.approx(t_train, rel=1e-12)
    assert s["speedup_sweep"] == pytest.approx(t_train / (one_off + sum(per_width)), rel=1e-12)
    assert s["speedup_sweep"] < 1e-2
    for r in d["rows"]:
        assert r["speedup"] == pytest.approx(r["time_train"] / r["time_predict"], rel=1e-12)
    table = rep.table()
    assert not re.search(r"(?<![\d.])0x", table), table  # no "0x": two significant digits below 1
    header = table.splitlines()[0].split()
    assert header[-1] == "speedup*"
    assert "* speedup = t_train / t_pred of that width" in table and "counted once" in table
    (sweep_line,) = [ln for ln in table.splitlines() if ln.startswith("whole sweep")]
    printed = float(re.search(r": ([\d.e+-]+)x$", sweep_line).group(1))
    assert printed == pytest.approx(s["speedup_sweep"], rel=0.05) and printed > 0


def test_speedup_formatting():
    from ntksolve.report import _fmt_speedup

    assert [_fmt_speedup(v) for v in (295.4, 3.14, 0.04, 0.00012)] == ["295x", "3.1x", "0.04x", "0.00012x"]
