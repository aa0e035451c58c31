"""Atomic file writes: a hidden temporary file beside the destination, fsynced and renamed over
it, so a path never holds a half-written file (private).

:func:`write_atomically` is what every file ntksolve writes goes through: the saved estimators
(:func:`ntksolve.sklearn.persistence.save`), the compare report's JSON and its figures. A writer
killed part-way leaves its temporary file behind; the next write of the same path removes those
whose writer is gone (this machine: its process ended; another machine: older than a day).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import time

#: A temporary file of another machine (or of the writer before this one) counts as abandoned
#: once this old; those of this machine as soon as their process has gone.
_STALE_TEMP_SECONDS = 24 * 3600


def write_atomically(path, write) -> str:
    """Write a file whole or not at all: ``write(fh)`` into a hidden temporary file (binary) in the
    same folder, flushed to disk and renamed over ``path``.

    A full disk, a Ctrl-C or an error in ``write`` leaves ``path`` as it was (the previous file, or
    none) and no temporary file behind; a kill leaves one, which the next write of ``path``
    removes. The file gets mode 0666 less the umask, as ``open`` would give it. A ``path`` that is a
    symbolic link is written through, as ``open`` would: its target is replaced and the link kept
    (renaming over the link itself would turn it into a file and leave the target stale).

    Parameters
    ----------
    path : str or os.PathLike
    write : callable
        ``write(fh)`` writes the whole content to the binary file object ``fh``.

    Returns
    -------
    path : str
    """
    path = os.fspath(path)
    dest = os.path.realpath(path)  # the file a link names, beside which its temporary file goes
    directory = os.path.dirname(dest)
    base = os.path.basename(dest)
    _remove_stale_temps(directory, base)
    fd, tmp = _create_temp(directory, base)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)  # atomic on POSIX and Windows: readers see the old file or the new one
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)
    return path


def _host_tag():
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


#: ``.<base>.<host>-<pid>.<random>.tmp``, and the ``mkstemp`` names of the first writer.
_TEMP_NAME = re.compile(r"(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[0-9a-f]{16}\.tmp")
_OLD_TEMP_NAME = re.compile(r"[a-z0-9_]{8}\.tmp")


def _create_temp(directory, base):
    """Open a new hidden temporary file beside ``base`` (mode 0666 less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{_host_tag()}-{os.getpid()}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {base!r} in {directory!r}")


def _pid_alive(pid):
    if os.name == "nt":  # os.kill would terminate it: keep such files until they are old
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, another user's
        return True
    return True


def _remove_stale_temps(directory, base):
    """Remove the temporary files of ``base`` whose writer is gone (killed during a save)."""
    prefix = f".{base}."
    try:
        names = os.listdir(directory)
    except OSError:
        return
    host, now = _host_tag(), time.time()
    for name in names:
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        match = _TEMP_NAME.fullmatch(rest)
        if match is None and _OLD_TEMP_NAME.fullmatch(rest) is None:
            continue
        full = os.path.join(directory, name)
        try:
            if match is not None and match["host"] == host:
                pid = int(match["pid"])
                stale = pid != os.getpid() and not _pid_alive(pid)
            else:
                stale = now - os.lstat(full).st_mtime > _STALE_TEMP_SECONDS
            if stale:
                os.unlink(full)
        except OSError:
            pass


def _fsync_directory(directory):
    """Make the rename durable (POSIX; Windows cannot open a directory)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["write_atomically"]
