"""Benchmark of the training rules through the public predictor, beside plain gradient descent.

The analytic ReLU NTK of a 3-hidden-layer MLP (``d = 32`` Gaussian inputs, as ``bench_dynamics``),
one target column, ``f_0 = 0``, 256 test points, 50 distinct steps from 10 to 10 000, rates at
half the critical ones. Timed, interleaved (each repeat runs every contender once, medians):

``plain``      ``gradient_descent_mse(K, y, dynamics=GradientDescent(η), method="eigh")`` and its
               50-step trajectory on train and test (today's exact ``(1 − c)^t`` path);
``momentum``   the same with ``GradientDescent(η, momentum=0.9)`` (closed-form factors);
``cosine``     ``GradientDescent(Schedule.cosine(η, 10 000), momentum=0.9)``: the jitted recurrence
               over all 10 000 steps for every mode; reported beyond the decomposition, i.e. the
               prediction on a predictor already decomposed (target: at most 2 s).

Ratio: momentum / plain (target: at most 1.2).

Usage::

    python benchmarks/bench_rules.py               # N = 4096
    python benchmarks/bench_rules.py --n 2048      # smaller, for a shared machine
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import scipy.linalg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_dynamics import N_TEST, D_IN, interleaved, relu_ntk  # noqa: E402
from ntksolve.dynamics import Eigh, GradientDescent, Schedule, gradient_descent_mse  # noqa: E402
from ntksolve.dynamics.stability import critical_rate  # noqa: E402

MU = 0.9
TOTAL = 10_000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n = args.n
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n + N_TEST, D_IN))
    K, Ks, source = relu_ntk(X, n)
    y = rng.standard_normal(n)
    f0, fs0 = np.zeros(n), np.zeros(N_TEST)
    steps = np.unique(np.round(np.logspace(1, 4, 50)).astype(np.int64))  # 50 distinct steps, 10 … 10 000
    lam_max = scipy.linalg.eigvalsh(K, subset_by_index=[n - 1, n - 1])[0]
    lr_plain = 0.5 * critical_rate(lam_max, size=n)
    lr_mom = 0.5 * critical_rate(lam_max, size=n, momentum=MU)
    print(
        f"N = {n}: kernel from {source}; {steps.size} steps up to {steps[-1]}, {N_TEST} test points, "
        f"momentum {MU}, rates at half the critical ones"
    )

    ts = steps.astype(float)
    plain_rule = GradientDescent(lr_plain)
    mom_rule = GradientDescent(lr_mom, momentum=MU)
    cos_rule = GradientDescent(Schedule.cosine(lr_mom, TOTAL), momentum=MU)

    def run(rule):
        return gradient_descent_mse(K, y, dynamics=rule, method=Eigh())(ts, f0, fs0, Ks)

    times = interleaved(
        {
            "bare eigh": lambda: scipy.linalg.eigh(K, driver="evd", check_finite=False),
            "plain": lambda: run(plain_rule),
            "momentum": lambda: run(mom_rule),
        },
        args.repeats,
    )
    decomposed = gradient_descent_mse(K, y, dynamics=cos_rule, method=Eigh())
    times.update(interleaved({"cosine (beyond eigh)": lambda: decomposed(ts, f0, fs0, Ks)}, args.repeats))
    bare = times["bare eigh"][0]
    print(f"  {'what':<44} {'seconds':>9} {'/ bare eigh':>12}")
    for name, (t, _) in times.items():
        print(f"  {name:<44} {t:9.4f} {t / bare:12.3f}")
    ratio = times["momentum"][0] / times["plain"][0]
    print(f"  momentum / plain: {ratio:.3f} (target <= 1.2)")
    print(f"  cosine {TOTAL} steps beyond the decomposition: {times['cosine (beyond eigh)'][0]:.3f} s (target <= 2 s)")
    # the same numbers two ways: μ = 0 through the schedule recurrence equals the plain path
    same = GradientDescent(Schedule(np.full(int(steps[-1]), lr_plain)))
    tr, te = run(same)
    ref_tr, ref_te = times["plain"][1]
    err = max(np.abs(tr - ref_tr).max(), np.abs(te - ref_te).max()) / np.abs(ref_te).max()
    print(f"  plain through the schedule recurrence vs the plain path: {err:.1e} relative")


if __name__ == "__main__":
    main()
