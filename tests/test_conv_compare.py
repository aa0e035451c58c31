"""compare(network=sweep_cnn): real CNNs on the digits beside their empirical-NTK and CNTK twins."""

import numpy as np
import pytest

from ntksolve import compare
from ntksolve.cnn import digits_cnn, sweep_cnn
from ntksolve.digits import load_digits_split


@pytest.fixture(scope="module")
def cnn_sweep():
    d = load_digits_split(n_rows=60, random_state=0)
    y, yt = d.targets("mse")
    report = compare(
        d.X_train,
        y,
        [4, 64],
        X_test=d.X_test,
        y_test=yt,
        depth=1,
        steps=20,
        n_records=5,
        lr_fraction=0.5,
        network=sweep_cnn,
        progress=False,
    )
    return report


def test_cnn_sweep_follows_its_twins(cnn_sweep):
    rows = cnn_sweep.rows
    assert cnn_sweep.state == "complete" and len(rows) == 2
    # the parameters of Conv2D(c, 3) on one channel and Dense(10) on c pooled features
    assert [r["n_params"] for r in rows] == [c * 9 + c + 10 * c + 10 for c in (4, 64)]
    for r in rows:
        assert r["status_empirical"] == "ok" and r["status_analytic"] == "ok"
    # at half the critical rate for 20 steps the linearisation holds: the empirical twin closely,
    # the CNTK's closer at 64 channels than at 4
    assert rows[1]["gap_train_empirical"] < 0.02
    assert rows[1]["gap_train_analytic"] < rows[0]["gap_train_analytic"]


def test_cnn_shapes_and_errors():
    net = digits_cnn(8, depth=2)
    assert net.shapes(64)[-1] == (10,) and net.shapes(64)[1] == (8, 8, 1)
    with pytest.raises(ValueError, match="at least one convolution"):
        digits_cnn(8, depth=0)
    with pytest.raises(ValueError, match="one channel count"):
        sweep_cnn((4, 8))
    X = np.zeros((2, 63))
    with pytest.raises(ValueError, match="64 numbers"):
        net.init(X.shape[1])


def test_cli_network_cnn_needs_the_digits(tmp_path, capsys):
    from ntksolve.cli import main

    assert main(["compare", "--network", "cnn", "--out", str(tmp_path / "o"), "--widths", "4", "--steps", "2"]) == 2
    assert "--data digits" in capsys.readouterr().err
