"""The ``ntksolve`` command line's arguments: the default sweep, argument types, the parser, and the
:class:`UsageError` bad input becomes."""

from __future__ import annotations

import argparse
import signal
from typing import List

import numpy as np


class UsageError(Exception):
    """Bad input found by the command: reported on stderr with exit code 2."""


_EXTRA_HINT = "pip install 'ntksolve[cli]'"

#: Default sweep: one hidden ReLU layer, widths 64 ... 8192, 300 steps at half the critical rate of
#: the analytic NTK, on the embedded 256 + 256-point regression. See README.
DEFAULT_WIDTHS = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
DEFAULT_DEPTH = 1
DEFAULT_ACTIVATION = "relu"
DEFAULT_STEPS = 300
DEFAULT_RECORDS = 30
DEFAULT_BIAS_STD = 0.1
#: ``--test-size`` when not given: the fraction of the rows a data set without a test set holds out.
DEFAULT_TEST_SIZE = 0.25

#: ``--threads auto`` runs single-threaded up to this many training points. At N = 256 one training
#: step's products (256 x 8 x n) take 0.5 ms on one thread but 26 ms with 2 OpenBLAS threads on a
#: loaded 2-core machine (measured), and numba's parallel loops over 256 rows gain nothing either.
AUTO_SINGLE_THREAD_MAX_N = 1024

#: Exit codes of an interrupted run: 128 + the signal number, as a shell reports a process the
#: signal ended.
EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}

_EPILOG = """\
exit codes: 0 success; 2 bad input or an output that cannot be written (one-line message, no
traceback); 130 interrupted by Ctrl-C (SIGINT); 143 stopped by SIGTERM, which is handled like
Ctrl-C. report.json is rewritten atomically after every width with "state": "running" (a report
still "running" after the process ended was killed, e.g. by SIGKILL), "complete", "interrupted"
or "failed", and lists widths_done and widths_pending; settings.command is the exact command,
shell-quoted, and settings.versions the versions of ntksolve and its libraries."""


def _widths(text: str) -> List[int]:
    try:
        ws = [int(w) for w in text.replace(" ", "").split(",") if w]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not ws or any(w <= 0 for w in ws) or len(set(ws)) != len(ws):
        raise argparse.ArgumentTypeError(f"expected distinct positive integers, got {text!r}")
    return ws


def _number(text: str, cast, what: str):
    """``cast(text)``, or the usage error ``expected <what>``."""
    try:
        return cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def _positive_int(text: str) -> int:
    v = _number(text, int, "a positive integer")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _nonneg_int(text: str) -> int:
    v = _number(text, int, "a non-negative integer")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    v = _number(text, float, "a positive number")
    if not np.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return v


def _learning_rate(text: str) -> float:
    """A positive finite rate (:func:`_positive_float`); 0 refused with the reason every other entry
    point gives."""
    from ntksolve._validation import ZERO_RATE_REASON

    if _number(text, float, "a positive number") == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}: {ZERO_RATE_REASON}")
    return _positive_float(text)


def _activation(text: str) -> str:
    """An activation spelling, with arguments if it takes them (``leaky_relu(0.2)``, ``monomial(3)``)."""
    from ntksolve.nets.layers import check_activation

    try:
        return check_activation(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _threads(text: str):
    if text in ("auto", "all"):
        return text
    return _positive_int(text)


def _fraction(text: str) -> float:
    v = _positive_float(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return v


#: ``--schedule`` spellings: the kind and the names of its numbers after the colons (the peak rate is
#: --learning-rate or the --lr-fraction of the critical rate; the total steps are --steps).
SCHEDULES = {
    "constant": (),
    "cosine": (),
    "step": ("STEP_SIZE", "GAMMA"),
    "exponential": ("GAMMA",),
    "warmup_cosine": ("WARMUP",),
    "warmup_linear": ("WARMUP",),
}
_SCHEDULE_HELP = "constant, cosine, step:STEP_SIZE:GAMMA, exponential:GAMMA, warmup_cosine:WARMUP, warmup_linear:WARMUP"


def _schedule(text: str):
    """``(kind, numbers)`` of a ``--schedule`` spelling, e.g. ``step:100:0.5`` -> ``("step", (100, 0.5))``."""
    kind, *parts = text.strip().split(":")
    if kind not in SCHEDULES:
        raise argparse.ArgumentTypeError(f"unknown schedule {kind!r}; one of: {_SCHEDULE_HELP}")
    names = SCHEDULES[kind]
    if len(parts) != len(names):
        want = ":".join((kind,) + names)
        raise argparse.ArgumentTypeError(f"--schedule {text!r}: {kind} is spelled {want}")
    values = []
    for name, part in zip(names, parts):
        try:
            v = int(part) if name in ("STEP_SIZE", "WARMUP") else float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--schedule {text!r}: {name} must be a number, got {part!r}") from None
        if (name == "STEP_SIZE" and v < 1) or (name == "WARMUP" and v < 0) or (name == "GAMMA" and not 0 < v < np.inf):
            raise argparse.ArgumentTypeError(
                f"--schedule {text!r}: {name} must be "
                + (
                    "a positive integer"
                    if name == "STEP_SIZE"
                    else "a non-negative integer"
                    if name == "WARMUP"
                    else "a finite positive number"
                )
                + f", got {part!r}"
            )
        values.append(v)
    return kind, tuple(values)


def _nonneg_float(text: str) -> float:
    v = _number(text, float, "a number >= 0")
    if not np.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def training_rule(args):
    """``(rule, lr_fraction)`` of the command's training options (``ValueError`` naming the options).

    SGD: ``GradientDescent(rate or Schedule, momentum, nesterov, weight_decay)``, its peak rate
    ``--learning-rate`` or, with ``--lr-fraction`` (default 0.5), a placeholder of 1 that
    :func:`ntksolve.compare` scales to that fraction of the rule's critical rate. Adam:
    ``Adam(--learning-rate or 1e-3, weight_decay)``; it has no critical rate, momentum or schedule.
    """
    from ntksolve.dynamics import Adam, GradientDescent, Schedule

    if args.optimizer == "adam":
        given = [
            opt
            for opt, bad in (
                ("--momentum", args.momentum),
                ("--nesterov", args.nesterov),
                ("--lr-fraction", args.lr_fraction is not None),
                ("--schedule", args.schedule[0] != "constant"),
            )
            if bad
        ]
        if given:
            raise ValueError(
                f"--optimizer adam does not take {', '.join(given)}: Adam keeps its own per-parameter "
                "step sizes (betas 0.9, 0.999) and has no critical learning rate; give its rate with "
                "--learning-rate (default 1e-3)"
            )
        return Adam(1e-3 if args.learning_rate is None else args.learning_rate, weight_decay=args.weight_decay), None
    if not 0 <= args.momentum < 1:
        raise ValueError(f"--momentum must be in [0, 1), got {args.momentum}")
    if args.nesterov and args.momentum == 0:
        raise ValueError("--nesterov needs --momentum > 0 (Nesterov momentum with no momentum is plain descent)")
    fraction = None if args.learning_rate is not None else (0.5 if args.lr_fraction is None else args.lr_fraction)
    if fraction is not None and not 0 < fraction < 2:
        raise ValueError(f"--lr-fraction must be in (0, 2), got {fraction}")
    peak = 1.0 if fraction is not None else args.learning_rate
    kind, nums = args.schedule
    make = {
        "constant": lambda: peak,
        "cosine": lambda: Schedule.cosine(peak, args.steps),
        "step": lambda: Schedule.step(peak, *nums),
        "exponential": lambda: Schedule.exponential(peak, *nums),
        "warmup_cosine": lambda: Schedule.warmup_cosine(peak, args.steps, *nums),
        "warmup_linear": lambda: Schedule.warmup_linear(peak, args.steps, *nums),
    }[kind]
    try:
        rate = make()
    except ValueError as exc:
        raise ValueError(f"--schedule {kind}: {exc} (the total steps are --steps {args.steps})") from None
    rule = GradientDescent(rate, momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay)
    return rule, fraction


def build_parser() -> argparse.ArgumentParser:
    from ntksolve.sweep_checks import MAX_DEPTH, MAX_RECORDS, MAX_WIDTH
    from ntksolve.nets.mlp import ACTIVATIONS, PARAMETERIZATIONS
    from ntksolve.sweep_trainers import TRAINERS

    parser = argparse.ArgumentParser(
        prog="ntksolve",
        description="Predict how a wide neural network trains from its Neural Tangent Kernel, and check it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "compare",
        help="train networks of several widths for real beside their NTK predictions",
        description=(
            "For each width: initialise a network, predict its gradient-descent trajectory from its own "
            "empirical NTK and from the analytic (infinite-width) NTK, train it for real from the same "
            "parameters, and report the gap between real and predicted outputs, the final losses, the "
            "kernel's change and the time of prediction versus training. Writes report.json, "
            "loss_trajectories.png and gap_vs_width.png to the output folder and prints a table. "
            "Without --data it runs the default sweep on an embedded data set (no download)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        metavar="PATH",
        default=None,
        help="a CSV file (.csv/.tsv/.txt: UTF-8, separated by ',', ';', tab, '|' or spaces, detected; "
        "a header row of names, or none; all cells numeric, no missing values) or an .npz "
        "with arrays X, y and optionally X_test, y_test; or 'digits' (scikit-learn's bundled 8x8 "
        "handwritten digits, 1797 images of 10 classes, no download), 'digits:N' for a stratified "
        "N of them; default: the embedded regression (256 train / 256 test points, 8 features)",
    )
    g.add_argument(
        "--target",
        metavar="COLUMN",
        default=None,
        help="the CSV column to predict (default: the last column; without a header row the columns "
        "are named column1, column2, ...); the others are the features",
    )
    g.add_argument(
        "--test-size",
        type=_fraction,
        default=None,
        help=f"fraction of the rows held out for testing, {DEFAULT_TEST_SIZE} when not given: for a CSV, an .npz "
        "without X_test and y_test, or the digits (refused for data with its own test set)",
    )
    g.add_argument(
        "--no-standardize",
        action="store_true",
        help="use the data as is instead of scaling features and targets to zero mean and unit "
        "variance (by the training split); the NTK's scale assumes roughly unit-variance inputs",
    )
    g = p.add_argument_group("network")
    g.add_argument(
        "--network",
        choices=("mlp", "cnn"),
        default="mlp",
        help="mlp: the fully connected network; cnn: with --data digits, the 8x8 images through --depth "
        "3x3 convolutions of --widths channels, global average pooling and a dense readout",
    )
    g.add_argument(
        "--widths",
        type=_widths,
        default=list(DEFAULT_WIDTHS),
        metavar="N,N,...",
        help=f"comma-separated hidden widths to sweep (at most {MAX_WIDTH}, and the widest must fit in memory)",
    )
    g.add_argument(
        "--depth", type=_positive_int, default=DEFAULT_DEPTH, help=f"number of hidden layers (at most {MAX_DEPTH})"
    )
    g.add_argument(
        "--activation",
        type=_activation,
        default=DEFAULT_ACTIVATION,
        metavar="NAME",
        help=f"activation function: {', '.join(ACTIVATIONS)}, or leaky_relu(SLOPE), abrelu(A,B), monomial(N)",
    )
    g.add_argument("--weight-std", type=_positive_float, default=1.0, help="sigma_w, the weight scale")
    g.add_argument("--bias-std", type=float, default=DEFAULT_BIAS_STD, help="sigma_b, the bias scale (>= 0)")
    g.add_argument(
        "--parameterization",
        choices=PARAMETERIZATIONS,
        default="ntk",
        help="'ntk' (analytic and empirical predictions) or 'standard' (empirical only: its "
        "infinite-width NTK does not exist)",
    )
    g = p.add_argument_group("training")
    lr = g.add_mutually_exclusive_group()
    lr.add_argument(
        "--learning-rate",
        type=_learning_rate,
        default=None,
        metavar="ETA",
        help="absolute learning rate for every width (default: --lr-fraction of the critical rate)",
    )
    lr.add_argument(
        "--lr-fraction",
        type=float,
        default=None,
        help="learning rate as a fraction of the rule's critical rate (2Nk/lambda_max plain, "
        "2(1+mu)Nk/lambda_max with momentum, lambda_max + w Nk with weight decay; a schedule's "
        "peak): of the analytic NTK (ntk parameterisation) or of each network's own NTK "
        "(standard); must be in (0, 2); default 0.5 (SGD only)",
    )
    g.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS, help="optimiser steps")
    g.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default="sgd",
        help="torch.optim.SGD's rule (its twin on each kernel is exact) or Adam (no kernel twin: the "
        "report compares it with the loss-matched gradient flow, docs/training-rules.md)",
    )
    g.add_argument("--momentum", type=float, default=0.0, metavar="MU", help="SGD momentum, in [0, 1)")
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum (needs --momentum > 0)")
    g.add_argument(
        "--weight-decay",
        type=_nonneg_float,
        default=0.0,
        metavar="W",
        help="weight decay on all parameters (PyTorch's); no analytic-NTK twin (it needs J theta_0)",
    )
    g.add_argument(
        "--schedule",
        type=_schedule,
        default=("constant", ()),
        metavar="SPEC",
        help=f"SGD learning-rate schedule over --steps: {_SCHEDULE_HELP} (default constant); its peak is "
        "the learning rate",
    )
    g.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="B",
        help="minibatches of B training points, epoch-wise shuffled (one seeded order per width, shared "
        "by the real run and its twins; default: full batch)",
    )
    g.add_argument(
        "--loss",
        choices=("mse", "cross_entropy"),
        default="mse",
        help="mean squared error, or cross-entropy over the classes (needs class labels: --data digits, "
        "a file whose target column holds labels 0, 1, ..., K-1, or an .npz whose y holds one-hot rows); "
        "only the features are standardised",
    )
    g.add_argument(
        "--trainer",
        choices=TRAINERS,
        default="numpy",
        help="what trains the real networks: ntksolve's own numpy trainer, PyTorch's optimisers "
        "(torch.optim on the exported module; needs pip install 'ntksolve[torch]'), or "
        "scikit-learn's MLPRegressor/MLPClassifier stepped by partial_fit (--parameterization "
        "standard, SGD at a constant rate with momentum/Nesterov only); the predictions are the same",
    )
    g.add_argument(
        "--records",
        type=_positive_int,
        default=DEFAULT_RECORDS,
        help=f"about this many recorded (log-spaced) steps the gaps average over (at most {MAX_RECORDS}; "
        "never more than --steps + 1 distinct ones)",
    )
    g.add_argument("--seed", type=_nonneg_int, default=0, help="random seed, >= 0 (networks and the test split)")
    g.add_argument(
        "--threads",
        type=_threads,
        default="auto",
        help="BLAS and numba threads: a number (at most the cores this process may use, "
        "os.sched_getaffinity), 'all' (those cores), or 'auto' (1 thread when there are at most "
        f"{AUTO_SINGLE_THREAD_MAX_N} training points, whose small matrix products lose more to "
        "thread synchronisation than they gain; all cores otherwise)",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="output folder (default: a new ntksolve-runs/compare-YYYYmmdd-HHMMSS); refused if it "
        "exists and is not empty",
    )
    g.add_argument("--overwrite", action="store_true", help="write into an existing non-empty --out folder")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    g.add_argument("--quiet", action="store_true", help="no progress bar, notes or table; only the output folder")
    return parser


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------
