"""Block sizes of a tiled kernel: :func:`resolve_chunks` and the offsets of the blocks."""

from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple

import numpy as np


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _axis_chunks(spec, n: int, what: str) -> Tuple[int, ...]:
    """Block sizes along one axis of length ``n``: a positive int, or sizes summing to ``n``."""
    if _is_int(spec):
        if spec <= 0:
            raise ValueError(f"chunks must be a positive int or a sequence of positive ints, got {spec!r}")
        c = int(spec)
        return tuple([c] * (n // c) + ([n % c] if n % c else []))
    try:
        sizes = tuple(spec)
    except TypeError:
        raise ValueError(
            f"chunks must be a positive int or a sequence of positive ints summing to the number of "
            f"inputs, got {spec!r}"
        ) from None
    if not sizes or not all(_is_int(s) and s > 0 for s in sizes):
        raise ValueError(f"chunks for {what} must be positive ints, got {sizes!r}")
    if sum(sizes) != n:
        raise ValueError(f"chunks for {what} must tile its {n} inputs exactly, but {sizes!r} sums to {sum(sizes)}")
    return tuple(int(s) for s in sizes)


def resolve_chunks(chunks, n1: int, n2: Optional[int] = None) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Row and column block sizes of an ``(n1, n2)`` kernel.

    Parameters
    ----------
    chunks : int, sequence of int, or pair of those
        An int ``c``: blocks of ``c`` inputs (the last one smaller) on both axes. A sequence of ints
        summing to ``n1``: the row blocks, also used for the columns when ``n2`` is ``None`` (a
        symmetric kernel) or equals ``n1``. A pair ``(rows, cols)``, one per axis, each an int or a
        sequence, at least one of them a sequence: two ints are block sizes, ``(16, 37)`` the
        blocks of 53 inputs (``(16, [37])`` gives rows of 16 and one column block of 37).
    n1 : int
        Rows, the number of inputs ``X1``.
    n2 : int, optional
        Columns, the number of inputs ``X2``; ``None`` for the symmetric ``K(X1, X1)``.

    Returns
    -------
    rows, cols : tuple of int
        Summing to ``n1`` and ``n2``.

    Raises
    ------
    ValueError
        Non-positive sizes, or sizes that do not sum to the data's length.
    """
    if chunks is None:
        raise ValueError("chunks is required: a positive int (inputs per tile edge) or per-axis block sizes")
    symmetric = n2 is None
    n2 = n1 if symmetric else n2
    if (
        not _is_int(chunks)
        and isinstance(chunks, (tuple, list))
        and len(chunks) == 2
        and not all(_is_int(c) for c in chunks)
    ):
        if symmetric:
            rows = _axis_chunks(chunks[0], n1, "the rows")
            cols = _axis_chunks(chunks[1], n2, "the columns")
            if rows != cols:
                raise ValueError(f"a symmetric kernel needs the same blocks on both axes, got {rows!r} and {cols!r}")
            return rows, cols
        return _axis_chunks(chunks[0], n1, "X1"), _axis_chunks(chunks[1], n2, "X2")
    rows = _axis_chunks(chunks, n1, "X1" if not symmetric else "X")
    if _is_int(chunks) or symmetric or n2 == n1:
        return rows, rows if n2 == n1 else _axis_chunks(chunks, n2, "X2")
    raise ValueError(
        f"chunks {tuple(chunks)!r} sum to len(X1) = {n1} but X2 has {n2} inputs; give one sequence per "
        "axis, chunks=(chunks_X1, chunks_X2), or an int"
    )


def _offsets(sizes: Sequence[int]) -> np.ndarray:
    """Start of every block and the end of the last: shape ``(len(sizes) + 1,)``, int64."""
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _is_regular(sizes: Sequence[int]) -> bool:
    """All blocks equal but a last one no larger: the block grid a Zarr chunk grid can hold."""
    return all(s == sizes[0] for s in sizes[:-1]) and sizes[-1] <= sizes[0]


__all__ = ["resolve_chunks"]
