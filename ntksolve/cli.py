"""The ``ntksolve`` command. Its main job, ``ntksolve compare``, trains networks of several widths
for real beside their NTK predictions and writes a report (``report.json``), figures and a table.

Exit codes: 0 success; 2 bad input (arguments, data, output folder), with a message on stderr and
no traceback; 130 interrupted by Ctrl-C (the widths finished so far are saved).
Nothing imports this module; it sits on top of :mod:`ntksolve.comparison` and :mod:`ntksolve.plots`.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from typing import List, Optional

import numpy as np

_EXTRA_HINT = "pip install 'ntksolve[cli]'"

#: Default sweep (issue 5): one hidden ReLU layer, widths 64 ... 8192, 300 steps at half the
#: critical rate of the analytic NTK, on the embedded 256 + 256-point regression. See README.
DEFAULT_WIDTHS = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
DEFAULT_DEPTH = 1
DEFAULT_ACTIVATION = "relu"
DEFAULT_STEPS = 300
DEFAULT_RECORDS = 30
DEFAULT_BIAS_STD = 0.1

#: ``--threads auto`` runs single-threaded up to this many training points. At N = 256 one training
#: step's products (256 x 8 x n) take 0.5 ms on one thread but 26 ms with 2 OpenBLAS threads on a
#: loaded 2-core machine (measured), and numba's parallel loops over 256 rows gain nothing either.
AUTO_SINGLE_THREAD_MAX_N = 1024


class UsageError(Exception):
    """Bad input found by the command: reported on stderr with exit code 2."""


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
_MISSING = {"", "nan", "na", "n/a", "null", "none", "?", "-"}


def load_csv(path: str, target: Optional[str]):
    """Read a CSV with a header row; return ``(X (N, d), y (N, 1), feature names, target name)``.

    Every cell must be a number: missing values (empty, NA, NaN, ?) and text are refused with
    their row and column, never silently dropped or imputed.
    """
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --data {path!r}: {exc}") from exc
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise UsageError(f"{path}: need a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if target is None:
        target = header[-1]
    elif target not in header:
        raise UsageError(f"{path}: no column named {target!r} (--target); the columns are: {', '.join(header)}")
    if len(header) < 2:
        raise UsageError(f"{path}: need at least one feature column besides the target {target!r}")
    data = np.empty((len(rows) - 1, len(header)))
    missing = []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UsageError(f"{path}, line {i}: {len(row)} fields, but the header has {len(header)}")
        for j, cell in enumerate(row):
            c = cell.strip()
            if c.lower() in _MISSING:
                missing.append((i, header[j]))
                data[i - 2, j] = np.nan
                continue
            try:
                data[i - 2, j] = float(c)
            except ValueError:
                raise UsageError(
                    f"{path}, line {i}, column {header[j]!r}: {c!r} is not a number (every column must be numeric)"
                ) from None
            if not np.isfinite(data[i - 2, j]):
                missing.append((i, header[j]))
    if missing:
        where = ", ".join(f"line {i} column {c!r}" for i, c in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UsageError(
            f"{path}: {len(missing)} missing or non-finite value(s) ({where}{more}); remove or impute them first"
        )
    jt = header.index(target)
    feats = [h for j, h in enumerate(header) if j != jt]
    X = np.delete(data, jt, axis=1)
    y = data[:, jt : jt + 1]
    return X, y, feats, target


def load_npz(path: str):
    """Read an ``.npz`` with arrays ``X`` (N, d), ``y`` (N,) or (N, k), optional ``X_test``, ``y_test``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
        raise UsageError(f"cannot read --data {path!r} as .npz: {exc}") from exc
    if "X" not in arrays or "y" not in arrays:
        raise UsageError(f"{path}: an .npz needs arrays named 'X' and 'y' (found: {', '.join(arrays) or 'none'})")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise UsageError(f"{path}: give both X_test and y_test, or neither")
    out = []
    for name in ("X", "y", "X_test", "y_test"):
        a = arrays.get(name)
        if a is None:
            out.append(None)
            continue
        if not np.issubdtype(a.dtype, np.number):
            raise UsageError(f"{path}: array {name!r} is not numeric (dtype {a.dtype})")
        a = np.asarray(a, dtype=np.float64)
        if name.startswith("y") and a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise UsageError(f"{path}: array {name!r} must be 2-D{' (or 1-D)' if name.startswith('y') else ''}, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise UsageError(f"{path}: array {name!r} has {int(np.sum(~np.isfinite(a)))} missing or non-finite values")
        out.append(a)
    X, y, Xt, yt = out
    if X.shape[0] != y.shape[0]:
        raise UsageError(f"{path}: X has {X.shape[0]} rows but y has {y.shape[0]}")
    if Xt is not None and (Xt.shape[0] != yt.shape[0] or Xt.shape[1] != X.shape[1] or yt.shape[1] != y.shape[1]):
        raise UsageError(f"{path}: X_test/y_test shapes {Xt.shape}/{yt.shape} do not match X/y {X.shape}/{y.shape}")
    return X, y, Xt, yt


def _split(X, y, test_size: float, seed: int):
    n = X.shape[0]
    n_test = int(round(test_size * n))
    if n_test < 1 or n - n_test < 2:
        raise UsageError(f"--test-size {test_size} leaves {n - n_test} training and {n_test} test rows of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    te, tr = perm[:n_test], perm[n_test:]
    return X[tr], y[tr], X[te], y[te]


def _standardise(X, y, Xt, yt):
    """Scale features and targets by the training split's mean and standard deviation."""
    mx, sx = X.mean(0), X.std(0)
    sx[sx == 0] = 1.0  # a constant column stays constant (0) instead of dividing by zero
    my, sy = y.mean(0), y.std(0)
    sy[sy == 0] = 1.0
    return (X - mx) / sx, (y - my) / sy, (Xt - mx) / sx, (yt - my) / sy


def load_data(args):
    """Return ``(X, y, X_test, y_test, description)`` as float64 arrays."""
    if args.data is None:
        from ntksolve.datasets import default_regression

        if args.target is not None:
            raise UsageError("--target needs --data (the embedded default data has a single target)")
        d = default_regression()
        return d.X_train, d.y_train, d.X_test, d.y_test, d.description
    path = args.data
    if not os.path.isfile(path):
        raise UsageError(f"--data {path!r}: no such file")
    if path.lower().endswith(".npz"):
        if args.target is not None:
            raise UsageError("--target applies to CSV files; an .npz names its arrays X and y")
        X, y, Xt, yt = load_npz(path)
        desc = f"{path} (npz)"
    elif path.lower().endswith((".csv", ".txt")):
        X, y, feats, target = load_csv(path, args.target)
        Xt = yt = None
        desc = f"{path}: target {target!r}, features {', '.join(feats)}"
    else:
        raise UsageError(f"--data {path!r}: expected a .csv (with a header row) or an .npz file")
    if Xt is None:
        X, y, Xt, yt = _split(X, y, args.test_size, args.seed)
        desc += f"; random {args.test_size:g} test split (seed {args.seed})"
    if not args.no_standardize:
        X, y, Xt, yt = _standardise(X, y, Xt, yt)
        desc += "; standardised by the training split"
    return X, y, Xt, yt, desc


# ---------------------------------------------------------------------------------------------
# output folder
# ---------------------------------------------------------------------------------------------
def _check_writable(folder: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ntksolve-write-test-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UsageError(f"output folder {folder!r} is not writable: {exc.strerror or exc}") from exc


def prepare_out_dir(out: Optional[str], overwrite: bool) -> str:
    """Create (or accept) the output folder before any work; refuse a non-empty one unless ``overwrite``.

    Without ``out``: a new ``ntksolve-runs/compare-YYYYmmdd-HHMMSS`` in the working directory, with
    ``-2``, ``-3``, ... appended when that name exists, so two runs never share a folder.
    """
    if out is None:
        base = os.path.join("ntksolve-runs", time.strftime("compare-%Y%m%d-%H%M%S"))
        try:
            os.makedirs(os.path.dirname(base), exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {os.path.dirname(base)!r}: {exc.strerror or exc}") from exc
        for i in range(1, 10000):
            cand = base if i == 1 else f"{base}-{i}"
            try:
                os.mkdir(cand)  # atomic: fails if another run took the name first
            except FileExistsError:
                continue
            except OSError as exc:
                raise UsageError(f"cannot create output folder {cand!r}: {exc.strerror or exc}") from exc
            _check_writable(cand)
            return cand
        raise UsageError(f"could not find a free output folder name under {base!r}")  # pragma: no cover
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise UsageError(f"--out {out!r} exists and is not a folder")
        if os.listdir(out) and not overwrite:
            raise UsageError(
                f"--out {out!r} exists and is not empty; choose another folder or pass --overwrite "
                "(which replaces report.json and the figures, and leaves other files alone)"
            )
    else:
        try:
            os.makedirs(out)
        except OSError as exc:
            raise UsageError(f"cannot create output folder {out!r}: {exc.strerror or exc}") from exc
    _check_writable(out)
    return out


# ---------------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------------
def _widths(text: str) -> List[int]:
    try:
        ws = [int(w) for w in text.replace(" ", "").split(",") if w]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not ws or any(w <= 0 for w in ws) or len(set(ws)) != len(ws):
        raise argparse.ArgumentTypeError(f"expected distinct positive integers, got {text!r}")
    return ws


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return v


def _threads(text: str):
    if text in ("auto", "all"):
        return text
    return _positive_int(text)


def _fraction(text: str) -> float:
    v = _positive_float(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from ntksolve.nets.mlp import ACTIVATIONS, PARAMETERIZATIONS

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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="PATH", default=None,
                   help="a CSV file with a header row (all columns numeric, no missing values) or an .npz "
                        "with arrays X, y and optionally X_test, y_test; default: the embedded regression "
                        "(256 train / 256 test points, 8 features)")
    g.add_argument("--target", metavar="COLUMN", default=None,
                   help="the CSV column to predict (default: the last column); the others are the features")
    g.add_argument("--test-size", type=_fraction, default=0.25,
                   help="fraction of the rows held out for testing when the data has no test set")
    g.add_argument("--no-standardize", action="store_true",
                   help="use the data as is instead of scaling features and targets to zero mean and unit "
                        "variance (by the training split); the NTK's scale assumes roughly unit-variance inputs")
    g = p.add_argument_group("network")
    g.add_argument("--widths", type=_widths, default=list(DEFAULT_WIDTHS), metavar="N,N,...",
                   help="comma-separated hidden widths to sweep")
    g.add_argument("--depth", type=_positive_int, default=DEFAULT_DEPTH, help="number of hidden layers")
    g.add_argument("--activation", choices=ACTIVATIONS, default=DEFAULT_ACTIVATION, help="activation function")
    g.add_argument("--weight-std", type=_positive_float, default=1.0, help="sigma_w, the weight scale")
    g.add_argument("--bias-std", type=float, default=DEFAULT_BIAS_STD, help="sigma_b, the bias scale (>= 0)")
    g.add_argument("--parameterization", choices=PARAMETERIZATIONS, default="ntk",
                   help="'ntk' (analytic and empirical predictions) or 'standard' (empirical only: its "
                        "infinite-width NTK does not exist)")
    g = p.add_argument_group("training")
    lr = g.add_mutually_exclusive_group()
    lr.add_argument("--learning-rate", type=_positive_float, default=None, metavar="ETA",
                    help="absolute learning rate for every width (default: --lr-fraction of the critical rate)")
    lr.add_argument("--lr-fraction", type=float, default=0.5,
                    help="learning rate as a fraction of the critical rate 2Nk/lambda_max: of the analytic NTK "
                         "(ntk parameterisation) or of each network's own NTK (standard); must be in (0, 2)")
    g.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS, help="gradient-descent steps")
    g.add_argument("--records", type=_positive_int, default=DEFAULT_RECORDS,
                   help="number of recorded (log-spaced) steps the gaps average over")
    g.add_argument("--seed", type=int, default=0, help="random seed (networks and the test split)")
    g.add_argument("--threads", type=_threads, default="auto",
                   help="BLAS and numba threads: a number, 'all', or 'auto' (1 thread when there are at most "
                        f"{AUTO_SINGLE_THREAD_MAX_N} training points, whose small matrix products lose more to "
                        "thread synchronisation than they gain; all threads otherwise)")
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: a new ntksolve-runs/compare-YYYYmmdd-HHMMSS); refused if it "
                        "exists and is not empty")
    g.add_argument("--overwrite", action="store_true", help="write into an existing non-empty --out folder")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    g.add_argument("--quiet", action="store_true", help="no progress bar, notes or table; only the output folder")
    return parser


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------
def _err(msg: str) -> None:
    print(f"ntksolve compare: error: {msg}", file=sys.stderr)


def _note(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"ntksolve compare: {msg}", file=sys.stderr)


def _write_outputs(report, out: str, plots: bool, quiet: bool) -> List[str]:
    written = []
    path = os.path.join(out, "report.json")
    report.write_json(path)
    written.append(path)
    if plots and report.rows:
        try:
            from ntksolve import plots as _plots

            written.append(_plots.plot_loss_trajectories(report, os.path.join(out, "loss_trajectories.png")))
            written.append(_plots.plot_gap_vs_width(report, os.path.join(out, "gap_vs_width.png")))
        except ImportError as exc:
            print(f"ntksolve compare: warning: figures skipped: {exc}", file=sys.stderr)
    return written


def _set_threads(n: Optional[int]):
    """Limit BLAS (threadpoolctl, a scikit-learn dependency) and numba threads.

    Returns a function that restores the previous limits (``main`` may run in-process).
    """
    if n is None:
        return lambda: None
    import numba

    before = numba.get_num_threads()
    limiter = None
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover - scikit-learn depends on threadpoolctl
        pass
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))

    def restore():
        numba.set_num_threads(before)
        if limiter is not None:
            limiter.restore_original_limits()

    return restore


def run_compare(args) -> int:
    if not 0 < args.lr_fraction < 2:
        raise UsageError(f"--lr-fraction must be in (0, 2), got {args.lr_fraction}")
    if args.bias_std < 0 or not np.isfinite(args.bias_std):
        raise UsageError(f"--bias-std must be a finite number >= 0, got {args.bias_std}")
    if args.records < 2:
        raise UsageError("--records must be at least 2")
    X, y, Xt, yt, desc = load_data(args)
    out = prepare_out_dir(args.out, args.overwrite)
    plots = not args.no_plots
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(f"ntksolve compare: warning: matplotlib is not installed, so no figures will be written "
                  f"({_EXTRA_HINT})", file=sys.stderr)
            plots = False
    progress = not args.quiet
    if progress:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            _note(f"tqdm is not installed: plain progress lines instead of a bar ({_EXTRA_HINT})", args.quiet)
    threads = args.threads
    if threads == "auto":
        threads = 1 if X.shape[0] <= AUTO_SINGLE_THREAD_MAX_N else None
    elif threads == "all":
        threads = None
    restore_threads = _set_threads(threads)
    try:
        return _run(args, X, y, Xt, yt, desc, out, plots, progress)
    finally:
        restore_threads()


def _run(args, X, y, Xt, yt, desc, out, plots, progress) -> int:
    from ntksolve.comparison import compare

    _note(f"data: {desc}", args.quiet)
    _note(f"writing to {out}", args.quiet)

    def save_partial(row, report):
        # After every width, so that even a hard kill leaves the finished widths on disk.
        report.write_json(os.path.join(out, "report.json"))

    try:
        report = compare(
            X, y, args.widths, X_test=Xt, y_test=yt, depth=args.depth, activation=args.activation,
            weight_std=args.weight_std, bias_std=args.bias_std, parameterization=args.parameterization,
            learning_rate=args.learning_rate, lr_fraction=args.lr_fraction, steps=args.steps,
            n_records=args.records, random_state=args.seed, progress=progress, on_width_done=save_partial,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    report.settings["data"] = desc
    report.settings["command"] = "ntksolve compare " + " ".join(args._argv)
    try:
        written = _write_outputs(report, out, plots, args.quiet)
    except KeyboardInterrupt:
        report.write_json(os.path.join(out, "report.json"))
        written = [os.path.join(out, "report.json")]
        report.interrupted = True
    if not args.quiet:
        print(report.table())
        print()
        for w in written:
            print(f"wrote {w}")
    else:
        print(out)
    for r in report.rows:
        if r.get("diverged"):
            print(f"ntksolve compare: warning: width {r['width']}: {r['message']}", file=sys.stderr)
    if report.interrupted:
        print(f"ntksolve compare: interrupted; the {len(report.rows)} finished width(s) are saved in {out}",
              file=sys.stderr)
        return 130
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``ntksolve`` console script; returns the exit code.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with code 2 and a usage message on bad arguments
    if args.command is None:
        parser.print_help()
        return 2
    args._argv = argv
    try:
        return run_compare(args)
    except UsageError as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        print("ntksolve compare: interrupted before any width finished; nothing saved", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
