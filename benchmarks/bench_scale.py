"""Scaling benchmark: analytic-NTK kernel regression at N = 50 000 through tiles on Dask.

The data: scikit-learn's ``make_friedman1`` (``d = 10``, noise 1.0), ``N`` training points and a
held-out part of ``--n-test``; inputs standardised with the training statistics, targets centred.
The kernel: the analytic NTK of a ReLU MLP (``--depth`` hidden layers, ``bias_std = --bias-std``).
The solve: ``t = inf`` with ``diag_reg``, i.e. kernel ridge regression with the NTK
(``(Theta + diag_reg mean(diag Theta) I) coef = y``), by conjugate gradients with a Nyström
preconditioner of ``--landmarks`` points, the train kernel held as float32 tiles in the workers'
memory (products accumulated in float64), the test-side kernel streamed tile by tile.

For each cluster shape in ``--workers`` (default: one worker of one thread, then two workers of
one thread each; worker processes, as on a real cluster) it measures, in one run:

- kernel: wall time to compute and hold the ``N^2 / 2`` upper-triangle tiles, and per tile;
- preconditioner: the ``N x m`` landmark columns and the Nyström factorisation;
- CG: iterations, wall time, time per iteration (one pass over every tile);
- predict: the streamed test-side products;
- peak memory: the largest resident set of each worker process (``getrusage``) and of this
  process, and their sum (an upper bound of the simultaneous total);
- held-out R^2;

and, on the last cluster shape, the same solve at a 100x tighter tolerance on the same tiles, with
the relative difference of the held-out predictions. Then a side-by-side table with the ratio
one-worker / two-workers.

``--store`` instead measures what the Zarr store's checksums cost, side by side with plain Zarr on
the same tiles (threaded scheduler, float32): writing the kernel with ``store_kernel`` (sha256 of
every chunk, the lock, the identity checks) against ``dask.array.to_zarr`` of the same tiled kernel;
reading it back verified (``open_kernel``) against ``dask.array.from_zarr``; and the full
verification a rerun of ``store_kernel`` does before it computes nothing.

Usage::

    nohup python benchmarks/bench_scale.py > /tmp/bench_scale.log 2>&1 &    # N = 50 000
    python benchmarks/bench_scale.py --n 4000 --n-test 1000 --chunks 1024     # a quick check
    python benchmarks/bench_scale.py --store --n 8192 --chunks 2048           # checksum overhead
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import best_time  # noqa: E402


def _peak_rss_bytes() -> int:
    """Peak resident set of the calling process (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _cpu_seconds() -> float:
    """User + system CPU seconds of the calling process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _workers_cpu(client) -> float:
    return float(sum(client.run(_cpu_seconds).values()))


def _warm_worker() -> None:
    """Load the numba kernels in a worker (from numba's cache) outside the timed part."""
    import ntksolve
    from ntksolve._jit.tiles import symmetric_tile_products, tile_products

    net = ntksolve.MLP((8, 8), bias_std=0.1)
    x = np.random.default_rng(0).standard_normal((16, 3))
    ntksolve.analytic_kernels(net, x)
    ntksolve.analytic_kernels(net, x, x[:5])
    K = np.ones((4, 3), dtype=np.float32)
    symmetric_tile_products(K, np.ones((4, 1)), np.ones((3, 1)))
    tile_products(K, np.ones((3, 1)))


def make_data(n: int, n_test: int, seed: int):
    from sklearn.datasets import make_friedman1

    X, y = make_friedman1(n_samples=n + n_test, n_features=10, noise=1.0, random_state=seed)
    Xtr, Xte, ytr, yte = X[:n], X[n:], y[:n], y[n:]
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0)
    ymean = ytr.mean()
    return (Xtr - mean) / std, (Xte - mean) / std, ytr - ymean, yte - ymean


def r2(y_true, y_pred) -> float:
    return float(1.0 - np.sum((y_true - y_pred) ** 2) / np.sum((y_true - y_true.mean()) ** 2))


def _cg(tol: float, landmarks: int):
    """The solver of the benchmark: CG with a Nyström preconditioner, the tiled fit's default cap."""
    from ntksolve.dask.fit import DEFAULT_CG_MAX_ITER
    from ntksolve.dynamics import ConjugateGradient, Nystrom

    return ConjugateGradient(tol=tol, max_iter=DEFAULT_CG_MAX_ITER, preconditioner=Nystrom(landmarks, random_state=0))


def run_shape(n_workers: int, data, args, tight: bool) -> dict:
    import distributed

    import ntksolve
    import ntksolve.dask as D

    Xtr, Xte, ytr, yte = data
    cluster = distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=40,
        memory_limit=args.worker_memory,
    )
    client = distributed.Client(cluster, set_as_default=False)
    out = {"workers": f"{n_workers} x 1 thread"}
    try:
        client.run(_warm_worker)
        net = ntksolve.MLP((512,) * args.depth, activation="relu", bias_std=args.bias_std)
        spec = D.KernelSpec(net)
        t0 = time.perf_counter()
        cpu0 = _workers_cpu(client)
        with D.TiledKernelOperator(spec, Xtr, chunks=args.chunks, scheduler=client, dtype=np.float32) as op:
            out["kernel_s"] = op.setup_seconds
            cpu1 = _workers_cpu(client)
            # CPU seconds the workers got per wall second: ~n_workers when each had its own core;
            # less when other processes on the machine took them (then no speed-up is possible).
            out["kernel_cores"] = (cpu1 - cpu0) / op.setup_seconds
            out["tiles"] = op.n_tiles
            out["per_tile_s"] = op.setup_seconds * n_workers / op.n_tiles
            coef, _, info = D.solve_tiled(op, ytr, diag_reg=args.diag_reg, method=_cg(args.tol, args.landmarks))
            out["precond_s"] = info.get("preconditioner_seconds", 0.0)
            out["cg_s"] = info["solve_seconds"] - out["precond_s"]
            out["iterations"] = info["iterations"]
            out["per_iter_s"] = out["cg_s"] / max(info["iterations"], 1)
            out["residual"] = float(np.max(info["residuals"]))
            out["solve_cores"] = (_workers_cpu(client) - cpu1) / info["solve_seconds"]
            tp = time.perf_counter()
            pred = op.cross(Xte).matmat(coef)[:, 0]
            out["predict_s"] = time.perf_counter() - tp
            out["r2"] = r2(yte, pred)
            out["total_s"] = time.perf_counter() - t0
            if tight:
                coef_t, _, info_t = D.solve_tiled(
                    op, ytr, diag_reg=args.diag_reg, method=_cg(args.tol / 100, args.landmarks)
                )
                pred_t = op.cross(Xte).matmat(coef_t)[:, 0]
                out["tight_iterations"] = info_t["iterations"]
                out["tight_rel_diff"] = float(np.linalg.norm(pred - pred_t) / np.linalg.norm(pred_t))
                out["tight_r2"] = r2(yte, pred_t)
        peaks = client.run(_peak_rss_bytes)
        out["worker_peak_gib"] = max(peaks.values()) / 2**30
        out["client_peak_gib"] = _peak_rss_bytes() / 2**30
        out["sum_peak_gib"] = (sum(peaks.values()) + _peak_rss_bytes()) / 2**30
    finally:
        client.close()
        cluster.close()
    return out


def store_overhead(args) -> int:
    """Checksummed store against plain Zarr on the same tiles: write, verified read, rerun."""
    import shutil
    import tempfile

    import dask.array as da

    import ntksolve
    import ntksolve.dask as D

    X, _, _, _ = make_data(args.n, 0, args.seed)
    net = ntksolve.MLP((512,) * args.depth, activation="relu", bias_std=args.bias_std)
    spec = D.KernelSpec(net)
    root = tempfile.mkdtemp(prefix="bench_store_")
    lazy = D.analytic_kernels(net, X, chunks=args.chunks).ntk.astype(np.float32)
    try:

        def plain_write():
            shutil.rmtree(os.path.join(root, "plain.zarr"), ignore_errors=True)
            lazy.to_zarr(os.path.join(root, "plain.zarr"), compute=True)

        def ours_write():
            shutil.rmtree(os.path.join(root, "ours.zarr"), ignore_errors=True)
            D.store_kernel(
                spec, X, os.path.join(root, "ours.zarr"), chunks=args.chunks, dtype=np.float32, scheduler="threads"
            )

        rows = [
            ("write kernel [s]", best_time(plain_write, repeat=args.repeat), best_time(ours_write, repeat=args.repeat))
        ]
        plain = da.from_zarr(os.path.join(root, "plain.zarr"))
        ours = D.open_kernel(os.path.join(root, "ours.zarr"))
        rows.append(
            (
                "read whole kernel [s]",
                best_time(lambda: plain.sum().compute(scheduler="threads"), repeat=args.repeat),
                best_time(lambda: ours.sum().compute(scheduler="threads"), repeat=args.repeat),
            )
        )
        rerun = best_time(
            lambda: D.store_kernel(
                spec, X, os.path.join(root, "ours.zarr"), chunks=args.chunks, dtype=np.float32, scheduler="threads"
            ),
            repeat=args.repeat,
        )
        rows.append(("rerun (verify, compute none) [s]", rows[1][1], rerun))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n_tiles = len(lazy.chunks[0]) * (len(lazy.chunks[0]) + 1) // 2
    print(
        f"bench_scale --store: N={args.n}, tile {args.chunks} ({n_tiles} upper tiles), float32, threads, "
        f"median of {args.repeat}; cpu_count={os.cpu_count()}"
    )
    print("".ljust(34) + "plain zarr".rjust(12) + "checksummed".rjust(13) + "ratio".rjust(9))
    for label, a, b in rows:
        print(label.ljust(34) + f"{a:.3f}".rjust(12) + f"{b:.3f}".rjust(13) + f"{b / a:.2f}x".rjust(9))
    print(f"load average at the end: {os.getloadavg()}")
    return 0


ROWS = [
    ("tiles (upper triangle)", "tiles", "{:d}"),
    ("kernel tiles [s]", "kernel_s", "{:.1f}"),
    ("  per tile, per worker [s]", "per_tile_s", "{:.2f}"),
    ("  workers' CPU s per wall s", "kernel_cores", "{:.2f}"),
    ("Nystrom preconditioner [s]", "precond_s", "{:.1f}"),
    ("CG iterations", "iterations", "{:d}"),
    ("CG [s]", "cg_s", "{:.1f}"),
    ("  per iteration [s]", "per_iter_s", "{:.2f}"),
    ("CG true relative residual", "residual", "{:.1e}"),
    ("  workers' CPU s per wall s", "solve_cores", "{:.2f}"),
    ("predict, streamed [s]", "predict_s", "{:.1f}"),
    ("total [s]", "total_s", "{:.1f}"),
    ("held-out R^2", "r2", "{:.4f}"),
    ("peak RSS per worker [GiB]", "worker_peak_gib", "{:.2f}"),
    ("peak RSS client [GiB]", "client_peak_gib", "{:.2f}"),
    ("peak RSS sum [GiB]", "sum_peak_gib", "{:.2f}"),
    ("100x tighter tol: iterations", "tight_iterations", "{:d}"),
    ("100x tighter tol: rel. diff", "tight_rel_diff", "{:.1e}"),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50_000, help="training points")
    p.add_argument("--n-test", type=int, default=5_000, help="held-out points")
    p.add_argument("--chunks", type=int, default=4096, help="tile edge")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--bias-std", type=float, default=0.1)
    p.add_argument("--diag-reg", type=float, default=1e-2)
    p.add_argument("--landmarks", type=int, default=2000)
    p.add_argument("--tol", type=float, default=1e-4, help="CG relative residual")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts, one thread each")
    p.add_argument("--worker-memory", default="auto", help="memory_limit per worker (Dask syntax)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", action="store_true", help="measure the kernel store's checksums instead")
    p.add_argument("--repeat", type=int, default=3, help="--store: median of this many runs")
    args = p.parse_args(argv)
    if args.store:
        return store_overhead(args)
    shapes = [int(w) for w in args.workers.split(",")]
    data = make_data(args.n, args.n_test, args.seed)
    print(
        f"bench_scale: N={args.n} (+{args.n_test} held out), d=10 friedman1, relu depth {args.depth}, "
        f"bias_std={args.bias_std}, diag_reg={args.diag_reg}, tile {args.chunks}, float32 tiles, "
        f"{args.landmarks} landmarks, tol={args.tol:g}; cpu_count={os.cpu_count()}",
        flush=True,
    )
    results = []
    for k, w in enumerate(shapes):
        t = time.perf_counter()
        res = run_shape(w, data, args, tight=(k == len(shapes) - 1))
        results.append(res)
        print(f"  {res['workers']}: done in {time.perf_counter() - t:.0f} s: {res}", flush=True)
    width = 32
    print()
    print(
        "".ljust(width)
        + "".join(r["workers"].rjust(18) for r in results)
        + ("ratio".rjust(10) if len(results) == 2 else "")
    )
    for label, key, fmt in ROWS:
        vals = [r.get(key) for r in results]
        if all(v is None for v in vals):
            continue
        cells = "".join((fmt.format(v) if v is not None else "-").rjust(18) for v in vals)
        ratio = ""
        if len(results) == 2 and key.endswith("_s") and key != "per_tile_s" and all(vals) and vals[1] > 0:
            ratio = f"{vals[0] / vals[1]:.2f}x".rjust(10)
        print(label.ljust(width) + cells + ratio)
    print(f"load average at the end: {os.getloadavg()}")
    if len(results) == 2:
        print(
            f"\nspeed-up of two 1-thread workers over one (total): {results[0]['total_s'] / results[1]['total_s']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
