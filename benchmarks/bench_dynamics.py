"""Benchmark of the closed-form MSE dynamics: eigh / krylov / expm side by side with a bare eigh.

For each N (default 1024 and 4096): the analytic ReLU NTK of a 3-hidden-layer MLP (``d = 32``
Gaussian inputs, the MLP defaults ``weight_std = 1``, ``bias_std = 0``), one target column,
``f_0 = 0``, 256 test points, 50 times ``np.logspace(-2, 3, 50)`` steps at ``learning_rate = 1``,
``diag_reg = 0``. Timed in one run: one bare ``scipy.linalg.eigh`` (driver ``evd``) of the same
kernel, the eigh path (decomposition + whole train and test trajectory), the krylov path, the expm
path (small N only, extrapolated from a few times), and ``auto``'s choice; then ratios and the
accuracy of krylov against eigh (relative Frobenius norm over the whole trajectory arrays).

``--big N`` (default 20000, 0 to skip): the krylov path at five times from early to ``∞``
against the same solver at a 100× tighter tolerance; eigh is not run there but extrapolated as
``N³`` from the largest timed N (said so in the output).

Timings: warm-up call excluded, median of ``--repeats``. Peers: neural-tangents'
``predict.gradient_descent_mse`` only if ``/tmp/ntk-peers/nt/bin/python`` exists (subprocess).

``--against ROOT``: instead, the eigh path and the krylov path of this checkout side by side with
another checkout of ntksolve (e.g. the main branch), each in its own subprocess on the same
seeded kernel, alternating rounds; prints the medians and the ratios new / old.

Usage::

    python benchmarks/bench_dynamics.py            # N = 1024, 4096 and the N = 20000 krylov run
    python benchmarks/bench_dynamics.py --quick    # N = 512, 1024, big = 3000, one repeat
    python benchmarks/bench_dynamics.py --against /path/to/other/checkout --n 2048 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.linalg

import ntksolve
from ntksolve.dynamics import Krylov, gradient_descent_mse

sys.path.insert(0, os.path.dirname(__file__))
from _common import interleaved  # noqa: E402

NT_PYTHON = "/tmp/ntk-peers/nt/bin/python"
N_TEST = 256
DEPTH = 3
D_IN = 32


def _relu_ntk_numpy(X1, X2, same):
    """Fallback: the analytic ReLU NTK (conventions: arctan2, θ = 0 on the diagonal) in numpy."""
    d = X1.shape[1]
    s12 = X1 @ X2.T / d
    s11 = np.sum(X1 * X1, 1) / d
    s22 = np.sum(X2 * X2, 1) / d
    ntk = s12.copy()
    for _ in range(DEPTH):
        prod = np.outer(s11, s22)
        ang = np.arctan2(np.sqrt(np.maximum(prod - s12**2, 0)), s12)
        if same is not None:
            ang[same] = 0.0
        e = np.sqrt(prod) * (np.sin(ang) + (np.pi - ang) * np.cos(ang)) / (2 * np.pi)
        ntk = e + (np.pi - ang) / (2 * np.pi) * ntk
        s12 = e
        s11, s22 = s11 / 2, s22 / 2
    return ntk


def relu_ntk(X, n_train):
    """Train–train ``(n, n)`` and test–train ``(M, n)`` ReLU NTK, built in row blocks (memory)."""
    n = X.shape[0]
    out = np.empty((n, n))
    try:
        net = ntksolve.MLP((512,) * DEPTH, activation="relu")
        ntksolve.analytic_kernels(net, X[:2], X[:2])
        source = "ntksolve.analytic_kernels"
    except Exception as exc:  # the kernels module may not exist yet
        net = None
        source = f"numpy fallback ({type(exc).__name__})"
    block = max(1, (1 << 26) // n)
    for i in range(0, n, block):
        rows = slice(i, min(n, i + block))
        if net is not None:
            out[rows] = ntksolve.analytic_kernels(net, X[rows], X).ntk
        else:
            idx = np.arange(rows.start, rows.stop)
            out[rows] = _relu_ntk_numpy(X[rows], X, (idx - rows.start, idx))
    K = out[:n_train, :n_train]
    # exact symmetry of the block assembly (the pair kernel may round differently across blocks)
    K = np.ascontiguousarray(K)
    K += K.T
    K *= 0.5
    Ks = np.ascontiguousarray(out[n_train:, :n_train])
    return K, Ks, source


def timed(fn, repeats, warmup=True):
    if warmup:
        fn()
    ts, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), out


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def peer_neural_tangents(K, Ks, y, ts, repeats):
    if not os.path.exists(NT_PYTHON):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(os.path.join(tmp, "p.npz"), K=K, Ks=Ks, y=y, ts=ts)
        code = f"""
import time, numpy as np, jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import predict
d = np.load({os.path.join(tmp, "p.npz")!r})
K, Ks, y, ts = d["K"], d["Ks"], d["y"][:, None], d["ts"]
def run():
    fn = predict.gradient_descent_mse(K, y, learning_rate=1.0, diag_reg=0.0)
    out = fn(ts, np.zeros_like(y), np.zeros((Ks.shape[0], 1)), Ks)
    jax.block_until_ready(out)
run()
times = []
for _ in range({repeats}):
    t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
print(np.median(times))
"""
        res = subprocess.run([NT_PYTHON, "-c", code], capture_output=True, text=True)
    if res.returncode != 0:
        return f"failed: {res.stderr.strip().splitlines()[-1] if res.stderr else res.returncode}"
    return float(res.stdout.strip().splitlines()[-1])


def bench_size(n, ts, repeats, rng):
    X = rng.standard_normal((n + N_TEST, D_IN))
    t0 = time.perf_counter()
    K, Ks, source = relu_ntk(X, n)
    t_kernel = time.perf_counter() - t0
    y = rng.standard_normal(n)
    f0, fs0 = np.zeros(n), np.zeros(N_TEST)
    print(
        f"\nN = {n}: kernel from {source} in {t_kernel:.2f} s; {ts.size} times, {N_TEST} test points, "
        "1 target column, diag_reg = 0"
    )

    kry = {}

    def run_krylov():
        pred = gradient_descent_mse(K, y, method="krylov")
        out = pred(ts, f0, fs0, Ks)
        kry["iters"] = pred.krylov_info["iterations"][0]
        return out

    # Interleaved: every repeat runs each contender once, so that a shared machine's load hits all
    # of them alike; the median per contender is reported.
    contenders = {
        "bare": lambda: scipy.linalg.eigh(K, driver="evd", check_finite=False),
        "eigh": lambda: gradient_descent_mse(K, y, method="eigh")(ts, f0, fs0, Ks),
        "krylov": run_krylov,
    }
    if n <= 2048:  # numpy.linalg.eigh calls the same syevd; timed where it is cheap
        contenders["numpy"] = lambda: np.linalg.eigh(K)
    times = interleaved(contenders, repeats)
    t_bare, t_eigh, t_kry = (times[k][0] for k in ("bare", "eigh", "krylov"))
    t_np = times["numpy"][0] if "numpy" in times else np.nan
    out_eigh, out_kry = times["eigh"][1], times["krylov"][1]
    # Auto() decides at the first prediction, from that call's sizes: ask it with this benchmark's call
    auto_pred = gradient_descent_mse(K, y)
    auto_pred(ts, f0, fs0, Ks)
    auto = auto_pred.method
    t_expm = None
    if n <= 1024:  # O(N³) per time, a 2N × 2N expm each: one time point, extrapolated
        one = ts[-1:]
        t_one, out_expm = timed(lambda: gradient_descent_mse(K, y, method="expm")(one, f0, fs0, Ks), 1, warmup=False)
        t_expm = t_one * ts.size
        err_expm = max(rel(out_expm[0], out_eigh[0][-1:]), rel(out_expm[1], out_eigh[1][-1:]))
    peer = peer_neural_tangents(K, Ks, y, ts, repeats)

    err_train = rel(out_kry[0], out_eigh[0])
    err_test = rel(out_kry[1], out_eigh[1])
    print(f"  {'what':<44} {'seconds':>9} {'/ bare eigh':>12}")
    print(f"  {'bare scipy.linalg.eigh (driver evd)':<44} {t_bare:9.3f} {1.0:12.2f}")
    if np.isfinite(t_np):
        print(f"  {'numpy.linalg.eigh':<44} {t_np:9.3f} {t_np / t_bare:12.2f}")
    print(f"  {'eigh path: decomposition + 50-pt trajectory':<44} {t_eigh:9.3f} {t_eigh / t_bare:12.2f}")
    print(f"  {'krylov path (Krylov dimension %d)' % kry['iters']:<44} {t_kry:9.3f} {t_kry / t_bare:12.2f}")
    if t_expm is not None:
        print(
            f"  {'expm path (1 time, x50 extrapolated)':<44} {t_expm:9.3f} {t_expm / t_bare:12.2f}"
            f"   (vs eigh: {err_expm:.1e} rel)"
        )
    if isinstance(peer, float):
        print(f"  {'neural-tangents predict.gradient_descent_mse':<44} {peer:9.3f} {peer / t_bare:12.2f}")
    else:
        print(f"  neural-tangents: {'not installed (' + NT_PYTHON + ')' if peer is None else peer}")
    print(f"  krylov speedup over the eigh path: {t_eigh / t_kry:.1f}x;  auto chooses: {auto}")
    print(f"  krylov vs eigh, relative Frobenius over the trajectory: train {err_train:.2e}, test {err_test:.2e}")
    return t_bare


def bench_big(n, t_bare_ref, n_ref, rng):
    ts = np.array([1.0, 1e2, 1e4, 1e6, np.inf])
    X = rng.standard_normal((n + N_TEST, D_IN))
    t0 = time.perf_counter()
    K, Ks, source = relu_ntk(X, n)
    print(
        f"\nN = {n}: kernel from {source} in {time.perf_counter() - t0:.1f} s "
        f"({K.nbytes / 1e9:.1f} GB); times {ts.tolist()} steps, {N_TEST} test points, diag_reg = 0"
    )
    y = rng.standard_normal(n)
    f0, fs0 = np.zeros(n), np.zeros(N_TEST)
    results = {}
    for tol in (1e-8, 1e-10):
        t0 = time.perf_counter()
        pred = gradient_descent_mse(K, y, method=Krylov(tol=tol))
        out = pred(ts, f0, fs0, Ks)
        results[tol] = (time.perf_counter() - t0, out, pred.krylov_info["iterations"][0])
        print(f"  krylov tol={tol:g}: {results[tol][0]:.1f} s, Krylov dimension {results[tol][2]}")
    (t_a, a, _), (_, b, _) = results[1e-8], results[1e-10]
    print(
        f"  tol 1e-8 vs tol 1e-10 (100x tighter): train {rel(a[0], b[0]):.2e}, test {rel(a[1], b[1]):.2e} "
        "relative Frobenius;  per time (test): " + ", ".join(f"{rel(a[1][i], b[1][i]):.1e}" for i in range(ts.size))
    )
    est = t_bare_ref * (n / n_ref) ** 3
    print(
        f"  eigh NOT run at this size: a bare eigh would take ~{est:.0f} s, extrapolated as N^3 from "
        f"{t_bare_ref:.2f} s at N = {n_ref} (this run); krylov is {est / t_a:.0f}x faster than that"
    )


_SIDE_CODE = """
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
import ntksolve
from ntksolve.dynamics import gradient_descent_mse
assert ntksolve.__file__.startswith({root!r}), ntksolve.__file__
rng = np.random.default_rng(0)
n, m, depth = {n}, {m}, {depth}
X = rng.standard_normal((n + m, {d}))
d = X.shape[1]
s12 = X @ X.T / d
s11 = np.sum(X * X, 1) / d
ntk = s12.copy()
for _ in range(depth):  # the analytic ReLU NTK (arc-cosine closed form), as the numpy fallback above
    prod = np.outer(s11, s11)
    ang = np.arctan2(np.sqrt(np.maximum(prod - s12**2, 0)), s12)
    np.fill_diagonal(ang, 0.0)
    e = np.sqrt(prod) * (np.sin(ang) + (np.pi - ang) * np.cos(ang)) / (2 * np.pi)
    ntk = e + (np.pi - ang) / (2 * np.pi) * ntk
    s12, s11 = e, s11 / 2
K = np.ascontiguousarray((ntk[:n, :n] + ntk[:n, :n].T) / 2)
Ks = np.ascontiguousarray(ntk[n:, :n])
y = rng.standard_normal(n)
f0, fs0 = np.zeros(n), np.zeros(m)
ts = np.logspace(-2, 3, {T})
out = {{}}
for method in ("eigh", "krylov"):
    run = lambda: gradient_descent_mse(K, y, method=method)(ts, f0, fs0, Ks)
    run()
    t0 = time.perf_counter(); run(); out[method] = time.perf_counter() - t0
print(json.dumps(out))
"""


def side_by_side(sizes, n_times, repeats, other_root):
    """Median seconds of the eigh and krylov paths here and in ``other_root``; ratios new / old."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    roots = {"new": here, "old": os.path.abspath(other_root)}
    for n in sizes:
        times = {(k, meth): [] for k in roots for meth in ("eigh", "krylov")}
        for _ in range(repeats):
            for key, root in roots.items():
                code = _SIDE_CODE.format(root=root, n=n, m=N_TEST, depth=DEPTH, d=D_IN, T=n_times)
                res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
                if res.returncode != 0:
                    raise RuntimeError(f"{key} ({root}) failed:\n{res.stderr[-2000:]}")
                for meth, sec in json.loads(res.stdout.strip().splitlines()[-1]).items():
                    times[(key, meth)].append(sec)
        print(f"\nN = {n}, {n_times} times, {N_TEST} test points: median of {repeats} alternating rounds")
        print(f"  {'path':<8} {'new s':>9} {'old s':>9} {'new/old':>8}")
        for meth in ("eigh", "krylov"):
            a, b = np.median(times[("new", meth)]), np.median(times[("old", meth)])
            print(f"  {meth:<8} {a:9.3f} {b:9.3f} {a / b:8.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=None, help="train sizes (default 1024 4096)")
    p.add_argument("--times", type=int, default=50, help="number of times in logspace(-2, 3)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (median), default 3 (1 if --quick)")
    p.add_argument("--big", type=int, default=None, help="krylov-only size (default 20000; 0 skips)")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    p.add_argument("--against", default=None, help="another ntksolve checkout to time side by side")
    args = p.parse_args(argv)
    if args.against:
        return side_by_side(args.n or [2048], args.times, args.repeats or 5, args.against)
    sizes = args.n or ([512, 1024] if args.quick else [1024, 4096])
    repeats = args.repeats or (1 if args.quick else 3)
    big = args.big if args.big is not None else (3000 if args.quick else 20000)
    ts = np.logspace(-2, 3, args.times)
    rng = np.random.default_rng(0)
    print(
        f"bench_dynamics: numpy {np.__version__}, scipy {scipy.__version__}, {os.cpu_count()} CPUs, float64; "
        f"median of {repeats} after a warm-up"
    )
    t_ref = None
    for n in sizes:
        t_ref = bench_size(n, ts, repeats, rng)
    if big:
        bench_big(big, t_ref, sizes[-1], rng)


if __name__ == "__main__":
    sys.exit(main())
