"""
A kernel store on a Dask cluster
================================

:mod:`ntksolve.dask` computes kernels as tiles, one task per tile, and writes them to a Zarr store
with a checksum per tile; an interrupted store resumes with only the missing tiles, and
``open_kernel(verify=True)`` checks every tile. The tiled solvers consume the same tiles. Here a
small in-process :class:`~distributed.LocalCluster` stands in for a real cluster: moving to one is
a change of ``scheduler`` (see :doc:`/scaling`).
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, LocalCluster

import ntksolve
import ntksolve.dask as D

rng = np.random.default_rng(0)
X, X_test = rng.standard_normal((600, 8)), rng.standard_normal((200, 8))
y, y_test = np.sin(X[:, 0]) + 0.5 * X[:, 1], np.sin(X_test[:, 0]) + 0.5 * X_test[:, 1]
net = ntksolve.MLP((512, 512), activation="relu", bias_std=0.1)

with (
    LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
    Client(cluster) as client,
    tempfile.TemporaryDirectory() as folder,
):
    store = Path(folder) / "ntk.zarr"
    result = D.store_kernel(D.KernelSpec(net), X, store, chunks=200, scheduler=client)
    print(f"tiles computed: {result.n_computed}")
    again = D.store_kernel(D.KernelSpec(net), X, store, chunks=200, scheduler=client)
    print(f"rerun: {again.n_computed} tiles computed (the store was complete)")
    theta = np.asarray(D.open_kernel(store, verify=True))  # every tile checked against its checksum

    # kernel regression from tiled products only (conjugate gradients), on the same cluster
    fit = D.fit_tiled(net, X, y[:, None], diag_reg=1e-2, chunks=200, scheduler=client)
    tiled = fit.predict(X_test)

in_memory = ntksolve.analytic_kernels(net, X).ntk
print(f"stored kernel vs in-memory analytic NTK: max difference {np.abs(theta - in_memory).max():.1e}")
print(f"tiled fit: held-out R² {1 - np.mean((tiled.ravel() - y_test) ** 2) / np.var(y_test):.3f}")

fig, axes = plt.subplots(1, 2, figsize=(7, 3))
axes[0].imshow(theta[:200, :200], cmap="viridis")
axes[0].set(title="stored NTK (first 200 rows)")
axes[1].plot(y_test, tiled.ravel(), ".", ms=3)
axes[1].plot([-2, 2], [-2, 2], "k:")
axes[1].set(xlabel="held-out target", ylabel="tiled prediction", title="kernel regression on tiles")
fig.tight_layout()
