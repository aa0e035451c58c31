"""Empirical NTK: ntksolve side by side with the explicit-Jacobian route, a layer-wise plain-numpy
implementation, the machine's GEMM rate, and peers when installed.

    python benchmarks/bench_ntk.py            # the full grid of the issue
    python benchmarks/bench_ntk.py --quick    # N=256 only
    python benchmarks/bench_ntk.py --floor-only   # ntksolve against a replay of its BLAS products

Prints a markdown table. "GEMM frac" is (minimal FLOPs / time) / (measured GEMM rate of the dtype),
minimal FLOPs = forward + backward + Gram products using symmetry (45.3 GFLOP at N=1024,
width 2048, depth 3, one output), as this benchmark has always counted them; that count leaves out
the readout's Gram product h^L h^L^T (2.1 GFLOP there), which "GEMM frac, all Grams" includes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import best_time, gemm_rate, interleaved, peer_python, run_peer, table  # noqa: E402

from ntksolve import _config  # noqa: E402
from ntksolve import MLP, empirical_ntk, jacobian  # noqa: E402

D, DEPTH = 32, 3


def minimal_flops(N, d, n, L, k=1):
    """The FLOP count of the "GEMM frac" column, as the benchmark has always counted it."""
    fwd = 2 * N * d * n + (L - 1) * 2 * N * n * n + 2 * N * n * k
    bwd = (L - 1) * 2 * N * k * n * n + N * k * n
    grams = N * N * d + (L - 1) * N * N * n + L * N * N * k * n  # SYRK: N^2 m per Gram
    return fwd + bwd + grams


def readout_gram_flops(N, n):
    """The readout's Gram product ``h^L h^L^T`` (SYRK, ``N^2 n``): work every layer-wise route does
    (``numpy_layerwise`` below, neural-tangents' structured derivatives) that ``minimal_flops``
    leaves out. The "GEMM frac, all Grams" column counts it."""
    return N * N * n


def numpy_layerwise(net, params, X):
    """The same layer-wise formula in plain numpy with full (non-symmetric) Gram products."""
    sw, sb = net.weight_std, net.bias_std
    hs, zs, h = [X], [], X
    for W, b in params[:-1]:
        z = sw / np.sqrt(h.shape[1]) * h @ W.T + sb * b
        zs.append(z)
        h = np.maximum(z, 0)
        hs.append(h)
    theta = sw**2 / hs[-1].shape[1] * hs[-1] @ hs[-1].T + sb**2
    delta = sw / np.sqrt(hs[-1].shape[1]) * params[-1][0][0] * (zs[-1] > 0)
    for l in range(len(zs), 0, -1):
        n_in = hs[l - 1].shape[1]
        theta += (delta @ delta.T) * (sw**2 / n_in * hs[l - 1] @ hs[l - 1].T + sb**2)
        if l > 1:
            delta = sw / np.sqrt(n_in) * (delta @ params[l - 1][0]) * (zs[l - 2] > 0)
    return theta


def peak_rss_subprocess(N, n, dtype):
    code = textwrap.dedent(f"""
        import numpy as np, ntksolve
        def hwm():  # peak resident memory of this process (VmHWM; ru_maxrss survives exec)
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        X = np.random.default_rng(0).standard_normal(({N}, {D}))
        net = ntksolve.MLP(({n},)*{DEPTH}); p = net.init({D}, random_state=0, dtype=np.{dtype})
        base = hwm()
        ntksolve.empirical_ntk(net, p, X)
        print(hwm(), base)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    peak, base = map(int, out.stdout.split())
    return peak, base


def compile_times():
    """First-call time of the kernels (compile + run on a tiny problem) in fresh processes:
    cold (empty numba cache) and warm (the cache the cold run wrote)."""
    code = textwrap.dedent("""
        import time, numpy as np
        t0 = time.perf_counter(); import ntksolve; t_imp = time.perf_counter() - t0
        X = np.random.default_rng(0).standard_normal((8, 4))
        t0 = time.perf_counter()
        for act in ("relu", "erf", "tanh"):
            net = ntksolve.MLP((16, 16), activation=act, bias_std=0.1, n_outputs=2)
            p = net.init(4, random_state=0)
            ntksolve.empirical_ntk(net, p, X); ntksolve.empirical_ntk(net, p, X, X[:3], trace=False)
            ntksolve.empirical_ntk(net, p, X, trace=False)
            ntksolve.analytic_kernels(net, X); ntksolve.analytic_kernels(net, X, X[:3])
        print(t_imp, time.perf_counter() - t0)
    """)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        res = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
            res.append(tuple(map(float, out.stdout.split())))
    return res


NT_IMPLS = ("JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "STRUCTURED_DERIVATIVES")

NT_CODE = """
import time, numpy as np, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import neural_tangents as nt
from neural_tangents import stax
N, n, impl = {N}, {n}, {impl}
init, apply, _ = stax.serial(*[stax.Dense(n, W_std=1.0, b_std=0.0), stax.Relu()] * 3, stax.Dense(1, W_std=1.0, b_std=0.0))
X = jnp.asarray(np.random.default_rng(0).standard_normal((N, 32)))
_, params = init(jax.random.PRNGKey(0), X.shape)
fn = jax.jit(nt.empirical_ntk_fn(apply, trace_axes=(-1,), vmap_axes=0, implementation=impl))
fn(X, None, params).block_until_ready()
ts = []
for _ in range(3):
    t = time.perf_counter(); fn(X, None, params).block_until_ready(); ts.append(time.perf_counter() - t)
print(sorted(ts)[1])
"""

TORCH_CODE = """
import time, torch
from torch.func import functional_call, jacrev, vmap
torch.set_default_dtype(torch.float64)
N, n = {N}, {n}
model = torch.nn.Sequential(*[m for _ in range(3) for m in (torch.nn.LazyLinear(n), torch.nn.ReLU())], torch.nn.LazyLinear(1))
X = torch.randn(N, 32); model(X)
params = {{k: v.detach() for k, v in model.named_parameters()}}
def f(p, x): return functional_call(model, p, (x[None],))[0]
def ntk():
    j = vmap(jacrev(f), (None, 0))(params, X)
    return sum(torch.einsum('Naf,Mbf->NM', a.flatten(2), a.flatten(2)) for a in j.values())
ntk()
t = time.perf_counter(); ntk(); print(time.perf_counter() - t)
"""


def compare(title, N, n, repeats, settings, labels):
    """Two settings of the empirical NTK side by side, interleaved with a 2048^3 GEMM before each that
    gives the rate in the same rounds (so outside load touches all alike), at each dtype.

    ``settings`` maps the two labels to context-manager factories that put the setting in force
    for one call; prints seconds, their ratio, the GEMM fraction of each and the largest difference.
    """
    X = np.random.default_rng(0).standard_normal((N, D))
    net = MLP((n,) * DEPTH)
    flops = minimal_flops(N, D, n, DEPTH)
    a, b = labels
    m = 2048
    rows = []
    for dt in (np.float64, np.float32):
        p = net.init(D, random_state=0, dtype=dt)

        def run(setting):
            def go():
                with setting():
                    return empirical_ntk(net, p, X)

            return go

        A, B = (np.random.default_rng(s).standard_normal((m, m)).astype(dt) for s in (1, 2))
        # a GEMM before each setting: both start beside OpenBLAS's threads still spinning from it
        gemm = lambda: A @ B  # noqa: E731
        res = interleaved({a: run(settings[a]), "gemm": gemm, b: run(settings[b]), "gemm 2": gemm}, repeats)
        rate = 2.0 * m**3 / min(res["gemm"][0], res["gemm 2"][0])
        (ta, ka), (tb, kb) = res[a], res[b]
        rel = float(np.max(np.abs(ka - kb)) / np.max(np.abs(kb)))
        rows.append((np.dtype(dt).name, ta, tb, tb / ta, flops / ta / rate, flops / tb / rate, rate / 1e9, rel))
    print(f"{title} (N={N}, width {n}; median of {repeats} interleaved rounds)\n")
    heads = [f"{a} s", f"{b} s", f"{b} / {a}", f"GEMM frac {a}", f"GEMM frac {b}", "GEMM rate GFLOP/s"]
    print(table(rows, ["dtype", *heads, "rel. difference"]))
    print()


@contextlib.contextmanager
def _set(obj, name, value):
    before = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, before)


def gram_blocks(N, n, repeats, block=256):
    """Blocked Gram products (GEMM block columns of ``block``, ``_config.GRAM_BLOCK_ROWS``) against
    numpy's SYRK (blocking off, the default)."""
    compare(
        f"Gram products: blocked (GRAM_BLOCK_ROWS={block}) against numpy's SYRK (the default: "
        f"{_config.GRAM_BLOCK_ROWS})",
        N,
        n,
        repeats,
        {
            "blocked": lambda: _set(_config, "GRAM_BLOCK_ROWS", block),
            "SYRK": lambda: _set(_config, "GRAM_BLOCK_ROWS", None),
        },
        ("blocked", "SYRK"),
    )


def arrangements(N, n, repeats):
    """The default arrangement (rows of the features and pieces of every Gram product split between
    Python threads, BLAS single-threaded in each) against handing each product to BLAS's own
    threads (``numba.set_num_threads(1)``: one worker)."""
    import numba

    threads = numba.get_num_threads()

    @contextlib.contextmanager
    def numba_threads(k):
        numba.set_num_threads(k)
        try:
            yield
        finally:
            numba.set_num_threads(threads)

    compare(
        f"Arrangement, {threads} threads: work split between Python threads with single-threaded BLAS "
        "(the default) against BLAS's own threads per product",
        N,
        n,
        repeats,
        {"threads": lambda: numba_threads(threads), "BLAS threads": lambda: numba_threads(1)},
        ("threads", "BLAS threads"),
    )


def blas_floor(N, n, repeats):
    """ntksolve's empirical NTK against a replay of its BLAS products alone: the same GEMMs and
    SYRKs, of the same shapes, in the same pieces on the same threads (``row_parts`` and ``pieces``
    of ``nets/gram_terms``), on random arrays, with nothing between them. The replay's GEMM
    fraction is what this arrangement can reach on this machine's BLAS; the gap between the two
    is everything else (elementwise passes, combines, validation, waits). Each phase (the feature
    GEMMs, the Gram products) is also replayed whole on BLAS's own threads, and the faster of the
    two arrangements of each phase gives "best of both per phase": the least time these products
    take on this machine's BLAS in either arrangement. Interleaved with a
    2048^3 GEMM that gives the rate in the same rounds, one before each contender; then each kind
    of product's own rate, per thread, as a fraction of that rate's per-thread share."""
    from ntksolve._blas import parallel_workers, side_by_side
    from ntksolve.nets.gram_terms import pieces, row_parts

    T = parallel_workers()
    X = np.random.default_rng(0).standard_normal((N, D))
    net = MLP((n,) * DEPTH)
    flops = minimal_flops(N, D, n, DEPTH)
    rows, shapes, phase_rows, m = [], [], [], 2048
    for dt in (np.float64, np.float32):
        p = net.init(D, random_state=0, dtype=dt)
        rng = np.random.default_rng(3)
        # H: h^0 = X, h^1 ... h^L, delta^1 ... delta^L; Ws: W^1 (n x d), W^2 ... W^L (n x n)
        H = [X.astype(dt)] + [rng.standard_normal((N, n)).astype(dt) for _ in range(2 * DEPTH)]
        Ws = [p[0][0]] + [p[l][0] for l in range(1, DEPTH)]
        Z = [np.empty((N, n), dt) for _ in range(2 * DEPTH - 1)]
        G = np.empty((N, N), dt)
        blocks = [slice(a, b) for a, b in row_parts(N, T)]
        shares = pieces(N, N, T, lower=True)

        def features(r):
            for l in range(DEPTH):  # z^{l+1} = h^l W^{l+1}^T
                np.matmul(H[l][r], Ws[l].T, out=Z[l][r])
            for l in range(DEPTH, 1, -1):  # delta^{l-1} (before phi') = delta^l W^l
                np.matmul(H[DEPTH + l][r], Ws[l - 1], out=Z[DEPTH + l - 2][r])

        def grams(share):
            for A in H:
                for r0, r1, c0, c1, diagonal in share:
                    if diagonal:
                        np.matmul(A[r0:r1], A[r0:r1].T, out=G[r0:r1, r0:r1])
                    else:
                        np.matmul(A[r0:r1], A[c0:c1].T, out=G[r0:r1, c0:c1])

        def features_blas():
            for l in range(DEPTH):
                np.matmul(H[l], Ws[l].T, out=Z[l])
            for l in range(DEPTH, 1, -1):
                np.matmul(H[DEPTH + l], Ws[l - 1], out=Z[DEPTH + l - 2])

        def grams_blas():
            for A in H:
                np.matmul(A, A.T, out=G)  # numpy's SYRK (and its mirror), on BLAS's threads

        A, B = (np.random.default_rng(s).standard_normal((m, m)).astype(dt) for s in (1, 2))
        # each contender right after a BLAS-threaded GEMM, so that all start beside OpenBLAS's
        # threads still spinning from it, alike
        gemm = lambda: A @ B  # noqa: E731
        phases = {
            "features, threads": lambda: side_by_side(features, blocks),
            "grams, threads": lambda: side_by_side(grams, shares),
            "features, BLAS threads": features_blas,
            "grams, BLAS threads": grams_blas,
        }
        contenders = {"ntksolve": lambda: empirical_ntk(net, p, X), "gemm": gemm}
        for i, (name, fn) in enumerate(phases.items()):
            contenders[name] = fn
            contenders[f"gemm {i}"] = gemm
        res = interleaved(contenders, repeats)
        rate = 2.0 * m**3 / min(v[0] for k, v in res.items() if k.startswith("gemm"))
        ta = res["ntksolve"][0]
        tb = res["features, threads"][0] + res["grams, threads"][0]
        # the better arrangement of each phase: the least time these products take on this BLAS
        feat = min(res["features, threads"][0], res["features, BLAS threads"][0])
        gram = min(res["grams, threads"][0], res["grams, BLAS threads"][0])
        gram_flops = N * N * (D + 2 * DEPTH * n)
        phase_rows.append((np.dtype(dt).name, *(res[name][0] for name in phases)))
        rows.append(
            (
                np.dtype(dt).name,
                ta,
                tb,
                ta / tb,
                flops / ta / rate,
                flops / tb / rate,
                flops / (feat + gram) / rate,
                gram_flops / gram / rate,
                rate / 1e9,
            )
        )

        # each kind of product on its own, every thread running one of its own at once
        r0, r1, c0, c1, _ = next(q for q in shares[-1] if not q[4]) if T > 1 else (0, N, 0, N, False)
        b = N // T
        R = [np.empty((r1 - r0, c1 - c0), dt) for _ in range(T)]
        kinds = {
            f"features GEMM ({b} x {n}) x ({n} x {n})": (
                lambda i: np.matmul(H[1 + i][:b], Ws[1].T, out=Z[i][:b]),
                2.0 * b * n * n,
            ),
            f"diagonal-block SYRK {b} x {n}": (
                lambda i: np.matmul(H[1 + i][:b], H[1 + i][:b].T, out=G[i * b : (i + 1) * b, i * b : (i + 1) * b]),
                1.0 * b * b * n,
            ),
            f"rectangle piece GEMM ({r1 - r0} x {n}) x ({n} x {c1 - c0})": (
                lambda i: np.matmul(H[1 + i][r0:r1], H[1 + i][c0:c1].T, out=R[i]),
                2.0 * (r1 - r0) * (c1 - c0) * n,
            ),
        }
        for label, (fn, fl) in kinds.items():
            t = best_time(lambda: side_by_side(fn, range(T)), repeat=repeats)
            shapes.append((np.dtype(dt).name, label, fl * T / t / 1e9, fl * T / t / rate))
    print(
        f"BLAS floor (N={N}, width {n}, {T} threads; median of {repeats} interleaved rounds): ntksolve "
        "against its BLAS products alone\n"
    )
    heads = [
        "ntksolve s",
        "BLAS replay s",
        "ntksolve / replay",
        "GEMM frac ntksolve",
        "GEMM frac replay",
        "GEMM frac, best of both per phase",
        "Gram phase / GEMM rate",
    ]
    print(table(rows, ["dtype", *heads, "GEMM rate GFLOP/s"]))
    print()
    print(table(phase_rows, ["dtype", *[f"{name} s" for name in phases]]))
    print(
        "\nbest of both per phase: each phase (the feature GEMMs; the Gram products) in the faster of its "
        "two arrangements, split between Python threads with single-threaded BLAS or whole on BLAS's "
        "threads; the Gram phase's rate counts every Gram (the readout's included) at N^2 m."
    )
    print()
    print(table(shapes, ["dtype", "product, one per thread at once", "GFLOP/s", "fraction of the GEMM rate"]))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N=256 only, no peers")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--peer-timeout", type=float, default=240.0, help="seconds one peer measurement may take (n/a past it)"
    )
    ap.add_argument(
        "--grams-only", action="store_true", help="only the blocked-against-SYRK comparison at N=1024, width 2048"
    )
    ap.add_argument("--gram-block", type=int, default=256, help="block size of the blocked contender")
    ap.add_argument(
        "--arrangement-only",
        action="store_true",
        help="only the threads-against-BLAS-threads comparison at N=1024, width 2048",
    )
    ap.add_argument(
        "--floor-only",
        action="store_true",
        help="only ntksolve against a replay of its BLAS products alone at N=1024, width 2048",
    )
    args = ap.parse_args()
    if not args.quick or args.floor_only:  # at N=256 ntksolve keeps to BLAS's threads: no replay
        blas_floor(*((256, 512) if args.quick else (1024, 2048)), repeats=max(args.repeat, 5))
    if args.floor_only:
        return
    arrangements(*((256, 512) if args.quick else (1024, 2048)), repeats=max(args.repeat, 5))
    if args.arrangement_only:
        return
    gram_blocks(*((256, 512) if args.quick else (1024, 2048)), repeats=max(args.repeat, 3), block=args.gram_block)
    if args.grams_only:
        return

    Ns = (256,) if args.quick else (256, 1024)
    widths = (512, 2048)
    # The GEMM rate is measured before and after the table and the higher value used: a rate
    # caught during a moment of outside load would flatter every fraction.
    rates = {dt: gemm_rate(dt, repeat=10) for dt in (np.float64, np.float32)}
    nt_py, torch_py = peer_python("nt"), peer_python("torch")
    rows = []
    for N in Ns:
        X = np.random.default_rng(0).standard_normal((N, D))
        for n in widths:
            net = MLP((n,) * DEPTH)
            flops = minimal_flops(N, D, n, DEPTH)
            for dt in (np.float64, np.float32):
                p = net.init(D, random_state=0, dtype=dt)
                t = best_time(lambda: empirical_ntk(net, p, X), repeat=args.repeat)
                t_np = t_jac = t_torch = float("nan")
                t_nt = {impl: float("nan") for impl in NT_IMPLS}
                if dt == np.float64:
                    t_np = best_time(lambda: numpy_layerwise(net, p, X), repeat=args.repeat)
                    P = net.n_params(D)
                    if N * P * 8 <= 3e9:  # the explicit Jacobian where memory allows

                        def jjt():
                            J = jacobian(net, p, X)[:, 0]
                            return J @ J.T

                        t_jac = best_time(jjt, repeat=1, warmup=0)
                    if nt_py and not args.quick:
                        for impl in NT_IMPLS:
                            if impl == "JACOBIAN_CONTRACTION" and N * P * 8 > 3e9:
                                continue  # its Jacobian alone would not fit, like ours above
                            t_nt[impl] = run_peer(
                                nt_py,
                                NT_CODE.format(N=N, n=n, impl=f"nt.NtkImplementation.{impl}"),
                                timeout=args.peer_timeout,
                            ) or float("nan")
                    if torch_py and not args.quick and n == 512:
                        t_torch = run_peer(torch_py, TORCH_CODE.format(N=N, n=n), timeout=args.peer_timeout) or float(
                            "nan"
                        )
                rows.append(
                    (
                        N,
                        n,
                        np.dtype(dt).name,
                        t,
                        flops / 1e9,
                        flops / t,
                        t_np,
                        t_np / t,
                        t_jac,
                        t_jac / t,
                        *[t_nt[i] for i in NT_IMPLS],
                        t_torch,
                    )
                )
    for dt in rates:
        rates[dt] = max(rates[dt], gemm_rate(dt, repeat=10))
    print(
        f"measured GEMM rate: float64 {rates[np.float64] / 1e9:.1f} GFLOP/s, "
        f"float32 {rates[np.float32] / 1e9:.1f} GFLOP/s (2048^3 product, best of 10, before and after)\n"
    )
    rows = [
        r[:5]
        + (
            r[5] / rates[np.dtype(r[2]).type],
            (r[4] * 1e9 + readout_gram_flops(r[0], r[1])) / r[3] / rates[np.dtype(r[2]).type],
        )
        + r[6:]
        for r in rows
    ]
    print(
        table(
            rows,
            [
                "N",
                "width",
                "dtype",
                "ntksolve s",
                "GFLOP",
                "GEMM frac",
                "GEMM frac, all Grams",
                "numpy layerwise s",
                "x numpy",
                "explicit J s",
                "x explicit",
                "nt jac-contraction s",
                "nt ntk-vector-products s",
                "nt structured s",
                "torch.func s",
            ],
        )
    )
    print()
    N = Ns[-1]
    peak, base = peak_rss_subprocess(N, 2048, "float64")
    P = MLP((2048,) * DEPTH).n_params(D)
    act_bytes = 8 * N * 2048 * DEPTH * 4
    print(
        f"peak RSS at N={N}, width 2048, float64: {peak / 2**20:.0f} MiB (process before the call "
        f"{base / 2**20:.0f} MiB; activations+derivatives+deltas ~{act_bytes / 2**20:.0f} MiB; "
        f"the Jacobian alone would be {N * P * 8 / 2**30:.1f} GiB)"
    )
    (imp_c, first_c), (imp_w, first_w) = compile_times()
    print(
        f"import ntksolve: {imp_c:.2f} s cold, {imp_w:.2f} s warm; first calls of all kernels "
        f"(empirical traced/full/cross + analytic, 3 activations): {first_c:.1f} s with a cold numba "
        f"cache, {first_w:.1f} s with a warm one"
    )


if __name__ == "__main__":
    main()
