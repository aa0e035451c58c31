"""
Predict a training run without training
=======================================

A wide network trained by full-batch gradient descent on the squared loss follows, to a good
approximation, its linearisation around the initial parameters. The linearised network's training
has a closed form in its Neural Tangent Kernel ``Θ``: with ``c = η/(N k)``, after ``t`` steps

.. math::

    f_t = y + (I - c\\,Θ)^t (f_0 - y),

so one kernel and one eigendecomposition give the outputs at every step (see
:doc:`/conventions`). This example predicts a whole run of a two-layer ReLU network, and only then
trains it, to compare.
"""

# %%
# A network, its kernel at initialisation, and the prediction
# ------------------------------------------------------------
import matplotlib.pyplot as plt
import numpy as np

import ntksolve

rng = np.random.default_rng(0)
X, X_test = rng.standard_normal((64, 4)), rng.standard_normal((64, 4))
y = np.sin(X[:, :1]) + 0.5 * X[:, 1:2]
y_test = np.sin(X_test[:, :1]) + 0.5 * X_test[:, 1:2]

net = ntksolve.MLP((2048,), activation="relu", bias_std=0.1)
params = net.init(n_features=4, random_state=0)
theta = ntksolve.empirical_ntk(net, params, X)  # (64, 64)
theta_test = ntksolve.empirical_ntk(net, params, X_test, X)  # (64, 64): test rows, train columns
f0, f0_test = net.apply(params, X), net.apply(params, X_test)

rate = 0.5 * ntksolve.critical_learning_rate(theta)  # half the rate at which descent diverges
steps = np.arange(0, 201, 5)
predictor = ntksolve.gradient_descent_mse(theta, y, learning_rate=rate, dynamics="discrete")
pred_train, pred_test = predictor(steps, f0, f0_test, theta_test)  # (41, 64, 1) each
predicted_loss = ntksolve.mse_loss(pred_test, y_test)
print(f"learning rate {rate:.3f}; predicted test loss after {steps[-1]} steps: {predicted_loss[-1]:.4f}")

# %%
# Now train the network, and compare
# ----------------------------------
# ``train_network`` runs real gradient descent on the parameters (the same loss and units) and
# records the outputs at the same steps, and how far the empirical NTK moved.
result = ntksolve.train_network(
    net, params, X, y, steps=int(steps[-1]), learning_rate=rate, record_at=steps, X_test=X_test, y_test=y_test
)
gap = np.sqrt(np.mean((result.fx_test - pred_test) ** 2) / np.mean(y_test**2))
print(
    f"real test loss {result.loss_test[-1]:.4f}; test-output gap {gap:.1%} of the targets' RMS; "
    f"kernel moved {result.kernel_change[-1]:.1%}"
)

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(steps, result.loss_train, "C0-", label="train, real")
ax.semilogy(steps, ntksolve.mse_loss(pred_train, y), "C0--", label="train, predicted")
ax.semilogy(steps, result.loss_test, "C1-", label="test, real")
ax.semilogy(steps, predicted_loss, "C1--", label="test, predicted")
ax.set(xlabel="gradient-descent step", ylabel="loss  1/(2Nk) Σ‖f − y‖²", title="width 2048")
ax.legend()
fig.tight_layout()
