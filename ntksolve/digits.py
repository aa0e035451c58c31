"""scikit-learn's bundled handwritten digits, as the classification set of ``ntksolve compare``.

``sklearn.datasets.load_digits`` ships with scikit-learn (1797 grey-level 8 x 8 images of the
digits 0-9, 64 features with values 0-16), so nothing is downloaded. :func:`load_digits_split`
draws a stratified train/test split from the seed (every class keeps its share in both), and
standardises the features by the training split (the pixels that are blank in every training
image become 0).

Targets: class labels for cross-entropy; for MSE the **centred one-hot** rows ``e_c - 1/10``
(``0.9`` for the class, ``-0.1`` elsewhere): each row sums to zero, as the outputs of a network at
initialisation do on average, so training fits the class signal rather than a shared offset.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ntksolve.standardisation import standardise

#: Images in the bundled set, and its classes.
N_DIGITS, N_CLASSES = 1797, 10


class DigitsData(NamedTuple):
    """``X_train`` (N, 64), ``X_test`` (M, 64) standardised; ``labels_train`` (N,), ``labels_test`` (M,)
    int in ``[0, 10)``; ``description``; ``notes`` (from standardising)."""

    X_train: np.ndarray
    X_test: np.ndarray
    labels_train: np.ndarray
    labels_test: np.ndarray
    description: str
    notes: list

    def targets(self, loss: str):
        """``(y_train, y_test)`` for ``loss``: one-hot 0/1 rows ``(·, 10)`` for cross-entropy (the
        labels as rows), centred one-hot ``e_c - 1/10`` for MSE."""
        eye = np.eye(N_CLASSES)
        if loss == "cross_entropy":
            return eye[self.labels_train], eye[self.labels_test]
        return eye[self.labels_train] - 1.0 / N_CLASSES, eye[self.labels_test] - 1.0 / N_CLASSES


def load_digits_split(
    test_size: float = 0.25, random_state: int = 0, n_rows: Optional[int] = None, standardize: bool = True
) -> DigitsData:
    """The bundled digits, split into stratified train and test sets.

    Parameters
    ----------
    test_size : float in (0, 1), default 0.25
        Fraction of the rows held out.
    random_state : int, default 0
        Seed of the split (and of the subsample).
    n_rows : int, optional
        Use a stratified subsample of this many images (at least 20, at most 1797); default all.
    standardize : bool, default True
        Scale every feature to zero mean and unit variance by the training split.

    Returns
    -------
    DigitsData
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    n = N_DIGITS if n_rows is None else int(n_rows)
    if not 2 * N_CLASSES <= n <= N_DIGITS:
        raise ValueError(
            f"digits:{n_rows}: the bundled set has {N_DIGITS} images of {N_CLASSES} classes; use "
            f"between {2 * N_CLASSES} and {N_DIGITS} of them"
        )
    n_test = int(round(test_size * n))
    if not N_CLASSES <= n_test <= n - N_CLASSES:
        raise ValueError(
            f"--test-size {test_size} leaves {n - n_test} training and {n_test} test images of {n}: a "
            f"stratified split needs at least {N_CLASSES} (one per class) on each side"
        )
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float64)
    Xtr, Xte, ytr, yte = train_test_split(
        X, y, train_size=n - n_test, test_size=n_test, stratify=y, random_state=random_state
    )
    notes = []
    desc = (
        f"scikit-learn's bundled digits (8x8 images, 10 classes): {n - n_test} train / {n_test} test images, "
        f"stratified split (seed {random_state})"
    )
    if standardize:
        Xtr, _, Xte, _, notes = standardise(Xtr, None, Xte, None, [f"pixel {j}" for j in range(X.shape[1])])
        desc += "; features standardised by the training split"
    return DigitsData(
        np.ascontiguousarray(Xtr), np.ascontiguousarray(Xte), ytr.astype(np.int64), yte.astype(np.int64), desc, notes
    )


__all__ = ["load_digits_split", "DigitsData", "N_DIGITS", "N_CLASSES"]
