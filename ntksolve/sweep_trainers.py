"""Which framework trains the real networks of :func:`ntksolve.compare`.

Every trainer has :func:`ntksolve.train_network`'s signature and result (ntksolve's network, its
parameters, a rule object, ntksolve's loss and units), so a sweep can be repeated with the training
done by code nobody here wrote:

=============  ===========================================================================
``"numpy"``    :func:`ntksolve.train_network` (the default; no extra)
``"torch"``    :func:`ntksolve.torch.train_network_torch`: PyTorch's own optimisers on
               :func:`~ntksolve.torch.to_torch` of the network (the ``torch`` extra)
``"sklearn"``  :func:`ntksolve.sklearn.trainer.train_network_sklearn`: scikit-learn's
               ``MLPRegressor`` / ``MLPClassifier`` stepped by ``partial_fit`` (standard
               parameterisation, SGD with constant rate and momentum only)
=============  ===========================================================================

:func:`sweep_trainer` resolves the name and refuses, before any work, a trainer that is not
installed or that cannot train the sweep's networks by the sweep's rule exactly.
"""

from __future__ import annotations

import importlib
from typing import Callable, NamedTuple, Optional

from ntksolve.network_training import train_network

#: The trainers ``compare(trainer=...)`` and ``ntksolve compare --trainer`` accept.
TRAINERS = ("numpy", "torch", "sklearn")

__all__ = ["SweepTrainer", "sweep_trainer", "TRAINERS"]


class SweepTrainer(NamedTuple):
    """A resolved trainer: its name, its function (:func:`ntksolve.train_network`'s signature) and
    the framework that runs it, with its version."""

    name: str
    train: Callable
    function: str
    framework: str
    version: Optional[str]

    def settings(self) -> dict:
        """What the report records about the trainer (``settings["trainer"]`` ...)."""
        return {
            "trainer": self.name,
            "trainer_function": self.function,
            "trainer_framework": f"{self.framework} {self.version}" if self.version else self.framework,
        }


def _version(module: str) -> Optional[str]:
    """The imported module's own ``__version__``: it names the build (``2.13.0+cpu``), which the
    distribution's metadata version may leave out."""
    return getattr(importlib.import_module(module), "__version__", None)


def sweep_trainer(trainer, net, rule, *, loss: str = "mse", n_outputs: Optional[int] = None) -> SweepTrainer:
    """Resolve ``trainer`` for a sweep of networks like ``net`` trained by ``rule``.

    Parameters
    ----------
    trainer : {"numpy", "torch", "sklearn"}, SweepTrainer, or callable
        A name of :data:`TRAINERS`; a resolved :class:`SweepTrainer`; or any function with
        :func:`ntksolve.train_network`'s signature and result.
    net : MLP
        One network of the sweep (its parameterisation, activation and biases matter).
    rule : GradientDescent or Adam
        The sweep's rule (its rate may still be a placeholder: only its kind matters here).
    loss : {"mse", "cross_entropy"}
    n_outputs : int, optional
        ``k``, where known (scikit-learn has no two-output softmax).

    Returns
    -------
    SweepTrainer

    Raises
    ------
    TypeError
        ``trainer`` neither a name, a SweepTrainer nor a callable.
    ValueError
        An unknown name, or a run the trainer cannot do exactly (the message says why and what to
        change).
    ImportError
        The trainer's framework is not installed (the message names the extra to install).
    """
    if isinstance(trainer, SweepTrainer):
        return trainer
    if not isinstance(trainer, str):
        if callable(trainer):
            name = getattr(trainer, "__qualname__", type(trainer).__name__)
            module = getattr(trainer, "__module__", None) or ""
            return SweepTrainer(name, trainer, f"{module}.{name}".lstrip("."), "custom", None)
        raise TypeError(
            f"trainer must be one of {TRAINERS} or a function with train_network's signature, got {trainer!r}"
        )
    if trainer == "numpy":
        import numpy

        return SweepTrainer("numpy", train_network, "ntksolve.train_network", "numpy", numpy.__version__)
    if trainer == "torch":
        from ntksolve._extras import require

        require("torch", "torch", "compare(trainer='torch') (training in PyTorch)")
        from ntksolve.torch.trainer import train_network_torch

        return SweepTrainer(
            "torch", train_network_torch, "ntksolve.torch.train_network_torch", "torch", _version("torch")
        )
    if trainer == "sklearn":
        from ntksolve.sklearn.trainer import check_sklearn_run, train_network_sklearn

        check_sklearn_run(net, rule, loss=loss, n_outputs=n_outputs)
        return SweepTrainer(
            "sklearn",
            train_network_sklearn,
            "ntksolve.sklearn.trainer.train_network_sklearn",
            "scikit-learn",
            _version("sklearn"),
        )
    raise ValueError(f"unknown trainer {trainer!r}; one of: {', '.join(TRAINERS)}")
