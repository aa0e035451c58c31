"""Standardisation of a data set by its training split: zero mean and unit variance per column,
overflow-free for values anywhere in the float64 range (:func:`standardise`).

The command line's files (:mod:`ntksolve.cli_data`) and the digits (:mod:`ntksolve.digits`) are
scaled this way; :mod:`ntksolve.datasets` re-exports :func:`standardise`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["standardise"]


def _column_scaling(A: np.ndarray):
    """``(c, m, s, constant)`` with ``(A - mean) / std == (A / c - m) / s`` per column, overflow-free.

    Dividing by the column's largest magnitude ``c`` first keeps every square below 1, where
    ``A.std()`` of values near 1e300 squares them to infinity (and turns every feature into 0)."""
    c = np.max(np.abs(A), axis=0)
    constant = np.ptp(A, axis=0) == 0
    c = np.where(c > 0, c, 1.0)
    B = A / c
    m = B.mean(0)
    s = B.std(0)
    s = np.where(constant | (s == 0), 1.0, s)
    return c, m, s, constant


def standardise(X, y, X_test, y_test, feature_names=None, target_name="the target"):
    """Scale features and targets to zero mean and unit variance by the training split.

    With ``y`` and ``y_test`` None only the features are scaled (class labels stay labels, and a
    class absent from the training split is no constant target).

    A constant feature becomes 0 (a note says so); a constant target is refused, since there is
    nothing to learn (and it would become all zeros). Values anywhere in the float64 range are
    scaled without overflow.

    Parameters
    ----------
    X : ndarray, shape (N, d)
        Training features; their column means and spreads scale both feature sets.
    y : ndarray, shape (N, k), or None
        Training targets; their column means and spreads scale both target sets.
    X_test : ndarray, shape (M, d)
    y_test : ndarray, shape (M, k), or None (exactly when ``y`` is)
    feature_names : list of str, optional
        Names for the note on constant features (default ``feature j``).
    target_name : str, default "the target"
        The target's name in the error for a constant target.

    Returns
    -------
    X, y, X_test, y_test : ndarray
        The same shapes, standardised (``y`` and ``y_test`` None when given None).
    notes : list of str

    Raises
    ------
    ValueError
        A constant training target, or test values that overflow after scaling.
    """
    notes = []
    if (y is None) != (y_test is None):
        raise ValueError("give both y and y_test, or neither (features only)")
    targets = y is not None
    if targets:
        cy, my, sy, consty = _column_scaling(y)
        if consty.any():
            j = int(np.argmax(consty))
            raise ValueError(
                f"{target_name} is constant ({y[0, j]:.6g} in every training row): there is nothing to learn; "
                "choose another target column"
            )
    cx, mx, sx, constx = _column_scaling(X)
    if constx.any():
        names = [feature_names[j] if feature_names else f"feature {j}" for j in np.nonzero(constx)[0]]
        notes.append(f"constant in the training split, so 0 after standardising: {', '.join(map(str, names))}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = [(X / cx - mx) / sx, None, (X_test / cx - mx) / sx, None]
        if targets:
            out[1], out[3] = (y / cy - my) / sy, (y_test / cy - my) / sy
    out[0][:, constx] = 0.0
    out[2][:, constx] = 0.0
    for a, what in zip(out[2:], ("test features", "test targets")):
        if a is not None and not np.all(np.isfinite(a)):
            raise ValueError(
                f"the {what} overflow after standardising by the training split: some test values are "
                "beyond 1e300 times the training spread; rescale the data"
            )
    return (*out, notes)
