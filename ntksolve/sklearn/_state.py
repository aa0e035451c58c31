"""The fitted state of the NTK estimators: what a saved model holds, and how it is restored (private).

:class:`_FittedState` is a base of :class:`ntksolve.sklearn.base._NTKBase`: :meth:`_FittedState._get_state`
and :meth:`_FittedState._set_state` are all that :mod:`ntksolve.sklearn.persistence` touches, and
subclasses add their own fitted extras through :meth:`_FittedState._state_extras` /
:meth:`_FittedState._restore_extras`. Restoring checks everything as ``fit`` would have made it
before the one heavy step (rebuilding the solver).
"""

from __future__ import annotations

import copy

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ntksolve._validation import check_dtype
from ntksolve.sklearn import _solve
from ntksolve.sklearn._checks import _check_real, _check_time


#: Parameters a fitted model may see changed without a refit: it answers with the new value
#: (``time``), the state stores what the fit used (``diag_reg_``), loading makes what ``fit`` would
#: (``uncertainty``: the noise model, on the same decomposition), or they only say how to compute
#: (``scheduler``, ``block_size``).
_POST_FIT_PARAMS = ("time", "diag_reg", "uncertainty", "scheduler", "block_size")


def _same(a, b):
    """Whether two parameter values are equal (arrays by value; anything incomparable differs)."""
    if a is b:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        try:
            return bool(np.array_equal(np.asarray(a), np.asarray(b)))
        except (TypeError, ValueError):
            return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


class _FittedState:
    """A fitted estimator's state as plain attributes and arrays, and its restoration (not public).

    Relies on the estimator's own ``_check_params``, ``_network``, ``_kernel``, ``_rule``,
    ``_plain_rule``, ``_build_predictor`` and ``_solve_at_time`` (:class:`ntksolve.sklearn.base._NTKBase`).
    """

    def _get_state(self):
        """The fitted state as ``(attrs, arrays)``: JSON-ready scalars and named ndarrays.

        The parameters are not part of it (``get_params`` gives them); the solver's decomposition
        is not either (``_set_state`` recomputes it); a tiled fit's coefficients are.
        """
        check_is_fitted(self)
        changed = self._params_changed_since_fit()
        if changed:
            raise ValueError(
                f"{'; '.join(changed)} since fit: a saved model is rebuilt from its parameters, so the "
                "loaded one would predict differently from this one (which still holds its fit); refit "
                "before saving, or set them back"
            )
        if self.network is not None:
            raise ValueError(
                f"network={type(self.network).__name__}: the pickle-free format stores ntksolve's own networks only, "
                "not a PyTorch or scikit-learn object; save the estimator with pickle/joblib (or torch.save the "
                "module and refit)"
            )
        attrs = {"n_features_in_": int(self.n_features_in_), "diag_reg_": float(self.diag_reg_)}
        arrays = {
            "X_train": self.X_train_,
            "y_train": self.y_train_,
            "y_train_mean": self._y_train_mean,
            "y_train_std": self._y_train_std,
            "fx_train_0": self.fx_train_0_,
        }
        if self.params_ is not None:
            for l, (W, b) in enumerate(self.params_):
                arrays[f"W{l}"] = W
                arrays[f"b{l}"] = b
        if hasattr(self, "feature_names_in_"):
            arrays["feature_names_in"] = self.feature_names_in_
        if self.tiled_ is not None:
            tiled_attrs, tiled_arrays = _solve.tiled_state(self.tiled_)
            attrs["tiled"] = tiled_attrs
            arrays.update({f"tiled_{name}": a for name, a in tiled_arrays.items()})
        self._state_extras(attrs, arrays)
        return attrs, arrays

    def _remember_params(self):
        """Note the parameters the fit was made with (every ``fit`` and ``load``), so that
        :meth:`_get_state` can tell which were changed since."""
        self._fit_params = {
            name: copy.copy(value) if isinstance(value, (list, dict, np.ndarray)) else value
            for name, value in self.get_params(deep=False).items()
        }

    def _params_changed_since_fit(self):
        """``"name changed from a to b"`` for each parameter the fitted state depends on that
        differs from the fit's (none for a model pickled before fits were noted)."""
        fitted = getattr(self, "_fit_params", None)
        if fitted is None:
            return []
        now = self.get_params(deep=False)
        return [
            f"{name} changed from {fitted[name]!r} to {now[name]!r}"
            for name in now
            if name in fitted and name not in _POST_FIT_PARAMS and not _same(fitted[name], now[name])
        ]

    def _state_extras(self, attrs, arrays):
        """Subclasses add their own fitted state to ``attrs`` and ``arrays`` (in place)."""

    def _restore_extras(self, state):
        """Subclasses read their own fitted state, before the common part; return the number of
        target columns it implies (None if it implies none)."""
        return None

    def _set_state(self, state):
        """Restore the fitted state from ``state`` (:class:`ntksolve.sklearn.persistence.StateReader`).

        Everything is checked as ``fit`` would have made it (parameters, shapes, dtypes, finite
        values, positive scales) before the one heavy step, rebuilding the solver: the in-memory
        decomposition of the train kernel (its bytes charged to the reader's budget first), or the
        tiled fit from its stored coefficients (no kernel). Raises ValueError.
        """
        self._check_params()
        self._remember_params()
        dt = self._dtype = check_dtype(self.dtype)
        k_implied = self._restore_extras(state)
        n = state.attr("n_features_in_", "int", lower=1)
        X = state.array("X_train", np.float64, (None, n), finite=True)
        N = X.shape[0]
        if N < 1:
            raise ValueError("X_train has no rows")
        Y = state.array("y_train", dt, (N, k_implied), finite=True)
        k = Y.shape[1]
        if k < 1:
            raise ValueError("y_train has no columns")
        mean = state.array("y_train_mean", np.float64, (k,), finite=True)
        std = state.array("y_train_std", np.float64, (k,), finite=True)
        if not np.all(std > 0):
            raise ValueError(f"y_train_std must be positive, got {std.tolist()}")
        if not self.normalize_y and not (np.all(mean == 0) and np.all(std == 1)):
            raise ValueError("y_train_mean and y_train_std must be 0 and 1 with normalize_y=False")
        f0 = state.array("fx_train_0", dt, (N, k), finite=True)
        network = self._network(k)
        if self.kernel == "empirical":
            widths = network.widths(n)
            params = [
                (
                    state.array(f"W{l}", dt, (widths[l + 1], widths[l]), finite=True),
                    state.array(f"b{l}", dt, (widths[l + 1],), finite=True),
                )
                for l in range(network.depth + 1)
            ]
        else:
            params = None
            if np.any(f0 != 0):
                raise ValueError("fx_train_0 must be 0 for the analytic kernel (the ensemble's mean output)")
        if state.has("feature_names_in"):
            self.feature_names_in_ = state.array("feature_names_in", "U", (n,)).astype(object)
        diag_reg = state.attr("diag_reg_", "float", lower=0.0)
        self.n_features_in_ = n
        self.X_train_, self.y_train_, self.fx_train_0_ = X, Y, f0
        self._y_train_mean, self._y_train_std = mean, std
        self.network_, self.params_ = network, params
        tiled = state.attr("tiled", "dict", default=None)
        if tiled is None:
            state.charge(N * N * dt.itemsize, f"the ({N}, {N}) train kernel that loading recomputes")
            self._build_predictor(self._kernel(X), diag_reg)
            self._solve_at_time()
            return
        if not self._tiled_capable or self.chunks is None:
            raise ValueError("the file holds a tiled fit, but the estimator's chunks parameter is None")
        tiled = _check_tiled_attrs(tiled, self._rule())
        dynamics, rate = self._plain_rule("chunks=... (the tiled solve)")
        coef = state.array("tiled_coef", np.float64, (N, k), finite=True)
        fx = state.array("tiled_fx_train", np.float64, (N, k), finite=True)
        self.tiled_ = _solve.restore_tiled(
            network,
            params,
            X,
            tiled,
            coef,
            fx,
            learning_rate=rate,
            diag_reg=diag_reg,
            dynamics=dynamics,
            scheduler=self.scheduler,
        )
        self.predictor_ = None
        self._fitted_at = None
        self.diag_reg_ = diag_reg
        self._ensemble_cache = None


def _check_tiled_attrs(tiled, rule):
    """The tiled part of a saved state: exactly ``t``, ``mu``, ``chunks``, ``info``, well typed."""
    if set(tiled) != {"t", "mu", "chunks", "info"}:
        raise ValueError(f"the tiled fit's entries must be t, mu, chunks, info; got {sorted(tiled)}")
    t = _check_time(tiled["t"], "the tiled fit's t", rule)
    mu = _check_real(tiled["mu"], "the tiled fit's mu")
    chunks = tiled["chunks"]
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"the tiled fit's chunks must be a positive int, got {chunks!r}")
    info = tiled["info"]
    if not isinstance(info, dict) or not all(
        isinstance(key, str) and (v is None or isinstance(v, (str, bool, int, float))) for key, v in info.items()
    ):
        raise ValueError("the tiled fit's info must map names to plain scalars")
    return {"t": t, "mu": mu, "chunks": chunks, "info": info}
