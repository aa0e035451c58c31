"""The targets as a Gaussian process on a decomposed kernel, with amplitude and noise fitted by
type-II maximum likelihood: :class:`KernelGP`.

Per output column ``c`` the model is ``y_c - f_0 = g_c + eps_c``, ``g_c ~ GP(0, a_c Θ)``,
``eps_c ~ N(0, σ_c² I)``, with ``Θ`` the kernel already decomposed for training (its eigenvalues
``θ_j`` and eigenvectors ``V``). With ``z = Vᵀ (y - f_0)`` (projected once, ``O(N² k)``) the log
marginal likelihood is a sum over modes,

    log p(y_c) = -1/2 Σ_j [ z_jc² / (a_c θ_j + σ_c²) + log(a_c θ_j + σ_c²) + log 2π ],

so each evaluation costs ``O(N)``. For a fixed ratio ``ρ = σ²/a`` its maximum over ``a`` is closed
form, ``a(ρ) = (1/N) Σ_j z_j² / (θ_j + ρ)``, leaving a one-dimensional search over ``log ρ``.

Posterior mean and covariance on test inputs, with ``B = Θ(X*, X) V`` and ``w_j = a / (a θ_j + σ²)``:

    mean = B (w ∘ z)
    cov  = a Θ(X*, X*) - B diag(a w) Bᵀ + σ² I          (a new observation: noise included)

At ``t = ∞`` the mean is kernel ridge regression with ridge ``ρ``: it is the trained network's
output exactly when ``ρ`` equals the training ridge ``diag_reg · mean(diag Θ)``.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize

from ntksolve._validation import as_real_array, check_finite
from ntksolve.dynamics.squares import power_of_two_scale, squares_in_range

__all__ = ["KernelGP"]

#: The search over ``ρ = σ²/a``: this many log-spaced ratios, in decades of ``mean(θ)``, then a
#: refinement between the best one's neighbours (``_RATIO_XATOL`` where the slope gives no root). Below ``1e-10 mean(θ)`` the noise is
#: below what the decomposition resolves; above ``1e6 mean(θ)`` the kernel explains nothing.
_RATIO_DECADES = (-10.0, 6.0)
_RATIO_POINTS = 65
_RATIO_XATOL = 1e-10


class KernelGP:
    """Gaussian-process model of the targets on a decomposed kernel (see the module docstring).

    Made by :meth:`ntksolve.dynamics.MSEPredictor.kernel_gp` from the predictor's own
    decomposition, or directly.

    Parameters
    ----------
    eigenvalues : array_like, shape (N,)
        Eigenvalues ``θ`` of the (unregularised) kernel ``Θ``; rounding-level negatives count as 0.
    eigenvectors : array_like, shape (N, N)
        Orthonormal eigenvectors ``V`` (columns).
    residuals : array_like, shape (N,) or (N, k)
        ``y - f_0``: the targets minus the prior mean (the outputs at initialisation).

    Attributes
    ----------
    n_train, n_outputs : int
    """

    def __init__(self, eigenvalues, eigenvectors, residuals):
        V = as_real_array(eigenvectors, "eigenvectors")
        if V.ndim != 2 or V.shape[0] != V.shape[1]:
            raise ValueError(f"eigenvectors must be a square (N, N) array, got shape {V.shape}")
        N = V.shape[0]
        theta = as_real_array(eigenvalues, "eigenvalues")
        if theta.shape != (N,):
            raise ValueError(f"eigenvalues must have shape ({N},), got {theta.shape}")
        R = as_real_array(residuals, "residuals")
        if R.ndim not in (1, 2) or R.shape[0] != N:
            raise ValueError(f"residuals must have shape ({N},) or ({N}, k), got {R.shape}")
        for arr, name in ((theta, "eigenvalues"), (V, "eigenvectors"), (R, "residuals")):
            check_finite(arr, name)
        self.n_train = N
        self.n_outputs = 1 if R.ndim == 1 else R.shape[1]
        self._theta = np.maximum(np.asarray(theta, dtype=np.float64), 0.0)
        self._V = V if V.dtype.kind == "f" else V.astype(np.float64)
        # the one O(N² k) step: the residuals in the eigenbasis, in the eigenvectors' precision
        self._Z = np.asarray(self._V.T @ R.reshape(N, -1).astype(self._V.dtype, copy=False), dtype=np.float64)

    def residual_scale(self):
        """Per output column, a power of two ``s`` near ``max |z|`` where ``z²`` would overflow or
        underflow (``max |z|`` outside :func:`~ntksolve.dynamics.squares.squares_in_range`), else 1: :meth:`scaled` by it fits in range.

        Returns
        -------
        s : ndarray, shape (k,)
        """
        m = np.max(np.abs(self._Z), axis=0)
        safe = np.array([squares_in_range(v) for v in m], dtype=bool)
        return np.where(safe, 1.0, power_of_two_scale(self._Z, axis=0))

    def scaled(self, scale):
        """The same model of the residuals divided by ``scale`` per column (no second projection).

        Parameters
        ----------
        scale : array_like, shape (k,)
            Positive; a power of two (:meth:`residual_scale`) divides exactly.

        Returns
        -------
        KernelGP
            Its amplitudes and noise variances are these over ``scale²``; its log-likelihood is this
            one plus ``N log scale`` per column.
        """
        scale = np.asarray(scale, dtype=np.float64)
        if scale.shape != (self.n_outputs,) or not np.all(np.isfinite(scale) & (scale > 0)):
            raise ValueError(f"scale must be {self.n_outputs} finite positive numbers, got {scale!r}")
        new = object.__new__(KernelGP)
        new.__dict__.update(self.__dict__)
        new._Z = self._Z / scale[None, :]
        return new

    # -- the evidence
    def _parameters(self, amplitude, noise_variance, *, allow_exact=False):
        """``(a, σ²)`` as float64 ``(k,)``; TypeError / ValueError for anything but finite values ≥ 0
        and ``σ² > 0``, below which the Gaussian is degenerate on a singular kernel (``allow_exact``:
        also ``a = σ² = 0``, the column that :meth:`maximise` found fitted exactly)."""
        out = []
        for value, name in ((amplitude, "amplitude"), (noise_variance, "noise_variance")):
            arr = as_real_array(value, name)
            if arr.dtype.kind == "b":
                raise TypeError(f"{name} must be a real number or an array of them, got {value!r}")
            arr = np.asarray(arr, dtype=np.float64)
            if arr.ndim == 0:
                arr = np.full(self.n_outputs, float(arr))
            if arr.shape != (self.n_outputs,):
                raise ValueError(
                    f"{name} must be a number or an array of shape ({self.n_outputs},) "
                    f"(one per output), got shape {arr.shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be finite, got {arr.tolist()}")
            out.append(arr)
        a, s2 = out
        if np.any(a < 0):
            raise ValueError(f"amplitude must be >= 0 (it scales a covariance), got {a.tolist()}")
        if np.any((s2 <= 0) & ~(allow_exact & (a == 0) & (s2 == 0))):
            raise ValueError(
                f"noise_variance must be > 0 (a variance; 0 makes the model degenerate), got {s2.tolist()}"
            )
        return a, s2

    def log_marginal_likelihood(self, amplitude, noise_variance):
        """``log p(y_c - f_0)`` under ``N(0, a_c Θ + σ_c² I)``, per output column.

        Parameters
        ----------
        amplitude : float or array_like, shape (k,)
            ``a ≥ 0``.
        noise_variance : float or array_like, shape (k,)
            ``σ² > 0``.

        Returns
        -------
        lml : ndarray, shape (k,)
        """
        a, s2 = self._parameters(amplitude, noise_variance)
        c = a[None, :] * self._theta[:, None] + s2[None, :]  # (N, k) variances of the modes
        return -0.5 * np.sum(self._Z**2 / c + np.log(c), axis=0) - 0.5 * self.n_train * np.log(2 * np.pi)

    def maximise(self):
        """Type-II maximum likelihood ``(a, σ²)`` of every output column.

        The profile over ``ρ = σ²/a`` (``a`` in closed form) is evaluated on a log grid spanning
        ``1e-10 … 1e6 · mean(θ)``, then refined between the best point's neighbours (the root of
        its slope, to rounding).
        A column whose residuals are exactly zero (a constant target, standardised) is fitted
        perfectly by the prior mean: ``a = σ² = 0`` there.

        Returns
        -------
        amplitude, noise_variance : ndarray, shape (k,)
        log_marginal_likelihood : ndarray, shape (k,)
            At the maximum (``+inf`` for a zero column).
        """
        N, k = self.n_train, self.n_outputs
        scale = float(np.mean(self._theta)) or 1.0
        grid = np.log(scale) + np.log(10.0) * np.linspace(*_RATIO_DECADES, _RATIO_POINTS)
        Z2 = self._Z**2
        inv = 1.0 / (self._theta[None, :] + np.exp(grid)[:, None])  # (G, N)
        # minus twice the profile log-likelihood, up to constants: N log a(ρ) + Σ log(θ + ρ)
        with np.errstate(divide="ignore"):
            prof = N * np.log((inv @ Z2) / N) - np.sum(np.log(inv), axis=1)[:, None]  # (G, k)
        amp, noise, lml = np.zeros(k), np.zeros(k), np.full(k, np.inf)
        for col in range(k):
            z2 = Z2[:, col]
            if not np.any(z2 > 0):
                continue  # a = σ² = 0, log-likelihood +inf: nothing to explain
            i = int(np.argmin(prof[:, col]))
            log_rho = self._refine(z2, grid[max(i - 1, 0)], grid[i], grid[min(i + 1, grid.size - 1)])
            rho = float(np.exp(log_rho))
            amp[col] = float(np.mean(z2 / (self._theta + rho)))
            noise[col] = amp[col] * rho
        fitted = noise > 0
        if np.any(fitted):
            lml[fitted] = self.log_marginal_likelihood(np.where(fitted, amp, 1.0), np.where(fitted, noise, 1.0))[fitted]
        return amp, noise, lml

    def _refine(self, z2, lo, mid, hi):
        """The maximiser of the profile likelihood in ``log ρ`` near the grid's best point ``mid``.

        The root of the profile's slope (Brent's ``brentq``, to rounding) where it changes sign
        between ``lo`` and ``hi``; otherwise (the best point at an end of the search, a flat or
        rough profile) a bounded minimisation of the profile itself; never worse than ``mid``.
        """
        N, theta = self.n_train, self._theta

        def profile(log_rho):
            w = 1.0 / (theta + np.exp(log_rho))
            return N * np.log(np.mean(z2 * w)) - np.sum(np.log(w))

        def slope(log_rho):  # d profile / d log ρ
            rho = np.exp(log_rho)
            w = 1.0 / (theta + rho)
            return rho * (np.sum(w) - N * np.sum(z2 * w * w) / np.sum(z2 * w))

        if lo < mid < hi and slope(lo) < 0 < slope(hi):
            root = scipy.optimize.brentq(slope, lo, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps)
            if profile(root) <= profile(mid):  # not a local maximum between two minima
                return root
        if lo == hi:
            return mid
        best = scipy.optimize.minimize_scalar(
            profile, bounds=(lo, hi), method="bounded", options={"xatol": _RATIO_XATOL}
        )
        return best.x if best.fun <= profile(mid) else mid

    # -- the posterior
    def predict(self, amplitude, noise_variance, k_test_train, k_test_diag=None, k_test_test=None):
        """Posterior mean of ``y - f_0`` on test inputs, with the variance (or covariance) of a new
        observation there (the noise included).

        Parameters
        ----------
        amplitude, noise_variance : float or array_like, shape (k,)
            ``a ≥ 0`` and ``σ² ≥ 0``; a column with ``a = σ² = 0`` has mean 0 and variance 0.
        k_test_train : array_like, shape (M, N)
            ``Θ(X*, X)``.
        k_test_diag : array_like, shape (M,), optional
            ``diag Θ(X*, X*)``, for the variance.
        k_test_test : array_like, shape (M, M), optional
            ``Θ(X*, X*)``, for the covariance (instead of ``k_test_diag``).

        Returns
        -------
        mean : ndarray, shape (M, k)
        var : ndarray, shape (M, k), with ``k_test_diag``
        cov : ndarray, shape (M, M, k), with ``k_test_test``
        """
        a, s2 = self._parameters(amplitude, noise_variance, allow_exact=True)
        Ks = as_real_array(k_test_train, "k_test_train")
        if Ks.ndim != 2 or Ks.shape[1] != self.n_train:
            raise ValueError(f"k_test_train must have shape (M, {self.n_train}), got {Ks.shape}")
        check_finite(Ks, "k_test_train")
        M = Ks.shape[0]
        if (k_test_diag is None) == (k_test_test is None):
            raise ValueError("pass exactly one of k_test_diag (for the variance) or k_test_test (for the covariance)")
        B = np.asarray(Ks.astype(self._V.dtype, copy=False) @ self._V, dtype=np.float64)  # (M, N)
        c = a[None, :] * self._theta[:, None] + s2[None, :]  # (N, k)
        w = np.divide(a[None, :], c, out=np.zeros_like(c), where=c > 0)  # a / (a θ + σ²)
        mean = B @ (w * self._Z)
        if k_test_diag is not None:
            kss = as_real_array(k_test_diag, "k_test_diag")
            if kss.shape != (M,):
                raise ValueError(f"k_test_diag must have shape ({M},), got {kss.shape}")
            check_finite(kss, "k_test_diag")
            latent = a[None, :] * np.asarray(kss, dtype=np.float64)[:, None] - (B * B) @ (a[None, :] * w)
            return mean, np.maximum(latent, 0.0) + s2[None, :]
        Kss = as_real_array(k_test_test, "k_test_test")
        if Kss.shape != (M, M):
            raise ValueError(f"k_test_test must have shape ({M}, {M}), got {Kss.shape}")
        check_finite(Kss, "k_test_test")
        Kss = np.asarray(Kss, dtype=np.float64)
        cov = np.empty((M, M, self.n_outputs))
        for col in range(self.n_outputs):
            C = a[col] * Kss - (B * (a[col] * w[:, col])) @ B.T
            C = (C + C.T) / 2
            d = np.einsum("ii->i", C)
            np.maximum(d, 0.0, out=d)
            d += s2[col]
            cov[:, :, col] = C
        return mean, cov
