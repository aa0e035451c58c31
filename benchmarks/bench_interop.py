"""PyTorch interop: the empirical NTK of an imported ``nn.Sequential`` beside the ``torch.func``
recipe and a native ntksolve network of the same shape, and the import itself.

    python benchmarks/bench_interop.py                          # N=1024, 3 hidden ReLU layers of 2048
    python benchmarks/bench_interop.py --N 256 --width 512      # a quick side-by-side

Targets: the imported kernel >= 10x faster than torch.func, within 1.1x of the native network, and
``from_torch`` under 50 ms. The torch.func recipe (``vmap(jacrev(f))`` over the module's parameters,
then one einsum per parameter, as in PyTorch's NTK tutorial) holds the whole ``N x P`` Jacobian;
past ``--torch-mem`` GiB it is reported as out of memory instead of run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import best_time, interleaved_pair, table  # noqa: E402

import ntksolve  # noqa: E402
from ntksolve import MLP, empirical_ntk  # noqa: E402


def torch_func_ntk(torch, model, X):
    """The torch.func recipe: per-example Jacobians (vmap of jacrev), contracted per parameter."""
    from torch.func import functional_call, jacrev, vmap

    params = {n: p.detach() for n, p in model.named_parameters()}

    def f(p, x):
        return functional_call(model, p, (x[None],))[0]

    J = vmap(jacrev(f), (None, 0))(params, X)
    return sum(torch.einsum("Naf,Mbf->NM", j.flatten(2), j.flatten(2)) for j in J.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--torch-mem", type=float, default=8.0, help="GiB the torch.func Jacobian may take (skipped beyond)"
    )
    args = ap.parse_args()
    from ntksolve._extras import require

    torch = require("torch", "torch", "benchmarks/bench_interop.py")
    from ntksolve.torch import from_torch

    N, n, L, d = args.N, args.width, args.depth, args.d
    torch.manual_seed(0)
    mods = []
    for l in range(L):
        mods += [torch.nn.Linear(d if l == 0 else n, n), torch.nn.ReLU()]
    model = torch.nn.Sequential(*mods, torch.nn.Linear(n, 1)).double()
    X = np.random.default_rng(0).standard_normal((N, d))

    t0 = time.perf_counter()
    net, params = from_torch(model)  # the first call also pays the page faults of fresh arrays
    t_import_first = time.perf_counter() - t0
    t_import = best_time(lambda: from_torch(model), repeat=max(args.repeat, 5))
    native = MLP((n,) * L)
    p_native = native.init(d, random_state=0)
    t_imported, t_native = interleaved_pair(
        lambda: empirical_ntk(net, params, X), lambda: empirical_ntk(native, p_native, X), args.repeat
    )

    P = net.n_params(d)
    jac_gib = N * P * 8 / 2**30
    t_torch, err = float("nan"), float("nan")
    torch_note = ""
    if jac_gib <= args.torch_mem:
        Xt = torch.from_numpy(X)
        torch_func_ntk(torch, model, Xt[:8])  # warm-up
        t0 = time.perf_counter()
        ref = torch_func_ntk(torch, model, Xt).numpy()
        t_torch = time.perf_counter() - t0
        mine = empirical_ntk(net, params, X)
        err = float(np.abs(mine - ref).max() / np.abs(ref).max())
    else:
        torch_note = f"out of memory (its Jacobian alone: {jac_gib:.1f} GiB > --torch-mem {args.torch_mem:g})"

    print(
        f"N={N}, {L} hidden ReLU layers of {n}, d={d}, one output, float64, P={P}; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), ntksolve {ntksolve.__version__}\n"
    )
    rows = [
        ("from_torch (import), first call", t_import_first * 1e3, "ms", ""),
        ("from_torch (import), warm", t_import * 1e3, "ms", "target < 50 ms"),
        ("empirical_ntk, imported", t_imported, "s", ""),
        (
            "empirical_ntk, native MLP",
            t_native,
            "s",
            f"imported / native = {t_imported / t_native:.3f} (target <= 1.1)",
        ),
        (
            "torch.func vmap(jacrev) + einsum",
            t_torch,
            "s",
            torch_note
            or f"torch.func / imported = {t_torch / t_imported:.1f}x (target >= 10x); max rel. diff {err:.1e}",
        ),
    ]
    print(table(rows, ["what", "time", "unit", "ratio"]))


if __name__ == "__main__":
    main()
