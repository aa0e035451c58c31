"""Multi-output empirical NTK, the full kernel (``trace=False``, shape (N, N, k, k)): ntksolve side by
side with every neural-tangents implementation, and the FLOP count against the machine's GEMM rate.

    python benchmarks/bench_multioutput.py            # N = 512, width 1024, k = 10, float64
    python benchmarks/bench_multioutput.py --quick    # N = 128, width 256, no peer

ntksolve's full kernel is structured: per layer the Gram of the backpropagated signals
``<delta^l_a(x_i), delta^l_b(x_j)>`` (an ``Nk x Nk`` Gram product) times the Gram of the layer's
inputs, never the Jacobian. neural-tangents is run in its own interpreter (JAX, CPU, float64,
jitted, warm-up excluded, median of 3) with each implementation and both ``vmap_axes`` choices;
the fastest is the peer. Prints a markdown table and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import best_time, gemm_rate, peer_python, run_peer, table  # noqa: E402

from ntksolve import MLP, empirical_ntk  # noqa: E402

D, DEPTH = 32, 3

NT_CODE = """
import time, numpy as np, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import neural_tangents as nt
from neural_tangents import stax
N, n, k = {N}, {n}, {k}
init, apply, _ = stax.serial(*[stax.Dense(n, W_std=1.0, b_std=0.1), stax.Relu()] * {depth}, stax.Dense(k, W_std=1.0, b_std=0.1))
X = jnp.asarray(np.random.default_rng(0).standard_normal((N, {d})))
_, params = init(jax.random.PRNGKey(0), X.shape)
fn = jax.jit(nt.empirical_ntk_fn(apply, trace_axes=(), vmap_axes={vmap}, implementation=nt.NtkImplementation.{impl}))
out = fn(X, None, params).block_until_ready()
assert out.shape == (N, N, k, k), out.shape
ts = []
for _ in range(3):
    t = time.perf_counter(); fn(X, None, params).block_until_ready(); ts.append(time.perf_counter() - t)
print(sorted(ts)[1])
"""

#: (implementation, vmap_axes): every way neural-tangents 0.6.5 computes an empirical NTK
NT_VARIANTS = [
    (impl, vmap)
    for impl in ("STRUCTURED_DERIVATIVES", "NTK_VECTOR_PRODUCTS", "AUTO", "JACOBIAN_CONTRACTION")
    for vmap in (0, None)
]


def full_kernel_flops(N, d, n, L, k):
    """Forward, backward of k signals, and the per-layer Gram products using symmetry."""
    fwd = 2 * N * d * n + (L - 1) * 2 * N * n * n + 2 * N * n * k
    bwd = (L - 1) * 2 * N * k * n * n + N * k * n
    grams = N * N * d + L * N * N * n + L * (N * k) ** 2 * n
    return fwd + bwd + grams


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 128, width 256, no peer")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--peer-timeout", type=float, default=300.0, help="seconds one peer variant may take")
    args = ap.parse_args()
    N, n, k = (128, 256, args.k) if args.quick else (512, 1024, args.k)
    X = np.random.default_rng(0).standard_normal((N, D))
    net = MLP((n,) * DEPTH, n_outputs=k, bias_std=0.1)
    rate = gemm_rate(np.float64, repeat=5)
    rows, best = [], {}
    for dt in (np.float64, np.float32):
        p = net.init(D, random_state=0, dtype=dt)
        best[dt] = best_time(lambda: empirical_ntk(net, p, X, trace=False), repeat=args.repeat)
    flops = full_kernel_flops(N, D, n, DEPTH, k)
    rate = max(rate, gemm_rate(np.float64, repeat=5))
    rows.append(("ntksolve float64", best[np.float64], flops / best[np.float64] / rate, 1.0))
    rows.append(("ntksolve float32", best[np.float32], float("nan"), best[np.float32] / best[np.float64]))
    nt_py = peer_python("nt")
    nt_best = float("nan")
    if nt_py and not args.quick:
        P = net.n_params(D)
        for impl, vmap in NT_VARIANTS:
            if impl == "JACOBIAN_CONTRACTION" and N * k * P * 8 > 4e9:
                t = float("nan")  # its Jacobian alone would not fit
            else:
                code = NT_CODE.format(N=N, n=n, k=k, d=D, depth=DEPTH, impl=impl, vmap=vmap)
                t = run_peer(nt_py, code, timeout=args.peer_timeout) or float("nan")
            rows.append((f"nt {impl.lower()} vmap_axes={vmap}", t, float("nan"), t / best[np.float64]))
            if t == t:
                nt_best = t if nt_best != nt_best else min(nt_best, t)
    print(
        f"full empirical NTK, N = {N}, width {n}, depth {DEPTH}, d = {D}, k = {k}: "
        f"{flops / 1e9:.1f} GFLOP minimal; GEMM rate {rate / 1e9:.1f} GFLOP/s float64\n"
    )
    print(table(rows, ["implementation", "seconds", "GEMM frac", "time / ntksolve float64"]))
    if nt_best == nt_best:
        print(
            f"\nntksolve float64 is {nt_best / best[np.float64]:.2f}x faster than neural-tangents' fastest "
            f"({nt_best:.3f} s against {best[np.float64]:.3f} s)"
        )


if __name__ == "__main__":
    main()
