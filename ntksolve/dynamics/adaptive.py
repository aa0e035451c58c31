"""Adaptive optimisers: described here for real training, with no function-space twin.

An adaptive rule divides each parameter's step by its own running gradient statistics. Those
depend on the parameters' coordinates, not only on the kernel ``J Jᵀ``, so unlike
:class:`~ntksolve.dynamics.rules.GradientDescent` it has no closed form or recurrence in function
space: the predictors refuse it with that reason, and only real training
(:func:`ntksolve.train_network`, :func:`ntksolve.torch.train`) and ``ntksolve compare`` run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from ntksolve._validation import check_learning_rate, check_real_scalar

__all__ = ["Adam", "NO_TWIN"]

#: Why an adaptive rule cannot be predicted from the kernel (every refusal says this).
NO_TWIN = (
    "adaptive optimisers divide each parameter's step by its own running gradient statistics, which the "
    "kernel J Jᵀ does not determine, so they have no function-space (kernel) twin"
)


@dataclass(frozen=True)
class Adam:
    """``torch.optim.Adam`` (and ``AdamW`` with ``decoupled=True``), for real training only.

    Parameters
    ----------
    learning_rate : float > 0, default 1e-3
        ``lr`` of PyTorch, applied to the gradient of ntksolve's loss (for MSE, half of
        ``torch.nn.MSELoss``'s; Adam is invariant to that factor up to ``eps``).
    betas : (float, float) in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0.0
        Added to the gradient (Adam), or applied as ``θ ← θ (1 − η w)`` before the step
        (``decoupled=True``, AdamW).
    decoupled : bool, default False

    Notes
    -----
    The step, with ``g`` the gradient of the loss, ``m_0 = v_0 = 0`` and step count ``s`` from 1::

        m ← β1 m + (1 − β1) g      v ← β2 v + (1 − β2) g²
        θ ← θ − η (m / (1 − β1^s)) / (sqrt(v / (1 − β2^s)) + eps)
    """

    learning_rate: float = 1e-3
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        set_("learning_rate", check_learning_rate(self.learning_rate))
        try:
            b1, b2 = self.betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {self.betas!r}") from None
        betas = []
        for name, b in (("betas[0]", b1), ("betas[1]", b2)):
            b = check_real_scalar(b, name, low=0.0)
            if b >= 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {b!r}")
            betas.append(b)
        set_("betas", tuple(betas))
        set_("eps", check_real_scalar(self.eps, "eps", low=0.0, strict=True))
        set_("weight_decay", check_real_scalar(self.weight_decay, "weight_decay", low=0.0))
        if not isinstance(self.decoupled, bool):
            raise TypeError(f"decoupled must be a bool, got {self.decoupled!r}")

    def no_twin_error(self, what: str = "a prediction") -> ValueError:
        """The error every predictor raises when asked for this rule."""
        return ValueError(
            f"{what} of {self!r}: {NO_TWIN}. Train the network itself (ntksolve.train_network, "
            "ntksolve.torch.train, or `ntksolve compare --optimizer adam`, which reports the gap to the "
            "closest linear prediction), or predict SGD with GradientDescent(learning_rate, momentum=..., "
            "nesterov=...)"
        )
