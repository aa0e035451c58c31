"""Reference values of the analytic kernels of convolutional networks, from neural-tangents' stax.

Writes ``tests/data/conv_nt_kernels.npz``, read by ``tests/test_conv_analytic.py``. Run with the
neural-tangents environment (neural-tangents 0.6.5, JAX on CPU, float64)::

    /tmp/ntk-peers/nt/bin/python tests/reference_nt/make_conv_kernels.py

Every architecture is described twice in ``ARCHITECTURES``: as the stax layers, and as the
ntksolve layers the test builds (``SPEC``, a list of ``(name, kwargs)`` read by the test). Inputs
are channels last (stax's ``NHWC`` / ``NWC``), as ntksolve's.
"""

from __future__ import annotations

import json
import os

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "conv_nt_kernels.npz")


def conv(ch, k, strides=None, padding="VALID", W=1.0, b=None, nd=2):
    dn = ("NHWC", "HWIO", "NHWC") if nd == 2 else ("NWC", "WIO", "NWC")
    return stax.Conv(ch, k, strides, padding, W_std=W, b_std=b, dimension_numbers=dn)


ARCHITECTURES = {
    # name: (input shape, stax layers, ntksolve spec)
    "gap_relu_same": (
        (5, 5, 2),
        [
            conv(8, (3, 3), padding="SAME", W=1.3, b=0.2),
            stax.Relu(),
            conv(8, (2, 2), W=1.1, b=0.1),
            stax.Relu(),
            stax.GlobalAvgPool(),
            stax.Dense(1, W_std=1.2, b_std=0.3),
        ],
        [
            ("conv", dict(channels=8, kernel_size=[3, 3], padding="same", weight_std=1.3, bias_std=0.2)),
            ("act", "relu"),
            ("conv", dict(channels=8, kernel_size=[2, 2], weight_std=1.1, bias_std=0.1)),
            ("act", "relu"),
            ("gap", None),
            ("dense", dict(width=1, weight_std=1.2, bias_std=0.3)),
        ],
    ),
    "flatten_erf_stride": (
        (6, 6, 1),
        [
            conv(8, (3, 3), W=1.5, b=None),
            stax.Erf(),
            conv(8, (2, 2), strides=(2, 2), W=1.2, b=0.4),
            stax.Relu(),
            stax.Flatten(),
            stax.Dense(16, W_std=1.4, b_std=0.1),
            stax.Relu(),
            stax.Dense(1, W_std=1.0, b_std=0.0),
        ],
        [
            ("conv", dict(channels=8, kernel_size=[3, 3], weight_std=1.5, bias=False)),
            ("act", "erf"),
            ("conv", dict(channels=8, kernel_size=[2, 2], stride=[2, 2], weight_std=1.2, bias_std=0.4)),
            ("act", "relu"),
            ("flatten", None),
            ("dense", dict(width=16, weight_std=1.4, bias_std=0.1)),
            ("act", "relu"),
            ("dense", dict(width=1, weight_std=1.0, bias_std=0.0)),
        ],
    ),
    "conv1d_gap": (
        (7, 3),
        [
            conv(8, (3,), padding="SAME", W=1.4, b=0.3, nd=1),
            stax.LeakyRelu(0.2),
            conv(8, (2,), W=1.0, b=None, nd=1),
            stax.Relu(),
            stax.GlobalAvgPool(),
            stax.Dense(1, W_std=1.0, b_std=0.5),
        ],
        [
            ("conv", dict(channels=8, kernel_size=[3], padding="same", weight_std=1.4, bias_std=0.3)),
            ("act", "leaky_relu(0.2)"),
            ("conv", dict(channels=8, kernel_size=[2], weight_std=1.0, bias=False)),
            ("act", "relu"),
            ("gap", None),
            ("dense", dict(width=1, weight_std=1.0, bias_std=0.5)),
        ],
    ),
    "rect_kernel_stride_gelu": (
        (5, 7, 2),
        [
            conv(8, (2, 3), strides=(1, 2), W=1.2, b=0.2),
            stax.Gelu(approximate=False),
            stax.GlobalAvgPool(),
            stax.Dense(1, W_std=1.3, b_std=0.2),
        ],
        [
            ("conv", dict(channels=8, kernel_size=[2, 3], stride=[1, 2], weight_std=1.2, bias_std=0.2)),
            ("act", "gelu"),
            ("gap", None),
            ("dense", dict(width=1, weight_std=1.3, bias_std=0.2)),
        ],
    ),
    "conv1d_flatten_same_even": (
        (6, 2),
        [
            conv(8, (4,), padding="SAME", W=1.1, b=0.2, nd=1),
            stax.Relu(),
            stax.Flatten(),
            stax.Dense(1, W_std=1.0, b_std=0.1),
        ],
        [
            ("conv", dict(channels=8, kernel_size=[4], padding="same", weight_std=1.1, bias_std=0.2)),
            ("act", "relu"),
            ("flatten", None),
            ("dense", dict(width=1, weight_std=1.0, bias_std=0.1)),
        ],
    ),
}


def main():
    rng = np.random.default_rng(20261201)
    out = {}
    specs = {}
    for name, (shape, layers, spec) in ARCHITECTURES.items():
        _, _, kernel_fn = stax.serial(*layers)
        X1 = rng.standard_normal((4,) + shape)
        X2 = rng.standard_normal((3,) + shape)
        k11 = kernel_fn(X1, None, ("nngp", "ntk"))
        k12 = kernel_fn(X1, X2, ("nngp", "ntk"))
        out[f"{name}/X1"] = X1.reshape(4, -1)
        out[f"{name}/X2"] = X2.reshape(3, -1)
        out[f"{name}/nngp11"], out[f"{name}/ntk11"] = np.asarray(k11.nngp), np.asarray(k11.ntk)
        out[f"{name}/nngp12"], out[f"{name}/ntk12"] = np.asarray(k12.nngp), np.asarray(k12.ntk)
        specs[name] = {"input_shape": list(shape), "layers": spec}
    out["specs"] = np.array(json.dumps(specs))
    np.savez(OUT, **out)
    print(f"wrote {os.path.relpath(OUT)}: {', '.join(ARCHITECTURES)}")


if __name__ == "__main__":
    main()
