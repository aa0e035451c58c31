"""Data of ``ntksolve compare``: the embedded default set, and the readers of the user's files.

The embedded default is generated, so nothing is downloaded. A smooth regression in ``d = 8``
dimensions, standardised::

    x ~ N(0, I_8)
    y = sin(2 <w1, x>) + 0.5 cos(<w2, x>) <w1, x> + noise_std * eps,    w1, w2 ~ N(0, I/8)

The inputs have unit variance per feature (``<x, x>/d ~ 1``, the scale the NTK conventions
normalise by) and the targets are centred and scaled by the training set's mean and standard
deviation. It is smooth enough that a wide network's kernel fits it in a hundred steps and rough
enough (two interacting directions, a frequency-2 sine) that a linear model does not.

The readers (:func:`read_csv`, :func:`read_npz`) and :func:`standardise` (from
:mod:`ntksolve.standardisation`, re-exported here) raise ``ValueError``
with the file, line and column of what they refuse; nothing is dropped, imputed or cast silently.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import os
import zipfile
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from ntksolve.standardisation import standardise


class RegressionData(NamedTuple):
    """Train and test splits: ``X_train`` (N, d), ``y_train`` (N, 1), ``X_test`` (M, d), ``y_test`` (M, 1).

    Attributes
    ----------
    X_train : ndarray, shape (N, d)
    y_train : ndarray, shape (N, 1)
    X_test : ndarray, shape (M, d)
    y_test : ndarray, shape (M, 1)
    description : str
        Where the data come from and how they were prepared (for reports).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    description: str


def default_regression(
    n_train: int = 256, n_test: int = 256, n_features: int = 8, noise_std: float = 0.0, random_state: int = 0
) -> RegressionData:
    """The default data set of ``ntksolve compare`` (see the module docstring).

    Parameters
    ----------
    n_train, n_test : int, default 256
    n_features : int, default 8
    noise_std : float, default 0.0
        Standard deviation of Gaussian label noise, before standardisation.
    random_state : int, default 0
        Seed of the inputs, the target function and the noise; fixed so the default is one data set.

    Returns
    -------
    RegressionData
    """
    rng = np.random.default_rng(random_state)
    n = n_train + n_test
    X = rng.standard_normal((n, n_features))
    w1 = rng.standard_normal(n_features) / np.sqrt(n_features)
    w2 = rng.standard_normal(n_features) / np.sqrt(n_features)
    u, v = X @ w1, X @ w2
    y = np.sin(2.0 * u) + 0.5 * np.cos(v) * u
    if noise_std:
        y = y + noise_std * rng.standard_normal(n)
    mu, sd = y[:n_train].mean(), y[:n_train].std()
    y = ((y - mu) / sd)[:, None]
    desc = (
        f"generated smooth regression, d={n_features}: y = sin(2<w1,x>) + 0.5 cos(<w2,x>) <w1,x>"
        f"{f' + {noise_std} noise' if noise_std else ''}, x ~ N(0, I); targets standardised; "
        f"{n_train} train / {n_test} test points (seed {random_state})"
    )
    return RegressionData(X[:n_train], y[:n_train], X[n_train:], y[n_train:], desc)


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------
#: Cells read as missing (compared lower-case, stripped); refused with their line and column.
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none", "?", "-"})

#: Delimiters :class:`csv.Sniffer` may choose from. A space means "runs of whitespace", as in
#: ``numpy.savetxt`` output.
DELIMITERS = ",;\t| "

#: Bytes of the file the dialect is sniffed from (whole lines): enough rows for the Sniffer's
#: per-line consistency vote, little enough to stay instant.
SNIFF_BYTES = 64 * 1024

#: Files at least this large have their numbers parsed by pandas when it is installed: a 20000 x 50
#: file (18 MB) reads in 1.35 s instead of 2.5 s (measured on a loaded 2-core machine; the text is
#: still tokenised once by ``csv`` for the header and row checks), and below this size pandas' own
#: import (0.3-0.5 s) costs more than it saves. Same results either way (see :func:`_parse_pandas`).
PANDAS_MIN_BYTES = 4 * 1024 * 1024

DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'", " ": "whitespace"}


class CSVData(NamedTuple):
    """What :func:`read_csv` read: ``X`` (N, d), ``y`` (N, 1), the names, and how it was read.

    Attributes
    ----------
    X : ndarray, shape (N, d), float64
        The feature columns.
    y : ndarray, shape (N, 1), float64
        The target column.
    feature_names : list of str
        The ``d`` feature columns' names (``column1``, ... without a header).
    target : str
        The target column's name.
    delimiter : str
        The delimiter found.
    has_header : bool
        Whether the first row was a header.
    notes : list of str
        What the reader decided that the user should know.
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: List[str]
    target: str
    delimiter: str
    has_header: bool
    notes: List[str]


def _parse_cell(text: str) -> float:
    """A number, ``nan`` for a missing token; ``ValueError`` for anything else (``inf`` is a number)."""
    c = text.strip()
    if c.lower() in MISSING_TOKENS:
        return math.nan
    return float(c)


def _is_number(text: str) -> bool:
    c = text.strip()
    if c.lower() in MISSING_TOKENS:
        return False
    try:
        float(c)
    except ValueError:
        return False
    return True


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror or exc}") from exc
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"{path}: the file is UTF-16 text; save it as UTF-8 (or plain ASCII) CSV")
    if b"\x00" in raw[:SNIFF_BYTES]:
        raise ValueError(f"{path}: not a text file (it contains NUL bytes); expected a CSV")
    try:
        return raw.decode("utf-8-sig")  # -sig: a byte-order mark never becomes part of the first name
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 CSV") from None


class _Whitespace(csv.Dialect):
    """Fields separated by runs of whitespace (``str.split``), as ``numpy.savetxt`` aligns them."""

    delimiter = " "
    quotechar = '"'
    doublequote = True
    skipinitialspace = True
    lineterminator = "\n"
    quoting = csv.QUOTE_MINIMAL


def _sniff(path: str, text: str) -> csv.Dialect:
    sample = text[:SNIFF_BYTES]
    if len(text) > SNIFF_BYTES and "\n" in sample:
        sample = sample[: sample.rindex("\n") + 1]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=DELIMITERS)
    except csv.Error:
        # The Sniffer wants the same characters between fields on every line; aligned columns
        # (runs of spaces of varying length) are still whitespace-separated if every line splits
        # into the same number of fields.
        counts = {len(ln.split()) for ln in sample.splitlines() if ln.strip()}
        if len(counts) == 1 and counts.pop() >= 2:
            return _Whitespace()
        # Lines that disagree (a ragged row in a short file): take the first line's delimiter, so
        # that the row-by-row check names the line that differs.
        first = next((ln for ln in sample.splitlines() if ln.strip()), "")
        count, delim = max((first.count(c), c) for c in DELIMITERS.replace(" ", ""))
        if count:

            class _First(csv.excel):
                delimiter = delim

            return _First()
        raise ValueError(
            f"{path}: cannot tell how the columns are separated (first line: {first[:60]!r}); need at least "
            "two columns (features and a target) separated by ',', ';', tab, '|' or spaces"
        ) from None
    return dialect


def _tokenise(text: str, dialect) -> Tuple[List[Tuple[int, List[str]]], int]:
    """``(line number, cells)`` of every line that has a non-blank cell, and the number of rows of
    delimiters only (``,,,``: spreadsheets export them below the data), which are skipped too."""
    rows = []
    if dialect.delimiter == " ":
        for i, line in enumerate(text.splitlines(), start=1):
            cells = line.split()
            if cells:
                rows.append((i, cells))
        return rows, 0
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    start, empty = 1, 0
    for cells in reader:
        if any(c.strip() for c in cells):
            rows.append((start, cells))
        elif len(cells) > 1:
            empty += 1
        start = reader.line_num + 1
    return rows, empty


def _decide_header(path: str, first: List[str], delimiter: str) -> bool:
    """A header is a row of names, data a row of numbers (and missing tokens); refuse a mix.

    Deciding from the numbers is exact here because every data cell must be numeric, where
    ``csv.Sniffer.has_header`` guesses from column types and lengths (and calls an all-numeric
    first row a header when its widths differ from the rows below)."""
    numeric = [_is_number(c) for c in first]
    if not any(numeric):
        return True
    names = [c.strip() for c, isnum in zip(first, numeric) if not isnum and c.strip().lower() not in MISSING_TOKENS]
    if names:
        raise ValueError(
            f"{path}, line 1: the first row mixes names and numbers ({', '.join(repr(c.strip()) for c in first[:6])}"
            f"{', ...' if len(first) > 6 else ''}): a header row must name every column, and a data row must hold "
            f"only numbers{_number_hint(names[0], delimiter)}"
        )
    return False


def _number_hint(cell: str, delimiter: str) -> str:
    c = cell.strip()
    if delimiter != "," and "," in c and _is_number(c.replace(",", ".", 1)):
        return (
            "; it looks like a decimal comma: ntksolve reads '.' as the decimal point, so convert the file "
            "(e.g. save it from the spreadsheet with '.' decimals)"
        )
    if delimiter == "," and ";" in c:
        return "; the file may be ';'-separated with decimal commas: convert the decimal commas to points"
    if c.startswith(("$", "€", "£")) or c.endswith("%"):
        return "; remove units and currency signs"
    return ""


def _parse_stdlib(path, rows, header, n_cols, delimiter):
    data = np.empty((len(rows), n_cols))
    for r, (line, cells) in enumerate(rows):
        if len(cells) != n_cols:
            what = "the header has" if header is not None else "the first row has"
            raise ValueError(f"{path}, line {line}: {len(cells)} fields, but {what} {n_cols}")
        for j, cell in enumerate(cells):
            try:
                data[r, j] = _parse_cell(cell)
            except ValueError:
                col = header[j] if header is not None else f"column{j + 1}"
                raise ValueError(
                    f"{path}, line {line}, column {col!r}: {cell.strip()!r} is not a number (every column must be "
                    f"numeric){_number_hint(cell, delimiter)}"
                ) from None
    return data


def _pandas_available() -> bool:
    return importlib.util.find_spec("pandas") is not None


def _parse_pandas(path, dialect, skip_lines, n_rows, n_cols) -> Optional[np.ndarray]:
    """The same array as the stdlib parser, or ``None`` whenever pandas' answer could differ.

    pandas only ever accelerates the common case, a clean all-numeric file: it parses with Python's
    own correctly rounded ``strtod`` (``float_precision="round_trip"`` before pandas 3), with no missing-value
    tokens, and its result is used only if its shape is that of the tokenised file and every
    value is finite. Anything else (a missing value, a stray text cell, a ragged row) goes to the
    stdlib parser, which alone produces the error message. So both paths accept the same files and
    return the same numbers."""
    import pandas as pd

    kw = dict(
        header=None,
        skiprows=skip_lines,
        dtype=np.float64,
        na_filter=False,
        encoding="utf-8-sig",
        skip_blank_lines=True,
        engine="c",
    )
    if int(pd.__version__.split(".")[0]) < 3:
        # pandas < 3 parses with its own fast xstrtod, off by an ulp at times; 3.x deprecates the
        # option, its default agreeing with float() (measured on 200000 random 18-24 digit values)
        kw["float_precision"] = "round_trip"
    if dialect.delimiter == " ":
        kw["sep"] = r"\s+"
    else:
        kw.update(
            sep=dialect.delimiter,
            quotechar=dialect.quotechar or '"',
            skipinitialspace=bool(dialect.skipinitialspace),
            doublequote=True,
        )
    try:
        arr = pd.read_csv(path, **kw).to_numpy(dtype=np.float64)
    except Exception:  # noqa: BLE001 - any refusal: the stdlib path decides and explains
        return None
    if arr.shape != (n_rows, n_cols) or not np.all(np.isfinite(arr)):
        return None
    return arr


def read_csv(path, target: Optional[str] = None) -> CSVData:
    """Read a numeric CSV: dialect sniffed, header detected, every cell a number.

    Parameters
    ----------
    path : str or path-like
        UTF-8 text (a byte-order mark is dropped), columns separated by ``,``, ``;``, tab, ``|``
        or whitespace (found by :class:`csv.Sniffer`), quoted cells allowed.
    target : str, optional
        The column to predict (default: the last); the others are the features.

    Returns
    -------
    CSVData
        ``X`` (N, d) and ``y`` (N, 1) as float64, the names, the delimiter, whether a header was
        found, and ``notes`` (what the reader decided that the user should know).

    Raises
    ------
    ValueError
        Unreadable text; no delimiter; a first row that mixes names and numbers; empty or repeated
        column names; ragged rows; a cell that is not a number (with a hint for decimal commas);
        missing or non-finite values (their lines and columns); fewer than two columns or one row.

    Notes
    -----
    The first row is a header exactly when none of its cells is a number; without one the columns
    are named ``column1``, ``column2``, ... (a note says so). Files of at least
    :data:`PANDAS_MIN_BYTES` are parsed by pandas when it is installed, with the same results.
    """
    path = os.fspath(path)
    text = _read_text(path)
    dialect = _sniff(path, text)
    rows, n_empty = _tokenise(text, dialect)
    if not rows:
        raise ValueError(f"{path}: the file is empty")
    delim = dialect.delimiter
    notes = []
    if n_empty:
        notes.append(f"skipped {n_empty} row(s) with no values (delimiters only)")
    has_header = _decide_header(path, rows[0][1], delim)
    if has_header:
        header = [c.strip() for c in rows[0][1]]
        for j, h in enumerate(header):
            if not h:
                raise ValueError(
                    f"{path}, line {rows[0][0]}: column {j + 1} has no name in the header (a saved row index? "
                    "drop that column or name it)"
                )
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:
            raise ValueError(f"{path}, line {rows[0][0]}: repeated column name(s) {', '.join(map(repr, dup))}")
        body = rows[1:]
    else:
        header = None
        body = rows
    n_cols = len(rows[0][1])
    names = header if header is not None else [f"column{j + 1}" for j in range(n_cols)]
    if not has_header:
        notes.append(f"no header row (the first row is numbers): the columns are named column1 ... column{n_cols}")
    if n_cols < 2:
        raise ValueError(f"{path}: one column only; need at least one feature column besides the target")
    if not body:
        raise ValueError(f"{path}: need at least one data row after the header")
    if target is None:
        target = names[-1]
    elif target not in names:
        extra = " (the file has no header row)" if header is None else ""
        raise ValueError(f"{path}: no column named {target!r} (--target); the columns are{extra}: {', '.join(names)}")

    data = None
    if os.path.getsize(path) >= PANDAS_MIN_BYTES and _pandas_available():
        data = _parse_pandas(path, dialect, rows[0][0] if has_header else rows[0][0] - 1, len(body), n_cols)
    if data is None:
        data = _parse_stdlib(path, body, header, n_cols, delim)
    bad = ~np.isfinite(data)
    if bad.any():
        rr, cc = np.nonzero(bad)
        where = ", ".join(f"line {body[i][0]} column {names[j]!r}" for i, j in zip(rr[:5], cc[:5]))
        more = f" and {rr.size - 5} more" if rr.size > 5 else ""
        raise ValueError(
            f"{path}: {rr.size} missing or non-finite value(s) ({where}{more}); remove or impute them first"
        )
    jt = names.index(target)
    feats = [h for j, h in enumerate(names) if j != jt]
    X = np.ascontiguousarray(np.delete(data, jt, axis=1))
    y = np.ascontiguousarray(data[:, jt : jt + 1])
    return CSVData(X, y, feats, target, delim, has_header, notes)


# ---------------------------------------------------------------------------------------------
# .npz
# ---------------------------------------------------------------------------------------------
def read_npz(path):
    """Read an ``.npz`` with arrays ``X`` (N, d), ``y`` (N,) or (N, k), optional ``X_test``, ``y_test``.

    Parameters
    ----------
    path : str or path-like
        An ``.npz`` file (read without pickles).

    Returns
    -------
    X, y, X_test, y_test : ndarray (float64) ; the test arrays are ``None`` when absent

    Raises
    ------
    ValueError
        Unreadable file, missing arrays, non-numeric or complex arrays (never cast to real), wrong
        shapes, non-finite values.
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):  # np.load would read it as a .npy or a pickle, and say so
        raise ValueError(
            f"cannot read {path!r}: {os.path.basename(path)!r} is not an .npz archive (a zip of arrays); "
            "write one with numpy.savez(path, X=X, y=y)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
        raise ValueError(f"cannot read {path!r} as .npz: {exc}") from exc
    if "X" not in arrays or "y" not in arrays:
        raise ValueError(f"{path}: an .npz needs arrays named 'X' and 'y' (found: {', '.join(arrays) or 'none'})")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{path}: give both X_test and y_test, or neither")
    out = []
    for name in ("X", "y", "X_test", "y_test"):
        a = arrays.get(name)
        if a is None:
            out.append(None)
            continue
        if np.iscomplexobj(a):
            raise ValueError(
                f"{path}: array {name!r} is complex ({a.dtype}); ntksolve needs real numbers: pass the real part, "
                "or the real and imaginary parts as separate columns"
            )
        if not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"{path}: array {name!r} is not numeric (dtype {a.dtype})")
        a = np.asarray(a, dtype=np.float64)
        if name.startswith("y") and a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ValueError(
                f"{path}: array {name!r} must be 2-D{' (or 1-D)' if name.startswith('y') else ''}, got shape {a.shape}"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{path}: array {name!r} has {int(np.sum(~np.isfinite(a)))} missing or non-finite values")
        out.append(a)
    X, y, Xt, yt = out
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: X has {X.shape[0]} rows but y has {y.shape[0]}")
    if Xt is not None and (Xt.shape[0] != yt.shape[0] or Xt.shape[1] != X.shape[1] or yt.shape[1] != y.shape[1]):
        raise ValueError(f"{path}: X_test/y_test shapes {Xt.shape}/{yt.shape} do not match X/y {X.shape}/{y.shape}")
    return X, y, Xt, yt


__all__ = ["default_regression", "RegressionData", "read_csv", "read_npz", "standardise", "CSVData"]
