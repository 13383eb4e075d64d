"""One owner per run directory: an advisory lock file that names its owner (pid, host, since when).

Two `ltc imp` on one run directory would both train and both write. The owner holds an exclusive
`flock` on `<run_dir>/LOCK` (`lth.layout`) for as long as it runs; a second process finds it
held and is refused with the owner's name. The kernel (or the NFS server) drops the lock when its
process dies however it dies, so a lock left by a killed process is stale by construction: the
next owner takes it and overwrites the file. On filesystems without `flock` (some Lustre mounts)
the recorded owner is checked instead: a live process of this host, or any owner on another
host, keeps the directory; a dead process of this host does not.

Releasing unlinks the file only while it is still this owner's (same inode), then unlocks, so a
newcomer that opened the old file in between finds it unlinked and retries on a fresh one.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lth.errors import LTCError

NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@dataclass(frozen=True)
class Owner:
    """Who holds a run directory."""

    pid: int
    host: str
    since: str
    command: str

    @classmethod
    def me(cls, command: str) -> Owner:
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"), command)

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None  # empty (a lock being written) or not ours

    def alive(self) -> bool:
        """Whether the owner may still run: a live pid of this host, or any owner elsewhere."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True

    def describe(self) -> str:
        return f"`{self.command}` (pid {self.pid} on {self.host}, since {self.since})"


class RunLock:
    """The lock of one run directory; `acquire` creates the directory when it is missing."""

    def __init__(self, path: Path, command: str = "ltc imp") -> None:
        self.path, self.command = Path(path), command
        self._fd: int | None = None

    def acquire(self) -> Owner | None:
        """Take the lock, or raise LTCError naming its holder. Returns the previous owner when
        a stale lock was taken over (for a note), else None."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LTCError(f"cannot create the run dir {self.path.parent} ({exc.strerror}); "
                           "pick another --run_dir") from exc
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except PermissionError as exc:
                raise LTCError(f"run dir {self.path.parent} is not writable; pick another --run_dir") from exc
            try:
                previous = self._lock(fd)
            except BaseException:
                os.close(fd)
                raise
            if previous is not False:
                self._fd = fd
                try:
                    _write(fd, Owner.me(self.command))
                except BaseException:
                    self.release()
                    raise
                return previous
            os.close(fd)  # the owner released (unlinked) this file while we opened it: retry

    def _lock(self, fd: int) -> Owner | None | bool:
        """Lock `fd`; the stale owner it held before (or None), False when the file is no longer
        at `path`. Raises LTCError when a live owner holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._refuse(Owner.parse(_read(fd)))
        except OSError as exc:
            if exc.errno not in NO_FLOCK:
                raise
            owner = Owner.parse(_read(fd))  # no flock here: trust the recorded owner's liveness
            if owner is not None and owner.alive() and owner.pid != os.getpid():
                self._refuse(owner)
        try:
            if os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                return False
        except FileNotFoundError:
            return False
        return Owner.parse(_read(fd))

    def _refuse(self, owner: Owner | None) -> None:
        who = owner.describe() if owner is not None else "another process"
        raise LTCError(f"{self.path.parent} is in use by {who}; wait for it to finish, or stop it and re-run "
                       "the same command to resume (one process per run dir)")

    def release(self) -> None:
        """Unlink the lock file (when it is still this lock's) and unlock."""
        if self._fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace")


def _write(fd: int, owner: Owner) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(asdict(owner)).encode())
