"""
Ensemble spread versus calibrated uncertainty
=============================================

``NTKRegressor.predict(X, return_std=True)`` can mean two things:

* ``uncertainty="ensemble"`` (the default): the spread of the trained infinite ensemble, that is
  of networks with random initialisations trained to time ``t``. It contains no observation
  noise and is not rescaled to the data: it says how much networks disagree, not how far a new
  target may fall.
* ``uncertainty="predictive"``: intervals for new targets. The kernel's amplitude and the noise
  variance are fitted by marginal likelihood (``docs/conventions.md``, "Predictive uncertainty"),
  so the intervals are calibrated when the model fits the data.

On noisy one-dimensional data, the 95% intervals of each are checked against held-out targets.
"""

import matplotlib.pyplot as plt
import numpy as np

import ntksolve

rng = np.random.default_rng(0)
x = np.sort(rng.uniform(-3, 3, 40))
y = np.sin(2 * x) + 0.3 * rng.standard_normal(x.size)
x_test = rng.uniform(-3, 3, 400)
y_test = np.sin(2 * x_test) + 0.3 * rng.standard_normal(x_test.size)
grid = np.linspace(-4, 4, 300)

fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
for ax, uncertainty in zip(axes, ["ensemble", "predictive"]):
    model = ntksolve.NTKRegressor(
        hidden_layer_sizes=(512, 512), activation="erf", bias_std=1.0, diag_reg=0.01, uncertainty=uncertainty
    )
    model.fit(x[:, None], y)
    mean, std = model.predict(grid[:, None], return_std=True)
    m_test, s_test = model.predict(x_test[:, None], return_std=True)
    covered = np.mean(np.abs(y_test - m_test) <= 1.96 * s_test)
    print(f"{uncertainty}: 95% intervals cover {covered:.1%} of held-out targets")
    ax.fill_between(grid, mean - 1.96 * std, mean + 1.96 * std, alpha=0.3, label="95% interval")
    ax.plot(grid, mean, "C0", label="mean")
    ax.plot(x, y, "k.", label="training data")
    ax.set(title=f'uncertainty="{uncertainty}": {covered:.0%} covered', xlabel="x")
axes[0].legend(loc="lower left")
fig.tight_layout()
