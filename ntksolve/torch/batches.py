"""Minibatch orders for :func:`ntksolve.torch.train`: explicit index arrays, or a seeded DataLoader's."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import List

import numpy as np

from ntksolve.dynamics.batches import check_batches

from ntksolve._extras import require

torch = require("torch", "torch", "ntksolve.torch (PyTorch interop)")

__all__ = ["DataLoaderBatches"]


@dataclass(frozen=True)
class DataLoaderBatches:
    """The batch order a seeded ``torch.utils.data.DataLoader`` yields, epoch after epoch.

    Exactly the indices of ``DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
    drop_last=drop_last, generator=torch.Generator().manual_seed(seed))`` over a dataset of ``N``
    examples, re-iterated once per epoch (``for epoch ...: for xb, yb in loader``), so that a
    training loop written with such a loader is reproduced step by step.

    Parameters
    ----------
    batch_size : int
    seed : int, default 0
    shuffle : bool, default True
    drop_last : bool, default False
    """

    batch_size: int
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = False

    def __post_init__(self):
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, numbers.Integral)
            or self.batch_size <= 0
        ):
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ValueError(f"seed must be an int, got {self.seed!r}")

    def indices(self, n_samples: int, steps: int) -> List[np.ndarray]:
        """The index arrays of the first ``steps`` batches over ``n_samples`` examples."""
        if self.drop_last and self.batch_size > n_samples:
            raise ValueError(
                f"batch_size={self.batch_size} > {n_samples} examples with drop_last=True: the loader yields no batch"
            )
        gen = torch.Generator()
        gen.manual_seed(int(self.seed))
        # The DataLoader itself, over the indices: its sampler and its per-epoch draw of a base
        # seed consume the generator exactly as the user's loader over their dataset does.
        loader = torch.utils.data.DataLoader(
            range(n_samples), batch_size=self.batch_size, shuffle=self.shuffle, drop_last=self.drop_last, generator=gen
        )
        out: List[np.ndarray] = []
        while len(out) < steps:
            for idx in loader:
                out.append(idx.numpy().astype(np.int64))
                if len(out) == steps:
                    break
        return out


def _check_batches(batches, N: int, steps: int):
    """A list of ``steps`` index arrays (or None for full batch): a :class:`DataLoaderBatches`
    draws them; any other order is checked by the function-space twin's own check, so both
    trainers and the prediction accept exactly the same batch orders."""
    if isinstance(batches, DataLoaderBatches):
        return batches.indices(N, steps)
    return check_batches(batches, N, steps)
