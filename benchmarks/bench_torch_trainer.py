"""The two real trainers side by side, and networks with and without biases.

    python benchmarks/bench_torch_trainer.py                        # N=512, 2 hidden tanh layers of 1024
    python benchmarks/bench_torch_trainer.py --N 128 --width 256    # a quick side-by-side

Rows: ``ntksolve.train_network`` (numpy) beside ``ntksolve.torch.train_network_torch`` (PyTorch on
``to_torch`` of the network, the rule mapped per tensor) for the same run (NTK parameterisation,
heavy-ball SGD with weight decay, and Adam), run alternately; and the empirical NTK of a network
beside the same network without biases (``bias=False``: one term fewer per layer, otherwise the
same passes). Kernel tracking is off: only the training is timed.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import interleaved_pair, table  # noqa: E402

import ntksolve  # noqa: E402
from ntksolve import MLP, empirical_ntk, train_network  # noqa: E402
from ntksolve.dynamics import Adam, GradientDescent  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=512)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from ntksolve._extras import require

    torch = require("torch", "torch", "benchmarks/bench_torch_trainer.py")
    from ntksolve.torch import train_network_torch

    N, n, L, d = args.N, args.width, args.depth, args.d
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, d))
    y = np.sin(X[:, :2])
    net = MLP((n,) * L, "tanh", bias_std=0.1, n_outputs=2)
    params = net.init(d, random_state=0)
    rows = []
    for name, rule in (
        ("SGD momentum + weight decay", GradientDescent(0.5, momentum=0.9, weight_decay=1e-4)),
        ("Adam", Adam(1e-3)),
    ):
        kw = dict(dynamics=rule, steps=args.steps, track_kernel=False)
        t_np, t_torch = interleaved_pair(
            lambda: train_network(net, params, X, y, **kw),
            lambda: train_network_torch(net, params, X, y, **kw),
            args.repeat,
        )
        rows.append((f"{name}: train_network (numpy)", t_np / args.steps * 1e3, "ms/step", ""))
        rows.append(
            (
                f"{name}: train_network_torch",
                t_torch / args.steps * 1e3,
                "ms/step",
                f"torch / numpy = {t_torch / t_np:.2f}",
            )
        )
    free = MLP((n,) * L, "tanh", bias_std=0.1, n_outputs=2, bias=False)
    p_free = [(W, np.zeros(0)) for W, _ in params]
    t_b, t_f = interleaved_pair(
        lambda: empirical_ntk(net, params, X), lambda: empirical_ntk(free, p_free, X), args.repeat
    )
    rows.append(("empirical_ntk, with biases", t_b, "s", ""))
    rows.append(("empirical_ntk, bias=False", t_f, "s", f"without / with = {t_f / t_b:.3f}"))
    print(
        f"N={N}, {L} hidden tanh layers of {n}, d={d}, two outputs, float64, {args.steps} steps; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), ntksolve {ntksolve.__version__}\n"
    )
    print(table(rows, ["what", "time", "unit", "ratio"]))


if __name__ == "__main__":
    main()
