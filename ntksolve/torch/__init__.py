"""PyTorch interop (the ``ntksolve[torch]`` extra): import an ``nn.Sequential`` MLP exactly, export
any ntksolve network back, and train the real module in PyTorch beside the prediction.

- :func:`from_torch` -- ``nn.Sequential`` of ``nn.Linear`` and one element-wise activation ->
  ``(net, params)``; the empirical NTK of the result is the one PyTorch's autograd defines over
  the module's own parameters.
- :func:`to_torch` -- any :class:`~ntksolve.MLP` -> ``nn.Sequential`` computing the same function.
- :func:`from_torch` / :func:`to_torch` also read and write convolutional ``nn.Sequential`` modules
  (``Conv1d``/``Conv2d``, ``AdaptiveAvgPool(1)``, ``Flatten``) given ``input_shape``;
  :func:`to_channels_last` turns PyTorch's ``NCHW`` / ``NCL`` batches into ntksolve's layout.
- :func:`train` -- real training in PyTorch (``torch.optim.SGD`` with momentum, Nesterov, weight
  decay, schedules, minibatches; ``torch.optim.Adam``), recorded like
  :func:`ntksolve.train_network`.
- :func:`train_network_torch` -- :func:`ntksolve.train_network`'s interface and units (an ntksolve
  network, a rule object, ntksolve's loss), run in PyTorch on :func:`to_torch` of the network.
- :func:`learning_rate_from_torch` -- a PyTorch learning rate in ntksolve's units.
- :class:`DataLoaderBatches` -- the batch order of a seeded ``torch.utils.data.DataLoader``.
- :class:`Erf` -- the ``erf`` activation as a module (PyTorch has none).
- :class:`Residual` -- ``x + scale * block(x)``, the residual block :func:`from_torch` imports (with
  ``nn.LayerNorm``, into a :class:`~ntksolve.nets.network.Network`).

``import ntksolve`` never imports torch; importing this package does, and says which extra to
install when it is missing.
"""

from ntksolve._extras import require

require("torch", "torch", "ntksolve.torch (PyTorch interop)")

from ntksolve.torch.convert import Erf  # noqa: E402
from ntksolve.torch.network_convert import Residual, from_torch, to_torch  # noqa: E402
from ntksolve.torch.conv_import import to_channels_last  # noqa: E402
from ntksolve.torch.batches import DataLoaderBatches  # noqa: E402
from ntksolve.torch.training import TorchTrainingResult, train  # noqa: E402
from ntksolve.torch.trainer import train_network_torch  # noqa: E402
from ntksolve.torch.units import learning_rate_from_torch  # noqa: E402

__all__ = [
    "from_torch",
    "to_torch",
    "to_channels_last",
    "train",
    "train_network_torch",
    "learning_rate_from_torch",
    "DataLoaderBatches",
    "TorchTrainingResult",
    "Erf",
    "Residual",
]
