"""Benchmark of the training-rule factors beside plain gradient descent, side by side in one run.

The analytic ReLU NTK of a 3-hidden-layer MLP (``d = 32`` Gaussian inputs, as ``bench_dynamics``),
one target column, ``f_0 = 0``, 256 test points. Timed, interleaved (each repeat runs every
contender once, medians reported):

``plain``      ``gradient_descent_mse(K, y, η, dynamics="discrete", method="eigh")`` and its
               50-step trajectory (50 distinct steps from 10 to 10 000) on train and test;
``momentum``   the same work for heavy-ball momentum ``μ = 0.9`` at a constant rate: one
               ``scipy.linalg.eigh``, the closed-form factors of :func:`mode_factors` at the same
               50 steps, and the same two products (the solvers' eigh path, written out here);
``cosine``     ``Schedule.cosine(η, 10 000)`` with ``μ = 0.9``: the jitted recurrence over all
               10 000 steps for every mode, and the same products; reported as the time beyond
               the decomposition (target: at most 2 s at N = 4096).

Ratios: momentum / plain (target: at most 1.2). The factors alone are timed too.

Usage::

    python benchmarks/bench_rules.py               # N = 4096
    python benchmarks/bench_rules.py --n 1024      # smaller, for a shared machine
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy.linalg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_dynamics import N_TEST, D_IN, interleaved, relu_ntk  # noqa: E402
from ntksolve.dynamics import gradient_descent_mse  # noqa: E402
from ntksolve.dynamics.schedules import Schedule, critical_rate, mode_factors  # noqa: E402
from ntksolve.dynamics.spectral import null_mask  # noqa: E402

MU = 0.9
TOTAL = 10_000


def assemble(V, factors, R, Ks):
    """Train and test trajectories from per-mode factors: ``V (gain ⊙ Vᵀr)`` and ``Θ* V (test ⊙ Vᵀr)``."""
    P = V.T @ R
    train = V @ (factors.gain.T * P[:, None])
    test = Ks @ (V @ (factors.test.T * P[:, None]))
    return train.T, test.T


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
    print(f"N = {n}: kernel from {source}; {steps.size} steps up to {steps[-1]}, {N_TEST} test points, "
          f"momentum {MU}, rates at half the critical ones")

    def decompose():
        lam, V = scipy.linalg.eigh(K, driver="evd", check_finite=False)
        lam = np.maximum(lam, 0.0)
        return lam, V, null_mask(lam, n, np.float64, "K")

    def plain():
        return gradient_descent_mse(K, y, lr_plain, dynamics="discrete", method="eigh")(steps.astype(float), f0, fs0, Ks)

    def momentum():
        lam, V, null = decompose()
        fac = mode_factors(lam, steps, size=n, learning_rate=lr_mom, momentum=MU, null=null)
        return assemble(V, fac, y - f0, Ks)

    times = interleaved({"bare eigh": lambda: decompose(), "plain": plain, "momentum": momentum}, args.repeats)
    lam, V, null = times["bare eigh"][1]
    cos = Schedule.cosine(lr_mom, TOTAL)

    def cosine_beyond():
        fac = mode_factors(lam, steps, size=n, learning_rate=cos, momentum=MU, null=null)
        return assemble(V, fac, y - f0, Ks)

    more = interleaved({
        "cosine (beyond eigh)": cosine_beyond,
        "factors: momentum closed form": lambda: mode_factors(lam, steps, size=n, learning_rate=lr_mom, momentum=MU,
                                                              null=null),
        "factors: cosine recurrence": lambda: mode_factors(lam, steps, size=n, learning_rate=cos, momentum=MU, null=null),
        "factors: plain closed form": lambda: mode_factors(lam, steps, size=n, learning_rate=lr_plain, null=null),
    }, args.repeats)
    times.update(more)
    bare = times["bare eigh"][0]
    print(f"  {'what':<44} {'seconds':>9} {'/ bare eigh':>12}")
    for name, (t, _) in times.items():
        print(f"  {name:<44} {t:9.4f} {t / bare:12.3f}")
    ratio = times["momentum"][0] / times["plain"][0]
    print(f"  momentum / plain: {ratio:.3f} (target <= 1.2)")
    print(f"  cosine {TOTAL} steps beyond the decomposition: {times['cosine (beyond eigh)'][0]:.3f} s (target <= 2 s)")
    # the same numbers two ways: plain GD through the rule factors equals the plain solver
    lam_, V_, null_ = times["bare eigh"][1]
    fac = mode_factors(lam_, steps, size=n, learning_rate=lr_plain, null=null_)
    tr, te = assemble(V_, fac, y - f0, Ks)
    ref_tr, ref_te = times["plain"][1]
    err = max(np.abs(tr - ref_tr).max(), np.abs(te - ref_te).max()) / np.abs(ref_te).max()
    print(f"  plain through mode_factors vs gradient_descent_mse: {err:.1e} relative")


if __name__ == "__main__":
    main()
