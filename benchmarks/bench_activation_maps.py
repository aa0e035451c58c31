"""The forward pass's elementwise map (bias, activation and derivative) of each activation, against
another checkout: the hot loop of the empirical NTK and of the training step.

    python benchmarks/bench_activation_maps.py --against PATH_TO_OTHER_CHECKOUT [--sd 1.0] [--rounds 3]

Setting: ``bias_act`` on a 1024 x 2048 block of pre-activations ``sd * N(0, 1)``, float64 and
float32, with and without the derivative; each checkout in its own subprocess (and numba cache),
the two alternated ``--rounds`` times, each time the minimum of 7 calls; the table gives the
minimum over rounds and other / this (below 1: this checkout is slower).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

NAMES = ["relu", "tanh", "sigmoid", "softplus", "gelu", "erf", "gaussian", "sin", "leaky_relu", "monomial(3)"]

_SNIPPET = """
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from ntksolve._jit.empirical import bias_act
from ntksolve.nets.layers import Activation
rng = np.random.default_rng(0)
out = {{}}
for dt in (np.float64, np.float32):
    pre = ({sd} * rng.standard_normal((1024, 2048))).astype(dt)
    b = rng.standard_normal(2048).astype(dt)
    h, d = np.empty_like(pre), np.empty_like(pre)
    for name in {names!r}:
        spec = Activation(name)
        for want in (True, False):
            args = (pre, b, dt(1.0), dt(0.1), spec.code, spec.params, h, d, want)
            bias_act(*args)
            best = np.inf
            for _ in range(7):
                t0 = time.perf_counter()
                bias_act(*args)
                best = min(best, time.perf_counter() - t0)
            out[f"{{dt.__name__}} {{name}} {{'value+deriv' if want else 'value'}}"] = best
print(json.dumps(out))
"""


def _run(root, cache, names, sd):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    code = _SNIPPET.format(root=os.path.abspath(root), names=names, sd=sd)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="another checkout's root")
    parser.add_argument("--sd", type=float, default=1.0, help="standard deviation of the pre-activations")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--names", nargs="*", default=NAMES)
    args = parser.parse_args()
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    best = {"this": {}, "other": {}}
    with tempfile.TemporaryDirectory() as c1, tempfile.TemporaryDirectory() as c2:
        for _ in range(args.rounds):
            for key, root, cache in (("this", here, c1), ("other", args.against, c2)):
                for k, v in _run(root, cache, args.names, args.sd).items():
                    best[key][k] = min(best[key].get(k, v), v)
    print(f"{'map':36s} {'this ms':>9s} {'other ms':>9s} {'other/this':>10s}")
    for k, v in best["this"].items():
        w = best["other"][k]
        print(f"{k:36s} {v * 1e3:9.2f} {w * 1e3:9.2f} {w / v:10.3f}")


if __name__ == "__main__":
    main()
