"""The data of ``ntksolve compare``: the embedded default, the digits, or a CSV/TSV/npz file from
``--data``, split, checked and standardised (:func:`load_data`).

Bad data is a :class:`ntksolve.cli_parser.UsageError` naming the problem and the fix, raised
before any kernel or network is built.
"""

from __future__ import annotations

import os

import numpy as np

from ntksolve.cli_parser import DEFAULT_TEST_SIZE, UsageError
from ntksolve.standardisation import standardise


def _test_size(args) -> float:
    """``--test-size``, or its default when not given."""
    return DEFAULT_TEST_SIZE if args.test_size is None else args.test_size


def _split(X, y, test_size: float, seed: int):
    n = X.shape[0]
    n_test = int(round(test_size * n))
    if n_test < 1 or n - n_test < 2:
        raise UsageError(f"--test-size {test_size} leaves {n - n_test} training and {n_test} test rows of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    te, tr = perm[:n_test], perm[n_test:]
    return X[tr], y[tr], X[te], y[te]


def _check_unscaled(arrays) -> None:
    """With --no-standardize, refuse data whose squared norms overflow float64 (the kernels sum
    ``x_i^2`` over the features, the gaps ``y^2``), before they turn into NaN kernels."""
    for a, what in arrays:
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("ij,ij->i", a, a)
        if not np.all(np.isfinite(sq)):
            raise UsageError(
                f"with --no-standardize the {what} reach {np.max(np.abs(a)):.3g}: their squares overflow float64 in "
                "the kernel; drop --no-standardize (scaling is overflow-free) or rescale the data"
            )


def _one_hot_labels(y, yt):
    """The class labels of one-hot target rows ``(N, k)``, ``k > 1`` (an .npz's ``y``), or ``None``
    when the rows are not one-hot; labels ``(N, 1)`` of a single column as they are."""
    if y.shape[1] == 1:
        return y, yt
    rows = np.concatenate([y, yt])
    if not (np.all((rows == 0) | (rows == 1)) and np.all(rows.sum(axis=1) == 1)):
        return None
    return np.argmax(y, axis=1)[:, None].astype(np.float64), np.argmax(yt, axis=1)[:, None].astype(np.float64)


def _class_rows(y, yt, path):
    """One-hot rows of the class labels 0, 1, ..., K-1 in a file's target column, or of a file's
    one-hot target rows (``--loss cross_entropy``)."""
    k_given = y.shape[1] if y.shape[1] > 1 else None
    pair = _one_hot_labels(y, yt)
    labels = None if pair is None else np.concatenate([pair[0][:, 0], pair[1][:, 0]])
    if labels is None or np.any(labels != np.round(labels)) or np.any(labels < 0):
        raise UsageError(
            f"--loss cross_entropy needs class labels 0, 1, ..., K-1 in the target column (or one-hot rows), but "
            f"{path} holds other numbers (a regression data set?): use --loss mse for it, or --data digits"
        )
    y, yt = pair
    k = int(labels.max()) + 1 if k_given is None else k_given
    if k < 2:
        raise UsageError(f"--loss cross_entropy needs at least two classes; {path} has one")
    present = set(np.unique(labels).astype(np.int64).tolist())
    if len(present) < k:  # a label past a gap would add an output no example trains (1..K, or 0 and 5)
        missing = [c for c in range(k) if c not in present]
        if k_given is not None:
            raise UsageError(
                f"--loss cross_entropy: column {missing[0]} of the {k} one-hot target columns of {path} is 0 in "
                "every row, an output no example trains: drop the unused class columns"
            )
        raise UsageError(
            f"--loss cross_entropy needs class labels 0, 1, ..., K-1, each used, but {path} has no "
            f"example of class {missing[0]} below its largest label {k - 1}: number the classes from 0 "
            "without gaps (labels 1..K: subtract 1)"
        )
    eye = np.eye(k)
    return eye[y[:, 0].astype(np.int64)], eye[yt[:, 0].astype(np.int64)], k


def _load_digits(args):
    from ntksolve.digits import load_digits_split

    spec = args.data.split(":")
    n_rows = None
    if len(spec) > 2 or (len(spec) == 2 and not spec[1].isdigit()):
        raise UsageError(f"--data {args.data!r}: spelled digits or digits:N (N images, a stratified subsample)")
    if len(spec) == 2:
        n_rows = int(spec[1])
    if args.target is not None:
        raise UsageError("--target applies to CSV files; the digits' target is their class")
    try:
        d = load_digits_split(_test_size(args), args.seed, n_rows, standardize=not args.no_standardize)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    y, yt = d.targets(args.loss)
    desc = d.description + (
        "; targets: class labels"
        if args.loss == "cross_entropy"
        else "; targets: centred one-hot rows (0.9 for the class, -0.1 elsewhere)"
    )
    return d.X_train, y, d.X_test, yt, desc, list(d.notes)


def load_data(args):
    """Return ``(X, y, X_test, y_test, description, notes)`` as float64 arrays and a list of notes.

    With ``--loss cross_entropy`` the targets are one-hot rows of the classes (refused, with the
    reason, for a regression target)."""
    from ntksolve import datasets

    ce = getattr(args, "loss", "mse") == "cross_entropy"
    if args.data is not None and (args.data == "digits" or args.data.startswith("digits:")):
        return _load_digits(args)
    if args.data is None:
        if args.target is not None:
            raise UsageError("--target needs --data (the embedded default data has a single target)")
        if args.test_size is not None:
            raise UsageError(
                "--test-size needs --data: the embedded default data has its own test set (256 train / 256 test points)"
            )
        if ce:
            raise UsageError(
                "--loss cross_entropy needs class labels, and the embedded default data is a regression: "
                "use --data digits (or a file whose target column holds class labels)"
            )
        d = datasets.default_regression()
        return d.X_train, d.y_train, d.X_test, d.y_test, d.description, []
    path = args.data
    if os.path.isdir(path):
        raise UsageError(f"--data {path!r} is a folder: give a .csv/.tsv/.txt or an .npz file in it")
    if not os.path.isfile(path):
        raise UsageError(f"--data {path!r}: no such file")
    notes = []
    feats, target = None, "the target"
    try:
        if path.lower().endswith(".npz"):
            if args.target is not None:
                raise UsageError("--target applies to CSV files; an .npz names its arrays X and y")
            X, y, Xt, yt = datasets.read_npz(path)
            desc = f"{path} (npz)"
            if Xt is not None and args.test_size is not None:
                raise UsageError(
                    f"--test-size {args.test_size:g}: {path} holds its own X_test and y_test, which are the test set; "
                    "leave --test-size out, or save the file without them to split its rows"
                )
        elif path.lower().endswith((".csv", ".tsv", ".txt")):
            t = datasets.read_csv(path, args.target)
            X, y, feats, target = t.X, t.y, t.feature_names, t.target
            Xt = yt = None
            notes.extend(t.notes)
            sep = datasets.DELIMITER_NAMES.get(t.delimiter, repr(t.delimiter))
            desc = (
                f"{path} ({sep}-separated, {'header row' if t.has_header else 'no header row'}): target "
                f"{target!r}, features {', '.join(feats)}"
            )
            target = f"target column {target!r}"
        else:
            raise UsageError(f"--data {path!r}: expected a .csv/.tsv/.txt file or an .npz file")
        if Xt is None:
            X, y, Xt, yt = _split(X, y, _test_size(args), args.seed)
            desc += f"; random {_test_size(args):g} test split (seed {args.seed})"
        if ce:
            y, yt, k = _class_rows(y, yt, path)
            desc += f"; {k} classes"
        if args.no_standardize:
            _check_unscaled(((X, "features"), (y, "targets"), (Xt, "test features"), (yt, "test targets")))
        else:
            # class rows stay as they are: only the features are scaled (a class absent from the
            # training split is no constant target)
            X, y_std, Xt, yt_std, more = standardise(X, None if ce else y, Xt, None if ce else yt, feats, target)
            if not ce:
                y, yt = y_std, yt_std
            notes.extend(more)
            desc += (
                "; standardised by the training split" if not ce else "; features standardised by the training split"
            )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return X, y, Xt, yt, desc, notes


__all__ = ["load_data"]
