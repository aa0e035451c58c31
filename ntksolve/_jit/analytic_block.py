"""The pair kernel of the analytic NNGP/NTK: one block of columns of one output row, carried
through all layers (:func:`_row_block`); one layer's Hermite series of a block, :func:`series_block`
(also the activation map of a Network's analytic kernels, :mod:`ntksolve._jit.network_analytic`).

Private: the row drivers of :mod:`ntksolve._jit.analytic` call it a cache-sized block of columns
at a time (``_COLUMN_BLOCK``). Each layer is the pair map of its activation and method (closed
form, the logistic scale mixture, Gauss-Hermite, or the Hermite series), then the NNGP/NTK step
:func:`ntksolve._jit.expectations.next_layer`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ntksolve._jit.analytic_points import GAUSS_HERMITE, MIXTURE, SERIES
from ntksolve._jit.expectations import (
    closed_form_rows,
    gauss_hermite_expectations,
    logistic_expectations_block,
    next_layer,
)
from ntksolve._jit.hermite_series import series_expectations_block


@njit(cache=True, error_model="numpy")
def _row_block(nngp, ntk, i, j0, j1, var1, var2, rule, work):
    """Transform ``nngp[i, j0:j1]`` (holding the input Gram) and fill ``ntk[i, j0:j1]``, in place.

    Closed forms and the mixture go layer by layer over the whole block (loops over columns that
    vectorise); Gauss-Hermite goes pair by pair, the pair's ``Sigma12`` and ``Theta`` carried
    through the layers in registers.

    Parameters
    ----------
    nngp, ntk : ndarray, shape (N1, N2)
        Outputs; on entry ``nngp[i, j0:j1]`` is ``<x_i, x'_j>``.
    i, j0, j1 : int
        Row and half-open column range.
    var1 : ndarray, shape (depth + 1, N1)
    var2 : ndarray, shape (depth + 1, N2)
        Per-point variances ``Sigma^{l+1}(x, x)`` of the row and column points.
    rule : tuple
        ``(scale, sw2, sb2, depth, code, prm, method, wphi1, wdphi1, nodes, weights, lo, hi, ser1,
        ser2)``, the same for every row:

        - ``scale, sw2, sb2`` (float): ``sigma_w^2 / d``, ``sigma_w^2``, ``sigma_b^2``;
        - ``depth, code, method`` (int); ``prm`` (float, float), the activation's parameters;
        - ``wphi1, wdphi1`` (ndarray, shape (depth, N1, n)): outer Gauss-Hermite factors of the
          row points (shape ``(0, 0, 0)`` for the other methods);
        - ``nodes, weights`` (ndarray, shape (n,)): the method's rule (see
          :func:`ntksolve._jit.analytic_points._diagonal_recursion`);
        - ``lo, hi`` (ndarray of int64, shape (n,)): Gauss-Hermite inner-node ranges (empty for
          the other methods);
        - ``ser1, ser2`` (tuple): series pieces of the row and column points, ``(coef, rinv, a0,
          level_terms, levels, even)`` (``ntksolve.kernels._analytic_rules.series_pieces``; empty
          unless SERIES).
    work : tuple of 3 ndarrays
        The series' per-thread scratch, shapes (8, B), (T_cap, B), (2, B) (``B`` the column block).
    """
    scale, sw2, sb2, depth, code, prm, method, wphi1, wdphi1, nodes, weights, lo, hi, ser1, ser2 = rule
    # Slices indexed from 0: with a non-negative loop index numba drops its negative-index
    # wrap-around, and only then does LLVM vectorise the loops below.
    k_blk = nngp[i, j0:j1]
    t_blk = ntk[i, j0:j1]
    n = k_blk.shape[0]
    for j in range(n):
        s = scale * k_blk[j] + sb2
        k_blk[j] = s
        t_blk[j] = s
    if method == GAUSS_HERMITE:
        for j in range(n):
            s12 = k_blk[j]
            t = t_blk[j]
            for l in range(depth):
                e_phi, e_dphi = gauss_hermite_expectations(
                    code,
                    prm,
                    var1[l, i],
                    var2[l, j0 + j],
                    s12,
                    wphi1[l, i],
                    wdphi1[l, i],
                    nodes,
                    weights,
                    lo,
                    hi,
                )
                s12, t = next_layer(sw2, sb2, e_phi, e_dphi, t)
            k_blk[j] = s12
            t_blk[j] = t
        return
    if method == SERIES:
        e_phi_blk, e_dphi_blk = work[2][0], work[2][1]
        for l in range(depth):
            series_block(code, var1[l, i], var2[l, j0:j1], k_blk, n, ser1, ser2, l, i, j0, nodes, weights, work)
            for j in range(n):
                k_blk[j], t_blk[j] = next_layer(sw2, sb2, e_phi_blk[j], e_dphi_blk[j], t_blk[j])
        return
    if method == MIXTURE:
        s11_blk = np.empty(n)
        e_phi_blk = np.empty(n)
        e_dphi_blk = np.empty(n)
        det_blk = np.empty(n)
        for l in range(depth):
            s11_blk[:] = var1[l, i]
            logistic_expectations_block(
                code, s11_blk, var2[l, j0:j1], k_blk, n, nodes, weights, e_phi_blk, e_dphi_blk, det_blk
            )
            for j in range(n):
                k_blk[j], t_blk[j] = next_layer(sw2, sb2, e_phi_blk[j], e_dphi_blk[j], t_blk[j])
        return
    for l in range(depth):
        closed_form_rows(code, prm, var1[l, i], var2[l, j0:j1], k_blk, t_blk, n, next_layer, sw2, sb2)


@njit(cache=True, error_model="numpy")
def series_block(code, s11, s22, s12, n, ser1, ser2, l, i, j0, mix_var, mix_w, work):
    """Layer ``l``'s Hermite-series map of the pairs ``(i, j0 + j)``, ``j < n``, into ``work[2]``:
    :func:`ntksolve._jit.hermite_series.series_expectations_block` (``code``, ``s11``, ``s22``,
    ``s12``, ``n``, ``mix_var``, ``mix_w`` as there) with its per-point arguments taken from the
    series pieces ``ser1`` (the row points) and ``ser2`` (the column points), ``(coef, rinv, a0,
    level_terms, levels, even)`` of :func:`ntksolve.kernels._analytic_rules.series_pieces`,
    indexed by layer ``l``, row ``i`` and the columns from ``j0``. ``work``: scratch of shapes
    (8, >= n) and (T_cap, >= n), then the output (2, >= n), ``E[phi phi]`` and ``E[phi' phi']``.
    """
    coef1, rinv1, a0_1, level_terms, levels, even = ser1
    coef2, rinv2, a0_2 = ser2[0], ser2[1], ser2[2]
    scratch, gathered, outs = work
    series_expectations_block(
        code,
        s11,
        s22,
        s12,
        n,
        rinv1[l, i],
        rinv2[l, j0 : j0 + n],
        a0_1[l, i],
        a0_2[l, j0 : j0 + n],
        coef1,
        coef2,
        l,
        i,
        j0,
        level_terms[l],
        levels,
        even,
        mix_var,
        mix_w,
        outs[0],
        outs[1],
        scratch,
        gathered,
    )
