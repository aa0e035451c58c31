"""Numba kernels of the empirical NTK: fused forward/backward elementwise passes and Gram combines.

Private. The matrix products (forward ``h W^T``, backward ``delta W``, and the Gram matrices) go to
BLAS; these kernels do everything around them in one pass over memory each: bias, activation and
its derivative in the forward pass; the derivative product in the backward pass; and the
layer-wise NTK sum ``Theta += G_delta * (c * G_h + beta)`` (``docs/conventions.md``).

The kernels are deliberately serial and ``nogil``. They sit between BLAS calls, and OpenBLAS's
worker threads busy-wait for a while after each call: a ``parallel=True`` kernel then fights them
for the two cores, an order of magnitude slower per NTK than the serial kernel (the README's
threading notes give the figures). Instead, :mod:`ntksolve.kernels.empirical_terms` runs them on
its own Python threads, each on its rows or pieces, with BLAS single-threaded in each. These
passes are memory-bound, and serial kernels also compile several times faster. Results are
bit-identical run to run. Nothing is compiled at import time.
"""

from __future__ import annotations

from numba import njit

from ntksolve._jit.activations import ABRELU, RELU, act, act_dact


@njit(cache=True, nogil=True)
def bias_act(pre, b, ws, bs, code, prm, h, dphi, want_deriv):
    """``h = phi(ws * pre + bs * b)`` row by row, and ``dphi = phi'(z)`` when ``want_deriv``.

    Parameters
    ----------
    pre : (N, n) array, ``h^{l-1} W^T``
    b : (n,) array
    ws, bs : scalars, weight and bias scale of the layer
    code : int, activation code
    prm : (float, float), the activation's parameters (``ntksolve._jit.activations``)
    h : (N, n) output array
    dphi : (N, n) output array; may be ``pre`` itself (each entry is read before it is written),
        and is not touched when ``want_deriv`` is False
    want_deriv : bool

    Returns
    -------
    finite : bool
        Whether every pre-activation ``z`` was finite. From finite inputs and parameters an
        infinite or NaN ``z`` is an overflow, which most activations would hide (relu(-inf) = 0,
        tanh(inf) = 1): the caller refuses the result.
    """
    N, n = pre.shape
    # The activation and the derivative flag are chosen once per row, not per element: with
    # the branch in the inner loop LLVM neither unswitches nor vectorises it (7x slower for relu).
    # The finiteness test counts z - z != 0 (NaN for an infinite or NaN z) in an integer, which
    # vectorises and costs next to nothing (a float reduction would not vectorise).
    neg, pos_slope = prm
    bad = 0
    for i in range(N):
        if code == RELU:
            if want_deriv:
                for j in range(n):
                    z = ws * pre[i, j] + bs * b[j]
                    bad += (z - z) != 0.0
                    pos = z > 0.0
                    h[i, j] = 0.0 if z <= 0.0 else z
                    dphi[i, j] = 1.0 if pos else 0.0
            else:
                for j in range(n):
                    z = ws * pre[i, j] + bs * b[j]
                    bad += (z - z) != 0.0
                    h[i, j] = 0.0 if z <= 0.0 else z
        elif code == ABRELU:  # leaky relu, abs: vectorised like relu
            if want_deriv:
                for j in range(n):
                    z = ws * pre[i, j] + bs * b[j]
                    bad += (z - z) != 0.0
                    pos = z > 0.0
                    h[i, j] = pos_slope * z if pos else neg * z
                    dphi[i, j] = pos_slope if pos else neg
            else:
                for j in range(n):
                    z = ws * pre[i, j] + bs * b[j]
                    bad += (z - z) != 0.0
                    h[i, j] = pos_slope * z if z > 0.0 else neg * z
        elif want_deriv:
            for j in range(n):
                z = ws * pre[i, j] + bs * b[j]
                bad += (z - z) != 0.0
                h[i, j], dphi[i, j] = act_dact(code, prm, z)
        else:
            for j in range(n):
                z = ws * pre[i, j] + bs * b[j]
                bad += (z - z) != 0.0
                h[i, j] = act(code, prm, z)
    return bad == 0


@njit(cache=True, nogil=True)
def scale_by_deriv(g, dphi, ws):
    """In place ``g[i, a, :] *= ws * phi'(z(x_i))``: turns ``delta^{l+1} W^{l+1}`` into ``delta^l``.

    Parameters
    ----------
    g : (N, k, n) array, modified in place
    dphi : (N, n) array
    ws : scalar
    """
    N, k, n = g.shape
    for i in range(N):
        for a in range(k):
            for j in range(n):
                g[i, a, j] *= ws * dphi[i, j]


@njit(cache=True, nogil=True)
def combine_traced(theta, Gd, Gh, c, beta, lower, has_delta, r0, r1, c0, c1):
    """``theta += Gd * (c * Gh + beta)`` on the box ``[r0:r1, c0:c1]``; with ``lower`` only entries
    ``j <= i`` are read and written.

    The box is given by its bounds rather than as views, so that the arrays stay C-contiguous:
    one compiled layout, and an inner loop LLVM vectorises.

    Parameters
    ----------
    theta : (N1, N2) array, accumulated in place
    Gd : (N1, N2) array, the (traced) Gram of backpropagated deltas; ignored when ``has_delta`` is
        False (the readout layer, whose delta Gram is 1)
    Gh : (N1, N2) array, the Gram of the layer's inputs
    c, beta : scalars, ``sigma_w^2 / n_{l-1}`` and ``sigma_b^2`` (standard parameterisation: 1, 1)
    lower, has_delta : bool
    r0, r1, c0, c1 : int, the box (``0, N1, 0, N2``: the whole array)
    """
    for i in range(r0, r1):
        stop = min(i + 1, c1) if lower else c1
        if has_delta:
            for j in range(c0, stop):
                theta[i, j] += Gd[i, j] * (c * Gh[i, j] + beta)
        else:
            for j in range(c0, stop):
                theta[i, j] += c * Gh[i, j] + beta


@njit(cache=True, nogil=True)
def combine_full(theta, Gd, Gh, c, beta, lower, has_delta, r0, r1, c0, c1):
    """Full-kernel layer term ``theta[i, j, a, b] += Gd[i k + a, j k + b] * (c Gh[i, j] + beta)``
    on the box ``[r0:r1, c0:c1]`` of input pairs.

    Parameters
    ----------
    theta : (N1, N2, k, k) array, accumulated in place
    Gd : (N1 k, N2 k) array; with ``lower`` only its lower triangle is valid, and only blocks
        ``j <= i`` of theta are written (the diagonal block reads ``Gd`` transposed above the
        diagonal). Ignored when ``has_delta`` is False (readout: the delta Gram is ``I_k``).
    Gh : (N1, N2) array
    c, beta : scalars
    lower, has_delta : bool
    r0, r1, c0, c1 : int, the box (``0, N1, 0, N2``: the whole array)
    """
    k = theta.shape[2]
    for i in range(r0, r1):
        stop = min(i + 1, c1) if lower else c1
        for j in range(c0, stop):
            bij = c * Gh[i, j] + beta
            for a in range(k):
                if not has_delta:
                    theta[i, j, a, a] += bij
                    continue
                for b in range(k):
                    r = i * k + a
                    s = j * k + b
                    if lower and s > r:
                        g = Gd[s, r]
                    else:
                        g = Gd[r, s]
                    theta[i, j, a, b] += g * bij


@njit(cache=True, nogil=True)
def mirror_lower_traced(theta):
    """Copy the lower triangle of a square (N, N) array to the upper one, in place."""
    N = theta.shape[0]
    for i in range(N):
        for j in range(i + 1, N):
            theta[i, j] = theta[j, i]


@njit(cache=True, nogil=True)
def mirror_lower_full(theta):
    """``theta[i, j, a, b] = theta[j, i, b, a]`` for ``j > i``, in place, on (N, N, k, k)."""
    N, _, k, _ = theta.shape
    for i in range(N):
        for j in range(i + 1, N):
            for a in range(k):
                for b in range(k):
                    theta[i, j, a, b] = theta[j, i, b, a]
