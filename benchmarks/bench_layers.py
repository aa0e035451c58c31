"""Layered networks against the plain MLP at the same size: empirical NTK and analytic kernels, side by side.

    python benchmarks/bench_layers.py            # bench_ntk's grid: N in (256, 1024), width in (512, 2048)
    python benchmarks/bench_layers.py --quick    # N=256, width 512
    python benchmarks/bench_layers.py --quick --activation tanh   # tanh, sigmoid, softplus: the Hermite series

Three networks of bench_ntk.py's size (inputs of 32 features, three hidden layers, one output):

- ``mlp``: ``MLP((n, n, n), "relu")`` (today's path);
- ``residual``: ``Dense(n), Residual([relu, Dense(n)]) x 2, relu, Dense(1)`` (the same four Dense
  layers and three activations, two skip connections);
- ``layer_norm``: ``Dense(n), LayerNorm, relu`` three times, then ``Dense(1)``;
- ``mlp_as_network``: the MLP as a Network of layers run layer by layer (not through the MLP's path),
  the price of the generic passes alone.

Each is timed interleaved with the MLP (``_common.interleaved``); the ratios are the figures to read
(the issue's bound: residual and layer-norm at most 1.3x the MLP). Analytic kernels at N = 1024 and
4096 (the widths are infinite there).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import interleaved, table  # noqa: E402

from ntksolve import MLP, analytic_kernels, empirical_ntk  # noqa: E402
from ntksolve.kernels.network_analytic import network_analytic_kernels  # noqa: E402
from ntksolve.kernels.network_empirical import network_empirical_ntk  # noqa: E402
from ntksolve.nets import Network  # noqa: E402
from ntksolve.nets.layers import Dense  # noqa: E402
from ntksolve.nets.normalization import LayerNorm  # noqa: E402
from ntksolve.nets.residual import Residual  # noqa: E402

D = 32


def networks(n, act="relu"):
    mlp = MLP((n, n, n), act)
    return mlp, {
        "residual": Network([Dense(n), Residual([act, Dense(n)]), Residual([act, Dense(n)]), act, Dense(1)]),
        "layer_norm": Network([Dense(n), LayerNorm(), act] * 3 + [Dense(1)]),
        "mlp_as_network": Network.from_mlp(mlp),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--activation", default="relu")
    args = ap.parse_args()
    Ns, widths = ((256,), (512,)) if args.quick else ((256, 1024), (512, 2048))
    rows = []
    for N in Ns:
        X = np.random.default_rng(0).standard_normal((N, D))
        for n in widths:
            mlp, nets = networks(n, args.activation)
            p_mlp = mlp.init(D, random_state=0)
            contenders = {"mlp": lambda: empirical_ntk(mlp, p_mlp, X)}
            for name, net in nets.items():
                p = net.init(D, random_state=0)
                # network_empirical_ntk: the layer-by-layer path even for the MLP-shaped network
                contenders[name] = lambda net=net, p=p: network_empirical_ntk(net, p, X)
            res = interleaved(contenders, args.repeats)
            t0 = res["mlp"][0]
            rows.append(("empirical NTK", N, n, t0) + tuple(res[k][0] / t0 for k in nets))
    for N in (1024,) if args.quick else (1024, 4096):
        X = np.random.default_rng(0).standard_normal((N, D))
        mlp, nets = networks(8, args.activation)
        contenders = {"mlp": lambda: analytic_kernels(mlp, X)}
        for name, net in nets.items():
            contenders[name] = lambda net=net: network_analytic_kernels(net, X)
        res = interleaved(contenders, args.repeats)
        t0 = res["mlp"][0]
        rows.append(("analytic", N, "inf", t0) + tuple(res[k][0] / t0 for k in nets))
    print(table(rows, ["kernel", "N", "width", "MLP s", "residual / MLP", "layer_norm / MLP", "MLP as Network / MLP"]))
    print(f"load: {os.getloadavg()[0]:.2f} (1-minute average)")


if __name__ == "__main__":
    main()
