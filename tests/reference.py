"""Slow, obviously correct numpy references for the jitted network code (house rule: a reference
beside every fast kernel). Written from docs/conventions.md, independent of ntksolve's own code paths."""

import re

import numpy as np
from scipy.special import erf, expit, log_expit  # noqa: F401
from scipy.stats import norm


#: Activations spelled with arguments that the tests looping over ``ntksolve.ACTIVATIONS`` add.
WITH_ARGUMENTS = ["leaky_relu(0.2)", "abrelu(-0.3, 1.5)", "monomial(2)", "monomial(3)"]


def _piecewise_linear(a, b):
    """``a min(z, 0) + b max(z, 0)`` and its derivative (``a`` at 0, as the conventions say)."""
    return (
        lambda z: a * np.minimum(z, 0.0) + b * np.maximum(z, 0.0),
        lambda z: np.where(np.asarray(z) > 0, b, a) * np.ones_like(z),
    )


def _power(z, n):
    """``z^n`` by repeated multiplication (numpy's general float power is slow for the big arrays
    of the quadrature references)."""
    z = np.asarray(z, dtype=float)
    out = np.ones_like(z)
    for _ in range(n):
        out = out * z
    return out


def _monomial(n):
    return lambda z: _power(z, n), lambda z: n * _power(z, n - 1)


def activation_pair(spelling):
    """``(phi, phi')`` of an activation spelled with arguments, parsed here from the documented
    grammar (``leaky_relu(s)``, ``abrelu(a, b)``, ``monomial(n)``), not by ntksolve."""
    m = re.fullmatch(r"(\w+)\((.*)\)", spelling.replace(" ", ""))
    if m is None:
        raise KeyError(spelling)
    name, args = m.group(1), [float(a) for a in m.group(2).split(",")]
    if name == "leaky_relu":
        return _piecewise_linear(args[0], 1.0)
    if name == "abrelu":
        return _piecewise_linear(args[0], args[1])
    if name == "monomial":
        return _monomial(int(args[0]))
    raise KeyError(spelling)


def piecewise_linear_slopes(spelling):
    """``(a, b)`` of ``a min(z, 0) + b max(z, 0)`` for the piecewise-linear spellings, else None."""
    fixed = {"relu": (0.0, 1.0), "identity": (1.0, 1.0), "leaky_relu": (0.01, 1.0), "abs": (-1.0, 1.0)}
    if spelling in fixed:
        return fixed[spelling]
    m = re.fullmatch(r"(leaky_relu|abrelu)\((.*)\)", spelling.replace(" ", ""))
    if m is None:
        return None
    args = [float(a) for a in m.group(2).split(",")]
    return (args[0], 1.0) if m.group(1) == "leaky_relu" else (args[0], args[1])


class _ByName(dict):
    """The plain names listed; any spelling with arguments parsed on first use."""

    def __init__(self, entries, which):
        super().__init__(entries)
        self._which = which

    def __missing__(self, key):
        self[key] = activation_pair(key)[self._which]
        return self[key]


PHI = _ByName(
    {
        "relu": lambda z: np.maximum(z, 0.0),
        "erf": erf,
        "tanh": np.tanh,
        "identity": lambda z: z,
        "sigmoid": expit,
        "gelu": lambda z: z * norm.cdf(z),
        "softplus": lambda z: np.logaddexp(0.0, z),
        "leaky_relu": _piecewise_linear(0.01, 1.0)[0],
        "abs": np.abs,
        "sin": np.sin,
        "cos": np.cos,
        "gaussian": lambda z: np.exp(-0.5 * np.square(z)),
    },
    0,
)


def forward(params, X, activation, weight_std, bias_std):
    """Plain forward pass of the conventions' MLP. Returns f (N, k)."""
    h = np.asarray(X, dtype=np.float64)
    for l, (W, b) in enumerate(params):
        z = (weight_std / np.sqrt(h.shape[1])) * h @ W.T
        if b.size:  # a layer without a bias stores b of shape (0,)
            z = z + bias_std * b
        h = z if l == len(params) - 1 else PHI[activation](z)
    return h


def fd_jacobian(net, params, X, eps=1e-6):
    """Central finite differences of net.apply w.r.t. the trained parameters, (N, k, P).

    In standard parameterisation the trained parameters are W~ = (sigma_w/sqrt(n)) W, b~ = sigma_b b:
    perturbing W~ by eps is perturbing W by eps * sqrt(n)/sigma_w (and b by eps/sigma_b)."""
    theta = net.flatten_params(params)
    d = params[0][0].shape[1]
    scale = np.ones_like(theta)
    if net.parameterization == "standard":
        pos = 0
        for W, b in params:
            scale[pos : pos + W.size] = np.sqrt(W.shape[1]) / net.weight_std
            pos += W.size
            scale[pos : pos + b.size] = 1.0 / net.bias_std if net.bias_std > 0 else np.nan
            pos += b.size
    N, k = X.shape[0], net.n_outputs
    J = np.empty((N, k, theta.size))
    for p in range(theta.size):
        t1, t2 = theta.copy(), theta.copy()
        t1[p] += eps * scale[p]
        t2[p] -= eps * scale[p]
        J[:, :, p] = (net.apply(net.unflatten_params(t1, d), X) - net.apply(net.unflatten_params(t2, d), X)) / (2 * eps)
    return J


def network_fd_jacobian(net, params, X, eps=1e-6):
    """Central finite differences of a ``Network``'s ``f`` by its flattened (trained, stored in NTK
    parameterisation) parameters, ``(N, k, P)``."""
    theta = net.flatten_params(params)
    shape = X.shape[1:]
    cols = []
    for p in range(theta.size):
        e = np.zeros_like(theta)
        e[p] = eps
        fp = net.apply(net.unflatten_params(theta + e, shape), X)
        fm = net.apply(net.unflatten_params(theta - e, shape), X)
        cols.append((fp - fm) / (2 * eps))
    return np.stack(cols, axis=2)
