"""An explicitly linearised network, trained in parameter space: the reference of the rule tests.

``f(θ) = f_0 + J (θ − θ_0)`` with ``J`` from :func:`ntksolve.jacobian` and ``θ_0`` the flat trained
parameters; the optimiser steps ``θ`` exactly as ``torch.optim.SGD`` does (dampening 0), written
out here in numpy, independent of the function-space code under test.
"""

import numpy as np
from scipy.special import expit, softmax

import ntksolve


def trained_flat(net, params):
    """Flat trained coordinates: the parameters (NTK) or the scaled ones (standard)."""
    if net.parameterization == "ntk":
        return net.flatten_params(params)
    d = params[0][0].shape[1]
    return np.concatenate(
        [np.concatenate([ws * W.ravel(), bs * b]) for (W, b), (ws, bs) in zip(params, net.layer_scales(d))]
    )


class Linearised:
    """A small finite network, its Jacobians and kernels on train and test inputs."""

    def __init__(
        self, *, k=2, n_train=7, n_test=4, width=12, parameterization="ntk", activation="erf", duplicate=True, seed=0
    ):
        rng = np.random.default_rng(seed)
        self.net = ntksolve.MLP(
            (width,), activation=activation, bias_std=0.2, parameterization=parameterization, n_outputs=k
        )
        self.params = self.net.init(3, random_state=seed)
        X = rng.standard_normal((n_train, 3))
        if duplicate:
            X[-1] = X[0]  # a repeated input: the kernel gets null vectors
        self.X, self.Xt = X, rng.standard_normal((n_test, 3))
        self.N, self.M, self.k = n_train, n_test, k
        self.J = ntksolve.jacobian(self.net, self.params, X).reshape(n_train * k, -1)
        self.Jt = ntksolve.jacobian(self.net, self.params, self.Xt).reshape(n_test * k, -1)
        self.theta0 = trained_flat(self.net, self.params)
        self.f0 = self.net.apply(self.params, X)
        self.ft0 = self.net.apply(self.params, self.Xt)
        self.y = rng.standard_normal((n_train, k))
        self.labels = rng.integers(0, max(k, 2), n_train)
        self.labels_test = rng.integers(0, max(k, 2), n_test)
        self.K = self.J @ self.J.T  # (Nk, Nk), index (i, a)
        self.Kt = self.Jt @ self.J.T

    def full(self, K, n_rows):
        """(A k, N k) → (A, N, k, k)."""
        k = self.k
        return K.reshape(n_rows, k, self.N, k).transpose(0, 2, 1, 3)

    def sgd(self, steps, rates, *, momentum=0.0, nesterov=False, weight_decay=0.0, batches=None, loss="mse"):
        """Parameter-space SGD; returns train (T, N, k) and test (T, M, k) outputs at ``steps``."""
        N, k = self.N, self.k
        theta = self.theta0.copy()
        buf = None
        tr, te = [], []
        Y = self.y if loss == "mse" else (self.labels[:, None].astype(float) if k == 1 else np.eye(k)[self.labels])
        for s in range(int(steps[-1]) + 1):
            f = self.f0 + (self.J @ (theta - self.theta0)).reshape(N, k)
            if s in steps:
                for _ in range(int(np.sum(np.asarray(steps) == s))):
                    tr.append(f)
                    te.append(self.ft0 + (self.Jt @ (theta - self.theta0)).reshape(self.M, k))
            if s == steps[-1]:
                break
            b = np.arange(N) if batches is None else np.asarray(batches[s])
            if loss == "mse":
                E = np.zeros((N, k))
                np.add.at(E, b, (f[b] - Y[b]) / (b.size * k))
            else:
                p = expit(f) if k == 1 else softmax(f, axis=1)
                E = np.zeros((N, k))
                np.add.at(E, b, (p[b] - Y[b]) / b.size)
            g = self.J.T @ E.ravel() + weight_decay * theta
            buf = g.copy() if buf is None else momentum * buf + g
            d = (g + momentum * buf if nesterov else buf) if momentum else g
            theta = theta - rates[s] * d
        return np.array(tr), np.array(te)
