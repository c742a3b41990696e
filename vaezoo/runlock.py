"""One owner per run directory: a lock file naming the owning process (pid and host), created
atomically, released on exit, and taken over when its owner on this host is dead."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Optional

from vaezoo.errors import RunError

LOCK = ".vaezoo.lock"
# a lock file is written just after it is created: an empty one younger than this is being written
_WRITING_GRACE_S = 10.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def read_owner(run) -> Optional[dict]:
    """The owner recorded in ``run``'s lock file (``{"pid", "host", ...}``), ``{}`` for a lock
    file still being written or unreadable (or naming no valid pid), ``None`` if there is no lock."""
    try:
        text = (Path(run) / LOCK).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return {}
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        return {}
    if not isinstance(owner, dict):
        return {}
    pid = owner.get("pid")
    valid = isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31 and isinstance(owner.get("host"), str)
    return owner if valid else {}


def _stale(path: Path, owner: dict) -> bool:
    """Whether a lock is known to be abandoned: its owner is a dead process of this host, or the
    file stayed empty or unreadable well past the moment it was created."""
    if not owner:
        try:
            return time.time() - path.stat().st_mtime > _WRITING_GRACE_S
        except FileNotFoundError:
            return False
    return owner["host"] == socket.gethostname() and not _alive(owner["pid"])


@contextlib.contextmanager
def _serialized(directory: Path):
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the take-over is then only nearly atomic
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def describe(owner: dict) -> str:
    if not owner:
        return "another process (its lock file is being written or unreadable)"
    return f"process {owner.get('pid')} on {owner.get('host')}"


class RunLock:
    """Context manager owning the run directory ``run`` while the block runs.

    ``acquire`` makes ``run`` (and its parents) if missing and ``create``, then creates
    ``run/.vaezoo.lock`` with ``O_CREAT | O_EXCL``: of two processes exactly one succeeds, the
    other gets a :class:`RunError` naming the owner. A lock left by a dead process of this host is
    taken over. ``release`` (on leaving the block, also on errors and Ctrl-C)
    removes the lock if it is still ours, and the directories ``acquire`` made if they are empty.
    """

    def __init__(self, run, command: str = "vaezoo", create: bool = True):
        self.run = Path(run)
        self.create = create
        self.path = self.run / LOCK
        self.command = command
        self.token = uuid.uuid4().hex  # tells our lock from one a later owner wrote
        self.made: list = []  # directories acquire() created, innermost last
        self.held = False

    def _mkdirs(self) -> None:
        missing = []
        for d in [self.run, *self.run.parents]:
            if d.exists():
                break
            missing.append(d)
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:  # made by a concurrent process: not ours to remove
                continue
            self.made.append(d)

    def _create(self) -> bool:
        """One attempt at creating the lock file; False if it exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": self.token}
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(owner) + "\n")
        except BaseException:
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise
        return True

    def _take_over(self, seen: dict) -> None:
        """Removes the stale lock ``seen`` unless another process replaced it in the meantime.
        Check and removal run under ``flock`` on the directory, so that of several processes
        that saw the same stale lock one removes it and the others then see the new owner's
        (flock, unlike a lock file, is released by the kernel when its holder dies)."""
        with _serialized(self.run):
            if read_owner(self.run) == seen and _stale(self.path, seen):
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()

    def acquire(self) -> "RunLock":
        if not self.create and not self.run.is_dir():
            what = "is not a directory" if self.run.exists() else "does not exist"
            raise RunError(f"run directory {self.run} {what}; expected a directory made by vaezoo train")
        try:
            if self.create:
                self._mkdirs()
            for _ in range(5):  # a lost race for a stale lock is retried, a live owner is not
                if self._create():
                    self.held = True
                    return self
                owner = read_owner(self.run)
                if owner is None:
                    continue
                if not _stale(self.path, owner):
                    self._remove_made()
                    raise RunError(
                        f"run directory {self.run} is in use by {describe(owner)} "
                        f"(lock {self.path}); expected one process per run: wait for it to finish, or remove the lock if that process is gone"
                    )
                self._take_over(owner)
        except OSError as e:
            if isinstance(e, RunError):
                raise
            self._remove_made()
            doing = "write into the run directory" if self.run.is_dir() else "create the run directory"
            raise RunError(f"cannot {doing} {self.run} ({e.strerror or e}); expected a writable directory") from None
        self._remove_made()
        raise RunError(f"could not take the lock {self.path}; expected it to be free or held by a live process")

    def _remove_made(self) -> None:
        for d in reversed(self.made):
            with contextlib.suppress(OSError):  # not empty: something else lives there now
                d.rmdir()
        self.made = []

    def release(self, keep_dirs: bool = True) -> None:
        if self.held:
            owner = read_owner(self.run)
            if owner is not None and owner.get("token") == self.token:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self.held = False
        if not keep_dirs:
            self._remove_made()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        # a refused or failed command leaves no empty directory behind
        self.release(keep_dirs=exc_type is None)
