"""Closed-form layer maps of the piecewise-linear, trigonometric, Gaussian and monomial activations.

Private: the dispatch :func:`ntksolve._jit.expectations.with_closed_form` calls these (for one pair
and for the pair loops); the partial derivatives the scikit-learn kernels need are in
:mod:`ntksolve._jit.gp`. Each ``f(prm, s11, s22, s12)`` (``prm`` the activation's parameters, used
by abrelu and the monomials only) maps the covariance ``(s11, s22, s12)`` of a centred Gaussian
pair ``(u, v)`` to ``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])``; ``docs/conventions.md`` derives them:

- abrelu ``a min(x, 0) + b max(x, 0) = b relu(x) - a relu(-x)``, with ``r = sqrt(det)``,
  ``theta = atan2(r, s12)``::

      E[phi phi]   = ((a - b)^2 r + ((a^2 + b^2)(pi - theta) + 2ab theta) s12) / (2 pi)
      E[phi' phi'] = ((a^2 + b^2)(pi - theta) + 2ab theta) / (2 pi)

- sin, cos, with ``m = (s11 + s22) / 2``: ``E[sin sin] = e^{-m} sinh s12``,
  ``E[cos cos] = e^{-m} cosh s12``; their derivatives swap the two.
- gaussian ``exp(-x^2/2)``, with ``D = (1 + s11)(1 + s22) - s12^2 = 1 + s11 + s22 + det``:
  ``E[phi phi] = D^{-1/2}``, ``E[phi' phi'] = s12 D^{-3/2}``.
- monomial ``x^n`` (Isserlis): ``E[u^n v^n] = sum_j A_{n,j} s12^{n-2j} (s11 s22)^j`` with
  ``A_{n,0} = n!``, ``A_{n,j+1} = A_{n,j} (n-2j)(n-2j-1) / (4 (j+1)^2)``; ``E[phi' phi'] =
  n^2 E[u^{n-1} v^{n-1}]``.

Only arithmetic, ``sqrt`` and the functions of :mod:`ntksolve._jit.scalar_math`, so a pair of
identical points (``s11 = s22 = s12``) gets the point's own value to the bit on every path.
"""

from __future__ import annotations

import math

from numba import njit

from ntksolve._jit.scalar_math import atan2_upper, exp_sinh_cosh

_PI = math.pi
_INV_2PI = 1.0 / (2.0 * math.pi)


@njit(cache=True, error_model="numpy")
def abrelu_angle_terms(s11, s22, s12):
    """``(r, theta)``: ``r = sqrt(max(det, 0))`` and ``theta = atan2(r, s12)`` in ``[0, pi]``."""
    r = math.sqrt(max(s11 * s22 - s12 * s12, 0.0))
    return r, atan2_upper(r, s12)


@njit(cache=True, error_model="numpy")
def abrelu_expectations(prm, s11, s22, s12):
    """The abrelu layer map, ``prm = (a, b)`` (module docstring).

    A zero variance makes that pre-activation 0, where ``phi'(0) = a``: ``E[phi' phi']`` is then
    ``a^2`` (both zero) or ``a (a + b) / 2`` (one zero), and ``E[phi phi] = 0`` (``r = s12 = 0``).

    Returns
    -------
    e_phi, e_dphi : float
    """
    a, b = prm
    r, theta = abrelu_angle_terms(s11, s22, s12)
    step = ((a * a + b * b) * (_PI - theta) + 2.0 * a * b * theta) * _INV_2PI
    e_phi = (a - b) * (a - b) * r * _INV_2PI + step * s12
    if s11 * s22 > 0.0:
        return e_phi, step
    return e_phi, (a * a if s11 + s22 == 0.0 else 0.5 * a * (a + b))


@njit(cache=True, error_model="numpy")
def sin_expectations(prm, s11, s22, s12):
    """``(E[sin u sin v], E[cos u cos v]) = e^{-m} (sinh s12, cosh s12)``, ``m = (s11 + s22) / 2``."""
    return exp_sinh_cosh(0.5 * (s11 + s22), s12)


@njit(cache=True, error_model="numpy")
def cos_expectations(prm, s11, s22, s12):
    """``(E[cos u cos v], E[sin u sin v]) = e^{-m} (cosh s12, sinh s12)`` (``cos' = -sin``)."""
    sh, ch = exp_sinh_cosh(0.5 * (s11 + s22), s12)
    return ch, sh


@njit(cache=True, error_model="numpy")
def gaussian_determinant(s11, s22, s12):
    """``D = (1 + s11)(1 + s22) - s12^2``, as ``1 + s11 + s22 + max(det, 0)`` (exact at identical points)."""
    return 1.0 + s11 + s22 + max(s11 * s22 - s12 * s12, 0.0)


@njit(cache=True, error_model="numpy")
def gaussian_expectations(prm, s11, s22, s12):
    """``(D^{-1/2}, s12 D^{-3/2})`` for ``phi(x) = exp(-x^2/2)``, ``phi'(x) = -x exp(-x^2/2)``."""
    inv_root = 1.0 / math.sqrt(gaussian_determinant(s11, s22, s12))
    return inv_root, s12 * inv_root * inv_root * inv_root


@njit(cache=True, error_model="numpy")
def monomial_moment(n, s11, s22, s12):
    """``(E[u^n v^n], its derivative in P = s11 s22)`` by Isserlis' theorem, ``n >= 0``.

    With ``n = 2J + rho``: ``E = s12^rho sum_{j=0}^{J} A_j (s12^2)^{J-j} P^j``, summed by Horner's
    rule in ``s12^2`` (no negative powers, so ``s12 = 0`` is harmless). ``E[u^0 v^0] = 1``. The
    partial in ``s11`` is ``s22`` times the returned derivative (and 1 <-> 2).
    """
    coef = 1.0
    for k in range(2, n + 1):
        coef *= k  # A_0 = n!
    c2 = s12 * s12
    prod = s11 * s22
    acc = coef
    dacc = 0.0
    p_prev = 1.0  # P^(j-1)
    m = n
    for j in range(1, n // 2 + 1):
        coef = coef * (m * (m - 1)) / (4.0 * j * j)
        m -= 2
        p_j = p_prev * prod
        dacc = dacc * c2 + j * coef * p_prev
        acc = acc * c2 + coef * p_j
        p_prev = p_j
    if n % 2 == 1:
        return s12 * acc, s12 * dacc
    return acc, dacc


@njit(cache=True, error_model="numpy")
def monomial_expectations(prm, s11, s22, s12):
    """``(E[u^n v^n], n^2 E[u^{n-1} v^{n-1}])`` for ``phi(x) = x^n``, ``prm = (n, 0)``."""
    n = int(prm[0])
    e_phi, _ = monomial_moment(n, s11, s22, s12)
    e_prev, _ = monomial_moment(n - 1, s11, s22, s12)
    return e_phi, n * n * e_prev


__all__ = [
    "abrelu_expectations",
    "abrelu_angle_terms",
    "sin_expectations",
    "cos_expectations",
    "gaussian_determinant",
    "gaussian_expectations",
    "monomial_moment",
    "monomial_expectations",
]
