"""
Momentum and minibatch twins
============================

A training rule is an object: :class:`ntksolve.GradientDescent` carries the learning rate (a number
or a :class:`ntksolve.Schedule`), momentum, Nesterov and weight decay with ``torch.optim.SGD``'s
semantics. Every predictor takes the same object, and so does :func:`ntksolve.train_network`, so a
prediction and a real run are two calls with one rule (:doc:`/training-rules` has the derivations).

* Full batch with heavy-ball momentum: each eigenmode of ``Θ`` follows a 2×2 linear recurrence,
  which :func:`ntksolve.gradient_descent_mse` solves in closed form at any step.
* Minibatches: the function-space twin :func:`ntksolve.sgd_mse` steps the outputs over the same
  batch order as the real run (here from :func:`ntksolve.shuffled_batches`, PyTorch
  ``DataLoader(shuffle=True)``'s epochs).
"""

import matplotlib.pyplot as plt
import numpy as np

import ntksolve

rng = np.random.default_rng(1)
X, X_test = rng.standard_normal((64, 4)), rng.standard_normal((64, 4))
y, y_test = np.sin(X[:, :1]) + 0.5 * X[:, 1:2], np.sin(X_test[:, :1]) + 0.5 * X_test[:, 1:2]
net = ntksolve.MLP((2048,), activation="relu", bias_std=0.1)
params = net.init(n_features=4, random_state=0)
theta = ntksolve.empirical_ntk(net, params, X)
theta_test = ntksolve.empirical_ntk(net, params, X_test, X)
f0, f0_test = net.apply(params, X), net.apply(params, X_test)
critical = ntksolve.critical_learning_rate(theta)
steps = np.arange(0, 151, 5)

# %%
# Heavy-ball momentum, full batch
# -------------------------------
# With momentum ``μ`` the effective rate is ``η/(1 − μ)``: the rate is scaled down to match.
momentum = ntksolve.GradientDescent(learning_rate=0.05 * critical, momentum=0.9)
predicted = ntksolve.gradient_descent_mse(theta, y, dynamics=momentum)
_, pred_test = predicted(steps, f0, f0_test, theta_test)
real = ntksolve.train_network(
    net, params, X, y, steps=int(steps[-1]), dynamics=momentum, record_at=steps, X_test=X_test, y_test=y_test
)
print(
    f"momentum: predicted final test loss {ntksolve.mse_loss(pred_test, y_test)[-1]:.4f}, real {real.loss_test[-1]:.4f}"
)

# %%
# Minibatches of 16
# -----------------
plain = ntksolve.GradientDescent(learning_rate=0.25 * critical)
batches = ntksolve.shuffled_batches(len(X), 16, int(steps[-1]), random_state=0)
twin = ntksolve.sgd_mse(
    theta, y, f0, steps, dynamics=plain, batches=batches, k_test_train=theta_test, fx_test_0=f0_test, y_test=y_test
)
real_mb = ntksolve.train_network(
    net,
    params,
    X,
    y,
    steps=int(steps[-1]),
    dynamics=plain,
    batches=batches,
    record_at=steps,
    X_test=X_test,
    y_test=y_test,
)
print(f"minibatch: predicted final test loss {twin.test_loss[-1]:.4f}, real {real_mb.loss_test[-1]:.4f}")

fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
axes[0].semilogy(steps, real.loss_test, "C0-", label="real")
axes[0].semilogy(steps, ntksolve.mse_loss(pred_test, y_test), "C1--", label="closed form")
axes[0].set(title="momentum 0.9, full batch", xlabel="step", ylabel="test loss")
axes[1].semilogy(steps, real_mb.loss_test, "C0-", label="real")
axes[1].semilogy(steps, twin.test_loss, "C1--", label="function-space twin")
axes[1].set(title="minibatches of 16", xlabel="step")
for ax in axes:
    ax.legend()
fig.tight_layout()
