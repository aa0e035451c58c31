"""Convolutional networks on scikit-learn's digits: ntksolve beside neural-tangents, ratios printed.

    python benchmarks/bench_conv.py            # the sizes of the issue (N = 512; long for neural-tangents)
    python benchmarks/bench_conv.py --quick    # N = 128, and the classifier on a subset
    python benchmarks/bench_conv.py --skip-analytic --skip-classifier --threads 1   # the empirical part, 1 BLAS thread

1. Empirical NTK of a 2-layer CNN (Conv 32 channels 3x3 'same', relu, twice; global average
   pooling; Dense 10), the mean over the 10 outputs, float64, on N digits images: ntksolve's
   structured route against each of neural-tangents' implementations (``empirical_ntk_fn`` with
   ``trace_axes=(-1,)``, ``vmap_axes=0``: Jacobian contraction, NTK-vector products, structured
   derivatives), the fastest of them in the ratio.
2. Analytic CNTK with global average pooling, depth 3 (3 x 3 'same' convolutions and relu), on N
   images: ntksolve against neural-tangents' jitted ``kernel_fn`` (batched by ``nt.batch`` in
   blocks of 128 inputs where the full spatial covariances would not fit in memory).
3. Classifiers on all 1797 images, 5-fold stratified CV, kernel regression on the centred one-hot
   targets (the infinite-time NTK predictor) with the same small ridge for both: the CNTK (two
   3 x 3 convolutions, pooling) against the MLP NTK (two hidden relu layers).

neural-tangents runs in its own interpreter (``benchmarks/make_peers.sh``), timed there with the
same inputs, after one untimed call (the compilation).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import best_time, peer_python, run_peer, table  # noqa: E402

import ntksolve  # noqa: E402
from ntksolve import Network, analytic_kernels, empirical_ntk  # noqa: E402
from ntksolve.nets.conv import Conv2D  # noqa: E402
from ntksolve.nets.layers import Dense  # noqa: E402
from ntksolve.nets.pooling import GlobalAvgPool  # noqa: E402

SW = 2**0.5

_NT_PREAMBLE = """
import time, jax, numpy as np
jax.config.update("jax_enable_x64", True)
import neural_tangents as nt
from neural_tangents import stax
X = np.load({path!r})
def cnn(depth, k):
    layers = []
    for _ in range(depth):
        layers += [stax.Conv(32, (3, 3), padding="SAME", W_std={sw}, b_std=None), stax.Relu()]
    return stax.serial(*layers, stax.GlobalAvgPool(), stax.Dense(k, W_std=1.0, b_std=None))
"""

_NT_EMPIRICAL = (
    _NT_PREAMBLE
    + """
init, apply, _ = cnn(2, 10)
_, params = init(jax.random.PRNGKey(0), X.shape)
def timed(impl, x):
    fn = jax.jit(nt.empirical_ntk_fn(apply, trace_axes=(-1,), vmap_axes=0, implementation=impl))
    fn(x, None, params).block_until_ready()
    t = time.perf_counter(); fn(x, None, params).block_until_ready(); return time.perf_counter() - t
# the fastest implementation, chosen on 32 images (the slowest take minutes at 512), then timed on all
probe = {{}}
for impl in (1, 2, 3):
    try:
        probe[impl] = timed(impl, X[:32])
    except Exception as exc:  # an implementation out of memory is not the fastest
        print("implementation", impl, "failed:", type(exc).__name__)
print("probe (32 images):", probe)
best = min(probe, key=probe.get)
print("implementation", best)
print(timed(best, X))
"""
)

_NT_ANALYTIC = (
    _NT_PREAMBLE
    + """
_, _, kernel_fn = cnn(3, 1)
fn = jax.jit(kernel_fn, static_argnames=("get",))
if X.shape[0] > 128:
    fn = nt.batch(kernel_fn, batch_size=128, store_on_device=False)
fn(X[:128] if X.shape[0] > 128 else X, None, get="ntk")
t = time.perf_counter(); k = fn(X, None, get="ntk"); np.asarray(k); print(time.perf_counter() - t)
"""
)


def digits(n=None):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X - X.mean()) / X.std()
    if n is not None:
        idx = np.random.default_rng(0).permutation(len(y))[:n]
        X, y = X[idx], y[idx]
    return np.ascontiguousarray(X.reshape(-1, 8, 8, 1)), y


def cnn(depth, k):
    layers = []
    for _ in range(depth):
        layers += [Conv2D(32, 3, padding="same", weight_std=SW), "relu"]
    return Network(layers + [GlobalAvgPool(), Dense(k, bias=False)])


def cv_accuracy(K, y, ridge=1e-3, folds=5):
    """5-fold stratified CV accuracy of kernel regression (ridge relative to the mean diagonal)."""
    from sklearn.model_selection import StratifiedKFold

    Y = np.eye(10)[y] - 0.1
    acc = []
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=0).split(K, y):
        Kt = K[np.ix_(tr, tr)]
        alpha = np.linalg.solve(Kt + ridge * np.mean(np.diag(Kt)) * np.eye(tr.size), Y[tr])
        acc.append(np.mean(np.argmax(K[np.ix_(te, tr)] @ alpha, axis=1) == y[te]))
    return float(np.mean(acc))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="images for the kernel timings (default 512; quick 128)")
    ap.add_argument("--skip-classifier", action="store_true")
    ap.add_argument("--skip-analytic", action="store_true", help="only the empirical NTK (and the classifier)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS threads for ntksolve (threadpoolctl; neural-tangents keeps its own)",
    )
    args = ap.parse_args()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; ntksolve BLAS threads: "
        f"{args.threads or 'default'}"
    )
    n = args.n or (128 if args.quick else 512)
    X, _ = digits(n)
    nt_python = peer_python("nt")
    path = os.path.join(tempfile.mkdtemp(), "digits.npy")
    np.save(path, X)
    rows = []

    net = cnn(2, 10)
    params = net.init(X.shape[1:], random_state=0)
    ours = best_time(lambda: empirical_ntk(net, params, X), repeat=3)
    peer = run_peer(nt_python, _NT_EMPIRICAL.format(path=path, sw=SW), timeout=3600) if nt_python else None
    rows.append((f"empirical NTK, 2-layer CNN, N={n}", ours, peer, peer / ours if peer else float("nan")))

    if not args.skip_analytic:
        net3 = cnn(3, 1)
        ours = best_time(lambda: analytic_kernels(net3, X), repeat=1)
        peer = run_peer(nt_python, _NT_ANALYTIC.format(path=path, sw=SW), timeout=7200) if nt_python else None
        rows.append((f"analytic CNTK (pooling), depth 3, N={n}", ours, peer, peer / ours if peer else float("nan")))
    print(table(rows, ["kernel", "ntksolve s", "neural-tangents s", "ratio (nt / ours)"]))
    if nt_python is None:
        print("neural-tangents not built: bash benchmarks/make_peers.sh")

    if not args.skip_classifier:
        Xc, yc = digits(600 if args.quick else None)
        t = time.perf_counter()
        K_cnn = analytic_kernels(cnn(2, 1), Xc).ntk
        t_cnn = time.perf_counter() - t
        t = time.perf_counter()
        K_mlp = ntksolve.analytic_kernels(ntksolve.MLP((512, 512), weight_std=SW), Xc.reshape(len(yc), -1)).ntk
        t_mlp = time.perf_counter() - t
        rows = [
            ("CNTK (2 conv, pooling)", cv_accuracy(K_cnn, yc), t_cnn),
            ("MLP NTK (2 hidden relu)", cv_accuracy(K_mlp, yc), t_mlp),
        ]
        print(f"\ndigits, {len(yc)} images, 5-fold CV, kernel regression (ridge 1e-3 x mean diagonal):")
        print(table(rows, ["kernel", "accuracy", "kernel s"]))


if __name__ == "__main__":
    main()
