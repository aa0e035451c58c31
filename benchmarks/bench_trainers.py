"""The default ``ntksolve compare`` sweep trained by each trainer, side by side.

    python benchmarks/bench_trainers.py            # the default sweep: widths 64 ... 8192, 300 steps
    python benchmarks/bench_trainers.py --quick    # widths 64, 256, 1024 and 60 steps

Runs ``compare`` on the embedded regression (256 train / 256 test points) with ``trainer="numpy"``
and ``"torch"`` in NTK parameterisation (the default sweep), then ``"numpy"``, ``"torch"`` and
``"sklearn"`` in standard parameterisation (scikit-learn trains nothing else), one thread each as
``ntksolve compare --threads auto`` uses at this size. Prints every width's training time
(``time_train``: the real run alone, kernel tracking excluded) and the ratio of each trainer's sweep
total to numpy's. The rows themselves agree to rounding (tests/test_compare_trainers.py).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import table  # noqa: E402

from ntksolve.cli_parser import DEFAULT_STEPS, DEFAULT_WIDTHS  # noqa: E402
from ntksolve.comparison import compare  # noqa: E402
from ntksolve.datasets import default_regression  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="widths 64, 256, 1024 and 60 steps")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    widths, steps = ([64, 256, 1024], 60) if args.quick else (list(DEFAULT_WIDTHS), DEFAULT_STEPS)

    import numba
    from threadpoolctl import threadpool_limits

    trainers = ["numpy"]
    try:
        import torch

        torch.set_num_threads(args.threads)
        trainers.append("torch")
    except ImportError:
        print("torch is not installed (pip install 'ntksolve[torch]'): numpy and sklearn only")
    numba.set_num_threads(args.threads)
    d = default_regression()
    runs = [("ntk", t) for t in trainers] + [("standard", t) for t in trainers + ["sklearn"]]
    times = {}
    with threadpool_limits(limits=args.threads):
        for par, trainer in runs:
            rep = compare(
                d.X_train,
                d.y_train,
                widths,
                X_test=d.X_test,
                y_test=d.y_test,
                parameterization=par,
                steps=steps,
                random_state=0,
                progress=False,
                trainer=trainer,
            )
            times[par, trainer] = [r["time_train"] for r in rep.rows]
            print(
                f"{par:8s} {trainer:7s} sweep trains in {sum(times[par, trainer]):.2f} s "
                f"({rep.settings['trainer_framework']})",
                flush=True,
            )
    rows = []
    for i, w in enumerate(widths):
        row = [w]
        for par, trainer in runs:
            t, t0 = times[par, trainer][i], times[par, "numpy"][i]
            row.append(f"{t:.3f}" + ("" if trainer == "numpy" else f" ({t / t0:.2f}x)"))
        rows.append(row)
    rows.append(
        ["total"]
        + [
            f"{sum(times[k]):.2f}" + ("" if k[1] == "numpy" else f" ({sum(times[k]) / sum(times[k[0], 'numpy']):.2f}x)")
            for k in runs
        ]
    )
    print(table(rows, ["width"] + [f"{t} {p}" for p, t in runs]))


if __name__ == "__main__":
    main()
