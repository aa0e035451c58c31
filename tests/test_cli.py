"""The ``ntksolve compare`` command end to end, and its refusals of bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ntksolve.comparison
from ntksolve.cli import main
from ntksolve.comparison import SLOPE_KEYS

TINY = ["--widths", "16,128", "--steps", "10", "--records", "5", "--threads", "1"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, X=X, y=y)
    return str(path)


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
        for key in ("width", "gap_train_empirical", "gap_test_empirical", "gap_train_analytic",
                    "gap_test_analytic", "loss_test_final_real", "loss_test_final_empirical",
                    "kernel_change_final", "time_train", "time_predict", "speedup"):
            assert key in row
    return d


def test_end_to_end_in_process(npz, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "run"
    assert main(["compare", "--data", npz, "--out", str(out)] + TINY) == 0
    d = _check_outputs(out, 2)
    assert isinstance(d["slope_test_analytic"], float)
    for png in ("loss_trajectories.png", "gap_vs_width.png"):
        img = matplotlib.image.imread(out / png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    printed = capsys.readouterr().out
    assert "gap te ana" in printed and "slope" in printed
    # a second run into the same folder is refused before any work, unless --overwrite
    assert main(["compare", "--data", npz, "--out", str(out)] + TINY) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["compare", "--data", npz, "--out", str(out), "--overwrite", "--no-plots", "--quiet"] + TINY) == 0


def test_console_script_and_module(csv_path, tmp_path):
    out = tmp_path / "sub"
    exe = os.path.join(os.path.dirname(sys.executable), "ntksolve")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "ntksolve"]
    r = subprocess.run(cmd + ["compare", "--data", str(csv_path), "--target", "target", "--out", str(out),
                              "--no-plots"] + TINY, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    _check_outputs(out, 2)
    r = subprocess.run([sys.executable, "-m", "ntksolve", "compare", "--help"], capture_output=True, text=True,
                       timeout=120)
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
    assert main(["compare", "--data", str(bad), "--out", str(tmp_path / "o1")] + TINY) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "line 4" in err and "Traceback" not in err
    assert main(["compare", "--data", str(csv_path), "--target", "nope", "--out", str(tmp_path / "o2")] + TINY) == 2
    err = capsys.readouterr().err
    assert "no column named 'nope'" in err and "target" in err


def test_unwritable_or_file_out_is_refused(npz, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["compare", "--data", npz, "--out", str(f)] + TINY) == 2
    assert "not a folder" in capsys.readouterr().err
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert main(["compare", "--data", npz, "--out", str(ro / "x")] + TINY) == 2


def test_diverging_rate_reported_without_nan(npz, tmp_path, capsys):
    out = tmp_path / "div"
    assert main(["compare", "--data", npz, "--out", str(out), "--learning-rate", "1000", "--no-plots",
                 "--widths", "16,32", "--steps", "100", "--records", "4"]) == 0
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
    assert main(["compare", "--data", npz, "--out", str(out), "--widths", "16,32,64", "--steps", "5",
                 "--records", "3"]) == 130
    d = json.loads((out / "report.json").read_text())
    assert d["interrupted"] is True and [r["width"] for r in d["rows"]] == [16]
    assert "interrupted" in capsys.readouterr().err
