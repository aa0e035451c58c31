"""Kernels beyond one machine's memory: tiles on Dask, stored in Zarr, solved by Krylov methods.

The optional extra ``pip install 'ntksolve[dask]'`` (Dask, distributed, Zarr). ``import ntksolve``
never imports this package.

- :mod:`~ntksolve.dask.chunks`: :func:`resolve_chunks`, the block sizes of a tiled kernel.
- :mod:`~ntksolve.dask.runner`: the scheduler a user names (``None``, ``"threads"``, ``"sync"``,
  ``"processes"``, a ``distributed.Client`` or an address, reached within
  :data:`CONNECT_TIMEOUT_S`), and one numba/BLAS thread per task.
- :mod:`~ntksolve.dask.spec`: :class:`KernelSpec` (which kernel, how one tile is computed) and the
  kernels as lazy dask arrays, :func:`empirical_ntk` and :func:`analytic_kernels`.
- :mod:`~ntksolve.dask.store`: :func:`store_kernel` / :func:`open_kernel`, a kernel in a Zarr store
  whose every tile is checked against a checksum when read, resumed after an interruption,
  repaired on request; one writer at a time (:mod:`~ntksolve.dask.lock`).
- :mod:`~ntksolve.dask.operator`: :class:`TiledKernelOperator`, the train kernel through its
  products, and the streamed test-side :class:`TiledCrossOperator`.
- :mod:`~ntksolve.dask.fit`: :func:`fit_tiled` / :func:`solve_tiled` -> :class:`TiledFit`:
  :func:`ntksolve.dynamics.gradient_descent_mse` on the tiled operator (solver options travel
  with ``method=ConjugateGradient(...)`` or ``Krylov(...)``).
"""

from ntksolve.dask.chunks import resolve_chunks
from ntksolve.dask.fit import TiledFit, fit_tiled, solve_tiled
from ntksolve.dask.lock import StoreLockedError
from ntksolve.dask.operator import TiledCrossOperator, TiledKernelOperator
from ntksolve.dask.runner import CONNECT_TIMEOUT_S
from ntksolve.dask.spec import KernelSpec, analytic_kernels, empirical_ntk
from ntksolve.dask.store import StoreResult, StoreVerificationError, open_kernel, store_kernel

__all__ = [
    "CONNECT_TIMEOUT_S",
    "KernelSpec",
    "StoreLockedError",
    "StoreResult",
    "StoreVerificationError",
    "TiledCrossOperator",
    "TiledFit",
    "TiledKernelOperator",
    "analytic_kernels",
    "empirical_ntk",
    "fit_tiled",
    "open_kernel",
    "resolve_chunks",
    "solve_tiled",
    "store_kernel",
]
