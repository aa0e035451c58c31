"""What the width-sweep tests share: ``compare`` on a data set's splits, the command run in this
process, and a clock on which the analytic kernels are slow."""

import time

from ntksolve.comparison import compare

#: Numbers every row of a converging sweep's report holds (finite floats).
ROW_NUMBERS = (
    "gap_train_empirical",
    "gap_test_empirical",
    "gap_train_analytic",
    "gap_test_analytic",
    "loss_test_final_real",
    "loss_test_final_empirical",
    "kernel_change_final",
    "time_train",
    "time_predict",
    "speedup",
)


def sweep_on(data, widths, **kwargs):
    """:func:`ntksolve.comparison.compare` on ``data``'s train and test splits, with no progress
    display unless ``progress=True`` is given."""
    kwargs.setdefault("progress", False)
    return compare(data.X_train, data.y_train, widths, X_test=data.X_test, y_test=data.y_test, **kwargs)


def slow_analytic_kernels(monkeypatch, seconds):
    """Make every analytic kernel a sweep computes (not the warm-up's) take ``seconds`` more, on a
    fake ``time.perf_counter``."""
    import ntksolve.comparison as cmp

    offset = [0.0]
    real_clock = time.perf_counter
    real_kernels = cmp.analytic_kernels
    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + offset[0])

    def slow_kernels(net, X1, X2=None):
        if X1.shape[0] > 2:  # not the warm-up
            offset[0] += seconds
        return real_kernels(net, X1, X2)

    monkeypatch.setattr(cmp, "analytic_kernels", slow_kernels)


def compare_cli(data, out, *argv):
    """The exit status of ``ntksolve compare --data DATA --out OUT ARGV...``, run in this process."""
    from ntksolve.cli import main

    return main(["compare", "--data", str(data), "--out", str(out), *argv])
