"""The estimators' only calls into :mod:`ntksolve.dynamics` and :mod:`ntksolve.dask` (private).

Everything the scikit-learn faces ask of the solvers goes through the few functions here, so
that a change of the solvers' signatures is adapted in this one module: the in-memory predictor
of gradient descent on MSE, the trained infinite ensemble and the diagonal of its covariance,
and the tiled fit (``chunks=``) with what of it a saved model holds.
"""
from __future__ import annotations

import numbers

import numpy as np

from ntksolve import dynamics as _dynamics
from ntksolve._extras import require
from ntksolve.dynamics import mse as _mse
from ntksolve.dynamics import rules as _rules
from ntksolve.dynamics import solvers as _solvers

#: Values of the estimators' ``dynamics`` and ``method`` parameters.
DYNAMICS = _mse.DYNAMICS
METHODS = _mse.METHODS
DivergenceWarning = _dynamics.DivergenceWarning
Auto = _dynamics.Auto
resolve_rule = _rules.resolve_rule
ADAPTIVE = _rules.ADAPTIVE
resolve_solver = _solvers.resolve_solver



# ---------------------------------------------------------------------------------------------
# in memory
# ---------------------------------------------------------------------------------------------
def mse_predictor(k_train_train, y_train, *, diag_reg, dynamics, method):
    """The closed-form solver of gradient descent on MSE (one decomposition of the kernel); ``dynamics``
    is a rule object (it carries its learning rate), ``method`` a name or a solver."""
    return _dynamics.gradient_descent_mse(k_train_train, y_train, diag_reg=diag_reg, dynamics=dynamics,
                                          method=method)


def ensemble(nngp_train_train, ntk_train_train, y_train, *, learning_rate, diag_reg):
    """The trained infinite ensemble (its own decomposition of the regularised train NTK)."""
    return _dynamics.gradient_descent_mse_ensemble(nngp_train_train, ntk_train_train, y_train, learning_rate,
                                                   diag_reg=diag_reg)


def ensemble_variance(ens, t, nngp_test_train, ntk_test_train, nngp_test_diag):
    """Diagonal of the ensemble's test covariance at ``t`` (:meth:`EnsemblePredictor.variance`)."""
    return ens.variance(t, nngp_test_train, ntk_test_train, nngp_test_diag)


# ---------------------------------------------------------------------------------------------
# tiled (chunks=...)
# ---------------------------------------------------------------------------------------------
def _tiles():
    return require("ntksolve.dask", "dask", "chunks=... (kernel tiles on Dask)")


def fit_tiled(network, X, y_train, *, params, t, learning_rate, diag_reg, dynamics, fx_train_0, chunks,
              scheduler, dtype, method="auto"):
    """Solve at time ``t`` from kernel tiles on Dask, never forming the train kernel.

    ``method`` is the estimator's: ``"auto"`` is the tiled default (:func:`ntksolve.dask.fit.default_method`),
    ``"krylov"`` Lanczos at any ``t``; ``"eigh"`` and ``"expm"`` need the kernel in memory and are
    refused here, before any tile is computed.
    """
    if method in ("eigh", "expm"):
        raise ValueError(
            f"method={method!r} decomposes the train kernel in memory, which chunks={chunks!r} never forms; "
            "use method='auto' (conjugate gradients or Lanczos on the tiles) or 'krylov' with chunks, "
            "or chunks=None")
    return _tiles().fit_tiled(network, X, y_train, params=params, t=t, learning_rate=learning_rate,
                              diag_reg=diag_reg, dynamics=dynamics, fx_train_0=fx_train_0, chunks=chunks,
                              scheduler=scheduler, dtype=dtype, method=None if method == "auto" else method)


def predict_tiled(fit, X, *, fx_test_0, scheduler):
    """Test outputs ``(M, k)`` of a tiled fit, at its time."""
    return fit.predict(X, fx_test_0=fx_test_0, scheduler=scheduler)


def tiled_state(fit):
    """What a saved model holds of a tiled fit: ``(attrs, arrays)``; the scheduler never.

    The test tile edge, the time solved for, the ridge ``mu`` and the scalar diagnostics; the
    coefficients ``(N, k)`` and the train outputs at ``t``. The kernel spec is the estimator's
    network and parameters, the inputs its ``X_train_``.
    """
    info = {k: v for k, v in ((k, _plain(v)) for k, v in fit.info.items()) if v is not None}
    attrs = {"t": float(fit.t), "mu": float(fit.mu), "chunks": int(fit.chunks), "info": info}
    return attrs, {"coef": fit.coef, "fx_train": fit.fx_train}


def _plain(value):
    """A JSON value for a scalar diagnostic, None for anything else (arrays of residuals)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value if isinstance(value, str) else None


def restore_tiled(network, params, X_train, attrs, coef, fx_train, *, learning_rate, diag_reg, dynamics,
                  scheduler):
    """Rebuild the tiled fit that :func:`tiled_state` described (no kernel is computed).

    ``attrs`` has been checked by the caller: ``t``, ``mu``, ``chunks`` and ``info`` only, of the
    right types; ``coef`` and ``fx_train`` are ``(N, k)`` float64.
    """
    tiles = _tiles()
    spec = tiles.KernelSpec(network, params, kernel="ntk", trace=True)
    X = spec.prepare(X_train, "X_train")  # what fit_tiled's operator held: the same cast of the same inputs
    return tiles.TiledFit(spec, X, coef, fx_train, t=attrs["t"], learning_rate=learning_rate, diag_reg=diag_reg,
                          dynamics=dynamics, mu=attrs["mu"], chunks=attrs["chunks"], info=dict(attrs["info"]),
                          scheduler=scheduler, y_ndim=2)
