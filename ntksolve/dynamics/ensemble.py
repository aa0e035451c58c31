"""The trained infinite ensemble: mean and covariance of the linearised network's outputs."""

from __future__ import annotations

import numpy as np

from ntksolve._validation import as_real_array, check_choice, check_diag_reg, check_finite, ridge_shift
from ntksolve.dynamics.operator import check_train_kernel
from ntksolve.dynamics.rules import GradientFlow
from ntksolve.dynamics.spectral import regularised_eigh

POSTERIORS = ("ntk", "nngp")

#: Test rows per block of the variance diagonal: bounds the (rows, N) temporaries.
_VARIANCE_BLOCK = 512


class EnsemblePredictor:
    """Mean and covariance of the trained infinite-width ensemble (NTK-GP), at any time.

    Made by :func:`gradient_descent_mse_ensemble`; call it as
    ``predictor(t, nngp_test_train, ntk_test_train, nngp_test_test=None, compute_cov=False, posterior="ntk")``.

    Parameters
    ----------
    nngp_train_train, ntk_train_train, y_train, learning_rate, diag_reg
        As in :func:`gradient_descent_mse_ensemble`.

    Attributes
    ----------
    learning_rate, diag_reg : float
    n_train, n_outputs : int
    """

    def __init__(self, nngp_train_train, ntk_train_train, y_train, learning_rate=1.0, *, diag_reg=0.0):
        self.rule = GradientFlow(learning_rate)
        self.learning_rate = self.rule.learning_rate
        self.diag_reg = check_diag_reg(diag_reg)
        K, fk = check_train_kernel(nngp_train_train, "nngp_train_train")
        Th, ft = check_train_kernel(ntk_train_train, "ntk_train_train")
        if fk is not None or ft is not None:
            raise ValueError("the ensemble takes traced (N, N) infinite-width kernels (they are diagonal over outputs)")
        if K.shape != Th.shape:
            raise ValueError(f"nngp_train_train {K.shape} and ntk_train_train {Th.shape} must have the same shape")
        N = K.shape[0]
        y = as_real_array(y_train, "y_train")
        if y.ndim not in (1, 2) or y.shape[0] != N:
            raise ValueError(f"y_train must have shape (N,) or (N, k) with N = {N}, got {y.shape}")
        y = np.asarray(y, dtype=np.float64)
        check_finite(y, "y_train")
        self.n_train, self.n_outputs = N, (1 if y.ndim == 1 else y.shape[1])
        self._y_shape = y.shape
        self._Y = y.reshape(N, -1)
        self._K = np.asarray(K, dtype=np.float64)
        self._size = y.size
        self._lam, self._V, self._null = _regularised_eigh(Th, self.diag_reg, "ntk_train_train")
        self._G = None  # Vᵀ K V, for the covariance
        self._nngp = None

    def __call__(self, t, nngp_test_train, ntk_test_train, nngp_test_test=None, compute_cov=False, posterior="ntk"):
        return self.predict(t, nngp_test_train, ntk_test_train, nngp_test_test, compute_cov, posterior)

    def predict(self, t, nngp_test_train, ntk_test_train, nngp_test_test=None, compute_cov=False, posterior="ntk"):
        """Ensemble mean (and covariance) on test inputs after ``t`` steps of gradient flow.

        With ``A_t = Θ* Θ⁻¹ (I − e^{−sΘ})`` (``s = ηt/(Nk)``, null modes dropped):
        ``mean = A_t y``, ``cov = K** − A_t K*ᵀ − K* A_tᵀ + A_t K A_tᵀ`` (``K`` unregularised).
        ``posterior="nngp"`` instead gives the NNGP posterior (Bayesian inference with the NNGP
        prior): ``mean = K* (K + reg)⁺ y``, ``cov = K** − K* (K + reg)⁺ K*ᵀ``, with ``reg`` the same
        ``diag_reg · mean(diag K)``; ``t`` must then be ``np.inf`` (or None).

        Parameters
        ----------
        t : float or array_like, shape (T,)
            Steps; ``np.inf`` gives the NTK-GP posterior.
        nngp_test_train : array_like, shape (M, N)
            ``K(X*, X)``.
        ntk_test_train : array_like, shape (M, N)
            ``Θ(X*, X)``.
        nngp_test_test : array_like, shape (M, M), optional
            ``K(X*, X*)``; needed for the covariance.
        compute_cov : bool
        posterior : {"ntk", "nngp"}

        Returns
        -------
        mean : ndarray, shape (M,) or (M, k), with a leading ``T`` for an array ``t``
        cov : ndarray, shape (M, M), with a leading ``T`` for an array ``t`` (only with ``compute_cov``)
            Symmetric; the same for every output column.
        """
        check_choice(posterior, "posterior", POSTERIORS)
        N = self.n_train
        Ks = self._check_cross(nngp_test_train, "nngp_test_train")
        M = Ks.shape[0]
        Kss = None
        if compute_cov:
            if nngp_test_test is None:
                raise ValueError("compute_cov=True needs nngp_test_test, the (M, M) NNGP kernel of the test inputs")
            Kss = as_real_array(nngp_test_test, "nngp_test_test")
            if Kss.shape != (M, M):
                raise ValueError(f"nngp_test_test must have shape {(M, M)}, got {Kss.shape}")
            Kss = np.asarray(Kss, dtype=np.float64)
            check_finite(Kss, "nngp_test_test")
        if posterior == "nngp":
            if t is not None and not (np.ndim(t) == 0 and np.isposinf(t)):
                raise ValueError("posterior='nngp' is the t = inf Bayesian posterior; pass t=np.inf (or None)")
            if self._nngp is None:
                self._nngp = _regularised_eigh(self._K, self.diag_reg, "nngp_train_train")
            mu, U, null = self._nngp
            inv = np.where(null, 0.0, 1.0 / np.where(null, 1.0, mu))
            B = Ks @ U
            mean = (B * inv) @ (U.T @ self._Y)
            mean = mean.reshape((M,) + self._y_shape[1:])
            if not compute_cov:
                return mean
            cov = Kss - (B * inv) @ B.T
            return mean, _psd_safe(cov)
        Th = self._check_cross(ntk_test_train, "ntk_test_train")
        if Th.shape != Ks.shape:
            raise ValueError(f"ntk_test_train {Th.shape} and nngp_test_train {Ks.shape} must have the same shape")
        ts, scalar = self.rule.check_times(t)
        T = ts.size
        V = self._V
        _, h = self.rule.mode_coefficients(self._lam, self._null, ts, self._size)
        B = Th @ V  # (M, N)
        P = V.T @ self._Y  # (N, c)
        c = P.shape[1]
        mean = (B @ (h.T[:, :, None] * P[:, None, :]).reshape(N, T * c)).reshape(M, T, c).transpose(1, 0, 2)
        mean = mean.reshape((T, M) + self._y_shape[1:])
        if not compute_cov:
            return mean[0] if scalar else mean
        if self._G is None:
            self._G = V.T @ self._K @ V
        C = Ks @ V  # K* V: then A_t K*ᵀ = (B h_t) Cᵀ
        cov = np.empty((T, M, M))
        for i in range(T):
            W = B * h[i]  # A_t V
            X = W @ C.T
            cov[i] = _psd_safe(Kss - X - X.T + (W @ self._G) @ W.T)
        return (mean[0], cov[0]) if scalar else (mean, cov)

    def variance(self, t, nngp_test_train, ntk_test_train, nngp_test_diag):
        """Diagonal of the test covariance at one time ``t``, without forming the covariance.

        With ``W = Θ* V h_t`` (``A_t V``) and ``C = K* V``, the covariance
        ``K** − A_t K*ᵀ − K* A_tᵀ + A_t K A_tᵀ`` has the diagonal
        ``diag(K**) − 2 rowsum(W ∘ C) + rowsum((W G) ∘ W)`` with ``G = Vᵀ K V``: ``O(M N²)`` work and
        no ``(M, M)`` array. Equal, to rounding, to the diagonal of :meth:`predict`'s covariance,
        clipped at zero the same way.

        Parameters
        ----------
        t : float
            Steps of gradient flow (``np.inf`` allowed).
        nngp_test_train, ntk_test_train : array_like, shape (M, N)
        nngp_test_diag : array_like, shape (M,)
            ``diag K(X*, X*)``.

        Returns
        -------
        var : ndarray, shape (M,)
        """
        ts, scalar = self.rule.check_times(t)
        if not scalar:
            raise ValueError("variance takes one time t; call it once per time")
        Ks = self._check_cross(nngp_test_train, "nngp_test_train")
        Th = self._check_cross(ntk_test_train, "ntk_test_train")
        if Th.shape != Ks.shape:
            raise ValueError(f"ntk_test_train {Th.shape} and nngp_test_train {Ks.shape} must have the same shape")
        kss = as_real_array(nngp_test_diag, "nngp_test_diag")
        if kss.shape != (Ks.shape[0],):
            raise ValueError(f"nngp_test_diag must have shape {(Ks.shape[0],)}, got {kss.shape}")
        kss = np.asarray(kss, dtype=np.float64)
        check_finite(kss, "nngp_test_diag")
        V = self._V
        _, h = self.rule.mode_coefficients(self._lam, self._null, ts, self._size)
        if self._G is None:
            self._G = V.T @ self._K @ V
        M = Ks.shape[0]
        var = np.empty(M)
        for i in range(0, M, _VARIANCE_BLOCK):
            rows = slice(i, i + _VARIANCE_BLOCK)
            W = (Th[rows] @ V) * h[0]
            C = Ks[rows] @ V
            var[rows] = kss[rows] - 2.0 * np.einsum("ij,ij->i", W, C) + np.einsum("ij,ij->i", W @ self._G, W)
        return np.maximum(var, 0.0)

    def _check_cross(self, k, name):
        K = as_real_array(k, name)
        if K.ndim != 2 or K.shape[1] != self.n_train:
            raise ValueError(f"{name} must have shape (M, {self.n_train}) (test × train, traced), got {K.shape}")
        K = np.asarray(K, dtype=np.float64)
        check_finite(K, name)
        return K


def _regularised_eigh(A, diag_reg, what):
    """``(lam, V, null)`` of ``A + diag_reg · mean(diag A) · I`` in float64."""
    return regularised_eigh(A, ridge_shift(diag_reg, np.diagonal(A)), np.float64, what)


def _psd_safe(cov):
    """Symmetrise and clip rounding-level negative variances to 0."""
    cov = (cov + cov.T) / 2
    d = np.einsum("ii->i", cov)
    np.maximum(d, 0.0, out=d)
    return cov


def gradient_descent_mse_ensemble(nngp_train_train, ntk_train_train, y_train, learning_rate=1.0, *, diag_reg=0.0):
    """The infinite ensemble of networks trained by gradient flow on MSE (NTK-GP at ``t = ∞``).

    Parameters
    ----------
    nngp_train_train : array_like, shape (N, N)
        NNGP kernel ``K`` of the training inputs (the prior covariance of ``f_0``).
    ntk_train_train : array_like, shape (N, N)
        NTK ``Θ`` of the training inputs.
    y_train : array_like, shape (N,) or (N, k)
    learning_rate : float, default 1.0
    diag_reg : float, default 0.0
        Added as ``diag_reg · mean(diag Θ)`` to ``Θ`` where it is decomposed (and to ``K`` for the
        NNGP posterior); ``K`` in ``A K Aᵀ`` stays unregularised.

    Returns
    -------
    predictor : EnsemblePredictor
        ``predictor(t, nngp_test_train, ntk_test_train, nngp_test_test=None, compute_cov=False,
        posterior="ntk")`` → ``mean`` or ``(mean, cov)``.
    """
    return EnsemblePredictor(nngp_train_train, ntk_train_train, y_train, learning_rate, diag_reg=diag_reg)
