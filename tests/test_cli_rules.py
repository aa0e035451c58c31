"""``ntksolve compare``'s training options and ``--data digits``: what they build, what they refuse."""

import argparse
import json
import re

import numpy as np
import pytest

from ntksolve.cli import main

from compare_support import compare_cli
from ntksolve.cli_parser import build_parser, training_rule
from ntksolve.dynamics import Adam, GradientDescent, Schedule

TINY = ["--widths", "16,32", "--steps", "10", "--records", "4", "--threads", "1", "--no-plots", "--quiet"]


def _rule(*argv):
    return training_rule(build_parser().parse_args(["compare", *argv]))


@pytest.mark.parametrize(
    "argv, rule, fraction",
    [
        ([], GradientDescent(1.0), 0.5),
        (
            ["--learning-rate", "0.3", "--momentum", "0.9", "--schedule", "step:10:0.5"],
            GradientDescent(Schedule.step(0.3, 10, 0.5), momentum=0.9),
            None,
        ),
        (
            ["--momentum", "0.5", "--nesterov", "--schedule", "cosine", "--steps", "40", "--lr-fraction", "0.2"],
            GradientDescent(Schedule.cosine(1.0, 40), momentum=0.5, nesterov=True),
            0.2,
        ),
        (
            ["--schedule", "warmup_cosine:5", "--steps", "50", "--weight-decay", "0.01"],
            GradientDescent(Schedule.warmup_cosine(1.0, 50, 5), weight_decay=0.01),
            0.5,
        ),
        (
            ["--schedule", "exponential:0.99", "--learning-rate", "2"],
            GradientDescent(Schedule.exponential(2.0, 0.99)),
            None,
        ),
        (["--optimizer", "adam"], Adam(1e-3), None),
        (
            ["--optimizer", "adam", "--learning-rate", "0.01", "--weight-decay", "0.1"],
            Adam(0.01, weight_decay=0.1),
            None,
        ),
    ],
)
def test_options_build_the_rule(argv, rule, fraction):
    assert _rule(*argv) == (rule, fraction)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--schedule", "cosin"], "unknown schedule 'cosin'"),
        (["--schedule", "step:10"], "step is spelled step:STEP_SIZE:GAMMA"),
        (["--schedule", "step:0:0.5"], "STEP_SIZE must be a positive integer"),
        (["--schedule", "exponential:fast"], "GAMMA must be a number"),
        (["--weight-decay", "-1"], "expected a finite number >= 0"),
        (["--batch-size", "0"], "expected a positive integer"),
        (["--optimizer", "rmsprop"], "invalid choice"),
        (["--loss", "hinge"], "invalid choice"),
    ],
)
def test_bad_spellings_are_usage_errors(argv, match, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["compare", *argv])
    assert exc.value.code == 2 and match in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--nesterov"], "--nesterov needs --momentum > 0"),
        (["--momentum", "1"], r"--momentum must be in \[0, 1\)"),
        (["--optimizer", "adam", "--momentum", "0.9"], "does not take --momentum"),
        (["--optimizer", "adam", "--lr-fraction", "0.5"], "does not take --lr-fraction"),
        (["--optimizer", "adam", "--schedule", "cosine"], "does not take --schedule"),
        (["--lr-fraction", "2.5"], r"--lr-fraction must be in \(0, 2\)"),
        (["--schedule", "warmup_linear:20"], "warmup_steps=20 must be below total_steps=10"),
        (["--batch-size", "500"], "--batch-size 500 is more than the 22 training points"),
        (["--loss", "cross_entropy"], "regression"),
    ],
)
def test_bad_combinations_refused_before_any_work(npz, tmp_path, capsys, argv, match):
    out = tmp_path / "never"
    assert compare_cli(npz, out, *TINY, *argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(match, err) and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cross_entropy_on_the_default_regression_is_refused(tmp_path, capsys):
    assert main(["compare", "--loss", "cross_entropy", "--out", str(tmp_path / "x"), *TINY]) == 2
    assert "embedded default data is a regression" in capsys.readouterr().err


def test_sgd_options_reach_the_report(npz, tmp_path):
    out = tmp_path / "run"
    assert (
        compare_cli(
            npz, out, *TINY, "--momentum", "0.9", "--schedule", "cosine", "--batch-size", "8", "--lr-fraction", "0.1"
        )
        == 0
    )
    s = json.loads((out / "report.json").read_text())["settings"]
    assert "momentum=0.9" in s["dynamics"] and "Schedule.cosine" in s["dynamics"] and s["batch_size"] == 8
    assert s["lr_fraction"] == 0.1 and "sgd_mse" in s["twin"]
    # the schedule's peak is 0.1 of heavy ball's critical rate 2(1 + mu)Nk/lambda_max of the analytic NTK
    assert s["learning_rate"] == pytest.approx(0.1 * s["critical_learning_rate_analytic"], rel=1e-12)


# ---------------------------------------------------------------------------------------------
# --data digits
# ---------------------------------------------------------------------------------------------
def test_digits_split_is_stratified_standardised_and_centred():
    from sklearn.datasets import load_digits

    from ntksolve.digits import load_digits_split

    d = load_digits_split(test_size=0.25, random_state=4)
    assert d.X_train.shape == (1348, 64) and d.X_test.shape == (449, 64)
    _, y = load_digits(return_X_y=True)
    share = np.bincount(y) / y.size
    assert np.all(np.abs(np.bincount(d.labels_test, minlength=10) - 449 * share) <= 1)  # stratified
    live = d.X_train.std(axis=0) > 0
    np.testing.assert_allclose(d.X_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(d.X_train.std(axis=0)[live], 1, rtol=1e-12)
    assert np.all(d.X_train[:, ~live] == 0) and any("pixel 0" in n for n in d.notes)  # the blank corner
    y_mse, _ = d.targets("mse")
    np.testing.assert_allclose(y_mse.sum(axis=1), 0, atol=1e-14)
    assert np.all(y_mse[np.arange(1348), d.labels_train] == pytest.approx(0.9))
    y_ce, _ = d.targets("cross_entropy")
    assert np.array_equal(np.argmax(y_ce, axis=1), d.labels_train)
    small = load_digits_split(random_state=4, n_rows=200)
    assert small.X_train.shape[0] + small.X_test.shape[0] == 200 and set(small.labels_test) == set(range(10))


def test_digits_cross_entropy_sweep_runs_with_its_figures(tmp_path, capsys):
    out = tmp_path / "digits"
    assert (
        main(
            [
                "compare",
                "--data",
                "digits:120",
                "--loss",
                "cross_entropy",
                "--widths",
                "16,32",
                "--steps",
                "8",
                "--records",
                "4",
                "--threads",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "acc real" in printed and "accuracy_trajectories.png" in printed
    d = json.loads((out / "report.json").read_text())
    assert d["settings"]["n_outputs"] == 10 and d["settings"]["loss_function"] == "cross_entropy"
    assert d["settings"]["n_train"] == 90 and "stratified" in d["settings"]["data"]
    for r in d["rows"]:
        assert 0 <= r["accuracy_test_final_real"] <= 1 and r["status_empirical"] == "ok"
        assert isinstance(r["gap_test_empirical"], float)
    for png in ("loss_trajectories.png", "accuracy_trajectories.png", "gap_vs_width.png"):
        assert (out / png).stat().st_size > 1000


@pytest.mark.parametrize("spec, match", [("digits:5", "between 20 and 1797"), ("digits:many", "spelled digits")])
def test_digits_bad_spec(tmp_path, capsys, spec, match):
    assert compare_cli(spec, tmp_path / "x", *TINY) == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize(
    "text,name",
    [("leaky_relu( 0.2 )", "leaky_relu(0.2)"), ("monomial(3)", "monomial(3)"), ("abs", "abs"), ("relu", "relu")],
)
def test_activation_with_arguments_is_parsed(text, name):
    from ntksolve.cli_parser import build_parser

    assert build_parser().parse_args(["compare", "--activation", text]).activation == name


def test_unknown_activation_is_a_usage_error(capsys):
    from ntksolve.cli_parser import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["compare", "--activation", "swish"])
    assert exc.value.code == 2 and "leaky_relu(slope)" in capsys.readouterr().err


@pytest.mark.parametrize("offset, gap, missing", [(1, 1, 0), (0, 4, 1)])
def test_class_labels_with_a_gap_are_refused(tmp_path, capsys, offset, gap, missing):
    # labels 1..K (or 0 and 5) would make outputs for classes no example has: K + 1 (or 6) logits
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 3))
    labels = offset + gap * (np.arange(30) % 2)
    path = tmp_path / "c.npz"
    np.savez(path, X=X, y=labels.astype(np.float64))
    out = tmp_path / "never"
    assert compare_cli(path, out, *TINY, "--loss", "cross_entropy") == 2
    err = capsys.readouterr().err
    assert f"has no example of class {missing} below its largest label" in err
    assert "Traceback" not in err and not out.exists()


def _rows(out):
    return json.loads((out / "report.json").read_text())["rows"]


def test_class_only_in_the_test_split_trains_on_features_standardised_by_hand(tmp_path):
    # the class rows used to be standardised as targets: class 2's column, 0 in every training
    # row, was refused as "target column 'label' is constant", though no column of the file is
    from ntksolve.comparison import compare

    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 2))
    perm = np.random.default_rng(0).permutation(12)  # the command's split: --seed 0, 3 of 12 held out
    te, tr = perm[:3], perm[3:]
    labels = np.zeros(12)
    labels[tr] = np.arange(9) % 2
    labels[te[0]] = 2  # only in the test split
    path = tmp_path / "c.csv"
    np.savetxt(path, np.c_[X, labels], delimiter=",", header="a,b,label", comments="")
    out = tmp_path / "o"
    assert compare_cli(path, out, *TINY, "--loss", "cross_entropy") == 0
    mu, sd = X[tr].mean(axis=0), X[tr].std(axis=0)  # the features by the training split, by hand
    rep = compare(
        (X[tr] - mu) / sd, np.eye(3)[labels[tr].astype(int)], [16, 32],
        X_test=(X[te] - mu) / sd, y_test=np.eye(3)[labels[te].astype(int)],
        loss="cross_entropy", steps=10, n_records=4, progress=False,
    )  # fmt: skip
    rows = _rows(out)
    assert json.loads((out / "report.json").read_text())["settings"]["n_outputs"] == 3
    for got, want in zip(rows, rep.rows):
        for key in ("gap_train_empirical", "gap_test_analytic", "loss_test_final_real", "accuracy_test_final_real"):
            assert got[key] == pytest.approx(want[key], rel=1e-9)


def test_one_hot_rows_of_an_npz_train_as_their_labels(tmp_path, capsys):
    # compare takes one-hot rows; the command refused them as "other numbers (a regression data set?)"
    rng = np.random.default_rng(2)
    X, Xt = rng.standard_normal((20, 3)), rng.standard_normal((6, 3))
    lab, lab_t = np.arange(20) % 3, np.arange(6) % 3
    np.savez(tmp_path / "labels.npz", X=X, y=lab.astype(float), X_test=Xt, y_test=lab_t.astype(float))
    np.savez(tmp_path / "onehot.npz", X=X, y=np.eye(3)[lab], X_test=Xt, y_test=np.eye(3)[lab_t])
    for name in ("labels", "onehot"):
        assert compare_cli(tmp_path / f"{name}.npz", tmp_path / name, *TINY, "--loss", "cross_entropy") == 0
    a, b = _rows(tmp_path / "labels"), _rows(tmp_path / "onehot")
    for ra, rb in zip(a, b):
        for key in ("gap_train_empirical", "gap_test_analytic", "loss_test_final_real", "accuracy_test_final_real"):
            assert ra[key] == rb[key]
    # a one-hot column no row uses, and rows that are not one-hot, are refused by name
    np.savez(tmp_path / "unused.npz", X=X, y=np.eye(4)[lab], X_test=Xt, y_test=np.eye(4)[lab_t])
    assert compare_cli(tmp_path / "unused.npz", tmp_path / "never", *TINY, "--loss", "cross_entropy") == 2
    assert "column 3 of the 4 one-hot target columns" in capsys.readouterr().err
    np.savez(tmp_path / "two.npz", X=X, y=np.ones((20, 2)), X_test=Xt, y_test=np.ones((6, 2)))
    assert compare_cli(tmp_path / "two.npz", tmp_path / "never", *TINY, "--loss", "cross_entropy") == 2
    assert "holds other numbers" in capsys.readouterr().err


def test_schedule_gamma_infinite_is_named_as_such():
    from ntksolve.cli_parser import _schedule

    with pytest.raises(argparse.ArgumentTypeError, match="GAMMA must be a finite positive number, got '1e400'"):
        _schedule("step:10:1e400")
