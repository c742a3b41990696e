"""One owner per run directory: a lock file naming the owning process (pid, its start time, host
and boot), created atomically, kept fresh by a heartbeat, released on exit, and taken over when its
owner cannot be alive.

The rule for taking over a lock (:func:`_stale`): on this host, when its process is dead, when its
pid now names another process (a different start time in ``/proc/<pid>/stat``) or when the machine
has rebooted since (another boot id); from another host (a preempted job restarted elsewhere), when
its heartbeat is older than :data:`STALE_AFTER_S`: its owner touches the lock every
:data:`HEARTBEAT_S` seconds while it lives, so a lock left that long is no live process's."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from vaezoo.errors import RunError

LOCK = ".vaezoo.lock"
# a lock file is written just after it is created: an empty one younger than this is being written
_WRITING_GRACE_S = 10.0
#: how often an owner touches its lock file while it lives
HEARTBEAT_S = 30.0
#: a lock of another host whose heartbeat is older than this is taken over (20 missed beats: room
#: for a slow shared file system and for clocks a few minutes apart)
STALE_AFTER_S = 600.0


def _start_time(pid: int) -> Optional[int]:
    """The start time of process ``pid`` (clock ticks after boot, ``/proc/<pid>/stat`` field 22), or
    None where it cannot be read (no such process, no /proc)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return int(text.rsplit(")", 1)[1].split()[19])  # after the command name, field 3 is index 0
    except (OSError, ValueError, IndexError):
        return None


def _boot_id() -> Optional[str]:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def heartbeat_age(path: Path) -> Optional[float]:
    """Seconds since the lock file was last touched, None if it is gone."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


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
    except (json.JSONDecodeError, RecursionError):
        return {}
    if not isinstance(owner, dict):
        return {}
    pid = owner.get("pid")
    valid = isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31 and isinstance(owner.get("host"), str)
    return owner if valid else {}


def _stale(path: Path, owner: dict) -> bool:
    """Whether a lock is known to be abandoned (the rule of this module's docstring), or the file
    stayed empty or unreadable well past the moment it was created."""
    if not owner:
        age = heartbeat_age(path)
        return age is not None and age > _WRITING_GRACE_S
    if owner["host"] != socket.gethostname():
        age = heartbeat_age(path)  # only an owner that beats (this version) is judged by its heartbeat
        return "heartbeat" in owner and age is not None and age > STALE_AFTER_S
    if owner.get("boot") and _boot_id() and owner["boot"] != _boot_id():
        return True  # the machine rebooted: every process of the lock's time is gone
    if not _alive(owner["pid"]):
        return True
    started = owner.get("start")
    return isinstance(started, int) and _start_time(owner["pid"]) not in (None, started)  # the pid was reused


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


def describe(owner: dict, path: Optional[Path] = None) -> str:
    if not owner:
        return "another process (its lock file is being written or unreadable)"
    text = f"process {owner.get('pid')} on {owner.get('host')}"
    age = heartbeat_age(path) if path is not None else None
    if owner.get("host") != socket.gethostname() and age is not None:
        if "heartbeat" in owner:
            text += f" (last heartbeat {age / 60:.1f} min ago; taken over once {STALE_AFTER_S / 60:.0f} min pass without one)"
        else:
            text += " (a lock without a heartbeat is never taken over from another host)"
    return text


class RunLock:
    """Context manager owning the run directory ``run`` while the block runs.

    ``acquire`` makes ``run`` (and its parents) if missing and ``create``, then creates
    ``run/.vaezoo.lock`` with ``O_CREAT | O_EXCL``: of two processes exactly one succeeds, the
    other gets a :class:`RunError` naming the owner. A lock whose owner cannot be alive (see the
    module's docstring) is taken over. While held, a thread touches the lock every
    :data:`HEARTBEAT_S` seconds. ``release`` (on leaving the block, also on errors and Ctrl-C)
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
                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": self.token,
                 "start": _start_time(os.getpid()), "boot": _boot_id(), "heartbeat": HEARTBEAT_S}
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
                    self._start_heartbeat()
                    return self
                owner = read_owner(self.run)
                if owner is None:
                    continue
                if not _stale(self.path, owner):
                    self._remove_made()
                    raise RunError(
                        f"run directory {self.run} is in use by {describe(owner, self.path)} "
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

    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name=f"vaezoo lock {self.run}", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        """Touches the lock every :data:`HEARTBEAT_S` seconds while it is ours."""
        while not self._stop.wait(HEARTBEAT_S):
            owner = read_owner(self.run)
            if not owner or owner.get("token") != self.token:
                return  # released, or taken over: not ours to touch
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self, keep_dirs: bool = True) -> None:
        beat = getattr(self, "_beat", None)
        if beat is not None:
            self._stop.set()
            beat.join(timeout=5)
            self._beat = None
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
