"""
Predict a PyTorch model's training
==================================

:func:`ntksolve.torch.from_torch` imports an ``nn.Sequential`` MLP exactly: the network it returns
computes the module's function, and its empirical NTK is the one PyTorch's autograd defines over
``model.parameters()``. The module's training by ``torch.optim.SGD`` on ``nn.MSELoss()`` is then
predicted in closed form, and :func:`ntksolve.torch.train` trains the module itself in PyTorch
to compare. PyTorch's ``MSELoss`` is the mean over entries, twice ntksolve's loss, so its
learning rate is twice ours (:func:`ntksolve.torch.learning_rate_from_torch`; :doc:`/torch`).
"""

import functools

import matplotlib.pyplot as plt
import numpy as np
import torch

import ntksolve
from ntksolve.torch import from_torch, learning_rate_from_torch, train

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(4, 512),
    torch.nn.Tanh(),
    torch.nn.Linear(512, 512),
    torch.nn.Tanh(),
    torch.nn.Linear(512, 1),
).double()  # float64, so that the prediction is compared to rounding

rng = np.random.default_rng(0)
X, X_test = rng.standard_normal((48, 4)), rng.standard_normal((48, 4))
y = np.sin(X[:, :1]) + 0.5 * X[:, 1:2]

net, params = from_torch(model)
theta = ntksolve.empirical_ntk(net, params, X)
theta_test = ntksolve.empirical_ntk(net, params, X_test, X)
f0, f0_test = net.apply(params, X), net.apply(params, X_test)

lr, steps = 0.02, np.arange(0, 101, 10)
loss = torch.nn.MSELoss()
rate = learning_rate_from_torch(lr, loss=loss, n_samples=len(X), n_outputs=1)
predictor = ntksolve.gradient_descent_mse(theta, y, learning_rate=rate, dynamics="discrete")
_, pred_test = predictor(steps, f0, f0_test, theta_test)

result = train(
    model,
    X,
    y,
    optimizer=functools.partial(torch.optim.SGD, lr=lr),
    loss=loss,
    steps=int(steps[-1]),
    record_at=steps,
    X_test=X_test,
)
gap = np.abs(result.fx_test - pred_test).max(axis=(1, 2))
print(
    f"PyTorch lr {lr} = ntksolve rate {rate}; largest test gap {gap.max():.1e}, "
    f"NTK moved {result.kernel_change[-1]:.1%}"
)

fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
for i, c in zip(range(3), ["C0", "C1", "C2"]):
    axes[0].plot(steps, result.fx_test[:, i, 0], c + "-", label="PyTorch" if i == 0 else None)
    axes[0].plot(steps, pred_test[:, i, 0], "k:", label="predicted" if i == 0 else None)
axes[0].set(xlabel="SGD step", ylabel="output", title="three test outputs")
axes[0].legend()
axes[1].semilogy(steps[1:], gap[1:], "o-")
axes[1].set(xlabel="SGD step", ylabel="max |f_torch − f_pred|", title="prediction error")
fig.tight_layout()
