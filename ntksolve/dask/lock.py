"""One writer per kernel store: an exclusive lock file beside the store.

A writer claims the store at ``path`` by creating ``path + ".lock"`` atomically (a hard link of a
file already holding its record, which fails if the lock exists; ``O_CREAT | O_EXCL`` where the
file system has no hard links). The record names the holder (pid, host, process start time,
time, a random token), so a refused writer is told who holds the store. A lock whose holder is a
process of this host that no longer exists (killed, crashed) is stale and is broken; a lock held
from another host cannot be checked from here and is never broken automatically.

Why a lock and not just the store's identity: two writers that both find a new store would both
write their identity, the last one winning, and mix their tiles; with the lock the second is
refused before it reads or writes anything.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Optional

#: Attempts at claiming a lock whose stale holder another writer is breaking at the same moment.
_CLAIM_ATTEMPTS = 5


class StoreLockedError(RuntimeError):
    """Another writer holds the kernel store (its lock file names the holder)."""


def lock_path(store_path) -> str:
    """The lock file of the store at ``store_path``: ``<store_path>.lock``, beside the store.

    Of the path with its symbolic links resolved: a store reached through a link to its folder
    must meet the same lock as through its own path, or each of two writers would hold "the" lock.
    """
    return os.path.realpath(os.fspath(store_path)).rstrip(os.sep) + ".lock"


def _process_start(pid: int) -> Optional[str]:
    """The start time of process ``pid`` in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _holder_alive(record: dict) -> Optional[bool]:
    """Whether the lock's holder still runs: ``True``/``False`` on this host, ``None`` elsewhere (unknown)."""
    if record.get("host") != socket.gethostname():
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    if _is_zombie(pid):
        return False
    start = record.get("start")
    now = _process_start(pid)
    return not (start is not None and now is not None and start != now)


def describe_holder(record: Optional[dict]) -> str:
    """``pid 123 on host 'h' since 2024-01-01 12:00:00 UTC``, from a lock record."""
    if not record:
        return "an unknown holder (the lock file could not be read)"
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.get("time", 0)))
    return f"pid {record.get('pid')} on host {record.get('host')!r} since {when}"


def read_lock(store_path) -> Optional[dict]:
    """The record of the lock on the store at ``store_path``; ``None`` if nobody holds it.

    An unreadable lock file gives ``{}`` (held, holder unknown).
    """
    try:
        with open(lock_path(store_path)) as fh:
            record = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _unwritable(exc: OSError, store_path: str) -> OSError:
    """``exc`` (of its own class) saying that the store's folder cannot be written, and what to do."""
    return type(exc)(
        exc.errno,
        f"cannot write the kernel store at {store_path!r}: its folder {os.path.dirname(lock_path(store_path))!r} "
        f"cannot hold files ({exc.strerror}: {exc.filename!r}); choose a path in a writable folder",
    )


class WriterLock:
    """The exclusive writer lock on one kernel store, held between :meth:`acquire` and :meth:`release`.

    Parameters
    ----------
    store_path : str or path-like
        The store; the lock file is ``<store_path>.lock``.

    Raises
    ------
    StoreLockedError
        From :meth:`acquire`: a live process (or one on another host) holds the store.
    """

    def __init__(self, store_path) -> None:
        self.store_path = os.fspath(store_path)
        self.path = lock_path(store_path)
        self.record: Optional[dict] = None

    def acquire(self) -> "WriterLock":
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except OSError as exc:
            raise _unwritable(exc, self.store_path) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": _process_start(os.getpid()),
            "time": time.time(),
            "token": uuid.uuid4().hex,
        }
        for _ in range(_CLAIM_ATTEMPTS):
            if self._claim(record):
                self.record = record
                return self
            holder = read_lock(self.store_path)
            if holder is None:
                continue  # released between the claim and the read: try again
            alive = _holder_alive(holder) if holder else None
            if alive is False:
                self._break(holder)
                continue
            where = (
                ""
                if alive
                else (" (on another host, or unreadable: this process cannot tell whether its holder still runs)")
            )
            raise StoreLockedError(
                f"the kernel store at {self.store_path!r} is being written by {describe_holder(holder)}{where}; "
                "one writer at a time keeps its tiles from mixing. Wait for that writer to finish, or, if it "
                f"is certainly gone, delete the lock file {self.path!r}"
            )
        raise StoreLockedError(  # pragma: no cover - only under a storm of writers breaking stale locks
            f"could not claim the kernel store at {self.store_path!r}: its lock {self.path!r} changed hands "
            f"{_CLAIM_ATTEMPTS} times while this writer tried"
        )

    def _claim(self, record: dict) -> bool:
        """Create the lock file holding ``record``, atomically; ``False`` if it exists."""
        data = json.dumps(record).encode()
        tmp = f"{self.path}.{record['token']}.tmp"
        try:
            fh = open(tmp, "wb")
        except OSError as exc:
            raise _unwritable(exc, self.store_path) from None
        with fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, self.path)  # fails if the lock exists; the lock appears complete
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return True
        finally:
            os.unlink(tmp)

    def _break(self, stale: dict) -> None:
        """Remove a stale lock, unless another writer replaced it meanwhile (then restore that one)."""
        aside = f"{self.path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.path, aside)  # atomic: of two writers breaking it, one moves it
        except FileNotFoundError:
            return
        try:
            with open(aside) as fh:
                moved = json.load(fh)
        except (OSError, ValueError):
            moved = {}
        if moved.get("token") != stale.get("token"):  # a live writer's fresh lock: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:  # pragma: no cover - a third writer claimed it in between
                pass
        os.unlink(aside)

    def held(self) -> bool:
        """Whether the lock file is still this writer's (nobody broke it)."""
        current = read_lock(self.store_path)
        return bool(self.record and current and current.get("token") == self.record["token"])

    def release(self) -> None:
        """Remove the lock file if it is still this writer's."""
        if self.record is not None and self.held():
            os.unlink(self.path)
        self.record = None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["StoreLockedError", "WriterLock", "lock_path", "read_lock", "describe_holder"]
