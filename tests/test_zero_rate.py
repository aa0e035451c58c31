"""A learning rate of 0: refused alike wherever one rate is given (the converged limit and the time
grids divide by it), with the same reason; single steps of a per-step schedule may be 0, and then
leave the outputs where they are (against explicit iteration of the steps)."""

import numpy as np
import pytest

import ntksolve
from ntksolve import Adam, GradientDescent, GradientFlow, NTKClassifier, NTKRegressor, Schedule
from ntksolve.dynamics import to_ntksolve_learning_rate

REASON = "a rate of 0 trains nothing"

ENTRY_POINTS = {
    "GradientFlow": lambda r: GradientFlow(r),
    "GradientDescent": lambda r: GradientDescent(r),
    "GradientDescent+momentum": lambda r: GradientDescent(r, momentum=0.5, weight_decay=0.1),
    "Adam": lambda r: Adam(r),
    "Schedule.constant": lambda r: Schedule.constant(r),
    "Schedule.step": lambda r: Schedule.step(r, 5),
    "Schedule.exponential": lambda r: Schedule.exponential(r, 0.9),
    "Schedule.cosine": lambda r: Schedule.cosine(r, 10),
    "Schedule.warmup_cosine": lambda r: Schedule.warmup_cosine(r, 10, 2),
    "Schedule.warmup_linear": lambda r: Schedule.warmup_linear(r, 10, 2),
    "gradient_descent_mse": lambda r: ntksolve.gradient_descent_mse(np.eye(3), np.ones(3), learning_rate=r),
    "to_ntksolve_learning_rate": lambda r: to_ntksolve_learning_rate(
        r, loss="torch_mse_mean", n_samples=4, n_outputs=1
    ),
}


@pytest.mark.parametrize("zero", [0, 0.0, np.float64(0.0)])
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_a_zero_rate_is_refused_alike_everywhere(entry, zero):
    make = ENTRY_POINTS[entry]
    make(0.25)  # a positive rate is taken
    with pytest.raises(ValueError, match=REASON):
        make(zero)


def test_torch_conversion_refuses_a_zero_rate_and_keeps_zero_steps():
    torch = pytest.importorskip("torch")
    from ntksolve.torch import learning_rate_from_torch

    mse = torch.nn.MSELoss()
    for zero in (0.0, torch.tensor(0.0), np.float64(0.0)):
        with pytest.raises(ValueError, match=REASON):
            learning_rate_from_torch(zero, loss=mse, n_samples=4, n_outputs=1)
    # a per-step schedule maps entry by entry, its zero steps included (a cosine decays to 0), as Schedule does
    np.testing.assert_array_equal(learning_rate_from_torch([0.1, 0.0], loss=mse, n_samples=4, n_outputs=1), [0.2, 0.0])
    np.testing.assert_array_equal(
        Schedule(learning_rate_from_torch([0.1, 0.0], loss=mse, n_samples=4, n_outputs=1)).rates(2), [0.2, 0.0]
    )


@pytest.mark.parametrize("cls", [NTKRegressor, NTKClassifier])
def test_estimators_refuse_a_zero_rate_with_the_reason(cls):
    X = np.random.default_rng(0).standard_normal((8, 2))
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0.*" + REASON):
        cls(learning_rate=0.0, dynamics="discrete", time=3).fit(X, y)


def test_zero_steps_of_a_schedule_leave_the_outputs_unchanged():
    """``f_{s+1} = f_s - (η_s / N) Θ (f_s - y)``, iterated explicitly: a step at rate 0 is no step."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((6, 6))
    K = A @ A.T / 6
    y = rng.standard_normal(6)
    rates = np.array([0.5, 0.0, 0.0, 0.3])
    pred = ntksolve.gradient_descent_mse(K, y, dynamics=GradientDescent(Schedule(rates)))
    f, expected = np.zeros(6), [np.zeros(6)]
    for eta in rates:
        f = f - eta / 6 * K @ (f - y)
        expected.append(f)
    np.testing.assert_allclose(pred(np.arange(5), np.zeros(6)), np.array(expected), rtol=1e-12, atol=1e-14)


def test_sklearn_conversion_refuses_a_zero_or_negative_rate_of_an_unfitted_mlp():
    """scikit-learn checks ``learning_rate_init > 0`` only in its own fit; the conversion checks it too."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    from ntksolve.sklearn.mlp_import import learning_rate_from_sklearn

    assert learning_rate_from_sklearn(MLPRegressor(solver="sgd", learning_rate_init=0.1), n_outputs=3) == pytest.approx(
        0.3
    )
    for cls in (MLPRegressor, MLPClassifier):
        with pytest.raises(ValueError, match=REASON):
            learning_rate_from_sklearn(cls(solver="sgd", learning_rate_init=0.0), n_outputs=1)
        with pytest.raises(ValueError, match="learning_rate_init must be > 0"):
            learning_rate_from_sklearn(cls(solver="sgd", learning_rate_init=-0.1), n_outputs=1)


@pytest.mark.parametrize("text", ["0", "0.0", "-0"])
def test_the_command_line_refuses_a_zero_rate_with_the_reason(text, capsys):
    from ntksolve.cli_parser import build_parser

    parser = build_parser()
    parser.parse_args(["compare", "--learning-rate", "0.25"])  # a positive rate is taken
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", "--learning-rate", text])
    assert REASON in capsys.readouterr().err
