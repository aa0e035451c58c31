"""The ``ntksolve`` command. Its main job, ``ntksolve compare``, trains networks of several widths
for real beside their NTK predictions and writes a report (``report.json``), figures and a table.

Exit codes: 0 success; 2 bad input (arguments, data, resources, output folder) or an output that
cannot be written (disk full), with a one-line message on stderr and no traceback; 130
interrupted by Ctrl-C (SIGINT), 143 by SIGTERM (the widths finished so far are saved).
``report.json`` is rewritten atomically after every width with its ``state``: ``"running"``
(a report left so by a process that no longer runs was killed), ``"complete"``,
``"interrupted"`` or ``"failed"``.
Nothing imports this module; it sits on top of :mod:`ntksolve.comparison`, :mod:`ntksolve.plots`
and :mod:`ntksolve.cli_data` (the data of ``--data``).
"""

from __future__ import annotations

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

from ntksolve.cli_data import load_data
from ntksolve.cli_parser import (  # noqa: F401  (the defaults are part of the command's interface)
    AUTO_SINGLE_THREAD_MAX_N,
    DEFAULT_ACTIVATION,
    DEFAULT_BIAS_STD,
    DEFAULT_DEPTH,
    DEFAULT_RECORDS,
    DEFAULT_STEPS,
    DEFAULT_WIDTHS,
    EXIT_INTERRUPTED,
    _EXTRA_HINT,
    build_parser,
    training_rule,
    UsageError,
)


# ---------------------------------------------------------------------------------------------
# output folder
# ---------------------------------------------------------------------------------------------
#: The figures ``compare`` writes into its output folder (the accuracy only for a cross-entropy).
FIGURE_FILES = ("loss_trajectories.png", "accuracy_trajectories.png", "gap_vs_width.png")


def _clear_figures(folder: str) -> None:
    """Remove the figures an earlier run left in ``folder``, as this run's first report replaces
    its report: one this run does not draw (--no-plots, another loss, an interruption) must not
    sit beside the new report as if it were its own."""
    for name in FIGURE_FILES:
        path = os.path.join(folder, name)
        try:
            if os.path.isfile(path):
                os.unlink(path)
        except OSError as exc:
            raise UsageError(f"cannot replace {path}: {exc.strerror or exc}") from exc


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
        # the earlier run's files stay until this run writes its first report (_clear_figures): a
        # run refused before it starts leaves the earlier report beside its own figures
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
        return cores, (
            f"--threads {spec} is more than the {cores} core(s) this process may use "
            f"(os.sched_getaffinity); using {cores}"
        )
    return int(spec), ""


def _set_threads(n: int):
    """Limit BLAS (threadpoolctl, a scikit-learn dependency), numba and (if imported) torch threads to ``n``.

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
    torch = sys.modules.get("torch")  # imported only for --trainer torch; its own thread pool
    torch_before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)

    def restore():
        numba.set_num_threads(before)
        if torch is not None:
            torch.set_num_threads(torch_before)
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


def _trainer(args):
    """The sweep's trainer, refused before any data is read when it cannot run (not installed, or
    unable to train these networks by this rule exactly)."""
    from ntksolve.nets.mlp import MLP
    from ntksolve.sweep_trainers import sweep_trainer

    try:
        net = MLP((1,), args.activation, args.weight_std, args.bias_std, args.parameterization)
        return sweep_trainer(args.trainer, net, args._rule, loss=args.loss)
    except (ValueError, ImportError) as exc:
        raise UsageError(f"--trainer {args.trainer}: {exc}") from None


def _network(args, X, notes):
    """``compare``'s ``network=`` for ``--network`` (None: the MLP); the CNN is described in ``notes``."""
    if getattr(args, "network", "mlp") == "mlp":
        return None
    if not (args.data or "").startswith("digits") or X.shape[1] != 64:
        raise UsageError("--network cnn convolves the 8x8 digit images: use it with --data digits")
    if args.trainer != "numpy":
        raise UsageError("--network cnn trains with --trainer numpy (the PyTorch and scikit-learn trainers take MLPs)")
    notes.append(
        f"network: a CNN, the images 8x8 through {args.depth} 3x3 convolution(s) ('same') of WIDTH channels "
        f"with {args.activation}, global average pooling, a dense readout (the widths are channels)"
    )
    from ntksolve.cnn import sweep_cnn

    return sweep_cnn


def run_compare(args) -> int:
    from ntksolve.sweep_checks import check_sweep, default_record_steps

    try:
        args._rule, args._lr_fraction = training_rule(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.bias_std < 0 or not np.isfinite(args.bias_std):
        raise UsageError(f"--bias-std must be a finite number >= 0, got {args.bias_std}")
    if args.records < 2:
        raise UsageError("--records must be at least 2")
    args._trainer = _trainer(args)
    X, y, Xt, yt, desc, notes = load_data(args)
    args._network = _network(args, X, notes)
    if args.batch_size is not None and args.batch_size > X.shape[0]:
        raise UsageError(f"--batch-size {args.batch_size} is more than the {X.shape[0]} training points")
    try:
        check_sweep(
            X.shape[0],
            Xt.shape[0],
            X.shape[1],
            y.shape[1],
            args.widths,
            depth=args.depth,
            n_records=args.records,
            parameterization=args.parameterization,
        )
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

    first = [True]

    def save(report):
        # Whenever the report changes (start, each width, end): a kill leaves the widths done on
        # disk, and a report that says it is still running. The first comes once compare has
        # accepted its arguments: only then do the earlier run's figures go.
        report.settings.update(cli_settings)
        if first[0]:
            _clear_figures(out)
            first[0] = False
        _write(report_path, report.write_json)

    try:
        report = compare(
            X,
            y,
            args.widths,
            X_test=Xt,
            y_test=yt,
            depth=args.depth,
            activation=args.activation,
            weight_std=args.weight_std,
            bias_std=args.bias_std,
            parameterization=args.parameterization,
            dynamics=args._rule,
            lr_fraction=args._lr_fraction,
            loss=args.loss,
            batch_size=args.batch_size,
            steps=args.steps,
            n_records=args.records,
            random_state=args.seed,
            progress=progress,
            on_state=save,
            trainer=args._trainer,
            network=args._network,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except MemoryError as exc:
        raise UsageError(
            f"out of memory: {exc or 'an array did not fit'}; the report in {out} says which widths "
            "finished; use smaller widths or fewer points"
        ) from None
    received = args._signals
    if report.interrupted:
        report.message = f"{report.message} (stopped by {_signal_name(received)})"
        save(report)
    written = [report_path]
    figures_interrupted = False
    if plots and report.rows:
        from ntksolve import plots as _plots

        try:
            loss_png, accuracy_png, gap_png = FIGURE_FILES
            figures = [(_plots.plot_loss_trajectories, loss_png), (_plots.plot_gap_vs_width, gap_png)]
            if args.loss == "cross_entropy":
                figures.insert(1, (_plots.plot_accuracy_trajectories, accuracy_png))
            for fn, name in figures:
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
        print(
            f"ntksolve compare: interrupted by {_signal_name(received)}; the {len(report.rows)} finished width(s) "
            f"are saved in {out} (report state 'interrupted')",
            file=sys.stderr,
        )
        return _exit_code(received)
    if figures_interrupted:
        print(
            f"ntksolve compare: interrupted by {_signal_name(received)} while drawing the figures; report.json in "
            f"{out} is complete",
            file=sys.stderr,
        )
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
            print(
                f"ntksolve compare: interrupted by {_signal_name(received)} before the sweep started; no width was run",
                file=sys.stderr,
            )
            return _exit_code(received)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
