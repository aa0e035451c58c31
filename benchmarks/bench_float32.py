"""float32 end to end against float64, side by side in one run: the empirical NTK, the closed-form
dynamics (``gradient_descent_mse`` on that kernel: eigendecomposition and trajectory), an estimator's
fit + predict, and real training steps; each with its time ratio and the float32 result's relative
difference from float64 on the same (rounded) parameters and data.

    python benchmarks/bench_float32.py            # N = 1024, width 2048 (kernel), N = 2048 (dynamics)
    python benchmarks/bench_float32.py --quick    # N = 256, width 512
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import interleaved, table  # noqa: E402

from ntksolve import MLP, empirical_ntk  # noqa: E402
from ntksolve.dynamics import gradient_descent_mse  # noqa: E402
from ntksolve.sklearn import NTKRegressor  # noqa: E402
from ntksolve.training import train_network  # noqa: E402

D, DEPTH = 32, 3


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    N, n, Nd = (256, 512, 512) if a.quick else (1024, 2048, 2048)
    rng = np.random.default_rng(0)
    X32 = rng.standard_normal((N, D)).astype(np.float32)
    Xt32 = rng.standard_normal((N // 4, D)).astype(np.float32)
    y32 = np.sin(X32[:, :1]).astype(np.float32)
    net = MLP((n,) * DEPTH, bias_std=0.1)
    p32 = net.init(D, random_state=0, dtype=np.float32)
    p64 = [(W.astype(np.float64), b.astype(np.float64)) for W, b in p32]
    data = {
        np.float32: (p32, X32, Xt32, y32),
        np.float64: (p64,) + tuple(v.astype(np.float64) for v in (X32, Xt32, y32)),
    }
    rows = []

    def side_by_side(name, make):
        res = interleaved({dt: make(dt) for dt in (np.float32, np.float64)}, a.repeat)
        (t32, o32), (t64, o64) = res[np.float32], res[np.float64]
        dts = {np.asarray(o).dtype.name for o in (o32 if isinstance(o32, tuple) else (o32,))}
        rows.append(
            (
                name,
                t64,
                t32,
                t64 / t32,
                _rel(o32, o64) if not isinstance(o32, tuple) else max(_rel(u, v) for u, v in zip(o32, o64)),
                "/".join(sorted(dts)),
            )
        )

    side_by_side(
        f"empirical NTK, N = {N}, width {n}, depth {DEPTH}",
        lambda dt: lambda: empirical_ntk(net, data[dt][0], data[dt][1]),
    )
    # the closed form on a kernel of Nd points: eigh and the trajectory at 20 times, train and test
    Xd = rng.standard_normal((Nd, D)).astype(np.float32)
    small = MLP((512,) * 2, bias_std=0.1)
    q32 = small.init(D, random_state=1, dtype=np.float32)
    q64 = [(W.astype(np.float64), b.astype(np.float64)) for W, b in q32]
    kern = {
        dt: (empirical_ntk(small, q, Xd.astype(dt)), empirical_ntk(small, q, Xd[:256].astype(dt) + 0.1, Xd.astype(dt)))
        for dt, q in ((np.float32, q32), (np.float64, q64))
    }
    yd = np.cos(Xd[:, :2]).astype(np.float32)
    ts = np.geomspace(1, 1e4, 20)

    def dynamics(dt):
        K, Ks = kern[dt]
        f0, ft0 = np.zeros((Nd, 2), dt), np.zeros((256, 2), dt)
        return lambda: gradient_descent_mse(K, yd.astype(dt), 1.0, diag_reg=1e-3, method="eigh")(ts, f0, ft0, Ks)

    side_by_side(f"gradient_descent_mse (eigh), N = {Nd}, 20 times", dynamics)
    side_by_side(
        f"NTKRegressor(kernel='empirical') fit + predict, N = {N}, width {n}",
        lambda dt: (
            lambda: (
                NTKRegressor(
                    hidden_layer_sizes=(n,) * DEPTH,
                    kernel="empirical",
                    random_state=0,
                    dtype=np.dtype(dt).name,
                    time=100.0,
                )
                .fit(data[dt][1], data[dt][3])
                .predict(data[dt][2])
            )
        ),
    )
    side_by_side(
        f"train_network, 10 full-batch steps, N = {N}, width {n}",
        lambda dt: (
            lambda: (
                train_network(
                    net,
                    data[dt][0],
                    data[dt][1],
                    data[dt][3],
                    learning_rate=0.5,
                    steps=10,
                    record_at=[10],
                    track_kernel=False,
                ).fx_train
            )
        ),
    )
    print(table(rows, ["stage", "float64 s", "float32 s", "speedup", "rel. difference", "float32 run's dtypes"]))
    print(
        "\n(the estimator returns float64 predictions in either dtype, its documented output; the kernel and "
        "the solve inside run in the dtype given)"
    )


if __name__ == "__main__":
    main()
