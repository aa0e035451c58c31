"""The ``ntksolve compare`` command end to end, and its refusals of bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ntksolve.comparison
from ntksolve.cli import main

from compare_support import ROW_NUMBERS, compare_cli
from ntksolve.comparison import SLOPE_KEYS

TINY = ["--widths", "16,128", "--steps", "10", "--records", "5", "--threads", "1"]


@pytest.fixture
def csv_path(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((24, 3))
    y = X[:, 0] - X[:, 1] ** 2
    path = tmp_path / "d.csv"
    lines = ["a,b,c,target"] + [",".join(f"{v:.6f}" for v in row) + f",{t:.6f}" for row, t in zip(X, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _check_outputs(out, n_rows):
    d = json.loads((out / "report.json").read_text())
    for key in SLOPE_KEYS:
        assert key in d
    assert len(d["rows"]) == n_rows
    for row in d["rows"]:
        for key in ("width", *ROW_NUMBERS):
            assert key in row
    return d


def test_end_to_end_in_process(npz, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "run"
    assert compare_cli(npz, out, *TINY) == 0
    d = _check_outputs(out, 2)
    assert isinstance(d["slope_test_analytic"], float)
    for png in ("loss_trajectories.png", "gap_vs_width.png"):
        img = matplotlib.image.imread(out / png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    printed = capsys.readouterr().out
    assert "gap te ana" in printed and "slope" in printed
    # a second run into the same folder is refused before any work, unless --overwrite
    assert compare_cli(npz, out, *TINY) == 2
    assert "not empty" in capsys.readouterr().err
    assert compare_cli(npz, out, "--overwrite", "--no-plots", "--quiet", *TINY) == 0


def test_console_script_and_module(csv_path, tmp_path):
    out = tmp_path / "sub"
    exe = os.path.join(os.path.dirname(sys.executable), "ntksolve")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "ntksolve"]
    r = subprocess.run(
        cmd + ["compare", "--data", str(csv_path), "--target", "target", "--out", str(out), "--no-plots"] + TINY,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    _check_outputs(out, 2)
    r = subprocess.run(
        [sys.executable, "-m", "ntksolve", "compare", "--help"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "--learning-rate" in r.stdout and "--target" in r.stdout


def test_default_folder_never_collides(npz, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["compare", "--data", npz, "--widths", "8", "--steps", "2", "--records", "2", "--no-plots", "--quiet"]
    assert main(args) == 0 and main(args) == 0
    runs = sorted(os.listdir(tmp_path / "ntksolve-runs"))
    assert len(runs) == 2 and all(r.startswith("compare-") for r in runs)


def test_csv_with_missing_value_or_target_is_refused(csv_path, tmp_path, capsys):
    text = csv_path.read_text().splitlines()
    text[3] = ",".join(["", *text[3].split(",")[1:]])
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(text) + "\n")
    assert compare_cli(bad, tmp_path / "o1", *TINY) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "line 4" in err and "Traceback" not in err
    assert main(["compare", "--data", str(csv_path), "--target", "nope", "--out", str(tmp_path / "o2")] + TINY) == 2
    err = capsys.readouterr().err
    assert "no column named 'nope'" in err and "target" in err


def test_unwritable_or_file_out_is_refused(npz, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert compare_cli(npz, f, *TINY) == 2
    assert "not a folder" in capsys.readouterr().err
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert compare_cli(npz, ro / "x", *TINY) == 2


def test_diverging_rate_reported_without_nan(npz, tmp_path, capsys):
    out = tmp_path / "div"
    assert (
        compare_cli(
            npz, out, "--learning-rate", "1000", "--no-plots", "--widths", "16,32", "--steps", "100", "--records", "4"
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "diverged" in captured.out and "critical learning rate" in captured.err
    assert "nan" not in captured.out.lower()
    d = json.loads((out / "report.json").read_text())  # strict JSON: NaN would not parse as null
    assert all(r["diverged"] and r["gap_test_analytic"] is None for r in d["rows"])


def test_ctrl_c_saves_finished_widths(npz, tmp_path, monkeypatch, capsys):
    real = ntksolve.comparison._one_width
    calls = []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ntksolve.comparison, "_one_width", interrupted_second)
    out = tmp_path / "int"
    assert compare_cli(npz, out, "--widths", "16,32,64", "--steps", "5", "--records", "3") == 130
    d = json.loads((out / "report.json").read_text())
    assert d["interrupted"] is True and [r["width"] for r in d["rows"]] == [16]
    assert "interrupted" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# predictions that diverge
# ---------------------------------------------------------------------------------------------
def test_prediction_above_critical_rate_is_flagged_not_printed(tmp_path, capsys):
    # default data at learning rate 12 > 9.416, the analytic critical rate: the real networks train,
    # the closed forms grow to 1e55
    from ntksolve import MLP, analytic_kernels
    from ntksolve.datasets import default_regression

    d = default_regression()
    crit = 2 * d.X_train.shape[0] / np.linalg.eigvalsh(analytic_kernels(MLP((1,), bias_std=0.1), d.X_train).ntk)[-1]
    out = tmp_path / "lr12"
    assert (
        main(
            [
                "compare",
                "--out",
                str(out),
                "--learning-rate",
                "12",
                "--widths",
                "64,128",
                "--steps",
                "300",
                "--records",
                "12",
                "--no-plots",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    table = captured.out.split("\n\n")[0]
    assert "diverges" in table and "e+" not in table and "0000000" not in table
    assert f"critical rate 2Nk/lambda_max = {crit:.4g}" in captured.err and "warning" in captured.err
    rep = json.loads((out / "report.json").read_text())
    assert all(
        r["status_analytic"] == "diverges" and r["gap_test_analytic"] is None and not r["diverged"] for r in rep["rows"]
    )
    assert rep["slope_test_analytic"] is None and rep["slope_widths"]["slope_test_analytic"] == []


# ---------------------------------------------------------------------------------------------
# the report's state, signals, disk full
# ---------------------------------------------------------------------------------------------
def test_report_on_disk_says_running_until_the_end(npz, tmp_path, monkeypatch):
    # what a SIGKILL leaves: the report as it was after the last finished width
    real = ntksolve.comparison._one_width
    out = tmp_path / "run"
    on_disk = []

    def peek(width, *args, **kwargs):
        on_disk.append(json.loads((out / "report.json").read_text()))
        return real(width, *args, **kwargs)

    monkeypatch.setattr(ntksolve.comparison, "_one_width", peek)
    assert compare_cli(npz, out, "--widths", "16,32", "--steps", "5", "--records", "3", "--no-plots", "--quiet") == 0
    first, second = on_disk
    assert (first["state"], first["widths_done"], first["widths_pending"]) == ("running", [], [16, 32])
    assert (second["state"], second["widths_done"], second["widths_pending"]) == ("running", [16], [32])
    assert second["interrupted"] is False and second["settings"]["command"].startswith("ntksolve compare ")
    final = json.loads((out / "report.json").read_text())
    assert (final["state"], final["widths_done"], final["widths_pending"]) == ("complete", [16, 32], [])


def _popen_compare(args, stderr_path):
    import signal

    return subprocess.Popen(
        [sys.executable, "-m", "ntksolve", "compare"] + args,
        stdout=subprocess.DEVNULL,
        stderr=open(stderr_path, "w"),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_report(path, done, proc, timeout=120):
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            d = json.loads(path.read_text())
            if len(d["widths_done"]) >= done:
                return d
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, "the run ended before the signal"
        time.sleep(0.02)
    raise AssertionError("no report")


@pytest.mark.parametrize("signame, after_widths, code", [("SIGTERM", 1, 143), ("SIGINT", 0, 130)])
def test_signal_stops_cleanly_with_a_partial_report(tmp_path, signame, after_widths, code):
    import signal

    out = tmp_path / "sig"
    err = tmp_path / "err.txt"
    # default data: width 8192 runs for seconds after width 64, so the signal lands mid-sweep
    proc = _popen_compare(["--out", str(out), "--widths", "64,8192", "--no-plots", "--quiet"], err)
    try:
        _wait_for_report(out / "report.json", after_widths, proc)
        proc.send_signal(getattr(signal, signame))
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    assert rc == code, text
    assert "Traceback" not in text and f"interrupted by {'Ctrl-C (SIGINT)' if code == 130 else 'SIGTERM'}" in text
    d = json.loads((out / "report.json").read_text())
    assert d["state"] == "interrupted" and d["interrupted"] is True and 8192 in d["widths_pending"]
    assert len(d["widths_done"]) >= after_widths and signame in d["message"]


def test_disk_full_is_one_line_and_exit_2(npz, tmp_path, monkeypatch, capsys):
    import errno

    real_fsync = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) >= 3:  # from the report after the first width on: the disk stays full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "full"
    assert compare_cli(npz, out, "--quiet", *TINY) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "error: cannot write" in err and "No space left on device" in err
    d = json.loads((out / "report.json").read_text())  # the previous report, intact (atomic writes)
    assert d["widths_done"] == [] and not list(out.glob(".report.json.*tmp"))


def test_ctrl_c_before_the_sweep_is_not_a_traceback(monkeypatch, capsys):
    import ntksolve.cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(ntksolve.cli, "build_parser", interrupted)
    assert main(["compare"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_help_documents_exit_codes_and_states(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("130", "143", "SIGTERM", '"running"', '"interrupted"', '"failed"', "sched_getaffinity"):
        assert word in text, word


# ---------------------------------------------------------------------------------------------
# the recorded command, versions, threads
# ---------------------------------------------------------------------------------------------
def test_command_is_recorded_rerunnable_with_versions_and_capped_threads(npz, tmp_path, capsys):
    import shlex

    cores = len(os.sched_getaffinity(0))
    out = tmp_path / "a b"  # a space: the command must be shell-quoted
    args = [
        "compare",
        "--data",
        npz,
        "--out",
        str(out),
        "--no-plots",
        "--widths",
        "16,128",
        "--steps",
        "10",
        "--records",
        "5",
        "--threads",
        "4096",
    ]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"--threads 4096 is more than the {cores} core(s)" in err
    d = json.loads((out / "report.json").read_text())
    s = d["settings"]
    assert shlex.split(s["command"]) == ["ntksolve"] + args  # not "ntksolve compare compare ..."
    assert s["threads"] == cores and all(b["num_threads"] <= cores for b in s["blas"])
    assert s["versions"]["numpy"] == np.__version__ and s["versions"]["ntksolve"]
    # rerun it as recorded (into a new folder): the same numbers
    rerun = shlex.split(s["command"])[1:]
    rerun[rerun.index("--out") + 1] = str(tmp_path / "again")
    assert main(rerun) == 0
    d2 = json.loads((tmp_path / "again" / "report.json").read_text())
    assert [r["gap_test_analytic"] for r in d2["rows"]] == [r["gap_test_analytic"] for r in d["rows"]]


# ---------------------------------------------------------------------------------------------
# resource limits
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, match",
    [
        (["--widths", "2000000"], "limit of 1048576 hidden units"),
        (["--depth", "101"], "limit of 100 hidden layers"),
        (["--records", "5000"], "limit of 1000 recorded steps"),
        (["--widths", "500000", "--depth", "3"], "of memory"),
    ],
)
def test_resource_limits_refused_up_front(npz, tmp_path, capsys, extra, match):
    out = tmp_path / "never"
    assert compare_cli(npz, out, "--steps", "5", *extra) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not out.exists()  # refused before the output folder was made


# ---------------------------------------------------------------------------------------------
# data files
# ---------------------------------------------------------------------------------------------
def _args(path, *extra):
    from ntksolve.cli import build_parser

    return build_parser().parse_args(["compare", "--data", str(path), *extra])


def _csv(tmp_path, name, text, encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def _rows(n=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    return np.column_stack([X, X[:, 0] - X[:, 1] ** 2])


def test_csv_without_header_keeps_every_row(tmp_path):
    from ntksolve.cli import load_data

    data = _rows(12)
    p = _csv(tmp_path, "nohdr.csv", "\n".join(",".join(repr(float(v)) for v in r) for r in data) + "\n")
    X, y, Xt, yt, desc, notes = load_data(_args(p, "--no-standardize"))
    assert X.shape[0] + Xt.shape[0] == 12  # the first row is data, not a header
    assert sorted(np.vstack([y, yt]).ravel().tolist()) == sorted(data[:, 3].tolist())
    assert "no header row" in desc and any("column1" in n for n in notes)
    X, *_ = load_data(_args(p, "--target", "column2", "--no-standardize"))
    assert X.shape[1] == 3


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_csv_dialects_and_bom_read_like_plain_csv(tmp_path, sep):
    from ntksolve.datasets import read_csv

    data = _rows(8)
    lines = [sep.join(["a", "b", "c", "t"])] + [sep.join(repr(float(v)) for v in r) for r in data]
    p = _csv(tmp_path, "d.csv", "\ufeff" + "\n".join(lines) + "\n")  # with a UTF-8 byte-order mark
    t = read_csv(p, target="a")  # the BOM is not part of the first column's name
    assert t.target == "a" and t.feature_names == ["b", "c", "t"] and t.delimiter == sep
    np.testing.assert_array_equal(t.y[:, 0], data[:, 0])
    np.testing.assert_array_equal(t.X, data[:, 1:])


@pytest.mark.parametrize(
    "text, match",
    [
        ("a;b;c\n1,5;2,5;3\n4;5;6\n", "decimal comma"),
        ("x,1,y\n1,2,3\n", "mixes names and numbers"),
        (",a,b\n0,1,2\n1,3,4\n", "no name in the header"),
        ("a,b,a\n1,2,3\n", "repeated column name"),
        ("a,b\n1,2\n3,4,5\n", "line 3: 3 fields"),
        ("5\n6\n7\n", "cannot tell how the columns are separated"),
        ("a,b\n1,2\n3,1e400\n", "non-finite"),
    ],
)
def test_unreadable_csv_refused_with_reason(tmp_path, capsys, text, match):
    p = _csv(tmp_path, "bad.csv", text)
    assert compare_cli(p, tmp_path / "o", *TINY) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_utf16_csv_refused(tmp_path, capsys):
    p = _csv(tmp_path, "u16.csv", "a,b\n1,2\n", encoding="utf-16")
    assert compare_cli(p, tmp_path / "o", *TINY) == 2
    assert "UTF-16" in capsys.readouterr().err


def test_pandas_path_reads_exactly_like_the_csv_module(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    import ntksolve.datasets as ds

    texts = {
        "plain.csv": "a,b,c\n1.5,2,3\n4,5,6.25\n",
        "nohdr.csv": "0.1,0.2,0.3\n0.4,0.5,0.6\n",
        "semi.csv": "a;b\n1.5;2\n3;4\n",
        "quoted.csv": '"a","b"\n"1.5","2"\n"3","4"\n',
        "spaces.txt": "  1.5  2 3\n4   5 6\n",
        "blank.csv": "a,b\n\n1,2\n,,\n3,4\n",
        "missing.csv": "a,b\n1,NA\n3,4\n",
        "text.csv": "a,b\n1,x\n3,4\n",
        "underscore.csv": "a,b\n1_000,2\n3,4\n",  # float() reads 1_000; pandas does not: same answer
        "digits.csv": "a,b\n0.1000000000000000055511151231257827,2\n3,4\n",
    }

    def read(path, pandas):
        monkeypatch.setattr(ds, "PANDAS_MIN_BYTES", 0 if pandas else 1 << 60)
        try:
            t = ds.read_csv(path)
        except ValueError as exc:
            return str(exc)
        return t.X.tobytes(), t.y.tobytes(), t.feature_names, t.target

    used = []
    real = ds._parse_pandas
    monkeypatch.setattr(ds, "_parse_pandas", lambda *a: used.append(real(*a)) or used[-1])
    for name, text in texts.items():
        p = _csv(tmp_path, name, text)
        assert read(p, True) == read(p, False), name
    assert sum(u is not None for u in used) >= 5  # pandas really parsed the clean files


def test_huge_values_standardise_without_overflow(tmp_path, capsys):
    from ntksolve.cli import load_data

    data = _rows(12)
    p1 = _csv(tmp_path, "unit.csv", "a,b,c,t\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in data) + "\n")
    p2 = _csv(
        tmp_path, "huge.csv", "a,b,c,t\n" + "\n".join(",".join(repr(float(v) * 1e300) for v in r) for r in data) + "\n"
    )
    small, huge = load_data(_args(p1)), load_data(_args(p2))
    for a, b in zip(small[:4], huge[:4]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)  # the same data, scaled: the same inputs
    # the same standardisation computed directly at unit scale
    tr = huge[0]
    assert np.all(np.abs(tr.std(0) - 1) < 1e-12) and np.all(np.abs(tr.mean(0)) < 1e-12)
    assert main(["compare", "--data", str(p2), "--no-standardize", "--out", str(tmp_path / "o")] + TINY) == 2
    assert "overflow" in capsys.readouterr().err


def test_constant_target_and_complex_npz_refused(tmp_path, capsys):
    data = _rows(12)
    data[:, 3] = 5.0
    p = _csv(tmp_path, "const.csv", "a,b,c,t\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in data) + "\n")
    assert compare_cli(p, tmp_path / "o1", *TINY) == 2
    err = capsys.readouterr().err
    assert "constant (5 in every training row)" in err and "all zero" not in err
    z = tmp_path / "c.npz"
    np.savez(z, X=np.ones((10, 2)) + 1j, y=np.arange(10.0))
    assert compare_cli(z, tmp_path / "o2", *TINY) == 2
    err = capsys.readouterr().err
    assert "complex" in err and "Traceback" not in err


def test_out_of_memory_mid_sweep_is_one_line_and_the_report_says_failed(npz, tmp_path, monkeypatch, capsys):
    real = ntksolve.comparison._one_width

    def second_runs_out(width, *args, **kwargs):
        if width == 128:
            raise MemoryError("Unable to allocate 59.6 GiB for an array")
        return real(width, *args, **kwargs)

    monkeypatch.setattr(ntksolve.comparison, "_one_width", second_runs_out)
    out = tmp_path / "oom"
    assert compare_cli(npz, out, "--quiet", *TINY) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "out of memory" in err and "59.6 GiB" in err
    d = json.loads((out / "report.json").read_text())
    assert d["state"] == "failed" and d["widths_done"] == [16] and "MemoryError" in d["message"]


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.2, 0.35, 0.6])
def test_ctrl_c_while_starting_exits_130_without_a_traceback(tmp_path, delay):
    # The console script's first module holds SIGINT while numpy, scipy and numba load; whatever
    # moment the interrupt lands (during the imports or once the command runs) the exit is 130
    # with one line, never a traceback and -2.
    import signal
    import time

    err = tmp_path / "err.txt"
    launch = "import sys, _ntksolve_launch; sys.exit(_ntksolve_launch.main())"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            launch,
            "compare",
            "--out",
            str(tmp_path / "o"),
            "--widths",
            "64,8192",
            "--no-plots",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(err, "w"),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    if rc == -signal.SIGINT and text == "":
        return  # landed before the interpreter ran any code: the OS default (a shell shows 130), silent
    # (from 0.1 s on, the interpreter has started: the interrupt lands in the imports or the command)
    assert rc == 130, text
    assert "Traceback" not in text and "interrupted by Ctrl-C (SIGINT)" in text, text


def test_negative_seed_and_a_file_that_is_no_npz_are_refused_by_name(npz, tmp_path, capsys):
    """Both before any data is split or any network built: the option (or file) and the fix named."""
    for data in (npz, None):
        argv = ["compare", "--seed", "-1", "--out", str(tmp_path / "o0"), *TINY]
        with pytest.raises(SystemExit) as exc:  # argparse's usage error
            main(argv + (["--data", data] if data else []))
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--seed" in err and "non-negative" in err and "Traceback" not in err
    assert not (tmp_path / "o0").exists()
    for name, content in (("garbage.npz", b"garbage"), ("array.npz", None)):
        path = tmp_path / name
        if content is None:
            with open(path, "wb") as fh:
                np.save(fh, np.ones((4, 2)))  # a .npy saved under an .npz name
        else:
            path.write_bytes(content)
        assert compare_cli(path, tmp_path / "o", *TINY) == 2
        err = capsys.readouterr().err
        assert f"'{name}' is not an .npz archive" in err and "numpy.savez" in err and "pickle" not in err
    assert compare_cli(tmp_path, tmp_path / "o", *TINY) == 2  # a folder is not "no such file"
    err = capsys.readouterr().err
    assert "is a folder" in err and "no such file" not in err


def test_overwrite_leaves_no_figure_of_the_previous_run(npz, tmp_path):
    """--overwrite replaces report.json and the figures: a figure this run does not draw (--no-plots,
    or an MSE run after a cross-entropy one) must not stay beside the new report as if it were its
    own; files ntksolve does not write are left alone."""
    out = tmp_path / "run"
    out.mkdir()
    stale = ("loss_trajectories.png", "accuracy_trajectories.png", "gap_vs_width.png")
    for name in stale + ("notes.txt",):
        (out / name).write_bytes(b"from an earlier run")
    assert compare_cli(npz, out, "--overwrite", "--no-plots", "--quiet", *TINY) == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "report.json"]
    assert (out / "notes.txt").read_bytes() == b"from an earlier run"
    assert json.loads((out / "report.json").read_text())["state"] == "complete"
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "report.json").stat().st_mode & 0o777 == 0o666 & ~umask  # readable as any file the user writes


def test_overwrite_refused_by_compare_leaves_the_earlier_run_whole(npz, tmp_path, capsys):
    """A rerun with --overwrite that compare refuses (test targets all zero, no relative gap) used to
    delete the earlier run's figures and leave its report.json, of another command, alone in the
    folder: now nothing is touched until the new run writes its first report."""
    out = tmp_path / "run"
    assert compare_cli(npz, out, "--quiet", *TINY) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"report.json", "loss_trajectories.png", "gap_vs_width.png"} <= set(before)
    with np.load(npz) as z:
        arrays = {name: z[name] for name in z.files}
    zero = tmp_path / "zero.npz"
    X, y = arrays["X"], arrays["y"]
    np.savez(zero, X=X[:-4], y=y[:-4], X_test=X[-4:], y_test=np.zeros_like(y[-4:]))
    assert compare_cli(zero, out, "--overwrite", "--no-standardize", "--quiet", *TINY) == 2
    assert "test targets are all zero" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_test_size_is_refused_for_data_with_its_own_test_set(npz, csv_path, tmp_path, capsys):
    """--test-size was silently ignored for the embedded data and an .npz with X_test/y_test: the
    report's split was not the one asked for. Refused now; a CSV still splits by it (or by 0.25)."""
    rng = np.random.default_rng(0)
    own = tmp_path / "own.npz"
    np.savez(own, X=rng.standard_normal((20, 2)), y=rng.standard_normal(20), X_test=np.ones((5, 2)), y_test=np.ones(5))
    assert main(["compare", "--test-size", "0.5", "--out", str(tmp_path / "a"), *TINY]) == 2
    assert "--test-size needs --data" in capsys.readouterr().err
    assert compare_cli(own, tmp_path / "b", "--test-size", "0.5", *TINY) == 2
    assert "holds its own X_test and y_test" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    for argv, n_test in (([], 6), (["--test-size", "0.5"], 12)):  # round(fraction * 24) of the CSV's rows
        out = tmp_path / f"csv{n_test}"
        assert compare_cli(csv_path, out, "--quiet", "--no-plots", *argv, *TINY) == 0
        s = json.loads((out / "report.json").read_text())["settings"]
        assert (s["n_train"], s["n_test"]) == (24 - n_test, n_test)
