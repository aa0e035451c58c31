"""Analytic (infinite-width) NNGP + NTK: ntksolve's numba kernels side by side with a plain-numpy
recursion (one N x N array per quantity per layer, tests/reference_analytic.py) and, when its venv
exists, neural-tangents (``stax.serial(Dense, Relu, ...).kernel_fn``). Prints a table with ratios.

    python benchmarks/bench_analytic.py [--quick]

Setting: d = 32, depth 3, relu, float64, symmetric (X2 = X1), inputs standard normal; medians of 3
warm runs. neural-tangents' time at N = 4096, measured on this 2-core machine, is 1.03 s; the target
is a third of it. Compile time: a tiny call in a fresh process, cold (empty NUMBA_CACHE_DIR) then
warm (the same directory again).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from _common import best_time, peer_python, run_peer  # noqa: E402
from reference_analytic import reference_kernels  # noqa: E402

from ntksolve.kernels import analytic as ka  # noqa: E402
from ntksolve._jit.activations import ACTIVATION_CODES  # noqa: E402

D, DEPTH = 32, 3

_COMPILE_SNIPPET = """
import time, numpy as np
t = time.perf_counter()
from ntksolve.kernels import analytic as ka
X = np.random.default_rng(0).standard_normal((16, 4))
ka.analytic_pair_kernels(X, X, 2, 0, 1.0, 0.1, True)       # relu, symmetric
ka.analytic_pair_kernels(X, X[:3].copy(), 2, 2, 1.0, 0.1, False)  # tanh (Hermite series), general
ka.analytic_diag(X, 2, 0, 1.0, 0.1)
print(time.perf_counter() - t)
"""

_NT_SNIPPET = """
import time, numpy as np, jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax
layers = []
for _ in range({depth}):
    layers += [stax.Dense(512, W_std=1.0, b_std=0.1, parameterization="ntk"), stax.Relu()]
_, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=1.0, b_std=0.1, parameterization="ntk"))
kernel_fn = jax.jit(kernel_fn, static_argnames="get")
X = np.random.default_rng(0).standard_normal(({n}, {d}))
kernel_fn(X, None, ("nngp", "ntk"))[1].block_until_ready()
ts = []
for _ in range(3):
    t = time.perf_counter(); kernel_fn(X, None, ("nngp", "ntk"))[1].block_until_ready(); ts.append(time.perf_counter() - t)
print(sorted(ts)[1])
"""


def compile_times():
    """(cold, warm) seconds for import + first calls in fresh processes sharing one new cache dir."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        out = []
        for _ in range(2):
            res = subprocess.run(
                [sys.executable, "-c", _COMPILE_SNIPPET], env=env, capture_output=True, text=True, check=True
            )
            out.append(float(res.stdout.strip().splitlines()[-1]))
    return tuple(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1024 only, no compile timing")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    relu, tanh = ACTIVATION_CODES["relu"], ACTIVATION_CODES["tanh"]
    rows = []
    sizes = [1024] if args.quick else [1024, 4096]
    nt_python = peer_python("nt")
    for n in sizes:
        X = rng.standard_normal((n, D))
        ours = best_time(lambda: ka.analytic_pair_kernels(X, X, DEPTH, relu, 1.0, 0.1, True))
        ref = best_time(lambda: reference_kernels(X, X, DEPTH, "relu", 1.0, 0.1, symmetric=True), repeat=1, warmup=0)
        nt = run_peer(nt_python, _NT_SNIPPET.format(depth=DEPTH, n=n, d=D)) if nt_python else None
        nt_note = "(run now)" if nt is not None else "(not built: bash benchmarks/make_peers.sh)"
        rows.append((f"relu N={n}", ours, ref, nt, nt_note))
    # smooth activations: inputs on the sphere |x|^2 = d, so every variance is ~1
    n_q = 128 if args.quick else 256
    Xq = rng.standard_normal((n_q, D))
    Xq *= np.sqrt(D) / np.linalg.norm(Xq, axis=1, keepdims=True)
    ours_q = best_time(lambda: ka.analytic_pair_kernels(Xq, Xq, DEPTH, tanh, 1.0, 0.1, True), repeat=3)
    gh_q = best_time(
        lambda: ka.analytic_pair_kernels(Xq, Xq, DEPTH, tanh, 1.0, 0.1, True, force_quadrature=True), repeat=1
    )
    # the numpy and neural-tangents columns hold Gauss-Hermite quadrature, the method replaced
    rows.append((f"tanh N={n_q} (Hermite series; numpy column: Gauss-Hermite)", ours_q, gh_q, None, ""))

    print(f"\nAnalytic NNGP + NTK together, d={D}, depth {DEPTH}, float64, symmetric; median of 3 warm runs")
    print(f"{'case':<28}{'ntksolve s':>12}{'numpy s':>10}{'x numpy':>9}{'nt s':>8}{'x nt':>7}")
    for name, ours, ref, nt, note in rows:
        ref_s = f"{ref:10.3f}" if ref else f"{'-':>10}"
        ratio_ref = f"{ref / ours:9.1f}" if ref else f"{'-':>9}"
        nt_s = f"{nt:8.2f}" if nt else f"{'-':>8}"
        ratio_nt = f"{nt / ours:7.1f}" if nt else f"{'-':>7}"
        print(f"{name:<28}{ours:12.3f}{ref_s}{ratio_ref}{nt_s}{ratio_nt} {note}")
    if not args.quick:
        cold, warm = compile_times()
        print(f"\nfirst call (import + compile all analytic kernels): cold cache {cold:.1f} s, warm cache {warm:.2f} s")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (timings assume an idle machine)")


if __name__ == "__main__":
    main()
