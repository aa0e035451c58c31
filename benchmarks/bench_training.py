"""Time real gradient descent: one step of ``train_network`` against a plain-numpy reference step
(GFLOP/s side by side), then the default ``ntksolve compare`` sweep's time breakdown per width.

Run: ``python benchmarks/bench_training.py [--quick] [--threads N] [--torch-only]``. Prints a table;
asserts nothing. ``--torch-only``: one full-batch step of ``train_network`` against the same step in
PyTorch on the CPU (same network, same batch, same weights, both libraries limited to the same threads;
the outputs after the steps are compared), interleaved in one process with the same steps in plain
numpy (``reference_step``, on numpy's BLAS: what the products alone cost on that BLAS).

FLOPs per step, with ``N`` inputs and layer sizes ``n_0 ... n_{L+1}``: forward ``2 N n_l n_{l-1}``
per layer, the weight gradient as much again, and the backpropagated delta as much again for every
layer but the first: ``(6 sum_l - 2 n_1 n_0) N n_l n_{l-1}``. Elementwise work is not counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import interleaved  # noqa: E402

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
    print(
        f"{'N':>5} {'d':>4} {'width':>6} {'depth':>5} {'ours ms':>9} {'ref ms':>9} {'ours GF/s':>10} "
        f"{'ref GF/s':>9} {'ratio':>6}"
    )
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
        print(
            f"{N:>5} {d:>4} {width:>6} {depth:>5} {1e3 * best:>9.2f} {1e3 * ref_best:>9.2f} "
            f"{fl / best / 1e9:>10.2f} {fl / ref_best / 1e9:>9.2f} {ref_best / best:>5.2f}x"
        )


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


def bench_torch(repeats, threads, quick, dtype=np.float64):
    """One full-batch step (forward, backward, update) of ``train_network`` against PyTorch's
    ``nn.Sequential`` + ``torch.optim.SGD`` on the same network and weights (standard
    parameterisation: PyTorch's ``nn.Linear`` holds the trained weights ``sigma_w/sqrt(n) W``)."""
    try:
        import torch
    except ImportError:
        print("\ntorch not installed: no PyTorch comparison")
        return
    torch.set_num_threads(threads)
    N, d, steps = 512, 32, 5
    grid = [(1024, 1), (2048, 1), (4096, 1), (8192, 1), (1024, 2), (2048, 2)] + ([] if quick else [(4096, 2)])
    tdt = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    print(
        f"\none full-batch step, N={N}, d={d}, {np.dtype(dtype).name}, {threads} threads each: "
        f"train_network vs PyTorch (time per step; ratio = torch / ntksolve, >1: ntksolve faster)"
    )
    print(
        f"{'width':>6} {'depth':>5} {'ntksolve ms':>11} {'torch ms':>9} {'ratio':>6} {'max |f diff|':>12} "
        f"{'numpy ms':>9}"
    )
    for width, depth in grid:
        net = MLP((width,) * depth, activation="relu", bias_std=0.1, parameterization="standard")
        eta = 0.5 / (width * depth)  # well below the critical rate, which falls as 1/width here
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((N, d)).astype(dtype), rng.standard_normal((N, 1)).astype(dtype)
        p = net.init(d, random_state=0, dtype=dtype)
        layers = []
        for (W, b), (ws, bs) in zip(p, net.layer_scales(d)):
            lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=tdt)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(ws * W))
                lin.bias.copy_(torch.from_numpy(bs * b))
            layers += [lin, torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers[:-1])
        opt = torch.optim.SGD(model.parameters(), lr=eta)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

        def ours():
            return train_network(net, p, X, y, learning_rate=eta, steps=steps, record_at=[steps], track_kernel=False)

        def theirs():
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                loss = 0.5 * torch.mean((model(Xt) - yt) ** 2)  # the conventions' MSE
                loss.backward()
                opt.step()
            with torch.no_grad():
                return model(Xt)

        def plain():  # the same steps in plain numpy on numpy's BLAS, and the one more forward
            q = p
            for _ in range(steps):
                q = reference_step(net, q, X, y, eta)
            return net.apply(q, X)

        diff = float(np.max(np.abs(ours().fx_train[-1] - theirs().numpy())))  # both from the same start
        walls = []
        res = interleaved({"ours": lambda: walls.append(ours().wall_time), "torch": theirs, "numpy": plain}, repeats)
        # train_network's own clock (steps + 1 forward passes) against the whole torch loop (its
        # steps and one more forward): the same work
        t_ours = float(np.median(walls[1:])) / steps  # the first is interleaved's warm-up
        t_torch, t_numpy = res["torch"][0] / steps, res["numpy"][0] / steps
        print(
            f"{width:>6} {depth:>5} {1e3 * t_ours:>11.2f} {1e3 * t_torch:>9.2f} {t_torch / t_ours:>5.2f}x "
            f"{diff:>12.2e} {1e3 * t_numpy:>9.2f}",
            flush=True,
        )


def bench_sweep(quick):
    from ntksolve.cli import (
        DEFAULT_ACTIVATION,
        DEFAULT_BIAS_STD,
        DEFAULT_DEPTH,
        DEFAULT_RECORDS,
        DEFAULT_STEPS,
        DEFAULT_WIDTHS,
    )
    from ntksolve.comparison import compare
    from ntksolve.datasets import default_regression

    widths = DEFAULT_WIDTHS[:5] if quick else DEFAULT_WIDTHS
    d = default_regression()
    t0 = time.perf_counter()
    rep = compare(
        d.X_train,
        d.y_train,
        list(widths),
        X_test=d.X_test,
        y_test=d.y_test,
        depth=DEFAULT_DEPTH,
        activation=DEFAULT_ACTIVATION,
        bias_std=DEFAULT_BIAS_STD,
        steps=DEFAULT_STEPS,
        n_records=DEFAULT_RECORDS,
        progress=False,
    )
    total = time.perf_counter() - t0
    print(
        f"\ndefault compare sweep{' (quick: first 5 widths)' if quick else ''}: {total:.1f} s in all; "
        f"analytic kernels + decomposition {rep.settings['time_analytic_kernels']:.3f} s (once)"
    )
    print(
        f"{'width':>6} {'predict ana s':>13} {'predict emp s':>13} {'train s':>8} {'kernel track s':>14} "
        f"{'speedup ana':>11} {'speedup emp':>11}"
    )
    for r in rep.rows:
        print(
            f"{r['width']:>6} {r['time_predict_analytic']:>13.3f} {r['time_predict_empirical']:>13.3f} "
            f"{r['time_train']:>8.2f} {r['time_kernel_tracking']:>14.2f} {r['speedup']:>10.0f}x "
            f"{r['speedup_empirical']:>10.1f}x"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and only the 5 smallest sweep widths")
    ap.add_argument("--threads", type=int, default=None, help="limit BLAS and numba threads")
    ap.add_argument("--no-sweep", action="store_true", help="only the step benchmark")
    ap.add_argument("--torch-only", action="store_true", help="only the step against PyTorch")
    ap.add_argument("--float32", action="store_true", help="the PyTorch comparison in float32")
    a = ap.parse_args()
    if a.threads:
        import numba
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads)
        numba.set_num_threads(a.threads)
    if a.torch_only:
        bench_torch(2 if a.quick else 3, a.threads or os.cpu_count(), a.quick, np.float32 if a.float32 else np.float64)
        raise SystemExit
    bench_step(2 if a.quick else 3)
    bench_rules(2 if a.quick else 3)
    bench_torch(2 if a.quick else 3, a.threads or os.cpu_count(), a.quick, np.float32 if a.float32 else np.float64)
    if not a.no_sweep:
        bench_sweep(a.quick)
