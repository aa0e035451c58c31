"""Other libraries' learning rates in ntksolve's units.

ntksolve's MSE loss is ``L = 1/(2Nk) Σ_i ‖f(x_i) − y_i‖²`` and its cross-entropy the mean over the
``N`` examples (``torch.nn.CrossEntropyLoss``). A step ``θ ← θ − η' ∇L'`` on another library's loss
``L' = c L`` is the step ``θ ← θ − (c η') ∇L``: our rate is ``c`` times theirs.

================================ ===================================================== ===========
``loss=``                        the other library's loss                              our rate
================================ ===================================================== ===========
``"torch_mse_mean"``             ``MSELoss(reduction="mean")`` = ``1/(Nk) Σ‖f − y‖²``   ``2 η'``
``"torch_mse_sum"``              ``MSELoss(reduction="sum")`` = ``Σ‖f − y‖²``           ``2 N k η'``
``"torch_cross_entropy_mean"``   ``CrossEntropyLoss()`` / ``BCEWithLogitsLoss()``        ``η'``
``"torch_cross_entropy_sum"``    the same with ``reduction="sum"``                      ``N η'``
``"sklearn_mlp_regressor"``      ``MLPRegressor``: gradient of ``1/(2N) Σ‖f − y‖²``      ``k η'``
================================ ===================================================== ===========

For ``MLPRegressor`` (``solver="sgd"``, ``learning_rate_init``) note also: it reports ``½ ·`` the
mean over all entries (our loss) but differentiates the sum over outputs; its momentum (default
0.9, Nesterov by default) equals PyTorch's at a constant rate; its ``alpha`` is weight decay
``alpha / N`` on the weights only (not the intercepts), which ntksolve's all-parameter weight decay
does not represent; it initialises Glorot-uniform in standard parameterisation.
"""

from __future__ import annotations

import numbers

import numpy as np

from ntksolve._validation import refuse_zero_rate
from ntksolve.dynamics.schedules import Schedule

__all__ = ["to_ntksolve_learning_rate", "LOSS_CONVENTIONS"]

#: Names accepted by :func:`to_ntksolve_learning_rate`, each with the factor ``c`` as a function of (N, k).
LOSS_CONVENTIONS = {
    "torch_mse_mean": lambda N, k: 2.0,
    "torch_mse_sum": lambda N, k: 2.0 * N * k,
    "torch_cross_entropy_mean": lambda N, k: 1.0,
    "torch_cross_entropy_sum": lambda N, k: float(N),
    "sklearn_mlp_regressor": lambda N, k: float(k),
}


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def to_ntksolve_learning_rate(lr, *, loss, n_samples, n_outputs):
    """Convert another library's learning rate (or schedule) to ntksolve's units.

    Parameters
    ----------
    lr : float or Schedule
        The rate as the other library takes it (a Schedule is scaled step by step).
    loss : str
        One of :data:`LOSS_CONVENTIONS` (see the module docstring).
    n_samples : int
        ``N``, the number of examples the loss averages or sums over (the batch size for
        minibatch training, since the batch loss is what is differentiated; a summed loss over
        batches of unequal sizes, such as a shorter last batch, has no single rate).
    n_outputs : int
        ``k``.

    Returns
    -------
    float or Schedule
        The same rate in ntksolve's units.

    Raises
    ------
    ValueError
        An unknown ``loss``, or a rate that is negative, not finite or 0 (as every rule refuses it).

    Examples
    --------
    >>> to_ntksolve_learning_rate(0.01, loss="torch_mse_mean", n_samples=100, n_outputs=3)
    0.02
    """
    if loss not in LOSS_CONVENTIONS:
        raise ValueError(f"unknown loss {loss!r}; valid values: {', '.join(map(repr, LOSS_CONVENTIONS))}")
    N = _positive_int(n_samples, "n_samples")
    k = _positive_int(n_outputs, "n_outputs")
    c = LOSS_CONVENTIONS[loss](N, k)
    if isinstance(lr, Schedule):
        return lr.scaled(c)
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, (numbers.Real, np.floating)):
        raise TypeError(f"lr must be a number or a Schedule, got {lr!r}")
    refuse_zero_rate(lr, "lr", "must be positive and finite")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    return c * float(lr)
