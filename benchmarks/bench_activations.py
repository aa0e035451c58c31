"""Every activation's analytic kernels and empirical NTK, timed beside relu's; optionally relu and erf
against another checkout (the cost of the activation machinery for the activations it had).

    python benchmarks/bench_activations.py [--quick] [--against PATH_TO_OTHER_CHECKOUT]

Setting: analytic NNGP + NTK of N = 2048 inputs (d = 16), depth 3, symmetric; empirical NTK of 256
inputs through two hidden layers of 512; float64; best of 7 warm runs (``--quick``: N = 512, 3 runs).
``--against`` times relu and erf in a subprocess importing ntksolve from PATH (its own numba cache)
and prints other / this: about 1 means no slowdown.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

_SNIPPET = """
import sys, time
import numpy as np
import ntksolve

N, REPEAT, NAMES = {N}, {REPEAT}, {NAMES!r}
X = np.random.default_rng(0).standard_normal((N, 16))


def best(fn):
    fn()
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


for name in NAMES:
    sw = 0.5 if name.startswith("monomial") else 1.0  # x^n: variances that stay in range
    net = ntksolve.MLP((1,) * 3, name, sw, 0.1)
    ana = best(lambda: ntksolve.analytic_kernels(net, X))
    wide = ntksolve.MLP((512, 512), name, sw, 0.1)
    params = wide.init(16, random_state=0)
    emp = best(lambda: ntksolve.empirical_ntk(wide, params, X[:256]))
    print(name, ana, emp, sep="\t", flush=True)
"""


def _run(root, names, n, repeat):
    code = _SNIPPET.format(N=n, REPEAT=repeat, NAMES=list(names))
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
    env.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "ntk-bench-activations"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=root)
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    return {r[0]: (float(r[1]), float(r[2])) for r in rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--against", help="another checkout's root (relu and erf timed there too)")
    args = parser.parse_args()
    n, repeat = (512, 3) if args.quick else (2048, 7)
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    names = ["relu", "erf", "tanh", "gelu", "leaky_relu", "abs", "abrelu(-0.5, 2.0)", "sin", "cos", "gaussian",
             "monomial(2)", "monomial(4)"]
    ours = _run(here, names, n, repeat)
    base_a, base_e = ours["relu"]
    print(f"{'activation':20s} {'analytic s':>11s} {'/ relu':>7s} {'empirical s':>12s} {'/ relu':>7s}")
    for name in names:
        a, e = ours[name]
        print(f"{name:20s} {a:11.4f} {a / base_a:7.2f} {e:12.4f} {e / base_e:7.2f}")
    if args.against:
        theirs = _run(args.against, ["relu", "erf"], n, repeat)
        for name in ("relu", "erf"):
            (a0, e0), (a1, e1) = theirs[name], ours[name]
            print(f"{name}: analytic other/this {a0 / a1:.3f}, empirical other/this {e0 / e1:.3f}")


if __name__ == "__main__":
    main()
