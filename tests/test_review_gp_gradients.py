"""The GP kernels' gradients in log ``(bias_std, weight_std)`` for every activation, at depth 1 and
10, variances up to 10, a duplicated point, ``x`` and ``-x``, and a pair at correlation
``1 - 1e-12``, against a sixth-order central difference of the analytic kernels themselves (step 1e-3, 1e-5 for
the monomials, whose kernels are steep powers of ``weight_std``: the differences are converged in
the step to ~1e-10 relative).

The gradients of tanh, sigmoid, gelu and softplus are themselves central differences (second
order, a step that shrinks with depth: ``ntksolve.sklearn.gp_kernels._fd_step``), documented as
accurate to about 1e-9: held here to 1e-8 like the exact ones (a fixed step of 1e-4 measured 3e-8 at
depth 1 and 8e-7 at depth 10).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ntksolve import MLP, NNGPKernel, NTKKernel, analytic_kernels

from test_review_extremes import ACTIVATIONS, _scales


def _points(sw, sb):
    rng = np.random.default_rng(0)
    d = 3
    X = rng.standard_normal((7, d))
    for i, s1 in enumerate((10.0, 0.5, 4.0, 2.0, 10.0, 1.0, 7.0)):
        X[i] *= math.sqrt(d * (s1 - sb * sb)) / sw / np.linalg.norm(X[i])
    theta = math.acos(1.0 - 1e-12)
    near = X[0] * math.cos(theta) + np.cross(X[0], X[1]) / np.linalg.norm(np.cross(X[0], X[1])) * np.linalg.norm(
        X[0]
    ) * math.sin(theta)
    return np.concatenate([X, X[[2]], -X[[0]], near[None]])


def _kernel_values(which, depth, act, sw, sb, X):
    return getattr(analytic_kernels(MLP((1,) * depth, act, sw, sb), X), which)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("depth", [1, 10])
def test_gp_kernel_gradients_match_finite_differences(act, depth):
    sw, sb = _scales(act)
    X = _points(sw, sb)
    if depth > 1:
        # not the nearly parallel pair: ten layers amplify the rounding of its 1 - rho (eps / 1e-12
        # relative) by up to chi^10 (sin: 5e9), a jitter of ~1e-6 in the values that no rule avoids
        X = X[:-1]
    h = 1e-5 if act.startswith("monomial") else 1e-3
    tol = 1e-8
    for Kern, which in ((NTKKernel, "ntk"), (NNGPKernel, "nngp")):
        K, grad = Kern(weight_std=sw, bias_std=sb, depth=depth, activation=act)(X, eval_gradient=True)
        assert np.array_equal(K, _kernel_values(which, depth, act, sw, sb, X))
        for col, scale in ((0, lambda m: (sw, sb * math.exp(m * h))), (1, lambda m: (sw * math.exp(m * h), sb))):
            f = [_kernel_values(which, depth, act, *scale(m), X) for m in (-3, -2, -1, 1, 2, 3)]
            fd = (-f[0] + 9 * f[1] - 45 * f[2] + 45 * f[3] - 9 * f[4] + f[5]) / (60 * h)
            # relative to the larger of the gradient and the kernel (a step h in log sigma moves K
            # by h grad): a gradient column far below K is pinned to rounding of K, not of itself
            err = np.abs(grad[:, :, col] - fd).max() / max(np.abs(fd).max(), np.abs(K).max())
            assert err <= tol, (act, depth, which, col, err)
        assert np.array_equal(grad[2, 7], grad[2, 2])  # row 7 duplicates row 2: the diagonal's gradient
