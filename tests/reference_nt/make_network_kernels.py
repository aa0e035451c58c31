"""Reference analytic kernels of layered networks from neural-tangents' stax (run once; output stored).

    /tmp/ntk-peers/nt/bin/python tests/reference_nt/make_network_kernels.py

writes tests/data/nt_network_kernels.npz: the inputs ``X1`` (6 x 5), ``X2`` (4 x 5) and, for every
architecture below, ``<name>_nngp``, ``<name>_ntk`` (X1 with itself) and ``<name>_nngp12``,
``<name>_ntk12`` (X1 with X2). tests/test_network_analytic.py builds the same architectures with
ntksolve's layers (its ARCHITECTURES mirror this file's) and compares. neural-tangents 0.6.5,
JAX 0.4.23, float64.
"""

import os

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402


def residual(*block, scale=1.0):
    """x + scale * block(x); nt has no branch scale, so the scale is folded into the block's last Dense."""
    return stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), stax.serial(*block)), stax.FanInSum())


ARCHITECTURES = {
    # per-layer settings: Dense(3, 1.5, 0.2) relu Dense(3, 0.8, 0) erf Dense(1, 1.2, 0.1)
    "per_layer": stax.serial(
        stax.Dense(3, 1.5, 0.2), stax.Relu(), stax.Dense(3, 0.8, 0.0), stax.Erf(), stax.Dense(1, 1.2, 0.1)
    ),
    # Dense(3, 1.4, 0.1) Residual([relu, Dense(3, 1.3, 0.1), gelu, Dense(3, 0.7*1.1, 0.7*0.2)]) relu Dense(1, 1.0, 0.0)
    # (a pre-activation block: nt sums only mean-zero Gaussian branches, so the skip starts at a Dense)
    "residual": stax.serial(
        stax.Dense(3, 1.4, 0.1),
        residual(stax.Relu(), stax.Dense(3, 1.3, 0.1), stax.Gelu(), stax.Dense(3, 0.7 * 1.1, 0.7 * 0.2)),
        stax.Relu(),
        stax.Dense(1, 1.0, 0.0),
    ),
    # Dense(3, 1.2, 0.3) LayerNorm relu Dense(3, 1.5, 0.1) LayerNorm erf Dense(1, 1.0, 0.2)
    "layer_norm": stax.serial(
        stax.Dense(3, 1.2, 0.3),
        stax.LayerNorm(eps=1e-5),
        stax.Relu(),
        stax.Dense(3, 1.5, 0.1),
        stax.LayerNorm(eps=1e-5),
        stax.Erf(),
        stax.Dense(1, 1.0, 0.2),
    ),
    # pre-norm transformer-style MLP block: Dense(3) Residual([LayerNorm, Dense(3, 1.4), leaky relu 0.1, Dense(3)]) LayerNorm abs Dense(1)
    "prenorm": stax.serial(
        stax.Dense(3, 1.0, 0.1),
        residual(stax.LayerNorm(eps=1e-5), stax.Dense(3, 1.4, 0.0), stax.LeakyRelu(0.1), stax.Dense(3, 1.0, 0.05)),
        stax.LayerNorm(eps=1e-5),
        stax.Abs(),
        stax.Dense(1, 1.1, 0.0),
    ),
}


def main():
    rng = np.random.default_rng(20261201)
    X1 = rng.standard_normal((6, 5))
    X2 = rng.standard_normal((4, 5))
    X2[0] = X1[2]  # a shared point
    out = {"X1": X1, "X2": X2}
    for name, (_, _, kernel_fn) in ARCHITECTURES.items():
        k11 = kernel_fn(X1, None, ("nngp", "ntk"))
        k12 = kernel_fn(X1, X2, ("nngp", "ntk"))
        out[f"{name}_nngp"], out[f"{name}_ntk"] = np.asarray(k11.nngp), np.asarray(k11.ntk)
        out[f"{name}_nngp12"], out[f"{name}_ntk12"] = np.asarray(k12.nngp), np.asarray(k12.ntk)
    path = os.path.join(os.path.dirname(__file__), "..", "data", "nt_network_kernels.npz")
    np.savez(path, **out)
    print("wrote", os.path.normpath(path), sorted(out))


if __name__ == "__main__":
    main()
