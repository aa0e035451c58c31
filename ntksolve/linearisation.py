"""Will the linear prediction hold? A cheap check before a long training run.

Every prediction of ntksolve is the network linearised at initialisation: it is right while the
kernel stays near where it started. :func:`linearisation_check` asks the prediction itself where
it ends: the linearised network trained by the planned rule ends at parameters
``θ_S = θ_0 + Jᵀ a`` with ``f_S − f_0 = Θ a`` (its parameters only move in the span of the
Jacobian's rows), so ``a = Θ⁺ (f_S − f_0)`` from the twin's training outputs. The check moves the
real network to ``θ_S`` (one exact step of the trainer, never forming ``J``) and measures its kernel
there::

    δ = ||Θ(θ_S) − Θ(θ_0)||_F / ||Θ(θ_0)||_F

A prediction whose own end point has a different kernel is not self-consistent: it warns
(:class:`LinearisationWarning`) with ``δ`` when it exceeds ``threshold``. No real training is run.

Measured on the project's data (one hidden ReLU layer, widths 16 to 2048, both
parameterisations, scikit-learn's initialisation and rates; ``docs/training-rules.md``, "When the
linear prediction fails"): ``δ`` is 0.99–1.24 times the real run's kernel change after 30 steps
and 0.37–0.65 times it after 300 (the real path wanders farther than the straight line to the
linear end point, and a moving kernel moves it farther still), so the default threshold of 5%
flags runs whose real kernel change reaches about 5–13%. Weight decay's pull towards zero is not
in the end point (it is outside the Jacobian's row span), and Adam has no linear prediction to
check: it is refused.
"""

from __future__ import annotations

import numbers
import warnings
from typing import NamedTuple

import numpy as np

from ntksolve._validation import check_inputs
from ntksolve.dynamics import Adam, GradientDescent, critical_learning_rate
from ntksolve.kernels import empirical_ntk
from ntksolve.nets.forward_mode import own_parameter_image
from ntksolve.nets.mlp import MLP, require_mlp
from ntksolve.optimizers import training_rule
from ntksolve.sweep_checks import _class_labels, _targets
from ntksolve.training import train_network
from ntksolve.twins import Run, Twin

__all__ = ["linearisation_check", "LinearisationCheck", "LinearisationWarning", "DEFAULT_THRESHOLD"]

#: Default threshold on the kernel change at the prediction's end point.
DEFAULT_THRESHOLD = 0.05


class LinearisationWarning(UserWarning):
    """The kernel at the linear prediction's own end point differs too much from the one it used."""


class LinearisationCheck(NamedTuple):
    """What :func:`linearisation_check` found.

    kernel_change : float
        ``||Θ(θ_S) − Θ(θ_0)||_F / ||Θ(θ_0)||_F`` at the linearised network's end point ``θ_S``.
    parameter_distance : float
        ``||θ_S − θ_0||`` (in the trained parameters' units).
    threshold : float
    holds : bool
        ``kernel_change <= threshold``.
    message : str
    """

    kernel_change: float
    parameter_distance: float
    threshold: float
    holds: bool
    message: str


def _row_span_coefficients(K, df):
    """``a`` with ``Θ a = df`` in ``Θ``'s range, shaped like ``df``, and ``||Jᵀ a||² = aᵀ Θ a``."""
    n = df.size
    A = (
        K.reshape(n, n)
        if K.ndim == 2 and df.shape[1] == 1
        else (np.kron(K, np.eye(df.shape[1])) if K.ndim == 2 else K.transpose(0, 2, 1, 3).reshape(n, n))
    )
    lam, V = np.linalg.eigh(A)
    keep = lam > 1e-10 * max(float(lam[-1]), np.finfo(float).tiny)
    c = V[:, keep].T @ df.reshape(n)
    a = V[:, keep] @ (c / lam[keep])
    return a.reshape(df.shape), float(np.sqrt(np.sum(c * c / lam[keep])))


def linearisation_check(
    net: MLP,
    params,
    X,
    y,
    *,
    steps: int,
    learning_rate=None,
    dynamics=None,
    loss: str = "mse",
    batches=None,
    threshold: float = DEFAULT_THRESHOLD,
    warn: bool = True,
) -> LinearisationCheck:
    """How far the NTK has moved where the linear prediction of a run ends, before the run.

    Parameters
    ----------
    net : MLP
    params : list of (W, b)
        The parameters the run starts from (e.g. from :func:`ntksolve.torch.from_torch` or
        :func:`ntksolve.sklearn.mlp_import.sklearn_initial_network`); never modified.
    X : array_like, shape (N, d)
    y : array_like, shape (N,) or (N, k)
        As :func:`ntksolve.train_network` takes them for ``loss`` (class labels ``(N,)`` or one-hot
        rows for cross-entropy).
    steps : int
        Length of the planned run.
    learning_rate, dynamics, loss, batches
        The planned run, as :func:`ntksolve.train_network` takes them (exactly one of
        ``learning_rate`` and ``dynamics``; a ``GradientDescent``).
    threshold : float, default 0.05
        Warn when the kernel change at the end point exceeds it.
    warn : bool, default True
        Issue :class:`LinearisationWarning` then.

    Returns
    -------
    LinearisationCheck

    Raises
    ------
    ValueError
        An :class:`~ntksolve.dynamics.Adam` rule (it has no linear prediction), or bad inputs.

    Notes
    -----
    The cost is two empirical kernels on ``X``, one decomposition and the twin's trajectory:
    about what the prediction itself costs, and no real training step beyond the one that moves
    the network to the end point.
    """
    require_mlp(net, "linearisation_check")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not threshold > 0:
        raise ValueError(f"threshold must be a positive number, got {threshold!r}")
    rule = training_rule(learning_rate, dynamics)
    if isinstance(rule, Adam):
        raise rule.no_twin_error("a linearisation check")
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
    steps = int(steps)
    d, _ = net.check_params(params)
    X = check_inputs(X, n_features=d)
    N, k = X.shape[0], net.n_outputs
    yt = _targets(y, N, "y", k) if loss == "mse" else _class_labels(y, np.asarray(y)[:1], N, 1)[0]
    batch_list = None if batches is None else list(batches)

    K = empirical_ntk(net, params, X, trace=(k == 1))
    f0 = net.apply(params, X).astype(np.float64)
    run = Run(rule, loss, None if batch_list is None else len(batch_list[0]), np.array([0, steps]), yt, yt[:1], k)
    twin = Twin(
        run,
        K,
        K[:1],
        what="linearised",
        kernel_words="its empirical NTK",
        plain_crit=float(critical_learning_rate(K, n_outputs=k)),
    )
    images = None
    if isinstance(rule, GradientDescent) and rule.weight_decay > 0:
        img = own_parameter_image(net, params, X)
        images = (img, img[:1])
    pred = twin.predict(f0, f0[:1], batches=batch_list, images=images)
    if pred.status != "ok":
        msg = f"the linear prediction of this run does not converge: {pred.message}"
        if warn:
            warnings.warn(msg, LinearisationWarning, stacklevel=2)
        return LinearisationCheck(float("inf"), float("inf"), float(threshold), False, msg)

    a, distance = _row_span_coefficients(K, pred.train[-1] - f0)
    # One plain step at rate 1 on MSE towards targets f_0 + Nk a moves θ by exactly Jᵀ a, in
    # whatever parameterisation the network stores (the trainer's gradient is Jᵀ (f − y)/(Nk)).
    moved = train_network(
        net,
        params,
        X,
        f0 + (N * k) * a,
        learning_rate=1.0,
        steps=1,
        record_at=[0, 1],
        track_kernel=True,
        on_divergence="return",
    )
    change = float(moved.kernel_change[-1])
    holds = bool(change <= threshold)
    msg = (
        f"where its linear prediction ends after {steps} steps (parameters moved by {distance:.3g}), the "
        f"network's NTK differs from the one at initialisation by {change:.1%}"
    )
    if holds:
        msg += f", within {threshold:.0%}: the linear prediction is self-consistent"
    else:
        msg += (
            f", above {threshold:.0%}: the real kernel will move at least about as much, and the prediction "
            "from the kernel at initialisation is unreliable for this run; use a wider network, a smaller "
            "learning rate or fewer steps, or NTK parameterisation"
        )
        if warn:
            warnings.warn(msg, LinearisationWarning, stacklevel=2)
    return LinearisationCheck(change, distance, float(threshold), holds, msg)
