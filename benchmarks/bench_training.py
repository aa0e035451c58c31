"""Time real gradient descent: one step of ``train_network`` against a plain-numpy reference step
(GFLOP/s side by side), then the default ``ntksolve compare`` sweep's time breakdown per width.

Run: ``python benchmarks/bench_training.py [--quick] [--threads N]``. Prints a table; asserts nothing.

FLOPs per step, with ``N`` inputs and layer sizes ``n_0 ... n_{L+1}``: forward ``2 N n_l n_{l-1}``
per layer, the weight gradient as much again, and the backpropagated delta as much again for every
layer but the first: ``(6 sum_l - 2 n_1 n_0) N n_l n_{l-1}``. Elementwise work is not counted.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ntksolve import MLP
from ntksolve.training import train_network


def reference_step(net, params, X, y, eta):
    """Obviously-correct numpy step (NTK parameterisation, relu): explicit temporaries, no fusion."""
    scales = net.layer_scales(X.shape[1])
    hs, zs, h = [X], [], X
    for l, (W, b) in enumerate(params[:-1]):
        ws, bs = scales[l]
        z = ws * (h @ W.T) + bs * b
        zs.append(z)
        h = np.maximum(z, 0.0)
        hs.append(h)
    W, b = params[-1]
    f = scales[-1][0] * (h @ W.T) + scales[-1][1] * b
    g = (f - y) / f.size
    new = [None] * len(params)
    for l in range(len(params) - 1, -1, -1):
        W, b = params[l]
        ws, bs = scales[l]
        gW, gb = ws * g.T @ hs[l], bs * g.sum(0)
        if l:
            g = ws * (g @ W) * (zs[l - 1] > 0)
        new[l] = (W - eta * gW, b - eta * gb)
    return new


def flops_per_step(widths, N):
    pairs = [widths[l + 1] * widths[l] for l in range(len(widths) - 1)]
    return N * (6 * sum(pairs) - 2 * pairs[0])


def bench_step(repeats):
    print("one gradient step: train_network (numba + numpy BLAS) vs numpy reference")
    print(f"{'N':>5} {'d':>4} {'width':>6} {'depth':>5} {'ours ms':>9} {'ref ms':>9} {'ours GF/s':>10} "
          f"{'ref GF/s':>9} {'ratio':>6}")
    for N, d, width, depth in [(256, 8, 1024, 1), (256, 8, 8192, 1), (256, 32, 1024, 2), (512, 32, 2048, 2)]:
        net = MLP((width,) * depth, activation="relu", bias_std=0.1)
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((N, d)), rng.standard_normal((N, 1))
        p = net.init(d, random_state=0)
        steps = 20
        train_network(net, p, X, y, learning_rate=0.1, steps=2, track_kernel=False)  # compile / warm
        best = np.inf
        for _ in range(repeats):
            r = train_network(net, p, X, y, learning_rate=0.1, steps=steps, record_at=[0], track_kernel=False)
            best = min(best, r.wall_time / (steps + 1))  # steps + 1 forward passes, steps backward
        ref_best = np.inf
        q = p
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(steps):
                q = reference_step(net, q, X, y, 0.1)
            ref_best = min(ref_best, (time.perf_counter() - t0) / steps)
        fl = flops_per_step(net.widths(d), N)
        print(f"{N:>5} {d:>4} {width:>6} {depth:>5} {1e3 * best:>9.2f} {1e3 * ref_best:>9.2f} "
              f"{fl / best / 1e9:>10.2f} {fl / ref_best / 1e9:>9.2f} {ref_best / best:>5.2f}x")


def bench_rules(repeats):
    """A step of each rule beside plain descent (same network, full batch; minibatch SGD per example)."""
    from ntksolve.dynamics import Adam, GradientDescent, shuffled_batches

    N, d, width, depth, steps = 512, 32, 2048, 2, 10
    net = MLP((width,) * depth, activation="relu", bias_std=0.1)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((N, d)), rng.standard_normal((N, 1))
    p = net.init(d, random_state=0)
    labels = (y[:, 0] > 0).astype(int)
    runs = {
        "plain": dict(learning_rate=0.1),
        "nesterov + wd": dict(dynamics=GradientDescent(0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)),
        "adam": dict(dynamics=Adam(1e-3)),
        "adamw + CE": dict(dynamics=Adam(1e-3, weight_decay=1e-2, decoupled=True), loss="cross_entropy"),
        "sgd, batches of 128": dict(learning_rate=0.1, batches=shuffled_batches(N, 128, steps, random_state=0)),
    }
    print(f"\none step per rule, N={N}, width {width}, depth {depth} (ratio to plain full-batch descent)")
    best = dict.fromkeys(runs, np.inf)
    for _ in range(repeats):  # interleaved, so that a busy machine slows every rule alike
        for name, kw in runs.items():
            target = labels if kw.get("loss") == "cross_entropy" else y
            r = train_network(net, p, X, target, steps=steps, record_at=[0], track_kernel=False, **kw)
            best[name] = min(best[name], r.wall_time / steps)
    for name, t in best.items():
        print(f"{name:>22} {1e3 * t:>9.2f} ms {t / best['plain']:>6.2f}x")


def bench_sweep(quick):
    from ntksolve.cli import DEFAULT_ACTIVATION, DEFAULT_BIAS_STD, DEFAULT_DEPTH, DEFAULT_RECORDS, DEFAULT_STEPS, \
        DEFAULT_WIDTHS
    from ntksolve.comparison import compare
    from ntksolve.datasets import default_regression

    widths = DEFAULT_WIDTHS[:5] if quick else DEFAULT_WIDTHS
    d = default_regression()
    t0 = time.perf_counter()
    rep = compare(d.X_train, d.y_train, list(widths), X_test=d.X_test, y_test=d.y_test, depth=DEFAULT_DEPTH,
                  activation=DEFAULT_ACTIVATION, bias_std=DEFAULT_BIAS_STD, steps=DEFAULT_STEPS,
                  n_records=DEFAULT_RECORDS, progress=False)
    total = time.perf_counter() - t0
    print(f"\ndefault compare sweep{' (quick: first 5 widths)' if quick else ''}: {total:.1f} s in all; "
          f"analytic kernels + decomposition {rep.settings['time_analytic_kernels']:.3f} s (once)")
    print(f"{'width':>6} {'predict ana s':>13} {'predict emp s':>13} {'train s':>8} {'kernel track s':>14} "
          f"{'speedup ana':>11} {'speedup emp':>11}")
    for r in rep.rows:
        print(f"{r['width']:>6} {r['time_predict_analytic']:>13.3f} {r['time_predict_empirical']:>13.3f} "
              f"{r['time_train']:>8.2f} {r['time_kernel_tracking']:>14.2f} {r['speedup']:>10.0f}x "
              f"{r['speedup_empirical']:>10.1f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and only the 5 smallest sweep widths")
    ap.add_argument("--threads", type=int, default=None, help="limit BLAS and numba threads")
    ap.add_argument("--no-sweep", action="store_true", help="only the step benchmark")
    a = ap.parse_args()
    if a.threads:
        import numba
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads)
        numba.set_num_threads(a.threads)
    bench_step(2 if a.quick else 3)
    bench_rules(2 if a.quick else 3)
    if not a.no_sweep:
        bench_sweep(a.quick)
