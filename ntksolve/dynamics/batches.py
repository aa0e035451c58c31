"""Batch orders for minibatch training and its twins: one index array per step.

:func:`shuffled_batches` (``DataLoader(shuffle=True)`` epochs) and :func:`independent_batches`
(a fresh uniform subset every step) make them; :func:`check_batches` validates a given order for
every trainer and twin (:mod:`ntksolve.dynamics.function_space`, the numpy, PyTorch and
scikit-learn trainers), so all of them accept the same orders with the same errors.
"""

from __future__ import annotations

import numbers

import numpy as np

from ntksolve.dynamics.schedules import _count

__all__ = ["shuffled_batches", "independent_batches", "check_batches"]


def _batch_plan(n_samples, batch_size, n_steps, random_state):
    """The checked ``(n_samples, batch_size, n_steps)`` of a batch order, and its generator."""
    n = _count(n_samples, "n_samples")
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (numbers.Integral, np.integer)):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    if not 0 < int(batch_size) <= n:
        raise ValueError(f"batch_size must lie in [1, n_samples = {n}], got {batch_size}")
    return n, int(batch_size), _count(n_steps, "n_steps", minimum=0), np.random.default_rng(random_state)


def shuffled_batches(n_samples, batch_size, n_steps, *, random_state=None, drop_last=False):
    """The batch order of ``DataLoader(..., batch_size, shuffle=True, drop_last)`` epochs.

    Each epoch is a fresh uniform permutation cut into consecutive batches (the last one shorter
    unless ``drop_last``). The same structure as PyTorch's ``RandomSampler``, not its random numbers.

    Parameters
    ----------
    n_samples, batch_size, n_steps : int
    random_state : None, int or numpy.random.Generator
    drop_last : bool, default False

    Returns
    -------
    batches : list of ``n_steps`` int64 arrays
    """
    n, B, steps, rng = _batch_plan(n_samples, batch_size, n_steps, random_state)
    out = []
    while len(out) < steps:
        perm = rng.permutation(n)
        stop = n - n % B if drop_last else n
        out.extend(perm[i : i + B] for i in range(0, stop, B))
    return out[:steps]


def independent_batches(n_samples, batch_size, n_steps, *, random_state=None):
    """Batches drawn independently at every step, each a uniform subset of ``batch_size`` indices.

    Their mean step is the full-batch step, so the mean over such runs is full-batch descent.

    Parameters
    ----------
    n_samples, batch_size, n_steps : int
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    batches : list of ``n_steps`` int64 arrays
    """
    n, B, steps, rng = _batch_plan(n_samples, batch_size, n_steps, random_state)
    return [rng.choice(n, size=B, replace=False) for _ in range(steps)]


def check_batches(batches, n, n_steps):
    """``n_steps`` int64 index arrays into ``n`` points from a batch order (None: full batch)."""
    if batches is None:
        return None
    if isinstance(batches, np.ndarray) and batches.ndim == 2:
        batches = list(batches)
    if not isinstance(batches, (list, tuple)):
        raise TypeError("batches must be a list of index arrays (e.g. from shuffled_batches), or None")
    if len(batches) < n_steps:
        raise ValueError(
            f"batches has {len(batches)} entries but {n_steps} steps were asked for (fewer than steps={n_steps}); give one index array per step"
        )
    out = []
    for s, b in enumerate(batches[:n_steps]):
        arr = np.asarray(b)
        if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"batch {s} must be a non-empty 1-D array of integer indices, got {b!r}")
        if arr.min() < 0 or arr.max() >= n:
            raise ValueError(f"batch {s} has an index outside [0, {n}) (the training set has {n} points)")
        out.append(arr.astype(np.int64))
    return out
