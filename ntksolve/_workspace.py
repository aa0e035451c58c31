"""Scratch arrays kept from one call to the next.

Private. The empirical NTK's activations, derivatives, deltas and Gram buffers are large, short-lived
and of the same sizes call after call. A fresh array of that size is page-faulted anew on its first
touch (the allocator gives such memory back to the system when it is freed): for the nine 16 MiB
float64 arrays of an N = 1024, width 2048 NTK that page-faulting measured a twentieth of the whole
kernel's time (README, "Performance"). :func:`empty` hands
out views of buffers kept here instead, up to ``_config.WORKSPACE_BYTES`` in total (0 turns the
cache off; beyond it, plain fresh arrays).

A buffer is free again once no array made from it is alive: every view numpy makes of it (slices,
reshapes, the views of views) refers to the buffer itself, so its reference count tells. Nothing is
handed out twice while in use, by this thread or another.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np

from ntksolve import _config

_LOCK = threading.Lock()
_BUFFERS: list = []  # 1-D uint8 arrays, referred to by this list alone when free


def _count(buffers, i: int) -> int:
    # never bound to a local name, which would add a reference
    return sys.getrefcount(buffers[i])


# what the count reads for a buffer the list alone refers to (interpreters differ in whether the
# argument's own reference counts), measured the same way
_ALONE = _count([np.empty(1, dtype=np.uint8)], 0)


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _free(i: int) -> bool:
    return _count(_BUFFERS, i) <= _ALONE


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array, like ``np.empty(shape, dtype)``, from a kept buffer
    where one is free (the smallest that fits)."""
    dtype = np.dtype(dtype)
    need = int(np.prod(shape)) * dtype.itemsize
    limit = _config.WORKSPACE_BYTES
    if need == 0 or need > limit:
        return np.empty(shape, dtype=dtype)
    with _LOCK:
        fits = [i for i in range(len(_BUFFERS)) if _BUFFERS[i].nbytes >= need and _free(i)]
        if fits:
            i = min(fits, key=lambda j: _BUFFERS[j].nbytes)
        else:
            kept = sum(b.nbytes for b in _BUFFERS)
            if kept + need > limit:
                # make room by dropping free buffers too small for this, smallest first
                small = sorted((j for j in range(len(_BUFFERS)) if _free(j)), key=lambda j: _BUFFERS[j].nbytes)
                drop = set()
                for j in small:
                    if kept + need <= limit:
                        break
                    drop.add(j)
                    kept -= _BUFFERS[j].nbytes
                if kept + need > limit:
                    return np.empty(shape, dtype=dtype)
                _BUFFERS[:] = [_BUFFERS[j] for j in range(len(_BUFFERS)) if j not in drop]
            _BUFFERS.append(np.empty(need, dtype=np.uint8))
            i = len(_BUFFERS) - 1
        return _BUFFERS[i][:need].view(dtype).reshape(shape)


def clear() -> None:
    """Drop every kept buffer that is free (those in use go when their arrays do)."""
    with _LOCK:
        _BUFFERS[:] = [_BUFFERS[i] for i in range(len(_BUFFERS)) if not _free(i)]


def kept_bytes() -> int:
    """Bytes of the buffers kept now, in use or free."""
    with _LOCK:
        return sum(b.nbytes for b in _BUFFERS)


__all__ = ["clear", "empty", "kept_bytes"]
