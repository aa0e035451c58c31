"""Every activation's analytic kernels and empirical NTK, timed beside relu's; optionally against
neural-tangents (times and values) and relu and erf against another checkout.

    python benchmarks/bench_activations.py [--quick] [--weight-std 1.0 1.5 ...] [--terms] [--nt]
                                           [--against PATH_TO_OTHER_CHECKOUT]

Setting: analytic NNGP + NTK of N = 4096 inputs (d = 16, standard normal), three hidden layers,
``weight_std`` 1 and 1.5 (one table each; ``--weight-std`` to choose; 0.5 for the monomials
always), ``bias_std`` 0.1, symmetric, float64; median of 5 interleaved warm rounds (every
activation once a round, so outside load touches all alike); the empirical NTK of 256 inputs
through two hidden layers of 512. ``--quick``: N = 1024, 3 rounds. The smooth activations (tanh,
sigmoid, softplus: Hermite series; gelu: closed form) are held to 3x relu's analytic time.

``--terms``: where the series' time goes, per weight_std and layer (N = 1024, no timing): the
range of the pre-activation variances, the terms each correlation level takes, and the fraction
of pairs at each level and left to the mixture (above the highest level served, or a point whose
variance is beyond the series' range).

``--nt``: the same networks in neural-tangents (its venv from ``benchmarks/make_peers.sh``): its
closed forms (relu, erf, gelu, leaky relu / ABRelu, abs, sin, cos, gaussian, monomials) at N = 1024,
and ``stax.ElementwiseNumerical`` (its 2-D Gauss-Hermite rule of degree ``NT_DEG``, batched) for
tanh, sigmoid and softplus at N = 256 (256 and 128 with ``--quick``), on inputs of norm ``sqrt(d)``
(first-layer variance 1.01, where that rule is accurate). Prints both times and the largest difference of each kernel,
relative to its largest entry. ``--against`` times relu and erf in a subprocess importing
ntksolve from PATH (its own numba cache) and prints other / this: about 1 means no slowdown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(_HERE, ".."))  # this checkout's ntksolve for the --nt comparison

from _common import peer_python  # noqa: E402

NAMES = [
    "relu",
    "erf",
    "tanh",
    "sigmoid",
    "softplus",
    "gelu",
    "leaky_relu",
    "abs",
    "abrelu(-0.5, 2.0)",
    "sin",
    "cos",
    "gaussian",
    "monomial(2)",
    "monomial(4)",
]
SMOOTH = ["tanh", "sigmoid", "softplus", "gelu"]
DEPTH, D, SB = 3, 16, 0.1
NT_DEG = 64
NUMERICAL = ["tanh", "sigmoid", "softplus"]

_SNIPPET = """
import sys
sys.path.insert(0, {bench!r})
import numpy as np
import ntksolve
from _common import interleaved

N, ROUNDS, NAMES, SW = {N}, {ROUNDS}, {NAMES!r}, {SW!r}
X = np.random.default_rng(0).standard_normal((N, 16))
ana, emp = {{}}, {{}}
for name in NAMES:
    sw = 0.5 if name.startswith("monomial") else SW  # x^n: variances that stay in range
    net = ntksolve.MLP((1,) * 3, name, sw, 0.1)
    ana[name] = (lambda net=net: ntksolve.analytic_kernels(net, X))
    wide = ntksolve.MLP((512, 512), name, sw, 0.1)
    params = wide.init(16, random_state=0)
    emp[name] = (lambda wide=wide, params=params: ntksolve.empirical_ntk(wide, params, X[:256]))
a = interleaved(ana, ROUNDS)
e = interleaved(emp, max(ROUNDS // 2, 2))
for name in NAMES:
    print(name, a[name][0], e[name][0], sep="\\t", flush=True)
"""

_NT_SNIPPET = """
import json, sys, time
import numpy as np, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import neural_tangents as nt
from neural_tangents import stax

X = np.load({x_path!r})
ACT = {{
    "relu": lambda: stax.Relu(), "erf": lambda: stax.Erf(), "gelu": lambda: stax.Gelu(approximate=False),
    "leaky_relu": lambda: stax.LeakyRelu(0.01), "abs": lambda: stax.Abs(),
    "abrelu(-0.5, 2.0)": lambda: stax.ABRelu(-0.5, 2.0), "sin": lambda: stax.Sin(), "cos": lambda: stax.Cos(),
    "gaussian": lambda: stax.Gaussian(a=1.0, b=-0.5), "monomial(2)": lambda: stax.Monomial(2),
    "monomial(4)": lambda: stax.Monomial(4),
    "tanh": lambda: stax.ElementwiseNumerical(jnp.tanh, deg={deg}),
    "sigmoid": lambda: stax.ElementwiseNumerical(jax.nn.sigmoid, deg={deg}),
    "softplus": lambda: stax.ElementwiseNumerical(jax.nn.softplus, deg={deg}),
}}
times, out = {{}}, {{}}
for name in {names!r}:
    sw = 0.5 if name.startswith("monomial") else 1.0
    layers = []
    for _ in range({depth}):
        layers += [stax.Dense(512, W_std=sw, b_std={sb}, parameterization="ntk"), ACT[name]()]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=sw, b_std={sb}, parameterization="ntk"))
    if name in ("tanh", "sigmoid", "softplus"):
        # its quadrature holds (pairs, deg, deg) arrays: batches of 32 x 32 pairs keep them small
        kernel_fn = nt.batch(kernel_fn, batch_size=32, store_on_device=False)
    else:
        kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    k = kernel_fn(X, None, ("nngp", "ntk"))
    k[1].block_until_ready()
    ts = []
    for _ in range(3):
        t = time.perf_counter(); k = kernel_fn(X, None, ("nngp", "ntk")); k[1].block_until_ready()
        ts.append(time.perf_counter() - t)
    times[name] = sorted(ts)[1]
    out[name.replace("(", "_").replace(")", "").replace(", ", "_").replace(".", "p")] = np.stack(
        [np.asarray(k[0]), np.asarray(k[1])])
np.savez({out_path!r}, **out)
print(json.dumps(times))
"""


def _run(root, names, n, rounds, sw=1.0):
    code = _SNIPPET.format(bench=_HERE, N=n, ROUNDS=rounds, NAMES=list(names), SW=float(sw))
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
    env.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "ntk-bench-activations"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=root)
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    return {r[0]: (float(r[1]), float(r[2])) for r in rows}


def _series_terms(weight_stds, n=1024):
    """Per layer: variances, terms per correlation level, and the pairs' share of each level."""
    from ntksolve._jit.activations import ACTIVATION_CODES
    from ntksolve.kernels import _analytic_rules as kr
    from ntksolve.kernels import analytic as ka

    X = np.random.default_rng(0).standard_normal((n, D))
    upper = np.triu_indices(n, 1)
    print(f"\nwhere the series' time goes, N = {n}, depth {DEPTH} (levels {kr._SERIES_CORRELATIONS.tolist()})")
    for sw in weight_stds:
        for name in NUMERICAL:
            code = ACTIVATION_CODES[name]
            phi = kr.as_activation(code)
            var = kr._diag_pieces(X, DEPTH, phi, sw, SB, kr.SERIES, None)[0]
            pieces = kr.series_pieces([var], DEPTH, phi)[0]
            for l in range(DEPTH):
                if l == 0:
                    K = X @ X.T * (sw * sw / D) + SB * SB
                else:
                    K = ka.analytic_pair_kernels(X, X, l, code, sw, SB, True)[0]
                d = np.sqrt(np.diag(K))
                rho = np.abs(K / d[:, None] / d[None, :])[upper]
                terms = pieces.level_terms[l]
                top = int(np.flatnonzero(terms >= 0).max(initial=-1))
                served = np.isfinite(pieces.rinv[l])
                ok = served[upper[0]] & served[upper[1]]
                lev = np.where(ok, np.searchsorted(pieces.levels, rho), top + 1)
                share = np.bincount(np.minimum(lev, top + 1), minlength=top + 2) / lev.size
                cells = " ".join(f"{t}:{100 * f:.1f}%" for t, f in zip(terms[: top + 1], share))
                print(
                    f"  weight_std {sw:g} {name:8s} layer {l + 1}: variance {var[l].min():.2f}-{var[l].max():.2f}; "
                    f"terms:share per level {cells}; mixture {100 * share[top + 1]:.3f}%"
                )


def _against_nt(names, n):
    """neural-tangents' kernels and times beside ntksolve's, on one set of inputs."""
    import time

    import ntksolve

    python = peer_python("nt")
    if python is None:
        print("\nneural-tangents: not built (bash benchmarks/make_peers.sh)")
        return
    X = np.random.default_rng(1).standard_normal((n, D))
    X *= np.sqrt(D) / np.linalg.norm(X, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        x_path, out_path = os.path.join(tmp, "x.npy"), os.path.join(tmp, "k.npz")
        np.save(x_path, X)
        code = _NT_SNIPPET.format(x_path=x_path, out_path=out_path, names=list(names), deg=NT_DEG, depth=DEPTH, sb=SB)
        res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=3600)
        if res.returncode != 0:
            lines = [ln for ln in res.stderr.splitlines() if "Warning" not in ln and "warn(" not in ln]
            sys.stderr.write("neural-tangents failed (rc %d):\n%s\n" % (res.returncode, "\n".join(lines[-30:])))
            return
        nt_times = json.loads(res.stdout.strip().splitlines()[-1])
        nt_k = dict(np.load(out_path))
    kind = f"nt's ElementwiseNumerical, deg {NT_DEG}" if names[0] in NUMERICAL else "nt's closed forms"
    print(f"\nagainst neural-tangents, N = {n}, |x|^2 = d, depth {DEPTH} ({kind})")
    print(
        f"{'activation':20s} {'ours s':>9s} {'nt s':>9s} {'nt / ours':>10s} {'max diff nngp':>14s} "
        f"{'max diff ntk':>13s}"
    )
    for name in names:
        sw = 0.5 if name.startswith("monomial") else 1.0
        net = ntksolve.MLP((1,) * DEPTH, name, sw, SB)
        ntksolve.analytic_kernels(net, X)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            ours = ntksolve.analytic_kernels(net, X)
            times.append(time.perf_counter() - t)
        mine = float(np.median(times))
        theirs = nt_k[name.replace("(", "_").replace(")", "").replace(", ", "_").replace(".", "p")]
        diffs = [np.max(np.abs(a - b)) / np.max(np.abs(b)) for a, b in zip(ours, theirs)]
        print(
            f"{name:20s} {mine:9.4f} {nt_times[name]:9.4f} {nt_times[name] / mine:10.1f} {diffs[0]:14.1e} "
            f"{diffs[1]:13.1e}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nt", action="store_true", help="also against neural-tangents (times and values)")
    parser.add_argument("--against", help="another checkout's root (relu and erf timed there too)")
    parser.add_argument(
        "--weight-std", type=float, nargs="+", default=[1.0, 1.5], help="one table each (monomials: 0.5 always)"
    )
    parser.add_argument("--terms", action="store_true", help="series terms and pairs per level, per layer")
    args = parser.parse_args()
    n, rounds = (1024, 3) if args.quick else (4096, 5)
    here = os.path.join(_HERE, "..")
    for sw in args.weight_std:
        ours = _run(here, NAMES, n, rounds, sw)
        base_a, base_e = ours["relu"]
        print(
            f"analytic NNGP + NTK, N = {n}, d = {D}, depth {DEPTH}, weight_std {sw:g}; empirical NTK, 256 inputs, "
            "widths 512"
        )
        print(f"{'activation':20s} {'analytic s':>11s} {'/ relu':>7s} {'empirical s':>12s} {'/ relu':>7s}")
        for name in NAMES:
            a, e = ours[name]
            flag = "  (target <= 3)" if name in SMOOTH else ""
            print(f"{name:20s} {a:11.4f} {a / base_a:7.2f} {e:12.4f} {e / base_e:7.2f}{flag}")
    if args.terms:
        _series_terms(args.weight_std)
    if args.against:
        theirs = _run(args.against, ["relu", "erf"], n, rounds, args.weight_std[-1])  # beside the last table
        for name in ("relu", "erf"):
            (a0, e0), (a1, e1) = theirs[name], ours[name]
            print(f"{name}: analytic other/this {a0 / a1:.3f}, empirical other/this {e0 / e1:.3f}")
    if args.nt:
        closed = [name for name in NAMES if name not in NUMERICAL]
        _against_nt(closed, 256 if args.quick else 1024)
        _against_nt(NUMERICAL, 128 if args.quick else 256)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
