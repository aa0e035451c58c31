"""Kernels as tiles on Dask, Zarr kernel stores, and tiled solves (the ``ntksolve[dask]`` extra)."""
from ntksolve.dask.tiles import *  # noqa: F401,F403
from ntksolve.dask.tiles import __all__  # noqa: F401
