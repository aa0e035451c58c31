"""The ``ntksolve`` command. Its main job, ``ntksolve compare``, trains networks of several widths
for real beside their NTK predictions and writes a report (``report.json``), figures and a table.

Exit codes: 0 success; 2 bad input (arguments, data, resources, output folder) or an output that
cannot be written (disk full), with a one-line message on stderr and no traceback; 130
interrupted by Ctrl-C (SIGINT), 143 by SIGTERM (the widths finished so far are saved).
``report.json`` is rewritten atomically after every width with its ``state``: ``"running"``
(a report left so by a process that no longer runs was killed), ``"complete"``,
``"interrupted"`` or ``"failed"``.
Nothing imports this module; it sits on top of :mod:`ntksolve.comparison`, :mod:`ntksolve.plots`
and :mod:`ntksolve.datasets`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from typing import List, Optional

import numpy as np

_EXTRA_HINT = "pip install 'ntksolve[cli]'"

#: Default sweep: one hidden ReLU layer, widths 64 ... 8192, 300 steps at half the critical rate of
#: the analytic NTK, on the embedded 256 + 256-point regression. See README.
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


class UsageError(Exception):
    """Bad input found by the command: reported on stderr with exit code 2."""


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def _split(X, y, test_size: float, seed: int):
    n = X.shape[0]
    n_test = int(round(test_size * n))
    if n_test < 1 or n - n_test < 2:
        raise UsageError(f"--test-size {test_size} leaves {n - n_test} training and {n_test} test rows of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    te, tr = perm[:n_test], perm[n_test:]
    return X[tr], y[tr], X[te], y[te]


def _check_unscaled(arrays) -> None:
    """With --no-standardize, refuse data whose squared norms overflow float64 (the kernels sum
    ``x_i^2`` over the features, the gaps ``y^2``), before they turn into NaN kernels."""
    for a, what in arrays:
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("ij,ij->i", a, a)
        if not np.all(np.isfinite(sq)):
            raise UsageError(
                f"with --no-standardize the {what} reach {np.max(np.abs(a)):.3g}: their squares overflow float64 in "
                "the kernel; drop --no-standardize (scaling is overflow-free) or rescale the data"
            )


def load_data(args):
    """Return ``(X, y, X_test, y_test, description, notes)`` as float64 arrays and a list of notes."""
    from ntksolve import datasets

    if args.data is None:
        if args.target is not None:
            raise UsageError("--target needs --data (the embedded default data has a single target)")
        d = datasets.default_regression()
        return d.X_train, d.y_train, d.X_test, d.y_test, d.description, []
    path = args.data
    if not os.path.isfile(path):
        raise UsageError(f"--data {path!r}: no such file")
    notes = []
    feats, target = None, "the target"
    try:
        if path.lower().endswith(".npz"):
            if args.target is not None:
                raise UsageError("--target applies to CSV files; an .npz names its arrays X and y")
            X, y, Xt, yt = datasets.read_npz(path)
            desc = f"{path} (npz)"
        elif path.lower().endswith((".csv", ".tsv", ".txt")):
            t = datasets.read_csv(path, args.target)
            X, y, feats, target = t.X, t.y, t.feature_names, t.target
            Xt = yt = None
            notes.extend(t.notes)
            sep = datasets.DELIMITER_NAMES.get(t.delimiter, repr(t.delimiter))
            desc = (f"{path} ({sep}-separated, {'header row' if t.has_header else 'no header row'}): target "
                    f"{target!r}, features {', '.join(feats)}")
            target = f"target column {target!r}"
        else:
            raise UsageError(f"--data {path!r}: expected a .csv/.tsv/.txt file or an .npz file")
        if Xt is None:
            X, y, Xt, yt = _split(X, y, args.test_size, args.seed)
            desc += f"; random {args.test_size:g} test split (seed {args.seed})"
        if args.no_standardize:
            _check_unscaled(((X, "features"), (y, "targets"), (Xt, "test features"), (yt, "test targets")))
        else:
            X, y, Xt, yt, more = datasets.standardise(X, y, Xt, yt, feats, target)
            notes.extend(more)
            desc += "; standardised by the training split"
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return X, y, Xt, yt, desc, notes


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
    from ntksolve.sweep_checks import MAX_DEPTH, MAX_RECORDS, MAX_WIDTH
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
        epilog=_EPILOG,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="PATH", default=None,
                   help="a CSV file (.csv/.tsv/.txt: UTF-8, separated by ',', ';', tab, '|' or spaces, detected; "
                        "a header row of names, or none; all cells numeric, no missing values) or an .npz "
                        "with arrays X, y and optionally X_test, y_test; default: the embedded regression "
                        "(256 train / 256 test points, 8 features)")
    g.add_argument("--target", metavar="COLUMN", default=None,
                   help="the CSV column to predict (default: the last column; without a header row the columns "
                        "are named column1, column2, ...); the others are the features")
    g.add_argument("--test-size", type=_fraction, default=0.25,
                   help="fraction of the rows held out for testing when the data has no test set")
    g.add_argument("--no-standardize", action="store_true",
                   help="use the data as is instead of scaling features and targets to zero mean and unit "
                        "variance (by the training split); the NTK's scale assumes roughly unit-variance inputs")
    g = p.add_argument_group("network")
    g.add_argument("--widths", type=_widths, default=list(DEFAULT_WIDTHS), metavar="N,N,...",
                   help=f"comma-separated hidden widths to sweep (at most {MAX_WIDTH}, and the widest must fit in "
                        "memory)")
    g.add_argument("--depth", type=_positive_int, default=DEFAULT_DEPTH,
                   help=f"number of hidden layers (at most {MAX_DEPTH})")
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
                   help=f"about this many recorded (log-spaced) steps the gaps average over (at most {MAX_RECORDS}; "
                        "never more than --steps + 1 distinct ones)")
    g.add_argument("--seed", type=int, default=0, help="random seed (networks and the test split)")
    g.add_argument("--threads", type=_threads, default="auto",
                   help="BLAS and numba threads: a number (at most the cores this process may use, "
                        "os.sched_getaffinity), 'all' (those cores), or 'auto' (1 thread when there are at most "
                        f"{AUTO_SINGLE_THREAD_MAX_N} training points, whose small matrix products lose more to "
                        "thread synchronisation than they gain; all cores otherwise)")
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


def _warn(msg: str) -> None:
    print(f"ntksolve compare: warning: {msg}", file=sys.stderr)


class _Signalled(KeyboardInterrupt):
    """Raised by the handlers of :func:`_signals`: stops the sweep as Ctrl-C does."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals():
    """SIGTERM (and SIGINT, unless it is ignored) raise :class:`_Signalled` while the command runs.

    Yields a list that holds the number of the last signal received. The previous handlers come
    back afterwards (``main`` may run in-process). Off the main thread nothing is installed."""
    received: List[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        received.append(signum)
        raise _Signalled(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        if sig == signal.SIGINT and old is not signal.default_int_handler:
            continue  # ignored (a background job) or handled by the embedding program: leave it
        previous[sig] = old
        signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _exit_code(received: List[int]) -> int:
    return EXIT_INTERRUPTED.get(received[-1] if received else signal.SIGINT, 130)


def _signal_name(received: List[int]) -> str:
    if not received or received[-1] == signal.SIGINT:
        return "Ctrl-C (SIGINT)"
    return signal.Signals(received[-1]).name


def _cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _resolve_threads(spec, n_train: int):
    """``(threads, note)``: never more threads than cores (each BLAS thread allocates its own
    buffers and spins; 127 of them on 2 cores ran 60x slower)."""
    cores = _cores()
    if spec == "auto":
        return (1 if n_train <= AUTO_SINGLE_THREAD_MAX_N else cores), ""
    if spec == "all":
        return cores, ""
    if spec > cores:
        return cores, (f"--threads {spec} is more than the {cores} core(s) this process may use "
                       f"(os.sched_getaffinity); using {cores}")
    return int(spec), ""


def _set_threads(n: int):
    """Limit BLAS (threadpoolctl, a scikit-learn dependency) and numba threads to ``n``.

    Returns a function that restores the previous limits (``main`` may run in-process).
    """
    import numba

    before = numba.get_num_threads()
    limiter = None
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover - scikit-learn depends on threadpoolctl
        pass
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))

    def restore():
        numba.set_num_threads(before)
        if limiter is not None:
            limiter.restore_original_limits()

    return restore


def _write(path: str, write) -> str:
    """Run ``write(path)``; an ``OSError`` (disk full, permissions) becomes a one-line UsageError."""
    try:
        write(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def run_compare(args) -> int:
    from ntksolve.sweep_checks import check_sweep, default_record_steps

    if not 0 < args.lr_fraction < 2:
        raise UsageError(f"--lr-fraction must be in (0, 2), got {args.lr_fraction}")
    if args.bias_std < 0 or not np.isfinite(args.bias_std):
        raise UsageError(f"--bias-std must be a finite number >= 0, got {args.bias_std}")
    if args.records < 2:
        raise UsageError("--records must be at least 2")
    X, y, Xt, yt, desc, notes = load_data(args)
    try:
        check_sweep(X.shape[0], Xt.shape[0], X.shape[1], y.shape[1], args.widths, depth=args.depth,
                    n_records=args.records, parameterization=args.parameterization)
    except (ValueError, MemoryError) as exc:
        raise UsageError(str(exc)) from None
    n_rec = default_record_steps(args.steps, args.records).size
    if args.records > args.steps + 1:
        notes.append(f"--records {args.records} gives {n_rec} recorded steps: --steps {args.steps} has no more")
    out = prepare_out_dir(args.out, args.overwrite)
    plots = not args.no_plots
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            _warn(f"matplotlib is not installed, so no figures will be written ({_EXTRA_HINT})")
            plots = False
    progress = not args.quiet
    if progress:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            _note(f"tqdm is not installed: plain progress lines instead of a bar ({_EXTRA_HINT})", args.quiet)
    threads, note = _resolve_threads(args.threads, X.shape[0])
    if note:
        notes.append(note)
    restore_threads = _set_threads(threads)
    try:
        return _run(args, X, y, Xt, yt, desc, notes, out, plots, progress, threads)
    finally:
        restore_threads()


def _run(args, X, y, Xt, yt, desc, notes, out, plots, progress, threads) -> int:
    from ntksolve.comparison import compare

    _note(f"data: {desc}", args.quiet)
    for n in notes:
        _note(f"note: {n}", args.quiet)
    _note(f"writing to {out}", args.quiet)
    report_path = os.path.join(out, "report.json")
    cli_settings = {
        "command": shlex.join(["ntksolve", *args._argv]),
        "argv": list(args._argv),
        "cwd": os.getcwd(),
        "data": desc,
        "data_notes": notes,
        "threads": threads,
        "cores_available": _cores(),
    }

    def save(report):
        # Whenever the report changes (start, each width, end): a kill leaves the widths done on
        # disk, and a report that says it is still running.
        report.settings.update(cli_settings)
        _write(report_path, report.write_json)

    try:
        report = compare(
            X, y, args.widths, X_test=Xt, y_test=yt, depth=args.depth, activation=args.activation,
            weight_std=args.weight_std, bias_std=args.bias_std, parameterization=args.parameterization,
            learning_rate=args.learning_rate, lr_fraction=args.lr_fraction, steps=args.steps,
            n_records=args.records, random_state=args.seed, progress=progress, on_state=save,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except MemoryError as exc:
        raise UsageError(f"out of memory: {exc or 'an array did not fit'}; the report in {out} says which widths "
                         "finished; use smaller widths or fewer points") from None
    received = args._signals
    if report.interrupted:
        report.message = f"{report.message} (stopped by {_signal_name(received)})"
        save(report)
    written = [report_path]
    figures_interrupted = False
    if plots and report.rows:
        from ntksolve import plots as _plots

        try:
            for fn, name in ((_plots.plot_loss_trajectories, "loss_trajectories.png"),
                             (_plots.plot_gap_vs_width, "gap_vs_width.png")):
                written.append(_write(os.path.join(out, name), lambda p, fn=fn: fn(report, p)))
        except KeyboardInterrupt:
            figures_interrupted = True
    if not args.quiet:
        print(report.table())
        print()
        for w in written:
            print(f"wrote {w}")
    else:
        print(out)
    for line in report.notes():
        _warn(line)
    if report.interrupted:
        print(f"ntksolve compare: interrupted by {_signal_name(received)}; the {len(report.rows)} finished width(s) "
              f"are saved in {out} (report state 'interrupted')", file=sys.stderr)
        return _exit_code(received)
    if figures_interrupted:
        print(f"ntksolve compare: interrupted by {_signal_name(received)} while drawing the figures; report.json in "
              f"{out} is complete", file=sys.stderr)
        return _exit_code(received)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``ntksolve`` console script; returns the exit code.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    with _signals() as received:
        try:
            parser = build_parser()
            args = parser.parse_args(argv)  # exits with code 2 and a usage message on bad arguments
            if args.command is None:
                parser.print_help()
                return 2
            args._argv = argv
            args._signals = received
            return run_compare(args)
        except UsageError as exc:
            _err(str(exc))
            return 2
        except KeyboardInterrupt:
            print(f"ntksolve compare: interrupted by {_signal_name(received)} before the sweep started; no width "
                  "was run", file=sys.stderr)
            return _exit_code(received)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
