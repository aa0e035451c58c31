"""compare(trainer=...) and ``ntksolve compare --trainer``: the real runs trained by PyTorch or
scikit-learn instead of ntksolve's own trainer.

References: the same sweep trained by ntksolve's numpy trainer (a second, independently written
implementation of every step), and the width scaling of the linearisation error (the empirical
twin's gap falls with width; the measured slope is pinned).
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from ntksolve.cli import main
from ntksolve.comparison import compare
from ntksolve.datasets import default_regression
from ntksolve.dynamics import Adam, GradientDescent, Schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_HINT = "needs the torch extra: pip install 'ntksolve[torch]'"
TINY = ["--widths", "16,32", "--steps", "10", "--records", "4", "--threads", "1", "--no-plots", "--quiet"]
ROW_KEYS = (
    "gap_train_empirical",
    "gap_test_empirical",
    "gap_train_analytic",
    "gap_test_analytic",
    "loss_train_final_real",
    "loss_test_final_real",
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread, as ``ntksolve compare --threads 1`` sets: on a loaded 2-core machine
    two spinning intra-op threads make each small step many times slower."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    return default_regression(n_train=32, n_test=16, random_state=1)


def _sweep(data, **kw):
    kw.setdefault("steps", 40)
    return compare(
        data.X_train,
        data.y_train,
        [16, 32],
        X_test=data.X_test,
        y_test=data.y_test,
        n_records=8,
        random_state=4,
        progress=False,
        **kw,
    )


def _same_rows(a, b, tol=1e-9):
    assert len(a.rows) == len(b.rows) == 2
    for ra, rb in zip(a.rows, b.rows):
        assert ra["diverged"] is rb["diverged"] is False
        for key in ROW_KEYS:
            if ra[key] is None:
                assert rb[key] is None
            else:
                assert rb[key] == pytest.approx(ra[key], rel=tol, abs=tol), key
    for ta, tb in zip(a.trajectories, b.trajectories):
        np.testing.assert_allclose(tb["loss_train_real"], ta["loss_train_real"], rtol=tol, atol=tol)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("dynamics", [None, GradientDescent(1.0, momentum=0.9)], ids=["gd", "momentum"])
def test_torch_trainer_gives_the_numpy_trainers_rows(data, parameterization, dynamics):
    pytest.importorskip("torch", reason=TORCH_HINT)
    kw = dict(parameterization=parameterization, dynamics=dynamics, lr_fraction=None if dynamics is None else 0.5)
    ref, got = _sweep(data, **kw), _sweep(data, trainer="torch", **kw)
    _same_rows(ref, got)
    assert got.settings["trainer"] == "torch" and ref.settings["trainer"] == "numpy"
    import torch

    assert got.settings["trainer_framework"] == f"torch {torch.__version__}"
    assert got.settings["trainer_function"] == "ntksolve.torch.train_network_torch"


@pytest.mark.parametrize(
    "dynamics, batch_size",
    [
        (None, None),
        (GradientDescent(1.0, momentum=0.9), None),
        (GradientDescent(1.0, momentum=0.8, nesterov=True), None),
        (GradientDescent(1.0, momentum=0.5), 8),
    ],
    ids=["gd", "momentum", "nesterov", "minibatch"],
)
def test_sklearn_trainer_gives_the_numpy_trainers_rows(data, dynamics, batch_size):
    kw = dict(
        parameterization="standard",
        dynamics=dynamics,
        lr_fraction=None if dynamics is None else 0.4,
        batch_size=batch_size,
    )
    ref, got = _sweep(data, **kw), _sweep(data, trainer="sklearn", **kw)
    _same_rows(ref, got)
    import sklearn

    assert got.settings["trainer"] == "sklearn"
    assert got.settings["trainer_framework"] == f"scikit-learn {sklearn.__version__}"


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(), r"standard parameterisation only.*--parameterization standard"),
        (
            dict(parameterization="standard", dynamics=GradientDescent(0.1, weight_decay=1e-4)),
            r"weight_decay=0.0001 has no exact scikit-learn counterpart: its alpha is an L2 penalty",
        ),
        (
            dict(parameterization="standard", dynamics=GradientDescent(Schedule.cosine(0.1, 40))),
            "no learning-rate schedule",
        ),
        (dict(parameterization="standard", dynamics=Adam(1e-3)), "scikit-learn's adam is not torch.optim.Adam"),
        (dict(parameterization="standard", activation="erf"), "has no 'erf' activation"),
    ],
)
def test_sklearn_trainer_refusals_before_any_work(data, kw, match):
    seen = []
    with pytest.raises(ValueError, match=match):
        _sweep(data, trainer="sklearn", on_state=seen.append, **kw)
    assert seen == []


def test_unknown_trainer_is_refused(data):
    with pytest.raises(ValueError, match="unknown trainer 'jax'; one of: numpy, torch, sklearn"):
        _sweep(data, trainer="jax")
    with pytest.raises(TypeError, match="trainer must be one of"):
        _sweep(data, trainer=3)


def test_a_callable_trainer_is_used(data):
    from ntksolve.training import train_network

    calls = []

    def mine(*args, **kw):
        calls.append(kw["steps"])
        return train_network(*args, **kw)

    _same_rows(_sweep(data), _sweep(data, trainer=mine))
    assert calls.count(40) == 2  # once per width (and the warm-up's one step)


def test_torch_trainer_without_torch_names_the_extra():
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "import numpy as np\n"
        "from ntksolve.comparison import compare\n"
        "seen = []\n"
        "X = np.random.default_rng(0).standard_normal((8, 2))\n"
        "try:\n"
        "    compare(X, X[:, 0], [4], X_test=X, y_test=X[:, 0], steps=2, progress=False, trainer='torch',\n"
        "            on_state=seen.append)\n"
        "except ImportError as exc:\n"
        "    print(len(seen), exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("0 ") and "pip install 'ntksolve[torch]'" in out.stdout


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--trainer", "jax"], "invalid choice: 'jax'"),
        (["--trainer", "sklearn", "--schedule", "nope"], "unknown schedule"),
    ],
)
def test_bad_trainer_spelling(argv, match, capsys):
    from ntksolve.cli_parser import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["compare", *argv])
    assert exc.value.code == 2 and match in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, match",
    [
        (
            ["--trainer", "sklearn", "--parameterization", "ntk"],
            r"^ntksolve compare: error: --trainer sklearn: .*standard parameterisation only.*--parameterization standard\)$",
        ),
        (
            ["--trainer", "sklearn", "--parameterization", "standard", "--weight-decay", "1e-4"],
            r"--trainer sklearn: weight_decay=0.0001 has no exact scikit-learn counterpart",
        ),
        (["--trainer", "sklearn", "--parameterization", "standard", "--optimizer", "adam"], "is not torch.optim.Adam"),
    ],
)
def test_cli_sklearn_refusals(tmp_path, capsys, argv, match):
    out = tmp_path / "never"
    assert main(["compare", "--out", str(out), *TINY, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert re.search(match, err), err
    assert not out.exists()


def test_cli_trainer_torch_records_it(tmp_path):
    pytest.importorskip("torch", reason=TORCH_HINT)
    import json

    out = tmp_path / "run"
    assert main(["compare", "--trainer", "torch", "--out", str(out), *TINY]) == 0
    settings = json.loads((out / "report.json").read_text())["settings"]
    assert settings["trainer"] == "torch" and settings["trainer_framework"].startswith("torch ")


def _slope(widths, gaps):
    return float(np.polyfit(np.log(widths), np.log(gaps), 1)[0])


def test_torch_trained_gap_falls_with_width():
    """The evidence from a framework nobody here wrote: networks trained by torch.optim.SGD
    approach their empirical-NTK twins as they widen (standard parameterisation)."""
    pytest.importorskip("torch", reason=TORCH_HINT)
    d = default_regression(n_train=128, n_test=128, random_state=0)
    widths = [128, 512, 2048]
    rep = compare(
        d.X_train,
        d.y_train,
        widths,
        X_test=d.X_test,
        y_test=d.y_test,
        parameterization="standard",
        steps=100,
        n_records=8,
        random_state=0,
        progress=False,
        trainer="torch",
    )
    gaps = [r["gap_test_empirical"] for r in rep.rows]
    slope = _slope(widths, gaps)
    print(f"torch-trained gaps {gaps}, slope {slope:.3f}")
    assert slope <= -0.3
